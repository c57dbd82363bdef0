/* AVX2 fast paths of the ggml block-type kernels (kquant.c holds the scalar references).
 * Decoders: the same IEEE operations per element as the reference (integer code -> float, then
 * the reference's multiplies and subtractions in its order, never fused), so they give the same
 * bits; test_kquant checks that on every type. Types without a fast path use the reference. */
#include "quant/kquant.h"

#if RF_X86
#include <immintrin.h>

RF_TARGET_AVX2 static void dec_q8_0(const void *in, float *y, uint64_t n)
{
    const rfk_q8_0 *x = in;
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const __m256 d = _mm256_set1_ps(rf_f16_to_f32(x[b].d));
        for (int j = 0; j < 32; j += 8) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(x[b].qs + j)));
            _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
        }
    }
}

/* 32 codes of a 4-bit half (low or high nibbles of 32 bytes) plus optional 5th bits, scaled:
 * y = d * code - m, as (d * code) - m. */
RF_TARGET_AVX2 static inline void nib32(const uint8_t *q, int high, const uint8_t *qh, uint8_t hbit, float d, float m,
                                        float *y)
{
    const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    const __m256i mask = _mm256_set1_epi32(0xF);
    for (int l = 0; l < 32; l += 8) {
        __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(q + l)));
        c = high ? _mm256_srli_epi32(c, 4) : _mm256_and_si256(c, mask);
        if (qh) {
            __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(qh + l)));
            h = _mm256_and_si256(h, _mm256_set1_epi32(hbit));
            c = _mm256_add_epi32(c, _mm256_and_si256(_mm256_cmpeq_epi32(h, _mm256_set1_epi32(hbit)), _mm256_set1_epi32(16)));
        }
        _mm256_storeu_ps(y + l, _mm256_sub_ps(_mm256_mul_ps(vd, _mm256_cvtepi32_ps(c)), vm));
    }
}

RF_TARGET_AVX2 static void dec_q4_k(const void *in, float *y, uint64_t n)
{
    const rfk_q4_k *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = rf_f16_to_f32(x[b].d), mn = rf_f16_to_f32(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int j = 0; j < 4; j++, q += 32, y += 64) {
            uint8_t s1, m1, s2, m2;
            rfk_scale_min_k4(2 * j, x[b].scales, &s1, &m1);
            rfk_scale_min_k4(2 * j + 1, x[b].scales, &s2, &m2);
            nib32(q, 0, NULL, 0, d * s1, mn * m1, y);
            nib32(q, 1, NULL, 0, d * s2, mn * m2, y + 32);
        }
    }
}

RF_TARGET_AVX2 static void dec_q5_k(const void *in, float *y, uint64_t n)
{
    const rfk_q5_k *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = rf_f16_to_f32(x[b].d), mn = rf_f16_to_f32(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int j = 0; j < 4; j++, q += 32, y += 64) {
            uint8_t s1, m1, s2, m2;
            rfk_scale_min_k4(2 * j, x[b].scales, &s1, &m1);
            rfk_scale_min_k4(2 * j + 1, x[b].scales, &s2, &m2);
            nib32(q, 0, x[b].qh, (uint8_t)(1u << (2 * j)), d * s1, mn * m1, y);
            nib32(q, 1, x[b].qh, (uint8_t)(2u << (2 * j)), d * s2, mn * m2, y + 32);
        }
    }
}

