/*
 * ramfit: fit a large language model into the memory you have.
 *
 * The one public header of libramfit. Conventions:
 *  - every fallible function returns rf_status (RF_OK == 0) and fills an optional rf_err
 *    with a message that names the file and tensor involved;
 *  - the library never prints, exits or aborts on bad input;
 *  - opaque objects come in create/open + free/close pairs; free accepts NULL;
 *  - sizes and offsets are uint64_t.
 *
 * Sections are owned by modules (src/<stage>/<module>.c); keep each section's declarations together.
 */
#ifndef RAMFIT_H
#define RAMFIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RF_VERSION_MAJOR 0
#define RF_VERSION_MINOR 1
#define RF_VERSION_PATCH 0
#define RF_VERSION_STRING "0.1.0"

/* ===================================================================== errors (common/error.c) */

typedef enum rf_status {
    RF_OK = 0,
    RF_ERR_IO,          /* open/read/write/mmap/rename failed (errno text in the message) */
    RF_ERR_FORMAT,      /* malformed file: header, JSON, offsets, shapes */
    RF_ERR_NOMEM,       /* allocation failed */
    RF_ERR_INVALID,     /* bad argument (caller error, bad option value) */
    RF_ERR_UNSUPPORTED, /* valid but not supported: architecture, dtype, tokenizer feature */
    RF_ERR_NOT_FOUND,   /* a named tensor/file/key does not exist */
    RF_ERR_NONFINITE,   /* NaN or Inf where finite values are required */
    RF_ERR_MISMATCH,    /* profile/plan/model do not belong together */
    RF_ERR_BUDGET,      /* budget cannot be met (below min-safe, ...) */
    RF_ERR_INTERRUPTED, /* stopped by a cancel request (Ctrl-C) */
    RF_ERR_NOSPACE,     /* disk full / file size limit */
    RF_ERR_EXISTS,      /* output exists and overwriting was not asked for */
    RF_ERR_INTERNAL     /* a bug in ramfit */
} rf_status;

#define RF_ERR_MSG_MAX 1024
typedef struct rf_err {
    rf_status code;
    char msg[RF_ERR_MSG_MAX];
} rf_err;

/* Short name of a status code ("io", "format", ...). */
const char *rf_status_name(rf_status s);
/* Clear an error record (code RF_OK, empty message). NULL is fine. */
void rf_err_clear(rf_err *err);

/* ===================================================================== common utilities (common/util.c) */

/* Parse a size: plain bytes ("123"), decimal units kB/MB/GB/TB (1000^n), binary KiB/MiB/GiB/TiB
 * (1024^n); fractions allowed ("1.5GB"); case-insensitive unit, optional space and trailing "B". */
rf_status rf_parse_size(const char *text, uint64_t *out, rf_err *err);
/* Format bytes for people: "1.23 GB (1.15 GiB)" style is the CLI's; this gives "1.23 GB". */
void rf_format_size(uint64_t bytes, char *buf, size_t cap);
/* Read a whole file of at most MAX bytes into a NUL-terminated buffer (*out: free() it; *len
 * without the NUL). Regular files larger than MAX are refused before reading; pipes and devices
 * are read up to MAX + 1 bytes (so /dev/zero is refused, not read until memory runs out).
 * Errors name PATH: RF_ERR_NOT_FOUND (missing), RF_ERR_INVALID (a directory), RF_ERR_FORMAT
 * (larger than MAX), RF_ERR_IO / RF_ERR_NOMEM. */
rf_status rf_read_file(const char *path, uint64_t max, char **out, size_t *len, rf_err *err);

/* Long operations report progress through this callback (done of total units, e.g. bytes) and
 * stop with RF_ERR_INTERRUPTED soon after *cancel becomes non-zero. Both may be NULL. */
typedef void (*rf_progress_fn)(void *user, uint64_t done, uint64_t total, const char *what);
typedef struct rf_progress {
    rf_progress_fn fn;
    void *user;
    volatile int *cancel;
} rf_progress;

/* ===================================================================== thread pool (common/pool.c) */

/* A fixed set of worker threads that run "task i of n" loops. The caller's thread takes part.
 * Tasks are handed out dynamically (atomic counter), so results must not depend on which
 * thread ran which task: write into per-task slots and combine in task order afterwards. */
typedef struct rf_pool rf_pool;
typedef void (*rf_task_fn)(void *ctx, uint64_t task, int worker);
/* nthreads <= 0: the number of online CPUs. */
rf_status rf_pool_create(int nthreads, rf_pool **out, rf_err *err);
void rf_pool_free(rf_pool *p);
int rf_pool_threads(const rf_pool *p);
/* Run fn(ctx, i, worker) for i in [0, n) and wait for all; worker is in [0, threads).
 * A NULL pool runs everything on the calling thread (worker 0). */
void rf_pool_run(rf_pool *p, uint64_t n, rf_task_fn fn, void *ctx);

/* ===================================================================== dtypes, conversion (common/convert.c) */

typedef enum rf_dtype {
    RF_DT_INVALID = 0,
    RF_DT_F64, RF_DT_F32, RF_DT_F16, RF_DT_BF16,
    RF_DT_F8_E4M3, RF_DT_F8_E5M2,
    RF_DT_I64, RF_DT_I32, RF_DT_I16, RF_DT_I8,
    RF_DT_U64, RF_DT_U32, RF_DT_U16, RF_DT_U8,
    RF_DT_BOOL,
    RF_DT_COUNT
} rf_dtype;

/* Bytes per element (0 for RF_DT_INVALID). */
uint64_t rf_dtype_size(rf_dtype dt);
/* safetensors spelling: "F32", "BF16", "F8_E4M3", ... */
const char *rf_dtype_name(rf_dtype dt);
/* Parse the safetensors spelling; RF_DT_INVALID when unknown. */
rf_dtype rf_dtype_from_name(const char *name);
/* 1 for F32/F16/BF16/F64 (the dtypes ramfit computes with), else 0. */
int rf_dtype_is_float(rf_dtype dt);

/* Scalar conversions: round to nearest even, NaN stays NaN (quiet), Inf stays Inf. */
float rf_bf16_to_f32(uint16_t h);
uint16_t rf_f32_to_bf16(float f);
float rf_f16_to_f32(uint16_t h);
uint16_t rf_f32_to_f16(float f);

/* Bulk conversion of n elements of a float dtype (F32/F16/BF16/F64) to/from float32.
 * Uses the fastest path the CPU has; identical results to the scalar functions. */
rf_status rf_convert_to_f32(rf_dtype src, const void *in, float *out, uint64_t n, rf_err *err);
rf_status rf_convert_from_f32(rf_dtype dst, const float *in, void *out, uint64_t n, rf_err *err);

/* ===================================================================== CPU features (common/cpu.c) */

enum { RF_CPU_AVX2 = 1u << 0, RF_CPU_FMA = 1u << 1, RF_CPU_F16C = 1u << 2, RF_CPU_NEON = 1u << 3,
       /* AVX-512 F+BW+VL+DQ; VNNI (8-bit dot products) and VBMI (byte permutes, multishift) on top;
        * AVX-VNNI: the 256-bit 8-bit dot products of CPUs without AVX-512 */
       RF_CPU_AVX512 = 1u << 4, RF_CPU_AVX512VNNI = 1u << 5, RF_CPU_AVX512VBMI = 1u << 6, RF_CPU_AVXVNNI = 1u << 7 };
/* Features of this CPU that ramfit's fast paths use, masked by rf_cpu_set_mask(). */
unsigned rf_cpu_features(void);
/* Restrict the fast paths (tests and benchmarks compare scalar vs fast; also env RAMFIT_SIMD=0). */
void rf_cpu_set_mask(unsigned mask);

/* ===================================================================== safetensors (io/safetensors.c) */

#define RF_MAX_DIMS 8

/* A borrowed view of one tensor in an open checkpoint; valid until rf_st_close(). */
typedef struct rf_tensor {
    const char *name;
    const char *file;        /* path of the shard that holds it */
    rf_dtype dtype;
    int ndim;
    uint64_t shape[RF_MAX_DIMS];
    uint64_t nelem;          /* product of shape (1 for a 0-d tensor) */
    uint64_t nbytes;         /* nelem * dtype size */
    uint64_t offset;         /* byte offset of the data in its file */
    const void *data;        /* mmapped, read-only */
} rf_tensor;

typedef struct rf_st rf_st;  /* an open checkpoint: one file or a sharded set */

/* Open PATH: a .safetensors file, a model.safetensors.index.json, or a directory holding
 * either (index preferred, else model.safetensors, else its only *.safetensors file).
 * Everything is validated before this returns RF_OK. Errors: RF_ERR_NOT_FOUND for a missing
 * path or shard file or a directory without safetensors, RF_ERR_UNSUPPORTED for an unknown
 * dtype or more than RF_MAX_DIMS dimensions, RF_ERR_IO for open/mmap failures, RF_ERR_FORMAT
 * for everything malformed; the message names the file and the tensor. */
rf_status rf_st_open(const char *path, rf_st **out, rf_err *err);
/* Open a safetensors image already in memory (borrowed, must outlive the handle);
 * LABEL names it in messages. Used by tests and fuzzers. */
rf_status rf_st_open_memory(const void *data, uint64_t size, const char *label, rf_st **out, rf_err *err);
void rf_st_close(rf_st *st);
/* Tensors in a stable order: by shard (index order), then by data offset. */
uint64_t rf_st_count(const rf_st *st);
const rf_tensor *rf_st_get(const rf_st *st, uint64_t i);
const rf_tensor *rf_st_find(const rf_st *st, const char *name);
/* A __metadata__ value of the (first) shard, or NULL. */
const char *rf_st_metadata(const rf_st *st, const char *key);
/* Number of shard files and the path of shard i. */
uint64_t rf_st_file_count(const rf_st *st);
const char *rf_st_file_path(const rf_st *st, uint64_t i);
uint64_t rf_st_file_size(const rf_st *st, uint64_t i);
/* A fast 64-bit fingerprint of all shard headers (names, dtypes, shapes, offsets) and sizes:
 * identifies a checkpoint without reading its data. */
uint64_t rf_st_fingerprint(const rf_st *st);
/* madvise hints for a tensor's pages (sequential read ahead / done with it). */
void rf_st_advise_willneed(const rf_st *st, const rf_tensor *t);
void rf_st_advise_dontneed(const rf_st *st, const rf_tensor *t);

/* Streaming writer. Declare every tensor first, then write their data in declaration order,
 * in as many pieces as wanted (a piece must not run past the end of the current tensor;
 * 0-element tensors take no write); finish renames the temporary files into place and writes
 * the index when there is more than one shard (with one shard it removes a stale
 * <basename>.safetensors.index.json). DIR must exist. Output is byte-for-byte deterministic.
 * Any error after writing started removes the temporary files and fails later calls;
 * ENOSPC/EFBIG give RF_ERR_NOSPACE, size mismatches and misuse RF_ERR_INVALID. */
typedef struct rf_stw rf_stw;
typedef struct rf_stw_opts {
    uint64_t max_shard_bytes;  /* 0: one file */
    const char *basename;      /* "model" -> model.safetensors / model-00001-of-00002.safetensors */
    int always_index;          /* write the index for a single shard too (mlx-lm does) */
} rf_stw_opts;
rf_status rf_stw_create(const char *dir, const rf_stw_opts *opts, rf_stw **out, rf_err *err);
rf_status rf_stw_set_metadata(rf_stw *w, const char *key, const char *value, rf_err *err);
rf_status rf_stw_declare(rf_stw *w, const char *name, rf_dtype dt, int ndim, const uint64_t *shape, rf_err *err);
rf_status rf_stw_write(rf_stw *w, const void *data, uint64_t nbytes, rf_err *err);
rf_status rf_stw_finish(rf_stw *w, rf_err *err);
/* Free; if not finished, removes every temporary file it made. */
void rf_stw_free(rf_stw *w);
/* Bytes of tensor data in total (what index.json calls total_size). */
uint64_t rf_stw_total_bytes(const rf_stw *w);

/* ===================================================================== GGUF files (io/gguf.c) */

/* llama.cpp's model file format, version 3 (version 2 files read too): a header of typed
 * key/value metadata and tensor infos, then the tensor data, each tensor at an offset that is a
 * multiple of general.alignment (default 32) in tensor-info order. Little-endian only. */
