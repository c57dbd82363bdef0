/* ramfit analyse: the data-free analysis pass, MODEL_DIR -> profile (docs/profile.md). */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const usage_text =
    "usage: ramfit analyse MODEL_DIR [-o PROFILE] [--threads N] [--mode mlx|opt|both]\n"
    "                      [--candidates LIST] [--dtype bf16|f16|f32] [--exact | --opt-sample N]\n"
    "                      [--shard K/N] [--stats STATS] [--resume] [--quiet] [--json]\n"
    "       ramfit analyse MODEL_DIR --format gguf [-o PROFILE] [--gguf-sample N | --exact] [--dtype D]\n"
    "\n"
    "Measure every quantization unit of a checkpoint at every candidate config (bits 2/3/4/5/6/8\n"
    "x group size 32/64/128 where the group size divides the input dimension, plus keep): exact\n"
    "MLX bytes and the error of the dequantized weights, with per-unit statistics. Reads only the\n"
    "weights, streaming them; the result (a profile) is what 'ramfit plan' reads.\n"
    "\n"
    "  -o PROFILE         output file (default: MODEL_DIR's name + .profile.json in the current\n"
    "                     directory); written via PROFILE.tmp + rename\n"
    "  --threads N        worker threads (default: all CPUs)\n"
    "  --mode M           quantizer whose error is measured: mlx (MLX's min/max, default), opt\n"
    "                     (error-minimising scale/bias) or both\n"
    "  --opt-sample N     opt mode: search N groups per group size of each unit (default 4096);\n"
    "                     a config of a unit with more than 8N groups (32N at 8 bits) gets an\n"
    "                     estimate from that sample, within about 1% of the exact error\n"
    "                     (docs/profile.md); the profile marks estimates\n"
    "  --exact            opt mode: search every group of every unit (exact; ~25x slower than the\n"
    "                     default on an 8B-wide model: docs/profile.md, 'Accuracy')\n"
    "  --shard K/N        analyse part K of N (a deterministic 1/N of the units, by bytes) and write\n"
    "                     a part profile (default name: MODEL_DIR's name + .profile.partK-of-N.json);\n"
    "                     'ramfit profile merge' joins the N parts (docs/distributed.md)\n"
    "  --candidates LIST  all (default), or e.g. 4/64,8/64 or 3,4 (every group size); keep is\n"
    "                     always a choice\n"
    "  --dtype D          the dtype F32 tensors will be written in (kept weights, norms,\n"
    "                     scales/biases): bf16 (default), f16 or f32 (mlx-lm's output for a float32\n"
    "                     checkpoint); the profile counts and measures them so; F32 models only\n"
    "  --stats STATS      weight every error by the input statistics of 'ramfit calibrate' (E[x_j^2]\n"
    "                     of each input column, llama.cpp's importance matrix idea): the planner then\n"
    "                     minimises the error of the layers' outputs on that text (default: data-free)\n"
    "  --format gguf      candidates are llama.cpp's types instead of MLX configs: for each tensor\n"
    "                     Q2_K Q3_K Q4_K Q5_K Q6_K Q8_0 (rows of a multiple of 256; llama-quantize's\n"
    "                     fallbacks Q4_0 Q5_0 Q5_1 Q8_0 for other multiples of 32), their exact bytes\n"
    "                     in the .gguf file and ggml's encoders' error; the profile also counts the\n"
    "                     file's header, metadata and tokenizer, so 'ramfit plan' budgets the whole\n"
    "                     file (default name: MODEL_DIR's name + .gguf.profile.json)\n"
    "  --gguf-sample N    GGUF: measure about N weights (evenly spaced rows) of each larger unit\n"
    "                     (default 1048576) and scale the error by the rows' energy (docs/profile.md);\n"
    "                     --exact measures every row\n"
    "  --resume           continue an interrupted run from PROFILE.partial (Ctrl-C saves it)\n"
    "  --quiet            no progress display\n"
    "  --json             print a JSON summary on stdout\n";

typedef struct prog {
    cli_progress bar;
    double t0;
} prog;

static void on_progress(void *user, uint64_t done, uint64_t total, const char *what)
{
    prog *p = user;
    double el = cli_now() - p->t0;
    char line[96];
    snprintf(line, sizeof line, "%.2f GB/s %s", el > 0 ? (double)done / el / 1e9 : 0.0, what ? what : "");
    char *sp = strchr(line + 5, ' ');
    if (sp) sp = strchr(sp + 1, ' ');
    if (sp) *sp = '\0'; /* rate and units done fit the bar; the unit name does not */
    cli_progress_cb(&p->bar, done, total, line);
}

