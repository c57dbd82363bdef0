/* GPTQ (src/quant/gptq.c) against a plain dense reference written here: the textbook form of the
 * algorithm (Frantar et al. 2022, Algorithm 1 without the lazy batches): the explicit inverse of the
 * damped Hessian by Gauss-Jordan elimination in double, and after each column the update of the
 * remaining weights by -err / Hinv[k][k] * Hinv[k][k+1..] and the removal of column k from Hinv
 * (Hinv -= Hinv[:,k] Hinv[k,:] / Hinv[k][k]). The library instead factors the Hessian once
 * (Cholesky, blocked) and sweeps in float in blocks of 128 columns: the two must choose the same
 * codes, and GPTQ's output error tr(dW H dW^T) must be below round-to-nearest's under the same
 * Hessian. Also: a diagonal Hessian gives exactly round-to-nearest, the bytes do not depend on
 * threads, row splits or the SIMD path, and bad input is refused. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- a toy layer */

typedef struct layer {
    uint64_t rows, cols;
    float *w;      /* rows x cols */
    float *hp;     /* packed upper triangle of H = X^T X / N */
    double *h;     /* the same, full */
} layer;

/* Inputs with correlated columns (a low-rank mix plus noise) and a few large "outlier" columns, as
 * activations have; weights Student-t. */
static void make_layer(layer *L, uint64_t rows, uint64_t cols, uint64_t ntok, double mixing, uint64_t seed)
{
    tu_rng r = {seed};
    L->rows = rows;
    L->cols = cols;
    L->w = malloc(rows * cols * sizeof(float));
    L->h = calloc(cols * cols, sizeof(double));
    L->hp = malloc(cols * (cols + 1) / 2 * sizeof(float));
    for (uint64_t i = 0; i < rows * cols; i++) L->w[i] = (float)(0.05 * tu_rng_student_t(&r, 5));
    const int K = 8;
    double *mix = malloc((size_t)K * cols * sizeof(double)), *x = malloc(cols * sizeof(double));
    for (uint64_t i = 0; i < (uint64_t)K * cols; i++) mix[i] = mixing * tu_rng_normal(&r);
    for (uint64_t t = 0; t < ntok; t++) {
        double z[8];
        for (int k = 0; k < K; k++) z[k] = tu_rng_normal(&r);
        for (uint64_t j = 0; j < cols; j++) {
            double v = tu_rng_normal(&r);
            for (int k = 0; k < K; k++) v += z[k] * mix[k * cols + j];
            if (j % 37 == 5) v *= 8; /* outlier columns */
            x[j] = (float)v;         /* float activations, as the engine's */
        }
        for (uint64_t i = 0; i < cols; i++)
            for (uint64_t j = 0; j < cols; j++) L->h[i * cols + j] += x[i] * x[j];
    }
    uint64_t o = 0;
    for (uint64_t i = 0; i < cols; i++)
        for (uint64_t j = i; j < cols; j++) {
            L->hp[o] = (float)(L->h[i * cols + j] / (double)ntok);
            L->h[i * cols + j] = L->h[j * cols + i] = L->hp[o]; /* the float H both sides use */
            o++;
        }
    free(mix);
    free(x);
}

static void free_layer(layer *L)
{
    free(L->w);
    free(L->h);
    free(L->hp);
}

/* ---------------------------------------------------------------- the reference */

/* MLX's affine parameters of a group with extremes lo, hi (MLX's quantize, docs/mlx-format.md):
 * codes from the float scale s and bias b; the stored (rounded) scale ss and bias bs dequantize. */
static float round_sd(float v, rf_dtype sd)
{
    return sd == RF_DT_BF16 ? rf_bf16_to_f32(rf_f32_to_bf16(v)) : sd == RF_DT_F16 ? rf_f16_to_f32(rf_f32_to_f16(v)) : v;
}

static void mlx_params(float lo, float hi, int bits, rf_dtype sd, float *s, float *b, float *ss, float *bs)
{
    float n = (float)((1 << bits) - 1);
    int neg = fabsf(lo) > fabsf(hi);
    float sc = (hi - lo) / n;
    if (sc < 1e-7f) sc = 1e-7f;
    if (!neg) sc = -sc;
    float edge = neg ? lo : hi, q0 = rintf(edge / sc), bias = 0;
    if (q0 != 0) {
        sc = edge / q0;
        bias = edge;
    }
    *s = sc;
    *b = bias;
    *ss = round_sd(sc, sd);
    *bs = round_sd(bias, sd);
}

