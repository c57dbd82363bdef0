/* libFuzzer target for the safetensors reader. The input is one safetensors image, or, when it
 * starts with "IDX\n", an index.json and up to three shard images separated by the line "\n--\n"
 * (named s0.safetensors, s1..., s2...), so the index checks are reached as well. Every tensor the
 * reader accepts has its bytes touched so ASan sees any out-of-bounds view. */
#include "io/safetensors_internal.h"

#include <stdlib.h>
#include <string.h>

static volatile uint8_t sink;

static void touch(const rf_st *st)
{
    uint8_t acc = 0;
    for (uint64_t i = 0; i < rf_st_count(st); i++) {
        const rf_tensor *t = rf_st_get(st, i);
        const uint8_t *p = t->data;
        for (uint64_t k = 0; k < t->nbytes; k++) acc ^= p[k];
        if (rf_st_find(st, t->name) != t) abort(); /* find must agree with get */
    }
    (void)rf_st_metadata(st, "format");
    (void)rf_st_fingerprint(st);
    sink = acc;
}

static const uint8_t *find_sep(const uint8_t *p, const uint8_t *end)
{
    static const char sep[] = "\n--\n";
    for (; p + 4 <= end; p++)
        if (memcmp(p, sep, 4) == 0) return p;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rf_err err;
    rf_st *st = NULL;
    if (size >= 4 && memcmp(data, "IDX\n", 4) == 0) {
        const uint8_t *p = data + 4, *end = data + size;
        const uint8_t *cut = find_sep(p, end);
        const uint8_t *json = p;
        size_t jlen = (size_t)((cut ? cut : end) - p);
        static const char *names[3] = {"s0.safetensors", "s1.safetensors", "s2.safetensors"};
        rf_st_mem_shard shards[3];
        uint64_t n = 0;
        while (cut && n < 3) {
            const uint8_t *s = cut + 4, *next = find_sep(s, end);
            /* copy each shard so ASan catches reads past its own end, not into the next */
            size_t len = (size_t)((next ? next : end) - s);
            uint8_t *copy = malloc(len ? len : 1);
            if (!copy) break;
            memcpy(copy, s, len);
            shards[n] = (rf_st_mem_shard){names[n], copy, len};
            n++;
            cut = next;
        }
        if (rf_st_open_index_memory(json, jlen, "fuzz-index", shards, n, &st, &err) == RF_OK) {
            touch(st);
            rf_st_close(st);
        }
        for (uint64_t i = 0; i < n; i++) free((void *)shards[i].data);
        return 0;
    }
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    if (rf_st_open_memory(copy, size, "fuzz", &st, &err) == RF_OK) {
        touch(st);
        rf_st_close(st);
    }
    free(copy);
    return 0;
}
