/* Writing a model as a GGUF file for llama.cpp.
 *
 * The output is a list of items (one GGUF tensor each) in catalogue order: unit weights in their
 * GGUF type, every other tensor as F32, plus rope_freqs for llama3 rope scaling. Items are cut
 * into jobs of a few MiB of source rows; a wave of jobs is encoded on the pool into an arena and
 * then written in job order, so the bytes never depend on the thread count. Everything is
 * checked (family, config, tokenizer, types against shapes) before the first byte is written. */
#include "io/gguf_arch.h"
#include "plan/plan_internal.h"
#include "tokenizer/tok_gguf.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef unsigned long long ull;

#define GX_JOB_BYTES (4u << 20)
#define GX_WAVE_BYTES (32u << 20)
#define GX_WAVE_JOBS 64u

void rf_gguf_opts_default(rf_gguf_opts *o) { memset(o, 0, sizeof *o); }

/* ------------------------------------------------------------------ type choice */

static int is_float_type(int t) { return t == RF_GT_F32 || t == RF_GT_F16 || t == RF_GT_BF16; }

int rf_gguf_type_for_bits(int bits, uint64_t cols, rf_role role, int kept_type)
{
    if (role == RF_ROLE_ROUTER) return RF_GT_F32;
    int t;
    switch (bits) {
    case 0: return kept_type;
    case 2: t = RF_GT_Q2_K; break;
    case 3: t = RF_GT_Q3_K; break;
    case 4: t = RF_GT_Q4_K; break;
    case 5: t = RF_GT_Q5_K; break;
    case 6: t = RF_GT_Q6_K; break;
    case 8: t = RF_GT_Q8_0; break;
    default: return -1;
    }
    return rf_gtype_fallback(t, cols);
}

rf_status rf_gguf_types_uniform(const rf_model *m, int type, int *types, rf_err *err)
{
    if (!rf_gtype_supported(type))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "ramfit cannot write GGUF type %s",
                          rf_gtype_name(type) ? rf_gtype_name(type) : "(unknown)");
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        types[u] = un->role == RF_ROLE_ROUTER ? RF_GT_F32 : rf_gtype_fallback(type, un->cols);
    }
    return RF_OK;
}

/* A GGUF plan's unit has its type (checked against the rows); an MLX plan's follows from its bits. */
static int plan_unit_type(const rf_plan *plan, const rf_plan_unit *pu, uint64_t cols, int kept_type)
{
    if (!rf_plan_is_gguf(plan) || pu->role == RF_ROLE_ROUTER || !pu->bits) return rf_gguf_type_for_bits(pu->bits, cols, pu->role, kept_type);
    return rf_gcand_mask(cols) >> rf_gcand_index(pu->gtype) & 1 ? pu->gtype : -1;
}

rf_status rf_gguf_types_from_plan(const rf_model *m, const rf_plan *plan, int kept_type, int *types, rf_err *err)
{
    if (!is_float_type(kept_type))
        return rf_err_set(err, RF_ERR_INVALID, "unquantized weights must be F32, F16 or BF16 in GGUF, not %s",
                          rf_gtype_name(kept_type) ? rf_gtype_name(kept_type) : "(unknown)");
    uint64_t fp = rf_st_fingerprint(rf_model_st(m));
    if (rf_plan_fingerprint(plan) != fp)
        return rf_err_set(err, RF_ERR_MISMATCH, "the plan was made for %s (fingerprint %016llx), not for %s "
                          "(fingerprint %016llx)", rf_plan_model_name(plan), (ull)rf_plan_fingerprint(plan),
                          rf_model_dir(m), (ull)fp);
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        int64_t pi = rf_plan_find_unit(plan, un->name);
        if (pi < 0)
            return rf_err_set(err, RF_ERR_MISMATCH, "the plan has no unit %s: it was made for another model (%s)",
                              un->name, rf_plan_model_name(plan));
        const rf_plan_unit *pu = rf_plan_get_unit(plan, (uint64_t)pi);
        types[u] = plan_unit_type(plan, pu, un->cols, kept_type);
        if (types[u] < 0)
            return rf_err_set(err, RF_ERR_MISMATCH, "plan unit %s: %d bits%s has no GGUF type for rows of %llu", un->name,
                              pu->bits, pu->gtype ? " (a GGUF type)" : "", (ull)un->cols);
    }
    return RF_OK;
}

