/* MLX affine quantization: quantize, dequantize and the fused error paths (see
 * docs/mlx-format.md and quant_impl.h for the exact arithmetic). This file holds the public
 * API, the drivers that walk a matrix in row tiles, bit packing and the scalar reference
 * kernels; quant_avx2.c has the fast kernels and quant_opt.c the error-minimising search. */
#include "quant/quant_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
#pragma clang fp contract(off) /* the reference must round every operation as written */
#endif

const int rf_qbits[RF_QBITS_N] = {2, 3, 4, 5, 6, 8};
const int rf_qgs[RF_QGS_N] = {32, 64, 128};

/* ---------------------------------------------------------------- small helpers */

static int bits_ok(int bits) { return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8; }
static int gs_ok(int gs) { return gs == 32 || gs == 64 || gs == 128; }
static int src_ok(rf_dtype d) { return d == RF_DT_F32 || d == RF_DT_BF16 || d == RF_DT_F16; }

float rfq_store_round(float v, rf_dtype sd)
{
    if (sd == RF_DT_BF16) return rf_bf16_to_f32(rf_f32_to_bf16(v));
    if (sd == RF_DT_F16) return rf_f16_to_f32(rf_f32_to_f16(v));
    return v;
}

static void store_sd(void *dst, uint64_t i, float v, rf_dtype sd)
{
    if (sd == RF_DT_BF16) ((uint16_t *)dst)[i] = rf_f32_to_bf16(v);
    else if (sd == RF_DT_F16) ((uint16_t *)dst)[i] = rf_f32_to_f16(v);
    else ((float *)dst)[i] = v;
}

static float load_sd(const void *src, uint64_t i, rf_dtype sd)
{
    if (sd == RF_DT_BF16) return rf_bf16_to_f32(((const uint16_t *)src)[i]);
    if (sd == RF_DT_F16) return rf_f16_to_f32(((const uint16_t *)src)[i]);
    return ((const float *)src)[i];
}

void rfq_mlx_params1(float lo, float hi, int bits, rf_dtype sd, float *s, float *b, float *ss, float *bs)
{
    const float n = (float)((1 << bits) - 1), eps = 1e-7f;
    int neg_edge = fabsf(lo) > fabsf(hi);
    float sc = (hi - lo) / n;
    sc = sc < eps ? eps : sc;
    sc = neg_edge ? sc : -sc;
    float edge = neg_edge ? lo : hi;
    float q0 = rintf(edge / sc);
    float bias = 0.0f;
    if (q0 != 0.0f) {
        sc = edge / q0;
        bias = edge;
    }
    *s = sc;
    *b = bias;
    *ss = rfq_store_round(sc, sd);
    *bs = rfq_store_round(bias, sd);
}

/* ---------------------------------------------------------------- bit packing (shared) */

/* Each row is an LSB-first bit stream; 32 elements of b bits fill exactly b words, so every
 * 32-element chunk starts word-aligned. Constant bits lets the compiler unroll. */
static inline void pack32_b(const uint8_t *q, int b, uint32_t *out)
{
    uint64_t acc = 0;
    int nb = 0, w = 0;
    for (int i = 0; i < 32; i++) {
        acc |= (uint64_t)q[i] << nb;
        nb += b;
        if (nb >= 32) {
            out[w++] = (uint32_t)acc;
            acc >>= 32;
            nb -= 32;
        }
    }
}

static inline void unpack32_b(const uint32_t *in, int b, uint8_t *q)
{
    uint64_t acc = 0;
    int nb = 0, w = 0;
    const uint32_t mask = (1u << b) - 1;
    for (int i = 0; i < 32; i++) {
        if (nb < b) {
            acc |= (uint64_t)in[w++] << nb;
            nb += 32;
        }
        q[i] = (uint8_t)(acc & mask);
        acc >>= b;
        nb -= b;
    }
}

#define RFQ_BITS_SWITCH(bits, call)                                                         \
    switch (bits) {                                                                         \
    case 2: call(2); break;                                                                 \
    case 3: call(3); break;                                                                 \
    case 4: call(4); break;                                                                 \
    case 5: call(5); break;                                                                 \
    case 6: call(6); break;                                                                 \
    default: call(8); break;                                                                \
    }

static void pack_group(const uint8_t *q, int gs, int bits, uint32_t *out)
{
    for (int c = 0; c < gs; c += 32, q += 32, out += bits) {
#define RFQ_PACK(B) pack32_b(q, B, out)
        RFQ_BITS_SWITCH(bits, RFQ_PACK)
#undef RFQ_PACK
    }
}

static void unpack_group(const uint32_t *in, int gs, int bits, uint8_t *q)
{
    for (int c = 0; c < gs; c += 32, q += 32, in += bits) {
#define RFQ_UNPACK(B) unpack32_b(in, B, q)
        RFQ_BITS_SWITCH(bits, RFQ_UNPACK)
#undef RFQ_UNPACK
    }
}

/* ---------------------------------------------------------------- scalar reference kernels */

static long load_ref(rf_dtype src, const void *w, uint64_t off, size_t n, float *x)
{
    long bad = -1;
    for (size_t i = 0; i < n; i++) {
        float v;
        if (src == RF_DT_BF16) v = rf_bf16_to_f32(((const uint16_t *)w)[off + i]);
        else if (src == RF_DT_F16) v = rf_f16_to_f32(((const uint16_t *)w)[off + i]);
        else v = ((const float *)w)[off + i];
        x[i] = v;
        if (bad < 0 && !isfinite(v)) bad = (long)i;
    }
    return bad;
}

