/* Model families: one file per family (src/arch/<family>.c) holds the table of its tensor names
 * and the config.json rules that set its features; config.c, model.c (the catalogue), the engine,
 * the writers and synth read these tables instead of testing the architecture.
 *
 * A table row (rf_trule) names one kind of tensor of the checkpoint as a module path, says which
 * slot of the decoder it fills (what the engine computes with it), how its bytes lie (plain
 * matrix, one expert of a bank, a stacked bank, a fused or transposed bank...), when it is
 * required, its shape in config terms, and the MLX module it becomes (the quantization unit).
 * Rows for the Hugging Face layout and for the MLX layout of the same module sit side by side, so
 * the catalogue reads both a source checkpoint and ramfit's (or mlx-lm's) output. */
#ifndef RF_FAMILY_H
#define RF_FAMILY_H

#include "common/internal.h"

#include <jansson.h>

/* What the engine does with a tensor. Slots are per layer, or at the top of the model. */
typedef enum rf_slot {
    RF_SLOT_NONE = 0,
    RF_SLOT_EMBED, RF_SLOT_LM_HEAD, RF_SLOT_FINAL_NORM,
    RF_SLOT_ATTN_NORM,      /* before attention */
    RF_SLOT_MLP_NORM,       /* before the MLP (llama's post_attention_layernorm, gemma's pre_feedforward_layernorm) */
    RF_SLOT_POST_ATTN_NORM, /* on the attention output before the residual add (gemma) */
    RF_SLOT_POST_MLP_NORM,  /* on the MLP output before the residual add (gemma) */
    RF_SLOT_Q_NORM, RF_SLOT_K_NORM, RF_SLOT_Q_A_NORM, RF_SLOT_KV_A_NORM,
    RF_SLOT_Q, RF_SLOT_K, RF_SLOT_V, RF_SLOT_O, RF_SLOT_QKV,
    /* multi-head latent attention: q LoRA (a, b), the joint kv down-projection (latent + rope
     * key), and the per-head up-projections of the latent to keys (K_B, [kv_lora, nope] per head)
     * and values (V_B, [v_head, kv_lora] per head) */
    RF_SLOT_Q_A, RF_SLOT_Q_B, RF_SLOT_KV_A, RF_SLOT_K_B, RF_SLOT_V_B,
    RF_SLOT_GATE, RF_SLOT_UP, RF_SLOT_DOWN, RF_SLOT_GATE_UP,
    RF_SLOT_ROUTER, RF_SLOT_ROUTER_BIAS, RF_SLOT_X_GATE, RF_SLOT_X_UP, RF_SLOT_X_DOWN,
    RF_SLOT_SH_GATE, RF_SLOT_SH_UP, RF_SLOT_SH_DOWN, RF_SLOT_SH_ROUTE,
    RF_SLOT_COUNT
} rf_slot;

/* The planning role of a slot (roles are what profiles, plans and reports speak of). */
rf_role rf_slot_role(rf_slot s);
const char *rf_slot_name(rf_slot s);

/* Sizes in config terms, for expected shapes. */
typedef enum rf_dimsym {
    RF_D0 = 0,
    RF_DH,    /* hidden_size */
    RF_DV,    /* vocab_size */
    RF_DQ,    /* heads * head_dim */
    RF_DKV,   /* kv heads * head_dim */
    RF_DQKV,  /* Q + 2 KV (fused qkv) */
    RF_DHD,   /* head_dim */
    RF_DI,    /* dense MLP intermediate size */
    RF_D2I,   /* 2 * DI (fused gate_up) */
    RF_DMI,   /* expert intermediate size */
    RF_DSI,   /* shared expert intermediate size */
    RF_DE,    /* routed experts */
    RF_D1,    /* 1 (qwen2_moe's shared_expert_gate) */
    RF_DQA,   /* q_lora_rank */
    RF_DQB,   /* heads * (nope + rope) */
    RF_DKVA,  /* kv_lora_rank + rope */
    RF_DKVL,  /* kv_lora_rank */
    RF_DKVB,  /* heads * (nope + v_head) */
    RF_DOV,   /* heads * v_head (MLA attention output) */
    RF_DNOPE, /* qk_nope_head_dim */
    RF_DVH,   /* v_head_dim */
    RF_DNH    /* heads (members of a per-head bank) */
} rf_dimsym;

