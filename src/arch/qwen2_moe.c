/* Qwen2-MoE (Qwen2MoeForCausalLM: Qwen1.5-MoE, Qwen2-57B-A14B): qwen2 attention (q/k/v biases),
 * qwen's MoE layer rule and router (softmax over all, norm_topk_prob off by default), plus one
 * shared expert whose output is scaled by sigmoid(shared_expert_gate(x)). transformers:
 * models/qwen2_moe; mlx-lm: mlx_lm/models/qwen2_moe.py (switch_mlp, shared_expert,
 * shared_expert_gate as Linear layers). */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_ALWAYS, RF_BIAS_NO),
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
    {"mlp.gate", 1, RF_SLOT_ROUTER, RF_LAY_PLAIN, RF_NEED_MOE, RF_BIAS_NO, RF_DE, RF_DH, 0, 0, NULL},
    RF_ROWS_EXPERTS("mlp", "gate_proj", "up_proj", "down_proj"),
    {"mlp.shared_expert.gate_proj", 1, RF_SLOT_SH_GATE, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DSI, RF_DH, 0, 0, NULL},
    {"mlp.shared_expert.up_proj", 1, RF_SLOT_SH_UP, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DSI, RF_DH, 0, 0, NULL},
    {"mlp.shared_expert.down_proj", 1, RF_SLOT_SH_DOWN, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DH, RF_DSI, 0, 0, NULL},
    {"mlp.shared_expert_gate", 1, RF_SLOT_SH_ROUTE, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_D1, RF_DH, 0, 0, NULL},
};

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    c->attention_bias = 1;
    if ((st = rf_qwen_moe_layers(p, c)) ||
        (st = rf_cfg_int(p, "shared_expert_intermediate_size", 0, 0, &c->shared_intermediate)))
        return st;
    c->shared_gate = c->shared_intermediate > 0;
    /* its config class: "sliding_attention" on the odd layers below max_window_layers */
    int w = 0, use = 0, from = 28, found = 0;
    if ((st = rf_cfg_int(p, "sliding_window", 0, 0, &w)) || (st = rf_cfg_bool(p, "use_sliding_window", &use)) ||
        (st = rf_cfg_int(p, "max_window_layers", 0, 0, &from)))
        return st;
    if (!w || !use) return RF_OK;
    c->sliding_window = w;
    if ((st = rf_cfg_layer_types(p, c, "sliding_attention", RF_LAYER_SLIDING, &found)) || found) return st;
    for (int l = 0; l < c->num_layers && l < from; l++)
        if ((l + 1) % 2) c->layer_flags[l] |= RF_LAYER_SLIDING;
    return RF_OK;
}

const rf_family rf_family_qwen2_moe = {
    .arch = RF_ARCH_QWEN2_MOE, .model_type = "qwen2_moe", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .parse = parse,
};
