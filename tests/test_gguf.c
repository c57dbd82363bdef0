/* GGUF container: writer -> reader round trip of every value type and of tensors of several
 * types, the layout ggml's loader requires (32-byte aligned offsets in tensor-info order,
 * padding after every tensor), the file size the writer predicts, byte-exact output against an
 * independent hand-built image, hostile images (every truncation, bad types, counts, offsets,
 * overlaps, duplicates, versions), and writer misuse (nothing left behind on failure). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

static char *tmp_path(const char *dir, const char *name)
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

/* A file with one key of each kind and three tensors (F32 1-D, Q8_0 2-D, BF16 3-D). */
static void write_sample(const char *path, uint64_t *predicted)
{
    rf_err err;
    rf_ggufw *w;
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    TU_OK(rf_ggufw_set_str(w, "general.architecture", "llama", &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "llama.block_count", 7, &err), &err);
    TU_OK(rf_ggufw_set_i32(w, "tokenizer.ggml.padding_token_id", -3, &err), &err);
    TU_OK(rf_ggufw_set_f32(w, "llama.rope.freq_base", 500000.0f, &err), &err);
    TU_OK(rf_ggufw_set_bool(w, "tokenizer.ggml.add_bos_token", 1, &err), &err);
    const char *toks[] = {"<s>", "a", "\xe2\x96\x81the", ""};
    TU_OK(rf_ggufw_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 4, &err), &err);
    float sc[3] = {0.0f, -1.5f, 2.25f};
    TU_OK(rf_ggufw_set_arr(w, "tokenizer.ggml.scores", RF_GV_F32, sc, 3, &err), &err);
    int32_t tt[2] = {3, 1};
    TU_OK(rf_ggufw_set_arr(w, "tokenizer.ggml.token_type", RF_GV_I32, tt, 2, &err), &err);
    uint64_t ne1[1] = {5}, ne2[2] = {64, 3}, ne3[3] = {4, 2, 2};
    TU_OK(rf_ggufw_add_tensor(w, "a.weight", RF_GT_F32, 1, ne1, &err), &err);
    TU_OK(rf_ggufw_add_tensor(w, "b.weight", RF_GT_Q8_0, 2, ne2, &err), &err);
    TU_OK(rf_ggufw_add_tensor(w, "c.weight", RF_GT_BF16, 3, ne3, &err), &err);
    *predicted = rf_ggufw_file_size(w);
    assert_int_equal(rf_ggufw_tensor_bytes(w, 1), 6 * 34);
    float a[5] = {1, 2, 3, 4, 5};
    TU_OK(rf_ggufw_write(w, a, 2 * sizeof(float), &err), &err); /* in pieces */
    TU_OK(rf_ggufw_write(w, a + 2, 3 * sizeof(float), &err), &err);
    uint8_t q[6 * 34];
    for (int i = 0; i < (int)sizeof q; i++) q[i] = (uint8_t)(i * 7);
    uint16_t c[16];
    for (int i = 0; i < 16; i++) c[i] = rf_f32_to_bf16((float)i);
    uint8_t both[sizeof q + sizeof c];
    memcpy(both, q, sizeof q);
    memcpy(both + sizeof q, c, sizeof c);
    TU_OK(rf_ggufw_write(w, both, sizeof both, &err), &err); /* across a tensor boundary */
    TU_OK(rf_ggufw_finish(w, &err), &err);
    rf_ggufw_free(w);
}

