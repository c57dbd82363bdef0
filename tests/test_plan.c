/* Planner: the exact knapsack solver against brute force, budget edge cases, baselines, plan files,
 * targets and the CLI. */
#include "testutil.h"

#include "plan/plan_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ brute force */

typedef struct inst {
    uint32_t ng, start[9];
    uint64_t w[8 * 19];
    double e[8 * 19];
} inst;

typedef struct bf {
    uint64_t *tw; /* achievable totals, ascending */
    double *best; /* least value at total <= tw[i] */
    uint32_t n;
} bf;

typedef struct tv { uint64_t w; double e; } tv;
static int tv_cmp(const void *a, const void *b)
{
    const tv *x = a, *y = b;
    if (x->w != y->w) return x->w < y->w ? -1 : 1;
    return (x->e > y->e) - (x->e < y->e);
}

static void brute(const inst *in, bf *out)
{
    uint64_t total = 1;
    for (uint32_t g = 0; g < in->ng; g++) total *= in->start[g + 1] - in->start[g];
    tv *all = malloc(sizeof *all * total);
    uint32_t idx[8] = {0};
    for (uint64_t k = 0; k < total; k++) {
        uint64_t w = 0;
        double e = 0;
        for (uint32_t g = 0; g < in->ng; g++) {
            w += in->w[in->start[g] + idx[g]];
            e += in->e[in->start[g] + idx[g]];
        }
        all[k] = (tv){w, e};
        for (uint32_t g = 0; g < in->ng; g++) {
            if (++idx[g] < in->start[g + 1] - in->start[g]) break;
            idx[g] = 0;
        }
    }
    qsort(all, total, sizeof *all, tv_cmp);
    out->tw = malloc(sizeof *out->tw * total);
    out->best = malloc(sizeof *out->best * total);
    out->n = 0;
    double run = INFINITY;
    for (uint64_t k = 0; k < total; k++) {
        run = fmin(run, all[k].e);
        if (out->n && out->tw[out->n - 1] == all[k].w) out->best[out->n - 1] = run;
        else {
            out->tw[out->n] = all[k].w;
            out->best[out->n++] = run;
        }
    }
    free(all);
}

static double bf_opt(const bf *b, uint64_t cap)
{
    if (!b->n || cap < b->tw[0]) return NAN;
    uint32_t lo = 0, hi = b->n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        if (b->tw[mid] <= cap) lo = mid;
        else hi = mid - 1;
    }
    return b->best[lo];
}

static void random_inst(tu_rng *r, inst *in, int style)
{
    in->ng = 2 + (uint32_t)(tu_rng_u64(r) % 7);
    uint64_t prod = 1;
    uint32_t n = 0;
    uint64_t scale = style == 0 ? 1000000000ull : style == 1 ? 100 : 5;
    /* style 3: weights on a per-group offset lattice (as repeated shapes give): exercises the search's
     * gcd rounding with residues */
    uint64_t lattice = 64 << (tu_rng_u64(r) % 8);
    for (uint32_t g = 0; g < in->ng; g++) {
        in->start[g] = n;
        uint64_t offset = tu_rng_u64(r) % 100000;
        uint32_t maxk = 19;
        while (maxk > 2 && prod * maxk > 6000) maxk--;
        uint32_t k = 2 + (uint32_t)(tu_rng_u64(r) % (maxk - 1));
        prod *= k;
        for (uint32_t i = 0; i < k; i++, n++) {
            uint64_t w = style == 3 ? offset + lattice * (tu_rng_u64(r) % 12) : 1 + tu_rng_u64(r) % scale;
            double e = style == 2 ? (double)(tu_rng_u64(r) % 6) : tu_rng_uniform(r);
            if (i > 0 && tu_rng_u64(r) % 5 == 0) { /* duplicates and exact ties */
                w = in->w[n - 1];
                if (tu_rng_u64(r) % 2) e = in->e[n - 1];
            }
            if (tu_rng_u64(r) % 9 == 0) e = 0;
            in->w[n] = w;
            in->e[n] = e;
        }
    }
    in->start[in->ng] = n;
}

static void check_solution(const inst *in, const rf_mckp_result *res, uint64_t cap, double opt, int must_be_optimal)
{
    uint64_t w = 0;
    double e = 0;
    for (uint32_t g = 0; g < in->ng; g++) {
        assert_true(res->choice[g] >= in->start[g] && res->choice[g] < in->start[g + 1]);
        w += in->w[res->choice[g]];
        e += in->e[res->choice[g]];
    }
    assert_true(w <= cap);
    assert_true(w == res->weight);
    double tol = 1e-9 * fmax(fabs(opt), 1e-12) + 1e-12;
    assert_true(fabs(e - res->value) <= tol);
    assert_true(res->value >= opt - tol);
    assert_true(res->bound <= opt + tol);
    if (must_be_optimal) assert_true(res->optimal);
    if (res->optimal && res->value > opt + tol)
        fail_msg("claimed optimal %.17g but brute force gives %.17g (cap %llu)", res->value, opt, (unsigned long long)cap);
}

static void test_mckp_brute_force(void **state)
{
    (void)state;
    tu_rng r = {20240601};
    rf_err err;
    uint32_t choice[8];
    int instances = 0, solves = 0;
    for (int t = 0; t < 2000; t++) {
        inst in;
        random_inst(&r, &in, t % 4);
        bf b;
        brute(&in, &b);
        rf_mckp *m;
        TU_OK(rf_mckp_create(in.ng, in.start, in.w, in.e, &m, &err), &err);
        assert_true(rf_mckp_min_weight(m) == b.tw[0]);
        /* budgets at and next to achievable totals (a sample when there are many), and far above */
        uint32_t step = b.n > 30 ? b.n / 30 : 1;
        for (uint32_t k = 0; k < b.n; k += step) {
            for (int d = -1; d <= 1; d++) {
                uint64_t cap = b.tw[k] + (uint64_t)(int64_t)d;
                rf_mckp_result res = {.choice = choice};
                if (cap < b.tw[0]) {
                    assert_int_equal(rf_mckp_solve(m, cap, 0, &res, &err), RF_ERR_BUDGET);
                    continue;
                }
                TU_OK(rf_mckp_solve(m, cap, 0, &res, &err), &err);
                check_solution(&in, &res, cap, bf_opt(&b, cap), 1);
                solves++;
                /* a starved search must stay feasible and honest */
                TU_OK(rf_mckp_solve(m, cap, 1 + (uint64_t)(k % 3), &res, &err), &err);
                check_solution(&in, &res, cap, bf_opt(&b, cap), 0);
            }
        }
        rf_mckp_result res = {.choice = choice};
        TU_OK(rf_mckp_solve(m, b.tw[b.n - 1] * 2, 0, &res, &err), &err);
        check_solution(&in, &res, b.tw[b.n - 1] * 2, b.best[b.n - 1], 1);
        assert_true(rf_mckp_sat_weight(m) <= b.tw[b.n - 1]);
        rf_mckp_free(m);
        free(b.tw);
        free(b.best);
        instances++;
    }
    print_message("brute force: %d instances, %d budgets, all optimal\n", instances, solves);
}