/* How a tensor's bytes hold the slot's matrix (one member per expert or per head). */
typedef enum rf_layout {
    RF_LAY_PLAIN = 0,   /* [out, in] (or a vector) */
    RF_LAY_EXPERT,      /* one expert [out, in]; the path has "{E}" */
    RF_LAY_STACKED,     /* [E, out, in]: all experts (MLX switch_mlp / SwitchGLU) */
    RF_LAY_STACKED_T,   /* [E, in, out]: all experts, each transposed (llama4's down_proj) */
    RF_LAY_STACKED_T2A, /* [E, in, 2 out]: first half of the last axis, transposed (llama4's gate_up_proj: gate) */
    RF_LAY_STACKED_T2B, /* ... second half (up) */
    RF_LAY_STACKED_R2A, /* [E, 2 out, in]: first half of the rows (transformers 5's fused experts.gate_up_proj: gate) */
    RF_LAY_STACKED_R2B, /* ... second half (up) */
    RF_LAY_KVB_K,       /* kv_b_proj [H (nope + v), kv_lora]: per head rows 0..nope, transposed -> [kv_lora, nope] */
    RF_LAY_KVB_V,       /* ... per head rows nope..nope+v -> [v, kv_lora] */
    RF_LAY_HEADS        /* [H, out, in]: one matrix per head (MLX MultiLinear) */
} rf_layout;

/* When a tensor must exist (a missing one is a format error naming it). */
typedef enum rf_need {
    RF_NEED_ALWAYS = 0,
    RF_NEED_OPTIONAL,   /* used when present */
    RF_NEED_DENSE,      /* layers with a dense MLP */
    RF_NEED_MOE,        /* layers with a sparse MoE block */
    RF_NEED_SHARED,     /* MoE layers of a family with shared experts */
    RF_NEED_QLORA,      /* MLA with a q LoRA */
    RF_NEED_NO_QLORA,   /* MLA without */
    RF_NEED_QK_NORM,    /* per-head q/k RMSNorm with weights */
    RF_NEED_UNTIED,     /* lm_head unless tied */
    RF_NEED_NEVER       /* MLX layout rows: accepted, never required (the HF row is) */
} rf_need;

/* When a module's ".bias" exists. */
typedef enum rf_bias {
    RF_BIAS_NO = 0,     /* a .bias is not part of this family: the tensor is 'other' */
    RF_BIAS_ATTN,       /* required iff attention_bias */
    RF_BIAS_MLP,        /* required iff mlp_bias */
    RF_BIAS_ALWAYS,     /* always (qwen2's q/k/v) */
    RF_BIAS_OPTIONAL
} rf_bias;

typedef struct rf_trule {
    const char *path;   /* module path below "model.layers.N." (layer rows) or from the root; "{E}": expert */
    uint8_t layer;      /* 1: a per-layer tensor */
    uint8_t slot;       /* rf_slot */
    uint8_t layout;     /* rf_layout */
    uint8_t need;       /* rf_need */
    uint8_t bias;       /* rf_bias */
    uint8_t out, in;    /* rf_dimsym of the member matrix [out, in]; vectors: [out] with in = RF_D0 */
    uint8_t exact;      /* the tensor is named PATH itself, not PATH.weight (llama4's fused experts) */
    uint8_t keep;       /* a matrix mlx-lm does not quantize (a raw parameter, e.g. DeepSeek's router) */
    const char *mlx;    /* the MLX module it becomes (NULL: PATH); stacked experts: the bank path */
} rf_trule;

/* Router conventions. */
typedef enum rf_router {
    RF_ROUTER_SOFTMAX_TOPK = 0, /* mixtral: top-k logits, softmax over the chosen */
    RF_ROUTER_SOFTMAX,          /* qwen: softmax over all, top-k, renormalised iff norm_topk_prob */
    RF_ROUTER_SIGMOID_GROUPED,  /* deepseek_v3 / glm4_moe: sigmoid, + e_score_correction_bias for the
                                 * choice, group-limited top-k, renormalised iff norm_topk_prob,
                                 * times routed_scaling_factor */
    RF_ROUTER_LLAMA4            /* top-k logits, sigmoid(logit) scales the expert's INPUT */
} rf_router;

