/* Tokenizer: loads a Hugging Face tokenizer.json (+ tokenizer_config.json) and runs HF's
 * pipeline: added tokens cut out of the raw text, normalizer, added tokens matched on the
 * normalized text, pre-tokenizer, BPE model, template post-processor; decoding runs the decoder
 * chain. Input text must be valid UTF-8 (HF only accepts Rust strings): anything else is
 * RF_ERR_INVALID, never a guess. */
#include "tokenizer/tokenizer_internal.h"
#include "io/json_internal.h"
#include "tokenizer/tok_gguf.h"

#include <sys/stat.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct tk_added {
    char *content;   /* as written */
    size_t len;
    char *pattern;   /* what is matched: content, normalized for normalized tokens */
    size_t plen;
    int32_t id;
    int lstrip, rstrip, single_word, normalized, special;
} tk_added;

/* Leftmost-longest matcher over a few patterns: candidates grouped by first byte, longest first. */
typedef struct tk_matcher {
    uint32_t *idx;       /* added-token indices */
    uint32_t first[257]; /* idx range of each first byte */
} tk_matcher;

struct rf_tok {
    tk_bpe *bpe;
    tk_norm *norm;
    tk_pre *pre;
    tk_dec *dec;
    tk_added *added;
    size_t nadded;
    tk_matcher raw, normd;
    int32_t *added_of_id; /* index into added by id, -1 if none */
    int32_t *prefix, *suffix;
    size_t nprefix, nsuffix;
    int32_t vocab_size, bos, eos;
};

/* ------------------------------------------------------------------ loading */

static void matcher_free(tk_matcher *m) { free(m->idx); }

void rf_tok_free(rf_tok *t)
{
    if (!t) return;
    tk_bpe_free(t->bpe);
    tk_norm_free(t->norm);
    tk_pre_free(t->pre);
    tk_dec_free(t->dec);
    for (size_t i = 0; i < t->nadded; i++) {
        if (t->added[i].pattern != t->added[i].content) free(t->added[i].pattern);
        free(t->added[i].content);
    }
    free(t->added);
    matcher_free(&t->raw);
    matcher_free(&t->normd);
    free(t->added_of_id);
    free(t->prefix);
    free(t->suffix);
    free(t);
}

typedef struct sort_key {
    unsigned char first;
    size_t plen;
    uint32_t idx;
} sort_key;

static int cmp_key(const void *a, const void *b)
{
    const sort_key *x = a, *y = b;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    if (x->plen != y->plen) return x->plen > y->plen ? -1 : 1; /* longest first */
    return x->idx < y->idx ? -1 : 1;
}

