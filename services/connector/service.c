/* The connector service: the shared option rows, metrics, servers, the retry worker, and
 * conn_main, so that a provider's main.c is a few lines. */
#include "service.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "connect.h"
#include "grpc/health/v1/health.pb-c.h"
#include "inbound.h"
#include "omnichat/config.h"
#include "omnichat/http.h"
#include "omnichat/log.h"
#include "omnichat/resources.h"
#include "omnichat/svc.h"
#include "omnichat/svc_run.h"
#include "omnichat/util.h"
#include "outbound.h"
#include "worker.h"

#define ACCOUNT_CACHE_MAX 10000
#define LEASE_SECONDS_MAX 3600 /* persistence's limit */
#define OPTIONS_MAX 64

struct conn_service {
    conn_t conn;
    bool provider_ready;
    conn_worker_t *worker;
    oc_rpc_server_t *rpc;
    oc_http_server_t *http;
    oc_http_route_t routes[5];
};

/* The API's FileDescriptorSet for server reflection, generated at build time from proto/. */
extern const uint8_t conn_descriptor_set[];
extern const size_t conn_descriptor_set_len;

static const oc_rpc_method_t methods[] = {
    /* Who may call what over TLS: an inbox sends replies; only the operator connects channels
     * (it stores credentials). */
    {.path = CONN_SERVICE "SendText",
     .input = &omnichat__connector__v1__send_text_request__descriptor,
     .output = &omnichat__connector__v1__send_text_response__descriptor,
     .handler = conn_send_text,
     .roles = OC_RPC_ROLE_INBOX | OC_RPC_ROLE_OPERATOR},
    {.path = CONN_SERVICE "ConnectChannel",
     .input = &omnichat__connector__v1__connect_channel_request__descriptor,
     .output = &omnichat__connector__v1__connect_channel_response__descriptor,
     .handler = conn_connect_channel,
     .roles = OC_RPC_ROLE_OPERATOR},
};

/* ---------- access logs and metrics ---------- */

static void on_rpc_complete(void *user, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    const conn_t *c = user;

    oc_svc_rpc_record(&c->rpc_metrics, ctx, status, latency_us);
}

static void on_http_complete(void *user, const oc_http_request_t *req, int status,
                             int64_t latency_us)
{
    conn_t *c = user;
    char code[16];
    const char *request_id = oc_http_response_header_value(req->response, "X-Request-Id");

    if (strncmp(req->path, "/webhooks/", 10) != 0) return;
    snprintf(code, sizeof code, "%d", status);
    oc_metric_inc(c->m_webhook_requests, (const char *const[]){c->p->name, code}, 1);
    /* The path holds at most an account id: no secret, no body. Answers given before the
     * handler ran (404, 413...) have no request id. */
    OC_LOG(status >= 500 ? OC_LOG_WARN : OC_LOG_DEBUG, "http", OC_LS("method", req->method),
           OC_LS("path", req->path), OC_LS("request_id", request_id != NULL ? request_id : ""),
           OC_LI("status", status), OC_LI("latency_us", latency_us));
}

/* ---------- readiness: persistence answers its Health/Check with SERVING ---------- */

#define READY_CHECK_TIMEOUT_MS 900 /* under the 1 s period */

