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

void rf_op_rope(float *x, int d, const float *cosv, const float *sinv) { rf_op_rope_ex(x, d, cosv, sinv, 0); }

void rf_op_rope_ex(float *x, int rd, const float *cosv, const float *sinv, int interleaved)
{
    int h = rd / 2;
    if (interleaved) {
        for (int i = 0; i < h; i++) {
            float a = x[2 * i], b = x[2 * i + 1];
            x[2 * i] = a * cosv[i] - b * sinv[i];
            x[2 * i + 1] = b * cosv[i] + a * sinv[i];
        }
        return;
    }
    for (int i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = a * cosv[i] - b * sinv[i];
        x[i + h] = b * cosv[i] + a * sinv[i];
    }
}

/* YaRN's attention scaling (transformers' get_mscale). */
static double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

rf_status rf_rope_freqs(const rf_rope *r, int dim, int max_pos, int use_long, double *inv_freq, double *attn_factor,
                        rf_err *err)
{
    if (dim <= 0 || dim % 2) return rf_err_set(err, RF_ERR_UNSUPPORTED, "rotary dimension %d is not even", dim);
    double theta = r->theta > 0 ? r->theta : 10000.0;
    *attn_factor = 1.0;
    for (int i = 0; i < dim / 2; i++) inv_freq[i] = 1.0 / pow(theta, (2.0 * i) / dim);
    const char *type = r->type;
    if (!type[0] || !strcmp(type, "default")) return RF_OK;
    if (!strcmp(type, "linear")) {
        if (!(r->factor > 0)) return rf_err_set(err, RF_ERR_FORMAT, "linear rope scaling needs factor > 0");
        for (int i = 0; i < dim / 2; i++) inv_freq[i] /= r->factor;
        return RF_OK;
    }
    if (!strcmp(type, "llama3")) {
        /* Llama 3.1: long wavelengths are slowed by factor, short kept, a smooth ramp in between. */
        double factor = r->factor, lo = r->low_freq_factor, hi = r->high_freq_factor, orig = r->original_max_pos;
        if (!(factor > 0) || !(hi >= lo) || !(lo > 0) || !(orig > 0))
            return rf_err_set(err, RF_ERR_FORMAT, "llama3 rope_scaling needs factor > 0, high_freq_factor >= "
                                                  "low_freq_factor > 0 and original_max_position_embeddings > 0");
        double lo_wl = orig / lo, hi_wl = orig / hi;
        for (int i = 0; i < dim / 2; i++) {
            double f = inv_freq[i], wl = 2 * M_PI / f;
            if (wl < hi_wl) continue;
            if (wl > lo_wl || hi == lo) { inv_freq[i] = f / factor; continue; }
            double smooth = (orig / wl - lo) / (hi - lo);
            inv_freq[i] = (1 - smooth) * f / factor + smooth * f;
        }
        return RF_OK;
    }
    if (!strcmp(type, "yarn")) {
        /* transformers' _compute_yarn_parameters: interpolate the slow dimensions by factor, keep
         * the fast ones, ramp between the correction dimensions of beta_fast and beta_slow. */
        double orig = r->original_max_pos;
        if (!(orig > 0)) return rf_err_set(err, RF_ERR_FORMAT, "yarn rope scaling needs original_max_position_embeddings");
        double factor = r->factor > 0 ? r->factor : max_pos / orig;
        double bf = r->beta_fast ? r->beta_fast : 32, bs = r->beta_slow ? r->beta_slow : 1;
        if (r->attention_factor > 0) *attn_factor = r->attention_factor;
        else if (r->mscale != 0 && r->mscale_all_dim != 0)
            *attn_factor = yarn_mscale(factor, r->mscale) / yarn_mscale(factor, r->mscale_all_dim);
        else *attn_factor = yarn_mscale(factor, 1);
        double lo = dim * log(orig / (bf * 2 * M_PI)) / (2 * log(theta));
        double hi = dim * log(orig / (bs * 2 * M_PI)) / (2 * log(theta));
        if (r->truncate) lo = floor(lo), hi = ceil(hi);
        if (lo < 0) lo = 0;
        if (hi > dim - 1) hi = dim - 1;
        if (lo == hi) hi += 0.001;
        for (int i = 0; i < dim / 2; i++) {
            double ramp = (i - lo) / (hi - lo);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extra = 1 - ramp, f = inv_freq[i];
            inv_freq[i] = f / factor * (1 - extra) + f * extra;
        }
        return RF_OK;
    }
    if (!strcmp(type, "longrope")) {
        /* transformers' _compute_longrope_parameters: per-pair factors, long ones once the sequence
         * passes original_max_position_embeddings, and an attention factor from the total scale. */
        double orig = r->original_max_pos;
        if (!(orig > 0)) return rf_err_set(err, RF_ERR_FORMAT, "longrope needs original_max_position_embeddings");
        if (r->n_factors != dim / 2)
            return rf_err_set(err, RF_ERR_FORMAT, "longrope has %d factors for %d rotated pairs", r->n_factors, dim / 2);
        double factor = r->factor > 0 ? r->factor : max_pos / orig;
        if (r->attention_factor > 0) *attn_factor = r->attention_factor;
        else *attn_factor = factor <= 1 ? 1.0 : sqrt(1 + log(factor) / log(orig));
        const float *ext = use_long ? r->long_factor : r->short_factor;
        for (int i = 0; i < dim / 2; i++) inv_freq[i] /= ext[i];
        return RF_OK;
    }
    return rf_err_set(err, RF_ERR_UNSUPPORTED, "rope scaling type '%s' is not supported (default, linear, llama3, yarn, "
                      "longrope)", type);
}

