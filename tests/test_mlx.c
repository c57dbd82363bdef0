/* config.json "quantization" read as mlx-lm's loader reads it (io/mlx.c; the spec: mlx_lm/utils.py
 * load_model and mlx/nn/layers/quantized.py): one MLX checkpoint written by ramfit with mixed bits,
 * its config.json rewritten in every shape mlx-lm's own tools write or accept (mixed_3_6's
 * {"bits": 6, "group_size": null} entries, null globals, true/false entries, no "mode", keys that
 * are not module paths). Each shape must resolve to the same modules in rf_mlx_quant_read
 * (inspect) and give bit-identical logits in the engine; shapes mlx-lm refuses or ramfit cannot
 * decode (mxfp4, nvfp4, bad values) are refused by both with a message naming the problem. */
#include "testutil.h"
#include "io/mlx_internal.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct fx {
    char *tmp;
    char src[4096];    /* the checkpoint ramfit wrote */
    int n_quant;       /* quantized modules in it */
} fx;

static fx g;

static void copy_dir(const char *from, const char *to)
{
    assert_int_equal(mkdir(to, 0755), 0);
    DIR *d = opendir(from);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char a[8192], b[8192];
        snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        size_t n;
        char *data = tu_read_file(a, &n);
        assert_non_null(data);
        assert_int_equal(tu_write_file(b, data, n), 0);
        free(data);
    }
    closedir(d);
}