/* Larger instances (up to 60 groups, where the search's core, expanding cuts and meet-in-the-middle
 * halves all come into play) against a plain DP over every total weight. */
static void test_mckp_vs_weight_dp(void **state)
{
    (void)state;
    tu_rng r = {99};
    rf_err err;
    enum { MAXG = 60, MAXK = 19, MAXW = 200 };
    static uint32_t start[MAXG + 1], choice[MAXG];
    static uint64_t w[MAXG * MAXK];
    static double e[MAXG * MAXK], best[MAXG * MAXW + 1], next[MAXG * MAXW + 1];
    int solves = 0;
    for (int t = 0; t < 150; t++) {
        uint32_t ng = 20 + (uint32_t)(tu_rng_u64(&r) % (MAXG - 19)), n = 0;
        uint64_t unit = t % 2 ? 1 : 8; /* odd: dense weights; even: a lattice with per-group offsets */
        for (uint32_t g = 0; g < ng; g++) {
            start[g] = n;
            uint32_t k = 2 + (uint32_t)(tu_rng_u64(&r) % (MAXK - 1));
            uint64_t off = tu_rng_u64(&r) % 8;
            for (uint32_t i = 0; i < k; i++, n++) {
                w[n] = unit == 1 ? 1 + tu_rng_u64(&r) % MAXW : off + unit * (tu_rng_u64(&r) % (MAXW / unit));
                e[n] = tu_rng_uniform(&r) * tu_rng_uniform(&r);
            }
        }
        start[ng] = n;
        /* best[x]: least value of a plan of total weight exactly x, then at most x */
        uint64_t top = 0;
        for (uint64_t x = 0; x <= (uint64_t)MAXG * MAXW; x++) best[x] = INFINITY;
        best[0] = 0;
        for (uint32_t g = 0; g < ng; g++) {
            uint64_t wmax = 0;
            for (uint32_t i = start[g]; i < start[g + 1]; i++) wmax = w[i] > wmax ? w[i] : wmax;
            for (uint64_t x = 0; x <= top + wmax; x++) next[x] = INFINITY;
            for (uint64_t x = 0; x <= top; x++)
                if (isfinite(best[x]))
                    for (uint32_t i = start[g]; i < start[g + 1]; i++) next[x + w[i]] = fmin(next[x + w[i]], best[x] + e[i]);
            top += wmax;
            memcpy(best, next, sizeof best[0] * (top + 1));
        }
        for (uint64_t x = 1; x <= top; x++) best[x] = fmin(best[x], best[x - 1]);
        rf_mckp *m;
        TU_OK(rf_mckp_create(ng, start, w, e, &m, &err), &err);
        uint64_t lo = rf_mckp_min_weight(m);
        for (int b = 0; b < 12; b++) {
            uint64_t cap = lo + (top - lo) * (uint64_t)b / 11;
            rf_mckp_result res = {.choice = choice};
            TU_OK(rf_mckp_solve(m, cap, 0, &res, &err), &err);
            double opt = best[cap], tol = 1e-9 * opt + 1e-12;
            if (!res.optimal || res.weight > cap || fabs(res.value - opt) > tol || res.bound > opt + tol)
                fail_msg("instance %d cap %llu: value %.17g (optimal %d, bound %.17g), DP optimum %.17g", t, (unsigned long long)cap,
                         res.value, res.optimal, res.bound, opt);
            solves++;
        }
        rf_mckp_free(m);
    }
    print_message("vs weight DP: %d budgets, all optimal\n", solves);
}

/* ------------------------------------------------------------------ planner on profiles */

static rf_profile *synth(int layers, int experts, int random_shapes, uint64_t seed, double spread)
{
    rf_psynth_opts so = {.n_layers = layers, .hidden = 256, .ffn = 768, .vocab = 4096, .n_heads = 4, .n_kv_heads = 2,
                         .head_dim = 64, .n_experts = experts, .experts_per_tok = experts ? 2 : 0, .modes = 3,
                         .random_shapes = random_shapes, .spread = spread, .seed = seed};
    if (experts) so.ffn = 256;
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_synth(&so, &p, &err), &err);
    return p;
}

/* Brute force over the allowed candidates of a small profile (the veto and hard rules restated). */
static double plan_brute(const rf_profile *p, const rf_plan_opts *o, uint64_t budget, uint64_t *min_total)
{
    uint64_t nu = rf_profile_unit_count(p);
    int idx[16] = {0};
    double best = INFINITY;
    *min_total = UINT64_MAX;
    double thr = pow(10, -o->veto_db / 10);
    for (;;) {
        uint64_t tot = rf_profile_other_bytes(p);
        double obj = 0;
        int ok = 1;
        for (uint64_t i = 0; i < nu && ok; i++) {
            const rf_punit *u = rf_profile_unit(p, i);
            double w = rf_plan_unit_weight(p, &o->weights, u);
            if (idx[i] == 0) { tot += u->kept_bytes; continue; }
            const rf_pcand *c = &u->cands[idx[i] - 1];
            double d = c->err[o->mode].sse / u->ssq;
            if ((!o->unsafe && d > thr) || (u->role == RF_ROLE_ROUTER && c->bits < 8)) ok = 0;
            tot += c->bytes;
            obj += w * pow(d, o->weights.exponent);
        }
        if (ok) {
            if (tot < *min_total) *min_total = tot;
            if (tot <= budget && obj < best) best = obj;
        }
        uint64_t i = 0;
        for (; i < nu; i++) {
            if (++idx[i] <= rf_profile_unit(p, i)->n_cands) break;
            idx[i] = 0;
        }
        if (i == nu) break;
    }
    return best;
}