static bool pst_check(void *user, char *reason, size_t n)
{
    conn_t *c = user;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    oc_arena_t *arena = oc_arena_create(0);
    oc_error_t err;
    bool ok = false;

    if (arena == NULL) {
        snprintf(reason, n, "out of memory");
        return false;
    }
    oc_error_clear(&err);
    /* Over the client every request uses: the same target, balancing and credentials. */
    if (oc_rpc_client_call(c->pst, "/grpc.health.v1.Health/Check", &req.base,
                           &grpc__health__v1__health_check_response__descriptor,
                           READY_CHECK_TIMEOUT_MS, "readiness-check", arena, &resp, NULL,
                           &err) != OC_OK)
        snprintf(reason, n, "persistence unreachable");
    else if (((Grpc__Health__V1__HealthCheckResponse *)(void *)resp)->status !=
             GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
        snprintf(reason, n, "persistence not serving");
    else
        ok = true;
    oc_arena_destroy(arena);
    return ok;
}

static bool register_metrics(conn_t *c)
{
    static const double provider_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25,  0.5,    1,     2.5,  5,     10};
    c->metrics = oc_metrics_create();
    if (c->metrics == NULL) return false;
    if (oc_svc_rpc_metrics_init(&c->rpc_metrics, c->metrics) != OC_OK) return false;
    /* Label values are constants of the engine, never request data (see docs/operations.md,
     * "Metrics"). */
    c->m_webhook_events = oc_metrics_counter(
        c->metrics, "omnichat_webhook_events_total",
        "webhook events by provider and outcome (stored, duplicate, unroutable, rejected, ...)",
        (const char *const[]){"provider", "outcome"}, 2);
    c->m_webhook_requests = oc_metrics_counter(c->metrics, "omnichat_webhook_requests_total",
                                               "webhook requests, by provider and HTTP status",
                                               (const char *const[]){"provider", "status"}, 2);
    c->m_sends = oc_metrics_counter(
        c->metrics, "omnichat_sends_total",
        "send attempts settled, by channel type, outcome and error category (none when sent)",
        (const char *const[]){"channel", "outcome", "category"}, 3);
    c->m_provider_latency = oc_metrics_histogram(
        c->metrics, "omnichat_provider_latency_seconds", "provider API call latency, by endpoint",
        (const char *const[]){"endpoint"}, 1, provider_buckets,
        sizeof provider_buckets / sizeof provider_buckets[0]);
    c->m_retry_claimed =
        oc_metrics_counter(c->metrics, "omnichat_retry_claimed_total",
                           "outbound messages claimed by the retry worker", NULL, 0);
    return c->m_webhook_events != NULL && c->m_webhook_requests != NULL && c->m_sends != NULL &&
           c->m_provider_latency != NULL && c->m_retry_claimed != NULL;
}

static void webhook_get(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    conn_t *c = user;
    char request_id[64];

    /* The verification handshake touches nothing else: the id is for the access log. */
    conn_request_id(req, request_id);
    oc_http_response_header(resp, "X-Request-Id", request_id);
    c->p->webhook_get(c, req, resp);
}

/* ---------- the service ---------- */

conn_t *conn_service_conn(conn_service_t *s)
{
    return &s->conn;
}

conn_service_t *conn_service_create(const conn_provider_t *p, const conn_config_t *cfg,
                                    oc_error_t *err)
{
    conn_service_t *s = calloc(1, sizeof *s);
    oc_http_client_opts_t hopts = {.user_agent = p->user_agent, .reuse_connections = true};
    conn_t *c;

    if (s == NULL) {
        oc_error_set(err, OC_E_NOMEM, "out of memory");
        return NULL;
    }
    c = &s->conn;
    c->p = p;
    c->cfg = *cfg;
    /* The signature is checked before the body is read: routing by the body needs a secret
     * that does not depend on the account. */
    if (p->routing == CONN_ROUTE_BODY && p->secret_scope != CONN_SECRET_PER_APP) {
        oc_error_set(err, OC_E_CONFIG, "provider %s: routing by body needs a per-app secret",
                     p->name);
        free(s);
        return NULL;
    }
    c->vault = oc_vault_create_from_file(cfg->vault_key_file, 0, err);
    if (c->vault == NULL) goto fail;
    if (oc_vault_warnings(c->vault) & OC_VAULT_W_FILE_NOT_PRIVATE)
        OC_WARN("vault key file is readable by group or others",
                OC_LS("path", cfg->vault_key_file));
    if (!register_metrics(c)) goto oom;
    c->tls_on = oc_svc_tls(&c->cfg.tls, &c->tls) != NULL;
    c->pst = oc_rpc_client_create_tls(c->cfg.persistence_target, c->tls_on ? &c->tls : NULL, err);
    if (c->pst == NULL) goto fail;
    c->ready = oc_ready_create(
        &(oc_ready_opts_t){.check = pst_check, .on_change = oc_svc_log_ready_change, .user = c},
        err);
    if (c->ready == NULL) goto fail;
    hopts.base = cfg->api_base;
    hopts.latency = c->m_provider_latency;
    c->api = oc_http_client_create(&hopts, err);
    if (c->api == NULL) goto fail;
    /* account-cache-ms 0 means no cache (a cache TTL of 0 would mean "never expires"); the
     * cache functions accept NULL. */
    if (cfg->account_cache_ms > 0) {
        c->accounts = oc_lru_create(ACCOUNT_CACHE_MAX, cfg->account_cache_ms);
        if (c->accounts == NULL) goto oom;
    }
    if (p->init != NULL && p->init(c, err) != OC_OK) goto fail;
    s->provider_ready = true;
    return s;
oom:
    oc_error_set(err, OC_E_NOMEM, "out of memory");
fail:
    conn_service_destroy(s);
    return NULL;
}

