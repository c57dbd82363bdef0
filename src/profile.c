/* Profiles: the measured (bytes, error) table the planner reads, and its JSON file format
 * (docs/profile.md). Profile files are untrusted input: every field is validated on load. */
#include "plan_internal.h"

#include <errno.h>
#include <jansson.h>
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
    snprintf(t, sizeof t, "%.17g", v);
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
    size_t wrote = fwrite(text, 1, len, f);
    int e1 = wrote == len ? 0 : errno, e2 = fclose(f) ? errno : 0;
    if (e1 || e2 || rename(tmp, path) != 0) {
        rf_status s = rf_err_errno(err, e1 ? e1 : e2 ? e2 : errno, "%s: cannot write", path);
        unlink(tmp);
        free(tmp);
        return s;
    }
    free(tmp);
    return RF_OK;
}

rf_status rf_read_text_file(const char *path, char **out, size_t *len, rf_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return rf_err_errno(err, errno, "%s: cannot open", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", path); }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb) free(buf);
        buf = nb;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return rf_err_errno(err, EIO, "%s: read failed", path); }
    buf[n] = '\0';
    *out = buf;
    *len = n;
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
};

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

rf_status rf_punit_add_cand(rf_punit *u, int bits, int gs, uint64_t bytes, const rf_qerr *mlx, const rf_qerr *opt,
                            rf_err *err)
{
    if (u->n_cands < 0 || u->n_cands >= RF_QCFG_N)
        return rf_err_set(err, RF_ERR_INVALID, "unit %s: too many candidates", u->name);
    rf_pcand *c = &u->cands[u->n_cands++];
    c->bits = bits;
    c->gs = gs;
    c->bytes = bytes;
    const rf_qerr absent = {NAN, u->ssq, NAN};
    c->err[RF_QMODE_MLX] = mlx ? *mlx : absent;
    c->err[RF_QMODE_OPT] = opt ? *opt : absent;
    return RF_OK;
}

static int cand_cmp(const void *a, const void *b)
{
    const rf_pcand *x = a, *y = b;
    int cx = rf_cfg_index(x->bits, x->gs), cy = rf_cfg_index(y->bits, y->gs);
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
        int ci = rf_cfg_index(c->bits, c->gs);
        if (ci < 0) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': %d bits / gs %d is not a config", n, k, c->bits, c->gs);
        if (u->cols % (uint64_t)c->gs) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': gs %d does not divide cols %llu", n, k, c->gs, (unsigned long long)u->cols);
        if (!(p->configs >> ci & 1)) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': %d/%d is not in the profile's config list", n, k, c->bits, c->gs);
        if (seen >> ci & 1) return rf_err_set(err, RF_ERR_FORMAT, "unit %s: field 'c[%d]': duplicate %d/%d", n, k, c->bits, c->gs);
        seen |= 1u << ci;
        uint64_t lo = np / 8 * (uint64_t)c->bits, hi = lo + np / (uint64_t)c->gs * 16;
        if (c->bytes < lo || c->bytes > hi)
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
    }
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
uint64_t rf_profile_full_bytes(const rf_profile *p) { return p->full_bytes; }
uint64_t rf_profile_other_bytes(const rf_profile *p) { return p->other_bytes; }

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

