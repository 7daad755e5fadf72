/* Per-request arena: bump allocation freed in one go, plus cleanups for foreign resources. */
#ifndef OMNICHAT_ARENA_H
#define OMNICHAT_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct oc_arena oc_arena_t;

/*
 * Creates an arena whose blocks are at least `block_size` bytes (0: 8 KiB). Returns NULL on
 * OOM. Not thread-safe: an arena belongs to one request at a time.
 */
oc_arena_t *oc_arena_create(size_t block_size);

/* Runs the registered cleanups (last registered first), then frees every block. NULL is fine. */
void oc_arena_destroy(oc_arena_t *a);

/* Runs cleanups and forgets all allocations but keeps the first block for reuse. */
void oc_arena_reset(oc_arena_t *a);

/* Zeroed memory aligned for any type, owned by the arena. NULL on OOM. */
void *oc_arena_alloc(oc_arena_t *a, size_t size);

/* Copies of strings/bytes owned by the arena (always NUL-terminated). NULL on OOM. */
char *oc_arena_strdup(oc_arena_t *a, const char *s);
char *oc_arena_strndup(oc_arena_t *a, const char *s, size_t n);
char *oc_arena_sprintf(oc_arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Registers fn(ptr) to run when the arena is reset or destroyed. Returns 0, or -1 on OOM (then
 * fn(ptr) is called at once so nothing leaks). */
int oc_arena_defer(oc_arena_t *a, void (*fn)(void *), void *ptr);

/* A protobuf-c allocator that allocates from the arena (free is a no-op): unpacked messages
 * and responses built in a handler live exactly as long as the request. */
void oc_arena_protobuf_allocator(oc_arena_t *a, ProtobufCAllocator *out);

/* A hard budget on what a protobuf-c allocator may draw from an arena. */
typedef struct oc_arena_budget {
    oc_arena_t *arena;
    size_t left;    /* bytes still allowed */
    size_t used;    /* bytes handed out so far */
    bool exhausted; /* an allocation was refused for the budget (not for OOM) */
} oc_arena_budget_t;

/*
 * Like oc_arena_protobuf_allocator, but every allocation is charged to `b` (initialised here
 * with `budget` bytes; b must outlive the allocator's use) and refused once the budget would be
 * exceeded: protobuf_c_message_unpack then fails with NULL and b->exhausted tells that apart
 * from malformed input. Charges are rounded up like the arena's, and protobuf-c's frees
 * (no-ops in an arena) give nothing back, so the budget bounds the arena growth exactly.
 */
void oc_arena_protobuf_allocator_budget(oc_arena_t *a, size_t budget, oc_arena_budget_t *b,
                                        ProtobufCAllocator *out);

#endif
