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

/* Evaluate nc vectors of candidates and keep the best refit (first in lane order on ties). */
static void run_round(const rfq_kernels *k, const float *x, int gs, float n, const rfq_gstat *st,
                      rfq_cand *c, int nc, opt_best *best)
{
    k->cand(x, gs, n, st, c, nc);
    for (int v = 0; v < nc; v++)
        for (int l = 0; l < 8; l++)
            if (c[v].e[l] < best->e) {
                best->s = c[v].rs[l];
                best->b = c[v].rb[l];
                best->e = c[v].e[l];
            }
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

/* Group sums in four interleaved chains (i % 4), combined as (l0 + l1) + (l2 + l3): the chains
 * overlap, where one chain would wait on each addition. */
static rfq_gstat group_stats(const float *x, int gs)
{
    double a[4] = {0, 0, 0, 0}, q[4] = {0, 0, 0, 0};
    for (int i = 0; i < gs; i += 4)
        for (int j = 0; j < 4; j++) {
            a[j] += x[i + j];
            q[j] += (double)x[i + j] * x[i + j];
        }
    rfq_gstat st = {gs, (a[0] + a[1]) + (a[2] + a[3]), (q[0] + q[1]) + (q[2] + q[3])};
    return st;
}

/* Round 1: a 4 x 4 grid of clipping ranges; rounds 2 and 3: rescale the best refit about its
 * centre, coarse then fine. */
static int search(const rfq_kernels *k, const float *x, int gs, int bits, float lo, float hi, float *s_out, float *b_out)
{
    const double n = (double)((1 << bits) - 1), R = (double)hi - (double)lo;
    if (!(R > 0) || !isfinite(R)) return 0;
    rfq_gstat st = group_stats(x, gs);
    opt_best best = {0, 0, INFINITY};
    rfq_cand c[2];
    double base = shrink_base(bits) * R, l[4], h[4], inv_n = 1 / n;
    for (int i = 0; i < 4; i++) {
        l[i] = lo + base * shrink_steps[i];
        h[i] = hi - base * shrink_steps[i];
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            c[i / 2].s[(i % 2) * 4 + j] = (h[j] - l[i]) * inv_n;
            c[i / 2].b[(i % 2) * 4 + j] = l[i];
        }
    run_round(k, x, gs, (float)n, &st, c, 2, &best);
    if (!isfinite(best.e)) return 0;
    static const double f2[8] = {1, .95, .97, .985, .995, 1.005, 1.015, 1.03};
    static const double f3[8] = {1, .992, .995, .998, 1.002, 1.005, 1.008, .999};
    around(&best, n, f2, c);
    run_round(k, x, gs, (float)n, &st, c, 1, &best);
    around(&best, n, f3, c);
    run_round(k, x, gs, (float)n, &st, c, 1, &best);
    *s_out = (float)best.s;
    *b_out = (float)best.b;
    return 1;
}

static int storable(float ss, float bs) { return isfinite(ss) && ss != 0.0f && isfinite(bs); }

void rfq_opt_group(const rfq_kernels *k, const float *x, int gs, int bits, rf_dtype sd, float lo, float hi,
                   float *ss, float *bs, uint8_t *q, float *sse, float *emax)
{
    const float n = (float)((1 << bits) - 1);
    float s, b, sA, bA;
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
    if (search(k, x, gs, bits, lo, hi, &s, &b)) {
        float s2 = rfq_store_round(s, sd), b2 = rfq_store_round(b, sd);
        if (storable(s2, b2)) {
            ps[cnt] = pss[cnt] = s2;
            pb[cnt] = pbs[cnt] = b2;
            cnt++;
        }
    }
    for (int i = 0; i < cnt; i++) {
        m[i] = 0.0f;
        k->qgroup(x, gs, n, ps[i], pb[i], pss[i], pbs[i], NULL, &e[i], &m[i]);
        if (e[i] < e[win]) win = i;
    }
    if (q) {
        float dummy = 0.0f;
        k->qgroup(x, gs, n, ps[win], pb[win], pss[win], pbs[win], q, NULL, &dummy);
    }
    *ss = pss[win];
    *bs = pbs[win];
    if (sse) *sse = e[win];
    *emax = m[win] > *emax ? m[win] : *emax;
}
