/* ramfit plan: budgets -> optimal per-unit configs, with a report, plan files and a budget curve. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <limits.h>
#include <unistd.h>

/* Exit status when some budgets were refused (below min-safe, ...) and the others planned. */
#define EXIT_SOME_REFUSED 3

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ramfit plan PROFILE [--budget SIZE ...] [--bpw BITS ...] [--target NAME ...] [options]\n"
            "\n"
            "Choose a quantization (bits, group size, or keep) for every unit of the model in PROFILE so\n"
            "that all tensor bytes fit the budget and the predicted error is minimal (exact solver).\n"
            "Budgets cover tensor bytes only, not config.json or tokenizer files.\n"
            "\n"
            "budgets (repeatable, any number; one plan each):\n"
            "  --budget SIZE       bytes: 123456789, 24GB, 1.5GB (decimal) or 16GiB, 512MiB (binary)\n"
            "  --sweep FROM:TO:N   N budgets evenly spaced from FROM to TO (sizes as --budget)\n"
            "  --bpw BITS          bits per weight over all parameters: budget = floor(BITS * params / 8)\n"
            "  --target NAME       a named device (see --list-targets); budget after OS, runtime and KV cache\n"
            "  --context N         tokens of KV cache reserved for --target (default 4096)\n"
            "  --list-targets      print the device table and exit\n"
            "objective and safety:\n"
            "  --mode mlx|opt      whose measured error to use (default: opt when the profile has it)\n"
            "  --veto-db DB        candidates below this SQNR are not allowed (default 9)\n"
            "  --unsafe            lift the veto (hard rules such as routers >= 8 bits stay)\n"
            "  --weights FILE      objective weights as JSON (docs/plan.md)\n"
            "  --weight KEY=VALUE  one weight: a role (attn_v=2), first, last, exponent, share, active, rule\n"
            "  --method M          ramfit (default), uniform:BITS:GS, mixed:LOW:HIGH[:GS] or ram;\n"
            "                      baselines are also compared with ramfit at their own size\n"
            "  --state-limit N     exact search budget (states); beyond it the plan reports its gap\n"
            "  --threads N         budgets planned in parallel (default: all CPUs; same plans for any N)\n"
            "output:\n"
            "  -o PLAN             write the plan file (several budgets: PLAN must contain %%s for the label)\n"
            "  --emit llama-quantize\n"
            "                      write, at -o, llama-quantize's --tensor-type-file instead of the plan:\n"
            "                      one anchored pattern per GGUF tensor, its type the plan's (a GGUF\n"
            "                      profile: 'ramfit analyse --format gguf') or from its bits (MLX profile:\n"
            "                      2/3/4/5/6/8 -> Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/Q8_0), kept -> --dtype, so\n"
            "                      llama-quantize --tensor-type-file FILE IN.gguf OUT.gguf Q8_0 applies\n"
            "                      the plan with llama.cpp's encoders (IN: e.g. ramfit's BF16 GGUF)\n"
            "  --dtype bf16|f16|f32  with --emit: the type of kept units (default bf16)\n"
            "  --svg FILE          budget curve: predicted error vs size, min-safe and budgets marked\n"
            "  --curve-points N    points on the curve (default 48)\n"
            "  --json              print the report as JSON\n"
            "A budget that cannot be met (below the min-safe size) is reported as refused, with the\n"
            "min-safe size, and the others are planned; the exit status is then %d (0: all planned).\n",
            EXIT_SOME_REFUSED);
}

typedef struct req {
    char label[160];
    char file_label[96]; /* what replaces %s in -o */
    uint64_t budget;
    rf_err refused;      /* code != RF_OK: no budget (a target without memory left for weights) */
} req;

/* A growing list of option values. */
typedef struct strs {
    const char **v;
    int n, cap;
} strs;

static int strs_add(strs *l, const char *x)
{
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 16;
        const char **nv = realloc(l->v, (size_t)nc * sizeof *nv);
        if (!nv) return 0;
        l->v = nv, l->cap = nc;
    }
    l->v[l->n++] = x;
    return 1;
}

typedef struct args {
    const char *profile, *out, *svg, *weights_file;
    strs weight_kv, budgets, bpws, targets, sweeps;
    const char *method;
    const char *mode, *veto, *context, *state_limit, *points, *threads, *emit, *dtype;
    int unsafe, json, list_targets;
} args;

