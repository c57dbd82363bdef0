/* Profiles are untrusted input: loading must never crash, leak or read out of bounds, and a profile
 * that loads must save (both forms), reload identically, and plan without error or a budget refusal.
 * Input: a self-contained JSON text, or, when the first byte is 0x01, an index + data file pair: a
 * 4-byte little-endian index length, the index, then the data. */
#include "plan/plan_internal.h"

#include <stdlib.h>
#include <string.h>

static rf_profile *load_input(const uint8_t *data, size_t size, rf_err *err)
{
    rf_profile *p = NULL;
    if (size >= 5 && data[0] == 1) {
        size_t jl = (size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16 | (size_t)data[4] << 24;
        if (jl > size - 5) jl = size - 5;
        if (rf_profile_from_parts((const char *)data + 5, jl, data + 5 + jl, size - 5 - jl, "fuzz", &p, err) != RF_OK) return NULL;
        return p;
    }
    if (rf_profile_from_json((const char *)data, size, "fuzz", &p, err) != RF_OK) return NULL;
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rf_err err;
    rf_profile *p = load_input(data, size, &err);
    if (!p) return 0;
    char *t1 = NULL, *t2 = NULL, *ix1 = NULL, *ix2 = NULL;
    void *d1 = NULL, *d2 = NULL;
    size_t n1 = 0, n2 = 0, nx1 = 0, nx2 = 0, nd1 = 0, nd2 = 0;
    rf_profile *q = NULL, *r = NULL;
    if (rf_profile_to_json(p, &t1, &n1, &err) != RF_OK) abort();
    if (rf_profile_from_json(t1, n1, "fuzz-again", &q, &err) != RF_OK) abort();
    if (rf_profile_to_json(q, &t2, &n2, &err) != RF_OK || n1 != n2 || memcmp(t1, t2, n1)) abort();
    if (rf_profile_to_parts(p, "p.bin", &ix1, &nx1, &d1, &nd1, &err) != RF_OK) abort();
    if (rf_profile_from_parts(ix1, nx1, d1, nd1, "fuzz-parts", &r, &err) != RF_OK) abort();
    if (rf_profile_to_parts(r, "p.bin", &ix2, &nx2, &d2, &nd2, &err) != RF_OK || nx1 != nx2 || nd1 != nd2 ||
        memcmp(ix1, ix2, nx1) || (nd1 && memcmp(d1, d2, nd1)))
        abort();
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
    free(ix1);
    free(ix2);
    free(d1);
    free(d2);
    rf_profile_free(q);
    rf_profile_free(r);
    rf_profile_free(p);
    return 0;
}
