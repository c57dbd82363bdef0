/* Internal to the ggml block-type kernels (kquant.c, kquant_avx2.c) and their tests.
 *
 * Block layouts are GGUF's on-disk layouts (little-endian, no padding); the encoders reproduce
 * ggml's reference encoders (what llama-quantize runs without an importance matrix) bit for bit.
 * That needs the same float operations in the same order, with no FMA contraction: kquant.c is
 * compiled with -ffp-contract=off (CMakeLists.txt). */
#ifndef RF_KQUANT_H
#define RF_KQUANT_H

#include "common/internal.h"

#include <string.h>

#define RFK_QK 256 /* super-block of the k-quants */

typedef struct { uint16_t d; uint8_t qs[16]; } rfk_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } rfk_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } rfk_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } rfk_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } rfk_q8_0;
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } rfk_q2_k;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } rfk_q3_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } rfk_q4_k;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } rfk_q5_k;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } rfk_q6_k;
typedef struct { uint16_t d; uint8_t qs[16]; } rfk_iq4_nl;
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } rfk_iq4_xs;

/* Scalar reference encoders of one row of n weights (n a multiple of the block size). */
typedef void (*rfk_encode_fn)(const float *x, void *out, uint64_t n);
typedef void (*rfk_decode_fn)(const void *in, float *out, uint64_t n);
rfk_encode_fn rfk_encoder_ref(int type);
rfk_decode_fn rfk_decoder_ref(int type);
/* The encoder/decoder rf_gquant_rows / rf_gdequant_row use on this CPU (fast path or reference). */
rfk_encode_fn rfk_encoder(int type);
rfk_decode_fn rfk_decoder(int type);

/* The 4-bit non-linear grid of IQ4_NL / IQ4_XS. */
extern const int8_t rfk_iq4_values[16];

/* ggml's rounding: round half to even through the 1.5 * 2^23 bias (valid for |f| <= 2^22, which
 * every call site keeps to; outside it the same bits as ggml, not rint). */
static inline int rfk_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* 6-bit scale/min pair j of a Q4_K/Q5_K block's 12 packed bytes. */
static inline void rfk_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* The encoders' tails, shared by the reference and the fast paths (which only vectorise the
 * per-sub-block searches): from the sub-block scales (and mins) and codes of one super-block X,
 * the super-block scales, the codes refit to the stored scales, and the packing. */
void rfk_q2k_finish(const float *x, const float *scales, const float *mins, uint8_t *L, rfk_q2_k *y);
void rfk_k4_finish(const float *x, int nmax, const float *scales, const float *mins, uint8_t *L, uint16_t *d,
                   uint16_t *dmin, uint8_t *sc);
void rfk_q4k_pack(const uint8_t *L, rfk_q4_k *y);
void rfk_q5k_pack(const uint8_t *L, rfk_q5_k *y);
void rfk_q6k_finish(const float *x, const float *scales, int8_t *L, rfk_q6_k *y);

/* AVX2 fast paths (kquant_avx2.c); NULL when not built or not available. */
rfk_encode_fn rfk_encoder_avx2(int type);
rfk_decode_fn rfk_decoder_avx2(int type);

#endif
