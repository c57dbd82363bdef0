/* ramfit calibrate: the input statistics of every matrix product, collected with the engine's
 * observer while it runs the unquantized model over a text (windows as ppl's full protocol).
 *
 * Records. Every (unit, member) the observer sees gets a record: the tokens, sum of x_j^2 per input
 * column (double) and, with Hessians, sum of x x^T (packed upper triangle, float). Units fed the very
 * same input (q/k/v, gate/up, an expert's gate/up, a router and the shared expert) share one record:
 * a unit's member follows the record of an earlier call in the same layer, of the same member index
 * and of a compatible role, whose input was bit for bit the same; every later call of the follower is
 * checked to repeat its leader's input (a mismatch is an error, never silently merged data).
 *
 * Passes. H of a d-column input is d (d + 1) / 2 floats: a 8B model holds ~30 GB of them. A first
 * window is run to discover the records; the units are then packed, in catalogue order, into passes
 * whose accumulators fit the memory limit, and the text is run once per pass, each pass accumulating
 * only its units' records and writing them out when it ends. Memory: the engine (weights are mapped),
 * one pass's accumulators, the moments (8 bytes per input column of every record).
 *
 * Determinism. The engine's forward pass does not depend on its thread count; the observer runs on
 * the caller's thread; the products x^T x are split into tiles of H, each summed by one task over the
 * tokens in order (then added to the accumulator), so the file is the same for any thread count. */
#include "arch/model_internal.h"
#include "calib/calib_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MEMORY (4ull << 30)
#define HIST 8          /* recent inputs a new member may share */
#define TILE_R 16       /* rows of an H tile */
#define TILE_C 512      /* columns of an H tile */

void rf_calib_opts_default(rf_calib_opts *o)
{
    memset(o, 0, sizeof *o);
    o->threads = 2;
    o->ctx = 512;
    o->hessian = 1;
    o->memory = DEFAULT_MEMORY;
}

/* ------------------------------------------------------------------ the x^T x kernel */

static inline __attribute__((always_inline)) void axpy_body(float *restrict y, float a, const float *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}
static void axpy_ref(float *restrict y, float a, const float *restrict x, size_t n) { axpy_body(y, a, x, n); }
#if RF_X86
RF_TARGET_AVX2 static void axpy_avx2(float *restrict y, float a, const float *restrict x, size_t n) { axpy_body(y, a, x, n); }
#endif

typedef struct xtx {
    const float *x;
    int ntok;
    uint64_t cols;
    float *h;           /* packed upper triangle */
    float *scratch;     /* TILE_R * TILE_C floats per worker */
    void (*axpy)(float *restrict, float, const float *restrict, size_t);
} xtx;

static inline uint64_t up_idx(uint64_t n, uint64_t i, uint64_t j) { return i * n - i * (i - 1) / 2 + (j - i); }

/* Rows [i0, i0 + TILE_R) of H, column chunk by column chunk: the tile's sum over the tokens in order
 * (from zero), then added to H. */
static void xtx_task(void *ctx, uint64_t t, int worker)
{
    const xtx *j = ctx;
    const uint64_t n = j->cols, i0 = t * TILE_R, i1 = i0 + TILE_R < n ? i0 + TILE_R : n;
    float *acc = j->scratch + (size_t)worker * TILE_R * TILE_C;
    for (uint64_t j0 = i0 - i0 % TILE_C; j0 < n; j0 += TILE_C) {
        uint64_t j1 = j0 + TILE_C < n ? j0 + TILE_C : n;
        memset(acc, 0, TILE_R * TILE_C * sizeof(float));
        for (int k = 0; k < j->ntok; k++) {
            const float *xr = j->x + (uint64_t)k * n;
            for (uint64_t i = i0; i < i1; i++) {
                uint64_t js = i > j0 ? i : j0;
                if (js < j1) j->axpy(acc + (i - i0) * TILE_C + (js - j0), xr[i], xr + js, (size_t)(j1 - js));
            }
        }
        for (uint64_t i = i0; i < i1; i++) {
            uint64_t js = i > j0 ? i : j0;
            if (js >= j1) continue;
            float *hr = j->h + up_idx(n, i, js);
            const float *ar = acc + (i - i0) * TILE_C + (js - j0);
            for (uint64_t c = 0; c < j1 - js; c++) hr[c] += ar[c];
        }
    }
}

