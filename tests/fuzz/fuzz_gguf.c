/* libFuzzer target for the GGUF reader: one GGUF image. Every accepted tensor has its bytes
 * touched and every key's value read, so ASan sees any out-of-bounds view; decodable tensors
 * are decoded row by row. */
#include "common/internal.h"

#include <stdlib.h>
#include <string.h>

static volatile double sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    rf_err err;
    rf_gguf *g = NULL;
    if (rf_gguf_open_memory(copy, size, "fuzz", &g, &err) == RF_OK) {
        double acc = 0;
        char buf[256];
        for (uint64_t i = 0; i < rf_gguf_kv_count(g); i++) {
            rf_gguf_kv_text(g, i, buf, sizeof buf);
            for (uint64_t j = 0; j < rf_gguf_kv_arr_len(g, i) && j < 64; j++) {
                uint64_t len = 0;
                const char *s = rf_gguf_arr_str(g, i, j, &len);
                if (s) for (uint64_t k = 0; k < len; k++) acc += (unsigned char)s[k];
                else acc += rf_gguf_arr_num(g, i, j);
            }
            if (rf_gguf_find_kv(g, rf_gguf_kv_key(g, i)) != (int64_t)i) abort();
        }
        for (uint64_t i = 0; i < rf_gguf_tensor_count(g); i++) {
            const rf_gguf_tensor *t = rf_gguf_tensor_at(g, i);
            const uint8_t *p = t->data;
            for (uint64_t k = 0; k < t->nbytes; k++) acc += p[k];
            if (rf_gguf_find_tensor(g, t->name) != t) abort();
            uint64_t rb = rf_gtype_row_bytes(t->type, t->ne[0]);
            if (rf_gtype_supported(t->type) && rb && t->ne[0] <= 4096) {
                float *row = malloc(sizeof(float) * t->ne[0]);
                for (uint64_t r = 0; row && r < t->nbytes / rb && r < 4; r++)
                    if (rf_gdequant_row(t->type, p + r * rb, t->ne[0], row, &err) == RF_OK) acc += row[0];
                free(row);
            }
        }
        sink = acc;
        rf_gguf_close(g);
    }
    free(copy);
    return 0;
}
