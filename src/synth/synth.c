/* Synthetic checkpoints: the tensor names, shapes and config.json of a real architecture, with
 * weights that look like trained ones to a quantizer (scale varies by row, heavy tails, a few
 * large input channels in some layers), for tests and benchmarks at any size.
 *
 * Every value is a pure function of (seed, tensor name, element index) through a counter-based
 * generator: a 64-bit mix of the counter gives a uniform, which is mapped through a tabulated
 * inverse CDF (piecewise linear on a log-spaced grid of tail probabilities, so tails down to
 * p = 2^-33 are resolved). Tensors are produced in row blocks in parallel and written in order. */
#include "arch/family.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ presets (published configs) */

/* A preset is the published config.json of a model (its text part for multimodal wrappers), with
 * the keys that scale with --scale named. The tensor list comes from the family's table
 * (src/arch/), so names and shapes are the ones the catalogue reads. */
typedef struct preset {
    const char *name, *arch;    /* preset name, architectures[0] */
    const char *wrapper;        /* multimodal wrapper model_type (text under text_config), or NULL */
    const char *config;         /* the text config as JSON */
    const char *scaled;         /* space-separated size keys that scale with --scale (besides hidden/intermediate) */
    int fp8;                    /* weights in FP8 with 128x128 block scales, as published */
    int bos, eos;
} preset;

#define QWEN3(h, i, l, q, kv, tie) "{\"model_type\":\"qwen3\",\"hidden_size\":" #h ",\"intermediate_size\":" #i \
    ",\"num_hidden_layers\":" #l ",\"num_attention_heads\":" #q ",\"num_key_value_heads\":" #kv ",\"head_dim\":128," \
    "\"vocab_size\":151936,\"tie_word_embeddings\":" #tie ",\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-6," \
    "\"rope_theta\":1000000,\"max_position_embeddings\":40960,\"attention_bias\":false}"
#define LLAMA3(h, i, l, q, kv, hd, tie, mp, rs) "{\"model_type\":\"llama\",\"hidden_size\":" #h ",\"intermediate_size\":" #i \
    ",\"num_hidden_layers\":" #l ",\"num_attention_heads\":" #q ",\"num_key_value_heads\":" #kv ",\"head_dim\":" #hd \
    ",\"vocab_size\":128256,\"tie_word_embeddings\":" #tie ",\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-5," \
    "\"rope_theta\":500000,\"max_position_embeddings\":" #mp ",\"attention_bias\":false,\"mlp_bias\":false" rs "}"
#define L31(f) ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":" #f ",\"low_freq_factor\":1,\"high_freq_factor\":4," \
    "\"original_max_position_embeddings\":8192}"

