/* AVX-512 building blocks shared by the 8-bit kernels (matmul_q8.c) and the float panel product
 * (matmul_avx512.c): unpacking MLX codes to bytes, stored scales to floats, a 16x16 transpose of
 * 32-bit words. Static inline: each includer compiles them under its own target attribute. */
#ifndef RF_ENGINE_SIMD512_H
#define RF_ENGINE_SIMD512_H

#include "engine/engine_internal.h"

#if RF_X86
#include <immintrin.h>

/* Codes of bits 2..8 to bytes: a chunk of 64 codes is 8*bits bytes; qword i of the result gets
 * the bits bytes from i*bits (vpermb), then byte j of it the bits from bit j*bits
 * (vpmultishiftqb), masked. */
typedef struct {
    __m512i perm, shift, mask;
    __mmask64 full, half;    /* load masks: a whole chunk, its first 32 codes */
    int bits;
} unpack512;

RF_TARGET_AVX512VNNI static inline unpack512 make_unpack512(int bits)
{
    uint8_t perm[64], shift[64];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            int s = i * bits + j;
            perm[8 * i + j] = (uint8_t)(s < 64 ? s : 63);
            shift[8 * i + j] = (uint8_t)(j * bits);
        }
    unpack512 u;
    u.perm = _mm512_loadu_si512(perm);
    u.shift = _mm512_loadu_si512(shift);
    u.mask = _mm512_set1_epi8((char)((1 << bits) - 1));
    u.full = bits == 8 ? ~(__mmask64)0 : ((__mmask64)1 << (8 * bits)) - 1;
    u.half = ((__mmask64)1 << (4 * bits)) - 1;
    u.bits = bits;
    return u;
}

RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) __m512i unpack64(const uint8_t *p, __mmask64 m,
                                                                              const unpack512 *u)
{
    __m512i raw = _mm512_maskz_loadu_epi8(m, p);
    __m512i v = _mm512_multishift_epi64_epi8(u->shift, _mm512_permutexvar_epi8(u->perm, raw));
    return _mm512_and_si512(v, u->mask);
}

/* n (<= 16) stored scales/biases from element i as floats, zeros after. */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) __m512 load16f(rf_dtype dt, const void *p, uint64_t i,
                                                                             int n)
{
    __mmask16 m = (__mmask16)((1u << n) - 1);
    if (dt == RF_DT_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (dt == RF_DT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* out[0..n) as float, then 16 zeros (the kernels read a chunk's scales past the last group). */
RF_TARGET_AVX512VNNI static inline void load_row_floats(rf_dtype dt, const void *p, uint64_t i0, uint64_t n, float *out)
{
    uint64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, load16f(dt, p, i0 + i, 16));
    if (i < n) _mm512_storeu_ps(out + i, load16f(dt, p, i0 + i, (int)(n - i)));
    _mm512_storeu_ps(out + n, _mm512_setzero_ps());
}

/* Transpose 16 rows of 16 32-bit words in place. */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    /* r[4i + j]: rows 4i..4i+3 of column 4L + j in 128-bit lane L */
    for (int j = 0; j < 4; j++) {
        __m512i ab_lo = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x44), ab_hi = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xEE);
        __m512i cd_lo = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x44);
        __m512i cd_hi = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xEE);
        t[j] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0x88);
        t[4 + j] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0xDD);
        t[8 + j] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0x88);
        t[12 + j] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

#endif
#endif
