#include "internal.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    while (isspace((unsigned char)*end)) end++;
    static const struct { const char *u; double m; } units[] = {
        {"", 1}, {"b", 1},
        {"k", 1e3}, {"kb", 1e3}, {"m", 1e6}, {"mb", 1e6}, {"g", 1e9}, {"gb", 1e9}, {"t", 1e12}, {"tb", 1e12},
        {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].u) == 0) {
            double b = v * units[i].m;
            if (b >= 18446744073709551615.0)
                return rf_err_set(err, RF_ERR_INVALID, "size '%s' is too large", text);
            if (units[i].m == 1 && b != floor(b))
                return rf_err_set(err, RF_ERR_INVALID, "bad size '%s': a byte count must be whole", text);
            *out = (uint64_t)llround(floor(b));
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
