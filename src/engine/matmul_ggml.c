/* The engine's products on ggml block-quantized weights (GGUF files): the rf_wmat functions of
 * matmul.c for views with gtype set. A task takes a run of rows, decodes each row to float32 with
 * the kquant decoders (AVX2 where there is one, same bits as the reference) and dots it with every
 * token's activations; a batch decodes a 16-row tile once for all its tokens. Every output element
 * is computed by one task in a fixed order, so results do not depend on the thread count.
 * llama.cpp instead quantizes the activations to 8 bits and dots integers; the float product here
 * is the more exact of the two (PPL agrees within 0.1%, tests/llamacpp/run.sh). */
#include "engine/engine_internal.h"
#include "quant/kquant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if RF_X86
#include <immintrin.h>
#endif

enum { G_TILE = 16, G_DECODE_RUN = 64 };

static uint64_t row_bytes(const rf_wmat *w) { return rf_gtype_row_bytes(w->gtype, w->cols); }

rf_status rf_ggml_wmat_check(const rf_wmat *w, const char *name, rf_err *err)
{
    if (!name) name = "?";
    if (w->rows == 0 || w->cols == 0 || !w->data) return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: empty weight matrix", name);
    if (!rf_gtype_is_quantized(w->gtype) || !rf_gtype_supported(w->gtype))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tensor %s: the engine cannot compute with GGUF type %s", name,
                          rf_gtype_name(w->gtype) ? rf_gtype_name(w->gtype) : "(unknown)");
    if (!row_bytes(w))
        return rf_err_set(err, RF_ERR_FORMAT, "tensor %s: rows of %llu are not whole %s blocks", name,
                          (unsigned long long)w->cols, rf_gtype_name(w->gtype));
    return RF_OK;
}

rf_wmat rf_ggml_wmat_rows(const rf_wmat *w, uint64_t r0, uint64_t n)
{
    rf_wmat s = *w;
    s.rows = n;
    s.data = (const uint8_t *)w->data + r0 * row_bytes(w);
    return s;
}

uint64_t rf_ggml_wmat_bytes(const rf_wmat *w) { return w->rows * row_bytes(w); }

void rf_ggml_row(const rf_wmat *w, uint64_t r, float *out)
{
    rfk_decoder(w->gtype)((const uint8_t *)w->data + r * row_bytes(w), out, w->cols);
}

void rf_ggml_row_ref(const rf_wmat *w, uint64_t r, float *out)
{
    rfk_decoder_ref(w->gtype)((const uint8_t *)w->data + r * row_bytes(w), out, w->cols);
}

/* ------------------------------------------------------------------ dot products */

static float dot_scalar(const float *a, const float *b, uint64_t n)
{
    float s = 0;
    for (uint64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

#if RF_X86
RF_TARGET_AVX2 static float dot_avx2(const float *a, const float *b, uint64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    uint64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}
#endif

typedef float (*dot_fn)(const float *, const float *, uint64_t);

typedef struct gm_job {
    const rf_wmat *w;
    const float *x;
    float *y;
    int ntok;
    uint64_t per_task;
    rfk_decode_fn dec;
    dot_fn dot;
} gm_job;

static void gm_task(void *ctx, uint64_t task, int worker)
{
    (void)worker;
    const gm_job *j = ctx;
    const rf_wmat *w = j->w;
    uint64_t r0 = task * j->per_task, r1 = r0 + j->per_task < w->rows ? r0 + j->per_task : w->rows;
    uint64_t rb = row_bytes(w), tile = j->ntok == 1 ? 1 : G_TILE;
    float *buf = malloc(sizeof(float) * w->cols * tile);
    if (!buf) { /* out of memory: decode one row at a time on the stack is impossible for wide rows */
        for (uint64_t r = r0; r < r1; r++)
            for (int t = 0; t < j->ntok; t++) j->y[(uint64_t)t * w->rows + r] = NAN; /* caught as non-finite logits */
        return;
    }
    for (uint64_t a = r0; a < r1; a += tile) {
        uint64_t n = r1 - a < tile ? r1 - a : tile;
        for (uint64_t k = 0; k < n; k++) j->dec((const uint8_t *)w->data + (a + k) * rb, buf + k * w->cols, w->cols);
        for (int t = 0; t < j->ntok; t++) {
            const float *xt = j->x + (uint64_t)t * w->cols;
            for (uint64_t k = 0; k < n; k++) j->y[(uint64_t)t * w->rows + a + k] = j->dot(buf + k * w->cols, xt, w->cols);
        }
    }
    free(buf);
}

void rf_ggml_matmul(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool)
{
    if (ntok <= 0) return;
    gm_job j = {.w = w, .x = x, .y = y, .ntok = ntok, .per_task = ntok == 1 ? G_DECODE_RUN : G_TILE,
                .dec = rfk_decoder(w->gtype), .dot = dot_scalar};
#if RF_X86
    unsigned f = rf_cpu_features();
    if ((f & RF_CPU_AVX2) && (f & RF_CPU_FMA)) j.dot = dot_avx2;
#endif
    if (w->rows * w->cols * (uint64_t)ntok < 262144) pool = NULL; /* as rf_matmul: not worth waking the pool */
    rf_pool_run(pool, (w->rows + j.per_task - 1) / j.per_task, gm_task, &j);
}

void rf_ggml_matmul_ref(const rf_wmat *w, const float *x, int ntok, float *y)
{
    float *row = malloc(sizeof(float) * w->cols);
    for (uint64_t r = 0; r < w->rows; r++) {
        if (row) rf_ggml_row_ref(w, r, row);
        for (int t = 0; t < ntok; t++) {
            double s = 0;
            const float *xt = x + (uint64_t)t * w->cols;
            for (uint64_t k = 0; row && k < w->cols; k++) s += (double)row[k] * xt[k];
            y[(uint64_t)t * w->rows + r] = row ? (float)s : NAN;
        }
    }
    free(row);
}
