/* Calibration statistics (src/calib/): what `ramfit calibrate` records against sums made here from the
 * engine's observer over the same windows; shared inputs; experts per routed token; the same file for any
 * thread count and the same numbers for any memory limit; damaged files refused. Then their two users:
 * the activation-weighted analysis against the definition computed here (quantize, dequantize, weight by
 * E[x_j^2]), and quantize --mode gptq, whose output error under the calibration Hessian must be below
 * round-to-nearest's for every GPTQ unit, with the embedding left as round-to-nearest. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const TEXT =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog, "
    "Max. One day, they found a big red ball under a tree. Lily kicked the ball and Max ran after it. They "
    "laughed and played until the sun went down. Then mom called them home for dinner, and they ate soup and "
    "bread. After dinner, Lily read a book about a brave bird who flew over the sea. ";

/* The text repeated with a counter, tokenized by the model's tokenizer. */
static int32_t *tokens(const char *dir, int reps, uint64_t *n, int *bos)
{
    size_t cap = (strlen(TEXT) + 32) * (size_t)reps + 1, len = 0;
    char *t = malloc(cap);
    for (int i = 0; i < reps; i++) len += (size_t)snprintf(t + len, cap - len, "%s(%d) ", TEXT, i);
    rf_tok *tok;
    rf_err err;
    int32_t *ids;
    TU_OK(rf_tok_load(dir, &tok, &err), &err);
    TU_OK(rf_tok_encode(tok, t, len, 0, &ids, n, &err), &err);
    *bos = rf_tok_adds_bos(tok) ? rf_tok_bos_id(tok) : -1;
    rf_tok_free(tok);
    free(t);
    return ids;
}

static char *path_in(const char *dir, const char *name)
{
    char *p = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

static void calibrate(const char *model, const int32_t *ids, uint64_t n, int bos, int threads, uint64_t memory,
                      int hessian, const char *out, rf_calib_result *res)
{
    rf_calib_opts o;
    rf_calib_opts_default(&o);
    o.threads = threads;
    o.ctx = 64;
    o.memory = memory;
    o.hessian = hessian;
    o.text_label = "test text";
    rf_err err;
    TU_OK(rf_calibrate(model, ids, n, bos, &o, out, res, &err), &err);
}

/* ------------------------------------------------------------------ an independent collection */

typedef struct ref_in {
    char name[160];
    int member;
    uint64_t cols, tokens;
    double *sq, *h; /* full H */
} ref_in;

typedef struct ref {
    ref_in *in;
    int n, cap;
} ref;

static void ref_observe(void *user, const rf_unit *u, int member, const float *x, int ntok)
{
    ref *r = user;
    ref_in *e = NULL;
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->in[i].name, u->name) && r->in[i].member == member) e = &r->in[i];
    if (!e) {
        if (r->n == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 64;
            r->in = realloc(r->in, (size_t)r->cap * sizeof *r->in);
        }
        e = &r->in[r->n++];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", u->name);
        e->member = member;
        e->cols = u->cols;
        e->sq = calloc(u->cols, sizeof(double));
        e->h = calloc(u->cols * u->cols, sizeof(double));
    }
    for (int t = 0; t < ntok; t++) {
        const float *xr = x + (uint64_t)t * u->cols;
        for (uint64_t i = 0; i < u->cols; i++) {
            e->sq[i] += (double)xr[i] * xr[i];
            for (uint64_t j = 0; j < u->cols; j++) e->h[i * u->cols + j] += (double)xr[i] * xr[j];
        }
    }
    e->tokens += (uint64_t)ntok;
}

static void ref_collect(const char *model, const int32_t *ids, uint64_t n, int bos, ref *r)
{
    rf_engine_opts eo = {1, 64, 64};
    rf_engine *e;
    rf_err err;
    TU_OK(rf_engine_open(model, &eo, &e, &err), &err);
    rf_engine_set_observer(e, ref_observe, r);
    rf_ppl_opts po = {64, RF_PPL_FULL, bos, 0, {NULL, NULL, NULL}};
    rf_ppl_result pr;
    TU_OK(rf_eval_ppl(e, ids, n, &po, &pr, &err), &err);
    rf_engine_free(e);
}

static void ref_free(ref *r)
{
    for (int i = 0; i < r->n; i++) {
        free(r->in[i].sq);
        free(r->in[i].h);
    }
    free(r->in);
}

