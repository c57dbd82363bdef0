/* The inference engine: runs a checkpoint of any family ramfit knows (Hugging Face BF16/F16/F32
 * or FP8, or MLX affine-quantized with per-module bits/group size) on batches of tokens with a
 * float32 KV cache. The model catalogue (src/arch/) says which tensor fills which slot of the
 * decoder; the config says which features each layer uses (MoE, sliding or chunked windows, NoPE,
 * q/k norms, latent attention, ...). Weights stay memory-mapped where they are plain matrices and
 * the kernels read the mapped rows; members that are slices or transposes of fused tensors, or
 * FP8, are materialized once (in their exact float dtype). Only 1-D tensors are copied to float32. */
#include "engine/engine_internal.h"
#include "arch/model_internal.h"
#include "io/mlx_internal.h"
#include "engine/gguf_weights.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NAME_MAX_LEN = 256 };

typedef struct lin {
    rf_wmat w;
    float *bias;          /* NULL when the layer has none */
    const rf_unit *unit;  /* the catalogue unit (and member) it multiplies by: for the observer */
    int member;
} lin;

typedef struct eng_layer {
    unsigned flags;
    int window;                /* sliding window (0: none) */
    float *attn_norm, *mlp_norm, *post_attn_norm, *post_mlp_norm, *q_norm, *k_norm;
    lin q, k, v, o, qkv;
    /* multi-head latent attention */
    lin q_a, q_b, kv_a;
    float *q_a_norm, *kv_a_norm;
    lin *kb, *vb;              /* per head: [kv_lora, nope] and [v_head, kv_lora] */
    int moe;
    lin gate, up, down, gate_up;
    lin router;
    float *router_bias;
    lin *eg, *eu, *ed;         /* per-expert views (into stacked banks or per-expert tensors) */
    lin sg, su, sd;            /* shared expert(s) */
    lin sh_route;              /* qwen2_moe's shared_expert_gate [1, hidden] */
} eng_layer;

typedef struct owned { void **p; int n, cap; } owned;

/* moe_parallel runs when at least this many experts per thread are in use */
enum { MX_PER_THREAD = 4 };

struct rf_engine {
    rf_config cfg;
    char *dir;
    rf_model *model;
    rf_ggm *gg;                /* GGUF hook: a GGUF file instead of model (engine/gguf_weights.c) */
    const rf_st *st;
    rf_pool *pool;
    rf_mlx_qcfg *quant;        /* config.json "quantization", read as mlx-lm does (io/mlx.c) */
    int dim, nh, nkv, hd, vocab, nexp, topk, mla;
    int rd;                    /* rotated dimensions per head (head_dim * partial_rotary, or qk_rope_head_dim) */
    int nope, rope_d, kvl, vh; /* MLA */
    int qdim, kvdim, odim;     /* widths of q, of a cached k/v row, of the attention output */
    float eps;
    rf_route_opts route;
    lin embed, lm_head;
    rf_engine_observer observer;
    void *observer_user;
    float *final_norm;
    eng_layer *layers;
    owned own;
    int max_ctx, max_batch, pos;
    /* rope tables [max_ctx][rd/2]: global (short factors), global long (longrope), local */
    float *cos_g, *sin_g, *cos_l, *sin_l, *cos_x, *sin_x;
    int long_orig;             /* longrope: long factors once a batch reaches past this position (0: never) */
    int fast;                  /* 8-bit activations (rf_matmul_q8) */
    float *kcache, *vcache;    /* GQA: [layers][max_ctx][nkv*hd]; MLA: latents [kv_lora] and rope keys [rope_d] */
    /* per-batch scratch */
    float *x, *h, *q, *k, *v, *att, *tmp, *g, *u, *big;
    float *rl, *rw, *xe, *ye, *sh;
    float *mq, *mc;            /* MLA: absorbed queries and attention contexts [T][heads][kv_lora] */
    int *ri;
    int *mx_slot, *mx_pos;     /* routed slots (t * topk + j) in expert order; each expert's first */
    /* experts side by side (moe_parallel): per worker x, gate and up rows [threads][B][dim or
     * moe_f]; every routed slot's output [B * topk][dim] in expert order */
    float *mx_x, *mx_g, *mx_u, *mx_y;
    float *att_scratch;        /* [threads][max_ctx] */
    int nthreads;
    float embed_scale;         /* cfg.embed_scale cast to the embedding's dtype (as transformers does), 0: none */
};

/* ------------------------------------------------------------------ loading */

