/* Qwen3 (Qwen3ForCausalLM): llama with per-head q/k RMSNorm before the rotary embedding.
 * transformers: models/qwen3; mlx-lm: mlx_lm/models/qwen3.py. */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_ATTN, RF_BIAS_ATTN),
    RF_ROWS_QK_NORM,
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
};

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    c->qk_norm = RF_QKNORM_RMS;
    return rf_qwen_window(p, c, 0);
}

const rf_family rf_family_qwen3 = {
    .arch = RF_ARCH_QWEN3, .model_type = "qwen3", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .parse = parse,
};