static void write_unit(rf_sb *b, const rf_profile *p, const rf_punit *u)
{
    rf_sb_puts(b, "    {");
    put_str(b, "name", u->name, 1);
    put_str(b, "role", rf_role_name(u->role), 0);
    put_int(b, "layer", u->layer, 0);
    put_int(b, "n_layers", u->n_layers, 0);
    put_int(b, "members", u->n_members, 0);
    put_u64(b, "rows", u->rows, 0);
    put_u64(b, "cols", u->cols, 0);
    put_u64(b, "params", u->nparams, 0);
    put_str(b, "dtype", rf_dtype_name(u->dtype), 0);
    put_u64(b, "kept_bytes", u->kept_bytes, 0);
    put_key(b, "ssq", 0);
    rf_sb_double(b, u->ssq);
    put_key(b, "stats", 0);
    const double st[5] = {u->stats.mean, u->stats.rms, u->stats.absmax, u->stats.kurtosis, u->stats.frac_6sigma};
    for (int i = 0; i < 5; i++) {
        rf_sb_puts(b, i ? ", " : "[");
        rf_sb_double(b, st[i]);
    }
    rf_sb_puts(b, "]");
    put_key(b, "c", 0);
    rf_sb_puts(b, "[");
    for (int k = 0; k < u->n_cands; k++) {
        const rf_pcand *c = &u->cands[k];
        rf_sb_printf(b, "%s[%d, %d, %llu", k ? ", " : "", c->bits, c->gs, (unsigned long long)c->bytes);
        for (int m = 0; m < 2; m++) {
            if (!(p->modes >> m & 1)) continue;
            if (isnan(c->err[m].sse)) { rf_sb_puts(b, ", null, null"); continue; }
            rf_sb_puts(b, ", ");
            rf_sb_double(b, c->err[m].sse);
            rf_sb_puts(b, ", ");
            rf_sb_double(b, c->err[m].max_abs);
        }
        rf_sb_puts(b, "]");
    }
    rf_sb_puts(b, "]}");
}

rf_status rf_profile_to_json(const rf_profile *p, char **out, size_t *len, rf_err *err)
{
    rf_sb b = {0};
    const rf_pmodel *m = &p->model;
    rf_sb_puts(&b, "{\n  ");
    put_str(&b, "format", "ramfit-profile", 1);
    put_int(&b, "version", RF_PROFILE_VERSION, 0);
    rf_sb_puts(&b, ",\n  ");
    put_str(&b, "ramfit_version", m->ramfit_version, 1);
    rf_sb_puts(&b, ",\n  \"model\": {");
    put_str(&b, "name", m->name, 1);
    put_str(&b, "architecture", m->architecture, 0);
    put_str(&b, "model_type", m->model_type, 0);
    put_key(&b, "fingerprint", 0);
    rf_sb_printf(&b, "\"%016llx\"", (unsigned long long)m->fingerprint);
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
            rf_sb_printf(&b, "%s\"%s\"", first ? "" : ", ", rf_qmode_token((rf_qmode)mo));
            first = 0;
        }
    rf_sb_puts(&b, "],\n  \"configs\": [");
    first = 1;
    for (int c = 0; c < RF_QCFG_N; c++)
        if (p->configs >> c & 1) {
            rf_sb_printf(&b, "%s[%d, %d]", first ? "" : ", ", rf_cfg_bits(c), rf_cfg_gs(c));
            first = 0;
        }
    rf_sb_puts(&b, "],\n  \"cand_fields\": [\"bits\", \"gs\", \"bytes\"");
    for (int mo = 0; mo < 2; mo++)
        if (p->modes >> mo & 1) rf_sb_printf(&b, ", \"%s_sse\", \"%s_max_abs\"", rf_qmode_token((rf_qmode)mo), rf_qmode_token((rf_qmode)mo));
    rf_sb_puts(&b, "],\n  \"totals\": {");
    put_u64(&b, "units", p->n_units, 1);
    put_u64(&b, "others", p->n_others, 0);
    put_u64(&b, "params", p->params, 0);
    put_u64(&b, "bytes", p->full_bytes, 0);
    rf_sb_puts(&b, "},\n  \"units\": [");
    for (uint64_t i = 0; i < p->n_units; i++) {
        rf_sb_puts(&b, i ? ",\n" : "\n");
        write_unit(&b, p, &p->units[i]);
    }
    rf_sb_puts(&b, p->n_units ? "\n  ],\n  \"others\": [" : "],\n  \"others\": [");
    for (uint64_t i = 0; i < p->n_others; i++) {
        const rf_pother *o = &p->others[i];
        rf_sb_puts(&b, i ? ",\n    {" : "\n    {");
        put_str(&b, "name", o->name, 1);
        put_str(&b, "role", rf_role_name(o->role), 0);
        put_int(&b, "layer", o->layer, 0);
        put_u64(&b, "params", o->nparams, 0);
        put_str(&b, "dtype", rf_dtype_name(o->dtype), 0);
        put_u64(&b, "bytes", o->bytes, 0);
        rf_sb_puts(&b, "}");
    }
    rf_sb_puts(&b, p->n_others ? "\n  ]\n}\n" : "]\n}\n");
    return rf_sb_finish(&b, out, len, err);
}

