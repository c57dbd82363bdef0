/* Per-family GGUF tables: tensor names, metadata keys and the q/k row convention of llama.cpp's
 * architecture for each family ramfit runs (what convert_hf_to_gguf.py writes for it, read from
 * llama.cpp's conversion code and llama-arch.cpp). */
#include "io/gguf_arch.h"

#include <jansson.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ names */

static const rf_gguf_name top_names[] = {
    {"model.embed_tokens", "token_embd"},
    {"lm_head", "output"},
    {"model.norm", "output_norm"},
};

/* Attention and norms as every family here names them. */
#define ATTN_NAMES                                                                                  \
    {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"},                    \
    {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"}, \
    {"self_attn.o_proj", "attn_output"}
#define DENSE_MLP_NAMES {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}

static const rf_gguf_name llama_layer[] = {ATTN_NAMES, DENSE_MLP_NAMES};
static const rf_gguf_name qwen2_layer[] = {ATTN_NAMES, DENSE_MLP_NAMES};
static const rf_gguf_name qwen3_layer[] = {
    ATTN_NAMES, DENSE_MLP_NAMES, {"self_attn.q_norm", "attn_q_norm"}, {"self_attn.k_norm", "attn_k_norm"},
};
/* Mixtral: experts stacked (ffn_*_exps, [E, out, in] as ne [in, out, E]), router ffn_gate_inp. */
static const rf_gguf_name mixtral_layer[] = {
    ATTN_NAMES,
    {"block_sparse_moe.gate", "ffn_gate_inp"},
    {"block_sparse_moe.switch_mlp.gate_proj", "ffn_gate_exps"},
    {"block_sparse_moe.switch_mlp.up_proj", "ffn_up_exps"},
    {"block_sparse_moe.switch_mlp.down_proj", "ffn_down_exps"},
};
static const rf_gguf_name qwen3_moe_layer[] = {
    ATTN_NAMES,
    {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},
    DENSE_MLP_NAMES, /* mlp_only_layers */
    {"mlp.gate", "ffn_gate_inp"},
    {"mlp.switch_mlp.gate_proj", "ffn_gate_exps"},
    {"mlp.switch_mlp.up_proj", "ffn_up_exps"},
    {"mlp.switch_mlp.down_proj", "ffn_down_exps"},
};

/* ------------------------------------------------------------------ metadata */

/* TextModel.set_gguf_parameters: what every family gets. */
#define COMMON_META                                                                                       \
    {"context_length", RF_GS_CONTEXT, 0}, {"embedding_length", RF_GS_EMBED, 0},                           \
    {"feed_forward_length", RF_GS_FFN, 0}, {"block_count", RF_GS_LAYERS, 0},                              \
    {"attention.head_count", RF_GS_HEADS, 0}, {"attention.head_count_kv", RF_GS_KV_HEADS, 0},             \
    /* written always: llama.cpp silently assumes 10000 when it is missing */                             \
    {"rope.freq_base", RF_GS_ROPE_BASE, 0}, {"attention.layer_norm_rms_epsilon", RF_GS_RMS_EPS, 0},       \
    {"attention.key_length", RF_GS_HEAD_DIM, 0}, {"attention.value_length", RF_GS_HEAD_DIM, 0},           \
    {"expert_count", RF_GS_EXPERTS, 1}, {"expert_used_count", RF_GS_EXPERTS_USED, 1}

static const rf_gguf_meta llama_meta[] = {
    COMMON_META, {"vocab_size", RF_GS_VOCAB, 0}, {"rope.dimension_count", RF_GS_HEAD_DIM, 0},
};
static const rf_gguf_meta qwen_meta[] = {COMMON_META};
static const rf_gguf_meta qwen3_moe_meta[] = {COMMON_META, {"expert_feed_forward_length", RF_GS_EXPERT_FFN, 1}};

double rf_gguf_meta_value(const rf_config *c, rf_gguf_src src)
{
    int hd = c->head_dim > 0 ? c->head_dim : c->num_heads > 0 ? c->hidden_size / c->num_heads : 0;
    switch (src) {
    case RF_GS_CONTEXT: return c->max_position_embeddings > 0 ? c->max_position_embeddings : 2048;
    case RF_GS_EMBED: return c->hidden_size;
    case RF_GS_FFN: return c->intermediate_size;
    case RF_GS_LAYERS: return c->num_layers;
    case RF_GS_HEADS: return c->num_heads;
    case RF_GS_KV_HEADS: return c->num_kv_heads > 0 ? c->num_kv_heads : c->num_heads;
    case RF_GS_ROPE_BASE: return c->rope.theta > 0 ? c->rope.theta : 10000.0;
    case RF_GS_RMS_EPS: return c->rms_norm_eps > 0 ? c->rms_norm_eps : 1e-6;
    case RF_GS_HEAD_DIM: return hd;
    case RF_GS_VOCAB: return c->vocab_size;
    case RF_GS_EXPERTS: return c->num_experts;
    case RF_GS_EXPERTS_USED: return c->experts_per_tok;
    case RF_GS_EXPERT_FFN: return c->moe_intermediate_size;
    }
    return 0;
}

