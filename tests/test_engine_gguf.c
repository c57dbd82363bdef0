/* The engine on GGUF files: ggml block-quantized products against the scalar reference (every
 * type, decode and batch, any thread count), views and row slices, the config and tokenizer read
 * back from a GGUF against the checkpoint's, and whole forward passes: an F32 GGUF gives the checkpoint's logits. (The
 * comparison with llama.cpp on the same files is tests/llamacpp/run.sh.) */
#include "testutil.h"

#include "engine/engine_internal.h"
#include "engine/gguf_weights.h"
#include "io/gguf_arch.h"
#include "tokenizer/tok_gguf.h"

#include <jansson.h>
#include <utf8proc.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int TYPES[] = {RF_GT_Q4_0, RF_GT_Q4_1, RF_GT_Q5_0, RF_GT_Q5_1, RF_GT_Q8_0, RF_GT_Q2_K,
                            RF_GT_Q3_K, RF_GT_Q4_K, RF_GT_Q5_K, RF_GT_Q6_K, RF_GT_IQ4_NL, RF_GT_IQ4_XS};

static void test_matmul_types(void **state)
{
    (void)state;
    const uint64_t rows = 70, cols = 512;
    const int ntoks[] = {1, 5, 17};
    float *w = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * cols * 17);
    float *y = malloc(sizeof(float) * rows * 17), *yr = malloc(sizeof(float) * rows * 17), *y3 = malloc(sizeof(float) * rows * 17);
    uint8_t *q = malloc(rows * cols * 2);
    tu_rng rng = {3};
    for (uint64_t i = 0; i < rows * cols; i++) w[i] = (float)tu_rng_normal(&rng) * 0.05f;
    for (uint64_t i = 0; i < cols * 17; i++) x[i] = (float)tu_rng_normal(&rng);
    rf_pool *p3;
    rf_err err;
    TU_OK(rf_pool_create(3, &p3, &err), &err);
    for (size_t k = 0; k < sizeof TYPES / sizeof TYPES[0]; k++) {
        int t = TYPES[k];
        TU_OK(rf_gquant_rows(t, w, rows, cols, q, &err), &err);
        rf_wmat m = {.dtype = RF_DT_U8, .gtype = t, .rows = rows, .cols = cols, .data = q};
        TU_OK(rf_wmat_check(&m, "w", &err), &err);
        assert_int_equal(rf_wmat_bytes(&m), rows * rf_gtype_row_bytes(t, cols));
        for (size_t n = 0; n < sizeof ntoks / sizeof ntoks[0]; n++) {
            int T = ntoks[n];
            rf_matmul(&m, x, T, y, NULL);
            rf_matmul(&m, x, T, y3, p3);
            rf_matmul_ref(&m, x, T, yr);
            assert_memory_equal(y, y3, sizeof(float) * rows * (uint64_t)T); /* any thread count */
            for (uint64_t i = 0; i < rows * (uint64_t)T; i++) {
                double scale = 0;
                for (uint64_t c = 0; c < cols; c++) scale += fabs((double)x[(i / rows) * cols + c]) * 0.2;
                if (!(fabs(y[i] - yr[i]) <= 1e-5 * scale))
                    fail_msg("%s ntok %d element %llu: %g vs reference %g", rf_gtype_name(t), T, (unsigned long long)i,
                             y[i], yr[i]);
            }
        }
        /* the product uses the decoded weights: one row against rf_gdequant_row */
        float row[512], ref = 0, got;
        TU_OK(rf_gdequant_row(t, q + 5 * rf_gtype_row_bytes(t, cols), cols, row, &err), &err);
        for (uint64_t c = 0; c < cols; c++) ref += row[c] * x[c];
        rf_matmul(&m, x, 1, y, NULL);
        got = y[5];
        assert_true(fabsf(got - ref) <= 1e-4f * (1 + fabsf(ref)));
        /* a row slice is the same rows */
        rf_wmat s = rf_wmat_rows(&m, 5, 3);
        rf_wmat_row(&s, 0, row);
        float row2[512];
        rf_wmat_row_ref(&m, 5, row2);
        assert_memory_equal(row, row2, sizeof row);
    }
    rf_pool_free(p3);
    free(w);
    free(x);
    free(y);
    free(yr);
    free(y3);
    free(q);
}

