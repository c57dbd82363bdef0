/* config.json of a Hugging Face decoder-only checkpoint -> rf_config.
 *
 * The keys every family shares are read here; each family's file (src/arch/<family>.c) sets its
 * defaults (its transformers config class's) and reads its own keys through the helpers below.
 * Keys without a sensible default are required and their absence is a format error that names
 * the file and the key. Multimodal wrappers (Llama4ForConditionalGeneration, Gemma3...) keep the
 * text model under "text_config" and its tensors under "language_model.". */
#include "arch/family.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ helpers for the families */

rf_status rf_cfg_bad(const rf_cfgp *p, const char *key, const char *what)
{
    return rf_err_set(p->err, RF_ERR_FORMAT, "%s: key '%s' %s", p->label, key, what);
}

/* An absent key and an explicit null both mean "use the default". */
json_t *rf_cfg_get(const rf_cfgp *p, const char *key)
{
    json_t *v = json_object_get(p->root, key);
    return json_is_null(v) ? NULL : v;
}

/* A JSON number that is a whole value: an integer, or a real such as 1e9 or 4096.0. */
static int whole_value(json_t *v, double *out)
{
    if (json_is_integer(v)) {
        *out = (double)json_integer_value(v);
        return 1;
    }
    if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v)) {
        *out = json_real_value(v);
        return 1;
    }
    return 0;
}

rf_status rf_cfg_int(const rf_cfgp *p, const char *key, int required, int lo, int *out)
{
    json_t *v = rf_cfg_get(p, key);
    if (!v) return required ? rf_cfg_bad(p, key, "is missing") : RF_OK;
    double x;
    if (!whole_value(v, &x)) return rf_cfg_bad(p, key, "must be an integer");
    if (x < lo || x > INT_MAX) {
        char what[128];
        if (x > INT_MAX)
            snprintf(what, sizeof what, "is out of range (%.17g; ramfit supports at most %d)", x, INT_MAX);
        else
            snprintf(what, sizeof what, "is out of range (%.17g; must be >= %d)", x, lo);
        return rf_cfg_bad(p, key, what);
    }
    *out = (int)x;
    return RF_OK;
}

rf_status rf_cfg_num(const rf_cfgp *p, json_t *obj, const char *key, int required, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_null(v)) v = NULL;
    if (!v) return required ? rf_cfg_bad(p, key, "is missing") : RF_OK;
    if (!json_is_number(v)) return rf_cfg_bad(p, key, "must be a number");
    *out = json_number_value(v);
    if (!isfinite(*out)) return rf_cfg_bad(p, key, "must be finite");
    return RF_OK;
}

rf_status rf_cfg_bool(const rf_cfgp *p, const char *key, int *out)
{
    json_t *v = rf_cfg_get(p, key);
    if (!v) return RF_OK;
    if (!json_is_boolean(v)) return rf_cfg_bad(p, key, "must be true or false");
    *out = json_is_true(v);
    return RF_OK;
}

rf_status rf_cfg_str(const rf_cfgp *p, json_t *obj, const char *key, int required, char *out, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_null(v)) v = NULL;
    if (!v) return required ? rf_cfg_bad(p, key, "is missing") : RF_OK;
    if (!json_is_string(v)) return rf_cfg_bad(p, key, "must be a string");
    const char *s = json_string_value(v);
    if (strlen(s) >= cap) return rf_cfg_bad(p, key, "is too long");
    memcpy(out, s, strlen(s) + 1);
    return RF_OK;
}

rf_status rf_cfg_layer_list(const rf_cfgp *p, const char *key, rf_config *c, uint8_t flag)
{
    json_t *ml = rf_cfg_get(p, key);
    if (!ml) return RF_OK;
    if (!json_is_array(ml)) return rf_cfg_bad(p, key, "must be a list of layer indices");
    for (size_t i = 0; i < json_array_size(ml); i++) {
        double l;
        if (!whole_value(json_array_get(ml, i), &l) || l < 0)
            return rf_cfg_bad(p, key, "must be a list of non-negative layer indices");
        if (l < c->num_layers) c->layer_flags[(int)l] |= flag; /* names no layer: harmless */
    }
    return RF_OK;
}

