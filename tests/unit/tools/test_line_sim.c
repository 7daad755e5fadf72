/* Tests of the LINE simulator over real HTTP (the common HTTP client): API semantics, faults,
 * control API. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The simulator's sources are compiled in, so this program needs nothing beyond
 * omnichat_common, the simulator core and line_wire (tests/CMakeLists.txt links those) and can
 * reach the internals. */
#include "omnichat/http_client.h"

#include "../../../tools/line-sim/line_sim.c"
#include "../../../tools/line-sim/line_sim_api.c"
#include "../../../tools/line-sim/line_sim_control.c"

#include "test_main.h"

#define TOKEN "sim-test-token-0123456789"
#define BOT_ID "U0bb0000000000000000000000000000b"
#define USER "U4af4980629a1b2c3d4e5f60718293a4b"
#define OFFICIAL_401 \
    "Authentication failed due to the following reason: invalid token. Confirm that the " \
    "access token in the authorization header is valid."

static lsim_t *g_sim;
static char g_base[64];

/* ---------- a small HTTP client ---------- */

typedef struct http_res {
    oc_http_transport_t rc; /* how the exchange ended */
    long status;
    oc_buf_t body;
    char request_id[128];
    char accepted_id[128];
    json_t *json;
    double seconds;
} http_res_t;

static void res_free(http_res_t *r)
{
    oc_buf_dispose(&r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* One request on a fresh connection. token/retry_key/body may be NULL. */
static void http(const char *method, const char *path, const char *token, const char *retry_key,
                 const char *body, long timeout_ms, http_res_t *r)
{
    static const char *const capture[] = {"x-line-request-id", "x-line-accepted-request-id", NULL};
    char url[512], h2[128];
    const char *headers[2] = {NULL, NULL};
    oc_http_client_opts_t o = {.user_agent = "test-line-sim"};
    oc_http_call_t call = {.method = method,
                           .path = url,
                           .headers = headers,
                           .body = body,
                           .body_len = body != NULL ? strlen(body) : 0,
                           .timeout_ms = timeout_ms > 0 ? timeout_ms : 10000L,
                           .capture = capture};
    oc_http_result_t res;
    oc_http_client_t *c;
    oc_error_t err;

    memset(r, 0, sizeof *r);
    oc_error_clear(&err);
    oc_buf_init(&r->body, (size_t)64 << 20);
    snprintf(url, sizeof url, "%s%s", g_base, path);
    if (retry_key) {
        snprintf(h2, sizeof h2, "X-Line-Retry-Key: %s", retry_key);
        headers[0] = h2;
    }
    if (token) {
        call.secret_in = OC_HTTP_SECRET_HEADER;
        call.secret_name = "Authorization: Bearer ";
        call.secret = token;
        call.secret_len = strlen(token);
    }
    c = oc_http_client_create(&o, &err);
    oc_http_result_init(&res, r->body.max);
    CU_ASSERT_EQUAL_FATAL(oc_http_client_call(c, &call, &res), OC_OK);
    r->rc = res.transport;
    r->status = res.status;
    r->seconds = (double)res.latency_us / 1e6;
    snprintf(r->request_id, sizeof r->request_id, "%s", res.captured[0]);
    snprintf(r->accepted_id, sizeof r->accepted_id, "%s", res.captured[1]);
    if (res.body.len > 0) oc_buf_append(&r->body, res.body.data, res.body.len);
    if (r->body.data) r->json = json_loadb(r->body.data, r->body.len, 0, NULL);
    oc_http_result_dispose(&res);
    oc_http_client_destroy(c);
}

static void control(const char *method, const char *path, const char *body, long want)
{
    http_res_t r;
    http(method, path, NULL, NULL, body, 0, &r);
    CU_ASSERT_EQUAL(r.rc, OC_HTTP_TX_OK);
    CU_ASSERT_EQUAL(r.status, want);
    if (r.status != want) fprintf(stderr, "%s %s -> %ld %s\n", method, path, r.status, r.body.data);
    res_free(&r);
}

/* GET a control log, parsed; caller decrefs. */
static json_t *get_log(const char *path)
{
    http_res_t r;
    http("GET", path, NULL, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *j = json_incref(r.json);
    res_free(&r);
    CU_ASSERT_TRUE(json_is_array(j));
    return j ? j : json_array();
}

static size_t log_size(const char *path)
{
    json_t *j = get_log(path);
    size_t n = json_array_size(j);
    json_decref(j);
    return n;
}

static const char *msg_of(const http_res_t *r)
{
    return json_string_value(json_object_get(r->json, "message"));
}

static void push_text(const char *token, const char *key, const char *text, http_res_t *r)
{
    json_t *b =
        json_pack("{s:s, s:[{s:s, s:s}]}", "to", USER, "messages", "type", "text", "text", text);
    char *s = json_dumps(b, JSON_COMPACT);
    http("POST", "/v2/bot/message/push", token, key, s, 0, r);
    free(s);
    json_decref(b);
}

static void new_key(char out[OC_UUID_STR_LEN + 1])
{
    CU_ASSERT_EQUAL_FATAL(oc_uuid_v4(out), OC_OK);
}

static int64_t mono_ms(void)
{
    return oc_mono_us() / 1000;
}

/* ---------- suite ---------- */

static int suite_init(void)
{
    oc_error_t err;
    oc_error_clear(&err);
    lsim_opts_t o = {.listen = "127.0.0.1:0", .threads = 16};
    g_sim = lsim_create(&o, &err);
    if (!g_sim) {
        fprintf(stderr, "lsim_create: %s\n", err.msg);
        return -1;
    }
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", lsim_port(g_sim));
    lsim_bot_def_t d = {
        .token = TOKEN, .user_id = BOT_ID, .display_name = "Test Bot", .basic_id = "@testbot"};
    return lsim_add_bot(g_sim, &d, &err) == OC_OK ? 0 : -1;
}

static int suite_clean(void)
{
    lsim_destroy(g_sim);
    return 0;
}

static void reset(void)
{
    control("POST", "/__sim/reset", "{}", 200);
}

/* ---------- LINE API ---------- */

static void test_push_ok(void)
{
    reset();
    http_res_t r;
    http("POST", "/v2/bot/message/push", TOKEN, NULL,
         "{\"to\":\"" USER "\",\"messages\":[{\"type\":\"text\",\"text\":\"hello\"},"
         "{\"type\":\"text\",\"text\":\"world\"}]}",
         0, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(oc_uuid_valid(r.request_id));
    json_t *sent = json_object_get(r.json, "sentMessages");
    CU_ASSERT_EQUAL(json_array_size(sent), 2);
    for (size_t i = 0; i < json_array_size(sent); i++) {
        const char *id = json_string_value(json_object_get(json_array_get(sent, i), "id"));
        const char *qt = json_string_value(json_object_get(json_array_get(sent, i), "quoteToken"));
        CU_ASSERT_PTR_NOT_NULL_FATAL(id);
        CU_ASSERT_EQUAL(strlen(id), 18);
        CU_ASSERT_EQUAL(strspn(id, "0123456789"), 18);
        CU_ASSERT_TRUE(qt && strlen(qt) >= 20);
    }
    json_t *d = get_log("/__sim/deliveries");
    CU_ASSERT_EQUAL(json_array_size(d), 1);
    json_t *d0 = json_array_get(d, 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d0, "bot_user_id")), BOT_ID);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d0, "to")), USER);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(json_object_get(d0, "texts"), 1)),
                           "world");
    CU_ASSERT_TRUE(json_equal(json_object_get(d0, "sentMessages"), sent));
    json_decref(d);
    res_free(&r);
}