static char *export_model(const char *name, int type, char **dir)
{
    const char *md = tu_model_dir(name);
    if (!md) return NULL;
    rf_model *m;
    rf_err err;
    TU_OK(rf_model_open(md, &m, &err), &err);
    int *t = calloc(rf_model_unit_count(m) + 1, sizeof *t);
    TU_OK(rf_gguf_types_uniform(m, type, t, &err), &err);
    *dir = tu_mkdtemp();
    size_t n = strlen(*dir) + 32;
    char *p = malloc(n);
    snprintf(p, n, "%s/m.gguf", *dir);
    TU_OK(rf_gguf_export(m, t, NULL, p, NULL, NULL, &err), &err);
    free(t);
    rf_model_free(m);
    return p;
}

/* The config read back from a GGUF is the checkpoint's; llama-family files, whose q/k rows are
 * stored interleaved per head, are roped on adjacent pairs (the same model). */
static void check_config(const char *model)
{
    char *dir, *p = export_model(model, RF_GT_Q8_0, &dir);
    if (!p) return;
    rf_config a, b;
    rf_err err;
    TU_OK(rf_config_load(tu_model_dir(model), &a, &err), &err);
    rf_gguf *g;
    TU_OK(rf_gguf_open(p, &g, &err), &err);
    TU_OK(rf_gguf_config(g, &b, NULL, &err), &err);
    rf_gguf_close(g);
    assert_int_equal(a.arch, b.arch);
    assert_int_equal(a.hidden_size, b.hidden_size);
    assert_int_equal(a.intermediate_size, b.intermediate_size);
    assert_int_equal(a.num_layers, b.num_layers);
    assert_int_equal(a.num_heads, b.num_heads);
    assert_int_equal(a.num_kv_heads, b.num_kv_heads);
    assert_int_equal(a.head_dim, b.head_dim);
    assert_int_equal(a.vocab_size, b.vocab_size);
    assert_int_equal(a.tie_word_embeddings, b.tie_word_embeddings);
    assert_int_equal(a.num_experts, b.num_experts);
    assert_int_equal(a.experts_per_tok, b.experts_per_tok);
    assert_int_equal(a.moe_intermediate_size, b.moe_intermediate_size);
    assert_int_equal(a.qk_norm, b.qk_norm);
    assert_int_equal(a.max_position_embeddings, b.max_position_embeddings);
    assert_true(fabs(a.rope.theta - b.rope.theta) <= 1e-6 * a.rope.theta);
    assert_true(fabs(a.rms_norm_eps - b.rms_norm_eps) <= 1e-6 * a.rms_norm_eps);
    assert_int_equal(b.rope_interleaved, a.arch == RF_ARCH_LLAMA);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

static void test_config(void **state)
{
    (void)state;
    check_config("stories260k");
    check_config("qwen3-dense-mini");
    check_config("qwen3-moe-mini");
}

/* An F32 GGUF of an F32 checkpoint is the same model: the same logits up to float rounding (the
 * GGUF rows go through the ggml path, the safetensors ones through the f32 kernels, which may sum
 * in another order, e.g. the AVX-512 panels). */
static void test_forward_f32(void **state)
{
    (void)state;
    char *dir, *p = export_model("stories260k", RF_GT_F32, &dir);
    rf_engine *a, *b;
    rf_err err;
    rf_engine_opts o = {.threads = 2, .max_ctx = 64};
    TU_OK(rf_engine_open(tu_model_dir("stories260k"), &o, &a, &err), &err);
    TU_OK(rf_engine_open(p, &o, &b, &err), &err);
    const rf_config *ca = rf_engine_config(a), *cb = rf_engine_config(b);
    assert_int_equal(cb->arch, RF_ARCH_LLAMA);
    assert_int_equal(ca->hidden_size, cb->hidden_size);
    assert_int_equal(ca->num_layers, cb->num_layers);
    assert_int_equal(ca->num_kv_heads, cb->num_kv_heads);
    assert_int_equal(ca->head_dim, cb->head_dim);
    assert_int_equal(ca->vocab_size, cb->vocab_size);
    assert_int_equal(cb->tie_word_embeddings, 1);
    assert_true(fabs(ca->rms_norm_eps - cb->rms_norm_eps) < 1e-12);
    int32_t toks[12] = {1, 403, 407, 261, 378, 429, 14, 367, 359, 300, 2, 45};
    int V = rf_engine_vocab(a);
    float *la = malloc(sizeof(float) * 12 * (size_t)V), *lb = malloc(sizeof(float) * 12 * (size_t)V);
    TU_OK(rf_engine_forward(a, toks, 12, la, 1, &err), &err);
    TU_OK(rf_engine_forward(b, toks, 12, lb, 1, &err), &err);
    for (int i = 0; i < 12 * V; i++)
        if (fabsf(la[i] - lb[i]) > 1e-4f * (1 + fabsf(la[i]))) fail_msg("logit %d: %g vs %g", i, la[i], lb[i]);
    /* and one token at a time (decode path) */
    rf_engine_reset(b);
    for (int i = 0; i < 12; i++) TU_OK(rf_engine_forward(b, toks + i, 1, lb, 0, &err), &err);
    for (int v = 0; v < V; v++) assert_true(fabsf(la[11 * V + v] - lb[v]) <= 1e-4f * (1 + fabsf(la[11 * V + v])));
    free(la);
    free(lb);
    rf_engine_free(a);
    rf_engine_free(b);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

/* Every family of the writer through a GGUF and back (the transformers fixtures of
 * tests/fixtures/arch, with stories260k's tokenizer: the same 512 ids): F32 GGUF logits equal the
 * checkpoint's. mistral's 16-token sliding window is not in llama.cpp's llama (nor in the GGUF):
 * compared on the first 16 positions. */
static void copy_file(const char *src, const char *dst)
{
    size_t n;
    char *d = tu_read_file(src, &n);
    assert_non_null(d);
    assert_int_equal(tu_write_file(dst, d, n), 0);
    free(d);
}

static void test_fixture_families(void **state)
{
    (void)state;
    static const char *const fams[] = {"mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe"};
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"};
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        char *dir = tu_mkdtemp(), src[1024], dst[1024];
        for (size_t i = 0; i < 4; i++) {
            if (i < 2) snprintf(src, sizeof src, "%s/tests/fixtures/arch/%s/%s", RF_SOURCE_DIR, fams[f], files[i]);
            else snprintf(src, sizeof src, "%s/models/stories260k/%s", RF_SOURCE_DIR, files[i]);
            snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
            copy_file(src, dst);
        }
        rf_model *m;
        rf_err err;
        TU_OK(rf_model_open(dir, &m, &err), &err);
        int *t = calloc(rf_model_unit_count(m) + 1, sizeof *t);
        TU_OK(rf_gguf_types_uniform(m, RF_GT_F32, t, &err), &err);
        char gp[1100];
        snprintf(gp, sizeof gp, "%s.gguf", dir);
        TU_OK(rf_gguf_export(m, t, NULL, gp, NULL, NULL, &err), &err);
        rf_engine *a, *b;
        rf_engine_opts o = {.threads = 2, .max_ctx = 64};
        TU_OK(rf_engine_open(dir, &o, &a, &err), &err);
        TU_OK(rf_engine_open(gp, &o, &b, &err), &err);
        int n = strcmp(fams[f], "mistral") ? 40 : 16, V = rf_engine_vocab(a);
        int32_t toks[40];
        for (int i = 0; i < n; i++) toks[i] = (int32_t)((i * 131 + 7) % V);
        float *la = malloc(sizeof(float) * (size_t)(n * V)), *lb = malloc(sizeof(float) * (size_t)(n * V));
        TU_OK(rf_engine_forward(a, toks, n, la, 1, &err), &err);
        TU_OK(rf_engine_forward(b, toks, n, lb, 1, &err), &err);
        for (int i = 0; i < n * V; i++)
            if (fabsf(la[i] - lb[i]) > 1e-4f * (1 + fabsf(la[i])))
                fail_msg("%s: logit %d: checkpoint %g, GGUF %g", fams[f], i, la[i], lb[i]);
        free(la);
        free(lb);
        rf_engine_free(a);
        rf_engine_free(b);
        rf_model_free(m);
        free(t);
        remove(gp);
        tu_rmtree(dir);
        free(dir);
    }
}

/* The tokenizer rebuilt from tokenizer.ggml.* encodes and decodes as the original. */
static void check_tokenizer(const char *model, const char *text_rel)
{
    char *dir, *p = export_model(model, RF_GT_Q8_0, &dir);
    if (!p) return;
    const char *tp = tu_shared_path(text_rel);
    char *text = NULL;
    size_t n = 0;
    if (tp) text = tu_read_file(tp, &n);
    if (!text) {
        text = strdup("Once upon a time, there was a little girl. She said: \"Hello!\" <s> 123\n\nThe end.");
        n = strlen(text);
    }
    if (n > 40000) n = 40000;
    while (n && ((unsigned char)text[n] & 0xC0) == 0x80) n--; /* whole UTF-8 characters */
    rf_tok *a, *b;
    rf_err err;
    TU_OK(rf_tok_load(tu_model_dir(model), &a, &err), &err);
    TU_OK(rf_tok_load(p, &b, &err), &err);
    for (int special = 0; special < 2; special++) {
        int32_t *ia, *ib;
        uint64_t na, nb;
        TU_OK(rf_tok_encode(a, text, n, special, &ia, &na, &err), &err);
        TU_OK(rf_tok_encode(b, text, n, special, &ib, &nb, &err), &err);
        assert_int_equal(na, nb);
        assert_memory_equal(ia, ib, na * sizeof *ia);
        char *da, *db;
        TU_OK(rf_tok_decode(a, ia, na, &da, NULL, &err), &err);
        TU_OK(rf_tok_decode(b, ib, nb, &db, NULL, &err), &err);
        assert_string_equal(da, db);
        free(da);
        free(db);
        free(ia);
        free(ib);
    }
    assert_int_equal(rf_tok_bos_id(a) >= 0 ? rf_tok_adds_bos(a) : 0, rf_tok_adds_bos(b));
    rf_tok_free(a);
    rf_tok_free(b);
    free(text);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

static void test_tokenizer_stories(void **state)
{
    (void)state;
    check_tokenizer("stories260k", "evaltext/tinystories-valid-a.txt");
}

static void test_tokenizer_qwen3(void **state)
{
    (void)state;
    if (!tu_model_dir("qwen3-dense-mini")) skip();
    check_tokenizer("qwen3-dense-mini", "evaltext/debprose-test.txt");
}

/* The real vocabularies (../shared/tokenizers: Llama 2 SentencePiece without tokenizer.model, so
 * scores from the merges; Llama 3 with ignore_merges; Qwen3): tokenizer.ggml.* written and read
 * back give Hugging Face's ids on every published case, except, for Qwen3, text its NFC
 * normalizer would change: GGUF has no normalizer (llama.cpp applies none either). */
static void test_real_tokenizers(void **state)
{
    (void)state;
    static const char *const names[] = {"tokenizers/llama2", "tokenizers/llama3", "tokenizers/qwen3"};
    int ran = 0;
    for (size_t k = 0; k < 3; k++) {
        const char *d = tu_shared_path(names[k]);
        if (!d) continue;
        char dir[1024], cases[1100], gp[1100];
        snprintf(dir, sizeof dir, "%s", d);
        snprintf(cases, sizeof cases, "%s/cases.jsonl", dir);
        char *tmp = tu_mkdtemp();
        snprintf(gp, sizeof gp, "%s/v.gguf", tmp);
        rf_tok *orig, *back;
        rf_err err;
        TU_OK(rf_tok_load(dir, &orig, &err), &err);
        rf_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.bos_token_id = cfg.eos_token_id = -1;
        rf_ggufw *w;
        TU_OK(rf_ggufw_create(gp, &w, &err), &err);
        TU_OK(rf_ggufw_set_str(w, "general.architecture", "llama", &err), &err);
        TU_OK(rf_tok_gguf_write(dir, &cfg, rf_tok_vocab_size(orig), w, NULL, &err), &err);
        TU_OK(rf_ggufw_finish(w, &err), &err);
        rf_ggufw_free(w);
        TU_OK(rf_tok_load(gp, &back, &err), &err);
        size_t n;
        char *text = tu_read_file(cases, &n), *line = text;
        int ncase = 0;
        while (line && *line) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            json_t *c = json_loads(line, 0, NULL);
            const char *t = json_string_value(json_object_get(c, "text"));
            json_t *ids = json_object_get(c, "ids");
            char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)t);
            int changed = k == 2 && nfc && strcmp(nfc, t);
            free(nfc);
            if (changed) {
                json_decref(c);
                line = nl ? nl + 1 : NULL;
                continue;
            }
            int32_t *got;
            uint64_t ng;
            TU_OK(rf_tok_encode(back, t, strlen(t), 0, &got, &ng, &err), &err);
            int same = ng == json_array_size(ids);
            for (uint64_t i = 0; same && i < ng; i++) same = got[i] == json_integer_value(json_array_get(ids, i));
            if (!same) fail_msg("%s: ids of %.60s differ from Hugging Face's", names[k], t);
            free(got);
            json_decref(c);
            ncase++;
            line = nl ? nl + 1 : NULL;
        }
        assert_true(ncase > 100);
        free(text);
        rf_tok_free(orig);
        rf_tok_free(back);
        tu_rmtree(tmp);
        free(tmp);
        ran++;
    }
    if (!ran) skip();
}