typedef enum rf_gguf_vtype {
    RF_GV_U8 = 0, RF_GV_I8 = 1, RF_GV_U16 = 2, RF_GV_I16 = 3, RF_GV_U32 = 4, RF_GV_I32 = 5, RF_GV_F32 = 6,
    RF_GV_BOOL = 7, RF_GV_STR = 8, RF_GV_ARR = 9, RF_GV_U64 = 10, RF_GV_I64 = 11, RF_GV_F64 = 12,
    RF_GV_COUNT
} rf_gguf_vtype;
const char *rf_gguf_vtype_name(rf_gguf_vtype t); /* "u32", "string", "array", ... */

#define RF_GGUF_MAX_DIMS 4
#define RF_GGUF_MAX_NAME 63 /* ggml's limit on tensor name length (GGML_MAX_NAME - 1) */

/* A borrowed view of one tensor of an open GGUF file; valid until rf_gguf_close(). */
typedef struct rf_gguf_tensor {
    const char *name;
    int type;                       /* rf_gtype */
    int ndim;
    uint64_t ne[RF_GGUF_MAX_DIMS];  /* ggml order: ne[0] is the row length, e.g. [in, out] for a matrix */
    uint64_t nelem, nbytes;
    uint64_t offset;                /* absolute file offset of the data */
    const void *data;               /* mmapped, read-only */
} rf_gguf_tensor;

typedef struct rf_gguf rf_gguf;
/* Open and validate a GGUF file (mmapped): every length, type, offset and size is checked before
 * this returns; errors are RF_ERR_FORMAT naming the file and the key or tensor, RF_ERR_UNSUPPORTED
 * for a version other than 2 or 3 or a big-endian file, RF_ERR_NOT_FOUND for a missing file. */
rf_status rf_gguf_open(const char *path, rf_gguf **out, rf_err *err);
/* The same on an image in memory (borrowed); LABEL names it in messages. */
rf_status rf_gguf_open_memory(const void *data, uint64_t size, const char *label, rf_gguf **out, rf_err *err);
void rf_gguf_close(rf_gguf *g);
const char *rf_gguf_path(const rf_gguf *g);
uint32_t rf_gguf_version(const rf_gguf *g);
uint64_t rf_gguf_alignment(const rf_gguf *g);
uint64_t rf_gguf_data_offset(const rf_gguf *g); /* start of the tensor data section */
uint64_t rf_gguf_file_size(const rf_gguf *g);

uint64_t rf_gguf_kv_count(const rf_gguf *g);
const char *rf_gguf_kv_key(const rf_gguf *g, uint64_t i);
rf_gguf_vtype rf_gguf_kv_type(const rf_gguf *g, uint64_t i);
/* Arrays: element type and length (RF_GV_COUNT, 0 for a scalar). */
rf_gguf_vtype rf_gguf_kv_arr_type(const rf_gguf *g, uint64_t i);
uint64_t rf_gguf_kv_arr_len(const rf_gguf *g, uint64_t i);
int64_t rf_gguf_find_kv(const rf_gguf *g, const char *key); /* -1 if absent */
/* Scalar values by key. Absent key: RF_ERR_NOT_FOUND; another type: RF_ERR_FORMAT; both name the
 * file and key. get_int takes any integer or bool type (a u64 above INT64_MAX is RF_ERR_FORMAT);
 * get_float takes F32/F64. */
rf_status rf_gguf_get_int(const rf_gguf *g, const char *key, int64_t *out, rf_err *err);
rf_status rf_gguf_get_float(const rf_gguf *g, const char *key, double *out, rf_err *err);
rf_status rf_gguf_get_str(const rf_gguf *g, const char *key, const char **s, uint64_t *len, rf_err *err);
/* Element J of array KV: strings (pointer into the map, not NUL-terminated; *len its bytes),
 * numbers (any numeric element type, as double). Out of range or wrong type: NULL / NAN. */
const char *rf_gguf_arr_str(const rf_gguf *g, uint64_t kv, uint64_t j, uint64_t *len);
double rf_gguf_arr_num(const rf_gguf *g, uint64_t kv, uint64_t j);
/* The value of scalar KV I as text ("4096", "1e-06", "llama", "[array of 151936 string]"). */
void rf_gguf_kv_text(const rf_gguf *g, uint64_t i, char *buf, size_t cap);

uint64_t rf_gguf_tensor_count(const rf_gguf *g);
const rf_gguf_tensor *rf_gguf_tensor_at(const rf_gguf *g, uint64_t i);
const rf_gguf_tensor *rf_gguf_find_tensor(const rf_gguf *g, const char *name);

/* Streaming writer: set the metadata and declare every tensor, then write the tensor data in
 * declaration order (any number of pieces; padding is added between tensors); finish checks that
 * everything was written and renames the temporary file (PATH.tmp-XXXXXX, created with the
 * caller's umask) to PATH, replacing a file there. Keys and tensor names must be unique (tensor
 * names at most RF_GGUF_MAX_NAME bytes, at most 4 dimensions). Any error fails later calls;
 * free without finish removes the temporary file. Byte-for-byte deterministic output. */
typedef struct rf_ggufw rf_ggufw;
/* PATH NULL: a writer that only sizes (metadata and tensor declarations for rf_ggufw_file_size;
 * no file, writing data is refused). */
rf_status rf_ggufw_create(const char *path, rf_ggufw **out, rf_err *err);
void rf_ggufw_free(rf_ggufw *w);
rf_status rf_ggufw_set_str(rf_ggufw *w, const char *key, const char *value, rf_err *err);
rf_status rf_ggufw_set_u32(rf_ggufw *w, const char *key, uint32_t value, rf_err *err);
rf_status rf_ggufw_set_i32(rf_ggufw *w, const char *key, int32_t value, rf_err *err);
rf_status rf_ggufw_set_f32(rf_ggufw *w, const char *key, float value, rf_err *err);
rf_status rf_ggufw_set_bool(rf_ggufw *w, const char *key, int value, rf_err *err);
/* Arrays: N strings (LENS may be NULL for NUL-terminated strings), or N numbers of element type
 * ET (RF_GV_F32, RF_GV_I32, ...) stored as that type's bytes in V. */
rf_status rf_ggufw_set_arr_str(rf_ggufw *w, const char *key, const char *const *v, const uint64_t *lens, uint64_t n,
                               rf_err *err);
rf_status rf_ggufw_set_arr(rf_ggufw *w, const char *key, rf_gguf_vtype et, const void *v, uint64_t n, rf_err *err);
rf_status rf_ggufw_add_tensor(rf_ggufw *w, const char *name, int type, int ndim, const uint64_t *ne, rf_err *err);
/* Size of the finished file (known once every tensor is declared) and of the data of tensor I. */
uint64_t rf_ggufw_file_size(const rf_ggufw *w);
uint64_t rf_ggufw_tensor_bytes(const rf_ggufw *w, uint64_t i);
rf_status rf_ggufw_write(rf_ggufw *w, const void *data, uint64_t n, rf_err *err);
rf_status rf_ggufw_finish(rf_ggufw *w, rf_err *err);

/* ===================================================================== model catalogue (arch/model.c) */

typedef enum rf_arch {
    RF_ARCH_UNKNOWN = 0,
    RF_ARCH_LLAMA, RF_ARCH_MISTRAL, RF_ARCH_QWEN2, RF_ARCH_QWEN3, RF_ARCH_MIXTRAL, RF_ARCH_QWEN3_MOE,
    RF_ARCH_LLAMA4, RF_ARCH_QWEN2_MOE, RF_ARCH_GLM4_MOE, RF_ARCH_GLM4_MOE_LITE, RF_ARCH_DEEPSEEK_V3,
    RF_ARCH_GEMMA3, RF_ARCH_PHI3,
    RF_ARCH_GENERIC /* a model_type ramfit does not know: Linear/Embedding weights by name (no engine) */
} rf_arch;
const char *rf_arch_name(rf_arch a); /* the family's canonical model_type spelling */

/* Activation of the gated MLP (config hidden_act / hidden_activation). */
typedef enum rf_act { RF_ACT_SILU = 0, RF_ACT_GELU, RF_ACT_GELU_TANH, RF_ACT_RELU, RF_ACT_RELU2 } rf_act;
const char *rf_act_name(rf_act a);

/* Rotary embedding parameters of one layer type (transformers' rope_parameters / rope_scaling). */
#define RF_ROPE_MAX_FACTORS 256
typedef struct rf_rope {
    char type[16];               /* "default", "linear", "llama3", "yarn", "longrope", "dynamic" */
    double theta;
    double factor;               /* linear, llama3, yarn, longrope (0: from max_position_embeddings) */
    double low_freq_factor, high_freq_factor; /* llama3 */
    int original_max_pos;        /* llama3, yarn, longrope */
    double beta_fast, beta_slow, mscale, mscale_all_dim, attention_factor; /* yarn (attention_factor: 0 = derived) */
    int truncate;                /* yarn: round the correction range (default 1) */
    int n_factors;               /* longrope: short_factor / long_factor, one per rotated pair */
    float short_factor[RF_ROPE_MAX_FACTORS], long_factor[RF_ROPE_MAX_FACTORS];
} rf_rope;

/* Per-layer features (rf_config.layer_flags). */
enum {
    RF_LAYER_MOE = 1,      /* a sparse MoE block (else a dense MLP) */
    RF_LAYER_SLIDING = 2,  /* sliding-window attention (window sliding_window) */
    RF_LAYER_CHUNKED = 4,  /* chunked attention (llama4: attend within blocks of attention_chunk) */
    RF_LAYER_NOPE = 8,     /* no rotary embedding (llama4's NoPE layers) */
    RF_LAYER_LOCAL = 16    /* the local rope (gemma3's sliding layers use rope_local) */
};
#define RF_MAX_LAYERS 1024

typedef enum rf_qk_norm { RF_QKNORM_NONE = 0, RF_QKNORM_RMS, RF_QKNORM_L2 } rf_qk_norm;

typedef struct rf_config {
    rf_arch arch;
    char model_type[64];         /* as config.json says (a wrapper's: "llama4", "gemma3") */
    char architecture[128];      /* architectures[0] */
    char tensor_prefix[32];      /* "language_model." for multimodal wrappers: the text model's tensors */
    int hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size;
    int tie_word_embeddings;
    int attention_bias;          /* q/k/v(/o) biases (qwen2: implied) */
    int mlp_bias;
    rf_act act;
    double rms_norm_eps;
    rf_rope rope;                /* global layers */
    rf_rope rope_local;          /* RF_LAYER_LOCAL layers (gemma3 sliding layers) */
    double rope_theta;           /* = rope.theta (kept for readers of the old field) */
    double partial_rotary;       /* fraction of head_dim rotated (1: all) */
    int rope_interleaved;        /* rotate pairs (2i, 2i+1) (llama4, deepseek) instead of (i, i + d/2) */
    int max_position_embeddings;
    /* attention */
    rf_qk_norm qk_norm;
    double attn_scale;           /* softmax scale of q.k (set by parse: 1/sqrt(head_dim) unless the family says) */
    double attn_softcap, final_softcap; /* tanh soft-capping of attention scores / final logits (0: none) */
    int attention_chunk;         /* RF_LAYER_CHUNKED layers */
    int temp_tuning;             /* llama4: NoPE layers scale q by log1p(floor((pos + 1) / floor_scale)) * temp_scale + 1 */
    double floor_scale, temp_scale;
    int sliding_window;          /* RF_LAYER_SLIDING layers attend to the last sliding_window positions */
    /* norms */
    int norm_plus_one;           /* gemma: y = norm(x) * (1 + w) */
    int sandwich_norm;           /* gemma: post-attention and post-feed-forward norms */
    double embed_scale;          /* embeddings times this (gemma: sqrt(hidden)); 0: none */
    /* multi-head latent attention (deepseek_v3, glm4_moe_lite; 0 when not) */
    int kv_lora_rank, q_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    double latent_norm_eps;      /* eps of q_a_layernorm and kv_a_layernorm (1e-6 in transformers and mlx-lm) */
    /* MoE (0 when dense) */
    int num_experts, experts_per_tok, moe_intermediate_size, norm_topk_prob, decoder_sparse_step;
    int router;                  /* routing convention (src/arch/family.h rf_router) */
    int n_group, topk_group;     /* group-limited routing (1, 1: none) */
    double routed_scaling;       /* routed experts' weights times this (1) */
    int shared_intermediate;     /* shared expert(s) as one MLP of this size (0: none) */
    int shared_gate;             /* qwen2_moe: the shared expert's output times sigmoid(shared_expert_gate(x)) */
    int extra_layers;            /* layers the checkpoint holds past num_hidden_layers (DeepSeek's multi-token
                                  * prediction layer): not part of the model, dropped by the writers */
    int fp8_block[2];            /* FP8 checkpoints (quantization_config fp8): weight_scale_inv block [rows, cols] */
    int bos_token_id, eos_token_id; /* -1 when absent */
    rf_dtype torch_dtype;        /* RF_DT_INVALID when absent */
    /* Per layer: RF_LAYER_* flags. Sliding windows as transformers applies them: mistral/mixtral
     * every layer when sliding_window is set; qwen families only with use_sliding_window (layer_types
     * or max_window_layers); gemma3 by layer_types / sliding_window_pattern. */
    uint8_t layer_flags[RF_MAX_LAYERS];
} rf_config;

