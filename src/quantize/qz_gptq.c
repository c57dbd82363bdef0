/* quantize --mode gptq: which members GPTQ quantizes, and their factors while the writer's waves
 * need them (src/quantize/quantize.c runs jobs of row blocks in waves; GPTQ's rows are independent,
 * so a job quantizes its rows with the factor of its member's Hessian).
 *
 * GPTQ applies to every quantized linear unit whose member has a Hessian in the statistics. The
 * embedding stays round-to-nearest even when tied to the head (as mlx-lm's gptq leaves nn.Embedding:
 * its rows are looked up, and error feedback across a row would serve the head at the lookup's
 * cost); so do members the calibration text never reached (an expert no token was routed to).
 *
 * A wave's factors are made before it runs (on the pool); factors a wave does not use are kept for
 * later waves (q, k and v share one, and checkpoints list o_proj between k_proj and q_proj) as long as
 * all held stay within a budget, the least recently used dropped first. A wave's own factors are
 * always held (the wave is cut before a job whose factor would take them past the budget). */
#include "quantize/qz_gptq.h"

#include <stdlib.h>
#include <string.h>

typedef struct fentry {
    int64_t rec;
    const rf_unit *u;      /* a unit and member with this record: where its H is read */
    int member;
    uint64_t cols;
    rf_gptq *f;
    int in_wave;
    uint64_t last;         /* the last wave that used it */
} fentry;

struct qz_gptq {
    const rf_stats *s;
    double damp;
    uint64_t budget, wave_bytes;
    fentry *e;
    uint64_t n, cap;
    uint64_t prepared, peak_bytes, cur_bytes, wave;
};

rf_status qz_gptq_create(const rf_stats *s, double damp, uint64_t budget, qz_gptq **out, rf_err *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    (*out)->s = s;
    (*out)->damp = damp;
    (*out)->budget = budget;
    return RF_OK;
}

void qz_gptq_free(qz_gptq *g)
{
    if (!g) return;
    for (uint64_t i = 0; i < g->n; i++) rf_gptq_free(g->e[i].f);
    free(g->e);
    free(g);
}

int64_t qz_gptq_record(const qz_gptq *g, const rf_unit *u, int member)
{
    if (!g || u->role == RF_ROLE_EMBED) return -1;
    int64_t rec;
    uint64_t tok;
    if (rf_stats_moments(g->s, u->name, member, NULL, &tok, &rec, NULL) || !tok) return -1;
    return rec;
}

static fentry *find(qz_gptq *g, int64_t rec)
{
    for (uint64_t i = 0; i < g->n; i++)
        if (g->e[i].rec == rec) return &g->e[i];
    return NULL;
}

void qz_gptq_wave_begin(qz_gptq *g)
{
    if (!g) return;
    for (uint64_t i = 0; i < g->n; i++) g->e[i].in_wave = 0;
    g->wave_bytes = 0;
}

int qz_gptq_wave_add(qz_gptq *g, const rf_unit *u, int member, int64_t rec)
{
    if (!g || rec < 0) return 1;
    fentry *e = find(g, rec);
    if (e && e->in_wave) return 1;
    uint64_t need = rf_gptq_factor_bytes(u->cols);
    if (g->wave_bytes && g->wave_bytes + need > g->budget) return 0;
    if (!e) {
        if (g->n == g->cap) {
            uint64_t nc = g->cap ? 2 * g->cap : 16;
            fentry *ne = realloc(g->e, nc * sizeof *ne);
            if (!ne) return 0; /* treated as a full wave; prepare reports the memory */
            g->e = ne;
            g->cap = nc;
        }
        e = &g->e[g->n++];
        *e = (fentry){rec, u, member, u->cols, NULL, 0, 0};
    }
    e->in_wave = 1;
    g->wave_bytes += need;
    return 1;
}

rf_status qz_gptq_wave_prepare(qz_gptq *g, rf_pool *pool, rf_err *err)
{
    if (!g) return RF_OK;
    g->wave++;
    uint64_t need = 0;
    for (uint64_t i = 0; i < g->n; i++)
        if (g->e[i].in_wave) {
            g->e[i].last = g->wave;
            if (!g->e[i].f) need += rf_gptq_factor_bytes(g->e[i].cols);
        }
    while (g->cur_bytes + need > g->budget) { /* drop the least recently used factor the wave does not need */
        fentry *old = NULL;
        for (uint64_t i = 0; i < g->n; i++)
            if (!g->e[i].in_wave && g->e[i].f && (!old || g->e[i].last < old->last)) old = &g->e[i];
        if (!old) break;
        g->cur_bytes -= rf_gptq_factor_bytes(old->cols);
        rf_gptq_free(old->f);
        old->f = NULL;
    }
    uint64_t w = 0;
    for (uint64_t i = 0; i < g->n; i++)
        if (g->e[i].f || g->e[i].in_wave) g->e[w++] = g->e[i]; /* forget entries without a factor */
    g->n = w;
    for (uint64_t i = 0; i < g->n; i++) {
        fentry *e = &g->e[i];
        if (e->f) continue;
        const float *h;
        uint64_t cols;
        rf_status s = rf_stats_hessian(g->s, e->u->name, e->member, &h, &cols, err);
        if (!s) s = rf_gptq_prepare(h, cols, g->damp, pool, &e->f, err);
        if (s) return rf_err_prefix(err, "GPTQ of %s (member %d): ", e->u->name, e->member);
        g->prepared++;
        uint64_t peak = g->cur_bytes + rf_gptq_prepare_bytes(cols);
        g->cur_bytes += rf_gptq_factor_bytes(cols);
        g->peak_bytes = peak > g->peak_bytes ? peak : g->peak_bytes;
    }
    return RF_OK;
}

const rf_gptq *qz_gptq_factor(const qz_gptq *g, int64_t rec)
{
    if (!g || rec < 0) return NULL;
    for (uint64_t i = 0; i < g->n; i++)
        if (g->e[i].rec == rec) return g->e[i].f;
    return NULL;
}

uint64_t qz_gptq_factors_made(const qz_gptq *g) { return g ? g->prepared : 0; }
uint64_t qz_gptq_peak_bytes(const qz_gptq *g) { return g ? g->peak_bytes : 0; }
