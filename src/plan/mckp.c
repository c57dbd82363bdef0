/* Exact multiple-choice knapsack (minimise value, integer weights) for the planner.
 *
 * 1. Per group: Pareto filter (dominated items can always be swapped for their dominator), then
 *    the lower convex hull. All hull segments sorted once by efficiency (value saved per byte).
 * 2. Per capacity (first rounded down to a multiple of the gcd of all weights): the LP optimum is a
 *    prefix of that order plus a fraction of the break segment; its multiplier lambda gives the
 *    Lagrangian bound L = E_v - lambda * residual and, for every item, a reduced cost rr >= 0 with
 *    the identity  value(x) = L + sum rr(x) + lambda * slack(x).
 * 3. A greedy fill gives an incumbent z. Any better solution has sum rr < z - L, so items with a
 *    larger rr are dropped (reduced-cost fixing); groups left with one item are fixed.
 * 4. Expanding core: the search first allows only items with rr below a small cut (a few groups),
 *    then 4x larger cuts, until the cut covers the gap z - L. Each pass improves z, so the last
 *    (proving) core is as small as the true gap allows.
 * 5. Each core is solved exactly by dynamic programming over (weight, value) states with dominance,
 *    meeting in the middle: the two halves' Pareto states are made separately and joined in linear
 *    time. Each state is bounded by the LP of all groups it has not decided (Fenwick trees over their
 *    hull segments; the LP is piecewise linear, so states in weight order reuse one descent), after
 *    rounding its room down to the gcd lattice of those groups' weight differences (real models
 *    repeat a few shapes, so this lattice is coarse and the bound sees the integrality that the LP
 *    alone misses), and completed by rounding that LP, which improves the incumbent. A state limit
 *    caps the work, after which the best plan is returned with an honest bound instead of a claim of
 *    optimality.
 * Weights are integers and compared exactly; values are doubles, summed with compensation, and
 * "optimal" holds up to RF_MCKP_REL_TOL of the objective. */
#include "plan/plan_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct rf_mckp {
    uint32_t ng;
    uint64_t *w;
    double *e;
    uint32_t *par_start, *par;   /* per group Pareto items (global indices), weight ascending */
    uint32_t *hull_start, *hull; /* per group hull vertices (positions in the group's Pareto list) */
    uint32_t nseg;               /* segments: group g owns [hull_start[g] - g, hull_start[g+1] - g - 1) */
    uint64_t *seg_dw;
    double *seg_eff;
    uint32_t *order, *rank;      /* segments by efficiency, descending; rank = position in order */
    uint64_t *prefix_w;          /* [nseg + 1] */
    uint64_t min_w, sat_w;
    uint64_t gcd;                /* of all weights: a capacity can be rounded down to a multiple */
};

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Neumaier-compensated sum: totals of 20k terms stay exact to ~1 ulp. */
typedef struct ksum { double s, c; } ksum;
static void ks_add(ksum *k, double v)
{
    double t = k->s + v;
    if (fabs(k->s) >= fabs(v)) k->c += (k->s - t) + v;
    else k->c += (v - t) + k->s;
    k->s = t;
}
static double ks_val(const ksum *k) { return k->s + k->c; }

void rf_mckp_free(rf_mckp *m)
{
    if (!m) return;
    free(m->w);
    free(m->e);
    free(m->par_start);
    free(m->par);
    free(m->hull_start);
    free(m->hull);
    free(m->seg_dw);
    free(m->seg_eff);
    free(m->order);
    free(m->rank);
    free(m->prefix_w);
    free(m);
}

uint64_t rf_mckp_min_weight(const rf_mckp *m) { return m->min_w; }
uint64_t rf_mckp_sat_weight(const rf_mckp *m) { return m->sat_w; }

/* Sort a group's items by (weight, value, index) with insertion sort: groups are small. */
static void sort_items(uint32_t *it, uint32_t n, const uint64_t *w, const double *e)
{
    for (uint32_t i = 1; i < n; i++) {
        uint32_t x = it[i], j = i;
        while (j > 0) {
            uint32_t y = it[j - 1];
            int less = w[x] < w[y] || (w[x] == w[y] && (e[x] < e[y] || (e[x] == e[y] && x < y)));
            if (!less) break;
            it[j] = y;
            j--;
        }
        it[j] = x;
    }
}

/* Is b on or above the line from a to c (so not a strict vertex of the lower hull)? */
static int not_below(const rf_mckp *m, uint32_t a, uint32_t b, uint32_t c)
{
    double wb = (double)(m->w[b] - m->w[a]), wc = (double)(m->w[c] - m->w[a]);
    return (m->e[b] - m->e[a]) * wc >= (m->e[c] - m->e[a]) * wb;
}

/* Stable LSD radix sort of segment indices by descending efficiency (positive doubles order
 * like their bit patterns), ties kept in (group, segment) order. */
static int sort_segments(rf_mckp *m)
{
    uint32_t n = m->nseg;
    uint32_t *tmp = malloc(sizeof *tmp * (n ? n : 1));
    uint64_t *key = malloc(sizeof *key * (n ? n : 1));
    uint32_t *cnt = malloc(sizeof *cnt * 65536);
    if (!tmp || !key || !cnt) { free(tmp); free(key); free(cnt); return 0; }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &m->seg_eff[i], 8);
        key[i] = ~bits;
        m->order[i] = i;
    }
    for (int pass = 0; pass < 4; pass++) {
        int sh = pass * 16;
        memset(cnt, 0, sizeof *cnt * 65536);
        for (uint32_t i = 0; i < n; i++) cnt[key[m->order[i]] >> sh & 0xffff]++;
        uint32_t sum = 0;
        for (uint32_t d = 0; d < 65536; d++) {
            uint32_t c = cnt[d];
            cnt[d] = sum;
            sum += c;
        }
        for (uint32_t i = 0; i < n; i++) tmp[cnt[key[m->order[i]] >> sh & 0xffff]++] = m->order[i];
        memcpy(m->order, tmp, sizeof *tmp * n);
    }
    free(tmp);
    free(key);
    free(cnt);
    return 1;
}