/* Parse DIR/config.json (absent directory or file: RF_ERR_NOT_FOUND; bad/missing keys:
 * RF_ERR_FORMAT naming file and key). An unknown model_type parses as RF_ARCH_GENERIC (the
 * catalogue works on it, the engine refuses it). Defaults: docs/inspect.md. */
rf_status rf_config_load(const char *model_dir, rf_config *out, rf_err *err);
rf_status rf_config_parse(const char *json_text, const char *label, rf_config *out, rf_err *err);
/* 1 if LAYER has a sparse MoE block (experts + router), 0 if a dense MLP. */
int rf_config_layer_is_moe(const rf_config *c, int layer);
/* The attention window of LAYER in positions (the query included), 0 for full attention. */
int rf_config_layer_window(const rf_config *c, int layer);
/* RF_LAYER_* flags of LAYER (0 outside the stack). */
unsigned rf_config_layer_flags(const rf_config *c, int layer);
/* Whether the engine runs this config (every family but RF_ARCH_GENERIC). */
int rf_config_runnable(const rf_config *c);

typedef enum rf_role {
    RF_ROLE_OTHER = 0,
    RF_ROLE_EMBED, RF_ROLE_LM_HEAD,
    RF_ROLE_ATTN_Q, RF_ROLE_ATTN_K, RF_ROLE_ATTN_V, RF_ROLE_ATTN_O,
    RF_ROLE_Q_NORM, RF_ROLE_K_NORM,
    RF_ROLE_MLP_GATE, RF_ROLE_MLP_UP, RF_ROLE_MLP_DOWN,
    RF_ROLE_EXPERT_GATE, RF_ROLE_EXPERT_UP, RF_ROLE_EXPERT_DOWN,
    RF_ROLE_ROUTER, RF_ROLE_NORM, RF_ROLE_BIAS,
    /* appended in the second wave (spellings are part of the profile format) */
    RF_ROLE_ATTN_QKV, RF_ROLE_MLP_GATE_UP,
    RF_ROLE_SHARED_GATE, RF_ROLE_SHARED_UP, RF_ROLE_SHARED_DOWN,
    RF_ROLE_ATTN_Q_A, RF_ROLE_ATTN_Q_B, RF_ROLE_ATTN_KV_A, RF_ROLE_ATTN_K_B, RF_ROLE_ATTN_V_B,
    RF_ROLE_COUNT
} rf_role;
const char *rf_role_name(rf_role r); /* "embed", "lm_head", "attn_q", ... */

/* One tensor of the checkpoint with its classification. */
typedef struct rf_tinfo {
    const rf_tensor *t;
    rf_role role;
    int layer;    /* -1 outside the layer stack */
    int expert;   /* -1 unless a per-expert tensor */
    int unit;     /* index of its (first) quantization unit, -1 for tensors that are not weights of one */
    int quant_aux;/* 1: an MLX quantized companion (<module>.scales/.biases): it carries the role,
                   * layer and expert of its module but is not a unit member (unit -1) */
    int fp8_scale;/* 1: the float32 block scales (weight_scale_inv) of an FP8 weight: read with it */
    int dropped;  /* 1: not part of the model (a multi-token-prediction layer past num_hidden_layers):
                   * the writers leave it out, as mlx-lm's sanitize does */
} rf_tinfo;

/* Classification of one tensor name by the family of C (C->arch and C->tensor_prefix; the rest
 * of C is not used): Hugging Face naming, MLX's stacked banks and quantized companions; pure, no
 * files. Names the family does not know get RF_ROLE_OTHER. A fused tensor that feeds two units
 * (llama4's experts.gate_up_proj) is classified as its first. */
typedef struct rf_name_info {
    rf_role role;
    int layer, expert;  /* -1 when none */
    int stacked;        /* one tensor holds every member (experts or heads) of its unit */
    int quant_aux;      /* an MLX .scales/.biases companion */
    int unit_weight;    /* the weight of a quantization unit (module below is its unit name) */
    int slot;           /* what the engine computes with it (src/arch/family.h) */
    char module[160];   /* MLX module path (name less its last component); experts: the stacked bank */
} rf_name_info;
void rf_classify_name(const rf_config *c, const char *name, rf_name_info *out);

/* A quantization unit (the module of design.md): one Linear/Embedding weight, or all experts
 * of one projection in one layer, stacked, or all heads of an MLA up-projection. Every member
 * shares one (bits, gs). Its members may be slices of a source tensor, transposed (llama4's fused
 * experts, DeepSeek's kv_b_proj) or FP8 with block scales: the analysis, the writers and the
 * engine read members through one view layer (src/arch/view.c). */
typedef struct rf_unit {
    char name[160];     /* MLX module path, e.g. model.layers.3.mlp.switch_mlp.down_proj */
    rf_role role;
    int layer;
    int n_members;      /* matrices in the unit: experts or heads (1 for a plain matrix) */
    int n_experts;      /* experts in the unit: E for an expert bank (per-expert or stacked), else 0 */
    const int *members; /* per member: index of the source tensor in the catalogue's tensor list */
    uint64_t rows, cols;/* of one member matrix: out, in; the embedding is [vocab, hidden] */
    uint64_t nparams;   /* all members */
    rf_dtype dtype;     /* the source's (F8_E4M3 for FP8 checkpoints: read dequantized) */
    int quantizable;    /* 2-D float, mlx-lm quantizes the module, some gs in {32,64,128} divides cols */
    int transformed;    /* members are not plain row-major matrices of their tensors (sliced, transposed, FP8) */
    int bank;           /* written as one [members, out, in] tensor (experts, MLA heads), even with one member */
} rf_unit;

/* config + open checkpoint + catalogue. Open checks tensors against config.json (shapes of known
 * roles, layer/expert indices in range, every layer complete, experts of a unit alike and all
 * present): RF_ERR_FORMAT naming the file and tensor. Unknown extra tensors are role OTHER. */
typedef struct rf_model rf_model;
rf_status rf_model_open(const char *model_dir, rf_model **out, rf_err *err);
void rf_model_free(rf_model *m);
const char *rf_model_dir(const rf_model *m);
const rf_config *rf_model_config(const rf_model *m);
const rf_st *rf_model_st(const rf_model *m);
uint64_t rf_model_tensor_count(const rf_model *m);
const rf_tinfo *rf_model_tinfo(const rf_model *m, uint64_t i);
uint64_t rf_model_unit_count(const rf_model *m);
const rf_unit *rf_model_unit(const rf_model *m, uint64_t i);
/* Parameters: elements of every tensor except MLX .scales/.biases companions. */
uint64_t rf_model_param_count(const rf_model *m);
/* Index of the unit named NAME (MLX module path), or -1. */
int64_t rf_model_unit_find(const rf_model *m, const char *name);

/* ===================================================================== quantization kernels (quant/quant.c) */

typedef enum rf_qmode { RF_QMODE_MLX = 0, RF_QMODE_OPT = 1 } rf_qmode;

#define RF_QBITS_N 6
#define RF_QGS_N 3
#define RF_QCFG_N (RF_QBITS_N * RF_QGS_N) /* 18 affine configs */
extern const int rf_qbits[RF_QBITS_N];    /* 2 3 4 5 6 8 */
extern const int rf_qgs[RF_QGS_N];        /* 32 64 128 */
/* Config index c = bits_index * RF_QGS_N + gs_index. */

/* Exact MLX bytes of a quantized matrix of nelem weights: packed words + scale + bias. */
uint64_t rf_quant_bytes(uint64_t nelem, int bits, int gs, rf_dtype scale_dtype);

/* Quantize a rows x cols row-major matrix (src dtype F32/BF16/F16) into MLX affine format.
 * packed: rows * cols*bits/32 uint32; scales/biases: rows * cols/gs elements of sdtype
 * (BF16, F16 or F32). cols must be a multiple of gs. NaN/Inf: RF_ERR_NONFINITE naming the index. */
rf_status rf_quant_quantize(rf_dtype src, const void *w, uint64_t rows, uint64_t cols,
                            int bits, int gs, rf_qmode mode, rf_dtype sdtype,
                            uint32_t *packed, void *scales, void *biases, rf_err *err);
rf_status rf_quant_dequantize(const uint32_t *packed, const void *scales, const void *biases,
                              rf_dtype sdtype, uint64_t rows, uint64_t cols, int bits, int gs,
                              float *out, rf_err *err);

/* Error of one config: computed exactly as quantize + store scale/bias in sdtype + dequantize. */
typedef struct rf_qerr {
    double sse;      /* sum of squared error */
    double ssq;      /* sum of squares of the weights */
    double max_abs;  /* max |w - w'| */
} rf_qerr;
rf_status rf_quant_error(rf_dtype src, const void *w, uint64_t rows, uint64_t cols,
                         int bits, int gs, rf_qmode mode, rf_dtype sdtype, rf_qerr *out, rf_err *err);
/* All 18 configs in one pass; out[c] for c = bits_index*3 + gs_index. Configs whose gs does not
 * divide cols get sse = NaN. */
rf_status rf_quant_error_all(rf_dtype src, const void *w, uint64_t rows, uint64_t cols,
                             rf_qmode mode, rf_dtype sdtype, rf_qerr out[RF_QCFG_N], rf_err *err);

/* The opt quantizer's error of a large unit, estimated from a sample of its groups (what
 * rf_analyse does by default; method and measured accuracy: docs/profile.md, "Estimated errors").
 * Every group of a unit is seen; for config c, group g (of c's group size) is quantized by the opt
 * search with probability pi = min(1, rate[c] * r2_g / ref), r2_g its squared range and ref the
 * median r2 of its neighbourhood (1024 weights of one row, or rows of 1024 weights in all),
 * decided by one uniform number per group, a hash of its position in the unit (so the samples of
 * one group size are nested: a group searched at a rate is searched at every higher one); the
 * unit's error is then a regression estimate on r2, sqrt(r2 ref) and ref, whose totals over all
 * groups are exact. With rate >= 1 every group is measured and the result is exact: bit-identical
 * to rf_quant_error_all in opt mode. */
typedef struct rf_qsample {
    uint64_t member;          /* index of the matrix in its unit (experts), */
    uint64_t member_rows;     /* rows of one member, */
    uint64_t row0;            /* and the index of the matrix's first row in its member: the sample's positions */
    double rate[RF_QCFG_N];   /* per config (rf_quant_sample_rate); >= 1: every group */
} rf_qsample;
/* Sums over a piece of a unit, for one call; a unit's are the sum of its pieces' (rf_qsums_add),
 * in a fixed order for a result that does not depend on threads. */
typedef struct rf_qsums {
    uint64_t groups[RF_QGS_N];  /* groups of each size */
    double t[RF_QGS_N][3];      /* totals of the auxiliaries x over every group */
    uint64_t sampled[RF_QCFG_N];
    double hx[RF_QCFG_N][3];    /* sampled groups: x / pi */
    double xx[RF_QCFG_N][6];    /* sampled groups: x_i x_j / (pi r2), upper triangle 00 01 02 11 12 22 */
    double sse[RF_QCFG_N];      /* sampled groups: sse (the exact error when every group was sampled) */
    double h[RF_QCFG_N];        /* sampled groups: sse / pi */
    double xy[RF_QCFG_N][3];    /* sampled groups: x_i sse / (pi r2) */
    float emax[RF_QCFG_N];      /* largest |w - w'| in the sampled groups */
} rf_qsums;
/* Rate that samples about TARGET of a unit's GROUPS (groups of one size); 1 (every group, exact)
 * when TARGET is at least an eighth of GROUPS, or 0. */