/* ------------------------------------------------------------------ items and jobs */

typedef struct gx_item {
    char name[RF_GGUF_MAX_NAME + 1];
    int type;
    const rf_unit *unit;      /* a unit weight, or NULL */
    const rf_tensor *plain;   /* a non-unit tensor, or NULL */
    float *synth;             /* generated F32 data (rope_freqs), owned */
    int nmem;
    uint64_t rows, cols;      /* of one member (1-D tensors: rows = elements, cols = 1) */
    uint64_t perm_hd;         /* q/k row permutation: rows per head; 0: none */
    int ndim;
    uint64_t ne[RF_GGUF_MAX_DIMS];
    uint64_t bytes, params;
    uint64_t job0, njobs;
} gx_item;

typedef struct gx_job {
    uint32_t item, member;
    uint64_t row0, nrows;
    uint64_t out_off, out_len;
} gx_job;

typedef struct gx {
    const rf_model *m;
    const rf_gguf_family *fam;
    const int *types;
    gx_item *items;
    uint64_t nitems;
    gx_job *jobs;
    uint64_t njobs;
    uint8_t *arena;
    uint64_t wave0;
    rf_err *jerr;
    rf_status *jst;
} gx;

static const rf_tensor *member_tensor(const gx *g, const gx_item *it, int k)
{
    return it->unit ? rf_model_tinfo(g->m, (uint64_t)it->unit->members[k])->t : it->plain;
}

static rf_status add_item(gx *g, const gx_item *it, rf_err *err)
{
    gx_item *n = realloc(g->items, (size_t)(g->nitems + 1) * sizeof *n);
    if (!n) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    g->items = n;
    g->items[g->nitems++] = *it;
    return RF_OK;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* ggml's shape: the Hugging Face dims reversed. */
static void set_shape(gx_item *it, const rf_tensor *t)
{
    it->ndim = t->ndim ? t->ndim : 1;
    for (int d = 0; d < RF_GGUF_MAX_DIMS; d++) it->ne[d] = 1;
    for (int d = 0; d < t->ndim; d++) it->ne[d] = t->shape[t->ndim - 1 - d];
}

/* Heads of the q (or k) projection the rows of ROLE are split into. */
static uint64_t perm_head_dim(const gx *g, rf_role role, uint64_t rows)
{
    const rf_config *c = rf_model_config(g->m);
    if (!g->fam->permute_qk) return 0;
    int heads = role == RF_ROLE_ATTN_Q ? c->num_heads : role == RF_ROLE_ATTN_K ? (c->num_kv_heads > 0 ? c->num_kv_heads : c->num_heads) : 0;
    if (heads <= 0 || rows % (uint64_t)heads) return 0;
    return rows / (uint64_t)heads;
}

static rf_status unit_item(gx *g, uint64_t ui, gx_item *it, rf_err *err)
{
    const rf_unit *u = rf_model_unit(g->m, ui);
    const rf_tensor *t0 = rf_model_tinfo(g->m, (uint64_t)u->members[0])->t;
    char hf[200];
    snprintf(hf, sizeof hf, "%s.weight", u->name);
    memset(it, 0, sizeof *it);
    if (!rf_gguf_tensor_name(g->fam, hf, it->name, sizeof it->name))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: unit %s has no name in llama.cpp's %s architecture",
                          rf_model_dir(g->m), u->name, g->fam->gguf_arch);
    int type = g->types[ui];
    if (!rf_dtype_is_float(u->dtype))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: unit %s has dtype %s: only F32/F16/BF16 checkpoints can be "
                          "written as GGUF", rf_model_dir(g->m), u->name, rf_dtype_name(u->dtype));
    if (!rf_gtype_supported(type))
        return rf_err_set(err, RF_ERR_INVALID, "unit %s: ramfit cannot write GGUF type %s", u->name,
                          rf_gtype_name(type) ? rf_gtype_name(type) : "(unknown)");
    if (!rf_gtype_row_bytes(type, u->cols))
        return rf_err_set(err, RF_ERR_INVALID, "unit %s: %s needs rows of a multiple of %llu weights, the unit's have "
                          "%llu", u->name, rf_gtype_name(type), (ull)rf_gtype_block(type), (ull)u->cols);
    it->type = type;
    it->unit = u;
    it->nmem = u->n_members;
    it->cols = u->cols;
    it->rows = t0->nelem / u->cols;
    it->params = u->nparams;
    if (u->n_experts == 0) it->perm_hd = perm_head_dim(g, u->role, it->rows);
    if (u->n_members > 1) { /* per-expert tensors stacked: ne [in, out, E] */
        it->ndim = 3;
        it->ne[0] = u->cols, it->ne[1] = u->rows, it->ne[2] = (uint64_t)u->n_members, it->ne[3] = 1;
    } else {
        set_shape(it, t0);
    }
    it->bytes = rf_gtype_row_bytes(type, u->cols) * (it->params / u->cols);
    return RF_OK;
}

