/* Gemma 3 text (Gemma3ForCausalLM "gemma3_text", and the text part of
 * Gemma3ForConditionalGeneration "gemma3"). transformers: models/gemma3; mlx-lm:
 * mlx_lm/models/gemma3_text.py and gemma3.py.
 *  - RMSNorm stores w - 1: y = norm(x) * (1 + w) (also the q/k norms);
 *  - sandwich norms: input_layernorm before attention, post_attention_layernorm on its output,
 *    pre_feedforward_layernorm before the MLP, post_feedforward_layernorm on its output;
 *  - embeddings times sqrt(hidden_size); lm_head tied to them by default;
 *  - sliding-window layers (layer_types, or every layer but each sliding_window_pattern-th) use
 *    the local rope (rope_local_base_freq, no scaling), the others the global one (rope_theta and
 *    rope_scaling); transformers 5 writes both under rope_parameters per layer type;
 *  - the softmax scale is query_pre_attn_scalar^-0.5; tanh soft-capping of the final logits
 *    (final_logit_softcapping, text model only); attn_logit_softcapping is not applied (transformers
 *    and mlx-lm ignore it for Gemma 3); activation gelu_pytorch_tanh;
 *  - the embedding scale is cast to the embedding's dtype before use (73.5 for 5376 in BF16). */
#include "arch/family.h"

#include <math.h>
#include <string.h>

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    {"input_layernorm", 1, RF_SLOT_ATTN_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_D0, 0, 0, NULL},
    {"post_attention_layernorm", 1, RF_SLOT_POST_ATTN_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_D0, 0, 0, NULL},
    {"pre_feedforward_layernorm", 1, RF_SLOT_MLP_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_D0, 0, 0, NULL},
    {"post_feedforward_layernorm", 1, RF_SLOT_POST_MLP_NORM, RF_LAY_PLAIN, RF_NEED_ALWAYS, RF_BIAS_NO, RF_DH, RF_D0, 0, 0, NULL},
    RF_ROWS_ATTN(RF_BIAS_ATTN, RF_BIAS_ATTN),
    RF_ROWS_QK_NORM,
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
};

static void defaults(rf_config *c)
{
    c->vocab_size = 262208;
    c->head_dim = 256;
    c->rope.theta = 1e6;
    c->rope_local.theta = 10000.0;
    c->rope_local.truncate = 1;
    c->tie_word_embeddings = 1;
    c->sliding_window = 4096;
    c->act = RF_ACT_GELU_TANH;
    c->max_position_embeddings = 131072;
}

static rf_status parse(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    double qscale = 256, local = c->rope_local.theta;
    int pattern = 6, found = 0, bidir = 0;
    if ((st = rf_cfg_num(p, p->root, "query_pre_attn_scalar", 0, &qscale)) ||
        (st = rf_cfg_num(p, p->root, "final_logit_softcapping", 0, &c->final_softcap)) ||
        (st = rf_cfg_int(p, "sliding_window", 0, 1, &c->sliding_window)) ||
        (st = rf_cfg_int(p, "sliding_window_pattern", 0, 1, &pattern)) ||
        (st = rf_cfg_int(p, "_sliding_window_pattern", 0, 1, &pattern)) ||
        (st = rf_cfg_num(p, p->root, "rope_local_base_freq", 0, &local)) ||
        (st = rf_cfg_bool(p, "use_bidirectional_attention", &bidir)))
        return st;
    if (bidir)
        return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "%s: use_bidirectional_attention: ramfit runs causal models only",
                          p->label);
    if (!(qscale > 0)) return rf_cfg_bad(p, "query_pre_attn_scalar", "must be positive");
    c->attn_scale = 1.0 / sqrt(qscale);
    /* transformers 5.17 keeps attn_logit_softcapping in the config but Gemma 3's attention never
     * applies it (nor does mlx-lm); the final soft-capping is Gemma3ForCausalLM's, not the
     * multimodal wrapper's */
    if (c->tensor_prefix[0]) c->final_softcap = 0;
    c->norm_plus_one = 1;
    c->sandwich_norm = 1;
    c->qk_norm = RF_QKNORM_RMS;
    c->embed_scale = sqrt((double)c->hidden_size);
    c->rope_local.theta = local;
    /* transformers 5: rope_parameters {"full_attention": {...}, "sliding_attention": {...}} */
    json_t *rp = rf_cfg_get(p, "rope_parameters");
    if (rp && json_is_object(rp) && json_object_get(rp, "full_attention")) {
        rf_rope g = c->rope;
        memset(&c->rope, 0, sizeof c->rope);
        c->rope.theta = g.theta;
        c->rope.truncate = 1;
        if ((st = rf_cfg_rope(p, rp, "full_attention", &c->rope))) return st;
        if (json_object_get(rp, "sliding_attention") && (st = rf_cfg_rope(p, rp, "sliding_attention", &c->rope_local)))
            return st;
    }
    if ((st = rf_cfg_layer_types(p, c, "sliding_attention", RF_LAYER_SLIDING | RF_LAYER_LOCAL, &found))) return st;
    if (!found)
        for (int l = 0; l < c->num_layers; l++)
            if ((l + 1) % pattern) c->layer_flags[l] |= RF_LAYER_SLIDING | RF_LAYER_LOCAL;
    return RF_OK;
}

const rf_family rf_family_gemma3 = {
    .arch = RF_ARCH_GEMMA3, .model_type = "gemma3_text", .wrapper_type = "gemma3", .rules = rules,
    .nrules = sizeof rules / sizeof rules[0], .defaults = defaults, .parse = parse,
};
