/* GGUF files (llama.cpp's model format): a validating reader over an mmapped image and a
 * streaming writer.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 key/value count; the
 * key/values (string key, u32 type, value; strings are u64 length + bytes; arrays are u32
 * element type + u64 count + elements); the tensor infos (string name, u32 dims, u64 ne[dims],
 * u32 ggml type, u64 offset relative to the data section); padding to general.alignment; the
 * data. ggml's loader wants each offset to be the previous tensor's end rounded up to the
 * alignment, in tensor-info order: the writer does exactly that. */
#include "common/internal.h"
#include "io/safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef unsigned long long ull;

#define GGUF_MAGIC "GGUF"
#define DEFAULT_ALIGN 32u

static const uint8_t scalar_size[RF_GV_COUNT] = {
    [RF_GV_U8] = 1, [RF_GV_I8] = 1, [RF_GV_U16] = 2, [RF_GV_I16] = 2, [RF_GV_U32] = 4, [RF_GV_I32] = 4,
    [RF_GV_F32] = 4, [RF_GV_BOOL] = 1, [RF_GV_U64] = 8, [RF_GV_I64] = 8, [RF_GV_F64] = 8,
};

const char *rf_gguf_vtype_name(rf_gguf_vtype t)
{
    static const char *const n[RF_GV_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string",
                                               "array", "u64", "i64", "f64"};
    return (unsigned)t < RF_GV_COUNT ? n[t] : "invalid";
}

/* ------------------------------------------------------------------ reader */

typedef struct gkv {
    char *key;
    rf_gguf_vtype type, atype; /* atype: array element type (RF_GV_COUNT for scalars) */
    uint64_t n;                /* array length */
    const uint8_t *p;          /* scalar value / string length prefix / first array element */
    uint64_t *soff;            /* string arrays: offset of element j's length prefix from p */
} gkv;

struct rf_gguf {
    char *path;
    const uint8_t *base;
    uint64_t size;
    void *map;
    uint32_t version;
    uint64_t align, data_off;
    gkv *kvs;
    uint64_t nkv;
    rf_gguf_tensor *tensors;
    uint64_t nt;
    rf_nametab ktab, ttab;
};

static uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

typedef struct cur {
    const rf_gguf *g;
    uint64_t pos;
    rf_err *err;
} cur;

static rf_status need(cur *c, uint64_t n, const char *what)
{
    if (n <= c->g->size - c->pos) return RF_OK;
    return rf_err_set(c->err, RF_ERR_FORMAT, "%s: truncated at byte %llu (%s needs %llu more bytes, the file has %llu)",
                      c->g->path, (ull)c->pos, what, (ull)n, (ull)(c->g->size - c->pos));
}

static rf_status rd_u32(cur *c, uint32_t *v, const char *what)
{
    rf_status s = need(c, 4, what);
    if (!s) *v = le32(c->g->base + c->pos), c->pos += 4;
    return s;
}

static rf_status rd_u64(cur *c, uint64_t *v, const char *what)
{
    rf_status s = need(c, 8, what);
    if (!s) *v = le64(c->g->base + c->pos), c->pos += 8;
    return s;
}

/* A length-prefixed string: *p its bytes in the map. */
static rf_status rd_str(cur *c, const uint8_t **p, uint64_t *len, const char *what)
{
    rf_status s = rd_u64(c, len, what);
    if (!s) s = need(c, *len, what);
    if (!s) *p = c->g->base + c->pos, c->pos += *len;
    return s;
}

