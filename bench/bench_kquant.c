/* ggml block-type kernels: encode and decode throughput of every type ramfit writes, the scalar
 * reference and the fast path side by side in one run, in millions of weights per second on one
 * thread (thread CPU time, so other load on the machine does not count), best of the repeats.
 * Input: rows of 4096 normal weights with 1 row in 16 heavy-tailed (as bench_quant).
 * Usage: bench_kquant [rows (256)] [repeats (3)] */
#include "quant/kquant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLS 4096

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return ((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double rate_encode(rfk_encode_fn f, const float *x, uint64_t rows, void *out, uint64_t rb, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_now();
        for (uint64_t i = 0; i < rows; i++) f(x + i * COLS, (uint8_t *)out + i * rb, COLS);
        double t = cpu_now() - t0;
        if (t < best) best = t;
    }
    return (double)rows * COLS / best / 1e6;
}

static double rate_decode(rfk_decode_fn f, const void *q, uint64_t rows, uint64_t rb, float *y, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps * 10; r++) {
        double t0 = cpu_now();
        for (uint64_t i = 0; i < rows; i++) f((const uint8_t *)q + i * rb, y, COLS);
        double t = cpu_now() - t0;
        if (t < best) best = t;
    }
    return (double)rows * COLS / best / 1e6;
}

int main(int argc, char **argv)
{
    uint64_t rows = argc > 1 ? strtoull(argv[1], NULL, 10) : 256;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    float *x = malloc(sizeof(float) * rows * COLS), *y = malloc(sizeof(float) * COLS);
    uint8_t *a = malloc(rows * COLS * 2), *b = malloc(rows * COLS * 2);
    if (!x || !y || !a || !b) return 1;
    for (uint64_t i = 0; i < rows * COLS; i++) {
        double u = sqrt(-2 * log(uniform() + 1e-300)) * cos(6.283185307179586 * uniform());
        if ((i / COLS) % 16 == 0) u *= 1 + 3 * uniform() * uniform() * uniform();
        x[i] = (float)(u * 0.02);
    }
    static const int types[] = {RF_GT_Q8_0, RF_GT_Q6_K, RF_GT_Q5_K, RF_GT_Q4_K, RF_GT_Q3_K, RF_GT_Q2_K, RF_GT_Q4_0,
                                RF_GT_Q4_1, RF_GT_Q5_0, RF_GT_Q5_1, RF_GT_IQ4_NL, RF_GT_IQ4_XS};
    unsigned feats = rf_cpu_features();
    printf("bench_kquant: %llu rows x %d, 1 thread, M weights/s (best of %d); fast = the path rf_gquant_rows uses "
           "on this CPU (%s)\n", (unsigned long long)rows, COLS, reps, feats & RF_CPU_AVX2 ? "AVX2" : "no AVX2");
    printf("%-7s %12s %12s %8s %12s %12s %8s %s\n", "type", "encode ref", "encode fast", "x", "decode ref",
           "decode fast", "x", "fast == ref");
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int t = types[k];
        uint64_t rb = rf_gtype_row_bytes(t, COLS);
        double er = rate_encode(rfk_encoder_ref(t), x, rows, a, rb, reps);
        double ef = rate_encode(rfk_encoder(t), x, rows, b, rb, reps);
        int same = !memcmp(a, b, rows * rb);
        double dr = rate_decode(rfk_decoder_ref(t), a, rows, rb, y, reps);
        double df = rate_decode(rfk_decoder(t), a, rows, rb, y, reps);
        printf("%-7s %12.1f %12.1f %7.2fx %12.1f %12.1f %7.2fx %s\n", rf_gtype_name(t), er, ef, ef / er, dr, df,
               df / dr, same ? "yes" : "NO");
    }
    free(x);
    free(y);
    free(a);
    free(b);
    return 0;
}