/* ------------------------------------------------------------------ state */

typedef struct crec {
    uint64_t cols;
    int pass;               /* the pass that accumulates it (-1: not yet assigned) */
    int layer, member, cls; /* who created it: what may share it */
    uint64_t tokens;
    double *sq;             /* sum of x_j^2 */
    float *h;               /* sum of x x^T while its pass runs */
    uint64_t last_hash;     /* the input of its leader's latest call */
    int last_ntok;
    calib_rec out;
} crec;

typedef struct cunit {
    const rf_unit *u;
    int pass;
    int64_t *rec;           /* per member, -1: not seen */
    uint8_t *follows;       /* per member: shares an earlier unit's record */
} cunit;

typedef struct hist_e { uint64_t hash, cols; int ntok; int64_t rec; } hist_e;

typedef struct coll {
    rf_model *m;
    cunit *units;
    uint64_t nunits;
    crec *recs;
    uint64_t nrec, cap;
    const void **pkey;      /* observer unit pointer -> unit index (open addressing) */
    int64_t *pval;
    uint64_t pcap;
    int accumulate;         /* 0: discovering records; 1: accumulating */
    int pass, hessian;
    hist_e hist[HIST];
    int nhist, hpos;
    rf_pool *pool;
    float *scratch;
    void (*axpy)(float *restrict, float, const float *restrict, size_t);
    uint64_t cur_bytes, peak_bytes;
    rf_status st;
    rf_err err;
    volatile int stop;      /* the evaluation's cancel flag: ours (an error) or the caller's */
    volatile int *user_cancel;
    rf_progress user_progress;
    int passes;
} coll;

/* Inputs of roles in one class may be the same tensor: attention's q/k/v (and MLA's q_a/kv_a), the MLP's
 * gate/up with a router and shared expert, an expert's gate/up. */
static int role_class(rf_role r)
{
    switch (r) {
    case RF_ROLE_ATTN_Q: case RF_ROLE_ATTN_K: case RF_ROLE_ATTN_V: case RF_ROLE_ATTN_QKV: case RF_ROLE_ATTN_Q_A:
    case RF_ROLE_ATTN_KV_A:
        return 1;
    case RF_ROLE_MLP_GATE: case RF_ROLE_MLP_UP: case RF_ROLE_MLP_GATE_UP: case RF_ROLE_ROUTER: case RF_ROLE_SHARED_GATE:
    case RF_ROLE_SHARED_UP:
        return 2;
    case RF_ROLE_EXPERT_GATE: case RF_ROLE_EXPERT_UP:
        return 3;
    default:
        return 0;
    }
}

static void fail(coll *c, rf_status s, const char *fmt, const char *a, const char *b)
{
    if (c->st) return;
    c->st = rf_err_set(&c->err, s, fmt, a, b);
    c->stop = 1;
}

static int64_t unit_of(coll *c, const rf_unit *u)
{
    uint64_t h = ((uintptr_t)u >> 4) * 0x9e3779b97f4a7c15ull;
    for (uint64_t i = h & (c->pcap - 1);; i = (i + 1) & (c->pcap - 1)) {
        if (c->pkey[i] == u) return c->pval[i];
        if (!c->pkey[i]) {
            int64_t k = rf_model_unit_find(c->m, u->name);
            c->pkey[i] = u;
            c->pval[i] = k;
            return k;
        }
    }
}

