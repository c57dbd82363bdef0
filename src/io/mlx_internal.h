/* MLX checkpoint pieces shared by quantize.c and mlx.c; not part of the public API. */
#ifndef RF_MLX_INTERNAL_H
#define RF_MLX_INTERNAL_H

#include "common/internal.h"

/* A quantized module of the output, for config.json. */
typedef struct rf_mlx_qmod {
    const char *module;  /* MLX module path (no ".weight") */
    int bits, gs;
    uint64_t nparams;
} rf_mlx_qmod;

/* The global default of config.json "quantization": the config used by the most modules
 * (ties: more parameters, then fewer bits, then smaller gs). N = 0 gives 0, 0. */
void rf_mlx_default_config(const rf_mlx_qmod *mods, size_t n, int *bits, int *gs);

/* Write DST_PATH: SRC_DIR/config.json with "quantization" and "quantization_config" (the
 * default plus one entry per module whose config differs; both keys removed when N = 0), and
 * "torch_dtype" set to TORCH_DTYPE unless that is RF_DT_INVALID. Formatted as mlx-lm's
 * save_config does (top-level keys sorted, indent 4). */
rf_status rf_mlx_write_config(const char *src_dir, const char *dst_path, const rf_mlx_qmod *mods, size_t n,
                              rf_dtype torch_dtype, rf_err *err);

/* Write a whole file: create (never overwrite), write, fsync, close; errors name PATH
 * (ENOSPC/EFBIG: RF_ERR_NOSPACE). */
rf_status rf_mlx_write_file(const char *path, const void *data, size_t len, rf_err *err);

/* rf_mlx_quant_read on a config.json text and an open checkpoint (LABEL names the config in
 * messages); the fuzz target's entry point. */
rf_status rf_mlx_quant_from_parts(const char *config_text, size_t len, const rf_st *st, const char *label,
                                  rf_mlx_quant **out, rf_err *err);

/* Job and wave sizes of the writer (source bytes per job, arena bytes per wave): tunable only so
 * that tests can exercise many row blocks and waves on small models. */
extern uint64_t rf_qz_job_bytes, rf_qz_wave_bytes;

#endif