static const preset presets[] = {
    {"qwen3-0.6b", "Qwen3ForCausalLM", NULL, QWEN3(1024, 3072, 28, 16, 8, true), "", 0, 151643, 151645},
    {"qwen3-1.7b", "Qwen3ForCausalLM", NULL, QWEN3(2048, 6144, 28, 16, 8, true), "", 0, 151643, 151645},
    {"qwen3-4b", "Qwen3ForCausalLM", NULL, QWEN3(2560, 9728, 36, 32, 8, true), "", 0, 151643, 151645},
    {"qwen3-8b", "Qwen3ForCausalLM", NULL, QWEN3(4096, 12288, 36, 32, 8, false), "", 0, 151643, 151645},
    {"qwen3-14b", "Qwen3ForCausalLM", NULL, QWEN3(5120, 17408, 40, 40, 8, false), "", 0, 151643, 151645},
    {"qwen3-32b", "Qwen3ForCausalLM", NULL, QWEN3(5120, 25600, 64, 64, 8, false), "", 0, 151643, 151645},
    {"qwen3-30b-a3b", "Qwen3MoeForCausalLM", NULL,
     "{\"model_type\":\"qwen3_moe\",\"hidden_size\":2048,\"intermediate_size\":6144,\"num_hidden_layers\":48,"
     "\"num_attention_heads\":32,\"num_key_value_heads\":4,\"head_dim\":128,\"vocab_size\":151936,"
     "\"tie_word_embeddings\":false,\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,"
     "\"max_position_embeddings\":40960,\"num_experts\":128,\"num_experts_per_tok\":8,\"moe_intermediate_size\":768,"
     "\"norm_topk_prob\":true,\"decoder_sparse_step\":1,\"mlp_only_layers\":[]}",
     "moe_intermediate_size", 0, 151643, 151645},
    {"qwen3-235b-a22b", "Qwen3MoeForCausalLM", NULL,
     "{\"model_type\":\"qwen3_moe\",\"hidden_size\":4096,\"intermediate_size\":12288,\"num_hidden_layers\":94,"
     "\"num_attention_heads\":64,\"num_key_value_heads\":4,\"head_dim\":128,\"vocab_size\":151936,"
     "\"tie_word_embeddings\":false,\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,"
     "\"max_position_embeddings\":40960,\"num_experts\":128,\"num_experts_per_tok\":8,\"moe_intermediate_size\":1536,"
     "\"norm_topk_prob\":true,\"decoder_sparse_step\":1,\"mlp_only_layers\":[]}",
     "moe_intermediate_size", 0, 151643, 151645},
    {"qwen2.5-0.5b", "Qwen2ForCausalLM", NULL,
     "{\"model_type\":\"qwen2\",\"hidden_size\":896,\"intermediate_size\":4864,\"num_hidden_layers\":24,"
     "\"num_attention_heads\":14,\"num_key_value_heads\":2,\"vocab_size\":151936,\"tie_word_embeddings\":true,"
     "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,\"max_position_embeddings\":32768}",
     "", 0, 151643, 151645},
    {"qwen2.5-7b", "Qwen2ForCausalLM", NULL,
     "{\"model_type\":\"qwen2\",\"hidden_size\":3584,\"intermediate_size\":18944,\"num_hidden_layers\":28,"
     "\"num_attention_heads\":28,\"num_key_value_heads\":4,\"vocab_size\":152064,\"tie_word_embeddings\":false,"
     "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,\"max_position_embeddings\":32768}",
     "", 0, 151643, 151645},
    {"llama-3-8b", "LlamaForCausalLM", NULL, LLAMA3(4096, 14336, 32, 32, 8, 128, false, 8192, ""), "", 0, 128000, 128001},
    {"llama-3.1-8b", "LlamaForCausalLM", NULL, LLAMA3(4096, 14336, 32, 32, 8, 128, false, 131072, L31(8)), "", 0,
     128000, 128001},
    {"llama-3.2-1b", "LlamaForCausalLM", NULL, LLAMA3(2048, 8192, 16, 32, 8, 64, true, 131072, L31(32)), "", 0,
     128000, 128001},
    {"llama-3-70b", "LlamaForCausalLM", NULL, LLAMA3(8192, 28672, 80, 64, 8, 128, false, 8192, ""), "", 0, 128000, 128001},
    {"mistral-7b", "MistralForCausalLM", NULL,
     "{\"model_type\":\"mistral\",\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,"
     "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"head_dim\":128,\"vocab_size\":32768,"
     "\"tie_word_embeddings\":false,\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-5,\"rope_theta\":1000000,"
     "\"max_position_embeddings\":32768,\"sliding_window\":null}",
     "", 0, 1, 2},
    {"mixtral-8x7b", "MixtralForCausalLM", NULL,
     "{\"model_type\":\"mixtral\",\"hidden_size\":4096,\"intermediate_size\":14336,\"num_hidden_layers\":32,"
     "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"vocab_size\":32000,\"tie_word_embeddings\":false,"
     "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-5,\"rope_theta\":1000000,\"max_position_embeddings\":32768,"
     "\"num_local_experts\":8,\"num_experts_per_tok\":2,\"sliding_window\":null}",
     "", 0, 1, 2},
    /* Llama-4-Scout-17B-16E: the published Llama4ForConditionalGeneration (vision tensors kept) */
    {"llama-4-scout", "Llama4ForConditionalGeneration", "llama4",
     "{\"model_type\":\"llama4_text\",\"hidden_size\":5120,\"intermediate_size\":8192,\"intermediate_size_mlp\":16384,"
     "\"num_hidden_layers\":48,\"num_attention_heads\":40,\"num_key_value_heads\":8,\"head_dim\":128,"
     "\"vocab_size\":202048,\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-5,\"rope_theta\":500000,"
     "\"max_position_embeddings\":10485760,\"num_local_experts\":16,\"num_experts_per_tok\":1,"
     "\"interleave_moe_layer_step\":1,\"use_qk_norm\":true,\"attention_chunk_size\":8192,"
     "\"attn_temperature_tuning\":true,\"floor_scale\":8192,\"attn_scale\":0.1,\"no_rope_layers\":[],"
     "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":16.0,\"low_freq_factor\":1.0,\"high_freq_factor\":1.0,"
     "\"original_max_position_embeddings\":8192},\"attention_bias\":false,\"tie_word_embeddings\":false}",
     "intermediate_size_mlp", 0, 200000, 200008},
    /* Qwen2-57B-A14B */
    {"qwen2-57b-a14b", "Qwen2MoeForCausalLM", NULL,
     "{\"model_type\":\"qwen2_moe\",\"hidden_size\":3584,\"intermediate_size\":18944,\"num_hidden_layers\":28,"
     "\"num_attention_heads\":28,\"num_key_value_heads\":4,\"vocab_size\":151936,\"tie_word_embeddings\":false,"
     "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,\"max_position_embeddings\":131072,"
     "\"num_experts\":64,\"num_experts_per_tok\":8,\"moe_intermediate_size\":2560,"
     "\"shared_expert_intermediate_size\":20480,\"norm_topk_prob\":false,\"decoder_sparse_step\":1,"
     "\"mlp_only_layers\":[],\"use_sliding_window\":false}",
     "moe_intermediate_size shared_expert_intermediate_size", 0, 151643, 151643},
    /* GLM-4.5-Air (its multi-token-prediction layer 46 as published) */
    {"glm-4.5-air", "Glm4MoeForCausalLM", NULL,
     "{\"model_type\":\"glm4_moe\",\"hidden_size\":4096,\"intermediate_size\":10944,\"num_hidden_layers\":46,"
     "\"num_attention_heads\":96,\"num_key_value_heads\":8,\"head_dim\":128,\"vocab_size\":151552,"
     "\"tie_word_embeddings\":false,\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-5,\"rope_theta\":1000000,"
     "\"max_position_embeddings\":131072,\"partial_rotary_factor\":0.5,\"attention_bias\":true,\"use_qk_norm\":false,"
     "\"n_routed_experts\":128,\"num_experts_per_tok\":8,\"moe_intermediate_size\":1408,\"n_shared_experts\":1,"
     "\"first_k_dense_replace\":1,\"n_group\":1,\"topk_group\":1,\"routed_scaling_factor\":1.0,"
     "\"norm_topk_prob\":true,\"num_nextn_predict_layers\":1}",
     "moe_intermediate_size", 0, 151329, 151336},
    /* GLM-4.7-Flash (glm4_moe_lite: DeepSeek-V3's layer) */
    {"glm-4.7-flash", "Glm4MoeLiteForCausalLM", NULL,
     "{\"model_type\":\"glm4_moe_lite\",\"hidden_size\":2048,\"intermediate_size\":10240,\"num_hidden_layers\":47,"
     "\"num_attention_heads\":20,\"num_key_value_heads\":20,\"vocab_size\":154880,\"tie_word_embeddings\":false,"
     "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-5,\"rope_theta\":1000000,\"max_position_embeddings\":202752,"
     "\"q_lora_rank\":768,\"kv_lora_rank\":512,\"qk_nope_head_dim\":192,\"qk_rope_head_dim\":64,\"v_head_dim\":256,"
     "\"n_routed_experts\":64,\"num_experts_per_tok\":4,\"moe_intermediate_size\":1536,\"n_shared_experts\":1,"
     "\"first_k_dense_replace\":1,\"n_group\":1,\"topk_group\":1,\"routed_scaling_factor\":1.8,"
     "\"norm_topk_prob\":true,\"num_nextn_predict_layers\":1}",
     "moe_intermediate_size kv_lora_rank q_lora_rank", 0, 0, 154820},
    /* DeepSeek-V3 / R1 as published: FP8 weights with 128x128 block scales, MTP layer 61 */
    {"deepseek-v3", "DeepseekV3ForCausalLM", NULL,
     "{\"model_type\":\"deepseek_v3\",\"hidden_size\":7168,\"intermediate_size\":18432,\"num_hidden_layers\":61,"
     "\"num_attention_heads\":128,\"num_key_value_heads\":128,\"vocab_size\":129280,\"tie_word_embeddings\":false,"
     "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-6,\"rope_theta\":10000,\"max_position_embeddings\":163840,"
     "\"q_lora_rank\":1536,\"kv_lora_rank\":512,\"qk_nope_head_dim\":128,\"qk_rope_head_dim\":64,\"v_head_dim\":128,"
     "\"n_routed_experts\":256,\"num_experts_per_tok\":8,\"moe_intermediate_size\":2048,\"n_shared_experts\":1,"
     "\"first_k_dense_replace\":3,\"n_group\":8,\"topk_group\":4,\"routed_scaling_factor\":2.5,"
     "\"norm_topk_prob\":true,\"num_nextn_predict_layers\":1,\"topk_method\":\"noaux_tc\","
     "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":40,\"original_max_position_embeddings\":4096,\"beta_fast\":32,"
     "\"beta_slow\":1,\"mscale\":1.0,\"mscale_all_dim\":1.0}}",
     "moe_intermediate_size kv_lora_rank q_lora_rank", 1, 0, 1},
    /* Gemma-3-27B (Gemma3ForConditionalGeneration, vision tower kept) */
    {"gemma-3-27b", "Gemma3ForConditionalGeneration", "gemma3",
     "{\"model_type\":\"gemma3_text\",\"hidden_size\":5376,\"intermediate_size\":21504,\"num_hidden_layers\":62,"
     "\"num_attention_heads\":32,\"num_key_value_heads\":16,\"head_dim\":128,\"vocab_size\":262208,"
     "\"query_pre_attn_scalar\":168,\"sliding_window\":1024,\"sliding_window_pattern\":6,"
     "\"rope_scaling\":{\"factor\":8.0,\"rope_type\":\"linear\"},\"rope_theta\":1000000,"
     "\"rope_local_base_freq\":10000,\"rms_norm_eps\":1e-6,\"hidden_activation\":\"gelu_pytorch_tanh\","
     "\"max_position_embeddings\":131072,\"final_logit_softcapping\":null,\"attn_logit_softcapping\":null}",
     "", 0, 2, 1},
    /* Phi-4 (14B) */
    {"phi-4", "Phi3ForCausalLM", NULL,
     "{\"model_type\":\"phi3\",\"hidden_size\":5120,\"intermediate_size\":17920,\"num_hidden_layers\":40,"
     "\"num_attention_heads\":40,\"num_key_value_heads\":10,\"vocab_size\":100352,\"tie_word_embeddings\":false,"
     "\"hidden_act\":\"silu\",\"rms_norm_eps\":1e-5,\"rope_theta\":250000,\"max_position_embeddings\":16384,"
     "\"original_max_position_embeddings\":16384,\"partial_rotary_factor\":1.0,\"sliding_window\":null}",
     "", 0, 100257, 100265},
};
#define NPRESETS ((int)(sizeof presets / sizeof presets[0]))

