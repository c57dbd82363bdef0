/* Activation-weighted quantization error (analyse --stats; llama.cpp's importance-matrix idea): the
 * error of a candidate counted in the units of the layer's output. For y = W x the expected squared
 * output error is E||(W - W') x||^2 = sum_ij sum_k (W - W')_ij (W - W')_ik E[x_j x_k]; keeping the
 * diagonal of E[x x^T] gives sum_ij (W - W')_ij^2 E[x_j^2]: each weight's squared error times the
 * second moment of its input column. The unit's D is that over the same sum of W_ij^2 E[x_j^2] (the
 * output's energy), so it stays a relative error like the data-free one, and the planner takes it
 * unchanged.
 *
 * An expert bank's members are weighted by the sum of x_j^2 over the tokens routed to each (E[x_j^2]
 * times its tokens): the bank's error is its output error over all tokens. An expert no calibration
 * token reached gets the bank's mean: the text says nothing about it, so it counts as an average one. */
#include "calib/calib_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rf_status calib_unit_weights(const rf_stats *s, const rf_unit *u, double **out, rf_err *err)
{
    *out = NULL;
    if (!s || !u->n_members || !u->cols) return RF_OK;
    uint64_t cols = u->cols, n = (uint64_t)u->n_members * cols;
    double *w = calloc(n, sizeof *w);
    uint8_t *have = calloc((size_t)u->n_members, 1);
    if (!w || !have) {
        free(w);
        free(have);
        return rf_err_set(err, RF_ERR_NOMEM, "out of memory for the weights of %s", u->name);
    }
    int seen = 0;
    double total = 0;
    for (int k = 0; k < u->n_members; k++) {
        const double *sq;
        uint64_t tok;
        rf_err e2;
        rf_status st = rf_stats_moments(s, u->name, k, &sq, &tok, NULL, &e2);
        if (st == RF_ERR_NOT_FOUND) continue;
        if (st) {
            free(w);
            free(have);
            if (err) *err = e2;
            return st;
        }
        for (uint64_t j = 0; j < cols; j++) total += w[k * cols + j] = sq[j] * (double)tok;
        have[k] = 1;
        seen++;
    }
    if (!seen || !(total > 0)) { /* no statistics for this unit (an untied embedding): data-free */
        free(w);
        free(have);
        return RF_OK;
    }
    if (seen < u->n_members) {
        for (int k = 0; k < u->n_members; k++) {
            if (have[k]) continue;
            for (uint64_t j = 0; j < cols; j++) {
                double m = 0;
                for (int i = 0; i < u->n_members; i++) m += have[i] ? w[(uint64_t)i * cols + j] : 0;
                w[(uint64_t)k * cols + j] = m / seen;
            }
        }
        total = 0;
        for (uint64_t i = 0; i < n; i++) total += w[i];
    }
    /* mean 1: the numbers stay in a comfortable range (sums over many tokens) */
    double scale = (double)n / total;
    for (uint64_t i = 0; i < n; i++) w[i] *= scale;
    free(have);
    *out = w;
    return RF_OK;
}

rf_status calib_weighted_errors(rf_dtype dt, const void *w, uint64_t rows, uint64_t cols, unsigned cfgs, rf_qmode mode,
                                rf_dtype sd, const double *colw, rf_qerr out[RF_QCFG_N], double *wssq, rf_err *err)
{
    uint64_t n = rows * cols;
    float *x = malloc(n * sizeof *x), *dq = malloc(n * sizeof *dq);
    uint32_t *packed = malloc(n + 4); /* 8 bits at most: n bytes */
    void *sc = malloc(n / 32 * sizeof(float) + 4), *bi = malloc(n / 32 * sizeof(float) + 4);
    rf_status st = RF_OK;
    if (!x || !dq || !packed || !sc || !bi) st = rf_err_set(err, RF_ERR_NOMEM, "out of memory (weighted error)");
    if (!st) st = rf_convert_to_f32(dt, w, x, n, err);
    double ss = 0;
    for (uint64_t r = 0; !st && r < rows; r++)
        for (uint64_t j = 0; j < cols; j++) ss += (double)x[r * cols + j] * x[r * cols + j] * colw[j];
    if (wssq) *wssq = ss;
    for (int c = 0; !st && c < RF_QCFG_N; c++) {
        if (!(cfgs >> c & 1)) continue;
        int bits = rf_qbits[c / RF_QGS_N], gs = rf_qgs[c % RF_QGS_N];
        st = rf_quant_quantize(dt, w, rows, cols, bits, gs, mode, sd, packed, sc, bi, err);
        if (!st) st = rf_quant_dequantize(packed, sc, bi, sd, rows, cols, bits, gs, dq, err);
        double e = 0;
        float em = 0;
        for (uint64_t r = 0; !st && r < rows; r++)
            for (uint64_t j = 0; j < cols; j++) {
                float d = x[r * cols + j] - dq[r * cols + j];
                e += (double)d * d * colw[j];
                em = fabsf(d) > em ? fabsf(d) : em;
            }
        out[c] = (rf_qerr){e, ss, (double)em};
    }
    free(x);
    free(dq);
    free(packed);
    free(sc);
    free(bi);
    return st;
}
