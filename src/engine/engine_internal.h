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

/* The exact batched product on AVX-512 CPUs (matmul_avx512.c), rows [r0, r1) of y for all
 * ntok tokens: rf_matmul's kernel when the CPU has AVX-512 (rf_cpu_features RF_CPU_AVX512 and
 * VBMI) and ntok >= 2. */
void rf_gemm_f32_avx512(const rf_wmat *w, const float *x, int ntok, float *y, uint64_t r0, uint64_t r1);

/* The fast product (matmul_q8.c): x quantized to 8 bits in blocks of 32 (d = max|x|/127,
 * q = round(x/d)) and integer dot products with MLX-packed codes:
 *   y = sum_g s_g sum_{b in g} d_b (codes_b . q_b) + b_g sum(x_g)   (exact float sums of x).
 * Not exact (the activations are rounded, as in llama.cpp): generate and `ppl --fast` use it,
 * ppl/kld keep rf_matmul. Weights it has no kernel for (float dtypes; CPUs without AVX-512
 * VNNI/VBMI) go to rf_matmul. Results do not depend on the thread count. */
void rf_matmul_q8(const rf_wmat *w, const float *x, int ntok, float *y, rf_pool *pool);
/* N <= RF_Q8_MULTI products of the same x (q/k/v, gate/up): y[i] = w[i] x, the same results as
 * N rf_matmul_q8 calls, in one pool job with x quantized once per kernel layout (decode runs
 * ~200 products a token; each pool job is a hand-off between the threads). */
enum { RF_Q8_MULTI = 4 };
void rf_matmul_q8_multi(const rf_wmat *const *w, int n, const float *x, int ntok, float *const *y, rf_pool *pool);
/* Whether rf_matmul_q8 has a kernel for w on this CPU (else it is rf_matmul). */
int rf_matmul_q8_supported(const rf_wmat *w);
/* The same math in plain scalar loops (integer dots, double sums): the reference. */
void rf_matmul_q8_ref(const rf_wmat *w, const float *x, int ntok, float *y);
/* One row of activations (cols a multiple of 32) as 8-bit blocks: q[cols], d[cols/32] and,
 * when sum is not NULL, the float sum of each block. The SIMD quantizer gives the same q and d. */
void rf_q8_quantize_ref(const float *x, uint64_t cols, int8_t *q, float *d, float *sum);

/* Kernel timers for bench/ (prof.c): products on the calling thread (wall), attention per head
 * summed over threads (CPU). Off unless enabled; one branch per call when off. */
enum { RF_PROF_MATMUL, RF_PROF_MATMUL_Q8, RF_PROF_ATTEND, RF_PROF_N };
extern int rf_prof_on;
void rf_prof_enable(int on);
uint64_t rf_prof_now(void);
void rf_prof_add(int kind, uint64_t t0);   /* adds now - t0 */
void rf_prof_read(double seconds[RF_PROF_N], uint64_t calls[RF_PROF_N], int reset);
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
/* The same with a vectorized exp (a few ulp from expf): the fast mode's, not the exact path's. */
void rf_op_swiglu_fast(const float *g, const float *u, int n, float *out);
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