rf_status rf_profile_save(const rf_profile *p, const char *path, rf_err *err)
{
    char *text;
    size_t len;
    rf_status s = rf_profile_to_json(p, &text, &len, err);
    if (s) return s;
    s = rf_write_text_file(path, text, len, err);
    free(text);
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
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0) return bad(r, k, "expected a non-negative integer");
    *out = (uint64_t)json_integer_value(v);
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
    json_t *cfg = json_object_get(jm, "config");
    if (!json_is_object(cfg)) return bad(r, "config", "expected an object");
    for (size_t i = 0; i < NCFG; i++)
        if ((s = rd_int(r, cfg, cfg_fields[i].key, 0, 1 << 30, (int *)((char *)m + cfg_fields[i].off)))) return s;
    return RF_OK;
}

static rf_status rd_modes_configs(rd *r, json_t *root, unsigned *modes, unsigned *configs)
{
    r->where = "header";
    json_t *jm = json_object_get(root, "modes"), *jc = json_object_get(root, "configs");
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
    json_t *jf = json_object_get(root, "cand_fields");
    size_t want = 3 + 2 * (size_t)__builtin_popcount(*modes);
    if (!json_is_array(jf) || json_array_size(jf) != want) return bad(r, "cand_fields", "does not match modes");
    const char *fixed[3] = {"bits", "gs", "bytes"};
    size_t k = 0;
    for (; k < 3; k++)
        if (!json_is_string(json_array_get(jf, k)) || strcmp(json_string_value(json_array_get(jf, k)), fixed[k]))
            return bad(r, "cand_fields", "must start with bits, gs, bytes");
    for (int mo = 0; mo < 2; mo++) {
        if (!(*modes >> mo & 1)) continue;
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

static rf_status rd_profile(rd *r, json_t *root, rf_profile **out)
{
    r->where = "header";
    if (!json_is_object(root)) return bad(r, "(root)", "expected an object");
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!fmt || strcmp(fmt, "ramfit-profile")) return bad(r, "format", "not \"ramfit-profile\"");
    json_t *jv = json_object_get(root, "version");
    if (!json_is_integer(jv)) return bad(r, "version", "expected an integer");
    if (json_integer_value(jv) != RF_PROFILE_VERSION)
        return rf_err_set(r->err, RF_ERR_UNSUPPORTED, "%s: profile format version %lld is not supported (this ramfit reads %d)",
                          r->label, (long long)json_integer_value(jv), RF_PROFILE_VERSION);
    rf_pmodel m;
    unsigned modes = 0, configs = 0;
    rf_status s;
    if ((s = rd_model(r, root, &m)) || (s = rd_modes_configs(r, root, &modes, &configs))) return s;
    rf_profile *p;
    if ((s = rf_profile_create(&m, modes, configs, &p, r->err))) return add_failed(r, s);
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
        if (!(s = rd_unit(r, ju, modes, u)) && (s = rf_profile_add_unit(p, u, r->err))) s = add_failed(r, s);
    }
    free(u);
    for (size_t i = 0; !s && i < json_array_size(others); i++) {
        rf_pother o;
        snprintf(where, sizeof where, "other tensor %zu", i);
        r->where = where;
        if (!(s = rd_other(r, json_array_get(others, i), &o)) && (s = rf_profile_add_other(p, &o, r->err))) s = add_failed(r, s);
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

rf_status rf_profile_from_json(const char *text, size_t len, const char *label, rf_profile **out, rf_err *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: not valid JSON (line %d, column %d): %s", label ? label : "profile",
                          je.line, je.column, je.text);
    rd r = {label ? label : "profile", "header", err};
    rf_status s = rd_profile(&r, root, out);
    json_decref(root);
    return s;
}

rf_status rf_profile_load(const char *path, rf_profile **out, rf_err *err)
{
    *out = NULL;
    char *text;
    size_t len;
    rf_status s = rf_read_text_file(path, &text, &len, err);
    if (s) return s;
    s = rf_profile_from_json(text, len, path, out, err);
    free(text);
    return s;
}
