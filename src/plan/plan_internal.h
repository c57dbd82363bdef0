/* Internals shared by profile.c, plan.c, mckp.c and targets.c (and their tests/bench). */
#ifndef RF_PLAN_INTERNAL_H
#define RF_PLAN_INTERNAL_H

#include "common/internal.h"

#include <stdarg.h>
#include <stddef.h>

/* ---- growable text buffer for the JSON writers (deterministic formatting) */
typedef struct rf_sb {
    char *buf;
    size_t len, cap;
    int oom;
} rf_sb;
void rf_sb_puts(rf_sb *b, const char *s);
void rf_sb_printf(rf_sb *b, const char *fmt, ...) RF_PRINTF(2, 3);
/* A JSON string literal with escapes. */
void rf_sb_json_str(rf_sb *b, const char *s);
/* %.17g, with ".0" added when it would read back as an integer (so -0.0 and 1.0 survive). */
void rf_sb_double(rf_sb *b, double v);
/* Hand the text to the caller (NUL-terminated) or fail with RF_ERR_NOMEM. */
rf_status rf_sb_finish(rf_sb *b, char **out, size_t *len, rf_err *err);
/* Write TEXT to PATH via PATH.tmp + rename. */
rf_status rf_write_text_file(const char *path, const char *text, size_t len, rf_err *err);
/* Read a whole file (NUL-terminated). */
rf_status rf_read_text_file(const char *path, char **out, size_t *len, rf_err *err);

/* ---- role tokens of the file formats: rf_role_name's spelling (a stable part of the formats) */
int rf_role_from_token(const char *s); /* -1 if unknown */

/* ---- configs: index c = bits_index * RF_QGS_N + gs_index */
int rf_cfg_index(int bits, int gs); /* -1 if not a config */
int rf_cfg_bits(int c);
int rf_cfg_gs(int c);

/* ---- exact multiple-choice knapsack (mckp.c)
 * Groups g = 0..n-1 own items [start[g], start[g+1]); item i has integer weight w[i] and value
 * e[i] >= 0 (finite). Choose one item per group, total weight <= cap, minimising total value. */
typedef struct rf_mckp rf_mckp;
rf_status rf_mckp_create(uint32_t ngroups, const uint32_t *start, const uint64_t *w, const double *e,
                         rf_mckp **out, rf_err *err);
void rf_mckp_free(rf_mckp *m);
uint64_t rf_mckp_min_weight(const rf_mckp *m);
/* Smallest total weight at which every group sits at its least value (more never helps). */
uint64_t rf_mckp_sat_weight(const rf_mckp *m);

typedef struct rf_mckp_result {
    uint32_t *choice;      /* caller's array [ngroups]: chosen item index (global, into w/e) */
    uint64_t weight;       /* total weight */
    double value;          /* total value (compensated sum) */
    double bound;          /* proven lower bound on the optimum */
    int optimal;           /* 1: value is optimal within the tolerance */
    uint64_t states;       /* DP states made by the exact step */
    uint32_t core;         /* groups left free after reduced-cost fixing */
} rf_mckp_result;
#define RF_MCKP_REL_TOL 1e-9
#define RF_MCKP_DEFAULT_STATES 4000000u
/* RF_ERR_BUDGET when cap < min weight (no message; the caller words it). */
rf_status rf_mckp_solve(const rf_mckp *m, uint64_t cap, uint64_t state_limit, rf_mckp_result *res, rf_err *err);

/* ---- synthetic profiles for tests and benchmarks (profile_synth.c): transformer-shaped units with a
 * plausible error model (D falls ~4x per extra bit, grows with gs; per-unit spread); deterministic. */
typedef struct rf_psynth_opts {
    int n_layers, hidden, ffn, vocab, n_heads, n_kv_heads, head_dim;
    int n_experts, experts_per_tok;  /* 0: dense */
    int tied;                        /* no lm_head unit */
    int random_shapes;               /* every unit its own random shape (harder knapsack) */
    unsigned modes;                  /* 1 mlx, 2 opt, 3 both */
    double spread;                   /* log-normal sigma of per-unit difficulty (e.g. 0.5) */
    uint64_t seed;
    /* A synth preset ("llama-4-scout", ...): the units, names and shapes of the published model from
     * its family's table, at full size (n_layers overrides its depth when > 0); the shape fields
     * above are ignored. */
    const char *like;
} rf_psynth_opts;
rf_status rf_profile_synth(const rf_psynth_opts *o, rf_profile **out, rf_err *err);

#endif
