/* The inference engine: loads a checkpoint (Hugging Face BF16/F16/F32 or MLX affine-quantized
 * with per-module bits/group size) by mmapping it, and runs the decoder forward pass for the
 * llama, mistral, qwen2, qwen3, mixtral and qwen3_moe families on batches of tokens with a
 * float32 KV cache. Weights are never converted as a whole: the kernels read the mapped
 * bf16/f16/f32/packed rows. Only 1-D tensors (norm weights, biases) are copied to float32. */
#include "engine/engine_internal.h"
#include "engine/gguf_weights.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_EXPERTS = 512, NAME_MAX_LEN = 256 };

typedef struct lin {
    rf_wmat w;
    float *bias;  /* NULL when the layer has none */
} lin;

typedef struct layer {
    float *attn_norm, *mlp_norm, *q_norm, *k_norm;
    lin q, k, v, o;
    int moe;
    lin gate, up, down;        /* dense MLP */
    rf_wmat router;
    rf_wmat *eg, *eu, *ed;     /* per-expert views (into stacked banks or per-expert tensors) */
    int qk_perm;               /* GGUF llama: q/k rows interleaved per head (rf_ggml_unpermute_heads) */
} layer;

struct rf_engine {
    rf_config cfg;
    char *dir;
    rf_st *st;
    rf_ggm *gg;                /* GGUF hook: a GGUF file instead of st (engine/gguf_weights.c) */
    rf_pool *pool;
    json_t *quant;             /* config.json "quantization" (NULL: none) */
    int dim, nh, nkv, hd, vocab, ffn, moe_ffn, nexp, topk, softmax_first;
    float eps;
    rf_wmat embed, lm_head;
    float *final_norm;
    layer *layers;
    int max_ctx, max_batch, pos;
    float *rope_cos, *rope_sin;          /* [max_ctx][hd/2] */
    float *kcache, *vcache;              /* [layers][max_ctx][nkv*hd] */
    /* per-batch scratch */
    float *x, *h, *q, *k, *v, *att, *tmp, *g, *u;
    float *rl, *rw, *xe, *ye;            /* MoE: router logits/weights, gathered tokens, outputs */
    int *ri, *etok;
    float *att_scratch;                  /* [threads][max_ctx] */
    int nthreads;
};

/* ------------------------------------------------------------------ loading */

static rf_status need_tensor(rf_engine *e, const char *name, const rf_tensor **out, rf_err *err)
{
    *out = rf_st_find(e->st, name);
    if (!*out) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: tensor %s is missing", e->dir, name);
    return RF_OK;
}

static rf_status shape_error(rf_engine *e, const rf_tensor *t, const char *want, rf_err *err)
{
    char got[128];
    int n = snprintf(got, sizeof got, "[");
    for (int i = 0; i < t->ndim && n < (int)sizeof got - 24; i++)
        n += snprintf(got + n, sizeof got - (size_t)n, "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
    snprintf(got + n, sizeof got - (size_t)n, "]");
    return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s has shape %s %s, expected %s", e->dir, t->name, got,
                      rf_dtype_name(t->dtype), want);
}

/* GGUF hook: tensors by Hugging Face name in either source. */
static int has_tensor(const rf_engine *e, const char *name)
{
    return e->gg ? rf_ggm_has(e->gg, name) : rf_st_find(e->st, name) != NULL;
}

/* A 1-D float tensor of n elements as an owned float32 array. */
static rf_status load_vec(rf_engine *e, const char *name, uint64_t n, float **out, rf_err *err)
{
    if (e->gg) return rf_ggm_vec(e->gg, name, n, out, err); /* GGUF hook */
    const rf_tensor *t;
    rf_status s = need_tensor(e, name, &t, err);
    if (s) return s;
    char want[64];
    snprintf(want, sizeof want, "[%llu] float", (unsigned long long)n);
    if (t->ndim != 1 || t->shape[0] != n || !rf_dtype_is_float(t->dtype)) return shape_error(e, t, want, err);
    *out = malloc(n * sizeof(float));
    if (!*out) return rf_err_set(err, RF_ERR_NOMEM, "out of memory loading %s", name);
    return rf_convert_to_f32(t->dtype, t->data, *out, n, err);
}

