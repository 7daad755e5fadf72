/* Tests of the Graph API simulator over real HTTP (the common HTTP client): the Send API and
 * its error bodies, look-ups, appsecret_proof, signed echoes and events, the request log. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "graph_sim.h"
#include "meta_wire.h"
#include "omnichat/http.h"
#include "omnichat/http_client.h"
#include "omnichat/util.h"

#include "test_main.h"

#define TOKEN "EAAG-graph-sim-test-token"
#define SECRET "graph-sim-test-app-secret"
#define PAGE "100000000000042"
#define IG "17841400000000042"
#define PSID "2400000000000001"

static gsim_t *g_sim;
static char g_base[64];
static oc_http_server_t *g_hook;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char *g_hook_body;
static char g_hook_sig[128];

/* The connector's side: keeps the last webhook and answers 200. */
static void hook(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    const char *sig = oc_http_header(req, "x-hub-signature-256");
    (void)user;
    pthread_mutex_lock(&g_mu);
    free(g_hook_body);
    g_hook_body = strndup(req->body != NULL ? req->body : "", req->body_len);
    snprintf(g_hook_sig, sizeof g_hook_sig, "%s", sig != NULL ? sig : "");
    pthread_mutex_unlock(&g_mu);
    oc_buf_appends(&resp->body, "{}");
}

/* The last webhook body, waiting up to 2 s for one; caller frees. */
static char *wait_hook(void)
{
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&g_mu);
        char *b = g_hook_body;
        g_hook_body = NULL;
        pthread_mutex_unlock(&g_mu);
        if (b != NULL) return b;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* POST (form or JSON) or GET; the answer's status and parsed JSON body. */
static long call(const char *method, const char *path, const char *body, const char *type,
                 json_t **out)
{
    char url[512];
    oc_http_client_opts_t o = {.user_agent = "test-graph-sim"};
    oc_http_call_t c = {.method = method,
                        .path = url,
                        .body = body,
                        .body_len = body != NULL ? strlen(body) : 0,
                        .content_type = type,
                        .timeout_ms = 10000};
    oc_http_result_t res;
    oc_error_t err;
    oc_http_client_t *http;
    long status;

    oc_error_clear(&err);
    snprintf(url, sizeof url, "%s%s", g_base, path);
    http = oc_http_client_create(&o, &err);
    oc_http_result_init(&res, 1 << 20);
    /* Also called from the suite set-up, where CUnit assertions are not allowed. */
    if (http == NULL || oc_http_client_call(http, &c, &res) != OC_OK)
        status = -2;
    else
        status = res.transport == OC_HTTP_TX_OK ? res.status : -1;
    if (out != NULL)
        *out = json_loadb(res.body.data != NULL ? res.body.data : "", res.body.len, 0, NULL);
    oc_http_result_dispose(&res);
    oc_http_client_destroy(http);
    return status;
}

static long control(const char *path, const char *json)
{
    return call("POST", path, json, "application/json", NULL);
}

/* A Send API form with the token and its appsecret_proof. */
static long send_text(const char *account, const char *token, const char *text, json_t **out)
{
    char proof[META_PROOF_LEN + 1], path[128];
    oc_buf_t b;
    long st;

    meta_appsecret_proof(SECRET, strlen(SECRET), token, strlen(token), proof);
    oc_buf_init(&b, 1 << 20);
    oc_buf_appends(&b, "recipient=");
    oc_buf_append_form_encoded(&b, "{\"id\":\"" PSID "\"}", strlen("{\"id\":\"" PSID "\"}"));
    oc_buf_appends(&b, "&messaging_type=RESPONSE&message=");
    char msg[512];
    snprintf(msg, sizeof msg, "{\"text\":\"%s\",\"metadata\":\"our-id-1\"}", text);
    oc_buf_append_form_encoded(&b, msg, strlen(msg));
    oc_buf_appendf(&b, "&appsecret_proof=%s&access_token=", proof);
    oc_buf_append_form_encoded(&b, token, strlen(token));
    snprintf(path, sizeof path, "/v21.0/%s/messages", account);
    st = call("POST", path, b.data, "application/x-www-form-urlencoded", out);
    oc_buf_dispose(&b);
    return st;
}