static void test_round_trip(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp(), *path = tmp_path(dir, "m.gguf");
    uint64_t predicted;
    write_sample(path, &predicted);
    assert_int_equal(count_files(dir), 1); /* the temporary file was renamed */
    rf_err err;
    rf_gguf *g;
    TU_OK(rf_gguf_open(path, &g, &err), &err);
    assert_int_equal(rf_gguf_file_size(g), predicted);
    assert_int_equal(rf_gguf_version(g), 3);
    assert_int_equal(rf_gguf_kv_count(g), 8);
    assert_int_equal(rf_gguf_alignment(g), 32);
    assert_int_equal(rf_gguf_data_offset(g) % 32, 0);
    const char *s;
    uint64_t len;
    TU_OK(rf_gguf_get_str(g, "general.architecture", &s, &len, &err), &err);
    assert_int_equal(len, 5);
    assert_memory_equal(s, "llama", 5);
    int64_t iv;
    TU_OK(rf_gguf_get_int(g, "llama.block_count", &iv, &err), &err);
    assert_int_equal(iv, 7);
    TU_OK(rf_gguf_get_int(g, "tokenizer.ggml.padding_token_id", &iv, &err), &err);
    assert_int_equal(iv, -3);
    TU_OK(rf_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &iv, &err), &err);
    assert_int_equal(iv, 1);
    double dv;
    TU_OK(rf_gguf_get_float(g, "llama.rope.freq_base", &dv, &err), &err);
    assert_true(dv == 500000.0);
    assert_int_equal(rf_gguf_get_float(g, "llama.block_count", &dv, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "llama.block_count"));
    assert_int_equal(rf_gguf_get_int(g, "no.such.key", &iv, &err), RF_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "no.such.key"));
    int64_t k = rf_gguf_find_kv(g, "tokenizer.ggml.tokens");
    assert_true(k >= 0);
    assert_int_equal(rf_gguf_kv_type(g, (uint64_t)k), RF_GV_ARR);
    assert_int_equal(rf_gguf_kv_arr_type(g, (uint64_t)k), RF_GV_STR);
    assert_int_equal(rf_gguf_kv_arr_len(g, (uint64_t)k), 4);
    s = rf_gguf_arr_str(g, (uint64_t)k, 2, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(s, "\xe2\x96\x81the", 6);
    s = rf_gguf_arr_str(g, (uint64_t)k, 3, &len);
    assert_non_null(s);
    assert_int_equal(len, 0);
    assert_null(rf_gguf_arr_str(g, (uint64_t)k, 4, &len));
    k = rf_gguf_find_kv(g, "tokenizer.ggml.scores");
    assert_true(rf_gguf_arr_num(g, (uint64_t)k, 2) == 2.25);
    assert_true(isnan(rf_gguf_arr_num(g, (uint64_t)k, 3)));
    k = rf_gguf_find_kv(g, "tokenizer.ggml.token_type");
    assert_true(rf_gguf_arr_num(g, (uint64_t)k, 0) == 3);
    char buf[64];
    rf_gguf_kv_text(g, (uint64_t)rf_gguf_find_kv(g, "tokenizer.ggml.tokens"), buf, sizeof buf);
    assert_string_equal(buf, "[array of 4 string]");
    /* tensors in declaration order, each offset the previous end rounded up to 32 */
    assert_int_equal(rf_gguf_tensor_count(g), 3);
    const rf_gguf_tensor *a = rf_gguf_tensor_at(g, 0), *b = rf_gguf_tensor_at(g, 1), *c = rf_gguf_tensor_at(g, 2);
    assert_string_equal(a->name, "a.weight");
    assert_int_equal(a->offset, rf_gguf_data_offset(g));
    assert_int_equal(b->offset, a->offset + 32);
    assert_int_equal(c->offset, b->offset + (6 * 34 + 31) / 32 * 32);
    assert_int_equal(rf_gguf_file_size(g), c->offset + 32);
    assert_int_equal(b->ne[0], 64);
    assert_int_equal(b->ne[1], 3);
    assert_int_equal(b->ndim, 2);
    assert_int_equal(c->ndim, 3);
    assert_int_equal(c->nelem, 16);
    assert_true(((const float *)a->data)[4] == 5.0f);
    assert_int_equal(((const uint8_t *)b->data)[203], (uint8_t)(203 * 7));
    assert_int_equal(((const uint16_t *)c->data)[15], rf_f32_to_bf16(15.0f));
    assert_ptr_equal(rf_gguf_find_tensor(g, "c.weight"), c);
    assert_null(rf_gguf_find_tensor(g, "d.weight"));
    rf_gguf_close(g);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

/* An image built by hand from the format description: the writer's bytes must equal it. */
static void put(uint8_t **p, const void *v, size_t n) { memcpy(*p, v, n); *p += n; }
static void put32(uint8_t **p, uint32_t v) { put(p, &v, 4); }
static void put64(uint8_t **p, uint64_t v) { put(p, &v, 8); }
static void putstr(uint8_t **p, const char *s) { put64(p, strlen(s)); put(p, s, strlen(s)); }

static size_t hand_image(uint8_t *img)
{
    uint8_t *p = img;
    put(&p, "GGUF", 4);
    put32(&p, 3);
    put64(&p, 2); /* tensors */
    put64(&p, 2); /* keys */
    putstr(&p, "general.architecture");
    put32(&p, 8);
    putstr(&p, "qwen3");
    putstr(&p, "x.n");
    put32(&p, 4);
    put32(&p, 9);
    putstr(&p, "t0");
    put32(&p, 1);
    put64(&p, 3);
    put32(&p, 0);
    put64(&p, 0);
    putstr(&p, "t1");
    put32(&p, 2);
    put64(&p, 2);
    put64(&p, 2);
    put32(&p, 1);
    put64(&p, 32);
    while ((p - img) % 32) *p++ = 0;
    float f[3] = {1, 2, 3};
    put(&p, f, 12);
    while ((p - img) % 32) *p++ = 0;
    uint16_t h[4] = {1, 2, 3, 4};
    put(&p, h, 8);
    while ((p - img) % 32) *p++ = 0;
    return (size_t)(p - img);
}

static void test_exact_bytes(void **state)
{
    (void)state;
    uint8_t want[512];
    memset(want, 0, sizeof want);
    size_t n = hand_image(want);
    char *dir = tu_mkdtemp(), *path = tmp_path(dir, "h.gguf");
    rf_err err;
    rf_ggufw *w;
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    TU_OK(rf_ggufw_set_str(w, "general.architecture", "qwen3", &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "x.n", 9, &err), &err);
    uint64_t ne0[1] = {3}, ne1[2] = {2, 2};
    TU_OK(rf_ggufw_add_tensor(w, "t0", RF_GT_F32, 1, ne0, &err), &err);
    TU_OK(rf_ggufw_add_tensor(w, "t1", RF_GT_F16, 2, ne1, &err), &err);
    assert_int_equal(rf_ggufw_file_size(w), n);
    float f[3] = {1, 2, 3};
    uint16_t h[4] = {1, 2, 3, 4};
    TU_OK(rf_ggufw_write(w, f, 12, &err), &err);
    TU_OK(rf_ggufw_write(w, h, 8, &err), &err);
    TU_OK(rf_ggufw_finish(w, &err), &err);
    rf_ggufw_free(w);
    size_t got_n;
    char *got = tu_read_file(path, &got_n);
    assert_int_equal(got_n, n);
    assert_memory_equal(got, want, n);
    free(got);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

static rf_status open_img(const uint8_t *img, size_t n, rf_err *err)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, img, n);
    rf_gguf *g = NULL;
    rf_status s = rf_gguf_open_memory(copy, n, "img", &g, err);
    rf_gguf_close(g);
    free(copy);
    return s;
}

