/* The model catalogue: every tensor of a checkpoint classified by its family's table (role, slot,
 * layer, expert), checked against config.json, and grouped into quantization units (design.md's
 * modules) whose members are read through views (view.c).
 *
 * A unit is what one (bits, gs) choice applies to: one Linear/Embedding weight, all experts of one
 * projection in one layer (MLX stacks them: switch_mlp, SwitchGLU), or all heads of an MLA
 * up-projection (MultiLinear). Unit names are the MLX module paths a writer emits. The same table
 * rows serve the engine (by slot), the writers (unit names, layouts) and synth (names, shapes). */
#include "arch/model_internal.h"
#include "io/safetensors_internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ roles */

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
    [RF_ROLE_ATTN_QKV] = "attn_qkv",   [RF_ROLE_MLP_GATE_UP] = "mlp_gate_up",
    [RF_ROLE_SHARED_GATE] = "shared_gate", [RF_ROLE_SHARED_UP] = "shared_up",
    [RF_ROLE_SHARED_DOWN] = "shared_down", [RF_ROLE_ATTN_Q_A] = "attn_q_a",
    [RF_ROLE_ATTN_Q_B] = "attn_q_b",   [RF_ROLE_ATTN_KV_A] = "attn_kv_a",
    [RF_ROLE_ATTN_K_B] = "attn_k_b",   [RF_ROLE_ATTN_V_B] = "attn_v_b",
};

const char *rf_role_name(rf_role r)
{
    if ((unsigned)r < RF_ROLE_COUNT) return role_names[r];
    return "unknown";
}

static int slot_is_matrix(rf_slot s)
{
    switch (s) {
    case RF_SLOT_NONE: case RF_SLOT_FINAL_NORM: case RF_SLOT_ATTN_NORM: case RF_SLOT_MLP_NORM:
    case RF_SLOT_POST_ATTN_NORM: case RF_SLOT_POST_MLP_NORM: case RF_SLOT_Q_NORM: case RF_SLOT_K_NORM:
    case RF_SLOT_Q_A_NORM: case RF_SLOT_KV_A_NORM: case RF_SLOT_ROUTER_BIAS: case RF_SLOT_COUNT:
        return 0;
    default:
        return 1;
    }
}

static int layout_members_per_expert(rf_layout l) { return l == RF_LAY_EXPERT; }

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

/* ------------------------------------------------------------------ names */

typedef enum { K_WEIGHT, K_BIAS, K_AUX, K_EXACT, K_FP8 } name_kind;

typedef struct match {
    const rf_trule *r;
    int layer, expert;
    name_kind kind;
} match;

/* Whether PATH (a rule path, may hold "{E}") equals S[0..len), reading the expert index. */
static int path_eq(const char *path, const char *s, size_t len, int *expert)
{
    const char *e = strstr(path, "{E}");
    if (!e) return strlen(path) == len && !memcmp(path, s, len);
    size_t pre = (size_t)(e - path), post = strlen(e + 3);
    if (len < pre + post + 1 || memcmp(s, path, pre)) return 0;
    int n = parse_index(s + pre, expert);
    return n && pre + (size_t)n + post == len && !memcmp(s + pre + n, e + 3, post);
}

/* The rows of F matching the name REST (below the layer prefix when LAYERED) with suffix
 * handling; up to MAX matches (a fused tensor feeds two units). */
static int match_rules(const rf_family *f, const char *rest, int layered, match *out, int max)
{
    int n = 0;
    size_t len = strlen(rest);
    const char *dot = strrchr(rest, '.');
    for (int i = 0; i < f->nrules && n < max; i++) {
        const rf_trule *r = &f->rules[i];
        if (r->layer != layered) continue;
        int expert = -1;
        if (r->exact) {
            if (path_eq(r->path, rest, len, &expert)) out[n++] = (match){r, -1, expert, K_EXACT};
            else if (len > 10 && !strcmp(rest + len - 10, "_scale_inv") && path_eq(r->path, rest, len - 10, &expert))
                out[n++] = (match){r, -1, expert, K_FP8};
            continue;
        }
        if (!dot || !path_eq(r->path, rest, (size_t)(dot - rest), &expert)) continue;
        const char *suf = dot + 1;
        name_kind k;
        if (!strcmp(suf, "weight")) k = K_WEIGHT;
        else if (!strcmp(suf, "bias")) k = K_BIAS;
        else if (!strcmp(suf, "scales") || !strcmp(suf, "biases")) k = K_AUX;
        else if (!strcmp(suf, "weight_scale_inv")) k = K_FP8;
        else continue;
        out[n++] = (match){r, -1, expert, k};
    }
    return n;
}