static rf_status plain_item(gx *g, const rf_tinfo *ti, gx_item *it, int *skip, rf_err *err)
{
    const rf_tensor *t = ti->t;
    memset(it, 0, sizeof *it);
    *skip = 0;
    if (!rf_gguf_tensor_name(g->fam, t->name, it->name, sizeof it->name)) {
        if (ends_with(t->name, ".rotary_emb.inv_freq")) { /* a buffer llama.cpp's converter drops */
            *skip = 1;
            return RF_OK;
        }
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s has no name in llama.cpp's %s architecture",
                          t->file, t->name, g->fam->gguf_arch);
    }
    if (!rf_dtype_is_float(t->dtype))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s", t->file, t->name, rf_dtype_name(t->dtype));
    it->type = RF_GT_F32;
    it->plain = t;
    it->nmem = 1;
    it->cols = t->ndim >= 2 ? t->shape[t->ndim - 1] : 1;
    it->rows = it->cols ? t->nelem / it->cols : 0;
    it->params = t->nelem;
    /* q/k biases are permuted like their weights' rows */
    if (ti->role == RF_ROLE_BIAS && t->ndim == 1) {
        rf_role r = ends_with(t->name, "q_proj.bias") ? RF_ROLE_ATTN_Q : ends_with(t->name, "k_proj.bias") ? RF_ROLE_ATTN_K : RF_ROLE_OTHER;
        it->perm_hd = perm_head_dim(g, r, it->rows);
    }
    set_shape(it, t);
    it->bytes = t->nelem * 4;
    return RF_OK;
}