/* A hash of the input and a check that it is finite. */
static int hash_input(const float *x, uint64_t n, uint64_t *out)
{
    uint64_t h = RF_FNV_INIT;
    const uint32_t *w = (const uint32_t *)(const void *)x;
    int ok = 1;
    for (uint64_t i = 0; i < n; i++) {
        h = (h ^ w[i]) * 0x100000001b3ull;
        ok &= (w[i] & 0x7f800000u) != 0x7f800000u;
    }
    *out = h;
    return ok;
}

static int64_t new_record(coll *c, const cunit *cu, int member, int pass)
{
    if (c->nrec == c->cap) {
        uint64_t nc = c->cap ? 2 * c->cap : 256;
        crec *n = realloc(c->recs, nc * sizeof *n);
        if (!n) return -1;
        c->recs = n;
        c->cap = nc;
    }
    crec *r = &c->recs[c->nrec];
    memset(r, 0, sizeof *r);
    r->cols = cu->u->cols;
    r->pass = pass;
    r->layer = cu->u->layer;
    r->member = member;
    r->cls = role_class(cu->u->role);
    r->sq = calloc(r->cols, sizeof(double));
    if (!r->sq) return -1;
    if (c->accumulate && c->hessian && pass == c->pass) {
        uint64_t hb = r->cols * (r->cols + 1) / 2 * sizeof(float);
        if (!(r->h = calloc(1, hb))) {
            free(r->sq);
            return -1;
        }
        c->cur_bytes += hb;
        c->peak_bytes = c->cur_bytes > c->peak_bytes ? c->cur_bytes : c->peak_bytes;
    }
    return (int64_t)c->nrec++;
}

static void accumulate(coll *c, crec *r, const float *x, int ntok)
{
    uint64_t n = r->cols;
    r->tokens += (uint64_t)ntok;
    for (int t = 0; t < ntok; t++) {
        const float *xr = x + (uint64_t)t * n;
        for (uint64_t j = 0; j < n; j++) r->sq[j] += (double)xr[j] * xr[j];
    }
    if (!r->h) return;
    xtx job = {x, ntok, n, r->h, c->scratch, c->axpy};
    uint64_t tasks = (n + TILE_R - 1) / TILE_R;
    rf_pool_run((uint64_t)ntok * n * n < (1u << 22) ? NULL : c->pool, tasks, xtx_task, &job);
}

static void observe(void *user, const rf_unit *u, int member, const float *x, int ntok)
{
    coll *c = user;
    if (c->st || ntok <= 0) return;
    int64_t ui = unit_of(c, u);
    if (ui < 0 || member < 0 || member >= c->units[ui].u->n_members || c->units[ui].u->cols != u->cols) {
        fail(c, RF_ERR_INTERNAL, "calibrate: the engine multiplied by %s%s, which the catalogue does not have", u->name,
             ui < 0 ? "" : " (member or width differ)");
        return;
    }
    cunit *cu = &c->units[ui];
    uint64_t hash;
    if (!hash_input(x, (uint64_t)ntok * u->cols, &hash)) {
        fail(c, RF_ERR_NONFINITE, "calibrate: the input of %s holds NaN or Inf%s: the activations overflow", u->name, "");
        return;
    }
    int64_t r = cu->rec[member];
    if (r < 0) {
        int cls = role_class(u->role);
        for (int k = 0; k < c->nhist && cls; k++) {
            const hist_e *h = &c->hist[(c->hpos - 1 - k + HIST) % HIST];
            const crec *hr = &c->recs[h->rec];
            if (h->hash == hash && h->ntok == ntok && h->cols == u->cols && hr->cls == cls && hr->layer == u->layer &&
                hr->member == member) {
                r = h->rec;
                cu->follows[member] = 1;
                break;
            }
        }
        if (r < 0 && (r = new_record(c, cu, member, c->accumulate ? cu->pass : -1)) < 0) {
            fail(c, RF_ERR_NOMEM, "calibrate: out of memory for the statistics of %s%s", u->name, "");
            return;
        }
        cu->rec[member] = r;
    }
    crec *rec = &c->recs[r];
    if (cu->follows[member]) {
        if (rec->last_hash != hash || rec->last_ntok != ntok)
            fail(c, RF_ERR_INTERNAL, "calibrate: %s shared its input statistics with an earlier product of its layer, but "
                 "its input differs now%s", u->name, "");
        return;
    }
    rec->last_hash = hash;
    rec->last_ntok = ntok;
    c->hist[c->hpos] = (hist_e){hash, u->cols, ntok, r};
    c->hpos = (c->hpos + 1) % HIST;
    if (c->nhist < HIST) c->nhist++;
    if (c->accumulate && rec->pass == c->pass) accumulate(c, rec, x, ntok);
}