/* ------------------------------------------------------------------ tests */

static void test_against_observer(void **state)
{
    (void)state;
    const char *model = tu_model_dir("stories260k");
    uint64_t n;
    int bos;
    int32_t *ids = tokens(model, 6, &n, &bos);
    char *dir = tu_mkdtemp(), *out = path_in(dir, "s.stats.json");
    rf_calib_result res;
    calibrate(model, ids, n, bos, 2, 0, 1, out, &res);
    ref r = {0};
    ref_collect(model, ids, n, bos, &r);
    rf_stats *s;
    rf_err err;
    TU_OK(rf_stats_open(out, &s, &err), &err);
    assert_true(rf_stats_has_hessian(s));
    assert_string_equal(rf_stats_text(s), "test text");
    assert_int_equal(rf_stats_tokens(s), res.tokens);
    assert_int_equal(res.passes, 1);
    assert_true(r.n == 36); /* 5 layers x q k v o gate up down, and the tied head (the embedding) */
    for (int i = 0; i < r.n; i++) {
        const ref_in *e = &r.in[i];
        const double *sq;
        const float *h;
        uint64_t tok, cols;
        int64_t rec;
        TU_OK(rf_stats_moments(s, e->name, e->member, &sq, &tok, &rec, &err), &err);
        TU_OK(rf_stats_hessian(s, e->name, e->member, &h, &cols, &err), &err);
        assert_int_equal(tok, e->tokens);
        assert_int_equal(cols, e->cols);
        double scale = 0;
        for (uint64_t j = 0; j < cols; j++) scale = fmax(scale, e->sq[j] / (double)tok);
        for (uint64_t j = 0; j < cols; j++) assert_true(fabs(sq[j] - e->sq[j] / (double)tok) <= 1e-12 * scale);
        for (uint64_t a = 0, o = 0; a < cols; a++)
            for (uint64_t b = a; b < cols; b++, o++)
                assert_true(fabs(h[o] - e->h[a * cols + b] / (double)tok) <= 1e-5 * scale);
    }
    /* q, k and v read one input, gate and up another: one record each; o and down their own */
    for (int l = 0; l < 5; l++) {
        char nm[5][96];
        const char *sfx[5] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"};
        int64_t rec[5];
        for (int k = 0; k < 5; k++) {
            snprintf(nm[k], sizeof nm[k], "model.layers.%d.%s", l, sfx[k]);
            TU_OK(rf_stats_moments(s, nm[k], 0, NULL, NULL, &rec[k], &err), &err);
        }
        assert_true(rec[0] == rec[1] && rec[1] == rec[2] && rec[3] == rec[4] && rec[0] != rec[3]);
    }
    assert_int_equal(res.records, 21);
    /* lookups that fail */
    const double *sq;
    assert_int_equal(rf_stats_moments(s, "model.layers.9.mlp.up_proj", 0, &sq, NULL, NULL, &err), RF_ERR_NOT_FOUND);
    assert_int_equal(rf_stats_moments(s, "model.layers.0.mlp.up_proj", 1, &sq, NULL, NULL, &err), RF_ERR_INVALID);
    /* the model it came from, not another */
    rf_model *m;
    TU_OK(rf_model_open(model, &m, &err), &err);
    TU_OK(rf_stats_check_model(s, m, &err), &err);
    rf_model_free(m);
    const char *other = tu_model_dir("babyllama-tok105");
    if (other) {
        TU_OK(rf_model_open(other, &m, &err), &err);
        assert_int_equal(rf_stats_check_model(s, m, &err), RF_ERR_MISMATCH);
        rf_model_free(m);
    }
    rf_stats_close(s);
    ref_free(&r);
    free(ids);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

static void files_equal(const char *a, const char *b)
{
    size_t na, nb;
    char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(na, nb);
    assert_memory_equal(x, y, na);
    free(x);
    free(y);
}

/* The same file for 1 and 3 threads; the same numbers when a tiny memory limit makes a pass per unit. */
static void test_deterministic(void **state)
{
    (void)state;
    const char *model = tu_model_dir("stories260k");
    uint64_t n;
    int bos;
    int32_t *ids = tokens(model, 4, &n, &bos);
    char *dir = tu_mkdtemp(), *a = path_in(dir, "a.json"), *b = path_in(dir, "b.json"), *c = path_in(dir, "c.json");
    char *ab = path_in(dir, "a.bin"), *bb = path_in(dir, "b.bin"), *d = path_in(dir, "d.json");
    rf_calib_result ra, rb, rc, rd;
    calibrate(model, ids, n, bos, 1, 0, 1, a, &ra);
    calibrate(model, ids, n, bos, 3, 0, 1, b, &rb);
    files_equal(ab, bb);
    size_t la, lb;
    char *ja = tu_read_file(a, &la), *jb = tu_read_file(b, &lb);
    char *pa = strstr(ja, "\"data\""), *pb = strstr(jb, "\"data\"");
    assert_non_null(pa);
    assert_string_equal(strchr(pa, ','), strchr(pb, ',')); /* everything after the data file's name */
    free(ja);
    free(jb);
    calibrate(model, ids, n, bos, 2, 1, 1, c, &rc);
    assert_true(rc.passes > 5 && rc.accum_bytes < ra.accum_bytes);
    calibrate(model, ids, n, bos, 2, 0, 0, d, &rd); /* E[x^2] only */
    assert_int_equal(rd.passes, 1);
    assert_int_equal(rd.accum_bytes, 0);
    rf_stats *sa, *sc, *sd;
    rf_err err;
    TU_OK(rf_stats_open(a, &sa, &err), &err);
    TU_OK(rf_stats_open(c, &sc, &err), &err);
    TU_OK(rf_stats_open(d, &sd, &err), &err);
    assert_false(rf_stats_has_hessian(sd));
    rf_model *m;
    TU_OK(rf_model_open(model, &m, &err), &err);
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        const double *q1, *q2, *q3;
        const float *h1, *h2;
        uint64_t t1, t2, c1, c2;
        if (rf_stats_moments(sa, un->name, 0, &q1, &t1, NULL, &err) == RF_ERR_NOT_FOUND) continue;
        TU_OK(rf_stats_moments(sc, un->name, 0, &q2, &t2, NULL, &err), &err);
        TU_OK(rf_stats_moments(sd, un->name, 0, &q3, NULL, NULL, &err), &err);
        assert_int_equal(t1, t2);
        assert_memory_equal(q1, q2, un->cols * sizeof(double));
        assert_memory_equal(q1, q3, un->cols * sizeof(double));
        TU_OK(rf_stats_hessian(sa, un->name, 0, &h1, &c1, &err), &err);
        TU_OK(rf_stats_hessian(sc, un->name, 0, &h2, &c2, &err), &err);
        assert_memory_equal(h1, h2, c1 * (c1 + 1) / 2 * sizeof(float));
        assert_int_equal(rf_stats_hessian(sd, un->name, 0, &h2, &c2, &err), RF_ERR_NOT_FOUND);
    }
    rf_model_free(m);
    rf_stats_close(sa);
    rf_stats_close(sc);
    rf_stats_close(sd);
    free(ids);
    free(a), free(b), free(c), free(d), free(ab), free(bb);
    tu_rmtree(dir);
    free(dir);
}

