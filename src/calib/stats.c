/* The calibration statistics file (docs/calibration.md): writing it as the collector produces it,
 * and reading it back for the activation-weighted analysis and GPTQ.
 *
 * X.json (the index) names the model, the text and, per unit, the record of each member; X.bin (the
 * data file) holds each record's H (packed upper triangle of E[x x^T], float32) as its pass ended,
 * then the moments block: E[x_j^2] of every record (float64), in record order. The data file is
 * written first, under a temporary name; the index last: an index only ever names a complete data
 * file. The moments block is checked against its checksum when the file is opened, each H when it is
 * first used (they can be many gigabytes). */
#include "calib/calib_internal.h"
#include "plan/plan_internal.h"
#include "io/json_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t calib_fnv(uint64_t h, const void *p, uint64_t n)
{
    const uint8_t *b = p;
    for (uint64_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* "X.json" -> "X.bin" (any other name: NAME + ".bin"); malloc'd. */
static char *data_path(const char *json_path)
{
    size_t n = strlen(json_path);
    if (n > 5 && !strcmp(json_path + n - 5, ".json")) n -= 5;
    char *p = malloc(n + 5);
    if (p) {
        memcpy(p, json_path, n);
        memcpy(p + n, ".bin", 5);
    }
    return p;
}

static const char *base_of(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ------------------------------------------------------------------ writer */

struct calib_data {
    char *json_path, *bin_path, *tmp_path;
    FILE *f;
    uint64_t bytes, fnv;
};

rf_status calib_data_create(const char *json_path, calib_data **out, rf_err *err)
{
    *out = NULL;
    calib_data *d = calloc(1, sizeof *d);
    if (!d) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    d->json_path = strdup(json_path);
    d->bin_path = data_path(json_path);
    d->tmp_path = d->bin_path ? malloc(strlen(d->bin_path) + 5) : NULL;
    if (!d->json_path || !d->tmp_path) {
        calib_data_abort(d);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    sprintf(d->tmp_path, "%s.tmp", d->bin_path);
    d->f = fopen(d->tmp_path, "wb");
    if (!d->f) {
        rf_status s = rf_err_errno(err, errno, "%s: cannot create", d->tmp_path);
        calib_data_abort(d);
        return s;
    }
    d->fnv = RF_FNV_INIT;
    *out = d;
    return RF_OK;
}

rf_status calib_data_put(calib_data *d, const void *p, uint64_t n, uint64_t *off, uint64_t *fnv, rf_err *err)
{
    if (off) *off = d->bytes;
    if (fnv) *fnv = calib_fnv(RF_FNV_INIT, p, n);
    if (n && fwrite(p, 1, (size_t)n, d->f) != n) return rf_err_errno(err, errno, "%s: cannot write", d->tmp_path);
    d->fnv = calib_fnv(d->fnv, p, n);
    d->bytes += n;
    return RF_OK;
}

uint64_t calib_data_bytes(const calib_data *d) { return d ? d->bytes : 0; }

void calib_data_abort(calib_data *d)
{
    if (!d) return;
    if (d->f) fclose(d->f);
    if (d->tmp_path) unlink(d->tmp_path);
    free(d->json_path);
    free(d->bin_path);
    free(d->tmp_path);
    free(d);
}

static json_t *hex64(uint64_t v)
{
    char b[20];
    snprintf(b, sizeof b, "%016llx", (unsigned long long)v);
    return json_string(b);
}

static json_t *index_json(const calib_index *ix, const char *bin_name, uint64_t bytes, uint64_t fnv, uint64_t mom_off,
                          uint64_t mom_fnv)
{
    json_t *r = json_object(), *files = json_array(), *recs = json_array(), *units = json_array();
    for (uint64_t f = 0; f < rf_st_file_count(ix->st); f++)
        json_array_append_new(files, json_pack("[s, I]", base_of(rf_st_file_path(ix->st, f)),
                                               (json_int_t)rf_st_file_size(ix->st, f)));
    for (uint64_t i = 0; i < ix->nrec; i++) {
        const calib_rec *c = &ix->recs[i];
        json_array_append_new(recs, c->has_h ? json_pack("[I, I, I, o]", (json_int_t)c->cols, (json_int_t)c->tokens,
                                                         (json_int_t)c->h_off, hex64(c->h_fnv))
                                             : json_pack("[I, I, n, n]", (json_int_t)c->cols, (json_int_t)c->tokens));
    }
    for (uint64_t i = 0; i < ix->nunits; i++) {
        const calib_unit *u = &ix->units[i];
        json_t *m = json_array();
        for (int k = 0; k < u->members; k++) json_array_append_new(m, json_integer((json_int_t)u->rec[k]));
        json_array_append_new(units, json_pack("[s, s, I, o]", u->name, rf_role_name(u->role), (json_int_t)u->cols, m));
    }
    json_object_set_new(r, "format", json_string("ramfit-stats"));
    json_object_set_new(r, "version", json_integer(RF_STATS_VERSION));
    json_object_set_new(r, "ramfit_version", json_string(RF_VERSION_STRING));
    json_object_set_new(r, "model", json_pack("{s:s, s:o, s:o}", "name", ix->model_name, "fingerprint",
                                              hex64(ix->fingerprint), "files", files));
    json_object_set_new(r, "text", json_pack("{s:s, s:I, s:I, s:i, s:b, s:f}", "name", ix->text ? ix->text : "",
                                             "tokens", (json_int_t)ix->tokens, "windows", (json_int_t)ix->windows, "ctx",
                                             ix->ctx, "bos", ix->bos, "ppl", isfinite(ix->ppl) ? ix->ppl : 0.0));
    json_object_set_new(r, "hessian", json_boolean(ix->hessian));
    json_object_set_new(r, "data", json_pack("{s:s, s:I, s:o, s:I, s:o}", "file", bin_name, "bytes", (json_int_t)bytes,
                                             "fnv1a64", hex64(fnv), "moments_offset", (json_int_t)mom_off,
                                             "moments_fnv1a64", hex64(mom_fnv)));
    json_object_set_new(r, "record_fields", json_pack("[s, s, s, s]", "cols", "tokens", "h_offset", "h_fnv1a64"));
    json_object_set_new(r, "records", recs);
    json_object_set_new(r, "unit_fields", json_pack("[s, s, s, s]", "name", "role", "cols", "records"));
    json_object_set_new(r, "units", units);
    return r;
}

rf_status calib_data_finish(calib_data *d, const calib_index *ix, rf_err *err)
{
    rf_status s = RF_OK;
    static const uint8_t zero[8];
    if (d->bytes % 8) s = calib_data_put(d, zero, 8 - d->bytes % 8, NULL, NULL, err); /* the doubles start aligned */
    uint64_t mom_off = d->bytes, mom_fnv = RF_FNV_INIT, fnv_rec;
    for (uint64_t i = 0; i < ix->nrec && !s; i++) {
        s = calib_data_put(d, ix->recs[i].sq, ix->recs[i].cols * sizeof(double), NULL, &fnv_rec, err);
        mom_fnv = calib_fnv(mom_fnv, ix->recs[i].sq, ix->recs[i].cols * sizeof(double));
    }
    if (!s && (fflush(d->f) != 0 || fsync(fileno(d->f)) != 0)) s = rf_err_errno(err, errno, "%s: cannot write", d->tmp_path);
    if (fclose(d->f) != 0 && !s) s = rf_err_errno(err, errno, "%s: cannot write", d->tmp_path);
    d->f = NULL;
    if (!s && rename(d->tmp_path, d->bin_path) != 0) s = rf_err_errno(err, errno, "cannot rename %s", d->tmp_path);
    if (s) {
        calib_data_abort(d);
        return s;
    }
    json_t *j = index_json(ix, base_of(d->bin_path), d->bytes, d->fnv, mom_off, mom_fnv);
    char *text = j ? json_dumps(j, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(j);
    if (!text) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory writing %s", d->json_path);
    else {
        size_t n = strlen(text);
        char *t2 = realloc(text, n + 2);
        if (t2) {
            text = t2;
            text[n++] = '\n';
            text[n] = '\0';
        }
        s = rf_write_text_file(d->json_path, text, n, err);
        free(text);
    }
    if (s) unlink(d->bin_path);
    free(d->json_path);
    free(d->bin_path);
    free(d->tmp_path);
    free(d);
    return s;
}

/* ------------------------------------------------------------------ reader */

typedef struct st_rec {
    uint64_t cols, tokens;
    int has_h;
    uint64_t h_off, h_fnv;
    int h_ok;             /* checksum verified */
    const double *sq;
} st_rec;

typedef struct st_unit {
    char *name;
    rf_role role;
    uint64_t cols;
    int members;
    int64_t *rec;
} st_unit;

struct rf_stats {
    char *path;
    char model_name[256], text[256];
    uint64_t fingerprint, tokens, checksum;
    int hessian;
    st_rec *recs;
    uint64_t nrec;
    st_unit *units;
    uint64_t nunits;
    uint64_t *hash;       /* open addressing over units by name: index + 1, 0 empty */
    uint64_t hcap;
    void *map;
    uint64_t map_bytes;
    int borrowed;         /* map is the caller's memory (calib_stats_from_parts), not mmapped */
    pthread_mutex_t mu;   /* h_ok */
};

static uint64_t name_hash(const char *s) { return calib_fnv(RF_FNV_INIT, s, strlen(s)); }

static int64_t find_unit(const rf_stats *s, const char *name)
{
    if (!s->hcap) return -1;
    for (uint64_t i = name_hash(name) & (s->hcap - 1);; i = (i + 1) & (s->hcap - 1)) {
        uint64_t v = s->hash[i];
        if (!v) return -1;
        if (!strcmp(s->units[v - 1].name, name)) return (int64_t)(v - 1);
    }
}

void rf_stats_close(rf_stats *s)
{
    if (!s) return;
    for (uint64_t i = 0; i < s->nunits; i++) {
        free(s->units[i].name);
        free(s->units[i].rec);
    }
    free(s->units);
    free(s->recs);
    free(s->hash);
    if (s->map && !s->borrowed) munmap(s->map, s->map_bytes);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

static rf_status bad(const rf_stats *s, const char *field, const char *what, rf_err *err)
{
    return rf_err_set(err, RF_ERR_FORMAT, "%s: statistics file: %s: %s", s->path, field, what);
}

static int get_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

static int get_hex(json_t *v, uint64_t *out)
{
    const char *t = json_string_value(v);
    if (!t || strlen(t) != 16) return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(t, &end, 16);
    if (errno || *end) return 0;
    *out = x;
    return 1;
}

static int copy_str(json_t *v, char *dst, size_t cap)
{
    const char *t = json_string_value(v);
    if (!t || strlen(t) >= cap) return 0;
    memcpy(dst, t, strlen(t) + 1);
    return 1;
}

static rf_status parse_index(rf_stats *s, json_t *r, uint64_t *data_bytes, char *bin_name, size_t bin_cap,
                             uint64_t *mom_off, uint64_t *mom_fnv, rf_err *err)
{
    const char *fmt = json_string_value(json_object_get(r, "format"));
    if (!fmt || strcmp(fmt, "ramfit-stats")) return bad(s, "format", "not a ramfit statistics file", err);
    json_t *v = json_object_get(r, "version");
    if (!json_is_integer(v)) return bad(s, "version", "expected an integer", err);
    if (json_integer_value(v) != RF_STATS_VERSION)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: statistics format version %lld is not supported (this ramfit reads %d)",
                          s->path, (long long)json_integer_value(v), RF_STATS_VERSION);
    json_t *m = json_object_get(r, "model"), *t = json_object_get(r, "text"), *d = json_object_get(r, "data");
    if (!copy_str(json_object_get(m, "name"), s->model_name, sizeof s->model_name)) return bad(s, "model.name", "missing", err);
    if (!get_hex(json_object_get(m, "fingerprint"), &s->fingerprint)) return bad(s, "model.fingerprint", "missing", err);
    if (!copy_str(json_object_get(t, "name"), s->text, sizeof s->text)) return bad(s, "text.name", "missing", err);
    if (!get_u64(json_object_get(t, "tokens"), &s->tokens)) return bad(s, "text.tokens", "missing", err);
    json_t *h = json_object_get(r, "hessian");
    if (!json_is_boolean(h)) return bad(s, "hessian", "expected true or false", err);
    s->hessian = json_is_true(h);
    if (!copy_str(json_object_get(d, "file"), bin_name, bin_cap) || strchr(bin_name, '/') || !bin_name[0])
        return bad(s, "data.file", "missing or not a plain file name", err);
    if (!get_u64(json_object_get(d, "bytes"), data_bytes) || !get_hex(json_object_get(d, "fnv1a64"), &s->checksum) ||
        !get_u64(json_object_get(d, "moments_offset"), mom_off) || !get_hex(json_object_get(d, "moments_fnv1a64"), mom_fnv))
        return bad(s, "data", "bytes, fnv1a64, moments_offset or moments_fnv1a64 missing", err);
    json_t *recs = json_object_get(r, "records"), *units = json_object_get(r, "units");
    if (!json_is_array(recs) || !json_is_array(units)) return bad(s, "records/units", "expected arrays", err);
    s->nrec = json_array_size(recs);
    s->nunits = json_array_size(units);
    s->recs = calloc(s->nrec + 1, sizeof *s->recs);
    s->units = calloc(s->nunits + 1, sizeof *s->units);
    for (s->hcap = 16; s->hcap < 2 * s->nunits; s->hcap *= 2) {}
    s->hash = calloc(s->hcap, sizeof *s->hash);
    if (!s->recs || !s->units || !s->hash) return rf_err_set(err, RF_ERR_NOMEM, "out of memory reading %s", s->path);
    uint64_t mom_bytes = 0;
    for (uint64_t i = 0; i < s->nrec; i++) {
        json_t *e = json_array_get(recs, i);
        st_rec *c = &s->recs[i];
        char where[64];
        snprintf(where, sizeof where, "records[%llu]", (unsigned long long)i);
        if (!json_is_array(e) || json_array_size(e) != 4 || !get_u64(json_array_get(e, 0), &c->cols) || !c->cols ||
            c->cols > (1u << 24) || !get_u64(json_array_get(e, 1), &c->tokens))
            return bad(s, where, "expected [cols, tokens, h_offset, h_fnv1a64]", err);
        c->has_h = !json_is_null(json_array_get(e, 2));
        if (c->has_h != s->hessian || (c->has_h && (!get_u64(json_array_get(e, 2), &c->h_off) ||
                                                    !get_hex(json_array_get(e, 3), &c->h_fnv))))
            return bad(s, where, s->hessian ? "H offset and checksum missing" : "H given in a file without H", err);
        uint64_t hb = c->cols * (c->cols + 1) / 2 * sizeof(float);
        if (c->has_h && (c->h_off > *data_bytes || hb > *data_bytes - c->h_off || c->h_off % sizeof(float)))
            return bad(s, where, "H lies outside the data file", err);
        mom_bytes += c->cols * sizeof(double);
    }
    if (*mom_off > *data_bytes || mom_bytes != *data_bytes - *mom_off || *mom_off % sizeof(double))
        return bad(s, "data.moments_offset", "the moments block does not end the data file", err);
    for (uint64_t i = 0; i < s->nunits; i++) {
        json_t *e = json_array_get(units, i), *mr = json_array_get(e, 3);
        st_unit *u = &s->units[i];
        char where[64];
        snprintf(where, sizeof where, "units[%llu]", (unsigned long long)i);
        const char *nm = json_string_value(json_array_get(e, 0)), *role = json_string_value(json_array_get(e, 1));
        int ri = role ? rf_role_from_token(role) : -1;
        if (!json_is_array(e) || json_array_size(e) != 4 || !nm || !*nm || strlen(nm) >= 160 || ri < 0 ||
            !get_u64(json_array_get(e, 2), &u->cols) || !json_is_array(mr) || json_array_size(mr) == 0 ||
            json_array_size(mr) > (1u << 20))
            return bad(s, where, "expected [name, role, cols, [record per member]]", err);
        u->role = (rf_role)ri;
        u->members = (int)json_array_size(mr);
        u->name = strdup(nm);
        u->rec = malloc((size_t)u->members * sizeof *u->rec);
        if (!u->name || !u->rec) return rf_err_set(err, RF_ERR_NOMEM, "out of memory reading %s", s->path);
        for (int k = 0; k < u->members; k++) {
            json_t *x = json_array_get(mr, (size_t)k);
            if (!json_is_integer(x) || json_integer_value(x) < -1 || json_integer_value(x) >= (json_int_t)s->nrec ||
                (json_integer_value(x) >= 0 && s->recs[json_integer_value(x)].cols != u->cols))
                return bad(s, where, "a member's record is out of range or of another width", err);
            u->rec[k] = json_integer_value(x);
        }
        if (find_unit(s, nm) >= 0) return bad(s, where, "duplicate unit name", err);
        uint64_t slot = name_hash(nm) & (s->hcap - 1);
        while (s->hash[slot]) slot = (slot + 1) & (s->hcap - 1);
        s->hash[slot] = i + 1;
    }
    return RF_OK;
}

static rf_status stats_new(const char *label, rf_stats **out, rf_err *err)
{
    rf_stats *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(label))) {
        free(s);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return RF_OK;
}

static rf_status parse_text(rf_stats *s, const char *text, size_t len, uint64_t *data_bytes, char *bin_name, size_t cap,
                            uint64_t *mom_off, uint64_t *mom_fnv, rf_err *err)
{
    json_t *r;
    rf_status st = rf_json_parse(text, len, s->path, JSON_REJECT_DUPLICATES, &r, err);
    if (!st && !json_is_object(r)) st = rf_err_set(err, RF_ERR_FORMAT, "%s: not a statistics file: not an object", s->path);
    if (!st) st = parse_index(s, r, data_bytes, bin_name, cap, mom_off, mom_fnv, err);
    json_decref(r);
    return st;
}

/* The data file is in s->map: its moments against their checksum, then each record's pointer. */
static rf_status check_data(rf_stats *s, const char *bin, uint64_t data_bytes, uint64_t mom_off, uint64_t mom_fnv, rf_err *err)
{
    if (calib_fnv(RF_FNV_INIT, (const uint8_t *)s->map + mom_off, data_bytes - mom_off) != mom_fnv)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: the moments do not match their checksum in %s: the file is damaged or "
                          "from another run", bin, s->path);
    const double *m = (const double *)(const void *)((const uint8_t *)s->map + mom_off);
    for (uint64_t i = 0; i < s->nrec; i++) {
        s->recs[i].sq = m;
        for (uint64_t j = 0; j < s->recs[i].cols; j++)
            if (!(m[j] >= 0) || !isfinite(m[j]))
                return rf_err_set(err, RF_ERR_FORMAT, "%s: record %llu: E[x^2] of column %llu is %g", bin,
                                  (unsigned long long)i, (unsigned long long)j, m[j]);
        m += s->recs[i].cols;
    }
    return RF_OK;
}

rf_status calib_stats_from_parts(const char *json, size_t json_len, const void *data, uint64_t data_len, const char *label,
                                 rf_stats **out, rf_err *err)
{
    *out = NULL;
    rf_stats *s;
    rf_status st = stats_new(label, &s, err);
    if (st) return st;
    uint64_t data_bytes = 0, mom_off = 0, mom_fnv = 0;
    char bin_name[256];
    st = parse_text(s, json, json_len, &data_bytes, bin_name, sizeof bin_name, &mom_off, &mom_fnv, err);
    if (!st && data_len != data_bytes)
        st = rf_err_set(err, RF_ERR_FORMAT, "%s: %llu bytes of data, the index says %llu", label,
                        (unsigned long long)data_len, (unsigned long long)data_bytes);
    if (!st) {
        s->map = (void *)(uintptr_t)data;
        s->map_bytes = data_len;
        s->borrowed = 1;
        st = check_data(s, label, data_bytes, mom_off, mom_fnv, err);
    }
    if (st) {
        rf_stats_close(s);
        return st;
    }
    *out = s;
    return RF_OK;
}

rf_status rf_stats_open(const char *path, rf_stats **out, rf_err *err)
{
    if (!path || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_stats_open: NULL argument");
    *out = NULL;
    rf_stats *s;
    rf_status st = stats_new(path, &s, err);
    if (st) return st;
    char *text = NULL;
    size_t len = 0;
    uint64_t data_bytes = 0, mom_off = 0, mom_fnv = 0;
    char bin_name[256];
    st = rf_json_read_text(path, RF_MAX_PLAN_FILE, &text, &len, err);
    if (!st) st = parse_text(s, text, len, &data_bytes, bin_name, sizeof bin_name, &mom_off, &mom_fnv, err);
    free(text);
    char *bin = NULL;
    if (!st) {
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path + 1) : 0;
        bin = malloc(dl + strlen(bin_name) + 1);
        if (!bin) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        else {
            memcpy(bin, path, dl);
            strcpy(bin + dl, bin_name);
        }
    }
    if (!st) {
        int fd = open(bin, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0) st = rf_err_errno(err, errno, "%s: the data file of %s", bin, path);
        else if (fstat(fd, &sb) != 0) st = rf_err_errno(err, errno, "%s", bin);
        else if ((uint64_t)sb.st_size != data_bytes)
            st = rf_err_set(err, RF_ERR_FORMAT, "%s: %llu bytes, its index %s says %llu: the files do not belong together",
                            bin, (unsigned long long)sb.st_size, path, (unsigned long long)data_bytes);
        else if (data_bytes) {
            s->map = mmap(NULL, (size_t)data_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
            if (s->map == MAP_FAILED) {
                s->map = NULL;
                st = rf_err_errno(err, errno, "%s: cannot map", bin);
            }
            s->map_bytes = data_bytes;
        }
        if (fd >= 0) close(fd);
    }
    if (!st && s->map) st = check_data(s, bin, data_bytes, mom_off, mom_fnv, err);
    free(bin);
    if (st) {
        rf_stats_close(s);
        return st;
    }
    *out = s;
    return RF_OK;
}

uint64_t calib_stats_unit_count(const rf_stats *s) { return s ? s->nunits : 0; }

const char *calib_stats_unit(const rf_stats *s, uint64_t i, int *members)
{
    if (!s || i >= s->nunits) return NULL;
    if (members) *members = s->units[i].members;
    return s->units[i].name;
}

int rf_stats_has_hessian(const rf_stats *s) { return s && s->hessian; }
uint64_t rf_stats_tokens(const rf_stats *s) { return s ? s->tokens : 0; }
const char *rf_stats_text(const rf_stats *s) { return s ? s->text : ""; }
const char *rf_stats_model_name(const rf_stats *s) { return s ? s->model_name : ""; }
uint64_t rf_stats_fingerprint(const rf_stats *s) { return s ? s->fingerprint : 0; }
uint64_t rf_stats_checksum(const rf_stats *s) { return s ? s->checksum : 0; }

rf_status rf_stats_check_model(const rf_stats *s, const rf_model *m, rf_err *err)
{
    if (!s || !m) return rf_err_set(err, RF_ERR_INVALID, "rf_stats_check_model: NULL argument");
    uint64_t fp = rf_st_fingerprint(rf_model_st(m));
    if (fp != s->fingerprint)
        return rf_err_set(err, RF_ERR_MISMATCH, "%s: the statistics were collected on model '%s' (fingerprint %016llx), "
                          "not on %s (fingerprint %016llx): run 'ramfit calibrate' on this model", s->path, s->model_name,
                          (unsigned long long)s->fingerprint, rf_model_dir(m), (unsigned long long)fp);
    for (uint64_t i = 0; i < s->nunits; i++) {
        const st_unit *u = &s->units[i];
        int64_t k = rf_model_unit_find(m, u->name);
        const rf_unit *mu = k >= 0 ? rf_model_unit(m, (uint64_t)k) : NULL;
        if (!mu || mu->cols != u->cols || mu->n_members != u->members)
            return rf_err_set(err, RF_ERR_MISMATCH, "%s: unit %s (%llu columns, %d members) %s %s", s->path, u->name,
                              (unsigned long long)u->cols, u->members, mu ? "differs from the model's in" : "is not in",
                              rf_model_dir(m));
    }
    return RF_OK;
}

static rf_status member_rec(const rf_stats *s, const char *unit, int member, const st_rec **out, int64_t *ri, rf_err *err)
{
    if (!s || !unit) return rf_err_set(err, RF_ERR_INVALID, "statistics: NULL argument");
    int64_t u = find_unit(s, unit);
    if (u < 0) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no statistics for unit %s", s->path, unit);
    const st_unit *su = &s->units[u];
    if (member < 0 || member >= su->members)
        return rf_err_set(err, RF_ERR_INVALID, "%s: unit %s has %d members, not %d", s->path, unit, su->members, member + 1);
    if (su->rec[member] < 0)
        return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: member %d of unit %s had no input in the calibration text", s->path,
                          member, unit);
    *out = &s->recs[su->rec[member]];
    if (ri) *ri = su->rec[member];
    return RF_OK;
}

rf_status rf_stats_moments(const rf_stats *s, const char *unit, int member, const double **sq, uint64_t *tokens,
                           int64_t *record, rf_err *err)
{
    const st_rec *c;
    rf_status st = member_rec(s, unit, member, &c, record, err);
    if (st) return st;
    if (sq) *sq = c->sq;
    if (tokens) *tokens = c->tokens;
    return RF_OK;
}

rf_status rf_stats_hessian(const rf_stats *s, const char *unit, int member, const float **h, uint64_t *cols, rf_err *err)
{
    const st_rec *c;
    int64_t ri;
    rf_status st = member_rec(s, unit, member, &c, &ri, err);
    if (st) return st;
    if (!c->has_h)
        return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: collected without Hessians (run 'ramfit calibrate' with --hessian)",
                          s->path);
    const uint8_t *p = (const uint8_t *)s->map + c->h_off;
    rf_stats *ms = (rf_stats *)s; /* the verified flag only */
    pthread_mutex_lock(&ms->mu);
    if (!c->h_ok) {
        if (calib_fnv(RF_FNV_INIT, p, c->cols * (c->cols + 1) / 2 * sizeof(float)) != c->h_fnv)
            st = rf_err_set(err, RF_ERR_FORMAT, "%s: the Hessian of unit %s does not match its checksum: the data file is "
                            "damaged", s->path, unit);
        else
            ms->recs[ri].h_ok = 1;
    }
    pthread_mutex_unlock(&ms->mu);
    if (st) return st;
    *h = (const float *)(const void *)p;
    if (cols) *cols = c->cols;
    return RF_OK;
}
