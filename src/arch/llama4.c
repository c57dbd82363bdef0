/* Llama 4 (Llama4ForCausalLM "llama4_text", and the text part of Llama4ForConditionalGeneration
 * "llama4": Scout, Maverick). transformers: models/llama4; mlx-lm: mlx_lm/models/llama4.py.
 *  - MoE on the layers moe_layers lists (default: every interleave_moe_layer_step-th), each with
 *    a shared expert; the router takes the top-k logits and sigmoid(logit) scales the expert's
 *    input. The checkpoint stores the experts fused and transposed against a Linear:
 *    experts.gate_up_proj [E, hidden, 2 inter] and experts.down_proj [E, inter, hidden]; mlx-lm's
 *    sanitize splits and transposes them into experts.{gate,up,down}_proj [E, out, in].
 *  - Dense layers use intermediate_size_mlp; experts and the shared expert intermediate_size.
 *  - NoPE layers (no_rope_layers[i] == 0) have no rotary embedding and attend globally with
 *    temperature tuning; the others use chunked attention (attention_chunk_size) and, with
 *    use_qk_norm, a weightless L2 norm of q and k after the rotation.
 *  - The rotary embedding rotates adjacent pairs (complex multiplication).
 * Vision tensors of the wrapper are not part of the text model: left as they are. */
#include "arch/family.h"

#include <string.h>

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_ATTN, RF_BIAS_ATTN),
    RF_ROWS_MLP("feed_forward", RF_NEED_DENSE),
    {"feed_forward.router", 1, RF_SLOT_ROUTER, RF_LAY_PLAIN, RF_NEED_MOE, RF_BIAS_NO, RF_DE, RF_DH, 0, 0, NULL},
    /* Hugging Face: fused, transposed banks */
    {"feed_forward.experts.gate_up_proj", 1, RF_SLOT_X_GATE, RF_LAY_STACKED_T2A, RF_NEED_MOE, RF_BIAS_NO, RF_DMI, RF_DH,
     1, 0, "feed_forward.experts.gate_proj"},
    {"feed_forward.experts.gate_up_proj", 1, RF_SLOT_X_UP, RF_LAY_STACKED_T2B, RF_NEED_MOE, RF_BIAS_NO, RF_DMI, RF_DH,
     1, 0, "feed_forward.experts.up_proj"},
    {"feed_forward.experts.down_proj", 1, RF_SLOT_X_DOWN, RF_LAY_STACKED_T, RF_NEED_MOE, RF_BIAS_NO, RF_DH, RF_DMI, 1, 0,
     "feed_forward.experts.down_proj"},
    /* one tensor per expert (some published FP8/quantized repacks) */
    {"feed_forward.experts.{E}.gate_proj", 1, RF_SLOT_X_GATE, RF_LAY_EXPERT, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 0,
     0, "feed_forward.experts.gate_proj"},
    {"feed_forward.experts.{E}.up_proj", 1, RF_SLOT_X_UP, RF_LAY_EXPERT, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 0, 0,
     "feed_forward.experts.up_proj"},
    {"feed_forward.experts.{E}.down_proj", 1, RF_SLOT_X_DOWN, RF_LAY_EXPERT, RF_NEED_NEVER, RF_BIAS_NO, RF_DH, RF_DMI, 0,
     0, "feed_forward.experts.down_proj"},
    /* MLX (SwitchGLU named experts) */
    {"feed_forward.experts.gate_proj", 1, RF_SLOT_X_GATE, RF_LAY_STACKED, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 0, 0, NULL},
    {"feed_forward.experts.up_proj", 1, RF_SLOT_X_UP, RF_LAY_STACKED, RF_NEED_NEVER, RF_BIAS_NO, RF_DMI, RF_DH, 0, 0, NULL},
    {"feed_forward.experts.down_proj", 1, RF_SLOT_X_DOWN, RF_LAY_STACKED, RF_NEED_NEVER, RF_BIAS_NO, RF_DH, RF_DMI, 0, 0, NULL},
    {"feed_forward.shared_expert.gate_proj", 1, RF_SLOT_SH_GATE, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DSI, RF_DH,
     0, 0, NULL},
    {"feed_forward.shared_expert.up_proj", 1, RF_SLOT_SH_UP, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DSI, RF_DH, 0,
     0, NULL},
    {"feed_forward.shared_expert.down_proj", 1, RF_SLOT_SH_DOWN, RF_LAY_PLAIN, RF_NEED_SHARED, RF_BIAS_NO, RF_DH, RF_DSI,
     0, 0, NULL},
};

