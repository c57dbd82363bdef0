/* Every model family against Hugging Face transformers itself: the engine's logits on the tiny
 * random checkpoints of tests/fixtures/arch/ (made by transformers 5.17, tests/ref/archfix.py)
 * must match transformers' to 1e-4 relative (max |diff| / max |logit|), batched and token by
 * token through the KV cache. The fixtures use every feature of each family: NoPE layers,
 * chunked attention and temperature tuning (llama4), shared experts (qwen2_moe, glm4_moe,
 * deepseek_v3), group-limited sigmoid routing, multi-head latent attention with and without a q
 * LoRA, YaRN, partial rotary, LongRoPE (both factor sets), sliding/global layers (gemma3, mistral),
 * activations and MLP biases, FP8 weights with block scales, multimodal wrappers. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A little-endian float32 .npy array (numpy's format 1.0/2.0, C order). */
static float *load_npy(const char *path, uint64_t *n, int *ndim, uint64_t shape[4])
{
    size_t len;
    char *b = tu_read_file(path, &len);
    if (!b) return NULL;
    assert_true(len > 10 && !memcmp(b, "\x93NUMPY", 6));
    size_t hl = b[6] == 1 ? (size_t)(unsigned char)b[8] | (size_t)(unsigned char)b[9] << 8
                          : (size_t)(unsigned char)b[8] | (size_t)(unsigned char)b[9] << 8 |
                                (size_t)(unsigned char)b[10] << 16 | (size_t)(unsigned char)b[11] << 24;
    size_t off = b[6] == 1 ? 10 : 12;
    char *hdr = strndup(b + off, hl);
    assert_non_null(strstr(hdr, "'descr': '<f4'"));
    assert_non_null(strstr(hdr, "'fortran_order': False"));
    const char *sp = strstr(hdr, "'shape': (");
    assert_non_null(sp);
    sp += 10;
    *ndim = 0;
    *n = 1;
    while (*sp && *sp != ')') {
        char *end;
        uint64_t v = strtoull(sp, &end, 10);
        if (end == sp) break;
        shape[(*ndim)++] = v;
        *n *= v;
        sp = end;
        while (*sp == ',' || *sp == ' ') sp++;
    }
    free(hdr);
    assert_true(off + hl + *n * 4 <= len);
    float *out = malloc(*n * sizeof *out);
    memcpy(out, b + off + hl, *n * 4);
    free(b);
    return out;
}

static int32_t *load_ids(const char *dir, int *rows, int *cols)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/ids.json", dir);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    json_t *ids = json_object_get(j, "ids");
    *rows = (int)json_array_size(ids);
    *cols = (int)json_array_size(json_array_get(ids, 0));
    int32_t *out = malloc((size_t)*rows * (size_t)*cols * sizeof *out);
    for (int r = 0; r < *rows; r++)
        for (int c = 0; c < *cols; c++)
            out[r * *cols + c] = (int32_t)json_integer_value(json_array_get(json_array_get(ids, (size_t)r), (size_t)c));
    json_decref(j);
    return out;
}

/* max |a - b| / max |b| over n values */
static double rel_err(const float *a, const float *b, uint64_t n)
{
    double md = 0, mb = 0;
    for (uint64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md ? d : md;
        mb = fabs(b[i]) > mb ? fabs(b[i]) : mb;
    }
    return md / (mb > 0 ? mb : 1);
}

#define TOL 1e-4