double rf_quant_sample_rate(uint64_t groups, uint64_t target);
/* Sums of one rows x cols piece (whole rows of one member, src F32/BF16/F16) for the configs in
 * CFGMASK (bit c as rf_quant_error_all; every gs must divide cols). For results that do not depend
 * on how a member is cut into pieces, cut it at multiples of rf_quant_piece_rows(cols) rows. */
rf_status rf_quant_error_sample(rf_dtype src, const void *w, uint64_t rows, uint64_t cols, uint32_t cfgmask,
                                rf_dtype sdtype, const rf_qsample *s, rf_qsums *out, rf_err *err);
uint64_t rf_quant_piece_rows(uint64_t cols);
void rf_qsums_add(rf_qsums *acc, const rf_qsums *x);
/* Config C's error from a unit's sums: sse (exact when every group of its size was sampled,
 * else the estimate), max_abs (of the sample), and whether it is an estimate. */
void rf_qsums_error(const rf_qsums *s, int c, double *sse, double *max_abs, int *estimated);
/* ===================================================================== GPTQ (quant/gptq.c) */

/* GPTQ (Frantar et al. 2022) in MLX's affine format: columns are quantized in order, each one's
 * rounding error fed back into the columns not yet quantized through the Cholesky factor of the
 * damped Hessian H + lambda I (H = E[x x^T] of the layer's inputs, lambda = damp x mean diag H),
 * in blocks of 128 columns (lazy batch updates); group scale and bias are chosen when the sweep
 * reaches a group's first column, from the weights as updated so far, by the GRID quantizer
 * (RF_QMODE_MLX: MLX's min/max rule, what mlx-lm's gptq does; RF_QMODE_OPT: the error-minimising
 * search). The output is ordinary MLX affine data (packed, scales, biases as rf_quant_quantize).
 * Rows are independent: any split of the rows gives the same bytes. */
typedef struct rf_gptq rf_gptq;
/* Factor a Hessian: H is the packed upper triangle by rows (n (n + 1) / 2 floats: row i holds
 * H[i][i..n-1], the statistics file's layout). Damping is raised tenfold (up to 6 times) until
 * the factorisation succeeds. POOL (may be NULL) splits the work; the factor does not depend on it.
 * Memory while preparing: rf_gptq_prepare_bytes(n); the factor keeps rf_gptq_factor_bytes(n). */
rf_status rf_gptq_prepare(const float *h, uint64_t n, double damp, rf_pool *pool, rf_gptq **out, rf_err *err);
void rf_gptq_free(rf_gptq *g);
uint64_t rf_gptq_prepare_bytes(uint64_t n);
uint64_t rf_gptq_factor_bytes(uint64_t n);
uint64_t rf_gptq_cols(const rf_gptq *g);
double rf_gptq_lambda(const rf_gptq *g);   /* the damping added to the diagonal */
/* Quantize ROWS x COLS weights (COLS = the factor's n) as rf_quant_quantize does, with GPTQ. */
rf_status rf_gptq_quantize(const rf_gptq *g, rf_dtype src, const void *w, uint64_t rows, uint64_t cols, int bits, int gs,
                           rf_qmode grid, rf_dtype sdtype, uint32_t *packed, void *scales, void *biases, rf_err *err);
/* ===================================================================== ggml block types (quant/kquant.c) */

/* Tensor types of GGUF files, numbered as ggml numbers them on disk. ramfit encodes and decodes
 * F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS
 * (rf_gtype_supported); the others are known by name and size only (inspect). The encoders give
 * the same bytes as ggml's reference encoders, i.e. what llama-quantize writes without an
 * importance matrix. */
typedef enum rf_gtype {
    RF_GT_F32 = 0, RF_GT_F16 = 1, RF_GT_Q4_0 = 2, RF_GT_Q4_1 = 3, RF_GT_Q5_0 = 6, RF_GT_Q5_1 = 7,
    RF_GT_Q8_0 = 8, RF_GT_Q8_1 = 9, RF_GT_Q2_K = 10, RF_GT_Q3_K = 11, RF_GT_Q4_K = 12, RF_GT_Q5_K = 13,
    RF_GT_Q6_K = 14, RF_GT_Q8_K = 15, RF_GT_IQ4_NL = 20, RF_GT_IQ4_XS = 23, RF_GT_I8 = 24, RF_GT_I16 = 25,
    RF_GT_I32 = 26, RF_GT_I64 = 27, RF_GT_F64 = 28, RF_GT_BF16 = 30,
    RF_GT_COUNT = 43     /* ids are below this */
} rf_gtype;
/* llama.cpp's spelling ("Q4_K", "BF16", "IQ4_XS"); NULL for an id ggml does not define. */
const char *rf_gtype_name(int type);
/* Case-insensitive name -> id; -1 when unknown. */
int rf_gtype_parse(const char *name);
/* Elements per block and bytes per block (0, 0 for an unknown id). */
uint64_t rf_gtype_block(int type);
uint64_t rf_gtype_block_bytes(int type);
/* 1 if ramfit can encode and decode the type. */
int rf_gtype_supported(int type);
/* 1 for the block-quantized types (not F32/F16/BF16/F64/integers). */
int rf_gtype_is_quantized(int type);
/* Bytes of a row of NCOLS elements; 0 when NCOLS is not a multiple of the block (or unknown). */
uint64_t rf_gtype_row_bytes(int type, uint64_t ncols);
/* The type llama-quantize writes for TYPE on rows of NCOLS: TYPE itself when its block divides
 * NCOLS, else its fallback (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
 * IQ4_XS -> IQ4_NL), and F16 when that does not divide NCOLS either. */
int rf_gtype_fallback(int type, uint64_t ncols);
/* Candidate types of a GGUF planning profile ('ramfit analyse --format gguf'), in increasing size
 * per weight: Q2_K Q3_K Q4_0 Q4_K Q5_0 Q5_1 Q5_K Q6_K Q8_0. A unit's candidates are the types
 * llama-quantize writes for Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_0 on its rows (rf_gtype_fallback):
 * the k-quants on rows of a multiple of 256, their fallbacks (Q4_0, Q5_0, Q5_1, Q8_0) on rows of a
 * multiple of 32 only, none (kept) on other widths and for routers (llama-quantize never
 * quantizes them). Index i of the table is the candidate's config index in the profile. */
#define RF_GCAND_N 9
int rf_gcand_type(int i);               /* -1 outside [0, RF_GCAND_N) */
int rf_gcand_index(int type);           /* -1 when TYPE is not a candidate type */
unsigned rf_gcand_mask(uint64_t ncols); /* bit i: rf_gcand_type(i) is a candidate for rows of NCOLS */
/* Nominal bits of a type (Q2_K 2, Q3_K 3, Q4_0/Q4_K 4, Q5_x 5, Q6_K 6, Q8_0 8; float types their
 * width); what reports and the plan file's "bits" say for a GGUF candidate. 0 when unknown. */
int rf_gtype_bits(int type);
/* Encode NROWS rows of NCOLS floats (row-major) into OUT (nrows * row_bytes). Non-finite input:
 * RF_ERR_NONFINITE naming row and column; a type ramfit cannot encode: RF_ERR_UNSUPPORTED;
 * NCOLS not a multiple of the block: RF_ERR_INVALID. */
rf_status rf_gquant_rows(int type, const float *x, uint64_t nrows, uint64_t ncols, void *out, rf_err *err);
/* Decode one row of NCOLS elements. */
rf_status rf_gdequant_row(int type, const void *row, uint64_t ncols, float *out, rf_err *err);

/* ===================================================================== profile (analyse/profile.c) */

/* A profile: for every quantization unit of a model, each candidate config with its exact MLX
 * bytes and measured error, per quantizer mode; plus every other tensor's kept bytes, so the
 * totals account for the whole model. Written once by the analysis pass, read by the planner.
 * File format (versioned JSON): docs/profile.md. */
#define RF_PROFILE_VERSION 4 /* GGUF profiles; MLX profiles are written as version 3; versions 1 to 3 load */

/* One affine candidate of a unit. Keep (the unquantized original) is implicit: bytes =
 * kept_bytes, error 0. An error measurement absent for a mode has sse = NaN. */
typedef struct rf_pcand {
    int bits, gs;               /* GGUF profiles: rf_gtype_bits(gtype) and the type's block (32 or 256) */
    int gtype;                  /* GGUF profiles: the ggml type (rf_gcand_type); 0 in MLX profiles */
    uint64_t bytes;             /* exact MLX bytes of all members: packed words + scales + biases */
    rf_qerr err[2];             /* indexed by rf_qmode; err[m].ssq equals the unit's ssq */
} rf_pcand;

typedef struct rf_pstats {      /* over all weights of the unit */
    double mean, rms, absmax;
    double kurtosis;            /* excess kurtosis (0 for a Gaussian) */
    double frac_6sigma;         /* fraction of weights with |w - mean| > 6 * stddev */
} rf_pstats;

typedef struct rf_punit {
    char name[160];             /* MLX module path */
    rf_role role;
    int layer;                  /* -1 outside the layer stack */
    int n_layers;               /* layers of the model (depth priors) */
    int n_members;              /* tensors (experts) stacked in the unit */
    uint64_t rows, cols;        /* of one member */
    uint64_t nparams;           /* all members */
    rf_dtype dtype;             /* original dtype */
    uint64_t kept_bytes;        /* bytes when kept (nparams * dtype size) */
    double ssq;                 /* sum of squares of all weights (denominator of D) */
    rf_pstats stats;
    int n_cands;                /* affine candidates, sorted by (bits, gs) */
    rf_pcand cands[RF_QCFG_N];
    unsigned estimated;         /* config mask (bit c as rf_cfg_index): candidates whose opt error is an
                                 * estimate from a sample of the unit's groups (rf_quant_error_sample);
                                 * 0: every error measured exactly */
} rf_punit;

/* A tensor that is not a unit (norms, biases, 1-D): always kept. */
typedef struct rf_pother {
    char name[160];
    rf_role role;
    int layer;
    uint64_t nparams;
    rf_dtype dtype;
    uint64_t bytes;
} rf_pother;

typedef struct rf_pfile {
    char name[256];             /* shard file name (no directory) */
    uint64_t bytes;
} rf_pfile;

/* Model identity and the config summary the planner uses (KV cache size, depth priors). */
typedef struct rf_pmodel {
    char name[256];             /* model directory base name */
    char architecture[128];     /* architectures[0] */
    char model_type[64];
    int hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size;
    int tie_word_embeddings;
    int num_experts, experts_per_tok, moe_intermediate_size;
    uint64_t fingerprint;       /* rf_st_fingerprint of the checkpoint */
    char ramfit_version[32];    /* of the ramfit that wrote the profile */
    rf_dtype f32_as;            /* the dtype the model's F32 tensors are counted in (analyse --dtype);
                                 * RF_DT_INVALID: the model has none, or a profile that does not say */
} rf_pmodel;

/* Bit masks for rf_profile_create: modes (1 << RF_QMODE_MLX | 1 << RF_QMODE_OPT) and configs
 * (bit c = bits_index * RF_QGS_N + gs_index, as rf_quant_error_all). */
#define RF_PROFILE_ALL_CONFIGS ((1u << RF_QCFG_N) - 1)

typedef struct rf_profile rf_profile;
/* An empty profile for MODEL measuring the given modes and configs. */
rf_status rf_profile_create(const rf_pmodel *model, unsigned modes, unsigned configs,
                            rf_profile **out, rf_err *err);
void rf_profile_free(rf_profile *p);
/* Start a unit record: zeroes U, sets name, role, layer, shape, dtype, kept_bytes, n_members = 1. */
void rf_punit_init(rf_punit *u, const char *name, rf_role role, int layer, int n_layers,
                   uint64_t rows, uint64_t cols, uint64_t nparams, rf_dtype dtype);
/* Append a candidate; MLX or OPT may be NULL (mode not measured). */
rf_status rf_punit_add_cand(rf_punit *u, int bits, int gs, uint64_t bytes,
                            const rf_qerr *mlx, const rf_qerr *opt, rf_err *err);
/* Append a candidate of a GGUF profile: ggml type GTYPE (a rf_gcand_type), its exact bytes in the
 * file (every member's rows, padded to GGUF's 32-byte alignment) and its error (ggml's encoders; the
 * profile's only mode, slot RF_QMODE_MLX). */
