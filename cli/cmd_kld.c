/* ramfit kld: how far a quantized model's next-token distributions are from the original's. */
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
    "usage: ramfit kld BASE_DIR QUANT_DIR --file TEXT [--ctx N] [--protocol full|llama.cpp]\n"
    "                  [--max-tokens N] [--threads N] [--fast] [--json] [--quiet]\n"
    "\n"
    "KL-divergence KL(base || quant) of the next-token distributions of QUANT_DIR (e.g. an MLX\n"
    "checkpoint written by ramfit quantize, or a .gguf file) from BASE_DIR's, on the same windows\n"
    "of TEXT (tokenized with BASE_DIR's tokenizer; windows as in 'ramfit ppl'). Prints the mean\n"
    "(with its standard error), 99th percentile and maximum KLD in nats, the top-1 agreement and\n"
    "both perplexities.\n"
    "\n"
    "  --file TEXT       UTF-8 text (required)\n"
    "  --ctx N           window size (default 256 for full, 512 for llama.cpp)\n"
    "  --protocol P      full (default) | llama.cpp\n"
    "  --max-tokens N    use only the first N tokens of the text\n"
    "  --threads N       threads per model (default 2)\n"
    "  --fast            run QUANT_DIR with 8-bit activations (as generate does); BASE_DIR stays exact\n"
    "  --json            one JSON object: kld_mean, kld_stderr, kld_p99, kld_max, top1_agree,\n"
    "                    tokens, base {ppl, ...}, quant {ppl, ...}\n"
    "  --quiet           no progress bar\n";

int rf_cmd_kld(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) { fputs(usage_text, stdout); return 0; }
    const char *dirs[2];
    cli_eval_args a;
    int rc = cli_eval_parse("kld", argc, argv, 2, dirs, &a);
    if (rc) return rc;
    rf_err err;
    int32_t *ids;
    uint64_t n;
    int bos;
    if (cli_tokenize_file(dirs[0], a.file, &ids, &n, &bos, &err)) return cli_fail(&err);
    rf_engine_opts eo = {a.threads, a.ctx, a.ctx};
    rf_engine *base = NULL, *quant = NULL;
    if (rf_engine_open(dirs[0], &eo, &base, &err) || rf_engine_open(dirs[1], &eo, &quant, &err)) {
        rf_engine_free(base);
        free(ids);
        return cli_fail(&err);
    }
    rf_engine_set_fast(quant, a.fast);
    cli_progress pg;
    cli_progress_init(&pg, "kld", a.quiet);
    cli_install_signals();
    rf_ppl_opts po = {a.ctx, a.protocol, bos, a.max_tokens, {cli_progress_cb, &pg, cli_cancel_flag()}};
    rf_kld_result r;
    rf_status s = rf_eval_kld(base, quant, ids, n, &po, &r, &err);
    cli_progress_end(&pg);
    rf_engine_free(base);
    rf_engine_free(quant);
    free(ids);
    if (s) return cli_fail(&err);
    if (a.json) {
        /* built value by value: a file name that is not UTF-8 or a non-finite number is written as
         * U+FFFD / null instead of failing the report (it once said "paths must be UTF-8" for a NaN) */
        json_t *o = json_object();
        if (!o) { fprintf(stderr, "ramfit kld: out of memory\n"); return 1; }
        json_object_set_new(o, "base_model", cli_json_str(dirs[0]));
        json_object_set_new(o, "quant_model", cli_json_str(dirs[1]));
        json_object_set_new(o, "file", cli_json_str(a.file));
        json_object_set_new(o, "protocol", json_string(a.protocol == RF_PPL_FULL ? "full" : "llama.cpp"));
        json_object_set_new(o, "ctx", json_integer(a.ctx));
        json_object_set_new(o, "fast", json_boolean(a.fast));
        json_object_set_new(o, "kld_mean", cli_json_num(r.kld_mean));
        json_object_set_new(o, "kld_stderr", cli_json_num(r.kld_stderr));
        json_object_set_new(o, "kld_p99", cli_json_num(r.kld_p99));
        json_object_set_new(o, "kld_max", cli_json_num(r.kld_max));
        json_object_set_new(o, "top1_agree", cli_json_num(r.top1_agree));
        json_object_set_new(o, "tokens", json_integer((json_int_t)r.base.tokens));
        json_object_set_new(o, "base", cli_ppl_json(&r.base));
        json_object_set_new(o, "quant", cli_ppl_json(&r.quant));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        putchar('\n');
        json_decref(o);
        return 0;
    }
    printf("base      %s\nquant     %s%s\n", dirs[0], dirs[1], a.fast ? " (--fast: 8-bit activations)" : "");
    printf("text      %s: %llu tokens, protocol %s, ctx %d, %llu tokens scored\n", a.file, (unsigned long long)n,
           a.protocol == RF_PPL_FULL ? "full" : "llama.cpp", a.ctx, (unsigned long long)r.base.tokens);
    printf("KLD       mean %.6f +/- %.6f, p99 %.6f, max %.6f nats\n", r.kld_mean, r.kld_stderr, r.kld_p99, r.kld_max);
    printf("top-1     %.2f%% agreement\n", 100 * r.top1_agree);
    printf("PPL       base %.4f +/- %.4f, quant %.4f +/- %.4f (%+.2f%%)\n", r.base.ppl, r.base.ppl_stderr, r.quant.ppl,
           r.quant.ppl_stderr, 100 * (r.quant.ppl / r.base.ppl - 1));
    printf("speed     base %.0f tokens/s, quant %.0f tokens/s\n", r.base.tokens_per_s, r.quant.tokens_per_s);
    return 0;
}