static long err_code(json_t *j, const char *field)
{
    return (long)json_integer_value(json_object_get(json_object_get(j, "error"), field));
}

static int suite_init(void)
{
    oc_error_t err;
    static oc_http_route_t route = {.method = "POST", .path = "/webhooks/meta", .handler = hook};
    oc_http_server_opts_t so = {
        .listen = "127.0.0.1:0", .threads = 4, .routes = &route, .nroutes = 1};
    gsim_opts_t o = {.app_secret = SECRET};
    gsim_page_def_t page = {.token = TOKEN, .page_id = PAGE, .name = "Test Page", .ig_id = IG};
    char cfg[256];

    oc_error_clear(&err);
    if ((g_hook = oc_http_server_start(&so, &err)) == NULL) return 1;
    if ((g_sim = gsim_create(&o, &err)) == NULL) return 1;
    if (gsim_add_page(g_sim, &page, &err) != OC_OK) return 1;
    snprintf(g_base, sizeof g_base, "http://127.0.0.1:%d", gsim_port(g_sim));
    snprintf(cfg, sizeof cfg, "{\"webhook_url\":\"http://127.0.0.1:%d/webhooks/meta\"}",
             oc_http_server_port(g_hook));
    return control("/__sim/config", cfg) == 200 ? 0 : 1;
}

static int suite_clean(void)
{
    gsim_destroy(g_sim);
    oc_http_server_stop(g_hook);
    free(g_hook_body);
    return 0;
}

static void test_send_and_signed_echo(void)
{
    json_t *j = NULL, *echo;
    char *body;

    CU_ASSERT_EQUAL(send_text(PAGE, TOKEN, "h\\u00e9llo", &j), 200);
    const char *mid = json_string_value(json_object_get(j, "message_id"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(mid);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "recipient_id")), PSID);
    body = wait_hook();
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    /* Signed over the raw bytes with the app secret; non-ASCII escaped like Meta. */
    CU_ASSERT_TRUE(meta_signature_valid(SECRET, strlen(SECRET), body, strlen(body), g_hook_sig));
    CU_ASSERT_PTR_NOT_NULL(strcasestr(body, "h\\u00e9llo"));
    echo = json_loads(body, 0, NULL);
    json_t *entry0 = json_array_get(json_object_get(echo, "entry"), 0);
    json_t *ev0 = json_array_get(json_object_get(entry0, "messaging"), 0);
    json_t *m = json_object_get(ev0, "message");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(echo, "object")), "page");
    CU_ASSERT_TRUE(json_is_true(json_object_get(m, "is_echo")));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(m, "metadata")), "our-id-1");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(m, "mid")), mid);
    json_decref(echo);
    json_decref(j);
    free(body);
    /* Through the Instagram account: an "instagram" echo. */
    CU_ASSERT_EQUAL(send_text(IG, TOKEN, "ig", NULL), 200);
    body = wait_hook();
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"object\":\"instagram\""));
    free(body);
}

static void test_error_bodies(void)
{
    static const struct {
        const char *kind;
        long status, code, subcode;
        bool transient;
    } cases[] = {
        {"token", 400, 190, 460, false},        {"permission", 403, 10, 0, false},
        {"permission_200", 403, 200, 0, false}, {"window", 400, 10, 2018278, false},
        {"blocked", 400, 551, 1545041, false},  {"rate_limit", 400, 613, 0, false},
        {"transient", 500, 2, 0, true},
    };
    char f[256];
    json_t *j;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(f, sizeof f, "{\"path\":\"/v21.0/%s/messages\",\"faults\":[{\"kind\":\"%s\"}]}",
                 PAGE, cases[i].kind);
        CU_ASSERT_EQUAL(control("/__sim/faults", f), 200);
        j = NULL;
        CU_ASSERT_EQUAL(send_text(PAGE, TOKEN, "x", &j), cases[i].status);
        CU_ASSERT_EQUAL(err_code(j, "code"), cases[i].code);
        CU_ASSERT_EQUAL(err_code(j, "error_subcode"), cases[i].subcode);
        CU_ASSERT_EQUAL(json_is_true(json_object_get(json_object_get(j, "error"), "is_transient")),
                        cases[i].transient);
        json_decref(j);
    }
    CU_ASSERT_EQUAL(control("/__sim/faults", "{\"path\":\"/*\",\"faults\":[{\"kind\":\"nope\"}]}"),
                    400);
    /* A plain 500, and a dropped connection. */
    snprintf(f, sizeof f,
             "{\"path\":\"/v21.0/%s/messages\",\"faults\":[{\"status\":500},"
             "{\"drop\":true}]}",
             PAGE);
    CU_ASSERT_EQUAL(control("/__sim/faults", f), 200);
    CU_ASSERT_EQUAL(send_text(PAGE, TOKEN, "x", NULL), 500);
    CU_ASSERT_EQUAL(send_text(PAGE, TOKEN, "x", NULL), -1);
    /* An unknown token: 190. */
    j = NULL;
    CU_ASSERT_EQUAL(send_text(PAGE, "EAAG-unknown", "x", &j), 400);
    CU_ASSERT_EQUAL(err_code(j, "code"), 190);
    json_decref(j);
}

