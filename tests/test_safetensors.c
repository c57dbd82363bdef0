/* safetensors reader and streaming writer: the real test models, writer -> reader round trips of
 * every dtype (sharded and not), determinism, malformed files with their exact error codes, and
 * writer failures (size mismatches, abandoned writes, a file size limit). */
#include "testutil.h"

#include "io/safetensors_internal.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static void expect_err(rf_status got, const rf_err *e, rf_status want, const char *s1, const char *s2,
                       const char *what)
{
    if (got != want)
        fail_msg("%s: expected %s, got %s: %s", what, rf_status_name(want), rf_status_name(got), e->msg);
    if (s1 && !strstr(e->msg, s1)) fail_msg("%s: message '%s' lacks '%s'", what, e->msg, s1);
    if (s2 && !strstr(e->msg, s2)) fail_msg("%s: message '%s' lacks '%s'", what, e->msg, s2);
}

/* safetensors image: LEN (little-endian) + HEADER + NDATA pattern bytes. */
static uint8_t *mk_image_len(uint64_t len, const char *header, uint64_t ndata, size_t *n)
{
    size_t hl = strlen(header);
    *n = 8 + hl + (size_t)ndata;
    uint8_t *b = malloc(*n ? *n : 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(len >> (8 * i));
    memcpy(b + 8, header, hl);
    for (uint64_t i = 0; i < ndata; i++) b[8 + hl + i] = (uint8_t)(i * 7 + 1);
    return b;
}

static uint8_t *mk_image(const char *header, uint64_t ndata, size_t *n)
{
    return mk_image_len(strlen(header), header, ndata, n);
}

static void write_image(const char *path, const char *header, uint64_t ndata)
{
    size_t n;
    uint8_t *b = mk_image(header, ndata, &n);
    assert_int_equal(tu_write_file(path, b, n), 0);
    free(b);
}

static char *pjoin(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void fill(uint8_t *p, uint64_t n, uint64_t seed)
{
    tu_rng r = {seed * 0x9e3779b97f4a7c15ull + 17};
    for (uint64_t i = 0; i < n; i++) p[i] = (uint8_t)tu_rng_u64(&r);
}

/* ------------------------------------------------------------------ real models */

static double sum_f32(const void *p, uint64_t n)
{
    double s = 0;
    for (uint64_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, (const uint8_t *)p + 4 * i, 4);
        s += f;
    }
    return s;
}

static void test_real_model(void **state)
{
    (void)state;
    const char *dir = tu_model_dir("stories260k");
    if (!dir) skip();
    char *dpath = strdup(dir);
    char *fpath = pjoin(dpath, "model.safetensors");
    rf_err err;
    rf_st *a, *b;
    TU_OK(rf_st_open(dpath, &a, &err), &err);
    TU_OK(rf_st_open(fpath, &b, &err), &err);
    assert_int_equal(rf_st_count(a), 47);
    assert_int_equal(rf_st_count(b), 47);
    assert_int_equal(rf_st_file_count(a), 1);
    assert_string_equal(rf_st_file_path(a, 0), fpath);
    assert_string_equal(rf_st_metadata(a, "format"), "pt");
    assert_null(rf_st_metadata(a, "nope"));

    size_t fsize;
    char *raw = tu_read_file(fpath, &fsize);
    assert_non_null(raw);
    assert_int_equal(rf_st_file_size(a, 0), fsize);

    const rf_tensor *e = rf_st_find(a, "model.embed_tokens.weight");
    assert_non_null(e);
    assert_int_equal(e->dtype, RF_DT_F32);
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[0], 512);
    assert_int_equal(e->shape[1], 64);
    assert_int_equal(e->nbytes, 512 * 64 * 4);
    const rf_tensor *d = rf_st_find(a, "model.layers.0.mlp.down_proj.weight");
    assert_non_null(d);
    assert_int_equal(d->shape[0], 64);
    assert_int_equal(d->shape[1], 172);
    const rf_tensor *nrm = rf_st_find(a, "model.norm.weight");
    assert_non_null(nrm);
    assert_int_equal(nrm->ndim, 1);
    assert_int_equal(nrm->shape[0], 64);
    assert_null(rf_st_find(a, "model.embed_tokens"));

    /* stable order: increasing offsets; find() agrees with get(); the mmapped bytes are the file's */
    for (uint64_t i = 0; i < rf_st_count(a); i++) {
        const rf_tensor *t = rf_st_get(a, i), *u = rf_st_get(b, i);
        assert_ptr_equal(rf_st_find(a, t->name), t);
        assert_string_equal(t->name, u->name);
        assert_int_equal(t->offset, u->offset);
        if (i) assert_true(t->offset >= rf_st_get(a, i - 1)->offset + rf_st_get(a, i - 1)->nbytes);
        assert_true(t->offset + t->nbytes <= fsize);
        assert_memory_equal(t->data, raw + t->offset, t->nbytes);
    }
    assert_null(rf_st_get(a, 47));
    const rf_tensor *first = rf_st_get(a, 0);
    double s1 = sum_f32(first->data, first->nelem), s2 = sum_f32(raw + first->offset, first->nelem);
    assert_true(s1 == s2);
    assert_true(s1 != 0.0);
    rf_st_advise_willneed(a, first);
    rf_st_advise_dontneed(a, first);
    rf_st_advise_dontneed(a, rf_st_get(b, 0)); /* not a's tensor: ignored */
    rf_st_advise_willneed(a, NULL);
    assert_true(sum_f32(first->data, first->nelem) == s1);

    assert_int_equal(rf_st_fingerprint(a), rf_st_fingerprint(b));
    /* the in-memory path sees the same checkpoint */
    rf_st *m;
    TU_OK(rf_st_open_memory(raw, fsize, "model.safetensors", &m, &err), &err);
    assert_int_equal(rf_st_count(m), 47);
    assert_int_equal(rf_st_fingerprint(m), rf_st_fingerprint(a));
    assert_true(sum_f32(rf_st_get(m, 0)->data, first->nelem) == s1);
    rf_st_close(m);

    const char *bdir = tu_model_dir("babyllama-tok105");
    if (bdir) {
        rf_st *c;
        TU_OK(rf_st_open(bdir, &c, &err), &err);
        assert_int_not_equal(rf_st_fingerprint(c), rf_st_fingerprint(a));
        rf_st_close(c);
    }
    free(raw);
    rf_st_close(a);
    rf_st_close(b);
    rf_st_close(NULL);
    free(fpath);
    free(dpath);
}

