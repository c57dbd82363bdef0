/* ramfit quantize: write the MLX checkpoint a plan describes, or analyse + plan + write in one go;
 * or a GGUF file for llama.cpp (--format gguf) from a plan or one uniform type. */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ramfit quantize MODEL_DIR --plan PLAN -o OUT_DIR [options]\n"
            "       ramfit quantize MODEL_DIR --budget SIZE -o OUT_DIR [options]\n"
            "       ramfit quantize MODEL_DIR --format gguf (--budget SIZE | --plan PLAN | --type TYPE) -o MODEL.gguf [options]\n"
            "\n"
            "Write the Apple MLX checkpoint (mlx-lm loads it as it is) that PLAN describes: safetensors\n"
            "shards, model.safetensors.index.json, config.json with per-module \"quantization\", the\n"
            "tokenizer, chat template, generation_config.json and licence files of MODEL_DIR (other files,\n"
            "such as pytorch_model.bin or original/, are left out and named), and ramfit.json.\n"
            "With --budget it first analyses the model (or reuses --profile when it matches) and plans.\n"
            "The output is written to OUT_DIR.tmp-XXXXXX and renamed at the end; MODEL_DIR is never written.\n"
            "\n"
            "options:\n"
            "  --plan PLAN            a plan file from 'ramfit plan -o'\n"
            "  --budget SIZE          one-shot: bytes of tensor data (24GB, 16GiB, 123456789)\n"
            "  --profile PROFILE      with --budget: reuse this profile if it matches the model, else\n"
            "                         analyse and save it there (default: reuse MODEL.profile.json in\n"
            "                         the current directory, as 'ramfit analyse' writes, if it matches);\n"
            "                         with --plan: check the plan against it\n"
            "  -o, --output OUT_DIR   output directory (must not exist unless --force)\n"
            "  --force                replace an existing OUT_DIR\n"
            "  --mode mlx|opt|gptq    quantizer: must be the plan's (default: the plan's). One-shot: opt,\n"
            "                         the error-minimising quantizer that wins in docs/quality.md, unless\n"
            "                         a reused profile has only mlx measurements (opt analyses at about\n"
            "                         mlx's speed: docs/distributed.md, 'Speed on one machine').\n"
            "                         gptq: GPTQ with --stats on the plan's grid (mlx: MLX's min/max scale\n"
            "                         and bias per group, as mlx-lm's gptq; opt: the error-minimising ones)\n"
            "  --stats STATS          with --mode gptq: the statistics of 'ramfit calibrate' (with Hessians)\n"
            "  --dtype bf16|f16|f32   F32 source tensors (kept weights, norms, scales/biases) in this dtype\n"
            "                         (16-bit tensors are written as they are); default: as the plan\n"
            "                         counted them (bf16 unless analysed with --dtype). f32 gives mlx-lm's\n"
            "                         output for a float32 checkpoint. With --plan, the plan must come from\n"
            "                         a profile analysed with the same --dtype\n"
            "  --max-shard-size SIZE  largest shard file (default 5GiB, as mlx-lm)\n"
            "  --threads N            worker threads (default: all CPUs)\n"
            "  --format mlx|gguf      output format (default mlx; gguf when -o ends in .gguf)\n"
            "\n"
            "GGUF (one file llama.cpp loads as it is: its tensor names and metadata, the tokenizer):\n"
            "  --type TYPE            every weight in TYPE, as llama-quantize --pure: Q2_K Q3_K Q4_K Q5_K\n"
            "                         Q6_K Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL IQ4_XS, or BF16 F16 F32\n"
            "                         (unquantized); rows a k-quant cannot split get llama-quantize's\n"
            "                         fallback type; norms and routers stay F32\n"
            "  --budget SIZE          the best file of at most SIZE bytes (the whole .gguf: header,\n"
            "                         metadata and tokenizer included): analyses the model over GGUF types\n"
            "                         (or reuses --profile / MODEL.gguf.profile.json when it matches) and\n"
            "                         plans over Q2_K..Q8_0 per tensor, as 'ramfit plan' does (docs/gguf.md)\n"
            "  --plan PLAN            a ramfit plan: a GGUF plan's types, or an MLX plan's bits per unit as\n"
            "                         Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/Q8_0 (2/3/4/5/6/8 bits); kept units the --dtype\n"
            "                         (default bf16)\n"
            "  --quiet                no progress\n"
            "  --json                 print the result as JSON\n");
}

