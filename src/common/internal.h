/* Internal helpers shared by the library's modules; not installed. */
#ifndef RF_INTERNAL_H
#define RF_INTERNAL_H

#include "ramfit.h"
#include <stdarg.h>

#if defined(__GNUC__) || defined(__clang__)
#define RF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define RF_PRINTF(a, b)
#endif

/* Set err (if non-NULL) and return code, so call sites read `return rf_err_set(err, ...)`. */
rf_status rf_err_set(rf_err *err, rf_status code, const char *fmt, ...) RF_PRINTF(3, 4);
/* Put "context: " in front of an existing message (e.g. the tensor name a kernel did not know). */
rf_status rf_err_prefix(rf_err *err, const char *fmt, ...) RF_PRINTF(2, 3);
/* Set from errno: "<what>: <strerror>", RF_ERR_NOSPACE for ENOSPC/EFBIG/EDQUOT, else RF_ERR_IO. */
rf_status rf_err_errno(rf_err *err, int errnum, const char *fmt, ...) RF_PRINTF(3, 4);

/* rf_read_file; with JSON set, a file whose first bytes are not JSON ('{' or '[' after white
 * space) is refused from them (RF_ERR_FORMAT "not a JSON file"), not read whole first. */
rf_status rf_read_file_ex(const char *path, uint64_t max, int json, char **out, size_t *len, rf_err *err);
/* Read-only files (common/file.c). open: a missing file is RF_ERR_NOT_FOUND "PATH: no such file".
 * map: a regular file mmapped read-only (an empty file gives map NULL, size 0); unmap takes NULL. */
rf_status rf_file_open_ro(const char *path, int *fd, rf_err *err);
rf_status rf_file_map(const char *path, void **map, uint64_t *size, rf_err *err);
void rf_file_unmap(void *map, uint64_t size);

/* Overflow-checked arithmetic for untrusted sizes: return 0 on overflow. */
static inline int rf_mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static inline int rf_add_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }

/* x86 per-function targets; the default build stays portable. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RF_X86 1
#define RF_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define RF_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c")))
/* AVX-512 with 8-bit dot products and byte permutes (Ice Lake, Zen 4 and later): only for code
 * dispatched on RF_CPU_AVX512VNNI and RF_CPU_AVX512VBMI as well as RF_CPU_AVX512 */
#define RF_TARGET_AVX512VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")))
/* 256-bit 8-bit dot products without AVX-512 (Alder Lake and later) */
#define RF_TARGET_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#else
#define RF_X86 0
#define RF_TARGET_AVX2
#define RF_TARGET_AVX512
#define RF_TARGET_AVX512VNNI
#define RF_TARGET_AVXVNNI
#endif

#endif
