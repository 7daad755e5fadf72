/* Per-request arena: bump allocation in blocks, freed at once, with LIFO cleanups. */
#include "omnichat/arena.h"

#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BLOCK 8192
#define ALIGN alignof(max_align_t)

typedef struct block {
    struct block *next;
    size_t cap;  /* usable bytes in data */
    size_t used; /* bytes handed out (always a multiple of ALIGN) */
    /* max_align_t makes data[] start at an address aligned for any type. */
    max_align_t data[];
} block_t;

typedef struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *ptr;
} cleanup_t;

struct oc_arena {
    block_t *cur;        /* block being bumped; the first block when nothing overflowed */
    block_t *extra;      /* every other block (full ones and oversized ones) */
    cleanup_t *cleanups; /* LIFO */
    size_t block_size;   /* size of blocks added when cur is full */
    block_t *first;      /* lives in the same malloc as the arena: create costs one malloc */
};

static size_t round_up(size_t n)
{
    return (n + (ALIGN - 1)) & ~(ALIGN - 1);
}

oc_arena_t *oc_arena_create(size_t block_size)
{
    if (block_size == 0) block_size = DEFAULT_BLOCK;
    block_size = round_up(block_size);
    if (block_size == 0 || block_size > SIZE_MAX / 2) return NULL;
    size_t head = round_up(sizeof(oc_arena_t));
    oc_arena_t *a = malloc(head + sizeof(block_t) + block_size);
    if (!a) return NULL;
    a->first = (block_t *)((char *)a + head);
    a->first->next = NULL;
    a->first->cap = block_size;
    a->first->used = 0;
    a->cur = a->first;
    a->extra = NULL;
    a->cleanups = NULL;
    a->block_size = block_size;
    return a;
}

static void run_cleanups(oc_arena_t *a)
{
    /* Pop before calling so a cleanup that touches the arena cannot re-run itself. The nodes
     * themselves live in arena blocks, freed afterwards by the caller. */
    while (a->cleanups) {
        cleanup_t *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->ptr);
    }
}

static void free_blocks(oc_arena_t *a)
{
    block_t *b = a->extra;
    while (b) {
        block_t *next = b->next;
        free(b);
        b = next;
    }
    a->extra = NULL;
    if (a->cur != a->first) free(a->cur);
    a->cur = a->first;
    a->first->used = 0;
}

void oc_arena_destroy(oc_arena_t *a)
{
    if (!a) return;
    run_cleanups(a);
    free_blocks(a);
    free(a);
}

void oc_arena_reset(oc_arena_t *a)
{
    if (!a) return;
    run_cleanups(a);
    free_blocks(a);
}

void *oc_arena_alloc(oc_arena_t *a, size_t size)
{
    if (!a) return NULL;
    /* Zero-size requests still get a distinct, valid pointer (protobuf-c asks for 0 bytes
     * for empty repeated fields). */
    if (size == 0) size = 1;
    if (size > SIZE_MAX - ALIGN) return NULL;
    size_t need = round_up(size);
    block_t *b = a->cur;
    if (b->cap - b->used < need) {
        if (need > a->block_size / 4) {
            /* Large request: a block of its own, kept off the bump path so the rest of the
             * current block is not wasted. */
            if (need > SIZE_MAX - sizeof(block_t)) return NULL;
            block_t *big = malloc(sizeof(block_t) + need);
            if (!big) return NULL;
            big->cap = need;
            big->used = need;
            big->next = a->extra;
            a->extra = big;
            memset(big->data, 0, need);
            return big->data;
        }
        block_t *nb = malloc(sizeof(block_t) + a->block_size);
        if (!nb) return NULL;
        nb->cap = a->block_size;
        nb->used = 0;
        /* The old current block moves to the extra list, except the first one, which is part
         * of the arena allocation and is never freed on its own. */
        if (b != a->first) {
            b->next = a->extra;
            a->extra = b;
        }
        nb->next = NULL;
        a->cur = nb;
        b = nb;
    }
    void *p = (char *)b->data + b->used;
    b->used += need;
    /* Zeroed on hand-out rather than per block, so reset does not need to clear anything. */
    memset(p, 0, need);
    return p;
}

char *oc_arena_strndup(oc_arena_t *a, const char *s, size_t n)
{
    if (!s) return NULL;
    size_t len = strnlen(s, n);
    if (len == SIZE_MAX) return NULL;
    char *p = oc_arena_alloc(a, len + 1);
    if (!p) return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *oc_arena_strdup(oc_arena_t *a, const char *s)
{
    if (!s) return NULL;
    return oc_arena_strndup(a, s, strlen(s));
}

char *oc_arena_sprintf(oc_arena_t *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = NULL;
    if (n >= 0) {
        p = oc_arena_alloc(a, (size_t)n + 1);
        if (p) vsnprintf(p, (size_t)n + 1, fmt, ap2);
    }
    va_end(ap2);
    return p;
}

int oc_arena_defer(oc_arena_t *a, void (*fn)(void *), void *ptr)
{
    if (!fn) return 0;
    cleanup_t *c = a ? oc_arena_alloc(a, sizeof(*c)) : NULL;
    if (!c) {
        /* The contract promises nothing leaks: the caller handed ownership over either way. */
        fn(ptr);
        return -1;
    }
    c->fn = fn;
    c->ptr = ptr;
    c->next = a->cleanups;
    a->cleanups = c;
    return 0;
}

static void *pb_alloc(void *data, size_t size)
{
    return oc_arena_alloc(data, size);
}

static void pb_free(void *data, void *ptr)
{
    /* Arena memory goes away with the request; protobuf_c_message_free_unpacked (called by
     * unpack on a malformed message) must therefore be harmless. */
    (void)data;
    (void)ptr;
}

void oc_arena_protobuf_allocator(oc_arena_t *a, ProtobufCAllocator *out)
{
    out->alloc = pb_alloc;
    out->free = pb_free;
    out->allocator_data = a;
}

static void *pb_alloc_budget(void *data, size_t size)
{
    oc_arena_budget_t *b = data;
    /* Charge what the arena really spends (at least 1 byte, rounded to the alignment). */
    size_t need = size == 0 ? ALIGN : size > SIZE_MAX - ALIGN ? SIZE_MAX : round_up(size);

    if (need > b->left) {
        b->exhausted = true;
        return NULL;
    }
    void *p = oc_arena_alloc(b->arena, size);
    if (p != NULL) {
        b->left -= need;
        b->used += need;
    }
    return p;
}

void oc_arena_protobuf_allocator_budget(oc_arena_t *a, size_t budget, oc_arena_budget_t *b,
                                        ProtobufCAllocator *out)
{
    b->arena = a;
    b->left = budget;
    b->used = 0;
    b->exhausted = false;
    out->alloc = pb_alloc_budget;
    out->free = pb_free;
    out->allocator_data = b;
}