oc_err_t conn_service_start(conn_service_t *s, int *grpc_port, int *http_port, oc_error_t *err)
{
    conn_t *c = &s->conn;
    size_t nroutes = 0;
    oc_rpc_server_opts_t opts = {
        .listen = c->cfg.grpc_listen,
        .workers = (int)c->cfg.workers,
        .max_message_bytes = 1u << 20,
        .user = c,
        .on_complete = on_rpc_complete,
        .tls = c->tls_on ? &c->tls : NULL,
        .client_roles = c->cfg.tls.client_roles,
        .descriptor_set = conn_descriptor_set,
        .descriptor_set_len = conn_descriptor_set_len,
    };

    if (opts.tls == NULL)
        OC_WARN("gRPC without TLS: any process that reaches the port may send and connect "
                "channels, and persistence is called in plaintext; set --tls-cert-file, "
                "--tls-key-file and --tls-ca-file outside a sandbox",
                OC_LS("listen", c->cfg.grpc_listen));

    s->rpc = oc_rpc_server_create(&opts, methods, sizeof methods / sizeof methods[0], err);
    if (s->rpc == NULL || oc_rpc_server_start(s->rpc, err) != OC_OK) return err->code;
    if (oc_ready_start(c->ready, s->rpc, err) != OC_OK) return err->code;
    *grpc_port = oc_rpc_server_port(s->rpc);

    s->routes[nroutes++] = (oc_http_route_t){
        "POST", c->p->webhook_path, c->p->routing == CONN_ROUTE_PATH, conn_webhook_handle, c};
    if (c->p->webhook_get != NULL)
        s->routes[nroutes++] = (oc_http_route_t){"GET", c->p->webhook_path,
                                                 c->p->routing == CONN_ROUTE_PATH, webhook_get, c};
    s->routes[nroutes++] =
        (oc_http_route_t){"GET", "/healthz", false, oc_svc_http_healthz_rpc, s->rpc};
    s->routes[nroutes++] = (oc_http_route_t){"GET", "/readyz", false, oc_ready_http, c->ready};
    s->routes[nroutes++] =
        (oc_http_route_t){"GET", "/metrics", false, oc_svc_http_metrics, c->metrics};
    oc_http_server_opts_t hopts = {
        .listen = c->cfg.http_listen,
        .threads = (int)c->cfg.http_threads,
        .max_body = (size_t)c->cfg.max_body_bytes,
        .timeout_s = 30,
        .head_timeout_ms = (int)c->cfg.http_head_timeout_ms,
        .body_timeout_ms = (int)c->cfg.http_body_timeout_ms,
        .max_connections = (int)c->cfg.http_max_connections,
        .max_connections_per_ip = (int)c->cfg.http_max_connections_per_ip,
        .routes = s->routes,
        .nroutes = nroutes,
        .on_complete = on_http_complete,
        .user = c,
    };
    s->http = oc_http_server_start(&hopts, err);
    if (s->http == NULL) return err->code;
    *http_port = oc_http_server_port(s->http);

    s->worker = conn_worker_start(c, err);
    if (s->worker == NULL) return err->code;
    return OC_OK;
}

