/* GGUF export: the file is read back with the GGUF reader and checked against the checkpoint and
 * against llama.cpp's conventions written out here (tensor names, ggml shape order, llama-family
 * q/k row permutation, F32 norms and routers, stacked experts, metadata keys, tokenizer keys),
 * every unit's bytes against the encoder on the same rows, uniform types with llama-quantize's
 * fallbacks, byte-identical output for any thread count, llama-quantize tensor-type files, and
 * failures that leave nothing behind. The llama.cpp judge itself runs in tests/llamacpp/run.sh. */
#include "testutil.h"

#include "io/gguf_arch.h"
#include "tokenizer/tok_gguf.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static int64_t get_int(const rf_gguf *g, const char *key)
{
    int64_t v = -999;
    rf_err err;
    TU_OK(rf_gguf_get_int(g, key, &v, &err), &err);
    return v;
}

static void assert_str_kv(const rf_gguf *g, const char *key, const char *want)
{
    const char *s;
    uint64_t n;
    rf_err err;
    TU_OK(rf_gguf_get_str(g, key, &s, &n, &err), &err);
    if (n != strlen(want) || memcmp(s, want, n)) fail_msg("%s = %.*s, want %s", key, (int)n, s, want);
}

static rf_model *open_model(const char *name)
{
    const char *dir = tu_model_dir(name);
    if (!dir) return NULL;
    rf_model *m;
    rf_err err;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    return m;
}

static void export_types(const rf_model *m, const int *types, const char *path, int threads, rf_gguf_result *r)
{
    rf_gguf_opts o;
    rf_gguf_opts_default(&o);
    o.threads = threads;
    o.force = 1;
    rf_err err;
    TU_OK(rf_gguf_export(m, types, &o, path, NULL, r, &err), &err);
}

static int *uniform(const rf_model *m, int type)
{
    int *t = calloc(rf_model_unit_count(m) + 1, sizeof *t);
    rf_err err;
    TU_OK(rf_gguf_types_uniform(m, type, t, &err), &err);
    return t;
}

/* Every tensor of the GGUF against the checkpoint: name by the family table, shape reversed, F32
 * data equal (rows permuted for llama q/k), and for each unit the bytes the encoder gives for
 * the same (permuted) rows. */
static void check_against_model(const rf_model *m, const rf_gguf *g, const int *types)
{
    const rf_config *c = rf_model_config(m);
    const rf_gguf_family *fam = rf_gguf_family_of(c->arch);
    assert_non_null(fam);
    uint64_t seen = 0;
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        const rf_tensor *t = ti->t;
        char hf[256], gname[128];
        int unit = ti->unit;
        const rf_unit *u = unit >= 0 ? rf_model_unit(m, (uint64_t)unit) : NULL;
        if (u && u->n_experts) snprintf(hf, sizeof hf, "%s.weight", u->name);
        else snprintf(hf, sizeof hf, "%s", t->name);
        assert_true(rf_gguf_tensor_name(fam, hf, gname, sizeof gname));
        const rf_gguf_tensor *gt = rf_gguf_find_tensor(g, gname);
        if (u && u->role == RF_ROLE_LM_HEAD && c->tie_word_embeddings) {
            assert_null(gt);
            continue;
        }
        if (!gt) fail_msg("no GGUF tensor %s for %s", gname, t->name);
        int want_type = u ? types[unit] : RF_GT_F32;
        if (gt->type != want_type) fail_msg("%s: type %s, want %s", gname, rf_gtype_name(gt->type), rf_gtype_name(want_type));
        uint64_t cols = t->ndim >= 2 ? t->shape[t->ndim - 1] : 1, rows = t->nelem / cols;
        if (u && u->n_members > 1) {
            assert_int_equal(gt->ndim, 3);
            assert_int_equal(gt->ne[2], (uint64_t)u->n_members);
            assert_int_equal(gt->ne[1], t->shape[0]);
        } else {
            assert_int_equal(gt->ndim, t->ndim);
            for (int d = 0; d < t->ndim; d++) assert_int_equal(gt->ne[d], t->shape[t->ndim - 1 - d]);
        }
        /* where this tensor's rows start inside the GGUF tensor (per-expert tensors are stacked) */
        uint64_t row_off = ti->expert >= 0 && u && u->n_members > 1 ? (uint64_t)ti->expert * rows : 0;
        uint64_t hd = 0;
        if (fam->permute_qk && (ti->role == RF_ROLE_ATTN_Q || ti->role == RF_ROLE_ATTN_K ||
                                (ti->role == RF_ROLE_BIAS && (strstr(t->name, "q_proj") || strstr(t->name, "k_proj"))))) {
            int heads = strstr(t->name, "q_proj") ? c->num_heads : c->num_kv_heads;
            hd = rows / (uint64_t)heads;
        }
        uint64_t rb = rf_gtype_row_bytes(gt->type, cols);
        float *src = malloc(sizeof(float) * cols);
        uint8_t *enc = malloc(rb);
        for (uint64_t r = 0; r < rows; r++) {
            /* independent of the writer's helper: HF row of GGUF row r in the interleaved layout */
            uint64_t sr = r;
            if (hd) {
                uint64_t h = r / hd, k = r % hd;
                sr = h * hd + (k % 2 ? hd / 2 + k / 2 : k / 2);
            }
            rf_err err;
            TU_OK(rf_convert_to_f32(t->dtype, (const uint8_t *)t->data + sr * cols * rf_dtype_size(t->dtype), src, cols, &err),
                  &err);
            TU_OK(rf_gquant_rows(gt->type, src, 1, cols, enc, &err), &err);
            if (memcmp(enc, (const uint8_t *)gt->data + (row_off + r) * rb, rb))
                fail_msg("%s (%s) row %llu differs from the encoding of %s row %llu", gname, rf_gtype_name(gt->type),
                         (unsigned long long)r, t->name, (unsigned long long)sr);
        }
        free(src);
        free(enc);
        seen++;
    }
    assert_true(seen > 0);
}