rf_status rf_mckp_create(uint32_t ng, const uint32_t *start, const uint64_t *w, const double *e, rf_mckp **out,
                         rf_err *err)
{
    *out = NULL;
    uint32_t n = start[ng];
    for (uint32_t g = 0; g < ng; g++)
        if (start[g + 1] <= start[g]) return rf_err_set(err, RF_ERR_INVALID, "knapsack: group %u has no items", g);
    for (uint32_t i = 0; i < n; i++)
        if (!(e[i] >= 0) || !isfinite(e[i]) || w[i] > (1ull << 62))
            return rf_err_set(err, RF_ERR_INVALID, "knapsack: item %u has a bad weight or value", i);
    rf_mckp *m = calloc(1, sizeof *m);
    if (!m) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    m->ng = ng;
    m->w = malloc(sizeof *m->w * (n ? n : 1));
    m->e = malloc(sizeof *m->e * (n ? n : 1));
    m->par_start = malloc(sizeof(uint32_t) * (ng + 1));
    m->par = malloc(sizeof(uint32_t) * (n ? n : 1));
    m->hull_start = malloc(sizeof(uint32_t) * (ng + 1));
    m->hull = malloc(sizeof(uint32_t) * (n ? n : 1));
    if (!m->w || !m->e || !m->par_start || !m->par || !m->hull_start || !m->hull) goto oom;
    memcpy(m->w, w, sizeof *w * n);
    for (uint32_t i = 0; i < n; i++) m->gcd = gcd_u64(m->gcd, w[i]);
    if (!m->gcd) m->gcd = 1;
    memcpy(m->e, e, sizeof *e * n);
    uint32_t np = 0, nh = 0;
    uint32_t *it = malloc(sizeof *it * (n ? n : 1));
    if (!it) goto oom;
    for (uint32_t g = 0; g < ng; g++) {
        uint32_t k = start[g + 1] - start[g];
        for (uint32_t i = 0; i < k; i++) it[i] = start[g] + i;
        sort_items(it, k, w, e);
        m->par_start[g] = np;
        for (uint32_t i = 0; i < k; i++)
            if (np == m->par_start[g] || e[it[i]] < e[m->par[np - 1]]) m->par[np++] = it[i];
        m->hull_start[g] = nh;
        uint32_t h0 = nh;
        for (uint32_t i = m->par_start[g]; i < np; i++) {
            while (nh - h0 >= 2 &&
                   not_below(m, m->par[m->par_start[g] + m->hull[nh - 2]], m->par[m->par_start[g] + m->hull[nh - 1]], m->par[i]))
                nh--;
            m->hull[nh++] = i - m->par_start[g];
        }
        m->min_w += w[m->par[m->par_start[g]]];
        m->sat_w += w[m->par[np - 1]];
    }
    free(it);
    m->par_start[ng] = np;
    m->hull_start[ng] = nh;
    m->nseg = nh - ng;
    uint32_t ns = m->nseg ? m->nseg : 1;
    m->seg_dw = malloc(sizeof *m->seg_dw * ns);
    m->seg_eff = malloc(sizeof *m->seg_eff * ns);
    m->order = malloc(sizeof *m->order * ns);
    m->rank = malloc(sizeof *m->rank * ns);
    m->prefix_w = malloc(sizeof *m->prefix_w * (ns + 1));
    if (!m->seg_dw || !m->seg_eff || !m->order || !m->rank || !m->prefix_w) goto oom;
    for (uint32_t g = 0; g < ng; g++) {
        const uint32_t *par = m->par + m->par_start[g];
        for (uint32_t h = m->hull_start[g]; h + 1 < m->hull_start[g + 1]; h++) {
            uint32_t a = par[m->hull[h]], b = par[m->hull[h + 1]], s = h - g;
            m->seg_dw[s] = w[b] - w[a];
            m->seg_eff[s] = (e[a] - e[b]) / (double)m->seg_dw[s];
        }
    }
    if (!sort_segments(m)) goto oom;
    m->prefix_w[0] = 0;
    for (uint32_t k = 0; k < m->nseg; k++) {
        m->rank[m->order[k]] = k;
        m->prefix_w[k + 1] = m->prefix_w[k] + m->seg_dw[m->order[k]];
    }
    *out = m;
    return RF_OK;
oom:
    rf_mckp_free(m);
    return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
}

/* ------------------------------------------------------------------ exact step: DP over the core */

typedef struct state {
    uint64_t w;
    double e;
    uint32_t parent; /* index in the previous stage */
    uint32_t item;   /* global item index chosen in this stage */
} state;


/* Totals over a range of core groups: vertex weights and values, least weights, and the gcd of the
 * survivors' weight differences from their vertex (0: no freedom). */
typedef struct sums { uint64_t wv, wmin, g; double ev; } sums;

typedef struct search {
    const rf_mckp *m;
    uint64_t cap;
    double lambda, bound, tol;   /* bound: the Lagrangian value at lambda (a proven lower bound) */
    uint32_t *vit;               /* [ng] each group's LP vertex item: the reference of its reduced costs */
    double *mn;                  /* [ng] least reduced cost in the group (0 up to rounding) */
    double *rr;                  /* [Pareto items] reduced cost against the LP vertex, before subtracting mn */
    uint32_t *inc;               /* [ng] incumbent items */
    double zinc;
    /* candidates: the groups with more than one item under the first gap; the others are fixed once
     * (weight and value totals wbase, ebase) */
    uint32_t *cand, ncand;
    uint64_t wbase;
    ksum ebase;
    /* the core: groups with more than one item that could still be in a better plan */
    uint32_t K, *grp, *sv_start, *sv, *arg, *fixed;
    double *sv_rr;
    uint64_t C;                  /* capacity left for the core */
    double zfix;
    sums *pre, *suf;             /* [K+1] over core groups [0, j) and [j, K) */
    /* LP bound of the groups not yet in the DP: their survivors' hull segments above (up) and below
     * (down) the LP vertex, sorted by efficiency, in Fenwick trees from which processed groups leave */
    uint32_t nup, ndn, *up_start, *dn_start, *up_rank, *dn_rank; /* per core group: its segments' ranks */
    uint32_t *up_item, *dn_item;                                 /* per segment: the item it leads to */
    uint64_t *up_w, *dn_w, *fu_w, *fd_w;                         /* by rank: bytes; trees */
    double *up_g, *dn_g, *fu_g, *fd_g;                           /* by rank: value change; trees */
    /* DP storage: every stage's states (for the path back), merge buffers */
    state *pool, *buf[2];
    uint64_t pool_cap, buf_cap, states;
    uint32_t *stage_off;         /* [K+3] stages: the first half's 0..h, the second half's h+1..K+1 */
    uint32_t *stage_grp;         /* [K+2] the core group a stage added (UINT32_MAX: a half's empty start) */
} search;


