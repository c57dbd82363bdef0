/* MLX affine quantization kernels: the spec's test vectors, round trips on many kinds of data,
 * the fused error against an explicit dequantize-and-compare, the fast path against the scalar
 * reference bit for bit, the error-minimising quantizer against MLX on real model tensors,
 * bit packing against an independent bit-stream writer, and error reporting. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static const rf_dtype SDT[3] = {RF_DT_BF16, RF_DT_F16, RF_DT_F32};

/* ---------------------------------------------------------------- helpers */

typedef struct qbuf {
    uint32_t *packed;
    void *scales, *biases;
    float *deq;
} qbuf;

static void qbuf_alloc(qbuf *b, uint64_t rows, uint64_t cols, int bits, int gs)
{
    b->packed = calloc(rows * cols * bits / 32 + 1, 4);
    b->scales = calloc(rows * cols / gs + 1, 4);
    b->biases = calloc(rows * cols / gs + 1, 4);
    b->deq = calloc(rows * cols + 1, 4);
    assert_non_null(b->packed);
    assert_non_null(b->deq);
}

static void qbuf_free(qbuf *b)
{
    free(b->packed);
    free(b->scales);
    free(b->biases);
    free(b->deq);
}

static float sd_get(const void *p, uint64_t i, rf_dtype sd)
{
    if (sd == RF_DT_BF16) return rf_bf16_to_f32(((const uint16_t *)p)[i]);
    if (sd == RF_DT_F16) return rf_f16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* Independent reader of the LSB-first bit stream: element i is bits [i*b, i*b+b) of its row. */
static unsigned read_code(const uint32_t *row, uint64_t i, int b)
{
    unsigned v = 0;
    for (int j = 0; j < b; j++) {
        uint64_t bit = i * (uint64_t)b + (uint64_t)j;
        v |= ((row[bit / 32] >> (bit % 32)) & 1u) << j;
    }
    return v;
}

/* The documented error definition, written independently: per group, lane i%8 accumulates
 * fmaf(e, e, lane); lanes reduce as ((0+1)+(2+3))+((4+5)+(6+7)); groups sum in double. */
static double lane_sse(const float *w, const float *wq, uint64_t n, int gs, double *maxabs)
{
    double tot = 0;
    for (uint64_t g = 0; g < n / gs; g++) {
        float l[8] = {0};
        for (int i = 0; i < gs; i++) {
            float e = w[g * gs + i] - wq[g * gs + i];
            l[i % 8] = fmaf(e, e, l[i % 8]);
            if (maxabs && fabs(e) > *maxabs) *maxabs = fabs(e);
        }
        tot += (double)(((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])));
    }
    return tot;
}

/* Source data in dtype src: F32 values are stored as is, BF16/F16 rounded. f receives the
 * float values actually stored. */
static void *make_src(rf_dtype src, const float *v, uint64_t n, float *f)
{
    void *p = malloc(n * 4 + 4);
    for (uint64_t i = 0; i < n; i++) {
        if (src == RF_DT_BF16) {
            ((uint16_t *)p)[i] = rf_f32_to_bf16(v[i]);
            f[i] = rf_bf16_to_f32(((uint16_t *)p)[i]);
        } else if (src == RF_DT_F16) {
            ((uint16_t *)p)[i] = rf_f32_to_f16(v[i]);
            f[i] = rf_f16_to_f32(((uint16_t *)p)[i]);
        } else {
            ((float *)p)[i] = v[i];
            f[i] = v[i];
        }
    }
    return p;
}

enum { D_NORMAL, D_STUDENT, D_CONST, D_ZERO, D_NEG, D_POS, D_TINY, D_SUBN, D_TIES, D_COUNT };
static const char *dname[D_COUNT] = {"normal", "student-t", "constant", "zero", "all-negative", "all-positive", "tiny", "subnormal", "ties"};

static void gen(int kind, float *v, uint64_t n, uint64_t seed)
{
    tu_rng r = {seed * 7919 + (uint64_t)kind};
    for (uint64_t i = 0; i < n; i++) {
        double x = tu_rng_normal(&r) * 0.02;
        switch (kind) {
        case D_STUDENT: x = tu_rng_student_t(&r, 2.5) * 0.01; break;
        case D_CONST: x = 0.75; break;
        case D_ZERO: x = 0; break;
        case D_NEG: x = -fabs(x) - 0.5; break;
        case D_POS: x = fabs(x) + 0.001; break;
        case D_TINY: x *= 1e-28; break;
        case D_SUBN: x = (double)((int)(tu_rng_u64(&r) % 2001) - 1000) * 1e-42; break;
        case D_TIES: x = (double)((int)(tu_rng_u64(&r) % 33) - 16) / 4.0; break;
        default: break;
        }
        v[i] = (float)x;
    }
}

/* ---------------------------------------------------------------- test vectors */

