/* Named hardware targets and the rule that turns a device's memory into a tensor budget
 * (docs/plan.md, "Targets"). */
#include "plan/plan_internal.h"

#include <string.h>

#define GiB (1024ull * 1024 * 1024)
#define MiB (1024ull * 1024)

static const rf_target targets[] = {
    {"iphone-16-pro-8gb", "iPhone 16 Pro, 8 GB", RF_TARGET_PHONE, 8 * GiB},
    {"iphone-15-pro-8gb", "iPhone 15 Pro, 8 GB", RF_TARGET_PHONE, 8 * GiB},
    {"m1-8gb", "Mac, M1 8 GB", RF_TARGET_APPLE, 8 * GiB},
    {"m1-16gb", "Mac, M1 16 GB", RF_TARGET_APPLE, 16 * GiB},
    {"m2-8gb", "Mac, M2 8 GB", RF_TARGET_APPLE, 8 * GiB},
    {"m2-16gb", "Mac, M2 16 GB", RF_TARGET_APPLE, 16 * GiB},
    {"m2-24gb", "Mac, M2 24 GB", RF_TARGET_APPLE, 24 * GiB},
    {"m3-8gb", "Mac, M3 8 GB", RF_TARGET_APPLE, 8 * GiB},
    {"m3-16gb", "Mac, M3 16 GB", RF_TARGET_APPLE, 16 * GiB},
    {"m3-24gb", "Mac, M3 24 GB", RF_TARGET_APPLE, 24 * GiB},
    {"m4-16gb", "Mac, M4 16 GB", RF_TARGET_APPLE, 16 * GiB},
    {"m4-24gb", "Mac, M4 24 GB", RF_TARGET_APPLE, 24 * GiB},
    {"m4-32gb", "Mac, M4 32 GB", RF_TARGET_APPLE, 32 * GiB},
    {"m4-pro-24gb", "Mac, M4 Pro 24 GB", RF_TARGET_APPLE, 24 * GiB},
    {"m4-pro-48gb", "Mac, M4 Pro 48 GB", RF_TARGET_APPLE, 48 * GiB},
    {"m4-pro-64gb", "Mac, M4 Pro 64 GB", RF_TARGET_APPLE, 64 * GiB},
    {"m4-max-36gb", "Mac, M4 Max 36 GB", RF_TARGET_APPLE, 36 * GiB},
    {"m4-max-48gb", "Mac, M4 Max 48 GB", RF_TARGET_APPLE, 48 * GiB},
    {"m4-max-64gb", "Mac, M4 Max 64 GB", RF_TARGET_APPLE, 64 * GiB},
    {"m4-max-128gb", "Mac, M4 Max 128 GB", RF_TARGET_APPLE, 128 * GiB},
    {"m2-ultra-64gb", "Mac, M2 Ultra 64 GB", RF_TARGET_APPLE, 64 * GiB},
    {"m2-ultra-128gb", "Mac, M2 Ultra 128 GB", RF_TARGET_APPLE, 128 * GiB},
    {"m2-ultra-192gb", "Mac, M2 Ultra 192 GB", RF_TARGET_APPLE, 192 * GiB},
    {"m3-ultra-96gb", "Mac, M3 Ultra 96 GB", RF_TARGET_APPLE, 96 * GiB},
    {"m3-ultra-256gb", "Mac, M3 Ultra 256 GB", RF_TARGET_APPLE, 256 * GiB},
    {"m3-ultra-512gb", "Mac, M3 Ultra 512 GB", RF_TARGET_APPLE, 512 * GiB},
    {"rtx-3060-12gb", "NVIDIA RTX 3060, 12 GB", RF_TARGET_GPU, 12 * GiB},
    {"rtx-3090-24gb", "NVIDIA RTX 3090, 24 GB", RF_TARGET_GPU, 24 * GiB},
    {"rtx-4060-ti-16gb", "NVIDIA RTX 4060 Ti, 16 GB", RF_TARGET_GPU, 16 * GiB},
    {"rtx-4070-12gb", "NVIDIA RTX 4070, 12 GB", RF_TARGET_GPU, 12 * GiB},
    {"rtx-4080-16gb", "NVIDIA RTX 4080, 16 GB", RF_TARGET_GPU, 16 * GiB},
    {"rtx-4090-24gb", "NVIDIA RTX 4090, 24 GB", RF_TARGET_GPU, 24 * GiB},
    {"rtx-5090-32gb", "NVIDIA RTX 5090, 32 GB", RF_TARGET_GPU, 32 * GiB},
    {"a100-40gb", "NVIDIA A100, 40 GB", RF_TARGET_GPU, 40 * GiB},
    {"a100-80gb", "NVIDIA A100, 80 GB", RF_TARGET_GPU, 80 * GiB},
    {"h100-80gb", "NVIDIA H100, 80 GB", RF_TARGET_GPU, 80 * GiB},
};

int rf_target_count(void) { return (int)(sizeof targets / sizeof targets[0]); }
const rf_target *rf_target_get(int i) { return i >= 0 && i < rf_target_count() ? &targets[i] : NULL; }

const rf_target *rf_target_find(const char *name)
{
    for (int i = 0; name && i < rf_target_count(); i++)
        if (!strcmp(targets[i].name, name)) return &targets[i];
    return NULL;
}

/* KV cache of CONTEXT tokens in fp16: K and V for every layer's KV heads. */
static int kv_bytes(const rf_pmodel *m, uint64_t context, uint64_t *out)
{
    uint64_t hd = (uint64_t)m->head_dim;
    if (!hd && m->num_heads) hd = (uint64_t)m->hidden_size / (uint64_t)m->num_heads;
    uint64_t kvh = (uint64_t)(m->num_kv_heads ? m->num_kv_heads : m->num_heads), v = 2 * 2;
    return rf_mul_u64(v, (uint64_t)m->num_layers, &v) && rf_mul_u64(v, kvh, &v) && rf_mul_u64(v, hd, &v) &&
           rf_mul_u64(v, context, out);
}

rf_status rf_target_budget_for(const rf_target *t, const rf_profile *p, uint64_t context, rf_target_budget *out, rf_err *err)
{
    rf_target_budget b = {0};
    switch (t->kind) {
    case RF_TARGET_APPLE:
        /* macOS lets the GPU wire about 2/3 of unified memory up to 36 GB, 3/4 above */
        b.limit = t->memory <= 36 * GiB ? t->memory / 3 * 2 : t->memory / 4 * 3;
        b.reserve = 512 * MiB;
        break;
    case RF_TARGET_GPU:
        b.limit = t->memory;
        b.reserve = 1 * GiB; /* CUDA context, library workspaces, display */
        break;
    case RF_TARGET_PHONE:
        b.limit = t->memory / 2; /* per-app limit with the increased-memory entitlement */
        b.reserve = 256 * MiB;
        break;
    }
    if (!kv_bytes(rf_profile_model(p), context, &b.kv_cache)) return rf_err_set(err, RF_ERR_INVALID, "KV cache size overflows");
    if (b.limit < b.reserve || b.limit - b.reserve <= b.kv_cache)
        return rf_err_set(err, RF_ERR_BUDGET, "target %s: no memory left for weights (limit %llu B, reserve %llu B, KV cache %llu B for %llu tokens)",
                          t->name, (unsigned long long)b.limit, (unsigned long long)b.reserve, (unsigned long long)b.kv_cache,
                          (unsigned long long)context);
    b.budget = b.limit - b.reserve - b.kv_cache;
    if (out) *out = b;
    return RF_OK;
}
