/* The model catalogue: every tensor of a checkpoint classified by name (role, layer, expert),
 * checked against config.json, and grouped into quantization units (design.md's modules).
 *
 * A unit is what one (bits, gs) choice applies to: one Linear/Embedding weight, or all experts
 * of one projection in one layer, which MLX stores stacked as switch_mlp (mlx-lm's qwen3_moe.py
 * and mixtral.py sanitize()). Unit names are the MLX module paths a writer emits. */
#include "arch/model_internal.h"
#include "io/safetensors_internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ roles and names */

/* Also the role spelling of profile and plan files (docs/profile.md): keep these stable. */
static const char *const role_names[RF_ROLE_COUNT] = {
    [RF_ROLE_OTHER] = "other",         [RF_ROLE_EMBED] = "embed",
    [RF_ROLE_LM_HEAD] = "lm_head",     [RF_ROLE_ATTN_Q] = "attn_q",
    [RF_ROLE_ATTN_K] = "attn_k",       [RF_ROLE_ATTN_V] = "attn_v",
    [RF_ROLE_ATTN_O] = "attn_o",       [RF_ROLE_Q_NORM] = "q_norm",
    [RF_ROLE_K_NORM] = "k_norm",       [RF_ROLE_MLP_GATE] = "mlp_gate",
    [RF_ROLE_MLP_UP] = "mlp_up",       [RF_ROLE_MLP_DOWN] = "mlp_down",
    [RF_ROLE_EXPERT_GATE] = "expert_gate", [RF_ROLE_EXPERT_UP] = "expert_up",
    [RF_ROLE_EXPERT_DOWN] = "expert_down", [RF_ROLE_ROUTER] = "router",
    [RF_ROLE_NORM] = "norm",           [RF_ROLE_BIAS] = "bias",
};

const char *rf_role_name(rf_role r)
{
    if ((unsigned)r < RF_ROLE_COUNT) return role_names[r];
    return "unknown";
}

/* Roles whose weight is a Linear/Embedding matrix, i.e. forms a quantization unit. */
static int role_is_matrix(rf_role r)
{
    switch (r) {
    case RF_ROLE_EMBED: case RF_ROLE_LM_HEAD:
    case RF_ROLE_ATTN_Q: case RF_ROLE_ATTN_K: case RF_ROLE_ATTN_V: case RF_ROLE_ATTN_O:
    case RF_ROLE_MLP_GATE: case RF_ROLE_MLP_UP: case RF_ROLE_MLP_DOWN:
    case RF_ROLE_EXPERT_GATE: case RF_ROLE_EXPERT_UP: case RF_ROLE_EXPERT_DOWN:
    case RF_ROLE_ROUTER:
        return 1;
    default:
        return 0;
    }
}

static int role_is_expert(rf_role r)
{
    return r == RF_ROLE_EXPERT_GATE || r == RF_ROLE_EXPERT_UP || r == RF_ROLE_EXPERT_DOWN;
}

/* Strict decimal index: digits only, no sign, no leading zero, below 2^24. Returns the number
 * of characters used (0 when S does not start with a valid index). */
static int parse_index(const char *s, int *out)
{
    int n = 0;
    long v = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        if (n > 0 && v == 0) return 0; /* leading zero */
        v = v * 10 + (s[n] - '0');
        if (v >= (1L << 24)) return 0;
        n++;
    }
    if (n) *out = (int)v;
    return n;
}

typedef struct name_rule {
    const char *path; /* module path below model.layers.N. (or the whole path) */
    rf_role role;
    int stacked;
} name_rule;

static const name_rule top_rules[] = {
    {"model.embed_tokens", RF_ROLE_EMBED, 0},
    {"lm_head", RF_ROLE_LM_HEAD, 0},
    {"model.norm", RF_ROLE_NORM, 0},
};

