/* ggml block-type kernels: encoders and decoders against vectors made by ggml's own code
 * (tests/fixtures/kquant/ggml_vectors.txt, written by tests/ref/ggml_vectors.c linked with
 * llama.cpp's libggml-base), fast paths against the scalar references, the type table against
 * ggml's sizes, llama-quantize's fallback rule, round-trip error bounds, and error reporting. */
#include "testutil.h"

#include "quant/kquant.h"
#include "ref/kq_inputs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int TYPES[] = {RF_GT_Q4_0, RF_GT_Q4_1, RF_GT_Q5_0, RF_GT_Q5_1, RF_GT_Q8_0, RF_GT_Q2_K,
                            RF_GT_Q3_K, RF_GT_Q4_K, RF_GT_Q5_K, RF_GT_Q6_K, RF_GT_IQ4_NL, RF_GT_IQ4_XS};
#define NTYPES (int)(sizeof TYPES / sizeof TYPES[0])

typedef struct vec_line { int type, row; uint64_t enc, dec; } vec_line;

static int load_vectors(vec_line **out)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/kquant/ggml_vectors.txt", RF_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0, cap = 1024;
    vec_line *v = malloc(sizeof *v * (size_t)cap);
    char line[256], name[32];
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        unsigned long long e, d;
        int r;
        assert_int_equal(sscanf(line, "%31s %d %llx %llx", name, &r, &e, &d), 4);
        int t = rf_gtype_parse(name);
        assert_true(t >= 0);
        if (n == cap) v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[n++] = (vec_line){t, r, e, d};
    }
    fclose(f);
    *out = v;
    return n;
}

/* Every encoder (reference and the path in use) and decoder against ggml's, row by row. */
static void test_ggml_vectors(void **state)
{
    (void)state;
    vec_line *v;
    int n = load_vectors(&v);
    assert_int_equal(n, NTYPES * KQ_ROWS);
    float *x = malloc(sizeof(float) * KQ_ROWS * KQ_COLS), *y = malloc(sizeof(float) * KQ_COLS);
    uint8_t *q = malloc((size_t)KQ_ROWS * KQ_COLS * 2), *qr = malloc(KQ_COLS * 2);
    kq_inputs(x);
    int bad = 0;
    for (int k = 0; k < NTYPES; k++) {
        int t = TYPES[k];
        uint64_t rb = rf_gtype_row_bytes(t, KQ_COLS);
        rf_err err;
        TU_OK(rf_gquant_rows(t, x, KQ_ROWS, KQ_COLS, q, &err), &err);
        for (int i = 0; i < n; i++) {
            if (v[i].type != t) continue;
            int r = v[i].row;
            rfk_encoder_ref(t)(x + (uint64_t)r * KQ_COLS, qr, KQ_COLS);
            uint64_t he = kq_hash(q + r * rb, rb), hr = kq_hash(qr, rb);
            TU_OK(rf_gdequant_row(t, qr, KQ_COLS, y, &err), &err);
            uint64_t hd = kq_hash(y, sizeof(float) * KQ_COLS);
            rfk_decoder_ref(t)(qr, y, KQ_COLS);
            uint64_t hdr = kq_hash(y, sizeof(float) * KQ_COLS);
            if (he != v[i].enc || hr != v[i].enc || hd != v[i].dec || hdr != v[i].dec) {
                if (bad++ < 12)
                    print_message("%s row %d: encode %s, reference encode %s, decode %s, reference decode %s\n",
                                  rf_gtype_name(t), r, he == v[i].enc ? "ok" : "DIFFERS", hr == v[i].enc ? "ok" : "DIFFERS",
                                  hd == v[i].dec ? "ok" : "DIFFERS", hdr == v[i].dec ? "ok" : "DIFFERS");
            }
        }
    }
    assert_int_equal(bad, 0);
    free(v);
    free(x);
    free(y);
    free(q);
    free(qr);
}

