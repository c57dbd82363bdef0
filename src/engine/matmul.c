/* The engine's matrix products, computed directly on the weights where they lie (mmapped):
 * F32/F16/BF16 rows or MLX affine-packed rows (2..8 bits, per-group scale and bias).
 *
 * Decode (one token): rows are streamed once (software prefetch) and dotted with x directly;
 * packed codes are isolated in place in 32-bit lanes and dotted with a copy of x permuted and
 * scaled to match ("lanes", below), the scale applied per group and the bias through the group
 * sums of x.
 * Batches (prompt, perplexity windows): a 16-row x 256-column tile of W is dequantized into an
 * L1-resident buffer once and dotted with every token's activations by a 4x3 register-blocked
 * kernel, so the dequantization cost is shared by all tokens and W is read once per batch.
 * Every output element is computed by one task in a fixed order: results do not depend on the
 * number of threads. */
#include "engine/engine_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if RF_X86
#include <immintrin.h>
#endif

enum { TILE_ROWS = 16, TILE_COLS = 256 };

static uint64_t row_bytes_packed(const rf_wmat *w) { return w->cols * (uint64_t)w->bits / 8; }
static uint64_t row_groups(const rf_wmat *w) { return w->cols / (uint64_t)w->gs; }

static inline float load_scalar(rf_dtype dt, const void *p, uint64_t i)
{
    switch (dt) {
    case RF_DT_F32: return ((const float *)p)[i];
    case RF_DT_F16: return rf_f16_to_f32(((const uint16_t *)p)[i]);
    default: return rf_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

/* Element i of an LSB-first bit stream, read byte-wise: no alignment needs, no over-read. */
static inline uint32_t unpack_one(const uint8_t *row, uint64_t i, int bits)
{
    uint64_t bit = i * (uint64_t)bits;
    const uint8_t *p = row + (bit >> 3);
    unsigned off = (unsigned)(bit & 7);
    uint32_t v = (uint32_t)p[0] >> off;
    if (off + (unsigned)bits > 8) v |= (uint32_t)p[1] << (8 - off);
    return v & ((1u << bits) - 1);
}

static int is_aligned(const void *p, uint64_t a) { return ((uintptr_t)p % a) == 0; }

rf_status rf_wmat_check(const rf_wmat *w, const char *name, rf_err *err)
{
    if (w->gtype) return rf_ggml_wmat_check(w, name, err); /* GGUF hook */
    if (!name) name = "?";
    if (w->rows == 0 || w->cols == 0 || !w->data)
        return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: empty weight matrix", name);
    if (w->dtype == RF_DT_F32 || w->dtype == RF_DT_F16 || w->dtype == RF_DT_BF16) {
        if (!is_aligned(w->data, rf_dtype_size(w->dtype)))
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "tensor %s: data not aligned to its %s elements", name,
                              rf_dtype_name(w->dtype));
        return RF_OK;
    }
    if (w->dtype != RF_DT_U32)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tensor %s: cannot compute with dtype %s", name,
                          rf_dtype_name(w->dtype));
    int b = w->bits;
    if (b != 2 && b != 3 && b != 4 && b != 5 && b != 6 && b != 8)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tensor %s: %d-bit quantization is not supported", name, b);
    /* Groups of a multiple of 32 that divide the 256-column tile keep every SIMD chunk of 8
     * inside one group and every tile made of whole groups. */
    if (w->gs <= 0 || w->gs % 32 != 0 || TILE_COLS % w->gs != 0)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tensor %s: group size %d is not supported (32, 64, 128, 256)",
                          name, w->gs);
    if (w->cols % (uint64_t)w->gs != 0)
        return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: group size %d does not divide %llu columns", name, w->gs,
                          (unsigned long long)w->cols);
    if (w->sdtype != RF_DT_F32 && w->sdtype != RF_DT_F16 && w->sdtype != RF_DT_BF16)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tensor %s: scales of dtype %s are not supported", name,
                          rf_dtype_name(w->sdtype));
    if (!w->scales || !w->biases || !is_aligned(w->scales, rf_dtype_size(w->sdtype)) ||
        !is_aligned(w->biases, rf_dtype_size(w->sdtype)))
        return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: missing or misaligned scales/biases", name);
    return RF_OK;
}

