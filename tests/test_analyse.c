/* The analysis pass: whole-model accounting, errors against an independent quantize +
 * dequantize + compare, thread-count independence, stacked experts, failures (NaN, truncated
 * shard, unsupported dtype), interruption and resume, profile/model matching, and the CLI. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static char *synth_model(const char *like, double scale, int layers, int vocab, int experts)
{
    char *dir = tu_mkdtemp();
    rf_synth_opts o;
    rf_synth_opts_default(&o);
    o.like = like;
    o.scale = scale;
    o.layers = layers;
    o.vocab = vocab;
    o.experts = experts;
    o.seed = 7;
    o.threads = 2;
    rf_err err;
    TU_OK(rf_synth_write(&o, dir, NULL, &err), &err);
    return dir;
}

static rf_model *open_model(const char *dir)
{
    rf_model *m = NULL;
    rf_err err;
    TU_OK(rf_model_open(dir, &m, &err), &err);
    return m;
}

static rf_profile *analyse(const rf_model *m, int threads, unsigned modes, uint64_t block)
{
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.threads = threads;
    o.modes = modes;
    o.block_bytes = block;
    rf_profile *p = NULL;
    rf_err err;
    TU_OK(rf_analyse(m, &o, &p, &err), &err);
    return p;
}

static char *profile_text(const rf_profile *p)
{
    char *t;
    size_t n;
    rf_err err;
    TU_OK(rf_profile_to_json(p, &t, &n, &err), &err);
    return t;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void assert_close(double a, double b, double rel, const char *what)
{
    double tol = rel * fmax(fabs(a), fabs(b)) + 1e-30;
    if (!(fabs(a - b) <= tol)) fail_msg("%s: %.17g vs %.17g", what, a, b);
}

/* ------------------------------------------------------------------ accounting */

/* Bytes of tensor T when kept in the output: F32 sources are written as BF16 (the default). */
static uint64_t out_bytes(const rf_tensor *t)
{
    return t->nelem * rf_dtype_size(t->dtype == RF_DT_F32 ? RF_DT_BF16 : t->dtype);
}

/* Every tensor appears exactly once (units by module, others by name); bytes add up. */
static void check_accounting(const rf_model *m, const rf_profile *p)
{
    uint64_t nt = rf_model_tensor_count(m), others = 0, bytes = 0, params = 0;
    int *seen = calloc(rf_profile_unit_count(p) + 1, sizeof *seen);
    for (uint64_t i = 0; i < nt; i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        bytes += out_bytes(ti->t);
        params += ti->t->nelem;
        if (ti->unit >= 0) {
            int64_t k = rf_profile_find_unit(p, rf_model_unit(m, (uint64_t)ti->unit)->name);
            assert_true(k >= 0);
            seen[k]++;
        } else {
            others++;
            int found = 0;
            for (uint64_t j = 0; j < rf_profile_other_count(p); j++)
                found += !strcmp(rf_profile_other(p, j)->name, ti->t->name);
            assert_int_equal(found, 1);
        }
    }
    assert_int_equal(rf_profile_unit_count(p), rf_model_unit_count(m));
    assert_int_equal(rf_profile_other_count(p), others);
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        int64_t k = rf_profile_find_unit(p, un->name);
        assert_int_equal(seen[k], un->n_members); /* every member once, nothing else */
        const rf_punit *pu = rf_profile_unit(p, (uint64_t)k);
        uint64_t kb = 0;
        for (int j = 0; j < un->n_members; j++) kb += out_bytes(rf_model_tinfo(m, (uint64_t)un->members[j])->t);
        assert_int_equal(pu->kept_bytes, kb);
        /* Candidates: exactly the configs whose gs divides cols; exact MLX bytes with 16-bit scales. */
        int want = 0;
        for (int c = 0; c < 18 && un->quantizable; c++) want += un->cols % (uint64_t)rf_qgs[c % 3] == 0;
        assert_int_equal(pu->n_cands, want);
        for (int c = 0; c < pu->n_cands; c++) {
            const rf_pcand *pc = &pu->cands[c];
            uint64_t n = pu->nparams;
            assert_int_equal(pc->bytes, n * (uint64_t)pc->bits / 8 + 2 * (n / (uint64_t)pc->gs) * 2);
        }
    }
    assert_int_equal(rf_profile_full_bytes(p), bytes);
    assert_int_equal(rf_profile_param_count(p), params);
    free(seen);
}

static void test_stories_accounting(void **state)
{
    (void)state;
    const char *dir = tu_model_dir("stories260k");
    if (!dir) skip();
    rf_model *m = open_model(dir);
    rf_profile *p = analyse(m, 2, 3, 0);
    check_accounting(m, p);
    /* ffn 172: down_proj is a unit that can only be kept */
    int64_t k = rf_profile_find_unit(p, "model.layers.0.mlp.down_proj");
    assert_true(k >= 0);
    assert_int_equal(rf_profile_unit(p, (uint64_t)k)->n_cands, 0);
    assert_true(rf_profile_unit(p, (uint64_t)k)->ssq > 0);
    /* the saved file loads back to the same text */
    char *t1 = profile_text(p);
    rf_profile *q;
    rf_err err;
    TU_OK(rf_profile_from_json(t1, strlen(t1), "t", &q, &err), &err);
    char *t2 = profile_text(q);
    assert_string_equal(t1, t2);
    TU_OK(rf_analyse_check_profile(m, q, &err), &err);
    free(t1);
    free(t2);
    rf_profile_free(q);
    rf_profile_free(p);
    rf_model_free(m);
}

