/* Tokenizer normalizers: Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD, Lowercase, Strip. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

void tk_norm_free(tk_norm *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->nkids; i++) tk_norm_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n->lit);
    tk_regex_free(&n->re);
    free(n);
}

static char *dup_json_str(json_t *v, size_t *len)
{
    size_t n = json_string_length(v);
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, json_string_value(v), n);
    p[n] = 0;
    *len = n;
    return p;
}

rf_status tk_norm_parse(json_t *j, tk_norm **out, rf_err *err)
{
    *out = NULL;
    const char *type = tk_json_str(j, "type");
    if (!type) return rf_err_set(err, RF_ERR_FORMAT, "normalizer without a \"type\"");
    tk_norm *n = calloc(1, sizeof *n);
    if (!n) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status st = RF_OK;
    if (!strcmp(type, "Sequence")) {
        n->kind = TK_NORM_SEQUENCE;
        json_t *arr = json_object_get(j, "normalizers");
        if (!json_is_array(arr)) st = rf_err_set(err, RF_ERR_FORMAT, "Sequence normalizer without \"normalizers\"");
        else if (!(n->kids = calloc(json_array_size(arr) + 1, sizeof *n->kids))) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !st && i < json_array_size(arr); i++) {
            st = tk_norm_parse(json_array_get(arr, i), &n->kids[i], err);
            if (!st) n->nkids++;
        }
    } else if (!strcmp(type, "Prepend")) {
        n->kind = TK_NORM_PREPEND;
        json_t *p = json_object_get(j, "prepend");
        if (!json_is_string(p)) st = rf_err_set(err, RF_ERR_FORMAT, "Prepend normalizer without \"prepend\"");
        else if (!(n->str = dup_json_str(p, &n->str_len))) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    } else if (!strcmp(type, "Replace")) {
        n->kind = TK_NORM_REPLACE;
        json_t *c = json_object_get(j, "content");
        if (!json_is_string(c)) st = rf_err_set(err, RF_ERR_FORMAT, "Replace normalizer without \"content\"");
        else if (!(n->str = dup_json_str(c, &n->str_len))) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        else st = tk_pattern_parse(json_object_get(j, "pattern"), "Replace normalizer", &n->re, &n->lit, &n->lit_len, err);
    } else if (!strcmp(type, "NFC")) n->kind = TK_NORM_NFC;
    else if (!strcmp(type, "NFD")) n->kind = TK_NORM_NFD;
    else if (!strcmp(type, "NFKC")) n->kind = TK_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) n->kind = TK_NORM_NFKD;
    else if (!strcmp(type, "Lowercase")) n->kind = TK_NORM_LOWERCASE;
    else if (!strcmp(type, "Strip")) {
        n->kind = TK_NORM_STRIP;
        n->left = tk_json_bool(j, "strip_left", 1);
        n->right = tk_json_bool(j, "strip_right", 1);
        if (n->left < 0 || n->right < 0) st = rf_err_set(err, RF_ERR_FORMAT, "Strip normalizer: strip_left/strip_right must be booleans");
    } else {
        st = rf_err_set(err, RF_ERR_UNSUPPORTED, "unsupported normalizer type \"%s\"", type);
    }
    if (st) {
        tk_norm_free(n);
        return st;
    }
    *out = n;
    return RF_OK;
}

static rf_status nomem(rf_err *err) { return rf_err_set(err, RF_ERR_NOMEM, "out of memory while normalizing"); }

/* memmem is not POSIX. */
static const char *find_bytes(const char *s, size_t n, const char *pat, size_t plen)
{
    while (n >= plen) {
        const char *c = memchr(s, pat[0], n - plen + 1);
        if (!c) return NULL;
        if (!memcmp(c, pat, plen)) return c;
        n -= (size_t)(c - s) + 1;
        s = c + 1;
    }
    return NULL;
}

static rf_status replace_literal(const char *s, size_t len, const char *pat, size_t plen, const char *rep, size_t rlen,
                                 tk_buf *out)
{
    size_t i = 0;
    while (i < len) {
        const char *hit = find_bytes(s + i, len - i, pat, plen);
        size_t end = hit ? (size_t)(hit - s) : len;
        if (!tk_buf_put(out, s + i, end - i)) return RF_ERR_NOMEM;
        if (!hit) break;
        if (!tk_buf_put(out, rep, rlen)) return RF_ERR_NOMEM;
        i = end + plen;
    }
    return RF_OK;
}