static void test_stories_f32_and_q4k(void **state)
{
    (void)state;
    rf_model *m = open_model("stories260k");
    assert_non_null(m);
    char *dir = tu_mkdtemp(), *p32 = path_in(dir, "s.f32.gguf"), *pq = path_in(dir, "s.q4k.gguf");
    int *t32 = uniform(m, RF_GT_F32), *tq = uniform(m, RF_GT_Q4_K);
    rf_gguf_result r;
    export_types(m, t32, p32, 2, &r);
    assert_string_equal(r.arch, "llama");
    assert_string_equal(r.tok_model, "llama");
    rf_gguf *g;
    rf_err err;
    TU_OK(rf_gguf_open(p32, &g, &err), &err);
    assert_int_equal(rf_gguf_file_size(g), r.file_bytes);
    check_against_model(m, g, t32);
    assert_str_kv(g, "general.architecture", "llama");
    assert_str_kv(g, "general.name", "stories260k");
    assert_int_equal(get_int(g, "general.quantization_version"), 2);
    assert_int_equal(get_int(g, "llama.block_count"), 5);
    assert_int_equal(get_int(g, "llama.embedding_length"), 64);
    assert_int_equal(get_int(g, "llama.feed_forward_length"), 172);
    assert_int_equal(get_int(g, "llama.attention.head_count"), 8);
    assert_int_equal(get_int(g, "llama.attention.head_count_kv"), 4);
    assert_int_equal(get_int(g, "llama.rope.dimension_count"), 8);
    assert_int_equal(get_int(g, "llama.vocab_size"), 512);
    assert_int_equal(get_int(g, "llama.context_length"), 512);
    double v;
    TU_OK(rf_gguf_get_float(g, "llama.rope.freq_base", &v, &err), &err);
    assert_true(v == 10000.0);
    TU_OK(rf_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &v, &err), &err);
    assert_true(fabs(v - 1e-5) < 1e-12);
    assert_null(rf_gguf_find_tensor(g, "output.weight")); /* tied */
    assert_non_null(rf_gguf_find_tensor(g, "output_norm.weight"));
    /* SentencePiece tokenizer: scores from tokenizer.model, byte tokens typed 6, BOS added */
    assert_str_kv(g, "tokenizer.ggml.model", "llama");
    assert_int_equal(get_int(g, "tokenizer.ggml.bos_token_id"), 1);
    assert_int_equal(get_int(g, "tokenizer.ggml.eos_token_id"), 2);
    assert_int_equal(get_int(g, "tokenizer.ggml.unknown_token_id"), 0);
    assert_int_equal(get_int(g, "tokenizer.ggml.add_bos_token"), 1);
    assert_int_equal(get_int(g, "tokenizer.ggml.add_space_prefix"), 1);
    int64_t k = rf_gguf_find_kv(g, "tokenizer.ggml.tokens");
    assert_int_equal(rf_gguf_kv_arr_len(g, (uint64_t)k), 512);
    uint64_t len;
    const char *s = rf_gguf_arr_str(g, (uint64_t)k, 3, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(s, "<0x00>", 6);
    int64_t tt = rf_gguf_find_kv(g, "tokenizer.ggml.token_type"), sc = rf_gguf_find_kv(g, "tokenizer.ggml.scores");
    assert_true(rf_gguf_arr_num(g, (uint64_t)tt, 3) == 6);
    assert_true(rf_gguf_arr_num(g, (uint64_t)tt, 1) == 3);
    assert_true(rf_gguf_arr_num(g, (uint64_t)tt, 300) == 1);
    /* merged pieces score by merge order: the first merge's token beats a later one's */
    rf_tok *tok;
    TU_OK(rf_tok_load(rf_model_dir(m), &tok, &err), &err);
    int32_t a = rf_tok_piece_to_id(tok, "\xe2\x96\x81t"), b = rf_tok_piece_to_id(tok, "\xe2\x96\x81the");
    assert_true(a >= 0 && b >= 0);
    assert_true(rf_gguf_arr_num(g, (uint64_t)sc, (uint64_t)a) > rf_gguf_arr_num(g, (uint64_t)sc, (uint64_t)b));
    rf_tok_free(tok);
    assert_null(rf_gguf_find_kv(g, "tokenizer.ggml.merges") >= 0 ? "merges" : NULL);
    rf_gguf_close(g);

    /* Q4_K: 64-wide rows fall back to Q5_0, the 172-wide down_proj to F16, as llama-quantize */
    export_types(m, tq, pq, 2, &r);
    TU_OK(rf_gguf_open(pq, &g, &err), &err);
    check_against_model(m, g, tq);
    assert_int_equal(rf_gguf_find_tensor(g, "blk.0.attn_q.weight")->type, RF_GT_Q5_0);
    assert_int_equal(rf_gguf_find_tensor(g, "blk.4.ffn_down.weight")->type, RF_GT_F16);
    assert_int_equal(rf_gguf_find_tensor(g, "token_embd.weight")->type, RF_GT_Q5_0);
    assert_int_equal(rf_gguf_find_tensor(g, "blk.2.ffn_norm.weight")->type, RF_GT_F32);
    assert_int_equal(r.type_params[RF_GT_F16], 5 * 64 * 172);
    rf_gguf_close(g);
    free(t32);
    free(tq);
    tu_rmtree(dir);
    free(dir);
    free(p32);
    free(pq);
    rf_model_free(m);
}

