/* The outbound engine's pure policy: backoff, retry window, verdicts of both delivery
 * guarantees, lease owners, request fingerprints. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <time.h>
#include <string.h>

#include "omnichat/util.h"
#include "outbound.h"

#include "test_main.h"

static const conn_policy_t policy = {8, 1000, 300000, 82800LL * 1000, CONN_DELIVERY_RETRY_KEY,
                                     0, false};

static void test_backoff_bounds(void)
{
    for (int a = 0; a < 40; a++) {
        int64_t full = 1000;
        for (int i = 0; i < a && full < 300000; i++)
            full *= 2;
        if (full > 300000) full = 300000;
        int64_t lo = conn_backoff_ms(&policy, a, 0.0), hi = conn_backoff_ms(&policy, a, 1.0);
        CU_ASSERT_EQUAL(hi, full);
        CU_ASSERT_EQUAL(lo, full / 2);
        for (double j = 0.0; j <= 1.0; j += 0.125) {
            int64_t d = conn_backoff_ms(&policy, a, j);
            CU_ASSERT_TRUE(d >= full / 2 && d <= full);
        }
    }
    CU_ASSERT_EQUAL(conn_backoff_ms(&policy, 0, 1.0), 1000);
    CU_ASSERT_EQUAL(conn_backoff_ms(&policy, 3, 1.0), 8000);
    CU_ASSERT_EQUAL(conn_backoff_ms(&policy, 1000, 1.0), 300000); /* no overflow */
    CU_ASSERT_EQUAL(conn_backoff_ms(&policy, -1, 1.0), 1000);
    CU_ASSERT_EQUAL(conn_backoff_ms(&policy, 0, 7.0), 1000); /* jitter clamped */
}

static void test_attempt_limit(void)
{
    int64_t now = 1700000000000LL;

    CU_ASSERT_TRUE(conn_next_attempt_ms(&policy, 0, now, now, 1.0, false) == now + 1000);
    CU_ASSERT_TRUE(conn_next_attempt_ms(&policy, 6, now, now, 1.0, false) > now);
    /* The 8th call (attempts = 7 before it) was the last. */
    CU_ASSERT_EQUAL(conn_next_attempt_ms(&policy, 7, now, now, 1.0, false), 0);
    CU_ASSERT_EQUAL(conn_next_attempt_ms(&policy, 100, now, now, 0.0, false), 0);
}

static void test_window_cutoff(void)
{
    int64_t created = 1700000000000LL;
    int64_t window_end = created + policy.window_ms;

    /* Well inside the window. */
    CU_ASSERT_TRUE(conn_next_attempt_ms(&policy, 2, created + 60000, created, 1.0, false) > 0);
    /* The next attempt would land past created + window: give up. */
    CU_ASSERT_EQUAL(conn_next_attempt_ms(&policy, 2, window_end - 1000, created, 1.0, false), 0);
    /* An attempt due exactly at the end would find the window closed: not scheduled. */
    CU_ASSERT_EQUAL(conn_next_attempt_ms(&policy, 0, window_end - 1000, created, 1.0, false), 0);
    CU_ASSERT_EQUAL(conn_next_attempt_ms(&policy, 0, window_end - 1001, created, 1.0, false),
                    window_end - 1);
    CU_ASSERT_EQUAL(conn_next_attempt_ms(&policy, 0, window_end, created, 0.0, false), 0);
    /* The same boundary as the check made before a push. */
    CU_ASSERT_FALSE(conn_window_closed(&policy, window_end - 1, created));
    CU_ASSERT_TRUE(conn_window_closed(&policy, window_end, created));
    CU_ASSERT_TRUE(conn_window_closed(&policy, window_end + 86400000LL, created));
    CU_ASSERT_FALSE(conn_window_closed(&policy, window_end, 0)); /* unknown creation time */
}

#define ST(name) OMNICHAT__PERSISTENCE__V1__MESSAGE_STATUS__MESSAGE_STATUS_##name
#define CAT(name) OMNICHAT__PERSISTENCE__V1__ERROR_CATEGORY__ERROR_CATEGORY_##name

