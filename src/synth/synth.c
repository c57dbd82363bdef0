/* Synthetic checkpoints: the tensor names, shapes and config.json of a real architecture, with
 * weights that look like trained ones to a quantizer (scale varies by row, heavy tails, a few
 * large input channels in some layers), for tests and benchmarks at any size.
 *
 * Every value is a pure function of (seed, tensor name, element index) through a counter-based
 * generator: a 64-bit mix of the counter gives a uniform, which is mapped through a tabulated
 * inverse CDF (piecewise linear on a log-spaced grid of tail probabilities, so tails down to
 * p = 2^-33 are resolved). Tensors are produced in row blocks in parallel and written in order. */
#include "common/internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ presets (published configs) */

typedef struct preset {
    const char *name, *model_type, *arch;
    int hidden, inter, layers, heads, kv, head_dim, vocab, tie;
    int experts, topk, moe_inter;
    int mixtral; /* block_sparse_moe.experts.E.w1/w2/w3 naming */
    double rope_theta, rms_eps;
    int max_pos, bos, eos;
    double llama3_factor; /* > 0: rope_scaling llama3 with low 1, high 4, original 8192 */
} preset;

static const preset presets[] = {
    {"qwen3-0.6b", "qwen3", "Qwen3ForCausalLM", 1024, 3072, 28, 16, 8, 128, 151936, 1, 0, 0, 0, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen3-1.7b", "qwen3", "Qwen3ForCausalLM", 2048, 6144, 28, 16, 8, 128, 151936, 1, 0, 0, 0, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen3-4b", "qwen3", "Qwen3ForCausalLM", 2560, 9728, 36, 32, 8, 128, 151936, 1, 0, 0, 0, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen3-8b", "qwen3", "Qwen3ForCausalLM", 4096, 12288, 36, 32, 8, 128, 151936, 0, 0, 0, 0, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen3-14b", "qwen3", "Qwen3ForCausalLM", 5120, 17408, 40, 40, 8, 128, 151936, 0, 0, 0, 0, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen3-32b", "qwen3", "Qwen3ForCausalLM", 5120, 25600, 64, 64, 8, 128, 151936, 0, 0, 0, 0, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen3-30b-a3b", "qwen3_moe", "Qwen3MoeForCausalLM", 2048, 6144, 48, 32, 4, 128, 151936, 0, 128, 8, 768, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen3-235b-a22b", "qwen3_moe", "Qwen3MoeForCausalLM", 4096, 12288, 94, 64, 4, 128, 151936, 0, 128, 8, 1536, 0, 1e6, 1e-6, 40960, 151643, 151645, 0},
    {"qwen2.5-0.5b", "qwen2", "Qwen2ForCausalLM", 896, 4864, 24, 14, 2, 64, 151936, 1, 0, 0, 0, 0, 1e6, 1e-6, 32768, 151643, 151645, 0},
    {"qwen2.5-7b", "qwen2", "Qwen2ForCausalLM", 3584, 18944, 28, 28, 4, 128, 152064, 0, 0, 0, 0, 0, 1e6, 1e-6, 32768, 151643, 151645, 0},
    {"llama-3-8b", "llama", "LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128, 128256, 0, 0, 0, 0, 0, 5e5, 1e-5, 8192, 128000, 128001, 0},
    {"llama-3.1-8b", "llama", "LlamaForCausalLM", 4096, 14336, 32, 32, 8, 128, 128256, 0, 0, 0, 0, 0, 5e5, 1e-5, 131072, 128000, 128001, 8},
    {"llama-3.2-1b", "llama", "LlamaForCausalLM", 2048, 8192, 16, 32, 8, 64, 128256, 1, 0, 0, 0, 0, 5e5, 1e-5, 131072, 128000, 128001, 32},
    {"llama-3-70b", "llama", "LlamaForCausalLM", 8192, 28672, 80, 64, 8, 128, 128256, 0, 0, 0, 0, 0, 5e5, 1e-5, 8192, 128000, 128001, 0},
    {"mistral-7b", "mistral", "MistralForCausalLM", 4096, 14336, 32, 32, 8, 128, 32768, 0, 0, 0, 0, 0, 1e6, 1e-5, 32768, 1, 2, 0},
    {"mixtral-8x7b", "mixtral", "MixtralForCausalLM", 4096, 14336, 32, 32, 8, 128, 32000, 0, 8, 2, 14336, 1, 1e6, 1e-5, 32768, 1, 2, 0},
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

/* Resolved shapes: the preset with the scale and overrides applied. */
typedef struct shape {
    const preset *p;
    int hidden, inter, moe_inter, layers, heads, kv, head_dim, vocab, experts, topk;
} shape;

static rf_status resolve(const rf_synth_opts *o, shape *s, rf_err *err)
{
    const preset *p = find_preset(o->like);
    if (!p) {
        char list[1024];
        size_t n = 0;
        list[0] = '\0';
        for (int i = 0; i < NPRESETS && n + 1 < sizeof list; i++)
            n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", presets[i].name);
        return rf_err_set(err, RF_ERR_INVALID, "unknown architecture preset '%s' (known: %s)", o->like ? o->like : "", list);
    }
    double sc = o->scale > 0 ? o->scale : 1;
    if (sc > 1) return rf_err_set(err, RF_ERR_INVALID, "scale %g: must be in (0, 1]", sc);
    if (o->layers < 0 || o->vocab < 0 || o->experts < 0 || o->layers > 4096 || o->vocab > (1 << 24) || o->experts > 4096)
        return rf_err_set(err, RF_ERR_INVALID, "layers, vocab and experts must be positive and sane");
    if (o->experts && !p->experts) return rf_err_set(err, RF_ERR_INVALID, "preset %s is not a mixture of experts", p->name);
    memset(s, 0, sizeof *s);
    s->p = p;
    s->head_dim = p->head_dim;
    int ratio = p->heads / p->kv;
    s->kv = sc < 1 ? (int)lround(p->kv * sc) : p->kv;
    s->kv = s->kv < 1 ? 1 : s->kv;
    s->heads = s->kv * ratio;
    /* Keep hidden = heads * head_dim where the architecture has it, if that stays a multiple of 128. */
    if (sc == 1) s->hidden = p->hidden;
    else if (p->hidden == p->heads * p->head_dim && (s->heads * s->head_dim) % 128 == 0) s->hidden = s->heads * s->head_dim;
    else s->hidden = round128(p->hidden * sc);
    s->inter = sc < 1 ? round128(p->inter * sc) : p->inter;
    s->moe_inter = p->moe_inter ? (sc < 1 ? round128(p->moe_inter * sc) : p->moe_inter) : 0;
    s->layers = o->layers ? o->layers : p->layers;
    s->vocab = o->vocab ? o->vocab : p->vocab;
    s->experts = o->experts ? o->experts : p->experts;
    s->topk = p->topk < s->experts ? p->topk : s->experts;
    if (p->mixtral) s->moe_inter = s->inter;
    return RF_OK;
}

rf_status rf_synth_config(const rf_synth_opts *o, rf_config *out, rf_err *err)
{
    shape s;
    rf_status st = resolve(o, &s, err);
    if (st) return st;
    memset(out, 0, sizeof *out);
    const preset *p = s.p;
    out->arch = !strcmp(p->model_type, "qwen3") ? RF_ARCH_QWEN3 : !strcmp(p->model_type, "qwen3_moe") ? RF_ARCH_QWEN3_MOE
              : !strcmp(p->model_type, "qwen2") ? RF_ARCH_QWEN2 : !strcmp(p->model_type, "mixtral") ? RF_ARCH_MIXTRAL
              : !strcmp(p->model_type, "mistral") ? RF_ARCH_MISTRAL : RF_ARCH_LLAMA;
    snprintf(out->model_type, sizeof out->model_type, "%s", p->model_type);
    snprintf(out->architecture, sizeof out->architecture, "%s", p->arch);
    out->hidden_size = s.hidden;
    out->intermediate_size = s.inter;
    out->num_layers = s.layers;
    out->num_heads = s.heads;
    out->num_kv_heads = s.kv;
    out->head_dim = s.head_dim;
    out->vocab_size = s.vocab;
    out->tie_word_embeddings = p->tie;
    out->attention_bias = !strcmp(p->model_type, "qwen2");
    out->rms_norm_eps = p->rms_eps;
    out->rope_theta = p->rope_theta;
    out->max_position_embeddings = p->max_pos;
    out->num_experts = s.experts;
    out->experts_per_tok = s.topk;
    out->moe_intermediate_size = s.moe_inter;
    out->norm_topk_prob = s.experts ? 1 : 0;
    out->decoder_sparse_step = s.experts ? 1 : 0;
    out->bos_token_id = p->bos;
    out->eos_token_id = p->eos;
    out->torch_dtype = o->dtype ? o->dtype : RF_DT_BF16;
    if (p->llama3_factor > 0) {
        snprintf(out->rope_type, sizeof out->rope_type, "llama3");
        out->rope_factor = p->llama3_factor;
        out->rope_low_freq_factor = 1;
        out->rope_high_freq_factor = 4;
        out->rope_original_max_pos = 8192;
    }
    return RF_OK;
}

/* ------------------------------------------------------------------ config files */

static const char *torch_dtype_name(rf_dtype d)
{
    return d == RF_DT_F16 ? "float16" : d == RF_DT_F32 ? "float32" : "bfloat16";
}

static json_t *config_json(const shape *s, rf_dtype dt)
{
    const preset *p = s->p;
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", p->arch));
    json_object_set_new(j, "model_type", json_string(p->model_type));
    json_object_set_new(j, "hidden_size", json_integer(s->hidden));
    json_object_set_new(j, "intermediate_size", json_integer(s->inter));
    json_object_set_new(j, "num_hidden_layers", json_integer(s->layers));
    json_object_set_new(j, "num_attention_heads", json_integer(s->heads));
    json_object_set_new(j, "num_key_value_heads", json_integer(s->kv));
    json_object_set_new(j, "head_dim", json_integer(s->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(s->vocab));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(p->tie));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "rms_norm_eps", json_real(p->rms_eps));
    json_object_set_new(j, "rope_theta", json_real(p->rope_theta));
    json_object_set_new(j, "max_position_embeddings", json_integer(p->max_pos));
    json_object_set_new(j, "attention_bias", json_boolean(!strcmp(p->model_type, "qwen2")));
    json_object_set_new(j, "bos_token_id", json_integer(p->bos));
    json_object_set_new(j, "eos_token_id", json_integer(p->eos));
    json_object_set_new(j, "torch_dtype", json_string(torch_dtype_name(dt)));
    if (p->llama3_factor > 0)
        json_object_set_new(j, "rope_scaling", json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
                                                         p->llama3_factor, "low_freq_factor", 1.0, "high_freq_factor", 4.0,
                                                         "original_max_position_embeddings", 8192));
    if (s->experts && p->mixtral) {
        json_object_set_new(j, "num_local_experts", json_integer(s->experts));
        json_object_set_new(j, "num_experts_per_tok", json_integer(s->topk));
    } else if (s->experts) {
        json_object_set_new(j, "num_experts", json_integer(s->experts));
        json_object_set_new(j, "num_experts_per_tok", json_integer(s->topk));
        json_object_set_new(j, "moe_intermediate_size", json_integer(s->moe_inter));
        json_object_set_new(j, "norm_topk_prob", json_true());
        json_object_set_new(j, "decoder_sparse_step", json_integer(1));
        json_object_set_new(j, "mlp_only_layers", json_array());
    }
    json_object_set_new(j, "ramfit_synthetic", json_true());
    return j;
}

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

enum { K_NORM, K_BIAS, K_EMBED, K_LINEAR };

typedef struct tspec {
    char name[128];
    int ndim, kind, layer;
    int in_hidden; /* consumes the hidden state (gets the layer's outlier input channels) */
    uint64_t shape[2];
} tspec;

typedef struct tlist { tspec *t; uint64_t n, cap; } tlist;

static int add(tlist *l, int kind, int layer, int in_hidden, uint64_t r, uint64_t c, const char *fmt, ...)
    RF_PRINTF(7, 8);
static int add(tlist *l, int kind, int layer, int in_hidden, uint64_t r, uint64_t c, const char *fmt, ...)
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
    t->ndim = c ? 2 : 1;
    t->shape[0] = r;
    t->shape[1] = c;
    return 1;
}

