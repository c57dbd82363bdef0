/* ramfit ppl: perplexity of a model on a text file with the built-in engine. Also holds the
 * option parsing and text loading that ramfit kld shares. */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
    "usage: ramfit ppl MODEL_DIR --file TEXT [--ctx N] [--protocol full|llama.cpp] [--max-tokens N]\n"
    "                  [--threads N] [--fast] [--json] [--quiet]\n"
    "\n"
    "Perplexity of MODEL_DIR (original or MLX-quantized checkpoint, or a .gguf file: ramfit's or\n"
    "llama.cpp's) on TEXT, tokenized once with the model's tokenizer (tokenizer.json, or the GGUF's\n"
    "tokenizer.ggml.*), in windows of N tokens:\n"
    "  full (default, N = 256): with a BOS token, chunks of N-1 tokens fed as [BOS] + chunk, every\n"
    "           chunk token scored; without, chunks of N tokens, the last N-1 scored; the final\n"
    "           partial chunk is dropped.\n"
    "  llama.cpp (N = 512): llama.cpp's perplexity tool: BOS-prefixed text cut into chunks of N,\n"
    "           each chunk starting with BOS (when the model uses one), the second half scored.\n"
    "\n"
    "  --file TEXT       UTF-8 text to score (required; at most 256 MiB)\n"
    "  --ctx N           window size (default 256 for full, 512 for llama.cpp)\n"
    "  --protocol P      full | llama.cpp\n"
    "  --max-tokens N    use only the first N tokens of the text\n"
    "  --threads N       threads (default 2)\n"
    "  --fast            activations rounded to 8 bits for quantized weights (what generate does,\n"
    "                    like llama.cpp): faster, not the exact float figure\n"
    "  --json            one JSON object: ppl, ppl_stderr, nll_mean, nll_stderr, tokens, windows,\n"
    "                    text_tokens, bos, ctx, protocol, fast, seconds, tokens_per_s\n"
    "  --quiet           no progress bar\n";


int cli_eval_parse(const char *cmd, int argc, char **argv, int npos, const char **pos, cli_eval_args *a)
{
    memset(a, 0, sizeof *a);
    a->protocol = RF_PPL_FULL;
    a->threads = 2;
    int got = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
        int rc;
        if (!strcmp(o, "--json")) a->json = 1;
        else if (!strcmp(o, "--quiet")) a->quiet = 1;
        else if (!strcmp(o, "--fast")) a->fast = 1;
        else if (!strcmp(o, "--file")) {
            if (!v) return cli_usage_error(cmd, "--file needs a path");
            a->file = v;
            i++;
        } else if (!strcmp(o, "--protocol")) {
            if (v && !strcmp(v, "full")) a->protocol = RF_PPL_FULL;
            else if (v && (!strcmp(v, "llama.cpp") || !strcmp(v, "llamacpp"))) a->protocol = RF_PPL_LLAMACPP;
            else return cli_usage_error(cmd, "--protocol is full or llama.cpp, got '%s'", v ? v : "");
            i++;
        } else if (!strcmp(o, "--ctx")) {
            if ((rc = cli_int_arg(cmd, o, v, 2, 1 << 20, &x))) return rc;
            a->ctx = (int)x;
            i++;
        } else if (!strcmp(o, "--max-tokens")) {
            if ((rc = cli_int_arg(cmd, o, v, 1, 1LL << 40, &x))) return rc;
            a->max_tokens = (uint64_t)x;
            i++;
        } else if (!strcmp(o, "--threads")) {
            if ((rc = cli_int_arg(cmd, o, v, 1, 256, &x))) return rc;
            a->threads = (int)x;
            i++;
        } else if (o[0] == '-' && o[1]) {
            return cli_usage_error(cmd, "unknown option '%s'", o);
        } else {
            if (got >= npos) return cli_usage_error(cmd, "unexpected argument '%s'", o);
            pos[got++] = o;
        }
    }
    if (got < npos) return cli_usage_error(cmd, "missing model directory");
    if (!a->file) return cli_usage_error(cmd, "--file TEXT is required");
    if (!a->ctx) a->ctx = a->protocol == RF_PPL_FULL ? 256 : 512;
    return 0;
}


rf_status cli_tokenize_file(const char *model_dir, const char *path, int32_t **ids, uint64_t *n, int *bos,
                            rf_err *err)
{
    *ids = NULL;
    *n = 0;
    char *text = NULL;
    size_t len = 0;
    /* bounded: a wrong path (/dev/zero, a weight file) must not be read until memory runs out */
    rf_status rs = rf_read_file(path, CLI_MAX_TEXT, &text, &len, err);
    if (rs) return rs;
    rf_tok *tok;
    rf_status s = rf_tok_load(model_dir, &tok, err);
    if (!s) {
        *bos = rf_tok_adds_bos(tok) ? rf_tok_bos_id(tok) : -1;
        s = rf_tok_encode(tok, text, len, 0, ids, n, err);
        rf_tok_free(tok);
    }
    free(text);
    return s;
}

