/* The one JSON loader of ramfit's readers (json_internal.h): bounded file reads, numbers
 * jansson cannot hold, range-checked integer fields. */
#include "io/json_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* End of the JSON number starting at S[I] (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), or I
 * when there is none; *FRAC is set when it has a fraction or exponent. */
static size_t number_end(const char *s, size_t i, size_t len, int *frac)
{
    size_t j = i;
    *frac = 0;
    if (j < len && s[j] == '-') j++;
    if (j >= len || s[j] < '0' || s[j] > '9') return i;
    if (s[j] == '0') j++;
    else
        while (j < len && s[j] >= '0' && s[j] <= '9') j++;
    if (j < len && s[j] == '.') {
        size_t k = j + 1;
        while (k < len && s[k] >= '0' && s[k] <= '9') k++;
        if (k == j + 1) return i; /* "1." is not JSON: jansson reports it */
        j = k, *frac = 1;
    }
    if (j < len && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < len && (s[k] == '+' || s[k] == '-')) k++;
        size_t d = k;
        while (k < len && s[k] >= '0' && s[k] <= '9') k++;
        if (k == d) return i;
        j = k, *frac = 1;
    }
    return j;
}

/* 1 if the integer literal S[0..n) (optional '-', no leading zeros) is outside int64. */
static int int_overflows(const char *s, size_t n)
{
    int neg = s[0] == '-';
    const char *d = s + neg;
    size_t nd = n - (size_t)neg;
    const char *lim = neg ? "9223372036854775808" : "9223372036854775807";
    if (nd != 19) return nd > 19;
    return memcmp(d, lim, 19) > 0;
}

/* How the number S[0..n) must be rewritten for jansson: 0 not at all; 1 an integer beyond int64
 * that a double holds: append "e0" (strtod then rounds the exact digits); 2 beyond double's range
 * (an overflowing real or an integer of 310+ digits): "1e308" / "-1e308", padded with spaces to
 * the same length. -1: out of memory. */
static int rewrite_kind(const char *s, size_t n, int frac)
{
    if (!frac && !int_overflows(s, n)) return 0;
    char small[64], *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    double v = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (isinf(v)) return 2;
    return frac ? 0 : 1;
}

void rf_json_bignums_free(rf_json_bignums *big)
{
    if (!big) return;
    for (size_t i = 0; i < big->n; i++) free(big->v[i].literal);
    free(big->v);
    big->v = NULL;
    big->n = 0;
}

/* TEXT with every number jansson refuses rewritten (rewrite_kind); *COPY is NULL when nothing
 * changed. *GROWN gets the offsets in the copy where two bytes were inserted (error columns are
 * corrected by them), *NGROWN their number. */
typedef struct rewrite {
    char *copy;
    size_t len, cap;
    size_t *grown;
    size_t ngrown;
} rewrite;

static int rw_put(rewrite *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t nc = r->cap ? r->cap : 256;
        while (r->len + n + 1 > nc) nc *= 2;
        char *b = realloc(r->copy, nc);
        if (!b) return 0;
        r->copy = b, r->cap = nc;
    }
    memcpy(r->copy + r->len, p, n);
    r->len += n;
    r->copy[r->len] = '\0';
    return 1;
}

static rf_status rewrite_numbers(const char *text, size_t len, const char *label, rewrite *r, rf_json_bignums *big,
                                 rf_err *err)
{
    int in_str = 0;
    uint64_t number = 0;
    size_t done = 0; /* text[0..done) is in the copy (when there is one) */
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') { in_str = 1; continue; }
        if (c != '-' && (c < '0' || c > '9')) continue;
        int frac;
        size_t e = number_end(text, i, len, &frac);
        if (e == i) continue; /* not a number: jansson reports it */
        int k = rewrite_kind(text + i, e - i, frac);
        if (k < 0) return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", label);
        if (k > 0) {
            int ok = rw_put(r, text + done, i - done);
            if (k == 1) {
                ok = ok && rw_put(r, text + i, e - i) && rw_put(r, "e0", 2);
                size_t *g = ok ? realloc(r->grown, (r->ngrown + 1) * sizeof *g) : NULL;
                if (g) r->grown = g, g[r->ngrown++] = r->len;
                ok = g != NULL;
            } else {
                const char *rep = text[i] == '-' ? "-1e308" : "1e308"; /* an overflow has >= 5 (6) characters */
                ok = ok && rw_put(r, rep, strlen(rep));
                for (size_t p = strlen(rep); ok && p < e - i; p++) ok = rw_put(r, " ", 1);
            }
            if (!ok) return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", label);
            done = e;
            if (big) {
                rf_json_bignum *nv = realloc(big->v, (big->n + 1) * sizeof *nv);
                char *lit = nv ? strndup(text + i, e - i) : NULL;
                if (nv) big->v = nv;
                if (!lit) return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", label);
                big->v[big->n++] = (rf_json_bignum){number, lit};
            }
        }
        number++;
        i = e - 1;
    }
    if (r->copy && !rw_put(r, text + done, len - done)) return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", label);
    return RF_OK;
}

rf_status rf_json_parse_keep(const char *text, size_t len, const char *label, size_t flags, json_t **out,
                             rf_json_bignums *big, rf_err *err)
{
    *out = NULL;
    if (big) big->v = NULL, big->n = 0;
    if (!label) label = "JSON";
    rewrite r = {0};
    rf_status s = rewrite_numbers(text, len, label, &r, big, err);
    json_error_t je;
    json_t *root = s ? NULL : json_loadb(r.copy ? r.copy : text, r.copy ? r.len : len, flags, &je);
    if (!s && !root) {
        /* the column as in the file: less the bytes added on the error's line before it */
        int col = je.column;
        for (size_t k = r.ngrown; k-- > 0 && je.position >= 0 && r.grown[k] <= (size_t)je.position;) {
            if (memchr(r.copy + r.grown[k], '\n', (size_t)je.position - r.grown[k])) break;
            col -= 2;
        }
        s = rf_err_set(err, RF_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", label, je.line, col, je.text);
    }
    free(r.copy);
    free(r.grown);
    if (s) {
        rf_json_bignums_free(big);
        return s;
    }
    *out = root;
    return RF_OK;
}

rf_status rf_json_parse(const char *text, size_t len, const char *label, size_t flags, json_t **out, rf_err *err)
{
    return rf_json_parse_keep(text, len, label, flags, out, NULL, err);
}

rf_status rf_json_read_text(const char *path, uint64_t max, char **text, size_t *len, rf_err *err)
{
    return rf_read_file_ex(path, max, 1, text, len, err);
}

rf_status rf_json_load(const char *path, uint64_t max, size_t flags, json_t **out, rf_err *err)
{
    *out = NULL;
    char *text;
    size_t len;
    rf_status s = rf_json_read_text(path, max, &text, &len, err);
    if (s) return s;
    s = rf_json_parse(text, len, path, flags, out, err);
    free(text);
    return s;
}

int rf_json_int(const json_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < lo || x > hi) return 1;
        *out = (int64_t)x;
        return 0;
    }
    if (json_is_real(v)) {
        double x = json_real_value(v);
        /* an integer literal beyond int64 arrives as an integral real of at least 2^63 */
        if (x == floor(x) && fabs(x) >= 9223372036854775808.0) return 1;
    }
    return -1;
}

int rf_json_u64(const json_t *v, uint64_t hi, uint64_t *out)
{
    int64_t x;
    int r = rf_json_int(v, 0, hi > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)hi, &x);
    if (r == 0) *out = (uint64_t)x;
    return r;
}
