/* The config.json an MLX checkpoint carries, as mlx-lm's ModelArgs read it.
 *
 * mlx-lm (d78bf58) reads the older transformers spelling: rope_theta and rope_scaling (not
 * transformers 5's rope_parameters), num_experts for qwen3_moe (not num_local_experts),
 * rope_local_base_freq and sliding_window_pattern for gemma3, a top-level vocab_size for the gemma3
 * wrapper. A key it needs that the source config spells the new way is added from the parsed
 * config (tests/ref/mlxlm_check.py found each of these); nothing the source has is changed.
 * llama4_text checkpoints are written as the llama4 wrapper (text under text_config, tensors under
 * language_model.), the only Llama 4 model mlx-lm has. */
#include "arch/family.h"

#include <string.h>

static void put_new(json_t *o, const char *key, json_t *v)
{
    if (!json_object_get(o, key)) json_object_set_new(o, key, v);
    else json_decref(v);
}

static json_t *floats(const float *x, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(x[i]));
    return a;
}

/* rope_scaling in the older spelling ("type" and "rope_type"), or null. */
static json_t *rope_scaling(const rf_rope *r)
{
    if (!r->type[0] || !strcmp(r->type, "default")) return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(r->type));
    json_object_set_new(o, "rope_type", json_string(r->type));
    if (r->factor > 0) json_object_set_new(o, "factor", json_real(r->factor));
    if (r->original_max_pos > 0) json_object_set_new(o, "original_max_position_embeddings", json_integer(r->original_max_pos));
    if (!strcmp(r->type, "llama3")) {
        json_object_set_new(o, "low_freq_factor", json_real(r->low_freq_factor));
        json_object_set_new(o, "high_freq_factor", json_real(r->high_freq_factor));
    } else if (!strcmp(r->type, "yarn")) {
        if (r->beta_fast) json_object_set_new(o, "beta_fast", json_real(r->beta_fast));
        if (r->beta_slow) json_object_set_new(o, "beta_slow", json_real(r->beta_slow));
        if (r->mscale) json_object_set_new(o, "mscale", json_real(r->mscale));
        if (r->mscale_all_dim) json_object_set_new(o, "mscale_all_dim", json_real(r->mscale_all_dim));
    } else if (!strcmp(r->type, "longrope")) {
        json_object_set_new(o, "short_factor", floats(r->short_factor, r->n_factors));
        json_object_set_new(o, "long_factor", floats(r->long_factor, r->n_factors));
    }
    if (r->attention_factor > 0) json_object_set_new(o, "attention_factor", json_real(r->attention_factor));
    return o;
}

const char *rf_mlx_tensor_prefix(const rf_config *c)
{
    return c->arch == RF_ARCH_LLAMA4 && !c->tensor_prefix[0] ? "language_model." : "";
}

rf_status rf_mlx_config(const rf_config *c, json_t *root, rf_err *err)
{
    json_t *text = json_object_get(root, "text_config");
    if (!c->tensor_prefix[0] || !json_is_object(text)) text = root;
    put_new(text, "rope_theta", json_real(c->rope.theta));
    put_new(text, "rope_scaling", rope_scaling(&c->rope));
    if (c->partial_rotary != 1) put_new(text, "partial_rotary_factor", json_real(c->partial_rotary));
    if (c->head_dim && !c->kv_lora_rank) put_new(text, "head_dim", json_integer(c->head_dim));
    switch (c->arch) {
    case RF_ARCH_QWEN3_MOE:
        put_new(text, "num_experts", json_integer(c->num_experts));
        break;
    case RF_ARCH_PHI3:
        if (c->rope.original_max_pos)
            put_new(text, "original_max_position_embeddings", json_integer(c->rope.original_max_pos));
        break;
    case RF_ARCH_GEMMA3: {
        put_new(text, "rope_local_base_freq", json_real(c->rope_local.theta));
        put_new(text, "sliding_window", json_integer(c->sliding_window));
        /* mlx-lm knows the pattern "every k-th layer global" only */
        int k = 0;
        for (int l = 0; l < c->num_layers && !k; l++)
            if (!(c->layer_flags[l] & RF_LAYER_SLIDING)) k = l + 1;
        int periodic = k > 0;
        for (int l = 0; l < c->num_layers && periodic; l++)
            periodic = !(c->layer_flags[l] & RF_LAYER_SLIDING) == ((l + 1) % k == 0);
        if (!periodic && k)
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "gemma3: mlx-lm knows only 'every k-th layer global' sliding "
                              "patterns; this config's layer_types is another");
        put_new(text, "sliding_window_pattern", json_integer(k ? k : c->num_layers + 1));
        if (text != root) put_new(root, "vocab_size", json_integer(c->vocab_size));
        break;
    }
    case RF_ARCH_QWEN2_MOE:
        /* mlx-lm's qwen2_moe makes every layer sparse */
        for (int l = 0; l < c->num_layers; l++)
            if (!(c->layer_flags[l] & RF_LAYER_MOE))
                return rf_err_set(err, RF_ERR_UNSUPPORTED, "qwen2_moe: layer %d has a dense MLP (mlp_only_layers / "
                                  "decoder_sparse_step), which mlx-lm's qwen2_moe cannot load (it makes every layer "
                                  "MoE)", l);
        break;
    case RF_ARCH_LLAMA4:
        if (c->experts_per_tok != 1)
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "llama4: mlx-lm's llama4 runs one expert per token; this "
                              "config has num_experts_per_tok %d", c->experts_per_tok);
        if (text == root) { /* llama4_text: mlx-lm loads Llama 4 only as the wrapper */
            json_t *inner = json_deep_copy(root);
            json_object_clear(root);
            json_object_set_new(root, "model_type", json_string("llama4"));
            json_object_set_new(root, "architectures", json_pack("[s]", "Llama4ForConditionalGeneration"));
            json_t *tie = json_object_get(inner, "tie_word_embeddings");
            if (tie) json_object_set(root, "tie_word_embeddings", tie);
            json_object_set_new(root, "text_config", inner);
        }
        break;
    default: break;
    }
    return RF_OK;
}
