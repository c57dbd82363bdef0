/* Tokenizer BPE model: vocabulary and merge-rank hashes, HF's heap-ordered merging (lowest rank
 * first, leftmost on ties), byte fallback, unknown-token fusing, and a word cache. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS (1u << 17)
#define CACHE_MAX_ENTRIES (1u << 16)
#define CACHE_MAX_KEY 128

typedef struct cache_ent {
    uint64_t h;
    uint32_t koff, klen; /* klen == 0: empty slot (empty words are never cached) */
    uint32_t ioff, nids;
} cache_ent;

struct tk_bpe {
    int32_t size;
    uint32_t *off, *len;  /* token text of each id in arena; len UINT32_MAX for unused ids */
    tk_buf arena;
    int32_t *vslots;      /* open addressing, -1 empty */
    uint32_t vmask;
    uint64_t *mkey;       /* (left id << 32 | right id), UINT64_MAX empty */
    uint32_t *mrank;
    int32_t *mnew;
    uint32_t mmask;
    int32_t unk_id;       /* -1: none; -2: named but not in the vocabulary */
    char *unk_name;
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_id[256];
    int split_ws;         /* words may be cut before each U+2581 without changing the result */
    /* cache: pre-token -> ids; guarded by mu, skipped when another thread holds it */
    pthread_mutex_t mu;
    cache_ent *cslots;
    uint32_t ccount;
    tk_buf ckeys;
    int32_t *cids;
    size_t cn, ccap;
};

typedef struct heap_ent {
    uint32_t rank, pos;
    int32_t new_id;
} heap_ent;

struct tk_bpe_work {
    int32_t *sid, *prev, *next;
    uint32_t *slen;
    size_t scap;
    heap_ent *heap;
    size_t hn, hcap;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t x;
        memcpy(&x, s, 8);
        h = (h ^ x) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t x = 0;
    memcpy(&x, s, n);
    h = (h ^ x) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 32);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    return x ^ (x >> 33);
}

static uint32_t table_size(size_t n)
{
    uint32_t cap = 16;
    while (cap < n * 2 + 1) cap *= 2;
    return cap;
}

int32_t tk_bpe_lookup(const tk_bpe *b, const char *s, size_t len)
{
    uint32_t i = (uint32_t)hash_bytes(s, len) & b->vmask;
    for (;; i = (i + 1) & b->vmask) {
        int32_t id = b->vslots[i];
        if (id < 0) return -1;
        if (b->len[id] == len && !memcmp(b->arena.p + b->off[id], s, len)) return id;
    }
}

int32_t tk_bpe_size(const tk_bpe *b) { return b->size; }

const char *tk_bpe_piece(const tk_bpe *b, int32_t id, size_t *len)
{
    if (id < 0 || id >= b->size || b->len[id] == UINT32_MAX) return NULL;
    if (len) *len = b->len[id];
    return b->arena.p + b->off[id];
}

static int merge_get(const tk_bpe *b, int32_t l, int32_t r, uint32_t *rank, int32_t *new_id)
{
    if (!b->mkey) return 0;
    uint64_t k = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    for (uint32_t i = (uint32_t)hash_u64(k) & b->mmask;; i = (i + 1) & b->mmask) {
        if (b->mkey[i] == UINT64_MAX) return 0;
        if (b->mkey[i] == k) {
            *rank = b->mrank[i];
            *new_id = b->mnew[i];
            return 1;
        }
    }
}

/* ------------------------------------------------------------------ loading */

void tk_bpe_free(tk_bpe *b)
{
    if (!b) return;
    free(b->off);
    free(b->len);
    tk_buf_free(&b->arena);
    free(b->vslots);
    free(b->mkey);
    free(b->mrank);
    free(b->mnew);
    free(b->unk_name);
    pthread_mutex_destroy(&b->mu);
    free(b->cslots);
    tk_buf_free(&b->ckeys);
    free(b->cids);
    free(b);
}