RF_TARGET_AVX2 static void dec_q6_k(const void *in, float *y, uint64_t n)
{
    const rfk_q6_k *x = in;
    const __m256i m4 = _mm256_set1_epi32(0xF), m2 = _mm256_set1_epi32(3), c32 = _mm256_set1_epi32(32);
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = rf_f16_to_f32(x[b].d);
        const uint8_t *ql = x[b].ql, *qh = x[b].qh;
        const int8_t *sc = x[b].scales;
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8)
            for (int l = 0; l < 32; l += 8) {
                const int is = l / 16;
                __m256i a = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(ql + l)));
                __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(ql + l + 32)));
                __m256i hh = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(qh + l)));
                __m256i q1 = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_slli_epi32(_mm256_and_si256(hh, m2), 4));
                __m256i q2 = _mm256_or_si256(_mm256_and_si256(c, m4),
                                             _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 2), m2), 4));
                __m256i q3 = _mm256_or_si256(_mm256_srli_epi32(a, 4),
                                             _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 4), m2), 4));
                __m256i q4 = _mm256_or_si256(_mm256_srli_epi32(c, 4),
                                             _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hh, 6), m2), 4));
                /* the reference computes (d * sc) * q: the scale product first, in float */
                _mm256_storeu_ps(y + l, _mm256_mul_ps(_mm256_set1_ps(d * sc[is]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q1, c32))));
                _mm256_storeu_ps(y + l + 32, _mm256_mul_ps(_mm256_set1_ps(d * sc[is + 2]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q2, c32))));
                _mm256_storeu_ps(y + l + 64, _mm256_mul_ps(_mm256_set1_ps(d * sc[is + 4]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q3, c32))));
                _mm256_storeu_ps(y + l + 96, _mm256_mul_ps(_mm256_set1_ps(d * sc[is + 6]), _mm256_cvtepi32_ps(_mm256_sub_epi32(q4, c32))));
            }
    }
}

RF_TARGET_AVX2 static void dec_q4_0(const void *in, float *y, uint64_t n)
{
    const rfk_q4_0 *x = in;
    const __m256i m4 = _mm256_set1_epi32(0xF), c8 = _mm256_set1_epi32(8);
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const __m256 d = _mm256_set1_ps(rf_f16_to_f32(x[b].d));
        for (int j = 0; j < 16; j += 8) {
            __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(x[b].qs + j)));
            _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_and_si256(q, m4), c8)), d));
            _mm256_storeu_ps(y + j + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(q, 4), c8)), d));
        }
    }
}


/* ------------------------------------------------------------------ encoders
 * The sub-block searches (ggml's make_qkx2_quants and make_qx_quants) run on 8 sub-blocks at
 * once, one per lane: element i of every sub-block is one vector (the super-block transposed), so
 * each lane does exactly the reference's float operations in the reference's order (compare and
 * blend where it branches, multiply then add where it writes a*b+c, IEEE division and square root).
 * The encoders' tails (rfk_*_finish) are the reference's own code. */

/* ggml's round-half-even through the 1.5 * 2^23 bias, per lane (rfk_nearest_int). */
RF_TARGET_AVX2 static inline __m256i nearest8(__m256 f)
{
    __m256i i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
}

RF_TARGET_AVX2 static inline __m256i clamp8(__m256i v, int lo, int hi)
{
    return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi));
}

RF_TARGET_AVX2 static inline __m256 sel(__m256 a, __m256 b, __m256 m) { return _mm256_blendv_ps(a, b, m); }