int rf_cmd_analyse(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) { fputs(usage_text, stdout); return 0; }
    const char *dir = NULL, *out = NULL, *stats_path = NULL;
    int quiet = 0, json = 0;
    rf_dtype dtype = RF_DT_INVALID;
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    rf_err err = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!more) return cli_usage_error("analyse", "%s needs a file name", a);
            out = argv[++i];
        } else if (!strcmp(a, "--threads")) {
            long long v;
            int rc = cli_int_arg("analyse", a, more ? argv[i + 1] : NULL, 1, 1024, &v);
            if (rc) return rc;
            o.threads = (int)v;
            i++;
        } else if (!strcmp(a, "--mode")) {
            if (!more || rf_analyse_parse_modes(argv[i + 1], &o.modes, &err))
                return cli_usage_error("analyse", "%s", more ? err.msg : "--mode needs mlx, opt or both");
            i++;
        } else if (!strcmp(a, "--candidates")) {
            if (!more || rf_analyse_parse_candidates(argv[i + 1], &o.configs, &err))
                return cli_usage_error("analyse", "%s", more ? err.msg : "--candidates needs a list");
            i++;
        } else if (!strcmp(a, "--dtype")) {
            if (!more) return cli_usage_error("analyse", "--dtype needs bf16, f16 or f32");
            int rc = cli_parse_dtype("analyse", argv[++i], &dtype);
            if (rc) return rc;
        } else if (!strcmp(a, "--exact")) {
            o.opt_sample = RF_ANALYSE_EXACT;
            o.gguf_sample = RF_ANALYSE_EXACT;
        } else if (!strcmp(a, "--format")) {
            if (!more || (strcmp(argv[i + 1], "gguf") && strcmp(argv[i + 1], "mlx")))
                return cli_usage_error("analyse", "--format needs mlx or gguf");
            o.gguf = !strcmp(argv[++i], "gguf");
        } else if (!strcmp(a, "--gguf-sample")) {
            char *end;
            unsigned long long v = more ? strtoull(argv[i + 1], &end, 10) : 0;
            if (!more || *end || argv[i + 1][0] < '1' || argv[i + 1][0] > '9' || v > (1ull << 50))
                return cli_usage_error("analyse", "--gguf-sample needs a number of weights (1 .. 2^50)");
            o.gguf_sample = v;
            i++;
        } else if (!strcmp(a, "--opt-sample")) {
            char *end;
            unsigned long long v = more ? strtoull(argv[i + 1], &end, 10) : 0;
            if (!more || *end || argv[i + 1][0] < '1' || argv[i + 1][0] > '9' || v > (1ull << 40))
                return cli_usage_error("analyse", "--opt-sample needs a number of groups (1 .. 2^40)");
            o.opt_sample = v;
            i++;
        } else if (!strcmp(a, "--shard")) {
            if (!more || rf_analyse_parse_shard(argv[i + 1], &o.shard_index, &o.shard_count, &err))
                return cli_usage_error("analyse", "%s", more ? err.msg : "--shard needs K/N");
            i++;
        } else if (!strcmp(a, "--stats")) {
            if (!more) return cli_usage_error("analyse", "--stats needs a statistics file (ramfit calibrate -o)");
            stats_path = argv[++i];
        } else if (!strcmp(a, "--resume")) {
            o.resume = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-') {
            return cli_usage_error("analyse", "unknown option '%s'", a);
        } else if (!dir) {
            dir = a;
        } else {
            return cli_usage_error("analyse", "more than one model directory ('%s', '%s')", dir, a);
        }
    }
    if (!dir) return cli_usage_error("analyse", "no model directory given");
    char defpath[512], partial[4096];
    if (!out) {
        char *rd = realpath(dir, NULL), *rc = realpath(".", NULL);
        int inside = rd && rc && !strcmp(rd, rc);
        free(rd);
        free(rc);
        if (inside)
            return cli_usage_error("analyse", "the current directory is the model directory: the profile is not written "
                                   "into a model directory by default; give -o PROFILE");
        if (!cli_default_profile(dir, o.gguf, defpath, sizeof defpath))
            return cli_usage_error("analyse", "cannot name a default profile for '%s'; give -o PROFILE", dir);
        if (o.shard_count) { /* NAME.profile.json -> NAME.profile.partK-of-N.json */
            size_t n = strlen(defpath);
            if (n < 5 || snprintf(defpath + n - 5, sizeof defpath - (n - 5), ".part%d-of-%d.json", o.shard_index,
                                  o.shard_count) >= (int)(sizeof defpath - (n - 5)))
                return cli_usage_error("analyse", "cannot name a default part profile for '%s'; give -o PROFILE", dir);
        }
        out = defpath;
    }
    /* The profile, its data file and the checkpoint land next to OUT: never among the model's files. */
    if (cli_file_in_dir(out, dir))
        return cli_usage_error("analyse", "-o %s is inside the model directory %s: ramfit never writes into the model", out, dir);
    if (cli_check_output(out)) return 1;
    snprintf(partial, sizeof partial, "%s.partial", out);
    o.partial_path = partial;

    rf_model *m = NULL;
    rf_stats *stats = NULL;
    if (stats_path && rf_stats_open(stats_path, &stats, &err)) return cli_fail(&err);
    o.stats = stats;
    if (rf_model_open(dir, &m, &err)) {
        rf_stats_close(stats);
        return cli_fail(&err);
    }
    if (rf_quantize_check_dtype(m, dtype, &err)) {
        rf_model_free(m);
        rf_stats_close(stats);
        return cli_fail(&err);
    }
    if (dtype != RF_DT_INVALID) o.f32_as = dtype;
    if (o.resume && access(partial, F_OK) != 0 && !quiet)
        fprintf(stderr, "ramfit analyse: no partial analysis at %s: starting from the beginning\n", partial);
    cli_install_signals();
    prog p;
    cli_progress_init(&p.bar, "analyse", quiet);
    p.t0 = cli_now();
    o.progress = (rf_progress){on_progress, &p, cli_cancel_flag()};
    rf_profile *prof = NULL;
    rf_status s = rf_analyse(m, &o, &prof, &err);
    cli_progress_end(&p.bar);
    double secs = cli_now() - p.t0;
    if (!s) s = rf_profile_save(prof, out, &err);
    rf_stats_close(stats);
    if (s) {
        rf_profile_free(prof);
        rf_model_free(m);
        return cli_fail(&err);
    }
    /* the checkpoint is an index and a data file, like any saved profile: both go */
    if (rf_profile_remove(partial, &err)) fprintf(stderr, "ramfit analyse: warning: %s\n", err.msg);
    uint64_t units = rf_profile_unit_count(prof), cand = 0, input = 0, est_units = 0;
    for (uint64_t u = 0; u < units; u++) {
        cand += (uint64_t)rf_profile_unit(prof, u)->n_cands;
        input += rf_profile_unit(prof, u)->kept_bytes;
        est_units += rf_profile_unit(prof, u)->estimated != 0;
    }
    char size[32];
    rf_format_size(rf_profile_full_bytes(prof), size, sizeof size);
    if (json) {
        json_t *j = json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:I}", "profile", cli_json_str(out), "units", (json_int_t)units,
                              "candidates", (json_int_t)cand, "others", (json_int_t)rf_profile_other_count(prof),
                              "params", (json_int_t)rf_profile_param_count(prof), "bytes",
                              (json_int_t)rf_profile_full_bytes(prof), "seconds", secs, "input_gb_per_s",
                              secs > 0 ? (double)input / secs / 1e9 : 0.0, "estimated_units", (json_int_t)est_units);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (text) printf("%s\n", text);
        free(text);
        json_decref(j);
    } else if (!quiet) {
        printf("wrote %s: %llu units (%llu candidate measurements), %llu other tensors, %llu parameters, %s; "
               "%.1f s (%.2f GB/s)\n",
               out, (unsigned long long)units, (unsigned long long)cand, (unsigned long long)rf_profile_other_count(prof),
               (unsigned long long)rf_profile_param_count(prof), size, secs, secs > 0 ? (double)input / secs / 1e9 : 0.0);
        if (est_units && o.gguf)
            printf("GGUF errors of %llu large unit%s estimated from evenly spaced rows of about %llu weights (--exact "
                   "measures every row)\n", (unsigned long long)est_units, est_units == 1 ? "" : "s",
                   (unsigned long long)rf_profile_gguf_sample(prof));
        else if (est_units)
            printf("opt errors of %llu large unit%s estimated from a sample of %llu groups per group size (about 1%% "
                   "accurate; --exact measures every group)\n", (unsigned long long)est_units, est_units == 1 ? "" : "s",
                   (unsigned long long)rf_profile_opt_sample(prof));
        if (o.shard_count)
            printf("part %d of %d: join all parts with 'ramfit profile merge PARTS... -o PROFILE'\n", o.shard_index,
                   o.shard_count);
    }
    rf_profile_free(prof);
    rf_model_free(m);
    return 0;
}