static void stats32_ref(const float *x, size_t n, float *mn, float *mx, float *ssq)
{
    for (size_t g = 0; g < n / 32; g++, x += 32) {
        float lo = x[0], hi = x[0], l[8] = {0};
        for (int i = 0; i < 32; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
            l[i & 7] = fmaf(x[i], x[i], l[i & 7]);
        }
        mn[g] = lo;
        mx[g] = hi;
        ssq[g] = rfq_tree8(l);
    }
}

static void params_ref(const float *lo, const float *hi, size_t ng, int bits, rf_dtype sd, int fast, rfq_params *p)
{
    for (size_t g = 0; g < ng; g++) {
        rfq_mlx_params1(lo[g], hi[g], bits, sd, &p->s[g], &p->b[g], &p->ss[g], &p->bs[g]);
        p->inv[g] = p->c[g] = 0.0f;
        p->thr[g] = 2.0f; /* no fast code is certain: the reference always divides */
        p->eb[g] = INFINITY;
    }
}

static void qgroup_ref(const float *x, int gs, float n, float s, float b, float ss, float bs,
                       uint8_t *q, float *sse, float *emax)
{
    float l[8] = {0}, em = *emax;
    for (int i = 0; i < gs; i++) {
        float r = rintf((x[i] - b) / s);
        r = r > 0.0f ? r : 0.0f; /* mirrors maxps/minps: -0 and NaN become 0 */
        r = r < n ? r : n;
        if (q) q[i] = (uint8_t)r;
        float e = x[i] - fmaf(ss, r, bs);
        l[i & 7] = fmaf(e, e, l[i & 7]);
        float ae = fabsf(e);
        em = ae > em ? ae : em;
    }
    if (sse) *sse = rfq_tree8(l);
    *emax = em;
}

static void err_mlx_ref(const float *x, size_t ng, int gs, int bits, const rfq_params *p, float *gsse, float *emax)
{
    const float n = (float)((1 << bits) - 1);
    for (size_t g = 0; g < ng; g++)
        qgroup_ref(x + g * gs, gs, n, p->s[g], p->b[g], p->ss[g], p->bs[g], NULL, &gsse[g], emax);
}

/* The candidate's float quantization parameters; inv = c = 0 (every code 0) when unusable. */
static void cand_params_ref(double s, double b, float *inv, float *c)
{
    float sf = (float)s, bf = (float)b;
    *inv = *c = 0.0f;
    if (sf > 0.0f && sf < INFINITY && fabsf(bf) < INFINITY) {
        *inv = 1.0f / sf;
        *c = -(bf * *inv);
    }
}

/* Least squares for codes with sums q1, q2, qw; the operation order is the AVX2 kernel's. */
static void refit_ref(const rfq_gstat *st, double q1, double q2, double qw, double *rs, double *rb, double *e)
{
    double d = st->n * q2 - q1 * q1;
    double s = (st->n * qw - q1 * st->s1) / d;
    double b = (st->s1 - s * q1) / st->n;
    double err = st->s2 - 2 * s * qw - 2 * b * st->s1 + s * s * q2 + 2 * s * b * q1 + st->n * b * b;
    *rs = s;
    *rb = b;
    *e = (d > 0 && s > 0 && err < INFINITY) ? err : INFINITY;
}

/* Sums run separately over even and odd elements (two chains in the AVX2 kernel). The sum of
 * q w is float over each run of RFQ_QW_RUN elements of a chain, then double: precise enough to
 * rank candidates, and one operation per element instead of five in the AVX2 kernel. */
static void cand_ref(const float *x, int gs, float n, const rfq_gstat *st, rfq_cand *c, int nc)
{
    for (int v = 0; v < nc; v++)
        for (int k = 0; k < 8; k++) {
            float inv, cc, q1[2] = {0, 0}, q2[2] = {0, 0}, pw[2] = {0, 0};
            double qw[2] = {0, 0};
            cand_params_ref(c[v].s[k], c[v].b[k], &inv, &cc);
            for (int i = 0; i < gs; i++) {
                float r = fmaf(x[i], inv, cc);
                r = r > 0.0f ? r : 0.0f;
                r = r < n ? r : n;
                r = rintf(r);
                q1[i & 1] += r;
                q2[i & 1] = fmaf(r, r, q2[i & 1]);
                pw[i & 1] = fmaf(r, x[i], pw[i & 1]);
                if (i % (2 * RFQ_QW_RUN) >= 2 * RFQ_QW_RUN - 2) { /* the chain's run ends */
                    qw[i & 1] += (double)pw[i & 1];
                    pw[i & 1] = 0.0f;
                }
            }
            refit_ref(st, (double)(q1[0] + q1[1]), (double)(q2[0] + q2[1]), qw[0] + qw[1], &c[v].rs[k], &c[v].rb[k], &c[v].e[k]);
        }
    for (int v = 0; v < nc; v++) rfq_cand_min(&c[v]);
}

/* Four interleaved chains: they overlap, where one chain would wait on each addition (and the
 * AVX2 kernel runs them as the lanes of one vector). */
static void gstat_ref(const float *x, int gs, rfq_gstat *st)
{
    double a[4] = {0, 0, 0, 0}, q[4] = {0, 0, 0, 0};
    for (int i = 0; i < gs; i += 4)
        for (int j = 0; j < 4; j++) {
            a[j] += x[i + j];
            q[j] += (double)x[i + j] * x[i + j];
        }
    *st = (rfq_gstat){gs, (a[0] + a[1]) + (a[2] + a[3]), (q[0] + q[1]) + (q[2] + q[3])};
}

