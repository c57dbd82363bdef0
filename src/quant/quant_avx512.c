/* AVX-512 kernel of the opt search: two groups' candidates in one 16-lane vector, 8 per group
 * (rfq_kernels.cand2). Each lane performs the scalar reference's operations (cand_ref,
 * refit_ref) in its order, so the results are the reference's bit for bit. Why two groups and not
 * 16 candidates of one: the search's later rounds have 8 candidates, each chosen from the round
 * before, so only a second group fills the other half. */
#include "quant/quant_impl.h"

#if RF_X86
#include <immintrin.h>
#include <math.h>

#define SIGNF _mm512_set1_ps(-0.0f)

/* 8 candidates' doubles of group A in lanes 0-7 and of group B in lanes 8-15, as floats. */
RF_TARGET_AVX512 static inline __m512 cvt16pd(const double *a, const double *b)
{
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(_mm512_loadu_pd(a))), _mm512_cvtpd_ps(_mm512_loadu_pd(b)), 1);
}

/* refit_ref on 8 lanes, same operations in the same order (see refit4 in quant_avx2.c). */
RF_TARGET_AVX512 static void refit8(const rfq_gstat *st, __m512d q1, __m512d q2, __m512d qw, rfq_cand *c)
{
    const __m512d n = _mm512_set1_pd(st->n), s1 = _mm512_set1_pd(st->s1), s2 = _mm512_set1_pd(st->s2);
    const __m512d two = _mm512_set1_pd(2.0), zero = _mm512_setzero_pd(), inf = _mm512_set1_pd(INFINITY);
    __m512d d = _mm512_sub_pd(_mm512_mul_pd(n, q2), _mm512_mul_pd(q1, q1));
    __m512d s = _mm512_div_pd(_mm512_sub_pd(_mm512_mul_pd(n, qw), _mm512_mul_pd(q1, s1)), d);
    /* / n as * (1 / n): n is the group size, a power of two, so both give the same bits */
    __m512d b = _mm512_mul_pd(_mm512_sub_pd(s1, _mm512_mul_pd(s, q1)), _mm512_set1_pd(1.0 / st->n));
    __m512d t = _mm512_sub_pd(s2, _mm512_mul_pd(_mm512_mul_pd(two, s), qw));
    t = _mm512_sub_pd(t, _mm512_mul_pd(_mm512_mul_pd(two, b), s1));
    t = _mm512_add_pd(t, _mm512_mul_pd(_mm512_mul_pd(s, s), q2));
    t = _mm512_add_pd(t, _mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(two, s), b), q1));
    t = _mm512_add_pd(t, _mm512_mul_pd(_mm512_mul_pd(n, b), b));
    __mmask8 ok = _mm512_cmp_pd_mask(d, zero, _CMP_GT_OQ) & _mm512_cmp_pd_mask(s, zero, _CMP_GT_OQ) &
                  _mm512_cmp_pd_mask(t, inf, _CMP_LT_OQ);
    __m512d e = _mm512_mask_blend_pd(ok, inf, t);
    _mm512_storeu_pd(c->rs, s);
    _mm512_storeu_pd(c->rb, b);
    _mm512_storeu_pd(c->e, e);
    /* the first lane of the minimum, in registers (reading the stored lanes back one by one
     * would wait on the wide store) */
    const double m = _mm512_reduce_min_pd(e);
    c->emin = m;
    c->imin = __builtin_ctz((unsigned)_mm512_cmp_pd_mask(e, _mm512_set1_pd(m), _CMP_EQ_OQ) | 0x100u);
}

/* One element of each group for its 8 candidates: the code r, and r, r^2, r w added to the sums. */
RF_TARGET_AVX512 static inline __attribute__((always_inline)) void
cand_step(const float *wa, const float *wb, __m512 inv, __m512 cc, __m512 nv, __m512 *q1, __m512 *q2, __m512 *pw)
{
    __m512 wv = _mm512_mask_broadcastss_ps(_mm512_set1_ps(*wa), 0xff00, _mm_load_ss(wb));
    __m512 r = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(wv, inv, cc), _mm512_setzero_ps()), nv);
    r = _mm512_roundscale_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    *q1 = _mm512_add_ps(*q1, r);
    *q2 = _mm512_fmadd_ps(r, r, *q2);
    *pw = _mm512_fmadd_ps(r, wv, *pw);
}

/* nc vectors of 8 candidates for group A (xa, sta, ca) and as many for group B; B may be the
 * same group as A (then its results are simply written twice). Sums run in two chains, even and
 * odd elements, with q w in float over runs of RFQ_QW_RUN elements of a chain, as cand_ref. */
