/* Engine kernels: unpacking against the MLX format's test vectors, every dtype and bit width of
 * the fast matmul against the scalar reference (decode and batched shapes, ragged edges), the
 * portable path against the reference, thread-count independence, and attention's AVX2 path. */
#include "testutil.h"
#include "engine/engine_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The mlx-format.md vectors: row w_i = i - 8, gs 32, bias 23.0; dequantization must give back
 * scale*q + bias with the listed packed words. */
static void test_unpack_vectors(void **state)
{
    (void)state;
    static const struct { int bits; uint16_t scale; uint32_t words[8]; } v[] = {
        {2, 0xc138, {0x5aaaaabf, 0x00055555}},
        {3, 0xc093, {0x6db76dbf, 0x26db7249, 0x00124a49}},
        {4, 0xc006, {0xbccddeef, 0x8899aabb, 0x44556677, 0x00112233}},
        {5, 0xbf80, {0x75be77df, 0x3a56d7c6, 0x35cf8465, 0xc74254b6, 0x00443214}},
        {6, 0xbefb, {0x77e7bf7f, 0xbb6fc73d, 0x863967a6, 0x1665b75f, 0xa30e4125, 0x00210620}},
        {8, 0xbdf9, {0xe6eef7ff, 0xc5cdd6de, 0xa4adb5bd, 0x838c949c, 0x636b737b, 0x424a525a, 0x2129313a, 0x00081019}},
    };
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        uint8_t bytes[32];
        for (int i = 0; i < v[k].bits; i++)
            for (int b = 0; b < 4; b++) bytes[4 * i + b] = (uint8_t)(v[k].words[i] >> (8 * b));
        uint16_t bias = 0x41b8;
        rf_wmat w = {RF_DT_U32, v[k].bits, 32, RF_DT_BF16, 1, 32, bytes, &v[k].scale, &bias, 0};
        rf_err err;
        TU_OK(rf_wmat_check(&w, "vec", &err), &err);
        float ref[32], fast[32];
        rf_wmat_row_ref(&w, 0, ref);
        rf_wmat_row(&w, 0, fast);
        float s = rf_bf16_to_f32(v[k].scale);
        int n = (1 << v[k].bits) - 1;
        for (int i = 0; i < 32; i++) {
            /* q is the nearest level to w_i; the dequantized value is within half a step of it. */
            assert_true(fabsf(ref[i] - (float)(i - 8)) <= fabsf(s) * 0.5f + 0.05f);
            float q = (ref[i] - 23.0f) / s;
            assert_true(q > -0.01f && q < n + 0.01f && fabsf(q - roundf(q)) < 1e-3f);
            assert_true(fabsf(fast[i] - ref[i]) <= 1e-5f * fabsf(ref[i]) + 1e-6f);
        }
        if (v[k].bits == 4) {
            static const int q4[32] = {15, 14, 14, 13, 13, 12, 12, 11, 11, 11, 10, 10, 9, 9, 8, 8,
                                       7,  7,  6,  6,  5,  5,  4,  4,  3,  3,  2,  2,  1, 1, 0, 0};
            for (int i = 0; i < 32; i++) assert_true(ref[i] == s * q4[i] + 23.0f);
        }
    }
}

typedef struct {
    rf_wmat w;
    void *data, *scales, *biases;
} owned_mat;

static void store_f(rf_dtype dt, void *p, uint64_t i, float f)
{
    if (dt == RF_DT_F32) ((float *)p)[i] = f;
    else if (dt == RF_DT_F16) ((uint16_t *)p)[i] = rf_f32_to_f16(f);
    else ((uint16_t *)p)[i] = rf_f32_to_bf16(f);
}

/* A random matrix of the given kind: float dtypes hold N(0,1); packed ones random codes with
 * scales/biases of either sign (any scale/bias is a valid checkpoint). Allocated exactly, so
 * an over-read past the end shows under ASan. */