/* ------------------------------------------------------------------ errors, independently */

typedef struct ref { double sse, ssq, s1, s3, s4, amax; float emax; } ref;

/* quantize + dequantize + compare, member by member, in doubles. */
static void reference(const rf_model *m, const rf_unit *u, int bits, int gs, rf_qmode mode, ref *r)
{
    memset(r, 0, sizeof *r);
    rf_err err;
    for (int k = 0; k < u->n_members; k++) {
        const rf_tensor *t = rf_model_tinfo(m, (uint64_t)u->members[k])->t;
        uint64_t rows = t->nelem / u->cols, cols = u->cols, n = t->nelem;
        rf_dtype sd = t->dtype == RF_DT_F16 ? RF_DT_F16 : RF_DT_BF16;
        uint32_t *packed = malloc(n / 32 * (uint64_t)bits * 4);
        uint16_t *sc = malloc(n / (uint64_t)gs * 2), *bi = malloc(n / (uint64_t)gs * 2);
        float *w = malloc(n * 4), *d = malloc(n * 4);
        TU_OK(rf_convert_to_f32(t->dtype, t->data, w, n, &err), &err);
        TU_OK(rf_quant_quantize(t->dtype, t->data, rows, cols, bits, gs, mode, sd, packed, sc, bi, &err), &err);
        TU_OK(rf_quant_dequantize(packed, sc, bi, sd, rows, cols, bits, gs, d, &err), &err);
        for (uint64_t i = 0; i < n; i++) {
            double e = (double)w[i] - (double)d[i], v = w[i];
            r->sse += e * e;
            r->ssq += v * v;
            r->s1 += v;
            r->s3 += v * v * v;
            r->s4 += v * v * v * v;
            r->amax = fmax(r->amax, fabs(v));
            float fe = fabsf(w[i] - d[i]);
            r->emax = fe > r->emax ? fe : r->emax;
        }
        free(packed), free(sc), free(bi), free(w), free(d);
    }
}

static void check_errors(const rf_model *m, const rf_profile *p, unsigned modes, int max_units)
{
    int checked = 0;
    for (uint64_t u = 0; u < rf_model_unit_count(m) && checked < max_units; u++) {
        const rf_unit *un = rf_model_unit(m, u);
        const rf_punit *pu = rf_profile_unit(p, (uint64_t)rf_profile_find_unit(p, un->name));
        if (!pu->n_cands) continue;
        checked++;
        for (int c = 0; c < pu->n_cands; c += 5) { /* a spread of configs */
            const rf_pcand *pc = &pu->cands[c];
            for (int mo = 0; mo < 2; mo++) {
                if (!(modes >> mo & 1)) continue;
                ref r;
                reference(m, un, pc->bits, pc->gs, (rf_qmode)mo, &r);
                char what[256];
                snprintf(what, sizeof what, "%s %d/%d %s sse", un->name, pc->bits, pc->gs, mo ? "opt" : "mlx");
                assert_close(pc->err[mo].sse, r.sse, 1e-5, what);
                assert_close(pc->err[mo].max_abs, r.emax, 1e-6, what);
                assert_close(pu->ssq, r.ssq, 1e-6, "ssq");
                double n = (double)pu->nparams, mu = r.s1 / n, var = r.ssq / n - mu * mu;
                double m4 = r.s4 / n - 4 * mu * r.s3 / n + 6 * mu * mu * r.ssq / n - 3 * mu * mu * mu * mu;
                assert_close(pu->stats.mean * n, r.s1, 1e-4 * sqrt(r.ssq) / fmax(fabs(r.s1), 1e-30) + 1e-6, "mean");
                assert_close(pu->stats.rms, sqrt(r.ssq / n), 1e-6, "rms");
                assert_close(pu->stats.absmax, r.amax, 0, "absmax");
                assert_close(pu->stats.kurtosis, m4 / (var * var) - 3, 1e-4, "kurtosis");
            }
        }
    }
    assert_true(checked > 0);
}

static void test_errors_independent(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    rf_model *m = open_model(dir);
    rf_profile *p = analyse(m, 2, 3, 16384); /* small blocks: many per tensor */
    check_accounting(m, p);
    check_errors(m, p, 3, 100);
    /* frac_6sigma, counted directly */
    const rf_unit *un = rf_model_unit(m, 0);
    const rf_punit *pu = rf_profile_unit(p, (uint64_t)rf_profile_find_unit(p, un->name));
    const rf_tensor *t = rf_model_tinfo(m, (uint64_t)un->members[0])->t;
    double s1 = 0, s2 = 0;
    for (uint64_t i = 0; i < t->nelem; i++) {
        double v = rf_bf16_to_f32(((const uint16_t *)t->data)[i]);
        s1 += v, s2 += v * v;
    }
    double mu = s1 / (double)t->nelem, sd = sqrt(s2 / (double)t->nelem - mu * mu);
    uint64_t out = 0;
    for (uint64_t i = 0; i < t->nelem; i++) {
        double v = rf_bf16_to_f32(((const uint16_t *)t->data)[i]);
        out += fabs(v - mu) > 6 * sd;
    }
    assert_true(out > 0); /* heavy tails */
    assert_close(pu->stats.frac_6sigma * (double)t->nelem, (double)out, 1e-9, "frac_6sigma");
    rf_profile_free(p);
    rf_model_free(m);
    tu_rmtree(dir);
    free(dir);
}

