/* Perplexity and KL-divergence over fixed windows of a tokenized text (protocols in ramfit.h).
 * A window is fed in pieces of at most `piece` tokens so the logits buffer stays bounded for
 * large vocabularies; the KV cache carries the window across pieces. */
#include "engine/engine_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The windows of a protocol: window w is `len` ids, from `bos` (if >= 0) then ids[start(w)..];
 * predictions at positions [first, len-1) are scored. */
typedef struct plan {
    uint64_t nwin, stride;
    int len, first, bos;
    int full;       /* protocol full (else llama.cpp) */
    int lead_bos;   /* llama.cpp: the text is taken with a leading BOS, which shifts offsets by one */
} plan;

static rf_status make_plan(const rf_ppl_opts *o, uint64_t n, plan *p, rf_err *err)
{
    memset(p, 0, sizeof *p);
    if (o->ctx < 2) return rf_err_set(err, RF_ERR_INVALID, "context %d: need at least 2 tokens", o->ctx);
    if (o->max_tokens && o->max_tokens < n) n = o->max_tokens;
    p->len = o->ctx;
    p->bos = o->bos_id;
    if (o->protocol == RF_PPL_FULL) {
        p->stride = (uint64_t)(o->bos_id >= 0 ? o->ctx - 1 : o->ctx);
        p->full = 1;
        p->first = 0;
        p->nwin = n / p->stride;
    } else if (o->protocol == RF_PPL_LLAMACPP) {
        p->stride = (uint64_t)o->ctx;
        p->first = o->ctx / 2;
        p->lead_bos = o->bos_id >= 0;
        p->nwin = (n + (uint64_t)p->lead_bos) / p->stride;
    } else {
        return rf_err_set(err, RF_ERR_INVALID, "unknown perplexity protocol %d", (int)o->protocol);
    }
    /* a window must score something: llama.cpp's protocol scores positions ctx/2 .. ctx-2, none at
     * ctx 2 (a perplexity of 1.0 over 0 tokens was once reported as a result) */
    if (p->len - 1 - p->first < 1)
        return rf_err_set(err, RF_ERR_INVALID, "context %d scores no token with the %s protocol (it scores the second half of "
                          "each window, less its last position): use a context of at least 3", o->ctx,
                          p->full ? "full" : "llama.cpp");
    if (p->nwin == 0)
        return rf_err_set(err, RF_ERR_INVALID, "the text has %llu tokens: not one window of %d", (unsigned long long)n,
                          o->ctx);
    return RF_OK;
}

/* Fill win[len] with window w. */
static void window_ids(const plan *p, const int32_t *ids, uint64_t w, int32_t *win)
{
    if (p->full) {
        int off = p->bos >= 0;
        if (off) win[0] = p->bos;
        memcpy(win + off, ids + w * p->stride, (size_t)(p->len - off) * sizeof *win);
        return;
    }
    /* llama.cpp: position i of the BOS-prefixed text is ids[i - 1]; the window's first id is
     * then replaced by BOS. */
    uint64_t start = w * p->stride;
    for (int j = 0; j < p->len; j++) {
        uint64_t i = start + (uint64_t)j;
        win[j] = p->lead_bos ? (i == 0 ? p->bos : ids[i - 1]) : ids[i];
    }
    if (p->bos >= 0) win[0] = p->bos;
}

static int piece_size(const rf_engine *e, int len)
{
    uint64_t cap = (16u << 20) / (uint64_t)rf_engine_vocab(e); /* 64 MB of logits */
    if (cap < 1) cap = 1;
    if (cap > 256) cap = 256;
    return (uint64_t)len < cap ? len : (int)cap;
}

typedef struct acc {
    double nll, nll2;
    uint64_t count;
} acc;

static void acc_add(acc *a, double nll)
{
    a->nll += nll;
    a->nll2 += nll * nll;
    a->count++;
}

