/* MLX checkpoint conventions: the config.json "quantization" entries mlx-lm's loader reads, and
 * reading them back. mlx-lm (utils.py load_model) quantizes module p with config["quantization"][p]
 * when p is a key (a dict, or false for "leave it"), else with the global bits/group_size iff
 * "<p>.scales" is among the weights. The writer relies on the second rule: a kept module simply
 * has no .scales, and only modules that differ from the global default get an entry. */
#include "io/mlx_internal.h"
#include "arch/family.h"
#include "io/json_internal.h"
#include "plan/plan_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ writing files */

rf_status rf_mlx_write_file(const char *path, const void *data, size_t len, rf_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return rf_err_errno(err, errno, "cannot create %s", path);
    const char *p = data;
    rf_status s = RF_OK;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            s = rf_err_errno(err, w < 0 ? errno : ENOSPC, "writing %s", path);
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    if (s == RF_OK && fsync(fd) != 0) s = rf_err_errno(err, errno, "fsync %s", path);
    if (close(fd) != 0 && s == RF_OK) s = rf_err_errno(err, errno, "closing %s", path);
    return s;
}

/* ------------------------------------------------------------------ JSON as Python's json.dump(indent=4) */

/* Python's repr of a float: the shortest digits that read back exactly, fixed notation for
 * decimal exponents in [-4, 16), else scientific; integral values keep ".0". */
static void py_double(rf_sb *b, double v)
{
    char t[64];
    if (!isfinite(v)) { rf_sb_puts(b, v != v ? "NaN" : v > 0 ? "Infinity" : "-Infinity"); return; }
    int p = 1;
    for (; p < 17; p++) {
        snprintf(t, sizeof t, "%.*e", p - 1, v);
        if (strtod(t, NULL) == v) break;
    }
    snprintf(t, sizeof t, "%.*e", p - 1, v);
    int exp10 = atoi(strchr(t, 'e') + 1);
    if (exp10 >= -4 && exp10 < 16) {
        int dec = p - 1 - exp10;
        snprintf(t, sizeof t, "%.*f", dec > 0 ? dec : 0, v);
        if (!strchr(t, '.')) strcat(t, ".0");
    } /* else "%.*e" already reads like Python: "1e-06", "1.5e+16" */
    rf_sb_puts(b, t);
}

static void indent_to(rf_sb *b, int level)
{
    rf_sb_puts(b, "\n");
    for (int i = 0; i < level; i++) rf_sb_puts(b, "    ");
}

static int key_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Numbers of the source config.json that jansson could not hold (rf_json_parse rewrote them):
 * their values in the tree and their literal text, written back unchanged. */
typedef struct lit_map {
    const json_t **val;
    const char **lit;
    size_t n;
    uint64_t count; /* numbers visited so far, in document order */
    const rf_json_bignums *big;
} lit_map;

/* Visit V in document order (jansson keeps objects in insertion order; duplicate keys are refused
 * when loading, so that is the file's order), pairing the k-th number with big->v[k]. */
static void lit_collect(lit_map *m, json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_OBJECT: json_object_foreach(v, k, x) lit_collect(m, x); return;
    case JSON_ARRAY: json_array_foreach(v, i, x) lit_collect(m, x); return;
    case JSON_INTEGER:
    case JSON_REAL:
        for (size_t b = 0; b < m->big->n; b++)
            if (m->big->v[b].number == m->count) {
                /* held, so that a value deleted from the tree cannot free its address for a new one */
                m->val[m->n] = json_incref(v);
                m->lit[m->n++] = m->big->v[b].literal;
            }
        m->count++;
        return;
    default: return;
    }
}

static const char *lit_find(const lit_map *m, const json_t *v)
{
    for (size_t i = 0; m && i < m->n; i++)
        if (m->val[i] == v) return m->lit[i];
    return NULL;
}

