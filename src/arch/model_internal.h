/* Internals of the model catalogue shared with the analysis, the writers, the engine and the fuzz
 * target; not part of the public API. */
#ifndef RF_MODEL_INTERNAL_H
#define RF_MODEL_INTERNAL_H

#include "arch/family.h"

/* Build a catalogue from a parsed config and an open checkpoint, which it takes over (closed on
 * failure too). LABEL stands for the model directory in rf_model_dir(). */
rf_status rf_model_from_parts(const char *label, const rf_config *cfg, rf_st *st, rf_model **out, rf_err *err);

/* How one member matrix of a unit (rows x cols: out x in) lies in its source tensor, seen as a
 * 2-D [srows, scols] matrix (all leading axes folded into the rows):
 *   element (r, c) = src[r0 + r][c0 + c], or src[r0 + c][c0 + r] when transposed.
 * FP8 sources (F8_E4M3) carry their float32 block scales: the value is q * scale[R / br][C / bc]
 * at source coordinates (R, C). */
typedef struct rf_mview {
    const rf_tensor *t;
    const rf_tensor *scale;  /* FP8 weight_scale_inv, else NULL */
    uint32_t br, bc;         /* FP8 block */
    uint64_t srows, scols;   /* the source as a matrix */
    uint64_t r0, c0;
    uint64_t rows, cols;
    int transposed;
} rf_mview;

/* The dtype a view reads as without rounding: the tensor's own for F32/F16/BF16, F32 for FP8. */
rf_dtype rf_view_dtype(const rf_mview *v);
/* Row r0's first element in the mapped source when rows [r0, r0 + n) are stored as they are
 * (plain, untransposed, whole source rows, not FP8), else NULL. */
const void *rf_view_direct(const rf_mview *v, uint64_t r0);
/* Rows [r0, r0 + n) of the member into OUT (n * cols elements of DT: F32, F16 or BF16). Exact
 * when DT is rf_view_dtype(v); converted (round to nearest even) otherwise. */
rf_status rf_view_read(const rf_mview *v, uint64_t r0, uint64_t n, rf_dtype dt, void *out, rf_err *err);

const rf_family *rf_model_family(const rf_model *m);
/* The n_members views of unit U. */
const rf_mview *rf_model_unit_views(const rf_model *m, uint64_t u);
/* The catalogue by slot (LAYER -1: the top level): the unit, a vector tensor (norms, router
 * bias) and the .bias of the slot's module, or NULL. */
const rf_unit *rf_model_slot_unit(const rf_model *m, int layer, rf_slot s);
const rf_tensor *rf_model_slot_vector(const rf_model *m, int layer, rf_slot s);
const rf_tensor *rf_model_slot_bias(const rf_model *m, int layer, rf_slot s);
/* Index of the unit (for writers: units are emitted where their first source tensor is). */
int64_t rf_model_unit_index(const rf_model *m, const rf_unit *u);
/* The first source tensor (catalogue index) of unit U. */
uint64_t rf_model_unit_first_tensor(const rf_model *m, uint64_t u);
/* Whether mlx-lm quantizes the module of unit U at all (some families keep raw parameters). */
int rf_model_unit_mlx_quantizable(const rf_model *m, uint64_t u);

#endif
