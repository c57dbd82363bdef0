/* Planner speed on a synthetic profile of ~20,000 units x 19 candidates (18 configs + keep), one thread:
 * the exact plan for one budget (target < 50 ms including the planner's preprocessing) and a whole
 * curve of 100 budgets (target < 1 s), with proven-optimal counts; plus profile file size and I/O.
 * Usage: bench_plan [layers [state_limit [parts]]] (default 2857 layers: 7 units per layer + embed + lm_head =
 * 20001 units; state limit 0 = the library default; parts: any of l (Llama-like shapes), r (random shapes),
 * i (profile file size and I/O), default "lri") */
#include "plan/plan_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t g_state_limit;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run(const char *what, rf_profile *p)
{
    rf_err err;
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    o.state_limit = g_state_limit;
    printf("\n%s: %llu units, %llu parameters, %.1f GB unquantized\n", what, (unsigned long long)rf_profile_unit_count(p),
           (unsigned long long)rf_profile_param_count(p), rf_profile_full_bytes(p) / 1e9);
    /* one exact plan, preprocessing included (best of 3) */
    double best_one = INFINITY, best_create = INFINITY;
    rf_planner *pl = NULL;
    rf_plan *plan = NULL;
    for (int rep = 0; rep < 3; rep++) {
        rf_planner_free(pl);
        rf_plan_free(plan);
        double t0 = now();
        if (rf_planner_create(p, &o, &pl, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        double t1 = now();
        uint64_t mid = rf_planner_min_safe(pl) + (rf_planner_full_bytes(pl) - rf_planner_min_safe(pl)) / 3;
        if (rf_planner_solve(pl, mid, &plan, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        double t2 = now();
        if (t2 - t0 < best_one) best_one = t2 - t0;
        if (t1 - t0 < best_create) best_create = t1 - t0;
    }
    printf("  exact plan, one budget:   %7.2f ms (planner setup %.2f ms + solve %.2f ms)  %s, %.3f bpw, %llu DP states%s\n",
           best_one * 1e3, best_create * 1e3, (best_one - best_create) * 1e3, rf_plan_status_name(rf_plan_status_of(plan)),
           rf_plan_bpw(plan), (unsigned long long)rf_plan_states(plan), best_one < 0.050 ? "" : "  [over the 50 ms target]");
    rf_plan_free(plan);
    plan = NULL;
    /* a curve: 100 budgets from min-safe to just under full size, planner reused */
    enum { NB = 100 };
    double t0 = now(), ts[NB];
    int optimal = 0, gap = 0, keep = 0;
    uint64_t states = 0, max_states = 0;
    double worst_gap = 0;
    uint64_t lo = rf_planner_min_safe(pl), hi = rf_planner_full_bytes(pl);
    for (int k = 0; k < NB; k++) {
        uint64_t b = lo + (uint64_t)((double)(hi - lo) * k / NB);
        double s0 = now();
        if (rf_planner_solve(pl, b, &plan, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        ts[k] = now() - s0;
        rf_plan_status st = rf_plan_status_of(plan);
        optimal += st == RF_PLAN_OPTIMAL;
        keep += st == RF_PLAN_KEEP_ALL;
        if (st == RF_PLAN_GAP) {
            gap++;
            if (rf_plan_gap(plan) > worst_gap) worst_gap = rf_plan_gap(plan);
        }
        states += rf_plan_states(plan);
        if (rf_plan_states(plan) > max_states) max_states = rf_plan_states(plan);
        rf_plan_free(plan);
    }
    double t1 = now();
    qsort(ts, NB, sizeof ts[0], cmp_double);
    printf("  curve, %d budgets:       %7.2f ms total%s\n", NB, (t1 - t0) * 1e3, t1 - t0 < 1.0 ? "" : "  [over the 1 s target]");
    printf("    per budget: median %.2f ms, p90 %.2f ms, max %.2f ms\n", ts[NB / 2] * 1e3, ts[NB * 9 / 10] * 1e3, ts[NB - 1] * 1e3);
    printf("    %d proven optimal, %d with a gap (worst %.2e), %d keep-all; DP states mean %llu, max %llu\n", optimal, gap,
           worst_gap, keep, (unsigned long long)(states / NB), (unsigned long long)max_states);
    rf_planner_free(pl);
    return 0;
}

/* Profile file sizes and exact round trips at this scale: the saved form (index + data file) and the
 * self-contained JSON text. */
static int io(const rf_profile *p, const char *what)
{
    rf_err err;
    double t0 = now();
    char *text, *ix;
    void *data;
    size_t len, nix, nd;
    if (rf_profile_to_parts(p, "p.bin", &ix, &nix, &data, &nd, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double t1 = now();
    rf_profile *q;
    if (rf_profile_from_parts(ix, nix, data, nd, "bench", &q, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double t2 = now();
    rf_profile_free(q);
    printf("  saved profile (%s): %.2f MB = index %.2f MB + data %.2f MB; write %.0f ms, load+validate %.0f ms\n", what,
           (nix + nd) / 1e6, nix / 1e6, nd / 1e6, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
    free(ix);
    free(data);
    t0 = now();
    if (rf_profile_to_json(p, &text, &len, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    t1 = now();
    if (rf_profile_from_json(text, len, "bench", &q, &err)) { fprintf(stderr, "%s\n", err.msg); free(text); return 1; }
    t2 = now();
    printf("  self-contained JSON (%s): %.2f MB; write %.0f ms, load+validate %.0f ms\n", what, len / 1e6, (t1 - t0) * 1e3,
           (t2 - t1) * 1e3);
    free(text);
    rf_profile_free(q);
    return 0;
}

int main(int argc, char **argv)
{
    int layers = argc > 1 ? atoi(argv[1]) : 2857;
    g_state_limit = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    const char *parts = argc > 3 ? argv[3] : "lrif"; /* l: Llama-like shapes, r: random shapes, i: profile I/O,
                                                        f: the published MoE families at full size */
    rf_err err;
    rf_profile *p;
    printf("bench_plan: one thread; figures are wall-clock (best of 3 for the single plan); state limit %llu%s\n",
           (unsigned long long)(g_state_limit ? g_state_limit : RF_MCKP_DEFAULT_STATES), g_state_limit ? "" : " (default)");
    /* Llama-3-8B-like shapes (7 units per layer, shapes repeat: realistic byte values) */
    rf_psynth_opts so = {.n_layers = layers, .hidden = 4096, .ffn = 14336, .vocab = 128256, .n_heads = 32, .n_kv_heads = 8,
                         .head_dim = 128, .modes = 3, .spread = 0.6, .seed = 1};
    int rc = 0;
    if (strchr(parts, 'l') || strchr(parts, 'i')) {
        if (rf_profile_synth(&so, &p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        if (strchr(parts, 'l')) rc |= run("transformer shapes (Llama-8B-like layers)", p);
        if (strchr(parts, 'i')) {
            printf("\nprofile files, %llu units:\n", (unsigned long long)rf_profile_unit_count(p));
            rc |= io(p, "both modes");
            rf_profile_free(p);
            so.modes = 2;
            if (rf_profile_synth(&so, &p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
            rc |= io(p, "opt mode only");
            so.modes = 3;
        }
        rf_profile_free(p);
    }
    if (strchr(parts, 'r')) {
        /* every unit its own random shape: distinct byte counts everywhere (a harder knapsack) */
        so.random_shapes = 1;
        so.seed = 2;
        if (rf_profile_synth(&so, &p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        rc |= run("random shapes (every unit distinct)", p);
        rf_profile_free(p);
    }
    if (strchr(parts, 'f')) {
        /* the published shapes from the family tables (every expert bank, MLA head bank, fused tensor) */
        static const char *const likes[] = {"llama-4-scout", "qwen2-57b-a14b", "glm-4.5-air", "deepseek-v3"};
        for (size_t i = 0; i < sizeof likes / sizeof likes[0]; i++) {
            rf_psynth_opts fo = {.like = likes[i], .modes = 3, .spread = 0.6, .seed = 3};
            if (rf_profile_synth(&fo, &p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
            char title[128];
            snprintf(title, sizeof title, "%s, full size (%llu units)", likes[i],
                     (unsigned long long)rf_profile_unit_count(p));
            rc |= run(title, p);
            rf_profile_free(p);
        }
    }
    return rc;
}
