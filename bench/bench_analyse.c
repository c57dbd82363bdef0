/* Analysis speed and memory on a synthetic checkpoint: every mode at every thread count, side by
 * side in one run.
 *
 *   bench_analyse [--like qwen3-8b] [--scale F] [--layers N] [--experts N] [--vocab N]
 *                 [--threads 1,2] [--modes mlx,opt,gguf] [--opt-sample N | --exact] [--candidates LIST]
 *                 [--gguf-sample N] [--tokenizer FILE]
 *
 * Mode gguf (analyse --format gguf) counts the .gguf file's fixed part, which needs a tokenizer:
 * --tokenizer FILE is copied into the synthetic model (default: ../shared/models/qwen3-dense-mini's
 * tokenizer.json, a 4096-token vocabulary: use --vocab 4096).
 *                 [--dir PATH] [--keep] [--repeat N]
 *
 * Writes the synthetic model into --dir (default: a new directory under $TMPDIR or /tmp; reused
 * if it already holds a config.json), reads it once to warm the page cache, then runs each
 * analysis in a child process and reports input GB/s (bytes of the analysed units per second,
 * wall clock), the child's CPU time and peak RSS. On a shared machine the wall rate depends on
 * the other users: input per CPU-second times the threads is the rate on idle cores, and the
 * load average is printed before and after. --repeat N keeps each configuration's best run. The
 * directory is removed afterwards unless --keep or --dir was given. */
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

typedef struct result {
    double wall, input_gb, cpu, rss_mib;
    unsigned long long units, estimated;
    int ok;
} result;

#define GGUF_MODE (1u << 8) /* "gguf": analyse --format gguf */

/* The child writes its figures to FD: wall seconds, input GB, units, estimated units. */
static uint64_t g_gguf_sample; /* --gguf-sample (0: the default) */

