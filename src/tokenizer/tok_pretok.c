/* Tokenizer pre-tokenizers: Split, ByteLevel, Metaspace, Digits, WhitespaceSplit, Sequence. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* GPT-2's pattern, which ByteLevel uses when use_regex is true. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static tk_bytemap g_bytemap;
static pthread_once_t g_bytemap_once = PTHREAD_ONCE_INIT;

/* Printable bytes map to themselves; the rest to U+0100 upwards, in byte order. */
static void bytemap_init(void)
{
    tk_bytemap *m = &g_bytemap;
    for (int i = 0; i < 324; i++) m->rev[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = printable ? b : next++;
        char enc[4];
        int n = tk_utf8_encode((uint32_t)cp, enc);
        memcpy(m->utf8[b], enc, (size_t)n);
        m->len[b] = (uint8_t)n;
        m->rev[cp] = (int16_t)b;
    }
}

const tk_bytemap *tk_bytemap_get(void)
{
    pthread_once(&g_bytemap_once, bytemap_init);
    return &g_bytemap;
}

void tk_pre_free(tk_pre *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nkids; i++) tk_pre_free(p->kids[i]);
    free(p->kids);
    tk_regex_free(&p->re);
    free(p);
}

static rf_status parse_behavior(json_t *j, tk_split_behavior *out, rf_err *err)
{
    static const struct { const char *name; tk_split_behavior b; } names[] = {
        {"Removed", TK_SPLIT_REMOVED},           {"Isolated", TK_SPLIT_ISOLATED},
        {"MergedWithPrevious", TK_SPLIT_MERGED_PREV}, {"MergedWithNext", TK_SPLIT_MERGED_NEXT},
        {"Contiguous", TK_SPLIT_CONTIGUOUS},
    };
    const char *s = tk_json_str(j, "behavior");
    if (!s) return rf_err_set(err, RF_ERR_FORMAT, "Split pre-tokenizer without \"behavior\"");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].b;
            return RF_OK;
        }
    return rf_err_set(err, RF_ERR_UNSUPPORTED, "unsupported Split behavior \"%s\"", s);
}

static rf_status parse_split(json_t *j, tk_pre *p, rf_err *err)
{
    p->kind = TK_PRE_SPLIT;
    rf_status st = parse_behavior(j, &p->behavior, err);
    if (st) return st;
    p->invert = tk_json_bool(j, "invert", 0);
    if (p->invert < 0) return rf_err_set(err, RF_ERR_FORMAT, "Split pre-tokenizer: invert must be a boolean");
    json_t *pat = json_object_get(j, "pattern");
    json_t *s = json_object_get(pat, "String");
    if (json_is_string(s) && json_string_length(s) == 0) return RF_OK; /* HF: an empty string never matches */
    st = tk_pattern_parse(pat, "Split pre-tokenizer", &p->re, NULL, NULL, err);
    p->has_re = !st;
    return st;
}

static rf_status parse_metaspace(json_t *j, tk_pre *p, rf_err *err)
{
    p->kind = TK_PRE_METASPACE;
    const char *r = tk_json_str(j, "replacement");
    if (!r) return rf_err_set(err, RF_ERR_FORMAT, "Metaspace pre-tokenizer without \"replacement\"");
    size_t rl = strlen(r);
    int n = tk_utf8_len((const unsigned char *)r, rl);
    if (!n || (size_t)n != rl) return rf_err_set(err, RF_ERR_FORMAT, "Metaspace replacement must be one character");
    memcpy(p->repl, r, rl);
    p->repl_len = n;
    const char *scheme = tk_json_str(j, "prepend_scheme");
    if (scheme) {
        if (!strcmp(scheme, "always")) p->prepend_scheme = TK_PREPEND_ALWAYS;
        else if (!strcmp(scheme, "first")) p->prepend_scheme = TK_PREPEND_FIRST;
        else if (!strcmp(scheme, "never")) p->prepend_scheme = TK_PREPEND_NEVER;
        else return rf_err_set(err, RF_ERR_UNSUPPORTED, "unsupported Metaspace prepend_scheme \"%s\"", scheme);
    } else {
        int aps = tk_json_bool(j, "add_prefix_space", 1);
        if (aps < 0) return rf_err_set(err, RF_ERR_FORMAT, "Metaspace add_prefix_space must be a boolean");
        p->prepend_scheme = aps ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
    }
    p->split = tk_json_bool(j, "split", 1);
    if (p->split < 0) return rf_err_set(err, RF_ERR_FORMAT, "Metaspace split must be a boolean");
    return RF_OK;
}

