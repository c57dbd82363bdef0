/* Streaming safetensors writer: every tensor is declared first (so headers and shard layout are
 * known), then data is streamed in declaration order through a small buffer. Files are written under
 * temporary names and renamed only once every byte is on disk, so a failed or abandoned write never
 * leaves a file that looks like a checkpoint. */
#include "io/safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STW_BUF (1u << 20)

typedef unsigned long long ull;

typedef struct stw_tensor {
    char *name;
    rf_dtype dt;
    int ndim;
    uint64_t shape[RF_MAX_DIMS];
    uint64_t nbytes;
    uint64_t begin;  /* offset in its shard's data section */
    uint64_t shard;
} stw_tensor;

typedef struct stw_shard {
    char *path, *tmp;     /* final and temporary paths */
    const char *name;     /* base name, inside path */
    uint64_t first, count, data_bytes, header_len;
    int created, renamed;
} stw_shard;

enum { STW_DECLARING, STW_WRITING, STW_FINISHED, STW_FAILED };

struct rf_stw {
    char *dir, *base;
    uint64_t max_shard;
    int always_index;
    char **mkeys, **mvals;
    uint64_t nmeta;
    stw_tensor *t;
    uint64_t n, cap;
    rf_nametab tab;
    uint64_t total;
    int state;
    stw_shard *shards;
    uint64_t nshards;
    uint64_t open_shard; /* index of the shard fd belongs to */
    int fd;
    uint64_t cur, cur_done; /* tensor being written and bytes of it written */
    uint8_t *buf;
    size_t buflen;
    char *index_tmp, *index_path;
};

static rf_status nomem(rf_err *err) { return rf_err_set(err, RF_ERR_NOMEM, "out of memory (safetensors writer)"); }

static char *path_join(const char *dir, const char *prefix, const char *name, const char *suffix)
{
    size_t n = strlen(dir) + strlen(prefix) + strlen(name) + strlen(suffix) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s%s%s", dir, prefix, name, suffix);
    return p;
}

static int valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

rf_status rf_stw_create(const char *dir, const rf_stw_opts *opts, rf_stw **out, rf_err *err)
{
    if (!dir || !out) return rf_err_set(err, RF_ERR_INVALID, "rf_stw_create: NULL argument");
    *out = NULL;
    const char *base = opts && opts->basename ? opts->basename : "model";
    if (!*base || strchr(base, '/'))
        return rf_err_set(err, RF_ERR_INVALID, "safetensors writer: basename '%s' is not a plain file name", base);
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        if (errno == ENOENT) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no such directory", dir);
        return rf_err_errno(err, errno, "cannot access %s", dir);
    }
    if (!S_ISDIR(sb.st_mode)) return rf_err_set(err, RF_ERR_INVALID, "%s: not a directory", dir);
    rf_stw *w = calloc(1, sizeof *w);
    if (!w) return nomem(err);
    w->fd = -1;
    w->dir = strdup(dir);
    w->base = strdup(base);
    w->max_shard = opts ? opts->max_shard_bytes : 0;
    w->always_index = opts ? opts->always_index : 0;
    if (!w->dir || !w->base) {
        rf_stw_free(w);
        return nomem(err);
    }
    *out = w;
    return RF_OK;
}

static rf_status not_declaring(const rf_stw *w, const char *what, rf_err *err)
{
    return rf_err_set(err, RF_ERR_INVALID, "%s/%s.safetensors: %s after writing started", w->dir, w->base, what);
}

rf_status rf_stw_set_metadata(rf_stw *w, const char *key, const char *value, rf_err *err)
{
    if (!w || !key || !value) return rf_err_set(err, RF_ERR_INVALID, "rf_stw_set_metadata: NULL argument");
    if (w->state != STW_DECLARING) return not_declaring(w, "set_metadata", err);
    if (!valid_utf8(key) || !valid_utf8(value))
        return rf_err_set(err, RF_ERR_INVALID, "metadata '%s' is not valid UTF-8", key);
    for (uint64_t i = 0; i < w->nmeta; i++) {
        if (strcmp(w->mkeys[i], key) == 0) {
            char *v = strdup(value);
            if (!v) return nomem(err);
            free(w->mvals[i]);
            w->mvals[i] = v;
            return RF_OK;
        }
    }
    char **k = realloc(w->mkeys, (w->nmeta + 1) * sizeof *k);
    if (!k) return nomem(err);
    w->mkeys = k;
    char **v = realloc(w->mvals, (w->nmeta + 1) * sizeof *v);
    if (!v) return nomem(err);
    w->mvals = v;
    w->mkeys[w->nmeta] = strdup(key);
    w->mvals[w->nmeta] = strdup(value);
    if (!w->mkeys[w->nmeta] || !w->mvals[w->nmeta]) {
        free(w->mkeys[w->nmeta]);
        free(w->mvals[w->nmeta]);
        return nomem(err);
    }
    w->nmeta++;
    return RF_OK;
}