static void acc_result(const acc *a, double seconds, uint64_t fed, uint64_t nwin, rf_ppl_result *r)
{
    memset(r, 0, sizeof *r);
    r->tokens = a->count;
    r->windows = nwin;
    r->nll_mean = a->count ? a->nll / (double)a->count : 0;
    double var = a->count ? a->nll2 / (double)a->count - r->nll_mean * r->nll_mean : 0;
    r->nll_stderr = a->count > 1 && var > 0 ? sqrt(var / (double)(a->count - 1)) : 0;
    r->ppl = exp(r->nll_mean);
    r->ppl_stderr = r->ppl * r->nll_stderr;
    r->seconds = seconds;
    r->tokens_per_s = seconds > 0 ? (double)fed / seconds : 0;
}

/* Feed win[0..len) to e in pieces; for every scored position j call fn(j, logits row). Positions
 * before `first` are fed without computing logits. */
typedef void (*score_fn)(void *ctx, int j, const float *logits);

static rf_status run_window(rf_engine *e, const int32_t *win, int len, int first, float *logits, int piece,
                            score_fn fn, void *ctx, rf_err *err)
{
    rf_engine_reset(e);
    rf_status s;
    if (first > 0 && (s = rf_engine_forward(e, win, first, NULL, 0, err))) return s;
    int V = rf_engine_vocab(e);
    for (int j0 = first; j0 < len - 1; j0 += piece) {
        int n = len - 1 - j0 < piece ? len - 1 - j0 : piece;
        if ((s = rf_engine_forward(e, win + j0, n, logits, 1, err))) return s;
        for (int i = 0; i < n; i++) fn(ctx, j0 + i, logits + (uint64_t)i * (uint64_t)V);
    }
    return RF_OK;
}

static rf_status check_progress(const rf_ppl_opts *o, uint64_t done, uint64_t total, rf_err *err)
{
    if (o->progress.fn) o->progress.fn(o->progress.user, done, total, "windows");
    if (o->progress.cancel && *o->progress.cancel) return rf_err_set(err, RF_ERR_INTERRUPTED, "evaluation interrupted");
    return RF_OK;
}

typedef struct ppl_ctx {
    const int32_t *win;
    int V;
    acc a;
} ppl_ctx;

static void ppl_score(void *c, int j, const float *lg)
{
    ppl_ctx *p = c;
    acc_add(&p->a, rf_logsumexp(lg, p->V) - lg[p->win[j + 1]]);
}

static rf_status check_window_fits(rf_engine *e, int len, const char *what, rf_err *err)
{
    if (len > rf_engine_max_ctx(e))
        return rf_err_set(err, RF_ERR_INVALID, "%s: window of %d tokens exceeds the engine context %d", what, len,
                          rf_engine_max_ctx(e));
    return RF_OK;
}

