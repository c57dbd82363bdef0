/* A GGUF file as the engine's weights (gguf_weights.c): config and weight views by Hugging Face
 * name, so the engine's loader reads GGUF through the same names as safetensors checkpoints. */
#ifndef RF_GGUF_WEIGHTS_H
#define RF_GGUF_WEIGHTS_H

#include "engine/engine_internal.h"

typedef struct rf_ggm rf_ggm;
/* 1 if PATH is a file that starts with the GGUF magic. */
int rf_ggm_is_gguf(const char *path);
rf_status rf_ggm_open(const char *path, rf_ggm **out, rf_err *err);
void rf_ggm_free(rf_ggm *m);
const rf_config *rf_ggm_config(const rf_ggm *m);
/* 1 when q/k rows are in llama.cpp's interleaved order (rf_ggml_unpermute_heads after the product). */
int rf_ggm_qk_permuted(const rf_ggm *m);
int rf_ggm_has(const rf_ggm *m, const char *hf_name);
/* MODULE.weight as NEXP stacked experts (0: a matrix) of OUT x IN; shapes checked. */
rf_status rf_ggm_matrix(const rf_ggm *m, const char *module, int nexp, uint64_t out, uint64_t in, rf_wmat *w,
                        rf_err *err);
/* A 1-D tensor of N elements as float32 (owned by the caller). */
rf_status rf_ggm_vec(const rf_ggm *m, const char *hf_name, uint64_t n, float **out, rf_err *err);

#endif
