/* conn_deliver against a fake persistence and a fake LINE: what CompleteOutbound records. */
#include <CUnit/Basic.h>

#include "fake_line.h"
#include "outbound.h"

#include "test_main.h"

#define ST(name) PBE(MESSAGE_STATUS__MESSAGE_STATUS_##name)
#define CAT(name) PBE(ERROR_CATEGORY__ERROR_CATEGORY_##name)
#define OUTCOME(name) PBE(OUTBOUND_OUTCOME__OUTBOUND_OUTCOME_##name)
#define OWNER "unit:6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"
#define RETRY_KEY "7f1d6a52-3c4b-4d3e-9a9b-0123456789ab"

/* An outbound message as ClaimDueOutbound hands it over. */
static PB(Message) message(int status, int category, int attempts, int64_t created_at_ms)
{
    PB(Message) m = PB_INIT(MESSAGE);

    m.message_id = (char *)FAKE_MESSAGE;
    m.tenant_id = (char *)FAKE_TENANT;
    m.channel_account_id = (char *)FAKE_ACCOUNT;
    m.direction = PBE(DIRECTION__DIRECTION_OUTBOUND);
    m.content_type = PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT);
    m.content_text = (char *)"hello";
    m.status = status;
    m.error_category = category;
    m.attempts = attempts;
    m.created_at_ms = created_at_ms;
    m.provider_retry_key = (char *)RETRY_KEY;
    return m;
}

/* Runs one attempt; returns the CompleteOutbound request it made (in arena). */
static PB(CompleteOutboundRequest) * deliver(oc_arena_t *arena, const PB(Message) * m)
{
    PB(Message) *out = NULL;
    oc_error_t err;
    oc_err_t rc;

    oc_error_clear(&err);
    rc = conn_deliver(&L, arena, "req-unit", OWNER, m, "U4af4980629a1b2c3d4e5f60718293a4b", &out,
                      &err);
    CU_ASSERT_EQUAL(rc, OC_OK);
    if (rc != OC_OK) fprintf(stderr, "    conn_deliver: %s\n", err.msg);
    CU_ASSERT_PTR_NOT_NULL(out);
    return fake_last_complete(arena);
}

static int64_t day_ago(void)
{
    return oc_now_ms() - 24LL * 3600 * 1000;
}

/* HIGH: a message past LINE's retry-key life is settled without calling LINE. */
static void test_window_closed_unknown_stays_unknown(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(UNKNOWN), CAT(TIMEOUT), 2, day_ago());
    PB(CompleteOutboundRequest) * c;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(fake_push_calls(), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(UNKNOWN));
    CU_ASSERT_EQUAL(c->next_attempt_at_ms, 0); /* unknown for good: never claimed again */
    CU_ASSERT_TRUE(c->no_provider_call);
    CU_ASSERT_EQUAL(c->error_category, CAT(TIMEOUT));
    CU_ASSERT_STRING_EQUAL(c->error_detail, "provider retry window closed; delivery unknown");
    CU_ASSERT_STRING_EQUAL(c->lease_owner, OWNER);
    oc_arena_destroy(arena);
}

static void test_window_closed_pending_fails(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(PENDING), CAT(PROVIDER_ERROR), 3, day_ago());
    PB(CompleteOutboundRequest) * c;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(fake_push_calls(), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(FAILED));
    CU_ASSERT_EQUAL(c->error_category, CAT(PROVIDER_ERROR));
    CU_ASSERT_STRING_EQUAL(c->error_detail, "provider retry window closed");
    CU_ASSERT_TRUE(c->no_provider_call);
    oc_arena_destroy(arena);
}

/* A message inside the window is pushed, with its retry key, under the caller's lease owner. */
static void test_inside_window_pushes_with_key(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(UNKNOWN), CAT(TIMEOUT), 1, oc_now_ms() - 3600 * 1000);
    PB(CompleteOutboundRequest) * c;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(fake_push_calls(), 1);
    CU_ASSERT_STRING_EQUAL(FL.last_retry_key, RETRY_KEY);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(SENT));
    CU_ASSERT_FALSE(c->no_provider_call);
    CU_ASSERT_STRING_EQUAL(c->lease_owner, OWNER);
    CU_ASSERT_STRING_EQUAL(c->external_message_id, "461230966842064897");
    oc_arena_destroy(arena);
}

