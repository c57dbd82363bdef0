/* A small persistent thread pool: one job at a time, tasks claimed with an atomic counter.
 * Persistent (not spawn-per-call) because the engine runs thousands of short jobs per second. */
#include "common/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct rf_pool {
    int n;                      /* threads including the caller */
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t generation;        /* bumped per job */
    int quit;
    int running;                /* workers still inside the current job */
    rf_task_fn fn;
    void *ctx;
    uint64_t ntasks;
    _Atomic uint64_t next;
};

typedef struct { rf_pool *p; int id; } worker_arg;

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
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->start, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_tasks(p, id);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
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
        p->quit = 1;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = n;
    atomic_store(&p->next, 0);
    p->running = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->running > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