rf_status tk_pre_parse(json_t *j, tk_pre **out, rf_err *err)
{
    *out = NULL;
    const char *type = tk_json_str(j, "type");
    if (!type) return rf_err_set(err, RF_ERR_FORMAT, "pre-tokenizer without a \"type\"");
    tk_pre *p = calloc(1, sizeof *p);
    if (!p) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status st = RF_OK;
    if (!strcmp(type, "Sequence")) {
        p->kind = TK_PRE_SEQUENCE;
        json_t *arr = json_object_get(j, "pretokenizers");
        if (!json_is_array(arr)) st = rf_err_set(err, RF_ERR_FORMAT, "Sequence pre-tokenizer without \"pretokenizers\"");
        else if (!(p->kids = calloc(json_array_size(arr) + 1, sizeof *p->kids))) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !st && i < json_array_size(arr); i++) {
            st = tk_pre_parse(json_array_get(arr, i), &p->kids[i], err);
            if (!st) p->nkids++;
        }
    } else if (!strcmp(type, "Split")) {
        st = parse_split(j, p, err);
    } else if (!strcmp(type, "ByteLevel")) {
        p->kind = TK_PRE_BYTELEVEL;
        p->add_prefix_space = tk_json_bool(j, "add_prefix_space", 1);
        int use_regex = tk_json_bool(j, "use_regex", 1);
        if (p->add_prefix_space < 0 || use_regex < 0) st = rf_err_set(err, RF_ERR_FORMAT, "ByteLevel flags must be booleans");
        else if (use_regex) {
            st = tk_regex_compile(&p->re, gpt2_pattern, strlen(gpt2_pattern), 0, err);
            p->has_re = !st;
        }
        tk_bytemap_get();
    } else if (!strcmp(type, "Metaspace")) {
        st = parse_metaspace(j, p, err);
    } else if (!strcmp(type, "Digits")) {
        /* HF splits on char::is_numeric: isolated digits or contiguous runs */
        int individual = tk_json_bool(j, "individual_digits", 0);
        p->kind = TK_PRE_SPLIT;
        p->behavior = individual > 0 ? TK_SPLIT_ISOLATED : TK_SPLIT_CONTIGUOUS;
        st = tk_regex_compile(&p->re, "\\p{N}", 5, 0, err);
        p->has_re = !st;
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->kind = TK_PRE_SPLIT;
        p->behavior = TK_SPLIT_REMOVED;
        st = tk_regex_compile(&p->re, "\\s", 2, 0, err);
        p->has_re = !st;
    } else {
        st = rf_err_set(err, RF_ERR_UNSUPPORTED, "unsupported pre-tokenizer type \"%s\"", type);
    }
    if (st) {
        tk_pre_free(p);
        return st;
    }
    *out = p;
    return RF_OK;
}

/* ------------------------------------------------------------------ applying */

static rf_status nomem(rf_err *err) { return rf_err_set(err, RF_ERR_NOMEM, "out of memory while pre-tokenizing"); }