/* "model.layers.N." -> N and the rest; 0 when NAME is not a layer tensor. */
static int layer_of(const char *name, int *layer, const char **rest)
{
    static const char lp[] = "model.layers.";
    if (strncmp(name, lp, sizeof lp - 1)) return 0;
    int n = parse_index(name + sizeof lp - 1, layer);
    if (!n || name[sizeof lp - 1 + n] != '.') return 0;
    *rest = name + sizeof lp - 1 + n + 1;
    return 1;
}

static void unit_name(const rf_config *c, const match *m, char *out, size_t cap)
{
    const char *p = m->r->mlx ? m->r->mlx : m->r->path;
    if (m->r->layer) snprintf(out, cap, "%smodel.layers.%d.%s", c->tensor_prefix, m->layer, p);
    else snprintf(out, cap, "%s%s", c->tensor_prefix, p);
}

/* Roles of unknown families from the name: the planner's priors where the name says. */
static rf_role generic_role(const char *module)
{
    static const struct { const char *part; rf_role role; } parts[] = {
        {"embed", RF_ROLE_EMBED},      {"lm_head", RF_ROLE_LM_HEAD}, {"q_proj", RF_ROLE_ATTN_Q},
        {"k_proj", RF_ROLE_ATTN_K},    {"v_proj", RF_ROLE_ATTN_V},   {"o_proj", RF_ROLE_ATTN_O},
        {"qkv_proj", RF_ROLE_ATTN_QKV}, {"gate_up_proj", RF_ROLE_MLP_GATE_UP},
        {"gate_proj", RF_ROLE_MLP_GATE}, {"up_proj", RF_ROLE_MLP_UP}, {"down_proj", RF_ROLE_MLP_DOWN},
    };
    const char *last = strrchr(module, '.');
    last = last ? last + 1 : module;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (strstr(last, parts[i].part)) {
            if (strstr(module, "experts") && parts[i].role >= RF_ROLE_MLP_GATE && parts[i].role <= RF_ROLE_MLP_DOWN)
                return (rf_role)(parts[i].role - RF_ROLE_MLP_GATE + RF_ROLE_EXPERT_GATE);
            return parts[i].role;
        }
    return RF_ROLE_OTHER;
}

static void classify(const rf_config *c, const rf_family *f, const char *name, rf_name_info *out, match *ms, int *nm)
{
    memset(out, 0, sizeof *out);
    out->role = RF_ROLE_OTHER;
    out->layer = out->expert = -1;
    *nm = 0;
    if (!name) return;
    size_t pl = strlen(c->tensor_prefix);
    if (strncmp(name, c->tensor_prefix, pl)) return; /* a wrapper's vision tower and projector */
    const char *body = name + pl, *rest = body;
    int layer = -1;
    int layered = layer_of(body, &layer, &rest);
    if (f->arch == RF_ARCH_GENERIC) {
        const char *dot = strrchr(body, '.');
        if (!dot || (size_t)(dot - name) >= sizeof out->module) return;
        int w = !strcmp(dot + 1, "weight"), aux = !strcmp(dot + 1, "scales") || !strcmp(dot + 1, "biases");
        if (!w && !aux) return;
        snprintf(out->module, sizeof out->module, "%.*s", (int)(dot - name), name);
        out->layer = layered ? layer : -1;
        out->role = generic_role(out->module);
        out->quant_aux = aux;
        out->unit_weight = w; /* whether it is 2-D float is the catalogue's to say */
        return;
    }
    match m[4];
    int n = match_rules(f, rest, layered, m, 4);
    if (!n) return;
    for (int i = 0; i < n; i++) m[i].layer = layered ? layer : -1;
    const match *a = &m[0];
    rf_slot slot = (rf_slot)a->r->slot;
    int matrix = slot_is_matrix(slot);
    out->layer = a->layer;
    out->expert = a->expert;
    out->slot = slot;
    out->role = rf_slot_role(slot);
    out->stacked = a->r->layout != RF_LAY_PLAIN && a->r->layout != RF_LAY_EXPERT;
    unit_name(c, a, out->module, sizeof out->module);
    switch (a->kind) {
    case K_WEIGHT: case K_EXACT: out->unit_weight = matrix; break;
    case K_BIAS:
        if (!matrix || a->r->bias == RF_BIAS_NO) goto other;
        out->role = RF_ROLE_BIAS;
        break;
    case K_AUX:
        if (!matrix) goto other;
        out->quant_aux = 1;
        break;
    case K_FP8: break;
    }
    for (int i = 0; i < n; i++) ms[i] = m[i];
    *nm = n;
    return;
other:
    memset(out, 0, sizeof *out);
    out->role = RF_ROLE_OTHER;
    out->layer = out->expert = -1;
}

