/* Model catalogue: config.json parsing for every family, tensor-name classification, units
 * (stacked experts) on real and hand-made checkpoints, the errors, and `ramfit inspect`. */
#include "testutil.h"
#include "arch/model_internal.h"

#include <math.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers */

static rf_status parse(const char *json, rf_config *c, rf_err *err)
{
    rf_err_clear(err);
    return rf_config_parse(json, "test/config.json", c, err);
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
}

typedef struct tspec {
    char name[160];
    rf_dtype dt;
    int ndim;
    uint64_t shape[3];
} tspec;
typedef struct tlist {
    tspec t[1024];
    int n;
} tlist;

static void add(tlist *l, rf_dtype dt, int ndim, uint64_t d0, uint64_t d1, uint64_t d2, const char *fmt, ...)
{
    assert_true(l->n < 1024);
    tspec *t = &l->t[l->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->dt = dt;
    t->ndim = ndim;
    t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2;
}

static int find_tensor(tlist *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->t[i].name, name)) return i;
    fail_msg("no tensor %s in the spec", name);
    return -1;
}

static void drop(tlist *l, const char *name)
{
    int i = find_tensor(l, name);
    memmove(&l->t[i], &l->t[i + 1], (size_t)(l->n - i - 1) * sizeof l->t[0]);
    l->n--;
}

/* Zero-filled checkpoint with the tensors of L (in that order) plus CONFIG, then rf_model_open. */
static rf_status open_synthetic(const char *dir, const char *config, const tlist *l, rf_model **m, rf_err *err)
{
    write_text(dir, "config.json", config);
    rf_stw_opts opts = {.basename = "model"};
    rf_stw *w = NULL;
    TU_OK(rf_stw_create(dir, &opts, &w, err), err);
    uint64_t maxb = 0;
    for (int i = 0; i < l->n; i++) {
        TU_OK(rf_stw_declare(w, l->t[i].name, l->t[i].dt, l->t[i].ndim, l->t[i].shape, err), err);
        uint64_t b = rf_dtype_size(l->t[i].dt);
        for (int d = 0; d < l->t[i].ndim; d++) b *= l->t[i].shape[d];
        if (b > maxb) maxb = b;
    }
    void *zeros = calloc(1, maxb ? maxb : 1);
    for (int i = 0; i < l->n; i++) {
        uint64_t b = rf_dtype_size(l->t[i].dt);
        for (int d = 0; d < l->t[i].ndim; d++) b *= l->t[i].shape[d];
        TU_OK(rf_stw_write(w, zeros, b, err), err);
    }
    free(zeros);
    TU_OK(rf_stw_finish(w, err), err);
    rf_stw_free(w);
    rf_err_clear(err);
    return rf_model_open(dir, m, err);
}

static int64_t tensor_index(const rf_model *m, const char *name)
{
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++)
        if (!strcmp(rf_model_tinfo(m, i)->t->name, name)) return (int64_t)i;
    return -1;
}

static const rf_tinfo *tinfo_named(const rf_model *m, const char *name)
{
    int64_t i = tensor_index(m, name);
    if (i < 0) fail_msg("tensor %s not in the catalogue", name);
    return rf_model_tinfo(m, (uint64_t)i);
}

static const rf_unit *unit_named(const rf_model *m, const char *name)
{
    int64_t u = rf_model_unit_find(m, name);
    if (u < 0) fail_msg("unit %s not in the catalogue", name);
    const rf_unit *un = rf_model_unit(m, (uint64_t)u);
    assert_string_equal(un->name, name);
    return un;
}

/* Invariants every catalogue must satisfy, whatever the model. */
static void check_invariants(const rf_model *m)
{
    uint64_t params = 0, unit_params = 0, nonunit_params = 0;
    int prev_first = -1;
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        int first = un->members[0];
        for (int k = 0; k < un->n_members; k++) {
            const rf_tinfo *ti = rf_model_tinfo(m, (uint64_t)un->members[k]);
            if (ti->unit != (int)u) fail_msg("tensor %s: unit %d, expected %d (%s)", ti->t->name, ti->unit, (int)u, un->name);
            assert_int_equal(ti->role, un->role);
            assert_int_equal(ti->layer, un->layer);
            /* per-expert tensors in expert order; a stacked bank is one tensor for every member */
            int stacked = un->n_members > 1 && un->members[0] == un->members[1];
            if (un->n_members > 1 && !stacked && ti->expert != k)
                fail_msg("unit %s member %d: tensor %s expert %d", un->name, k, ti->t->name, ti->expert);
            if (stacked) assert_int_equal(un->members[k], un->members[0]);
            if (un->members[k] < first) first = un->members[k];
        }
        assert_true(first > prev_first); /* units in tensor order of their first member */
        prev_first = first;
        unit_params += un->nparams;
        assert_int_equal(un->nparams, un->rows * un->cols * (un->n_experts ? (uint64_t)un->n_experts : 1));
        assert_int_equal(rf_model_unit_find(m, un->name), (int64_t)u);
    }
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        assert_ptr_equal(ti->t, rf_st_get(rf_model_st(m), i));
        params += ti->t->nelem;
        if (ti->unit < 0) nonunit_params += ti->t->nelem;
    }
    assert_int_equal(params, rf_model_param_count(m));
    assert_int_equal(unit_params + nonunit_params, params);
}

/* ------------------------------------------------------------------ names */

typedef struct name_case {
    const char *name;
    rf_role role;
    int layer, expert, stacked, aux, unit_weight;
    const char *module;
} name_case;

