/* Internal to the quantization module (quant.c, quant_opt.c, quant_avx2.c, quant_avx512.c); not shared.
 *
 * Every per-element kernel has a scalar reference and an AVX2 version that must produce the
 * same bits. To make that possible, every float sum is defined with a fixed order:
 *  - "lane sums": element i of a group goes to lane i % 8, each lane accumulates with
 *    fmaf(v, v, lane) from 0 in element order, and the 8 lanes are combined as
 *    ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) (rfq_tree8);
 *  - a tensor total is the double sum, in group order, of those per-group floats.
 * Quantization codes follow MLX's CPU rule q = clamp(rint((w - b) / s), 0, n), computed with
 * the float32 s and b; dequantization is w' = fmaf(scale, q, bias). */
#ifndef RF_QUANT_IMPL_H
#define RF_QUANT_IMPL_H

#include "common/internal.h"

#define RFQ_TILE 1024 /* row chunk: a multiple of every group size */
#define RFQ_MAXG (RFQ_TILE / 32)

/* Per-group parameters of a tile, struct of arrays (ng <= RFQ_MAXG). */
typedef struct rfq_params {
    float s[RFQ_MAXG], b[RFQ_MAXG];   /* float32 scale and bias used to compute q */
    float ss[RFQ_MAXG], bs[RFQ_MAXG]; /* the same rounded to the storage dtype */
    /* fast path only: q = floor(t), t = min(fma(w, inv, c), n + 1/2), when every frac(t) >= thr */
    float inv[RFQ_MAXG], c[RFQ_MAXG], thr[RFQ_MAXG];
    float eb[RFQ_MAXG]; /* fast path only: a bound on the group's max |w - w'| */
} rfq_params;

/* Candidates of the error-minimising search, 8 per vector. In: a float scale and bias per lane
 * (codes q = clamp(rint(fmaf(w, 1/s, -(b/s))), 0, n)). Out: the least-squares scale and bias for
 * those codes and the resulting squared error (rfq_refit; INFINITY when unusable). */
typedef struct rfq_cand {
    double s[8], b[8];
    double rs[8], rb[8], e[8];
    double emin; /* the smallest e and its first lane (kernels set them: the search picks from them) */
    int imin;
} rfq_cand;

/* emin and imin of C from its errors (errors are finite or +inf, never NaN). */
static inline void rfq_cand_min(rfq_cand *c)
{
    double m = c->e[0];
    int k = 0;
    for (int l = 1; l < 8; l++)
        if (c->e[l] < m) m = c->e[l], k = l;
    c->emin = m;
    c->imin = k;
}

/* Elements per chain whose q w the candidate kernels sum in float before adding to double
 * (2 * RFQ_QW_RUN divides every group size). */
#define RFQ_QW_RUN 8

/* Group sums the refit needs: count, sum w, sum w^2 (double). */
typedef struct rfq_gstat {
    double n, s1, s2;
} rfq_gstat;

typedef struct rfq_kernels {
    /* Convert n elements of src (F32/BF16/F16) starting at element off to float; returns the
     * index of the first non-finite element, or -1. */
    long (*load)(rf_dtype src, const void *w, uint64_t off, size_t n, float *x);
    /* Per 32-element group of x (n a multiple of 32): min, max, lane sum of squares. */
    void (*stats32)(const float *x, size_t n, float *mn, float *mx, float *ssq);
    /* MLX parameters for ng groups from their min and max; with fast, also the fast-path
     * fields (inv, c, thr, eb) that err_mlx needs. */
    void (*params)(const float *lo, const float *hi, size_t ng, int bits, rf_dtype sd, int fast, rfq_params *p);
    /* MLX-mode error of ng groups of gs elements: per-group lane sums of squared error, and
     * the max |error| folded into *emax. */
    void (*err_mlx)(const float *x, size_t ng, int gs, int bits, const rfq_params *p, float *gsse, float *emax);
    /* One group with explicit parameters: codes (q may be NULL), lane-sum sse and max |error|. */
    void (*qgroup)(const float *x, int gs, float n, float s, float b, float ss, float bs,
                   uint8_t *q, float *sse, float *emax);
    /* Group sums the refit needs (rfq_gstat), in four interleaved chains (element i in chain
     * i % 4) combined as (c0 + c1) + (c2 + c3). */
    void (*gstat)(const float *x, int gs, rfq_gstat *st);
    /* Search kernel: nc vectors of 8 candidates over one group. */
    void (*cand)(const float *x, int gs, float n, const rfq_gstat *st, rfq_cand *c, int nc);
    /* The same for two groups at once (a and b; b may be a again), or NULL: cand on each. */
    void (*cand2)(const float *xa, const float *xb, int gs, float n, const rfq_gstat *sta, const rfq_gstat *stb,
                  rfq_cand *ca, rfq_cand *cb, int nc);
    /* qgroup for two parameter sets of one group (index 0 and 1 of s, b, ss, bs, sse, emax; qa, qb
     * may be NULL), or NULL: qgroup on each. */
    void (*qgroup2)(const float *x, int gs, float n, const float *s, const float *b, const float *ss, const float *bs,
                    uint8_t *qa, uint8_t *qb, float *sse, float *emax);
    /* Dequantize one group from codes. */
    void (*deq)(const uint8_t *q, int gs, float ss, float bs, float *out);
} rfq_kernels;

extern const rfq_kernels rfq_scalar;
#if RF_X86
extern const rfq_kernels rfq_avx2, rfq_avx512;
void rfq_cand2_avx512(const float *xa, const float *xb, int gs, float n, const rfq_gstat *sta, const rfq_gstat *stb,
                      rfq_cand *ca, rfq_cand *cb, int nc);
void rfq_qgroup2_avx512(const float *x, int gs, float n, const float *s, const float *b, const float *ss, const float *bs,
                        uint8_t *qa, uint8_t *qb, float *sse, float *emax);
#endif
/* The kernels rf_cpu_features() allows. */
const rfq_kernels *rfq_pick(void);

/* Shared helpers. */
static inline float rfq_tree8(const float l[8])
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}
/* Round a float to the storage dtype and back. */
float rfq_store_round(float v, rf_dtype sd);
/* Scalar MLX parameters of one group. */
void rfq_mlx_params1(float lo, float hi, int bits, rf_dtype sd, float *s, float *b, float *ss, float *bs);
/* Error-minimising choice for one group: fills ss, bs (storage-rounded), q (may be NULL) and
 * the group's lane-sum sse / max error; never worse than MLX on the group. */
void rfq_opt_group(const rfq_kernels *k, const float *x, int gs, int bits, rf_dtype sd, float lo, float hi,
                   float *ss, float *bs, uint8_t *q, float *sse, float *emax);
/* The same for groups x + j * gs * ... of a list: NG groups starting at the float pointers X[j], with
 * extremes LO[j], HI[j], results at index j (q[j] may be NULL; q itself too); searched two at a time
 * where the kernels can. The max |error| over all of them is folded into *emax. */
void rfq_opt_groups(const rfq_kernels *k, const float *const *x, int ng, int gs, int bits, rf_dtype sd, const float *lo,
                    const float *hi, float *ss, float *bs, uint8_t *const *q, float *sse, float *emax);
/* Pack n codes (a multiple of 32) of BITS bits into MLX's words; store one scale or bias. */
void rfq_pack(const uint8_t *q, uint64_t n, int bits, uint32_t *out);
void rfq_store(void *dst, uint64_t i, float v, rf_dtype sd);

#endif