rf_status rf_cfg_layer_types(const rf_cfgp *p, rf_config *c, const char *type, uint8_t flag, int *found)
{
    json_t *lt = rf_cfg_get(p, "layer_types");
    *found = lt != NULL;
    if (!lt) return RF_OK;
    if (!json_is_array(lt) || json_array_size(lt) < (size_t)c->num_layers)
        return rf_cfg_bad(p, "layer_types", "must be a list of one string per layer");
    for (int l = 0; l < c->num_layers; l++) {
        const char *t = json_string_value(json_array_get(lt, (size_t)l));
        if (!t) return rf_cfg_bad(p, "layer_types", "must be a list of one string per layer");
        if (!strcmp(t, type)) c->layer_flags[l] |= flag;
    }
    return RF_OK;
}

static rf_status float_list(const rf_cfgp *p, json_t *obj, const char *key, float *out, int *n)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > RF_ROPE_MAX_FACTORS)
        return rf_cfg_bad(p, key, "must be a list of 1 to 256 numbers (one per rotated pair)");
    if (*n && (int)json_array_size(v) != *n) return rf_cfg_bad(p, key, "must have as many entries as short_factor");
    *n = (int)json_array_size(v);
    for (int i = 0; i < *n; i++) {
        json_t *x = json_array_get(v, (size_t)i);
        if (!json_is_number(x) || !(json_number_value(x) > 0)) return rf_cfg_bad(p, key, "must hold positive numbers");
        out[i] = (float)json_number_value(x);
    }
    return RF_OK;
}

/* The scaling keys of one rope dict RS (rope_scaling, or rope_parameters[...]) into R. */
static rf_status rope_scaling(const rf_cfgp *p, json_t *rs, const char *key, rf_rope *r)
{
    rf_status st;
    if (!json_is_object(rs)) return rf_cfg_bad(p, key, "must be null or an object");
    if ((st = rf_cfg_num(p, rs, "rope_theta", 0, &r->theta))) return st;
    const char *tkey = json_object_get(rs, "rope_type") ? "rope_type" : "type";
    char type[32] = "";
    if ((st = rf_cfg_str(p, rs, tkey, 0, type, sizeof type))) return st;
    if (!type[0] || !strcmp(type, "default")) return RF_OK;
    snprintf(r->type, sizeof r->type, "%s", type);
    double omax = r->original_max_pos;
    if ((st = rf_cfg_num(p, rs, "factor", 0, &r->factor)) ||
        (st = rf_cfg_num(p, rs, "original_max_position_embeddings", 0, &omax)) ||
        (st = rf_cfg_num(p, rs, "attention_factor", 0, &r->attention_factor)))
        return st;
    if (omax < 0 || omax > INT_MAX) return rf_cfg_bad(p, key, "has an invalid original_max_position_embeddings");
    r->original_max_pos = (int)omax;
    if (!strcmp(type, "llama3")) {
        if ((st = rf_cfg_num(p, rs, "factor", 1, &r->factor)) ||
            (st = rf_cfg_num(p, rs, "low_freq_factor", 1, &r->low_freq_factor)) ||
            (st = rf_cfg_num(p, rs, "high_freq_factor", 1, &r->high_freq_factor)) ||
            (st = rf_cfg_num(p, rs, "original_max_position_embeddings", 1, &omax)))
            return st;
        /* Llama-4-Scout publishes high_freq_factor == low_freq_factor (no ramp) */
        if (!(r->factor > 0) || !(r->low_freq_factor > 0) || !(r->high_freq_factor >= r->low_freq_factor) ||
            !(omax >= 1))
            return rf_cfg_bad(p, key, "has invalid llama3 parameters (need factor > 0, high_freq_factor >= "
                                      "low_freq_factor > 0, original_max_position_embeddings >= 1)");
    } else if (!strcmp(type, "linear")) {
        if ((st = rf_cfg_num(p, rs, "factor", 1, &r->factor))) return st;
        if (!(r->factor > 0)) return rf_cfg_bad(p, key, "has a linear factor that is not positive");
    } else if (!strcmp(type, "yarn")) {
        if ((st = rf_cfg_num(p, rs, "beta_fast", 0, &r->beta_fast)) ||
            (st = rf_cfg_num(p, rs, "beta_slow", 0, &r->beta_slow)) ||
            (st = rf_cfg_num(p, rs, "mscale", 0, &r->mscale)) ||
            (st = rf_cfg_num(p, rs, "mscale_all_dim", 0, &r->mscale_all_dim)))
            return st;
        json_t *tr = json_object_get(rs, "truncate");
        if (json_is_boolean(tr)) r->truncate = json_is_true(tr);
    } else if (!strcmp(type, "longrope")) {
        r->n_factors = 0;
        if ((st = float_list(p, rs, "short_factor", r->short_factor, &r->n_factors)) ||
            (st = float_list(p, rs, "long_factor", r->long_factor, &r->n_factors)))
            return st;
    }
    return RF_OK;
}