static rf_status matcher_build(tk_matcher *m, const tk_added *added, size_t n, int normalized, rf_err *err)
{
    size_t k = 0;
    sort_key *keys = malloc((n + 1) * sizeof *keys);
    if (!keys || !(m->idx = malloc((n + 1) * sizeof *m->idx))) {
        free(keys);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        if (added[i].normalized == normalized && added[i].plen)
            keys[k++] = (sort_key){(unsigned char)added[i].pattern[0], added[i].plen, (uint32_t)i};
    qsort(keys, k, sizeof *keys, cmp_key);
    size_t j = 0;
    for (int c = 0; c < 256; c++) {
        m->first[c] = (uint32_t)j;
        while (j < k && keys[j].first == c) m->idx[j] = keys[j].idx, j++;
    }
    m->first[256] = (uint32_t)k;
    free(keys);
    return RF_OK;
}

static rf_status parse_added(rf_tok *t, json_t *arr, rf_err *err)
{
    if (!arr || json_is_null(arr)) return RF_OK;
    if (!json_is_array(arr)) return rf_err_set(err, RF_ERR_FORMAT, "\"added_tokens\" is not an array");
    size_t n = json_array_size(arr);
    if (!(t->added = calloc(n + 1, sizeof *t->added))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(arr, i), *id = json_object_get(a, "id"), *c = json_object_get(a, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 30) || !json_is_string(c))
            return rf_err_set(err, RF_ERR_FORMAT, "added token %zu needs an integer \"id\" and a \"content\" string", i);
        tk_added *x = &t->added[t->nadded];
        x->len = json_string_length(c);
        if (!(x->content = malloc(x->len + 1))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        memcpy(x->content, json_string_value(c), x->len + 1);
        x->pattern = x->content;
        x->plen = x->len;
        x->id = (int32_t)json_integer_value(id);
        t->nadded++;
        x->lstrip = tk_json_bool(a, "lstrip", 0);
        x->rstrip = tk_json_bool(a, "rstrip", 0);
        x->single_word = tk_json_bool(a, "single_word", 0);
        x->normalized = tk_json_bool(a, "normalized", 1);
        x->special = tk_json_bool(a, "special", 0);
        if (x->lstrip < 0 || x->rstrip < 0 || x->single_word < 0 || x->normalized < 0 || x->special < 0)
            return rf_err_set(err, RF_ERR_FORMAT, "added token \"%.60s\": flags must be booleans", x->content);
    }
    return RF_OK;
}

/* Normalized added tokens are matched in normalized text, so their pattern is normalized too. */
static rf_status normalize_patterns(rf_tok *t, rf_err *err)
{
    if (!t->norm) return RF_OK;
    tk_match m = {0};
    tk_buf b = {0};
    rf_status st = RF_OK;
    for (size_t i = 0; !st && i < t->nadded; i++) {
        tk_added *x = &t->added[i];
        if (!x->normalized) continue;
        st = tk_norm_apply(t->norm, &m, x->content, x->len, &b, err);
        if (st) break;
        if (!(x->pattern = malloc(b.n + 1))) {
            x->pattern = x->content;
            st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(x->pattern, b.p, b.n);
        x->pattern[b.n] = 0;
        x->plen = b.n;
    }
    tk_buf_free(&b);
    tk_match_free(&m);
    return st;
}

static int32_t token_id(const rf_tok *t, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, s, n)) return t->added[i].id;
    return tk_bpe_lookup(t->bpe, s, n);
}

static int ids_append(int32_t **v, size_t *n, const int32_t *src, size_t k)
{
    int32_t *p = realloc(*v, (*n + k + 1) * sizeof *p);
    if (!p) return 0;
    memcpy(p + *n, src, k * sizeof *src);
    *v = p;
    *n += k;
    return 1;
}

/* A post-processor contributes ids before and after the sequence. */
typedef struct tk_wrap {
    int32_t *pre, *post;
    size_t npre, npost;
} tk_wrap;

static rf_status template_single(json_t *pp, tk_wrap *w, rf_err *err)
{
    json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens");
    if (!json_is_array(single)) return rf_err_set(err, RF_ERR_FORMAT, "TemplateProcessing without a \"single\" template");
    int seen_a = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *it = json_array_get(single, i);
        json_t *sp = json_object_get(it, "SpecialToken"), *sq = json_object_get(it, "Sequence");
        if (sq) {
            const char *id = tk_json_str(sq, "id");
            if (!id || strcmp(id, "A") || seen_a)
                return rf_err_set(err, RF_ERR_UNSUPPORTED, "TemplateProcessing: the single template must hold sequence A once");
            seen_a = 1;
            continue;
        }
        const char *name = tk_json_str(sp, "id");
        if (!name) return rf_err_set(err, RF_ERR_FORMAT, "TemplateProcessing: template item %zu is not understood", i);
        json_t *ids = json_object_get(json_object_get(specials, name), "ids");
        if (!json_is_array(ids)) return rf_err_set(err, RF_ERR_FORMAT, "TemplateProcessing: special token \"%.60s\" has no ids", name);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            json_t *v = json_array_get(ids, k);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 30))
                return rf_err_set(err, RF_ERR_FORMAT, "TemplateProcessing: bad id for \"%.60s\"", name);
            int32_t id = (int32_t)json_integer_value(v);
            if (!(seen_a ? ids_append(&w->post, &w->npost, &id, 1) : ids_append(&w->pre, &w->npre, &id, 1)))
                return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        }
    }
    if (!seen_a) return rf_err_set(err, RF_ERR_FORMAT, "TemplateProcessing: the single template has no sequence A");
    return RF_OK;
}