static rf_status load_vocab(tk_bpe *b, json_t *vocab, rf_err *err)
{
    if (!json_is_object(vocab)) return rf_err_set(err, RF_ERR_FORMAT, "BPE model without a \"vocab\" object");
    size_t n = json_object_size(vocab);
    int64_t maxid = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 30))
            return rf_err_set(err, RF_ERR_FORMAT, "vocab entry \"%.60s\" has no valid id", key);
        if (json_integer_value(v) > maxid) maxid = json_integer_value(v);
    }
    b->size = (int32_t)(maxid + 1);
    b->off = malloc(((size_t)b->size + 1) * sizeof *b->off);
    b->len = malloc(((size_t)b->size + 1) * sizeof *b->len);
    b->vmask = table_size(n) - 1;
    b->vslots = malloc(((size_t)b->vmask + 1) * sizeof *b->vslots);
    if (!b->off || !b->len || !b->vslots) return rf_err_set(err, RF_ERR_NOMEM, "out of memory loading the vocabulary");
    memset(b->vslots, 0xFF, ((size_t)b->vmask + 1) * sizeof *b->vslots);
    for (int32_t i = 0; i < b->size; i++) b->len[i] = UINT32_MAX;
    json_object_foreach(vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        size_t kl = strlen(key);
        if (b->len[id] != UINT32_MAX) return rf_err_set(err, RF_ERR_FORMAT, "vocab id %d used twice", (int)id);
        b->off[id] = (uint32_t)b->arena.n;
        b->len[id] = (uint32_t)kl;
        if (!tk_buf_put(&b->arena, key, kl + 1) || b->arena.n > UINT32_MAX)
            return rf_err_set(err, RF_ERR_NOMEM, "out of memory loading the vocabulary");
        uint32_t i = (uint32_t)hash_bytes(key, kl) & b->vmask;
        while (b->vslots[i] >= 0) i = (i + 1) & b->vmask;
        b->vslots[i] = id;
    }
    return RF_OK;
}

/* A merge is "a b" (split at the first space) or ["a", "b"]. */
static rf_status merge_parts(json_t *m, size_t idx, const char **a, size_t *al, const char **c, size_t *cl, rf_err *err)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        const char *sp = strchr(s, ' ');
        if (!sp) return rf_err_set(err, RF_ERR_FORMAT, "merge %zu (\"%.60s\") is not \"a b\"", idx, s);
        *a = s;
        *al = (size_t)(sp - s);
        *c = sp + 1;
        *cl = strlen(sp + 1);
        return RF_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *al = json_string_length(json_array_get(m, 0));
        *c = json_string_value(json_array_get(m, 1));
        *cl = json_string_length(json_array_get(m, 1));
        return RF_OK;
    }
    return rf_err_set(err, RF_ERR_FORMAT, "merge %zu is neither \"a b\" nor [\"a\", \"b\"]", idx);
}

static rf_status load_merges(tk_bpe *b, json_t *merges, rf_err *err)
{
    if (!merges || json_is_null(merges)) return RF_OK;
    if (!json_is_array(merges)) return rf_err_set(err, RF_ERR_FORMAT, "BPE \"merges\" is not an array");
    size_t n = json_array_size(merges);
    if (n >= UINT32_MAX / 4) return rf_err_set(err, RF_ERR_FORMAT, "too many merges");
    b->mmask = table_size(n) - 1;
    size_t cap = (size_t)b->mmask + 1;
    b->mkey = malloc(cap * sizeof *b->mkey);
    b->mrank = malloc(cap * sizeof *b->mrank);
    b->mnew = malloc(cap * sizeof *b->mnew);
    if (!b->mkey || !b->mrank || !b->mnew) return rf_err_set(err, RF_ERR_NOMEM, "out of memory loading merges");
    memset(b->mkey, 0xFF, cap * sizeof *b->mkey);
    tk_buf cat = {0};
    rf_status st = RF_OK;
    for (size_t r = 0; !st && r < n; r++) {
        const char *a = NULL, *c = NULL;
        size_t al = 0, cl = 0;
        st = merge_parts(json_array_get(merges, r), r, &a, &al, &c, &cl, err);
        if (st) break;
        int32_t ia = tk_bpe_lookup(b, a, al), ic = tk_bpe_lookup(b, c, cl);
        cat.n = 0;
        if (!tk_buf_put(&cat, a, al) || !tk_buf_put(&cat, c, cl)) {
            st = rf_err_set(err, RF_ERR_NOMEM, "out of memory loading merges");
            break;
        }
        int32_t in = tk_bpe_lookup(b, cat.p, cat.n);
        if (ia < 0 || ic < 0 || in < 0) {
            st = rf_err_set(err, RF_ERR_FORMAT, "merge %zu (\"%.*s\" + \"%.*s\") uses a token not in the vocabulary", r,
                            (int)(al > 60 ? 60 : al), a, (int)(cl > 60 ? 60 : cl), c);
            break;
        }
        /* HF builds a map from the list, so a repeated pair keeps its last rank */
        uint64_t k = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ic;
        uint32_t i = (uint32_t)hash_u64(k) & b->mmask;
        while (b->mkey[i] != UINT64_MAX && b->mkey[i] != k) i = (i + 1) & b->mmask;
        b->mkey[i] = k;
        b->mrank[i] = (uint32_t)r;
        b->mnew[i] = in;
    }
    tk_buf_free(&cat);
    return st;
}

