/* AVX2/FMA/F16C quantization kernels. Each one reproduces its scalar reference in quant.c bit
 * for bit: same IEEE operations per element, same lane assignment and reduction tree. The one
 * shortcut, q from fma(w, 1/s, -b/s) instead of (w - b) / s, is only taken for a group when a
 * bound on its error proves every code equal; otherwise the group is redone by division. */
#include "quant_impl.h"

#if RF_X86
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define SIGNF _mm256_set1_ps(-0.0f)

RF_TARGET_AVX2 static inline float tree8(__m256 v)
{
    __m128 h = _mm_hadd_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l0+l1 l2+l3 l4+l5 l6+l7 */
    h = _mm_hadd_ps(h, h);
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

RF_TARGET_AVX2 static inline float hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

RF_TARGET_AVX2 static inline float hmin(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Same as the scalar "ae > em ? ae : em": maxps returns its second operand on NaN. */
static inline float fold_max(float em, float ae) { return ae > em ? ae : em; }

RF_TARGET_AVX2 static long load_avx2(rf_dtype src, const void *w, uint64_t off, size_t n, float *x)
{
    const __m256i expm = _mm256_set1_epi32(0x7f800000);
    __m256i bad = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v;
        if (src == RF_DT_BF16) {
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + off + i)));
            v = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        } else if (src == RF_DT_F16) {
            v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + off + i)));
        } else {
            v = _mm256_loadu_ps((const float *)w + off + i);
        }
        _mm256_storeu_ps(x + i, v);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v), expm), expm));
    }
    for (; i < n; i++) {
        float v;
        if (src == RF_DT_BF16) v = rf_bf16_to_f32(((const uint16_t *)w)[off + i]);
        else if (src == RF_DT_F16) v = rf_f16_to_f32(((const uint16_t *)w)[off + i]);
        else v = ((const float *)w)[off + i];
        x[i] = v;
    }
    if (_mm256_testz_si256(bad, bad) && n % 8 == 0) return -1;
    for (size_t j = 0; j < n; j++)
        if (!isfinite(x[j])) return (long)j;
    return -1;
}

RF_TARGET_AVX2 static void stats32_avx2(const float *x, size_t n, float *mn, float *mx, float *ssq)
{
    for (size_t g = 0; g < n / 32; g++, x += 32) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 hi = _mm256_max_ps(_mm256_max_ps(v0, v1), _mm256_max_ps(v2, v3));
        __m256 lo = _mm256_min_ps(_mm256_min_ps(v0, v1), _mm256_min_ps(v2, v3));
        __m256 a = _mm256_mul_ps(v0, v0);
        a = _mm256_fmadd_ps(v1, v1, a);
        a = _mm256_fmadd_ps(v2, v2, a);
        a = _mm256_fmadd_ps(v3, v3, a);
        mn[g] = hmin(lo);
        mx[g] = hmax(hi);
        ssq[g] = tree8(a);
    }
}

RF_TARGET_AVX2 static __m256 store_round8(__m256 v, rf_dtype sd)
{
    if (sd == RF_DT_BF16) {
        /* round to nearest even on the top 16 bits (NaN cannot occur here) */
        __m256i u = _mm256_castps_si256(v);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        u = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
        return _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32((int)0xffff0000u)));
    }
    if (sd == RF_DT_F16) return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    return v;
}

/* Parameters of 8 groups per vector. The tile's arrays hold RFQ_MAXG (a multiple of 8) entries,
 * so whole vectors are read and written; lanes past ng compute on stale values and are unused. */