/* The fast paths equal the references on many more rows than the fixture holds. */
static void test_fast_equals_ref(void **state)
{
    (void)state;
    const uint64_t cols = 1024, rows = 48;
    float *x = malloc(sizeof(float) * rows * cols), *a = malloc(sizeof(float) * cols), *b = malloc(sizeof(float) * cols);
    uint8_t *qa = malloc(cols * 2), *qb = malloc(cols * 2);
    tu_rng rng = {7};
    for (uint64_t i = 0; i < rows * cols; i++) {
        double s = (i / cols) % 4 == 0 ? 1e-3 : (i / cols) % 4 == 1 ? 0.02 : (i / cols) % 4 == 2 ? 1.0 : 50.0;
        x[i] = (float)(tu_rng_student_t(&rng, 4) * s);
        if ((i / cols) % 7 == 3 && i % 5 == 0) x[i] = 0;
    }
    for (int k = 0; k < NTYPES; k++) {
        int t = TYPES[k];
        uint64_t rb = rf_gtype_row_bytes(t, cols);
        for (uint64_t r = 0; r < rows; r++) {
            rfk_encoder_ref(t)(x + r * cols, qa, cols);
            rfk_encoder(t)(x + r * cols, qb, cols);
            if (memcmp(qa, qb, rb)) fail_msg("%s row %llu: fast encoder differs", rf_gtype_name(t), (unsigned long long)r);
            rfk_decoder_ref(t)(qa, a, cols);
            rfk_decoder(t)(qa, b, cols);
            if (memcmp(a, b, sizeof(float) * cols))
                fail_msg("%s row %llu: fast decoder differs", rf_gtype_name(t), (unsigned long long)r);
        }
    }
    free(x);
    free(a);
    free(b);
    free(qa);
    free(qb);
}

/* Decoded error stays within each type's resolution: a round trip, not just self-consistency. */
static void test_round_trip_error(void **state)
{
    (void)state;
    const uint64_t cols = 512;
    float x[512], y[512];
    uint8_t q[1024];
    tu_rng rng = {11};
    for (uint64_t i = 0; i < cols; i++) x[i] = (float)tu_rng_normal(&rng);
    /* max relative RMS error (error RMS / weight RMS) a sane encoder of each type stays below */
    static const struct { int t; double lim; } lim[] = {
        {RF_GT_Q8_0, 0.01}, {RF_GT_Q6_K, 0.03}, {RF_GT_Q5_K, 0.06}, {RF_GT_Q5_0, 0.07}, {RF_GT_Q5_1, 0.07},
        {RF_GT_Q4_K, 0.12}, {RF_GT_Q4_0, 0.14}, {RF_GT_Q4_1, 0.14}, {RF_GT_IQ4_NL, 0.12}, {RF_GT_IQ4_XS, 0.12},
        {RF_GT_Q3_K, 0.25}, {RF_GT_Q2_K, 0.45},
    };
    for (size_t k = 0; k < sizeof lim / sizeof lim[0]; k++) {
        rf_err err;
        TU_OK(rf_gquant_rows(lim[k].t, x, 1, cols, q, &err), &err);
        TU_OK(rf_gdequant_row(lim[k].t, q, cols, y, &err), &err);
        double se = 0, ss = 0;
        for (uint64_t i = 0; i < cols; i++) se += (x[i] - y[i]) * (double)(x[i] - y[i]), ss += x[i] * (double)x[i];
        double rel = sqrt(se / ss);
        if (!(rel < lim[k].lim)) fail_msg("%s: relative RMS error %g >= %g", rf_gtype_name(lim[k].t), rel, lim[k].lim);
        if (!(rel > lim[k].lim / 20)) fail_msg("%s: relative RMS error %g is implausibly small", rf_gtype_name(lim[k].t), rel);
    }
}