/* Cutting a word before U+2581 is exact when that character is its own symbol and no merge
 * takes it as the first character of its right part: nothing then merges across the cut. */
static int words_split_safely(const tk_bpe *b)
{
    static const char ws[] = "\xE2\x96\x81";
    if (b->ignore_merges || tk_bpe_lookup(b, ws, 3) < 0) return 0;
    if (!b->mkey) return 1;
    for (uint32_t i = 0; i <= b->mmask; i++) {
        if (b->mkey[i] == UINT64_MAX) continue;
        int32_t r = (int32_t)(uint32_t)b->mkey[i];
        if (b->len[r] >= 3 && !memcmp(b->arena.p + b->off[r], ws, 3)) return 0;
    }
    return 1;
}

static rf_status check_options(json_t *model, rf_err *err)
{
    json_t *drop = json_object_get(model, "dropout");
    if (drop && !json_is_null(drop) && !(json_is_number(drop) && json_number_value(drop) == 0.0))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "BPE dropout is not supported");
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(model, keys[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "BPE %s is not supported", keys[i]);
    }
    return RF_OK;
}

rf_status tk_bpe_parse(json_t *model, tk_bpe **out, rf_err *err)
{
    *out = NULL;
    if (!json_is_object(model)) return rf_err_set(err, RF_ERR_FORMAT, "tokenizer.json has no \"model\" object");
    const char *type = tk_json_str(model, "type");
    if (type && strcmp(type, "BPE")) return rf_err_set(err, RF_ERR_UNSUPPORTED, "unsupported tokenizer model type \"%s\"", type);
    if (!type && !json_object_get(model, "merges"))
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tokenizer model without a type is not BPE");
    rf_status st = check_options(model, err);
    if (st) return st;
    tk_bpe *b = calloc(1, sizeof *b);
    if (!b) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&b->mu, NULL);
    b->fuse_unk = tk_json_bool(model, "fuse_unk", 0);
    b->byte_fallback = tk_json_bool(model, "byte_fallback", 0);
    b->ignore_merges = tk_json_bool(model, "ignore_merges", 0);
    if (b->fuse_unk < 0 || b->byte_fallback < 0 || b->ignore_merges < 0)
        st = rf_err_set(err, RF_ERR_FORMAT, "BPE fuse_unk/byte_fallback/ignore_merges must be booleans");
    if (!st) st = load_vocab(b, json_object_get(model, "vocab"), err);
    if (!st) st = load_merges(b, json_object_get(model, "merges"), err);
    if (!st) {
        const char *unk = tk_json_str(model, "unk_token");
        b->unk_id = -1;
        if (unk) {
            b->unk_name = strdup(unk);
            if (!b->unk_name) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            int32_t id = tk_bpe_lookup(b, unk, strlen(unk));
            b->unk_id = id >= 0 ? id : -2;
        }
        for (int c = 0; c < 256; c++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", c);
            b->byte_id[c] = tk_bpe_lookup(b, name, 6);
        }
        b->split_ws = words_split_safely(b);
    }
    if (!st && !(b->cslots = calloc(CACHE_SLOTS, sizeof *b->cslots))) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    if (st) {
        tk_bpe_free(b);
        return st;
    }
    *out = b;
    return RF_OK;
}

/* ------------------------------------------------------------------ encoding */

tk_bpe_work *tk_bpe_work_new(void) { return calloc(1, sizeof(tk_bpe_work)); }

void tk_bpe_work_free(tk_bpe_work *w)
{
    if (!w) return;
    free(w->sid);
    free(w->prev);
    free(w->next);
    free(w->slen);
    free(w->heap);
    free(w);
}

