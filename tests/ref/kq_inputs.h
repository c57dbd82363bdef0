/* Test inputs for the ggml block-type encoders, shared by tests/test_kquant.c and the vector
 * generator tests/ref/ggml_vectors.c (which runs ggml's own encoders on them). Only integer
 * arithmetic and exact float operations (+, *, /, exact conversions), so every machine and libm
 * makes the same floats. Rows cover the encoders' branches: all-zero rows and sub-blocks,
 * constant rows, one-sided rows (min > 0, max < 0), tiny values whose scales underflow FP16, huge
 * values, exact ties for the rounding, BF16-rounded values like real checkpoints, outliers. */
#ifndef RF_KQ_INPUTS_H
#define RF_KQ_INPUTS_H

#include <stdint.h>
#include <string.h>

#define KQ_ROWS 64
#define KQ_COLS 512

static inline uint64_t kq_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1) with 24 bits: exact. */
static inline float kq_unif(uint64_t *s) { return (float)(int32_t)(kq_next(s) >> 40) / 8388608.0f - 1.0f; }

/* Bell-shaped: sum of four uniforms (exact float adds of 24-bit values stay exact below 2^24 ulps). */
static inline float kq_bell(uint64_t *s) { return (kq_unif(s) + kq_unif(s) + kq_unif(s) + kq_unif(s)) * 0.5f; }

static inline float kq_bf16_round(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static inline void kq_inputs(float *x)
{
    uint64_t s = 20260912;
    for (int r = 0; r < KQ_ROWS; r++) {
        float *row = x + (uint64_t)r * KQ_COLS;
        /* a power-of-two scale per row from 2^-12 .. 2^3 */
        float scale = 1.0f;
        int e = (int)(kq_next(&s) % 16) - 12;
        for (int k = 0; k < (e < 0 ? -e : e); k++) scale = e < 0 ? scale * 0.5f : scale * 2.0f;
        for (int c = 0; c < KQ_COLS; c++) {
            float v = kq_bell(&s) * scale;
            switch (r) {
            case 0: v = 0.0f; break;                                         /* all zero */
            case 1: v = 0.25f; break;                                        /* constant > 0 */
            case 2: v = -3.0f; break;                                        /* constant < 0 */
            case 3: v = v < 0 ? -v : v; break;                               /* min > 0 */
            case 4: v = v > 0 ? -v : v; break;                               /* max < 0 */
            case 5: v = kq_bell(&s) * 1e-9f; break;                          /* scales underflow FP16 */
            case 6: v = kq_bell(&s) * 3e-6f; break;                          /* FP16-subnormal scales */
            case 7: v = kq_bell(&s) * 3000.0f; break;                        /* large */
            case 8: v = (c % 32 < 16) ? 0.0f : v; break;                     /* zero half blocks */
            case 9: v = (c / 32) % 2 ? 0.0f : v; break;                      /* zero 32-blocks */
            case 10: v = (c / 256) % 2 ? v : 0.0f; break;                    /* zero super-block */
            case 11: v = (float)((int)(kq_next(&s) % 17) - 8) * 0.5f; break; /* exact ties */
            case 12: v = (float)((int)(kq_next(&s) % 33) - 16) * 0.125f; break;
            case 13: v = c == 77 ? 5.0f : 0.0f; break;                       /* one weight */
            case 14: v = (c % 64 == 0) ? v * 64.0f : v; break;               /* outliers */
            case 15: v = c % 2 ? scale : -scale; break;                      /* +-1 pattern */
            default: break;
            }
            if (r >= 16 && r % 3 == 0 && kq_next(&s) % 97 == 0) v *= 40.0f; /* sparse outliers */
            if (r >= 16 && r % 2 == 0) v = kq_bf16_round(v);                 /* checkpoint-like */
            row[c] = v;
        }
    }
}

/* FNV-1a of a byte range (fixture rows are compared by hash). */
static inline uint64_t kq_hash(const void *p, uint64_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

#endif