static void test_stories_errors(void **state)
{
    (void)state;
    const char *dir = tu_model_dir("stories260k");
    if (!dir) skip();
    rf_model *m = open_model(dir);
    rf_profile *p = analyse(m, 1, 3, 4096);
    check_errors(m, p, 3, 6);
    rf_profile_free(p);
    rf_model_free(m);
}

/* ------------------------------------------------------------------ determinism */

static void test_threads_identical(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-30b-a3b", 0.0625, 2, 512, 4);
    rf_model *m = open_model(dir);
    char *text[3];
    for (int t = 1; t <= 3; t++) {
        rf_profile *p = analyse(m, t, 1, 8192);
        text[t - 1] = profile_text(p);
        if (t == 1) check_accounting(m, p);
        rf_profile_free(p);
    }
    assert_string_equal(text[0], text[1]);
    assert_string_equal(text[0], text[2]);
    for (int t = 0; t < 3; t++) free(text[t]);
    rf_model_free(m);
    tu_rmtree(dir);
    free(dir);
}

/* The SIMD paths (moments, outlier count, quantization kernels) give the same profile as the
 * scalar ones. */
static void test_scalar_matches_fast(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 1, 512, 0);
    rf_model *m = open_model(dir);
    rf_profile *p = analyse(m, 2, 1, 8192);
    char *fast = profile_text(p);
    rf_profile_free(p);
    rf_cpu_set_mask(0);
    p = analyse(m, 2, 1, 8192);
    rf_cpu_set_mask(~0u);
    char *slow = profile_text(p);
    assert_string_equal(fast, slow);
    free(fast), free(slow);
    rf_profile_free(p);
    rf_model_free(m);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ experts */

static void check_moe(const char *dir, int per_unit_checks)
{
    rf_model *m = open_model(dir);
    rf_profile *p = analyse(m, 2, 1, 0);
    check_accounting(m, p);
    int banks = 0;
    rf_err err;
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        if (!un->n_experts) continue;
        const rf_punit *pu = rf_profile_unit(p, (uint64_t)rf_profile_find_unit(p, un->name));
        assert_int_equal(pu->n_members, un->n_experts);
        if (banks++ >= per_unit_checks) continue;
        /* aggregate = sum over experts of each expert measured alone; max of max */
        const rf_pcand *pc = &pu->cands[pu->n_cands / 2];
        double sse = 0, emax = 0;
        for (int k = 0; k < un->n_members; k++) {
            const rf_tensor *t = rf_model_tinfo(m, (uint64_t)un->members[k])->t;
            rf_qerr q;
            TU_OK(rf_quant_error(t->dtype, t->data, t->nelem / un->cols, un->cols, pc->bits, pc->gs, RF_QMODE_MLX,
                                 RF_DT_BF16, &q, &err), &err);
            sse += q.sse;
            emax = fmax(emax, q.max_abs);
        }
        assert_close(pc->err[0].sse, sse, 1e-9, "expert bank sse");
        assert_close(pc->err[0].max_abs, emax, 0, "expert bank max_abs");
    }
    assert_true(banks > 0);
    rf_profile_free(p);
    rf_model_free(m);
}

static void test_moe_shared(void **state)
{
    (void)state;
    const char *dir = tu_model_dir("qwen3-moe-mini");
    if (!dir) skip();
    check_moe(dir, 2);
}

static void test_moe_synthetic(void **state)
{
    (void)state;
    char *dir = synth_model("mixtral-8x7b", 0.03125, 1, 256, 2);
    check_moe(dir, 3);
    rf_model *m = open_model(dir);
    rf_profile *p = analyse(m, 2, 1, 0);
    check_errors(m, p, 1, 3);
    rf_profile_free(p);
    rf_model_free(m);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ failures */

static void poke(const char *dir, const char *tensor, uint64_t elem, uint16_t bits)
{
    rf_st *st;
    rf_err err;
    TU_OK(rf_st_open(dir, &st, &err), &err);
    const rf_tensor *t = rf_st_find(st, tensor);
    assert_non_null(t);
    FILE *f = fopen(t->file, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, (long)(t->offset + elem * 2), SEEK_SET), 0);
    assert_int_equal(fwrite(&bits, 2, 1, f), 1);
    fclose(f);
    rf_st_close(st);
}

static void cli_fails(const char *model, const char *must_say, const char *must_say2)
{
    char *tmp = tu_mkdtemp(), args[8192], prof[4096], *out = NULL;
    snprintf(prof, sizeof prof, "%s/p.json", tmp);
    snprintf(args, sizeof args, "analyse '%s' -o '%s' --quiet", model, prof);
    int rc = tu_run_cli(args, &out);
    assert_int_equal(rc, 1);
    if (!strstr(out, must_say) || (must_say2 && !strstr(out, must_say2))) fail_msg("unexpected message: %s", out);
    assert_false(exists(prof));
    snprintf(args, sizeof args, "%s.tmp", prof);
    assert_false(exists(args));
    snprintf(args, sizeof args, "%s.partial", prof);
    assert_false(exists(args));
    free(out);
    tu_rmtree(tmp);
    free(tmp);
}