static rf_status own(rf_engine *e, void *p, rf_err *err)
{
    if (e->own.n == e->own.cap) {
        int cap = e->own.cap ? e->own.cap * 2 : 64;
        void **n = realloc(e->own.p, (size_t)cap * sizeof *n);
        if (!n) {
            free(p);
            return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        }
        e->own.p = n;
        e->own.cap = cap;
    }
    e->own.p[e->own.n++] = p;
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

/* A 1-D float tensor of n elements as an owned float32 array (NULL tensor: *out = NULL). */
static rf_status load_vec_t(rf_engine *e, const rf_tensor *t, uint64_t n, float add, float **out, rf_err *err)
{
    *out = NULL;
    if (!t) return RF_OK;
    char want[64];
    snprintf(want, sizeof want, "[%llu] float", (unsigned long long)n);
    if (t->ndim != 1 || t->shape[0] != n || !rf_dtype_is_float(t->dtype)) return shape_error(e, t, want, err);
    float *v = malloc(n * sizeof(float));
    if (!v) return rf_err_set(err, RF_ERR_NOMEM, "out of memory loading %s", t->name);
    rf_status s = rf_convert_to_f32(t->dtype, t->data, v, n, err);
    for (uint64_t i = 0; !s && add != 0 && i < n; i++) v[i] += add;
    if (s) {
        free(v);
        return s;
    }
    *out = v;
    return own(e, v, err);
}

static rf_status load_vec(rf_engine *e, int layer, rf_slot s, uint64_t n, int required, float **out, rf_err *err)
{
    if (e->gg) { /* GGUF hook */
        rf_status st = rf_ggm_vec(e->gg, layer, s, n, out, err);
        if (!st && !*out && required)
            return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: layer %d has no %s weight", e->dir, layer, rf_slot_name(s));
        return st || !*out ? st : own(e, *out, err);
    }
    const rf_tensor *t = rf_model_slot_vector(e->model, layer, s);
    if (!t && required)
        return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: layer %d has no %s weight", e->dir, layer, rf_slot_name(s));
    /* gemma stores its norm weights as w - 1 */
    int norm = s != RF_SLOT_ROUTER_BIAS;
    return load_vec_t(e, t, n, norm && e->cfg.norm_plus_one ? 1.0f : 0.0f, out, err);
}

/* bits/gs of an MLX module (0, 0: not quantized) by mlx-lm's rule, one reader with inspect. */
static rf_status quant_params(rf_engine *e, const char *module, int has_scales, int *bits, int *gs, rf_err *err)
{
    return rf_mlx_qcfg_module(e->quant, module, has_scales, bits, gs, err);
}

/* The MLX-quantized weight of MODULE: nexp stacked members (0: a plain matrix) of out x in. */
static rf_status load_quantized(rf_engine *e, const char *module, const rf_tensor *t, int nexp, uint64_t out,
                                uint64_t in, rf_wmat *w, rf_err *err)
{
    char name[NAME_MAX_LEN], want[128];
    const rf_tensor *sc, *bi;
    int nd = nexp ? 3 : 2, lead = nexp ? 1 : 0;
    memset(w, 0, sizeof *w);
    w->rows = out * (uint64_t)(nexp ? nexp : 1);
    w->cols = in;
    w->data = t->data;
    snprintf(name, sizeof name, "%s.scales", module);
    sc = rf_st_find(e->st, name);
    snprintf(name, sizeof name, "%s.biases", module);
    bi = rf_st_find(e->st, name);
    if (!sc || !bi)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s is %s but %s.%s is missing", e->dir, t->name,
                          rf_dtype_name(t->dtype), module, sc ? "biases" : "scales");
    rf_status s;
    if ((s = quant_params(e, module, 1, &w->bits, &w->gs, err))) return s;
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

/* The members of unit U as out x in matrices: mapped where they lie, materialized when they are
 * slices, transposes or FP8. */
static rf_status load_unit(rf_engine *e, const rf_unit *u, uint64_t out, uint64_t in, rf_wmat *w, rf_err *err)
{
    const rf_mview *v = rf_model_unit_views(e->model, (uint64_t)rf_model_unit_index(e->model, u));
    int n = u->n_members;
    if (v[0].t->dtype == RF_DT_U32) {
        int stacked = v[0].t->ndim == 3;
        rf_wmat bank;
        rf_status s = load_quantized(e, u->name, v[0].t, stacked ? n : 0, out, in, &bank, err);
        if (s) return s;
        for (int k = 0; k < n; k++) {
            if (!stacked) {
                if (k == 0) w[0] = bank;
                else { /* per-expert MLX tensors: each its own module */
                    char mod[NAME_MAX_LEN];
                    snprintf(mod, sizeof mod, "%.*s", (int)(strlen(v[k].t->name) - 7), v[k].t->name);
                    if ((s = load_quantized(e, mod, v[k].t, 0, out, in, &w[k], err))) return s;
                }
            } else {
                w[k] = rf_wmat_rows(&bank, (uint64_t)k * out, out);
            }
        }
        return RF_OK;
    }
    /* a float weight: config.json must not quantize the module and it has no .scales (the rule
     * inspect applies, io/mlx.c) */
    char sname[NAME_MAX_LEN];
    snprintf(sname, sizeof sname, "%s.scales", u->name);
    int qb, qg;
    rf_status qs = quant_params(e, u->name, rf_st_find(e->st, sname) != NULL, &qb, &qg, err);
    if (qs) return qs;
    if (qb)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: %s has .scales (%d bits, group size %d) but its weight %s is %s, not "
                          "packed U32", e->dir, u->name, qb, qg, v[0].t->name, rf_dtype_name(v[0].t->dtype));
    for (int k = 0; k < n; k++) {
        const rf_mview *m = &v[k];
        char want[96];
        snprintf(want, sizeof want, "a %llu x %llu float matrix", (unsigned long long)out, (unsigned long long)in);
        if (m->rows != out || m->cols != in || (!rf_dtype_is_float(m->t->dtype) && m->t->dtype != RF_DT_F8_E4M3) ||
            m->t->dtype == RF_DT_F64)
            return shape_error(e, m->t, want, err);
        memset(&w[k], 0, sizeof w[k]);
        w[k].rows = out;
        w[k].cols = in;
        const void *direct = rf_view_direct(m, 0);
        if (direct) {
            w[k].dtype = m->t->dtype;
            w[k].data = direct;
        } else {
            rf_dtype dt = rf_view_dtype(m);
            void *buf = malloc(out * in * rf_dtype_size(dt));
            if (!buf) return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory materializing %s", e->dir, u->name);
            rf_status s = rf_view_read(m, 0, out, dt, buf, err);
            if (!s) s = own(e, buf, err);
            else free(buf);
            if (s) return s;
            w[k].dtype = dt;
            w[k].data = buf;
        }
        rf_status s = rf_wmat_check(&w[k], m->t->name, err);
        if (s) return s;
    }
    return RF_OK;
}

/* The matrix of a slot (and its bias): REQUIRED says whether a missing one is an error. */
static rf_status load_lin(rf_engine *e, int layer, rf_slot s, uint64_t out, uint64_t in, int required, lin *l,
                          rf_err *err)
{
    memset(l, 0, sizeof *l);
    if (e->gg) { /* GGUF hook */
        if (!rf_ggm_has(e->gg, layer, s) && !required) return RF_OK;
        rf_status st = rf_ggm_matrix(e->gg, layer, s, 0, out, in, &l->w, &l->bias, err);
        return st || !l->bias ? st : own(e, l->bias, err);
    }
    const rf_unit *u = rf_model_slot_unit(e->model, layer, s);
    if (!u) {
        if (!required) return RF_OK;
        return layer >= 0 ? rf_err_set(err, RF_ERR_NOT_FOUND, "%s: layer %d has no %s weight", e->dir, layer, rf_slot_name(s))
                          : rf_err_set(err, RF_ERR_NOT_FOUND, "%s: the model has no %s weight", e->dir, rf_slot_name(s));
    }
    if (u->n_members != 1)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: %s: a bank of %d where one matrix is expected", e->dir, u->name,
                          u->n_members);
    rf_status st = load_unit(e, u, out, in, &l->w, err);
    if (st) return st;
    l->unit = u;
    return load_vec_t(e, rf_model_slot_bias(e->model, layer, s), out, 0, &l->bias, err);
}

static rf_status load_bank(rf_engine *e, int layer, rf_slot s, int n, uint64_t out, uint64_t in, lin **bank,
                           rf_err *err)
{
    if (e->gg) { /* GGUF hook: experts stacked in one tensor */
        rf_wmat all;
        rf_status st = rf_ggm_matrix(e->gg, layer, s, n, out, in, &all, NULL, err);
        if (!st && !(*bank = calloc((size_t)n, sizeof **bank))) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        if (!st) st = own(e, *bank, err);
        for (int k = 0; !st && k < n; k++) (*bank)[k] = (lin){rf_wmat_rows(&all, (uint64_t)k * out, out), NULL, NULL, k};
        return st;
    }
    const rf_unit *u = rf_model_slot_unit(e->model, layer, s);
    if (!u) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: layer %d has no %s weights", e->dir, layer, rf_slot_name(s));
    if (u->n_members != n)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: %s has %d members, config.json says %d", e->dir, u->name,
                          u->n_members, n);
    *bank = calloc((size_t)n, sizeof **bank);
    rf_wmat *views = calloc((size_t)n, sizeof *views);
    if (!*bank || !views) {
        free(*bank);
        free(views);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory loading %s", u->name);
    }
    rf_status st = own(e, *bank, err);
    if (!st) st = load_unit(e, u, out, in, views, err);
    for (int k = 0; !st && k < n; k++) (*bank)[k] = (lin){views[k], NULL, u, k};
    free(views);
    return st;
}