static int run_child(const char *dir, int threads, unsigned modes, unsigned configs, uint64_t sample, int fd)
{
    rf_model *m;
    rf_err err;
    if (rf_model_open(dir, &m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.threads = threads;
    o.modes = modes & 3u;
    o.configs = configs;
    o.opt_sample = sample;
    if (modes & GGUF_MODE) {
        o.gguf = 1;
        o.gguf_sample = sample == RF_ANALYSE_EXACT ? sample : g_gguf_sample;
    }
    double last = now();
    o.progress = (rf_progress){progress, &last, NULL};
    rf_profile *p;
    double t0 = now();
    if (rf_analyse(m, &o, &p, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    double secs = now() - t0;
    uint64_t input = 0, est = 0;
    for (uint64_t u = 0; u < rf_profile_unit_count(p); u++) {
        input += rf_profile_unit(p, u)->nparams * rf_dtype_size(RF_DT_BF16);
        est += rf_profile_unit(p, u)->estimated != 0;
    }
    char line[256];
    int n = snprintf(line, sizeof line, "%.9g %.9g %llu %llu\n", secs, (double)input / 1e9,
                     (unsigned long long)rf_profile_unit_count(p), (unsigned long long)est);
    int ok = write(fd, line, (size_t)n) == n;
    rf_profile_free(p);
    rf_model_free(m);
    return ok ? 0 : 1;
}

static result measure(const char *dir, int threads, unsigned modes, unsigned configs, uint64_t sample)
{
    result r = {0};
    int fds[2];
    if (pipe(fds)) { perror("pipe"); return r; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        _exit(run_child(dir, threads, modes, configs, sample, fds[1]));
    }
    close(fds[1]);
    char buf[256] = {0};
    ssize_t got = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) { perror("fork/wait"); return r; }
    r.cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
            (double)ru.ru_stime.tv_usec * 1e-6;
    r.rss_mib = (double)ru.ru_maxrss / 1024.0;
    r.ok = got > 0 && WIFEXITED(status) && !WEXITSTATUS(status) &&
           sscanf(buf, "%lf %lf %llu %llu", &r.wall, &r.input_gb, &r.units, &r.estimated) == 4;
    return r;
}

static void loadavg(const char *when)
{
    double l[3];
    if (getloadavg(l, 3) == 3) printf("load average %s: %.2f %.2f %.2f (%ld CPUs online)\n", when, l[0], l[1], l[2],
                                      sysconf(_SC_NPROCESSORS_ONLN));
}

/* Read every file of DIR once, so that the first measurement does not pay for the disk. */
static void warm(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "cat '%s'/*.safetensors > /dev/null", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not read %s\n", dir);
}

int main(int argc, char **argv)
{
    rf_synth_opts so;
    rf_synth_opts_default(&so);
    so.like = "qwen3-8b";
    const char *dir = NULL, *modes_arg = "mlx,opt", *cands = "all", *threads_arg = "1,2";
    const char *tokenizer = "../shared/models/qwen3-dense-mini/tokenizer.json";
    int keep = 0, repeat = 1;
    uint64_t sample = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--keep")) { keep = 1; continue; }
        if (!strcmp(a, "--exact")) { sample = RF_ANALYSE_EXACT; continue; }
        i++;
        if (!strcmp(a, "--like")) so.like = v;
        else if (!strcmp(a, "--scale")) so.scale = atof(v);
        else if (!strcmp(a, "--layers")) so.layers = atoi(v);
        else if (!strcmp(a, "--experts")) so.experts = atoi(v);
        else if (!strcmp(a, "--vocab")) so.vocab = atoi(v);
        else if (!strcmp(a, "--threads")) threads_arg = v;
        else if (!strcmp(a, "--modes") || !strcmp(a, "--mode")) modes_arg = v;
        else if (!strcmp(a, "--candidates")) cands = v;
        else if (!strcmp(a, "--opt-sample")) sample = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--gguf-sample")) g_gguf_sample = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--tokenizer")) tokenizer = v;
        else if (!strcmp(a, "--repeat")) repeat = atoi(v) > 0 ? atoi(v) : 1;
        else if (!strcmp(a, "--dir")) dir = v, keep = 1;
        else { fprintf(stderr, "unknown option %s\n", a); return 2; }
    }
    rf_err err;
    unsigned configs;
    if (rf_analyse_parse_candidates(cands, &configs, &err)) {
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
        so.threads = 0;
        double last = now(), t0 = now();
        rf_progress pr = {progress, &last, NULL};
        if (rf_synth_write(&so, dir, &pr, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        printf("  synth: %.1f s\n", now() - t0);
        sync();
    }
    char tokdst[4200];
    snprintf(tokdst, sizeof tokdst, "%s/tokenizer.json", dir);
    if (access(tokdst, F_OK) != 0 && access(tokenizer, R_OK) == 0) {
        char cmd[8600];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", tokenizer, tokdst);
        if (system(cmd) != 0) fprintf(stderr, "could not copy %s\n", tokenizer);
    }
    warm(dir);
    printf("bench_analyse %s: simd %s, opt sample %s\n", dir,
           rf_cpu_features() & RF_CPU_AVX512 ? "avx512" : rf_cpu_features() & RF_CPU_AVX2 ? "avx2" : "off",
           sample == RF_ANALYSE_EXACT ? "exact" : sample ? "custom" : "default (4096 groups)");
    loadavg("before");
    printf("%-5s %7s %6s %9s %8s %9s %8s %10s %14s %9s %9s\n", "mode", "threads", "units", "estimated", "input GB", "wall s",
           "GB/s", "CPU s", "GB/s idle-core", "GB/s/thr", "RSS MiB");
    /* the threads loop outside the modes loop: each mode's figures at a thread count are taken
     * moments apart, for ratios between modes on a machine whose load changes */
    char targ[256];
    snprintf(targ, sizeof targ, "%s", threads_arg);
    for (char *tp = strtok(targ, ","); tp; tp = strtok(NULL, ",")) {
        int threads = atoi(tp);
        char marg[64];
        snprintf(marg, sizeof marg, "%s", modes_arg);
        char *save = NULL;
        for (char *mp = strtok_r(marg, ",", &save); mp; mp = strtok_r(NULL, ",", &save)) {
            unsigned modes = GGUF_MODE;
            if (strcmp(mp, "gguf") && rf_analyse_parse_modes(mp, &modes, &err)) { fprintf(stderr, "%s\n", err.msg); return 2; }
            result best = {0};
            for (int rep = 0; rep < repeat; rep++) {
                result r = measure(dir, threads, modes, configs, sample);
                if (r.ok && (!best.ok || r.wall < best.wall)) best = r;
            }
            if (!best.ok) {
                printf("%-5s %7d FAILED\n", mp, threads);
                continue;
            }
            double idle = best.input_gb / best.cpu * threads;
            printf("%-5s %7d %6llu %9llu %8.3f %9.2f %8.3f %10.2f %14.3f %9.3f %9.1f\n", mp, threads, best.units, best.estimated,
                   best.input_gb, best.wall, best.input_gb / best.wall, best.cpu, idle, idle / threads, best.rss_mib);
            fflush(stdout);
        }
    }
    loadavg("after");
    if (!keep) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    return 0;
}
