/* Engine speed: the batched matmul (f32/bf16/packed) next to OpenBLAS sgemm on the same shapes,
 * decode matrix-vector bandwidth next to memcpy, and prompt/decode tokens per second of the
 * Qwen3 test models in BF16 and MLX 4-bit g64 (written to a temp dir by this program).
 * All ratios are measured side by side in one run; absolute figures are noisy on shared cores.
 * usage: bench_engine [--threads N] [--quick] [--cpu-time] [--only decode|matmul|models|rows]
 *                     [--kinds K,..] [--shape RxC] [--copies N] [--ntok N]
 * --only rows: the fast decode product on each kind of row (4:64 = MLX 4-bit g64, q4_k, ...),
 * reading --copies distinct matrices of --shape in turn (default 8 x 4096x12288: DRAM);
 * --ntok N tokens per product instead of 1 (an MoE expert's share of a prompt batch: 1-30).
 * --cpu-time divides by the process's CPU seconds instead of wall seconds: on a shared machine
 * that compares compute-bound kernels per core without other users' time slices (with 1
 * thread; with more, pool waits count as well). */
#include "engine/engine_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef RF_HAVE_OPENBLAS
/* The two OpenBLAS entry points used, declared here so no cblas header is needed. */
void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda, const float *b,
                 int ldb, float beta, float *c, int ldc);
void openblas_set_num_threads(int n);
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
#endif

static int g_cpu_time; /* --cpu-time: process CPU seconds instead of wall seconds */

static double now(void)
{
    struct timespec ts;
    clock_gettime(g_cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double g_min_time = 0.4;

/* Seconds per call of fn: rounds of at least 20 ms for at least g_min_time in all, the fastest
 * round's mean (on a shared machine the other users only ever add time). */
typedef void (*bench_fn)(void *ctx);
static double time_it(bench_fn fn, void *ctx)
{
    fn(ctx); /* warm up: page in, caches */
    double best = 1e30, t0 = now();
    do {
        int reps = 0;
        double r0 = now(), t;
        do {
            fn(ctx);
            reps++;
            t = now() - r0;
        } while (t < 0.02);
        if (t / reps < best) best = t / reps;
    } while (now() - t0 < g_min_time);
    return best;
}

static uint64_t g_rng = 88172645463325252ull;
static float frand(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0) * 2 - 1);
}

/* An owned weight matrix of a kind: F32, BF16 or packed (bits, gs 64, bf16 scales). */
typedef struct mat {
    rf_wmat w;
    void *data, *scales, *biases;
    float *f32; /* the same values as float (for sgemm) */
} mat;

static int make_mat(mat *m, rf_dtype dt, int bits, uint64_t rows, uint64_t cols)
{
    memset(m, 0, sizeof *m);
    rf_err err;
    m->f32 = malloc(rows * cols * sizeof(float));
    if (!m->f32) return -1;
    for (uint64_t i = 0; i < rows * cols; i++) m->f32[i] = frand() * 0.05f;
    m->w.dtype = dt;
    m->w.rows = rows;
    m->w.cols = cols;
    if (dt == RF_DT_F32) {
        m->w.data = m->f32;
        return 0;
    }
    if (dt == RF_DT_BF16) {
        m->data = malloc(rows * cols * 2);
        if (!m->data || rf_convert_from_f32(RF_DT_BF16, m->f32, m->data, rows * cols, &err)) return -1;
        m->w.data = m->data;
        return 0;
    }
    int gs = 64;
    m->w.bits = bits;
    m->w.gs = gs;
    m->w.sdtype = RF_DT_BF16;
    m->data = malloc(rows * cols * (uint64_t)bits / 8);
    m->scales = malloc(rows * cols / (uint64_t)gs * 2);
    m->biases = malloc(rows * cols / (uint64_t)gs * 2);
    if (!m->data || !m->scales || !m->biases) return -1;
    if (rf_quant_quantize(RF_DT_F32, m->f32, rows, cols, bits, gs, RF_QMODE_MLX, RF_DT_BF16, m->data, m->scales,
                          m->biases, &err)) {
        fprintf(stderr, "quantize: %s\n", err.msg);
        return -1;
    }
    m->w.data = m->data;
    m->w.scales = m->scales;
    m->w.biases = m->biases;
    return 0;
}

static void free_mat(mat *m)
{
    free(m->data);
    free(m->scales);
    free(m->biases);
    free(m->f32);
}