/* Experts: per expert over the tokens routed to it (k per token), gate and up one record, down its own;
 * the untied embedding has no statistics (it is looked up, not multiplied). */
static void test_moe(void **state)
{
    (void)state;
    const char *model = tu_model_dir("qwen3-moe-mini");
    if (!model) {
        print_message("qwen3-moe-mini not found: skipped\n");
        return;
    }
    uint64_t n;
    int bos;
    int32_t *ids = tokens(model, 2, &n, &bos);
    char *dir = tu_mkdtemp(), *out = path_in(dir, "m.json");
    rf_calib_result res;
    calibrate(model, ids, n, bos, 2, 0, 1, out, &res);
    rf_stats *s;
    rf_err err;
    TU_OK(rf_stats_open(out, &s, &err), &err);
    for (int l = 0; l < 4; l++) {
        char router[96], gate[96], up[96], down[96];
        snprintf(router, sizeof router, "model.layers.%d.mlp.gate", l);
        snprintf(gate, sizeof gate, "model.layers.%d.mlp.switch_mlp.gate_proj", l);
        snprintf(up, sizeof up, "model.layers.%d.mlp.switch_mlp.up_proj", l);
        snprintf(down, sizeof down, "model.layers.%d.mlp.switch_mlp.down_proj", l);
        uint64_t all, sum = 0;
        TU_OK(rf_stats_moments(s, router, 0, NULL, &all, NULL, &err), &err);
        for (int e = 0; e < 8; e++) {
            uint64_t t, t2;
            int64_t rg, ru, rd;
            if (rf_stats_moments(s, gate, e, NULL, &t, &rg, &err) == RF_ERR_NOT_FOUND) continue;
            TU_OK(rf_stats_moments(s, up, e, NULL, &t2, &ru, &err), &err);
            TU_OK(rf_stats_moments(s, down, e, NULL, NULL, &rd, &err), &err);
            assert_true(rg == ru && rd != rg && t == t2);
            sum += t;
        }
        assert_int_equal(sum, 2 * all); /* top-2 */
    }
    assert_int_equal(rf_stats_moments(s, "model.embed_tokens", 0, NULL, NULL, NULL, &err), RF_ERR_NOT_FOUND);
    TU_OK(rf_stats_moments(s, "lm_head", 0, NULL, NULL, NULL, &err), &err);
    rf_stats_close(s);
    free(ids);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

static void corrupt(const char *path, long off, int from_end)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, from_end ? -off : off, from_end ? SEEK_END : SEEK_SET);
    int c = fgetc(f);
    fseek(f, -1, SEEK_CUR);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void test_damaged_files(void **state)
{
    (void)state;
    const char *model = tu_model_dir("stories260k");
    uint64_t n;
    int bos;
    int32_t *ids = tokens(model, 2, &n, &bos);
    char *dir = tu_mkdtemp(), *out = path_in(dir, "s.json"), *bin = path_in(dir, "s.bin");
    rf_calib_result res;
    calibrate(model, ids, n, bos, 2, 0, 1, out, &res);
    size_t nj, nb;
    char *json = tu_read_file(out, &nj), *data = tu_read_file(bin, &nb);
    rf_stats *s;
    rf_err err;
    /* a moment: refused at open */
    corrupt(bin, 3, 1);
    assert_int_equal(rf_stats_open(out, &s, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "checksum"));
    /* an H: refused when used */
    tu_write_file(bin, data, nb);
    corrupt(bin, 100, 0);
    TU_OK(rf_stats_open(out, &s, &err), &err);
    const float *h;
    uint64_t cols;
    int bad = 0;
    rf_model *m;
    TU_OK(rf_model_open(model, &m, &err), &err);
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++)
        bad += rf_stats_hessian(s, rf_model_unit(m, u)->name, 0, &h, &cols, &err) == RF_ERR_FORMAT;
    assert_int_equal(bad, 3); /* the first record: q, k and v */
    rf_model_free(m);
    rf_stats_close(s);
    /* truncated, missing, malformed index */
    tu_write_file(bin, data, nb - 8);
    assert_int_equal(rf_stats_open(out, &s, &err), RF_ERR_FORMAT);
    unlink(bin);
    assert_int_equal(rf_stats_open(out, &s, &err), RF_ERR_IO);
    tu_write_file(bin, data, nb);
    tu_write_file(out, json, nj / 2);
    assert_int_equal(rf_stats_open(out, &s, &err), RF_ERR_FORMAT);
    char *j2 = strdup(json);
    memcpy(strstr(j2, "ramfit-stats"), "ramfit-statz", 12);
    tu_write_file(out, j2, nj);
    assert_int_equal(rf_stats_open(out, &s, &err), RF_ERR_FORMAT);
    free(j2);
    tu_write_file(out, json, nj);
    TU_OK(rf_stats_open(out, &s, &err), &err);
    rf_stats_close(s);
    assert_int_equal(rf_stats_open("/nonexistent/x.json", &s, &err), RF_ERR_NOT_FOUND);
    /* a quantized checkpoint is refused, and a failed run leaves no files */
    rf_calib_opts o;
    rf_calib_opts_default(&o);
    o.ctx = 100000; /* no window fits the text */
    char *out2 = path_in(dir, "t.json"), *bin2 = path_in(dir, "t.bin"), *tmp2 = path_in(dir, "t.bin.tmp");
    assert_int_not_equal(rf_calibrate(model, ids, n, bos, &o, out2, NULL, &err), RF_OK);
    struct stat sb;
    assert_int_not_equal(stat(out2, &sb), 0);
    assert_int_not_equal(stat(bin2, &sb), 0);
    assert_int_not_equal(stat(tmp2, &sb), 0);
    free(json);
    free(data);
    free(out), free(bin), free(out2), free(bin2), free(tmp2);
    free(ids);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ users: analysis and GPTQ */