static owned_mat make_mat(rf_dtype dt, int bits, int gs, rf_dtype sdt, uint64_t rows, uint64_t cols, tu_rng *rng)
{
    owned_mat m;
    memset(&m, 0, sizeof m);
    rf_wmat *w = &m.w;
    w->dtype = dt; w->bits = bits; w->gs = gs; w->sdtype = sdt; w->rows = rows; w->cols = cols;
    if (dt != RF_DT_U32) {
        m.data = malloc(rows * cols * rf_dtype_size(dt));
        for (uint64_t i = 0; i < rows * cols; i++) store_f(dt, m.data, i, (float)tu_rng_normal(rng));
    } else {
        uint64_t nb = rows * cols * (uint64_t)bits / 8, ng = rows * cols / (uint64_t)gs;
        m.data = malloc(nb);
        for (uint64_t i = 0; i < nb; i++) ((uint8_t *)m.data)[i] = (uint8_t)tu_rng_u64(rng);
        m.scales = malloc(ng * rf_dtype_size(sdt));
        m.biases = malloc(ng * rf_dtype_size(sdt));
        for (uint64_t g = 0; g < ng; g++) {
            store_f(sdt, m.scales, g, (float)(tu_rng_normal(rng) * 0.1));
            store_f(sdt, m.biases, g, (float)(tu_rng_normal(rng) * 0.5));
        }
    }
    w->data = m.data; w->scales = m.scales; w->biases = m.biases;
    return m;
}

static void free_mat(owned_mat *m)
{
    free(m->data);
    free(m->scales);
    free(m->biases);
}

/* |fast - ref| against the magnitude of the terms (float32 sums in another order). */
static void check_product(const owned_mat *m, int ntok, tu_rng *rng, rf_pool *pool)
{
    const rf_wmat *w = &m->w;
    uint64_t rows = w->rows, cols = w->cols;
    float *x = malloc((size_t)ntok * cols * sizeof(float));
    float *y = malloc((size_t)ntok * rows * sizeof(float)), *yr = malloc((size_t)ntok * rows * sizeof(float));
    float *row = malloc(cols * sizeof(float));
    for (uint64_t i = 0; i < (uint64_t)ntok * cols; i++) x[i] = (float)tu_rng_normal(rng);
    rf_matmul_ref(w, x, ntok, yr);
    rf_matmul(w, x, ntok, y, pool);
    for (uint64_t r = 0; r < rows; r++) {
        rf_wmat_row_ref(w, r, row);
        for (int t = 0; t < ntok; t++) {
            double mag = 0;
            for (uint64_t c = 0; c < cols; c++) mag += fabs((double)row[c] * x[(uint64_t)t * cols + c]);
            double d = fabs((double)y[(uint64_t)t * rows + r] - yr[(uint64_t)t * rows + r]);
            if (d > 1e-5 * mag + 1e-6)
                fail_msg("dtype %s bits %d gs %d %llux%llu ntok %d: row %llu tok %d: %g vs %g (mag %g)",
                         rf_dtype_name(w->dtype), w->bits, w->gs, (unsigned long long)rows, (unsigned long long)cols,
                         ntok, (unsigned long long)r, t, y[(uint64_t)t * rows + r], yr[(uint64_t)t * rows + r], mag);
        }
    }
    free(x); free(y); free(yr); free(row);
}

static const int ntoks[] = {1, 2, 3, 4, 7, 13};