/* Finding: a retry past LINE's 24 h key life must not call LINE at all. */
static void test_window_verdict(void)
{
    int64_t created = 1700000000000LL;
    conn_attempt_t a = {ST(UNKNOWN), CAT(TIMEOUT), 3, created, created + policy.window_ms,
                        1.0,         false};
    conn_verdict_t v;

    CU_ASSERT_TRUE(conn_pre_verdict(&policy, &a, &v));
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN); /* may have been delivered: unknown for good */
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
    CU_ASSERT_EQUAL(v.category, CAT(TIMEOUT));
    CU_ASSERT_STRING_EQUAL(v.detail, "provider retry window closed; delivery unknown");

    a.prior_status = ST(PENDING); /* last attempt was a clean transient failure */
    a.prior_category = CAT(PROVIDER_ERROR);
    CU_ASSERT_TRUE(conn_pre_verdict(&policy, &a, &v));
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_FAILED);
    CU_ASSERT_EQUAL(v.category, CAT(PROVIDER_ERROR));
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
    CU_ASSERT_STRING_EQUAL(v.detail, "provider retry window closed");

    a.prior_category = 0; /* never attempted: still a category */
    CU_ASSERT_TRUE(conn_pre_verdict(&policy, &a, &v));
    CU_ASSERT_EQUAL(v.category, CAT(INTERNAL_ERROR));

    a.now_ms = created + policy.window_ms - 1;
    CU_ASSERT_FALSE(conn_pre_verdict(&policy, &a, &v));
}

static conn_class_t cls_of(conn_outcome_t o, int category, const char *detail)
{
    conn_class_t c;

    memset(&c, 0, sizeof c);
    c.outcome = o;
    c.category = category;
    snprintf(c.detail, sizeof c.detail, "%s", detail);
    return c;
}

/* Finding: giving up after an UNKNOWN outcome ends UNKNOWN for good, after a clean RETRY FAILED. */
static void test_settle_give_up(void)
{
    int64_t now = 1700000000000LL;
    conn_attempt_t a = {ST(PENDING), 0, 7, now, now, 1.0, true}; /* the 8th and last call */
    conn_class_t c = cls_of(CONN_OUT_UNKNOWN, CAT(TIMEOUT), "timed out after 500 ms");
    conn_verdict_t v;

    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
    CU_ASSERT_EQUAL(v.category, CAT(TIMEOUT));
    CU_ASSERT_STRING_EQUAL(v.detail,
                           "timed out after 500 ms; gave up after 8 attempts; delivery unknown");

    c = cls_of(CONN_OUT_RETRY, CAT(PROVIDER_ERROR), "LINE answered 500");
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_FAILED);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
    CU_ASSERT_STRING_EQUAL(v.detail, "LINE answered 500; gave up after 8 attempts");

    /* A clean 500 on the retry of an UNKNOWN attempt settles nothing: still unknown. */
    a.prior_status = ST(UNKNOWN);
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
    CU_ASSERT_EQUAL(v.category, CAT(PROVIDER_ERROR));

    /* Not the last call: retried, UNKNOWN kept, scheduled. */
    a.attempts = 1;
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_TRUE(v.next_attempt_at_ms > now);
    a.prior_status = ST(PENDING);
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_RETRY);
    CU_ASSERT_TRUE(v.next_attempt_at_ms > now);

    /* The window cuts the schedule short: the same two endings. */
    a.now_ms = now + policy.window_ms - 10;
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_FAILED);
    c = cls_of(CONN_OUT_UNKNOWN, CAT(NETWORK_ERROR), "connection to LINE lost after sending");
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
}

