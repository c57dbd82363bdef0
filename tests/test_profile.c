/* Profiles: exact round trip of every field (doubles bit-identical), deterministic text, and
 * validation of untrusted files with messages that name the unit and field. */
#include "testutil.h"

#include "plan/plan_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int same_double(double a, double b) { return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b)); }

static void assert_profiles_equal(const rf_profile *a, const rf_profile *b)
{
    assert_memory_equal(rf_profile_model(a), rf_profile_model(b), sizeof(rf_pmodel));
    assert_int_equal(rf_profile_modes(a), rf_profile_modes(b));
    assert_int_equal(rf_profile_configs(a), rf_profile_configs(b));
    assert_int_equal(rf_profile_unit_count(a), rf_profile_unit_count(b));
    assert_int_equal(rf_profile_other_count(a), rf_profile_other_count(b));
    assert_int_equal(rf_profile_file_count(a), rf_profile_file_count(b));
    assert_int_equal(rf_profile_full_bytes(a), rf_profile_full_bytes(b));
    assert_int_equal(rf_profile_param_count(a), rf_profile_param_count(b));
    assert_int_equal(rf_profile_opt_sample(a), rf_profile_opt_sample(b));
    int ka, na, kb, nb;
    uint64_t fa, ta, fb, tb;
    assert_int_equal(rf_profile_shard(a, &ka, &na, &fa, &ta), rf_profile_shard(b, &kb, &nb, &fb, &tb));
    assert_true(ka == kb && na == nb && fa == fb && ta == tb);
    for (uint64_t i = 0; i < rf_profile_unit_count(a); i++) {
        const rf_punit *x = rf_profile_unit(a, i), *y = rf_profile_unit(b, i);
        assert_string_equal(x->name, y->name);
        assert_int_equal(x->role, y->role);
        assert_int_equal(x->layer, y->layer);
        assert_int_equal(x->n_layers, y->n_layers);
        assert_int_equal(x->n_members, y->n_members);
        assert_int_equal(x->rows, y->rows);
        assert_int_equal(x->cols, y->cols);
        assert_int_equal(x->nparams, y->nparams);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->kept_bytes, y->kept_bytes);
        assert_true(same_double(x->ssq, y->ssq));
        assert_memory_equal(&x->stats, &y->stats, sizeof x->stats);
        assert_int_equal(x->n_cands, y->n_cands);
        assert_int_equal(x->estimated, y->estimated);
        for (int k = 0; k < x->n_cands; k++) {
            const rf_pcand *c = &x->cands[k], *d = &y->cands[k];
            assert_int_equal(c->bits, d->bits);
            assert_int_equal(c->gs, d->gs);
            assert_int_equal(c->bytes, d->bytes);
            for (int m = 0; m < 2; m++) {
                assert_true(same_double(c->err[m].sse, d->err[m].sse));
                assert_true(same_double(c->err[m].ssq, d->err[m].ssq));
                assert_true(same_double(c->err[m].max_abs, d->err[m].max_abs));
            }
        }
    }
    for (uint64_t i = 0; i < rf_profile_other_count(a); i++)
        assert_memory_equal(rf_profile_other(a, i), rf_profile_other(b, i), sizeof(rf_pother));
    for (uint64_t i = 0; i < rf_profile_file_count(a); i++)
        assert_memory_equal(rf_profile_file(a, i), rf_profile_file(b, i), sizeof(rf_pfile));
}

/* Doubles that round-trip badly through naive printing. */
static double tricky(tu_rng *r)
{
    static const double v[] = {0.1, 1.0 / 3, 2.0 / 3, 5e-324, DBL_MIN, DBL_MAX, 1e-300, 123456789012345678.0,
                                0x1.fffffffffffffp-1, 1.0, 0.0, 9007199254740993.0, 1e17, 4.9406564584124654e-324};
    if (tu_rng_u64(r) % 3 == 0) return v[tu_rng_u64(r) % (sizeof v / sizeof v[0])];
    double x;
    do {
        uint64_t bits = tu_rng_u64(r) & 0x7fffffffffffffffull;
        memcpy(&x, &bits, sizeof x);
    } while (!isfinite(x));
    return x;
}