static void run_all_kinds(rf_pool *pool)
{
    tu_rng rng = {12345};
    rf_err err;
    static const rf_dtype fdt[] = {RF_DT_F32, RF_DT_F16, RF_DT_BF16};
    static const uint64_t fshapes[][2] = {{1, 8}, {5, 172}, {37, 64}, {19, 300}, {64, 520}};
    for (size_t d = 0; d < 3; d++)
        for (size_t s = 0; s < sizeof fshapes / sizeof fshapes[0]; s++) {
            owned_mat m = make_mat(fdt[d], 0, 0, RF_DT_INVALID, fshapes[s][0], fshapes[s][1], &rng);
            TU_OK(rf_wmat_check(&m.w, "f", &err), &err);
            for (size_t t = 0; t < sizeof ntoks / sizeof ntoks[0]; t++) check_product(&m, ntoks[t], &rng, pool);
            free_mat(&m);
        }
    static const int bits[] = {2, 3, 4, 5, 6, 8}, gss[] = {32, 64, 128};
    static const rf_dtype sdt[] = {RF_DT_BF16, RF_DT_F16, RF_DT_F32};
    /* cols 384 = 1.5 tiles; 21 rows = a 16-row tile plus a ragged one. 160 and 96 columns
     * (gs 32) leave a tail after the decode kernel's last whole chunk of 64 or 128 codes. */
    static const uint64_t qshapes[][2] = {{21, 384}, {3, 160}, {2, 96}};
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++)
            for (size_t s = 0; s < sizeof qshapes / sizeof qshapes[0]; s++) {
                if (qshapes[s][1] % (uint64_t)gss[g]) continue;
                owned_mat m = make_mat(RF_DT_U32, bits[b], gss[g], sdt[(b + g) % 3], qshapes[s][0], qshapes[s][1], &rng);
                TU_OK(rf_wmat_check(&m.w, "q", &err), &err);
                for (size_t t = 0; t < sizeof ntoks / sizeof ntoks[0]; t++) check_product(&m, ntoks[t], &rng, pool);
                free_mat(&m);
            }
}

/* Decode of long rows: x in lane order on the heap (over 8192 columns), and rows of more than
 * 4096 groups, which take the per-row unpacking path. */
static void test_decode_long_rows(void **state)
{
    (void)state;
    tu_rng rng = {99};
    static const struct { int bits, gs; uint64_t cols; } c[] = {{4, 64, 8448}, {3, 32, 8256}, {4, 32, 32 * 4097}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        owned_mat m = make_mat(RF_DT_U32, c[i].bits, c[i].gs, RF_DT_BF16, 3, c[i].cols, &rng);
        check_product(&m, 1, &rng, NULL);
        free_mat(&m);
    }
}

static void test_fast_vs_ref(void **state)
{
    (void)state;
    run_all_kinds(NULL);
}

static void test_portable_vs_ref(void **state)
{
    (void)state;
    rf_cpu_set_mask(0);
    run_all_kinds(NULL);
    rf_cpu_set_mask(~0u);
}

/* Two threads give bit-identical results to one (rows are split, never a sum). */
static void test_threads_identical(void **state)
{
    (void)state;
    rf_pool *pool;
    rf_err err;
    TU_OK(rf_pool_create(2, &pool, &err), &err);
    tu_rng rng = {7};
    /* 600 x 512: large enough that even the decode product is split over the pool. */
    enum { R = 600 };
    owned_mat m = make_mat(RF_DT_U32, 4, 64, RF_DT_BF16, R, 512, &rng);
    for (int ntok = 1; ntok <= 9; ntok += 8) {
        float *x = malloc(sizeof(float) * 512 * (size_t)ntok);
        float *y1 = malloc(sizeof(float) * R * (size_t)ntok), *y2 = malloc(sizeof(float) * R * (size_t)ntok);
        for (int i = 0; i < 512 * ntok; i++) x[i] = (float)tu_rng_normal(&rng);
        rf_matmul(&m.w, x, ntok, y1, NULL);
        rf_matmul(&m.w, x, ntok, y2, pool);
        assert_memory_equal(y1, y2, sizeof(float) * R * (size_t)ntok);
        free(x); free(y1); free(y2);
    }
    free_mat(&m);
    rf_pool_free(pool);
}

/* Attention of one head: the AVX2 path against the scalar reference, over head sizes with and
 * without a 32-column remainder, one to a few hundred positions, and a cache row stride wider
 * than the head; sizes that are not a multiple of 8 (and the portable path) are the reference. */