void rf_classify_name(const rf_config *c, const char *name, rf_name_info *out)
{
    match m[4];
    int n;
    static const rf_config none;
    if (!c) c = &none;
    const rf_family *f = rf_family_of(c->arch);
    if (!f) f = &rf_family_llama;
    classify(c, f, name, out, m, &n);
}

/* ------------------------------------------------------------------ the catalogue */

typedef struct unit_ext {
    rf_mview *views;
    uint64_t first_tensor;
    int keep;      /* the rule says mlx-lm keeps it */
    const rf_trule *rule;
} unit_ext;

struct rf_model {
    char *dir;
    rf_config cfg;
    const rf_family *fam;
    rf_st *st;
    uint64_t ntensors;
    rf_tinfo *tinfo;
    uint64_t nunits, cap_units;
    rf_unit *units;
    unit_ext *ext;
    int **member_bufs; /* per unit, owned (units[u].members points here) */
    rf_nametab unit_tab;
    uint64_t nparams;
    int nlayers_tab;   /* layers in the slot tables (the model's) */
    int *slot_unit, *slot_vec, *slot_bias; /* [(layer + 1) * RF_SLOT_COUNT + slot], -1 when empty */
};

const char *rf_model_dir(const rf_model *m) { return m->dir; }
const rf_config *rf_model_config(const rf_model *m) { return &m->cfg; }
const rf_st *rf_model_st(const rf_model *m) { return m->st; }
uint64_t rf_model_tensor_count(const rf_model *m) { return m->ntensors; }
const rf_tinfo *rf_model_tinfo(const rf_model *m, uint64_t i) { return i < m->ntensors ? &m->tinfo[i] : NULL; }
uint64_t rf_model_unit_count(const rf_model *m) { return m->nunits; }
const rf_unit *rf_model_unit(const rf_model *m, uint64_t i) { return i < m->nunits ? &m->units[i] : NULL; }
uint64_t rf_model_param_count(const rf_model *m) { return m->nparams; }
const rf_family *rf_model_family(const rf_model *m) { return m->fam; }
const rf_mview *rf_model_unit_views(const rf_model *m, uint64_t u) { return u < m->nunits ? m->ext[u].views : NULL; }
uint64_t rf_model_unit_first_tensor(const rf_model *m, uint64_t u) { return m->ext[u].first_tensor; }
int rf_model_unit_mlx_quantizable(const rf_model *m, uint64_t u) { return u < m->nunits && !m->ext[u].keep; }

int64_t rf_model_unit_index(const rf_model *m, const rf_unit *u)
{
    if (!u || u < m->units || u >= m->units + m->nunits) return -1;
    return u - m->units;
}

int64_t rf_model_unit_find(const rf_model *m, const char *name)
{
    uint64_t idx;
    if (!m || !name || !rf_nametab_get(&m->unit_tab, name, &idx)) return -1;
    return (int64_t)idx;
}

static int slot_index(const rf_model *m, int layer, rf_slot s)
{
    if (layer < -1 || layer >= m->nlayers_tab || (unsigned)s >= RF_SLOT_COUNT) return -1;
    return (layer + 1) * RF_SLOT_COUNT + (int)s;
}

const rf_unit *rf_model_slot_unit(const rf_model *m, int layer, rf_slot s)
{
    int i = slot_index(m, layer, s);
    return i >= 0 && m->slot_unit[i] >= 0 ? &m->units[m->slot_unit[i]] : NULL;
}

const rf_tensor *rf_model_slot_vector(const rf_model *m, int layer, rf_slot s)
{
    int i = slot_index(m, layer, s);
    return i >= 0 && m->slot_vec[i] >= 0 ? m->tinfo[m->slot_vec[i]].t : NULL;
}

const rf_tensor *rf_model_slot_bias(const rf_model *m, int layer, rf_slot s)
{
    int i = slot_index(m, layer, s);
    return i >= 0 && m->slot_bias[i] >= 0 ? m->tinfo[m->slot_bias[i]].t : NULL;
}

void rf_model_free(rf_model *m)
{
    if (!m) return;
    for (uint64_t u = 0; u < m->nunits; u++) {
        free(m->member_bufs[u]);
        free(m->ext[u].views);
    }
    free(m->member_bufs);
    free(m->ext);
    free(m->units);
    free(m->tinfo);
    free(m->slot_unit);
    free(m->slot_vec);
    free(m->slot_bias);
    rf_nametab_free(&m->unit_tab);
    rf_st_close(m->st);
    free(m->dir);
    free(m);
}