rf_wmat rf_wmat_rows(const rf_wmat *w, uint64_t r0, uint64_t n)
{
    if (w->gtype) return rf_ggml_wmat_rows(w, r0, n); /* GGUF hook */
    rf_wmat s = *w;
    s.rows = n;
    if (w->dtype == RF_DT_U32) {
        uint64_t sz = rf_dtype_size(w->sdtype), g = row_groups(w);
        s.data = (const uint8_t *)w->data + r0 * row_bytes_packed(w);
        s.scales = (const uint8_t *)w->scales + r0 * g * sz;
        s.biases = (const uint8_t *)w->biases + r0 * g * sz;
    } else {
        s.data = (const uint8_t *)w->data + r0 * w->cols * rf_dtype_size(w->dtype);
    }
    return s;
}

uint64_t rf_wmat_bytes(const rf_wmat *w)
{
    if (w->gtype) return rf_ggml_wmat_bytes(w); /* GGUF hook */
    if (w->dtype != RF_DT_U32) return w->rows * w->cols * rf_dtype_size(w->dtype);
    return w->rows * (row_bytes_packed(w) + 2 * row_groups(w) * rf_dtype_size(w->sdtype));
}

/* Columns [c0, c0 + n) of row r, scalar. */
static void deq_ref(const rf_wmat *w, uint64_t r, uint64_t c0, uint64_t n, float *out)
{
    switch (w->dtype) {
    case RF_DT_F32: memcpy(out, (const float *)w->data + r * w->cols + c0, n * sizeof(float)); return;
    case RF_DT_F16:
    case RF_DT_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + r * w->cols + c0;
        for (uint64_t i = 0; i < n; i++) out[i] = load_scalar(w->dtype, p, i);
        return;
    }
    default: {
        const uint8_t *row = (const uint8_t *)w->data + r * row_bytes_packed(w);
        uint64_t gbase = r * row_groups(w);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t c = c0 + i, g = gbase + c / (uint64_t)w->gs;
            float s = load_scalar(w->sdtype, w->scales, g), b = load_scalar(w->sdtype, w->biases, g);
            out[i] = s * (float)unpack_one(row, c, w->bits) + b;
        }
    }
    }
}

void rf_wmat_row_ref(const rf_wmat *w, uint64_t r, float *out)
{
    if (w->gtype) { rf_ggml_row_ref(w, r, out); return; } /* GGUF hook */
    deq_ref(w, r, 0, w->cols, out);
}

/* ------------------------------------------------------------------ AVX2 + FMA + F16C paths */
#if RF_X86
/* pshufb/shift controls that put element j of an 8-element chunk (8*bits bits, byte aligned)
 * into 32-bit lane j: lane j takes the 4 bytes from byte (j*bits)/8 and shifts by (j*bits)%8. */
typedef struct { __m256i shuf, shift, mask; } unpack_ctl;

RF_TARGET_AVX2 static unpack_ctl make_unpack_ctl(int bits)
{
    int8_t idx[32];
    int32_t sh[8];
    for (int j = 0; j < 8; j++) {
        for (int q = 0; q < 4; q++) idx[4 * j + q] = (int8_t)(((j * bits) >> 3) + q);
        sh[j] = (j * bits) & 7;
    }
    unpack_ctl c;
    c.shuf = _mm256_loadu_si256((const __m256i *)idx);
    c.shift = _mm256_loadu_si256((const __m256i *)sh);
    c.mask = _mm256_set1_epi32((1 << bits) - 1);
    return c;
}

/* 8 quantized values starting at byte p (at most 11 bytes are needed; never read past end). */
RF_TARGET_AVX2 static inline __m256 unpack8(const uint8_t *p, const uint8_t *end, const unpack_ctl *c)
{
    __m128i raw;
    if (end - p >= 16) {
        raw = _mm_loadu_si128((const __m128i *)p);
    } else {
        uint8_t tmp[16] = {0};
        memcpy(tmp, p, (size_t)(end - p));
        raw = _mm_loadu_si128((const __m128i *)tmp);
    }
    __m256i v = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(raw), c->shuf);
    v = _mm256_and_si256(_mm256_srlv_epi32(v, c->shift), c->mask);
    return _mm256_cvtepi32_ps(v);
}

RF_TARGET_AVX2 static inline __m256 load8_float(rf_dtype dt, const void *p)
{
    switch (dt) {
    case RF_DT_F32: return _mm256_loadu_ps(p);
    case RF_DT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    default:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
    }
}