static void test_attend_fast_vs_ref(void **state)
{
    (void)state;
    tu_rng rng = {31};
    static const int ds[] = {8, 24, 64, 72, 128, 6}, nposs[] = {1, 5, 300};
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++)
        for (size_t b = 0; b < sizeof nposs / sizeof nposs[0]; b++) {
            int d = ds[a], npos = nposs[b], ld = 3 * d + 5;
            float *q = malloc(sizeof(float) * (size_t)d), *kc = malloc(sizeof(float) * (size_t)(npos * ld));
            float *vc = malloc(sizeof(float) * (size_t)(npos * ld)), *sc = malloc(sizeof(float) * (size_t)npos);
            float *o1 = malloc(sizeof(float) * (size_t)d), *o2 = malloc(sizeof(float) * (size_t)d);
            for (int i = 0; i < d; i++) q[i] = (float)tu_rng_normal(&rng);
            for (int i = 0; i < npos * ld; i++) {
                kc[i] = (float)tu_rng_normal(&rng);
                vc[i] = (float)tu_rng_normal(&rng);
            }
            float scale = 1.0f / sqrtf((float)d);
            rf_op_attend_ref(q, kc, vc, npos, d, ld, scale, sc, o1);
            rf_op_attend(q, kc, vc, npos, d, ld, scale, sc, o2);
            for (int i = 0; i < d; i++) {
                /* the weights sum to 1: errors are relative to the largest |v| */
                if (d % 8) assert_true(o1[i] == o2[i]);
                else if (fabsf(o1[i] - o2[i]) > 1e-5f * 5.0f)
                    fail_msg("d %d npos %d col %d: %g vs %g", d, npos, i, o2[i], o1[i]);
            }
            rf_cpu_set_mask(0);
            rf_op_attend(q, kc, vc, npos, d, ld, scale, sc, o2);
            rf_cpu_set_mask(~0u);
            assert_memory_equal(o1, o2, sizeof(float) * (size_t)d);
            free(q); free(kc); free(vc); free(sc); free(o1); free(o2);
        }
}

static void test_wmat_check_rejects(void **state)
{
    (void)state;
    uint32_t words[64] = {0};
    uint16_t s[8] = {0}, b[8] = {0};
    rf_err err;
    rf_wmat w = {RF_DT_U32, 7, 32, RF_DT_BF16, 1, 64, words, s, b, 0};
    assert_int_equal(rf_wmat_check(&w, "x", &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "x"));
    w.bits = 4; w.gs = 48;
    assert_int_equal(rf_wmat_check(&w, "x", &err), RF_ERR_UNSUPPORTED);
    w.gs = 128;
    assert_int_equal(rf_wmat_check(&w, "x", &err), RF_ERR_FORMAT);
    w.gs = 32; w.sdtype = RF_DT_I8;
    assert_int_equal(rf_wmat_check(&w, "x", &err), RF_ERR_UNSUPPORTED);
    w.sdtype = RF_DT_BF16; w.scales = NULL;
    assert_int_equal(rf_wmat_check(&w, "x", &err), RF_ERR_FORMAT);
    rf_wmat f = {RF_DT_I32, 0, 0, RF_DT_INVALID, 1, 64, words, NULL, NULL, 0};
    assert_int_equal(rf_wmat_check(&f, "y", &err), RF_ERR_UNSUPPORTED);
    /* Expert slicing: rows of a stacked bank. */
    tu_rng rng = {3};
    owned_mat m = make_mat(RF_DT_U32, 3, 32, RF_DT_F16, 12, 96, &rng);
    rf_wmat e = rf_wmat_rows(&m.w, 4, 4);
    float r1[96], r2[96];
    for (int r = 0; r < 4; r++) {
        rf_wmat_row_ref(&e, (uint64_t)r, r1);
        rf_wmat_row_ref(&m.w, (uint64_t)r + 4, r2);
        assert_memory_equal(r1, r2, sizeof r1);
    }
    assert_int_equal(rf_wmat_bytes(&e), 4 * (96 * 3 / 8 + 2 * 3 * 2));
    free_mat(&m);
}