typedef struct args {
    const char *model, *plan, *budget, *profile, *out, *mode, *dtype, *shard, *threads, *stats, *format, *type;
    int force, quiet, json, gguf;
} args;

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char **one = NULL;
        if (!strcmp(s, "--force")) { a->force = 1; continue; }
        if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) { a->quiet = 1; continue; }
        if (!strcmp(s, "--json")) { a->json = 1; continue; }
        if (!strcmp(s, "--plan")) one = &a->plan;
        else if (!strcmp(s, "--budget")) one = &a->budget;
        else if (!strcmp(s, "--profile")) one = &a->profile;
        else if (!strcmp(s, "-o") || !strcmp(s, "--output")) one = &a->out;
        else if (!strcmp(s, "--mode")) one = &a->mode;
        else if (!strcmp(s, "--dtype")) one = &a->dtype;
        else if (!strcmp(s, "--max-shard-size")) one = &a->shard;
        else if (!strcmp(s, "--threads")) one = &a->threads;
        else if (!strcmp(s, "--stats")) one = &a->stats;
        else if (!strcmp(s, "--format")) one = &a->format;
        else if (!strcmp(s, "--type")) one = &a->type;
        else if (s[0] == '-' && s[1]) return cli_usage_error("quantize", "unknown option '%s'", s);
        else if (!a->model) { a->model = s; continue; }
        else return cli_usage_error("quantize", "unexpected argument '%s' (one MODEL_DIR only)", s);
        if (i + 1 >= argc) return cli_usage_error("quantize", "%s needs a value", s);
        *one = argv[++i];
    }
    if (!a->model) return cli_usage_error("quantize", "no MODEL_DIR given");
    if (!a->out) return cli_usage_error("quantize", "no output given (-o OUT_DIR, or -o MODEL.gguf)");
    size_t ol = strlen(a->out);
    if (a->format && strcmp(a->format, "mlx") && strcmp(a->format, "gguf"))
        return cli_usage_error("quantize", "--format must be mlx or gguf, not '%s'", a->format);
    a->gguf = a->format ? !strcmp(a->format, "gguf") : ol > 5 && !strcmp(a->out + ol - 5, ".gguf");
    if (!a->gguf) {
        if (a->type) return cli_usage_error("quantize", "--type is for --format gguf (MLX takes a plan or a budget)");
        if (!a->plan == !a->budget) return cli_usage_error("quantize", "give exactly one of --plan PLAN and --budget SIZE");
        return 0;
    }
    if (!!a->plan + !!a->type + !!a->budget != 1)
        return cli_usage_error("quantize", "--format gguf: give exactly one of --budget SIZE, --plan PLAN and --type TYPE");
    if (a->mode || a->shard) return cli_usage_error("quantize", "--mode and --max-shard-size are for MLX output");
    if (a->type && rf_gtype_parse(a->type) < 0)
        return cli_usage_error("quantize", "--type: unknown GGUF type '%s' (Q4_K, Q6_K, Q8_0, BF16, ...)", a->type);
    if (a->type && a->dtype) return cli_usage_error("quantize", "--dtype is for --plan (with --type, TYPE is the dtype)");
    return 0;
}

