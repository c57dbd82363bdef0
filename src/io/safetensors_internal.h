/* Internals of the safetensors reader/writer shared between safetensors.c, safetensors_write.c,
 * their tests and the fuzz target; not part of the public API. */
#ifndef RF_SAFETENSORS_INTERNAL_H
#define RF_SAFETENSORS_INTERNAL_H

#include "common/internal.h"

/* Largest JSON header (and index file) accepted: real headers are a few MB at most, and a bound
 * keeps a corrupt length from making us parse gigabytes. */
#define RF_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

/* 64-bit hash of a byte string (8 bytes per step, avalanche finish); not cryptographic. */
uint64_t rf_st_hash64(const void *data, size_t n, uint64_t seed);

/* Open-addressing name -> index table. Names are borrowed and must stay put while in the table. */
typedef struct rf_nameslot { const char *name; uint64_t hash; uint64_t idx; } rf_nameslot;
typedef struct rf_nametab { rf_nameslot *slots; uint64_t cap, n; } rf_nametab;
/* 1: inserted; 0: NAME already present (its index in *existing); -1: out of memory. */
int rf_nametab_put(rf_nametab *t, const char *name, uint64_t idx, uint64_t *existing);
/* 1 and *idx when found, else 0. */
int rf_nametab_get(const rf_nametab *t, const char *name, uint64_t *idx);
void rf_nametab_free(rf_nametab *t);

/* A shard image in memory, for opening a sharded checkpoint without files (fuzzing, tests). */
typedef struct rf_st_mem_shard { const char *name; const void *data; uint64_t size; } rf_st_mem_shard;
/* Like rf_st_open on an index.json whose text is JSON[0..len), where the shard files named by its
 * weight_map are looked up by name in SHARDS (a name not there is a missing file). */
rf_status rf_st_open_index_memory(const void *json, uint64_t len, const char *label,
                                  const rf_st_mem_shard *shards, uint64_t nshards,
                                  rf_st **out, rf_err *err);

#endif