static void args_free(args *a)
{
    free(a->weight_kv.v);
    free(a->budgets.v);
    free(a->bpws.v);
    free(a->targets.v);
    free(a->sweeps.v);
}

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **one = NULL;
        strs *many = NULL;
        if (!strcmp(s, "--unsafe")) { a->unsafe = 1; continue; }
        if (!strcmp(s, "--json")) { a->json = 1; continue; }
        if (!strcmp(s, "--list-targets")) { a->list_targets = 1; continue; }
        if (!strcmp(s, "--budget")) many = &a->budgets;
        else if (!strcmp(s, "--sweep")) many = &a->sweeps;
        else if (!strcmp(s, "--bpw")) many = &a->bpws;
        else if (!strcmp(s, "--target")) many = &a->targets;
        else if (!strcmp(s, "--weight")) many = &a->weight_kv;
        else if (!strcmp(s, "-o") || !strcmp(s, "--output")) one = &a->out;
        else if (!strcmp(s, "--svg")) one = &a->svg;
        else if (!strcmp(s, "--weights")) one = &a->weights_file;
        else if (!strcmp(s, "--method")) one = &a->method;
        else if (!strcmp(s, "--mode")) one = &a->mode;
        else if (!strcmp(s, "--veto-db")) one = &a->veto;
        else if (!strcmp(s, "--context")) one = &a->context;
        else if (!strcmp(s, "--state-limit")) one = &a->state_limit;
        else if (!strcmp(s, "--curve-points")) one = &a->points;
        else if (!strcmp(s, "--threads")) one = &a->threads;
        else if (!strcmp(s, "--emit")) one = &a->emit;
        else if (!strcmp(s, "--dtype")) one = &a->dtype;
        else if (s[0] == '-' && s[1]) return cli_usage_error("plan", "unknown option '%s'", s);
        else if (!a->profile) { a->profile = s; continue; }
        else return cli_usage_error("plan", "unexpected argument '%s' (one PROFILE only)", s);
        if (i + 1 >= argc) return cli_usage_error("plan", "%s needs a value", s);
        if (one) *one = argv[++i];
        else if (!strs_add(many, argv[++i])) return cli_usage_error("plan", "out of memory");
    }
    return 0;
}

static int list_targets(void)
{
    printf("%-20s %-28s %9s  %s\n", "target", "device", "memory", "budget rule");
    for (int i = 0; i < rf_target_count(); i++) {
        const rf_target *t = rf_target_get(i);
        const char *rule = t->kind == RF_TARGET_APPLE ? (t->memory <= 36ull << 30 ? "2/3 wired - 512 MiB - KV" : "3/4 wired - 512 MiB - KV")
                           : t->kind == RF_TARGET_GPU ? "VRAM - 1 GiB - KV"
                                                      : "1/2 RAM - 256 MiB - KV";
        printf("%-20s %-28s %5llu GiB  %s\n", t->name, t->description, (unsigned long long)(t->memory >> 30), rule);
    }
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    *out = strtod(s, &end);
    return end != s && !*end && isfinite(*out);
}

/* Digits only, within uint64 (strtoull alone takes " +5", wraps "-1" and saturates on overflow). */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s) return 0;
    for (const char *c = s; *c; c++)
        if (*c < '0' || *c > '9') return 0;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE) return 0;
    *out = v;
    return 1;
}

/* ------------------------------------------------------------------ text report */

static void size_str(uint64_t b, char *buf, size_t cap) { rf_format_size(b, buf, cap); }

/* GTYPE: a GGUF candidate's type, named as llama.cpp names it. */
static void cfg_str(int bits, int gs, int gtype, char *buf, size_t cap)
{
    if (!bits) snprintf(buf, cap, "keep");
    else if (gtype) snprintf(buf, cap, "%s", rf_gtype_name(gtype));
    else snprintf(buf, cap, "%d/%d", bits, gs);
}

static double sqnr(double d) { return d <= 0 ? INFINITY : -10 * log10(d); }

static void print_units(const rf_plan *plan, const uint64_t *order, uint64_t from, uint64_t n, int step)
{
    printf("    %-52s %-7s %6s %9s %10s\n", "unit", "config", "bpw", "SQNR dB", "weight");
    for (uint64_t k = 0; k < n; k++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, order[step > 0 ? from + k : from - k]);
        char c[16];
        cfg_str(u->bits, u->gs, u->gtype, c, sizeof c);
        printf("    %-52.52s %-7s %6.2f %9.2f %10.3g\n", u->name, c, 8.0 * (double)u->bytes / (double)u->nparams, sqnr(u->d), u->weight);
    }
}

