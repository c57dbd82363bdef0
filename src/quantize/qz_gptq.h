/* quantize --mode gptq (qz_gptq.c): the members GPTQ applies to and their factors per wave. Internal. */
#ifndef RF_QZ_GPTQ_H
#define RF_QZ_GPTQ_H

#include "common/internal.h"

typedef struct qz_gptq qz_gptq;
/* Factors of statistics S, damping DAMP, at most BUDGET bytes of factors held at once (at least one). */
rf_status qz_gptq_create(const rf_stats *s, double damp, uint64_t budget, qz_gptq **out, rf_err *err);
void qz_gptq_free(qz_gptq *g);
/* The record GPTQ quantizes member MEMBER of U with, or -1: round to nearest (G NULL, the embedding,
 * a member without statistics). */
int64_t qz_gptq_record(const qz_gptq *g, const rf_unit *u, int member);
/* Waves: begin, then add the record of each job in order; 0 when its factor would take the wave's
 * factors past the budget (the wave ends before that job). Prepare makes the wave's factors and drops
 * the rest. */
void qz_gptq_wave_begin(qz_gptq *g);
int qz_gptq_wave_add(qz_gptq *g, const rf_unit *u, int member, int64_t rec);
rf_status qz_gptq_wave_prepare(qz_gptq *g, rf_pool *pool, rf_err *err);
const rf_gptq *qz_gptq_factor(const qz_gptq *g, int64_t rec);
uint64_t qz_gptq_factors_made(const qz_gptq *g);
uint64_t qz_gptq_peak_bytes(const qz_gptq *g);

#endif
