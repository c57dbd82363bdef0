/* Writing the MLX checkpoint a plan describes.
 *
 * The output is a list of items in catalogue order: a quantized unit (weight, scales, biases),
 * a kept unit or a plain tensor (copied, or converted F32 -> 16-bit). Items are cut into jobs
 * of a few MiB of source rows; jobs run in waves on the pool into an arena, and a writer thread
 * writes the previous wave in job order while the next one is computed (two arenas), so the
 * bytes never depend on the thread count and memory stays at two waves plus the scales/biases
 * of the units in flight (the writer needs a tensor's bytes in one
 * piece: a unit's packed weight first, then all its scales, then all its biases, so those two
 * are held until the unit's last row block is written: 1/16 of its source size at gs 32).
 * Everything is validated against the plan before the first byte is written. */
#include "arch/family.h"
#include "arch/model_internal.h"
#include "io/json_internal.h"
#include "io/mlx_internal.h"
#include "plan/plan_internal.h"
#include "quantize/qz_gptq.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QZ_WAVE_JOBS 64u
#define QZ_DEFAULT_SHARD (5ull << 30)

typedef unsigned long long ull;

uint64_t rf_qz_job_bytes = 4u << 20, rf_qz_wave_bytes = 32u << 20;

void rf_quantize_opts_default(rf_quantize_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = -1;
    o->f32_as = RF_DT_INVALID;
}

rf_dtype rf_quantize_out_dtype(rf_dtype src, rf_dtype f32_as)
{
    if (src == RF_DT_F8_E4M3) return RF_DT_BF16; /* FP8 sources are written dequantized, as mlx-lm's sanitize does */
    if (src != RF_DT_F32 && src != RF_DT_F64) return src;
    return f32_as == RF_DT_F16 || f32_as == RF_DT_F32 ? f32_as : RF_DT_BF16;
}

/* ------------------------------------------------------------------ items and jobs */

typedef enum { QZ_COPY, QZ_CONVERT, QZ_QUANT } qz_kind;

typedef struct qz_item {
    qz_kind kind;
    char name[200];          /* module path (units) or tensor name */
    const rf_unit *unit;     /* NULL for a plain tensor */
    const rf_mview *views;   /* the unit's members */
    const rf_tensor *plain;
    int nmem;
    uint64_t cols;           /* of a member matrix; 1 for plain tensors (rows are elements) */
    rf_dtype src_dt, out_dt; /* out_dt: data dtype, or scales/biases dtype when quantized */
    int bits, gs;
    uint64_t params, out_bytes, in_bytes;
    uint64_t job0, njobs;
    uint8_t *scales, *biases;
} qz_item;

typedef struct qz_job {
    uint32_t item, member;
    int64_t gptq_rec;        /* GPTQ with this statistics record's factor; -1: round to nearest */
    uint64_t row0, nrows;    /* rows of the member matrix */
    uint64_t grow0;          /* row of the item (members stacked) */
    uint64_t out_off, out_len;
} qz_job;

typedef struct qz {
    const rf_model *m;
    const rf_plan *plan;
    rf_qmode mode;
    rf_dtype kept_f32, scale_f32; /* output dtypes of F32 weights kept / of scales of F32 weights */
    qz_item *items;
    uint64_t nitems;
    qz_job *jobs;
    uint64_t njobs;
    uint8_t *arena[2];       /* wave arenas: one being computed, one being written */
    uint64_t arena_cap[2];
    uint8_t *cur_arena;      /* the one run_job fills */
    uint8_t *gather;         /* per worker: rows of transformed members read out (gather_bytes each) */
    uint64_t gather_bytes;
    rf_err *jerr;            /* per wave slot */
    rf_status *jst;
    uint64_t wave0;          /* first job of the running wave */
    uint64_t written, skipped_plan_bytes, dropped_bytes, input_bytes, params;
    uint64_t nquant, nkept;
    int converted;           /* some F32 tensor changed dtype: config.json torch_dtype follows */
    qz_gptq *gptq;           /* quantize --mode gptq (qz_gptq.c); NULL: round to nearest */
} qz;

static int has_f32(const rf_model *m);
static char *path_cat(const char *a, const char *b);

static const rf_tensor *member(const qz *q, const qz_item *it, int k)
{
    return it->unit ? it->views[k].t : it->plain;
}

static uint64_t member_rows(const qz *q, const qz_item *it, int k)
{
    (void)q;
    if (it->unit) return it->views[k].rows;
    return it->cols ? it->plain->nelem / it->cols : 0;
}

/* Bytes of one output row of a job's arena piece (0 when written straight from the source). */
static uint64_t out_row_bytes(const qz_item *it)
{
    if (it->kind == QZ_QUANT) return it->cols * (uint64_t)it->bits / 8;
    if (it->kind == QZ_CONVERT) return it->cols * rf_dtype_size(it->out_dt);
    return 0;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static rf_status add_item(qz *q, const qz_item *it, rf_err *err)
{
    qz_item *n = realloc(q->items, (size_t)(q->nitems + 1) * sizeof *n);
    if (!n) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    q->items = n;
    q->items[q->nitems++] = *it;
    return RF_OK;
}

/* The unit's item from its plan entry; checks the plan and this model agree on it. */
static rf_status unit_item(qz *q, const rf_unit *u, const rf_plan_unit *pu, qz_item *it, rf_err *err)
{
    const char *dir = rf_model_dir(q->m);
    if (!rf_dtype_is_float(u->dtype) && u->dtype != RF_DT_F8_E4M3)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: unit %s has dtype %s: only F32/F16/BF16 and FP8 checkpoints "
                          "can be quantized", dir, u->name, rf_dtype_name(u->dtype));
    if (pu->nparams != u->nparams)
        return rf_err_set(err, RF_ERR_MISMATCH, "plan unit %s has %llu parameters, the model's has %llu", u->name,
                          (ull)pu->nparams, (ull)u->nparams);
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "%s%s", rf_mlx_tensor_prefix(rf_model_config(q->m)), u->name);
    it->unit = u;
    it->views = rf_model_unit_views(q->m, (uint64_t)rf_model_unit_index(q->m, u));
    it->nmem = u->n_members;
    it->cols = u->cols;
    it->src_dt = rf_view_dtype(&it->views[0]); /* what a member reads as: F32 for FP8 */
    it->params = u->nparams;
    it->in_bytes = u->nparams * rf_dtype_size(u->dtype);
    if (pu->bits) {
        if (!u->quantizable || rf_cfg_index(pu->bits, pu->gs) < 0 || u->cols % (uint64_t)pu->gs)
            return rf_err_set(err, RF_ERR_MISMATCH, "plan quantizes %s with %d bits, gs %d, which its shape [%llu, %llu] "
                              "does not allow", u->name, pu->bits, pu->gs, (ull)u->rows, (ull)u->cols);
        it->kind = QZ_QUANT;
        it->out_dt = rf_quantize_out_dtype(u->dtype, q->scale_f32);
        it->bits = pu->bits;
        it->gs = pu->gs;
        it->out_bytes = rf_quant_bytes(u->nparams, pu->bits, pu->gs, it->out_dt);
    } else {
        it->out_dt = rf_quantize_out_dtype(u->dtype, q->kept_f32);
        it->kind = it->out_dt == u->dtype && !u->transformed ? QZ_COPY : QZ_CONVERT;
        it->out_bytes = u->nparams * rf_dtype_size(it->out_dt);
    }
    if (it->out_bytes != pu->bytes)
        return rf_err_set(err, RF_ERR_MISMATCH, "unit %s: the plan counts %llu bytes, the output is %llu bytes (%s in "
                          "%s): the plan was made under another dtype rule", u->name, (ull)pu->bytes,
                          (ull)it->out_bytes, pu->bits ? "scales/biases" : "kept weights", rf_dtype_name(it->out_dt));
    return RF_OK;
}