static void test_vectors(void **state)
{
    (void)state;
    static const struct { int bits; uint32_t scale_f32; uint16_t scale_bf16; int nw; uint32_t words[8]; } tv[6] = {
        {2, 0xc1380000u, 0xc138, 2, {0x5aaaaabf, 0x00055555}},
        {3, 0xc0933333u, 0xc093, 3, {0x6db76dbf, 0x26db7249, 0x00124a49}},
        {4, 0xc005d174u, 0xc006, 4, {0xbccddeef, 0x8899aabb, 0x44556677, 0x00112233}},
        {5, 0xbf800000u, 0xbf80, 5, {0x75be77df, 0x3a56d7c6, 0x35cf8465, 0xc74254b6, 0x00443214}},
        {6, 0xbefa8d9eu, 0xbefb, 6, {0x77e7bf7f, 0xbb6fc73d, 0x863967a6, 0x1665b75f, 0xa30e4125, 0x00210620}},
        {8, 0xbdf93a3eu, 0xbdf9, 8, {0xe6eef7ff, 0xc5cdd6de, 0xa4adb5bd, 0x838c949c, 0x636b737b, 0x424a525a, 0x2129313a, 0x00081019}},
    };
    static const unsigned q4[32] = {15, 14, 14, 13, 13, 12, 12, 11, 11, 11, 10, 10, 9, 9, 8, 8,
                                    7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0};
    uint16_t w[32];
    for (int i = 0; i < 32; i++) w[i] = rf_f32_to_bf16((float)(i - 8));
    rf_err err;
    for (unsigned mask = 0; mask < 2; mask++) {
        rf_cpu_set_mask(mask ? ~0u : 0u);
        for (int t = 0; t < 6; t++) {
            uint32_t packed[8] = {0};
            uint16_t sb, bb;
            float sf, bf;
            TU_OK(rf_quant_quantize(RF_DT_BF16, w, 1, 32, tv[t].bits, 32, RF_QMODE_MLX, RF_DT_BF16, packed, &sb, &bb, &err), &err);
            assert_int_equal(sb, tv[t].scale_bf16);
            assert_int_equal(bb, 0x41b8);
            for (int k = 0; k < tv[t].nw; k++) assert_int_equal(packed[k], tv[t].words[k]);
            TU_OK(rf_quant_quantize(RF_DT_BF16, w, 1, 32, tv[t].bits, 32, RF_QMODE_MLX, RF_DT_F32, packed, &sf, &bf, &err), &err);
            assert_int_equal(f2u(sf), tv[t].scale_f32);
            assert_int_equal(f2u(bf), f2u(23.0f));
            if (tv[t].bits == 4)
                for (int i = 0; i < 32; i++) assert_int_equal(read_code(packed, (uint64_t)i, 4), q4[i]);
        }
        /* all-zero group: scale -1e-7 (bf16 0xb3d7), bias 0, codes 0 */
        uint16_t z[64] = {0}, sb[2], bb[2];
        uint32_t packed[16];
        memset(packed, 0xff, sizeof packed);
        TU_OK(rf_quant_quantize(RF_DT_BF16, z, 1, 64, 4, 32, RF_QMODE_MLX, RF_DT_BF16, packed, sb, bb, &err), &err);
        assert_int_equal(sb[0], 0xb3d7);
        assert_int_equal(bb[0], 0);
        for (int k = 0; k < 8; k++) assert_int_equal(packed[k], 0);
    }
    rf_cpu_set_mask(~0u);
}

/* ---------------------------------------------------------------- round trips and fused error */

static void check_roundtrip(const float *f, const void *src, rf_dtype sdt, rf_dtype sd, uint64_t rows, uint64_t cols,
                            int bits, int gs, rf_qmode mode, const char *what)
{
    rf_err err;
    qbuf b;
    qbuf_alloc(&b, rows, cols, bits, gs);
    uint64_t n = rows * cols;
    const float nl = (float)((1 << bits) - 1);
    TU_OK(rf_quant_quantize(sdt, src, rows, cols, bits, gs, mode, sd, b.packed, b.scales, b.biases, &err), &err);
    TU_OK(rf_quant_dequantize(b.packed, b.scales, b.biases, sd, rows, cols, bits, gs, b.deq, &err), &err);
    double u = sd == RF_DT_BF16 ? 0x1p-8 : sd == RF_DT_F16 ? 0x1p-10 : 0x1p-23;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t g = i / gs;
        double ss = fabs(sd_get(b.scales, g, sd)), bs = fabs(sd_get(b.biases, g, sd));
        unsigned q = read_code(b.packed + (i / cols) * (cols * bits / 32), i % cols, bits);
        assert_true(q <= (unsigned)nl);
        assert_true(f2u(b.deq[i]) == f2u(fmaf(sd_get(b.scales, g, sd), (float)q, sd_get(b.biases, g, sd))));
        /* Inside the range a code is at most half a step off; MLX's edge rule can push the far end
         * of the range up to one step past the last level, so clamped codes (0 or n) get a full
         * step. Tolerance: the storage rounding of scale and bias (relative u, taken twice) plus
         * float32 rounding of the arithmetic, plus f16's subnormal spacing. */
        double step = (q > 0 && q < (unsigned)nl) ? 0.5 : 1.0;
        double tol = 2 * u * (nl * ss + bs) + 0x1p-21 * (fabs(f[i]) + bs + nl * ss) + (sd == RF_DT_F16 ? 0x1p-24 * (nl + 1) : 0);
        double bound = mode == RF_QMODE_MLX ? step * ss + tol : INFINITY;
        if (!(fabs((double)f[i] - b.deq[i]) <= bound))
            fail_msg("%s bits %d gs %d sd %s elem %llu: w %.9g w' %.9g scale %.9g q %u", what, bits, gs,
                     rf_dtype_name(sd), (unsigned long long)i, f[i], b.deq[i], ss, q);
    }
    /* the fused error is exactly the explicit dequantize-and-compare */
    rf_qerr qe;
    double maxabs = 0, ssq_ref = 0;
    TU_OK(rf_quant_error(sdt, src, rows, cols, bits, gs, mode, sd, &qe, &err), &err);
    double sse = lane_sse(f, b.deq, n, gs, &maxabs);
    float *zero = calloc(n, 4);
    ssq_ref = lane_sse(f, zero, n, 32, NULL);
    free(zero);
    if (!(qe.sse == sse) && !(isnan(qe.sse) && isnan(sse)))
        fail_msg("%s bits %d gs %d: fused sse %.17g explicit %.17g", what, bits, gs, qe.sse, sse);
    assert_true(qe.ssq == ssq_ref);
    assert_true(qe.max_abs == maxabs || (isnan(sse)));
    qbuf_free(&b);
}