static void test_nan(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    poke(dir, "model.layers.1.mlp.up_proj.weight", 3 * 128 + 17, 0x7fc0);
    rf_model *m = open_model(dir);
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.threads = 2;
    rf_profile *p = NULL;
    rf_err err;
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_NONFINITE);
    assert_null(p);
    assert_non_null(strstr(err.msg, "model.layers.1.mlp.up_proj.weight"));
    assert_non_null(strstr(err.msg, "[3, 17]"));
    rf_model_free(m);
    cli_fails(dir, "NaN", "model.layers.1.mlp.up_proj.weight");
    poke(dir, "model.layers.1.mlp.up_proj.weight", 3 * 128 + 17, 0xff80); /* -inf */
    cli_fails(dir, "infinite", "[3, 17]");
    tu_rmtree(dir);
    free(dir);
    /* in a kept tensor (a norm): it was copied into the profile's "others" and the output unnoticed */
    dir = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    poke(dir, "model.norm.weight", 5, 0x7fc0);
    m = open_model(dir);
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_NONFINITE);
    assert_null(p);
    assert_non_null(strstr(err.msg, "model.norm.weight"));
    assert_non_null(strstr(err.msg, "[5]"));
    rf_model_free(m);
    cli_fails(dir, "NaN", "model.norm.weight");
    tu_rmtree(dir);
    free(dir);
}

static void test_truncated(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size - 1000), 0);
    cli_fails(dir, "model.safetensors", NULL);
    tu_rmtree(dir);
    free(dir);
}

/* Copy DIR's checkpoint into OUT with tensor NAME stored as I32. */
static void rewrite_as_i32(const char *dir, const char *out, const char *name)
{
    rf_st *st;
    rf_stw *w;
    rf_err err;
    TU_OK(rf_st_open(dir, &st, &err), &err);
    rf_stw_opts wo = {.basename = "model"};
    TU_OK(rf_stw_create(out, &wo, &w, &err), &err);
    for (uint64_t i = 0; i < rf_st_count(st); i++) {
        const rf_tensor *t = rf_st_get(st, i);
        TU_OK(rf_stw_declare(w, t->name, strcmp(t->name, name) ? t->dtype : RF_DT_I32, t->ndim, t->shape, &err), &err);
    }
    for (uint64_t i = 0; i < rf_st_count(st); i++) {
        const rf_tensor *t = rf_st_get(st, i);
        if (strcmp(t->name, name)) {
            TU_OK(rf_stw_write(w, t->data, t->nbytes, &err), &err);
        } else {
            void *z = calloc(t->nelem, 4);
            TU_OK(rf_stw_write(w, z, t->nelem * 4, &err), &err);
            free(z);
        }
    }
    TU_OK(rf_stw_finish(w, &err), &err);
    rf_stw_free(w);
    rf_st_close(st);
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/config.json", dir);
    snprintf(dst, sizeof dst, "%s/config.json", out);
    size_t n;
    char *cfg = tu_read_file(src, &n);
    assert_int_equal(tu_write_file(dst, cfg, n), 0);
    free(cfg);
}

static void test_unsupported_dtype(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    char *bad = tu_mkdtemp();
    rewrite_as_i32(dir, bad, "model.layers.0.self_attn.v_proj.weight");
    rf_model *m = open_model(bad);
    rf_profile *p = NULL;
    rf_err err;
    assert_int_equal(rf_analyse(m, NULL, &p, &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "I32"));
    rf_model_free(m);
    cli_fails(bad, "model.layers.0.self_attn.v_proj.weight", "I32");
    tu_rmtree(bad);
    free(bad);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ interrupt and resume */

/* Cancels once STOP_AT units are done ("k/N name" in what). */
typedef struct stopper { volatile int cancel; int calls, stop_at; uint64_t first_done; } stopper;

static void stop_cb(void *user, uint64_t done, uint64_t total, const char *what)
{
    (void)total;
    stopper *s = user;
    if (s->calls++ == 0) s->first_done = done;
    if (s->stop_at && atoi(what) >= s->stop_at) s->cancel = 1;
}

static void test_resume(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 3, 512, 0);
    char *tmp = tu_mkdtemp(), partial[4096];
    snprintf(partial, sizeof partial, "%s/p.json.partial", tmp);
    rf_model *m = open_model(dir);
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.threads = 2;
    o.block_bytes = 16384;
    o.modes = 3;
    o.partial_path = partial;
    rf_profile *full = NULL, *p = NULL;
    rf_err err;
    TU_OK(rf_analyse(m, &o, &full, &err), &err);
    char *want = profile_text(full);
    assert_false(exists(partial)); /* only written on interruption or after checkpoint_s */

    stopper s = {0, 0, 4, 0};
    o.progress = (rf_progress){stop_cb, &s, &s.cancel};
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_INTERRUPTED);
    assert_null(p);
    assert_non_null(strstr(err.msg, "--resume"));
    assert_true(exists(partial));
    rf_profile *part;
    TU_OK(rf_profile_load(partial, &part, &err), &err);
    uint64_t saved = rf_profile_unit_count(part);
    assert_true(saved > 0 && saved < rf_model_unit_count(m));
    rf_profile_free(part);

    /* interrupted again, then finished: same bytes as the uninterrupted run */
    stopper s2 = {0, 0, 9, 0};
    o.progress = (rf_progress){stop_cb, &s2, &s2.cancel};
    o.resume = 1;
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_INTERRUPTED);
    assert_true(s2.first_done > 0); /* started past the saved units */
    stopper s3 = {0, 0, 0, 0};
    o.progress = (rf_progress){stop_cb, &s3, &s3.cancel};
    TU_OK(rf_analyse(m, &o, &p, &err), &err);
    char *got = profile_text(p);
    assert_string_equal(got, want);
    free(got);
    rf_profile_free(p);

    /* a partial of another model is refused */
    char *other = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    rf_model *m2 = open_model(other);
    o.progress = (rf_progress){0};
    assert_int_equal(rf_analyse(m2, &o, &p, &err), RF_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "without --resume"));
    rf_model_free(m2);
    tu_rmtree(other);
    free(other);

    free(want);
    rf_profile_free(full);
    rf_model_free(m);
    tu_rmtree(tmp);
    free(tmp);
    tu_rmtree(dir);
    free(dir);
}