static int parse_opts(const args *a, rf_quantize_opts *o, uint64_t *budget)
{
    rf_quantize_opts_default(o);
    o->force = a->force;
    o->profile_path = a->profile;
    if (a->mode) {
        if (!strcmp(a->mode, "mlx")) o->mode = RF_QMODE_MLX;
        else if (!strcmp(a->mode, "opt")) o->mode = RF_QMODE_OPT;
        else if (strcmp(a->mode, "gptq")) return cli_usage_error("quantize", "--mode must be mlx, opt or gptq, not '%s'", a->mode);
    }
    int gptq = a->mode && !strcmp(a->mode, "gptq");
    if (gptq && !a->stats) return cli_usage_error("quantize", "--mode gptq needs --stats STATS (ramfit calibrate)");
    if (!gptq && a->stats) return cli_usage_error("quantize", "--stats is for --mode gptq");
    int rc;
    if (a->dtype && (rc = cli_parse_dtype("quantize", a->dtype, &o->f32_as))) return rc;
    long long t;
    if (a->threads && (rc = cli_int_arg("quantize", "--threads", a->threads, 1, 4096, &t))) return rc;
    if (a->threads) o->threads = (int)t;
    rf_err err;
    /* the parse error when there is one (a size too large once read "must be > 0") */
    if (a->shard && rf_parse_size(a->shard, &o->max_shard_bytes, &err)) return cli_usage_error("quantize", "--max-shard-size: %s", err.msg);
    if (a->shard && o->max_shard_bytes == 0) return cli_usage_error("quantize", "--max-shard-size: must be > 0");
    if (a->budget && rf_parse_size(a->budget, budget, &err)) return cli_usage_error("quantize", "--budget: %s", err.msg);
    if (a->budget && *budget == 0) return cli_usage_error("quantize", "--budget: must be > 0");
    return 0;
}