/* bits/gs of an MLX module: its own entry in "quantization", else the global values. */
static rf_status quant_params(rf_engine *e, const char *module, int *bits, int *gs, rf_err *err)
{
    if (!e->quant)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: %s.scales exists but config.json has no \"quantization\"", e->dir,
                          module);
    json_t *q = json_object_get(e->quant, module);
    if (!json_is_object(q)) q = e->quant;
    json_t *b = json_object_get(q, "bits"), *g = json_object_get(q, "group_size");
    if (!json_is_integer(b) || !json_is_integer(g))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: config.json quantization for %s lacks bits/group_size", e->dir,
                          module);
    *bits = (int)json_integer_value(b);
    *gs = (int)json_integer_value(g);
    return RF_OK;
}

/* The weight of MODULE: nexp stacked experts (0: a plain matrix) of out x in. A module is
 * MLX-quantized iff MODULE.scales exists (mlx-lm's rule). */
static rf_status load_matrix(rf_engine *e, const char *module, int nexp, uint64_t out, uint64_t in, rf_wmat *w,
                             rf_err *err)
{
    char name[NAME_MAX_LEN], want[128];
    const rf_tensor *t, *sc, *bi;
    if (e->gg) return rf_ggm_matrix(e->gg, module, nexp, out, in, w, err); /* GGUF hook */
    snprintf(name, sizeof name, "%s.weight", module);
    rf_status s = need_tensor(e, name, &t, err);
    if (s) return s;
    int nd = nexp ? 3 : 2, lead = nexp ? 1 : 0;
    uint64_t rows = out * (uint64_t)(nexp ? nexp : 1);
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = in;
    w->data = t->data;
    snprintf(name, sizeof name, "%s.scales", module);
    sc = rf_st_find(e->st, name);
    if (!sc) {
        snprintf(want, sizeof want, "%s%llu, %llu] float", nexp ? "[E, " : "[", (unsigned long long)out,
                 (unsigned long long)in);
        if (t->ndim != nd || (nexp && t->shape[0] != (uint64_t)nexp) || t->shape[lead] != out ||
            t->shape[lead + 1] != in || !rf_dtype_is_float(t->dtype) || t->dtype == RF_DT_F64)
            return shape_error(e, t, want, err);
        w->dtype = t->dtype;
        return rf_wmat_check(w, t->name, err);
    }
    snprintf(name, sizeof name, "%s.biases", module);
    if ((s = need_tensor(e, name, &bi, err))) return s;
    if ((s = quant_params(e, module, &w->bits, &w->gs, err))) return s;
    w->dtype = RF_DT_U32;
    w->sdtype = sc->dtype;
    w->scales = sc->data;
    w->biases = bi->data;
    if (w->bits <= 0 || w->bits > 8 || w->gs <= 0 || in % (uint64_t)w->gs || (in * (uint64_t)w->bits) % 32)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: %s: %llu columns do not fit bits %d group size %d", e->dir, module,
                          (unsigned long long)in, w->bits, w->gs);
    uint64_t wc = in * (uint64_t)w->bits / 32, gc = in / (uint64_t)w->gs;
    snprintf(want, sizeof want, "%s%llu, %llu] U32 (bits %d)", nexp ? "[E, " : "[", (unsigned long long)out,
             (unsigned long long)wc, w->bits);
    if (t->ndim != nd || (nexp && t->shape[0] != (uint64_t)nexp) || t->shape[lead] != out ||
        t->shape[lead + 1] != wc || t->dtype != RF_DT_U32)
        return shape_error(e, t, want, err);
    const rf_tensor *aux[2] = {sc, bi};
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "%s%llu, %llu] float (group size %d)", nexp ? "[E, " : "[",
                 (unsigned long long)out, (unsigned long long)gc, w->gs);
        const rf_tensor *a = aux[i];
        if (a->ndim != nd || (nexp && a->shape[0] != (uint64_t)nexp) || a->shape[lead] != out ||
            a->shape[lead + 1] != gc || a->dtype != sc->dtype)
            return shape_error(e, a, want, err);
    }
    return rf_wmat_check(w, t->name, err);
}

static rf_status load_lin(rf_engine *e, const char *module, uint64_t out, uint64_t in, int bias_required, lin *l,
                          rf_err *err)
{
    rf_status s = load_matrix(e, module, 0, out, in, &l->w, err);
    if (s) return s;
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.bias", module);
    if (!bias_required && !has_tensor(e, name)) return RF_OK;
    return load_vec(e, name, out, &l->bias, err);
}

/* The experts of one projection: MLX stacks them in MODULE (a switch_mlp path); Hugging Face
 * has one tensor per expert, named by fmt with the expert index. */
