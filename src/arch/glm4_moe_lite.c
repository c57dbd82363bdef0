/* GLM-4.7-Flash (Glm4MoeLiteForCausalLM, model_type glm4_moe_lite): DeepSeek-V3's layer
 * (multi-head latent attention, sigmoid group routing with e_score_correction_bias, shared
 * experts, a multi-token-prediction layer past num_hidden_layers) with GLM's defaults; the first
 * layer dense (mlp_layer_types in transformers 5 configs, first_k_dense_replace before).
 * transformers: models/glm4_moe_lite; mlx-lm: mlx_lm/models/glm4_moe_lite.py. */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_MLA,
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
    RF_ROWS_DEEPSEEK_MOE,
};

static void defaults(rf_config *c)
{
    c->rope_interleaved = 1;
    c->norm_topk_prob = 1;
    c->routed_scaling = 1.8;
    c->rms_norm_eps = 1e-5;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st = rf_deepseek_mla(p, c);
    return st ? st : rf_deepseek_moe(p, c, 1);
}

const rf_family rf_family_glm4_moe_lite = {
    .arch = RF_ARCH_GLM4_MOE_LITE, .model_type = "glm4_moe_lite", .rules = rules,
    .nrules = sizeof rules / sizeof rules[0], .defaults = defaults, .parse = parse,
};