typedef struct mm_ctx {
    const mat *m;
    const float *x;
    float *y;
    int ntok;
    rf_pool *pool;
    int fast;     /* rf_matmul_q8: 8-bit activations */
} mm_ctx;

static void run_rf(void *c)
{
    mm_ctx *k = c;
    if (k->fast) rf_matmul_q8(&k->m->w, k->x, k->ntok, k->y, k->pool);
    else rf_matmul(&k->m->w, k->x, k->ntok, k->y, k->pool);
}

#ifdef RF_HAVE_OPENBLAS
static void run_sgemm(void *c)
{
    mm_ctx *k = c;
    int rows = (int)k->m->w.rows, cols = (int)k->m->w.cols;
    cblas_sgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS, k->ntok, rows, cols, 1.0f, k->x, cols, k->m->f32, cols,
                0.0f, k->y, rows);
}
#endif

static void bench_matmul(rf_pool *pool, int threads, int quick)
{
    static const uint64_t shapes[][2] = {{768, 256}, {256, 768}, {2048, 2048}, {5632, 2048}};
    int nshapes = quick ? 3 : 4, T = 256;
    printf("\n== batched matmul: %d tokens, %d threads, GFLOP/s (2*rows*cols*tokens / time) ==\n", T, threads);
#ifdef RF_HAVE_OPENBLAS
    openblas_set_num_threads(threads);
    printf("%-12s %9s %9s %9s %9s %9s %9s %9s %9s   %s\n", "rows x cols", "sgemm", "f32", "bf16", "q8 g64", "q4 g64",
           "q3 g64", "q4 fast", "q5 fast", "q4 / sgemm");
#else
    printf("(OpenBLAS not found at build time: no sgemm column)\n");
    printf("%-12s %9s %9s %9s %9s %9s %9s %9s\n", "rows x cols", "f32", "bf16", "q8 g64", "q4 g64", "q3 g64", "q4 fast",
           "q5 fast");
#endif
    printf("(fast: 8-bit activations, GOP/s counted the same way)\n");
    for (int s = 0; s < nshapes; s++) {
        uint64_t rows = shapes[s][0], cols = shapes[s][1];
        float *x = malloc(sizeof(float) * cols * (uint64_t)T), *y = malloc(sizeof(float) * rows * (uint64_t)T);
        for (uint64_t i = 0; i < cols * (uint64_t)T; i++) x[i] = frand();
        double flop = 2.0 * (double)rows * (double)cols * T;
        char label[32];
        snprintf(label, sizeof label, "%llux%llu", (unsigned long long)rows, (unsigned long long)cols);
        printf("%-12s", label);
        static const rf_dtype dts[] = {RF_DT_F32, RF_DT_BF16, RF_DT_U32, RF_DT_U32, RF_DT_U32, RF_DT_U32, RF_DT_U32};
        static const int bits[] = {0, 0, 8, 4, 3, 4, 5}, fast[] = {0, 0, 0, 0, 0, 1, 1};
        double gq4 = 0, gsg = 0;
#ifdef RF_HAVE_OPENBLAS
        {
            mat m;
            if (make_mat(&m, RF_DT_F32, 0, rows, cols)) { fprintf(stderr, "out of memory\n"); exit(1); }
            mm_ctx c = {&m, x, y, T, pool};
            gsg = flop / time_it(run_sgemm, &c) * 1e-9;
            printf(" %9.1f", gsg);
            free_mat(&m);
        }
#endif
        for (int k = 0; k < 7; k++) {
            mat m;
            if (make_mat(&m, dts[k], bits[k], rows, cols)) { fprintf(stderr, "out of memory\n"); exit(1); }
            mm_ctx c = {&m, x, y, T, pool, fast[k]};
            double g = flop / time_it(run_rf, &c) * 1e-9;
            if (bits[k] == 4 && !fast[k]) gq4 = g;
            printf(" %9.1f", g);
            fflush(stdout);
            free_mat(&m);
        }
        if (gsg > 0) printf("   %.0f%%", 100 * gq4 / gsg);
        printf("\n");
        free(x);
        free(y);
    }
}

typedef struct cp_ctx { char *dst; const char *src; size_t n; rf_pool *pool; } cp_ctx;
enum { CP_CHUNKS = 64 };
static void cp_task(void *c, uint64_t i, int worker)
{
    (void)worker;
    cp_ctx *k = c;
    size_t part = k->n / CP_CHUNKS;
    memcpy(k->dst + i * part, k->src + i * part, part);
}
/* memcpy split over the same threads as the kernels. */
static void run_memcpy(void *c)
{
    cp_ctx *k = c;
    rf_pool_run(k->pool, CP_CHUNKS, cp_task, k);
}

