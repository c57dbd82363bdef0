/* Thread pool: every task runs exactly once, worker ids are in range, repeated jobs work. */
#include "testutil.h"

#include <stdatomic.h>
#include <stdlib.h>

typedef struct { _Atomic int *hits; int threads; _Atomic int bad_worker; } ctx_t;

static void task(void *c, uint64_t i, int worker)
{
    ctx_t *x = c;
    atomic_fetch_add(&x->hits[i], 1);
    if (worker < 0 || worker >= x->threads) atomic_store(&x->bad_worker, 1);
}

static void check(rf_pool *p, int threads, uint64_t n)
{
    ctx_t c = {calloc(n + 1, sizeof(_Atomic int)), threads, 0};
    rf_pool_run(p, n, task, &c);
    for (uint64_t i = 0; i < n; i++) assert_int_equal(atomic_load(&c.hits[i]), 1);
    assert_int_equal(atomic_load(&c.bad_worker), 0);
    free((void *)c.hits);
}

static void test_pool_runs_each_task_once(void **state)
{
    (void)state;
    rf_err err;
    int counts[] = {1, 2, 3, 8};
    for (int k = 0; k < 4; k++) {
        rf_pool *p;
        TU_OK(rf_pool_create(counts[k], &p, &err), &err);
        assert_int_equal(rf_pool_threads(p), counts[k]);
        for (int rep = 0; rep < 200; rep++) check(p, counts[k], (uint64_t)(rep % 37));
        check(p, counts[k], 100000);
        rf_pool_free(p);
    }
    check(NULL, 1, 1000);
    rf_pool_free(NULL);
    rf_pool *p;
    assert_int_equal(rf_pool_create(100000, &p, &err), RF_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool_runs_each_task_once)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
