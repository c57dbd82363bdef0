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
RF_TARGET_AVX512 static void refit8(const rfq_gstat *st, __m512d q1, __m512d q2, __m512d qw, double *rs, double *rb, double *e)
{
    const __m512d n = _mm512_set1_pd(st->n), s1 = _mm512_set1_pd(st->s1), s2 = _mm512_set1_pd(st->s2);
    const __m512d two = _mm512_set1_pd(2.0), zero = _mm512_setzero_pd(), inf = _mm512_set1_pd(INFINITY);
    __m512d d = _mm512_sub_pd(_mm512_mul_pd(n, q2), _mm512_mul_pd(q1, q1));
    __m512d s = _mm512_div_pd(_mm512_sub_pd(_mm512_mul_pd(n, qw), _mm512_mul_pd(q1, s1)), d);
    __m512d b = _mm512_div_pd(_mm512_sub_pd(s1, _mm512_mul_pd(s, q1)), n);
    __m512d t = _mm512_sub_pd(s2, _mm512_mul_pd(_mm512_mul_pd(two, s), qw));
    t = _mm512_sub_pd(t, _mm512_mul_pd(_mm512_mul_pd(two, b), s1));
    t = _mm512_add_pd(t, _mm512_mul_pd(_mm512_mul_pd(s, s), q2));
    t = _mm512_add_pd(t, _mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(two, s), b), q1));
    t = _mm512_add_pd(t, _mm512_mul_pd(_mm512_mul_pd(n, b), b));
    __mmask8 ok = _mm512_cmp_pd_mask(d, zero, _CMP_GT_OQ) & _mm512_cmp_pd_mask(s, zero, _CMP_GT_OQ) &
                  _mm512_cmp_pd_mask(t, inf, _CMP_LT_OQ);
    _mm512_storeu_pd(rs, s);
    _mm512_storeu_pd(rb, b);
    _mm512_storeu_pd(e, _mm512_mask_blend_pd(ok, inf, t));
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
               _mm512_add_pd(wla, wlb), ca[v].rs, ca[v].rb, ca[v].e);
        refit8(stb, _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(b, 1)),
               _mm512_add_pd(wha, whb), cb[v].rs, cb[v].rb, cb[v].e);
    }
}

#else
typedef int rfq_avx512_unused; /* keep the translation unit non-empty */
#endif
