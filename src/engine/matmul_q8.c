/* The fast matrix product: activations quantized to 8 bits, integer dot products with the packed
 * MLX codes (AVX-512 VNNI). What llama.cpp does with its k-quants, for MLX's affine format:
 *
 *   x is cut into blocks of 32 per token, d_b = max|x_b| / 127, q_b = round(x_b / d_b) (int8);
 *   w = s_g * c + b_g per group g of gs (>= 32) columns, c the unsigned code, so
 *   y = sum_g s_g * sum_{b in g} d_b * (c_b . q_b)  +  b_g * sum(x_g)
 *   where c_b . q_b is exact in 32-bit integers (vpdpbusd: unsigned codes x signed activations)
 *   and sum(x_g) is the exact float sum, so only the rounding of x to 8 bits differs from the
 *   float product.
 *
 * Not exact: `ppl` and `kld` keep rf_matmul by default; generate and `ppl --fast` use this.
 * Two kernels:
 *  - few tokens (decode, small MoE batches): each row's 64-code chunks are unpacked in registers
 *    (vpermb + vpmultishiftqb place any 2..8-bit codes in bytes, in order) and dotted with up to
 *    4 tokens; the row is streamed once with a software prefetch ahead.
 *  - batches: a 32-row x 512-column tile is unpacked once into a panel of [k/4][32 rows][4]
 *    bytes (a 16x16 transpose of 32-bit words), then a register-blocked kernel runs 2 row
 *    vectors x 4 tokens, the 4 activation bytes of a token broadcast from memory into vpdpbusd.
 * Every output is computed by one task in a fixed order: results do not depend on the thread
 * count. Float weights, and CPUs without AVX-512 VNNI/VBMI, take rf_matmul. */
#include "engine/engine_internal.h"
#include "engine/simd512.h"
#include "quant/kquant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if RF_X86
#include <immintrin.h>
#endif

enum { QB = 32 };          /* activation block */
enum { GG_SB = 256, GG_G = 16 }; /* GGUF k-quants: super-block, scale group (see below) */

static int gg_type_ok(int t) { return t == RF_GT_Q4_K || t == RF_GT_Q5_K || t == RF_GT_Q6_K; }

static float scalar_at(rf_dtype dt, const void *p, uint64_t i)
{
    switch (dt) {
    case RF_DT_F32: return ((const float *)p)[i];
    case RF_DT_F16: return rf_f16_to_f32(((const uint16_t *)p)[i]);
    default: return rf_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static uint32_t code_at(const uint8_t *row, uint64_t i, int bits)
{
    uint64_t bit = i * (uint64_t)bits;
    const uint8_t *p = row + (bit >> 3);
    unsigned off = (unsigned)(bit & 7);
    uint32_t v = (uint32_t)p[0] >> off;
    if (off + (unsigned)bits > 8) v |= (uint32_t)p[1] << (8 - off);
    return v & ((1u << bits) - 1);
}

void rf_q8_quantize_ref(const float *x, uint64_t cols, int8_t *q, float *d, float *sum)
{
    for (uint64_t b = 0; b < cols / QB; b++) {
        const float *xb = x + b * QB;
        float amax = 0, s = 0;
        for (int i = 0; i < QB; i++) {
            float a = fabsf(xb[i]);
            if (a > amax) amax = a;
            s += xb[i];
        }
        /* the same float operations as the SIMD quantizer: identical codes and scales */
        float id = amax > 0 ? 127.0f / amax : 0.0f;
        for (int i = 0; i < QB; i++) q[b * QB + (uint64_t)i] = (int8_t)lrintf(xb[i] * id);
        d[b] = amax / 127.0f;
        if (sum) sum[b] = s;
    }
}

static void gg_matmul_q8_ref(const rf_wmat *w, const float *x, int ntok, float *y);

void rf_matmul_q8_ref(const rf_wmat *w, const float *x, int ntok, float *y)
{
    if (w->gtype && gg_type_ok(w->gtype) && w->cols % GG_SB == 0) { gg_matmul_q8_ref(w, x, ntok, y); return; }
    if (w->dtype != RF_DT_U32) { rf_matmul_ref(w, x, ntok, y); return; }
    uint64_t cols = w->cols, nb = cols / QB, gs = (uint64_t)w->gs, ng = cols / gs;
    uint64_t rb = cols * (uint64_t)w->bits / 8;
    int8_t *q = malloc(cols);
    float *d = malloc(nb * sizeof(float)), *sm = malloc(nb * sizeof(float));
    if (!q || !d || !sm) abort();
    for (int t = 0; t < ntok; t++) {
        rf_q8_quantize_ref(x + (uint64_t)t * cols, cols, q, d, sm);
        for (uint64_t r = 0; r < w->rows; r++) {
            const uint8_t *row = (const uint8_t *)w->data + r * rb;
            double acc = 0;
            for (uint64_t g = 0; g < ng; g++) {
                double sc = scalar_at(w->sdtype, w->scales, r * ng + g), bi = scalar_at(w->sdtype, w->biases, r * ng + g);
                double part = 0, xs = 0;
                for (uint64_t b = g * gs / QB; b < (g + 1) * gs / QB; b++) {
                    int64_t dot = 0;
                    for (uint64_t k = b * QB; k < (b + 1) * QB; k++) dot += (int64_t)code_at(row, k, w->bits) * q[k];
                    part += (double)d[b] * (double)dot;
                    xs += sm[b];
                }
                acc += sc * part + bi * xs;
            }
            y[(uint64_t)t * w->rows + r] = (float)acc;
        }
    }
    free(q);
    free(d);
    free(sm);
}


/* ------------------------------------------------------------------ GGUF k-quants
 * Q4_K, Q5_K and Q6_K in the same affine form: per super-block of 256 columns, unsigned codes c
 * (4, 5 or 6 bits) and per 16 columns a scale s and a bias b, w = s * c + b:
 *   Q4_K/Q5_K: s = d * sc_j, b = -dmin * m_j for the 32-column sub-block j (6-bit sc_j, m_j);
 *   Q6_K:      s = d * sc_k (int8 sc_k), b = -32 s (the codes are stored with 32 added).
 * So y = sum_k s_k sum_{blocks} d_b (c . q) + b_k * sum(x over the 16 columns), integer inside
 * each 16 columns, as the MLX kernels above. llama.cpp (Q8_K activations) rounds the x sums of
 * the mins to 8 bits as well; here they are the exact float sums. */
/* One super-block in natural column order: codes c[256], scales s[16] and biases b[16]. */
static void gg_unpack_ref(int type, const uint8_t *blk, uint8_t c[GG_SB], float s[GG_G], float b[GG_G])
{
    if (type == RF_GT_Q6_K) {
        const rfk_q6_k *x = (const rfk_q6_k *)blk;
        const float d = rf_f16_to_f32(x->d);
        for (int k = 0; k < GG_G; k++) s[k] = d * (float)x->scales[k], b[k] = -32.0f * s[k];
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 32; l++) {
                const uint8_t *ql = x->ql + 64 * h, *qh = x->qh + 32 * h;
                uint8_t *o = c + 128 * h;
                o[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4);
                o[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4);
                o[l + 64] = (uint8_t)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
                o[l + 96] = (uint8_t)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
            }
        return;
    }
    /* Q4_K and Q5_K share the header and the scale packing (rfk_q4_k's prefix) */
    const rfk_q4_k *x = (const rfk_q4_k *)blk;
    const float d = rf_f16_to_f32(x->d), dmin = rf_f16_to_f32(x->dmin);
    const uint8_t *qs = type == RF_GT_Q5_K ? ((const rfk_q5_k *)blk)->qs : x->qs;
    const uint8_t *qh = type == RF_GT_Q5_K ? ((const rfk_q5_k *)blk)->qh : NULL;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        rfk_scale_min_k4(j, x->scales, &sc, &m);
        s[2 * j] = s[2 * j + 1] = d * sc;
        b[2 * j] = b[2 * j + 1] = -dmin * m;
        for (int l = 0; l < 32; l++) {
            uint8_t v = (uint8_t)(j & 1 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 0xF);
            if (qh) v = (uint8_t)(v | ((qh[l] >> j) & 1) << 4);
            c[32 * j + l] = v;
        }
    }
}