static double value_of(const rf_mckp *m, const uint32_t *choice, uint64_t *weight)
{
    ksum z = {0, 0};
    uint64_t w = 0;
    for (uint32_t g = 0; g < m->ng; g++) {
        ks_add(&z, m->e[choice[g]]);
        w += m->w[choice[g]];
    }
    if (weight) *weight = w;
    return ks_val(&z);
}

static void core_free(search *s)
{
    free(s->grp); free(s->sv_start); free(s->sv); free(s->arg); free(s->sv_rr);
    free(s->pre); free(s->suf); free(s->stage_off); free(s->stage_grp);
    free(s->up_start); free(s->dn_start); free(s->up_rank); free(s->dn_rank); free(s->up_item); free(s->dn_item);
    s->up_item = s->dn_item = NULL;
    free(s->up_w); free(s->dn_w); free(s->fu_w); free(s->fd_w); free(s->up_g); free(s->dn_g); free(s->fu_g); free(s->fd_g);
    s->up_start = s->dn_start = s->up_rank = s->dn_rank = NULL;
    s->up_w = s->dn_w = s->fu_w = s->fd_w = NULL;
    s->up_g = s->dn_g = s->fu_g = s->fd_g = NULL;
    s->grp = s->sv_start = s->sv = s->arg = s->stage_off = s->stage_grp = NULL;
    s->sv_rr = NULL;
    s->pre = s->suf = NULL;
    s->K = 0;
}

/* Order the core so the groups with the cheapest deviation from the LP vertex come last: while they
 * are still ahead, the LP bound can absorb any byte count cheaply, so early states are few (costly
 * deviations are pruned); once they are processed the bound turns exact on bytes. Measured: fewer
 * states than cheapest-first on both benchmark shapes. */
static void order_core(search *s, uint32_t *perm, double *key)
{
    for (uint32_t j = 0; j < s->K; j++) {
        double k = INFINITY;
        for (uint32_t i = s->sv_start[j]; i < s->sv_start[j + 1]; i++)
            if (i != s->arg[j]) k = fmin(k, s->sv_rr[i]);
        key[j] = k;
        perm[j] = j;
    }
    for (uint32_t i = 1; i < s->K; i++) { /* stable insertion sort on a short array */
        uint32_t x = perm[i], t = i;
        while (t > 0 && key[perm[t - 1]] < key[x]) {
            perm[t] = perm[t - 1];
            t--;
        }
        perm[t] = x;
    }
}


typedef struct segtmp { double eff; uint32_t idx; } segtmp;
static int seg_cmp(const void *a, const void *b) /* efficiency descending, then index */
{
    const segtmp *x = a, *y = b;
    if (x->eff != y->eff) return x->eff > y->eff ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The survivors' lower hull per core group, split at the LP vertex into up segments (more bytes,
 * less error; best first) and down segments (fewer bytes, more error; cheapest first). */