static void plain_item(qz *q, const rf_tensor *t, qz_item *it)
{
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "%s%s", rf_mlx_tensor_prefix(rf_model_config(q->m)), t->name);
    it->plain = t;
    it->nmem = 1;
    it->cols = 1;
    it->src_dt = t->dtype;
    it->out_dt = rf_quantize_out_dtype(t->dtype, q->kept_f32);
    it->kind = it->out_dt == t->dtype ? QZ_COPY : QZ_CONVERT;
    it->params = t->nelem;
    it->in_bytes = t->nbytes;
    it->out_bytes = t->nelem * rf_dtype_size(it->out_dt);
}

/* Items in catalogue order (units where their first source tensor appears, in unit order),
 * checked against the plan. */
static rf_status build_items(qz *q, rf_err *err)
{
    const rf_model *m = q->m;
    const rf_config *cfg = rf_model_config(m);
    uint64_t nt = rf_model_tensor_count(m), nu = rf_model_unit_count(m), np = rf_plan_unit_count(q->plan);
    uint8_t *seen = calloc(np + 1, 1);
    rf_status s = seen ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    uint64_t others = 0, next_unit = 0;
    /* units are numbered in the order of their first tensors: a cursor walks them alongside */
    for (uint64_t i = 0; i < nt && !s; i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        qz_item it;
        if (ti->quant_aux) {
            s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor %s: the model is already MLX-quantized; quantize the "
                           "original checkpoint", ti->t->file, ti->t->name);
            break;
        }
        for (; next_unit < nu && rf_model_unit_first_tensor(m, next_unit) == i && !s; next_unit++) {
            const rf_unit *u = rf_model_unit(m, next_unit);
            int64_t pi = rf_plan_find_unit(q->plan, u->name);
            if (pi < 0) {
                /* the fingerprints matched (check_plan): the same checkpoint, so the file was changed */
                s = rf_err_set(err, RF_ERR_MISMATCH, "the plan has no unit %s, which %s has: the plan matches this "
                               "checkpoint's fingerprint, so the plan file was edited or damaged (make it again with "
                               "'ramfit plan')", u->name, rf_model_dir(m));
                break;
            }
            const rf_plan_unit *pu = rf_plan_get_unit(q->plan, (uint64_t)pi);
            seen[pi] = 1;
            if (u->role == RF_ROLE_LM_HEAD && cfg->tie_word_embeddings) {
                /* mlx-lm's sanitize pops it: the (quantized) embedding serves as lm_head */
                q->skipped_plan_bytes += pu->bytes;
                continue;
            }
            if (!(s = unit_item(q, u, pu, &it, err))) s = add_item(q, &it, err);
        }
        if (s || ti->unit >= 0 || ti->fp8_scale) continue;
        if (ti->dropped) continue; /* a multi-token-prediction layer: not in the profile, mlx-lm's sanitize drops it */
        plain_item(q, ti->t, &it);
        others += it.out_bytes;
        if (ends_with(ti->t->name, ".rotary_emb.inv_freq")) { /* a buffer mlx-lm's sanitize drops */
            q->dropped_bytes += it.out_bytes;
            continue;
        }
        s = add_item(q, &it, err);
    }
    if (!s && next_unit != nu)
        s = rf_err_set(err, RF_ERR_INTERNAL, "units out of tensor order (%llu of %llu written)", (ull)next_unit, (ull)nu);
    for (uint64_t i = 0; i < np && !s; i++)
        if (!seen[i])
            s = rf_err_set(err, RF_ERR_MISMATCH, "plan unit %s is not a unit of %s: the plan matches this checkpoint's "
                           "fingerprint, so the plan file was edited or damaged (make it again with 'ramfit plan')",
                           rf_plan_get_unit(q->plan, i)->name, rf_model_dir(m));
    if (!s && others != rf_plan_other_bytes(q->plan))
        s = rf_err_set(err, RF_ERR_MISMATCH, "the plan counts %llu bytes of non-unit tensors, the output has %llu: the "
                       "plan was made under another dtype rule or for another checkpoint",
                       (ull)rf_plan_other_bytes(q->plan), (ull)others);
    free(seen);
    return s;
}

static rf_status build_jobs(qz *q, rf_err *err)
{
    uint64_t n = 0;
    for (int pass = 0; pass < 2; pass++) {
        n = 0;
        for (uint64_t i = 0; i < q->nitems; i++) {
            qz_item *it = &q->items[i];
            uint64_t row_in = it->cols * rf_dtype_size(it->src_dt);
            uint64_t per = row_in ? rf_qz_job_bytes / row_in : 1;
            if (per == 0) per = 1;
            it->job0 = n;
            uint64_t grow = 0;
            for (int k = 0; k < it->nmem; k++) {
                uint64_t rows = member_rows(q, it, k);
                for (uint64_t r = 0; r < rows; r += per, n++) {
                    if (pass == 0) continue;
                    qz_job *j = &q->jobs[n];
                    j->item = (uint32_t)i;
                    j->member = (uint32_t)k;
                    j->row0 = r;
                    j->nrows = rows - r < per ? rows - r : per;
                    j->grow0 = grow + r;
                    j->out_len = j->nrows * out_row_bytes(it);
                    j->gptq_rec = it->kind == QZ_QUANT ? qz_gptq_record(q->gptq, it->unit, k) : -1;
                }
                grow += rows;
            }
            it->njobs = n - it->job0;
        }
        if (pass == 0 && !(q->jobs = calloc(n ? n : 1, sizeof *q->jobs)))
            return rf_err_set(err, RF_ERR_NOMEM, "out of memory (%llu jobs)", (ull)n);
    }
    q->njobs = n;
    return RF_OK;
}

/* ------------------------------------------------------------------ compute and write */

static rf_status convert_run(rf_dtype src, const void *in, rf_dtype dst, void *out, uint64_t n, rf_err *err)
{
    if (src == RF_DT_F32) return rf_convert_from_f32(dst, in, out, n, err);
    float tmp[4096];
    uint64_t ss = rf_dtype_size(src), ds = rf_dtype_size(dst);
    for (uint64_t i = 0; i < n; i += 4096) {
        uint64_t c = n - i < 4096 ? n - i : 4096;
        rf_status s = rf_convert_to_f32(src, (const uint8_t *)in + i * ss, tmp, c, err);
        if (!s) s = rf_convert_from_f32(dst, tmp, (uint8_t *)out + i * ds, c, err);
        if (s) return s;
    }
    return RF_OK;
}

/* Kept tensors are checked like quantized ones (rf_quant_quantize refuses NaN/Inf): a broken
 * weight must not reach the output unnoticed. IN holds rows ROW0.. of COLS floats. */