/* Giving up after an unknown outcome: UNKNOWN for good, never FAILED. */
static void test_give_up_after_unknown(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(UNKNOWN), CAT(TIMEOUT), 7, oc_now_ms());
    PB(CompleteOutboundRequest) * c;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    L.cfg.api_timeout_ms = 200;
    FL.push_delay_ms = 600; /* the answer is lost to our timeout */
    c = deliver(arena, &m);
    L.cfg.api_timeout_ms = 1000;
    CU_ASSERT_EQUAL(fake_push_calls(), 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(UNKNOWN));
    CU_ASSERT_EQUAL(c->next_attempt_at_ms, 0);
    CU_ASSERT_EQUAL(c->error_category, CAT(TIMEOUT));
    CU_ASSERT_STRING_EQUAL(c->error_detail,
                           "timed out after 200 ms; gave up after 8 attempts; delivery unknown");
    CU_ASSERT_FALSE(c->no_provider_call);
    oc_arena_destroy(arena);
}

/* Giving up after a clean transient failure of a pending message stays FAILED. */
static void test_give_up_after_retry_fails(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(PENDING), CAT(PROVIDER_ERROR), 7, oc_now_ms());
    PB(CompleteOutboundRequest) * c;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    FL.push_status = 500;
    c = deliver(arena, &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(FAILED));
    CU_ASSERT_EQUAL(c->error_category, CAT(PROVIDER_ERROR));
    CU_ASSERT_STRING_EQUAL(c->error_detail, "LINE answered 500; gave up after 8 attempts");
    oc_arena_destroy(arena);
}

/* LOW: never a push without X-Line-Retry-Key. */
static void test_no_retry_key_no_push(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(PENDING), 0, 0, oc_now_ms());
    PB(CompleteOutboundRequest) * c;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    m.provider_retry_key = (char *)"";
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(fake_push_calls(), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(FAILED));
    CU_ASSERT_EQUAL(c->error_category, CAT(INTERNAL_ERROR));
    CU_ASSERT_TRUE(c->no_provider_call);
    CU_ASSERT_STRING_EQUAL(c->error_detail, "message has no provider retry key");

    m.provider_retry_key = (char *)"not-a-uuid";
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(fake_push_calls(), 0);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(FAILED));

    /* The client refuses too, whoever calls it. */
    oc_http_result_t res;
    line_http_result_init(&res);
    CU_ASSERT_EQUAL(line_api_push(&L, FAKE_TOKEN, strlen(FAKE_TOKEN), "Ux", "hi", "", 1000, &res),
                    OC_E_INVALID);
    CU_ASSERT_EQUAL(line_api_push(&L, FAKE_TOKEN, strlen(FAKE_TOKEN), "Ux", "hi", NULL, 1000, &res),
                    OC_E_INVALID);
    oc_http_result_dispose(&res);
    CU_ASSERT_EQUAL(fake_push_calls(), 0);
    oc_arena_destroy(arena);
}

/* An account registered but never given credentials (AUTH_FAILED): fail fast, no call. */
static void test_account_without_credentials(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(PENDING), 0, 0, oc_now_ms());
    PB(CompleteOutboundRequest) * c;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED), false);
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(fake_push_calls(), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(FAILED));
    CU_ASSERT_EQUAL(c->error_category, CAT(AUTH_ERROR));
    CU_ASSERT_TRUE(c->no_provider_call);

    /* ACTIVE but no token (credentials removed): the same, still no call. */
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), false);
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(fake_push_calls(), 0);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(FAILED));
    CU_ASSERT_EQUAL(c->error_category, CAT(AUTH_ERROR));
    CU_ASSERT_TRUE(c->no_provider_call);
    oc_arena_destroy(arena);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (fake_start() != 0) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("conn_deliver", NULL, NULL);
    CU_add_test(s, "window closed: unknown stays unknown, no push",
                test_window_closed_unknown_stays_unknown);
    CU_add_test(s, "window closed: pending fails, no push", test_window_closed_pending_fails);
    CU_add_test(s, "inside the window: push with the key", test_inside_window_pushes_with_key);
    CU_add_test(s, "give up after unknown: unknown for good", test_give_up_after_unknown);
    CU_add_test(s, "give up after clean retries: failed", test_give_up_after_retry_fails);
    CU_add_test(s, "no retry key: no push", test_no_retry_key_no_push);
    CU_add_test(s, "account without credentials: fail fast", test_account_without_credentials);
    failed = oc_test_run();
    fake_stop();
    return failed == 0 ? 0 : 1;
}