/* make_qkx2_quants for 8 lanes: x and w are [n][8]; scale/the_min [8]; L [8][n]. */
RF_TARGET_AVX2 static void qkx2_x8(const float *x, const float *w, int n, int nmax, float rmin, float rdelta, int nstep,
                                   int use_mad, float *scale_out, float *min_out, uint8_t *Lout)
{
    __m256i L[32], Laux[32];
    const __m256 zero = _mm256_setzero_ps(), absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 mn = _mm256_loadu_ps(x), mx = mn, sw = _mm256_loadu_ps(w);
    __m256 sx = _mm256_mul_ps(sw, mn);
    for (int i = 1; i < n; i++) {
        __m256 xi = _mm256_loadu_ps(x + 8 * i), wi = _mm256_loadu_ps(w + 8 * i);
        mn = sel(mn, xi, _mm256_cmp_ps(xi, mn, _CMP_LT_OQ));
        mx = sel(mx, xi, _mm256_cmp_ps(xi, mx, _CMP_GT_OQ));
        sw = _mm256_add_ps(sw, wi);
        sx = _mm256_add_ps(sx, _mm256_mul_ps(wi, xi));
    }
    mn = sel(mn, zero, _mm256_cmp_ps(mn, zero, _CMP_GT_OQ));
    const __m256 flat = _mm256_cmp_ps(mx, mn, _CMP_EQ_OQ), range = _mm256_sub_ps(mx, mn);
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)nmax), range);
    __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale), best = zero;
    for (int i = 0; i < n; i++) {
        __m256 xi = _mm256_loadu_ps(x + 8 * i), wi = _mm256_loadu_ps(w + 8 * i);
        L[i] = clamp8(nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(xi, mn))), 0, nmax);
        __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(L[i])), mn), xi);
        diff = use_mad ? _mm256_and_ps(diff, absmask) : _mm256_mul_ps(diff, diff);
        best = _mm256_add_ps(best, _mm256_mul_ps(wi, diff));
    }
    for (int is = 0; is <= nstep; is++) {
        const float num = rmin + rdelta * is + nmax;
        /* max - min with the min of the best fit so far, as the reference (it updates min) */
        iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(mx, mn));
        __m256 sl = zero, sl2 = zero, sxl = zero;
        for (int i = 0; i < n; i++) {
            __m256 xi = _mm256_loadu_ps(x + 8 * i), wi = _mm256_loadu_ps(w + 8 * i);
            Laux[i] = clamp8(nearest8(_mm256_mul_ps(iscale, _mm256_sub_ps(xi, mn))), 0, nmax);
            __m256 wl = _mm256_mul_ps(wi, _mm256_cvtepi32_ps(Laux[i]));
            sl = _mm256_add_ps(sl, wl);
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wl, _mm256_cvtepi32_ps(Laux[i])));
            sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wl, xi));
        }
        __m256 D = _mm256_sub_ps(_mm256_mul_ps(sw, sl2), _mm256_mul_ps(sl, sl));
        __m256 ok = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
        if (!_mm256_movemask_ps(ok)) continue;
        __m256 ts = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sw, sxl), _mm256_mul_ps(sx, sl)), D);
        __m256 tm = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sl2, sx), _mm256_mul_ps(sl, sxl)), D);
        __m256 pos = _mm256_cmp_ps(tm, zero, _CMP_GT_OQ);
        tm = sel(tm, zero, pos);
        ts = sel(ts, _mm256_div_ps(sxl, sl2), pos);
        __m256 cur = zero;
        for (int i = 0; i < n; i++) {
            __m256 xi = _mm256_loadu_ps(x + 8 * i), wi = _mm256_loadu_ps(w + 8 * i);
            __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(ts, _mm256_cvtepi32_ps(Laux[i])), tm), xi);
            diff = use_mad ? _mm256_and_ps(diff, absmask) : _mm256_mul_ps(diff, diff);
            cur = _mm256_add_ps(cur, _mm256_mul_ps(wi, diff));
        }
        __m256 upd = _mm256_and_ps(ok, _mm256_cmp_ps(cur, best, _CMP_LT_OQ));
        if (!_mm256_movemask_ps(upd)) continue;
        for (int i = 0; i < n; i++)
            L[i] = _mm256_castps_si256(sel(_mm256_castsi256_ps(L[i]), _mm256_castsi256_ps(Laux[i]), upd));
        best = sel(best, cur, upd);
        scale = sel(scale, ts, upd);
        mn = sel(mn, tm, upd);
    }
    scale = sel(scale, zero, flat);
    _mm256_storeu_ps(scale_out, scale);
    _mm256_storeu_ps(min_out, _mm256_sub_ps(zero, mn));
    int32_t lv[8];
    int fl = _mm256_movemask_ps(flat);
    for (int i = 0; i < n; i++) {
        _mm256_storeu_si256((__m256i *)(void *)lv, L[i]);
        for (int j = 0; j < 8; j++) Lout[j * n + i] = (uint8_t)(fl >> j & 1 ? 0 : lv[j]);
    }
}

