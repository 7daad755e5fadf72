/* Bounded LRU cache with TTL: chained hash table plus a recency list, under one mutex. */
#include "omnichat/lru.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/util.h"

typedef struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* recency list, most recent first */
    int64_t expires_us;        /* monotonic; INT64_MAX: never */
    size_t len;
    char *key;
    char *val; /* NUL-terminated after len */
} entry_t;

struct oc_lru {
    pthread_mutex_t mu;
    entry_t **buckets;
    size_t nbuckets;
    size_t size, capacity;
    int64_t ttl_us;
    entry_t *head, *tail;
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a: keys are ids, not attacker-chosen floods */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

oc_lru_t *oc_lru_create(size_t capacity, int64_t ttl_ms)
{
    oc_lru_t *c = calloc(1, sizeof *c);

    if (c == NULL) return NULL;
    c->capacity = capacity > 0 ? capacity : 1;
    c->nbuckets = 64;
    while (c->nbuckets < c->capacity)
        c->nbuckets <<= 1;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->ttl_us = ttl_ms > 0 ? ttl_ms * 1000 : INT64_MAX;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

static void free_entry(entry_t *e)
{
    free(e->key);
    free(e->val);
    free(e);
}

void oc_lru_destroy(oc_lru_t *c)
{
    if (c == NULL) return;
    for (entry_t *e = c->head, *n; e != NULL; e = n) {
        n = e->next;
        free_entry(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c->buckets);
    free(c);
}

static void list_unlink(oc_lru_t *c, entry_t *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(oc_lru_t *c, entry_t *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL) c->head->prev = e;
    c->head = e;
    if (c->tail == NULL) c->tail = e;
}

/* Finds the entry and the link pointing at it (for removal). Caller holds the lock. */
static entry_t **find(oc_lru_t *c, const char *key)
{
    entry_t **pp = &c->buckets[hash(key) & (c->nbuckets - 1)];

    while (*pp != NULL && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

static void drop(oc_lru_t *c, entry_t **pp)
{
    entry_t *e = *pp;

    *pp = e->hnext;
    list_unlink(c, e);
    c->size--;
    free_entry(e);
}

bool oc_lru_get(oc_lru_t *c, const char *key, oc_arena_t *arena, char **val, size_t *len)
{
    bool hit = false;

    if (c == NULL) return false;
    pthread_mutex_lock(&c->mu);
    entry_t **pp = find(c, key);
    if (*pp != NULL) {
        if ((*pp)->expires_us <= oc_mono_us()) {
            drop(c, pp);
        } else {
            entry_t *e = *pp;
            char *copy = oc_arena_alloc(arena, e->len + 1);
            if (copy != NULL) {
                memcpy(copy, e->val, e->len);
                *val = copy;
                *len = e->len;
                hit = true;
                list_unlink(c, e);
                list_push_front(c, e);
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void oc_lru_put(oc_lru_t *c, const char *key, const void *val, size_t len)
{
    entry_t *e;

    if (c == NULL) return;
    e = calloc(1, sizeof *e);
    if (e == NULL) return;
    e->key = strdup(key);
    e->val = malloc(len + 1);
    if (e->key == NULL || e->val == NULL) {
        free_entry(e);
        return;
    }
    if (len > 0) memcpy(e->val, val, len);
    e->val[len] = '\0';
    e->len = len;
    pthread_mutex_lock(&c->mu);
    e->expires_us = c->ttl_us == INT64_MAX ? INT64_MAX : oc_mono_us() + c->ttl_us;
    entry_t **pp = find(c, key);
    if (*pp != NULL) drop(c, pp);
    while (c->size >= c->capacity && c->tail != NULL)
        drop(c, find(c, c->tail->key));
    pp = &c->buckets[hash(key) & (c->nbuckets - 1)];
    e->hnext = *pp;
    *pp = e;
    list_push_front(c, e);
    c->size++;
    pthread_mutex_unlock(&c->mu);
}

void oc_lru_remove(oc_lru_t *c, const char *key)
{
    if (c == NULL) return;
    pthread_mutex_lock(&c->mu);
    entry_t **pp = find(c, key);
    if (*pp != NULL) drop(c, pp);
    pthread_mutex_unlock(&c->mu);
}

size_t oc_lru_size(oc_lru_t *c)
{
    size_t n;

    if (c == NULL) return 0;
    pthread_mutex_lock(&c->mu);
    n = c->size;
    pthread_mutex_unlock(&c->mu);
    return n;
}
