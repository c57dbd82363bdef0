/* libFuzzer target for the tokenizer. The first input byte picks the mode:
 *   0: the rest is a tokenizer.json; when it loads, encode a fixed text and decode the ids;
 *   1: encode the rest with a byte-level BPE (Qwen2 regex + ByteLevel, added tokens);
 *   2: encode the rest with a SentencePiece-style BPE (Prepend/Replace, byte fallback);
 *   3: the rest is a list of 16-bit ids to decode (whole and streamed) with both.
 * Invalid UTF-8 input must give RF_ERR_INVALID; valid input must round-trip exactly through
 * both built-in tokenizers (they are lossless). */
#include "ramfit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf { char *p; size_t n, cap; } sbuf;

static void put(sbuf *b, const char *s)
{
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) {
        b->cap = (b->n + k + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}

static int utf8(unsigned cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
    return 3;
}

static rf_tok *byte_level_tok(void)
{
    sbuf b = {0};
    char e[64];
    put(&b, "{\"added_tokens\": [{\"id\": 300, \"content\": \"<|end|>\", \"special\": true, \"normalized\": false},"
            "{\"id\": 301, \"content\": \"<x>\", \"lstrip\": true, \"rstrip\": true, \"normalized\": true}],"
            "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
            "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|"
            "\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, \"behavior\": \"Isolated\", \"invert\": false},"
            "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},"
            "\"decoder\": {\"type\": \"ByteLevel\"}, \"post_processor\": {\"type\": \"ByteLevel\"},"
            "\"model\": {\"type\": \"BPE\", \"merges\": [\"\\u0120 t\", \"h e\", \"\\u0120t he\", \"e r\"], \"vocab\": {");
    int next = 256;
    for (int c = 0; c < 256; c++) {
        int printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174;
        char u[4] = {0};
        utf8((unsigned)(printable ? c : next++), u);
        if (c == '"' || c == '\\') snprintf(e, sizeof e, "\"\\%c\": %d, ", c, c);
        else snprintf(e, sizeof e, "\"%s\": %d, ", u, c);
        put(&b, e);
    }
    put(&b, "\"\\u0120t\": 256, \"he\": 257, \"\\u0120the\": 258, \"er\": 259}}}");
    rf_tok *t = NULL;
    rf_err err;
    if (rf_tok_load_json(b.p, b.n, NULL, 0, &t, &err)) {
        fprintf(stderr, "byte-level tokenizer: %s\n", err.msg);
        abort();
    }
    free(b.p);
    return t;
}

static rf_tok *metaspace_tok(void)
{
    sbuf b = {0};
    char e[64];
    put(&b, "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true, \"normalized\": false},"
            "{\"id\": 1, \"content\": \"<s>\", \"special\": true, \"normalized\": false}],"
            "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},"
            "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},"
            "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"},"
            "\"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \","
            "\"start\": 1, \"stop\": 0}]},"
            "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
            "{\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1]}}},"
            "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, \"byte_fallback\": true,"
            "\"merges\": [\"\\u2581 t\", \"h e\", \"\\u2581t he\"], \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, ");
    for (int c = 0; c < 256; c++) {
        snprintf(e, sizeof e, "\"<0x%02X>\": %d, ", c, 3 + c);
        put(&b, e);
    }
    put(&b, "\"\\u2581\": 259, \"t\": 260, \"h\": 261, \"e\": 262, \"\\u2581t\": 263, \"he\": 264, \"\\u2581the\": 265, \"a\": 266}}}");
    rf_tok *t = NULL;
    rf_err err;
    if (rf_tok_load_json(b.p, b.n, NULL, 0, &t, &err)) {
        fprintf(stderr, "metaspace tokenizer: %s\n", err.msg);
        abort();
    }
    free(b.p);
    return t;
}

static rf_tok *g_bl, *g_ms;

static void roundtrip(rf_tok *t, const uint8_t *d, size_t n)
{
    rf_err err;
    int32_t *ids;
    uint64_t k;
    rf_status st = rf_tok_encode(t, (const char *)d, n, 0, &ids, &k, &err);
    if (st == RF_ERR_INVALID) return; /* invalid UTF-8 */
    if (st) abort();
    char *text;
    uint64_t len;
    if (rf_tok_decode(t, ids, k, &text, &len, &err)) abort();
    /* added tokens (lstrip/rstrip, a fresh U+2581 after them) and a literal U+2581 (decoded as a
     * space) are the known lossy cases; everything else must come back byte for byte */
    int lossy = memchr(d, '<', n) != NULL;
    for (size_t i = 0; i + 3 <= n && !lossy; i++) lossy = d[i] == 0xE2 && d[i + 1] == 0x96 && d[i + 2] == 0x81;
    if (!lossy && (len != n || memcmp(text, d, n))) abort();
    free(text);
    free(ids);
}

static void decode_ids(rf_tok *t, const uint8_t *d, size_t n)
{
    size_t k = n / 2;
    int32_t *ids = malloc((k + 1) * sizeof *ids);
    for (size_t i = 0; i < k; i++) ids[i] = (int32_t)((d[2 * i] | (d[2 * i + 1] << 8)) % 320);
    rf_err err;
    char *text;
    uint64_t len;
    if (rf_tok_decode(t, ids, k, &text, &len, &err) == RF_OK) free(text);
    rf_tok_stream *s;
    if (rf_tok_stream_create(t, &s, &err) == RF_OK) {
        for (size_t i = 0; i < k; i++) {
            const char *p;
            uint64_t pl;
            if (rf_tok_stream_push(s, ids[i], &p, &pl, &err)) break;
        }
        rf_tok_stream_free(s);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_bl) {
        g_bl = byte_level_tok();
        g_ms = metaspace_tok();
    }
    if (size < 1) return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] & 3) {
    case 0: {
        rf_tok *t;
        rf_err err;
        if (rf_tok_load_json((const char *)d, n, NULL, 0, &t, &err) == RF_OK) {
            int32_t *ids;
            uint64_t k;
            const char *s = "Hello  world\n\n 123 <s> \xC3\xA9\xF0\x9F\x98\x80";
            if (rf_tok_encode(t, s, strlen(s), 1, &ids, &k, &err) == RF_OK) {
                char *text;
                if (rf_tok_decode(t, ids, k, &text, NULL, &err) == RF_OK) free(text);
                free(ids);
            }
            rf_tok_free(t);
        }
        break;
    }
    case 1: roundtrip(g_bl, d, n); break;
    case 2: roundtrip(g_ms, d, n); break;
    default:
        decode_ids(g_bl, d, n);
        decode_ids(g_ms, d, n);
    }
    return 0;
}