rf_status rf_punit_add_gcand(rf_punit *u, int gtype, uint64_t bytes, const rf_qerr *e, rf_err *err);
/* Exact bytes of GTYPE for a unit of MEMBERS x ROWS x COLS in a GGUF file (one tensor, padded to 32). */
uint64_t rf_gguf_tensor_bytes(int gtype, uint64_t members, uint64_t rows, uint64_t cols);
/* Append records (copied and validated; errors name the unit and field). Units are sorted
 * into canonical candidate order; unit and tensor names must be unique. */
rf_status rf_profile_add_unit(rf_profile *p, const rf_punit *u, rf_err *err);
rf_status rf_profile_add_other(rf_profile *p, const rf_pother *o, rf_err *err);
rf_status rf_profile_add_file(rf_profile *p, const char *name, uint64_t bytes, rf_err *err);
/* How the opt errors were measured: groups per group size searched in a large unit (the sample
 * target of rf_analyse_opts.opt_sample); 0: every group (exact), or no opt mode. Default 0. */
/* A GGUF profile (version 4): candidates are ggml types (configs: a mask over rf_gcand_type's
 * table), errors are ggml's encoders' in mode slot RF_QMODE_MLX, kept units are written as their
 * dtype (routers F32), other tensors F32, and FIXED is the rest of the .gguf file (header,
 * metadata, tokenizer, alignment padding of the kept tensors), counted in rf_profile_other_bytes
 * and rf_profile_full_bytes so that a plan's total is the whole file. Set before adding units. */
void rf_profile_set_gguf(rf_profile *p, uint64_t fixed);
int rf_profile_is_gguf(const rf_profile *p);
uint64_t rf_profile_gguf_fixed(const rf_profile *p);
/* GGUF profiles: rows per unit whose error was measured (0: every row), and the target weights
 * sampled per unit (analyse --gguf-sample). */
void rf_profile_set_gguf_sample(rf_profile *p, uint64_t weights);
uint64_t rf_profile_gguf_sample(const rf_profile *p);
void rf_profile_set_opt_sample(rf_profile *p, uint64_t groups);
uint64_t rf_profile_opt_sample(const rf_profile *p);
/* A part of a profile made by 'ramfit analyse --shard K/N' (rf_analyse_opts.shard_*): shard
 * INDEX (1-based) of COUNT, holding the units FIRST .. FIRST + unit count - 1 of the whole
 * profile's TOTAL units (and every other tensor). A part is not a profile the planner takes:
 * rf_profile_merge joins the parts. COUNT 0: a whole profile (the default). */
#define RF_MAX_SHARDS 100000
rf_status rf_profile_set_shard(rf_profile *p, int index, int count, uint64_t first, uint64_t total, rf_err *err);
int rf_profile_shard(const rf_profile *p, int *index, int *count, uint64_t *first, uint64_t *total);
/* The whole profile from all N parts of one analysis, in any order: they must come from the same
 * checkpoint (fingerprint, shard files), ramfit version, modes, configs and sampling, and cover
 * every unit exactly once. The result is what one machine's analysis gives, byte for byte.
 * RF_ERR_MISMATCH names the part and what differs; LABELS (may be NULL) name the parts in messages. */
rf_status rf_profile_merge(const rf_profile *const *parts, size_t n, const char *const *labels, rf_profile **out,
                           rf_err *err);

const rf_pmodel *rf_profile_model(const rf_profile *p);
unsigned rf_profile_modes(const rf_profile *p);
unsigned rf_profile_configs(const rf_profile *p);
uint64_t rf_profile_unit_count(const rf_profile *p);
const rf_punit *rf_profile_unit(const rf_profile *p, uint64_t i);
int64_t rf_profile_find_unit(const rf_profile *p, const char *name); /* -1 if absent */
uint64_t rf_profile_other_count(const rf_profile *p);
const rf_pother *rf_profile_other(const rf_profile *p, uint64_t i);
uint64_t rf_profile_file_count(const rf_profile *p);
const rf_pfile *rf_profile_file(const rf_profile *p, uint64_t i);
/* Totals over units and other tensors: parameters, unquantized bytes, bytes of the others. */
uint64_t rf_profile_param_count(const rf_profile *p);
uint64_t rf_profile_full_bytes(const rf_profile *p);
uint64_t rf_profile_other_bytes(const rf_profile *p);
/* Relative error D = sse/ssq of candidate C of U in MODE (NaN when not measured; 0 when ssq is 0
 * and sse is 0), and SQNR in dB (+inf for D = 0). */
double rf_pcand_d(const rf_punit *u, const rf_pcand *c, rf_qmode mode);
double rf_d_to_sqnr_db(double d);
/* Activation-weighted errors (rf_analyse with statistics): every candidate's sse and the unit's ssq
 * are sums over the weights of (error or weight)^2 x E[x_j^2] of its input column (docs/calibration.md).
 * Recorded in the profile's optional "calibration" object; weighted == 0: data-free. */
typedef struct rf_pcalib {
    int weighted;
    char text[256];             /* the calibration text's name */
    uint64_t tokens;
    uint64_t stats_checksum;    /* rf_stats_checksum of the statistics used */
} rf_pcalib;
void rf_profile_set_calibration(rf_profile *p, const rf_pcalib *c);
const rf_pcalib *rf_profile_calibration(const rf_profile *p);
/* Spelling of roles and modes in profile and plan files ("attn_q", "mlx", ...). */
const char *rf_profile_role_token(rf_role r);
const char *rf_qmode_token(rf_qmode m);

/* Serialise: deterministic text, doubles in their shortest form that loads bit-identical. to_json makes
 * one self-contained JSON text; save writes PATH (a JSON index) plus its data file (PATH less ".json",
 * plus ".bin": the errors as binary numbers, size and checksum recorded in the index). The caller frees *out. */
rf_status rf_profile_to_json(const rf_profile *p, char **out, size_t *len, rf_err *err);
rf_status rf_profile_save(const rf_profile *p, const char *path, rf_err *err);
/* Parse untrusted text; LABEL names it in messages (RF_ERR_FORMAT naming the unit and field).
 * from_json takes self-contained text (an index without its data is refused); load reads an index's
 * data file too; any version 1 file loads. */
rf_status rf_profile_from_json(const char *text, size_t len, const char *label, rf_profile **out, rf_err *err);
/* The index and data file in memory (what save writes, DATA_NAME being the data file's name). */
rf_status rf_profile_to_parts(const rf_profile *p, const char *data_name, char **json, size_t *json_len, void **data,
                              size_t *data_len, rf_err *err);
rf_status rf_profile_from_parts(const char *json, size_t json_len, const void *data, size_t data_len, const char *label,
                                rf_profile **out, rf_err *err);
rf_status rf_profile_load(const char *path, rf_profile **out, rf_err *err);
/* The data file the profile index at PATH names (*OUT malloc'd; NULL for a self-contained file). */
rf_status rf_profile_data_path(const char *path, char **out, rf_err *err);
/* Remove what save wrote at PATH: the index and its data file (absent files are fine). */
rf_status rf_profile_remove(const char *path, rf_err *err);

/* ===================================================================== plan (plan/plan.c, plan/mckp.c, plan/targets.c) */

/* A plan: one config per unit of a profile for a byte budget, found by an exact multiple-choice
 * knapsack solver (docs/plan.md), or a baseline rule for comparison. */
typedef enum rf_plan_method {
    RF_METHOD_RAMFIT = 0, /* minimise sum w_u * D_u^p under the budget (exact) */
    RF_METHOD_UNIFORM,    /* every unit at (bits, gs); kept where gs does not divide cols */
    RF_METHOD_MIXED,      /* mlx-lm mixed_LOW_HIGH recipe */
    RF_METHOD_RAM         /* RAM/MINT: min/max quantizer, 8 candidates, prior * NRMSE, solved under the budget */
} rf_plan_method;

typedef enum rf_weight_rule {
    RF_WEIGHT_RAMFIT = 0, /* (active) parameter share * role prior * depth prior */
    RF_WEIGHT_PARAMS,     /* parameter share only */
    RF_WEIGHT_RAM         /* RAM priors: embed 10, lm_head 10, router 8, first layer 3, last 2, else 1 */
} rf_weight_rule;

/* The objective's importance weights: w_u = [share_u] * role[role] * depth(layer), optionally
 * replaced by fn. The objective is sum_u w_u * D_u^exponent. */
typedef struct rf_plan_weights {
    rf_weight_rule rule;
    double role[RF_ROLE_COUNT];
    double first_layer, last_layer; /* depth priors for layer 0 and layer L-1 (others 1) */
    int param_share;                /* multiply by nparams / sum of unit nparams */
    int moe_active;                 /* expert banks count experts_per_tok / num_experts of their params */
    double exponent;                /* p in D^p (1: squared error, 0.5: NRMSE) */
    double (*fn)(void *user, const rf_punit *u, double w); /* optional: final weight from the rule's */
    void *user;
} rf_plan_weights;
/* The documented defaults of a rule. */
void rf_plan_weights_default(rf_plan_weights *w, rf_weight_rule rule);
/* One override "KEY=VALUE": a role token (attn_v=2), first, last, exponent, share (0/1), active (0/1),
 * rule (ramfit|params|ram: resets to that rule's defaults). */
rf_status rf_plan_weights_set(rf_plan_weights *w, const char *assignment, rf_err *err);
/* A JSON object of the same keys (roles under "role": {...}); applied on top of W. */
rf_status rf_plan_weights_load(const char *path, rf_plan_weights *w, rf_err *err);
/* The weight of unit U of profile P under W. */
double rf_plan_unit_weight(const rf_profile *p, const rf_plan_weights *w, const rf_punit *u);

typedef struct rf_plan_opts {
    rf_plan_method method;
    int bits, gs;            /* uniform: the config; mixed: bits = low, high_bits = high, gs */
    int high_bits;
    rf_qmode mode;           /* whose measured error to use (baselines: MLX) */
    double veto_db;          /* candidates below this SQNR are not allowed (default 9) */
    int unsafe;              /* lift the veto (hard rules stay) */
    rf_plan_weights weights;
    uint64_t state_limit;    /* exact search: most DP states before giving up with a gap (0: default) */
} rf_plan_opts;
void rf_plan_opts_default(rf_plan_opts *o);
/* "ramfit", "uniform:BITS:GS", "mixed:LOW:HIGH[:GS]" or "ram": sets method, bits, gs, and for
 * ram the mode, veto and weights it prescribes. */
rf_status rf_plan_parse_method(const char *text, rf_plan_opts *o, rf_err *err);

typedef enum rf_plan_status {
    RF_PLAN_OPTIMAL = 0,     /* proven optimal (relative tolerance 1e-9 on the objective) */
    RF_PLAN_GAP,             /* search limit reached: best plan found, gap to the lower bound */
    RF_PLAN_KEEP_ALL,        /* budget >= unquantized size: everything kept */
    RF_PLAN_RULE             /* a baseline rule: not optimised */
} rf_plan_status;
const char *rf_plan_status_name(rf_plan_status s);

typedef struct rf_plan_unit {
    const char *name;
    rf_role role;
    int layer;
    int bits, gs;            /* 0, 0: kept */
    int gtype;               /* GGUF plans: the ggml type of a quantized unit; 0: kept or an MLX plan */
    uint64_t nparams, bytes;
    double d;                /* predicted relative squared error (0 when kept) */
    double weight;           /* objective weight */
    double max_abs;          /* predicted max |w - w'| (0 when kept) */
} rf_plan_unit;

typedef struct rf_plan rf_plan;
/* Preprocessed profile + options: solving any number of budgets reuses the hulls. */
typedef struct rf_planner rf_planner;
rf_status rf_planner_create(const rf_profile *p, const rf_plan_opts *o, rf_planner **out, rf_err *err);
void rf_planner_free(rf_planner *pl);
/* Smallest total bytes (units + other tensors) of any allowed plan; unquantized total. */
uint64_t rf_planner_min_safe(const rf_planner *pl);
uint64_t rf_planner_full_bytes(const rf_planner *pl);
/* Plan for BUDGET total tensor bytes. Below min-safe: RF_ERR_BUDGET naming min-safe.
 * Baseline rules ignore the budget (each is reported at its own size). */
rf_status rf_planner_solve(rf_planner *pl, uint64_t budget, rf_plan **out, rf_err *err);
/* Plans for N budgets at once on POOL's threads (NULL: the calling thread): PLANS[i] gets the plan
 * for BUDGETS[i], or NULL with ERRS[i] saying why (RF_ERR_BUDGET below min-safe, ...), exactly as
 * rf_planner_solve would (the same plans for any thread count). Returns RF_OK; every budget has
 * its own result. */