/* A small profile with random (often extreme) doubles in every field, both modes, some absent. */
static rf_profile *random_profile(tu_rng *r, unsigned modes)
{
    rf_pmodel m = {0};
    snprintf(m.name, sizeof m.name, "tricky \"model\"\\ ünïcode");
    snprintf(m.architecture, sizeof m.architecture, "LlamaForCausalLM");
    snprintf(m.model_type, sizeof m.model_type, "llama");
    m.num_layers = 3;
    m.hidden_size = 256;
    m.fingerprint = tu_rng_u64(r) | 1ull << 63;
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_create(&m, modes, RF_PROFILE_ALL_CONFIGS, &p, &err), &err);
    for (int i = 0; i < 12; i++) {
        rf_punit u;
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.unit%d", i % 3, i);
        uint64_t rows = 1 + tu_rng_u64(r) % 300, cols = (i % 4 == 3) ? 172 : 128 * (1 + tu_rng_u64(r) % 3);
        rf_punit_init(&u, name, (rf_role)(RF_ROLE_ATTN_Q + i % 4), i % 3, 3, rows, cols, rows * cols * (uint64_t)(1 + i % 2),
                      i % 2 ? RF_DT_F32 : RF_DT_BF16);
        u.n_members = 1 + i % 2;
        u.ssq = tricky(r);
        u.stats = (rf_pstats){-tricky(r), tricky(r), tricky(r), tu_rng_u64(r) % 2 ? -0.0 : tricky(r), tu_rng_uniform(r)};
        for (int c = RF_QCFG_N - 1; c >= 0; c--) { /* reverse order: add_unit sorts */
            int bits = rf_cfg_bits(c), gs = rf_cfg_gs(c);
            if (cols % (uint64_t)gs || tu_rng_u64(r) % 4 == 0) continue;
            rf_qerr e[2] = {{tricky(r), u.ssq, tricky(r)}, {tricky(r), u.ssq, tricky(r)}};
            uint64_t bytes = u.nparams / 8 * (uint64_t)bits + u.nparams / (uint64_t)gs * 4;
            int absent = (int)(tu_rng_u64(r) % 5);
            TU_OK(rf_punit_add_cand(&u, bits, gs, bytes, (modes & 1) && absent != 1 ? &e[0] : NULL,
                                    (modes & 2) && absent != 2 ? &e[1] : NULL, &err), &err);
            if (modes != 3 && absent) { /* a candidate needs at least one measurement */
                u.n_cands--;
                continue;
            }
            if ((modes & 2) && absent != 2 && tu_rng_u64(r) % 2) u.estimated |= 1u << c;
        }
        TU_OK(rf_profile_add_unit(p, &u, &err), &err);
    }
    rf_pother o = {.role = RF_ROLE_NORM, .layer = -1, .nparams = 256, .dtype = RF_DT_F32, .bytes = 1024};
    snprintf(o.name, sizeof o.name, "model.norm.weight");
    TU_OK(rf_profile_add_other(p, &o, &err), &err);
    TU_OK(rf_profile_add_file(p, "model-00001-of-00002.safetensors", 5000000000ull, &err), &err);
    TU_OK(rf_profile_add_file(p, "model-00002-of-00002.safetensors", 123, &err), &err);
    rf_profile_set_opt_sample(p, tu_rng_u64(r) % 3 ? 0 : tu_rng_u64(r) % 100000);
    if (tu_rng_u64(r) % 3 == 0) TU_OK(rf_profile_set_shard(p, 2, 3, 5, 40, &err), &err);
    return p;
}

static void test_profile_round_trip_exact(void **state)
{
    (void)state;
    tu_rng r = {77};
    rf_err err;
    for (int t = 0; t < 60; t++) {
        unsigned modes = 1 + (unsigned)(t % 3);
        rf_profile *p = random_profile(&r, modes);
        char *j1, *j2;
        size_t n1, n2;
        TU_OK(rf_profile_to_json(p, &j1, &n1, &err), &err);
        rf_profile *q;
        TU_OK(rf_profile_from_json(j1, n1, "mem", &q, &err), &err);
        assert_profiles_equal(p, q);
        TU_OK(rf_profile_to_json(q, &j2, &n2, &err), &err);
        assert_int_equal(n1, n2);
        assert_memory_equal(j1, j2, n1); /* deterministic text */
        free(j1);
        free(j2);
        rf_profile_free(p);
        rf_profile_free(q);
    }
    /* through a file, a realistic MoE profile */
    rf_psynth_opts so = {.n_layers = 4, .hidden = 256, .ffn = 256, .vocab = 4096, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
                        .n_experts = 8, .experts_per_tok = 2, .modes = 3, .spread = 0.5, .seed = 5};
    rf_profile *p, *q;
    TU_OK(rf_profile_synth(&so, &p, &err), &err);
    char *dir = tu_mkdtemp(), path[512];
    snprintf(path, sizeof path, "%s/p.json", dir);
    TU_OK(rf_profile_save(p, path, &err), &err);
    TU_OK(rf_profile_load(path, &q, &err), &err);
    assert_profiles_equal(p, q);
    assert_int_equal(rf_profile_find_unit(q, "model.layers.3.mlp.gate"), rf_profile_find_unit(p, "model.layers.3.mlp.gate"));
    assert_true(rf_profile_find_unit(q, "model.layers.3.mlp.gate") >= 0);
    assert_int_equal(rf_profile_find_unit(q, "nope"), -1);
    rf_profile_free(p);
    rf_profile_free(q);
    assert_int_equal(rf_profile_load("/nonexistent/p.json", &q, &err), RF_ERR_NOT_FOUND);
    tu_rmtree(dir);
    free(dir);
}

/* A profile interrupted before its first unit is saved as a checkpoint: its data file is empty
 * (writing it passed NULL to fwrite: UBSan aborted analyse on Ctrl-C). */
static void test_profile_save_empty(void **state)
{
    (void)state;
    rf_pmodel m = {0};
    snprintf(m.name, sizeof m.name, "empty");
    snprintf(m.architecture, sizeof m.architecture, "LlamaForCausalLM");
    snprintf(m.model_type, sizeof m.model_type, "llama");
    m.num_layers = 1;
    m.hidden_size = 64;
    m.fingerprint = 42;
    rf_profile *p, *q = NULL;
    rf_err err;
    TU_OK(rf_profile_create(&m, 1, RF_PROFILE_ALL_CONFIGS, &p, &err), &err);
    char *dir = tu_mkdtemp(), path[512], bin[512];
    snprintf(path, sizeof path, "%s/p.json", dir);
    snprintf(bin, sizeof bin, "%s/p.bin", dir);
    TU_OK(rf_profile_save(p, path, &err), &err);
    size_t n = 1;
    char *text = tu_read_file(path, &n);
    assert_non_null(text);
    assert_non_null(strstr(text, "ramfit-profile"));
    free(text);
    text = tu_read_file(bin, &n); /* the data file exists, empty */
    assert_non_null(text);
    assert_int_equal(n, 0);
    free(text);
    TU_OK(rf_profile_load(path, &q, &err), &err);
    assert_int_equal(rf_profile_unit_count(q), 0);
    rf_profile_free(q);
    rf_profile_free(p);
    tu_rmtree(dir);
    free(dir);
}

