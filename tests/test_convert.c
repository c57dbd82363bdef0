/* dtype table and bf16/f16 <-> f32 conversions: exhaustive over every 16-bit pattern, and the
 * bulk (SIMD) paths against the scalar reference. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_dtype_table(void **state)
{
    (void)state;
    static const char *names[] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "I64", "I32",
                                  "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"};
    static const uint64_t sizes[] = {8, 4, 2, 2, 1, 1, 8, 4, 2, 1, 8, 4, 2, 1, 1};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        rf_dtype dt = rf_dtype_from_name(names[i]);
        assert_int_not_equal(dt, RF_DT_INVALID);
        assert_string_equal(rf_dtype_name(dt), names[i]);
        assert_int_equal(rf_dtype_size(dt), sizes[i]);
    }
    assert_int_equal(rf_dtype_from_name("f32"), RF_DT_INVALID);
    assert_int_equal(rf_dtype_from_name("Q4_K"), RF_DT_INVALID);
    assert_int_equal(rf_dtype_from_name(NULL), RF_DT_INVALID);
}

/* bf16 -> f32 is exact; f32 -> bf16 of that value must give the same bits back (NaN: quiet). */
static void test_bf16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = rf_bf16_to_f32((uint16_t)h);
        assert_int_equal(f2u(f), h << 16);
        uint16_t back = rf_f32_to_bf16(f);
        if ((h & 0x7fff) > 0x7f80) assert_int_equal(back, h | 0x40);
        else assert_int_equal(back, h);
    }
}

/* Rounding: values between two bf16 neighbours, including exact ties (to even). */
static void test_bf16_rounding(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x7f7f; h += 7) {
        uint32_t lo = h << 16;
        assert_int_equal(rf_f32_to_bf16(u2f(lo + 0x7fff)), h);           /* below half */
        assert_int_equal(rf_f32_to_bf16(u2f(lo + 0x8001)), h + 1);       /* above half */
        assert_int_equal(rf_f32_to_bf16(u2f(lo + 0x8000)), (h & 1) ? h + 1 : h); /* tie */
    }
    assert_int_equal(rf_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(rf_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(rf_f32_to_bf16(u2f(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to Inf */
}

/* f16 -> f32 against an independent formula; f32 -> f16 round-trips every non-NaN value. */
static void test_f16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, m = h & 1023, s = h >> 15;
        float f = rf_f16_to_f32((uint16_t)h);
        if (e == 31) {
            if (m) { assert_true(isnan(f)); assert_int_equal(rf_f32_to_f16(f) & 0x7e00, 0x7e00); continue; }
            assert_true(isinf(f));
        } else {
            double want = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
            if (s) want = -want;
            assert_true((double)f == want);
            if (want == 0) assert_int_equal(signbit(f) != 0, s);
        }
        assert_int_equal(rf_f32_to_f16(f), h);
    }
}

/* Midpoints between neighbouring f16 values round to even; overflow goes to Inf. */
static void test_f16_rounding(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float a = rf_f16_to_f32((uint16_t)h), b = rf_f16_to_f32((uint16_t)(h + 1));
        double mid = ((double)a + (double)b) / 2;
        float fm = (float)mid; /* exact: f16 midpoints fit in float32 */
        assert_true((double)fm == mid);
        assert_int_equal(rf_f32_to_f16(fm), (h & 1) ? h + 1 : h);
        assert_int_equal(rf_f32_to_f16(nextafterf(fm, 0)), h);
        assert_int_equal(rf_f32_to_f16(nextafterf(fm, INFINITY)), h + 1);
    }
    assert_int_equal(rf_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(rf_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(rf_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(rf_f32_to_f16(-1e10f), 0xfc00);
}

/* Bulk paths (SIMD when present) equal the scalar functions bit for bit, odd lengths included. */
static void test_bulk_matches_scalar(void **state)
{
    (void)state;
    rf_err err;
    enum { N = 65536 + 13 };
    uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
    float *f = malloc(N * 4), *g = malloc(N * 4);
    tu_rng r = {42};
    for (uint32_t i = 0; i < N; i++) h[i] = (uint16_t)(i < 65536 ? i : tu_rng_u64(&r));
    unsigned masks[2] = {0, ~0u};
    for (int mi = 0; mi < 2; mi++) {
        rf_cpu_set_mask(masks[mi]);
        TU_OK(rf_convert_to_f32(RF_DT_BF16, h, f, N, &err), &err);
        for (uint32_t i = 0; i < N; i++) assert_int_equal(f2u(f[i]), f2u(rf_bf16_to_f32(h[i])));
        TU_OK(rf_convert_to_f32(RF_DT_F16, h, f, N, &err), &err);
        for (uint32_t i = 0; i < N; i++) {
            float want = rf_f16_to_f32(h[i]);
            if (isnan(want)) assert_true(isnan(f[i]));
            else assert_int_equal(f2u(f[i]), f2u(want));
        }
        for (uint32_t i = 0; i < N; i++) g[i] = u2f((uint32_t)tu_rng_u64(&r)) ;
        g[0] = NAN; g[1] = -INFINITY; g[2] = 65520.0f; g[3] = 1e-9f; g[4] = -0.0f;
        TU_OK(rf_convert_from_f32(RF_DT_BF16, g, h2, N, &err), &err);
        for (uint32_t i = 0; i < N; i++) assert_int_equal(h2[i], rf_f32_to_bf16(g[i]));
        TU_OK(rf_convert_from_f32(RF_DT_F16, g, h2, N, &err), &err);
        for (uint32_t i = 0; i < N; i++) assert_int_equal(h2[i], rf_f32_to_f16(g[i]));
    }
    rf_cpu_set_mask(~0u);
    assert_int_equal(rf_convert_to_f32(RF_DT_I32, h, f, 4, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "I32"));
    free(h); free(h2); free(f); free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_bf16_exhaustive),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_f16_exhaustive),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bulk_matches_scalar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