/* ------------------------------------------------------------------ passes */

static uint64_t h_bytes(uint64_t cols) { return cols * (cols + 1) / 2 * sizeof(float); }

/* Units into passes of at most LIMIT bytes of accumulators (catalogue order; a unit larger than the
 * limit gets a pass of its own). Members not seen yet count as needing their own H, unless every
 * member seen follows another unit's record. Returns the number of passes. */
static int assign_passes(coll *c, uint64_t limit)
{
    int pass = 0;
    uint64_t used = 0;
    for (uint64_t i = 0; i < c->nunits; i++) {
        cunit *cu = &c->units[i];
        int seen = 0, follows = 0;
        uint64_t need = 0;
        for (int k = 0; k < cu->u->n_members; k++) {
            if (cu->rec[k] >= 0) {
                seen++;
                follows += cu->follows[k];
                if (!cu->follows[k]) need += h_bytes(cu->u->cols);
            }
        }
        if (!(seen && follows == seen))
            need += (uint64_t)(cu->u->n_members - seen) * h_bytes(cu->u->cols);
        if (!c->hessian) need = 0;
        if (used && used + need > limit) {
            pass++;
            used = 0;
        }
        cu->pass = pass;
        used += need;
    }
    for (uint64_t r = 0; r < c->nrec; r++) c->recs[r].pass = -1;
    for (uint64_t i = 0; i < c->nunits; i++)
        for (int k = 0; k < c->units[i].u->n_members; k++)
            if (c->units[i].rec[k] >= 0 && !c->units[i].follows[k]) c->recs[c->units[i].rec[k]].pass = c->units[i].pass;
    return pass + 1;
}

