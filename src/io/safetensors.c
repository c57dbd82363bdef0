/* safetensors reader: one file or a sharded checkpoint, mmapped read-only. The whole header (and
 * index) is validated at open so that every later access through rf_tensor is in bounds. */
#include "io/safetensors_internal.h"
#include "io/json_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_shard {
    char *path;            /* named in messages; rf_tensor.file points here */
    const uint8_t *base;   /* the whole file image */
    uint64_t size;
    void *map;             /* non-NULL when this handle mmapped the file */
    uint64_t header_len;   /* bytes of JSON after the 8-byte length */
    uint64_t first, count; /* its tensors: st->tensors[first .. first+count) */
} st_shard;

struct rf_st {
    st_shard *shards;
    uint64_t nshards;
    rf_tensor *tensors;
    uint64_t n, cap;
    char **meta_keys, **meta_vals;
    uint64_t nmeta;
    rf_nametab tab;
    uint64_t fingerprint;
};

typedef unsigned long long ull; /* for printf */

/* ------------------------------------------------------------------ hashing, name table */

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static inline uint64_t mix_word(uint64_t h, uint64_t k)
{
    k *= 0x87c37b91114253d5ull;
    k = rotl64(k, 31);
    k *= 0x4cf5ad432745937full;
    h ^= k;
    return rotl64(h, 27) * 5 + 0x52dce729ull;
}

uint64_t rf_st_hash64(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) h = mix_word(h, load_le64(p + i));
    if (i < n) {
        uint64_t k = 0;
        for (size_t j = n; j > i; j--) k = (k << 8) | p[j - 1];
        h = mix_word(h, k);
    }
    /* final avalanche so that nearby inputs land far apart */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t name_hash(const char *s) { return rf_st_hash64(s, strlen(s), 0x6e616d6573ull); }

static int nametab_grow(rf_nametab *t)
{
    uint64_t ncap = t->cap ? t->cap * 2 : 64;
    rf_nameslot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return -1;
    for (uint64_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].name) continue;
        uint64_t j = t->slots[i].hash & (ncap - 1);
        while (ns[j].name) j = (j + 1) & (ncap - 1);
        ns[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

int rf_nametab_put(rf_nametab *t, const char *name, uint64_t idx, uint64_t *existing)
{
    if ((t->n + 1) * 2 > t->cap && nametab_grow(t) != 0) return -1;
    uint64_t h = name_hash(name), j = h & (t->cap - 1);
    for (; t->slots[j].name; j = (j + 1) & (t->cap - 1)) {
        if (t->slots[j].hash == h && strcmp(t->slots[j].name, name) == 0) {
            if (existing) *existing = t->slots[j].idx;
            return 0;
        }
    }
    t->slots[j] = (rf_nameslot){name, h, idx};
    t->n++;
    return 1;
}

int rf_nametab_get(const rf_nametab *t, const char *name, uint64_t *idx)
{
    if (!t->cap || !name) return 0;
    uint64_t h = name_hash(name), j = h & (t->cap - 1);
    for (; t->slots[j].name; j = (j + 1) & (t->cap - 1)) {
        if (t->slots[j].hash == h && strcmp(t->slots[j].name, name) == 0) {
            if (idx) *idx = t->slots[j].idx;
            return 1;
        }
    }
    return 0;
}

void rf_nametab_free(rf_nametab *t)
{
    if (!t) return;
    free(t->slots);
    t->slots = NULL;
    t->cap = t->n = 0;
}

/* ------------------------------------------------------------------ handle lifetime */

void rf_st_close(rf_st *st)
{
    if (!st) return;
    for (uint64_t i = 0; i < st->nshards; i++) {
        rf_file_unmap(st->shards[i].map, st->shards[i].size);
        free(st->shards[i].path);
    }
    free(st->shards);
    for (uint64_t i = 0; i < st->n; i++) free((char *)st->tensors[i].name);
    free(st->tensors);
    for (uint64_t i = 0; i < st->nmeta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_vals[i]);
    }
    free(st->meta_keys);
    free(st->meta_vals);
    rf_nametab_free(&st->tab);
    free(st);
}