static const name_rule layer_rules[] = {
    {"input_layernorm", RF_ROLE_NORM, 0},
    {"post_attention_layernorm", RF_ROLE_NORM, 0},
    {"self_attn.q_proj", RF_ROLE_ATTN_Q, 0},
    {"self_attn.k_proj", RF_ROLE_ATTN_K, 0},
    {"self_attn.v_proj", RF_ROLE_ATTN_V, 0},
    {"self_attn.o_proj", RF_ROLE_ATTN_O, 0},
    {"self_attn.q_norm", RF_ROLE_Q_NORM, 0},
    {"self_attn.k_norm", RF_ROLE_K_NORM, 0},
    {"mlp.gate_proj", RF_ROLE_MLP_GATE, 0},
    {"mlp.up_proj", RF_ROLE_MLP_UP, 0},
    {"mlp.down_proj", RF_ROLE_MLP_DOWN, 0},
    {"mlp.gate", RF_ROLE_ROUTER, 0},
    {"block_sparse_moe.gate", RF_ROLE_ROUTER, 0},
    {"mlp.switch_mlp.gate_proj", RF_ROLE_EXPERT_GATE, 1},
    {"mlp.switch_mlp.up_proj", RF_ROLE_EXPERT_UP, 1},
    {"mlp.switch_mlp.down_proj", RF_ROLE_EXPERT_DOWN, 1},
    {"block_sparse_moe.switch_mlp.gate_proj", RF_ROLE_EXPERT_GATE, 1},
    {"block_sparse_moe.switch_mlp.up_proj", RF_ROLE_EXPERT_UP, 1},
    {"block_sparse_moe.switch_mlp.down_proj", RF_ROLE_EXPERT_DOWN, 1},
};

/* Per-expert projections: HF name below "<block>.experts.E." -> MLX switch_mlp projection. */
typedef struct expert_rule {
    const char *block, *proj, *mlx_proj;
    rf_role role;
} expert_rule;

static const expert_rule expert_rules[] = {
    {"mlp", "gate_proj", "gate_proj", RF_ROLE_EXPERT_GATE},
    {"mlp", "up_proj", "up_proj", RF_ROLE_EXPERT_UP},
    {"mlp", "down_proj", "down_proj", RF_ROLE_EXPERT_DOWN},
    {"block_sparse_moe", "w1", "gate_proj", RF_ROLE_EXPERT_GATE},
    {"block_sparse_moe", "w3", "up_proj", RF_ROLE_EXPERT_UP},
    {"block_sparse_moe", "w2", "down_proj", RF_ROLE_EXPERT_DOWN},
};

static int match_rule(const name_rule *rules, size_t n, const char *path, size_t len, rf_name_info *out)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(rules[i].path) == len && !memcmp(rules[i].path, path, len)) {
            out->role = rules[i].role;
            out->stacked = rules[i].stacked;
            return 1;
        }
    return 0;
}

/* "<block>.experts.E.<proj>" (PATH of LEN chars) -> role, expert and the switch_mlp block. */
static const expert_rule *match_expert(const char *path, size_t len, int *expert)
{
    for (size_t i = 0; i < sizeof expert_rules / sizeof expert_rules[0]; i++) {
        const expert_rule *r = &expert_rules[i];
        size_t bl = strlen(r->block), pl = strlen(r->proj);
        if (len <= bl + 9 || memcmp(path, r->block, bl) || memcmp(path + bl, ".experts.", 9)) continue;
        const char *p = path + bl + 9;
        int n = parse_index(p, expert);
        if (!n || p[n] != '.') continue;
        if ((size_t)(path + len - (p + n + 1)) == pl && !memcmp(p + n + 1, r->proj, pl)) return r;
    }
    return NULL;
}

void rf_classify_name(const char *name, rf_name_info *out)
{
    memset(out, 0, sizeof *out);
    out->role = RF_ROLE_OTHER;
    out->layer = out->expert = -1;
    if (!name) return;
    const char *dot = strrchr(name, '.');
    if (!dot) return;
    const char *suffix = dot + 1;
    int is_weight = !strcmp(suffix, "weight"), is_bias = !strcmp(suffix, "bias");
    int is_aux = !strcmp(suffix, "scales") || !strcmp(suffix, "biases");
    if (!is_weight && !is_bias && !is_aux) return;
    size_t mlen = (size_t)(dot - name);
    if (mlen >= sizeof out->module) return;

    rf_name_info r = *out;
    const char *lp = "model.layers.";
    size_t lpl = strlen(lp);
    const expert_rule *er = NULL;
    if (match_rule(top_rules, sizeof top_rules / sizeof top_rules[0], name, mlen, &r)) {
        snprintf(r.module, sizeof r.module, "%.*s", (int)mlen, name);
    } else if (mlen > lpl && !memcmp(name, lp, lpl)) {
        int n = parse_index(name + lpl, &r.layer);
        if (!n || name[lpl + n] != '.') return;
        const char *rest = name + lpl + n + 1;
        size_t rlen = (size_t)(dot - rest);
        if (match_rule(layer_rules, sizeof layer_rules / sizeof layer_rules[0], rest, rlen, &r)) {
            snprintf(r.module, sizeof r.module, "%.*s", (int)mlen, name);
        } else if ((er = match_expert(rest, rlen, &r.expert))) {
            r.role = er->role;
            snprintf(r.module, sizeof r.module, "model.layers.%d.%s.switch_mlp.%s", r.layer, er->block, er->mlx_proj);
        } else {
            return;
        }
    } else {
        return;
    }

    int matrix = role_is_matrix(r.role);
    if (is_weight) {
        r.unit_weight = matrix;
    } else if (is_bias && matrix && !role_is_expert(r.role) && r.role != RF_ROLE_ROUTER) {
        r.role = RF_ROLE_BIAS;
    } else if (is_aux && matrix) {
        r.quant_aux = 1;
    } else {
        return; /* e.g. a norm's .bias or .scales: not a layout these families have */
    }
    *out = r;
}