static void check_fixture(const char *name)
{
    char dir[4096], path[4300];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/arch/%s", RF_SOURCE_DIR, name);
    int rows, cols;
    int32_t *ids = load_ids(dir, &rows, &cols);
    uint64_t n, shape[4];
    int nd;
    snprintf(path, sizeof path, "%s/logits.npy", dir);
    float *want = load_npy(path, &n, &nd, shape);
    assert_non_null(want);
    assert_int_equal(nd, 3);
    assert_int_equal(shape[0], (uint64_t)rows);
    assert_int_equal(shape[1], (uint64_t)cols);
    rf_engine *e;
    rf_err err;
    rf_engine_opts o = {2, 64, 0};
    TU_OK(rf_engine_open(dir, &o, &e, &err), &err);
    int V = rf_engine_vocab(e);
    assert_int_equal((uint64_t)V, shape[2]);
    float *got = malloc((size_t)cols * (size_t)V * sizeof *got);
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        rf_engine_reset(e);
        TU_OK(rf_engine_forward(e, ids + r * cols, cols, got, 1, &err), &err);
        double re = rel_err(got, want + (uint64_t)r * (uint64_t)cols * (uint64_t)V, (uint64_t)cols * (uint64_t)V);
        worst = re > worst ? re : worst;
    }
    /* token by token through the KV cache after a 40-token prefill (transformers' incremental logits) */
    snprintf(path, sizeof path, "%s/logits_incremental.npy", dir);
    uint64_t ni, si[4];
    int ndi;
    float *inc = load_npy(path, &ni, &ndi, si);
    double worst_inc = 0;
    if (inc) {
        assert_int_equal(si[1], (uint64_t)V);
        rf_engine_reset(e);
        TU_OK(rf_engine_forward(e, ids, 40, NULL, 0, &err), &err);
        for (uint64_t t = 0; t < si[0]; t++) {
            TU_OK(rf_engine_forward(e, ids + 40 + t, 1, got, 0, &err), &err);
            double re = rel_err(got, inc + t * (uint64_t)V, (uint64_t)V);
            worst_inc = re > worst_inc ? re : worst_inc;
        }
        free(inc);
    }
    printf("  %-22s max rel error %.2e (batched)%s", name, worst, inc ? "" : "\n");
    if (inc) printf(", %.2e (incremental)\n", worst_inc);
    if (worst > TOL || worst_inc > TOL) fail_msg("%s: logits differ from transformers' by %.3g / %.3g (> %g)", name, worst,
                                                 worst_inc, TOL);
    free(got);
    free(want);
    free(ids);
    rf_engine_free(e);
}

#define FIXTURE(n) static void test_##n(void **state) { (void)state; check_fixture(#n); }
FIXTURE(llama_ext)
FIXTURE(llama_tanh)
FIXTURE(mistral)
FIXTURE(qwen2)
FIXTURE(qwen3)
FIXTURE(mixtral)
FIXTURE(qwen3_moe)
FIXTURE(llama4_text)
FIXTURE(llama4_mm)
FIXTURE(qwen2_moe)
FIXTURE(glm4_moe)
FIXTURE(glm4_moe_lite)
FIXTURE(deepseek_v3)
FIXTURE(deepseek_v3_noqlora)
FIXTURE(deepseek_v3_fp8)
FIXTURE(gemma3_text)
FIXTURE(gemma3_mm)
FIXTURE(phi3)
FIXTURE(phi3_longrope)
FIXTURE(phi3_longrope_short)
FIXTURE(deepseek_v3_bias)
FIXTURE(gemma3_softcap)
FIXTURE(llama4_scout_style)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_ext),     cmocka_unit_test(test_llama_tanh),   cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_qwen2),         cmocka_unit_test(test_qwen3),        cmocka_unit_test(test_mixtral),
        cmocka_unit_test(test_qwen3_moe),     cmocka_unit_test(test_llama4_text),  cmocka_unit_test(test_llama4_mm),
        cmocka_unit_test(test_qwen2_moe),     cmocka_unit_test(test_glm4_moe),     cmocka_unit_test(test_glm4_moe_lite),
        cmocka_unit_test(test_deepseek_v3),   cmocka_unit_test(test_deepseek_v3_noqlora),
        cmocka_unit_test(test_deepseek_v3_fp8), cmocka_unit_test(test_gemma3_text), cmocka_unit_test(test_gemma3_mm),
        cmocka_unit_test(test_phi3),          cmocka_unit_test(test_phi3_longrope), cmocka_unit_test(test_phi3_longrope_short),
        cmocka_unit_test(test_deepseek_v3_bias), cmocka_unit_test(test_gemma3_softcap), cmocka_unit_test(test_llama4_scout_style),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