/* A profile of the first K units of a synthetic model, with fewer candidates, so brute force is cheap. */
static rf_profile *small_profile(tu_rng *r, int k)
{
    rf_profile *big = synth(1 + (int)(tu_rng_u64(r) % 3), tu_rng_u64(r) % 2 ? 4 : 0, (int)(tu_rng_u64(r) % 2), tu_rng_u64(r), 1.0);
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_create(rf_profile_model(big), rf_profile_modes(big), RF_PROFILE_ALL_CONFIGS, &p, &err), &err);
    for (int i = 0; i < k; i++) {
        rf_punit u = *rf_profile_unit(big, (uint64_t)(1 + i));
        int keep = 0;
        for (int c = 0; c < u.n_cands; c++) /* a random subset of the 18 configs */
            if (tu_rng_u64(r) % 3 == 0) u.cands[keep++] = u.cands[c];
        u.n_cands = keep;
        TU_OK(rf_profile_add_unit(p, &u, &err), &err);
    }
    for (uint64_t i = 0; i < rf_profile_other_count(big) && i < 3; i++) TU_OK(rf_profile_add_other(p, rf_profile_other(big, i), &err), &err);
    rf_profile_free(big);
    return p;
}

static void test_plan_brute_force_profiles(void **state)
{
    (void)state;
    tu_rng r = {4242};
    rf_err err;
    int solved = 0;
    for (int t = 0; t < 120; t++) {
        rf_profile *p = small_profile(&r, 2 + (int)(tu_rng_u64(&r) % 4));
        rf_plan_opts o;
        rf_plan_opts_default(&o);
        o.mode = (rf_qmode)(t % 2);
        o.unsafe = t % 5 == 0;
        o.veto_db = t % 3 == 0 ? 14 : 9;
        if (t % 4 == 1) o.weights.exponent = 0.5;
        if (t % 7 == 3) rf_plan_weights_default(&o.weights, RF_WEIGHT_RAM);
        rf_planner *pl;
        TU_OK(rf_planner_create(p, &o, &pl, &err), &err);
        uint64_t lo, full = rf_profile_full_bytes(p);
        plan_brute(p, &o, 0, &lo);
        assert_int_equal(rf_planner_min_safe(pl), lo);
        for (int k = 0; k <= 24; k++) {
            uint64_t b = lo + (full - lo) / 24 * (uint64_t)k + (uint64_t)(k % 3) - 1;
            rf_plan *plan;
            rf_status s = rf_planner_solve(pl, b, &plan, &err);
            if (b < lo) {
                assert_int_equal(s, RF_ERR_BUDGET);
                continue;
            }
            TU_OK(s, &err);
            uint64_t dummy;
            double want = plan_brute(p, &o, b, &dummy);
            assert_true(rf_plan_total_bytes(plan) <= b);
            if (b >= full) assert_int_equal(rf_plan_status_of(plan), RF_PLAN_KEEP_ALL);
            else assert_int_equal(rf_plan_status_of(plan), RF_PLAN_OPTIMAL);
            if (fabs(rf_plan_objective(plan) - want) > 1e-9 * want + 1e-300)
                fail_msg("objective %.17g, brute force %.17g (budget %llu)", rf_plan_objective(plan), want, (unsigned long long)b);
            assert_true(rf_plan_lower_bound(plan) <= rf_plan_objective(plan));
            for (uint64_t i = 0; i < rf_plan_unit_count(plan); i++) {
                const rf_plan_unit *u = rf_plan_get_unit(plan, i);
                if (u->role == RF_ROLE_ROUTER) assert_true(u->bits == 0 || u->bits >= 8);
                if (!o.unsafe && u->bits) assert_true(-10 * log10(u->d) >= o.veto_db);
            }
            rf_plan_free(plan);
            solved++;
        }
        rf_planner_free(pl);
        rf_profile_free(p);
    }
    print_message("planner vs brute force: %d budgets\n", solved);
}

static void test_plan_budget_edges(void **state)
{
    (void)state;
    rf_profile *p = synth(4, 8, 0, 11, 0.8);
    rf_err err;
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    rf_planner *pl;
    TU_OK(rf_planner_create(p, &o, &pl, &err), &err);
    uint64_t ms = rf_planner_min_safe(pl), full = rf_planner_full_bytes(pl);
    assert_true(ms > rf_profile_other_bytes(p) && ms < full);
    rf_plan *plan;
    /* exactly at min-safe: the one smallest plan */
    TU_OK(rf_planner_solve(pl, ms, &plan, &err), &err);
    assert_int_equal(rf_plan_total_bytes(plan), ms);
    assert_int_equal(rf_plan_status_of(plan), RF_PLAN_OPTIMAL);
    rf_plan_free(plan);
    /* one byte below: a clear error naming min-safe */
    char want[64];
    snprintf(want, sizeof want, "(%llu B)", (unsigned long long)ms);
    assert_int_equal(rf_planner_solve(pl, ms - 1, &plan, &err), RF_ERR_BUDGET);
    assert_null(plan);
    assert_non_null(strstr(err.msg, "min-safe"));
    assert_non_null(strstr(err.msg, want));
    assert_non_null(strstr(err.msg, "9.0 dB"));
    assert_int_equal(rf_planner_solve(pl, 0, &plan, &err), RF_ERR_BUDGET);
    /* at and above the unquantized size: keep everything */
    TU_OK(rf_planner_solve(pl, full, &plan, &err), &err);
    assert_int_equal(rf_plan_status_of(plan), RF_PLAN_KEEP_ALL);
    assert_int_equal(rf_plan_total_bytes(plan), full);
    assert_true(rf_plan_objective(plan) == 0);
    for (uint64_t i = 0; i < rf_plan_unit_count(plan); i++) assert_int_equal(rf_plan_get_unit(plan, i)->bits, 0);
    rf_plan_free(plan);
    /* the largest budget a plan file records (JSON integers below 2^63) round-trips; beyond it the
     * budget is refused (it once wrote plans that could not be read back: "too big integer") */
    TU_OK(rf_planner_solve(pl, (uint64_t)INT64_MAX, &plan, &err), &err);
    assert_int_equal(rf_plan_status_of(plan), RF_PLAN_KEEP_ALL);
    char *pj;
    size_t pjn;
    rf_plan *back;
    TU_OK(rf_plan_to_json(plan, &pj, &pjn, &err), &err);
    TU_OK(rf_plan_from_json(pj, pjn, "max.json", &back, &err), &err);
    assert_true(rf_plan_budget(back) == (uint64_t)INT64_MAX);
    rf_plan_free(back);
    free(pj);
    rf_plan_free(plan);
    static const uint64_t huge[] = {(uint64_t)INT64_MAX + 1, 10000000ull * 1000000000000ull, UINT64_MAX};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        assert_int_equal(rf_planner_solve(pl, huge[i], &plan, &err), RF_ERR_INVALID);
        assert_null(plan);
        assert_non_null(strstr(err.msg, "2^63"));
    }
    /* one byte below full: something must be quantized */
    TU_OK(rf_planner_solve(pl, full - 1, &plan, &err), &err);
    assert_true(rf_plan_total_bytes(plan) < full && rf_plan_objective(plan) > 0);
    rf_plan_free(plan);
    rf_planner_free(pl);
    /* --unsafe lowers the floor; routers stay at >= 8 bits even there */
    o.unsafe = 1;
    TU_OK(rf_planner_create(p, &o, &pl, &err), &err);
    assert_true(rf_planner_min_safe(pl) < ms);
    TU_OK(rf_planner_solve(pl, rf_planner_min_safe(pl), &plan, &err), &err);
    for (uint64_t i = 0; i < rf_plan_unit_count(plan); i++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, i);
        if (u->role == RF_ROLE_ROUTER) assert_int_equal(u->bits, 8);
        else assert_int_equal(u->bits, 2);
    }
    rf_plan_free(plan);
    assert_int_equal(rf_planner_solve(pl, rf_planner_min_safe(pl) - 1, &plan, &err), RF_ERR_BUDGET);
    assert_non_null(strstr(err.msg, "smallest possible"));
    rf_planner_free(pl);
    /* a stricter veto raises min-safe; the missing mode is a clear error */
    o.unsafe = 0;
    o.veto_db = 20;
    TU_OK(rf_planner_create(p, &o, &pl, &err), &err);
    assert_true(rf_planner_min_safe(pl) > ms);
    rf_planner_free(pl);
    rf_profile_free(p);
    rf_psynth_opts so = {.n_layers = 2, .hidden = 128, .ffn = 256, .vocab = 256, .n_heads = 2, .n_kv_heads = 1, .head_dim = 64,
                         .modes = 1, .spread = 0.5, .seed = 3};
    TU_OK(rf_profile_synth(&so, &p, &err), &err);
    rf_plan_opts_default(&o);
    assert_int_equal(rf_planner_create(p, &o, &pl, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "no 'opt' measurements"));
    rf_profile_free(p);
    /* bits per weight */
    p = synth(6, 0, 0, 1, 0.5);
    uint64_t b;
    TU_OK(rf_plan_bpw_budget(p, 4.5, &b, &err), &err);
    assert_int_equal(b, (uint64_t)(4.5 * 6819840 / 8));
    assert_int_equal(rf_plan_bpw_budget(p, -1, &b, &err), RF_ERR_INVALID);
    assert_int_equal(rf_plan_bpw_budget(p, NAN, &b, &err), RF_ERR_INVALID);
    rf_profile_free(p);
}