static rf_status pair_token(json_t *pp, const char *key, int32_t **v, size_t *n, rf_err *err)
{
    json_t *p = json_object_get(pp, key), *id = json_array_get(p, 1);
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 30))
        return rf_err_set(err, RF_ERR_FORMAT, "post-processor \"%s\" must be [token, id]", key);
    int32_t x = (int32_t)json_integer_value(id);
    return ids_append(v, n, &x, 1) ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
}

static rf_status parse_post(json_t *pp, tk_wrap *w, rf_err *err)
{
    if (!pp || json_is_null(pp)) return RF_OK;
    const char *type = tk_json_str(pp, "type");
    if (!type) return rf_err_set(err, RF_ERR_FORMAT, "post-processor without a \"type\"");
    if (!strcmp(type, "ByteLevel")) return RF_OK; /* only trims offsets */
    if (!strcmp(type, "TemplateProcessing")) return template_single(pp, w, err);
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        rf_status st = pair_token(pp, "cls", &w->pre, &w->npre, err);
        return st ? st : pair_token(pp, "sep", &w->post, &w->npost, err);
    }
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(pp, "processors");
        if (!json_is_array(arr)) return rf_err_set(err, RF_ERR_FORMAT, "Sequence post-processor without \"processors\"");
        for (size_t i = 0; i < json_array_size(arr); i++) {
            tk_wrap in = {0};
            rf_status st = parse_post(json_array_get(arr, i), &in, err);
            /* a later processor wraps the output of the earlier ones */
            if (!st && (!ids_append(&in.pre, &in.npre, w->pre, w->npre) || !ids_append(&w->post, &w->npost, in.post, in.npost)))
                st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            if (!st) {
                free(w->pre);
                w->pre = in.pre;
                w->npre = in.npre;
                in.pre = NULL;
            }
            free(in.pre);
            free(in.post);
            if (st) return st;
        }
        return RF_OK;
    }
    return rf_err_set(err, RF_ERR_UNSUPPORTED, "unsupported post-processor type \"%s\"", type);
}

/* tokenizer_config.json writes special tokens as strings or {"content": ...}. */
static const char *config_token(json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_string(v)) return json_string_value(v);
    return tk_json_str(v, "content");
}

/* transformers' Llama/Gemma fast tokenizers rebuild the template from add_bos_token /
 * add_eos_token; other classes keep tokenizer.json's post-processor. */
static rf_status apply_config(rf_tok *t, json_t *cfg, tk_wrap *w, rf_err *err)
{
    t->bos = t->eos = -1;
    if (!cfg) {
        if (w->npre) t->bos = w->pre[0];
        if (w->npost) t->eos = w->post[w->npost - 1];
        return RF_OK;
    }
    const char *bos = config_token(cfg, "bos_token"), *eos = config_token(cfg, "eos_token");
    if (bos) t->bos = token_id(t, bos);
    if (eos) t->eos = token_id(t, eos);
    const char *cls = tk_json_str(cfg, "tokenizer_class");
    static const char *rebuild[] = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
                                    "GemmaTokenizer", "GemmaTokenizerFast"};
    int rb = 0;
    for (size_t i = 0; cls && i < sizeof rebuild / sizeof rebuild[0]; i++) rb |= !strcmp(cls, rebuild[i]);
    json_t *ab = json_object_get(cfg, "add_bos_token"), *ae = json_object_get(cfg, "add_eos_token");
    if (!rb || (!json_is_boolean(ab) && !json_is_boolean(ae))) return RF_OK;
    int add_bos = json_is_boolean(ab) ? json_is_true(ab) : 1, add_eos = json_is_boolean(ae) && json_is_true(ae);
    if ((add_bos && t->bos < 0) || (add_eos && t->eos < 0))
        return rf_err_set(err, RF_ERR_FORMAT, "tokenizer_config.json asks for a BOS/EOS token it does not name");
    w->npre = w->npost = 0;
    if ((add_bos && !ids_append(&w->pre, &w->npre, &t->bos, 1)) || (add_eos && !ids_append(&w->post, &w->npost, &t->eos, 1)))
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    return RF_OK;
}

