/* dtype table and float conversions. The scalar functions are the reference; the bulk
 * functions use F16C/AVX2 when present and must give identical bits. */
#include "common/internal.h"

#include <math.h>
#include <string.h>
#if RF_X86
#include <immintrin.h>
#endif

static const struct { const char *name; uint64_t size; } dtypes[RF_DT_COUNT] = {
    [RF_DT_INVALID] = {"INVALID", 0},
    [RF_DT_F64] = {"F64", 8},       [RF_DT_F32] = {"F32", 4},   [RF_DT_F16] = {"F16", 2},
    [RF_DT_BF16] = {"BF16", 2},     [RF_DT_F8_E4M3] = {"F8_E4M3", 1},
    [RF_DT_F8_E5M2] = {"F8_E5M2", 1},
    [RF_DT_I64] = {"I64", 8},       [RF_DT_I32] = {"I32", 4},   [RF_DT_I16] = {"I16", 2},
    [RF_DT_I8] = {"I8", 1},         [RF_DT_U64] = {"U64", 8},   [RF_DT_U32] = {"U32", 4},
    [RF_DT_U16] = {"U16", 2},       [RF_DT_U8] = {"U8", 1},     [RF_DT_BOOL] = {"BOOL", 1},
};

uint64_t rf_dtype_size(rf_dtype dt) { return (unsigned)dt < RF_DT_COUNT ? dtypes[dt].size : 0; }

const char *rf_dtype_name(rf_dtype dt) { return (unsigned)dt < RF_DT_COUNT ? dtypes[dt].name : "INVALID"; }

rf_dtype rf_dtype_from_name(const char *name)
{
    if (!name) return RF_DT_INVALID;
    for (int i = 1; i < RF_DT_COUNT; i++)
        if (strcmp(name, dtypes[i].name) == 0) return (rf_dtype)i;
    return RF_DT_INVALID;
}

int rf_dtype_is_float(rf_dtype dt)
{
    return dt == RF_DT_F32 || dt == RF_DT_F16 || dt == RF_DT_BF16 || dt == RF_DT_F64;
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float rf_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t rf_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float rf_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return u2f(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    if (exp == 0) {
        if (man == 0) return u2f(sign);
        /* subnormal: value = man * 2^-24, exact in float32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t rf_f32_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* quiet NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: Inf */
    if (a < 0x38800000u) {
        /* result is subnormal or zero: round a * 2^24 to an integer, ties to even */
        float v = u2f(a) * 0x1p24f;         /* exact: a < 2^-14 so v < 2^10, scaling is exact */
        float r = nearbyintf(v);             /* default rounding mode: ties to even */
        return (uint16_t)(sign | (uint16_t)r);
    }
    /* normal: drop 13 mantissa bits with round to nearest even */
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return (uint16_t)(sign | (uint16_t)((r - 0x38000000u) >> 13));
}

/* ---- bulk paths ---- */

static void bf16_to_f32_ref(const uint16_t *in, float *out, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) out[i] = rf_bf16_to_f32(in[i]);
}
static void f16_to_f32_ref(const uint16_t *in, float *out, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) out[i] = rf_f16_to_f32(in[i]);
}
static void f32_to_bf16_ref(const float *in, uint16_t *out, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) out[i] = rf_f32_to_bf16(in[i]);
}
static void f32_to_f16_ref(const float *in, uint16_t *out, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) out[i] = rf_f32_to_f16(in[i]);
}

#if RF_X86
RF_TARGET_AVX2 static void bf16_to_f32_avx2(const uint16_t *in, float *out, uint64_t n)
{
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(in + i)));
        _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    bf16_to_f32_ref(in + i, out + i, n - i);
}
RF_TARGET_AVX2 static void f16_to_f32_avx2(const uint16_t *in, float *out, uint64_t n)
{
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    f16_to_f32_ref(in + i, out + i, n - i);
}
RF_TARGET_AVX2 static void f32_to_bf16_avx2(const float *in, uint16_t *out, uint64_t n)
{
    uint64_t i = 0;
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i qbit = _mm256_set1_epi32(0x00400000);
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(in + i));
        __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        r = _mm256_blendv_epi8(r, _mm256_or_si256(u, qbit), isnan);
        r = _mm256_srli_epi32(r, 16);
        __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
        _mm_storeu_si128((__m128i *)(out + i), _mm_packus_epi32(lo, hi));
    }
    f32_to_bf16_ref(in + i, out + i, n - i);
}
RF_TARGET_AVX2 static void f32_to_f16_avx2(const float *in, uint16_t *out, uint64_t n)
{
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(in + i);
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    /* F16C keeps NaN payload bits; the scalar path also sets the quiet bit. Re-do NaNs scalar. */
    for (uint64_t j = 0; j < i; j++)
        if (in[j] != in[j]) out[j] = rf_f32_to_f16(in[j]);
    f32_to_f16_ref(in + i, out + i, n - i);
}
#endif

rf_status rf_convert_to_f32(rf_dtype src, const void *in, float *out, uint64_t n, rf_err *err)
{
#if RF_X86
    unsigned f = rf_cpu_features();
    int fast = (f & RF_CPU_AVX2) && (f & RF_CPU_F16C);
#endif
    switch (src) {
    case RF_DT_F32: memmove(out, in, n * 4); return RF_OK;
    case RF_DT_F64:
        for (uint64_t i = 0; i < n; i++) out[i] = (float)((const double *)in)[i];
        return RF_OK;
    case RF_DT_BF16:
#if RF_X86
        if (fast) { bf16_to_f32_avx2(in, out, n); return RF_OK; }
#endif
        bf16_to_f32_ref(in, out, n);
        return RF_OK;
    case RF_DT_F16:
#if RF_X86
        if (fast) { f16_to_f32_avx2(in, out, n); return RF_OK; }
#endif
        f16_to_f32_ref(in, out, n);
        return RF_OK;
    default:
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "cannot convert %s to F32", rf_dtype_name(src));
    }
}

rf_status rf_convert_from_f32(rf_dtype dst, const float *in, void *out, uint64_t n, rf_err *err)
{
#if RF_X86
    unsigned f = rf_cpu_features();
    int fast = (f & RF_CPU_AVX2) && (f & RF_CPU_F16C);
#endif
    switch (dst) {
    case RF_DT_F32: memmove(out, in, n * 4); return RF_OK;
    case RF_DT_F64:
        for (uint64_t i = 0; i < n; i++) ((double *)out)[i] = in[i];
        return RF_OK;
    case RF_DT_BF16:
#if RF_X86
        if (fast) { f32_to_bf16_avx2(in, out, n); return RF_OK; }
#endif
        f32_to_bf16_ref(in, out, n);
        return RF_OK;
    case RF_DT_F16:
#if RF_X86
        if (fast) { f32_to_f16_avx2(in, out, n); return RF_OK; }
#endif
        f32_to_f16_ref(in, out, n);
        return RF_OK;
    default:
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "cannot convert F32 to %s", rf_dtype_name(dst));
    }
}
