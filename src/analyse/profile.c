/* Profiles: the measured (bytes, error) table the planner reads, and its JSON file format
 * (docs/profile.md). Profile files are untrusted input: every field is validated on load. */
#include "io/json_internal.h"
#include "plan/plan_internal.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ text buffer */

static void sb_reserve(rf_sb *b, size_t extra)
{
    if (b->oom) return;
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (!nb) { b->oom = 1; return; }
    b->buf = nb;
    b->cap = cap;
}

void rf_sb_puts(rf_sb *b, const char *s)
{
    size_t n = strlen(s);
    sb_reserve(b, n);
    if (b->oom) return;
    memcpy(b->buf + b->len, s, n + 1);
    b->len += n;
}

void rf_sb_printf(rf_sb *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = 1; return; }
    if ((size_t)n < sizeof small) { rf_sb_puts(b, small); return; }
    sb_reserve(b, (size_t)n);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void rf_sb_json_str(rf_sb *b, const char *s)
{
    rf_sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') rf_sb_puts(b, "\\\"");
        else if (*p == '\\') rf_sb_puts(b, "\\\\");
        else if (*p < 0x20) rf_sb_printf(b, "\\u%04x", *p);
        else {
            char c[2] = {(char)*p, 0};
            rf_sb_puts(b, c);
        }
    }
    rf_sb_puts(b, "\"");
}

void rf_sb_double(rf_sb *b, double v)
{
    char t[40];
    for (int prec = 15; prec <= 17; prec++) { /* the shortest text that reads back bit-identical */
        snprintf(t, sizeof t, "%.*g", prec, v);
        double back = strtod(t, NULL);
        if (!memcmp(&back, &v, sizeof v) || !isfinite(v)) break;
    }
    if (!strpbrk(t, ".eEni")) strcat(t, ".0");
    rf_sb_puts(b, t);
}

rf_status rf_sb_finish(rf_sb *b, char **out, size_t *len, rf_err *err)
{
    if (b->oom || !b->buf) {
        free(b->buf);
        memset(b, 0, sizeof *b);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory writing JSON");
    }
    *out = b->buf;
    if (len) *len = b->len;
    memset(b, 0, sizeof *b);
    return RF_OK;
}

rf_status rf_write_text_file(const char *path, const char *text, size_t len, rf_err *err)
{
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 5);
    if (!tmp) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rf_status s = rf_err_errno(err, errno, "%s: cannot create", tmp);
        free(tmp);
        return s;
    }
    /* An empty text (the data file of a profile interrupted before its first unit) may be NULL. */
    size_t wrote = len ? fwrite(text, 1, len, f) : 0;
    int e1 = wrote == len ? 0 : errno;
    /* Flushed to disk before the rename, so a crash cannot leave a short file under the final name. */
    if (!e1 && (fflush(f) != 0 || fsync(fileno(f)) != 0)) e1 = errno;
    int e2 = fclose(f) ? errno : 0;
    if (e1 || e2 || rename(tmp, path) != 0) {
        rf_status s = rf_err_errno(err, e1 ? e1 : e2 ? e2 : errno, "%s: cannot write", path);
        unlink(tmp);
        free(tmp);
        return s;
    }
    free(tmp);
    return RF_OK;
}


/* ------------------------------------------------------------------ tokens and configs */

/* Files spell roles as rf_role_name does (one table, in model.c). */
const char *rf_profile_role_token(rf_role r) { return rf_role_name(r); }

int rf_role_from_token(const char *s)
{
    for (int r = 0; r < RF_ROLE_COUNT; r++)
        if (!strcmp(s, rf_role_name((rf_role)r))) return r;
    return -1;
}

const char *rf_qmode_token(rf_qmode m) { return m == RF_QMODE_OPT ? "opt" : "mlx"; }

int rf_cfg_index(int bits, int gs)
{
    for (int i = 0; i < RF_QBITS_N; i++)
        for (int j = 0; j < RF_QGS_N; j++)
            if (rf_qbits[i] == bits && rf_qgs[j] == gs) return i * RF_QGS_N + j;
    return -1;
}
int rf_cfg_bits(int c) { return rf_qbits[c / RF_QGS_N]; }
int rf_cfg_gs(int c) { return rf_qgs[c % RF_QGS_N]; }

double rf_pcand_d(const rf_punit *u, const rf_pcand *c, rf_qmode mode)
{
    double sse = c->err[mode].sse;
    if (isnan(sse)) return NAN;
    if (sse == 0) return 0;
    return u->ssq > 0 ? sse / u->ssq : INFINITY;
}

double rf_d_to_sqnr_db(double d) { return d <= 0 ? INFINITY : -10.0 * log10(d); }


/* ------------------------------------------------------------------ the profile object */

struct rf_profile {
    rf_pmodel model;
    unsigned modes, configs;
    rf_punit *units;
    uint64_t n_units, cap_units;
    rf_pother *others;
    uint64_t n_others, cap_others;
    rf_pfile *files;
    uint64_t n_files, cap_files;
    /* open-addressing set of unit and tensor names: index+1 into units (>0) or -(index+1) others */
    int64_t *slots;
    uint64_t nslots;
    uint64_t params, full_bytes, other_bytes;
    uint64_t opt_sample;              /* rf_profile_set_opt_sample */
    int gguf;                         /* rf_profile_set_gguf: candidates are ggml types */
    uint64_t gguf_fixed, gguf_sample;
    int shard_index, shard_count;     /* rf_profile_set_shard; count 0: a whole profile */
    uint64_t shard_first, shard_total;
    rf_pcalib calib;            /* activation-weighted errors (analyse --stats): optional "calibration" key */
};

void rf_profile_set_calibration(rf_profile *p, const rf_pcalib *c)
{
    if (p && c) p->calib = *c;
}

const rf_pcalib *rf_profile_calibration(const rf_profile *p) { return p ? &p->calib : NULL; }

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const char *slot_name(const rf_profile *p, int64_t v)
{
    return v > 0 ? p->units[v - 1].name : p->others[-v - 1].name;
}

static int64_t *name_slot(const rf_profile *p, const char *name)
{
    uint64_t mask = p->nslots - 1;
    for (uint64_t i = name_hash(name) & mask;; i = (i + 1) & mask)
        if (!p->slots[i] || !strcmp(slot_name(p, p->slots[i]), name)) return &p->slots[i];
}

static rf_status name_insert(rf_profile *p, const char *name, int64_t v, rf_err *err)
{
    if ((p->n_units + p->n_others + 1) * 2 > p->nslots) {
        uint64_t ns = p->nslots ? p->nslots * 2 : 64;
        int64_t *old = p->slots;
        uint64_t on = p->nslots;
        p->slots = calloc(ns, sizeof *p->slots);
        if (!p->slots) { p->slots = old; return rf_err_set(err, RF_ERR_NOMEM, "out of memory"); }
        p->nslots = ns;
        for (uint64_t i = 0; i < on; i++)
            if (old[i]) *name_slot(p, slot_name(p, old[i])) = old[i];
        free(old);
    }
    int64_t *s = name_slot(p, name);
    if (*s) return rf_err_set(err, RF_ERR_FORMAT, "duplicate tensor/unit name '%s'", name);
    *s = v;
    return RF_OK;
}

static int grow(void **arr, uint64_t *cap, uint64_t need, size_t elem)
{
    if (need <= *cap) return 1;
    uint64_t nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *na = realloc(*arr, nc * elem);
    if (!na) return 0;
    *arr = na;
    *cap = nc;
    return 1;
}

static int str_fits(const char *s, size_t cap) { return memchr(s, 0, cap) != NULL; }

static int str_clean(const char *s)
{
    for (const unsigned char *q = (const unsigned char *)s; *q; q++)
        if (*q < 0x20 || *q == 0x7f) return 0;
    return 1;
}

rf_status rf_profile_create(const rf_pmodel *model, unsigned modes, unsigned configs, rf_profile **out,
                            rf_err *err)
{
    *out = NULL;
    if (!model) return rf_err_set(err, RF_ERR_INVALID, "profile: no model");
    if (!modes || (modes & ~3u)) return rf_err_set(err, RF_ERR_INVALID, "profile: modes must be a non-empty subset of mlx, opt");
    if (configs & ~RF_PROFILE_ALL_CONFIGS) return rf_err_set(err, RF_ERR_INVALID, "profile: bad config mask 0x%x", configs);
    if (!str_fits(model->name, sizeof model->name) || !str_fits(model->architecture, sizeof model->architecture) ||
        !str_fits(model->model_type, sizeof model->model_type) ||
        !str_fits(model->ramfit_version, sizeof model->ramfit_version))
        return rf_err_set(err, RF_ERR_INVALID, "profile: unterminated model string");
    const int ints[] = {model->hidden_size, model->intermediate_size, model->num_layers, model->num_heads,
                        model->num_kv_heads, model->head_dim, model->vocab_size, model->tie_word_embeddings,
                        model->num_experts, model->experts_per_tok, model->moe_intermediate_size};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i] < 0) return rf_err_set(err, RF_ERR_INVALID, "profile: negative model config value");
    if (model->f32_as != RF_DT_INVALID && model->f32_as != RF_DT_BF16 && model->f32_as != RF_DT_F16 && model->f32_as != RF_DT_F32)
        return rf_err_set(err, RF_ERR_INVALID, "profile: f32_as must be BF16, F16 or F32");
    rf_profile *p = calloc(1, sizeof *p);
    if (!p) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    p->model = *model;
    if (!p->model.ramfit_version[0]) snprintf(p->model.ramfit_version, sizeof p->model.ramfit_version, "%s", RF_VERSION_STRING);
    p->modes = modes;
    p->configs = configs;
    *out = p;
    return RF_OK;
}

void rf_profile_free(rf_profile *p)
{
    if (!p) return;
    free(p->units);
    free(p->others);
    free(p->files);
    free(p->slots);
    free(p);
}

void rf_punit_init(rf_punit *u, const char *name, rf_role role, int layer, int n_layers, uint64_t rows,
                   uint64_t cols, uint64_t nparams, rf_dtype dtype)
{
    memset(u, 0, sizeof *u);
    snprintf(u->name, sizeof u->name, "%s", name ? name : "");
    u->role = role;
    u->layer = layer;
    u->n_layers = n_layers;
    u->n_members = 1;
    u->rows = rows;
    u->cols = cols;
    u->nparams = nparams;
    u->dtype = dtype;
    u->kept_bytes = nparams * rf_dtype_size(dtype);
}

