/* config.json of a Hugging Face decoder-only checkpoint -> rf_config.
 *
 * Defaults follow the transformers config classes of each family where a key may legitimately
 * be absent; keys without a sensible default are required and their absence is a format error
 * that names the file and the key. */
#include "common/internal.h"
#include "io/json_internal.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RF_CONFIG_MAX_LAYERS 65536

static const char *const arch_names[] = {
    [RF_ARCH_UNKNOWN] = "unknown", [RF_ARCH_LLAMA] = "llama",     [RF_ARCH_MISTRAL] = "mistral",
    [RF_ARCH_QWEN2] = "qwen2",     [RF_ARCH_QWEN3] = "qwen3",     [RF_ARCH_MIXTRAL] = "mixtral",
    [RF_ARCH_QWEN3_MOE] = "qwen3_moe",
};
#define SUPPORTED_LIST "llama, mistral, qwen2, qwen3, mixtral, qwen3_moe"

const char *rf_arch_name(rf_arch a)
{
    if ((unsigned)a < sizeof arch_names / sizeof arch_names[0]) return arch_names[a];
    return "unknown";
}

static rf_arch arch_from_name(const char *s)
{
    for (int a = RF_ARCH_LLAMA; a <= RF_ARCH_QWEN3_MOE; a++)
        if (!strcmp(s, arch_names[a])) return (rf_arch)a;
    return RF_ARCH_UNKNOWN;
}

/* Parsing context: the JSON object and the label used in every message. */
typedef struct cfgp {
    json_t *root;
    const char *label;
    rf_err *err;
} cfgp;

static rf_status bad(const cfgp *p, const char *key, const char *what)
{
    return rf_err_set(p->err, RF_ERR_FORMAT, "%s: key '%s' %s", p->label, key, what);
}

/* An absent key and an explicit null both mean "use the default". */
static json_t *get(const cfgp *p, const char *key)
{
    json_t *v = json_object_get(p->root, key);
    return json_is_null(v) ? NULL : v;
}

/* Integer in [lo, INT_MAX]; *out keeps its default when the key is absent and !required. */
static rf_status get_int(const cfgp *p, const char *key, int required, int lo, int *out)
{
    json_t *v = get(p, key);
    if (!v) return required ? bad(p, key, "is missing") : RF_OK;
    int64_t x;
    int r = rf_json_int(v, lo, INT_MAX, &x);
    if (r < 0) return bad(p, key, "must be an integer");
    if (r > 0) {
        char what[128];
        if (json_is_integer(v))
            snprintf(what, sizeof what, "is out of range (%lld; must be in [%d, %d])", (long long)json_integer_value(v), lo,
                     INT_MAX);
        else
            snprintf(what, sizeof what, "is out of range (%.17g; must be in [%d, %d])", json_real_value(v), lo, INT_MAX);
        return bad(p, key, what);
    }
    *out = (int)x;
    return RF_OK;
}

static rf_status get_num(const cfgp *p, json_t *obj, const char *key, int required, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_null(v)) v = NULL;
    if (!v) return required ? bad(p, key, "is missing") : RF_OK;
    if (!json_is_number(v)) return bad(p, key, "must be a number");
    *out = json_number_value(v);
    return RF_OK;
}

static rf_status get_bool(const cfgp *p, const char *key, int *out)
{
    json_t *v = get(p, key);
    if (!v) return RF_OK;
    if (!json_is_boolean(v)) return bad(p, key, "must be true or false");
    *out = json_is_true(v);
    return RF_OK;
}

static rf_status get_str(const cfgp *p, json_t *obj, const char *key, int required, char *out, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_null(v)) v = NULL;
    if (!v) return required ? bad(p, key, "is missing") : RF_OK;
    if (!json_is_string(v)) return bad(p, key, "must be a string");
    const char *s = json_string_value(v);
    if (strlen(s) >= cap) return bad(p, key, "is too long");
    memcpy(out, s, strlen(s) + 1);
    return RF_OK;
}

