/* A GGUF file as the engine's weights: its rf_config (io/gguf_arch.c) and, by Hugging Face name,
 * weight views over the mmapped tensors. GGUF names are mapped back through the family table, so
 * the engine asks for "model.layers.3.self_attn.q_proj" (or an MLX switch_mlp path for stacked
 * experts) whatever file it runs. F32/F16/BF16 tensors become plain dtype views, block-quantized
 * ones gtype views (matmul_ggml.c). */
#include "engine/gguf_weights.h"
#include "io/gguf_arch.h"
#include "io/safetensors_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rf_ggm {
    rf_gguf *g;
    rf_config cfg;
    const rf_gguf_family *fam;
    rf_nametab hf;  /* Hugging Face name -> tensor index; names owned below */
    char **names;
    uint64_t nnames;
};

int rf_ggm_is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    char m[4] = {0};
    size_t n = f ? fread(m, 1, 4, f) : 0;
    if (f) fclose(f);
    return n == 4 && !memcmp(m, "GGUF", 4);
}

void rf_ggm_free(rf_ggm *m)
{
    if (!m) return;
    for (uint64_t i = 0; i < m->nnames; i++) free(m->names[i]);
    free(m->names);
    rf_nametab_free(&m->hf);
    rf_gguf_close(m->g);
    free(m);
}

rf_status rf_ggm_open(const char *path, rf_ggm **out, rf_err *err)
{
    *out = NULL;
    rf_ggm *m = calloc(1, sizeof *m);
    if (!m) return rf_err_set(err, RF_ERR_NOMEM, "out of memory opening %s", path);
    rf_status s = rf_gguf_open(path, &m->g, err);
    if (!s) s = rf_gguf_config(m->g, &m->cfg, &m->fam, err);
    uint64_t nt = s ? 0 : rf_gguf_tensor_count(m->g);
    if (!s && !(m->names = calloc(nt ? nt : 1, sizeof *m->names))) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    for (uint64_t i = 0; i < nt && !s; i++) {
        const rf_gguf_tensor *t = rf_gguf_tensor_at(m->g, i);
        char hf[256];
        if (!rf_gguf_hf_name(m->fam, t->name, hf, sizeof hf)) continue; /* e.g. rope_freqs: refused by the config */
        if (!(m->names[m->nnames] = strdup(hf))) {
            s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
            break;
        }
        if (rf_nametab_put(&m->hf, m->names[m->nnames], i, NULL) < 0) s = rf_err_set(err, RF_ERR_NOMEM, "out of memory");
        m->nnames++;
    }
    if (!s && (m->cfg.head_dim % 2 || m->cfg.head_dim > 1024))
        s = rf_err_set(err, RF_ERR_UNSUPPORTED, "%s: head size %d", path, m->cfg.head_dim);
    if (s) {
        rf_ggm_free(m);
        return s;
    }
    *out = m;
    return RF_OK;
}

const rf_config *rf_ggm_config(const rf_ggm *m) { return &m->cfg; }
int rf_ggm_qk_permuted(const rf_ggm *m) { return m->fam->permute_qk; }

static const rf_gguf_tensor *find(const rf_ggm *m, const char *hf)
{
    uint64_t i;
    return rf_nametab_get(&m->hf, hf, &i) ? rf_gguf_tensor_at(m->g, i) : NULL;
}

int rf_ggm_has(const rf_ggm *m, const char *hf_name) { return find(m, hf_name) != NULL; }

static void ne_text(const rf_gguf_tensor *t, char *buf, size_t cap)
{
    int o = snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && o > 0 && (size_t)o < cap; d++)
        o += snprintf(buf + o, cap - (size_t)o, "%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
    if (o > 0 && (size_t)o < cap) snprintf(buf + o, cap - (size_t)o, "]");
}

rf_status rf_ggm_matrix(const rf_ggm *m, const char *module, int nexp, uint64_t out, uint64_t in, rf_wmat *w,
                        rf_err *err)
{
    char name[256], have[96];
    snprintf(name, sizeof name, "%s.weight", module);
    const rf_gguf_tensor *t = find(m, name);
    if (!t) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no tensor for %s", rf_gguf_path(m->g), name);
    int nd = nexp ? 3 : 2;
    if (t->ndim != nd || t->ne[0] != in || t->ne[1] != out || (nexp && t->ne[2] != (uint64_t)nexp)) {
        ne_text(t, have, sizeof have);
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s has ne %s, expected [%llu, %llu%s]", rf_gguf_path(m->g),
                          t->name, have, (unsigned long long)in, (unsigned long long)out, nexp ? ", E" : "");
    }
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
    return rf_wmat_check(w, t->name, err);
}

rf_status rf_ggm_vec(const rf_ggm *m, const char *hf_name, uint64_t n, float **out, rf_err *err)
{
    const rf_gguf_tensor *t = find(m, hf_name);
    if (!t) return rf_err_set(err, RF_ERR_NOT_FOUND, "%s: no tensor for %s", rf_gguf_path(m->g), hf_name);
    if (t->nelem != n || t->ne[0] != n)
        return rf_err_set(err, RF_ERR_FORMAT, "%s: tensor %s has %llu elements, expected %llu", rf_gguf_path(m->g),
                          t->name, (unsigned long long)t->nelem, (unsigned long long)n);
    if (!(*out = malloc(sizeof(float) * (size_t)(n ? n : 1)))) return rf_err_set(err, RF_ERR_NOMEM, "out of memory");
    rf_status s = rf_gdequant_row(t->type, t->data, n, *out, err);
    if (s) rf_err_prefix(err, "%s: tensor %s", rf_gguf_path(m->g), t->name);
    return s;
}
