/* The exact batched product on AVX-512 (prompt, perplexity windows): float32 throughout, as
 * rf_matmul promises. A 32-row x 256-column tile of W is dequantized (MLX codes: vpermb +
 * vpmultishiftqb to bytes, then s * c + b) or converted (bf16/f16/f32) once into a panel laid
 * out [k][32 rows] (a 16x16 transpose), then a register-blocked kernel runs 2 row vectors x up
 * to 12 tokens: per column k two panel loads, one broadcast of x[t][k] per token and 24 FMAs.
 * Every output is one FMA chain over k in column order (tiles continue the chain through y), so
 * results do not depend on the thread count. */
#include "engine/engine_internal.h"
#include "engine/simd512.h"

#include <stdlib.h>
#include <string.h>

#if RF_X86
enum { FR = 32, FKT = 256, FNT = 12 };

typedef struct {
    float w[FKT][FR];
} fpanel;

static float scalar_at(rf_dtype dt, const void *p, uint64_t i)
{
    switch (dt) {
    case RF_DT_F32: return ((const float *)p)[i];
    case RF_DT_F16: return rf_f16_to_f32(((const uint16_t *)p)[i]);
    default: return rf_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

/* Columns [k0, k0 + kn) of rows [r0, r0 + nr) (nr <= 32) into the panel; missing rows and the
 * columns after kn in the last 16-column block are zero. */
RF_TARGET_AVX512VNNI static void pack_fpanel(const rf_wmat *w, uint64_t r0, int nr, uint64_t k0, uint64_t kn, fpanel *P)
{
    const int packed = w->dtype == RF_DT_U32;
    unpack512 u;
    uint64_t rb = 0, ng = 0, gs = 0;
    if (packed) {
        u = make_unpack512(w->bits);
        rb = w->cols * (uint64_t)w->bits / 8;
        gs = (uint64_t)w->gs;
        ng = w->cols / gs;
    }
    for (int h = 0; h < FR / 16; h++)
        for (uint64_t kb = 0; kb < kn; kb += 64) {
            /* 64 columns: four 16x16 blocks per half of the rows */
            uint64_t n64 = kn - kb < 64 ? kn - kb : 64;
            __m512 v[4][16];
            for (int i = 0; i < 16; i++) {
                int ri = 16 * h + i;
                if (ri >= nr) {
                    for (int q = 0; q < 4; q++) v[q][i] = _mm512_setzero_ps();
                    continue;
                }
                uint64_t r = r0 + (uint64_t)ri, c = k0 + kb;
                if (packed) {
                    /* n64 is 32 or 64 (groups of >= 32 divide the columns) */
                    __m512i codes = unpack64((const uint8_t *)w->data + r * rb + c * (uint64_t)w->bits / 8,
                                             n64 == 64 ? u.full : u.half, &u);
                    const __m128i cq[4] = {_mm512_extracti32x4_epi32(codes, 0), _mm512_extracti32x4_epi32(codes, 1),
                                           _mm512_extracti32x4_epi32(codes, 2), _mm512_extracti32x4_epi32(codes, 3)};
                    for (int q = 0; q < 4; q++) {
                        if (16 * (uint64_t)q >= n64) { v[q][i] = _mm512_setzero_ps(); continue; }
                        uint64_t g = r * ng + (c + 16 * (uint64_t)q) / gs; /* 16 codes lie in one group */
                        __m512 s = _mm512_set1_ps(scalar_at(w->sdtype, w->scales, g));
                        __m512 b = _mm512_set1_ps(scalar_at(w->sdtype, w->biases, g));
                        v[q][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(cq[q])), s, b);
                    }
                } else {
                    for (int q = 0; q < 4; q++) {
                        uint64_t c0 = c + 16 * (uint64_t)q;
                        int n = 16 * (uint64_t)q >= n64 ? 0 : (n64 - 16 * (uint64_t)q >= 16 ? 16 : (int)(n64 - 16 * (uint64_t)q));
                        v[q][i] = n ? load16f(w->dtype, w->data, r * w->cols + c0, n) : _mm512_setzero_ps();
                    }
                }
            }
            for (int q = 0; q < 4 && kb + 16 * (uint64_t)q < kn; q++) {
                __m512i t[16];
                for (int i = 0; i < 16; i++) t[i] = _mm512_castps_si512(v[q][i]);
                transpose16(t);
                uint64_t k = kb + 16 * (uint64_t)q;
                for (int j = 0; j < 16 && k + (uint64_t)j < kn; j++)
                    _mm512_store_si512((__m512i *)&P->w[k + (uint64_t)j][16 * h], t[j]);
            }
        }
}

/* y[t][r0 .. r0+32) (+)= panel . x[t][k0 .. k0+kn) for tokens t0 .. t0+NT. */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void fkernel(const fpanel *P, uint64_t kn, const float *x,
                                                                          uint64_t ldx, int NT, float *y, uint64_t ldy,
                                                                          __mmask16 m0, __mmask16 m1, int first)
{
    __m512 a0[FNT], a1[FNT];
    _Pragma("GCC unroll 12")
    for (int t = 0; t < NT; t++) {
        a0[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, y + (uint64_t)t * ldy);
        a1[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, y + (uint64_t)t * ldy + 16);
    }
    for (uint64_t k = 0; k < kn; k++) {
        __m512 w0 = _mm512_load_ps(P->w[k]), w1 = _mm512_load_ps(P->w[k] + 16);
        _Pragma("GCC unroll 12")
        for (int t = 0; t < NT; t++) {
            __m512 xb = _mm512_set1_ps(x[(uint64_t)t * ldx + k]);
            a0[t] = _mm512_fmadd_ps(w0, xb, a0[t]);
            a1[t] = _mm512_fmadd_ps(w1, xb, a1[t]);
        }
    }
    _Pragma("GCC unroll 12")
    for (int t = 0; t < NT; t++) {
        _mm512_mask_storeu_ps(y + (uint64_t)t * ldy, m0, a0[t]);
        _mm512_mask_storeu_ps(y + (uint64_t)t * ldy + 16, m1, a1[t]);
    }
}

RF_TARGET_AVX512VNNI static void fkernel_n(const fpanel *P, uint64_t kn, const float *x, uint64_t ldx, int nt, float *y,
                                       uint64_t ldy, __mmask16 m0, __mmask16 m1, int first)
{
    switch (nt) {
    case 1: fkernel(P, kn, x, ldx, 1, y, ldy, m0, m1, first); break;
    case 2: fkernel(P, kn, x, ldx, 2, y, ldy, m0, m1, first); break;
    case 3: fkernel(P, kn, x, ldx, 3, y, ldy, m0, m1, first); break;
    case 4: fkernel(P, kn, x, ldx, 4, y, ldy, m0, m1, first); break;
    case 5: fkernel(P, kn, x, ldx, 5, y, ldy, m0, m1, first); break;
    case 6: fkernel(P, kn, x, ldx, 6, y, ldy, m0, m1, first); break;
    case 7: fkernel(P, kn, x, ldx, 7, y, ldy, m0, m1, first); break;
    case 8: fkernel(P, kn, x, ldx, 8, y, ldy, m0, m1, first); break;
    case 9: fkernel(P, kn, x, ldx, 9, y, ldy, m0, m1, first); break;
    case 10: fkernel(P, kn, x, ldx, 10, y, ldy, m0, m1, first); break;
    case 11: fkernel(P, kn, x, ldx, 11, y, ldy, m0, m1, first); break;
    default: fkernel(P, kn, x, ldx, 12, y, ldy, m0, m1, first); break;
    }
}

RF_TARGET_AVX512VNNI void rf_gemm_f32_avx512(const rf_wmat *w, const float *x, int ntok, float *y, uint64_t r0, uint64_t r1)
{
    fpanel *P = aligned_alloc(64, sizeof(fpanel));
    if (!P) abort();
    uint64_t cols = w->cols, rows = w->rows;
    /* bytes per row and per column of the weights: packing reads FR short runs far apart, which
     * the hardware prefetcher does not follow, so the next k-block (or the next panel's first)
     * goes to L2 while this one is packed and used (as matmul_q8.c's panels) */
    const int packed = w->dtype == RF_DT_U32;
    const uint64_t rowb = packed ? cols * (uint64_t)w->bits / 8 : cols * rf_dtype_size(w->dtype);
    for (uint64_t rb = r0; rb < r1; rb += FR) {
        int nr = r1 - rb < FR ? (int)(r1 - rb) : FR;
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
        __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
        for (uint64_t k0 = 0; k0 < cols; k0 += FKT) {
            uint64_t kn = cols - k0 < FKT ? cols - k0 : FKT;
            uint64_t pr = rb, pk = k0 + FKT;
            int pn = nr;
            if (pk >= cols) pr = rb + FR, pk = 0, pn = r1 - pr < FR ? (int)(r1 - pr) : FR;
            if (pr < r1) {
                uint64_t pkn = cols - pk < FKT ? cols - pk : FKT;
                uint64_t off = packed ? pk * (uint64_t)w->bits / 8 : pk * rf_dtype_size(w->dtype);
                uint64_t len = packed ? pkn * (uint64_t)w->bits / 8 : pkn * rf_dtype_size(w->dtype);
                for (int i = 0; i < pn; i++)
                    for (uint64_t b = 0; b < len; b += 64)
                        _mm_prefetch((const char *)w->data + (pr + (uint64_t)i) * rowb + off + b, _MM_HINT_T1);
            }
            pack_fpanel(w, rb, nr, k0, kn, P);
            for (int t = 0; t < ntok; t += FNT) {
                int nt = ntok - t < FNT ? ntok - t : FNT;
                fkernel_n(P, kn, x + (uint64_t)t * cols + k0, cols, nt, y + (uint64_t)t * rows + rb, rows, m0, m1,
                          k0 == 0);
            }
        }
    }
    free(P);
}
#endif