static void test_invalid_token(void)
{
    reset();
    http_res_t r;
    push_text("not-a-known-token", NULL, "hi", &r);
    CU_ASSERT_EQUAL(r.status, 401);
    CU_ASSERT_STRING_EQUAL(r.body.data, "{\"message\":\"" OFFICIAL_401 "\"}");
    CU_ASSERT_TRUE(oc_uuid_valid(r.request_id));
    res_free(&r);

    push_text(NULL, NULL, "hi", &r);
    CU_ASSERT_EQUAL(r.status, 401);
    res_free(&r);

    /* A revoked token stops working; adding it again brings it back. */
    control("POST", "/__sim/bots", "{\"token\":\"tok-rev\",\"bot_user_id\":\"Ub2\"}", 200);
    http("GET", "/v2/bot/info", "tok-rev", NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    control("POST", "/__sim/bots/revoke", "{\"token\":\"tok-rev\"}", 200);
    http("GET", "/v2/bot/info", "tok-rev", NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 401);
    CU_ASSERT_STRING_EQUAL(msg_of(&r), OFFICIAL_401);
    res_free(&r);
    control("POST", "/__sim/bots/revoke", "{\"token\":\"never-added\"}", 404);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 0);
}

static void test_retry_key_once(void)
{
    reset();
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    http_res_t a, b;
    push_text(TOKEN, key, "once", &a);
    CU_ASSERT_EQUAL(a.status, 200);
    push_text(TOKEN, key, "once", &b);
    CU_ASSERT_EQUAL(b.status, 409);
    CU_ASSERT_STRING_EQUAL(msg_of(&b), "The retry key is already accepted");
    CU_ASSERT_TRUE(json_equal(json_object_get(a.json, "sentMessages"),
                              json_object_get(b.json, "sentMessages")));
    CU_ASSERT_STRING_EQUAL(b.accepted_id, a.request_id);
    CU_ASSERT_STRING_NOT_EQUAL(b.request_id, a.request_id);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 1);
    res_free(&a);
    res_free(&b);

    /* Upper case is the same UUID. */
    for (char *p = key; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    push_text(TOKEN, key, "once", &b);
    CU_ASSERT_EQUAL(b.status, 409);
    res_free(&b);

    push_text(TOKEN, "not-a-uuid", "x", &b);
    CU_ASSERT_EQUAL(b.status, 400);
    res_free(&b);
    /* Retry keys belong to push only. */
    new_key(key);
    http("GET", "/v2/bot/info", TOKEN, key, NULL, 0, &b);
    CU_ASSERT_EQUAL(b.status, 400);
    res_free(&b);
}

