/* Error-minimising ("opt") quantizer for one group, data-free: a grid search over clipping
 * ranges, each scored after a least-squares refit of scale and bias for its codes, then two
 * rounds of local refinement around the best refit. The winner is rounded to the storage dtype
 * and compared, by the exact stored-format error, with MLX's own choice and with MLX's stored
 * parameters re-coded to the nearest level; the best of the three is kept, so a group is never
 * worse than MLX. All decisions are made in shared scalar code from sums that the scalar and
 * AVX2 kernels produce identically, so both paths pick the same parameters. */
#include "quant/quant_impl.h"

#include <math.h>
#include <string.h>

#ifdef __clang__
#pragma clang fp contract(off)
#endif

typedef struct opt_best {
    double s, b, e;
} opt_best;

/* Shrink fractions per side for the clipping grid, by bits (coarser codes clip more). */
static double shrink_base(int bits)
{
    switch (bits) {
    case 2: return 0.05;
    case 3: return 0.035;
    case 4: return 0.02;
    case 5: return 0.012;
    case 6: return 0.007;
    default: return 0.003;
    }
}
/* Steps of the clipping grid (multiples of the base, per side), tuned on real tensors. */
static const double shrink_steps[4] = {0, 1.5, 3, 5.5};

/* One group's search: its sums, the best refit so far, its candidates. */
typedef struct sjob {
    const float *x;
    rfq_gstat st;
    opt_best best;
    rfq_cand c[2];
    int live;
} sjob;

/* Keep the best refit of nc vectors: the first candidate (vector, then lane order) with the
 * smallest error, if below the best so far, from each vector's minimum (rfq_cand.emin, imin):
 * the same as scanning every lane with '<'. */
static void pick(sjob *j, int nc)
{
    for (int v = 0; v < nc; v++) {
        const rfq_cand *c = &j->c[v];
        if (c->emin < j->best.e) j->best = (opt_best){c->rs[c->imin], c->rb[c->imin], c->emin};
    }
}

/* Evaluate nc vectors of candidates for each of the nj (1 or 2) jobs: two groups share the
 * kernel's wide vectors where it has cand2, and so do one group's two vectors of the first round. */
static void eval(const rfq_kernels *k, sjob **j, int nj, int gs, float n, int nc)
{
    if (nj == 2 && k->cand2) k->cand2(j[0]->x, j[1]->x, gs, n, &j[0]->st, &j[1]->st, j[0]->c, j[1]->c, nc);
    else if (nj == 1 && nc == 2 && k->cand2) k->cand2(j[0]->x, j[0]->x, gs, n, &j[0]->st, &j[0]->st, &j[0]->c[0], &j[0]->c[1], 1);
    else
        for (int i = 0; i < nj; i++) k->cand(j[i]->x, gs, n, &j[i]->st, j[i]->c, nc);
    for (int i = 0; i < nj; i++) pick(j[i], nc);
}

/* Candidates scaling the current best about its centre by factors f (8 per vector). */
static void around(const opt_best *b0, double n, const double *f, rfq_cand *c)
{
    double mid = b0->b + b0->s * n / 2;
    for (int i = 0; i < 8; i++) {
        c->s[i] = b0->s * f[i];
        c->b[i] = mid - c->s[i] * n / 2;
    }
}

/* The live jobs of j[0..nj) into l; their count. */
static int live_jobs(sjob *j, int nj, sjob **l)
{
    int n = 0;
    for (int i = 0; i < nj; i++)
        if (j[i].live) l[n++] = &j[i];
    return n;
}

/* Round 1: a 4 x 4 grid of clipping ranges; rounds 2 and 3: rescale the best refit about its
 * centre, coarse then fine. Up to two groups side by side; each job's result is its own, whatever
 * its neighbour (every candidate's sums are computed independently). A job ends live with its
 * best refit, or not live (no usable candidate). */