/* ------------------------------------------------------------------ what llama.cpp cannot run */

/* What every family here shares: llama.cpp's llama/qwen graphs gate the MLP with SiLU, rotate
 * the whole head, have no soft-capping, and take rope scaling only as llama3 (rope_freqs). */
static const char *common_unsupported(const rf_config *c, int rope_scaling_ok)
{
    if (c->act != RF_ACT_SILU) return "its MLP activation is not SiLU, which llama.cpp's architecture always uses";
    if (c->partial_rotary != 1.0) return "it rotates only part of each head";
    if (c->attn_softcap != 0 || c->final_softcap != 0) return "it soft-caps logits";
    if (c->rope_interleaved) return "its rope pairs adjacent dimensions";
    if (c->qk_norm == RF_QKNORM_L2) return "it has L2 q/k norms";
    int plain = !c->rope.type[0] || !strcmp(c->rope.type, "default");
    if (!plain && !(rope_scaling_ok && !strcmp(c->rope.type, "llama3")))
        return "its rope scaling has no GGUF mapping in ramfit (llama3 for the llama family only)";
    return NULL;
}

static const char *llama_unsupported(const rf_config *c)
{
    if (c->qk_norm != RF_QKNORM_NONE) return "it has q/k norms, which llama.cpp's llama does not";
    return common_unsupported(c, 1);
}

static const char *qwen_unsupported(const rf_config *c)
{
    if (c->mlp_bias) return "it has MLP biases, which llama.cpp's qwen graphs do not load";
    return common_unsupported(c, 0);
}

static const char *qwen3_moe_unsupported(const rf_config *c)
{
    /* llama.cpp's qwen3moe always renormalises the top-k router weights */
    if (!c->norm_topk_prob) return "norm_topk_prob is false, but llama.cpp's qwen3moe always renormalises the top-k weights";
    for (int l = 0; l < c->num_layers; l++)
        if (!rf_config_layer_is_moe(c, l))
            return "it has dense layers (mlp_only_layers / decoder_sparse_step), which llama.cpp's qwen3moe cannot load";
    return qwen_unsupported(c);
}

/* ------------------------------------------------------------------ the families */

#define N(a) (sizeof(a) / sizeof((a)[0]))
static const rf_gguf_family families[] = {
    {RF_ARCH_LLAMA, "llama", 1, top_names, llama_layer, N(top_names), N(llama_layer), llama_meta, N(llama_meta),
     llama_unsupported},
    {RF_ARCH_MISTRAL, "llama", 1, top_names, llama_layer, N(top_names), N(llama_layer), llama_meta, N(llama_meta),
     llama_unsupported},
    {RF_ARCH_MIXTRAL, "llama", 1, top_names, mixtral_layer, N(top_names), N(mixtral_layer), llama_meta,
     N(llama_meta), llama_unsupported},
    {RF_ARCH_QWEN2, "qwen2", 0, top_names, qwen2_layer, N(top_names), N(qwen2_layer), qwen_meta, N(qwen_meta),
     qwen_unsupported},
    {RF_ARCH_QWEN3, "qwen3", 0, top_names, qwen3_layer, N(top_names), N(qwen3_layer), qwen_meta, N(qwen_meta),
     qwen_unsupported},
    {RF_ARCH_QWEN3_MOE, "qwen3moe", 0, top_names, qwen3_moe_layer, N(top_names), N(qwen3_moe_layer), qwen3_moe_meta,
     N(qwen3_moe_meta), qwen3_moe_unsupported},
};

const rf_gguf_family *rf_gguf_family_of(rf_arch arch)
{
    for (size_t i = 0; i < N(families); i++)
        if (families[i].arch == arch) return &families[i];
    return NULL;
}

const rf_gguf_family *rf_gguf_family_by_name(const char *gguf_arch)
{
    for (size_t i = 0; gguf_arch && i < N(families); i++)
        if (!strcmp(families[i].gguf_arch, gguf_arch)) return &families[i];
    return NULL;
}

/* "model.layers.N." prefix: the layer and the rest of the name. */
static const char *layer_of(const char *name, int *layer)
{
    static const char p[] = "model.layers.";
    if (strncmp(name, p, sizeof p - 1)) return NULL;
    const char *s = name + sizeof p - 1;
    long v = 0;
    int n = 0;
    while (s[n] >= '0' && s[n] <= '9' && n < 8) v = v * 10 + (s[n++] - '0');
    if (!n || s[n] != '.' || (n > 1 && s[0] == '0')) return NULL;
    *layer = (int)v;
    return s + n + 1;
}