void conn_service_stop(conn_service_t *s)
{
    if (s == NULL) return;
    /* Webhooks and calls are still served while load balancers learn we are going. */
    if (s->rpc != NULL) oc_ready_drain(s->conn.ready, (int)s->conn.cfg.shutdown_drain_ms);
    conn_worker_stop(s->worker);
    s->worker = NULL;
    oc_http_server_stop(s->http);
    s->http = NULL;
    if (s->rpc != NULL) {
        oc_rpc_server_set_serving(s->rpc, false);
        oc_rpc_server_shutdown(s->rpc, (int)s->conn.cfg.shutdown_grace_ms);
    }
}

void conn_service_destroy(conn_service_t *s)
{
    if (s == NULL) return;
    conn_worker_stop(s->worker);
    oc_http_server_stop(s->http);
    /* Before the server it sets the health status of. */
    oc_ready_destroy(s->conn.ready);
    s->conn.ready = NULL;
    oc_rpc_server_destroy(s->rpc);
    if (s->provider_ready && s->conn.p->dispose != NULL) s->conn.p->dispose(&s->conn);
    oc_lru_destroy(s->conn.accounts);
    oc_http_client_destroy(s->conn.api);
    oc_rpc_client_destroy(s->conn.pst);
    oc_metrics_destroy(s->conn.metrics);
    oc_vault_destroy(s->conn.vault);
    free(s);
}

/* ---------- options ---------- */

static bool valid_level(const char *v, char *why, size_t len)
{
    if (oc_log_level_parse(v) >= 0) return true;
    snprintf(why, len, "must be one of debug, info, warn, error, off");
    return false;
}

static bool valid_url(const char *v, char *why, size_t len)
{
    if ((strncmp(v, "https://", 8) == 0 && v[8] != '\0') ||
        (strncmp(v, "http://", 7) == 0 && v[7] != '\0'))
        return true;
    snprintf(why, len, "must be an http:// or https:// URL");
    return false;
}

static bool valid_required(const char *v, char *why, size_t len)
{
    if (v[0] != '\0') return true;
    snprintf(why, len, "must not be empty");
    return false;
}

static bool valid_instance(const char *v, char *why, size_t len)
{
    size_t n = strlen(v);

    /* Each attempt's lease owner is "<instance-id>:<UUID>", at most 128 bytes in persistence. */
    if (n <= CONN_INSTANCE_ID_MAX) return true;
    snprintf(why, len, "must be at most %d bytes", CONN_INSTANCE_ID_MAX);
    return false;
}

#define OPT(name, type, def, min, max, flags, field, help, validate) \
    (oc_config_option_t) \
    { \
        name, type, def, min, max, flags, offsetof(conn_config_t, field), help, validate \
    }

static oc_config_option_t table[OPTIONS_MAX];
static const oc_config_option_t tls_rows[] = {OC_SVC_TLS_OPTIONS(conn_config_t, tls)};
static char api_base_name[64], api_timeout_name[64], api_base_help[160];