static void print_plan(const rf_plan *plan, const char *label, uint64_t budget)
{
    char s1[32], s2[32];
    size_str(rf_plan_total_bytes(plan), s1, sizeof s1);
    size_str(budget, s2, sizeof s2);
    printf("\n%s  [method %s, mode %s]\n", label, rf_plan_method_text(plan),
           rf_plan_is_gguf(plan) ? "gguf" : rf_plan_mode(plan) == RF_QMODE_OPT ? "opt" : "mlx");
    if (rf_plan_status_of(plan) == RF_PLAN_RULE)
        printf("  size        %s (%llu B), %.3f bpw%s\n", s1, (unsigned long long)rf_plan_total_bytes(plan), rf_plan_bpw(plan),
               budget ? (rf_plan_total_bytes(plan) <= budget ? " (fits the budget)" : " (OVER the budget)") : "");
    else
        printf("  size        %s (%llu B) of budget %s (%.2f%%), %.3f bpw\n", s1, (unsigned long long)rf_plan_total_bytes(plan), s2,
               100.0 * (double)rf_plan_total_bytes(plan) / (double)budget, rf_plan_bpw(plan));
    switch (rf_plan_status_of(plan)) {
    case RF_PLAN_KEEP_ALL:
        printf("  the budget is at or above the unquantized size: every unit is kept as it is\n");
        return;
    case RF_PLAN_OPTIMAL:
        printf("  objective   %.6g  optimal (Lagrangian lower bound %.6g; gap closed by exact search, %llu states)\n",
               rf_plan_objective(plan), rf_plan_lower_bound(plan), (unsigned long long)rf_plan_states(plan));
        break;
    case RF_PLAN_GAP:
        printf("  objective   %.6g  NOT proven optimal: gap %.4f%% to the lower bound %.6g (state limit reached, %llu states)\n",
               rf_plan_objective(plan), 100 * rf_plan_gap(plan), rf_plan_lower_bound(plan), (unsigned long long)rf_plan_states(plan));
        break;
    default:
        printf("  objective   %.6g  (a fixed rule, not optimised)\n", rf_plan_objective(plan));
        if (rf_plan_veto_violations(plan))
            printf("  warning     %d units are below the %.1f dB SQNR veto\n", rf_plan_veto_violations(plan), rf_plan_veto_db(plan));
    }
    uint64_t n = rf_plan_unit_count(plan), worst = 0;
    double num = 0, den = 0;
    for (uint64_t i = 0; i < n; i++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, i);
        num += u->d * (double)u->nparams;
        den += (double)u->nparams;
        if (u->d > rf_plan_get_unit(plan, worst)->d) worst = i;
    }
    if (n)
        printf("  error       parameter-weighted D %.4g (%.2f dB); worst unit %.2f dB (%s)\n", den ? num / den : 0, sqnr(den ? num / den : 0),
               sqnr(rf_plan_get_unit(plan, worst)->d), rf_plan_get_unit(plan, worst)->name);
    rf_plan_share sh[32];
    int ns = rf_plan_shares(plan, sh, 32);
    printf("  %-8s %6s %14s %7s %14s\n", "config", "units", "params", "share", "bytes");
    for (int i = 0; i < ns && i < 32; i++) {
        char c[16];
        cfg_str(sh[i].bits, sh[i].gs, sh[i].gtype, c, sizeof c);
        printf("  %-8s %6llu %14llu %6.2f%% %14llu\n", c, (unsigned long long)sh[i].units, (unsigned long long)sh[i].nparams,
               100.0 * (double)sh[i].nparams / (double)rf_plan_param_count(plan), (unsigned long long)sh[i].bytes);
    }
    if (rf_plan_is_gguf(plan))
        printf("  other tensors (norms, 1-D, F32) and the file's header, metadata and tokenizer: %llu B\n",
               (unsigned long long)rf_plan_other_bytes(plan));
    else
        printf("  other tensors (norms, 1-D): %llu B, always kept\n", (unsigned long long)rf_plan_other_bytes(plan));
    uint64_t *order = malloc(sizeof *order * (n ? n : 1));
    if (!order || n == 0) { free(order); return; }
    rf_plan_protection_order(plan, order, NULL);
    uint64_t k = n < 10 ? n : 10;
    printf("  most protected:\n");
    print_units(plan, order, 0, k, 1);
    printf("  least protected:\n");
    print_units(plan, order, n - 1, k, -1);
    free(order);
}

/* ------------------------------------------------------------------ JSON report */

static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static void json_num(double v)
{
    if (isfinite(v)) printf("%.17g", v);
    else printf("null");
}

static void json_units(const rf_plan *plan, const uint64_t *order, uint64_t from, uint64_t n, int step)
{
    putchar('[');
    for (uint64_t k = 0; k < n; k++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, order[step > 0 ? from + k : from - k]);
        printf("%s{\"name\": ", k ? ", " : "");
        json_str(u->name);
        printf(", \"bits\": %d, \"gs\": %d, ", u->bits, u->gs);
        if (u->gtype) printf("\"gguf_type\": \"%s\", ", rf_gtype_name(u->gtype));
        printf("\"d\": ");
        json_num(u->d);
        printf("}");
    }
    putchar(']');
}

static void json_plan(const rf_plan *plan, const char *label, uint64_t budget, const char *file, int first, double ramfit_same,
                      int have_same)
{
    printf("%s\n    {\"label\": ", first ? "" : ",");
    json_str(label);
    printf(", \"method\": ");
    json_str(rf_plan_method_text(plan));
    printf(", \"mode\": \"%s\", \"status\": \"%s\", \"budget\": %llu, \"total_bytes\": %llu, \"bpw\": ",
           rf_plan_mode(plan) == RF_QMODE_OPT ? "opt" : "mlx", rf_plan_status_name(rf_plan_status_of(plan)),
           (unsigned long long)budget, (unsigned long long)rf_plan_total_bytes(plan));
    json_num(rf_plan_bpw(plan));
    printf(", \"objective\": ");
    json_num(rf_plan_objective(plan));
    printf(", \"lower_bound\": ");
    json_num(rf_plan_lower_bound(plan));
    printf(", \"gap\": ");
    json_num(rf_plan_gap(plan));
    printf(", \"states\": %llu, \"veto_violations\": %d", (unsigned long long)rf_plan_states(plan), rf_plan_veto_violations(plan));
    if (have_same) {
        printf(", \"ramfit_objective_same_size\": ");
        json_num(ramfit_same);
    }
    if (file) {
        printf(", \"file\": ");
        json_str(file);
    }
    printf(", \"shares\": [");
    rf_plan_share sh[32];
    int ns = rf_plan_shares(plan, sh, 32);
    for (int i = 0; i < ns && i < 32; i++)
        printf("%s{\"bits\": %d, \"gs\": %d, %s%s%s\"units\": %llu, \"params\": %llu, \"bytes\": %llu}", i ? ", " : "", sh[i].bits,
               sh[i].gs, sh[i].gtype ? "\"gguf_type\": \"" : "", sh[i].gtype ? rf_gtype_name(sh[i].gtype) : "",
               sh[i].gtype ? "\", " : "", (unsigned long long)sh[i].units, (unsigned long long)sh[i].nparams,
               (unsigned long long)sh[i].bytes);
    printf("]");
    uint64_t n = rf_plan_unit_count(plan);
    uint64_t *order = malloc(sizeof *order * (n ? n : 1));
    if (order && n) {
        rf_plan_protection_order(plan, order, NULL);
        uint64_t k = n < 10 ? n : 10;
        printf(", \"most_protected\": ");
        json_units(plan, order, 0, k, 1);
        printf(", \"least_protected\": ");
        json_units(plan, order, n - 1, k, -1);
    }
    free(order);
    printf("}");
}