static void gg_matmul_q8_ref(const rf_wmat *w, const float *x, int ntok, float *y)
{
    uint64_t cols = w->cols, rb = rf_gtype_row_bytes(w->gtype, cols), bb = rb / (cols / GG_SB);
    int8_t *q = malloc(cols);
    float *d = malloc(cols / QB * sizeof(float));
    if (!q || !d) abort();
    uint8_t c[GG_SB];
    float s[GG_G], b[GG_G];
    for (int t = 0; t < ntok; t++) {
        const float *xt = x + (uint64_t)t * cols;
        rf_q8_quantize_ref(xt, cols, q, d, NULL);
        for (uint64_t r = 0; r < w->rows; r++) {
            double acc = 0;
            for (uint64_t sb = 0; sb < cols / GG_SB; sb++) {
                gg_unpack_ref(w->gtype, (const uint8_t *)w->data + r * rb + sb * bb, c, s, b);
                for (int k = 0; k < GG_G; k++) {
                    uint64_t c0 = sb * GG_SB + (uint64_t)k * GG_G;
                    int64_t dot = 0;
                    float xs = 0;
                    for (int i = 0; i < GG_G; i++) dot += (int64_t)c[k * GG_G + i] * q[c0 + (uint64_t)i], xs += xt[c0 + (uint64_t)i];
                    acc += (double)s[k] * d[c0 / QB] * (double)dot + (double)b[k] * xs;
                }
            }
            y[(uint64_t)t * w->rows + r] = (float)acc;
        }
    }
    free(q);
    free(d);
}

#if RF_X86
/* ------------------------------------------------------------------ AVX-512 VNNI + VBMI */

/* Activations of the call: codes [ntok][ld] (zero-padded to a multiple of 64), block scales
 * and sums [ntok][nb], group sums [ntok][ng] for the bias terms, and for the few-token kernel
 * the block scale of every 32-bit lane position [ntok][ld/4]. */
typedef struct {
    int ntok;
    uint64_t cols, ld, nb, ng;
    int8_t *q;
    float *d, *bsum, *gsum, *dl;
} qx;

RF_TARGET_AVX512VNNI static void quantize_512(const float *x, uint64_t cols, int8_t *q, float *d, float *bsum)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (uint64_t b = 0; b < cols / QB; b++) {
        __m512 v0 = _mm512_loadu_ps(x + b * QB), v1 = _mm512_loadu_ps(x + b * QB + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
        float id = amax > 0 ? 127.0f / amax : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)));
        __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vid)));
        _mm_storeu_si128((__m128i *)(q + b * QB), q0);
        _mm_storeu_si128((__m128i *)(q + b * QB + 16), q1);
        d[b] = amax / 127.0f;
        bsum[b] = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
    }
}

/* ---- few tokens: rows streamed once, NT (1..4) tokens per row */
/* DEC4_AHEAD: dec4_block's prefetch distance in bytes, rounded up to whole blocks of four rows
 * (16 KB measured best of 4..64 KB on Zen 5 and no different on a Xeon). */
enum { PREFETCH_AHEAD = 8192, DEC4_AHEAD = 16384, MAX_GROUPS = 4096 };

/* Bits whose codes sit in byte phases: 8 / bits codes a byte, isolated by a shift and a mask. */
static int phase_bits(int bits) { return bits == 2 || bits == 4 || bits == 8; }

/* The row kernels read a row in steps. Rows of 2, 4 or 8 bits: a step is 64 bytes, S = 512/bits
 * codes, byte i holding codes nph*i + p (phases p < nph = 8/bits) isolated by a shift and a
 * mask, with x laid out per step and phase to match (prepare_qx). Rows of 3, 5 or 6 bits: a
 * step is a chunk of S = 64 codes (8*bits bytes) brought to bytes in order by vpermb +
 * vpmultishiftqb (nph = 1). Either way lane l of a step covers codes 4*nph*l .. +4*nph-1 of it:
 * one activation block and one group, so a step costs one vpdpbusd per phase and token, then
 * one conversion, one scale product and one FMA per token. */
typedef struct {
    int bits, gshift, one_group, two; /* two: a step covers exactly two groups */
    uint64_t rb;                /* bytes of a row */
    __m512i gidx, mask;         /* lane -> group offset in the step; code mask */
    unpack512 u;
} rowk;

RF_TARGET_AVX512VNNI static rowk make_rowk(const rf_wmat *w)
{
    rowk k;
    k.bits = w->bits;
    int phase = k.bits == 2 || k.bits == 4 || k.bits == 8, nph = phase ? 8 / k.bits : 1;
    uint64_t S = phase ? 512 / (uint64_t)k.bits : 64;
    k.gshift = __builtin_ctzll((uint64_t)w->gs);
    k.one_group = S <= (uint64_t)w->gs;
    k.two = S == 2 * (uint64_t)w->gs;
    k.rb = w->cols * (uint64_t)w->bits / 8;
    int32_t gi[16];
    for (int l = 0; l < 16; l++) gi[l] = (int32_t)((4 * (uint64_t)nph * (uint64_t)l) >> k.gshift);
    k.gidx = _mm512_loadu_si512(gi);
    k.mask = _mm512_set1_epi8((char)((1 << k.bits) - 1));
    k.u = make_unpack512(k.bits);
    return k;
}

/* Step st of R rows (their bytes at rows[i], scales as floats at sf[i]) for NT tokens. */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void row_step(const rowk *k, int bits, int og, int R,
                                                                           int NT, const uint8_t *const *rows,
                                                                           const float *const *sf, uint64_t st,
                                                                           __mmask64 m, const int8_t *const *xqs,
                                                                           const float *const *dls, __m512 acc[4][4])
{
    const int phase = bits == 2 || bits == 4 || bits == 8, nph = phase ? 8 / bits : 1;
    const uint64_t S = phase ? 512 / (uint64_t)bits : 64, SB = phase ? 64 : 8 * (uint64_t)bits;
    __m512i c[4][4];
    __m512 sl[4];
    uint64_t g0 = (st * S) >> k->gshift;
    _Pragma("GCC unroll 4")
    for (int i = 0; i < R; i++) {
        const uint8_t *p = rows[i] + st * SB;
        /* every step: a prefetch every other 64-byte step left DRAM-bound decode of 5-bit g64
         * rows at ~13 GB/s a core, one per step gives ~20 (the k-quant rows' rate). Each of the
         * R rows read in lockstep is its own stream, prefetched ahead along itself and, past
         * its end, in the same row of the next block: a plain p + distance lands in a row of
         * the current block once rows are longer than distance / (R - 1), and did not help. */
        uint64_t off = st * SB + (R > 1 ? PREFETCH_AHEAD / 2 : PREFETCH_AHEAD);
        if (R > 1 && off >= k->rb) off += (uint64_t)(R - 1) * k->rb;
        _mm_prefetch((const char *)rows[i] + off, _MM_HINT_T0);
        if (phase) {
            __m512i v = _mm512_maskz_loadu_epi8(m, p);
            _Pragma("GCC unroll 4")
            for (int q = 0; q < nph; q++)
                c[i][q] = bits == 8 ? v : _mm512_and_si512(q ? _mm512_srli_epi16(v, q * bits) : v, k->mask);
        } else {
            c[i][0] = unpack64(p, m, &k->u);
        }
        /* two groups a step (5-bit g32, 4-bit g64, ...): two broadcasts, no shuffle (the permute
         * made DRAM-bound decode of such rows 2x slower) */
        sl[i] = og ? _mm512_set1_ps(sf[i][g0])
                   : k->two ? _mm512_mask_broadcastss_ps(_mm512_set1_ps(sf[i][g0]), 0xFF00, _mm_load_ss(sf[i] + g0 + 1))
                            : _mm512_permutexvar_ps(k->gidx, _mm512_loadu_ps(sf[i] + g0));
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < NT; t++) {
        const int8_t *xq = xqs[t] + st * S;
        __m512 dl = _mm512_loadu_ps(dls[t] + st * 16);
        __m512i dot[4];
        _Pragma("GCC unroll 4")
        for (int i = 0; i < R; i++) dot[i] = _mm512_setzero_si512();
        _Pragma("GCC unroll 4")
        for (int q = 0; q < nph; q++) {
            __m512i xv = _mm512_loadu_si512(xq + 64 * q);
            _Pragma("GCC unroll 4")
            for (int i = 0; i < R; i++) dot[i] = _mm512_dpbusd_epi32(dot[i], c[i][q], xv);
        }
        _Pragma("GCC unroll 4")
        for (int i = 0; i < R; i++) acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i]), _mm512_mul_ps(sl[i], dl), acc[i][t]);
    }
}