/* HF's SplitDelimiterBehavior applied to the segments of one piece; empty results dropped. */
static rf_status emit_split(tk_split_behavior b, const char *s, const tk_span *in, tk_segs *segs, tk_pieces *out, rf_err *err)
{
    size_t n = 0;
    tk_seg *v = segs->v;
    int prev_match = 0;
    switch (b) {
    case TK_SPLIT_REMOVED:
        for (size_t i = 0; i < segs->n; i++)
            if (!v[i].is_match) v[n++] = v[i];
        break;
    case TK_SPLIT_ISOLATED: n = segs->n; break;
    case TK_SPLIT_MERGED_PREV:
        for (size_t i = 0; i < segs->n; i++) {
            tk_seg g = v[i];
            if (g.is_match && !prev_match && n) v[n - 1].end = g.end;
            else v[n++] = g;
            prev_match = g.is_match;
        }
        break;
    case TK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < segs->n; i++) {
            tk_seg g = v[i];
            if (g.is_match == prev_match && n) v[n - 1].end = g.end;
            else v[n++] = g;
            prev_match = g.is_match;
        }
        break;
    case TK_SPLIT_MERGED_NEXT: {
        /* walk backwards, merging a match into the following piece; results stay in order at the tail */
        size_t w = segs->n;
        for (size_t i = segs->n; i-- > 0;) {
            tk_seg g = v[i];
            if (g.is_match && !prev_match && w < segs->n) v[w].start = g.start;
            else v[--w] = g;
            prev_match = g.is_match;
        }
        memmove(v, v + w, (segs->n - w) * sizeof *v);
        n = segs->n - w;
        break;
    }
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].end == v[i].start) continue;
        if (!tk_pieces_add(out, s + v[i].start, v[i].end - v[i].start, in->at_start && v[i].start == 0)) return nomem(err);
    }
    return RF_OK;
}

static rf_status split_piece(const tk_pre *p, tk_match *m, const char *s, const tk_span *in, tk_segs *segs, tk_pieces *out,
                             tk_split_behavior b, int invert, rf_err *err)
{
    if (!p->has_re) return tk_pieces_add(out, s, in->len, in->at_start) ? RF_OK : nomem(err);
    rf_status st = tk_regex_segments(&p->re, m, s, in->len, segs, err);
    if (st) return st;
    if (invert)
        for (size_t i = 0; i < segs->n; i++) segs->v[i].is_match = !segs->v[i].is_match;
    return emit_split(b, s, in, segs, out, err);
}

static rf_status byte_level(const tk_pre *p, tk_match *m, const char *s, const tk_span *in, tk_segs *segs, tk_pieces *out,
                            tk_buf *tmp, rf_err *err)
{
    const tk_bytemap *bm = tk_bytemap_get();
    tmp->n = 0;
    if (p->add_prefix_space && (in->len == 0 || s[0] != ' ') && !tk_buf_put(tmp, " ", 1)) return nomem(err);
    if (!tk_buf_put(tmp, s, in->len)) return nomem(err);
    tk_span whole = {0, tmp->n, in->at_start};
    size_t first = out->n;
    rf_status st = split_piece(p, m, tmp->p, &whole, segs, out, TK_SPLIT_ISOLATED, 0, err);
    if (st) return st;
    /* map the bytes of the new pieces in place of their raw text */
    for (size_t i = first; i < out->n; i++) {
        tk_span *sp = &out->v[i];
        size_t need = 0;
        for (size_t k = 0; k < sp->len; k++) need += bm->len[(unsigned char)out->text.p[sp->off + k]];
        if (!tk_buf_reserve(&out->text, need)) return nomem(err);
        size_t off = out->text.n;
        for (size_t k = 0; k < sp->len; k++) {
            unsigned char c = (unsigned char)out->text.p[sp->off + k];
            memcpy(out->text.p + out->text.n, bm->utf8[c], bm->len[c]);
            out->text.n += bm->len[c];
        }
        sp->off = off;
        sp->len = need;
    }
    return RF_OK;
}