static rf_status load_experts(rf_engine *e, const char *stacked, const char *fmt, int li, uint64_t out,
                              uint64_t in, rf_wmat **views, rf_err *err)
{
    *views = calloc((size_t)e->nexp, sizeof **views);
    if (!*views) return rf_err_set(err, RF_ERR_NOMEM, "out of memory loading experts");
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.weight", stacked);
    if (has_tensor(e, name)) {
        rf_wmat bank;
        rf_status s = load_matrix(e, stacked, e->nexp, out, in, &bank, err);
        if (s) return s;
        for (int x = 0; x < e->nexp; x++) (*views)[x] = rf_wmat_rows(&bank, (uint64_t)x * out, out);
        return RF_OK;
    }
    for (int x = 0; x < e->nexp; x++) {
        snprintf(name, sizeof name, fmt, li, x);
        rf_status s = load_matrix(e, name, 0, out, in, &(*views)[x], err);
        if (s) return s;
    }
    return RF_OK;
}

static rf_status load_layer(rf_engine *e, int li, rf_err *err)
{
    layer *L = &e->layers[li];
    char p[96], name[NAME_MAX_LEN];
    rf_status s;
    uint64_t dim = (uint64_t)e->dim, qd = (uint64_t)e->nh * e->hd, kvd = (uint64_t)e->nkv * e->hd;
    int qkv_bias = e->cfg.attention_bias || e->cfg.arch == RF_ARCH_QWEN2;
    L->qk_perm = e->gg && rf_ggm_qk_permuted(e->gg);
#define TRY(x) do { if ((s = (x)) != RF_OK) return s; } while (0)
#define NAME(fmt) (snprintf(name, sizeof name, fmt, li), name)
    TRY(load_vec(e, NAME("model.layers.%d.input_layernorm.weight"), dim, &L->attn_norm, err));
    TRY(load_vec(e, NAME("model.layers.%d.post_attention_layernorm.weight"), dim, &L->mlp_norm, err));
    snprintf(p, sizeof p, "model.layers.%d.self_attn", li);
    snprintf(name, sizeof name, "%s.q_proj", p);
    TRY(load_lin(e, name, qd, dim, qkv_bias, &L->q, err));
    snprintf(name, sizeof name, "%s.k_proj", p);
    TRY(load_lin(e, name, kvd, dim, qkv_bias, &L->k, err));
    snprintf(name, sizeof name, "%s.v_proj", p);
    TRY(load_lin(e, name, kvd, dim, qkv_bias, &L->v, err));
    snprintf(name, sizeof name, "%s.o_proj", p);
    TRY(load_lin(e, name, dim, qd, 0, &L->o, err));
    if (e->cfg.arch == RF_ARCH_QWEN3 || e->cfg.arch == RF_ARCH_QWEN3_MOE) {
        TRY(load_vec(e, NAME("model.layers.%d.self_attn.q_norm.weight"), (uint64_t)e->hd, &L->q_norm, err));
        TRY(load_vec(e, NAME("model.layers.%d.self_attn.k_norm.weight"), (uint64_t)e->hd, &L->k_norm, err));
    }
    L->moe = rf_config_layer_is_moe(&e->cfg, li);
    if (!L->moe) {
        snprintf(p, sizeof p, "model.layers.%d.mlp", li);
        snprintf(name, sizeof name, "%s.gate_proj", p);
        TRY(load_lin(e, name, (uint64_t)e->ffn, dim, 0, &L->gate, err));
        snprintf(name, sizeof name, "%s.up_proj", p);
        TRY(load_lin(e, name, (uint64_t)e->ffn, dim, 0, &L->up, err));
        snprintf(name, sizeof name, "%s.down_proj", p);
        TRY(load_lin(e, name, dim, (uint64_t)e->ffn, 0, &L->down, err));
        return RF_OK;
    }
    int mixtral = e->cfg.arch == RF_ARCH_MIXTRAL;
    snprintf(p, sizeof p, "model.layers.%d.%s", li, mixtral ? "block_sparse_moe" : "mlp");
    snprintf(name, sizeof name, "%s.gate", p);
    TRY(load_matrix(e, name, 0, (uint64_t)e->nexp, dim, &L->router, err));
    uint64_t f = (uint64_t)e->moe_ffn;
    const char *fg = mixtral ? "model.layers.%d.block_sparse_moe.experts.%d.w1" : "model.layers.%d.mlp.experts.%d.gate_proj";
    const char *fu = mixtral ? "model.layers.%d.block_sparse_moe.experts.%d.w3" : "model.layers.%d.mlp.experts.%d.up_proj";
    const char *fd = mixtral ? "model.layers.%d.block_sparse_moe.experts.%d.w2" : "model.layers.%d.mlp.experts.%d.down_proj";
    snprintf(name, sizeof name, "%s.switch_mlp.gate_proj", p);
    TRY(load_experts(e, name, fg, li, f, dim, &L->eg, err));
    snprintf(name, sizeof name, "%s.switch_mlp.up_proj", p);
    TRY(load_experts(e, name, fu, li, f, dim, &L->eu, err));
    snprintf(name, sizeof name, "%s.switch_mlp.down_proj", p);
    TRY(load_experts(e, name, fd, li, dim, f, &L->ed, err));
#undef NAME
#undef TRY
    return RF_OK;
}

