/* tokenizer.ggml.* metadata from a Hugging Face tokenizer.json, the way llama.cpp's own
 * converter writes it (convert_hf_to_gguf.py: get_vocab_base for byte-level BPE,
 * _set_vocab_sentencepiece for SentencePiece models), so that llama.cpp tokenizes as ramfit.
 *
 * Token types are llama.cpp's: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
 * llama.cpp's SentencePiece tokenizer merges the adjacent pair whose concatenation has the best
 * score: the scores come from tokenizer.model when it is there and agrees with tokenizer.json,
 * else from the merges (a token made by merge r scores -r, the order in which BPE applies them). */
#include "tokenizer/tok_gguf.h"
#include "tokenizer/tokenizer_internal.h"
#include "io/safetensors_internal.h"
#include "io/json_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Pre-tokenizer regexes llama.cpp knows, by the name it reads from tokenizer.ggml.pre (the
 * pattern as tokenizer.json spells it; llama-vocab.cpp holds the same expressions). */
static const struct { const char *pre, *regex; } known_pre[] = {
    {"qwen2", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
              "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"llama-bpe", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {"qwen35", "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|"
               "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

typedef struct vocab {
    int32_t n;
    char **tok;
    size_t *len;
    int32_t *type;
    float *score;
} vocab;

static void vocab_free(vocab *v)
{
    for (int32_t i = 0; v->tok && i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->len);
    free(v->type);
    free(v->score);
}

static int set_tok(vocab *v, int32_t id, const char *s, size_t len, int type)
{
    char *c = malloc(len + 1);
    if (!c) return 0;
    memcpy(c, s, len);
    c[len] = '\0';
    free(v->tok[id]);
    v->tok[id] = c;
    v->len[id] = len;
    v->type[id] = type;
    return 1;
}

/* ------------------------------------------------------------------ the tokenizer.json structure */

/* Does node J (a pre-tokenizer/decoder/normalizer, possibly a Sequence) contain TYPE? */
static json_t *find_type(json_t *j, const char *type)
{
    if (!json_is_object(j)) return NULL;
    const char *t = tk_json_str(j, "type");
    if (t && !strcmp(t, type)) return j;
    static const char *kids[] = {"pretokenizers", "decoders", "normalizers", "processors"};
    for (size_t k = 0; k < sizeof kids / sizeof kids[0]; k++) {
        json_t *a = json_object_get(j, kids[k]), *e;
        size_t i;
        json_array_foreach(a, i, e) {
            json_t *f = find_type(e, type);
            if (f) return f;
        }
    }
    return NULL;
}

/* The `pre` name for a byte-level tokenizer's splitting, or RF_ERR_UNSUPPORTED. */
static rf_status pre_name(json_t *root, char *out, size_t cap, rf_err *err)
{
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *split = find_type(pre, "Split"), *bl = find_type(pre, "ByteLevel");
    if (!split) {
        /* ByteLevel with use_regex: GPT-2's own pattern */
        if (bl && tk_json_bool(bl, "use_regex", 1) == 1 && tk_json_bool(bl, "add_prefix_space", 0) == 0) {
            snprintf(out, cap, "gpt-2");
            return RF_OK;
        }
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tokenizer.json: a byte-level pre-tokenizer without a Split regex "
                          "or GPT-2's: llama.cpp has no matching tokenizer.ggml.pre");
    }
    const char *re = tk_json_str(json_object_get(split, "pattern"), "Regex");
    const char *beh = tk_json_str(split, "behavior");
    if (!re || (beh && strcmp(beh, "Isolated")) || tk_json_bool(split, "invert", 0) == 1)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tokenizer.json: a Split pre-tokenizer that is not an isolating "
                          "regex: llama.cpp has no matching tokenizer.ggml.pre");
    if (bl && tk_json_bool(bl, "use_regex", 1) == 1)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "tokenizer.json: Split followed by ByteLevel with use_regex: "
                          "llama.cpp has no matching tokenizer.ggml.pre");
    for (size_t i = 0; i < sizeof known_pre / sizeof known_pre[0]; i++)
        if (!strcmp(re, known_pre[i].regex)) {
            snprintf(out, cap, "%s", known_pre[i].pre);
            return RF_OK;
        }
    return rf_err_set(err, RF_ERR_UNSUPPORTED, "tokenizer.json: pre-tokenizer regex %.200s is not one llama.cpp "
                      "knows (qwen2, llama-bpe, qwen35, gpt-2), so it would split text differently", re);
}