/* Replace the first occurrence of FROM in TEXT; the mutated copy must fail with CODE and a message
 * containing NEED. */
static void expect_bad(const char *text, const char *from, const char *to, rf_status code, const char *need)
{
    const char *at = strstr(text, from);
    if (!at) fail_msg("test setup: '%s' not in profile text", from);
    size_t n = strlen(text), a = (size_t)(at - text), fl = strlen(from), tl = strlen(to);
    char *m = malloc(n - fl + tl + 1);
    memcpy(m, text, a);
    memcpy(m + a, to, tl);
    memcpy(m + a + tl, at + fl, n - a - fl + 1);
    rf_err err;
    rf_profile *p = (rf_profile *)1;
    rf_status s = rf_profile_from_json(m, strlen(m), "bad.json", &p, &err);
    if (s != code || !strstr(err.msg, need))
        fail_msg("'%s' -> '%s': got %s '%s', want %s containing '%s'", from, to, rf_status_name(s), err.msg,
                 rf_status_name(code), need);
    assert_null(p);
    free(m);
}

static void test_profile_validation(void **state)
{
    (void)state;
    rf_psynth_opts so = {.n_layers = 2, .hidden = 128, .ffn = 384, .vocab = 512, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32,
                        .modes = 3, .spread = 0.5, .seed = 9};
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_synth(&so, &p, &err), &err);
    char *t;
    size_t n;
    TU_OK(rf_profile_to_json(p, &t, &n, &err), &err);
    const char *u1 = "model.layers.0.self_attn.q_proj";
    const char *qrow = "\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [";
    char to[256];