static void on_progress(void *user, uint64_t done, uint64_t total, const char *what)
{
    (void)what;
    coll *c = user;
    if (c->user_cancel && *c->user_cancel) c->stop = 1;
    if (c->user_progress.fn && c->accumulate) {
        char msg[64];
        snprintf(msg, sizeof msg, "pass %d: window %llu/%llu", c->pass + 1, (unsigned long long)done,
                 (unsigned long long)total);
        c->user_progress.fn(c->user_progress.user, (uint64_t)c->pass * total + done, (uint64_t)c->passes * total, msg);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *base_name(const char *dir, char *buf, size_t cap)
{
    char *real = realpath(dir, NULL);
    const char *d = real ? real : dir;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && d[b - 1] != '/') b--;
    snprintf(buf, cap, "%.*s", (int)(n - b), d + b);
    free(real);
    return buf;
}

static void coll_free(coll *c)
{
    for (uint64_t r = 0; r < c->nrec; r++) {
        free(c->recs[r].sq);
        free(c->recs[r].h);
    }
    free(c->recs);
    for (uint64_t i = 0; i < c->nunits; i++) {
        free(c->units[i].rec);
        free(c->units[i].follows);
    }
    free(c->units);
    free(c->pkey);
    free(c->pval);
    free(c->scratch);
    rf_pool_free(c->pool);
    rf_model_free(c->m);
}

/* Write the H of the records of pass P (mean over tokens) and free their accumulators. */
static rf_status flush_pass(coll *c, calib_data *d, int p, rf_err *err)
{
    for (uint64_t i = 0; i < c->nrec; i++) {
        crec *r = &c->recs[i];
        if (r->pass != p || !r->h) continue;
        uint64_t n = r->cols * (r->cols + 1) / 2;
        float inv = r->tokens ? (float)(1.0 / (double)r->tokens) : 0.0f;
        for (uint64_t k = 0; k < n; k++) r->h[k] *= inv;
        rf_status s = calib_data_put(d, r->h, n * sizeof(float), &r->out.h_off, &r->out.h_fnv, err);
        if (s) return s;
        r->out.has_h = 1;
        free(r->h);
        r->h = NULL;
        c->cur_bytes -= h_bytes(r->cols);
    }
    return RF_OK;
}

rf_status rf_calibrate(const char *model_dir, const int32_t *ids, uint64_t n, int bos_id, const rf_calib_opts *opts,
                       const char *out_path, rf_calib_result *res, rf_err *err)
{
    if (!model_dir || !ids || !out_path) return rf_err_set(err, RF_ERR_INVALID, "rf_calibrate: NULL argument");
    double t0 = now_s();
    rf_calib_opts o;
    if (opts) o = *opts;
    else rf_calib_opts_default(&o);
    if (o.threads <= 0) o.threads = 2;
    if (o.ctx <= 0) o.ctx = 512;
    if (!o.memory) o.memory = DEFAULT_MEMORY;
    coll c = {.hessian = o.hessian, .user_cancel = o.progress.cancel, .user_progress = o.progress};
    rf_engine *e = NULL;
    calib_data *d = NULL;
    rf_status s = rf_model_open(model_dir, &c.m, err);
    for (uint64_t i = 0; !s && i < rf_model_tensor_count(c.m); i++)
        if (rf_model_tinfo(c.m, i)->quant_aux)
            s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s: the model is already MLX-quantized: calibrate the "
                           "original checkpoint", model_dir, rf_model_tinfo(c.m, i)->t->name);
    if (!s) {
        c.nunits = rf_model_unit_count(c.m);
        c.units = calloc(c.nunits + 1, sizeof *c.units);
        for (c.pcap = 64; c.pcap < 4 * c.nunits; c.pcap *= 2) {}
        c.pkey = calloc(c.pcap, sizeof *c.pkey);
        c.pval = calloc(c.pcap, sizeof *c.pval);
        c.scratch = malloc((size_t)o.threads * TILE_R * TILE_C * sizeof(float));
        if (!c.units || !c.pkey || !c.pval || !c.scratch) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; !s && i < c.nunits; i++) {
            cunit *cu = &c.units[i];
            cu->u = rf_model_unit(c.m, i);
            cu->rec = malloc((size_t)(cu->u->n_members ? cu->u->n_members : 1) * sizeof *cu->rec);
            cu->follows = calloc((size_t)(cu->u->n_members ? cu->u->n_members : 1), 1);
            if (!cu->rec || !cu->follows) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            for (int k = 0; !s && k < cu->u->n_members; k++) cu->rec[k] = -1;
        }
    }
    c.axpy = axpy_ref;
#if RF_X86
    if (rf_cpu_features() & RF_CPU_AVX2) c.axpy = axpy_avx2;
