/* ramfit plan: budgets -> optimal per-unit configs, with a report, plan files and a budget curve. */
#include "cli.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUDGETS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ramfit plan PROFILE [--budget SIZE ...] [--bpw BITS ...] [--target NAME ...] [options]\n"
            "\n"
            "Choose a quantization (bits, group size, or keep) for every unit of the model in PROFILE so\n"
            "that all tensor bytes fit the budget and the predicted error is minimal (exact solver).\n"
            "Budgets cover tensor bytes only, not config.json or tokenizer files.\n"
            "\n"
            "budgets (repeatable; one plan each):\n"
            "  --budget SIZE       bytes: 123456789, 24GB, 1.5GB (decimal) or 16GiB, 512MiB (binary)\n"
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
            "output:\n"
            "  -o PLAN             write the plan file (several budgets: PLAN must contain %%s for the label)\n"
            "  --emit llama-quantize\n"
            "                      write, at -o, llama-quantize's --tensor-type-file instead of the plan:\n"
            "                      one anchored pattern per GGUF tensor, its type from the plan's bits\n"
            "                      (2/3/4/5/6/8 -> Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/Q8_0, kept -> --dtype), so\n"
            "                      llama-quantize --tensor-type-file FILE IN.gguf OUT.gguf Q8_0 applies\n"
            "                      the plan with llama.cpp's encoders (IN: e.g. ramfit's BF16 GGUF)\n"
            "  --dtype bf16|f16|f32  with --emit: the type of kept units (default bf16)\n"
            "  --svg FILE          budget curve: predicted error vs size, min-safe and budgets marked\n"
            "  --curve-points N    points on the curve (default 48)\n"
            "  --json              print the report as JSON\n");
}

typedef struct req {
    char label[160];
    uint64_t budget;
} req;

typedef struct args {
    const char *profile, *out, *svg, *weights_file;
    const char *weight_kv[64];
    int nweights;
    const char *method;
    const char *budgets[MAX_BUDGETS], *bpws[MAX_BUDGETS], *targets[MAX_BUDGETS];
    int nb, nbpw, nt;
    const char *mode, *veto, *context, *state_limit, *points, *emit, *dtype;
    int unsafe, json, list_targets;
} args;

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **one = NULL;
        const char **many = NULL;
        int *count = NULL;
        if (!strcmp(s, "--unsafe")) { a->unsafe = 1; continue; }
        if (!strcmp(s, "--json")) { a->json = 1; continue; }
        if (!strcmp(s, "--list-targets")) { a->list_targets = 1; continue; }
        if (!strcmp(s, "--budget")) many = a->budgets, count = &a->nb;
        else if (!strcmp(s, "--bpw")) many = a->bpws, count = &a->nbpw;
        else if (!strcmp(s, "--target")) many = a->targets, count = &a->nt;
        else if (!strcmp(s, "--weight")) many = a->weight_kv, count = &a->nweights;
        else if (!strcmp(s, "-o") || !strcmp(s, "--output")) one = &a->out;
        else if (!strcmp(s, "--svg")) one = &a->svg;
        else if (!strcmp(s, "--weights")) one = &a->weights_file;
        else if (!strcmp(s, "--method")) one = &a->method;
        else if (!strcmp(s, "--mode")) one = &a->mode;
        else if (!strcmp(s, "--veto-db")) one = &a->veto;
        else if (!strcmp(s, "--context")) one = &a->context;
        else if (!strcmp(s, "--state-limit")) one = &a->state_limit;
        else if (!strcmp(s, "--curve-points")) one = &a->points;
        else if (!strcmp(s, "--emit")) one = &a->emit;
        else if (!strcmp(s, "--dtype")) one = &a->dtype;
        else if (s[0] == '-' && s[1]) return cli_usage_error("plan", "unknown option '%s'", s);
        else if (!a->profile) { a->profile = s; continue; }
        else return cli_usage_error("plan", "unexpected argument '%s' (one PROFILE only)", s);
        if (i + 1 >= argc) return cli_usage_error("plan", "%s needs a value", s);
        if (one) *one = argv[++i];
        else {
            int cap = many == a->weight_kv ? 64 : MAX_BUDGETS;
            if (*count >= cap) return cli_usage_error("plan", "too many %s options", s);
            many[(*count)++] = argv[++i];
        }
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

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!*s || *s == '-') return 0;
    unsigned long long v = strtoull(s, &end, 10);
    *out = v;
    return !*end;
}

