/* Synthetic profiles: realistic shapes and byte counts with a simple error model, so the planner
 * can be tested and benchmarked at any scale without the analysis pass or real weights. */
#include "plan/plan_internal.h"
#include "arch/family.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t sm_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double sm_unif(uint64_t *s) { return (double)(sm_next(s) >> 11) * 0x1.0p-53; }
static double sm_normal(uint64_t *s)
{
    double u = sm_unif(s), v = sm_unif(s);
    return sqrt(-2 * log(u > 0 ? u : 1e-300)) * cos(6.283185307179586 * v);
}

static rf_status add_unit(rf_profile *p, const rf_psynth_opts *o, uint64_t *rng, const char *name, rf_role role, int layer,
                          int members, uint64_t rows, uint64_t cols, rf_err *err)
{
    if (o->random_shapes) {
        rows = 32 * (1 + sm_next(rng) % 256);
        cols = 128 * (1 + sm_next(rng) % 64);
    }
    rf_punit u;
    rf_punit_init(&u, name, role, layer, o->n_layers, rows, cols, rows * cols * (uint64_t)members, RF_DT_BF16);
    u.n_members = members;
    double rms = 0.02 * exp(0.3 * sm_normal(rng));
    u.ssq = (double)u.nparams * rms * rms;
    double kurt = fabs(sm_normal(rng)) * 2;
    u.stats = (rf_pstats){1e-4 * sm_normal(rng), rms, rms * (6 + kurt), kurt, 1e-5 * kurt};
    double k = exp(o->spread * sm_normal(rng)) * (1 + 0.1 * kurt);
    for (int c = 0; c < RF_QCFG_N; c++) {
        int bits = rf_cfg_bits(c), gs = rf_cfg_gs(c);
        if (cols % (uint64_t)gs) continue;
        /* ~6 dB per bit, larger groups a little worse, a little per-config noise */
        double d = 0.0095 * k * pow(4.0, 4 - bits) * pow(gs / 64.0, 0.3) * exp(0.05 * sm_normal(rng));
        rf_qerr e[2];
        for (int m = 0; m < 2; m++) {
            double dm = m ? d * (0.75 + 0.1 * sm_unif(rng)) : d;
            /* max_abs is a float difference in real profiles (the analysis measures it in float) */
            e[m] = (rf_qerr){dm * u.ssq, u.ssq, (double)(float)(rms * sqrt(dm) * (3 + kurt))};
        }
        uint64_t bytes = rf_quant_bytes(u.nparams, bits, gs, RF_DT_BF16);
        rf_status s = rf_punit_add_cand(&u, bits, gs, bytes, o->modes & 1 ? &e[0] : NULL, o->modes & 2 ? &e[1] : NULL, err);
        if (s) return s;
    }
    return rf_profile_add_unit(p, &u, err);
}

static rf_status add_norm(rf_profile *p, const char *name, int layer, uint64_t n, rf_err *err)
{
    rf_pother x = {.role = RF_ROLE_NORM, .layer = layer, .nparams = n, .dtype = RF_DT_BF16, .bytes = 2 * n};
    snprintf(x.name, sizeof x.name, "%s", name);
    return rf_profile_add_other(p, &x, err);
}

/* The units of a preset's model from its family table: one per MLX module (a table row), members
 * per expert or head; vectors as other tensors. */
static rf_status synth_like(const rf_psynth_opts *o, rf_profile **out, rf_err *err)
{
    rf_synth_opts so;
    rf_synth_opts_default(&so);
    so.like = o->like;
    so.layers = o->n_layers;
    rf_config *c = malloc(sizeof *c);
    if (!c) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status s = rf_synth_config(&so, c, err);
    const rf_family *f = s ? NULL : rf_family_of(c->arch);
    rf_pmodel m = {0};
    if (!s) {
        snprintf(m.name, sizeof m.name, "synthetic-%s-%dL", o->like, c->num_layers);
        snprintf(m.architecture, sizeof m.architecture, "%s", c->architecture);
        snprintf(m.model_type, sizeof m.model_type, "%s", c->model_type);
        m.hidden_size = c->hidden_size, m.intermediate_size = c->intermediate_size, m.num_layers = c->num_layers;
        m.num_heads = c->num_heads, m.num_kv_heads = c->num_kv_heads, m.head_dim = c->head_dim;
        m.vocab_size = c->vocab_size, m.tie_word_embeddings = c->tie_word_embeddings;
        m.num_experts = c->num_experts, m.experts_per_tok = c->experts_per_tok;
        m.moe_intermediate_size = c->moe_intermediate_size;
    }
    uint64_t rng = o->seed;
    m.fingerprint = sm_next(&rng);
    rf_profile *p = NULL;
    if (!s) s = rf_profile_create(&m, o->modes, RF_PROFILE_ALL_CONFIGS, &p, err);
    rf_psynth_opts uo = *o;
    uo.n_layers = c ? c->num_layers : 0;
    for (int l = -1; !s && l < c->num_layers; l++)
        for (int i = 0; !s && i < f->nrules; i++) {
            const rf_trule *r = &f->rules[i];
            if ((r->layer != 0) != (l >= 0) || !rf_rule_needed(c, r, l)) continue;
            char name[200];
            const char *path = r->mlx ? r->mlx : r->path;
            if (l >= 0) snprintf(name, sizeof name, "%smodel.layers.%d.%s", c->tensor_prefix, l, path);
            else snprintf(name, sizeof name, "%s%s", c->tensor_prefix, path);
            uint64_t rows = rf_dim(c, (rf_dimsym)r->out), cols = rf_dim(c, (rf_dimsym)r->in);
            if (!cols) {
                s = add_norm(p, strcat(name, ".weight"), l, rows, err);
                continue;
            }
            int members = r->layout == RF_LAY_PLAIN ? 1
                        : r->layout == RF_LAY_KVB_K || r->layout == RF_LAY_KVB_V || r->layout == RF_LAY_HEADS
                        ? c->num_heads : c->num_experts;
            rf_role role = rf_slot_role((rf_slot)r->slot);
            s = add_unit(p, &uo, &rng, name, role, l, members, rows, cols, err);
        }
    if (!s) s = rf_profile_add_file(p, "model.safetensors", rf_profile_full_bytes(p) + 4096, err);
    free(c);
    if (s) { rf_profile_free(p); return s; }
    *out = p;
    return RF_OK;
}