static rf_status nomem(rf_err *err, const char *what)
{
    return rf_err_set(err, RF_ERR_NOMEM, "out of memory (%s)", what);
}

static rf_status alloc_shards(rf_st *st, uint64_t n, rf_err *err)
{
    st->shards = calloc(n ? n : 1, sizeof *st->shards);
    if (!st->shards) return nomem(err, "shard table");
    st->nshards = n;
    return RF_OK;
}

/* ------------------------------------------------------------------ header parsing */

static int get_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

static rf_status parse_metadata(rf_st *st, const st_shard *sh, const json_t *meta, int keep, rf_err *err)
{
    if (!json_is_object(meta)) return rf_err_set(err, RF_ERR_FORMAT, "%s: __metadata__ is not an object", sh->path);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)meta, key, val) {
        if (!json_is_string(val))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string", sh->path, key);
    }
    if (!keep) return RF_OK;
    size_t n = json_object_size(meta);
    st->meta_keys = calloc(n ? n : 1, sizeof *st->meta_keys);
    st->meta_vals = calloc(n ? n : 1, sizeof *st->meta_vals);
    if (!st->meta_keys || !st->meta_vals) return nomem(err, "metadata");
    json_object_foreach((json_t *)meta, key, val) {
        st->meta_keys[st->nmeta] = strdup(key);
        st->meta_vals[st->nmeta] = strdup(json_string_value(val));
        st->nmeta++;
        if (!st->meta_keys[st->nmeta - 1] || !st->meta_vals[st->nmeta - 1]) return nomem(err, "metadata");
    }
    return RF_OK;
}