static void test_roundtrip(void **state)
{
    (void)state;
    const uint64_t rows = 3, cols = 256;
    float *v = malloc(rows * cols * 4), *f = malloc(rows * cols * 4);
    for (int kind = 0; kind < D_COUNT; kind++) {
        gen(kind, v, rows * cols, 1);
        rf_dtype sdt = kind == D_SUBN ? RF_DT_F32 : (kind % 3 == 0 ? RF_DT_BF16 : kind % 3 == 1 ? RF_DT_F32 : RF_DT_F16);
        void *src = make_src(sdt, v, rows * cols, f);
        for (int bi = 0; bi < RF_QBITS_N; bi++)
            for (int gi = 0; gi < RF_QGS_N; gi++)
                for (int si = 0; si < 3; si++)
                    for (int mode = 0; mode < 2; mode++)
                        check_roundtrip(f, src, sdt, SDT[si], rows, cols, rf_qbits[bi], rf_qgs[gi], (rf_qmode)mode, dname[kind]);
        free(src);
    }
    free(v);
    free(f);
}

/* Error of every config at once equals the per-config call; configs whose gs does not divide
 * cols are NaN. */
static void test_error_all(void **state)
{
    (void)state;
    const uint64_t rows = 5, cols = 192; /* 128 does not divide 192 */
    float *v = malloc(rows * cols * 4), *f = malloc(rows * cols * 4);
    gen(D_STUDENT, v, rows * cols, 3);
    void *src = make_src(RF_DT_BF16, v, rows * cols, f);
    rf_err err;
    for (int mode = 0; mode < 2; mode++)
        for (int si = 0; si < 3; si++) {
            rf_qerr all[RF_QCFG_N], one;
            TU_OK(rf_quant_error_all(RF_DT_BF16, src, rows, cols, (rf_qmode)mode, SDT[si], all, &err), &err);
            for (int c = 0; c < RF_QCFG_N; c++) {
                int gs = rf_qgs[c % RF_QGS_N], bits = rf_qbits[c / RF_QGS_N];
                if (cols % gs) {
                    assert_true(isnan(all[c].sse));
                    assert_int_equal(rf_quant_error(RF_DT_BF16, src, rows, cols, bits, gs, (rf_qmode)mode, SDT[si], &one, &err), RF_ERR_INVALID);
                    continue;
                }
                TU_OK(rf_quant_error(RF_DT_BF16, src, rows, cols, bits, gs, (rf_qmode)mode, SDT[si], &one, &err), &err);
                assert_true(one.sse == all[c].sse);
                assert_true(one.ssq == all[c].ssq);
                assert_true(one.max_abs == all[c].max_abs);
                if (c >= RF_QGS_N) /* more bits, less error (same gs) */
                    assert_true(all[c].sse <= all[c - RF_QGS_N].sse);
            }
        }
    /* cols not a multiple of 32: every config NaN, ssq still exact */
    rf_qerr all[RF_QCFG_N];
    TU_OK(rf_quant_error_all(RF_DT_BF16, src, 10, 50, RF_QMODE_MLX, RF_DT_BF16, all, &err), &err);
    assert_true(isnan(all[0].sse));
    assert_true(all[0].ssq > 0);
    free(src);
    free(v);
    free(f);
}

/* ---------------------------------------------------------------- fast path == scalar */

typedef struct run_out {
    qbuf q;
    rf_qerr e1, all[RF_QCFG_N];
} run_out;

static void run_all(rf_dtype sdt, const void *src, uint64_t rows, uint64_t cols, int bits, int gs, rf_qmode mode,
                    rf_dtype sd, run_out *o)
{
    rf_err err;
    qbuf_alloc(&o->q, rows, cols, bits, gs);
    TU_OK(rf_quant_quantize(sdt, src, rows, cols, bits, gs, mode, sd, o->q.packed, o->q.scales, o->q.biases, &err), &err);
    TU_OK(rf_quant_dequantize(o->q.packed, o->q.scales, o->q.biases, sd, rows, cols, bits, gs, o->q.deq, &err), &err);
    TU_OK(rf_quant_error(sdt, src, rows, cols, bits, gs, mode, sd, &o->e1, &err), &err);
    TU_OK(rf_quant_error_all(sdt, src, rows, cols, mode, sd, o->all, &err), &err);
}