static void test_classify_names(void **state)
{
    (void)state;
    static const name_case cases[] = {
        {"model.embed_tokens.weight", RF_ROLE_EMBED, -1, -1, 0, 0, 1, "model.embed_tokens"},
        {"lm_head.weight", RF_ROLE_LM_HEAD, -1, -1, 0, 0, 1, "lm_head"},
        {"model.norm.weight", RF_ROLE_NORM, -1, -1, 0, 0, 0, "model.norm"},
        {"model.layers.0.input_layernorm.weight", RF_ROLE_NORM, 0, -1, 0, 0, 0, "model.layers.0.input_layernorm"},
        {"model.layers.12.post_attention_layernorm.weight", RF_ROLE_NORM, 12, -1, 0, 0, 0, NULL},
        {"model.layers.3.self_attn.q_proj.weight", RF_ROLE_ATTN_Q, 3, -1, 0, 0, 1, "model.layers.3.self_attn.q_proj"},
        {"model.layers.3.self_attn.k_proj.weight", RF_ROLE_ATTN_K, 3, -1, 0, 0, 1, NULL},
        {"model.layers.3.self_attn.v_proj.weight", RF_ROLE_ATTN_V, 3, -1, 0, 0, 1, NULL},
        {"model.layers.3.self_attn.o_proj.weight", RF_ROLE_ATTN_O, 3, -1, 0, 0, 1, NULL},
        {"model.layers.3.self_attn.q_proj.bias", RF_ROLE_BIAS, 3, -1, 0, 0, 0, "model.layers.3.self_attn.q_proj"},
        {"model.layers.3.self_attn.v_proj.bias", RF_ROLE_BIAS, 3, -1, 0, 0, 0, NULL},
        {"model.layers.3.self_attn.q_norm.weight", RF_ROLE_Q_NORM, 3, -1, 0, 0, 0, NULL},
        {"model.layers.3.self_attn.k_norm.weight", RF_ROLE_K_NORM, 3, -1, 0, 0, 0, NULL},
        {"model.layers.9.mlp.gate_proj.weight", RF_ROLE_MLP_GATE, 9, -1, 0, 0, 1, "model.layers.9.mlp.gate_proj"},
        {"model.layers.9.mlp.up_proj.weight", RF_ROLE_MLP_UP, 9, -1, 0, 0, 1, NULL},
        {"model.layers.9.mlp.down_proj.weight", RF_ROLE_MLP_DOWN, 9, -1, 0, 0, 1, NULL},
        {"model.layers.2.mlp.gate.weight", RF_ROLE_ROUTER, 2, -1, 0, 0, 1, "model.layers.2.mlp.gate"},
        {"model.layers.2.mlp.experts.17.gate_proj.weight", RF_ROLE_EXPERT_GATE, 2, 17, 0, 0, 1,
         "model.layers.2.mlp.switch_mlp.gate_proj"},
        {"model.layers.2.mlp.experts.0.up_proj.weight", RF_ROLE_EXPERT_UP, 2, 0, 0, 0, 1,
         "model.layers.2.mlp.switch_mlp.up_proj"},
        {"model.layers.2.mlp.experts.5.down_proj.weight", RF_ROLE_EXPERT_DOWN, 2, 5, 0, 0, 1,
         "model.layers.2.mlp.switch_mlp.down_proj"},
        {"model.layers.1.block_sparse_moe.gate.weight", RF_ROLE_ROUTER, 1, -1, 0, 0, 1,
         "model.layers.1.block_sparse_moe.gate"},
        {"model.layers.1.block_sparse_moe.experts.7.w1.weight", RF_ROLE_EXPERT_GATE, 1, 7, 0, 0, 1,
         "model.layers.1.block_sparse_moe.switch_mlp.gate_proj"},
        {"model.layers.1.block_sparse_moe.experts.7.w3.weight", RF_ROLE_EXPERT_UP, 1, 7, 0, 0, 1,
         "model.layers.1.block_sparse_moe.switch_mlp.up_proj"},
        {"model.layers.1.block_sparse_moe.experts.7.w2.weight", RF_ROLE_EXPERT_DOWN, 1, 7, 0, 0, 1,
         "model.layers.1.block_sparse_moe.switch_mlp.down_proj"},
        /* MLX layouts: stacked experts and quantized companions */
        {"model.layers.4.mlp.switch_mlp.down_proj.weight", RF_ROLE_EXPERT_DOWN, 4, -1, 1, 0, 1,
         "model.layers.4.mlp.switch_mlp.down_proj"},
        {"model.layers.4.block_sparse_moe.switch_mlp.up_proj.weight", RF_ROLE_EXPERT_UP, 4, -1, 1, 0, 1, NULL},
        {"model.layers.4.mlp.switch_mlp.down_proj.scales", RF_ROLE_EXPERT_DOWN, 4, -1, 1, 1, 0,
         "model.layers.4.mlp.switch_mlp.down_proj"},
        {"model.layers.4.self_attn.v_proj.biases", RF_ROLE_ATTN_V, 4, -1, 0, 1, 0, NULL},
        {"model.embed_tokens.scales", RF_ROLE_EMBED, -1, -1, 0, 1, 0, "model.embed_tokens"},
        {"lm_head.biases", RF_ROLE_LM_HEAD, -1, -1, 0, 1, 0, NULL},
        /* not ours, or malformed indices: OTHER, never an error */
        {"model.layers.0.self_attn.rotary_emb.inv_freq", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.01.mlp.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.-1.mlp.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.+1.mlp.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.1x.mlp.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers..mlp.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.99999999999999999999.mlp.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.2.mlp.experts.01.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.2.mlp.experts.1.w1.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.2.block_sparse_moe.experts.1.up_proj.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.2.mlp.up_proj.weight.extra", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.2.mlp.up_proj", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.2.input_layernorm.bias", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.embed_tokens.weightx", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"xmodel.embed_tokens.weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"model.layers.3.self_attn.q_proj.weight", RF_ROLE_ATTN_Q, 3, -1, 0, 0, 1, NULL},
        {"weight", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
        {"", RF_ROLE_OTHER, -1, -1, 0, 0, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const name_case *c = &cases[i];
        rf_name_info ni;
        /* the family whose names the case uses */
        rf_config fc;
        memset(&fc, 0, sizeof fc);
        fc.arch = strstr(c->name, "block_sparse_moe") ? RF_ARCH_MIXTRAL
                : strstr(c->name, "mlp.") || strstr(c->name, "_norm") ? RF_ARCH_QWEN3_MOE : RF_ARCH_LLAMA;
        rf_classify_name(&fc, c->name, &ni);
        if (ni.role != c->role || ni.layer != c->layer || ni.expert != c->expert || ni.stacked != c->stacked ||
            ni.quant_aux != c->aux || ni.unit_weight != c->unit_weight)
            fail_msg("%s: got role %s layer %d expert %d stacked %d aux %d unit %d", c->name, rf_role_name(ni.role),
                     ni.layer, ni.expert, ni.stacked, ni.quant_aux, ni.unit_weight);
        if (c->module) assert_string_equal(ni.module, c->module);
    }
    for (int r = 0; r < RF_ROLE_COUNT; r++) assert_string_not_equal(rf_role_name((rf_role)r), "unknown");
    assert_string_equal(rf_role_name(RF_ROLE_EXPERT_DOWN), "expert_down");
    assert_string_equal(rf_role_name(RF_ROLE_COUNT), "unknown");
}

/* ------------------------------------------------------------------ config.json */

static void test_config_llama(void **state)
{
    (void)state;
    rf_config c;
    rf_err err;
    /* Llama 3.1-style: rope_scaling llama3, eos list, no head_dim / kv heads default. */
    TU_OK(parse("{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 4096,"
                "\"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32,"
                "\"num_key_value_heads\": 8, \"vocab_size\": 128256, \"rms_norm_eps\": 1e-05,"
                "\"rope_theta\": 500000.0, \"max_position_embeddings\": 131072, \"bos_token_id\": 128000,"
                "\"eos_token_id\": [128001, 128008, 128009], \"torch_dtype\": \"bfloat16\","
                "\"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
                "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}}",
                &c, &err),
          &err);
    assert_int_equal(c.arch, RF_ARCH_LLAMA);
    assert_string_equal(rf_arch_name(c.arch), "llama");
    assert_string_equal(c.architecture, "LlamaForCausalLM");
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.num_kv_heads, 8);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.attention_bias, 0);
    assert_string_equal(c.rope.type, "llama3");
    assert_true(c.rope.factor == 8.0 && c.rope.low_freq_factor == 1.0 && c.rope.high_freq_factor == 4.0);
    assert_int_equal(c.rope.original_max_pos, 8192);
    assert_true(c.rope_theta == 500000.0 && c.rms_norm_eps == 1e-5);
    assert_int_equal(c.eos_token_id, 128001);
    assert_int_equal(c.bos_token_id, 128000);
    assert_int_equal(c.torch_dtype, RF_DT_BF16);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_int_equal(c.num_experts, 0);
    assert_int_equal(rf_config_layer_is_moe(&c, 0), 0);

    /* Minimal: defaults (kv heads = heads, head_dim = hidden/heads, no rope scaling, ids absent),
     * the "type" spelling of rope_scaling and the newer "dtype" key. */
    TU_OK(parse("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128,"
                "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100, \"dtype\": \"float16\","
                "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}, \"tie_word_embeddings\": true}",
                &c, &err),
          &err);
    assert_int_equal(c.num_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.eos_token_id, -1);
    assert_int_equal(c.torch_dtype, RF_DT_F16);
    assert_string_equal(c.rope.type, "linear");
    assert_true(c.rope.factor == 2.0);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_string_equal(c.architecture, "");
}

static void test_config_families(void **state)
{
    (void)state;
    rf_config c;
    rf_err err;
    TU_OK(parse("{\"model_type\": \"mistral\", \"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 5120,"
                "\"head_dim\": 128, \"intermediate_size\": 14336, \"num_hidden_layers\": 40,"
                "\"num_attention_heads\": 32, \"num_key_value_heads\": 8, \"vocab_size\": 131072,"
                "\"rope_theta\": 1000000.0, \"torch_dtype\": \"bfloat16\", \"eos_token_id\": 2}",
                &c, &err),
          &err);
    assert_int_equal(c.arch, RF_ARCH_MISTRAL);
    assert_int_equal(c.head_dim, 128); /* explicit head_dim, not hidden/heads = 160 */

    /* qwen2: q/k/v biases are always there, whatever attention_bias says. */
    TU_OK(parse("{\"model_type\": \"qwen2\", \"hidden_size\": 896, \"intermediate_size\": 4864,"
                "\"num_hidden_layers\": 24, \"num_attention_heads\": 14, \"num_key_value_heads\": 2,"
                "\"vocab_size\": 151936, \"tie_word_embeddings\": true, \"eos_token_id\": 151643,"
                "\"bos_token_id\": null, \"rope_theta\": 1000000.0, \"rope_scaling\": null}",
                &c, &err),
          &err);
    assert_int_equal(c.arch, RF_ARCH_QWEN2);
    assert_int_equal(c.attention_bias, 1);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.bos_token_id, -1);
    assert_string_equal(c.rope.type, "");

    TU_OK(parse("{\"model_type\": \"qwen3\", \"hidden_size\": 1024, \"head_dim\": 128, \"intermediate_size\": 3072,"
                "\"num_hidden_layers\": 28, \"num_attention_heads\": 16, \"num_key_value_heads\": 8,"
                "\"vocab_size\": 151936, \"attention_bias\": false, \"tie_word_embeddings\": true}",
                &c, &err),
          &err);
    assert_int_equal(c.arch, RF_ARCH_QWEN3);
    assert_int_equal(c.attention_bias, 0);

    /* Mixtral: num_local_experts; expert ffn is intermediate_size; its own defaults. */
    TU_OK(parse("{\"model_type\": \"mixtral\", \"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 4096,"
                "\"intermediate_size\": 14336, \"num_hidden_layers\": 32, \"num_attention_heads\": 32,"
                "\"num_key_value_heads\": 8, \"vocab_size\": 32000, \"num_local_experts\": 8,"
                "\"num_experts_per_tok\": 2}",
                &c, &err),
          &err);
    assert_int_equal(c.arch, RF_ARCH_MIXTRAL);
    assert_int_equal(c.num_experts, 8);
    assert_int_equal(c.experts_per_tok, 2);
    assert_int_equal(c.moe_intermediate_size, 14336);
    assert_int_equal(c.norm_topk_prob, 1);
    assert_true(c.rope_theta == 1e6 && c.rms_norm_eps == 1e-5);
    for (int l = 0; l < 32; l++) assert_int_equal(rf_config_layer_is_moe(&c, l), 1);
    assert_int_equal(rf_config_layer_is_moe(&c, 32), 0);

    /* qwen3_moe with mlp_only_layers and a sparse step: which layers carry experts. */
    TU_OK(parse("{\"model_type\": \"qwen3_moe\", \"hidden_size\": 2048, \"head_dim\": 128,"
                "\"intermediate_size\": 6144, \"moe_intermediate_size\": 768, \"num_hidden_layers\": 8,"
                "\"num_attention_heads\": 32, \"num_key_value_heads\": 4, \"vocab_size\": 151936,"
                "\"num_experts\": 128, \"num_experts_per_tok\": 8, \"norm_topk_prob\": true,"
                "\"decoder_sparse_step\": 2, \"mlp_only_layers\": [3, 100]}",
                &c, &err),
          &err);
    assert_int_equal(c.arch, RF_ARCH_QWEN3_MOE);
    assert_int_equal(c.num_experts, 128);
    assert_int_equal(c.moe_intermediate_size, 768);
    assert_int_equal(c.norm_topk_prob, 1);
    static const int moe[8] = {0, 1, 0, 0, 0, 1, 0, 1}; /* (l+1) % 2 == 0, minus layer 3 */
    for (int l = 0; l < 8; l++) assert_int_equal(rf_config_layer_is_moe(&c, l), moe[l]);

    /* The shared test models' configs load from disk. */
    const char *dir = tu_model_dir("stories260k");
    assert_non_null(dir);
    TU_OK(rf_config_load(dir, &c, &err), &err);
    assert_int_equal(c.hidden_size, 64);
    assert_int_equal(c.intermediate_size, 172);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_int_equal(c.torch_dtype, RF_DT_F32);
}

