/* Encoding speed of each available tokenizer on wiki.test.raw, one thread.
 * usage: bench_tokenizer [TEXT_FILE] [REPEATS]
 * Each repeat loads a fresh tokenizer (cold word cache) and encodes the whole file once; the
 * best repeat is reported, plus one more encode on the warm handle. */
#include "ramfit.h"

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

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static const char *model_dir(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/models/%s", RF_SOURCE_DIR, name);
    if (access(buf, R_OK) == 0) return buf;
    snprintf(buf, cap, "%s/models/%s", RF_SHARED_DIR, name);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static int encode_once(const char *dir, const char *text, size_t n, rf_tok **keep, uint64_t *count, double *secs)
{
    rf_err err;
    rf_tok *tok;
    if (rf_tok_load(dir, &tok, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        return 0;
    }
    int32_t *ids;
    double t0 = now();
    if (rf_tok_encode(tok, text, n, 0, &ids, count, &err)) {
        fprintf(stderr, "%s: %s\n", dir, err.msg);
        rf_tok_free(tok);
        return 0;
    }
    *secs = now() - t0;
    free(ids);
    if (keep) *keep = tok;
    else rf_tok_free(tok);
    return 1;
}

int main(int argc, char **argv)
{
    char def[4096];
    snprintf(def, sizeof def, "%s/evaltext/wiki.test.raw", RF_SHARED_DIR);
    const char *path = argc > 1 ? argv[1] : def;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    if (reps < 1) reps = 1;
    size_t n;
    char *text = read_all(path, &n);
    if (!text) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    printf("encoding %s (%zu bytes), 1 thread, best of %d cold runs\n", path, n, reps);
    printf("%-18s %10s %10s %12s %12s\n", "tokenizer", "tokens", "ms", "MB/s cold", "MB/s warm");
    const char *names[] = {"stories260k", "babyllama-tok105", "qwen3-dense-mini"};
    for (int k = 0; k < 3; k++) {
        char buf[4096];
        const char *dir = model_dir(names[k], buf, sizeof buf);
        if (!dir) {
            printf("%-18s (not found)\n", names[k]);
            continue;
        }
        double best = 1e30, secs, warm = 0;
        uint64_t count = 0;
        rf_tok *tok = NULL;
        for (int r = 0; r < reps; r++) {
            if (!encode_once(dir, text, n, r == reps - 1 ? &tok : NULL, &count, &secs)) return 1;
            if (secs < best) best = secs;
        }
        rf_err err;
        int32_t *ids;
        uint64_t c2;
        double t0 = now();
        if (rf_tok_encode(tok, text, n, 0, &ids, &c2, &err) == RF_OK) {
            warm = now() - t0;
            free(ids);
        }
        rf_tok_free(tok);
        printf("%-18s %10llu %10.1f %12.1f %12.1f\n", names[k], (unsigned long long)count, best * 1e3, (double)n / best / 1e6,
               warm > 0 ? (double)n / warm / 1e6 : 0.0);
    }
    free(text);
    return 0;
}
