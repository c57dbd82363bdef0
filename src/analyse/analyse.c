/* The analysis pass: every quantization unit of a model measured at every candidate config,
 * streamed from the mmapped shards in row blocks and run in parallel.
 *
 * Work is a list of tasks, one per (unit, member, row block). Each task writes its sums into its
 * own slot; a unit's totals are formed from the slots in block order once all of them are done,
 * so the result does not depend on the thread count. Tasks run in windows of a few blocks:
 * between windows the caller's thread reports progress, checks for cancellation and saves the
 * partial profile. A unit takes two phases: A (moments, min/max and the quantization errors)
 * and, only for blocks whose extremes reach beyond mean +- 6 sigma of the unit, B (counting
 * those values exactly; sigma is only known once phase A of the whole unit is done).
 *
 * Pages of a tensor are dropped (MADV_DONTNEED) after each block, so resident memory stays at
 * about threads x block size whatever the model's size; the page cache keeps the data for
 * phase B. */
#include "arch/model_internal.h"
#include "calib/calib_internal.h"
#include "plan/plan_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BLOCK (16ull << 20)
#define SUB_BYTES (256u << 10) /* cache-sized piece of a block: stats, then errors, while hot */
#define CONV_N 4096            /* elements converted to float at a time */
#define GATHER_BYTES (SUB_BYTES + (256u << 10)) /* a sub-block of a transformed member, one row at least */
#define MOM_N 1024             /* elements per float partial sum of the moments */
#define WINDOW_MAX 256         /* tasks per window */

/* ------------------------------------------------------------------ options and parsing */

void rf_analyse_opts_default(rf_analyse_opts *o)
{
    memset(o, 0, sizeof *o);
    o->modes = 1u << RF_QMODE_MLX;
    o->configs = RF_PROFILE_ALL_CONFIGS;
    o->block_bytes = DEFAULT_BLOCK;
    o->checkpoint_s = 30;
}

rf_status rf_analyse_parse_shard(const char *text, int *index, int *count, rf_err *err)
{
    const char *slash = text ? strchr(text, '/') : NULL;
    char *end;
    long k = slash ? strtol(text, &end, 10) : 0;
    int ok = slash && end == slash && text[0] >= '0' && text[0] <= '9';
    long n = ok ? strtol(slash + 1, &end, 10) : 0;
    ok = ok && *end == '\0' && slash[1] >= '0' && slash[1] <= '9' && n >= 1 && n <= RF_MAX_SHARDS && k >= 1 && k <= n;
    if (!ok)
        return rf_err_set(err, RF_ERR_INVALID, "bad shard '%s': expected K/N with 1 <= K <= N <= %d (e.g. 3/8)", text ? text : "",
                          RF_MAX_SHARDS);
    *index = (int)k;
    *count = (int)n;
    return RF_OK;
}

rf_status rf_analyse_parse_modes(const char *text, unsigned *modes, rf_err *err)
{
    if (!text) return rf_err_set(err, RF_ERR_INVALID, "no mode given");
    if (!strcmp(text, "mlx")) *modes = 1u << RF_QMODE_MLX;
    else if (!strcmp(text, "opt")) *modes = 1u << RF_QMODE_OPT;
    else if (!strcmp(text, "both")) *modes = 1u << RF_QMODE_MLX | 1u << RF_QMODE_OPT;
    else return rf_err_set(err, RF_ERR_INVALID, "bad mode '%s': expected mlx, opt or both", text);
    return RF_OK;
}