static int build_segments(search *s)
{
    const rf_mckp *m = s->m;
    uint32_t K = s->K, nsv = s->sv_start[K];
    uint32_t *hull = malloc(sizeof *hull * (nsv ? nsv : 1));
    segtmp *ut = malloc(sizeof *ut * (nsv ? nsv : 1)), *dt = malloc(sizeof *dt * (nsv ? nsv : 1));
    uint32_t *ugrp = malloc(sizeof *ugrp * (nsv ? nsv : 1)), *dgrp = malloc(sizeof *dgrp * (nsv ? nsv : 1));
    uint64_t *uw = malloc(sizeof *uw * (nsv ? nsv : 1)), *dw = malloc(sizeof *dw * (nsv ? nsv : 1));
    double *ug = malloc(sizeof *ug * (nsv ? nsv : 1)), *dg = malloc(sizeof *dg * (nsv ? nsv : 1));
    s->up_start = calloc(K + 1, sizeof(uint32_t));
    s->dn_start = calloc(K + 1, sizeof(uint32_t));
    s->up_item = malloc(sizeof(uint32_t) * (nsv ? nsv : 1));
    s->dn_item = malloc(sizeof(uint32_t) * (nsv ? nsv : 1));
    int ok = hull && ut && dt && ugrp && dgrp && uw && dw && ug && dg && s->up_start && s->dn_start && s->up_item && s->dn_item;
    uint32_t nu = 0, nd = 0;
    for (uint32_t j = 0; ok && j < K; j++) {
        uint32_t a = s->sv_start[j], b = s->sv_start[j + 1], nh = 0, v = s->vit[s->grp[j]], pv = 0;
        for (uint32_t i = a; i < b; i++) {
            while (nh >= 2 && not_below(m, hull[nh - 2], hull[nh - 1], s->sv[i])) nh--;
            hull[nh++] = s->sv[i];
        }
        while (pv < nh && hull[pv] != v) pv++;
        if (pv == nh) { /* the vertex is always a survivor and on the hull; guard against rounding */
            pv = 0;
            while (pv + 1 < nh && m->w[hull[pv]] < m->w[v]) pv++;
        }
        s->up_start[j] = nu;
        s->dn_start[j] = nd;
        for (uint32_t t = pv; t + 1 < nh; t++, nu++) {
            uw[nu] = m->w[hull[t + 1]] - m->w[hull[t]];
            ug[nu] = m->e[hull[t]] - m->e[hull[t + 1]];
            ut[nu] = (segtmp){ug[nu] / (double)uw[nu], nu};
            s->up_item[nu] = hull[t + 1];
            ugrp[nu] = j;
        }
        for (uint32_t t = pv; t > 0; t--, nd++) {
            dw[nd] = m->w[hull[t]] - m->w[hull[t - 1]];
            dg[nd] = m->e[hull[t - 1]] - m->e[hull[t]];
            dt[nd] = (segtmp){-dg[nd] / (double)dw[nd], nd}; /* cheapest removal first */
            s->dn_item[nd] = hull[t - 1];
            dgrp[nd] = j;
        }
    }
    if (ok) {
        s->up_start[K] = nu;
        s->dn_start[K] = nd;
        s->nup = nu;
        s->ndn = nd;
        qsort(ut, nu, sizeof *ut, seg_cmp);
        qsort(dt, nd, sizeof *dt, seg_cmp);
        s->up_rank = malloc(sizeof(uint32_t) * (nu ? nu : 1));
        s->dn_rank = malloc(sizeof(uint32_t) * (nd ? nd : 1));
        s->up_w = malloc(sizeof(uint64_t) * (nu + 1));
        s->dn_w = malloc(sizeof(uint64_t) * (nd + 1));
        s->up_g = malloc(sizeof(double) * (nu + 1));
        s->dn_g = malloc(sizeof(double) * (nd + 1));
        s->fu_w = malloc(sizeof(uint64_t) * (nu + 1));
        s->fd_w = malloc(sizeof(uint64_t) * (nd + 1));
        s->fu_g = malloc(sizeof(double) * (nu + 1));
        s->fd_g = malloc(sizeof(double) * (nd + 1));
        ok = s->up_rank && s->dn_rank && s->up_w && s->dn_w && s->up_g && s->dn_g && s->fu_w && s->fd_w && s->fu_g && s->fd_g;
    }
    if (ok) {
        /* rank r (1-based in the trees) of segment idx; segments stay listed per group in up_start order */
        for (uint32_t r = 0; r < nu; r++) {
            s->up_rank[ut[r].idx] = r + 1;
            s->up_w[r + 1] = uw[ut[r].idx];
            s->up_g[r + 1] = ug[ut[r].idx];
        }
        for (uint32_t r = 0; r < nd; r++) {
            s->dn_rank[dt[r].idx] = r + 1;
            s->dn_w[r + 1] = dw[dt[r].idx];
            s->dn_g[r + 1] = dg[dt[r].idx];
        }
    }
    free(hull); free(ut); free(dt); free(ugrp); free(dgrp); free(uw); free(dw); free(ug); free(dg);
    return ok;
}

/* Fenwick trees: fill with every segment (linear build), remove one, and the LP value of a room. */
static void fen_build(uint64_t *fw, double *fg, const uint64_t *w, const double *g, uint32_t n)
{
    for (uint32_t i = 1; i <= n; i++) {
        fw[i] = w[i];
        fg[i] = g[i];
    }
    for (uint32_t i = 1; i <= n; i++) {
        uint32_t p = i + (i & -i);
        if (p <= n) {
            fw[p] += fw[i];
            fg[p] += fg[i];
        }
    }
}

static void fen_remove(uint64_t *fw, double *fg, const uint64_t *w, const double *g, uint32_t n, uint32_t r)
{
    for (uint32_t i = r; i <= n; i += i & -i) {
        fw[i] -= w[r];
        fg[i] -= g[r];
    }
}

/* Greedy take, best segments first, of ROOM bytes: the largest prefix that fits (POS segments,
 * USED bytes, value VAL) and the break segment POS+1 (when POS < n). */
typedef struct take { uint32_t pos; uint64_t used; double val; } take;
static take fen_take(const uint64_t *fw, const double *fg, uint32_t n, uint64_t room)
{
    take t = {0, 0, 0};
    uint32_t step = 1;
    while (step * 2 <= n) step *= 2;
    for (; step; step /= 2)
        if (t.pos + step <= n && t.used + fw[t.pos + step] <= room) {
            t.pos += step;
            t.used += fw[t.pos];
            t.val += fg[t.pos];
        }
    return t;
}

/* The LP of the groups after the DP's current stage is piecewise linear in the room: between two
 * breakpoints the greedy prefix (and so the rounding) is the same and only the break segment's
 * fraction moves. States come in weight order, so consecutive rooms mostly share a piece: the piece
 * of the last Fenwick descent is kept and reused, giving bit-identical results without a descent. */
typedef struct piece {
    int valid, up;
    take t;
    uint64_t end; /* the piece holds rooms (up) or needs (down) in [t.used, end); UINT64_MAX: unbounded */
} piece;

static piece piece_of(const search *s, int up, uint64_t x)
{
    piece p = {1, up, up ? fen_take(s->fu_w, s->fu_g, s->nup, x) : fen_take(s->fd_w, s->fd_g, s->ndn, x), UINT64_MAX};
    uint32_t n = up ? s->nup : s->ndn;
    if (p.t.pos < n) p.end = p.t.used + (up ? s->up_w : s->dn_w)[p.t.pos + 1];
    return p;
}

/* The groups after the DP's current stage, for ROOM = capacity left minus their vertex weights:
 * LP value change (a lower bound; INFINITY if infeasible), and a feasible rounding of it (*zint,
 * INFINITY if none) taking segments up to rank *pos in direction *up. Positive room buys the best up
 * segments; negative room must be freed by the cheapest down segments. PC caches the last piece
 * (reset it whenever the trees change). */