RF_TARGET_AVX2 static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static const uint8_t *packed_end(const rf_wmat *w) { return (const uint8_t *)w->data + w->rows * row_bytes_packed(w); }

/* Columns [c0, c0 + n) of row r into out; for packed rows c0 and n are multiples of gs. */
RF_TARGET_AVX2 static void deq_avx2(const rf_wmat *w, uint64_t r, uint64_t c0, uint64_t n, float *out,
                                    const unpack_ctl *ctl)
{
    if (w->dtype != RF_DT_U32) {
        uint64_t es = rf_dtype_size(w->dtype), i = 0;
        const uint8_t *p = (const uint8_t *)w->data + (r * w->cols + c0) * es;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8_float(w->dtype, p + i * es));
        if (i < n) deq_ref(w, r, c0 + i, n - i, out + i);
        return;
    }
    const uint8_t *row = (const uint8_t *)w->data + r * row_bytes_packed(w), *end = packed_end(w);
    uint64_t gs = (uint64_t)w->gs, g = r * row_groups(w) + c0 / gs;
    for (uint64_t i = 0; i < n; i += gs, g++) {
        __m256 s = _mm256_set1_ps(load_scalar(w->sdtype, w->scales, g));
        __m256 b = _mm256_set1_ps(load_scalar(w->sdtype, w->biases, g));
        for (uint64_t j = i; j < i + gs; j += 8) {
            __m256 q = unpack8(row + (c0 + j) * (uint64_t)w->bits / 8, end, ctl);
            _mm256_storeu_ps(out + j, _mm256_fmadd_ps(q, s, b));
        }
    }
}

/* ---- Packed decode ("lanes"). A 256-bit vector holds 8 lanes of 32 bits; lane k carries cpl
 * consecutive codes of a chunk of 8*cpl codes. Code j of every lane is isolated in place with one
 * AND (giving q * 2^(bits*j)) and converted to float; x is permuted into the same lane order
 * once per call and pre-scaled by 2^(-bits*j), which is exact, so each 8 codes cost an AND, a
 * conversion and an FMA, with no shuffles and the same products as the reference.
 *  2/4/8 bits: a lane is one packed word (cpl = 32/bits), the chunk one 32-byte load; the top
 *    code of a word is taken with a shift instead (q << 28 would not fit a signed lane).
 *  3/5/6 bits: cpl = 8, 4, 4 (24, 20, 24 bits per lane); each half of the vector gets its 4
 *    lanes' bytes from one 16-byte load by pshufb, and 5-bit lanes starting mid-byte a 4-bit
 *    shift. */
typedef struct {
    int cpl, chunk;          /* codes per lane and per chunk */
    __m256i shuf, lshift;    /* 3/5/6 bits */
    __m256i sidx;            /* lane -> group offset within the chunk, when gs < chunk */
} lanes_ctl;

static int lanes_cpl(int bits) { return bits == 2 ? 16 : bits == 4 || bits == 3 ? 8 : 4; }

RF_TARGET_AVX2 static lanes_ctl make_lanes_ctl(int bits, int gs)
{
    lanes_ctl c;
    c.cpl = lanes_cpl(bits);
    c.chunk = 8 * c.cpl;
    int8_t idx[32];
    int32_t sh[8], si[8];
    int lb = c.cpl * bits; /* bits per lane */
    for (int k = 0; k < 8; k++) {
        int first = (k & 3) * lb; /* bit offset within the half's 16-byte load */
        for (int q = 0; q < 4; q++) idx[4 * k + q] = (int8_t)((first >> 3) + q);
        sh[k] = first & 7;
        si[k] = k * c.cpl / gs;
    }
    c.shuf = _mm256_loadu_si256((const __m256i *)idx);
    c.lshift = _mm256_loadu_si256((const __m256i *)sh);
    c.sidx = _mm256_loadu_si256((const __m256i *)si);
    return c;
}

