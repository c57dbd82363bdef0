/* The engine's small per-token operations: RMSNorm, RoPE, softmax, SwiGLU, attention over a KV
 * cache, MoE routing. All math in float32 with float64 where a long sum needs it. */
#include "engine/engine_internal.h"

#include <math.h>
#include <string.h>
#if RF_X86
#include <immintrin.h>
#endif

void rf_op_rmsnorm(const float *x, const float *w, int n, float eps, float *out)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
}

void rf_op_softmax(float *x, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

double rf_logsumexp(const float *x, int n)
{
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + log(sum);
}

void rf_op_swiglu(const float *g, const float *u, int n, float *out)
{
    for (int i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

#if RF_X86
/* exp(x): 2^k * p(r), k = round(x / ln 2), r = x - k ln 2 in two parts (Cody-Waite), p the
 * degree-6 Taylor polynomial: relative error about 2e-7 (a few ulp). x is clamped to a range
 * whose ends still overflow to inf and underflow to 0 through the scaling, as expf does. */
RF_TARGET_AVX512 static inline __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(89.0f)), _mm512_set1_ps(-104.0f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

RF_TARGET_AVX512 static void swiglu_512(const float *g, const float *u, int n, float *out)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 gv = _mm512_loadu_ps(g + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
#endif

void rf_op_swiglu_fast(const float *g, const float *u, int n, float *out)
{
#if RF_X86
    if (rf_cpu_features() & RF_CPU_AVX512) { swiglu_512(g, u, n, out); return; }
#endif
    rf_op_swiglu(g, u, n, out);
}

void rf_op_rope(float *x, int d, const float *cosv, const float *sinv)
{
    int h = d / 2;
    for (int i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * cosv[i] - b * sinv[i];
        x[i + h] = b * cosv[i] + a * sinv[i];
    }
}

rf_status rf_rope_inv_freq(const rf_config *c, int d, double *inv_freq, rf_err *err)
{
    if (d <= 0 || d % 2) return rf_err_set(err, RF_ERR_UNSUPPORTED, "head_dim %d is not even: no RoPE", d);
    double theta = c->rope_theta > 0 ? c->rope_theta : 10000.0;
    for (int i = 0; i < d / 2; i++) inv_freq[i] = 1.0 / pow(theta, (2.0 * i) / d);
    if (!c->rope_type[0] || !strcmp(c->rope_type, "default")) return RF_OK;
    if (strcmp(c->rope_type, "llama3") != 0)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "rope_scaling type '%s' is not supported (llama3 only)",
                          c->rope_type);
    /* Llama 3.1: long wavelengths are slowed by factor, short kept, a smooth ramp in between. */
    double factor = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    double orig = c->rope_original_max_pos;
    if (!(factor > 0) || !(hi > lo) || !(orig > 0))
        return rf_err_set(err, RF_ERR_FORMAT, "llama3 rope_scaling needs factor > 0, high_freq_factor > "
                                              "low_freq_factor and original_max_position_embeddings > 0");
    double lo_wl = orig / lo, hi_wl = orig / hi;
    for (int i = 0; i < d / 2; i++) {
        double f = inv_freq[i], wl = 2 * M_PI / f;
        if (wl < hi_wl) continue;
        if (wl > lo_wl) { inv_freq[i] = f / factor; continue; }
        double smooth = (orig / wl - lo) / (hi - lo);
        inv_freq[i] = (1 - smooth) * f / factor + smooth * f;
    }
    return RF_OK;
}

void rf_moe_route(const float *logits, int n, int k, int softmax_first, int norm_topk, int *idx, float *wt)
{
    /* Selection by repeated arg-max keeps ties on the lower index, like torch.topk on CPU. */
    float p[512];
    int used[512];
    double mx = logits[0], sum = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    for (int i = 0; i < n; i++) {
        used[i] = 0;
        p[i] = softmax_first ? (float)exp(logits[i] - mx) : logits[i];
        sum += softmax_first ? p[i] : 0;
    }
    if (softmax_first)
        for (int i = 0; i < n; i++) p[i] = (float)(p[i] / sum);
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!used[i] && (best < 0 || p[i] > p[best])) best = i;
        used[best] = 1;
        idx[j] = best;
        wt[j] = p[best];
    }
    if (!softmax_first) {
        double s = 0, top = wt[0];
        for (int j = 0; j < k; j++) s += exp((double)wt[j] - top);
        for (int j = 0; j < k; j++) wt[j] = (float)(exp((double)wt[j] - top) / s);
    } else if (norm_topk) {
        double s = 0;
        for (int j = 0; j < k; j++) s += wt[j];
        for (int j = 0; j < k; j++) wt[j] = (float)(wt[j] / s);
    }
}

void rf_op_attend_ref(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                      float *scratch, float *out)
{
    for (int s = 0; s < npos; s++) {
        const float *k = kc + (uint64_t)s * ld;
        float dot = 0;
        for (int i = 0; i < d; i++) dot += q[i] * k[i];
        scratch[s] = dot * scale;
    }
    rf_op_softmax(scratch, npos);
    memset(out, 0, (size_t)d * sizeof(float));
    for (int s = 0; s < npos; s++) {
        const float *v = vc + (uint64_t)s * ld;
        float a = scratch[s];
        for (int i = 0; i < d; i++) out[i] += a * v[i];
    }
}

#if RF_X86
RF_TARGET_AVX2 static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/* d % 8 == 0. The weighted sum of V goes 32 columns at a time over all positions, so the four
 * accumulators stay in registers and each V row segment is read once. */
RF_TARGET_AVX2 static void attend_avx2(const float *q, const float *kc, const float *vc, int npos, int d, int ld,
                                       float scale, float *scratch, float *out)
{
    for (int s = 0; s < npos; s++) {
        const float *k = kc + (uint64_t)s * ld;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= d; i += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8), a1);
        }
        if (i < d) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
        scratch[s] = hsum8(_mm256_add_ps(a0, a1)) * scale;
    }
    rf_op_softmax(scratch, npos);
    int i = 0;
    for (; i + 32 <= d; i += 32) {
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int s = 0; s < npos; s++) {
            const float *v = vc + (uint64_t)s * ld + i;
            __m256 a = _mm256_broadcast_ss(scratch + s);
            o0 = _mm256_fmadd_ps(a, _mm256_loadu_ps(v), o0);
            o1 = _mm256_fmadd_ps(a, _mm256_loadu_ps(v + 8), o1);
            o2 = _mm256_fmadd_ps(a, _mm256_loadu_ps(v + 16), o2);
            o3 = _mm256_fmadd_ps(a, _mm256_loadu_ps(v + 24), o3);
        }
        _mm256_storeu_ps(out + i, o0);
        _mm256_storeu_ps(out + i + 8, o1);
        _mm256_storeu_ps(out + i + 16, o2);
        _mm256_storeu_ps(out + i + 24, o3);
    }
    for (; i < d; i += 8) {
        __m256 o = _mm256_setzero_ps();
        for (int s = 0; s < npos; s++)
            o = _mm256_fmadd_ps(_mm256_broadcast_ss(scratch + s), _mm256_loadu_ps(vc + (uint64_t)s * ld + i), o);
        _mm256_storeu_ps(out + i, o);
    }
}
#endif

static void attend(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                   float *scratch, float *out);

void rf_op_attend(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                  float *scratch, float *out)
{
    if (!rf_prof_on) { attend(q, kc, vc, npos, d, ld, scale, scratch, out); return; }
    uint64_t t0 = rf_prof_now();
    attend(q, kc, vc, npos, d, ld, scale, scratch, out);
    rf_prof_add(RF_PROF_ATTEND, t0);
}

static void attend(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                   float *scratch, float *out)
{
#if RF_X86
    unsigned f = rf_cpu_features();
    if (d % 8 == 0 && (f & RF_CPU_AVX2) && (f & RF_CPU_FMA)) {
        attend_avx2(q, kc, vc, npos, d, ld, scale, scratch, out);
        return;
    }
#endif
    rf_op_attend_ref(q, kc, vc, npos, d, ld, scale, scratch, out);
}