/* A budget curve: the objective never rises with the budget, and every point is proven optimal. */
static void test_plan_curve_monotone(void **state)
{
    (void)state;
    rf_profile *p = synth(12, 0, 1, 21, 0.7);
    rf_err err;
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    rf_planner *pl;
    TU_OK(rf_planner_create(p, &o, &pl, &err), &err);
    uint64_t lo = rf_planner_min_safe(pl), hi = rf_planner_full_bytes(pl);
    double last = INFINITY;
    for (int k = 0; k <= 100; k++) {
        rf_plan *plan;
        TU_OK(rf_planner_solve(pl, lo + (hi - lo) / 100 * (uint64_t)k, &plan, &err), &err);
        assert_true(rf_plan_status_of(plan) != RF_PLAN_GAP);
        assert_true(rf_plan_objective(plan) <= last * (1 + 1e-12));
        last = rf_plan_objective(plan);
        rf_plan_free(plan);
    }
    rf_planner_free(pl);
    rf_profile_free(p);
}

static int mixed_ref(int layer, int L, rf_role role)
{
    if (role == RF_ROLE_LM_HEAD) return 1;
    if (role != RF_ROLE_ATTN_V && role != RF_ROLE_MLP_DOWN && role != RF_ROLE_EXPERT_DOWN) return 0;
    int i = layer < 0 ? 0 : layer;
    /* mlx-lm: i < L//8 or i >= 7*L//8 or (i - L//8) % 3 == 2 */
    return i < L / 8 || i >= (7 * L) / 8 || (i - L / 8) % 3 == 2;
}

static void test_plan_baselines(void **state)
{
    (void)state;
    rf_err err;
    rf_profile *p = synth(32, 0, 0, 5, 0.5);
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    TU_OK(rf_plan_parse_method("mixed:3:6", &o, &err), &err);
    rf_plan *plan;
    TU_OK(rf_plan_solve(p, &o, 0, &plan, &err), &err);
    assert_int_equal(rf_plan_status_of(plan), RF_PLAN_RULE);
    assert_string_equal(rf_plan_method_text(plan), "mixed:3:6:64");
    int high = 0;
    uint64_t total = rf_profile_other_bytes(p);
    for (uint64_t i = 0; i < rf_plan_unit_count(plan); i++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, i);
        int want = mixed_ref(u->layer, 32, u->role) ? 6 : 3;
        assert_int_equal(u->bits, want);
        assert_int_equal(u->gs, 64);
        high += want == 6;
        total += u->bytes;
    }
    /* layers 0-3, 28-31 and 6, 9, ..., 27: 8 + 8 = 16 layers x (v, down) + lm_head */
    assert_int_equal(high, 16 * 2 + 1);
    assert_int_equal(rf_plan_total_bytes(plan), total);
    rf_plan_free(plan);
    rf_profile_free(p);
    /* uniform on a MoE: routers at 8/64 as mlx-lm's model predicate does */
    p = synth(4, 8, 0, 6, 0.5);
    rf_plan_opts_default(&o);
    TU_OK(rf_plan_parse_method("uniform:4:64", &o, &err), &err);
    TU_OK(rf_plan_solve(p, &o, 0, &plan, &err), &err);
    for (uint64_t i = 0; i < rf_plan_unit_count(plan); i++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, i);
        assert_int_equal(u->bits, u->role == RF_ROLE_ROUTER ? 8 : 4);
    }
    /* ramfit at the baseline's size is at least as good under ramfit's own objective */
    rf_plan_opts ro;
    rf_plan_opts_default(&ro);
    ro.mode = RF_QMODE_MLX;
    ro.unsafe = 1;
    double base;
    TU_OK(rf_plan_evaluate(plan, p, &ro, &base, &err), &err);
    rf_plan *best;
    TU_OK(rf_plan_solve(p, &ro, rf_plan_total_bytes(plan), &best, &err), &err);
    assert_true(rf_plan_objective(best) <= base * (1 + 1e-9));
    rf_plan_free(best);
    rf_plan_free(plan);
    /* RAM: its 8 candidates, min/max errors, NRMSE with its priors */
    rf_plan_opts_default(&o);
    TU_OK(rf_plan_parse_method("ram", &o, &err), &err);
    assert_int_equal(o.mode, RF_QMODE_MLX);
    assert_true(o.weights.exponent == 0.5 && o.weights.role[RF_ROLE_EMBED] == 10);
    TU_OK(rf_plan_solve(p, &o, rf_profile_full_bytes(p) / 3, &plan, &err), &err);
    for (uint64_t i = 0; i < rf_plan_unit_count(plan); i++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, i);
        int b = u->bits, g = u->gs;
        assert_true(b == 0 || (b == 2 && g == 32) || (b == 3 && g == 64) || (b == 4) || (b == 8 && g != 32));
    }
    rf_plan_free(plan);
    rf_profile_free(p);
    const char *bad[] = {"uniform:7:64", "uniform:4:48", "mixed:6:3", "mixed:2", "fast", "uniform:4:64:1", "", "mixed:2:6:100"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(rf_plan_parse_method(bad[i], &o, &err), RF_ERR_INVALID);
}