static void deq_ref(const uint8_t *q, int gs, float ss, float bs, float *out)
{
    for (int i = 0; i < gs; i++) out[i] = fmaf(ss, (float)q[i], bs);
}

const rfq_kernels rfq_scalar = {load_ref, stats32_ref, params_ref, err_mlx_ref, qgroup_ref, gstat_ref, cand_ref, NULL, NULL,
                                deq_ref};

const rfq_kernels *rfq_pick(void)
{
#if RF_X86
    unsigned f = rf_cpu_features();
    if ((f & RF_CPU_AVX2) && (f & RF_CPU_FMA) && (f & RF_CPU_F16C)) return f & RF_CPU_AVX512 ? &rfq_avx512 : &rfq_avx2;
#endif
    return &rfq_scalar;
}

/* ---------------------------------------------------------------- validation */

static rf_status check_common(rf_dtype src, const void *w, uint64_t rows, uint64_t cols, rf_dtype sd, rf_err *err)
{
    uint64_t nel;
    if (!src_ok(src)) return rf_err_set(err, RF_ERR_INVALID, "quantize: source dtype %s is not F32/BF16/F16", rf_dtype_name(src));
    if (!src_ok(sd)) return rf_err_set(err, RF_ERR_INVALID, "quantize: scale dtype %s is not F32/BF16/F16", rf_dtype_name(sd));
    if (!rf_mul_u64(rows, cols, &nel) || nel > (UINT64_MAX >> 4))
        return rf_err_set(err, RF_ERR_INVALID, "quantize: %llu x %llu elements overflow",
                          (unsigned long long)rows, (unsigned long long)cols);
    if (!w && nel) return rf_err_set(err, RF_ERR_INVALID, "quantize: NULL weights");
    return RF_OK;
}

static rf_status check_cfg(int bits, int gs, uint64_t cols, rf_err *err)
{
    if (!bits_ok(bits)) return rf_err_set(err, RF_ERR_INVALID, "quantize: bits %d not in {2,3,4,5,6,8}", bits);
    if (!gs_ok(gs)) return rf_err_set(err, RF_ERR_INVALID, "quantize: group size %d not in {32,64,128}", gs);
    if (cols % (uint64_t)gs)
        return rf_err_set(err, RF_ERR_INVALID, "quantize: %llu columns are not a multiple of group size %d",
                          (unsigned long long)cols, gs);
    return RF_OK;
}

static rf_status nonfinite(uint64_t row, uint64_t col, rf_err *err)
{
    return rf_err_set(err, RF_ERR_NONFINITE, "non-finite weight at row %llu, column %llu",
                      (unsigned long long)row, (unsigned long long)col);
}

uint64_t rf_quant_bytes(uint64_t nelem, int bits, int gs, rf_dtype scale_dtype)
{
    if (!bits_ok(bits) || !gs_ok(gs)) return 0;
    uint64_t sz = rf_dtype_size(scale_dtype);
    return nelem / 32 * (uint64_t)bits * 4 + 2 * (nelem / (uint64_t)gs) * sz;
}

/* ---------------------------------------------------------------- tile walker */

/* One row tile converted to float with its group statistics. */
typedef struct rfq_tile {
    float x[RFQ_TILE];
    float mn32[RFQ_MAXG], mx32[RFQ_MAXG], ssq32[RFQ_MAXG];
    float lo[RF_QGS_N][RFQ_MAXG], hi[RF_QGS_N][RFQ_MAXG]; /* per group size index */
    uint8_t q[RFQ_TILE];
    float gsse[RF_QCFG_N][RFQ_MAXG]; /* per config: each group's lane-sum sse */
    rfq_params p;
} rfq_tile;

/* Load the n elements (a multiple of 32) at flat offset off, whole groups of one row or whole
 * rows, and their min/max for every group size. */
static rf_status tile_load(const rfq_kernels *k, rfq_tile *t, rf_dtype src, const void *w, uint64_t cols,
                           uint64_t off, size_t n, rf_err *err)
{
    long bad = k->load(src, w, off, n, t->x);
    if (bad >= 0) return nonfinite((off + (uint64_t)bad) / cols, (off + (uint64_t)bad) % cols, err);
    k->stats32(t->x, n, t->mn32, t->mx32, t->ssq32);
    memcpy(t->lo[0], t->mn32, sizeof t->mn32);
    memcpy(t->hi[0], t->mx32, sizeof t->mx32);
    for (int gi = 1; gi < RF_QGS_N; gi++)
        for (size_t g = 0; g < n / (size_t)rf_qgs[gi]; g++) {
            float a = t->lo[gi - 1][2 * g], b = t->lo[gi - 1][2 * g + 1];
            float c = t->hi[gi - 1][2 * g], d = t->hi[gi - 1][2 * g + 1];
            t->lo[gi][g] = b < a ? b : a;
            t->hi[gi][g] = d > c ? d : c;
        }
    return RF_OK;
}

static int gs_index(int gs) { return gs == 32 ? 0 : gs == 64 ? 1 : 2; }

/* ---------------------------------------------------------------- quantize / dequantize */