/* ------------------------------------------------------------------ the catalogue */

struct rf_model {
    char *dir;
    rf_config cfg;
    rf_st *st;
    uint64_t ntensors;
    rf_tinfo *tinfo;
    uint64_t nunits, cap_units;
    rf_unit *units;
    int **member_bufs; /* per unit, owned (units[u].members points here) */
    rf_nametab unit_tab;
    uint64_t nparams;
};

const char *rf_model_dir(const rf_model *m) { return m->dir; }
const rf_config *rf_model_config(const rf_model *m) { return &m->cfg; }
const rf_st *rf_model_st(const rf_model *m) { return m->st; }
uint64_t rf_model_tensor_count(const rf_model *m) { return m->ntensors; }
const rf_tinfo *rf_model_tinfo(const rf_model *m, uint64_t i) { return i < m->ntensors ? &m->tinfo[i] : NULL; }
uint64_t rf_model_unit_count(const rf_model *m) { return m->nunits; }
const rf_unit *rf_model_unit(const rf_model *m, uint64_t i) { return i < m->nunits ? &m->units[i] : NULL; }
uint64_t rf_model_param_count(const rf_model *m) { return m->nparams; }

int64_t rf_model_unit_find(const rf_model *m, const char *name)
{
    uint64_t idx;
    if (!m || !name || !rf_nametab_get(&m->unit_tab, name, &idx)) return -1;
    return (int64_t)idx;
}

void rf_model_free(rf_model *m)
{
    if (!m) return;
    for (uint64_t u = 0; u < m->nunits; u++) free(m->member_bufs[u]);
    free(m->member_bufs);
    free(m->units);
    free(m->tinfo);
    rf_nametab_free(&m->unit_tab);
    rf_st_close(m->st);
    free(m->dir);
    free(m);
}