/* bos/eos_token_id: an integer, or a list whose first element is taken (generation uses any). */
static rf_status get_token(const cfgp *p, const char *key, int *out)
{
    json_t *v = get(p, key);
    if (json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : NULL;
    if (!v) return RF_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
        return bad(p, key, "must be a non-negative integer or a list of them");
    *out = (int)json_integer_value(v);
    return RF_OK;
}

static rf_status get_dtype(const cfgp *p, rf_dtype *out)
{
    /* transformers >= 4.56 writes "dtype"; older ones "torch_dtype". */
    const char *key = get(p, "torch_dtype") ? "torch_dtype" : "dtype";
    char s[32] = "";
    rf_status st = get_str(p, p->root, key, 0, s, sizeof s);
    if (st) return st;
    if (!strcmp(s, "bfloat16")) *out = RF_DT_BF16;
    else if (!strcmp(s, "float16")) *out = RF_DT_F16;
    else if (!strcmp(s, "float32")) *out = RF_DT_F32;
    return RF_OK;
}

static rf_status get_rope(const cfgp *p, rf_config *c)
{
    rf_status st;
    /* transformers 5 moves rope_theta and the scaling into "rope_parameters". */
    json_t *rp = get(p, "rope_parameters");
    if (rp && !json_is_object(rp)) return bad(p, "rope_parameters", "must be an object");
    if ((st = get_num(p, p->root, "rope_theta", 0, &c->rope_theta))) return st;
    if (rp && (st = get_num(p, rp, "rope_theta", 0, &c->rope_theta))) return st;
    if (!(c->rope_theta > 0)) return bad(p, "rope_theta", "must be positive");

    json_t *rs = get(p, "rope_scaling");
    const char *rs_key = "rope_scaling";
    if (!rs && rp) rs = rp, rs_key = "rope_parameters";
    if (!rs) return RF_OK;
    if (!json_is_object(rs)) return bad(p, rs_key, "must be null or an object");
    const char *tkey = json_object_get(rs, "rope_type") ? "rope_type" : "type";
    if ((st = get_str(p, rs, tkey, 0, c->rope_type, sizeof c->rope_type))) return st;
    if (!strcmp(c->rope_type, "default")) c->rope_type[0] = '\0';
    int llama3 = !strcmp(c->rope_type, "llama3");
    if ((st = get_num(p, rs, "factor", llama3, &c->rope_factor))) return st;
    if (!llama3) return RF_OK;
    double omax = 0;
    if ((st = get_num(p, rs, "low_freq_factor", 1, &c->rope_low_freq_factor)) ||
        (st = get_num(p, rs, "high_freq_factor", 1, &c->rope_high_freq_factor)) ||
        (st = get_num(p, rs, "original_max_position_embeddings", 1, &omax)))
        return st;
    if (!(c->rope_factor > 0) || !(c->rope_low_freq_factor > 0) ||
        !(c->rope_high_freq_factor > c->rope_low_freq_factor) || !(omax >= 1 && omax <= INT_MAX))
        return bad(p, rs_key, "has invalid llama3 parameters (need factor > 0, "
                              "high_freq_factor > low_freq_factor > 0, original_max_position_embeddings >= 1)");
    c->rope_original_max_pos = (int)omax;
    return RF_OK;
}

static rf_status get_moe(const cfgp *p, rf_config *c)
{
    rf_status st;
    if (c->arch == RF_ARCH_MIXTRAL) {
        if ((st = get_int(p, "num_local_experts", 1, 1, &c->num_experts))) return st;
        /* Mixtral's experts use intermediate_size; its softmax over the chosen top-k equals
         * renormalising the top-k probabilities. */
        c->moe_intermediate_size = c->intermediate_size;
        c->norm_topk_prob = 1;
    } else {
        if ((st = get_int(p, "num_experts", 1, 1, &c->num_experts)) ||
            (st = get_int(p, "moe_intermediate_size", 1, 1, &c->moe_intermediate_size)) ||
            (st = get_bool(p, "norm_topk_prob", &c->norm_topk_prob)) ||
            (st = get_int(p, "decoder_sparse_step", 0, 1, &c->decoder_sparse_step)))
            return st;
        json_t *ml = get(p, "mlp_only_layers");
        if (ml && !json_is_array(ml)) return bad(p, "mlp_only_layers", "must be a list of integers");
        for (size_t i = 0; ml && i < json_array_size(ml); i++) {
            json_t *v = json_array_get(ml, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return bad(p, "mlp_only_layers", "must be a list of non-negative integers");
            json_int_t l = json_integer_value(v);
            if (l >= c->num_layers) continue; /* names no layer: harmless */
            if (l >= 256)
                return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "%s: mlp_only_layers entry %lld: only layers < 256 supported",
                                  p->label, (long long)l);
            c->mlp_only_mask[l / 64] |= 1ull << (l % 64);
        }
    }
    if ((st = get_int(p, "num_experts_per_tok", 1, 1, &c->experts_per_tok))) return st;
    if (c->experts_per_tok > c->num_experts)
        return bad(p, "num_experts_per_tok", "exceeds the number of experts");
    return RF_OK;
}

/* Sliding-window attention with transformers' rules (see rf_config in ramfit.h): the model
 * classes of mistral, mixtral and qwen3_moe (a MixtralModel) mask every layer when the config's
 * sliding_window survives, and the Qwen configs drop it unless use_sliding_window. */
static rf_status get_window(const cfgp *p, rf_config *c)
{
    int w = 0, use = 0, from = 28;
    rf_status st;
    int all = c->arch == RF_ARCH_MISTRAL || c->arch == RF_ARCH_MIXTRAL || c->arch == RF_ARCH_QWEN3_MOE;
    int qwen = c->arch == RF_ARCH_QWEN2 || c->arch == RF_ARCH_QWEN3 || c->arch == RF_ARCH_QWEN3_MOE;
    if (!all && !qwen) return RF_OK; /* llama has no window */
    if ((st = get_int(p, "sliding_window", 0, 0, &w))) return st;
    if (!w) return RF_OK;
    if (qwen && ((st = get_bool(p, "use_sliding_window", &use)) || (st = get_int(p, "max_window_layers", 0, 0, &from))))
        return st;
    if (qwen && !use) return RF_OK;
    json_t *lt = all ? NULL : get(p, "layer_types");
    if (lt && (!json_is_array(lt) || json_array_size(lt) != (size_t)c->num_layers))
        return bad(p, "layer_types", "must be a list of one string per layer");
    for (int l = 0; l < c->num_layers; l++) {
        const char *t = lt ? json_string_value(json_array_get(lt, (size_t)l)) : NULL;
        if (lt && !t) return bad(p, "layer_types", "must be a list of one string per layer");
        if (!(all || (t ? strcmp(t, "sliding_attention") == 0 : l >= from))) continue;
        if (l >= 256)
            return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "%s: sliding-window layer %d: only layers < 256 supported",
                              p->label, l);
        c->sliding_mask[l / 64] |= 1ull << (l % 64);
    }
    c->sliding_window = w;
    return RF_OK;
}