static int work_reserve(tk_bpe_work *w, size_t n)
{
    if (n <= w->scap) return 1;
    size_t cap = w->scap ? w->scap : 64;
    while (cap < n) cap *= 2;
    int32_t *a = realloc(w->sid, cap * sizeof *a);
    if (a) w->sid = a;
    int32_t *p = realloc(w->prev, cap * sizeof *p);
    if (p) w->prev = p;
    int32_t *x = realloc(w->next, cap * sizeof *x);
    if (x) w->next = x;
    uint32_t *l = realloc(w->slen, cap * sizeof *l);
    if (l) w->slen = l;
    if (!a || !p || !x || !l) return 0;
    w->scap = cap;
    return 1;
}

static int heap_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(tk_bpe_work *w, heap_ent e)
{
    if (w->hn == w->hcap) {
        size_t cap = w->hcap ? w->hcap * 2 : 64;
        heap_ent *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return 0;
        w->heap = h;
        w->hcap = cap;
    }
    size_t i = w->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = e;
    return 1;
}

static heap_ent heap_pop(tk_bpe_work *w)
{
    heap_ent top = w->heap[0], last = w->heap[--w->hn];
    size_t i = 0, n = w->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!heap_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static int push_pair(const tk_bpe *b, tk_bpe_work *w, int32_t pos)
{
    int32_t nx = w->next[pos];
    uint32_t rank;
    int32_t nid;
    if (nx < 0 || !merge_get(b, w->sid[pos], w->sid[nx], &rank, &nid)) return 1;
    return heap_push(w, (heap_ent){rank, (uint32_t)pos, nid});
}

/* HF Word::merge_all: pop the lowest (rank, position); skip entries that went stale. */
static int merge_all(const tk_bpe *b, tk_bpe_work *w, size_t n)
{
    w->hn = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (!push_pair(b, w, (int32_t)i)) return 0;
    while (w->hn) {
        heap_ent t = heap_pop(w);
        int32_t pos = (int32_t)t.pos;
        if (w->slen[pos] == 0 || w->next[pos] < 0) continue;
        int32_t nx = w->next[pos];
        uint32_t rank;
        int32_t nid;
        if (!merge_get(b, w->sid[pos], w->sid[nx], &rank, &nid) || nid != t.new_id) continue;
        w->sid[pos] = nid;
        w->slen[pos] += w->slen[nx];
        w->slen[nx] = 0;
        w->next[pos] = w->next[nx];
        if (w->next[nx] >= 0) w->prev[w->next[nx]] = pos;
        if (w->prev[pos] >= 0 && !push_pair(b, w, w->prev[pos])) return 0;
        if (!push_pair(b, w, pos)) return 0;
    }
    return 1;
}

static int add_symbol(tk_bpe_work *w, size_t *n, int32_t id, uint32_t len)
{
    if (!work_reserve(w, *n + 1)) return 0;
    size_t i = (*n)++;
    w->sid[i] = id;
    w->slen[i] = len;
    w->prev[i] = (int32_t)i - 1;
    w->next[i] = -1;
    if (i) w->next[i - 1] = (int32_t)i;
    return 1;
}

/* HF BPE::merge_word's initial symbols: known characters, else their <0xXX> byte tokens, else
 * <unk> (consecutive ones fused when fuse_unk); without an unk token the character is dropped. */
static rf_status initial_symbols(const tk_bpe *b, tk_bpe_work *w, const char *s, size_t len, size_t *nsym, rf_err *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = 0;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < len;) {
        int cl = tk_utf8_len(u + i, len - i);
        if (!cl) cl = 1; /* cannot happen: input is validated */
        int32_t id = tk_bpe_lookup(b, s + i, (size_t)cl);
        if (id >= 0) {
            if (unk_len && !add_symbol(w, &n, b->unk_id, unk_len)) goto nomem;
            unk_len = 0;
            if (!add_symbol(w, &n, id, (uint32_t)cl)) goto nomem;
        } else {
            int bytes_ok = b->byte_fallback;
            for (int k = 0; bytes_ok && k < cl; k++) bytes_ok = b->byte_id[u[i + k]] >= 0;
            if (bytes_ok) {
                for (int k = 0; k < cl; k++)
                    if (!add_symbol(w, &n, b->byte_id[u[i + k]], 1)) goto nomem;
            } else if (b->unk_name) {
                if (b->unk_id < 0)
                    return rf_err_set(err, RF_ERR_FORMAT, "unk_token \"%.60s\" is not in the vocabulary", b->unk_name);
                if (unk_len && !b->fuse_unk) {
                    if (!add_symbol(w, &n, b->unk_id, unk_len)) goto nomem;
                    unk_len = 0;
                }
                unk_len += (uint32_t)cl;
            }
        }
        i += (size_t)cl;
    }
    if (unk_len && !add_symbol(w, &n, b->unk_id, unk_len)) goto nomem;
    *nsym = n;
    return RF_OK;
nomem:
    return rf_err_set(err, RF_ERR_NOMEM, "out of memory encoding a word");
}

