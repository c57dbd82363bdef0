/* Quantize: every test model (and a synthetic Qwen3-MoE) is analysed, planned at several budgets
 * and written; an independent reader then checks the output from the files alone, following
 * docs/mlx-format.md written out here (safetensors headers parsed by hand, mlx-lm's loader rule
 * for config.json, LSB-first bit streams, w = scale * q + bias), and compares the dequantization
 * error with what the profile predicted. Failure cases must leave nothing behind. */
#include "testutil.h"

#include "io/mlx_internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <grp.h>

/* ------------------------------------------------------------------ independent decoding */

static float tq_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float tq_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0) v = ldexpf((float)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexpf((float)(m | 1024), e - 25);
    return s ? -v : v;
}

static uint16_t tq_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static double tq_val(rf_dtype dt, const void *data, uint64_t i)
{
    const uint8_t *p = data;
    if (dt == RF_DT_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    if (dt == RF_DT_BF16) return tq_bf16(h);
    assert_int_equal(dt, RF_DT_F16);
    return tq_f16(h);
}

/* Element I of an LSB-first bit stream of BITS-bit codes stored as little-endian uint32 words. */
static unsigned tq_code(const uint8_t *row, uint64_t i, int bits)
{
    uint64_t bit = i * (uint64_t)bits, w = bit / 32, o = bit % 32;
    uint32_t lo, hi = 0;
    memcpy(&lo, row + 4 * w, 4);
    uint64_t v = lo >> o;
    if (o + (uint64_t)bits > 32) {
        memcpy(&hi, row + 4 * (w + 1), 4);
        v |= (uint64_t)hi << (32 - o);
    }
    return (unsigned)(v & ((1u << bits) - 1));
}

/* ------------------------------------------------------------------ the output, read from files */

typedef struct tq_tensor {
    char name[256];
    char dtype[16];
    int ndim;
    uint64_t shape[4];
    const uint8_t *data;
    uint64_t nbytes;
} tq_tensor;

typedef struct tq_out {
    tq_tensor *t;
    size_t n;
    char *files[64];
    uint8_t *bufs[64];
    int nfiles;
    json_t *config, *index;
} tq_out;

static const tq_tensor *tq_find(const tq_out *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (!strcmp(o->t[i].name, name)) return &o->t[i];
    return NULL;
}

static rf_dtype tq_dt(const char *s)
{
    if (!strcmp(s, "F32")) return RF_DT_F32;
    if (!strcmp(s, "BF16")) return RF_DT_BF16;
    if (!strcmp(s, "F16")) return RF_DT_F16;
    if (!strcmp(s, "U32")) return RF_DT_U32;
    fail_msg("unexpected dtype %s", s);
    return RF_DT_INVALID;
}

/* One shard: 8-byte little-endian length, compact sorted JSON, data. */
static void tq_read_shard(tq_out *o, const char *dir, const char *fname)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, fname);
    size_t n;
    uint8_t *buf = (uint8_t *)tu_read_file(path, &n);
    assert_non_null(buf);
    assert_true(n >= 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | buf[i];
    assert_true(8 + hl <= n);
    char *htext = malloc(hl + 1);
    memcpy(htext, buf + 8, hl);
    htext[hl] = '\0';
    size_t tl = hl;
    while (tl > 0 && htext[tl - 1] == ' ') htext[--tl] = '\0'; /* alignment padding */
    json_error_t je;
    json_t *h = json_loads(htext, 0, &je);
    assert_non_null(h);
    char *again = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(again, htext); /* MLX: compact JSON, keys sorted */
    free(again);
    json_t *meta = json_object_get(h, "__metadata__");
    assert_non_null(meta);
    assert_string_equal(json_string_value(json_object_get(meta, "format")), "mlx");
    const char *key;
    json_t *v;
    uint64_t data0 = 8 + hl, covered = 0;
    json_object_foreach(h, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        o->t = realloc(o->t, (o->n + 1) * sizeof *o->t);
        tq_tensor *t = &o->t[o->n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", key);
        snprintf(t->dtype, sizeof t->dtype, "%s", json_string_value(json_object_get(v, "dtype")));
        json_t *shp = json_object_get(v, "shape"), *off = json_object_get(v, "data_offsets");
        t->ndim = (int)json_array_size(shp);
        assert_true(t->ndim <= 4);
        uint64_t ne = 1;
        for (int d = 0; d < t->ndim; d++) ne *= t->shape[d] = (uint64_t)json_integer_value(json_array_get(shp, d));
        uint64_t b = (uint64_t)json_integer_value(json_array_get(off, 0)), e = (uint64_t)json_integer_value(json_array_get(off, 1));
        assert_int_equal(e - b, ne * rf_dtype_size(tq_dt(t->dtype)));
        assert_true(data0 + e <= n);
        t->data = buf + data0 + b;
        t->nbytes = e - b;
        covered += e - b;
    }
    assert_int_equal(covered, n - data0); /* no gaps, no overlaps (with distinct offsets) */
    json_decref(h);
    free(htext);
    o->files[o->nfiles] = strdup(fname);
    o->bufs[o->nfiles++] = buf;
}

static int str_ends(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static void tq_open(tq_out *o, const char *dir)
{
    memset(o, 0, sizeof *o);
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        if (str_ends(ents[i]->d_name, ".safetensors")) tq_read_shard(o, dir, ents[i]->d_name);
        assert_null(strstr(ents[i]->d_name, ".tmp")); /* no temporary files left */
        free(ents[i]);
    }
    free(ents);
    assert_true(o->nfiles >= 1);
    char path[4096];
    json_error_t je;
    snprintf(path, sizeof path, "%s/config.json", dir);
    o->config = json_load_file(path, 0, &je);
    assert_non_null(o->config);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    o->index = json_load_file(path, 0, &je);
    assert_non_null(o->index);
}

static void tq_close(tq_out *o)
{
    for (int i = 0; i < o->nfiles; i++) {
        free(o->files[i]);
        free(o->bufs[i]);
    }
    free(o->t);
    json_decref(o->config);
    json_decref(o->index);
}

/* mlx-lm's loader: config["quantization"][p] when p is a key, else the global config iff
 * "<p>.scales" is a weight. */
static void tq_resolve(const tq_out *o, const char *p, int *bits, int *gs)
{
    json_t *q = json_object_get(o->config, "quantization");
    *bits = *gs = 0;
    char sname[300];
    snprintf(sname, sizeof sname, "%s.scales", p);
    json_t *e = q ? json_object_get(q, p) : NULL;
    if (e && json_is_false(e)) return;
    if (!e && (!q || !tq_find(o, sname))) return;
    json_t *src = e ? e : q;
    *bits = (int)json_integer_value(json_object_get(src, "bits"));
    *gs = (int)json_integer_value(json_object_get(src, "group_size"));
}

/* ------------------------------------------------------------------ checking one output */

/* kept_f32 / scale_f32: the output dtypes of F32 source weights kept / of their scales; learnt
 * from the first such tensor when RF_DT_INVALID, then the same for all. */
typedef struct tq_expect {
    const char *model_dir, *out_dir;
    const rf_plan *plan;
    const rf_profile *prof;
    rf_dtype kept_f32, scale_f32;
} tq_expect;

static rf_dtype expect_dt(rf_dtype src, rf_dtype *f32_rule, rf_dtype got)
{
    if (src != RF_DT_F32) return src;
    if (*f32_rule == RF_DT_INVALID) {
        assert_true(got == RF_DT_BF16 || got == RF_DT_F32 || got == RF_DT_F16);
        *f32_rule = got;
    }
    return *f32_rule;
}

/* Source element I of unit member K (or of a plain tensor). */
static double src_val(const rf_tensor *t, uint64_t i) { return tq_val(t->dtype, t->data, i); }

static void check_kept_data(const rf_tensor *src, const uint8_t *out, uint64_t base, rf_dtype odt)
{
    for (uint64_t i = 0; i < src->nelem; i++) {
        if (src->dtype == odt) {
            uint64_t es = rf_dtype_size(odt);
            if (memcmp((const uint8_t *)src->data + i * es, out + (base + i) * es, es))
                fail_msg("%s: element %llu changed", src->name, (unsigned long long)i);
        } else if (odt == RF_DT_BF16) {
            float f;
            memcpy(&f, (const uint8_t *)src->data + 4 * i, 4);
            uint16_t h;
            memcpy(&h, out + 2 * (base + i), 2);
            if (h != tq_to_bf16(f)) fail_msg("%s: element %llu not rounded to bf16", src->name, (unsigned long long)i);
        } else {
            double a = src_val(src, i), b = tq_val(odt, out, base + i);
            if (fabs(a - b) > 1e-3 * fabs(a) + 1e-7) fail_msg("%s: element %llu: %g vs %g", src->name, (unsigned long long)i, a, b);
        }
    }
}

/* Dequantize unit U from the files and return the sum of squared errors against the source. */
static double dequant_sse(const rf_model *m, const rf_unit *u, const tq_tensor *w, const tq_tensor *sc,
                          const tq_tensor *bi, int bits, int gs)
{
    rf_dtype sdt = tq_dt(sc->dtype);
    uint64_t rows = u->rows, cols = u->cols, wpr = cols * (uint64_t)bits / 32, gpr = cols / (uint64_t)gs;
    double sse = 0;
    uint64_t grow = 0;
    for (int k = 0; k < u->n_members; k++) {
        const rf_tensor *t = rf_model_tinfo(m, (uint64_t)u->members[k])->t;
        uint64_t mrows = t->nelem / cols;
        for (uint64_t r = 0; r < mrows; r++, grow++) {
            const uint8_t *row = w->data + grow * wpr * 4;
            for (uint64_t c = 0; c < cols; c++) {
                double s = tq_val(sdt, sc->data, grow * gpr + c / (uint64_t)gs);
                double b = tq_val(sdt, bi->data, grow * gpr + c / (uint64_t)gs);
                double d = src_val(t, r * cols + c) - (s * tq_code(row, c, bits) + b);
                sse += d * d;
            }
        }
    }
    (void)rows;
    return sse;
}

static void check_unit(tq_expect *x, const tq_out *o, const rf_model *m, const rf_unit *u,
                       const rf_plan_unit *pu)
{
    char n[300];
    int bits, gs;
    tq_resolve(o, u->name, &bits, &gs);
    if (bits != pu->bits || gs != pu->gs)
        fail_msg("%s: config.json resolves to %d/%d, the plan says %d/%d", u->name, bits, gs, pu->bits, pu->gs);
    snprintf(n, sizeof n, "%s.weight", u->name);
    const tq_tensor *w = tq_find(o, n);
    if (!w) fail_msg("no tensor %s", n);
    snprintf(n, sizeof n, "%s.scales", u->name);
    const tq_tensor *sc = tq_find(o, n);
    snprintf(n, sizeof n, "%s.biases", u->name);
    const tq_tensor *bi = tq_find(o, n);
    int stacked = u->n_experts > 0;
    assert_int_equal(w->ndim, stacked ? 3 : 2);
    if (stacked) assert_int_equal(w->shape[0], (uint64_t)u->n_experts);
    assert_int_equal(w->shape[w->ndim - 2], u->rows);
    if (!bits) {
        if (sc || bi) fail_msg("kept %s has scales/biases", u->name);
        rf_dtype odt = expect_dt(u->dtype, &x->kept_f32, tq_dt(w->dtype));
        assert_int_equal(tq_dt(w->dtype), odt);
        assert_int_equal(w->nbytes, pu->bytes);
        assert_int_equal(w->shape[w->ndim - 1], u->cols);
        uint64_t base = 0;
        for (int k = 0; k < u->n_members; k++) {
            const rf_tensor *t = rf_model_tinfo(m, (uint64_t)u->members[k])->t;
            check_kept_data(t, w->data, base, odt);
            base += t->nelem;
        }
        return;
    }
    if (!sc || !bi) fail_msg("quantized %s lacks scales or biases", u->name);
    assert_string_equal(w->dtype, "U32");
    rf_dtype odt = expect_dt(u->dtype, &x->scale_f32, tq_dt(sc->dtype));
    assert_int_equal(tq_dt(sc->dtype), odt);
    assert_int_equal(tq_dt(bi->dtype), odt);
    assert_int_equal(w->shape[w->ndim - 1], u->cols * (uint64_t)bits / 32);
    assert_int_equal(sc->ndim, w->ndim);
    for (int d = 0; d < w->ndim - 1; d++) assert_int_equal(sc->shape[d], w->shape[d]);
    assert_int_equal(sc->shape[sc->ndim - 1], u->cols / (uint64_t)gs);
    for (int d = 0; d < sc->ndim; d++) assert_int_equal(bi->shape[d], sc->shape[d]);
    assert_int_equal(w->nbytes + sc->nbytes + bi->nbytes, pu->bytes);

    double sse = dequant_sse(m, u, w, sc, bi, bits, gs);
    int64_t pi = rf_profile_find_unit(x->prof, u->name);
    assert_true(pi >= 0);
    const rf_punit *pr = rf_profile_unit(x->prof, (uint64_t)pi);
    const rf_pcand *c = NULL;
    for (int k = 0; k < pr->n_cands; k++)
        if (pr->cands[k].bits == bits && pr->cands[k].gs == gs) c = &pr->cands[k];
    assert_non_null(c);
    double want = c->err[rf_plan_mode(x->plan)].sse;
    if (!(fabs(sse - want) <= 1e-4 * want + 1e-12))
        fail_msg("%s (%d/%d): dequantized sse %.9g, the profile predicted %.9g", u->name, bits, gs, sse, want);
}

/* What a loader needs is copied unchanged (the test's own list, from the models used here); other
 * files (README.md, pytorch_model.bin, ...) are not. */
static int loader_needs(const char *nm)
{
    static const char *const need[] = {"LICENSE", "generation_config.json", "special_tokens_map.json", "tokenizer.json",
                                       "tokenizer.model", "tokenizer_config.json", "vocab.json", "merges.txt",
                                       "chat_template.jinja", "tokenization_mine.py", "added_tokens.json"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!strcmp(nm, need[i])) return 1;
    return 0;
}

static void check_files_copied(const char *src, const char *dst)
{
    struct dirent **ents;
    int n = scandir(src, &ents, NULL, alphasort);
    assert_true(n > 0);
    for (int i = 0; i < n; i++) {
        const char *nm = ents[i]->d_name;
        char other[4096];
        snprintf(other, sizeof other, "%s/%s", dst, nm);
        if (nm[0] != '.' && !loader_needs(nm) && !str_ends(nm, ".safetensors") && !str_ends(nm, ".index.json") &&
            strcmp(nm, "config.json") && access(other, F_OK) == 0)
            fail_msg("%s was copied: a loader does not need it", nm);
        if (loader_needs(nm)) {
            char a[4096], b[4096];
            snprintf(a, sizeof a, "%s/%s", src, nm);
            snprintf(b, sizeof b, "%s/%s", dst, nm);
            size_t la, lb;
            char *x = tu_read_file(a, &la), *y = tu_read_file(b, &lb);
            if (!y) fail_msg("%s was not copied", nm);
            assert_int_equal(la, lb);
            assert_memory_equal(x, y, la);
            free(x);
            free(y);
        }
        free(ents[i]);
    }
    free(ents);
}

static void check_output(tq_expect *x)
{
    rf_err err;
    rf_model *m = NULL;
    TU_OK(rf_model_open(x->model_dir, &m, &err), &err);
    tq_out o;
    tq_open(&o, x->out_dir);
    const rf_config *cfg = rf_model_config(m);

    /* config.json: both keys, identical, with a global default */
    json_t *q = json_object_get(o.config, "quantization"), *qc = json_object_get(o.config, "quantization_config");
    int any_q = 0;
    for (uint64_t i = 0; i < rf_plan_unit_count(x->plan); i++) any_q |= rf_plan_get_unit(x->plan, i)->bits != 0;
    if (any_q) {
        assert_non_null(q);
        assert_true(json_equal(q, qc));
        assert_string_equal(json_string_value(json_object_get(q, "mode")), "affine");
        assert_true(json_is_integer(json_object_get(q, "bits")));
    } else {
        assert_null(q);
        assert_null(qc);
    }

    /* everything else of the source config.json survives, values exactly; keys mlx-lm needs in
     * their older spelling (rf_mlx_config) may be added, never changed */
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/config.json", x->model_dir);
    json_error_t cje;
    json_t *src_cfg = json_load_file(cpath, 0, &cje), *out_cfg = json_deep_copy(o.config);
    assert_non_null(src_cfg);
    static const char *const drop[] = {"quantization", "quantization_config", "torch_dtype", "_name_or_path"};
    for (size_t k = 0; k < 4; k++) {
        json_object_del(src_cfg, drop[k]);
        json_object_del(out_cfg, drop[k]);
    }
    const char *key;
    json_t *val;
    json_object_foreach(src_cfg, key, val) {
        if (!json_equal(val, json_object_get(out_cfg, key))) fail_msg("config.json key %s changed", key);
    }
    static const char *const added[] = {"rope_theta", "rope_scaling", "head_dim", "partial_rotary_factor", "num_experts"};
    json_object_foreach(out_cfg, key, val) {
        int ok = json_object_get(src_cfg, key) != NULL;
        for (size_t k = 0; k < sizeof added / sizeof added[0]; k++) ok |= !strcmp(key, added[k]);
        if (!ok) fail_msg("config.json key %s added", key);
    }
    json_decref(src_cfg);
    json_decref(out_cfg);

    /* units */
    uint8_t *covered = calloc(o.n, 1);
    for (uint64_t i = 0; i < rf_model_unit_count(m); i++) {
        const rf_unit *u = rf_model_unit(m, i);
        int64_t pi = rf_plan_find_unit(x->plan, u->name);
        assert_true(pi >= 0);
        char n[300];
        snprintf(n, sizeof n, "%s.weight", u->name);
        if (u->role == RF_ROLE_LM_HEAD && cfg->tie_word_embeddings) {
            assert_null(tq_find(&o, n));
            continue;
        }
        check_unit(x, &o, m, u, rf_plan_get_unit(x->plan, (uint64_t)pi));
    }
    /* every tensor is a unit's or a source tensor kept as it is; modules with scales are units */
    uint64_t total = 0;
    for (size_t i = 0; i < o.n; i++) {
        const tq_tensor *t = &o.t[i];
        total += t->nbytes;
        char mod[256];
        snprintf(mod, sizeof mod, "%s", t->name);
        char *dot = strrchr(mod, '.');
        *dot = '\0';
        if (rf_model_unit_find(m, mod) >= 0) continue;
        assert_true(str_ends(t->name, ".weight") || str_ends(t->name, ".bias"));
        int bits, gs;
        tq_resolve(&o, mod, &bits, &gs);
        assert_int_equal(bits, 0);
        const rf_tensor *src = rf_st_find(rf_model_st(m), t->name);
        if (!src) fail_msg("output tensor %s is not in the source", t->name);
        assert_int_equal(tq_dt(t->dtype), expect_dt(src->dtype, &x->kept_f32, tq_dt(t->dtype)));
        assert_int_equal(t->ndim, src->ndim);
        check_kept_data(src, t->data, 0, tq_dt(t->dtype));
    }
    free(covered);
    /* F32 sources: BF16 everywhere, F32 weights kept with BF16 scales, or F32 everywhere */
    if (x->kept_f32 == RF_DT_BF16) assert_true(x->scale_f32 == RF_DT_INVALID || x->scale_f32 == RF_DT_BF16);
    if (x->scale_f32 == RF_DT_F32) assert_true(x->kept_f32 == RF_DT_INVALID || x->kept_f32 == RF_DT_F32);
    /* the bytes on disk are the plan's total */
    assert_int_equal(total, rf_plan_total_bytes(x->plan));
    json_t *meta = json_object_get(o.index, "metadata"), *wm = json_object_get(o.index, "weight_map");
    assert_int_equal((uint64_t)json_integer_value(json_object_get(meta, "total_size")), total);
    assert_int_equal(json_object_size(wm), o.n);

    check_files_copied(x->model_dir, x->out_dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/ramfit.json", x->out_dir);
    json_error_t je;
    json_t *rj = json_load_file(path, 0, &je);
    assert_non_null(rj);
    char fp[24];
    snprintf(fp, sizeof fp, "%016llx", (unsigned long long)rf_plan_fingerprint(x->plan));
    assert_string_equal(json_string_value(json_object_get(rj, "fingerprint")), fp);
    assert_int_equal((uint64_t)json_integer_value(json_object_get(rj, "tensor_bytes")), total);
    assert_non_null(json_object_get(rj, "plan"));
    json_decref(rj);
    tq_close(&o);
    rf_model_free(m);
}

/* ------------------------------------------------------------------ fixtures */

static rf_profile *analyse(const char *dir, unsigned modes)
{
    rf_err err;
    rf_model *m = NULL;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    rf_analyse_opts ao;
    rf_analyse_opts_default(&ao);
    ao.threads = 2;
    ao.modes = modes;
    rf_profile *p = NULL;
    TU_OK(rf_analyse(m, &ao, &p, &err), &err);
    rf_model_free(m);
    return p;
}

static rf_plan *plan_at(const rf_profile *p, const char *method, rf_qmode mode, double frac)
{
    rf_err err;
    rf_plan_opts po;
    rf_plan_opts_default(&po);
    if (method) TU_OK(rf_plan_parse_method(method, &po, &err), &err);
    po.mode = mode;
    rf_planner *pl = NULL;
    TU_OK(rf_planner_create(p, &po, &pl, &err), &err);
    uint64_t lo = rf_planner_min_safe(pl), hi = rf_planner_full_bytes(pl);
    uint64_t budget = frac >= 1 ? hi : lo + (uint64_t)((double)(hi - lo) * frac);
    rf_plan *plan = NULL;
    TU_OK(rf_planner_solve(pl, budget, &plan, &err), &err);
    rf_planner_free(pl);
    return plan;
}

static void quantize_and_check(const char *dir, const rf_profile *prof, const rf_plan *plan, int threads,
                               uint64_t shard)
{
    rf_err err;
    rf_model *m = NULL;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    char *tmp = tu_mkdtemp();
    char out[4096];
    snprintf(out, sizeof out, "%s/out", tmp);
    rf_quantize_opts o;
    rf_quantize_opts_default(&o);
    o.threads = threads;
    o.max_shard_bytes = shard;
    rf_quantize_result r;
    TU_OK(rf_quantize_write(m, plan, &o, out, NULL, &r, &err), &err);
    assert_int_equal(r.tensor_bytes, rf_plan_total_bytes(plan));
    tq_expect x = {dir, out, plan, prof, RF_DT_INVALID, RF_DT_INVALID};
    check_output(&x);
    rf_model_free(m);
    tu_rmtree(tmp);
    free(tmp);
}

/* NPLANS of: ramfit at min-safe, ramfit at 35% of the way to full size, mixed 3/6, uniform 4/64. */
static void run_model(const char *name, unsigned modes, size_t nplans)
{
    const char *d = tu_model_dir(name);
    if (!d) skip();
    char *dir = strdup(d);
    rf_profile *p = analyse(dir, modes);
    static const struct { const char *method; double frac; } plans[] = {
        {NULL, 0.35}, {"mixed:3:6", 0}, {NULL, 0.0}, {"uniform:4:64", 0},
    };
    for (size_t k = 0; k < nplans; k++) {
        for (int mo = 0; mo < 2; mo++) {
            if (!(modes >> mo & 1)) continue;
            if (plans[k].method && mo == RF_QMODE_OPT) continue; /* baselines use the MLX quantizer */
            rf_plan *plan = plan_at(p, plans[k].method, (rf_qmode)mo, plans[k].frac);
            quantize_and_check(dir, p, plan, 2, 0);
            rf_plan_free(plan);
        }
    }
    rf_profile_free(p);
    free(dir);
}

static void test_stories260k(void **state) { (void)state; run_model("stories260k", 3, 4); }
static void test_babyllama(void **state) { (void)state; run_model("babyllama-tok105", 1, 4); }
static void test_qwen3_dense_mini(void **state) { (void)state; run_model("qwen3-dense-mini", 1, 2); }
static void test_qwen3_moe_mini(void **state) { (void)state; run_model("qwen3-moe-mini", 1, 2); }

/* A Qwen3-MoE-shaped F16 checkpoint: 12 experts stored per expert in name order (expert 10
 * before expert 2 in the file), tied embeddings, and an extra file to copy. MIXTRAL: the same
 * as Mixtral (block_sparse_moe, experts w1/w2/w3, untied lm_head, no q/k norms). */
static char *make_synth_moe_as(int mixtral)
{
    char *dir = tu_mkdtemp();
    const int H = 128, L = 2, E = 12, MI = 64, V = 256, NH = 2, NKV = 1, HD = 64;
    char cfg[2048];
    if (mixtral)
        snprintf(cfg, sizeof cfg,
                 "{\"architectures\": [\"MixtralForCausalLM\"], \"model_type\": \"mixtral\", \"hidden_size\": %d,"
                 " \"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,"
                 " \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, \"num_local_experts\": %d,"
                 " \"num_experts_per_tok\": 2, \"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0,"
                 " \"tie_word_embeddings\": false, \"max_position_embeddings\": 512, \"torch_dtype\": \"float16\"}",
                 H, MI, L, NH, NKV, HD, V, E);
    else
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"model_type\": \"qwen3_moe\", \"hidden_size\": %d,"
             " \"intermediate_size\": 256, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,"
             " \"num_key_value_heads\": %d, \"head_dim\": %d, \"vocab_size\": %d, \"num_experts\": %d,"
             " \"num_experts_per_tok\": 2, \"moe_intermediate_size\": %d, \"decoder_sparse_step\": 1,"
             " \"mlp_only_layers\": [], \"norm_topk_prob\": true, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0,"
             " \"tie_word_embeddings\": true, \"max_position_embeddings\": 512, \"torch_dtype\": \"float16\"}",
             H, L, NH, NKV, HD, V, E, MI);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(tu_write_file(path, cfg, strlen(cfg)), 0);
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    assert_int_equal(tu_write_file(path, "{{ messages }}", 14), 0);

    /* names sorted as a Hugging Face export lists them */
    char names[512][128];
    uint64_t shapes[512][2];
    int nt = 0;
#define ADD(r, c, ...) do { snprintf(names[nt], 128, __VA_ARGS__); shapes[nt][0] = (r); shapes[nt][1] = (c); nt++; } while (0)
    ADD(V, H, "model.embed_tokens.weight");
    ADD(H, 0, "model.norm.weight");
    if (mixtral) ADD(V, H, "lm_head.weight");
    for (int l = 0; l < L; l++) {
        ADD(H, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(H, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(NH * HD, H, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(NKV * HD, H, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(NKV * HD, H, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(H, NH * HD, "model.layers.%d.self_attn.o_proj.weight", l);
        if (mixtral) {
            ADD(E, H, "model.layers.%d.block_sparse_moe.gate.weight", l);
            for (int e = 0; e < E; e++) {
                ADD(MI, H, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
                ADD(H, MI, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
                ADD(MI, H, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
            }
            continue;
        }
        ADD(HD, 0, "model.layers.%d.self_attn.q_norm.weight", l);
        ADD(HD, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        ADD(E, H, "model.layers.%d.mlp.gate.weight", l);
        for (int e = 0; e < E; e++) {
            ADD(MI, H, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
            ADD(MI, H, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
            ADD(H, MI, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
        }
    }
#undef ADD
    int order[512];
    for (int i = 0; i < nt; i++) order[i] = i;
    for (int i = 1; i < nt; i++) /* insertion sort by name */
        for (int j = i; j > 0 && strcmp(names[order[j - 1]], names[order[j]]) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    rf_err err;
    rf_stw *w = NULL;
    rf_stw_opts wo = {.basename = "model"};
    TU_OK(rf_stw_create(dir, &wo, &w, &err), &err);
    for (int i = 0; i < nt; i++) {
        int k = order[i];
        TU_OK(rf_stw_declare(w, names[k], RF_DT_F16, shapes[k][1] ? 2 : 1, shapes[k], &err), &err);
    }
    tu_rng rng = {42};
    for (int i = 0; i < nt; i++) {
        int k = order[i];
        uint64_t n = shapes[k][0] * (shapes[k][1] ? shapes[k][1] : 1);
        uint16_t *buf = malloc(n * 2);
        int norm = shapes[k][1] == 0;
        double sd = 0.02 * (1 + (double)(k % 7));
        for (uint64_t j = 0; j < n; j++) {
            double v = norm ? 1 + 0.1 * tu_rng_normal(&rng) : sd * tu_rng_student_t(&rng, 5);
            buf[j] = rf_f32_to_f16((float)v);
        }
        buf[0] = rf_f32_to_f16(0.0f); /* a zero in the mix */
        TU_OK(rf_stw_write(w, buf, n * 2, &err), &err);
        free(buf);
    }
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    return dir;
}

static char *make_synth_moe(void) { return make_synth_moe_as(0); }
static char *write_with_threads(const char *dir, const rf_plan *plan, int threads);

static void test_synth_moe(void **state)
{
    (void)state;
    char *dir = make_synth_moe();
    rf_profile *p = analyse(dir, 3);
    for (int k = 0; k < 3; k++) {
        rf_plan *plan = k == 2 ? plan_at(p, "uniform:3:32", RF_QMODE_MLX, 0) : plan_at(p, NULL, (rf_qmode)k, 0.2);
        /* a tiny shard limit forces several shards and the index */
        quantize_and_check(dir, p, plan, 2, k == 1 ? 100000 : 0);
        rf_plan_free(plan);
    }
    rf_profile_free(p);
    tu_rmtree(dir);
    free(dir);
}

/* Mixtral: experts w1/w3/w2 become block_sparse_moe.switch_mlp.gate_proj/up_proj/down_proj. */
static void test_synth_mixtral(void **state)
{
    (void)state;
    char *dir = make_synth_moe_as(1);
    rf_profile *p = analyse(dir, 1);
    rf_plan *plan = plan_at(p, NULL, RF_QMODE_MLX, 0.25);
    quantize_and_check(dir, p, plan, 2, 0);
    char *tmp = write_with_threads(dir, plan, 2), path[4096];
    snprintf(path, sizeof path, "%s/out/model.safetensors.index.json", tmp);
    size_t n;
    char *idx = tu_read_file(path, &n);
    assert_non_null(strstr(idx, "\"model.layers.1.block_sparse_moe.switch_mlp.down_proj.weight\""));
    assert_non_null(strstr(idx, "\"model.layers.0.block_sparse_moe.gate.weight\""));
    assert_null(strstr(idx, "experts."));
    free(idx);
    tu_rmtree(tmp);
    free(tmp);
    rf_plan_free(plan);
    rf_profile_free(p);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ determinism */

static char *write_with_threads(const char *dir, const rf_plan *plan, int threads)
{
    rf_err err;
    rf_model *m = NULL;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    char *tmp = tu_mkdtemp();
    char out[4096];
    snprintf(out, sizeof out, "%s/out", tmp);
    rf_quantize_opts o;
    rf_quantize_opts_default(&o);
    o.threads = threads;
    TU_OK(rf_quantize_write(m, plan, &o, out, NULL, NULL, &err), &err);
    rf_model_free(m);
    return tmp;
}

/* Small jobs and waves (many row blocks per tensor, units spanning waves, both arenas in use):
 * the files are the same for 1 and 3 threads, and still decode to the predicted error. */
static void test_thread_count_invariant(void **state)
{
    (void)state;
    char *dir = make_synth_moe();
    rf_profile *p = analyse(dir, 2);
    rf_plan *plan = plan_at(p, NULL, RF_QMODE_OPT, 0.3);
    uint64_t jb = rf_qz_job_bytes, wb = rf_qz_wave_bytes;
    rf_qz_job_bytes = 3000; /* not a multiple of any row size */
    rf_qz_wave_bytes = 20000;
    char *a = write_with_threads(dir, plan, 1), *b = write_with_threads(dir, plan, 3);
    rf_qz_job_bytes = jb;
    rf_qz_wave_bytes = wb;
    char outa[4096];
    snprintf(outa, sizeof outa, "%s/out", a);
    tq_expect x = {dir, outa, plan, p, RF_DT_INVALID, RF_DT_INVALID};
    check_output(&x);
    static const char *const files[] = {"model.safetensors", "config.json", "model.safetensors.index.json"};
    for (size_t i = 0; i < 3; i++) {
        char pa[4096], pb[4096];
        snprintf(pa, sizeof pa, "%s/out/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/out/%s", b, files[i]);
        size_t la, lb;
        char *fa = tu_read_file(pa, &la), *fb = tu_read_file(pb, &lb);
        assert_non_null(fa);
        assert_non_null(fb);
        assert_int_equal(la, lb);
        assert_memory_equal(fa, fb, la);
        free(fa);
        free(fb);
    }
    tu_rmtree(a);
    tu_rmtree(b);
    free(a);
    free(b);
    rf_plan_free(plan);
    rf_profile_free(p);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ failure cases */

/* Names in DIR, sorted, joined by '\n'. */
static char *listing(const char *dir)
{
    struct dirent **ents;
    int n = scandir(dir, &ents, NULL, alphasort);
    assert_true(n >= 0);
    size_t cap = 16;
    for (int i = 0; i < n; i++) cap += strlen(ents[i]->d_name) + 1;
    char *s = calloc(cap, 1);
    for (int i = 0; i < n; i++) {
        strcat(s, ents[i]->d_name);
        strcat(s, "\n");
        free(ents[i]);
    }
    free(ents);
    return s;
}

typedef struct fx {
    char *tmp, *model;
    rf_profile *prof;
    rf_plan *plan;
    rf_model *m;
} fx;

/* stories260k copied into a temp dir (so OUT_DIR can be placed inside it), with a plan. */
static void fx_open(fx *f)
{
    const char *d = tu_model_dir("stories260k");
    assert_non_null(d);
    f->tmp = tu_mkdtemp();
    char cmd[8192];
    f->model = malloc(strlen(f->tmp) + 16);
    sprintf(f->model, "%s/model", f->tmp);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", d, f->model);
    assert_int_equal(system(cmd), 0);
    f->prof = analyse(f->model, 1);
    f->plan = plan_at(f->prof, NULL, RF_QMODE_MLX, 0.3);
    rf_err err;
    TU_OK(rf_model_open(f->model, &f->m, &err), &err);
}

static void fx_close(fx *f)
{
    rf_model_free(f->m);
    rf_plan_free(f->plan);
    rf_profile_free(f->prof);
    tu_rmtree(f->tmp);
    free(f->tmp);
    free(f->model);
}

static rf_status try_write(fx *f, const char *out, int force, rf_err *err)
{
    rf_quantize_opts o;
    rf_quantize_opts_default(&o);
    o.force = force;
    o.threads = 2;
    return rf_quantize_write(f->m, f->plan, &o, out, NULL, NULL, err);
}

static void test_refuses_model_dir(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char *before = listing(f.model), *tbefore = listing(f.tmp);
    char out[4096];
    rf_err err;
    snprintf(out, sizeof out, "%s/inside", f.model);
    assert_int_equal(try_write(&f, out, 0, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "inside"));
    assert_int_equal(try_write(&f, f.model, 1, &err), RF_ERR_INVALID);
    snprintf(out, sizeof out, "%s/", f.model); /* trailing slash: same directory */
    assert_int_equal(try_write(&f, out, 1, &err), RF_ERR_INVALID);
    /* --force on a directory that contains the model would delete it */
    assert_int_equal(try_write(&f, f.tmp, 1, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "contains"));
    char *after = listing(f.model), *tafter = listing(f.tmp);
    assert_string_equal(before, after);
    assert_string_equal(tbefore, tafter);
    free(before);
    free(after);
    free(tbefore);
    free(tafter);
    fx_close(&f);
}

static void test_existing_output(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char out[4096], marker[4200];
    snprintf(out, sizeof out, "%s/out", f.tmp);
    mkdir(out, 0755);
    snprintf(marker, sizeof marker, "%s/old-file", out);
    assert_int_equal(tu_write_file(marker, "x", 1), 0);
    char *before = listing(f.tmp);
    rf_err err;
    assert_int_equal(try_write(&f, out, 0, &err), RF_ERR_EXISTS);
    assert_non_null(strstr(err.msg, "--force"));
    char *after = listing(f.tmp);
    assert_string_equal(before, after);
    assert_int_equal(access(marker, F_OK), 0);
    /* --force replaces only an earlier ramfit output or an empty directory ("-o ~ --force" once
     * deleted any directory): this one is neither, and stays as it was */
    assert_int_equal(try_write(&f, out, 1, &err), RF_ERR_EXISTS);
    assert_non_null(strstr(err.msg, "not an earlier ramfit output"));
    free(after);
    after = listing(f.tmp);
    assert_string_equal(before, after);
    assert_int_equal(access(marker, F_OK), 0);
    char rj[4200];
    snprintf(rj, sizeof rj, "%s/ramfit.json", out);
    assert_int_equal(tu_write_file(rj, "{}", 2), 0);
    TU_OK(try_write(&f, out, 1, &err), &err);
    assert_int_equal(access(marker, F_OK), -1); /* replaced, the old one deleted */
    char *final = listing(f.tmp);
    assert_string_equal(before, final);         /* no .tmp- or .old- leftovers */
    tq_expect x = {f.model, out, f.plan, f.prof, RF_DT_INVALID, RF_DT_INVALID};
    check_output(&x);
    /* and again over its own output; an empty directory; not a file */
    TU_OK(try_write(&f, out, 1, &err), &err);
    char empty[4200], file[4200];
    snprintf(empty, sizeof empty, "%s/empty", f.tmp);
    assert_int_equal(mkdir(empty, 0755), 0);
    TU_OK(try_write(&f, empty, 1, &err), &err);
    snprintf(file, sizeof file, "%s/file", f.tmp);
    assert_int_equal(tu_write_file(file, "data", 4), 0);
    assert_int_equal(try_write(&f, file, 1, &err), RF_ERR_EXISTS);
    assert_non_null(strstr(err.msg, "not a directory"));
    size_t n;
    char *kept = tu_read_file(file, &n);
    assert_int_equal(n, 4);
    free(kept);
    free(before);
    free(after);
    free(final);
    fx_close(&f);
}

/* The output directory gets the caller's umask like any directory they make (it was 0700, from
 * mkdtemp: unreadable to mlx-lm run by another user). */
static void test_output_permissions(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char out[4096];
    snprintf(out, sizeof out, "%s/out", f.tmp);
    mode_t old = umask(022);
    rf_err err;
    TU_OK(try_write(&f, out, 0, &err), &err);
    struct stat sb;
    assert_int_equal(stat(out, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0755);
    umask(027);
    TU_OK(try_write(&f, out, 1, &err), &err);
    assert_int_equal(stat(out, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0750);
    umask(old);
    fx_close(&f);
}

static void test_unwritable_output(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char file[4096], out[4200];
    snprintf(file, sizeof file, "%s/a-file", f.tmp);
    assert_int_equal(tu_write_file(file, "x", 1), 0);
    snprintf(out, sizeof out, "%s/out", file); /* parent is not a directory */
    char *before = listing(f.tmp);
    rf_err err;
    rf_status s = try_write(&f, out, 0, &err);
    assert_true(s == RF_ERR_IO || s == RF_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "a-file"));
    snprintf(out, sizeof out, "%s/no/such/dir/out", f.tmp);
    s = try_write(&f, out, 0, &err);
    assert_true(s == RF_ERR_IO || s == RF_ERR_NOT_FOUND);
    char *after = listing(f.tmp);
    assert_string_equal(before, after);
    free(before);
    free(after);
    fx_close(&f);
}

/* Overwrite element ELEM of F32 tensor NAME in the fixture's checkpoint and reopen the model. */
static void poke_f32(fx *f, const char *name, uint64_t elem, float v)
{
    rf_err err;
    const rf_tensor *t = rf_st_find(rf_model_st(f->m), name);
    assert_non_null(t);
    assert_int_equal(t->dtype, RF_DT_F32);
    FILE *fp = fopen(t->file, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, (long)(t->offset + elem * 4), SEEK_SET), 0);
    assert_int_equal(fwrite(&v, 4, 1, fp), 1);
    fclose(fp);
    rf_model_free(f->m);
    TU_OK(rf_model_open(f->model, &f->m, &err), &err);
}

/* A NaN or Inf in a tensor the plan keeps (a norm; down_proj, whose 172 columns no group size
 * divides) was copied into the output and reported as success. */
static void test_nonfinite_kept(void **state)
{
    (void)state;
    static const struct { const char *name; uint64_t elem; float v; const char *say; } cases[] = {
        {"model.norm.weight", 7, NAN, "NaN weight at element 7"},
        {"model.layers.0.mlp.down_proj.weight", 172 + 5, -INFINITY, "infinite weight at row 1, column 5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fx f;
        fx_open(&f);
        poke_f32(&f, cases[i].name, cases[i].elem, cases[i].v);
        char out[4096];
        snprintf(out, sizeof out, "%s/out", f.tmp);
        char *before = listing(f.tmp);
        rf_err err;
        assert_int_equal(try_write(&f, out, 0, &err), RF_ERR_NONFINITE);
        if (!strstr(err.msg, cases[i].name) || !strstr(err.msg, cases[i].say) || !strstr(err.msg, "model.safetensors"))
            fail_msg("message: %s", err.msg);
        char *after = listing(f.tmp);
        assert_string_equal(before, after); /* no output, no temporary left */
        free(before);
        free(after);
        fx_close(&f);
    }
}

static void test_disk_full(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char out[4096];
    snprintf(out, sizeof out, "%s/out", f.tmp);
    char *before = listing(f.tmp);
    for (int k = 0; k < 2; k++) {
        /* k = 0: the shard hits the limit; k = 1: a later small file (the shard fits) */
        rlim_t lim = k == 0 ? 64 * 1024 : (rlim_t)rf_plan_total_bytes(f.plan) + 4096;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {lim, lim};
            setrlimit(RLIMIT_FSIZE, &rl);
            rf_err err;
            rf_status s = try_write(&f, out, 0, &err);
            if (s == RF_ERR_NOSPACE && !strstr(err.msg, f.tmp)) s = RF_ERR_INTERNAL; /* must name the file */
            _exit((int)s);
        }
        int st;
        waitpid(pid, &st, 0);
        assert_true(WIFEXITED(st));
        if (k == 0) assert_int_equal(WEXITSTATUS(st), RF_ERR_NOSPACE);
        else assert_true(WEXITSTATUS(st) == RF_ERR_NOSPACE || WEXITSTATUS(st) == RF_OK);
        if (WEXITSTATUS(st) == RF_OK) {
            char cmd[4200];
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
            assert_int_equal(system(cmd), 0);
        }
        char *after = listing(f.tmp);
        assert_string_equal(before, after);
        free(after);
    }
    free(before);
    fx_close(&f);
}

static void test_plan_for_other_model(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    const char *bd = tu_model_dir("babyllama-tok105");
    assert_non_null(bd);
    rf_err err;
    rf_model *bm = NULL;
    TU_OK(rf_model_open(bd, &bm, &err), &err);
    char out[4096];
    snprintf(out, sizeof out, "%s/out", f.tmp);
    char *before = listing(f.tmp);
    rf_quantize_opts o;
    rf_quantize_opts_default(&o);
    assert_int_equal(rf_quantize_write(bm, f.plan, &o, out, NULL, NULL, &err), RF_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "plan"));
    /* the right model, but a mode the plan did not assume */
    o.mode = RF_QMODE_OPT;
    assert_int_equal(rf_quantize_write(f.m, f.plan, &o, out, NULL, NULL, &err), RF_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "mlx"));
    char *after = listing(f.tmp);
    assert_string_equal(before, after);
    free(before);
    free(after);
    rf_model_free(bm);
    fx_close(&f);
}

/* ------------------------------------------------------------------ --dtype end to end */

static rf_profile *analyse_dt(const char *dir, rf_dtype f32_as)
{
    rf_err err;
    rf_model *m = NULL;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    rf_analyse_opts ao;
    rf_analyse_opts_default(&ao);
    ao.threads = 2;
    ao.f32_as = f32_as;
    rf_profile *p = NULL;
    TU_OK(rf_analyse(m, &ao, &p, &err), &err);
    rf_model_free(m);
    return p;
}

static const char *ramfit_json_str(const char *out, const char *key, char *buf, size_t cap)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/ramfit.json", out);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    assert_non_null(j);
    json_t *v = json_object_get(j, key);
    assert_non_null(v);
    snprintf(buf, cap, "%s", json_is_null(v) ? "null" : json_string_value(v));
    json_decref(j);
    return buf;
}

/* --dtype (issue 13): analyse, plan and quantize agree on the dtype F32 tensors are written in, for
 * each of bf16, f16, f32 (f32: everything F32, scales too, as mlx-lm keeps a float32 checkpoint);
 * the output is checked value by value against the profile's predicted error; a plan made under
 * another dtype is refused naming it; a 16-bit model refuses a dtype it would not get; F32 values
 * beyond float16 are refused, never written as inf. */
static void test_dtype_end_to_end(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    static const rf_dtype dts[] = {RF_DT_F32, RF_DT_F16, RF_DT_BF16};
    rf_err err;
    char buf[64];
    for (size_t i = 0; i < 3; i++) {
        rf_profile *p = analyse_dt(f.model, dts[i]);
        rf_plan *plan = plan_at(p, NULL, RF_QMODE_MLX, 0.3);
        for (int explicit_dt = 0; explicit_dt < 2; explicit_dt++) {
            if (dts[i] == RF_DT_F16 && !explicit_dt) continue; /* F16 is never guessed from a plan */
            char out[4096];
            snprintf(out, sizeof out, "%s/dt%zu-%d", f.tmp, i, explicit_dt);
            rf_quantize_opts o;
            rf_quantize_opts_default(&o);
            o.threads = 2;
            o.f32_as = explicit_dt ? dts[i] : RF_DT_INVALID;
            rf_quantize_result r;
            TU_OK(rf_quantize_write(f.m, plan, &o, out, NULL, &r, &err), &err);
            assert_int_equal(r.f32_kept_as, dts[i]);
            assert_int_equal(r.f32_scales_as, dts[i]);
            tq_expect x = {f.model, out, plan, p, RF_DT_INVALID, RF_DT_INVALID};
            check_output(&x);
            assert_int_equal(x.kept_f32, dts[i]);
            assert_int_equal(x.scale_f32, dts[i]);
            assert_string_equal(ramfit_json_str(out, "f32_kept_as", buf, sizeof buf), rf_dtype_name(dts[i]));
            assert_string_equal(ramfit_json_str(out, "f32_scales_as", buf, sizeof buf), rf_dtype_name(dts[i]));
            tu_rmtree(out);
        }
        /* the plan made under this dtype, quantized under another: refused, naming what it counted */
        rf_quantize_opts o;
        rf_quantize_opts_default(&o);
        o.f32_as = dts[(i + 1) % 3];
        char out[4096];
        snprintf(out, sizeof out, "%s/mismatch", f.tmp);
        rf_status mst = rf_quantize_write(f.m, plan, &o, out, NULL, NULL, &err);
        if (mst != RF_ERR_MISMATCH) fail_msg("dtype %s plan, %s asked: %s %s", rf_dtype_name(dts[i]), rf_dtype_name(o.f32_as), rf_status_name(mst), err.msg);
        assert_non_null(strstr(err.msg, "analyse --dtype"));
        assert_non_null(strstr(err.msg, rf_dtype_name(dts[i])));
        rf_plan_free(plan);
        rf_profile_free(p);
    }

    /* F32 values beyond float16: a kept norm (converted) and a quantized weight (F16 scales) */
    rf_profile *p16 = analyse_dt(f.model, RF_DT_F16);
    rf_plan *plan16 = plan_at(p16, NULL, RF_QMODE_MLX, 0.3);
    char *before = listing(f.tmp);
    poke_f32(&f, "model.norm.weight", 3, 70000.0f);
    rf_quantize_opts o;
    rf_quantize_opts_default(&o);
    o.f32_as = RF_DT_F16;
    char out[4096];
    snprintf(out, sizeof out, "%s/f16", f.tmp);
    assert_int_equal(rf_quantize_write(f.m, plan16, &o, out, NULL, NULL, &err), RF_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "model.norm.weight"));
    assert_non_null(strstr(err.msg, "does not fit F16"));
    char *after = listing(f.tmp);
    assert_string_equal(before, after); /* nothing left behind */
    free(after);
    /* the analysis refuses the same (kept tensor written as F16) */
    rf_analyse_opts ao;
    rf_analyse_opts_default(&ao);
    ao.f32_as = RF_DT_F16;
    rf_profile *pp = NULL;
    assert_int_equal(rf_analyse(f.m, &ao, &pp, &err), RF_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, "does not fit F16"));
    poke_f32(&f, "model.norm.weight", 3, 1.0f);
    const rf_plan_unit *qu = NULL;
    for (uint64_t i = 0; i < rf_plan_unit_count(plan16) && !qu; i++)
        if (rf_plan_get_unit(plan16, i)->bits && rf_plan_get_unit(plan16, i)->role == RF_ROLE_ATTN_Q) qu = rf_plan_get_unit(plan16, i);
    assert_non_null(qu);
    char wname[300];
    snprintf(wname, sizeof wname, "%s.weight", qu->name);
    poke_f32(&f, wname, 5, -80000.0f);
    assert_int_equal(rf_quantize_write(f.m, plan16, &o, out, NULL, NULL, &err), RF_ERR_NONFINITE);
    assert_non_null(strstr(err.msg, wname));
    assert_non_null(strstr(err.msg, "overflows"));
    after = listing(f.tmp);
    assert_string_equal(before, after);
    free(after);
    free(before);
    rf_plan_free(plan16);
    rf_profile_free(p16);

    /* a 16-bit checkpoint: only its own dtype may be asked for; nothing F32 to record */
    const char *bd = tu_model_dir("qwen3-dense-mini");
    if (bd) {
        rf_model *bm = NULL;
        TU_OK(rf_model_open(bd, &bm, &err), &err);
        assert_int_equal(rf_quantize_check_dtype(bm, RF_DT_F16, &err), RF_ERR_INVALID);
        assert_non_null(strstr(err.msg, "no F32 tensors"));
        assert_int_equal(rf_quantize_check_dtype(bm, RF_DT_F32, &err), RF_ERR_INVALID);
        TU_OK(rf_quantize_check_dtype(bm, RF_DT_BF16, &err), &err);
        TU_OK(rf_quantize_check_dtype(bm, RF_DT_INVALID, &err), &err);
        rf_model_free(bm);
    }
    fx_close(&f);
}

/* ------------------------------------------------------------------ CLI */

static void test_cli(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char planf[4096], proff[4096], other[4096], out[4096], args[16384];
    snprintf(planf, sizeof planf, "%s/p.json", f.tmp);
    snprintf(proff, sizeof proff, "%s/prof.json", f.tmp);
    snprintf(other, sizeof other, "%s/other.json", f.tmp);
    snprintf(out, sizeof out, "%s/out", f.tmp);
    rf_err err;
    TU_OK(rf_plan_save(f.plan, planf, &err), &err);
    TU_OK(rf_profile_save(f.prof, proff, &err), &err);
    const char *bd = tu_model_dir("babyllama-tok105");
    rf_profile *op = analyse(bd, 1);
    TU_OK(rf_profile_save(op, other, &err), &err);
    rf_profile_free(op);
    char *o = NULL;

    /* a plan checked against a profile of another model */
    snprintf(args, sizeof args, "quantize '%s' --plan '%s' --profile '%s' -o '%s' --quiet", f.model, planf, other, out);
    assert_int_equal(tu_run_cli(args, &o), 1);
    assert_non_null(strstr(o, "mismatch"));
    free(o);
    assert_int_equal(access(out, F_OK), -1);
    /* one-shot with a saved profile of another model */
    snprintf(args, sizeof args, "quantize '%s' --budget 200kB --profile '%s' -o '%s' --quiet", f.model, other, out);
    assert_int_equal(tu_run_cli(args, &o), 1);
    assert_non_null(strstr(o, "--profile"));
    free(o);
    assert_int_equal(access(out, F_OK), -1);
    /* usage errors */
    snprintf(args, sizeof args, "quantize '%s' -o '%s'", f.model, out);
    assert_int_equal(tu_run_cli(args, &o), 2);
    free(o);
    snprintf(args, sizeof args, "quantize '%s' --plan '%s' -o '%s' --dtype f8", f.model, planf, out);
    assert_int_equal(tu_run_cli(args, &o), 2);
    free(o);

    /* the plan file, then the one-shot path with the matching profile, then --force */
    snprintf(args, sizeof args, "quantize '%s' --plan '%s' --profile '%s' -o '%s' --quiet --threads 2", f.model, planf,
             proff, out);
    assert_int_equal(tu_run_cli(args, &o), 0);
    assert_non_null(strstr(o, "bits per weight"));
    free(o);
    tq_expect x = {f.model, out, f.plan, f.prof, RF_DT_INVALID, RF_DT_INVALID};
    check_output(&x);
    snprintf(args, sizeof args, "quantize '%s' --plan '%s' -o '%s' --quiet", f.model, planf, out);
    assert_int_equal(tu_run_cli(args, &o), 1);
    assert_non_null(strstr(o, "exists"));
    free(o);
    snprintf(args, sizeof args, "quantize '%s' --budget 400kB --mode mlx -o '%s' --force --quiet --json", f.model, out);
    assert_int_equal(tu_run_cli(args, &o), 0);
    assert_non_null(strstr(o, "\"tensor_bytes\""));
    free(o);
    rf_mlx_quant *q = NULL;
    TU_OK(rf_mlx_quant_read(out, &q, &err), &err);
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < rf_mlx_quant_count(q); i++) bytes += rf_mlx_quant_module(q, i)->bytes;
    assert_true(bytes > 0 && bytes <= 400000);
    rf_mlx_quant_free(q);
    /* inspect reads the MLX checkpoint back */
    snprintf(args, sizeof args, "inspect '%s'", out);
    assert_int_equal(tu_run_cli(args, &o), 0);
    assert_non_null(strstr(o, "MLX quantization"));
    free(o);
    /* ... and counts logical weights, not packed words: the original model's parameters */
    snprintf(args, sizeof args, "inspect '%s' --json", out);
    assert_int_equal(tu_run_cli(args, &o), 0);
    char want[64];
    snprintf(want, sizeof want, "\"parameters\": %llu,", (unsigned long long)rf_model_param_count(f.m));
    assert_non_null(strstr(o, want));
    free(o);
    fx_close(&f);
}

/* ------------------------------------------------------------------ hostile runs of the CLI (issue 13) */

/* Runs the CLI with ARGV (NULL-terminated, without the program); SIGTERM already pending when it
 * starts (blocked and raised before exec: the CLI unblocks it once its handler is installed), and as
 * user nobody when AS_NOBODY (the caller is root). Returns the exit status, or 128 + signal. */
static int run_cli_argv(const char *const *argv, int sigterm, int as_nobody, char **out)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        if (as_nobody && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)) _exit(99);
        if (sigterm) {
            sigset_t set;
            sigemptyset(&set);
            sigaddset(&set, SIGTERM);
            sigprocmask(SIG_BLOCK, &set, NULL);
            raise(SIGTERM);
        }
        const char *args[32] = {RF_CLI_PATH};
        for (int i = 0; argv[i] && i < 30; i++) args[i + 1] = argv[i];
        execv(RF_CLI_PATH, (char *const *)args);
        _exit(98);
    }
    close(fd[1]);
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    ssize_t r;
    while ((r = read(fd[0], b + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 >= cap) b = realloc(b, cap *= 2);
    }
    b[len] = '\0';
    close(fd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    *out = b;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void write_junk(const char *dir, const char *name, size_t n)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *b = calloc(1, n);
    assert_int_equal(tu_write_file(path, b, n), 0);
    free(b);
}

static void test_cli_hostile(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char planf[4096], out[4096], *o = NULL;
    snprintf(planf, sizeof planf, "%s/p.json", f.tmp);
    snprintf(out, sizeof out, "%s/out", f.tmp);
    rf_err err;
    TU_OK(rf_plan_save(f.plan, planf, &err), &err);

    /* only what a loader needs is copied (a 50 MB pytorch_model.bin once was), the rest named */
    char orig[4200];
    snprintf(orig, sizeof orig, "%s/original", f.model);
    assert_int_equal(mkdir(orig, 0755), 0);
    write_junk(orig, "consolidated.00.pth", 1000);
    write_junk(f.model, "pytorch_model.bin", 5000);
    write_junk(f.model, "model-q4.gguf", 3000);
    write_junk(f.model, "README.md", 10);
    write_junk(f.model, "chat_template.jinja", 10);
    write_junk(f.model, "tokenization_mine.py", 10);
    const char *a1[] = {"quantize", f.model, "--plan", planf, "-o", out, "--quiet", NULL};
    assert_int_equal(run_cli_argv(a1, 0, 0, &o), 0);
    assert_non_null(strstr(o, "left out"));
    assert_non_null(strstr(o, "pytorch_model.bin"));
    assert_non_null(strstr(o, "model-q4.gguf"));
    assert_non_null(strstr(o, "original/"));
    free(o);
    tq_expect x = {f.model, out, f.plan, f.prof, RF_DT_INVALID, RF_DT_INVALID};
    check_output(&x); /* jinja and .py copied, the rest not */
    tu_rmtree(out);

    /* SIGTERM is handled like Ctrl-C: a clear message, exit 1, nothing left (it once killed the
     * process and left OUT.tmp-XXXXXX with partial data) */
    char *before = listing(f.tmp);
    assert_int_equal(run_cli_argv(a1, 1, 0, &o), 1);
    assert_non_null(strstr(o, "interrupted"));
    free(o);
    char *after = listing(f.tmp);
    assert_string_equal(before, after);
    free(after);

    /* a file size limit (ulimit -f): EFBIG reported like a full disk, nothing left */
    char args[16384];
    snprintf(args, sizeof args, "quantize '%s' --plan '%s' -o '%s' --quiet", f.model, planf, out);
    char cmd[17000];
    snprintf(cmd, sizeof cmd, "sh -c \"ulimit -f 64; exec '%s' %s\" 2>&1", RF_CLI_PATH, args);
    FILE *pp = popen(cmd, "r");
    char line[4096] = "";
    size_t got = fread(line, 1, sizeof line - 1, pp);
    line[got] = '\0';
    int st = pclose(pp);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_non_null(strstr(line, "nospace"));
    after = listing(f.tmp);
    assert_string_equal(before, after);
    free(after);

    /* messages naming the real problem */
    const char *a2[] = {"quantize", f.model, "--plan", planf, "-o", out, "--max-shard-size", "1e21TB", NULL};
    assert_int_equal(run_cli_argv(a2, 0, 0, &o), 2);
    assert_non_null(strstr(o, "too large"));
    assert_null(strstr(o, "must be > 0"));
    free(o);
    const char *a3[] = {"quantize", f.model, "--budget", "10000000TB", "-o", out, NULL};
    assert_int_equal(run_cli_argv(a3, 0, 0, &o), 1);
    assert_non_null(strstr(o, "2^63"));
    assert_null(strstr(o, "out of memory"));
    free(o);
    /* a plan whose unit was renamed: edited, not "made for another model (stories260k)" */
    size_t n;
    char *text = tu_read_file(planf, &n), *at = strstr(text, "model.layers.2.self_attn.q_proj");
    assert_non_null(at);
    at[strlen("model.layers.2.self_attn.")] = 'Q';
    char edited[4200];
    snprintf(edited, sizeof edited, "%s/edited.json", f.tmp);
    assert_int_equal(tu_write_file(edited, text, n), 0);
    free(text);
    const char *a4[] = {"quantize", f.model, "--plan", edited, "-o", out, NULL};
    assert_int_equal(run_cli_argv(a4, 0, 0, &o), 1);
    assert_non_null(strstr(o, "edited or damaged"));
    assert_null(strstr(o, "another model"));
    free(o);
    /* a plan edited to "budget": 1000 under units of ~200 kB: refused, not quantized and recorded */
    text = tu_read_file(planf, &n);
    at = strstr(text, "\"budget\": ");
    assert_non_null(at);
    char *num = at + strlen("\"budget\": ");
    size_t digits = strspn(num, "0123456789");
    char *ed = malloc(n + 8);
    snprintf(ed, n + 8, "%.*s1000%s", (int)(num - text), text, num + digits);
    assert_int_equal(tu_write_file(edited, ed, strlen(ed)), 0);
    free(ed);
    free(text);
    assert_int_equal(run_cli_argv(a4, 0, 0, &o), 1);
    assert_non_null(strstr(o, "more than its budget"));
    free(o);
    assert_int_equal(access(out, F_OK), -1);
    free(before);
    before = listing(f.tmp);

    /* --force onto an earlier output it cannot fully delete: refused before writing (it once
     * returned 0 and left OUT.old-XXXXXX) */
    int root = geteuid() == 0;
    assert_int_equal(chmod(f.tmp, 0777), 0);
    assert_int_equal(chmod(planf, 0644), 0);
    char sub[4300], subf[4400], rj[4300];
    assert_int_equal(mkdir(out, 0777), 0);
    snprintf(rj, sizeof rj, "%s/ramfit.json", out);
    assert_int_equal(tu_write_file(rj, "{}", 2), 0);
    snprintf(sub, sizeof sub, "%s/sub", out);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(subf, sizeof subf, "%s/file", sub);
    assert_int_equal(tu_write_file(subf, "x", 1), 0);
    assert_int_equal(chmod(sub, 0555), 0);
    if (root) {
        assert_int_equal(chown(out, 65534, 65534), 0);
        assert_int_equal(chown(rj, 65534, 65534), 0);
        assert_int_equal(chown(sub, 65534, 65534), 0);
    }
    free(before);
    before = listing(f.tmp);
    const char *a5[] = {"quantize", f.model, "--plan", planf, "-o", out, "--force", "--quiet", NULL};
    assert_int_equal(run_cli_argv(a5, 0, root, &o), 1);
    if (!strstr(o, "cannot all be deleted")) fail_msg("unexpected: %s", o);
    free(o);
    after = listing(f.tmp);
    assert_string_equal(before, after);
    free(after);
    assert_int_equal(access(subf, F_OK), 0);
    assert_int_equal(chmod(sub, 0755), 0);
    free(before);
    fx_close(&f);
}

/* A run killed outright (SIGKILL) leaves OUT.tmp-XXXXXX; the next run removes it (its writer, by
 * the marker, no longer runs) but not one being written or one that is not ramfit's. */
static void test_stale_temps(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char out[4096], host[256];
    snprintf(out, sizeof out, "%s/out", f.tmp);
    assert_int_equal(gethostname(host, sizeof host), 0);
    host[sizeof host - 1] = 0;
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    struct { const char *suffix; long pid; int gone; } t[] = {
        {".tmp-AAAAAA", (long)dead, 1}, {".tmp-BBBBBB", (long)getpid(), 0}, {".tmp-CCCCCC", 0, 0}};
    char dirs[3][4200];
    for (int i = 0; i < 3; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s%s", out, t[i].suffix);
        assert_int_equal(mkdir(dirs[i], 0755), 0);
        write_junk(dirs[i], "model.safetensors", 100);
        if (t[i].pid) {
            char mk[16384], text[400];
            snprintf(mk, sizeof mk, "%s/.ramfit-writer", dirs[i]);
            int len = snprintf(text, sizeof text, "ramfit %ld %s\n", t[i].pid, host);
            assert_int_equal(tu_write_file(mk, text, (size_t)len), 0);
        }
    }
    rf_err err;
    TU_OK(try_write(&f, out, 0, &err), &err);
    for (int i = 0; i < 3; i++) assert_int_equal(access(dirs[i], F_OK) == 0, !t[i].gone);
    /* the finished output carries no marker */
    char mk[4300];
    snprintf(mk, sizeof mk, "%s/.ramfit-writer", out);
    assert_int_equal(access(mk, F_OK), -1);
    fx_close(&f);
}

/* A config.json with numbers jansson alone cannot hold (a published Llama config may carry one)
 * quantizes, and the output's config.json has them as written, not rounded to a double. */
static void test_config_big_numbers(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char path[4200], out[4096];
    snprintf(path, sizeof path, "%s/config.json", f.model);
    size_t n;
    char *text = tu_read_file(path, &n), *brace = strrchr(text, '}');
    assert_non_null(brace);
    *brace = '\0';
    char *edited = malloc(n + 200);
    snprintf(edited, n + 200, "%s, \"model_max_length\": 1000000000000000019884624838656, \"tiny\": -1e-400, "
             "\"huge\": [18446744073709551617, 2e400]}", text);
    assert_int_equal(tu_write_file(path, edited, strlen(edited)), 0);
    free(text);
    free(edited);
    rf_err err;
    rf_model_free(f.m);
    TU_OK(rf_model_open(f.model, &f.m, &err), &err);
    snprintf(out, sizeof out, "%s/out", f.tmp);
    TU_OK(try_write(&f, out, 0, &err), &err);
    snprintf(path, sizeof path, "%s/config.json", out);
    text = tu_read_file(path, &n);
    assert_non_null(strstr(text, "\"model_max_length\": 1000000000000000019884624838656"));
    assert_non_null(strstr(text, "18446744073709551617"));
    assert_non_null(strstr(text, "2e400"));
    assert_non_null(strstr(text, "\"quantization\""));
    free(text);
    fx_close(&f);
}

static void cancel_on_first(void *user, uint64_t done, uint64_t total, const char *what)
{
    (void)done, (void)total, (void)what;
    *(volatile int *)user = 1;
}

/* Ctrl-C (the cancel flag) stops the write and removes the temporary output. */
static void test_cancel(void **state)
{
    (void)state;
    const char *d = tu_model_dir("qwen3-moe-mini");
    if (!d) skip();
    char *dir = strdup(d);
    rf_profile *p = analyse(dir, 1);
    rf_plan *plan = plan_at(p, NULL, RF_QMODE_MLX, 0.3);
    rf_err err;
    rf_model *m = NULL;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    char *tmp = tu_mkdtemp(), out[4096];
    snprintf(out, sizeof out, "%s/out", tmp);
    volatile int cancel = 0;
    rf_progress pr = {cancel_on_first, (void *)&cancel, &cancel};
    rf_quantize_opts o;
    rf_quantize_opts_default(&o);
    o.threads = 2;
    assert_int_equal(rf_quantize_write(m, plan, &o, out, &pr, NULL, &err), RF_ERR_INTERRUPTED);
    char *after = listing(tmp);
    assert_string_equal(after, ".\n..\n");
    free(after);
    tu_rmtree(tmp);
    free(tmp);
    rf_model_free(m);
    rf_plan_free(plan);
    rf_profile_free(p);
    free(dir);
}

/* rf_mlx_quant_read resolves what was written, module by module. */
static void test_read_back(void **state)
{
    (void)state;
    fx f;
    fx_open(&f);
    char out[4096];
    snprintf(out, sizeof out, "%s/out", f.tmp);
    rf_err err;
    TU_OK(try_write(&f, out, 0, &err), &err);
    rf_mlx_quant *q = NULL;
    TU_OK(rf_mlx_quant_read(out, &q, &err), &err);
    int seen = 0;
    for (uint64_t i = 0; i < rf_mlx_quant_count(q); i++) {
        const rf_mlx_module *mm = rf_mlx_quant_module(q, i);
        int64_t pi = rf_plan_find_unit(f.plan, mm->name);
        if (pi < 0) continue;
        const rf_plan_unit *pu = rf_plan_get_unit(f.plan, (uint64_t)pi);
        assert_int_equal(mm->bits, pu->bits);
        assert_int_equal(mm->gs, pu->gs);
        assert_int_equal(mm->bytes, pu->bytes);
        assert_int_equal(mm->params, pu->nparams);
        seen++;
    }
    assert_int_equal(seen, (int)rf_plan_unit_count(f.plan));
    rf_mlx_quant_free(q);
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_babyllama),
        cmocka_unit_test(test_qwen3_dense_mini),
        cmocka_unit_test(test_qwen3_moe_mini),
        cmocka_unit_test(test_synth_moe),
        cmocka_unit_test(test_synth_mixtral),
        cmocka_unit_test(test_thread_count_invariant),
        cmocka_unit_test(test_refuses_model_dir),
        cmocka_unit_test(test_existing_output),
        cmocka_unit_test(test_output_permissions),
        cmocka_unit_test(test_unwritable_output),
        cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_nonfinite_kept),
        cmocka_unit_test(test_plan_for_other_model),
        cmocka_unit_test(test_dtype_end_to_end),
        cmocka_unit_test(test_cli_hostile),
        cmocka_unit_test(test_stale_temps),
        cmocka_unit_test(test_config_big_numbers),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_read_back),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