static int same_qerr(const rf_qerr *a, const rf_qerr *b)
{
    return memcmp(&a->sse, &b->sse, 8) == 0 && memcmp(&a->ssq, &b->ssq, 8) == 0 && memcmp(&a->max_abs, &b->max_abs, 8) == 0;
}

static unsigned g_fast_mask = ~0u; /* the kernels compared with the scalar reference */

/* Every data kind in one shape, every config, both modes (opt on a third of the configs). */
static void fast_vs_scalar(uint64_t rows, uint64_t cols, uint64_t seed, int late_outlier)
{
    uint64_t n = rows * cols;
    float *v = malloc(n * 4), *f = malloc(n * 4);
    static const rf_dtype srcs[3] = {RF_DT_BF16, RF_DT_F16, RF_DT_F32};
    for (int kind = 0; kind < D_COUNT; kind++) {
        gen(kind, v, n, seed);
        if (kind == D_NORMAL) v[late_outlier ? n - 70 : 5] = 1e4f; /* an outlier group */
        if (kind == D_STUDENT && late_outlier) v[n / 2 + 3] *= 3.0f;
        rf_dtype sdt = srcs[kind % 3];
        if (kind == D_SUBN || kind == D_TINY) sdt = RF_DT_F32;
        void *src = make_src(sdt, v, n, f);
        for (int bi = 0; bi < RF_QBITS_N; bi++)
            for (int gi = 0; gi < RF_QGS_N; gi++) {
                int bits = rf_qbits[bi], gs = rf_qgs[gi];
                rf_dtype sd = SDT[(bi + gi + kind) % 3];
                for (int mode = 0; mode < 2; mode++) {
                    if (mode == 1 && (bi + gi) % 3) continue;
                    run_out a, b;
                    rf_cpu_set_mask(0);
                    run_all(sdt, src, rows, cols, bits, gs, (rf_qmode)mode, sd, &a);
                    rf_cpu_set_mask(g_fast_mask);
                    run_all(sdt, src, rows, cols, bits, gs, (rf_qmode)mode, sd, &b);
                    rf_cpu_set_mask(~0u);
                    uint64_t ssz = rf_dtype_size(sd) * n / gs;
                    if (memcmp(a.q.packed, b.q.packed, n * bits / 8) || memcmp(a.q.scales, b.q.scales, ssz) ||
                        memcmp(a.q.biases, b.q.biases, ssz) || memcmp(a.q.deq, b.q.deq, n * 4))
                        fail_msg("%s bits %d gs %d mode %d: quantize/dequantize differ", dname[kind], bits, gs, mode);
                    if (!same_qerr(&a.e1, &b.e1))
                        fail_msg("%s bits %d gs %d mode %d: error %.17g vs %.17g", dname[kind], bits, gs, mode, a.e1.sse, b.e1.sse);
                    for (int c = 0; c < RF_QCFG_N; c++)
                        if (!same_qerr(&a.all[c], &b.all[c]))
                            fail_msg("%s mode %d cfg %d: error_all %.17g vs %.17g", dname[kind], mode, c, a.all[c].sse, b.all[c].sse);
                    qbuf_free(&a.q);
                    qbuf_free(&b.q);
                }
            }
        free(src);
    }
    free(v);
    free(f);
}

/* A full tile and a partial one per row; then narrow rows, several to a tile, with the largest
 * errors late: the fast path stops tracking the max |error| once a bound proves that a tile
 * cannot raise it, which must not change it. */
static void test_fast_equals_scalar(void **state)
{
    (void)state;
    if (!(rf_cpu_features() & RF_CPU_AVX2)) skip();
    fast_vs_scalar(4, 1280, 11, 0);
    fast_vs_scalar(29, 384, 12, 1);
    if (rf_cpu_features() & RF_CPU_AVX512) { /* the AVX2 kernels too, where AVX-512 would be picked */
        g_fast_mask = RF_CPU_AVX2 | RF_CPU_FMA | RF_CPU_F16C;
        fast_vs_scalar(5, 1152, 13, 1);
        g_fast_mask = ~0u;
    }
}

/* ---------------------------------------------------------------- the opt error from a sample */

static int same_sums(const rf_qsums *a, const rf_qsums *b) { return memcmp(a, b, sizeof *a) == 0; }

/* Rows with log-normal scales, Student-t entries and a few large input columns (as trained
 * models and ramfit synth have): the case where a plain sample of groups misses the outliers. */
static void gen_outliers(float *v, uint64_t rows, uint64_t cols, uint64_t seed)
{
    tu_rng r = {seed};
    for (uint64_t i = 0; i < rows; i++) {
        double rs = 0.02 * exp(0.3 * tu_rng_normal(&r));
        for (uint64_t j = 0; j < cols; j++) {
            double x = rs * tu_rng_student_t(&r, 4);
            if (j % 397 == 11) x *= 25;
            v[i * cols + j] = (float)x;
        }
    }
}

/* At rate 1 every group is searched and the sums give rf_quant_error_all's opt error bit for
 * bit, in every shape (narrow rows share a tile) and source dtype; scalar, AVX2 and AVX-512
 * kernels give the same sums; cutting a member into pieces at multiples of rf_quant_piece_rows
 * leaves the sample and the estimate as they are. */
