/* Internals of the calibration statistics: the file writer (stats.c) that the collector (collect.c)
 * streams into. Not part of the public API. */
#ifndef RF_CALIB_INTERNAL_H
#define RF_CALIB_INTERNAL_H

#include "common/internal.h"

#define RF_STATS_VERSION 1

/* One record: the statistics of one distinct input (a unit member, or several units fed the same x). */
typedef struct calib_rec {
    uint64_t cols, tokens;
    int has_h;            /* its H is in the data file */
    uint64_t h_off;       /* byte offset of H (packed upper triangle, floats) */
    uint64_t h_fnv;       /* FNV-1a 64 of those bytes */
    const double *sq;     /* writer: E[x_j^2] (cols doubles) */
} calib_rec;

typedef struct calib_unit {
    const char *name;
    rf_role role;
    uint64_t cols;
    int members;
    const int64_t *rec;   /* per member: record index or -1 (never had input) */
} calib_unit;

typedef struct calib_index {
    const char *model_name;
    uint64_t fingerprint;
    const rf_st *st;      /* the checkpoint's shard files (names and sizes recorded) */
    const char *text;
    uint64_t tokens, windows;
    int ctx, bos;
    double ppl;
    int hessian;
    uint64_t nrec, nunits;
    const calib_rec *recs;
    const calib_unit *units;
} calib_index;

/* The data file being written: H records as each pass ends, the moments block last. */
typedef struct calib_data calib_data;
rf_status calib_data_create(const char *json_path, calib_data **out, rf_err *err);
/* Append N bytes; *OFF gets their offset and *FNV their FNV-1a 64. */
rf_status calib_data_put(calib_data *d, const void *p, uint64_t n, uint64_t *off, uint64_t *fnv, rf_err *err);
uint64_t calib_data_bytes(const calib_data *d);
/* Append the moments block, then write the index and move both files into place. Frees D. */
rf_status calib_data_finish(calib_data *d, const calib_index *ix, rf_err *err);
/* Remove the temporary files. Frees D (NULL is fine). */
void calib_data_abort(calib_data *d);

/* A statistics file in memory (fuzzing, tests): the index text and the data file's bytes, borrowed
 * (they must outlive the handle). LABEL names it in messages. */
rf_status calib_stats_from_parts(const char *json, size_t json_len, const void *data, uint64_t data_len, const char *label,
                                 rf_stats **out, rf_err *err);

/* The units a statistics file names (tests, fuzzing). */
uint64_t calib_stats_unit_count(const rf_stats *s);
const char *calib_stats_unit(const rf_stats *s, uint64_t i, int *members);

/* Activation weights (weighted.c): per member of U, the column weights sum_t x_j^2 over its tokens
 * (members without statistics: the unit's mean), scaled to mean 1: n_members x cols doubles, or
 * *OUT = NULL when S has no statistics for U (it stays data-free). */
rf_status calib_unit_weights(const rf_stats *s, const rf_unit *u, double **out, rf_err *err);
/* For each config in CFGS: quantize and dequantize ROWS x COLS weights as written, sse = sum of
 * (w - w')^2 colw[j], ssq = *WSSQ = sum of w^2 colw[j], max_abs = max |w - w'|. */
rf_status calib_weighted_errors(rf_dtype dt, const void *w, uint64_t rows, uint64_t cols, unsigned cfgs, rf_qmode mode,
                                rf_dtype sd, const double *colw, rf_qerr out[RF_QCFG_N], double *wssq, rf_err *err);

/* FNV-1a 64 over bytes, continuing from H (start: RF_FNV_INIT). */
#define RF_FNV_INIT 0xcbf29ce484222325ull
uint64_t calib_fnv(uint64_t h, const void *p, uint64_t n);

#endif
