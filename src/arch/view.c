/* Reading the member matrices of units: plain rows straight from the mapped file, slices and
 * transposes of fused banks (llama4's experts, DeepSeek's kv_b_proj), FP8 weights dequantized
 * with their block scales. The analysis, the writers and the engine all read through here, so a
 * member means the same numbers everywhere. */
#include "arch/model_internal.h"

#include <stdlib.h>
#include <string.h>

rf_dtype rf_view_dtype(const rf_mview *v)
{
    return v->t->dtype == RF_DT_F8_E4M3 ? RF_DT_F32 : v->t->dtype;
}

const void *rf_view_direct(const rf_mview *v, uint64_t r0)
{
    if (v->transposed || v->c0 || v->cols != v->scols || !rf_dtype_is_float(v->t->dtype)) return NULL;
    return (const uint8_t *)v->t->data + (v->r0 + r0) * v->scols * rf_dtype_size(v->t->dtype);
}

/* float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, S.1111.111 is NaN. */
static float fp8_e4m3(uint8_t b)
{
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 15 && m == 7) return __builtin_nanf("");
    if (e == 0) v = (float)m * (1.0f / 512.0f); /* subnormal: m/8 * 2^-6 */
    else v = (1.0f + (float)m / 8.0f) * (float)(e >= 7 ? (double)(1u << (e - 7)) : 1.0 / (double)(1u << (7 - e)));
    return s ? -v : v;
}

static float fp8_table[256];
static int fp8_ready;

static void fp8_init(void)
{
    if (__atomic_load_n(&fp8_ready, __ATOMIC_ACQUIRE)) return;
    for (int i = 0; i < 256; i++) fp8_table[i] = fp8_e4m3((uint8_t)i);
    __atomic_store_n(&fp8_ready, 1, __ATOMIC_RELEASE);
}

static inline float src_at(const rf_mview *v, uint64_t R, uint64_t C)
{
    const rf_tensor *t = v->t;
    uint64_t i = R * v->scols + C;
    switch (t->dtype) {
    case RF_DT_F32: return ((const float *)t->data)[i];
    case RF_DT_F16: return rf_f16_to_f32(((const uint16_t *)t->data)[i]);
    case RF_DT_BF16: return rf_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case RF_DT_F8_E4M3: {
        uint64_t sc = (v->scols + v->bc - 1) / v->bc;
        return fp8_table[((const uint8_t *)t->data)[i]] * ((const float *)v->scale->data)[(R / v->br) * sc + C / v->bc];
    }
    default: return 0;
    }
}

rf_status rf_view_read(const rf_mview *v, uint64_t r0, uint64_t n, rf_dtype dt, void *out, rf_err *err)
{
    if (dt != RF_DT_F32 && dt != RF_DT_F16 && dt != RF_DT_BF16)
        return rf_err_set(err, RF_ERR_INTERNAL, "view read into %s", rf_dtype_name(dt));
    if (r0 > v->rows || n > v->rows - r0)
        return rf_err_set(err, RF_ERR_INTERNAL, "view rows %llu+%llu of %llu", (unsigned long long)r0,
                          (unsigned long long)n, (unsigned long long)v->rows);
    const rf_dtype sdt = v->t->dtype;
    const uint64_t cols = v->cols, es = rf_dtype_size(dt);
    const void *direct = rf_view_direct(v, r0);
    if (direct && sdt == dt) {
        memcpy(out, direct, n * cols * es);
        return RF_OK;
    }
    if (direct && sdt != RF_DT_F8_E4M3) {
        if (sdt == RF_DT_F32) return rf_convert_from_f32(dt, direct, out, n * cols, err);
        if (dt == RF_DT_F32) return rf_convert_to_f32(sdt, direct, out, n * cols, err);
    }
    if (sdt == RF_DT_F8_E4M3) {
        if (!v->scale) return rf_err_set(err, RF_ERR_FORMAT, "%s: FP8 weight without its weight_scale_inv", v->t->name);
        fp8_init();
    } else if (sdt != RF_DT_F32 && sdt != RF_DT_F16 && sdt != RF_DT_BF16) {
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: dtype %s cannot be read as a float matrix", v->t->name,
                          rf_dtype_name(sdt));
    }
    /* Element by element through float32; same-dtype 16-bit copies stay exact (bf16 -> f32 -> bf16). */
    if (!v->transposed) {
        float row[1024];
        for (uint64_t r = 0; r < n; r++)
            for (uint64_t c = 0; c < cols; c += 1024) {
                uint64_t k = cols - c < 1024 ? cols - c : 1024;
                for (uint64_t j = 0; j < k; j++) row[j] = src_at(v, v->r0 + r0 + r, v->c0 + c + j);
                rf_status s = rf_convert_from_f32(dt, row, (uint8_t *)out + (r * cols + c) * es, k, err);
                if (s) return s;
            }
        return RF_OK;
    }
    /* Transposed: a member row is a source column. Tiles of TR rows walk each source row once,
     * reading TR neighbouring elements of it. */
    enum { TR = 16 };
    if (sdt == dt && es == 2) { /* BF16/F16 read as themselves: a plain 16-bit transpose */
        const uint16_t *src = v->t->data;
        uint16_t *o = out;
        for (uint64_t r = 0; r < n; r += TR) {
            uint64_t k = n - r < TR ? n - r : TR;
            for (uint64_t c = 0; c < cols; c++) {
                const uint16_t *sr = src + (v->r0 + c) * v->scols + v->c0 + r0 + r;
                for (uint64_t j = 0; j < k; j++) o[(r + j) * cols + c] = sr[j];
            }
        }
        return RF_OK;
    }
    float *tile = malloc(TR * cols * sizeof *tile);
    if (!tile) return rf_err_set(err, RF_ERR_NOMEM, "out of memory reading %s", v->t->name);
    rf_status s = RF_OK;
    for (uint64_t r = 0; r < n && !s; r += TR) {
        uint64_t k = n - r < TR ? n - r : TR;
        for (uint64_t c = 0; c < cols; c++)
            for (uint64_t j = 0; j < k; j++) tile[j * cols + c] = src_at(v, v->r0 + c, v->c0 + r0 + r + j);
        s = rf_convert_from_f32(dt, tile, (uint8_t *)out + r * cols * es, k * cols, err);
    }
    free(tile);
    return s;
}