uint64_t rf_gguf_tensor_bytes(int gtype, uint64_t members, uint64_t rows, uint64_t cols)
{
    uint64_t rb = rf_gtype_row_bytes(gtype, cols), b;
    if (!rb || !rf_mul_u64(rb, rows, &b) || !rf_mul_u64(b, members, &b) || b > (1ull << 62)) return 0;
    return (b + 31) & ~31ull; /* every tensor is padded to GGUF's alignment */
}

rf_status rf_punit_add_gcand(rf_punit *u, int gtype, uint64_t bytes, const rf_qerr *e, rf_err *err)
{
    if (rf_gcand_index(gtype) < 0)
        return rf_err_set(err, RF_ERR_INVALID, "unit %s: %s is not a GGUF candidate type", u->name,
                          rf_gtype_name(gtype) ? rf_gtype_name(gtype) : "(unknown)");
    rf_status s = rf_punit_add_cand(u, rf_gtype_bits(gtype), (int)rf_gtype_block(gtype), bytes, e, NULL, err);
    if (!s) u->cands[u->n_cands - 1].gtype = gtype;
    return s;
}

/* A candidate's index in its profile's config list: the MLX config, or the GGUF table index. */
static int cand_index(const rf_pcand *c) { return c->gtype ? rf_gcand_index(c->gtype) : rf_cfg_index(c->bits, c->gs); }

rf_status rf_punit_add_cand(rf_punit *u, int bits, int gs, uint64_t bytes, const rf_qerr *mlx, const rf_qerr *opt,
                            rf_err *err)
{
    if (u->n_cands < 0 || u->n_cands >= RF_QCFG_N)
        return rf_err_set(err, RF_ERR_INVALID, "unit %s: too many candidates", u->name);
    rf_pcand *c = &u->cands[u->n_cands++];
    c->bits = bits;
    c->gs = gs;
    c->gtype = 0;
    c->bytes = bytes;
    const rf_qerr absent = {NAN, u->ssq, NAN};
    c->err[RF_QMODE_MLX] = mlx ? *mlx : absent;
    c->err[RF_QMODE_OPT] = opt ? *opt : absent;
    return RF_OK;
}

static int cand_cmp(const void *a, const void *b)
{
    const rf_pcand *x = a, *y = b;
    int cx = cand_index(x), cy = cand_index(y);
    return (cx > cy) - (cx < cy);
}

static int finite_nonneg(double v) { return isfinite(v) && v >= 0; }

/* All unit checks; messages name the unit and the field. */
static rf_status check_unit(const rf_profile *p, const rf_punit *u, rf_err *err)
{
    if (!str_fits(u->name, sizeof u->name) || !u->name[0] || !str_clean(u->name))
        return rf_err_set(err, RF_ERR_FORMAT, "unit: field 'name': empty, too long or has control characters");
    const char *n = u->name;
    if ((unsigned)u->role >= RF_ROLE_COUNT) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'role': invalid", n);
    if (u->role == RF_ROLE_NORM || u->role == RF_ROLE_Q_NORM || u->role == RF_ROLE_K_NORM || u->role == RF_ROLE_BIAS)
        return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'role': %s tensors are never units (list them as others)",
                          n, rf_role_name(u->role));
    if (u->n_layers < 0 || u->n_layers > 100000) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'n_layers': out of range", n);
    if (u->layer < -1 || (u->layer >= 0 && u->layer >= u->n_layers))
        return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'layer': %d not in [-1, n_layers)", n, u->layer);
    if (u->n_members < 1 || u->n_members > 1000000) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'members': out of range", n);
    uint64_t np;
    if (!u->rows || !u->cols || !rf_mul_u64(u->rows, u->cols, &np) || !rf_mul_u64(np, (uint64_t)u->n_members, &np) ||
        np != u->nparams)
        return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'params': must equal rows * cols * members", n);
    if (np > (1ull << 52)) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'params': too large", n);
    if (!rf_dtype_is_float(u->dtype)) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'dtype': not a float dtype", n);
    if (u->kept_bytes != np * rf_dtype_size(u->dtype))
        return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'kept_bytes': must equal params * dtype size", n);
    if (!finite_nonneg(u->ssq)) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'ssq': must be finite and >= 0", n);
    const rf_pstats *s = &u->stats;
    if (!isfinite(s->mean) || !finite_nonneg(s->rms) || !finite_nonneg(s->absmax) || !isfinite(s->kurtosis) ||
        !(s->frac_6sigma >= 0 && s->frac_6sigma <= 1))
        return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'stats': mean/kurtosis finite, rms/absmax >= 0, fraction in [0,1]", n);
    if (u->n_cands < 0 || u->n_cands > RF_QCFG_N)
        return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c': %d candidates (at most %d)", n, u->n_cands, RF_QCFG_N);
    unsigned seen = 0;
    for (int k = 0; k < u->n_cands; k++) {
        const rf_pcand *c = &u->cands[k];
        int ci = cand_index(c);
        if (!c->gtype != !p->gguf)
            return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': %s candidate in %s profile", n, k,
                              c->gtype ? "a GGUF" : "an MLX", p->gguf ? "a GGUF" : "an MLX");
        if (c->gtype) {
            if (ci < 0 || !(rf_gcand_mask(u->cols) >> ci & 1) || u->role == RF_ROLE_ROUTER || c->bits != rf_gtype_bits(c->gtype) ||
                c->gs != (int)rf_gtype_block(c->gtype))
                return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': %s is not a candidate for rows of %llu", n, k,
                                  rf_gtype_name(c->gtype) ? rf_gtype_name(c->gtype) : "(unknown type)", (unsigned long long)u->cols);
            if (c->bytes != rf_gguf_tensor_bytes(c->gtype, (uint64_t)u->n_members, u->rows, u->cols))
                return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d].bytes': %llu is not the size of %s", n, k,
                                  (unsigned long long)c->bytes, rf_gtype_name(c->gtype));
        }
        if (ci < 0) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': %d bits / gs %d is not a config", n, k, c->bits, c->gs);
        if (u->cols % (uint64_t)c->gs) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': gs %d does not divide cols %llu", n, k, c->gs, (unsigned long long)u->cols);
        if (!(p->configs >> ci & 1)) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': %d/%d is not in the profile's config list", n, k, c->bits, c->gs);
        if (seen >> ci & 1) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': duplicate %d/%d", n, k, c->bits, c->gs);
        seen |= 1u << ci;
        uint64_t lo = np / 8 * (uint64_t)c->bits, hi = lo + np / (uint64_t)c->gs * 16;
        if (!c->gtype && (c->bytes < lo || c->bytes > hi))
            return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d].bytes': %llu is not a possible size of %d/%d", n, k,
                              (unsigned long long)c->bytes, c->bits, c->gs);
        int have = 0;
        for (int m = 0; m < 2; m++) {
            const rf_qerr *q = &c->err[m];
            if (isnan(q->sse)) continue;
            if (!(p->modes >> m & 1))
                return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': has %s error but the profile lacks that mode", n, k, rf_qmode_token((rf_qmode)m));
            if (!finite_nonneg(q->sse) || !finite_nonneg(q->max_abs))
                return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d].%s': sse and max_abs must be finite and >= 0", n, k, rf_qmode_token((rf_qmode)m));
            if (q->ssq != u->ssq)
                return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d].%s.ssq': differs from the unit's ssq", n, k, rf_qmode_token((rf_qmode)m));
            have = 1;
        }
        if (!have) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': no error measured in any mode", n, k);
        if ((u->estimated >> ci & 1) && isnan(c->err[p->gguf ? RF_QMODE_MLX : RF_QMODE_OPT].sse))
            return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'estimated': %d/%d has no opt error to estimate", n, c->bits, c->gs);
    }
    if (u->estimated & ~seen)
        return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'estimated': names configs that are not candidates", n);
    return RF_OK;
}

/* Keeps the running totals below 2^62 so every sum the planner forms is exact. */
static rf_status check_total(rf_profile *p, uint64_t params, uint64_t bytes, const char *name, rf_err *err)
{
    const uint64_t lim = 1ull << 62;
    if (params > lim - p->params || bytes > lim - p->full_bytes)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: model totals overflow", name);
    return RF_OK;
}

rf_status rf_profile_add_unit(rf_profile *p, const rf_punit *u, rf_err *err)
{
    rf_status s = check_unit(p, u, err);
    if (s == RF_OK) s = check_total(p, u->nparams, u->kept_bytes, u->name, err);
    if (s) return s;
    if (!grow((void **)&p->units, &p->cap_units, p->n_units + 1, sizeof *p->units))
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_punit *d = &p->units[p->n_units];
    *d = *u;
    memset(d->cands + d->n_cands, 0, sizeof d->cands[0] * (size_t)(RF_QCFG_N - d->n_cands));
    for (int k = 0; k < d->n_cands; k++)
        for (int m = 0; m < 2; m++)
            if (isnan(d->cands[k].err[m].sse)) d->cands[k].err[m] = (rf_qerr){NAN, d->ssq, NAN};
    qsort(d->cands, (size_t)d->n_cands, sizeof d->cands[0], cand_cmp);
    p->n_units++;
    if ((s = name_insert(p, d->name, (int64_t)p->n_units, err))) { p->n_units--; return s; }
    p->params += d->nparams;
    p->full_bytes += d->kept_bytes;
    return RF_OK;
}

rf_status rf_profile_add_other(rf_profile *p, const rf_pother *o, rf_err *err)
{
    if (!str_fits(o->name, sizeof o->name) || !o->name[0] || !str_clean(o->name))
        return rf_err_set(err, RF_ERR_FORMAT, "other tensor: field 'name': empty, too long or has control characters");
    if ((unsigned)o->role >= RF_ROLE_COUNT) return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: field 'role': invalid", o->name);
    if (o->layer < -1) return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: field 'layer': below -1", o->name);
    if (o->dtype <= RF_DT_INVALID || o->dtype >= RF_DT_COUNT) return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: field 'dtype': invalid", o->name);
    uint64_t b;
    if (o->nparams > (1ull << 52) || !rf_mul_u64(o->nparams, rf_dtype_size(o->dtype), &b) || b != o->bytes)
        return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: field 'bytes': must equal params * dtype size", o->name);
    rf_status s = check_total(p, o->nparams, o->bytes, o->name, err);
    if (s) return s;
    if (!grow((void **)&p->others, &p->cap_others, p->n_others + 1, sizeof *p->others))
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    p->others[p->n_others++] = *o;
    if ((s = name_insert(p, o->name, -(int64_t)p->n_others, err))) { p->n_others--; return s; }
    p->params += o->nparams;
    p->other_bytes += o->bytes;
    p->full_bytes += o->bytes;
    return RF_OK;
}