static rf_status metaspace(const tk_pre *p, const char *s, const tk_span *in, tk_pieces *out, tk_buf *tmp, rf_err *err)
{
    tmp->n = 0;
    if (!tk_buf_reserve(tmp, in->len + 4)) return nomem(err);
    for (size_t i = 0; i < in->len; i++) {
        int ok = s[i] == ' ' ? tk_buf_put(tmp, p->repl, (size_t)p->repl_len) : tk_buf_put(tmp, s + i, 1);
        if (!ok) return nomem(err);
    }
    int starts = tmp->n >= (size_t)p->repl_len && !memcmp(tmp->p, p->repl, (size_t)p->repl_len);
    int prepend = !starts && (p->prepend_scheme == TK_PREPEND_ALWAYS || (p->prepend_scheme == TK_PREPEND_FIRST && in->at_start));
    if (prepend) {
        if (!tk_buf_reserve(tmp, (size_t)p->repl_len)) return nomem(err);
        memmove(tmp->p + p->repl_len, tmp->p, tmp->n);
        memcpy(tmp->p, p->repl, (size_t)p->repl_len);
        tmp->n += (size_t)p->repl_len;
    }
    if (!p->split) return tmp->n ? (tk_pieces_add(out, tmp->p, tmp->n, in->at_start) ? RF_OK : nomem(err)) : RF_OK;
    /* MergedWithNext on the replacement: every replacement character starts a new piece */
    size_t start = 0, rl = (size_t)p->repl_len;
    for (size_t i = 0; i + rl <= tmp->n; i++) {
        if (i > start && !memcmp(tmp->p + i, p->repl, rl)) {
            if (!tk_pieces_add(out, tmp->p + start, i - start, in->at_start && start == 0)) return nomem(err);
            start = i;
        }
    }
    if (tmp->n > start && !tk_pieces_add(out, tmp->p + start, tmp->n - start, in->at_start && start == 0)) return nomem(err);
    return RF_OK;
}

static rf_status apply_one(const tk_pre *p, tk_match *m, const tk_pieces *in, tk_pieces *out, tk_segs *segs, tk_buf *tmp,
                           rf_err *err)
{
    tk_pieces_clear(out);
    if (p->kind == TK_PRE_SEQUENCE) {
        tk_pieces a = {0}, b = {0};
        rf_status st = RF_OK;
        const tk_pieces *cur = in;
        for (size_t i = 0; !st && i < p->nkids; i++) {
            tk_pieces *dst = (cur == &a) ? &b : &a;
            st = apply_one(p->kids[i], m, cur, dst, segs, tmp, err);
            cur = dst;
        }
        for (size_t i = 0; !st && i < cur->n; i++)
            if (!tk_pieces_add(out, cur->text.p + cur->v[i].off, cur->v[i].len, cur->v[i].at_start)) st = nomem(err);
        tk_pieces_free(&a);
        tk_pieces_free(&b);
        return st;
    }
    for (size_t i = 0; i < in->n; i++) {
        const tk_span *sp = &in->v[i];
        const char *s = in->text.p + sp->off;
        tk_span local = {0, sp->len, sp->at_start};
        rf_status st;
        switch (p->kind) {
        case TK_PRE_SPLIT: st = split_piece(p, m, s, &local, segs, out, p->behavior, p->invert, err); break;
        case TK_PRE_BYTELEVEL: st = byte_level(p, m, s, &local, segs, out, tmp, err); break;
        case TK_PRE_METASPACE: st = metaspace(p, s, &local, out, tmp, err); break;
        default: st = rf_err_set(err, RF_ERR_INTERNAL, "unknown pre-tokenizer kind");
        }
        if (st) return st;
    }
    return RF_OK;
}

rf_status tk_pre_apply(const tk_pre *p, tk_match *m, const tk_pieces *in, tk_pieces *out, tk_segs *segs, rf_err *err)
{
    tk_buf tmp = {0};
    rf_status st = apply_one(p, m, in, out, segs, &tmp, err);
    tk_buf_free(&tmp);
    return st;
}