static char *dup_n(const uint8_t *p, uint64_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static rf_status nomem(rf_err *err, const char *path) { return rf_err_set(err, RF_ERR_NOMEM, "%s: out of memory", path); }

static rf_status parse_kv(rf_gguf *g, cur *c, uint64_t i, rf_err *err)
{
    gkv *kv = &g->kvs[i];
    const uint8_t *kp;
    uint64_t kl;
    char what[64];
    snprintf(what, sizeof what, "key %llu", (ull)i);
    rf_status s = rd_str(c, &kp, &kl, what);
    if (s) return s;
    if (kl == 0 || memchr(kp, 0, kl))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: key %llu is empty or holds a NUL byte", g->path, (ull)i);
    if (!(kv->key = dup_n(kp, kl))) return nomem(err, g->path);
    uint32_t t;
    if ((s = rd_u32(c, &t, kv->key))) return s;
    if (t >= RF_GV_COUNT)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s has unknown value type %u", g->path, kv->key, t);
    kv->type = (rf_gguf_vtype)t;
    kv->atype = RF_GV_COUNT;
    kv->p = g->base + c->pos;
    if (t == RF_GV_STR) {
        const uint8_t *sp;
        uint64_t sl;
        return rd_str(c, &sp, &sl, kv->key);
    }
    if (t != RF_GV_ARR) {
        if ((s = need(c, scalar_size[t], kv->key))) return s;
        if (t == RF_GV_BOOL && kv->p[0] > 1)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s: bool value %u", g->path, kv->key, kv->p[0]);
        c->pos += scalar_size[t];
        return RF_OK;
    }
    uint32_t et;
    if ((s = rd_u32(c, &et, kv->key)) || (s = rd_u64(c, &kv->n, kv->key))) return s;
    if (et >= RF_GV_COUNT || et == RF_GV_ARR)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s: array element type %u is not supported", g->path, kv->key, et);
    kv->atype = (rf_gguf_vtype)et;
    kv->p = g->base + c->pos;
    if (et != RF_GV_STR) {
        uint64_t nb;
        if (!rf_mul_u64(kv->n, scalar_size[et], &nb) || (s = need(c, nb, kv->key)))
            return s ? s : rf_err_set(err, RF_ERR_FORMAT, "%s: key %s: array length %llu overflows", g->path, kv->key,
                                      (ull)kv->n);
        c->pos += nb;
        return RF_OK;
    }
    /* every string needs its 8-byte length: a count beyond the file is malformed, not an allocation */
    if (kv->n > (g->size - c->pos) / 8)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s: %llu strings cannot fit in the file", g->path, kv->key,
                          (ull)kv->n);
    kv->soff = malloc((kv->n ? kv->n : 1) * sizeof *kv->soff);
    if (!kv->soff) return nomem(err, g->path);
    uint64_t start = c->pos;
    for (uint64_t j = 0; j < kv->n; j++) {
        kv->soff[j] = c->pos - start;
        const uint8_t *sp;
        uint64_t sl;
        if ((s = rd_str(c, &sp, &sl, kv->key))) return rf_err_prefix(err, "element %llu", (ull)j);
    }
    return RF_OK;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static rf_status parse_tensor(rf_gguf *g, cur *c, uint64_t i, rf_err *err)
{
    rf_gguf_tensor *t = &g->tensors[i];
    const uint8_t *np;
    uint64_t nl;
    char what[64];
    snprintf(what, sizeof what, "tensor info %llu", (ull)i);
    rf_status s = rd_str(c, &np, &nl, what);
    if (s) return s;
    if (nl == 0 || nl > RF_GGUF_MAX_NAME || memchr(np, 0, nl))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %llu: name of %llu bytes (1..%d, no NUL)", g->path, (ull)i,
                          (ull)nl, RF_GGUF_MAX_NAME);
    char *name = dup_n(np, nl);
    if (!name) return nomem(err, g->path);
    t->name = name;
    uint32_t nd, type;
    if ((s = rd_u32(c, &nd, t->name))) return s;
    if (nd < 1 || nd > RF_GGUF_MAX_DIMS)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s has %u dimensions (1..4)", g->path, t->name, nd);
    t->ndim = (int)nd;
    t->nelem = 1;
    for (int d = 0; d < RF_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < nd; d++) {
        if ((s = rd_u64(c, &t->ne[d], t->name))) return s;
        if (t->ne[d] > (uint64_t)INT64_MAX || !rf_mul_u64(t->nelem, t->ne[d], &t->nelem) || t->nelem > (uint64_t)INT64_MAX)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: shape overflows", g->path, t->name);
    }
    uint64_t off;
    if ((s = rd_u32(c, &type, t->name)) || (s = rd_u64(c, &off, t->name))) return s;
    t->type = (int)type;
    uint64_t blk = rf_gtype_block(t->type);
    if (!blk) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s has unknown ggml type %u", g->path, t->name, type);
    if (t->ne[0] % blk)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: rows of %llu are not a multiple of %s's block of %llu",
                          g->path, t->name, (ull)t->ne[0], rf_gtype_name(t->type), (ull)blk);
    if (!rf_mul_u64(t->nelem / blk, rf_gtype_block_bytes(t->type), &t->nbytes))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: size overflows", g->path, t->name);
    t->offset = off; /* relative until the data section is known */
    return RF_OK;
}

static int cmp_off(const void *a, const void *b)
{
    const rf_gguf_tensor *x = *(rf_gguf_tensor *const *)a, *y = *(rf_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Offsets aligned, data inside the file, no two tensors overlapping. */
static rf_status place_tensors(rf_gguf *g, rf_err *err)
{
    rf_gguf_tensor **order = malloc((g->nt ? g->nt : 1) * sizeof *order);
    if (!order) return nomem(err, g->path);
    rf_status s = RF_OK;
    for (uint64_t i = 0; i < g->nt && !s; i++) {
        rf_gguf_tensor *t = &g->tensors[i];
        order[i] = t;
        uint64_t end;
        if (t->offset % g->align)
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: data offset %llu is not a multiple of the alignment %llu",
                           g->path, t->name, (ull)t->offset, (ull)g->align);
        else if (!rf_add_u64(g->data_off, t->offset, &t->offset) || !rf_add_u64(t->offset, t->nbytes, &end) ||
                 end > g->size)
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s: data [%llu, +%llu) lies beyond the end of the file (%llu "
                           "bytes)", g->path, t->name, (ull)t->offset, (ull)t->nbytes, (ull)g->size);
        else
            t->data = g->base + t->offset;
    }
    if (!s) qsort(order, g->nt, sizeof *order, cmp_off);
    for (uint64_t i = 1; i < g->nt && !s; i++)
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset)
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: tensors %s and %s overlap", g->path, order[i - 1]->name,
                           order[i]->name);
    free(order);
    return s;
}

