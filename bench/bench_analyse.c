/* Analysis speed and memory on a synthetic checkpoint.
 *
 *   bench_analyse [--like qwen3-8b] [--scale F] [--layers N] [--experts N] [--vocab N] [--threads 2]
 *                 [--mode mlx|opt|both] [--candidates LIST] [--dir PATH] [--keep] [--max-units N]
 *
 * Writes the synthetic model into --dir (default: a new directory under $TMPDIR or /tmp; reused
 * if it already holds a config.json), then runs each analysis in a child process and reports
 * input GB/s (BF16 bytes of the analysed units per second) and the child's peak RSS
 * (ru_maxrss). The directory is removed afterwards unless --keep or --dir was given. */
#include "ramfit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(void *user, uint64_t done, uint64_t total, const char *what)
{
    double *last = user, t = now();
    if (t - *last < 10 && done < total) return;
    *last = t;
    fprintf(stderr, "  %5.1f%% %s\n", total ? 100.0 * (double)done / (double)total : 0.0, what);
}

static int run_child(const char *dir, int threads, unsigned modes, unsigned configs)
{
    rf_model *m;
    rf_err err;
    if (rf_model_open(dir, &m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.threads = threads;
    o.modes = modes;
    o.configs = configs;
    double last = now();
    o.progress = (rf_progress){progress, &last, NULL};
    rf_profile *p;
    double t0 = now();
    if (rf_analyse(m, &o, &p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double secs = now() - t0;
    uint64_t input = 0;
    for (uint64_t u = 0; u < rf_profile_unit_count(p); u++) input += rf_profile_unit(p, u)->kept_bytes;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec * 1e-6;
    printf("  units %llu, input %.3f GB in %.2f s: %.3f GB/s wall\n", (unsigned long long)rf_profile_unit_count(p),
           (double)input / 1e9, secs, (double)input / 1e9 / secs);
    /* On a shared machine the wall rate says little; per CPU-second x threads is the idle-core rate. */
    printf("  CPU %.1f s (user+sys): %.3f GB per CPU-second, x %d threads = %.3f GB/s on idle cores\n", cpu,
           (double)input / 1e9 / cpu, threads, (double)input / 1e9 / cpu * threads);
    fflush(stdout);
    rf_profile_free(p);
    rf_model_free(m);
    return 0;
}

static void measure(const char *dir, int threads, unsigned modes, unsigned configs, const char *label)
{
    printf("analyse %s, %d thread%s:\n", label, threads, threads == 1 ? "" : "s");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) _exit(run_child(dir, threads, modes, configs));
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) { perror("fork/wait"); return; }
    printf("  peak RSS %.1f MiB%s\n", (double)ru.ru_maxrss / 1024.0, WIFEXITED(status) && !WEXITSTATUS(status) ? "" : " (FAILED)");
}

int main(int argc, char **argv)
{
    rf_synth_opts so;
    rf_synth_opts_default(&so);
    so.like = "qwen3-8b";
    const char *dir = NULL, *mode = "mlx", *cands = "all";
    int threads = 2, keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--keep")) { keep = 1; continue; }
        i++;
        if (!strcmp(a, "--like")) so.like = v;
        else if (!strcmp(a, "--scale")) so.scale = atof(v);
        else if (!strcmp(a, "--layers")) so.layers = atoi(v);
        else if (!strcmp(a, "--experts")) so.experts = atoi(v);
        else if (!strcmp(a, "--vocab")) so.vocab = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--mode")) mode = v;
        else if (!strcmp(a, "--candidates")) cands = v;
        else if (!strcmp(a, "--dir")) dir = v, keep = 1;
        else { fprintf(stderr, "unknown option %s\n", a); return 2; }
    }
    rf_err err;
    unsigned modes, configs;
    if (rf_analyse_parse_modes(mode, &modes, &err) || rf_analyse_parse_candidates(cands, &configs, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    char tmpl[4096];
    if (!dir) {
        const char *t = getenv("TMPDIR");
        snprintf(tmpl, sizeof tmpl, "%s/ramfit-bench-XXXXXX", t ? t : "/tmp");
        if (!mkdtemp(tmpl)) { perror("mkdtemp"); return 1; }
        dir = tmpl;
    }
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (access(cfg, F_OK) != 0) {
        printf("synth %s (scale %g, layers %d) into %s\n", so.like, so.scale, so.layers, dir);
        fflush(stdout);
        so.threads = threads;
        double last = now(), t0 = now();
        rf_progress pr = {progress, &last, NULL};
        if (rf_synth_write(&so, dir, &pr, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        printf("  synth: %.1f s\n", now() - t0);
        /* flush the written pages so the analysis reads a settled page cache */
        sync();
    }
    measure(dir, threads, modes, configs, mode);
    if (!keep) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    return 0;
}
