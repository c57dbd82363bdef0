/* Private pieces of the tokenizer (tokenizer.c, tok_normalize.c, tok_pretok.c, tok_bpe.c,
 * tok_decode.c). The pipeline follows Hugging Face tokenizers: added tokens are cut out first,
 * the rest is normalized, pre-tokenized into pieces, and each piece is run through the model. */
#ifndef RF_TOKENIZER_INTERNAL_H
#define RF_TOKENIZER_INTERNAL_H

#include "common/internal.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* ------------------------------------------------------------------ growable buffers */

typedef struct tk_buf {
    char *p;
    size_t n, cap;
} tk_buf;
/* 0 on allocation failure. */
int tk_buf_reserve(tk_buf *b, size_t extra);
int tk_buf_put(tk_buf *b, const void *s, size_t n);
void tk_buf_free(tk_buf *b);

/* A list of text pieces stored back to back in one buffer. at_start marks a piece that begins
 * at offset 0 of the caller's text (Metaspace prepend_scheme "first" needs it). */
typedef struct tk_span {
    size_t off, len;
    int at_start;
} tk_span;
typedef struct tk_pieces {
    tk_buf text;
    tk_span *v;
    size_t n, cap;
} tk_pieces;
int tk_pieces_add(tk_pieces *p, const char *s, size_t len, int at_start);
void tk_pieces_clear(tk_pieces *p);
void tk_pieces_free(tk_pieces *p);

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid/truncated. */
int tk_utf8_len(const unsigned char *s, size_t avail);
/* Decode one code point of a valid sequence of length n. */
uint32_t tk_utf8_decode(const unsigned char *s, int n);
int tk_utf8_encode(uint32_t cp, char out[4]);
/* Offset of the first invalid byte, or len when s is valid UTF-8. */
size_t tk_utf8_validate(const char *s, size_t len);
/* Unicode White_Space (what Rust's char::is_whitespace uses). */
int tk_is_whitespace(uint32_t cp);

/* ------------------------------------------------------------------ regex (PCRE2) */

typedef struct tk_regex {
    pcre2_code *code;
    int jit;
} tk_regex;
/* Compile a pattern written for Oniguruma (what HF uses) into PCRE2 with UTF+UCP; \s and \S
 * become \p{White_Space} so that the whitespace class matches Oniguruma's exactly. literal:
 * the pattern is a plain string. */
rf_status tk_regex_compile(tk_regex *re, const char *pat, size_t len, int literal, rf_err *err);
void tk_regex_free(tk_regex *re);
/* HF pattern objects {"String": s} / {"Regex": r}. With lit non-NULL a non-empty String is
 * returned as a literal in *lit (malloc'd) instead of being compiled. */
rf_status tk_pattern_parse(json_t *pat, const char *what, tk_regex *re, char **lit, size_t *lit_len, rf_err *err);

/* Per-call matching state (match data and a JIT stack grown on demand). */
typedef struct tk_match {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *stack;
} tk_match;
void tk_match_free(tk_match *m);

/* One segment of a string: a regex match or the gap between matches. */
typedef struct tk_seg {
    size_t start, end;
    int is_match;
} tk_seg;
typedef struct tk_segs {
    tk_seg *v;
    size_t n, cap;
} tk_segs;
/* HF's find_matches: cover s with alternating gaps and matches (empty matches included the way
 * Oniguruma's iterator reports them). */
rf_status tk_regex_segments(const tk_regex *re, tk_match *m, const char *s, size_t len, tk_segs *out,
                            rf_err *err);

/* ------------------------------------------------------------------ normalizers */

typedef enum tk_norm_kind {
    TK_NORM_SEQUENCE, TK_NORM_PREPEND, TK_NORM_REPLACE, TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC,
    TK_NORM_NFKD, TK_NORM_LOWERCASE, TK_NORM_STRIP
} tk_norm_kind;

typedef struct tk_norm {
    tk_norm_kind kind;
    struct tk_norm **kids;
    size_t nkids;
    char *str;      /* Prepend text / Replace content */
    size_t str_len;
    char *lit;      /* Replace: a non-empty literal pattern (else re) */
    size_t lit_len;
    tk_regex re;    /* Replace: a regex or empty-literal pattern */
    int left, right;/* Strip */
} tk_norm;

rf_status tk_norm_parse(json_t *j, tk_norm **out, rf_err *err);
void tk_norm_free(tk_norm *n);
/* Normalize s into out (out is reset first). */
rf_status tk_norm_apply(const tk_norm *n, tk_match *m, const char *s, size_t len, tk_buf *out, rf_err *err);