static rf_status load_layer(rf_engine *e, int li, rf_err *err)
{
    eng_layer *L = &e->layers[li];
    const rf_config *c = &e->cfg;
    rf_status s;
    uint64_t dim = (uint64_t)e->dim, hd = (uint64_t)e->hd;
#define TRY(x) do { if ((s = (x)) != RF_OK) return s; } while (0)
    L->flags = rf_config_layer_flags(c, li);
    L->window = rf_config_layer_window(c, li);
    TRY(load_vec(e, li, RF_SLOT_ATTN_NORM, dim, 1, &L->attn_norm, err));
    TRY(load_vec(e, li, RF_SLOT_MLP_NORM, dim, 1, &L->mlp_norm, err));
    TRY(load_vec(e, li, RF_SLOT_POST_ATTN_NORM, dim, c->sandwich_norm, &L->post_attn_norm, err));
    TRY(load_vec(e, li, RF_SLOT_POST_MLP_NORM, dim, c->sandwich_norm, &L->post_mlp_norm, err));
    if (e->mla) {
        uint64_t qb = (uint64_t)e->nh * (uint64_t)(e->nope + e->rope_d);
        if (c->q_lora_rank) {
            TRY(load_lin(e, li, RF_SLOT_Q_A, (uint64_t)c->q_lora_rank, dim, 1, &L->q_a, err));
            TRY(load_vec(e, li, RF_SLOT_Q_A_NORM, (uint64_t)c->q_lora_rank, 1, &L->q_a_norm, err));
            TRY(load_lin(e, li, RF_SLOT_Q_B, qb, (uint64_t)c->q_lora_rank, 1, &L->q_b, err));
        } else {
            TRY(load_lin(e, li, RF_SLOT_Q, qb, dim, 1, &L->q, err));
        }
        TRY(load_lin(e, li, RF_SLOT_KV_A, (uint64_t)(e->kvl + e->rope_d), dim, 1, &L->kv_a, err));
        TRY(load_vec(e, li, RF_SLOT_KV_A_NORM, (uint64_t)e->kvl, 1, &L->kv_a_norm, err));
        TRY(load_bank(e, li, RF_SLOT_K_B, e->nh, (uint64_t)e->kvl, (uint64_t)e->nope, &L->kb, err));
        TRY(load_bank(e, li, RF_SLOT_V_B, e->nh, (uint64_t)e->vh, (uint64_t)e->kvl, &L->vb, err));
        TRY(load_lin(e, li, RF_SLOT_O, dim, (uint64_t)e->odim, 1, &L->o, err));
    } else {
        uint64_t qd = (uint64_t)e->nh * hd, kvd = (uint64_t)e->nkv * hd;
        if (e->model && rf_model_slot_unit(e->model, li, RF_SLOT_QKV)) {
            TRY(load_lin(e, li, RF_SLOT_QKV, qd + 2 * kvd, dim, 1, &L->qkv, err));
        } else {
            TRY(load_lin(e, li, RF_SLOT_Q, qd, dim, 1, &L->q, err));
            TRY(load_lin(e, li, RF_SLOT_K, kvd, dim, 1, &L->k, err));
            TRY(load_lin(e, li, RF_SLOT_V, kvd, dim, 1, &L->v, err));
        }
        TRY(load_lin(e, li, RF_SLOT_O, dim, qd, 1, &L->o, err));
        if (c->qk_norm == RF_QKNORM_RMS) {
            TRY(load_vec(e, li, RF_SLOT_Q_NORM, hd, 1, &L->q_norm, err));
            TRY(load_vec(e, li, RF_SLOT_K_NORM, hd, 1, &L->k_norm, err));
        }
    }
    L->moe = rf_config_layer_is_moe(c, li);
    if (!L->moe) {
        uint64_t f = (uint64_t)c->intermediate_size;
        if (e->model && rf_model_slot_unit(e->model, li, RF_SLOT_GATE_UP)) {
            TRY(load_lin(e, li, RF_SLOT_GATE_UP, 2 * f, dim, 1, &L->gate_up, err));
        } else {
            TRY(load_lin(e, li, RF_SLOT_GATE, f, dim, 1, &L->gate, err));
            TRY(load_lin(e, li, RF_SLOT_UP, f, dim, 1, &L->up, err));
        }
        TRY(load_lin(e, li, RF_SLOT_DOWN, dim, f, 1, &L->down, err));
        return RF_OK;
    }
    TRY(load_lin(e, li, RF_SLOT_ROUTER, (uint64_t)e->nexp, dim, 1, &L->router, err));
    TRY(load_vec(e, li, RF_SLOT_ROUTER_BIAS, (uint64_t)e->nexp, 0, &L->router_bias, err));
    uint64_t f = (uint64_t)c->moe_intermediate_size;
    TRY(load_bank(e, li, RF_SLOT_X_GATE, e->nexp, f, dim, &L->eg, err));
    TRY(load_bank(e, li, RF_SLOT_X_UP, e->nexp, f, dim, &L->eu, err));
    TRY(load_bank(e, li, RF_SLOT_X_DOWN, e->nexp, dim, f, &L->ed, err));
    if (c->shared_intermediate) {
        uint64_t sf = (uint64_t)c->shared_intermediate;
        TRY(load_lin(e, li, RF_SLOT_SH_GATE, sf, dim, 1, &L->sg, err));
        TRY(load_lin(e, li, RF_SLOT_SH_UP, sf, dim, 1, &L->su, err));
        TRY(load_lin(e, li, RF_SLOT_SH_DOWN, dim, sf, 1, &L->sd, err));
        if (c->shared_gate) TRY(load_lin(e, li, RF_SLOT_SH_ROUTE, 1, dim, 1, &L->sh_route, err));
    }
#undef TRY
    return RF_OK;
}

static rf_status check_config(rf_engine *e, rf_err *err)
{
    const rf_config *c = &e->cfg;
    if (!rf_config_runnable(c))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: the engine cannot run architecture '%s' (it runs: %s); inspect, "
                          "analyse, plan and quantize work on it", e->dir, c->model_type, rf_family_list());
    e->dim = c->hidden_size;
    e->nh = c->num_heads;
    e->nkv = c->num_kv_heads > 0 ? c->num_kv_heads : c->num_heads;
    e->hd = c->head_dim;
    e->vocab = c->vocab_size;
    e->nexp = c->num_experts;
    e->topk = c->experts_per_tok;
    e->eps = (float)c->rms_norm_eps;
    e->mla = c->kv_lora_rank > 0;
    if (e->mla) {
        e->nope = c->qk_nope_head_dim;
        e->rope_d = c->qk_rope_head_dim;
        e->kvl = c->kv_lora_rank;
        e->vh = c->v_head_dim;
        e->rd = e->rope_d;
        e->qdim = e->nh * (e->nope + e->rope_d);
        e->kvdim = e->kvl + e->rope_d;
        e->odim = e->nh * e->vh;
    } else {
        e->rd = (int)(e->hd * c->partial_rotary);
        e->qdim = e->nh * e->hd;
        e->kvdim = e->nkv * e->hd;
        e->odim = e->qdim;
    }
    e->route = (rf_route_opts){.n = e->nexp, .k = e->topk, .kind = c->router, .norm_topk = c->norm_topk_prob,
                               .n_group = c->n_group, .topk_group = c->topk_group, .scaling = c->routed_scaling};
    if (e->dim <= 0 || e->nh <= 0 || e->hd <= 0 || e->vocab <= 0 || c->num_layers <= 0 || e->nh % e->nkv)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: config.json: inconsistent sizes (hidden %d, heads %d/%d, head_dim "
                          "%d, vocab %d, layers %d)", e->dir, e->dim, e->nh, e->nkv, e->hd, e->vocab, c->num_layers);
    if (e->rd % 2 || e->rd <= 0) return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: %d rotated dimensions", e->dir, e->rd);
    if (e->nexp > 0 && (e->nexp > RF_MAX_EXPERTS || e->topk <= 0 || e->topk > e->nexp))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: %d experts, %d per token: not supported", e->dir, e->nexp, e->topk);
    return RF_OK;
}