/* D of one candidate as the definition says: sum (w - w')^2 c_j / sum w^2 c_j, c_j = E[x_j^2] x tokens. */
static double weighted_d(const rf_tensor *t, uint64_t rows, uint64_t cols, int bits, int gs, rf_qmode mode,
                         const double *sq)
{
    uint64_t n = rows * cols;
    uint32_t *packed = malloc(n);
    uint16_t *sc = malloc(n / 32 * 2), *bi = malloc(n / 32 * 2);
    float *w = malloc(n * 4), *dq = malloc(n * 4);
    rf_err err;
    TU_OK(rf_convert_to_f32(t->dtype, t->data, w, n, &err), &err);
    TU_OK(rf_quant_quantize(t->dtype, t->data, rows, cols, bits, gs, mode, RF_DT_BF16, packed, sc, bi, &err), &err);
    TU_OK(rf_quant_dequantize(packed, sc, bi, RF_DT_BF16, rows, cols, bits, gs, dq, &err), &err);
    double e = 0, s = 0;
    for (uint64_t i = 0; i < n; i++) {
        e += (double)(w[i] - dq[i]) * (w[i] - dq[i]) * sq[i % cols];
        s += (double)w[i] * w[i] * sq[i % cols];
    }
    free(packed), free(sc), free(bi), free(w), free(dq);
    return e / s;
}

