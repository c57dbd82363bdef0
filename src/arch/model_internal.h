/* Internals of the model catalogue shared with its fuzz target; not part of the public API. */
#ifndef RF_MODEL_INTERNAL_H
#define RF_MODEL_INTERNAL_H

#include "common/internal.h"

/* Build a catalogue from a parsed config and an open checkpoint, which it takes over (closed on
 * failure too). LABEL stands for the model directory in rf_model_dir(). */
rf_status rf_model_from_parts(const char *label, const rf_config *cfg, rf_st *st, rf_model **out, rf_err *err);

#endif
