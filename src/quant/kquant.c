/* ggml's block types: the type table, and scalar encoders/decoders that give the same bytes as
 * ggml's reference encoders (ggml-quants.c, the path llama-quantize takes without an importance
 * matrix). Bit equality is the point of this file, so every formula keeps ggml's operation order
 * and types: float arithmetic left to right, int -> float conversions where ggml has them,
 * ggml's round-half-even trick (rfk_nearest_int) and roundf/truncation where ggml uses those.
 * Built with -ffp-contract=off: ggml's own build has no FMA contraction on x86-64.
 * Tested against vectors made with ggml's code and against llama-quantize's output. */
#include "quant/kquant.h"

#include <float.h>
#include <math.h>

#define GROUP_EPS 1e-15f /* ggml's GROUP_MAX_EPS: a group below it is all zero */

/* ------------------------------------------------------------------ type table */

typedef struct gtype_info {
    const char *name;
    uint32_t block, bytes;
} gtype_info;

static const gtype_info gtypes[RF_GT_COUNT] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},          [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},       [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},       [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},    [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},    [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98},  [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},   [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},          [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},         [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},        [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},     [40] = {"NVFP4", 64, 36},
    [41] = {"Q1_0", 128, 18},    [42] = {"Q2_0", 64, 18},
};

static const gtype_info *info(int t) { return t >= 0 && t < RF_GT_COUNT && gtypes[t].name ? &gtypes[t] : NULL; }

const char *rf_gtype_name(int type) { return info(type) ? info(type)->name : NULL; }
uint64_t rf_gtype_block(int type) { return info(type) ? info(type)->block : 0; }
uint64_t rf_gtype_block_bytes(int type) { return info(type) ? info(type)->bytes : 0; }

int rf_gtype_parse(const char *name)
{
    if (!name) return -1;
    for (int t = 0; t < RF_GT_COUNT; t++) {
        const char *a = gtypes[t].name, *b = name;
        if (!a) continue;
        while (*a && *b && (*a == *b || (*a >= 'A' && *a <= 'Z' && *a + 32 == *b))) a++, b++;
        if (!*a && !*b) return t;
    }
    return -1;
}

int rf_gtype_supported(int type)
{
    switch (type) {
    case RF_GT_F32: case RF_GT_F16: case RF_GT_BF16: case RF_GT_Q4_0: case RF_GT_Q4_1: case RF_GT_Q5_0:
    case RF_GT_Q5_1: case RF_GT_Q8_0: case RF_GT_Q2_K: case RF_GT_Q3_K: case RF_GT_Q4_K: case RF_GT_Q5_K:
    case RF_GT_Q6_K: case RF_GT_IQ4_NL: case RF_GT_IQ4_XS:
        return 1;
    default:
        return 0;
    }
}

int rf_gtype_is_quantized(int type)
{
    const gtype_info *i = info(type);
    return i && i->block > 1;
}

uint64_t rf_gtype_row_bytes(int type, uint64_t ncols)
{
    const gtype_info *i = info(type);
    if (!i || ncols % i->block) return 0;
    return ncols / i->block * i->bytes;
}

static const int gcands[RF_GCAND_N] = {RF_GT_Q2_K, RF_GT_Q3_K, RF_GT_Q4_0, RF_GT_Q4_K, RF_GT_Q5_0,
                                        RF_GT_Q5_1, RF_GT_Q5_K, RF_GT_Q6_K, RF_GT_Q8_0};

int rf_gcand_type(int i) { return i >= 0 && i < RF_GCAND_N ? gcands[i] : -1; }

int rf_gcand_index(int type)
{
    for (int i = 0; i < RF_GCAND_N; i++)
        if (gcands[i] == type) return i;
    return -1;
}

unsigned rf_gcand_mask(uint64_t ncols)
{
    /* what llama-quantize writes when asked for each of these on such rows: one rule (the fallback) */
    static const int asked[] = {RF_GT_Q2_K, RF_GT_Q3_K, RF_GT_Q4_K, RF_GT_Q5_K, RF_GT_Q6_K, RF_GT_Q8_0};
    unsigned m = 0;
    for (size_t i = 0; i < sizeof asked / sizeof asked[0]; i++) {
        int k = rf_gcand_index(rf_gtype_fallback(asked[i], ncols));
        if (k >= 0) m |= 1u << k;
    }
    return m;
}

int rf_gtype_bits(int type)
{
    switch (type) {
    case RF_GT_Q2_K: return 2;
    case RF_GT_Q3_K: return 3;
    case RF_GT_Q4_0: case RF_GT_Q4_1: case RF_GT_Q4_K: case RF_GT_IQ4_NL: case RF_GT_IQ4_XS: return 4;
    case RF_GT_Q5_0: case RF_GT_Q5_1: case RF_GT_Q5_K: return 5;
    case RF_GT_Q6_K: return 6;
    case RF_GT_Q8_0: return 8;
    case RF_GT_F16: case RF_GT_BF16: return 16;
    case RF_GT_F32: return 32;
    default: return 0;
    }
}