static int parse_small(const char *s, size_t n, int *out)
{
    if (n == 0 || n > 4) return 0;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* One item of a candidate list: "all", "keep", "B", "B/G" or "B:G". */
static rf_status parse_cand_item(const char *s, size_t n, unsigned *mask, rf_err *err)
{
    if (n == 3 && !memcmp(s, "all", 3)) { *mask |= RF_PROFILE_ALL_CONFIGS; return RF_OK; }
    if (n == 4 && !memcmp(s, "keep", 4)) return RF_OK; /* keep is always a choice */
    size_t sep = 0;
    while (sep < n && s[sep] != '/' && s[sep] != ':') sep++;
    int bits, gs = 0, ok = parse_small(s, sep, &bits) && (sep == n || parse_small(s + sep + 1, n - sep - 1, &gs));
    int found = 0;
    for (int c = 0; ok && c < RF_QCFG_N; c++)
        if (rf_cfg_bits(c) == bits && (sep == n || rf_cfg_gs(c) == gs)) { *mask |= 1u << c; found = 1; }
    if (!found)
        return rf_err_set(err, RF_ERR_INVALID, "bad candidate '%.*s': expected all, keep, BITS or BITS/GS with bits in "
                          "{2,3,4,5,6,8} and gs in {32,64,128}", (int)n, s);
    return RF_OK;
}

rf_status rf_analyse_parse_candidates(const char *text, unsigned *configs, rf_err *err)
{
    if (!text || !*text) return rf_err_set(err, RF_ERR_INVALID, "empty candidate list");
    unsigned mask = 0;
    for (const char *p = text;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        rf_status s = parse_cand_item(p, n, &mask, err);
        if (s) return s;
        if (!e) break;
        p = e + 1;
    }
    if (!mask) return rf_err_set(err, RF_ERR_INVALID, "candidate list '%s' has no quantized config (keep is always implied)", text);
    *configs = mask;
    return RF_OK;
}

/* ------------------------------------------------------------------ identity */

/* The last path component of DIR after resolving it ("." names the current directory). */
static int base_name(const char *dir, char *out, size_t cap)
{
    char *real = realpath(dir, NULL);
    const char *d = real ? real : dir;
    size_t n = strlen(d);
    while (n > 1 && d[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && d[b - 1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(n - b), d + b);
    free(real);
    return n > b;
}

int rf_analyse_default_path(const char *model_dir, char *out, size_t cap)
{
    char base[256];
    if (!base_name(model_dir, base, sizeof base) || !strcmp(base, "/")) return 0;
    return snprintf(out, cap, "%s.profile.json", base) < (int)cap;
}

void rf_analyse_identity(const rf_model *m, rf_pmodel *out)
{
    memset(out, 0, sizeof *out);
    const rf_config *c = rf_model_config(m);
    base_name(rf_model_dir(m), out->name, sizeof out->name);
    snprintf(out->architecture, sizeof out->architecture, "%s", c->architecture);
    snprintf(out->model_type, sizeof out->model_type, "%s", c->model_type);
    out->hidden_size = c->hidden_size;
    out->intermediate_size = c->intermediate_size;
    out->num_layers = c->num_layers;
    out->num_heads = c->num_heads;
    out->num_kv_heads = c->num_kv_heads;
    out->head_dim = c->head_dim;
    out->vocab_size = c->vocab_size;
    out->tie_word_embeddings = c->tie_word_embeddings;
    out->num_experts = c->num_experts;
    out->experts_per_tok = c->experts_per_tok;
    out->moe_intermediate_size = c->moe_intermediate_size;
    out->fingerprint = rf_st_fingerprint(rf_model_st(m));
    snprintf(out->ramfit_version, sizeof out->ramfit_version, "%s", RF_VERSION_STRING);
}

static const char *file_base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ------------------------------------------------------------------ state */

typedef struct blk {
    double s1, s2, s3, s4; /* sums of w, w^2, w^3, w^4 */
    float mn, mx;
    uint64_t n_out;        /* |w - mean| > 6 sigma (phase B) */
    double sse[RF_QCFG_N]; /* mlx mode */
    float emax[RF_QCFG_N];
    rf_qsums opt;          /* opt mode: the sums rf_qsums_error turns into errors (exact or estimated) */
    double wssq;           /* activation-weighted: sum of w^2 x E[x_j^2]; GGUF: of the measured rows */
} blk;

typedef struct ustate {
    const rf_unit *u;
    uint64_t rows_m;   /* rows of one member: nelem / cols */
    uint64_t rows_blk; /* rows per block */
    uint64_t nb_m;     /* blocks per member */
    uint64_t nblk;     /* n_members * nb_m */
    uint64_t bytes;    /* input bytes of all members */
    unsigned cfgs;     /* configs measured */
    double rate[RF_QCFG_N]; /* opt mode: sampling rate per config (1: every group) */
    int other_shard;   /* not in the shard being analysed */
    uint64_t gstride;  /* GGUF: every gstride-th row (of all members' rows) is measured; 1: all */
    rf_dtype sdt;      /* scale/bias dtype */
    blk *res;
    uint64_t a_left, b_left;
    double mean, sd;
    int done;
    rf_punit *rec;
    double *colw;      /* activation weights (analyse --stats), n_members x cols; NULL: data-free */
} ustate;

typedef struct task {
    uint64_t unit, blk;
    int phase; /* 0: A, 1: B */
} task;

typedef struct actx {
    const rf_model *m;
    const rf_st *st;
    ustate *us;
    unsigned modes;
    const task *tasks;
    rf_status *tst;
    rf_err *terr;
    float *conv;       /* CONV_N floats per worker */
    uint8_t *gather;   /* GATHER_BYTES per worker: rows of transformed members (views), read out */
    volatile int *cancel;
    rf_dtype f32_as;   /* kept dtype of F32 tensors */
    int gguf;          /* candidates are ggml types (rf_gcand_type) */
} actx;

static int is_quant_src(rf_dtype d) { return d == RF_DT_F32 || d == RF_DT_BF16 || d == RF_DT_F16 || d == RF_DT_F8_E4M3; }

/* Flat element index -> "[i, j, k]" of tensor T. */
static void index_text(const rf_tensor *t, uint64_t flat, char *buf, size_t cap)
{
    uint64_t idx[RF_MAX_DIMS] = {0};
    for (int d = t->ndim - 1; d >= 0; d--) {
        uint64_t n = t->shape[d] ? t->shape[d] : 1;
        idx[d] = flat % n;
        flat /= n;
    }
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", d ? ", " : "", (unsigned long long)idx[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* ------------------------------------------------------------------ moments */

static inline float tree8f(const float l[8])
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

typedef struct mom { double s1, s2, s3, s4; float mn, mx; } mom;

/* Slow path for a piece with a non-finite element or a float overflow: doubles, element by
 * element. Returns the index of the first non-finite element or -1. */
static long moments_exact(const float *x, size_t n, mom *m)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return (long)i;
        double v = x[i], v2 = v * v;
        m->s1 += v, m->s2 += v2, m->s3 += v2 * v, m->s4 += v2 * v2;
        m->mn = x[i] < m->mn ? x[i] : m->mn;
        m->mx = x[i] > m->mx ? x[i] : m->mx;
    }
    return -1;
}

/* Moments of n <= MOM_N elements: 8 float lanes in a fixed order, then double. The body is
 * compiled twice (plain and AVX2); without FMA contraction both give the same bits. */
static inline __attribute__((always_inline)) long moments_body(const float *x, size_t n, mom *m)
{
    float l1[8] = {0}, l2[8] = {0}, l3[8] = {0}, l4[8] = {0}, mn[8], mx[8];
    for (int j = 0; j < 8; j++) mn[j] = INFINITY, mx[j] = -INFINITY;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            float v = x[i + j], v2 = v * v;
            l1[j] += v, l2[j] += v2, l3[j] += v2 * v, l4[j] += v2 * v2;
            mn[j] = v < mn[j] ? v : mn[j];
            mx[j] = v > mx[j] ? v : mx[j];
        }
    for (size_t j = 0; i + j < n; j++) {
        float v = x[i + j], v2 = v * v;
        l1[j] += v, l2[j] += v2, l3[j] += v2 * v, l4[j] += v2 * v2;
        mn[j] = v < mn[j] ? v : mn[j];
        mx[j] = v > mx[j] ? v : mx[j];
    }
    float t1 = tree8f(l1), t2 = tree8f(l2), t3 = tree8f(l3), t4 = tree8f(l4);
    if (!isfinite(t1) || !isfinite(t2) || !isfinite(t3) || !isfinite(t4)) return moments_exact(x, n, m);
    m->s1 += t1, m->s2 += t2, m->s3 += t3, m->s4 += t4;
    for (int j = 0; j < 8; j++) {
        m->mn = mn[j] < m->mn ? mn[j] : m->mn;
        m->mx = mx[j] > m->mx ? mx[j] : m->mx;
    }
    return -1;
}

/* Elements outside [lo, hi] (float bounds: see outside_bounds). */
static inline __attribute__((always_inline)) uint64_t outside_body(const float *x, size_t n, float lo, float hi)
{
    uint32_t c[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) c[j] += (x[i + j] < lo) | (x[i + j] > hi);
    uint64_t t = 0;
    for (; i < n; i++) t += (x[i] < lo) | (x[i] > hi);
    for (int j = 0; j < 8; j++) t += c[j];
    return t;
}

static long moments_ref(const float *x, size_t n, mom *m) { return moments_body(x, n, m); }
static uint64_t outside_ref(const float *x, size_t n, float lo, float hi) { return outside_body(x, n, lo, hi); }
#if RF_X86
RF_TARGET_AVX2 static long moments_avx2(const float *x, size_t n, mom *m) { return moments_body(x, n, m); }
RF_TARGET_AVX2 static uint64_t outside_avx2(const float *x, size_t n, float lo, float hi) { return outside_body(x, n, lo, hi); }
#endif

typedef struct kern {
    long (*moments)(const float *x, size_t n, mom *m);
    uint64_t (*outside)(const float *x, size_t n, float lo, float hi);
} kern;

static kern pick_kernels(void)
{
#if RF_X86
    if (rf_cpu_features() & RF_CPU_AVX2) return (kern){moments_avx2, outside_avx2};
#endif
    return (kern){moments_ref, outside_ref};
}

/* Float bounds with the same answer as the double test x < lo || x > hi for every float x:
 * the smallest float >= lo and the largest float <= hi. */
static void outside_bounds(double lo, double hi, float *flo, float *fhi)
{
    float a = (float)lo, b = (float)hi;
    if ((double)a < lo) a = nextafterf(a, INFINITY);
    if ((double)b > hi) b = nextafterf(b, -INFINITY);
    *flo = a;
    *fhi = b;
}

/* ------------------------------------------------------------------ tasks */

/* Rows that blocks and their pieces are a multiple of: the sampled opt error's neighbourhoods
 * (rf_quant_piece_rows) must not depend on where a member is cut. */
static uint64_t piece_rows(unsigned modes, uint64_t cols) { return modes >> RF_QMODE_OPT & 1 ? rf_quant_piece_rows(cols) : 1; }

/* The member view of block B and its rows. */
static const rf_mview *member(const actx *c, const ustate *s, uint64_t b, uint64_t *row0, uint64_t *nrows)
{
    uint64_t k = b / s->nb_m, r = b % s->nb_m;
    *row0 = r * s->rows_blk;
    *nrows = s->rows_m - *row0 < s->rows_blk ? s->rows_m - *row0 : s->rows_blk;
    return &rf_model_unit_views(c->m, (uint64_t)rf_model_unit_index(c->m, s->u))[k];
}

/* Rows [r0, r0+nr) of member V: where they lie in the mapped file, or read out into BUF (the
 * view's exact dtype) for slices, transposes and FP8. */
static rf_status member_rows(const rf_mview *v, uint64_t r0, uint64_t nr, void *buf, rf_dtype *dt, const void **p,
                             rf_err *err)
{
    *dt = rf_view_dtype(v);
    if ((*p = rf_view_direct(v, r0))) return RF_OK;
    *p = buf;
    return rf_view_read(v, r0, nr, *dt, buf, err);
}

static rf_status nonfinite_err(const rf_mview *v, uint64_t flat, float v0, rf_err *err)
{
    const rf_tensor *t = v->t;
    uint64_t r = flat / v->cols, c = flat % v->cols;
    if (rf_view_direct(v, 0)) {
        char idx[160];
        index_text(t, (v->r0 + r) * v->scols + c, idx, sizeof idx);
        return rf_err_set(err, RF_ERR_NONFINITE, "%s: tensor %s: %s weight at index %s (element %llu)", file_base(t->file),
                          t->name, isnan(v0) ? "NaN" : "infinite", idx, (unsigned long long)((v->r0 + r) * v->scols + c));
    }
    return rf_err_set(err, RF_ERR_NONFINITE, "%s: tensor %s: %s weight at row %llu, column %llu of its %llu x %llu member "
                      "matrix", file_base(t->file), t->name, isnan(v0) ? "NaN" : "infinite", (unsigned long long)r,
                      (unsigned long long)c, (unsigned long long)v->rows, (unsigned long long)v->cols);
}

/* Convert elements [0, n) of BASE (dtype DT; flat index e0 + i in the member) piece by piece and run FN. */
typedef rf_status (*piece_fn)(void *u, const float *x, size_t n, uint64_t e0, rf_err *err);
static rf_status for_pieces(rf_dtype dt, const void *base, uint64_t e0, uint64_t n, float *buf, piece_fn fn, void *u,
                            rf_err *err)
{
    uint64_t esz = rf_dtype_size(dt);
    for (uint64_t o = 0; o < n; o += CONV_N) {
        size_t len = (size_t)(n - o < CONV_N ? n - o : CONV_N);
        rf_status s = rf_convert_to_f32(dt, (const char *)base + o * esz, buf, len, err);
        if (!s) s = fn(u, buf, len, e0 + o, err);
        if (s) return s;
    }
    return RF_OK;
}

typedef struct stat_job { const rf_mview *v; mom m; kern k; } stat_job;

static rf_status stat_piece(void *u, const float *x, size_t n, uint64_t e0, rf_err *err)
{
    stat_job *j = u;
    for (size_t o = 0; o < n; o += MOM_N) {
        size_t len = n - o < MOM_N ? n - o : MOM_N;
        long bad = j->k.moments(x + o, len, &j->m);
        if (bad >= 0) return nonfinite_err(j->v, e0 + o + (uint64_t)bad, x[o + (size_t)bad], err);
    }
    return RF_OK;
}

typedef struct out_job { float lo, hi; uint64_t n; kern k; } out_job;

static rf_status out_piece(void *u, const float *x, size_t n, uint64_t e0, rf_err *err)
{
    out_job *j = u;
    j->n += j->k.outside(x, n, j->lo, j->hi);
    return RF_OK;
}

/* GGUF candidates: the rows of W (NR rows from row R0 of member K) that the unit's sample takes
 * (every gstride-th of all members' rows, from the middle of the first stride: evenly spaced, so
 * heads, experts and halves of a matrix are all represented) are encoded with ggml's encoders and
 * decoded; their squared error goes to B's mlx sums, their sum of squares to B's wssq. The unit's
 * error is then sse x ssq / (ssq of the measured rows): exact when every row is measured. */
static rf_status gguf_errors(const ustate *s, rf_dtype dt, const void *w, uint64_t k, uint64_t r0, uint64_t nr, blk *b,
                             rf_err *err)
{
    const uint64_t cols = s->u->cols, g0 = k * s->rows_m + r0, st = s->gstride, off = st / 2;
    uint64_t first = g0 % st <= off ? g0 - g0 % st + off : g0 - g0 % st + st + off;
    if (first >= g0 + nr) return RF_OK;
    size_t qmax = 0;
    for (int ci = 0; ci < RF_GCAND_N; ci++)
        if (s->cfgs >> ci & 1) {
            size_t rb = (size_t)rf_gtype_row_bytes(rf_gcand_type(ci), cols);
            qmax = rb > qmax ? rb : qmax;
        }
    float *x = malloc(sizeof(float) * (size_t)cols * 2 + qmax);
    if (!x) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    float *y = x + cols;
    void *q = y + cols;
    rf_status r = RF_OK;
    const uint64_t esz = rf_dtype_size(dt);
    for (uint64_t g = first; g < g0 + nr && !r; g += st) {
        r = rf_convert_to_f32(dt, (const uint8_t *)w + (g - g0) * cols * esz, x, cols, err);
        double ss = 0;
        for (uint64_t j = 0; j < cols && !r; j++) ss += (double)x[j] * x[j];
        b->wssq += ss;
        for (int ci = 0; ci < RF_GCAND_N && !r; ci++) {
            if (!(s->cfgs >> ci & 1)) continue;
            int t = rf_gcand_type(ci);
            r = rf_gquant_rows(t, x, 1, cols, q, err);
            if (!r) r = rf_gdequant_row(t, q, cols, y, err);
            if (r) break;
            double e = 0;
            float em = b->emax[ci];
            for (uint64_t j = 0; j < cols; j++) {
                float d = x[j] - y[j];
                e += (double)d * d;
                em = fabsf(d) > em ? fabsf(d) : em;
            }
            b->sse[ci] += e;
            b->emax[ci] = em;
        }
    }
    free(x);
    return r;
}

/* Errors of NR rows at W (dtype DT; rows R0.. of member K) for every measured config and mode,
 * added to B; weighted by COLW per input column when given (src/calib/weighted.c: every group is
 * measured then, the opt errors too, so they go into B's opt sums as exact ones). */
static rf_status sub_errors(const actx *c, const ustate *s, rf_dtype dt, const void *w, uint64_t k, uint64_t r0, uint64_t nr,
                            const double *colw, blk *b, rf_err *err)
{
    const uint64_t cols = s->u->cols;
    if (colw) {
        rf_qerr q[RF_QCFG_N];
        double wssq = 0;
        for (int mo = 0; mo < 2; mo++) {
            if (!(c->modes >> mo & 1)) continue;
            rf_status st = calib_weighted_errors(dt, w, nr, cols, s->cfgs, (rf_qmode)mo, s->sdt, colw, q, &wssq, err);
            if (st) return st;
            unsigned gsets = 0;
            for (int ci = 0; ci < RF_QCFG_N; ci++) {
                if (!(s->cfgs >> ci & 1)) continue;
                float e = (float)q[ci].max_abs;
                if (mo == RF_QMODE_MLX) {
                    b->sse[ci] += q[ci].sse;
                    b->emax[ci] = e > b->emax[ci] ? e : b->emax[ci];
                } else {
                    const uint64_t ng = nr * cols / (uint64_t)rf_cfg_gs(ci);
                    b->opt.sse[ci] += q[ci].sse;
                    b->opt.sampled[ci] += ng;
                    b->opt.emax[ci] = e > b->opt.emax[ci] ? e : b->opt.emax[ci];
                    if (!(gsets >> (ci % RF_QGS_N) & 1)) b->opt.groups[ci % RF_QGS_N] += ng;
                    gsets |= 1u << (ci % RF_QGS_N);
                }
            }
        }
        b->wssq += wssq; /* the same for every mode (set, not added, by each call) */
        return RF_OK;
    }
    if (c->gguf) return gguf_errors(s, dt, w, k, r0, nr, b, err);
    (void)k, (void)r0;
    if (c->modes >> RF_QMODE_OPT & 1) {
        rf_qsample sp = {.member = k, .member_rows = s->rows_m, .row0 = r0};
        memcpy(sp.rate, s->rate, sizeof sp.rate);
        rf_qsums q;
        rf_status st = rf_quant_error_sample(dt, w, nr, cols, s->cfgs, s->sdt, &sp, &q, err);
        if (st) return st;
        rf_qsums_add(&b->opt, &q);
    }
    if (!(c->modes >> RF_QMODE_MLX & 1)) return RF_OK;
    const int fused = __builtin_popcount(s->cfgs) > 2;
    rf_qerr q[RF_QCFG_N];
    if (fused) {
        rf_status st = rf_quant_error_all(dt, w, nr, cols, RF_QMODE_MLX, s->sdt, q, err);
        if (st) return st;
    }
    for (int ci = 0; ci < RF_QCFG_N; ci++) {
        if (!(s->cfgs >> ci & 1)) continue;
        if (!fused) {
            rf_status st = rf_quant_error(dt, w, nr, cols, rf_cfg_bits(ci), rf_cfg_gs(ci), RF_QMODE_MLX, s->sdt, &q[ci], err);
            if (st) return st;
        }
        b->sse[ci] += q[ci].sse;
        float e = (float)q[ci].max_abs;
        b->emax[ci] = e > b->emax[ci] ? e : b->emax[ci];
    }
    return RF_OK;
}

static rf_status run_phase_a(const actx *c, const ustate *s, uint64_t bi, float *conv, uint8_t *gather, rf_err *err)
{
    uint64_t row0, nrows;
    const rf_mview *v = member(c, s, bi, &row0, &nrows);
    blk *b = &s->res[bi];
    memset(b, 0, sizeof *b);
    const uint64_t cols = s->u->cols, esz = rf_dtype_size(rf_view_dtype(v)), pr = piece_rows(c->modes, cols);
    uint64_t sub = SUB_BYTES / (cols * esz) / pr * pr;
    sub = sub < pr ? pr : sub;
    stat_job sj = {v, {0, 0, 0, 0, INFINITY, -INFINITY}, pick_kernels()};
    for (uint64_t r = row0; r < row0 + nrows; r += sub) {
        uint64_t nr = row0 + nrows - r < sub ? row0 + nrows - r : sub;
        rf_dtype dt;
        const void *w;
        rf_status st = member_rows(v, r, nr, gather, &dt, &w, err);
        if (!st) st = for_pieces(dt, w, r * cols, nr * cols, conv, stat_piece, &sj, err);
        if (!st && s->cfgs)
            st = sub_errors(c, s, dt, w, bi / s->nb_m, r, nr, s->colw ? s->colw + bi / s->nb_m * cols : NULL, b, err);
        if (st) {
            if (st != RF_ERR_NONFINITE) rf_err_prefix(err, "%s: tensor %s: ", file_base(v->t->file), v->t->name);
            return st;
        }
        if (c->cancel && *c->cancel) return rf_err_set(err, RF_ERR_INTERRUPTED, "interrupted");
    }
    b->s1 = sj.m.s1, b->s2 = sj.m.s2, b->s3 = sj.m.s3, b->s4 = sj.m.s4;
    b->mn = sj.m.mn, b->mx = sj.m.mx;
    return RF_OK;
}

static rf_status run_phase_b(const actx *c, const ustate *s, uint64_t bi, float *conv, uint8_t *gather, rf_err *err)
{
    uint64_t row0, nrows;
    const rf_mview *v = member(c, s, bi, &row0, &nrows);
    out_job oj = {0, 0, 0, pick_kernels()};
    outside_bounds(s->mean - 6 * s->sd, s->mean + 6 * s->sd, &oj.lo, &oj.hi);
    const uint64_t cols = s->u->cols, esz = rf_dtype_size(rf_view_dtype(v));
    uint64_t sub = SUB_BYTES / (cols * esz);
    sub = sub < 1 ? 1 : sub;
    rf_status st = RF_OK;
    for (uint64_t r = row0; r < row0 + nrows && !st; r += sub) {
        uint64_t nr = row0 + nrows - r < sub ? row0 + nrows - r : sub;
        rf_dtype dt;
        const void *w;
        st = member_rows(v, r, nr, gather, &dt, &w, err);
        if (!st) st = for_pieces(dt, w, r * cols, nr * cols, conv, out_piece, &oj, err);
    }
    s->res[bi].n_out = oj.n;
    return st;
}

/* Unmap tensor TI's pages, and those of the tensors next to it within FAULT_AROUND bytes: a
 * page fault maps the cached pages around it too (the kernel's fault-around, 64 KiB), which
 * would leave edges of already finished neighbours resident and make RSS grow with the
 * number of tensors. */
#define FAULT_AROUND (128u << 10)
static void drop_pages(const actx *c, uint64_t ti)
{
    rf_st_advise_dontneed(c->st, rf_st_get(c->st, ti));
    uint64_t n = rf_st_count(c->st), span = 0;
    for (uint64_t j = ti; j-- > 0 && span < FAULT_AROUND;) {
        const rf_tensor *t = rf_st_get(c->st, j);
        rf_st_advise_dontneed(c->st, t);
        span += t->nbytes;
    }
    span = 0;
    for (uint64_t j = ti + 1; j < n && span < FAULT_AROUND; j++) {
        const rf_tensor *t = rf_st_get(c->st, j);
        rf_st_advise_dontneed(c->st, t);
        span += t->nbytes;
    }
}

static void run_task(void *ctx, uint64_t i, int worker)
{
    actx *c = ctx;
    const task *tk = &c->tasks[i];
    ustate *s = &c->us[tk->unit];
    rf_err *err = &c->terr[i];
    float *conv = c->conv + (size_t)worker * CONV_N;
    uint8_t *gather = c->gather + (size_t)worker * GATHER_BYTES;
    if (c->cancel && *c->cancel) {
        c->tst[i] = rf_err_set(err, RF_ERR_INTERRUPTED, "interrupted");
        return;
    }
    c->tst[i] = tk->phase ? run_phase_b(c, s, tk->blk, conv, gather, err) : run_phase_a(c, s, tk->blk, conv, gather, err);
    drop_pages(c, (uint64_t)s->u->members[tk->blk / s->nb_m]);
}

/* ------------------------------------------------------------------ units */

static rf_status check_unit_dtype(const rf_model *m, const rf_unit *u, rf_err *err)
{
    const rf_tensor *t = rf_model_tinfo(m, (uint64_t)u->members[0])->t;
    if (is_quant_src(t->dtype)) return RF_OK;
    if (t->dtype == RF_DT_U32)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s: dtype U32 (an MLX-quantized checkpoint?): analyse the "
                          "original F32/BF16/F16 checkpoint", file_base(t->file), t->name);
    return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s: dtype %s is not supported for a %s weight (expected F32, "
                      "BF16 or F16)", file_base(t->file), t->name, rf_dtype_name(t->dtype), rf_role_name(u->role));
}

