/* MLX checkpoint pieces shared by quantize.c and mlx.c; not part of the public API. */
#ifndef RF_MLX_INTERNAL_H
#define RF_MLX_INTERNAL_H

#include "common/internal.h"

#include <jansson.h>

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
 * save_config does (top-level keys sorted, indent 4). CFG (may be NULL): the parsed source config,
 * whose keys mlx-lm needs in its older spelling are added (rf_mlx_config; a config mlx-lm cannot
 * load is refused). */
rf_status rf_mlx_write_config(const char *src_dir, const char *dst_path, const rf_config *cfg_parsed, const rf_mlx_qmod *mods,
                              size_t n, rf_dtype torch_dtype, rf_err *err);

/* Write a whole file: create (never overwrite), write, fsync, close; errors name PATH
 * (ENOSPC/EFBIG: RF_ERR_NOSPACE). */
rf_status rf_mlx_write_file(const char *path, const void *data, size_t len, rf_err *err);

/* rf_mlx_quant_read on a config.json text and an open checkpoint (LABEL names the config in
 * messages); the fuzz target's entry point. */
rf_status rf_mlx_quant_from_parts(const char *config_text, size_t len, const rf_st *st, const char *label,
                                  rf_mlx_quant **out, rf_err *err);

/* config.json "quantization" read exactly as mlx-lm's loader reads it (mlx_lm/utils.py
 * load_model, mlx/nn/layers/quantized.py; details in mlx.c): the one reader of the engine
 * (rf_engine_open) and of rf_mlx_quant_read (inspect). A config without "quantization" gives a
 * reader under which no module is quantized. Refused when loading: "quantization" that is not an
 * object or lacks bits/group_size keys (mlx-lm needs both), and a quantization_config in a format
 * mlx-lm converts (awq, gptq, mxfp4, ...). */
typedef struct rf_mlx_qcfg rf_mlx_qcfg;
rf_status rf_mlx_qcfg_from_json(json_t *config, const char *label, rf_mlx_qcfg **out, rf_err *err);
/* DIR/config.json. */
rf_status rf_mlx_qcfg_load(const char *dir, rf_mlx_qcfg **out, rf_err *err);
void rf_mlx_qcfg_free(rf_mlx_qcfg *q);
/* 1 when config.json has "quantization". */
int rf_mlx_qcfg_present(const rf_mlx_qcfg *q);
/* bits/gs of module MODULE (0, 0: not quantized); HAS_SCALES: "<MODULE>.scales" is among the
 * weights. Errors name the file and module: a mode other than affine (RF_ERR_UNSUPPORTED), values
 * that are not an MLX affine config, an entry of the wrong type, a module quantized by the config
 * without .scales or with .scales but left unquantized (RF_ERR_FORMAT). */
rf_status rf_mlx_qcfg_module(const rf_mlx_qcfg *q, const char *module, int has_scales, int *bits, int *gs, rf_err *err);
/* The global setting with its defaults; 0, 0 when absent or not a valid affine config. */
void rf_mlx_qcfg_default(const rf_mlx_qcfg *q, int *bits, int *gs);

/* Job and wave sizes of the writer (source bytes per job, arena bytes per wave): tunable only so
 * that tests can exercise many row blocks and waves on small models. */
extern uint64_t rf_qz_job_bytes, rf_qz_wave_bytes;

#endif