/* The opt grid of a group: the library's own error-minimising search, through rf_quant_quantize. */
static void opt_params(const float *x, int gs, int bits, rf_dtype sd, float *ss, float *bs)
{
    uint32_t packed[128];
    uint16_t sc[4], bi[4];
    float scf, bif;
    if (sd == RF_DT_F32) {
        assert_int_equal(rf_quant_quantize(RF_DT_F32, x, 1, (uint64_t)gs, bits, gs, RF_QMODE_OPT, sd, packed, &scf, &bif, NULL),
                         RF_OK);
        *ss = scf;
        *bs = bif;
        return;
    }
    assert_int_equal(rf_quant_quantize(RF_DT_F32, x, 1, (uint64_t)gs, bits, gs, RF_QMODE_OPT, sd, packed, sc, bi, NULL), RF_OK);
    *ss = sd == RF_DT_BF16 ? rf_bf16_to_f32(sc[0]) : rf_f16_to_f32(sc[0]);
    *bs = sd == RF_DT_BF16 ? rf_bf16_to_f32(bi[0]) : rf_f16_to_f32(bi[0]);
}

/* Inverse by Gauss-Jordan with partial pivoting (double). */
static void invert(const double *a, double *inv, uint64_t n)
{
    double *m = malloc(n * 2 * n * sizeof(double));
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j < 2 * n; j++) m[i * 2 * n + j] = j < n ? a[i * n + j] : (j - n == i);
    for (uint64_t c = 0; c < n; c++) {
        uint64_t p = c;
        for (uint64_t i = c + 1; i < n; i++)
            if (fabs(m[i * 2 * n + c]) > fabs(m[p * 2 * n + c])) p = i;
        for (uint64_t j = 0; j < 2 * n && p != c; j++) {
            double t = m[c * 2 * n + j];
            m[c * 2 * n + j] = m[p * 2 * n + j];
            m[p * 2 * n + j] = t;
        }
        double d = m[c * 2 * n + c];
        for (uint64_t j = 0; j < 2 * n; j++) m[c * 2 * n + j] /= d;
        for (uint64_t i = 0; i < n; i++) {
            if (i == c) continue;
            double f = m[i * 2 * n + c];
            for (uint64_t j = 0; j < 2 * n; j++) m[i * 2 * n + j] -= f * m[c * 2 * n + j];
        }
    }
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = 0; j < n; j++) inv[i * n + j] = m[i * 2 * n + n + j];
    free(m);
}

/* Textbook GPTQ of every row; writes the dequantized weights into OUT and the codes into CODES (rows x cols). */
static void reference(const layer *L, int bits, int gs, rf_qmode grid, rf_dtype sd, double damp, float *out, uint8_t *codes)
{
    uint64_t n = L->cols;
    double *a = malloc(n * n * sizeof(double)), *hinv0 = malloc(n * n * sizeof(double)),
           *hi = malloc(n * n * sizeof(double)), *w = malloc(n * sizeof(double));
    double mean = 0;
    for (uint64_t i = 0; i < n; i++) mean += L->h[i * n + i];
    mean /= (double)n;
    memcpy(a, L->h, n * n * sizeof(double));
    for (uint64_t i = 0; i < n; i++) a[i * n + i] += damp * mean;
    invert(a, hinv0, n);
    float nlev = (float)((1 << bits) - 1), x[128], s = 0, b = 0, ss = 0, bs = 0;
    for (uint64_t r = 0; r < L->rows; r++) {
        memcpy(hi, hinv0, n * n * sizeof(double));
        for (uint64_t j = 0; j < n; j++) w[j] = L->w[r * n + j];
        for (uint64_t k = 0; k < n; k++) {
            if (k % (uint64_t)gs == 0) {
                float lo = INFINITY, hv = -INFINITY;
                for (int i = 0; i < gs; i++) {
                    x[i] = (float)w[k + (uint64_t)i];
                    lo = fminf(lo, x[i]);
                    hv = fmaxf(hv, x[i]);
                }
                if (grid == RF_QMODE_MLX) {
                    mlx_params(lo, hv, bits, sd, &s, &b, &ss, &bs);
                } else {
                    opt_params(x, gs, bits, sd, &ss, &bs);
                    s = ss;
                    b = bs;
                }
            }
            float q = rintf(((float)w[k] - b) / s);
            q = q > 0 ? q : 0;
            q = q < nlev ? q : nlev;
            float dq = fmaf(ss, q, bs);
            out[r * n + k] = dq;
            codes[r * n + k] = (uint8_t)q;
            double e = (w[k] - dq) / hi[k * n + k];
            for (uint64_t j = k + 1; j < n; j++) w[j] -= e * hi[k * n + j];
            for (uint64_t i = k + 1; i < n; i++) {
                double f = hi[i * n + k] / hi[k * n + k];
                for (uint64_t j = k + 1; j < n; j++) hi[i * n + j] -= f * hi[k * n + j];
            }
        }
    }
    free(a);
    free(hinv0);
    free(hi);
    free(w);
}