/* 8192 x 8192: even the 4-bit matrix (32 MiB + scales) is larger than a 32 MiB L3, so the
 * figures are memory-bound reads, not cache hits. */
static void bench_decode(rf_pool *pool, int threads, int quick)
{
    uint64_t rows = quick ? 4096 : 8192, cols = quick ? 4096 : 8192;
    printf("\n== decode matrix-vector (%llux%llu, %d threads): weight bytes read per second ==\n",
           (unsigned long long)rows, (unsigned long long)cols, threads);
    size_t n = 256u << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) { fprintf(stderr, "out of memory\n"); exit(1); }
    memset(a, 1, n);
    memset(b, 2, n);
    cp_ctx cc = {b, a, n, pool};
    double bw = (double)n / time_it(run_memcpy, &cc);
    printf("%-10s %8.2f GB/s (bytes copied per second, %d threads, 256 MiB)\n", "memcpy", bw * 1e-9, threads);
    free(a);
    free(b);
    float *x = malloc(sizeof(float) * cols), *y = malloc(sizeof(float) * rows);
    for (uint64_t i = 0; i < cols; i++) x[i] = frand();
    static const rf_dtype dts[] = {RF_DT_F32, RF_DT_BF16, RF_DT_U32, RF_DT_U32, RF_DT_U32,
                                   RF_DT_U32, RF_DT_U32, RF_DT_U32};
    static const int bits[] = {0, 0, 8, 6, 5, 4, 3, 2};
    static const char *names[] = {"f32", "bf16", "q8 g64", "q6 g64", "q5 g64", "q4 g64", "q3 g64", "q2 g64"};
    for (int k = 0; k < 8; k++) {
        mat m;
        if (make_mat(&m, dts[k], bits[k], rows, cols)) { fprintf(stderr, "out of memory\n"); exit(1); }
        for (int fast = 0; fast <= (dts[k] == RF_DT_U32); fast++) {
            mm_ctx c = {&m, x, y, 1, pool, fast};
            double t = time_it(run_rf, &c), bytes = (double)rf_wmat_bytes(&m.w);
            char label[32];
            snprintf(label, sizeof label, "%s%s", names[k], fast ? " fast" : "");
            printf("%-12s %8.2f GB/s of weights (%6.1f MB, %7.3f ms, %5.1f Gweights/s, %.0f%% of memcpy)\n", label,
                   bytes / t * 1e-9, bytes * 1e-6, t * 1e3, (double)rows * (double)cols / t * 1e-9, 100 * bytes / t / bw);
        }
        free_mat(&m);
    }
    free(x);
    free(y);
}

/* ---------------------------------------------------------------- decode rows as plans mix them */

/* One kind of row: MLX bits:gs (bf16 scales) or a GGUF k-quant (q4_k, q5_k, q6_k). */
static int make_kind(mat *m, const char *kind, uint64_t rows, uint64_t cols)
{
    memset(m, 0, sizeof *m);
    float *f = malloc(rows * cols * sizeof(float));
    if (!f) return -1;
    for (uint64_t i = 0; i < rows * cols; i++) f[i] = frand() * 0.05f;
    rf_err err;
    int bits = 0, gs = 0, rc = -1;
    if (sscanf(kind, "%d:%d", &bits, &gs) == 2) {
        m->w.dtype = RF_DT_U32;
        m->w.rows = rows, m->w.cols = cols, m->w.bits = bits, m->w.gs = gs, m->w.sdtype = RF_DT_BF16;
        m->data = malloc(rows * cols * (uint64_t)bits / 8);
        m->scales = malloc(rows * cols / (uint64_t)gs * 2);
        m->biases = malloc(rows * cols / (uint64_t)gs * 2);
        if (m->data && m->scales && m->biases &&
            !rf_quant_quantize(RF_DT_F32, f, rows, cols, bits, gs, RF_QMODE_MLX, RF_DT_BF16, m->data, m->scales,
                               m->biases, &err))
            rc = 0;
    } else {
        int t = !strcmp(kind, "q4_k") ? RF_GT_Q4_K : !strcmp(kind, "q5_k") ? RF_GT_Q5_K : !strcmp(kind, "q6_k") ? RF_GT_Q6_K : 0;
        if (t) {
            m->w.dtype = RF_DT_U8;
            m->w.gtype = t, m->w.rows = rows, m->w.cols = cols;
            m->data = malloc(rows * rf_gtype_row_bytes(t, cols));
            if (m->data && !rf_gquant_rows(t, f, rows, cols, m->data, &err)) rc = 0;
        } else {
            fprintf(stderr, "bench_engine: unknown kind %s (bits:gs, q4_k, q5_k, q6_k)\n", kind);
        }
    }
    free(f);
    m->w.data = m->data, m->w.scales = m->scales, m->w.biases = m->biases;
    return rc;
}