/* SentencePiece style: "▁" for spaces, from the normalizer (Prepend/Replace) or Metaspace.
 * *prefix: a "▁" is put in front of the text. */
static int spm_style(json_t *root, int *prefix)
{
    static const char *const sp = "\xe2\x96\x81";
    json_t *norm = json_object_get(root, "normalizer"), *pre = json_object_get(root, "pre_tokenizer");
    json_t *ms = find_type(pre, "Metaspace");
    if (ms) {
        const char *scheme = tk_json_str(ms, "prepend_scheme");
        int legacy = tk_json_bool(ms, "add_prefix_space", 1) == 1;
        *prefix = scheme ? strcmp(scheme, "never") != 0 : legacy;
        return 1;
    }
    json_t *rep = find_type(norm, "Replace");
    const char *content = rep ? tk_json_str(rep, "content") : NULL;
    if (!content || strcmp(content, sp)) return 0;
    json_t *pp = find_type(norm, "Prepend");
    const char *pc = pp ? tk_json_str(pp, "prepend") : NULL;
    *prefix = pc && !strcmp(pc, sp);
    return 1;
}

/* ------------------------------------------------------------------ tokenizer.model scores */

static int pb_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    *v = 0;
    for (int s = 0; s < 64 && *i < n; s += 7) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return 1;
    }
    return 0;
}

/* Skip a field of wire type WT; 0 when malformed. */
static int pb_skip(const uint8_t *p, size_t n, size_t *i, unsigned wt)
{
    uint64_t v;
    switch (wt) {
    case 0: return pb_varint(p, n, i, &v);
    case 1: if (n - *i < 8) return 0; *i += 8; return 1;
    case 5: if (n - *i < 4) return 0; *i += 4; return 1;
    case 2: if (!pb_varint(p, n, i, &v) || v > n - *i) return 0; *i += (size_t)v; return 1;
    default: return 0;
    }
}

/* Scores and types of a SentencePiece ModelProto (pieces = field 1: piece 1, score 2, type 3),
 * taken only when its pieces are exactly tokenizer.json's at the same ids. */
static int spm_scores(const char *model_dir, vocab *v)
{
    size_t dl = strlen(model_dir) + 32;
    char *path = malloc(dl);
    if (!path) return 0;
    snprintf(path, dl, "%s/tokenizer.model", model_dir);
    void *map;
    uint64_t size;
    rf_err e;
    rf_status s = rf_file_map(path, &map, &size, &e);
    free(path);
    if (s) return 0;
    const uint8_t *p = map;
    size_t i = 0, n = (size_t)size;
    int32_t id = 0, ok = 1;
    float *score = malloc(sizeof *score * (size_t)(v->n ? v->n : 1));
    int32_t *type = malloc(sizeof *type * (size_t)(v->n ? v->n : 1));
    if (!score || !type) ok = 0;
    while (ok && i < n) {
        uint64_t key, len;
        if (!pb_varint(p, n, &i, &key)) { ok = 0; break; }
        if (key >> 3 != 1 || (key & 7) != 2) { ok = pb_skip(p, n, &i, (unsigned)(key & 7)); continue; }
        if (!pb_varint(p, n, &i, &len) || len > n - i || id >= v->n) { ok = 0; break; }
        size_t end = i + (size_t)len;
        const uint8_t *piece = NULL;
        uint64_t plen = 0, t = 1;
        float sc = 0;
        while (ok && i < end) {
            uint64_t k2, val;
            if (!pb_varint(p, end, &i, &k2)) { ok = 0; break; }
            if (k2 == (1 << 3 | 2)) {
                if (!pb_varint(p, end, &i, &plen) || plen > end - i) { ok = 0; break; }
                piece = p + i;
                i += (size_t)plen;
            } else if (k2 == (2 << 3 | 5)) {
                if (end - i < 4) { ok = 0; break; }
                memcpy(&sc, p + i, 4);
                i += 4;
            } else if (k2 == (3 << 3 | 0)) {
                if (!pb_varint(p, end, &i, &val)) { ok = 0; break; }
                t = val;
            } else {
                ok = pb_skip(p, end, &i, (unsigned)(k2 & 7));
            }
        }
        ok = ok && piece && v->tok[id] && plen == v->len[id] && !memcmp(piece, v->tok[id], (size_t)plen) && t >= 1 && t <= 6;
        if (ok) {
            score[id] = sc;
            type[id] = (int32_t)t;
            id++;
        }
    }
    /* the model may lack the added tokens at the end; those keep tokenizer.json's types */
    if (ok && id > 0) {
        for (int32_t k = 0; k < id; k++) {
            v->score[k] = score[k];
            v->type[k] = type[k];
        }
    }
    free(score);
    free(type);
    rf_file_unmap(map, size);
    return ok && id > 0;
}