/* Fill T (name already set) from one header entry, checking it against the data section. */
static rf_status parse_entry(const st_shard *sh, const char *name, const json_t *val, uint64_t data_start,
                             rf_tensor *t, rf_err *err)
{
    const char *f = sh->path;
    if (!json_is_object(val)) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': entry is not an object", f, name);
    const json_t *jdt = json_object_get(val, "dtype");
    const json_t *jshape = json_object_get(val, "shape");
    const json_t *joff = json_object_get(val, "data_offsets");
    if (!jdt) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': missing dtype", f, name);
    if (!json_is_string(jdt)) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': dtype is not a string", f, name);
    t->dtype = rf_dtype_from_name(json_string_value(jdt));
    if (t->dtype == RF_DT_INVALID)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor '%s': unknown dtype '%s'", f, name,
                          json_string_value(jdt));
    if (!jshape) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': missing shape", f, name);
    if (!json_is_array(jshape)) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': shape is not an array", f, name);
    size_t ndim = json_array_size(jshape);
    if (ndim > RF_MAX_DIMS)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions (at most %d supported)", f, name,
                          ndim, RF_MAX_DIMS);
    t->ndim = (int)ndim;
    t->nelem = 1;
    for (size_t d = 0; d < ndim; d++) {
        if (!get_uint(json_array_get(jshape, d), &t->shape[d]))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a non-negative integer", f,
                              name, d);
        if (!rf_mul_u64(t->nelem, t->shape[d], &t->nelem))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': shape element count overflows", f, name);
    }
    if (!rf_mul_u64(t->nelem, rf_dtype_size(t->dtype), &t->nbytes))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': shape byte size overflows", f, name);
    if (!joff) return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': missing data_offsets", f, name);
    uint64_t begin, end;
    if (!json_is_array(joff) || json_array_size(joff) != 2 || !get_uint(json_array_get(joff, 0), &begin) ||
        !get_uint(json_array_get(joff, 1), &end))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': data_offsets is not [begin, end] of non-negative integers",
                          f, name);
    uint64_t data_len = sh->size - data_start;
    if (end < begin)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before begin", f, name,
                          (ull)begin, (ull)end);
    if (end > data_len)
        return rf_err_set(err, RF_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section (%llu bytes)", f, name,
                          (ull)begin, (ull)end, (ull)data_len);
    if (end - begin != t->nbytes)
        return rf_err_set(err, RF_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets span %llu bytes but shape x dtype is %llu bytes", f, name,
                          (ull)(end - begin), (ull)t->nbytes);
    t->offset = data_start + begin;
    t->data = sh->base + t->offset;
    t->file = sh->path;
    return RF_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const rf_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static rf_status push_tensor(rf_st *st, const char *name, rf_tensor **out, rf_err *err)
{
    if (st->n == st->cap) {
        uint64_t ncap = st->cap ? st->cap * 2 : 64;
        rf_tensor *nt = realloc(st->tensors, ncap * sizeof *nt);
        if (!nt) return nomem(err, "tensor table");
        st->tensors = nt;
        st->cap = ncap;
    }
    rf_tensor *t = &st->tensors[st->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return nomem(err, "tensor name");
    st->n++;
    *out = t;
    return RF_OK;
}

/* Put one shard's tensors in data order; byte ranges must not overlap. */
static rf_status sort_and_check_overlap(rf_tensor *ts, uint64_t n, const char *file, rf_err *err)
{
    if (n == 0) return RF_OK;
    qsort(ts, (size_t)n, sizeof *ts, cmp_offset);
    for (uint64_t i = 1; i < n; i++)
        if (ts[i].offset < ts[i - 1].offset + ts[i - 1].nbytes)
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", file, ts[i - 1].name, ts[i].name);
    return RF_OK;
}

/* Parse and validate shard SI's header, appending its tensors in data-offset order. */
static rf_status parse_shard(rf_st *st, uint64_t si, rf_err *err)
{
    st_shard *sh = &st->shards[si];
    const char *f = sh->path;
    if (sh->size < 8)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: file too small for a safetensors header (%llu bytes)", f,
                          (ull)sh->size);
    uint64_t hlen = load_le64(sh->base);
    if (hlen > RF_ST_MAX_HEADER)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: absurd header length %llu (limit %llu)", f, (ull)hlen,
                          (ull)RF_ST_MAX_HEADER);
    if (hlen > sh->size - 8)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)", f,
                          (ull)hlen, (ull)sh->size);
    sh->header_len = hlen;
    json_t *root;
    rf_err jerr;
    char label[4200];
    snprintf(label, sizeof label, "%s: header", f);
    if (rf_json_parse((const char *)sh->base + 8, (size_t)hlen, label, JSON_REJECT_DUPLICATES, &root, &jerr)) {
        if (err) *err = jerr;
        if (strstr(jerr.msg, "duplicate"))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: duplicate name in header: %s", f, jerr.msg + strlen(label) + 2);
        return jerr.code;
    }
    rf_status rc = RF_OK;
    if (!json_is_object(root)) {
        rc = rf_err_set(err, RF_ERR_FORMAT, "%s: header is not a JSON object", f);
        goto out;
    }
    sh->first = st->n;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = parse_metadata(st, sh, val, si == 0, err);
        } else {
            rf_tensor *t = NULL;
            rc = push_tensor(st, key, &t, err);
            if (rc == RF_OK) rc = parse_entry(sh, key, val, 8 + hlen, t, err);
        }
        if (rc != RF_OK) goto out;
    }
    sh->count = st->n - sh->first;
    rc = sort_and_check_overlap(st->tensors ? st->tensors + sh->first : NULL, sh->count, f, err);
out:
    json_decref(root);
    return rc;
}