/* The BF16 qwen3 models from ../shared, when present. */
static void test_shared_bf16_model(void **state)
{
    (void)state;
    const char *dir = tu_model_dir("qwen3-moe-mini");
    if (!dir) skip();
    rf_err err;
    rf_st *st;
    TU_OK(rf_st_open(dir, &st, &err), &err);
    assert_true(rf_st_count(st) > 100);
    const rf_tensor *t = rf_st_find(st, "model.layers.0.mlp.experts.7.down_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, RF_DT_BF16);
    assert_int_equal(t->shape[0], 256);
    for (uint64_t i = 0; i < rf_st_count(st); i++)
        assert_true(rf_st_get(st, i)->offset + rf_st_get(st, i)->nbytes <= rf_st_file_size(st, 0));
    rf_st_close(st);
}

/* ------------------------------------------------------------------ writer -> reader */

typedef struct spec { const char *name; rf_dtype dt; int ndim; uint64_t shape[4]; } spec;

static const spec specs[] = {
    {"embed.weight", RF_DT_BF16, 2, {33, 17}},   {"scalar.f64", RF_DT_F64, 0, {0}},
    {"layer.0.w", RF_DT_F32, 2, {19, 23}},        {"layer.0.h", RF_DT_F16, 3, {3, 5, 7}},
    {"empty.rows", RF_DT_F32, 2, {0, 5}},         {"f8a", RF_DT_F8_E4M3, 1, {101}},
    {"f8b", RF_DT_F8_E5M2, 1, {3}},               {"i64", RF_DT_I64, 1, {9}},
    {"i32", RF_DT_I32, 2, {4, 4}},                {"i16", RF_DT_I16, 1, {13}},
    {"i8", RF_DT_I8, 1, {250}},                   {"u64", RF_DT_U64, 1, {2}},
    {"u32.packed", RF_DT_U32, 2, {8, 12}},        {"u16", RF_DT_U16, 4, {2, 3, 2, 3}},
    {"u8", RF_DT_U8, 1, {1}},                     {"mask", RF_DT_BOOL, 1, {77}},
    {"zero.len", RF_DT_BF16, 1, {0}},             {"A.upper", RF_DT_F32, 1, {64}},
};
#define NSPECS (sizeof specs / sizeof specs[0])

static uint64_t spec_bytes(const spec *s)
{
    uint64_t n = rf_dtype_size(s->dt);
    for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
    return n;
}

/* Write every spec to DIR with pieces of random size. */
static void write_specs(const char *dir, uint64_t max_shard, uint64_t piece_seed)
{
    rf_err err;
    rf_stw *w;
    rf_stw_opts o = {.max_shard_bytes = max_shard, .basename = NULL};
    TU_OK(rf_stw_create(dir, &o, &w, &err), &err);
    TU_OK(rf_stw_set_metadata(w, "format", "mlx", &err), &err);
    TU_OK(rf_stw_set_metadata(w, "note", "first", &err), &err);
    TU_OK(rf_stw_set_metadata(w, "note", "\"quoted\" \xc3\xa9", &err), &err);
    uint64_t total = 0;
    for (size_t i = 0; i < NSPECS; i++) {
        TU_OK(rf_stw_declare(w, specs[i].name, specs[i].dt, specs[i].ndim, specs[i].shape, &err), &err);
        total += spec_bytes(&specs[i]);
    }
    assert_int_equal(rf_stw_total_bytes(w), total);
    tu_rng r = {piece_seed};
    for (size_t i = 0; i < NSPECS; i++) {
        uint64_t n = spec_bytes(&specs[i]);
        uint8_t *buf = malloc(n + 1);
        fill(buf, n, i);
        for (uint64_t off = 0; off < n;) {
            uint64_t k = 1 + tu_rng_u64(&r) % (n - off);
            if (tu_rng_u64(&r) % 4 == 0) TU_OK(rf_stw_write(w, buf, 0, &err), &err);
            TU_OK(rf_stw_write(w, buf + off, k, &err), &err);
            off += k;
        }
        free(buf);
    }
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
}

/* Expected shard of each spec under the greedy rule. */
static uint64_t expected_shards(uint64_t max_shard, uint64_t *shard_of)
{
    uint64_t ns = 0, cur = 0;
    for (size_t i = 0; i < NSPECS; i++) {
        uint64_t b = spec_bytes(&specs[i]);
        if (i == 0 || (max_shard && cur > 0 && b > 0 && cur + b > max_shard)) {
            ns++;
            cur = 0;
        }
        shard_of[i] = ns - 1;
        cur += b;
    }
    return ns;
}

static void check_specs(const char *dir, uint64_t max_shard)
{
    rf_err err;
    rf_st *st;
    TU_OK(rf_st_open(dir, &st, &err), &err);
    uint64_t shard_of[NSPECS];
    uint64_t ns = expected_shards(max_shard, shard_of);
    assert_int_equal(rf_st_file_count(st), ns);
    assert_int_equal(rf_st_count(st), NSPECS);
    assert_string_equal(rf_st_metadata(st, "format"), "mlx");
    assert_string_equal(rf_st_metadata(st, "note"), "\"quoted\" \xc3\xa9");
    uint64_t total = 0;
    for (size_t i = 0; i < NSPECS; i++) {
        /* shards are in name order and declaration order is data order: get(i) is spec i */
        const rf_tensor *t = rf_st_get(st, i);
        assert_string_equal(t->name, specs[i].name);
        assert_ptr_equal(rf_st_find(st, specs[i].name), t);
        assert_int_equal(t->dtype, specs[i].dt);
        assert_int_equal(t->ndim, specs[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], specs[i].shape[d]);
        uint64_t n = spec_bytes(&specs[i]);
        assert_int_equal(t->nbytes, n);
        assert_string_equal(t->file, rf_st_file_path(st, shard_of[i]));
        char want[128];
        if (ns == 1) snprintf(want, sizeof want, "/model.safetensors");
        else snprintf(want, sizeof want, "/model-%05d-of-%05d.safetensors", (int)shard_of[i] + 1, (int)ns);
        assert_non_null(strstr(t->file, want));
        uint8_t *buf = malloc(n + 1);
        fill(buf, n, i);
        assert_memory_equal(t->data, buf, n);
        free(buf);
        total += n;
    }
    /* data sections start 8-byte aligned (header padded with spaces) */
    for (uint64_t s = 0; s < ns; s++) {
        size_t len;
        char *raw = tu_read_file(rf_st_file_path(st, s), &len);
        uint64_t hl = 0;
        for (int b = 7; b >= 0; b--) hl = (hl << 8) | (uint8_t)raw[b];
        assert_int_equal(hl % 8, 0);
        assert_true(raw[8] == '{');
        /* compact, keys sorted bytewise ("A" < "__metadata__" < "e"), metadata in every shard */
        raw[8 + hl - 1] = '\0';
        assert_non_null(strstr(raw + 8, "\"__metadata__\":{\"format\":\"mlx\",\"note\":\"\\\"quoted\\\" \xc3\xa9\"}"));
        if (ns == 1) {
            char *pa = strstr(raw + 8, "\"A.upper\":{\"data_offsets\":["), *pm = strstr(raw + 8, "\"__metadata__\""),
                 *pe = strstr(raw + 8, "\"embed.weight\":{\"data_offsets\":[0,1122],\"dtype\":\"BF16\",\"shape\":[33,17]}");
            assert_true(pa && pm && pe && pa < pm && pm < pe);
        }
        free(raw);
    }
    char *index = pjoin(dir, "model.safetensors.index.json");
    if (ns > 1) {
        size_t len;
        char *text = tu_read_file(index, &len);
        assert_non_null(text);
        char want[64];
        snprintf(want, sizeof want, "\"total_size\": %llu", (unsigned long long)total);
        assert_non_null(strstr(text, want));
        free(text);
    } else {
        assert_int_not_equal(access(index, F_OK), 0);
    }
    assert_int_equal(count_entries(dir), (int)(ns > 1 ? ns + 1 : 1));
    free(index);
    rf_st_close(st);
}

static void test_roundtrip(void **state)
{
    (void)state;
    uint64_t maxes[] = {0, 1, 100, 700, 2000, 1u << 30};
    for (size_t k = 0; k < sizeof maxes / sizeof maxes[0]; k++) {
        char *dir = tu_mkdtemp();
        write_specs(dir, maxes[k], 1000 + k);
        check_specs(dir, maxes[k]);
        tu_rmtree(dir);
        free(dir);
    }
}

static int files_equal(const char *a, const char *b)
{
    size_t na, nb;
    char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    int eq = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return eq;
}

static void test_determinism(void **state)
{
    (void)state;
    char *d1 = tu_mkdtemp(), *d2 = tu_mkdtemp();
    write_specs(d1, 700, 1); /* different piece sizes: output must not depend on them */
    write_specs(d2, 700, 2);
    DIR *d = opendir(d1);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *a = pjoin(d1, e->d_name), *b = pjoin(d2, e->d_name);
        assert_true(files_equal(a, b));
        free(a);
        free(b);
        n++;
    }
    closedir(d);
    assert_true(n > 2);
    rf_err err;
    rf_st *s1, *s2;
    TU_OK(rf_st_open(d1, &s1, &err), &err);
    TU_OK(rf_st_open(d2, &s2, &err), &err);
    assert_int_equal(rf_st_fingerprint(s1), rf_st_fingerprint(s2));
    rf_st_close(s1);
    rf_st_close(s2);
    tu_rmtree(d1);
    tu_rmtree(d2);
    free(d1);
    free(d2);
}