#define QBAD(pat, code, need) (snprintf(to, sizeof to, pat), expect_bad(t, qrow, to, code, need))
    QBAD("\"attn_q\", 0, 2, 1, -1, 128, \"BF16\", \"BF16\", 262143, 0, [", RF_ERR_FORMAT, "field 'rows'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 129, \"BF16\", \"BF16\", 262143, 0, [", RF_ERR_FORMAT, "does not divide cols");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF17\", \"BF16\", 262143, 0, [", RF_ERR_FORMAT, "field 'dtype'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"I32\", \"BF16\", 262143, 0, [", RF_ERR_FORMAT, "not a float dtype");
    QBAD("\"attn_z\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [", RF_ERR_FORMAT, u1);
    QBAD("\"norm\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [", RF_ERR_FORMAT, "never units");
    QBAD("\"attn_q\", 7, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [", RF_ERR_FORMAT, "field 'layer'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [-", RF_ERR_FORMAT, "field 'ssq'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262144, 0, [", RF_ERR_FORMAT, "field 'configs'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"I8\", 262143, 0, [", RF_ERR_FORMAT, "field 'sizes'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", [1], 262143, 0, [", RF_ERR_FORMAT, "field 'sizes'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 262143, 0, [", RF_ERR_FORMAT, "c[0].bytes");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [1, ", RF_ERR_FORMAT, "field 'values'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [\"x\", ", RF_ERR_FORMAT, "field 'values'");
    QBAD("\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 0, [1, 0, 1, 1, 0, 0, null, ", RF_ERR_FORMAT, "field 'values'");
#undef QBAD
    expect_bad(t, "\"format\": \"ramfit-profile\"", "\"format\": \"ramfit-plan\"", RF_ERR_FORMAT, "field 'format'");
    expect_bad(t, "\"version\": 3", "\"version\": 5", RF_ERR_UNSUPPORTED, "version 5");
    expect_bad(t, "\"opt_sample\": 0", "\"opt_sample\": -1", RF_ERR_FORMAT, "field 'opt_sample'");
    expect_bad(t, "\"opt_sample\": 0", "\"opt_sample\": 0, \"shard\": [0, 0, 0, 0]", RF_ERR_FORMAT, "not a valid part");
    expect_bad(t, "\"opt_sample\": 0", "\"opt_sample\": 0, \"shard\": [3, 2, 0, 9]", RF_ERR_FORMAT, "not a valid part");
    expect_bad(t, "\"opt_sample\": 0", "\"opt_sample\": 0, \"shard\": [1, 2, 0]", RF_ERR_FORMAT, "field 'shard'");
    /* estimated: only candidates, and only ones with an opt error */
    expect_bad(t, qrow, "\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, 262144, [", RF_ERR_FORMAT, "field 'estimated'");
    expect_bad(t, qrow, "\"attn_q\", 0, 2, 1, 128, 128, \"BF16\", \"BF16\", 262143, -1, [", RF_ERR_FORMAT, "field 'estimated'");
    expect_bad(t, "\"unit_fields\": [\"name\"", "\"unit_fields\": [\"nom\"", RF_ERR_FORMAT, "unit_fields");
    expect_bad(t, "\"fingerprint\": \"", "\"fingerprint\": \"x", RF_ERR_FORMAT, "field 'fingerprint'");
    expect_bad(t, "\"modes\": [\"mlx\", \"opt\"]", "\"modes\": [\"opt\", \"mlx\"]", RF_ERR_FORMAT, "field 'modes'");
    expect_bad(t, "\"modes\": [\"mlx\", \"opt\"]", "\"modes\": [\"mlx\"]", RF_ERR_FORMAT, "field 'values'");
    expect_bad(t, "\"params\": ", "\"params\": 1", RF_ERR_FORMAT, "totals");
    expect_bad(t, "\"units\": [", "\"units\": 5, \"x\": [", RF_ERR_FORMAT, "field 'units'");
    expect_bad(t, "[\"model.layers.0.self_attn.k_proj\"", "[\"model.layers.0.self_attn.q_proj\"", RF_ERR_FORMAT, "duplicate");
    expect_bad(t, "\"format\": \"ramfit-profile\"", "\"format\": \"a\", \"format\": \"b\"", RF_ERR_FORMAT, "duplicate object key");
    expect_bad(t, "[\"model.norm.weight\"", "[\"model.embed_tokens\"", RF_ERR_FORMAT, "duplicate");
    expect_bad(t, "\"BF16\", 256]", "\"BF16\", 257]", RF_ERR_FORMAT, "field 'bytes'");
    expect_bad(t, "{\n", "[\n", RF_ERR_FORMAT, "invalid JSON");
    /* the index and its data file: each refused without or against the other */
    char *ix;
    void *data;
    size_t nix, nd;
    TU_OK(rf_profile_to_parts(p, "p.bin", &ix, &nix, &data, &nd, &err), &err);
    rf_profile *q2;
    assert_int_equal(rf_profile_from_json(ix, nix, "ix", &q2, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "data file"));
    TU_OK(rf_profile_from_parts(ix, nix, data, nd, "ix", &q2, &err), &err);
    assert_profiles_equal(p, q2);
    rf_profile_free(q2);
    assert_int_equal(rf_profile_from_parts(ix, nix, data, nd - 1, "ix", &q2, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "does not match its index"));
    ((unsigned char *)data)[nd / 2] ^= 1;
    assert_int_equal(rf_profile_from_parts(ix, nix, data, nd, "ix", &q2, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "does not match its index"));
    assert_null(q2);
    free(ix);
    free(data);
    /* truncation anywhere is a clean error */
    for (size_t cut = 0; cut < n; cut += n / 97 + 1) {
        rf_profile *q;
        assert_int_equal(rf_profile_from_json(t, cut, "cut", &q, &err), RF_ERR_FORMAT);
        assert_null(q);
    }
    /* add_unit rejects bad records from the analysis pass too, naming the unit */
    rf_punit u = *rf_profile_unit(p, 1);
    assert_int_equal(rf_profile_add_unit(p, &u, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "duplicate"));
    snprintf(u.name, sizeof u.name, "fresh");
    u.cands[0].err[RF_QMODE_OPT].ssq = u.ssq * 2;
    assert_int_equal(rf_profile_add_unit(p, &u, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "unit fresh: field 'c[0].opt.ssq'"));
    u.cands[0].err[RF_QMODE_OPT].ssq = u.ssq;
    u.n_cands--;
    u.estimated = 1u << rf_cfg_index(u.cands[u.n_cands].bits, u.cands[u.n_cands].gs);
    assert_int_equal(rf_profile_add_unit(p, &u, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "field 'estimated': names configs that are not candidates"));
    u.n_cands++;
    u.cands[3].err[RF_QMODE_OPT] = (rf_qerr){NAN, u.ssq, NAN};
    u.estimated = 1u << rf_cfg_index(u.cands[3].bits, u.cands[3].gs);
    assert_int_equal(rf_profile_add_unit(p, &u, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "has no opt error to estimate"));
    free(t);
    rf_profile_free(p);
}

/* Version 1 files (inline rows, explicit bytes, %.17g numbers) still load, to the same records. */
static void test_profile_version1(void **state)
{
    (void)state;
    const char *v1 =
        "{\"format\": \"ramfit-profile\", \"version\": 1, \"ramfit_version\": \"0.1.0\",\n"
        " \"model\": {\"name\": \"m\", \"architecture\": \"LlamaForCausalLM\", \"model_type\": \"llama\", \"fingerprint\": \"0123456789abcdef\",\n"
        "  \"config\": {\"hidden_size\": 64, \"intermediate_size\": 128, \"num_layers\": 1, \"num_heads\": 2, \"num_kv_heads\": 1, \"head_dim\": 32, "
        "\"vocab_size\": 256, \"tie_word_embeddings\": 1, \"num_experts\": 0, \"experts_per_tok\": 0, \"moe_intermediate_size\": 0},\n"
        "  \"files\": [[\"model.safetensors\", 70000]]},\n"
        " \"modes\": [\"mlx\"], \"configs\": [[4, 32], [8, 64]],\n"
        " \"cand_fields\": [\"bits\", \"gs\", \"bytes\", \"mlx_sse\", \"mlx_max_abs\"],\n"
        " \"totals\": {\"units\": 1, \"others\": 1, \"params\": 16448, \"bytes\": 65792},\n"
        " \"units\": [{\"name\": \"model.embed_tokens\", \"role\": \"embed\", \"layer\": -1, \"n_layers\": 1, \"members\": 1, \"rows\": 256, "
        "\"cols\": 64, \"params\": 16384, \"dtype\": \"F32\", \"kept_bytes\": 65536, \"ssq\": 12.5, \"stats\": [0.0, 0.02, 0.1, 0.5, 0.0], "
        "\"c\": [[4, 32, 10240, 0.01, 0.003], [8, 64, 17408, 0.0001, 0.0002]]}],\n"
        " \"others\": [{\"name\": \"model.norm.weight\", \"role\": \"norm\", \"layer\": -1, \"params\": 64, \"dtype\": \"F32\", \"bytes\": 256}]}\n";
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_from_json(v1, strlen(v1), "v1", &p, &err), &err);
    assert_int_equal(rf_profile_unit_count(p), 1);
    const rf_punit *u = rf_profile_unit(p, 0);
    assert_int_equal(u->n_cands, 2);
    assert_int_equal(u->cands[1].bytes, 17408);
    assert_true(u->cands[0].err[RF_QMODE_MLX].sse == 0.01 && u->cands[1].err[RF_QMODE_MLX].max_abs == 0.0002);
    assert_int_equal(rf_profile_full_bytes(p), 65792);
    /* and saves as the current version, to the same records */
    char *t;
    size_t n;
    TU_OK(rf_profile_to_json(p, &t, &n, &err), &err);
    assert_non_null(strstr(t, "\"version\": 3"));
    rf_profile *q;
    TU_OK(rf_profile_from_json(t, n, "v3", &q, &err), &err);
    assert_profiles_equal(p, q);
    free(t);
    rf_profile_free(p);
    rf_profile_free(q);
}

