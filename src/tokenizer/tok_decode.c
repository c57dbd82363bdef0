/* Tokenizer decoders: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence.
 * Each works on a list of token strings, as HF's decode_chain does. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

void tk_dec_free(tk_dec *d)
{
    if (!d) return;
    for (size_t i = 0; i < d->nkids; i++) tk_dec_free(d->kids[i]);
    free(d->kids);
    free(d->pat);
    free(d->content);
    free(d);
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static rf_status one_char(const char *s, const char *what, char out[5], int *len, rf_err *err)
{
    size_t l = s ? strlen(s) : 0;
    int n = s ? tk_utf8_len((const unsigned char *)s, l) : 0;
    if (!n || (size_t)n != l) return rf_err_set(err, RF_ERR_FORMAT, "%s must be one character", what);
    memcpy(out, s, l);
    out[l] = 0;
    *len = n;
    return RF_OK;
}

static rf_status parse_kind(json_t *j, tk_dec *d, const char *type, rf_err *err)
{
    if (!strcmp(type, "Sequence")) {
        d->kind = TK_DEC_SEQUENCE;
        json_t *arr = json_object_get(j, "decoders");
        if (!json_is_array(arr)) return rf_err_set(err, RF_ERR_FORMAT, "Sequence decoder without \"decoders\"");
        if (!(d->kids = calloc(json_array_size(arr) + 1, sizeof *d->kids))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            rf_status st = tk_dec_parse(json_array_get(arr, i), &d->kids[i], err);
            if (st) return st;
            d->nkids++;
        }
        return RF_OK;
    }
    if (!strcmp(type, "ByteLevel")) { d->kind = TK_DEC_BYTELEVEL; tk_bytemap_get(); return RF_OK; }
    if (!strcmp(type, "ByteFallback")) { d->kind = TK_DEC_BYTEFALLBACK; return RF_OK; }
    if (!strcmp(type, "Fuse")) { d->kind = TK_DEC_FUSE; return RF_OK; }
    if (!strcmp(type, "Replace")) {
        d->kind = TK_DEC_REPLACE;
        json_t *s = json_object_get(json_object_get(j, "pattern"), "String");
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(s) || json_string_length(s) == 0)
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "Replace decoder: only a non-empty String pattern is supported");
        if (!json_is_string(c)) return rf_err_set(err, RF_ERR_FORMAT, "Replace decoder without \"content\"");
        d->pat_len = json_string_length(s);
        d->content_len = json_string_length(c);
        d->pat = dup_n(json_string_value(s), d->pat_len);
        d->content = dup_n(json_string_value(c), d->content_len);
        return d->pat && d->content ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    if (!strcmp(type, "Strip")) {
        d->kind = TK_DEC_STRIP;
        json_t *st = json_object_get(j, "start"), *sp = json_object_get(j, "stop");
        if (!json_is_integer(st) || !json_is_integer(sp) || json_integer_value(st) < 0 || json_integer_value(sp) < 0 ||
            json_integer_value(st) > 1000000 || json_integer_value(sp) > 1000000)
            return rf_err_set(err, RF_ERR_FORMAT, "Strip decoder needs integer start and stop");
        d->start = (int)json_integer_value(st);
        d->stop = (int)json_integer_value(sp);
        int n;
        rf_status r = one_char(tk_json_str(j, "content"), "Strip decoder content", d->repl, &n, err);
        d->repl_len = n;
        return r;
    }
    if (!strcmp(type, "Metaspace")) {
        d->kind = TK_DEC_METASPACE;
        rf_status r = one_char(tk_json_str(j, "replacement"), "Metaspace decoder replacement", d->repl, &d->repl_len, err);
        if (r) return r;
        const char *scheme = tk_json_str(j, "prepend_scheme");
        if (scheme) d->strip_first = strcmp(scheme, "never") != 0;
        else {
            d->strip_first = tk_json_bool(j, "add_prefix_space", 1);
            if (d->strip_first < 0) return rf_err_set(err, RF_ERR_FORMAT, "Metaspace add_prefix_space must be a boolean");
        }
        return RF_OK;
    }
    return rf_err_set(err, RF_ERR_UNSUPPORTED, "unsupported decoder type \"%s\"", type);
}

rf_status tk_dec_parse(json_t *j, tk_dec **out, rf_err *err)
{
    *out = NULL;
    const char *type = tk_json_str(j, "type");
    if (!type) return rf_err_set(err, RF_ERR_FORMAT, "decoder without a \"type\"");
    tk_dec *d = calloc(1, sizeof *d);
    if (!d) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status st = parse_kind(j, d, type, err);
    if (st) {
        tk_dec_free(d);
        return st;
    }
    *out = d;
    return RF_OK;
}

/* ------------------------------------------------------------------ applying */