/* An F32 checkpoint resumes too (the partial records output dtypes: its F32 units as BF16 once
 * read as "does not match the model"), a partial made for another --dtype is refused, and the
 * CLI's finished --resume leaves neither PROFILE.partial nor its data file behind. */
static void test_resume_f32(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp();
    rf_synth_opts so;
    rf_synth_opts_default(&so);
    so.like = "qwen3-0.6b";
    so.scale = 0.125;
    so.layers = 2;
    so.vocab = 512;
    so.seed = 3;
    so.threads = 2;
    so.dtype = RF_DT_F32;
    rf_err err;
    TU_OK(rf_synth_write(&so, dir, NULL, &err), &err);
    char *tmp = tu_mkdtemp(), prof[4096], partial[4200], bin[4300];
    snprintf(prof, sizeof prof, "%s/p.json", tmp);
    snprintf(partial, sizeof partial, "%s.partial", prof);
    snprintf(bin, sizeof bin, "%s.partial.bin", prof);
    rf_model *m = open_model(dir);
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.threads = 2;
    o.block_bytes = 16384;
    o.partial_path = partial;
    rf_profile *full = NULL, *p = NULL;
    TU_OK(rf_analyse(m, &o, &full, &err), &err);
    char *want = profile_text(full);
    stopper s = {0, 0, 3, 0};
    o.progress = (rf_progress){stop_cb, &s, &s.cancel};
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_INTERRUPTED);
    assert_true(exists(partial) && exists(bin));
    /* the same partial under --dtype f32: refused, naming the dtype */
    o.progress = (rf_progress){0};
    o.resume = 1;
    o.f32_as = RF_DT_F32;
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "--dtype"));
    o.f32_as = RF_DT_INVALID;
    TU_OK(rf_analyse(m, &o, &p, &err), &err);
    char *got = profile_text(p);
    assert_string_equal(got, want);
    free(got);
    rf_profile_free(p);
    /* the CLI: interrupted by the library, finished by 'analyse --resume' */
    stopper s2 = {0, 0, 3, 0};
    o.progress = (rf_progress){stop_cb, &s2, &s2.cancel};
    o.resume = 0;
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_INTERRUPTED);
    assert_true(exists(partial) && exists(bin));
    char args[9000], *out = NULL;
    snprintf(args, sizeof args, "analyse '%s' -o '%s' --resume --quiet", dir, prof);
    assert_int_equal(tu_run_cli(args, &out), 0);
    free(out);
    assert_true(exists(prof));
    assert_false(exists(partial));
    assert_false(exists(bin));
    /* --dtype f32: F32 kept and F32 scales (mlx-lm's float32 output), counted so */
    rf_analyse_opts_default(&o);
    o.threads = 2;
    o.f32_as = RF_DT_F32;
    TU_OK(rf_analyse(m, &o, &p, &err), &err);
    TU_OK(rf_analyse_check_dtype(m, p, RF_DT_F32, &err), &err);
    assert_int_equal(rf_analyse_check_dtype(m, p, RF_DT_BF16, &err), RF_ERR_MISMATCH);
    assert_int_equal(rf_analyse_check_dtype(m, full, RF_DT_F32, &err), RF_ERR_MISMATCH);
    for (uint64_t i = 0; i < rf_profile_unit_count(p); i++) {
        const rf_punit *u = rf_profile_unit(p, i);
        assert_int_equal(u->dtype, RF_DT_F32);
        for (int c = 0; c < u->n_cands; c++)
            assert_true(u->cands[c].bytes == rf_quant_bytes(u->nparams, u->cands[c].bits, u->cands[c].gs, RF_DT_F32));
    }
    rf_profile_free(p);
    free(want);
    rf_profile_free(full);
    rf_model_free(m);
    tu_rmtree(tmp);
    free(tmp);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ opt errors from a sample */

static rf_profile *analyse_opt(const rf_model *m, int threads, unsigned modes, uint64_t sample, int shard, int shards)
{
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.threads = threads;
    o.modes = modes;
    o.block_bytes = 65536; /* several blocks per unit */
    o.opt_sample = sample;
    o.shard_index = shard;
    o.shard_count = shards;
    rf_profile *p = NULL;
    rf_err err;
    TU_OK(rf_analyse(m, &o, &p, &err), &err);
    return p;
}

/* Units with more groups than twice the sample get estimated opt errors, marked in the profile,
 * close to the exact ones (a small sample here: the defaults are within ~1%, bench_estimate); the
 * units below that size, and every unit with RF_ANALYSE_EXACT, are exact: equal to the kernel's
 * error of each member summed. MLX errors never change. Thread counts give the same bytes. */