static rf_status check_finite(rf_dtype dt, const void *in, uint64_t n, uint64_t cols, uint64_t row0, rf_err *err)
{
    if (dt != RF_DT_F32 && dt != RF_DT_F16 && dt != RF_DT_BF16 && dt != RF_DT_F64) return RF_OK;
    float tmp[4096];
    uint64_t es = rf_dtype_size(dt);
    for (uint64_t i = 0; i < n; i += 4096) {
        uint64_t c = n - i < 4096 ? n - i : 4096;
        rf_status s = rf_convert_to_f32(dt, (const uint8_t *)in + i * es, tmp, c, err);
        if (s) return s;
        for (uint64_t k = 0; k < c; k++)
            if (!isfinite(tmp[k]))
                return cols == 1 ? rf_err_set(err, RF_ERR_NONFINITE, "%s weight at element %llu",
                                              isnan(tmp[k]) ? "NaN" : "infinite", (ull)(row0 + i + k))
                                 : rf_err_set(err, RF_ERR_NONFINITE, "%s weight at row %llu, column %llu",
                                              isnan(tmp[k]) ? "NaN" : "infinite", (ull)(row0 + (i + k) / cols),
                                              (ull)((i + k) % cols));
    }
    return RF_OK;
}

/* A finite F32 value beyond the output dtype's range becomes inf when converted (--dtype f16 and
 * 70000.0): refused like a NaN in the source, never written. OUT holds N converted elements of
 * rows ROW0.. of COLS, IN the source. */
static rf_status check_converted(rf_dtype odt, const void *out, rf_dtype idt, const void *in, uint64_t n, uint64_t cols,
                                 uint64_t row0, rf_err *err)
{
    if (odt != RF_DT_F16 && odt != RF_DT_BF16) return RF_OK;
    float tmp[4096];
    for (uint64_t i = 0; i < n; i += 4096) {
        uint64_t c = n - i < 4096 ? n - i : 4096;
        rf_status s = rf_convert_to_f32(odt, (const uint8_t *)out + i * 2, tmp, c, err);
        if (s) return s;
        for (uint64_t k = 0; k < c; k++) {
            if (isfinite(tmp[k])) continue;
            float v;
            if ((s = rf_convert_to_f32(idt, (const uint8_t *)in + (i + k) * rf_dtype_size(idt), &v, 1, err))) return s;
            if (cols == 1)
                return rf_err_set(err, RF_ERR_NONFINITE, "value %g at element %llu does not fit %s (largest %g)", (double)v,
                                  (ull)(row0 + i + k), rf_dtype_name(odt), odt == RF_DT_F16 ? 65504.0 : 3.3895313892515355e38);
            return rf_err_set(err, RF_ERR_NONFINITE, "value %g at row %llu, column %llu does not fit %s (largest %g)",
                              (double)v, (ull)(row0 + (i + k) / cols), (ull)((i + k) % cols), rf_dtype_name(odt),
                              odt == RF_DT_F16 ? 65504.0 : 3.3895313892515355e38);
        }
    }
    return RF_OK;
}

/* The job's source rows: where they lie in the mapped file, or read out of a transformed member
 * (slices, transposes, FP8) into the worker's gather buffer. */
static rf_status job_src(const qz *q, const qz_item *it, const qz_job *j, int worker, const uint8_t **src, rf_err *err)
{
    if (!it->unit) {
        *src = (const uint8_t *)it->plain->data + j->row0 * it->cols * rf_dtype_size(it->src_dt);
        return RF_OK;
    }
    const rf_mview *v = &it->views[j->member];
    if ((*src = rf_view_direct(v, j->row0))) return RF_OK;
    uint8_t *buf = q->gather + (uint64_t)worker * q->gather_bytes;
    *src = buf;
    return rf_view_read(v, j->row0, j->nrows, it->src_dt, buf, err);
}

static void run_job(void *ctx, uint64_t task, int worker)
{
    qz *q = ctx;
    qz_job *j = &q->jobs[q->wave0 + task];
    qz_item *it = &q->items[j->item];
    rf_err *e = &q->jerr[task];
    const uint8_t *src = NULL;
    uint8_t *out = q->cur_arena + j->out_off;
    rf_status s = job_src(q, it, j, worker, &src, e);
    if (!s && it->kind == QZ_QUANT) {
        uint64_t sg = it->cols / (uint64_t)it->gs * rf_dtype_size(it->out_dt), off = j->grow0 * sg;
        if (j->gptq_rec >= 0)
            s = rf_gptq_quantize(qz_gptq_factor(q->gptq, j->gptq_rec), it->src_dt, src, j->nrows, it->cols, it->bits, it->gs,
                                 q->mode, it->out_dt, (uint32_t *)(void *)out, it->scales + off, it->biases + off, e);
        else
            s = rf_quant_quantize(it->src_dt, src, j->nrows, it->cols, it->bits, it->gs, q->mode, it->out_dt,
                                  (uint32_t *)(void *)out, it->scales + off, it->biases + off, e);
    } else if (!s) {
        s = check_finite(it->src_dt, src, j->nrows * it->cols, it->cols, j->row0, e);
        if (!s && it->kind == QZ_CONVERT) s = convert_run(it->src_dt, src, it->out_dt, out, j->nrows * it->cols, e);
        if (!s && it->kind == QZ_CONVERT)
            s = check_converted(it->out_dt, out, it->src_dt, src, j->nrows * it->cols, it->cols, j->row0, e);
    }
    if (s) {
        const rf_tensor *t = member(q, it, (int)j->member);
        rf_err_prefix(e, "%s: tensor %s (rows %llu..%llu)", t->file, t->name, (ull)j->row0,
                      (ull)(j->row0 + j->nrows - 1));
    }
    q->jst[task] = s;
}

static rf_status declare_item(rf_stw *w, const qz_item *it, rf_err *err)
{
    if (!it->unit) {
        const rf_tensor *t = it->plain;
        return rf_stw_declare(w, it->name, it->out_dt, t->ndim, t->shape, err);
    }
    const rf_unit *u = it->unit;
    uint64_t shp[3];
    int nd = 0;
    if (u->bank) shp[nd++] = (uint64_t)u->n_members; /* a bank: [members, out, in] */
    shp[nd++] = u->rows;
    char name[256];
    rf_status s;
    if (it->kind != QZ_QUANT) {
        shp[nd++] = u->cols;
        snprintf(name, sizeof name, "%s.weight", it->name);
        return rf_stw_declare(w, name, it->out_dt, nd, shp, err);
    }
    shp[nd] = u->cols * (uint64_t)it->bits / 32;
    snprintf(name, sizeof name, "%s.weight", it->name);
    if ((s = rf_stw_declare(w, name, RF_DT_U32, nd + 1, shp, err))) return s;
    shp[nd] = u->cols / (uint64_t)it->gs;
    snprintf(name, sizeof name, "%s.scales", it->name);
    if ((s = rf_stw_declare(w, name, it->out_dt, nd + 1, shp, err))) return s;
    snprintf(name, sizeof name, "%s.biases", it->name);
    return rf_stw_declare(w, name, it->out_dt, nd + 1, shp, err);
}

static rf_status item_begin(qz_item *it, rf_err *err)
{
    if (it->kind != QZ_QUANT || it->scales) return RF_OK;
    uint64_t n = it->params / (uint64_t)it->gs * rf_dtype_size(it->out_dt);
    it->scales = malloc(n ? n : 1);
    it->biases = malloc(n ? n : 1);
    if (!it->scales || !it->biases) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (scales of %s)", it->name);
    return RF_OK;
}

static void item_release(qz_item *it)
{
    free(it->scales);
    free(it->biases);
    it->scales = it->biases = NULL;
}