static void test_hostile(void **state)
{
    (void)state;
    uint8_t img[512], bad[512];
    memset(img, 0, sizeof img);
    size_t n = hand_image(img);
    rf_err err;
    TU_OK(open_img(img, n, &err), &err);
    /* every truncation fails cleanly (the last tensor's data ends 24 bytes before the end) */
    for (size_t k = 0; k < n - 24; k++) assert_int_not_equal(open_img(img, k, &err), RF_OK);
    /* offsets of fields in the hand image */
    /* header 24; key 0 "general.architecture" (8+20) then its type; key 1 ends at 88; tensor t0 is
     * 34 bytes (88..122); t1: name 122..132, dims 132, ne 136..152, type 152, offset 156 */
    const size_t ver = 4, ntens = 8, k0type = 24 + 8 + 20, t1name = 131, t1type = 152, t1off = 156;
    memcpy(bad, img, n);
    bad[0] = 'X';
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not a GGUF"));
    memcpy(bad, img, n);
    bad[ver] = 1;
    assert_int_equal(open_img(bad, n, &err), RF_ERR_UNSUPPORTED);
    memcpy(bad, img, n);
    bad[ver] = 0, bad[ver + 3] = 3; /* byte-swapped version */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_UNSUPPORTED);
    memcpy(bad, img, n);
    memset(bad + ntens, 0xff, 8); /* absurd tensor count: refused before allocating */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    memcpy(bad, img, n);
    bad[k0type] = 13; /* unknown value type */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "general.architecture"));
    memcpy(bad, img, n);
    assert_int_equal(bad[t1type], 1);
    bad[t1type] = 4; /* a removed ggml type */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "t1"));
    memcpy(bad, img, n);
    bad[t1type] = RF_GT_Q8_0; /* rows of 2 cannot be Q8_0 */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    memcpy(bad, img, n);
    bad[t1off] = 16; /* misaligned */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "alignment"));
    memcpy(bad, img, n);
    bad[t1off] = 0; /* overlaps t0 */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "overlap"));
    memcpy(bad, img, n);
    bad[t1off + 1] = 1; /* beyond the end */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    memcpy(bad, img, n);
    bad[t1name] = '0'; /* "t1" -> "t0": duplicate tensor name */
    assert_int_equal(open_img(bad, n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "twice"));
}