void rf_profile_set_opt_sample(rf_profile *p, uint64_t groups) { p->opt_sample = groups; }

void rf_profile_set_gguf(rf_profile *p, uint64_t fixed)
{
    p->gguf = 1;
    p->gguf_fixed = fixed;
}
int rf_profile_is_gguf(const rf_profile *p) { return p->gguf; }
uint64_t rf_profile_gguf_fixed(const rf_profile *p) { return p->gguf ? p->gguf_fixed : 0; }
void rf_profile_set_gguf_sample(rf_profile *p, uint64_t weights) { p->gguf_sample = weights; }
uint64_t rf_profile_gguf_sample(const rf_profile *p) { return p->gguf_sample; }
uint64_t rf_profile_opt_sample(const rf_profile *p) { return p->opt_sample; }

rf_status rf_profile_set_shard(rf_profile *p, int index, int count, uint64_t first, uint64_t total, rf_err *err)
{
    if (count == 0 && index == 0) {
        p->shard_index = p->shard_count = 0;
        p->shard_first = p->shard_total = 0;
        return RF_OK;
    }
    if (count < 1 || count > RF_MAX_SHARDS || index < 1 || index > count || first > total || total > (1ull << 40))
        return rf_err_set(err, RF_ERR_FORMAT, "profile: shard %d of %d (units from %llu of %llu) is not a valid part", index,
                          count, (unsigned long long)first, (unsigned long long)total);
    p->shard_index = index;
    p->shard_count = count;
    p->shard_first = first;
    p->shard_total = total;
    return RF_OK;
}

int rf_profile_shard(const rf_profile *p, int *index, int *count, uint64_t *first, uint64_t *total)
{
    if (index) *index = p->shard_index;
    if (count) *count = p->shard_count;
    if (first) *first = p->shard_first;
    if (total) *total = p->shard_total;
    return p->shard_count > 0;
}

rf_status rf_profile_add_file(rf_profile *p, const char *name, uint64_t bytes, rf_err *err)
{
    if (!name || !name[0] || strlen(name) >= sizeof p->files[0].name || strchr(name, '/') || !str_clean(name))
        return rf_err_set(err, RF_ERR_FORMAT, "profile: bad shard file name");
    if (!grow((void **)&p->files, &p->cap_files, p->n_files + 1, sizeof *p->files))
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_pfile *f = &p->files[p->n_files++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->bytes = bytes;
    return RF_OK;
}

const rf_pmodel *rf_profile_model(const rf_profile *p) { return &p->model; }
unsigned rf_profile_modes(const rf_profile *p) { return p->modes; }
unsigned rf_profile_configs(const rf_profile *p) { return p->configs; }
uint64_t rf_profile_unit_count(const rf_profile *p) { return p->n_units; }
const rf_punit *rf_profile_unit(const rf_profile *p, uint64_t i) { return i < p->n_units ? &p->units[i] : NULL; }
uint64_t rf_profile_other_count(const rf_profile *p) { return p->n_others; }
const rf_pother *rf_profile_other(const rf_profile *p, uint64_t i) { return i < p->n_others ? &p->others[i] : NULL; }
uint64_t rf_profile_file_count(const rf_profile *p) { return p->n_files; }
const rf_pfile *rf_profile_file(const rf_profile *p, uint64_t i) { return i < p->n_files ? &p->files[i] : NULL; }
uint64_t rf_profile_param_count(const rf_profile *p) { return p->params; }
/* A GGUF profile's fixed part of the file counts as other bytes: plan totals are file sizes. */
uint64_t rf_profile_full_bytes(const rf_profile *p) { return p->full_bytes + rf_profile_gguf_fixed(p); }
uint64_t rf_profile_other_bytes(const rf_profile *p) { return p->other_bytes + rf_profile_gguf_fixed(p); }

int64_t rf_profile_find_unit(const rf_profile *p, const char *name)
{
    if (!p->nslots || !name) return -1;
    int64_t v = *name_slot(p, name);
    return v > 0 ? v - 1 : -1;
}

/* ------------------------------------------------------------------ writer */

static void put_key(rf_sb *b, const char *k, int first)
{
    rf_sb_puts(b, first ? "\"" : ", \"");
    rf_sb_puts(b, k);
    rf_sb_puts(b, "\": ");
}

static void put_u64(rf_sb *b, const char *k, uint64_t v, int first)
{
    put_key(b, k, first);
    rf_sb_printf(b, "%llu", (unsigned long long)v);
}

static void put_int(rf_sb *b, const char *k, int v, int first)
{
    put_key(b, k, first);
    rf_sb_printf(b, "%d", v);
}

static void put_str(rf_sb *b, const char *k, const char *v, int first)
{
    put_key(b, k, first);
    rf_sb_json_str(b, v);
}

/* Model config summary fields: (key, offset) so writer and reader share one list. */
#define CFG(f) {#f, offsetof(rf_pmodel, f)}
static const struct { const char *key; size_t off; } cfg_fields[] = {
    CFG(hidden_size), CFG(intermediate_size), CFG(num_layers), CFG(num_heads), CFG(num_kv_heads),
    CFG(head_dim), CFG(vocab_size), CFG(tie_word_embeddings), CFG(num_experts), CFG(experts_per_tok),
    CFG(moe_intermediate_size),
};
#undef CFG
#define NCFG (sizeof cfg_fields / sizeof cfg_fields[0])

/* ------------------------------------------------------------------ a unit's numbers
 * ssq, the five statistics, then per candidate (config order) and per listed mode: sse and max_abs
 * (NaN: that mode was not measured). Written inline as a JSON array (null for NaN) or to the data
 * file (little-endian IEEE doubles; max_abs as 4-byte floats when every one is a float, as the
 * analysis pass makes them). One list serves writer and reader. */
typedef struct vio {
    rf_sb *text;              /* writing inline */
    int first;
    uint8_t *bin;             /* writing the data file */
    size_t len, cap;
    int oom;
    json_t *arr;              /* reading inline */
    size_t idx;
    const uint8_t *src;       /* reading the data file */
    size_t pos, n;
    int f32;                  /* data file: max_abs as float */
} vio;

enum { V_F64 = 0, V_MAX = 1 };

static void v_put(vio *v, int kind, double x)
{
    if (v->text) {
        rf_sb_puts(v->text, v->first ? "" : ", ");
        v->first = 0;
        if (isnan(x)) rf_sb_puts(v->text, "null");
        else rf_sb_double(v->text, x);
        return;
    }
    size_t w = kind == V_MAX && v->f32 ? 4 : 8;
    if (v->len + w > v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 1 << 16;
        uint8_t *nb = realloc(v->bin, cap);
        if (!nb) { v->oom = 1; return; }
        v->bin = nb;
        v->cap = cap;
    }
    uint64_t bits;
    if (w == 4) {
        float f = (float)x;
        uint32_t b32;
        memcpy(&b32, &f, 4);
        bits = b32;
    } else
        memcpy(&bits, &x, 8);
    for (size_t i = 0; i < w; i++) v->bin[v->len++] = (uint8_t)(bits >> (8 * i));
}

/* 0 when the source is exhausted or holds a non-number. */
static int v_get(vio *v, int kind, double *x)
{
    if (v->arr) {
        json_t *e = json_array_get(v->arr, v->idx++);
        if (json_is_null(e)) { *x = NAN; return 1; }
        if (!json_is_number(e)) return 0;
        *x = json_number_value(e);
        return 1;
    }
    size_t w = kind == V_MAX && v->f32 ? 4 : 8;
    if (v->n - v->pos < w) return 0;
    uint64_t bits = 0;
    for (size_t i = 0; i < w; i++) bits |= (uint64_t)v->src[v->pos++] << (8 * i);
    if (w == 4) {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, 4);
        *x = f;
    } else
        memcpy(x, &bits, 8);
    return 1;
}

/* Write (WRITING) or read U's numbers; 0 when reading ran out. */
static int unit_values(vio *v, int writing, unsigned modes, rf_punit *u)
{
    double *head[6] = {&u->ssq, &u->stats.mean, &u->stats.rms, &u->stats.absmax, &u->stats.kurtosis, &u->stats.frac_6sigma};
    for (int i = 0; i < 6; i++) {
        if (writing) v_put(v, V_F64, *head[i]);
        else if (!v_get(v, V_F64, head[i])) return 0;
    }
    for (int k = 0; k < u->n_cands; k++)
        for (int m = 0; m < 2; m++) {
            rf_qerr *q = &u->cands[k].err[m];
            if (!(modes >> m & 1)) {
                if (!writing) *q = (rf_qerr){NAN, u->ssq, NAN};
                continue;
            }
            if (writing) {
                v_put(v, V_F64, q->sse);
                v_put(v, V_MAX, isnan(q->sse) ? NAN : q->max_abs);
                continue;
            }
            q->ssq = u->ssq;
            if (!v_get(v, V_F64, &q->sse) || !v_get(v, V_MAX, &q->max_abs)) return 0;
        }
    return 1;
}

static int float_exact(double x) { return isnan(x) || (double)(float)x == x; }

static uint64_t fnv1a64(const uint8_t *d, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 0x100000001b3ull;
    return h;
}

/* ------------------------------------------------------------------ writer */

/* Candidate bytes are not stored: they follow from the unit's shape and a scale dtype (MLX stores
 * scales and biases in one float dtype). The dtype that reproduces every candidate's bytes, or
 * RF_DT_INVALID when none does (the bytes are then listed). */
static const rf_dtype scale_dtypes[] = {RF_DT_BF16, RF_DT_F16, RF_DT_F32};
static rf_dtype unit_scale_dtype(const rf_punit *u)
{
    for (size_t i = 0; i < sizeof scale_dtypes / sizeof scale_dtypes[0]; i++) {
        int k = 0;
        while (k < u->n_cands && u->cands[k].bytes == rf_quant_bytes(u->nparams, u->cands[k].bits, u->cands[k].gs, scale_dtypes[i])) k++;
        if (k == u->n_cands) return scale_dtypes[i];
    }
    return RF_DT_INVALID;
}