static void shape_str(const rf_tensor *t, char *buf, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int d = 0; d < t->ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Expected shape of a float tensor of this role from config.json; 0 dims when not checked. */
static int expected_shape(const rf_config *c, const rf_name_info *ni, int layer_moe, uint64_t *shp)
{
    uint64_t H = (uint64_t)c->hidden_size, V = (uint64_t)c->vocab_size, hd = (uint64_t)c->head_dim;
    uint64_t Q = (uint64_t)c->num_heads * hd, KV = (uint64_t)c->num_kv_heads * hd;
    uint64_t I = (uint64_t)c->intermediate_size, MI = (uint64_t)c->moe_intermediate_size;
    int n = 2;
    switch (ni->role) {
    case RF_ROLE_EMBED: case RF_ROLE_LM_HEAD: shp[0] = V, shp[1] = H; break;
    case RF_ROLE_ATTN_Q: shp[0] = Q, shp[1] = H; break;
    case RF_ROLE_ATTN_K: case RF_ROLE_ATTN_V: shp[0] = KV, shp[1] = H; break;
    case RF_ROLE_ATTN_O: shp[0] = H, shp[1] = Q; break;
    case RF_ROLE_Q_NORM: case RF_ROLE_K_NORM: shp[0] = hd, n = 1; break;
    case RF_ROLE_NORM: shp[0] = H, n = 1; break;
    case RF_ROLE_ROUTER: shp[0] = (uint64_t)c->num_experts, shp[1] = H; break;
    case RF_ROLE_MLP_GATE: case RF_ROLE_MLP_UP:
        if (layer_moe) return 0; /* a dense MLP in a MoE layer: not a layout we know */
        shp[0] = I, shp[1] = H; break;
    case RF_ROLE_MLP_DOWN:
        if (layer_moe) return 0;
        shp[0] = H, shp[1] = I; break;
    case RF_ROLE_EXPERT_GATE: case RF_ROLE_EXPERT_UP: shp[0] = MI, shp[1] = H; break;
    case RF_ROLE_EXPERT_DOWN: shp[0] = H, shp[1] = MI; break;
    default: return 0;
    }
    if (ni->stacked) {
        memmove(shp + 1, shp, (size_t)n * sizeof *shp);
        shp[0] = (uint64_t)c->num_experts;
        n++;
    }
    return n;
}

static rf_status check_tensor(const rf_model *m, const rf_tensor *t, const rf_name_info *ni, rf_err *err)
{
    const rf_config *c = &m->cfg;
    if (ni->layer >= c->num_layers)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: layer %d, but config.json has %d layers", t->file,
                          t->name, ni->layer, c->num_layers);
    if (ni->expert >= 0 && ni->expert >= c->num_experts)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: expert %d, but config.json has %d experts", t->file,
                          t->name, ni->expert, c->num_experts);
    /* MLX-quantized (U32) weights and their companions have packed shapes: nothing to check. */
    if (ni->quant_aux || !rf_dtype_is_float(t->dtype)) return RF_OK;
    uint64_t shp[3];
    int n = expected_shape(c, ni, rf_config_layer_is_moe(c, ni->layer), shp);
    if (!n) return RF_OK;
    int ok = t->ndim == n;
    for (int d = 0; ok && d < n; d++) ok = t->shape[d] == shp[d];
    if (ok) return RF_OK;
    char have[160], want[160];
    shape_str(t, have, sizeof have);
    rf_tensor w = {.ndim = n};
    memcpy(w.shape, shp, (size_t)n * sizeof *shp);
    shape_str(&w, want, sizeof want);
    return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s (%s): shape %s, but config.json implies %s", t->file,
                      t->name, rf_role_name(ni->role), have, want);
}

static rf_status new_unit(rf_model *m, const rf_name_info *ni, int nslots, rf_err *err)
{
    if (m->nunits == m->cap_units) {
        uint64_t cap = m->cap_units ? m->cap_units * 2 : 64;
        rf_unit *u = realloc(m->units, cap * sizeof *u);
        if (!u) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
        m->units = u;
        int **b = realloc(m->member_bufs, cap * sizeof *b);
        if (!b) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
        m->member_bufs = b;
        m->cap_units = cap;
    }
    int *mem = malloc((size_t)nslots * sizeof *mem);
    if (!mem) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
    for (int i = 0; i < nslots; i++) mem[i] = -1;
    rf_unit *u = &m->units[m->nunits];
    memset(u, 0, sizeof *u);
    memcpy(u->name, ni->module, sizeof u->name);
    u->role = ni->role;
    u->layer = ni->layer;
    u->n_members = nslots;
    u->members = mem;
    m->member_bufs[m->nunits++] = mem;
    return RF_OK;
}

static int same_layout(const rf_tensor *a, const rf_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

static int first_member(const rf_unit *u)
{
    for (int k = 0; k < u->n_members; k++)
        if (u->members[k] >= 0) return u->members[k];
    return -1; /* not reached: a unit is created with its first member */
}

/* Put tensor I into its unit, creating the unit on its first member. TAB maps module -> unit
 * and borrows the module strings of INFOS. */
static rf_status add_to_unit(rf_model *m, rf_nametab *tab, const rf_name_info *infos, uint64_t i, rf_err *err)
{
    const rf_name_info *ni = &infos[i];
    const rf_tensor *t = m->tinfo[i].t;
    int per_expert = ni->expert >= 0;
    if (ni->stacked && t->ndim != 3)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: a stacked expert weight must be 3-D [experts, out, in]",
                          t->file, t->name);
    uint64_t u;
    int put = rf_nametab_put(tab, ni->module, m->nunits, &u);
    if (put < 0) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
    if (put == 1) {
        rf_status st = new_unit(m, ni, per_expert ? m->cfg.num_experts : 1, err);
        if (st) return st;
        u = m->nunits - 1;
        m->units[u].n_experts = per_expert ? m->cfg.num_experts : ni->stacked ? (int)t->shape[0] : 0;
    } else if (!per_expert || m->units[u].n_experts == 0 || m->units[u].n_members == 1) {
        /* A second tensor for a plain or stacked module: e.g. experts both stacked and per-expert. */
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: module %s already has weight %s", t->file, t->name,
                          ni->module, m->tinfo[first_member(&m->units[u])].t->name);
    }
    rf_unit *un = &m->units[u];
    int slot = per_expert ? ni->expert : 0;
    if (un->members[slot] >= 0)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: expert %d of %s appears twice", t->file, t->name,
                          ni->expert, ni->module);
    for (int k = 0; k < un->n_members; k++) {
        if (un->members[k] < 0) continue;
        const rf_tensor *ref = m->tinfo[un->members[k]].t;
        if (!same_layout(ref, t)) {
            char a[160], b[160];
            shape_str(t, a, sizeof a);
            shape_str(ref, b, sizeof b);
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: %s %s differs from %s %s (experts of %s must match)",
                              t->file, t->name, rf_dtype_name(t->dtype), a, rf_dtype_name(ref->dtype), b, ni->module);
        }
        break;
    }
    m->member_bufs[u][slot] = (int)i;
    m->tinfo[i].unit = (int)u;
    return RF_OK;
}

