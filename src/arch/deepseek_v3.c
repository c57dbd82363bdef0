/* DeepSeek-V3 (DeepseekV3ForCausalLM: DeepSeek-V3/R1, Kimi-K2). transformers: models/deepseek_v3;
 * mlx-lm: mlx_lm/models/deepseek_v3.py (+ mla.py).
 *  - Multi-head latent attention: q through a LoRA (q_a_proj, q_a_layernorm, q_b_proj) or q_proj;
 *    kv_a_proj_with_mqa gives a latent of kv_lora_rank (normed by kv_a_layernorm) and one rotary
 *    key of qk_rope_head_dim shared by all heads; kv_b_proj expands the latent into each head's
 *    non-rotary key (qk_nope_head_dim) and value (v_head_dim). mlx-lm's sanitize splits kv_b_proj
 *    per head into embed_q [H, kv_lora, nope] (keys, transposed) and unembed_out [H, v, kv_lora]
 *    (MultiLinear): those are the units, and the engine computes attention on the latent.
 *  - The rotary part uses adjacent pairs (rope_interleave); YaRN's mscale_all_dim scales the
 *    softmax (by mscale^2).
 *  - MoE from first_k_dense_replace on: sigmoid router with e_score_correction_bias for the
 *    choice, group-limited top-k (n_group, topk_group), renormalised, times routed_scaling_factor,
 *    plus n_shared_experts shared experts as one MLP. The router is a raw parameter in mlx-lm
 *    (never quantized).
 *  - Published checkpoints are FP8 (float8_e4m3fn, weight_scale_inv per 128x128 block) and hold a
 *    multi-token-prediction layer past num_hidden_layers: read dequantized, and dropped. */
#include "arch/family.h"

#include <math.h>
#include <string.h>

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_MLA,
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
    RF_ROWS_DEEPSEEK_MOE,
};

rf_status rf_deepseek_moe(const rf_cfgp *p, rf_config *c, int first_dense_default)
{
    rf_status st;
    int shared = 1, first_dense = first_dense_default, mtp = 0;
    if ((st = rf_cfg_int(p, "n_routed_experts", 1, 1, &c->num_experts)) ||
        (st = rf_cfg_int(p, "moe_intermediate_size", 1, 1, &c->moe_intermediate_size)) ||
        (st = rf_cfg_moe_common(p, c)) || (st = rf_cfg_int(p, "n_shared_experts", 0, 0, &shared)) ||
        (st = rf_cfg_int(p, "n_group", 0, 1, &c->n_group)) || (st = rf_cfg_int(p, "topk_group", 0, 1, &c->topk_group)) ||
        (st = rf_cfg_num(p, p->root, "routed_scaling_factor", 0, &c->routed_scaling)) ||
        (st = rf_cfg_int(p, "first_k_dense_replace", 0, 0, &first_dense)) ||
        (st = rf_cfg_int(p, "num_nextn_predict_layers", 0, 0, &mtp)))
        return st;
    if (c->num_experts % c->n_group) return rf_cfg_bad(p, "n_group", "must divide n_routed_experts");
    if (c->topk_group > c->n_group) return rf_cfg_bad(p, "topk_group", "exceeds n_group");
    if (c->experts_per_tok > c->topk_group * (c->num_experts / c->n_group))
        return rf_cfg_bad(p, "num_experts_per_tok", "exceeds the experts of topk_group groups");
    if ((uint64_t)shared * (uint64_t)c->moe_intermediate_size > INT32_MAX)
        return rf_cfg_bad(p, "n_shared_experts", "is too large");
    c->shared_intermediate = shared * c->moe_intermediate_size;
    c->extra_layers = mtp;
    c->router = RF_ROUTER_SIGMOID_GROUPED;
    /* GLM-4.7-Flash's transformers 5 config lists the MLP kind per layer */
    json_t *mt = rf_cfg_get(p, "mlp_layer_types");
    if (mt) {
        if (!json_is_array(mt) || json_array_size(mt) < (size_t)c->num_layers)
            return rf_cfg_bad(p, "mlp_layer_types", "must be a list of one \"dense\"/\"sparse\" per layer");
        for (int l = 0; l < c->num_layers; l++) {
            const char *t = json_string_value(json_array_get(mt, (size_t)l));
            if (!t || (strcmp(t, "sparse") && strcmp(t, "dense")))
                return rf_cfg_bad(p, "mlp_layer_types", "must be a list of one \"dense\"/\"sparse\" per layer");
            if (!strcmp(t, "sparse")) c->layer_flags[l] |= RF_LAYER_MOE;
        }
        return RF_OK;
    }
    for (int l = first_dense; l < c->num_layers; l++) c->layer_flags[l] |= RF_LAYER_MOE;
    return RF_OK;
}

rf_status rf_deepseek_mla(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    if ((st = rf_cfg_int(p, "kv_lora_rank", 1, 1, &c->kv_lora_rank)) ||
        (st = rf_cfg_int(p, "q_lora_rank", 0, 0, &c->q_lora_rank)) ||
        (st = rf_cfg_int(p, "qk_nope_head_dim", 1, 1, &c->qk_nope_head_dim)) ||
        (st = rf_cfg_int(p, "qk_rope_head_dim", 1, 1, &c->qk_rope_head_dim)) ||
        (st = rf_cfg_int(p, "v_head_dim", 1, 1, &c->v_head_dim)) || (st = rf_cfg_bool(p, "rope_interleave", &c->rope_interleaved)))
        return st;
    if (c->qk_rope_head_dim % 2) return rf_cfg_bad(p, "qk_rope_head_dim", "must be even (rotary embedding)");
    /* transformers sets head_dim = qk_rope_head_dim: the rotary embedding's dimension */
    c->head_dim = c->qk_rope_head_dim;
    c->partial_rotary = 1;
    c->latent_norm_eps = 1e-6; /* q_a_layernorm and kv_a_layernorm: transformers' default, whatever rms_norm_eps says */
    double scale = 1.0 / sqrt((double)(c->qk_nope_head_dim + c->qk_rope_head_dim));
    if (c->rope.type[0] && c->rope.mscale_all_dim != 0 && c->rope.factor > 1) {
        double m = 0.1 * c->rope.mscale_all_dim * log(c->rope.factor) + 1.0;
        scale *= m * m;
    }
    c->attn_scale = scale;
    return RF_OK;
}

static void defaults(rf_config *c)
{
    c->rope_interleaved = 1;
    c->norm_topk_prob = 1;
    c->routed_scaling = 2.5;
    c->n_group = 8;
    c->topk_group = 4;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st = rf_deepseek_mla(p, c);
    return st ? st : rf_deepseek_moe(p, c, 3);
}

const rf_family rf_family_deepseek_v3 = {
    .arch = RF_ARCH_DEEPSEEK_V3, .model_type = "deepseek_v3", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .defaults = defaults, .parse = parse,
};