static rf_status check_config(rf_engine *e, rf_err *err)
{
    const rf_config *c = &e->cfg;
    switch (c->arch) {
    case RF_ARCH_LLAMA: case RF_ARCH_MISTRAL: case RF_ARCH_QWEN2: case RF_ARCH_QWEN3:
    case RF_ARCH_MIXTRAL: case RF_ARCH_QWEN3_MOE: break;
    default: return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: the engine cannot run architecture %s", e->dir, c->model_type);
    }
    e->dim = c->hidden_size;
    e->nh = c->num_heads;
    e->nkv = c->num_kv_heads > 0 ? c->num_kv_heads : c->num_heads;
    e->hd = c->head_dim > 0 ? c->head_dim : (c->num_heads > 0 ? c->hidden_size / c->num_heads : 0);
    e->vocab = c->vocab_size;
    e->ffn = c->intermediate_size;
    e->moe_ffn = c->moe_intermediate_size > 0 ? c->moe_intermediate_size : c->intermediate_size;
    e->nexp = c->num_experts;
    e->topk = c->experts_per_tok;
    e->softmax_first = c->arch == RF_ARCH_QWEN3_MOE;
    e->eps = (float)(c->rms_norm_eps > 0 ? c->rms_norm_eps : 1e-6);
    if (e->dim <= 0 || e->nh <= 0 || e->hd <= 0 || e->vocab <= 0 || c->num_layers <= 0 || e->nh % e->nkv)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: config.json: inconsistent sizes (hidden %d, heads %d/%d, head_dim "
                          "%d, vocab %d, layers %d)", e->dir, e->dim, e->nh, e->nkv, e->hd, e->vocab, c->num_layers);
    if (e->hd % 2) return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: odd head_dim %d", e->dir, e->hd);
    if (e->nexp > 0 && (e->nexp > MAX_EXPERTS || e->topk <= 0 || e->topk > e->nexp))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: %d experts, %d per token: not supported", e->dir, e->nexp, e->topk);
    return RF_OK;
}

static rf_status read_quant_config(rf_engine *e, rf_err *err)
{
    size_t n = strlen(e->dir) + 16;
    char *path = malloc(n);
    if (!path) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    snprintf(path, n, "%s/config.json", e->dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    free(path);
    if (!root) return rf_err_set(err, RF_ERR_FORMAT, "%s/config.json: %s (line %d)", e->dir, je.text, je.line);
    json_t *q = json_object_get(root, "quantization");
    if (!json_is_object(q)) q = json_object_get(root, "quantization_config");
    if (json_is_object(q)) e->quant = json_incref(q);
    json_decref(root);
    return RF_OK;
}

static void *alloc_f(uint64_t n, int *fail)
{
    void *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *fail = 1;
    return p;
}

static rf_status alloc_state(rf_engine *e, rf_err *err)
{
    uint64_t B = (uint64_t)e->max_batch, C = (uint64_t)e->max_ctx, L = (uint64_t)e->cfg.num_layers;
    uint64_t qd = (uint64_t)e->nh * e->hd, kvd = (uint64_t)e->nkv * e->hd, dim = (uint64_t)e->dim;
    uint64_t f = (uint64_t)(e->ffn > e->moe_ffn ? e->ffn : e->moe_ffn), wide = qd > dim ? qd : dim;
    int fail = 0;
    e->rope_cos = alloc_f(C * (uint64_t)e->hd / 2, &fail);
    e->rope_sin = alloc_f(C * (uint64_t)e->hd / 2, &fail);
    e->kcache = alloc_f(L * C * kvd, &fail);
    e->vcache = alloc_f(L * C * kvd, &fail);
    e->x = alloc_f(B * dim, &fail);
    e->h = alloc_f(B * dim, &fail);
    e->q = alloc_f(B * qd, &fail);
    e->k = alloc_f(B * kvd, &fail);
    e->v = alloc_f(B * kvd, &fail);
    e->att = alloc_f(B * qd, &fail);
    e->tmp = alloc_f(B * wide, &fail);
    e->g = alloc_f(B * f, &fail);
    e->u = alloc_f(B * f, &fail);
    e->att_scratch = alloc_f((uint64_t)e->nthreads * C, &fail);
    if (e->nexp > 0) {
        e->rl = alloc_f(B * (uint64_t)e->nexp, &fail);
        e->rw = alloc_f(B * (uint64_t)e->topk, &fail);
        e->xe = alloc_f(B * dim, &fail);
        e->ye = alloc_f(B * dim, &fail);
        e->ri = calloc(B * (uint64_t)e->topk, sizeof(int));
        e->etok = calloc(B * 2, sizeof(int));
        if (!e->ri || !e->etok) fail = 1;
    }
    if (fail)
        return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory for a %d-position KV cache and %d-token batches",
                          e->dir, e->max_ctx, e->max_batch);
    double inv[4096];
    if (e->hd / 2 > 4096) return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: head_dim %d is too large", e->dir, e->hd);
    rf_status s = rf_rope_inv_freq(&e->cfg, e->hd, inv, err);
    if (s) return rf_err_prefix(err, "%s", e->dir);
    int h2 = e->hd / 2;
    for (uint64_t p = 0; p < C; p++)
        for (int i = 0; i < h2; i++) {
            double a = (double)p * inv[i];
            e->rope_cos[p * (uint64_t)h2 + (uint64_t)i] = (float)cos(a);
            e->rope_sin[p * (uint64_t)h2 + (uint64_t)i] = (float)sin(a);
        }
    return RF_OK;
}