static rf_status write_job(rf_stw *w, qz *q, const uint8_t *arena, const qz_job *j, rf_err *err)
{
    qz_item *it = &q->items[j->item];
    rf_status s;
    if (it->kind == QZ_COPY) {
        const uint8_t *src = NULL;
        s = job_src(q, it, j, 0, &src, err); /* a copy is of plain rows: never gathered */
        if (!s) s = rf_stw_write(w, src, j->nrows * it->cols * rf_dtype_size(it->src_dt), err);
    }
    else
        s = rf_stw_write(w, arena + j->out_off, j->out_len, err);
    if (s || it->kind != QZ_QUANT || (uint64_t)(j - q->jobs) + 1 != it->job0 + it->njobs) return s;
    uint64_t n = it->params / (uint64_t)it->gs * rf_dtype_size(it->out_dt);
    if (!(s = rf_stw_write(w, it->scales, n, err))) s = rf_stw_write(w, it->biases, n, err);
    item_release(it);
    return s;
}

/* Jobs from FROM while arena A stays within a wave; returns the wave's end. */
static rf_status plan_wave(qz *q, int a, uint64_t from, uint64_t *end, rf_err *err)
{
    uint64_t used = 0, k = from;
    qz_gptq_wave_begin(q->gptq);
    while (k < q->njobs && k - from < QZ_WAVE_JOBS) {
        qz_job *j = &q->jobs[k];
        uint64_t len = (j->out_len + 7) & ~7ull;
        if (k > from && used + len > rf_qz_wave_bytes) break;
        if (!qz_gptq_wave_add(q->gptq, q->items[j->item].unit, (int)j->member, j->gptq_rec) && k > from) break;
        rf_status s = item_begin(&q->items[j->item], err);
        if (s) return s;
        j->out_off = used;
        used += len;
        k++;
    }
    if (used > q->arena_cap[a]) {
        uint8_t *p = realloc(q->arena[a], used);
        if (!p) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (%llu-byte write buffer)", (ull)used);
        q->arena[a] = p;
        q->arena_cap[a] = used;
    }
    *end = k;
    return RF_OK;
}

/* Writes one computed wave in job order (on its own thread while the next wave computes). */
typedef struct qz_writer {
    qz *q;
    rf_stw *w;
    const uint8_t *arena;
    uint64_t from, end, in_bytes;
    rf_status st;
    rf_err err;
    pthread_t th;
    int running;
} qz_writer;

static void *writer_main(void *arg)
{
    qz_writer *wr = arg;
    qz *q = wr->q;
    const rf_st *st = rf_model_st(q->m);
    const rf_tensor *last = NULL;
    wr->st = RF_OK;
    wr->in_bytes = 0;
    for (uint64_t i = wr->from; i < wr->end && !wr->st; i++) {
        wr->st = write_job(wr->w, q, wr->arena, &q->jobs[i], &wr->err);
        qz_item *it = &q->items[q->jobs[i].item];
        wr->in_bytes += q->jobs[i].nrows * it->cols * rf_dtype_size(it->src_dt);
        /* pages of the mmapped source would otherwise stay resident: peak RSS would grow with
         * the model (pages still being read by the next wave just fault back in) */
        const rf_tensor *t = member(q, it, (int)q->jobs[i].member);
        if (t != last) rf_st_advise_dontneed(st, t);
        last = t;
    }
    return NULL;
}

static void writer_start(qz_writer *wr)
{
    wr->running = pthread_create(&wr->th, NULL, writer_main, wr) == 0;
    if (!wr->running) writer_main(wr); /* no thread: write in place */
}

static void writer_join(qz_writer *wr)
{
    if (wr->running) pthread_join(wr->th, NULL);
    wr->running = 0;
}

/* Computes wave FROM..*END into arena A; the first failing job (in job order) wins. */
static rf_status compute_wave(qz *q, rf_pool *pool, int a, uint64_t from, uint64_t *end, rf_err *err)
{
    rf_status s = plan_wave(q, a, from, end, err);
    if (!s) s = qz_gptq_wave_prepare(q->gptq, pool, err); /* the wave's GPTQ factors (none without --mode gptq) */
    if (s) return s;
    q->wave0 = from;
    q->cur_arena = q->arena[a];
    rf_pool_run(pool, *end - from, run_job, q);
    for (uint64_t i = from; i < *end; i++)
        if (q->jst[i - from]) {
            if (err) *err = q->jerr[i - from];
            return q->jst[i - from];
        }
    return RF_OK;
}

static rf_status write_tensors(qz *q, rf_stw *w, rf_pool *pool, const rf_progress *pr, rf_err *err)
{
    uint64_t total = 0, done = 0;
    for (uint64_t i = 0; i < q->nitems; i++) total += q->items[i].in_bytes;
    q->jerr = calloc(QZ_WAVE_JOBS, sizeof *q->jerr);
    q->jst = calloc(QZ_WAVE_JOBS, sizeof *q->jst);
    if (!q->jerr || !q->jst) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    qz_writer wr = {.q = q, .w = w};
    int a = 0, busy = 0; /* busy: wr holds a wave not yet joined */
    for (uint64_t k = 0; k < q->njobs || busy;) {
        rf_status s = RF_OK;
        uint64_t end = k;
        if (k < q->njobs) {
            if (pr && pr->cancel && *pr->cancel) s = rf_err_set(err, RF_ERR_INTERRUPTED, "quantization interrupted");
            else s = compute_wave(q, pool, a, k, &end, err);
        }
        if (busy) {
            writer_join(&wr);
            busy = 0;
            if (!s && wr.st) {
                s = wr.st;
                if (err) *err = wr.err;
            }
            done += wr.in_bytes;
            if (!s && pr && pr->fn) pr->fn(pr->user, done, total, q->items[q->jobs[wr.end - 1].item].name);
        }
        if (s) return s;
        if (k < q->njobs) {
            wr.arena = q->arena[a];
            wr.from = k;
            wr.end = end;
            writer_start(&wr);
            busy = 1;
            a ^= 1;
            k = end;
        }
    }
    return RF_OK;
}

/* ------------------------------------------------------------------ directory handling */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* 1 when PATH is gone afterwards. */
static int rmtree(const char *path)
{
    if (!path) return 1;
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    struct stat sb;
    return lstat(path, &sb) != 0;
}

/* A temporary output directory holds this file until it is renamed into place: who writes it
 * ("ramfit PID HOST"), so that a later run can tell a stale one (its writer killed, e.g. by
 * SIGKILL) from one being written. */
#define QZ_MARKER ".ramfit-writer"

static void host_name(char *buf, size_t cap)
{
    if (gethostname(buf, cap) != 0) snprintf(buf, cap, "?");
    buf[cap - 1] = '\0';
}

static rf_status write_marker(const char *tmp, rf_err *err)
{
    char *path = path_cat(tmp, QZ_MARKER), host[256], text[320];
    if (!path) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    host_name(host, sizeof host);
    int n = snprintf(text, sizeof text, "ramfit %ld %s\n", (long)getpid(), host);
    rf_status s = rf_mlx_write_file(path, text, (size_t)n, err);
    free(path);
    return s;
}

/* Removes OUT's temporary directories (OUT.tmp-XXXXXX) whose writer, by their marker, was a
 * process of this host that no longer runs, and which belong to this user. */