/* Version 3 added "estimated" (version 2 rows lack it: nothing estimated). */
static const char *const unit_fields[] = {"name", "role", "layer", "n_layers", "members", "rows", "cols", "dtype", "sizes", "configs", "estimated", "values"};
static const char *const unit_fields_v2[] = {"name", "role", "layer", "n_layers", "members", "rows", "cols", "dtype", "sizes", "configs", "values"};
static const char *const other_fields[] = {"name", "role", "layer", "params", "dtype", "bytes"};
#define NUF (sizeof unit_fields / sizeof unit_fields[0])
#define NUF2 (sizeof unit_fields_v2 / sizeof unit_fields_v2[0])
#define NOF (sizeof other_fields / sizeof other_fields[0])

static void write_fields(rf_sb *b, const char *key, const char *const *f, size_t n)
{
    rf_sb_printf(b, ",\n  \"%s\": [", key);
    for (size_t i = 0; i < n; i++) rf_sb_printf(b, "%s\"%s\"", i ? ", " : "", f[i]);
    rf_sb_puts(b, "]");
}

static void write_unit(rf_sb *b, const rf_profile *p, const rf_punit *u, int inline_values)
{
    rf_sb_puts(b, "    [");
    rf_sb_json_str(b, u->name);
    rf_sb_printf(b, ", \"%s\", %d, %d, %d, %llu, %llu, \"%s\", ", rf_role_name(u->role), u->layer, u->n_layers, u->n_members,
                 (unsigned long long)u->rows, (unsigned long long)u->cols, rf_dtype_name(u->dtype));
    rf_dtype sd = p->gguf ? RF_DT_INVALID : unit_scale_dtype(u);
    unsigned mask = 0;
    if (p->gguf) rf_sb_puts(b, "\"gguf\""); /* bytes follow from the type and shape */
    else if (sd != RF_DT_INVALID) rf_sb_printf(b, "\"%s\"", rf_dtype_name(sd));
    else {
        rf_sb_puts(b, "[");
        for (int k = 0; k < u->n_cands; k++) rf_sb_printf(b, "%s%llu", k ? ", " : "", (unsigned long long)u->cands[k].bytes);
        rf_sb_puts(b, "]");
    }
    for (int k = 0; k < u->n_cands; k++) mask |= 1u << cand_index(&u->cands[k]);
    rf_sb_printf(b, ", %u, %u", mask, u->estimated);
    if (inline_values) {
        rf_sb_puts(b, ", [");
        vio v = {.text = b, .first = 1};
        unit_values(&v, 1, p->modes, (rf_punit *)u);
        rf_sb_puts(b, "]");
    }
    rf_sb_puts(b, "]");
}

/* Version 3 text; with DATA_NAME the numbers go to *DATA (the data file named in the text). */
static rf_status write_profile(const rf_profile *p, const char *data_name, char **out, size_t *len, void **data,
                               size_t *data_len, rf_err *err)
{
    rf_sb b = {0};
    vio dv = {0};
    if (data_name) {
        dv.f32 = 1;
        for (uint64_t i = 0; i < p->n_units; i++)
            for (int k = 0; k < p->units[i].n_cands; k++)
                for (int m = 0; m < 2; m++) dv.f32 &= float_exact(p->units[i].cands[k].err[m].max_abs);
        for (uint64_t i = 0; i < p->n_units; i++) unit_values(&dv, 1, p->modes, &p->units[i]);
        if (dv.oom) { free(dv.bin); return rf_err_set(err, RF_ERR_NOMEM, "out of memory writing the profile data"); }
    }
    const rf_pmodel *m = &p->model;
    rf_sb_puts(&b, "{\n  ");
    put_str(&b, "format", "ramfit-profile", 1);
    put_int(&b, "version", p->gguf ? RF_PROFILE_VERSION : 3, 0); /* MLX profiles stay version 3 */
    rf_sb_puts(&b, ",\n  ");
    put_str(&b, "ramfit_version", m->ramfit_version, 1);
    rf_sb_puts(&b, ",\n  \"model\": {");
    put_str(&b, "name", m->name, 1);
    put_str(&b, "architecture", m->architecture, 0);
    put_str(&b, "model_type", m->model_type, 0);
    put_key(&b, "fingerprint", 0);
    rf_sb_printf(&b, "\"%016llx\"", (unsigned long long)m->fingerprint);
    if (m->f32_as != RF_DT_INVALID) put_str(&b, "f32_as", rf_dtype_name(m->f32_as), 0);
    rf_sb_puts(&b, ",\n    \"config\": {");
    for (size_t i = 0; i < NCFG; i++) put_int(&b, cfg_fields[i].key, *(const int *)((const char *)m + cfg_fields[i].off), i == 0);
    rf_sb_puts(&b, "},\n    \"files\": [");
    for (uint64_t i = 0; i < p->n_files; i++) {
        rf_sb_puts(&b, i ? ", [" : "[");
        rf_sb_json_str(&b, p->files[i].name);
        rf_sb_printf(&b, ", %llu]", (unsigned long long)p->files[i].bytes);
    }
    rf_sb_puts(&b, "]},\n  \"modes\": [");
    int first = 1;
    for (int mo = 0; mo < 2; mo++)
        if (p->modes >> mo & 1) {
            rf_sb_printf(&b, "%s\"%s\"", first ? "" : ", ", p->gguf ? "gguf" : rf_qmode_token((rf_qmode)mo));
            first = 0;
        }
    rf_sb_puts(&b, "],\n  \"configs\": [");
    first = 1;
    for (int c = 0; c < RF_QCFG_N; c++)
        if (p->configs >> c & 1) {
            if (p->gguf) rf_sb_printf(&b, "%s\"%s\"", first ? "" : ", ", rf_gtype_name(rf_gcand_type(c)));
            else rf_sb_printf(&b, "%s[%d, %d]", first ? "" : ", ", rf_cfg_bits(c), rf_cfg_gs(c));
            first = 0;
        }
    rf_sb_puts(&b, "]");
    rf_sb_puts(&b, ",\n  ");
    put_u64(&b, "opt_sample", p->opt_sample, 1);
    if (p->gguf) {
        rf_sb_puts(&b, ",\n  \"gguf\": {");
        put_u64(&b, "fixed", p->gguf_fixed, 1);
        put_u64(&b, "sample", p->gguf_sample, 0);
        rf_sb_puts(&b, "}");
    }
    if (p->shard_count) {
        rf_sb_puts(&b, ",\n  \"shard\": ");
        rf_sb_printf(&b, "[%d, %d, %llu, %llu]", p->shard_index, p->shard_count, (unsigned long long)p->shard_first,
                     (unsigned long long)p->shard_total);
    }
    if (p->calib.weighted) { /* optional (a data-free profile has none): readers that do not know it ignore it */
        rf_sb_puts(&b, ",\n  \"calibration\": {");
        put_str(&b, "weighting", "activation", 1);
        put_str(&b, "text", p->calib.text, 0);
        put_u64(&b, "tokens", p->calib.tokens, 0);
        put_key(&b, "stats_fnv1a64", 0);
        rf_sb_printf(&b, "\"%016llx\"", (unsigned long long)p->calib.stats_checksum);
        rf_sb_puts(&b, "}");
    }
    write_fields(&b, "unit_fields", unit_fields, data_name ? NUF - 1 : NUF);
    write_fields(&b, "other_fields", other_fields, NOF);
    rf_sb_puts(&b, ",\n  \"totals\": {");
    put_u64(&b, "units", p->n_units, 1);
    put_u64(&b, "others", p->n_others, 0);
    put_u64(&b, "params", p->params, 0);
    put_u64(&b, "bytes", p->full_bytes, 0);
    rf_sb_puts(&b, "}");
    if (data_name) {
        rf_sb_puts(&b, ",\n  \"data\": {");
        put_str(&b, "file", data_name, 1);
        put_u64(&b, "bytes", dv.len, 0);
        put_key(&b, "fnv1a64", 0);
        rf_sb_printf(&b, "\"%016llx\"", (unsigned long long)fnv1a64(dv.bin, dv.len));
        put_str(&b, "max_abs", dv.f32 ? "f32" : "f64", 0);
        rf_sb_puts(&b, "}");
    }
    rf_sb_puts(&b, ",\n  \"units\": [");
    for (uint64_t i = 0; i < p->n_units; i++) {
        rf_sb_puts(&b, i ? ",\n" : "\n");
        write_unit(&b, p, &p->units[i], !data_name);
    }
    rf_sb_puts(&b, p->n_units ? "\n  ],\n  \"others\": [" : "],\n  \"others\": [");
    for (uint64_t i = 0; i < p->n_others; i++) {
        const rf_pother *o = &p->others[i];
        rf_sb_puts(&b, i ? ",\n    [" : "\n    [");
        rf_sb_json_str(&b, o->name);
        rf_sb_printf(&b, ", \"%s\", %d, %llu, \"%s\", %llu]", rf_role_name(o->role), o->layer, (unsigned long long)o->nparams,
                     rf_dtype_name(o->dtype), (unsigned long long)o->bytes);
    }
    rf_sb_puts(&b, p->n_others ? "\n  ]\n}\n" : "]\n}\n");
    rf_status s = rf_sb_finish(&b, out, len, err);
    if (s || !data_name) { free(dv.bin); return s; }
    *data = dv.bin;
    *data_len = dv.len;
    return RF_OK;
}

rf_status rf_profile_to_json(const rf_profile *p, char **out, size_t *len, rf_err *err)
{
    return write_profile(p, NULL, out, len, NULL, NULL, err);
}

rf_status rf_profile_to_parts(const rf_profile *p, const char *data_name, char **json, size_t *json_len, void **data,
                              size_t *data_len, rf_err *err)
{
    if (!data_name || !data_name[0] || strchr(data_name, '/') || !str_clean(data_name) || strlen(data_name) > 255)
        return rf_err_set(err, RF_ERR_INVALID, "profile data file name must be a plain file name");
    return write_profile(p, data_name, json, json_len, data, data_len, err);
}

/* PATH less a ".json" suffix, plus ".bin". */
static char *data_path(const char *path)
{
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json")) n -= 5;
    char *d = malloc(n + 5);
    if (!d) return NULL;
    memcpy(d, path, n);
    memcpy(d + n, ".bin", 5);
    return d;
}

