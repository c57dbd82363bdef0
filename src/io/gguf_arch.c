/* Per-family GGUF tables: tensor names, metadata keys and the q/k row convention of llama.cpp's
 * architecture for each family ramfit runs (what convert_hf_to_gguf.py writes for it, read from
 * llama.cpp's conversion code and llama-arch.cpp). */
#include "io/gguf_arch.h"

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
    case RF_GS_ROPE_BASE: return c->rope_theta > 0 ? c->rope_theta : 10000.0;
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

static const char *rope_unsupported(const rf_config *c)
{
    if (c->rope_type[0] && strcmp(c->rope_type, "llama3") && strcmp(c->rope_type, "default"))
        return "its rope_scaling type has no GGUF mapping in ramfit (llama3 only)";
    return NULL;
}

static const char *llama_unsupported(const rf_config *c) { return rope_unsupported(c); }

static const char *qwen_unsupported(const rf_config *c)
{
    if (c->rope_type[0] && strcmp(c->rope_type, "default")) return "llama.cpp's qwen2/qwen3 take no rope_scaling from ramfit";
    return NULL;
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

static rf_status meta_int(const rf_gguf *g, const char *arch, const char *key, int required, int64_t def, int *out,
                          rf_err *err)
{
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v = def;
    rf_status s = rf_gguf_get_int(g, k, &v, err);
    if (s == RF_ERR_NOT_FOUND && !required) s = RF_OK, v = def;
    if (s) return s;
    if (v < 0 || v > (1 << 30)) return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s = %lld is out of range", rf_gguf_path(g), k, (long long)v);
    *out = (int)v;
    return RF_OK;
}

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
    char key[160];
    snprintf(key, sizeof key, "%s.expert_count", arch);
    int64_t nexp = 0;
    if (rf_gguf_find_kv(g, key) >= 0 && (s = rf_gguf_get_int(g, key, &nexp, err))) return s;
    if (!strcmp(arch, "llama") && nexp > 0) fam = rf_gguf_family_of(RF_ARCH_MIXTRAL);
    c->arch = fam->arch;
    snprintf(c->model_type, sizeof c->model_type, "%s", rf_arch_name(fam->arch));
    snprintf(c->architecture, sizeof c->architecture, "gguf:%s", arch);
    int ctx = 0, kvh = 0, hd = 0, exp_ffn = 0;
    if ((s = meta_int(g, arch, "embedding_length", 1, 0, &c->hidden_size, err)) ||
        (s = meta_int(g, arch, "block_count", 1, 0, &c->num_layers, err)) ||
        (s = meta_int(g, arch, "attention.head_count", 1, 0, &c->num_heads, err)) ||
        (s = meta_int(g, arch, "feed_forward_length", nexp == 0, 0, &c->intermediate_size, err)) ||
        (s = meta_int(g, arch, "context_length", 0, 2048, &ctx, err)) ||
        (s = meta_int(g, arch, "attention.head_count_kv", 0, c->num_heads, &kvh, err)) ||
        (s = meta_int(g, arch, "attention.key_length", 0, c->num_heads ? c->hidden_size / c->num_heads : 0, &hd, err)) ||
        (s = meta_int(g, arch, "expert_used_count", nexp > 0, 0, &c->experts_per_tok, err)) ||
        (s = meta_int(g, arch, "expert_feed_forward_length", 0, c->intermediate_size, &exp_ffn, err)))
        return s;
    c->num_kv_heads = kvh;
    c->head_dim = hd;
    c->max_position_embeddings = ctx;
    c->num_experts = (int)nexp;
    if (nexp > 0) {
        c->moe_intermediate_size = exp_ffn;
        c->decoder_sparse_step = 1;
        c->norm_topk_prob = 1; /* llama.cpp renormalises the top-k weights of both (mixtral: softmax over the chosen) */
    }
    double v;
    snprintf(key, sizeof key, "%s.rope.freq_base", arch);
    c->rope_theta = 10000.0; /* llama.cpp's default when the key is missing */
    if (rf_gguf_find_kv(g, key) >= 0) {
        if ((s = rf_gguf_get_float(g, key, &v, err))) return s;
        c->rope_theta = v;
    }
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
    if ((s = rf_gguf_get_float(g, key, &v, err))) return s;
    c->rms_norm_eps = v;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (rf_gguf_find_kv(g, key) >= 0 || rf_gguf_find_tensor(g, "rope_freqs.weight"))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: rope scaling (rope_freqs / %s) is not read by ramfit's engine yet",
                          rf_gguf_path(g), key);
    const rf_gguf_tensor *emb = rf_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->ndim != 2) return rf_err_set(err, RF_ERR_FORMAT, "%s: no 2-D token_embd.weight", rf_gguf_path(g));
    c->vocab_size = (int)emb->ne[1];
    c->tie_word_embeddings = rf_gguf_find_tensor(g, "output.weight") == NULL;
    c->attention_bias = rf_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    int64_t id;
    c->bos_token_id = c->eos_token_id = -1;
    if (!rf_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id, err)) c->bos_token_id = (int)id;
    if (!rf_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &id, err)) c->eos_token_id = (int)id;
    c->torch_dtype = RF_DT_INVALID;
    if (famp) *famp = fam;
    if (err) rf_err_clear(err);
    return RF_OK;
}