static double double_weight(void *user, const rf_punit *u, double w)
{
    (void)user;
    return u->role == RF_ROLE_ATTN_Q ? 1000 * w : w;
}

static void test_plan_weights(void **state)
{
    (void)state;
    rf_err err;
    rf_plan_weights w;
    rf_plan_weights_default(&w, RF_WEIGHT_RAMFIT);
    TU_OK(rf_plan_weights_set(&w, "attn_v=3.5", &err), &err);
    assert_true(w.role[RF_ROLE_ATTN_V] == 3.5);
    TU_OK(rf_plan_weights_set(&w, "exponent=0.5", &err), &err);
    assert_true(w.exponent == 0.5);
    assert_int_equal(rf_plan_weights_set(&w, "attn_z=1", &err), RF_ERR_INVALID);
    assert_int_equal(rf_plan_weights_set(&w, "first=-1", &err), RF_ERR_INVALID);
    assert_int_equal(rf_plan_weights_set(&w, "exponent=0", &err), RF_ERR_INVALID);
    assert_int_equal(rf_plan_weights_set(&w, "share=2", &err), RF_ERR_INVALID);
    assert_int_equal(rf_plan_weights_set(&w, "first", &err), RF_ERR_INVALID);
    TU_OK(rf_plan_weights_set(&w, "rule=ram", &err), &err);
    assert_true(w.role[RF_ROLE_LM_HEAD] == 10 && !w.param_share);
    char *dir = tu_mkdtemp(), path[512];
    snprintf(path, sizeof path, "%s/w.json", dir);
    const char *js = "{\"rule\": \"params\", \"role\": {\"mlp_down\": 4}, \"last\": 3, \"share\": true}";
    assert_int_equal(tu_write_file(path, js, strlen(js)), 0);
    TU_OK(rf_plan_weights_load(path, &w, &err), &err);
    assert_true(w.rule == RF_WEIGHT_PARAMS && w.role[RF_ROLE_MLP_DOWN] == 4 && w.last_layer == 3 && w.role[RF_ROLE_LM_HEAD] == 1);
    const char *bad = "{\"role\": {\"nope\": 4}}";
    assert_int_equal(tu_write_file(path, bad, strlen(bad)), 0);
    assert_int_equal(rf_plan_weights_load(path, &w, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "nope"));
    tu_rmtree(dir);
    free(dir);
    /* weights shape the plan: a huge weight on q_proj protects it */
    rf_profile *p = synth(4, 0, 0, 8, 0.3);
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    uint64_t budget = rf_profile_full_bytes(p) / 4;
    rf_plan *a, *b;
    TU_OK(rf_plan_solve(p, &o, budget, &a, &err), &err);
    o.weights.fn = double_weight;
    TU_OK(rf_plan_solve(p, &o, budget, &b, &err), &err);
    int qa = 0, qb = 0;
    for (uint64_t i = 0; i < rf_plan_unit_count(a); i++)
        if (rf_plan_get_unit(a, i)->role == RF_ROLE_ATTN_Q) {
            qa += rf_plan_get_unit(a, i)->bits ? rf_plan_get_unit(a, i)->bits : 16;
            qb += rf_plan_get_unit(b, i)->bits ? rf_plan_get_unit(b, i)->bits : 16;
        }
    assert_true(qb > qa);
    /* the default weights: parameter shares sum to one before priors */
    rf_plan_weights_default(&w, RF_WEIGHT_PARAMS);
    double sum = 0;
    for (uint64_t i = 0; i < rf_profile_unit_count(p); i++) sum += rf_plan_unit_weight(p, &w, rf_profile_unit(p, i));
    assert_true(fabs(sum - 1) < 1e-12);
    rf_plan_free(a);
    rf_plan_free(b);
    rf_profile_free(p);
}