int rf_gguf_tensor_name(const rf_gguf_family *f, const char *hf, char *out, size_t cap)
{
    out[0] = '\0';
    const char *dot = strrchr(hf, '.');
    if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return 0;
    size_t mlen = (size_t)(dot - hf);
    int layer = 0;
    const char *rest = layer_of(hf, &layer);
    const rf_gguf_name *tab = rest ? f->layer : f->top;
    size_t n = rest ? f->nlayer : f->ntop;
    const char *mod = rest ? rest : hf;
    size_t len = rest ? (size_t)(dot - rest) : mlen;
    for (size_t i = 0; i < n; i++)
        if (strlen(tab[i].hf) == len && !memcmp(tab[i].hf, mod, len)) {
            int w = rest ? snprintf(out, cap, "blk.%d.%s%s", layer, tab[i].gguf, dot)
                         : snprintf(out, cap, "%s%s", tab[i].gguf, dot);
            if (w < 0 || (size_t)w >= cap) return out[0] = '\0', 0;
            return 1;
        }
    return 0;
}

int rf_gguf_hf_name(const rf_gguf_family *f, const char *gguf, char *out, size_t cap)
{
    out[0] = '\0';
    const char *dot = strrchr(gguf, '.');
    if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return 0;
    int layer = -1, n = 0;
    const char *mod = gguf;
    if (!strncmp(gguf, "blk.", 4)) {
        const char *s = gguf + 4;
        long v = 0;
        while (s[n] >= '0' && s[n] <= '9' && n < 8) v = v * 10 + (s[n++] - '0');
        if (!n || s[n] != '.') return 0;
        layer = (int)v;
        mod = s + n + 1;
    }
    size_t len = (size_t)(dot - mod);
    const rf_gguf_name *tab = layer >= 0 ? f->layer : f->top;
    size_t cnt = layer >= 0 ? f->nlayer : f->ntop;
    for (size_t i = 0; i < cnt; i++)
        if (strlen(tab[i].gguf) == len && !memcmp(tab[i].gguf, mod, len)) {
            int w = layer >= 0 ? snprintf(out, cap, "model.layers.%d.%s%s", layer, tab[i].hf, dot)
                               : snprintf(out, cap, "%s%s", tab[i].hf, dot);
            if (w < 0 || (size_t)w >= cap) return out[0] = '\0', 0;
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------------ reading a config back */

static rf_status meta_num(const rf_gguf *g, const char *arch, const char *key, int required, double *out, rf_err *err)
{
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t i = rf_gguf_find_kv(g, k);
    if (i < 0) {
        if (required) return rf_err_set(err, RF_ERR_FORMAT, "%s: no key %s", rf_gguf_path(g), k);
        return RF_ERR_NOT_FOUND;
    }
    rf_gguf_vtype t = rf_gguf_kv_type(g, (uint64_t)i);
    if (t == RF_GV_F32 || t == RF_GV_F64) return rf_gguf_get_float(g, k, out, err);
    int64_t v;
    rf_status s = rf_gguf_get_int(g, k, &v, err);
    if (!s) *out = (double)v;
    return s;
}

/* The metadata as the config.json of the Hugging Face checkpoint it describes, parsed by ramfit's
 * own config reader: every derived field (head sizes, layer flags, router conventions) is then the
 * same as for the checkpoint. */
rf_status rf_gguf_config(const rf_gguf *g, rf_config *c, const rf_gguf_family **famp, rf_err *err)
{
    memset(c, 0, sizeof *c);
    const char *as;
    uint64_t al;
    rf_status s = rf_gguf_get_str(g, "general.architecture", &as, &al, err);
    if (s) return s;
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(al < 31 ? al : 31), as);
    const rf_gguf_family *fam = rf_gguf_family_by_name(arch);
    if (!fam || al >= sizeof arch)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: architecture %s: ramfit's engine runs llama, qwen2, qwen3 and "
                          "qwen3moe GGUF files", rf_gguf_path(g), arch);
    double nexp = 0, v;
    if ((s = meta_num(g, arch, "expert_count", 0, &nexp, err)) && s != RF_ERR_NOT_FOUND) return s;
    s = RF_OK;
    if (!(nexp >= 0 && nexp <= 65536 && nexp == floor(nexp)))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s.expert_count is %g: must be a whole number from 0 to 65536",
                          rf_gguf_path(g), arch, nexp);
    if (!strcmp(arch, "llama") && nexp > 0) fam = rf_gguf_family_of(RF_ARCH_MIXTRAL);
    char key[160];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (rf_gguf_find_kv(g, key) >= 0 || rf_gguf_find_tensor(g, "rope_freqs.weight"))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: rope scaling (rope_freqs / %s) is not read by ramfit's engine yet",
                          rf_gguf_path(g), key);
    const rf_gguf_tensor *emb = rf_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->ndim != 2) return rf_err_set(err, RF_ERR_FORMAT, "%s: no 2-D token_embd.weight", rf_gguf_path(g));
    json_t *j = json_object();
    json_object_set_new(j, "model_type", json_string(rf_arch_name(fam->arch)));
    json_object_set_new(j, "architectures", json_pack("[s]", fam->arch == RF_ARCH_MIXTRAL ? "MixtralForCausalLM" : arch));
    static const struct { const char *key, *hf; int required; } keys[] = {
        {"embedding_length", "hidden_size", 1},        {"block_count", "num_hidden_layers", 1},
        {"attention.head_count", "num_attention_heads", 1}, {"attention.head_count_kv", "num_key_value_heads", 0},
        {"attention.key_length", "head_dim", 0},       {"feed_forward_length", "intermediate_size", 0},
        {"context_length", "max_position_embeddings", 0}, {"attention.layer_norm_rms_epsilon", "rms_norm_eps", 1},
        {"rope.freq_base", "rope_theta", 0},           {"expert_used_count", "num_experts_per_tok", 0},
        {"expert_feed_forward_length", "moe_intermediate_size", 0},
    };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        s = meta_num(g, arch, keys[k].key, keys[k].required, &v, err);
        if (s == RF_ERR_NOT_FOUND) { /* optional and absent: the parser's default, as llama.cpp's */
            s = RF_OK;
            continue;
        }
        if (s) break;
        /* checked here, naming the GGUF key: json_real drops a NaN/inf (rope_theta then silently
         * took its default) and a cast of 1.5 or 1e30 to an integer is no count */
        int real = !strcmp(keys[k].hf, "rms_norm_eps") || !strcmp(keys[k].hf, "rope_theta");
        if (!isfinite(v) || (real && v <= 0)) {
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: key %s.%s is %g: must be a finite number > 0", rf_gguf_path(g), arch,
                           keys[k].key, v);
            break;
        }
        if (!real && (v != floor(v) || v < 0 || v > INT32_MAX)) {
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: key %s.%s is %g: must be a whole number from 0 to %d", rf_gguf_path(g),
                           arch, keys[k].key, v, INT32_MAX);
            break;
        }
        json_object_set_new(j, keys[k].hf, real ? json_real(v) : json_integer((json_int_t)v));
    }
    if (!s && !json_object_get(j, "rope_theta")) json_object_set_new(j, "rope_theta", json_real(10000.0)); /* llama.cpp's default */
    if (!s && nexp > 0) {
        json_object_set_new(j, fam->arch == RF_ARCH_MIXTRAL ? "num_local_experts" : "num_experts", json_integer((json_int_t)nexp));
        json_object_set_new(j, "norm_topk_prob", json_true()); /* llama.cpp renormalises (mixtral: softmax of the chosen) */
        if (!json_object_get(j, "intermediate_size") && json_object_get(j, "moe_intermediate_size"))
            json_object_set(j, "intermediate_size", json_object_get(j, "moe_intermediate_size"));
        if (fam->arch == RF_ARCH_MIXTRAL && !json_object_get(j, "intermediate_size"))
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: no key %s.feed_forward_length", rf_gguf_path(g), arch);
    }
    if (!s) {
        json_object_set_new(j, "vocab_size", json_integer((json_int_t)emb->ne[1]));
        json_object_set_new(j, "tie_word_embeddings", json_boolean(rf_gguf_find_tensor(g, "output.weight") == NULL));
        json_object_set_new(j, "attention_bias", json_boolean(rf_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL));
        json_object_set_new(j, "mlp_bias", json_boolean(rf_gguf_find_tensor(g, "blk.0.ffn_up.bias") != NULL));
        json_object_set_new(j, "hidden_act", json_string("silu"));
        int64_t id;
        rf_err e2;
        if (!rf_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id, &e2)) json_object_set_new(j, "bos_token_id", json_integer(id));
        if (!rf_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &id, &e2)) json_object_set_new(j, "eos_token_id", json_integer(id));
    }
    char *text = s ? NULL : json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s) return s;
    if (!text) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    char label[512];
    snprintf(label, sizeof label, "%s (metadata as config.json)", rf_gguf_path(g));
    s = rf_config_parse(text, label, c, err);
    free(text);
    if (s) return s;
    /* llama-family q/k rows are stored interleaved per head (convert_hf_to_gguf's permutation):
     * roping adjacent pairs on them is the checkpoint's rotate_half on the original rows, and
     * q.k is unchanged as both are permuted alike */
    if (fam->permute_qk) c->rope_interleaved = 1;
    if (famp) *famp = fam;
    return RF_OK;
}