rf_status rf_stw_declare(rf_stw *w, const char *name, rf_dtype dt, int ndim, const uint64_t *shape, rf_err *err)
{
    if (!w || !name) return rf_err_set(err, RF_ERR_INVALID, "rf_stw_declare: NULL argument");
    if (w->state != STW_DECLARING) return not_declaring(w, "declare", err);
    if (!*name || strcmp(name, "__metadata__") == 0 || !valid_utf8(name))
        return rf_err_set(err, RF_ERR_INVALID, "safetensors writer: invalid tensor name '%s'", name);
    if (dt <= RF_DT_INVALID || dt >= RF_DT_COUNT)
        return rf_err_set(err, RF_ERR_INVALID, "tensor '%s': invalid dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > RF_MAX_DIMS || (ndim > 0 && !shape))
        return rf_err_set(err, RF_ERR_INVALID, "tensor '%s': invalid number of dimensions %d", name, ndim);
    stw_tensor t = {.dt = dt, .ndim = ndim};
    uint64_t nelem = 1, total;
    for (int d = 0; d < ndim; d++) {
        t.shape[d] = shape[d];
        if (!rf_mul_u64(nelem, shape[d], &nelem))
            return rf_err_set(err, RF_ERR_INVALID, "tensor '%s': shape overflows", name);
    }
    if (!rf_mul_u64(nelem, rf_dtype_size(dt), &t.nbytes) || !rf_add_u64(w->total, t.nbytes, &total) ||
        total > (uint64_t)INT64_MAX)
        return rf_err_set(err, RF_ERR_INVALID, "tensor '%s': byte size overflows", name);
    if (rf_nametab_get(&w->tab, name, NULL))
        return rf_err_set(err, RF_ERR_INVALID, "tensor '%s' declared twice", name);
    if (w->n == w->cap) {
        uint64_t ncap = w->cap ? w->cap * 2 : 64;
        stw_tensor *nt = realloc(w->t, ncap * sizeof *nt);
        if (!nt) return nomem(err);
        w->t = nt;
        w->cap = ncap;
    }
    t.name = strdup(name);
    if (!t.name) return nomem(err);
    if (rf_nametab_put(&w->tab, t.name, w->n, NULL) < 0) {
        free(t.name);
        return nomem(err);
    }
    w->t[w->n++] = t;
    w->total = total;
    return RF_OK;
}

uint64_t rf_stw_total_bytes(const rf_stw *w) { return w ? w->total : 0; }

/* ------------------------------------------------------------------ layout */

/* Greedy in declaration order: a new shard when the current one is not empty and the next tensor
 * would push it past the limit. Zero-byte tensors never start a shard. */
static rf_status plan_shards(rf_stw *w, rf_err *err)
{
    uint64_t ns = 0, cur = 0;
    for (uint64_t i = 0; i < w->n; i++) {
        stw_tensor *t = &w->t[i];
        if (i == 0 || (w->max_shard && cur > 0 && t->nbytes > 0 && cur + t->nbytes > w->max_shard)) {
            ns++;
            cur = 0;
        }
        t->shard = ns - 1;
        t->begin = cur;
        cur += t->nbytes;
    }
    if (ns == 0) ns = 1; /* an empty checkpoint is still one file */
    w->shards = calloc(ns, sizeof *w->shards);
    if (!w->shards) return nomem(err);
    w->nshards = ns;
    for (uint64_t i = 0; i < w->n; i++) {
        stw_shard *s = &w->shards[w->t[i].shard];
        if (s->count++ == 0) s->first = i;
        s->data_bytes += w->t[i].nbytes;
    }
    for (uint64_t s = 0; s < ns; s++) {
        char name[64 + 4096];
        if (ns == 1) snprintf(name, sizeof name, "%s.safetensors", w->base);
        else snprintf(name, sizeof name, "%s-%05llu-of-%05llu.safetensors", w->base, (ull)s + 1, (ull)ns);
        w->shards[s].path = path_join(w->dir, "", name, "");
        w->shards[s].tmp = path_join(w->dir, ".", name, ".tmp");
        if (!w->shards[s].path || !w->shards[s].tmp) return nomem(err);
        w->shards[s].name = strrchr(w->shards[s].path, '/') + 1;
    }
    return RF_OK;
}

static json_t *u64_array(const uint64_t *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_integer((json_int_t)v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* Compact JSON with sorted keys, as MLX writes it; NULL when out of memory. */
static char *shard_header(const rf_stw *w, const stw_shard *s)
{
    json_t *root = json_object();
    int bad = !root;
    if (!bad && w->nmeta) {
        json_t *m = json_object();
        for (uint64_t i = 0; m && i < w->nmeta; i++)
            if (json_object_set_new(m, w->mkeys[i], json_string(w->mvals[i])) != 0) bad = 1;
        bad |= !m || json_object_set_new(root, "__metadata__", m) != 0;
    }
    for (uint64_t i = s->first; !bad && i < s->first + s->count; i++) {
        const stw_tensor *t = &w->t[i];
        uint64_t offs[2] = {t->begin, t->begin + t->nbytes};
        json_t *e = json_object();
        bad = !e || json_object_set_new(e, "dtype", json_string(rf_dtype_name(t->dt))) != 0 ||
              json_object_set_new(e, "shape", u64_array(t->shape, t->ndim)) != 0 ||
              json_object_set_new(e, "data_offsets", u64_array(offs, 2)) != 0 ||
              json_object_set_new(root, t->name, e) != 0;
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    return text;
}

/* ------------------------------------------------------------------ file output */

static rf_status write_all(int fd, const void *data, size_t n, const char *path, const char *tensor, rf_err *err)
{
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            if (tensor) return rf_err_errno(err, errno, "writing %s (tensor '%s')", path, tensor);
            return rf_err_errno(err, errno, "writing %s", path);
        }
        p += r;
        n -= (size_t)r;
    }
    return RF_OK;
}

static const char *cur_name(const rf_stw *w) { return w->cur < w->n ? w->t[w->cur].name : NULL; }

static rf_status flush_buf(rf_stw *w, rf_err *err)
{
    rf_status rc = write_all(w->fd, w->buf, w->buflen, w->shards[w->open_shard].path, cur_name(w), err);
    w->buflen = 0;
    return rc;
}

static rf_status put_bytes(rf_stw *w, const void *data, uint64_t n, rf_err *err)
{
    if (w->buflen + n > STW_BUF) {
        rf_status rc = flush_buf(w, err);
        if (rc != RF_OK) return rc;
        if (n >= STW_BUF) return write_all(w->fd, data, (size_t)n, w->shards[w->open_shard].path, cur_name(w), err);
    }
    memcpy(w->buf + w->buflen, data, (size_t)n);
    w->buflen += (size_t)n;
    return RF_OK;
}

static rf_status open_shard(rf_stw *w, uint64_t si, rf_err *err)
{
    stw_shard *s = &w->shards[si];
    char *text = shard_header(w, s);
    if (!text) return rf_err_set(err, RF_ERR_NOMEM, "%s: cannot build the header", s->path);
    size_t len = strlen(text);
    s->header_len = (len + 7) & ~(size_t)7; /* spaces pad the data section to 8-byte alignment */
    w->fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        free(text);
        return rf_err_errno(err, errno, "cannot create %s", s->tmp);
    }
    s->created = 1;
    w->open_shard = si;
    uint8_t lenb[8];
    for (int b = 0; b < 8; b++) lenb[b] = (uint8_t)(s->header_len >> (8 * b));
    static const char spaces[8] = "        ";
    rf_status rc = put_bytes(w, lenb, 8, err);
    if (rc == RF_OK) rc = put_bytes(w, text, len, err);
    if (rc == RF_OK) rc = put_bytes(w, spaces, s->header_len - len, err);
    free(text);
    return rc;
}

static rf_status close_shard(rf_stw *w, rf_err *err)
{
    stw_shard *s = &w->shards[w->open_shard];
    rf_status rc = flush_buf(w, err);
    struct stat sb;
    uint64_t want = 8 + s->header_len + s->data_bytes;
    if (rc == RF_OK && fsync(w->fd) != 0) rc = rf_err_errno(err, errno, "fsync %s", s->path);
    if (rc == RF_OK && fstat(w->fd, &sb) != 0) rc = rf_err_errno(err, errno, "stat %s", s->path);
    if (rc == RF_OK && (uint64_t)sb.st_size != want)
        rc = rf_err_set(err, RF_ERR_IO, "%s: wrote %llu bytes, expected %llu", s->path, (ull)sb.st_size, (ull)want);
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0 && rc == RF_OK) rc = rf_err_errno(err, errno, "closing %s", s->path);
    return rc;
}