/* The same bytes for any thread count. */
static void test_deterministic(void **state)
{
    (void)state;
    rf_model *m = open_model("stories260k");
    char *dir = tu_mkdtemp(), *a = path_in(dir, "a.gguf"), *b = path_in(dir, "b.gguf");
    int *t = uniform(m, RF_GT_Q8_0);
    rf_gguf_result r;
    export_types(m, t, a, 1, &r);
    export_types(m, t, b, 3, &r);
    size_t na, nb;
    char *da = tu_read_file(a, &na), *db = tu_read_file(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(da, db, na);
    free(da);
    free(db);
    free(t);
    tu_rmtree(dir);
    free(dir);
    free(a);
    free(b);
    rf_model_free(m);
}

static void test_moe(void **state)
{
    (void)state;
    rf_model *m = open_model("qwen3-moe-mini");
    if (!m) skip();
    char *dir = tu_mkdtemp(), *p = path_in(dir, "moe.gguf");
    int *t = uniform(m, RF_GT_Q6_K);
    rf_gguf_result r;
    export_types(m, t, p, 2, &r);
    assert_string_equal(r.arch, "qwen3moe");
    assert_string_equal(r.tok_model, "gpt2");
    assert_string_equal(r.tok_pre, "qwen2");
    rf_gguf *g;
    rf_err err;
    TU_OK(rf_gguf_open(p, &g, &err), &err);
    check_against_model(m, g, t);
    const rf_gguf_tensor *e = rf_gguf_find_tensor(g, "blk.1.ffn_down_exps.weight");
    assert_non_null(e);
    assert_int_equal(e->type, RF_GT_Q6_K);
    assert_int_equal(e->ne[0], 256);
    assert_int_equal(e->ne[2], 8);
    assert_int_equal(rf_gguf_find_tensor(g, "blk.1.ffn_gate_inp.weight")->type, RF_GT_F32);
    assert_non_null(rf_gguf_find_tensor(g, "blk.3.attn_k_norm.weight"));
    assert_non_null(rf_gguf_find_tensor(g, "output.weight")); /* untied */
    assert_int_equal(get_int(g, "qwen3moe.expert_count"), 8);
    assert_int_equal(get_int(g, "qwen3moe.expert_used_count"), 2);
    assert_int_equal(get_int(g, "qwen3moe.expert_feed_forward_length"), 256);
    double v;
    TU_OK(rf_gguf_get_float(g, "qwen3moe.rope.freq_base", &v, &err), &err);
    assert_true(v == 1000000.0);
    assert_int_equal(get_int(g, "tokenizer.ggml.add_bos_token"), 0);
    assert_int_equal(get_int(g, "tokenizer.ggml.eos_token_id"), 4093);
    /* merges exactly as tokenizer.json lists them */
    size_t n;
    char *tj_path = path_in(rf_model_dir(m), "tokenizer.json");
    char *tj = tu_read_file(tj_path, &n);
    json_t *root = json_loadb(tj, n, 0, NULL);
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    int64_t k = rf_gguf_find_kv(g, "tokenizer.ggml.merges");
    assert_int_equal(rf_gguf_kv_arr_len(g, (uint64_t)k), json_array_size(merges));
    json_t *m5 = json_array_get(merges, 5);
    uint64_t len;
    const char *s = rf_gguf_arr_str(g, (uint64_t)k, 5, &len);
    char want[256];
    if (json_is_string(m5)) snprintf(want, sizeof want, "%s", json_string_value(m5));
    else snprintf(want, sizeof want, "%s %s", json_string_value(json_array_get(m5, 0)), json_string_value(json_array_get(m5, 1)));
    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
    json_decref(root);
    free(tj);
    free(tj_path);
    rf_gguf_close(g);
    free(t);
    tu_rmtree(dir);
    free(dir);
    free(p);
    rf_model_free(m);
}

static void test_failures(void **state)
{
    (void)state;
    rf_model *m = open_model("stories260k");
    char *dir = tu_mkdtemp(), *p = path_in(dir, "x.gguf");
    int *t = uniform(m, RF_GT_Q8_0);
    rf_gguf_opts o;
    rf_gguf_opts_default(&o);
    rf_err err;
    /* into the model directory */
    char *inside = path_in(rf_model_dir(m), "out.gguf");
    assert_int_equal(rf_gguf_export(m, t, &o, inside, NULL, NULL, &err), RF_ERR_INVALID);
    struct stat sb;
    assert_int_not_equal(stat(inside, &sb), 0);
    free(inside);
    /* an existing file without force is kept */
    assert_int_equal(tu_write_file(p, "keep", 4), 0);
    assert_int_equal(rf_gguf_export(m, t, &o, p, NULL, NULL, &err), RF_ERR_EXISTS);
    size_t n;
    char *txt = tu_read_file(p, &n);
    assert_int_equal(n, 4);
    free(txt);
    /* a type the rows cannot hold: refused before anything is written */
    o.force = 1;
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) t[u] = RF_GT_Q4_K;
    assert_int_equal(rf_gguf_export(m, t, &o, p, NULL, NULL, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "256"));
    t[0] = 16; /* IQ2_XXS: known, not written by ramfit */
    assert_int_equal(rf_gguf_export(m, t, &o, p, NULL, NULL, &err), RF_ERR_INVALID);
    assert_int_equal(count_files(dir), 1);
    txt = tu_read_file(p, &n);
    assert_int_equal(n, 4);
    free(txt);
    assert_int_equal(rf_gguf_types_uniform(m, 16, t, &err), RF_ERR_UNSUPPORTED);
    /* an activation llama.cpp's llama does not have: refused, nothing written */
    char *md = path_in(dir, "gelu");
    assert_int_equal(mkdir(md, 0755), 0);
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < 4; i++) {
        char *src = path_in(rf_model_dir(m), files[i]), *dst = path_in(md, files[i]);
        size_t len;
        char *data = tu_read_file(src, &len);
        if (i == 0) {
            json_t *cfg = json_loadb(data, len, 0, NULL);
            json_object_set_new(cfg, "hidden_act", json_string("gelu"));
            free(data);
            data = json_dumps(cfg, 0);
            len = strlen(data);
            json_decref(cfg);
        }
        assert_int_equal(tu_write_file(dst, data, len), 0);
        free(data);
        free(src);
        free(dst);
    }
    rf_model *g;
    TU_OK(rf_model_open(md, &g, &err), &err);
    TU_OK(rf_gguf_types_uniform(g, RF_GT_Q8_0, t, &err), &err);
    char *gp = path_in(dir, "gelu.gguf");
    assert_int_equal(rf_gguf_export(g, t, &o, gp, NULL, NULL, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "gelu"));
    assert_int_not_equal(stat(gp, &sb), 0);
    rf_model_free(g);
    free(gp);
    free(md);
    free(t);
    tu_rmtree(dir);
    free(dir);
    free(p);
    rf_model_free(m);
}

