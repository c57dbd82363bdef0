/* Qwen2 (Qwen2ForCausalLM): llama with q/k/v biases always (no o bias) and the Qwen sliding-window
 * rule. transformers: models/qwen2; mlx-lm: mlx_lm/models/qwen2.py. */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_ALWAYS, RF_BIAS_NO),
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
};

/* Qwen configs drop sliding_window unless use_sliding_window; the window then covers the layers
 * layer_types calls "sliding_attention", or (older configs) those from max_window_layers on.
 * ALL_LAYERS: qwen3_moe's model class masks every layer. */
rf_status rf_qwen_window(const rf_cfgp *p, rf_config *c, int all_layers)
{
    int w = 0, use = 0, from = 28, found = 0;
    rf_status st;
    if ((st = rf_cfg_int(p, "sliding_window", 0, 0, &w)) || (st = rf_cfg_bool(p, "use_sliding_window", &use)) ||
        (st = rf_cfg_int(p, "max_window_layers", 0, 0, &from)))
        return st;
    if (!w || !use) return RF_OK;
    c->sliding_window = w;
    if (all_layers) {
        for (int l = 0; l < c->num_layers; l++) c->layer_flags[l] |= RF_LAYER_SLIDING;
        return RF_OK;
    }
    if ((st = rf_cfg_layer_types(p, c, "sliding_attention", RF_LAYER_SLIDING, &found)) || found) return st;
    for (int l = from; l < c->num_layers; l++) c->layer_flags[l] |= RF_LAYER_SLIDING;
    return RF_OK;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    c->attention_bias = 1; /* Qwen2 always has q/k/v biases */
    return rf_qwen_window(p, c, 0);
}

const rf_family rf_family_qwen2 = {
    .arch = RF_ARCH_QWEN2, .model_type = "qwen2", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .parse = parse,
};
