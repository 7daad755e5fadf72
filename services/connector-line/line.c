/* Wires the LINE connector together: persistence client, account cache, metrics, servers. */
#include "line.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "omnichat/lru.h"
#include "line_api.h"
#include "omnichat/http.h"
#include "omnichat/log.h"
#include "omnichat/util.h"
#include "webhook.h"
#include "worker.h"

#define ACCOUNT_CACHE_MAX 10000
#define CONVERSATION_CACHE_MAX 100000
#define PROFILE_CACHE_MAX 10000
#define PROFILE_TTL_MS (60LL * 60 * 1000) /* names and pictures change; refresh hourly */

struct line_service {
    line_t line;
    line_worker_t *worker;
    oc_rpc_server_t *rpc;
    oc_http_server_t *http;
    oc_http_route_t routes[3];
};

static const oc_rpc_method_t methods[] = {
    {LINE_SERVICE "SendText", &omnichat__connector__v1__send_text_request__descriptor,
     &omnichat__connector__v1__send_text_response__descriptor, line_send_text},
    {LINE_SERVICE "ConnectChannel", &omnichat__connector__v1__connect_channel_request__descriptor,
     &omnichat__connector__v1__connect_channel_response__descriptor, line_connect_channel},
};

const char *line_category_name(int category)
{
    const char *name = oc_pb_enum_name(OC_PB_ERROR_CATEGORY, category);

    return category == 0 ? "" : name != NULL ? name : "internal_error";
}

/* ---------- persistence ---------- */

oc_err_t line_pst_call(line_t *l, int timeout_ms, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, const char *request_id,
                       oc_arena_t *arena, ProtobufCMessage **resp, oc_error_t *err)
{
    char path[128];
    oc_error_t e;
    oc_err_t rc;

    snprintf(path, sizeof path, "%s%s", LINE_PST_SERVICE, method);
    oc_error_clear(&e);
    rc = oc_rpc_client_call(l->pst, path, req, resp_desc,
                            timeout_ms > 0 ? timeout_ms : (int)l->cfg.persistence_timeout_ms,
                            request_id, arena, resp, NULL, &e);
    if (rc == OC_OK) return OC_OK;
    if (rc == OC_E_DEADLINE || rc == OC_E_UNAVAILABLE || rc == OC_E_CANCELLED) {
        /* Callers decide how loud this is (the worker polls while persistence is down). */
        OC_DEBUG("persistence unavailable", OC_LS("method", method), OC_LS("code", oc_err_name(rc)),
                 OC_LS("request_id", request_id), OC_LS("detail", e.msg));
        return oc_error_set(err, OC_E_UNAVAILABLE, "persistence: unavailable, retry");
    }
    return oc_error_set(err, rc, "%s", e.msg);
}

/* ---------- channel accounts ---------- */