#endif
    if (!s) s = rf_pool_create(o.threads, &c.pool, err);
    rf_engine_opts eo = {o.threads, o.ctx, o.ctx};
    if (!s) s = rf_engine_open(model_dir, &eo, &e, err);
    rf_ppl_opts po = {o.ctx, RF_PPL_FULL, bos_id, o.max_tokens, {on_progress, &c, &c.stop}};
    rf_ppl_result pr = {0};
    if (!s) {
        rf_engine_set_observer(e, observe, &c);
        /* discovery: the first window shows which products share their input */
        rf_ppl_opts first = po;
        first.max_tokens = (uint64_t)(bos_id >= 0 ? o.ctx - 1 : o.ctx);
        s = rf_eval_ppl(e, ids, n, &first, &pr, err);
    }
    int passes = 0;
    if (!s && !c.st) {
        passes = c.passes = assign_passes(&c, o.memory);
        c.accumulate = 1;
        s = calib_data_create(out_path, &d, err);
    }
    for (int p = 0; !s && !c.st && p < passes; p++) {
        c.pass = p;
        c.nhist = 0;
        for (uint64_t i = 0; i < c.nrec && c.hessian; i++) {
            crec *r = &c.recs[i];
            if (r->pass != p) continue;
            if (!(r->h = calloc(1, h_bytes(r->cols)))) {
                s = rf_err_set(err, RF_ERR_NOMEM, "out of memory for the Hessians of pass %d (%llu bytes): lower --memory",
                               p + 1, (unsigned long long)c.cur_bytes);
                break;
            }
            c.cur_bytes += h_bytes(r->cols);
            c.peak_bytes = c.cur_bytes > c.peak_bytes ? c.cur_bytes : c.peak_bytes;
        }
        rf_engine_reset(e);
        rf_ppl_result r2;
        if (!s) s = rf_eval_ppl(e, ids, n, &po, &r2, err);
        if (!s && p == 0) pr = r2;
        if (!s && !c.st) s = flush_pass(&c, d, p, err);
    }
    if (c.st && (!s || s == RF_ERR_INTERRUPTED)) {
        s = c.st;
        if (err) *err = c.err;
    } else if (s == RF_ERR_INTERRUPTED) {
        rf_err_set(err, s, "calibration interrupted: nothing written");
    }
    calib_unit *cus = NULL;
    if (!s) {
        /* E[x^2] and the index */
        cus = calloc(c.nunits + 1, sizeof *cus);
        if (!cus) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; !s && i < c.nrec; i++) {
            crec *r = &c.recs[i];
            for (uint64_t j = 0; j < r->cols; j++) r->sq[j] = r->tokens ? r->sq[j] / (double)r->tokens : 0.0;
            r->out.cols = r->cols;
            r->out.tokens = r->tokens;
            r->out.sq = r->sq;
        }
        uint64_t nu = 0;
        for (uint64_t i = 0; !s && i < c.nunits; i++) {
            const rf_unit *u = c.units[i].u;
            if (!u->n_members || !u->nparams) continue;
            cus[nu++] = (calib_unit){u->name, u->role, u->cols, u->n_members, c.units[i].rec};
        }
        calib_rec *recs = malloc((c.nrec + 1) * sizeof *recs);
        if (!s && !recs) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; !s && i < c.nrec; i++) recs[i] = c.recs[i].out;
        char name[256];
        calib_index ix = {base_name(model_dir, name, sizeof name), rf_st_fingerprint(rf_model_st(c.m)), rf_model_st(c.m),
                          o.text_label, pr.tokens, pr.windows, o.ctx, bos_id >= 0, pr.ppl,
                          c.hessian, c.nrec, nu, recs, cus};
        uint64_t data_bytes = calib_data_bytes(d);
        if (!s) {
            s = calib_data_finish(d, &ix, err);
            d = NULL;
        }
        if (!s && res) {
            memset(res, 0, sizeof *res);
            res->tokens = ix.tokens;
            res->windows = pr.windows;
            res->passes = passes;
            res->records = c.nrec;
            for (uint64_t i = 0; i < nu; i++)
                for (int k = 0; k < cus[i].members; k++)
                    if (cus[i].rec[k] >= 0) { res->units++; break; }
            res->accum_bytes = c.peak_bytes;
            for (uint64_t i = 0; i < c.nrec; i++) res->hessian_bytes += c.recs[i].out.has_h ? h_bytes(c.recs[i].cols) : 0;
            res->file_bytes = data_bytes;
            for (uint64_t i = 0; i < c.nrec; i++) res->file_bytes += c.recs[i].cols * sizeof(double);
            res->ppl = pr.ppl;
            res->seconds = now_s() - t0;
        }
        free(recs);
    }
    calib_data_abort(d);
    free(cus);
    rf_engine_free(e);
    coll_free(&c);
    return s;
}