/* llama3 rope scaling as llama.cpp reads it: per-frequency divisors in rope_freqs.weight. */
static rf_status rope_item(gx *g, gx_item *it, rf_err *err)
{
    const rf_config *c = rf_model_config(g->m);
    int hd = (int)rf_gguf_meta_value(c, RF_GS_HEAD_DIM), n = hd / 2;
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "rope_freqs.weight");
    if (!(it->synth = malloc(sizeof(float) * (size_t)(n ? n : 1)))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    double base = c->rope.theta > 0 ? c->rope.theta : 10000.0, factor = c->rope.factor > 0 ? c->rope.factor : 8.0;
    double lo = c->rope.low_freq_factor > 0 ? c->rope.low_freq_factor : 1.0;
    double hi = c->rope.high_freq_factor > 0 ? c->rope.high_freq_factor : 4.0;
    double old = c->rope.original_max_pos > 0 ? c->rope.original_max_pos : 8192;
    for (int i = 0; i < n; i++) {
        double freq = 1.0 / pow(base, (double)(2 * i) / hd), wavelen = 2 * M_PI / freq;
        double f;
        if (wavelen < old / hi) f = 1;
        else if (wavelen > old / lo) f = factor;
        else {
            double smooth = (old / wavelen - lo) / (hi - lo);
            f = 1 / ((1 - smooth) / factor + smooth);
        }
        it->synth[i] = (float)f;
    }
    it->type = RF_GT_F32;
    it->nmem = 1;
    it->rows = (uint64_t)n;
    it->cols = 1;
    it->params = (uint64_t)n;
    it->ndim = 1;
    it->ne[0] = (uint64_t)n, it->ne[1] = it->ne[2] = it->ne[3] = 1;
    it->bytes = 4 * (uint64_t)n;
    return RF_OK;
}

static rf_status build_items(gx *g, rf_err *err)
{
    const rf_model *m = g->m;
    const rf_config *cfg = rf_model_config(m);
    uint64_t nt = rf_model_tensor_count(m), nu = rf_model_unit_count(m);
    uint8_t *done = calloc(nu + 1, 1);
    rf_status s = done ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < nt && !s; i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        gx_item it;
        int skip = 0;
        if (ti->quant_aux) {
            s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s: the model is MLX-quantized; write GGUF from the "
                           "original checkpoint", ti->t->file, ti->t->name);
        } else if (ti->unit >= 0) {
            if (done[ti->unit]) continue;
            done[ti->unit] = 1;
            const rf_unit *u = rf_model_unit(m, (uint64_t)ti->unit);
            if (u->role == RF_ROLE_LM_HEAD && cfg->tie_word_embeddings) continue; /* llama.cpp uses token_embd */
            s = unit_item(g, (uint64_t)ti->unit, &it, err);
            if (!s) s = add_item(g, &it, err);
        } else {
            s = plain_item(g, ti, &it, &skip, err);
            if (!s && !skip) s = add_item(g, &it, err);
        }
    }
    free(done);
    if (!s && g->fam->permute_qk && !strcmp(cfg->rope.type, "llama3")) {
        gx_item it;
        s = rope_item(g, &it, err);
        if (!s) s = add_item(g, &it, err);
        else free(it.synth);
    }
    return s;
}

static uint64_t item_out_row(const gx_item *it) { return rf_gtype_row_bytes(it->type, it->cols); }

static rf_status build_jobs(gx *g, rf_err *err)
{
    uint64_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        n = 0;
        for (uint64_t i = 0; i < g->nitems; i++) {
            gx_item *it = &g->items[i];
            uint64_t row_in = it->cols * 4, per = row_in ? GX_JOB_BYTES / row_in : 1;
            if (per == 0) per = 1;
            it->job0 = n;
            for (int k = 0; k < it->nmem; k++)
                for (uint64_t r = 0; r < it->rows; r += per, n++) {
                    if (pass == 0) continue;
                    gx_job *j = &g->jobs[n];
                    j->item = (uint32_t)i;
                    j->member = (uint32_t)k;
                    j->row0 = r;
                    j->nrows = it->rows - r < per ? it->rows - r : per;
                    j->out_len = j->nrows * item_out_row(it);
                }
            it->njobs = n - it->job0;
        }
        if (pass == 0 && !(g->jobs = calloc(n ? n : 1, sizeof *g->jobs)))
            return rf_err_set(err, RF_ERR_NOMEM, "out of memory (%llu jobs)", (ull)n);
    }
    g->njobs = n;
    return RF_OK;
}

/* ------------------------------------------------------------------ encoding */