static void lower_copy(char *dst, const char *src, size_t cap)
{
    size_t i = 0;

    for (; src[i] != '\0' && i + 1 < cap; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

void line_account_put(line_t *l, const PB(ChannelAccount) * acc)
{
    char key[OC_UUID_STR_LEN + 1];
    size_t n;
    uint8_t *buf;

    if (acc == NULL || acc->channel_account_id == NULL) return;
    lower_copy(key, acc->channel_account_id, sizeof key);
    n = protobuf_c_message_get_packed_size(&acc->base);
    buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) return;
    protobuf_c_message_pack(&acc->base, buf);
    oc_lru_put(l->accounts, key, buf, n);
    free(buf);
}

void line_account_invalidate(line_t *l, const char *account_id)
{
    char key[OC_UUID_STR_LEN + 1];

    lower_copy(key, account_id, sizeof key);
    oc_lru_remove(l->accounts, key);
}

oc_err_t line_account_get(line_t *l, int timeout_ms, const char *tenant_id, const char *account_id,
                          const char *request_id, oc_arena_t *arena, PB(ChannelAccount) * *out,
                          oc_error_t *err)
{
    char key[OC_UUID_STR_LEN + 1];
    char *val;
    size_t len;
    ProtobufCAllocator alloc;
    PB(ChannelAccount) *acc = NULL;
    oc_err_t rc;

    *out = NULL;
    lower_copy(key, account_id, sizeof key);
    oc_arena_protobuf_allocator(arena, &alloc);
    if (oc_lru_get(l->accounts, key, arena, &val, &len)) {
        acc = (PB(ChannelAccount) *)protobuf_c_message_unpack(
            &omnichat__persistence__v1__channel_account__descriptor, &alloc, len,
            (const uint8_t *)val);
        /* The id is global, so a cached account of another tenant is simply not theirs. */
        if (acc != NULL && tenant_id != NULL && strcasecmp(acc->tenant_id, tenant_id) != 0)
            return oc_error_set(err, OC_E_NOT_FOUND, "channel_account_id: not found");
        if (acc != NULL && tenant_id == NULL &&
            acc->status == PBE(CHANNEL_STATUS__CHANNEL_STATUS_DISABLED))
            return oc_error_set(err, OC_E_NOT_FOUND, "channel_account_id: not found");
        if (acc != NULL) {
            *out = acc;
            return OC_OK;
        }
    }
    if (tenant_id != NULL) {
        PB(GetChannelAccountRequest) req = PB_INIT(GET_CHANNEL_ACCOUNT_REQUEST);
        PB(GetChannelAccountResponse) *resp = NULL;
        req.tenant_id = (char *)tenant_id;
        req.channel_account_id = (char *)account_id;
        rc = line_pst_call(l, timeout_ms, "GetChannelAccount", &req.base,
                           &omnichat__persistence__v1__get_channel_account_response__descriptor,
                           request_id, arena, (ProtobufCMessage **)&resp, err);
        if (rc == OC_OK) acc = resp->channel_account;
    } else {
        PB(ResolveChannelAccountRequest) req = PB_INIT(RESOLVE_CHANNEL_ACCOUNT_REQUEST);
        PB(ResolveChannelAccountResponse) *resp = NULL;
        req.channel_account_id = (char *)account_id;
        rc = line_pst_call(l, timeout_ms, "ResolveChannelAccount", &req.base,
                           &omnichat__persistence__v1__resolve_channel_account_response__descriptor,
                           request_id, arena, (ProtobufCMessage **)&resp, err);
        if (rc == OC_OK) acc = resp->channel_account;
    }
    if (rc != OC_OK) return rc;
    if (acc == NULL)
        return oc_error_set(err, OC_E_INTERNAL, "channel account: missing in the answer");
    if (acc->channel_type != PBE(CHANNEL_TYPE__CHANNEL_TYPE_LINE))
        return oc_error_set(err, OC_E_NOT_FOUND, "channel_account_id: not found");
    line_account_put(l, acc);
    *out = acc;
    return OC_OK;
}

const PB(SealedCredential) *
    line_account_credential(const PB(ChannelAccount) * acc, const char *field)
{
    for (size_t i = 0; i < acc->n_credentials; i++)
        if (acc->credentials[i]->field != NULL && strcmp(acc->credentials[i]->field, field) == 0)
            return acc->credentials[i];
    return NULL;
}

/* ---------- access logs and metrics ---------- */

static void on_rpc_complete(void *user, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    const line_t *l = user;

    oc_svc_rpc_record(&l->rpc_metrics, ctx, status, latency_us);
}

static void on_http_complete(void *user, const oc_http_request_t *req, int status,
                             int64_t latency_us)
{
    line_t *l = user;
    char code[16];

    if (strncmp(req->path, "/webhooks/", 10) != 0) return;
    snprintf(code, sizeof code, "%d", status);
    oc_metric_inc(l->m_webhook_requests, (const char *const[]){code}, 1);
    /* The path holds only the account id: no secret, no body. */
    OC_LOG(status >= 500 ? OC_LOG_WARN : OC_LOG_DEBUG, "http", OC_LS("method", req->method),
           OC_LS("path", req->path), OC_LI("status", status), OC_LI("latency_us", latency_us));
}

static bool register_metrics(line_t *l)
{
    static const double provider_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25,  0.5,    1,     2.5,  5,     10};
    l->metrics = oc_metrics_create();
    if (l->metrics == NULL) return false;
    if (oc_svc_rpc_metrics_init(&l->rpc_metrics, l->metrics) != OC_OK) return false;
    l->m_webhook_events =
        oc_metrics_counter(l->metrics, "omnichat_webhook_events_total",
                           "webhook events, by outcome", (const char *const[]){"outcome"}, 1);
    l->m_webhook_requests =
        oc_metrics_counter(l->metrics, "omnichat_webhook_requests_total",
                           "webhook requests, by HTTP status", (const char *const[]){"status"}, 1);
    l->m_sends = oc_metrics_counter(l->metrics, "omnichat_sends_total",
                                    "provider send attempts, by channel, outcome and category",
                                    (const char *const[]){"channel", "outcome", "category"}, 3);
    l->m_provider_latency = oc_metrics_histogram(
        l->metrics, "omnichat_provider_latency_seconds", "LINE API call latency, by endpoint",
        (const char *const[]){"endpoint"}, 1, provider_buckets,
        sizeof provider_buckets / sizeof provider_buckets[0]);
    l->m_retry_claimed =
        oc_metrics_counter(l->metrics, "omnichat_retry_claimed_total",
                           "outbound messages claimed by the retry worker", NULL, 0);
    return l->m_webhook_events != NULL && l->m_webhook_requests != NULL && l->m_sends != NULL &&
           l->m_provider_latency != NULL && l->m_retry_claimed != NULL;
}