/* Copy a real checkpoint through the writer; every tensor must come back identical. */
static void test_rewrite_real_model(void **state)
{
    (void)state;
    const char *src = tu_model_dir("stories260k");
    if (!src) skip();
    rf_err err;
    rf_st *in;
    TU_OK(rf_st_open(src, &in, &err), &err);
    char *dir = tu_mkdtemp();
    rf_stw_opts o = {.max_shard_bytes = 300000, .basename = "model"};
    rf_stw *w;
    TU_OK(rf_stw_create(dir, &o, &w, &err), &err);
    for (uint64_t i = 0; i < rf_st_count(in); i++) {
        const rf_tensor *t = rf_st_get(in, i);
        TU_OK(rf_stw_declare(w, t->name, t->dtype, t->ndim, t->shape, &err), &err);
    }
    for (uint64_t i = 0; i < rf_st_count(in); i++) {
        const rf_tensor *t = rf_st_get(in, i);
        TU_OK(rf_stw_write(w, t->data, t->nbytes, &err), &err);
    }
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    rf_st *out;
    TU_OK(rf_st_open(dir, &out, &err), &err);
    assert_true(rf_st_file_count(out) > 1);
    assert_int_equal(rf_st_count(out), rf_st_count(in));
    for (uint64_t i = 0; i < rf_st_count(in); i++) {
        const rf_tensor *t = rf_st_get(in, i), *u = rf_st_find(out, t->name);
        assert_non_null(u);
        assert_int_equal(u->nbytes, t->nbytes);
        assert_memory_equal(u->data, t->data, t->nbytes);
    }
    /* opening the index file directly and via the in-memory index parser gives the same */
    char *ipath = pjoin(dir, "model.safetensors.index.json");
    rf_st *viaidx;
    TU_OK(rf_st_open(ipath, &viaidx, &err), &err);
    assert_int_equal(rf_st_fingerprint(viaidx), rf_st_fingerprint(out));
    size_t ilen;
    char *itext = tu_read_file(ipath, &ilen);
    uint64_t ns = rf_st_file_count(out);
    rf_st_mem_shard *ms = calloc(ns, sizeof *ms);
    char **bufs = calloc(ns, sizeof *bufs);
    for (uint64_t s = 0; s < ns; s++) {
        size_t n;
        bufs[s] = tu_read_file(rf_st_file_path(out, s), &n);
        ms[s] = (rf_st_mem_shard){strrchr(rf_st_file_path(out, s), '/') + 1, bufs[s], n};
    }
    rf_st *mem;
    TU_OK(rf_st_open_index_memory(itext, ilen, "idx", ms, ns, &mem, &err), &err);
    assert_int_equal(rf_st_count(mem), rf_st_count(out));
    assert_int_equal(rf_st_fingerprint(mem), rf_st_fingerprint(out));
    for (uint64_t i = 0; i < rf_st_count(out); i++) {
        assert_string_equal(rf_st_get(mem, i)->name, rf_st_get(out, i)->name);
        assert_memory_equal(rf_st_get(mem, i)->data, rf_st_get(out, i)->data, rf_st_get(out, i)->nbytes);
    }
    rf_st_close(mem);
    for (uint64_t s = 0; s < ns; s++) free(bufs[s]);
    free(bufs);
    free(ms);
    free(itext);
    free(ipath);
    rf_st_close(viaidx);
    rf_st_close(out);
    rf_st_close(in);
    tu_rmtree(dir);
    free(dir);
}