static void test_settle_after_unknown(void)
{
    int64_t now = 1700000000000LL;
    conn_attempt_t a = {ST(UNKNOWN), CAT(TIMEOUT), 1, now, now, 1.0, true};
    conn_class_t c;
    conn_verdict_t v;

    /* Sent and failed-for-cause settle an unknown message. */
    c = cls_of(CONN_OUT_SENT, 0, "");
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_SENT);
    CU_ASSERT_EQUAL(v.category, 0);
    CU_ASSERT_STRING_EQUAL(v.detail, "");
    c = cls_of(CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), "LINE rejected the request (400)");
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_FAILED); /* the same request was refused both times */

    /* A revoked token or a quota says nothing about the earlier attempt. */
    c = cls_of(CONN_OUT_FAILED, CAT(AUTH_ERROR), "LINE rejected the access token (401)");
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
    CU_ASSERT_EQUAL(v.category, CAT(AUTH_ERROR));
    CU_ASSERT_STRING_EQUAL(v.detail, "LINE rejected the access token (401); delivery unknown");

    /* Neither does a fail-fast without a provider call. */
    a.called = false;
    c = cls_of(CONN_OUT_FAILED, CAT(AUTH_ERROR), "channel account needs new credentials");
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);

    /* For a pending message a fail-fast is a plain failure. */
    a.prior_status = ST(PENDING);
    conn_settle(&policy, &a, &c, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_FAILED);
    CU_ASSERT_EQUAL(v.category, CAT(AUTH_ERROR));
    CU_ASSERT_STRING_EQUAL(v.detail, "channel account needs new credentials");
}

/* Finding: a fresh owner per attempt, "<instance>:<uuid>", never over persistence's 128 bytes. */
static void test_lease_owner(void)
{
    char a[CONN_LEASE_OWNER_MAX + 1], b[CONN_LEASE_OWNER_MAX + 1];
    char long_id[300];

    CU_ASSERT_EQUAL(conn_lease_owner("host-1-abcd", a), OC_OK);
    CU_ASSERT_EQUAL(conn_lease_owner("host-1-abcd", b), OC_OK);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_EQUAL(strncmp(a, "host-1-abcd:", 12), 0);
    CU_ASSERT_TRUE(oc_uuid_valid(a + 12));
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    CU_ASSERT_EQUAL(conn_lease_owner(long_id, a), OC_OK);
    CU_ASSERT_EQUAL(strlen(a), CONN_LEASE_OWNER_MAX);
    CU_ASSERT_TRUE(oc_uuid_valid(a + CONN_INSTANCE_ID_MAX + 1));
    CU_ASSERT_EQUAL(a[CONN_INSTANCE_ID_MAX], ':');
}

