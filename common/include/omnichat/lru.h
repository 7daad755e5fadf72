/* A bounded, thread-safe LRU cache of byte strings with a time to live. */
#ifndef OMNICHAT_LRU_H
#define OMNICHAT_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/arena.h"

typedef struct oc_lru oc_lru_t;

/*
 * Every function below accepts a NULL cache, which holds nothing (a disabled cache).
 *
 * Creates a cache holding at most `capacity` entries (the least recently used goes first)
 * that expire `ttl_ms` after they were put (0: never). NULL on OOM. Thread-safe: one mutex.
 * Values are copied in and out, so nothing handed out ever dangles. Values are not wiped:
 * never put a plaintext secret in here.
 */
oc_lru_t *oc_lru_create(size_t capacity, int64_t ttl_ms);
void oc_lru_destroy(oc_lru_t *c);

/*
 * Copies the value of `key` into the arena (NUL-terminated after *len) when present and fresh.
 * Returns false when absent, expired (then dropped) or on OOM.
 */
bool oc_lru_get(oc_lru_t *c, const char *key, oc_arena_t *arena, char **val, size_t *len);
/* Inserts or replaces. Silently does nothing on OOM (a cache may forget). */
void oc_lru_put(oc_lru_t *c, const char *key, const void *val, size_t len);
void oc_lru_remove(oc_lru_t *c, const char *key);
size_t oc_lru_size(oc_lru_t *c);

#endif