static void py_value(rf_sb *b, json_t *v, int level, int sort_keys, const lit_map *lits)
{
    const char *lit = json_is_number(v) ? lit_find(lits, v) : NULL;
    if (lit) { rf_sb_puts(b, lit); return; }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        if (n == 0) { rf_sb_puts(b, "{}"); return; }
        const char **keys = malloc(n * sizeof *keys);
        if (!keys) { b->oom = 1; return; }
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) keys[i++] = k;
        if (sort_keys) qsort(keys, n, sizeof *keys, key_cmp);
        rf_sb_puts(b, "{");
        for (i = 0; i < n; i++) {
            indent_to(b, level + 1);
            rf_sb_json_str(b, keys[i]);
            rf_sb_puts(b, ": ");
            py_value(b, json_object_get(v, keys[i]), level + 1, 0, lits);
            if (i + 1 < n) rf_sb_puts(b, ",");
        }
        indent_to(b, level);
        rf_sb_puts(b, "}");
        free(keys);
        return;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (n == 0) { rf_sb_puts(b, "[]"); return; }
        rf_sb_puts(b, "[");
        for (size_t i = 0; i < n; i++) {
            indent_to(b, level + 1);
            py_value(b, json_array_get(v, i), level + 1, 0, lits);
            if (i + 1 < n) rf_sb_puts(b, ",");
        }
        indent_to(b, level);
        rf_sb_puts(b, "]");
        return;
    }
    case JSON_STRING: rf_sb_json_str(b, json_string_value(v)); return;
    case JSON_INTEGER: rf_sb_printf(b, "%lld", (long long)json_integer_value(v)); return;
    case JSON_REAL: py_double(b, json_real_value(v)); return;
    case JSON_TRUE: rf_sb_puts(b, "true"); return;
    case JSON_FALSE: rf_sb_puts(b, "false"); return;
    case JSON_NULL: rf_sb_puts(b, "null"); return;
    }
}

/* ------------------------------------------------------------------ config.json */

void rf_mlx_default_config(const rf_mlx_qmod *mods, size_t n, int *bits, int *gs)
{
    uint64_t cnt[RF_QCFG_N] = {0}, par[RF_QCFG_N] = {0};
    for (size_t i = 0; i < n; i++) {
        int c = rf_cfg_index(mods[i].bits, mods[i].gs);
        if (c < 0) continue;
        cnt[c]++;
        par[c] += mods[i].nparams;
    }
    int best = -1;
    for (int c = 0; c < RF_QCFG_N; c++) /* ascending c: ties keep fewer bits, then smaller gs */
        if (cnt[c] && (best < 0 || cnt[c] > cnt[best] || (cnt[c] == cnt[best] && par[c] > par[best]))) best = c;
    *bits = best < 0 ? 0 : rf_cfg_bits(best);
    *gs = best < 0 ? 0 : rf_cfg_gs(best);
}