static rf_status read_quant_config(rf_engine *e, rf_err *err) { return rf_mlx_qcfg_load(e->dir, &e->quant, err); }

static void *alloc_f(uint64_t n, int *fail)
{
    void *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *fail = 1;
    return p;
}

static rf_status rope_table(rf_engine *e, const rf_rope *r, int use_long, float **cs, float **sn, rf_err *err)
{
    double inv[RF_ROPE_MAX_FACTORS * 2], af = 1;
    int h2 = e->rd / 2, fail = 0;
    if (h2 > RF_ROPE_MAX_FACTORS * 2) return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: %d rotated dimensions", e->dir, e->rd);
    rf_status s = rf_rope_freqs(r, e->rd, e->cfg.max_position_embeddings, use_long, inv, &af, err);
    if (s) return rf_err_prefix(err, "%s", e->dir);
    uint64_t C = (uint64_t)e->max_ctx;
    *cs = alloc_f(C * (uint64_t)h2, &fail);
    *sn = alloc_f(C * (uint64_t)h2, &fail);
    if (fail) return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory for rotary tables", e->dir);
    for (uint64_t p = 0; p < C; p++)
        for (int i = 0; i < h2; i++) {
            /* as transformers: the angle in float32 (position times inv_freq), then cos/sin, times the factor */
            float a = (float)p * (float)inv[i];
            (*cs)[p * (uint64_t)h2 + (uint64_t)i] = (float)(cos((double)a) * af);
            (*sn)[p * (uint64_t)h2 + (uint64_t)i] = (float)(sin((double)a) * af);
        }
    return RF_OK;
}

static rf_status alloc_state(rf_engine *e, rf_err *err)
{
    const rf_config *c = &e->cfg;
    uint64_t B = (uint64_t)e->max_batch, C = (uint64_t)e->max_ctx, L = (uint64_t)c->num_layers;
    uint64_t dim = (uint64_t)e->dim, qd = (uint64_t)e->qdim, kvd = (uint64_t)e->kvdim;
    uint64_t f = (uint64_t)c->intermediate_size;
    if ((uint64_t)c->moe_intermediate_size > f) f = (uint64_t)c->moe_intermediate_size;
    if ((uint64_t)c->shared_intermediate > f) f = (uint64_t)c->shared_intermediate;
    uint64_t wide = qd > dim ? qd : dim;
    if ((uint64_t)e->odim > wide) wide = (uint64_t)e->odim;
    if ((uint64_t)e->kvl > wide) wide = (uint64_t)e->kvl;
    if ((uint64_t)e->vh > f) f = (uint64_t)e->vh;
    int fail = 0;
    /* MLA caches the latent (kv_lora) in kcache and the rope key in vcache */
    e->kcache = alloc_f(L * C * (e->mla ? (uint64_t)e->kvl : kvd), &fail);
    e->vcache = alloc_f(L * C * (e->mla ? (uint64_t)e->rope_d : kvd), &fail);
    e->x = alloc_f(B * dim, &fail);
    e->h = alloc_f(B * dim, &fail);
    e->q = alloc_f(B * qd, &fail);
    e->k = alloc_f(B * kvd, &fail);
    e->v = alloc_f(B * kvd, &fail);
    e->att = alloc_f(B * wide, &fail);
    e->tmp = alloc_f(B * wide, &fail);
    e->g = alloc_f(B * 2 * f, &fail);
    e->u = alloc_f(B * f, &fail);
    e->big = alloc_f(B * (qd + 2 * kvd > 2 * f ? qd + 2 * kvd : 2 * f), &fail);
    e->att_scratch = alloc_f((uint64_t)e->nthreads * C, &fail);
    if (e->mla) {
        uint64_t hk = (uint64_t)e->nh * (uint64_t)e->kvl;
        e->mq = alloc_f(B * hk, &fail);
        e->mc = alloc_f(B * hk, &fail);
    }
    if (e->nexp > 0) {
        e->rl = alloc_f(B * (uint64_t)e->nexp, &fail);
        e->rw = alloc_f(B * (uint64_t)e->topk, &fail);
        e->xe = alloc_f(B * dim, &fail);
        e->ye = alloc_f(B * dim, &fail);
        e->sh = alloc_f(B * dim, &fail);
        e->ri = calloc(B * (uint64_t)e->topk, sizeof(int));
        e->mx_slot = calloc(B * (uint64_t)e->topk, sizeof(int));
        e->mx_pos = calloc((uint64_t)e->nexp + 1, sizeof(int));
        if (!e->ri || !e->mx_slot || !e->mx_pos) fail = 1;
        if (e->nexp >= MX_PER_THREAD * e->nthreads) { /* else moe_parallel never runs */
            uint64_t fe = (uint64_t)c->moe_intermediate_size > 0 ? (uint64_t)c->moe_intermediate_size : f;
            uint64_t W = (uint64_t)e->nthreads;
            e->mx_x = alloc_f(W * B * dim, &fail);
            e->mx_g = alloc_f(W * B * fe, &fail);
            e->mx_u = alloc_f(W * B * fe, &fail);
            e->mx_y = alloc_f(B * (uint64_t)e->topk * dim, &fail);
        }
    }
    if (fail)
        return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory for a %d-position KV cache and %d-token batches",
                          e->dir, e->max_ctx, e->max_batch);
    rf_status s = rope_table(e, &c->rope, 0, &e->cos_g, &e->sin_g, err);
    if (!s && !strcmp(c->rope.type, "longrope")) {
        s = rope_table(e, &c->rope, 1, &e->cos_x, &e->sin_x, err);
        e->long_orig = c->rope.original_max_pos;
    }
    for (int l = 0; !s && l < c->num_layers; l++)
        if (e->layers[l].flags & RF_LAYER_LOCAL) {
            s = rope_table(e, &c->rope_local, 0, &e->cos_l, &e->sin_l, err);
            break;
        }
    return s;
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
    } else {
        if ((s = rf_model_open(model_dir, &e->model, err))) goto fail;
        e->cfg = *rf_model_config(e->model);
        if ((s = check_config(e, err)) || (s = read_quant_config(e, err))) goto fail;
        e->st = rf_model_st(e->model);
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
    if ((s = load_lin(e, -1, RF_SLOT_EMBED, V, dim, 1, &e->embed, err))) goto fail;
    if ((s = load_lin(e, -1, RF_SLOT_LM_HEAD, V, dim, 0, &e->lm_head, err))) goto fail;
    if (!e->lm_head.w.rows && e->cfg.tie_word_embeddings) {
        e->lm_head = e->embed;
    } else if (!e->lm_head.w.rows) {
        s = rf_err_set(err, RF_ERR_NOT_FOUND, "%s: tensor lm_head.weight is missing and embeddings are not tied", e->dir);
        goto fail;
    }
    if ((s = load_vec(e, -1, RF_SLOT_FINAL_NORM, dim, 1, &e->final_norm, err))) goto fail;
    /* gemma multiplies embeddings by sqrt(hidden) cast to the weights' dtype first */
    if (e->cfg.embed_scale != 0) {
        rf_dtype edt = e->embed.w.dtype == RF_DT_U32 ? e->embed.w.sdtype : e->embed.w.dtype;
        float f = (float)e->cfg.embed_scale;
        e->embed_scale = edt == RF_DT_BF16 ? rf_bf16_to_f32(rf_f32_to_bf16(f)) : edt == RF_DT_F16 ? rf_f16_to_f32(rf_f32_to_f16(f)) : f;
    }
    e->layers = calloc((size_t)e->cfg.num_layers, sizeof *e->layers);
    if (!e->layers) { s = rf_err_set(err, RF_ERR_NOMEM, "out of memory"); goto fail; }
    for (int l = 0; l < e->cfg.num_layers; l++)
        if ((s = load_layer(e, l, err))) goto fail;
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
    for (int i = 0; i < e->own.n; i++) free(e->own.p[i]);
    free(e->own.p);
    free(e->layers);
    float *bufs[] = {e->cos_g, e->sin_g, e->cos_l, e->sin_l, e->cos_x, e->sin_x, e->kcache, e->vcache, e->x, e->h,
                     e->q, e->k, e->v, e->att, e->tmp, e->g, e->u, e->big, e->rl, e->rw, e->xe, e->ye, e->sh, e->mq,
                     e->mc, e->att_scratch, e->mx_x, e->mx_g, e->mx_u, e->mx_y};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(e->ri);
    free(e->mx_slot);
    free(e->mx_pos);
    rf_mlx_qcfg_free(e->quant);
    rf_pool_free(e->pool);
    rf_model_free(e->model);
    rf_ggm_free(e->gg);
    free(e->dir);
    free(e);
}