static double rest_eval(const search *s, piece *pc, double room, double *zint, int *up, uint32_t *pos)
{
    int dir = room >= 0;
    uint64_t x = dir ? (uint64_t)room : (uint64_t)(-room);
    if (!pc->valid || pc->up != dir || x < pc->t.used || x >= pc->end) *pc = piece_of(s, dir, x);
    take t = pc->t;
    *up = dir;
    *pos = t.pos;
    if (dir) {
        *zint = -t.val;
        double lp = t.val;
        if (t.pos < s->nup) lp += s->up_g[t.pos + 1] * ((double)(x - t.used) / (double)s->up_w[t.pos + 1]);
        return -lp;
    }
    *zint = t.val;
    if (t.used == x) return t.val;
    if (t.pos >= s->ndn) { *zint = INFINITY; return INFINITY; }
    /* the break segment (present: the descent passes over removed, zero-weight ranks): part of it in
     * the LP, all of it when rounding */
    double lp = t.val + s->dn_g[t.pos + 1] * ((double)(x - t.used) / (double)s->dn_w[t.pos + 1]);
    *zint = t.val + s->dn_g[t.pos + 1];
    *pos = t.pos + 1;
    return lp;
}

static void rest_reset(search *s)
{
    fen_build(s->fu_w, s->fu_g, s->up_w, s->up_g, s->nup);
    fen_build(s->fd_w, s->fd_g, s->dn_w, s->dn_g, s->ndn);
}

static void rest_remove_group(search *s, uint32_t j)
{
    for (uint32_t i = s->up_start[j]; i < s->up_start[j + 1]; i++) fen_remove(s->fu_w, s->fu_g, s->up_w, s->up_g, s->nup, s->up_rank[i]);
    for (uint32_t i = s->dn_start[j]; i < s->dn_start[j + 1]; i++) fen_remove(s->fd_w, s->fd_g, s->dn_w, s->dn_g, s->ndn, s->dn_rank[i]);
}

/* Groups with two or more items of reduced cost below CUT (the largest cut the search will use);
 * every other group is fixed at its one such item (the LP vertex up to rounding). */
static int find_candidates(search *s, double cut)
{
    const rf_mckp *m = s->m;
    s->fixed = malloc(sizeof *s->fixed * (m->ng ? m->ng : 1));
    s->cand = malloc(sizeof *s->cand * (m->ng ? m->ng : 1));
    if (!s->fixed || !s->cand) return 0;
    s->ncand = 0;
    s->wbase = 0;
    s->ebase = (ksum){0, 0};
    for (uint32_t g = 0; g < m->ng; g++) {
        uint32_t nb = 0, it = s->vit[g];
        for (uint32_t k = m->par_start[g]; k < m->par_start[g + 1]; k++)
            if (s->rr[k] - s->mn[g] < cut) {
                nb++;
                it = m->par[k];
            }
        if (nb > 1) {
            s->cand[s->ncand++] = g;
            continue;
        }
        s->fixed[g] = it;
        s->wbase += m->w[it];
        ks_add(&s->ebase, m->e[it]);
    }
    return 1;
}

static sums sums_add(sums a, sums b)
{
    return (sums){a.wv + b.wv, a.wmin + b.wmin, gcd_u64(a.g, b.g), a.ev + b.ev};
}

/* Reduced-cost fixing against the incumbent, then the core's order and suffix bounds.
 * Returns 0 on allocation failure; *infeasible when the fixed items alone overflow. */
static int build_core(search *s, double cut, int *infeasible)
{
    const rf_mckp *m = s->m;
    uint32_t ng = m->ng, ni = m->par_start[ng];
    core_free(s);
    *infeasible = 0;
    uint32_t *grp = malloc(sizeof *grp * (ng + 1)), *start = malloc(sizeof *start * (ng + 1)), *sv = malloc(sizeof *sv * ni),
             *arg = malloc(sizeof *arg * (ng + 1)), *perm = malloc(sizeof *perm * (ng + 1));
    double *rr = malloc(sizeof *rr * ni), *key = malloc(sizeof *key * (ng + 1));
    int ok = grp && start && sv && arg && perm && rr && key;
    uint32_t K = 0, n = 0;
    uint64_t wfix = s->wbase;
    ksum efix = s->ebase;
    for (uint32_t c = 0; ok && c < s->ncand; c++) {
        uint32_t g = s->cand[c];
        const uint32_t *par = m->par + m->par_start[g];
        uint32_t np = m->par_start[g + 1] - m->par_start[g], first = n, argi = 0;
        double best = INFINITY;
        for (uint32_t i = 0; i < np; i++) {
            double r = s->rr[m->par_start[g] + i] - s->mn[g];
            if (r >= cut) continue;
            if (r < best) { best = r; argi = n; }
            sv[n] = par[i];
            rr[n++] = r;
        }
        if (n - first <= 1) { /* fixed (the vertex always survives while cut > 0) */
            uint32_t it = n > first ? sv[first] : s->vit[g];
            s->fixed[g] = it;
            wfix += m->w[it];
            ks_add(&efix, m->e[it]);
            n = first;
        } else {
            s->fixed[g] = UINT32_MAX;
            start[K] = first;
            arg[K] = argi;
            grp[K++] = g;
        }
    }
    if (ok) {
        start[K] = n;
        s->K = K;
        s->grp = grp, s->sv_start = start, s->sv = sv, s->sv_rr = rr, s->arg = arg;
        order_core(s, perm, key);
        uint32_t *grp2 = malloc(sizeof *grp2 * (K + 1)), *start2 = malloc(sizeof *start2 * (K + 1)), *arg2 = malloc(sizeof *arg2 * (K + 1));
        uint32_t *sv2 = malloc(sizeof *sv2 * (n ? n : 1));
        double *rr2 = malloc(sizeof *rr2 * (n ? n : 1));
        ok = grp2 && start2 && arg2 && sv2 && rr2;
        uint32_t t = 0;
        for (uint32_t j = 0; ok && j < K; j++) {
            uint32_t o = perm[j];
            start2[j] = t;
            grp2[j] = grp[o];
            arg2[j] = t + (arg[o] - start[o]);
            for (uint32_t i = start[o]; i < start[o + 1]; i++, t++) {
                sv2[t] = sv[i];
                rr2[t] = rr[i];
            }
        }
        if (ok) start2[K] = t;
        free(grp); free(start); free(sv); free(rr); free(arg);
        s->grp = grp2, s->sv_start = start2, s->sv = sv2, s->sv_rr = rr2, s->arg = arg2;
        if (!ok) { free(perm); free(key); return 0; }
    } else {
        free(grp); free(start); free(sv); free(rr); free(arg);
    }
    free(perm);
    free(key);
    if (!ok) return 0;
    if (wfix > s->cap) { *infeasible = 1; return 1; }
    s->C = s->cap - wfix;
    s->zfix = ks_val(&efix);
    K = s->K;
    s->pre = calloc(K + 1, sizeof(sums));
    s->suf = calloc(K + 1, sizeof(sums));
    s->stage_off = malloc(sizeof(uint32_t) * (K + 3));
    s->stage_grp = malloc(sizeof(uint32_t) * (K + 2));
    if (!s->pre || !s->suf || !s->stage_off || !s->stage_grp) return 0;
    for (uint32_t j = 0; j < K; j++) {
        uint32_t v = s->vit[s->grp[j]];
        uint64_t g = 0;
        for (uint32_t i = s->sv_start[j]; i < s->sv_start[j + 1]; i++)
            g = gcd_u64(g, m->w[s->sv[i]] > m->w[v] ? m->w[s->sv[i]] - m->w[v] : m->w[v] - m->w[s->sv[i]]);
        sums one = {m->w[v], m->w[s->sv[s->sv_start[j]]], g, m->e[v]}; /* survivors keep weight order */
        s->pre[j + 1] = sums_add(s->pre[j], one);
        s->suf[j] = one; /* summed below */
    }
    for (uint32_t j = K; j-- > 0;) s->suf[j] = sums_add(s->suf[j + 1], s->suf[j]);
    return build_segments(s);
}