/* Plans: types by bits, and llama-quantize's tensor-type file for the same plan. */
static void test_plan_types(void **state)
{
    (void)state;
    rf_model *m = open_model("stories260k");
    rf_analyse_opts ao;
    rf_analyse_opts_default(&ao);
    ao.threads = 2;
    rf_profile *prof;
    rf_err err;
    TU_OK(rf_analyse(m, &ao, &prof, &err), &err);
    rf_plan_opts po;
    rf_plan_opts_default(&po);
    po.mode = RF_QMODE_MLX;
    rf_plan *plan;
    TU_OK(rf_plan_solve(prof, &po, 400000, &plan, &err), &err);
    int *t = calloc(rf_model_unit_count(m), sizeof *t);
    TU_OK(rf_gguf_types_from_plan(m, plan, RF_GT_BF16, t, &err), &err);
    char *text;
    size_t len;
    TU_OK(rf_gguf_plan_tensor_types(plan, prof, RF_GT_BF16, &text, &len, &err), &err);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    int expect = 0;
    const rf_gguf_family *fam = rf_gguf_family_of(RF_ARCH_LLAMA);
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        const rf_plan_unit *pu = rf_plan_get_unit(plan, (uint64_t)rf_plan_find_unit(plan, un->name));
        int want = pu->bits == 0 ? RF_GT_BF16 : pu->bits == 8 ? RF_GT_Q8_0 : -1;
        if (pu->bits >= 2 && pu->bits <= 6) { /* k-quants need 256-wide rows: stories has 64 and 172 */
            static const int fb[7] = {0, 0, RF_GT_Q4_0, RF_GT_Q4_0, RF_GT_Q5_0, RF_GT_Q5_1, RF_GT_Q8_0};
            want = un->cols % 32 ? RF_GT_F16 : fb[pu->bits];
        }
        if (pu->bits == 8 && un->cols % 32) want = RF_GT_F16;
        assert_int_equal(t[u], want);
        if (un->role == RF_ROLE_LM_HEAD) continue; /* tied */
        expect++;
        char hf[200], gname[96], line[256];
        snprintf(hf, sizeof hf, "%s.weight", un->name);
        assert_true(rf_gguf_tensor_name(fam, hf, gname, sizeof gname));
        char esc[200];
        size_t o = 0;
        for (const char *q = gname; *q; q++) {
            if (*q == '.') esc[o++] = '\\';
            esc[o++] = *q;
        }
        esc[o] = '\0';
        char lower[16];
        snprintf(lower, sizeof lower, "%s", rf_gtype_name(want));
        for (char *q = lower; *q; q++) if (*q >= 'A' && *q <= 'Z') *q = (char)(*q + 32);
        snprintf(line, sizeof line, "^%s$=%s\n", esc, lower);
        if (!strstr(text, line)) fail_msg("tensor-type file lacks %s", line);
    }
    assert_int_equal(lines, expect);
    free(text);
    free(t);
    rf_plan_free(plan);
    rf_profile_free(prof);
    rf_model_free(m);
}

