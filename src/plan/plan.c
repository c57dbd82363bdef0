/* Planner: objective weights, safety rules, the budgeted exact plan, baseline rules, plan files
 * and report data (docs/plan.md). */
#include "io/json_internal.h"
#include "plan/plan_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ objective weights */

void rf_plan_weights_default(rf_plan_weights *w, rf_weight_rule rule)
{
    memset(w, 0, sizeof *w);
    w->rule = rule;
    for (int r = 0; r < RF_ROLE_COUNT; r++) w->role[r] = 1;
    w->first_layer = w->last_layer = 1;
    w->exponent = 1;
    w->param_share = 1;
    switch (rule) {
    case RF_WEIGHT_RAMFIT:
        /* calibrated on measured per-unit damage (bench/quality.sh, docs/quality.md): a log-linear fit of
         * KLD on D, role and depth, each model one vote, rounded; global constants, no per-model fit */
        w->role[RF_ROLE_EMBED] = 3.5;
        w->role[RF_ROLE_LM_HEAD] = 7;
        w->role[RF_ROLE_ATTN_Q] = 0.75;
        w->role[RF_ROLE_ATTN_K] = 4;
        w->role[RF_ROLE_ATTN_V] = 3.5;
        w->role[RF_ROLE_MLP_UP] = 0.75;
        w->role[RF_ROLE_EXPERT_UP] = 0.75;
        w->role[RF_ROLE_ROUTER] = 4;
        w->first_layer = 2;
        w->last_layer = 1.75;
        w->exponent = 1.1;
        w->moe_active = 1;
        break;
    case RF_WEIGHT_PARAMS: break;
    case RF_WEIGHT_RAM:
        w->role[RF_ROLE_EMBED] = 10;
        w->role[RF_ROLE_LM_HEAD] = 10;
        w->role[RF_ROLE_ROUTER] = 8;
        w->first_layer = 3;
        w->last_layer = 2;
        w->param_share = 0;
        w->exponent = 0.5;
        break;
    }
}

static const char *const rule_names[] = {"ramfit", "params", "ram"};

static int rule_from_name(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, rule_names[i])) return i;
    return -1;
}

static rf_status set_weight(rf_plan_weights *w, const char *key, double v, const char *text, rf_err *err)
{
    if (!isfinite(v) || v < 0) return rf_err_set(err, RF_ERR_INVALID, "weight '%s': value must be finite and >= 0", text);
    int r = rf_role_from_token(key);
    if (r >= 0) w->role[r] = v;
    else if (!strcmp(key, "first")) w->first_layer = v;
    else if (!strcmp(key, "last")) w->last_layer = v;
    else if (!strcmp(key, "exponent")) {
        if (v <= 0 || v > 16) return rf_err_set(err, RF_ERR_INVALID, "weight '%s': exponent must be in (0, 16]", text);
        w->exponent = v;
    } else if (!strcmp(key, "share") || !strcmp(key, "active")) {
        if (v != 0 && v != 1) return rf_err_set(err, RF_ERR_INVALID, "weight '%s': expected 0 or 1", text);
        *(key[0] == 's' ? &w->param_share : &w->moe_active) = (int)v;
    } else
        return rf_err_set(err, RF_ERR_INVALID,
                          "weight '%s': unknown key '%s' (a role such as attn_v, or first, last, exponent, share, active, rule)", text, key);
    return RF_OK;
}

rf_status rf_plan_weights_set(rf_plan_weights *w, const char *text, rf_err *err)
{
    const char *eq = text ? strchr(text, '=') : NULL;
    if (!eq || eq == text || !eq[1]) return rf_err_set(err, RF_ERR_INVALID, "weight '%s': expected KEY=VALUE", text ? text : "");
    char key[64];
    size_t kl = (size_t)(eq - text);
    if (kl >= sizeof key) return rf_err_set(err, RF_ERR_INVALID, "weight '%s': key too long", text);
    memcpy(key, text, kl);
    key[kl] = 0;
    if (!strcmp(key, "rule")) {
        int r = rule_from_name(eq + 1);
        if (r < 0) return rf_err_set(err, RF_ERR_INVALID, "weight '%s': rule must be ramfit, params or ram", text);
        double (*fn)(void *, const rf_punit *, double) = w->fn;
        void *user = w->user;
        rf_plan_weights_default(w, (rf_weight_rule)r);
        w->fn = fn;
        w->user = user;
        return RF_OK;
    }
    char *end;
    double v = strtod(eq + 1, &end);
    if (*end || end == eq + 1) return rf_err_set(err, RF_ERR_INVALID, "weight '%s': value is not a number", text);
    return set_weight(w, key, v, text, err);
}

rf_status rf_plan_weights_load(const char *path, rf_plan_weights *w, rf_err *err)
{
    json_t *root;
    rf_status s = rf_json_load(path, RF_MAX_CONFIG_FILE, JSON_REJECT_DUPLICATES, &root, err);
    if (s) return s;
    char t[128];
    if (!json_is_object(root)) s = rf_err_set(err, RF_ERR_FORMAT, "%s: expected an object", path);
    json_t *rule = s ? NULL : json_object_get(root, "rule");
    if (rule) {
        snprintf(t, sizeof t, "rule=%s", json_is_string(rule) ? json_string_value(rule) : "?");
        s = rf_plan_weights_set(w, t, err);
    }
    const char *key;
    json_t *v;
    if (!s) json_object_foreach(root, key, v) {
        if (s || !strcmp(key, "rule")) continue;
        if (!strcmp(key, "role")) {
            const char *rk;
            json_t *rv;
            if (!json_is_object(v)) { s = rf_err_set(err, RF_ERR_FORMAT, "%s: 'role' must be an object", path); break; }
            json_object_foreach(v, rk, rv) {
                snprintf(t, sizeof t, "role.%s", rk);
                if (rf_role_from_token(rk) < 0) s = rf_err_set(err, RF_ERR_FORMAT, "%s: unknown role '%s'", path, rk);
                else if (!json_is_number(rv)) s = rf_err_set(err, RF_ERR_FORMAT, "%s: '%s' must be a number", path, t);
                else s = set_weight(w, rk, json_number_value(rv), t, err);
                if (s) break;
            }
        } else if (json_is_number(v) || json_is_boolean(v))
            s = set_weight(w, key, json_is_boolean(v) ? (double)json_is_true(v) : json_number_value(v), key, err);
        else
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: '%s' must be a number", path, key);
    }
    if (s && s != RF_ERR_FORMAT && err) { rf_err_prefix(err, "%s", path); s = err->code = RF_ERR_FORMAT; }
    json_decref(root);
    return s;
}

static int is_expert(rf_role r) { return r == RF_ROLE_EXPERT_GATE || r == RF_ROLE_EXPERT_UP || r == RF_ROLE_EXPERT_DOWN; }

/* Parameters that count for the share: expert banks only by their active fraction. */
static double share_params(const rf_pmodel *m, const rf_plan_weights *w, const rf_punit *u)
{
    double n = (double)u->nparams;
    if (w->moe_active && is_expert(u->role) && m->num_experts > 0 && m->experts_per_tok > 0 &&
        m->experts_per_tok <= m->num_experts)
        n *= (double)m->experts_per_tok / m->num_experts;
    return n;
}

