/* Mixtral (MixtralForCausalLM): every layer a sparse MoE block under block_sparse_moe, experts
 * w1 (gate), w3 (up), w2 (down); top-k logits, softmax over the chosen. Sliding window on every
 * layer when set. transformers: models/mixtral; mlx-lm: mlx_lm/models/mixtral.py (stacks the
 * experts into block_sparse_moe.switch_mlp). */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_NO, RF_BIAS_NO),
    {"block_sparse_moe.gate", 1, RF_SLOT_ROUTER, RF_LAY_PLAIN, RF_NEED_MOE, RF_BIAS_NO, RF_DE, RF_DH, 0, 0, NULL},
    RF_ROWS_EXPERTS("block_sparse_moe", "w1", "w3", "w2"),
};

static void defaults(rf_config *c)
{
    c->rope.theta = 1e6;
    c->rms_norm_eps = 1e-5;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    if ((st = rf_cfg_int(p, "num_local_experts", 1, 1, &c->num_experts)) || (st = rf_cfg_moe_common(p, c)) ||
        (st = rf_cfg_int(p, "sliding_window", 0, 0, &c->sliding_window)))
        return st;
    /* Mixtral's experts use intermediate_size; its softmax over the chosen top-k equals
     * renormalising the top-k probabilities. */
    c->moe_intermediate_size = c->intermediate_size;
    c->norm_topk_prob = 1;
    c->router = RF_ROUTER_SOFTMAX_TOPK;
    for (int l = 0; l < c->num_layers; l++)
        c->layer_flags[l] |= RF_LAYER_MOE | (c->sliding_window ? RF_LAYER_SLIDING : 0);
    return RF_OK;
}

const rf_family rf_family_mixtral = {
    .arch = RF_ARCH_MIXTRAL, .model_type = "mixtral", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .defaults = defaults, .parse = parse,
};