static void test_opt_sample(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 2, 2048, 0);
    rf_model *m = open_model(dir);
    rf_profile *ex = analyse_opt(m, 2, 3, RF_ANALYSE_EXACT, 0, 0), *es = analyse_opt(m, 1, 3, 128, 0, 0);
    rf_profile *es3 = analyse_opt(m, 3, 3, 128, 0, 0);
    char *t1 = profile_text(es), *t3 = profile_text(es3);
    assert_string_equal(t1, t3);
    free(t1), free(t3);
    assert_int_equal(rf_profile_opt_sample(ex), 0);
    assert_int_equal(rf_profile_opt_sample(es), 128);
    int estimated = 0, exact = 0;
    double worst = 0;
    rf_err err;
    for (uint64_t u = 0; u < rf_profile_unit_count(es); u++) {
        const rf_punit *a = rf_profile_unit(ex, u), *b = rf_profile_unit(es, u);
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->estimated, 0);
        int big = 0;
        for (int k = 0; k < b->n_cands; k++) {
            const rf_pcand *ca = &a->cands[k], *cb = &b->cands[k];
            int ci = 0;
            while (rf_qbits[ci / 3] != cb->bits || rf_qgs[ci % 3] != cb->gs) ci++;
            assert_true(ca->err[0].sse == cb->err[0].sse && ca->err[0].max_abs == cb->err[0].max_abs);
            /* up to 8 times the sample (4 times more at 8 bits): every group searched */
            const int small = b->nparams / (uint64_t)cb->gs <= 8 * (cb->bits == 8 ? 4 * 128 : 128);
            const int est = b->estimated >> ci & 1;
            if (small) assert_false(est);
            big |= est;
            if (est) {
                double rel = fabs(cb->err[1].sse / ca->err[1].sse - 1);
                worst = rel > worst ? rel : worst;
                assert_true(cb->err[1].max_abs <= ca->err[1].max_abs); /* the sample's largest error */
            } else {
                assert_true(ca->err[1].sse == cb->err[1].sse); /* measured on every group: exact */
            }
        }
        estimated += big, exact += !big && b->n_cands;
        if (u % 3) continue;
        /* the exact profile's opt error is the kernel's, member by member */
        const rf_unit *un = rf_model_unit(m, (uint64_t)rf_model_unit_find(m, a->name));
        const rf_pcand *pc = &a->cands[a->n_cands - 1];
        double sse = 0;
        for (int k = 0; k < un->n_members; k++) {
            const rf_tensor *t = rf_model_tinfo(m, (uint64_t)un->members[k])->t;
            rf_qerr q;
            TU_OK(rf_quant_error(t->dtype, t->data, t->nelem / un->cols, un->cols, pc->bits, pc->gs, RF_QMODE_OPT, RF_DT_BF16,
                                 &q, &err), &err);
            sse += q.sse;
        }
        assert_close(pc->err[1].sse, sse, 1e-12, "exact opt sse");
    }
    print_message("  %d units estimated, %d exact; worst estimate %.2f%% off with a sample of 128\n", estimated, exact, 100 * worst);
    assert_true(estimated > 0 && exact > 0);
    assert_true(worst < 0.05);
    rf_profile_free(ex);
    rf_profile_free(es);
    rf_profile_free(es3);
    rf_model_free(m);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ shards */

static void save_to(const rf_profile *p, const char *dir, const char *sub, char *path, size_t cap)
{
    char d[3000];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    assert_int_equal(mkdir(d, 0755), 0);
    snprintf(path, cap, "%s/p.json", d);
    rf_err err;
    TU_OK(rf_profile_save(p, path, &err), &err);
}

static void assert_same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    assert_non_null(x);
    assert_non_null(y);
    if (na != nb || memcmp(x, y, na)) fail_msg("%s and %s differ", a, b);
    free(x), free(y);
}

/* Parts of 1, 2, 3 and 7 machines (experts, more parts than some shards have units), each with
 * its own thread count, merge into the single machine's profile, byte for byte (index and data
 * file); a part alone is not a profile the planner takes. */