static void run_job(void *ctx, uint64_t task, int worker)
{
    (void)worker;
    gx *g = ctx;
    gx_job *j = &g->jobs[g->wave0 + task];
    gx_item *it = &g->items[j->item];
    rf_err *e = &g->jerr[task];
    rf_status s = RF_OK;
    uint64_t nx = j->nrows * it->cols;
    float *x = malloc(sizeof(float) * (size_t)(nx ? nx : 1));
    if (!x) {
        g->jst[task] = rf_err_set(e, RF_ERR_NOMEM, "out of memory (%llu rows of %s)", (ull)j->nrows, it->name);
        return;
    }
    const rf_tensor *t = it->synth ? NULL : member_tensor(g, it, (int)j->member);
    for (uint64_t r = 0; r < j->nrows && !s; r++) {
        uint64_t row = j->row0 + r, src = it->perm_hd ? rf_gguf_qk_src_row(row, it->perm_hd) : row;
        if (it->synth) memcpy(x + r * it->cols, it->synth + src * it->cols, sizeof(float) * it->cols);
        else
            s = rf_convert_to_f32(t->dtype, (const uint8_t *)t->data + src * it->cols * rf_dtype_size(t->dtype),
                                  x + r * it->cols, it->cols, e);
    }
    if (!s) s = rf_gquant_rows(it->type, x, j->nrows, it->cols, g->arena + j->out_off, e);
    if (s && t) {
        /* rows of the job are the GGUF rows; name the source tensor and its rows */
        rf_err_prefix(e, "%s: tensor %s (rows %llu..%llu%s)", t->file, t->name, (ull)j->row0,
                      (ull)(j->row0 + j->nrows - 1), it->perm_hd ? ", in GGUF order" : "");
    }
    free(x);
    g->jst[task] = s;
}

/* ------------------------------------------------------------------ metadata */

/* llama.cpp's general.file_type for the type holding most parameters (informational there). */
static uint32_t file_type(const rf_gguf_result *r)
{
    static const struct { int t; uint32_t ft; } map[] = {
        {RF_GT_F32, 0}, {RF_GT_F16, 1}, {RF_GT_Q4_0, 2}, {RF_GT_Q4_1, 3}, {RF_GT_Q8_0, 7}, {RF_GT_Q5_0, 8},
        {RF_GT_Q5_1, 9}, {RF_GT_Q2_K, 10}, {RF_GT_Q3_K, 11}, {RF_GT_Q4_K, 14}, {RF_GT_Q5_K, 16}, {RF_GT_Q6_K, 18},
        {RF_GT_IQ4_NL, 25}, {RF_GT_IQ4_XS, 30}, {RF_GT_BF16, 32},
    };
    int best = RF_GT_F32;
    for (int t = 0; t < RF_GT_COUNT; t++)
        if (r->type_params[t] > r->type_params[best] || (r->type_params[t] == r->type_params[best] && rf_gtype_is_quantized(t)))
            best = t;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].t == best) return map[i].ft;
    return 1024; /* LLAMA_FTYPE_GUESSED */
}