static json_t *qentry(int bits, int gs)
{
    json_t *o = json_object();
    if (o && (json_object_set_new(o, "group_size", json_integer(gs)) || json_object_set_new(o, "bits", json_integer(bits)))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *quant_object(const rf_mlx_qmod *mods, size_t n)
{
    int db, dg;
    rf_mlx_default_config(mods, n, &db, &dg);
    json_t *q = qentry(db, dg);
    if (!q || json_object_set_new(q, "mode", json_string("affine"))) goto fail;
    for (size_t i = 0; i < n; i++) {
        if (mods[i].bits == db && mods[i].gs == dg) continue;
        json_t *e = qentry(mods[i].bits, mods[i].gs);
        if (!e || json_object_set_new(q, mods[i].module, e)) goto fail;
    }
    return q;
fail:
    json_decref(q);
    return NULL;
}

static const char *torch_dtype_name(rf_dtype dt)
{
    switch (dt) {
    case RF_DT_BF16: return "bfloat16";
    case RF_DT_F16: return "float16";
    case RF_DT_F32: return "float32";
    default: return NULL;
    }
}

rf_status rf_mlx_write_config(const char *src_dir, const char *dst_path, const rf_config *cfg_parsed, const rf_mlx_qmod *mods,
                              size_t n, rf_dtype torch_dtype, rf_err *err)
{
    char src[4096];
    snprintf(src, sizeof src, "%s/config.json", src_dir);
    char *stext;
    size_t slen;
    json_t *cfg;
    rf_json_bignums big = {0};
    rf_status s = rf_json_read_text(src, RF_MAX_CONFIG_FILE, &stext, &slen, err);
    if (s) return s;
    s = rf_json_parse_keep(stext, slen, src, JSON_REJECT_DUPLICATES, &cfg, &big, err);
    free(stext);
    if (s) return s;
    lit_map lits = {.big = &big};
    if (big.n) {
        lits.val = calloc(big.n, sizeof *lits.val);
        lits.lit = calloc(big.n, sizeof *lits.lit);
        if (lits.val && lits.lit) lit_collect(&lits, cfg);
        else s = rf_err_set(err, RF_ERR_NOMEM, "out of memory (config.json)");
    }
    if (!s && !json_is_object(cfg)) s = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON object", src);
    int bad = 0;
    if (!s) {
        json_object_del(cfg, "quantization");
        json_object_del(cfg, "quantization_config");
        json_object_del(cfg, "_name_or_path"); /* mlx-lm's save_config drops it too */
        if (cfg_parsed) s = rf_mlx_config(cfg_parsed, cfg, err);
    }
    if (!s) {
        if (n) {
            json_t *q = quant_object(mods, n), *qc = q ? json_deep_copy(q) : NULL;
            bad |= !q || !qc || json_object_set_new(cfg, "quantization", q) ||
                   json_object_set_new(cfg, "quantization_config", qc);
        }
        const char *td = torch_dtype_name(torch_dtype);
        if (td) bad |= json_object_set_new(cfg, "torch_dtype", json_string(td)) != 0;
    }
    rf_sb b = {0};
    if (!s && !bad) {
        py_value(&b, cfg, 0, 1, &lits);
        char *text = NULL;
        size_t len = 0;
        if ((s = rf_sb_finish(&b, &text, &len, err)) == RF_OK) {
            s = rf_mlx_write_file(dst_path, text, len, err);
            free(text);
        }
    } else if (!s) {
        s = rf_err_set(err, RF_ERR_NOMEM, "out of memory (config.json)");
    }
    json_decref(cfg);
    for (size_t i = 0; i < lits.n; i++) json_decref((json_t *)lits.val[i]);
    free(lits.val);
    free(lits.lit);
    rf_json_bignums_free(&big);
    return s;
}

/* ------------------------------------------------------------------ reading an MLX checkpoint back */

struct rf_mlx_quant {
    int def_bits, def_gs;
    rf_mlx_module *mods;
    uint64_t n;
};

void rf_mlx_quant_free(rf_mlx_quant *q)
{
    if (!q) return;
    free(q->mods);
    free(q);
}
uint64_t rf_mlx_quant_count(const rf_mlx_quant *q) { return q ? q->n : 0; }
const rf_mlx_module *rf_mlx_quant_module(const rf_mlx_quant *q, uint64_t i) { return q && i < q->n ? &q->mods[i] : NULL; }
void rf_mlx_quant_default(const rf_mlx_quant *q, int *bits, int *gs)
{
    if (bits) *bits = q ? q->def_bits : 0;
    if (gs) *gs = q ? q->def_gs : 0;
}

/* ------------------------------------------------------------------ config.json "quantization" as mlx-lm reads it
 *
 * mlx_lm/utils.py load_model: with config["quantization"] (not None) it calls
 * nn.quantize(model, group_size=q["group_size"], bits=q["bits"], mode=q.get("mode", "affine"),
 * class_predicate) where class_predicate(p, m) returns q[p] when the module path p is a key, else
 * False for modules without to_quantized, else whether "<p>.scales" is among the weights.
 * mlx/nn/layers/quantized.py quantize: a falsy predicate leaves the module, True quantizes it with
 * the global arguments, a dict is passed to to_quantized(**dict) (group_size=None, bits=None,
 * mode="affine", quantize_input=False), anything else raises; _defaults_for_mode turns a falsy
 * group_size/bits into the mode's default (affine: 64, 4). Keys that are not module paths are
 * never looked up. Only mode "affine" is read by ramfit (mxfp4, nvfp4, mxfp8 are refused where a
 * module uses them), and "mode": null counts as the default "affine". */

struct rf_mlx_qcfg {
    json_t *quant;      /* the "quantization" object, NULL when absent or null */
    char legacy[64];    /* quantization_config's quant_method when there is no "quantization" */
    char label[4096];
};

void rf_mlx_qcfg_free(rf_mlx_qcfg *q)
{
    if (!q) return;
    json_decref(q->quant);
    free(q);
}

int rf_mlx_qcfg_present(const rf_mlx_qcfg *q) { return q && q->quant; }

/* Python truthiness of a JSON value (absent counts as falsy). */
static int py_falsy(const json_t *v)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_OBJECT: return json_object_size(v) == 0;
    case JSON_ARRAY: return json_array_size(v) == 0;
    case JSON_STRING: return json_string_length(v) == 0;
    case JSON_INTEGER: return json_integer_value(v) == 0;
    case JSON_REAL: return json_real_value(v) == 0;
    case JSON_TRUE: return 0;
    default: return 1; /* false, null */
    }
}