static void search(const rfq_kernels *k, sjob *j, int nj, int gs, int bits, const float *lo, const float *hi)
{
    const double n = (double)((1 << bits) - 1), inv_n = 1 / n;
    for (int g = 0; g < nj; g++) {
        const double R = (double)hi[g] - (double)lo[g];
        j[g].best = (opt_best){0, 0, INFINITY};
        j[g].live = R > 0 && isfinite(R);
        if (!j[g].live) continue;
        k->gstat(j[g].x, gs, &j[g].st);
        double base = shrink_base(bits) * R, l[4], h[4];
        for (int i = 0; i < 4; i++) {
            l[i] = lo[g] + base * shrink_steps[i];
            h[i] = hi[g] - base * shrink_steps[i];
        }
        for (int i = 0; i < 4; i++)
            for (int m = 0; m < 4; m++) {
                j[g].c[i / 2].s[(i % 2) * 4 + m] = (h[m] - l[i]) * inv_n;
                j[g].c[i / 2].b[(i % 2) * 4 + m] = l[i];
            }
    }
    sjob *l[2];
    int nl = live_jobs(j, nj, l);
    if (nl) eval(k, l, nl, gs, (float)n, 2);
    for (int g = 0; g < nj; g++) j[g].live = j[g].live && isfinite(j[g].best.e);
    static const double f2[8] = {1, .95, .97, .985, .995, 1.005, 1.015, 1.03};
    static const double f3[8] = {1, .992, .995, .998, 1.002, 1.005, 1.008, .999};
    nl = live_jobs(j, nj, l);
    for (int g = 0; g < nl; g++) around(&l[g]->best, n, f2, &l[g]->c[0]);
    if (nl) eval(k, l, nl, gs, (float)n, 1);
    for (int g = 0; g < nl; g++) around(&l[g]->best, n, f3, &l[g]->c[0]);
    if (nl) eval(k, l, nl, gs, (float)n, 1);
}

static int storable(float ss, float bs) { return isfinite(ss) && ss != 0.0f && isfinite(bs); }

/* After the search: the winner rounded to the storage dtype, MLX's own choice and MLX's stored
 * parameters re-coded, compared by their exact stored-format error. */
static void finish(const rfq_kernels *k, const float *x, int gs, int bits, rf_dtype sd, float lo, float hi, const sjob *j,
                   float *ss, float *bs, uint8_t *q, float *sse, float *emax)
{
    const float n = (float)((1 << bits) - 1);
    float sA, bA;
    /* finalists: division parameters, stored parameters, exact error */
    float ps[3], pb[3], pss[3], pbs[3], e[3], m[3];
    int cnt = 1, win = 0;
    rfq_mlx_params1(lo, hi, bits, sd, &ps[0], &pb[0], &pss[0], &pbs[0]);
    sA = pss[0];
    bA = pbs[0];
    if (storable(sA, bA)) {
        ps[cnt] = pss[cnt] = sA;
        pb[cnt] = pbs[cnt] = bA;
        cnt++;
    }
    if (j->live) {
        float s2 = rfq_store_round((float)j->best.s, sd), b2 = rfq_store_round((float)j->best.b, sd);
        if (storable(s2, b2)) {
            ps[cnt] = pss[cnt] = s2;
            pb[cnt] = pbs[cnt] = b2;
            cnt++;
        }
    }
    uint8_t codes[3][128]; /* each finalist's codes, when they are wanted: no pass for the winner's */
    int i = 0;
    for (; i < cnt; i++) m[i] = 0.0f;
    i = 0;
    if (k->qgroup2 && cnt >= 2) { /* two finalists per pass */
        k->qgroup2(x, gs, n, ps, pb, pss, pbs, q ? codes[0] : NULL, q ? codes[1] : NULL, e, m);
        i = 2;
    }
    for (; i < cnt; i++) k->qgroup(x, gs, n, ps[i], pb[i], pss[i], pbs[i], q ? codes[i] : NULL, &e[i], &m[i]);
    for (i = 1; i < cnt; i++) win = e[i] < e[win] ? i : win;
    if (q) memcpy(q, codes[win], (size_t)gs);
    *ss = pss[win];
    *bs = pbs[win];
    if (sse) *sse = e[win];
    *emax = m[win] > *emax ? m[win] : *emax;
}

void rfq_opt_groups(const rfq_kernels *k, const float *const *x, int ng, int gs, int bits, rf_dtype sd, const float *lo,
                    const float *hi, float *ss, float *bs, uint8_t *const *q, float *sse, float *emax)
{
    for (int g = 0; g < ng; g += 2) {
        const int nj = ng - g < 2 ? 1 : 2;
        sjob j[2];
        for (int i = 0; i < nj; i++) j[i].x = x[g + i];
        search(k, j, nj, gs, bits, lo + g, hi + g);
        for (int i = 0; i < nj; i++)
            finish(k, x[g + i], gs, bits, sd, lo[g + i], hi[g + i], &j[i], &ss[g + i], &bs[g + i], q ? q[g + i] : NULL,
                   sse ? &sse[g + i] : NULL, emax);
    }
}

void rfq_opt_group(const rfq_kernels *k, const float *x, int gs, int bits, rf_dtype sd, float lo, float hi,
                   float *ss, float *bs, uint8_t *q, float *sse, float *emax)
{
    rfq_opt_groups(k, &x, 1, gs, bits, sd, &lo, &hi, ss, bs, q ? &q : NULL, sse, emax);
}
