/* ramfit kld: how far a quantized model's next-token distributions are from the original's. */
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
    "usage: ramfit kld BASE_DIR QUANT_DIR --file TEXT [--ctx N] [--protocol full|llama.cpp]\n"
    "                  [--max-tokens N] [--threads N] [--json] [--quiet]\n"
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
    cli_progress pg;
    cli_progress_init(&pg, "kld", a.quiet);
    cli_install_sigint();
    rf_ppl_opts po = {a.ctx, a.protocol, bos, a.max_tokens, {cli_progress_cb, &pg, cli_cancel_flag()}};
    rf_kld_result r;
    rf_status s = rf_eval_kld(base, quant, ids, n, &po, &r, &err);
    cli_progress_end(&pg);
    rf_engine_free(base);
    rf_engine_free(quant);
    free(ids);
    if (s) return cli_fail(&err);
    if (a.json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:f, s:f, s:f, s:f, s:f, s:I, s:o, s:o}", "base_model", dirs[0],
                              "quant_model", dirs[1], "file", a.file, "protocol",
                              a.protocol == RF_PPL_FULL ? "full" : "llama.cpp", "ctx", a.ctx, "kld_mean", r.kld_mean,
                              "kld_stderr", r.kld_stderr, "kld_p99", r.kld_p99, "kld_max", r.kld_max, "top1_agree",
                              r.top1_agree, "tokens", (json_int_t)r.base.tokens, "base", cli_ppl_json(&r.base),
                              "quant", cli_ppl_json(&r.quant));
        if (!o) { fprintf(stderr, "ramfit kld: cannot format JSON (paths must be UTF-8)\n"); return 1; }
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        putchar('\n');
        json_decref(o);
        return 0;
    }
    printf("base      %s\nquant     %s\n", dirs[0], dirs[1]);
    printf("text      %s: %llu tokens, protocol %s, ctx %d, %llu tokens scored\n", a.file, (unsigned long long)n,
           a.protocol == RF_PPL_FULL ? "full" : "llama.cpp", a.ctx, (unsigned long long)r.base.tokens);
    printf("KLD       mean %.6f +/- %.6f, p99 %.6f, max %.6f nats\n", r.kld_mean, r.kld_stderr, r.kld_p99, r.kld_max);
    printf("top-1     %.2f%% agreement\n", 100 * r.top1_agree);
    printf("PPL       base %.4f +/- %.4f, quant %.4f +/- %.4f (%+.2f%%)\n", r.base.ppl, r.base.ppl_stderr, r.quant.ppl,
           r.quant.ppl_stderr, 100 * (r.quant.ppl / r.base.ppl - 1));
    printf("speed     base %.0f tokens/s, quant %.0f tokens/s\n", r.base.tokens_per_s, r.quant.tokens_per_s);
    return 0;
}