/* Top-k of v[0..n) into idx (descending; ties to the lower index, like torch.topk on CPU). */
static void topk(const float *v, int n, int k, int *idx)
{
    unsigned char used[RF_MAX_EXPERTS];
    memset(used, 0, (size_t)n);
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!used[i] && (best < 0 || v[i] > v[best])) best = i;
        used[best] = 1;
        idx[j] = best;
    }
}

void rf_moe_route_ex(const rf_route_opts *o, const float *logits, int *idx, float *wt)
{
    const int n = o->n, k = o->k;
    float p[RF_MAX_EXPERTS];
    switch (o->kind) {
    case RF_ROUTER_SOFTMAX_TOPK: { /* top-k logits, softmax over the chosen */
        topk(logits, n, k, idx);
        double s = 0, top = logits[idx[0]];
        for (int j = 0; j < k; j++) s += exp((double)logits[idx[j]] - top);
        for (int j = 0; j < k; j++) wt[j] = (float)(exp((double)logits[idx[j]] - top) / s);
        return;
    }
    case RF_ROUTER_SOFTMAX: { /* softmax over all, top-k, optionally renormalised */
        double mx = logits[0], sum = 0;
        for (int i = 1; i < n; i++)
            if (logits[i] > mx) mx = logits[i];
        for (int i = 0; i < n; i++) sum += p[i] = (float)exp(logits[i] - mx);
        for (int i = 0; i < n; i++) p[i] = (float)(p[i] / sum);
        topk(p, n, k, idx);
        for (int j = 0; j < k; j++) wt[j] = p[idx[j]];
        if (o->norm_topk) {
            double s = 0;
            for (int j = 0; j < k; j++) s += wt[j];
            for (int j = 0; j < k; j++) wt[j] = (float)(wt[j] / s);
        }
        return;
    }
    case RF_ROUTER_SIGMOID_GROUPED: {
        /* DeepSeek-V3: sigmoid scores; the bias only steers the choice; the groups with the best
         * two-expert sums are kept, the others masked; weights are the chosen scores. */
        float choice[RF_MAX_EXPERTS];
        for (int i = 0; i < n; i++) {
            p[i] = 1.0f / (1.0f + expf(-logits[i]));
            choice[i] = p[i] + (o->bias ? o->bias[i] : 0.0f);
        }
        int G = o->n_group > 0 ? o->n_group : 1;
        if (G > 1) {
            int per = n / G, gk = o->topk_group, gi[RF_MAX_EXPERTS];
            float gs[RF_MAX_EXPERTS];
            for (int g = 0; g < G; g++) {
                float a = -INFINITY, b = -INFINITY; /* the group's two best */
                for (int i = g * per; i < (g + 1) * per; i++) {
                    if (choice[i] > a) b = a, a = choice[i];
                    else if (choice[i] > b) b = choice[i];
                }
                gs[g] = per > 1 ? a + b : a;
            }
            topk(gs, G, gk, gi);
            unsigned char keep[RF_MAX_EXPERTS];
            memset(keep, 0, (size_t)G);
            for (int j = 0; j < gk; j++) keep[gi[j]] = 1;
            for (int i = 0; i < n; i++)
                if (!keep[i / per]) choice[i] = -INFINITY;
        }
        topk(choice, n, k, idx);
        double s = 0;
        for (int j = 0; j < k; j++) s += wt[j] = p[idx[j]];
        for (int j = 0; j < k; j++) {
            if (o->norm_topk) wt[j] = (float)(wt[j] / (s + 1e-20));
            wt[j] = (float)(wt[j] * o->scaling);
        }
        return;
    }
    case RF_ROUTER_LLAMA4: /* top-k logits; sigmoid(logit) scales the expert's input (the engine's part) */
        topk(logits, n, k, idx);
        for (int j = 0; j < k; j++) wt[j] = 1.0f / (1.0f + expf(-logits[idx[j]]));
        return;
    }
}