/* Enter every tensor in the name table; a name in two shards is an error. */
static rf_status index_names(rf_st *st, rf_err *err)
{
    for (uint64_t i = 0; i < st->n; i++) {
        uint64_t prev;
        int r = rf_nametab_put(&st->tab, st->tensors[i].name, i, &prev);
        if (r < 0) return nomem(err, "name table");
        if (r == 0)
            return rf_err_set(err, RF_ERR_FORMAT, "tensor '%s' is in both %s and %s", st->tensors[i].name,
                              st->tensors[prev].file, st->tensors[i].file);
    }
    return RF_OK;
}

static void compute_fingerprint(rf_st *st)
{
    uint64_t h = 0x72616d666974ull;
    for (uint64_t i = 0; i < st->nshards; i++) {
        const st_shard *sh = &st->shards[i];
        const char *base = strrchr(sh->path, '/');
        base = base ? base + 1 : sh->path;
        uint8_t sz[8];
        for (int b = 0; b < 8; b++) sz[b] = (uint8_t)(sh->size >> (8 * b));
        h = rf_st_hash64(base, strlen(base) + 1, h);
        h = rf_st_hash64(sz, 8, h);
        h = rf_st_hash64(sh->base, (size_t)(8 + sh->header_len), h);
    }
    st->fingerprint = h;
}

/* ------------------------------------------------------------------ single file / memory */

static rf_status new_handle(rf_st **out, rf_err *err)
{
    *out = calloc(1, sizeof **out);
    return *out ? RF_OK : nomem(err, "handle");
}

static rf_status finish_open(rf_st *st, rf_st **out, rf_err *err)
{
    rf_status rc = index_names(st, err);
    if (rc != RF_OK) {
        rf_st_close(st);
        return rc;
    }
    compute_fingerprint(st);
    *out = st;
    return RF_OK;
}

static rf_status map_file(const char *path, st_shard *sh, rf_err *err)
{
    sh->path = strdup(path);
    if (!sh->path) return nomem(err, "path");
    void *m;
    rf_status rc = rf_file_map(path, &m, &sh->size, err);
    sh->map = m;
    sh->base = m;
    return rc; /* too-small files are reported by parse_shard */
}

static rf_status open_single(const char *path, rf_st **out, rf_err *err)
{
    rf_st *st;
    rf_status rc = new_handle(&st, err);
    if (rc == RF_OK) rc = alloc_shards(st, 1, err);
    if (rc == RF_OK) rc = map_file(path, &st->shards[0], err);
    if (rc == RF_OK) rc = parse_shard(st, 0, err);
    if (rc != RF_OK) {
        rf_st_close(st);
        return rc;
    }
    return finish_open(st, out, err);
}

rf_status rf_st_open_memory(const void *data, uint64_t size, const char *label, rf_st **out, rf_err *err)
{
    if (!out || (!data && size)) return rf_err_set(err, RF_ERR_INVALID, "rf_st_open_memory: bad arguments");
    *out = NULL;
    rf_st *st;
    rf_status rc = new_handle(&st, err);
    if (rc == RF_OK) rc = alloc_shards(st, 1, err);
    if (rc == RF_OK) {
        st_shard *sh = &st->shards[0];
        sh->path = strdup(label ? label : "<memory>");
        sh->base = data;
        sh->size = size;
        rc = sh->path ? parse_shard(st, 0, err) : nomem(err, "label");
    }
    if (rc != RF_OK) {
        rf_st_close(st);
        return rc;
    }
    return finish_open(st, out, err);
}

/* ------------------------------------------------------------------ sharded checkpoints */

/* Loads the shard called NAME (as written in the index) into SH. */
typedef rf_status (*shard_loader)(void *ctx, const char *name, st_shard *sh, rf_err *err);