/* Make SI the open shard, completing the ones before it. */
static rf_status reach_shard(rf_stw *w, uint64_t si, rf_err *err)
{
    if (w->fd >= 0 && w->open_shard == si) return RF_OK;
    while (w->fd < 0 || w->open_shard < si) {
        uint64_t next = w->fd < 0 ? 0 : w->open_shard + 1;
        if (w->fd >= 0) {
            rf_status rc = close_shard(w, err);
            if (rc != RF_OK) return rc;
        }
        rf_status rc = open_shard(w, next, err);
        if (rc != RF_OK) return rc;
    }
    return RF_OK;
}

/* Drop every file this writer made that is not a finished output. */
static void stw_abort(rf_stw *w)
{
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    for (uint64_t s = 0; s < w->nshards; s++) {
        if (w->shards[s].renamed) unlink(w->shards[s].path);
        else if (w->shards[s].created) unlink(w->shards[s].tmp);
        w->shards[s].created = w->shards[s].renamed = 0;
    }
    if (w->index_tmp) unlink(w->index_tmp);
    w->state = STW_FAILED;
}

static rf_status fail(rf_stw *w, rf_status rc)
{
    stw_abort(w);
    return rc;
}

static rf_status start(rf_stw *w, rf_err *err)
{
    w->buf = malloc(STW_BUF);
    if (!w->buf) return nomem(err);
    rf_status rc = plan_shards(w, err);
    if (rc != RF_OK) return rc;
    w->state = STW_WRITING;
    return RF_OK;
}