rf_status rf_cfg_rope(const rf_cfgp *p, json_t *obj, const char *key, rf_rope *r)
{
    rf_status st;
    json_t *rs = json_object_get(obj, key);
    if (json_is_null(rs)) rs = NULL;
    if (rs && (st = rope_scaling(p, rs, key, r))) return st;
    if (!(r->theta > 0)) return rf_cfg_bad(p, "rope_theta", "must be positive");
    return RF_OK;
}

rf_status rf_cfg_moe_common(const rf_cfgp *p, rf_config *c)
{
    rf_status st;
    if ((st = rf_cfg_int(p, "num_experts_per_tok", 1, 1, &c->experts_per_tok)) ||
        (st = rf_cfg_bool(p, "norm_topk_prob", &c->norm_topk_prob)))
        return st;
    if (c->experts_per_tok > c->num_experts) return rf_cfg_bad(p, "num_experts_per_tok", "exceeds the number of experts");
    return RF_OK;
}

/* ------------------------------------------------------------------ the common keys */

static const char *const act_names[] = {
    [RF_ACT_SILU] = "silu", [RF_ACT_GELU] = "gelu", [RF_ACT_GELU_TANH] = "gelu_pytorch_tanh",
    [RF_ACT_RELU] = "relu", [RF_ACT_RELU2] = "relu2",
};

const char *rf_act_name(rf_act a)
{
    return (unsigned)a < sizeof act_names / sizeof act_names[0] ? act_names[a] : "unknown";
}

/* transformers' ACT2FN names of the activations ramfit runs. */
static rf_status get_act(const rf_cfgp *p, rf_config *c)
{
    static const struct { const char *name; rf_act act; } acts[] = {
        {"silu", RF_ACT_SILU},          {"swish", RF_ACT_SILU},         {"gelu", RF_ACT_GELU},
        {"gelu_pytorch_tanh", RF_ACT_GELU_TANH}, {"gelu_new", RF_ACT_GELU_TANH}, {"gelu_fast", RF_ACT_GELU_TANH},
        {"relu", RF_ACT_RELU},          {"relu2", RF_ACT_RELU2},
    };
    /* gemma names it hidden_activation; its hidden_act is a legacy leftover */
    const char *key = rf_cfg_get(p, "hidden_activation") ? "hidden_activation" : "hidden_act";
    char s[48] = "";
    rf_status st = rf_cfg_str(p, p->root, key, 0, s, sizeof s);
    if (st || !s[0]) return st;
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (!strcmp(s, acts[i].name)) {
            c->act = acts[i].act;
            return RF_OK;
        }
    return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "%s: %s '%s' is not supported (supported: silu, swish, gelu, "
                      "gelu_pytorch_tanh, gelu_new, gelu_fast, relu, relu2)", p->label, key, s);
}