static int build_list(const shape *s, tlist *l)
{
    const preset *p = s->p;
    const uint64_t H = (uint64_t)s->hidden, Q = (uint64_t)(s->heads * s->head_dim), KV = (uint64_t)(s->kv * s->head_dim);
    int ok = add(l, K_EMBED, -1, 0, (uint64_t)s->vocab, H, "model.embed_tokens.weight");
    int qwen3 = !strncmp(p->model_type, "qwen3", 5), bias = !strcmp(p->model_type, "qwen2");
    for (int L = 0; ok && L < s->layers; L++) {
        const char *pre = "model.layers";
        ok &= add(l, K_NORM, L, 0, H, 0, "%s.%d.input_layernorm.weight", pre, L);
        static const char *const qkv[3] = {"q", "k", "v"};
        for (int k = 0; k < 3; k++) {
            uint64_t rows = k ? KV : Q;
            ok &= add(l, K_LINEAR, L, 1, rows, H, "%s.%d.self_attn.%s_proj.weight", pre, L, qkv[k]);
            if (bias) ok &= add(l, K_BIAS, L, 0, rows, 0, "%s.%d.self_attn.%s_proj.bias", pre, L, qkv[k]);
        }
        ok &= add(l, K_LINEAR, L, 0, H, Q, "%s.%d.self_attn.o_proj.weight", pre, L);
        if (qwen3) {
            ok &= add(l, K_NORM, L, 0, (uint64_t)s->head_dim, 0, "%s.%d.self_attn.q_norm.weight", pre, L);
            ok &= add(l, K_NORM, L, 0, (uint64_t)s->head_dim, 0, "%s.%d.self_attn.k_norm.weight", pre, L);
        }
        ok &= add(l, K_NORM, L, 0, H, 0, "%s.%d.post_attention_layernorm.weight", pre, L);
        if (s->experts) {
            const char *blk = p->mixtral ? "block_sparse_moe" : "mlp";
            const uint64_t MI = (uint64_t)s->moe_inter, E = (uint64_t)s->experts;
            ok &= add(l, K_LINEAR, L, 1, E, H, "%s.%d.%s.gate.weight", pre, L, blk);
            for (int e = 0; ok && e < s->experts; e++) {
                const char *g = p->mixtral ? "w1" : "gate_proj", *u = p->mixtral ? "w3" : "up_proj",
                           *d = p->mixtral ? "w2" : "down_proj";
                ok &= add(l, K_LINEAR, L, 1, MI, H, "%s.%d.%s.experts.%d.%s.weight", pre, L, blk, e, g);
                ok &= add(l, K_LINEAR, L, 1, MI, H, "%s.%d.%s.experts.%d.%s.weight", pre, L, blk, e, u);
                ok &= add(l, K_LINEAR, L, 0, H, MI, "%s.%d.%s.experts.%d.%s.weight", pre, L, blk, e, d);
            }
        } else {
            const uint64_t I = (uint64_t)s->inter;
            ok &= add(l, K_LINEAR, L, 1, I, H, "%s.%d.mlp.gate_proj.weight", pre, L);
            ok &= add(l, K_LINEAR, L, 1, I, H, "%s.%d.mlp.up_proj.weight", pre, L);
            ok &= add(l, K_LINEAR, L, 0, H, I, "%s.%d.mlp.down_proj.weight", pre, L);
        }
    }
    if (ok) ok = add(l, K_NORM, -1, 0, H, 0, "model.norm.weight");
    if (ok && !p->tie) ok = add(l, K_LINEAR, -1, 0, (uint64_t)s->vocab, H, "lm_head.weight");
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
    const shape *s;
    const tspec *specs;
    dist d[D_COUNT];
    /* the current window */
    const struct gtask *tasks;
    void **bufs;
    float **fbuf;      /* per worker */
    rf_status *st;
    rf_err *err;
} sctx;