static rf_status setup_unit(const rf_model *m, const rf_analyse_opts *o, const rf_unit *u, ustate *s, rf_err *err)
{
    memset(s, 0, sizeof *s);
    s->u = u;
    rf_status st = check_unit_dtype(m, u, err);
    if (st) return st;
    const rf_mview *v = rf_model_unit_views(m, (uint64_t)rf_model_unit_index(m, u));
    uint64_t esz = rf_dtype_size(rf_view_dtype(v));
    if (u->cols * esz > GATHER_BYTES - SUB_BYTES && u->transformed)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "unit %s: rows of %llu columns are too long to read out", u->name,
                          (unsigned long long)u->cols);
    s->rows_m = u->rows;
    uint64_t row_bytes = u->cols * esz;
    const uint64_t pr = piece_rows(o->modes, u->cols);
    uint64_t rb = o->block_bytes / (row_bytes ? row_bytes : 1) / pr * pr;
    s->rows_blk = rb < pr ? pr : rb;
    s->nb_m = (s->rows_m + s->rows_blk - 1) / s->rows_blk;
    s->nblk = s->nb_m * (uint64_t)u->n_members;
    s->bytes = u->nparams * rf_dtype_size(u->dtype);
    /* scales/biases as the quantize command writes them: F16 for F16 weights, BF16 for the others,
     * except F32 weights, whose scales are in f32_as (BF16 by default; --dtype f32 keeps them F32,
     * as mlx-lm does for a float32 checkpoint) */
    s->sdt = u->dtype == RF_DT_F16                            ? RF_DT_F16
             : u->dtype == RF_DT_F32 || u->dtype == RF_DT_F64 ? rf_quantize_out_dtype(u->dtype, o->f32_as)
                                                               : RF_DT_BF16;
    if (o->gguf) {
        /* routers stay F32 (llama-quantize never quantizes them) */
        if (u->quantizable && u->role != RF_ROLE_ROUTER) s->cfgs = rf_gcand_mask(u->cols);
        const uint64_t want = o->gguf_sample ? o->gguf_sample : RF_ANALYSE_GGUF_SAMPLE, all = u->nparams / u->cols;
        const uint64_t rows = want == RF_ANALYSE_EXACT ? all : (want + u->cols - 1) / u->cols;
        s->gstride = all > 2 * rows ? all / rows : 1;
        return RF_OK;
    }
    for (int c = 0; c < RF_QCFG_N && u->quantizable; c++)
        if ((o->configs >> c & 1) && u->cols % (uint64_t)rf_cfg_gs(c) == 0) s->cfgs |= 1u << c;
    /* 8-bit errors vary most from group to group (the codes resolve the weights' own BF16 grid):
     * four times the sample halves their estimate's spread */
    const uint64_t target = o->opt_sample ? o->opt_sample : RF_ANALYSE_OPT_SAMPLE;
    for (int c = 0; c < RF_QCFG_N; c++)
        s->rate[c] = rf_quant_sample_rate(u->nparams / (uint64_t)rf_cfg_gs(c), rf_cfg_bits(c) == 8 && target < UINT64_MAX / 4
                                                                                   ? 4 * target : target);
    return RF_OK;
}