int rf_synth_preset_count(void) { return NPRESETS; }
const char *rf_synth_preset_name(int i) { return i >= 0 && i < NPRESETS ? presets[i].name : NULL; }

void rf_synth_opts_default(rf_synth_opts *o)
{
    memset(o, 0, sizeof *o);
    o->like = "qwen3-0.6b";
    o->scale = 1;
    o->dtype = RF_DT_BF16;
    o->seed = 1;
}

static const preset *find_preset(const char *name)
{
    for (int i = 0; name && i < NPRESETS; i++)
        if (!strcmp(presets[i].name, name)) return &presets[i];
    return NULL;
}

static int round128(double x)
{
    long v = lround(x / 128.0) * 128;
    return v < 128 ? 128 : (int)v;
}

static const char *torch_dtype_name(rf_dtype d)
{
    return d == RF_DT_F16 ? "float16" : d == RF_DT_F32 ? "float32" : "bfloat16";
}

static int jint(json_t *o, const char *k) { return (int)json_integer_value(json_object_get(o, k)); }

/* The whole config.json the options describe (the preset's, scaled and overridden). */
static rf_status make_config(const rf_synth_opts *o, const preset **pp, json_t **out, rf_err *err)
{
    const preset *p = find_preset(o->like);
    *out = NULL;
    if (!p) {
        char list[1024];
        size_t n = 0;
        list[0] = '\0';
        for (int i = 0; i < NPRESETS && n + 1 < sizeof list; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", presets[i].name);
        return rf_err_set(err, RF_ERR_INVALID, "unknown architecture preset '%s' (known: %s)", o->like ? o->like : "", list);
    }
    *pp = p;
    double sc = o->scale > 0 ? o->scale : 1;
    if (sc > 1) return rf_err_set(err, RF_ERR_INVALID, "scale %g: must be in (0, 1]", sc);
    if (o->layers < 0 || o->vocab < 0 || o->experts < 0 || o->layers > 4096 || o->vocab > (1 << 24) || o->experts > 4096)
        return rf_err_set(err, RF_ERR_INVALID, "layers, vocab and experts must be positive and sane");
    json_error_t je;
    json_t *t = json_loads(p->config, 0, &je);
    if (!t) return rf_err_set(err, RF_ERR_INTERNAL, "preset %s: %s", p->name, je.text);
    static const char *const expert_keys[] = {"num_experts", "num_local_experts", "n_routed_experts"};
    const char *ek = NULL;
    for (int i = 0; i < 3; i++)
        if (json_object_get(t, expert_keys[i])) ek = expert_keys[i];
    if (o->experts && !ek) {
        json_decref(t);
        return rf_err_set(err, RF_ERR_INVALID, "preset %s is not a mixture of experts", p->name);
    }
    if (sc < 1) {
        int heads = jint(t, "num_attention_heads"), kv = jint(t, "num_key_value_heads"), hidden = jint(t, "hidden_size");
        int hd = json_object_get(t, "head_dim") ? jint(t, "head_dim") : hidden / heads, ratio = heads / kv;
        int nkv = (int)lround(kv * sc);
        nkv = nkv < 1 ? 1 : nkv;
        /* Keep hidden = heads * head_dim where the architecture has it, if that stays a multiple of 128. */
        int nh = nkv * ratio, nhid = hidden == heads * hd && (nh * hd) % 128 == 0 ? nh * hd : round128(hidden * sc);
        json_object_set_new(t, "num_attention_heads", json_integer(nh));
        json_object_set_new(t, "num_key_value_heads", json_integer(nkv));
        json_object_set_new(t, "hidden_size", json_integer(nhid));
        if (!json_object_get(t, "head_dim") && (nhid % nh || nhid / nh != hd)) json_object_set_new(t, "head_dim", json_integer(hd));
        char keys[256];
        snprintf(keys, sizeof keys, "intermediate_size %s", p->scaled);
        for (char *k = strtok(keys, " "); k; k = strtok(NULL, " "))
            if (json_is_integer(json_object_get(t, k)))
                json_object_set_new(t, k, json_integer(round128(jint(t, k) * sc)));
    }
    if (o->layers) json_object_set_new(t, "num_hidden_layers", json_integer(o->layers));
    if (o->vocab) json_object_set_new(t, "vocab_size", json_integer(o->vocab));
    if (o->experts) {
        json_object_set_new(t, ek, json_integer(o->experts));
        int k = jint(t, "num_experts_per_tok");
        if (k > o->experts) json_object_set_new(t, "num_experts_per_tok", json_integer(o->experts));
        if (json_object_get(t, "n_group") && o->experts % jint(t, "n_group")) {
            json_object_set_new(t, "n_group", json_integer(1));
            json_object_set_new(t, "topk_group", json_integer(1));
        }
        int g = json_object_get(t, "n_group") ? jint(t, "n_group") : 1, tg = json_object_get(t, "topk_group") ? jint(t, "topk_group") : 1;
        if (jint(t, "num_experts_per_tok") > tg * (o->experts / g)) json_object_set_new(t, "topk_group", json_integer(g));
    }
    json_object_set_new(t, "bos_token_id", json_integer(p->bos));
    json_object_set_new(t, "eos_token_id", json_integer(p->eos));
    json_t *c = t;
    if (p->wrapper) {
        c = json_object();
        json_object_set_new(c, "model_type", json_string(p->wrapper));
        json_object_set(c, "tie_word_embeddings", json_object_get(t, "tie_word_embeddings") ? json_object_get(t, "tie_word_embeddings")
                                                                                             : json_true());
        json_object_set_new(c, "text_config", t);
        json_object_set_new(c, "vision_config", json_pack("{s:i}", "hidden_size", 1152));
    }
    json_object_set_new(c, "architectures", json_pack("[s]", p->arch));
    json_object_set_new(c, "torch_dtype", json_string(torch_dtype_name(o->dtype ? o->dtype : RF_DT_BF16)));
    if (p->fp8)
        json_object_set_new(c, "quantization_config", json_pack("{s:s, s:s, s:s, s:[i,i]}", "activation_scheme", "dynamic",
                                                                "fmt", "e4m3", "quant_method", "fp8", "weight_block_size",
                                                                128, 128));
    json_object_set_new(c, "ramfit_synthetic", json_true());
    *out = c;
    return RF_OK;
}

rf_status rf_synth_config(const rf_synth_opts *o, rf_config *out, rf_err *err)
{
    const preset *p;
    json_t *j;
    rf_status st = make_config(o, &p, &j, err);
    if (st) return st;
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    st = rf_config_parse(text, o->like, out, err);
    free(text);
    return st ? rf_err_prefix(err, "synth preset") : RF_OK;
}

/* ------------------------------------------------------------------ config files */

static rf_status write_json(const char *dir, const char *name, json_t *j, rf_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!j) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    int bad = json_dump_file(j, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(j);
    return bad ? rf_err_set(err, RF_ERR_IO, "%s: cannot write", path) : RF_OK;
}

/* ------------------------------------------------------------------ tensor list */

enum { K_NORM, K_BIAS, K_EMBED, K_LINEAR, K_FP8, K_SCALE };

typedef struct tspec {
    char name[420];
    int ndim, kind, layer;
    int in_hidden; /* consumes the hidden state (gets the layer's outlier input channels) */
    uint64_t shape[3];
    uint64_t rows, cols; /* as a matrix: leading axes folded into rows */
} tspec;

typedef struct tlist { tspec *t; uint64_t n, cap; } tlist;

static int add(tlist *l, int kind, int layer, int in_hidden, int ndim, const uint64_t *shape, const char *fmt, ...)
    RF_PRINTF(7, 8);
static int add(tlist *l, int kind, int layer, int in_hidden, int ndim, const uint64_t *shape, const char *fmt, ...)
{
    if (l->n == l->cap) {
        uint64_t nc = l->cap ? l->cap * 2 : 256;
        tspec *nt = realloc(l->t, nc * sizeof *nt);
        if (!nt) return 0;
        l->t = nt;
        l->cap = nc;
    }
    tspec *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->kind = kind;
    t->layer = layer;
    t->in_hidden = in_hidden;
    t->ndim = ndim;
    t->rows = 1;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    for (int d = 0; d + 1 < ndim; d++) t->rows *= shape[d];
    t->cols = shape[ndim - 1];
    return 1;
}

/* The tensors of layer L (-1: top level) from the family table: every row the config requires
 * (the Hugging Face layout), a fused tensor once, biases where the config has them. */
static int add_rows(tlist *l, const rf_config *c, const rf_family *f, int L, int fp8)
{
    int ok = 1;
    for (int i = 0; ok && i < f->nrules; i++) {
        const rf_trule *r = &f->rules[i];
        if ((r->layer != 0) != (L >= 0) || r->need == RF_NEED_NEVER) continue;
        int need = rf_rule_needed(c, r, L) || (r->need == RF_NEED_OPTIONAL && r->slot == RF_SLOT_ROUTER_BIAS &&
                                               rf_config_layer_is_moe(c, L));
        if (!need) continue;
        int dup = 0; /* a fused tensor feeds two rows */
        for (int k = 0; k < i; k++) dup |= f->rules[k].layer == r->layer && !strcmp(f->rules[k].path, r->path) &&
                                          rf_rule_needed(c, &f->rules[k], L);
        if (dup) continue;
        uint64_t shp[3];
        int n = rf_rule_source_shape(c, r, shp);
        if (!n) continue;
        int experts = strstr(r->path, "{E}") != NULL;
        int vec = n == 1, matrix = !vec;
        int kind = vec ? (r->slot == RF_SLOT_ROUTER_BIAS ? K_BIAS : K_NORM)
                 : r->slot == RF_SLOT_EMBED ? K_EMBED : K_LINEAR;
        /* FP8 as DeepSeek publishes: the layers' projections, not the router, norms or embeddings */
        int f8 = fp8 && matrix && L >= 0 && !r->keep && kind == K_LINEAR;
        int in_hidden = r->in == RF_DH;
        for (int e = 0; ok && e < (experts ? c->num_experts : 1); e++) {
            char path[160];
            snprintf(path, sizeof path, "%s", r->path);
            char *ph = strstr(path, "{E}");
            if (ph) {
                char tail[160];
                snprintf(tail, sizeof tail, "%s", ph + 3);
                snprintf(ph, sizeof path - (size_t)(ph - path), "%d%s", e, tail);
            }
            char name[400];
            if (L >= 0) snprintf(name, sizeof name, "%smodel.layers.%d.%s", c->tensor_prefix, L, path);
            else snprintf(name, sizeof name, "%s%s", c->tensor_prefix, path);
            ok &= add(l, f8 ? K_FP8 : kind, L, in_hidden, n, shp, "%s%s", name, r->exact ? "" : ".weight");
            if (ok && f8) {
                uint64_t s2[2] = {(l->t[l->n - 1].rows + 127) / 128, (l->t[l->n - 1].cols + 127) / 128};
                ok &= add(l, K_SCALE, L, 0, 2, s2, "%s%s_scale_inv", name, r->exact ? "" : ".weight");
            }
            if (ok && rf_rule_bias_needed(c, r) && r->layout == RF_LAY_PLAIN) {
                uint64_t b[1] = {rf_dim(c, (rf_dimsym)r->out)};
                ok &= add(l, K_BIAS, L, 0, 1, b, "%s.bias", name);
            }
        }
    }
    return ok;
}

static int build_list(const preset *p, const rf_config *c, double sc, tlist *l)
{
    const rf_family *f = rf_family_of(c->arch);
    const uint64_t H = (uint64_t)c->hidden_size;
    int ok = f != NULL && add_rows(l, c, f, -1, p->fp8);
    for (int L = 0; ok && L < c->num_layers; L++) ok = add_rows(l, c, f, L, p->fp8);
    /* the published multi-token-prediction layer past num_hidden_layers (dropped by readers) */
    for (int L = c->num_layers; ok && L < c->num_layers + c->extra_layers; L++) {
        uint64_t v[1] = {H}, eh[2] = {H, 2 * H};
        ok &= add(l, K_NORM, L, 0, 1, v, "%smodel.layers.%d.enorm.weight", c->tensor_prefix, L);
        ok &= add(l, K_NORM, L, 0, 1, v, "%smodel.layers.%d.hnorm.weight", c->tensor_prefix, L);
        ok &= add(l, K_LINEAR, L, 0, 2, eh, "%smodel.layers.%d.eh_proj.weight", c->tensor_prefix, L);
    }
    /* a wrapper's vision tower and projector: a few tensors with the published names */
    uint64_t V = (uint64_t)(sc < 1 ? round128(1408 * sc) : 1408), S = (uint64_t)(sc < 1 ? round128(1152 * sc) : 1152);
    if (ok && p->wrapper && !strcmp(p->wrapper, "llama4")) {
        uint64_t pe[2] = {V, 588}, q[2] = {V, V}, mm[2] = {H, sc < 1 ? (uint64_t)round128(4096 * sc) : 4096};
        ok &= add(l, K_LINEAR, -1, 0, 2, pe, "vision_model.patch_embedding.linear.weight");
        ok &= add(l, K_LINEAR, -1, 0, 2, q, "vision_model.model.layers.0.self_attn.q_proj.weight");
        ok &= add(l, K_LINEAR, -1, 0, 2, mm, "multi_modal_projector.linear_1.weight");
    } else if (ok && p->wrapper) {
        uint64_t pe[2] = {S, 588}, q[2] = {S, S}, mm[2] = {S, H};
        ok &= add(l, K_LINEAR, -1, 0, 2, pe, "vision_tower.vision_model.embeddings.patch_embedding.weight");
        ok &= add(l, K_LINEAR, -1, 0, 2, q, "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight");
        ok &= add(l, K_LINEAR, -1, 0, 2, mm, "multi_modal_projector.mm_input_projection_weight");
    }
    return ok;
}

/* ------------------------------------------------------------------ random numbers */

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The counter-th draw of stream KEY. */
static inline uint64_t draw(uint64_t key, uint64_t counter) { return mix64(key + (counter + 1) * 0x9e3779b97f4a7c15ull); }

static uint64_t str_key(uint64_t seed, const char *s)
{
    uint64_t h = 1469598103934665603ull ^ mix64(seed);
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return mix64(h);
}

static double uniform01(uint64_t h) { return ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

/* Inverse-CDF tables: |quantile(p)| at p = 2^-(e+2) (1 + m/64), e < 32, m <= 64, unit variance. */
#define TAB_E 32
#define TAB_M 64
typedef struct dist { float v[TAB_E * (TAB_M + 1)]; } dist;
enum { D_NORMAL, D_T4, D_T6, D_COUNT };

/* Lower-tail CDF at t <= 0. Student-t with even nu has a finite series in x = nu / (nu + t^2). */
static double cdf_low(int d, double t)
{
    if (d == D_NORMAL) return 0.5 * erfc(-t / sqrt(2.0));
    double nu = d == D_T4 ? 4 : 6, x = nu / (nu + t * t), s = -t / sqrt(nu + t * t), a = 1, xs = 1, sum = 0;
    for (int j = 0; j < (int)nu / 2; j++) {
        sum += a * xs;
        a *= (2.0 * j + 1) / (2.0 * j + 2);
        xs *= x;
    }
    return 0.5 - 0.5 * s * sum;
}

static void dist_init(dist *ds, int d)
{
    double norm = d == D_T4 ? sqrt(0.5) : d == D_T6 ? sqrt(4.0 / 6.0) : 1.0;
    for (int e = 0; e < TAB_E; e++)
        for (int m = 0; m <= TAB_M; m++) {
            double p = ldexp(1.0 + m / (double)TAB_M, -(e + 2)), lo = -1e6, hi = 0;
            for (int it = 0; it < 200 && hi - lo > 1e-12 * (1 + fabs(lo)); it++) {
                double mid = 0.5 * (lo + hi);
                if (cdf_low(d, mid) < p) lo = mid;
                else hi = mid;
            }
            ds->v[e * (TAB_M + 1) + m] = (float)(-0.5 * (lo + hi) * norm);
        }
}

static inline float dist_sample(const dist *ds, uint64_t h)
{
    uint32_t v = (uint32_t)(h >> 32) | 1u;
    int e = __builtin_clz(v);
    uint32_t nv = v << e;
    uint32_t m = (nv >> 25) & (TAB_M - 1);
    float frac = (float)(nv & 0x1ffffffu) * (1.0f / 33554432.0f);
    const float *row = ds->v + e * (TAB_M + 1);
    float mag = row[m] + (row[m + 1] - row[m]) * frac;
    return (h & 1) ? mag : -mag;
}

/* ------------------------------------------------------------------ tensor values */

typedef struct tparams {
    uint64_t key;
    int dist;
    float std;
    float *colscale; /* NULL: all 1 */
    int kind;
} tparams;

typedef struct sctx {
    const rf_synth_opts *o;
    const tspec *specs;
    dist d[D_COUNT];
    /* the current window */
    const struct gtask *tasks;
    void **bufs;
    float **fbuf;      /* per worker: FP8 blocks of 128 rows */
    rf_status *st;
    rf_err *err;
} sctx;

typedef struct gtask { uint64_t tensor, row0, nrows; } gtask;

#define GEN_BYTES (4ull << 20)
#define FCHUNK 4096
#define FP8_BLOCK 128

/* Standard normal from one draw (tables: cheaper than Box-Muller and exact enough). */
static float normal_of(const sctx *c, uint64_t key, uint64_t counter) { return dist_sample(&c->d[D_NORMAL], draw(key, counter)); }

static rf_dtype tdtype(const sctx *c, const tspec *t)
{
    return t->kind == K_FP8 ? RF_DT_F8_E4M3 : t->kind == K_SCALE ? RF_DT_F32 : c->o->dtype;
}

static rf_status tensor_params(const sctx *c, const tspec *t, tparams *tp, rf_err *err)
{
    memset(tp, 0, sizeof *tp);
    tp->key = str_key(c->o->seed, t->name);
    tp->kind = t->kind;
    uint64_t lkey = str_key(c->o->seed, "layer") + (uint64_t)(t->layer + 1) * 0x632be59bd9b4e019ull;
    if (t->kind == K_NORM) { tp->std = 0.05f; return RF_OK; }
    if (t->kind == K_BIAS) { tp->std = 0.02f; return RF_OK; }
    tp->dist = (draw(tp->key, ~0ull) & 1) ? D_T4 : D_T6;
    /* Per-layer, per-tensor spread of the std: log-normal around 0.5 / sqrt(fan-in). */
    double base = t->kind == K_EMBED ? 0.02 : 0.5 / sqrt((double)t->cols);
    tp->std = (float)(base * exp(0.25 * normal_of(c, lkey, 1) + 0.1 * normal_of(c, tp->key, ~1ull)));
    /* Some layers have a few large input channels (the same ones for every matrix reading the
     * hidden state in that layer), as trained LLMs do. */
    if (t->in_hidden && t->layer >= 0 && draw(lkey, 2) % 4 == 0) {
        uint64_t cols = t->cols;
        tp->colscale = malloc(cols * sizeof *tp->colscale);
        if (!tp->colscale) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; i < cols; i++) tp->colscale[i] = 1;
        int n = 2 + (int)(draw(lkey, 3) % 4);
        for (int k = 0; k < n; k++)
            tp->colscale[draw(lkey, 10 + (uint64_t)k) % cols] = (float)(10 + 40 * uniform01(draw(lkey, 20 + (uint64_t)k)));
    }
    return RF_OK;
}

/* Row ROW of a matrix tensor in float32. */
static void gen_row(const sctx *c, const tspec *t, const tparams *tp, uint64_t row, float *out)
{
    const uint64_t cols = t->cols;
    const dist *ds = &c->d[tp->dist];
    /* log-normal row scale */
    float rs = tp->std * expf(0.3f * normal_of(c, tp->key ^ 0x5bd1e995u, row));
    for (uint64_t i = 0; i < cols; i++) out[i] = rs * dist_sample(ds, draw(tp->key, row * cols + i));
    if (tp->colscale)
        for (uint64_t i = 0; i < cols; i++) out[i] *= tp->colscale[i];
}

/* float32 -> float8_e4m3fn, round to nearest even, saturating at +-448 (no infinities). */
static uint8_t f32_to_e4m3(float x)
{
    uint8_t s = signbit(x) ? 0x80 : 0;
    float a = fabsf(x);
    if (!(a == a)) return 0x7f;
    if (a >= 448.0f) return s | 0x7e;
    if (a < 0.015625f) { /* subnormal: multiples of 2^-9 */
        int q = (int)nearbyintf(a * 512.0f);
        return s | (uint8_t)(q == 8 ? 0x08 : q);
    }
    int e;
    float m = frexpf(a, &e); /* a = m 2^e, m in [0.5, 1) */
    e -= 1;
    int q = (int)nearbyintf((m * 2.0f - 1.0f) * 8.0f);
    if (q == 8) q = 0, e++;
    if (e > 8 || (e == 8 && q == 7)) return s | 0x7e;
    return s | (uint8_t)((e + 7) << 3) | (uint8_t)q;
}

/* The FP8 block row B of tensor T: 128 rows generated, quantized per 128x128 block with scale
 * amax / 448 (as DeepSeek's weights). Writes the FP8 rows to Q (may be NULL) and the block
 * scales to SC (may be NULL). BUF holds 128 rows. */
static void fp8_block_row(const sctx *c, const tspec *t, const tparams *tp, uint64_t b, float *buf, uint8_t *q, float *sc)
{
    uint64_t r0 = b * FP8_BLOCK, n = t->rows - r0 < FP8_BLOCK ? t->rows - r0 : FP8_BLOCK, cols = t->cols;
    for (uint64_t r = 0; r < n; r++) gen_row(c, t, tp, r0 + r, buf + r * cols);
    for (uint64_t c0 = 0; c0 < cols; c0 += FP8_BLOCK) {
        uint64_t w = cols - c0 < FP8_BLOCK ? cols - c0 : FP8_BLOCK;
        float amax = 0;
        for (uint64_t r = 0; r < n; r++)
            for (uint64_t j = 0; j < w; j++) amax = fmaxf(amax, fabsf(buf[r * cols + c0 + j]));
        float scale = amax > 0 ? amax / 448.0f : 1.0f;
        if (sc) sc[c0 / FP8_BLOCK] = scale;
        if (q)
            for (uint64_t r = 0; r < n; r++)
                for (uint64_t j = 0; j < w; j++) q[r * cols + c0 + j] = f32_to_e4m3(buf[r * cols + c0 + j] / scale);
    }
}

static void gen_rows(const sctx *c, const tspec *t, const tparams *tp, uint64_t row0, uint64_t nrows, float *fb,
                     void *dst, rf_dtype dt)
{
    const uint64_t cols = t->cols;
    const uint64_t esz = rf_dtype_size(dt);
    if (t->kind == K_FP8) { /* row0 and nrows are whole blocks */
        for (uint64_t b = row0 / FP8_BLOCK; b * FP8_BLOCK < row0 + nrows; b++)
            fp8_block_row(c, t, tp, b, fb, (uint8_t *)dst + (b * FP8_BLOCK - row0) * cols, NULL);
        return;
    }
    if (t->ndim == 1) { /* norms and biases: one "row" */
        float out[FCHUNK];
        for (uint64_t c0 = 0; c0 < cols; c0 += FCHUNK) {
            uint64_t n = cols - c0 < FCHUNK ? cols - c0 : FCHUNK;
            for (uint64_t i = 0; i < n; i++) {
                float z = normal_of(c, tp->key, c0 + i);
                out[i] = tp->kind == K_NORM ? 1.0f + tp->std * z : tp->std * z;
            }
            rf_convert_from_f32(dt, out, (char *)dst + c0 * esz, n, NULL);
        }
        return;
    }
    for (uint64_t r = 0; r < nrows; r++) {
        gen_row(c, t, tp, row0 + r, fb);
        rf_convert_from_f32(dt, fb, (char *)dst + r * cols * esz, cols, NULL);
    }
}

static void gen_task(void *ctx, uint64_t i, int worker)
{
    sctx *c = ctx;
    const gtask *g = &c->tasks[i];
    const tspec *t = &c->specs[g->tensor];
    tparams tp;
    if (t->kind == K_SCALE) { /* the block scales of the FP8 weight declared just before */
        const tspec *w = t - 1;
        c->st[i] = tensor_params(c, w, &tp, &c->err[i]);
        if (c->st[i]) return;
        for (uint64_t r = 0; r < g->nrows; r++)
            fp8_block_row(c, w, &tp, g->row0 + r, c->fbuf[worker], NULL, (float *)c->bufs[i] + r * t->cols);
        free(tp.colscale);
        return;
    }
    c->st[i] = tensor_params(c, t, &tp, &c->err[i]);
    if (c->st[i]) return;
    gen_rows(c, t, &tp, g->row0, g->nrows, c->fbuf[worker], c->bufs[i], tdtype(c, t));
    free(tp.colscale);
}

/* ------------------------------------------------------------------ writer */

static rf_status make_dir(const char *dir, rf_err *err)
{
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return RF_OK;
        return rf_err_set(err, RF_ERR_IO, "%s: exists and is not a directory", dir);
    }
    return rf_err_errno(err, errno, "%s: cannot create directory", dir);
}