/* A copy with its own memory (same values): cycling through copies reads DRAM, not L3. */
static int copy_mat(mat *d, const mat *s)
{
    *d = *s;
    uint64_t nd = rf_wmat_bytes(&s->w), ns = s->w.gtype ? 0 : s->w.rows * s->w.cols / (uint64_t)s->w.gs * 2;
    uint64_t ncode = nd - 2 * ns;
    d->data = malloc(ncode);
    d->scales = ns ? malloc(ns) : NULL;
    d->biases = ns ? malloc(ns) : NULL;
    d->f32 = NULL;
    if (!d->data || (ns && (!d->scales || !d->biases))) return -1;
    memcpy(d->data, s->data, ncode);
    if (ns) memcpy(d->scales, s->scales, ns), memcpy(d->biases, s->biases, ns);
    d->w.data = d->data, d->w.scales = d->scales, d->w.biases = d->biases;
    return 0;
}

enum { ROW_COPIES_MAX = 16 };
static int g_copies = 8, g_ntok = 1;
typedef struct rows_ctx { mat *m; int n, next; const float *x; float *y; rf_pool *pool; } rows_ctx;
static void run_rows(void *c)
{
    rows_ctx *k = c;
    rf_matmul_q8(&k->m[k->next].w, k->x, g_ntok, k->y, k->pool);
    k->next = (k->next + 1) % k->n;
}

/* The fast decode product on each kind of row, rows x cols, reading --copies distinct matrices
 * in turn (8 x 4096 x 12288 at 4 bits = 230 MB: DRAM, as in a real model; --copies 1 and a
 * small --shape: the kernel's compute rate from cache). */
static void bench_rows(rf_pool *pool, int threads, const char *kinds, uint64_t rows, uint64_t cols)
{
    printf("\n== decode rows (%llux%llu, %d copies, %d threads, %d token%s, fast product) ==\n", (unsigned long long)rows,
           (unsigned long long)cols, g_copies, threads, g_ntok, g_ntok > 1 ? "s" : "");
    float *x = malloc(sizeof(float) * cols * (uint64_t)g_ntok), *y = malloc(sizeof(float) * rows * (uint64_t)g_ntok);
    for (uint64_t i = 0; i < cols * (uint64_t)g_ntok; i++) x[i] = frand();
    char *list = strdup(kinds), *save = NULL;
    for (char *kind = strtok_r(list, ",", &save); kind; kind = strtok_r(NULL, ",", &save)) {
        mat m[ROW_COPIES_MAX];
        if (make_kind(&m[0], kind, rows, cols)) { fprintf(stderr, "bench_engine: cannot make %s\n", kind); exit(1); }
        if (!rf_matmul_q8_supported(&m[0].w)) { printf("%-10s (no fast kernel on this CPU)\n", kind); free_mat(&m[0]); continue; }
        for (int i = 1; i < g_copies; i++)
            if (copy_mat(&m[i], &m[0])) { fprintf(stderr, "out of memory\n"); exit(1); }
        rows_ctx c = {m, g_copies, 0, x, y, pool};
        double t = time_it(run_rows, &c), bytes = (double)rf_wmat_bytes(&m[0].w);
        printf("%-10s %8.2f GB/s of weights (%6.1f MB, %7.3f ms, %.2f bits/weight, %6.1f GMAC/s)\n", kind,
               bytes / t * 1e-9, bytes * 1e-6, t * 1e3, bytes * 8 / (double)(rows * cols),
               (double)(rows * cols) * g_ntok / t * 1e-9);
        for (int i = 0; i < g_copies; i++) free_mat(&m[i]);
    }
    free(list);
    free(x);
    free(y);
}

/* ---------------------------------------------------------------- whole models */