static rf_status parse(rf_gguf *g, rf_err *err)
{
    cur c = {g, 0, err};
    if (g->size < 24 || memcmp(g->base, GGUF_MAGIC, 4))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: not a GGUF file (%s)", g->path,
                          g->size < 4 ? "too short" : "no GGUF magic");
    c.pos = 4;
    uint64_t nt, nkv;
    rd_u32(&c, &g->version, "version");
    if ((g->version & 0xffffu) == 0)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: GGUF version %u: a big-endian file?", g->path, g->version);
    if (g->version != 2 && g->version != 3)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: GGUF version %u (ramfit reads versions 2 and 3)", g->path,
                          g->version);
    rd_u64(&c, &nt, "tensor count");
    rd_u64(&c, &nkv, "key count");
    /* a key needs 12 bytes at least, a tensor info 24: bound the counts by the file before allocating */
    if (nkv > g->size / 12 || nt > g->size / 24)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: %llu keys and %llu tensors cannot fit in %llu bytes", g->path,
                          (ull)nkv, (ull)nt, (ull)g->size);
    g->kvs = calloc(nkv ? nkv : 1, sizeof *g->kvs);
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kvs || !g->tensors) return nomem(err, g->path);
    rf_status s = RF_OK;
    for (uint64_t i = 0; i < nkv && !s; i++) {
        s = parse_kv(g, &c, i, err);
        g->nkv = i + 1;
        if (s) break;
        int put = rf_nametab_put(&g->ktab, g->kvs[i].key, i, NULL);
        if (put < 0) s = nomem(err, g->path);
        else if (put == 0) s = rf_err_set(err, RF_ERR_FORMAT, "%s: key %s appears twice", g->path, g->kvs[i].key);
    }
    g->align = DEFAULT_ALIGN;
    int64_t ai = s ? -1 : rf_gguf_find_kv(g, "general.alignment");
    if (ai >= 0) {
        const gkv *kv = &g->kvs[ai];
        uint32_t a = kv->type == RF_GV_U32 ? le32(kv->p) : 0;
        if (!a || (a & (a - 1)))
            s = rf_err_set(err, RF_ERR_FORMAT, "%s: general.alignment must be a u32 power of two", g->path);
        g->align = a;
    }
    for (uint64_t i = 0; i < nt && !s; i++) {
        s = parse_tensor(g, &c, i, err);
        g->nt = i + 1;
        if (s) break;
        int put = rf_nametab_put(&g->ttab, g->tensors[i].name, i, NULL);
        if (put < 0) s = nomem(err, g->path);
        else if (put == 0) s = rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s appears twice", g->path, g->tensors[i].name);
    }
    if (s) return s;
    g->data_off = align_up(c.pos, g->align);
    if (nt && g->data_off > g->size)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: the data section would start at %llu, beyond the end (%llu bytes)",
                          g->path, (ull)g->data_off, (ull)g->size);
    return place_tensors(g, err);
}

static rf_status open_image(rf_gguf *g, rf_gguf **out, rf_err *err)
{
    rf_status s = parse(g, err);
    if (s) {
        rf_gguf_close(g);
        return s;
    }
    *out = g;
    return RF_OK;
}

rf_status rf_gguf_open(const char *path, rf_gguf **out, rf_err *err)
{
    if (!path || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_gguf_open: NULL argument");
    *out = NULL;
    rf_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return nomem(err, path);
    }
    rf_status s = rf_file_map(path, &g->map, &g->size, err);
    if (s) {
        rf_gguf_close(g);
        return s;
    }
    g->base = g->map;
    return open_image(g, out, err);
}

rf_status rf_gguf_open_memory(const void *data, uint64_t size, const char *label, rf_gguf **out, rf_err *err)
{
    if (!out || (!data && size)) return rf_err_set(err, RF_ERR_INVALID, "rf_gguf_open_memory: NULL argument");
    *out = NULL;
    rf_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(label ? label : "<memory>"))) {
        free(g);
        return nomem(err, label ? label : "<memory>");
    }
    g->base = data;
    g->size = size;
    return open_image(g, out, err);
}