/* ---- the 8-bit activation path (matmul_q8.c) */

/* The reference's own math: the activations rounded to 8 bits move each product term by at most
 * |w| * d/2 (d the block's scale), so |q8_ref - exact| is bounded by sum |w| d/2 plus float
 * slack; and a block of exactly representable values (multiples of d) gives the float result. */
static void test_q8_ref_bound(void **state)
{
    (void)state;
    tu_rng rng = {4242};
    static const int bits[] = {2, 3, 4, 5, 6, 8};
    for (int b = 0; b < 6; b++) {
        uint64_t rows = 7, cols = 256;
        owned_mat m = make_mat(RF_DT_U32, bits[b], b % 2 ? 64 : 32, RF_DT_BF16, rows, cols, &rng);
        float x[2 * 256], y[2 * 7], yq[2 * 7], row[256], d[8];
        int8_t q[256];
        for (int i = 0; i < 512; i++) x[i] = (float)tu_rng_normal(&rng) * (i % 37 == 0 ? 20.0f : 1.0f);
        rf_matmul_ref(&m.w, x, 2, y);
        rf_matmul_q8_ref(&m.w, x, 2, yq);
        for (int t = 0; t < 2; t++) {
            rf_q8_quantize_ref(x + t * 256, cols, q, d, NULL);
            for (uint64_t r = 0; r < rows; r++) {
                rf_wmat_row_ref(&m.w, r, row);
                double bound = 0, mag = 0;
                for (uint64_t c = 0; c < cols; c++) {
                    bound += fabs(row[c]) * d[c / 32] * 0.5;
                    mag += fabs((double)row[c] * x[t * 256 + c]);
                    /* the codes reproduce x to within half a step */
                    assert_true(fabs(q[c] * (double)d[c / 32] - x[t * 256 + c]) <= d[c / 32] * 0.5001);
                }
                double err = fabs((double)yq[t * rows + r] - y[t * rows + r]);
                if (err > bound * 1.0001 + 1e-5 * mag)
                    fail_msg("bits %d row %llu tok %d: |%g - %g| > %g", bits[b], (unsigned long long)r, t,
                             yq[t * rows + r], y[t * rows + r], bound);
            }
        }
        /* x already on the 8-bit grid of each block: exact up to float rounding */
        for (int i = 0; i < 256; i++) x[i] = (float)((int)(tu_rng_u64(&rng) % 255) - 127) * 0.25f;
        for (int bl = 0; bl < 8; bl++) x[bl * 32] = 127 * 0.25f;
        rf_matmul_ref(&m.w, x, 1, y);
        rf_matmul_q8_ref(&m.w, x, 1, yq);
        for (uint64_t r = 0; r < rows; r++) {
            rf_wmat_row_ref(&m.w, r, row);
            double mag = 0;
            for (uint64_t c = 0; c < cols; c++) mag += fabs((double)row[c] * x[c]);
            assert_true(fabs((double)yq[r] - y[r]) <= 1e-5 * mag + 1e-6);
        }
        free_mat(&m);
    }
}

/* The SIMD kernels (few-token and panel) against the scalar reference of the same math, every
 * bit width and group size, ragged rows and half chunks; and bit-identical over thread counts. */