static rf_status write_meta(gx *g, rf_ggufw *w, const rf_gguf_opts *o, rf_gguf_result *res, rf_err *err)
{
    const rf_model *m = g->m;
    const rf_config *c = rf_model_config(m);
    const char *arch = g->fam->gguf_arch;
    char name[256], key[128];
    if (o->name) {
        snprintf(name, sizeof name, "%s", o->name);
    } else {
        const char *d = rf_model_dir(m);
        size_t l = strlen(d);
        while (l > 1 && d[l - 1] == '/') l--;
        const char *b = d + l;
        while (b > d && b[-1] != '/') b--;
        snprintf(name, sizeof name, "%.*s", (int)(d + l - b), b);
    }
    rf_status s = rf_ggufw_set_str(w, "general.architecture", arch, err);
    if (!s) s = rf_ggufw_set_str(w, "general.type", "model", err);
    if (!s) s = rf_ggufw_set_str(w, "general.name", name, err);
    if (!s) s = rf_ggufw_set_u32(w, "general.file_type", file_type(res), err);
    if (!s) s = rf_ggufw_set_u32(w, "general.quantization_version", 2, err);
    for (size_t i = 0; i < g->fam->nmeta && !s; i++) {
        const rf_gguf_meta *k = &g->fam->meta[i];
        if (k->moe_only && c->num_experts <= 0) continue;
        snprintf(key, sizeof key, "%s.%s", arch, k->key);
        double v = rf_gguf_meta_value(c, k->src);
        if (k->src == RF_GS_ROPE_BASE || k->src == RF_GS_RMS_EPS) s = rf_ggufw_set_f32(w, key, (float)v, err);
        else if (v < 0 || v > 4294967295.0) s = rf_err_set(err, RF_ERR_FORMAT, "%s: %s = %g does not fit", rf_model_dir(m), key, v);
        else s = rf_ggufw_set_u32(w, key, (uint32_t)v, err);
    }
    if (!s) {
        rf_tok_gguf_info ti;
        s = rf_tok_gguf_write(rf_model_dir(m), c, c->vocab_size, w, &ti, err);
        snprintf(res->tok_model, sizeof res->tok_model, "%s", ti.model);
        snprintf(res->tok_pre, sizeof res->tok_pre, "%s", ti.pre);
    }
    return s;
}

/* ------------------------------------------------------------------ output path */

/* PATH must not be in the model directory (ramfit never writes there) nor a directory. */
static rf_status check_path(const char *model_dir, const char *path, int force, rf_err *err)
{
    char mreal[PATH_MAX], preal[PATH_MAX], parent[PATH_MAX];
    if (!*path || strlen(path) >= sizeof parent) return rf_err_set(err, RF_ERR_INVALID, "invalid output path '%s'", path);
    if (!realpath(model_dir, mreal)) return rf_err_errno(err, errno, "%s", model_dir);
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash == parent) parent[1] = '\0';
    else if (slash) *slash = '\0';
    else strcpy(parent, ".");
    if (!realpath(parent, preal)) return rf_err_errno(err, errno, "output directory %s", parent);
    if (!strcmp(preal, mreal))
        return rf_err_set(err, RF_ERR_INVALID, "output %s is in the model directory %s: ramfit never writes into the "
                          "model", path, mreal);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) return rf_err_set(err, RF_ERR_INVALID, "output %s is a directory", path);
        if (!force) return rf_err_set(err, RF_ERR_EXISTS, "%s already exists (use --force to replace it)", path);
    }
    return RF_OK;
}

/* ------------------------------------------------------------------ entry point */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static rf_status write_data(gx *g, rf_ggufw *w, rf_pool *pool, const rf_progress *pr, rf_err *err)
{
    uint64_t cap = 0, total = 0, done = 0;
    for (uint64_t i = 0; i < g->nitems; i++) total += g->items[i].bytes;
    g->jerr = calloc(GX_WAVE_JOBS, sizeof *g->jerr);
    g->jst = calloc(GX_WAVE_JOBS, sizeof *g->jst);
    if (!g->jerr || !g->jst) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t k = 0; k < g->njobs;) {
        if (pr && pr->cancel && *pr->cancel) return rf_err_set(err, RF_ERR_INTERRUPTED, "GGUF export interrupted");
        uint64_t used = 0, end = k;
        while (end < g->njobs && end - k < GX_WAVE_JOBS && (end == k || used + g->jobs[end].out_len <= GX_WAVE_BYTES)) {
            g->jobs[end].out_off = used;
            used += (g->jobs[end].out_len + 63) & ~63ull;
            end++;
        }
        if (used > cap) {
            uint8_t *a = realloc(g->arena, used);
            if (!a) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (%llu-byte buffer)", (ull)used);
            g->arena = a;
            cap = used;
        }
        g->wave0 = k;
        rf_pool_run(pool, end - k, run_job, g);
        for (uint64_t i = k; i < end; i++) {
            if (g->jst[i - k]) {
                if (err) *err = g->jerr[i - k];
                return g->jst[i - k];
            }
            rf_status s = rf_ggufw_write(w, g->arena + g->jobs[i].out_off, g->jobs[i].out_len, err);
            if (s) return s;
            done += g->jobs[i].out_len;
        }
        /* the mapped source pages are not needed again */
        for (uint64_t i = k; i < end; i++) {
            const gx_item *it = &g->items[g->jobs[i].item];
            if (!it->synth) rf_st_advise_dontneed(rf_model_st(g->m), member_tensor(g, it, (int)g->jobs[i].member));
        }
        if (pr && pr->fn) pr->fn(pr->user, done, total, g->items[g->jobs[end - 1].item].name);
        k = end;
    }
    return RF_OK;
}