RF_TARGET_AVX2 static void params_avx2(const float *lo_in, const float *hi_in, size_t ng, int bits, rf_dtype sd, rfq_params *p)
{
    const __m256 nv = _mm256_set1_ps((float)((1 << bits) - 1)), eps = _mm256_set1_ps(1e-7f);
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), minus1 = _mm256_set1_ps(-1.0f);
    for (size_t g = 0; g < ng; g += 8) {
        __m256 lo = _mm256_loadu_ps(lo_in + g), hi = _mm256_loadu_ps(hi_in + g);
        __m256 alo = _mm256_andnot_ps(SIGNF, lo), ahi = _mm256_andnot_ps(SIGNF, hi);
        __m256 neg = _mm256_cmp_ps(alo, ahi, _CMP_GT_OQ);
        __m256 s = _mm256_max_ps(_mm256_div_ps(_mm256_sub_ps(hi, lo), nv), eps);
        s = _mm256_xor_ps(s, _mm256_andnot_ps(neg, SIGNF));
        __m256 edge = _mm256_blendv_ps(hi, lo, neg);
        __m256 q0 = _mm256_round_ps(_mm256_div_ps(edge, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 nz = _mm256_cmp_ps(q0, zero, _CMP_NEQ_UQ);
        s = _mm256_blendv_ps(s, _mm256_div_ps(edge, q0), nz);
        __m256 b = _mm256_and_ps(edge, nz);
        __m256 inv = _mm256_div_ps(one, s);
        __m256 c = _mm256_xor_ps(_mm256_mul_ps(b, inv), SIGNF);
        /* |fma(w, inv, c) - fl(fl(w - b) / s)| <= 2^-24 (4|w| + 5|b|) / |s| (+ underflow) */
        __m256 X = _mm256_max_ps(alo, ahi);
        __m256 bound = _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(X, _mm256_andnot_ps(SIGNF, b)), _mm256_andnot_ps(SIGNF, inv)),
                                     _mm256_set1_ps(0x1p-21f));
        __m256 thr = _mm256_sub_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(bound, _mm256_set1_ps(0x1p-60f)));
        /* huge scales lose precision in 1/s; q0 == 0 lets codes go below 0 (the fast loop only
         * clamps at n): both take the exact path */
        __m256 slow = _mm256_or_ps(_mm256_cmp_ps(_mm256_andnot_ps(SIGNF, s), _mm256_set1_ps(0x1p100f), _CMP_NLT_UQ),
                                   _mm256_andnot_ps(nz, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
        thr = _mm256_blendv_ps(thr, minus1, slow);
        _mm256_storeu_ps(p->s + g, s);
        _mm256_storeu_ps(p->b + g, b);
        _mm256_storeu_ps(p->ss + g, store_round8(s, sd));
        _mm256_storeu_ps(p->bs + g, store_round8(b, sd));
        _mm256_storeu_ps(p->inv + g, inv);
        _mm256_storeu_ps(p->c + g, c);
        _mm256_storeu_ps(p->thr + g, thr);
    }
}

RF_TARGET_AVX2 static inline __m256 exact_codes(__m256 xv, __m256 sv, __m256 bv, __m256 nv)
{
    __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_sub_ps(xv, bv), sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_min_ps(_mm256_max_ps(r, _mm256_setzero_ps()), nv);
}

RF_TARGET_AVX2 static inline void store_codes(uint8_t *q, __m256 r)
{
    __m256i i = _mm256_cvtps_epi32(r);
    __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64((__m128i *)q, _mm_packus_epi16(w, w));
}

/* Exact path: q = clamp(rint((w - b) / s)), the reference's operations in its order. */
RF_TARGET_AVX2 static void qgroup_avx2(const float *x, int gs, float n, float s, float b, float ss, float bs,
                                       uint8_t *q, float *sse, float *emax)
{
    const __m256 sv = _mm256_set1_ps(s), bv = _mm256_set1_ps(b), ssv = _mm256_set1_ps(ss), bsv = _mm256_set1_ps(bs);
    const __m256 nv = _mm256_set1_ps(n), zero = _mm256_setzero_ps();
    __m256 acc = zero, em = zero;
    for (int i = 0; i < gs; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256 r = exact_codes(xv, sv, bv, nv);
        if (q) store_codes(q + i, r);
        __m256 e = _mm256_sub_ps(xv, _mm256_fmadd_ps(r, ssv, bsv));
        acc = _mm256_fmadd_ps(e, e, acc);
        em = _mm256_max_ps(_mm256_andnot_ps(SIGNF, e), em);
    }
    if (sse) *sse = tree8(acc);
    *emax = fold_max(*emax, hmax(em));
}