/* ---------------------------------------------------------------- helpers */

typedef struct qout {
    uint32_t *packed;
    void *scales, *biases;
    float *deq;
} qout;

static void qout_alloc(qout *q, uint64_t rows, uint64_t cols, int bits, int gs)
{
    q->packed = calloc(rows * cols * (uint64_t)bits / 32, 4);
    q->scales = calloc(rows * cols / (uint64_t)gs, 4);
    q->biases = calloc(rows * cols / (uint64_t)gs, 4);
    q->deq = calloc(rows * cols, 4);
}

static void qout_free(qout *q)
{
    free(q->packed);
    free(q->scales);
    free(q->biases);
    free(q->deq);
}

/* Code I of a row from MLX's LSB-first bit stream (read bit by bit, independently of the packer). */
static unsigned read_code(const uint32_t *row, uint64_t i, int b)
{
    unsigned v = 0;
    for (int j = 0; j < b; j++) {
        uint64_t bit = i * (uint64_t)b + (uint64_t)j;
        v |= ((row[bit / 32] >> (bit % 32)) & 1u) << j;
    }
    return v;
}

static size_t sd_bytes(rf_dtype sd) { return (size_t)rf_dtype_size(sd); }

static int qout_equal(const qout *a, const qout *b, uint64_t rows, uint64_t cols, int bits, int gs, rf_dtype sd)
{
    return !memcmp(a->packed, b->packed, rows * cols * (uint64_t)bits / 32 * 4) &&
           !memcmp(a->scales, b->scales, rows * cols / (uint64_t)gs * sd_bytes(sd)) &&
           !memcmp(a->biases, b->biases, rows * cols / (uint64_t)gs * sd_bytes(sd));
}

/* tr(dW H dW^T): the layer's output error on the calibration inputs (times N). */
static double out_error(const layer *L, const float *deq)
{
    uint64_t n = L->cols;
    double tot = 0, *d = malloc(n * sizeof(double));
    for (uint64_t r = 0; r < L->rows; r++) {
        for (uint64_t j = 0; j < n; j++) d[j] = (double)L->w[r * n + j] - deq[r * n + j];
        for (uint64_t i = 0; i < n; i++) {
            double s = 0;
            for (uint64_t j = 0; j < n; j++) s += L->h[i * n + j] * d[j];
            tot += d[i] * s;
        }
    }
    free(d);
    return tot;
}

static void run_gptq(const layer *L, rf_gptq *g, int bits, int gs, rf_qmode grid, rf_dtype sd, qout *q)
{
    rf_err err;
    TU_OK(rf_gptq_quantize(g, RF_DT_F32, L->w, L->rows, L->cols, bits, gs, grid, sd, q->packed, q->scales, q->biases, &err),
          &err);
    TU_OK(rf_quant_dequantize(q->packed, q->scales, q->biases, sd, L->rows, L->cols, bits, gs, q->deq, &err), &err);
}

static void run_rtn(const layer *L, int bits, int gs, rf_qmode grid, rf_dtype sd, qout *q)
{
    rf_err err;
    TU_OK(rf_quant_quantize(RF_DT_F32, L->w, L->rows, L->cols, bits, gs, grid, sd, q->packed, q->scales, q->biases, &err), &err);
    TU_OK(rf_quant_dequantize(q->packed, q->scales, q->biases, sd, L->rows, L->cols, bits, gs, q->deq, &err), &err);
}

