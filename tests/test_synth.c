/* Synthetic checkpoints: names and shapes the model catalogue accepts for every preset family,
 * config.json matching rf_synth_config, scaling rules, sharding, determinism across thread
 * counts and seeds, and weight statistics (norms near 1, heavy tails, outlier channels). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *write_synth(const rf_synth_opts *o)
{
    char *dir = tu_mkdtemp();
    rf_err err;
    TU_OK(rf_synth_write(o, dir, NULL, &err), &err);
    return dir;
}

static void base_opts(rf_synth_opts *o, const char *like)
{
    rf_synth_opts_default(o);
    o->like = like;
    o->scale = 0.0625;
    o->layers = 2;
    o->vocab = 384;
    o->threads = 2;
}

static char *file_text(const char *dir, const char *name, size_t *n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return tu_read_file(path, n);
}

/* Every preset family opens as a model whose config matches rf_synth_config. */
static void test_presets_open(void **state)
{
    (void)state;
    const char *likes[] = {"qwen3-8b", "qwen3-30b-a3b", "llama-3.1-8b", "mixtral-8x7b", "qwen2.5-0.5b", "mistral-7b"};
    for (size_t i = 0; i < sizeof likes / sizeof likes[0]; i++) {
        rf_synth_opts o;
        base_opts(&o, likes[i]);
        if (strstr(likes[i], "30b") || strstr(likes[i], "mixtral")) o.experts = 3;
        rf_config want;
        rf_err err;
        TU_OK(rf_synth_config(&o, &want, &err), &err);
        char *dir = write_synth(&o);
        rf_model *m;
        TU_OK(rf_model_open(dir, &m, &err), &err);
        const rf_config *c = rf_model_config(m);
        assert_string_equal(c->model_type, want.model_type);
        assert_int_equal(c->hidden_size, want.hidden_size);
        assert_int_equal(c->num_layers, 2);
        assert_int_equal(c->num_heads, want.num_heads);
        assert_int_equal(c->num_kv_heads, want.num_kv_heads);
        assert_int_equal(c->head_dim, want.head_dim);
        assert_int_equal(c->vocab_size, 384);
        assert_int_equal(c->num_experts, want.num_experts);
        assert_int_equal(c->tie_word_embeddings, want.tie_word_embeddings);
        assert_int_equal(c->hidden_size % 128, 0);
        assert_int_equal(c->intermediate_size % 128, 0);
        assert_int_equal(c->num_heads % c->num_kv_heads, 0);
        if (c->num_experts) {
            assert_int_equal(c->num_experts, 3);
            int banks = 0;
            for (uint64_t u = 0; u < rf_model_unit_count(m); u++)
                if (rf_model_unit(m, u)->n_experts) {
                    assert_int_equal(rf_model_unit(m, u)->n_members, 3);
                    banks++;
                }
            assert_int_equal(banks, 2 * 3);
            const char *w1 = strstr(likes[i], "mixtral") ? "model.layers.1.block_sparse_moe.experts.2.w2.weight"
                                                         : "model.layers.1.mlp.experts.2.down_proj.weight";
            assert_non_null(rf_st_find(rf_model_st(m), w1));
        }
        if (!strcmp(likes[i], "qwen2.5-0.5b")) assert_non_null(rf_st_find(rf_model_st(m), "model.layers.0.self_attn.k_proj.bias"));
        if (!strcmp(likes[i], "llama-3.1-8b")) assert_string_equal(c->rope.type, "llama3");
        size_t n;
        char *gen = file_text(dir, "generation_config.json", &n);
        assert_non_null(gen);
        free(gen);
        rf_model_free(m);
        tu_rmtree(dir);
        free(dir);
    }
}