/* Version 2 files (no "estimated" column, no opt_sample) still load: nothing estimated. */
static void test_profile_version2(void **state)
{
    (void)state;
    const char *v2 =
        "{\n  \"format\": \"ramfit-profile\", \"version\": 2,\n  \"ramfit_version\": \"0.1.0\",\n"
        "  \"model\": {\"name\": \"m\", \"architecture\": \"LlamaForCausalLM\", \"model_type\": \"llama\", \"fingerprint\": \"0123456789abcdef\",\n"
        "    \"config\": {\"hidden_size\": 64, \"intermediate_size\": 128, \"num_layers\": 1, \"num_heads\": 2, \"num_kv_heads\": 1, \"head_dim\": 32, "
        "\"vocab_size\": 256, \"tie_word_embeddings\": 1, \"num_experts\": 0, \"experts_per_tok\": 0, \"moe_intermediate_size\": 0},\n"
        "    \"files\": [[\"model.safetensors\", 70000]]},\n"
        "  \"modes\": [\"opt\"],\n  \"configs\": [[4, 32], [8, 64]],\n"
        "  \"unit_fields\": [\"name\", \"role\", \"layer\", \"n_layers\", \"members\", \"rows\", \"cols\", \"dtype\", \"sizes\", \"configs\", \"values\"],\n"
        "  \"other_fields\": [\"name\", \"role\", \"layer\", \"params\", \"dtype\", \"bytes\"],\n"
        "  \"totals\": {\"units\": 1, \"others\": 1, \"params\": 16448, \"bytes\": 33024},\n"
        "  \"units\": [\n    [\"model.embed_tokens\", \"embed\", -1, 1, 1, 256, 64, \"BF16\", \"F32\", 65600, "
        "[12.5, 0.0, 0.02, 0.1, 0.5, 0.0, 0.01, 0.003, 0.0001, 0.0002]]\n  ],\n"
        "  \"others\": [\n    [\"model.norm.weight\", \"norm\", -1, 64, \"F32\", 256]\n  ]\n}\n";
    rf_profile *p, *q;
    rf_err err;
    TU_OK(rf_profile_from_json(v2, strlen(v2), "v2", &p, &err), &err);
    const rf_punit *u = rf_profile_unit(p, 0);
    assert_int_equal(u->n_cands, 2);
    assert_int_equal(u->estimated, 0);
    assert_int_equal(rf_profile_opt_sample(p), 0);
    assert_int_equal(rf_profile_shard(p, NULL, NULL, NULL, NULL), 0);
    assert_true(u->cands[1].err[RF_QMODE_OPT].sse == 0.0001);
    char *t;
    size_t n;
    TU_OK(rf_profile_to_json(p, &t, &n, &err), &err);
    assert_non_null(strstr(t, "\"version\": 3"));
    TU_OK(rf_profile_from_json(t, n, "v3", &q, &err), &err);
    assert_profiles_equal(p, q);
    free(t);
    rf_profile_free(p);
    rf_profile_free(q);
}

/* ------------------------------------------------------------------ merging parts */

/* Part K of N of P: units [first, first + count), every other tensor, P's files and settings. */
static rf_profile *part_of(const rf_profile *p, int k, int n, uint64_t first, uint64_t count)
{
    rf_profile *q;
    rf_err err;
    TU_OK(rf_profile_create(rf_profile_model(p), rf_profile_modes(p), rf_profile_configs(p), &q, &err), &err);
    rf_profile_set_opt_sample(q, rf_profile_opt_sample(p));
    rf_profile_set_calibration(q, rf_profile_calibration(p));
    TU_OK(rf_profile_set_shard(q, k, n, first, rf_profile_unit_count(p), &err), &err);
    for (uint64_t f = 0; f < rf_profile_file_count(p); f++)
        TU_OK(rf_profile_add_file(q, rf_profile_file(p, f)->name, rf_profile_file(p, f)->bytes, &err), &err);
    for (uint64_t u = first; u < first + count; u++) TU_OK(rf_profile_add_unit(q, rf_profile_unit(p, u), &err), &err);
    for (uint64_t o = 0; o < rf_profile_other_count(p); o++) TU_OK(rf_profile_add_other(q, rf_profile_other(p, o), &err), &err);
    return q;
}

static void expect_merge_fails(const rf_profile *const *parts, size_t n, const char *need)
{
    rf_profile *m = (rf_profile *)1;
    rf_err err;
    rf_status s = rf_profile_merge(parts, n, NULL, &m, &err);
    if (s == RF_OK || !strstr(err.msg, need)) fail_msg("merge: got %s '%s', want an error containing '%s'", rf_status_name(s), s ? err.msg : "", need);
    assert_null(m);
}

/* Parts (saved, reloaded, in any order) merge into the profile they were cut from, byte for byte;
 * a missing, doubled, foreign or whole part is refused, naming what differs. */