json_t *cli_json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

json_t *cli_ppl_json(const rf_ppl_result *r)
{
    /* numbers one by one: a non-finite one is null (json_pack refuses NaN and gave no object) */
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "ppl", cli_json_num(r->ppl));
    json_object_set_new(o, "ppl_stderr", cli_json_num(r->ppl_stderr));
    json_object_set_new(o, "nll_mean", cli_json_num(r->nll_mean));
    json_object_set_new(o, "nll_stderr", cli_json_num(r->nll_stderr));
    json_object_set_new(o, "tokens", json_integer((json_int_t)r->tokens));
    json_object_set_new(o, "windows", json_integer((json_int_t)r->windows));
    json_object_set_new(o, "seconds", cli_json_num(r->seconds));
    json_object_set_new(o, "tokens_per_s", cli_json_num(r->tokens_per_s));
    return o;
}

/* STR as a JSON string; bytes that are not UTF-8 (a file name can hold any) become U+FFFD rather
 * than failing the whole report. */
json_t *cli_json_str(const char *str)
{
    json_t *j = json_string(str);
    if (j) return j;
    size_t n = strlen(str);
    char *fixed = malloc(3 * n + 1);
    if (!fixed) return json_null();
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)str[i];
        int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        char tmp[5] = {0};
        if (len && i + (size_t)len <= n) memcpy(tmp, str + i, (size_t)len);
        json_t *probe = len ? json_string(tmp) : NULL;
        if (probe) {
            memcpy(fixed + k, str + i, (size_t)len);
            k += (size_t)len;
            i += (size_t)len;
            json_decref(probe);
        } else {
            memcpy(fixed + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    fixed[k] = '\0';
    j = json_string(fixed);
    free(fixed);
    return j ? j : json_null();
}

static void print_json(const char *model, const cli_eval_args *a, uint64_t ntext, int bos, const rf_ppl_result *r)
{
    json_t *o = cli_ppl_json(r);
    if (!o) { fprintf(stderr, "ramfit ppl: out of memory\n"); return; }
    json_object_set_new(o, "model", cli_json_str(model));
    json_object_set_new(o, "file", cli_json_str(a->file));
    json_object_set_new(o, "protocol", json_string(a->protocol == RF_PPL_FULL ? "full" : "llama.cpp"));
    json_object_set_new(o, "ctx", json_integer(a->ctx));
    json_object_set_new(o, "fast", json_boolean(a->fast));
    json_object_set_new(o, "bos", json_boolean(bos >= 0));
    json_object_set_new(o, "text_tokens", json_integer((json_int_t)ntext));
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    putchar('\n');
    json_decref(o);
}

int rf_cmd_ppl(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) { fputs(usage_text, stdout); return 0; }
    const char *model;
    cli_eval_args a;
    int rc = cli_eval_parse("ppl", argc, argv, 1, &model, &a);
    if (rc) return rc;
    rf_err err;
    int32_t *ids;
    uint64_t n;
    int bos;
    if (cli_tokenize_file(model, a.file, &ids, &n, &bos, &err)) return cli_fail(&err);
    rf_engine_opts eo = {a.threads, a.ctx, a.ctx};
    rf_engine *e;
    if (rf_engine_open(model, &eo, &e, &err)) { free(ids); return cli_fail(&err); }
    rf_engine_set_fast(e, a.fast);
    cli_progress pg;
    cli_progress_init(&pg, "ppl", a.quiet);
    cli_install_signals();
    rf_ppl_opts po = {a.ctx, a.protocol, bos, a.max_tokens, {cli_progress_cb, &pg, cli_cancel_flag()}};
    rf_ppl_result r;
    rf_status s = rf_eval_ppl(e, ids, n, &po, &r, &err);
    cli_progress_end(&pg);
    rf_engine_free(e);
    free(ids);
    if (s) return cli_fail(&err);
    if (a.json) {
        print_json(model, &a, n, bos, &r);
        return 0;
    }
    printf("model     %s\n", model);
    printf("text      %s: %llu tokens (%s BOS), protocol %s, ctx %d, %llu windows\n", a.file, (unsigned long long)n,
           bos >= 0 ? "with" : "no", a.protocol == RF_PPL_FULL ? "full" : "llama.cpp", a.ctx,
           (unsigned long long)r.windows);
    printf("PPL       %.4f +/- %.4f%s\n", r.ppl, r.ppl_stderr, a.fast ? " (--fast: 8-bit activations)" : "");
    printf("NLL       %.5f +/- %.5f nats/token\n", r.nll_mean, r.nll_stderr);
    printf("scored    %llu tokens\n", (unsigned long long)r.tokens);
    printf("speed     %.0f tokens/s (%.2f s)\n", r.tokens_per_s, r.seconds);
    return 0;
}
