/* Internal pieces of the inference engine shared by engine.c, matmul.c, sampler.c, eval.c and
 * their tests: the weight-matrix view the kernels compute on, the kernels and the small ops. */
#ifndef RF_ENGINE_INTERNAL_H
#define RF_ENGINE_INTERNAL_H

#include "common/internal.h"
#include "arch/family.h"

/* A borrowed rows x cols weight matrix, row-major, computed on where it lies (mmapped):
 *  dtype F32/F16/BF16: data holds rows*cols elements;
 *  dtype U32 (MLX affine): data holds rows * cols*bits/32 words, scales/biases rows * cols/gs
 *  elements of sdtype (F32/F16/BF16); w = scale * q + bias per group of gs along a row. */
typedef struct rf_wmat {
    rf_dtype dtype;
    int bits, gs;
    rf_dtype sdtype;
    uint64_t rows, cols;
    const void *data;
    const void *scales, *biases;
    /* GGUF hook (matmul_ggml.c): a ggml block-quantized type (rf_gtype, e.g. RF_GT_Q4_K) when
     * non-zero; data then holds rows * rf_gtype_row_bytes(gtype, cols) bytes and dtype is
     * RF_DT_U8. 0 for every other view (F32/F16/BF16 GGUF tensors are plain dtype views). */
    int gtype;
} rf_wmat;

/* Validate a view (dtype, bits, gs divides cols, cols*bits % 32 == 0). NAME labels errors. */
rf_status rf_wmat_check(const rf_wmat *w, const char *name, rf_err *err);
/* The view of rows [r0, r0 + n): used for one expert of a stacked bank, or a row slice. */
rf_wmat rf_wmat_rows(const rf_wmat *w, uint64_t r0, uint64_t n);
/* Bytes of weight data the view covers (data + scales + biases). */
uint64_t rf_wmat_bytes(const rf_wmat *w);
/* Dequantize/convert row r into out[cols] (embedding lookup). */
void rf_wmat_row(const rf_wmat *w, uint64_t r, float *out);
/* Plain scalar dequantization of row r (the reference the fast paths are tested against). */
void rf_wmat_row_ref(const rf_wmat *w, uint64_t r, float *out);

/* y[t*rows + r] = sum_c W[r][c] * x[t*cols + c] for t < ntok: the one matmul of the engine.
 * ntok == 1 is the decode matrix-vector product (dequantized in registers); larger batches
 * dequantize small cache-resident tiles once and reuse them for every token. Splits rows over
 * the pool (NULL: calling thread). Results do not depend on the thread count. */
void rf_matmul(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool);
/* Same product, straightforward scalar loops: the reference. */
void rf_matmul_ref(const rf_wmat *w, const float *x, int ntok, float *y);

/* ggml block-quantized views (matmul_ggml.c): what the functions above do when w->gtype is set.
 * Each output element is computed by one task in a fixed order (thread-count independent): a row
 * is decoded to float32 (kquant decoders) and dotted with the activations. */
rf_status rf_ggml_wmat_check(const rf_wmat *w, const char *name, rf_err *err);
rf_wmat rf_ggml_wmat_rows(const rf_wmat *w, uint64_t r0, uint64_t n);
uint64_t rf_ggml_wmat_bytes(const rf_wmat *w);
void rf_ggml_row(const rf_wmat *w, uint64_t r, float *out);
void rf_ggml_row_ref(const rf_wmat *w, uint64_t r, float *out);
void rf_ggml_matmul(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool);
void rf_ggml_matmul_ref(const rf_wmat *w, const float *x, int ntok, float *y);

/* Small ops (engine.c). */
void rf_op_rmsnorm(const float *x, const float *w, int n, float eps, float *out);
/* softmax in place over n values. */
void rf_op_softmax(float *x, int n);
/* out[i] = silu(g[i]) * u[i] */
void rf_op_swiglu(const float *g, const float *u, int n, float *out);
/* Rotary embedding, HF rotate_half convention: pairs (i, i + d/2), cos/sin tables of d/2. */
void rf_op_rope(float *x, int d, const float *cosv, const float *sinv);
/* The first RD dimensions of x: pairs (i, i + rd/2), or adjacent pairs (2i, 2i + 1) when INTERLEAVED
 * (llama4's complex rotation, DeepSeek's rope_interleave). */
void rf_op_rope_ex(float *x, int rd, const float *cosv, const float *sinv, int interleaved);
/* inv_freq[dim/2] of rope R over DIM rotated dimensions (default, linear, llama3, yarn, longrope with
 * its long factors when USE_LONG), and the factor transformers multiplies cos and sin by (yarn,
 * longrope; else 1). MAX_POS: max_position_embeddings (yarn/longrope without a factor). */
rf_status rf_rope_freqs(const rf_rope *r, int dim, int max_pos, int use_long, double *inv_freq, double *attn_factor,
                        rf_err *err);

/* MoE routing of one token: choose k of n experts from router logits.
 * mixtral convention (softmax_first = 0): top-k logits, softmax over the chosen.
 * qwen3_moe (softmax_first = 1): softmax over all, top-k, renormalise if norm_topk.
 * Ties go to the lower index; idx/wt are in descending weight order. */
void rf_moe_route(const float *logits, int n, int k, int softmax_first, int norm_topk, int *idx, float *wt);
/* Every family's routing (rf_router in src/arch/family.h). BIAS: e_score_correction_bias (sigmoid
 * grouped), may be NULL. RF_ROUTER_LLAMA4 returns sigmoid(logit): the weight of the expert's input. */
#define RF_MAX_EXPERTS 512
typedef struct rf_route_opts {
    int n, k, kind, norm_topk, n_group, topk_group;
    double scaling;
    const float *bias;
} rf_route_opts;
void rf_moe_route_ex(const rf_route_opts *o, const float *logits, int *idx, float *wt);

/* Activations of the gated MLP: out[i] = act(g[i]) * u[i]. */
float rf_op_act(rf_act a, float g);
void rf_op_glu(rf_act a, const float *g, const float *u, int n, float *out);
/* x / rms(x) without a weight (llama4's L2 norm of q and k). */
void rf_op_l2norm(float *x, int n, float eps);
/* rf_op_attend with tanh soft-capping of the scores (gemma 2/3 attn_logit_softcapping), scalar. */
void rf_op_attend_ex(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                     float softcap, float *scratch, float *out);

/* Attention of one query head over positions [0, npos) of a cache with row stride ld floats:
 * out[d] = sum_s softmax(q.k_s * scale) v_s. scratch holds npos floats. */
void rf_op_attend(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                  float *scratch, float *out);
/* Same, plain scalar loops: the reference of the AVX2 path (head_dim a multiple of 8). */
void rf_op_attend_ref(const float *q, const float *kc, const float *vc, int npos, int d, int ld, float scale,
                      float *scratch, float *out);

/* log-softmax helpers for evaluation (eval.c): log of the sum of exp, and logprob of one id. */
double rf_logsumexp(const float *x, int n);

#endif
