/* Quantize throughput and peak memory on a synthetic Qwen3-8B-shaped checkpoint (real tensor
 * shapes: width 4096, MLP 12288, vocab 151936; fewer layers by default so it fits a quick run).
 * The plan comes from a stand-in profile (exact MLX byte counts, a simple error model): the
 * analysis pass is not what is measured here. Each write runs in a forked child so its peak RSS
 * (getrusage of the child) is the writer's alone; the source is read from the page cache after a
 * first warm-up pass, so GB/s is the writer's speed, not the disk's.
 *
 *   bench_quantize [--layers N] [--threads N] [--dir DIR] [--out DIR] [--keep] [--no-opt]
 */
#include "ramfit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const rf_err *e)
{
    fprintf(stderr, "bench_quantize: %s: %s\n", what, e->msg);
    exit(1);
}

/* A profile with exact bytes for every config and D = 4^-bits * (1 + gs/128): enough for the
 * planner to produce a realistic mix. */
static rf_profile *standin_profile(const rf_model *m, rf_err *err)
{
    rf_pmodel pm;
    rf_analyse_identity(m, &pm);
    rf_profile *p = NULL;
    if (rf_profile_create(&pm, 3u, RF_PROFILE_ALL_CONFIGS, &p, err)) return NULL;
    const rf_config *c = rf_model_config(m);
    for (uint64_t i = 0; i < rf_model_unit_count(m); i++) {
        const rf_unit *u = rf_model_unit(m, i);
        rf_punit pu;
        rf_punit_init(&pu, u->name, u->role, u->layer, c->num_layers, u->rows, u->cols, u->nparams, u->dtype);
        pu.n_members = u->n_members;
        pu.ssq = (double)u->nparams * 4e-4;
        pu.stats.rms = 0.02;
        pu.stats.absmax = 0.2;
        for (int b = 0; b < RF_QBITS_N && u->quantizable; b++)
            for (int g = 0; g < RF_QGS_N; g++) {
                int bits = rf_qbits[b], gs = rf_qgs[g];
                if (u->cols % (uint64_t)gs) continue;
                double d = pow(4.0, -bits) * (1 + gs / 128.0);
                rf_qerr e = {d * pu.ssq, pu.ssq, 0.01};
                rf_qerr eo = {0.8 * d * pu.ssq, pu.ssq, 0.01};
                if (rf_punit_add_cand(&pu, bits, gs, rf_quant_bytes(u->nparams, bits, gs, RF_DT_BF16), &e, &eo, err))
                    return NULL;
            }
        if (rf_profile_add_unit(p, &pu, err)) return NULL;
    }
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        if (ti->unit >= 0) continue;
        rf_pother o = {.role = ti->role, .layer = ti->layer, .nparams = ti->t->nelem, .dtype = ti->t->dtype,
                       .bytes = ti->t->nbytes};
        snprintf(o.name, sizeof o.name, "%s", ti->t->name);
        if (rf_profile_add_other(p, &o, err)) return NULL;
    }
    return p;
}

static void rmrf(const char *path)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "bench_quantize: could not remove %s\n", path);
}

