/* AVX2/FMA/F16C quantization kernels. Each one reproduces its scalar reference in quant.c bit
 * for bit: same IEEE operations per element, same lane assignment and reduction tree. The one
 * shortcut, q from floor(fma(w, 1/s, 1/2 - b/s + 2E)) instead of rint((w - b) / s), is only
 * taken for a group when a bound on its error proves every code equal; otherwise the group is
 * redone by division. */
#include "quant/quant_impl.h"

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

/* A bound on |w - w'| over a group, from the codes' exact quotients Q = fl(fl(w - b) / s) at
 * its ends (Q is monotonic in w). With q = clamp(rint(Q), 0, n) and w' = fl(ss q + bs):
 *   |w - b - s q| <= |s| (|Q - q| + 3u |Q|), |Q - q| <= max(1/2, Qmax - n, -Qmin),
 *   |w - w'| <= |w - b - s q| + |s - ss| n + |b - bs| + u (|ss| n + |bs|), u = 2^-24,
 * and the rounding of e and of this sum (non-negative terms, relative errors) is covered by
 * the factor 1 + 2^-20; subnormal results add less than 2^-126. Infinite or NaN: no bound. */
RF_TARGET_AVX2 static inline __m256 err_bound(__m256 lo, __m256 hi, __m256 nv, __m256 s, __m256 b, __m256 ss, __m256 bs)
{
    __m256 qa = _mm256_div_ps(_mm256_sub_ps(lo, b), s), qb = _mm256_div_ps(_mm256_sub_ps(hi, b), s);
    __m256 k = _mm256_max_ps(_mm256_set1_ps(0.5f), _mm256_sub_ps(_mm256_max_ps(qa, qb), nv));
    k = _mm256_max_ps(k, _mm256_xor_ps(_mm256_min_ps(qa, qb), SIGNF));
    __m256 qabs = _mm256_max_ps(_mm256_andnot_ps(SIGNF, qa), _mm256_andnot_ps(SIGNF, qb));
    __m256 as = _mm256_andnot_ps(SIGNF, s);
    __m256 t = _mm256_mul_ps(as, _mm256_fmadd_ps(qabs, _mm256_set1_ps(0x1p-22f), k));
    t = _mm256_fmadd_ps(_mm256_andnot_ps(SIGNF, _mm256_sub_ps(s, ss)), nv, t);
    t = _mm256_add_ps(t, _mm256_andnot_ps(SIGNF, _mm256_sub_ps(b, bs)));
    __m256 dq = _mm256_fmadd_ps(_mm256_andnot_ps(SIGNF, ss), nv, _mm256_andnot_ps(SIGNF, bs));
    t = _mm256_fmadd_ps(dq, _mm256_set1_ps(0x1p-24f), t);
    return _mm256_fmadd_ps(t, _mm256_set1_ps(1.0f + 0x1p-20f), _mm256_set1_ps(0x1p-126f));
}

/* Parameters of 8 groups per vector. The tile's arrays hold RFQ_MAXG (a multiple of 8) entries,
 * so whole vectors are read and written; lanes past ng compute on stale values and are unused. */