static void test_full_size_config(void **state)
{
    (void)state;
    rf_synth_opts o;
    rf_synth_opts_default(&o);
    o.like = "qwen3-8b";
    rf_config c;
    rf_err err;
    TU_OK(rf_synth_config(&o, &c, &err), &err);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 12288);
    assert_int_equal(c.num_layers, 36);
    assert_int_equal(c.num_heads, 32);
    assert_int_equal(c.num_kv_heads, 8);
    assert_int_equal(c.vocab_size, 151936);
    o.like = "qwen3-30b-a3b";
    o.scale = 0.5;
    TU_OK(rf_synth_config(&o, &c, &err), &err);
    assert_int_equal(c.hidden_size, 1024);
    assert_int_equal(c.moe_intermediate_size, 384);
    assert_int_equal(c.num_kv_heads, 2);
    assert_int_equal(c.num_heads, 16);
    assert_int_equal(c.num_experts, 128);
    o.like = "gpt-9";
    assert_int_equal(rf_synth_config(&o, &c, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "qwen3-8b"));
    o.like = "qwen3-8b";
    o.scale = 2;
    assert_int_equal(rf_synth_config(&o, &c, &err), RF_ERR_INVALID);
}

static char *weights_text(const char *dir, size_t *n)
{
    char *t = file_text(dir, "model.safetensors", n);
    assert_non_null(t);
    return t;
}