/* Scores from the merges: the token merge r makes scores -r (its first merge). Tokens no merge
 * makes: single characters and bytes 0 (their score is never consulted: llama.cpp only scores
 * concatenations), longer ones -1e9, last in line. */
static rf_status merge_scores(json_t *merges, vocab *v, rf_err *err)
{
    rf_nametab tab = {0};
    uint8_t *seen = calloc((size_t)v->n + 1, 1);
    rf_status st = seen ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < v->n && !st; i++) {
        v->score[i] = 0.0f;
        if (v->tok[i] && rf_nametab_put(&tab, v->tok[i], (uint64_t)i, NULL) < 0)
            st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    json_t *m;
    size_t r;
    tk_buf b = {0};
    json_array_foreach(merges, r, m) {
        if (st) break;
        const char *a = NULL, *c = NULL;
        size_t al = 0, cl = 0;
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = s[0] ? strchr(s + 1, ' ') : NULL;
            if (!sp) continue;
            a = s, al = (size_t)(sp - s), c = sp + 1, cl = strlen(sp + 1);
        } else if (json_is_array(m) && json_array_size(m) == 2) {
            a = json_string_value(json_array_get(m, 0));
            c = json_string_value(json_array_get(m, 1));
            if (!a || !c) continue;
            al = strlen(a), cl = strlen(c);
        } else {
            continue;
        }
        b.n = 0;
        if (!tk_buf_put(&b, a, al) || !tk_buf_put(&b, c, cl) || !tk_buf_put(&b, "", 1)) {
            st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            break;
        }
        uint64_t id;
        if (rf_nametab_get(&tab, b.p, &id) && !seen[id]) {
            seen[id] = 1;
            v->score[id] = -(float)r;
        }
    }
    for (int32_t i = 0; i < v->n && !st; i++) {
        if (seen[i] || !v->tok[i] || v->type[i] != TT_NORMAL) continue;
        int one_char = v->len[i] > 0 && tk_utf8_len((const unsigned char *)v->tok[i], v->len[i]) == (int)v->len[i];
        if (!one_char) v->score[i] = -1e9f;
    }
    tk_buf_free(&b);
    rf_nametab_free(&tab);
    free(seen);
    return st;
}

/* tokenizer_config.json's special token KEY (a string or {"content": ...}) as an id, else -1. */
static int32_t config_id(json_t *cfg, const char *key, const vocab *v)
{
    json_t *j = json_object_get(cfg, key);
    const char *s = json_is_string(j) ? json_string_value(j) : tk_json_str(j, "content");
    for (int32_t i = 0; s && i < v->n; i++)
        if (v->tok[i] && !strcmp(v->tok[i], s)) return i;
    return -1;
}

static int is_byte_token(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    return len == 6 && !memcmp(s, "<0x", 3) && strchr(hex, s[3]) && strchr(hex, s[4]) && s[5] == '>' && s[3] && s[4];
}

/* tokenizer.json (required) or tokenizer_config.json (optional: absent gives NULL) through the
 * shared bounded loader, which also takes numbers such as Llama's huge model_max_length. */
static rf_status load_json(const char *path, int optional, json_t **out, rf_err *err)
{
    rf_err e;
    rf_status s = rf_json_load(path, optional ? RF_MAX_CONFIG_FILE : RF_MAX_TOKENIZER_FILE, JSON_REJECT_DUPLICATES, out,
                               &e);
    if (s == RF_ERR_NOT_FOUND && optional) return RF_OK;
    if (s && err) *err = e;
    return s;
}

