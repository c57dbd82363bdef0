/* AVX2 fast paths of the ggml block-type kernels (kquant.c holds the scalar references). */
#include "quant/kquant.h"

rfk_encode_fn rfk_encoder_avx2(int type)
{
    (void)type;
    return NULL;
}

rfk_decode_fn rfk_decoder_avx2(int type)
{
    (void)type;
    return NULL;
}