static rf_status replace_regex(const tk_norm *n, tk_match *m, const char *s, size_t len, tk_buf *out, rf_err *err)
{
    tk_segs segs = {0};
    rf_status st = tk_regex_segments(&n->re, m, s, len, &segs, err);
    for (size_t i = 0; !st && i < segs.n; i++) {
        const tk_seg *g = &segs.v[i];
        int ok = g->is_match ? tk_buf_put(out, n->str, n->str_len) : tk_buf_put(out, s + g->start, g->end - g->start);
        if (!ok) st = nomem(err);
    }
    free(segs.v);
    return st;
}

static rf_status unicode_form(tk_norm_kind k, const char *s, size_t len, tk_buf *out, rf_err *err)
{
    int opts = UTF8PROC_STABLE;
    if (k == TK_NORM_NFC || k == TK_NORM_NFKC) opts |= UTF8PROC_COMPOSE;
    else opts |= UTF8PROC_DECOMPOSE;
    if (k == TK_NORM_NFKC || k == TK_NORM_NFKD) opts |= UTF8PROC_COMPAT;
    if (!len) return RF_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst, (utf8proc_option_t)opts);
    if (r < 0) {
        free(dst);
        return rf_err_set(err, r == UTF8PROC_ERROR_NOMEM ? RF_ERR_NOMEM : RF_ERR_INVALID, "unicode normalization failed: %s",
                          utf8proc_errmsg(r));
    }
    int ok = tk_buf_put(out, dst, (size_t)r);
    free(dst);
    return ok ? RF_OK : nomem(err);
}

static rf_status lowercase(const char *s, size_t len, tk_buf *out, rf_err *err)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        int n = tk_utf8_len(u + i, len - i);
        if (!n) return rf_err_set(err, RF_ERR_INVALID, "invalid UTF-8 while lowercasing");
        uint32_t cp = tk_utf8_decode(u + i, n);
        char enc[8];
        int k;
        if (cp == 0x130) { /* Rust's full mapping: I WITH DOT ABOVE -> i + COMBINING DOT ABOVE */
            memcpy(enc, "i\xCC\x87", 3);
            k = 3;
        } else k = tk_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc);
        if (!tk_buf_put(out, enc, (size_t)k)) return nomem(err);
        i += (size_t)n;
    }
    return RF_OK;
}

static rf_status strip(const tk_norm *n, const char *s, size_t len, tk_buf *out, rf_err *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, b = len;
    while (n->left && a < b) {
        int k = tk_utf8_len(u + a, b - a);
        if (!k || !tk_is_whitespace(tk_utf8_decode(u + a, k))) break;
        a += (size_t)k;
    }
    while (n->right && b > a) {
        size_t p = b - 1;
        while (p > a && (u[p] & 0xC0) == 0x80) p--;
        int k = tk_utf8_len(u + p, b - p);
        if (!k || !tk_is_whitespace(tk_utf8_decode(u + p, k))) break;
        b = p;
    }
    return tk_buf_put(out, s + a, b - a) ? RF_OK : nomem(err);
}

rf_status tk_norm_apply(const tk_norm *n, tk_match *m, const char *s, size_t len, tk_buf *out, rf_err *err)
{
    out->n = 0;
    if (!tk_buf_reserve(out, len)) return nomem(err);
    out->p[0] = 0;
    switch (n->kind) {
    case TK_NORM_SEQUENCE: {
        if (!tk_buf_put(out, s, len)) return nomem(err);
        tk_buf tmp = {0};
        rf_status st = RF_OK;
        for (size_t i = 0; !st && i < n->nkids; i++) {
            st = tk_norm_apply(n->kids[i], m, out->p, out->n, &tmp, err);
            if (!st) {
                tk_buf t = *out;
                *out = tmp;
                tmp = t;
            }
        }
        tk_buf_free(&tmp);
        return st;
    }
    case TK_NORM_PREPEND:
        if (len && !tk_buf_put(out, n->str, n->str_len)) return nomem(err);
        return tk_buf_put(out, s, len) ? RF_OK : nomem(err);
    case TK_NORM_REPLACE:
        if (n->lit)
            return replace_literal(s, len, n->lit, n->lit_len, n->str, n->str_len, out) ? nomem(err) : RF_OK;
        return replace_regex(n, m, s, len, out, err);
    case TK_NORM_NFC:
    case TK_NORM_NFD:
    case TK_NORM_NFKC:
    case TK_NORM_NFKD: return unicode_form(n->kind, s, len, out, err);
    case TK_NORM_LOWERCASE: return lowercase(s, len, out, err);
    case TK_NORM_STRIP: return strip(n, s, len, out, err);
    }
    return rf_err_set(err, RF_ERR_INTERNAL, "unknown normalizer kind");
}