static void test_fault_500_keeps_key(void)
{
    reset();
    control("POST", "/__sim/faults",
            "{\"path\":\"/v2/bot/message/push\",\"faults\":[{\"status\":500}]}", 200);
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    http_res_t r;
    push_text(TOKEN, key, "x", &r);
    CU_ASSERT_EQUAL(r.status, 500);
    CU_ASSERT_TRUE(oc_uuid_valid(r.request_id));
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 0);
    push_text(TOKEN, key, "x", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    push_text(TOKEN, key, "x", &r);
    CU_ASSERT_EQUAL(r.status, 409);
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 1);
}

static void test_delay_execute_then_retry(void)
{
    reset();
    control("POST", "/__sim/faults",
            "{\"path\":\"/v2/bot/message/push\",\"faults\":[{\"delay_ms\":1500,\"execute\":true}]}",
            200);
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    http_res_t r;
    json_t *b =
        json_pack("{s:s, s:[{s:s, s:s}]}", "to", USER, "messages", "type", "text", "text", "slow");
    char *body = json_dumps(b, JSON_COMPACT);
    http("POST", "/v2/bot/message/push", TOKEN, key, body, 300, &r);
    CU_ASSERT_EQUAL(r.rc, OC_HTTP_TX_TIMEOUT);
    res_free(&r);
    /* The push was executed even though the client never saw the answer. */
    json_t *d = get_log("/__sim/deliveries");
    CU_ASSERT_EQUAL(json_array_size(d), 1);
    http("POST", "/v2/bot/message/push", TOKEN, key, body, 1000, &r);
    CU_ASSERT_EQUAL(r.status, 409);
    CU_ASSERT_TRUE(r.seconds < 0.5);
    CU_ASSERT_TRUE(json_equal(json_object_get(r.json, "sentMessages"),
                              json_object_get(json_array_get(d, 0), "sentMessages")));
    CU_ASSERT_STRING_EQUAL(r.accepted_id,
                           json_string_value(json_object_get(json_array_get(d, 0), "request_id")));
    res_free(&r);
    json_decref(d);
    json_decref(b);
    free(body);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 1);
}

static void test_drop(void)
{
    reset();
    control("POST", "/__sim/faults",
            "{\"path\":\"/v2/bot/message/push\",\"faults\":[{\"drop\":true},"
            "{\"drop\":true,\"execute\":true}]}",
            200);
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    http_res_t r;
    push_text(TOKEN, key, "x", &r);
    CU_ASSERT_EQUAL(r.rc, OC_HTTP_TX_DROPPED);
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 0);
    /* Dropped without executing: the key is still free, but this one is executed then lost. */
    push_text(TOKEN, key, "x", &r);
    CU_ASSERT_EQUAL(r.rc, OC_HTTP_TX_DROPPED);
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 1);
    push_text(TOKEN, key, "x", &r);
    CU_ASSERT_EQUAL(r.status, 409);
    res_free(&r);

    json_t *reqs = get_log("/__sim/requests?path=/v2/bot/message/push");
    CU_ASSERT_EQUAL(json_array_size(reqs), 3);
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_array_get(reqs, 0), "dropped")));
    CU_ASSERT_FALSE(json_is_true(json_object_get(json_array_get(reqs, 0), "executed")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(json_array_get(reqs, 1), "executed")));
    json_decref(reqs);
}