/* A byte-level tokenizer whose regex llama.cpp does not know is refused, naming it. */
static void test_tokenizer_refusals(void **state)
{
    (void)state;
    const char *src = tu_model_dir("qwen3-dense-mini");
    if (!src) skip();
    char *dir = tu_mkdtemp(), *tj = path_in(src, "tokenizer.json");
    size_t n;
    char *text = tu_read_file(tj, &n);
    json_t *root = json_loadb(text, n, 0, NULL);
    json_t *pre = json_array_get(json_object_get(json_object_get(root, "pre_tokenizer"), "pretokenizers"), 0);
    json_object_set_new(json_object_get(pre, "pattern"), "Regex", json_string("\\p{L}+|\\s+|."));
    char *out = json_dumps(root, 0), *dst = path_in(dir, "tokenizer.json");
    assert_int_equal(tu_write_file(dst, out, strlen(out)), 0);
    rf_config cfg;
    rf_err err;
    TU_OK(rf_config_load(src, &cfg, &err), &err);
    char *gp = path_in(dir, "t.gguf");
    rf_ggufw *w;
    TU_OK(rf_ggufw_create(gp, &w, &err), &err);
    assert_int_equal(rf_tok_gguf_write(dir, &cfg, 4096, w, NULL, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "\\p{L}+|\\s+|."));
    rf_ggufw_free(w);
    /* more tokens than embedding rows */
    TU_OK(rf_ggufw_create(gp, &w, &err), &err);
    assert_int_equal(rf_tok_gguf_write(src, &cfg, 100, w, NULL, &err), RF_ERR_UNSUPPORTED);
    rf_ggufw_free(w);
    json_decref(root);
    free(out);
    free(dst);
    free(gp);
    free(text);
    free(tj);
    tu_rmtree(dir);
    free(dir);
}