const oc_config_option_t *conn_options(const conn_provider_t *p, size_t *n)
{
    size_t k = 0;

    snprintf(api_base_name, sizeof api_base_name, "%s-api-base", p->api_option);
    snprintf(api_timeout_name, sizeof api_timeout_name, "%s-timeout-ms", p->api_option);
    snprintf(api_base_help, sizeof api_base_help,
             "base URL of the %s API (the simulator's in tests)", p->name);
    table[k++] = OPT("grpc-listen", OC_CFG_STR, p->grpc_listen_default, 0, 0, 0, grpc_listen,
                     "gRPC listen address (port 0: any free port)", valid_required);
    table[k++] = OPT("http-listen", OC_CFG_STR, p->http_listen_default, 0, 0, 0, http_listen,
                     "HTTP address for the webhook, /healthz, /readyz and /metrics (port 0: any "
                     "free port)",
                     valid_required);
    table[k++] = OPT("persistence-target", OC_CFG_STR, "127.0.0.1:50051", 0, 0, 0,
                     persistence_target, "gRPC target of the persistence service", valid_required);
    table[k++] = OPT("persistence-timeout-ms", OC_CFG_INT, "5000", 50, 600000, 0,
                     persistence_timeout_ms, "deadline of each persistence call", NULL);
    table[k++] = OPT("webhook-timeout-ms", OC_CFG_INT, p->webhook_timeout_default, 50, 600000, 0,
                     webhook_timeout_ms, p->webhook_timeout_help, NULL);
    table[k++] = OPT(api_base_name, OC_CFG_STR, p->api_base_default, 0, 0, 0, api_base,
                     api_base_help, valid_url);
    table[k++] = OPT(api_timeout_name, OC_CFG_INT, "10000", 100, p->api_timeout_max_ms, 0,
                     api_timeout_ms, "total timeout of one provider API call (send, verify)", NULL);
    table[k++] = OPT("vault-key-file", OC_CFG_STR, NULL, 0, 0, OC_CFG_REQUIRED, vault_key_file,
                     "path of the vault key file (docs/vault.md)", valid_required);
    if (p->secret_scope == CONN_SECRET_PER_APP)
        table[k++] = OPT("app-secret-file", OC_CFG_SECRET_FILE, NULL, 0, 0, OC_CFG_REQUIRED,
                         app_secret, "file holding the app secret that signs the webhooks", NULL);
    table[k++] = OPT("workers", OC_CFG_INT, "32", 1, 512, 0, workers, "gRPC handler threads", NULL);
    table[k++] = OPT("http-threads", OC_CFG_INT, "16", 1, 512, 0, http_threads,
                     "HTTP handler threads", NULL);
    table[k++] = OPT("max-body-bytes", OC_CFG_INT, "1048576", 1024, 67108864, 0, max_body_bytes,
                     "largest webhook body accepted (413 beyond)", NULL);
    table[k++] =
        OPT("http-head-timeout-ms", OC_CFG_INT, "10000", 100, 600000, 0, http_head_timeout_ms,
            "deadline for a whole HTTP request head, from its first byte (408 and close "
            "beyond)",
            NULL);
    table[k++] =
        OPT("http-body-timeout-ms", OC_CFG_INT, "30000", 100, 600000, 0, http_body_timeout_ms,
            "deadline for a whole HTTP request body, from the end of its head", NULL);
    table[k++] =
        OPT("http-max-connections", OC_CFG_INT, "4096", 1, 1000000, 0, http_max_connections,
            "HTTP connections open at once; more are closed at accept (held below the "
            "descriptor limit)",
            NULL);
    table[k++] = OPT(
        "http-max-connections-per-ip", OC_CFG_INT, "256", 1, 1000000, 0,
        http_max_connections_per_ip,
        "HTTP connections open at once from one client address (raise it behind a proxy)", NULL);
    table[k++] = OPT("worker-interval-ms", OC_CFG_INT, "500", 10, 600000, 0, worker_interval_ms,
                     "how often the retry worker looks for due messages", NULL);
    table[k++] = OPT("worker-batch", OC_CFG_INT, "32", 1, 100, 0, worker_batch,
                     "most messages claimed at once", NULL);
    table[k++] = OPT("worker-threads", OC_CFG_INT, "4", 1, 64, 0, worker_threads,
                     "threads delivering claimed messages", NULL);
    table[k++] = OPT("lease-seconds", OC_CFG_INT, "30", 1, LEASE_SECONDS_MAX, 0, lease_seconds,
                     "lease taken on a message while it is being sent; must outlast the API "
                     "timeout plus two persistence-timeout-ms",
                     NULL);
    table[k++] = OPT("max-attempts", OC_CFG_INT, "8", 1, 1000, 0, max_attempts,
                     "provider calls per message before it fails", NULL);
    table[k++] = OPT("backoff-base-ms", OC_CFG_INT, "1000", 1, 3600000, 0, backoff_base_ms,
                     "first retry delay (doubles each attempt, full jitter)", NULL);
    table[k++] = OPT("backoff-max-ms", OC_CFG_INT, "300000", 1, 86400000, 0, backoff_max_ms,
                     "largest retry delay", NULL);
    table[k++] = OPT("retry-window-s", OC_CFG_INT, p->retry_window_default, p->retry_window_min_s,
                     p->retry_window_max_s, 0, retry_window_s, p->retry_window_help, NULL);
    if (p->delivery == CONN_DELIVERY_ECHO_CONFIRMS)
        table[k++] =
            OPT("echo-grace-ms", OC_CFG_INT, p->echo_grace_default, 0, 86400000, 0, echo_grace_ms,
                "how long a send of unknown outcome waits for its echo before it is "
                "sent again or settled as unknown",
                NULL);
    table[k++] = OPT("account-cache-ms", OC_CFG_INT, "5000", 0, 3600000, 0, account_cache_ms,
                     "how long a channel account is cached (0: not at all)", NULL);
    table[k++] = OPT("instance-id", OC_CFG_STR, "", 0, 0, 0, instance_id,
                     "name of this process in lease owners, \"<instance-id>:<UUID>\" per attempt "
                     "(default: hostname-pid-random)",
                     valid_instance);
    table[k++] = OPT("shutdown-grace-ms", OC_CFG_INT, "5000", 0, 600000, 0, shutdown_grace_ms,
                     "how long in-flight calls may finish after SIGTERM", NULL);
    table[k++] = OPT("shutdown-drain-ms", OC_CFG_INT, "1000", 0, 600000, 0, shutdown_drain_ms,
                     "after SIGTERM, how long webhooks and calls are still served while "
                     "readiness says not ready (so load balancers drop the endpoint first)",
                     NULL);
    table[k++] = OPT("log-level", OC_CFG_STR, "info", 0, 0, 0, log_level,
                     "debug, info, warn, error or off", valid_level);
    for (size_t i = 0; i < sizeof tls_rows / sizeof tls_rows[0]; i++)
        table[k++] = tls_rows[i];
    table[k++] = OPT("allow-core-dumps", OC_CFG_BOOL, "false", 0, 0, 0, allow_core_dumps,
                     "let the process dump core, for debugging only: key pages stay out of the "
                     "dump, but requests and other memory go in (docs/operations.md)",
                     NULL);
    for (size_t i = 0; i < p->noptions && k < OPTIONS_MAX; i++) {
        table[k] = p->options[i];
        table[k++].offset += offsetof(conn_config_t, provider);
    }
    *n = k;
    return table;
}