static rf_status set_err(rf_err *err, rf_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* One-shot: a matching saved profile or a fresh analysis, then the plan for BUDGET. */
static rf_gguf_opts gguf_opts(const args *a)
{
    rf_gguf_opts go;
    rf_gguf_opts_default(&go);
    go.force = a->force;
    if (a->threads) go.threads = atoi(a->threads);
    return go;
}

/* The plan for a .gguf file of at most BUDGET bytes: the profile's totals are the file's size
 * (fixed part included) except for padding of kept tensors, which it counts on the safe side;
 * should the file still come out larger (another general.name, an edited profile), the plan is
 * made again for a budget lower by the excess. */
static rf_status gguf_plan(const rf_model *m, const args *a, const rf_profile *prof, uint64_t budget, int kept,
                           rf_plan **plan, rf_err *err)
{
    rf_plan_opts po;
    rf_plan_opts_default(&po);
    po.mode = RF_QMODE_MLX; /* a GGUF profile's errors (ggml's encoders) sit in this slot */
    rf_gguf_opts go = gguf_opts(a);
    int *types = calloc(rf_model_unit_count(m) + 1, sizeof *types);
    if (!types) return set_err(err, RF_ERR_NOMEM, "out of memory");
    rf_planner *pl = NULL;
    rf_status s = rf_planner_create(prof, &po, &pl, err);
    uint64_t b = budget;
    for (int tries = 0; !s && tries < 8; tries++) {
        uint64_t file = 0;
        s = rf_planner_solve(pl, b, plan, err);
        if (!s) s = rf_gguf_types_from_plan(m, *plan, kept, types, err);
        if (!s) s = rf_gguf_file_bytes(m, types, &go, &file, err);
        if (s || file <= budget) break;
        rf_plan_free(*plan);
        *plan = NULL;
        if (file - budget >= b) { s = set_err(err, RF_ERR_BUDGET, "no GGUF file of %llu bytes fits", (unsigned long long)budget); break; }
        b -= file - budget;
    }
    if (!s && !*plan) s = set_err(err, RF_ERR_INTERNAL, "the GGUF plan did not converge to the budget");
    if (s && *plan) { rf_plan_free(*plan); *plan = NULL; }
    rf_planner_free(pl);
    free(types);
    return s;
}

/* A profile of the kind the output needs (GGUF types or MLX configs). */
static rf_status check_kind(const rf_profile *p, int gguf, rf_err *err)
{
    if (rf_profile_is_gguf(p) == gguf) return RF_OK;
    return set_err(err, RF_ERR_MISMATCH, "it has %s candidates, the output needs %s ones (ramfit analyse%s)",
                   rf_profile_is_gguf(p) ? "GGUF" : "MLX", gguf ? "GGUF" : "MLX", gguf ? " --format gguf" : "");
}

static rf_status plan_for_budget(const rf_model *m, const args *a, rf_quantize_opts *o, uint64_t budget,
                                 rf_plan **plan, rf_err *err)
{
    rf_profile *prof = NULL;
    rf_status s = RF_OK;
    char defpath[4096];
    if (!a->profile && cli_default_profile(rf_model_dir(m), a->gguf, defpath, sizeof defpath) && file_exists(defpath)) {
        /* what 'ramfit analyse MODEL_DIR' saved here; used only if it matches */
        rf_err e2;
        if (rf_profile_load(defpath, &prof, &e2) == RF_OK && check_kind(prof, a->gguf, &e2) == RF_OK &&
            rf_analyse_check_profile(m, prof, &e2) == RF_OK &&
            (o->f32_as == RF_DT_INVALID || rf_analyse_check_dtype(m, prof, o->f32_as, &e2) == RF_OK)) {
            if (!a->quiet) fprintf(stderr, "ramfit: reusing the profile %s\n", defpath);
        } else {
            if (!a->quiet) fprintf(stderr, "ramfit: not reusing %s: %s\n", defpath, e2.msg);
            rf_profile_free(prof);
            prof = NULL;
        }
    }
    if (prof) {
        /* reused */
    } else if (a->profile && file_exists(a->profile)) {
        s = rf_profile_load(a->profile, &prof, err);
        if (!s) s = check_kind(prof, a->gguf, err);
        if (!s) s = rf_analyse_check_profile(m, prof, err);
        if (!s && o->f32_as != RF_DT_INVALID) s = rf_analyse_check_dtype(m, prof, o->f32_as, err);
        if (s) {
            char msg[RF_ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", err->msg);
            set_err(err, s, "--profile %s: %s", a->profile, msg);
        }
        if (!s && !a->quiet) fprintf(stderr, "ramfit: reusing the profile %s\n", a->profile);
    } else {
        rf_analyse_opts ao;
        rf_analyse_opts_default(&ao);
        ao.threads = o->threads;
        ao.modes = 1u << (o->mode >= 0 ? o->mode : RF_QMODE_OPT);
        ao.gguf = a->gguf;
        if (o->f32_as != RF_DT_INVALID) ao.f32_as = o->f32_as; /* counted and measured as they will be written */
        cli_progress pa;
        cli_progress_init(&pa, "analyse", a->quiet);
        ao.progress = (rf_progress){cli_progress_cb, &pa, cli_cancel_flag()};
        s = rf_analyse(m, &ao, &prof, err);
        cli_progress_end(&pa);
        if (!s && a->profile) s = rf_profile_save(prof, a->profile, err);
    }
    if (!s && a->gguf) { /* the errors of ggml's encoders, in mode slot mlx */
        o->mode = RF_QMODE_MLX;
        int kept = o->f32_as == RF_DT_F32 ? RF_GT_F32 : o->f32_as == RF_DT_F16 ? RF_GT_F16 : RF_GT_BF16;
        s = gguf_plan(m, a, prof, budget, kept, plan, err);
        rf_profile_free(prof);
        return s;
    }
    if (!s && o->mode < 0) o->mode = rf_profile_modes(prof) >> RF_QMODE_OPT & 1 ? RF_QMODE_OPT : RF_QMODE_MLX;
    if (!s && !(rf_profile_modes(prof) >> o->mode & 1))
        s = set_err(err, RF_ERR_MISMATCH, "the profile %s has no %s-mode measurements (analyse with --mode %s)",
                    a->profile, o->mode == RF_QMODE_OPT ? "opt" : "mlx", o->mode == RF_QMODE_OPT ? "opt" : "mlx");
    if (!s) {
        rf_plan_opts po;
        rf_plan_opts_default(&po);
        po.mode = (rf_qmode)o->mode;
        s = rf_plan_solve(prof, &po, budget, plan, err);
    }
    rf_profile_free(prof);
    return s;
}

static void print_summary(const args *a, const rf_quantize_result *r, uint64_t budget, const rf_plan *plan)
{
    char size[32], bud[32];
    rf_format_size(r->tensor_bytes, size, sizeof size);
    double bpw = r->params ? 8.0 * (double)r->tensor_bytes / (double)r->params : 0;
    double rate = r->seconds > 0 ? (double)r->input_bytes / r->seconds / 1e9 : 0;
    if (a->json) {
        json_t *j = json_pack("{s:o, s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:s, s:s?, s:s?, s:f}", "out_dir", cli_json_str(a->out),
                              "tensor_bytes", (json_int_t)r->tensor_bytes, "input_bytes", (json_int_t)r->input_bytes,
                              "params", (json_int_t)r->params, "bpw", bpw, "budget", (json_int_t)budget, "files",
                              (json_int_t)r->files, "tensors", (json_int_t)r->tensors, "units_quantized",
                              (json_int_t)r->units_quantized, "units_kept", (json_int_t)r->units_kept, "mode",
                              r->gptq_factors ? (rf_plan_mode(plan) == RF_QMODE_OPT ? "gptq+opt" : "gptq+mlx")
                              : rf_plan_mode(plan) == RF_QMODE_OPT ? "opt" : "mlx", "f32_kept_as",
                              r->f32_kept_as ? rf_dtype_name(r->f32_kept_as) : NULL, "f32_scales_as",
                              r->f32_scales_as ? rf_dtype_name(r->f32_scales_as) : NULL, "seconds", r->seconds);
        if (j) json_object_set_new(j, "left_out", cli_json_str(r->skipped));
        char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (text) printf("%s\n", text);
        else fprintf(stderr, "ramfit quantize: out of memory formatting the JSON summary\n");
        free(text);
        json_decref(j);
        return;
    }
    if (budget) rf_format_size(budget, bud, sizeof bud);
    else snprintf(bud, sizeof bud, "none (%s)", rf_plan_method_text(plan));
    printf("wrote %s: %s of tensors (%llu B) in %llu file%s, %.3f bits per weight, budget %s, %llu units "
           "quantized, %llu kept, %.2f s (%.2f GB/s of input)\n",
           a->out, size, (unsigned long long)r->tensor_bytes, (unsigned long long)r->files, r->files == 1 ? "" : "s",
           bpw, bud, (unsigned long long)r->units_quantized, (unsigned long long)r->units_kept, r->seconds, rate);
    if (r->files_skipped)
        printf("left out of %s (not needed to load the model): %s\n", a->out, r->skipped);
}

static void print_gguf_summary(const args *a, const rf_gguf_result *r, uint64_t budget, const rf_plan *plan)
{
    double bpw = r->params ? 8.0 * (double)r->tensor_bytes / (double)r->params : 0;
    if (a->json) {
        json_t *types = json_object();
        for (int t = 0; t < RF_GT_COUNT; t++)
            if (r->type_params[t]) json_object_set_new(types, rf_gtype_name(t), json_integer((json_int_t)r->type_params[t]));
        json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:o, s:s, s:s, s:f}", "out", a->out, "architecture",
                              r->arch, "file_bytes", (json_int_t)r->file_bytes, "tensor_bytes",
                              (json_int_t)r->tensor_bytes, "params", (json_int_t)r->params, "tensors",
                              (json_int_t)r->tensors, "bpw", bpw, "type_params", types, "tokenizer_model",
                              r->tok_model, "tokenizer_pre", r->tok_pre, "seconds", r->seconds);
        if (j && budget) {
            json_object_set_new(j, "budget", json_integer((json_int_t)budget));
            json_object_set_new(j, "plan_bytes", json_integer((json_int_t)rf_plan_total_bytes(plan)));
            json_object_set_new(j, "plan_objective", json_real(rf_plan_objective(plan)));
        }
        char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (text) printf("%s\n", text);
        free(text);
        json_decref(j);
        return;
    }
    char size[32];
    rf_format_size(r->file_bytes, size, sizeof size);
    printf("wrote %s: %s (%llu B), llama.cpp architecture %s, %llu tensors, %.3f bits per weight, tokenizer %s%s%s, "
           "%.2f s\n  parameters by type:", a->out, size, (unsigned long long)r->file_bytes, r->arch,
           (unsigned long long)r->tensors, bpw, r->tok_model, r->tok_pre[0] ? "/" : "", r->tok_pre, r->seconds);
    for (int t = 0; t < RF_GT_COUNT; t++)
        if (r->type_params[t]) printf(" %s %llu", rf_gtype_name(t), (unsigned long long)r->type_params[t]);
    printf("\n");
    if (budget) {
        char bs[32];
        rf_format_size(budget, bs, sizeof bs);
        printf("  budget %s (%llu B): the plan counts %llu B, the file has %llu B\n", bs, (unsigned long long)budget,
               (unsigned long long)rf_plan_total_bytes(plan), (unsigned long long)r->file_bytes);
    }
}