static void test_status_faults(void)
{
    reset();
    control(
        "POST", "/__sim/faults",
        "{\"path\":\"/v2/bot/message/push\",\"faults\":[{\"status\":429,\"kind\":\"rate_limit\"},"
        "{\"status\":429,\"kind\":\"quota\"},{\"status\":403},{\"status\":401}]}",
        200);
    http_res_t r;
    push_text(TOKEN, NULL, "x", &r);
    CU_ASSERT_EQUAL(r.status, 429);
    CU_ASSERT_STRING_EQUAL(msg_of(&r), "The API rate limit has been exceeded. Try again later.");
    res_free(&r);
    push_text(TOKEN, NULL, "x", &r);
    CU_ASSERT_EQUAL(r.status, 429);
    CU_ASSERT_STRING_EQUAL(msg_of(&r), "You have reached your monthly limit.");
    res_free(&r);
    push_text(TOKEN, NULL, "x", &r);
    CU_ASSERT_EQUAL(r.status, 403);
    CU_ASSERT_STRING_EQUAL(msg_of(&r), "Access to this API is not available for your account");
    res_free(&r);
    push_text(TOKEN, NULL, "x", &r);
    CU_ASSERT_EQUAL(r.status, 401);
    CU_ASSERT_STRING_EQUAL(msg_of(&r), OFFICIAL_401);
    res_free(&r);
    /* The FIFO is empty again. */
    push_text(TOKEN, NULL, "x", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 1);

    /* Faults match their path only; bad fault lists queue nothing. */
    control("POST", "/__sim/faults", "{\"path\":\"/v2/bot/info\",\"faults\":[{\"status\":500}]}",
            200);
    push_text(TOKEN, NULL, "x", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    http("GET", "/v2/bot/info", TOKEN, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 500);
    res_free(&r);
    control("POST", "/__sim/faults",
            "{\"path\":\"/v2/bot/info\",\"faults\":[{\"status\":500},{\"kind\":\"nope\"}]}", 400);
    control("POST", "/__sim/faults", "{\"path\":\"/v2/bot/info\",\"faults\":[{\"execute\":false}]}",
            400);
    CU_ASSERT_EQUAL(log_size("/__sim/faults"), 0);
}

static char *text_of(size_t ascii, int emojis)
{
    char *t = malloc(ascii + 4 * (size_t)emojis + 1);
    memset(t, 'a', ascii);
    for (int i = 0; i < emojis; i++)
        memcpy(t + ascii + 4 * i, "\xF0\x9F\x98\x80", 4); /* 😀 */
    t[ascii + 4 * (size_t)emojis] = '\0';
    return t;
}

static void test_text_limits(void)
{
    reset();
    http_res_t r;
    char *t = text_of(4998, 1); /* 4998 + 2 = 5000 UTF-16 units */
    push_text(TOKEN, NULL, t, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    free(t);

    t = text_of(4999, 1); /* 5001 units although only 5000 characters */
    push_text(TOKEN, NULL, t, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_STRING_EQUAL(msg_of(&r), "The request body has 1 error(s)");
    json_t *d0 = json_array_get(json_object_get(r.json, "details"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d0, "property")), "messages[0].text");
    CU_ASSERT_PTR_NOT_NULL(json_string_value(json_object_get(d0, "message")));
    res_free(&r);
    free(t);

    t = text_of(5001, 0);
    push_text(TOKEN, NULL, t, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    res_free(&r);
    free(t);

    /* Six messages, and a body with two errors. */
    http("POST", "/v2/bot/message/push", TOKEN, NULL,
         "{\"to\":\"" USER "\",\"messages\":[{\"type\":\"text\",\"text\":\"1\"},"
         "{\"type\":\"text\",\"text\":\"2\"},{\"type\":\"text\",\"text\":\"3\"},"
         "{\"type\":\"text\",\"text\":\"4\"},{\"type\":\"text\",\"text\":\"5\"},"
         "{\"type\":\"text\",\"text\":\"6\"}]}",
         0, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
                               json_array_get(json_object_get(r.json, "details"), 0), "property")),
                           "messages");
    res_free(&r);
    http("POST", "/v2/bot/message/push", TOKEN, NULL, "{\"messages\":[{\"type\":\"text\"}]}", 0,
         &r);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_STRING_EQUAL(msg_of(&r), "The request body has 2 error(s)");
    res_free(&r);
    http("POST", "/v2/bot/message/push", TOKEN, NULL, "{not json", 0, &r);
    CU_ASSERT_EQUAL(r.status, 400);
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 1);
}