static void test_profile_merge(void **state)
{
    (void)state;
    rf_psynth_opts so = {.n_layers = 3, .hidden = 128, .ffn = 384, .vocab = 512, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32,
                        .modes = 3, .spread = 0.5, .seed = 4};
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_synth(&so, &p, &err), &err);
    rf_profile_set_opt_sample(p, 4096);
    /* an activation-weighted analysis (analyse --stats): its "calibration" key survives the merge */
    rf_pcalib cal = {.weighted = 1, .text = "calib.txt", .tokens = 32768, .stats_checksum = 0x0123456789abcdefull};
    rf_profile_set_calibration(p, &cal);
    char *want, *got;
    void *wd, *gd;
    size_t wn, gn, wdn, gdn;
    TU_OK(rf_profile_to_parts(p, "x.bin", &want, &wn, &wd, &wdn, &err), &err);
    const uint64_t nu = rf_profile_unit_count(p);
    char *dir = tu_mkdtemp();
    static const int counts[] = {1, 2, 3, 7, 40};
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
        const int n = counts[ci];
        rf_profile *parts[40], *loaded[40];
        char names[40][600];
        const char *labels[40];
        for (int k = 0; k < n; k++) { /* uneven cuts, some parts empty when n > units */
            uint64_t a = nu * (uint64_t)k / (uint64_t)n, b = nu * (uint64_t)(k + 1) / (uint64_t)n;
            parts[k] = part_of(p, k + 1, n, a, b - a);
            int slot = n - 1 - k; /* given in reverse */
            snprintf(names[slot], sizeof names[slot], "%s/part%d.json", dir, k + 1);
            TU_OK(rf_profile_save(parts[k], names[slot], &err), &err);
        }
        for (int k = 0; k < n; k++) {
            TU_OK(rf_profile_load(names[k], &loaded[k], &err), &err);
            labels[k] = names[k];
        }
        rf_profile *m;
        TU_OK(rf_profile_merge((const rf_profile *const *)loaded, (size_t)n, labels, &m, &err), &err);
        TU_OK(rf_profile_to_parts(m, "x.bin", &got, &gn, &gd, &gdn, &err), &err);
        assert_int_equal(gn, wn);
        assert_memory_equal(got, want, wn);
        assert_int_equal(gdn, wdn);
        assert_memory_equal(gd, wd, wdn);
        free(got);
        free(gd);
        rf_profile_free(m);
        if (n == 3) {
            expect_merge_fails((const rf_profile *const *)loaded, 2, "give all 3 parts");
            const rf_profile *dup[3] = {loaded[0], loaded[0], loaded[1]};
            expect_merge_fails(dup, 3, "are both part");
            const rf_profile *whole[3] = {loaded[0], p, loaded[2]};
            expect_merge_fails(whole, 3, "is a whole profile");
            /* another checkpoint, another sampling, another cut */
            rf_pmodel pm = *rf_profile_model(p);
            pm.fingerprint ^= 1;
            rf_profile *foreign;
            TU_OK(rf_profile_create(&pm, rf_profile_modes(p), rf_profile_configs(p), &foreign, &err), &err);
            TU_OK(rf_profile_set_shard(foreign, 2, 3, nu / 3, nu, &err), &err);
            const rf_profile *fx[3] = {parts[0], foreign, parts[2]};
            expect_merge_fails(fx, 3, "fingerprint");
            rf_profile_free(foreign);
            rf_profile *other = part_of(p, 2, 3, nu / 3, 2 * nu / 3 - nu / 3);
            rf_profile_set_opt_sample(other, 512);
            const rf_profile *sx[3] = {parts[0], other, parts[2]};
            expect_merge_fails(sx, 3, "opt sampling");
            rf_profile_free(other);
            other = part_of(p, 2, 3, nu / 3 + 1, 2 * nu / 3 - nu / 3 - 1);
            const rf_profile *cx[3] = {parts[0], other, parts[2]};
            expect_merge_fails(cx, 3, "cut differently");
            rf_profile_free(other);
            other = part_of(p, 3, 3, 2 * nu / 3, nu - 2 * nu / 3 - 1);
            const rf_profile *tx[3] = {parts[0], parts[1], other};
            expect_merge_fails(tx, 3, "the parts hold");
            rf_profile_free(other);
            /* weighted by other statistics, or not weighted at all */
            other = part_of(p, 2, 3, nu / 3, 2 * nu / 3 - nu / 3);
            rf_pcalib c2 = cal;
            c2.stats_checksum ^= 1;
            rf_profile_set_calibration(other, &c2);
            const rf_profile *wx[3] = {parts[0], other, parts[2]};
            expect_merge_fails(wx, 3, "activation weighting");
            rf_pcalib none = {0};
            rf_profile_set_calibration(other, &none);
            expect_merge_fails(wx, 3, "activation weighting");
            rf_profile_free(other);
        }
        for (int k = 0; k < n; k++) {
            rf_profile_free(parts[k]);
            rf_profile_free(loaded[k]);
        }
    }
    /* a part is not something the planner may take as a whole profile */
    free(want);
    free(wd);
    rf_profile_free(p);
    tu_rmtree(dir);
    free(dir);
}