/* Parsing context for config.json (config.c), shared with the family parse hooks. */
typedef struct rf_cfgp {
    json_t *root;       /* the object the text model's keys live in (text_config for wrappers) */
    json_t *top;        /* the whole file */
    const char *label;
    rf_err *err;
} rf_cfgp;
rf_status rf_cfg_bad(const rf_cfgp *p, const char *key, const char *what);
json_t *rf_cfg_get(const rf_cfgp *p, const char *key);
/* Integer in [lo, INT_MAX]; *out keeps its value when the key is absent and !required. */
rf_status rf_cfg_int(const rf_cfgp *p, const char *key, int required, int lo, int *out);
rf_status rf_cfg_num(const rf_cfgp *p, json_t *obj, const char *key, int required, double *out);
rf_status rf_cfg_bool(const rf_cfgp *p, const char *key, int *out);
rf_status rf_cfg_str(const rf_cfgp *p, json_t *obj, const char *key, int required, char *out, size_t cap);
/* A list of non-negative layer indices: sets FLAG in c->layer_flags for each (indices >= the
 * layer count are ignored, as transformers does). */
rf_status rf_cfg_layer_list(const rf_cfgp *p, const char *key, rf_config *c, uint8_t flag);
/* layer_types (a list of strings, one per layer): sets FLAG on the layers whose type is TYPE;
 * *found says whether the key was there. */
rf_status rf_cfg_layer_types(const rf_cfgp *p, rf_config *c, const char *type, uint8_t flag, int *found);
/* rope_theta and rope_scaling / rope_parameters (transformers 5) from OBJ into R. */
rf_status rf_cfg_rope(const rf_cfgp *p, json_t *obj, const char *key, rf_rope *r);
/* The MoE keys most families share: num_experts_per_tok, norm_topk_prob. */
rf_status rf_cfg_moe_common(const rf_cfgp *p, rf_config *c);

typedef struct rf_family {
    rf_arch arch;
    const char *model_type;          /* canonical config.json model_type */
    const char *wrapper_type;        /* model_type of the multimodal wrapper (text under text_config and
                                      * tensors under "language_model."), or NULL */
    const rf_trule *rules;
    int nrules;
    /* Defaults before config.json is read (keys a family's config class defaults). */
    void (*defaults)(rf_config *c);
    /* Family keys, after the common ones; sets layer flags, MoE, attention features. */
    rf_status (*parse)(const rf_cfgp *p, rf_config *c);
} rf_family;

/* The family of a model_type (the wrapper's counts too), or NULL. */
const rf_family *rf_family_find(const char *model_type, int *is_wrapper);
const rf_family *rf_family_of(rf_arch a);
/* "llama, mistral, ..." */
const char *rf_family_list(void);

/* Size of a dimension symbol under C (0 when it does not apply). */
uint64_t rf_dim(const rf_config *c, rf_dimsym d);

/* The shape of the tensor rule R names (its source layout) under C; returns the number of dims. */
int rf_rule_source_shape(const rf_config *c, const rf_trule *r, uint64_t *shp);
/* Whether rule R's tensor is required in LAYER (-1: top level); whether its bias is. */
int rf_rule_needed(const rf_config *c, const rf_trule *r, int layer);
int rf_rule_bias_needed(const rf_config *c, const rf_trule *r);

/* Multi-head latent attention (deepseek_v3, glm4_moe_lite) and the DeepSeek MoE block (also glm4_moe). */
#define RF_ROWS_MLA                                                                                                \
    {"self_attn.q_proj", 1, RF_SLOT_Q, RF_LAY_PLAIN, RF_NEED_NO_QLORA, RF_BIAS_NO, RF_DQB, RF_DH, 0, 0, NULL},        \
    {"self_attn.q_a_proj", 1, RF_SLOT_Q_A, RF_LAY_PLAIN, RF_NEED_QLORA, RF_BIAS_ATTN, RF_DQA, RF_DH, 0, 0, NULL},     \
    {"self_attn.q_a_layernorm", 1, RF_SLOT_Q_A_NORM, RF_LAY_PLAIN, RF_NEED_QLORA, RF_BIAS_NO, RF_DQA, RF_D0, 0, 0, NULL}, \
    {"self_attn.q_b_proj", 1, RF_SLOT_Q_B, RF_LAY_PLAIN, RF_NEED_QLORA, RF_BIAS_NO, RF_DQB, RF_DQA, 0, 0, NULL},       \
    {"self_attn.kv_a_proj_with_mqa", 1, RF_SLOT_KV_A, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_ATTN, RF_DKVA, RF_DH, 0, 0, NULL}, \
    {"self_attn.kv_a_layernorm", 1, RF_SLOT_KV_A_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DKVL, RF_D0, 0, 0, NULL}, \
    {"self_attn.kv_b_proj", 1, RF_SLOT_K_B, RF_LAY_KVB_K, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DKVL, RF_DNOPE, 0, 0,         \
     "self_attn.embed_q"},                                                                                         \
    {"self_attn.kv_b_proj", 1, RF_SLOT_V_B, RF_LAY_KVB_V, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DVH, RF_DKVL, 0, 0,           \
     "self_attn.unembed_out"},                                                                                     \
    {"self_attn.embed_q", 1, RF_SLOT_K_B, RF_LAY_HEADS, RF_NEED_NEVER, RF_BIAS_NO, RF_DKVL, RF_DNOPE, 0, 0, NULL},     \
    {"self_attn.unembed_out", 1, RF_SLOT_V_B, RF_LAY_HEADS, RF_NEED_NEVER, RF_BIAS_NO, RF_DVH, RF_DKVL, 0, 0, NULL},   \
    {"self_attn.o_proj", 1, RF_SLOT_O, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_ATTN, RF_DH, RF_DOV, 0, 0, NULL}