static void test_too_large(void)
{
    reset();
    size_t n = LSIM_MAX_PUSH_BODY + 10;
    char *body = malloc(n + 1);
    memset(body, ' ', n);
    body[n] = '\0';
    memcpy(body, "{\"to\":\"" USER "\",\"messages\":[]}",
           strlen("{\"to\":\"" USER "\",\"messages\":[]}"));
    http_res_t r;
    http("POST", "/v2/bot/message/push", TOKEN, NULL, body, 0, &r);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT_TRUE(oc_uuid_valid(r.request_id));
    res_free(&r);
    free(body);
    /* The log keeps a bounded prefix of a big body. */
    json_t *reqs = get_log("/__sim/requests");
    json_t *r0 = json_array_get(reqs, 0);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r0, "body_truncated")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(r0, "body_len")), (json_int_t)n);
    json_decref(reqs);
}

static void test_profile(void)
{
    reset();
    http_res_t r;
    http("GET", "/v2/bot/profile/" USER, TOKEN, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "displayName")),
                           "User 293a4b");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "userId")), USER);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(r.json, "language"));
    res_free(&r);

    http("GET", "/v2/bot/profile/someone-else", TOKEN, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_STRING_EQUAL(r.body.data, "{\"message\":\"Not found\"}");
    res_free(&r);

    http("GET", "/v2/bot/profile/" USER, "bad-token", NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 401);
    res_free(&r);

    control("POST", "/__sim/profiles",
            "{\"user_id\":\"" USER "\",\"display_name\":\"Sakura\",\"language\":\"ja\"}", 200);
    http("GET", "/v2/bot/profile/" USER, TOKEN, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "displayName")), "Sakura");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "language")), "ja");
    CU_ASSERT_PTR_NULL(json_object_get(r.json, "statusMessage"));
    res_free(&r);

    control("POST", "/__sim/profiles", "{\"user_id\":\"" USER "\",\"not_found\":true}", 200);
    http("GET", "/v2/bot/profile/" USER, TOKEN, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 404);
    res_free(&r);

    /* A user who blocked the bot: 200, nothing delivered. */
    control("POST", "/__sim/profiles", "{\"user_id\":\"" USER "\",\"blocked\":true}", 200);
    push_text(TOKEN, NULL, "anyone there?", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    json_t *d = get_log("/__sim/deliveries");
    CU_ASSERT_TRUE(json_is_false(json_object_get(json_array_get(d, 0), "delivered")));
    json_decref(d);
    control("POST", "/__sim/profiles", "{\"user_id\":\"" USER "\"}", 200);
}

static void test_bot_info(void)
{
    reset();
    http_res_t r;
    http("GET", "/v2/bot/info", TOKEN, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "userId")), BOT_ID);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "basicId")), "@testbot");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "displayName")), "Test Bot");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "chatMode")), "bot");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "markAsReadMode")), "manual");
    CU_ASSERT_PTR_NOT_NULL(json_string_value(json_object_get(r.json, "pictureUrl")));
    res_free(&r);
    http("POST", "/v2/bot/info", TOKEN, NULL, "{}", 0, &r);
    CU_ASSERT_EQUAL(r.status, 405);
    res_free(&r);
    http("GET", "/v2/bot/nothing-here", TOKEN, NULL, NULL, 0, &r);
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_TRUE(oc_uuid_valid(r.request_id));
    res_free(&r);
}

static void test_requests_log(void)
{
    reset();
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    http_res_t r;
    push_text(TOKEN, key, "logged", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *reqs = get_log("/__sim/requests");
    CU_ASSERT_EQUAL(json_array_size(reqs), 1);
    json_t *q = json_array_get(reqs, 0);
    json_t *h = json_object_get(q, "headers");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(h, "authorization")), "Bearer " TOKEN);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(q, "retry_key")), key);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(q, "method")), "POST");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(q, "path")), "/v2/bot/message/push");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(q, "status")), 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(q, "request_id")), r.request_id);
    CU_ASSERT_PTR_NOT_NULL(strstr(json_string_value(json_object_get(q, "body")), "logged"));
    CU_ASSERT_TRUE(json_integer_value(json_object_get(q, "time_ms")) > 0);
    json_decref(reqs);
    res_free(&r);
    /* Control calls are not LINE requests; filters and limits work. */
    http("GET", "/v2/bot/info", TOKEN, NULL, NULL, 0, &r);
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/requests"), 2);
    CU_ASSERT_EQUAL(log_size("/__sim/requests?path=/v2/bot/info"), 1);
    CU_ASSERT_EQUAL(log_size("/__sim/requests?limit=1"), 1);
    json_t *last = get_log("/__sim/requests?limit=1");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(last, 0), "path")),
                           "/v2/bot/info");
    json_decref(last);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries?to=" USER), 1);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries?to=Unobody"), 0);
}