static void remove_stale_temps(const char *out)
{
    size_t l = strlen(out);
    while (l > 1 && out[l - 1] == '/') l--;
    char *copy = strndup(out, l);
    if (!copy) return;
    char *slash = strrchr(copy, '/');
    const char *dir = slash ? (slash == copy ? "/" : copy) : ".", *base = slash ? slash + 1 : copy;
    if (slash && slash != copy) *slash = '\0';
    size_t bl = strlen(base);
    DIR *d = opendir(dir);
    struct dirent *e;
    char host[256];
    host_name(host, sizeof host);
    while (d && (e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, base, bl) || strncmp(n + bl, ".tmp-", 5) || strlen(n + bl + 5) != 6) continue;
        char *tdir = path_cat(dir, n), *mk = tdir ? path_cat(tdir, QZ_MARKER) : NULL;
        struct stat sb;
        FILE *f = mk && lstat(tdir, &sb) == 0 && S_ISDIR(sb.st_mode) && sb.st_uid == geteuid() ? fopen(mk, "r") : NULL;
        long pid = 0;
        char h[256] = "";
        if (f && fscanf(f, "ramfit %ld %255s", &pid, h) == 2 && pid > 0 && !strcmp(h, host) &&
            kill((pid_t)pid, 0) != 0 && errno == ESRCH)
            rmtree(tdir);
        if (f) fclose(f);
        free(mk);
        free(tdir);
    }
    if (d) closedir(d);
    free(copy);
}

static int dir_not_deletable(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)ftw;
    return flag == FTW_D && access(path, W_OK | X_OK) != 0; /* its entries could not be removed */
}

/* --force replaces OUT only when it is a previous ramfit output (ramfit.json) or an empty
 * directory whose contents this process can delete: "-o ~ --force" must not delete a home. */
static rf_status check_replaceable(const char *out, rf_err *err)
{
    struct stat sb;
    if (stat(out, &sb) != 0) return rf_err_errno(err, errno, "%s", out);
    if (!S_ISDIR(sb.st_mode))
        return rf_err_set(err, RF_ERR_EXISTS, "%s exists and is not a directory: --force replaces only an earlier ramfit "
                          "output or an empty directory", out);
    DIR *d = opendir(out);
    if (!d) return rf_err_errno(err, errno, "cannot read %s", out);
    struct dirent *e;
    int entries = 0, ours = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        entries++;
        ours |= !strcmp(e->d_name, "ramfit.json");
    }
    closedir(d);
    if (entries && !ours)
        return rf_err_set(err, RF_ERR_EXISTS, "%s is not an earlier ramfit output (no ramfit.json) and not empty: --force "
                          "replaces only those; remove it yourself or choose another output directory", out);
    if (nftw(out, dir_not_deletable, 16, FTW_PHYS) != 0)
        return rf_err_set(err, RF_ERR_IO, "--force: the files in %s cannot all be deleted (a folder in it is not writable): "
                          "nothing was written", out);
    return RF_OK;
}

static int path_within(const char *p, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/') return 1;
    return !strncmp(p, dir, n) && (p[n] == '\0' || p[n] == '/');
}

