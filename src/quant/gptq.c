/* GPTQ in MLX's affine format: group-wise scale and bias, error feedback in column blocks through
 * the Cholesky factor of the damped Hessian (Frantar et al. 2022, and mlx-lm's quant/gptq.py).
 *
 * The damped Hessian A = H + lambda I (lambda = damp * mean diag H) is factored "from the back":
 * A = R R^T with R upper triangular (a lower Cholesky of A with rows and columns reversed). R^-1 is
 * then the upper Cholesky factor U of A^-1 that GPTQ sweeps with (A^-1 = U^T U), so GPTQ's update
 *     after column j:  w[k] -= (w[j] - q[j]) / U[j][j] * U[j][k]   for k > j
 * sums up, for every column k, to
 *     w~[k] = w[k] + sum_{j<k} (w[j] - q[j]) * R[j][k] / R[k][k]
 * with w the original weights and q the dequantized codes (the "nearest plane" form of GPTQ): the
 * same codes without forming A^-1 or inverting R. Columns are processed in blocks of GPTQ_BLOCK:
 * the feedback of all earlier blocks is added at a block's start (the lazy batch update), the
 * feedback inside the block column by column. Each element's sum runs over j in increasing order
 * whatever the blocking, so the result depends neither on the block size nor on the thread count.
 *
 * Group parameters are chosen when the sweep reaches a group's first column, from the group's
 * weights with all feedback from earlier columns (as mlx-lm does): MLX's min/max rule (codes
 * q = clamp(rint((w - b) / s), 0, n) from the float parameters, exactly MLX's) or the
 * error-minimising "opt" search (codes to the nearest level of the stored grid). Dequantized
 * values are fmaf(scale, q, bias) with the scale and bias as stored. */
#include "quant/quant_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GPTQ_BLOCK 128   /* columns per lazy batch: a multiple of every group size */
#define GPTQ_ROWS 64     /* rows swept together (workspace: 3 x cols x rows floats + codes) */
#define CHOL_NB 64       /* Cholesky panel width */
#define CHOL_JC 512      /* trailing-update column chunk (cache) */
#define FB_JC 64         /* block-start feedback: earlier columns per chunk */

struct rf_gptq {
    uint64_t n;
    float *c;            /* strictly lower, packed by rows: row k holds R[j][k] / R[k][k], j = 0..k-1 */
    double damp;         /* lambda used */
    int retries;         /* damping increases needed for a positive definite A */
};

/* ------------------------------------------------------------------ kernels
 * One multiply and one add per element in a fixed order, never fused (ISO C: no contraction), so
 * the plain and AVX2 builds give the same bits. */

static inline __attribute__((always_inline)) void gemv_body(float *restrict y, const float *restrict a,
                                                           const float *restrict x, size_t nj, size_t n)
{
    for (size_t j = 0; j < nj; j++)
        for (size_t i = 0; i < n; i++) y[i] += a[j] * x[j * n + i];
}
static inline __attribute__((always_inline)) void axmy_d_body(double *restrict y, double a, const double *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] -= a * x[i];
}
static void gemv_ref(float *restrict y, const float *restrict a, const float *restrict x, size_t nj, size_t n)
{
    gemv_body(y, a, x, nj, n);
}
static void axmy_d_ref(double *restrict y, double a, const double *restrict x, size_t n) { axmy_d_body(y, a, x, n); }
#if RF_X86
RF_TARGET_AVX2 static void gemv_avx2(float *restrict y, const float *restrict a, const float *restrict x, size_t nj, size_t n)
{
    gemv_body(y, a, x, nj, n);
}
RF_TARGET_AVX2 static void axmy_d_avx2(double *restrict y, double a, const double *restrict x, size_t n) { axmy_d_body(y, a, x, n); }
#endif

/* y[i] += sum_j a[j] * x[j][i] (rows of x n apart), added j by j; y[i] -= a * x[i]. */
typedef struct gk {
    void (*gemv)(float *restrict y, const float *restrict a, const float *restrict x, size_t nj, size_t n);
    void (*axmy_d)(double *restrict, double, const double *restrict, size_t);
} gk;

static gk pick(void)
{
#if RF_X86
    if (rf_cpu_features() & RF_CPU_AVX2) return (gk){gemv_avx2, axmy_d_avx2};
#endif
    return (gk){gemv_ref, axmy_d_ref};
}

/* ------------------------------------------------------------------ Cholesky (lower, in place)
 * Right-looking, blocked: factor a diagonal block, solve the panel below it, update the trailing
 * lower triangle. Row-major n x n; only the lower triangle is read or written. Rows are split
 * among tasks, and every element is always computed by the same operations in the same order. */