/* ------------------------------------------------------------------ main */

static int out_path(const char *pattern, const char *label, int many, char *buf, size_t cap)
{
    const char *pct = strstr(pattern, "%s");
    if (!pct) {
        if (many) return 0;
        snprintf(buf, cap, "%s", pattern);
        return 1;
    }
    char clean[96];
    size_t j = 0;
    for (const char *c = label; *c && j + 1 < sizeof clean; c++)
        clean[j++] = (isalnum((unsigned char)*c) || *c == '.' || *c == '-') ? *c : '_';
    clean[j] = 0;
    snprintf(buf, cap, "%.*s%s%s", (int)(pct - pattern), pattern, clean, pct + 2);
    return 1;
}

/* One budget of a --sweep FROM:TO:N: FROM + (TO - FROM) * i / (N - 1), exact in integers. */
static uint64_t sweep_at(uint64_t from, uint64_t to, uint64_t n, uint64_t i)
{
    if (n == 1) return from;
    unsigned __int128 span = to >= from ? to - from : from - to, d = span * i / (n - 1);
    return to >= from ? from + (uint64_t)d : from - (uint64_t)d;
}

static int add_req(req **reqs, int *n, int *cap)
{
    if (*n < *cap) return 1;
    int nc = *cap ? *cap * 2 : 64;
    req *nr = realloc(*reqs, (size_t)nc * sizeof *nr);
    if (!nr) return 0;
    *reqs = nr, *cap = nc;
    return 1;
}