typedef struct qparams { int bits, gs; } qparams;

/* One of bits/group_size: falsy takes the mode's default, else an integer. */
static rf_status qp_int(const rf_mlx_qcfg *q, const char *what, const char *key, json_t *v, int def, int *out, rf_err *err)
{
    if (py_falsy(v)) { *out = def; return RF_OK; }
    int64_t x;
    int r = rf_json_int(v, 1, 1024, &x);
    if (r)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: quantization %s: \"%s\" %s", q->label, what, key,
                          r < 0 ? "must be an integer or null" : "is out of range");
    *out = (int)x;
    return RF_OK;
}

/* bits/gs of a quantization dict O (the global setting or a module's entry), checked to be an
 * affine config MLX has; WHAT names it in messages. */
static rf_status qp_parse(const rf_mlx_qcfg *q, json_t *o, const char *what, qparams *out, rf_err *err)
{
    if (o != q->quant) { /* a module's entry is passed to to_quantized(**entry): no other keys */
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v) if (strcmp(k, "bits") && strcmp(k, "group_size") && strcmp(k, "mode") &&
                                         strcmp(k, "quantize_input"))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: quantization %s: unknown key \"%.64s\" (an entry holds bits, "
                              "group_size, mode)", q->label, what, k);
    }
    json_t *m = json_object_get(o, "mode");
    const char *mode = "affine";
    if (m && !json_is_null(m)) {
        if (!json_is_string(m))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: quantization %s: \"mode\" must be a string", q->label, what);
        mode = json_string_value(m);
    }
    if (strcmp(mode, "affine")) {
        static const char *const fp[] = {"mxfp4", "nvfp4", "mxfp8"};
        for (size_t i = 0; i < sizeof fp / sizeof fp[0]; i++)
            if (!strcmp(mode, fp[i]))
                return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: quantization %s: mode \"%s\" is not supported: ramfit reads "
                                  "only MLX affine quantization (mode \"affine\")", q->label, what, mode);
        return rf_err_set(err, RF_ERR_FORMAT, "%s: quantization %s: invalid mode \"%.64s\" (MLX has affine, mxfp4, nvfp4, "
                          "mxfp8)", q->label, what, mode);
    }
    if (!py_falsy(json_object_get(o, "quantize_input")))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: quantization %s: quantize_input (activation quantization) is not "
                          "supported", q->label, what);
    rf_status s;
    if ((s = qp_int(q, what, "bits", json_object_get(o, "bits"), 4, &out->bits, err)) ||
        (s = qp_int(q, what, "group_size", json_object_get(o, "group_size"), 64, &out->gs, err)))
        return s;
    if (rf_cfg_index(out->bits, out->gs) < 0)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: quantization %s: %d bits, group size %d is not an MLX affine config "
                          "(bits 2, 3, 4, 5, 6 or 8; group size 32, 64 or 128)", q->label, what, out->bits, out->gs);
    return RF_OK;
}

rf_status rf_mlx_qcfg_from_json(json_t *root, const char *label, rf_mlx_qcfg **out, rf_err *err)
{
    *out = NULL;
    if (!json_is_object(root)) return rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON object", label);
    rf_mlx_qcfg *q = calloc(1, sizeof *q);
    if (!q) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    snprintf(q->label, sizeof q->label, "%s", label);
    json_t *g = json_object_get(root, "quantization");
    rf_status s = RF_OK;
    if (g && !json_is_null(g)) {
        if (!json_is_object(g)) s = rf_err_set(err, RF_ERR_FORMAT, "%s: \"quantization\" must be an object", label);
        /* load_model reads q["group_size"] and q["bits"] whether or not a module uses them */
        else if (!json_object_get(g, "group_size") || !json_object_get(g, "bits"))
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: \"quantization\" lacks \"%s\" (mlx-lm needs both bits and group_size; "
                           "null takes the default)", label, json_object_get(g, "bits") ? "group_size" : "bits");
        else q->quant = json_incref(g);
    } else {
        json_t *qc = json_object_get(root, "quantization_config");
        const char *m = json_string_value(json_object_get(qc, "quant_method"));
        if (json_is_object(qc)) snprintf(q->legacy, sizeof q->legacy, "%s", m ? m : "?");
        /* formats mlx-lm converts on loading (utils.py): none of them is affine MLX data ramfit reads */
        static const char *const conv[] = {"bitnet", "mxfp4", "compressed-tensors", "awq", "gptq"};
        for (size_t i = 0; m && i < sizeof conv / sizeof conv[0]; i++)
            if (!strcmp(m, conv[i]))
                s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: quantization_config with quant_method \"%s\": ramfit reads only "
                               "MLX affine checkpoints (config.json \"quantization\")", label, m);
    }
    if (s) {
        rf_mlx_qcfg_free(q);
        return s;
    }
    *out = q;
    return RF_OK;
}