/* Same seed: identical bytes for any thread count; another seed: different values. */
static void test_deterministic(void **state)
{
    (void)state;
    rf_synth_opts o;
    base_opts(&o, "qwen3-30b-a3b");
    o.experts = 2;
    o.threads = 1;
    char *a = write_synth(&o);
    o.threads = 3;
    char *b = write_synth(&o);
    o.seed = 99;
    char *c = write_synth(&o);
    size_t na, nb, nc;
    char *ta = weights_text(a, &na), *tb = weights_text(b, &nb), *tc = weights_text(c, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(ta, tb, na);
    assert_int_equal(na, nc);
    assert_memory_not_equal(ta, tc, na);
    char *ca = file_text(a, "config.json", &na), *cb = file_text(b, "config.json", &nb);
    assert_string_equal(ca, cb);
    free(ca), free(cb), free(ta), free(tb), free(tc);
    tu_rmtree(a), tu_rmtree(b), tu_rmtree(c);
    free(a), free(b), free(c);
}

/* Sharded like Hugging Face; the shards hold the same tensors as one file would. */
static void test_shards(void **state)
{
    (void)state;
    rf_synth_opts o;
    base_opts(&o, "llama-3-8b");
    char *one = write_synth(&o);
    o.max_shard_bytes = 300000;
    char *many = write_synth(&o);
    rf_st *s1, *s2;
    rf_err err;
    TU_OK(rf_st_open(one, &s1, &err), &err);
    TU_OK(rf_st_open(many, &s2, &err), &err);
    assert_int_equal(rf_st_file_count(s1), 1);
    assert_true(rf_st_file_count(s2) > 2);
    assert_non_null(strstr(rf_st_file_path(s2, 0), "model-00001-of-"));
    assert_int_equal(rf_st_count(s1), rf_st_count(s2));
    for (uint64_t i = 0; i < rf_st_count(s1); i++) {
        const rf_tensor *t = rf_st_get(s1, i), *u = rf_st_find(s2, t->name);
        assert_non_null(u);
        assert_int_equal(t->nbytes, u->nbytes);
        assert_memory_equal(t->data, u->data, t->nbytes);
    }
    rf_st_close(s1);
    rf_st_close(s2);
    tu_rmtree(one), tu_rmtree(many);
    free(one), free(many);
}

/* Moments of a BF16 tensor. */
static void moments(const rf_tensor *t, double *mean, double *sd, double *kurt, double *amax)
{
    double s1 = 0, s2 = 0, s4 = 0, n = (double)t->nelem;
    *amax = 0;
    for (uint64_t i = 0; i < t->nelem; i++) {
        double v = rf_bf16_to_f32(((const uint16_t *)t->data)[i]);
        s1 += v;
        *amax = fmax(*amax, fabs(v));
    }
    *mean = s1 / n;
    for (uint64_t i = 0; i < t->nelem; i++) {
        double v = rf_bf16_to_f32(((const uint16_t *)t->data)[i]) - *mean;
        s2 += v * v, s4 += v * v * v * v;
    }
    *sd = sqrt(s2 / n);
    *kurt = s4 / n / (s2 / n * s2 / n) - 3;
}

static void test_statistics(void **state)
{
    (void)state;
    rf_synth_opts o;
    base_opts(&o, "qwen3-8b");
    o.scale = 0.125;
    o.layers = 8;
    o.vocab = 256;
    char *dir = write_synth(&o);
    rf_st *st;
    rf_err err;
    TU_OK(rf_st_open(dir, &st, &err), &err);
    int outlier_layers = 0, heavy = 0, linear = 0;
    double sd_min = INFINITY, sd_max = 0;
    for (uint64_t i = 0; i < rf_st_count(st); i++) {
        const rf_tensor *t = rf_st_get(st, i);
        assert_int_equal(t->dtype, RF_DT_BF16);
        double mean, sd, kurt, amax;
        moments(t, &mean, &sd, &kurt, &amax);
        if (strstr(t->name, "norm")) {
            assert_true(fabs(mean - 1) < 0.02);
            assert_true(sd > 0.02 && sd < 0.1);
            continue;
        }
        linear++;
        assert_true(fabs(mean) < 0.1 * sd);
        heavy += kurt > 1.0;
        if (strstr(t->name, "down_proj")) {
            sd_min = fmin(sd_min, sd * sqrt((double)t->shape[1]));
            sd_max = fmax(sd_max, sd * sqrt((double)t->shape[1]));
        }
        /* outlier input channels: some column's mean |w| far above the rest */
        if (strstr(t->name, "q_proj")) {
            uint64_t rows = t->shape[0], cols = t->shape[1];
            double *col = calloc(cols, sizeof *col), avg = 0, top = 0;
            for (uint64_t r = 0; r < rows; r++)
                for (uint64_t c = 0; c < cols; c++) col[c] += fabs(rf_bf16_to_f32(((const uint16_t *)t->data)[r * cols + c]));
            for (uint64_t c = 0; c < cols; c++) avg += col[c] / (double)cols, top = fmax(top, col[c]);
            outlier_layers += top > 8 * avg;
            free(col);
        }
    }
    assert_true(heavy > linear / 2);   /* Student-t entries and row scales: heavy tails */
    assert_true(outlier_layers >= 1 && outlier_layers < 8);
    assert_true(sd_max / sd_min > 1.2); /* per-layer variation of std */
    rf_st_close(st);
    tu_rmtree(dir);
    free(dir);
}

static void test_cli(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp(), args[8192], *out = NULL;
    assert_int_equal(tu_run_cli("synth --help", &out), 0);
    assert_non_null(strstr(out, "mixtral-8x7b"));
    free(out);
    snprintf(args, sizeof args, "synth '%s/m' --like qwen3-0.6b --scale 0.125 --layers 1 --vocab 256 --seed 3 --quiet", dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    free(out);
    snprintf(args, sizeof args, "inspect '%s/m'", dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    assert_non_null(strstr(out, "qwen3"));
    free(out);
    /* an existing model directory is not overwritten unless asked (it once was, silently) */
    char cfg[8300];
    size_t n0, n1;
    snprintf(cfg, sizeof cfg, "%s/m/config.json", dir);
    char *before = tu_read_file(cfg, &n0);
    assert_non_null(before);
    snprintf(args, sizeof args, "synth '%s/m' --like llama-3.2-1b --scale 0.0625 --layers 1 --vocab 256 --quiet", dir);
    assert_int_equal(tu_run_cli(args, &out), 1);
    assert_non_null(strstr(out, "--force"));
    free(out);
    char *after = tu_read_file(cfg, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(after);
    strcat(args, " --force");
    assert_int_equal(tu_run_cli(args, &out), 0);
    free(out);
    after = tu_read_file(cfg, &n1);
    assert_non_null(strstr(after, "llama"));
    free(after);
    free(before);
    snprintf(args, sizeof args, "synth '%s/x' --like nosuch", dir);
    assert_int_equal(tu_run_cli(args, &out), 1);
    assert_non_null(strstr(out, "unknown architecture"));
    free(out);
    snprintf(args, sizeof args, "synth '%s/x' --like qwen3-8b --scale 3", dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_size_config),
        cmocka_unit_test(test_presets_open),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_statistics),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
