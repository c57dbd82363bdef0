/* Calibration statistics files are untrusted input: opening must never crash, leak or read out of
 * bounds, and every lookup on what opens must stay inside the data. Input: a 4-byte little-endian
 * index length, the index (JSON), then the data file. */
#include "calib/calib_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    size_t jl = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    if (jl > size - 4) jl = size - 4;
    /* the data part copied to an aligned buffer, as mmap would give it */
    size_t dl = size - 4 - jl;
    double *buf = malloc(dl / sizeof(double) + 1 ? (dl / sizeof(double) + 1) * sizeof(double) : 8);
    if (!buf) return 0;
    memcpy(buf, data + 4 + jl, dl);
    rf_stats *s = NULL;
    rf_err err;
    if (calib_stats_from_parts((const char *)data + 4, jl, buf, dl, "fuzz", &s, &err) == RF_OK) {
        for (uint64_t i = 0; i < calib_stats_unit_count(s); i++) {
            int members = 0;
            const char *name = calib_stats_unit(s, i, &members);
            for (int k = -1; k <= members; k++) {
                const double *sq;
                const float *h;
                uint64_t tok, cols;
                int64_t rec;
                if (rf_stats_moments(s, name, k, &sq, &tok, &rec, &err) == RF_OK) {
                    volatile double x = sq[0];
                    (void)x;
                }
                if (rf_stats_hessian(s, name, k, &h, &cols, &err) == RF_OK) {
                    volatile float y = h[cols * (cols + 1) / 2 - 1];
                    (void)y;
                }
            }
        }
        (void)rf_stats_checksum(s);
        rf_stats_close(s);
    }
    free(buf);
    return 0;
}