static double unit_weight(const rf_pmodel *m, const rf_plan_weights *w, const rf_punit *u, double share_total)
{
    double role = w->role[u->role];
    if (u->role == RF_ROLE_EMBED && m->tie_word_embeddings) role = fmax(role, w->role[RF_ROLE_LM_HEAD]);
    double depth = 1;
    if (u->layer == 0) depth = w->first_layer;
    else if (u->layer >= 0 && u->layer == u->n_layers - 1) depth = w->last_layer;
    double x = role * depth;
    if (w->param_share) x *= share_total > 0 ? share_params(m, w, u) / share_total : 0;
    if (w->fn) x = w->fn(w->user, u, x);
    return isfinite(x) && x > 0 ? x : 0;
}

static double share_total(const rf_profile *p, const rf_plan_weights *w)
{
    double t = 0;
    for (uint64_t i = 0; i < rf_profile_unit_count(p); i++) t += share_params(rf_profile_model(p), w, rf_profile_unit(p, i));
    return t;
}

double rf_plan_unit_weight(const rf_profile *p, const rf_plan_weights *w, const rf_punit *u)
{
    return unit_weight(rf_profile_model(p), w, u, share_total(p, w));
}

/* ------------------------------------------------------------------ options and methods */

void rf_plan_opts_default(rf_plan_opts *o)
{
    memset(o, 0, sizeof *o);
    o->method = RF_METHOD_RAMFIT;
    o->mode = RF_QMODE_OPT;
    o->veto_db = 9.0;
    o->gs = 64;
    rf_plan_weights_default(&o->weights, RF_WEIGHT_RAMFIT);
}

static int parse_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0 || v > 1024) return 0;
    *out = (int)v;
    return 1;
}

rf_status rf_plan_parse_method(const char *text, rf_plan_opts *o, rf_err *err)
{
    if (!text) return rf_err_set(err, RF_ERR_INVALID, "no method");
    if (!strcmp(text, "ramfit")) { o->method = RF_METHOD_RAMFIT; return RF_OK; }
    if (!strcmp(text, "ram")) {
        o->method = RF_METHOD_RAM;
        o->mode = RF_QMODE_MLX;
        o->veto_db = 9.0;
        o->unsafe = 0;
        rf_plan_weights_default(&o->weights, RF_WEIGHT_RAM);
        return RF_OK;
    }
    char buf[64];
    if (strlen(text) >= sizeof buf) return rf_err_set(err, RF_ERR_INVALID, "bad method '%.40s...'", text);
    strcpy(buf, text);
    char *f[5] = {0};
    int n = 0;
    for (char *s = buf, *tok; n < 5 && (tok = strsep(&s, ":"));) f[n++] = tok;
    int a = 0, b = 0, g = 64;
    if (n == 3 && !strcmp(f[0], "uniform") && parse_int(f[1], &a) && parse_int(f[2], &g)) {
        if (rf_cfg_index(a, g) < 0) return rf_err_set(err, RF_ERR_INVALID, "method '%s': %d bits / gs %d is not a config (bits 2,3,4,5,6,8; gs 32,64,128)", text, a, g);
        o->method = RF_METHOD_UNIFORM;
        o->bits = a;
        o->gs = g;
        o->mode = RF_QMODE_MLX;
        return RF_OK;
    }
    if ((n == 3 || n == 4) && !strcmp(f[0], "mixed") && parse_int(f[1], &a) && parse_int(f[2], &b) && (n == 3 || parse_int(f[3], &g))) {
        if (rf_cfg_index(a, g) < 0 || rf_cfg_index(b, g) < 0 || a >= b)
            return rf_err_set(err, RF_ERR_INVALID, "method '%s': need LOW < HIGH bits in 2,3,4,5,6,8 and gs 32, 64 or 128", text);
        o->method = RF_METHOD_MIXED;
        o->bits = a;
        o->high_bits = b;
        o->gs = g;
        o->mode = RF_QMODE_MLX;
        return RF_OK;
    }
    return rf_err_set(err, RF_ERR_INVALID, "bad method '%s': expected ramfit, uniform:BITS:GS, mixed:LOW:HIGH[:GS] or ram", text);
}

static void method_text(const rf_plan_opts *o, char *buf, size_t cap)
{
    switch (o->method) {
    case RF_METHOD_UNIFORM: snprintf(buf, cap, "uniform:%d:%d", o->bits, o->gs); break;
    case RF_METHOD_MIXED: snprintf(buf, cap, "mixed:%d:%d:%d", o->bits, o->high_bits, o->gs); break;
    case RF_METHOD_RAM: snprintf(buf, cap, "ram"); break;
    default: snprintf(buf, cap, "ramfit"); break;
    }
}

const char *rf_plan_status_name(rf_plan_status s)
{
    static const char *const n[] = {"optimal", "gap", "keep-all", "rule"};
    return (unsigned)s < 4 ? n[s] : "?";
}

/* ------------------------------------------------------------------ plan object */

struct rf_plan {
    rf_plan_method method;
    char method_text[48];
    rf_qmode mode;
    rf_plan_status status;
    rf_weight_rule rule;
    double exponent, veto_db;
    int unsafe, veto_violations;
    uint64_t budget, total, other, params, min_safe, states;
    double objective, bound;
    char model[256], architecture[128];
    uint64_t fingerprint;
    rf_dtype f32_as;
    int gguf;                 /* over a GGUF profile: units carry ggml types */
    uint64_t n;
    rf_plan_unit *units;
    char (*names)[160];
};

void rf_plan_free(rf_plan *plan)
{
    if (!plan) return;
    free(plan->units);
    free(plan->names);
    free(plan);
}

static rf_plan *plan_alloc(uint64_t n)
{
    rf_plan *pl = calloc(1, sizeof *pl);
    if (!pl) return NULL;
    pl->units = calloc(n ? n : 1, sizeof *pl->units);
    pl->names = calloc(n ? n : 1, sizeof *pl->names);
    if (!pl->units || !pl->names) { rf_plan_free(pl); return NULL; }
    pl->n = n;
    for (uint64_t i = 0; i < n; i++) pl->units[i].name = pl->names[i];
    return pl;
}

uint64_t rf_plan_unit_count(const rf_plan *p) { return p->n; }
const rf_plan_unit *rf_plan_get_unit(const rf_plan *p, uint64_t i) { return i < p->n ? &p->units[i] : NULL; }
rf_plan_status rf_plan_status_of(const rf_plan *p) { return p->status; }
rf_plan_method rf_plan_method_of(const rf_plan *p) { return p->method; }
const char *rf_plan_method_text(const rf_plan *p) { return p->method_text; }
rf_qmode rf_plan_mode(const rf_plan *p) { return p->mode; }
uint64_t rf_plan_budget(const rf_plan *p) { return p->budget; }
uint64_t rf_plan_total_bytes(const rf_plan *p) { return p->total; }
uint64_t rf_plan_other_bytes(const rf_plan *p) { return p->other; }
uint64_t rf_plan_param_count(const rf_plan *p) { return p->params; }
double rf_plan_bpw(const rf_plan *p) { return p->params ? 8.0 * (double)p->total / (double)p->params : 0; }
double rf_plan_objective(const rf_plan *p) { return p->objective; }
double rf_plan_lower_bound(const rf_plan *p) { return p->bound; }
double rf_plan_gap(const rf_plan *p)
{
    if (p->status != RF_PLAN_GAP || p->objective <= 0) return 0;
    return (p->objective - p->bound) / p->objective;
}
uint64_t rf_plan_min_safe(const rf_plan *p) { return p->min_safe; }
uint64_t rf_plan_states(const rf_plan *p) { return p->states; }
int rf_plan_veto_violations(const rf_plan *p) { return p->veto_violations; }
double rf_plan_veto_db(const rf_plan *p) { return p->veto_db; }
const char *rf_plan_model_name(const rf_plan *p) { return p->model; }
uint64_t rf_plan_fingerprint(const rf_plan *p) { return p->fingerprint; }
rf_dtype rf_plan_f32_as(const rf_plan *p) { return p->f32_as; }