rf_status rf_planner_solve_many(rf_planner *pl, const uint64_t *budgets, uint64_t n, rf_pool *pool, rf_plan **plans,
                                rf_err *errs);
/* create + solve + free. */
rf_status rf_plan_solve(const rf_profile *p, const rf_plan_opts *o, uint64_t budget, rf_plan **out, rf_err *err);
void rf_plan_free(rf_plan *plan);

uint64_t rf_plan_unit_count(const rf_plan *plan);
const rf_plan_unit *rf_plan_get_unit(const rf_plan *plan, uint64_t i);
int64_t rf_plan_find_unit(const rf_plan *plan, const char *name);
rf_plan_status rf_plan_status_of(const rf_plan *plan);
rf_plan_method rf_plan_method_of(const rf_plan *plan);
const char *rf_plan_method_text(const rf_plan *plan);   /* "ramfit", "uniform:4:64", ... */
rf_qmode rf_plan_mode(const rf_plan *plan);
uint64_t rf_plan_budget(const rf_plan *plan);           /* 0 for baseline rules */
uint64_t rf_plan_total_bytes(const rf_plan *plan);      /* units + other tensors */
uint64_t rf_plan_other_bytes(const rf_plan *plan);
uint64_t rf_plan_param_count(const rf_plan *plan);
double rf_plan_bpw(const rf_plan *plan);                /* 8 * total bytes / all parameters */
double rf_plan_objective(const rf_plan *plan);          /* sum w_u * D_u^p */
double rf_plan_lower_bound(const rf_plan *plan);        /* proven: no plan in budget is below it */
double rf_plan_gap(const rf_plan *plan);                /* (objective - bound) / objective, 0 if optimal */
uint64_t rf_plan_min_safe(const rf_plan *plan);
uint64_t rf_plan_states(const rf_plan *plan);           /* DP states the exact search made */
int rf_plan_veto_violations(const rf_plan *plan);       /* units below the veto (baselines only) */
double rf_plan_veto_db(const rf_plan *plan);
const char *rf_plan_model_name(const rf_plan *plan);
uint64_t rf_plan_fingerprint(const rf_plan *plan);
/* The profile's f32_as (what the model's F32 tensors are counted as); RF_DT_INVALID when it has
 * none or the plan file does not say (plans before ramfit 0.2). */
rf_dtype rf_plan_f32_as(const rf_plan *plan);
/* 1 for a plan over a GGUF profile: units carry ggml types, the total is the .gguf file's size. */
int rf_plan_is_gguf(const rf_plan *plan);
/* Objective of PLAN's configs under the weights and mode of O (compares baselines with ramfit). */
rf_status rf_plan_evaluate(const rf_plan *plan, const rf_profile *p, const rf_plan_opts *o, double *objective, rf_err *err);
/* RF_ERR_MISMATCH unless PLAN was made from a profile of the same checkpoint with the same units. */
rf_status rf_plan_check_profile(const rf_plan *plan, const rf_profile *p, rf_err *err);

/* Report data: parameters and bytes at each config (keep is bits 0), sorted by bits then gs. */
typedef struct rf_plan_share { int bits, gs, gtype; uint64_t units, nparams, bytes; } rf_plan_share;
/* Fills up to CAP entries, returns how many configs the plan uses. */
int rf_plan_shares(const rf_plan *plan, rf_plan_share *out, int cap);
/* Unit indices ordered from most protected (most bits per weight, then lowest D) to least. */
rf_status rf_plan_protection_order(const rf_plan *plan, uint64_t *order, rf_err *err);

/* Plan files: versioned JSON naming the profile's model and fingerprint (docs/plan.md). */
rf_status rf_plan_to_json(const rf_plan *plan, char **out, size_t *len, rf_err *err);
rf_status rf_plan_save(const rf_plan *plan, const char *path, rf_err *err);
rf_status rf_plan_from_json(const char *text, size_t len, const char *label, rf_plan **out, rf_err *err);
rf_status rf_plan_load(const char *path, rf_plan **out, rf_err *err);

/* Budget curve SVG: predicted objective vs total bytes; MIN_SAFE and the MARKS drawn as
 * vertical lines. Deterministic text. */
typedef struct rf_curve_point { uint64_t bytes; double objective; } rf_curve_point;
typedef struct rf_curve_mark { uint64_t bytes; const char *label; } rf_curve_mark;
rf_status rf_plan_curve_svg(const rf_curve_point *pts, int n, uint64_t min_safe, const rf_curve_mark *marks,
                            int nmarks, const char *title, const char *path, rf_err *err);

/* Budget from bits per weight: floor(bpw * all parameters / 8) bytes. */
rf_status rf_plan_bpw_budget(const rf_profile *p, double bpw, uint64_t *budget, rf_err *err);

/* Named hardware targets (docs/plan.md states the overhead rule). */
typedef enum rf_target_kind { RF_TARGET_APPLE = 0, RF_TARGET_GPU, RF_TARGET_PHONE } rf_target_kind;
typedef struct rf_target {
    const char *name;        /* "m4-pro-24gb" */
    const char *description;
    rf_target_kind kind;
    uint64_t memory;         /* RAM or VRAM in bytes */
} rf_target;
int rf_target_count(void);
const rf_target *rf_target_get(int i);
const rf_target *rf_target_find(const char *name);
/* Usable tensor budget on T for profile P's model with a KV cache of CONTEXT tokens (fp16):
 * memory limit - runtime reserve - KV cache. Parts are returned when non-NULL. */
typedef struct rf_target_budget {
    uint64_t limit, reserve, kv_cache, budget;
} rf_target_budget;
rf_status rf_target_budget_for(const rf_target *t, const rf_profile *p, uint64_t context, rf_target_budget *out, rf_err *err);

/* ===================================================================== inference engine (engine/engine.c) */

/* Runs a checkpoint: Hugging Face (BF16/F16/F32) or MLX affine-quantized (per-module bits and
 * group size from config.json "quantization"), families llama, mistral, qwen2, qwen3, mixtral,
 * qwen3_moe. Weights stay memory-mapped; the kernels compute on the stored rows. Not thread-safe:
 * one engine serves one caller (it runs its own worker threads). */
typedef struct rf_engine rf_engine;
typedef struct rf_engine_opts {
    int threads;    /* worker threads including the caller; <= 0: 2 */
    int max_ctx;    /* KV cache positions; <= 0: min(max_position_embeddings, 4096) */
    int max_batch;  /* tokens per pass over the weights; <= 0: 256 */
} rf_engine_opts;
rf_status rf_engine_open(const char *model_dir, const rf_engine_opts *opts, rf_engine **out, rf_err *err);
void rf_engine_free(rf_engine *e);
const rf_config *rf_engine_config(const rf_engine *e);
int rf_engine_vocab(const rf_engine *e);
int rf_engine_max_ctx(const rf_engine *e);
/* fast 1: activations rounded to 8 bits in blocks of 32 for quantized weights and integer dot
 * products (llama.cpp's way: faster, not exact; generate and `ppl --fast`); 0 (the default): the
 * exact float products that ppl and kld report. */
void rf_engine_set_fast(rf_engine *e, int fast);
/* Tokens in the KV cache; the next token goes to this position. */
int rf_engine_pos(const rf_engine *e);
/* Empty the KV cache (position 0). */
void rf_engine_reset(rf_engine *e);
/* Forget cached positions >= pos (0 <= pos <= current). */
rf_status rf_engine_set_pos(rf_engine *e, int pos, rf_err *err);
/* Run N tokens at the current position and append them to the cache. logits: NULL (none), or
 * N*vocab floats (all_logits: one row per token) or vocab floats (the last token's). */
rf_status rf_engine_forward(rf_engine *e, const int32_t *tokens, int n, float *logits, int all_logits, rf_err *err);
/* Calibration hook: called with the input rows of every matrix product before it runs (the unit
 * and member multiplied: expert or head; NTOK rows of u->cols floats; a tied head is the embedding
 * unit), on the caller's thread, in a fixed order for a given input. NULL removes it. */
typedef void (*rf_engine_observer)(void *user, const rf_unit *u, int member, const float *x, int ntok);
void rf_engine_set_observer(rf_engine *e, rf_engine_observer fn, void *user);
/* Bytes of weight data: all of it, and what one decode step reads (one embedding row, the
 * active share of experts: top_k / num_experts of every bank). */
void rf_engine_weight_bytes(const rf_engine *e, uint64_t *total, uint64_t *per_token);

/* Token sampling (engine/sampler.c): temperature 0 is greedy (arg-max, lowest id on ties); otherwise
 * softmax(logits / temp), nucleus top_p in (0, 1], a deterministic generator seeded by seed. */
typedef struct rf_sampler rf_sampler;
rf_status rf_sampler_create(float temp, float top_p, uint64_t seed, int vocab, rf_sampler **out, rf_err *err);
void rf_sampler_free(rf_sampler *s);
int rf_sampler_sample(rf_sampler *s, const float *logits);

/* Perplexity and KL-divergence (engine/eval.c), on token ids (the caller tokenizes the whole text once,
 * without BOS). Protocols for windows of ctx tokens:
 *  RF_PPL_FULL: with a BOS id, chunks of ctx-1 ids, each fed as [BOS] + chunk, every chunk token
 *    scored; without, chunks of ctx ids, the last ctx-1 scored; the final partial chunk dropped.
 *  RF_PPL_LLAMACPP: llama.cpp's perplexity tool: the ids are taken with a leading BOS when the
 *    model has one, cut into chunks of ctx, each chunk's first id replaced by BOS (when it has
 *    one), only the second half of each window scored. */
typedef enum rf_ppl_protocol { RF_PPL_FULL = 0, RF_PPL_LLAMACPP = 1 } rf_ppl_protocol;
typedef struct rf_ppl_opts {
    int ctx;                  /* window size N (>= 2) */
    rf_ppl_protocol protocol;
    int bos_id;               /* -1: the tokenizer adds no BOS */
    uint64_t max_tokens;      /* 0: all; else use only the first max_tokens ids of the text */
    rf_progress progress;     /* units: windows */
} rf_ppl_opts;
typedef struct rf_ppl_result {
    double ppl, ppl_stderr;   /* exp(mean NLL) and its standard error (delta method) */
    double nll_mean, nll_stderr;
    uint64_t tokens, windows; /* tokens scored */
    double seconds, tokens_per_s; /* tokens processed (fed) per second */
} rf_ppl_result;
rf_status rf_eval_ppl(rf_engine *e, const int32_t *ids, uint64_t n, const rf_ppl_opts *o, rf_ppl_result *out,
                      rf_err *err);
typedef struct rf_kld_result {
    double kld_mean, kld_stderr, kld_p99, kld_max; /* KL(base || quant) per scored token, nats */
    double top1_agree;        /* fraction of scored positions with the same arg-max */
    rf_ppl_result base, quant;
} rf_kld_result;
/* Both engines must share the vocabulary; the same windows are scored in each. */
rf_status rf_eval_kld(rf_engine *base, rf_engine *quant, const int32_t *ids, uint64_t n, const rf_ppl_opts *o,
                      rf_kld_result *out, rf_err *err);

/* ===================================================================== tokenizer (tokenizer/) */

/* A Hugging Face tokenizer.json with a BPE model: byte-level BPE with regex splitting (GPT-2,
 * Llama-3, Qwen2/3) and SentencePiece-style BPE with byte fallback or <unk> (Llama-2, Mistral).
 * Normalizers Prepend/Replace/NFC/NFD/NFKC/NFKD/Lowercase/Strip/Sequence; pre-tokenizers
 * ByteLevel/Split/Metaspace/Digits/WhitespaceSplit/Sequence; decoders ByteLevel/Replace/
 * ByteFallback/Fuse/Strip/Metaspace/Sequence; post-processors TemplateProcessing/ByteLevel/
 * Roberta/Bert/Sequence. Anything else (Unigram, WordPiece, BPE dropout, ...) fails to load with
 * RF_ERR_UNSUPPORTED naming the feature. A handle may be shared by threads for encode/decode. */
typedef struct rf_tok rf_tok;
/* DIR/tokenizer.json, plus DIR/tokenizer_config.json when present (bos_token, eos_token; for
 * Llama/Gemma tokenizer classes add_bos_token/add_eos_token rebuild the template, as transformers
 * does). */
