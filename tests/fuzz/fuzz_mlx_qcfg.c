/* libFuzzer target for config.json's "quantization" block as the engine and inspect read it
 * (rf_mlx_qcfg_*, io/mlx.c): the input is a config.json text. Every key of the block and a few
 * fixed module paths are resolved with and without a .scales tensor; a resolution must be an MLX
 * affine config (or none) that agrees with the tensors, and a failure must say why. */
#include "io/json_internal.h"
#include "io/mlx_internal.h"
#include "plan/plan_internal.h"

#include <stdlib.h>
#include <string.h>

static void resolve(const rf_mlx_qcfg *q, const char *module)
{
    for (int has = 0; has < 2; has++) {
        rf_err err = {0};
        int bits = -1, gs = -1;
        rf_status s = rf_mlx_qcfg_module(q, module, has, &bits, &gs, &err);
        if (s) {
            if (!err.msg[0] || err.code != s) abort();
            continue;
        }
        if ((bits == 0) != (gs == 0)) abort();
        if (bits && rf_cfg_index(bits, gs) < 0) abort();
        if ((bits != 0) != has) abort(); /* quantized exactly when the .scales are there */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *root = NULL;
    rf_err err;
    if (rf_json_parse((const char *)data, size, "fuzz/config.json", 0, &root, &err) != RF_OK) return 0;
    rf_mlx_qcfg *q = NULL;
    if (rf_mlx_qcfg_from_json(root, "fuzz/config.json", &q, &err) == RF_OK) {
        static const char *const fixed[] = {"model.embed_tokens", "lm_head", "model.layers.0.self_attn.q_proj",
                                            "bits", "group_size", "mode", ""};
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) resolve(q, fixed[i]);
        const char *k;
        json_t *v;
        json_t *block = json_object_get(root, "quantization");
        if (json_is_object(block)) json_object_foreach(block, k, v) resolve(q, k);
        int b, g;
        rf_mlx_qcfg_default(q, &b, &g);
        if ((b == 0) != (g == 0) || (b && rf_cfg_index(b, g) < 0)) abort();
        rf_mlx_qcfg_free(q);
    } else if (q || !err.msg[0]) {
        abort();
    }
    json_decref(root);
    return 0;
}