static rf_status finish_ids(rf_tok *t, rf_err *err)
{
    int32_t n = tk_bpe_size(t->bpe);
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].id >= n) n = t->added[i].id + 1;
    t->vocab_size = n;
    if (!(t->added_of_id = malloc(((size_t)n + 1) * sizeof *t->added_of_id))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < n; i++) t->added_of_id[i] = -1;
    for (size_t i = 0; i < t->nadded; i++) t->added_of_id[t->added[i].id] = (int32_t)i;
    const int32_t *lists[2] = {t->prefix, t->suffix};
    size_t counts[2] = {t->nprefix, t->nsuffix};
    for (int l = 0; l < 2; l++)
        for (size_t i = 0; i < counts[l]; i++)
            if (lists[l][i] >= n) return rf_err_set(err, RF_ERR_FORMAT, "post-processor id %d is outside the vocabulary", (int)lists[l][i]);
    return RF_OK;
}

static rf_status parse_parts(rf_tok *t, json_t *root, json_t *cfg, rf_err *err)
{
    if (!json_is_object(root)) return rf_err_set(err, RF_ERR_FORMAT, "tokenizer.json is not a JSON object");
    json_t *v;
    rf_status st = tk_bpe_parse(json_object_get(root, "model"), &t->bpe, err);
    if (!st && (v = json_object_get(root, "normalizer")) && !json_is_null(v)) st = tk_norm_parse(v, &t->norm, err);
    if (!st && (v = json_object_get(root, "pre_tokenizer")) && !json_is_null(v)) st = tk_pre_parse(v, &t->pre, err);
    if (!st && (v = json_object_get(root, "decoder")) && !json_is_null(v)) st = tk_dec_parse(v, &t->dec, err);
    if (!st) st = parse_added(t, json_object_get(root, "added_tokens"), err);
    if (!st) st = normalize_patterns(t, err);
    if (!st) st = matcher_build(&t->raw, t->added, t->nadded, 0, err);
    if (!st) st = matcher_build(&t->normd, t->added, t->nadded, 1, err);
    tk_wrap w = {0};
    if (!st) st = parse_post(json_object_get(root, "post_processor"), &w, err);
    if (!st) st = apply_config(t, cfg, &w, err);
    t->prefix = w.pre;
    t->nprefix = w.npre;
    t->suffix = w.post;
    t->nsuffix = w.npost;
    if (!st) st = finish_ids(t, err);
    return st;
}

/* LABEL and CONFIG_LABEL name the two files in messages; JSON errors name their file, other
 * errors come back unprefixed (*PREFIX set: the caller puts the tokenizer.json path in front). */
static rf_status load_parts(const char *json, size_t len, const char *label, const char *config_json, size_t config_len,
                            const char *config_label, rf_tok **out, int *prefix, rf_err *err)
{
    *out = NULL;
    *prefix = 0;
    if (!json) return rf_err_set(err, RF_ERR_INVALID, "no tokenizer.json text");
    json_t *root, *cfg = NULL;
    rf_status st = rf_json_parse(json, len, label, 0, &root, err);
    if (st) return st;
    if (config_json) {
        st = rf_json_parse(config_json, config_len, config_label, 0, &cfg, err);
        if (!st && !json_is_object(cfg)) st = rf_err_set(err, RF_ERR_FORMAT, "%s: not a JSON object", config_label);
        if (st) {
            json_decref(root);
            json_decref(cfg);
            return st;
        }
    }
    rf_tok *t = calloc(1, sizeof *t);
    st = t ? parse_parts(t, root, cfg, err) : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    json_decref(root);
    json_decref(cfg);
    if (st) {
        *prefix = 1;
        rf_tok_free(t);
        return st;
    }
    *out = t;
    return RF_OK;
}