static void shape_str(int ndim, const uint64_t *shape, char *buf, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int d = 0; d < ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static rf_status shape_error(const rf_tensor *t, const rf_trule *r, int n, const uint64_t *want, rf_err *err)
{
    char have[160], exp[160];
    shape_str(t->ndim, t->shape, have, sizeof have);
    shape_str(n, want, exp, sizeof exp);
    return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s (%s): shape %s, but config.json implies %s", t->file, t->name,
                      rf_role_name(rf_slot_role((rf_slot)r->slot)), have, exp);
}

/* Views of the members of a unit made from tensor T by rule R (one expert for per-expert rows). */
static void make_views(const rf_config *c, const rf_trule *r, const rf_tensor *t, int expert, rf_mview *v, int nmem)
{
    uint64_t srows = t->ndim >= 2 ? t->nelem / t->shape[t->ndim - 1] : 1, scols = t->ndim ? t->shape[t->ndim - 1] : 1;
    rf_mview base = {.t = t, .srows = srows, .scols = scols};
    switch ((rf_layout)r->layout) {
    case RF_LAY_PLAIN:
        base.rows = t->ndim >= 2 ? srows : 1, base.cols = scols;
        v[0] = base;
        return;
    case RF_LAY_EXPERT:
        base.rows = srows, base.cols = scols;
        v[expert] = base;
        return;
    default: break;
    }
    uint64_t n = (uint64_t)(nmem > 0 ? nmem : 1);
    for (uint64_t k = 0; k < n; k++) {
        rf_mview x = base;
        switch ((rf_layout)r->layout) {
        case RF_LAY_STACKED: case RF_LAY_HEADS:
            x.rows = srows / n, x.cols = scols, x.r0 = k * x.rows;
            break;
        case RF_LAY_STACKED_T: /* [E, in, out] */
            x.rows = scols, x.cols = srows / n, x.r0 = k * x.cols, x.transposed = 1;
            break;
        case RF_LAY_STACKED_T2A: case RF_LAY_STACKED_T2B: /* [E, in, 2 out] */
            x.rows = scols / 2, x.cols = srows / n, x.r0 = k * x.cols, x.transposed = 1;
            x.c0 = r->layout == RF_LAY_STACKED_T2B ? x.rows : 0;
            break;
        case RF_LAY_STACKED_R2A: case RF_LAY_STACKED_R2B: /* [E, 2 out, in] */
            x.rows = srows / n / 2, x.cols = scols, x.r0 = k * 2 * x.rows + (r->layout == RF_LAY_STACKED_R2B ? x.rows : 0);
            break;
        case RF_LAY_KVB_K: { /* [H (nope + v), kv_lora]: rows h(nope+v) .. +nope, transposed */
            uint64_t nope = (uint64_t)c->qk_nope_head_dim, per = srows / n;
            x.rows = scols, x.cols = nope, x.r0 = k * per, x.transposed = 1;
            break;
        }
        case RF_LAY_KVB_V: {
            uint64_t nope = (uint64_t)c->qk_nope_head_dim, per = srows / n;
            x.rows = per - nope, x.cols = scols, x.r0 = k * per + nope;
            break;
        }
        default: break;
        }
        v[k] = x;
    }
}

static rf_status new_unit(rf_model *m, const char *name, rf_role role, int layer, int nslots, rf_err *err)
{
    if (m->nunits == m->cap_units) {
        uint64_t cap = m->cap_units ? m->cap_units * 2 : 64;
        rf_unit *u = realloc(m->units, cap * sizeof *u);
        if (!u) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
        m->units = u;
        int **b = realloc(m->member_bufs, cap * sizeof *b);
        if (!b) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
        m->member_bufs = b;
        unit_ext *x = realloc(m->ext, cap * sizeof *x);
        if (!x) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
        m->ext = x;
        m->cap_units = cap;
    }
    int *mem = malloc((size_t)nslots * sizeof *mem);
    rf_mview *views = calloc((size_t)nslots, sizeof *views);
    if (!mem || !views) {
        free(mem);
        free(views);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
    }
    for (int i = 0; i < nslots; i++) mem[i] = -1;
    rf_unit *u = &m->units[m->nunits];
    memset(u, 0, sizeof *u);
    snprintf(u->name, sizeof u->name, "%s", name);
    u->role = role;
    u->layer = layer;
    u->n_members = nslots;
    u->members = mem;
    m->member_bufs[m->nunits] = mem;
    m->ext[m->nunits] = (unit_ext){.views = views};
    m->nunits++;
    return RF_OK;
}