#define RF_ROWS_DEEPSEEK_MOE                                                                                       \
    {"mlp.gate", 1, RF_SLOT_ROUTER, RF_LAY_PLAIN, RF_NEED_MOE, RF_BIAS_NO, RF_DE, RF_DH, 0, 1, NULL},                 \
    {"mlp.gate.e_score_correction_bias", 1, RF_SLOT_ROUTER_BIAS, RF_LAY_PLAIN, RF_NEED_OPTIONAL, RF_BIAS_NO, RF_DE,    \
     RF_D0, 1, 0, NULL},                                                                                           \
    RF_ROWS_EXPERTS("mlp", "gate_proj", "up_proj", "down_proj"),                                                   \
    {"mlp.shared_experts.gate_proj", 1, RF_SLOT_SH_GATE, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DSI, RF_DH, 0, 0, NULL}, \
    {"mlp.shared_experts.up_proj", 1, RF_SLOT_SH_UP, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DSI, RF_DH, 0, 0, NULL}, \
    {"mlp.shared_experts.down_proj", 1, RF_SLOT_SH_DOWN, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DH, RF_DSI, 0, 0, NULL}

/* Shared family rules (qwen2.c, qwen3_moe.c, deepseek_v3.c). */
rf_status rf_qwen_window(const rf_cfgp *p, rf_config *c, int all_layers);
rf_status rf_qwen_moe_layers(const rf_cfgp *p, rf_config *c);
/* DeepSeek-style MoE keys (n_routed_experts, n_shared_experts, n_group, topk_group,
 * routed_scaling_factor, first_k_dense_replace / mlp_layer_types, num_nextn_predict_layers). */
rf_status rf_deepseek_moe(const rf_cfgp *p, rf_config *c, int first_dense_default);
/* Multi-head latent attention keys (q/kv LoRA ranks, head parts, yarn mscale in the softmax scale). */
rf_status rf_deepseek_mla(const rf_cfgp *p, rf_config *c);

/* The families. */
extern const rf_family rf_family_llama, rf_family_mistral, rf_family_qwen2, rf_family_qwen3, rf_family_mixtral,
    rf_family_qwen3_moe, rf_family_llama4, rf_family_qwen2_moe, rf_family_glm4_moe, rf_family_glm4_moe_lite,
    rf_family_deepseek_v3, rf_family_gemma3, rf_family_phi3, rf_family_generic;

/* Row groups several families share, expanded into their tables. */
#define RF_ROWS_TOP                                                                                               \
    {"model.embed_tokens", 0, RF_SLOT_EMBED, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DV, RF_DH, 0, 0, NULL},     \
    {"lm_head", 0, RF_SLOT_LM_HEAD, RF_LAY_PLAIN, RF_NEED_UNTIED, RF_BIAS_NO, RF_DV, RF_DH, 0, 0, NULL},               \
    {"model.norm", 0, RF_SLOT_FINAL_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_D0, 0, 0, NULL}
/* Pre-norm decoder layer norms (llama naming). */
#define RF_ROWS_NORMS                                                                                             \
    {"input_layernorm", 1, RF_SLOT_ATTN_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_D0, 0, 0, NULL},   \
    {"post_attention_layernorm", 1, RF_SLOT_MLP_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_D0, 0, 0, NULL}