rf_status rf_quant_quantize(rf_dtype src, const void *w, uint64_t rows, uint64_t cols,
                            int bits, int gs, rf_qmode mode, rf_dtype sdtype,
                            uint32_t *packed, void *scales, void *biases, rf_err *err)
{
    rf_status st = check_common(src, w, rows, cols, sdtype, err);
    if (st == RF_OK) st = check_cfg(bits, gs, cols, err);
    if (st != RF_OK) return st;
    if (mode != RF_QMODE_MLX && mode != RF_QMODE_OPT) return rf_err_set(err, RF_ERR_INVALID, "quantize: bad mode %d", (int)mode);
    if (rows && cols && (!packed || !scales || !biases)) return rf_err_set(err, RF_ERR_INVALID, "quantize: NULL output");
    const rfq_kernels *k = rfq_pick();
    rfq_tile *t = calloc(1, sizeof *t); /* zeroed: SIMD reads whole vectors past the last group */
    if (!t) return rf_err_set(err, RF_ERR_NOMEM, "quantize: out of memory");
    const float n = (float)((1 << bits) - 1);
    const uint64_t wpr = cols / 32 * (uint64_t)bits, gpr = cols / (uint64_t)gs;
    for (uint64_t r = 0; r < rows && st == RF_OK; r++) {
        for (uint64_t c0 = 0; c0 < cols; c0 += RFQ_TILE) {
            size_t len = (size_t)(cols - c0 < RFQ_TILE ? cols - c0 : RFQ_TILE);
            if ((st = tile_load(k, t, src, w, cols, r * cols + c0, len, err)) != RF_OK) break;
            size_t ng = len / (size_t)gs;
            const float *lo = t->lo[gs_index(gs)], *hi = t->hi[gs_index(gs)];
            uint64_t g0 = r * gpr + c0 / (uint64_t)gs;
            if (mode == RF_QMODE_MLX) {
                k->params(lo, hi, ng, bits, sdtype, 0, &t->p);
                for (size_t g = 0; g < ng; g++) {
                    float em = 0;
                    k->qgroup(t->x + g * gs, gs, n, t->p.s[g], t->p.b[g], t->p.ss[g], t->p.bs[g], t->q + g * gs, NULL, &em);
                }
            } else {
                const float *xs[RFQ_MAXG];
                uint8_t *qs[RFQ_MAXG];
                float em = 0;
                for (size_t g = 0; g < ng; g++) xs[g] = t->x + g * gs, qs[g] = t->q + g * gs;
                rfq_opt_groups(k, xs, (int)ng, gs, bits, sdtype, lo, hi, t->p.ss, t->p.bs, qs, NULL, &em);
            }
            for (size_t g = 0; g < ng; g++) {
                store_sd(scales, g0 + g, t->p.ss[g], sdtype);
                store_sd(biases, g0 + g, t->p.bs[g], sdtype);
                /* F32 weights beyond float16's range give an infinite F16 scale or bias: refused,
                 * never written (the model would compute inf) */
                if (!isfinite(load_sd(scales, g0 + g, sdtype)) || !isfinite(load_sd(biases, g0 + g, sdtype))) {
                    st = rf_err_set(err, RF_ERR_NONFINITE, "the %s scale/bias of the group at row %llu, columns %llu..%llu "
                                    "overflows (weights up to %g; %s holds at most %g)", rf_dtype_name(sdtype),
                                    (unsigned long long)r, (unsigned long long)(c0 + g * (uint64_t)gs),
                                    (unsigned long long)(c0 + (g + 1) * (uint64_t)gs - 1),
                                    fmax(fabs((double)lo[g]), fabs((double)hi[g])), rf_dtype_name(sdtype),
                                    sdtype == RF_DT_F16 ? 65504.0 : 3.3895313892515355e38);
                    break;
                }
            }
            if (st != RF_OK) break;
            pack_group(t->q, (int)len, bits, packed + r * wpr + c0 / 32 * (uint64_t)bits);
        }
    }
    free(t);
    return st;
}

rf_status rf_quant_dequantize(const uint32_t *packed, const void *scales, const void *biases,
                              rf_dtype sdtype, uint64_t rows, uint64_t cols, int bits, int gs,
                              float *out, rf_err *err)
{
    uint64_t nel;
    rf_status st = check_cfg(bits, gs, cols, err);
    if (st != RF_OK) return st;
    if (!src_ok(sdtype)) return rf_err_set(err, RF_ERR_INVALID, "dequantize: scale dtype %s is not F32/BF16/F16", rf_dtype_name(sdtype));
    if (!rf_mul_u64(rows, cols, &nel)) return rf_err_set(err, RF_ERR_INVALID, "dequantize: size overflow");
    if (nel && (!packed || !scales || !biases || !out)) return rf_err_set(err, RF_ERR_INVALID, "dequantize: NULL argument");
    const rfq_kernels *k = rfq_pick();
    const uint64_t wpg = (uint64_t)gs / 32 * (uint64_t)bits, ng = nel / (uint64_t)gs;
    uint8_t q[128];
    for (uint64_t g = 0; g < ng; g++) {
        unpack_group(packed + g * wpg, gs, bits, q);
        k->deq(q, gs, load_sd(scales, g, sdtype), load_sd(biases, g, sdtype), out + g * (uint64_t)gs);
    }
    return RF_OK;
}

/* ---------------------------------------------------------------- fused error */

typedef struct rfq_acc {
    double sse[RF_QCFG_N];
    float emax[RF_QCFG_N];
    double ssq;
} rfq_acc;