RF_TARGET_AVX2 static void params_avx2(const float *lo_in, const float *hi_in, size_t ng, int bits, rf_dtype sd, int fast, rfq_params *p)
{
    const __m256 nv = _mm256_set1_ps((float)((1 << bits) - 1)), eps = _mm256_set1_ps(1e-7f);
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
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
        __m256 b = _mm256_and_ps(edge, nz), ss = store_round8(s, sd), bs = store_round8(b, sd);
        _mm256_storeu_ps(p->s + g, s);
        _mm256_storeu_ps(p->b + g, b);
        _mm256_storeu_ps(p->ss + g, ss);
        _mm256_storeu_ps(p->bs + g, bs);
        if (!fast) continue;
        __m256 inv = _mm256_div_ps(one, s);
        /* Fast codes: t = fma(w, inv, c) with c = -b/s + 1/2 + 2E, code floor(t), where
         * |fma(w, inv, -b/s) - fl(fl(w - b) / s)| <= 2^-21 (|w| + |b|) / |s| (+ underflow), and
         * moving the constant and rounding t add less than 2^-22 ((|w| + |b|) / |s| + 1): E bounds
         * both. Then frac(t) >= 4E puts the exact quotient at least E inside (floor(t) - 1/2,
         * floor(t) + 1/2), so floor(t) is its rint; smaller fractions are uncertain. */
        __m256 X = _mm256_max_ps(alo, ahi);
        __m256 E = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_add_ps(X, _mm256_andnot_ps(SIGNF, b)), _mm256_andnot_ps(SIGNF, inv)),
                                   _mm256_set1_ps(0x1p-20f), _mm256_set1_ps(0x1p-20f + 0x1p-60f));
        __m256 c = _mm256_sub_ps(_mm256_add_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(E, E)), _mm256_mul_ps(b, inv));
        __m256 thr = _mm256_mul_ps(E, _mm256_set1_ps(4.0f));
        /* huge scales lose precision in 1/s; q0 == 0 lets codes go below 0 (the fast loop only
         * clamps at n); a huge E is useless: all take the exact path (thr 2 > any fraction) */
        __m256 slow = _mm256_or_ps(_mm256_cmp_ps(_mm256_andnot_ps(SIGNF, s), _mm256_set1_ps(0x1p100f), _CMP_NLT_UQ),
                                   _mm256_andnot_ps(nz, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
        slow = _mm256_or_ps(slow, _mm256_cmp_ps(E, _mm256_set1_ps(0x1p-6f), _CMP_NLT_UQ));
        thr = _mm256_blendv_ps(thr, _mm256_set1_ps(2.0f), slow);
        _mm256_storeu_ps(p->eb + g, err_bound(lo, hi, nv, s, b, ss, bs));
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

/* Fast codes for one vector from t (see params_avx2), and the fraction that decides whether
 * they are certain; t clamped at n + 1/2 gives the certain code n. */
RF_TARGET_AVX2 static inline __m256 fast_codes(__m256 t, __m256 *frac)
{
    __m256 q = _mm256_floor_ps(t);
    *frac = _mm256_sub_ps(t, q);
    return q;
}

/* A listed group's error by division (exact_codes); em only with want_em. */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) void
err_exact(const float *xg, const int gs, const int want_em, __m256 nv, const rfq_params *p, size_t g, __m256 *acc_out, __m256 *em_out)
{
    const __m256 sv = _mm256_set1_ps(p->s[g]), bv = _mm256_set1_ps(p->b[g]);
    const __m256 ssv = _mm256_set1_ps(p->ss[g]), bsv = _mm256_set1_ps(p->bs[g]);
    __m256 acc = _mm256_setzero_ps(), em = _mm256_setzero_ps();
    for (int i = 0; i < gs; i += 8) {
        __m256 xv = _mm256_loadu_ps(xg + i);
        __m256 e = _mm256_sub_ps(xv, _mm256_fmadd_ps(exact_codes(xv, sv, bv, nv), ssv, bsv));
        acc = _mm256_fmadd_ps(e, e, acc);
        if (want_em) em = _mm256_max_ps(_mm256_andnot_ps(SIGNF, e), em);
    }
    *acc_out = acc;
    *em_out = em;
}

/* Fast codes for every group. The loop has no data-dependent branch, so the groups'
 * dependency chains overlap: a group with an uncertain code (exact ties are common in BF16
 * data) is only listed, and redone by division after the loop. gs and want_em are
 * compile-time constants in each caller, so the inner loop unrolls; without want_em the max
 * |error| is not tracked (the caller has proved that it cannot exceed *emax). */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) void