bool conn_check_config(const conn_provider_t *p, const conn_config_t *cfg, oc_buf_t *problems)
{
    bool ok = oc_svc_tls_check(&cfg->tls, problems);

    if (cfg->backoff_base_ms > cfg->backoff_max_ms) {
        oc_buf_appends(problems, "--backoff-base-ms: must not exceed --backoff-max-ms\n");
        ok = false;
    }
    if (cfg->lease_seconds * 1000 <= cfg->api_timeout_ms + 2 * cfg->persistence_timeout_ms) {
        /* An attempt holds its lease through an account look-up, the provider call and
         * CompleteOutbound: a lease that ran out meanwhile would let a second worker send
         * concurrently. */
        oc_buf_appendf(problems,
                       "--lease-seconds: %lld s must be longer than --%s-timeout-ms + 2 x "
                       "--persistence-timeout-ms (%lld ms)\n",
                       cfg->lease_seconds, p->api_option,
                       cfg->api_timeout_ms + 2 * cfg->persistence_timeout_ms);
        ok = false;
    }
    /* The key file as start-up loads it (same code), so that --check-config says ok only for
     * a file the service will accept; the keys are wiped right away. */
    if (cfg->vault_key_file != NULL && cfg->vault_key_file[0] != '\0') {
        oc_error_t err;
        oc_error_clear(&err);
        oc_vault_t *v = oc_vault_create_from_file(cfg->vault_key_file, 0, &err);
        if (v == NULL) {
            oc_buf_appendf(problems, "--vault-key-file: %s\n", err.msg);
            ok = false;
        }
        oc_vault_destroy(v);
    }
    return ok;
}

