/* Accuracy of the sampled opt error (docs/profile.md, "Estimated errors"): each model analysed in
 * opt mode exactly (every group searched) and from samples, and every candidate of every unit of
 * at least --min-params parameters compared.
 *
 *   bench_estimate [--model DIR]... [--like qwen3-8b --layers N [--vocab N] --dir DIR]
 *                  [--opt-sample 4096,512] [--min-params 1000000] [--threads N] [--gguf 1]
 *
 * --gguf 1: the same for GGUF profiles (analyse --format gguf): the row-sampled error of ggml's
 * encoders against every row measured; --opt-sample then lists weights per unit (--gguf-sample).
 * A synthetic model needs a tokenizer for the file's fixed part: the --dir model gets
 * ../shared/models/qwen3-dense-mini's (use --vocab 4096).
 *
 * For each sample size: per unit, the largest |estimate / exact - 1| over its candidates (and
 * whether the unit was estimated at all: units with at most 8 times the sample's groups are
 * measured exactly); then the largest over all units, and the time of each analysis. Exit
 * status 1 when an estimated candidate is 1% or more off. */
#include "ramfit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int g_gguf;

static rf_profile *analyse(const rf_model *m, uint64_t sample, int threads, double *secs)
{
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.modes = 1u << RF_QMODE_OPT;
    o.opt_sample = sample;
    if (g_gguf) o.gguf = 1, o.gguf_sample = sample;
    o.threads = threads;
    rf_profile *p = NULL;
    rf_err err;
    double t0 = now();
    if (rf_analyse(m, &o, &p, &err)) {
        fprintf(stderr, "bench_estimate: %s\n", err.msg);
        exit(2);
    }
    *secs = now() - t0;
    return p;
}

static int cfg_of(const rf_pcand *c)
{
    if (c->gtype) return rf_gcand_index(c->gtype);
    int i = 0;
    while (rf_qbits[i / RF_QGS_N] != c->bits || rf_qgs[i % RF_QGS_N] != c->gs) i++;
    return i;
}

/* Returns the largest relative error of an estimated candidate. */
static double compare(const char *label, const rf_model *m, uint64_t sample, int threads, uint64_t min_params,
                      const rf_profile *ex, double ex_secs)
{
    double secs;
    rf_profile *es = analyse(m, sample, threads, &secs);
    printf(g_gguf ? "%s, sample %llu weights per unit: exact" : "%s, sample %llu groups per group size: exact %.1f s, sampled %.1f s (%.1fx)\n", label, (unsigned long long)sample,
           ex_secs, secs, ex_secs / secs);
    printf("  %-44s %11s %9s %12s %10s\n", "unit", "params", "estimated", "max |error|", "at");
    double worst = 0, sum2 = 0;
    uint64_t n_est = 0, n_units = 0, n_cand = 0;
    for (uint64_t u = 0; u < rf_profile_unit_count(es); u++) {
        const rf_punit *a = rf_profile_unit(ex, u), *b = rf_profile_unit(es, u);
        if (b->nparams < min_params || !b->n_cands) continue;
        n_units++;
        double w = 0;
        int at = -1;
        for (int k = 0; k < b->n_cands; k++) {
            const int mo = g_gguf ? RF_QMODE_MLX : RF_QMODE_OPT;
            double ea = a->cands[k].err[mo].sse, eb = b->cands[k].err[mo].sse;
            double rel = ea > 0 ? eb / ea - 1 : (eb > 0 ? INFINITY : 0);
            if (b->estimated >> cfg_of(&b->cands[k]) & 1) n_cand++, sum2 += rel * rel;
            if (fabs(rel) >= fabs(w)) w = rel, at = k;
        }
        n_est += b->estimated != 0;
        worst = fabs(w) > worst ? fabs(w) : worst;
        char where[32] = "-";
        if (at >= 0 && b->cands[at].gtype) snprintf(where, sizeof where, "%s", rf_gtype_name(b->cands[at].gtype));
        else if (at >= 0) snprintf(where, sizeof where, "%d/%d", b->cands[at].bits, b->cands[at].gs);
        printf("  %-44.44s %11llu %9s %+11.3f%% %10s\n", b->name, (unsigned long long)b->nparams, b->estimated ? "yes" : "exact",
               100 * w, where);
    }
    printf("  %llu units of >= %llu parameters, %llu estimated (%llu candidates): largest error %.3f%%, rms %.3f%%: %s\n\n",
           (unsigned long long)n_units, (unsigned long long)min_params, (unsigned long long)n_est, (unsigned long long)n_cand,
           100 * worst, n_cand ? 100 * sqrt(sum2 / (double)n_cand) : 0.0, worst < 0.01 ? "within 1%" : "NOT within 1%");
    /* where it matters: plans made on the estimates, scored on the exact errors, against the plans
     * the exact errors give (same budgets: 10%, 30%, 50%, 70% of the way from min-safe to full) */
    rf_plan_opts po;
    rf_plan_opts_default(&po);
    po.mode = g_gguf ? RF_QMODE_MLX : RF_QMODE_OPT;
    rf_planner *pe, *px;
    rf_err err;
    if (!rf_planner_create(es, &po, &pe, &err) && !rf_planner_create(ex, &po, &px, &err)) {
        uint64_t lo = rf_planner_min_safe(px), hi = rf_planner_full_bytes(px);
        for (int k = 1; k <= 7; k += 2) {
            uint64_t b = lo + (hi - lo) / 10 * (uint64_t)k;
            rf_plan *a = NULL, *x = NULL;
            double oa = 0;
            if (!rf_planner_solve(pe, b, &a, &err) && !rf_planner_solve(px, b, &x, &err) &&
                !rf_plan_evaluate(a, ex, &po, &oa, &err)) {
                uint64_t diff = 0;
                for (uint64_t u = 0; u < rf_plan_unit_count(a); u++)
                    diff += rf_plan_get_unit(a, u)->bytes != rf_plan_get_unit(x, u)->bytes;
                printf("  budget %llu B: the estimates' plan scores %.4f%% above the exact optimum (%llu of %llu units "
                       "chose differently)\n", (unsigned long long)b, 100 * (oa / rf_plan_objective(x) - 1),
                       (unsigned long long)diff, (unsigned long long)rf_plan_unit_count(a));
            }
            rf_plan_free(a);
            rf_plan_free(x);
        }
        rf_planner_free(px);
    }
    rf_planner_free(pe);
    printf("\n");
    fflush(stdout);
    rf_profile_free(es);
    return worst;
}

