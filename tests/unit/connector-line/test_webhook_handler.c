/* The webhook handler over real HTTP against a fake persistence: statuses and the deadline. */
#include <CUnit/Basic.h>

#include "fake_line.h"
#include "inbound.h"

#include "test_main.h"

#define PATH "/webhooks/line/" FAKE_ACCOUNT
#define ONE_EVENT \
    "{\"destination\":\"" FAKE_BOT "\",\"events\":[{\"type\":\"message\",\"timestamp\":" \
    "1462629479859,\"source\":{\"type\":\"user\",\"userId\":" \
    "\"U4af4980629a1b2c3d4e5f60718293a4b\"}" \
    ",\"message\":{\"id\":\"5001\",\"type\":\"text\",\"text\":\"hi\"}}]}"

static oc_http_server_t *hook;
static int hook_port;

static void sign(const char *body, char out[64])
{
    line_sign(FAKE_SECRET, strlen(FAKE_SECRET), body, strlen(body), out);
}

static int post(const char *body)
{
    char sig[64], header[96];

    sign(body, sig);
    snprintf(header, sizeof header, "x-line-signature: %s", sig);
    return fake_http_post(hook_port, PATH, body, header);
}

/* A persistence refusal after our own validation is our bug: 500, so LINE redelivers. */
static void test_persist_invalid_argument_is_500(void)
{
    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    F.persist_error = OC_E_INVALID;
    CU_ASSERT_EQUAL(post(ONE_EVENT), 500);
    CU_ASSERT_EQUAL(fake_calls(M_PERSIST), 1);
    F.persist_error = OC_E_UNAVAILABLE;
    CU_ASSERT_EQUAL(post(ONE_EVENT), 503);
    F.persist_error = OC_OK;
    CU_ASSERT_EQUAL(post(ONE_EVENT), 200);
}

/* Bad events after a good signature: 200, the good ones stored; only non-JSON is a 400. */
static void test_content_problems_are_not_4xx(void)
{
    const char *mixed =
        "{\"destination\":\"" FAKE_BOT "\",\"big\":123456789012345678901234567890,\"events\":["
        "{\"type\":\"message\",\"timestamp\":1e300,\"source\":{\"type\":\"user\",\"userId\":"
        "\"U1\"},\"message\":{\"id\":\"1\",\"type\":\"text\",\"text\":\"x\"}},"
        "{\"type\":\"message\",\"timestamp\":1462629479859,\"source\":{\"type\":\"user\","
        "\"userId\":\"U2\"},\"message\":{\"id\":\"2\",\"type\":\"text\",\"text\":\"a\\u0000b\"}}]}";

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    CU_ASSERT_EQUAL(post(mixed), 200);
    CU_ASSERT_EQUAL(fake_calls(M_PERSIST), 1);
    CU_ASSERT_EQUAL(post("{\"destination\":\"x\",\"events\":[1,{\"type\":\"message\"}]}"), 200);
    CU_ASSERT_EQUAL(fake_calls(M_PERSIST), 1); /* nothing valid, nothing to store */
    CU_ASSERT_EQUAL(post("not json"), 400);
    CU_ASSERT_EQUAL(post("{\"destination\":\"x\"}"), 400);
}

/* LOW: one deadline for the whole request, shared by the account look-up and PersistInbound. */
static void test_one_deadline_per_request(void)
{
    int64_t t0;
    long took_ms;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
    L.cfg.webhook_timeout_ms = 800;
    F.sleep_ms[M_RESOLVE] = 500;
    F.sleep_ms[M_PERSIST] = 3000;
    t0 = oc_mono_us();
    CU_ASSERT_EQUAL(post(ONE_EVENT), 503);
    took_ms = (long)((oc_mono_us() - t0) / 1000);
    /* Each call with its own 800 ms would answer after 500 + 800 ms. */
    CU_ASSERT_TRUE(took_ms >= 750 && took_ms < 1100);
    if (took_ms >= 1100) fprintf(stderr, "    answered after %ld ms\n", took_ms);

    /* The look-up alone overruns the budget: 503 without calling PersistInbound. */
    fake_reset();
    F.sleep_ms[M_RESOLVE] = 1200;
    CU_ASSERT_EQUAL(post(ONE_EVENT), 503);
    CU_ASSERT_EQUAL(fake_calls(M_PERSIST), 0);
    L.cfg.webhook_timeout_ms = 1500;
    fake_sleep_ms(1300); /* let the fake's sleeping handlers finish */
}

/* An account registered without credentials cannot verify a signature: 401, no crash. */
static void test_account_without_credentials_is_401(void)
{
    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED), false);
    CU_ASSERT_EQUAL(post(ONE_EVENT), 401);
    CU_ASSERT_EQUAL(fake_calls(M_PERSIST), 0);
}

int main(void)
{
    CU_pSuite s;
    oc_error_t err;
    oc_http_route_t route = {"POST", LINE_WEBHOOK_PREFIX, true, conn_webhook_handle, &L};
    oc_http_server_opts_t opts = {
        .listen = "127.0.0.1:0", .threads = 4, .routes = &route, .nroutes = 1};
    int failed;

    oc_error_clear(&err);
    if (fake_start() != 0) return 1;
    hook = oc_http_server_start(&opts, &err);
    if (hook == NULL) return 1;
    hook_port = oc_http_server_port(hook);
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("conn_webhook_handler", NULL, NULL);
    CU_add_test(s, "persistence INVALID_ARGUMENT is 500", test_persist_invalid_argument_is_500);
    CU_add_test(s, "content problems are not 4xx", test_content_problems_are_not_4xx);
    CU_add_test(s, "one deadline per request", test_one_deadline_per_request);
    CU_add_test(s, "account without credentials is 401", test_account_without_credentials_is_401);
    failed = oc_test_run();
    oc_http_server_stop(hook);
    fake_stop();
    return failed == 0 ? 0 : 1;
}