static void test_profile_size_and_totals(void **state)
{
    (void)state;
    rf_psynth_opts so = {.n_layers = 6, .hidden = 256, .ffn = 768, .vocab = 4096, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
                        .modes = 3, .spread = 0.5, .seed = 1};
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_synth(&so, &p, &err), &err);
    /* qwen3-dense-mini's shapes: 6,819,840 parameters of which 256*(1 + 6*2) + 64*2*6 are norms */
    assert_int_equal(rf_profile_param_count(p), 6819840);
    assert_int_equal(rf_profile_full_bytes(p), 2 * 6819840);
    assert_int_equal(rf_profile_other_bytes(p), 2 * (256 * 13 + 128 * 6));
    assert_int_equal(rf_profile_unit_count(p), 2 + 6 * 7);
    for (uint64_t i = 0; i < rf_profile_unit_count(p); i++) {
        const rf_punit *u = rf_profile_unit(p, i);
        for (int k = 1; k < u->n_cands; k++)
            assert_true(rf_cfg_index(u->cands[k - 1].bits, u->cands[k - 1].gs) < rf_cfg_index(u->cands[k].bits, u->cands[k].gs));
        assert_true(u->n_cands == 18);
        double d = rf_pcand_d(u, &u->cands[0], RF_QMODE_MLX);
        assert_true(d > 0 && d < 1);
        assert_true(fabs(rf_d_to_sqnr_db(0.1) - 10) < 1e-12);
    }
    rf_profile_free(p);
}

/* rf_profile_data_path (what plan checks before writing, so that -o never lands on a profile's
 * data file): read through the shared JSON loader, so a number jansson cannot hold does not hide
 * the data file (plan once parsed the index with plain jansson and then saw no data file). */
static void test_profile_data_path(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp(), path[4200], want[4300];
    snprintf(path, sizeof path, "%s/p.json", dir);
    static const char idx[] = "{\"x\": 1000000000000000019884624838656, \"data\": {\"file\": \"p.bin\", \"bytes\": 10}}";
    assert_int_equal(tu_write_file(path, idx, sizeof idx - 1), 0);
    char *dp = NULL;
    rf_err err;
    TU_OK(rf_profile_data_path(path, &dp, &err), &err);
    snprintf(want, sizeof want, "%s/p.bin", dir);
    assert_non_null(dp);
    assert_string_equal(dp, want);
    free(dp);
    static const char self[] = "{\"units\": []}";
    assert_int_equal(tu_write_file(path, self, sizeof self - 1), 0);
    TU_OK(rf_profile_data_path(path, &dp, &err), &err);
    assert_null(dp);
    static const char bad[] = "{\"data\": {\"file\": \"../p.bin\"}}";
    assert_int_equal(tu_write_file(path, bad, sizeof bad - 1), 0);
    assert_int_equal(rf_profile_data_path(path, &dp, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "plain file name"));
    tu_rmtree(dir);
    free(dir);
}

/* GGUF profiles (version 4): candidates are ggml types with their exact padded file bytes, the
 * file's fixed part counts as other bytes, both forms round-trip bit for bit, and what does not
 * fit a GGUF profile is refused naming the field. */