/* ---------- conn_main ---------- */

static const conn_provider_t *main_provider; /* for the check callback (main thread only) */

static bool check_rules(const void *cfg, oc_buf_t *problems)
{
    return conn_check_config(main_provider, cfg, problems);
}

/* hostname-pid-random: unique per process, readable in the database's lease_owner column. */
static char *default_instance_id(const char *name)
{
    char host[64];
    uint8_t rnd[4] = {0};
    char hex[9];
    char *out = NULL;

    snprintf(host, sizeof host, "%s", name);
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    RAND_bytes(rnd, sizeof rnd);
    oc_hex_encode(rnd, sizeof rnd, hex);
    /* Short enough for CONN_INSTANCE_ID_MAX whatever the host name. */
    if (asprintf(&out, "%.60s-%ld-%s", host, (long)getpid(), hex) < 0) return NULL;
    return out;
}

static void *svc_create(void *cfg, oc_error_t *err)
{
    return conn_service_create(main_provider, cfg, err);
}

static oc_err_t svc_start(void *svc, int ports[2], oc_error_t *err)
{
    return conn_service_start(svc, &ports[0], &ports[1], err);
}

static void svc_stop(void *svc)
{
    conn_service_stop(svc);
}

static void svc_destroy(void *svc)
{
    conn_service_destroy(svc);
}

static void svc_started(void *svc, void *cfgp)
{
    const conn_config_t *cfg = cfgp;

    (void)svc;
    OC_INFO("serving", OC_LS("provider", main_provider->name),
            OC_LS("instance_id", cfg->instance_id), OC_LS("api_base", cfg->api_base));
}

int conn_main(const conn_provider_t *p, int argc, char **argv)
{
    static const oc_svc_ops_t ops = {svc_create,  svc_start,   svc_stop,
                                     svc_destroy, svc_started, {"grpc_port", "http_port"}};
    char program[64], usage[96], component[64];
    conn_config_t *cfg = calloc(1, sizeof *cfg);
    const oc_config_option_t *opts;
    char *generated_id = NULL, *configured_id;
    size_t nopts;
    int rc = 0;

    /* Before any thread exists (gRPC's included): signals are taken by sigwait; malloc's arena
     * count and the descriptor limit are process-wide and threads created later inherit them. */
    oc_resources_tune_malloc();
    oc_resources_raise_nofile();
    oc_svc_block_signals();
    if (cfg == NULL || p->config_size > CONN_PROVIDER_CFG_MAX) {
        fprintf(stderr, "out of memory or provider config too large\n");
        free(cfg);
        return 1;
    }
    main_provider = p;
    snprintf(program, sizeof program, "omnichat-connector-%s", p->name);
    snprintf(usage, sizeof usage, "%s [--flags]", program);
    snprintf(component, sizeof component, "connector-%s", p->name);
    opts = conn_options(p, &nopts);
    if (!oc_svc_configure(program, p->version, usage, opts, nopts, cfg, argc, argv, check_rules,
                          &rc)) {
        free(cfg);
        return rc;
    }
    oc_log_init(component, (oc_log_level_t)oc_log_level_parse(cfg->log_level));
    oc_rpc_route_core_logs();
    if (cfg->allow_core_dumps) oc_svc_opt_in_core_dumps();

    configured_id = cfg->instance_id;
    if (cfg->instance_id == NULL || cfg->instance_id[0] == '\0') {
        generated_id = default_instance_id(p->name);
        if (generated_id == NULL) {
            OC_ERROR("out of memory");
            oc_config_free(opts, nopts, cfg);
            free(cfg);
            return 1;
        }
        cfg->instance_id = generated_id;
    }
    rc = oc_svc_run(&ops, cfg, p->version);
    cfg->instance_id = configured_id; /* the table frees what it allocated */
    free(generated_id);
    oc_config_free(opts, nopts, cfg);
    free(cfg);
    return rc;
}