/* The 8 lanes of the chunk at p (never reads past end). */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) __m256i lanes_load(const uint8_t *p, const uint8_t *end,
                                                                              int bits, const lanes_ctl *c)
{
    if (bits == 2 || bits == 4 || bits == 8) return _mm256_loadu_si256((const __m256i *)p);
    const int lb = lanes_cpl(bits) * bits, half = lb / 2; /* bits per lane; bytes of 4 lanes */
    __m128i lo, hi;
    if (end - p >= half + 16) {
        lo = _mm_loadu_si128((const __m128i *)p);
        hi = _mm_loadu_si128((const __m128i *)(p + half));
    } else {
        uint8_t tmp[48] = {0};
        memcpy(tmp, p, (size_t)lb);
        lo = _mm_loadu_si128((const __m128i *)tmp);
        hi = _mm_loadu_si128((const __m128i *)(tmp + half));
    }
    __m256i v = _mm256_shuffle_epi8(_mm256_set_m128i(hi, lo), c->shuf);
    return lb % 8 == 0 ? v : _mm256_srlv_epi32(v, c->lshift);
}

/* sum over the chunk's lanes and codes of q * xp: one partial sum per lane. */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 lanes_chunk(__m256i v, const float *xp, int bits)
{
    const int cpl = lanes_cpl(bits), m = (1 << bits) - 1;
    __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
#pragma GCC unroll 16
    for (int j = 0; j < cpl; j++) {
        __m256i q = (j == cpl - 1 && cpl * bits == 32) ? _mm256_srli_epi32(v, bits * j)
                                                       : _mm256_and_si256(v, _mm256_set1_epi32(m << (bits * j)));
        __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(xp + 8 * j), j & 1 ? d1 : d0);
        if (j & 1) d1 = t;
        else d0 = t;
    }
    return _mm256_add_ps(d0, d1);
}

