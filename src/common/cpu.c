#include "common/internal.h"

#include <stdlib.h>
#include <string.h>

static unsigned g_mask = ~0u;
static int g_env_read;

static unsigned detect(void)
{
    unsigned f = 0;
#if RF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) f |= RF_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= RF_CPU_FMA;
    /* gcc 12 has no "f16c" name for __builtin_cpu_supports: read CPUID.1:ECX bit 29. */
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    if (c & (1u << 29)) f |= RF_CPU_F16C;
    /* __builtin_cpu_supports checks that the OS saves the AVX-512 state (XCR0) as well. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        f |= RF_CPU_AVX512;
        if (__builtin_cpu_supports("avx512vnni")) f |= RF_CPU_AVX512VNNI;
        if (__builtin_cpu_supports("avx512vbmi")) f |= RF_CPU_AVX512VBMI;
    }
    /* AVX-VNNI: CPUID.(7,1):EAX bit 4 (gcc 12 has no name for it); the YMM state is what AVX2
     * already needs. */
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
    if (a >= 7 && (f & RF_CPU_AVX2)) {
        __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
        if (a & (1u << 4)) f |= RF_CPU_AVXVNNI;
    }
#elif defined(__aarch64__)
    f |= RF_CPU_NEON;
#endif
    return f;
}

unsigned rf_cpu_features(void)
{
    static unsigned feats;
    static int done;
    if (!done) { feats = detect(); done = 1; }
    if (!g_env_read) {
        const char *e = getenv("RAMFIT_SIMD");
        if (e && strcmp(e, "0") == 0) g_mask = 0;
        g_env_read = 1;
    }
    return feats & g_mask;
}

void rf_cpu_set_mask(unsigned mask)
{
    g_env_read = 1;
    g_mask = mask;
}
