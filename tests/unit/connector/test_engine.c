/* The connector engine with a fake provider against the fake persistence: both delivery
 * guarantees, the retry worker, and the webhook skeleton with routing by body. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <time.h>

#include "fake_persistence.h"
#include "inbound.h"
#include "outbound.h"
#include "worker.h"

#include "test_main.h"

#define ST(name) PBE(MESSAGE_STATUS__MESSAGE_STATUS_##name)
#define CAT(name) PBE(ERROR_CATEGORY__ERROR_CATEGORY_##name)
#define OUTCOME(name) PBE(OUTBOUND_OUTCOME__OUTBOUND_OUTCOME_##name)
#define OWNER "unit:6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"
#define RETRY_KEY "7f1d6a52-3c4b-4d3e-9a9b-0123456789ab"
#define APP_SECRET "fake-app-secret"
#define HOOK "/webhooks/fake"

static void fake_line_reset(void)
{
}

/* ---------- the fake provider ---------- */

static struct {
    pthread_mutex_t mu;
    int sends;
    conn_outcome_t answer; /* what the next sends classify as */
    char last_token[64];
    char last_retry_key[64];
} P = {.mu = PTHREAD_MUTEX_INITIALIZER, .answer = CONN_OUT_SENT};

static bool fake_send(conn_t *c, const conn_send_t *s, conn_class_t *out)
{
    (void)c;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&P.mu);
    P.sends++;
    snprintf(P.last_token, sizeof P.last_token, "%.*s", (int)s->token_len, s->token);
    snprintf(P.last_retry_key, sizeof P.last_retry_key, "%s",
             s->message->provider_retry_key != NULL ? s->message->provider_retry_key : "");
    out->outcome = P.answer;
    pthread_mutex_unlock(&P.mu);
    if (out->outcome == CONN_OUT_UNKNOWN) out->category = CAT(TIMEOUT);
    if (out->outcome == CONN_OUT_SENT) snprintf(out->external_message_id, 16, "mid.1");
    snprintf(out->detail, sizeof out->detail, "fake");
    return true;
}

static int sends(void)
{
    int n;

    pthread_mutex_lock(&P.mu);
    n = P.sends;
    pthread_mutex_unlock(&P.mu);
    return n;
}

static bool fake_signed(const char *secret, size_t len, const oc_http_request_t *req)
{
    const char *sig = oc_http_header(req, "x-fake-signature");

    return sig != NULL && secret != NULL && oc_ct_equal(sig, strlen(sig), secret, len);
}

/* {"items":[{"page":"...","mid":"...","text":"...","echo_of":"<message id>"?}]} */
static oc_err_t fake_parse(const char *body, size_t len, oc_arena_t *arena, conn_batch_t *out,
                           oc_error_t *err)
{
    json_t *root = json_loadb(body, len, 0, NULL), *items = json_object_get(root, "items"), *it;
    size_t i;

    memset(out, 0, sizeof *out);
    if (!json_is_array(items)) {
        json_decref(root);
        return oc_error_set(err, OC_E_INVALID, "items: must be an array");
    }
    out->items = oc_arena_alloc(arena, (json_array_size(items) + 1) * sizeof *out->items);
    json_array_foreach(items, i, it)
    {
        conn_item_t *x = &out->items[out->nitems++];
        const char *echo_of = json_string_value(json_object_get(it, "echo_of"));
        memset(x, 0, sizeof *x);
        x->channel_type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK);
        x->route_id = oc_arena_strdup(arena, json_string_value(json_object_get(it, "page")));
        x->echo = echo_of != NULL;
        x->echo_message_id = echo_of != NULL ? oc_arena_strdup(arena, echo_of) : NULL;
        x->thread_key = "page:user";
        x->external_user_id = "user";
        x->external_message_id =
            oc_arena_strdup(arena, json_string_value(json_object_get(it, "mid")));
        x->timestamp_ms = 1700000000000;
        x->content_type = PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT);
        x->content_text = oc_arena_strdup(arena, json_string_value(json_object_get(it, "text")));
        x->content_struct_json = "{}";
        x->display_name = x->avatar_url = "";
    }
    json_decref(root);
    return OC_OK;
}

static const int fake_types[] = {PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK),
                                 PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM)};