static void test_weighted_analysis(void **state)
{
    (void)state;
    const char *model = tu_model_dir("stories260k");
    uint64_t n;
    int bos;
    int32_t *ids = tokens(model, 4, &n, &bos);
    char *dir = tu_mkdtemp(), *out = path_in(dir, "s.json"), *pp = path_in(dir, "p.json");
    rf_calib_result res;
    calibrate(model, ids, n, bos, 2, 0, 0, out, &res);
    rf_stats *s;
    rf_err err;
    TU_OK(rf_stats_open(out, &s, &err), &err);
    rf_model *m;
    TU_OK(rf_model_open(model, &m, &err), &err);
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.modes = 1u << RF_QMODE_MLX | 1u << RF_QMODE_OPT;
    o.stats = s;
    rf_profile *p, *p0, *p3;
    o.threads = 1;
    o.block_bytes = 4096; /* many blocks per unit: their sums are combined in block order */
    TU_OK(rf_analyse(m, &o, &p, &err), &err);
    o.threads = 3;
    TU_OK(rf_analyse(m, &o, &p3, &err), &err);
    char *j1, *j3;
    size_t l1, l3;
    TU_OK(rf_profile_to_json(p, &j1, &l1, &err), &err);
    TU_OK(rf_profile_to_json(p3, &j3, &l3, &err), &err);
    assert_int_equal(l1, l3);
    assert_memory_equal(j1, j3, l1);
    free(j1);
    free(j3);
    rf_profile_free(p3);
    o.block_bytes = 0;
    o.stats = NULL;
    TU_OK(rf_analyse(m, &o, &p0, &err), &err);
    assert_true(rf_profile_calibration(p)->weighted && !rf_profile_calibration(p0)->weighted);
    assert_int_equal(rf_profile_calibration(p)->stats_checksum, rf_stats_checksum(s));
    const char *names[] = {"model.layers.1.self_attn.q_proj", "model.layers.3.mlp.up_proj", "model.embed_tokens"};
    for (int k = 0; k < 3; k++) {
        const rf_unit *u = rf_model_unit(m, (uint64_t)rf_model_unit_find(m, names[k]));
        const rf_punit *pu = rf_profile_unit(p, (uint64_t)rf_profile_find_unit(p, names[k]));
        const rf_punit *pu0 = rf_profile_unit(p0, (uint64_t)rf_profile_find_unit(p0, names[k]));
        const double *sq;
        TU_OK(rf_stats_moments(s, names[k], 0, &sq, NULL, NULL, &err), &err);
        const rf_tensor *t = rf_model_tinfo(m, (uint64_t)u->members[0])->t;
        for (int c = 0; c < pu->n_cands; c++) {
            const rf_pcand *pc = &pu->cands[c];
            for (int mo = 0; mo < 2; mo++) {
                double want = weighted_d(t, u->rows, u->cols, pc->bits, pc->gs, (rf_qmode)mo, sq);
                double got = rf_pcand_d(pu, pc, (rf_qmode)mo);
                assert_true(fabs(got - want) <= 1e-9 * want);
                assert_true(pc->err[mo].max_abs == pu0->cands[c].err[mo].max_abs); /* the same quantized weights */
            }
        }
    }
    /* the calibration identity survives a save and a load; a data-free profile has none */
    TU_OK(rf_profile_save(p, pp, &err), &err);
    rf_profile *p2;
    TU_OK(rf_profile_load(pp, &p2, &err), &err);
    assert_memory_equal(rf_profile_calibration(p2), rf_profile_calibration(p), sizeof(rf_pcalib));
    assert_true(rf_pcand_d(rf_profile_unit(p2, 3), &rf_profile_unit(p2, 3)->cands[2], RF_QMODE_OPT) ==
                rf_pcand_d(rf_profile_unit(p, 3), &rf_profile_unit(p, 3)->cands[2], RF_QMODE_OPT));
    rf_profile_free(p2);
    /* statistics of another model are refused */
    const char *other = tu_model_dir("babyllama-tok105");
    if (other) {
        rf_model *m2;
        TU_OK(rf_model_open(other, &m2, &err), &err);
        o.stats = s;
        assert_int_equal(rf_analyse(m2, &o, &p2, &err), RF_ERR_MISMATCH);
        rf_model_free(m2);
    }
    rf_profile_free(p);
    rf_profile_free(p0);
    rf_model_free(m);
    rf_stats_close(s);
    free(ids);
    free(out), free(pp);
    tu_rmtree(dir);
    free(dir);
}