typedef struct chol {
    double *a;
    uint64_t n, k0, kb;
    double *pt;          /* panel transposed: pt[p * n + j] = a[j][k0 + p] */
    gk k;
    int bad;             /* a panel row found the matrix not positive definite (never: see solve) */
} chol;

#define CHOL_ROWS 16     /* rows per task */

static void panel_task(void *ctx, uint64_t t, int worker)
{
    (void)worker;
    chol *c = ctx;
    uint64_t n = c->n, k0 = c->k0, kb = c->kb, r0 = k0 + kb + t * CHOL_ROWS;
    for (uint64_t i = r0; i < n && i < r0 + CHOL_ROWS; i++) {
        double *ai = c->a + i * n;
        for (uint64_t k = k0; k < k0 + kb; k++) {
            const double *ak = c->a + k * n;
            double s = ai[k];
            for (uint64_t p = k0; p < k; p++) s -= ai[p] * ak[p];
            ai[k] = s / ak[k];
        }
    }
}

static void trail_task(void *ctx, uint64_t t, int worker)
{
    (void)worker;
    chol *c = ctx;
    uint64_t n = c->n, k0 = c->k0, kb = c->kb, j0 = k0 + kb, r0 = j0 + t * CHOL_ROWS;
    for (uint64_t i = r0; i < n && i < r0 + CHOL_ROWS; i++) {
        double *ai = c->a + i * n;
        for (uint64_t jc = j0; jc <= i; jc += CHOL_JC) {
            size_t len = (size_t)((i + 1 - jc) < CHOL_JC ? i + 1 - jc : CHOL_JC);
            for (uint64_t p = 0; p < kb; p++) c->k.axmy_d(ai + jc, ai[k0 + p], c->pt + p * n + jc, len);
        }
    }
}

/* 0 when A is not (numerically) positive definite. */
static int cholesky(double *a, uint64_t n, double *pt, rf_pool *pool)
{
    chol c = {.a = a, .n = n, .pt = pt, .k = pick()};
    for (uint64_t k0 = 0; k0 < n; k0 += CHOL_NB) {
        uint64_t kb = n - k0 < CHOL_NB ? n - k0 : CHOL_NB;
        for (uint64_t k = k0; k < k0 + kb; k++) {
            double *ak = a + k * n;
            double d = ak[k];
            for (uint64_t p = k0; p < k; p++) d -= ak[p] * ak[p];
            if (!(d > 0) || !isfinite(d)) return 0;
            ak[k] = sqrt(d);
            for (uint64_t i = k + 1; i < k0 + kb; i++) {
                double *ai = a + i * n;
                double s = ai[k];
                for (uint64_t p = k0; p < k; p++) s -= ai[p] * ak[p];
                ai[k] = s / ak[k];
            }
        }
        c.k0 = k0;
        c.kb = kb;
        uint64_t rest = n - k0 - kb, tasks = (rest + CHOL_ROWS - 1) / CHOL_ROWS;
        if (!rest) break;
        rf_pool_run(rest * rest * kb < (1u << 20) ? NULL : pool, tasks, panel_task, &c);
        for (uint64_t j = k0 + kb; j < n; j++)
            for (uint64_t p = 0; p < kb; p++) pt[p * n + j] = a[j * n + k0 + p];
        rf_pool_run(rest * rest * kb < (1u << 20) ? NULL : pool, tasks, trail_task, &c);
    }
    return 1;
}

/* ------------------------------------------------------------------ the factor */

/* Packed upper triangle by rows (the statistics file's layout): element (i, j), i <= j. */
static inline uint64_t up_idx(uint64_t n, uint64_t i, uint64_t j) { return i * n - i * (i - 1) / 2 + (j - i); }
/* Packed strictly lower triangle by rows: row k starts here and holds k elements. */
static inline uint64_t lo_row(uint64_t k) { return k * (k - 1) / 2; }

uint64_t rf_gptq_factor_bytes(uint64_t n) { return lo_row(n) * sizeof(float); }

uint64_t rf_gptq_prepare_bytes(uint64_t n)
{
    return n * n * sizeof(double) + (uint64_t)CHOL_NB * n * sizeof(double) + rf_gptq_factor_bytes(n);
}

void rf_gptq_free(rf_gptq *g)
{
    if (!g) return;
    free(g->c);
    free(g);
}

uint64_t rf_gptq_cols(const rf_gptq *g) { return g ? g->n : 0; }
double rf_gptq_lambda(const rf_gptq *g) { return g ? g->damp : 0; }