static void defaults(rf_config *c)
{
    c->rope.theta = 500000.0;
    c->rms_norm_eps = 1e-5;
    c->head_dim = 128;
    c->attention_chunk = 8192;
    c->temp_tuning = 1;
    c->floor_scale = 8192;
    c->temp_scale = 0.1;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    int step = 1, inter_mlp = 0, qk = 1, interval = 4;
    /* intermediate_size is the experts' (and the shared expert's); dense layers use intermediate_size_mlp */
    c->moe_intermediate_size = c->intermediate_size;
    c->shared_intermediate = c->intermediate_size;
    if ((st = rf_cfg_int(p, "num_local_experts", 1, 1, &c->num_experts)) || (st = rf_cfg_moe_common(p, c)) ||
        (st = rf_cfg_int(p, "intermediate_size_mlp", 0, 1, &inter_mlp)) ||
        (st = rf_cfg_int(p, "interleave_moe_layer_step", 0, 1, &step)) ||
        (st = rf_cfg_int(p, "attention_chunk_size", 0, 1, &c->attention_chunk)) ||
        (st = rf_cfg_bool(p, "use_qk_norm", &qk)) ||
        (st = rf_cfg_num(p, p->root, "floor_scale", 0, &c->floor_scale)) ||
        (st = rf_cfg_num(p, p->root, "attn_scale", 0, &c->temp_scale)) ||
        (st = rf_cfg_int(p, "no_rope_layer_interval", 0, 1, &interval)))
        return st;
    if (!(c->floor_scale > 0)) return rf_cfg_bad(p, "floor_scale", "must be positive");
    /* published Scout/Maverick configs say "attn_temperature_tuning": 4 (an integer): non-zero is on */
    json_t *tt = rf_cfg_get(p, "attn_temperature_tuning");
    if (tt && !json_is_boolean(tt) && !json_is_integer(tt))
        return rf_cfg_bad(p, "attn_temperature_tuning", "must be true, false or an integer");
    if (tt) c->temp_tuning = json_is_boolean(tt) ? json_is_true(tt) : json_integer_value(tt) != 0;
    if (json_is_null(json_object_get(p->root, "attention_chunk_size"))) c->attention_chunk = 0; /* no chunking */
    c->intermediate_size = inter_mlp ? inter_mlp : c->intermediate_size;
    c->router = RF_ROUTER_LLAMA4;
    c->qk_norm = qk ? RF_QKNORM_L2 : RF_QKNORM_NONE;
    c->rope_interleaved = 1;
    if (rf_cfg_get(p, "moe_layers")) {
        if ((st = rf_cfg_layer_list(p, "moe_layers", c, RF_LAYER_MOE))) return st;
    } else {
        for (int l = step - 1; l < c->num_layers; l += step) c->layer_flags[l] |= RF_LAYER_MOE;
    }
    /* no_rope_layers: 1 = rotary, 0 = NoPE; an empty or absent list means every interval-th is NoPE */
    json_t *nr = rf_cfg_get(p, "no_rope_layers");
    if (nr && (!json_is_array(nr) || (json_array_size(nr) && json_array_size(nr) < (size_t)c->num_layers)))
        return rf_cfg_bad(p, "no_rope_layers", "must be a list of one 0/1 per layer");
    for (int l = 0; l < c->num_layers; l++) {
        int rope = (l + 1) % interval != 0;
        if (nr && json_array_size(nr)) {
            json_t *v = json_array_get(nr, (size_t)l);
            if (!json_is_integer(v) && !json_is_boolean(v)) return rf_cfg_bad(p, "no_rope_layers", "must hold 0/1 values");
            rope = json_is_boolean(v) ? json_is_true(v) : json_integer_value(v) != 0;
        }
        if (!rope) c->layer_flags[l] |= RF_LAYER_NOPE;
    }
    /* chunked attention on the layers layer_types says, by default the rotary ones */
    int found = 0;
    if ((st = rf_cfg_layer_types(p, c, "chunked_attention", RF_LAYER_CHUNKED, &found))) return st;
    if (!found)
        for (int l = 0; l < c->num_layers; l++)
            if (!(c->layer_flags[l] & RF_LAYER_NOPE)) c->layer_flags[l] |= RF_LAYER_CHUNKED;
    return RF_OK;
}

const rf_family rf_family_llama4 = {
    .arch = RF_ARCH_LLAMA4, .model_type = "llama4_text", .wrapper_type = "llama4", .rules = rules,
    .nrules = sizeof rules / sizeof rules[0], .defaults = defaults, .parse = parse,
};