static conn_provider_t provider = {
    .name = "fake",
    .version = "0",
    .channel_types = fake_types,
    .n_channel_types = 2,
    .delivery = CONN_DELIVERY_RETRY_KEY,
    .routing = CONN_ROUTE_BODY,
    .webhook_path = HOOK,
    .token_in = OC_HTTP_SECRET_FORM,
    .token_name = "access_token",
    .text_unit = CONN_TEXT_CHARACTERS,
    .text_max = 1999,
    .text_rule = "fewer than 2000 characters",
    .token_field = "access_token",
    .secret_scope = CONN_SECRET_PER_APP,
    .send = fake_send,
    .signature_valid = fake_signed,
    .parse = fake_parse,
};

static conn_t C;
static oc_http_server_t *hook;
static int hook_port;

static int start(void)
{
    char target[64];
    oc_error_t err;
    static oc_http_route_t route = {"POST", HOOK, false, conn_webhook_handle, &C};
    oc_http_server_opts_t opts = {
        .listen = "127.0.0.1:0", .threads = 4, .routes = &route, .nroutes = 1};

    oc_error_clear(&err);
    if (fake_pst_start(target, sizeof target) != 0) return -1;
    memset(&C, 0, sizeof C);
    C.p = &provider;
    C.cfg.persistence_timeout_ms = 3000;
    C.cfg.webhook_timeout_ms = 3000;
    C.cfg.api_timeout_ms = 1000;
    C.cfg.max_attempts = 8;
    C.cfg.backoff_base_ms = 100;
    C.cfg.backoff_max_ms = 800;
    C.cfg.retry_window_s = 0;
    C.cfg.echo_grace_ms = 60000;
    C.cfg.lease_seconds = 30;
    C.cfg.worker_interval_ms = 20;
    C.cfg.worker_batch = 8;
    C.cfg.worker_threads = 2;
    C.cfg.instance_id = (char *)"unit";
    C.cfg.app_secret = (char *)APP_SECRET;
    C.vault = oc_vault_create_from_buffer(FAKE_VAULT_KEYS, strlen(FAKE_VAULT_KEYS), &err);
    C.pst = oc_rpc_client_create(target, &err);
    if (C.vault == NULL || C.pst == NULL) return -1;
    fake_vault = C.vault;
    fake_channel_type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK);
    hook = oc_http_server_start(&opts, &err);
    if (hook == NULL) return -1;
    hook_port = oc_http_server_port(hook);
    return 0;
}

static void stop(void)
{
    oc_http_server_stop(hook);
    oc_rpc_client_destroy(C.pst);
    oc_vault_destroy(C.vault);
    fake_pst_stop();
}

static void set_delivery(conn_delivery_t d, bool resend)
{
    provider.delivery = d;
    provider.echo_resend = resend;
    pthread_mutex_lock(&P.mu);
    P.sends = 0;
    P.answer = CONN_OUT_SENT;
    pthread_mutex_unlock(&P.mu);
    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), true);
}

static void answer(conn_outcome_t o)
{
    pthread_mutex_lock(&P.mu);
    P.answer = o;
    pthread_mutex_unlock(&P.mu);
}

static PB(Message) message(int status, int attempts, const char *retry_key)
{
    PB(Message) m = PB_INIT(MESSAGE);

    m.message_id = (char *)FAKE_MESSAGE;
    m.tenant_id = (char *)FAKE_TENANT;
    m.channel_account_id = (char *)FAKE_ACCOUNT;
    m.direction = PBE(DIRECTION__DIRECTION_OUTBOUND);
    m.content_type = PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT);
    m.content_text = (char *)"hello";
    m.status = status;
    m.error_category = status == ST(UNKNOWN) ? CAT(TIMEOUT) : 0;
    m.attempts = attempts;
    m.created_at_ms = oc_now_ms() - 1000;
    m.provider_retry_key = (char *)retry_key;
    return m;
}

static PB(CompleteOutboundRequest) * deliver(oc_arena_t *arena, const PB(Message) * m)
{
    PB(Message) *out = NULL;
    oc_error_t err;

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(conn_deliver(&C, arena, "req-unit", OWNER, m, "page:user", &out, &err), OC_OK);
    return fake_last_complete(arena);
}

/* ---------- outbound: the two delivery guarantees ---------- */