rf_status rf_gptq_prepare(const float *h, uint64_t n, double damp, rf_pool *pool, rf_gptq **out, rf_err *err)
{
    if (!out) return rf_err_set(err, RF_ERR_INVALID, "gptq: NULL output");
    *out = NULL;
    uint64_t nn;
    if (!h || n == 0 || !rf_mul_u64(n, n, &nn) || nn > (UINT64_MAX >> 4))
        return rf_err_set(err, RF_ERR_INVALID, "gptq: bad Hessian (%llu columns)", (unsigned long long)n);
    if (!(damp >= 0) || !isfinite(damp)) return rf_err_set(err, RF_ERR_INVALID, "gptq: damping %g is not >= 0", damp);
    /* the mean of the diagonal sets lambda's scale; a column that never had input (H[j][j] = 0) gets lambda alone */
    double mean = 0;
    for (uint64_t i = 0; i < n; i++) {
        double d = h[up_idx(n, i, i)];
        if (!isfinite(d) || d < 0)
            return rf_err_set(err, RF_ERR_NONFINITE, "gptq: Hessian diagonal element %llu is %g", (unsigned long long)i, d);
        mean += d;
    }
    mean /= (double)n;
    rf_gptq *g = calloc(1, sizeof *g);
    double *a = malloc(nn * sizeof *a), *pt = malloc((size_t)CHOL_NB * n * sizeof *pt);
    if (g) g->c = malloc(rf_gptq_factor_bytes(n) ? rf_gptq_factor_bytes(n) : 1);
    if (!g || !a || !pt || !g->c) {
        free(a);
        free(pt);
        rf_gptq_free(g);
        return rf_err_set(err, RF_ERR_NOMEM, "gptq: out of memory for a %llu x %llu Hessian", (unsigned long long)n,
                          (unsigned long long)n);
    }
    g->n = n;
    double lambda = damp * mean;
    if (!(lambda > 0)) lambda = mean > 0 ? 1e-6 * mean : 1.0; /* no damping asked for, or no input at all */
    rf_status st = RF_OK;
    for (int attempt = 0;; attempt++) {
        /* B = J A J (lower triangle): B[i][j] = A[n-1-i][n-1-j], an element of H's upper triangle */
        for (uint64_t i = 0; i < n && !st; i++)
            for (uint64_t j = 0; j <= i; j++) {
                uint64_t ri = n - 1 - i, rj = n - 1 - j; /* ri <= rj */
                double v = h[up_idx(n, ri, rj)];
                if (!isfinite(v)) {
                    st = rf_err_set(err, RF_ERR_NONFINITE, "gptq: Hessian element [%llu, %llu] is not finite",
                                    (unsigned long long)ri, (unsigned long long)rj);
                    break;
                }
                a[i * n + j] = v + (i == j ? lambda : 0);
            }
        if (st || cholesky(a, n, pt, pool)) break;
        if (attempt == 6) {
            st = rf_err_set(err, RF_ERR_NONFINITE, "gptq: the damped Hessian is not positive definite (damping raised to "
                            "%g x its mean diagonal)", mean > 0 ? lambda / mean : lambda);
            break;
        }
        lambda *= 10; /* as GPTQ implementations do: more damping until the factorisation succeeds */
        g->retries++;
    }
    if (!st) {
        g->damp = lambda;
        /* R[j][k] = M[n-1-j][n-1-k]: c_k[j] = R[j][k] / R[k][k] (j < k) is column n-1-k of M below its diagonal */
        for (uint64_t k = 0; k < n; k++) {
            uint64_t mk = n - 1 - k;
            double dkk = a[mk * n + mk];
            float *row = g->c + lo_row(k);
            for (uint64_t j = 0; j < k; j++) row[j] = (float)(a[(n - 1 - j) * n + mk] / dkk);
        }
    }
    free(a);
    free(pt);
    if (st) {
        rf_gptq_free(g);
        return st;
    }
    *out = g;
    return RF_OK;
}

/* ------------------------------------------------------------------ the sweep */

static int src_ok(rf_dtype d) { return d == RF_DT_F32 || d == RF_DT_BF16 || d == RF_DT_F16; }