static rf_status check_writable(rf_stw *w, const char *what, rf_err *err)
{
    if (w->state == STW_FAILED)
        return rf_err_set(err, RF_ERR_INVALID, "%s/%s.safetensors: %s after an earlier error", w->dir, w->base, what);
    if (w->state == STW_FINISHED)
        return rf_err_set(err, RF_ERR_INVALID, "%s/%s.safetensors: %s after finish", w->dir, w->base, what);
    return w->state == STW_DECLARING ? start(w, err) : RF_OK;
}

/* Skip completed and zero-byte tensors, creating the shards they live in. */
static rf_status advance(rf_stw *w, rf_err *err)
{
    while (w->cur < w->n && w->cur_done == w->t[w->cur].nbytes) {
        rf_status rc = reach_shard(w, w->t[w->cur].shard, err);
        if (rc != RF_OK) return rc;
        w->cur++;
        w->cur_done = 0;
    }
    return RF_OK;
}

rf_status rf_stw_write(rf_stw *w, const void *data, uint64_t nbytes, rf_err *err)
{
    if (!w || (!data && nbytes)) return rf_err_set(err, RF_ERR_INVALID, "rf_stw_write: NULL argument");
    rf_status rc = check_writable(w, "write", err);
    if (rc != RF_OK || nbytes == 0) return rc;
    if ((rc = advance(w, err)) != RF_OK) return fail(w, rc);
    if (w->cur == w->n)
        return fail(w, rf_err_set(err, RF_ERR_INVALID, "%s: write of %llu bytes after the last declared tensor%s%s",
                                  w->shards[w->nshards - 1].path, (ull)nbytes, w->n ? " " : "",
                                  w->n ? w->t[w->n - 1].name : ""));
    stw_tensor *t = &w->t[w->cur];
    if (nbytes > t->nbytes - w->cur_done)
        return fail(w, rf_err_set(err, RF_ERR_INVALID,
                                  "%s: tensor '%s': write of %llu bytes exceeds its declared size (%llu of %llu "
                                  "bytes already written)",
                                  w->shards[t->shard].path, t->name, (ull)nbytes, (ull)w->cur_done, (ull)t->nbytes));
    if ((rc = reach_shard(w, t->shard, err)) != RF_OK) return fail(w, rc);
    if ((rc = put_bytes(w, data, nbytes, err)) != RF_OK) return fail(w, rc);
    w->cur_done += nbytes;
    return RF_OK;
}