static int plain_file_name(const char *s)
{
    return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The distinct shard file names of WMAP, sorted. */
static rf_status collect_files(const json_t *wmap, const char *label, const char ***files, uint64_t *nfiles,
                               rf_err *err)
{
    size_t n = json_object_size(wmap);
    const char **names = calloc(n ? n : 1, sizeof *names);
    rf_nametab seen = {0};
    uint64_t k = 0;
    rf_status rc = RF_OK;
    if (!names) return nomem(err, "index");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)wmap, key, val) {
        if (!json_is_string(val)) {
            rc = rf_err_set(err, RF_ERR_FORMAT, "%s: weight_map entry of tensor '%s' is not a string", label, key);
            break;
        }
        const char *fname = json_string_value(val);
        if (!plain_file_name(fname)) {
            rc = rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s': shard '%s' is not a plain file name", label, key,
                            fname);
            break;
        }
        int r = rf_nametab_put(&seen, fname, k, NULL);
        if (r < 0) {
            rc = nomem(err, "index");
            break;
        }
        if (r == 1) names[k++] = fname;
    }
    rf_nametab_free(&seen);
    if (rc != RF_OK) {
        free(names);
        return rc;
    }
    qsort(names, (size_t)k, sizeof *names, cmp_str);
    *files = names;
    *nfiles = k;
    return RF_OK;
}

/* Every shard tensor is in the index under its own shard, and every index entry was found. */
static rf_status check_index(const rf_st *st, const json_t *wmap, const char *label, const char **files, rf_err *err)
{
    for (uint64_t s = 0; s < st->nshards; s++) {
        const st_shard *sh = &st->shards[s];
        for (uint64_t i = sh->first; i < sh->first + sh->count; i++) {
            const char *name = st->tensors[i].name;
            const json_t *v = json_object_get(wmap, name);
            if (!v)
                return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s' is not in the index %s", sh->path, name, label);
            if (strcmp(json_string_value(v), files[s]) != 0)
                return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s' is in %s but the index names %s", label, name,
                                  sh->path, json_string_value(v));
        }
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)wmap, key, val) {
        if (!rf_nametab_get(&st->tab, key, NULL))
            return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor '%s' is not in its shard %s", label, key,
                              json_string_value(val));
    }
    return RF_OK;
}

static const char *first_tensor_of(const json_t *wmap, const char *file)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)wmap, key, val) {
        if (strcmp(json_string_value(val), file) == 0) return key;
    }
    return "?";
}

static rf_status open_index_text(const char *text, uint64_t len, const char *label, shard_loader load, void *ctx,
                                 rf_st **out, rf_err *err)
{
    if (len > RF_ST_MAX_HEADER)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: index is too large (%llu bytes)", label, (ull)len);
    json_t *root;
    rf_status prc = rf_json_parse(text, (size_t)len, label, JSON_REJECT_DUPLICATES, &root, err);
    if (prc) return prc;
    rf_st *st = NULL;
    const char **files = NULL;
    uint64_t nfiles = 0;
    rf_status rc = RF_OK;
    const json_t *wmap = json_object_get(root, "weight_map");
    const json_t *meta = json_object_get(root, "metadata");
    if (!json_is_object(root)) rc = rf_err_set(err, RF_ERR_FORMAT, "%s: index is not a JSON object", label);
    else if (!json_is_object(wmap)) rc = rf_err_set(err, RF_ERR_FORMAT, "%s: missing weight_map object", label);
    else if (meta && !json_is_object(meta)) rc = rf_err_set(err, RF_ERR_FORMAT, "%s: metadata is not an object", label);
    if (rc == RF_OK) rc = collect_files(wmap, label, &files, &nfiles, err);
    if (rc == RF_OK && nfiles == 0) rc = rf_err_set(err, RF_ERR_FORMAT, "%s: weight_map is empty", label);
    if (rc == RF_OK) rc = new_handle(&st, err);
    if (rc == RF_OK) rc = alloc_shards(st, nfiles, err);
    for (uint64_t s = 0; rc == RF_OK && s < nfiles; s++) {
        rc = load(ctx, files[s], &st->shards[s], err);
        if (rc != RF_OK) {
            rf_err_prefix(err, "%s: shard of tensor '%s': ", label, first_tensor_of(wmap, files[s]));
            break;
        }
        rc = parse_shard(st, s, err);
    }
    if (rc == RF_OK) rc = index_names(st, err);
    if (rc == RF_OK) rc = check_index(st, wmap, label, files, err);
    free(files);
    json_decref(root);
    if (rc != RF_OK) {
        rf_st_close(st);
        return rc;
    }
    compute_fingerprint(st);
    *out = st;
    return RF_OK;
}