rf_status rf_profile_synth(const rf_psynth_opts *o, rf_profile **out, rf_err *err)
{
    if (o->like) return synth_like(o, out, err);
    rf_pmodel m = {0};
    snprintf(m.name, sizeof m.name, "synthetic-%dL-%d", o->n_layers, o->hidden);
    snprintf(m.architecture, sizeof m.architecture, "%s", o->n_experts ? "Qwen3MoeForCausalLM" : "Qwen3ForCausalLM");
    snprintf(m.model_type, sizeof m.model_type, "%s", o->n_experts ? "qwen3_moe" : "qwen3");
    m.hidden_size = o->hidden;
    m.intermediate_size = o->ffn;
    m.num_layers = o->n_layers;
    m.num_heads = o->n_heads;
    m.num_kv_heads = o->n_kv_heads;
    m.head_dim = o->head_dim;
    m.vocab_size = o->vocab;
    m.tie_word_embeddings = o->tied;
    m.num_experts = o->n_experts;
    m.experts_per_tok = o->experts_per_tok;
    m.moe_intermediate_size = o->n_experts ? o->ffn : 0;
    uint64_t rng = o->seed;
    m.fingerprint = sm_next(&rng);
    rf_profile *p;
    rf_status s = rf_profile_create(&m, o->modes, RF_PROFILE_ALL_CONFIGS, &p, err);
    if (s) return s;
    uint64_t h = (uint64_t)o->hidden, f = (uint64_t)o->ffn, q = (uint64_t)(o->n_heads * o->head_dim),
             kv = (uint64_t)(o->n_kv_heads * o->head_dim);
    char name[160];
    s = add_unit(p, o, &rng, "model.embed_tokens", RF_ROLE_EMBED, -1, 1, (uint64_t)o->vocab, h, err);
    for (int l = 0; !s && l < o->n_layers; l++) {
        static const char *const attn[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        static const rf_role aroles[] = {RF_ROLE_ATTN_Q, RF_ROLE_ATTN_K, RF_ROLE_ATTN_V, RF_ROLE_ATTN_O};
        const uint64_t arows[] = {q, kv, kv, h}, acols[] = {h, h, h, q};
        for (int i = 0; !s && i < 4; i++) {
            snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, attn[i]);
            s = add_unit(p, o, &rng, name, aroles[i], l, 1, arows[i], acols[i], err);
        }
        static const char *const mlp[] = {"gate_proj", "up_proj", "down_proj"};
        const rf_role mroles[] = {o->n_experts ? RF_ROLE_EXPERT_GATE : RF_ROLE_MLP_GATE,
                                  o->n_experts ? RF_ROLE_EXPERT_UP : RF_ROLE_MLP_UP,
                                  o->n_experts ? RF_ROLE_EXPERT_DOWN : RF_ROLE_MLP_DOWN};
        const uint64_t mrows[] = {f, f, h}, mcols[] = {h, h, f};
        for (int i = 0; !s && i < 3; i++) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.%s%s", l, o->n_experts ? "switch_mlp." : "", mlp[i]);
            s = add_unit(p, o, &rng, name, mroles[i], l, o->n_experts ? o->n_experts : 1, mrows[i], mcols[i], err);
        }
        if (!s && o->n_experts) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.gate", l);
            s = add_unit(p, o, &rng, name, RF_ROLE_ROUTER, l, 1, (uint64_t)o->n_experts, h, err);
        }
        const char *norms[] = {"input_layernorm", "post_attention_layernorm", "self_attn.q_norm", "self_attn.k_norm"};
        const uint64_t nn[] = {h, h, (uint64_t)o->head_dim, (uint64_t)o->head_dim};
        for (int i = 0; !s && i < 4; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, norms[i]);
            s = add_norm(p, name, l, nn[i], err);
        }
    }
    if (!s) s = add_norm(p, "model.norm.weight", -1, h, err);
    if (!s && !o->tied) s = add_unit(p, o, &rng, "lm_head", RF_ROLE_LM_HEAD, -1, 1, (uint64_t)o->vocab, h, err);
    if (!s) s = rf_profile_add_file(p, "model.safetensors", rf_profile_full_bytes(p) + 4096, err);
    if (s) { rf_profile_free(p); return s; }
    *out = p;
    return RF_OK;
}