static void test_sample_exact(void **state)
{
    (void)state;
    static const struct { uint64_t rows, cols; rf_dtype dt; uint32_t mask; } cs[] = {
        {7, 1152, RF_DT_BF16, (1u << RF_QCFG_N) - 1}, {41, 96, RF_DT_F16, 0x9249}, {13, 352, RF_DT_F32, 1u << 3 | 1u << 15},
        {30, 256, RF_DT_BF16, 0x3ffff & ~0x7u},
    };
    rf_err err;
    const unsigned avx2 = RF_CPU_AVX2 | RF_CPU_FMA | RF_CPU_F16C;
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        const uint64_t n = cs[i].rows * cs[i].cols;
        float *v = malloc(n * 4), *f = malloc(n * 4);
        gen_outliers(v, cs[i].rows, cs[i].cols, 5 + i);
        void *src = make_src(cs[i].dt, v, n, f);
        rf_qsample sp = {.member = 1, .member_rows = cs[i].rows, .row0 = 0};
        for (int c = 0; c < RF_QCFG_N; c++) sp.rate[c] = 1;
        rf_qsums sums[3];
        rf_qerr all[RF_QCFG_N];
        TU_OK(rf_quant_error_all(cs[i].dt, src, cs[i].rows, cs[i].cols, RF_QMODE_OPT, RF_DT_BF16, all, &err), &err);
        for (int kset = 0; kset < 3; kset++) {
            rf_cpu_set_mask(kset == 0 ? 0u : kset == 1 ? avx2 : ~0u);
            TU_OK(rf_quant_error_sample(cs[i].dt, src, cs[i].rows, cs[i].cols, cs[i].mask, RF_DT_BF16, &sp, &sums[kset], &err), &err);
        }
        rf_cpu_set_mask(~0u);
        assert_true(same_sums(&sums[0], &sums[1]));
        assert_true(same_sums(&sums[0], &sums[2]));
        for (int c = 0; c < RF_QCFG_N; c++) {
            double sse, mx;
            int est;
            if (!(cs[i].mask >> c & 1)) continue;
            rf_qsums_error(&sums[0], c, &sse, &mx, &est);
            assert_false(est);
            if (memcmp(&sse, &all[c].sse, 8) || mx != all[c].max_abs)
                fail_msg("shape %zu cfg %d: sampled at rate 1 %.17g (max %g), error_all %.17g (max %g)", i, c, sse, mx, all[c].sse,
                         all[c].max_abs);
        }
        /* a sample, in one piece and cut at multiples of the piece rows */
        for (int c = 0; c < RF_QCFG_N; c++) sp.rate[c] = c / RF_QGS_N == 5 ? 0.3 : 0.1;
        rf_qsums one, acc, part;
        TU_OK(rf_quant_error_sample(cs[i].dt, src, cs[i].rows, cs[i].cols, cs[i].mask, RF_DT_BF16, &sp, &one, &err), &err);
        memset(&acc, 0, sizeof acc);
        const uint64_t pr = rf_quant_piece_rows(cs[i].cols), esz = rf_dtype_size(cs[i].dt);
        for (uint64_t r0 = 0; r0 < cs[i].rows; r0 += 2 * pr) {
            uint64_t nr = cs[i].rows - r0 < 2 * pr ? cs[i].rows - r0 : 2 * pr;
            rf_qsample pp = sp;
            pp.row0 = r0;
            TU_OK(rf_quant_error_sample(cs[i].dt, (const char *)src + r0 * cs[i].cols * esz, nr, cs[i].cols, cs[i].mask, RF_DT_BF16,
                                        &pp, &part, &err), &err);
            rf_qsums_add(&acc, &part);
        }
        for (int gi = 0; gi < RF_QGS_N; gi++) assert_int_equal(acc.groups[gi], one.groups[gi]);
        for (int c = 0; c < RF_QCFG_N; c++) assert_int_equal(acc.sampled[c], one.sampled[c]);
        /* a sample: more than the rate's share (larger ranges weigh more), far from all; nested */
        for (int c = 0; c < RF_QCFG_N; c++) {
            if (!(cs[i].mask >> c & 1)) continue;
            const uint64_t g = one.groups[c % RF_QGS_N];
            if (!(one.sampled[c] >= (uint64_t)(sp.rate[c] * (double)g) / 2 && one.sampled[c] < g * 2 / 3))
                fail_msg("shape %zu cfg %d: %llu of %llu groups sampled at rate %g", i, c, (unsigned long long)one.sampled[c],
                         (unsigned long long)g, sp.rate[c]);
            if (c >= 5 * RF_QGS_N && (cs[i].mask >> (c - 3 * RF_QGS_N) & 1)) assert_true(one.sampled[c] >= one.sampled[c - 3 * RF_QGS_N]);
        }
        for (int c = 0; c < RF_QCFG_N; c++) {
            double a, b, ma, mb;
            int ea, eb;
            if (!(cs[i].mask >> c & 1)) continue;
            rf_qsums_error(&one, c, &a, &ma, &ea);
            rf_qsums_error(&acc, c, &b, &mb, &eb);
            assert_true(ea == eb && ma == mb);
            assert_true(fabs(a - b) <= 1e-9 * a);
        }
        free(src);
        free(v);
        free(f);
    }
    /* bad arguments */
    rf_qsample sp = {.member_rows = 4};
    for (int c = 0; c < RF_QCFG_N; c++) sp.rate[c] = 1;
    rf_qsums o;
    float w[256] = {0};
    assert_int_equal(rf_quant_error_sample(RF_DT_F32, w, 2, 128, 1u << 18, RF_DT_BF16, &sp, &o, &err), RF_ERR_INVALID);
    assert_int_equal(rf_quant_error_sample(RF_DT_F32, w, 4, 64, 1u << 2, RF_DT_BF16, &sp, &o, &err), RF_ERR_INVALID);
    sp.rate[0] = 0;
    assert_int_equal(rf_quant_error_sample(RF_DT_F32, w, 2, 128, 1, RF_DT_BF16, &sp, &o, &err), RF_ERR_INVALID);
    w[77] = NAN;
    sp.rate[0] = 1;
    assert_int_equal(rf_quant_error_sample(RF_DT_F32, w, 2, 128, 1, RF_DT_BF16, &sp, &o, &err), RF_ERR_NONFINITE);
    assert_true(rf_quant_sample_rate(1000, 125) == 1 && rf_quant_sample_rate(1001, 126) == 1 && rf_quant_sample_rate(1000, 0) == 1);
    assert_true(rf_quant_sample_rate(1001, 125) == 125.0 / 1001 && rf_quant_sample_rate(1000, 100) == 0.1);
}