/* q/k/v/o projections; QKB, OB: their bias rules. */
#define RF_ROWS_ATTN(QKB, OB)                                                                                     \
    {"self_attn.q_proj", 1, RF_SLOT_Q, RF_LAY_PLAIN, RF_NEED_ALWAYS, QKB, RF_DQ, RF_DH, 0, 0, NULL},                 \
    {"self_attn.k_proj", 1, RF_SLOT_K, RF_LAY_PLAIN, RF_NEED_ALWAYS, QKB, RF_DKV, RF_DH, 0, 0, NULL},                \
    {"self_attn.v_proj", 1, RF_SLOT_V, RF_LAY_PLAIN, RF_NEED_ALWAYS, QKB, RF_DKV, RF_DH, 0, 0, NULL},                \
    {"self_attn.o_proj", 1, RF_SLOT_O, RF_LAY_PLAIN, RF_NEED_ALWAYS, OB, RF_DH, RF_DQ, 0, 0, NULL}
#define RF_ROWS_QK_NORM                                                                                           \
    {"self_attn.q_norm", 1, RF_SLOT_Q_NORM, RF_LAY_PLAIN, RF_NEED_QK_NORM, RF_BIAS_NO, RF_DHD, RF_D0, 0, 0, NULL},   \
    {"self_attn.k_norm", 1, RF_SLOT_K_NORM, RF_LAY_PLAIN, RF_NEED_QK_NORM, RF_BIAS_NO, RF_DHD, RF_D0, 0, 0, NULL}
/* A gated MLP under BLOCK ("mlp", "feed_forward") with NEED (dense layers, or always). */
#define RF_ROWS_MLP(BLOCK, NEED)                                                                                  \
    {BLOCK ".gate_proj", 1, RF_SLOT_GATE, RF_LAY_PLAIN, NEED, RF_BIAS_MLP, RF_DI, RF_DH, 0, 0, NULL},                \
    {BLOCK ".up_proj", 1, RF_SLOT_UP, RF_LAY_PLAIN, NEED, RF_BIAS_MLP, RF_DI, RF_DH, 0, 0, NULL},                    \
    {BLOCK ".down_proj", 1, RF_SLOT_DOWN, RF_LAY_PLAIN, NEED, RF_BIAS_MLP, RF_DH, RF_DI, 0, 0, NULL}
/* Routed experts as Hugging Face stores them one by one under BLOCK.experts.E (projection names
 * G, U, D), and as MLX stacks them under BLOCK.switch_mlp. */
#define RF_ROWS_EXPERTS(BLOCK, G, U, D)                                                                           \
    {BLOCK ".experts.{E}." G, 1, RF_SLOT_X_GATE, RF_LAY_EXPERT, RF_NEED_MOE, RF_BIAS_NO, RF_DMI, RF_DH, 0, 0,        \
     BLOCK ".switch_mlp.gate_proj"},                                                                              \
    {BLOCK ".experts.{E}." U, 1, RF_SLOT_X_UP, RF_LAY_EXPERT, RF_NEED_MOE, RF_BIAS_NO, RF_DMI, RF_DH, 0, 0,          \
     BLOCK ".switch_mlp.up_proj"},                                                                                \
    {BLOCK ".experts.{E}." D, 1, RF_SLOT_X_DOWN, RF_LAY_EXPERT, RF_NEED_MOE, RF_BIAS_NO, RF_DH, RF_DMI, 0, 0,        \
     BLOCK ".switch_mlp.down_proj"},                                                                              \
    {BLOCK ".experts.gate_up_proj", 1, RF_SLOT_X_GATE, RF_LAY_STACKED_R2A, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 1, 0, \
     BLOCK ".switch_mlp.gate_proj"},                                                                              \
    {BLOCK ".experts.gate_up_proj", 1, RF_SLOT_X_UP, RF_LAY_STACKED_R2B, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 1, 0, \
     BLOCK ".switch_mlp.up_proj"},                                                                                \
    {BLOCK ".experts.down_proj", 1, RF_SLOT_X_DOWN, RF_LAY_STACKED, RF_NEED_NEVER, RF_BIAS_NO, RF_DH, RF_DMI, 1, 0,  \
     BLOCK ".switch_mlp.down_proj"},                                                                              \
    {BLOCK ".switch_mlp.gate_proj", 1, RF_SLOT_X_GATE, RF_LAY_STACKED, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 0, 0, NULL}, \
    {BLOCK ".switch_mlp.up_proj", 1, RF_SLOT_X_UP, RF_LAY_STACKED, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 0, 0, NULL},     \
    {BLOCK ".switch_mlp.down_proj", 1, RF_SLOT_X_DOWN, RF_LAY_STACKED, RF_NEED_NEVER, RF_BIAS_NO, RF_DH, RF_DMI, 0, 0, NULL}

#endif