/* ---------------------------------------------------------------- tests */

/* The library's codes are the reference's (float sweep against a double textbook run: a handful of
 * near-ties may round the other way), its output error the same within 1%, and below RTN's. */
static void check_against_reference(uint64_t rows, uint64_t cols, int bits, int gs, rf_qmode grid, rf_dtype sd,
                                    double mixing, double min_same, double err_tol, double max_ratio)
{
    layer L;
    make_layer(&L, rows, cols, 4 * cols, mixing, 1000 + cols + (uint64_t)bits * 7 + (uint64_t)gs + grid);
    rf_err err;
    rf_gptq *g;
    TU_OK(rf_gptq_prepare(L.hp, cols, 0.01, NULL, &g, &err), &err);
    qout a, r;
    qout_alloc(&a, rows, cols, bits, gs);
    qout_alloc(&r, rows, cols, bits, gs);
    run_gptq(&L, g, bits, gs, grid, sd, &a);
    float *ref = malloc(rows * cols * sizeof(float));
    uint8_t *rc = malloc(rows * cols);
    reference(&L, bits, gs, grid, sd, 0.01, ref, rc);
    uint64_t same = 0, wpr = cols / 32 * (uint64_t)bits;
    for (uint64_t i = 0; i < rows * cols; i++) same += read_code(a.packed + i / cols * wpr, i % cols, bits) == rc[i];
    double e_lib = out_error(&L, a.deq), e_ref = out_error(&L, ref);
    run_rtn(&L, bits, gs, grid, sd, &r);
    double e_rtn = out_error(&L, r.deq);
    print_message("gptq %llux%llu %d/%d %s mixing %g: %.4f%% codes as the reference, error lib %.6g ref %.6g rtn %.6g (%.3f)\n",
                  (unsigned long long)rows, (unsigned long long)cols, bits, gs, grid == RF_QMODE_MLX ? "mlx" : "opt",
                  mixing, 100.0 * (double)same / (double)(rows * cols), e_lib, e_ref, e_rtn, e_lib / e_rtn);
    assert_true((double)same >= min_same * (double)(rows * cols));
    assert_true(fabs(e_lib - e_ref) <= err_tol * e_ref);
    assert_true(e_lib < max_ratio * e_rtn);
    free(ref);
    free(rc);
    qout_free(&a);
    qout_free(&r);
    rf_gptq_free(g);
    free_layer(&L);
}

static void test_reference_mlx(void **state)
{
    (void)state;
    check_against_reference(24, 256, 4, 64, RF_QMODE_MLX, RF_DT_BF16, 0.3, 0.999, 0.001, 0.8);
    check_against_reference(16, 320, 3, 32, RF_QMODE_MLX, RF_DT_F16, 0.3, 0.999, 0.001, 0.8); /* a short last block */
    check_against_reference(16, 256, 2, 128, RF_QMODE_MLX, RF_DT_F32, 0.3, 0.999, 0.001, 0.8);
    check_against_reference(8, 128, 8, 64, RF_QMODE_MLX, RF_DT_BF16, 0.3, 0.999, 0.001, 0.9);
    /* strongly correlated inputs: many near-equivalent choices, so rounding differences between the
     * float sweep and the double reference could spread (none do here) */
    check_against_reference(24, 256, 4, 64, RF_QMODE_MLX, RF_DT_BF16, 3, 0.99, 0.01, 0.1);
}

static void test_reference_opt(void **state)
{
    (void)state;
    check_against_reference(24, 256, 4, 64, RF_QMODE_OPT, RF_DT_BF16, 0.3, 0.999, 0.001, 0.8);
    check_against_reference(16, 192, 3, 32, RF_QMODE_OPT, RF_DT_BF16, 0.3, 0.999, 0.001, 0.8);
    check_against_reference(24, 256, 4, 64, RF_QMODE_OPT, RF_DT_BF16, 3, 0.99, 0.01, 0.1);
}