/* Lower bound on every completion of state X whose groups still open are REST (the trees hold
 * exactly them): its value plus the LP of the rest (which implies every Lagrangian bound), and the
 * value of a feasible completion. */
typedef struct compl { double z; int up; uint32_t pos; } compl;
static double state_eval(const search *s, piece *pc, const sums *rest, const state *x, compl *c)
{
    /* the open groups can only change the total by multiples of g: round their room down to one */
    int64_t r = (int64_t)s->C - (int64_t)(x->w + rest->wv), g = (int64_t)rest->g;
    if (g > 1) r = (r / g - (r % g < 0)) * g;
    double room = (double)r, e0 = s->zfix + x->e + rest->ev;
    double zi;
    compl cc;
    double lb = e0 + rest_eval(s, pc, room, &zi, &cc.up, &cc.pos);
    cc.z = e0 + zi;
    if (c) *c = cc;
    return lb;
}

/* Merge sorted A (weights ascending, values strictly descending) with S shifted by one item into OUT,
 * dropping dominated states. */
static uint32_t merge_dom(const state *a, uint32_t na, const state *S, uint32_t ns, uint64_t iw, double ie, uint32_t item,
                          state *out)
{
    uint32_t i = 0, j = 0, n = 0;
    while (i < na || j < ns) {
        state c;
        if (j >= ns || (i < na && (a[i].w < S[j].w + iw || (a[i].w == S[j].w + iw && a[i].e <= S[j].e + ie)))) c = a[i++];
        else {
            c.w = S[j].w + iw;
            c.e = S[j].e + ie;
            c.parent = j;
            c.item = item;
            j++;
        }
        if (n && c.e >= out[n - 1].e) continue;
        out[n++] = c;
    }
    return n;
}

/* Put the items of state I of stage ST and its ancestors into the incumbent. */
static void path_assign(search *s, uint32_t st, uint32_t i)
{
    uint32_t idx = s->stage_off[st] + i;
    for (; s->stage_grp[st] != UINT32_MAX; st--) {
        s->inc[s->grp[s->stage_grp[st]]] = s->pool[idx].item;
        idx = s->stage_off[st - 1] + s->pool[idx].parent;
    }
}

static void fixed_assign(search *s)
{
    for (uint32_t g = 0; g < s->m->ng; g++)
        if (s->fixed[g] != UINT32_MAX) s->inc[g] = s->fixed[g];
}

/* Make the plan of state I of stage ST, whose half has decided core groups [P0, P1), completed by
 * C on the others, the incumbent. */
static void take_path(search *s, uint32_t st, uint32_t i, uint32_t p0, uint32_t p1, const compl *c)
{
    fixed_assign(s);
    for (uint32_t t = 0; t < s->K; t++) {
        if (t >= p0 && t < p1) continue;
        uint32_t it = s->vit[s->grp[t]];
        const uint32_t *rank = c->up ? s->up_rank : s->dn_rank, *item = c->up ? s->up_item : s->dn_item;
        uint32_t a = c->up ? s->up_start[t] : s->dn_start[t], b = c->up ? s->up_start[t + 1] : s->dn_start[t + 1];
        for (uint32_t k = a; k < b && rank[k] <= c->pos; k++) it = item[k];
        s->inc[s->grp[t]] = it;
    }
    path_assign(s, st, i);
    s->zinc = value_of(s->m, s->inc, NULL);
}

enum { DP_DONE, DP_LIMIT, DP_EMPTY, DP_NOMEM };

/* Forward DP over core groups [J0, J1) from the empty state at stage ST0 (stages ST0+1.. follow),
 * every state bounded with the LP of all other core groups. DP_EMPTY: nothing can beat the
 * incumbent; DP_LIMIT: the state limit was reached and *flb is a lower bound on any plan. */