const rf_config *rf_engine_config(const rf_engine *e) { return &e->cfg; }
int rf_engine_vocab(const rf_engine *e) { return e->vocab; }
int rf_engine_max_ctx(const rf_engine *e) { return e->max_ctx; }
int rf_engine_pos(const rf_engine *e) { return e->pos; }
void rf_engine_reset(rf_engine *e) { e->pos = 0; }
void rf_engine_set_fast(rf_engine *e, int fast) { e->fast = fast != 0; }

rf_status rf_engine_set_pos(rf_engine *e, int pos, rf_err *err)
{
    if (pos < 0 || pos > e->pos)
        return rf_err_set(err, RF_ERR_INVALID, "position %d is outside the cached 0..%d", pos, e->pos);
    e->pos = pos;
    return RF_OK;
}

static void add_weight(const rf_wmat *w, uint64_t num, uint64_t den, uint64_t *total, uint64_t *active)
{
    if (!w->rows) return;
    uint64_t b = rf_wmat_bytes(w);
    *total += b;
    *active += b / den * num;
}

void rf_engine_weight_bytes(const rf_engine *e, uint64_t *total, uint64_t *per_token)
{
    uint64_t t = 0, a = 0, E = (uint64_t)(e->nexp > 0 ? e->nexp : 1), K = (uint64_t)(e->topk > 0 ? e->topk : 1);
    for (int l = 0; l < e->cfg.num_layers; l++) {
        const eng_layer *L = &e->layers[l];
        const lin *ls[] = {&L->q, &L->k, &L->v, &L->o, &L->qkv, &L->q_a, &L->q_b, &L->kv_a, &L->gate, &L->up,
                           &L->down, &L->gate_up, &L->sg, &L->su, &L->sd};
        for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) add_weight(&ls[i]->w, 1, 1, &t, &a);
        for (int h = 0; e->mla && h < e->nh; h++) {
            add_weight(&L->kb[h].w, 1, 1, &t, &a);
            add_weight(&L->vb[h].w, 1, 1, &t, &a);
        }
        if (L->moe) {
            add_weight(&L->router.w, 1, 1, &t, &a);
            add_weight(&L->sh_route.w, 1, 1, &t, &a);
            for (int x = 0; x < e->nexp; x++) {
                add_weight(&L->eg[x].w, K, E, &t, &a);
                add_weight(&L->eu[x].w, K, E, &t, &a);
                add_weight(&L->ed[x].w, K, E, &t, &a);
            }
        }
    }
    add_weight(&e->embed.w, 1, e->embed.w.rows, &t, &a);  /* one row per token */
    if (e->lm_head.w.data != e->embed.w.data) add_weight(&e->lm_head.w, 1, 1, &t, &a);
    else a += rf_wmat_bytes(&e->lm_head.w);
    if (total) *total = t;
    if (per_token) *per_token = a;
}

/* ------------------------------------------------------------------ forward pass */

void rf_engine_set_observer(rf_engine *e, rf_engine_observer fn, void *user)
{
    e->observer = fn;
    e->observer_user = user;
}

static void add_bias(const lin *l, int T, float *y)
{
    if (!l->bias) return;
    uint64_t n = l->w.rows;
    for (int t = 0; t < T; t++)
        for (uint64_t i = 0; i < n; i++) y[(uint64_t)t * n + i] += l->bias[i];
}

/* y = W x (+ bias) for T tokens: the one place matrix products run (the MoE router's included),
 * so the observer sees them all; in fast mode with 8-bit activations (rf_matmul_q8), except the
 * router, whose choices stay exact. */
static void linear_on(rf_engine *e, const lin *l, const float *x, int T, float *y, rf_pool *pool)
{
    if (e->observer && l->unit) e->observer(e->observer_user, l->unit, l->member, x, T);
    if (e->fast && !(l->unit && l->unit->role == RF_ROLE_ROUTER)) rf_matmul_q8(&l->w, x, T, y, pool);
    else rf_matmul(&l->w, x, T, y, pool);
    add_bias(l, T, y);
}

static void linear(rf_engine *e, const lin *l, const float *x, int T, float *y) { linear_on(e, l, x, T, y, e->pool); }

/* N products of the same x (q/k/v, gate/up; never the router): in fast mode one pool job
 * (rf_matmul_q8_multi), the same results as N linear calls. */
static void linear_n_on(rf_engine *e, const lin *const *l, int n, const float *x, int T, float *const *y, rf_pool *pool)
{
    if (!e->fast || n > RF_Q8_MULTI) {
        for (int i = 0; i < n; i++) linear_on(e, l[i], x, T, y[i], pool);
        return;
    }
    const rf_wmat *w[RF_Q8_MULTI];
    for (int i = 0; i < n; i++) {
        if (e->observer && l[i]->unit) e->observer(e->observer_user, l[i]->unit, l[i]->member, x, T);
        w[i] = &l[i]->w;
    }
    rf_matmul_q8_multi(w, n, x, T, y, pool);
    for (int i = 0; i < n; i++) add_bias(l[i], T, y[i]);
}

static void linear_n(rf_engine *e, const lin *const *l, int n, const float *x, int T, float *const *y)
{
    linear_n_on(e, l, n, x, T, y, e->pool);
}

typedef struct {
    rf_engine *e;
    int layer, p0, T;
    int window, chunk;         /* sliding window / attention chunk of this layer (0: none) */
} attn_job;

/* The first cached position query position P attends to. */
static int first_pos(const attn_job *j, int p)
{
    int first = 0;
    if (j->window > 0 && p + 1 > j->window) first = p + 1 - j->window;
    if (j->chunk > 0 && p / j->chunk * j->chunk > first) first = p / j->chunk * j->chunk;
    return first;
}