static int first_member(const rf_unit *u)
{
    for (int k = 0; k < u->n_members; k++)
        if (u->members[k] >= 0) return u->members[k];
    return -1;
}

static int same_layout(const rf_tensor *a, const rf_tensor *b)
{
    if (a->dtype != b->dtype || a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

/* Put tensor I into the unit of match M (creating the unit on its first member). TAB maps unit
 * names to indices while building. */
static rf_status add_to_unit(rf_model *m, rf_nametab *tab, uint64_t i, const match *ma, const char *uname, rf_err *err)
{
    const rf_tensor *t = m->tinfo[i].t;
    const rf_trule *r = ma->r;
    const rf_config *c = &m->cfg;
    int per_expert = layout_members_per_expert((rf_layout)r->layout);
    uint64_t shp[3];
    int nmem = 1, n = rf_rule_source_shape(c, r, shp);
    switch ((rf_layout)r->layout) {
    case RF_LAY_PLAIN: break;
    case RF_LAY_EXPERT: nmem = c->num_experts; break;
    case RF_LAY_KVB_K: case RF_LAY_KVB_V:
        if (t->ndim != 2) return shape_error(t, r, n, shp, err);
        nmem = c->num_heads;
        break;
    default: /* banks: members from the tensor's leading axis (checked against the config after) */
        if (t->ndim != 3)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: a stacked weight must be 3-D [members, ...]", t->file,
                              t->name);
        nmem = (int)t->shape[0];
        break;
    }
    if (nmem < 1) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: no members", t->file, t->name);
    uint64_t u;
    int put = rf_nametab_put(tab, uname, m->nunits, &u);
    if (put < 0) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
    if (put == 1) {
        rf_status st = new_unit(m, uname, rf_slot_role((rf_slot)r->slot), ma->layer, nmem, err);
        if (st) return st;
        u = m->nunits - 1;
        m->units[u].n_experts = (r->slot >= RF_SLOT_X_GATE && r->slot <= RF_SLOT_X_DOWN) ? nmem : 0;
        m->ext[u].first_tensor = i;
        m->units[u].bank = r->layout != RF_LAY_PLAIN;
        m->ext[u].keep = r->keep;
        m->ext[u].rule = r;
    } else if (!per_expert || m->units[u].n_members == 1 || !m->ext[u].rule ||
               m->ext[u].rule->layout != RF_LAY_EXPERT) {
        /* A second tensor for a module: e.g. experts both stacked and per-expert. */
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: module %s already has weight %s", t->file, t->name, uname,
                          m->tinfo[first_member(&m->units[u])].t->name);
    }
    rf_unit *un = &m->units[u];
    int slot = per_expert ? ma->expert : 0;
    if (per_expert && (slot < 0 || slot >= un->n_members))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: expert %d, but config.json has %d experts", t->file, t->name,
                          slot, un->n_members);
    if (un->members[slot] >= 0)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: expert %d of %s appears twice", t->file, t->name,
                          ma->expert, uname);
    for (int k = 0; k < un->n_members; k++) {
        if (un->members[k] < 0) continue;
        const rf_tensor *ref = m->tinfo[un->members[k]].t;
        if (!same_layout(ref, t)) {
            char a[160], b[160];
            shape_str(t->ndim, t->shape, a, sizeof a);
            shape_str(ref->ndim, ref->shape, b, sizeof b);
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: %s %s differs from %s %s (experts of %s must match)",
                              t->file, t->name, rf_dtype_name(t->dtype), a, rf_dtype_name(ref->dtype), b, uname);
        }
        break;
    }
    if (per_expert) {
        m->member_bufs[u][slot] = (int)i;
    } else {
        for (int k = 0; k < un->n_members; k++) m->member_bufs[u][k] = (int)i;
    }
    make_views(c, r, t, slot, m->ext[u].views, un->n_members);
    if (m->tinfo[i].unit < 0) m->tinfo[i].unit = (int)u;
    return RF_OK;
}

/* The expected shape of a plain or per-expert weight, a stacked bank's, or a vector's. MLX
 * quantized (U32) weights and their companions have packed shapes: not checked here (the MLX
 * reader checks them against bits and group size). */