int main(int argc, char **argv)
{
    const char *models[32];
    int nm = 0, threads = 0;
    uint64_t min_params = 1000000;
    const char *samples = "4096";
    rf_synth_opts so;
    rf_synth_opts_default(&so);
    const char *synth_dir = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--model") && nm < 32) models[nm++] = v;
        else if (!strcmp(a, "--like")) so.like = v;
        else if (!strcmp(a, "--layers")) so.layers = atoi(v);
        else if (!strcmp(a, "--vocab")) so.vocab = atoi(v);
        else if (!strcmp(a, "--dir")) synth_dir = v;
        else if (!strcmp(a, "--opt-sample")) samples = v;
        else if (!strcmp(a, "--min-params")) min_params = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--gguf")) g_gguf = atoi(v);
        else {
            fprintf(stderr, "usage: bench_estimate [--model DIR]... [--like NAME --layers N --dir DIR] [--opt-sample N,...] "
                            "[--min-params N] [--threads N]\n");
            return 2;
        }
    }
    rf_err err;
    if (synth_dir) {
        char cfg[4200];
        snprintf(cfg, sizeof cfg, "%s/config.json", synth_dir);
        if (access(cfg, F_OK) != 0) {
            if (!so.like) so.like = "qwen3-8b";
            printf("synth %s (layers %d) into %s\n", so.like, so.layers, synth_dir);
            fflush(stdout);
            if (rf_synth_write(&so, synth_dir, NULL, &err)) { fprintf(stderr, "%s\n", err.msg); return 2; }
        }
        char tok[4200], cmd[8600];
        snprintf(tok, sizeof tok, "%s/tokenizer.json", synth_dir);
        snprintf(cmd, sizeof cmd, "cp ../shared/models/qwen3-dense-mini/tokenizer.json '%s'", tok);
        if (g_gguf && access(tok, F_OK) != 0 && system(cmd) != 0) fprintf(stderr, "bench_estimate: no tokenizer for %s\n", synth_dir);
        if (nm < 32) models[nm++] = synth_dir;
    }
    if (!nm) { fprintf(stderr, "bench_estimate: no model (--model DIR or --dir DIR for a synthetic one)\n"); return 2; }
    double worst = 0;
    for (int i = 0; i < nm; i++) {
        rf_model *m;
        if (rf_model_open(models[i], &m, &err)) { fprintf(stderr, "%s\n", err.msg); return 2; }
        double ex_secs;
        rf_profile *ex = analyse(m, RF_ANALYSE_EXACT, threads, &ex_secs);
        char list[256];
        snprintf(list, sizeof list, "%s", samples);
        for (char *sp = strtok(list, ","); sp; sp = strtok(NULL, ",")) {
            double w = compare(models[i], m, strtoull(sp, NULL, 10), threads, min_params, ex, ex_secs);
            worst = w > worst ? w : worst;
        }
        rf_profile_free(ex);
        rf_model_free(m);
    }
    printf("largest error of an estimated candidate over all models and samples: %.3f%%\n", 100 * worst);
    return worst < 0.01 ? 0 : 1;
}