typedef struct bad_case {
    const char *json;
    rf_status code;
    const char *needle; /* must appear in the message */
} bad_case;

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, " \
             "\"num_attention_heads\": 4, \"vocab_size\": 100"

static void test_config_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"{\"model_type\": \"gemma3\", " BASE "}", RF_ERR_FORMAT, "text_config"},
        {"{\"model_type\": \"llama4\", \"text_config\": 3, " BASE "}", RF_ERR_FORMAT, "text_config"},
        {"{\"model_type\": \"llama\", " BASE ", \"hidden_act\": \"softplus\"}", RF_ERR_UNSUPPORTED, "softplus"},
        {"{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"rope_type\": \"longrope\", "
         "\"short_factor\": [1, 1], \"long_factor\": [2]}}", RF_ERR_FORMAT, "long_factor"},
        {"{\"model_type\": \"deepseek_v3\", " BASE ", \"kv_lora_rank\": 8, \"qk_nope_head_dim\": 8, "
         "\"qk_rope_head_dim\": 3, \"v_head_dim\": 8, \"n_routed_experts\": 4, \"moe_intermediate_size\": 8, "
         "\"num_experts_per_tok\": 2}", RF_ERR_FORMAT, "qk_rope_head_dim"},
        {"{\"model_type\": \"deepseek_v3\", " BASE ", \"kv_lora_rank\": 8, \"qk_nope_head_dim\": 8, "
         "\"qk_rope_head_dim\": 4, \"v_head_dim\": 8, \"n_routed_experts\": 6, \"n_group\": 4, "
         "\"moe_intermediate_size\": 8, \"num_experts_per_tok\": 2}", RF_ERR_FORMAT, "n_group"},
        {"{\"model_type\": \"llama\", " BASE ", \"quantization_config\": {\"quant_method\": \"gptq\"}}",
         RF_ERR_UNSUPPORTED, "gptq"},
        {"{\"model_type\": \"llama\", " BASE ", \"quantization_config\": {\"quant_method\": \"fp8\", "
         "\"weight_block_size\": [128]}}", RF_ERR_FORMAT, "weight_block_size"},
        {"{\"model_type\": \"gemma3_text\", " BASE ", \"use_bidirectional_attention\": true}", RF_ERR_UNSUPPORTED,
         "bidirectional"},
        {"{" BASE "}", RF_ERR_FORMAT, "model_type"},
        {"{\"model_type\": 7, " BASE "}", RF_ERR_FORMAT, "model_type"},
        {"{\"model_type\": \"llama\", \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"vocab_size\": 100}", RF_ERR_FORMAT, "'hidden_size' is missing"},
        {"{\"model_type\": \"llama\", \"hidden_size\": \"64\", \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"vocab_size\": 100}", RF_ERR_FORMAT, "hidden_size"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 64.5, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"vocab_size\": 100}", RF_ERR_FORMAT, "hidden_size"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 0, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"vocab_size\": 100}", RF_ERR_FORMAT, "hidden_size"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 99999999999, \"intermediate_size\": 128, "
         "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100}", RF_ERR_FORMAT, "hidden_size"},
        {"{\"model_type\": \"llama\", " BASE ", \"tie_word_embeddings\": 1}", RF_ERR_FORMAT, "tie_word_embeddings"},
        {"{\"model_type\": \"llama\", " BASE ", \"rope_theta\": \"1e4\"}", RF_ERR_FORMAT, "rope_theta"},
        {"{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": 5}", RF_ERR_FORMAT, "rope_scaling"},
        {"{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0,"
         "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}", RF_ERR_FORMAT, "low_freq_factor"},
        {"{\"model_type\": \"llama\", " BASE ", \"eos_token_id\": \"2\"}", RF_ERR_FORMAT, "eos_token_id"},
        {"{\"model_type\": \"llama\", " BASE ", \"architectures\": \"LlamaForCausalLM\"}", RF_ERR_FORMAT,
         "architectures"},
        {"{\"model_type\": \"llama\", " BASE ", \"num_key_value_heads\": 3}", RF_ERR_FORMAT, "num_key_value_heads"},
        {"{\"model_type\": \"llama\", \"hidden_size\": 66, \"intermediate_size\": 128, \"num_hidden_layers\": 2, "
         "\"num_attention_heads\": 4, \"vocab_size\": 100}", RF_ERR_FORMAT, "num_attention_heads"},
        {"{\"model_type\": \"mixtral\", " BASE ", \"num_experts_per_tok\": 2}", RF_ERR_FORMAT, "num_local_experts"},
        {"{\"model_type\": \"qwen3_moe\", " BASE ", \"num_experts\": 4, \"num_experts_per_tok\": 2}", RF_ERR_FORMAT,
         "moe_intermediate_size"},
        {"{\"model_type\": \"qwen3_moe\", " BASE ", \"num_experts\": 4, \"num_experts_per_tok\": 8, "
         "\"moe_intermediate_size\": 32}", RF_ERR_FORMAT, "num_experts_per_tok"},
        {"{\"model_type\": \"llama\", " BASE ",}", RF_ERR_FORMAT, "invalid JSON"},
        {"{\"model_type\": \"llama\", \"model_type\": \"llama\", " BASE "}", RF_ERR_FORMAT, "invalid JSON"},
        {"[1, 2]", RF_ERR_FORMAT, "not a JSON object"},
        {"", RF_ERR_FORMAT, "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rf_config c;
        rf_err err;
        rf_status st = parse(cases[i].json, &c, &err);
        if (st != cases[i].code)
            fail_msg("case %zu: got %s (%s), want %s", i, rf_status_name(st), err.msg, rf_status_name(cases[i].code));
        if (!strstr(err.msg, cases[i].needle)) fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, cases[i].needle);
        if (!strstr(err.msg, "test/config.json")) fail_msg("case %zu: message '%s' lacks the file", i, err.msg);
    }

    /* Files: missing config.json, missing directory, NULLs. */
    char *dir = tu_mkdtemp();
    rf_config c;
    rf_err err;
    assert_int_equal(rf_config_load(dir, &c, &err), RF_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "config.json"));
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    assert_int_equal(rf_config_load(missing, &c, &err), RF_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, missing));
    write_text(dir, "config.json", "{\"model_type\": \"phi3\"}");
    assert_int_equal(rf_config_load(dir, &c, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "hidden_size"));
    assert_non_null(strstr(err.msg, dir));
    rf_model *m = (rf_model *)&c;
    assert_int_equal(rf_model_open(dir, &m, &err), RF_ERR_FORMAT);
    assert_null(m);
    /* an unknown family parses (the generic path); without weights the model does not open */
    write_text(dir, "config.json", "{\"model_type\": \"falcon\", \"hidden_size\": 64}");
    TU_OK(rf_config_load(dir, &c, &err), &err);
    assert_int_equal(c.arch, RF_ARCH_GENERIC);
    assert_int_equal(rf_config_runnable(&c), 0);
    assert_int_equal(rf_model_open(dir, &m, &err), RF_ERR_NOT_FOUND);
    assert_int_equal(rf_config_parse(NULL, "x", &c, NULL), RF_ERR_INVALID);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ real models */