rf_status rf_mlx_qcfg_load(const char *dir, rf_mlx_qcfg **out, rf_err *err)
{
    *out = NULL;
    size_t n = strlen(dir) + sizeof "/config.json";
    char *path = malloc(n);
    if (!path) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    snprintf(path, n, "%s/config.json", dir);
    json_t *root;
    rf_status s = rf_json_load(path, RF_MAX_CONFIG_FILE, 0, &root, err);
    if (!s) {
        s = rf_mlx_qcfg_from_json(root, path, out, err);
        json_decref(root);
    }
    free(path);
    return s;
}

rf_status rf_mlx_qcfg_module(const rf_mlx_qcfg *q, const char *module, int has_scales, int *bits, int *gs, rf_err *err)
{
    *bits = *gs = 0;
    char what[240];
    json_t *e = q->quant ? json_object_get(q->quant, module) : NULL;
    qparams p = {0, 0};
    rf_status s = RF_OK;
    const char *why;
    if (e) { /* the module's own entry */
        snprintf(what, sizeof what, "entry \"%.200s\"", module);
        if (py_falsy(e)) {
            why = "its entry is false";
        } else if (json_is_true(e)) {
            why = "its entry true (the global setting)";
            s = qp_parse(q, q->quant, "(global, for entry true)", &p, err);
        } else if (json_is_object(e)) {
            why = "its entry";
            s = qp_parse(q, e, what, &p, err);
        } else
            return rf_err_set(err, RF_ERR_FORMAT, "%s: quantization entry \"%s\" must be an object, true or false", q->label,
                              module);
    } else if (q->quant && has_scales) {
        why = "the global setting";
        s = qp_parse(q, q->quant, "(global)", &p, err);
    } else {
        why = q->quant ? "no entry, no .scales" : "no \"quantization\"";
    }
    if (s) return s;
    if (p.bits && !has_scales)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: module %s is quantized by %s (%d bits, group size %d) but the checkpoint "
                          "has no %s.scales", q->label, module, why, p.bits, p.gs, module);
    if (!p.bits && has_scales)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: module %s has %s.scales but config.json leaves it unquantized (%s)%s%s%s",
                          q->label, module, module, why, q->legacy[0] ? "; quantization_config (quant_method \"" : "",
                          q->legacy, q->legacy[0] ? "\") is not MLX's format" : "");
    *bits = p.bits;
    *gs = p.gs;
    return RF_OK;
}

void rf_mlx_qcfg_default(const rf_mlx_qcfg *q, int *bits, int *gs)
{
    qparams p = {0, 0};
    if (q && q->quant && qp_parse(q, q->quant, "(global)", &p, NULL)) p.bits = p.gs = 0;
    *bits = p.bits;
    *gs = p.gs;
}

/* Companion tensor NAME.SUFFIX of module P, or NULL. */
static const rf_tensor *companion(const rf_st *st, const char *p, const char *suffix)
{
    char n[512];
    snprintf(n, sizeof n, "%s.%s", p, suffix);
    return rf_st_find(st, n);
}

/* Fill M for module P (weight W) quantized with BITS/GS, checking the shapes agree. */
static rf_status quantized_module(const rf_st *st, const char *p, const rf_tensor *w, int bits, int gs,
                                  rf_mlx_module *m, rf_err *err)
{
    const rf_tensor *sc = companion(st, p, "scales"), *bi = companion(st, p, "biases");
    if (!sc || !bi)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: module %s is quantized (%d bits, gs %d) but has no %s", w->file, p,
                          bits, gs, sc ? "biases" : "scales");
    int nd = w->ndim;
    if (w->dtype != RF_DT_U32 || nd < 2 || nd > 3 || sc->ndim != nd || bi->ndim != nd || sc->dtype != bi->dtype ||
        !rf_dtype_is_float(sc->dtype))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: module %s: quantized weight must be U32 [(E,) out, in*bits/32] with "
                          "float scales/biases of the same rank", w->file, p);
    uint64_t cols = w->shape[nd - 1] * 32 / (uint64_t)bits;
    int ok = w->shape[nd - 1] * 32 % (uint64_t)bits == 0 && cols % (uint64_t)gs == 0 &&
             sc->shape[nd - 1] == cols / (uint64_t)gs;
    for (int d = 0; d < nd - 1; d++) ok &= sc->shape[d] == w->shape[d];
    for (int d = 0; d < nd; d++) ok &= bi->shape[d] == sc->shape[d];
    if (!ok)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: module %s: weight/scales shapes do not fit %d bits, group size %d",
                          w->file, p, bits, gs);
    m->bits = bits;
    m->gs = gs;
    m->n_experts = nd == 3 ? (int)w->shape[0] : 0;
    m->rows = w->shape[nd - 2];
    m->cols = cols;
    m->params = (nd == 3 ? w->shape[0] : 1) * m->rows * cols;
    m->bytes = w->nbytes + sc->nbytes + bi->nbytes;
    m->dtype = sc->dtype;
    return RF_OK;
}

