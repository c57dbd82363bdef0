/* Shared helpers for the cmocka test programs. */
#ifndef RF_TESTUTIL_H
#define RF_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ramfit.h"

/* Path of a model: first <repo>/models/NAME, then ../shared/models/NAME; NULL if neither exists.
 * Returned string is static storage per call site use (copy it if you keep two). */
const char *tu_model_dir(const char *name);
/* Path under ../shared (e.g. "evaltext/wiki.test.raw"), NULL if missing. */
const char *tu_shared_path(const char *rel);
/* Fresh empty temporary directory (removed with tu_rmtree). Caller frees the string. */
char *tu_mkdtemp(void);
/* rm -rf PATH (for test temp dirs only). */
void tu_rmtree(const char *path);
/* Write/read a whole file; read returns malloc'd buffer (NUL-terminated), size in *n. */
int tu_write_file(const char *path, const void *data, size_t n);
char *tu_read_file(const char *path, size_t *n);
/* Deterministic RNG (splitmix64 / xoshiro-ish). */
typedef struct tu_rng { uint64_t s; } tu_rng;
uint64_t tu_rng_u64(tu_rng *r);
double tu_rng_uniform(tu_rng *r);          /* [0,1) */
double tu_rng_normal(tu_rng *r);
double tu_rng_student_t(tu_rng *r, double nu);
/* Run the ramfit CLI with a shell command line suffix; capture stdout+stderr into *out
 * (malloc'd, may be NULL). Returns the exit status (or -1). */
int tu_run_cli(const char *args, char **out);
/* Assert that an rf_status is RF_OK, printing err->msg otherwise. */
#define TU_OK(expr, errp)                                                                   \
    do {                                                                                    \
        rf_status tu_s_ = (expr);                                                           \
        if (tu_s_ != RF_OK) fail_msg("%s -> %s: %s", #expr, rf_status_name(tu_s_), (errp)->msg); \
    } while (0)

#endif
