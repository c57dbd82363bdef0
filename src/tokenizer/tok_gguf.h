/* The tokenizer as llama.cpp's tokenizer.ggml.* metadata (tok_gguf.c). */
#ifndef RF_TOK_GGUF_H
#define RF_TOK_GGUF_H

#include "common/internal.h"

typedef struct rf_tok_gguf_info {
    char model[16];   /* tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style) */
    char pre[32];     /* tokenizer.ggml.pre ("" for llama) */
    int32_t tokens;   /* entries written (the model's vocabulary, padded) */
    int32_t bos, eos; /* -1: none */
    int add_bos;
    int scores_from;  /* llama: 1 scores read from tokenizer.model, 0 derived from the merges */
} rf_tok_gguf_info;

/* Write tokenizer.ggml.* for MODEL_DIR's tokenizer.json (+ tokenizer_config.json, and
 * tokenizer.model for SentencePiece scores when present) into W: N_VOCAB tokens (the embedding
 * rows; ids the tokenizer does not use become "[PADi]", type unused). Byte-level BPE is written
 * as llama.cpp's "gpt2" model with merges and the `pre` naming its pre-tokenizer regex;
 * SentencePiece-style BPE (▁, byte fallback) as "llama" with scores. BOS/EOS/add_bos follow
 * ramfit's tokenizer, so llama.cpp tokenizes as ramfit does. Anything llama.cpp cannot reproduce
 * (an unknown pre-tokenizer regex, Unigram, ...) is RF_ERR_UNSUPPORTED naming it. CFG supplies
 * the config.json BOS/EOS when the tokenizer names none (as convert_hf_to_gguf does). */
rf_status rf_tok_gguf_write(const char *model_dir, const rf_config *cfg, int32_t n_vocab, rf_ggufw *w,
                            rf_tok_gguf_info *info, rf_err *err);

/* The tokenizer of a GGUF file (tokenizer.ggml.*: gpt2 with a known pre, or llama/SentencePiece),
 * rebuilt as the equivalent tokenizer.json (SentencePiece scores become merges ranked by score,
 * as transformers' converter does) and loaded with rf_tok_load_json. rf_tok_load calls it for a
 * path that is a GGUF file. */
rf_status rf_tok_load_gguf(const char *path, rf_tok **out, rf_err *err);

#endif