static rf_status fill_vocab(json_t *root, json_t *model, int32_t n_vocab, int spm, vocab *v, const char *label,
                            rf_err *err)
{
    v->n = n_vocab;
    v->tok = calloc((size_t)n_vocab, sizeof *v->tok);
    v->len = calloc((size_t)n_vocab, sizeof *v->len);
    v->type = calloc((size_t)n_vocab, sizeof *v->type);
    v->score = calloc((size_t)n_vocab, sizeof *v->score);
    if (!v->tok || !v->len || !v->type || !v->score) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    const char *unk = tk_json_str(model, "unk_token");
    const char *key;
    json_t *val;
    json_object_foreach(json_object_get(model, "vocab"), key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= n_vocab)
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: token %s has id %lld, outside the model's vocabulary of %d",
                              label, key, (long long)id, n_vocab);
        size_t len = strlen(key);
        int type = TT_NORMAL;
        if (spm && is_byte_token(key, len)) type = TT_BYTE;
        if (unk && !strcmp(key, unk)) type = TT_UNKNOWN;
        if (!set_tok(v, (int32_t)id, key, len, type)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    size_t i;
    json_array_foreach(json_object_get(root, "added_tokens"), i, val) {
        json_int_t id = json_integer_value(json_object_get(val, "id"));
        const char *content = tk_json_str(val, "content");
        if (!content || id < 0 || id >= n_vocab)
            return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: added token %s has id %lld, outside the model's vocabulary "
                              "of %d", label, content ? content : "?", (long long)id, n_vocab);
        int special = tk_json_bool(val, "special", 0) == 1;
        int type = special ? TT_CONTROL : TT_USER;
        if (unk && !strcmp(content, unk)) type = TT_UNKNOWN;
        if (!set_tok(v, (int32_t)id, content, strlen(content), type)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    char pad[32];
    for (int32_t k = 0; k < n_vocab; k++)
        if (!v->tok[k]) {
            snprintf(pad, sizeof pad, "[PAD%d]", k);
            if (!set_tok(v, k, pad, strlen(pad), TT_UNUSED)) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        }
    return RF_OK;
}

static rf_status write_merges(json_t *merges, rf_ggufw *w, rf_err *err)
{
    size_t n = json_array_size(merges), r;
    char **strs = calloc(n ? n : 1, sizeof *strs);
    if (!strs) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status st = RF_OK;
    json_t *m;
    json_array_foreach(merges, r, m) {
        if (json_is_string(m)) {
            strs[r] = strdup(json_string_value(m));
        } else {
            const char *a = json_string_value(json_array_get(m, 0)), *c = json_string_value(json_array_get(m, 1));
            if (!json_is_array(m) || json_array_size(m) != 2 || !a || !c) {
                st = rf_err_set(err, RF_ERR_FORMAT, "tokenizer.json: merge %zu is neither \"a b\" nor [a, b]", r);
                break;
            }
            size_t l = strlen(a) + strlen(c) + 2;
            if ((strs[r] = malloc(l))) snprintf(strs[r], l, "%s %s", a, c);
        }
        if (!strs[r]) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        if (st) break;
    }
    if (!st) st = rf_ggufw_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)strs, NULL, n, err);
    for (size_t k = 0; k < n; k++) free(strs[k]);
    free(strs);
    return st;
}