static int setup(void **state)
{
    (void)state;
    const char *model = tu_model_dir("stories260k");
    if (!model) return -1;
    rf_err err;
    rf_model *m;
    rf_profile *p;
    rf_plan *plan;
    rf_plan_opts po;
    rf_analyse_opts ao;
    if (rf_model_open(model, &m, &err)) return -1;
    rf_analyse_opts_default(&ao);
    ao.threads = 2;
    if (rf_analyse(m, &ao, &p, &err)) return -1;
    rf_plan_opts_default(&po);
    po.mode = RF_QMODE_MLX;
    /* mixed 3/6 bits at gs 64: per-module entries differ from the global default */
    if (rf_plan_parse_method("mixed:3:6:64", &po, &err) || rf_plan_solve(p, &po, 0, &plan, &err)) return -1;
    g.tmp = tu_mkdtemp();
    snprintf(g.src, sizeof g.src, "%s/src", g.tmp);
    rf_quantize_opts qo;
    rf_quantize_opts_default(&qo);
    qo.threads = 2;
    if (rf_quantize_write(m, plan, &qo, g.src, NULL, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    rf_plan_free(plan);
    rf_profile_free(p);
    rf_model_free(m);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (g.tmp) tu_rmtree(g.tmp);
    free(g.tmp);
    return 0;
}

static json_t *load_config(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *c = json_load_file(path, 0, &je);
    if (!c) fail_msg("%s: %s", path, je.text);
    return c;
}

/* A copy of the source checkpoint whose config.json "quantization" is Q (stolen; NULL: removed). */
static char *variant(const char *name, json_t *q)
{
    char *dir = malloc(4200);
    snprintf(dir, 4200, "%s/%s", g.tmp, name);
    copy_dir(g.src, dir);
    json_t *c = load_config(dir);
    json_object_del(c, "quantization_config");
    if (q) json_object_set_new(c, "quantization", q);
    else json_object_del(c, "quantization");
    char path[4300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(json_dump_file(c, path, JSON_INDENT(2)), 0);
    json_decref(c);
    return dir;
}

/* The modules rf_mlx_quant_read resolves in DIR (bits and gs by module name, one string). */
static char *resolved(const char *dir, rf_status *st, rf_err *err)
{
    rf_mlx_quant *q = NULL;
    *st = rf_mlx_quant_read(dir, &q, err);
    if (*st) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    s[0] = 0;
    for (uint64_t i = 0; i < rf_mlx_quant_count(q); i++) {
        const rf_mlx_module *m = rf_mlx_quant_module(q, i);
        n += (size_t)snprintf(s + n, cap - n, "%s %d/%d %llu\n", m->name, m->bits, m->gs, (unsigned long long)m->bytes);
        assert_true(n < cap);
    }
    rf_mlx_quant_free(q);
    return s;
}

static float *logits_of(const char *dir, rf_status *st, rf_err *err)
{
    rf_engine *e;
    rf_engine_opts eo = {.threads = 1, .max_ctx = 32, .max_batch = 16};
    *st = rf_engine_open(dir, &eo, &e, err);
    if (*st) return NULL;
    int32_t ids[12] = {1, 300, 25, 7, 400, 12, 99, 250, 3, 17, 480, 64};
    int V = rf_engine_vocab(e);
    float *l = malloc(sizeof(float) * 12 * (size_t)V);
    TU_OK(rf_engine_forward(e, ids, 12, l, 1, err), err);
    rf_engine_free(e);
    return l;
}

/* The reference: what the checkpoint as written resolves to and computes. */
static char *g_ref_mods;
static float *g_ref_logits;
static int g_vocab;

static void reference(void)
{
    if (g_ref_mods) return;
    rf_err err;
    rf_status st;
    g_ref_mods = resolved(g.src, &st, &err);
    TU_OK(st, &err);
    g_ref_logits = logits_of(g.src, &st, &err);
    TU_OK(st, &err);
    g_vocab = 512;
    /* the source has both 3- and 6-bit modules and kept ones: every rule below is exercised */
    assert_non_null(strstr(g_ref_mods, " 3/64 "));
    assert_non_null(strstr(g_ref_mods, " 6/64 "));
    assert_non_null(strstr(g_ref_mods, " 0/0 "));
}

static void expect_same(const char *name, json_t *q)
{
    reference();
    char *dir = variant(name, q);
    rf_err err;
    rf_status st;
    char *mods = resolved(dir, &st, &err);
    if (st) fail_msg("%s: rf_mlx_quant_read: %s", name, err.msg);
    if (strcmp(mods, g_ref_mods)) fail_msg("%s: resolved modules differ:\n%s\nvs\n%s", name, mods, g_ref_mods);
    float *l = logits_of(dir, &st, &err);
    if (st) fail_msg("%s: engine: %s", name, err.msg);
    assert_memory_equal(l, g_ref_logits, sizeof(float) * 12 * (size_t)g_vocab);
    free(l);
    free(mods);
    tu_rmtree(dir);
    free(dir);
}

static void expect_refused(const char *name, json_t *q, rf_status code, const char *word)
{
    char *dir = variant(name, q);
    rf_err err;
    rf_status st;
    char *mods = resolved(dir, &st, &err);
    if (st != code || !strstr(err.msg, word))
        fail_msg("%s: inspect's reader gave %s \"%s\", want %s naming '%s'", name, rf_status_name(st), err.msg,
                 rf_status_name(code), word);
    float *l = logits_of(dir, &st, &err);
    if (st != code || !strstr(err.msg, word))
        fail_msg("%s: engine gave %s \"%s\", want %s naming '%s'", name, rf_status_name(st), err.msg,
                 rf_status_name(code), word);
    free(l);
    free(mods);
    tu_rmtree(dir);
    free(dir);
}

/* The source's "quantization": global + one entry per module that differs from it. */
static json_t *source_quant(void)
{
    json_t *c = load_config(g.src), *q = json_deep_copy(json_object_get(c, "quantization"));
    json_decref(c);
    assert_non_null(q);
    return q;
}

/* Every quantized module of the source with its bits (module -> bits), from the reader. */
static json_t *source_modules(void)
{
    reference();
    json_t *m = json_object();
    char *s = strdup(g_ref_mods), *save = NULL;
    for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char name[256];
        int bits, gs;
        if (sscanf(line, "%255s %d/%d", name, &bits, &gs) == 3 && bits) json_object_set_new(m, name, json_integer(bits));
    }
    free(s);
    return m;
}

static void test_shapes_mlx_lm_writes(void **state)
{
    (void)state;
    json_t *mods = source_modules(), *v;
    const char *k;
    assert_true(json_object_size(mods) >= 20);

    /* 1. as written by ramfit (the reference itself, through a copy) */
    expect_same("as-written", source_quant());

    /* 2. mlx_lm.convert --quant-predicate mixed_3_6 (q_group_size None): the global is the mode's
     *    default {64, 4, affine}, every quantized module an entry {"group_size": null, "bits": B,
     *    "mode": "affine"} */
    json_t *q = json_pack("{s:i, s:i, s:s}", "group_size", 64, "bits", 4, "mode", "affine");
    json_object_foreach(mods, k, v)
        json_object_set_new(q, k, json_pack("{s:n, s:I, s:s}", "group_size", "bits", json_integer_value(v), "mode", "affine"));
    expect_same("mixed_3_6", q);

    /* 3. null global values take the defaults (64, 4); entries without "mode", with bits null
     *    where the default 4 ... is not what they need: so the entries give bits, null group size */
    q = json_pack("{s:n, s:n}", "group_size", "bits");
    json_object_foreach(mods, k, v) json_object_set_new(q, k, json_pack("{s:I}", "bits", json_integer_value(v)));
    expect_same("null-global", q);

    /* 4. the global is the most common config; modules at it say true, the others an entry;
     *    kept modules false; keys that are not module paths are ignored */
    q = source_quant();
    json_t *glob_bits = json_object_get(q, "bits");
    json_int_t gb = json_integer_value(glob_bits);
    json_object_del(q, "mode");
    json_object_foreach(mods, k, v)
        if (json_integer_value(v) == gb) json_object_set_new(q, k, json_true());
    json_object_set_new(q, "model.layers.0.mlp.down_proj", json_false()); /* kept (172 columns) */
    json_object_set_new(q, "model.norm", json_false());
    json_object_set_new(q, "quant_method", json_string("whatever"));
    json_object_set_new(q, "not.a.module", json_pack("{s:i}", "bits", 7));
    json_object_set_new(q, "model.layers.99.self_attn.q_proj", json_pack("{s:s}", "mode", "mxfp4"));
    expect_same("true-false-extra", q);

    /* 5. falsy group_size/bits (0, false) are defaults as well (mlx: `group_size or default`) */
    q = json_pack("{s:i, s:b, s:n}", "group_size", 0, "bits", 0, "mode");
    json_object_foreach(mods, k, v)
        json_object_set_new(q, k, json_pack("{s:I, s:i, s:b}", "bits", json_integer_value(v), "group_size", 0,
                                            "quantize_input", 0));
    expect_same("falsy-values", q);
    json_decref(mods);
}

static void test_shapes_refused(void **state)
{
    (void)state;
    json_t *mods = source_modules(), *v;
    const char *k;
    /* the global mode is used by modules without an entry (the source's common config) */
    json_t *q = source_quant();
    json_object_set_new(q, "mode", json_string("mxfp4"));
    expect_refused("mxfp4-global", q, RF_ERR_UNSUPPORTED, "mxfp4");

    q = source_quant();
    json_object_foreach(mods, k, v) {
        json_object_set_new(q, k, json_pack("{s:I, s:s}", "bits", json_integer_value(v), "mode", "nvfp4"));
        break;
    }
    expect_refused("nvfp4-entry", q, RF_ERR_UNSUPPORTED, "nvfp4");

    q = source_quant();
    json_object_set_new(q, "mode", json_string("fancy"));
    expect_refused("bad-mode", q, RF_ERR_FORMAT, "invalid mode");

    q = source_quant();
    json_object_del(q, "bits");
    expect_refused("no-global-bits", q, RF_ERR_FORMAT, "lacks \"bits\"");

    q = source_quant();
    json_object_set_new(q, "bits", json_integer(7));
    expect_refused("bits-7", q, RF_ERR_FORMAT, "7 bits");

    q = source_quant();
    json_object_foreach(mods, k, v) {
        json_object_set_new(q, k, json_pack("{s:I, s:i}", "bits", json_integer_value(v), "groups", 64));
        break;
    }
    expect_refused("unknown-key", q, RF_ERR_FORMAT, "unknown key \"groups\"");

    q = source_quant();
    json_object_foreach(mods, k, v) {
        json_object_set_new(q, k, json_integer(1));
        break;
    }
    expect_refused("entry-number", q, RF_ERR_FORMAT, "must be an object, true or false");

    /* an entry that quantizes a module without .scales (mlx-lm's strict load fails) */
    q = source_quant();
    json_object_set_new(q, "model.layers.0.mlp.down_proj", json_pack("{s:i}", "bits", 4));
    expect_refused("entry-without-scales", q, RF_ERR_FORMAT, "no model.layers.0.mlp.down_proj.scales");

    /* false for a module that has .scales */
    q = source_quant();
    json_object_foreach(mods, k, v) {
        json_object_set_new(q, k, json_false());
        break;
    }
    expect_refused("false-with-scales", q, RF_ERR_FORMAT, "leaves it unquantized");

    /* no "quantization" at all, and a converted format's quantization_config instead */
    expect_refused("no-quantization", NULL, RF_ERR_FORMAT, "leaves it unquantized");
    char *dir = variant("awq", NULL);
    char path[4300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *c = load_config(dir);
    json_object_set_new(c, "quantization_config", json_pack("{s:s, s:i}", "quant_method", "awq", "bits", 4));
    assert_int_equal(json_dump_file(c, path, 0), 0);
    json_decref(c);
    rf_err err;
    rf_mlx_quant *mq = NULL;
    assert_int_equal(rf_mlx_quant_read(dir, &mq, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "awq"));
    tu_rmtree(dir);
    free(dir);
    json_decref(mods);
}

/* A quantized module whose .scales tensor is gone (and no entry says anything): inspect's reader
 * once took its U32 weight for a kept module. */
static void test_module_without_scales(void **state)
{
    (void)state;
    json_t *mods = source_modules();
    const char *victim = json_object_iter_key(json_object_iter(mods));
    char dir[4200], name[300];
    snprintf(dir, sizeof dir, "%s/noscales", g.tmp);
    copy_dir(g.src, dir);
    /* rewrite the weights as one shard without VICTIM.scales, no index */
    rf_err err;
    rf_st *st;
    TU_OK(rf_st_open(g.src, &st, &err), &err);
    char idx[4300], shard[4300];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    snprintf(shard, sizeof shard, "%s/model.safetensors", dir);
    unlink(idx);
    unlink(shard);
    rf_stw *w;
    rf_stw_opts wo = {.basename = "model"};
    TU_OK(rf_stw_create(dir, &wo, &w, &err), &err);
    TU_OK(rf_stw_set_metadata(w, "format", "mlx", &err), &err);
    snprintf(name, sizeof name, "%s.scales", victim);
    for (uint64_t i = 0; i < rf_st_count(st); i++) {
        const rf_tensor *t = rf_st_get(st, i);
        if (strcmp(t->name, name)) TU_OK(rf_stw_declare(w, t->name, t->dtype, t->ndim, t->shape, &err), &err);
    }
    for (uint64_t i = 0; i < rf_st_count(st); i++) {
        const rf_tensor *t = rf_st_get(st, i);
        if (strcmp(t->name, name) && t->nbytes) TU_OK(rf_stw_write(w, t->data, t->nbytes, &err), &err);
    }
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    rf_st_close(st);
    /* drop its entry too, if the source had one: then only the tensors tell */
    json_t *c = load_config(dir);
    json_object_del(json_object_get(c, "quantization"), victim);
    json_object_del(c, "quantization_config");
    char path[4300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(json_dump_file(c, path, 0), 0);
    json_decref(c);
    rf_mlx_quant *q = NULL;
    assert_int_equal(rf_mlx_quant_read(dir, &q, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, victim));
    assert_non_null(strstr(err.msg, "without its scales"));
    char *out = NULL;
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "inspect %s", dir);
    assert_int_equal(tu_run_cli(cmd, &out), 1);
    assert_non_null(strstr(out, "without its scales"));
    free(out);
    tu_rmtree(dir);
    json_decref(mods);
}

/* A global "mode": "mxfp4" that no module uses (each quantized module has its own affine entry):
 * mlx-lm loads it, so does ramfit, and inspect does not report the unused global as "default 0
 * bits" (it once did). */
static void test_unused_fp_global(void **state)
{
    (void)state;
    json_t *mods = source_modules(), *v;
    const char *k;
    json_t *q = json_pack("{s:i, s:i, s:s}", "group_size", 32, "bits", 4, "mode", "mxfp4");
    json_object_foreach(mods, k, v)
        json_object_set_new(q, k, json_pack("{s:I, s:i, s:s}", "bits", json_integer_value(v), "group_size", 64, "mode",
                                            "affine"));
    json_decref(mods);
    reference();
    char *dir = variant("mxfp4-unused", q);
    rf_err err;
    rf_status st;
    char *m = resolved(dir, &st, &err);
    if (st) fail_msg("rf_mlx_quant_read: %s", err.msg);
    assert_string_equal(m, g_ref_mods);
    free(m);
    char cmd[4400], *out = NULL;
    snprintf(cmd, sizeof cmd, "inspect %s", dir);
    assert_int_equal(tu_run_cli(cmd, &out), 0);
    if (strstr(out, "default 0 bits") || !strstr(out, "global setting unused")) fail_msg("inspect says:\n%s", out);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_mlx_lm_writes),
        cmocka_unit_test(test_shapes_refused),
        cmocka_unit_test(test_unused_fp_global),
        cmocka_unit_test(test_module_without_scales),
    };
    int r = cmocka_run_group_tests(tests, setup, teardown);
    free(g_ref_mods);
    free(g_ref_logits);
    return r;
}