rf_status rf_engine_open(const char *model_dir, const rf_engine_opts *opts, rf_engine **out, rf_err *err)
{
    *out = NULL;
    rf_engine *e = calloc(1, sizeof *e);
    if (!e || !(e->dir = strdup(model_dir))) {
        free(e);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory opening %s", model_dir);
    }
    rf_status s;
    if (rf_ggm_is_gguf(model_dir)) { /* GGUF hook: config and weights from the file */
        if ((s = rf_ggm_open(model_dir, &e->gg, err))) goto fail;
        e->cfg = *rf_ggm_config(e->gg);
        if ((s = check_config(e, err))) goto fail;
    } else if ((s = rf_config_load(model_dir, &e->cfg, err)) || (s = check_config(e, err)) ||
               (s = read_quant_config(e, err)) || (s = rf_st_open(model_dir, &e->st, err))) {
        goto fail;
    }
    int mp = e->cfg.max_position_embeddings > 0 ? e->cfg.max_position_embeddings : 2048;
    e->max_ctx = opts && opts->max_ctx > 0 ? opts->max_ctx : (mp < 4096 ? mp : 4096);
    e->max_batch = opts && opts->max_batch > 0 ? opts->max_batch : 256;
    if (e->max_ctx > (1 << 24) || e->max_batch > (1 << 16)) {
        s = rf_err_set(err, RF_ERR_INVALID, "context %d / batch %d too large", e->max_ctx, e->max_batch);
        goto fail;
    }
    if ((s = rf_pool_create(opts && opts->threads > 0 ? opts->threads : 2, &e->pool, err))) goto fail;
    e->nthreads = rf_pool_threads(e->pool);
    uint64_t dim = (uint64_t)e->dim, V = (uint64_t)e->vocab;
    if ((s = load_matrix(e, "model.embed_tokens", 0, V, dim, &e->embed, err))) goto fail;
    if (has_tensor(e, "lm_head.weight")) {
        if ((s = load_matrix(e, "lm_head", 0, V, dim, &e->lm_head, err))) goto fail;
    } else if (e->cfg.tie_word_embeddings || e->cfg.tie_word_embeddings < 0) {
        e->lm_head = e->embed;
    } else {
        s = rf_err_set(err, RF_ERR_NOT_FOUND, "%s: tensor lm_head.weight is missing and embeddings are not tied", e->dir);
        goto fail;
    }
    if ((s = load_vec(e, "model.norm.weight", dim, &e->final_norm, err))) goto fail;
    e->layers = calloc((size_t)e->cfg.num_layers, sizeof *e->layers);
    if (!e->layers) { s = rf_err_set(err, RF_ERR_NOMEM, "out of memory"); goto fail; }
    for (int l = 0; l < e->cfg.num_layers; l++)
        if ((s = load_layer(e, l, err))) goto fail;
    {
        /* a config that names fewer layers than the checkpoint holds would run a truncated model */
        char extra[96];
        snprintf(extra, sizeof extra, "model.layers.%d.input_layernorm.weight", e->cfg.num_layers);
        if (has_tensor(e, extra)) {
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: the checkpoint has tensor %s but config.json says "
                           "num_hidden_layers %d", e->dir, extra, e->cfg.num_layers);
            goto fail;
        }
    }
    if ((s = alloc_state(e, err))) goto fail;
    *out = e;
    return RF_OK;