rf_status rf_profile_save(const rf_profile *p, const char *path, rf_err *err)
{
    char *dpath = data_path(path);
    if (!dpath) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    const char *base = strrchr(dpath, '/');
    base = base ? base + 1 : dpath;
    char *text = NULL;
    void *data = NULL;
    size_t len = 0, dlen = 0;
    rf_status s = rf_profile_to_parts(p, base, &text, &len, &data, &dlen, err);
    /* data first: a reader that sees the new text finds the data it describes (size and checksum) */
    if (!s) s = rf_write_text_file(dpath, data, dlen, err);
    if (!s) s = rf_write_text_file(path, text, len, err);
    free(text);
    free(data);
    free(dpath);
    return s;
}

rf_status rf_profile_remove(const char *path, rf_err *err)
{
    char *dpath = data_path(path);
    if (!dpath) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status s = RF_OK;
    if (unlink(path) != 0 && errno != ENOENT) s = rf_err_errno(err, errno, "cannot remove %s", path);
    else if (unlink(dpath) != 0 && errno != ENOENT) s = rf_err_errno(err, errno, "cannot remove %s", dpath);
    free(dpath);
    return s;
}

/* ------------------------------------------------------------------ reader */

typedef struct rd {
    const char *label;
    const char *where; /* "unit 3 (name)" etc. */
    rf_err *err;
} rd;

static rf_status bad(rd *r, const char *field, const char *what)
{
    return rf_err_set(r->err, RF_ERR_FORMAT, "%s: %s: field '%s': %s", r->label, r->where, field, what);
}

static rf_status rd_u64(rd *r, json_t *o, const char *k, uint64_t *out)
{
    int e = rf_json_u64(json_object_get(o, k), INT64_MAX, out);
    if (e > 0) return bad(r, k, "is out of range (must be below 2^63)");
    if (e < 0) return bad(r, k, "expected a non-negative integer");
    return RF_OK;
}

static rf_status rd_int(rd *r, json_t *o, const char *k, int lo, int hi, int *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return bad(r, k, "expected an integer in range");
    *out = (int)json_integer_value(v);
    return RF_OK;
}

static rf_status rd_num(rd *r, json_t *v, const char *k, double *out)
{
    if (!json_is_number(v)) return bad(r, k, "expected a number");
    *out = json_number_value(v);
    return RF_OK;
}

static rf_status rd_str(rd *r, json_t *o, const char *k, char *dst, size_t cap)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v)) return bad(r, k, "expected a string");
    if (json_string_length(v) >= cap || strlen(json_string_value(v)) != json_string_length(v))
        return bad(r, k, "too long or has NUL");
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return RF_OK;
}

static rf_status rd_dtype(rd *r, json_t *o, const char *k, rf_dtype *out)
{
    char t[32];
    rf_status s = rd_str(r, o, k, t, sizeof t);
    if (s) return s;
    *out = rf_dtype_from_name(t);
    return *out == RF_DT_INVALID ? bad(r, k, "unknown dtype") : RF_OK;
}

static rf_status rd_role(rd *r, json_t *o, rf_role *out)
{
    char t[32];
    rf_status s = rd_str(r, o, "role", t, sizeof t);
    if (s) return s;
    int v = rf_role_from_token(t);
    if (v < 0) return bad(r, "role", "unknown role");
    *out = (rf_role)v;
    return RF_OK;
}

static rf_status rd_model(rd *r, json_t *root, rf_pmodel *m)
{
    memset(m, 0, sizeof *m);
    r->where = "model";
    json_t *jm = json_object_get(root, "model");
    if (!json_is_object(jm)) return bad(r, "model", "expected an object");
    rf_status s;
    if ((s = rd_str(r, root, "ramfit_version", m->ramfit_version, sizeof m->ramfit_version)) ||
        (s = rd_str(r, jm, "name", m->name, sizeof m->name)) ||
        (s = rd_str(r, jm, "architecture", m->architecture, sizeof m->architecture)) ||
        (s = rd_str(r, jm, "model_type", m->model_type, sizeof m->model_type)))
        return s;
    char fp[24];
    if ((s = rd_str(r, jm, "fingerprint", fp, sizeof fp))) return s;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(fp, &end, 16);
    if (strlen(fp) != 16 || *end || errno || fp[0] == '-' || fp[0] == '+') return bad(r, "fingerprint", "expected 16 hex digits");
    m->fingerprint = v;
    if (json_object_get(jm, "f32_as")) { /* optional: profiles before 0.2 do not say */
        char dt[16];
        if ((s = rd_str(r, jm, "f32_as", dt, sizeof dt))) return s;
        m->f32_as = rf_dtype_from_name(dt);
        if (m->f32_as != RF_DT_BF16 && m->f32_as != RF_DT_F16 && m->f32_as != RF_DT_F32)
            return bad(r, "f32_as", "expected \"BF16\", \"F16\" or \"F32\"");
    }
    json_t *cfg = json_object_get(jm, "config");
    if (!json_is_object(cfg)) return bad(r, "config", "expected an object");
    for (size_t i = 0; i < NCFG; i++)
        if ((s = rd_int(r, cfg, cfg_fields[i].key, 0, 1 << 30, (int *)((char *)m + cfg_fields[i].off)))) return s;
    return RF_OK;
}

static rf_status rd_modes_configs(rd *r, json_t *root, int ver, unsigned *modes, unsigned *configs, int *gguf)
{
    r->where = "header";
    json_t *jm = json_object_get(root, "modes"), *jc = json_object_get(root, "configs");
    const char *m0 = json_string_value(json_array_get(jm, 0));
    *gguf = 0;
    if (ver >= 4 && json_is_array(jm) && json_array_size(jm) == 1 && m0 && !strcmp(m0, "gguf")) {
        /* ggml types by name, in table order; the errors sit in mode slot 0 */
        *gguf = 1;
        *modes = 1u << RF_QMODE_MLX;
        *configs = 0;
        if (!json_is_array(jc) || json_array_size(jc) > RF_GCAND_N) return bad(r, "configs", "expected GGUF type names");
        int last = -1;
        for (size_t i = 0; i < json_array_size(jc); i++) {
            const char *t = json_string_value(json_array_get(jc, i));
            int c = t ? rf_gcand_index(rf_gtype_parse(t)) : -1;
            if (c <= last) return bad(r, "configs", "unknown GGUF candidate type or not in table order");
            last = c;
            *configs |= 1u << c;
        }
        return RF_OK;
    }
    if (!json_is_array(jm) || json_array_size(jm) < 1 || json_array_size(jm) > 2) return bad(r, "modes", "expected [\"mlx\"], [\"opt\"] or both");
    *modes = 0;
    int last = -1;
    for (size_t i = 0; i < json_array_size(jm); i++) {
        const char *t = json_string_value(json_array_get(jm, i));
        int mo = !t ? -1 : !strcmp(t, "mlx") ? 0 : !strcmp(t, "opt") ? 1 : -1;
        if (mo <= last) return bad(r, "modes", "expected \"mlx\" and/or \"opt\" in that order");
        last = mo;
        *modes |= 1u << mo;
    }
    if (!json_is_array(jc) || json_array_size(jc) > RF_QCFG_N) return bad(r, "configs", "expected an array of [bits, gs]");
    *configs = 0;
    last = -1;
    for (size_t i = 0; i < json_array_size(jc); i++) {
        json_t *e = json_array_get(jc, i);
        json_t *jb = json_array_get(e, 0), *jg = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_integer(jb) || !json_is_integer(jg))
            return bad(r, "configs", "expected [bits, gs] pairs");
        long long bb = json_integer_value(jb), gg = json_integer_value(jg);
        int c = bb > 0 && bb < 64 && gg > 0 && gg < 1024 ? rf_cfg_index((int)bb, (int)gg) : -1;
        if (c <= last) return bad(r, "configs", "unknown config or not in (bits, gs) order");
        last = c;
        *configs |= 1u << c;
    }
    return RF_OK;
}

/* Version 1 rows: the candidate columns its header lists. */
static rf_status rd_cand_fields_v1(rd *r, json_t *root, unsigned modes)
{
    r->where = "header";
    json_t *jf = json_object_get(root, "cand_fields");
    size_t want = 3 + 2 * (size_t)__builtin_popcount(modes);
    if (!json_is_array(jf) || json_array_size(jf) != want) return bad(r, "cand_fields", "does not match modes");
    const char *fixed[3] = {"bits", "gs", "bytes"};
    size_t k = 0;
    for (; k < 3; k++)
        if (!json_is_string(json_array_get(jf, k)) || strcmp(json_string_value(json_array_get(jf, k)), fixed[k]))
            return bad(r, "cand_fields", "must start with bits, gs, bytes");
    for (int mo = 0; mo < 2; mo++) {
        if (!(modes >> mo & 1)) continue;
        for (int j = 0; j < 2; j++, k++) {
            char t[32];
            snprintf(t, sizeof t, "%s_%s", rf_qmode_token((rf_qmode)mo), j ? "max_abs" : "sse");
            const char *got = json_string_value(json_array_get(jf, k));
            if (!got || strcmp(got, t)) return bad(r, "cand_fields", "does not match modes");
        }
    }
    return RF_OK;
}

static rf_status rd_cands(rd *r, json_t *jc, unsigned modes, rf_punit *u)
{
    if (!json_is_array(jc) || json_array_size(jc) > RF_QCFG_N) return bad(r, "c", "expected an array of at most 18 candidates");
    size_t want = 3 + 2 * (size_t)__builtin_popcount(modes);
    u->n_cands = (int)json_array_size(jc);
    for (int k = 0; k < u->n_cands; k++) {
        char f[32];
        snprintf(f, sizeof f, "c[%d]", k);
        json_t *e = json_array_get(jc, (size_t)k);
        if (!json_is_array(e) || json_array_size(e) != want) return bad(r, f, "wrong number of fields");
        rf_pcand *c = &u->cands[k];
        json_t *jb = json_array_get(e, 0), *jg = json_array_get(e, 1), *jy = json_array_get(e, 2);
        if (!json_is_integer(jb) || !json_is_integer(jg) || !json_is_integer(jy) || json_integer_value(jy) < 0 ||
            json_integer_value(jb) < 0 || json_integer_value(jb) > 64 || json_integer_value(jg) < 0 || json_integer_value(jg) > 4096)
            return bad(r, f, "bits, gs, bytes must be integers in range");
        c->bits = (int)json_integer_value(jb);
        c->gs = (int)json_integer_value(jg);
        c->bytes = (uint64_t)json_integer_value(jy);
        size_t col = 3;
        for (int mo = 0; mo < 2; mo++) {
            c->err[mo] = (rf_qerr){NAN, u->ssq, NAN};
            if (!(modes >> mo & 1)) continue;
            json_t *js = json_array_get(e, col++), *jx = json_array_get(e, col++);
            if (json_is_null(js) && json_is_null(jx)) continue;
            rf_status s;
            if ((s = rd_num(r, js, f, &c->err[mo].sse)) || (s = rd_num(r, jx, f, &c->err[mo].max_abs))) return s;
            if (isnan(c->err[mo].sse)) return bad(r, f, "sse is NaN");
        }
    }
    return RF_OK;
}