/* Element i of a scale/bias array, inline (the decode loop reads one per chunk and row). */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) float load_s(rf_dtype dt, const void *p, uint64_t i)
{
    if (dt == RF_DT_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (dt == RF_DT_F16) return _cvtsh_ss(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* out[0..n) = n stored scale/bias values as float. */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) void load_groups(rf_dtype dt, const void *p, uint64_t n,
                                                                            float *out)
{
    uint64_t es = dt == RF_DT_F32 ? 4 : 2, i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, load8_float(dt, (const uint8_t *)p + i * es));
    for (; i < n; i++) out[i] = load_s(dt, p, i);
}

/* The scale of each lane of chunk k of a row (its scales as float in sf, 8 readable past
 * the end): one group, or several when gs < chunk (sizes are powers of two: a shift, not a
 * division, in the inner loop). */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 lanes_scale(const float *sf, uint64_t k, uint64_t C,
                                                                              uint64_t gs, int gshift,
                                                                              const lanes_ctl *c)
{
    if (gs >= C) return _mm256_broadcast_ss(sf + ((k * C) >> gshift));
    return _mm256_permutevar8x32_ps(_mm256_loadu_ps(sf + ((k * C) >> gshift)), c->sidx);
}

/* What every row of one decode call shares: x permuted and scaled into lane order (xp, whole
 * chunks only) and the group sums of x for the bias terms. */
typedef struct {
    lanes_ctl ctl;
    const float *x, *xp, *xsum;
    uint64_t nchunks;        /* whole chunks; the rest (when gs < chunk) is a tail of whole groups */
} lanes_job;

enum { MAX_XGROUPS = 4096 };
/* Decode streams each weight byte once: software prefetch this far ahead (into the next rows)
 * roughly doubled the bytes/s from DRAM on a Zen 5 core over the hardware prefetchers alone. */
enum { PREFETCH_AHEAD = 8192 };

RF_TARGET_AVX2 static void lanes_prepare(const rf_wmat *w, const float *x, float *xp, float *xsum, lanes_job *j)
{
    j->ctl = make_lanes_ctl(w->bits, w->gs);
    int cpl = j->ctl.cpl, C = j->ctl.chunk;
    j->nchunks = w->cols / (uint64_t)C;
    for (uint64_t c = 0; c < j->nchunks; c++)
        for (int jj = 0; jj < cpl; jj++) {
            /* the top code of a 32-bit lane is shifted down, not left in place */
            int e = (jj == cpl - 1 && cpl * w->bits == 32) ? 0 : w->bits * jj;
            float sc = ldexpf(1.0f, -e);
            for (int k = 0; k < 8; k++) xp[c * C + 8 * jj + k] = x[c * C + k * cpl + jj] * sc;
        }
    uint64_t gs = (uint64_t)w->gs, ng = row_groups(w);
    for (uint64_t g = 0; g < ng; g++) {
        __m256 a = _mm256_setzero_ps();
        for (uint64_t i = 0; i < gs; i += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(x + g * gs + i));
        xsum[g] = hsum8(a);
    }
    j->x = x;
    j->xp = xp;
    j->xsum = xsum;
}

/* sum_g b_g * sum(x_g) of one row (biases at bp). */
RF_TARGET_AVX2 static inline float lanes_bias(rf_dtype dt, const void *bp, uint64_t ng, const float *xsum)
{
    uint64_t es = rf_dtype_size(dt), g = 0;
    __m256 a = _mm256_setzero_ps();
    for (; g + 8 <= ng; g += 8) a = _mm256_fmadd_ps(load8_float(dt, (const uint8_t *)bp + g * es), _mm256_loadu_ps(xsum + g), a);
    float s = hsum8(a);
    for (; g < ng; g++) s += load_s(dt, bp, g) * xsum[g];
    return s;
}

/* Packed row r times x as sum_g s_g * (q_g . x_g) + b_g * sum(x_g); sf is scratch for the
 * row's scales. bits is a constant after inlining. (Several rows at once, sharing the loads of
 * xp, measured slower: more streams and register pressure.) */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) float lanes_row(const rf_wmat *w, uint64_t r,
                                                                           const lanes_job *j, int bits, float *sf)
{
    const lanes_ctl *c = &j->ctl;
    const uint64_t C = 8 * (uint64_t)lanes_cpl(bits), cb = C * (uint64_t)bits / 8;
    const uint64_t ng = row_groups(w), gs = (uint64_t)w->gs, sb = ng * rf_dtype_size(w->sdtype);
    const int gshift = __builtin_ctzll(gs);
    const uint8_t *row = (const uint8_t *)w->data + r * row_bytes_packed(w), *end = packed_end(w);
    load_groups(w->sdtype, (const uint8_t *)w->scales + r * sb, ng, sf);
    memset(sf + ng, 0, 8 * sizeof(float));
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    uint64_t n = j->nchunks, k = 0;
    for (; k + 2 <= n; k += 2) {
        _mm_prefetch((const char *)row + k * cb + PREFETCH_AHEAD, _MM_HINT_T0);
        acc0 = _mm256_fmadd_ps(lanes_chunk(lanes_load(row + k * cb, end, bits, c), j->xp + k * C, bits),
                               lanes_scale(sf, k, C, gs, gshift, c), acc0);
        acc1 = _mm256_fmadd_ps(lanes_chunk(lanes_load(row + (k + 1) * cb, end, bits, c), j->xp + (k + 1) * C, bits),
                               lanes_scale(sf, k + 1, C, gs, gshift, c), acc1);
    }
    if (k < n)
        acc0 = _mm256_fmadd_ps(lanes_chunk(lanes_load(row + k * cb, end, bits, c), j->xp + k * C, bits),
                               lanes_scale(sf, k, C, gs, gshift, c), acc0);
    float sum = hsum8(_mm256_add_ps(acc0, acc1)) + lanes_bias(w->sdtype, (const uint8_t *)w->biases + r * sb, ng, j->xsum);
    /* Tail of whole groups after the last whole chunk: codes one at a time. */
    for (uint64_t q = n * C; q < w->cols; q++) sum += sf[q >> gshift] * (float)unpack_one(row, q, bits) * j->x[q];
    return sum;
}

RF_TARGET_AVX2 static inline __attribute__((always_inline)) void lanes_span(const rf_wmat *w, const lanes_job *j,
                                                                           int bits, float *y, uint64_t r0, uint64_t r1)
{
    float sf[MAX_XGROUPS + 8];
    for (uint64_t r = r0; r < r1; r++) y[r] = lanes_row(w, r, j, bits, sf);
}

RF_TARGET_AVX2 static void lanes_rows(const rf_wmat *w, const lanes_job *j, float *y, uint64_t r0, uint64_t r1)
{
    switch (w->bits) {
    case 2: lanes_span(w, j, 2, y, r0, r1); break;
    case 3: lanes_span(w, j, 3, y, r0, r1); break;
    case 4: lanes_span(w, j, 4, y, r0, r1); break;
    case 5: lanes_span(w, j, 5, y, r0, r1); break;
    case 6: lanes_span(w, j, 6, y, r0, r1); break;
    default: lanes_span(w, j, 8, y, r0, r1); break;
    }
}