/* Error of config (bits index bi, gs index gi) over the tile's groups: t->gsse[c]. */
static void tile_error(const rfq_kernels *k, rfq_tile *t, size_t len, int bi, int gi, rf_qmode mode,
                       rf_dtype sd, rfq_acc *acc)
{
    int bits = rf_qbits[bi], gs = rf_qgs[gi], c = bi * RF_QGS_N + gi;
    size_t ng = len / (size_t)gs;
    const float *lo = t->lo[gi], *hi = t->hi[gi];
    if (mode == RF_QMODE_MLX) {
        k->params(lo, hi, ng, bits, sd, 1, &t->p);
        k->err_mlx(t->x, ng, gs, bits, &t->p, t->gsse[c], &acc->emax[c]);
    } else {
        const float *xs[RFQ_MAXG];
        for (size_t g = 0; g < ng; g++) xs[g] = t->x + g * gs;
        rfq_opt_groups(k, xs, (int)ng, gs, bits, sd, lo, hi, t->p.ss, t->p.bs, NULL, t->gsse[c], &acc->emax[c]);
    }
}

/* Each config's tensor sse is the double sum of its groups' sse in group order; the configs
 * of one group size are summed side by side so that their dependency chains overlap. */
static void tile_sums(const rfq_tile *t, size_t len, uint32_t cfgmask, rfq_acc *acc)
{
    for (int gi = 0; gi < RF_QGS_N; gi++) {
        size_t ng = len / (size_t)rf_qgs[gi];
        uint32_t all = 0;
        for (int c = gi; c < RF_QCFG_N; c += RF_QGS_N) all |= 1u << c;
        if ((cfgmask & all) == all) {
            double s[RF_QBITS_N];
            for (int bi = 0; bi < RF_QBITS_N; bi++) s[bi] = acc->sse[bi * RF_QGS_N + gi];
            for (size_t g = 0; g < ng; g++)
                for (int bi = 0; bi < RF_QBITS_N; bi++) s[bi] += (double)t->gsse[bi * RF_QGS_N + gi][g];
            for (int bi = 0; bi < RF_QBITS_N; bi++) acc->sse[bi * RF_QGS_N + gi] = s[bi];
        } else {
            for (int c = gi; c < RF_QCFG_N; c += RF_QGS_N) {
                if (!(cfgmask >> c & 1)) continue;
                for (size_t g = 0; g < ng; g++) acc->sse[c] += (double)t->gsse[c][g];
            }
        }
    }
}

/* Sum of squares when cols is not a multiple of 32 (no config applies): same lane rule per
 * 32-chunk, the last chunk shorter. */
static rf_status ssq_only(rf_dtype src, const void *w, uint64_t rows, uint64_t cols, double *ssq, rf_err *err)
{
    float x[32];
    for (uint64_t r = 0; r < rows; r++)
        for (uint64_t c0 = 0; c0 < cols; c0 += 32) {
            size_t len = (size_t)(cols - c0 < 32 ? cols - c0 : 32);
            long bad = load_ref(src, w, r * cols + c0, len, x);
            if (bad >= 0) return nonfinite(r, c0 + (uint64_t)bad, err);
            float l[8] = {0};
            for (size_t i = 0; i < len; i++) l[i & 7] = fmaf(x[i], x[i], l[i & 7]);
            *ssq += (double)rfq_tree8(l);
        }
    return RF_OK;
}

/* cfgmask: bit c set for each config to measure (all have gs dividing cols). */
static rf_status error_run(rf_dtype src, const void *w, uint64_t rows, uint64_t cols, uint32_t cfgmask,
                           rf_qmode mode, rf_dtype sd, rfq_acc *acc, rf_err *err)
{
    memset(acc, 0, sizeof *acc);
    if (cols % 32 || !cols) return ssq_only(src, w, rows, cols, &acc->ssq, err);
    const rfq_kernels *k = rfq_pick();
    rfq_tile *t = calloc(1, sizeof *t); /* zeroed: SIMD reads whole vectors past the last group */
    if (!t) return rf_err_set(err, RF_ERR_NOMEM, "quantization error: out of memory");
    rf_status st = RF_OK;
    /* A tile is whole groups of one row, or whole rows when they are narrow (every measured gs
     * divides cols, so no group straddles two rows); groups come in order either way. */
    const uint64_t nel = rows * cols, step = cols < RFQ_TILE ? RFQ_TILE / cols * cols : RFQ_TILE;
    size_t len;
    for (uint64_t off = 0; off < nel && st == RF_OK; off += len) {
        uint64_t lim = cols < RFQ_TILE ? nel : (off / cols + 1) * cols;
        len = (size_t)(lim - off < step ? lim - off : step);
        if ((st = tile_load(k, t, src, w, cols, off, len, err)) != RF_OK) break;
        for (size_t g = 0; g < len / 32; g++) acc->ssq += (double)t->ssq32[g];
        for (int bi = 0; bi < RF_QBITS_N; bi++)
            for (int gi = 0; gi < RF_QGS_N; gi++)
                if (cfgmask >> (bi * RF_QGS_N + gi) & 1) tile_error(k, t, len, bi, gi, mode, sd, acc);
        tile_sums(t, len, cfgmask, acc);
    }
    free(t);
    return st;
}

static void fill_qerr(const rfq_acc *acc, int c, int valid, rf_qerr *out)
{
    out->ssq = acc->ssq;
    out->sse = valid ? acc->sse[c] : NAN;
    out->max_abs = valid ? (double)acc->emax[c] : NAN;
}