int64_t rf_plan_find_unit(const rf_plan *p, const char *name)
{
    for (uint64_t i = 0; i < p->n; i++)
        if (!strcmp(p->units[i].name, name)) return (int64_t)i;
    return -1;
}

/* ------------------------------------------------------------------ the planner */

struct rf_planner {
    const rf_profile *prof;
    rf_plan_opts o;
    uint64_t nu;
    double *weight;     /* per unit */
    int8_t *fixed;      /* rule methods: candidate index per unit (-1 keep) */
    uint32_t *start;    /* knapsack items per unit */
    uint64_t *w;
    double *e;
    int8_t *cand;       /* item -> candidate index (-1 keep) */
    rf_mckp *m;
    uint64_t min_safe, full, other;
};

void rf_planner_free(rf_planner *pl)
{
    if (!pl) return;
    free(pl->weight);
    free(pl->fixed);
    free(pl->start);
    free(pl->w);
    free(pl->e);
    free(pl->cand);
    rf_mckp_free(pl->m);
    free(pl);
}

uint64_t rf_planner_min_safe(const rf_planner *pl) { return pl->min_safe; }
uint64_t rf_planner_full_bytes(const rf_planner *pl) { return pl->full; }

/* GTYPE: a GGUF plan unit's type (0: an MLX config). */
static int find_cand(const rf_punit *u, int bits, int gs, int gtype)
{
    for (int k = 0; k < u->n_cands; k++)
        if (u->cands[k].bits == bits && u->cands[k].gs == gs && u->cands[k].gtype == gtype) return k;
    return -1;
}

int rf_plan_is_gguf(const rf_plan *p) { return p->gguf; }

/* RAM/MINT's candidate set (keep is always there). */
static int ram_allows(int bits, int gs)
{
    static const int set[][2] = {{2, 32}, {3, 64}, {4, 32}, {4, 64}, {4, 128}, {8, 64}, {8, 128}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        if (set[i][0] == bits && set[i][1] == gs) return 1;
    return 0;
}

/* Hard rules and the veto: may unit U use candidate C? */
static int allowed(const rf_plan_opts *o, const rf_punit *u, const rf_pcand *c, double d)
{
    if (isnan(d)) return 0;
    if (u->role == RF_ROLE_ROUTER && c->bits < 8) return 0;
    if (o->method == RF_METHOD_RAM && !ram_allows(c->bits, c->gs)) return 0;
    if (!o->unsafe && rf_d_to_sqnr_db(d) < o->veto_db) return 0;
    return 1;
}

/* mlx-lm's mixed_X_Y predicate (mlx_lm/convert.py), by role instead of by name. */
static int mixed_high(const rf_punit *u)
{
    if (u->role == RF_ROLE_LM_HEAD) return 1;
    if (u->role != RF_ROLE_ATTN_V && u->role != RF_ROLE_MLP_DOWN && u->role != RF_ROLE_EXPERT_DOWN) return 0;
    int L = u->n_layers, i = u->layer < 0 ? 0 : u->layer;
    return i < L / 8 || i >= 7 * L / 8 || (i - L / 8) % 3 == 2;
}

static rf_status rule_assign(rf_planner *pl, rf_err *err)
{
    const rf_profile *p = pl->prof;
    pl->fixed = malloc(pl->nu ? pl->nu : 1);
    if (!pl->fixed) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < pl->nu; i++) {
        const rf_punit *u = rf_profile_unit(p, i);
        int bits = pl->o.bits, gs = pl->o.gs;
        if (pl->o.method == RF_METHOD_MIXED && mixed_high(u)) bits = pl->o.high_bits;
        if (pl->o.method == RF_METHOD_UNIFORM && u->role == RF_ROLE_ROUTER) bits = 8, gs = 64;
        pl->fixed[i] = -1;
        if (u->cols % (uint64_t)gs) continue; /* mlx-lm skips modules gs does not divide */
        if (u->n_cands == 0) continue;        /* not quantizable (e.g. a raw parameter mlx-lm never quantizes) */
        int k = find_cand(u, bits, gs, 0);
        if (k < 0 || isnan(u->cands[k].err[RF_QMODE_MLX].sse))
            return rf_err_set(err, RF_ERR_NOT_FOUND, "profile has no %s measurement of %d bits / gs %d for unit %s",
                              rf_qmode_token(RF_QMODE_MLX), bits, gs, u->name);
        pl->fixed[i] = (int8_t)k;
    }
    return RF_OK;
}

static rf_status build_items(rf_planner *pl, rf_err *err)
{
    const rf_profile *p = pl->prof;
    uint64_t nu = pl->nu, cap = nu * (RF_QCFG_N + 1);
    if (nu >= UINT32_MAX / (RF_QCFG_N + 1)) return rf_err_set(err, RF_ERR_UNSUPPORTED, "too many units (%llu)", (unsigned long long)nu);
    pl->start = malloc(sizeof *pl->start * (nu + 1));
    pl->w = malloc(sizeof *pl->w * (cap ? cap : 1));
    pl->e = malloc(sizeof *pl->e * (cap ? cap : 1));
    pl->cand = malloc(cap ? cap : 1);
    if (!pl->start || !pl->w || !pl->e || !pl->cand) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    uint32_t n = 0;
    double pexp = pl->o.weights.exponent;
    for (uint64_t i = 0; i < nu; i++) {
        const rf_punit *u = rf_profile_unit(p, i);
        pl->start[i] = n;
        pl->w[n] = u->kept_bytes;
        pl->e[n] = 0;
        pl->cand[n++] = -1;
        for (int k = 0; k < u->n_cands; k++) {
            const rf_pcand *c = &u->cands[k];
            double d = rf_pcand_d(u, c, pl->o.mode);
            if (!allowed(&pl->o, u, c, d)) continue;
            double v = pl->weight[i] * pow(d, pexp);
            if (!isfinite(v)) continue;
            pl->w[n] = c->bytes;
            pl->e[n] = v;
            pl->cand[n++] = (int8_t)k;
        }
    }
    pl->start[nu] = n;
    return rf_mckp_create((uint32_t)nu, pl->start, pl->w, pl->e, &pl->m, err);
}