static void attn_task(void *ctx, uint64_t task, int worker)
{
    const attn_job *j = ctx;
    rf_engine *e = j->e;
    int t = (int)(task / (uint64_t)e->nh), h = (int)(task % (uint64_t)e->nh);
    uint64_t qd = (uint64_t)e->qdim, kvd = (uint64_t)e->kvdim, C = (uint64_t)e->max_ctx;
    int kvh = h / (e->nh / e->nkv);
    int p = j->p0 + t, first = first_pos(j, p);
    uint64_t off = (uint64_t)j->layer * C * kvd + (uint64_t)first * kvd + (uint64_t)kvh * e->hd;
    const float *q = e->q + (uint64_t)t * qd + (uint64_t)h * e->hd;
    float *o = e->att + (uint64_t)t * qd + (uint64_t)h * e->hd, *sc = e->att_scratch + (uint64_t)worker * C;
    if (e->cfg.attn_softcap > 0)
        rf_op_attend_ex(q, e->kcache + off, e->vcache + off, p + 1 - first, e->hd, (int)kvd, (float)e->cfg.attn_scale,
                        (float)e->cfg.attn_softcap, sc, o);
    else
        rf_op_attend(q, e->kcache + off, e->vcache + off, p + 1 - first, e->hd, (int)kvd, (float)e->cfg.attn_scale, sc, o);
}

/* Rotary tables for a batch ending at position END of a layer with FLAGS. */
static void rope_for(const rf_engine *e, unsigned flags, int end, const float **cs, const float **sn)
{
    if (flags & RF_LAYER_LOCAL) *cs = e->cos_l, *sn = e->sin_l;
    else if (e->cos_x && end > e->long_orig) *cs = e->cos_x, *sn = e->sin_x;
    else *cs = e->cos_g, *sn = e->sin_g;
}

static void gqa_attention(rf_engine *e, eng_layer *L, int li, int p0, int T)
{
    const rf_config *c = &e->cfg;
    uint64_t qd = (uint64_t)e->qdim, kvd = (uint64_t)e->kvdim, C = (uint64_t)e->max_ctx, h2 = (uint64_t)e->rd / 2;
    if (L->qkv.w.rows) { /* fused: rows q, then k, then v */
        linear(e, &L->qkv, e->h, T, e->big);
        for (int t = 0; t < T; t++) {
            const float *r = e->big + (uint64_t)t * (qd + 2 * kvd);
            memcpy(e->q + t * qd, r, qd * sizeof(float));
            memcpy(e->k + t * kvd, r + qd, kvd * sizeof(float));
            memcpy(e->v + t * kvd, r + qd + kvd, kvd * sizeof(float));
        }
    } else {
        const lin *l[3] = {&L->q, &L->k, &L->v};
        float *y[3] = {e->q, e->k, e->v};
        linear_n(e, l, 3, e->h, T, y);
    }
    int rope = !(L->flags & RF_LAYER_NOPE);
    const float *cs0, *sn0;
    rope_for(e, L->flags, p0 + T, &cs0, &sn0);
    for (int t = 0; t < T; t++) {
        uint64_t pos = (uint64_t)(p0 + t);
        const float *cs = cs0 + pos * h2, *sn = sn0 + pos * h2;
        /* llama4's temperature tuning of NoPE layers */
        float temp = 1;
        if (!rope && c->temp_tuning) temp = (float)(log1p(floor((double)(pos + 1) / c->floor_scale)) * c->temp_scale + 1.0);
        for (int h = 0; h < e->nh; h++) {
            float *q = e->q + t * qd + (uint64_t)h * e->hd;
            if (L->q_norm) rf_op_rmsnorm(q, L->q_norm, e->hd, e->eps, q);
            if (rope) rf_op_rope_ex(q, e->rd, cs, sn, c->rope_interleaved);
            if (rope && c->qk_norm == RF_QKNORM_L2) rf_op_l2norm(q, e->hd, e->eps);
            if (temp != 1)
                for (int i = 0; i < e->hd; i++) q[i] *= temp;
        }
        for (int h = 0; h < e->nkv; h++) {
            float *k = e->k + t * kvd + (uint64_t)h * e->hd;
            if (L->k_norm) rf_op_rmsnorm(k, L->k_norm, e->hd, e->eps, k);
            if (rope) rf_op_rope_ex(k, e->rd, cs, sn, c->rope_interleaved);
            if (rope && c->qk_norm == RF_QKNORM_L2) rf_op_l2norm(k, e->hd, e->eps);
        }
        uint64_t row = ((uint64_t)li * C + pos) * kvd;
        memcpy(e->kcache + row, e->k + t * kvd, kvd * sizeof(float));
        memcpy(e->vcache + row, e->v + t * kvd, kvd * sizeof(float));
    }
    attn_job j = {e, li, p0, T, L->window, (L->flags & RF_LAYER_CHUNKED) ? c->attention_chunk : 0};
    rf_pool_run((uint64_t)T * e->nh * (uint64_t)(p0 + T) < 4096 ? NULL : e->pool, (uint64_t)T * (uint64_t)e->nh,
                attn_task, &j);
    linear(e, &L->o, e->att, T, e->tmp);
}

/* Multi-head latent attention on the cached latents: scores q_nope . (W_k c) = (W_k^T q_nope) . c,
 * outputs W_v (sum a c) (the weight absorption mlx-lm uses for decoding). */
static void mla_task(void *ctx, uint64_t task, int worker)
{
    const attn_job *j = ctx;
    rf_engine *e = j->e;
    int t = (int)(task / (uint64_t)e->nh), h = (int)(task % (uint64_t)e->nh);
    uint64_t C = (uint64_t)e->max_ctx, kvl = (uint64_t)e->kvl, rdim = (uint64_t)e->rope_d;
    int p = j->p0 + t, first = first_pos(j, p), n = p + 1 - first;
    const float *qt = e->mq + ((uint64_t)t * e->nh + (uint64_t)h) * kvl;
    const float *qr = e->q + (uint64_t)t * e->qdim + (uint64_t)h * (e->nope + e->rope_d) + e->nope;
    const float *lat = e->kcache + ((uint64_t)j->layer * C + (uint64_t)first) * kvl;
    const float *kr = e->vcache + ((uint64_t)j->layer * C + (uint64_t)first) * rdim;
    float *sc = e->att_scratch + (uint64_t)worker * C, scale = (float)e->cfg.attn_scale;
    for (int s = 0; s < n; s++) {
        const float *cs = lat + (uint64_t)s * kvl, *ks = kr + (uint64_t)s * rdim;
        float d = 0, r = 0;
        for (uint64_t i = 0; i < kvl; i++) d += qt[i] * cs[i];
        for (uint64_t i = 0; i < rdim; i++) r += qr[i] * ks[i];
        sc[s] = (d + r) * scale;
    }
    rf_op_softmax(sc, n);
    float *o = e->mc + ((uint64_t)t * e->nh + (uint64_t)h) * kvl;
    memset(o, 0, kvl * sizeof(float));
    for (int s = 0; s < n; s++) {
        const float *cs = lat + (uint64_t)s * kvl;
        float a = sc[s];
        for (uint64_t i = 0; i < kvl; i++) o[i] += a * cs[i];
    }
}

