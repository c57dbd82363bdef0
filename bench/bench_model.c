/* One model's speed as llama-bench measures it, for the side-by-side script
 * (bench/llamacpp_side.sh): prompt = one batch of P tokens from an empty cache (logits of the
 * last token only), decode = N tokens one at a time from an empty cache; each after a warm-up,
 * repeated R times. Both engine modes: exact (float products, what ppl/kld use) and fast (8-bit
 * activations, what generate uses); --kld TEXT also scores the fast mode against the exact one
 * on the text (KL-divergence per token, top-1 agreement, both perplexities).
 * usage: bench_model MODEL_DIR [--threads N] [-p P] [-n N] [-r R] [--mode exact|fast|both|none]
 *                   [--kld TEXT] [--kld-tokens N] [--ctx N] [--prof]
 * Prints one line per measurement: "<mode> pp<P> <tokens/s>" / "<mode> tg<N> <tokens/s>" and
 * "kld <mean> <p99> <top1> <ppl exact> <ppl fast> <tokens>". */
#include "engine/engine_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int die(const char *what, const rf_err *err)
{
    fprintf(stderr, "bench_model: %s: %s\n", what, err->msg);
    return 1;
}

static int g_prof;

/* With --prof: where the measured seconds went (products timed on the caller; attention CPU time
 * divided by the threads; the rest: norms, RoPE, SwiGLU, the KV cache, embedding, pool waits). */
static void prof_line(const char *mode, const char *what, double total, int threads)
{
    double s[RF_PROF_N];
    uint64_t n[RF_PROF_N];
    rf_prof_read(s, n, 1);
    double mm = s[RF_PROF_MATMUL] + s[RF_PROF_MATMUL_Q8], at = s[RF_PROF_ATTEND] / threads;
    printf("  %s %s %.1f ms: products %.1f ms (%.0f%%, %llu calls), attention ~%.1f ms (%.0f%%), other %.1f ms (%.0f%%)\n",
           mode, what, total * 1e3, mm * 1e3, 100 * mm / total,
           (unsigned long long)(n[RF_PROF_MATMUL] + n[RF_PROF_MATMUL_Q8]), at * 1e3, 100 * at / total,
           (total - mm - at) * 1e3, 100 * (total - mm - at) / total);
}

static int run_mode(const char *dir, int threads, int fast, int P, int N, int R)
{
    rf_engine_opts o = {threads, P > N ? P + 1 : N + 1, P > 0 ? P : 1};
    rf_engine *e;
    rf_err err;
    if (rf_engine_open(dir, &o, &e, &err)) return die(dir, &err);
    rf_engine_set_fast(e, fast);
    int V = rf_engine_vocab(e);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(P > N ? P : N));
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!ids || !logits) return 1;
    for (int i = 0; i < (P > N ? P : N); i++) ids[i] = (int32_t)((uint64_t)(i * 7919 + 13) % (uint64_t)V);
    const char *mode = fast ? "fast" : "exact";
    for (int r = 0; r <= R; r++) { /* r == 0: warm-up (page-in, caches) */
        if (P > 0) {
            rf_engine_reset(e);
            double t0 = now();
            if (rf_engine_forward(e, ids, P, logits, 0, &err)) return die("prompt", &err);
            double t = now() - t0;
            if (r) printf("%s pp%d %.3f\n", mode, P, P / t);
            if (r && g_prof) prof_line(mode, "prompt", t, threads);
            rf_prof_read(NULL, NULL, 1);
        }
        if (N > 0) {
            rf_engine_reset(e);
            double t0 = now();
            for (int i = 0; i < N; i++)
                if (rf_engine_forward(e, ids + i, 1, logits, 0, &err)) return die("decode", &err);
            double t = now() - t0;
            if (r) printf("%s tg%d %.3f\n", mode, N, N / t);
            if (r && g_prof) prof_line(mode, "decode", t, threads);
            rf_prof_read(NULL, NULL, 1);
        }
        fflush(stdout);
    }
    free(ids);
    free(logits);
    rf_engine_free(e);
    return 0;
}

static int run_kld(const char *dir, int threads, const char *text, uint64_t max_tokens, int ctx)
{
    rf_err err;
    rf_tok *tok;
    if (rf_tok_load(dir, &tok, &err)) return die(dir, &err);
    FILE *f = fopen(text, "rb");
    if (!f) { perror(text); return 1; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) { fprintf(stderr, "bench_model: cannot read %s\n", text); return 1; }
    fclose(f);
    int32_t *ids;
    uint64_t n;
    if (rf_tok_encode(tok, buf, (uint64_t)len, 0, &ids, &n, &err)) return die(text, &err);
    rf_engine_opts o = {threads, ctx, ctx};
    rf_engine *ex, *fa;
    if (rf_engine_open(dir, &o, &ex, &err) || rf_engine_open(dir, &o, &fa, &err)) return die(dir, &err);
    rf_engine_set_fast(fa, 1);
    int bos = rf_tok_adds_bos(tok) ? rf_tok_bos_id(tok) : -1;
    rf_ppl_opts po = {ctx, RF_PPL_FULL, bos, max_tokens, {0}};
    rf_kld_result r;
    if (rf_eval_kld(ex, fa, ids, n, &po, &r, &err)) return die("kld", &err);
    printf("kld %.6f %.6f %.4f %.4f %.4f %llu\n", r.kld_mean, r.kld_p99, r.top1_agree, r.base.ppl, r.quant.ppl,
           (unsigned long long)r.base.tokens);
    rf_engine_free(ex);
    rf_engine_free(fa);
    free(ids);
    free(buf);
    rf_tok_free(tok);
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *mode = "both", *kld = NULL;
    int threads = 2, P = 128, N = 32, R = 3, ctx = 256;
    uint64_t kld_tokens = 4096;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--threads") && v) threads = atoi(v), i++;
        else if (!strcmp(a, "-p") && v) P = atoi(v), i++;
        else if (!strcmp(a, "-n") && v) N = atoi(v), i++;
        else if (!strcmp(a, "-r") && v) R = atoi(v), i++;
        else if (!strcmp(a, "--mode") && v) mode = v, i++;
        else if (!strcmp(a, "--kld") && v) kld = v, i++;
        else if (!strcmp(a, "--kld-tokens") && v) kld_tokens = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--ctx") && v) ctx = atoi(v), i++;
        else if (!strcmp(a, "--prof")) g_prof = 1;
        else if (a[0] != '-' && !dir) dir = a;
        else {
            fprintf(stderr, "usage: bench_model MODEL_DIR [--threads N] [-p P] [-n N] [-r R] [--mode exact|fast|both|none]\n"
                            "                   [--kld TEXT] [--kld-tokens N] [--ctx N] [--prof]\n");
            return 2;
        }
    }
    rf_prof_enable(g_prof);
    if (!dir || P < 0 || N < 0 || R < 1 || threads < 1) { fprintf(stderr, "bench_model: bad arguments\n"); return 2; }
    int ex = !strcmp(mode, "exact") || !strcmp(mode, "both"), fa = !strcmp(mode, "fast") || !strcmp(mode, "both");
    if (!ex && !fa && strcmp(mode, "none")) { fprintf(stderr, "bench_model: --mode exact|fast|both|none\n"); return 2; }
    if (ex && (P || N) && run_mode(dir, threads, 0, P, N, R)) return 1;
    if (fa && (P || N) && run_mode(dir, threads, 1, P, N, R)) return 1;
    if (kld && run_kld(dir, threads, kld, kld_tokens, ctx)) return 1;
    return 0;
}