static void test_plan_files(void **state)
{
    (void)state;
    rf_err err;
    rf_profile *p = synth(4, 8, 0, 12, 0.6), *other = synth(4, 8, 0, 13, 0.6);
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    rf_plan *plan, *back;
    TU_OK(rf_plan_solve(p, &o, rf_profile_full_bytes(p) / 3, &plan, &err), &err);
    char *j1, *j2;
    size_t n1, n2;
    TU_OK(rf_plan_to_json(plan, &j1, &n1, &err), &err);
    TU_OK(rf_plan_from_json(j1, n1, "mem", &back, &err), &err);
    TU_OK(rf_plan_to_json(back, &j2, &n2, &err), &err);
    assert_int_equal(n1, n2);
    assert_memory_equal(j1, j2, n1);
    assert_int_equal(rf_plan_total_bytes(back), rf_plan_total_bytes(plan));
    assert_true(rf_plan_objective(back) == rf_plan_objective(plan));
    assert_int_equal(rf_plan_status_of(back), RF_PLAN_OPTIMAL);
    assert_int_equal(rf_plan_fingerprint(back), rf_profile_model(p)->fingerprint);
    TU_OK(rf_plan_check_profile(back, p, &err), &err);
    assert_int_equal(rf_plan_check_profile(back, other, &err), RF_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "fingerprint"));
    int64_t k = rf_plan_find_unit(back, "model.layers.2.mlp.gate");
    assert_true(k >= 0);
    assert_true(rf_plan_get_unit(back, (uint64_t)k)->bits >= 8 || rf_plan_get_unit(back, (uint64_t)k)->bits == 0);
    double ev;
    TU_OK(rf_plan_evaluate(back, p, &o, &ev, &err), &err);
    assert_true(fabs(ev - rf_plan_objective(plan)) <= 1e-12 * ev);
    rf_plan_free(back);
    /* corrupt files fail cleanly */
    const char *muts[][2] = {{"\"ramfit-plan\"", "\"ramfit-plot\""}, {"\"bits\": ", "\"bits\": 1"}, {"\"total_bytes\": ", "\"total_bytes\": 9"},
                             {"\"mode\": \"opt\"", "\"mode\": \"fast\""}, {"\"version\": 1", "\"version\": 9"}};
    for (size_t i = 0; i < sizeof muts / sizeof muts[0]; i++) {
        char *at = strstr(j1, muts[i][0]);
        assert_non_null(at);
        size_t a = (size_t)(at - j1);
        char *m = malloc(n1 + 16);
        snprintf(m, n1 + 16, "%.*s%s%s", (int)a, j1, muts[i][1], at + strlen(muts[i][0]));
        rf_status s = rf_plan_from_json(m, strlen(m), "bad", &back, &err);
        assert_true(s == RF_ERR_FORMAT || s == RF_ERR_UNSUPPORTED);
        free(m);
    }
    for (size_t cut = 0; cut < n1; cut += n1 / 50 + 1) assert_int_equal(rf_plan_from_json(j1, cut, "cut", &back, &err), RF_ERR_FORMAT);
    /* a plan's own numbers must agree (issue 13: "budget": 1000 under units of 200 kB quantized and
     * was recorded as a 1000-byte plan); each edit is named */
    char num[64];
    json_error_t je;
    json_t *pj = json_loads(j1, 0, &je);
    assert_non_null(pj);
    struct { const char *path, *key; json_t *v; const char *say; } ed[] = {
        {NULL, "budget", json_integer(1000), "more than its budget"},
        {NULL, "min_safe", json_integer((json_int_t)rf_plan_total_bytes(plan) + 1), "less than its min-safe"},
        {NULL, "objective", json_real(rf_plan_objective(plan) * 2), "objective"},
        {NULL, "budget", json_string("1000000000000000000000"), "budget"},
        {NULL, "status", json_string("rule"), "rule plans have none"},
        {"units", "bytes", json_integer(17), "field 'bytes'"},
        {"units", "d", json_real(0.5), "objective"},
    };
    for (size_t i = 0; i < sizeof ed / sizeof ed[0]; i++) {
        json_t *c = json_deep_copy(pj);
        json_t *tgt = ed[i].path ? json_array_get(json_object_get(c, ed[i].path), 3) : c;
        json_object_set(tgt, ed[i].key, ed[i].v);
        char *t = json_dumps(c, 0);
        if (i == 3) { /* a number beyond 2^63 as written (jansson cannot write one) */
            char *q = strstr(t, "\"1000000000000000000000\"");
            assert_non_null(q);
            memmove(q, q + 1, strlen(q + 1) + 1);
            q[22] = ' ';
        }
        rf_status st = rf_plan_from_json(t, strlen(t), "edited.json", &back, &err);
        if (st != RF_ERR_FORMAT || !strstr(err.msg, ed[i].say) || !strstr(err.msg, "edited.json"))
            fail_msg("edit %zu: %s \"%s\", want format naming '%s'", i, rf_status_name(st), err.msg, ed[i].say);
        if (i == 3) assert_non_null(strstr(err.msg, "out of range"));
        free(t);
        json_decref(c);
        json_decref(ed[i].v);
    }
    json_decref(pj);
    (void)num;
    free(j1);
    free(j2);
    rf_plan_free(plan);
    rf_profile_free(p);
    rf_profile_free(other);
}

static void test_plan_targets(void **state)
{
    (void)state;
    rf_err err;
    rf_profile *p = synth(6, 0, 0, 1, 0.5);
    const rf_target *t = rf_target_find("m4-pro-24gb");
    assert_non_null(t);
    rf_target_budget tb;
    TU_OK(rf_target_budget_for(t, p, 4096, &tb, &err), &err);
    uint64_t G = 1ull << 30;
    assert_int_equal(tb.limit, 24 * G / 3 * 2);
    assert_int_equal(tb.kv_cache, 2ull * 2 * 6 * 2 * 64 * 4096); /* K+V, fp16, 6 layers, 2 KV heads, head_dim 64 */
    assert_int_equal(tb.budget, tb.limit - tb.reserve - tb.kv_cache);
    TU_OK(rf_target_budget_for(rf_target_find("m4-max-128gb"), p, 4096, &tb, &err), &err);
    assert_int_equal(tb.limit, 128 * G / 4 * 3);
    TU_OK(rf_target_budget_for(rf_target_find("rtx-4090-24gb"), p, 4096, &tb, &err), &err);
    assert_int_equal(tb.limit - tb.reserve, 23 * G);
    assert_null(rf_target_find("m9-ultra"));
    const char *need[] = {"iphone-16-pro-8gb", "rtx-4070-12gb", "m4-16gb", "m4-24gb", "m4-32gb", "m4-pro-48gb", "m4-max-36gb",
                          "m4-max-48gb", "m4-max-64gb", "m2-ultra-192gb", "m3-ultra-256gb", "m3-ultra-512gb"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        assert_non_null(rf_target_find(need[i]));
        TU_OK(rf_target_budget_for(rf_target_find(need[i]), p, 4096, &tb, &err), &err);
        assert_true(tb.budget > 0 && tb.budget < rf_target_find(need[i])->memory);
    }
    /* a context whose KV cache does not fit */
    assert_int_equal(rf_target_budget_for(rf_target_find("iphone-16-pro-8gb"), p, 1ull << 40, &tb, &err), RF_ERR_BUDGET);
    rf_profile_free(p);
}

/* ------------------------------------------------------------------ CLI */

static char *g_dir, g_prof[600];

static int cli_setup(void **state)
{
    (void)state;
    g_dir = tu_mkdtemp();
    snprintf(g_prof, sizeof g_prof, "%s/prof.json", g_dir);
    rf_profile *p = synth(8, 4, 0, 31, 0.6);
    rf_err err;
    TU_OK(rf_profile_save(p, g_prof, &err), &err);
    rf_profile_free(p);
    return 0;
}

static int cli_teardown(void **state)
{
    (void)state;
    tu_rmtree(g_dir);
    free(g_dir);
    return 0;
}

static int run(const char *args, char **out)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "plan %s %s", g_prof, args);
    return tu_run_cli(cmd, out);
}