/* The four sums of a, b, c, d (16 lanes each). */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)); /* a0+a2 b0+b2 a1+a3 b1+b3 */
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE)); /* a b c d per lane */
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Rows r0 .. r0+R for tokens t0 .. t0+NT (R * NT <= 4 accumulators pairs). */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void row_block(const rf_wmat *w, const rowk *k, int bits,
                                                                            int og, int R, int NT, const qx *a, int t0,
                                                                            float *y, uint64_t r0, float *scratch)
{
    const int phase = bits == 2 || bits == 4 || bits == 8;
    const uint64_t S = phase ? 512 / (uint64_t)bits : 64, SB = phase ? 64 : 8 * (uint64_t)bits;
    const uint64_t cols = w->cols, rb = cols * (uint64_t)bits / 8, ng = cols / (uint64_t)w->gs;
    const uint64_t nfull = cols / S, nsteps = (cols + S - 1) / S;
    const __mmask64 full = SB == 64 ? ~(__mmask64)0 : ((__mmask64)1 << SB) - 1;
    const uint8_t *rows[4];
    const float *sf[4];
    float *bf[4];
    _Pragma("GCC unroll 4")
    for (int i = 0; i < R; i++) {
        float *s = scratch + (uint64_t)i * 2 * (ng + 16);
        load_row_floats(w->sdtype, w->scales, (r0 + (uint64_t)i) * ng, ng, s);
        bf[i] = s + ng + 16;
        load_row_floats(w->sdtype, w->biases, (r0 + (uint64_t)i) * ng, ng, bf[i]);
        sf[i] = s;
        rows[i] = (const uint8_t *)w->data + (r0 + (uint64_t)i) * rb;
    }
    __m512 acc0[4][4], acc1[4][4];
    const int8_t *xqs[4];
    const float *dls[4];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < NT; t++) {
        xqs[t] = a->q + (uint64_t)(t0 + t) * a->ld;
        dls[t] = a->dl + (uint64_t)(t0 + t) * (a->ld / 4);
    }
    _Pragma("GCC unroll 4")
    for (int i = 0; i < R; i++)
        _Pragma("GCC unroll 4")
        for (int t = 0; t < NT; t++) acc0[i][t] = acc1[i][t] = _mm512_setzero_ps();
    uint64_t st = 0;
    for (; st + 2 <= nfull; st += 2) {
        row_step(k, bits, og, R, NT, rows, sf, st, full, xqs, dls, acc0);
        row_step(k, bits, og, R, NT, rows, sf, st + 1, full, xqs, dls, acc1);
    }
    if (st < nfull) row_step(k, bits, og, R, NT, rows, sf, st++, full, xqs, dls, acc0);
    if (st < nsteps)
        row_step(k, bits, og, R, NT, rows, sf, st, ((__mmask64)1 << ((cols - st * S) * (uint64_t)bits / 8)) - 1, xqs, dls,
                 acc1);
    /* + sum_g b_g * sum(x_g), added as vectors before the one reduction */
    _Pragma("GCC unroll 4")
    for (int t = 0; t < NT; t++) {
        const float *gsum = a->gsum + (uint64_t)(t0 + t) * a->ng;
        _Pragma("GCC unroll 4")
        for (int i = 0; i < R; i++) {
            __m512 v = _mm512_add_ps(acc0[i][t], acc1[i][t]);
            uint64_t g = 0;
            for (; g + 16 <= ng; g += 16) v = _mm512_fmadd_ps(_mm512_loadu_ps(bf[i] + g), _mm512_loadu_ps(gsum + g), v);
            if (g < ng) {
                __mmask16 mm = (__mmask16)((1u << (ng - g)) - 1);
                v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mm, bf[i] + g), _mm512_maskz_loadu_ps(mm, gsum + g), v);
            }
            acc0[i][t] = v;
        }
        float *yt = y + (uint64_t)(t0 + t) * w->rows + r0;
        if (R == 4) _mm_storeu_ps(yt, reduce4(acc0[0][t], acc0[1][t], acc0[2][t], acc0[3][t]));
        else
            _Pragma("GCC unroll 4")
            for (int i = 0; i < R; i++) yt[i] = _mm512_reduce_add_ps(acc0[i][t]);
    }
}

/* Decode, four rows of one token at a time: the loop generation spends its time in. Apart from
 * row_block so that it fits the 32 vector registers (one accumulator per row, nothing spilled)
 * and prefetches at a fixed distance: each row's step st prefetches the same place in the rows
 * pfd bytes on (whole blocks of four rows ahead), with no per-step bounds arithmetic. Counting
 * instructions, row_block spent ~20 a row and 64-byte step on spills, pointer reloads and the
 * prefetch's bounds; this needs ~12. */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void dec4_step(const rowk *k, int bits, int sm,
                                                                            const uint8_t *p, uint64_t rb,
                                                                            uint64_t pfd, const float *sc,
                                                                            uint64_t ss, uint64_t g0, __mmask64 m,
                                                                            int whole, const int8_t *xq,
                                                                            const float *dlp, __m512 acc[4])
{
    const int nph = 8 / bits; /* bits 2, 4 or 8 only: codes in byte phases */
    __m512 dl = _mm512_loadu_ps(dlp);
    __m512i xv[4];
    _Pragma("GCC unroll 4")
    for (int q = 0; q < nph; q++) xv[q] = _mm512_loadu_si512(xq + 64 * q);
    _Pragma("GCC unroll 4")
    for (int i = 0; i < 4; i++) {
        const uint8_t *pi = p + (uint64_t)i * rb;
        _mm_prefetch((const char *)pi + pfd, _MM_HINT_T0);
        __m512i dot = _mm512_setzero_si512();
        /* unmasked loads on whole steps: a masked load stops the hardware prefetcher */
        __m512i v = whole ? _mm512_loadu_si512(pi) : _mm512_maskz_loadu_epi8(m, pi);
        _Pragma("GCC unroll 4")
        for (int q = 0; q < nph; q++)
            dot = _mm512_dpbusd_epi32(
                dot, bits == 8 ? v : _mm512_and_si512(q ? _mm512_srli_epi16(v, q * bits) : v, _mm512_set1_epi8((char)((1 << bits) - 1))),
                xv[q]);
        const float *si = sc + (uint64_t)i * ss;
        /* sm: the step covers one group, two, or four and more (then a lane -> group permute) */
        __m512 sl = sm == 0 ? _mm512_set1_ps(si[g0])
                    : sm == 1 ? _mm512_mask_broadcastss_ps(_mm512_set1_ps(si[g0]), 0xFF00, _mm_load_ss(si + g0 + 1))
                              : _mm512_permutexvar_ps(k->gidx, _mm512_loadu_ps(si + g0));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(sl, dl), acc[i]);
    }
}

RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void dec4_block(const rf_wmat *w, const rowk *k, int bits,
                                                                             int sm, const qx *a, int t, float *y,
                                                                             uint64_t r0, uint64_t pfd, float *scratch)
{
    const uint64_t S = 512 / (uint64_t)bits; /* codes per 64-byte step */
    const uint64_t cols = w->cols, rb = cols * (uint64_t)bits / 8, ng = cols / (uint64_t)w->gs, ss = 2 * (ng + 16);
    const uint64_t nfull = cols / S;
    const __mmask64 full = ~(__mmask64)0;
    for (int i = 0; i < 4; i++) {
        load_row_floats(w->sdtype, w->scales, (r0 + (uint64_t)i) * ng, ng, scratch + (uint64_t)i * ss);
        load_row_floats(w->sdtype, w->biases, (r0 + (uint64_t)i) * ng, ng, scratch + (uint64_t)i * ss + ng + 16);
    }
    const uint8_t *p0 = (const uint8_t *)w->data + r0 * rb;
    const int8_t *xq = a->q + (uint64_t)t * a->ld;
    const float *dl = a->dl + (uint64_t)t * (a->ld / 4);
    __m512 acc[4];
    for (int i = 0; i < 4; i++) acc[i] = _mm512_setzero_ps();
    uint64_t st = 0;
    for (; st < nfull; st++)
        dec4_step(k, bits, sm, p0 + st * 64, rb, pfd, scratch, ss, (st * S) >> k->gshift, full, 1, xq + st * S,
                  dl + st * 16, acc);
    if (st * S < cols)
        dec4_step(k, bits, sm, p0 + st * 64, rb, pfd, scratch, ss, (st * S) >> k->gshift,
                  ((__mmask64)1 << ((cols - st * S) * (uint64_t)bits / 8)) - 1, 0, xq + st * S, dl + st * 16, acc);
    const float *gsum = a->gsum + (uint64_t)t * a->ng;
    for (int i = 0; i < 4; i++) {
        const float *bf = scratch + (uint64_t)i * ss + ng + 16;
        __m512 v = acc[i];
        uint64_t g = 0;
        for (; g + 16 <= ng; g += 16) v = _mm512_fmadd_ps(_mm512_loadu_ps(bf + g), _mm512_loadu_ps(gsum + g), v);
        if (g < ng) {
            __mmask16 mm = (__mmask16)((1u << (ng - g)) - 1);
            v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mm, bf + g), _mm512_maskz_loadu_ps(mm, gsum + g), v);
        }
        acc[i] = v;
    }
    _mm_storeu_ps(y + (uint64_t)t * w->rows + r0, reduce4(acc[0], acc[1], acc[2], acc[3]));
}

RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void row_span(const rf_wmat *w, const rowk *k, int bits,
                                                                           int sm, const qx *a, float *y, uint64_t r0,
                                                                           uint64_t r1, float *scratch)
{
    for (int t = 0; t < a->ntok; t += 4) {
        int nt = a->ntok - t < 4 ? a->ntok - t : 4;
        uint64_t r = r0;
        if (nt == 1) { /* decode: four rows at a time share the loads of x and one reduction */
            uint64_t blk = 4 * w->cols * (uint64_t)bits / 8, pfd = (DEC4_AHEAD + blk - 1) / blk * blk;
            /* dec4 for the bits whose codes sit in byte phases (2, 4, 8): measured 5-15% faster
             * than row_block from cache there, equal from DRAM; for 3, 5, 6 bits (unpacked
             * through a permute) it was slower, so those keep row_block */
            if (phase_bits(bits))
                for (; r + 4 <= r1; r += 4) dec4_block(w, k, bits, sm, a, t, y, r, pfd, scratch);
            else
                for (; r + 4 <= r1; r += 4) row_block(w, k, bits, sm == 0, 4, 1, a, t, y, r, scratch);
        }
        for (; r < r1; r++) switch (nt) {
            case 1: row_block(w, k, bits, sm == 0, 1, 1, a, t, y, r, scratch); break;
            case 2: row_block(w, k, bits, sm == 0, 1, 2, a, t, y, r, scratch); break;
            case 3: row_block(w, k, bits, sm == 0, 1, 3, a, t, y, r, scratch); break;
            default: row_block(w, k, bits, sm == 0, 1, 4, a, t, y, r, scratch); break;
            }
    }
}

RF_TARGET_AVX512VNNI static void gemv_span(const rf_wmat *w, const qx *a, float *y, uint64_t r0, uint64_t r1)
{
    rowk k = make_rowk(w);
    float *scratch = malloc(sizeof(float) * 4 * 2 * (a->ng + 16));
    if (!scratch) abort();
    /* bits and the groups a step covers (sm: one, two, more) as constants of each instance */
    int sm = k.one_group ? 0 : k.two ? 1 : 2;
    switch (k.bits * 4 + sm) {
#define RF_SPAN(b)                                                                                                     \
    case 4 * b: row_span(w, &k, b, 0, a, y, r0, r1, scratch); break;                                                   \
    case 4 * b + 1: row_span(w, &k, b, 1, a, y, r0, r1, scratch); break;                                               \
    case 4 * b + 2: row_span(w, &k, b, 2, a, y, r0, r1, scratch); break;
        RF_SPAN(2) RF_SPAN(3) RF_SPAN(4) RF_SPAN(5) RF_SPAN(6)
#undef RF_SPAN
    case 4 * 8: row_span(w, &k, 8, 0, a, y, r0, r1, scratch); break;
    case 4 * 8 + 1: row_span(w, &k, 8, 1, a, y, r0, r1, scratch); break;
    default: row_span(w, &k, 8, 2, a, y, r0, r1, scratch); break;
    }
    free(scratch);
}


/* ---- batches: packed panels and a 2x4 register-blocked kernel */
enum { GR = 32, KT = 512 };

typedef struct {
    uint32_t codes[KT / 4][GR];         /* 4 consecutive codes of a row per word */
    float sc[KT / 16][GR], bi[KT / 16][GR]; /* per group: gs >= 32 (MLX) or 16 (GGUF k-quants) */
} panel;

/* Rows [r0, r0 + nr) (nr <= 32), columns [k0, k0 + kn) into the panel; missing rows are zero. */
RF_TARGET_AVX512VNNI static void pack_panel(const rf_wmat *w, uint64_t r0, int nr, uint64_t k0, uint64_t kn, panel *P,
                                        const unpack512 *u)
{
    const uint64_t rb = w->cols * (uint64_t)w->bits / 8, gs = (uint64_t)w->gs, ng = w->cols / gs;
    for (int h = 0; h < GR / 16; h++)
        for (uint64_t c = 0; c * 64 < kn; c++) {
            __m512i r[16];
            __mmask64 m = (c + 1) * 64 <= kn ? u->full : u->half;
            for (int i = 0; i < 16; i++) {
                int ri = 16 * h + i;
                r[i] = ri < nr ? unpack64((const uint8_t *)w->data + (r0 + (uint64_t)ri) * rb +
                                              (k0 + c * 64) * (uint64_t)w->bits / 8, m, u)
                               : _mm512_setzero_si512();
            }
            transpose16(r);
            int nw = (c + 1) * 64 <= kn ? 16 : 8;
            for (int j = 0; j < nw; j++) _mm512_storeu_si512(&P->codes[c * 16 + (uint64_t)j][16 * h], r[j]);
        }
    /* scales and biases per group, one row vector each: group index (k0 + g*gs) / gs */
    uint64_t g0 = k0 / gs, gn = kn / gs;
    for (int ri = 0; ri < GR; ri++)
        for (uint64_t g = 0; g < gn; g++) {
            int ok = ri < nr;
            uint64_t i = (r0 + (uint64_t)ri) * ng + g0 + g;
            P->sc[g][ri] = ok ? scalar_at(w->sdtype, w->scales, i) : 0.0f;
            P->bi[g][ri] = ok ? scalar_at(w->sdtype, w->biases, i) : 0.0f;
        }
}

/* y[t][r0 .. r0+32) (+)= the tile's product for tokens t0 .. t0+NT (NT <= GNT): per block of
 * 32 columns 8 steps of 2 x NT vpdpbusd, then the integer sums are scaled by s_g * d_b into the
 * float accumulators; the bias terms once per group. */
enum { GNT = 6 };

RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void gemm_tile(const panel *P, uint64_t k0, uint64_t kn,
                                                                            uint64_t gs, int sub, const qx *a, int t0,
                                                                            int NT, float *y, uint64_t ldy, uint64_t r0,
                                                                            __mmask16 m0, __mmask16 m1, int first)
{
    /* sub (a constant of each instance): columns per integer sum, 32 (one activation block) or
     * 16 (GGUF k-quant groups: two sums per activation block, each with its own scale) */
    __m512 f0[GNT], f1[GNT];
    const int8_t *xq[GNT];
    const float *xd[GNT], *xg[GNT];
    _Pragma("GCC unroll 6")
    for (int t = 0; t < NT; t++) {
        float *yt = y + (uint64_t)(t0 + t) * ldy + r0;
        f0[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, yt);
        f1[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, yt + 16);
        xq[t] = a->q + (uint64_t)(t0 + t) * a->ld + k0;
        xd[t] = a->d + (uint64_t)(t0 + t) * a->nb + k0 / QB;
        xg[t] = a->gsum + (uint64_t)(t0 + t) * a->ng + k0 / gs;
    }
    const uint64_t bpg = gs / (uint64_t)sub;
    for (uint64_t g = 0; g < kn / gs; g++) {
        const __m512 s0 = _mm512_load_ps(P->sc[g]), s1 = _mm512_load_ps(P->sc[g] + 16);
        for (uint64_t b = g * bpg; b < (g + 1) * bpg; b++) {
            __m512i i0[GNT], i1[GNT];
            _Pragma("GCC unroll 6")
            for (int t = 0; t < NT; t++) i0[t] = i1[t] = _mm512_setzero_si512();
            _Pragma("GCC unroll 8")
            for (uint64_t j = 0; j < (uint64_t)sub / 4; j++) {
                uint64_t k4 = b * ((uint64_t)sub / 4) + j;
                __m512i w0 = _mm512_load_si512(&P->codes[k4][0]), w1 = _mm512_load_si512(&P->codes[k4][16]);
                _Pragma("GCC unroll 6")
                for (int t = 0; t < NT; t++) {
                    int32_t xw;
                    memcpy(&xw, xq[t] + 4 * k4, 4);
                    __m512i xb = _mm512_set1_epi32(xw);
                    i0[t] = _mm512_dpbusd_epi32(i0[t], w0, xb);
                    i1[t] = _mm512_dpbusd_epi32(i1[t], w1, xb);
                }
            }
            _Pragma("GCC unroll 6")
            for (int t = 0; t < NT; t++) {
                __m512 dx = _mm512_set1_ps(xd[t][b * (uint64_t)sub / QB]);
                f0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(s0, dx), f0[t]);
                f1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(s1, dx), f1[t]);
            }
        }
        const __m512 b0 = _mm512_load_ps(P->bi[g]), b1 = _mm512_load_ps(P->bi[g] + 16);
        _Pragma("GCC unroll 6")
        for (int t = 0; t < NT; t++) {
            __m512 xs = _mm512_set1_ps(xg[t][g]);
            f0[t] = _mm512_fmadd_ps(b0, xs, f0[t]);
            f1[t] = _mm512_fmadd_ps(b1, xs, f1[t]);
        }
    }
    _Pragma("GCC unroll 6")
    for (int t = 0; t < NT; t++) {
        float *yt = y + (uint64_t)(t0 + t) * ldy + r0;
        _mm512_mask_storeu_ps(yt, m0, f0[t]);
        _mm512_mask_storeu_ps(yt + 16, m1, f1[t]);
    }
}

/* Every token of the batch against one packed panel. */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void gemm_tokens(const panel *P, uint64_t k0, uint64_t kn,
                                                                              uint64_t gs, int sub, const qx *a, float *y,
                                                                              uint64_t ldy, uint64_t r0, __mmask16 m0,
                                                                              __mmask16 m1, int first)
{
    int t = 0;
    for (; t + GNT <= a->ntok; t += GNT) gemm_tile(P, k0, kn, gs, sub, a, t, GNT, y, ldy, r0, m0, m1, first);
    switch (a->ntok - t) {
    case 1: gemm_tile(P, k0, kn, gs, sub, a, t, 1, y, ldy, r0, m0, m1, first); break;
    case 2: gemm_tile(P, k0, kn, gs, sub, a, t, 2, y, ldy, r0, m0, m1, first); break;
    case 3: gemm_tile(P, k0, kn, gs, sub, a, t, 3, y, ldy, r0, m0, m1, first); break;
    case 4: gemm_tile(P, k0, kn, gs, sub, a, t, 4, y, ldy, r0, m0, m1, first); break;
    case 5: gemm_tile(P, k0, kn, gs, sub, a, t, 5, y, ldy, r0, m0, m1, first); break;
    default: break;
    }
}

/* Packing reads nr rows' pieces of a k-block: nr short runs far apart (a row's 256 bytes of a
 * 4-bit k-block, then the next row's), which the hardware prefetcher does not follow; the next
 * k-block (or the next panel's first) is fetched into L2 while this one is packed and used.
 * gemm_block, gg_gemm_block and matmul_avx512.c each spell out that choice: folding it into one
 * helper (with a bytes-per-256-columns argument) measured 8-10% slower prompts twice, inlined or
 * not, for a reason not found; the loops are identical apart from the bytes of a column. */
static inline void prefetch_rows(const uint8_t *base, uint64_t rb, uint64_t r0, int nr, uint64_t off, uint64_t n)
{
    for (int i = 0; i < nr; i++)
        for (uint64_t b = 0; b < n; b += 64) _mm_prefetch((const char *)base + (r0 + (uint64_t)i) * rb + off + b, _MM_HINT_T1);
}

RF_TARGET_AVX512VNNI static void gemm_block(const rf_wmat *w, const qx *a, float *y, uint64_t r0, panel *P)
{
    unpack512 u = make_unpack512(w->bits);
    uint64_t rows = w->rows, cols = w->cols, gs = (uint64_t)w->gs;
    int nr = rows - r0 < GR ? (int)(rows - r0) : GR;
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    const uint64_t rb = cols * (uint64_t)w->bits / 8;
    if (r0 == 0) prefetch_rows(w->data, rb, r0, nr, 0, (KT < cols ? KT : cols) * (uint64_t)w->bits / 8);
    for (uint64_t k0 = 0; k0 < cols; k0 += KT) {
        uint64_t kn = cols - k0 < KT ? cols - k0 : KT;
        if (k0 + KT < cols) { /* the next k-block, or the next panel's first */
            uint64_t kn2 = cols - k0 - KT < KT ? cols - k0 - KT : KT;
            prefetch_rows(w->data, rb, r0, nr, (k0 + KT) * (uint64_t)w->bits / 8, kn2 * (uint64_t)w->bits / 8);
        } else if (r0 + GR < rows) {
            int nr2 = rows - r0 - GR < GR ? (int)(rows - r0 - GR) : GR;
            prefetch_rows(w->data, rb, r0 + GR, nr2, 0, (KT < cols ? KT : cols) * (uint64_t)w->bits / 8);
        }
        pack_panel(w, r0, nr, k0, kn, P, &u);
        gemm_tokens(P, k0, kn, gs, 32, a, y, rows, r0, m0, m1, k0 == 0);
    }
}


/* ---- GGUF k-quants (Q4_K, Q5_K, Q6_K): a super-block to 4 vectors of 64 codes, the 16 group
 * scales and biases (groups of 16 columns, natural order) as floats. Codes in natural column
 * order, or with stored = 1 for Q4_K/Q5_K in the order they are stored: vector 2h+k holds the
 * 32-column sub-blocks 4h+k (bytes 0-31) and 4h+k+2 (bytes 32-63), the nibbles as they come, no
 * shuffle (the row kernel lays x out the same way, KQ_SUB). */
static const uint8_t KQ_SUB[8] = {0, 2, 1, 3, 4, 6, 5, 7}; /* stored position -> sub-block */

RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void gg_unpack(int type, int stored, const uint8_t *p,
                                                                            __m512i c[4], __m512 *s16, __m512 *b16)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    if (type == RF_GT_Q6_K) {
        const rfk_q6_k *x = (const rfk_q6_k *)p;
        const __m512i m2 = _mm512_set1_epi8(3);
        /* 16-bit shift counts per half: the 2 high bits of columns l, l+32 (lo) and l+64, l+96 (hi) */
        const __m512i sh_lo = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1);
        const __m512i sh_hi = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
        for (int h = 0; h < 2; h++) {
            __m512i L = _mm512_loadu_si512(x->ql + 64 * h);
            __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x->qh + 32 * h)));
            __m512i hl = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(H, sh_lo), m2), 4);
            __m512i hh = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(H, sh_hi), m2), 4);
            c[2 * h] = _mm512_or_si512(_mm512_and_si512(L, m4), hl);
            c[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4), hh);
        }
        __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)x->scales)));
        uint16_t dh;
        memcpy(&dh, &x->d, 2);
        *s16 = _mm512_mul_ps(sc, _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dh))));
        *b16 = _mm512_mul_ps(*s16, _mm512_set1_ps(-32.0f));
        return;
    }
    const rfk_q4_k *x = (const rfk_q4_k *)p;
    const uint8_t *qs = type == RF_GT_Q5_K ? ((const rfk_q5_k *)p)->qs : x->qs;
    /* d, dmin and the 12 packed bytes of 6-bit scales and mins (words u0 u1 u2) in one load;
     * rfk_scale_min_k4 for all 8 sub-blocks: scales = u0 & 0x3f.., (u2 & 0x0f..) | (u0 >> 6 & 3..) << 4,
     * mins = u1 & 0x3f.., (u2 >> 4 & 0x0f..) | (u1 >> 6 & 3..) << 4 */
    __m128i hdr = _mm_loadu_si128((const __m128i *)p), u = _mm_srli_si128(hdr, 4);
    __m128i A = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0)), B = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));
    __m128i lo6 = _mm_and_si128(A, _mm_set1_epi32(0x3f3f3f3f));
    __m128i hi6 = _mm_or_si128(_mm_and_si128(_mm_srlv_epi32(A, _mm_set_epi32(4, 0, 0, 0)), _mm_set1_epi32(0x0f0f0f0f)),
                               _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(B, 6), _mm_set1_epi32(0x03030303)), 4));
    __m128i sm8 = _mm_blend_epi32(lo6, hi6, 0xA); /* 8 scale bytes, 8 min bytes */
    __m512 sm = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sm8));
    __m128 dd = _mm_cvtph_ps(hdr); /* d, dmin */
    const __m512i dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    *s16 = _mm512_mul_ps(_mm512_permutexvar_ps(dup, sm), _mm512_broadcastss_ps(dd));
    *b16 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_add_epi32(dup, _mm512_set1_epi32(8)), sm),
                         _mm512_broadcastss_ps(_mm_sub_ps(_mm_setzero_ps(), _mm_movehdup_ps(dd))));
    __m512i H = _mm512_setzero_si512();
    if (type == RF_GT_Q5_K)
        H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)((const rfk_q5_k *)p)->qh));
    const __m512i one = _mm512_set1_epi8(1);
    for (int h = 0; h < 2; h++) {
        /* bytes l of 32-byte run j: column l of sub-block 2j (low nibble) and 2j+1 (high) */
        __m512i v = _mm512_loadu_si512(qs + 64 * h);
        __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        for (int k = 0; k < 2; k++) {
            __m512i ck = stored ? (k ? hi : lo) : k ? _mm512_shuffle_i64x2(lo, hi, 0xEE) : _mm512_shuffle_i64x2(lo, hi, 0x44);
            if (type == RF_GT_Q5_K) { /* the sub-blocks' fifth bits: bit j of qh byte l */
                int j0 = stored ? 4 * h + k : 2 * (2 * h + k), j1 = stored ? j0 + 2 : j0 + 1;
                __m512i cnt = _mm512_inserti64x4(_mm512_set1_epi16((short)j0), _mm256_set1_epi16((short)j1), 1);
                ck = _mm512_or_si512(ck, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(H, cnt), one), 4));
            }
            c[2 * h + k] = ck;
        }
    }
}

/* Decode with k-quant rows: row r for tokens t0 .. t0+NT, the super-block unpacked once. x laid
 * out as gg_unpack's vectors (Q4_K/Q5_K: stored sub-block order), dl the activation scale of each
 * group of 16; per token the 16 group scales times those, then to lanes by 4 permutes (lane l of
 * vector v: group idx[v][l]). */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void gg_row(const rf_wmat *w, int type, const qx *a,
                                                                         int t0, int NT, float *y, uint64_t r,
                                                                         uint64_t rb, uint64_t bb)
{
    const uint8_t *row = (const uint8_t *)w->data + r * rb;
    __m512 acc0[4], acc1[4], accb[4];
    _Pragma("GCC unroll 4")
    for (int t = 0; t < NT; t++) acc0[t] = acc1[t] = accb[t] = _mm512_setzero_ps();
    const int stored = type != RF_GT_Q6_K;
    /* lane l of vector v: group 2 * KQ_SUB[2v + l / 8] + l % 8 / 4 (stored), 4v + l / 4 (natural) */
    static const int32_t gsub[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 4, 4, 4, 4, 5, 5, 5, 5},
                                        {2, 2, 2, 2, 3, 3, 3, 3, 6, 6, 6, 6, 7, 7, 7, 7},
                                        {8, 8, 8, 8, 9, 9, 9, 9, 12, 12, 12, 12, 13, 13, 13, 13},
                                        {10, 10, 10, 10, 11, 11, 11, 11, 14, 14, 14, 14, 15, 15, 15, 15}};
    static const int32_t gnat[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
                                        {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
                                        {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
                                        {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};
    __m512i idx[4];
    for (int v = 0; v < 4; v++) idx[v] = _mm512_loadu_si512(stored ? gsub[v] : gnat[v]);
    for (uint64_t sb = 0; sb < w->cols / GG_SB; sb++) {
        const uint8_t *p = row + sb * bb;
        /* into L2 (T1): from DRAM q5_k ran at 9 GB/s with T0 and 11 with T1, q4_k and q6_k 0-5%
         * faster (bench_engine --only rows, 1 thread, Xeon) */
        _mm_prefetch((const char *)p + PREFETCH_AHEAD, _MM_HINT_T1);
        _mm_prefetch((const char *)p + PREFETCH_AHEAD + 64, _MM_HINT_T1);
        _mm_prefetch((const char *)p + PREFETCH_AHEAD + 128, _MM_HINT_T1);
        if (bb > 192) _mm_prefetch((const char *)p + PREFETCH_AHEAD + 192, _MM_HINT_T1);
        __m512i c[4];
        __m512 s16, b16;
        gg_unpack(type, stored, p, c, &s16, &b16);
        _Pragma("GCC unroll 4")
        for (int t = 0; t < NT; t++) {
            const int8_t *xq = a->q + (uint64_t)(t0 + t) * a->ld + sb * GG_SB;
            __m512 sd = _mm512_mul_ps(s16, _mm512_loadu_ps(a->dl + (uint64_t)(t0 + t) * (a->ld / 4) + sb * GG_G));
            __m512i d[4];
            _Pragma("GCC unroll 4")
            for (int v = 0; v < 4; v++) d[v] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[v], _mm512_loadu_si512(xq + 64 * v));
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[0]), _mm512_permutexvar_ps(idx[0], sd), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[1]), _mm512_permutexvar_ps(idx[1], sd), acc1[t]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[2]), _mm512_permutexvar_ps(idx[2], sd), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[3]), _mm512_permutexvar_ps(idx[3], sd), acc1[t]);
            accb[t] = _mm512_fmadd_ps(b16, _mm512_loadu_ps(a->gsum + (uint64_t)(t0 + t) * a->ng + sb * GG_G), accb[t]);
        }
    }
    _Pragma("GCC unroll 4")
    for (int t = 0; t < NT; t++)
        y[(uint64_t)(t0 + t) * w->rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0[t], acc1[t]), accb[t]));
}

RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void gg_span_t(const rf_wmat *w, int type, const qx *a,
                                                                            float *y, uint64_t r0, uint64_t r1)
{
    uint64_t rb = rf_gtype_row_bytes(type, w->cols), bb = rb / (w->cols / GG_SB);
    for (int t = 0; t < a->ntok; t += 4) {
        int nt = a->ntok - t < 4 ? a->ntok - t : 4;
        for (uint64_t r = r0; r < r1; r++) switch (nt) {
            case 1: gg_row(w, type, a, t, 1, y, r, rb, bb); break;
            case 2: gg_row(w, type, a, t, 2, y, r, rb, bb); break;
            case 3: gg_row(w, type, a, t, 3, y, r, rb, bb); break;
            default: gg_row(w, type, a, t, 4, y, r, rb, bb); break;
            }
    }
}