/* The error analyse --format gguf records for unit U: ggml's encoders on every row, summed in row order. */
static void direct_error(const rf_model *m, const rf_unit *u, int type, double *sse, double *ssq)
{
    *sse = *ssq = 0;
    float *x = malloc(sizeof(float) * u->cols * 2), *y = x + u->cols;
    void *q = malloc(rf_gtype_row_bytes(type, u->cols));
    rf_err err;
    for (int k = 0; k < u->n_members; k++) {
        const rf_tensor *t = rf_model_tinfo(m, (uint64_t)u->members[k])->t;
        for (uint64_t r = 0; r < t->nelem / u->cols; r++) {
            TU_OK(rf_convert_to_f32(t->dtype, (const uint8_t *)t->data + r * u->cols * rf_dtype_size(t->dtype), x, u->cols,
                                    &err), &err);
            TU_OK(rf_gquant_rows(type, x, 1, u->cols, q, &err), &err);
            TU_OK(rf_gdequant_row(type, q, u->cols, y, &err), &err);
            double e = 0, s2 = 0;
            for (uint64_t j = 0; j < u->cols; j++) {
                float d = x[j] - y[j];
                e += (double)d * d;
                s2 += (double)x[j] * x[j];
            }
            *sse += e;
            *ssq += s2;
        }
    }
    free(q);
    free(x);
}

static rf_profile *gguf_profile(const rf_model *m, uint64_t sample)
{
    rf_analyse_opts ao;
    rf_analyse_opts_default(&ao);
    ao.threads = 2;
    ao.gguf = 1;
    ao.gguf_sample = sample;
    rf_profile *p;
    rf_err err;
    TU_OK(rf_analyse(m, &ao, &p, &err), &err);
    return p;
}

/* Planning over GGUF types (issue 16): analyse --format gguf records every unit's llama.cpp types
 * with their exact bytes in the file and ggml's encoders' error (checked against the encoders
 * here), the row-sampled estimate stays close to the exact error, and for a budget the plan's
 * total is the file's size: the written file is exactly that, never above the budget. The plan's
 * types reach the file and llama-quantize's tensor-type file, and survive the plan file. */