RF_TARGET_AVX512 void rfq_cand2_avx512(const float *xa, const float *xb, int gs, float n, const rfq_gstat *sta,
                                       const rfq_gstat *stb, rfq_cand *ca, rfq_cand *cb, int nc)
{
    const __m512 nv = _mm512_set1_ps(n), zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), inf = _mm512_set1_ps(INFINITY);
    for (int v = 0; v < nc; v++) {
        __m512 sf = cvt16pd(ca[v].s, cb[v].s), bf = cvt16pd(ca[v].b, cb[v].b);
        __mmask16 ok = _mm512_cmp_ps_mask(sf, zero, _CMP_GT_OQ) & _mm512_cmp_ps_mask(sf, inf, _CMP_LT_OQ) &
                       _mm512_cmp_ps_mask(_mm512_andnot_ps(SIGNF, bf), inf, _CMP_LT_OQ);
        __m512 iv = _mm512_div_ps(one, sf);
        const __m512 inv = _mm512_maskz_mov_ps(ok, iv), cc = _mm512_maskz_mov_ps(ok, _mm512_xor_ps(_mm512_mul_ps(bf, iv), SIGNF));
        __m512 q1a = zero, q1b = zero, q2a = zero, q2b = zero;
        __m512d wla = _mm512_setzero_pd(), wlb = wla, wha = wla, whb = wla;
        for (int i0 = 0; i0 < gs; i0 += 2 * RFQ_QW_RUN) {
            __m512 pwa = zero, pwb = zero;
#pragma GCC unroll 8
            for (int i = i0; i < i0 + 2 * RFQ_QW_RUN; i += 2) {
                cand_step(xa + i, xb + i, inv, cc, nv, &q1a, &q2a, &pwa);
                cand_step(xa + i + 1, xb + i + 1, inv, cc, nv, &q1b, &q2b, &pwb);
            }
            wla = _mm512_add_pd(wla, _mm512_cvtps_pd(_mm512_castps512_ps256(pwa)));
            wha = _mm512_add_pd(wha, _mm512_cvtps_pd(_mm512_extractf32x8_ps(pwa, 1)));
            wlb = _mm512_add_pd(wlb, _mm512_cvtps_pd(_mm512_castps512_ps256(pwb)));
            whb = _mm512_add_pd(whb, _mm512_cvtps_pd(_mm512_extractf32x8_ps(pwb, 1)));
        }
        __m512 a = _mm512_add_ps(q1a, q1b), b = _mm512_add_ps(q2a, q2b);
        refit8(sta, _mm512_cvtps_pd(_mm512_castps512_ps256(a)), _mm512_cvtps_pd(_mm512_castps512_ps256(b)),
               _mm512_add_pd(wla, wlb), &ca[v]);
        refit8(stb, _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(b, 1)),
               _mm512_add_pd(wha, whb), &cb[v]);
    }
}

RF_TARGET_AVX512 static inline float tree8(__m256 v)
{
    __m128 h = _mm_hadd_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); /* l0+l1 l2+l3 l4+l5 l6+l7 */
    h = _mm_hadd_ps(h, h);
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}

RF_TARGET_AVX512 static inline void store_codes(uint8_t *q, __m256 r)
{
    __m256i i = _mm256_cvtps_epi32(r);
    __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64((__m128i *)q, _mm_packus_epi16(w, w));
}

/* qgroup_ref for two parameter sets of one group at once, set A in lanes 0-7 and B in 8-15, each
 * on the same 8 weights per step: q = clamp(rint((w - b) / s)), w' = fmaf(ss, q, bs), lane sums of
 * (w - w')^2 and the max |w - w'| folded into emax[j] as qgroup does. The finalists of the opt
 * search: two of them per pass. */
RF_TARGET_AVX512 void rfq_qgroup2_avx512(const float *x, int gs, float n, const float *s, const float *b, const float *ss,
                                         const float *bs, uint8_t *qa, uint8_t *qb, float *sse, float *emax)
{
    const __m512 sv = _mm512_insertf32x8(_mm512_set1_ps(s[0]), _mm256_set1_ps(s[1]), 1);
    const __m512 bv = _mm512_insertf32x8(_mm512_set1_ps(b[0]), _mm256_set1_ps(b[1]), 1);
    const __m512 ssv = _mm512_insertf32x8(_mm512_set1_ps(ss[0]), _mm256_set1_ps(ss[1]), 1);
    const __m512 bsv = _mm512_insertf32x8(_mm512_set1_ps(bs[0]), _mm256_set1_ps(bs[1]), 1);
    const __m512 nv = _mm512_set1_ps(n), zero = _mm512_setzero_ps();
    __m512 acc = zero, em = zero;
    for (int i = 0; i < gs; i += 8) {
        __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
        __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_sub_ps(xv, bv), sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_min_ps(_mm512_max_ps(r, zero), nv);
        if (qa) store_codes(qa + i, _mm512_castps512_ps256(r));
        if (qb) store_codes(qb + i, _mm512_extractf32x8_ps(r, 1));
        __m512 e = _mm512_sub_ps(xv, _mm512_fmadd_ps(r, ssv, bsv));
        acc = _mm512_fmadd_ps(e, e, acc);
        em = _mm512_max_ps(_mm512_andnot_ps(SIGNF, e), em);
    }
    sse[0] = tree8(_mm512_castps512_ps256(acc));
    sse[1] = tree8(_mm512_extractf32x8_ps(acc, 1));
    /* max is exact in any order; fold as qgroup: NaN cannot occur (finite weights and parameters) */
    const float ma = _mm512_mask_reduce_max_ps(0x00ff, em), mb = _mm512_mask_reduce_max_ps(0xff00, em);
    emax[0] = ma > emax[0] ? ma : emax[0];
    emax[1] = mb > emax[1] ? mb : emax[1];
}

#else
typedef int rfq_avx512_unused; /* keep the translation unit non-empty */
#endif