static rf_status rd_unit(rd *r, json_t *ju, unsigned modes, rf_punit *u)
{
    memset(u, 0, sizeof *u);
    if (!json_is_object(ju)) return bad(r, "units", "expected an object");
    rf_status s;
    if ((s = rd_str(r, ju, "name", u->name, sizeof u->name))) return s;
    if ((s = rd_role(r, ju, &u->role)) || (s = rd_int(r, ju, "layer", -1, 1 << 30, &u->layer)) ||
        (s = rd_int(r, ju, "n_layers", 0, 1 << 30, &u->n_layers)) || (s = rd_int(r, ju, "members", 1, 1 << 30, &u->n_members)) ||
        (s = rd_u64(r, ju, "rows", &u->rows)) || (s = rd_u64(r, ju, "cols", &u->cols)) ||
        (s = rd_u64(r, ju, "params", &u->nparams)) || (s = rd_dtype(r, ju, "dtype", &u->dtype)) ||
        (s = rd_u64(r, ju, "kept_bytes", &u->kept_bytes)) || (s = rd_num(r, json_object_get(ju, "ssq"), "ssq", &u->ssq)))
        return s;
    json_t *st = json_object_get(ju, "stats");
    if (!json_is_array(st) || json_array_size(st) != 5) return bad(r, "stats", "expected [mean, rms, absmax, kurtosis, frac_6sigma]");
    double *sv[5] = {&u->stats.mean, &u->stats.rms, &u->stats.absmax, &u->stats.kurtosis, &u->stats.frac_6sigma};
    for (size_t i = 0; i < 5; i++)
        if ((s = rd_num(r, json_array_get(st, i), "stats", sv[i]))) return s;
    return rd_cands(r, json_object_get(ju, "c"), modes, u);
}

static rf_status rd_other(rd *r, json_t *jo, rf_pother *o)
{
    memset(o, 0, sizeof *o);
    if (!json_is_object(jo)) return bad(r, "others", "expected an object");
    rf_status s;
    if ((s = rd_str(r, jo, "name", o->name, sizeof o->name)) || (s = rd_role(r, jo, &o->role)) ||
        (s = rd_int(r, jo, "layer", -1, 1 << 30, &o->layer)) || (s = rd_u64(r, jo, "params", &o->nparams)) ||
        (s = rd_dtype(r, jo, "dtype", &o->dtype)) || (s = rd_u64(r, jo, "bytes", &o->bytes)))
        return s;
    return RF_OK;
}

/* ---- version 2 rows */

static rf_status rd_row_str(rd *r, json_t *row, size_t i, const char *k, char *dst, size_t cap)
{
    json_t *v = json_array_get(row, i);
    if (!json_is_string(v)) return bad(r, k, "expected a string");
    if (json_string_length(v) >= cap || strlen(json_string_value(v)) != json_string_length(v)) return bad(r, k, "too long or has NUL");
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return RF_OK;
}

static rf_status rd_row_int(rd *r, json_t *row, size_t i, const char *k, long long lo, long long hi, long long *out)
{
    json_t *v = json_array_get(row, i);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) return bad(r, k, "expected an integer in range");
    *out = json_integer_value(v);
    return RF_OK;
}

static rf_status rd_row_enum(rd *r, json_t *row, size_t i, const char *k, int role, int *out)
{
    char t[32];
    rf_status s = rd_row_str(r, row, i, k, t, sizeof t);
    if (s) return s;
    *out = role ? rf_role_from_token(t) : (int)rf_dtype_from_name(t);
    return *out < 0 || (!role && *out == RF_DT_INVALID) ? bad(r, k, role ? "unknown role" : "unknown dtype") : RF_OK;
}

/* [name, role, layer, n_layers, members, rows, cols, dtype, sizes, configs, estimated (version 3),
 * values?]: params and kept bytes follow from the shape, candidate bytes from "sizes" (a scale
 * dtype, or the list). */
/* GGUF: a GGUF profile's unit, GCFG its type mask. */
static rf_status rd_unit_v2(rd *r, json_t *row, int ver, int gguf, unsigned gcfg, unsigned modes, vio *data, rf_punit *u)
{
    memset(u, 0, sizeof *u);
    const size_t nf = ver >= 3 ? NUF : NUF2; /* with the inline values */
    if (!json_is_array(row) || json_array_size(row) != (data ? nf - 1 : nf)) return bad(r, "units", "expected a row of unit_fields");
    long long layer, nl, mem, rows, cols, mask, est = 0;
    int role, dt;
    rf_status s;
    if ((s = rd_row_str(r, row, 0, "name", u->name, sizeof u->name)) || (s = rd_row_enum(r, row, 1, "role", 1, &role)) ||
        (s = rd_row_int(r, row, 2, "layer", -1, 1 << 30, &layer)) || (s = rd_row_int(r, row, 3, "n_layers", 0, 1 << 30, &nl)) ||
        (s = rd_row_int(r, row, 4, "members", 1, 1 << 30, &mem)) || (s = rd_row_int(r, row, 5, "rows", 1, 1ll << 40, &rows)) ||
        (s = rd_row_int(r, row, 6, "cols", 1, 1ll << 40, &cols)) || (s = rd_row_enum(r, row, 7, "dtype", 0, &dt)) ||
        (s = rd_row_int(r, row, 9, "configs", 0, RF_PROFILE_ALL_CONFIGS, &mask)) ||
        (ver >= 3 && (s = rd_row_int(r, row, 10, "estimated", 0, RF_PROFILE_ALL_CONFIGS, &est))))
        return s;
    u->estimated = (unsigned)est;
    u->role = (rf_role)role;
    u->layer = (int)layer;
    u->n_layers = (int)nl;
    u->n_members = (int)mem;
    u->rows = (uint64_t)rows;
    u->cols = (uint64_t)cols;
    u->dtype = (rf_dtype)dt;
    if (!rf_mul_u64(u->rows, u->cols, &u->nparams) || !rf_mul_u64(u->nparams, (uint64_t)mem, &u->nparams) ||
        u->nparams > (1ull << 52))
        return bad(r, "rows", "rows * cols * members too large");
    u->kept_bytes = u->nparams * rf_dtype_size(u->dtype);
    json_t *sz = json_array_get(row, 8);
    if (gguf) { /* GGUF candidates: type table indices, sizes "gguf" */
        if (mask & ~gcfg) return bad(r, "configs", "not in the profile's GGUF type list");
        if (!json_is_string(sz) || strcmp(json_string_value(sz), "gguf")) return bad(r, "sizes", "expected \"gguf\"");
        for (int c = 0; c < RF_GCAND_N; c++)
            if (mask >> c & 1) {
                rf_pcand *x = &u->cands[u->n_cands++];
                x->gtype = rf_gcand_type(c);
                x->bits = rf_gtype_bits(x->gtype);
                x->gs = (int)rf_gtype_block(x->gtype);
                x->bytes = rf_gguf_tensor_bytes(x->gtype, (uint64_t)mem, u->rows, u->cols);
            }
    } else
        for (int c = 0; c < RF_QCFG_N; c++)
            if (mask >> c & 1) {
                u->cands[u->n_cands].bits = rf_cfg_bits(c);
                u->cands[u->n_cands++].gs = rf_cfg_gs(c);
            }
    rf_dtype sd = json_is_string(sz) ? rf_dtype_from_name(json_string_value(sz)) : RF_DT_INVALID;
    for (int k = 0; k < u->n_cands && !gguf; k++) {
        rf_pcand *c = &u->cands[k];
        json_t *e = json_array_get(sz, (size_t)k);
        if (sd == RF_DT_BF16 || sd == RF_DT_F16 || sd == RF_DT_F32) c->bytes = rf_quant_bytes(u->nparams, c->bits, c->gs, sd);
        else if (json_is_array(sz) && json_array_size(sz) == (size_t)u->n_cands && json_is_integer(e) && json_integer_value(e) >= 0)
            c->bytes = (uint64_t)json_integer_value(e);
        else
            return bad(r, "sizes", "expected BF16, F16, F32 or one byte count per candidate");
    }
    if (!gguf && !u->n_cands && !(json_is_string(sz) || (json_is_array(sz) && !json_array_size(sz))))
        return bad(r, "sizes", "expected a scale dtype or []");
    vio v = {.arr = json_array_get(row, nf - 1)};
    if (!data && !json_is_array(v.arr)) return bad(r, "values", "expected an array");
    if (!unit_values(data ? data : &v, 0, modes, u) || (!data && v.idx != json_array_size(v.arr)))
        return data ? bad(r, "values", "data file too short") : bad(r, "values", "wrong count or not numbers");
    for (int k = 0; k < u->n_cands; k++)
        for (int m = 0; m < 2; m++)
            if (isnan(u->cands[k].err[m].sse) != isnan(u->cands[k].err[m].max_abs))
                return bad(r, "values", "sse and max_abs must both be present or both absent");
    return RF_OK;
}

static rf_status rd_other_v2(rd *r, json_t *row, rf_pother *o)
{
    memset(o, 0, sizeof *o);
    if (!json_is_array(row) || json_array_size(row) != NOF) return bad(r, "others", "expected a row of other_fields");
    long long layer, np, by;
    int role, dt;
    rf_status s;
    if ((s = rd_row_str(r, row, 0, "name", o->name, sizeof o->name)) || (s = rd_row_enum(r, row, 1, "role", 1, &role)) ||
        (s = rd_row_int(r, row, 2, "layer", -1, 1 << 30, &layer)) || (s = rd_row_int(r, row, 3, "params", 0, LLONG_MAX, &np)) ||
        (s = rd_row_enum(r, row, 4, "dtype", 0, &dt)) || (s = rd_row_int(r, row, 5, "bytes", 0, LLONG_MAX, &by)))
        return s;
    o->role = (rf_role)role;
    o->layer = (int)layer;
    o->nparams = (uint64_t)np;
    o->dtype = (rf_dtype)dt;
    o->bytes = (uint64_t)by;
    return RF_OK;
}

