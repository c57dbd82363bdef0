#include "common/internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *rf_status_name(rf_status s)
{
    static const char *const names[] = {
        "ok", "io", "format", "nomem", "invalid", "unsupported", "not-found", "nonfinite",
        "mismatch", "budget", "interrupted", "nospace", "exists", "internal",
    };
    if ((unsigned)s < sizeof names / sizeof names[0]) return names[s];
    return "unknown";
}

void rf_err_clear(rf_err *err)
{
    if (!err) return;
    err->code = RF_OK;
    err->msg[0] = '\0';
}

rf_status rf_err_set(rf_err *err, rf_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

rf_status rf_err_prefix(rf_err *err, const char *fmt, ...)
{
    if (!err) return RF_ERR_INTERNAL;
    char head[RF_ERR_MSG_MAX], old[RF_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t hl = strlen(head);
    /* Callers write either "context" or "context: "; the message must read "context: old". */
    if (hl > 0 && old[0] && head[hl - 1] != ' ' && hl + 2 < sizeof head) {
        memcpy(head + hl, ": ", 3);
        hl += 2;
    }
    memcpy(err->msg, head, hl);
    snprintf(err->msg + hl, sizeof err->msg - hl, "%s", old);
    return err->code;
}

rf_status rf_err_errno(rf_err *err, int errnum, const char *fmt, ...)
{
    rf_status code = (errnum == ENOSPC || errnum == EFBIG
#ifdef EDQUOT
                      || errnum == EDQUOT
#endif
                      ) ? RF_ERR_NOSPACE : RF_ERR_IO;
    if (err) {
        char what[RF_ERR_MSG_MAX / 2];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        snprintf(err->msg, sizeof err->msg, "%s: %s", what, strerror(errnum));
        err->code = code;
    }
    return code;
}