static int run_gguf(const args *a, rf_quantize_opts *o, uint64_t budget)
{
    rf_err err;
    rf_err_clear(&err);
    rf_model *m = NULL;
    rf_plan *plan = NULL;
    rf_profile *prof = NULL;
    int *types = NULL;
    rf_gguf_opts go = gguf_opts(a);
    int kept = RF_GT_BF16;
    if (a->dtype) kept = !strcmp(a->dtype, "f16") ? RF_GT_F16 : !strcmp(a->dtype, "f32") ? RF_GT_F32 : RF_GT_BF16;
    rf_status s = rf_model_open(a->model, &m, &err);
    if (!s && !(types = calloc(rf_model_unit_count(m) + 1, sizeof *types)))
        s = set_err(&err, RF_ERR_NOMEM, "out of memory");
    if (!s && a->budget) {
        /* kept units as the profile counts them: F32 sources as bf16 unless --dtype */
        if (a->dtype) s = rf_quantize_check_dtype(m, o->f32_as, &err);
        if (!s) s = plan_for_budget(m, a, o, budget, &plan, &err);
        if (!s) s = rf_gguf_types_from_plan(m, plan, kept, types, &err);
    } else if (!s && a->type) {
        s = rf_gguf_types_uniform(m, rf_gtype_parse(a->type), types, &err);
    } else if (!s) {
        s = rf_plan_load(a->plan, &plan, &err);
        if (!s && a->profile) {
            s = rf_profile_load(a->profile, &prof, &err);
            if (!s) s = rf_plan_check_profile(plan, prof, &err);
        }
        if (!s) s = rf_gguf_types_from_plan(m, plan, kept, types, &err);
    }
    rf_gguf_result r;
    if (!s) {
        cli_progress p;
        cli_progress_init(&p, "gguf", a->quiet);
        rf_progress pr = {cli_progress_cb, &p, cli_cancel_flag()};
        s = rf_gguf_export(m, types, &go, a->out, &pr, &r, &err);
        cli_progress_end(&p);
    }
    if (!s) print_gguf_summary(a, &r, budget, plan);
    free(types);
    rf_profile_free(prof);
    rf_plan_free(plan);
    rf_model_free(m);
    return s ? cli_fail(&err) : 0;
}

