/* Mistral (MistralForCausalLM): llama without biases, sliding-window attention on every layer
 * when sliding_window is set. transformers: models/mistral; mlx-lm: mlx_lm/models/mistral.py
 * (llama.py's model). */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_NO, RF_BIAS_NO),
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
};

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st = rf_cfg_int(p, "sliding_window", 0, 0, &c->sliding_window);
    for (int l = 0; !st && c->sliding_window && l < c->num_layers; l++) c->layer_flags[l] |= RF_LAYER_SLIDING;
    return st;
}

const rf_family rf_family_mistral = {
    .arch = RF_ARCH_MISTRAL, .model_type = "mistral", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .parse = parse,
};
