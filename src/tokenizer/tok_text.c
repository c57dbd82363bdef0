/* Tokenizer text plumbing: buffers, UTF-8, PCRE2 regex splitting, JSON accessors. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

int tk_buf_reserve(tk_buf *b, size_t extra)
{
    if (b->cap - b->n >= extra && b->p) return 1;
    size_t need = b->n + extra + 1;
    if (need < b->n) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return 0;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap - 1; /* one byte kept for a terminating NUL */
    return 1;
}

int tk_buf_put(tk_buf *b, const void *s, size_t n)
{
    if (!tk_buf_reserve(b, n)) return 0;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 1;
}

void tk_buf_free(tk_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int tk_pieces_add(tk_pieces *p, const char *s, size_t len, int at_start)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        tk_span *v = realloc(p->v, cap * sizeof *v);
        if (!v) return 0;
        p->v = v;
        p->cap = cap;
    }
    size_t off = p->text.n;
    if (!tk_buf_put(&p->text, s, len)) return 0;
    p->v[p->n++] = (tk_span){off, len, at_start};
    return 1;
}

void tk_pieces_clear(tk_pieces *p)
{
    p->n = 0;
    p->text.n = 0;
}

void tk_pieces_free(tk_pieces *p)
{
    tk_buf_free(&p->text);
    free(p->v);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------------ UTF-8 */

int tk_utf8_len(const unsigned char *s, size_t avail)
{
    if (!avail) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (avail < (size_t)n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

uint32_t tk_utf8_decode(const unsigned char *s, int n)
{
    switch (n) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
               (s[3] & 0x3F);
    }
}

int tk_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tk_utf8_validate(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) { i++; continue; }
        int n = tk_utf8_len(u + i, len - i);
        if (!n) return i;
        i += (size_t)n;
    }
    return len;
}

int tk_is_whitespace(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ------------------------------------------------------------------ regex */

/* PCRE2's \s also takes U+180E; Oniguruma and Rust follow the White_Space property. */
static int translate_pattern(const char *pat, size_t len, tk_buf *out)
{
    for (size_t i = 0; i < len; i++) {
        if (pat[i] == '\\' && i + 1 < len) {
            const char *rep = NULL;
            if (pat[i + 1] == 's') rep = "\\p{White_Space}";
            else if (pat[i + 1] == 'S') rep = "\\P{White_Space}";
            if (rep ? !tk_buf_put(out, rep, strlen(rep)) : !tk_buf_put(out, pat + i, 2)) return 0;
            i++;
            continue;
        }
        if (!tk_buf_put(out, pat + i, 1)) return 0;
    }
    return 1;
}

rf_status tk_regex_compile(tk_regex *re, const char *pat, size_t len, int literal, rf_err *err)
{
    memset(re, 0, sizeof *re);
    tk_buf b = {0};
    int ok = literal ? tk_buf_put(&b, pat, len) : translate_pattern(pat, len, &b);
    if (!ok || !tk_buf_reserve(&b, 0)) {
        tk_buf_free(&b);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory compiling a regex");
    }
    int code;
    PCRE2_SIZE eoff;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    re->code = pcre2_compile((PCRE2_SPTR)b.p, b.n, opts, &code, &eoff, NULL);
    tk_buf_free(&b);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "regex /%.*s/ not supported: %s at offset %zu", (int)(len > 200 ? 200 : len),
                          pat, (const char *)msg, (size_t)eoff);
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return RF_OK;
}

void tk_regex_free(tk_regex *re)
{
    if (re->code) pcre2_code_free(re->code);
    re->code = NULL;
}

void tk_match_free(tk_match *m)
{
    if (m->md) pcre2_match_data_free(m->md);
    if (m->mctx) pcre2_match_context_free(m->mctx);
    if (m->stack) pcre2_jit_stack_free(m->stack);
    memset(m, 0, sizeof *m);
}

/* One pcre2_match; a JIT stack overflow retries with a larger stack. 1 match, 0 none. */
static rf_status match_at(const tk_regex *re, tk_match *m, const char *s, size_t len, size_t pos, size_t *ms,
                          size_t *me, int *found, rf_err *err)
{
    if (!m->md && !(m->md = pcre2_match_data_create(4, NULL)))
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory (regex match data)");
    for (size_t stack = 1u << 20;; stack *= 4) {
        int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, m->md, m->mctx);
        if (rc >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
            *ms = ov[0];
            *me = ov[1];
            *found = 1;
            return RF_OK;
        }
        if (rc == PCRE2_ERROR_NOMATCH) {
            *found = 0;
            return RF_OK;
        }
        if (rc != PCRE2_ERROR_JIT_STACKLIMIT || stack > (64u << 20)) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "regex matching failed: %s", (const char *)msg);
        }
        if (!m->mctx && !(m->mctx = pcre2_match_context_create(NULL)))
            return rf_err_set(err, RF_ERR_NOMEM, "out of memory (regex context)");
        if (m->stack) pcre2_jit_stack_free(m->stack);
        if (!(m->stack = pcre2_jit_stack_create(32 * 1024, stack, NULL)))
            return rf_err_set(err, RF_ERR_NOMEM, "out of memory (regex JIT stack)");
        pcre2_jit_stack_assign(m->mctx, NULL, m->stack);
    }
}

static int segs_push(tk_segs *o, size_t a, size_t b, int is_match)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 32;
        tk_seg *v = realloc(o->v, cap * sizeof *v);
        if (!v) return 0;
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = (tk_seg){a, b, is_match};
    return 1;
}

rf_status tk_regex_segments(const tk_regex *re, tk_match *m, const char *s, size_t len, tk_segs *out, rf_err *err)
{
    out->n = 0;
    if (!len) return segs_push(out, 0, 0, 0) ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    size_t pos = 0, prev = 0, last_end = (size_t)-1;
    while (pos <= len) {
        size_t ms, me;
        int found;
        rf_status st = match_at(re, m, s, len, pos, &ms, &me, &found, err);
        if (st) return st;
        if (!found) break;
        if (ms == me && me == last_end) {
            /* Oniguruma's iterator refuses an empty match right after the previous match */
            if (pos >= len) break;
            int n = tk_utf8_len((const unsigned char *)s + pos, len - pos);
            pos += n ? (size_t)n : 1;
            continue;
        }
        if (prev != ms && !segs_push(out, prev, ms, 0)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        if (!segs_push(out, ms, me, 1)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        prev = me;
        pos = me;
        last_end = me;
    }
    if (prev != len && !segs_push(out, prev, len, 0)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    return RF_OK;
}

/* ------------------------------------------------------------------ JSON */

/* HF pattern objects: {"String": "..."} or {"Regex": "..."}. */
rf_status tk_pattern_parse(json_t *pat, const char *what, tk_regex *re, char **lit, size_t *lit_len, rf_err *err)
{
    json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
    if (json_is_string(s)) {
        if (lit && json_string_length(s) > 0) {
            size_t n = json_string_length(s);
            if (!(*lit = malloc(n + 1))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            memcpy(*lit, json_string_value(s), n + 1);
            *lit_len = n;
            return RF_OK;
        }
        return tk_regex_compile(re, json_string_value(s), json_string_length(s), 1, err);
    }
    if (json_is_string(r)) return tk_regex_compile(re, json_string_value(r), json_string_length(r), 0, err);
    return rf_err_set(err, RF_ERR_FORMAT, "%s: pattern must be {\"String\": ...} or {\"Regex\": ...}", what);
}


const char *tk_json_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int tk_json_bool(json_t *o, const char *key, int def)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return def;
    if (json_is_boolean(v)) return json_is_true(v);
    return -1;
}