/* ------------------------------------------------------------------ text report */

static void size_str(uint64_t b, char *buf, size_t cap) { rf_format_size(b, buf, cap); }

static void cfg_str(int bits, int gs, char *buf, size_t cap)
{
    if (!bits) snprintf(buf, cap, "keep");
    else snprintf(buf, cap, "%d/%d", bits, gs);
}

static double sqnr(double d) { return d <= 0 ? INFINITY : -10 * log10(d); }

static void print_units(const rf_plan *plan, const uint64_t *order, uint64_t from, uint64_t n, int step)
{
    printf("    %-52s %-7s %6s %9s %10s\n", "unit", "config", "bpw", "SQNR dB", "weight");
    for (uint64_t k = 0; k < n; k++) {
        const rf_plan_unit *u = rf_plan_get_unit(plan, order[step > 0 ? from + k : from - k]);
        char c[16];
        cfg_str(u->bits, u->gs, c, sizeof c);
        printf("    %-52.52s %-7s %6.2f %9.2f %10.3g\n", u->name, c, 8.0 * (double)u->bytes / (double)u->nparams, sqnr(u->d), u->weight);
    }
}

static void print_plan(const rf_plan *plan, const char *label, uint64_t budget)
{
    char s1[32], s2[32];
    size_str(rf_plan_total_bytes(plan), s1, sizeof s1);
    size_str(budget, s2, sizeof s2);
    printf("\n%s  [method %s, mode %s]\n", label, rf_plan_method_text(plan), rf_plan_mode(plan) == RF_QMODE_OPT ? "opt" : "mlx");
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
        cfg_str(sh[i].bits, sh[i].gs, c, sizeof c);
        printf("  %-8s %6llu %14llu %6.2f%% %14llu\n", c, (unsigned long long)sh[i].units, (unsigned long long)sh[i].nparams,
               100.0 * (double)sh[i].nparams / (double)rf_plan_param_count(plan), (unsigned long long)sh[i].bytes);
    }
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
        printf(", \"bits\": %d, \"gs\": %d, \"d\": ", u->bits, u->gs);
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
        printf("%s{\"bits\": %d, \"gs\": %d, \"units\": %llu, \"params\": %llu, \"bytes\": %llu}", i ? ", " : "", sh[i].bits, sh[i].gs,
               (unsigned long long)sh[i].units, (unsigned long long)sh[i].nparams, (unsigned long long)sh[i].bytes);
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

static int resolve_budgets(const args *a, const rf_profile *prof, uint64_t context, req *reqs, int *nreq)
{
    rf_err err;
    int n = 0;
    for (int i = 0; i < a->nb; i++, n++) {
        if (rf_parse_size(a->budgets[i], &reqs[n].budget, &err)) return cli_usage_error("plan", "--budget: %s", err.msg);
        snprintf(reqs[n].label, sizeof reqs[n].label, "budget %s", a->budgets[i]);
    }
    for (int i = 0; i < a->nbpw; i++, n++) {
        double v;
        if (!parse_double(a->bpws[i], &v)) return cli_usage_error("plan", "--bpw: '%s' is not a number", a->bpws[i]);
        if (rf_plan_bpw_budget(prof, v, &reqs[n].budget, &err)) return cli_usage_error("plan", "--bpw %s: %s", a->bpws[i], err.msg);
        snprintf(reqs[n].label, sizeof reqs[n].label, "%s bits per weight", a->bpws[i]);
    }
    for (int i = 0; i < a->nt; i++, n++) {
        const rf_target *t = rf_target_find(a->targets[i]);
        if (!t) return cli_usage_error("plan", "unknown target '%s' (see --list-targets)", a->targets[i]);
        rf_target_budget tb;
        if (rf_target_budget_for(t, prof, context, &tb, &err)) return cli_fail(&err);
        reqs[n].budget = tb.budget;
        char s1[32], s2[32], s3[32];
        size_str(tb.limit, s1, sizeof s1);
        size_str(tb.kv_cache, s2, sizeof s2);
        size_str(tb.reserve, s3, sizeof s3);
        snprintf(reqs[n].label, sizeof reqs[n].label, "%.40s: limit %s - reserve %s - KV %s", t->name, s1, s3, s2);
    }
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
    for (int i = 0; i < a->nweights; i++)
        if (rf_plan_weights_set(&o->weights, a->weight_kv[i], &err)) return cli_usage_error("plan", "--weight: %s", err.msg);
    if (a->state_limit && (!parse_u64(a->state_limit, &o->state_limit) || !o->state_limit))
        return cli_usage_error("plan", "--state-limit must be a positive integer");
    return 0;
}