/* With a diagonal Hessian no error is fed back: MLX's grid gives round-to-nearest, byte for byte. */
static void test_diagonal_is_rtn(void **state)
{
    (void)state;
    layer L;
    make_layer(&L, 12, 192, 8, 1, 5);
    uint64_t n = L.cols, o = 0;
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = i; j < n; j++) L.hp[o++] = i == j ? (float)(1 + i % 7) : 0.0f;
    rf_err err;
    rf_gptq *g;
    TU_OK(rf_gptq_prepare(L.hp, n, 0.01, NULL, &g, &err), &err);
    for (int bits = 2; bits <= 8; bits += bits == 6 ? 2 : 1) {
        qout a, b;
        qout_alloc(&a, L.rows, n, bits, 32);
        qout_alloc(&b, L.rows, n, bits, 32);
        run_gptq(&L, g, bits, 32, RF_QMODE_MLX, RF_DT_BF16, &a);
        run_rtn(&L, bits, 32, RF_QMODE_MLX, RF_DT_BF16, &b);
        assert_true(qout_equal(&a, &b, L.rows, n, bits, 32, RF_DT_BF16));
        qout_free(&a);
        qout_free(&b);
    }
    rf_gptq_free(g);
    free_layer(&L);
}

/* Same bytes with any thread count in the factorisation, any split of the rows, and the scalar or
 * SIMD kernels; a matrix large enough for several Cholesky panels and sweep blocks. */
static void test_deterministic(void **state)
{
    (void)state;
    layer L;
    uint64_t rows = 70, n = 384;
    make_layer(&L, rows, n, 600, 1, 9);
    rf_err err;
    rf_pool *pool;
    TU_OK(rf_pool_create(3, &pool, &err), &err);
    rf_gptq *g1, *g3;
    TU_OK(rf_gptq_prepare(L.hp, n, 0.01, NULL, &g1, &err), &err);
    TU_OK(rf_gptq_prepare(L.hp, n, 0.01, pool, &g3, &err), &err);
    qout a, b, c;
    qout_alloc(&a, rows, n, 4, 64);
    qout_alloc(&b, rows, n, 4, 64);
    qout_alloc(&c, rows, n, 4, 64);
    run_gptq(&L, g1, 4, 64, RF_QMODE_OPT, RF_DT_BF16, &a);
    /* the other factor, rows in two calls (split inside a 64-row sweep chunk) */
    uint64_t r1 = 37, wpr = n / 32 * 4, gpr = n / 64;
    TU_OK(rf_gptq_quantize(g3, RF_DT_F32, L.w, r1, n, 4, 64, RF_QMODE_OPT, RF_DT_BF16, b.packed, b.scales, b.biases, &err), &err);
    TU_OK(rf_gptq_quantize(g3, RF_DT_F32, L.w + r1 * n, rows - r1, n, 4, 64, RF_QMODE_OPT, RF_DT_BF16, b.packed + r1 * wpr,
                           (uint16_t *)b.scales + r1 * gpr, (uint16_t *)b.biases + r1 * gpr, &err), &err);
    assert_true(qout_equal(&a, &b, rows, n, 4, 64, RF_DT_BF16));
    /* scalar kernels throughout */
    rf_cpu_set_mask(0);
    rf_gptq *g0;
    TU_OK(rf_gptq_prepare(L.hp, n, 0.01, NULL, &g0, &err), &err);
    run_gptq(&L, g0, 4, 64, RF_QMODE_OPT, RF_DT_BF16, &c);
    rf_cpu_set_mask(~0u);
    assert_true(qout_equal(&a, &c, rows, n, 4, 64, RF_DT_BF16));
    assert_true(rf_gptq_lambda(g1) == rf_gptq_lambda(g3) && rf_gptq_cols(g1) == n);
    qout_free(&a);
    qout_free(&b);
    qout_free(&c);
    rf_gptq_free(g0);
    rf_gptq_free(g1);
    rf_gptq_free(g3);
    rf_pool_free(pool);
    free_layer(&L);
}

/* A Hessian with dead columns (inputs always 0) or of rank one still factors (damping), and an
 * all-zero one gives round-to-nearest. */