static int run_half(search *s, uint32_t j0, uint32_t j1, uint32_t st0, uint64_t limit, double *flb)
{
    const rf_mckp *m = s->m;
    rest_reset(s);
    if (s->stage_off[st0] + 1 > s->pool_cap) {
        uint64_t cap = s->pool_cap ? s->pool_cap : 1024;
        while (s->stage_off[st0] + 1 > cap) cap *= 2;
        state *np = realloc(s->pool, sizeof *s->pool * cap);
        if (!np) return DP_NOMEM;
        s->pool = np;
        s->pool_cap = cap;
    }
    s->pool[s->stage_off[st0]] = (state){0, 0, 0, UINT32_MAX};
    s->stage_off[st0 + 1] = s->stage_off[st0] + 1;
    s->stage_grp[st0] = UINT32_MAX;
    for (uint32_t j = j0; j < j1; j++) {
        uint32_t st = st0 + (j - j0);
        double rr_cap = s->zinc - s->tol - s->bound; /* an item costing more cannot be in a better plan */
        if (rr_cap <= 0) return DP_EMPTY;
        state *S = s->pool + s->stage_off[st];
        uint32_t ns = s->stage_off[st + 1] - s->stage_off[st], a = s->sv_start[j], b = s->sv_start[j + 1];
        uint64_t need = (uint64_t)ns * (b - a);
        if (s->states + need > limit) {
            piece pc = {0};
            sums rest = sums_add(s->pre[j0], s->suf[j]);
            *flb = s->zinc - s->tol;
            for (uint32_t i = 0; i < ns; i++) *flb = fmin(*flb, state_eval(s, &pc, &rest, &S[i], NULL));
            return DP_LIMIT;
        }
        if (need > s->buf_cap) {
            free(s->buf[0]);
            free(s->buf[1]);
            s->buf_cap = need;
            s->buf[0] = malloc(sizeof(state) * need);
            s->buf[1] = malloc(sizeof(state) * need);
            if (!s->buf[0] || !s->buf[1]) { s->buf_cap = 0; return DP_NOMEM; }
        }
        uint32_t n = 0;
        int cb = 0;
        for (uint32_t i = a; i < b; i++) {
            if (s->sv_rr[i] >= rr_cap) continue;
            n = merge_dom(s->buf[cb], n, S, ns, m->w[s->sv[i]], m->e[s->sv[i]], s->sv[i], s->buf[cb ^ 1]);
            cb ^= 1;
        }
        s->states += n;
        rest_remove_group(s, j);
        state *T = s->buf[cb];
        sums rest = sums_add(s->pre[j0], s->suf[j + 1]);
        uint32_t kept = 0, best_i = UINT32_MAX;
        double best_z = s->zinc - s->tol;
        piece pc = {0};
        compl best_c = {0, 0, 0};
        for (uint32_t i = 0; i < n; i++) {
            state x = T[i];
            if (x.w + rest.wmin > s->C) continue;
            compl cc;
            double lb = state_eval(s, &pc, &rest, &x, &cc);
            if (lb >= s->zinc - s->tol) continue;
            T[kept++] = x;
            if (cc.z < best_z) {
                best_z = cc.z;
                best_i = kept - 1;
                best_c = cc;
            }
        }
        if (s->stage_off[st + 1] + (uint64_t)kept + 1 > s->pool_cap) { /* + 1: the next half's start */
            uint64_t cap = s->pool_cap;
            while (s->stage_off[st + 1] + (uint64_t)kept + 1 > cap) cap *= 2;
            state *np = realloc(s->pool, sizeof *s->pool * cap);
            if (!np) return DP_NOMEM;
            s->pool = np;
            s->pool_cap = cap;
        }
        memcpy(s->pool + s->stage_off[st + 1], T, sizeof(state) * kept);
        s->stage_off[st + 2] = s->stage_off[st + 1] + kept;
        s->stage_grp[st + 1] = j;
        if (best_i != UINT32_MAX) take_path(s, st + 1, best_i, j0, j + 1, &best_c);
        if (!kept) return DP_EMPTY;
    }
    return DP_DONE;
}

/* The best pair of the halves' final states (both in weight order, values strictly descending):
 * for each first-half state the heaviest second-half state that fits is the best partner. */
static void join_halves(search *s, uint32_t sa, uint32_t sb)
{
    const state *A = s->pool + s->stage_off[sa], *B = s->pool + s->stage_off[sb];
    uint32_t na = s->stage_off[sa + 1] - s->stage_off[sa], nb = s->stage_off[sb + 1] - s->stage_off[sb];
    uint32_t bi = UINT32_MAX, bj = 0, j = nb;
    double best = s->zinc - s->tol;
    for (uint32_t i = 0; i < na; i++) {
        while (j > 0 && A[i].w + B[j - 1].w > s->C) j--;
        if (!j) break;
        double z = s->zfix + A[i].e + B[j - 1].e;
        if (z < best) {
            best = z;
            bi = i;
            bj = j - 1;
        }
    }
    if (bi == UINT32_MAX) return;
    fixed_assign(s);
    path_assign(s, sa, bi);
    path_assign(s, sb, bj);
    s->zinc = value_of(s->m, s->inc, NULL);
}

/* Exact search over the core, meet in the middle: the Pareto states of each half are far fewer than
 * those of one DP over all groups, and the halves join in linear time. */
static int run_dp(search *s, uint64_t limit, double *flb)
{
    uint32_t K = s->K, h = (K + 1) / 2;
    s->stage_off[0] = 0;
    int r = run_half(s, 0, h, 0, limit, flb);
    if (r != DP_DONE) return r;
    r = run_half(s, h, K, h + 1, limit, flb);
    if (r != DP_DONE) return r;
    join_halves(s, h, K + 1);
    return DP_DONE;
}