/* One row times x, dequantizing in registers. */
RF_TARGET_AVX2 static float dot_row_avx2(const rf_wmat *w, uint64_t r, const float *x, const unpack_ctl *ctl)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    uint64_t n = w->cols;
    if (w->dtype != RF_DT_U32) {
        uint64_t es = rf_dtype_size(w->dtype), i = 0;
        const uint8_t *p = (const uint8_t *)w->data + r * n * es;
        for (; i + 16 <= n; i += 16) {
            _mm_prefetch((const char *)p + i * es + PREFETCH_AHEAD, _MM_HINT_T0);
            acc0 = _mm256_fmadd_ps(load8_float(w->dtype, p + i * es), _mm256_loadu_ps(x + i), acc0);
            acc1 = _mm256_fmadd_ps(load8_float(w->dtype, p + (i + 8) * es), _mm256_loadu_ps(x + i + 8), acc1);
        }
        for (; i + 8 <= n; i += 8)
            acc0 = _mm256_fmadd_ps(load8_float(w->dtype, p + i * es), _mm256_loadu_ps(x + i), acc0);
        float s = hsum8(_mm256_add_ps(acc0, acc1));
        for (; i < n; i++) s += load_scalar(w->dtype, p, i) * x[i];
        return s;
    }
    const uint8_t *row = (const uint8_t *)w->data + r * row_bytes_packed(w), *end = packed_end(w);
    uint64_t gs = (uint64_t)w->gs, g = r * row_groups(w), bits = (uint64_t)w->bits;
    for (uint64_t i = 0; i < n; i += gs, g++) {
        __m256 s = _mm256_set1_ps(load_scalar(w->sdtype, w->scales, g));
        __m256 b = _mm256_set1_ps(load_scalar(w->sdtype, w->biases, g));
        for (uint64_t j = i; j < i + gs; j += 16) {
            __m256 w0 = _mm256_fmadd_ps(unpack8(row + j * bits / 8, end, ctl), s, b);
            __m256 w1 = _mm256_fmadd_ps(unpack8(row + (j + 8) * bits / 8, end, ctl), s, b);
            acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + j), acc0);
            acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + j + 8), acc1);
        }
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

/* y[t*ldy + r] += A[r] . X[t] for 4 rows of the tile and 3 tokens: 12 accumulators. */
RF_TARGET_AVX2 static void kernel_4x3(const float *a, const float *x, uint64_t ldx, int n, float *y,
                                      uint64_t ldy)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
    __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    const float *a0 = a, *a1 = a + TILE_COLS, *a2 = a + 2 * TILE_COLS, *a3 = a + 3 * TILE_COLS;
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx;
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 v0 = _mm256_loadu_ps(x0 + k), v1 = _mm256_loadu_ps(x1 + k), v2 = _mm256_loadu_ps(x2 + k);
        __m256 w = _mm256_loadu_ps(a0 + k);
        c00 = _mm256_fmadd_ps(w, v0, c00); c01 = _mm256_fmadd_ps(w, v1, c01); c02 = _mm256_fmadd_ps(w, v2, c02);
        w = _mm256_loadu_ps(a1 + k);
        c10 = _mm256_fmadd_ps(w, v0, c10); c11 = _mm256_fmadd_ps(w, v1, c11); c12 = _mm256_fmadd_ps(w, v2, c12);
        w = _mm256_loadu_ps(a2 + k);
        c20 = _mm256_fmadd_ps(w, v0, c20); c21 = _mm256_fmadd_ps(w, v1, c21); c22 = _mm256_fmadd_ps(w, v2, c22);
        w = _mm256_loadu_ps(a3 + k);
        c30 = _mm256_fmadd_ps(w, v0, c30); c31 = _mm256_fmadd_ps(w, v1, c31); c32 = _mm256_fmadd_ps(w, v2, c32);
    }
    float s[4][3] = {{hsum8(c00), hsum8(c01), hsum8(c02)}, {hsum8(c10), hsum8(c11), hsum8(c12)},
                     {hsum8(c20), hsum8(c21), hsum8(c22)}, {hsum8(c30), hsum8(c31), hsum8(c32)}};
    for (; k < n; k++)
        for (int i = 0; i < 4; i++)
            for (int t = 0; t < 3; t++) s[i][t] += a[i * TILE_COLS + k] * x[t * ldx + k];
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < 3; t++) y[t * ldy + i] += s[i][t];
}

