/* Quantization kernel throughput on a synthetic 4096 x 4096 BF16 matrix (normal rows, 1 in 16
 * rows heavy-tailed Student-t), in elements/s, 1 and 2 threads (row blocks on rf_pool), best
 * of several repeats (1T: thread CPU time; 2T: wall time). Usage: bench_quant [rows (4096)] [repeats (3)] [opt_rows (256)] */
#include "ramfit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLS 4096
#define BLOCK 64 /* rows per pool task */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return ((z ^ (z >> 31)) >> 11) * 0x1p-53;
}
static double normal(void)
{
    double u = uniform();
    return sqrt(-2 * log(u > 1e-300 ? u : 1e-300)) * cos(6.283185307179586 * uniform());
}

/* Wall time for 2 threads; CPU time of the calling thread for 1 thread, so that other
 * processes sharing the cores do not count against single-thread figures. */
static double now(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct job {
    const uint16_t *w;
    uint64_t rows;
    int kind; /* 0 quantize, 1 error_all, 2 error one config */
    int bits, gs;
    rf_qmode mode;
    uint32_t *packed;
    uint16_t *scales, *biases;
    rf_qerr *out; /* per block: RF_QCFG_N slots */
} job;

static void run_block(void *ctx, uint64_t blk, int worker)
{
    (void)worker;
    job *j = ctx;
    uint64_t r0 = blk * BLOCK, nr = j->rows - r0 < BLOCK ? j->rows - r0 : BLOCK;
    const uint16_t *w = j->w + r0 * COLS;
    rf_err err;
    rf_status st = RF_OK;
    if (j->kind == 0)
        st = rf_quant_quantize(RF_DT_BF16, w, nr, COLS, j->bits, j->gs, j->mode, RF_DT_BF16,
                               j->packed + r0 * COLS * j->bits / 32, j->scales + r0 * COLS / j->gs,
                               j->biases + r0 * COLS / j->gs, &err);
    else if (j->kind == 1)
        st = rf_quant_error_all(RF_DT_BF16, w, nr, COLS, j->mode, RF_DT_BF16, j->out + blk * RF_QCFG_N, &err);
    else
        st = rf_quant_error(RF_DT_BF16, w, nr, COLS, j->bits, j->gs, j->mode, RF_DT_BF16, j->out + blk * RF_QCFG_N, &err);
    if (st != RF_OK) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        exit(1);
    }
}

/* Best-of-reps elements/s for job j on pool p (NULL: one thread). */
static double measure(rf_pool *p, job *j, int reps)
{
    double best = 1e30;
    uint64_t nblk = (j->rows + BLOCK - 1) / BLOCK;
    clockid_t clk = p ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID;
    for (int r = 0; r < reps; r++) {
        double t0 = now(clk);
        rf_pool_run(p, nblk, run_block, j);
        double t = now(clk) - t0;
        if (t < best) best = t;
    }
    return (double)j->rows * COLS / best;
}

