/* Llama (LlamaForCausalLM): the plain pre-norm decoder the other families extend.
 * transformers: models/llama; mlx-lm: mlx_lm/models/llama.py. attention_bias puts biases on
 * q/k/v/o, mlp_bias on gate/up/down; rope_scaling llama3 (3.1+) or linear. */
#include "arch/family.h"

static const rf_trule rules[] = {
    RF_ROWS_TOP,
    RF_ROWS_NORMS,
    RF_ROWS_ATTN(RF_BIAS_ATTN, RF_BIAS_ATTN),
    RF_ROWS_MLP("mlp", RF_NEED_DENSE),
};

const rf_family rf_family_llama = {
    .arch = RF_ARCH_LLAMA, .model_type = "llama", .rules = rules, .nrules = sizeof rules / sizeof rules[0],
};