rf_status rf_quant_error(rf_dtype src, const void *w, uint64_t rows, uint64_t cols,
                         int bits, int gs, rf_qmode mode, rf_dtype sdtype, rf_qerr *out, rf_err *err)
{
    rf_status st = check_common(src, w, rows, cols, sdtype, err);
    if (st == RF_OK) st = check_cfg(bits, gs, cols, err);
    if (st != RF_OK) return st;
    if (!out) return rf_err_set(err, RF_ERR_INVALID, "quantization error: NULL output");
    if (mode != RF_QMODE_MLX && mode != RF_QMODE_OPT) return rf_err_set(err, RF_ERR_INVALID, "quantize: bad mode %d", (int)mode);
    int bi = 0, gi = 0;
    while (rf_qbits[bi] != bits) bi++;
    while (rf_qgs[gi] != gs) gi++;
    int c = bi * RF_QGS_N + gi;
    rfq_acc *acc = malloc(sizeof *acc);
    if (!acc) return rf_err_set(err, RF_ERR_NOMEM, "quantization error: out of memory");
    st = error_run(src, w, rows, cols, 1u << c, mode, sdtype, acc, err);
    if (st == RF_OK) fill_qerr(acc, c, 1, out);
    free(acc);
    return st;
}

rf_status rf_quant_error_all(rf_dtype src, const void *w, uint64_t rows, uint64_t cols,
                             rf_qmode mode, rf_dtype sdtype, rf_qerr out[RF_QCFG_N], rf_err *err)
{
    rf_status st = check_common(src, w, rows, cols, sdtype, err);
    if (st != RF_OK) return st;
    if (!out) return rf_err_set(err, RF_ERR_INVALID, "quantization error: NULL output");
    if (mode != RF_QMODE_MLX && mode != RF_QMODE_OPT) return rf_err_set(err, RF_ERR_INVALID, "quantize: bad mode %d", (int)mode);
    uint32_t mask = 0;
    for (int c = 0; c < RF_QCFG_N; c++)
        if (cols % (uint64_t)rf_qgs[c % RF_QGS_N] == 0) mask |= 1u << c;
    rfq_acc *acc = malloc(sizeof *acc);
    if (!acc) return rf_err_set(err, RF_ERR_NOMEM, "quantization error: out of memory");
    st = error_run(src, w, rows, cols, mask, mode, sdtype, acc, err);
    if (st == RF_OK)
        for (int c = 0; c < RF_QCFG_N; c++) fill_qerr(acc, c, mask >> c & 1, &out[c]);
    free(acc);
    return st;
}

/* ---------------------------------------------------------------- sampled opt error
 *
 * A large unit's opt error is estimated from a sample of its groups (docs/profile.md, "Estimated
 * errors"). The opt search costs ~35 candidate evaluations per group and config, the per-group
 * range r2 = (max - min)^2 nothing: it comes with the group statistics every path computes. So
 * every group contributes its auxiliaries x = (r2, sqrt(r2 ref), ref) to exact totals, and a
 * group is searched with probability pi = min(1, rate r2 / ref), ref being the median r2 of its
 * neighbourhood (the tile: 1024 weights of one row, or whole rows of 1024 weights in all): groups
 * with a large range for their neighbourhood (outlier channels) are searched more often, down to
 * every one of them. The estimate is the regression (GREG) estimator of the total: the
 * Horvitz-Thompson sum of the searched groups' sse / pi, corrected by beta . (T - sum x / pi), beta
 * the sample's least squares fit of sse on x with weights 1 / (pi r2) (errors grow with r2).
 * Where rate >= 1 every group is searched and the sum is exact, in the order error_run uses. */

double rf_quant_sample_rate(uint64_t groups, uint64_t target)
{
    if (!target || target >= groups / 8 + (groups % 8 != 0)) return 1.0;
    return (double)target / (double)groups;
}

uint64_t rf_quant_piece_rows(uint64_t cols) { return cols && cols < RFQ_TILE ? RFQ_TILE / cols : 1; }

