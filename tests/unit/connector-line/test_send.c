/* SendText helpers: retry backoff and window, request fingerprints, the LRU cache. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <time.h>
#include <string.h>

#include "cache.h"
#include "send.h"

static const line_retry_policy_t policy = {8, 1000, 300000, 82800LL * 1000};

static void test_backoff_bounds(void)
{
    for (int a = 0; a < 40; a++) {
        int64_t full = 1000;
        for (int i = 0; i < a && full < 300000; i++)
            full *= 2;
        if (full > 300000) full = 300000;
        int64_t lo = line_backoff_ms(&policy, a, 0.0), hi = line_backoff_ms(&policy, a, 1.0);
        CU_ASSERT_EQUAL(hi, full);
        CU_ASSERT_EQUAL(lo, full / 2);
        for (double j = 0.0; j <= 1.0; j += 0.125) {
            int64_t d = line_backoff_ms(&policy, a, j);
            CU_ASSERT_TRUE(d >= full / 2 && d <= full);
        }
    }
    CU_ASSERT_EQUAL(line_backoff_ms(&policy, 0, 1.0), 1000);
    CU_ASSERT_EQUAL(line_backoff_ms(&policy, 3, 1.0), 8000);
    CU_ASSERT_EQUAL(line_backoff_ms(&policy, 1000, 1.0), 300000); /* no overflow */
    CU_ASSERT_EQUAL(line_backoff_ms(&policy, -1, 1.0), 1000);
    CU_ASSERT_EQUAL(line_backoff_ms(&policy, 0, 7.0), 1000); /* jitter clamped */
}

static void test_attempt_limit(void)
{
    int64_t now = 1700000000000LL;

    CU_ASSERT_TRUE(line_next_attempt_ms(&policy, 0, now, now, 1.0) == now + 1000);
    CU_ASSERT_TRUE(line_next_attempt_ms(&policy, 6, now, now, 1.0) > now);
    /* The 8th call (attempts = 7 before it) was the last. */
    CU_ASSERT_EQUAL(line_next_attempt_ms(&policy, 7, now, now, 1.0), 0);
    CU_ASSERT_EQUAL(line_next_attempt_ms(&policy, 100, now, now, 0.0), 0);
}

static void test_window_cutoff(void)
{
    int64_t created = 1700000000000LL;
    int64_t window_end = created + policy.window_ms;

    /* Well inside the window. */
    CU_ASSERT_TRUE(line_next_attempt_ms(&policy, 2, created + 60000, created, 1.0) > 0);
    /* The next attempt would land past created + window: give up. */
    CU_ASSERT_EQUAL(line_next_attempt_ms(&policy, 2, window_end - 1000, created, 1.0), 0);
    /* Exactly at the end is still allowed. */
    CU_ASSERT_EQUAL(line_next_attempt_ms(&policy, 0, window_end - 1000, created, 1.0), window_end);
    CU_ASSERT_EQUAL(line_next_attempt_ms(&policy, 0, window_end, created, 0.0), 0);
}

static void test_fingerprint(void)
{
    char a[LINE_FINGERPRINT_LEN + 1], b[LINE_FINGERPRINT_LEN + 1];
    const char *conv = "0191d7a2-3b4c-7d5e-8f60-718293a4b5c6";

    line_fingerprint(conv, "hello", "agent-1", "Ann", a);
    line_fingerprint(conv, "hello", "agent-1", "Ann", b);
    CU_ASSERT_EQUAL(strlen(a), LINE_FINGERPRINT_LEN);
    CU_ASSERT_STRING_EQUAL(a, b);
    /* Upper-case spelling of the same conversation id is the same request. */
    line_fingerprint("0191D7A2-3B4C-7D5E-8F60-718293A4B5C6", "hello", "agent-1", "Ann", b);
    CU_ASSERT_STRING_EQUAL(a, b);
    line_fingerprint(conv, "hello!", "agent-1", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    line_fingerprint(conv, "hello", "agent-2", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    line_fingerprint(conv, "hello", "agent-1", "", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    line_fingerprint("0191d7a2-3b4c-7d5e-8f60-718293a4b5c7", "hello", "agent-1", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    /* Length prefixes: moving bytes between fields changes the digest. */
    line_fingerprint(conv, "helloagent-1", "", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    line_fingerprint(conv, "hell", "oagent-1", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
}

static void test_cache_lru(void)
{
    line_cache_t *c = line_cache_create(2, 0);
    oc_arena_t *arena = oc_arena_create(0);
    char *v;
    size_t n;

    line_cache_put(c, "a", "1", 1);
    line_cache_put(c, "b", "22", 2);
    CU_ASSERT_TRUE(line_cache_get(c, "a", arena, &v, &n)); /* a is now the most recent */
    line_cache_put(c, "c", "333", 3);                      /* evicts b */
    CU_ASSERT_FALSE(line_cache_get(c, "b", arena, &v, &n));
    CU_ASSERT_TRUE(line_cache_get(c, "c", arena, &v, &n));
    CU_ASSERT_EQUAL(n, 3);
    CU_ASSERT_STRING_EQUAL(v, "333");
    line_cache_put(c, "a", "x", 1); /* replace */
    CU_ASSERT_TRUE(line_cache_get(c, "a", arena, &v, &n));
    CU_ASSERT_STRING_EQUAL(v, "x");
    CU_ASSERT_EQUAL(line_cache_size(c), 2);
    line_cache_remove(c, "a");
    CU_ASSERT_FALSE(line_cache_get(c, "a", arena, &v, &n));
    line_cache_destroy(c);

    c = line_cache_create(10, 1); /* 1 ms TTL */
    line_cache_put(c, "k", "v", 1);
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CU_ASSERT_FALSE(line_cache_get(c, "k", arena, &v, &n));
    line_cache_destroy(c);
    oc_arena_destroy(arena);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("line_send", NULL, NULL);
    CU_add_test(s, "backoff bounds and jitter", test_backoff_bounds);
    CU_add_test(s, "attempt limit", test_attempt_limit);
    CU_add_test(s, "retry window cut-off", test_window_cutoff);
    CU_add_test(s, "fingerprint stability and difference", test_fingerprint);
    CU_add_test(s, "LRU cache", test_cache_lru);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed == 0 ? 0 : 1;
}