rf_status rf_tok_load(const char *model_dir, rf_tok **out, rf_err *err);
/* The same from memory (tests, fuzzing); config_json may be NULL. */
rf_status rf_tok_load_json(const char *json, size_t len, const char *config_json, size_t config_len, rf_tok **out,
                           rf_err *err);
void rf_tok_free(rf_tok *tok);
/* Encode UTF-8 text. Invalid UTF-8 is RF_ERR_INVALID (with the byte offset), never guessed at.
 * add_special: apply the post-processor (e.g. prepend BOS). *ids is malloc'd: free() it. */
rf_status rf_tok_encode(const rf_tok *tok, const char *text, uint64_t len, int add_special, int32_t **ids, uint64_t *n,
                        rf_err *err);
/* Decode ids through the decoder chain; special tokens are kept (HF's default). *text is
 * malloc'd and NUL-terminated: free() it. len may be NULL. */
rf_status rf_tok_decode(const rf_tok *tok, const int32_t *ids, uint64_t n, char **text, uint64_t *len, rf_err *err);
int32_t rf_tok_vocab_size(const rf_tok *tok); /* highest id + 1 */
int32_t rf_tok_bos_id(const rf_tok *tok);     /* -1 if none */
int32_t rf_tok_eos_id(const rf_tok *tok);     /* -1 if none */
int rf_tok_adds_bos(const rf_tok *tok);       /* encode with add_special prepends the BOS id */
/* The token's string as stored in the vocabulary (byte-level "Ġ..." / "▁..." form); NULL if none. */
const char *rf_tok_id_to_piece(const rf_tok *tok, int32_t id);
int32_t rf_tok_piece_to_id(const rf_tok *tok, const char *piece); /* -1 if none */
int rf_tok_is_special(const rf_tok *tok, int32_t id);            /* an added token marked special */

/* Streaming decode for generation: push ids one at a time and get the text they complete. Text
 * ending in an incomplete UTF-8 sequence (byte-level or byte-fallback pieces) is held back
 * until it completes (or 4 tokens later, then as U+FFFD). *text stays valid until the next push. */
typedef struct rf_tok_stream rf_tok_stream;
rf_status rf_tok_stream_create(const rf_tok *tok, rf_tok_stream **out, rf_err *err);
void rf_tok_stream_free(rf_tok_stream *s);
rf_status rf_tok_stream_push(rf_tok_stream *s, int32_t id, const char **text, uint64_t *len, rf_err *err);

/* ===================================================================== calibration statistics (calib/stats.c, calib/collect.c) */

/* What a little text says about a model's inputs, for the calibrated methods (docs/calibration.md):
 * the engine runs the unquantized model over the text and, for every quantization unit and member
 * (an expert bank's experts one by one, over the tokens routed to each; a tied lm_head is the
 * embedding unit), the inputs x of its matrix product are summed into E[x_j^2] per input column
 * (activation-weighted analysis) and, optionally, H = E[x x^T] (GPTQ). Units that always receive
 * the same input (q/k/v, gate/up) share one record. A statistics file is a JSON index plus a
 * binary data file (PATH less ".json" plus ".bin"). */
typedef struct rf_stats rf_stats;

typedef struct rf_calib_opts {
    int threads;              /* engine and accumulation threads; <= 0: 2 */
    int ctx;                  /* window tokens (ppl's full protocol); <= 0: 512 */
    uint64_t max_tokens;      /* use only the first max_tokens ids; 0: all */
    int hessian;              /* collect H too (GPTQ needs it; analysis needs only E[x^2]) */
    uint64_t memory;          /* bytes of H accumulators per pass over the text; 0: 4 GiB. When the
                               * model's Hessians do not fit, the text is run again for the rest
                               * (one pass per group of units), so memory stays bounded */
    const char *text_label;   /* the text's name, recorded in the file */
    rf_progress progress;     /* units: windows, over all passes */
} rf_calib_opts;
void rf_calib_opts_default(rf_calib_opts *o);

typedef struct rf_calib_result {
    uint64_t tokens, windows; /* fed per pass */
    int passes;
    uint64_t units, records;  /* units with input; distinct inputs (records) */
    uint64_t accum_bytes;     /* H accumulators of the largest pass */
    uint64_t hessian_bytes;   /* all H records (the data file holds them once) */
    uint64_t file_bytes;      /* data file */
    double ppl;               /* the model's perplexity on those windows */
    double seconds;
} rf_calib_result;

/* Run the unquantized checkpoint MODEL_DIR over IDS (the text without BOS; BOS_ID >= 0: every
 * window starts with it) and write the statistics to OUT_PATH (a ".json" index and its data file,
 * both via .tmp + rename). The file does not depend on the thread count. RES may be NULL. */
rf_status rf_calibrate(const char *model_dir, const int32_t *ids, uint64_t n, int bos_id, const rf_calib_opts *o,
                       const char *out_path, rf_calib_result *res, rf_err *err);

/* Open a statistics file (index checked, data file mapped; RF_ERR_FORMAT naming the field for a
 * malformed or mismatched one). Readers may be called from several threads. */
rf_status rf_stats_open(const char *path, rf_stats **out, rf_err *err);
void rf_stats_close(rf_stats *s);
int rf_stats_has_hessian(const rf_stats *s);
uint64_t rf_stats_tokens(const rf_stats *s);        /* tokens fed */
const char *rf_stats_text(const rf_stats *s);       /* the text's recorded name */
const char *rf_stats_model_name(const rf_stats *s);
uint64_t rf_stats_fingerprint(const rf_stats *s);   /* of the model's checkpoint (rf_st_fingerprint) */
uint64_t rf_stats_checksum(const rf_stats *s);      /* identifies the statistics (FNV-1a of the data file) */
/* RF_ERR_MISMATCH unless S was collected on M's checkpoint and its units have M's shapes. */
rf_status rf_stats_check_model(const rf_stats *s, const rf_model *m, rf_err *err);
/* Member MEMBER of unit UNIT: E[x_j^2] of its COLS input columns (valid while S is open), the
 * tokens it saw and its record (equal records: the same inputs). RF_ERR_NOT_FOUND when the unit is
 * not in S or that member never had input (an expert no token was routed to). */
rf_status rf_stats_moments(const rf_stats *s, const char *unit, int member, const double **sq, uint64_t *tokens,
                           int64_t *record, rf_err *err);
/* The same member's H = E[x x^T] as the packed upper triangle by rows (cols (cols + 1) / 2 floats,
 * valid while S is open; checked against its checksum on first use). */
rf_status rf_stats_hessian(const rf_stats *s, const char *unit, int member, const float **h, uint64_t *cols,
                           rf_err *err);

/* ===================================================================== analysis (analyse/analyse.c) */

/* The data-free analysis pass: measures every quantization unit of a model at every candidate
 * config and fills a profile (docs/profile.md). Streams the mmapped shards in row blocks (peak
 * memory does not grow with the model), runs blocks in parallel and combines per-block sums in
 * block order, so the profile is byte-identical for any thread count.
 *  - units: every catalogue unit; one whose input dimension no group size divides (or which is
 *    not 2-D) is recorded with zero candidates (kept), with its statistics. Expert banks are
 *    measured expert by expert and aggregated (sse and ssq summed, max of max_abs): the profile
 *    format has no per-member records.
 *  - others: every tensor that is not a unit weight, with its kept bytes.
 *  - candidate bytes are exact MLX bytes with scales/biases in the source's 16-bit dtype
 *    (F32 sources: BF16), what the quantize command writes.
 *  - kept bytes (units and others) are in the output dtype: rf_quantize_out_dtype(dtype, f32_as),
 *    so F32 sources count as BF16 by default, as the quantize command writes them; the profile's
 *    "dtype" of a unit or other tensor is that output dtype.
 * Errors: RF_ERR_NONFINITE naming the tensor and [row, column]; RF_ERR_UNSUPPORTED for a unit
 * weight that is not F32/BF16/F16 (e.g. I32, or an already MLX-quantized checkpoint). */
typedef struct rf_analyse_opts {
    int threads;              /* <= 0: online CPUs */
    unsigned modes;           /* 1 << RF_QMODE_MLX and/or 1 << RF_QMODE_OPT; 0: mlx */
    unsigned configs;         /* config mask as rf_profile_create; 0: all 18 */
    uint64_t block_bytes;     /* input bytes per row block; 0: 16 MiB */
    /* Checkpoint of completed units (a partial profile, written via .tmp + rename): saved
     * when interrupted and every checkpoint_s seconds; NULL: none. With resume, units already
     * in it are taken from it (after checking model fingerprint, modes and configs); a missing
     * file starts from scratch. The result is byte-identical to an uninterrupted run. */
    const char *partial_path;
    int resume;
    double checkpoint_s;      /* <= 0: 30 s */
    rf_progress progress;     /* units: input bytes; what: "k/N unit-name"; called on the caller's thread */
    rf_dtype f32_as;          /* dtype F32 tensors are kept in: RF_DT_BF16 (default, also for 0), F16 or F32 */
    /* Opt mode: groups per group size whose opt error is searched in each unit; a unit with more
     * than twice as many groups gets an estimate from that sample (rf_quant_error_sample,
     * docs/profile.md); 0: RF_ANALYSE_OPT_SAMPLE; RF_ANALYSE_EXACT: every group of every unit. */
    uint64_t opt_sample;
    /* Analyse only shard shard_index (1-based) of shard_count: a deterministic share of the units,
     * contiguous and balanced by bytes; the result is a part for rf_profile_merge. 0: all units. */
    int shard_index, shard_count;
    /* GGUF candidates instead of MLX configs (analyse --format gguf): every unit's ggml types
     * (rf_gcand_mask), exact file bytes, ggml's encoders' errors; modes and configs are ignored.
     * Errors of a unit with more than 2 x gguf_sample weights are estimated from evenly spaced
     * rows holding about gguf_sample weights (docs/profile.md); 0: RF_ANALYSE_GGUF_SAMPLE;
     * RF_ANALYSE_EXACT: every row. The export's fixed part needs the model's tokenizer. */
    int gguf;
    uint64_t gguf_sample;
    const rf_stats *stats;    /* calibration statistics of this model: every error weighted by E[x_j^2] of its
                               * input column (src/calib/weighted.c); units without statistics (an untied
                               * embedding) stay data-free. NULL: data-free (the default) */
} rf_analyse_opts;
#define RF_ANALYSE_OPT_SAMPLE 4096
#define RF_ANALYSE_EXACT UINT64_MAX
#define RF_ANALYSE_GGUF_SAMPLE (1ull << 20)
void rf_analyse_opts_default(rf_analyse_opts *o);
/* "K/N" (1 <= K <= N <= 100000) -> shard index and count. */
rf_status rf_analyse_parse_shard(const char *text, int *index, int *count, rf_err *err);
/* "mlx", "opt" or "both" -> mode mask. */
rf_status rf_analyse_parse_modes(const char *text, unsigned *modes, rf_err *err);
/* "all", or a comma list of BITS/GS or BITS:GS ("4/64,8:64"), BITS alone (every gs), "keep"
 * (always implied) -> config mask. */
rf_status rf_analyse_parse_candidates(const char *text, unsigned *configs, rf_err *err);
/* The identity rf_analyse writes: directory base name, config summary, fingerprint, version. */
void rf_analyse_identity(const rf_model *m, rf_pmodel *out);
/* The profile path 'ramfit analyse' writes by default (and one-shot quantize looks for): the
 * model directory's base name + ".profile.json", relative to the current directory.
 * Returns 0 when DIR has no usable name or CAP is too small. */
int rf_analyse_default_path(const char *model_dir, char *out, size_t cap);
/* Analyse M. Interrupted (progress.cancel): RF_ERR_INTERRUPTED after saving the partial file. */
rf_status rf_analyse(const rf_model *m, const rf_analyse_opts *o, rf_profile **out, rf_err *err);
/* RF_ERR_MISMATCH (naming both models and what differs) unless P was made from M's checkpoint:
 * same fingerprint and shard files, and the same units with the same shapes. */
rf_status rf_analyse_check_profile(const rf_model *m, const rf_profile *p, rf_err *err);
/* RF_ERR_MISMATCH unless P counts M's F32 tensors (kept weights, other tensors, scales/biases) in
 * rf_quantize_out_dtype(F32, F32_AS), as rf_analyse with that f32_as does (--dtype). */
rf_status rf_analyse_check_dtype(const rf_model *m, const rf_profile *p, rf_dtype f32_as, rf_err *err);

/* ===================================================================== synthetic checkpoints (synth/synth.c) */