static int write_mlx_q4(const char *src, const char *dst)
{
    rf_st *st;
    rf_err err;
    if (rf_st_open(src, &st, &err)) { fprintf(stderr, "%s\n", err.msg); return -1; }
    rf_stw *w;
    if (rf_stw_create(dst, NULL, &w, &err)) { fprintf(stderr, "%s\n", err.msg); rf_st_close(st); return -1; }
    int rc = -1;
    uint64_t n = rf_st_count(st);
    /* declare */
    for (uint64_t i = 0; i < n; i++) {
        const rf_tensor *t = rf_st_get(st, i);
        if (t->ndim == 2 && t->shape[1] % 64 == 0) {
            char nm[300];
            size_t bl = strlen(t->name) - strlen(".weight");
            uint64_t sw[2] = {t->shape[0], t->shape[1] / 8}, ss[2] = {t->shape[0], t->shape[1] / 64};
            if (rf_stw_declare(w, t->name, RF_DT_U32, 2, sw, &err)) goto out;
            snprintf(nm, sizeof nm, "%.*s.scales", (int)bl, t->name);
            if (rf_stw_declare(w, nm, RF_DT_BF16, 2, ss, &err)) goto out;
            snprintf(nm, sizeof nm, "%.*s.biases", (int)bl, t->name);
            if (rf_stw_declare(w, nm, RF_DT_BF16, 2, ss, &err)) goto out;
        } else if (rf_stw_declare(w, t->name, t->dtype, t->ndim, t->shape, &err)) {
            goto out;
        }
    }
    for (uint64_t i = 0; i < n; i++) {
        const rf_tensor *t = rf_st_get(st, i);
        if (t->ndim == 2 && t->shape[1] % 64 == 0) {
            uint64_t r = t->shape[0], c = t->shape[1];
            uint32_t *p = malloc(r * c / 2);
            uint16_t *s = malloc(r * c / 64 * 2), *b = malloc(r * c / 64 * 2);
            int bad = !p || !s || !b ||
                      rf_quant_quantize(t->dtype, t->data, r, c, 4, 64, RF_QMODE_MLX, RF_DT_BF16, p, s, b, &err) ||
                      rf_stw_write(w, p, r * c / 2, &err) || rf_stw_write(w, s, r * c / 64 * 2, &err) ||
                      rf_stw_write(w, b, r * c / 64 * 2, &err);
            free(p);
            free(s);
            free(b);
            if (bad) goto out;
        } else if (rf_stw_write(w, t->data, t->nbytes, &err)) {
            goto out;
        }
    }
    if (rf_stw_finish(w, &err)) goto out;
    /* config.json + quantization */
    char *path = malloc(strlen(src) + strlen(dst) + 16);
    sprintf(path, "%s/config.json", src);
    json_error_t je;
    json_t *cfg = json_load_file(path, 0, &je);
    if (!cfg) { free(path); goto out; }
    json_t *q = json_pack("{s:i, s:i, s:s}", "group_size", 64, "bits", 4, "mode", "affine");
    json_object_set(cfg, "quantization", q);
    json_object_set_new(cfg, "quantization_config", q);
    sprintf(path, "%s/config.json", dst);
    rc = json_dump_file(cfg, path, JSON_INDENT(1));
    json_decref(cfg);
    free(path);
out:
    if (rc) fprintf(stderr, "writing %s: %s\n", dst, err.msg);
    rf_stw_free(w);
    rf_st_close(st);
    return rc;
}

static void bench_model(const char *label, const char *dir, int threads, int quick)
{
    rf_engine_opts o = {threads, 512, 256};
    rf_engine *e;
    rf_err err;
    if (rf_engine_open(dir, &o, &e, &err)) { printf("%-28s cannot open: %s\n", label, err.msg); return; }
    int V = rf_engine_vocab(e), P = 256, D = quick ? 32 : 128;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(P + D));
    for (int i = 0; i < P + D; i++) ids[i] = (int32_t)((uint64_t)(i * 7919 + 13) % (uint64_t)V);
    float *logits = malloc(sizeof(float) * (size_t)V * (size_t)P);
    /* prompt: one batch of P tokens with all logits (what perplexity does) */
    int reps = 0;
    double t0 = now(), tp;
    do {
        rf_engine_reset(e);
        rf_engine_forward(e, ids, P, logits, 1, &err);
        reps++;
        tp = now() - t0;
    } while (tp < g_min_time * 2);
    tp /= reps;
    /* decode: D tokens one at a time after the prompt */
    double t1 = now();
    for (int i = 0; i < D; i++) rf_engine_forward(e, ids + P + i, 1, logits, 0, &err);
    double td = (now() - t1) / D;
    uint64_t total, per_tok;
    rf_engine_weight_bytes(e, &total, &per_tok);
    printf("%-28s %9.0f %9.0f %9.1f %8.2f GB/s (%.1f MB per token)\n", label, P / tp, 1 / td, total * 1e-6,
           per_tok / td * 1e-9, per_tok * 1e-6);
    free(ids);
    free(logits);
    rf_engine_free(e);
}