static rf_status check_sizes(const cfgp *p, rf_config *c)
{
    if (c->num_kv_heads > c->num_heads || c->num_heads % c->num_kv_heads)
        return bad(p, "num_key_value_heads", "must divide num_attention_heads");
    if (c->head_dim == 0) {
        if (c->hidden_size % c->num_heads)
            return bad(p, "num_attention_heads", "must divide hidden_size (no head_dim given)");
        c->head_dim = c->hidden_size / c->num_heads;
    }
    if ((uint64_t)c->num_heads * (uint64_t)c->head_dim > INT_MAX)
        return bad(p, "head_dim", "times num_attention_heads is too large");
    if (c->head_dim % 2) return bad(p, "head_dim", "must be even (rotary embedding)");
    if (!(c->rms_norm_eps > 0 && c->rms_norm_eps < 1)) return bad(p, "rms_norm_eps", "must be in (0, 1)");
    return RF_OK;
}

static rf_status parse_root(const cfgp *p, rf_config *c)
{
    rf_status st;
    if ((st = get_str(p, p->root, "model_type", 1, c->model_type, sizeof c->model_type))) return st;
    c->arch = arch_from_name(c->model_type);
    if (c->arch == RF_ARCH_UNKNOWN)
        return rf_err_set(p->err, RF_ERR_UNSUPPORTED, "unsupported architecture '%s' in %s (supported: %s)",
                          c->model_type, p->label, SUPPORTED_LIST);
    if (c->arch == RF_ARCH_MIXTRAL) c->rope_theta = 1e6, c->rms_norm_eps = 1e-5; /* its HF defaults */
    json_t *archs = get(p, "architectures");
    if (archs) {
        json_t *a0 = json_array_get(archs, 0);
        if (!json_is_array(archs) || (json_array_size(archs) && !json_is_string(a0)))
            return bad(p, "architectures", "must be a list of strings");
        if (a0 && strlen(json_string_value(a0)) >= sizeof c->architecture)
            return bad(p, "architectures", "is too long");
        if (a0) strcpy(c->architecture, json_string_value(a0));
    }
    if ((st = get_int(p, "hidden_size", 1, 1, &c->hidden_size)) ||
        (st = get_int(p, "intermediate_size", 1, 1, &c->intermediate_size)) ||
        (st = get_int(p, "num_hidden_layers", 1, 1, &c->num_layers)) ||
        (st = get_int(p, "num_attention_heads", 1, 1, &c->num_heads)) ||
        (st = get_int(p, "vocab_size", 1, 1, &c->vocab_size)))
        return st;
    /* Per-layer state is allocated from this number before the checkpoint can contradict it: a
     * bound keeps 1000000000 from ending as "out of memory" instead of the missing layers. */
    if (c->num_layers > RF_CONFIG_MAX_LAYERS) {
        char what[128];
        snprintf(what, sizeof what, "is out of range (%d; ramfit supports at most %d layers)", c->num_layers,
                 RF_CONFIG_MAX_LAYERS);
        return bad(p, "num_hidden_layers", what);
    }
    c->num_kv_heads = c->num_heads;
    if ((st = get_int(p, "num_key_value_heads", 0, 1, &c->num_kv_heads)) ||
        (st = get_int(p, "head_dim", 0, 1, &c->head_dim)) ||
        (st = get_bool(p, "tie_word_embeddings", &c->tie_word_embeddings)) ||
        (st = get_bool(p, "attention_bias", &c->attention_bias)) ||
        (st = get_num(p, p->root, "rms_norm_eps", 0, &c->rms_norm_eps)) ||
        (st = get_int(p, "max_position_embeddings", 0, 1, &c->max_position_embeddings)) ||
        (st = get_token(p, "bos_token_id", &c->bos_token_id)) ||
        (st = get_token(p, "eos_token_id", &c->eos_token_id)) ||
        (st = get_dtype(p, &c->torch_dtype)) || (st = get_rope(p, c)))
        return st;
    if (c->arch == RF_ARCH_QWEN2) c->attention_bias = 1; /* Qwen2 always has q/k/v biases */
    if ((st = check_sizes(p, c)) || (st = get_window(p, c))) return st;
    if (c->arch == RF_ARCH_MIXTRAL || c->arch == RF_ARCH_QWEN3_MOE) return get_moe(p, c);
    return RF_OK;
}