/* Writes a synthetic Hugging Face checkpoint with the names, shapes and config.json of a real
 * architecture and realistic weight statistics (log-normal row scales, Student-t entries,
 * outlier input columns in some layers, per-layer std, norms near 1). Values are a pure
 * function of (seed, tensor name, element index): output is byte-identical for any thread
 * count, and data is generated block by block (never the whole model in memory). */
typedef struct rf_synth_opts {
    const char *like;         /* preset: "qwen3-8b", "qwen3-30b-a3b", "llama-3-8b", ... */
    double scale;             /* width factor in (0, 1]; 0: 1. Widths stay multiples of 128 */
    int layers;               /* 0: the preset's */
    int vocab;                /* 0: the preset's */
    int experts;              /* 0: the preset's (MoE presets only) */
    uint64_t seed;
    rf_dtype dtype;           /* BF16 (default when RF_DT_INVALID), F16 or F32 */
    uint64_t max_shard_bytes; /* 0: 5 GB (as Hugging Face) */
    int threads;              /* <= 0: online CPUs */
} rf_synth_opts;
void rf_synth_opts_default(rf_synth_opts *o);
int rf_synth_preset_count(void);
const char *rf_synth_preset_name(int i);
/* The config the options describe (widths after scaling). */
rf_status rf_synth_config(const rf_synth_opts *o, rf_config *out, rf_err *err);
/* Write config.json, generation_config.json and the shards into OUT_DIR (created if missing;
 * existing weight files there are replaced). Progress units: bytes of tensor data. */
rf_status rf_synth_write(const rf_synth_opts *o, const char *out_dir, rf_progress *progress, rf_err *err);

/* ===================================================================== quantize (quantize/quantize.c, io/mlx.c) */

/* Writes the MLX checkpoint a plan describes (docs/mlx-format.md): safetensors shards (mlx-lm's
 * greedy 5 GiB rule and names) with __metadata__ {"format": "mlx"} and
 * model.safetensors.index.json (always, as mlx-lm), config.json with "quantization" and
 * "quantization_config", the files a loader needs from the top of the model directory (tokenizer
 * and vocabulary files, chat templates, generation_config.json, *.py as mlx-lm copies them, and
 * licence files; everything else, such as pytorch_model.bin, *.gguf or original/, is left out and
 * named in the result), and ramfit.json
 * (plan, fingerprint, version, budget). Expert banks are stacked into switch_mlp tensors, a tied
 * lm_head is not written, rotary_emb.inv_freq buffers are dropped (as mlx-lm's sanitize does).
 * 16-bit tensors keep their dtype, and so do the scales/biases of 16-bit weights. F32 tensors:
 * with f32_as set, kept weights, other tensors and scales/biases are all written in it; by
 * default the first rule whose byte counts agree with the plan: BF16 for all (the preferred
 * rule, rf_quantize_out_dtype), or F32 kept as F32 with BF16 scales, or all F32. The tensor
 * bytes must equal the plan's total (else RF_ERR_MISMATCH before anything is written).
 * config.json's global default is the config used by the most modules (ties: more parameters);
 * only modules that differ get an entry, and kept modules simply have no .scales.
 * Streams unit by unit in row blocks on a thread pool (a writer thread overlaps the next block
 * set); output is byte-identical for any thread count. Peak memory: two 32 MiB write buffers
 * plus the scales/biases of the units in flight (1/16 of a unit's BF16 size at gs 32).
 * Everything goes to a temporary directory next to OUT_DIR that is renamed at the end; on any
 * error it is removed. */
typedef struct rf_quantize_opts {
    int mode;                 /* -1: the plan's; RF_QMODE_MLX / RF_QMODE_OPT must equal the plan's */
    int threads;              /* <= 0: online CPUs */
    rf_dtype f32_as;          /* F32 tensors: BF16, F16 or F32; RF_DT_INVALID (default): as the plan counted */
    uint64_t max_shard_bytes; /* 0: 5 GiB (mlx-lm) */
    int force;                /* replace an existing OUT_DIR (old one renamed away, then deleted) */
    const char *profile_path; /* recorded in ramfit.json when not NULL */
    /* GPTQ (quant/gptq.c) with these calibration statistics (they need Hessians): every quantized
     * linear unit whose member has one is quantized by GPTQ on the plan's grid (mode mlx: MLX's
     * min/max, as mlx-lm's gptq; opt: the error-minimising scale/bias); the embedding and members the
     * calibration never reached are rounded to nearest. Same bytes as without; NULL: round to nearest. */
    const rf_stats *gptq;
    double gptq_damp;         /* lambda / mean diag H; <= 0: 0.01 */
    uint64_t gptq_memory;     /* factors held at once (at least one); 0: 1 GiB */
} rf_quantize_opts;
void rf_quantize_opts_default(rf_quantize_opts *o);
/* The output dtype of a tensor of dtype SRC when F32 becomes F32_AS (16-bit and non-float dtypes
 * unchanged; F32_AS other than F16/F32 means BF16). */
rf_dtype rf_quantize_out_dtype(rf_dtype src, rf_dtype f32_as);
/* An explicit F32_AS (RF_DT_INVALID: none) for model M: RF_ERR_INVALID unless it is BF16/F16/F32
 * and M has F32 tensors to convert, or every float tensor of M already is F32_AS (a 16-bit
 * checkpoint is written as it is; the option must not be recorded as done). */
rf_status rf_quantize_check_dtype(const rf_model *m, rf_dtype f32_as, rf_err *err);

typedef struct rf_quantize_result {
    uint64_t tensor_bytes;    /* tensor data written (= the plan's total) */
    uint64_t input_bytes;     /* source tensor bytes read */
    uint64_t params;          /* parameters written */
    uint64_t tensors, files;  /* output tensors and shard files */
    uint64_t units_quantized, units_kept;
    double seconds;
    rf_dtype f32_kept_as, f32_scales_as; /* the rule used for F32 tensors (RF_DT_INVALID: the model has none) */
    uint64_t files_skipped;   /* files and folders of MODEL_DIR not copied (not needed by a loader) */
    char skipped[1024];       /* their names, comma-separated (folders end in "/"; "..." when cut) */
    uint64_t gptq_factors;    /* GPTQ: Hessians factored */
    uint64_t gptq_peak_bytes; /* GPTQ: factors held plus one being made, at most */
} rf_quantize_result;
/* Errors: RF_ERR_MISMATCH (plan for another checkpoint, unit shapes, mode, bytes), RF_ERR_EXISTS
 * (OUT_DIR exists, no force), RF_ERR_INVALID (OUT_DIR is MODEL_DIR, inside it, or contains it),
 * RF_ERR_UNSUPPORTED (an already quantized model), RF_ERR_NOSPACE / RF_ERR_IO (writing),
 * RF_ERR_INTERRUPTED (progress cancel). RES may be NULL. */
rf_status rf_quantize_write(const rf_model *m, const rf_plan *plan, const rf_quantize_opts *o, const char *out_dir,
                            const rf_progress *progress, rf_quantize_result *res, rf_err *err);

/* ===================================================================== GGUF export (quantize/gguf_export.c) */

/* Writes a GGUF v3 file that llama.cpp loads as it is: llama.cpp's architecture, tensor names and
 * metadata for the family (io/gguf_arch.c; llama-family q/k rows permuted as convert_hf_to_gguf
 * does), expert banks stacked as blk.N.ffn_*_exps, the tokenizer as tokenizer.ggml.* (from
 * tokenizer.json; tokenizer/tok_gguf.c), general.quantization_version 2. Each unit weight is
 * written in the GGUF type TYPES[unit] (an index into the catalogue's units); norms, biases and
 * routers (ffn_gate_inp) are F32, as llama.cpp's converter writes them; a tied lm_head is not
 * written (llama.cpp uses token_embd). The encoders give the bytes llama-quantize would give from
 * the same floats. Streams the mmapped checkpoint in row blocks on a thread pool; output is
 * byte-identical for any thread count; written to PATH.tmp-XXXXXX and renamed (nothing is left
 * on error). Errors: RF_ERR_UNSUPPORTED (a family, config or tokenizer llama.cpp cannot run as
 * ramfit does, naming why), RF_ERR_INVALID (a type that does not fit a unit's rows; an output in
 * the model directory), RF_ERR_EXISTS (PATH exists, no force), RF_ERR_NONFINITE, RF_ERR_IO/NOSPACE. */
typedef struct rf_gguf_opts {
    int threads;              /* <= 0: online CPUs */
    const char *name;         /* general.name; NULL: the model directory's base name */
    int force;                /* replace an existing PATH */
} rf_gguf_opts;
void rf_gguf_opts_default(rf_gguf_opts *o);

/* Unit types for a uniform TYPE, as llama-quantize --pure applies it: TYPE where its block fits
 * the unit's rows, else llama-quantize's fallback (rf_gtype_fallback); routers F32. TYPE may be
 * F32/F16/BF16 (an unquantized export). */
rf_status rf_gguf_types_uniform(const rf_model *m, int type, int *types, rf_err *err);
/* Unit types for a plan: a GGUF plan's units give their ggml type (rf_plan_is_gguf); an MLX
 * plan's bits 2/3/4/5/6/8 map to Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/Q8_0 (the group size is not used:
 * k-quants fix their own blocks); kept units -> KEPT_TYPE (BF16, F16 or F32), with the width
 * fallbacks and F32 routers. */
int rf_gguf_type_for_bits(int bits, uint64_t cols, rf_role role, int kept_type);
rf_status rf_gguf_types_from_plan(const rf_model *m, const rf_plan *plan, int kept_type, int *types, rf_err *err);
/* Size of the file rf_gguf_export would write for TYPES (nothing is written); checks as export does. */
rf_status rf_gguf_file_bytes(const rf_model *m, const int *types, const rf_gguf_opts *o, uint64_t *bytes, rf_err *err);

typedef struct rf_gguf_result {
    uint64_t file_bytes, tensor_bytes, params, tensors;
    uint64_t type_params[RF_GT_COUNT]; /* parameters written in each type */
    double seconds;
    char arch[32];                     /* general.architecture */
    char tok_model[16], tok_pre[32];   /* tokenizer.ggml.model / .pre */
} rf_gguf_result;
rf_status rf_gguf_export(const rf_model *m, const int *types, const rf_gguf_opts *o, const char *path,
                         const rf_progress *progress, rf_gguf_result *res, rf_err *err);

/* llama-quantize's --tensor-type-file for a plan: one "^NAME$=type" line per unit weight that
 * GGUF stores (llama.cpp names, types by rf_gguf_type_for_bits; routers, which llama-quantize
 * never quantizes, and a tied lm_head are left out), so that `llama-quantize --tensor-type-file`
 * applies the plan with llama.cpp's own encoders to a GGUF of the same model (e.g. ramfit's BF16
 * export). The profile supplies the architecture. *text is malloc'd. */
rf_status rf_gguf_plan_tensor_types(const rf_plan *plan, const rf_profile *p, int kept_type, char **text, size_t *len,
                                    rf_err *err);

/* Reading an MLX checkpoint's quantization back (io/mlx.c): every "<module>.weight" resolved by
 * mlx-lm's loader rule (config "quantization"[module] if present, else the global bits/gs iff
 * "<module>.scales" exists), with the shapes checked against the bits and group size. */
typedef struct rf_mlx_module {
    char name[160];           /* module path (tensor name less ".weight") */
    int bits, gs;             /* 0, 0: not quantized */
    int n_experts;            /* leading stacked dimension of a 3-D weight, else 0 */
    uint64_t rows, cols;      /* logical matrix of one expert (cols unpacked) */
    uint64_t params;          /* logical weights of the module */
    uint64_t bytes;           /* weight + scales + biases */
    rf_dtype dtype;           /* kept: the weight's dtype; quantized: the scales' */
} rf_mlx_module;
typedef struct rf_mlx_quant rf_mlx_quant;
rf_status rf_mlx_quant_read(const char *dir, rf_mlx_quant **out, rf_err *err);
void rf_mlx_quant_free(rf_mlx_quant *q);
uint64_t rf_mlx_quant_count(const rf_mlx_quant *q);
const rf_mlx_module *rf_mlx_quant_module(const rf_mlx_quant *q, uint64_t i);
/* The global default (0, 0 when config.json has no "quantization"). */
void rf_mlx_quant_default(const rf_mlx_quant *q, int *bits, int *gs);

#ifdef __cplusplus
}
#endif
#endif
