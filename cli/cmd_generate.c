/* ramfit generate: stream text from a model with the built-in engine. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
    "usage: ramfit generate MODEL_DIR -p PROMPT [-n N] [--temp T] [--top-p P] [--seed S]\n"
    "                       [--threads N] [--ctx N] [--exact]\n"
    "\n"
    "Continue PROMPT (tokenized with the model's tokenizer, BOS added when the tokenizer adds one)\n"
    "with MODEL_DIR (a checkpoint directory or a .gguf file)\n"
    "and stream the new text to stdout; speed goes to stderr at the end. Stops after N tokens or\n"
    "at the end-of-sequence token.\n"
    "\n"
    "  -p, --prompt TEXT  the prompt (may be empty: start from BOS)\n"
    "  -n N               tokens to generate (default 128)\n"
    "  --temp T           temperature; 0 = greedy (default 0.8)\n"
    "  --top-p P          nucleus sampling mass in (0, 1] (default 0.95)\n"
    "  --seed S           sampling seed (default 1): the same seed gives the same text\n"
    "  --threads N        threads (default 2)\n"
    "  --ctx N            KV cache positions (default: prompt + N)\n"
    "  --exact            float activations throughout (as ppl and kld); by default quantized\n"
    "                     weights take 8-bit activations and integer dot products (llama.cpp's\n"
    "                     way: faster, the logits differ slightly)\n";

static int num(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = v ? strtod(v, &end) : 0;
    if (!v || errno || *end || end == v || !(x >= lo && x <= hi)) return -1;
    *out = x;
    return 0;
}

int rf_cmd_generate(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) { fputs(usage_text, stdout); return 0; }
    const char *model = NULL, *prompt = NULL;
    double n = 128, temp = 0.8, top_p = 0.95, seed = 1, threads = 2, ctx = 0;
    int exact = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double *dst = NULL, lo = 0, hi = 0;
        if (!strcmp(o, "-p") || !strcmp(o, "--prompt")) {
            if (!v) return cli_usage_error("generate", "%s needs text", o);
            prompt = v;
            i++;
            continue;
        }
        if (!strcmp(o, "--exact")) { exact = 1; continue; }
        if (!strcmp(o, "-n")) dst = &n, lo = 0, hi = 1 << 24;
        else if (!strcmp(o, "--temp")) dst = &temp, lo = 0, hi = 100;
        else if (!strcmp(o, "--top-p")) dst = &top_p, lo = 1e-9, hi = 1;
        else if (!strcmp(o, "--seed")) dst = &seed, lo = 0, hi = 9007199254740992.0;
        else if (!strcmp(o, "--threads")) dst = &threads, lo = 1, hi = 256;
        else if (!strcmp(o, "--ctx")) dst = &ctx, lo = 1, hi = 1 << 24;
        else if (o[0] == '-' && o[1]) return cli_usage_error("generate", "unknown option '%s'", o);
        else if (!model) { model = o; continue; }
        else return cli_usage_error("generate", "unexpected argument '%s'", o);
        if (dst != &temp && dst != &top_p) { /* counts and seeds are whole numbers (2.5 tokens was taken as 2) */
            long long x;
            int rc = cli_int_arg("generate", o, v, (long long)lo, (long long)hi, &x);
            if (rc) return rc;
            *dst = (double)x;
        } else if (num(v, lo, hi, dst)) {
            return cli_usage_error("generate", "%s needs a number in [%g, %g], not '%s'", o, lo, hi, v ? v : "");
        }
        i++;
    }
    if (!model) return cli_usage_error("generate", "missing model directory");
    if (!prompt) return cli_usage_error("generate", "-p PROMPT is required (it may be empty)");
    rf_err err;
    rf_tok *tok;
    if (rf_tok_load(model, &tok, &err)) return cli_fail(&err);
    int32_t *ids = NULL;
    uint64_t np = 0;
    rf_engine *e = NULL;
    rf_sampler *smp = NULL;
    rf_tok_stream *ts = NULL;
    float *logits = NULL;
    uint8_t *holes = NULL;
    int rc = 1;
    if (rf_tok_encode(tok, prompt, strlen(prompt), 1, &ids, &np, &err)) goto fail;
    if (np == 0) {
        fprintf(stderr, "ramfit generate: the prompt is empty and the tokenizer adds no BOS: nothing to continue\n");
        rc = 2;
        goto out;
    }
    int ngen = (int)n;
    rf_engine_opts eo = {(int)threads, ctx > 0 ? (int)ctx : (int)np + ngen, 0};
    if (eo.max_ctx < (int)np + 1) eo.max_ctx = (int)np + 1;
    if (rf_engine_open(model, &eo, &e, &err)) goto fail;
    rf_engine_set_fast(e, !exact);
    int V = rf_engine_vocab(e);
    /* Never sample an id the tokenizer cannot decode: a model's vocabulary is often padded past the
     * tokenizer's (to a multiple of 64 or 128), and such an id once aborted the stream mid-text. The
     * sampler sees the ids both have; ids without a piece among them are masked out. */
    int TV = rf_tok_vocab_size(tok), SV = V < TV ? V : TV;
    if (SV <= 0) {
        fprintf(stderr, "ramfit generate: the tokenizer has no ids the model can produce\n");
        goto out;
    }
    if (rf_sampler_create((float)temp, (float)top_p, (uint64_t)seed, SV, &smp, &err) ||
        rf_tok_stream_create(tok, &ts, &err))
        goto fail;
    logits = malloc((size_t)V * sizeof(float));
    holes = calloc((size_t)SV, 1);
    if (!logits || !holes) {
        free(holes);
        fprintf(stderr, "ramfit generate: out of memory\n");
        goto out;
    }
    for (int32_t i = 0; i < SV; i++) holes[i] = rf_tok_id_to_piece(tok, i) == NULL;
    /* The prompt goes through the stream decoder too, so the first new token is decoded in
     * context (a leading-space marker is a space after the prompt, dropped only at the start). */
    for (uint64_t i = 0; i < np; i++) {
        const char *piece;
        uint64_t plen;
        if (!rf_tok_is_special(tok, ids[i]) && rf_tok_stream_push(ts, ids[i], &piece, &plen, &err)) goto fail;
    }
    cli_install_signals();
    fputs(prompt, stdout);
    fflush(stdout);
    double t0 = cli_now();
    if (rf_engine_forward(e, ids, (int)np, logits, 0, &err)) goto fail;
    double t1 = cli_now();
    int made = 0, eos = rf_tok_eos_id(tok);
    while (made < ngen && rf_engine_pos(e) < rf_engine_max_ctx(e) && !*cli_cancel_flag()) {
        for (int32_t i = 0; i < SV; i++)
            if (holes[i]) logits[i] = -INFINITY;
        int32_t next = rf_sampler_sample(smp, logits);
        made++;
        if (next == eos) break;
        const char *piece;
        uint64_t plen;
        if (rf_tok_stream_push(ts, next, &piece, &plen, &err)) goto fail;
        fwrite(piece, 1, plen, stdout);
        fflush(stdout);
        if (made < ngen && rf_engine_forward(e, &next, 1, logits, 0, &err)) goto fail;
    }
    double t2 = cli_now();
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prompt %llu tokens, %.1f tokens/s; generated %d tokens, %.1f tokens/s\n", (unsigned long long)np,
            (double)np / (t1 - t0 > 0 ? t1 - t0 : 1e-9), made, made / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    rc = 0;
    goto out;
fail:
    rc = cli_fail(&err);
out:
    free(holes);
    free(logits);
    free(ids);
    rf_tok_stream_free(ts);
    rf_sampler_free(smp);
    rf_engine_free(e);
    rf_tok_free(tok);
    return rc;
}