/* bos/eos_token_id: an integer, or a list whose first element is taken (generation uses any). */
static rf_status get_token(const rf_cfgp *p, const char *key, int *out)
{
    json_t *v = rf_cfg_get(p, key);
    if (json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : NULL;
    if (!v) return RF_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
        return rf_cfg_bad(p, key, "must be a non-negative integer or a list of them");
    *out = (int)json_integer_value(v);
    return RF_OK;
}

static rf_status get_dtype(const rf_cfgp *p, rf_config *c)
{
    /* transformers >= 4.56 writes "dtype"; older ones "torch_dtype"; wrappers keep it at the top */
    rf_cfgp q = *p;
    if (!rf_cfg_get(&q, "torch_dtype") && !rf_cfg_get(&q, "dtype")) q.root = p->top;
    const char *key = rf_cfg_get(&q, "torch_dtype") ? "torch_dtype" : "dtype";
    char s[32] = "";
    rf_status st = rf_cfg_str(&q, q.root, key, 0, s, sizeof s);
    if (st) return st;
    if (!strcmp(s, "bfloat16")) c->torch_dtype = RF_DT_BF16;
    else if (!strcmp(s, "float16")) c->torch_dtype = RF_DT_F16;
    else if (!strcmp(s, "float32")) c->torch_dtype = RF_DT_F32;
    return RF_OK;
}

/* DeepSeek-V3's published checkpoints: quantization_config {"quant_method": "fp8",
 * "weight_block_size": [128, 128]}; the weights are float8_e4m3fn with a float32
 * <name>_scale_inv per block. (MLX checkpoints also have a quantization_config: theirs has no
 * quant_method.) */
static rf_status get_fp8(const rf_cfgp *p, rf_config *c)
{
    json_t *q = json_object_get(p->top, "quantization_config");
    if (!json_is_object(q)) return RF_OK;
    const char *m = json_string_value(json_object_get(q, "quant_method"));
    if (!m) return RF_OK;
    if (strcmp(m, "fp8") != 0)
        return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "%s: quantization_config.quant_method '%s': ramfit reads "
                          "BF16/F16/F32 checkpoints, FP8 ones (quant_method fp8) and MLX ones", p->label, m);
    const char *fmt = json_string_value(json_object_get(q, "fmt"));
    if (fmt && strcmp(fmt, "e4m3"))
        return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "%s: quantization_config.fmt '%s': only e4m3 is supported",
                          p->label, fmt);
    json_t *b = json_object_get(q, "weight_block_size");
    double r, k;
    if (!json_is_array(b) || json_array_size(b) != 2 || !whole_value(json_array_get(b, 0), &r) ||
        !whole_value(json_array_get(b, 1), &k) || r < 1 || k < 1 || r > (1 << 20) || k > (1 << 20))
        return rf_err_set(p->err, RF_ERR_FORMAT, "%s: quantization_config.weight_block_size must be [rows, cols] "
                          "(positive integers)", p->label);
    c->fp8_block[0] = (int)r;
    c->fp8_block[1] = (int)k;
    return RF_OK;
}

static rf_status check_sizes(const rf_cfgp *p, rf_config *c)
{
    if (c->num_layers > RF_MAX_LAYERS)
        return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "%s: num_hidden_layers %d: ramfit supports at most %d layers",
                          p->label, c->num_layers, RF_MAX_LAYERS);
    if (c->num_kv_heads > c->num_heads || c->num_heads % c->num_kv_heads)
        return rf_cfg_bad(p, "num_key_value_heads", "must divide num_attention_heads");
    if (c->head_dim == 0) {
        if (c->hidden_size % c->num_heads)
            return rf_cfg_bad(p, "num_attention_heads", "must divide hidden_size (no head_dim given)");
        c->head_dim = c->hidden_size / c->num_heads;
    }
    if ((uint64_t)c->num_heads * (uint64_t)c->head_dim > INT_MAX)
        return rf_cfg_bad(p, "head_dim", "times num_attention_heads is too large");
    if (c->head_dim % 2) return rf_cfg_bad(p, "head_dim", "must be even (rotary embedding)");
    if (!(c->rms_norm_eps > 0 && c->rms_norm_eps < 1)) return rf_cfg_bad(p, "rms_norm_eps", "must be in (0, 1)");
    if (!(c->partial_rotary > 0 && c->partial_rotary <= 1))
        return rf_cfg_bad(p, "partial_rotary_factor", "must be in (0, 1]");
    int rot = (int)(c->head_dim * c->partial_rotary);
    if (rot % 2) return rf_cfg_bad(p, "partial_rotary_factor", "must rotate an even number of dimensions");
    if (!strcmp(c->rope.type, "longrope") && c->rope.n_factors != rot / 2)
        return rf_cfg_bad(p, "rope_scaling", "longrope factors must have one entry per rotated pair");
    return RF_OK;
}