static void test_q8_fast_vs_ref(void **state)
{
    (void)state;
    tu_rng rng = {777};
    rf_pool *pool;
    rf_err err;
    TU_OK(rf_pool_create(2, &pool, &err), &err);
    static const int bits[] = {2, 3, 4, 5, 6, 8}, gss[] = {32, 64, 128};
    static const uint64_t shapes[][2] = {{21, 384}, {3, 160}, {70, 1088}, {33, 96}};
    static const int nt[] = {1, 2, 3, 4, 5, 7, 13};
    static const rf_dtype sdt[] = {RF_DT_BF16, RF_DT_F16, RF_DT_F32};
    int tested = 0;
    for (int b = 0; b < 6; b++)
        for (int g = 0; g < 3; g++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                uint64_t rows = shapes[s][0], cols = shapes[s][1];
                if (cols % (uint64_t)gss[g]) continue;
                owned_mat m = make_mat(RF_DT_U32, bits[b], gss[g], sdt[(b + g + s) % 3], rows, cols, &rng);
                for (size_t k = 0; k < sizeof nt / sizeof nt[0]; k++) {
                    int T = nt[k];
                    float *x = malloc(sizeof(float) * cols * (size_t)T), *row = malloc(sizeof(float) * cols);
                    float *y = malloc(sizeof(float) * rows * (size_t)T), *yr = malloc(sizeof(float) * rows * (size_t)T);
                    float *y2 = malloc(sizeof(float) * rows * (size_t)T);
                    for (uint64_t i = 0; i < cols * (uint64_t)T; i++) x[i] = (float)tu_rng_normal(&rng);
                    rf_matmul_q8_ref(&m.w, x, T, yr);
                    rf_matmul_q8(&m.w, x, T, y, NULL);
                    tested += rf_matmul_q8_supported(&m.w);
                    for (uint64_t r = 0; r < rows; r++) {
                        rf_wmat_row_ref(&m.w, r, row);
                        for (int t = 0; t < T; t++) {
                            double mag = 0;
                            for (uint64_t c = 0; c < cols; c++) mag += fabs((double)row[c] * x[(uint64_t)t * cols + c]);
                            double dd = fabs((double)y[(uint64_t)t * rows + r] - yr[(uint64_t)t * rows + r]);
                            /* the quantized terms are rounded to float in another order; when the
                             * CPU has no kernel the product is the exact one (within the 8-bit bound) */
                            double tol = rf_matmul_q8_supported(&m.w) ? 2e-5 * mag + 1e-5 : 0.05 * mag + 1e-3;
                            if (dd > tol)
                                fail_msg("bits %d gs %d %llux%llu ntok %d: row %llu tok %d: %g vs %g (mag %g)", bits[b],
                                         gss[g], (unsigned long long)rows, (unsigned long long)cols, T,
                                         (unsigned long long)r, t, y[(uint64_t)t * rows + r], yr[(uint64_t)t * rows + r],
                                         mag);
                        }
                    }
                    rf_matmul_q8(&m.w, x, T, y2, pool);
                    assert_memory_equal(y, y2, sizeof(float) * rows * (size_t)T);
                    free(x); free(row); free(y); free(yr); free(y2);
                }
                free_mat(&m);
            }
    /* Float weights have no 8-bit kernel: the exact product. */
    owned_mat f = make_mat(RF_DT_BF16, 0, 0, RF_DT_INVALID, 9, 64, &rng);
    float x[64 * 2], y1[9 * 2], y2[9 * 2];
    for (int i = 0; i < 128; i++) x[i] = (float)tu_rng_normal(&rng);
    rf_matmul(&f.w, x, 2, y1, NULL);
    rf_matmul_q8(&f.w, x, 2, y2, NULL);
    assert_memory_equal(y1, y2, sizeof y1);
    free_mat(&f);
    rf_pool_free(pool);
    unsigned need = RF_CPU_AVX512 | RF_CPU_AVX512VNNI | RF_CPU_AVX512VBMI;
    if ((rf_cpu_features() & need) == need) assert_true(tested > 0);
}

/* Several products of one x in one call (q/k/v, gate/up): bit-identical to separate calls, with
 * and without the pool, whether the products share the quantized x (same kernel layout) or not
 * (other bits, group size, float weights). Large enough to run on the pool. */