rf_status rf_planner_create(const rf_profile *p, const rf_plan_opts *o, rf_planner **out, rf_err *err)
{
    *out = NULL;
    if (!p || !o) return rf_err_set(err, RF_ERR_INVALID, "planner: no profile or options");
    if ((unsigned)o->mode > 1) return rf_err_set(err, RF_ERR_INVALID, "planner: bad mode");
    int shard, shards;
    if (rf_profile_shard(p, &shard, &shards, NULL, NULL)) /* a part lacks the other parts' units */
        return rf_err_set(err, RF_ERR_INVALID, "this profile of %s is part %d of %d of an analysis: join all parts with 'ramfit "
                          "profile merge' first", rf_profile_model(p)->name, shard, shards);
    if (!(rf_profile_modes(p) >> o->mode & 1))
        return rf_err_set(err, RF_ERR_INVALID, "profile of %s has no '%s' measurements (it has: %s)", rf_profile_model(p)->name,
                          rf_qmode_token(o->mode), rf_profile_modes(p) & 1 ? "mlx" : "opt");
    if (!isfinite(o->veto_db)) return rf_err_set(err, RF_ERR_INVALID, "planner: veto must be finite");
    if (rf_profile_is_gguf(p) && o->method != RF_METHOD_RAMFIT)
        return rf_err_set(err, RF_ERR_INVALID, "profile of %s has GGUF candidates: the baseline rules (uniform, mixed, ram) are "
                          "MLX recipes; llama.cpp's own presets are made by llama-quantize", rf_profile_model(p)->name);
    if (!(o->weights.exponent > 0 && o->weights.exponent <= 16)) return rf_err_set(err, RF_ERR_INVALID, "planner: exponent must be in (0, 16]");
    rf_planner *pl = calloc(1, sizeof *pl);
    if (!pl) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    pl->prof = p;
    pl->o = *o;
    pl->nu = rf_profile_unit_count(p);
    pl->other = rf_profile_other_bytes(p);
    pl->full = rf_profile_full_bytes(p);
    pl->weight = malloc(sizeof *pl->weight * (pl->nu ? pl->nu : 1));
    if (!pl->weight) { rf_planner_free(pl); return rf_err_set(err, RF_ERR_NOMEM, "out of memory"); }
    double st = share_total(p, &o->weights);
    for (uint64_t i = 0; i < pl->nu; i++) pl->weight[i] = unit_weight(rf_profile_model(p), &o->weights, rf_profile_unit(p, i), st);
    rf_status s;
    if (o->method == RF_METHOD_UNIFORM || o->method == RF_METHOD_MIXED) {
        if (rf_profile_modes(p) & 1) pl->o.mode = RF_QMODE_MLX;
        s = rule_assign(pl, err);
    } else
        s = build_items(pl, err);
    if (s) { rf_planner_free(pl); return s; }
    pl->min_safe = pl->m ? rf_mckp_min_weight(pl->m) + pl->other : 0;
    *out = pl;
    return RF_OK;
}

static void plan_header(const rf_planner *pl, rf_plan *plan, uint64_t budget)
{
    const rf_pmodel *m = rf_profile_model(pl->prof);
    plan->method = pl->o.method;
    method_text(&pl->o, plan->method_text, sizeof plan->method_text);
    plan->mode = pl->o.mode;
    plan->rule = pl->o.weights.rule;
    plan->exponent = pl->o.weights.exponent;
    plan->veto_db = pl->o.veto_db;
    plan->unsafe = pl->o.unsafe;
    plan->budget = budget;
    plan->other = pl->other;
    plan->params = rf_profile_param_count(pl->prof);
    plan->min_safe = pl->min_safe;
    snprintf(plan->model, sizeof plan->model, "%s", m->name);
    snprintf(plan->architecture, sizeof plan->architecture, "%s", m->architecture);
    plan->f32_as = m->f32_as;
    plan->fingerprint = m->fingerprint;
    plan->gguf = rf_profile_is_gguf(pl->prof);
}

/* Fill unit i of PLAN with candidate K (-1: keep) and add it to the totals. */
static void plan_set(const rf_planner *pl, rf_plan *plan, uint64_t i, int k)
{
    const rf_punit *u = rf_profile_unit(pl->prof, i);
    rf_plan_unit *x = &plan->units[i];
    memcpy(plan->names[i], u->name, sizeof plan->names[i]);
    x->role = u->role;
    x->layer = u->layer;
    x->nparams = u->nparams;
    x->weight = pl->weight[i];
    if (k < 0) {
        x->bits = x->gs = x->gtype = 0;
        x->bytes = u->kept_bytes;
        x->d = x->max_abs = 0;
    } else {
        const rf_pcand *c = &u->cands[k];
        x->bits = c->bits;
        x->gs = c->gs;
        x->gtype = c->gtype;
        x->bytes = c->bytes;
        x->d = rf_pcand_d(u, c, pl->o.mode);
        x->max_abs = c->err[pl->o.mode].max_abs;
        if (!pl->o.unsafe && rf_d_to_sqnr_db(x->d) < pl->o.veto_db) plan->veto_violations++;
    }
    plan->total += x->bytes;
}

static double plan_objective(const rf_plan *plan, double pexp)
{
    /* compensated, in unit order: deterministic and equal to the solver's sum */
    double s = 0, c = 0;
    for (uint64_t i = 0; i < plan->n; i++) {
        double v = plan->units[i].weight * pow(plan->units[i].d, pexp);
        double t = s + v;
        c += fabs(s) >= fabs(v) ? (s - t) + v : (v - t) + s;
        s = t;
    }
    return s + c;
}

static void fmt_bytes(uint64_t b, char *buf, size_t cap)
{
    char s[32];
    rf_format_size(b, s, sizeof s);
    snprintf(buf, cap, "%s (%llu B)", s, (unsigned long long)b);
}

rf_status rf_planner_solve(rf_planner *pl, uint64_t budget, rf_plan **out, rf_err *err)
{
    *out = NULL;
    if (budget > (uint64_t)INT64_MAX) /* plan files (JSON integers) record budgets below 2^63 */
        return rf_err_set(err, RF_ERR_INVALID, "budget %llu B is beyond 2^63 - 1 bytes (9.2 EB), the largest ramfit plans for",
                          (unsigned long long)budget);
    rf_plan *plan = plan_alloc(pl->nu);
    if (!plan) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    plan_header(pl, plan, budget);
    plan->total = pl->other;
    if (pl->fixed) {
        plan->budget = 0;
        plan->status = RF_PLAN_RULE;
        for (uint64_t i = 0; i < pl->nu; i++) plan_set(pl, plan, i, pl->fixed[i]);
        plan->objective = plan->bound = plan_objective(plan, pl->o.weights.exponent);
        *out = plan;
        return RF_OK;
    }
    if (budget >= pl->full) {
        plan->status = RF_PLAN_KEEP_ALL;
        for (uint64_t i = 0; i < pl->nu; i++) plan_set(pl, plan, i, -1);
        *out = plan;
        return RF_OK;
    }
    if (budget < pl->min_safe) {
        char b1[64], b2[64];
        fmt_bytes(budget, b1, sizeof b1);
        fmt_bytes(pl->min_safe, b2, sizeof b2);
        rf_plan_free(plan);
        if (pl->o.unsafe)
            return rf_err_set(err, RF_ERR_BUDGET, "budget %s is below the smallest possible size %s of %s (every unit at its smallest config the hard rules allow)",
                              b1, b2, rf_profile_model(pl->prof)->name);
        return rf_err_set(err, RF_ERR_BUDGET, "budget %s is below the min-safe size %s of %s: no plan whose every unit passes the %.1f dB SQNR veto is smaller",
                          b1, b2, rf_profile_model(pl->prof)->name, pl->o.veto_db);
    }
    uint32_t *choice = malloc(sizeof *choice * (pl->nu ? pl->nu : 1));
    if (!choice) { rf_plan_free(plan); return rf_err_set(err, RF_ERR_NOMEM, "out of memory"); }
    rf_mckp_result r = {.choice = choice};
    rf_status s = rf_mckp_solve(pl->m, budget - pl->other, pl->o.state_limit, &r, err);
    if (s) { free(choice); rf_plan_free(plan); return s; }
    for (uint64_t i = 0; i < pl->nu; i++) plan_set(pl, plan, i, pl->cand[choice[i]]);
    free(choice);
    plan->status = r.optimal ? RF_PLAN_OPTIMAL : RF_PLAN_GAP;
    plan->objective = plan_objective(plan, pl->o.weights.exponent);
    plan->bound = fmin(r.bound, plan->objective);
    plan->states = r.states;
    if (plan->total > budget) { rf_plan_free(plan); return rf_err_set(err, RF_ERR_INTERNAL, "plan exceeds its budget"); }
    *out = plan;
    return RF_OK;
}