/* The estimate from ~1% of the groups of an outlier-heavy matrix is close to the exact error in
 * every config (the regression on the exact range totals does the work: the sample alone,
 * Horvitz-Thompson, is much further off), and a sampled group's max error is one of the tensor's. */
static void test_sample_estimate(void **state)
{
    (void)state;
    const uint64_t rows = 1536, cols = 2048, n = rows * cols;
    float *v = malloc(n * 4), *f = malloc(n * 4);
    gen_outliers(v, rows, cols, 99);
    void *src = make_src(RF_DT_BF16, v, n, f);
    rf_err err;
    rf_qsample sp = {.member_rows = rows};
    for (int c = 0; c < RF_QCFG_N; c++) sp.rate[c] = rf_quant_sample_rate(n / (uint64_t)rf_qgs[c % RF_QGS_N], 1024);
    const uint32_t mask = 1u << 0 | 1u << 7 | 1u << 11 | 1u << 15;
    rf_qsums es;
    TU_OK(rf_quant_error_sample(RF_DT_BF16, src, rows, cols, mask, RF_DT_BF16, &sp, &es, &err), &err);
    double worst = 0, worst_ht = 0;
    for (int c = 0; c < RF_QCFG_N; c++) {
        if (!(mask >> c & 1)) continue;
        rf_qerr ex;
        TU_OK(rf_quant_error(RF_DT_BF16, src, rows, cols, rf_qbits[c / 3], rf_qgs[c % 3], RF_QMODE_OPT, RF_DT_BF16, &ex, &err), &err);
        double sse, mx;
        int est;
        rf_qsums_error(&es, c, &sse, &mx, &est);
        assert_true(est);
        assert_true(mx <= ex.max_abs);
        worst = fmax(worst, fabs(sse / ex.sse - 1));
        worst_ht = fmax(worst_ht, fabs(es.h[c] / ex.sse - 1));
        print_message("  %d/%d: exact %.6g, estimate %+.3f%% (HT alone %+.2f%%), %llu of %llu groups\n", rf_qbits[c / 3],
                      rf_qgs[c % 3], ex.sse, 100 * (sse / ex.sse - 1), 100 * (es.h[c] / ex.sse - 1),
                      (unsigned long long)es.sampled[c], (unsigned long long)es.groups[c % 3]);
    }
    assert_true(worst < 0.02);
    assert_true(worst_ht > worst);
    free(src);
    free(v);
    free(f);
}

/* ---------------------------------------------------------------- opt vs mlx on real tensors */

typedef struct st_tensor {
    char name[128];
    rf_dtype dt;
    uint64_t rows, cols;
    const void *data;
} st_tensor;

/* Minimal safetensors reader for the test: the 2-D float tensors of one file. */
static int read_st(const char *path, char **blob, st_tensor *out, int max)
{
    size_t sz;
    *blob = tu_read_file(path, &sz);
    if (!*blob || sz < 8) return -1;
    uint64_t hl;
    memcpy(&hl, *blob, 8);
    json_error_t je;
    json_t *h = json_loadb(*blob + 8, (size_t)hl, 0, &je);
    if (!h) return -1;
    int n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(h, key, val) {
        json_t *shape = json_object_get(val, "shape");
        if (!shape || json_array_size(shape) != 2 || n >= max) continue;
        rf_dtype dt = rf_dtype_from_name(json_string_value(json_object_get(val, "dtype")));
        if (dt != RF_DT_F32 && dt != RF_DT_BF16 && dt != RF_DT_F16) continue;
        st_tensor *t = &out[n++];
        snprintf(t->name, sizeof t->name, "%s", key);
        t->dt = dt;
        t->rows = (uint64_t)json_integer_value(json_array_get(shape, 0));
        t->cols = (uint64_t)json_integer_value(json_array_get(shape, 1));
        t->data = *blob + 8 + hl + (uint64_t)json_integer_value(json_array_get(json_object_get(val, "data_offsets"), 0));
    }
    json_decref(h);
    return n;
}

