#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cli_fail(const rf_err *err)
{
    fprintf(stderr, "ramfit: error (%s): %s\n", rf_status_name(err->code), err->msg);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "ramfit %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'ramfit %s --help')\n", cmd);
    return 2;
}

int cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_init(cli_progress *p, const char *label, int quiet)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->quiet = quiet;
    p->tty = isatty(STDERR_FILENO);
    p->last_decile = -1;
    p->t0 = cli_now();
}

void cli_progress_cb(void *user, uint64_t done, uint64_t total, const char *what)
{
    cli_progress *p = user;
    if (p->quiet || total == 0) return;
    double now = cli_now(), el = now - p->t0, frac = (double)done / (double)total;
    if (frac > 1) frac = 1;
    if (p->tty) {
        if (now - p->last_draw < 0.1 && done < total) return;
        p->last_draw = now;
        int w = 30, fill = (int)(frac * w);
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = '\0';
        double eta = frac > 0 ? el * (1 - frac) / frac : 0;
        fprintf(stderr, "\r%s [%s] %5.1f%% %6.1fs ETA %5.1fs %-30.30s", p->label, bar, frac * 100, el, eta,
                what ? what : "");
        fflush(stderr);
    } else {
        int dec = (int)(frac * 10);
        if (dec > p->last_decile) {
            p->last_decile = dec;
            fprintf(stderr, "%s: %d%% (%.1fs)\n", p->label, dec * 10, el);
        }
    }
}

void cli_progress_end(cli_progress *p)
{
    if (!p->quiet && p->tty) fprintf(stderr, "\r\033[K");
}

static volatile int g_cancel;
static void on_signal(int sig)
{
    if (g_cancel) _exit(128 + sig); /* a second one: stop now */
    g_cancel = 1;
}
void cli_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* Ctrl-C, kill (SIGTERM) and a closed terminal stop the work the same way: the library cleans
     * up (temporaries removed, partial analysis saved) and says it was interrupted */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    /* past a file size limit (ulimit -f) a write fails with EFBIG, reported and cleaned up like a
     * full disk, instead of the process being killed with its temporaries left behind */
    signal(SIGXFSZ, SIG_IGN);
    /* a mask inherited blocked from the parent would hold them back: they are ours now */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}
volatile int *cli_cancel_flag(void) { return &g_cancel; }

/* Whole-number text: optional '-', then digits only. 0: *out set; 1: not such a number; 2: beyond
 * the range of long long. */
static int whole(const char *t, long long *out)
{
    if (!t) return 1;
    const char *d = t + (*t == '-');
    if (!*d) return 1;
    for (const char *c = d; *c; c++)
        if (*c < '0' || *c > '9') return 1;
    errno = 0;
    long long v = strtoll(t, NULL, 10);
    if (errno == ERANGE) return 2;
    *out = v;
    return 0;
}

int cli_int_arg(const char *cmd, const char *opt, const char *text, long long lo, long long hi, long long *out)
{
    long long v = 0;
    int r = whole(text, &v);
    if (r == 1) return cli_usage_error(cmd, "%s needs a whole number, not '%s'", opt, text ? text : "");
    if (r == 2 || v < lo || v > hi)
        return cli_usage_error(cmd, "%s %s is out of range (%lld to %lld)", opt, text, lo, hi);
    *out = v;
    return 0;
}

int cli_parse_dtype(const char *cmd, const char *text, rf_dtype *out)
{
    if (!strcmp(text, "bf16")) *out = RF_DT_BF16;
    else if (!strcmp(text, "f16")) *out = RF_DT_F16;
    else if (!strcmp(text, "f32")) *out = RF_DT_F32;
    else return cli_usage_error(cmd, "--dtype must be bf16, f16 or f32, not '%s'", text);
    return 0;
}

int cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The directory a file created at PATH lands in ("." when PATH has no slash); malloc'd, NULL when out
 * of memory. */
static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
}

int cli_check_output(const char *path)
{
    char *dir = parent_dir(path);
    struct stat st;
    int e = !dir ? ENOMEM : stat(dir, &st) != 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR
          : access(dir, W_OK | X_OK) != 0 ? errno : 0;
    rf_err err = {RF_ERR_IO, ""};
    if (e) snprintf(err.msg, sizeof err.msg, "cannot write %.480s: directory %.480s: %s", path, dir ? dir : "?", strerror(e));
    free(dir);
    return e ? cli_fail(&err) : 0;
}

int cli_file_in_dir(const char *path, const char *dir)
{
    char *d = realpath(dir, NULL), *parent = d ? parent_dir(path) : NULL, *p = parent ? realpath(parent, NULL) : NULL;
    size_t n = d ? strlen(d) : 0;
    int in = p && (!strcmp(d, "/") || (!strncmp(p, d, n) && (p[n] == '\0' || p[n] == '/')));
    free(p);
    free(parent);
    free(d);
    return in;
}

int cli_is_gguf(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    char m[4] = {0};
    size_t n = f ? fread(m, 1, 4, f) : 0;
    if (f) fclose(f);
    return n == 4 && !memcmp(m, "GGUF", 4);
}

int cli_default_profile(const char *model_dir, int gguf, char *out, size_t cap)
{
    if (!rf_analyse_default_path(model_dir, out, cap)) return 0;
    size_t n = strlen(out);
    if (!gguf) return 1;
    /* NAME.profile.json -> NAME.gguf.profile.json */
    if (n < 13 || n + 5 >= cap) return 0;
    memmove(out + n - 8, out + n - 13, 14);
    memcpy(out + n - 13, ".gguf", 5);
    return 1;
}