static void test_gguf_budget(void **state)
{
    (void)state;
    rf_model *m = open_model("qwen3-dense-mini");
    if (!m) skip();
    rf_err err;
    rf_profile *px = gguf_profile(m, RF_ANALYSE_EXACT), *ps = gguf_profile(m, 4096);
    assert_true(rf_profile_is_gguf(px));
    assert_int_equal(rf_profile_gguf_sample(px), 0);
    assert_int_equal(rf_profile_gguf_sample(ps), 4096);
    TU_OK(rf_analyse_check_profile(m, px, &err), &err);
    double worst = 0;
    for (uint64_t i = 0; i < rf_profile_unit_count(px); i++) {
        const rf_punit *u = rf_profile_unit(px, i), *v = rf_profile_unit(ps, i);
        const rf_unit *mu = rf_model_unit(m, (uint64_t)rf_model_unit_find(m, u->name));
        assert_int_equal(u->n_cands, __builtin_popcount(rf_gcand_mask(u->cols)));
        assert_int_equal(u->estimated, 0);
        assert_int_equal(v->n_cands, u->n_cands);
        if (u->nparams / u->cols > 2 * ((4096 + u->cols - 1) / u->cols)) /* sampled: every candidate an estimate */
            assert_int_equal(v->estimated, rf_gcand_mask(u->cols));
        for (int k = 0; k < u->n_cands; k++) {
            const rf_pcand *c = &u->cands[k];
            assert_int_equal(c->bytes, rf_gguf_tensor_bytes(c->gtype, (uint64_t)u->n_members, u->rows, u->cols));
            if (i % 7 == 0 || mu->role == RF_ROLE_EMBED) { /* the encoders themselves, on a few units */
                double sse, ssq;
                direct_error(m, mu, c->gtype, &sse, &ssq);
                assert_true(fabs(sse - c->err[RF_QMODE_MLX].sse) <= 1e-9 * sse);
                assert_true(fabs(ssq - u->ssq) <= 1e-6 * ssq); /* the moments sum in float lanes */
            }
            double rel = fabs(v->cands[k].err[0].sse / c->err[0].sse - 1);
            worst = rel > worst ? rel : worst;
        }
    }
    /* 16 rows per unit: a rough sample, still within 15% on every unit and candidate */
    if (worst > 0.15) fail_msg("sampled GGUF error off by %.1f%%", 100 * worst);

    rf_plan_opts po;
    rf_plan_opts_default(&po);
    po.mode = RF_QMODE_MLX;
    rf_planner *pl;
    TU_OK(rf_planner_create(px, &po, &pl, &err), &err);
    char *dir = tu_mkdtemp(), *path = path_in(dir, "b.gguf");
    int *t = calloc(rf_model_unit_count(m), sizeof *t);
    uint64_t lo = rf_planner_min_safe(pl), hi = rf_planner_full_bytes(pl);
    for (int step = 0; step < 3; step++) {
        uint64_t budget = lo + (hi - lo) * (uint64_t)(1 + 3 * step) / 10, fb = 0;
        rf_plan *plan;
        TU_OK(rf_planner_solve(pl, budget, &plan, &err), &err);
        assert_true(rf_plan_is_gguf(plan));
        TU_OK(rf_gguf_types_from_plan(m, plan, RF_GT_BF16, t, &err), &err);
        int quantized = 0;
        for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
            const rf_plan_unit *pu = rf_plan_get_unit(plan, (uint64_t)rf_plan_find_unit(plan, rf_model_unit(m, u)->name));
            assert_int_equal(t[u], pu->gtype ? pu->gtype : RF_GT_BF16);
            quantized += pu->gtype != 0;
        }
        assert_true(quantized > 0);
        TU_OK(rf_gguf_file_bytes(m, t, NULL, &fb, &err), &err);
        assert_int_equal(fb, rf_plan_total_bytes(plan)); /* no kept tensor needs padding here */
        assert_true(fb <= budget);
        rf_gguf_result r;
        export_types(m, t, path, 2, &r);
        struct stat sb;
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal((uint64_t)sb.st_size, fb);
        assert_int_equal(r.file_bytes, fb);
        /* the plan file keeps the types; llama-quantize's file names them */
        char *json;
        size_t n;
        TU_OK(rf_plan_to_json(plan, &json, &n, &err), &err);
        assert_non_null(strstr(json, "\"gguf\": true"));
        assert_non_null(strstr(json, "\"gguf_type\": \""));
        rf_plan *back;
        TU_OK(rf_plan_from_json(json, n, "p.json", &back, &err), &err);
        TU_OK(rf_plan_check_profile(back, px, &err), &err);
        for (uint64_t u = 0; u < rf_plan_unit_count(plan); u++)
            assert_int_equal(rf_plan_get_unit(back, u)->gtype, rf_plan_get_unit(plan, u)->gtype);
        char *tt;
        TU_OK(rf_gguf_plan_tensor_types(back, px, RF_GT_BF16, &tt, &n, &err), &err);
        for (uint64_t u = 0; u < rf_plan_unit_count(plan); u++) {
            const rf_plan_unit *pu = rf_plan_get_unit(plan, u);
            char hf[200], gname[96], line[160], lower[16];
            snprintf(hf, sizeof hf, "%s.weight", pu->name);
            assert_true(rf_gguf_tensor_name(rf_gguf_family_of(RF_ARCH_QWEN3), hf, gname, sizeof gname));
            snprintf(lower, sizeof lower, "%s", rf_gtype_name(pu->gtype ? pu->gtype : RF_GT_BF16));
            for (char *q = lower; *q; q++) if (*q >= 'A' && *q <= 'Z') *q = (char)(*q + 32);
            snprintf(line, sizeof line, "=%s\n", lower);
            if (!strstr(tt, line)) fail_msg("tensor-type file lacks type %s", lower);
        }
        free(tt);
        free(json);
        /* an MLX write of a GGUF plan is refused */
        char *od = path_in(dir, "mlx");
        assert_int_equal(rf_quantize_write(m, back, NULL, od, NULL, NULL, &err), RF_ERR_MISMATCH);
        free(od);
        rf_plan_free(back);
        rf_plan_free(plan);
    }
    /* stories260k: F32 weights counted as BF16, llama-quantize's fallback types on 64-wide rows, kept
     * 172-wide down_proj, a tied embedding: the file is still the plan's total */
    rf_model *ms = open_model("stories260k");
    rf_profile *pss = gguf_profile(ms, 0);
    int *ts = calloc(rf_model_unit_count(ms), sizeof *ts);
    for (uint64_t i = 0; i < rf_profile_unit_count(pss); i++) {
        const rf_punit *u = rf_profile_unit(pss, i);
        for (int k = 0; k < u->n_cands; k++) assert_true(u->cands[k].gtype == RF_GT_Q4_0 || u->cands[k].gtype == RF_GT_Q5_0 ||
                                                         u->cands[k].gtype == RF_GT_Q5_1 || u->cands[k].gtype == RF_GT_Q8_0);
        assert_int_equal(u->n_cands, u->cols == 64 ? 4 : 0);
    }
    rf_plan *sp;
    uint64_t sfb = 0;
    TU_OK(rf_plan_solve(pss, &po, 300000, &sp, &err), &err);
    TU_OK(rf_gguf_types_from_plan(ms, sp, RF_GT_BF16, ts, &err), &err);
    TU_OK(rf_gguf_file_bytes(ms, ts, NULL, &sfb, &err), &err);
    assert_int_equal(sfb, rf_plan_total_bytes(sp));
    assert_true(sfb <= 300000);
    rf_plan_free(sp);
    free(ts);
    rf_profile_free(pss);
    rf_model_free(ms);
    /* GGUF analysis is one machine's and data-free */
    rf_analyse_opts ao;
    rf_analyse_opts_default(&ao);
    ao.gguf = 1;
    ao.shard_index = 1, ao.shard_count = 2;
    rf_profile *none = NULL;
    assert_int_equal(rf_analyse(m, &ao, &none, &err), RF_ERR_UNSUPPORTED);
    assert_null(none);
    /* the MLX baselines are not for GGUF profiles */
    rf_planner *bad;
    assert_int_equal(rf_plan_parse_method("uniform:4:64", &po, &err), RF_OK);
    assert_int_equal(rf_planner_create(px, &po, &bad, &err), RF_ERR_INVALID);
    free(t);
    free(path);
    tu_rmtree(dir);
    free(dir);
    rf_planner_free(pl);
    rf_profile_free(px);
    rf_profile_free(ps);
    rf_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_f32_and_q4k), cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_moe),                 cmocka_unit_test(test_failures),
        cmocka_unit_test(test_plan_types), cmocka_unit_test(test_gguf_budget),          cmocka_unit_test(test_tokenizer_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