typedef struct real_case {
    const char *name;
    uint64_t params; /* models/README */
} real_case;

/* Tensors and units the config implies, counted independently of the catalogue. */
static void expected_counts(const rf_config *c, uint64_t *tensors, uint64_t *units, uint64_t *params)
{
    uint64_t H = c->hidden_size, V = c->vocab_size, hd = c->head_dim, Q = c->num_heads * hd,
             KV = c->num_kv_heads * hd, I = c->intermediate_size, MI = c->moe_intermediate_size,
             E = c->num_experts;
    int qk_norm = c->arch == RF_ARCH_QWEN3 || c->arch == RF_ARCH_QWEN3_MOE, untied = !c->tie_word_embeddings;
    *tensors = 2 + untied; /* embed, final norm, lm_head */
    *units = 1 + untied;
    *params = V * H * (1 + untied) + H;
    for (int l = 0; l < c->num_layers; l++) {
        int moe = rf_config_layer_is_moe(c, l);
        *tensors += 2 + 4 + (qk_norm ? 2 : 0) + (moe ? 1 + 3 * E : 3);
        *units += 4 + (moe ? 4 : 3);
        *params += 2 * H + H * Q + 2 * H * KV + Q * H + (qk_norm ? 2 * hd : 0) + (moe ? E * H + 3 * E * H * MI : 3 * H * I);
    }
}

static void check_real(const real_case *rc)
{
    const char *dir = tu_model_dir(rc->name);
    if (!dir) {
        printf("  (skip %s: not found)\n", rc->name);
        return;
    }
    rf_model *m = NULL;
    rf_err err;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    const rf_config *c = rf_model_config(m);
    uint64_t tensors, units, params;
    expected_counts(c, &tensors, &units, &params);
    assert_int_equal(rf_model_param_count(m), rc->params);
    assert_int_equal(params, rc->params);
    assert_int_equal(rf_model_tensor_count(m), tensors);
    assert_int_equal(rf_model_unit_count(m), units);
    assert_string_equal(rf_model_dir(m), dir);
    check_invariants(m);

    const rf_tinfo *ti = tinfo_named(m, "model.embed_tokens.weight");
    assert_int_equal(ti->role, RF_ROLE_EMBED);
    const rf_unit *un = unit_named(m, "model.embed_tokens");
    assert_int_equal(un->rows, (uint64_t)c->vocab_size);
    assert_int_equal(un->cols, (uint64_t)c->hidden_size);
    assert_int_equal(rf_model_unit_find(m, "lm_head") >= 0, !c->tie_word_embeddings);
    ti = tinfo_named(m, "model.norm.weight");
    assert_int_equal(ti->role, RF_ROLE_NORM);
    assert_int_equal(ti->unit, -1);
    ti = tinfo_named(m, "model.layers.1.self_attn.v_proj.weight");
    assert_int_equal(ti->role, RF_ROLE_ATTN_V);
    assert_int_equal(ti->layer, 1);
    un = rf_model_unit(m, (uint64_t)ti->unit);
    assert_string_equal(un->name, "model.layers.1.self_attn.v_proj");
    assert_int_equal(un->rows, (uint64_t)(c->num_kv_heads * c->head_dim));
    ti = tinfo_named(m, "model.layers.0.post_attention_layernorm.weight");
    assert_int_equal(ti->role, RF_ROLE_NORM);
    assert_int_equal(ti->layer, 0);
    rf_model_free(m);
}