static rf_status write_data(sctx *c, rf_stw *w, rf_pool *pool, const tlist *l, rf_progress *prog, uint64_t total,
                            rf_err *err)
{
    const int nt = rf_pool_threads(pool), wmax = 2 * nt;
    gtask *tasks = calloc((size_t)wmax, sizeof *tasks);
    c->bufs = calloc((size_t)wmax, sizeof *c->bufs);
    c->fbuf = calloc((size_t)nt, sizeof *c->fbuf);
    c->st = calloc((size_t)wmax, sizeof *c->st);
    c->err = calloc((size_t)wmax, sizeof *c->err);
    rf_status s = tasks && c->bufs && c->fbuf && c->st && c->err ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    uint64_t cap = GEN_BYTES, fcap = FCHUNK;
    for (uint64_t i = 0; !s && i < l->n; i++) {
        const tspec *t = &l->t[i];
        uint64_t rb = t->cols * rf_dtype_size(tdtype(c, t));
        if (t->kind == K_FP8) rb *= FP8_BLOCK;
        cap = rb > cap ? rb : cap; /* one row (one FP8 block row) at least */
        uint64_t fb = t->cols * (t->kind == K_FP8 || t->kind == K_SCALE ? FP8_BLOCK : 1);
        if (t->kind == K_SCALE) fb = t[-1].cols * FP8_BLOCK;
        fcap = fb > fcap ? fb : fcap;
    }
    for (int i = 0; !s && i < wmax; i++)
        if (!(c->bufs[i] = malloc(cap))) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < nt; i++)
        if (!(c->fbuf[i] = malloc(fcap * sizeof(float)))) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    uint64_t ti = 0, row = 0, done = 0;
    while (!s && ti < l->n) {
        int n = 0;
        while (n < wmax && ti < l->n) {
            const tspec *t = &l->t[ti];
            uint64_t rb = t->cols * rf_dtype_size(tdtype(c, t)), per = cap / rb;
            if (t->kind == K_FP8) per = per / FP8_BLOCK * FP8_BLOCK;
            if (t->kind == K_SCALE) per = per < 64 ? per : 64; /* each scale row generates 128 weight rows */
            per = per < 1 ? 1 : per;
            uint64_t left = t->rows - row, take = left < per ? left : per;
            tasks[n++] = (gtask){ti, row, take};
            row += take;
            if (row == t->rows) ti++, row = 0;
        }
        c->tasks = tasks;
        rf_pool_run(pool, (uint64_t)n, gen_task, c);
        for (int i = 0; !s && i < n; i++) {
            if (c->st[i]) { *err = c->err[i]; s = c->st[i]; break; }
            const tspec *t = &l->t[tasks[i].tensor];
            uint64_t bytes = tasks[i].nrows * t->cols * rf_dtype_size(tdtype(c, t));
            s = rf_stw_write(w, c->bufs[i], bytes, err);
            done += bytes;
        }
        if (!s && prog && prog->fn) prog->fn(prog->user, done, total, l->t[tasks[n - 1].tensor].name);
        if (!s && prog && prog->cancel && *prog->cancel) s = rf_err_set(err, RF_ERR_INTERRUPTED, "synth interrupted");
    }
    for (int i = 0; c->bufs && i < wmax; i++) free(c->bufs[i]);
    for (int i = 0; c->fbuf && i < nt; i++) free(c->fbuf[i]);
    free(c->bufs);
    free(c->fbuf);
    free(c->st);
    free(c->err);
    free(tasks);
    return s;
}