/* make_qx_quants (rmse_type 1, weights x^2) for 8 lanes of 16: x [16][8]; L [8][16] as code + nmax. */
RF_TARGET_AVX2 static void qx_x8(const float *x, int nmax, float *scale_out, int8_t *Lout)
{
    enum { n = 16 };
    __m256i L[n];
    const __m256 zero = _mm256_setzero_ps(), absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 amax = zero, max = zero;
    for (int i = 0; i < n; i++) {
        __m256 xi = _mm256_loadu_ps(x + 8 * i), ax = _mm256_and_ps(xi, absmask), m = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
        amax = sel(amax, ax, m);
        max = sel(max, xi, m);
    }
    const __m256 tiny = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
    __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), max);
    __m256 slx = zero, sl2 = zero;
    for (int i = 0; i < n; i++) {
        __m256 xi = _mm256_loadu_ps(x + 8 * i);
        __m256i l = clamp8(nearest8(_mm256_mul_ps(iscale, xi)), -nmax, nmax - 1);
        L[i] = _mm256_add_epi32(l, _mm256_set1_epi32(nmax));
        __m256 w = _mm256_mul_ps(xi, xi), lf = _mm256_cvtepi32_ps(l);
        slx = _mm256_add_ps(slx, _mm256_mul_ps(_mm256_mul_ps(w, xi), lf));
        sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, lf), lf));
    }
    __m256 scale = sel(zero, _mm256_div_ps(slx, sl2), _mm256_cmp_ps(sl2, zero, _CMP_NEQ_UQ));
    __m256 best = _mm256_mul_ps(scale, slx);
    for (int is = -9; is <= 9; is++) {
        if (!is) continue;
        const float num = -(nmax + 0.1f * is);
        iscale = _mm256_div_ps(_mm256_set1_ps(num), max);
        slx = sl2 = zero;
        __m256i li[n];
        for (int i = 0; i < n; i++) {
            __m256 xi = _mm256_loadu_ps(x + 8 * i);
            li[i] = clamp8(nearest8(_mm256_mul_ps(iscale, xi)), -nmax, nmax - 1);
            __m256 w = _mm256_mul_ps(xi, xi), lf = _mm256_cvtepi32_ps(li[i]);
            slx = _mm256_add_ps(slx, _mm256_mul_ps(_mm256_mul_ps(w, xi), lf));
            sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, lf), lf));
        }
        __m256 upd = _mm256_and_ps(_mm256_cmp_ps(sl2, zero, _CMP_GT_OQ),
                                   _mm256_cmp_ps(_mm256_mul_ps(slx, slx), _mm256_mul_ps(best, sl2), _CMP_GT_OQ));
        if (!_mm256_movemask_ps(upd)) continue;
        for (int i = 0; i < n; i++)
            L[i] = _mm256_castps_si256(sel(_mm256_castsi256_ps(L[i]),
                                           _mm256_castsi256_ps(_mm256_add_epi32(li[i], _mm256_set1_epi32(nmax))), upd));
        __m256 ns = _mm256_div_ps(slx, sl2);
        scale = sel(scale, ns, upd);
        best = sel(best, _mm256_mul_ps(ns, slx), upd);
    }
    scale = sel(scale, zero, tiny);
    _mm256_storeu_ps(scale_out, scale);
    int32_t lv[8];
    int tz = _mm256_movemask_ps(tiny);
    for (int i = 0; i < n; i++) {
        _mm256_storeu_si256((__m256i *)(void *)lv, L[i]);
        for (int j = 0; j < 8; j++) Lout[j * n + i] = (int8_t)(tz >> j & 1 ? 0 : lv[j]);
    }
}

/* Element i of sub-block j of length N (8 sub-blocks from X) at t[i*8 + j]. */
static void transpose8(const float *x, int n, float *t)
{
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < n; i++) t[i * 8 + j] = x[j * n + i];
}