err_mlx_gs(const float *x, size_t ng, const int gs, const int want_em, int bits, const rfq_params *p, float *gsse, float *emax)
{
    const float n = (float)((1 << bits) - 1);
    const __m256 nv = _mm256_set1_ps(n), nh = _mm256_set1_ps(n + 0.5f), zero = _mm256_setzero_ps();
    __m256 accv[RFQ_MAXG], emg[RFQ_MAXG];
    uint8_t redo[RFQ_MAXG];
    size_t nredo = 0;
    for (size_t g = 0; g < ng; g++) {
        const float *xg = x + g * (size_t)gs;
        const __m256 inv = _mm256_set1_ps(p->inv[g]), c = _mm256_set1_ps(p->c[g]);
        const __m256 ssv = _mm256_set1_ps(p->ss[g]), bsv = _mm256_set1_ps(p->bs[g]);
        __m256 acc = zero, em = zero, fmin = _mm256_set1_ps(1.0f);
#pragma GCC unroll 16
        for (int i = 0; i < gs; i += 8) {
            __m256 xv = _mm256_loadu_ps(xg + i), frac;
            __m256 q = fast_codes(_mm256_min_ps(_mm256_fmadd_ps(xv, inv, c), nh), &frac);
            fmin = _mm256_min_ps(fmin, frac);
            __m256 e = _mm256_sub_ps(xv, _mm256_fmadd_ps(q, ssv, bsv));
            acc = _mm256_fmadd_ps(e, e, acc);
            if (want_em) em = _mm256_max_ps(_mm256_andnot_ps(SIGNF, e), em);
        }
        accv[g] = acc;
        emg[g] = em;
        redo[nredo] = (uint8_t)g;
        nredo += _mm256_movemask_ps(_mm256_cmp_ps(fmin, _mm256_set1_ps(p->thr[g]), _CMP_NGE_UQ)) != 0;
    }
    for (size_t k = 0; k < nredo; k++) {
        size_t g = redo[k];
        err_exact(x + g * (size_t)gs, gs, want_em, nv, p, g, &accv[g], &emg[g]);
    }
    size_t g = 0;
    for (; g + 8 <= ng; g += 8) _mm256_storeu_ps(gsse + g, tree8x8(accv + g));
    for (; g < ng; g++) gsse[g] = tree8(accv[g]);
    if (want_em) {
        __m256 emv = zero;
        for (g = 0; g < ng; g++) emv = _mm256_max_ps(emg[g], emv);
        *emax = fold_max(*emax, hmax(emv));
    }
}

/* The max |error| is tracked only when some group's bound exceeds the running max: after the
 * first tiles of a tensor that is rare, and it saves two operations per vector. */
RF_TARGET_AVX2 static void err_mlx_avx2(const float *x, size_t ng, int gs, int bits, const rfq_params *p,
                                        float *gsse, float *emax)
{
    const __m256 ev = _mm256_set1_ps(*emax);
    __m256 le = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    size_t g = 0;
    for (; g + 8 <= ng; g += 8) le = _mm256_and_ps(le, _mm256_cmp_ps(_mm256_loadu_ps(p->eb + g), ev, _CMP_LE_OQ));
    int skip = _mm256_movemask_ps(le) == 0xff;
    for (; g < ng; g++) skip &= p->eb[g] <= *emax;
    if (!skip) {
        if (gs == 32) err_mlx_gs(x, ng, 32, 1, bits, p, gsse, emax);
        else if (gs == 64) err_mlx_gs(x, ng, 64, 1, bits, p, gsse, emax);
        else err_mlx_gs(x, ng, 128, 1, bits, p, gsse, emax);
    } else {
        if (gs == 32) err_mlx_gs(x, ng, 32, 0, bits, p, gsse, emax);
        else if (gs == 64) err_mlx_gs(x, ng, 64, 0, bits, p, gsse, emax);
        else err_mlx_gs(x, ng, 128, 0, bits, p, gsse, emax);
    }
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
    /* / n as * (1 / n): n is the group size, a power of two, so both give the same bits */
    __m256d b = _mm256_mul_pd(_mm256_sub_pd(s1, _mm256_mul_pd(s, q1)), _mm256_set1_pd(1.0 / st->n));
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

/* One element for 8 candidates: its code r, and r, r^2, r w added to the chain's sums. */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) void
cand_step(float w, __m256 inv, __m256 cc, __m256 nv, __m256 *q1, __m256 *q2, __m256 *pw)
{
    __m256 wv = _mm256_set1_ps(w);
    __m256 r = _mm256_min_ps(_mm256_max_ps(_mm256_fmadd_ps(wv, inv, cc), _mm256_setzero_ps()), nv);
    r = _mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    *q1 = _mm256_add_ps(*q1, r);
    *q2 = _mm256_fmadd_ps(r, r, *q2);
    *pw = _mm256_fmadd_ps(r, wv, *pw);
}

/* One vector of 8 candidates at a time; each sum runs in two chains (even and odd elements),
 * as in cand_ref, so that their latencies overlap. gs is a multiple of 2 * RFQ_QW_RUN. */