RF_TARGET_AVX512VNNI static void gg_span(const rf_wmat *w, const qx *a, float *y, uint64_t r0, uint64_t r1)
{
    switch (w->gtype) { /* the type a constant of each instance */
    case RF_GT_Q4_K: gg_span_t(w, RF_GT_Q4_K, a, y, r0, r1); break;
    case RF_GT_Q5_K: gg_span_t(w, RF_GT_Q5_K, a, y, r0, r1); break;
    default: gg_span_t(w, RF_GT_Q6_K, a, y, r0, r1); break;
    }
}

/* Batches: rows [r0, r0 + nr) of a k-quant matrix, columns [k0, k0 + kn) into the panel of the
 * MLX batches (groups of 16 columns), tmp holding 16 rows of KT codes. */
RF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void gg_pack_t(const rf_wmat *w, int type, uint64_t r0,
                                                                            int nr, uint64_t k0, uint64_t kn, panel *P,
                                                                            uint8_t *tmp)
{
    uint64_t rb = rf_gtype_row_bytes(type, w->cols), bb = rb / (w->cols / GG_SB);
    float sb16[GG_G], bb16[GG_G];
    for (int h = 0; h < GR / 16; h++) {
        for (int i = 0; i < 16; i++) {
            int ri = 16 * h + i;
            for (uint64_t sb = 0; sb < kn / GG_SB; sb++) {
                __m512i c[4];
                __m512 s16 = _mm512_setzero_ps(), b16 = s16;
                if (ri < nr) gg_unpack(type, 0, (const uint8_t *)w->data + (r0 + (uint64_t)ri) * rb + (k0 / GG_SB + sb) * bb, c, &s16, &b16);
                else c[0] = c[1] = c[2] = c[3] = _mm512_setzero_si512();
                for (int v = 0; v < 4; v++) _mm512_storeu_si512(tmp + (uint64_t)i * KT + sb * GG_SB + 64 * (uint64_t)v, c[v]);
                _mm512_storeu_ps(sb16, s16);
                _mm512_storeu_ps(bb16, b16);
                for (int k = 0; k < GG_G; k++) P->sc[sb * GG_G + (uint64_t)k][ri] = sb16[k], P->bi[sb * GG_G + (uint64_t)k][ri] = bb16[k];
            }
        }
        for (uint64_t c = 0; c * 64 < kn; c++) {
            __m512i r[16];
            for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(tmp + (uint64_t)i * KT + c * 64);
            transpose16(r);
            for (int j = 0; j < 16; j++) _mm512_storeu_si512(&P->codes[c * 16 + (uint64_t)j][16 * h], r[j]);
        }
    }
}

RF_TARGET_AVX512VNNI static void gg_gemm_block(const rf_wmat *w, const qx *a, float *y, uint64_t r0, panel *P, uint8_t *tmp)
{
    uint64_t rows = w->rows, cols = w->cols;
    int nr = rows - r0 < GR ? (int)(rows - r0) : GR;
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
    __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    const uint64_t rb = rf_gtype_row_bytes(w->gtype, cols), bb = rb / (cols / GG_SB);
    if (r0 == 0) prefetch_rows(w->data, rb, r0, nr, 0, (KT < cols ? KT : cols) / GG_SB * bb);
    for (uint64_t k0 = 0; k0 < cols; k0 += KT) {
        uint64_t kn = cols - k0 < KT ? cols - k0 : KT;
        if (k0 + KT < cols) { /* as gemm_block */
            uint64_t kn2 = cols - k0 - KT < KT ? cols - k0 - KT : KT;
            prefetch_rows(w->data, rb, r0, nr, (k0 + KT) / GG_SB * bb, kn2 / GG_SB * bb);
        } else if (r0 + GR < rows) {
            int nr2 = rows - r0 - GR < GR ? (int)(rows - r0 - GR) : GR;
            prefetch_rows(w->data, rb, r0 + GR, nr2, 0, (KT < cols ? KT : cols) / GG_SB * bb);
        }
        switch (w->gtype) {
        case RF_GT_Q4_K: gg_pack_t(w, RF_GT_Q4_K, r0, nr, k0, kn, P, tmp); break;
        case RF_GT_Q5_K: gg_pack_t(w, RF_GT_Q5_K, r0, nr, k0, kn, P, tmp); break;
        default: gg_pack_t(w, RF_GT_Q6_K, r0, nr, k0, kn, P, tmp); break;
        }
        gemm_tokens(P, k0, kn, GG_G, GG_G, a, y, rows, r0, m0, m1, k0 == 0);
    }
}

/* Quantize all tokens (the calling thread: a few microseconds next to the product). Layouts of
 * the codes: natural order (panels, and rows of 3/5/6 bits), or per 64-byte step and phase for
 * rows of 2/4/8 bits (gemv_phase_rows); dl holds the block scale of each 32-bit lane position
 * of the row kernels. */
enum { LAYOUT_PANEL, LAYOUT_CHUNKS, LAYOUT_PHASES, LAYOUT_KQ, LAYOUT_KQ_SUB };

/* The layout of x that W's kernel reads. k-quant rows: dl per group of 16; Q4_K/Q5_K with the
 * 32-column sub-blocks of each super-block in stored order (KQ_SUB). */
static int qx_layout(const rf_wmat *w, int gemm)
{
    if (gemm) return LAYOUT_PANEL;
    if (w->gtype) return w->gtype == RF_GT_Q6_K ? LAYOUT_KQ : LAYOUT_KQ_SUB;
    return phase_bits(w->bits) ? LAYOUT_PHASES : LAYOUT_CHUNKS;
}

RF_TARGET_AVX512VNNI static void prepare_qx(const rf_wmat *w, const float *x, int ntok, qx *a, int layout, int8_t *tmp)
{
    uint64_t gpb = (uint64_t)w->gs / QB;
    int bits = w->bits, nph = w->gtype ? 1 : 8 / bits;
    uint64_t S = w->gtype ? 64 : 512 / (uint64_t)bits;
    for (int t = 0; t < ntok; t++) {
        int8_t *q = a->q + (uint64_t)t * a->ld, *nat = layout == LAYOUT_PHASES || layout == LAYOUT_KQ_SUB ? tmp : q;
        float *d = a->d + (uint64_t)t * a->nb, *bs = a->bsum + (uint64_t)t * a->nb, *gsum = a->gsum + (uint64_t)t * a->ng;
        quantize_512(x + (uint64_t)t * a->cols, a->cols, nat, d, bs);
        memset(nat + a->cols, 0, a->ld - a->cols);
        if (w->gtype) /* k-quant groups of 16: the float sums of x itself */
            for (uint64_t g = 0; g < a->ng; g++) gsum[g] = _mm512_reduce_add_ps(_mm512_loadu_ps(x + (uint64_t)t * a->cols + g * GG_G));
        else
        for (uint64_t g = 0; g < a->ng; g++) {
            float s = 0;
            for (uint64_t b = 0; b < gpb; b++) s += bs[g * gpb + b];
            gsum[g] = s;
        }
        if (layout == LAYOUT_PANEL) continue;
        float *dl = a->dl + (uint64_t)t * (a->ld / 4);
        if (layout == LAYOUT_KQ || layout == LAYOUT_KQ_SUB) {
            for (uint64_t g = 0; g < a->ld / 4; g++) dl[g] = g < a->ng ? d[g * GG_G / QB] : 0.0f;
            if (layout == LAYOUT_KQ_SUB)
                for (uint64_t sb = 0; sb < a->ld / GG_SB; sb++)
                    for (int j = 0; j < 8; j++) memcpy(q + sb * GG_SB + 32 * (uint64_t)j, nat + sb * GG_SB + 32 * (uint64_t)KQ_SUB[j], 32);
            continue;
        }
        if (layout == LAYOUT_CHUNKS) {
            /* lane l of chunk c covers codes 64c + 4l .. +3 */
            for (uint64_t i = 0; i < a->ld / 4; i++) dl[i] = i * 4 < a->cols ? d[i * 4 / QB] : 0.0f;
            continue;
        }
        for (uint64_t st = 0; st * S < a->ld; st++) {
            for (int p = 0; p < nph; p++)
                for (int i = 0; i < 64; i++) q[st * S + 64 * (uint64_t)p + (uint64_t)i] = nat[st * S + (uint64_t)(nph * i + p)];
            for (int l = 0; l < 16; l++) {
                uint64_t c = st * S + 4 * (uint64_t)nph * (uint64_t)l;
                dl[st * 16 + (uint64_t)l] = c < a->cols ? d[c / QB] : 0.0f;
            }
        }
    }
}