static void test_degenerate(void **state)
{
    (void)state;
    layer L;
    make_layer(&L, 8, 128, 300, 1, 11);
    uint64_t n = L.cols, o = 0;
    rf_err err;
    rf_gptq *g;
    for (uint64_t i = 0; i < n; i++)
        for (uint64_t j = i; j < n; j++, o++)
            if (i % 3 == 0 || j % 3 == 0) L.hp[o] = 0; /* every third input never seen */
    TU_OK(rf_gptq_prepare(L.hp, n, 0.01, NULL, &g, &err), &err);
    qout a;
    qout_alloc(&a, L.rows, n, 3, 32);
    run_gptq(&L, g, 3, 32, RF_QMODE_MLX, RF_DT_BF16, &a);
    for (uint64_t i = 0; i < L.rows * n; i++) assert_true(isfinite(a.deq[i]));
    rf_gptq_free(g);
    memset(L.hp, 0, n * (n + 1) / 2 * sizeof(float));
    TU_OK(rf_gptq_prepare(L.hp, n, 0.01, NULL, &g, &err), &err);
    qout b;
    qout_alloc(&b, L.rows, n, 3, 32);
    run_gptq(&L, g, 3, 32, RF_QMODE_MLX, RF_DT_BF16, &a);
    run_rtn(&L, 3, 32, RF_QMODE_MLX, RF_DT_BF16, &b);
    assert_true(qout_equal(&a, &b, L.rows, n, 3, 32, RF_DT_BF16));
    qout_free(&a);
    qout_free(&b);
    rf_gptq_free(g);
    free_layer(&L);
}

static void test_errors(void **state)
{
    (void)state;
    float h[6] = {1, 0, 0, 1, 0, 1}, w[3 * 32];
    rf_err err;
    rf_gptq *g = NULL;
    assert_int_equal(rf_gptq_prepare(NULL, 3, 0.01, NULL, &g, &err), RF_ERR_INVALID);
    assert_int_equal(rf_gptq_prepare(h, 0, 0.01, NULL, &g, &err), RF_ERR_INVALID);
    assert_int_equal(rf_gptq_prepare(h, 3, -1, NULL, &g, &err), RF_ERR_INVALID);
    h[0] = NAN;
    assert_int_equal(rf_gptq_prepare(h, 3, 0.01, NULL, &g, &err), RF_ERR_NONFINITE);
    h[0] = -1;
    assert_int_equal(rf_gptq_prepare(h, 3, 0.01, NULL, &g, &err), RF_ERR_NONFINITE);
    h[0] = 1;
    h[1] = 1e30f; /* indefinite whatever the damping */
    assert_int_equal(rf_gptq_prepare(h, 3, 0.01, NULL, &g, &err), RF_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "positive definite"));
    assert_null(g);
    /* a 32-column factor */
    float h32[32 * 33 / 2];
    for (int i = 0, o = 0; i < 32; i++)
        for (int j = i; j < 32; j++) h32[o++] = i == j ? 1.0f : 0.1f;
    TU_OK(rf_gptq_prepare(h32, 32, 0.01, NULL, &g, &err), &err);
    for (int i = 0; i < 3 * 32; i++) w[i] = (float)i / 50;
    uint32_t packed[3 * 4];
    uint16_t sc[3], bi[3];
    assert_int_equal(rf_gptq_quantize(g, RF_DT_F32, w, 3, 64, 4, 32, RF_QMODE_MLX, RF_DT_BF16, packed, sc, bi, &err),
                     RF_ERR_MISMATCH);
    assert_int_equal(rf_gptq_quantize(g, RF_DT_F32, w, 3, 32, 7, 32, RF_QMODE_MLX, RF_DT_BF16, packed, sc, bi, &err),
                     RF_ERR_INVALID);
    assert_int_equal(rf_gptq_quantize(g, RF_DT_F32, w, 3, 32, 4, 64, RF_QMODE_MLX, RF_DT_BF16, packed, sc, bi, &err),
                     RF_ERR_INVALID);
    assert_int_equal(rf_gptq_quantize(g, RF_DT_I32, w, 3, 32, 4, 32, RF_QMODE_MLX, RF_DT_BF16, packed, sc, bi, &err),
                     RF_ERR_INVALID);
    w[40] = INFINITY;
    assert_int_equal(rf_gptq_quantize(g, RF_DT_F32, w, 3, 32, 4, 32, RF_QMODE_MLX, RF_DT_BF16, packed, sc, bi, &err),
                     RF_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "row 1, column 8"));
    rf_gptq_free(g);
    rf_gptq_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_mlx),
        cmocka_unit_test(test_reference_opt),
        cmocka_unit_test(test_diagonal_is_rtn),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_degenerate),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