/* The 8-bit activation path on k-quants (matmul_q8.c, generate and ppl --fast): the scalar
 * reference within the rounding bound of the activations of the exact product (|w| d/2 per
 * term, d the activation block's scale), the SIMD kernels (decode rows and batch panels, a
 * partial last tile and ragged row counts) against the reference, bit-identical over thread
 * counts; types without a kernel take the exact product. */
static void test_matmul_q8_types(void **state)
{
    (void)state;
    static const int qt[] = {RF_GT_Q4_K, RF_GT_Q5_K, RF_GT_Q6_K};
    static const uint64_t shapes[][2] = {{70, 512}, {37, 768}, {5, 256}};
    static const int nt[] = {1, 2, 4, 5, 7, 13};
    tu_rng rng = {91};
    rf_pool *p2;
    rf_err err;
    TU_OK(rf_pool_create(2, &p2, &err), &err);
    int fast = 0;
    for (size_t k = 0; k < sizeof qt / sizeof qt[0]; k++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            uint64_t rows = shapes[s][0], cols = shapes[s][1];
            float *w = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * cols * 13);
            float *y = malloc(sizeof(float) * rows * 13), *yr = malloc(sizeof(float) * rows * 13);
            float *ye = malloc(sizeof(float) * rows * 13), *y2 = malloc(sizeof(float) * rows * 13);
            float *row = malloc(sizeof(float) * cols), *d = malloc(sizeof(float) * cols / 32);
            int8_t *q8 = malloc(cols);
            uint8_t *q = malloc(rows * rf_gtype_row_bytes(qt[k], cols));
            for (uint64_t i = 0; i < rows * cols; i++) w[i] = (float)tu_rng_normal(&rng) * 0.05f + (i % 7 == 0 ? 0.02f : 0.0f);
            for (uint64_t i = 0; i < cols * 13; i++) x[i] = (float)tu_rng_normal(&rng) * (i % 41 == 0 ? 8.0f : 1.0f);
            TU_OK(rf_gquant_rows(qt[k], w, rows, cols, q, &err), &err);
            rf_wmat m = {.dtype = RF_DT_U8, .gtype = qt[k], .rows = rows, .cols = cols, .data = q};
            fast += rf_matmul_q8_supported(&m);
            for (size_t n = 0; n < sizeof nt / sizeof nt[0]; n++) {
                int T = nt[n];
                rf_matmul_q8_ref(&m, x, T, yr);
                rf_matmul_ref(&m, x, T, ye);
                rf_matmul_q8(&m, x, T, y, NULL);
                rf_matmul_q8(&m, x, T, y2, p2);
                assert_memory_equal(y, y2, sizeof(float) * rows * (uint64_t)T);
                for (int t = 0; t < T; t++) {
                    rf_q8_quantize_ref(x + (uint64_t)t * cols, cols, q8, d, NULL);
                    for (uint64_t r = 0; r < rows; r++) {
                        rf_wmat_row_ref(&m, r, row);
                        double bound = 0, mag = 0;
                        for (uint64_t c = 0; c < cols; c++) {
                            bound += fabs(row[c]) * d[c / 32] * 0.5;
                            mag += fabs((double)row[c] * x[(uint64_t)t * cols + c]);
                        }
                        uint64_t i = (uint64_t)t * rows + r;
                        if (!(fabs((double)yr[i] - ye[i]) <= bound * 1.0001 + 1e-5 * mag))
                            fail_msg("%s %llux%llu tok %d row %llu: reference %g, exact %g, bound %g", rf_gtype_name(qt[k]),
                                     (unsigned long long)rows, (unsigned long long)cols, t, (unsigned long long)r, yr[i],
                                     ye[i], bound);
                        if (!(fabs((double)y[i] - yr[i]) <= 2e-5 * mag + 1e-5))
                            fail_msg("%s %llux%llu ntok %d tok %d row %llu: %g vs reference %g", rf_gtype_name(qt[k]),
                                     (unsigned long long)rows, (unsigned long long)cols, T, t, (unsigned long long)r, y[i],
                                     yr[i]);
                    }
                }
            }
            free(w); free(x); free(y); free(yr); free(ye); free(y2); free(row); free(d); free(q8); free(q);
        }
    /* no 8-bit kernel for Q8_0: the exact product */
    uint64_t rows = 9, cols = 256;
    float w[9 * 256], x[2 * 256], y1[18], y2[18];
    uint8_t q[9 * 272];
    for (int i = 0; i < 9 * 256; i++) w[i] = (float)tu_rng_normal(&rng);
    for (int i = 0; i < 512; i++) x[i] = (float)tu_rng_normal(&rng);
    TU_OK(rf_gquant_rows(RF_GT_Q8_0, w, rows, cols, q, &err), &err);
    rf_wmat m = {.dtype = RF_DT_U8, .gtype = RF_GT_Q8_0, .rows = rows, .cols = cols, .data = q};
    assert_false(rf_matmul_q8_supported(&m));
    rf_matmul(&m, x, 2, y1, NULL);
    rf_matmul_q8(&m, x, 2, y2, NULL);
    assert_memory_equal(y1, y2, sizeof y1);
    rf_pool_free(p2);
    unsigned need = RF_CPU_AVX512 | RF_CPU_AVX512VNNI | RF_CPU_AVX512VBMI;
    if ((rf_cpu_features() & need) == need) assert_int_equal(fast, 9);
}