/* One pool job for up to RF_Q8_MULTI products of the same input: product i owns tasks
 * [t0[i], t0[i + 1]). */
typedef struct {
    const rf_wmat *w[RF_Q8_MULTI];
    const qx *a[RF_Q8_MULTI];
    float *y[RF_Q8_MULTI];
    uint64_t t0[RF_Q8_MULTI + 1], rows_per_task[RF_Q8_MULTI];
    int n, gemm;
} q8_job;

static void q8_task(void *ctx, uint64_t task, int worker)
{
    (void)worker;
    const q8_job *j = ctx;
    int i = 0;
    while (task >= j->t0[i + 1]) i++;
    const rf_wmat *w = j->w[i];
    uint64_t r0 = (task - j->t0[i]) * j->rows_per_task[i];
    uint64_t r1 = r0 + j->rows_per_task[i] < w->rows ? r0 + j->rows_per_task[i] : w->rows;
    if (!j->gemm) {
        if (w->gtype) gg_span(w, j->a[i], j->y[i], r0, r1);
        else gemv_span(w, j->a[i], j->y[i], r0, r1);
        return;
    }
    panel *P = aligned_alloc(64, sizeof(panel) + (w->gtype ? 16 * KT : 0));
    if (!P) abort();
    for (uint64_t r = r0; r < r1; r += GR)
        if (w->gtype) gg_gemm_block(w, j->a[i], j->y[i], r, P, (uint8_t *)(P + 1));
        else gemm_block(w, j->a[i], j->y[i], r, P);
    free(P);
}
#endif

/* Tokens from which a batch is packed into panels rather than streamed row by row. Packing costs
 * about half a cycle per weight whatever the batch, so small batches (an MoE expert's share of a
 * prompt: 1-30 tokens) stream rows, 4 tokens a pass: `bench_engine --only rows --shape 768x2048
 * --copies 16 --ntok N --threads 1` (Xeon, GMAC/s, rows vs panels) gave 54 vs 29 at 5 tokens,
 * 58 vs 42 at 8, about even at 9 (4:64 rows 61 vs 49, q4_k 41 vs 51), panels ahead from 10. */
enum { GEMM_MIN_TOKENS = 9, POOL_MIN = 262144 };

int rf_matmul_q8_supported(const rf_wmat *w)
{
#if RF_X86
    unsigned need = RF_CPU_AVX512 | RF_CPU_AVX512VNNI | RF_CPU_AVX512VBMI;
    if ((rf_cpu_features() & need) != need) return 0;
    if (w->gtype) return gg_type_ok(w->gtype) && w->cols % GG_SB == 0;
    return w->dtype == RF_DT_U32 && w->cols / (uint64_t)w->gs <= MAX_GROUPS && w->gs % QB == 0 && KT % w->gs == 0;
#else
    (void)w;
    return 0;
#endif
}

static void matmul_q8(const rf_wmat *const *w, int n, const float *x, int ntok, float *const *y, rf_pool *pool);

void rf_matmul_q8(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool)
{
    rf_matmul_q8_multi(&w, 1, x, ntok, &y, pool);
}

void rf_matmul_q8_multi(const rf_wmat *const *w, int n, const float *x, int ntok, float *const *y, rf_pool *pool)
{
    const rf_wmat *ws[RF_Q8_MULTI];
    float *ys[RF_Q8_MULTI];
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (rf_matmul_q8_supported(w[i]) && m < RF_Q8_MULTI) ws[m] = w[i], ys[m++] = y[i];
        else rf_matmul(w[i], x, ntok, y[i], pool);
    }
    if (!m) return;
    if (!rf_prof_on) { matmul_q8(ws, m, x, ntok, ys, pool); return; }
    uint64_t t0 = rf_prof_now();
    matmul_q8(ws, m, x, ntok, ys, pool);
    rf_prof_add(RF_PROF_MATMUL_Q8, t0);
}

#if RF_X86
/* The activations as W's kernel reads them: the layout, and for the row kernels the groups
 * (k-quants: 16; MLX: gs) and the phase order of 2/4/8-bit codes. Products with equal keys
 * share one quantized x. */
static uint64_t qx_key(const rf_wmat *w, int gemm)
{
    int layout = qx_layout(w, gemm);
    uint64_t g = w->gtype ? GG_G : (uint64_t)w->gs;
    return (uint64_t)layout << 40 | g << 8 | (uint64_t)(layout == LAYOUT_PHASES ? w->bits : 0);
}

/* x quantized for W's kernel into a (one heap block, returned; NULL without memory). */
static void *qx_make(const rf_wmat *w, const float *x, int ntok, int gemm, qx *a)
{
    a->ntok = ntok;
    a->cols = w->cols;
    /* padded to whole 64-byte steps of 2-bit codes (256), so every kernel reads zeros past cols */
    a->ld = (w->cols + 255) / 256 * 256;
    a->nb = w->cols / QB;
    a->ng = w->cols / (w->gtype ? GG_G : (uint64_t)w->gs);
    int layout = qx_layout(w, gemm);
    uint64_t T = (uint64_t)ntok;
    size_t nq = T * a->ld + (layout == LAYOUT_PHASES || layout == LAYOUT_KQ_SUB ? a->ld : 0), nf = T * (2 * a->nb + a->ng + (gemm ? 0 : a->ld / 4));
    void *buf = malloc(nq + nf * sizeof(float) + 64);
    if (!buf) return NULL;
    a->d = (float *)buf;
    a->bsum = a->d + T * a->nb;
    a->gsum = a->bsum + T * a->nb;
    a->dl = gemm ? NULL : a->gsum + T * a->ng;
    a->q = (int8_t *)(a->d + nf);
    prepare_qx(w, x, ntok, a, layout, a->q + T * a->ld);
    return buf;
}
#endif

/* One pool job for all N products (their rows in a row, each product's rows cut as alone, so
 * the results are those of N separate calls); x quantized once per distinct kernel layout. */
static void matmul_q8(const rf_wmat *const *w, int n, const float *x, int ntok, float *const *y, rf_pool *pool)
{
    if (ntok <= 0) return;
#if RF_X86
    int gemm = ntok >= GEMM_MIN_TOKENS;
    qx a[RF_Q8_MULTI];
    void *buf[RF_Q8_MULTI] = {0};
    uint64_t key[RF_Q8_MULTI], work = 0;
    q8_job j = {.n = n, .gemm = gemm};
    uint64_t nth = (uint64_t)rf_pool_threads(pool);
    int fail = 0;
    for (int i = 0; i < n; i++) {
        key[i] = qx_key(w[i], gemm);
        int k = 0;
        while (k < i && (key[k] != key[i] || !buf[k])) k++;
        if (k == i) {
            buf[i] = qx_make(w[i], x, ntok, gemm, &a[i]);
            fail |= !buf[i];
        }
        j.w[i] = w[i];
        j.a[i] = &a[k];
        j.y[i] = y[i];
        /* decode: one contiguous share of the rows per thread (in whole 64-row steps), so each
         * thread's row prefetches run ahead inside its own rows; 64-row tasks dealt out in turn
         * had every thread prefetching the other's rows (2-thread decode ~15% slower) */
        uint64_t rpt = gemm ? 2 * GR : ((w[i]->rows + nth - 1) / nth + 63) / 64 * 64;
        j.rows_per_task[i] = rpt;
        j.t0[i + 1] = j.t0[i] + (w[i]->rows + rpt - 1) / rpt;
        work += w[i]->rows * w[i]->cols * (uint64_t)ntok;
    }
    if (fail) { /* without memory: the exact product */
        for (int i = 0; i < n; i++) rf_matmul(w[i], x, ntok, y[i], pool);
    } else {
        rf_pool_run(work < POOL_MIN ? NULL : pool, j.t0[n], q8_task, &j);
    }
    for (int i = 0; i < n; i++) free(buf[i]);
#else
    (void)w, (void)n, (void)x, (void)y, (void)pool;
#endif
}