int rf_cmd_quantize(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    args a;
    int rc = parse_args(argc, argv, &a);
    rf_quantize_opts o;
    uint64_t budget = 0;
    if (rc || (rc = parse_opts(&a, &o, &budget))) return rc;
    cli_install_signals();
    if (a.gguf) return run_gguf(&a, &o, budget);
    rf_err err;
    rf_err_clear(&err);
    rf_model *m = NULL;
    rf_plan *plan = NULL;
    rf_profile *prof = NULL;
    rf_stats *stats = NULL;
    rf_status s = a.stats ? rf_stats_open(a.stats, &stats, &err) : RF_OK;
    o.gptq = stats;
    if (!s) s = rf_model_open(a.model, &m, &err);
    if (!s) s = rf_quantize_check_dtype(m, o.f32_as, &err); /* before any analysis */
    if (!s && a.plan) {
        s = rf_plan_load(a.plan, &plan, &err);
        if (!s && a.profile) {
            s = rf_profile_load(a.profile, &prof, &err);
            if (!s) s = rf_plan_check_profile(plan, prof, &err);
        }
    } else if (!s) {
        s = plan_for_budget(m, &a, &o, budget, &plan, &err);
    }
    rf_quantize_result r;
    if (!s) {
        cli_progress p;
        cli_progress_init(&p, "quantize", a.quiet);
        rf_progress pr = {cli_progress_cb, &p, cli_cancel_flag()};
        s = rf_quantize_write(m, plan, &o, a.out, &pr, &r, &err);
        cli_progress_end(&p);
    }
    if (!s) print_summary(&a, &r, rf_plan_budget(plan), plan);
    rf_profile_free(prof);
    rf_plan_free(plan);
    rf_model_free(m);
    rf_stats_close(stats);
    if (!s) return 0;
    cli_fail(&err);
    if (s == RF_ERR_NONFINITE && o.f32_as == RF_DT_F16)
        fprintf(stderr, "(float16 holds at most 65504: --dtype bf16 keeps float32's range)\n");
    return 1;
}