/* OUT_DIR must not be MODEL_DIR, inside it, or (when it would be replaced) contain it. */
static rf_status check_out_dir(const char *model_dir, const char *out_dir, int force, int *exists, rf_err *err)
{
    char mreal[PATH_MAX], preal[PATH_MAX], oreal[2 * PATH_MAX + 2], parent[PATH_MAX], basebuf[PATH_MAX];
    if (!realpath(model_dir, mreal)) return rf_err_errno(err, errno, "%s", model_dir);
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    if (n == 0 || n >= sizeof parent) return rf_err_set(err, RF_ERR_INVALID, "invalid output directory '%s'", out_dir);
    memcpy(parent, out_dir, n);
    parent[n] = '\0';
    char *slash = strrchr(parent, '/');
    const char *base = slash ? slash + 1 : parent;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return rf_err_set(err, RF_ERR_INVALID, "invalid output directory '%s': name a new directory", out_dir);
    memmove(basebuf, base, strlen(base) + 1);
    if (slash == parent) strcpy(parent, "/");
    else if (slash) *slash = '\0';
    else strcpy(parent, ".");
    struct stat sb;
    if (!realpath(parent, preal)) return rf_err_errno(err, errno, "output directory's parent %s", parent);
    if (stat(preal, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return rf_err_errno(err, ENOTDIR, "output directory's parent %s", parent);
    if (access(preal, W_OK | X_OK) != 0) return rf_err_errno(err, errno, "cannot write in %s", parent);
    snprintf(oreal, sizeof oreal, "%s/%s", strcmp(preal, "/") ? preal : "", basebuf);
    *exists = lstat(out_dir, &sb) == 0;
    char real2[PATH_MAX];
    const char *resolved = *exists && realpath(out_dir, real2) ? real2 : oreal;
    if (path_within(oreal, mreal) || path_within(resolved, mreal))
        return rf_err_set(err, RF_ERR_INVALID, "output directory %s is the model directory or inside it (%s): ramfit "
                          "never writes into the model", out_dir, mreal);
    if (*exists && (path_within(mreal, oreal) || path_within(mreal, resolved)))
        return rf_err_set(err, RF_ERR_INVALID, "output directory %s contains the model directory %s", out_dir, mreal);
    if (*exists && !force)
        return rf_err_set(err, RF_ERR_EXISTS, "%s already exists (use --force to replace it)", out_dir);
    if (*exists) return check_replaceable(out_dir, err);
    return RF_OK;
}

static char *path_cat(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

static rf_status copy_file(const char *src, const char *dst, rf_err *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return rf_err_errno(err, errno, "cannot open %s", src);
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    rf_status s = out < 0 ? rf_err_errno(err, errno, "cannot create %s", dst) : RF_OK;
    char *buf = s ? NULL : malloc(1 << 20);
    if (!s && !buf) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    while (!s) {
        ssize_t r = read(in, buf, 1 << 20);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) s = rf_err_errno(err, errno, "reading %s", src);
        if (r <= 0) break;
        for (ssize_t o = 0; o < r && !s;) {
            ssize_t wr = write(out, buf + o, (size_t)(r - o));
            if (wr < 0 && errno == EINTR) continue;
            if (wr <= 0) s = rf_err_errno(err, wr < 0 ? errno : ENOSPC, "writing %s", dst);
            else o += wr;
        }
    }
    if (!s && fsync(out) != 0) s = rf_err_errno(err, errno, "fsync %s", dst);
    if (out >= 0 && close(out) != 0 && !s) s = rf_err_errno(err, errno, "closing %s", dst);
    close(in);
    free(buf);
    return s;
}

/* What a loader of the output needs besides config.json and the weights, as mlx-lm's save keeps
 * it (tokenizer.save_pretrained, generation_config.json, *.py): tokenizer and vocabulary files,
 * chat templates, generation_config.json, custom code; and licence files, which the weights'
 * terms ask to travel with them. Everything else (pytorch_model.bin, *.gguf, original/ with
 * consolidated .pth files, README.md, images) is left out and named in the result. */
static int loader_file(const char *n)
{
    static const char *const prefix[] = {"tokenizer", "vocab.", "merges.", "special_tokens_map", "added_tokens",
                                         "chat_template", "generation_config.json", "LICENSE", "LICENCE", "NOTICE",
                                         "USE_POLICY", "COPYING"};
    static const char *const suffix[] = {".jinja", ".tiktoken", ".py"};
    for (size_t i = 0; i < sizeof prefix / sizeof prefix[0]; i++)
        if (!strncasecmp(n, prefix[i], strlen(prefix[i]))) return 1;
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++)
        if (ends_with(n, suffix[i])) return 1;
    return 0;
}

/* Adds NAME (SUFFIX: "/" for a directory) to the list of files left out. */
static void note_skipped(rf_quantize_result *res, const char *name, const char *suffix)
{
    if (!res) return;
    res->files_skipped++;
    size_t used = strlen(res->skipped), need = strlen(name) + strlen(suffix) + 2;
    if (used + need + 4 >= sizeof res->skipped) {
        if (!strstr(res->skipped, "...")) snprintf(res->skipped + used, sizeof res->skipped - used, "%s...", used ? ", " : "");
        return;
    }
    snprintf(res->skipped + used, sizeof res->skipped - used, "%s%s%s", used ? ", " : "", name, suffix);
}

static rf_status copy_other_files(const char *model_dir, const char *dst_dir, rf_quantize_result *res, rf_err *err)
{
    struct dirent **ents = NULL;
    int n = scandir(model_dir, &ents, NULL, alphasort);
    if (n < 0) return rf_err_errno(err, errno, "cannot list %s", model_dir);
    rf_status s = RF_OK;
    for (int i = 0; i < n; i++) {
        const char *name = ents[i]->d_name;
        /* the weights and config.json are written, not copied; dot files are not the model's */
        int ours = name[0] == '.' || ends_with(name, ".safetensors") || ends_with(name, ".safetensors.index.json") ||
                   !strcmp(name, "config.json") || !strcmp(name, "ramfit.json");
        char *src = s || ours ? NULL : path_cat(model_dir, name);
        struct stat sb;
        if (src && stat(src, &sb) == 0) {
            if (S_ISREG(sb.st_mode) && loader_file(name)) {
                char *dst = path_cat(dst_dir, name);
                s = dst ? copy_file(src, dst, err) : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
                free(dst);
            } else {
                note_skipped(res, name, S_ISDIR(sb.st_mode) ? "/" : "");
            }
        }
        free(src);
        free(ents[i]);
    }
    free(ents);
    return s;
}

/* ------------------------------------------------------------------ index, config, ramfit.json */

static rf_status write_config(const qz *q, const char *dir, rf_err *err)
{
    rf_mlx_qmod *mods = calloc(q->nitems + 1, sizeof *mods);
    if (!mods) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (uint64_t i = 0; i < q->nitems; i++)
        if (q->items[i].kind == QZ_QUANT)
            mods[n++] = (rf_mlx_qmod){q->items[i].name, q->items[i].bits, q->items[i].gs, q->items[i].params};
    char *path = path_cat(dir, "config.json");
    rf_dtype td = q->converted ? q->kept_f32 : RF_DT_INVALID;
    rf_status s = path ? rf_mlx_write_config(rf_model_dir(q->m), path, rf_model_config(q->m), mods, n, td, err)
                       : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    free(path);
    free(mods);
    return s;
}

static rf_status write_ramfit_json(const qz *q, const rf_quantize_opts *o, const char *dir, rf_err *err)
{
    char *ptext = NULL;
    size_t plen = 0;
    rf_status s = rf_plan_to_json(q->plan, &ptext, &plen, err);
    if (s) return s;
    json_t *pj = NULL;
    s = rf_json_parse(ptext, plen, "the plan (for ramfit.json)", 0, &pj, err);
    free(ptext);
    if (s) return s; /* not "out of memory": what is wrong with the plan text */
    char fp[24];
    snprintf(fp, sizeof fp, "%016llx", (ull)rf_plan_fingerprint(q->plan));
    json_t *r = json_object();
    int bad = !pj || !r;
    if (!bad) {
        bad |= json_object_set_new(r, "ramfit_version", json_string(RF_VERSION_STRING)) != 0;
        bad |= json_object_set_new(r, "format", json_string("mlx")) != 0;
        bad |= json_object_set_new(r, "model", json_string(rf_plan_model_name(q->plan))) != 0;
        bad |= json_object_set_new(r, "source_dir", json_string(rf_model_dir(q->m))) != 0;
        bad |= json_object_set_new(r, "fingerprint", json_string(fp)) != 0;
        bad |= json_object_set_new(r, "mode", json_string(rf_qmode_token(q->mode))) != 0;
        /* what F32 tensors became; null when there were none (nothing was converted) */
        int f32 = has_f32(q->m);
        bad |= json_object_set_new(r, "f32_kept_as", f32 ? json_string(rf_dtype_name(q->kept_f32)) : json_null()) != 0;
        bad |= json_object_set_new(r, "f32_scales_as", f32 ? json_string(rf_dtype_name(q->scale_f32)) : json_null()) != 0;
        bad |= json_object_set_new(r, "budget", json_integer((json_int_t)rf_plan_budget(q->plan))) != 0;
        bad |= json_object_set_new(r, "tensor_bytes", json_integer((json_int_t)q->written)) != 0;
        bad |= json_object_set_new(r, "params", json_integer((json_int_t)q->params)) != 0;
        bad |= json_object_set_new(r, "profile", o->profile_path ? json_string(o->profile_path) : json_null()) != 0;
        if (o->gptq) {
            char sum[24];
            snprintf(sum, sizeof sum, "%016llx", (ull)rf_stats_checksum(o->gptq));
            bad |= json_object_set_new(r, "gptq", json_pack("{s:s, s:s, s:I, s:f, s:I}", "grid", rf_qmode_token(q->mode),
                                                            "stats_text", rf_stats_text(o->gptq), "stats_tokens",
                                                            (json_int_t)rf_stats_tokens(o->gptq), "damp", o->gptq_damp,
                                                            "factors", (json_int_t)qz_gptq_factors_made(q->gptq))) != 0;
            bad |= json_object_set_new(json_object_get(r, "gptq"), "stats_fnv1a64", json_string(sum)) != 0;
        }
        bad |= json_object_set_new(r, "plan", pj) != 0;
        pj = NULL;
    }
    char *text = bad ? NULL : json_dumps(r, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(r);
    json_decref(pj);
    if (!text) return rf_err_set(err, RF_ERR_NOMEM, "out of memory (ramfit.json)");
    char *path = path_cat(dir, "ramfit.json");
    s = path ? rf_mlx_write_file(path, text, strlen(text), err) : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    free(path);
    free(text);
    return s;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd); /* best effort */
    close(fd);
}

static uint64_t count_shards(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (ends_with(e->d_name, ".safetensors")) n++;
    if (d) closedir(d);
    return n;
}

/* Move TMP to OUT; an existing OUT (force) is renamed away first and deleted after. */
static rf_status install(const char *tmp, const char *out, int exists, rf_err *err)
{
    if (!exists) {
        if (rename(tmp, out) != 0) return rf_err_errno(err, errno, "renaming %s to %s", tmp, out);
        return RF_OK;
    }
    size_t n = strlen(out) + 16;
    char *old = malloc(n);
    if (!old) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    snprintf(old, n, "%s.old-XXXXXX", out);
    rf_status s = RF_OK;
    if (!mkdtemp(old) || rmdir(old) != 0) s = rf_err_errno(err, errno, "cannot make a name next to %s", out);
    if (!s && rename(out, old) != 0) s = rf_err_errno(err, errno, "moving the old %s away", out);
    if (!s && rename(tmp, out) != 0) {
        s = rf_err_errno(err, errno, "renaming %s to %s", tmp, out);
        (void)rename(old, out); /* put the old output back */
    } else if (!s && !rmtree(old)) {
        s = rf_err_set(err, RF_ERR_IO, "the new output is complete in %s, but the old one it replaced could not be fully "
                       "deleted: %s remains (remove it yourself)", out, old);
    }
    free(old);
    return s;
}

/* ------------------------------------------------------------------ entry point */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static rf_status check_plan(const qz *q, const rf_quantize_opts *o, rf_err *err)
{
    const rf_model *m = q->m;
    uint64_t fp = rf_st_fingerprint(rf_model_st(m));
    if (rf_plan_fingerprint(q->plan) != fp)
        return rf_err_set(err, RF_ERR_MISMATCH, "the plan was made for %s (fingerprint %016llx), not for %s "
                          "(fingerprint %016llx)", rf_plan_model_name(q->plan), (ull)rf_plan_fingerprint(q->plan),
                          rf_model_dir(m), (ull)fp);
    if (o->mode >= 0 && (rf_qmode)o->mode != rf_plan_mode(q->plan))
        return rf_err_set(err, RF_ERR_MISMATCH, "the plan assumed the %s quantizer, not %s (its errors and choices are "
                          "for that mode)", rf_qmode_token(rf_plan_mode(q->plan)), rf_qmode_token((rf_qmode)o->mode));
    return rf_quantize_check_dtype(m, o->f32_as, err);
}

static void qz_free(qz *q)
{
    for (uint64_t i = 0; i < q->nitems; i++) item_release(&q->items[i]);
    free(q->items);
    free(q->jobs);
    free(q->arena[0]);
    free(q->arena[1]);
    free(q->jerr);
    free(q->jst);
    free(q->gather);
    qz_gptq_free(q->gptq);
}

/* Items under the current dtype rule, with totals; RF_ERR_MISMATCH unless the plan counted the
 * same bytes. */
static rf_status items_for_rule(qz *q, rf_err *err)
{
    free(q->items);
    q->items = NULL;
    q->nitems = 0;
    q->written = q->params = q->input_bytes = q->skipped_plan_bytes = q->dropped_bytes = q->nquant = q->nkept = 0;
    q->converted = 0;
    rf_status s = build_items(q, err);
    for (uint64_t i = 0; i < q->nitems && !s; i++) {
        const qz_item *it = &q->items[i];
        q->written += it->out_bytes;
        q->params += it->params;
        q->input_bytes += it->in_bytes;
        q->converted |= it->kind == QZ_CONVERT;
        q->nquant += it->unit && it->kind == QZ_QUANT;
        q->nkept += it->unit && it->kind != QZ_QUANT;
    }
    uint64_t expect = rf_plan_total_bytes(q->plan) - q->skipped_plan_bytes - q->dropped_bytes;
    if (!s && q->written != expect)
        s = rf_err_set(err, RF_ERR_MISMATCH, "the output would hold %llu tensor bytes, the plan %llu", (ull)q->written,
                       (ull)expect);
    return s;
}

/* 1 when the checkpoint has F32 (or F64) tensors: the only ones whose output dtype is a choice. */
static int has_f32(const rf_model *m)
{
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        if (ti->fp8_scale || ti->dropped) continue; /* not written */
        if (ti->t->dtype == RF_DT_F32 || ti->t->dtype == RF_DT_F64) return 1;
    }
    return 0;
}