/* A quantized GGUF runs, and its logits stay near the checkpoint's (Q8_0). */
static void test_forward_q8(void **state)
{
    (void)state;
    if (!tu_model_dir("qwen3-moe-mini")) skip();
    char *dir, *p = export_model("qwen3-moe-mini", RF_GT_Q8_0, &dir);
    rf_engine *a, *b;
    rf_err err;
    rf_engine_opts o = {.threads = 2, .max_ctx = 64};
    TU_OK(rf_engine_open(tu_model_dir("qwen3-moe-mini"), &o, &a, &err), &err);
    TU_OK(rf_engine_open(p, &o, &b, &err), &err);
    assert_int_equal(rf_engine_config(b)->arch, RF_ARCH_QWEN3_MOE);
    assert_int_equal(rf_engine_config(b)->num_experts, 8);
    int32_t toks[8] = {39, 449, 78, 1409, 11, 261, 2582, 3040};
    int V = rf_engine_vocab(a);
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    TU_OK(rf_engine_forward(a, toks, 8, la, 0, &err), &err);
    TU_OK(rf_engine_forward(b, toks, 8, lb, 0, &err), &err);
    double se = 0, ss = 0;
    for (int v = 0; v < V; v++) se += (la[v] - lb[v]) * (double)(la[v] - lb[v]), ss += la[v] * (double)la[v];
    assert_true(sqrt(se / ss) < 0.02);
    free(la);
    free(lb);
    rf_engine_free(a);
    rf_engine_free(b);
    tu_rmtree(dir);
    free(dir);
    free(p);
}