/* Uniform [0, 1) from a group's position: splitmix64's finaliser. */
static double group_u(uint64_t g, int gi)
{
    uint64_t z = g * (uint64_t)RF_QGS_N + (uint64_t)gi + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

/* The (upper) median of 1 <= n <= RFQ_MAXG values: quickselect (three-way partition) on a copy. */
static double median_of(const double *v, size_t n)
{
    double a[RFQ_MAXG];
    memcpy(a, v, n * sizeof *a);
    int lo = 0, hi = (int)n - 1;
    const int k = (int)n / 2;
    while (lo < hi) {
        const double piv = a[(lo + hi) / 2];
        int lt = lo, i = lo, gt = hi;
        while (i <= gt) {
            double x = a[i];
            if (x < piv) a[i++] = a[lt], a[lt++] = x;
            else if (x > piv) a[i] = a[gt], a[gt--] = x;
            else i++;
        }
        if (k < lt) hi = lt - 1;
        else if (k > gt) lo = gt + 1;
        else return piv;
    }
    return a[k];
}

/* One tile's groups of size index gi: auxiliaries of all, the opt search on the sampled ones.
 * Most groups are not sampled: for them only d = |max - min| is summed (sum r2 = sum d^2, sum
 * sqrt(r2 ref) = sqrt(ref) sum d) and u < pi is tested as u ref < rate r2, without a division. */
static void sample_tile(const rfq_kernels *k, rfq_tile *t, size_t len, int gi, uint32_t cfgmask, rf_dtype sd,
                        const double *rate, uint64_t g0, rf_qsums *o)
{
    const int gs = rf_qgs[gi];
    const size_t ng = len / (size_t)gs;
    double r2[RFQ_MAXG], d[RFQ_MAXG];
    for (size_t g = 0; g < ng; g++) {
        d[g] = (double)t->hi[gi][g] - (double)t->lo[gi][g];
        r2[g] = d[g] * d[g];
    }
    const double ref = median_of(r2, ng), sref = sqrt(ref);
    double s0 = 0, s1 = 0;
    uint64_t nz = 0;
    for (size_t g = 0; g < ng; g++) {
        s0 += r2[g];
        s1 += d[g];
        nz += r2[g] > 0;
    }
    o->t[gi][0] += s0;
    o->t[gi][1] += sref * s1;
    o->t[gi][2] += ref * (double)nz;
    o->groups[gi] += ng;
    /* the largest rate of this group size: a group it does not sample, no config samples */
    double rmax = 0;
    for (int bi = 0; bi < RF_QBITS_N; bi++) {
        const int c = bi * RF_QGS_N + gi;
        if ((cfgmask >> c & 1) && rate[c] > rmax) rmax = rate[c];
    }
    /* the candidates: groups sampled at rmax, with their uniform number (2: certain at every rate) */
    const float *xs[RFQ_MAXG];
    float slo[RFQ_MAXG], shi[RFQ_MAXG], e[RFQ_MAXG], ss[RFQ_MAXG], bs[RFQ_MAXG];
    double su[RFQ_MAXG], sr2[RFQ_MAXG], sd_[RFQ_MAXG];
    int ns = 0;
    for (size_t g = 0; g < ng; g++) {
        /* all weights equal: pi 0 below rate 1 (their error is 0, or nearly) */
        if (!(rmax >= 1) && !(r2[g] > 0)) continue;
        const double u = group_u(g0 + g, gi);
        if (!(rmax >= 1) && !(rmax * r2[g] >= ref) && !(u * ref < rmax * r2[g])) continue;
        xs[ns] = t->x + g * (size_t)gs;
        slo[ns] = t->lo[gi][g];
        shi[ns] = t->hi[gi][g];
        su[ns] = u, sr2[ns] = r2[g], sd_[ns++] = d[g];
    }
    for (int bi = 0; bi < RF_QBITS_N && ns; bi++) {
        const int c = bi * RF_QGS_N + gi;
        if (!(cfgmask >> c & 1)) continue;
        const float *cx[RFQ_MAXG];
        float clo[RFQ_MAXG], chi[RFQ_MAXG];
        double pis[RFQ_MAXG];
        int idx[RFQ_MAXG], nc = 0;
        for (int j = 0; j < ns; j++) {
            /* pi = min(1, rate r2 / ref): 1 with rate >= 1, with r2 >= ref / rate, or ref 0 (r2 > 0) */
            double pi;
            if (rate[c] >= 1) pi = 1;
            else if (!(sr2[j] > 0)) pi = 0;
            else if (rate[c] * sr2[j] >= ref) pi = 1;
            else if (su[j] * ref < rate[c] * sr2[j]) pi = rate[c] * sr2[j] / ref;
            else pi = 0;
            if (!(pi > 0)) continue;
            cx[nc] = xs[j], clo[nc] = slo[j], chi[nc] = shi[j], pis[nc] = pi, idx[nc++] = j;
        }
        if (!nc) continue;
        rfq_opt_groups(k, cx, nc, gs, rf_qbits[bi], sd, clo, chi, ss, bs, NULL, e, &o->emax[c]);
        o->sampled[c] += (uint64_t)nc;
        for (int j = 0; j < nc; j++) {
            const double pi = pis[j], r = sr2[idx[j]], x[3] = {r, sref * sd_[idx[j]], r > 0 ? ref : 0};
            const double w = r > 0 ? 1 / (pi * r) : 0;
            o->sse[c] += (double)e[j];
            o->h[c] += (double)e[j] / pi;
            for (int i = 0, ij = 0; i < 3; i++) {
                o->hx[c][i] += x[i] / pi;
                if (w > 0) {
                    o->xy[c][i] += x[i] * (double)e[j] * w;
                    for (int m = i; m < 3; m++, ij++) o->xx[c][ij] += x[i] * x[m] * w;
                }
            }
        }
    }
}

rf_status rf_quant_error_sample(rf_dtype src, const void *w, uint64_t rows, uint64_t cols, uint32_t cfgmask,
                                rf_dtype sdtype, const rf_qsample *s, rf_qsums *out, rf_err *err)
{
    rf_status st = check_common(src, w, rows, cols, sdtype, err);
    if (st != RF_OK) return st;
    if (!s || !out) return rf_err_set(err, RF_ERR_INVALID, "sampled error: NULL argument");
    if (cfgmask & ~(uint32_t)((1u << RF_QCFG_N) - 1)) return rf_err_set(err, RF_ERR_INVALID, "sampled error: bad config mask");
    for (int c = 0; c < RF_QCFG_N; c++)
        if ((cfgmask >> c & 1) && (st = check_cfg(rf_qbits[c / RF_QGS_N], rf_qgs[c % RF_QGS_N], cols, err)) != RF_OK) return st;
    for (int c = 0; c < RF_QCFG_N; c++)
        if ((cfgmask >> c & 1) && !(s->rate[c] > 0)) return rf_err_set(err, RF_ERR_INVALID, "sampled error: rate must be > 0");
    memset(out, 0, sizeof *out);
    if (!cfgmask || !rows) return RF_OK;
    const rfq_kernels *k = rfq_pick();
    rfq_tile *t = calloc(1, sizeof *t); /* zeroed: SIMD reads whole vectors past the last group */
    if (!t) return rf_err_set(err, RF_ERR_NOMEM, "sampled error: out of memory");
    unsigned gsets = 0;
    for (int c = 0; c < RF_QCFG_N; c++)
        if (cfgmask >> c & 1) gsets |= 1u << (c % RF_QGS_N);
    /* Tiles as error_run's, but aligned to the member's rows, so that a member cut into pieces at
     * multiples of rf_quant_piece_rows rows gives the same neighbourhoods. */
    const uint64_t tr = rf_quant_piece_rows(cols), row_g0 = (s->member * s->member_rows + s->row0) * cols;
    for (uint64_t r = 0; r < rows && st == RF_OK;) {
        uint64_t nr = cols < RFQ_TILE ? tr - (s->row0 + r) % tr : 1;
        nr = nr < rows - r ? nr : rows - r;
        for (uint64_t c0 = 0; c0 < nr * cols && st == RF_OK; c0 += RFQ_TILE) {
            uint64_t off = r * cols + c0;
            size_t len = (size_t)(nr * cols - c0 < RFQ_TILE ? nr * cols - c0 : RFQ_TILE);
            if ((st = tile_load(k, t, src, w, cols, off, len, err)) != RF_OK) break;
            for (int gi = 0; gi < RF_QGS_N; gi++)
                if (gsets >> gi & 1)
                    sample_tile(k, t, len, gi, cfgmask, sdtype, s->rate, (row_g0 + off) / (uint64_t)rf_qgs[gi], out);
        }
        r += nr;
    }
    free(t);
    return st;
}

void rf_qsums_add(rf_qsums *a, const rf_qsums *x)
{
    for (int gi = 0; gi < RF_QGS_N; gi++) {
        a->groups[gi] += x->groups[gi];
        for (int i = 0; i < 3; i++) a->t[gi][i] += x->t[gi][i];
    }
    for (int c = 0; c < RF_QCFG_N; c++) {
        a->sampled[c] += x->sampled[c];
        for (int i = 0; i < 3; i++) a->hx[c][i] += x->hx[c][i];
        for (int i = 0; i < 6; i++) a->xx[c][i] += x->xx[c][i];
        a->sse[c] += x->sse[c];
        a->h[c] += x->h[c];
        for (int i = 0; i < 3; i++) a->xy[c][i] += x->xy[c][i];
        a->emax[c] = x->emax[c] > a->emax[c] ? x->emax[c] : a->emax[c];
    }
}

/* beta = A^-1 b for the 3 x 3 symmetric A (upper triangle), by Cholesky on the matrix scaled to
 * unit diagonal; an auxiliary whose remaining pivot is tiny (a combination of the others, or
 * absent from the sample) is left out (beta 0). */
static void solve3(const double a[6], const double b[3], double beta[3])
{
    static const int ix[3][3] = {{0, 1, 2}, {1, 3, 4}, {2, 4, 5}};
    double d[3], l[3][3] = {{0}}, y[3] = {0};
    int use[3];
    for (int i = 0; i < 3; i++) {
        d[i] = a[ix[i][i]] > 0 ? sqrt(a[ix[i][i]]) : 0;
        use[i] = d[i] > 0 && isfinite(d[i]);
        beta[i] = 0;
    }
    for (int i = 0; i < 3; i++) {
        if (!use[i]) continue;
        double s = 1;
        for (int j = 0; j < i; j++) s -= l[i][j] * l[i][j];
        if (!(s > 1e-9)) { use[i] = 0; continue; }
        l[i][i] = sqrt(s);
        for (int r = i + 1; r < 3; r++) {
            if (!use[r]) continue;
            double v = a[ix[r][i]] / (d[r] * d[i]);
            for (int j = 0; j < i; j++) v -= l[r][j] * l[i][j];
            l[r][i] = v / l[i][i];
        }
    }
    for (int i = 0; i < 3; i++) {
        if (!use[i]) continue;
        double v = b[i] / d[i];
        for (int j = 0; j < i; j++) v -= l[i][j] * y[j];
        y[i] = v / l[i][i];
    }
    for (int i = 2; i >= 0; i--) {
        if (!use[i]) continue;
        double v = y[i];
        for (int j = i + 1; j < 3; j++) v -= l[j][i] * beta[j] * d[j];
        beta[i] = v / l[i][i] / d[i];
    }
}

void rf_qsums_error(const rf_qsums *s, int c, double *sse, double *max_abs, int *estimated)
{
    const int gi = c % RF_QGS_N;
    *max_abs = (double)s->emax[c];
    *estimated = s->sampled[c] < s->groups[gi];
    if (!*estimated) { /* every group searched: their sum, in group order */
        *sse = s->sse[c];
        return;
    }
    double beta[3], e = s->h[c];
    solve3(s->xx[c], s->xy[c], beta);
    for (int i = 0; i < 3; i++) e += beta[i] * (s->t[gi][i] - s->hx[c][i]);
    *sse = e > 0 ? e : 0;
}
/* ---------------------------------------------------------------- shared with gptq.c */

void rfq_pack(const uint8_t *q, uint64_t n, int bits, uint32_t *out)
{
    for (uint64_t c = 0; c < n; c += 128, q += 128, out += 4 * bits) pack_group(q, n - c < 128 ? (int)(n - c) : 128, bits, out);
}

void rfq_store(void *dst, uint64_t i, float v, rf_dtype sd) { store_sd(dst, i, v, sd); }
