/* A GGUF file as the engine's weights (gguf_weights.c): its config and, by decoder slot (the
 * catalogue's rf_slot), weight views over the mapped tensors: the engine loads a GGUF through the
 * same slots as a checkpoint. */
#ifndef RF_GGUF_WEIGHTS_H
#define RF_GGUF_WEIGHTS_H

#include "arch/family.h"
#include "engine/engine_internal.h"

typedef struct rf_ggm rf_ggm;
/* 1 if PATH is a file that starts with the GGUF magic. */
int rf_ggm_is_gguf(const char *path);
rf_status rf_ggm_open(const char *path, rf_ggm **out, rf_err *err);
void rf_ggm_free(rf_ggm *m);
const rf_config *rf_ggm_config(const rf_ggm *m);
/* 1 if the file has the weight of slot S of LAYER (-1: outside the stack). */
int rf_ggm_has(const rf_ggm *m, int layer, rf_slot s);
/* The weight of slot S as NEXP stacked experts (0: one matrix) of OUT x IN, shapes checked;
 * *bias (may be NULL) gets the slot's bias as malloc'd float32 when the file has one, else NULL. */
rf_status rf_ggm_matrix(const rf_ggm *m, int layer, rf_slot s, int nexp, uint64_t out, uint64_t in, rf_wmat *w,
                        float **bias, rf_err *err);
/* A 1-D slot (norm weights) of N elements as malloc'd float32; *out NULL when absent. */
rf_status rf_ggm_vec(const rf_ggm *m, int layer, rf_slot s, uint64_t n, float **out, rf_err *err);

#endif