/* Files the engine refuses: an architecture ramfit does not run, rope scaling it cannot read. */
static void test_refusals(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    size_t n = strlen(dir) + 32;
    char *p = malloc(n);
    snprintf(p, n, "%s/x.gguf", dir);
    rf_err err;
    rf_ggufw *w;
    TU_OK(rf_ggufw_create(p, &w, &err), &err);
    TU_OK(rf_ggufw_set_str(w, "general.architecture", "bert", &err), &err);
    TU_OK(rf_ggufw_finish(w, &err), &err);
    rf_ggufw_free(w);
    rf_engine *e;
    assert_int_equal(rf_engine_open(p, NULL, &e, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "bert"));
    TU_OK(rf_ggufw_create(p, &w, &err), &err);
    TU_OK(rf_ggufw_set_str(w, "general.architecture", "llama", &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "llama.embedding_length", 64, &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "llama.block_count", 1, &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "llama.attention.head_count", 8, &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "llama.feed_forward_length", 128, &err), &err);
    TU_OK(rf_ggufw_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &err), &err);
    uint64_t ne[2] = {64, 10}, nf[1] = {4};
    TU_OK(rf_ggufw_add_tensor(w, "token_embd.weight", RF_GT_F32, 2, ne, &err), &err);
    TU_OK(rf_ggufw_add_tensor(w, "rope_freqs.weight", RF_GT_F32, 1, nf, &err), &err);
    float z[640] = {0};
    TU_OK(rf_ggufw_write(w, z, sizeof z, &err), &err);
    TU_OK(rf_ggufw_write(w, z, 16, &err), &err);
    TU_OK(rf_ggufw_finish(w, &err), &err);
    rf_ggufw_free(w);
    assert_int_equal(rf_engine_open(p, NULL, &e, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "rope"));
    tu_rmtree(dir);
    free(dir);
    free(p);
}