void rf_gguf_close(rf_gguf *g)
{
    if (!g) return;
    for (uint64_t i = 0; i < g->nkv; i++) {
        free(g->kvs[i].key);
        free(g->kvs[i].soff);
    }
    for (uint64_t i = 0; i < g->nt; i++) free((char *)g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    rf_nametab_free(&g->ktab);
    rf_nametab_free(&g->ttab);
    rf_file_unmap(g->map, g->size);
    free(g->path);
    free(g);
}

const char *rf_gguf_path(const rf_gguf *g) { return g->path; }
uint32_t rf_gguf_version(const rf_gguf *g) { return g->version; }
uint64_t rf_gguf_alignment(const rf_gguf *g) { return g->align; }
uint64_t rf_gguf_data_offset(const rf_gguf *g) { return g->data_off; }
uint64_t rf_gguf_file_size(const rf_gguf *g) { return g->size; }
uint64_t rf_gguf_kv_count(const rf_gguf *g) { return g->nkv; }
const char *rf_gguf_kv_key(const rf_gguf *g, uint64_t i) { return i < g->nkv ? g->kvs[i].key : NULL; }
rf_gguf_vtype rf_gguf_kv_type(const rf_gguf *g, uint64_t i) { return i < g->nkv ? g->kvs[i].type : RF_GV_COUNT; }
rf_gguf_vtype rf_gguf_kv_arr_type(const rf_gguf *g, uint64_t i) { return i < g->nkv ? g->kvs[i].atype : RF_GV_COUNT; }
uint64_t rf_gguf_kv_arr_len(const rf_gguf *g, uint64_t i) { return i < g->nkv ? g->kvs[i].n : 0; }
uint64_t rf_gguf_tensor_count(const rf_gguf *g) { return g->nt; }
const rf_gguf_tensor *rf_gguf_tensor_at(const rf_gguf *g, uint64_t i) { return i < g->nt ? &g->tensors[i] : NULL; }

int64_t rf_gguf_find_kv(const rf_gguf *g, const char *key)
{
    uint64_t i;
    return g && key && rf_nametab_get(&g->ktab, key, &i) ? (int64_t)i : -1;
}

const rf_gguf_tensor *rf_gguf_find_tensor(const rf_gguf *g, const char *name)
{
    uint64_t i;
    return g && name && rf_nametab_get(&g->ttab, name, &i) ? &g->tensors[i] : NULL;
}

/* Numeric value of element bytes P of type T (not strings/arrays). */
static double num_at(rf_gguf_vtype t, const uint8_t *p)
{
    switch (t) {
    case RF_GV_U8: case RF_GV_BOOL: return p[0];
    case RF_GV_I8: return (int8_t)p[0];
    case RF_GV_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case RF_GV_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case RF_GV_U32: return le32(p);
    case RF_GV_I32: return (int32_t)le32(p);
    case RF_GV_F32: { float v; memcpy(&v, p, 4); return v; }
    case RF_GV_U64: return (double)le64(p);
    case RF_GV_I64: return (double)(int64_t)le64(p);
    case RF_GV_F64: { double v; memcpy(&v, p, 8); return v; }
    default: return NAN;
    }
}

static rf_status find_typed(const rf_gguf *g, const char *key, const gkv **kv, rf_err *err)
{
    int64_t i = rf_gguf_find_kv(g, key);
    if (i < 0) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no key %s", g->path, key);
    *kv = &g->kvs[i];
    return RF_OK;
}

static rf_status wrong_type(const rf_gguf *g, const gkv *kv, const char *want, rf_err *err)
{
    return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s is %s, expected %s", g->path, kv->key,
                      rf_gguf_vtype_name(kv->type), want);
}

rf_status rf_gguf_get_int(const rf_gguf *g, const char *key, int64_t *out, rf_err *err)
{
    const gkv *kv = NULL;
    rf_status s = find_typed(g, key, &kv, err);
    if (s) return s;
    switch (kv->type) {
    case RF_GV_U64:
        if (le64(kv->p) > (uint64_t)INT64_MAX)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: key %s: %llu is too large", g->path, key, (ull)le64(kv->p));
        *out = (int64_t)le64(kv->p);
        return RF_OK;
    case RF_GV_I64: *out = (int64_t)le64(kv->p); return RF_OK;
    case RF_GV_U8: case RF_GV_I8: case RF_GV_U16: case RF_GV_I16: case RF_GV_U32: case RF_GV_I32: case RF_GV_BOOL:
        *out = (int64_t)num_at(kv->type, kv->p);
        return RF_OK;
    default: return wrong_type(g, kv, "an integer", err);
    }
}

rf_status rf_gguf_get_float(const rf_gguf *g, const char *key, double *out, rf_err *err)
{
    const gkv *kv = NULL;
    rf_status s = find_typed(g, key, &kv, err);
    if (s) return s;
    if (kv->type != RF_GV_F32 && kv->type != RF_GV_F64) return wrong_type(g, kv, "f32", err);
    *out = num_at(kv->type, kv->p);
    return RF_OK;
}