/* tr(dW H dW^T) of one written unit, from the output checkpoint and the calibration Hessian. */
static double out_error(const rf_st *src, const rf_st *q, const char *unit, const rf_stats *s, int *same_as)
{
    char nw[200], ns[200], nb[200];
    snprintf(nw, sizeof nw, "%s.weight", unit);
    snprintf(ns, sizeof ns, "%s.scales", unit);
    snprintf(nb, sizeof nb, "%s.biases", unit);
    const rf_tensor *w = rf_st_find(src, nw), *qw = rf_st_find(q, nw), *qs = rf_st_find(q, ns), *qb = rf_st_find(q, nb);
    assert_non_null(w);
    assert_non_null(qs);
    uint64_t rows = w->shape[0], cols = w->shape[1], gs = cols / qs->shape[1], bits = qw->shape[1] * 32 / cols;
    float *x = malloc(rows * cols * 4), *dq = malloc(rows * cols * 4);
    rf_err err;
    TU_OK(rf_convert_to_f32(w->dtype, w->data, x, rows * cols, &err), &err);
    TU_OK(rf_quant_dequantize(qw->data, qs->data, qb->data, qs->dtype, rows, cols, (int)bits, (int)gs, dq, &err), &err);
    const float *h;
    uint64_t hc;
    double e = 0;
    if (rf_stats_hessian(s, unit, 0, &h, &hc, &err) == RF_OK) {
        double *d = malloc(cols * sizeof(double));
        for (uint64_t r = 0; r < rows; r++) {
            for (uint64_t j = 0; j < cols; j++) d[j] = (double)x[r * cols + j] - dq[r * cols + j];
            for (uint64_t i = 0, o = 0; i < cols; i++)
                for (uint64_t j = i; j < cols; j++, o++) e += (i == j ? 1.0 : 2.0) * d[i] * d[j] * h[o];
        }
        free(d);
    }
    if (same_as) *same_as = (int)qw->nbytes;
    free(x);
    free(dq);
    return e;
}

