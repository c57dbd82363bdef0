#include "common/internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* P..E is digits[.digits]: *out = floor(value * M) exactly, since a double product is not
 * ("2.01kB" gave 2009 B, "9007199254740993" gave ...992). 0: done; 1: too large; 2: a fraction
 * of a byte (M == 1); -1: another form (an exponent), left to strtod. */
static int exact_decimal(const char *p, const char *e, uint64_t m, uint64_t *out)
{
    uint64_t ip = 0, fp = 0, scale = 1;
    const char *c = p;
    for (; c < e && isdigit((unsigned char)*c); c++)
        if (!rf_mul_u64(ip, 10, &ip) || !rf_add_u64(ip, (uint64_t)(*c - '0'), &ip)) return 1;
    if (c < e && *c == '.')
        for (c++; c < e && isdigit((unsigned char)*c); c++)
            if (scale <= UINT64_MAX / 10) { /* 19 digits: beyond them < 1e-7 byte even for TiB */
                fp = fp * 10 + (uint64_t)(*c - '0');
                scale *= 10;
            }
    if (c != e) return -1;
    if (m == 1 && fp) return 2;
    uint64_t b, frac = (uint64_t)((unsigned __int128)fp * m / scale);
    if (!rf_mul_u64(ip, m, &b) || !rf_add_u64(b, frac, &b)) return 1;
    *out = b;
    return 0;
}

rf_status rf_parse_size(const char *text, uint64_t *out, rf_err *err)
{
    if (!text || !*text) return rf_err_set(err, RF_ERR_INVALID, "empty size");
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    if (!isdigit((unsigned char)*p) && *p != '.')
        return rf_err_set(err, RF_ERR_INVALID, "bad size '%s': expected a number such as 24GB, 16GiB or 1000000", text);
    char *end;
    double v = strtod(p, &end);
    if (end == p || !isfinite(v) || v < 0)
        return rf_err_set(err, RF_ERR_INVALID, "bad size '%s'", text);
    const char *num_end = end;
    while (isspace((unsigned char)*end)) end++;
    static const struct { const char *u; uint64_t m; } units[] = {
        {"", 1}, {"b", 1},
        {"k", 1000}, {"kb", 1000}, {"m", 1000000}, {"mb", 1000000}, {"g", 1000000000}, {"gb", 1000000000},
        {"t", 1000000000000}, {"tb", 1000000000000},
        {"kib", 1ull << 10}, {"mib", 1ull << 20}, {"gib", 1ull << 30}, {"tib", 1ull << 40},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].u) == 0) {
            uint64_t exact;
            int r = exact_decimal(p, num_end, units[i].m, &exact);
            if (r == 0) {
                *out = exact;
                return RF_OK;
            }
            if (r == 1) return rf_err_set(err, RF_ERR_INVALID, "size '%s' is too large", text);
            double b = v * (double)units[i].m;
            if (r == 2 || (units[i].m == 1 && b != floor(b)))
                return rf_err_set(err, RF_ERR_INVALID, "bad size '%s': a byte count must be whole", text);
            if (b >= 18446744073709551616.0)
                return rf_err_set(err, RF_ERR_INVALID, "size '%s' is too large", text);
            *out = (uint64_t)b; /* in [0, 2^64): defined, rounds down (llround overflowed from 2^63) */
            return RF_OK;
        }
    }
    return rf_err_set(err, RF_ERR_INVALID, "bad size '%s': unknown unit '%s' (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)", text, end);
}

void rf_format_size(uint64_t bytes, char *buf, size_t cap)
{
    static const char *u[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double v = (double)bytes;
    int i = 0;
    while (v >= 1000.0 && i < 5) { v /= 1000.0; i++; }
    if (i == 0) snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
    else snprintf(buf, cap, "%.2f %s", v, u[i]);
}

/* "256 MiB" for a power-of-two limit, else bytes. */
static void limit_text(uint64_t max, char *buf, size_t cap)
{
    if (max >= (1u << 20) && max % (1u << 20) == 0) snprintf(buf, cap, "%llu MiB", (unsigned long long)(max >> 20));
    else snprintf(buf, cap, "%llu bytes", (unsigned long long)max);
}

/* 1 when B[0..n) starts (after white space) with something other than '{' or '['; 0 when it
 * does, or is all white space so far. */
static int not_json_start(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') continue;
        return b[i] != '{' && b[i] != '[';
    }
    return 0;
}

rf_status rf_read_file(const char *path, uint64_t max, char **out, size_t *len, rf_err *err)
{
    return rf_read_file_ex(path, max, 0, out, len, err);
}

rf_status rf_read_file_ex(const char *path, uint64_t max, int json, char **out, size_t *len, rf_err *err)
{
    *out = NULL;
    *len = 0;
    if (!path) return rf_err_set(err, RF_ERR_INVALID, "no file name");
    char lim[32];
    limit_text(max, lim, sizeof lim);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no such file", path);
        return rf_err_errno(err, e, "%s: cannot open", path);
    }
    struct stat sb;
    rf_status s = RF_OK;
    if (fstat(fd, &sb) != 0) s = rf_err_errno(err, errno, "%s: cannot stat", path);
    else if (S_ISDIR(sb.st_mode)) s = rf_err_set(err, RF_ERR_INVALID, "%s is a directory, not a file", path);
    else if (json && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max) {
        char head[64];
        ssize_t r = pread(fd, head, sizeof head, 0);
        if (r > 0 && not_json_start(head, (size_t)r)) {
            int st = r >= 9 && head[8] == '{' && !head[5] && !head[6] && !head[7];
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON file%s", path, st ? " (a safetensors weight file?)" : "");
        }
    }
    if (!s && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max)
        s = rf_err_set(err, RF_ERR_FORMAT, "%s: %llu bytes, larger than the %s ramfit reads from such a file (a wrong file?)",
                       path, (unsigned long long)sb.st_size, lim);
    size_t cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size + 1 : 1 << 16, n = 0;
    char *buf = s ? NULL : malloc(cap);
    if (!s && !buf) s = rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", path);
    while (!s) {
        if (n + 1 >= cap) { /* keep room for the NUL */
            if ((uint64_t)n > max) {
                s = rf_err_set(err, RF_ERR_FORMAT, "%s: larger than the %s ramfit reads from such a file (a wrong file?)",
                               path, lim);
                break;
            }
            size_t nc = cap * 2;
            if ((uint64_t)nc > max + 2) nc = (size_t)max + 2; /* one byte past MAX shows it is larger */
            char *nb = realloc(buf, nc);
            if (!nb) { s = rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", path); break; }
            buf = nb, cap = nc;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) s = rf_err_errno(err, errno, "%s: read failed", path);
        if (r <= 0) break;
        n += (size_t)r;
        /* a file that must be JSON is refused from its first bytes, before a weight file or a
         * device is read whole */
        if (json && n - (size_t)r < 4096 && not_json_start(buf, n < 4096 ? n : 4096)) {
            int st = n >= 9 && buf[8] == '{' && !buf[5] && !buf[6] && !buf[7]; /* 8-byte length, then '{' */
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON file%s", path, st ? " (a safetensors weight file?)" : "");
        }
    }
    if (!s && (uint64_t)n > max)
        s = rf_err_set(err, RF_ERR_FORMAT, "%s: larger than the %s ramfit reads from such a file (a wrong file?)", path, lim);
    close(fd);
    if (s) {
        free(buf);
        return s;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return RF_OK;
}