/* Every group: opt's stored-format error <= MLX's (each group measured as a 1 x gs matrix,
 * which is exactly how it is quantized inside the tensor). Also reports the tensor gain. */
static double g_sum_mlx[RF_QCFG_N], g_sum_opt[RF_QCFG_N], g_ssq[RF_QCFG_N];

static void opt_vs_mlx(const st_tensor *t, uint64_t max_rows, int cfg_step)
{
    rf_err err;
    uint64_t rows = t->rows < max_rows ? t->rows : max_rows;
    uint64_t esz = rf_dtype_size(t->dt);
    for (int c = 0; c < RF_QCFG_N; c += cfg_step) {
        int bits = rf_qbits[c / RF_QGS_N], gs = rf_qgs[c % RF_QGS_N];
        if (t->cols % gs) continue;
        uint64_t ng = rows * t->cols / gs;
        for (uint64_t g = 0; g < ng; g++) {
            rf_qerr em, eo;
            const void *p = (const char *)t->data + g * gs * esz;
            TU_OK(rf_quant_error(t->dt, p, 1, gs, bits, gs, RF_QMODE_MLX, t->dt, &em, &err), &err);
            TU_OK(rf_quant_error(t->dt, p, 1, gs, bits, gs, RF_QMODE_OPT, t->dt, &eo, &err), &err);
            if (!(eo.sse <= em.sse)) fail_msg("%s bits %d gs %d group %llu: opt %.9g > mlx %.9g", t->name, bits, gs, (unsigned long long)g, eo.sse, em.sse);
        }
        rf_qerr am, ao;
        TU_OK(rf_quant_error(t->dt, t->data, rows, t->cols, bits, gs, RF_QMODE_MLX, t->dt, &am, &err), &err);
        TU_OK(rf_quant_error(t->dt, t->data, rows, t->cols, bits, gs, RF_QMODE_OPT, t->dt, &ao, &err), &err);
        assert_true(ao.sse <= am.sse);
        g_sum_mlx[c] += am.sse;
        g_sum_opt[c] += ao.sse;
        g_ssq[c] += am.ssq;
    }
}

static void test_opt_real(void **state)
{
    (void)state;
    const char *models[2] = {"stories260k", "qwen3-dense-mini"};
    int ran = 0;
    for (int m = 0; m < 2; m++) {
        const char *dir = tu_model_dir(models[m]);
        if (!dir) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        char *blob;
        st_tensor ts[128];
        int n = read_st(path, &blob, ts, 128);
        if (n <= 0) { free(blob); continue; }
        memset(g_sum_mlx, 0, sizeof g_sum_mlx);
        memset(g_sum_opt, 0, sizeof g_sum_opt);
        memset(g_ssq, 0, sizeof g_ssq);
        for (int i = 0; i < n; i++) {
            if (m == 1 && i % 6) continue;                    /* BF16 model: a sample of tensors */
            opt_vs_mlx(&ts[i], m == 0 ? 4096 : 64, m == 0 ? 1 : 2); /* stories: every group */
        }
        for (int c = 0; c < RF_QCFG_N; c += 2)
            if (g_ssq[c] > 0)
                print_message("  %s %d/%d: SQNR mlx %.2f dB, opt %.2f dB\n", models[m], rf_qbits[c / RF_QGS_N],
                              rf_qgs[c % RF_QGS_N], -10 * log10(g_sum_mlx[c] / g_ssq[c]), -10 * log10(g_sum_opt[c] / g_ssq[c]));
        free(blob);
        ran = 1;
    }
    if (!ran) skip();
}

/* ---------------------------------------------------------------- packing */

/* Codes chosen through the data: with 0 and n in a group, MLX's rule maps w = n - q to q
 * exactly, so the packed stream must equal an independent bit-by-bit writer's. */
static void test_packing(void **state)
{
    (void)state;
    rf_err err;
    const uint64_t rows = 3, cols = 256;
    tu_rng r = {99};
    for (unsigned mask = 0; mask < 2; mask++) {
        rf_cpu_set_mask(mask ? ~0u : 0u);
        for (int bi = 0; bi < RF_QBITS_N; bi++) {
            int bits = rf_qbits[bi], n = (1 << bits) - 1;
            for (int gi = 0; gi < RF_QGS_N; gi++) {
                int gs = rf_qgs[gi];
                float *w = malloc(rows * cols * 4);
                unsigned *q = malloc(rows * cols * sizeof *q);
                for (uint64_t i = 0; i < rows * cols; i++) {
                    q[i] = (unsigned)(tu_rng_u64(&r) % (uint64_t)(n + 1));
                    if (i % gs == 0) q[i] = 0;
                    if (i % gs == 1) q[i] = (unsigned)n;
                    w[i] = (float)(n - (int)q[i]);
                }
                uint32_t *ref = calloc(rows * cols * bits / 32, 4);
                for (uint64_t i = 0; i < rows * cols; i++) {
                    uint32_t *row = ref + (i / cols) * (cols * bits / 32);
                    for (int j = 0; j < bits; j++) {
                        uint64_t bit = (i % cols) * bits + j;
                        if (q[i] >> j & 1) row[bit / 32] |= 1u << (bit % 32);
                    }
                }
                qbuf b;
                qbuf_alloc(&b, rows, cols, bits, gs);
                TU_OK(rf_quant_quantize(RF_DT_F32, w, rows, cols, bits, gs, RF_QMODE_MLX, RF_DT_F32, b.packed, b.scales, b.biases, &err), &err);
                assert_memory_equal(b.packed, ref, rows * cols * bits / 8);
                TU_OK(rf_quant_dequantize(b.packed, b.scales, b.biases, RF_DT_F32, rows, cols, bits, gs, b.deq, &err), &err);
                for (uint64_t i = 0; i < rows * cols; i++) assert_true(b.deq[i] == w[i]);
                qbuf_free(&b);
                free(ref);
                free(q);
                free(w);
            }
        }
    }
    rf_cpu_set_mask(~0u);
}