/* Retry key: an unknown outcome is retried, with the same key, on the ordinary backoff. */
static void test_retry_key_retries_unknown_with_the_key(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(PENDING), 0, RETRY_KEY);
    PB(CompleteOutboundRequest) * c;
    int64_t t0 = oc_now_ms();

    set_delivery(CONN_DELIVERY_RETRY_KEY, false);
    answer(CONN_OUT_UNKNOWN);
    c = deliver(arena, &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(UNKNOWN));
    CU_ASSERT_TRUE(c->next_attempt_at_ms > t0 && c->next_attempt_at_ms < t0 + 5000);
    CU_ASSERT_STRING_EQUAL(P.last_token, FAKE_TOKEN);
    m = message(ST(UNKNOWN), 1, RETRY_KEY);
    answer(CONN_OUT_SENT);
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(sends(), 2);
    CU_ASSERT_STRING_EQUAL(P.last_retry_key, RETRY_KEY);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(SENT));
    CU_ASSERT_STRING_EQUAL(c->external_message_id, "mid.1");
    /* Without its key a retry-key provider is never called. */
    m = message(ST(PENDING), 0, "");
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(sends(), 2);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(FAILED));
    CU_ASSERT_TRUE(c->no_provider_call);
    oc_arena_destroy(arena);
}

/* Echo confirms: an unknown outcome waits the grace period, and then (without re-sending)
 * stays unknown for good without another provider call. */
static void test_echo_confirms_never_resends_blindly(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(PENDING), 0, ""); /* no key needed */
    PB(CompleteOutboundRequest) * c;
    int64_t t0 = oc_now_ms();

    set_delivery(CONN_DELIVERY_ECHO_CONFIRMS, false);
    answer(CONN_OUT_UNKNOWN);
    c = deliver(arena, &m);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(sends(), 1);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(UNKNOWN));
    CU_ASSERT_TRUE(c->next_attempt_at_ms >= t0 + 60000); /* the echo grace period */
    /* The grace passed with no echo: claimed again, settled without calling. */
    m = message(ST(UNKNOWN), 1, "");
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(sends(), 1);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(UNKNOWN));
    CU_ASSERT_EQUAL(c->next_attempt_at_ms, 0);
    CU_ASSERT_TRUE(c->no_provider_call);
    CU_ASSERT_STRING_EQUAL(c->error_detail, "no echo within the grace period; delivery unknown");
    oc_arena_destroy(arena);
}

/* Echo confirms with re-sending: after the grace the engine sends again (at least once). */
static void test_echo_confirms_resends_after_grace(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(Message) m = message(ST(UNKNOWN), 1, "");
    PB(CompleteOutboundRequest) * c;

    set_delivery(CONN_DELIVERY_ECHO_CONFIRMS, true);
    c = deliver(arena, &m);
    CU_ASSERT_EQUAL(sends(), 1);
    CU_ASSERT_EQUAL(c->outcome, OUTCOME(SENT));
    oc_arena_destroy(arena);
}

/* The worker claims the due messages of every channel type of the provider and delivers. */
static void test_worker_claims_all_types(void)
{
    PB(Message) m = message(ST(PENDING), 0, "");
    conn_worker_t *w;
    oc_error_t err;
    struct timespec ts = {0, 10 * 1000 * 1000};

    set_delivery(CONN_DELIVERY_ECHO_CONFIRMS, false);
    fake_add_due(&m);
    oc_error_clear(&err);
    w = conn_worker_start(&C, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    for (int i = 0; i < 300 && fake_calls(M_COMPLETE) == 0; i++)
        nanosleep(&ts, NULL);
    conn_worker_stop(w);
    CU_ASSERT_EQUAL(fake_calls(M_COMPLETE), 1);
    CU_ASSERT_EQUAL(sends(), 1);
    pthread_mutex_lock(&F.mu);
    CU_ASSERT_EQUAL(F.last_claim_ntypes, 2);
    CU_ASSERT_EQUAL(F.last_claim_types[0], PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK));
    CU_ASSERT_EQUAL(F.last_claim_types[1], PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM));
    pthread_mutex_unlock(&F.mu);
}

/* ---------- inbound: the webhook skeleton ---------- */