typedef struct many_ctx {
    rf_planner *pl;
    const uint64_t *budgets;
    rf_plan **plans;
    rf_err *errs;
} many_ctx;

static void solve_one(void *ctx, uint64_t task, int worker)
{
    (void)worker;
    many_ctx *c = ctx;
    rf_err_clear(&c->errs[task]);
    if (rf_planner_solve(c->pl, c->budgets[task], &c->plans[task], &c->errs[task])) c->plans[task] = NULL;
}

rf_status rf_planner_solve_many(rf_planner *pl, const uint64_t *budgets, uint64_t n, rf_pool *pool, rf_plan **plans,
                                rf_err *errs)
{
    /* a planner is read-only while it solves: budgets are independent tasks, each result in its own slot */
    many_ctx c = {pl, budgets, plans, errs};
    rf_pool_run(pool, n, solve_one, &c);
    return RF_OK;
}

rf_status rf_plan_solve(const rf_profile *p, const rf_plan_opts *o, uint64_t budget, rf_plan **out, rf_err *err)
{
    rf_planner *pl;
    *out = NULL;
    rf_status s = rf_planner_create(p, o, &pl, err);
    if (s) return s;
    s = rf_planner_solve(pl, budget, out, err);
    rf_planner_free(pl);
    return s;
}

rf_status rf_plan_bpw_budget(const rf_profile *p, double bpw, uint64_t *budget, rf_err *err)
{
    if (!isfinite(bpw) || bpw <= 0 || bpw > 64) return rf_err_set(err, RF_ERR_INVALID, "bits per weight must be in (0, 64]");
    double b = floor(bpw * (double)rf_profile_param_count(p) / 8.0);
    if (b >= 1.8e19) return rf_err_set(err, RF_ERR_INVALID, "budget too large");
    *budget = (uint64_t)b;
    return RF_OK;
}

/* ------------------------------------------------------------------ comparing and checking */

rf_status rf_plan_check_profile(const rf_plan *plan, const rf_profile *p, rf_err *err)
{
    const rf_pmodel *m = rf_profile_model(p);
    if (plan->gguf != rf_profile_is_gguf(p))
        return rf_err_set(err, RF_ERR_MISMATCH, "the plan is over %s candidates, the profile has %s ones", plan->gguf ? "GGUF" : "MLX",
                          rf_profile_is_gguf(p) ? "GGUF" : "MLX");
    if (plan->fingerprint != m->fingerprint || strcmp(plan->model, m->name))
        return rf_err_set(err, RF_ERR_MISMATCH, "plan is for %s (fingerprint %016llx), profile is of %s (fingerprint %016llx)",
                          plan->model, (unsigned long long)plan->fingerprint, m->name, (unsigned long long)m->fingerprint);
    if (plan->n != rf_profile_unit_count(p))
        return rf_err_set(err, RF_ERR_MISMATCH, "plan has %llu units, profile %llu", (unsigned long long)plan->n,
                          (unsigned long long)rf_profile_unit_count(p));
    for (uint64_t i = 0; i < plan->n; i++) {
        const rf_plan_unit *x = &plan->units[i];
        int64_t j = rf_profile_find_unit(p, x->name);
        const rf_punit *u = j < 0 ? NULL : rf_profile_unit(p, (uint64_t)j);
        if (!u || u->nparams != x->nparams)
            return rf_err_set(err, RF_ERR_MISMATCH, "plan unit %s is not in the profile (or has another shape)", x->name);
        int c = x->bits ? find_cand(u, x->bits, x->gs, x->gtype) : -1;
        if (x->bits && c < 0)
            return rf_err_set(err, RF_ERR_MISMATCH, "plan unit %s: %d/%d%s%s is not a candidate in the profile", x->name, x->bits,
                              x->gs, x->gtype ? " " : "", x->gtype ? rf_gtype_name(x->gtype) : "");
        uint64_t pb = x->bits ? u->cands[c].bytes : u->kept_bytes;
        if (pb != x->bytes)
            return rf_err_set(err, RF_ERR_MISMATCH, "plan unit %s: %llu bytes, the profile counts %llu for %s (made under "
                              "another --dtype, or edited)", x->name, (unsigned long long)x->bytes, (unsigned long long)pb,
                              x->bits ? "that config" : "keeping it");
    }
    if (plan->f32_as != RF_DT_INVALID && m->f32_as != RF_DT_INVALID && plan->f32_as != m->f32_as)
        return rf_err_set(err, RF_ERR_MISMATCH, "the plan counts F32 tensors as %s, the profile as %s (analysed with another "
                          "--dtype)", rf_dtype_name(plan->f32_as), rf_dtype_name(m->f32_as));
    return RF_OK;
}

rf_status rf_plan_evaluate(const rf_plan *plan, const rf_profile *p, const rf_plan_opts *o, double *objective, rf_err *err)
{
    rf_status s = rf_plan_check_profile(plan, p, err);
    if (s) return s;
    double st = share_total(p, &o->weights), sum = 0, c = 0;
    for (uint64_t i = 0; i < plan->n; i++) {
        const rf_plan_unit *x = &plan->units[i];
        const rf_punit *u = rf_profile_unit(p, (uint64_t)rf_profile_find_unit(p, x->name));
        double d = 0;
        if (x->bits) {
            d = rf_pcand_d(u, &u->cands[find_cand(u, x->bits, x->gs, x->gtype)], plan->mode);
            if (isnan(d))
                return rf_err_set(err, RF_ERR_NOT_FOUND, "unit %s: no %s measurement of %d/%d", x->name, rf_qmode_token(plan->mode), x->bits, x->gs);
        }
        double v = unit_weight(rf_profile_model(p), &o->weights, u, st) * pow(d, o->weights.exponent);
        double t = sum + v;
        c += fabs(sum) >= fabs(v) ? (sum - t) + v : (v - t) + sum;
        sum = t;
    }
    *objective = sum + c;
    return RF_OK;
}

/* ------------------------------------------------------------------ report data */

int rf_plan_shares(const rf_plan *plan, rf_plan_share *out, int cap)
{
    rf_plan_share all[RF_QCFG_N + 1];
    memset(all, 0, sizeof all);
    for (uint64_t i = 0; i < plan->n; i++) {
        const rf_plan_unit *x = &plan->units[i];
        int slot = !x->bits ? 0 : 1 + (x->gtype ? rf_gcand_index(x->gtype) : rf_cfg_index(x->bits, x->gs));
        if (slot < 0) continue;
        all[slot].bits = x->bits;
        all[slot].gs = x->gs;
        all[slot].gtype = x->gtype;
        all[slot].units++;
        all[slot].nparams += x->nparams;
        all[slot].bytes += x->bytes;
    }
    int n = 0;
    for (int s = 0; s <= RF_QCFG_N; s++)
        if (all[s].units) {
            if (n < cap) out[n] = all[s];
            n++;
        }
    return n;
}

static const rf_plan *g_order_plan; /* qsort has no context argument */
static int protect_cmp(const void *a, const void *b)
{
    const rf_plan_unit *x = &g_order_plan->units[*(const uint64_t *)a], *y = &g_order_plan->units[*(const uint64_t *)b];
    double bx = x->nparams ? (double)x->bytes / (double)x->nparams : 0, by = y->nparams ? (double)y->bytes / (double)y->nparams : 0;
    if (bx != by) return bx > by ? -1 : 1;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    uint64_t ia = *(const uint64_t *)a, ib = *(const uint64_t *)b;
    return (ia > ib) - (ia < ib);
}