static void mla_attention(rf_engine *e, eng_layer *L, int li, int p0, int T)
{
    const rf_config *c = &e->cfg;
    uint64_t qd = (uint64_t)e->qdim, kvl = (uint64_t)e->kvl, rdim = (uint64_t)e->rope_d, C = (uint64_t)e->max_ctx;
    uint64_t hq = (uint64_t)(e->nope + e->rope_d), h2 = rdim / 2, nh = (uint64_t)e->nh;
    if (L->q_a.w.rows) {
        uint64_t qa = L->q_a.w.rows;
        linear(e, &L->q_a, e->h, T, e->big);
        for (int t = 0; t < T; t++) rf_op_rmsnorm(e->big + t * qa, L->q_a_norm, (int)qa, (float)c->latent_norm_eps, e->big + t * qa);
        linear(e, &L->q_b, e->big, T, e->q);
    } else {
        linear(e, &L->q, e->h, T, e->q);
    }
    uint64_t kva = kvl + rdim;
    linear(e, &L->kv_a, e->h, T, e->big);
    const float *cs0, *sn0;
    rope_for(e, L->flags, p0 + T, &cs0, &sn0);
    for (int t = 0; t < T; t++) {
        uint64_t pos = (uint64_t)(p0 + t);
        const float *cs = cs0 + pos * h2, *sn = sn0 + pos * h2;
        float *ckv = e->big + t * kva;
        rf_op_rmsnorm(ckv, L->kv_a_norm, (int)kvl, (float)c->latent_norm_eps, e->kcache + ((uint64_t)li * C + pos) * kvl);
        float *kr = e->vcache + ((uint64_t)li * C + pos) * rdim;
        memcpy(kr, ckv + kvl, rdim * sizeof(float));
        rf_op_rope_ex(kr, (int)rdim, cs, sn, c->rope_interleaved);
        for (uint64_t h = 0; h < nh; h++) rf_op_rope_ex(e->q + t * qd + h * hq + e->nope, (int)rdim, cs, sn, c->rope_interleaved);
    }
    /* absorbed queries per head: gather q_nope of head h for the batch, times its [kv_lora, nope] */
    for (uint64_t h = 0; h < nh; h++) {
        for (int t = 0; t < T; t++) memcpy(e->att + (uint64_t)t * (uint64_t)e->nope, e->q + t * qd + h * hq,
                                           (uint64_t)e->nope * sizeof(float));
        linear(e, &L->kb[h], e->att, T, e->tmp);
        for (int t = 0; t < T; t++) memcpy(e->mq + ((uint64_t)t * nh + h) * kvl, e->tmp + (uint64_t)t * kvl, kvl * sizeof(float));
    }
    attn_job j = {e, li, p0, T, L->window, 0};
    rf_pool_run((uint64_t)T * nh * (uint64_t)(p0 + T) < 1024 ? NULL : e->pool, (uint64_t)T * nh, mla_task, &j);
    /* per head: values of the attended latents */
    uint64_t vh = (uint64_t)e->vh, od = (uint64_t)e->odim;
    for (uint64_t h = 0; h < nh; h++) {
        for (int t = 0; t < T; t++) memcpy(e->tmp + (uint64_t)t * kvl, e->mc + ((uint64_t)t * nh + h) * kvl, kvl * sizeof(float));
        linear(e, &L->vb[h], e->tmp, T, e->g);
        for (int t = 0; t < T; t++) memcpy(e->att + (uint64_t)t * od + h * vh, e->g + (uint64_t)t * vh, vh * sizeof(float));
    }
    linear(e, &L->o, e->att, T, e->tmp);
}

/* act(gate(x)) * up(x), then down: Y gets T rows of the output. G/U: scratch. */
static void glu(const rf_engine *e, const float *g, const float *u, int n, float *out)
{
    if (e->fast && e->cfg.act == RF_ACT_SILU) rf_op_swiglu_fast(g, u, n, out); /* a vectorised exp */
    else rf_op_glu(e->cfg.act, g, u, n, out);
}

/* gate and up (or fused gate_up) of x, the activation, down: into y. gb, ub: T rows of the
 * intermediate width each; the products on pool. */
static void glu_mlp_on(rf_engine *e, const lin *g, const lin *u, const lin *gu, const lin *d, const float *x, int T,
                       float *y, float *gb, float *ub, rf_pool *pool)
{
    uint64_t f = d->w.cols;
    if (gu && gu->w.rows) {
        linear_on(e, gu, x, T, e->big, pool);
        for (int t = 0; t < T; t++)
            glu(e, e->big + (uint64_t)t * 2 * f, e->big + (uint64_t)t * 2 * f + f, (int)f, gb + (uint64_t)t * f);
    } else {
        const lin *l[2] = {g, u};
        float *out[2] = {gb, ub};
        linear_n_on(e, l, 2, x, T, out, pool);
        glu(e, gb, ub, (int)(f * (uint64_t)T), gb);
    }
    linear_on(e, d, gb, T, y, pool);
}

static void glu_mlp(rf_engine *e, const lin *g, const lin *u, const lin *gu, const lin *d, const float *x, int T,
                    float *y)
{
    glu_mlp_on(e, g, u, gu, d, x, T, y, e->g, e->u, e->pool);
}


/* The routed slots (s = t * topk + j) in expert order, tokens ascending within an expert
 * (counting sort): expert x has slots mx_slot[mx_pos[x] .. mx_pos[x + 1]). Returns the number
 * of experts in use. */
static int moe_sort(rf_engine *e, int T)
{
    uint64_t K = (uint64_t)e->topk;
    int *pos = e->mx_pos, nexp = e->nexp, used = 0;
    memset(pos, 0, sizeof(int) * ((size_t)nexp + 1));
    for (uint64_t s = 0; s < (uint64_t)T * K; s++) pos[e->ri[s] + 1]++;
    for (int x = 0; x < nexp; x++) {
        used += pos[x + 1] > 0;
        pos[x + 1] += pos[x];
    }
    int fill[RF_MAX_EXPERTS];
    memcpy(fill, pos, sizeof(int) * (size_t)nexp);
    for (uint64_t s = 0; s < (uint64_t)T * K; s++) e->mx_slot[fill[e->ri[s]]++] = (int)s;
    return used;
}

/* Expert x's tokens from the normed batch into xe (Llama 4 scales the input by the router
 * weight), then its MLP into y, the products on pool; gb, ub: gate and up rows. */
static void run_expert(rf_engine *e, eng_layer *L, int x, float *xe, float *gb, float *ub, float *y, rf_pool *pool)
{
    uint64_t dim = (uint64_t)e->dim, K = (uint64_t)e->topk;
    int p0 = e->mx_pos[x], m = e->mx_pos[x + 1] - p0;
    int scale_input = e->route.kind == RF_ROUTER_LLAMA4;
    for (int i = 0; i < m; i++) {
        int s = e->mx_slot[p0 + i];
        const float *src = e->h + (uint64_t)s / K * dim;
        float *dst = xe + (uint64_t)i * dim;
        if (scale_input) {
            float w = e->rw[s];
            for (uint64_t c = 0; c < dim; c++) dst[c] = src[c] * w;
        } else {
            memcpy(dst, src, dim * sizeof(float));
        }
    }
    glu_mlp_on(e, &L->eg[x], &L->eu[x], NULL, &L->ed[x], xe, m, y, gb, ub, pool);
}