static void bench_models(int threads, int quick)
{
    printf("\n== models (%d threads): prompt = one batch of 256 tokens with all logits; decode after it ==\n", threads);
    printf("%-28s %9s %9s %9s %s\n", "model", "prompt/s", "decode/s", "MB", "decode weight bandwidth");
    static const char *names[] = {"qwen3-dense-mini", "qwen3-moe-mini"};
    char tmpl[] = "/tmp/rfbench-XXXXXX";
    char *root = mkdtemp(tmpl);
    for (int i = 0; i < 2; i++) {
        char src[4096], dst[4200], label[64];
        snprintf(src, sizeof src, "%s/models/%s", RF_SHARED_DIR, names[i]);
        if (access(src, R_OK)) { printf("%-28s not found in %s\n", names[i], RF_SHARED_DIR); continue; }
        snprintf(label, sizeof label, "%s bf16", names[i]);
        bench_model(label, src, threads, quick);
        if (!root) continue;
        snprintf(dst, sizeof dst, "%s/%s", root, names[i]);
        mkdir(dst, 0755);
        if (write_mlx_q4(src, dst) == 0) {
            snprintf(label, sizeof label, "%s q4 g64", names[i]);
            bench_model(label, dst, threads, quick);
        }
        char cmd[4300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dst);
        if (system(cmd)) {}
    }
    if (root) rmdir(root);
}

int main(int argc, char **argv)
{
    int threads = 2, quick = 0;
    const char *only = NULL, *kinds = "4:64,4:32,5:64,5:128,5:32,6:64,6:128,q4_k,q6_k";
    uint64_t rrows = 4096, rcols = 12288;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--cpu-time")) g_cpu_time = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--copies") && i + 1 < argc) {
            g_copies = atoi(argv[++i]);
            if (g_copies < 1 || g_copies > ROW_COPIES_MAX) { fprintf(stderr, "bench_engine: --copies 1..16\n"); return 2; }
        } else if (!strcmp(argv[i], "--ntok") && i + 1 < argc) {
            g_ntok = atoi(argv[++i]);
            if (g_ntok < 1 || g_ntok > 256) { fprintf(stderr, "bench_engine: --ntok 1..256\n"); return 2; }
        } else if (!strcmp(argv[i], "--kinds") && i + 1 < argc) kinds = argv[++i];
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            unsigned long long r, c;
            if (sscanf(argv[++i], "%llux%llu", &r, &c) != 2) { fprintf(stderr, "bench_engine: --shape ROWSxCOLS\n"); return 2; }
            rrows = r, rcols = c;
        } else {
            fprintf(stderr, "usage: bench_engine [--threads N] [--quick] [--cpu-time] [--only decode|matmul|models|rows]\n"
                    "       [--kinds K,..] [--shape RxC] [--copies N] [--ntok N]\n");
            return 2;
        }
    }
    if (quick) g_min_time = 0.15;
    rf_pool *pool;
    rf_err err;
    if (rf_pool_create(threads, &pool, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    unsigned f = rf_cpu_features();
    printf("bench_engine: threads %d, AVX2 %s, FMA %s, F16C %s\n", threads, f & RF_CPU_AVX2 ? "yes" : "no",
           f & RF_CPU_FMA ? "yes" : "no", f & RF_CPU_F16C ? "yes" : "no");
    /* Decode first: OpenBLAS's worker threads keep spinning for a while after sgemm returns. */
    if (!only || !strcmp(only, "decode")) bench_decode(pool, threads, quick);
    if (!only || !strcmp(only, "matmul")) bench_matmul(pool, threads, quick);
    if (!only || !strcmp(only, "models")) bench_models(threads, quick);
    if (only && !strcmp(only, "rows")) bench_rows(pool, threads, kinds, rrows, rcols);
    rf_pool_free(pool);
    return 0;
}