static void test_shards_merge(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-30b-a3b", 0.0625, 2, 512, 4);
    char *tmp = tu_mkdtemp(), path[4096], mpath[4096], sub[64];
    rf_model *m = open_model(dir);
    rf_profile *whole = analyse_opt(m, 2, 3, 64, 0, 0);
    save_to(whole, tmp, "whole", path, sizeof path);
    const uint64_t nu = rf_profile_unit_count(whole);
    static const int counts[] = {1, 2, 3, 7};
    rf_err err;
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
        const int n = counts[ci];
        rf_profile *parts[7];
        uint64_t units = 0;
        for (int k = 1; k <= n; k++) {
            parts[k - 1] = analyse_opt(m, 1 + k % 3, 3, 64, k, n);
            int kk, nn;
            uint64_t first, total;
            assert_true(rf_profile_shard(parts[k - 1], &kk, &nn, &first, &total));
            assert_true(kk == k && nn == n && first == units && total == nu);
            units += rf_profile_unit_count(parts[k - 1]);
            assert_int_equal(rf_profile_other_count(parts[k - 1]), rf_profile_other_count(whole));
        }
        assert_int_equal(units, nu);
        if (n == 3) { /* balanced by bytes: no part holds everything */
            for (int k = 0; k < n; k++) assert_true(rf_profile_unit_count(parts[k]) < nu);
            rf_plan_opts po;
            rf_plan_opts_default(&po);
            rf_plan *plan = NULL;
            assert_int_equal(rf_plan_solve(parts[1], &po, rf_profile_full_bytes(parts[1]), &plan, &err), RF_ERR_INVALID);
            assert_non_null(strstr(err.msg, "profile merge"));
        }
        rf_profile *merged;
        TU_OK(rf_profile_merge((const rf_profile *const *)parts, (size_t)n, NULL, &merged, &err), &err);
        snprintf(sub, sizeof sub, "merged%d", n);
        save_to(merged, tmp, sub, mpath, sizeof mpath);
        assert_same_file(path, mpath);
        size_t pl = strlen(path), ml = strlen(mpath);
        memcpy(path + pl - 4, "bin", 4), memcpy(mpath + ml - 4, "bin", 4);
        assert_same_file(path, mpath);
        memcpy(path + pl - 4, "json", 5);
        rf_profile_free(merged);
        for (int k = 0; k < n; k++) rf_profile_free(parts[k]);
    }
    /* bad shard options */
    rf_analyse_opts o;
    rf_analyse_opts_default(&o);
    o.shard_index = 4, o.shard_count = 3;
    rf_profile *p = NULL;
    assert_int_equal(rf_analyse(m, &o, &p, &err), RF_ERR_INVALID);
    int k = 0, n = 0;
    TU_OK(rf_analyse_parse_shard("3/8", &k, &n, &err), &err);
    assert_true(k == 3 && n == 8);
    static const char *const bad[] = {"0/3", "4/3", "3", "/3", "3/", "a/b", "1/100001", "-1/3", "1/3x", "1//3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(rf_analyse_parse_shard(bad[i], &k, &n, &err), RF_ERR_INVALID);
    rf_profile_free(whole);
    rf_model_free(m);
    tu_rmtree(tmp);
    free(tmp);
    tu_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------------------ profile <-> model */

static void test_check_profile(void **state)
{
    (void)state;
    char *a = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    char *b = synth_model("qwen3-0.6b", 0.125, 3, 512, 0);
    rf_model *ma = open_model(a), *mb = open_model(b);
    rf_profile *pa = analyse(ma, 2, 1, 0);
    rf_err err;
    TU_OK(rf_analyse_check_profile(ma, pa, &err), &err);
    assert_int_equal(rf_analyse_check_profile(mb, pa, &err), RF_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "fingerprint"));
    assert_non_null(strstr(err.msg, "ramfit analyse"));
    rf_profile_free(pa);
    rf_model_free(ma);
    rf_model_free(mb);
    tu_rmtree(a), tu_rmtree(b);
    free(a), free(b);
}

static void test_parse(void **state)
{
    (void)state;
    unsigned c = 0, mo = 0;
    rf_err err;
    TU_OK(rf_analyse_parse_candidates("all", &c, &err), &err);
    assert_int_equal(c, RF_PROFILE_ALL_CONFIGS);
    TU_OK(rf_analyse_parse_candidates("keep,4/64,8:128", &c, &err), &err);
    assert_int_equal(c, 1u << (2 * 3 + 1) | 1u << (5 * 3 + 2));
    TU_OK(rf_analyse_parse_candidates("3", &c, &err), &err);
    assert_int_equal(c, 7u << 3);
    assert_int_equal(rf_analyse_parse_candidates("4/48", &c, &err), RF_ERR_INVALID);
    assert_int_equal(rf_analyse_parse_candidates("7", &c, &err), RF_ERR_INVALID);
    assert_int_equal(rf_analyse_parse_candidates("keep", &c, &err), RF_ERR_INVALID);
    assert_int_equal(rf_analyse_parse_candidates("", &c, &err), RF_ERR_INVALID);
    TU_OK(rf_analyse_parse_modes("both", &mo, &err), &err);
    assert_int_equal(mo, 3);
    assert_int_equal(rf_analyse_parse_modes("fast", &mo, &err), RF_ERR_INVALID);
}

/* ------------------------------------------------------------------ CLI */

