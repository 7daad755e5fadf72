/* Unit tests of readiness (common/src/ready.c): the cached check, failures, the drain, /readyz. */
#include <CUnit/Basic.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "omnichat/ready.h"
#include "omnichat/util.h"

#include "test_main.h"

static atomic_bool dep_up;
static atomic_int nchecks;
static atomic_int nchanges;

static bool check(void *user, char *reason, size_t n)
{
    (void)user;
    atomic_fetch_add(&nchecks, 1);
    if (atomic_load(&dep_up)) return true;
    snprintf(reason, n, "dependency down");
    return false;
}

static void on_change(void *user, bool ready, const char *reason)
{
    (void)user;
    (void)ready;
    (void)reason;
    atomic_fetch_add(&nchanges, 1);
}

/* Polls until oc_ready_get says `want`, for at most 2 s. */
static bool await_ready(oc_ready_t *r, bool want)
{
    int64_t until = oc_mono_us() + 2000000;
    struct timespec ts = {0, 2000000};

    while (oc_mono_us() < until) {
        if (oc_ready_get(r, NULL, 0) == want) return true;
        nanosleep(&ts, NULL);
    }
    return oc_ready_get(r, NULL, 0) == want;
}

static oc_ready_t *make(int period_ms)
{
    oc_error_t err;
    oc_ready_opts_t o = {.period_ms = period_ms, .check = check, .on_change = on_change};

    oc_error_clear(&err);
    atomic_store(&nchecks, 0);
    atomic_store(&nchanges, 0);
    return oc_ready_create(&o, &err);
}

static void test_not_ready_before_start(void)
{
    char reason[64];
    oc_ready_t *r = make(20);

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_FALSE(oc_ready_get(r, reason, sizeof reason));
    CU_ASSERT_STRING_EQUAL(reason, "starting");
    CU_ASSERT_EQUAL(atomic_load(&nchecks), 0);
    oc_ready_destroy(r);
}

static void test_first_check_runs_at_start_then_follows_the_dependency(void)
{
    char reason[64];
    oc_error_t err;
    oc_ready_t *r = make(20);

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    oc_error_clear(&err);
    atomic_store(&dep_up, true);
    CU_ASSERT_EQUAL(oc_ready_start(r, NULL, &err), OC_OK);
    /* Ready when start returns: no wait for the first period. */
    CU_ASSERT_TRUE(oc_ready_get(r, reason, sizeof reason));
    CU_ASSERT_STRING_EQUAL(reason, "");
    atomic_store(&dep_up, false);
    CU_ASSERT_TRUE(await_ready(r, false));
    CU_ASSERT_FALSE(oc_ready_get(r, reason, sizeof reason));
    CU_ASSERT_STRING_EQUAL(reason, "dependency down");
    atomic_store(&dep_up, true);
    CU_ASSERT_TRUE(await_ready(r, true));
    CU_ASSERT_TRUE(atomic_load(&nchecks) >= 3);
    CU_ASSERT_TRUE(atomic_load(&nchanges) >= 3);
    oc_ready_destroy(r);
}

static void test_a_reported_failure_holds_until_the_next_good_check(void)
{
    char reason[64];
    oc_error_t err;
    oc_ready_t *r = make(300);

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    oc_error_clear(&err);
    atomic_store(&dep_up, true);
    CU_ASSERT_EQUAL(oc_ready_start(r, NULL, &err), OC_OK);
    oc_ready_fail(r, "call failed");
    /* Not ready at once, with the caller's reason (the next check is a period away)... */
    CU_ASSERT_EQUAL(atomic_load(&nchecks), 1);
    CU_ASSERT_FALSE(oc_ready_get(r, reason, sizeof reason));
    CU_ASSERT_STRING_EQUAL(reason, "call failed");
    /* ...and ready again with the next good check. */
    CU_ASSERT_TRUE(await_ready(r, true));
    oc_ready_fail(NULL, "ignored"); /* NULL is fine */
    oc_ready_destroy(r);
}

static void test_drain_is_sticky_and_served_on_readyz(void)
{
    oc_http_response_t resp;
    oc_error_t err;
    oc_ready_t *r = make(20);
    int64_t t0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    oc_error_clear(&err);
    atomic_store(&dep_up, true);
    CU_ASSERT_EQUAL(oc_ready_start(r, NULL, &err), OC_OK);

    memset(&resp, 0, sizeof resp);
    resp.status = 200;
    oc_buf_init(&resp.body, 4096);
    oc_ready_http(r, NULL, &resp);
    CU_ASSERT_EQUAL(resp.status, 200);
    CU_ASSERT_STRING_EQUAL(resp.body.data, "ready\n");
    oc_buf_dispose(&resp.body);

    t0 = oc_mono_us();
    oc_ready_drain(r, 50);
    CU_ASSERT_TRUE(oc_mono_us() - t0 >= 50000); /* the pause is served in full */
    /* Nothing turns a draining service ready again, however long the dependency is fine: an
     * absence, so it is watched over five periods. */
    struct timespec ts = {0, 100000000};
    nanosleep(&ts, NULL);
    CU_ASSERT_FALSE(oc_ready_get(r, NULL, 0));

    memset(&resp, 0, sizeof resp);
    resp.status = 200;
    oc_buf_init(&resp.body, 4096);
    oc_ready_http(r, NULL, &resp);
    CU_ASSERT_EQUAL(resp.status, 503);
    CU_ASSERT_STRING_EQUAL(resp.body.data, "not ready: shutting down\n");
    oc_buf_dispose(&resp.body);
    oc_ready_destroy(r);
    oc_ready_drain(NULL, 10); /* NULL is fine */
    oc_ready_destroy(NULL);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("ready", NULL, NULL);
    CU_add_test(s, "not ready before start", test_not_ready_before_start);
    CU_add_test(s, "first check at start, then follows the dependency",
                test_first_check_runs_at_start_then_follows_the_dependency);
    CU_add_test(s, "a reported failure holds until the next good check",
                test_a_reported_failure_holds_until_the_next_good_check);
    CU_add_test(s, "drain is sticky and served on /readyz",
                test_drain_is_sticky_and_served_on_readyz);
    return oc_test_run();
}