rf_status rf_tok_load_json(const char *json, size_t len, const char *config_json, size_t config_len, rf_tok **out,
                           rf_err *err)
{
    int prefix;
    return load_parts(json, len, "tokenizer.json", config_json, config_len, "tokenizer_config.json", out, &prefix, err);
}

rf_status rf_tok_load(const char *model_dir, rf_tok **out, rf_err *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(model_dir, &sb) == 0 && S_ISREG(sb.st_mode)) { /* a GGUF file: its tokenizer.ggml.* */
        FILE *f = fopen(model_dir, "rb");
        char m[4] = {0};
        size_t got = f ? fread(m, 1, 4, f) : 0;
        if (f) fclose(f);
        if (got == 4 && !memcmp(m, "GGUF", 4)) return rf_tok_load_gguf(model_dir, out, err);
    }
    size_t dl = strlen(model_dir);
    char *p1 = malloc(dl + 32), *p2 = malloc(dl + 32);
    if (!p1 || !p2) {
        free(p1);
        free(p2);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    snprintf(p1, dl + 32, "%s/tokenizer.json", model_dir);
    snprintf(p2, dl + 32, "%s/tokenizer_config.json", model_dir);
    char *j = NULL, *c = NULL;
    size_t jl, cl = 0;
    rf_status st = rf_read_file(p1, RF_MAX_TOKENIZER_FILE, &j, &jl, err);
    if (!st) {
        rf_err e2;
        st = rf_read_file(p2, RF_MAX_CONFIG_FILE, &c, &cl, &e2);
        if (st == RF_ERR_NOT_FOUND) st = RF_OK; /* optional */
        else if (st && err) *err = e2;
    }
    if (!st) {
        int prefix;
        st = load_parts(j, jl, p1, c, cl, p2, out, &prefix, err);
        if (st && prefix) rf_err_prefix(err, "%s", p1);
    }
    free(j);
    free(c);
    free(p1);
    free(p2);
    return st;
}

/* ------------------------------------------------------------------ encoding */

typedef struct enc_ctx {
    const rf_tok *t;
    tk_match m;
    tk_bpe_work *w;
    tk_buf norm;
    tk_pieces in, out;
    tk_segs segs;
    int32_t *ids;
    uint64_t n, cap;
} enc_ctx;

typedef struct added_hit {
    size_t start, end;
    int32_t added; /* index into t->added, -1 for plain text */
} added_hit;

