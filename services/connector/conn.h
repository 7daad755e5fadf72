/* The connector engine's context: configuration, persistence client, caches, metrics. */
#ifndef CONN_H
#define CONN_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/arena.h"
#include "omnichat/err.h"
#include "omnichat/http_client.h"
#include "omnichat/lru.h"
#include "omnichat/metrics.h"
#include "omnichat/pb.h"
#include "omnichat/ready.h"
#include "omnichat/rpc.h"
#include "omnichat/svc.h"
#include "omnichat/vault.h"
#include "provider.h"

#define CONN_PST_SERVICE "/omnichat.persistence.v1.Persistence/"
#define CONN_SERVICE "/omnichat.connector.v1.Connector/"

/* Limits of the connector API (connector.proto). */
#define CONN_KEY_MAX 256
#define CONN_NAME_MAX 512
#define CONN_CREDENTIAL_MAX 1024

/* Lease owners: "<instance-id>:<UUIDv4>" within persistence's 128-byte lease_owner limit. */
#define CONN_LEASE_OWNER_MAX 128
#define CONN_INSTANCE_ID_MAX (CONN_LEASE_OWNER_MAX - 1 - 36) /* 91: room for ":" + a UUID */

/* Inbound timestamps: milliseconds in (0, year 9999], as persistence accepts them. */
#define CONN_TIMESTAMP_MAX_MS INT64_C(253402300799000)

/* The options every connector shares (service.c builds the table, with the provider's names). */
typedef struct conn_config {
    char *grpc_listen;
    char *http_listen;
    char *persistence_target;
    long long persistence_timeout_ms;
    long long webhook_timeout_ms; /* one webhook request, from arrival to answer */
    char *api_base;               /* <api>-api-base */
    long long api_timeout_ms;     /* <api>-timeout-ms */
    char *vault_key_file;
    char *app_secret; /* CONN_SECRET_PER_APP: app-secret-file's contents */
    long long workers;
    long long http_threads;
    long long max_body_bytes;
    long long http_head_timeout_ms;
    long long http_body_timeout_ms;
    long long http_max_connections;
    long long http_max_connections_per_ip;
    long long worker_interval_ms;
    long long worker_batch;
    long long worker_threads;
    long long lease_seconds;
    long long max_attempts;
    long long backoff_base_ms;
    long long backoff_max_ms;
    long long retry_window_s; /* 0: no limit */
    long long echo_grace_ms;  /* CONN_DELIVERY_ECHO_CONFIRMS */
    long long account_cache_ms;
    char *instance_id; /* at most CONN_INSTANCE_ID_MAX bytes; each attempt adds a UUID */
    long long shutdown_grace_ms;
    long long shutdown_drain_ms;
    char *log_level;
    oc_svc_tls_config_t tls; /* for the gRPC server and the persistence client alike */
    bool allow_core_dumps;
    alignas(max_align_t) unsigned char provider[CONN_PROVIDER_CFG_MAX];
} conn_config_t;

typedef struct conn {
    const conn_provider_t *p;
    conn_config_t cfg;
    oc_rpc_tls_t tls; /* what cfg.tls names; unused (plaintext) when tls_on is false */
    bool tls_on;
    oc_vault_t *vault;
    oc_rpc_client_t *pst;
    oc_ready_t *ready; /* persistence reachable; calls that find it unavailable report here */
    oc_http_client_t *api;
    oc_lru_t *accounts; /* channel_account_id -> packed ChannelAccount (sealed); route keys */
    void *provider_state;
    oc_metrics_t *metrics;
    oc_svc_rpc_metrics_t rpc_metrics;
    oc_metric_t *m_webhook_events;
    oc_metric_t *m_webhook_requests;
    oc_metric_t *m_sends;
    oc_metric_t *m_provider_latency;
    oc_metric_t *m_retry_claimed;
} conn_t;

/* The provider's own options, as its table filled them. */
static inline void *conn_provider_config(conn_t *c)
{
    return c->cfg.provider;
}

/*
 * Blocking unary call to persistence "/omnichat.persistence.v1.Persistence/<method>" with a
 * deadline of timeout_ms (<= 0: persistence-timeout-ms). The response lives in `arena`. Errors are
 * persistence's (status message in err); DEADLINE_EXCEEDED is reported as OC_E_UNAVAILABLE so
 * callers have one "retry later" case. Thread-safe.
 */
oc_err_t conn_pst_call(conn_t *c, int timeout_ms, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, const char *request_id,
                       oc_arena_t *arena, ProtobufCMessage **resp, oc_error_t *err);

/*
 * Channel account with its sealed credentials, through the account cache (account-cache-ms).
 * tenant_id NULL: webhook routing (ResolveChannelAccount; disabled accounts are NOT_FOUND);
 * otherwise GetChannelAccount within the tenant (another tenant's account is NOT_FOUND). An
 * account of a channel type this connector does not serve is NOT_FOUND. The returned message
 * lives in `arena`. Thread-safe.
 */
oc_err_t conn_account_get(conn_t *c, int timeout_ms, const char *tenant_id, const char *account_id,
                          const char *request_id, oc_arena_t *arena, PB(ChannelAccount) * *out,
                          oc_error_t *err);
/* Webhook routing by the provider's account id (CONN_ROUTE_BODY): ResolveChannelAccount by
 * (channel_type, external_account_id), cached like conn_account_get. Thread-safe. */
oc_err_t conn_account_route(conn_t *c, int timeout_ms, int channel_type, const char *external_id,
                            const char *request_id, oc_arena_t *arena, PB(ChannelAccount) * *out,
                            oc_error_t *err);
/* Replaces the cached copy of an account (after a status change this process recorded). */
void conn_account_put(conn_t *c, const PB(ChannelAccount) * acc);
/* Drops the cached copy of an account. */
void conn_account_invalidate(conn_t *c, const char *account_id);

/* The sealed credential `field` of an account, or NULL. */
const PB(SealedCredential) *
    conn_account_credential(const PB(ChannelAccount) * acc, const char *field);

/* True when this connector serves channel type t. */
bool conn_serves(const conn_t *c, int channel_type);

/* Name of an error category for metrics and logs ("auth_error"; "" for none). */
const char *conn_category_name(int category);

/*
 * A call to the provider's API through the engine's HTTP client, with `token` carried as the
 * provider declares (token_in, token_name): a header line or a form field, wiped after use.
 * token NULL: no credential. Same contract as oc_http_client_call. Thread-safe.
 */
oc_err_t conn_api_call(conn_t *c, oc_http_call_t *call, const char *token, size_t token_len,
                       oc_http_result_t *res);

/* The request id of an inbound HTTP request: its X-Request-Id when it is 1 to 63 bytes of
 * printable ASCII, else a new UUIDv4. */
void conn_request_id(const oc_http_request_t *req, char out[64]);

#endif