typedef struct sweep {
    const rf_gptq *g;
    const rfq_kernels *qk;
    gk k;
    uint64_t n;
    int bits, gs;
    rf_qmode grid;
    rf_dtype sd;
    float nlev;
    size_t nr;           /* rows in this chunk */
    float *wt;           /* [n][nr]: the weights with feedback so far (transposed) */
    float *w0;           /* [GPTQ_BLOCK][nr]: the block's original weights */
    float *dt;           /* [n][nr]: original weight - dequantized value */
    uint8_t *q;          /* [nr][n]: codes */
    float *x;            /* one group, padded */
    float *delta;        /* [gs][nr]: the group's updates at its start */
    float *ps, *pb, *pss, *pbs; /* [nr]: the current group's parameters per row */
    float *sc, *bi;      /* [nr][n / gs]: stored scales and biases (as floats) */
} sweep;

/* Parameters of the group starting at column K (inside the block starting at B0). GPTQ chooses them
 * from the group's weights after the updates of every column before K (mlx-lm: the weights when the
 * sweep reaches the group). In the form used here, wt[c] - w[c] for c in the group holds the feedback
 * t[c] of the columns before K as it reaches column c at its turn; the updates GPTQ has made to column
 * c by then are the solution of a triangular system in the group's own factor entries:
 *     delta[c] = t[c] - sum_{K <= i < c} C[c][i] delta[i]
 * (the compensation of the still free columns K.. for the fixed ones, least squares in the damped
 * Hessian). */
static void group_params(sweep *w, uint64_t k, uint64_t b0)
{
    size_t nr = w->nr;
    const float *c = w->g->c;
    for (int ci = 0; ci < w->gs; ci++) {
        uint64_t col = k + (uint64_t)ci;
        float *d = w->delta + (size_t)ci * nr;
        const float *v = w->wt + col * nr, *v0 = w->w0 + (col - b0) * nr, *cc = c + lo_row(col) + k;
        for (size_t r = 0; r < nr; r++) d[r] = v[r] - v0[r];
        for (int i = 0; i < ci; i++) {
            const float *di = w->delta + (size_t)i * nr;
            float a = cc[i];
            for (size_t r = 0; r < nr; r++) d[r] -= a * di[r];
        }
    }
    for (size_t r = 0; r < nr; r++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < w->gs; i++) {
            float v = w->w0[(k - b0 + (uint64_t)i) * nr + r] + w->delta[(size_t)i * nr + r];
            w->x[i] = v;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (w->grid == RF_QMODE_MLX) {
            rfq_mlx_params1(lo, hi, w->bits, w->sd, &w->ps[r], &w->pb[r], &w->pss[r], &w->pbs[r]);
        } else {
            float emax = 0;
            rfq_opt_group(w->qk, w->x, w->gs, w->bits, w->sd, lo, hi, &w->pss[r], &w->pbs[r], NULL, NULL, &emax);
            w->ps[r] = w->pss[r]; /* codes to the nearest level of the stored grid */
            w->pb[r] = w->pbs[r];
        }
        uint64_t gi = (uint64_t)r * (w->n / (uint64_t)w->gs) + k / (uint64_t)w->gs;
        w->sc[gi] = w->pss[r];
        w->bi[gi] = w->pbs[r];
    }
}

static void sweep_rows(sweep *w)
{
    const uint64_t n = w->n;
    const size_t nr = w->nr;
    const float *c = w->g->c;
    for (uint64_t b0 = 0; b0 < n; b0 += GPTQ_BLOCK) {
        uint64_t b1 = n - b0 < GPTQ_BLOCK ? n : b0 + GPTQ_BLOCK;
        memcpy(w->w0, w->wt + b0 * nr, (size_t)(b1 - b0) * nr * sizeof(float));
        /* the lazy batch: feedback of every earlier column, chunk by chunk (j in increasing order) */
        for (uint64_t j0 = 0; j0 < b0; j0 += FB_JC) {
            size_t nj = (size_t)(b0 - j0 < FB_JC ? b0 - j0 : FB_JC);
            for (uint64_t k = b0; k < b1; k++) w->k.gemv(w->wt + k * nr, c + lo_row(k) + j0, w->dt + j0 * nr, nj, nr);
        }
        for (uint64_t k = b0; k < b1; k++) {
            if (k % (uint64_t)w->gs == 0) group_params(w, k, b0);
            const float *v = w->wt + k * nr, *v0 = w->w0 + (k - b0) * nr;
            float *d = w->dt + k * nr;
            for (size_t r = 0; r < nr; r++) {
                float q = rintf((v[r] - w->pb[r]) / w->ps[r]);
                q = q > 0.0f ? q : 0.0f; /* NaN becomes 0, as MLX's clamp */
                q = q < w->nlev ? q : w->nlev;
                w->q[r * n + k] = (uint8_t)q;
                d[r] = v0[r] - fmaf(w->pss[r], q, w->pbs[r]);
            }
            for (uint64_t k2 = k + 1; k2 < b1; k2++) w->k.gemv(w->wt + k2 * nr, c + lo_row(k2) + k, d, 1, nr);
        }
    }
}