rf_status rf_quantize_check_dtype(const rf_model *m, rf_dtype f32_as, rf_err *err)
{
    if (f32_as == RF_DT_INVALID) return RF_OK;
    if (f32_as != RF_DT_BF16 && f32_as != RF_DT_F16 && f32_as != RF_DT_F32)
        return rf_err_set(err, RF_ERR_INVALID, "output dtype for F32 tensors must be BF16, F16 or F32");
    if (has_f32(m)) return RF_OK;
    /* nothing to convert: fine if every float tensor already is F32_AS, else the option would be
     * recorded without being done */
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        const rf_tensor *t = ti->t;
        if (ti->fp8_scale || ti->dropped) continue;
        if (rf_quantize_out_dtype(t->dtype, f32_as) != f32_as && (rf_dtype_is_float(t->dtype) || t->dtype == RF_DT_F8_E4M3))
            return rf_err_set(err, RF_ERR_INVALID, "dtype %s asked for, but %s has no F32 tensors (tensor %s is %s): ramfit "
                              "converts only F32 tensors and writes 16-bit ones as they are; leave out the dtype option",
                              rf_dtype_name(f32_as), rf_model_dir(m), t->name, rf_dtype_name(t->dtype));
    }
    return RF_OK;
}

static const rf_dtype f32_rules[3][2] = {{RF_DT_BF16, RF_DT_BF16}, {RF_DT_F32, RF_DT_BF16}, {RF_DT_F32, RF_DT_F32}};

/* F32 tensors: with an explicit F32_AS, kept weights and scales both in it; otherwise the first
 * rule whose byte counts agree with the plan's: BF16 (the default: kept F32 weights become BF16),
 * F32 weights kept as they are with BF16 scales (profiles of ramfit 0.1's analyse), or
 * everything F32 (analyse --dtype f32: mlx-lm's output for a float32 checkpoint). F16 is only ever
 * explicit. Only F32 checkpoints differ. */
static rf_status choose_rule(qz *q, rf_dtype f32_as, rf_err *err)
{
    rf_dtype pf = rf_plan_f32_as(q->plan); /* recorded since 0.2: no guessing from byte counts */
    if (pf != RF_DT_INVALID && f32_as != RF_DT_INVALID && f32_as != pf)
        return rf_err_set(err, RF_ERR_MISMATCH, "the plan counts F32 tensors as %s (its profile was analysed with --dtype %s), "
                          "not %s: plan from a profile made with 'ramfit analyse --dtype %s', or leave out the dtype option",
                          rf_dtype_name(pf), pf == RF_DT_F32 ? "f32" : pf == RF_DT_F16 ? "f16" : "bf16",
                          rf_dtype_name(f32_as), f32_as == RF_DT_F32 ? "f32" : f32_as == RF_DT_F16 ? "f16" : "bf16");
    if (f32_as == RF_DT_INVALID) f32_as = pf;
    if (f32_as != RF_DT_INVALID) {
        q->kept_f32 = q->scale_f32 = f32_as;
        rf_status s = items_for_rule(q, err);
        if (s != RF_ERR_MISMATCH) return s;
        /* name the rule the plan was made under, when it is one of the others */
        rf_err keep;
        if (err) keep = *err;
        static const rf_dtype alt[4][2] = {{RF_DT_BF16, RF_DT_BF16}, {RF_DT_F32, RF_DT_BF16}, {RF_DT_F32, RF_DT_F32},
                                           {RF_DT_F16, RF_DT_F16}};
        for (int r = 0; r < 4; r++) {
            q->kept_f32 = alt[r][0];
            q->scale_f32 = alt[r][1];
            if (items_for_rule(q, NULL) == RF_OK)
                return rf_err_set(err, RF_ERR_MISMATCH, "the plan counts F32 tensors as %s (scales %s), not %s: plan from "
                                  "a profile made with 'ramfit analyse --dtype %s', or leave out the dtype option",
                                  rf_dtype_name(alt[r][0]), rf_dtype_name(alt[r][1]), rf_dtype_name(f32_as),
                                  f32_as == RF_DT_F32 ? "f32" : f32_as == RF_DT_F16 ? "f16" : "bf16");
        }
        if (err) *err = keep;
        return s;
    }
    rf_err first;
    rf_status s0 = RF_OK;
    for (int r = 0; r < 3; r++) {
        q->kept_f32 = f32_rules[r][0];
        q->scale_f32 = f32_rules[r][1];
        rf_status s = items_for_rule(q, err);
        if (s != RF_ERR_MISMATCH) return s;
        if (r == 0) {
            s0 = s;
            if (err) first = *err;
        }
    }
    if (err) *err = first;
    return s0;
}