typedef struct gtask { uint64_t tensor, row0, nrows; } gtask;

#define GEN_BYTES (4ull << 20)
#define FCHUNK 4096

/* Standard normal from one draw (tables: cheaper than Box-Muller and exact enough). */
static float normal_of(const sctx *c, uint64_t key, uint64_t counter) { return dist_sample(&c->d[D_NORMAL], draw(key, counter)); }

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
    double base = t->kind == K_EMBED ? 0.02 : 0.5 / sqrt((double)t->shape[1]);
    tp->std = (float)(base * exp(0.25 * normal_of(c, lkey, 1) + 0.1 * normal_of(c, tp->key, ~1ull)));
    /* Some layers have a few large input channels (the same ones for every matrix reading the
     * hidden state in that layer), as trained LLMs do. */
    if (t->in_hidden && t->layer >= 0 && draw(lkey, 2) % 4 == 0) {
        uint64_t cols = t->shape[1];
        tp->colscale = malloc(cols * sizeof *tp->colscale);
        if (!tp->colscale) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; i < cols; i++) tp->colscale[i] = 1;
        int n = 2 + (int)(draw(lkey, 3) % 4);
        for (int k = 0; k < n; k++)
            tp->colscale[draw(lkey, 10 + (uint64_t)k) % cols] = (float)(10 + 40 * uniform01(draw(lkey, 20 + (uint64_t)k)));
    }
    return RF_OK;
}

