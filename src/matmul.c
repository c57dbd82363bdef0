/* The engine's matrix products, computed directly on the weights where they lie (mmapped):
 * F32/F16/BF16 rows or MLX affine-packed rows (2..8 bits, per-group scale and bias).
 *
 * Decode (one token): each row is unpacked and dequantized in registers and dotted with x.
 * Batches (prompt, perplexity windows): a 16-row x 256-column tile of W is dequantized into an
 * L1-resident buffer once and dotted with every token's activations by a 4x3 register-blocked
 * kernel, so the dequantization cost is shared by all tokens and W is read once per batch.
 * Every output element is computed by one task in a fixed order: results do not depend on the
 * number of threads. */
#include "engine_internal.h"

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

void rf_wmat_row_ref(const rf_wmat *w, uint64_t r, float *out) { deq_ref(w, r, 0, w->cols, out); }

/* ------------------------------------------------------------------ AVX2 + FMA + F16C paths */
#if RF_X86
/* pshufb/shift controls that put element j of an 8-element chunk (8*bits bits, byte aligned)
 * into 32-bit lane j: lane j takes the 4 bytes from byte (j*bits)/8 and shifts by (j*bits)%8. */
typedef struct { __m256i shuf, shift, wshift, mask; } unpack_ctl;

RF_TARGET_AVX2 static unpack_ctl make_unpack_ctl(int bits)
{
    int8_t idx[32];
    int32_t sh[8], wsh[8];
    for (int j = 0; j < 8; j++) {
        for (int q = 0; q < 4; q++) idx[4 * j + q] = (int8_t)(((j * bits) >> 3) + q);
        sh[j] = (j * bits) & 7;
        wsh[j] = j * bits < 32 ? j * bits : 0; /* element j of a 32-bit word (bits 2 and 4) */
    }
    unpack_ctl c;
    c.shuf = _mm256_loadu_si256((const __m256i *)idx);
    c.shift = _mm256_loadu_si256((const __m256i *)sh);
    c.wshift = _mm256_loadu_si256((const __m256i *)wsh);
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

/* 8 codes of a power-of-two width read with one scalar load (no over-read); other widths
 * through the generic shuffle. bits is a constant after inlining. */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 unpack8_bits(const uint8_t *p, const uint8_t *end,
                                                                               int bits, const unpack_ctl *c)
{
    if (bits == 8) return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
    if (bits == 4 || bits == 2) {
        uint32_t v = 0;
        memcpy(&v, p, (size_t)bits);
        __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)v), c->wshift), c->mask);
        return _mm256_cvtepi32_ps(q);
    }
    return unpack8(p, end, c);
}

/* Packed row times x as sum_g s_g * (q_g . x_g) + b_g * sum(x_g): the codes are converted in
 * registers and the bias needs only the group sums of x, shared by every row. */
RF_TARGET_AVX2 static inline __attribute__((always_inline)) float dot_row_q(const rf_wmat *w, uint64_t r,
                                                                           const float *x, const float *xsum,
                                                                           int bits, const unpack_ctl *ctl)
{
    const uint8_t *row = (const uint8_t *)w->data + r * row_bytes_packed(w), *end = packed_end(w);
    uint64_t gs = (uint64_t)w->gs, g0 = r * row_groups(w), ng = row_groups(w);
    __m256 acc = _mm256_setzero_ps();
    float bsum = 0;
    for (uint64_t g = 0; g < ng; g++) {
        const uint8_t *pg = row + g * gs * (uint64_t)bits / 8;
        const float *xg = x + g * gs;
        __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
        for (uint64_t j = 0; j < gs; j += 16) {
            d0 = _mm256_fmadd_ps(unpack8_bits(pg + j * (uint64_t)bits / 8, end, bits, ctl), _mm256_loadu_ps(xg + j), d0);
            d1 = _mm256_fmadd_ps(unpack8_bits(pg + (j + 8) * (uint64_t)bits / 8, end, bits, ctl),
                                 _mm256_loadu_ps(xg + j + 8), d1);
        }
        acc = _mm256_fmadd_ps(_mm256_add_ps(d0, d1), _mm256_set1_ps(load_scalar(w->sdtype, w->scales, g0 + g)), acc);
        bsum += load_scalar(w->sdtype, w->biases, g0 + g) * xsum[g];
    }
    return hsum8(acc) + bsum;
}

enum { MAX_XGROUPS = 4096 };

RF_TARGET_AVX2 static void matvec_q_avx2(const rf_wmat *w, const float *x, float *y, uint64_t r0, uint64_t r1,
                                         const unpack_ctl *ctl)
{
    float xsum[MAX_XGROUPS];
    uint64_t gs = (uint64_t)w->gs, ng = row_groups(w);
    for (uint64_t g = 0; g < ng; g++) {
        __m256 a = _mm256_setzero_ps();
        for (uint64_t j = 0; j < gs; j += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(x + g * gs + j));
        xsum[g] = hsum8(a);
    }
    for (uint64_t r = r0; r < r1; r++) {
        switch (w->bits) {
        case 2: y[r] = dot_row_q(w, r, x, xsum, 2, ctl); break;
        case 4: y[r] = dot_row_q(w, r, x, xsum, 4, ctl); break;
        case 8: y[r] = dot_row_q(w, r, x, xsum, 8, ctl); break;
        default: y[r] = dot_row_q(w, r, x, xsum, w->bits, ctl); break;
        }
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
                                     uint64_t r1)
{
    unpack_ctl ctl = make_unpack_ctl(w->dtype == RF_DT_U32 ? w->bits : 8);
    uint64_t ldy = w->rows, cols = w->cols;
    if (ntok == 1) {
        if (w->dtype == RF_DT_U32 && row_groups(w) <= MAX_XGROUPS) matvec_q_avx2(w, x, y, r0, r1, &ctl);
        else
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
    int ntok, fast;
    uint64_t rows_per_task;  /* tiles for batches; longer runs for decode (shared x group sums) */
} mm_job;

static void mm_task(void *ctx, uint64_t task, int worker)
{
    (void)worker;
    const mm_job *j = ctx;
    uint64_t r0 = task * j->rows_per_task, r1 = r0 + j->rows_per_task < j->w->rows ? r0 + j->rows_per_task : j->w->rows;
    for (int t = 0; t < j->ntok; t++) memset(j->y + (uint64_t)t * j->w->rows + r0, 0, (r1 - r0) * sizeof(float));
#if RF_X86
    if (j->fast) { rows_avx2(j->w, j->x, j->ntok, j->y, r0, r1); return; }
#endif
    rows_scalar(j->w, j->x, j->ntok, j->y, r0, r1);
}

void rf_matmul(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool)
{
    if (ntok <= 0) return;
    unsigned f = rf_cpu_features();
    mm_job j = {w, x, y, ntok, (f & RF_CPU_AVX2) && (f & RF_CPU_FMA) && (f & RF_CPU_F16C), ntok == 1 ? 64 : TILE_ROWS};
    uint64_t ntasks = (w->rows + j.rows_per_task - 1) / j.rows_per_task;
    /* Tiny products are not worth waking the workers for. */
    if (w->rows * w->cols * (uint64_t)ntok < 32768) pool = NULL;
    rf_pool_run(pool, ntasks, mm_task, &j);
}

void rf_matmul_ref(const rf_wmat *w, const float *x, int ntok, float *y)
{
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