/* tmp[t] += w * y for the slots at positions [p0, p1) of the expert order, y's rows theirs. */
static void add_experts(rf_engine *e, int p0, int p1, const float *y)
{
    uint64_t dim = (uint64_t)e->dim, K = (uint64_t)e->topk;
    int scale_input = e->route.kind == RF_ROUTER_LLAMA4;
    for (int p = p0; p < p1; p++) {
        int s = e->mx_slot[p];
        float w = scale_input ? 1.0f : e->rw[s];
        float *dst = e->tmp + (uint64_t)s / K * dim;
        const float *src = y + (uint64_t)(p - p0) * dim;
        for (uint64_t c = 0; c < dim; c++) dst[c] += w * src[c];
    }
}

/* Experts side by side: each pool task runs one expert whole (gather its tokens, gate/up, down)
 * on one thread, its outputs into its own rows of mx_y; then the weighted outputs are added in
 * expert order, as the loop in moe() adds them. One pool job a layer instead of two per expert,
 * and the gathering in parallel: the MoE prompt spent about a tenth of its time in pool waits
 * and serial copies. The products do not depend on the thread that runs them (rows are split,
 * never a sum), so the results are the loop's to the bit. Only with enough experts in use to
 * keep every thread busy (a few experts over many threads keep the row split), for batches (not
 * decode: each expert's rows split over the threads measured 2-3% faster), and without an
 * observer (calibration wants products in order). Returns whether it ran. */
typedef struct {
    rf_engine *e;
    eng_layer *L;
    int nx, xs[RF_MAX_EXPERTS];
} mx_job;

static void mx_task(void *ctx, uint64_t task, int worker)
{
    mx_job *j = ctx;
    rf_engine *e = j->e;
    int x = j->xs[task];
    uint64_t dim = (uint64_t)e->dim, B = (uint64_t)e->max_batch, fe = j->L->ed[x].w.cols;
    run_expert(e, j->L, x, e->mx_x + (uint64_t)worker * B * dim, e->mx_g + (uint64_t)worker * B * fe,
               e->mx_u + (uint64_t)worker * B * fe, e->mx_y + (uint64_t)e->mx_pos[x] * dim, NULL);
}

static int moe_parallel(rf_engine *e, eng_layer *L, int used, int T)
{
    if (!e->mx_y || e->observer || T < 2 || used < MX_PER_THREAD * e->nthreads) return 0;
    mx_job j = {.e = e, .L = L};
    for (int x = 0; x < e->nexp; x++)
        if (e->mx_pos[x + 1] > e->mx_pos[x]) j.xs[j.nx++] = x;
    /* the kernel timers time a product on the thread that calls it; here the workers do, so the
     * whole job counts as the products (the pool's start and end order the flag's writes) */
    int prof = rf_prof_on;
    uint64_t t0 = prof ? rf_prof_now() : 0;
    rf_prof_on = 0;
    rf_pool_run(e->pool, (uint64_t)j.nx, mx_task, &j);
    rf_prof_on = prof;
    if (prof) rf_prof_add(e->fast ? RF_PROF_MATMUL_Q8 : RF_PROF_MATMUL, t0);
    add_experts(e, 0, e->mx_pos[e->nexp], e->mx_y);
    return 1;
}

/* Sparse MoE on the normed batch e->h: route each token, then run every expert that got any
 * token on the tokens routed to it (batched), adding weighted outputs in expert order; shared
 * experts on every token. */
static void moe(rf_engine *e, eng_layer *L, int T)
{
    uint64_t dim = (uint64_t)e->dim, K = (uint64_t)e->topk;
    rf_route_opts ro = e->route;
    ro.bias = L->router_bias;
    linear(e, &L->router, e->h, T, e->rl);
    for (int t = 0; t < T; t++) rf_moe_route_ex(&ro, e->rl + t * (uint64_t)e->nexp, e->ri + t * K, e->rw + t * K);
    memset(e->tmp, 0, (uint64_t)T * dim * sizeof(float));
    int used = moe_sort(e, T);
    if (!moe_parallel(e, L, used, T))
        for (int x = 0; x < e->nexp; x++) { /* one expert at a time, its rows split over the pool */
            int p0 = e->mx_pos[x], p1 = e->mx_pos[x + 1];
            if (p1 == p0) continue;
            run_expert(e, L, x, e->xe, e->g, e->u, e->ye, e->pool);
            add_experts(e, p0, p1, e->ye);
        }
    if (!L->sd.w.rows) return;
    glu_mlp(e, &L->sg, &L->su, NULL, &L->sd, e->h, T, e->sh);
    if (L->sh_route.w.rows) { /* qwen2_moe: sigmoid(shared_expert_gate(x)) scales the shared expert */
        linear(e, &L->sh_route, e->h, T, e->rl);
        for (int t = 0; t < T; t++) {
            float gt = 1.0f / (1.0f + expf(-e->rl[t]));
            for (uint64_t c = 0; c < dim; c++) e->sh[t * dim + c] *= gt;
        }
    }
    for (uint64_t i = 0; i < (uint64_t)T * dim; i++) e->tmp[i] += e->sh[i];
}

static void residual(rf_engine *e, const float *post, int T)
{
    uint64_t dim = (uint64_t)e->dim;
    if (post)
        for (int t = 0; t < T; t++) rf_op_rmsnorm(e->tmp + t * dim, post, e->dim, e->eps, e->tmp + t * dim);
    for (uint64_t i = 0; i < (uint64_t)T * dim; i++) e->x[i] += e->tmp[i];
}

/* One batch of T <= max_batch tokens at positions pos.. ; logits of the last `nlog` tokens. */
static void forward_batch(rf_engine *e, const int32_t *tok, int T, float *logits, int nlog)
{
    uint64_t dim = (uint64_t)e->dim;
    float es = e->embed_scale;
    for (int t = 0; t < T; t++) {
        rf_wmat_row(&e->embed.w, (uint64_t)tok[t], e->x + t * dim);
        if (es != 0)
            for (uint64_t i = 0; i < dim; i++) e->x[t * dim + i] *= es;
    }
    for (int l = 0; l < e->cfg.num_layers; l++) {
        eng_layer *L = &e->layers[l];
        for (int t = 0; t < T; t++) rf_op_rmsnorm(e->x + t * dim, L->attn_norm, e->dim, e->eps, e->h + t * dim);
        if (e->mla) mla_attention(e, L, l, e->pos, T);
        else gqa_attention(e, L, l, e->pos, T);
        residual(e, L->post_attn_norm, T);
        for (int t = 0; t < T; t++) rf_op_rmsnorm(e->x + t * dim, L->mlp_norm, e->dim, e->eps, e->h + t * dim);
        if (L->moe) moe(e, L, T);
        else glu_mlp(e, &L->gate, &L->up, &L->gate_up, &L->down, e->h, T, e->tmp);
        residual(e, L->post_mlp_norm, T);
    }
    e->pos += T;
    if (!logits || nlog <= 0) return;
    for (int t = T - nlog; t < T; t++)
        rf_op_rmsnorm(e->x + t * dim, e->final_norm, e->dim, e->eps, e->h + (uint64_t)(t - (T - nlog)) * dim);
    linear(e, &e->lm_head, e->h, nlog, logits);
    float cap = (float)e->cfg.final_softcap;
    if (cap > 0)
        for (uint64_t i = 0; i < (uint64_t)nlog * (uint64_t)e->vocab; i++) logits[i] = tanhf(logits[i] / cap) * cap;
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