rf_status rf_gguf_get_str(const rf_gguf *g, const char *key, const char **str, uint64_t *len, rf_err *err)
{
    const gkv *kv = NULL;
    rf_status s = find_typed(g, key, &kv, err);
    if (s) return s;
    if (kv->type != RF_GV_STR) return wrong_type(g, kv, "string", err);
    *len = le64(kv->p);
    *str = (const char *)kv->p + 8;
    return RF_OK;
}

const char *rf_gguf_arr_str(const rf_gguf *g, uint64_t i, uint64_t j, uint64_t *len)
{
    if (i >= g->nkv || g->kvs[i].atype != RF_GV_STR || j >= g->kvs[i].n) return NULL;
    const uint8_t *p = g->kvs[i].p + g->kvs[i].soff[j];
    if (len) *len = le64(p);
    return (const char *)p + 8;
}

double rf_gguf_arr_num(const rf_gguf *g, uint64_t i, uint64_t j)
{
    if (i >= g->nkv || g->kvs[i].type != RF_GV_ARR || g->kvs[i].atype == RF_GV_STR || j >= g->kvs[i].n) return NAN;
    return num_at(g->kvs[i].atype, g->kvs[i].p + j * scalar_size[g->kvs[i].atype]);
}

void rf_gguf_kv_text(const rf_gguf *g, uint64_t i, char *buf, size_t cap)
{
    if (!cap) return;
    buf[0] = '\0';
    if (i >= g->nkv) return;
    const gkv *kv = &g->kvs[i];
    if (kv->type == RF_GV_ARR) {
        snprintf(buf, cap, "[array of %llu %s]", (ull)kv->n, rf_gguf_vtype_name(kv->atype));
    } else if (kv->type == RF_GV_STR) {
        uint64_t n = le64(kv->p);
        snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), (const char *)kv->p + 8);
    } else if (kv->type == RF_GV_BOOL) {
        snprintf(buf, cap, "%s", kv->p[0] ? "true" : "false");
    } else if (kv->type == RF_GV_F32 || kv->type == RF_GV_F64) {
        snprintf(buf, cap, "%.9g", num_at(kv->type, kv->p));
    } else if (kv->type == RF_GV_U64) {
        snprintf(buf, cap, "%llu", (ull)le64(kv->p));
    } else {
        snprintf(buf, cap, "%lld", (long long)(kv->type == RF_GV_I64 ? (int64_t)le64(kv->p) : (int64_t)num_at(kv->type, kv->p)));
    }
}

/* ------------------------------------------------------------------ writer */

typedef struct wtensor {
    char name[RF_GGUF_MAX_NAME + 1];
    int type, ndim;
    uint64_t ne[RF_GGUF_MAX_DIMS];
    uint64_t nbytes, offset;
} wtensor;

typedef struct bytebuf {
    uint8_t *p;
    uint64_t n, cap;
} bytebuf;

enum { W_DECLARE, W_DATA, W_DONE, W_FAILED };
#define WBUF (1u << 20)

struct rf_ggufw {
    char *path, *tmp;
    int fd, state;
    bytebuf kv;          /* serialised key/values */
    uint64_t nkv;
    rf_nametab keys, names;
    char **keynames;     /* owned key strings (the table borrows them) */
    wtensor *t;
    uint64_t nt, cap_t;
    uint64_t data_off, total;
    uint64_t cur, cur_done; /* tensor being written, its bytes so far */
    bytebuf out;         /* write buffer */
};

static int bb_put(bytebuf *b, const void *p, uint64_t n)
{
    if (b->n + n > b->cap) {
        uint64_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    return 1;
}

static int bb_u32(bytebuf *b, uint32_t v) { return bb_put(b, &v, 4); }
static int bb_u64(bytebuf *b, uint64_t v) { return bb_put(b, &v, 8); }
static int bb_str(bytebuf *b, const char *s, uint64_t n) { return bb_u64(b, n) && bb_put(b, s, n); }

static rf_status wfail(rf_ggufw *w, rf_status s)
{
    w->state = W_FAILED;
    return s;
}

rf_status rf_ggufw_create(const char *path, rf_ggufw **out, rf_err *err)
{
    if (!out || (path && !*path)) return rf_err_set(err, RF_ERR_INVALID, "rf_ggufw_create: no path");
    *out = NULL;
    rf_ggufw *w = calloc(1, sizeof *w);
    if (!path) { /* sizing only */
        if (!w || !(w->path = strdup("(GGUF size)"))) {
            free(w);
            return nomem(err, "(GGUF size)");
        }
        w->fd = -1;
        *out = w;
        return RF_OK;
    }
    size_t n = strlen(path) + 32;
    if (!w || !(w->path = strdup(path)) || !(w->tmp = malloc(n))) {
        if (w) free(w->path);
        free(w);
        return nomem(err, path);
    }
    w->fd = -1;
    /* O_EXCL with mode 0666: the caller's umask applies, as for any file they create */
    static unsigned counter;
    for (int attempt = 0; attempt < 100 && w->fd < 0; attempt++) {
        unsigned r = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL) ^ __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED) * 40503u;
        snprintf(w->tmp, n, "%s.tmp-%06x", path, r & 0xffffffu);
        w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (w->fd < 0 && errno != EEXIST) break;
    }
    if (w->fd < 0) {
        rf_status s = rf_err_errno(err, errno, "cannot create a temporary file next to %s", path);
        free(w->tmp);
        w->tmp = NULL;
        rf_ggufw_free(w);
        return s;
    }
    *out = w;
    return RF_OK;
}

