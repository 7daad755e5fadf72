/* The bounded LRU cache with TTL: eviction order, replacement, expiry. */
#include <CUnit/Basic.h>
#include <time.h>

#include "omnichat/lru.h"

#include "test_main.h"

static void test_lru(void)
{
    oc_lru_t *c = oc_lru_create(2, 0);
    oc_arena_t *arena = oc_arena_create(0);
    char *v;
    size_t n;

    oc_lru_put(c, "a", "1", 1);
    oc_lru_put(c, "b", "22", 2);
    CU_ASSERT_TRUE(oc_lru_get(c, "a", arena, &v, &n)); /* a is now the most recent */
    oc_lru_put(c, "c", "333", 3);                      /* evicts b */
    CU_ASSERT_FALSE(oc_lru_get(c, "b", arena, &v, &n));
    CU_ASSERT_TRUE(oc_lru_get(c, "c", arena, &v, &n));
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_STRING_EQUAL(v, "333");
    oc_lru_put(c, "a", "x", 1); /* replace */
    CU_ASSERT_TRUE(oc_lru_get(c, "a", arena, &v, &n));
    CU_ASSERT_STRING_EQUAL(v, "x");
    CU_ASSERT_EQUAL(oc_lru_size(c), 2);
    oc_lru_remove(c, "a");
    CU_ASSERT_FALSE(oc_lru_get(c, "a", arena, &v, &n));
    oc_lru_destroy(c);

    c = oc_lru_create(10, 1); /* 1 ms TTL */
    oc_lru_put(c, "k", "v", 1);
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CU_ASSERT_FALSE(oc_lru_get(c, "k", arena, &v, &n));
    oc_lru_destroy(c);
    oc_arena_destroy(arena);
}

static void test_null_cache_holds_nothing(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    char *v = NULL;
    size_t n = 0;

    oc_lru_put(NULL, "a", "1", 1);
    CU_ASSERT_FALSE(oc_lru_get(NULL, "a", arena, &v, &n));
    CU_ASSERT_EQUAL(oc_lru_size(NULL), 0);
    oc_lru_remove(NULL, "a");
    oc_lru_destroy(NULL);
    oc_arena_destroy(arena);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("lru", NULL, NULL);
    CU_add_test(s, "eviction, replacement and expiry", test_lru);
    CU_add_test(s, "a NULL cache holds nothing", test_null_cache_holds_nothing);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