static void test_writer_misuse(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp(), *path = tmp_path(dir, "x.gguf");
    rf_err err;
    rf_ggufw *w;
    uint64_t ne[2] = {32, 2};
    /* duplicate key, long name, bad shape, unknown type */
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "a", 1, &err), &err);
    assert_int_equal(rf_ggufw_set_u32(w, "a", 2, &err), RF_ERR_INVALID);
    rf_ggufw_free(w);
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    assert_int_equal(rf_ggufw_add_tensor(w, "blk.0.a.very.long.tensor.name.that.does.not.fit.in.ggml.limits.weight",
                                         RF_GT_F32, 2, ne, &err), RF_ERR_INVALID);
    rf_ggufw_free(w);
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    uint64_t odd[2] = {33, 2};
    assert_int_equal(rf_ggufw_add_tensor(w, "t", RF_GT_Q4_K, 2, odd, &err), RF_ERR_INVALID);
    rf_ggufw_free(w);
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    assert_int_equal(rf_ggufw_set_u32(w, "general.alignment", 64, &err), RF_ERR_INVALID);
    rf_ggufw_free(w);
    /* too few / too many bytes; keys after data */
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    TU_OK(rf_ggufw_add_tensor(w, "t", RF_GT_F32, 2, ne, &err), &err);
    float z[64] = {0};
    TU_OK(rf_ggufw_write(w, z, 100, &err), &err);
    assert_int_equal(rf_ggufw_set_u32(w, "late", 1, &err), RF_ERR_INVALID);
    assert_int_equal(rf_ggufw_finish(w, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "100 of 256"));
    rf_ggufw_free(w);
    assert_int_equal(count_files(dir), 0); /* nothing left behind */
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    TU_OK(rf_ggufw_add_tensor(w, "t", RF_GT_F32, 2, ne, &err), &err);
    assert_int_equal(rf_ggufw_write(w, z, 257, &err), RF_ERR_INVALID);
    assert_int_equal(rf_ggufw_finish(w, &err), RF_ERR_INVALID);
    rf_ggufw_free(w);
    assert_int_equal(count_files(dir), 0);
    /* an existing file is replaced only by a finished write */
    assert_int_equal(tu_write_file(path, "old", 3), 0);
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    TU_OK(rf_ggufw_set_u32(w, "a", 1, &err), &err);
    rf_ggufw_free(w);
    size_t nn;
    char *txt = tu_read_file(path, &nn);
    assert_int_equal(nn, 3);
    free(txt);
    TU_OK(rf_ggufw_create(path, &w, &err), &err);
    TU_OK(rf_ggufw_finish(w, &err), &err);
    rf_ggufw_free(w);
    rf_gguf *g;
    TU_OK(rf_gguf_open(path, &g, &err), &err);
    assert_int_equal(rf_gguf_tensor_count(g), 0);
    rf_gguf_close(g);
    assert_int_equal(count_files(dir), 1);
    /* a missing directory */
    char *nowhere = tmp_path(dir, "no/such/dir/x.gguf");
    assert_int_not_equal(rf_ggufw_create(nowhere, &w, &err), RF_OK);
    assert_int_equal(rf_gguf_open(nowhere, &g, &err), RF_ERR_NOT_FOUND);
    free(nowhere);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_writer_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