void rf_ggufw_free(rf_ggufw *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp && w->state != W_DONE) unlink(w->tmp);
    for (uint64_t i = 0; i < w->nkv; i++) free(w->keynames[i]);
    free(w->keynames);
    free(w->kv.p);
    free(w->out.p);
    free(w->t);
    rf_nametab_free(&w->keys);
    rf_nametab_free(&w->names);
    free(w->path);
    free(w->tmp);
    free(w);
}

static rf_status begin_kv(rf_ggufw *w, const char *key, rf_gguf_vtype t, rf_err *err)
{
    if (w->state != W_DECLARE)
        return rf_err_set(err, RF_ERR_INVALID, "%s: key %s set after the tensor data started", w->path, key ? key : "?");
    if (!key || !*key) return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: empty key", w->path));
    if (!strcmp(key, "general.alignment")) /* the layout below is for ggml's default */
        return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: the writer always aligns to %u bytes", w->path, DEFAULT_ALIGN));
    char **kn = realloc(w->keynames, (w->nkv + 1) * sizeof *kn);
    if (!kn) return wfail(w, nomem(err, w->path));
    w->keynames = kn;
    if (!(kn[w->nkv] = strdup(key))) return wfail(w, nomem(err, w->path));
    int put = rf_nametab_put(&w->keys, kn[w->nkv], w->nkv, NULL);
    if (put <= 0) {
        free(kn[w->nkv]);
        return wfail(w, put < 0 ? nomem(err, w->path)
                                : rf_err_set(err, RF_ERR_INVALID, "%s: key %s set twice", w->path, key));
    }
    w->nkv++;
    if (!bb_str(&w->kv, key, strlen(key)) || !bb_u32(&w->kv, (uint32_t)t)) return wfail(w, nomem(err, w->path));
    return RF_OK;
}

static rf_status set_scalar(rf_ggufw *w, const char *key, rf_gguf_vtype t, const void *v, rf_err *err)
{
    rf_status s = begin_kv(w, key, t, err);
    if (!s && !bb_put(&w->kv, v, scalar_size[t])) s = wfail(w, nomem(err, w->path));
    return s;
}

rf_status rf_ggufw_set_str(rf_ggufw *w, const char *key, const char *value, rf_err *err)
{
    rf_status s = begin_kv(w, key, RF_GV_STR, err);
    if (!s && !bb_str(&w->kv, value, strlen(value))) s = wfail(w, nomem(err, w->path));
    return s;
}

rf_status rf_ggufw_set_u32(rf_ggufw *w, const char *key, uint32_t v, rf_err *err) { return set_scalar(w, key, RF_GV_U32, &v, err); }
rf_status rf_ggufw_set_i32(rf_ggufw *w, const char *key, int32_t v, rf_err *err) { return set_scalar(w, key, RF_GV_I32, &v, err); }
rf_status rf_ggufw_set_f32(rf_ggufw *w, const char *key, float v, rf_err *err) { return set_scalar(w, key, RF_GV_F32, &v, err); }

rf_status rf_ggufw_set_bool(rf_ggufw *w, const char *key, int value, rf_err *err)
{
    uint8_t v = value ? 1 : 0;
    return set_scalar(w, key, RF_GV_BOOL, &v, err);
}

rf_status rf_ggufw_set_arr_str(rf_ggufw *w, const char *key, const char *const *v, const uint64_t *lens, uint64_t n,
                               rf_err *err)
{
    rf_status s = begin_kv(w, key, RF_GV_ARR, err);
    if (s) return s;
    int ok = bb_u32(&w->kv, RF_GV_STR) && bb_u64(&w->kv, n);
    for (uint64_t i = 0; i < n && ok; i++) ok = bb_str(&w->kv, v[i], lens ? lens[i] : strlen(v[i]));
    return ok ? RF_OK : wfail(w, nomem(err, w->path));
}