rf_status rf_tok_gguf_write(const char *model_dir, const rf_config *cfg, int32_t n_vocab, rf_ggufw *w,
                            rf_tok_gguf_info *info, rf_err *err)
{
    rf_tok_gguf_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    size_t dl = strlen(model_dir) + 32;
    char *p1 = malloc(dl), *p2 = malloc(dl);
    json_t *root = NULL, *tcfg = NULL;
    rf_tok *tok = NULL;
    vocab v = {0};
    rf_status st = p1 && p2 ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    if (!st) {
        snprintf(p1, dl, "%s/tokenizer.json", model_dir);
        snprintf(p2, dl, "%s/tokenizer_config.json", model_dir);
        st = load_json(p1, 0, &root, err);
    }
    if (!st) st = load_json(p2, 1, &tcfg, err);
    /* ramfit's own tokenizer decides BOS/EOS and what encode adds: llama.cpp must agree with it */
    if (!st) st = rf_tok_load(model_dir, &tok, err);
    json_t *model = json_object_get(root, "model");
    const char *mtype = st ? NULL : tk_json_str(model, "type");
    if (!st && (!mtype || strcmp(mtype, "BPE")))
        st = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: model type %s: ramfit writes GGUF tokenizers for BPE only", p1,
                        mtype ? mtype : "(none)");
    int byte_level = 0, spm = 0, prefix = 0;
    if (!st) {
        byte_level = find_type(json_object_get(root, "pre_tokenizer"), "ByteLevel") != NULL ||
                     find_type(json_object_get(root, "decoder"), "ByteLevel") != NULL;
        spm = !byte_level && spm_style(root, &prefix);
        if (!byte_level && !spm)
            st = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: neither byte-level BPE nor SentencePiece-style (\xe2\x96\x81) "
                            "BPE: llama.cpp has no tokenizer that matches it", p1);
    }
    if (!st && rf_tok_vocab_size(tok) > n_vocab)
        st = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: the tokenizer has %d tokens, the model's embedding only %d rows",
                        p1, rf_tok_vocab_size(tok), n_vocab);
    if (!st) st = fill_vocab(root, model, n_vocab, spm, &v, p1, err);
    if (!st && byte_level) st = pre_name(root, info->pre, sizeof info->pre, err);
    if (!st && spm) {
        info->scores_from = spm_scores(model_dir, &v);
        if (!info->scores_from) st = merge_scores(json_object_get(model, "merges"), &v, err);
    }
    snprintf(info->model, sizeof info->model, "%s", byte_level ? "gpt2" : "llama");
    if (!st) st = rf_ggufw_set_str(w, "tokenizer.ggml.model", info->model, err);
    if (!st && byte_level) st = rf_ggufw_set_str(w, "tokenizer.ggml.pre", info->pre, err);
    if (!st) st = rf_ggufw_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, v.len, (uint64_t)v.n, err);
    if (!st && spm) st = rf_ggufw_set_arr(w, "tokenizer.ggml.scores", RF_GV_F32, v.score, (uint64_t)v.n, err);
    if (!st) st = rf_ggufw_set_arr(w, "tokenizer.ggml.token_type", RF_GV_I32, v.type, (uint64_t)v.n, err);
    if (!st && byte_level) st = write_merges(json_object_get(model, "merges"), w, err);
    if (!st) {
        info->tokens = v.n;
        info->bos = rf_tok_bos_id(tok);
        info->eos = rf_tok_eos_id(tok);
        if (info->bos < 0 && cfg->bos_token_id >= 0 && cfg->bos_token_id < n_vocab) info->bos = cfg->bos_token_id;
        if (info->eos < 0 && cfg->eos_token_id >= 0 && cfg->eos_token_id < n_vocab) info->eos = cfg->eos_token_id;
        info->add_bos = rf_tok_adds_bos(tok);
        int32_t unk = -1, pad = tcfg ? config_id(tcfg, "pad_token", &v) : -1;
        for (int32_t i = 0; i < v.n && unk < 0; i++)
            if (v.type[i] == TT_UNKNOWN) unk = i;
        if (info->bos >= 0) st = rf_ggufw_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)info->bos, err);
        if (!st && info->eos >= 0) st = rf_ggufw_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)info->eos, err);
        if (!st && unk >= 0) st = rf_ggufw_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk, err);
        if (!st && pad >= 0) st = rf_ggufw_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)pad, err);
        if (!st) st = rf_ggufw_set_bool(w, "tokenizer.ggml.add_bos_token", info->add_bos, err);
        if (!st) st = rf_ggufw_set_bool(w, "tokenizer.ggml.add_eos_token", tk_json_bool(tcfg, "add_eos_token", 0) == 1, err);
        if (!st && spm) st = rf_ggufw_set_bool(w, "tokenizer.ggml.add_space_prefix", prefix, err);
        const char *tmpl = tk_json_str(tcfg, "chat_template");
        if (!st && tmpl) st = rf_ggufw_set_str(w, "tokenizer.chat_template", tmpl, err);
    }
    vocab_free(&v);
    rf_tok_free(tok);
    json_decref(root);
    json_decref(tcfg);
    free(p1);
    free(p2);
    return st;
}