/* Edge tiles: nr <= 4 rows, nt <= 3 tokens, one accumulator per pair. */
RF_TARGET_AVX2 static void kernel_edge(const float *a, int nr, const float *x, uint64_t ldx, int nt, int n,
                                       float *y, uint64_t ldy)
{
    for (int i = 0; i < nr; i++)
        for (int t = 0; t < nt; t++) {
            const float *ai = a + i * TILE_COLS, *xt = x + t * ldx;
            __m256 c = _mm256_setzero_ps();
            int k = 0;
            for (; k + 8 <= n; k += 8) c = _mm256_fmadd_ps(_mm256_loadu_ps(ai + k), _mm256_loadu_ps(xt + k), c);
            float s = hsum8(c);
            for (; k < n; k++) s += ai[k] * xt[k];
            y[t * ldy + i] += s;
        }
}

RF_TARGET_AVX2 static void rows_avx2(const rf_wmat *w, const float *x, int ntok, float *y, uint64_t r0,
                                     uint64_t r1, const lanes_job *lj)
{
    if (lj) { lanes_rows(w, lj, y, r0, r1); return; }
    unpack_ctl ctl = make_unpack_ctl(w->dtype == RF_DT_U32 ? w->bits : 8);
    uint64_t ldy = w->rows, cols = w->cols;
    if (ntok == 1) {
        for (uint64_t r = r0; r < r1; r++) y[r] = dot_row_avx2(w, r, x, &ctl);
        return;
    }
    float tile[TILE_ROWS * TILE_COLS];
    int nr = (int)(r1 - r0);
    for (uint64_t c0 = 0; c0 < cols; c0 += TILE_COLS) {
        int n = (int)(cols - c0 < TILE_COLS ? cols - c0 : TILE_COLS);
        for (int i = 0; i < nr; i++) deq_avx2(w, r0 + (uint64_t)i, c0, (uint64_t)n, tile + i * TILE_COLS, &ctl);
        for (int t = 0; t < ntok; t += 3) {
            int nt = ntok - t < 3 ? ntok - t : 3;
            const float *xt = x + (uint64_t)t * cols + c0;
            float *yt = y + (uint64_t)t * ldy + r0;
            int i = 0;
            if (nt == 3)
                for (; i + 4 <= nr; i += 4) kernel_4x3(tile + i * TILE_COLS, xt, cols, n, yt + i, ldy);
            if (i < nr) kernel_edge(tile + i * TILE_COLS, nr - i, xt, cols, nt, n, yt + i, ldy);
        }
    }
}
#endif

/* ------------------------------------------------------------------ portable path */
static void rows_scalar(const rf_wmat *w, const float *x, int ntok, float *y, uint64_t r0, uint64_t r1)
{
    float tile[TILE_COLS];
    uint64_t cols = w->cols;
    for (uint64_t r = r0; r < r1; r++)
        for (uint64_t c0 = 0; c0 < cols; c0 += TILE_COLS) {
            uint64_t n = cols - c0 < TILE_COLS ? cols - c0 : TILE_COLS;
            deq_ref(w, r, c0, n, tile);
            for (int t = 0; t < ntok; t++) {
                const float *xt = x + (uint64_t)t * cols + c0;
                float s = 0;
                for (uint64_t k = 0; k < n; k++) s += tile[k] * xt[k];
                y[(uint64_t)t * w->rows + r] += s;
            }
        }
}

void rf_wmat_row(const rf_wmat *w, uint64_t r, float *out)
{
    if (w->gtype) { rf_ggml_row(w, r, out); return; } /* GGUF hook */
#if RF_X86
    unsigned f = rf_cpu_features();
    if ((f & RF_CPU_AVX2) && (f & RF_CPU_FMA) && (f & RF_CPU_F16C)) {
        unpack_ctl ctl = make_unpack_ctl(w->dtype == RF_DT_U32 ? w->bits : 8);
        deq_avx2(w, r, 0, w->cols, out, &ctl);
        return;
    }
#endif
    deq_ref(w, r, 0, w->cols, out);
}

typedef struct {
    const rf_wmat *w;
    const float *x;
    float *y;
    int ntok, fast, avx512;
    uint64_t rows_per_task;  /* tiles for batches; longer runs for decode */
#if RF_X86
    const lanes_job *lj;     /* packed decode: what all rows share */
#endif
} mm_job;