rf_status rf_ggufw_set_arr(rf_ggufw *w, const char *key, rf_gguf_vtype et, const void *v, uint64_t n, rf_err *err)
{
    if ((unsigned)et >= RF_GV_COUNT || et == RF_GV_STR || et == RF_GV_ARR)
        return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: key %s: array element type %d", w->path, key, (int)et));
    rf_status s = begin_kv(w, key, RF_GV_ARR, err);
    if (s) return s;
    uint64_t nb;
    if (!rf_mul_u64(n, scalar_size[et], &nb) || !bb_u32(&w->kv, (uint32_t)et) || !bb_u64(&w->kv, n) ||
        !bb_put(&w->kv, v, nb))
        return wfail(w, nomem(err, w->path));
    return RF_OK;
}

rf_status rf_ggufw_add_tensor(rf_ggufw *w, const char *name, int type, int ndim, const uint64_t *ne, rf_err *err)
{
    if (w->state != W_DECLARE)
        return rf_err_set(err, RF_ERR_INVALID, "%s: tensor %s declared after the tensor data started", w->path,
                          name ? name : "?");
    if (!name || !*name || strlen(name) > RF_GGUF_MAX_NAME)
        return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: tensor name '%s' is empty or longer than %d bytes",
                                   w->path, name ? name : "", RF_GGUF_MAX_NAME));
    if (ndim < 1 || ndim > RF_GGUF_MAX_DIMS)
        return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: tensor %s: %d dimensions", w->path, name, ndim));
    uint64_t blk = rf_gtype_block(type), nelem = 1, nbytes;
    if (!blk) return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: tensor %s: unknown ggml type %d", w->path, name, type));
    for (int d = 0; d < ndim; d++)
        if (!rf_mul_u64(nelem, ne[d], &nelem))
            return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: tensor %s: shape overflows", w->path, name));
    if (ne[0] % blk || !rf_mul_u64(nelem / blk, rf_gtype_block_bytes(type), &nbytes))
        return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: tensor %s: rows of %llu do not fit %s (block %llu)",
                                   w->path, name, (ull)ne[0], rf_gtype_name(type), (ull)blk));
    if (w->nt == w->cap_t) {
        uint64_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) return wfail(w, nomem(err, w->path));
        w->t = t;
        w->cap_t = cap;
        /* the name table borrows names inside the array: rebuild it after a move */
        rf_nametab_free(&w->names);
        memset(&w->names, 0, sizeof w->names);
        for (uint64_t i = 0; i < w->nt; i++)
            if (rf_nametab_put(&w->names, w->t[i].name, i, NULL) < 0) return wfail(w, nomem(err, w->path));
    }
    wtensor *t = &w->t[w->nt];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    int put = rf_nametab_put(&w->names, t->name, w->nt, NULL);
    if (put <= 0)
        return wfail(w, put < 0 ? nomem(err, w->path)
                                : rf_err_set(err, RF_ERR_INVALID, "%s: tensor %s declared twice", w->path, name));
    t->type = type;
    t->ndim = ndim;
    for (int d = 0; d < RF_GGUF_MAX_DIMS; d++) t->ne[d] = d < ndim ? ne[d] : 1;
    t->nbytes = nbytes;
    w->nt++;
    return RF_OK;
}

/* Offsets and the header bytes; after this the layout is fixed. */
static rf_status layout(rf_ggufw *w, bytebuf *hdr, rf_err *err)
{
    int ok = bb_put(hdr, GGUF_MAGIC, 4) && bb_u32(hdr, 3) && bb_u64(hdr, w->nt) && bb_u64(hdr, w->nkv) &&
             bb_put(hdr, w->kv.p, w->kv.n);
    uint64_t off = 0;
    for (uint64_t i = 0; i < w->nt && ok; i++) {
        wtensor *t = &w->t[i];
        t->offset = off;
        off = align_up(off + t->nbytes, DEFAULT_ALIGN);
        ok = bb_str(hdr, t->name, strlen(t->name)) && bb_u32(hdr, (uint32_t)t->ndim);
        for (int d = 0; d < t->ndim && ok; d++) ok = bb_u64(hdr, t->ne[d]);
        ok = ok && bb_u32(hdr, (uint32_t)t->type) && bb_u64(hdr, t->offset);
    }
    if (!ok) return wfail(w, nomem(err, w->path));
    w->data_off = align_up(hdr->n, DEFAULT_ALIGN);
    w->total = w->data_off + off;
    static const uint8_t zeros[DEFAULT_ALIGN];
    if (!bb_put(hdr, zeros, w->data_off - hdr->n)) return wfail(w, nomem(err, w->path));
    return RF_OK;
}

uint64_t rf_ggufw_file_size(const rf_ggufw *w)
{
    if (w->state != W_DECLARE) return w->total;
    uint64_t hdr = 4 + 4 + 8 + 8 + w->kv.n, off = 0;
    for (uint64_t i = 0; i < w->nt; i++) {
        hdr += 8 + strlen(w->t[i].name) + 4 + 8 * (uint64_t)w->t[i].ndim + 4 + 8;
        off = align_up(off + w->t[i].nbytes, DEFAULT_ALIGN);
    }
    return align_up(hdr, DEFAULT_ALIGN) + off;
}