static void gx_free(gx *g)
{
    for (uint64_t i = 0; i < g->nitems; i++) free(g->items[i].synth);
    free(g->items);
    free(g->jobs);
    free(g->arena);
    free(g->jerr);
    free(g->jst);
}

/* Everything up to the tensor data: checks, items, jobs, the header on W (PATH NULL: a sizing
 * writer, no output checks). */
static rf_status gx_prepare(gx *g, const rf_gguf_opts *o, const char *path, rf_ggufw **w, rf_gguf_result *r, rf_err *err)
{
    const rf_model *m = g->m;
    const rf_config *c = rf_model_config(m);
    g->fam = rf_gguf_family_of(c->arch);
    rf_status s = RF_OK;
    const char *why;
    if (!g->fam)
        s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: ramfit has no GGUF mapping for architecture %s", rf_model_dir(m),
                       c->model_type);
    else if ((why = g->fam->unsupported(c)))
        s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: cannot write %s as llama.cpp's %s: %s", rf_model_dir(m),
                       c->model_type, g->fam->gguf_arch, why);
    if (!s && path) s = check_path(rf_model_dir(m), path, o->force, err);
    if (!s) s = build_items(g, err);
    if (!s && path) s = build_jobs(g, err);
    for (uint64_t i = 0; i < g->nitems && !s; i++) {
        r->type_params[g->items[i].type] += g->items[i].params;
        r->params += g->items[i].params;
        r->tensor_bytes += g->items[i].bytes;
    }
    if (!s) s = rf_ggufw_create(path, w, err);
    if (!s) s = write_meta(g, *w, o, r, err);
    for (uint64_t i = 0; i < g->nitems && !s; i++)
        s = rf_ggufw_add_tensor(*w, g->items[i].name, g->items[i].type, g->items[i].ndim, g->items[i].ne, err);
    return s;
}

rf_status rf_gguf_file_bytes(const rf_model *m, const int *types, const rf_gguf_opts *opts, uint64_t *bytes, rf_err *err)
{
    if (!m || !types || !bytes) return rf_err_set(err, RF_ERR_INVALID, "rf_gguf_file_bytes: NULL argument");
    rf_gguf_opts o;
    if (opts) o = *opts;
    else rf_gguf_opts_default(&o);
    rf_gguf_result r;
    memset(&r, 0, sizeof r);
    gx g = {.m = m, .types = types};
    rf_ggufw *w = NULL;
    rf_status s = gx_prepare(&g, &o, NULL, &w, &r, err);
    if (!s) *bytes = rf_ggufw_file_size(w);
    rf_ggufw_free(w);
    gx_free(&g);
    return s;
}

