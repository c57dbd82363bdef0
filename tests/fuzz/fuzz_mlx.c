/* libFuzzer target for reading an MLX checkpoint's quantization back (rf_mlx_quant_read): the
 * input is a config.json text, the line "\n--\n", and a safetensors image. Every resolved module
 * must be self-consistent. */
#include "io/mlx_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = NULL;
    for (size_t i = 0; i + 4 <= size; i++)
        if (!memcmp(data + i, "\n--\n", 4)) { sep = data + i; break; }
    if (!sep) return 0;
    size_t clen = (size_t)(sep - data);
    rf_st *st = NULL;
    rf_err err;
    if (rf_st_open_memory(sep + 4, size - clen - 4, "fuzz.safetensors", &st, &err) != RF_OK) return 0;
    rf_mlx_quant *q = NULL;
    if (rf_mlx_quant_from_parts((const char *)data, clen, st, "fuzz/config.json", &q, &err) == RF_OK) {
        for (uint64_t i = 0; i < rf_mlx_quant_count(q); i++) {
            const rf_mlx_module *m = rf_mlx_quant_module(q, i);
            if ((m->bits == 0) != (m->gs == 0)) abort();
            if (m->bits && (m->cols % (uint64_t)m->gs || m->bytes == 0)) abort();
        }
    } else if (q) {
        abort(); /* failure leaves no result */
    }
    rf_mlx_quant_free(q);
    rf_st_close(st);
    return 0;
}