/* One write in a child process: seconds, CPU seconds and peak RSS (MiB) of the child. */
static int timed_write(const rf_model *m, const rf_plan *plan, int threads, const char *out, double *secs, double *cpu,
                       double *rss_mib)
{
    rmrf(out);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        rf_quantize_opts o;
        rf_quantize_opts_default(&o);
        o.threads = threads;
        rf_err e;
        rf_status s = rf_quantize_write(m, plan, &o, out, NULL, NULL, &e);
        if (s) fprintf(stderr, "bench_quantize: %s\n", e.msg);
        _exit(s ? 1 : 0);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) < 0) return -1;
    *secs = now_s() - t0;
    *cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec * 1e-6;
    *rss_mib = (double)ru.ru_maxrss / 1024.0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    int layers = 4, threads = 2, keep = 0, no_opt = 0;
    const char *dir = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc) layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--keep")) keep = 1;
        else if (!strcmp(argv[i], "--no-opt")) no_opt = 1;
        else {
            fprintf(stderr, "usage: bench_quantize [--layers N] [--threads N] [--dir DIR] [--out DIR] [--keep] [--no-opt]\n");
            return 2;
        }
    }
    char dbuf[512], obuf[600];
    if (!dir) {
        snprintf(dbuf, sizeof dbuf, "/tmp/rf-bench-qwen3-8b-L%d", layers);
        dir = dbuf;
    }
    if (!out) {
        snprintf(obuf, sizeof obuf, "%s-mlx", dir);
        out = obuf;
    }
    rf_err err;
    char cfg[600];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    struct stat sb;
    if (stat(cfg, &sb) != 0) {
        rf_synth_opts so;
        rf_synth_opts_default(&so);
        so.like = "qwen3-8b";
        so.layers = layers;
        so.seed = 1;
        so.dtype = RF_DT_BF16;
        so.threads = threads;
        fprintf(stderr, "bench_quantize: writing the synthetic model to %s\n", dir);
        if (rf_synth_write(&so, dir, NULL, &err)) die("synth", &err);
    }
    rf_model *m = NULL;
    if (rf_model_open(dir, &m, &err)) die(dir, &err);
    rf_profile *prof = standin_profile(m, &err);
    if (!prof) die("profile", &err);
    uint64_t in_bytes = 0;
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) in_bytes += rf_model_tinfo(m, i)->t->nbytes;
    double la[3] = {0, 0, 0};
    if (getloadavg(la, 3) != 3) la[0] = -1;
    printf("model %s: %llu parameters, %.3f GB BF16 input, %d threads, simd %s, load average %.2f\n", dir,
           (unsigned long long)rf_model_param_count(m), (double)in_bytes / 1e9, threads,
           rf_cpu_features() & RF_CPU_AVX512 ? "avx512" : rf_cpu_features() & RF_CPU_AVX2 ? "avx2" : "off", la[0]);
    static const struct { const char *label, *method; rf_qmode mode; double bpw; } runs[] = {
        {"warm-up (uniform 4/64, mlx)", "uniform:4:64", RF_QMODE_MLX, 0},
        {"uniform 4/64, mlx", "uniform:4:64", RF_QMODE_MLX, 0},
        {"ramfit 4.5 bpw, mlx", "ramfit", RF_QMODE_MLX, 4.5},
        {"ramfit 4.5 bpw, opt", "ramfit", RF_QMODE_OPT, 4.5},
    };
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        if (no_opt && runs[r].mode == RF_QMODE_OPT) continue;
        rf_plan_opts po;
        rf_plan_opts_default(&po);
        if (rf_plan_parse_method(runs[r].method, &po, &err)) die("method", &err);
        po.mode = runs[r].mode;
        uint64_t budget = 0;
        if (runs[r].bpw > 0 && rf_plan_bpw_budget(prof, runs[r].bpw, &budget, &err)) die("budget", &err);
        rf_plan *plan = NULL;
        if (rf_plan_solve(prof, &po, budget ? budget : rf_profile_full_bytes(prof), &plan, &err)) die("plan", &err);
        double secs, cpu, rss;
        if (timed_write(m, plan, threads, out, &secs, &cpu, &rss)) {
            fprintf(stderr, "bench_quantize: write failed\n");
            return 1;
        }
        /* on a shared machine the wall rate depends on the other users: input per CPU-second
         * times the threads is the rate on idle cores */
        printf("%-28s %6.2f s %6.2f GB/s  CPU %6.2f s: %6.2f GB/s idle-core  RSS %7.1f MiB  out %.3f GB (%.3f bpw)\n",
               runs[r].label, secs, (double)in_bytes / secs / 1e9, cpu, (double)in_bytes / cpu / 1e9 * threads, rss,
               (double)rf_plan_total_bytes(plan) / 1e9, rf_plan_bpw(plan));
        fflush(stdout);
        rf_plan_free(plan);
    }
    if (!keep) rmrf(out);
    rf_profile_free(prof);
    rf_model_free(m);
    return 0;
}
