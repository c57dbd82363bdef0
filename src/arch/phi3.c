/* Phi-3 and Phi-4 (Phi3ForCausalLM). transformers: models/phi3; mlx-lm: mlx_lm/models/phi3.py.
 * q/k/v fused in self_attn.qkv_proj (rows q, then k, then v) and gate/up in mlp.gate_up_proj
 * (rows gate, then up): mlx-lm keeps both fused, so each is one unit. Partial rotary
 * (partial_rotary_factor, Phi-4-mini), LongRoPE (short factors up to
 * original_max_position_embeddings, long beyond, and an attention factor), sliding window on
 * every layer when set. */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    {"self_attn.qkv_proj", 1, RF_SLOT_QKV, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DQKV, RF_DH, 0, 0, NULL},
    {"self_attn.o_proj", 1, RF_SLOT_O, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_DQ, 0, 0, NULL},
    {"mlp.gate_up_proj", 1, RF_SLOT_GATE_UP, RF_LAY_PLAIN, RF_NEED_DENSE, RF_BIAS_NO, RF_D2I, RF_DH, 0, 0, NULL},
    {"mlp.down_proj", 1, RF_SLOT_DOWN, RF_LAY_PLAIN, RF_NEED_DENSE, RF_BIAS_NO, RF_DH, RF_DI, 0, 0, NULL},
};

static void defaults(rf_config *c)
{
    c->rms_norm_eps = 1e-5;
    c->max_position_embeddings = 4096;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    int omax = 0;
    rf_status st;
    if ((st = rf_cfg_int(p, "original_max_position_embeddings", 0, 1, &omax)) ||
        (st = rf_cfg_int(p, "sliding_window", 0, 0, &c->sliding_window)))
        return st;
    if (!c->rope.original_max_pos) c->rope.original_max_pos = omax ? omax : c->max_position_embeddings;
    for (int l = 0; c->sliding_window && l < c->num_layers; l++) c->layer_flags[l] |= RF_LAYER_SLIDING;
    return RF_OK;
}

const rf_family rf_family_phi3 = {
    .arch = RF_ARCH_PHI3, .model_type = "phi3", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .defaults = defaults, .parse = parse,
};