static void test_profile_gguf(void **state)
{
    (void)state;
    rf_pmodel m = {0};
    snprintf(m.name, sizeof m.name, "g");
    snprintf(m.architecture, sizeof m.architecture, "Qwen3ForCausalLM");
    snprintf(m.model_type, sizeof m.model_type, "qwen3");
    m.num_layers = 2;
    m.hidden_size = 512;
    m.fingerprint = 7;
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_create(&m, 1, (1u << RF_GCAND_N) - 1, &p, &err), &err);
    rf_profile_set_gguf(p, 12345);
    rf_profile_set_gguf_sample(p, 4096);
    assert_int_equal(rf_gcand_mask(512), 1u << rf_gcand_index(RF_GT_Q2_K) | 1u << rf_gcand_index(RF_GT_Q3_K) |
                                             1u << rf_gcand_index(RF_GT_Q4_K) | 1u << rf_gcand_index(RF_GT_Q5_K) |
                                             1u << rf_gcand_index(RF_GT_Q6_K) | 1u << rf_gcand_index(RF_GT_Q8_0));
    assert_int_equal(rf_gcand_mask(96), 1u << rf_gcand_index(RF_GT_Q4_0) | 1u << rf_gcand_index(RF_GT_Q5_0) |
                                            1u << rf_gcand_index(RF_GT_Q5_1) | 1u << rf_gcand_index(RF_GT_Q8_0));
    assert_int_equal(rf_gcand_mask(172), 0);
    /* 3 x 256 Q4_K: 3 rows of 144 bytes = 432, padded to 448 */
    assert_int_equal(rf_gguf_tensor_bytes(RF_GT_Q4_K, 1, 3, 256), 448);
    assert_int_equal(rf_gguf_tensor_bytes(RF_GT_Q4_K, 1, 3, 96), 0);
    rf_punit u;
    rf_punit_init(&u, "model.layers.0.self_attn.q_proj", RF_ROLE_ATTN_Q, 0, 2, 3, 256, 3 * 256, RF_DT_BF16);
    u.ssq = 10;
    for (int i = 0; i < RF_GCAND_N; i++) {
        int t = rf_gcand_type(i);
        if (!(rf_gcand_mask(256) >> i & 1)) continue;
        rf_qerr q = {0.1 / (i + 1), 10, 0.01f * (float)(i + 1)};
        TU_OK(rf_punit_add_gcand(&u, t, rf_gguf_tensor_bytes(t, 1, 3, 256), &q, &err), &err);
    }
    u.estimated = 1u << rf_gcand_index(RF_GT_Q4_K);
    assert_int_equal(rf_punit_add_gcand(&u, RF_GT_IQ4_XS, 1, NULL, &err), RF_ERR_INVALID);
    TU_OK(rf_profile_add_unit(p, &u, &err), &err);
    rf_punit k;
    rf_punit_init(&k, "model.layers.0.mlp.gate", RF_ROLE_ROUTER, 0, 2, 8, 512, 8 * 512, RF_DT_F32); /* kept F32 */
    TU_OK(rf_profile_add_unit(p, &k, &err), &err);
    assert_int_equal(rf_profile_other_bytes(p), 12345);
    assert_int_equal(rf_profile_full_bytes(p), 12345 + 3 * 256 * 2 + 8 * 512 * 4);
    /* an MLX candidate does not belong in a GGUF profile, nor a type the rows cannot take */
    rf_punit bad;
    rf_punit_init(&bad, "x", RF_ROLE_ATTN_K, 0, 2, 4, 512, 4 * 512, RF_DT_BF16);
    rf_qerr q1 = {1, 0, 1};
    TU_OK(rf_punit_add_cand(&bad, 4, 64, rf_quant_bytes(4 * 512, 4, 64, RF_DT_BF16), &q1, NULL, &err), &err);
    assert_int_equal(rf_profile_add_unit(p, &bad, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "an MLX candidate in a GGUF profile"));
    rf_punit_init(&bad, "y", RF_ROLE_ATTN_K, 0, 2, 4, 96, 4 * 96, RF_DT_BF16);
    TU_OK(rf_punit_add_gcand(&bad, RF_GT_Q4_K, 4 * 144, &q1, &err), &err);
    assert_int_equal(rf_profile_add_unit(p, &bad, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "Q4_K is not a candidate for rows of 96"));
    rf_punit_init(&bad, "r", RF_ROLE_ROUTER, 0, 2, 8, 256, 8 * 256, RF_DT_F32); /* llama-quantize never quantizes routers */
    TU_OK(rf_punit_add_gcand(&bad, RF_GT_Q8_0, rf_gguf_tensor_bytes(RF_GT_Q8_0, 1, 8, 256), &q1, &err), &err);
    assert_int_equal(rf_profile_add_unit(p, &bad, &err), RF_ERR_FORMAT);
    rf_punit_init(&bad, "z", RF_ROLE_ATTN_K, 0, 2, 3, 256, 3 * 256, RF_DT_BF16);
    TU_OK(rf_punit_add_gcand(&bad, RF_GT_Q4_K, 432, &q1, &err), &err); /* unpadded */
    assert_int_equal(rf_profile_add_unit(p, &bad, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "is not the size of Q4_K"));

    char *t1, *t2;
    size_t n1, n2;
    TU_OK(rf_profile_to_json(p, &t1, &n1, &err), &err);
    assert_non_null(strstr(t1, "\"version\": 4"));
    assert_non_null(strstr(t1, "\"modes\": [\"gguf\"]"));
    assert_non_null(strstr(t1, "\"gguf\": {\"fixed\": 12345, \"sample\": 4096}"));
    rf_profile *q;
    TU_OK(rf_profile_from_json(t1, n1, "g.json", &q, &err), &err);
    assert_true(rf_profile_is_gguf(q));
    assert_int_equal(rf_profile_gguf_fixed(q), 12345);
    assert_int_equal(rf_profile_gguf_sample(q), 4096);
    const rf_punit *r = rf_profile_unit(q, 0);
    assert_int_equal(r->n_cands, 6);
    assert_int_equal(r->cands[0].gtype, RF_GT_Q2_K);
    assert_int_equal(r->cands[2].gtype, RF_GT_Q4_K);
    assert_int_equal(r->cands[2].bits, 4);
    assert_int_equal(r->cands[2].gs, 256);
    assert_int_equal(r->cands[2].bytes, 448);
    assert_int_equal(r->estimated, 1u << rf_gcand_index(RF_GT_Q4_K));
    TU_OK(rf_profile_to_json(q, &t2, &n2, &err), &err);
    assert_int_equal(n1, n2);
    assert_memory_equal(t1, t2, n1);
    free(t2);
    rf_profile_free(q);
    /* the two-file form */
    char *dir = tu_mkdtemp(), path[512];
    snprintf(path, sizeof path, "%s/g.json", dir);
    TU_OK(rf_profile_save(p, path, &err), &err);
    TU_OK(rf_profile_load(path, &q, &err), &err);
    TU_OK(rf_profile_to_json(q, &t2, &n2, &err), &err);
    assert_int_equal(n1, n2);
    assert_memory_equal(t1, t2, n1);
    free(t2);
    rf_profile_free(q);
    tu_rmtree(dir);
    free(dir);
    /* refusals */
    expect_bad(t1, "\"modes\": [\"gguf\"]", "\"modes\": [\"mlx\"]", RF_ERR_FORMAT, "configs");
    expect_bad(t1, "\"version\": 4", "\"version\": 3", RF_ERR_FORMAT, "modes");
    expect_bad(t1, "\"Q2_K\", \"Q3_K\"", "\"Q3_K\", \"Q2_K\"", RF_ERR_FORMAT, "not in table order");
    expect_bad(t1, "\"Q2_K\", \"Q3_K\"", "\"IQ4_XS\", \"Q3_K\"", RF_ERR_FORMAT, "unknown GGUF candidate type");
    expect_bad(t1, "\"gguf\": {\"fixed\": 12345,", "\"gguf\": {\"fixed\": -1,", RF_ERR_FORMAT, "fixed");
    expect_bad(t1, "\"BF16\", \"gguf\"", "\"BF16\", \"BF16\"", RF_ERR_FORMAT, "sizes");
    free(t1);
    rf_profile_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_round_trip_exact),
        cmocka_unit_test(test_profile_save_empty),
        cmocka_unit_test(test_profile_validation),
        cmocka_unit_test(test_profile_version1),
        cmocka_unit_test(test_profile_version2),
        cmocka_unit_test(test_profile_data_path),
        cmocka_unit_test(test_profile_merge),
        cmocka_unit_test(test_profile_gguf),
        cmocka_unit_test(test_profile_size_and_totals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