static int ids_push(int32_t **ids, uint64_t *n, uint64_t *cap, const int32_t *src, size_t k)
{
    if (!k) return 1;
    if (*n + k > *cap) {
        uint64_t c = *cap ? *cap : 256;
        while (c < *n + k) c *= 2;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p) return 0;
        *ids = p;
        *cap = c;
    }
    memcpy(*ids + *n, src, k * sizeof *src);
    *n += k;
    return 1;
}

static int cache_get(tk_bpe *b, uint64_t h, const char *s, size_t len, int32_t **ids, uint64_t *n, uint64_t *cap, int *hit)
{
    *hit = 0;
    for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_ent *e = &b->cslots[i];
        if (!e->klen) return 1;
        if (e->h == h && e->klen == len && !memcmp(b->ckeys.p + e->koff, s, len)) {
            *hit = 1;
            return e->nids ? ids_push(ids, n, cap, b->cids + e->ioff, e->nids) : 1;
        }
    }
}

static void cache_put(tk_bpe *b, uint64_t h, const char *s, size_t len, const int32_t *ids, size_t k)
{
    if (b->ccount >= CACHE_MAX_ENTRIES || b->ckeys.n + len > UINT32_MAX || b->cn + k > UINT32_MAX) return;
    if (b->cn + k > b->ccap) {
        size_t c = b->ccap ? b->ccap : 4096;
        while (c < b->cn + k) c *= 2;
        int32_t *p = realloc(b->cids, c * sizeof *p);
        if (!p) return;
        b->cids = p;
        b->ccap = c;
    }
    uint32_t koff = (uint32_t)b->ckeys.n;
    if (!tk_buf_put(&b->ckeys, s, len)) return;
    uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);
    while (b->cslots[i].klen) i = (i + 1) & (CACHE_SLOTS - 1);
    if (k) memcpy(b->cids + b->cn, ids, k * sizeof *ids);
    b->cslots[i] = (cache_ent){h, koff, (uint32_t)len, (uint32_t)b->cn, (uint32_t)k};
    b->cn += k;
    b->ccount++;
}

static rf_status encode_word(tk_bpe *b, tk_bpe_work *w, const char *s, size_t len, int32_t **ids, uint64_t *n,
                             uint64_t *cap, rf_err *err)
{
    int cacheable = len <= CACHE_MAX_KEY && len > 0;
    uint64_t h = 0;
    int locked = 0;
    if (cacheable) {
        h = hash_bytes(s, len);
        locked = pthread_mutex_trylock(&b->mu) == 0;
        if (locked) {
            int hit;
            int ok = cache_get(b, h, s, len, ids, n, cap, &hit);
            if (!ok || hit) {
                pthread_mutex_unlock(&b->mu);
                return ok ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            }
        }
    }
    size_t nsym = 0;
    rf_status st = initial_symbols(b, w, s, len, &nsym, err);
    if (!st && !merge_all(b, w, nsym)) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory merging");
    uint64_t first = *n;
    for (size_t i = 0; !st && i < nsym; i++)
        if (w->slen[i] && !ids_push(ids, n, cap, &w->sid[i], 1)) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    if (locked) {
        if (!st) cache_put(b, h, s, len, *n > first ? *ids + first : NULL, (size_t)(*n - first));
        pthread_mutex_unlock(&b->mu);
    }
    return st;
}

rf_status tk_bpe_encode(tk_bpe *b, tk_bpe_work *w, const char *s, size_t len, int32_t **ids, uint64_t *n, uint64_t *cap,
                        rf_err *err)
{
    if (b->ignore_merges) {
        int32_t id = tk_bpe_lookup(b, s, len);
        if (id >= 0) return ids_push(ids, n, cap, &id, 1) ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    if (!b->split_ws) return encode_word(b, w, s, len, ids, n, cap, err);
    size_t start = 0;
    for (size_t i = 1; i + 3 <= len; i++) {
        if ((unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81) {
            rf_status st = encode_word(b, w, s + start, i - start, ids, n, cap, err);
            if (st) return st;
            start = i;
            i += 2;
        }
    }
    return encode_word(b, w, s + start, len - start, ids, n, cap, err);
}