static void test_cli_plan(void **state)
{
    (void)state;
    char *out = NULL, cmd[1024];
    rf_err err;
    rf_profile *p;
    TU_OK(rf_profile_load(g_prof, &p, &err), &err);
    uint64_t full = rf_profile_full_bytes(p);
    rf_profile_free(p);
    snprintf(cmd, sizeof cmd, "--budget %llu --budget 4MiB -o %s/plan-%%s.json --svg %s/curve.svg", (unsigned long long)(full / 3), g_dir, g_dir);
    assert_int_equal(run(cmd, &out), 0);
    assert_non_null(strstr(out, "optimal"));
    assert_non_null(strstr(out, "most protected"));
    assert_non_null(strstr(out, "min-safe"));
    free(out);
    char path[700];
    snprintf(path, sizeof path, "%s/plan-4MiB.json", g_dir);
    rf_plan *plan;
    TU_OK(rf_plan_load(path, &plan, &err), &err);
    assert_true(rf_plan_total_bytes(plan) <= 4u << 20);
    rf_plan_free(plan);
    snprintf(path, sizeof path, "%s/curve.svg", g_dir);
    size_t n;
    char *svg = tu_read_file(path, &n);
    assert_non_null(svg);
    assert_true(!strncmp(svg, "<svg", 4) && strstr(svg, "polyline") && strstr(svg, "min-safe") && strstr(svg, "budget 4MiB"));
    free(svg);
    /* JSON report parses */
    assert_int_equal(run("--bpw 4.5 --target m4-16gb --json", &out), 0);
    assert_non_null(strstr(out, "\"plans\": ["));
    assert_non_null(strstr(out, "\"label\": \"4.5 bits per weight\""));
    free(out);
    /* errors: garbage sizes are usage errors; below min-safe names it and suggests --unsafe */
    assert_int_equal(run("--budget 12XB", &out), 2);
    assert_non_null(strstr(out, "unknown unit"));
    free(out);
    assert_int_equal(run("--budget banana", &out), 2);
    free(out);
    assert_int_equal(run("--budget 1000", &out), 3); /* refused: its own row, exit status 3 */
    assert_non_null(strstr(out, "min-safe"));
    assert_non_null(strstr(out, "--unsafe"));
    free(out);
    assert_int_equal(run("--budget 0", &out), 3);
    free(out);
    assert_int_equal(run("--budget 100GB", &out), 0);
    assert_non_null(strstr(out, "every unit is kept"));
    free(out);
    assert_int_equal(run("--target nowhere", &out), 2);
    free(out);
    assert_int_equal(run("--budget 1MB --budget 2MB -o x.json", &out), 2);
    free(out);
    assert_int_equal(run("", &out), 2);
    free(out);
    /* baselines report their own size and the ramfit comparison */
    assert_int_equal(run("--method uniform:4:64", &out), 0);
    assert_non_null(strstr(out, "uniform:4:64"));
    assert_non_null(strstr(out, "vs ramfit"));
    free(out);
    assert_int_equal(run("--method mixed:2:6 --json", &out), 0);
    assert_non_null(strstr(out, "ramfit_objective_same_size"));
    free(out);
    assert_int_equal(run("--method ram --budget 5MB", &out), 0);
    free(out);
    assert_int_equal(run("--method bogus --budget 5MB", &out), 2);
    free(out);
    assert_int_equal(tu_run_cli("plan --list-targets", &out), 0);
    assert_non_null(strstr(out, "m4-pro-24gb"));
    free(out);
    assert_int_equal(tu_run_cli("plan --help", &out), 0);
    free(out);
    assert_int_equal(tu_run_cli("plan /nonexistent.json --budget 1GB", &out), 1);
    free(out);
}

/* -o or --svg naming the profile or its data file once replaced the input with a plan. Output
 * that never reached stdout (a full disk) once exited 0. */
static void test_cli_outputs(void **state)
{
    (void)state;
    char *out = NULL, cmd[1024], bin[700];
    size_t n0, n1, b0, b1;
    char *before = tu_read_file(g_prof, &n0);
    snprintf(bin, sizeof bin, "%s/prof.bin", g_dir);
    char *bbefore = tu_read_file(bin, &b0);
    assert_non_null(before);
    assert_non_null(bbefore);
    const char *const opts[] = {"-o %s", "-o %s/./%s", "--svg %s", "-o %s/prof.bin", "--svg %s/prof.bin"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        char o[800];
        if (i == 0 || i == 2) snprintf(o, sizeof o, opts[i], g_prof);
        else if (i == 1) snprintf(o, sizeof o, opts[i], g_dir, strrchr(g_prof, '/') + 1);
        else snprintf(o, sizeof o, opts[i], g_dir);
        snprintf(cmd, sizeof cmd, "--budget 4MiB %s", o);
        int rc = run(cmd, &out);
        if (rc != 2 || !strstr(out, "would overwrite the profile")) fail_msg("%s -> %d: %s", cmd, rc, out);
        free(out);
    }
    char *after = tu_read_file(g_prof, &n1), *bafter = tu_read_file(bin, &b1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    assert_int_equal(b0, b1);
    assert_memory_equal(bbefore, bafter, b0);
    free(before);
    free(after);
    free(bbefore);
    free(bafter);
    /* a full stdout is an error (the same report to /dev/null succeeds) */
    snprintf(cmd, sizeof cmd, "plan %s --budget 4MiB --json >/dev/null", g_prof);
    assert_int_equal(tu_run_cli(cmd, &out), 0);
    free(out);
    snprintf(cmd, sizeof cmd, "plan %s --budget 4MiB --json >/dev/full", g_prof);
    assert_int_equal(tu_run_cli(cmd, &out), 1);
    free(out);
}

/* The CLI with a command line of any length (tu_run_cli's buffer is 8 kB). */
static int run_long(const char *args, char **out)
{
    size_t n = strlen(args) + strlen(g_prof) + 4096;
    char *cmd = malloc(n);
    snprintf(cmd, n, "'%s' plan %s %s 2>&1", RF_CLI_PATH, g_prof, args);
    FILE *p = popen(cmd, "r");
    free(cmd);
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + len, 1, cap - len - 1, p)) > 0)
        if ((len += r) + 1 >= cap) b = realloc(b, cap *= 2);
    b[len] = 0;
    int st = pclose(p);
    *out = b;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Many budgets (issue 13: "too many --budget options" at 64, and one budget below min-safe ended
 * the run with no plan for the others): no cap, --sweep, refused budgets as their own rows in the
 * report and the JSON (with the min-safe size), the others planned and written, exit status 3. */