static void test_q8_multi(void **state)
{
    (void)state;
    tu_rng rng = {4242};
    rf_pool *pool;
    rf_err err;
    TU_OK(rf_pool_create(2, &pool, &err), &err);
    enum { COLS = 1024, NP = 4 };
    static const int sets[][NP][2] = { /* {bits, gs}; bits 0: bf16 weights */
        {{4, 64}, {4, 64}, {4, 64}, {4, 64}},
        {{4, 64}, {5, 64}, {6, 32}, {4, 128}},
        {{8, 32}, {0, 0}, {2, 64}, {3, 32}},
    };
    static const uint64_t rows[NP] = {320, 129, 64, 200};
    static const int nt[] = {1, 3, 4, 6};
    for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
        owned_mat m[NP];
        const rf_wmat *w[NP];
        for (int i = 0; i < NP; i++) {
            int b = sets[s][i][0];
            m[i] = b ? make_mat(RF_DT_U32, b, sets[s][i][1], RF_DT_BF16, rows[i], COLS, &rng)
                     : make_mat(RF_DT_BF16, 0, 0, RF_DT_INVALID, rows[i], COLS, &rng);
            w[i] = &m[i].w;
        }
        for (size_t k = 0; k < sizeof nt / sizeof nt[0]; k++) {
            int T = nt[k];
            float *x = malloc(sizeof(float) * COLS * (size_t)T), *y1[NP], *y2[NP], *y3[NP];
            for (uint64_t i = 0; i < COLS * (uint64_t)T; i++) x[i] = (float)tu_rng_normal(&rng);
            for (int i = 0; i < NP; i++) {
                size_t n = sizeof(float) * rows[i] * (size_t)T;
                y1[i] = malloc(n), y2[i] = malloc(n), y3[i] = malloc(n);
                rf_matmul_q8(w[i], x, T, y1[i], NULL);
            }
            rf_matmul_q8_multi(w, NP, x, T, y2, pool);
            rf_matmul_q8_multi(w, NP, x, T, y3, NULL);
            for (int i = 0; i < NP; i++) {
                size_t n = sizeof(float) * rows[i] * (size_t)T;
                assert_memory_equal(y1[i], y2[i], n);
                assert_memory_equal(y1[i], y3[i], n);
                free(y1[i]); free(y2[i]); free(y3[i]);
            }
            free(x);
        }
        for (int i = 0; i < NP; i++) free_mat(&m[i]);
    }
    rf_pool_free(pool);
}

/* The fast mode's SwiGLU (vectorized exp) against expf's: a few ulp, over the whole range where
 * silu is not 0 or the identity in float, plus the saturated ends and a ragged tail. */
static void test_swiglu_fast(void **state)
{
    (void)state;
    enum { N = 20011 };
    float *g = malloc(sizeof(float) * N), *u = malloc(sizeof(float) * N), *a = malloc(sizeof(float) * N),
          *b = malloc(sizeof(float) * N);
    tu_rng rng = {5};
    for (int i = 0; i < N; i++) {
        g[i] = -110.0f + 220.0f * (float)i / N;
        u[i] = (float)tu_rng_normal(&rng);
    }
    g[0] = -1e30f;
    g[1] = 1e30f;
    g[2] = 0.0f;
    rf_op_swiglu(g, u, N, a);
    rf_op_swiglu_fast(g, u, N, b);
    for (int i = 0; i < N; i++)
        if (fabsf(a[i] - b[i]) > 1e-6f * fabsf(a[i]) + 1e-30f)
            fail_msg("g %g u %g: %g vs %g", g[i], u[i], b[i], a[i]);
    free(g); free(u); free(a); free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unpack_vectors),
        cmocka_unit_test(test_fast_vs_ref),
        cmocka_unit_test(test_portable_vs_ref),
        cmocka_unit_test(test_decode_long_rows),
        cmocka_unit_test(test_attend_fast_vs_ref),
        cmocka_unit_test(test_threads_identical),
        cmocka_unit_test(test_wmat_check_rejects),
        cmocka_unit_test(test_q8_ref_bound),
        cmocka_unit_test(test_q8_fast_vs_ref),
        cmocka_unit_test(test_q8_multi),
        cmocka_unit_test(test_swiglu_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