static void test_lookup_and_proof(void)
{
    json_t *j = NULL;
    char body[256];

    snprintf(body, sizeof body, "fields=id,name&method=GET&access_token=%s", TOKEN);
    /* Without appsecret_proof while the app has a secret: refused. */
    CU_ASSERT_EQUAL(call("POST", "/v21.0/" PAGE, body, "application/x-www-form-urlencoded", &j),
                    400);
    CU_ASSERT_EQUAL(err_code(j, "code"), 100);
    json_decref(j);
    char proof[META_PROOF_LEN + 1];
    meta_appsecret_proof(SECRET, strlen(SECRET), TOKEN, strlen(TOKEN), proof);
    snprintf(body, sizeof body, "fields=id,name&method=GET&access_token=%s&appsecret_proof=%s",
             TOKEN, proof);
    CU_ASSERT_EQUAL(call("POST", "/v21.0/" PAGE, body, "application/x-www-form-urlencoded", &j),
                    200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "name")), "Test Page");
    json_decref(j);
    CU_ASSERT_EQUAL(call("POST", "/v21.0/" IG, body, "application/x-www-form-urlencoded", &j), 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "id")), IG);
    json_decref(j);
    CU_ASSERT_EQUAL(call("POST", "/v21.0/999", body, "application/x-www-form-urlencoded", &j), 400);
    CU_ASSERT_EQUAL(err_code(j, "code"), 100);
    json_decref(j);
}

static void test_events_and_request_log(void)
{
    json_t *j = NULL;
    char *body;
    uint8_t sha[32];
    char hex[65];

    free(wait_hook()); /* drain */
    CU_ASSERT_EQUAL(control("/__sim/events",
                            "{\"object\":\"page\",\"account_id\":\"" PAGE "\",\"events\":["
                            "{\"kind\":\"read\",\"sender\":\"" PSID "\",\"recipient\":\"" PAGE
                            "\",\"watermark\":1700000000000}]}"),
                    200);
    body = wait_hook();
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"read\":{\"watermark\":1700000000000}"));
    CU_ASSERT_TRUE(meta_signature_valid(SECRET, strlen(SECRET), body, strlen(body), g_hook_sig));
    free(body);
    /* The request log names the token by its digest only. */
    CU_ASSERT_EQUAL(call("GET", "/__sim/requests", NULL, NULL, &j), 200);
    char *txt = json_dumps(j, 0);
    sim_sha256(TOKEN, strlen(TOKEN), sha);
    oc_hex_encode(sha, sizeof sha, hex);
    CU_ASSERT_PTR_NULL(strstr(txt, TOKEN));
    CU_ASSERT_PTR_NOT_NULL(strstr(txt, hex));
    free(txt);
    json_decref(j);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("graph_sim", suite_init, suite_clean);
    CU_add_test(s, "send and signed echo", test_send_and_signed_echo);
    CU_add_test(s, "error bodies", test_error_bodies);
    CU_add_test(s, "look-up and appsecret_proof", test_lookup_and_proof);
    CU_add_test(s, "events and request log", test_events_and_request_log);
    return oc_test_run();
}
