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
 * Sections are owned by modules (src/<module>.c); keep each section's declarations together.
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

/* ===================================================================== errors (error.c) */

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

/* ===================================================================== common utilities (util.c) */

/* Parse a size: plain bytes ("123"), decimal units kB/MB/GB/TB (1000^n), binary KiB/MiB/GiB/TiB
 * (1024^n); fractions allowed ("1.5GB"); case-insensitive unit, optional space and trailing "B". */
rf_status rf_parse_size(const char *text, uint64_t *out, rf_err *err);
/* Format bytes for people: "1.23 GB (1.15 GiB)" style is the CLI's; this gives "1.23 GB". */
void rf_format_size(uint64_t bytes, char *buf, size_t cap);

/* Long operations report progress through this callback (done of total units, e.g. bytes) and
 * stop with RF_ERR_INTERRUPTED soon after *cancel becomes non-zero. Both may be NULL. */
typedef void (*rf_progress_fn)(void *user, uint64_t done, uint64_t total, const char *what);
typedef struct rf_progress {
    rf_progress_fn fn;
    void *user;
    volatile int *cancel;
} rf_progress;

/* ===================================================================== thread pool (pool.c) */

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

/* ===================================================================== dtypes, conversion (convert.c) */

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

/* ===================================================================== CPU features (cpu.c) */

enum { RF_CPU_AVX2 = 1u << 0, RF_CPU_FMA = 1u << 1, RF_CPU_F16C = 1u << 2, RF_CPU_NEON = 1u << 3 };
/* Features of this CPU that ramfit's fast paths use, masked by rf_cpu_set_mask(). */
unsigned rf_cpu_features(void);
/* Restrict the fast paths (tests and benchmarks compare scalar vs fast; also env RAMFIT_SIMD=0). */
void rf_cpu_set_mask(unsigned mask);

/* ===================================================================== safetensors (safetensors.c) */

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
 * either (index preferred). Everything is validated before this returns RF_OK. */
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
 * in as many pieces as wanted; finish renames the temporary files into place and writes the
 * index when there is more than one shard. Output is byte-for-byte deterministic. */
typedef struct rf_stw rf_stw;
typedef struct rf_stw_opts {
    uint64_t max_shard_bytes;  /* 0: one file */
    const char *basename;      /* "model" -> model.safetensors / model-00001-of-00002.safetensors */
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

/* ===================================================================== model catalogue (model.c) */

typedef enum rf_arch {
    RF_ARCH_UNKNOWN = 0,
    RF_ARCH_LLAMA, RF_ARCH_MISTRAL, RF_ARCH_QWEN2, RF_ARCH_QWEN3, RF_ARCH_MIXTRAL, RF_ARCH_QWEN3_MOE
} rf_arch;
const char *rf_arch_name(rf_arch a); /* the model_type spelling */

typedef struct rf_config {
    rf_arch arch;
    char model_type[64];
    char architecture[128];      /* architectures[0] */
    int hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size;
    int tie_word_embeddings;
    int attention_bias;          /* q/k/v biases (qwen2: implied) */
    double rms_norm_eps;
    double rope_theta;
    /* rope_scaling: rope_type "llama3" (others rejected by the engine, not here) */
    char rope_type[32];          /* "" when none */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int max_position_embeddings;
    /* MoE (0 when dense) */
    int num_experts, experts_per_tok, moe_intermediate_size, norm_topk_prob, decoder_sparse_step;
    int bos_token_id, eos_token_id; /* -1 when absent */
    rf_dtype torch_dtype;        /* RF_DT_INVALID when absent */
} rf_config;

/* Parse DIR/config.json. Unknown model_type: RF_ERR_UNSUPPORTED "unsupported architecture X". */
rf_status rf_config_load(const char *model_dir, rf_config *out, rf_err *err);
rf_status rf_config_parse(const char *json_text, const char *label, rf_config *out, rf_err *err);

typedef enum rf_role {
    RF_ROLE_OTHER = 0,
    RF_ROLE_EMBED, RF_ROLE_LM_HEAD,
    RF_ROLE_ATTN_Q, RF_ROLE_ATTN_K, RF_ROLE_ATTN_V, RF_ROLE_ATTN_O,
    RF_ROLE_Q_NORM, RF_ROLE_K_NORM,
    RF_ROLE_MLP_GATE, RF_ROLE_MLP_UP, RF_ROLE_MLP_DOWN,
    RF_ROLE_EXPERT_GATE, RF_ROLE_EXPERT_UP, RF_ROLE_EXPERT_DOWN,
    RF_ROLE_ROUTER, RF_ROLE_NORM, RF_ROLE_BIAS,
    RF_ROLE_COUNT
} rf_role;
const char *rf_role_name(rf_role r); /* "embed", "lm_head", "attn_q", ... */

/* One tensor of the checkpoint with its classification. */
typedef struct rf_tinfo {
    const rf_tensor *t;
    rf_role role;
    int layer;    /* -1 outside the layer stack */
    int expert;   /* -1 unless a per-expert tensor */
    int unit;     /* index of its quantization unit, -1 for tensors that are not weights of one */
} rf_tinfo;

/* A quantization unit (the module of design.md): one Linear/Embedding weight, or all experts
 * of one projection in one layer, stacked. Every member shares one (bits, gs). */
typedef struct rf_unit {
    char name[160];     /* MLX module path, e.g. model.layers.3.mlp.switch_mlp.down_proj */
    rf_role role;
    int layer;
    int n_members;      /* tensors (experts) in the unit */
    const int *members; /* indices into the catalogue's tensor list, expert order */
    uint64_t rows, cols;/* of one member: out, in */
    uint64_t nparams;   /* all members */
    rf_dtype dtype;
    int quantizable;    /* 2-D and some gs in {32,64,128} divides cols; norms etc. are not units */
} rf_unit;

typedef struct rf_model rf_model; /* config + open checkpoint + catalogue */
rf_status rf_model_open(const char *model_dir, rf_model **out, rf_err *err);
void rf_model_free(rf_model *m);
const char *rf_model_dir(const rf_model *m);
const rf_config *rf_model_config(const rf_model *m);
const rf_st *rf_model_st(const rf_model *m);
uint64_t rf_model_tensor_count(const rf_model *m);
const rf_tinfo *rf_model_tinfo(const rf_model *m, uint64_t i);
uint64_t rf_model_unit_count(const rf_model *m);
const rf_unit *rf_model_unit(const rf_model *m, uint64_t i);
uint64_t rf_model_param_count(const rf_model *m);

/* ===================================================================== quantization kernels (quant.c) */

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

#ifdef __cplusplus
}
#endif
#endif