static void mm_task(void *ctx, uint64_t task, int worker)
{
    (void)worker;
    const mm_job *j = ctx;
    uint64_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task < j->w->rows ? r0 + j->rows_per_task : j->w->rows;
#if RF_X86
    /* the panel kernel stores its first column tile: no clearing */
    if (j->avx512) { rf_gemm_f32_avx512(j->w, j->x, j->ntok, j->y, r0, r1); return; }
#endif
    for (int t = 0; t < j->ntok; t++) memset(j->y + (uint64_t)t * j->w->rows + r0, 0, (r1 - r0) * sizeof(float));
#if RF_X86
    if (j->fast) { rows_avx2(j->w, j->x, j->ntok, j->y, r0, r1, j->lj); return; }
#endif
    rows_scalar(j->w, j->x, j->ntok, j->y, r0, r1);
}

enum { XP_STACK = 8192 };
/* Products smaller than this (weights x tokens) run on the calling thread: waking the pool and
 * waiting for it costs ~10 us on a busy 2-core machine, more than splitting a 256K-weight
 * decode product saves (measured on the Qwen3 test models: 730 -> 450-560 us per q4 token). */
enum { POOL_MIN = 262144 };

static void matmul(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool);

void rf_matmul(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool)
{
    if (!rf_prof_on) { matmul(w, x, ntok, y, pool); return; }
    uint64_t t0 = rf_prof_now();
    matmul(w, x, ntok, y, pool);
    rf_prof_add(RF_PROF_MATMUL, t0);
}

static void matmul(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool)
{
    if (ntok <= 0) return;
    if (w->gtype) { rf_ggml_matmul(w, x, ntok, y, pool); return; } /* GGUF hook */
    unsigned f = rf_cpu_features();
    mm_job j = {.w = w, .x = x, .y = y, .ntok = ntok, .fast = (f & RF_CPU_AVX2) && (f & RF_CPU_FMA) && (f & RF_CPU_F16C),
                .rows_per_task = ntok == 1 ? 64 : TILE_ROWS};
    unsigned need512 = RF_CPU_AVX512 | RF_CPU_AVX512VBMI;
    if (j.fast && ntok >= 2 && (f & need512) == need512) {
        j.avx512 = 1;
        j.rows_per_task = 32;
    }
    uint64_t ntasks = (w->rows + j.rows_per_task - 1) / j.rows_per_task;
    if (w->rows * w->cols * (uint64_t)ntok < POOL_MIN) pool = NULL;
#if RF_X86
    /* Packed decode: x in lane order once for all rows (heap beyond a stack buffer; without
     * memory, the per-row unpacking path). */
    float xp_stack[XP_STACK], xsum[MAX_XGROUPS], *xp_heap = NULL;
    lanes_job lj;
    j.lj = NULL;
    if (j.fast && ntok == 1 && w->dtype == RF_DT_U32 && row_groups(w) <= MAX_XGROUPS) {
        float *xp = w->cols <= XP_STACK ? xp_stack : (xp_heap = malloc(w->cols * sizeof(float)));
        if (xp) {
            lanes_prepare(w, x, xp, xsum, &lj);
            j.lj = &lj;
        }
    }
    rf_pool_run(pool, ntasks, mm_task, &j);
    free(xp_heap);
#else
    rf_pool_run(pool, ntasks, mm_task, &j);
#endif
}

void rf_matmul_ref(const rf_wmat *w, const float *x, int ntok, float *y)
{
    if (w->gtype) { rf_ggml_matmul_ref(w, x, ntok, y); return; } /* GGUF hook */
    float buf[TILE_COLS];
    for (uint64_t r = 0; r < w->rows; r++)
        for (int t = 0; t < ntok; t++) {
            double s = 0;
            const float *xt = x + (uint64_t)t * w->cols;
            for (uint64_t c0 = 0; c0 < w->cols; c0 += TILE_COLS) {
                uint64_t n = w->cols - c0 < TILE_COLS ? w->cols - c0 : TILE_COLS;
                deq_ref(w, r, c0, n, buf);
                for (uint64_t k = 0; k < n; k++) s += (double)buf[k] * xt[c0 + k];
            }
            y[(uint64_t)t * w->rows + r] = (float)s;
        }
}