uint64_t rf_ggufw_tensor_bytes(const rf_ggufw *w, uint64_t i) { return i < w->nt ? w->t[i].nbytes : 0; }

static rf_status flush(rf_ggufw *w, rf_err *err)
{
    uint64_t o = 0;
    while (o < w->out.n) {
        ssize_t r = write(w->fd, w->out.p + o, (size_t)(w->out.n - o));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return wfail(w, rf_err_errno(err, r < 0 ? errno : ENOSPC, "writing %s", w->tmp));
        o += (uint64_t)r;
    }
    w->out.n = 0;
    return RF_OK;
}

static rf_status emit(rf_ggufw *w, const void *p, uint64_t n, rf_err *err)
{
    const uint8_t *b = p;
    while (n) {
        if (w->out.n == WBUF) {
            rf_status s = flush(w, err);
            if (s) return s;
        }
        uint64_t k = WBUF - w->out.n < n ? WBUF - w->out.n : n;
        memcpy(w->out.p + w->out.n, b, k);
        w->out.n += k;
        b += k;
        n -= k;
    }
    return RF_OK;
}

static rf_status start_data(rf_ggufw *w, rf_err *err)
{
    bytebuf hdr = {0};
    rf_status s = layout(w, &hdr, err);
    if (!s && !(w->out.p = malloc(WBUF))) s = wfail(w, nomem(err, w->path));
    if (!s) {
        w->out.cap = WBUF;
        w->state = W_DATA;
        s = emit(w, hdr.p, hdr.n, err);
    }
    free(hdr.p);
    return s;
}

/* Skip finished (and empty) tensors, padding each to the alignment. */
static rf_status advance(rf_ggufw *w, rf_err *err)
{
    static const uint8_t zeros[DEFAULT_ALIGN];
    while (w->cur < w->nt && w->cur_done == w->t[w->cur].nbytes) {
        uint64_t pad = align_up(w->t[w->cur].nbytes, DEFAULT_ALIGN) - w->t[w->cur].nbytes;
        rf_status s = emit(w, zeros, pad, err);
        if (s) return s;
        w->cur++;
        w->cur_done = 0;
    }
    return RF_OK;
}

rf_status rf_ggufw_write(rf_ggufw *w, const void *data, uint64_t n, rf_err *err)
{
    if (w->state == W_FAILED) return rf_err_set(err, RF_ERR_INVALID, "%s: the writer failed earlier", w->path);
    if (w->state == W_DONE) return rf_err_set(err, RF_ERR_INVALID, "%s: already finished", w->path);
    if (!w->tmp) return rf_err_set(err, RF_ERR_INVALID, "%s: a sizing writer writes no data", w->path);
    rf_status s = w->state == W_DECLARE ? start_data(w, err) : RF_OK;
    if (!s) s = advance(w, err);
    while (!s && n) {
        if (w->cur >= w->nt)
            return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: %llu bytes written past the last tensor", w->path,
                                       (ull)n));
        uint64_t k = w->t[w->cur].nbytes - w->cur_done;
        if (k > n) k = n;
        s = emit(w, data, k, err);
        data = (const uint8_t *)data + k;
        n -= k;
        w->cur_done += k;
        if (!s) s = advance(w, err);
    }
    return s;
}

rf_status rf_ggufw_finish(rf_ggufw *w, rf_err *err)
{
    if (w->state == W_FAILED) return rf_err_set(err, RF_ERR_INVALID, "%s: the writer failed earlier", w->path);
    if (w->state == W_DONE) return rf_err_set(err, RF_ERR_INVALID, "%s: already finished", w->path);
    if (!w->tmp) return rf_err_set(err, RF_ERR_INVALID, "%s: a sizing writer writes no file", w->path);
    rf_status s = w->state == W_DECLARE ? start_data(w, err) : RF_OK;
    if (!s) s = advance(w, err);
    if (!s && w->cur < w->nt)
        return wfail(w, rf_err_set(err, RF_ERR_INVALID, "%s: tensor %s has %llu of %llu bytes written", w->path,
                                   w->t[w->cur].name, (ull)w->cur_done, (ull)w->t[w->cur].nbytes));
    if (!s) s = flush(w, err);
    if (!s && fsync(w->fd) != 0) s = wfail(w, rf_err_errno(err, errno, "fsync %s", w->tmp));
    if (!s) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0) s = wfail(w, rf_err_errno(err, errno, "closing %s", w->tmp));
    }
    if (!s && rename(w->tmp, w->path) != 0) s = wfail(w, rf_err_errno(err, errno, "renaming %s to %s", w->tmp, w->path));
    if (s) return s;
    w->state = W_DONE;
    /* the rename itself reaches the disk with the directory (best effort) */
    char *dir = strdup(w->path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
        int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    return RF_OK;
}