static void test_reset(void)
{
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    http_res_t r;
    push_text(TOKEN, key, "before reset", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    control("POST", "/__sim/faults", "{\"path\":\"/v2/bot/info\",\"faults\":[{\"status\":500}]}",
            200);
    reset();
    CU_ASSERT_EQUAL(log_size("/__sim/requests"), 0);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 0);
    CU_ASSERT_EQUAL(log_size("/__sim/faults"), 0);
    push_text(TOKEN, key, "after reset", &r); /* the retry key was forgotten */
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    http("GET", "/v2/bot/info", TOKEN, NULL, NULL, 0, &r); /* bots are kept */
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
}

static void test_key_expiry(void)
{
    reset();
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    http_res_t r;
    push_text(TOKEN, key, "day one", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    control("POST", "/__sim/clock", "{\"advance_ms\":86340000}", 200); /* 23 h 59 min */
    push_text(TOKEN, key, "day one", &r);
    CU_ASSERT_EQUAL(r.status, 409);
    res_free(&r);
    control("POST", "/__sim/clock", "{\"advance_ms\":60000}", 200);
    push_text(TOKEN, key, "day two", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 2);
}

typedef struct bg_push {
    const char *key;
    http_res_t r;
} bg_push_t;

static void *bg_push_main(void *arg)
{
    bg_push_t *b = arg;
    push_text(TOKEN, b->key, "first", &b->r);
    return NULL;
}

static void test_concurrent_same_key(void)
{
    reset();
    control("POST", "/__sim/faults",
            "{\"path\":\"/v2/bot/message/push\",\"faults\":[{\"hold_ms\":700}]}", 200);
    char key[OC_UUID_STR_LEN + 1];
    new_key(key);
    bg_push_t first = {.key = key};
    pthread_t th;
    int64_t t0 = mono_ms();
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, bg_push_main, &first), 0);
    /* The fault is consumed when the first request arrives; it reserves its key microseconds
     * later. Waiting for that, not for a fixed time, keeps the order right on a slow machine. */
    for (int i = 0; i < 500 && log_size("/__sim/faults") > 0; i++)
        usleep(10 * 1000);
    usleep(50 * 1000); /* 50 ms: far past those microseconds, even under ASan */
    http_res_t second;
    push_text(TOKEN, key, "first", &second);
    int64_t waited = mono_ms() - t0;
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(first.r.status, 200);
    CU_ASSERT_EQUAL(second.status, 409);
    CU_ASSERT_TRUE(waited >= 600);
    CU_ASSERT_STRING_EQUAL(second.accepted_id, first.r.request_id);
    CU_ASSERT_TRUE(json_equal(json_object_get(first.r.json, "sentMessages"),
                              json_object_get(second.json, "sentMessages")));
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), 1);
    res_free(&first.r);
    res_free(&second);
}

/* Receives the simulator's webhook and keeps what a connector would verify. */
static char g_hook_sig[128], g_hook_body[256];

static void hook_handler(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    (void)user;
    const char *sig = oc_http_header(req, "x-line-signature");
    snprintf(g_hook_sig, sizeof g_hook_sig, "%s", sig ? sig : "");
    snprintf(g_hook_body, sizeof g_hook_body, "%.*s", (int)req->body_len, req->body);
    oc_buf_appends(&resp->body, "{}");
}

static void test_webhook(void)
{
    static const oc_http_route_t routes[] = {
        {.method = "POST", .path = "/hook", .handler = hook_handler}};
    oc_http_server_opts_t o = {.listen = "127.0.0.1:0", .routes = routes, .nroutes = 1};
    oc_error_t err;
    oc_error_clear(&err);
    oc_http_server_t *hook = oc_http_server_start(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(hook);
    /* The official documentation's test vector. */
    const char *vec = "{\"destination\":\"U8e742f61d673b39c7fff3cecb7536ef0\",\"events\":[]}";
    json_t *req = json_pack("{s:s, s:s, s:s}", "channel_secret", "8c570fa6dd201bb328f1c1eac23a96d8",
                            "body", vec, "url", "");
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", oc_http_server_port(hook));
    json_object_set_new(req, "url", json_string(url));
    char *body = json_dumps(req, JSON_COMPACT);
    http_res_t r;
    http("POST", "/__sim/webhook", NULL, NULL, body, 0, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(r.json, "status")), 200);
    CU_ASSERT_STRING_EQUAL(g_hook_sig, "GhRKmvmHys4Pi8DxkF4+EayaH0OqtJtaZxgTD9fMDLs=");
    CU_ASSERT_STRING_EQUAL(g_hook_body, vec);
    res_free(&r);
    free(body);
    json_decref(req);
    oc_http_server_stop(hook);
}