/* A GGUF unit's candidates from its block sums (in block order); takes P. */
static rf_status finish_gguf(const actx *c, ustate *s, rf_punit *p, rf_err *err)
{
    const rf_unit *u = s->u;
    double mssq = 0; /* of the measured rows */
    for (uint64_t b = 0; b < s->nblk; b++) mssq += s->res[b].wssq;
    /* ratio estimate: the sample's error per unit of energy, times the unit's energy */
    const double scale = s->gstride == 1 ? 1 : mssq > 0 ? p->ssq / mssq : 0;
    for (int ci = 0; ci < RF_GCAND_N; ci++) {
        if (!(s->cfgs >> ci & 1)) continue;
        double sse = 0;
        float e = 0;
        for (uint64_t b = 0; b < s->nblk; b++) {
            sse += s->res[b].sse[ci];
            e = s->res[b].emax[ci] > e ? s->res[b].emax[ci] : e;
        }
        if (s->gstride > 1) sse = mssq > 0 ? sse * scale : sse * (double)s->gstride;
        rf_qerr q = {sse, p->ssq, e};
        int t = rf_gcand_type(ci);
        if (!isfinite(sse)) {
            free(p);
            return rf_err_set(err, RF_ERR_NONFINITE, "unit %s: the %s quantization error overflows", u->name, rf_gtype_name(t));
        }
        rf_status st = rf_punit_add_gcand(p, t, rf_gguf_tensor_bytes(t, (uint64_t)p->n_members, u->rows, u->cols), &q, err);
        if (st) { free(p); return st; }
        if (s->gstride > 1) p->estimated |= 1u << ci;
    }
    s->rec = p;
    s->done = 1;
    free(s->res);
    s->res = NULL;
    return RF_OK;
}