/* Keys every family has. Size keys are required unless the family's defaults set them. */
static rf_status parse_common(const rf_cfgp *p, rf_config *c, int lenient)
{
    rf_status st;
    json_t *archs = json_object_get(p->top, "architectures");
    if (archs && !json_is_null(archs)) {
        json_t *a0 = json_array_get(archs, 0);
        if (!json_is_array(archs) || (json_array_size(archs) && !json_is_string(a0)))
            return rf_cfg_bad(p, "architectures", "must be a list of strings");
        if (a0 && strlen(json_string_value(a0)) >= sizeof c->architecture) return rf_cfg_bad(p, "architectures", "is too long");
        if (a0) strcpy(c->architecture, json_string_value(a0));
    }
    if ((st = rf_cfg_int(p, "hidden_size", !lenient && !c->hidden_size, 1, &c->hidden_size)) ||
        (st = rf_cfg_int(p, "intermediate_size", !lenient && !c->intermediate_size, 1, &c->intermediate_size)) ||
        (st = rf_cfg_int(p, "num_hidden_layers", !lenient && !c->num_layers, 1, &c->num_layers)) ||
        (st = rf_cfg_int(p, "num_attention_heads", !lenient && !c->num_heads, 1, &c->num_heads)) ||
        (st = rf_cfg_int(p, "vocab_size", !lenient && !c->vocab_size, 1, &c->vocab_size)))
        return st;
    if (!c->num_kv_heads) c->num_kv_heads = c->num_heads;
    /* a wrapper's tie_word_embeddings sits beside text_config (transformers reads the text one first) */
    if (p->top != p->root && json_is_boolean(json_object_get(p->top, "tie_word_embeddings")))
        c->tie_word_embeddings = json_is_true(json_object_get(p->top, "tie_word_embeddings"));
    if ((st = rf_cfg_int(p, "num_key_value_heads", 0, 1, &c->num_kv_heads)) ||
        (st = rf_cfg_int(p, "head_dim", 0, 1, &c->head_dim)) ||
        (st = rf_cfg_bool(p, "tie_word_embeddings", &c->tie_word_embeddings)) ||
        (st = rf_cfg_bool(p, "attention_bias", &c->attention_bias)) ||
        (st = rf_cfg_bool(p, "mlp_bias", &c->mlp_bias)) ||
        (st = rf_cfg_num(p, p->root, "rms_norm_eps", 0, &c->rms_norm_eps)) ||
        (st = rf_cfg_int(p, "max_position_embeddings", 0, 1, &c->max_position_embeddings)) ||
        (st = get_token(p, "bos_token_id", &c->bos_token_id)) ||
        (st = get_token(p, "eos_token_id", &c->eos_token_id)) ||
        (st = get_dtype(p, c)) || (st = get_act(p, c)) || (st = get_fp8(p, c)) ||
        (st = rf_cfg_num(p, p->root, "rope_theta", 0, &c->rope.theta)) ||
        (st = rf_cfg_num(p, p->root, "partial_rotary_factor", 0, &c->partial_rotary)))
        return st;
    if (c->num_layers > RF_MAX_LAYERS && lenient) c->num_layers = RF_MAX_LAYERS;
    /* transformers 5 moves rope_theta and the scaling into rope_parameters (a family whose
     * rope_parameters is per layer type reads it itself) */
    json_t *rp = rf_cfg_get(p, "rope_parameters");
    if (rp && json_is_object(rp) && !json_object_get(rp, "full_attention")) {
        double prf = 0;
        if ((st = rf_cfg_num(p, rp, "partial_rotary_factor", 0, &prf))) return st;
        if (prf > 0) c->partial_rotary = prf;
        return rf_cfg_rope(p, p->root, "rope_parameters", &c->rope);
    }
    return rf_cfg_rope(p, p->root, "rope_scaling", &c->rope);
}

static void set_defaults(rf_config *c)
{
    memset(c, 0, sizeof *c);
    c->bos_token_id = c->eos_token_id = -1;
    c->rms_norm_eps = 1e-6;
    c->rope.theta = 10000.0;
    c->rope.truncate = 1;
    c->partial_rotary = 1;
    c->decoder_sparse_step = 1;
    c->n_group = c->topk_group = 1;
    c->routed_scaling = 1;
    c->torch_dtype = RF_DT_INVALID;
    c->act = RF_ACT_SILU;
}