static int is_word_char(uint32_t c)
{
    if (c == '_') return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

static uint32_t last_char(const char *s, size_t end, size_t *start)
{
    size_t p = end - 1;
    while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
    *start = p;
    return tk_utf8_decode((const unsigned char *)s + p, (int)(end - p));
}

static uint32_t first_char(const char *s, size_t len, int *n)
{
    *n = tk_utf8_len((const unsigned char *)s, len);
    return tk_utf8_decode((const unsigned char *)s, *n);
}

/* Longest added-token pattern starting exactly at i, or -1. */
static int32_t match_at(const rf_tok *t, const tk_matcher *mt, const char *s, size_t len, size_t i)
{
    unsigned char c = (unsigned char)s[i];
    for (uint32_t k = mt->first[c]; k < mt->first[c + 1]; k++) {
        const tk_added *a = &t->added[mt->idx[k]];
        if (a->plen <= len - i && !memcmp(s + i, a->pattern, a->plen)) return (int32_t)mt->idx[k];
    }
    return -1;
}

/* HF AddedVocabulary::find_matches: leftmost-longest, then single_word / lstrip / rstrip. */
static rf_status find_added(const rf_tok *t, const tk_matcher *mt, const char *s, size_t len, added_hit **hits,
                            size_t *nh, size_t *hcap, rf_err *err)
{
    *nh = 0;
    size_t pos = 0, start_offset = 0;
    int any = mt->first[256] > 0;
    while (any && pos < len) {
        size_t i = pos;
        int32_t a = -1;
        for (; i < len; i++)
            if (mt->first[(unsigned char)s[i]] != mt->first[(unsigned char)s[i] + 1] && (a = match_at(t, mt, s, len, i)) >= 0) break;
        if (a < 0) break;
        const tk_added *x = &t->added[a];
        size_t start = i, stop = i + x->plen;
        pos = stop;
        if (x->single_word) {
            size_t ps;
            int fn;
            int left_ok = start == 0 || !is_word_char(last_char(s, start, &ps));
            int right_ok = stop == len || !is_word_char(first_char(s + stop, len - stop, &fn));
            if (!left_ok || !right_ok) continue;
        }
        if (x->lstrip) {
            size_t ns = start, ps;
            while (ns > 0 && tk_is_whitespace(last_char(s, ns, &ps))) ns = ps;
            start = ns > start_offset ? ns : start_offset;
        }
        if (x->rstrip) {
            int fn;
            while (stop < len && tk_is_whitespace(first_char(s + stop, len - stop, &fn))) stop += (size_t)fn;
            pos = stop;
        }
        if (*nh + 2 > *hcap) {
            size_t c = *hcap ? *hcap * 2 : 16;
            added_hit *h = realloc(*hits, c * sizeof *h);
            if (!h) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            *hits = h;
            *hcap = c;
        }
        if (start_offset < start) (*hits)[(*nh)++] = (added_hit){start_offset, start, -1};
        (*hits)[(*nh)++] = (added_hit){start, stop, a};
        start_offset = stop;
    }
    if (*nh + 1 > *hcap) {
        size_t c = *hcap ? *hcap * 2 : 4;
        added_hit *h = realloc(*hits, c * sizeof *h);
        if (!h) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        *hits = h;
        *hcap = c;
    }
    if (start_offset < len || *nh == 0) (*hits)[(*nh)++] = (added_hit){start_offset, len, -1};
    return RF_OK;
}

static rf_status push_id(enc_ctx *c, int32_t id, rf_err *err)
{
    if (c->n == c->cap) {
        uint64_t cap = c->cap ? c->cap * 2 : 256;
        int32_t *p = realloc(c->ids, cap * sizeof *p);
        if (!p) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        c->ids = p;
        c->cap = cap;
    }
    c->ids[c->n++] = id;
    return RF_OK;
}

static rf_status model_pieces(enc_ctx *c, const char *s, size_t len, int at_start, rf_err *err)
{
    const rf_tok *t = c->t;
    if (!t->pre) return tk_bpe_encode(t->bpe, c->w, s, len, &c->ids, &c->n, &c->cap, err);
    tk_pieces_clear(&c->in);
    if (!tk_pieces_add(&c->in, s, len, at_start)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status st = tk_pre_apply(t->pre, &c->m, &c->in, &c->out, &c->segs, err);
    for (size_t i = 0; !st && i < c->out.n; i++)
        st = tk_bpe_encode(t->bpe, c->w, c->out.text.p + c->out.v[i].off, c->out.v[i].len, &c->ids, &c->n, &c->cap, err);
    return st;
}

static rf_status encode_text(enc_ctx *c, const char *s, size_t len, int at_start, rf_err *err)
{
    const rf_tok *t = c->t;
    const char *ns = s;
    size_t nl = len;
    if (t->norm) {
        rf_status st = tk_norm_apply(t->norm, &c->m, s, len, &c->norm, err);
        if (st) return st;
        ns = c->norm.p;
        nl = c->norm.n;
    }
    if (!t->normd.first[256]) return model_pieces(c, ns, nl, at_start, err);
    added_hit *hits = NULL;
    size_t nh = 0, hcap = 0;
    rf_status st = find_added(t, &t->normd, ns, nl, &hits, &nh, &hcap, err);
    /* the pieces below reuse c->norm only through ns, which model_pieces does not touch */
    for (size_t i = 0; !st && i < nh; i++) {
        if (hits[i].added >= 0) st = push_id(c, t->added[hits[i].added].id, err);
        else st = model_pieces(c, ns + hits[i].start, hits[i].end - hits[i].start, at_start && hits[i].start == 0, err);
    }
    free(hits);
    return st;
}

rf_status rf_tok_encode(const rf_tok *t, const char *text, uint64_t len, int add_special, int32_t **ids, uint64_t *n,
                        rf_err *err)
{
    *ids = NULL;
    *n = 0;
    if (!text && len) return rf_err_set(err, RF_ERR_INVALID, "NULL text");
    size_t bad = tk_utf8_validate(text ? text : "", (size_t)len);
    if (bad != len) return rf_err_set(err, RF_ERR_INVALID, "text is not valid UTF-8 (byte offset %zu)", bad);
    enc_ctx c = {.t = t, .w = tk_bpe_work_new()};
    rf_status st = c.w ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !st && add_special && i < t->nprefix; i++) st = push_id(&c, t->prefix[i], err);
    added_hit *hits = NULL;
    size_t nh = 0, hcap = 0;
    if (!st) st = find_added(t, &t->raw, text ? text : "", (size_t)len, &hits, &nh, &hcap, err);
    for (size_t i = 0; !st && i < nh; i++) {
        if (hits[i].added >= 0) st = push_id(&c, t->added[hits[i].added].id, err);
        else st = encode_text(&c, text + hits[i].start, hits[i].end - hits[i].start, hits[i].start == 0, err);
    }
    for (size_t i = 0; !st && add_special && i < t->nsuffix; i++) st = push_id(&c, t->suffix[i], err);
    free(hits);
    tk_bpe_work_free(c.w);
    tk_match_free(&c.m);
    tk_buf_free(&c.norm);
    tk_pieces_free(&c.in);
    tk_pieces_free(&c.out);
    free(c.segs.v);
    if (st) {
        free(c.ids);
        return st;
    }
    if (!c.ids && !(c.ids = malloc(sizeof *c.ids))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    *ids = c.ids;
    *n = c.n;
    return RF_OK;
}

/* ------------------------------------------------------------------ decoding, queries */

static const char *piece_of(const rf_tok *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->vocab_size) return NULL;
    int32_t a = t->added_of_id[id];
    if (a >= 0) {
        *len = t->added[a].len;
        return t->added[a].content;
    }
    return tk_bpe_piece(t->bpe, id, len);
}

static rf_status decode_buf(const rf_tok *t, const int32_t *ids, uint64_t n, tk_buf *out, rf_err *err)
{
    tk_pieces toks = {0};
    rf_status st = RF_OK;
    for (uint64_t i = 0; !st && i < n; i++) {
        size_t len = 0;
        const char *p = piece_of(t, ids[i], &len);
        if (!p) st = rf_err_set(err, RF_ERR_INVALID, "token id %d is not in the vocabulary (size %d)", (int)ids[i], (int)t->vocab_size);
        else if (!tk_pieces_add(&toks, p, len, 0)) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    if (!st) st = tk_dec_apply(t->dec, &toks, out, err);
    tk_pieces_free(&toks);
    return st;
}

rf_status rf_tok_decode(const rf_tok *t, const int32_t *ids, uint64_t n, char **text, uint64_t *len, rf_err *err)
{
    *text = NULL;
    if (len) *len = 0;
    tk_buf out = {0};
    rf_status st = decode_buf(t, ids, n, &out, err);
    if (st) {
        tk_buf_free(&out);
        return st;
    }
    *text = out.p;
    if (len) *len = out.n;
    return RF_OK;
}

int32_t rf_tok_vocab_size(const rf_tok *t) { return t->vocab_size; }
int32_t rf_tok_bos_id(const rf_tok *t) { return t->bos; }
int32_t rf_tok_eos_id(const rf_tok *t) { return t->eos; }
int rf_tok_adds_bos(const rf_tok *t) { return t->nprefix > 0 && t->bos >= 0 && t->prefix[0] == t->bos; }

const char *rf_tok_id_to_piece(const rf_tok *t, int32_t id)
{
    size_t len;
    return piece_of(t, id, &len);
}

int32_t rf_tok_piece_to_id(const rf_tok *t, const char *piece) { return piece ? token_id(t, piece) : -1; }

int rf_tok_is_special(const rf_tok *t, int32_t id)
{
    if (id < 0 || id >= t->vocab_size || t->added_of_id[id] < 0) return 0;
    return t->added[t->added_of_id[id]].special;
}

/* ------------------------------------------------------------------ streaming decode */

/* HF's DecodeStream: decode a short window of ids and emit what grew past the previous
 * window's text, holding back text that ends in an incomplete UTF-8 sequence (U+FFFD). One
 * earlier token stays in the window so decoders that treat the first token specially (Strip,
 * Metaspace) see the same context as a full decode. */
struct rf_tok_stream {
    const rf_tok *t;
    int32_t *ids;
    size_t n, cap, prefix_index;
    tk_buf prefix, cur, out;
};

rf_status rf_tok_stream_create(const rf_tok *t, rf_tok_stream **out, rf_err *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    (*out)->t = t;
    return RF_OK;
}

void rf_tok_stream_free(rf_tok_stream *s)
{
    if (!s) return;
    free(s->ids);
    tk_buf_free(&s->prefix);
    tk_buf_free(&s->cur);
    tk_buf_free(&s->out);
    free(s);
}

static int ends_incomplete(const tk_buf *b) { return b->n >= 3 && !memcmp(b->p + b->n - 3, "\xEF\xBF\xBD", 3); }

rf_status rf_tok_stream_push(rf_tok_stream *s, int32_t id, const char **text, uint64_t *len, rf_err *err)
{
    *text = "";
    *len = 0;
    rf_status st;
    if (s->prefix.n == 0 && s->n > 0) {
        if ((st = decode_buf(s->t, s->ids, s->n, &s->cur, err))) return st;
        if (!ends_incomplete(&s->cur)) {
            tk_buf t = s->prefix;
            s->prefix = s->cur;
            s->cur = t;
            s->prefix_index = s->n;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        int32_t *p = realloc(s->ids, cap * sizeof *p);
        if (!p) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        s->ids = p;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
    if ((st = decode_buf(s->t, s->ids, s->n, &s->cur, err))) {
        s->n--;
        return st;
    }
    /* four tokens carry at least four bytes: a sequence still incomplete then never will be */
    int hold = ends_incomplete(&s->cur) && s->n - s->prefix_index < 4;
    if (s->cur.n <= s->prefix.n || hold) return RF_OK;
    if (memcmp(s->cur.p, s->prefix.p ? s->prefix.p : "", s->prefix.n))
        return rf_err_set(err, RF_ERR_INTERNAL, "streaming decode: the decoder changed earlier text");
    s->out.n = 0;
    if (!tk_buf_put(&s->out, s->cur.p + s->prefix.n, s->cur.n - s->prefix.n)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    size_t new_prefix_index = s->n - s->prefix_index;
    memmove(s->ids, s->ids + s->prefix_index, (s->n - s->prefix_index) * sizeof *s->ids);
    s->n -= s->prefix_index;
    if ((st = decode_buf(s->t, s->ids, s->n, &s->prefix, err))) return st;
    s->prefix_index = new_prefix_index;
    *text = s->out.p;
    *len = s->out.n;
    return RF_OK;
}