/* Empty checkpoint, 0-element tensors at the very end of the data, empty header. */
static void test_edge_valid(void **state)
{
    (void)state;
    rf_err err;
    rf_st *st;
    size_t n;
    uint8_t *img = mk_image("{}", 0, &n);
    TU_OK(rf_st_open_memory(img, n, "empty", &st, &err), &err);
    assert_int_equal(rf_st_count(st), 0);
    assert_null(rf_st_find(st, "x"));
    rf_st_close(st);
    free(img);

    img = mk_image("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"z\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[8,8]},"
                   "\"__metadata__\":{}}  ",
                   8, &n);
    TU_OK(rf_st_open_memory(img, n, "edge", &st, &err), &err);
    assert_int_equal(rf_st_count(st), 2);
    const rf_tensor *z = rf_st_find(st, "z");
    assert_int_equal(z->nelem, 0);
    assert_int_equal(z->nbytes, 0);
    assert_ptr_equal(z->data, img + n); /* one past the end of the image, never read */
    rf_st_close(st);
    free(img);

    /* writer: no tensors at all gives a valid empty file; 0-element tensors need no write */
    char *dir = tu_mkdtemp();
    rf_stw *w;
    TU_OK(rf_stw_create(dir, NULL, &w, &err), &err);
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    TU_OK(rf_st_open(dir, &st, &err), &err);
    assert_int_equal(rf_st_count(st), 0);
    rf_st_close(st);
    uint64_t shp[2] = {0, 4};
    rf_stw_opts o = {.max_shard_bytes = 1};
    TU_OK(rf_stw_create(dir, &o, &w, &err), &err);
    TU_OK(rf_stw_declare(w, "e1", RF_DT_F32, 2, shp, &err), &err);
    TU_OK(rf_stw_declare(w, "e2", RF_DT_U8, 1, shp, &err), &err);
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    TU_OK(rf_st_open(dir, &st, &err), &err);
    assert_int_equal(rf_st_count(st), 2);
    assert_int_equal(rf_st_file_count(st), 1);
    rf_st_close(st);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ malformed single files */