/* Q4_K/Q5_K weights per lane: sqrt(mean x^2) + |x| of each 32-block. */
RF_TARGET_AVX2 static void k4_weights8(const float *t, float *w)
{
    __m256 s2 = _mm256_setzero_ps();
    for (int i = 0; i < 32; i++) {
        __m256 xi = _mm256_loadu_ps(t + 8 * i);
        s2 = _mm256_add_ps(s2, _mm256_mul_ps(xi, xi));
    }
    __m256 av = _mm256_sqrt_ps(_mm256_div_ps(s2, _mm256_set1_ps(32.0f)));
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int i = 0; i < 32; i++) _mm256_storeu_ps(w + 8 * i, _mm256_add_ps(av, _mm256_and_ps(_mm256_loadu_ps(t + 8 * i), absmask)));
}

RF_TARGET_AVX2 static void enc_q4_k(const float *x, void *out, uint64_t n)
{
    rfk_q4_k *y = out;
    float t[256], w[256], scales[8], mins[8];
    uint8_t L[RFK_QK];
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        transpose8(x, 32, t);
        k4_weights8(t, w);
        qkx2_x8(t, w, 32, 15, -1.f, 0.1f, 20, 0, scales, mins, L);
        rfk_k4_finish(x, 15, scales, mins, L, &y[b].d, &y[b].dmin, y[b].scales);
        rfk_q4k_pack(L, &y[b]);
    }
}

RF_TARGET_AVX2 static void enc_q5_k(const float *x, void *out, uint64_t n)
{
    rfk_q5_k *y = out;
    float t[256], w[256], scales[8], mins[8];
    uint8_t L[RFK_QK];
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        transpose8(x, 32, t);
        k4_weights8(t, w);
        qkx2_x8(t, w, 32, 31, -0.5f, 0.1f, 15, 0, scales, mins, L);
        rfk_k4_finish(x, 31, scales, mins, L, &y[b].d, &y[b].dmin, y[b].scales);
        rfk_q5k_pack(L, &y[b]);
    }
}

RF_TARGET_AVX2 static void enc_q2_k(const float *x, void *out, uint64_t n)
{
    rfk_q2_k *y = out;
    float t[128], w[128], scales[16], mins[16];
    uint8_t L[RFK_QK];
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        for (int g = 0; g < 2; g++) {
            transpose8(x + 128 * g, 16, t);
            for (int i = 0; i < 16; i++) _mm256_storeu_ps(w + 8 * i, _mm256_and_ps(_mm256_loadu_ps(t + 8 * i), absmask));
            qkx2_x8(t, w, 16, 3, -0.5f, 0.1f, 15, 1, scales + 8 * g, mins + 8 * g, L + 128 * g);
        }
        rfk_q2k_finish(x, scales, mins, L, &y[b]);
    }
}

RF_TARGET_AVX2 static void enc_q6_k(const float *x, void *out, uint64_t n)
{
    rfk_q6_k *y = out;
    float t[128], scales[16];
    int8_t L[RFK_QK];
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        for (int g = 0; g < 2; g++) {
            transpose8(x + 128 * g, 16, t);
            qx_x8(t, 32, scales + 8 * g, L + 128 * g);
        }
        rfk_q6k_finish(x, scales, L, &y[b]);
    }
}

rfk_encode_fn rfk_encoder_avx2(int type)
{
    switch (type) {
    case RF_GT_Q2_K: return enc_q2_k;
    case RF_GT_Q4_K: return enc_q4_k;
    case RF_GT_Q5_K: return enc_q5_k;
    case RF_GT_Q6_K: return enc_q6_k;
    default: return NULL;
    }
}

rfk_decode_fn rfk_decoder_avx2(int type)
{
    switch (type) {
    case RF_GT_Q8_0: return dec_q8_0;
    case RF_GT_Q4_0: return dec_q4_0;
    case RF_GT_Q4_K: return dec_q4_k;
    case RF_GT_Q5_K: return dec_q5_k;
    case RF_GT_Q6_K: return dec_q6_k;
    default: return NULL;
    }
}

#else
rfk_encode_fn rfk_encoder_avx2(int type) { (void)type; return NULL; }
rfk_decode_fn rfk_decoder_avx2(int type) { (void)type; return NULL; }
#endif