rf_status rf_gguf_export(const rf_model *m, const int *types, const rf_gguf_opts *opts, const char *path,
                         const rf_progress *progress, rf_gguf_result *res, rf_err *err)
{
    if (!m || !types || !path) return rf_err_set(err, RF_ERR_INVALID, "rf_gguf_export: NULL argument");
    double t0 = now_s();
    rf_gguf_opts o;
    if (opts) o = *opts;
    else rf_gguf_opts_default(&o);
    rf_gguf_result r;
    memset(&r, 0, sizeof r);
    gx g = {.m = m, .types = types};
    rf_ggufw *w = NULL;
    rf_pool *pool = NULL;
    rf_status s = gx_prepare(&g, &o, path, &w, &r, err);
    if (!s) s = rf_pool_create(o.threads, &pool, err);
    if (!s) s = write_data(&g, w, pool, progress, err);
    if (!s) {
        r.file_bytes = rf_ggufw_file_size(w);
        s = rf_ggufw_finish(w, err);
    }
    rf_ggufw_free(w);
    rf_pool_free(pool);
    if (!s && res) {
        r.tensors = g.nitems;
        r.seconds = now_s() - t0;
        snprintf(r.arch, sizeof r.arch, "%s", g.fam->gguf_arch);
        *res = r;
    }
    gx_free(&g);
    return s;
}

/* ------------------------------------------------------------------ llama-quantize tensor types */

static rf_arch arch_of_model_type(const char *mt)
{
    for (int a = RF_ARCH_LLAMA; a <= RF_ARCH_QWEN3_MOE; a++)
        if (!strcmp(rf_arch_name((rf_arch)a), mt)) return (rf_arch)a;
    return RF_ARCH_UNKNOWN;
}

rf_status rf_gguf_plan_tensor_types(const rf_plan *plan, const rf_profile *p, int kept_type, char **text, size_t *len,
                                    rf_err *err)
{
    *text = NULL;
    const rf_pmodel *pm = rf_profile_model(p);
    const rf_gguf_family *fam = rf_gguf_family_of(arch_of_model_type(pm->model_type));
    if (!fam) return rf_err_set(err, RF_ERR_UNSUPPORTED, "ramfit has no GGUF mapping for architecture %s", pm->model_type);
    if (!is_float_type(kept_type))
        return rf_err_set(err, RF_ERR_INVALID, "unquantized weights must be F32, F16 or BF16 in GGUF");
    rf_status s = rf_plan_check_profile(plan, p, err);
    rf_sb b = {0};
    for (uint64_t i = 0; i < rf_plan_unit_count(plan) && !s; i++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, i);
        if (u->role == RF_ROLE_ROUTER) continue;                             /* llama-quantize keeps them */
        if (u->role == RF_ROLE_LM_HEAD && pm->tie_word_embeddings) continue; /* not in the file */
        int64_t pi = rf_profile_find_unit(p, u->name);
        const rf_punit *pu = rf_profile_unit(p, (uint64_t)pi);
        char hf[200], gname[RF_GGUF_MAX_NAME + 1];
        snprintf(hf, sizeof hf, "%s.weight", u->name);
        if (!rf_gguf_tensor_name(fam, hf, gname, sizeof gname)) {
            s = rf_err_set(err, RF_ERR_UNSUPPORTED, "unit %s has no name in llama.cpp's %s architecture", u->name,
                           fam->gguf_arch);
            break;
        }
        int t = plan_unit_type(plan, u, pu->cols, kept_type);
        if (t < 0) {
            s = rf_err_set(err, RF_ERR_MISMATCH, "plan unit %s: %d bits has no GGUF type", u->name, u->bits);
            break;
        }
        char lower[16];
        const char *tn = rf_gtype_name(t);
        size_t k = 0;
        for (; tn[k] && k < sizeof lower - 1; k++) lower[k] = (char)(tn[k] >= 'A' && tn[k] <= 'Z' ? tn[k] + 32 : tn[k]);
        lower[k] = '\0';
        /* an anchored regex: dots escaped, so blk.1. never matches blk.11. */
        rf_sb_puts(&b, "^");
        for (const char *q = gname; *q; q++) {
            if (*q == '.') rf_sb_puts(&b, "\\");
            rf_sb_printf(&b, "%c", *q);
        }
        rf_sb_printf(&b, "$=%s\n", lower);
    }
    if (s) {
        free(b.buf);
        return s;
    }
    return rf_sb_finish(&b, text, len, err);
}