void rf_moe_route(const float *logits, int n, int k, int softmax_first, int norm_topk, int *idx, float *wt)
{
    rf_route_opts o = {.n = n, .k = k, .kind = softmax_first ? RF_ROUTER_SOFTMAX : RF_ROUTER_SOFTMAX_TOPK,
                       .norm_topk = norm_topk, .n_group = 1, .topk_group = 1, .scaling = 1};
    rf_moe_route_ex(&o, logits, idx, wt);
}

float rf_op_act(rf_act a, float g)
{
    switch (a) {
    case RF_ACT_SILU: return g / (1.0f + expf(-g));
    case RF_ACT_GELU: return 0.5f * g * (1.0f + erff(g * (float)M_SQRT1_2));
    case RF_ACT_GELU_TANH: return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
    case RF_ACT_RELU: return g > 0 ? g : 0;
    case RF_ACT_RELU2: return g > 0 ? g * g : 0;
    }
    return g;
}

void rf_op_glu(rf_act a, const float *g, const float *u, int n, float *out)
{
    if (a == RF_ACT_SILU) {
        rf_op_swiglu(g, u, n, out);
        return;
    }
    for (int i = 0; i < n; i++) out[i] = rf_op_act(a, g[i]) * u[i];
}

void rf_op_l2norm(float *x, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) x[i] *= inv;
}

void rf_op_attend_ex(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                     float softcap, float *scratch, float *out)
{
    for (int s = 0; s < npos; s++) {
        const float *k = kc + (uint64_t)s * ld;
        float dot = 0;
        for (int i = 0; i < d; i++) dot += q[i] * k[i];
        dot *= scale;
        scratch[s] = softcap > 0 ? tanhf(dot / softcap) * softcap : dot;
    }
    rf_op_softmax(scratch, npos);
    memset(out, 0, (size_t)d * sizeof(float));
    for (int s = 0; s < npos; s++) {
        const float *v = vc + (uint64_t)s * ld;
        float a = scratch[s];
        for (int i = 0; i < d; i++) out[i] += a * v[i];
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

void rf_op_attend(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
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