static int post(const char *body, const char *secret)
{
    char header[128];

    if (secret == NULL) return fake_http_post(hook_port, HOOK, body, NULL);
    snprintf(header, sizeof header, "x-fake-signature: %s", secret);
    return fake_http_post(hook_port, HOOK, body, header);
}

/* One POST for two tenants and an unconnected page: one PersistInbound per tenant, the
 * unroutable item acknowledged; an echo of ours reconciled, not stored. */
static void test_webhook_routes_by_body_and_groups_per_tenant(void)
{
    set_delivery(CONN_DELIVERY_ECHO_CONFIRMS, false);
    snprintf(F.reconcile_known, sizeof F.reconcile_known, "%s", FAKE_MESSAGE);
    CU_ASSERT_EQUAL(
        post("{\"items\":["
             "{\"page\":\"page-1\",\"mid\":\"m1\",\"text\":\"a\"},"
             "{\"page\":\"" FAKE_EXTERNAL2 "\",\"mid\":\"m2\",\"text\":\"b\"},"
             "{\"page\":\"" FAKE_EXTERNAL_UNKNOWN "\",\"mid\":\"m3\",\"text\":\"c\"},"
             "{\"page\":\"page-1\",\"mid\":\"m4\",\"text\":\"d\"},"
             "{\"page\":\"page-1\",\"mid\":\"m5\",\"text\":\"e\",\"echo_of\":\"" FAKE_MESSAGE "\"},"
             "{\"page\":\"page-1\",\"mid\":\"m6\",\"text\":\"f\",\"echo_of\":"
             "\"0191d7a2-3b4c-7d5e-8f60-000000000000\"}]}",
             APP_SECRET),
        200);
    pthread_mutex_lock(&F.mu);
    CU_ASSERT_EQUAL(F.npersisted_tenants, 2);
    CU_ASSERT_STRING_EQUAL(F.persisted_tenants[0], FAKE_TENANT);
    CU_ASSERT_STRING_EQUAL(F.persisted_tenants[1], FAKE_TENANT2);
    CU_ASSERT_EQUAL(F.persisted_messages, 4); /* m1, m4, m6 (not ours) and m2 */
    CU_ASSERT_STRING_EQUAL(F.last_reconciled, FAKE_MESSAGE);
    pthread_mutex_unlock(&F.mu);
    CU_ASSERT_EQUAL(fake_calls(M_RECONCILE), 2);
}

/* The signature is checked before anything else; persistence down is 503. */
static void test_webhook_signature_and_unavailable(void)
{
    const char *body = "{\"items\":[{\"page\":\"page-1\",\"mid\":\"m1\",\"text\":\"a\"}]}";

    set_delivery(CONN_DELIVERY_ECHO_CONFIRMS, false);
    CU_ASSERT_EQUAL(post(body, "wrong"), 401);
    CU_ASSERT_EQUAL(post(body, NULL), 401);
    CU_ASSERT_EQUAL(post("not json", "wrong"), 401); /* before any parsing */
    CU_ASSERT_EQUAL(fake_calls(M_RESOLVE), 0);
    CU_ASSERT_EQUAL(post("not json", APP_SECRET), 400);
    F.persist_error = OC_E_UNAVAILABLE;
    CU_ASSERT_EQUAL(post(body, APP_SECRET), 503);
    F.persist_error = OC_OK;
    CU_ASSERT_EQUAL(post(body, APP_SECRET), 200);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (start() != 0) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("conn_engine", NULL, NULL);
    CU_add_test(s, "retry key: unknown retried with the same key",
                test_retry_key_retries_unknown_with_the_key);
    CU_add_test(s, "echo confirms: never re-sent blindly",
                test_echo_confirms_never_resends_blindly);
    CU_add_test(s, "echo confirms: re-sent after the grace when allowed",
                test_echo_confirms_resends_after_grace);
    CU_add_test(s, "worker claims every channel type", test_worker_claims_all_types);
    CU_add_test(s, "webhook: routing by body, one PersistInbound per tenant, echoes",
                test_webhook_routes_by_body_and_groups_per_tenant);
    CU_add_test(s, "webhook: signature first, 503 when persistence is down",
                test_webhook_signature_and_unavailable);
    failed = oc_test_run();
    stop();
    return failed == 0 ? 0 : 1;
}