static void gen_rows(const sctx *c, const tspec *t, const tparams *tp, uint64_t row0, uint64_t nrows, float *out,
                     void *dst, rf_dtype dt)
{
    const uint64_t cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
    const uint64_t rows = t->ndim == 2 ? nrows : 1;
    const dist *ds = &c->d[tp->dist];
    const uint64_t esz = rf_dtype_size(dt);
    if (t->ndim == 1) { /* norms and biases: one "row" */
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
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t row = row0 + r;
        /* log-normal row scale */
        float rs = tp->std * expf(0.3f * normal_of(c, tp->key ^ 0x5bd1e995u, row));
        for (uint64_t c0 = 0; c0 < cols; c0 += FCHUNK) {
            uint64_t n = cols - c0 < FCHUNK ? cols - c0 : FCHUNK;
            uint64_t base = row * cols + c0;
            for (uint64_t i = 0; i < n; i++) out[i] = rs * dist_sample(ds, draw(tp->key, base + i));
            if (tp->colscale)
                for (uint64_t i = 0; i < n; i++) out[i] *= tp->colscale[c0 + i];
            rf_convert_from_f32(dt, out, (char *)dst + (r * cols + c0) * esz, n, NULL);
        }
    }
}

static void gen_task(void *ctx, uint64_t i, int worker)
{
    sctx *c = ctx;
    const gtask *g = &c->tasks[i];
    const tspec *t = &c->specs[g->tensor];
    tparams tp;
    c->st[i] = tensor_params(c, t, &tp, &c->err[i]);
    if (c->st[i]) return;
    gen_rows(c, t, &tp, g->row0, g->nrows, c->fbuf[worker], c->bufs[i], c->o->dtype);
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

static uint64_t rows_of(const tspec *t) { return t->ndim == 2 ? t->shape[0] : 1; }
static uint64_t row_elems(const tspec *t) { return t->ndim == 2 ? t->shape[1] : t->shape[0]; }

static rf_status write_data(sctx *c, rf_stw *w, rf_pool *pool, const tlist *l, rf_progress *prog, uint64_t total,
                            rf_err *err)
{
    const int nt = rf_pool_threads(pool), wmax = 2 * nt;
    const uint64_t esz = rf_dtype_size(c->o->dtype);
    gtask *tasks = calloc((size_t)wmax, sizeof *tasks);
    c->bufs = calloc((size_t)wmax, sizeof *c->bufs);
    c->fbuf = calloc((size_t)nt, sizeof *c->fbuf);
    c->st = calloc((size_t)wmax, sizeof *c->st);
    c->err = calloc((size_t)wmax, sizeof *c->err);
    rf_status s = tasks && c->bufs && c->fbuf && c->st && c->err ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    uint64_t cap = GEN_BYTES;
    for (uint64_t i = 0; !s && i < l->n; i++) {
        uint64_t rb = row_elems(&l->t[i]) * esz;
        cap = rb > cap ? rb : cap; /* one row at least */
    }
    for (int i = 0; !s && i < wmax; i++)
        if (!(c->bufs[i] = malloc(cap))) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < nt; i++)
        if (!(c->fbuf[i] = malloc(FCHUNK * sizeof(float)))) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    uint64_t ti = 0, row = 0, done = 0;
    while (!s && ti < l->n) {
        int n = 0;
        while (n < wmax && ti < l->n) {
            const tspec *t = &l->t[ti];
            uint64_t rb = row_elems(t) * esz, per = GEN_BYTES / rb;
            per = per < 1 ? 1 : per;
            uint64_t left = rows_of(t) - row, take = left < per ? left : per;
            tasks[n++] = (gtask){ti, row, take};
            row += take;
            if (row == rows_of(t)) ti++, row = 0;
        }
        c->tasks = tasks;
        rf_pool_run(pool, (uint64_t)n, gen_task, c);
        for (int i = 0; !s && i < n; i++) {
            if (c->st[i]) { *err = c->err[i]; s = c->st[i]; break; }
            uint64_t bytes = tasks[i].nrows * row_elems(&l->t[tasks[i].tensor]) * esz;
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
    shape s;
    rf_status st = resolve(&o, &s, err);
    if (st) return st;
    if ((st = make_dir(out_dir, err))) return st;
    tlist l = {0};
    if (!build_list(&s, &l)) {
        free(l.t);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    sctx *c = calloc(1, sizeof *c);
    rf_pool *pool = NULL;
    rf_stw *w = NULL;
    if (!c) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    if (!st) {
        c->o = &o;
        c->s = &s;
        c->specs = l.t;
        for (int d = 0; d < D_COUNT; d++) dist_init(&c->d[d], d);
        st = rf_pool_create(o.threads, &pool, err);
    }
    rf_stw_opts wo = {.max_shard_bytes = o.max_shard_bytes ? o.max_shard_bytes : 5000000000ull, .basename = "model"};
    if (!st) st = rf_stw_create(out_dir, &wo, &w, err);
    if (!st) st = rf_stw_set_metadata(w, "format", "pt", err);
    uint64_t total = 0;
    for (uint64_t i = 0; !st && i < l.n; i++) {
        st = rf_stw_declare(w, l.t[i].name, o.dtype, l.t[i].ndim, l.t[i].shape, err);
        total += rows_of(&l.t[i]) * row_elems(&l.t[i]) * rf_dtype_size(o.dtype);
    }
    if (!st) st = write_data(c, w, pool, &l, progress, total, err);
    if (!st) st = rf_stw_finish(w, err);
    if (!st) st = write_json(out_dir, "config.json", config_json(&s, o.dtype), err);
    if (!st)
        st = write_json(out_dir, "generation_config.json",
                        json_pack("{s:i, s:i, s:b}", "bos_token_id", s.p->bos, "eos_token_id", s.p->eos, "do_sample", 0), err);
    rf_stw_free(w);
    rf_pool_free(pool);
    free(c);
    free(l.t);
    return st;
}