/* Writes the whole checkpoint into the empty directory TMP. */
static rf_status write_all(qz *q, const rf_quantize_opts *o, const char *tmp, const rf_progress *pr, uint64_t *files,
                           rf_quantize_result *res, rf_err *err)
{
    rf_stw_opts wo = {.max_shard_bytes = o->max_shard_bytes ? o->max_shard_bytes : QZ_DEFAULT_SHARD,
                      .basename = "model", .always_index = 1};
    rf_stw *w = NULL;
    rf_pool *pool = NULL;
    rf_status s = rf_stw_create(tmp, &wo, &w, err);
    if (!s) s = rf_stw_set_metadata(w, "format", "mlx", err);
    for (uint64_t i = 0; i < q->nitems && !s; i++) s = declare_item(w, &q->items[i], err);
    if (!s && rf_stw_total_bytes(w) != q->written)
        s = rf_err_set(err, RF_ERR_INTERNAL, "declared %llu bytes, expected %llu", (ull)rf_stw_total_bytes(w),
                       (ull)q->written);
    if (!s) s = rf_pool_create(o->threads, &pool, err);
    if (!s) {
        /* a job reads at most rf_qz_job_bytes of source rows (one row at least) */
        uint64_t need = 0;
        for (uint64_t i = 0; i < q->nitems; i++)
            if (q->items[i].unit && q->items[i].unit->transformed) {
                uint64_t row = q->items[i].cols * rf_dtype_size(q->items[i].src_dt);
                uint64_t b = rf_qz_job_bytes > row ? rf_qz_job_bytes + row : row;
                need = b > need ? b : need;
            }
        q->gather_bytes = need;
        if (need && !(q->gather = malloc(need * (uint64_t)rf_pool_threads(pool))))
            s = rf_err_set(err, RF_ERR_NOMEM, "out of memory (read-out buffers)");
    }
    if (!s) s = write_tensors(q, w, pool, pr, err);
    if (!s) s = rf_stw_finish(w, err);
    rf_stw_free(w);
    rf_pool_free(pool);
    if (!s) s = write_config(q, tmp, err);
    if (!s) s = copy_other_files(rf_model_dir(q->m), tmp, res, err);
    if (!s) s = write_ramfit_json(q, o, tmp, err);
    if (!s) {
        sync_dir(tmp);
        *files = count_shards(tmp);
    }
    return s;
}

rf_status rf_quantize_write(const rf_model *m, const rf_plan *plan, const rf_quantize_opts *opts, const char *out_dir,
                            const rf_progress *progress, rf_quantize_result *res, rf_err *err)
{
    if (!m || !plan || !out_dir) return rf_err_set(err, RF_ERR_INVALID, "rf_quantize_write: NULL argument");
    double t0 = now_s();
    rf_quantize_opts o;
    if (opts) o = *opts;
    else rf_quantize_opts_default(&o);
    qz q = {.m = m, .plan = plan, .mode = rf_plan_mode(plan)};
    int exists = 0;
    if (rf_plan_is_gguf(plan))
        return rf_err_set(err, RF_ERR_MISMATCH, "the plan is over GGUF types: write it with --format gguf (a .gguf file)");
    rf_status s = check_plan(&q, &o, err);
    if (!s) { /* a model mlx-lm could not load is refused before anything is written */
        json_t *probe = json_object();
        s = probe ? rf_mlx_config(rf_model_config(m), probe, err) : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        if (s && s != RF_ERR_NOMEM) rf_err_prefix(err, "%s: ", rf_model_dir(m));
        json_decref(probe);
    }
    if (!s && o.gptq) {
        if (o.gptq_damp <= 0) o.gptq_damp = 0.01;
        if (!rf_stats_has_hessian(o.gptq))
            s = rf_err_set(err, RF_ERR_INVALID, "the statistics were collected without Hessians (calibrate --no-hessian): "
                           "GPTQ needs them");
        if (!s) s = rf_stats_check_model(o.gptq, m, err);
        if (!s) s = qz_gptq_create(o.gptq, o.gptq_damp, o.gptq_memory ? o.gptq_memory : 1ull << 30, &q.gptq, err);
    }
    if (!s) s = check_out_dir(rf_model_dir(m), out_dir, o.force, &exists, err);
    if (!s) s = choose_rule(&q, o.f32_as, err);
    if (!s) s = build_jobs(&q, err);
    char *tmp = NULL;
    uint64_t files = 0;
    if (!s) {
        size_t n = strlen(out_dir) + 16;
        tmp = malloc(n);
        if (!tmp) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        else {
            size_t l = strlen(out_dir);
            while (l > 1 && out_dir[l - 1] == '/') l--;
            snprintf(tmp, n, "%.*s.tmp-XXXXXX", (int)l, out_dir);
            /* mkdtemp makes it 0700; remade with the caller's umask so the output is as readable
             * as any directory they create (mlx-lm run by another user, a shared model store). */
            remove_stale_temps(out_dir);
            if (!mkdtemp(tmp) || rmdir(tmp) != 0 || mkdir(tmp, 0777) != 0) {
                s = rf_err_errno(err, errno, "cannot create a temporary directory next to %s", out_dir);
                free(tmp);
                tmp = NULL;
            } else {
                s = write_marker(tmp, err);
            }
        }
    }
    rf_quantize_result r = {0};
    if (!s) s = write_all(&q, &o, tmp, progress, &files, &r, err);
    if (!s) {
        char *mk = path_cat(tmp, QZ_MARKER); /* the output is complete: no longer a temporary */
        if (!mk || unlink(mk) != 0) s = rf_err_errno(err, mk ? errno : ENOMEM, "removing the marker in %s", tmp);
        free(mk);
    }
    if (!s) s = install(tmp, out_dir, exists, err);
    if (s && tmp) rmtree(tmp);
    free(tmp);
    if (!s && res) {
        *res = r; /* the files left out */
        res->tensor_bytes = q.written;
        res->input_bytes = q.input_bytes;
        res->params = q.params;
        for (uint64_t i = 0; i < q.nitems; i++) res->tensors += q.items[i].kind == QZ_QUANT ? 3 : 1;
        res->files = files;
        res->units_quantized = q.nquant;
        res->units_kept = q.nkept;
        res->seconds = now_s() - t0;
        res->f32_kept_as = has_f32(m) ? q.kept_f32 : RF_DT_INVALID;
        res->f32_scales_as = has_f32(m) ? q.scale_f32 : RF_DT_INVALID;
        res->gptq_factors = qz_gptq_factors_made(q.gptq);
        res->gptq_peak_bytes = qz_gptq_peak_bytes(q.gptq);
    }
    qz_free(&q);
    return s;
}