/* Lane sums of 8 groups at once: out[g] = ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)) of v[g]. */
RF_TARGET_AVX2 static inline __m256 tree8x8(const __m256 *v)
{
    __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* Codes from fma(w, 1/s, -b/s), clamped at n only (with q0 != 0 every exact code is >= 0 and
 * the approximation is off by less than 0.5). A group where some |frac| reaches thr is redone
 * by division. */
RF_TARGET_AVX2 static void err_mlx_avx2(const float *x, size_t ng, int gs, int bits, const rfq_params *p,
                                        float *gsse, float *emax)
{
    const __m256 nv = _mm256_set1_ps((float)((1 << bits) - 1)), zero = _mm256_setzero_ps();
    __m256 accv[RFQ_MAXG], emv = zero;
    for (size_t g = 0; g < ng; g++) {
        const float *xg = x + g * gs;
        const __m256 inv = _mm256_set1_ps(p->inv[g]), c = _mm256_set1_ps(p->c[g]), thr = _mm256_set1_ps(p->thr[g]);
        const __m256 ssv = _mm256_set1_ps(p->ss[g]), bsv = _mm256_set1_ps(p->bs[g]);
        __m256 acc = zero, em = zero;
        if (p->thr[g] > 0.0f) {
            __m256 dmax = zero; /* largest distance of a fraction from its code */
            for (int i = 0; i < gs; i += 8) {
                __m256 xv = _mm256_loadu_ps(xg + i);
                __m256 r = _mm256_min_ps(_mm256_fmadd_ps(xv, inv, c), nv);
                __m256 q = _mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                dmax = _mm256_max_ps(dmax, _mm256_andnot_ps(SIGNF, _mm256_sub_ps(r, q)));
                __m256 e = _mm256_sub_ps(xv, _mm256_fmadd_ps(q, ssv, bsv));
                acc = _mm256_fmadd_ps(e, e, acc);
                em = _mm256_max_ps(_mm256_andnot_ps(SIGNF, e), em);
            }
            if (!_mm256_movemask_ps(_mm256_cmp_ps(dmax, thr, _CMP_GE_OQ))) {
                accv[g] = acc;
                emv = _mm256_max_ps(em, emv);
                continue;
            }
            acc = em = zero;
        }
        /* redo by division (cheaper than a branch per vector: ties are frequent in BF16 data) */
        const __m256 sv = _mm256_set1_ps(p->s[g]), bv = _mm256_set1_ps(p->b[g]);
        for (int i = 0; i < gs; i += 8) {
            __m256 xv = _mm256_loadu_ps(xg + i);
            __m256 e = _mm256_sub_ps(xv, _mm256_fmadd_ps(exact_codes(xv, sv, bv, nv), ssv, bsv));
            acc = _mm256_fmadd_ps(e, e, acc);
            em = _mm256_max_ps(_mm256_andnot_ps(SIGNF, e), em);
        }
        accv[g] = acc;
        emv = _mm256_max_ps(em, emv);
    }
    size_t g = 0;
    for (; g + 8 <= ng; g += 8) _mm256_storeu_ps(gsse + g, tree8x8(accv + g));
    for (; g < ng; g++) gsse[g] = tree8(accv[g]);
    *emax = fold_max(*emax, hmax(emv));
}

RF_TARGET_AVX2 static inline __m256 cvt8pd(const double *d)
{
    return _mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd(d + 4)), _mm256_cvtpd_ps(_mm256_loadu_pd(d)));
}

/* refit_ref on 4 lanes, same operations in the same order. */
RF_TARGET_AVX2 static void refit4(const rfq_gstat *st, __m256d q1, __m256d q2, __m256d qw, double *rs, double *rb, double *e)
{
    const __m256d n = _mm256_set1_pd(st->n), s1 = _mm256_set1_pd(st->s1), s2 = _mm256_set1_pd(st->s2);
    const __m256d two = _mm256_set1_pd(2.0), zero = _mm256_setzero_pd(), inf = _mm256_set1_pd(INFINITY);
    __m256d d = _mm256_sub_pd(_mm256_mul_pd(n, q2), _mm256_mul_pd(q1, q1));
    __m256d s = _mm256_div_pd(_mm256_sub_pd(_mm256_mul_pd(n, qw), _mm256_mul_pd(q1, s1)), d);
    __m256d b = _mm256_div_pd(_mm256_sub_pd(s1, _mm256_mul_pd(s, q1)), n);
    __m256d t = _mm256_sub_pd(s2, _mm256_mul_pd(_mm256_mul_pd(two, s), qw));
    t = _mm256_sub_pd(t, _mm256_mul_pd(_mm256_mul_pd(two, b), s1));
    t = _mm256_add_pd(t, _mm256_mul_pd(_mm256_mul_pd(s, s), q2));
    t = _mm256_add_pd(t, _mm256_mul_pd(_mm256_mul_pd(_mm256_mul_pd(two, s), b), q1));
    t = _mm256_add_pd(t, _mm256_mul_pd(_mm256_mul_pd(n, b), b));
    __m256d ok = _mm256_and_pd(_mm256_and_pd(_mm256_cmp_pd(d, zero, _CMP_GT_OQ), _mm256_cmp_pd(s, zero, _CMP_GT_OQ)),
                               _mm256_cmp_pd(t, inf, _CMP_LT_OQ));
    _mm256_storeu_pd(rs, s);
    _mm256_storeu_pd(rb, b);
    _mm256_storeu_pd(e, _mm256_blendv_pd(inf, t, ok));
}