static void test_cli(void **state)
{
    (void)state;
    char *dir = synth_model("qwen3-0.6b", 0.125, 2, 512, 0);
    char *tmp = tu_mkdtemp(), *out = NULL, args[8192], cwd[4096], path[4096];
    assert_int_equal(tu_run_cli("analyse --help", &out), 0);
    assert_non_null(strstr(out, "--candidates"));
    free(out);
    assert_int_equal(tu_run_cli("analyse", &out), 2);
    free(out);
    /* default output: the directory's name + .profile.json in the current directory */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(tmp), 0);
    snprintf(args, sizeof args, "analyse '%s' --threads 2 --candidates 4/64,8/64 --json", dir);
    int rc = tu_run_cli(args, &out);
    assert_int_equal(chdir(cwd), 0);
    if (rc) fail_msg("%s", out);
    assert_non_null(strstr(out, "\"units\": 15") ? out : strstr(out, "\"units\":15"));
    free(out);
    const char *base = strrchr(dir, '/') + 1;
    snprintf(path, sizeof path, "%s/%s.profile.json", tmp, base);
    rf_profile *p;
    rf_err err;
    TU_OK(rf_profile_load(path, &p, &err), &err);
    assert_int_equal(rf_profile_configs(p), 1u << 7 | 1u << 16);
    assert_int_equal(rf_profile_unit(p, 0)->n_cands, 2);
    rf_profile_free(p);
    /* nothing was written into the model directory */
    snprintf(path, sizeof path, "%s/%s.profile.json", dir, base);
    assert_false(exists(path));
    snprintf(args, sizeof args, "analyse '%s' --mode fast", dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    /* -o naming a model file (or anything in the model directory) once overwrote it */
    size_t n0, n1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *before = tu_read_file(path, &n0);
    assert_non_null(before);
    static const char *const targets[] = {"config.json", "model.safetensors", "p.json", "./p.json"};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        snprintf(args, sizeof args, "analyse '%s' --threads 2 --candidates 4/64 -o '%s/%s'", dir, dir, targets[i]);
        rc = tu_run_cli(args, &out);
        if (rc != 2 || !strstr(out, "model directory")) fail_msg("%s -> %d: %s", args, rc, out);
        free(out);
    }
    char *after = tu_read_file(path, &n1);
    assert_non_null(after);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(before);
    free(after);
    snprintf(path, sizeof path, "%s/p.json", dir);
    assert_false(exists(path));
    /* three machines' parts, merged: the one machine's profile, byte for byte */
    char pw[4096], pm[4096];
    snprintf(pw, sizeof pw, "%s/w", tmp);
    snprintf(pm, sizeof pm, "%s/m", tmp);
    assert_int_equal(mkdir(pw, 0755), 0);
    assert_int_equal(mkdir(pm, 0755), 0);
    snprintf(args, sizeof args, "analyse '%s' --mode opt --opt-sample 64 --quiet -o '%s/p.json'", dir, pw);
    if ((rc = tu_run_cli(args, &out))) fail_msg("%s -> %d: %s", args, rc, out);
    free(out);
    for (int k = 1; k <= 3; k++) {
        snprintf(args, sizeof args, "analyse '%s' --mode opt --opt-sample 64 --shard %d/3 --threads %d -o '%s/part%d.json'", dir,
                 k, k, tmp, k);
        if ((rc = tu_run_cli(args, &out)) || !strstr(out, "profile merge")) fail_msg("%s -> %d: %s", args, rc, out);
        free(out);
    }
    snprintf(args, sizeof args, "plan '%s/part2.json' --budget 1GB", tmp);
    rc = tu_run_cli(args, &out);
    if (rc != 1 || !strstr(out, "part 2 of 3")) fail_msg("%s -> %d: %s", args, rc, out);
    free(out);
    snprintf(args, sizeof args, "profile merge '%s/part3.json' '%s/part1.json' -o '%s/p.json'", tmp, tmp, pm);
    rc = tu_run_cli(args, &out);
    if (rc != 1 || !strstr(out, "give all 3 parts")) fail_msg("%s -> %d: %s", args, rc, out);
    free(out);
    snprintf(args, sizeof args, "profile merge '%s/part3.json' '%s/part1.json' '%s/part2.json' -o '%s/part1.json'", tmp, tmp, tmp,
             tmp);
    assert_int_equal(tu_run_cli(args, &out), 2); /* never overwrites a part */
    free(out);
    snprintf(args, sizeof args, "profile merge '%s/part3.json' '%s/part1.json' '%s/part2.json' -o '%s/p.json'", tmp, tmp, tmp, pm);
    if ((rc = tu_run_cli(args, &out))) fail_msg("%s -> %d: %s", args, rc, out);
    free(out);
    assert_int_equal(tu_run_cli(args, &out), 2); /* exists: --force replaces */
    free(out);
    for (int i = 0; i < 2; i++) {
        char a[4200], b[4200];
        snprintf(a, sizeof a, "%s/p.%s", pw, i ? "bin" : "json");
        snprintf(b, sizeof b, "%s/p.%s", pm, i ? "bin" : "json");
        assert_same_file(a, b);
    }
    snprintf(args, sizeof args, "analyse '%s' --shard 0/3", dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    snprintf(args, sizeof args, "analyse '%s' --opt-sample 0", dir);
    assert_int_equal(tu_run_cli(args, &out), 2);
    free(out);
    /* an output that cannot be written fails before the analysis, naming it (was found out only at the end) */
    static const char *const bad[] = {"no-such-dir/p.json", "file/p.json"};
    snprintf(path, sizeof path, "%s/file", tmp);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(args, sizeof args, "analyse '%s' --threads 2 -o '%s/%s'", dir, tmp, bad[i]);
        rc = tu_run_cli(args, &out);
        if (rc != 1 || !strstr(out, "cannot write") || !strstr(out, bad[i]) || strstr(out, "analyse: "))
            fail_msg("%s -> %d: %s", args, rc, out);
        free(out);
    }
    tu_rmtree(tmp);
    free(tmp);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_stories_accounting),
        cmocka_unit_test(test_stories_errors),
        cmocka_unit_test(test_errors_independent),
        cmocka_unit_test(test_threads_identical),
        cmocka_unit_test(test_scalar_matches_fast),
        cmocka_unit_test(test_moe_shared),
        cmocka_unit_test(test_moe_synthetic),
        cmocka_unit_test(test_nan),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_unsupported_dtype),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_resume_f32),
        cmocka_unit_test(test_opt_sample),
        cmocka_unit_test(test_shards_merge),
        cmocka_unit_test(test_check_profile),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