line_service_t *line_service_create(const line_config_t *cfg, oc_error_t *err)
{
    line_service_t *s = calloc(1, sizeof *s);
    line_t *l;

    if (s == NULL) {
        oc_error_set(err, OC_E_NOMEM, "out of memory");
        return NULL;
    }
    l = &s->line;
    l->cfg = *cfg;
    l->vault = oc_vault_create_from_file(cfg->vault_key_file, 0, err);
    if (l->vault == NULL) goto fail;
    if (oc_vault_warnings(l->vault) & OC_VAULT_W_FILE_NOT_PRIVATE)
        OC_WARN("vault key file is readable by group or others",
                OC_LS("path", cfg->vault_key_file));
    if (!register_metrics(l)) goto oom;
    l->pst = oc_rpc_client_create(cfg->persistence_target, err);
    if (l->pst == NULL) goto fail;
    l->api = line_api_create(cfg->line_api_base, l->m_provider_latency, err);
    if (l->api == NULL) goto fail;
    /* account-cache-ms 0 means no cache (a cache TTL of 0 would mean "never expires"); the
     * cache functions accept NULL. */
    if (cfg->account_cache_ms > 0) {
        l->accounts = oc_lru_create(ACCOUNT_CACHE_MAX, cfg->account_cache_ms);
        if (l->accounts == NULL) goto oom;
    }
    l->conversations = oc_lru_create(CONVERSATION_CACHE_MAX, 0);
    l->profiles = oc_lru_create(PROFILE_CACHE_MAX, PROFILE_TTL_MS);
    if (l->conversations == NULL || l->profiles == NULL) goto oom;
    return s;
oom:
    oc_error_set(err, OC_E_NOMEM, "out of memory");
fail:
    line_service_destroy(s);
    return NULL;
}

oc_err_t line_service_start(line_service_t *s, int *grpc_port, int *http_port, oc_error_t *err)
{
    line_t *l = &s->line;
    oc_rpc_server_opts_t opts = {
        .listen = l->cfg.grpc_listen,
        .workers = (int)l->cfg.workers,
        .max_message_bytes = 1u << 20,
        .user = l,
        .on_complete = on_rpc_complete,
    };

    s->rpc = oc_rpc_server_create(&opts, methods, sizeof methods / sizeof methods[0], err);
    if (s->rpc == NULL || oc_rpc_server_start(s->rpc, err) != OC_OK) return err->code;
    *grpc_port = oc_rpc_server_port(s->rpc);

    s->routes[0] = (oc_http_route_t){"POST", "/webhooks/line/", true, line_webhook_handle, l};
    s->routes[1] = (oc_http_route_t){"GET", "/healthz", false, oc_svc_http_healthz, NULL};
    s->routes[2] = (oc_http_route_t){"GET", "/metrics", false, oc_svc_http_metrics, l->metrics};
    oc_http_server_opts_t hopts = {
        .listen = l->cfg.http_listen,
        .threads = (int)l->cfg.http_threads,
        .max_body = (size_t)l->cfg.max_body_bytes,
        .timeout_s = 30,
        .routes = s->routes,
        .nroutes = 3,
        .on_complete = on_http_complete,
        .user = l,
    };
    s->http = oc_http_server_start(&hopts, err);
    if (s->http == NULL) return err->code;
    *http_port = oc_http_server_port(s->http);

    s->worker = line_worker_start(l, err);
    if (s->worker == NULL) return err->code;
    return OC_OK;
}

void line_service_stop(line_service_t *s)
{
    if (s == NULL) return;
    line_worker_stop(s->worker);
    s->worker = NULL;
    oc_http_server_stop(s->http);
    s->http = NULL;
    if (s->rpc != NULL) {
        oc_rpc_server_set_serving(s->rpc, false);
        oc_rpc_server_shutdown(s->rpc, (int)s->line.cfg.shutdown_grace_ms);
    }
}

void line_service_destroy(line_service_t *s)
{
    if (s == NULL) return;
    line_worker_stop(s->worker);
    oc_http_server_stop(s->http);
    oc_rpc_server_destroy(s->rpc);
    oc_lru_destroy(s->line.accounts);
    oc_lru_destroy(s->line.conversations);
    oc_lru_destroy(s->line.profiles);
    line_api_destroy(s->line.api);
    oc_rpc_client_destroy(s->line.pst);
    oc_metrics_destroy(s->line.metrics);
    oc_vault_destroy(s->line.vault);
    free(s);
}