rf_status rf_gptq_quantize(const rf_gptq *g, rf_dtype src, const void *w, uint64_t rows, uint64_t cols, int bits, int gs,
                           rf_qmode grid, rf_dtype sdtype, uint32_t *packed, void *scales, void *biases, rf_err *err)
{
    if (!g) return rf_err_set(err, RF_ERR_INVALID, "gptq: no factor");
    if (cols != g->n)
        return rf_err_set(err, RF_ERR_MISMATCH, "gptq: %llu columns, the Hessian has %llu", (unsigned long long)cols,
                          (unsigned long long)g->n);
    if (!src_ok(src) || !src_ok(sdtype))
        return rf_err_set(err, RF_ERR_INVALID, "gptq: dtypes %s/%s are not F32/BF16/F16", rf_dtype_name(src),
                          rf_dtype_name(sdtype));
    if (!rf_quant_bytes(32, bits, gs, sdtype) || cols % (uint64_t)gs)
        return rf_err_set(err, RF_ERR_INVALID, "gptq: %d bits, group size %d do not fit %llu columns", bits, gs,
                          (unsigned long long)cols);
    if (grid != RF_QMODE_MLX && grid != RF_QMODE_OPT) return rf_err_set(err, RF_ERR_INVALID, "gptq: bad grid %d", (int)grid);
    if (rows && (!w || !packed || !scales || !biases)) return rf_err_set(err, RF_ERR_INVALID, "gptq: NULL argument");
    const uint64_t n = cols, gpr = n / (uint64_t)gs, wpr = n / 32 * (uint64_t)bits, esz = rf_dtype_size(src);
    const size_t R = GPTQ_ROWS;
    sweep s = {.g = g, .qk = rfq_pick(), .k = pick(), .n = n, .bits = bits, .gs = gs, .grid = grid, .sd = sdtype,
               .nlev = (float)((1 << bits) - 1)};
    s.wt = malloc(n * R * sizeof(float));
    s.dt = malloc(n * R * sizeof(float));
    s.w0 = malloc((size_t)GPTQ_BLOCK * R * sizeof(float));
    s.q = malloc(n * R);
    s.x = calloc((size_t)gs + 64, sizeof(float)); /* SIMD kernels may read whole vectors past the group */
    s.ps = malloc(4 * R * sizeof(float));
    s.sc = malloc(2 * gpr * R * sizeof(float));
    s.delta = malloc((size_t)gs * R * sizeof(float));
    float *row = malloc(n * sizeof(float));
    rf_status st = RF_OK;
    if (!s.wt || !s.dt || !s.w0 || !s.q || !s.x || !s.ps || !s.sc || !s.delta || !row)
        st = rf_err_set(err, RF_ERR_NOMEM, "gptq: out of memory (%llu columns)", (unsigned long long)n);
    if (!st) {
        s.pb = s.ps + R;
        s.pss = s.ps + 2 * R;
        s.pbs = s.ps + 3 * R;
        s.bi = s.sc + gpr * R;
    }
    for (uint64_t r0 = 0; r0 < rows && !st; r0 += R) {
        s.nr = (size_t)(rows - r0 < R ? rows - r0 : R);
        for (size_t r = 0; r < s.nr && !st; r++) {
            if ((st = rf_convert_to_f32(src, (const uint8_t *)w + (r0 + r) * n * esz, row, n, err))) break;
            for (uint64_t c = 0; c < n; c++) {
                if (!isfinite(row[c])) {
                    st = rf_err_set(err, RF_ERR_NONFINITE, "non-finite weight at row %llu, column %llu",
                                    (unsigned long long)(r0 + r), (unsigned long long)c);
                    break;
                }
                s.wt[c * s.nr + r] = row[c];
            }
        }
        if (st) break;
        sweep_rows(&s);
        for (size_t r = 0; r < s.nr; r++) {
            rfq_pack(s.q + r * n, n, bits, packed + (r0 + r) * wpr);
            for (uint64_t gi = 0; gi < gpr; gi++) {
                rfq_store(scales, (r0 + r) * gpr + gi, s.sc[r * gpr + gi], sdtype);
                rfq_store(biases, (r0 + r) * gpr + gi, s.bi[r * gpr + gi], sdtype);
            }
        }
    }
    free(s.wt);
    free(s.dt);
    free(s.w0);
    free(s.q);
    free(s.x);
    free(s.ps);
    free(s.sc);
    free(s.delta);
    free(row);
    return st;
}