static void test_quantize_gptq(void **state)
{
    (void)state;
    const char *model = tu_model_dir("stories260k");
    uint64_t n;
    int bos;
    int32_t *ids = tokens(model, 6, &n, &bos);
    char *dir = tu_mkdtemp(), *stats = path_in(dir, "s.json"), *nohess = path_in(dir, "n.json");
    char *rtn = path_in(dir, "rtn"), *g1 = path_in(dir, "g1"), *g2 = path_in(dir, "g2");
    rf_calib_result res;
    calibrate(model, ids, n, bos, 2, 0, 1, stats, &res);
    calibrate(model, ids, n, bos, 2, 0, 0, nohess, &res);
    rf_stats *s, *sn;
    rf_err err;
    TU_OK(rf_stats_open(stats, &s, &err), &err);
    TU_OK(rf_stats_open(nohess, &sn, &err), &err);
    rf_model *m;
    TU_OK(rf_model_open(model, &m, &err), &err);
    rf_analyse_opts ao;
    rf_analyse_opts_default(&ao);
    rf_profile *p;
    TU_OK(rf_analyse(m, &ao, &p, &err), &err);
    rf_plan_opts po;
    rf_plan_opts_default(&po);
    TU_OK(rf_plan_parse_method("uniform:3:32", &po, &err), &err);
    rf_plan *plan;
    TU_OK(rf_plan_solve(p, &po, 0, &plan, &err), &err);
    rf_quantize_opts qo;
    rf_quantize_opts_default(&qo);
    qo.threads = 1;
    rf_quantize_result r1, r2, r0;
    TU_OK(rf_quantize_write(m, plan, &qo, rtn, NULL, &r0, &err), &err);
    qo.gptq = s;
    TU_OK(rf_quantize_write(m, plan, &qo, g1, NULL, &r1, &err), &err);
    qo.threads = 3;
    qo.gptq_memory = 1; /* one factor at a time */
    TU_OK(rf_quantize_write(m, plan, &qo, g2, NULL, &r2, &err), &err);
    assert_int_equal(r1.tensor_bytes, r0.tensor_bytes);
    assert_int_equal(r1.gptq_factors, 21 - 1 - 5); /* every record but the tied head (RTN) and the kept down_proj */
    assert_true(r2.gptq_factors >= r1.gptq_factors);    /* made again when dropped */
    char *f1 = path_in(g1, "model.safetensors"), *f2 = path_in(g2, "model.safetensors"), *f0 = path_in(rtn, "model.safetensors");
    files_equal(f1, f2);
    rf_st *src, *q0, *q1;
    TU_OK(rf_st_open(model, &src, &err), &err);
    TU_OK(rf_st_open(f0, &q0, &err), &err);
    TU_OK(rf_st_open(f1, &q1, &err), &err);
    int units = 0;
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        if (un->role == RF_ROLE_EMBED || !un->quantizable || un->cols % 32) continue;
        double e0 = out_error(src, q0, un->name, s, NULL), e1 = out_error(src, q1, un->name, s, NULL);
        assert_true(e1 < e0);
        units++;
    }
    assert_int_equal(units, 5 * 6); /* down_proj (172 columns) is kept */
    char se[64];
    snprintf(se, sizeof se, "model.embed_tokens.weight");
    const rf_tensor *a = rf_st_find(q0, se), *b = rf_st_find(q1, se);
    assert_int_equal(a->nbytes, b->nbytes);
    assert_memory_equal(a->data, b->data, a->nbytes); /* the embedding: round to nearest in both */
    rf_st_close(src);
    rf_st_close(q0);
    rf_st_close(q1);
    size_t nr;
    char *rj = path_in(g1, "ramfit.json"), *txt = tu_read_file(rj, &nr);
    assert_non_null(strstr(txt, "\"gptq\""));
    free(txt);
    free(rj);
    /* the quantized checkpoint runs */
    rf_engine *e;
    TU_OK(rf_engine_open(g1, NULL, &e, &err), &err);
    rf_engine_free(e);
    /* refused: statistics without Hessians, or of another model */
    char *g3 = path_in(dir, "g3");
    qo.gptq = sn;
    assert_int_equal(rf_quantize_write(m, plan, &qo, g3, NULL, NULL, &err), RF_ERR_INVALID);
    struct stat sb;
    assert_int_not_equal(stat(g3, &sb), 0);
    const char *other = tu_model_dir("babyllama-tok105");
    if (other) {
        uint64_t n2;
        int bos2;
        int32_t *ids2 = tokens(other, 1, &n2, &bos2);
        char *os = path_in(dir, "o.json");
        calibrate(other, ids2, n2, bos2, 2, 0, 1, os, &res);
        rf_stats *so;
        TU_OK(rf_stats_open(os, &so, &err), &err);
        qo.gptq = so;
        assert_int_equal(rf_quantize_write(m, plan, &qo, g3, NULL, NULL, &err), RF_ERR_MISMATCH);
        rf_stats_close(so);
        free(os);
        free(ids2);
    }
    free(g3);
    free(f0), free(f1), free(f2);
    rf_plan_free(plan);
    rf_profile_free(p);
    rf_model_free(m);
    rf_stats_close(s);
    rf_stats_close(sn);
    free(ids);
    free(stats), free(nohess), free(rtn), free(g1), free(g2);
    tu_rmtree(dir);
    free(dir);
}