static const char replacement_char[] = "\xEF\xBF\xBD";

/* Rust's String::from_utf8_lossy: one U+FFFD per maximal invalid subsequence. */
static int put_lossy(tk_buf *out, const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        int n = tk_utf8_len(s + i, len - i);
        if (n) {
            if (!tk_buf_put(out, s + i, (size_t)n)) return 0;
            i += (size_t)n;
            continue;
        }
        unsigned c = s[i];
        size_t skip = 1;
        unsigned lo = 0x80, hi = 0xBF;
        int need = 0;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        for (int k = 0; k < need && i + skip < len; k++) {
            unsigned x = s[i + skip];
            if (k == 0 ? (x < lo || x > hi) : ((x & 0xC0) != 0x80)) break;
            skip++;
        }
        if (!tk_buf_put(out, replacement_char, 3)) return 0;
        i += skip;
    }
    return 1;
}

static rf_status nomem(rf_err *err) { return rf_err_set(err, RF_ERR_NOMEM, "out of memory while decoding"); }

#define PIECE(t, i) ((t)->text.p + (t)->v[i].off)

static rf_status dec_bytelevel(const tk_pieces *in, tk_pieces *out, rf_err *err)
{
    const tk_bytemap *bm = tk_bytemap_get();
    tk_buf raw = {0};
    for (size_t i = 0; i < in->n; i++) {
        const unsigned char *s = (const unsigned char *)PIECE(in, i);
        size_t len = in->v[i].len, mark = raw.n;
        int mapped = 1;
        for (size_t k = 0; k < len;) {
            int n = tk_utf8_len(s + k, len - k);
            uint32_t cp = n ? tk_utf8_decode(s + k, n) : 0xFFFFFFFF;
            if (!n || cp >= 324 || bm->rev[cp] < 0) { mapped = 0; break; }
            unsigned char b = (unsigned char)bm->rev[cp];
            if (!tk_buf_put(&raw, &b, 1)) goto oom;
            k += (size_t)n;
        }
        if (!mapped) { /* HF keeps such a token's own bytes */
            raw.n = mark;
            if (!tk_buf_put(&raw, s, len)) goto oom;
        }
    }
    tk_buf txt = {0};
    int ok = put_lossy(&txt, (const unsigned char *)raw.p, raw.n) && tk_pieces_add(out, txt.p ? txt.p : "", txt.n, 0);
    tk_buf_free(&txt);
    tk_buf_free(&raw);
    return ok ? RF_OK : nomem(err);
oom:
    tk_buf_free(&raw);
    return nomem(err);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int flush_bytes(tk_pieces *out, tk_buf *bytes)
{
    if (!bytes->n) return 1;
    int ok = 1;
    if (tk_utf8_validate(bytes->p, bytes->n) == bytes->n) ok = tk_pieces_add(out, bytes->p, bytes->n, 0);
    else
        for (size_t k = 0; ok && k < bytes->n; k++) ok = tk_pieces_add(out, replacement_char, 3, 0);
    bytes->n = 0;
    return ok;
}

static rf_status dec_bytefallback(const tk_pieces *in, tk_pieces *out, rf_err *err)
{
    tk_buf bytes = {0};
    int ok = 1;
    for (size_t i = 0; ok && i < in->n; i++) {
        const char *s = PIECE(in, i);
        if (in->v[i].len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            unsigned char b = (unsigned char)(hexval(s[3]) * 16 + hexval(s[4]));
            ok = tk_buf_put(&bytes, &b, 1);
            continue;
        }
        ok = flush_bytes(out, &bytes) && tk_pieces_add(out, s, in->v[i].len, 0);
    }
    ok = ok && flush_bytes(out, &bytes);
    tk_buf_free(&bytes);
    return ok ? RF_OK : nomem(err);
}

static rf_status dec_replace(const tk_dec *d, const tk_pieces *in, tk_pieces *out, rf_err *err)
{
    tk_buf t = {0};
    int ok = 1;
    for (size_t i = 0; ok && i < in->n; i++) {
        const char *s = PIECE(in, i);
        size_t len = in->v[i].len;
        t.n = 0;
        for (size_t k = 0; ok && k < len;) {
            if (len - k >= d->pat_len && !memcmp(s + k, d->pat, d->pat_len)) {
                ok = tk_buf_put(&t, d->content, d->content_len);
                k += d->pat_len;
            } else ok = tk_buf_put(&t, s + k++, 1);
        }
        ok = ok && tk_pieces_add(out, t.p ? t.p : "", t.n, 0);
    }
    tk_buf_free(&t);
    return ok ? RF_OK : nomem(err);
}

/* HF's Strip: cut up to start leading / stop trailing copies of the content character; it then
 * keeps (byte length - cuts) characters, which only differs from a plain cut on multi-byte text. */
static rf_status dec_strip(const tk_dec *d, const tk_pieces *in, tk_pieces *out, rf_err *err)
{
    size_t cl = (size_t)d->repl_len;
    for (size_t i = 0; i < in->n; i++) {
        const unsigned char *s = (const unsigned char *)PIECE(in, i);
        size_t len = in->v[i].len, a = 0, b = len, start_cut = 0, stop_cut = 0, nchars = 0;
        while (start_cut < (size_t)d->start && len - a >= cl && !memcmp(s + a, d->repl, cl)) { a += cl; start_cut++; }
        size_t e = len;
        while (stop_cut < (size_t)d->stop && e >= cl && !memcmp(s + e - cl, d->repl, cl)) { e -= cl; stop_cut++; }
        size_t keep = len >= start_cut + stop_cut ? len - start_cut - stop_cut : 0;
        for (b = a; b < len && nchars < keep; nchars++) {
            int n = tk_utf8_len(s + b, len - b);
            b += n ? (size_t)n : 1;
        }
        if (!tk_pieces_add(out, (const char *)s + a, b - a, 0)) return nomem(err);
    }
    return RF_OK;
}

static rf_status dec_metaspace(const tk_dec *d, const tk_pieces *in, tk_pieces *out, rf_err *err)
{
    tk_buf t = {0};
    size_t rl = (size_t)d->repl_len;
    int ok = 1;
    for (size_t i = 0; ok && i < in->n; i++) {
        const char *s = PIECE(in, i);
        size_t len = in->v[i].len;
        t.n = 0;
        for (size_t k = 0; ok && k < len;) {
            if (len - k >= rl && !memcmp(s + k, d->repl, rl)) {
                if (!(i == 0 && d->strip_first)) ok = tk_buf_put(&t, " ", 1);
                k += rl;
            } else ok = tk_buf_put(&t, s + k++, 1);
        }
        ok = ok && tk_pieces_add(out, t.p ? t.p : "", t.n, 0);
    }
    tk_buf_free(&t);
    return ok ? RF_OK : nomem(err);
}

static rf_status fuse(const tk_pieces *in, tk_pieces *out, const char *sep, rf_err *err)
{
    tk_buf t = {0};
    int ok = tk_buf_reserve(&t, 0);
    for (size_t i = 0; ok && i < in->n; i++) {
        if (i && sep) ok = tk_buf_put(&t, sep, strlen(sep));
        ok = ok && tk_buf_put(&t, PIECE(in, i), in->v[i].len);
    }
    ok = ok && tk_pieces_add(out, t.p, t.n, 0);
    tk_buf_free(&t);
    return ok ? RF_OK : nomem(err);
}

static rf_status apply_chain(const tk_dec *d, tk_pieces *toks, rf_err *err)
{
    if (d->kind == TK_DEC_SEQUENCE) {
        for (size_t i = 0; i < d->nkids; i++) {
            rf_status st = apply_chain(d->kids[i], toks, err);
            if (st) return st;
        }
        return RF_OK;
    }
    tk_pieces out = {0};
    rf_status st;
    switch (d->kind) {
    case TK_DEC_BYTELEVEL: st = dec_bytelevel(toks, &out, err); break;
    case TK_DEC_BYTEFALLBACK: st = dec_bytefallback(toks, &out, err); break;
    case TK_DEC_REPLACE: st = dec_replace(d, toks, &out, err); break;
    case TK_DEC_STRIP: st = dec_strip(d, toks, &out, err); break;
    case TK_DEC_METASPACE: st = dec_metaspace(d, toks, &out, err); break;
    case TK_DEC_FUSE: st = fuse(toks, &out, NULL, err); break;
    default: st = rf_err_set(err, RF_ERR_INTERNAL, "unknown decoder kind");
    }
    if (st) {
        tk_pieces_free(&out);
        return st;
    }
    tk_pieces_free(toks);
    *toks = out;
    return RF_OK;
}

rf_status tk_dec_apply(const tk_dec *d, tk_pieces *toks, tk_buf *out, rf_err *err)
{
    out->n = 0;
    if (!tk_buf_reserve(out, 0)) return nomem(err);
    out->p[0] = 0;
    if (!d) { /* HF without a decoder joins the tokens with spaces */
        tk_pieces j = {0};
        rf_status st = fuse(toks, &j, " ", err);
        if (!st && !tk_buf_put(out, j.text.p, j.text.n)) st = nomem(err);
        tk_pieces_free(&j);
        return st;
    }
    rf_status st = apply_chain(d, toks, err);
    for (size_t i = 0; !st && i < toks->n; i++)
        if (!tk_buf_put(out, PIECE(toks, i), toks->v[i].len)) st = nomem(err);
    return st;
}