/* The unit's record from its block sums (in block order). */
static rf_status finish_unit(const actx *c, ustate *s, rf_err *err)
{
    const rf_unit *u = s->u;
    const rf_config *cfg = rf_model_config(c->m);
    rf_punit *p = malloc(sizeof *p);
    if (!p) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_punit_init(p, u->name, u->role, u->layer, cfg->num_layers, u->rows, u->cols, u->nparams,
                  c->gguf && u->role == RF_ROLE_ROUTER ? RF_DT_F32 : rf_quantize_out_dtype(u->dtype, c->f32_as));
    p->n_members = (int)(u->nparams / (u->rows * u->cols));
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0, amax = 0;
    uint64_t nout = 0;
    for (uint64_t b = 0; b < s->nblk; b++) {
        const blk *r = &s->res[b];
        s1 += r->s1, s2 += r->s2, s3 += r->s3, s4 += r->s4;
        double a = fmax(fabs((double)r->mn), fabs((double)r->mx));
        amax = a > amax ? a : amax;
        nout += r->n_out;
    }
    double n = (double)u->nparams, mu = s1 / n, e2 = s2 / n, e3 = s3 / n, e4 = s4 / n;
    double var = e2 - mu * mu;
    var = var > 0 ? var : 0;
    double m4 = e4 - 4 * mu * e3 + 6 * mu * mu * e2 - 3 * mu * mu * mu * mu;
    if (s->colw) { /* activation-weighted: the denominator of D is the output's energy */
        s2 = 0;
        for (uint64_t b = 0; b < s->nblk; b++) s2 += s->res[b].wssq;
    }

    p->ssq = s2;
    p->stats.mean = mu;
    p->stats.rms = sqrt(e2);
    p->stats.absmax = amax;
    p->stats.kurtosis = var > 0 && m4 > 0 ? m4 / (var * var) - 3 : 0;
    p->stats.frac_6sigma = (double)nout / n;
    if (c->gguf) return finish_gguf(c, s, p, err);
    rf_qsums opt;
    memset(&opt, 0, sizeof opt);
    for (uint64_t b = 0; b < s->nblk; b++) rf_qsums_add(&opt, &s->res[b].opt);
    for (int ci = 0; ci < RF_QCFG_N; ci++) {
        if (!(s->cfgs >> ci & 1)) continue;
        int bits = rf_cfg_bits(ci), gs = rf_cfg_gs(ci);
        uint64_t bytes = 0;
        for (int k = 0; k < u->n_members; k++) bytes += rf_quant_bytes(u->rows * u->cols, bits, gs, s->sdt);
        rf_qerr q[2];
        for (int mo = 0; mo < 2; mo++) {
            double sse = 0, em = 0;
            if (mo == RF_QMODE_MLX) {
                float e = 0;
                for (uint64_t b = 0; b < s->nblk; b++) {
                    sse += s->res[b].sse[ci];
                    e = s->res[b].emax[ci] > e ? s->res[b].emax[ci] : e;
                }
                em = e;
            } else if (c->modes >> mo & 1) {
                int est;
                rf_qsums_error(&opt, ci, &sse, &em, &est);
                if (est) p->estimated |= 1u << ci;
            }
            q[mo] = (rf_qerr){sse, s2, em};
            if ((c->modes >> mo & 1) && !(isfinite(sse) && isfinite(q[mo].max_abs))) {
                free(p);
                return rf_err_set(err, RF_ERR_NONFINITE, "%s: unit %s: the %d-bit gs %d quantization error overflows "
                                  "(weights too large for %s scales%s)",
                                  file_base(rf_model_tinfo(c->m, (uint64_t)u->members[0])->t->file), u->name, bits, gs,
                                  rf_dtype_name(s->sdt), s->sdt == RF_DT_F16 ? ", largest 65504: use --dtype bf16 or f32" : "");
            }
        }
        rf_status st = rf_punit_add_cand(p, bits, gs, bytes, (c->modes & 1) ? &q[0] : NULL, (c->modes & 2) ? &q[1] : NULL,
                                         err);
        if (st) { free(p); return st; }
    }
    s->rec = p;
    s->done = 1;
    free(s->res);
    s->res = NULL;
    free(s->colw);
    s->colw = NULL;
    return RF_OK;
}

/* Phase A of unit S is complete: its mean and sigma; queue phase B for the blocks that need it. */
static rf_status after_phase_a(const actx *c, ustate *s, task *fifo, uint64_t *nfifo, rf_err *err)
{
    double s1 = 0, s2 = 0, n = (double)s->u->nparams;
    for (uint64_t b = 0; b < s->nblk; b++) s1 += s->res[b].s1, s2 += s->res[b].s2;
    s->mean = s1 / n;
    double var = s2 / n - s->mean * s->mean;
    s->sd = var > 0 ? sqrt(var) : 0;
    double lo = s->mean - 6 * s->sd, hi = s->mean + 6 * s->sd;
    for (uint64_t b = 0; b < s->nblk && s->sd > 0; b++)
        if ((double)s->res[b].mn < lo || (double)s->res[b].mx > hi) {
            fifo[(*nfifo)++] = (task){(uint64_t)(s - c->us), b, 1};
            s->b_left++;
        }
    return s->b_left ? RF_OK : finish_unit(c, s, err);
}

/* ------------------------------------------------------------------ partial profiles */

typedef struct kept_chk { rf_mview v; rf_dtype out; } kept_chk;

static rf_status finite_piece(void *u, const float *x, size_t n, uint64_t e0, rf_err *err)
{
    const kept_chk *k = u;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return nonfinite_err(&k->v, e0 + i, x[i], err);
        if (k->out == RF_DT_F16 && fabsf(x[i]) >= 65520.0f) { /* rounds to inf in float16 */
            char idx[160];
            index_text(k->v.t, e0 + i, idx, sizeof idx);
            return rf_err_set(err, RF_ERR_NONFINITE, "%s: tensor %s: value %g at index %s does not fit F16 (largest "
                              "65504): use --dtype bf16 or f32", file_base(k->v.t->file), k->v.t->name, (double)x[i], idx);
        }
    }
    return RF_OK;
}

/* Tensors that are kept (norms, biases) reach the output as they are: a NaN or Inf there breaks
 * the model as surely as one in a quantized weight, so it is refused the same way, and so is a
 * value the output dtype OUT cannot hold (F32 written as F16). */
static rf_status check_kept_finite(const rf_tensor *t, rf_dtype out, rf_err *err)
{
    if (t->dtype != RF_DT_F32 && t->dtype != RF_DT_F16 && t->dtype != RF_DT_BF16 && t->dtype != RF_DT_F64) return RF_OK;
    float buf[CONV_N];
    kept_chk k = {{.t = t, .srows = 1, .scols = t->nelem, .rows = 1, .cols = t->nelem}, out};
    return for_pieces(t->dtype, t->data, 0, t->nelem, buf, finite_piece, &k, err);
}

/* The units of shard K of N (rf_analyse_opts.shard_*): units in catalogue order, each in the part
 * that holds the middle of its bytes, so that parts are contiguous and about equal in bytes. FIRST
 * gets the number of (non-empty) units before the part, TOTAL the number in all. */
static void select_shard(ustate *us, uint64_t nunits, int k, int n, uint64_t *first, uint64_t *total)
{
    unsigned __int128 all = 0, before = 0;
    *first = *total = 0;
    for (uint64_t u = 0; u < nunits; u++)
        if (us[u].nblk) all += us[u].bytes;
    for (uint64_t u = 0; u < nunits; u++) {
        if (!us[u].nblk) continue;
        int part = all ? (int)((2 * before + us[u].bytes) * (unsigned)n / (2 * all)) : 0;
        before += us[u].bytes;
        if (part < k - 1) (*first)++;
        (*total)++;
        us[u].other_shard = part != k - 1;
    }
}

