/* A checkpoint whose model_type ramfit does not know. Its tensors are classified by Hugging Face
 * naming alone (model.c): 2-D *.weight tensors are Linear/Embedding weights, so units that mlx-lm's
 * rule would quantize (a gs in {32, 64, 128} divides the input dimension); roles come from the
 * name where it says (q_proj, down_proj, embed_tokens, ...) and are 'other' otherwise, which the
 * planner weighs neutrally. inspect, analyse, plan and quantize work on it; the engine does not
 * (no forward pass is known). */
#include "arch/family.h"

const rf_family rf_family_generic = {
    .arch = RF_ARCH_GENERIC, .model_type = "generic", .rules = NULL, .nrules = 0,
};