static rf_status check_shape(const rf_model *m, const rf_tensor *t, const match *ma, rf_err *err)
{
    const rf_config *c = &m->cfg;
    const rf_trule *r = ma->r;
    if (ma->kind == K_AUX || ma->kind == K_FP8) return RF_OK;
    if (!rf_dtype_is_float(t->dtype) && t->dtype != RF_DT_F8_E4M3) return RF_OK; /* MLX packed U32 */
    /* a dense-MLP tensor in a MoE layer (or experts in a dense one) is not a layout we know */
    if (ma->layer >= 0 && ((r->need == RF_NEED_DENSE && rf_config_layer_is_moe(c, ma->layer)) ||
                           ((r->need == RF_NEED_MOE || r->need == RF_NEED_SHARED) && !rf_config_layer_is_moe(c, ma->layer))))
        return RF_OK;
    uint64_t shp[3];
    int n;
    if (ma->kind == K_BIAS) {
        shp[0] = rf_dim(c, (rf_dimsym)r->out);
        n = 1;
        if (r->layout == RF_LAY_STACKED) shp[1] = shp[0], shp[0] = (uint64_t)c->num_experts, n = 2;
    } else {
        n = rf_rule_source_shape(c, r, shp);
    }
    if (!n) return RF_OK;
    int ok = t->ndim == n;
    for (int d = 0; ok && d < n; d++) ok = t->shape[d] == shp[d];
    return ok ? RF_OK : shape_error(t, r, n, shp, err);
}

/* The name expert E of a per-expert unit would have, from a present member's name. */
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
        for (int k = 0; k < un->n_members; k++) {
            if (un->members[k] >= 0) continue;
            const rf_tensor *pt = m->tinfo[first_member(un)].t;
            char want[300];
            expert_name(pt->name, k, want, sizeof want);
            return rf_err_set(err, RF_ERR_FORMAT, "%s: expert %d of %d of %s is missing (no tensor %s)", pt->file, k,
                              un->n_members, un->name, want);
        }
        const rf_tensor *t = m->tinfo[un->members[0]].t;
        const rf_mview *v = &m->ext[u].views[0];
        if (un->n_experts && m->cfg.arch != RF_ARCH_GENERIC && un->n_experts != m->cfg.num_experts)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: %d experts, but config.json has %d", t->file, t->name,
                              un->n_experts, m->cfg.num_experts);
        const rf_trule *r = m->ext[u].rule;
        if (r && (r->layout == RF_LAY_HEADS || r->layout == RF_LAY_KVB_K || r->layout == RF_LAY_KVB_V) &&
            un->n_members != m->cfg.num_heads)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: %d heads, but config.json has %d", t->file, t->name,
                              un->n_members, m->cfg.num_heads);
        un->dtype = t->dtype;
        un->rows = v->rows;
        un->cols = v->cols;
        if (!rf_mul_u64(un->rows * un->cols, (uint64_t)un->n_members, &un->nparams))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: size overflows", t->file, t->name);
        un->transformed = v->transposed || v->c0 || v->cols != v->scols || t->dtype == RF_DT_F8_E4M3 ||
                          (r && (r->layout == RF_LAY_STACKED_R2A || r->layout == RF_LAY_STACKED_R2B ||
                                 r->layout == RF_LAY_KVB_V));
        int gs_ok = 0;
        for (int g = 32; g <= 128; g *= 2) gs_ok |= un->cols % (uint64_t)g == 0;
        int matrix = (t->ndim == 2 || (t->ndim == 3 && r && r->layout != RF_LAY_PLAIN)) && un->rows > 0;
        int flt = rf_dtype_is_float(t->dtype) || t->dtype == RF_DT_F8_E4M3;
        un->quantizable = matrix && flt && un->cols > 0 && gs_ok && !m->ext[u].keep;
        if (t->dtype == RF_DT_F8_E4M3) {
            for (int k = 0; k < un->n_members; k++)
                if (!m->ext[u].views[k].scale)
                    return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s is FP8 (F8_E4M3) but %s_scale_inv is missing "
                                      "or config.json has no quantization_config.weight_block_size", t->file, t->name,
                                      t->name);
        }
    }
    return RF_OK;
}

/* Required tensors (the family table's need rules) and their biases, per layer: a truncated or
 * mixed-up checkpoint, or a config that promises what the tensors lack, fails here for every
 * command alike. */
