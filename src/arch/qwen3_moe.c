/* Qwen3-MoE (Qwen3MoeForCausalLM): qwen3 attention; MoE on the layers decoder_sparse_step picks
 * that mlp_only_layers does not list, router mlp.gate (softmax over all experts, top-k,
 * renormalised iff norm_topk_prob). transformers: models/qwen3_moe; mlx-lm:
 * mlx_lm/models/qwen3_moe.py (switch_mlp; its predicate keeps mlp.gate at 8 bits). */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_ATTN, RF_BIAS_ATTN),
    RF_ROWS_QK_NORM,
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
    {"mlp.gate", 1, RF_SLOT_ROUTER, RF_LAY_PLAIN, RF_NEED_MOE, RF_BIAS_NO, RF_DE, RF_DH, 0, 0, NULL},
    RF_ROWS_EXPERTS("mlp", "gate_proj", "up_proj", "down_proj"),
};

/* Qwen's MoE layer rule: (layer + 1) % decoder_sparse_step == 0 unless in mlp_only_layers. */
rf_status rf_qwen_moe_layers(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    /* transformers 5 writes num_local_experts */
    const char *ek = rf_cfg_get(p, "num_experts") ? "num_experts" : "num_local_experts";
    if ((st = rf_cfg_int(p, ek, 1, 1, &c->num_experts)) ||
        (st = rf_cfg_int(p, "moe_intermediate_size", 1, 1, &c->moe_intermediate_size)) ||
        (st = rf_cfg_moe_common(p, c)) || (st = rf_cfg_int(p, "decoder_sparse_step", 0, 1, &c->decoder_sparse_step)))
        return st;
    enum { MLP_ONLY = 0x80 }; /* scratch bit, cleared below */
    if ((st = rf_cfg_layer_list(p, "mlp_only_layers", c, MLP_ONLY))) return st;
    for (int l = 0; l < c->num_layers; l++) {
        if (!(c->layer_flags[l] & MLP_ONLY) && (l + 1) % c->decoder_sparse_step == 0) c->layer_flags[l] |= RF_LAYER_MOE;
        c->layer_flags[l] &= (uint8_t)~MLP_ONLY;
    }
    c->router = RF_ROUTER_SOFTMAX;
    return RF_OK;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    c->qk_norm = RF_QKNORM_RMS;
    if ((st = rf_qwen_moe_layers(p, c))) return st;
    return rf_qwen_window(p, c, 1);
}

const rf_family rf_family_qwen3_moe = {
    .arch = RF_ARCH_QWEN3_MOE, .model_type = "qwen3_moe", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
    .parse = parse,
};