static rf_status write_index(rf_stw *w, rf_err *err)
{
    char name[4096 + 32];
    snprintf(name, sizeof name, "%s.safetensors.index.json", w->base);
    w->index_path = path_join(w->dir, "", name, "");
    w->index_tmp = path_join(w->dir, ".", name, ".tmp");
    if (!w->index_path || !w->index_tmp) return nomem(err);
    if (w->nshards == 1 && !w->always_index) {
        /* a stale index from an earlier sharded write would shadow the new single file */
        if (unlink(w->index_path) != 0 && errno != ENOENT) return rf_err_errno(err, errno, "removing %s", w->index_path);
        free(w->index_tmp);
        w->index_tmp = NULL;
        return RF_OK;
    }
    json_t *root = json_object(), *meta = json_object(), *wmap = json_object();
    int bad = !root || !meta || !wmap;
    bad |= !bad && json_object_set_new(meta, "total_size", json_integer((json_int_t)w->total)) != 0;
    for (uint64_t i = 0; !bad && i < w->n; i++)
        bad = json_object_set_new(wmap, w->t[i].name, json_string(w->shards[w->t[i].shard].name)) != 0;
    char *text = NULL;
    if (!bad) {
        json_object_set_new(root, "metadata", meta);
        json_object_set_new(root, "weight_map", wmap);
        meta = wmap = NULL;
        text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    }
    json_decref(root);
    json_decref(meta);
    json_decref(wmap);
    if (!text) return nomem(err);
    rf_status rc = RF_OK;
    int fd = open(w->index_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) rc = rf_err_errno(err, errno, "cannot create %s", w->index_tmp);
    if (rc == RF_OK) rc = write_all(fd, text, strlen(text), w->index_path, NULL, err);
    if (rc == RF_OK) rc = write_all(fd, "\n", 1, w->index_path, NULL, err);
    if (rc == RF_OK && fsync(fd) != 0) rc = rf_err_errno(err, errno, "fsync %s", w->index_path);
    if (fd >= 0 && close(fd) != 0 && rc == RF_OK) rc = rf_err_errno(err, errno, "closing %s", w->index_path);
    free(text);
    return rc;
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd); /* best effort: some file systems refuse fsync on directories */
    close(fd);
}

rf_status rf_stw_finish(rf_stw *w, rf_err *err)
{
    if (!w) return rf_err_set(err, RF_ERR_INVALID, "rf_stw_finish: NULL argument");
    rf_status rc = check_writable(w, "finish", err);
    if (rc != RF_OK) return rc;
    if ((rc = advance(w, err)) != RF_OK) return fail(w, rc);
    if (w->cur < w->n) {
        const stw_tensor *t = &w->t[w->cur];
        return fail(w, rf_err_set(err, RF_ERR_INVALID, "%s: tensor '%s': only %llu of %llu bytes written",
                                  w->shards[t->shard].path, t->name, (ull)w->cur_done, (ull)t->nbytes));
    }
    if ((rc = reach_shard(w, w->nshards - 1, err)) != RF_OK) return fail(w, rc);
    if ((rc = close_shard(w, err)) != RF_OK) return fail(w, rc);
    if ((rc = write_index(w, err)) != RF_OK) return fail(w, rc);
    for (uint64_t s = 0; s < w->nshards; s++) {
        if (rename(w->shards[s].tmp, w->shards[s].path) != 0)
            return fail(w, rf_err_errno(err, errno, "renaming %s", w->shards[s].path));
        w->shards[s].renamed = 1;
    }
    if (w->index_tmp) {
        if (rename(w->index_tmp, w->index_path) != 0)
            return fail(w, rf_err_errno(err, errno, "renaming %s", w->index_path));
        free(w->index_tmp);
        w->index_tmp = NULL;
    }
    sync_dir(w->dir);
    w->state = STW_FINISHED;
    return RF_OK;
}

void rf_stw_free(rf_stw *w)
{
    if (!w) return;
    if (w->state != STW_FINISHED) stw_abort(w);
    for (uint64_t i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    rf_nametab_free(&w->tab);
    for (uint64_t i = 0; i < w->nmeta; i++) {
        free(w->mkeys[i]);
        free(w->mvals[i]);
    }
    free(w->mkeys);
    free(w->mvals);
    for (uint64_t s = 0; s < w->nshards; s++) {
        free(w->shards[s].path);
        free(w->shards[s].tmp);
    }
    free(w->shards);
    free(w->buf);
    free(w->index_tmp);
    free(w->index_path);
    free(w->dir);
    free(w->base);
    free(w);
}
