/* The family registry and what every family table shares: slot roles, dimension symbols and
 * the "required" predicates. Each family lives in its own file beside this one. */
#include "arch/family.h"

#include <string.h>

static const rf_family *const families[] = {
    &rf_family_llama,     &rf_family_mistral,   &rf_family_qwen2,         &rf_family_qwen3,
    &rf_family_mixtral,   &rf_family_qwen3_moe, &rf_family_llama4,        &rf_family_qwen2_moe,
    &rf_family_glm4_moe,  &rf_family_glm4_moe_lite, &rf_family_deepseek_v3, &rf_family_gemma3,
    &rf_family_phi3,
};
#define NFAMILIES ((int)(sizeof families / sizeof families[0]))

const rf_family *rf_family_find(const char *model_type, int *is_wrapper)
{
    if (is_wrapper) *is_wrapper = 0;
    for (int i = 0; model_type && i < NFAMILIES; i++) {
        if (!strcmp(families[i]->model_type, model_type)) return families[i];
        if (families[i]->wrapper_type && !strcmp(families[i]->wrapper_type, model_type)) {
            if (is_wrapper) *is_wrapper = 1;
            return families[i];
        }
    }
    return NULL;
}

const rf_family *rf_family_of(rf_arch a)
{
    for (int i = 0; i < NFAMILIES; i++)
        if (families[i]->arch == a) return families[i];
    return a == RF_ARCH_GENERIC ? &rf_family_generic : NULL;
}

const char *rf_family_list(void)
{
    static char buf[512];
    if (!buf[0]) {
        size_t n = 0;
        for (int i = 0; i < NFAMILIES && n < sizeof buf; i++) {
            const rf_family *f = families[i];
            n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? ", " : "", f->model_type);
            if (f->wrapper_type && n < sizeof buf) n += (size_t)snprintf(buf + n, sizeof buf - n, ", %s", f->wrapper_type);
        }
    }
    return buf;
}

const char *rf_arch_name(rf_arch a)
{
    const rf_family *f = rf_family_of(a);
    return f ? f->model_type : "unknown";
}

static const struct { rf_role role; const char *name; } slots[RF_SLOT_COUNT] = {
    [RF_SLOT_NONE] = {RF_ROLE_OTHER, "none"},
    [RF_SLOT_EMBED] = {RF_ROLE_EMBED, "embed"},
    [RF_SLOT_LM_HEAD] = {RF_ROLE_LM_HEAD, "lm_head"},
    [RF_SLOT_FINAL_NORM] = {RF_ROLE_NORM, "final_norm"},
    [RF_SLOT_ATTN_NORM] = {RF_ROLE_NORM, "attn_norm"},
    [RF_SLOT_MLP_NORM] = {RF_ROLE_NORM, "mlp_norm"},
    [RF_SLOT_POST_ATTN_NORM] = {RF_ROLE_NORM, "post_attn_norm"},
    [RF_SLOT_POST_MLP_NORM] = {RF_ROLE_NORM, "post_mlp_norm"},
    [RF_SLOT_Q_NORM] = {RF_ROLE_Q_NORM, "q_norm"},
    [RF_SLOT_K_NORM] = {RF_ROLE_K_NORM, "k_norm"},
    [RF_SLOT_Q_A_NORM] = {RF_ROLE_NORM, "q_a_norm"},
    [RF_SLOT_KV_A_NORM] = {RF_ROLE_NORM, "kv_a_norm"},
    [RF_SLOT_Q] = {RF_ROLE_ATTN_Q, "q"},
    [RF_SLOT_K] = {RF_ROLE_ATTN_K, "k"},
    [RF_SLOT_V] = {RF_ROLE_ATTN_V, "v"},
    [RF_SLOT_O] = {RF_ROLE_ATTN_O, "o"},
    [RF_SLOT_QKV] = {RF_ROLE_ATTN_QKV, "qkv"},
    [RF_SLOT_Q_A] = {RF_ROLE_ATTN_Q_A, "q_a"},
    [RF_SLOT_Q_B] = {RF_ROLE_ATTN_Q_B, "q_b"},
    [RF_SLOT_KV_A] = {RF_ROLE_ATTN_KV_A, "kv_a"},
    [RF_SLOT_K_B] = {RF_ROLE_ATTN_K_B, "k_b"},
    [RF_SLOT_V_B] = {RF_ROLE_ATTN_V_B, "v_b"},
    [RF_SLOT_GATE] = {RF_ROLE_MLP_GATE, "gate"},
    [RF_SLOT_UP] = {RF_ROLE_MLP_UP, "up"},
    [RF_SLOT_DOWN] = {RF_ROLE_MLP_DOWN, "down"},
    [RF_SLOT_GATE_UP] = {RF_ROLE_MLP_GATE_UP, "gate_up"},
    [RF_SLOT_ROUTER] = {RF_ROLE_ROUTER, "router"},
    [RF_SLOT_ROUTER_BIAS] = {RF_ROLE_BIAS, "router_bias"},
    [RF_SLOT_X_GATE] = {RF_ROLE_EXPERT_GATE, "expert_gate"},
    [RF_SLOT_X_UP] = {RF_ROLE_EXPERT_UP, "expert_up"},
    [RF_SLOT_X_DOWN] = {RF_ROLE_EXPERT_DOWN, "expert_down"},
    [RF_SLOT_SH_GATE] = {RF_ROLE_SHARED_GATE, "shared_gate"},
    [RF_SLOT_SH_UP] = {RF_ROLE_SHARED_UP, "shared_up"},
    [RF_SLOT_SH_DOWN] = {RF_ROLE_SHARED_DOWN, "shared_down"},
    [RF_SLOT_SH_ROUTE] = {RF_ROLE_ROUTER, "shared_expert_gate"},
};

