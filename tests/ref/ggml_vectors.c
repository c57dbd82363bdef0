/* Test vectors for ramfit's ggml block-type kernels, made by ggml itself: runs ggml's encoders
 * (ggml_quantize_chunk without importance matrix, as llama-quantize) and decoders on the inputs
 * of kq_inputs.h and prints one line per type and row: "TYPE ROW ENCODED_HASH DECODED_HASH".
 * Built against llama.cpp's libggml-base by tests/llamacpp/build.sh (test tooling; never part of
 * ramfit's build): its output is tests/fixtures/kquant/ggml_vectors.txt, which test_kquant reads. */
#include "ggml.h"
#include "kq_inputs.h"

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    static const enum ggml_type types[] = {
        GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_Q2_K,
        GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL, GGML_TYPE_IQ4_XS,
    };
    float *x = malloc(sizeof(float) * KQ_ROWS * KQ_COLS), *y = malloc(sizeof(float) * KQ_COLS);
    unsigned char *q = malloc((size_t)KQ_ROWS * KQ_COLS * 2);
    if (!x || !y || !q) return 1;
    kq_inputs(x);
    printf("# ggml %s: ggml_quantize_chunk / to_float on kq_inputs.h (%d rows x %d)\n", "libggml-base", KQ_ROWS, KQ_COLS);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        size_t rb = ggml_row_size(types[t], KQ_COLS);
        ggml_quantize_chunk(types[t], x, q, 0, KQ_ROWS, KQ_COLS, NULL);
        const struct ggml_type_traits *tr = ggml_get_type_traits(types[t]);
        for (int r = 0; r < KQ_ROWS; r++) {
            tr->to_float(q + r * rb, y, KQ_COLS);
            printf("%s %d %016llx %016llx\n", ggml_type_name(types[t]), r, (unsigned long long)kq_hash(q + r * rb, rb),
                   (unsigned long long)kq_hash(y, sizeof(float) * KQ_COLS));
        }
    }
    free(x);
    free(y);
    free(q);
    return 0;
}