static void set_defaults(rf_config *c)
{
    memset(c, 0, sizeof *c);
    c->bos_token_id = c->eos_token_id = -1;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->decoder_sparse_step = 1;
    c->torch_dtype = RF_DT_INVALID;
}

rf_status rf_config_parse(const char *json_text, const char *label, rf_config *out, rf_err *err)
{
    if (!json_text || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_config_parse: NULL argument");
    if (!label) label = "config.json";
    json_t *root;
    rf_status pst = rf_json_parse(json_text, strlen(json_text), label, JSON_REJECT_DUPLICATES, &root, err);
    if (pst) return pst;
    rf_config c;
    set_defaults(&c);
    cfgp p = {root, label, err};
    rf_status st;
    if (!json_is_object(root)) {
        st = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON object", label);
    } else {
        st = parse_root(&p, &c);
    }
    json_decref(root);
    if (st == RF_OK) *out = c;
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

int rf_config_layer_window(const rf_config *c, int layer)
{
    if (!c || layer < 0 || layer >= c->num_layers || layer >= 256) return 0;
    return (c->sliding_mask[layer / 64] >> (layer % 64) & 1) ? c->sliding_window : 0;
}

int rf_config_layer_is_moe(const rf_config *c, int layer)
{
    if (!c || layer < 0 || layer >= c->num_layers || c->num_experts <= 0) return 0;
    if (c->arch == RF_ARCH_MIXTRAL) return 1;
    if (c->arch != RF_ARCH_QWEN3_MOE) return 0;
    if (layer < 256 && (c->mlp_only_mask[layer / 64] >> (layer % 64) & 1)) return 0;
    int step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
    return (layer + 1) % step == 0;
}