RF_TARGET_AVX2 static void cand_avx2(const float *x, int gs, float n, const rfq_gstat *st, rfq_cand *c, int nc)
{
    const __m256 nv = _mm256_set1_ps(n), zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), inf = _mm256_set1_ps(INFINITY);
    for (int v = 0; v < nc; v++) {
        __m256 sf = cvt8pd(c[v].s), bf = cvt8pd(c[v].b);
        __m256 ok = _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(sf, zero, _CMP_GT_OQ), _mm256_cmp_ps(sf, inf, _CMP_LT_OQ)),
                                  _mm256_cmp_ps(_mm256_andnot_ps(SIGNF, bf), inf, _CMP_LT_OQ));
        __m256 iv = _mm256_div_ps(one, sf);
        const __m256 inv = _mm256_and_ps(iv, ok), cc = _mm256_and_ps(_mm256_xor_ps(_mm256_mul_ps(bf, iv), SIGNF), ok);
        __m256 q1a = zero, q1b = zero, q2a = zero, q2b = zero;
        __m256d wla = _mm256_setzero_pd(), wlb = wla, wha = wla, whb = wla;
        for (int i0 = 0; i0 < gs; i0 += 2 * RFQ_QW_RUN) {
            __m256 pwa = zero, pwb = zero;
#pragma GCC unroll 8
            for (int i = i0; i < i0 + 2 * RFQ_QW_RUN; i += 2) {
                cand_step(x[i], inv, cc, nv, &q1a, &q2a, &pwa);
                cand_step(x[i + 1], inv, cc, nv, &q1b, &q2b, &pwb);
            }
            wla = _mm256_add_pd(wla, _mm256_cvtps_pd(_mm256_castps256_ps128(pwa)));
            wha = _mm256_add_pd(wha, _mm256_cvtps_pd(_mm256_extractf128_ps(pwa, 1)));
            wlb = _mm256_add_pd(wlb, _mm256_cvtps_pd(_mm256_castps256_ps128(pwb)));
            whb = _mm256_add_pd(whb, _mm256_cvtps_pd(_mm256_extractf128_ps(pwb, 1)));
        }
        __m256 a = _mm256_add_ps(q1a, q1b), b = _mm256_add_ps(q2a, q2b);
        refit4(st, _mm256_cvtps_pd(_mm256_castps256_ps128(a)), _mm256_cvtps_pd(_mm256_castps256_ps128(b)),
               _mm256_add_pd(wla, wlb), c[v].rs, c[v].rb, c[v].e);
        refit4(st, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)),
               _mm256_add_pd(wha, whb), c[v].rs + 4, c[v].rb + 4, c[v].e + 4);
        rfq_cand_min(&c[v]);
    }
}

/* gstat_ref's four chains as the four lanes of a vector of doubles (exact conversions, the same
 * additions in the same order; x * x of two floats is exact in double). */
RF_TARGET_AVX2 static void gstat_avx2(const float *x, int gs, rfq_gstat *st)
{
    __m256d a = _mm256_setzero_pd(), q = a;
    for (int i = 0; i < gs; i += 4) {
        __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        a = _mm256_add_pd(a, v);
        q = _mm256_add_pd(q, _mm256_mul_pd(v, v));
    }
    double la[4], lq[4];
    _mm256_storeu_pd(la, a);
    _mm256_storeu_pd(lq, q);
    *st = (rfq_gstat){gs, (la[0] + la[1]) + (la[2] + la[3]), (lq[0] + lq[1]) + (lq[2] + lq[3])};
}

RF_TARGET_AVX2 static void deq_avx2(const uint8_t *q, int gs, float ss, float bs, float *out)
{
    const __m256 ssv = _mm256_set1_ps(ss), bsv = _mm256_set1_ps(bs);
    for (int i = 0; i < gs; i += 8) {
        __m256 qv = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(q + i))));
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(ssv, qv, bsv));
    }
}

const rfq_kernels rfq_avx2 = {load_avx2, stats32_avx2, params_avx2, err_mlx_avx2, qgroup_avx2, gstat_avx2, cand_avx2, NULL,
                              NULL, deq_avx2};
/* With AVX-512 only the opt quantizer's search and finalists differ: they are most of its time. */
const rfq_kernels rfq_avx512 = {load_avx2, stats32_avx2, params_avx2, err_mlx_avx2, qgroup_avx2, gstat_avx2, cand_avx2,
                                rfq_cand2_avx512, rfq_qgroup2_avx512, deq_avx2};

#else
typedef int rfq_avx2_unused; /* keep the translation unit non-empty */
#endif
