/* A GGUF file as the engine's weights: its rf_config (io/gguf_arch.c: the metadata parsed as the
 * checkpoint's config.json) and, by decoder slot, views over the mmapped tensors. llama.cpp names
 * a slot the same way in every architecture ramfit reads (blk.N.attn_q, blk.N.ffn_gate_exps, ...).
 * F32/F16/BF16 tensors become plain dtype views, block-quantized ones gtype views
 * (matmul_ggml.c). llama-family q/k rows stay in llama.cpp's interleaved order: the config asks for
 * interleaved rope on them (rf_gguf_config), which is the same model. */
#include "engine/gguf_weights.h"
#include "io/gguf_arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rf_ggm {
    rf_gguf *g;
    rf_config cfg;
};

/* llama.cpp's name of a slot (after "blk.N." inside the stack); NULL when it has none. */
static const char *slot_name(rf_slot s)
{
    switch (s) {
    case RF_SLOT_EMBED: return "token_embd";
    case RF_SLOT_LM_HEAD: return "output";
    case RF_SLOT_FINAL_NORM: return "output_norm";
    case RF_SLOT_ATTN_NORM: return "attn_norm";
    case RF_SLOT_MLP_NORM: return "ffn_norm";
    case RF_SLOT_Q_NORM: return "attn_q_norm";
    case RF_SLOT_K_NORM: return "attn_k_norm";
    case RF_SLOT_Q: return "attn_q";
    case RF_SLOT_K: return "attn_k";
    case RF_SLOT_V: return "attn_v";
    case RF_SLOT_O: return "attn_output";
    case RF_SLOT_GATE: return "ffn_gate";
    case RF_SLOT_UP: return "ffn_up";
    case RF_SLOT_DOWN: return "ffn_down";
    case RF_SLOT_ROUTER: return "ffn_gate_inp";
    case RF_SLOT_X_GATE: return "ffn_gate_exps";
    case RF_SLOT_X_UP: return "ffn_up_exps";
    case RF_SLOT_X_DOWN: return "ffn_down_exps";
    default: return NULL;
    }
}

static const rf_gguf_tensor *find(const rf_ggm *m, int layer, rf_slot s, const char *suffix)
{
    const char *n = slot_name(s);
    if (!n) return NULL;
    char name[128];
    if (layer >= 0) snprintf(name, sizeof name, "blk.%d.%s.%s", layer, n, suffix);
    else snprintf(name, sizeof name, "%s.%s", n, suffix);
    return rf_gguf_find_tensor(m->g, name);
}

int rf_ggm_is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    size_t n = f ? fread(magic, 1, 4, f) : 0;
    if (f) fclose(f);
    return n == 4 && !memcmp(magic, "GGUF", 4);
}

void rf_ggm_free(rf_ggm *m)
{
    if (!m) return;
    rf_gguf_close(m->g);
    free(m);
}

rf_status rf_ggm_open(const char *path, rf_ggm **out, rf_err *err)
{
    *out = NULL;
    rf_ggm *m = calloc(1, sizeof *m);
    if (!m) return rf_err_set(err, RF_ERR_NOMEM, "out of memory opening %s", path);
    rf_status s = rf_gguf_open(path, &m->g, err);
    if (!s) s = rf_gguf_config(m->g, &m->cfg, NULL, err);
    if (s) {
        rf_ggm_free(m);
        return s;
    }
    *out = m;
    return RF_OK;
}

const rf_config *rf_ggm_config(const rf_ggm *m) { return &m->cfg; }
int rf_ggm_has(const rf_ggm *m, int layer, rf_slot s) { return find(m, layer, s, "weight") != NULL; }

static rf_status to_f32(const rf_ggm *m, const rf_gguf_tensor *t, uint64_t n, float **out, rf_err *err)
{
    *out = NULL;
    if (t->nelem != n || t->ne[0] != n)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s has %llu elements, expected %llu", rf_gguf_path(m->g),
                          t->name, (unsigned long long)t->nelem, (unsigned long long)n);
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!v) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status s = rf_gdequant_row(t->type, t->data, n, v, err);
    if (s) {
        free(v);
        return rf_err_prefix(err, "%s: tensor %s", rf_gguf_path(m->g), t->name);
    }
    *out = v;
    return RF_OK;
}

rf_status rf_ggm_vec(const rf_ggm *m, int layer, rf_slot s, uint64_t n, float **out, rf_err *err)
{
    const rf_gguf_tensor *t = find(m, layer, s, "weight");
    *out = NULL;
    return t ? to_f32(m, t, n, out, err) : RF_OK;
}

rf_status rf_ggm_matrix(const rf_ggm *m, int layer, rf_slot s, int nexp, uint64_t out, uint64_t in, rf_wmat *w,
                        float **bias, rf_err *err)
{
    if (bias) *bias = NULL;
    const rf_gguf_tensor *t = find(m, layer, s, "weight");
    if (!t) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no %s weight for layer %d", rf_gguf_path(m->g), rf_slot_name(s), layer);
    int nd = nexp ? 3 : 2;
    if (t->ndim != nd || t->ne[0] != in || t->ne[1] != out || (nexp && t->ne[2] != (uint64_t)nexp))
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s has ne [%llu, %llu, %llu] (%d-D), expected [%llu, %llu%s]",
                          rf_gguf_path(m->g), t->name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                          (unsigned long long)t->ne[2], t->ndim, (unsigned long long)in, (unsigned long long)out,
                          nexp ? ", experts" : "");
    memset(w, 0, sizeof *w);
    w->rows = out * (uint64_t)(nexp ? nexp : 1);
    w->cols = in;
    w->data = t->data;
    switch (t->type) {
    case RF_GT_F32: w->dtype = RF_DT_F32; break;
    case RF_GT_F16: w->dtype = RF_DT_F16; break;
    case RF_GT_BF16: w->dtype = RF_DT_BF16; break;
    default: w->dtype = RF_DT_U8; w->gtype = t->type; break;
    }
    rf_status st = rf_wmat_check(w, t->name, err);
    const rf_gguf_tensor *b = bias ? find(m, layer, s, "bias") : NULL;
    if (!st && b) st = to_f32(m, b, out * (uint64_t)(nexp ? nexp : 1), bias, err);
    return st;
}