static rf_status load_mem_shard(void *ctx, const char *name, st_shard *sh, rf_err *err)
{
    const rf_st_mem_shard *const *pp = ctx;
    const rf_st_mem_shard *shards = pp[0];
    uint64_t n = (uint64_t)(uintptr_t)pp[1];
    sh->path = strdup(name);
    if (!sh->path) return nomem(err, "path");
    for (uint64_t i = 0; i < n; i++) {
        if (shards[i].name && strcmp(shards[i].name, name) == 0) {
            sh->base = shards[i].data;
            sh->size = shards[i].data ? shards[i].size : 0;
            return RF_OK;
        }
    }
    return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no such file", name);
}

rf_status rf_st_open_index_memory(const void *json, uint64_t len, const char *label, const rf_st_mem_shard *shards,
                                  uint64_t nshards, rf_st **out, rf_err *err)
{
    if (!out || (!json && len)) return rf_err_set(err, RF_ERR_INVALID, "rf_st_open_index_memory: bad arguments");
    *out = NULL;
    const rf_st_mem_shard *ctx[2] = {shards, (const rf_st_mem_shard *)(uintptr_t)nshards};
    return open_index_text(json ? json : "", len, label ? label : "<index>", load_mem_shard, (void *)ctx, out, err);
}

static rf_status load_file_shard(void *ctx, const char *name, st_shard *sh, rf_err *err)
{
    const char *dir = ctx;
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) return nomem(err, "path");
    snprintf(p, n, "%s/%s", dir, name);
    rf_status rc = map_file(p, sh, err);
    free(p);
    return rc;
}