int rf_gtype_fallback(int type, uint64_t ncols)
{
    const gtype_info *i = info(type);
    if (!i || ncols % i->block == 0) return type;
    int fb;
    switch (type) {
    case RF_GT_Q2_K: case RF_GT_Q3_K: fb = RF_GT_Q4_0; break;
    case RF_GT_Q4_K: fb = RF_GT_Q5_0; break;
    case RF_GT_Q5_K: fb = RF_GT_Q5_1; break;
    case RF_GT_Q6_K: fb = RF_GT_Q8_0; break;
    case 16: case 17: case 18: case 19: case 21: case 22: case 29: case RF_GT_IQ4_XS: fb = RF_GT_IQ4_NL; break;
    default: fb = type; break; /* a 32-block type: nothing smaller, F16 below */
    }
    return ncols % gtypes[fb].block ? RF_GT_F16 : fb;
}

/* ------------------------------------------------------------------ 32-blocks */

static uint16_t h16(float f) { return rf_f32_to_f16(f); }
static float f16(uint16_t h) { return rf_f16_to_f32(h); }

/* The value of largest magnitude (first one on ties), and that magnitude. */
static float signed_absmax(const float *x, int n, float *amax_out)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    if (amax_out) *amax_out = amax;
    return max;
}

static void min_max(const float *x, int n, float *mn, float *mx)
{
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

static void enc_q4_0(const float *x, void *out, uint64_t n)
{
    rfk_q4_0 *y = out;
    for (uint64_t b = 0; b < n / 32; b++, x += 32) {
        const float d = signed_absmax(x, 32, NULL) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        for (int j = 0; j < 16; j++) {
            int8_t lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + 16] * id + 8.5f);
            uint8_t a = (uint8_t)(lo < 15 ? lo : 15), c = (uint8_t)(hi < 15 ? hi : 15);
            y[b].qs[j] = (uint8_t)(a | c << 4);
        }
    }
}

static void enc_q4_1(const float *x, void *out, uint64_t n)
{
    rfk_q4_1 *y = out;
    for (uint64_t b = 0; b < n / 32; b++, x += 32) {
        float mn, mx;
        min_max(x, 32, &mn, &mx);
        const float d = (mx - mn) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        y[b].m = h16(mn);
        for (int j = 0; j < 16; j++) {
            int8_t lo = (int8_t)((x[j] - mn) * id + 0.5f), hi = (int8_t)((x[j + 16] - mn) * id + 0.5f);
            uint8_t a = (uint8_t)(lo < 15 ? lo : 15), c = (uint8_t)(hi < 15 ? hi : 15);
            y[b].qs[j] = (uint8_t)(a | c << 4);
        }
    }
}

