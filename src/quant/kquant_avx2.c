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

rfk_encode_fn rfk_encoder_avx2(int type)
{
    (void)type;
    return NULL;
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