/* Enough traffic to catch lock or ordering mistakes, and a rough rate for the record. */
#define LOAD_THREADS 8
#define LOAD_PER_THREAD 250

static void *load_main(void *arg)
{
    int *failures = arg;
    char url[128], kh[80];
    const char *body = "{\"to\":\"" USER "\",\"messages\":[{\"type\":\"text\",\"text\":\"load\"}]}";
    const char *headers[] = {kh, NULL};
    /* One client, one handle for this thread: the connection is kept alive, as a real client's
     * would be. */
    oc_http_client_opts_t o = {.base = g_base, .reuse_connections = true};
    oc_http_call_t call = {.method = "POST",
                           .path = url,
                           .headers = headers,
                           .body = body,
                           .body_len = strlen(body),
                           .secret_in = OC_HTTP_SECRET_HEADER,
                           .secret_name = "Authorization: Bearer ",
                           .secret = TOKEN,
                           .secret_len = strlen(TOKEN),
                           .timeout_ms = 10000};
    oc_error_t err;
    oc_http_client_t *c;

    oc_error_clear(&err);
    c = oc_http_client_create(&o, &err);
    snprintf(url, sizeof url, "/v2/bot/message/push");
    for (int i = 0; i < LOAD_PER_THREAD; i++) {
        char key[OC_UUID_STR_LEN + 1];
        oc_http_result_t res;
        oc_uuid_v4(key);
        snprintf(kh, sizeof kh, "X-Line-Retry-Key: %s", key);
        oc_http_result_init(&res, 1 << 20);
        if (c == NULL || oc_http_client_call(c, &call, &res) != OC_OK ||
            res.transport != OC_HTTP_TX_OK || res.status != 200)
            (*failures)++;
        oc_http_result_dispose(&res);
    }
    oc_http_client_destroy(c);
    return NULL;
}

static void test_load(void)
{
    reset();
    pthread_t th[LOAD_THREADS];
    int failures[LOAD_THREADS] = {0};
    int64_t t0 = oc_mono_us();
    for (int i = 0; i < LOAD_THREADS; i++)
        pthread_create(&th[i], NULL, load_main, &failures[i]);
    int total_fail = 0;
    for (int i = 0; i < LOAD_THREADS; i++) {
        pthread_join(th[i], NULL);
        total_fail += failures[i];
    }
    double secs = (double)(oc_mono_us() - t0) / 1e6;
    fprintf(stderr, "\n  line-sim: %d pushes in %.2f s (%.0f/s)\n", LOAD_THREADS * LOAD_PER_THREAD,
            secs, LOAD_THREADS * LOAD_PER_THREAD / secs);
    CU_ASSERT_EQUAL(total_fail, 0);
    CU_ASSERT_EQUAL(log_size("/__sim/deliveries"), LOAD_THREADS * LOAD_PER_THREAD);
    /* Message ids are unique. */
    json_t *d = get_log("/__sim/deliveries");
    json_t *seen = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(d, i, v)
    {
        const char *id = json_string_value(
            json_object_get(json_array_get(json_object_get(v, "sentMessages"), 0), "id"));
        if (id) json_object_set_new(seen, id, json_true());
    }
    CU_ASSERT_EQUAL(json_object_size(seen), LOAD_THREADS * LOAD_PER_THREAD);
    json_decref(seen);
    json_decref(d);
}