static void enc_q5_0(const float *x, void *out, uint64_t n)
{
    rfk_q5_0 *y = out;
    for (uint64_t b = 0; b < n / 32; b++, x += 32) {
        const float d = signed_absmax(x, 32, NULL) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int8_t lo = (int8_t)(x[j] * id + 16.5f), hi = (int8_t)(x[j + 16] * id + 16.5f);
            uint8_t a = (uint8_t)(lo < 31 ? lo : 31), c = (uint8_t)(hi < 31 ? hi : 31);
            y[b].qs[j] = (uint8_t)((a & 15) | (c & 15) << 4);
            qh |= (uint32_t)(a >> 4) << j | (uint32_t)(c >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

static void enc_q5_1(const float *x, void *out, uint64_t n)
{
    rfk_q5_1 *y = out;
    for (uint64_t b = 0; b < n / 32; b++, x += 32) {
        float mn, mx;
        min_max(x, 32, &mn, &mx);
        const float d = (mx - mn) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        y[b].m = h16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            uint8_t a = (uint8_t)((x[j] - mn) * id + 0.5f), c = (uint8_t)((x[j + 16] - mn) * id + 0.5f);
            y[b].qs[j] = (uint8_t)((a & 15) | (c & 15) << 4);
            qh |= (uint32_t)((a & 16) >> 4) << j | (uint32_t)((c & 16) >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

static void enc_q8_0(const float *x, void *out, uint64_t n)
{
    rfk_q8_0 *y = out;
    for (uint64_t b = 0; b < n / 32; b++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = h16(d);
        for (int j = 0; j < 32; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* ------------------------------------------------------------------ IQ4_NL / IQ4_XS */

const int8_t rfk_iq4_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* Index of the grid value nearest to v (the lower one when exactly between). */
static int iq4_index(float v)
{
    const int8_t *g = rfk_iq4_values;
    if (v <= g[0]) return 0;
    if (v >= g[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < g[mid]) hi = mid;
        else lo = mid;
    }
    return v - g[hi - 1] < g[hi] - v ? hi - 1 : hi;
}

/* One super-block of SB weights in blocks of 32 (SB 32: IQ4_NL, 256: IQ4_XS), weights w = x^2,
 * llama-quantize's 7 scale trials. Writes *d, the nibbles, and for IQ4_XS the 6-bit scales. */
static void iq4_block(int sb, const float *x, uint16_t *dh, uint8_t *q4, uint16_t *sh, uint8_t *sl)
{
    const int ntry = 7, nb = sb / 32;
    const int8_t *g = rfk_iq4_values;
    float scales[RFK_QK / 32];
    uint8_t L[RFK_QK];
    memset(q4, 0, (size_t)sb / 2);
    *dh = h16(0.f);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < nb; ib++) {
        const float *xb = x + 32 * ib;
        uint8_t *Lb = L + 32 * ib;
        float w[32];
        for (int j = 0; j < 32; j++) w[j] = xb[j] * xb[j];
        float amax;
        const float max = signed_absmax(xb, 32, &amax);
        if (amax < GROUP_EPS) {
            scales[ib] = 0;
            continue;
        }
        float d = -max / g[0];
        float id = 1 / d;
        float sqx = 0, sq2 = 0;
        for (int j = 0; j < 32; j++) {
            int l = iq4_index(id * xb[j]);
            Lb[j] = (uint8_t)l;
            float q = g[l];
            sqx += w[j] * q * xb[j];
            sq2 += w[j] * q * q;
        }
        d = sq2 > 0 ? sqx / sq2 : 0.f;
        float best = d * sqx;
        for (int t = -ntry; t <= ntry; t++) {
            id = (t + g[0]) / max;
            sqx = sq2 = 0;
            for (int j = 0; j < 32; j++) {
                float q = g[iq4_index(id * xb[j])];
                sqx += w[j] * q * xb[j];
                sq2 += w[j] * q * q;
            }
            if (sq2 > 0 && sqx * sqx > best * sq2) {
                d = sqx / sq2;
                best = d * sqx;
            }
        }
        scales[ib] = d;
        if (fabsf(d) > amax_scale) {
            amax_scale = fabsf(d);
            max_scale = d;
        }
    }
    if (nb > 1) {
        *sh = 0;
        const float d = -max_scale / 32;
        *dh = h16(d);
        const float id = d ? 1 / d : 0.f;
        for (int ib = 0; ib < nb; ib++) {
            int l = rfk_nearest_int(id * scales[ib]);
            l = l < -32 ? -32 : l > 31 ? 31 : l;
            const float dl = d * l;
            const float idl = dl ? 1 / dl : 0.f;
            for (int j = 0; j < 32; j++) L[32 * ib + j] = (uint8_t)iq4_index(idl * x[32 * ib + j]);
            l += 32;
            if (ib % 2 == 0) sl[ib / 2] = (uint8_t)(l & 0xf);
            else sl[ib / 2] |= (uint8_t)((l & 0xf) << 4);
            *sh |= (uint16_t)((l >> 4) << 2 * (ib % 8));
        }
    } else {
        *dh = h16(scales[0]);
        const float id = scales[0] ? 1 / scales[0] : 0;
        for (int j = 0; j < sb; j++) L[j] = (uint8_t)iq4_index(id * x[j]);
    }
    for (int i = 0; i < sb / 32; i++)
        for (int j = 0; j < 16; j++) q4[16 * i + j] = (uint8_t)(L[32 * i + j] | L[32 * i + 16 + j] << 4);
}

static void enc_iq4_nl(const float *x, void *out, uint64_t n)
{
    rfk_iq4_nl *y = out;
    for (uint64_t b = 0; b < n / 32; b++) iq4_block(32, x + 32 * b, &y[b].d, y[b].qs, NULL, NULL);
}

static void enc_iq4_xs(const float *x, void *out, uint64_t n)
{
    rfk_iq4_xs *y = out;
    for (uint64_t b = 0; b < n / RFK_QK; b++)
        iq4_block(RFK_QK, x + RFK_QK * b, &y[b].d, y[b].qs, &y[b].scales_h, y[b].scales_l);
}

/* ------------------------------------------------------------------ k-quant helpers */

/* Symmetric codes in [-nmax, nmax) for n weights, least squares with weights x^2 over 19 trial
 * scales around nmax/max (ggml's make_qx_quants, rmse_type 1). L gets code + nmax. */
static float qx_quants(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        int l = rfk_nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        slx += w * x[i] * l;
        sl2 += w * l * l;
    }
    float scale = sl2 ? slx / sl2 : 0.0f;
    float best = scale * slx;
    for (int is = -9; is <= 9; is++) {
        if (!is) continue;
        iscale = -(nmax + 0.1f * is) / max;
        slx = sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = rfk_nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            slx += w * x[i] * l;
            sl2 += w * l * l;
        }
        if (sl2 > 0 && slx * slx > best * sl2) {
            for (int i = 0; i < n; i++) {
                int l = rfk_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    return scale;
}

/* Q3_K's symmetric codes: rounding, then up to 5 passes of single-code improvements of the
 * x^2-weighted least squares fit (ggml's make_q3_quants with rmse). */
static float q3_quants(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    const float iscale = -nmax / max;
    float slx = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        int l = rfk_nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        slx += w * x[i] * l;
        sl2 += w * l * l;
    }
    for (int pass = 0; pass < 5; pass++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float a = slx - w * x[i] * L[i];
            if (a <= 0) continue;
            float b = sl2 - w * L[i] * L[i];
            int l = rfk_nearest_int(x[i] * b / a);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            if (l == L[i]) continue;
            a += w * x[i] * l;
            b += w * l * l;
            if (b > 0 && a * a * sl2 > slx * slx * b) {
                L[i] = (int8_t)l;
                slx = a;
                sl2 = b;
                changed++;
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return sl2 > 0.0f ? slx / sl2 : 0.0f;
}

/* Asymmetric codes in [0, nmax] with scale and min (x ~ scale * L - min, min <= 0 clipped):
 * weighted fit over nstep + 1 trial scales (ggml's make_qkx2_quants). Returns the scale and
 * the (positive) min in *the_min. */
static float qkx2_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, float rmin,
                         float rdelta, int nstep, int use_mad)
{
    uint8_t Laux[32];
    float min = x[0], max = x[0];
    float sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        int l = rfk_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = rfk_nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            sl += w[i] * l;
            sl2 += w[i] * l * l;
            sxl += w[i] * l * x[i];
        }
        float D = sum_w * sl2 - sl * sl;
        if (!(D > 0)) continue;
        float s = (sum_w * sxl - sum_x * sl) / D;
        float m = (sl2 * sum_x - sl * sxl) / D;
        if (m > 0) {
            m = 0;
            s = sxl / sl2;
        }
        float cur = 0;
        for (int i = 0; i < n; i++) {
            float diff = s * Laux[i] + m - x[i];
            diff = use_mad ? fabsf(diff) : diff * diff;
            cur += w[i] * diff;
        }
        if (cur < best) {
            memcpy(L, Laux, (size_t)n);
            best = cur;
            scale = s;
            min = m;
        }
    }
    *the_min = -min;
    return scale;
}

/* Four 2-bit codes per byte: byte l of each 32-byte quarter holds elements l, l+32, l+64, l+96
 * of a 128-element half. */
static void pack2(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < RFK_QK; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

/* ------------------------------------------------------------------ Q2_K .. Q6_K */

/* Q2_K after the per-16 search: 4-bit scale and min codes, the codes refit to them, packing. */
void rfk_q2k_finish(const float *x, const float *scales, const float *mins, uint8_t *L, rfk_q2_k *y)
{
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        const float iscale = 15.f / max_scale;
        for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)rfk_nearest_int(iscale * scales[j]);
        y->d = h16(max_scale / 15.f);
    } else {
        memset(y->scales, 0, 16);
        y->d = h16(0.f);
    }
    if (max_min > 0) {
        const float iscale = 15.f / max_min;
        for (int j = 0; j < 16; j++) y->scales[j] |= (uint8_t)(rfk_nearest_int(iscale * mins[j]) << 4);
        y->dmin = h16(max_min / 15.f);
    } else {
        y->dmin = h16(0.f);
    }
    for (int j = 0; j < 16; j++) {
        const float d = f16(y->d) * (y->scales[j] & 0xF);
        if (!d) continue;
        const float dm = f16(y->dmin) * (y->scales[j] >> 4);
        for (int i = 0; i < 16; i++) {
            int l = rfk_nearest_int((x[16 * j + i] + dm) / d);
            L[16 * j + i] = (uint8_t)(l < 0 ? 0 : l > 3 ? 3 : l);
        }
    }
    pack2(L, y->qs);
}

static void enc_q2_k(const float *x, void *out, uint64_t n)
{
    rfk_q2_k *y = out;
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        uint8_t L[RFK_QK];
        float mins[16], scales[16], w[16];
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * j + l]);
            scales[j] = qkx2_quants(16, 3, x + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, 1);
        }
        rfk_q2k_finish(x, scales, mins, L, &y[b]);
    }
}

static void enc_q3_k(const float *x, void *out, uint64_t n)
{
    rfk_q3_k *y = out;
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        int8_t L[RFK_QK];
        float scales[16];
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = q3_quants(16, 4, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > amax) {
                amax = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        memset(y[b].scales, 0, 12);
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                int8_t l = (int8_t)rfk_nearest_int(iscale * scales[j]);
                l = (int8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
                if (j < 8) y[b].scales[j] = (uint8_t)(l & 0xF);
                else y[b].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                l = (int8_t)(l >> 4);
                y[b].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
            }
            y[b].d = h16(1 / iscale);
        } else {
            y[b].d = h16(0.f);
        }
        for (int j = 0; j < 16; j++) {
            int sc = j < 8 ? y[b].scales[j] & 0xF : y[b].scales[j - 8] >> 4;
            sc = (sc | ((y[b].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
            const float d = f16(y[b].d) * (int8_t)sc;
            if (!d) continue;
            for (int i = 0; i < 16; i++) {
                int l = rfk_nearest_int(x[16 * j + i] / d);
                L[16 * j + i] = (int8_t)((l < -4 ? -4 : l > 3 ? 3 : l) + 4);
            }
        }
        memset(y[b].hmask, 0, 32);
        for (int j = 0; j < RFK_QK; j++)
            if (L[j] > 3) {
                y[b].hmask[j % 32] |= (uint8_t)(1u << (j / 32));
                L[j] = (int8_t)(L[j] - 4);
            }
        pack2((const uint8_t *)L, y[b].qs);
    }
}

/* Q4_K/Q5_K: 8 blocks of 32 with a 6-bit scale and min each, packed into 12 bytes. */
static void pack_scales_k4(const float *scales, const float *mins, float max_scale, float max_min, uint8_t *sc)
{
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)rfk_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)rfk_nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
}

/* Q4_K/Q5_K after the per-32 search: 6-bit scale and min codes, the codes refit to them. */
void rfk_k4_finish(const float *x, int nmax, const float *scales, const float *mins, uint8_t *L, uint16_t *d,
                   uint16_t *dmin, uint8_t *sc)
{
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    pack_scales_k4(scales, mins, max_scale, max_min, sc);
    *d = h16(max_scale / 63.f);
    *dmin = h16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        rfk_scale_min_k4(j, sc, &s, &m);
        const float dd = f16(*d) * s;
        if (!dd) continue;
        const float dm = f16(*dmin) * m;
        for (int i = 0; i < 32; i++) {
            int l = rfk_nearest_int((x[32 * j + i] + dm) / dd);
            L[32 * j + i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
}

/* Weights of a block of 32 for Q4_K/Q5_K: sqrt(mean x^2) + |x|. */
static void k4_weights(const float *x, float *w)
{
    float s2 = 0;
    for (int l = 0; l < 32; l++) s2 += x[l] * x[l];
    const float av = sqrtf(s2 / 32);
    for (int l = 0; l < 32; l++) w[l] = av + fabsf(x[l]);
}

void rfk_q4k_pack(const uint8_t *L, rfk_q4_k *y)
{
    for (int j = 0; j < RFK_QK; j += 64)
        for (int l = 0; l < 32; l++) y->qs[j / 2 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
}

void rfk_q5k_pack(const uint8_t *L, rfk_q5_k *y)
{
    memset(y->qh, 0, 32);
    for (int j = 0, k = 0; j < RFK_QK; j += 64, k++)
        for (int l = 0; l < 32; l++) {
            int a = L[j + l], c = L[j + l + 32];
            if (a > 15) a -= 16, y->qh[l] |= (uint8_t)(1u << (2 * k));
            if (c > 15) c -= 16, y->qh[l] |= (uint8_t)(2u << (2 * k));
            y->qs[j / 2 + l] = (uint8_t)(a | c << 4);
        }
}

static void enc_q4_k(const float *x, void *out, uint64_t n)
{
    rfk_q4_k *y = out;
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        uint8_t L[RFK_QK];
        float mins[8], scales[8], w[32];
        for (int j = 0; j < 8; j++) {
            k4_weights(x + 32 * j, w);
            scales[j] = qkx2_quants(32, 15, x + 32 * j, w, L + 32 * j, &mins[j], -1.f, 0.1f, 20, 0);
        }
        rfk_k4_finish(x, 15, scales, mins, L, &y[b].d, &y[b].dmin, y[b].scales);
        rfk_q4k_pack(L, &y[b]);
    }
}

static void enc_q5_k(const float *x, void *out, uint64_t n)
{
    rfk_q5_k *y = out;
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        uint8_t L[RFK_QK];
        float mins[8], scales[8], w[32];
        for (int j = 0; j < 8; j++) {
            k4_weights(x + 32 * j, w);
            scales[j] = qkx2_quants(32, 31, x + 32 * j, w, L + 32 * j, &mins[j], -0.5f, 0.1f, 15, 0);
        }
        rfk_k4_finish(x, 31, scales, mins, L, &y[b].d, &y[b].dmin, y[b].scales);
        rfk_q5k_pack(L, &y[b]);
    }
}

/* Q6_K after the per-16 search: 8-bit scales, the codes refit to them, packing. */
void rfk_q6k_finish(const float *x, const float *scales, int8_t *L, rfk_q6_k *y)
{
    float max_scale = 0, max_abs = 0;
    for (int ib = 0; ib < 16; ib++)
        if (fabsf(scales[ib]) > max_abs) {
            max_abs = fabsf(scales[ib]);
            max_scale = scales[ib];
        }
    if (max_abs < GROUP_EPS) {
        memset(y, 0, sizeof *y);
        y->d = h16(0.f);
        return;
    }
    const float iscale = -128.f / max_scale;
    y->d = h16(1 / iscale);
    for (int ib = 0; ib < 16; ib++) {
        int l = rfk_nearest_int(iscale * scales[ib]);
        y->scales[ib] = (int8_t)(l < 127 ? l : 127);
    }
    for (int j = 0; j < 16; j++) {
        const float d = f16(y->d) * y->scales[j];
        if (!d) continue;
        for (int i = 0; i < 16; i++) {
            int l = rfk_nearest_int(x[16 * j + i] / d);
            L[16 * j + i] = (int8_t)((l < -32 ? -32 : l > 31 ? 31 : l) + 32);
        }
    }
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < RFK_QK; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            const uint8_t *q = (const uint8_t *)L + j + l;
            ql[l] = (uint8_t)((q[0] & 0xF) | (q[64] & 0xF) << 4);
            ql[l + 32] = (uint8_t)((q[32] & 0xF) | (q[96] & 0xF) << 4);
            qh[l] = (uint8_t)(q[0] >> 4 | (q[32] >> 4) << 2 | (q[64] >> 4) << 4 | (q[96] >> 4) << 6);
        }
}

static void enc_q6_k(const float *x, void *out, uint64_t n)
{
    rfk_q6_k *y = out;
    for (uint64_t b = 0; b < n / RFK_QK; b++, x += RFK_QK) {
        int8_t L[RFK_QK];
        float scales[16];
        for (int ib = 0; ib < 16; ib++) scales[ib] = qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
        rfk_q6k_finish(x, scales, L, &y[b]);
    }
}

/* ------------------------------------------------------------------ decoders */

static void dec_q4_0(const void *in, float *y, uint64_t n)
{
    const rfk_q4_0 *x = in;
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const float d = f16(x[b].d);
        for (int j = 0; j < 16; j++) {
            y[j] = ((x[b].qs[j] & 0xF) - 8) * d;
            y[j + 16] = ((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dec_q4_1(const void *in, float *y, uint64_t n)
{
    const rfk_q4_1 *x = in;
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const float d = f16(x[b].d), m = f16(x[b].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (x[b].qs[j] & 0xF) * d + m;
            y[j + 16] = (x[b].qs[j] >> 4) * d + m;
        }
    }
}

static void dec_q5_0(const void *in, float *y, uint64_t n)
{
    const rfk_q5_0 *x = in;
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const float d = f16(x[b].d);
        uint32_t qh;
        memcpy(&qh, x[b].qh, 4);
        for (int j = 0; j < 16; j++) {
            int a = (x[b].qs[j] & 0xF) | (int)((qh >> j) & 1) << 4;
            int c = (x[b].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = (a - 16) * d;
            y[j + 16] = (c - 16) * d;
        }
    }
}

static void dec_q5_1(const void *in, float *y, uint64_t n)
{
    const rfk_q5_1 *x = in;
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const float d = f16(x[b].d), m = f16(x[b].m);
        uint32_t qh;
        memcpy(&qh, x[b].qh, 4);
        for (int j = 0; j < 16; j++) {
            int a = (x[b].qs[j] & 0xF) | (int)((qh >> j) & 1) << 4;
            int c = (x[b].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            y[j] = a * d + m;
            y[j + 16] = c * d + m;
        }
    }
}

static void dec_q8_0(const void *in, float *y, uint64_t n)
{
    const rfk_q8_0 *x = in;
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const float d = f16(x[b].d);
        for (int j = 0; j < 32; j++) y[j] = x[b].qs[j] * d;
    }
}

static void dec_iq4_nl(const void *in, float *y, uint64_t n)
{
    const rfk_iq4_nl *x = in;
    for (uint64_t b = 0; b < n / 32; b++, y += 32) {
        const float d = f16(x[b].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * rfk_iq4_values[x[b].qs[j] & 0xF];
            y[j + 16] = d * rfk_iq4_values[x[b].qs[j] >> 4];
        }
    }
}

static void dec_iq4_xs(const void *in, float *y, uint64_t n)
{
    const rfk_iq4_xs *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = f16(x[b].d);
        for (int ib = 0; ib < 8; ib++, y += 32) {
            const int ls = ((x[b].scales_l[ib / 2] >> 4 * (ib % 2)) & 0xF) | ((x[b].scales_h >> 2 * ib) & 3) << 4;
            const float dl = d * (ls - 32);
            const uint8_t *qs = x[b].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * rfk_iq4_values[qs[j] & 0xF];
                y[j + 16] = dl * rfk_iq4_values[qs[j] >> 4];
            }
        }
    }
}

static void dec_q2_k(const void *in, float *y, uint64_t n)
{
    const rfk_q2_k *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = f16(x[b].d), mn = f16(x[b].dmin);
        const uint8_t *q = x[b].qs;
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32)
            for (int shift = 0; shift < 8; shift += 2)
                for (int part = 0; part < 2; part++) {
                    const uint8_t sc = x[b].scales[is++];
                    const float dl = d * (sc & 0xF), ml = mn * (sc >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * ((q[l + 16 * part] >> shift) & 3) - ml;
                }
    }
}

static void dec_q3_k(const void *in, float *y, uint64_t n)
{
    const rfk_q3_k *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float dall = f16(x[b].d);
        const uint8_t *q = x[b].qs, *sc = x[b].scales;
        int is = 0;
        for (int h = 0; h < 2; h++, q += 32)
            for (int shift = 0; shift < 8; shift += 2)
                for (int part = 0; part < 2; part++, is++) {
                    int s = is < 8 ? sc[is] & 0xF : sc[is - 8] >> 4;
                    s = (s | ((sc[8 + is % 4] >> (2 * (is / 4))) & 3) << 4) - 32;
                    const float dl = dall * s;
                    const uint8_t m = (uint8_t)(1u << (4 * h + shift / 2));
                    for (int l = 0; l < 16; l++) {
                        int k = l + 16 * part;
                        *y++ = dl * (((q[k] >> shift) & 3) - ((x[b].hmask[k] & m) ? 0 : 4));
                    }
                }
    }
}