int main(int argc, char **argv)
{
    uint64_t rows = argc > 1 ? strtoull(argv[1], NULL, 10) : 4096;
    int reps = argc > 2 ? atoi(argv[2]) : 3;
    uint64_t opt_rows = argc > 3 ? strtoull(argv[3], NULL, 10) : 256;
    if (opt_rows > rows) opt_rows = rows;
    uint64_t n = rows * COLS;
    uint16_t *w = malloc(n * 2);
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c = 0; c < COLS; c++) {
            double x = normal();
            if (r % 16 == 7) x = normal() / sqrt((pow(normal(), 2) + pow(normal(), 2) + pow(normal(), 2)) / 3);
            w[r * COLS + c] = rf_f32_to_bf16((float)(x * 0.02));
        }
    uint64_t nblk = (rows + BLOCK - 1) / BLOCK;
    job j = {.w = w, .rows = rows, .packed = malloc(n), .scales = malloc(n / 16), .biases = malloc(n / 16),
             .out = malloc(nblk * RF_QCFG_N * sizeof(rf_qerr))};
    rf_pool *pool = NULL;
    rf_err err;
    if (rf_pool_create(2, &pool, &err) != RF_OK) {
        fprintf(stderr, "bench_quant: %s\n", err.msg);
        return 1;
    }
    printf("bench_quant: %llu x %d BF16, best of %d, simd %s\n", (unsigned long long)rows, COLS, reps,
           rf_cpu_features() & RF_CPU_AVX512 ? "avx512" : rf_cpu_features() & RF_CPU_AVX2 ? "avx2" : "off");

    j.kind = 1;
    j.mode = RF_QMODE_MLX;
    printf("error_all mlx (18 configs)   1T %.3g el/s   2T %.3g el/s\n", measure(NULL, &j, reps), measure(pool, &j, reps));
    j.kind = 2;
    j.bits = 4;
    j.gs = 64;
    printf("error mlx 4/64 (1 config)    1T %.3g el/s   2T %.3g el/s\n", measure(NULL, &j, reps), measure(pool, &j, reps));

    j.kind = 0;
    printf("quantize mlx, bf16 scales:   config   1T el/s     2T el/s\n");
    for (int c = 0; c < RF_QCFG_N; c++) {
        j.bits = rf_qbits[c / RF_QGS_N];
        j.gs = rf_qgs[c % RF_QGS_N];
        double a = measure(NULL, &j, reps), b = measure(pool, &j, reps);
        printf("                             %d/%-3d    %.3g     %.3g\n", j.bits, j.gs, a, b);
    }

    j.rows = opt_rows;
    j.mode = RF_QMODE_OPT;
    /* The opt search with each kernel set this CPU has, side by side (1T: thread CPU time). */
    const unsigned all = rf_cpu_features(), avx2 = RF_CPU_AVX2 | RF_CPU_FMA | RF_CPU_F16C;
    printf("opt mode on %llu rows, 1T el/s:  config   error avx512  error avx2   quantize avx512  quantize avx2   error 2T\n",
           (unsigned long long)opt_rows);
    static const int oc[4][2] = {{2, 32}, {4, 64}, {4, 128}, {8, 64}};
    for (int i = 0; i < 4; i++) {
        j.bits = oc[i][0];
        j.gs = oc[i][1];
        double r[2][2];
        for (int kind = 0; kind < 2; kind++)
            for (int v = 0; v < 2; v++) {
                rf_cpu_set_mask(v ? avx2 : ~0u);
                j.kind = kind ? 0 : 2;
                r[kind][v] = (all & RF_CPU_AVX512) || v ? measure(NULL, &j, reps) : 0;
            }
        rf_cpu_set_mask(~0u);
        j.kind = 2;
        double b = measure(pool, &j, reps);
        printf("                                 %d/%-3d    %.3g       %.3g      %.3g          %.3g         %.3g\n", j.bits,
               j.gs, r[0][0], r[0][1], r[1][0], r[1][1], b);
    }
    j.kind = 1;
    printf("error_all opt (18 configs)   1T %.3g el/s   2T %.3g el/s\n", measure(NULL, &j, reps), measure(pool, &j, reps));

    rf_cpu_set_mask(0);
    j.rows = opt_rows;
    j.mode = RF_QMODE_MLX;
    printf("scalar reference (RAMFIT_SIMD=0), %llu rows:\n", (unsigned long long)opt_rows);
    printf("error_all mlx                1T %.3g el/s\n", measure(NULL, &j, 1));
    j.kind = 0;
    j.bits = 4;
    j.gs = 64;
    printf("quantize mlx 4/64            1T %.3g el/s\n", measure(NULL, &j, 1));

    rf_pool_free(pool);
    free(j.packed);
    free(j.scales);
    free(j.biases);
    free(j.out);
    free(w);
    return 0;
}