/* 1 if writing DST would replace the profile or its data file: the input of this very run. */
static int clobbers_profile(const char *dst, const char *profile)
{
    if (cli_same_file(dst, profile)) return 1;
    json_t *j = json_load_file(profile, 0, NULL);
    const char *f = json_string_value(json_object_get(json_object_get(j, "data"), "file"));
    int hit = 0;
    if (f) {
        const char *slash = strrchr(profile, '/');
        int dl = slash ? (int)(slash - profile + 1) : 0;
        char data[4096];
        snprintf(data, sizeof data, "%.*s%s", dl, profile, f);
        hit = cli_same_file(dst, data);
    }
    json_decref(j);
    return hit;
}

static int write_curve(const args *a, rf_planner *pl, const rf_profile *prof, const req *reqs, int nreq, const rf_plan_opts *o)
{
    uint64_t npts = 48;
    if (a->points && (!parse_u64(a->points, &npts) || npts < 2 || npts > 2000))
        return cli_usage_error("plan", "--curve-points must be in [2, 2000]");
    uint64_t lo = rf_planner_min_safe(pl), hi = rf_planner_full_bytes(pl);
    rf_curve_point *pts = calloc(npts, sizeof *pts);
    rf_curve_mark marks[MAX_BUDGETS * 3];
    if (!pts) return 1;
    rf_err err;
    int n = 0;
    for (uint64_t i = 0; i < npts; i++) {
        uint64_t b = lo + (uint64_t)((double)(hi - lo) * (double)i / (double)(npts - 1));
        rf_plan *plan;
        if (rf_planner_solve(pl, b, &plan, &err)) { free(pts); return cli_fail(&err); }
        pts[n++] = (rf_curve_point){rf_plan_total_bytes(plan), rf_plan_objective(plan)};
        rf_plan_free(plan);
    }
    for (int i = 0; i < nreq; i++) marks[i] = (rf_curve_mark){reqs[i].budget, reqs[i].label};
    char title[400];
    snprintf(title, sizeof title, "%s: predicted error vs size (%s, mode %s)", rf_profile_model(prof)->name,
             o->method == RF_METHOD_RAM ? "ram" : "ramfit", o->mode == RF_QMODE_OPT ? "opt" : "mlx");
    rf_status s = rf_plan_curve_svg(pts, n, lo, marks, nreq, title, a->svg, &err);
    free(pts);
    if (s) return cli_fail(&err);
    if (!a->json) printf("\nbudget curve: %d points from min-safe to the unquantized size written to %s\n", n, a->svg);
    return 0;
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
    if (rc) return rc;
    if (a.list_targets) return list_targets();
    if (!a.profile) return cli_usage_error("plan", "missing PROFILE");
    if (a.emit && strcmp(a.emit, "llama-quantize")) return cli_usage_error("plan", "--emit: only llama-quantize, not '%s'", a.emit);
    if (a.emit && !a.out) return cli_usage_error("plan", "--emit llama-quantize needs -o FILE");
    if (a.dtype && !a.emit) return cli_usage_error("plan", "--dtype is for --emit llama-quantize");
    int kept = RF_GT_BF16;
    if (a.dtype) {
        if (!strcmp(a.dtype, "bf16")) kept = RF_GT_BF16;
        else if (!strcmp(a.dtype, "f16")) kept = RF_GT_F16;
        else if (!strcmp(a.dtype, "f32")) kept = RF_GT_F32;
        else return cli_usage_error("plan", "--dtype must be bf16, f16 or f32, not '%s'", a.dtype);
    }
    uint64_t context = 4096;
    if (a.context && !parse_u64(a.context, &context)) return cli_usage_error("plan", "--context must be a token count");
    rf_err err;
    rf_profile *prof;
    if (rf_profile_load(a.profile, &prof, &err)) return cli_fail(&err);
    req reqs[MAX_BUDGETS * 3];
    int nreq = 0;
    rf_plan_opts o;
    if ((rc = resolve_budgets(&a, prof, context, reqs, &nreq)) || (rc = setup_opts(&a, prof, &o))) goto out;
    int rule = o.method == RF_METHOD_UNIFORM || o.method == RF_METHOD_MIXED;
    if (!nreq && !rule && !a.svg) { rc = cli_usage_error("plan", "give at least one --budget, --bpw or --target (or --svg)"); goto out; }
    if (a.out && !out_path(a.out, "x", rule ? 0 : nreq > 1, (char[8]){0}, 8)) {
        rc = cli_usage_error("plan", "-o: several plans need %%s in the file name (replaced by each budget's label)");
        goto out;
    }
    for (int i = 0; a.out && i < (rule ? 1 : nreq); i++) {
        char path[1024];
        out_path(a.out, rule ? a.method : (i < a.nb ? a.budgets[i] : reqs[i].label), !rule && nreq > 1, path, sizeof path);
        if (clobbers_profile(path, a.profile)) {
            rc = cli_usage_error("plan", "-o %s would overwrite the profile %s this plan reads", path, a.profile);
            goto out;
        }
    }
    if (a.svg && clobbers_profile(a.svg, a.profile)) {
        rc = cli_usage_error("plan", "--svg %s would overwrite the profile %s this plan reads", a.svg, a.profile);
        goto out;
    }
    rf_planner *pl = NULL, *ref = NULL;
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
    if (o.method != RF_METHOD_RAMFIT && rf_planner_create(prof, &ro, &ref, &err)) { rc = cli_fail(&err); goto done; }
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
        printf("\n  budgets cover tensor bytes only (not config.json or tokenizer files)\n");
    }
    int nplans = rule ? 1 : nreq;
    for (int i = 0; i < nplans && !rc; i++) {
        uint64_t budget = rule ? (nreq ? reqs[0].budget : 0) : reqs[i].budget;
        char label[128];
        snprintf(label, sizeof label, "%.120s", rule ? a.method : reqs[i].label);
        rf_plan *plan;
        if (rf_planner_solve(pl, budget, &plan, &err)) {
            if (a.json) printf("]}\n");
            rc = cli_fail(&err);
            if (err.code == RF_ERR_BUDGET && !o.unsafe) fprintf(stderr, "(--unsafe lifts the SQNR veto; --veto-db changes it)\n");
            break;
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
            out_path(a.out, rule ? a.method : (i < a.nb ? a.budgets[i] : reqs[i].label), nplans > 1, path, sizeof path);
            if (a.emit ? emit_tensor_types(plan, prof, kept, path, &err) : rf_plan_save(plan, path, &err)) {
                rf_plan_free(plan);
                rc = cli_fail(&err);
                break;
            }
        }
        if (a.json) json_plan(plan, label, budget, a.out ? path : NULL, i == 0, same, have_same);
        else {
            print_plan(plan, label, budget);
            if (have_same)
                printf("  vs ramfit   at the same %llu B ramfit's objective is %.6g; this plan scores %.6g under ramfit's weights (%.3gx)\n",
                       (unsigned long long)rf_plan_total_bytes(plan), same, base, same > 0 ? base / same : INFINITY);
            if (a.out) printf("  %s written to %s\n", a.emit ? "llama-quantize tensor types" : "plan", path);
        }
        rf_plan_free(plan);
    }
    if (a.json && !rc) printf("]}\n");
    if (!rc && a.svg) rc = write_curve(&a, rule ? ref : pl, prof, reqs, nreq, rule ? &ro : &o);
done:
    rf_planner_free(pl);
    rf_planner_free(ref);
out:
    rf_profile_free(prof);
    return rc;
}