rf_status rf_eval_ppl(rf_engine *e, const int32_t *ids, uint64_t n, const rf_ppl_opts *o, rf_ppl_result *out,
                      rf_err *err)
{
    plan p;
    rf_status s = make_plan(o, n, &p, err);
    if (s || (s = check_window_fits(e, p.len, "perplexity", err))) return s;
    int V = rf_engine_vocab(e), piece = piece_size(e, p.len);
    int32_t *win = malloc((size_t)p.len * sizeof *win);
    float *logits = malloc((size_t)piece * (size_t)V * sizeof(float));
    if (!win || !logits) {
        free(win);
        free(logits);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory for perplexity windows");
    }
    ppl_ctx c = {win, V, {0, 0, 0}};
    double t0 = now_s();
    for (uint64_t w = 0; w < p.nwin && !s; w++) {
        window_ids(&p, ids, w, win);
        s = run_window(e, win, p.len, p.first, logits, piece, ppl_score, &c, err);
        if (!s) s = check_progress(o, w + 1, p.nwin, err);
    }
    if (!s) acc_result(&c.a, now_s() - t0, p.nwin * (uint64_t)p.len, p.nwin, out);
    free(win);
    free(logits);
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

rf_status rf_eval_kld(rf_engine *base, rf_engine *quant, const int32_t *ids, uint64_t n, const rf_ppl_opts *o,
                      rf_kld_result *out, rf_err *err)
{
    int V = rf_engine_vocab(base);
    if (base == quant)
        return rf_err_set(err, RF_ERR_INVALID, "KL-divergence needs two engines (the same one was given twice)");
    if (rf_engine_vocab(quant) != V)
        return rf_err_set(err, RF_ERR_MISMATCH, "vocabularies differ: %d vs %d", V, rf_engine_vocab(quant));
    plan p;
    rf_status s = make_plan(o, n, &p, err);
    if (s || (s = check_window_fits(base, p.len, "base", err)) || (s = check_window_fits(quant, p.len, "quantized", err)))
        return s;
    int piece = piece_size(base, p.len);
    uint64_t per_win = (uint64_t)(p.len - 1 - p.first), total = per_win * p.nwin;
    int32_t *win = malloc((size_t)p.len * sizeof *win);
    float *lb = malloc((size_t)piece * (size_t)V * sizeof(float)), *lq = malloc((size_t)piece * (size_t)V * sizeof(float));
    double *kl = malloc(total * sizeof(double));
    if (!win || !lb || !lq || !kl) {
        s = rf_err_set(err, RF_ERR_NOMEM, "out of memory for KL-divergence");
        goto done;
    }
    acc ab = {0, 0, 0}, aq = {0, 0, 0}, ak = {0, 0, 0};
    uint64_t agree = 0, k = 0;
    double tb = 0, tq = 0;
    for (uint64_t w = 0; w < p.nwin && !s; w++) {
        window_ids(&p, ids, w, win);
        rf_engine_reset(base);
        rf_engine_reset(quant);
        if (p.first > 0) {
            double t = now_s();
            if ((s = rf_engine_forward(base, win, p.first, NULL, 0, err))) break;
            tb += now_s() - t;
            t = now_s();
            if ((s = rf_engine_forward(quant, win, p.first, NULL, 0, err))) break;
            tq += now_s() - t;
        }
        for (int j0 = p.first; j0 < p.len - 1 && !s; j0 += piece) {
            int m = p.len - 1 - j0 < piece ? p.len - 1 - j0 : piece;
            double t = now_s();
            if ((s = rf_engine_forward(base, win + j0, m, lb, 1, err))) break;
            tb += now_s() - t;
            t = now_s();
            if ((s = rf_engine_forward(quant, win + j0, m, lq, 1, err))) break;
            tq += now_s() - t;
            for (int i = 0; i < m; i++) {
                const float *xb = lb + (uint64_t)i * (uint64_t)V, *xq = lq + (uint64_t)i * (uint64_t)V;
                double zb = rf_logsumexp(xb, V), zq = rf_logsumexp(xq, V), d = 0;
                for (int v = 0; v < V; v++) {
                    double lpb = xb[v] - zb, lpq = xq[v] - zq;
                    d += exp(lpb) * (lpb - lpq);
                }
                if (d < 0) d = 0; /* rounding on near-identical distributions */
                int32_t tok = win[j0 + i + 1];
                acc_add(&ab, zb - xb[tok]);
                acc_add(&aq, zq - xq[tok]);
                acc_add(&ak, d);
                kl[k++] = d;
                agree += argmax(xb, V) == argmax(xq, V);
            }
        }
        if (!s) s = check_progress(o, w + 1, p.nwin, err);
    }
    if (s) goto done;
    memset(out, 0, sizeof *out);
    uint64_t fed = p.nwin * (uint64_t)p.len;
    acc_result(&ab, tb, fed, p.nwin, &out->base);
    acc_result(&aq, tq, fed, p.nwin, &out->quant);
    rf_ppl_result kr;
    acc_result(&ak, 0, 0, p.nwin, &kr);
    out->kld_mean = kr.nll_mean;
    out->kld_stderr = kr.nll_stderr;
    qsort(kl, k, sizeof *kl, cmp_double);
    uint64_t r99 = (uint64_t)ceil(0.99 * (double)k);
    out->kld_p99 = kl[r99 ? r99 - 1 : 0];
    out->kld_max = kl[k - 1];
    out->top1_agree = (double)agree / (double)k;
done:
    free(win);
    free(lb);
    free(lq);
    free(kl);
    return s;
}