static void test_cli_many_budgets(void **state)
{
    (void)state;
    rf_err err;
    rf_profile *p;
    TU_OK(rf_profile_load(g_prof, &p, &err), &err);
    rf_planner *pl;
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    if (!(rf_profile_modes(p) >> RF_QMODE_OPT & 1)) o.mode = RF_QMODE_MLX;
    TU_OK(rf_planner_create(p, &o, &pl, &err), &err);
    uint64_t ms = rf_planner_min_safe(pl), full = rf_planner_full_bytes(pl);
    /* 1000 --budget options: the first 10 below min-safe */
    size_t cap = 40000, len = 0;
    char *args = malloc(cap);
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(args + len, cap - len, " --budget %llu",
                                (unsigned long long)(i < 10 ? ms / 2 + (uint64_t)i : ms + (full - ms) / 1000 * (uint64_t)i));
    snprintf(args + len, cap - len, " --json");
    char *out = NULL;
    assert_int_equal(run_long(args, &out), 3);
    json_error_t je;
    char *brace = strchr(out, '{');
    json_t *j = json_loadb(brace, strlen(brace) - strlen(strstr(brace, "\nramfit plan: ")), 0, &je);
    if (!j) fail_msg("report is not JSON: %s", je.text);
    assert_int_equal(json_array_size(json_object_get(j, "plans")), 1000);
    assert_int_equal(json_integer_value(json_object_get(j, "planned")), 990);
    assert_int_equal(json_integer_value(json_object_get(j, "refused")), 10);
    for (size_t i = 0; i < 1000; i++) {
        json_t *r = json_array_get(json_object_get(j, "plans"), i);
        const char *st = json_string_value(json_object_get(r, "status"));
        /* each budget, in the order given, planned exactly as a plan of its own */
        uint64_t b = (uint64_t)json_integer_value(json_object_get(r, "budget"));
        rf_plan *one = NULL;
        rf_status s1 = rf_planner_solve(pl, b, &one, &err);
        if (i < 10) {
            assert_string_equal(st, "refused");
            assert_int_equal(s1, RF_ERR_BUDGET);
            assert_int_equal((uint64_t)json_integer_value(json_object_get(r, "min_safe")), ms);
            assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "min-safe"));
        } else {
            TU_OK(s1, &err);
            assert_int_equal((uint64_t)json_integer_value(json_object_get(r, "total_bytes")), rf_plan_total_bytes(one));
            assert_true(json_real_value(json_object_get(r, "objective")) == rf_plan_objective(one));
        }
        rf_plan_free(one);
    }
    json_decref(j);
    free(out);
    /* the same as one --sweep, with plan files; the refused budget gets no file, the others do */
    char sw[300];
    snprintf(sw, sizeof sw, "--sweep %llu:%llu:5 --budget 1000 -o %s/sw-%%s.json --threads 1", (unsigned long long)ms,
             (unsigned long long)full, g_dir);
    assert_int_equal(run(sw, &out), 3);
    assert_non_null(strstr(out, "REFUSED"));
    assert_non_null(strstr(out, "1 of 6 budgets refused"));
    free(out);
    for (int i = 0; i < 5; i++) {
        char path[800];
        uint64_t b = ms + (uint64_t)((unsigned __int128)(full - ms) * (uint64_t)i / 4);
        snprintf(path, sizeof path, "%s/sw-%llu.json", g_dir, (unsigned long long)b);
        rf_plan *pf;
        TU_OK(rf_plan_load(path, &pf, &err), &err);
        assert_true(rf_plan_budget(pf) == b);
        rf_plan_free(pf);
    }
    char miss[800];
    snprintf(miss, sizeof miss, "%s/sw-1000.json", g_dir);
    assert_int_equal(access(miss, F_OK), -1);
    /* the thread count never changes a plan */
    snprintf(sw, sizeof sw, "--sweep %llu:%llu:40 --json --threads 1", (unsigned long long)ms, (unsigned long long)full);
    char *o1, *o4;
    assert_int_equal(run(sw, &o1), 0);
    snprintf(sw, sizeof sw, "--sweep %llu:%llu:40 --json --threads 4", (unsigned long long)ms, (unsigned long long)full);
    assert_int_equal(run(sw, &o4), 0);
    assert_string_equal(o1, o4);
    free(o1);
    free(o4);
    /* malformed sweeps are usage errors */
    static const char *const bad[] = {"--sweep 1MB:2MB", "--sweep 1MB:2MB:0", "--sweep 1MB:2MB:x", "--sweep 1XB:2MB:3", "--sweep ::3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(run(bad[i], &out), 2);
        assert_non_null(strstr(out, "--sweep"));
        free(out);
    }
    free(args);
    rf_planner_free(pl);
    rf_profile_free(p);
}

/* One path for two outputs (issue 13: "plan -o X --svg X" reported the plan written while X held
 * the SVG), and inputs that are not a profile named as what they are. */
static void test_cli_paths(void **state)
{
    (void)state;
    char *out = NULL, cmd[2048];
    char *before = NULL;
    snprintf(cmd, sizeof cmd, "--budget 4MiB -o %s/x.json --svg %s/./x.json", g_dir, g_dir);
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "same file"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/x.json", g_dir);
    assert_int_equal(access(cmd, F_OK), -1);
    snprintf(cmd, sizeof cmd, "--budget 4MiB --budget 4MiB -o %s/y-%%s.json", g_dir);
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "two plans would be written"));
    free(out);
    /* a directory, an endless device, a weight file: named, refused before they are read whole */
    const char *model = tu_model_dir("stories260k");
    struct { const char *path; const char *say; } in[] = {{"/dev/zero", "not a JSON file"}, {g_dir, "is a directory"},
                                                         {"/nonexistent/p.json", "no such file"}};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        snprintf(cmd, sizeof cmd, "plan %s --budget 1GB", in[i].path);
        assert_int_equal(tu_run_cli(cmd, &out), 1);
        if (!strstr(out, in[i].say) || strstr(out, "Input/output")) fail_msg("%s: %s", in[i].path, out);
        free(out);
    }
    if (model) {
        snprintf(cmd, sizeof cmd, "plan %s/model.safetensors --budget 1GB", model);
        assert_int_equal(tu_run_cli(cmd, &out), 1);
        assert_non_null(strstr(out, "safetensors weight file"));
        free(out);
    }
    /* --weights naming a missing file: not "format error at line -1" */
    assert_int_equal(run("--budget 4MiB --weights /nonexistent/w.json", &out), 1);
    assert_non_null(strstr(out, "/nonexistent/w.json: no such file"));
    assert_null(strstr(out, "line -1"));
    free(out);
    free(before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mckp_brute_force),
        cmocka_unit_test(test_mckp_vs_weight_dp),
        cmocka_unit_test(test_plan_brute_force_profiles),
        cmocka_unit_test(test_plan_budget_edges),
        cmocka_unit_test(test_plan_curve_monotone),
        cmocka_unit_test(test_plan_baselines),
        cmocka_unit_test(test_plan_weights),
        cmocka_unit_test(test_plan_files),
        cmocka_unit_test(test_plan_targets),
        cmocka_unit_test_setup_teardown(test_cli_plan, cli_setup, cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_outputs, cli_setup, cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_many_budgets, cli_setup, cli_teardown),
        cmocka_unit_test_setup_teardown(test_cli_paths, cli_setup, cli_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