static void test_bounded_logs(void)
{
    oc_error_t err;
    oc_error_clear(&err);
    lsim_opts_t o = {.listen = "127.0.0.1:0",
                     .threads = 2,
                     .max_requests = 5,
                     .max_deliveries = 3,
                     .max_retry_keys = 2};
    lsim_t *s = lsim_create(&o, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    lsim_bot_def_t d = {.token = TOKEN, .user_id = BOT_ID};
    CU_ASSERT_EQUAL(lsim_add_bot(s, &d, &err), OC_OK);
    char saved[64];
    snprintf(saved, sizeof saved, "%s", g_base);
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", lsim_port(s));
    char first_key[OC_UUID_STR_LEN + 1];
    new_key(first_key);
    http_res_t r;
    push_text(TOKEN, first_key, "0", &r);
    res_free(&r);
    for (int i = 1; i < 12; i++) {
        char key[OC_UUID_STR_LEN + 1], text[8];
        new_key(key);
        snprintf(text, sizeof text, "%d", i);
        push_text(TOKEN, key, text, &r);
        CU_ASSERT_EQUAL(r.status, 200);
        res_free(&r);
    }
    CU_ASSERT_EQUAL(log_size("/__sim/requests"), 5);
    json_t *dl = get_log("/__sim/deliveries");
    CU_ASSERT_EQUAL(json_array_size(dl), 3);
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_array_get(json_object_get(json_array_get(dl, 2), "texts"), 0)),
        "11");
    json_decref(dl);
    /* Past the cap, the oldest accepted key is forgotten (documented). */
    push_text(TOKEN, first_key, "0", &r);
    CU_ASSERT_EQUAL(r.status, 200);
    res_free(&r);
    snprintf(g_base, sizeof g_base, "%s", saved);
    lsim_destroy(s);
}

/* The real binary, when it was built next to this test (../bin). */
static void test_cli(void)
{
    char exe[4096], bin[4200];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    CU_ASSERT_TRUE_FATAL(n > 0);
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    *slash = '\0';
    snprintf(bin, sizeof bin, "%s/../bin/omnichat-line-sim", exe);
    /* Built with the tests, so missing means a broken build, not a reason to skip. */
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "\n  %s not built\n", bin);
        CU_FAIL_FATAL("omnichat-line-sim not built next to the tests");
    }
    char tokens[] = "/tmp/line-sim-tokens-XXXXXX";
    int fd = mkstemp(tokens);
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    const char *line = "# test bots\ncli-token-1 Ucli00000000000000000000000000001 CLI Bot One\n";
    CU_ASSERT_EQUAL(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    close(fd);

    int errpipe[2];
    CU_ASSERT_EQUAL_FATAL(pipe(errpipe), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(errpipe[1], 2);
        close(errpipe[0]);
        close(errpipe[1]);
        execl(bin, bin, "--listen", "127.0.0.1:0", "--tokens-file", tokens, (char *)NULL);
        _exit(127);
    }
    close(errpipe[1]);
    FILE *err = fdopen(errpipe[0], "r");
    char buf[2048];
    int port = 0;
    while (port == 0 && fgets(buf, sizeof buf, err)) {
        json_t *j = json_loads(buf, 0, NULL);
        const char *msg = json_string_value(json_object_get(j, "msg"));
        if (msg && strcmp(msg, "listening") == 0)
            port = (int)json_integer_value(json_object_get(j, "port"));
        json_decref(j);
    }
    CU_ASSERT_TRUE(port > 0);
    if (port > 0) {
        char saved[64];
        snprintf(saved, sizeof saved, "%s", g_base);
        snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", port);
        http_res_t r;
        http("GET", "/v2/bot/info", "cli-token-1", NULL, NULL, 0, &r);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(r.json, "displayName")),
                               "CLI Bot One");
        res_free(&r);
        snprintf(g_base, sizeof g_base, "%s", saved);
    }
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    fclose(err);
    unlink(tokens);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("line_sim", suite_init, suite_clean);
    CU_add_test(s, "push ok", test_push_ok);
    CU_add_test(s, "invalid token", test_invalid_token);
    CU_add_test(s, "retry key once", test_retry_key_once);
    CU_add_test(s, "500 keeps the key", test_fault_500_keeps_key);
    CU_add_test(s, "delay+execute then retry", test_delay_execute_then_retry);
    CU_add_test(s, "drop", test_drop);
    CU_add_test(s, "status faults", test_status_faults);
    CU_add_test(s, "text limits", test_text_limits);
    CU_add_test(s, "too large", test_too_large);
    CU_add_test(s, "profile", test_profile);
    CU_add_test(s, "bot info", test_bot_info);
    CU_add_test(s, "requests log", test_requests_log);
    CU_add_test(s, "reset", test_reset);
    CU_add_test(s, "retry key expiry", test_key_expiry);
    CU_add_test(s, "concurrent same key", test_concurrent_same_key);
    CU_add_test(s, "webhook", test_webhook);
    CU_add_test(s, "load", test_load);
    CU_add_test(s, "bounded logs", test_bounded_logs);
    CU_add_test(s, "cli", test_cli);
    int failed = oc_test_run();
    return failed ? 1 : 0;
}