/* Up to 4 vectors of candidates together so their dependency chains overlap; each sum runs in
 * two chains (even and odd elements), as in cand_ref. gs is even. */
RF_TARGET_AVX2 static inline void cand_block(const float *x, int gs, __m256 nv, const rfq_gstat *st, rfq_cand *c, int cnt)
{
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), inf = _mm256_set1_ps(INFINITY);
    __m256 inv[4], cc[4], q1[4][2], q2[4][2];
    __m256d qwl[4][2], qwh[4][2];
    for (int v = 0; v < cnt; v++) {
        __m256 sf = cvt8pd(c[v].s), bf = cvt8pd(c[v].b);
        __m256 ok = _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(sf, zero, _CMP_GT_OQ), _mm256_cmp_ps(sf, inf, _CMP_LT_OQ)),
                                  _mm256_cmp_ps(_mm256_andnot_ps(SIGNF, bf), inf, _CMP_LT_OQ));
        __m256 iv = _mm256_div_ps(one, sf);
        inv[v] = _mm256_and_ps(iv, ok);
        cc[v] = _mm256_and_ps(_mm256_xor_ps(_mm256_mul_ps(bf, iv), SIGNF), ok);
        for (int h = 0; h < 2; h++) {
            q1[v][h] = q2[v][h] = zero;
            qwl[v][h] = qwh[v][h] = _mm256_setzero_pd();
        }
    }
    for (int i = 0; i < gs; i += 2)
        for (int h = 0; h < 2; h++) {
            __m256 wv = _mm256_set1_ps(x[i + h]);
            __m256d wd = _mm256_set1_pd((double)x[i + h]);
            for (int v = 0; v < cnt; v++) {
                __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(wv, inv[v], cc[v]), zero), nv);
                r = _mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q1[v][h] = _mm256_add_ps(q1[v][h], r);
                q2[v][h] = _mm256_fmadd_ps(r, r, q2[v][h]);
                qwl[v][h] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(r)), wd, qwl[v][h]);
                qwh[v][h] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(r, 1)), wd, qwh[v][h]);
            }
        }
    for (int v = 0; v < cnt; v++) {
        __m256 a = _mm256_add_ps(q1[v][0], q1[v][1]), b = _mm256_add_ps(q2[v][0], q2[v][1]);
        refit4(st, _mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_castps256_ps128(b)),
               _mm256_add_pd(qwl[v][0], qwl[v][1]), c[v].rs, c[v].rb, c[v].e);
        refit4(st, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)),
               _mm256_add_pd(qwh[v][0], qwh[v][1]), c[v].rs + 4, c[v].rb + 4, c[v].e + 4);
    }
}

RF_TARGET_AVX2 static void cand_avx2(const float *x, int gs, float n, const rfq_gstat *st, rfq_cand *c, int nc)
{
    const __m256 nv = _mm256_set1_ps(n);
    while (nc >= 4) { cand_block(x, gs, nv, st, c, 4); c += 4; nc -= 4; }
    if (nc == 3) cand_block(x, gs, nv, st, c, 3);
    else if (nc == 2) cand_block(x, gs, nv, st, c, 2);
    else if (nc == 1) cand_block(x, gs, nv, st, c, 1);
}

RF_TARGET_AVX2 static void deq_avx2(const uint8_t *q, int gs, float ss, float bs, float *out)
{
    const __m256 ssv = _mm256_set1_ps(ss), bsv = _mm256_set1_ps(bs);
    for (int i = 0; i < gs; i += 8) {
        __m256 qv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i))));
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(ssv, qv, bsv));
    }
}

const rfq_kernels rfq_avx2 = {load_avx2, stats32_avx2, params_avx2, err_mlx_avx2, qgroup_avx2, cand_avx2, deq_avx2};

#else
typedef int rfq_avx2_unused; /* keep the translation unit non-empty */
#endif