rf_role rf_slot_role(rf_slot s) { return (unsigned)s < RF_SLOT_COUNT ? slots[s].role : RF_ROLE_OTHER; }
const char *rf_slot_name(rf_slot s) { return (unsigned)s < RF_SLOT_COUNT ? slots[s].name : "none"; }

uint64_t rf_dim(const rf_config *c, rf_dimsym d)
{
    uint64_t H = (uint64_t)c->hidden_size, hd = (uint64_t)c->head_dim, nh = (uint64_t)c->num_heads;
    uint64_t rope = (uint64_t)c->qk_rope_head_dim, nope = (uint64_t)c->qk_nope_head_dim, vh = (uint64_t)c->v_head_dim;
    switch (d) {
    case RF_D0: return 0;
    case RF_DH: return H;
    case RF_DV: return (uint64_t)c->vocab_size;
    case RF_DQ: return nh * hd;
    case RF_DKV: return (uint64_t)c->num_kv_heads * hd;
    case RF_DQKV: return (nh + 2 * (uint64_t)c->num_kv_heads) * hd;
    case RF_DHD: return hd;
    case RF_DI: return (uint64_t)c->intermediate_size;
    case RF_D2I: return 2 * (uint64_t)c->intermediate_size;
    case RF_DMI: return (uint64_t)c->moe_intermediate_size;
    case RF_DSI: return (uint64_t)c->shared_intermediate;
    case RF_DE: return (uint64_t)c->num_experts;
    case RF_D1: return 1;
    case RF_DQA: return (uint64_t)c->q_lora_rank;
    case RF_DQB: return nh * (nope + rope);
    case RF_DKVA: return (uint64_t)c->kv_lora_rank + rope;
    case RF_DKVL: return (uint64_t)c->kv_lora_rank;
    case RF_DKVB: return nh * (nope + vh);
    case RF_DOV: return nh * vh;
    case RF_DNOPE: return nope;
    case RF_DVH: return vh;
    case RF_DNH: return nh;
    }
    return 0;
}

int rf_rule_needed(const rf_config *c, const rf_trule *r, int layer)
{
    int moe = layer >= 0 && rf_config_layer_is_moe(c, layer);
    switch ((rf_need)r->need) {
    case RF_NEED_ALWAYS: return 1;
    case RF_NEED_DENSE: return layer >= 0 && !moe;
    case RF_NEED_MOE: return moe;
    case RF_NEED_SHARED: return moe && c->shared_intermediate > 0;
    case RF_NEED_QLORA: return c->q_lora_rank > 0;
    case RF_NEED_NO_QLORA: return c->q_lora_rank == 0;
    case RF_NEED_QK_NORM: return c->qk_norm == RF_QKNORM_RMS;
    case RF_NEED_UNTIED: return !c->tie_word_embeddings;
    case RF_NEED_OPTIONAL:
    case RF_NEED_NEVER: return 0;
    }
    return 0;
}

int rf_rule_bias_needed(const rf_config *c, const rf_trule *r)
{
    switch ((rf_bias)r->bias) {
    case RF_BIAS_ATTN: return c->attention_bias;
    case RF_BIAS_MLP: return c->mlp_bias;
    case RF_BIAS_ALWAYS: return 1;
    default: return 0;
    }
}

int rf_rule_source_shape(const rf_config *c, const rf_trule *r, uint64_t *shp)
{
    uint64_t out = rf_dim(c, (rf_dimsym)r->out), in = rf_dim(c, (rf_dimsym)r->in), E = (uint64_t)c->num_experts;
    uint64_t H = (uint64_t)c->num_heads;
    switch ((rf_layout)r->layout) {
    case RF_LAY_PLAIN:
    case RF_LAY_EXPERT:
        shp[0] = out;
        if (!r->in) return 1;
        shp[1] = in;
        return 2;
    case RF_LAY_STACKED: shp[0] = E, shp[1] = out, shp[2] = in; return 3;
    case RF_LAY_HEADS: shp[0] = H, shp[1] = out, shp[2] = in; return 3;
    case RF_LAY_STACKED_T: shp[0] = E, shp[1] = in, shp[2] = out; return 3;
    case RF_LAY_STACKED_T2A: case RF_LAY_STACKED_T2B: shp[0] = E, shp[1] = in, shp[2] = 2 * out; return 3;
    case RF_LAY_STACKED_R2A: case RF_LAY_STACKED_R2B: shp[0] = E, shp[1] = 2 * out, shp[2] = in; return 3;
    case RF_LAY_KVB_K: case RF_LAY_KVB_V: shp[0] = rf_dim(c, RF_DKVB), shp[1] = rf_dim(c, RF_DKVL); return 2;
    }
    return 0;
}