static rf_status check_complete(const rf_model *m, rf_err *err)
{
    const rf_config *c = &m->cfg;
    const rf_family *f = m->fam;
    const char *label = m->ntensors ? m->tinfo[0].t->file : m->dir;
    for (int l = -1; l < c->num_layers; l++)
        for (int i = 0; i < f->nrules; i++) {
            const rf_trule *r = &f->rules[i];
            if ((r->layer != 0) != (l >= 0) || !rf_rule_needed(c, r, l)) continue;
            rf_slot s = (rf_slot)r->slot;
            int idx = slot_index(m, l, s);
            int filled = slot_is_matrix(s) ? m->slot_unit[idx] >= 0 : m->slot_vec[idx] >= 0;
            char name[240], path[160];
            snprintf(path, sizeof path, "%s", r->path);
            char *e = strstr(path, "{E}");
            if (e) memmove(e + 1, e + 3, strlen(e + 3) + 1), e[0] = '0';
            if (l >= 0) snprintf(name, sizeof name, "%smodel.layers.%d.%s", c->tensor_prefix, l, path);
            else snprintf(name, sizeof name, "%s%s", c->tensor_prefix, path);
            if (!filled)
                return rf_err_set(err, RF_ERR_FORMAT, "%s: %s has no %s%s (%s)", label,
                                  l >= 0 ? "a layer" : "the model", name, r->exact ? "" : ".weight",
                                  l >= 0 && rf_config_layer_is_moe(c, l) ? "a MoE layer of this config" : "required by config.json");
            if (slot_is_matrix(s) && !rf_rule_bias_needed(c, r) && r->bias != RF_BIAS_OPTIONAL && m->slot_bias[idx] >= 0)
                return rf_err_set(err, RF_ERR_FORMAT, "%s: %s.bias is there, but config.json says %s", label, name,
                                  r->bias == RF_BIAS_MLP ? "mlp_bias: false" : "attention_bias: false");
            if (slot_is_matrix(s) && rf_rule_bias_needed(c, r) && m->slot_bias[idx] < 0 &&
                (r->layout == RF_LAY_PLAIN))
                return rf_err_set(err, RF_ERR_FORMAT, "%s: no %s.bias, but config.json says %s", label, name,
                                  r->bias == RF_BIAS_MLP ? "mlp_bias: true" : r->bias == RF_BIAS_ATTN
                                  ? "attention_bias: true" : "this family has it");
        }
    return RF_OK;
}

static void put_slot(int *tab, int idx, int value) { if (idx >= 0 && tab[idx] < 0) tab[idx] = value; }