/* The HF name expert E of a per-expert unit would have, from a present member's name. */
static void expert_name(const char *present, int e, char *buf, size_t cap)
{
    const char *p = strstr(present, ".experts.");
    if (!p) { snprintf(buf, cap, "%s", present); return; }
    p += 9;
    const char *q = p;
    while (*q >= '0' && *q <= '9') q++;
    snprintf(buf, cap, "%.*s%d%s", (int)(p - present), present, e, q);
}

static rf_status finish_units(rf_model *m, rf_err *err)
{
    for (uint64_t u = 0; u < m->nunits; u++) {
        rf_unit *un = &m->units[u];
        int present = first_member(un);
        for (int k = 0; k < un->n_members; k++) {
            if (un->members[k] >= 0) continue;
            char want[300];
            const rf_tensor *pt = m->tinfo[present].t;
            expert_name(pt->name, k, want, sizeof want);
            return rf_err_set(err, RF_ERR_FORMAT, "%s: expert %d of %d of %s is missing (no tensor %s)", pt->file,
                              k, un->n_members, un->name, want);
        }
        const rf_tensor *t = m->tinfo[un->members[0]].t;
        if (un->n_experts && un->n_experts != m->cfg.num_experts)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: %d experts, but config.json has %d", t->file,
                              t->name, un->n_experts, m->cfg.num_experts);
        int mat_dims = t->ndim - (un->n_members == 1 && un->n_experts ? 1 : 0);
        un->dtype = t->dtype;
        un->rows = t->ndim >= 2 ? t->shape[t->ndim - 2] : t->ndim == 1 ? 1 : 0;
        un->cols = t->ndim >= 1 ? t->shape[t->ndim - 1] : 0;
        if (!rf_mul_u64(t->nelem, (uint64_t)un->n_members, &un->nparams))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: size overflows", t->file, t->name);
        int gs_ok = 0;
        for (int g = 32; g <= 128; g *= 2) gs_ok |= un->cols % (uint64_t)g == 0;
        un->quantizable = mat_dims == 2 && rf_dtype_is_float(t->dtype) && un->cols > 0 && gs_ok;
    }
    return RF_OK;
}

/* Every layer needs attention and an MLP (dense or experts + router); the model needs an
 * embedding and, unless tied, an lm_head. Catches truncated or mixed-up checkpoints early. */
