/* Per-family GGUF naming and metadata (gguf_arch.c): how a Hugging Face checkpoint of a family
 * ramfit runs maps onto llama.cpp's architecture of the same model. One table per family, so a
 * family's entry can move to src/arch/<family>.c with the rest of its description. Used by the
 * GGUF writer (quantize/gguf_export.c) and by the GGUF reader of the engine (the reverse map). */
#ifndef RF_GGUF_ARCH_H
#define RF_GGUF_ARCH_H

#include "common/internal.h"

/* Module path (Hugging Face or MLX unit name, less ".weight"/".bias") -> GGUF base name. For a
 * layer entry `hf` is the path below "model.layers.N." and `gguf` the name after "blk.N.". */
typedef struct rf_gguf_name {
    const char *hf, *gguf;
} rf_gguf_name;

/* Where a metadata value comes from (config.json through rf_config). */
typedef enum rf_gguf_src {
    RF_GS_CONTEXT, RF_GS_EMBED, RF_GS_FFN, RF_GS_LAYERS, RF_GS_HEADS, RF_GS_KV_HEADS, RF_GS_ROPE_BASE,
    RF_GS_RMS_EPS, RF_GS_HEAD_DIM, RF_GS_VOCAB, RF_GS_EXPERTS, RF_GS_EXPERTS_USED, RF_GS_EXPERT_FFN
} rf_gguf_src;

/* "<arch>.KEY" = value of SRC; moe_only: written only for a model with experts. */
typedef struct rf_gguf_meta {
    const char *key;
    rf_gguf_src src;
    int moe_only;
} rf_gguf_meta;

typedef struct rf_gguf_family {
    rf_arch arch;               /* ramfit's family (config.json model_type) */
    const char *gguf_arch;      /* general.architecture in llama.cpp */
    /* llama.cpp's llama architecture ropes adjacent pairs (GGML_ROPE_TYPE_NORM) where Hugging
     * Face pairs i with i + d/2 (rotate_half): convert_hf_to_gguf permutes the q/k rows of each
     * head (weights and biases). The neox-style families (qwen2/3) keep them as they are. */
    int permute_qk;
    const rf_gguf_name *top, *layer;
    size_t ntop, nlayer;
    const rf_gguf_meta *meta;
    size_t nmeta;
    /* What llama.cpp's architecture cannot express for this config: NULL when all is well, else
     * a reason (RF_ERR_UNSUPPORTED for the writer). */
    const char *(*unsupported)(const rf_config *c);
} rf_gguf_family;

/* The family of ARCH, or NULL when ramfit has no GGUF mapping for it. */
const rf_gguf_family *rf_gguf_family_of(rf_arch arch);
/* The family whose gguf_arch is NAME (several ramfit families share "llama": the first). */
const rf_gguf_family *rf_gguf_family_by_name(const char *gguf_arch);

/* GGUF name of the tensor or unit named HF ("model.layers.3.self_attn.q_proj.weight", or an MLX
 * unit path such as "model.layers.3.mlp.switch_mlp.up_proj" with suffix ".weight" appended).
 * Returns 0 (and out empty) when the family has no GGUF name for it. */
int rf_gguf_tensor_name(const rf_gguf_family *f, const char *hf, char *out, size_t cap);
/* The reverse: GGUF tensor name -> Hugging Face name (experts: the MLX switch_mlp path with
 * ".weight"); 0 when unknown. */
int rf_gguf_hf_name(const rf_gguf_family *f, const char *gguf, char *out, size_t cap);

/* The rf_config a GGUF file describes (the reverse of the tables: llama with experts is mixtral;
 * mistral files are llama). Errors name the file and key: RF_ERR_UNSUPPORTED for an architecture
 * or rope scaling ramfit cannot run, RF_ERR_FORMAT for missing or bad keys. */
rf_status rf_gguf_config(const rf_gguf *g, rf_config *c, const rf_gguf_family **fam, rf_err *err);

/* Value of SRC for config C (0 when the config has none). */
double rf_gguf_meta_value(const rf_config *c, rf_gguf_src src);

/* Row permutation of a q/k projection for permute_qk families: GGUF row G of a matrix of HEADS
 * heads of HEAD_DIM rows each holds Hugging Face row rf_gguf_qk_src_row(G, HEAD_DIM). */
static inline uint64_t rf_gguf_qk_src_row(uint64_t g, uint64_t head_dim)
{
    uint64_t h = g / head_dim, r = g % head_dim, half = head_dim / 2;
    return h * head_dim + (r % 2) * half + r / 2;
}

#endif