static void dec_q4_k(const void *in, float *y, uint64_t n)
{
    const rfk_q4_k *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = f16(x[b].d), mn = f16(x[b].dmin);
        const uint8_t *q = x[b].qs;
        for (int j = 0; j < 4; j++, q += 32) {
            uint8_t s, m;
            rfk_scale_min_k4(2 * j, x[b].scales, &s, &m);
            const float d1 = d * s, m1 = mn * m;
            rfk_scale_min_k4(2 * j + 1, x[b].scales, &s, &m);
            const float d2 = d * s, m2 = mn * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dec_q5_k(const void *in, float *y, uint64_t n)
{
    const rfk_q5_k *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = f16(x[b].d), mn = f16(x[b].dmin);
        const uint8_t *q = x[b].qs, *qh = x[b].qh;
        for (int j = 0; j < 4; j++, q += 32) {
            uint8_t s, m;
            rfk_scale_min_k4(2 * j, x[b].scales, &s, &m);
            const float d1 = d * s, m1 = mn * m;
            rfk_scale_min_k4(2 * j + 1, x[b].scales, &s, &m);
            const float d2 = d * s, m2 = mn * m;
            const uint8_t u1 = (uint8_t)(1u << (2 * j)), u2 = (uint8_t)(2u << (2 * j));
            for (int l = 0; l < 32; l++) *y++ = d1 * ((q[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static void dec_q6_k(const void *in, float *y, uint64_t n)
{
    const rfk_q6_k *x = in;
    for (uint64_t b = 0; b < n / RFK_QK; b++) {
        const float d = f16(x[b].d);
        const uint8_t *ql = x[b].ql, *qh = x[b].qh;
        const int8_t *sc = x[b].scales;
        for (int h = 0; h < 2; h++, y += 128, ql += 64, qh += 32, sc += 8)
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                y[l] = d * sc[is] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
    }
}

/* ------------------------------------------------------------------ dispatch */

rfk_encode_fn rfk_encoder_ref(int type)
{
    switch (type) {
    case RF_GT_Q4_0: return enc_q4_0;
    case RF_GT_Q4_1: return enc_q4_1;
    case RF_GT_Q5_0: return enc_q5_0;
    case RF_GT_Q5_1: return enc_q5_1;
    case RF_GT_Q8_0: return enc_q8_0;
    case RF_GT_Q2_K: return enc_q2_k;
    case RF_GT_Q3_K: return enc_q3_k;
    case RF_GT_Q4_K: return enc_q4_k;
    case RF_GT_Q5_K: return enc_q5_k;
    case RF_GT_Q6_K: return enc_q6_k;
    case RF_GT_IQ4_NL: return enc_iq4_nl;
    case RF_GT_IQ4_XS: return enc_iq4_xs;
    default: return NULL;
    }
}

rfk_decode_fn rfk_decoder_ref(int type)
{
    switch (type) {
    case RF_GT_Q4_0: return dec_q4_0;
    case RF_GT_Q4_1: return dec_q4_1;
    case RF_GT_Q5_0: return dec_q5_0;
    case RF_GT_Q5_1: return dec_q5_1;
    case RF_GT_Q8_0: return dec_q8_0;
    case RF_GT_Q2_K: return dec_q2_k;
    case RF_GT_Q3_K: return dec_q3_k;
    case RF_GT_Q4_K: return dec_q4_k;
    case RF_GT_Q5_K: return dec_q5_k;
    case RF_GT_Q6_K: return dec_q6_k;
    case RF_GT_IQ4_NL: return dec_iq4_nl;
    case RF_GT_IQ4_XS: return dec_iq4_xs;
    default: return NULL;
    }
}

rfk_encode_fn rfk_encoder(int type)
{
    rfk_encode_fn f = (rf_cpu_features() & RF_CPU_AVX2) ? rfk_encoder_avx2(type) : NULL;
    return f ? f : rfk_encoder_ref(type);
}

rfk_decode_fn rfk_decoder(int type)
{
    rfk_decode_fn f = (rf_cpu_features() & (RF_CPU_AVX2 | RF_CPU_FMA)) == (RF_CPU_AVX2 | RF_CPU_FMA)
                          ? rfk_decoder_avx2(type) : NULL;
    return f ? f : rfk_decoder_ref(type);
}

/* ------------------------------------------------------------------ public entry points */

rf_status rf_gquant_rows(int type, const float *x, uint64_t nrows, uint64_t ncols, void *out, rf_err *err)
{
    const char *name = rf_gtype_name(type);
    if (!rf_gtype_supported(type))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "ramfit cannot encode GGUF type %s", name ? name : "(unknown)");
    uint64_t rb = rf_gtype_row_bytes(type, ncols);
    if (!rb && ncols)
        return rf_err_set(err, RF_ERR_INVALID, "%s needs rows of a multiple of %llu weights, not %llu", name,
                          (unsigned long long)rf_gtype_block(type), (unsigned long long)ncols);
    for (uint64_t r = 0; r < nrows; r++)
        for (uint64_t c = 0; c < ncols; c++)
            if (!isfinite(x[r * ncols + c]))
                return rf_err_set(err, RF_ERR_NONFINITE, "%s weight at row %llu, column %llu",
                                  isnan(x[r * ncols + c]) ? "NaN" : "infinite", (unsigned long long)r,
                                  (unsigned long long)c);
    if (type == RF_GT_F32) {
        memcpy(out, x, nrows * ncols * sizeof(float));
        return RF_OK;
    }
    if (type == RF_GT_F16 || type == RF_GT_BF16)
        return rf_convert_from_f32(type == RF_GT_F16 ? RF_DT_F16 : RF_DT_BF16, x, out, nrows * ncols, err);
    rfk_encode_fn enc = rfk_encoder(type);
    for (uint64_t r = 0; r < nrows; r++) enc(x + r * ncols, (uint8_t *)out + r * rb, ncols);
    return RF_OK;
}

rf_status rf_gdequant_row(int type, const void *row, uint64_t ncols, float *out, rf_err *err)
{
    const char *name = rf_gtype_name(type);
    if (!rf_gtype_supported(type))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "ramfit cannot decode GGUF type %s", name ? name : "(unknown)");
    if (!rf_gtype_row_bytes(type, ncols) && ncols)
        return rf_err_set(err, RF_ERR_INVALID, "%s needs rows of a multiple of %llu weights, not %llu", name,
                          (unsigned long long)rf_gtype_block(type), (unsigned long long)ncols);
    switch (type) {
    case RF_GT_F32: memcpy(out, row, ncols * sizeof(float)); return RF_OK;
    case RF_GT_F16: return rf_convert_to_f32(RF_DT_F16, row, out, ncols, err);
    case RF_GT_BF16: return rf_convert_to_f32(RF_DT_BF16, row, out, ncols, err);
    default: rfk_decoder(type)(row, out, ncols); return RF_OK;
    }
}