static rf_status rd_fields(rd *r, json_t *root, const char *key, const char *const *f, size_t n)
{
    json_t *a = json_object_get(root, key);
    if (!json_is_array(a) || json_array_size(a) != n) return bad(r, key, "not the fields of this version");
    for (size_t i = 0; i < n; i++) {
        const char *t = json_string_value(json_array_get(a, i));
        if (!t || strcmp(t, f[i])) return bad(r, key, "not the fields of this version");
    }
    return RF_OK;
}

/* The data file of a version 2 index: checked against the size and checksum the index records. */
static rf_status rd_data(rd *r, json_t *root, const uint8_t *bin, size_t n, vio *v)
{
    r->where = "data";
    json_t *jd = json_object_get(root, "data");
    uint64_t want;
    char sum[24], fmt[8], file[256];
    rf_status s;
    if (!json_is_object(jd)) return bad(r, "data", "expected an object");
    if ((s = rd_str(r, jd, "file", file, sizeof file)) || (s = rd_u64(r, jd, "bytes", &want)) ||
        (s = rd_str(r, jd, "fnv1a64", sum, sizeof sum)) || (s = rd_str(r, jd, "max_abs", fmt, sizeof fmt)))
        return s;
    if (strcmp(fmt, "f32") && strcmp(fmt, "f64")) return bad(r, "max_abs", "expected \"f32\" or \"f64\"");
    char got[24];
    snprintf(got, sizeof got, "%016llx", (unsigned long long)fnv1a64(bin, n));
    if (want != n || strcmp(got, sum))
        return rf_err_set(r->err, RF_ERR_FORMAT, "%s: data file '%s' does not match its index (%zu bytes, checksum %s; the index "
                          "records %llu bytes, checksum %.20s): written by another run? analyse again",
                          r->label, file, n, got, (unsigned long long)want, sum);
    *v = (vio){.src = bin, .n = n, .f32 = !strcmp(fmt, "f32")};
    return RF_OK;
}

/* An add_* failure already names the unit; put the file label in front. */
static rf_status add_failed(rd *r, rf_status s)
{
    if (s == RF_ERR_FORMAT || s == RF_ERR_INVALID) {
        rf_err_prefix(r->err, "%s", r->label);
        if (r->err) r->err->code = RF_ERR_FORMAT;
        return RF_ERR_FORMAT;
    }
    return s;
}

/* The optional "calibration" object: errors weighted by a statistics file's E[x_j^2]. */
static rf_status rd_calibration(rd *r, json_t *root, rf_pcalib *c)
{
    json_t *jc = json_object_get(root, "calibration");
    memset(c, 0, sizeof *c);
    if (!jc) return RF_OK;
    r->where = "calibration";
    const char *w = json_string_value(json_object_get(jc, "weighting")), *t = json_string_value(json_object_get(jc, "text"));
    const char *x = json_string_value(json_object_get(jc, "stats_fnv1a64"));
    json_t *jt = json_object_get(jc, "tokens");
    char *end = NULL;
    if (!json_is_object(jc) || !w || strcmp(w, "activation") || !t || strlen(t) >= sizeof c->text || !json_is_integer(jt) ||
        json_integer_value(jt) < 0 || !x || strlen(x) != 16)
        return bad(r, "calibration", "expected {weighting: \"activation\", text, tokens, stats_fnv1a64}");
    c->stats_checksum = strtoull(x, &end, 16);
    if (*end) return bad(r, "calibration", "stats_fnv1a64 is not 16 hex digits");
    c->weighted = 1;
    snprintf(c->text, sizeof c->text, "%s", t);
    c->tokens = (uint64_t)json_integer_value(jt);
    return RF_OK;
}

/* HAVE_BIN: BIN holds the data file a version 2 index needs (absent: the numbers must be inline). */
static rf_status rd_profile(rd *r, json_t *root, const uint8_t *bin, size_t nbin, int have_bin, rf_profile **out)
{
    r->where = "header";
    if (!json_is_object(root)) return bad(r, "(root)", "expected an object");
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!fmt || strcmp(fmt, "ramfit-profile")) return bad(r, "format", "not \"ramfit-profile\"");
    json_t *jv = json_object_get(root, "version");
    if (!json_is_integer(jv)) return bad(r, "version", "expected an integer");
    long long ver = json_integer_value(jv);
    if (ver < 1 || ver > RF_PROFILE_VERSION)
        return rf_err_set(r->err, RF_ERR_UNSUPPORTED, "%s: profile format version %lld is not supported (this ramfit reads 1 to %d)",
                          r->label, ver, RF_PROFILE_VERSION);
    int indexed = ver >= 2 && json_object_get(root, "data") != NULL;
    if (indexed && !have_bin)
        return rf_err_set(r->err, RF_ERR_FORMAT, "%s: this profile keeps its numbers in a data file (\"data\"): load it by path", r->label);
    vio dv = {0};
    rf_pmodel m;
    unsigned modes = 0, configs = 0;
    rf_status s;
    int gguf = 0;
    if ((s = rd_model(r, root, &m)) || (s = rd_modes_configs(r, root, (int)ver, &modes, &configs, &gguf))) return s;
    uint64_t gfixed = 0, gsample = 0;
    if (gguf) {
        json_t *jg = json_object_get(root, "gguf");
        r->where = "header";
        if (!json_is_object(jg)) return bad(r, "gguf", "expected {fixed, sample}");
        if ((s = rd_u64(r, jg, "fixed", &gfixed)) || (s = rd_u64(r, jg, "sample", &gsample))) return s;
        if (gfixed > (1ull << 40)) return bad(r, "gguf", "fixed part out of range");
    }
    if (ver == 1 && (s = rd_cand_fields_v1(r, root, modes))) return s;
    uint64_t opt_sample = 0;
    long long shard[4] = {0, 0, 0, 0};
    if (ver >= 3) {
        r->where = "header";
        if ((s = rd_u64(r, root, "opt_sample", &opt_sample))) return s;
        json_t *js = json_object_get(root, "shard");
        if (js) {
            if (!json_is_array(js) || json_array_size(js) != 4) return bad(r, "shard", "expected [index, count, first unit, units]");
            for (size_t i = 0; i < 4; i++)
                if ((s = rd_row_int(r, js, i, "shard", 0, 1ll << 40, &shard[i]))) return s;
            if (shard[1] < 1) return rf_err_set(r->err, RF_ERR_FORMAT, "%s: header: field 'shard': not a valid part", r->label);
        }
    }
    if (ver >= 2) {
        r->where = "header";
        if ((s = rd_fields(r, root, "unit_fields", ver >= 3 ? unit_fields : unit_fields_v2,
                           (ver >= 3 ? NUF : NUF2) - (indexed ? 1 : 0))) ||
            (s = rd_fields(r, root, "other_fields", other_fields, NOF)))
            return s;
        if (indexed && (s = rd_data(r, root, bin, nbin, &dv))) return s;
    }
    rf_profile *p;
    if ((s = rf_profile_create(&m, modes, configs, &p, r->err))) return add_failed(r, s);
    rf_profile_set_opt_sample(p, opt_sample);
    if (gguf) {
        rf_profile_set_gguf(p, gfixed);
        rf_profile_set_gguf_sample(p, gsample);
    }
    if (json_object_get(root, "shard") && (s = rf_profile_set_shard(p, (int)shard[0], (int)shard[1], (uint64_t)shard[2], (uint64_t)shard[3], r->err))) {
        rf_profile_free(p);
        return add_failed(r, s);
    }
    if ((s = rd_calibration(r, root, &p->calib))) {
        rf_profile_free(p);
        return s;
    }
    json_t *files = json_object_get(json_object_get(root, "model"), "files");
    json_t *units = json_object_get(root, "units"), *others = json_object_get(root, "others");
    r->where = "model";
    if (!json_is_array(files)) s = bad(r, "files", "expected an array");
    for (size_t i = 0; !s && i < json_array_size(files); i++) {
        json_t *e = json_array_get(files, i), *jn = json_array_get(e, 0), *jb = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(jn) || !json_is_integer(jb) || json_integer_value(jb) < 0 ||
            strlen(json_string_value(jn)) != json_string_length(jn))
            s = bad(r, "files", "expected [name, bytes] pairs");
        else if ((s = rf_profile_add_file(p, json_string_value(jn), (uint64_t)json_integer_value(jb), r->err)))
            s = add_failed(r, s);
    }
    r->where = "header";
    if (!s && !json_is_array(units)) s = bad(r, "units", "expected an array");
    if (!s && !json_is_array(others)) s = bad(r, "others", "expected an array");
    rf_punit *u = s ? NULL : malloc(sizeof *u);
    if (!s && !u) s = rf_err_set(r->err, RF_ERR_NOMEM, "out of memory");
    char where[200];
    for (size_t i = 0; !s && i < json_array_size(units); i++) {
        json_t *ju = json_array_get(units, i);
        const char *nm = json_string_value(json_object_get(ju, "name"));
        snprintf(where, sizeof where, "unit %zu (%.160s)", i, nm ? nm : "?");
        r->where = where;
        if (ver >= 2) nm = json_string_value(json_array_get(ju, 0));
        snprintf(where, sizeof where, "unit %zu (%.160s)", i, nm ? nm : "?");
        s = ver >= 2 ? rd_unit_v2(r, ju, (int)ver, gguf, configs, modes, indexed ? &dv : NULL, u) : rd_unit(r, ju, modes, u);
        if (!s && (s = rf_profile_add_unit(p, u, r->err))) s = add_failed(r, s);
    }
    free(u);
    if (!s && indexed && dv.pos != dv.n) {
        r->where = "data";
        s = bad(r, "data", "data file longer than its units need");
    }
    for (size_t i = 0; !s && i < json_array_size(others); i++) {
        rf_pother o;
        snprintf(where, sizeof where, "other tensor %zu", i);
        r->where = where;
        s = ver >= 2 ? rd_other_v2(r, json_array_get(others, i), &o) : rd_other(r, json_array_get(others, i), &o);
        if (!s && (s = rf_profile_add_other(p, &o, r->err))) s = add_failed(r, s);
    }
    if (!s) {
        r->where = "totals";
        json_t *jt = json_object_get(root, "totals");
        uint64_t nu, no, np, nb;
        if (!json_is_object(jt)) s = bad(r, "totals", "expected an object");
        else if (!(s = rd_u64(r, jt, "units", &nu)) && !(s = rd_u64(r, jt, "others", &no)) && !(s = rd_u64(r, jt, "params", &np)) &&
                 !(s = rd_u64(r, jt, "bytes", &nb)) &&
                 (nu != p->n_units || no != p->n_others || np != p->params || nb != p->full_bytes))
            s = bad(r, "totals", "do not match the units and others listed (truncated or edited file?)");
    }
    if (s) { rf_profile_free(p); return s; }
    *out = p;
    return RF_OK;
}

