/* A fake LINE API (HTTP) and the LINE connector's engine context against the shared fake
 * persistence, for connector-line unit tests. */
#ifndef LINE_TEST_FAKE_LINE_H
#define LINE_TEST_FAKE_LINE_H

#include "fake_persistence.h"
#include "line.h"
#include "line_api.h"
#include "line_webhook.h"
#include "omnichat/http.h"

/* What the fake LINE answers and what it saw. Guarded by F.mu. */
typedef struct fake_line {
    oc_http_server_t *line;
    int line_port;
    int push_calls;
    int push_status;
    int push_delay_ms;
    int bot_info_status;
    char last_retry_key[80];
} fake_line_t;

static fake_line_t FL;

static void fake_line_reset(void)
{
    pthread_mutex_lock(&F.mu);
    FL.push_calls = 0;
    FL.push_status = 0;
    FL.push_delay_ms = 0;
    FL.bot_info_status = 0;
    FL.last_retry_key[0] = '\0';
    pthread_mutex_unlock(&F.mu);
}

static void fake_push(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    const char *key = oc_http_header(req, "x-line-retry-key");
    int status, delay;

    (void)user;
    pthread_mutex_lock(&F.mu);
    FL.push_calls++;
    snprintf(FL.last_retry_key, sizeof FL.last_retry_key, "%s", key != NULL ? key : "");
    status = FL.push_status != 0 ? FL.push_status : 200;
    delay = FL.push_delay_ms;
    pthread_mutex_unlock(&F.mu);
    fake_sleep_ms(delay);
    resp->status = status;
    oc_buf_appends(&resp->body, status == 200
                                    ? "{\"sentMessages\":[{\"id\":\"461230966842064897\"}]}"
                                    : "{\"message\":\"An internal server error occurred\"}");
}

static void fake_bot_info(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    int status;

    (void)user;
    (void)req;
    pthread_mutex_lock(&F.mu);
    status = FL.bot_info_status != 0 ? FL.bot_info_status : 200;
    pthread_mutex_unlock(&F.mu);
    resp->status = status;
    oc_buf_appends(&resp->body, status == 200 ? "{\"userId\":\"" FAKE_BOT
                                                "\",\"displayName\":\"Fake Bot\"}"
                                              : "{\"message\":\"Authentication failed\"}");
}

static void fake_profile(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    (void)user;
    (void)req;
    oc_buf_appends(&resp->body, "{\"displayName\":\"Someone\"}");
}

static const oc_http_route_t fake_routes[] = {
    {"POST", "/v2/bot/message/push", false, fake_push, NULL},
    {"GET", "/v2/bot/info", false, fake_bot_info, NULL},
    {"GET", "/v2/bot/profile/", true, fake_profile, NULL},
};

static FAKE_UNUSED int fake_push_calls(void)
{
    int n;

    pthread_mutex_lock(&F.mu);
    n = FL.push_calls;
    pthread_mutex_unlock(&F.mu);
    return n;
}

/* ---------- the connector's context against the fakes ---------- */

static conn_t L;
static line_config_t L_line_cfg = {.profile_timeout_ms = 500};

/* Starts both fakes and fills L as conn_service_create would (no account cache). */
static int fake_start(void)
{
    oc_http_server_opts_t hopts = {.listen = "127.0.0.1:0",
                                   .threads = 8,
                                   .routes = fake_routes,
                                   .nroutes = sizeof fake_routes / sizeof fake_routes[0]};
    oc_http_client_opts_t copts = {.reuse_connections = true};
    char target[64], base[64];
    oc_error_t err;

    oc_error_clear(&err);
    if (fake_pst_start(target, sizeof target) != 0) return -1;
    FL.line = oc_http_server_start(&hopts, &err);
    if (FL.line == NULL) goto fail;
    FL.line_port = oc_http_server_port(FL.line);

    memset(&L, 0, sizeof L);
    L.p = &line_provider;
    L.cfg.persistence_timeout_ms = 3000;
    L.cfg.webhook_timeout_ms = 1500;
    L.cfg.api_timeout_ms = 1000;
    L.cfg.max_attempts = 8;
    L.cfg.backoff_base_ms = 100;
    L.cfg.backoff_max_ms = 800;
    L.cfg.retry_window_s = 82620;
    L.cfg.lease_seconds = 30;
    L.cfg.instance_id = (char *)"unit";
    memcpy(L.cfg.provider, &L_line_cfg, sizeof L_line_cfg);
    L.vault = oc_vault_create_from_buffer(FAKE_VAULT_KEYS, strlen(FAKE_VAULT_KEYS), &err);
    if (L.vault == NULL) goto fail;
    fake_vault = L.vault;
    snprintf(base, sizeof base, "http://127.0.0.1:%d", FL.line_port);
    copts.base = base;
    L.pst = oc_rpc_client_create(target, &err);
    L.api = oc_http_client_create(&copts, &err);
    if (L.pst == NULL || L.api == NULL || line_provider.init(&L, &err) != OC_OK) goto fail;
    return 0;
fail:
    fprintf(stderr, "fake servers: %s\n", err.msg);
    return -1;
}

static void fake_stop(void)
{
    line_provider.dispose(&L);
    oc_http_client_destroy(L.api);
    oc_rpc_client_destroy(L.pst);
    oc_vault_destroy(L.vault);
    oc_http_server_stop(FL.line);
    fake_pst_stop();
    memset(&L, 0, sizeof L);
}

#endif