/* ------------------------------------------------------------------ pre-tokenizers */

typedef enum tk_split_behavior {
    TK_SPLIT_REMOVED, TK_SPLIT_ISOLATED, TK_SPLIT_MERGED_PREV, TK_SPLIT_MERGED_NEXT, TK_SPLIT_CONTIGUOUS
} tk_split_behavior;

typedef enum tk_pre_kind {
    TK_PRE_SEQUENCE, TK_PRE_SPLIT, TK_PRE_BYTELEVEL, TK_PRE_METASPACE
} tk_pre_kind;

enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };

typedef struct tk_pre {
    tk_pre_kind kind;
    struct tk_pre **kids;
    size_t nkids;
    tk_regex re;                /* Split pattern; ByteLevel's GPT-2 pattern when use_regex */
    int has_re;
    tk_split_behavior behavior;
    int invert;
    int add_prefix_space;       /* ByteLevel */
    char repl[5];               /* Metaspace replacement (one UTF-8 character) */
    int repl_len;
    int prepend_scheme;
    int split;
} tk_pre;

rf_status tk_pre_parse(json_t *j, tk_pre **out, rf_err *err);
void tk_pre_free(tk_pre *p);
/* Split every piece of in into out (out is cleared first). */
rf_status tk_pre_apply(const tk_pre *p, tk_match *m, const tk_pieces *in, tk_pieces *out, tk_segs *segs,
                       rf_err *err);

/* GPT-2's byte <-> printable character map. */
typedef struct tk_bytemap {
    char utf8[256][3];
    uint8_t len[256];
    int16_t rev[324]; /* code point -> byte, -1 when not in the map */
} tk_bytemap;
const tk_bytemap *tk_bytemap_get(void);

/* ------------------------------------------------------------------ BPE model */

typedef struct tk_bpe tk_bpe;
/* vocab/merges from the "model" object. Token strings are copied into the model. */
rf_status tk_bpe_parse(json_t *model, tk_bpe **out, rf_err *err);
void tk_bpe_free(tk_bpe *b);
/* Highest id in the model vocabulary + 1. */
int32_t tk_bpe_size(const tk_bpe *b);
/* Token string of an id of the model vocabulary, NULL if none. */
const char *tk_bpe_piece(const tk_bpe *b, int32_t id, size_t *len);
int32_t tk_bpe_lookup(const tk_bpe *b, const char *s, size_t len);

/* Per-call BPE work space. */
typedef struct tk_bpe_work tk_bpe_work;
tk_bpe_work *tk_bpe_work_new(void);
void tk_bpe_work_free(tk_bpe_work *w);
/* Append the ids of one pre-tokenized piece to *ids (grown with realloc). */
rf_status tk_bpe_encode(tk_bpe *b, tk_bpe_work *w, const char *s, size_t len, int32_t **ids, uint64_t *n,
                        uint64_t *cap, rf_err *err);

/* ------------------------------------------------------------------ decoders */

typedef enum tk_dec_kind {
    TK_DEC_SEQUENCE, TK_DEC_BYTELEVEL, TK_DEC_REPLACE, TK_DEC_BYTEFALLBACK, TK_DEC_FUSE, TK_DEC_STRIP,
    TK_DEC_METASPACE
} tk_dec_kind;

typedef struct tk_dec {
    tk_dec_kind kind;
    struct tk_dec **kids;
    size_t nkids;
    char *pat, *content; /* Replace (literal pattern); Strip content */
    size_t pat_len, content_len;
    int start, stop;     /* Strip */
    char repl[5];        /* Metaspace */
    int repl_len;
    int strip_first;     /* Metaspace: prepend scheme is not "never" */
} tk_dec;

rf_status tk_dec_parse(json_t *j, tk_dec **out, rf_err *err);
void tk_dec_free(tk_dec *d);
/* Decode a list of token strings (pieces) into one string in out. dec NULL: HF joins with " ". */
rf_status tk_dec_apply(const tk_dec *d, tk_pieces *toks, tk_buf *out, rf_err *err);

/* ------------------------------------------------------------------ JSON helpers */

/* String member or NULL. */
const char *tk_json_str(json_t *o, const char *key);
/* Boolean member (JSON true/false), def when absent or null; -1 when of another type. */
int tk_json_bool(json_t *o, const char *key, int def);

#endif