rf_status rf_mckp_solve(const rf_mckp *m, uint64_t cap, uint64_t state_limit, rf_mckp_result *res, rf_err *err)
{
    if (cap < m->min_w) return rf_err_set(err, RF_ERR_BUDGET, "capacity below the smallest total weight");
    if (!state_limit) state_limit = RF_MCKP_DEFAULT_STATES;
    const uint32_t ng = m->ng;
    uint64_t cap_in = cap;
    cap -= cap % m->gcd; /* every total is a multiple of the gcd: the LP bound tightens for free */
    search s = {.m = m, .cap = cap};
    res->states = 0;
    res->core = 0;
    res->optimal = 1;
    s.vit = malloc(sizeof *s.vit * (ng ? ng : 1));
    s.mn = malloc(sizeof *s.mn * (ng ? ng : 1));
    s.rr = malloc(sizeof *s.rr * (m->par_start[ng] ? m->par_start[ng] : 1));
    s.inc = res->choice;
    uint32_t *cur = malloc(sizeof *cur * (ng ? ng : 1));
    rf_status st = RF_OK;
    if (!s.vit || !s.mn || !s.rr || !cur) goto oom;
    /* LP: the longest prefix of segments that fits; lambda is the break segment's efficiency */
    uint64_t cap0 = cap - m->min_w;
    uint32_t lo = 0, hi = m->nseg;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        if (m->prefix_w[mid] <= cap0) lo = mid;
        else hi = mid - 1;
    }
    uint32_t kb = lo;
    s.lambda = kb < m->nseg ? m->seg_eff[m->order[kb]] : 0.0;
    ksum ev = {0, 0}, rmin = {0, 0};
    for (uint32_t g = 0; g < ng; g++) {
        uint32_t h = m->hull_start[g], s0 = h - g, nsg = m->hull_start[g + 1] - h - 1, t = 0;
        while (t < nsg && m->rank[s0 + t] < kb) t++;
        cur[g] = t;
        s.vit[g] = m->par[m->par_start[g] + m->hull[h + t]];
        ks_add(&ev, m->e[s.vit[g]]);
    }
    for (uint32_t g = 0; g < ng; g++) { /* mn is 0 in exact arithmetic; kept so rounding cannot overstate the bound */
        uint32_t v = s.vit[g];
        double ev_g = m->e[v], wv_g = (double)m->w[v], mn = 0;
        for (uint32_t k = m->par_start[g]; k < m->par_start[g + 1]; k++) {
            uint32_t it = m->par[k];
            double r = (m->e[it] - ev_g) + s.lambda * ((double)m->w[it] - wv_g);
            s.rr[k] = r;
            mn = r < mn ? r : mn;
        }
        s.mn[g] = mn;
        ks_add(&rmin, mn);
    }
    uint64_t wv = m->min_w + m->prefix_w[kb], resid = cap - wv;
    s.bound = ks_val(&ev) - s.lambda * (double)resid + ks_val(&rmin);
    /* incumbent: greedy fill along the remaining segments, then best single upgrades */
    for (uint32_t k = kb; k < m->nseg && resid; k++) {
        uint32_t sg = m->order[k];
        lo = 0, hi = ng - 1;
        while (lo < hi) { /* the group owning segment sg: last g with hull_start[g] - g <= sg */
            uint32_t mid = lo + (hi - lo + 1) / 2;
            if (m->hull_start[mid] - mid <= sg) lo = mid;
            else hi = mid - 1;
        }
        if (cur[lo] == sg - (m->hull_start[lo] - lo) && m->seg_dw[sg] <= resid) {
            resid -= m->seg_dw[sg];
            cur[lo]++;
        }
    }
    for (uint32_t g = 0; g < ng; g++) {
        const uint32_t *par = m->par + m->par_start[g];
        uint32_t np = m->par_start[g + 1] - m->par_start[g], p0 = m->hull[m->hull_start[g] + cur[g]], best = p0;
        for (uint32_t i = p0 + 1; i < np && m->w[par[i]] - m->w[par[p0]] <= resid; i++) best = i;
        resid -= m->w[par[best]] - m->w[par[p0]];
        s.inc[g] = par[best];
    }
    s.zinc = value_of(m, s.inc, NULL);
    s.tol = RF_MCKP_REL_TOL * fmax(fabs(s.zinc), 1e-300);
    double flb = INFINITY;
    int infeasible = 0;
    /* Expanding core in reduced-cost space: first solve exactly the plans whose every item costs
     * less than CUT (few groups, few states); a better plan costs less than the gap, so once the gap
     * is at most CUT the restricted search was the whole search. Each pass improves the incumbent,
     * which shrinks the gap and so the next core. */
    double cut = (s.zinc - s.tol - s.bound) / 16;
    if (s.zinc - s.tol - s.bound > 0 && !find_candidates(&s, s.zinc - s.tol - s.bound)) goto oom;
    while (s.zinc - s.tol - s.bound > 0) {
        double gap = s.zinc - s.tol - s.bound;
        if (cut > gap) cut = gap;
        if (!build_core(&s, cut, &infeasible)) goto oom;
        if (s.K > res->core) res->core = s.K;
        if (!infeasible && s.K) {
            int r = run_dp(&s, state_limit, &flb);
            if (r == DP_NOMEM) goto oom;
            if (r == DP_LIMIT) { /* a plan is in the restricted set (>= flb) or it costs at least the cut */
                flb = fmin(flb, s.bound + cut);
                res->optimal = 0;
                break;
            }
        }
        if (cut >= s.zinc - s.tol - s.bound) break; /* proven */
        cut *= 4;
    }
    res->states = s.states;
    goto done;
oom:
    st = rf_err_set(err, RF_ERR_NOMEM, "out of memory in the exact search");
done:
    if (st == RF_OK) {
        res->value = value_of(m, res->choice, &res->weight);
        res->bound = res->optimal ? fmin(s.bound, res->value) : fmin(fmax(s.bound, flb), res->value);
        if (res->weight > cap_in) st = rf_err_set(err, RF_ERR_INTERNAL, "knapsack: plan exceeds the capacity");
    }
    core_free(&s);
    free(s.fixed);
    free(s.cand);
    free(s.pool);
    free(s.buf[0]);
    free(s.buf[1]);
    free(s.vit);
    free(s.mn);
    free(s.rr);
    free(cur);
    return st;
}
