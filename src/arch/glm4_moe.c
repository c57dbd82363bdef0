/* GLM-4.5 / 4.6 / 4.7 and GLM-4.5-Air (Glm4MoeForCausalLM). transformers: models/glm4_moe;
 * mlx-lm: mlx_lm/models/glm4_moe.py. Grouped-query attention with q/k/v biases (attention_bias),
 * optional per-head q/k RMSNorm (use_qk_norm), partial rotary (partial_rotary_factor, default
 * 0.5: the first half of each head, rotate-half pairs); the DeepSeek MoE block from
 * first_k_dense_replace on (sigmoid group routing with e_score_correction_bias,
 * routed_scaling_factor, shared experts); a multi-token-prediction layer past num_hidden_layers. */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_ATTN, RF_BIAS_NO),
    RF_ROWS_QK_NORM,
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
    RF_ROWS_DEEPSEEK_MOE,
};

static void defaults(rf_config *c)
{
    c->partial_rotary = 0.5;
    c->norm_topk_prob = 1;
    c->rms_norm_eps = 1e-5;
    c->head_dim = 128;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    int qk = 0;
    rf_status st = rf_cfg_bool(p, "use_qk_norm", &qk);
    if (st) return st;
    c->qk_norm = qk ? RF_QKNORM_RMS : RF_QKNORM_NONE;
    return rf_deepseek_moe(p, c, 1);
}

const rf_family rf_family_glm4_moe = {
    .arch = RF_ARCH_GLM4_MOE, .model_type = "glm4_moe", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .defaults = defaults, .parse = parse,
};
