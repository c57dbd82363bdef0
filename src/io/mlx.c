/* MLX checkpoint conventions: the config.json "quantization" entries mlx-lm's loader reads, and
 * reading them back. mlx-lm (utils.py load_model) quantizes module p with config["quantization"][p]
 * when p is a key (a dict, or false for "leave it"), else with the global bits/group_size iff
 * "<p>.scales" is among the weights. The writer relies on the second rule: a kept module simply
 * has no .scales, and only modules that differ from the global default get an entry. */
#include "io/mlx_internal.h"
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

static void py_value(rf_sb *b, json_t *v, int level, int sort_keys)
{
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
            py_value(b, json_object_get(v, keys[i]), level + 1, 0);
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
            py_value(b, json_array_get(v, i), level + 1, 0);
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

rf_status rf_mlx_write_config(const char *src_dir, const char *dst_path, const rf_mlx_qmod *mods, size_t n,
                              rf_dtype torch_dtype, rf_err *err)
{
    char src[4096];
    snprintf(src, sizeof src, "%s/config.json", src_dir);
    json_error_t je;
    json_t *cfg = json_load_file(src, JSON_REJECT_DUPLICATES, &je);
    if (!cfg) return rf_err_set(err, RF_ERR_FORMAT, "%s: line %d: %s", src, je.line, je.text);
    rf_status s = RF_OK;
    if (!json_is_object(cfg)) s = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON object", src);
    int bad = 0;
    if (!s) {
        json_object_del(cfg, "quantization");
        json_object_del(cfg, "quantization_config");
        json_object_del(cfg, "_name_or_path"); /* mlx-lm's save_config drops it too */
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
        py_value(&b, cfg, 0, 1);
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

/* bits/group_size of a quantization dict; 0 when not a valid affine config. */
static int read_entry(json_t *e, int *bits, int *gs)
{
    json_t *b = json_object_get(e, "bits"), *g = json_object_get(e, "group_size");
    if (!json_is_integer(b) || !json_is_integer(g)) return 0;
    *bits = (int)json_integer_value(b);
    *gs = (int)json_integer_value(g);
    return rf_cfg_index(*bits, *gs) >= 0;
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

static rf_status resolve_module(const rf_st *st, json_t *quant, int def_bits, int def_gs, const char *label,
                                const rf_tensor *w, rf_mlx_module *m, rf_err *err)
{
    memset(m, 0, sizeof *m);
    size_t pl = strlen(w->name) - strlen(".weight");
    if (pl >= sizeof m->name) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor name too long: %s", w->file, w->name);
    memcpy(m->name, w->name, pl);
    m->name[pl] = '\0';
    json_t *e = quant ? json_object_get(quant, m->name) : NULL;
    int bits = 0, gs = 0;
    if (e && json_is_object(e)) {
        if (!read_entry(e, &bits, &gs))
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: quantization entry %s: not an affine bits/group_size pair "
                              "ramfit knows", label, m->name);
    } else if (e && !json_is_false(e)) {
        return rf_err_set(err, RF_ERR_FORMAT, "%s: quantization entry %s must be an object or false", label, m->name);
    } else if (!e && quant && companion(st, m->name, "scales")) {
        bits = def_bits;
        gs = def_gs;
    }
    if (bits) return quantized_module(st, m->name, w, bits, gs, m, err);
    if (companion(st, m->name, "scales"))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: module %s has scales but %s leaves it unquantized", w->file,
                          m->name, label);
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
    json_error_t je;
    json_t *cfg = json_loadb(config_text, len, 0, &je);
    if (!cfg) return rf_err_set(err, RF_ERR_FORMAT, "%s: line %d: %s", label, je.line, je.text);
    rf_mlx_quant *q = calloc(1, sizeof *q);
    rf_status s = q ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    json_t *quant = json_is_object(cfg) ? json_object_get(cfg, "quantization") : NULL;
    if (!s && !json_is_object(cfg)) s = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON object", label);
    if (!s && quant && !json_is_object(quant)) s = rf_err_set(err, RF_ERR_FORMAT, "%s: \"quantization\" is not an object", label);
    if (!s && quant && !read_entry(quant, &q->def_bits, &q->def_gs))
        s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: global quantization is not an affine bits/group_size pair ramfit knows",
                       label);
    uint64_t nt = s ? 0 : rf_st_count(st);
    if (!s && !(q->mods = calloc(nt ? nt : 1, sizeof *q->mods))) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < nt && !s; i++) {
        const rf_tensor *t = rf_st_get(st, i);
        if (!ends_with(t->name, ".weight")) continue;
        s = resolve_module(st, quant, q->def_bits, q->def_gs, label, t, &q->mods[q->n], err);
        if (!s) q->n++;
    }
    json_decref(cfg);
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
    rf_status s = rf_read_text_file(path, &text, &len, err);
    if (s) return s;
    rf_st *st = NULL;
    s = rf_st_open(dir, &st, err);
    if (!s) s = rf_mlx_quant_from_parts(text, len, st, path, out, err);
    rf_st_close(st);
    free(text);
    return s;
}