static rf_status check_complete(const rf_model *m, const rf_name_info *infos, rf_err *err)
{
    const rf_config *c = &m->cfg;
    uint32_t *seen = calloc((size_t)c->num_layers + 1, sizeof *seen); /* [L]: outside the stack */
    if (!seen) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < m->ntensors; i++)
        if (infos[i].unit_weight) seen[infos[i].layer < 0 ? c->num_layers : infos[i].layer] |= 1u << infos[i].role;
    const char *label = m->ntensors ? m->tinfo[0].t->file : m->dir;
    rf_status st = RF_OK;
    uint32_t top = seen[c->num_layers];
    if (!(top & 1u << RF_ROLE_EMBED))
        st = rf_err_set(err, RF_ERR_FORMAT, "%s: no model.embed_tokens.weight", label);
    else if (!c->tie_word_embeddings && !(top & 1u << RF_ROLE_LM_HEAD))
        st = rf_err_set(err, RF_ERR_FORMAT, "%s: no lm_head.weight and config.json says the embeddings are not tied",
                        label);
    static const struct { rf_role role; const char *what; } need[] = {
        {RF_ROLE_ATTN_Q, "self_attn.q_proj"}, {RF_ROLE_ATTN_K, "self_attn.k_proj"},
        {RF_ROLE_ATTN_V, "self_attn.v_proj"}, {RF_ROLE_ATTN_O, "self_attn.o_proj"},
    };
    for (int l = 0; l < c->num_layers && !st; l++) {
        for (size_t k = 0; k < sizeof need / sizeof need[0] && !st; k++)
            if (!(seen[l] & 1u << need[k].role))
                st = rf_err_set(err, RF_ERR_FORMAT, "%s: layer %d has no %s weight", label, l, need[k].what);
        int moe = rf_config_layer_is_moe(c, l);
        uint32_t mlp = moe ? (1u << RF_ROLE_EXPERT_GATE | 1u << RF_ROLE_EXPERT_UP | 1u << RF_ROLE_EXPERT_DOWN |
                              1u << RF_ROLE_ROUTER)
                           : (1u << RF_ROLE_MLP_GATE | 1u << RF_ROLE_MLP_UP | 1u << RF_ROLE_MLP_DOWN);
        if (!st && (seen[l] & mlp) != mlp)
            st = rf_err_set(err, RF_ERR_FORMAT, "%s: layer %d lacks part of its %s (gate/up/down%s)", label, l,
                            moe ? "MoE block" : "MLP", moe ? "/router" : "");
    }
    free(seen);
    return st;
}

static rf_status build(rf_model *m, rf_err *err)
{
    m->ntensors = rf_st_count(m->st);
    m->tinfo = calloc(m->ntensors ? m->ntensors : 1, sizeof *m->tinfo);
    rf_name_info *infos = calloc(m->ntensors ? m->ntensors : 1, sizeof *infos);
    rf_nametab tab = {0};
    rf_status st = RF_OK;
    if (!m->tinfo || !infos) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory (%llu tensors)",
                                             (unsigned long long)m->ntensors);
    for (uint64_t i = 0; i < m->ntensors && !st; i++) {
        const rf_tensor *t = rf_st_get(m->st, i);
        rf_name_info *ni = &infos[i];
        rf_classify_name(t->name, ni);
        m->tinfo[i] = (rf_tinfo){.t = t, .role = ni->role, .layer = ni->layer, .expert = ni->expert,
                                 .unit = -1, .quant_aux = ni->quant_aux};
        if (!ni->quant_aux) m->nparams += t->nelem;
        st = check_tensor(m, t, ni, err);
        if (!st && ni->unit_weight) st = add_to_unit(m, &tab, infos, i, err);
    }
    if (!st) st = finish_units(m, err);
    if (!st) st = check_complete(m, infos, err);
    /* The build table borrowed INFOS' strings; the kept one borrows the units' own names. */
    for (uint64_t u = 0; u < m->nunits && !st; u++)
        if (rf_nametab_put(&m->unit_tab, m->units[u].name, u, NULL) < 0)
            st = rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
    rf_nametab_free(&tab);
    free(infos);
    return st;
}

static rf_status model_new(const char *label, rf_model **out, rf_err *err)
{
    rf_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(label))) {
        free(m);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    *out = m;
    return RF_OK;
}

rf_status rf_model_from_parts(const char *label, const rf_config *cfg, rf_st *st, rf_model **out, rf_err *err)
{
    rf_model *m = NULL;
    if (!label || !cfg || !st || !out) {
        rf_st_close(st);
        return rf_err_set(err, RF_ERR_INVALID, "rf_model_from_parts: NULL argument");
    }
    *out = NULL;
    rf_status s = model_new(label, &m, err);
    if (s) {
        rf_st_close(st);
        return s;
    }
    m->cfg = *cfg;
    m->st = st;
    if ((s = build(m, err))) {
        rf_model_free(m);
        return s;
    }
    *out = m;
    return RF_OK;
}

rf_status rf_model_open(const char *model_dir, rf_model **out, rf_err *err)
{
    if (!model_dir || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_model_open: NULL argument");
    *out = NULL;
    rf_config cfg;
    rf_st *st = NULL;
    rf_status s = rf_config_load(model_dir, &cfg, err);
    if (!s) s = rf_st_open(model_dir, &st, err);
    if (!s) s = rf_model_from_parts(model_dir, &cfg, st, out, err);
    return s;
}