rf_status rf_plan_protection_order(const rf_plan *plan, uint64_t *order, rf_err *err)
{
    for (uint64_t i = 0; i < plan->n; i++) order[i] = i;
    g_order_plan = plan;
    qsort(order, plan->n, sizeof *order, protect_cmp);
    g_order_plan = NULL;
    (void)err;
    return RF_OK;
}

/* ------------------------------------------------------------------ plan files */

rf_status rf_plan_to_json(const rf_plan *plan, char **out, size_t *len, rf_err *err)
{
    rf_sb b = {0};
    rf_sb_printf(&b, "{\n  \"format\": \"ramfit-plan\", \"version\": 1, \"ramfit_version\": \"%s\",\n  \"profile\": {\"model\": ",
                 RF_VERSION_STRING);
    rf_sb_json_str(&b, plan->model);
    rf_sb_puts(&b, ", \"architecture\": ");
    rf_sb_json_str(&b, plan->architecture);
    rf_sb_printf(&b, ", \"fingerprint\": \"%016llx\", \"units\": %llu", (unsigned long long)plan->fingerprint,
                 (unsigned long long)plan->n);
    if (plan->f32_as != RF_DT_INVALID) rf_sb_printf(&b, ", \"f32_as\": \"%s\"", rf_dtype_name(plan->f32_as));
    if (plan->gguf) rf_sb_puts(&b, ", \"gguf\": true"); /* total_bytes is the whole .gguf file */
    rf_sb_puts(&b, "},\n");
    rf_sb_printf(&b, "  \"method\": \"%s\", \"mode\": \"%s\", \"status\": \"%s\", \"weights\": {\"rule\": \"%s\", \"exponent\": ",
                 plan->method_text, rf_qmode_token(plan->mode), rf_plan_status_name(plan->status), rule_names[plan->rule]);
    rf_sb_double(&b, plan->exponent);
    rf_sb_puts(&b, "},\n  \"veto_db\": ");
    rf_sb_double(&b, plan->veto_db);
    rf_sb_printf(&b, ", \"unsafe\": %s, \"veto_violations\": %d,\n", plan->unsafe ? "true" : "false", plan->veto_violations);
    rf_sb_printf(&b, "  \"budget\": %llu, \"min_safe\": %llu, \"total_bytes\": %llu, \"other_bytes\": %llu, \"params\": %llu, \"bpw\": ",
                 (unsigned long long)plan->budget, (unsigned long long)plan->min_safe, (unsigned long long)plan->total,
                 (unsigned long long)plan->other, (unsigned long long)plan->params);
    rf_sb_double(&b, rf_plan_bpw(plan));
    rf_sb_puts(&b, ",\n  \"objective\": ");
    rf_sb_double(&b, plan->objective);
    rf_sb_puts(&b, ", \"lower_bound\": ");
    rf_sb_double(&b, plan->bound);
    rf_sb_printf(&b, ", \"states\": %llu,\n  \"units\": [", (unsigned long long)plan->states);
    for (uint64_t i = 0; i < plan->n; i++) {
        const rf_plan_unit *x = &plan->units[i];
        rf_sb_puts(&b, i ? ",\n    {\"name\": " : "\n    {\"name\": ");
        rf_sb_json_str(&b, x->name);
        rf_sb_printf(&b, ", \"role\": \"%s\", \"layer\": %d, \"bits\": %d, \"gs\": %d, \"params\": %llu, \"bytes\": %llu",
                     rf_profile_role_token(x->role), x->layer, x->bits, x->gs, (unsigned long long)x->nparams,
                     (unsigned long long)x->bytes);
        if (x->gtype) rf_sb_printf(&b, ", \"gguf_type\": \"%s\"", rf_gtype_name(x->gtype));
        rf_sb_puts(&b, ", \"d\": ");
        rf_sb_double(&b, x->d);
        rf_sb_puts(&b, ", \"weight\": ");
        rf_sb_double(&b, x->weight);
        rf_sb_puts(&b, ", \"max_abs\": ");
        rf_sb_double(&b, x->max_abs);
        rf_sb_puts(&b, "}");
    }
    rf_sb_puts(&b, plan->n ? "\n  ]\n}\n" : "]\n}\n");
    return rf_sb_finish(&b, out, len, err);
}

rf_status rf_plan_save(const rf_plan *plan, const char *path, rf_err *err)
{
    char *t;
    size_t n;
    rf_status s = rf_plan_to_json(plan, &t, &n, err);
    if (s) return s;
    s = rf_write_text_file(path, t, n, err);
    free(t);
    return s;
}

static rf_status pbad(const char *label, const char *where, const char *field, rf_err *err)
{
    return rf_err_set(err, RF_ERR_FORMAT, "%s: %s: field '%s' missing or invalid", label, where, field);
}

static rf_status pbad_range(const char *label, const char *where, const char *field, rf_err *err)
{
    return rf_err_set(err, RF_ERR_FORMAT, "%s: %s: field '%s' is out of range (byte and parameter counts must be "
                      "below 2^63)", label, where, field);
}

/* 1 and *V for a non-negative integer below 2^63 (what the writer can write); 0 otherwise, with
 * *OOR set when it is a number out of that range (the message says so rather than "invalid"). */
static int jget_u64_r(json_t *o, const char *k, uint64_t *v, int *oor)
{
    int r = rf_json_u64(json_object_get(o, k), INT64_MAX, v);
    if (r > 0 && oor) *oor = 1;
    return r == 0;
}
static int jget_u64(json_t *o, const char *k, uint64_t *v) { return jget_u64_r(o, k, v, NULL); }

static int jget_num(json_t *o, const char *k, double *v)
{
    json_t *j = json_object_get(o, k);
    if (!json_is_number(j)) return 0;
    *v = json_number_value(j);
    return isfinite(*v);
}

static int jget_str(json_t *o, const char *k, char *dst, size_t cap)
{
    json_t *j = json_object_get(o, k);
    if (!json_is_string(j) || json_string_length(j) >= cap || strlen(json_string_value(j)) != json_string_length(j)) return 0;
    memcpy(dst, json_string_value(j), json_string_length(j) + 1);
    return 1;
}

/* BYTES are what a unit of NPARAMS weights takes at BITS/GS (0/0: kept in a 16- or 32-bit float
 * dtype; quantized: MLX bytes with scales in BF16, F16 or F32). */
static int unit_bytes_fit(uint64_t nparams, int bits, int gs, uint64_t bytes)
{
    if (!bits) return bytes == nparams * 2 || bytes == nparams * 4;
    if (nparams % (uint64_t)gs) return 0;
    static const rf_dtype sd[] = {RF_DT_BF16, RF_DT_F16, RF_DT_F32};
    for (size_t i = 0; i < sizeof sd / sizeof sd[0]; i++)
        if (bytes == rf_quant_bytes(nparams, bits, gs, sd[i])) return 1;
    return 0;
}

/* A plan's own numbers agree with each other (an edited "budget": 1000 under units of 200 kB
 * must not be quantized and recorded as a 1000-byte plan). */