static rf_status build(rf_model *m, rf_err *err)
{
    const rf_config *c = &m->cfg;
    m->ntensors = rf_st_count(m->st);
    m->nlayers_tab = c->arch == RF_ARCH_GENERIC ? 0 : c->num_layers;
    size_t ns = (size_t)(m->nlayers_tab + 1) * RF_SLOT_COUNT;
    m->tinfo = calloc(m->ntensors ? m->ntensors : 1, sizeof *m->tinfo);
    m->slot_unit = malloc(ns * sizeof(int));
    m->slot_vec = malloc(ns * sizeof(int));
    m->slot_bias = malloc(ns * sizeof(int));
    rf_nametab tab = {0};
    rf_status st = RF_OK;
    if (!m->tinfo || !m->slot_unit || !m->slot_vec || !m->slot_bias)
        st = rf_err_set(err, RF_ERR_NOMEM, "out of memory (%llu tensors)", (unsigned long long)m->ntensors);
    for (size_t i = 0; !st && i < ns; i++) m->slot_unit[i] = m->slot_vec[i] = m->slot_bias[i] = -1;
    for (uint64_t i = 0; i < m->ntensors && !st; i++) {
        const rf_tensor *t = rf_st_get(m->st, i);
        rf_name_info ni;
        match ms[4];
        int nm;
        classify(c, m->fam, t->name, &ni, ms, &nm);
        m->tinfo[i] = (rf_tinfo){.t = t, .role = ni.role, .layer = ni.layer, .expert = ni.expert, .unit = -1,
                                 .quant_aux = ni.quant_aux};
        if (nm && ms[0].kind == K_FP8) m->tinfo[i].fp8_scale = 1;
        int nl = -1;
        const char *rest;
        size_t pl = strlen(c->tensor_prefix);
        if (c->arch != RF_ARCH_GENERIC && !strncmp(t->name, c->tensor_prefix, pl) && layer_of(t->name + pl, &nl, &rest) &&
            nl >= c->num_layers) {
            if (nl < c->num_layers + c->extra_layers) {
                /* a multi-token-prediction layer: kept out of the model */
                m->tinfo[i] = (rf_tinfo){.t = t, .role = RF_ROLE_OTHER, .layer = -1, .expert = -1, .unit = -1,
                                         .dropped = 1};
                continue;
            }
            st = rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: layer %d, but config.json has %d layers", t->file,
                            t->name, nl, c->num_layers);
            break;
        }
        if (ni.expert >= 0 && ni.expert >= c->num_experts) {
            st = rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: expert %d, but config.json has %d experts", t->file,
                            t->name, ni.expert, c->num_experts);
            break;
        }
        if (!m->tinfo[i].quant_aux && !m->tinfo[i].fp8_scale) m->nparams += t->nelem;
        if (c->arch == RF_ARCH_GENERIC) {
            /* Linear/Embedding weights by name: 2-D float .weight tensors */
            if (ni.unit_weight && t->ndim == 2 && rf_dtype_is_float(t->dtype)) {
                static const rf_trule plain = {"", 1, RF_SLOT_NONE, RF_LAY_PLAIN, RF_NEED_OPTIONAL, RF_BIAS_NO, 0, 0, 0, 0, NULL};
                match ma = {&plain, ni.layer, -1, K_WEIGHT};
                st = add_to_unit(m, &tab, i, &ma, ni.module, err);
                if (!st) m->units[m->nunits - 1].role = ni.role;
            } else if (ni.unit_weight) {
                m->tinfo[i].role = RF_ROLE_OTHER;
            }
            continue;
        }
        for (int k = 0; k < nm && !st; k++) {
            const match *ma = &ms[k];
            rf_slot s = (rf_slot)ma->r->slot;
            int idx = slot_index(m, ma->layer, s);
            if (ma->kind == K_FP8) continue;
            st = check_shape(m, t, ma, err);
            if (st) break;
            if (ma->kind == K_BIAS) put_slot(m->slot_bias, idx, (int)i);
            else if (ma->kind == K_AUX) continue;
            else if (!slot_is_matrix(s)) put_slot(m->slot_vec, idx, (int)i);
            else {
                char uname[200];
                unit_name(c, ma, uname, sizeof uname);
                st = add_to_unit(m, &tab, i, ma, uname, err);
            }
        }
    }
    /* slot -> unit by name (a fused tensor's second unit included) */
    for (uint64_t u = 0; u < m->nunits && !st; u++) {
        const rf_trule *r = m->ext[u].rule;
        if (!r || !r->slot) continue;
        int idx = slot_index(m, m->units[u].layer, (rf_slot)r->slot);
        if (idx >= 0) m->slot_unit[idx] = (int)u;
    }
    /* FP8 block scales: <weight>_scale_inv beside each F8_E4M3 weight */
    for (uint64_t i = 0; i < m->ntensors && !st; i++) {
        const rf_tensor *t = m->tinfo[i].t;
        if (t->dtype != RF_DT_F8_E4M3 || m->tinfo[i].unit < 0) continue;
        char sname[300];
        snprintf(sname, sizeof sname, "%s_scale_inv", t->name);
        const rf_tensor *sc = rf_st_find(m->st, sname);
        if (!sc || !c->fp8_block[0]) continue; /* finish_units names the missing scale */
        uint64_t srows = t->ndim >= 2 ? t->nelem / t->shape[t->ndim - 1] : 1, scols = t->shape[t->ndim - 1];
        uint64_t br = (uint64_t)c->fp8_block[0], bc = (uint64_t)c->fp8_block[1];
        uint64_t want0 = (srows + br - 1) / br, want1 = (scols + bc - 1) / bc;
        if (sc->dtype != RF_DT_F32 || sc->nelem != want0 * want1) {
            st = rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: %s F32 block scales [%llu, %llu] expected for blocks "
                            "%llux%llu", sc->file, sc->name, rf_dtype_name(sc->dtype), (unsigned long long)want0,
                            (unsigned long long)want1, (unsigned long long)br, (unsigned long long)bc);
            break;
        }
        for (uint64_t u = 0; u < m->nunits; u++)
            for (int k = 0; k < m->units[u].n_members; k++) {
                rf_mview *v = &m->ext[u].views[k];
                if (v->t == t) v->scale = sc, v->br = (uint32_t)br, v->bc = (uint32_t)bc;
            }
    }
    if (!st) st = finish_units(m, err);
    if (!st && c->arch != RF_ARCH_GENERIC) st = check_complete(m, err);
    /* The build table borrowed the units' names via uname copies; the kept one borrows units' own. */
    for (uint64_t u = 0; u < m->nunits && !st; u++)
        if (rf_nametab_put(&m->unit_tab, m->units[u].name, u, NULL) < 0)
            st = rf_err_set(err, RF_ERR_NOMEM, "out of memory (units)");
    rf_nametab_free(&tab);
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
    m->fam = rf_family_of(cfg->arch);
    m->st = st;
    if (!m->fam) s = rf_err_set(err, RF_ERR_INVALID, "%s: config has no known family", label);
    if (!s) s = build(m, err);
    if (s) {
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
    rf_config *cfg = malloc(sizeof *cfg);
    if (!cfg) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_st *st = NULL;
    rf_status s = rf_config_load(model_dir, cfg, err);
    if (!s) s = rf_st_open(model_dir, &st, err);
    if (!s) s = rf_model_from_parts(model_dir, cfg, st, out, err);
    free(cfg);
    return s;
}