/* Sizes as ggml's type_traits (block, bytes), names as llama.cpp spells them, the fallback rule. */
static void test_type_table(void **state)
{
    (void)state;
    static const struct { const char *n; int t; uint64_t blk, bytes; } want[] = {
        {"F32", 0, 1, 4},      {"F16", 1, 1, 2},        {"Q4_0", 2, 32, 18},  {"Q4_1", 3, 32, 20},
        {"Q5_0", 6, 32, 22},   {"Q5_1", 7, 32, 24},     {"Q8_0", 8, 32, 34},  {"Q2_K", 10, 256, 84},
        {"Q3_K", 11, 256, 110}, {"Q4_K", 12, 256, 144}, {"Q5_K", 13, 256, 176}, {"Q6_K", 14, 256, 210},
        {"IQ4_NL", 20, 32, 18}, {"IQ4_XS", 23, 256, 136}, {"BF16", 30, 1, 2}, {"IQ2_XXS", 16, 256, 66},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_string_equal(rf_gtype_name(want[i].t), want[i].n);
        assert_int_equal(rf_gtype_parse(want[i].n), want[i].t);
        assert_int_equal(rf_gtype_block(want[i].t), want[i].blk);
        assert_int_equal(rf_gtype_block_bytes(want[i].t), want[i].bytes);
    }
    assert_int_equal(rf_gtype_parse("q4_k"), RF_GT_Q4_K);
    assert_int_equal(rf_gtype_parse("Q4_K_M"), -1);
    assert_int_equal(rf_gtype_parse("Q4"), -1);
    assert_null(rf_gtype_name(4));
    assert_null(rf_gtype_name(-1));
    assert_int_equal(rf_gtype_row_bytes(RF_GT_Q4_K, 4096), 16 * 144);
    assert_int_equal(rf_gtype_row_bytes(RF_GT_Q4_K, 4000), 0);
    /* llama-quantize's tensor_type_fallback */
    assert_int_equal(rf_gtype_fallback(RF_GT_Q4_K, 4096), RF_GT_Q4_K);
    assert_int_equal(rf_gtype_fallback(RF_GT_Q4_K, 64), RF_GT_Q5_0);
    assert_int_equal(rf_gtype_fallback(RF_GT_Q5_K, 128), RF_GT_Q5_1);
    assert_int_equal(rf_gtype_fallback(RF_GT_Q6_K, 96), RF_GT_Q8_0);
    assert_int_equal(rf_gtype_fallback(RF_GT_Q2_K, 64), RF_GT_Q4_0);
    assert_int_equal(rf_gtype_fallback(RF_GT_Q3_K, 64), RF_GT_Q4_0);
    assert_int_equal(rf_gtype_fallback(RF_GT_IQ4_XS, 64), RF_GT_IQ4_NL);
    assert_int_equal(rf_gtype_fallback(RF_GT_Q4_K, 172), RF_GT_F16);
    assert_int_equal(rf_gtype_fallback(RF_GT_Q8_0, 172), RF_GT_F16);
    assert_int_equal(rf_gtype_fallback(RF_GT_BF16, 172), RF_GT_BF16);
    for (int t = 0; t < RF_GT_COUNT; t++)
        if (rf_gtype_supported(t)) assert_non_null(rf_gtype_name(t));
}

static void test_errors(void **state)
{
    (void)state;
    float x[256] = {0};
    uint8_t q[512];
    rf_err err;
    assert_int_equal(rf_gquant_rows(RF_GT_Q4_K, x, 1, 200, q, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "256"));
    assert_int_equal(rf_gquant_rows(16, x, 1, 256, q, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "IQ2_XXS"));
    x[37] = NAN;
    assert_int_equal(rf_gquant_rows(RF_GT_Q8_0, x, 1, 256, q, &err), RF_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "column 37"));
    x[37] = INFINITY;
    assert_int_equal(rf_gquant_rows(RF_GT_F16, x, 1, 256, q, &err), RF_ERR_NONFINITE);
    assert_int_equal(rf_gdequant_row(4, q, 256, x, &err), RF_ERR_UNSUPPORTED);
}

/* F16/BF16/F32 rows are plain conversions (ggml's fp32_to_fp16 / fp32_to_bf16 rounding). */
static void test_float_types(void **state)
{
    (void)state;
    float x[64], y[64];
    uint16_t h[64];
    for (int i = 0; i < 64; i++) x[i] = (float)(i - 31) * 0.3337f;
    rf_err err;
    TU_OK(rf_gquant_rows(RF_GT_BF16, x, 2, 32, h, &err), &err);
    for (int i = 0; i < 64; i++) assert_int_equal(h[i], rf_f32_to_bf16(x[i]));
    TU_OK(rf_gquant_rows(RF_GT_F16, x, 1, 64, h, &err), &err);
    TU_OK(rf_gdequant_row(RF_GT_F16, h, 64, y, &err), &err);
    for (int i = 0; i < 64; i++) assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-11f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ggml_vectors),   cmocka_unit_test(test_fast_equals_ref),
        cmocka_unit_test(test_round_trip_error), cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_float_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