static uint64_t opt_sample_of(const rf_analyse_opts *o)
{
    if (!(o->modes >> RF_QMODE_OPT & 1) || o->opt_sample == RF_ANALYSE_EXACT) return 0;
    return o->opt_sample ? o->opt_sample : RF_ANALYSE_OPT_SAMPLE;
}

static uint64_t gguf_sample_of(const rf_analyse_opts *o)
{
    if (!o->gguf || o->gguf_sample == RF_ANALYSE_EXACT) return 0;
    return o->gguf_sample ? o->gguf_sample : RF_ANALYSE_GGUF_SAMPLE;
}

/* GGUF profile P of M: the file's fixed part is the size of the file with every unit kept less
 * the kept units and other tensors that P lists (header, metadata, tokenizer, tensor infos, a
 * rope_freqs tensor, alignment padding of kept tensors). */
static rf_status gguf_fixed(const rf_model *m, rf_profile *p, rf_err *err)
{
    const uint64_t nu = rf_model_unit_count(m);
    int *types = malloc(sizeof *types * (size_t)(nu ? nu : 1));
    if (!types) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t u = 0; u < nu; u++) {
        const rf_unit *un = rf_model_unit(m, u);
        int64_t k = rf_profile_find_unit(p, un->name);
        rf_dtype d = k >= 0 ? rf_profile_unit(p, (uint64_t)k)->dtype : RF_DT_BF16;
        types[u] = un->role == RF_ROLE_ROUTER || d == RF_DT_F32 ? RF_GT_F32 : d == RF_DT_F16 ? RF_GT_F16 : RF_GT_BF16;
        if (un->role == RF_ROLE_LM_HEAD && rf_model_config(m)->tie_word_embeddings && un->nparams) {
            free(types);
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: the embeddings are tied but the checkpoint stores %s too: "
                              "llama.cpp's file has no such tensor, so a GGUF plan cannot count it", rf_model_dir(m), un->name);
        }
    }
    uint64_t file = 0;
    rf_status s = rf_gguf_file_bytes(m, types, NULL, &file, err);
    free(types);
    if (s) return s;
    uint64_t listed = rf_profile_full_bytes(p);
    if (file < listed)
        return rf_err_set(err, RF_ERR_INTERNAL, "%s: the GGUF file (%llu B) is smaller than the tensors the profile lists "
                          "(%llu B)", rf_model_dir(m), (unsigned long long)file, (unsigned long long)listed);
    rf_profile_set_gguf(p, file - listed);
    return RF_OK;
}

/* SHARD: first unit and units in all of a part (select_shard). */
static rf_status build_profile(const rf_model *m, const rf_analyse_opts *o, const ustate *us, const uint64_t shard[2],
                               int complete, rf_profile **out, rf_err *err)
{
    rf_pmodel pm;
    rf_analyse_identity(m, &pm);
    const rf_dtype f32_as = o->f32_as;
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) { /* the rule recorded when it applies to something */
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        if (ti->t->dtype == RF_DT_F32 && !ti->fp8_scale && !ti->dropped) pm.f32_as = rf_quantize_out_dtype(RF_DT_F32, f32_as);
    }
    rf_profile *p;
    rf_status s = rf_profile_create(&pm, o->modes, o->configs, &p, err);
    if (!s) rf_profile_set_opt_sample(p, opt_sample_of(o));
    if (!s && o->gguf) {
        rf_profile_set_gguf(p, 0); /* the fixed part once every tensor is listed (below) */
        rf_profile_set_gguf_sample(p, gguf_sample_of(o));
    }
    if (!s && o->shard_count) s = rf_profile_set_shard(p, o->shard_index, o->shard_count, shard[0], shard[1], err);
    const rf_st *st = rf_model_st(m);
    for (uint64_t f = 0; !s && f < rf_st_file_count(st); f++)
        s = rf_profile_add_file(p, file_base(rf_st_file_path(st, f)), rf_st_file_size(st, f), err);
    for (uint64_t u = 0; !s && u < rf_model_unit_count(m); u++)
        if (us[u].rec) s = rf_profile_add_unit(p, us[u].rec, err);
    for (uint64_t i = 0; !s && complete && i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        if ((ti->unit >= 0 && (us[ti->unit].rec || us[ti->unit].other_shard)) || ti->fp8_scale || ti->dropped)
            continue; /* not in the output, or another part's unit */
        if (ti->unit >= 0 && ti->t->nelem) {
            s = rf_err_set(err, RF_ERR_INTERNAL, "unit of %s not analysed", ti->t->name);
            break;
        }
        rf_dtype kd = o->gguf ? RF_DT_F32 : rf_quantize_out_dtype(ti->t->dtype, f32_as); /* GGUF: as llama.cpp's converter */
        if ((s = check_kept_finite(ti->t, kd, err))) break;
        rf_pother ot = {.role = ti->role, .layer = ti->layer, .nparams = ti->t->nelem, .dtype = kd,
                        .bytes = ti->t->nelem * rf_dtype_size(kd)};
        snprintf(ot.name, sizeof ot.name, "%s", ti->t->name);
        s = rf_profile_add_other(p, &ot, err);
    }
    if (!s && complete && o->gguf) s = gguf_fixed(m, p, err);
    if (s) { rf_profile_free(p); return s; }
    *out = p;
    return RF_OK;
}

/* The statistics that weighted the errors, recorded in the profile. */
static void set_calibration(rf_profile *p, const rf_analyse_opts *o)
{
    rf_pcalib c = {0};
    if (o->stats) {
        c.weighted = 1;
        snprintf(c.text, sizeof c.text, "%s", rf_stats_text(o->stats));
        c.tokens = rf_stats_tokens(o->stats);
        c.stats_checksum = rf_stats_checksum(o->stats);
    }
    rf_profile_set_calibration(p, &c);
}

static rf_status save_partial(const rf_model *m, const rf_analyse_opts *o, const ustate *us, const uint64_t shard[2],
                              rf_err *err)
{
    if (!o->partial_path) return RF_OK;
    rf_profile *p;
    rf_status s = build_profile(m, o, us, shard, 0, &p, err);
    if (!s) set_calibration(p, o);
    if (!s) s = rf_profile_save(p, o->partial_path, err);
    rf_profile_free(p);
    return s;
}

/* Take the units of an earlier partial run. */
static rf_status load_partial(const rf_model *m, const rf_analyse_opts *o, ustate *us, const uint64_t shard[2], rf_err *err)
{
    if (access(o->partial_path, F_OK) != 0) return RF_OK;
    rf_profile *p;
    rf_status s = rf_profile_load(o->partial_path, &p, err);
    if (s) return s;
    rf_pmodel pm;
    rf_analyse_identity(m, &pm);
    const rf_pmodel *have = rf_profile_model(p);
    int sk, sn;
    uint64_t sf, st_;
    rf_profile_shard(p, &sk, &sn, &sf, &st_);
    if (have->fingerprint != pm.fingerprint || strcmp(have->ramfit_version, pm.ramfit_version) ||
        rf_profile_modes(p) != o->modes || rf_profile_configs(p) != o->configs || rf_profile_opt_sample(p) != opt_sample_of(o) ||
        rf_profile_is_gguf(p) != (o->gguf != 0) || rf_profile_gguf_sample(p) != gguf_sample_of(o) ||
        sk != o->shard_index || sn != o->shard_count || (sn && (sf != shard[0] || st_ != shard[1])) ||
        rf_profile_calibration(p)->weighted != (o->stats != NULL) ||
        (o->stats && rf_profile_calibration(p)->stats_checksum != rf_stats_checksum(o->stats))) {
        s = rf_err_set(err, RF_ERR_MISMATCH, "%s: this partial analysis was made for another checkpoint, ramfit version "
                       "or mode/candidate/sampling/shard set or statistics (fingerprint %016llx, ramfit %s; now %016llx, ramfit %s): delete it or run "
                       "without --resume", o->partial_path, (unsigned long long)have->fingerprint, have->ramfit_version,
                       (unsigned long long)pm.fingerprint, pm.ramfit_version);
    }
    if (!s && (s = rf_analyse_check_dtype(m, p, o->f32_as, err))) rf_err_prefix(err, "%s", o->partial_path);
    for (uint64_t i = 0; !s && i < rf_profile_unit_count(p); i++) {
        const rf_punit *pu = rf_profile_unit(p, i);
        int64_t k = rf_model_unit_find(m, pu->name);
        const rf_unit *u = k >= 0 ? rf_model_unit(m, (uint64_t)k) : NULL;
        /* the profile records output dtypes: an F32 unit is BF16 there unless --dtype said otherwise */
        if (!u || u->rows != pu->rows || u->cols != pu->cols || u->nparams != pu->nparams ||
            rf_quantize_out_dtype(u->dtype, o->f32_as) != pu->dtype) {
            s = rf_err_set(err, RF_ERR_MISMATCH, "%s: unit %s does not match the model", o->partial_path, pu->name);
            break;
        }
        ustate *us_k = &us[k];
        if (!(us_k->rec = malloc(sizeof *us_k->rec))) { s = rf_err_set(err, RF_ERR_NOMEM, "out of memory"); break; }
        *us_k->rec = *pu;
        us_k->done = 1;
    }
    rf_profile_free(p);
    return s;
}