static rf_status open_index_file(const char *path, rf_st **out, rf_err *err)
{
    char *text = NULL;
    size_t len = 0;
    rf_status rc = rf_json_read_text(path, RF_ST_MAX_HEADER, &text, &len, err);
    if (rc != RF_OK) return rc;
    char *dir = strdup(path);
    if (!dir) {
        free(text);
        return nomem(err, "path");
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else strcpy(dir, ".");
    rc = open_index_text(text, len, path, load_file_shard, dir, out, err);
    free(dir);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ path resolution */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int is_regular(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Pick the checkpoint file in DIR: model.safetensors.index.json, else the only *.safetensors.index.json,
 * else model.safetensors, else the only *.safetensors. */
static rf_status resolve_dir(const char *dir, char **chosen, rf_err *err)
{
    char *p = join(dir, "model.safetensors.index.json");
    if (!p) return nomem(err, "path");
    if (is_regular(p)) {
        *chosen = p;
        return RF_OK;
    }
    free(p);
    DIR *d = opendir(dir);
    if (!d) return rf_err_errno(err, errno, "cannot list %s", dir);
    char *index = NULL, *single = NULL;
    int nindex = 0, nsingle = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int is_idx = ends_with(e->d_name, ".safetensors.index.json");
        if (!is_idx && !ends_with(e->d_name, ".safetensors")) continue;
        char *full = join(dir, e->d_name);
        if (!full || !is_regular(full)) {
            free(full);
            continue;
        }
        char **slot = is_idx ? &index : &single;
        int *count = is_idx ? &nindex : &nsingle;
        /* keep the smallest name so the choice and message do not depend on readdir order */
        if (!*slot || strcmp(full, *slot) < 0) {
            free(*slot);
            *slot = full;
        } else {
            free(full);
        }
        (*count)++;
    }
    closedir(d);
    rf_status rc = RF_OK;
    char *model = join(dir, "model.safetensors");
    if (!model) rc = nomem(err, "path");
    else if (nindex > 1) rc = rf_err_set(err, RF_ERR_FORMAT, "%s: several *.safetensors.index.json files", dir);
    else if (nindex == 1) { *chosen = index; index = NULL; }
    else if (is_regular(model)) { *chosen = model; model = NULL; }
    else if (nsingle == 1) { *chosen = single; single = NULL; }
    else if (nsingle == 0) rc = rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no .safetensors file in the directory", dir);
    else rc = rf_err_set(err, RF_ERR_FORMAT, "%s: several .safetensors files and no index.json", dir);
    free(index);
    free(single);
    free(model);
    return rc;
}

rf_status rf_st_open(const char *path, rf_st **out, rf_err *err)
{
    if (!path || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_st_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no such file or directory", path);
        return rf_err_errno(err, errno, "cannot open %s", path);
    }
    if (S_ISDIR(sb.st_mode)) {
        char *chosen = NULL;
        rf_status rc = resolve_dir(path, &chosen, err);
        if (rc != RF_OK) return rc;
        rc = ends_with(chosen, ".json") ? open_index_file(chosen, out, err) : open_single(chosen, out, err);
        free(chosen);
        return rc;
    }
    return ends_with(path, ".json") ? open_index_file(path, out, err) : open_single(path, out, err);
}

/* ------------------------------------------------------------------ accessors */

uint64_t rf_st_count(const rf_st *st) { return st ? st->n : 0; }

const rf_tensor *rf_st_get(const rf_st *st, uint64_t i) { return st && i < st->n ? &st->tensors[i] : NULL; }

const rf_tensor *rf_st_find(const rf_st *st, const char *name)
{
    uint64_t i;
    return st && rf_nametab_get(&st->tab, name, &i) ? &st->tensors[i] : NULL;
}

const char *rf_st_metadata(const rf_st *st, const char *key)
{
    if (!st || !key) return NULL;
    for (uint64_t i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_vals[i];
    return NULL;
}

uint64_t rf_st_file_count(const rf_st *st) { return st ? st->nshards : 0; }

const char *rf_st_file_path(const rf_st *st, uint64_t i) { return st && i < st->nshards ? st->shards[i].path : NULL; }

uint64_t rf_st_file_size(const rf_st *st, uint64_t i) { return st && i < st->nshards ? st->shards[i].size : 0; }

uint64_t rf_st_fingerprint(const rf_st *st) { return st ? st->fingerprint : 0; }

/* The shard holding tensor T (one of ours), or NULL. */
static const st_shard *shard_of(const rf_st *st, const rf_tensor *t)
{
    uintptr_t a = (uintptr_t)t, lo = (uintptr_t)st->tensors, hi = (uintptr_t)(st->tensors + st->n);
    if (a < lo || a >= hi) return NULL;
    uint64_t i = (uint64_t)(t - st->tensors), l = 0, r = st->nshards;
    while (r - l > 1) {
        uint64_t m = l + (r - l) / 2;
        if (st->shards[m].first <= i) l = m;
        else r = m;
    }
    return &st->shards[l];
}

static void advise(const rf_st *st, const rf_tensor *t, int advice)
{
    if (!st || !t || t->nbytes == 0) return;
    const st_shard *sh = shard_of(st, t);
    if (!sh || !sh->map) return; /* memory images belong to the caller */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t b = (uintptr_t)t->data & ~(page - 1);
    uintptr_t e = ((uintptr_t)t->data + (uintptr_t)t->nbytes + page - 1) & ~(page - 1);
    (void)madvise((void *)b, e - b, advice); /* only a hint: failure changes nothing */
}

void rf_st_advise_willneed(const rf_st *st, const rf_tensor *t) { advise(st, t, MADV_WILLNEED); }

void rf_st_advise_dontneed(const rf_st *st, const rf_tensor *t) { advise(st, t, MADV_DONTNEED); }
