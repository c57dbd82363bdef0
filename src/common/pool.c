/* A small persistent thread pool: one job at a time, tasks claimed with an atomic counter.
 * Persistent (not spawn-per-call) because the engine runs thousands of short jobs per second.
 *
 * Hand-off: decode runs ~200 products a token, each one job of tens of microseconds, with only
 * microseconds of single-threaded work between them. Sleeping on a condition variable after
 * every job costs a futex wake-up of the other side twice a job (the workers' start and the
 * caller's join), which on a virtual machine (an idle vCPU halts) is tens of microseconds each:
 * that, not the kernels, limited 2-thread decode. So both sides first spin a bounded time
 * (SPIN_NS) on the atomics, then sleep; idle threads stop spinning after that bound, so a pool
 * between jobs costs no CPU. A thread that is preempted involuntarily while spinning (another
 * process wants its CPU: an oversubscribed machine, where spinning only steals time from the
 * thread it waits for) stops spinning for a while (checked every CHECK_JOBS jobs). */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include "common/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#if RF_X86
#include <immintrin.h>
#endif

enum { CHECK_JOBS = 64 };
static const uint64_t SPIN_NS = 100000;

typedef struct {
    uint64_t jobs;              /* jobs since the last check */
    long nivcsw;                /* involuntary switches at the last check */
    int spin;                   /* spin before sleeping */
} spinner;

struct rf_pool {
    int n;                      /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    _Atomic uint64_t generation; /* bumped per job */
    _Atomic int quit;
    _Atomic int running;        /* workers still inside the current job */
    _Atomic int sleepers;       /* workers blocked (or about to block) on start */
    _Atomic int joiner;         /* the caller blocked (or about to block) on done */
    rf_task_fn fn;
    void *ctx;
    uint64_t ntasks;
    _Atomic uint64_t next;
    spinner caller;
};

typedef struct { rf_pool *p; int id; } worker_arg;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if RF_X86
    _mm_pause();
#endif
}

/* Every CHECK_JOBS jobs: spin only if this thread was not preempted since the last check. */
static void spinner_tick(spinner *s)
{
    if (++s->jobs < CHECK_JOBS) return;
    s->jobs = 0;
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) { s->spin = 0; return; }
    s->spin = ru.ru_nivcsw == s->nivcsw;
    s->nivcsw = ru.ru_nivcsw;
}

/* Spin until *A differs from V (or, with JOIN, until it reaches 0), at most SPIN_NS.
 * Returns 1 when the condition was met while spinning. */
static int spin_until_ne(const _Atomic uint64_t *a, uint64_t v, const _Atomic int *quit)
{
    uint64_t t0 = now_ns();
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (atomic_load_explicit(a, memory_order_acquire) != v || atomic_load_explicit(quit, memory_order_relaxed))
                return 1;
            cpu_relax();
        }
        if (now_ns() - t0 > SPIN_NS) return 0;
    }
}

static int spin_until_zero(const _Atomic int *a)
{
    uint64_t t0 = now_ns();
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (atomic_load_explicit(a, memory_order_acquire) == 0) return 1;
            cpu_relax();
        }
        if (now_ns() - t0 > SPIN_NS) return 0;
    }
}

static void run_tasks(rf_pool *p, int worker)
{
    for (;;) {
        uint64_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->ntasks) break;
        p->fn(p->ctx, i, worker);
    }
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    rf_pool *p = wa->p;
    int id = wa->id;
    free(wa);
    uint64_t seen = 0;
    spinner sp = {0, 0, 1};
    for (;;) {
        if (!sp.spin || !spin_until_ne(&p->generation, seen, &p->quit)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (!atomic_load(&p->quit) && atomic_load(&p->generation) == seen) pthread_cond_wait(&p->start, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_tasks(p, id);
        spinner_tick(&sp);
        if (atomic_fetch_sub(&p->running, 1) == 1 && atomic_load(&p->joiner)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

rf_status rf_pool_create(int nthreads, rf_pool **out, rf_err *err)
{
    *out = NULL;
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    if (nthreads > 1024) return rf_err_set(err, RF_ERR_INVALID, "thread count %d is too large", nthreads);
    rf_pool *p = calloc(1, sizeof *p);
    if (!p) return rf_err_set(err, RF_ERR_NOMEM, "out of memory creating a thread pool");
    p->n = nthreads;
    p->caller.spin = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) { rf_pool_free(p); return rf_err_set(err, RF_ERR_NOMEM, "out of memory creating a thread pool"); }
    for (int i = 1; i < nthreads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) { p->n = i; rf_pool_free(p); return rf_err_set(err, RF_ERR_NOMEM, "out of memory creating a thread pool"); }
        wa->p = p;
        wa->id = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n = i;
            rf_pool_free(p);
            return rf_err_set(err, RF_ERR_IO, "cannot start worker thread %d", i);
        }
    }
    *out = p;
    return RF_OK;
}

void rf_pool_free(rf_pool *p)
{
    if (!p) return;
    if (p->threads) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->quit, 1);
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
        free(p->threads);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p);
}

int rf_pool_threads(const rf_pool *p) { return p ? p->n : 1; }

void rf_pool_run(rf_pool *p, uint64_t n, rf_task_fn fn, void *ctx)
{
    if (n == 0) return;
    if (!p || p->n == 1 || n == 1) {
        for (uint64_t i = 0; i < n; i++) fn(ctx, i, 0);
        return;
    }
    /* no worker is inside a job here (the last join saw running == 0), so the job fields are free;
     * the generation's release store publishes them */
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = n;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->running, p->n - 1, memory_order_relaxed);
    atomic_fetch_add(&p->generation, 1); /* seq_cst: ordered before the read of sleepers */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, 0);
    spinner_tick(&p->caller);
    if (p->caller.spin && spin_until_zero(&p->running)) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->joiner, 1); /* seq_cst: ordered before the read of running */
    while (atomic_load(&p->running) > 0) pthread_cond_wait(&p->done, &p->mu);
    atomic_store(&p->joiner, 0);
    pthread_mutex_unlock(&p->mu);
}