static rf_status plan_check_numbers(const rf_plan *pl, const char *label, rf_err *err)
{
    unsigned long long tot = pl->total, bud = pl->budget, ms = pl->min_safe;
    if (pl->status == RF_PLAN_RULE) {
        if (pl->budget)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: a %s plan (a fixed rule) records budget %llu; rule plans have none "
                              "(edited file?)", label, pl->method_text, bud);
    } else {
        if (pl->method == RF_METHOD_UNIFORM || pl->method == RF_METHOD_MIXED)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: method %s is a fixed rule but the status is %s (edited file?)",
                              label, pl->method_text, rf_plan_status_name(pl->status));
        if (pl->total > pl->budget)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: its units total %llu bytes, more than its budget of %llu bytes "
                              "(edited file?)", label, tot, bud);
        if (pl->status != RF_PLAN_KEEP_ALL && pl->total < pl->min_safe)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: its units total %llu bytes, less than its min-safe size of %llu "
                              "bytes (edited file?)", label, tot, ms);
    }
    double obj = plan_objective(pl, pl->exponent);
    if (!(fabs(obj - pl->objective) <= 1e-12 * fabs(obj) + 1e-300))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: objective %.17g is not the sum of its units' weight * d^%g (%.17g; "
                          "edited file?)", label, pl->objective, pl->exponent, obj);
    return RF_OK;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static rf_status plan_read(json_t *root, const char *label, rf_plan **out, rf_err *err)
{
    if (!json_is_object(root)) return pbad(label, "header", "(root)", err);
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!fmt || strcmp(fmt, "ramfit-plan")) return pbad(label, "header", "format", err);
    json_t *jv = json_object_get(root, "version");
    if (!json_is_integer(jv)) return pbad(label, "header", "version", err);
    if (json_integer_value(jv) != 1)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: plan format version %lld is not supported (this ramfit reads 1)", label,
                          (long long)json_integer_value(jv));
    json_t *prof = json_object_get(root, "profile"), *units = json_object_get(root, "units"), *w = json_object_get(root, "weights");
    if (!json_is_object(prof)) return pbad(label, "header", "profile", err);
    if (!json_is_array(units)) return pbad(label, "header", "units", err);
    if (!json_is_object(w)) return pbad(label, "header", "weights", err);
    uint64_t n = json_array_size(units), nu;
    if (!jget_u64(prof, "units", &nu) || nu != n) return pbad(label, "profile", "units", err);
    rf_plan *pl = plan_alloc(n);
    if (!pl) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    char t[64], fp[24];
    rf_status s = RF_OK;
    const char *f = NULL;
    int oor = 0;
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    if (!jget_str(prof, "model", pl->model, sizeof pl->model)) f = "profile.model";
    else if (!jget_str(prof, "architecture", pl->architecture, sizeof pl->architecture)) f = "profile.architecture";
    else if (!jget_str(prof, "fingerprint", fp, sizeof fp) || strlen(fp) != 16 || strspn(fp, "0123456789abcdef") != 16) f = "profile.fingerprint";
    else if (!jget_str(root, "method", t, sizeof t) || rf_plan_parse_method(t, &o, NULL)) f = "method";
    else if (!jget_str(root, "mode", t, sizeof t) || (strcmp(t, "mlx") && strcmp(t, "opt"))) f = "mode";
    if (!f && json_object_get(prof, "gguf")) {
        if (!json_is_true(json_object_get(prof, "gguf"))) f = "profile.gguf";
        pl->gguf = 1;
    }
    if (!f && json_object_get(prof, "f32_as")) { /* optional: plans before 0.2 do not say */
        char dt[16];
        pl->f32_as = jget_str(prof, "f32_as", dt, sizeof dt) ? rf_dtype_from_name(dt) : RF_DT_INVALID;
        if (pl->f32_as != RF_DT_BF16 && pl->f32_as != RF_DT_F16 && pl->f32_as != RF_DT_F32) f = "profile.f32_as";
    }
    if (!f) {
        pl->fingerprint = strtoull(fp, NULL, 16);
        pl->method = o.method;
        method_text(&o, pl->method_text, sizeof pl->method_text);
        pl->mode = t[0] == 'o' ? RF_QMODE_OPT : RF_QMODE_MLX;
        char st[32], rule[32];
        json_t *ju = json_object_get(root, "unsafe");
        int vv = -1;
        if (!jget_str(root, "status", st, sizeof st)) f = "status";
        else if (!jget_str(w, "rule", rule, sizeof rule) || rule_from_name(rule) < 0) f = "weights.rule";
        else if (!jget_num(w, "exponent", &pl->exponent) || pl->exponent <= 0) f = "weights.exponent";
        else if (!jget_num(root, "veto_db", &pl->veto_db)) f = "veto_db";
        else if (!json_is_boolean(ju)) f = "unsafe";
        else if (!json_is_integer(json_object_get(root, "veto_violations")) ||
                 (vv = (int)json_integer_value(json_object_get(root, "veto_violations"))) < 0 || (uint64_t)vv > n) f = "veto_violations";
        else if (!jget_u64_r(root, "budget", &pl->budget, &oor)) f = "budget";
        else if (!jget_u64_r(root, "min_safe", &pl->min_safe, &oor)) f = "min_safe";
        else if (!jget_u64_r(root, "total_bytes", &pl->total, &oor)) f = "total_bytes";
        else if (!jget_u64_r(root, "other_bytes", &pl->other, &oor)) f = "other_bytes";
        else if (!jget_u64_r(root, "params", &pl->params, &oor)) f = "params";
        else if (!jget_num(root, "objective", &pl->objective) || pl->objective < 0) f = "objective";
        else if (!jget_num(root, "lower_bound", &pl->bound) || pl->bound > pl->objective) f = "lower_bound";
        else if (!jget_u64_r(root, "states", &pl->states, &oor)) f = "states";
        if (!f) {
            pl->rule = (rf_weight_rule)rule_from_name(rule);
            pl->unsafe = json_is_true(ju);
            pl->veto_violations = vv;
            int k = 0;
            while (k < 4 && strcmp(st, rf_plan_status_name((rf_plan_status)k))) k++;
            if (k == 4) f = "status";
            else pl->status = (rf_plan_status)k;
        }
    }
    if (f) s = oor ? pbad_range(label, "header", f, err) : pbad(label, "header", f, err);
    uint64_t sum = pl->other, params = 0;
    char where[200];
    for (uint64_t i = 0; !s && i < n; i++) {
        json_t *ju = json_array_get(units, i);
        rf_plan_unit *x = &pl->units[i];
        char role[32];
        double lay = 0, bits = 0, gs = 0;
        snprintf(where, sizeof where, "unit %llu", (unsigned long long)i);
        f = NULL;
        char gt[16];
        int gtype = 0;
        if (json_is_object(ju) && json_object_get(ju, "gguf_type")) {
            gtype = pl->gguf && jget_str(ju, "gguf_type", gt, sizeof gt) ? rf_gtype_parse(gt) : -1;
            if (rf_gcand_index(gtype) < 0) f = "gguf_type";
        }
        if (f) {
        } else if (!json_is_object(ju)) f = "(unit)";
        else if (!jget_str(ju, "name", pl->names[i], sizeof pl->names[i]) || !pl->names[i][0]) f = "name";
        else if (!jget_str(ju, "role", role, sizeof role) || rf_role_from_token(role) < 0) f = "role";
        else if (!jget_num(ju, "layer", &lay) || lay < -1 || lay > 1e9 || lay != floor(lay)) f = "layer";
        else if (!jget_num(ju, "bits", &bits) || !jget_num(ju, "gs", &gs) || bits > 64 || gs > 1024 || bits < 0 || gs < 0 ||
                 bits != floor(bits) || gs != floor(gs) ||
                 !(gtype ? (int)bits == rf_gtype_bits(gtype) && (uint64_t)gs == rf_gtype_block(gtype)
                         : (bits == 0 && gs == 0) || rf_cfg_index((int)bits, (int)gs) >= 0)) f = "bits/gs";
        else if (!jget_u64(ju, "params", &x->nparams) || x->nparams > (1ull << 52)) f = "params";
        else if (!jget_u64(ju, "bytes", &x->bytes) || x->bytes > (1ull << 62) ||
                 (gtype ? x->bytes < x->nparams / rf_gtype_block(gtype) * rf_gtype_block_bytes(gtype)
                        : !unit_bytes_fit(x->nparams, (int)bits, (int)gs, x->bytes)))
            f = "bytes"; /* a GGUF unit's exact bytes (padding, members) are checked against its profile */
        else if (!jget_num(ju, "d", &x->d) || x->d < 0) f = "d";
        else if (!jget_num(ju, "weight", &x->weight) || x->weight < 0) f = "weight";
        else if (!jget_num(ju, "max_abs", &x->max_abs) || x->max_abs < 0) f = "max_abs";
        if (f) {
            s = pbad(label, where, f, err);
            break;
        }
        x->role = (rf_role)rf_role_from_token(role);
        x->layer = (int)lay;
        x->bits = (int)bits;
        x->gs = (int)gs;
        x->gtype = gtype;
        sum += x->bytes;
        params += x->nparams;
    }
    if (!s && (sum != pl->total || params > pl->params))
        s = rf_err_set(err, RF_ERR_FORMAT, "%s: units do not add up to total_bytes/params (truncated or edited file?)", label);
    if (!s) s = plan_check_numbers(pl, label, err);
    if (!s && n > 1) {
        char **names = malloc(sizeof *names * n);
        if (!names) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (uint64_t i = 0; !s && i < n; i++) names[i] = pl->names[i];
        if (!s) qsort(names, n, sizeof *names, name_cmp);
        for (uint64_t i = 1; !s && i < n; i++)
            if (!strcmp(names[i - 1], names[i])) s = rf_err_set(err, RF_ERR_FORMAT, "%s: duplicate unit %s", label, names[i]);
        free(names);
    }
    if (s) { rf_plan_free(pl); return s; }
    *out = pl;
    return RF_OK;
}

