/* libFuzzer target for config.json parsing and the model catalogue. The input is a config.json
 * text, optionally followed by the line "\n--\n" and a safetensors image; with both, the
 * catalogue is built and every unit is walked. The first line is also classified as a tensor name. */
#include "arch/model_internal.h"

#include <stdlib.h>
#include <string.h>

static volatile uint64_t sink;

static void walk(const rf_model *m)
{
    uint64_t acc = rf_model_param_count(m);
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        for (int k = 0; k < un->n_members; k++) {
            const rf_tinfo *ti = rf_model_tinfo(m, (uint64_t)un->members[k]);
            if (!ti || ti->unit != (int)u) abort(); /* members and tensors must agree */
            acc += ti->t->nelem;
        }
        if (rf_model_unit_find(m, un->name) != (int64_t)u) abort();
        acc += un->rows ^ un->cols;
    }
    sink = acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = NULL;
    for (size_t i = 0; i + 4 <= size; i++)
        if (!memcmp(data + i, "\n--\n", 4)) { sep = data + i; break; }
    size_t clen = sep ? (size_t)(sep - data) : size;
    char *text = malloc(clen + 1);
    if (!text) return 0;
    memcpy(text, data, clen);
    text[clen] = '\0';

    char name[256];
    size_t nl = strcspn(text, "\n");
    snprintf(name, sizeof name, "%.*s", (int)(nl < sizeof name ? nl : sizeof name - 1), text);
    rf_name_info ni;
    rf_classify_name(NULL, name, &ni); /* the default family's names */

    rf_config cfg;
    rf_err err;
    if (rf_config_parse(text, "fuzz/config.json", &cfg, &err) == RF_OK) {
        rf_classify_name(&cfg, name, &ni); /* and the config's family */
        for (int l = 0; l < cfg.num_layers && l < 1024; l++) sink += (uint64_t)rf_config_layer_is_moe(&cfg, l);
        rf_st *st = NULL;
        if (sep && rf_st_open_memory(sep + 4, size - clen - 4, "fuzz.safetensors", &st, &err) == RF_OK) {
            rf_model *m = NULL;
            if (rf_model_from_parts("fuzz", &cfg, st, &m, &err) == RF_OK) walk(m);
            rf_model_free(m);
        }
    }
    free(text);
    return 0;
}