static void test_real_dense(void **state)
{
    (void)state;
    static const real_case cases[] = {{"stories260k", 260032}, {"babyllama-tok105", 936448},
                                      {"qwen3-dense-mini", 6819840}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_real(&cases[i]);

    /* stories260k: ffn 172 is no multiple of 32, so down_proj cannot be group-quantized. */
    rf_model *m = NULL;
    rf_err err;
    TU_OK(rf_model_open(tu_model_dir("stories260k"), &m, &err), &err);
    uint64_t quantizable = 0;
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        assert_int_equal(un->quantizable, un->role != RF_ROLE_MLP_DOWN);
        assert_int_equal(un->dtype, RF_DT_F32);
        quantizable += un->quantizable != 0;
    }
    assert_int_equal(quantizable, rf_model_unit_count(m) - 5);
    const rf_unit *down = unit_named(m, "model.layers.4.mlp.down_proj");
    assert_int_equal(down->rows, 64);
    assert_int_equal(down->cols, 172);
    assert_int_equal(down->quantizable, 0);
    assert_int_equal(down->n_experts, 0);
    assert_int_equal(down->n_members, 1);
    assert_int_equal(rf_model_unit_find(m, "lm_head"), -1);
    assert_int_equal(rf_model_unit_find(m, "model.layers.5.mlp.down_proj"), -1);
    rf_model_free(m);

    const char *q = tu_model_dir("qwen3-dense-mini");
    if (!q) return;
    TU_OK(rf_model_open(q, &m, &err), &err);
    const rf_tinfo *ti = tinfo_named(m, "model.layers.5.self_attn.k_norm.weight");
    assert_int_equal(ti->role, RF_ROLE_K_NORM);
    assert_int_equal(ti->unit, -1);
    const rf_unit *lm = unit_named(m, "lm_head");
    assert_int_equal(lm->role, RF_ROLE_LM_HEAD);
    assert_int_equal(lm->dtype, RF_DT_BF16);
    assert_int_equal(lm->quantizable, 1);
    rf_model_free(m);
}

static void test_real_moe(void **state)
{
    (void)state;
    real_case rc = {"qwen3-moe-mini", 9186048};
    check_real(&rc);
    const char *dir = tu_model_dir(rc.name);
    if (!dir) {
        skip();
        return;
    }
    rf_model *m = NULL;
    rf_err err;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    const rf_config *c = rf_model_config(m);
    assert_int_equal(c->num_experts, 8);
    for (int l = 0; l < c->num_layers; l++) {
        static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
        static const rf_role roles[3] = {RF_ROLE_EXPERT_GATE, RF_ROLE_EXPERT_UP, RF_ROLE_EXPERT_DOWN};
        for (int p = 0; p < 3; p++) {
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.mlp.switch_mlp.%s", l, proj[p]);
            const rf_unit *un = unit_named(m, name);
            assert_int_equal(un->role, roles[p]);
            assert_int_equal(un->layer, l);
            assert_int_equal(un->n_members, 8);
            assert_int_equal(un->n_experts, 8);
            assert_int_equal(un->rows, 256);
            assert_int_equal(un->cols, 256);
            assert_int_equal(un->nparams, 8 * 256 * 256);
            assert_int_equal(un->quantizable, 1);
            for (int e = 0; e < 8; e++) {
                char want[160];
                snprintf(want, sizeof want, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, proj[p]);
                assert_string_equal(rf_model_tinfo(m, (uint64_t)un->members[e])->t->name, want);
            }
        }
        char name[160];
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate", l);
        const rf_unit *r = unit_named(m, name);
        assert_int_equal(r->role, RF_ROLE_ROUTER);
        assert_int_equal(r->rows, 8);
        assert_int_equal(r->cols, 256);
    }
    const rf_tinfo *ti = tinfo_named(m, "model.layers.3.mlp.experts.6.down_proj.weight");
    assert_int_equal(ti->role, RF_ROLE_EXPERT_DOWN);
    assert_int_equal(ti->layer, 3);
    assert_int_equal(ti->expert, 6);
    rf_model_free(m);
}

/* ------------------------------------------------------------------ hand-made MoE checkpoints */

enum { HID = 64, NH = 4, NKV = 2, HD = 16, VOC = 32, NL = 2, NE = 4 };

/* Experts declared in a scrambled order so member order must come from the expert index. */
static const int scramble[NE] = {2, 0, 3, 1};

static void attn_tensors(tlist *l, int layer, int qk_norm)
{
    add(l, RF_DT_BF16, 1, HID, 0, 0, "model.layers.%d.input_layernorm.weight", layer);
    add(l, RF_DT_BF16, 2, NH * HD, HID, 0, "model.layers.%d.self_attn.q_proj.weight", layer);
    add(l, RF_DT_BF16, 2, NKV * HD, HID, 0, "model.layers.%d.self_attn.k_proj.weight", layer);
    add(l, RF_DT_BF16, 2, NKV * HD, HID, 0, "model.layers.%d.self_attn.v_proj.weight", layer);
    add(l, RF_DT_BF16, 2, HID, NH * HD, 0, "model.layers.%d.self_attn.o_proj.weight", layer);
    if (qk_norm) {
        add(l, RF_DT_BF16, 1, HD, 0, 0, "model.layers.%d.self_attn.q_norm.weight", layer);
        add(l, RF_DT_BF16, 1, HD, 0, 0, "model.layers.%d.self_attn.k_norm.weight", layer);
    }
    add(l, RF_DT_BF16, 1, HID, 0, 0, "model.layers.%d.post_attention_layernorm.weight", layer);
}

static void moe_tensors(tlist *l, int mixtral, int stacked, uint64_t ffn)
{
    l->n = 0;
    add(l, RF_DT_BF16, 2, VOC, HID, 0, "model.embed_tokens.weight");
    for (int layer = 0; layer < NL; layer++) {
        attn_tensors(l, layer, !mixtral);
        const char *blk = mixtral ? "block_sparse_moe" : "mlp";
        add(l, RF_DT_BF16, 2, NE, HID, 0, "model.layers.%d.%s.gate.weight", layer, blk);
        if (stacked) {
            add(l, RF_DT_BF16, 3, NE, ffn, HID, "model.layers.%d.%s.switch_mlp.gate_proj.weight", layer, blk);
            add(l, RF_DT_BF16, 3, NE, HID, ffn, "model.layers.%d.%s.switch_mlp.down_proj.weight", layer, blk);
            add(l, RF_DT_BF16, 3, NE, ffn, HID, "model.layers.%d.%s.switch_mlp.up_proj.weight", layer, blk);
            continue;
        }
        for (int k = 0; k < NE; k++) {
            int e = scramble[k];
            add(l, RF_DT_BF16, 2, ffn, HID, 0, "model.layers.%d.%s.experts.%d.%s.weight", layer, blk, e,
                mixtral ? "w1" : "gate_proj");
            add(l, RF_DT_BF16, 2, HID, ffn, 0, "model.layers.%d.%s.experts.%d.%s.weight", layer, blk, e,
                mixtral ? "w2" : "down_proj");
            add(l, RF_DT_BF16, 2, ffn, HID, 0, "model.layers.%d.%s.experts.%d.%s.weight", layer, blk, e,
                mixtral ? "w3" : "up_proj");
        }
    }
    add(l, RF_DT_BF16, 1, HID, 0, 0, "model.norm.weight");
    add(l, RF_DT_BF16, 2, VOC, HID, 0, "lm_head.weight");
}

static const char *mixtral_cfg =
    "{\"model_type\": \"mixtral\", \"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 64,"
    "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
    "\"vocab_size\": 32, \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"torch_dtype\": \"bfloat16\"}";
static const char *qwen3_moe_cfg =
    "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"head_dim\": 16, \"intermediate_size\": 128,"
    "\"moe_intermediate_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
    "\"num_key_value_heads\": 2, \"vocab_size\": 32, \"num_experts\": 4, \"num_experts_per_tok\": 2,"
    "\"norm_topk_prob\": true, \"eos_token_id\": [5, 6]}";

