/* Profile JSON is untrusted input: loading must never crash, leak or read out of bounds, and a
 * profile that loads must save, reload identically, and plan without error or a budget refusal. */
#include "plan_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rf_profile *p = NULL;
    rf_err err;
    if (rf_profile_from_json((const char *)data, size, "fuzz", &p, &err) != RF_OK) return 0;
    char *t1 = NULL, *t2 = NULL;
    size_t n1 = 0, n2 = 0;
    rf_profile *q = NULL;
    if (rf_profile_to_json(p, &t1, &n1, &err) != RF_OK) abort();
    if (rf_profile_from_json(t1, n1, "fuzz-again", &q, &err) != RF_OK) abort();
    if (rf_profile_to_json(q, &t2, &n2, &err) != RF_OK || n1 != n2 || memcmp(t1, t2, n1)) abort();
    rf_plan_opts o;
    rf_plan_opts_default(&o);
    if (!(rf_profile_modes(p) >> RF_QMODE_OPT & 1)) o.mode = RF_QMODE_MLX;
    o.state_limit = 20000;
    rf_planner *pl = NULL;
    if (rf_planner_create(p, &o, &pl, &err) == RF_OK) {
        uint64_t lo = rf_planner_min_safe(pl), hi = rf_planner_full_bytes(pl);
        for (int k = 0; k <= 4; k++) {
            rf_plan *plan = NULL;
            uint64_t b = lo + (hi - lo) / 4 * (uint64_t)k;
            rf_status s = rf_planner_solve(pl, b, &plan, &err);
            if (s != RF_OK || rf_plan_total_bytes(plan) > b) abort();
            rf_plan_free(plan);
        }
        rf_planner_free(pl);
    }
    free(t1);
    free(t2);
    rf_profile_free(q);
    rf_profile_free(p);
    return 0;
}