static rf_status resolve_module(const rf_st *st, const rf_mlx_qcfg *qc, const rf_tensor *w, rf_mlx_module *m,
                                rf_err *err)
{
    memset(m, 0, sizeof *m);
    size_t pl = strlen(w->name) - strlen(".weight");
    if (pl >= sizeof m->name) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor name too long: %s", w->file, w->name);
    memcpy(m->name, w->name, pl);
    m->name[pl] = '\0';
    int bits, gs, has_scales = companion(st, m->name, "scales") != NULL;
    rf_status s = rf_mlx_qcfg_module(qc, m->name, has_scales, &bits, &gs, err);
    if (s) return s;
    if (bits) return quantized_module(st, m->name, w, bits, gs, m, err);
    /* a kept module: its weight is a float tensor (a packed U32 weight or .biases without .scales
     * is a quantized module that lost its scales: the engine could not run it) */
    if (!rf_dtype_is_float(w->dtype) || companion(st, m->name, "biases"))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: module %s has a %s weight%s but no %s.scales: a quantized module without "
                          "its scales", w->file, m->name, rf_dtype_name(w->dtype),
                          companion(st, m->name, "biases") ? " and .biases" : "", m->name);
    m->dtype = w->dtype;
    m->n_experts = w->ndim == 3 ? (int)w->shape[0] : 0;
    m->rows = w->ndim >= 2 ? w->shape[w->ndim - 2] : 1;
    m->cols = w->ndim >= 1 ? w->shape[w->ndim - 1] : 1;
    m->params = w->nelem;
    m->bytes = w->nbytes;
    return RF_OK;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

rf_status rf_mlx_quant_from_parts(const char *config_text, size_t len, const rf_st *st, const char *label,
                                  rf_mlx_quant **out, rf_err *err)
{
    *out = NULL;
    json_t *cfg;
    rf_status s = rf_json_parse(config_text, len, label, 0, &cfg, err);
    if (s) return s;
    rf_mlx_qcfg *qc = NULL;
    s = rf_mlx_qcfg_from_json(cfg, label, &qc, err);
    json_decref(cfg);
    rf_mlx_quant *q = s ? NULL : calloc(1, sizeof *q);
    if (!s && !q) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    if (!s) rf_mlx_qcfg_default(qc, &q->def_bits, &q->def_gs);
    uint64_t nt = s ? 0 : rf_st_count(st);
    if (!s && !(q->mods = calloc(nt ? nt : 1, sizeof *q->mods))) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < nt && !s; i++) {
        const rf_tensor *t = rf_st_get(st, i);
        if (!ends_with(t->name, ".weight")) continue;
        s = resolve_module(st, qc, t, &q->mods[q->n], err);
        if (!s) q->n++;
    }
    rf_mlx_qcfg_free(qc);
    if (s) {
        rf_mlx_quant_free(q);
        return s;
    }
    *out = q;
    return RF_OK;
}

rf_status rf_mlx_quant_read(const char *dir, rf_mlx_quant **out, rf_err *err)
{
    if (!dir || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_mlx_quant_read: NULL argument");
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    size_t len = 0;
    rf_status s = rf_json_read_text(path, RF_MAX_CONFIG_FILE, &text, &len, err);
    if (s) return s;
    rf_st *st = NULL;
    s = rf_st_open(dir, &st, err);
    if (!s) s = rf_mlx_quant_from_parts(text, len, st, path, out, err);
    rf_st_close(st);
    free(text);
    return s;
}