/* ---------------------------------------------------------------- errors */

static void test_errors(void **state)
{
    (void)state;
    rf_err err;
    const uint64_t rows = 6, cols = 128;
    float *w = calloc(rows * cols, 4);
    uint16_t *h = calloc(rows * cols, 2);
    qbuf b;
    qbuf_alloc(&b, rows, cols, 8, 32);
    rf_qerr qe, all[RF_QCFG_N];
    for (unsigned mask = 0; mask < 2; mask++) {
        rf_cpu_set_mask(mask ? ~0u : 0u);
        w[3 * cols + 17] = NAN;
        assert_int_equal(rf_quant_quantize(RF_DT_F32, w, rows, cols, 4, 64, RF_QMODE_MLX, RF_DT_BF16, b.packed, b.scales, b.biases, &err), RF_ERR_NONFINITE);
        assert_non_null(strstr(err.msg, "row 3, column 17"));
        assert_int_equal(rf_quant_error(RF_DT_F32, w, rows, cols, 4, 64, RF_QMODE_OPT, RF_DT_BF16, &qe, &err), RF_ERR_NONFINITE);
        assert_non_null(strstr(err.msg, "row 3, column 17"));
        w[3 * cols + 17] = 0;
        h[5 * cols + 127] = 0xff80; /* bf16 -Inf */
        assert_int_equal(rf_quant_error_all(RF_DT_BF16, h, rows, cols, RF_QMODE_MLX, RF_DT_BF16, all, &err), RF_ERR_NONFINITE);
        assert_non_null(strstr(err.msg, "row 5, column 127"));
        h[5 * cols + 127] = 0x7c00; /* f16 +Inf */
        assert_int_equal(rf_quant_error(RF_DT_F16, h, rows, cols, 2, 32, RF_QMODE_MLX, RF_DT_F16, &qe, &err), RF_ERR_NONFINITE);
        assert_non_null(strstr(err.msg, "row 5, column 127"));
        h[5 * cols + 127] = 0;
    }
    rf_cpu_set_mask(~0u);
    assert_int_equal(rf_quant_quantize(RF_DT_F32, w, rows, cols, 7, 64, RF_QMODE_MLX, RF_DT_BF16, b.packed, b.scales, b.biases, &err), RF_ERR_INVALID);
    assert_int_equal(rf_quant_quantize(RF_DT_F32, w, rows, cols, 4, 16, RF_QMODE_MLX, RF_DT_BF16, b.packed, b.scales, b.biases, &err), RF_ERR_INVALID);
    assert_int_equal(rf_quant_quantize(RF_DT_F32, w, rows, 96, 4, 64, RF_QMODE_MLX, RF_DT_BF16, b.packed, b.scales, b.biases, &err), RF_ERR_INVALID);
    assert_int_equal(rf_quant_quantize(RF_DT_I32, w, rows, cols, 4, 64, RF_QMODE_MLX, RF_DT_BF16, b.packed, b.scales, b.biases, &err), RF_ERR_INVALID);
    assert_int_equal(rf_quant_error(RF_DT_F32, w, rows, 96, 4, 128, RF_QMODE_MLX, RF_DT_BF16, &qe, &err), RF_ERR_INVALID);
    assert_int_equal(rf_quant_dequantize(b.packed, b.scales, b.biases, RF_DT_BF16, rows, cols, 4, 48, b.deq, &err), RF_ERR_INVALID);
    assert_int_equal(rf_quant_bytes(4096ull * 4096, 4, 64, RF_DT_BF16), 4096ull * 4096 / 2 + 4096ull * 4096 / 64 * 4);
    assert_int_equal(rf_quant_bytes(4096, 3, 32, RF_DT_BF16), 4096 * 3 / 8 + 4096 / 32 * 4);
    assert_int_equal(rf_quant_bytes(4096, 3, 32, RF_DT_F32), 4096 * 3 / 8 + 4096 / 32 * 8);
    qbuf_free(&b);
    free(w);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_error_all),
        cmocka_unit_test(test_fast_equals_scalar),
        cmocka_unit_test(test_opt_real),
        cmocka_unit_test(test_sample_exact),
        cmocka_unit_test(test_sample_estimate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