/* Budgets in the order given: --budget, --sweep, --bpw, --target. */
static int resolve_budgets(const args *a, const rf_profile *prof, uint64_t context, req **out, int *nreq)
{
    rf_err err;
    req *reqs = NULL;
    int n = 0, cap = 0;
#define NEXT()                                                                             \
    do {                                                                                   \
        if (!add_req(&reqs, &n, &cap)) { free(reqs); return cli_usage_error("plan", "out of memory"); } \
        memset(&reqs[n], 0, sizeof reqs[n]);                                               \
    } while (0)
    for (int i = 0; i < a->budgets.n; i++, n++) {
        NEXT();
        if (rf_parse_size(a->budgets.v[i], &reqs[n].budget, &err)) {
            free(reqs);
            return cli_usage_error("plan", "--budget: %s", err.msg);
        }
        snprintf(reqs[n].label, sizeof reqs[n].label, "budget %s", a->budgets.v[i]);
        snprintf(reqs[n].file_label, sizeof reqs[n].file_label, "%s", a->budgets.v[i]);
    }
    for (int i = 0; i < a->sweeps.n; i++) {
        const char *sw = a->sweeps.v[i];
        const char *c1 = strchr(sw, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        char from[64], to[64];
        uint64_t lo, hi, cnt;
        char *end;
        if (!c1 || !c2 || c1 - sw >= (long)sizeof from || c2 - c1 - 1 >= (long)sizeof to) {
            free(reqs);
            return cli_usage_error("plan", "--sweep '%s': expected FROM:TO:N, e.g. 2GB:8GB:25", sw);
        }
        snprintf(from, sizeof from, "%.*s", (int)(c1 - sw), sw);
        snprintf(to, sizeof to, "%.*s", (int)(c2 - c1 - 1), c1 + 1);
        cnt = 0;
        end = (char *)"";
        if (!parse_u64(c2 + 1, &cnt)) end = (char *)"x";
        if (rf_parse_size(from, &lo, &err) || rf_parse_size(to, &hi, &err)) {
            free(reqs);
            return cli_usage_error("plan", "--sweep '%s': %s", sw, err.msg);
        }
        if (*end || cnt < 1 || cnt > 1000000) {
            free(reqs);
            return cli_usage_error("plan", "--sweep '%s': N must be a count from 1 to 1000000", sw);
        }
        for (uint64_t k = 0; k < cnt; k++, n++) {
            NEXT();
            reqs[n].budget = sweep_at(lo, hi, cnt, k);
            snprintf(reqs[n].label, sizeof reqs[n].label, "sweep %llu/%llu: %llu B", (unsigned long long)(k + 1),
                     (unsigned long long)cnt, (unsigned long long)reqs[n].budget);
            snprintf(reqs[n].file_label, sizeof reqs[n].file_label, "%llu", (unsigned long long)reqs[n].budget);
        }
    }
    for (int i = 0; i < a->bpws.n; i++, n++) {
        NEXT();
        double v;
        if (!parse_double(a->bpws.v[i], &v)) {
            free(reqs);
            return cli_usage_error("plan", "--bpw: '%s' is not a number", a->bpws.v[i]);
        }
        if (rf_plan_bpw_budget(prof, v, &reqs[n].budget, &err)) {
            free(reqs);
            return cli_usage_error("plan", "--bpw %s: %s", a->bpws.v[i], err.msg);
        }
        snprintf(reqs[n].label, sizeof reqs[n].label, "%s bits per weight", a->bpws.v[i]);
        snprintf(reqs[n].file_label, sizeof reqs[n].file_label, "%s bits per weight", a->bpws.v[i]);
    }
    for (int i = 0; i < a->targets.n; i++, n++) {
        NEXT();
        const rf_target *t = rf_target_find(a->targets.v[i]);
        if (!t) {
            free(reqs);
            return cli_usage_error("plan", "unknown target '%s' (see --list-targets)", a->targets.v[i]);
        }
        rf_target_budget tb;
        if (rf_target_budget_for(t, prof, context, &tb, &err)) {
            if (err.code != RF_ERR_BUDGET) {
                free(reqs);
                return cli_fail(&err);
            }
            /* this target cannot hold the model: its own refused row, the other budgets are planned */
            reqs[n].refused = err;
            memset(&tb, 0, sizeof tb);
        }
        reqs[n].budget = tb.budget;
        char s1[32], s2[32], s3[32];
        size_str(tb.limit, s1, sizeof s1);
        size_str(tb.kv_cache, s2, sizeof s2);
        size_str(tb.reserve, s3, sizeof s3);
        snprintf(reqs[n].label, sizeof reqs[n].label, "%.40s: limit %s - reserve %s - KV %s", t->name, s1, s3, s2);
        snprintf(reqs[n].file_label, sizeof reqs[n].file_label, "%.90s", reqs[n].label);
    }
#undef NEXT
    *out = reqs;
    *nreq = n;
    return 0;
}

static int setup_opts(const args *a, const rf_profile *prof, rf_plan_opts *o)
{
    rf_err err;
    rf_plan_opts_default(o);
    if (!(rf_profile_modes(prof) >> RF_QMODE_OPT & 1)) o->mode = RF_QMODE_MLX;
    if (a->method && rf_plan_parse_method(a->method, o, &err)) return cli_usage_error("plan", "--method: %s", err.msg);
    if (a->mode) {
        if (!strcmp(a->mode, "mlx")) o->mode = RF_QMODE_MLX;
        else if (!strcmp(a->mode, "opt")) o->mode = RF_QMODE_OPT;
        else return cli_usage_error("plan", "--mode must be mlx or opt");
    }
    if (a->veto && !parse_double(a->veto, &o->veto_db)) return cli_usage_error("plan", "--veto-db: '%s' is not a number", a->veto);
    o->unsafe = a->unsafe;
    if (a->weights_file && rf_plan_weights_load(a->weights_file, &o->weights, &err)) return cli_fail(&err);
    for (int i = 0; i < a->weight_kv.n; i++)
        if (rf_plan_weights_set(&o->weights, a->weight_kv.v[i], &err)) return cli_usage_error("plan", "--weight: %s", err.msg);
    if (a->state_limit && (!parse_u64(a->state_limit, &o->state_limit) || !o->state_limit))
        return cli_usage_error("plan", "--state-limit must be a positive integer");
    return 0;
}

/* 1 if writing DST would replace the profile or its data file: the input of this very run. */
static int clobbers_profile(const char *dst, const char *profile)
{
    if (cli_same_file(dst, profile)) return 1;
    char *data = NULL;
    rf_err err;
    /* an unreadable profile is reported when it is loaded: here it has no data file to protect */
    int hit = !rf_profile_data_path(profile, &data, &err) && data && cli_same_file(dst, data);
    free(data);
    return hit;
}

static int write_curve(const args *a, rf_planner *pl, const rf_profile *prof, const req *reqs, int nreq, const rf_plan_opts *o)
{
    uint64_t npts = 48;
    if (a->points && (!parse_u64(a->points, &npts) || npts < 2 || npts > 2000))
        return cli_usage_error("plan", "--curve-points must be in [2, 2000]");
    uint64_t lo = rf_planner_min_safe(pl), hi = rf_planner_full_bytes(pl);
    rf_curve_point *pts = calloc(npts, sizeof *pts);
    rf_curve_mark *marks = calloc((size_t)nreq + 1, sizeof *marks);
    if (!pts || !marks) {
        free(pts);
        free(marks);
        return cli_usage_error("plan", "out of memory");
    }
    rf_err err;
    int n = 0;
    for (uint64_t i = 0; i < npts; i++) {
        uint64_t b = lo + (uint64_t)((double)(hi - lo) * (double)i / (double)(npts - 1));
        rf_plan *plan;
        if (rf_planner_solve(pl, b, &plan, &err)) { free(pts); free(marks); return cli_fail(&err); }
        pts[n++] = (rf_curve_point){rf_plan_total_bytes(plan), rf_plan_objective(plan)};
        rf_plan_free(plan);
    }
    int nm = 0;
    for (int i = 0; i < nreq; i++)
        if (!reqs[i].refused.code) marks[nm++] = (rf_curve_mark){reqs[i].budget, reqs[i].label};
    char title[400];
    snprintf(title, sizeof title, "%s: predicted error vs size (%s, mode %s)", rf_profile_model(prof)->name,
             o->method == RF_METHOD_RAM ? "ram" : "ramfit", o->mode == RF_QMODE_OPT ? "opt" : "mlx");
    rf_status s = rf_plan_curve_svg(pts, n, lo, marks, nm, title, a->svg, &err);
    free(pts);
    free(marks);
    if (s) return cli_fail(&err);
    if (!a->json) printf("\nbudget curve: %d points from min-safe to the unquantized size written to %s\n", n, a->svg);
    return 0;
}

/* "dir/name" with the directory resolved (links, "./"), so that two spellings of one file compare
 * equal; the path as given when its directory does not exist. malloc'd. */
static char *canon_path(const char *p)
{
    const char *slash = strrchr(p, '/');
    char *dir = slash ? strndup(p, slash == p ? 1 : (size_t)(slash - p)) : strdup(".");
    char *rd = dir ? realpath(dir, NULL) : NULL, *out = NULL;
    const char *base = slash ? slash + 1 : p;
    size_t n = rd ? strlen(rd) + strlen(base) + 2 : 0;
    if (rd && (out = malloc(n))) snprintf(out, n, "%s/%s", strcmp(rd, "/") ? rd : "", base);
    free(rd);
    free(dir);
    return out ? out : strdup(p);
}

static int str_cmp(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* The file name of plan I (the method for a rule, else the budget's file label). */
static void plan_path(const args *a, const req *reqs, int rule, int nplans, int i, char *buf, size_t cap)
{
    out_path(a->out, rule ? a->method : reqs[i].file_label, nplans > 1, buf, cap);
}

/* Every output lands on its own file, none on the profile it reads: two budgets with one label,
 * or -o X --svg X, would leave one output where the report says another was written. */
static int check_outputs(const args *a, const req *reqs, int rule, int nplans)
{
    int n = a->out ? nplans : 0, rc = 0;
    char **paths = calloc((size_t)n + 1, sizeof *paths);
    if (!paths) return cli_usage_error("plan", "out of memory");
    for (int i = 0; i < n && !rc; i++) {
        char path[1024];
        plan_path(a, reqs, rule, nplans, i, path, sizeof path);
        if (clobbers_profile(path, a->profile))
            rc = cli_usage_error("plan", "-o %s would overwrite the profile %s this plan reads", path, a->profile);
        else if (!(paths[i] = canon_path(path)))
            rc = cli_usage_error("plan", "out of memory");
    }
    if (!rc && a->svg && clobbers_profile(a->svg, a->profile))
        rc = cli_usage_error("plan", "--svg %s would overwrite the profile %s this plan reads", a->svg, a->profile);
    if (!rc && a->svg) {
        char *sv = canon_path(a->svg);
        for (int i = 0; i < n && sv && !rc; i++)
            if (!strcmp(sv, paths[i])) rc = cli_usage_error("plan", "-o and --svg name the same file %s: give each its own", a->svg);
        free(sv);
    }
    if (!rc && n > 1) {
        qsort(paths, (size_t)n, sizeof *paths, str_cmp);
        for (int i = 1; i < n && !rc; i++)
            if (!strcmp(paths[i - 1], paths[i]))
                rc = cli_usage_error("plan", "two plans would be written to %s (budgets with the same label): give each "
                                     "budget once", paths[i]);
    }
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    return rc;
}

static void print_refused(const char *label, uint64_t budget, const rf_err *err, uint64_t min_safe, int unsafe)
{
    char s1[32], s2[32];
    size_str(budget, s1, sizeof s1);
    size_str(min_safe, s2, sizeof s2);
    printf("\n%s\n  REFUSED     %s\n", label, err->msg);
    if (err->code == RF_ERR_BUDGET)
        printf("  min-safe    %s (%llu B)%s\n", s2, (unsigned long long)min_safe,
               unsafe ? "" : "; --unsafe lifts the SQNR veto, --veto-db changes it");
}

static void json_refused(const char *label, uint64_t budget, const rf_err *err, uint64_t min_safe, int first)
{
    printf("%s\n    {\"label\": ", first ? "" : ",");
    json_str(label);
    printf(", \"status\": \"refused\", \"budget\": %llu, \"min_safe\": %llu, \"reason\": ", (unsigned long long)budget,
           (unsigned long long)min_safe);
    json_str(rf_status_name(err->code));
    printf(", \"error\": ");
    json_str(err->msg);
    printf("}");
}

/* llama-quantize's --tensor-type-file for PLAN at PATH. */
static rf_status emit_tensor_types(const rf_plan *plan, const rf_profile *prof, int kept, const char *path, rf_err *err)
{
    char *text = NULL;
    size_t len = 0;
    rf_status s = rf_gguf_plan_tensor_types(plan, prof, kept, &text, &len, err);
    if (s) return s;
    FILE *f = fopen(path, "w");
    int bad = !f || fwrite(text, 1, len, f) != len;
    if (f && fclose(f) != 0) bad = 1;
    free(text);
    if (bad) {
        err->code = RF_ERR_IO;
        snprintf(err->msg, sizeof err->msg, "cannot write %s", path);
        return RF_ERR_IO;
    }
    return RF_OK;
}

int rf_cmd_plan(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) { usage(stdout); return 0; }
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) { args_free(&a); return rc; }
    if (a.list_targets) { args_free(&a); return list_targets(); }
    if (!a.profile) { args_free(&a); return cli_usage_error("plan", "missing PROFILE"); }
    if (a.emit && strcmp(a.emit, "llama-quantize")) {
        rc = cli_usage_error("plan", "--emit: only llama-quantize, not '%s'", a.emit);
        args_free(&a);
        return rc;
    }
    if (a.emit && !a.out) { args_free(&a); return cli_usage_error("plan", "--emit llama-quantize needs -o FILE"); }
    if (a.dtype && !a.emit) { args_free(&a); return cli_usage_error("plan", "--dtype is for --emit llama-quantize"); }
    int kept = RF_GT_BF16;
    if (a.dtype) {
        if (!strcmp(a.dtype, "bf16")) kept = RF_GT_BF16;
        else if (!strcmp(a.dtype, "f16")) kept = RF_GT_F16;
        else if (!strcmp(a.dtype, "f32")) kept = RF_GT_F32;
        else {
            rc = cli_usage_error("plan", "--dtype must be bf16, f16 or f32, not '%s'", a.dtype);
            args_free(&a);
            return rc;
        }
    }
    uint64_t context = 4096, nthr = 0;
    if (a.context && !parse_u64(a.context, &context)) { args_free(&a); return cli_usage_error("plan", "--context must be a token count"); }
    if (a.threads && (!parse_u64(a.threads, &nthr) || nthr < 1 || nthr > 4096)) {
        args_free(&a);
        return cli_usage_error("plan", "--threads must be a number from 1 to 4096, not '%s'", a.threads);
    }
    int threads = (int)nthr; /* 0: all CPUs */
    rf_err err;
    rf_profile *prof;
    if (rf_profile_load(a.profile, &prof, &err)) { args_free(&a); return cli_fail(&err); }
    req *reqs = NULL;
    int nreq = 0, refused = 0;
    rf_plan_opts o;
    rf_planner *pl = NULL, *ref = NULL;
    if ((rc = resolve_budgets(&a, prof, context, &reqs, &nreq)) || (rc = setup_opts(&a, prof, &o))) goto out;
    int rule = o.method == RF_METHOD_UNIFORM || o.method == RF_METHOD_MIXED;
    if (!nreq && !rule && !a.svg) { rc = cli_usage_error("plan", "give at least one --budget, --sweep, --bpw or --target (or --svg)"); goto out; }
    int nplans = rule ? 1 : nreq;
    if (a.out && !out_path(a.out, "x", nplans > 1, (char[8]){0}, 8)) {
        rc = cli_usage_error("plan", "-o: several plans need %%s in the file name (replaced by each budget's label)");
        goto out;
    }
    if ((rc = check_outputs(&a, reqs, rule, nplans))) goto out;
    if (rf_planner_create(prof, &o, &pl, &err)) { rc = cli_fail(&err); goto out; }
    rf_plan_opts ro; /* ramfit with the user's weights, for comparing baselines at their own size */
    rf_plan_opts_default(&ro);
    ro.mode = rf_profile_modes(prof) >> RF_QMODE_OPT & 1 ? RF_QMODE_OPT : RF_QMODE_MLX;
    if (a.mode) ro.mode = o.mode;
    ro.veto_db = a.veto ? o.veto_db : 9.0;
    ro.unsafe = a.unsafe;
    if (o.method == RF_METHOD_RAM) rf_plan_weights_default(&ro.weights, RF_WEIGHT_RAMFIT);
    else ro.weights = o.weights;
    ro.state_limit = o.state_limit;
    if (o.method != RF_METHOD_RAMFIT && rf_planner_create(prof, &ro, &ref, &err)) { rc = cli_fail(&err); goto out; }
    const rf_pmodel *m = rf_profile_model(prof);
    char s1[32], s2[32];
    size_str(rf_profile_full_bytes(prof), s1, sizeof s1);
    size_str(rf_planner_min_safe(pl), s2, sizeof s2);
    double P = (double)rf_profile_param_count(prof);
    if (a.json) {
        printf("{\"profile\": {\"model\": ");
        json_str(m->name);
        printf(", \"architecture\": ");
        json_str(m->architecture);
        printf(", \"fingerprint\": \"%016llx\", \"units\": %llu, \"params\": %llu, \"full_bytes\": %llu, \"other_bytes\": %llu},\n"
               " \"min_safe\": %llu, \"veto_db\": ",
               (unsigned long long)m->fingerprint, (unsigned long long)rf_profile_unit_count(prof),
               (unsigned long long)rf_profile_param_count(prof), (unsigned long long)rf_profile_full_bytes(prof),
               (unsigned long long)rf_profile_other_bytes(prof), (unsigned long long)rf_planner_min_safe(pl));
        json_num(o.veto_db);
        printf(", \"unsafe\": %s,\n \"plans\": [", o.unsafe ? "true" : "false");
    } else {
        printf("ramfit plan: %s (%s), %llu units, %llu parameters\n", m->name, m->architecture,
               (unsigned long long)rf_profile_unit_count(prof), (unsigned long long)rf_profile_param_count(prof));
        printf("  unquantized %s (%.2f bpw)", s1, 8.0 * (double)rf_profile_full_bytes(prof) / P);
        if (!rule)
            printf("; %s %s (%.3f bpw)%s", o.unsafe ? "smallest possible" : "min-safe", s2, 8.0 * (double)rf_planner_min_safe(pl) / P,
                   o.unsafe ? " (veto lifted)" : "");
        if (!rule && !o.unsafe) printf(" at the %.1f dB veto", o.veto_db);
        if (rf_profile_is_gguf(prof))
            printf("\n  GGUF candidates: budgets cover the whole .gguf file (header, metadata and tokenizer included)\n");
        else
            printf("\n  budgets cover tensor bytes only (not config.json or tokenizer files)\n");
    }
    int rows = 0;
    /* budgets are solved in chunks on all threads, then reported in order */
    enum { CHUNK = 256 };
    uint64_t cb[CHUNK];
    rf_plan *cp[CHUNK] = {0};
    rf_err *ce = calloc(CHUNK, sizeof *ce);
    rf_pool *pool = NULL;
    if (!ce || rf_pool_create(threads, &pool, &err)) {
        if (!ce) err = (rf_err){RF_ERR_NOMEM, "out of memory"};
        if (a.json) printf("]}\n");
        rc = cli_fail(&err);
    }
    for (int i = 0; i < nplans && !rc; i++) {
        uint64_t budget = rule ? (nreq ? reqs[0].budget : 0) : reqs[i].budget;
        char label[128];
        snprintf(label, sizeof label, "%.120s", rule ? a.method : reqs[i].label);
        int k = i % CHUNK;
        if (k == 0) {
            int n = nplans - i < CHUNK ? nplans - i : CHUNK;
            for (int j = 0; j < n; j++) cb[j] = rule ? budget : reqs[i + j].budget;
            rf_planner_solve_many(pl, cb, (uint64_t)n, pool, cp, ce);
        }
        rf_plan *plan = cp[k];
        cp[k] = NULL;
        if (!rule && reqs[i].refused.code) { /* no budget to plan for */
            rf_plan_free(plan);
            plan = NULL;
            ce[k] = reqs[i].refused;
        }
        if (!plan) {
            err = ce[k];
            if (err.code != RF_ERR_BUDGET && err.code != RF_ERR_INVALID) { /* not about this budget: stop */
                if (a.json) printf("]}\n");
                rc = cli_fail(&err);
                break;
            }
            /* this budget cannot be met: its own row, the others are still planned */
            refused++;
            if (a.json) json_refused(label, budget, &err, rf_planner_min_safe(pl), rows++ == 0);
            else print_refused(label, budget, &err, rf_planner_min_safe(pl), o.unsafe);
            continue;
        }
        double same = 0, base = 0;
        int have_same = 0;
        if (ref && rf_plan_total_bytes(plan) >= rf_planner_min_safe(ref)) {
            rf_plan *rp;
            if (!rf_planner_solve(ref, rf_plan_total_bytes(plan), &rp, &err) && !rf_plan_evaluate(plan, prof, &ro, &base, &err)) {
                same = rf_plan_objective(rp);
                have_same = 1;
                rf_plan_free(rp);
            }
        }
        char path[1024] = {0};
        if (a.out) {
            plan_path(&a, reqs, rule, nplans, i, path, sizeof path);
            if (a.emit ? emit_tensor_types(plan, prof, kept, path, &err) : rf_plan_save(plan, path, &err)) {
                rf_plan_free(plan);
                if (a.json) printf("]}\n");
                rc = cli_fail(&err);
                break;
            }
        }
        if (a.json) json_plan(plan, label, budget, a.out ? path : NULL, rows++ == 0, same, have_same);
        else {
            print_plan(plan, label, budget);
            if (have_same)
                printf("  vs ramfit   at the same %llu B ramfit's objective is %.6g; this plan scores %.6g under ramfit's weights (%.3gx)\n",
                       (unsigned long long)rf_plan_total_bytes(plan), same, base, same > 0 ? base / same : INFINITY);
            if (a.out) printf("  %s written to %s\n", a.emit ? "llama-quantize tensor types" : "plan", path);
        }
        rf_plan_free(plan);
    }
    for (int k = 0; k < CHUNK; k++) rf_plan_free(cp[k]); /* left by an early stop */
    free(ce);
    rf_pool_free(pool);
    if (a.json && !rc) printf("],\n \"planned\": %d, \"refused\": %d}\n", nplans - refused, refused);
    else if (!rc && refused)
        printf("\n%d of %d budgets refused (below what can be met); the other %d planned\n", refused, nplans, nplans - refused);
    if (!rc && a.svg) rc = write_curve(&a, rule ? ref : pl, prof, reqs, nreq, rule ? &ro : &o);
    if (!rc && refused) {
        fflush(stdout);
        fprintf(stderr, "ramfit plan: %d of %d budgets refused (exit status %d)\n", refused, nplans, EXIT_SOME_REFUSED);
        rc = EXIT_SOME_REFUSED;
    }
out:
    rf_planner_free(pl);
    rf_planner_free(ref);
    rf_profile_free(prof);
    free(reqs);
    args_free(&a);
    return rc;
}