static rf_status parse_root(rf_cfgp *p, rf_config *c)
{
    rf_status st;
    if ((st = rf_cfg_str(p, p->top, "model_type", 1, c->model_type, sizeof c->model_type))) return st;
    int wrapper = 0;
    const rf_family *f = rf_family_find(c->model_type, &wrapper);
    if (!f) f = &rf_family_generic;
    c->arch = f->arch;
    if (wrapper) {
        json_t *tc = json_object_get(p->top, "text_config");
        if (!json_is_object(tc))
            return rf_err_set(p->err, RF_ERR_FORMAT, "%s: model_type '%s' keeps the text model in 'text_config', "
                              "which is missing or not an object", p->label, c->model_type);
        p->root = tc;
        snprintf(c->tensor_prefix, sizeof c->tensor_prefix, "language_model.");
    }
    if (f->defaults) f->defaults(c);
    int generic = f->arch == RF_ARCH_GENERIC;
    if ((st = parse_common(p, c, generic))) return st;
    if (generic) {
        /* unknown family: whatever sizes the file gives, unchecked; the catalogue works by name */
        if (!c->num_layers) c->num_layers = RF_MAX_LAYERS;
        if (!c->head_dim && c->num_heads && c->hidden_size % c->num_heads == 0) c->head_dim = c->hidden_size / c->num_heads;
        return RF_OK;
    }
    if ((st = check_sizes(p, c))) return st;
    c->rope_theta = c->rope.theta;
    if (f->parse && (st = f->parse(p, c))) return st;
    c->rope_theta = c->rope.theta;
    if (c->attn_scale == 0) c->attn_scale = 1.0 / sqrt((double)c->head_dim);
    for (int l = 0; l < c->num_layers; l++)
        if ((c->layer_flags[l] & RF_LAYER_SLIDING) && c->sliding_window <= 0) c->layer_flags[l] &= (uint8_t)~RF_LAYER_SLIDING;
    return RF_OK;
}

rf_status rf_config_parse(const char *json_text, const char *label, rf_config *out, rf_err *err)
{
    if (!json_text || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_config_parse: NULL argument");
    if (!label) label = "config.json";
    json_error_t je;
    json_t *root = json_loads(json_text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", label, je.line,
                          je.column, je.text);
    rf_config *c = malloc(sizeof *c);
    rf_status st;
    if (!c) {
        st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    } else if (!json_is_object(root)) {
        st = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON object", label);
    } else {
        set_defaults(c);
        rf_cfgp p = {root, root, label, err};
        st = parse_root(&p, c);
    }
    json_decref(root);
    if (st == RF_OK) *out = *c;
    free(c);
    return st;
}

rf_status rf_config_load(const char *model_dir, rf_config *out, rf_err *err)
{
    if (!model_dir || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_config_load: NULL argument");
    size_t n = strlen(model_dir) + sizeof "/config.json";
    char *path = malloc(n);
    if (!path) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    snprintf(path, n, "%s/config.json", model_dir);
    rf_status st;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        struct stat sb;
        if (stat(model_dir, &sb) != 0)
            st = errno == ENOENT ? rf_err_set(err, RF_ERR_NOT_FOUND, "model directory %s does not exist", model_dir)
                                 : rf_err_errno(err, errno, "model directory %s", model_dir);
        else if (!S_ISDIR(sb.st_mode))
            st = rf_err_set(err, RF_ERR_INVALID, "%s is not a directory (give the model directory)", model_dir);
        else if (e == ENOENT)
            st = rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no such file (not a Hugging Face model directory?)", path);
        else
            st = rf_err_errno(err, e, "open %s", path);
        free(path);
        return st;
    }
    /* config.json files are a few kB; a bound keeps a wrong file from being slurped whole. */
    enum { MAX_CONFIG = 16 << 20 };
    char *buf = malloc(MAX_CONFIG + 1);
    size_t len = buf ? fread(buf, 1, MAX_CONFIG + 1, f) : 0;
    if (!buf) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory reading %s", path);
    else if (ferror(f)) st = rf_err_errno(err, errno, "read %s", path);
    else if (len > MAX_CONFIG) st = rf_err_set(err, RF_ERR_FORMAT, "%s: larger than 16 MiB", path);
    else if (memchr(buf, '\0', len)) st = rf_err_set(err, RF_ERR_FORMAT, "%s: contains a NUL byte", path);
    else {
        buf[len] = '\0';
        st = rf_config_parse(buf, path, out, err);
    }
    fclose(f);
    free(buf);
    free(path);
    return st;
}

unsigned rf_config_layer_flags(const rf_config *c, int layer)
{
    if (!c || layer < 0 || layer >= c->num_layers || layer >= RF_MAX_LAYERS) return 0;
    return c->layer_flags[layer];
}

int rf_config_layer_window(const rf_config *c, int layer)
{
    return (rf_config_layer_flags(c, layer) & RF_LAYER_SLIDING) ? c->sliding_window : 0;
}

int rf_config_layer_is_moe(const rf_config *c, int layer)
{
    return c && c->num_experts > 0 && (rf_config_layer_flags(c, layer) & RF_LAYER_MOE) != 0;
}

int rf_config_runnable(const rf_config *c) { return c && c->arch != RF_ARCH_GENERIC && c->arch != RF_ARCH_UNKNOWN; }