static void check_moe_units(const rf_model *m, const char *blk, uint64_t ffn, int stacked)
{
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    check_invariants(m);
    /* per layer: 4 attention + router + 3 banks; plus embed and lm_head */
    assert_int_equal(rf_model_unit_count(m), 2 + NL * 8);
    for (int layer = 0; layer < NL; layer++) {
        char name[160];
        snprintf(name, sizeof name, "model.layers.%d.%s.gate", layer, blk);
        assert_int_equal(unit_named(m, name)->role, RF_ROLE_ROUTER);
        for (int p = 0; p < 3; p++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.switch_mlp.%s", layer, blk, proj[p]);
            const rf_unit *un = unit_named(m, name);
            assert_int_equal(un->role, RF_ROLE_EXPERT_GATE + p);
            assert_int_equal(un->n_experts, NE);
            assert_int_equal(un->n_members, NE); /* members are experts, stacked in one tensor or not */
            assert_int_equal(un->rows, p == 2 ? HID : ffn);
            assert_int_equal(un->cols, p == 2 ? ffn : HID);
            assert_int_equal(un->nparams, NE * ffn * HID);
            assert_int_equal(un->quantizable, (p == 2 ? ffn : HID) % 32 == 0);
            for (int k = 0; !stacked && k < NE; k++)
                assert_int_equal(rf_model_tinfo(m, (uint64_t)un->members[k])->expert, k);
        }
    }
}