static void test_fingerprint(void)
{
    char a[CONN_FINGERPRINT_LEN + 1], b[CONN_FINGERPRINT_LEN + 1];
    const char *conv = "0191d7a2-3b4c-7d5e-8f60-718293a4b5c6";

    conn_fingerprint(conv, "hello", "agent-1", "Ann", a);
    conn_fingerprint(conv, "hello", "agent-1", "Ann", b);
    CU_ASSERT_EQUAL(strlen(a), CONN_FINGERPRINT_LEN);
    CU_ASSERT_STRING_EQUAL(a, b);
    /* Upper-case spelling of the same conversation id is the same request. */
    conn_fingerprint("0191D7A2-3B4C-7D5E-8F60-718293A4B5C6", "hello", "agent-1", "Ann", b);
    CU_ASSERT_STRING_EQUAL(a, b);
    conn_fingerprint(conv, "hello!", "agent-1", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    conn_fingerprint(conv, "hello", "agent-2", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    conn_fingerprint(conv, "hello", "agent-1", "", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    conn_fingerprint("0191d7a2-3b4c-7d5e-8f60-718293a4b5c7", "hello", "agent-1", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    /* Length prefixes: moving bytes between fields changes the digest. */
    conn_fingerprint(conv, "helloagent-1", "", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    conn_fingerprint(conv, "hell", "oagent-1", "Ann", b);
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
}

/* A window of 0 is "no limit" (Meta has no key that dies), never "always closed". */
static void test_window_zero_means_no_limit(void)
{
    conn_policy_t p = policy;
    int64_t created = 1000000, years = 10LL * 365 * 86400 * 1000;
    conn_attempt_t a = {
        .prior_status = ST(PENDING), .created_at_ms = created, .now_ms = created + years};
    conn_verdict_t v;

    p.window_ms = 0;
    CU_ASSERT_FALSE(conn_window_closed(&p, created + years, created));
    CU_ASSERT_FALSE(conn_pre_verdict(&p, &a, &v));
    CU_ASSERT_TRUE(conn_next_attempt_ms(&p, 0, created + years, created, 1.0, false) > 0);
    /* The same attempt with LINE's window is cut off. */
    CU_ASSERT_TRUE(conn_pre_verdict(&policy, &a, &v));
}

/* Echo confirms: an unknown outcome waits the grace period for its echo before any re-send. */
static void test_echo_unknown_waits_the_grace(void)
{
    conn_policy_t p = policy;
    conn_attempt_t a = {.prior_status = ST(PENDING),
                        .attempts = 0,
                        .now_ms = 5000000,
                        .created_at_ms = 5000000,
                        .jitter01 = 1.0,
                        .called = true};
    conn_class_t timeout = {.outcome = CONN_OUT_UNKNOWN, .category = CAT(TIMEOUT)};
    conn_class_t busy = {.outcome = CONN_OUT_RETRY, .category = CAT(PROVIDER_ERROR)};
    conn_verdict_t v;

    p.delivery = CONN_DELIVERY_ECHO_CONFIRMS;
    p.window_ms = 0;
    p.echo_grace_ms = 60000;
    conn_settle(&p, &a, &timeout, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_TRUE(v.next_attempt_at_ms >= a.now_ms + 60000);
    /* A clean failure (nothing delivered) is retried on the ordinary backoff. */
    conn_settle(&p, &a, &busy, &v);
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_RETRY);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, a.now_ms + 1000);
    /* With a retry key the unknown outcome is retried on the backoff too. */
    conn_settle(&policy, &a, &timeout, &v);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, a.now_ms + 1000);
}

/* After the grace: no echo came. Without echo_resend the message stays unknown for good and
 * the provider is not called; with it, the engine sends again (at least once). */
static void test_echo_after_grace(void)
{
    conn_policy_t p = policy;
    conn_attempt_t a = {.prior_status = ST(UNKNOWN),
                        .prior_category = CAT(TIMEOUT),
                        .attempts = 1,
                        .now_ms = 5000000,
                        .created_at_ms = 4000000};
    conn_verdict_t v;

    p.delivery = CONN_DELIVERY_ECHO_CONFIRMS;
    p.window_ms = 0;
    p.echo_resend = false;
    CU_ASSERT_TRUE(conn_pre_verdict(&p, &a, &v));
    CU_ASSERT_EQUAL(v.outcome, CONN_OUT_UNKNOWN);
    CU_ASSERT_EQUAL(v.next_attempt_at_ms, 0);
    CU_ASSERT_EQUAL(v.category, CAT(TIMEOUT));
    CU_ASSERT_STRING_EQUAL(v.detail, "no echo within the grace period; delivery unknown");
    p.echo_resend = true;
    CU_ASSERT_FALSE(conn_pre_verdict(&p, &a, &v));
    /* A pending message (nothing may have been delivered) is always sent. */
    p.echo_resend = false;
    a.prior_status = ST(PENDING);
    CU_ASSERT_FALSE(conn_pre_verdict(&p, &a, &v));
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("conn_policy", NULL, NULL);
    CU_add_test(s, "backoff bounds and jitter", test_backoff_bounds);
    CU_add_test(s, "attempt limit", test_attempt_limit);
    CU_add_test(s, "retry window cut-off", test_window_cutoff);
    CU_add_test(s, "retry window closed before a push", test_window_verdict);
    CU_add_test(s, "giving up: unknown stays unknown", test_settle_give_up);
    CU_add_test(s, "an earlier unknown outcome is not forgotten", test_settle_after_unknown);
    CU_add_test(s, "lease owner per attempt", test_lease_owner);
    CU_add_test(s, "fingerprint stability and difference", test_fingerprint);
    CU_add_test(s, "a retry window of 0 means no limit", test_window_zero_means_no_limit);
    CU_add_test(s, "echo confirms: unknown waits the grace period",
                test_echo_unknown_waits_the_grace);
    CU_add_test(s, "echo confirms: after the grace, resend or unknown for good",
                test_echo_after_grace);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
