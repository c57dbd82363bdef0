/* GPTQ throughput (src/quant/gptq.c): the factorisation of a d x d Hessian (1 thread: thread CPU time,
 * and 2 threads: wall time) and the sweep of 256 rows at 4/64 on both grids, against round-to-nearest
 * of the same rows, d = 1024, 2048, 4096 (or the sizes given). The Hessian is X^T X / N of correlated
 * random inputs. Usage: bench_gptq [d ...] */
#include "ramfit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return ((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static double normal(void)
{
    double u = uniform();
    return sqrt(-2 * log(u > 1e-300 ? u : 1e-300)) * cos(6.283185307179586 * uniform());
}

static double now(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const rf_err *e)
{
    fprintf(stderr, "bench_gptq: %s\n", e->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    uint64_t sizes[8] = {1024, 2048, 4096};
    int ns = 3;
    if (argc > 1) {
        ns = 0;
        for (int i = 1; i < argc && ns < 8; i++) sizes[ns++] = strtoull(argv[i], NULL, 10);
    }
    rf_pool *pool;
    rf_err err;
    if (rf_pool_create(2, &pool, &err)) die(&err);
    printf("%6s %12s %12s %14s %14s %14s\n", "d", "factor 1T s", "factor 2T s", "gptq mlx row/s", "gptq opt row/s",
           "rtn opt row/s");
    for (int s = 0; s < ns; s++) {
        uint64_t d = sizes[s], rows = 256, ntok = 64;
        /* H = X^T X / N with X = Z M + noise: 64 factors of rank one plus a diagonal */
        float *h = calloc(d * (d + 1) / 2, sizeof(float));
        double *m = malloc(64 * d * sizeof(double)), *x = malloc(d * sizeof(double));
        for (uint64_t i = 0; i < 64 * d; i++) m[i] = normal();
        double *hd = calloc(d * d, sizeof(double));
        for (uint64_t t = 0; t < ntok; t++) {
            double z = normal();
            for (uint64_t j = 0; j < d; j++) x[j] = z * m[(t % 64) * d + j];
            for (uint64_t i = 0; i < d; i++)
                for (uint64_t j = i; j < d; j++) hd[i * d + j] += x[i] * x[j];
        }
        for (uint64_t i = 0, o = 0; i < d; i++)
            for (uint64_t j = i; j < d; j++, o++) h[o] = (float)(hd[i * d + j] / (double)ntok + (i == j));
        free(hd);
        uint16_t *w = malloc(rows * d * 2);
        for (uint64_t i = 0; i < rows * d; i++) w[i] = rf_f32_to_bf16((float)(0.02 * normal()));
        uint32_t *packed = malloc(rows * d / 2);
        uint16_t *sc = malloc(rows * d / 64 * 2), *bi = malloc(rows * d / 64 * 2);
        rf_gptq *g1, *g2;
        double t0 = now(CLOCK_THREAD_CPUTIME_ID);
        if (rf_gptq_prepare(h, d, 0.01, NULL, &g1, &err)) die(&err);
        double f1 = now(CLOCK_THREAD_CPUTIME_ID) - t0;
        t0 = now(CLOCK_MONOTONIC);
        if (rf_gptq_prepare(h, d, 0.01, pool, &g2, &err)) die(&err);
        double f2 = now(CLOCK_MONOTONIC) - t0;
        double rate[3];
        for (int k = 0; k < 3; k++) {
            t0 = now(CLOCK_THREAD_CPUTIME_ID);
            rf_status st = k < 2 ? rf_gptq_quantize(g1, RF_DT_BF16, w, rows, d, 4, 64, k ? RF_QMODE_OPT : RF_QMODE_MLX,
                                                    RF_DT_BF16, packed, sc, bi, &err)
                                 : rf_quant_quantize(RF_DT_BF16, w, rows, d, 4, 64, RF_QMODE_OPT, RF_DT_BF16, packed, sc, bi, &err);
            if (st) die(&err);
            rate[k] = (double)rows / (now(CLOCK_THREAD_CPUTIME_ID) - t0);
        }
        printf("%6llu %12.3f %12.3f %14.0f %14.0f %14.0f\n", (unsigned long long)d, f1, f2, rate[0], rate[1], rate[2]);
        rf_gptq_free(g1);
        rf_gptq_free(g2);
        free(h), free(m), free(x), free(w), free(packed), free(sc), free(bi);
    }
    rf_pool_free(pool);
    return 0;
}