/* ------------------------------------------------------------------ driver */

typedef struct run {
    const rf_model *m;
    const rf_analyse_opts *o;
    ustate *us;
    uint64_t nunits;
    task *fifo;           /* phase B tasks waiting */
    uint64_t nfifo, fifo_cap;
    uint64_t next_unit, next_blk; /* phase A cursor */
    uint64_t units_done, bytes_done, bytes_total;
    uint64_t nskip;       /* units of other shards */
    uint64_t shard[2];    /* select_shard: first unit of the part, units in all */
    rf_pool *pool;
    actx c;
} run;

static int grow_tasks(task **arr, uint64_t *cap, uint64_t need)
{
    if (need <= *cap) return 1;
    uint64_t nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    task *na = realloc(*arr, nc * sizeof *na);
    if (!na) return 0;
    *arr = na;
    *cap = nc;
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void skip_done(run *r)
{
    while (r->next_unit < r->nunits && (r->us[r->next_unit].done || r->us[r->next_unit].nblk == 0)) r->next_unit++;
}

/* Fill up to WINDOW_MAX tasks of about WBYTES input: waiting phase B first, then phase A. */
static uint64_t fill_window(run *r, task *w, uint64_t wbytes, rf_err *err, rf_status *st)
{
    uint64_t n = 0, bytes = 0;
    while (r->nfifo && n < WINDOW_MAX && bytes < wbytes) {
        w[n] = r->fifo[--r->nfifo];
        bytes += r->o->block_bytes;
        n++;
    }
    skip_done(r);
    while (r->next_unit < r->nunits && n < WINDOW_MAX && bytes < wbytes) {
        ustate *s = &r->us[r->next_unit];
        if (r->next_blk == 0) {
            if (!(s->res = calloc(s->nblk, sizeof *s->res))) { *st = rf_err_set(err, RF_ERR_NOMEM, "out of memory"); return 0; }
            if (r->o->stats && s->cfgs && (*st = calib_unit_weights(r->o->stats, s->u, &s->colw, err))) return 0;
            s->a_left = s->nblk;
            /* read ahead this unit and the next, so the disk works while the CPUs do */
            for (uint64_t a = r->next_unit; a < r->nunits && a <= r->next_unit + 1; a++)
                for (int k = 0; k < r->us[a].u->n_members && !r->us[a].done; k++)
                    rf_st_advise_willneed(rf_model_st(r->m), rf_model_tinfo(r->m, (uint64_t)r->us[a].u->members[k])->t);
        }
        w[n++] = (task){r->next_unit, r->next_blk, 0};
        bytes += s->bytes / s->nblk;
        if (++r->next_blk == s->nblk) {
            r->next_blk = 0;
            r->next_unit++;
            skip_done(r);
        }
    }
    return n;
}

static rf_status account(run *r, const task *w, uint64_t n, rf_err *err)
{
    for (uint64_t i = 0; i < n; i++) {
        if (r->c.tst[i]) {
            if (err) *err = r->c.terr[i];
            return r->c.tst[i];
        }
    }
    for (uint64_t i = 0; i < n; i++) {
        ustate *s = &r->us[w[i].unit];
        rf_status st = RF_OK;
        if (w[i].phase == 0) {
            r->bytes_done += s->bytes / s->nblk;
            if (--s->a_left == 0) {
                if (!grow_tasks(&r->fifo, &r->fifo_cap, r->nfifo + s->nblk))
                    return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
                st = after_phase_a(&r->c, s, r->fifo, &r->nfifo, err);
            }
        } else if (--s->b_left == 0) {
            st = finish_unit(&r->c, s, err);
        }
        if (st) return st;
        if (s->done) r->units_done++;
    }
    return RF_OK;
}

static void report(run *r, const char *name)
{
    const rf_progress *p = &r->o->progress;
    if (!p->fn) return;
    /* phase B can follow the last input byte: 100% only when every unit is finished */
    uint64_t done = r->units_done == r->nunits || !r->bytes_total ? r->bytes_total
                    : r->bytes_done < r->bytes_total ? r->bytes_done : r->bytes_total - 1;
    char what[200];
    snprintf(what, sizeof what, "%llu/%llu %s", (unsigned long long)(r->units_done - r->nskip),
             (unsigned long long)(r->nunits - r->nskip),
             name ? name : "");
    p->fn(p->user, done, r->bytes_total, what);
}

static rf_status drive(run *r, rf_err *err)
{
    const rf_analyse_opts *o = r->o;
    /* Windows of 8 blocks per thread: a window ends when its slowest task does, and with more
     * tasks per thread the idle tail is a smaller share (memory does not grow: each worker holds
     * one block at a time). */
    uint64_t wbytes = o->block_bytes * (uint64_t)(8 * rf_pool_threads(r->pool) > 4 ? 8 * rf_pool_threads(r->pool) : 4);
    task w[WINDOW_MAX];
    double last_save = now_s();
    report(r, NULL);
    for (;;) {
        if (o->progress.cancel && *o->progress.cancel) return rf_err_set(err, RF_ERR_INTERRUPTED, "analysis interrupted");
        rf_status st = RF_OK;
        uint64_t n = fill_window(r, w, wbytes, err, &st);
        if (st) return st;
        if (n == 0) break;
        r->c.tasks = w;
        rf_pool_run(r->pool, n, run_task, &r->c);
        if ((st = account(r, w, n, err))) return st;
        report(r, r->us[w[n - 1].unit].u->name);
        if (o->partial_path && now_s() - last_save >= (o->checkpoint_s > 0 ? o->checkpoint_s : 30)) {
            if ((st = save_partial(r->m, o, r->us, r->shard, err))) return st;
            last_save = now_s();
        }
    }
    return r->units_done == r->nunits ? RF_OK : rf_err_set(err, RF_ERR_INTERNAL, "analysis: %llu of %llu units finished",
                                                           (unsigned long long)r->units_done, (unsigned long long)r->nunits);
}

static rf_status check_model(const rf_model *m, rf_err *err)
{
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        if (ti->quant_aux)
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s: this checkpoint is already MLX-quantized: analyse "
                              "the original F32/BF16/F16 checkpoint", file_base(ti->t->file), ti->t->name);
    }
    return RF_OK;
}