fail:
    rf_engine_free(e);
    return s;
}

void rf_engine_free(rf_engine *e)
{
    if (!e) return;
    if (e->layers)
        for (int l = 0; l < e->cfg.num_layers; l++) {
            layer *L = &e->layers[l];
            free(L->attn_norm); free(L->mlp_norm); free(L->q_norm); free(L->k_norm);
            free(L->q.bias); free(L->k.bias); free(L->v.bias); free(L->o.bias);
            free(L->gate.bias); free(L->up.bias); free(L->down.bias);
            free(L->eg); free(L->eu); free(L->ed);
        }
    free(e->layers);
    free(e->final_norm);
    float *bufs[] = {e->rope_cos, e->rope_sin, e->kcache, e->vcache, e->x, e->h, e->q, e->k, e->v, e->att,
                     e->tmp, e->g, e->u, e->rl, e->rw, e->xe, e->ye, e->att_scratch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(e->ri);
    free(e->etok);
    if (e->quant) json_decref(e->quant);
    rf_pool_free(e->pool);
    rf_st_close(e->st);
    rf_ggm_free(e->gg);
    free(e->dir);
    free(e);
}

const rf_config *rf_engine_config(const rf_engine *e) { return &e->cfg; }
int rf_engine_vocab(const rf_engine *e) { return e->vocab; }
int rf_engine_max_ctx(const rf_engine *e) { return e->max_ctx; }
int rf_engine_pos(const rf_engine *e) { return e->pos; }
void rf_engine_reset(rf_engine *e) { e->pos = 0; }

rf_status rf_engine_set_pos(rf_engine *e, int pos, rf_err *err)
{
    if (pos < 0 || pos > e->pos)
        return rf_err_set(err, RF_ERR_INVALID, "position %d is outside the cached 0..%d", pos, e->pos);
    e->pos = pos;
    return RF_OK;
}

static void add_weight(const rf_wmat *w, uint64_t num, uint64_t den, uint64_t *total, uint64_t *active)
{
    uint64_t b = rf_wmat_bytes(w);
    *total += b;
    *active += b / den * num;
}

void rf_engine_weight_bytes(const rf_engine *e, uint64_t *total, uint64_t *per_token)
{
    uint64_t t = 0, a = 0, E = (uint64_t)(e->nexp > 0 ? e->nexp : 1), K = (uint64_t)(e->topk > 0 ? e->topk : 1);
    for (int l = 0; l < e->cfg.num_layers; l++) {
        const layer *L = &e->layers[l];
        const lin *ls[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (int i = 0; i < 7; i++)
            if (ls[i]->w.rows) add_weight(&ls[i]->w, 1, 1, &t, &a);
        if (L->moe) {
            add_weight(&L->router, 1, 1, &t, &a);
            for (int x = 0; x < e->nexp; x++) {
                add_weight(&L->eg[x], K, E, &t, &a);
                add_weight(&L->eu[x], K, E, &t, &a);
                add_weight(&L->ed[x], K, E, &t, &a);
            }
        }
    }
    add_weight(&e->embed, 1, e->embed.rows, &t, &a);  /* one row per token */
    if (e->lm_head.data != e->embed.data) add_weight(&e->lm_head, 1, 1, &t, &a);
    else a += rf_wmat_bytes(&e->lm_head);
    if (total) *total = t;
    if (per_token) *per_token = a;
}

/* ------------------------------------------------------------------ forward pass */

static void linear(rf_engine *e, const lin *l, const float *x, int T, float *y)
{
    rf_matmul(&l->w, x, T, y, e->pool);
    if (!l->bias) return;
    uint64_t n = l->w.rows;
    for (int t = 0; t < T; t++)
        for (uint64_t i = 0; i < n; i++) y[(uint64_t)t * n + i] += l->bias[i];
}

typedef struct {
    rf_engine *e;
    int layer, p0, T;
    int window; /* sliding-window size of this layer, 0: full attention */
} attn_job;

static void attn_task(void *ctx, uint64_t task, int worker)
{
    const attn_job *j = ctx;
    rf_engine *e = j->e;
    int t = (int)(task / (uint64_t)e->nh), h = (int)(task % (uint64_t)e->nh);
    uint64_t qd = (uint64_t)e->nh * e->hd, kvd = (uint64_t)e->nkv * e->hd, C = (uint64_t)e->max_ctx;
    int kvh = h / (e->nh / e->nkv);
    /* Positions [first, npos): all of them, or the last `window` on a sliding-window layer. */
    int npos = j->p0 + t + 1, first = j->window > 0 && npos > j->window ? npos - j->window : 0;
    uint64_t off = (uint64_t)j->layer * C * kvd + (uint64_t)first * kvd + (uint64_t)kvh * e->hd;
    rf_op_attend(e->q + (uint64_t)t * qd + (uint64_t)h * e->hd, e->kcache + off, e->vcache + off, npos - first,
                 e->hd, (int)kvd, 1.0f / sqrtf((float)e->hd), e->att_scratch + (uint64_t)worker * C,
                 e->att + (uint64_t)t * qd + (uint64_t)h * e->hd);
}

static void attention(rf_engine *e, int li, int p0, int T)
{
    layer *L = &e->layers[li];
    uint64_t dim = (uint64_t)e->dim, qd = (uint64_t)e->nh * e->hd, kvd = (uint64_t)e->nkv * e->hd;
    uint64_t C = (uint64_t)e->max_ctx, h2 = (uint64_t)e->hd / 2;
    for (int t = 0; t < T; t++) rf_op_rmsnorm(e->x + t * dim, L->attn_norm, e->dim, e->eps, e->h + t * dim);
    linear(e, &L->q, e->h, T, e->q);
    linear(e, &L->k, e->h, T, e->k);
    if (L->qk_perm) { /* GGUF hook */
        rf_ggml_unpermute_heads(e->q, T, e->nh, e->hd);
        rf_ggml_unpermute_heads(e->k, T, e->nkv, e->hd);
    }
    linear(e, &L->v, e->h, T, e->v);
    for (int t = 0; t < T; t++) {
        uint64_t pos = (uint64_t)(p0 + t);
        const float *cs = e->rope_cos + pos * h2, *sn = e->rope_sin + pos * h2;
        for (int h = 0; h < e->nh; h++) {
            float *q = e->q + t * qd + (uint64_t)h * e->hd;
            if (L->q_norm) rf_op_rmsnorm(q, L->q_norm, e->hd, e->eps, q);
            rf_op_rope(q, e->hd, cs, sn);
        }
        for (int h = 0; h < e->nkv; h++) {
            float *k = e->k + t * kvd + (uint64_t)h * e->hd;
            if (L->k_norm) rf_op_rmsnorm(k, L->k_norm, e->hd, e->eps, k);
            rf_op_rope(k, e->hd, cs, sn);
        }
        uint64_t row = ((uint64_t)li * C + pos) * kvd;
        memcpy(e->kcache + row, e->k + t * kvd, kvd * sizeof(float));
        memcpy(e->vcache + row, e->v + t * kvd, kvd * sizeof(float));
    }
    attn_job j = {e, li, p0, T, rf_config_layer_window(&e->cfg, li)};
    rf_pool_run((uint64_t)T * e->nh * (uint64_t)(p0 + T) < 4096 ? NULL : e->pool, (uint64_t)T * (uint64_t)e->nh,
                attn_task, &j);
    linear(e, &L->o, e->att, T, e->tmp);
    for (uint64_t i = 0; i < (uint64_t)T * dim; i++) e->x[i] += e->tmp[i];
}

static void swiglu_mlp(rf_engine *e, const rf_wmat *g, const rf_wmat *u, const rf_wmat *d, const float *x, int T,
                       float *y)
{
    uint64_t f = g->rows;
    rf_matmul(g, x, T, e->g, e->pool);
    rf_matmul(u, x, T, e->u, e->pool);
    rf_op_swiglu(e->g, e->u, (int)(f * (uint64_t)T), e->g);
    rf_matmul(d, e->g, T, y, e->pool);
}

/* Sparse MoE on the normed batch e->h: route each token, then run every expert that got any
 * token on the tokens routed to it (batched), adding weighted outputs in expert order. */
static void moe(rf_engine *e, layer *L, int T)
{
    uint64_t dim = (uint64_t)e->dim, K = (uint64_t)e->topk, E = (uint64_t)e->nexp;
    rf_matmul(&L->router, e->h, T, e->rl, e->pool);
    for (int t = 0; t < T; t++)
        rf_moe_route(e->rl + t * E, e->nexp, e->topk, e->softmax_first, e->cfg.norm_topk_prob, e->ri + t * K,
                     e->rw + t * K);
    memset(e->tmp, 0, (uint64_t)T * dim * sizeof(float));
    for (int x = 0; x < e->nexp; x++) {
        int m = 0;
        for (int t = 0; t < T; t++)
            for (uint64_t j = 0; j < K; j++)
                if (e->ri[t * K + j] == x) {
                    e->etok[2 * m] = t;
                    e->etok[2 * m + 1] = (int)(t * K + j);
                    memcpy(e->xe + (uint64_t)m * dim, e->h + t * dim, dim * sizeof(float));
                    m++;
                }
        if (!m) continue;
        swiglu_mlp(e, &L->eg[x], &L->eu[x], &L->ed[x], e->xe, m, e->ye);
        for (int i = 0; i < m; i++) {
            float w = e->rw[e->etok[2 * i + 1]];
            float *dst = e->tmp + (uint64_t)e->etok[2 * i] * dim;
            const float *src = e->ye + (uint64_t)i * dim;
            for (uint64_t c = 0; c < dim; c++) dst[c] += w * src[c];
        }
    }
}

static void mlp(rf_engine *e, int li, int T)
{
    layer *L = &e->layers[li];
    uint64_t dim = (uint64_t)e->dim;
    for (int t = 0; t < T; t++) rf_op_rmsnorm(e->x + t * dim, L->mlp_norm, e->dim, e->eps, e->h + t * dim);
    if (L->moe) moe(e, L, T);
    else swiglu_mlp(e, &L->gate.w, &L->up.w, &L->down.w, e->h, T, e->tmp);
    for (uint64_t i = 0; i < (uint64_t)T * dim; i++) e->x[i] += e->tmp[i];
}

/* One batch of T <= max_batch tokens at positions pos.. ; logits of the last `nlog` tokens. */
static void forward_batch(rf_engine *e, const int32_t *tok, int T, float *logits, int nlog)
{
    uint64_t dim = (uint64_t)e->dim;
    for (int t = 0; t < T; t++) rf_wmat_row(&e->embed, (uint64_t)tok[t], e->x + t * dim);
    for (int l = 0; l < e->cfg.num_layers; l++) {
        attention(e, l, e->pos, T);
        mlp(e, l, T);
    }
    e->pos += T;
    if (!logits || nlog <= 0) return;
    for (int t = T - nlog; t < T; t++)
        rf_op_rmsnorm(e->x + t * dim, e->final_norm, e->dim, e->eps, e->h + (uint64_t)(t - (T - nlog)) * dim);
    rf_matmul(&e->lm_head, e->h, nlog, logits, e->pool);
}

rf_status rf_engine_forward(rf_engine *e, const int32_t *tokens, int n, float *logits, int all_logits, rf_err *err)
{
    if (n <= 0) return rf_err_set(err, RF_ERR_INVALID, "no tokens to run");
    if (n > e->max_ctx - e->pos)
        return rf_err_set(err, RF_ERR_INVALID, "%d tokens at position %d exceed the context of %d", n, e->pos,
                          e->max_ctx);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= e->vocab)
            return rf_err_set(err, RF_ERR_INVALID, "token id %d is outside the vocabulary (%d)", tokens[i], e->vocab);
    for (int i = 0; i < n; i += e->max_batch) {
        int T = n - i < e->max_batch ? n - i : e->max_batch;
        float *lg = NULL;
        int nlog = 0;
        if (logits && all_logits) { lg = logits + (uint64_t)i * (uint64_t)e->vocab; nlog = T; }
        else if (logits && i + T == n) { lg = logits; nlog = 1; }
        forward_batch(e, tokens + i, T, lg, nlog);
        /* The weights are never scanned (they are mmapped and may be hundreds of GB): a NaN/Inf
         * weight or an overflow shows up here, and a silent "PPL nan" would be worse than an error. */
        for (uint64_t k = 0; k < (uint64_t)nlog * (uint64_t)e->vocab; k++)
            if (!isfinite(lg[k]))
                return rf_err_set(err, RF_ERR_NONFINITE, "%s: non-finite logit at position %d (token %llu of the "
                                  "vocabulary): the checkpoint holds NaN/Inf weights or the activations overflowed",
                                  e->dir, e->pos - nlog + (int)(k / (uint64_t)e->vocab),
                                  (unsigned long long)(k % (uint64_t)e->vocab));
    }
    return RF_OK;
}