rf_status rf_synth_write(const rf_synth_opts *opts, const char *out_dir, rf_progress *progress, rf_err *err)
{
    if (!opts || !out_dir) return rf_err_set(err, RF_ERR_INVALID, "synth: NULL argument");
    rf_synth_opts o = *opts;
    if (o.dtype == RF_DT_INVALID) o.dtype = RF_DT_BF16;
    if (o.dtype != RF_DT_BF16 && o.dtype != RF_DT_F16 && o.dtype != RF_DT_F32)
        return rf_err_set(err, RF_ERR_INVALID, "synth: dtype %s: expected BF16, F16 or F32", rf_dtype_name(o.dtype));
    const preset *p;
    json_t *cj = NULL;
    rf_config *cfg = malloc(sizeof *cfg);
    rf_status st = cfg ? rf_synth_config(&o, cfg, err) : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    if (!st) st = make_config(&o, &p, &cj, err);
    if (!st) st = make_dir(out_dir, err);
    tlist l = {0};
    if (!st && !build_list(p, cfg, o.scale > 0 ? o.scale : 1, &l)) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    sctx *c = st ? NULL : calloc(1, sizeof *c);
    rf_pool *pool = NULL;
    rf_stw *w = NULL;
    if (!st && !c) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    if (!st) {
        c->o = &o;
        c->specs = l.t;
        for (int d = 0; d < D_COUNT; d++) dist_init(&c->d[d], d);
        st = rf_pool_create(o.threads, &pool, err);
    }
    rf_stw_opts wo = {.max_shard_bytes = o.max_shard_bytes ? o.max_shard_bytes : 5000000000ull, .basename = "model"};
    if (!st) st = rf_stw_create(out_dir, &wo, &w, err);
    if (!st) st = rf_stw_set_metadata(w, "format", "pt", err);
    uint64_t total = 0;
    for (uint64_t i = 0; !st && i < l.n; i++) {
        rf_dtype dt = tdtype(c, &l.t[i]);
        st = rf_stw_declare(w, l.t[i].name, dt, l.t[i].ndim, l.t[i].shape, err);
        total += l.t[i].rows * l.t[i].cols * rf_dtype_size(dt);
    }
    if (!st) st = write_data(c, w, pool, &l, progress, total, err);
    if (!st) st = rf_stw_finish(w, err);
    if (!st) {
        st = write_json(out_dir, "config.json", cj, err);
        cj = NULL;
    }
    if (!st)
        st = write_json(out_dir, "generation_config.json",
                        json_pack("{s:i, s:i, s:b}", "bos_token_id", p->bos, "eos_token_id", p->eos, "do_sample", 0), err);
    json_decref(cj);
    rf_stw_free(w);
    rf_pool_free(pool);
    free(c);
    free(l.t);
    free(cfg);
    return st;
}