rf_status rf_analyse(const rf_model *m, const rf_analyse_opts *opts, rf_profile **out, rf_err *err)
{
    if (!m || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_analyse: NULL argument");
    *out = NULL;
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    if (opts) o = *opts;
    if (!o.modes) o.modes = 1u << RF_QMODE_MLX;
    if (!o.configs) o.configs = RF_PROFILE_ALL_CONFIGS;
    if (!o.block_bytes) o.block_bytes = DEFAULT_BLOCK;
    if (o.modes & ~3u) return rf_err_set(err, RF_ERR_INVALID, "analyse: bad mode mask 0x%x", o.modes);
    if (o.configs & ~(unsigned)RF_PROFILE_ALL_CONFIGS) return rf_err_set(err, RF_ERR_INVALID, "analyse: bad config mask 0x%x", o.configs);
    if (o.resume && !o.partial_path) return rf_err_set(err, RF_ERR_INVALID, "analyse: resume needs a partial file path");
    if (o.gguf) {
        if (o.shard_count || o.stats)
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "analyse: GGUF candidates are measured on one machine, data-free "
                              "(no --shard, no --stats)");
        o.modes = 1u << RF_QMODE_MLX; /* the errors' slot */
        o.configs = (1u << RF_GCAND_N) - 1;
    }
    if (o.shard_count || o.shard_index)
        if (o.shard_count < 1 || o.shard_count > RF_MAX_SHARDS || o.shard_index < 1 || o.shard_index > o.shard_count)
            return rf_err_set(err, RF_ERR_INVALID, "analyse: shard %d of %d: expected 1 <= K <= N <= %d", o.shard_index,
                              o.shard_count, RF_MAX_SHARDS);
    rf_status st = check_model(m, err);
    if (!st && o.stats) st = rf_stats_check_model(o.stats, m, err);
    if (st) return st;

    run r = {.m = m, .o = &o, .nunits = rf_model_unit_count(m)};
    r.us = calloc(r.nunits ? r.nunits : 1, sizeof *r.us);
    if (!r.us) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t u = 0; u < r.nunits && !st; u++) st = setup_unit(m, &o, rf_model_unit(m, u), &r.us[u], err);
    if (!st && o.shard_count) select_shard(r.us, r.nunits, o.shard_index, o.shard_count, &r.shard[0], &r.shard[1]);
    if (!st && o.resume) st = load_partial(m, &o, r.us, r.shard, err);
    for (uint64_t u = 0; u < r.nunits && !st; u++) {
        if (r.us[u].other_shard) { /* another machine's */
            r.units_done++, r.nskip++, r.us[u].done = 1;
            continue;
        }
        r.bytes_total += r.us[u].bytes;
        if (r.us[u].done) r.units_done++, r.bytes_done += r.us[u].bytes;
        else if (r.us[u].nblk == 0) r.units_done++, r.us[u].done = 1; /* empty: reported as another tensor */
    }
    if (!st) st = rf_pool_create(o.threads, &r.pool, err);
    if (!st) {
        int nt = rf_pool_threads(r.pool);
        r.c = (actx){.m = m, .st = rf_model_st(m), .us = r.us, .modes = o.modes, .cancel = o.progress.cancel,
                     .f32_as = o.f32_as, .gguf = o.gguf};
        r.c.tst = calloc(WINDOW_MAX, sizeof *r.c.tst);
        r.c.terr = calloc(WINDOW_MAX, sizeof *r.c.terr);
        r.c.conv = malloc((size_t)nt * CONV_N * sizeof *r.c.conv);
        r.c.gather = malloc((size_t)nt * GATHER_BYTES);
        if (!r.c.tst || !r.c.terr || !r.c.conv || !r.c.gather) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    if (!st) st = drive(&r, err);
    if (st == RF_ERR_INTERRUPTED) {
        rf_err e2;
        rf_status s2 = save_partial(m, &o, r.us, r.shard, &e2);
        if (s2) { if (err) *err = e2; st = s2; }
        else if (o.partial_path)
            rf_err_set(err, RF_ERR_INTERRUPTED, "analysis interrupted after %llu of %llu units; progress saved in %s "
                       "(continue with --resume)", (unsigned long long)r.units_done, (unsigned long long)r.nunits,
                       o.partial_path);
        else
            rf_err_set(err, RF_ERR_INTERRUPTED, "analysis interrupted after %llu of %llu units",
                       (unsigned long long)r.units_done, (unsigned long long)r.nunits);
    }
    if (!st) st = build_profile(m, &o, r.us, r.shard, 1, out, err);
    if (!st) set_calibration(*out, &o);
    for (uint64_t u = 0; u < r.nunits; u++) {
        free(r.us[u].res);
        free(r.us[u].rec);
        free(r.us[u].colw);
    }
    free(r.us);
    free(r.fifo);
    free(r.c.tst);
    free(r.c.terr);
    free(r.c.conv);
    free(r.c.gather);
    rf_pool_free(r.pool);
    return st;
}

/* ------------------------------------------------------------------ profile check */

rf_status rf_analyse_check_profile(const rf_model *m, const rf_profile *p, rf_err *err)
{
    if (!m || !p) return rf_err_set(err, RF_ERR_INVALID, "check profile: NULL argument");
    rf_pmodel pm;
    rf_analyse_identity(m, &pm);
    const rf_pmodel *pp = rf_profile_model(p);
    const rf_st *st = rf_model_st(m);
    int files_ok = rf_profile_file_count(p) == rf_st_file_count(st);
    for (uint64_t f = 0; files_ok && f < rf_st_file_count(st); f++) {
        const rf_pfile *pf = rf_profile_file(p, f);
        files_ok = !strcmp(pf->name, file_base(rf_st_file_path(st, f))) && pf->bytes == rf_st_file_size(st, f);
    }
    if (pp->fingerprint != pm.fingerprint || !files_ok)
        return rf_err_set(err, RF_ERR_MISMATCH, "the profile is for model '%s' (fingerprint %016llx, %llu shard file%s) but "
                          "%s is '%s' (fingerprint %016llx, %llu shard file%s)%s: run 'ramfit analyse %s' for this model",
                          pp->name, (unsigned long long)pp->fingerprint, (unsigned long long)rf_profile_file_count(p),
                          rf_profile_file_count(p) == 1 ? "" : "s", rf_model_dir(m), pm.name,
                          (unsigned long long)pm.fingerprint, (unsigned long long)rf_st_file_count(st),
                          rf_st_file_count(st) == 1 ? "" : "s",
                          pp->fingerprint == pm.fingerprint ? " (shard file names or sizes differ)" : "", rf_model_dir(m));
    uint64_t nunits = 0;
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        if (!un->nparams) continue;
        nunits++;
        int64_t k = rf_profile_find_unit(p, un->name);
        const rf_punit *pu = k >= 0 ? rf_profile_unit(p, (uint64_t)k) : NULL;
        int gguf_router = rf_profile_is_gguf(p) && un->role == RF_ROLE_ROUTER && pu && pu->dtype == RF_DT_F32; /* kept F32 */
        if (!pu || pu->rows != un->rows || pu->cols != un->cols || pu->nparams != un->nparams ||
            (rf_quantize_out_dtype(un->dtype, pu->dtype) != pu->dtype && !gguf_router))
            return rf_err_set(err, RF_ERR_MISMATCH, "the profile's unit %s %s the model's (%s): re-run ramfit analyse",
                              un->name, pu ? "differs from" : "is missing from the profile, unlike", rf_model_dir(m));
    }
    if (nunits != rf_profile_unit_count(p))
        return rf_err_set(err, RF_ERR_MISMATCH, "the profile has %llu units, the model %s has %llu: re-run ramfit analyse",
                          (unsigned long long)rf_profile_unit_count(p), rf_model_dir(m), (unsigned long long)nunits);
    return RF_OK;
}

rf_status rf_analyse_check_dtype(const rf_model *m, const rf_profile *p, rf_dtype f32_as, rf_err *err)
{
    if (!m || !p) return rf_err_set(err, RF_ERR_INVALID, "check profile dtype: NULL argument");
    rf_dtype want = rf_quantize_out_dtype(RF_DT_F32, f32_as), rec = rf_profile_model(p)->f32_as;
    if (rec != RF_DT_INVALID && rec != want) /* recorded by analyse since 0.2 */
        return rf_err_set(err, RF_ERR_MISMATCH, "the profile counts F32 tensors as %s, not %s: it was analysed for another "
                          "--dtype", rf_dtype_name(rec), rf_dtype_name(want));
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        int64_t k = un->dtype == RF_DT_F32 ? rf_profile_find_unit(p, un->name) : -1;
        if (k < 0 || (rf_profile_is_gguf(p) && un->role == RF_ROLE_ROUTER)) continue; /* GGUF routers are F32 */
        const rf_punit *pu = rf_profile_unit(p, (uint64_t)k);
        rf_dtype sd = want; /* the scale dtype its candidates were counted in */
        for (int c = 0; c < pu->n_cands && sd == want && !rf_profile_is_gguf(p); c++)
            if (pu->cands[c].bytes != rf_quant_bytes(pu->nparams, pu->cands[c].bits, pu->cands[c].gs, want)) sd = RF_DT_INVALID;
        if (pu->dtype != want || sd != want)
            return rf_err_set(err, RF_ERR_MISMATCH, "the profile counts F32 tensors such as %s as %s%s, not %s: it was "
                              "analysed for another --dtype", un->name, rf_dtype_name(pu->dtype),
                              sd == want ? "" : " (with other scales)", rf_dtype_name(want));
    }
    for (uint64_t i = 0; i < rf_profile_other_count(p) && !rf_profile_is_gguf(p); i++) { /* GGUF: F32 as llama.cpp's */
        const rf_pother *o = rf_profile_other(p, i);
        const rf_tensor *t = rf_st_find(rf_model_st(m), o->name);
        if (t && t->dtype == RF_DT_F32 && o->dtype != want)
            return rf_err_set(err, RF_ERR_MISMATCH, "the profile counts F32 tensor %s as %s, not %s: it was analysed for "
                              "another --dtype", o->name, rf_dtype_name(o->dtype), rf_dtype_name(want));
    }
    return RF_OK;
}
