/* Loading the JSON files ramfit reads (model files: config.json, tokenizer.json,
 * tokenizer_config.json, generation_config.json, *.index.json; and its own profiles, plans and
 * weight files). One loader so that every reader has the same limits and number rules; not part
 * of the public API. */
#ifndef RF_JSON_INTERNAL_H
#define RF_JSON_INTERNAL_H

#include "common/internal.h"

#include <jansson.h>

/* Size limits of files read whole: far above any real file of the kind, low enough that a wrong
 * path (a weight file, /dev/zero) is refused before it fills memory. */
#define RF_MAX_CONFIG_FILE ((uint64_t)64 << 20)     /* config.json, generation/tokenizer_config.json, weights */
#define RF_MAX_TOKENIZER_FILE ((uint64_t)256 << 20) /* tokenizer.json */
#define RF_MAX_PLAN_FILE ((uint64_t)256 << 20)      /* profile index, plan */

/* Parse untrusted JSON text of LEN bytes (no NUL needed); LABEL (a file name) starts every
 * message, with the line and column of the text as given. Any valid JSON number loads: jansson
 * refuses integers beyond int64 ("too big integer") and reals beyond double, so those become
 * reals before parsing (the integer rounded to the nearest double; beyond double's range
 * +-1e308). A field ramfit uses is range-checked by its reader
 * (rf_json_int / rf_json_u64 below), which names the key; fields ramfit ignores (Llama's
 * "model_max_length": 1000000000000000019884624838656) no longer break the load.
 * FLAGS: jansson decoding flags (JSON_REJECT_DUPLICATES). */
rf_status rf_json_parse(const char *text, size_t len, const char *label, size_t flags, json_t **out, rf_err *err);
/* rf_read_file for a file that must be JSON: one whose first bytes are not (a weight file given
 * by mistake) is refused before it is read whole. */
rf_status rf_json_read_text(const char *path, uint64_t max, char **text, size_t *len, rf_err *err);
/* Read PATH (rf_json_read_text) and parse it; messages name PATH. */
rf_status rf_json_load(const char *path, uint64_t max, size_t flags, json_t **out, rf_err *err);

/* Literal text of the numbers rf_json_parse had to rewrite, so that a copy of the file can
 * write them back unchanged (quantize copies config.json). The k-th entry is the NUMBER-th
 * number of the document (numbers counted in document order from 0). */
typedef struct rf_json_bignum {
    uint64_t number;
    char *literal;
} rf_json_bignum;
typedef struct rf_json_bignums {
    rf_json_bignum *v;
    size_t n;
} rf_json_bignums;
/* rf_json_parse that also returns the rewritten literals (free with rf_json_bignums_free). */
rf_status rf_json_parse_keep(const char *text, size_t len, const char *label, size_t flags, json_t **out,
                             rf_json_bignums *big, rf_err *err);
void rf_json_bignums_free(rf_json_bignums *big);

/* An integer field: 0 and *OUT when V is a JSON integer in [LO, HI]; 1 when it is a number out
 * of that range (an integer, or an integral real beyond int64 such as a rewritten literal);
 * -1 when it is not an integer (absent, null, a string, a fraction). */
int rf_json_int(const json_t *v, int64_t lo, int64_t hi, int64_t *out);
/* The same for an unsigned field in [0, HI] (HI <= INT64_MAX: JSON integers ramfit writes are
 * below 2^63, so that jansson reads them back exactly). */
int rf_json_u64(const json_t *v, uint64_t hi, uint64_t *out);

#endif