/* Metadata values a config cannot hold (rope.freq_base NaN once became the default 10000, a
 * block_count of 1.5 or 1e30 was cast to an integer): each is refused naming its key. */
static void test_bad_metadata(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    size_t n = strlen(dir) + 32;
    char *p = malloc(n);
    snprintf(p, n, "%s/x.gguf", dir);
    static const struct { const char *key; float v; } bad[] = {
        {"llama.rope.freq_base", NAN}, {"llama.rope.freq_base", INFINITY}, {"llama.rope.freq_base", -5.0f},
        {"llama.block_count", 1.5f},   {"llama.block_count", 1e30f},       {"llama.attention.head_count", -8.0f},
        {"llama.expert_count", 2.5f},  {"llama.attention.layer_norm_rms_epsilon", NAN},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rf_err err;
        rf_ggufw *w;
        TU_OK(rf_ggufw_create(p, &w, &err), &err);
        TU_OK(rf_ggufw_set_str(w, "general.architecture", "llama", &err), &err);
        static const char *const ints[] = {"llama.embedding_length", "llama.block_count", "llama.attention.head_count",
                                           "llama.feed_forward_length"};
        static const uint32_t iv[] = {64, 1, 8, 128};
        for (int k = 0; k < 4; k++)
            if (strcmp(ints[k], bad[i].key)) TU_OK(rf_ggufw_set_u32(w, ints[k], iv[k], &err), &err);
        if (strcmp(bad[i].key, "llama.attention.layer_norm_rms_epsilon"))
            TU_OK(rf_ggufw_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &err), &err);
        TU_OK(rf_ggufw_set_f32(w, bad[i].key, bad[i].v, &err), &err);
        uint64_t ne[2] = {64, 10};
        TU_OK(rf_ggufw_add_tensor(w, "token_embd.weight", RF_GT_F32, 2, ne, &err), &err);
        float z[640] = {0};
        TU_OK(rf_ggufw_write(w, z, sizeof z, &err), &err);
        TU_OK(rf_ggufw_finish(w, &err), &err);
        rf_ggufw_free(w);
        rf_gguf *g;
        TU_OK(rf_gguf_open(p, &g, &err), &err);
        rf_config c;
        rf_status st = rf_gguf_config(g, &c, NULL, &err);
        rf_gguf_close(g);
        if (st != RF_ERR_FORMAT || !strstr(err.msg, bad[i].key))
            fail_msg("%s = %g: %s \"%s\", want a format error naming the key", bad[i].key, bad[i].v, rf_status_name(st),
                     st ? err.msg : "");
    }
    tu_rmtree(dir);
    free(dir);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_types), cmocka_unit_test(test_matmul_q8_types),      cmocka_unit_test(test_config),
        cmocka_unit_test(test_forward_f32),       cmocka_unit_test(test_fixture_families),       cmocka_unit_test(test_tokenizer_stories),
        cmocka_unit_test(test_tokenizer_qwen3),   cmocka_unit_test(test_real_tokenizers),   cmocka_unit_test(test_forward_q8),
        cmocka_unit_test(test_refusals),          cmocka_unit_test(test_bad_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
