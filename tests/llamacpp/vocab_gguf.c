/* Test tooling: a vocabulary-only GGUF (general.architecture llama + tokenizer.ggml.*) written by
 * ramfit's tokenizer export from a tokenizer directory (tokenizer.json + tokenizer_config.json),
 * so that llama.cpp can tokenize with a real vocabulary that has no model here.
 * usage: vocab_gguf TOKENIZER_DIR OUT.gguf    (built by tests/llamacpp/build.sh with libramfit) */
#include "tokenizer/tok_gguf.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: vocab_gguf TOKENIZER_DIR OUT.gguf\n");
        return 2;
    }
    rf_err err;
    rf_tok *tok;
    if (rf_tok_load(argv[1], &tok, &err)) {
        fprintf(stderr, "vocab_gguf: %s\n", err.msg);
        return 1;
    }
    rf_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.bos_token_id = cfg.eos_token_id = -1;
    int32_t n = rf_tok_vocab_size(tok);
    rf_tok_free(tok);
    rf_ggufw *w;
    rf_tok_gguf_info info;
    rf_status s = rf_ggufw_create(argv[2], &w, &err);
    if (!s) s = rf_ggufw_set_str(w, "general.architecture", "llama", &err);
    if (!s) s = rf_tok_gguf_write(argv[1], &cfg, n, w, &info, &err);
    if (!s) s = rf_ggufw_finish(w, &err);
    if (!s) printf("%s: %d tokens, tokenizer %s%s%s\n", argv[2], info.tokens, info.model, info.pre[0] ? "/" : "", info.pre);
    else fprintf(stderr, "vocab_gguf: %s\n", err.msg);
    if (!s || w) rf_ggufw_free(w);
    return s ? 1 : 0;
}