/* The CLI: calibrate -> analyse --stats -> plan -> quantize --mode gptq, and its usage errors. */
static void test_cli(void **state)
{
    (void)state;
    const char *model = tu_model_dir("stories260k");
    char *dir = tu_mkdtemp(), *txt = path_in(dir, "t.txt"), args[4096], *out = NULL;
    FILE *f = fopen(txt, "w");
    for (int i = 0; i < 8; i++) fprintf(f, "%s(%d)\n", TEXT, i);
    fclose(f);
    snprintf(args, sizeof args, "calibrate %s --file %s -o %s/s.json --ctx 64 --json --quiet", model, txt, dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    assert_non_null(strstr(out, "\"passes\":1"));
    free(out);
    snprintf(args, sizeof args, "analyse %s --mode opt --stats %s/s.json -o %s/p.json --quiet", model, dir, dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    free(out);
    /* the same analysis in two parts (analyse --shard), merged: the one run's profile byte for byte, its
     * "calibration" key (the statistics' checksum) included */
    for (int k = 1; k <= 2; k++) {
        snprintf(args, sizeof args, "analyse %s --mode opt --stats %s/s.json --shard %d/2 --threads %d -o %s/part%d.json --quiet",
                 model, dir, k, k, dir, k);
        assert_int_equal(tu_run_cli(args, &out), 0);
        free(out);
    }
    snprintf(args, sizeof args, "%s/m", dir);
    assert_int_equal(mkdir(args, 0755), 0);
    snprintf(args, sizeof args, "profile merge %s/part2.json %s/part1.json -o %s/m/p.json", dir, dir, dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    free(out);
    for (int i = 0; i < 2; i++) {
        char a[4096], b[4096];
        snprintf(a, sizeof a, "%s/p.%s", dir, i ? "bin" : "json");
        snprintf(b, sizeof b, "%s/m/p.%s", dir, i ? "bin" : "json");
        size_t na, nb;
        char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
        assert_non_null(x);
        assert_non_null(y);
        if (na != nb || memcmp(x, y, na)) fail_msg("merged %s differs from the single run's", b);
        if (!i) assert_non_null(strstr(y, "\"calibration\""));
        free(x), free(y);
    }
    snprintf(args, sizeof args, "plan %s/p.json --budget 230kB -o %s/plan.json", dir, dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    free(out);
    snprintf(args, sizeof args, "quantize %s --plan %s/plan.json -o %s/q --mode gptq --stats %s/s.json --json --quiet", model,
             dir, dir, dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    assert_non_null(strstr(out, "gptq+opt"));
    free(out);
    /* usage errors and refusals */
    snprintf(args, sizeof args, "calibrate %s -o %s/x.json", model, dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "calibrate %s --file %s", model, txt);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "calibrate %s --file %s -o %s/x.json --memory 0", model, txt, dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "calibrate %s --file %s -o %s/x.json", model, txt, model);
    assert_int_equal(tu_run_cli(args, &out), 2);
    assert_non_null(strstr(out, "inside the model directory"));
    free(out);
    snprintf(args, sizeof args, "quantize %s --plan %s/plan.json -o %s/q2 --mode gptq", model, dir, dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "quantize %s --plan %s/plan.json -o %s/q2 --stats %s/s.json", model, dir, dir, dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "analyse %s --stats %s/nope.json -o %s/p2.json --quiet", model, dir, dir);
    assert_int_equal(tu_run_cli(args, &out), 1);
    free(out);
    assert_int_equal(tu_run_cli("calibrate --help", &out), 0);
    assert_non_null(strstr(out, "--no-hessian"));
    free(out);
    free(txt);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_observer),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_moe),
        cmocka_unit_test(test_damaged_files),
        cmocka_unit_test(test_weighted_analysis),
        cmocka_unit_test(test_quantize_gptq),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
