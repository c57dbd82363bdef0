/* Kernel timers for bench/ (where the engine's time goes): off unless rf_prof_enable(1), then
 * one clock read at the start and end of each timed call. Matrix products are timed on the
 * calling thread (wall time of the whole product); attention per head, summed over the
 * threads that ran it (CPU time). */
#include "engine/engine_internal.h"

#include <stdatomic.h>
#include <time.h>

int rf_prof_on;
static _Atomic uint64_t g_ns[RF_PROF_N], g_calls[RF_PROF_N];

void rf_prof_enable(int on) { rf_prof_on = on; }

uint64_t rf_prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void rf_prof_add(int kind, uint64_t t0)
{
    atomic_fetch_add_explicit(&g_ns[kind], rf_prof_now() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_calls[kind], 1, memory_order_relaxed);
}

void rf_prof_read(double seconds[RF_PROF_N], uint64_t calls[RF_PROF_N], int reset)
{
    for (int i = 0; i < RF_PROF_N; i++) {
        if (seconds) seconds[i] = (double)atomic_load(&g_ns[i]) * 1e-9;
        if (calls) calls[i] = atomic_load(&g_calls[i]);
        if (reset) {
            atomic_store(&g_ns[i], 0);
            atomic_store(&g_calls[i], 0);
        }
    }
}