rf_status rf_plan_from_json(const char *text, size_t len, const char *label, rf_plan **out, rf_err *err)
{
    *out = NULL;
    json_t *root;
    rf_status s = rf_json_parse(text, len, label ? label : "plan", JSON_REJECT_DUPLICATES, &root, err);
    if (s) return s;
    s = plan_read(root, label ? label : "plan", out, err);
    json_decref(root);
    return s;
}

rf_status rf_plan_load(const char *path, rf_plan **out, rf_err *err)
{
    *out = NULL;
    char *t;
    size_t n;
    rf_status s = rf_json_read_text(path, RF_MAX_PLAN_FILE, &t, &n, err);
    if (s) return s;
    s = rf_plan_from_json(t, n, path, out, err);
    free(t);
    return s;
}

/* ------------------------------------------------------------------ budget curve SVG */

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about N ticks over RANGE. */
static double nice_step(double range, int n)
{
    double raw = range / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

rf_status rf_plan_curve_svg(const rf_curve_point *pts, int n, uint64_t min_safe, const rf_curve_mark *marks, int nmarks,
                            const char *title, const char *path, rf_err *err)
{
    if (n < 1) return rf_err_set(err, RF_ERR_INVALID, "curve: no points");
    const double W = 760, H = 460, L = 80, R = 30, T = 40, B = 60;
    double xmin = (double)min_safe, xmax = xmin, ypos = INFINITY, ymax = 0;
    for (int i = 0; i < n; i++) {
        xmin = fmin(xmin, (double)pts[i].bytes);
        xmax = fmax(xmax, (double)pts[i].bytes);
        if (pts[i].objective > 0) ypos = fmin(ypos, pts[i].objective);
        ymax = fmax(ymax, pts[i].objective);
    }
    for (int i = 0; i < nmarks; i++) {
        xmin = fmin(xmin, (double)marks[i].bytes);
        xmax = fmax(xmax, (double)marks[i].bytes);
    }
    if (!isfinite(ypos)) ypos = 1e-12, ymax = 1;
    if (xmax <= xmin) xmax = xmin + 1;
    /* decades on the y axis: errors span orders of magnitude */
    double ylo = floor(log10(ypos)), yhi = ceil(log10(fmax(ymax, ypos)));
    if (yhi <= ylo) yhi = ylo + 1;
    double unit = xmax >= 1e9 ? 1e9 : xmax >= 1e6 ? 1e6 : 1e3;
    const char *uname = unit == 1e9 ? "GB" : unit == 1e6 ? "MB" : "kB";
#define XP(v) (L + ((v) - xmin) / (xmax - xmin) * (W - L - R))
#define YP(v) (T + (yhi - log10(fmax((v), pow(10, ylo)))) / (yhi - ylo) * (H - T - B))
    rf_sb b = {0};
    rf_sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    rf_sb_printf(&b, "<rect width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n<text x=\"%.0f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", W, H, W / 2);
    for (const char *c = title ? title : "budget curve"; *c; c++) {
        char e[8] = {*c, 0};
        rf_sb_puts(&b, *c == '<' ? "&lt;" : *c == '>' ? "&gt;" : *c == '&' ? "&amp;" : e);
    }
    rf_sb_puts(&b, "</text>\n");
    rf_sb_printf(&b, "<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"black\"/>\n", L, T, H - B, W - R);
    double step = nice_step((xmax - xmin) / unit, 6);
    for (double v = ceil(xmin / unit / step) * step; v <= xmax / unit + 1e-9 * step; v += step) {
        double x = XP(v * unit);
        rf_sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                     x, H - B, x, H - B + 5, x, H - B + 19, v);
    }
    for (double d = ylo; d <= yhi; d++) {
        double y = YP(pow(10, d));
        rf_sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">1e%d</text>\n",
                     L, y, W - R, y, L - 6, y + 4, (int)d);
    }
    rf_sb_printf(&b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">total tensor bytes (%s)</text>\n", (L + W - R) / 2, H - 18, uname);
    rf_sb_printf(&b, "<text transform=\"translate(18 %.0f) rotate(-90)\" text-anchor=\"middle\">predicted error (objective, log scale)</text>\n",
                 (T + H - B) / 2);
    rf_sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#c00\" stroke-dasharray=\"5 3\"/><text x=\"%.1f\" y=\"%.1f\" fill=\"#c00\">min-safe</text>\n",
                 XP((double)min_safe), T, XP((double)min_safe), H - B, XP((double)min_safe) + 3, T + 12);
    for (int i = 0; i < nmarks; i++) {
        double x = XP((double)marks[i].bytes);
        rf_sb_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#06c\" stroke-dasharray=\"2 2\"/><text x=\"%.1f\" y=\"%.1f\" fill=\"#06c\">",
                     x, T, x, H - B, x + 3, T + 26 + 13.0 * (i % 8));
        for (const char *c = marks[i].label ? marks[i].label : ""; *c; c++) {
            char e[8] = {*c, 0};
            rf_sb_puts(&b, *c == '<' ? "&lt;" : *c == '>' ? "&gt;" : *c == '&' ? "&amp;" : e);
        }
        rf_sb_puts(&b, "</text>\n");
    }
    rf_sb_puts(&b, "<polyline fill=\"none\" stroke=\"black\" stroke-width=\"1.5\" points=\"");
    for (int i = 0; i < n; i++) rf_sb_printf(&b, "%s%.1f,%.1f", i ? " " : "", XP((double)pts[i].bytes), YP(pts[i].objective));
    rf_sb_puts(&b, "\"/>\n</svg>\n");
#undef XP
#undef YP
    char *text;
    size_t len;
    rf_status s = rf_sb_finish(&b, &text, &len, err);
    if (s) return s;
    s = rf_write_text_file(path, text, len, err);
    free(text);
    return s;
}