static rf_status parse_root(const char *text, size_t len, const char *label, json_t **root, rf_err *err)
{
    return rf_json_parse(text, len, label, JSON_REJECT_DUPLICATES, root, err);
}

static rf_status from_parts(const char *text, size_t len, const uint8_t *bin, size_t nbin, int have_bin, const char *label,
                            rf_profile **out, rf_err *err)
{
    *out = NULL;
    json_t *root;
    label = label ? label : "profile";
    rf_status s = parse_root(text, len, label, &root, err);
    if (s) return s;
    rd r = {label, "header", err};
    s = rd_profile(&r, root, bin, nbin, have_bin, out);
    json_decref(root);
    return s;
}

rf_status rf_profile_from_json(const char *text, size_t len, const char *label, rf_profile **out, rf_err *err)
{
    return from_parts(text, len, NULL, 0, 0, label, out, err);
}

rf_status rf_profile_from_parts(const char *json, size_t json_len, const void *data, size_t data_len, const char *label,
                                rf_profile **out, rf_err *err)
{
    return from_parts(json, json_len, data, data_len, 1, label, out, err);
}

/* The data file an index ROOT read from PATH names (a plain name in PATH's directory): *DPATH
 * (malloc'd, NULL for a self-contained file) and *DMAX, the length the index gives it. */
static rf_status index_data(const json_t *root, const char *path, char **dpath, uint64_t *dmax, rf_err *err)
{
    *dpath = NULL;
    *dmax = 0;
    const json_t *jd = json_object_get(root, "data");
    const char *file = json_string_value(json_object_get(jd, "file"));
    if (rf_json_u64(json_object_get(jd, "bytes"), INT64_MAX - 1, dmax)) *dmax = 0;
    if (!file) return RF_OK;
    size_t fl = strlen(file);
    if (!fl || fl >= 256 || strchr(file, '/'))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: field 'data.file' must be a plain file name", path);
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    if (!(*dpath = malloc(dir + fl + 1))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    memcpy(*dpath, path, dir);
    memcpy(*dpath + dir, file, fl + 1);
    return RF_OK;
}

rf_status rf_profile_data_path(const char *path, char **out, rf_err *err)
{
    *out = NULL;
    json_t *root;
    uint64_t dmax;
    rf_status s = rf_json_load(path, RF_MAX_PLAN_FILE, JSON_REJECT_DUPLICATES, &root, err);
    if (!s) s = index_data(root, path, out, &dmax, err);
    json_decref(root);
    return s;
}

rf_status rf_profile_load(const char *path, rf_profile **out, rf_err *err)
{
    *out = NULL;
    char *text, *data = NULL, *dpath = NULL;
    size_t len, dlen = 0;
    rf_status s = rf_json_read_text(path, RF_MAX_PLAN_FILE, &text, &len, err);
    if (s) return s;
    json_t *root;
    if ((s = parse_root(text, len, path, &root, err))) { free(text); return s; }
    uint64_t dmax; /* the data file is as long as the index says (checked when read): a bound for reading it */
    s = index_data(root, path, &dpath, &dmax, err);
    json_decref(root);
    if (!s && dpath) {
        s = rf_read_file(dpath, dmax + 1, &data, &dlen, err);
        if (s) rf_err_prefix(err, "profile %s needs its data file", path);
    }
    if (!s) s = from_parts(text, len, (const uint8_t *)data, dlen, dpath != NULL, path, out, err);
    free(dpath);
    free(text);
    free(data);
    return s;
}

/* ------------------------------------------------------------------ merging shards */

static int same_model(const rf_pmodel *a, const rf_pmodel *b)
{
    if (a->fingerprint != b->fingerprint || strcmp(a->name, b->name) || strcmp(a->architecture, b->architecture) ||
        strcmp(a->model_type, b->model_type) || strcmp(a->ramfit_version, b->ramfit_version))
        return 0;
    for (size_t i = 0; i < NCFG; i++)
        if (*(const int *)((const char *)a + cfg_fields[i].off) != *(const int *)((const char *)b + cfg_fields[i].off)) return 0;
    return 1;
}

static int same_others(const rf_profile *a, const rf_profile *b)
{
    if (a->n_others != b->n_others) return 0;
    for (uint64_t i = 0; i < a->n_others; i++) {
        const rf_pother *x = &a->others[i], *y = &b->others[i];
        if (strcmp(x->name, y->name) || x->role != y->role || x->layer != y->layer || x->nparams != y->nparams ||
            x->dtype != y->dtype || x->bytes != y->bytes)
            return 0;
    }
    return 1;
}

/* The statistics that weighted the errors (analyse --stats): none in both, or the same file. */
static int same_calibration(const rf_pcalib *a, const rf_pcalib *b)
{
    if (a->weighted != b->weighted) return 0;
    return !a->weighted || (a->stats_checksum == b->stats_checksum && a->tokens == b->tokens && !strcmp(a->text, b->text));
}

static int same_files(const rf_profile *a, const rf_profile *b)
{
    if (a->n_files != b->n_files) return 0;
    for (uint64_t i = 0; i < a->n_files; i++)
        if (strcmp(a->files[i].name, b->files[i].name) || a->files[i].bytes != b->files[i].bytes) return 0;
    return 1;
}

rf_status rf_profile_merge(const rf_profile *const *parts, size_t n, const char *const *labels, rf_profile **out,
                           rf_err *err)
{
    *out = NULL;
    if (!parts || !n) return rf_err_set(err, RF_ERR_INVALID, "profile merge: no parts given");
#define LABEL(i) (labels && labels[i] ? labels[i] : "profile part")
    for (size_t i = 0; i < n; i++)
        if (!parts[i]) return rf_err_set(err, RF_ERR_INVALID, "profile merge: NULL part");
    const rf_profile *a = parts[0];
    const int count = a->shard_count;
    for (size_t i = 0; i < n; i++)
        if (!parts[i]->shard_count)
            return rf_err_set(err, RF_ERR_MISMATCH, "%s is a whole profile, not a part made by 'ramfit analyse --shard K/N'",
                              LABEL(i));
    if ((size_t)count != n)
        return rf_err_set(err, RF_ERR_MISMATCH, "%s is part %d of %d, but %zu part%s given: give all %d parts of the analysis",
                          LABEL(0), a->shard_index, count, n, n == 1 ? " was" : "s were", count);
    size_t *at = calloc(n, sizeof *at); /* shard index - 1 -> position in parts, + 1 */
    if (!at) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status s = RF_OK;
    for (size_t i = 0; i < n && !s; i++) {
        const rf_profile *b = parts[i];
        const char *what = b->shard_count != count                  ? "the number of parts"
                           : !same_model(&a->model, &b->model)        ? "the checkpoint (fingerprint, model or ramfit version)"
                           : !same_files(a, b)                        ? "the checkpoint's shard files"
                           : b->modes != a->modes                     ? "the modes"
                           : b->configs != a->configs                 ? "the candidate configs"
                           : b->opt_sample != a->opt_sample           ? "the opt sampling (--opt-sample/--exact)"
                           : b->shard_total != a->shard_total         ? "the number of units"
                           : !same_others(a, b)                       ? "the other tensors"
                           : !same_calibration(&a->calib, &b->calib)  ? "the activation weighting (analyse --stats)"
                                                                      : NULL;
        if (what)
            s = rf_err_set(err, RF_ERR_MISMATCH, "%s and %s are not parts of one analysis: %s differ (fingerprints %016llx, "
                           "%016llx): analyse every part with the same ramfit and options", LABEL(0), LABEL(i), what,
                           (unsigned long long)a->model.fingerprint, (unsigned long long)b->model.fingerprint);
        else if (at[b->shard_index - 1])
            s = rf_err_set(err, RF_ERR_MISMATCH, "%s and %s are both part %d of %d", LABEL(at[b->shard_index - 1] - 1),
                           LABEL(i), b->shard_index, count);
        else
            at[b->shard_index - 1] = i + 1;
    }
    /* in shard order, each part starts where the previous one ended: every unit once, in order */
    uint64_t next = 0;
    for (int k = 0; k < count && !s; k++) {
        const rf_profile *b = parts[at[k] - 1];
        if (b->shard_first != next)
            s = rf_err_set(err, RF_ERR_MISMATCH, "%s (part %d of %d) starts at unit %llu, but the parts before it end at unit "
                           "%llu: the parts were cut differently (another ramfit version?)", LABEL(at[k] - 1), k + 1, count,
                           (unsigned long long)b->shard_first, (unsigned long long)next);
        next += b->n_units;
    }
    if (!s && next != a->shard_total)
        s = rf_err_set(err, RF_ERR_MISMATCH, "the parts hold %llu units, the analysis has %llu", (unsigned long long)next,
                       (unsigned long long)a->shard_total);
    rf_profile *p = NULL;
    if (!s) s = rf_profile_create(&a->model, a->modes, a->configs, &p, err);
    if (!s) {
        p->opt_sample = a->opt_sample;
        p->calib = a->calib; /* the "calibration" key: a weighted analysis stays weighted when merged */
    }
    for (uint64_t f = 0; !s && f < a->n_files; f++) s = rf_profile_add_file(p, a->files[f].name, a->files[f].bytes, err);
    for (int k = 0; k < count && !s; k++) {
        const rf_profile *b = parts[at[k] - 1];
        for (uint64_t u = 0; u < b->n_units && !s; u++)
            if ((s = rf_profile_add_unit(p, &b->units[u], err))) rf_err_prefix(err, "%s", LABEL(at[k] - 1));
    }
    for (uint64_t o = 0; o < a->n_others && !s; o++) s = rf_profile_add_other(p, &a->others[o], err);
#undef LABEL
    free(at);
    if (s) {
        rf_profile_free(p);
        return s;
    }
    *out = p;
    return RF_OK;
}