/* ------------------------------------------------------------------ the reverse: a tokenizer from a GGUF */

static const char *pre_regex(const char *pre)
{
    for (size_t i = 0; i < sizeof known_pre / sizeof known_pre[0]; i++)
        if (!strcmp(known_pre[i].pre, pre)) return known_pre[i].regex;
    if (!strcmp(pre, "llama3") || !strcmp(pre, "llama-v3")) return known_pre[1].regex;
    if (!strcmp(pre, "deepseek-r1-qwen")) return known_pre[0].regex;
    return NULL;
}

typedef struct spm_merge {
    float score;
    int32_t id, a, b;
} spm_merge;

static int cmp_merge(const void *x, const void *y)
{
    const spm_merge *p = x, *q = y;
    if (p->score != q->score) return p->score > q->score ? -1 : 1;
    if (p->id != q->id) return p->id < q->id ? -1 : 1;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

/* SentencePiece scores as BPE merges (what transformers' converter does for Llama): every split
 * of a normal token into two tokens is a merge, ranked by the merged token's score, then id. */
static rf_status spm_merges(const rf_gguf *g, int64_t ktok, int64_t kscore, int64_t ktype, rf_nametab *ids, json_t *arr,
                            rf_err *err)
{
    uint64_t n = rf_gguf_kv_arr_len(g, (uint64_t)ktok), cap = 1024, cnt = 0;
    spm_merge *m = malloc(sizeof *m * cap);
    rf_status st = m ? RF_OK : rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    char buf[1024];
    for (uint64_t i = 0; i < n && !st; i++) {
        if (ktype >= 0 && rf_gguf_arr_num(g, (uint64_t)ktype, i) != 1) continue;
        uint64_t len;
        const char *s = rf_gguf_arr_str(g, (uint64_t)ktok, i, &len);
        if (len >= sizeof buf) continue;
        for (uint64_t cut = 1; cut < len && !st; cut++) {
            if (((unsigned char)s[cut] & 0xC0) == 0x80) continue; /* inside a UTF-8 character */
            uint64_t a, b;
            memcpy(buf, s, cut);
            buf[cut] = '\0';
            if (!rf_nametab_get(ids, buf, &a)) continue;
            memcpy(buf, s + cut, len - cut);
            buf[len - cut] = '\0';
            if (!rf_nametab_get(ids, buf, &b)) continue;
            if (cnt == cap) {
                spm_merge *q = realloc(m, sizeof *m * (cap *= 2));
                if (!q) { st = rf_err_set(err, RF_ERR_NOMEM, "out of memory"); break; }
                m = q;
            }
            float sc = kscore >= 0 ? (float)rf_gguf_arr_num(g, (uint64_t)kscore, i) : 0.0f;
            m[cnt++] = (spm_merge){sc, (int32_t)i, (int32_t)a, (int32_t)b};
        }
    }
    if (!st) qsort(m, cnt, sizeof *m, cmp_merge);
    for (uint64_t i = 0; i < cnt && !st; i++) {
        uint64_t la, lb;
        const char *a = rf_gguf_arr_str(g, (uint64_t)ktok, (uint64_t)m[i].a, &la);
        const char *b = rf_gguf_arr_str(g, (uint64_t)ktok, (uint64_t)m[i].b, &lb);
        json_t *pair = json_pack("[s#, s#]", a, (int)la, b, (int)lb);
        if (!pair || json_array_append_new(arr, pair)) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    free(m);
    return st;
}

/* tokenizer.json for the tokenizer a GGUF file describes (then loaded by rf_tok_load_json). */
static rf_status gguf_tokenizer_json(const rf_gguf *g, char **out, rf_err *err)
{
    const char *path = rf_gguf_path(g), *ms;
    uint64_t ml;
    rf_status st = rf_gguf_get_str(g, "tokenizer.ggml.model", &ms, &ml, err);
    if (st) return st;
    int gpt2 = ml == 4 && !memcmp(ms, "gpt2", 4), llama = ml == 5 && !memcmp(ms, "llama", 5);
    if (!gpt2 && !llama)
        return rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model %.*s: ramfit reads gpt2 and llama tokenizers",
                          path, (int)ml, ms);
    int64_t ktok = rf_gguf_find_kv(g, "tokenizer.ggml.tokens"), ktype = rf_gguf_find_kv(g, "tokenizer.ggml.token_type");
    int64_t kscore = rf_gguf_find_kv(g, "tokenizer.ggml.scores"), kmerge = rf_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (ktok < 0 || rf_gguf_kv_arr_type(g, (uint64_t)ktok) != RF_GV_STR)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: no tokenizer.ggml.tokens string array", path);
    uint64_t n = rf_gguf_kv_arr_len(g, (uint64_t)ktok);
    if (ktype >= 0 && rf_gguf_kv_arr_len(g, (uint64_t)ktype) != n) ktype = -1;
    if (kscore >= 0 && rf_gguf_kv_arr_len(g, (uint64_t)kscore) != n) kscore = -1;
    json_t *root = json_object(), *model = json_object(), *jvocab = json_object(), *added = json_array(),
           *merges = json_array();
    rf_nametab ids = {0};
    char **names = calloc(n ? n : 1, sizeof *names);
    int byte_fallback = 0;
    int64_t unk = -1, bos = -1, eos = -1, v;
    rf_err e2;
    if (!rf_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v, &e2)) unk = v;
    if (!rf_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v, &e2)) bos = v;
    if (!rf_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v, &e2)) eos = v;
    int add_bos = !rf_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v, &e2) ? (int)v : llama;
    int add_eos = !rf_gguf_get_int(g, "tokenizer.ggml.add_eos_token", &v, &e2) ? (int)v : 0;
    int prefix = !rf_gguf_get_int(g, "tokenizer.ggml.add_space_prefix", &v, &e2) ? (int)v : 1;
    if (!root || !model || !jvocab || !added || !merges || !names) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n && !st; i++) {
        uint64_t len;
        const char *s = rf_gguf_arr_str(g, (uint64_t)ktok, i, &len);
        int type = ktype >= 0 ? (int)rf_gguf_arr_num(g, (uint64_t)ktype, i) : TT_NORMAL;
        if (memchr(s, 0, len)) continue; /* not representable as a JSON object key here */
        if (!(names[i] = malloc(len + 1))) { st = rf_err_set(err, RF_ERR_NOMEM, "out of memory"); break; }
        memcpy(names[i], s, len);
        names[i][len] = '\0';
        if (type == TT_BYTE) byte_fallback = 1;
        if (rf_nametab_put(&ids, names[i], i, NULL) < 0) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        json_object_set_new(jvocab, names[i], json_integer((json_int_t)i));
        if (type == TT_CONTROL || type == TT_USER || (type == TT_UNKNOWN && llama)) {
            json_t *a = json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i, "content", names[i],
                                  "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", type == TT_USER,
                                  "special", type != TT_USER);
            if (!a || json_array_append_new(added, a)) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        }
    }
    if (!st && gpt2) {
        if (kmerge < 0 || rf_gguf_kv_arr_type(g, (uint64_t)kmerge) != RF_GV_STR)
            st = rf_err_set(err, RF_ERR_FORMAT, "%s: a gpt2 tokenizer without tokenizer.ggml.merges", path);
        for (uint64_t i = 0; !st && i < rf_gguf_kv_arr_len(g, (uint64_t)kmerge); i++) {
            uint64_t len;
            const char *s = rf_gguf_arr_str(g, (uint64_t)kmerge, i, &len);
            if (json_array_append_new(merges, json_stringn_nocheck(s, (size_t)len))) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        }
    }
    if (!st && llama) st = spm_merges(g, ktok, kscore, ktype, &ids, merges, err);
    const char *ps = NULL;
    uint64_t pl = 0;
    char pre[64] = "default";
    if (!st && gpt2 && !rf_gguf_get_str(g, "tokenizer.ggml.pre", &ps, &pl, &e2))
        snprintf(pre, sizeof pre, "%.*s", (int)(pl < 63 ? pl : 63), ps);
    const char *regex = gpt2 ? pre_regex(pre) : NULL;
    if (!st && gpt2 && !regex && strcmp(pre, "gpt-2"))
        st = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: tokenizer.ggml.pre %s: ramfit knows qwen2, llama-bpe, qwen35 and "
                        "gpt-2 splitting", path, pre);
    if (!st) {
        json_object_set_new(model, "type", json_string("BPE"));
        json_object_set_new(model, "vocab", jvocab);
        jvocab = NULL;
        json_object_set_new(model, "merges", merges);
        merges = NULL;
        json_object_set_new(model, "byte_fallback", json_boolean(byte_fallback));
        json_object_set_new(model, "fuse_unk", json_boolean(llama));
        json_object_set_new(model, "ignore_merges", json_boolean(gpt2 && !strcmp(pre, "llama-bpe")));
        json_object_set_new(model, "unk_token", llama && unk >= 0 && (uint64_t)unk < n && names[unk]
                                                    ? json_string(names[unk]) : json_null());
        json_object_set_new(root, "model", model);
        model = NULL;
        json_object_set_new(root, "added_tokens", added);
        added = NULL;
        static const char sp[] = "\xe2\x96\x81";
        if (gpt2) {
            json_t *bl = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0,
                                   "use_regex", regex == NULL);
            json_object_set_new(root, "normalizer", json_null());
            json_object_set_new(root, "pre_tokenizer",
                                regex ? json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, o]}", "type", "Sequence",
                                                  "pretokenizers", "type", "Split", "pattern", "Regex", regex,
                                                  "behavior", "Isolated", "invert", 0, bl)
                                      : bl);
            json_object_set_new(root, "decoder", json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                                                           0, "trim_offsets", 0, "use_regex", 0));
        } else {
            json_object_set_new(root, "normalizer",
                                prefix ? json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence",
                                                   "normalizers", "type", "Prepend", "prepend", sp, "type", "Replace",
                                                   "pattern", "String", " ", "content", sp)
                                       : json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ",
                                                   "content", sp));
            json_object_set_new(root, "pre_tokenizer", json_null());
            json_t *decs = json_pack("[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]", "type", "Replace", "pattern", "String", sp,
                                     "content", " ", "type", "ByteFallback", "type", "Fuse");
            if (prefix) json_array_append_new(decs, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ",
                                                              "start", 1, "stop", 0));
            json_object_set_new(root, "decoder", json_pack("{s:s, s:o}", "type", "Sequence", "decoders", decs));
        }
        /* what encode adds: BOS/EOS as the file says (TemplateProcessing, as transformers builds it) */
        json_t *single = json_array();
        if (add_bos && bos >= 0 && (uint64_t)bos < n && names[bos])
            json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", names[bos], "type_id", 0));
        json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "Sequence", "id", "A", "type_id", 0));
        if (add_eos && eos >= 0 && (uint64_t)eos < n && names[eos])
            json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id", names[eos], "type_id", 0));
        json_t *specials = json_object();
        int64_t sids[2] = {add_bos ? bos : -1, add_eos ? eos : -1};
        for (int k = 0; k < 2; k++)
            if (sids[k] >= 0 && (uint64_t)sids[k] < n && names[sids[k]])
                json_object_set_new(specials, names[sids[k]], json_pack("{s:s, s:[I], s:[s]}", "id", names[sids[k]], "ids",
                                                                        (json_int_t)sids[k], "tokens", names[sids[k]]));
        json_object_set_new(root, "post_processor", json_pack("{s:s, s:o, s:o, s:o}", "type", "TemplateProcessing",
                                                              "single", single, "pair", json_array(), "special_tokens",
                                                              specials));
        *out = json_dumps(root, JSON_COMPACT);
        if (!*out) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    }
    json_decref(root);
    json_decref(model);
    json_decref(jvocab);
    json_decref(added);
    json_decref(merges);
    for (uint64_t i = 0; names && i < n; i++) free(names[i]);
    free(names);
    rf_nametab_free(&ids);
    return st;
}

rf_status rf_tok_load_gguf(const char *path, rf_tok **out, rf_err *err)
{
    *out = NULL;
    rf_gguf *g = NULL;
    char *json = NULL;
    rf_status st = rf_gguf_open(path, &g, err);
    if (!st) st = gguf_tokenizer_json(g, &json, err);
    if (!st) {
        st = rf_tok_load_json(json, strlen(json), NULL, 0, out, err);
        if (st) rf_err_prefix(err, "%s: the tokenizer rebuilt from tokenizer.ggml.*", path);
    }
    free(json);
    rf_gguf_close(g);
    return st;
}
