/* ramfit calibrate: input statistics of every matrix product on a text (docs/calibration.md). */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static const char *const usage_text =
    "usage: ramfit calibrate MODEL_DIR --file TEXT -o STATS [--max-tokens N] [--ctx N]\n"
    "                        [--no-hessian] [--memory SIZE] [--threads N] [--quiet] [--json]\n"
    "\n"
    "Run the unquantized MODEL_DIR over TEXT (windows of N tokens as 'ramfit ppl' cuts them) and\n"
    "record, for every quantization unit (an expert bank expert by expert, over the tokens routed\n"
    "to each), the second moment E[x_j^2] of each input column and the Hessian H = E[x x^T] of its\n"
    "inputs. 'ramfit analyse --stats' weights each candidate's error by E[x_j^2]; 'ramfit quantize\n"
    "--mode gptq --stats' quantizes with GPTQ. Calibrate on one text, evaluate on another.\n"
    "\n"
    "  --file TEXT      UTF-8 text (required)\n"
    "  -o STATS         the statistics: STATS (a JSON index, .json) and its data file (.bin)\n"
    "  --max-tokens N   use only the first N tokens of the text\n"
    "  --ctx N          window size (default 512)\n"
    "  --no-hessian     E[x_j^2] only: enough for analyse --stats, tiny, one pass (GPTQ needs H)\n"
    "  --memory SIZE    Hessian accumulators per pass (default 4GiB); models whose Hessians do not\n"
    "                   fit are run over the text once per group of units that does\n"
    "  --threads N      threads (default 2)\n"
    "  --quiet          no progress bar\n"
    "  --json           print a JSON summary on stdout\n";

static int parse_long(const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi)
        return cli_usage_error("calibrate", "%s needs an integer in [%ld, %ld], got '%s'", opt, lo, hi, v ? v : "");
    *out = x;
    return 0;
}

static uint64_t peak_rss(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)ru.ru_maxrss * 1024 : 0;
}

int rf_cmd_calibrate(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) { fputs(usage_text, stdout); return 0; }
    const char *dir = NULL, *file = NULL, *out = NULL;
    int quiet = 0, json = 0, rc;
    long x;
    rf_calib_opts o;
    rf_calib_opts_default(&o);
    rf_err err = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--file")) {
            if (!v) return cli_usage_error("calibrate", "--file needs a path");
            file = v;
            i++;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!v) return cli_usage_error("calibrate", "%s needs a file name", a);
            out = v;
            i++;
        } else if (!strcmp(a, "--max-tokens")) {
            if ((rc = parse_long(a, v, 1, 1L << 40, &x))) return rc;
            o.max_tokens = (uint64_t)x;
            i++;
        } else if (!strcmp(a, "--ctx")) {
            if ((rc = parse_long(a, v, 2, 1 << 20, &x))) return rc;
            o.ctx = (int)x;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if ((rc = parse_long(a, v, 1, 1024, &x))) return rc;
            o.threads = (int)x;
            i++;
        } else if (!strcmp(a, "--memory")) {
            if (!v || rf_parse_size(v, &o.memory, &err) || !o.memory)
                return cli_usage_error("calibrate", "--memory needs a size such as 4GiB%s%s", v ? ": " : "", v ? err.msg : "");
            i++;
        } else if (!strcmp(a, "--no-hessian")) {
            o.hessian = 0;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-') {
            return cli_usage_error("calibrate", "unknown option '%s'", a);
        } else if (!dir) {
            dir = a;
        } else {
            return cli_usage_error("calibrate", "more than one model directory ('%s', '%s')", dir, a);
        }
    }
    if (!dir) return cli_usage_error("calibrate", "no model directory given");
    if (!file) return cli_usage_error("calibrate", "--file TEXT is required");
    if (!out) return cli_usage_error("calibrate", "-o STATS is required");
    if (cli_file_in_dir(out, dir))
        return cli_usage_error("calibrate", "-o %s is inside the model directory %s: ramfit never writes into the model", out,
                               dir);
    if (cli_same_file(out, file)) return cli_usage_error("calibrate", "-o %s is the text itself", out);
    if (cli_check_output(out)) return 1;
    int32_t *ids = NULL;
    uint64_t n = 0;
    int bos;
    if (cli_tokenize_file(dir, file, &ids, &n, &bos, &err)) return cli_fail(&err);
    const char *label = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
    o.text_label = label;
    cli_progress bar;
    cli_progress_init(&bar, "calibrate", quiet);
    cli_install_signals();
    o.progress = (rf_progress){cli_progress_cb, &bar, cli_cancel_flag()};
    rf_calib_result r;
    rf_status s = rf_calibrate(dir, ids, n, bos, &o, out, &r, &err);
    cli_progress_end(&bar);
    free(ids);
    if (s) return cli_fail(&err);
    uint64_t rss = peak_rss();
    char acc[32], hb[32], fb[32], rs[32];
    rf_format_size(r.accum_bytes, acc, sizeof acc);
    rf_format_size(r.hessian_bytes, hb, sizeof hb);
    rf_format_size(r.file_bytes, fb, sizeof fb);
    rf_format_size(rss, rs, sizeof rs);
    if (json) {
        json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:i, s:I, s:I, s:b, s:I, s:I, s:I, s:I, s:f, s:f}", "stats", out, "text",
                              file, "tokens", (json_int_t)r.tokens, "windows", (json_int_t)r.windows, "passes", r.passes,
                              "units", (json_int_t)r.units, "records", (json_int_t)r.records, "hessian", o.hessian,
                              "accum_bytes", (json_int_t)r.accum_bytes, "hessian_bytes", (json_int_t)r.hessian_bytes,
                              "file_bytes", (json_int_t)r.file_bytes, "peak_rss_bytes", (json_int_t)rss, "ppl", r.ppl,
                              "seconds", r.seconds);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (text) printf("%s\n", text);
        free(text);
        json_decref(j);
    } else if (!quiet) {
        printf("wrote %s: %llu units (%llu distinct inputs) on %llu tokens of %s (%llu windows, PPL %.4f)\n", out,
               (unsigned long long)r.units, (unsigned long long)r.records, (unsigned long long)r.tokens, label,
               (unsigned long long)r.windows, r.ppl);
        printf("memory: %s of Hessian accumulators per pass (%d pass%s over the text; all Hessians %s), peak RSS %s; "
               "data file %s; %.1f s\n", o.hessian ? acc : "0 B", r.passes, r.passes == 1 ? "" : "es", o.hessian ? hb : "none",
               rs, fb, r.seconds);
    }
    return 0;
}