static void test_synthetic_moe(void **state)
{
    (void)state;
    static tlist l;
    rf_err err;
    rf_model *m = NULL;
    char *dir = tu_mkdtemp();

    /* Mixtral naming: w1/w3/w2 -> gate/up/down, stacked as block_sparse_moe.switch_mlp. */
    moe_tensors(&l, 1, 0, 96);
    TU_OK(open_synthetic(dir, mixtral_cfg, &l, &m, &err), &err);
    check_moe_units(m, "block_sparse_moe", 96, 0);
    const rf_tinfo *ti = tinfo_named(m, "model.layers.1.block_sparse_moe.experts.3.w2.weight");
    assert_int_equal(ti->role, RF_ROLE_EXPERT_DOWN);
    assert_int_equal(ti->expert, 3);
    assert_int_equal(rf_model_param_count(m), (uint64_t)(2 * VOC * HID + HID + NL * (2 * HID + 2 * 64 * 64 + 2 * 32 * 64 +
                                                                               NE * HID + 3 * NE * 96 * HID)));
    rf_model_free(m);

    /* Qwen3-MoE naming. */
    moe_tensors(&l, 0, 0, 32);
    TU_OK(open_synthetic(dir, qwen3_moe_cfg, &l, &m, &err), &err);
    check_moe_units(m, "mlp", 32, 0);
    assert_int_equal(rf_model_config(m)->eos_token_id, 5);
    rf_model_free(m);

    /* Already-stacked (MLX) experts: one 3-D member per unit. */
    moe_tensors(&l, 0, 1, 32);
    TU_OK(open_synthetic(dir, qwen3_moe_cfg, &l, &m, &err), &err);
    check_moe_units(m, "mlp", 32, 1);
    rf_model_free(m);

    /* A missing expert names the tensor that should be there. */
    moe_tensors(&l, 0, 0, 32);
    drop(&l, "model.layers.1.mlp.experts.2.up_proj.weight");
    assert_int_equal(open_synthetic(dir, qwen3_moe_cfg, &l, &m, &err), RF_ERR_FORMAT);
    assert_null(m);
    if (!strstr(err.msg, "model.layers.1.mlp.experts.2.up_proj.weight")) fail_msg("message: %s", err.msg);

    moe_tensors(&l, 1, 0, 96);
    drop(&l, "model.layers.0.block_sparse_moe.experts.0.w3.weight");
    assert_int_equal(open_synthetic(dir, mixtral_cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.layers.0.block_sparse_moe.experts.0.w3.weight")) fail_msg("message: %s", err.msg);

    /* An expert whose dtype differs from its siblings. */
    moe_tensors(&l, 0, 0, 32);
    l.t[find_tensor(&l, "model.layers.0.mlp.experts.3.down_proj.weight")].dt = RF_DT_F16;
    assert_int_equal(open_synthetic(dir, qwen3_moe_cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.layers.0.mlp.experts.3.down_proj.weight")) fail_msg("message: %s", err.msg);

    /* An expert whose shape differs (and so disagrees with config.json). */
    moe_tensors(&l, 0, 0, 32);
    l.t[find_tensor(&l, "model.layers.1.mlp.experts.1.gate_proj.weight")].shape[0] = 64;
    assert_int_equal(open_synthetic(dir, qwen3_moe_cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.layers.1.mlp.experts.1.gate_proj.weight")) fail_msg("message: %s", err.msg);

    /* An expert index beyond num_experts. */
    moe_tensors(&l, 0, 0, 32);
    add(&l, RF_DT_BF16, 2, 32, HID, 0, "model.layers.0.mlp.experts.4.gate_proj.weight");
    assert_int_equal(open_synthetic(dir, qwen3_moe_cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "experts.4.gate_proj")) fail_msg("message: %s", err.msg);

    /* Both stacked and per-expert tensors for one bank. */
    moe_tensors(&l, 0, 0, 32);
    add(&l, RF_DT_BF16, 3, NE, 32, HID, "model.layers.0.mlp.switch_mlp.up_proj.weight");
    assert_int_equal(open_synthetic(dir, qwen3_moe_cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.layers.0.mlp.switch_mlp.up_proj")) fail_msg("message: %s", err.msg);

    tu_rmtree(dir);
    free(dir);
}

/* Dense checkpoints with config mismatches, extra tensors and qwen2 biases. */
static void test_synthetic_dense(void **state)
{
    (void)state;
    static tlist l;
    rf_err err;
    rf_model *m = NULL;
    char *dir = tu_mkdtemp();
    const char *cfg = "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                      "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                      "\"vocab_size\": 32, \"tie_word_embeddings\": true}";
    l.n = 0;
    add(&l, RF_DT_F16, 2, VOC, HID, 0, "model.embed_tokens.weight");
    for (int layer = 0; layer < NL; layer++) {
        attn_tensors(&l, layer, 0);
        add(&l, RF_DT_F16, 1, NH * HD, 0, 0, "model.layers.%d.self_attn.q_proj.bias", layer);
        add(&l, RF_DT_F16, 1, NKV * HD, 0, 0, "model.layers.%d.self_attn.k_proj.bias", layer);
        add(&l, RF_DT_F16, 1, NKV * HD, 0, 0, "model.layers.%d.self_attn.v_proj.bias", layer);
        add(&l, RF_DT_F16, 2, 96, HID, 0, "model.layers.%d.mlp.gate_proj.weight", layer);
        add(&l, RF_DT_F16, 2, 96, HID, 0, "model.layers.%d.mlp.up_proj.weight", layer);
        add(&l, RF_DT_F16, 2, HID, 96, 0, "model.layers.%d.mlp.down_proj.weight", layer);
    }
    add(&l, RF_DT_F16, 1, HID, 0, 0, "model.norm.weight");
    add(&l, RF_DT_F32, 1, 8, 0, 0, "model.layers.0.self_attn.rotary_emb.inv_freq"); /* unknown: kept */
    TU_OK(open_synthetic(dir, cfg, &l, &m, &err), &err);
    check_invariants(m);
    assert_int_equal(rf_model_unit_count(m), 1 + NL * 7);
    assert_int_equal(rf_model_tensor_count(m), (uint64_t)l.n);
    const rf_tinfo *ti = tinfo_named(m, "model.layers.1.self_attn.k_proj.bias");
    assert_int_equal(ti->role, RF_ROLE_BIAS);
    assert_int_equal(ti->layer, 1);
    assert_int_equal(ti->unit, -1);
    ti = tinfo_named(m, "model.layers.0.self_attn.rotary_emb.inv_freq");
    assert_int_equal(ti->role, RF_ROLE_OTHER);
    assert_int_equal(ti->unit, -1);
    assert_int_equal(unit_named(m, "model.layers.1.mlp.down_proj")->cols, 96);
    assert_int_equal(unit_named(m, "model.layers.1.mlp.down_proj")->quantizable, 1); /* 96 = 3 * 32 */
    rf_model_free(m);

    /* embed shape disagrees with vocab_size */
    l.t[find_tensor(&l, "model.embed_tokens.weight")].shape[0] = VOC + 1;
    assert_int_equal(open_synthetic(dir, cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.embed_tokens.weight")) fail_msg("message: %s", err.msg);
    l.t[find_tensor(&l, "model.embed_tokens.weight")].shape[0] = VOC;

    /* a layer beyond num_hidden_layers */
    add(&l, RF_DT_F16, 1, HID, 0, 0, "model.layers.2.input_layernorm.weight");
    assert_int_equal(open_synthetic(dir, cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.layers.2.input_layernorm.weight")) fail_msg("message: %s", err.msg);
    l.n--;

    /* a missing projection */
    drop(&l, "model.layers.1.self_attn.o_proj.weight");
    assert_int_equal(open_synthetic(dir, cfg, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "o_proj")) fail_msg("message: %s", err.msg);

    /* the config promises what the tensors lack: one check for every command (inspect, analyse,
     * quantize and the engine all open the model through the catalogue) */
    l.n = 0;
    add(&l, RF_DT_F16, 2, VOC, HID, 0, "model.embed_tokens.weight");
    add(&l, RF_DT_F16, 1, HID, 0, 0, "model.norm.weight");
    for (int layer = 0; layer < NL; layer++) {
        attn_tensors(&l, layer, 0);
        add(&l, RF_DT_F16, 2, 96, HID, 0, "model.layers.%d.mlp.gate_proj.weight", layer);
        add(&l, RF_DT_F16, 2, 96, HID, 0, "model.layers.%d.mlp.up_proj.weight", layer);
        add(&l, RF_DT_F16, 2, HID, 96, 0, "model.layers.%d.mlp.down_proj.weight", layer);
    }
    const char *biased = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                         "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                         "\"vocab_size\": 32, \"tie_word_embeddings\": true, \"attention_bias\": true}";
    assert_int_equal(open_synthetic(dir, biased, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.layers.0.self_attn.q_proj.bias") || !strstr(err.msg, "attention_bias"))
        fail_msg("message: %s", err.msg);
    const char *mlpb = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                       "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                       "\"vocab_size\": 32, \"tie_word_embeddings\": true, \"mlp_bias\": true}";
    assert_int_equal(open_synthetic(dir, mlpb, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "mlp.gate_proj.bias") || !strstr(err.msg, "mlp_bias")) fail_msg("message: %s", err.msg);
    const char *q3 = "{\"model_type\": \"qwen3\", \"hidden_size\": 64, \"intermediate_size\": 96, \"head_dim\": 16,"
                     "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                     "\"vocab_size\": 32, \"tie_word_embeddings\": true}";
    assert_int_equal(open_synthetic(dir, q3, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "model.layers.0.self_attn.q_norm")) fail_msg("message: %s", err.msg);
    /* with them, the same configs open */
    for (int layer = 0; layer < NL; layer++) {
        add(&l, RF_DT_BF16, 1, HD, 0, 0, "model.layers.%d.self_attn.q_norm.weight", layer);
        add(&l, RF_DT_BF16, 1, HD, 0, 0, "model.layers.%d.self_attn.k_norm.weight", layer);
    }
    TU_OK(open_synthetic(dir, q3, &l, &m, &err), &err);
    rf_model_free(m);
    for (int layer = 0; layer < NL; layer++) {
        add(&l, RF_DT_F16, 1, NH * HD, 0, 0, "model.layers.%d.self_attn.q_proj.bias", layer);
        add(&l, RF_DT_F16, 1, NKV * HD, 0, 0, "model.layers.%d.self_attn.k_proj.bias", layer);
        add(&l, RF_DT_F16, 1, NKV * HD, 0, 0, "model.layers.%d.self_attn.v_proj.bias", layer);
        add(&l, RF_DT_F16, 1, HID, 0, 0, "model.layers.%d.self_attn.o_proj.bias", layer);
    }
    TU_OK(open_synthetic(dir, biased, &l, &m, &err), &err);
    rf_model_free(m);
    /* ... and biases the config does not have are refused too: transformers would drop them, mlx-lm's
     * strict load would fail on them */
    assert_int_equal(open_synthetic(dir, q3, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "q_proj.bias") || !strstr(err.msg, "attention_bias")) fail_msg("message: %s", err.msg);

    /* untied config without lm_head */
    l.n = 0;
    add(&l, RF_DT_F16, 2, VOC, HID, 0, "model.embed_tokens.weight");
    const char *untied = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 96,"
                         "\"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"vocab_size\": 32}";
    assert_int_equal(open_synthetic(dir, untied, &l, &m, &err), RF_ERR_FORMAT);
    if (!strstr(err.msg, "lm_head")) fail_msg("message: %s", err.msg);

    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ views */

static float bf16_at(const rf_tensor *t, uint64_t i) { return rf_bf16_to_f32(((const uint16_t *)t->data)[i]); }

/* Members read through views equal their definition on the source tensors: llama4's fused,
 * transposed experts, DeepSeek's per-head split of kv_b_proj, FP8 blocks times their scales; in
 * every output dtype and for row ranges that cut the read-out tiles. */
static void test_views(void **state)
{
    (void)state;
    char dir[4200];
    rf_err err;
    rf_model *m;
    snprintf(dir, sizeof dir, "%s/tests/fixtures/arch/llama4_text", RF_SOURCE_DIR);
    TU_OK(rf_model_open(dir, &m, &err), &err);
    const rf_tensor *gu = rf_st_find(rf_model_st(m), "model.layers.1.feed_forward.experts.gate_up_proj");
    const rf_tensor *dn = rf_st_find(rf_model_st(m), "model.layers.1.feed_forward.experts.down_proj");
    assert_non_null(gu);
    const uint64_t E = gu->shape[0], H = gu->shape[1], I2 = gu->shape[2], I = I2 / 2;
    const char *names[3] = {"model.layers.1.feed_forward.experts.gate_proj", "model.layers.1.feed_forward.experts.up_proj",
                            "model.layers.1.feed_forward.experts.down_proj"};
    for (int p = 0; p < 3; p++) {
        int64_t ui = rf_model_unit_find(m, names[p]);
        assert_true(ui >= 0);
        const rf_unit *u = rf_model_unit(m, (uint64_t)ui);
        const rf_mview *v = rf_model_unit_views(m, (uint64_t)ui);
        assert_int_equal(u->n_members, (int)E);
        assert_int_equal(u->rows, p == 2 ? H : I);
        assert_int_equal(u->cols, p == 2 ? I : H);
        assert_int_equal(u->transformed, 1);
        assert_null(rf_view_direct(&v[0], 0));
        float *f = malloc(u->rows * u->cols * sizeof *f);
        uint16_t *b = malloc(u->rows * u->cols * 2);
        for (uint64_t e = 0; e < E; e++) {
            /* rows 3..(rows-2): not a whole number of 16-row tiles */
            uint64_t r0 = 3, n = u->rows - 5;
            TU_OK(rf_view_read(&v[e], r0, n, RF_DT_F32, f, &err), &err);
            TU_OK(rf_view_read(&v[e], r0, n, RF_DT_BF16, b, &err), &err);
            for (uint64_t r = 0; r < n; r++)
                for (uint64_t c = 0; c < u->cols; c++) {
                    /* gate/up: W[e][r][c] = gate_up[e][c][r (+ I)]; down: W[e][r][c] = down[e][c][r] */
                    float want = p == 2 ? bf16_at(dn, (e * I + c) * H + r0 + r)
                                        : bf16_at(gu, (e * H + c) * I2 + (p ? I : 0) + r0 + r);
                    assert_true(f[r * u->cols + c] == want);
                    assert_true(rf_bf16_to_f32(b[r * u->cols + c]) == want);
                }
        }
        free(f);
        free(b);
    }
    rf_model_free(m);

    snprintf(dir, sizeof dir, "%s/tests/fixtures/arch/deepseek_v3", RF_SOURCE_DIR);
    TU_OK(rf_model_open(dir, &m, &err), &err);
    const rf_config *c = rf_model_config(m);
    const rf_tensor *kvb = rf_st_find(rf_model_st(m), "model.layers.0.self_attn.kv_b_proj.weight");
    uint64_t nope = (uint64_t)c->qk_nope_head_dim, vh = (uint64_t)c->v_head_dim, kvl = (uint64_t)c->kv_lora_rank;
    int64_t k = rf_model_unit_find(m, "model.layers.0.self_attn.embed_q");
    int64_t vv = rf_model_unit_find(m, "model.layers.0.self_attn.unembed_out");
    assert_true(k >= 0 && vv >= 0);
    assert_int_equal(rf_model_unit(m, (uint64_t)k)->rows, kvl);
    assert_int_equal(rf_model_unit(m, (uint64_t)k)->cols, nope);
    assert_int_equal(rf_model_unit(m, (uint64_t)vv)->rows, vh);
    assert_int_equal(rf_model_unit(m, (uint64_t)vv)->cols, kvl);
    float *f = malloc(kvl * kvl * sizeof *f);
    for (int h = 0; h < c->num_heads; h++) {
        const rf_mview *vk = &rf_model_unit_views(m, (uint64_t)k)[h], *vo = &rf_model_unit_views(m, (uint64_t)vv)[h];
        TU_OK(rf_view_read(vk, 0, kvl, RF_DT_F32, f, &err), &err);
        for (uint64_t r = 0; r < kvl; r++)
            for (uint64_t j = 0; j < nope; j++) /* embed_q[h][r][j] = kv_b[h (nope + v) + j][r] */
                assert_true(f[r * nope + j] == bf16_at(kvb, ((uint64_t)h * (nope + vh) + j) * kvl + r));
        TU_OK(rf_view_read(vo, 0, vh, RF_DT_F32, f, &err), &err);
        for (uint64_t r = 0; r < vh; r++)
            for (uint64_t j = 0; j < kvl; j++) /* unembed_out[h][r][j] = kv_b[h (nope + v) + nope + r][j] */
                assert_true(f[r * kvl + j] == bf16_at(kvb, ((uint64_t)h * (nope + vh) + nope + r) * kvl + j));
    }
    free(f);
    rf_model_free(m);

    /* FP8: q * scale_inv[R / 32][C / 32] */
    snprintf(dir, sizeof dir, "%s/tests/fixtures/arch/deepseek_v3_fp8", RF_SOURCE_DIR);
    TU_OK(rf_model_open(dir, &m, &err), &err);
    int64_t o = rf_model_unit_find(m, "model.layers.0.mlp.down_proj");
    const rf_mview *vf = rf_model_unit_views(m, (uint64_t)o);
    const rf_tensor *q = vf->t, *sc = vf->scale;
    assert_int_equal(q->dtype, RF_DT_F8_E4M3);
    assert_non_null(sc);
    assert_int_equal(rf_view_dtype(vf), RF_DT_F32);
    uint64_t R = q->shape[0], C = q->shape[1], nsc = (C + 31) / 32;
    f = malloc(R * C * sizeof *f);
    TU_OK(rf_view_read(vf, 0, R, RF_DT_F32, f, &err), &err);
    for (uint64_t r = 0; r < R; r++)
        for (uint64_t j = 0; j < C; j++) {
            uint8_t b8 = ((const uint8_t *)q->data)[r * C + j];
            int e = (b8 >> 3) & 15, mt = b8 & 7;
            double mag = e ? ldexp(1 + mt / 8.0, e - 7) : ldexp(mt / 8.0, -6);
            double want = (b8 & 0x80 ? -mag : mag) * ((const float *)sc->data)[(r / 32) * nsc + j / 32];
            assert_true(f[r * C + j] == (float)want);
        }
    free(f);
    rf_model_free(m);
}

/* ------------------------------------------------------------------ CLI */

static void test_cli_inspect(void **state)
{
    (void)state;
    const char *dir = tu_model_dir("stories260k");
    char args[4300], *out = NULL, *out2 = NULL;
    snprintf(args, sizeof args, "inspect '%s'", dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    if (!strstr(out, "260,032")) fail_msg("inspect output lacks 260,032:\n%s", out);
    assert_non_null(strstr(out, "LlamaForCausalLM"));
    assert_non_null(strstr(out, "36 quantization units (31 quantizable)"));
    assert_int_equal(tu_run_cli(args, &out2), 0);
    assert_string_equal(out, out2); /* deterministic */
    free(out);
    free(out2);

    snprintf(args, sizeof args, "inspect --json '%s'", dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    assert_non_null(strstr(out, "\"parameters\": 260032"));
    json_error_t je;
    json_t *root = json_loads(out, 0, &je);
    if (!root) fail_msg("inspect --json is not JSON (%s):\n%s", je.text, out);
    assert_int_equal(json_integer_value(json_object_get(root, "parameters")), 260032);
    assert_int_equal(json_integer_value(json_object_get(root, "units")), 36);
    assert_int_equal(json_integer_value(json_object_get(root, "quantizable_units")), 31);
    assert_int_equal(json_integer_value(json_object_get(root, "tensors")), 47);
    json_t *cfg = json_object_get(root, "config");
    assert_int_equal(json_integer_value(json_object_get(cfg, "intermediate_size")), 172);
    assert_true(json_is_true(json_object_get(cfg, "tie_word_embeddings")));
    json_t *bd = json_object_get(root, "by_dtype");
    assert_int_equal(json_array_size(bd), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(bd, 0), "bytes")), 260032 * 4);
    json_decref(root);
    free(out);

    snprintf(args, sizeof args, "inspect '%s' --verbose --json", dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    root = json_loads(out, 0, &je);
    assert_non_null(root);
    assert_int_equal(json_array_size(json_object_get(root, "tensor_list")), 47);
    assert_int_equal(json_array_size(json_object_get(root, "unit_list")), 36);
    json_decref(root);
    free(out);

    snprintf(args, sizeof args, "inspect --verbose '%s'", dir);
    assert_int_equal(tu_run_cli(args, &out), 0);
    assert_non_null(strstr(out, "model.layers.4.mlp.down_proj.weight"));
    free(out);

    /* errors: missing dir, missing config.json, unsupported architecture, usage */
    char *tmp = tu_mkdtemp();
    snprintf(args, sizeof args, "inspect '%s/none'", tmp);
    assert_int_equal(tu_run_cli(args, &out), 1);
    assert_non_null(strstr(out, "does not exist"));
    free(out);
    snprintf(args, sizeof args, "inspect '%s'", tmp);
    assert_int_equal(tu_run_cli(args, &out), 1);
    assert_non_null(strstr(out, "config.json"));
    free(out);
    write_text(tmp, "config.json", "{\"model_type\": \"falcon\"}");
    assert_int_equal(tu_run_cli(args, &out), 1);
    assert_non_null(strstr(out, "safetensors"));
    free(out);
    assert_int_equal(tu_run_cli("inspect", &out), 2);
    free(out);
    assert_int_equal(tu_run_cli("inspect --bogus x", &out), 2);
    free(out);
    assert_int_equal(tu_run_cli("inspect --help", &out), 0);
    assert_non_null(strstr(out, "--json"));
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_names),  cmocka_unit_test(test_config_llama),
        cmocka_unit_test(test_config_families), cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_real_dense),      cmocka_unit_test(test_real_moe),
        cmocka_unit_test(test_synthetic_moe),   cmocka_unit_test(test_synthetic_dense),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_cli_inspect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