typedef struct bad_case {
    const char *what;
    const char *header;
    uint64_t ndata;
    rf_status code;
    const char *s1, *s2; /* message substrings besides the file name */
} bad_case;

#define T1 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}"
static const bad_case bad_cases[] = {
    {"not json", "{\"w\":", 0, RF_ERR_FORMAT, "invalid JSON", NULL},
    {"trailing garbage", "{} x", 0, RF_ERR_FORMAT, "invalid JSON", NULL},
    {"not object", "[1,2]", 0, RF_ERR_FORMAT, "not a JSON object", NULL},
    {"entry not object", "{\"w\":[1]}", 0, RF_ERR_FORMAT, "'w'", "not an object"},
    {"missing dtype", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'", "missing dtype"},
    {"dtype not string", "{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'",
     "dtype"},
    {"unknown dtype", "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, RF_ERR_UNSUPPORTED, "'w'",
     "Q4_K"},
    {"missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'", "missing shape"},
    {"shape not array", "{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'",
     "shape is not an array"},
    {"negative dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'",
     "shape[1]"},
    {"fractional dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'",
     "shape[0]"},
    {"string dim", "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'",
     "shape[0]"},
    {"too many dims", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     RF_ERR_UNSUPPORTED, "'w'", "dimensions"},
    {"shape overflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],\"data_offsets\":[0,8]}}", 8,
     RF_ERR_FORMAT, "'w'", "overflow"},
    {"bytes overflow", "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8,
     RF_ERR_FORMAT, "'w'", "overflow"},
    {"missing offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, RF_ERR_FORMAT, "'w'", "missing data_offsets"},
    {"offsets wrong arity", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, RF_ERR_FORMAT,
     "'w'", "data_offsets"},
    {"negative offset", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, RF_ERR_FORMAT, "'w'",
     "data_offsets"},
    {"offsets out of file", T1 "}", 12, RF_ERR_FORMAT, "'w'", "outside the data section"},
    {"end before begin", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, RF_ERR_FORMAT, "'w'",
     "end before begin"},
    {"size mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, RF_ERR_FORMAT, "'w'",
     "shape x dtype"},
    {"overlap", T1 ",\"v\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]}}", 20, RF_ERR_FORMAT, "'w'",
     "'v'"},
    {"zero-length inside another", T1 ",\"v\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[4,4]}}", 16,
     RF_ERR_FORMAT, "overlap", NULL},
    {"duplicate name", T1 ",\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, RF_ERR_FORMAT,
     "duplicate", "w"},
    {"metadata not object", "{\"__metadata__\":[\"a\"]}", 0, RF_ERR_FORMAT, "__metadata__", NULL},
    {"metadata value not string", "{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0, RF_ERR_FORMAT,
     "__metadata__", "'n'"},
    {"nul in name", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, RF_ERR_FORMAT,
     "invalid JSON", NULL},
};

static void test_malformed_headers(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    char *path = pjoin(dir, "bad.safetensors");
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        size_t n;
        uint8_t *img = mk_image(c->header, c->ndata, &n);
        rf_err err;
        rf_st *st = (rf_st *)1;
        rf_status rc = rf_st_open_memory(img, n, "mem.safetensors", &st, &err);
        expect_err(rc, &err, c->code, c->s1, c->s2, c->what);
        assert_non_null(strstr(err.msg, "mem.safetensors"));
        assert_null(st);
        assert_int_equal(tu_write_file(path, img, n), 0);
        rc = rf_st_open(path, &st, &err);
        expect_err(rc, &err, c->code, c->s1, c->s2, c->what);
        assert_non_null(strstr(err.msg, path));
        free(img);
    }
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* Damage to the 8-byte length prefix, every prefix of a valid file, and a non-file path. */
static void test_malformed_length(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    char *path = pjoin(dir, "t.safetensors");
    rf_err err;
    rf_st *st;
    size_t n;
    uint8_t *img = mk_image(T1 "}", 16, &n);

    assert_int_equal(tu_write_file(path, img, 5), 0);
    expect_err(rf_st_open(path, &st, &err), &err, RF_ERR_FORMAT, path, "too small", "truncated length");
    assert_int_equal(tu_write_file(path, img, 0), 0);
    expect_err(rf_st_open(path, &st, &err), &err, RF_ERR_FORMAT, path, "too small", "empty file");

    uint8_t *long_len = mk_image_len(1000, T1 "}", 16, &n);
    assert_int_equal(tu_write_file(path, long_len, n), 0);
    expect_err(rf_st_open(path, &st, &err), &err, RF_ERR_FORMAT, path, "past the end", "length past EOF");
    free(long_len);
    uint8_t *absurd = mk_image_len(1ull << 60, "{}", 0, &n);
    expect_err(rf_st_open_memory(absurd, n, "abs", &st, &err), &err, RF_ERR_FORMAT, "abs", "absurd", "absurd length");
    free(absurd);

    /* every truncation of a valid image fails cleanly (and never reads past the end) */
    for (size_t k = 0; k < n; k++) {
        uint8_t *cut = malloc(k ? k : 1);
        memcpy(cut, img, k);
        rf_status rc = rf_st_open_memory(cut, k, "cut", &st, &err);
        assert_int_equal(rc, RF_ERR_FORMAT);
        free(cut);
    }
    TU_OK(rf_st_open_memory(img, 8 + strlen(T1 "}") + 16, "whole", &st, &err), &err);
    rf_st_close(st);

    char *missing = pjoin(dir, "nope.safetensors");
    expect_err(rf_st_open(missing, &st, &err), &err, RF_ERR_NOT_FOUND, missing, NULL, "missing path");
    free(missing);
    expect_err(rf_st_open(dir, &st, &err), &err, RF_ERR_FORMAT, NULL, NULL, "dir with one bad file");
    unlink(path);
    expect_err(rf_st_open(dir, &st, &err), &err, RF_ERR_NOT_FOUND, dir, "no .safetensors", "empty dir");
    /* two files and no index: ambiguous */
    char *p1 = pjoin(dir, "a.safetensors"), *p2 = pjoin(dir, "b.safetensors");
    write_image(p1, "{}", 0);
    write_image(p2, "{}", 0);
    expect_err(rf_st_open(dir, &st, &err), &err, RF_ERR_FORMAT, dir, "several", "ambiguous dir");
    unlink(p2);
    TU_OK(rf_st_open(dir, &st, &err), &err); /* the single *.safetensors */
    assert_string_equal(rf_st_file_path(st, 0), p1);
    rf_st_close(st);
    free(p1);
    free(p2);
    free(img);
    free(path);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ malformed sharded checkpoints */

#define SH_A "{\"a.w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a.b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]}}"
#define SH_B "{\"b.w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}"
#define IDX_OK "{\"metadata\":{\"total_size\":19},\"weight_map\":{\"a.w\":\"s1.safetensors\",\"a.b\":\"s1.safetensors\",\"b.w\":\"s2.safetensors\"}}"

typedef struct idx_case {
    const char *what, *index, *s1, *s2; /* index text, shard headers */
    rf_status code;
    const char *m1, *m2;
} idx_case;

static const idx_case idx_cases[] = {
    {"missing shard", "{\"weight_map\":{\"a.w\":\"s1.safetensors\",\"a.b\":\"s1.safetensors\",\"b.w\":\"s3.safetensors\"}}",
     SH_A, SH_B, RF_ERR_NOT_FOUND, "s3.safetensors", "'b.w'"},
    {"tensor not in its shard", "{\"weight_map\":{\"a.w\":\"s1.safetensors\",\"a.b\":\"s1.safetensors\",\"b.w\":\"s2.safetensors\",\"c\":\"s2.safetensors\"}}",
     SH_A, SH_B, RF_ERR_FORMAT, "'c'", "not in its shard"},
    {"shard tensor not in index", "{\"weight_map\":{\"a.w\":\"s1.safetensors\",\"b.w\":\"s2.safetensors\"}}", SH_A,
     SH_B, RF_ERR_FORMAT, "'a.b'", "not in the index"},
    {"index names the wrong shard", "{\"weight_map\":{\"a.w\":\"s2.safetensors\",\"a.b\":\"s1.safetensors\",\"b.w\":\"s2.safetensors\"}}",
     SH_A, SH_B, RF_ERR_FORMAT, "'a.w'", "s1.safetensors"},
    {"tensor in two shards", IDX_OK, SH_A,
     "{\"b.w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},\"a.w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
     RF_ERR_FORMAT, "'a.w'", "in both"},
    {"bad shard header", IDX_OK, SH_A, "{\"b.w\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,8]}}",
     RF_ERR_FORMAT, "s2.safetensors", "'b.w'"},
    {"index invalid JSON", "{\"weight_map\":", SH_A, SH_B, RF_ERR_FORMAT, "invalid JSON", NULL},
    {"index not object", "[]", SH_A, SH_B, RF_ERR_FORMAT, "not a JSON object", NULL},
    {"no weight_map", "{\"metadata\":{}}", SH_A, SH_B, RF_ERR_FORMAT, "weight_map", NULL},
    {"empty weight_map", "{\"weight_map\":{}}", SH_A, SH_B, RF_ERR_FORMAT, "empty", NULL},
    {"file not string", "{\"weight_map\":{\"a.w\":1}}", SH_A, SH_B, RF_ERR_FORMAT, "'a.w'", "not a string"},
    {"path escape", "{\"weight_map\":{\"a.w\":\"../s1.safetensors\"}}", SH_A, SH_B, RF_ERR_FORMAT, "'a.w'",
     "plain file name"},
    {"duplicate index key", "{\"weight_map\":{\"a.w\":\"s1.safetensors\",\"a.w\":\"s1.safetensors\"}}", SH_A, SH_B,
     RF_ERR_FORMAT, "duplicate", NULL},
    {"metadata not object", "{\"metadata\":3,\"weight_map\":{\"a.w\":\"s1.safetensors\"}}", SH_A, SH_B,
     RF_ERR_FORMAT, "metadata", NULL},
};

static void test_malformed_index(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    char *ipath = pjoin(dir, "model.safetensors.index.json");
    char *p1 = pjoin(dir, "s1.safetensors"), *p2 = pjoin(dir, "s2.safetensors");
    rf_err err;
    rf_st *st;

    /* the valid layout first: both shards, sorted order, index preferred over stray files */
    write_image(p1, SH_A, 11);
    write_image(p2, SH_B, 8);
    assert_int_equal(tu_write_file(ipath, IDX_OK, strlen(IDX_OK)), 0);
    TU_OK(rf_st_open(dir, &st, &err), &err);
    assert_int_equal(rf_st_count(st), 3);
    assert_int_equal(rf_st_file_count(st), 2);
    assert_string_equal(rf_st_get(st, 0)->name, "a.w");
    assert_string_equal(rf_st_get(st, 1)->name, "a.b");
    assert_string_equal(rf_st_get(st, 2)->name, "b.w");
    assert_string_equal(rf_st_get(st, 2)->file, p2);
    uint64_t fp = rf_st_fingerprint(st);
    rf_st_close(st);
    /* any header change changes the fingerprint; the same bytes give the same one */
    write_image(p2, "{\"b.w\":{\"dtype\":\"I16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8);
    TU_OK(rf_st_open(ipath, &st, &err), &err);
    assert_int_not_equal(rf_st_fingerprint(st), fp);
    rf_st_close(st);
    write_image(p2, SH_B, 8);
    TU_OK(rf_st_open(ipath, &st, &err), &err);
    assert_int_equal(rf_st_fingerprint(st), fp);
    rf_st_close(st);

    for (size_t i = 0; i < sizeof idx_cases / sizeof idx_cases[0]; i++) {
        const idx_case *c = &idx_cases[i];
        write_image(p1, c->s1, 11);
        write_image(p2, c->s2, 8);
        assert_int_equal(tu_write_file(ipath, c->index, strlen(c->index)), 0);
        expect_err(rf_st_open(dir, &st, &err), &err, c->code, c->m1, c->m2, c->what);
        /* the in-memory index path behaves the same */
        size_t n1, n2;
        uint8_t *i1 = mk_image(c->s1, 11, &n1), *i2 = mk_image(c->s2, 8, &n2);
        rf_st_mem_shard ms[2] = {{"s1.safetensors", i1, n1}, {"s2.safetensors", i2, n2}};
        expect_err(rf_st_open_index_memory(c->index, strlen(c->index), "mem-index", ms, 2, &st, &err), &err, c->code,
                   c->m1, c->m2, c->what);
        free(i1);
        free(i2);
    }
    free(ipath);
    free(p1);
    free(p2);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ writer failures */

static const uint64_t shape4[1] = {4};

static rf_stw *writer_with(const char *dir, uint64_t max_shard, int ntensors)
{
    rf_err err;
    rf_stw *w;
    rf_stw_opts o = {.max_shard_bytes = max_shard};
    TU_OK(rf_stw_create(dir, &o, &w, &err), &err);
    for (int i = 0; i < ntensors; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        TU_OK(rf_stw_declare(w, name, RF_DT_F32, 1, shape4, &err), &err);
    }
    return w;
}

static void test_writer_errors(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    rf_err err;
    uint8_t data[64] = {0};
    rf_stw *w;

    /* argument and declaration errors */
    expect_err(rf_stw_create("/nonexistent/dir", NULL, &w, &err), &err, RF_ERR_NOT_FOUND, "/nonexistent/dir", NULL,
               "no dir");
    w = writer_with(dir, 0, 2);
    expect_err(rf_stw_declare(w, "t1", RF_DT_F32, 1, shape4, &err), &err, RF_ERR_INVALID, "'t1'", "twice", "dup");
    expect_err(rf_stw_declare(w, "x", RF_DT_INVALID, 1, shape4, &err), &err, RF_ERR_INVALID, "'x'", "dtype", "dtype");
    expect_err(rf_stw_declare(w, "x", (rf_dtype)99, 1, shape4, &err), &err, RF_ERR_INVALID, "'x'", "dtype", "dtype");
    expect_err(rf_stw_declare(w, "x", RF_DT_F32, 9, shape4, &err), &err, RF_ERR_INVALID, "'x'", NULL, "ndim");
    expect_err(rf_stw_declare(w, "__metadata__", RF_DT_F32, 1, shape4, &err), &err, RF_ERR_INVALID, NULL, NULL, "meta");
    expect_err(rf_stw_declare(w, "bad\xff", RF_DT_F32, 1, shape4, &err), &err, RF_ERR_INVALID, NULL, NULL, "utf8");
    TU_OK(rf_stw_write(w, data, 8, &err), &err);
    expect_err(rf_stw_declare(w, "late", RF_DT_F32, 1, shape4, &err), &err, RF_ERR_INVALID, "after writing", NULL,
               "late declare");
    expect_err(rf_stw_set_metadata(w, "k", "v", &err), &err, RF_ERR_INVALID, "after writing", NULL, "late meta");
    assert_int_equal(count_entries(dir), 1); /* only the temporary file so far */
    char *final = pjoin(dir, "model.safetensors");
    assert_int_not_equal(access(final, F_OK), 0);
    /* write past the declared bytes of t0 */
    expect_err(rf_stw_write(w, data, 16, &err), &err, RF_ERR_INVALID, "'t0'", "exceeds", "overrun");
    expect_err(rf_stw_write(w, data, 4, &err), &err, RF_ERR_INVALID, "earlier error", NULL, "after failure");
    assert_int_equal(count_entries(dir), 0);
    rf_stw_free(w);

    /* past the last tensor */
    w = writer_with(dir, 0, 1);
    TU_OK(rf_stw_write(w, data, 16, &err), &err);
    expect_err(rf_stw_write(w, data, 1, &err), &err, RF_ERR_INVALID, "after the last declared tensor", "t0", "past end");
    rf_stw_free(w);
    assert_int_equal(count_entries(dir), 0);

    /* finish with missing bytes names the tensor; nothing is left */
    w = writer_with(dir, 16, 3);
    TU_OK(rf_stw_write(w, data, 16, &err), &err);
    TU_OK(rf_stw_write(w, data, 10, &err), &err);
    expect_err(rf_stw_finish(w, &err), &err, RF_ERR_INVALID, "'t1'", "10 of 16", "short");
    rf_stw_free(w);
    assert_int_equal(count_entries(dir), 0);

    /* abandoned after writing into several shards: free removes every temporary file */
    w = writer_with(dir, 16, 4);
    for (int i = 0; i < 3; i++) TU_OK(rf_stw_write(w, data, 16, &err), &err);
    assert_true(count_entries(dir) >= 2);
    rf_stw_free(w);
    assert_int_equal(count_entries(dir), 0);
    rf_stw_free(NULL);

    /* finish twice */
    w = writer_with(dir, 0, 1);
    TU_OK(rf_stw_write(w, data, 16, &err), &err);
    TU_OK(rf_stw_finish(w, &err), &err);
    expect_err(rf_stw_finish(w, &err), &err, RF_ERR_INVALID, "after finish", NULL, "finish twice");
    rf_stw_free(w);
    assert_int_equal(count_entries(dir), 1);
    /* a stale index from an earlier sharded write is removed by a single-file write */
    w = writer_with(dir, 16, 2);
    /* a piece may not run from one tensor into the next */
    expect_err(rf_stw_write(w, data, 32, &err), &err, RF_ERR_INVALID, "'t0'", "exceeds", "cross");
    rf_stw_free(w);
    w = writer_with(dir, 16, 2);
    TU_OK(rf_stw_write(w, data, 16, &err), &err);
    TU_OK(rf_stw_write(w, data, 16, &err), &err);
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    assert_int_equal(count_entries(dir), 4); /* model.safetensors + 2 shards + index */
    w = writer_with(dir, 0, 1);
    TU_OK(rf_stw_write(w, data, 16, &err), &err);
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    rf_st *st;
    TU_OK(rf_st_open(dir, &st, &err), &err);
    assert_int_equal(rf_st_count(st), 1);
    assert_string_equal(rf_st_file_path(st, 0), final);
    rf_st_close(st);
    free(final);
    tu_rmtree(dir);
    free(dir);
}

/* A file size limit makes write() fail with EFBIG: RF_ERR_NOSPACE naming the file, nothing left. */
static int fsize_child(const char *dir)
{
    struct rlimit rl = {64 * 1024, 64 * 1024};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0) return 10;
    signal(SIGXFSZ, SIG_IGN);
    rf_err err;
    rf_stw *w;
    uint64_t shape[1] = {300 * 1024};
    if (rf_stw_create(dir, NULL, &w, &err) != RF_OK) return 11;
    if (rf_stw_declare(w, "big.weight", RF_DT_U8, 1, shape, &err) != RF_OK) return 12;
    uint8_t *buf = calloc(1, shape[0]);
    rf_status rc = RF_OK;
    for (uint64_t off = 0; off < shape[0] && rc == RF_OK; off += 1024) rc = rf_stw_write(w, buf + off, 1024, &err);
    if (rc == RF_OK) rc = rf_stw_finish(w, &err);
    free(buf);
    if (rc != RF_ERR_NOSPACE) return 13;
    if (!strstr(err.msg, "model.safetensors")) return 14;
    rf_stw_free(w);
    return count_entries(dir) == 0 ? 0 : 15;
}

static void test_writer_nospace(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(fsize_child(dir));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(count_entries(dir), 0);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_model),
        cmocka_unit_test(test_shared_bf16_model),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_rewrite_real_model),
        cmocka_unit_test(test_edge_valid),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_malformed_length),
        cmocka_unit_test(test_malformed_index),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_writer_nospace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
