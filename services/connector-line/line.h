/* Shared context of the LINE connector: configuration, clients, caches and metrics. */
#ifndef LINE_H
#define LINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/arena.h"
#include "omnichat/connector/v1/connector.pb-c.h"
#include "omnichat/err.h"
#include "omnichat/metrics.h"
#include "omnichat/pb.h"
#include "omnichat/persistence/v1/persistence.pb-c.h"
#include "omnichat/rpc.h"
#include "omnichat/svc.h"
#include "omnichat/vault.h"

#define LINE_PST_SERVICE "/omnichat.persistence.v1.Persistence/"
#define LINE_SERVICE "/omnichat.connector.v1.Connector/"

/* Limits of the connector API (connector.proto). */
#define LINE_TEXT_MAX_UNITS 5000
#define LINE_KEY_MAX 256
#define LINE_NAME_MAX 512
#define LINE_CREDENTIAL_MAX 1024

/* Lease owners: "<instance-id>:<UUIDv4>" within persistence's 128-byte lease_owner limit. */
#define LINE_LEASE_OWNER_MAX 128
#define LINE_INSTANCE_ID_MAX (LINE_LEASE_OWNER_MAX - 1 - 36) /* 91: room for ":" + a UUID */

/* Inbound timestamps: milliseconds in (0, year 9999], as persistence accepts them. */
#define LINE_TIMESTAMP_MAX_MS INT64_C(253402300799000)

typedef struct line_config {
    char *grpc_listen;
    char *http_listen;
    char *persistence_target;
    long long persistence_timeout_ms;
    long long webhook_timeout_ms; /* one webhook request, from arrival to answer */
    char *line_api_base;
    long long line_timeout_ms;
    long long profile_timeout_ms;
    char *vault_key_file;
    long long workers;
    long long http_threads;
    long long max_body_bytes;
    long long worker_interval_ms;
    long long worker_batch;
    long long worker_threads;
    long long lease_seconds;
    long long max_attempts;
    long long backoff_base_ms;
    long long backoff_max_ms;
    long long retry_window_s;
    long long account_cache_ms;
    char *instance_id; /* at most LINE_INSTANCE_ID_MAX bytes; each attempt adds a UUID */
    long long shutdown_grace_ms;
    char *log_level;
} line_config_t;

#include "omnichat/lru.h"
typedef struct line_api line_api_t;
typedef struct line_worker line_worker_t;

typedef struct line {
    line_config_t cfg;
    oc_vault_t *vault;
    oc_rpc_client_t *pst;
    line_api_t *api;
    oc_lru_t *accounts;      /* channel_account_id -> packed ChannelAccount (sealed) */
    oc_lru_t *conversations; /* tenant/conversation -> channel type (immutable) */
    oc_lru_t *profiles;      /* account/user -> display name and picture URL */
    oc_metrics_t *metrics;
    oc_svc_rpc_metrics_t rpc_metrics;
    oc_metric_t *m_webhook_events;
    oc_metric_t *m_webhook_requests;
    oc_metric_t *m_sends;
    oc_metric_t *m_provider_latency;
    oc_metric_t *m_retry_claimed;
} line_t;

/* --- persistence calls (line.c) --- */

/*
 * Blocking unary call to persistence "/omnichat.persistence.v1.Persistence/<method>" with a
 * deadline of timeout_ms (<= 0: persistence-timeout-ms). The response lives in `arena`. Errors are
 * persistence's (status message in err); DEADLINE_EXCEEDED is reported as OC_E_UNAVAILABLE so
 * callers have one "retry later" case. Thread-safe.
 */
oc_err_t line_pst_call(line_t *l, int timeout_ms, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, const char *request_id,
                       oc_arena_t *arena, ProtobufCMessage **resp, oc_error_t *err);

/*
 * Channel account with its sealed credentials, through the account cache (account-cache-ms).
 * tenant_id NULL: webhook routing (ResolveChannelAccount; disabled accounts are NOT_FOUND);
 * otherwise GetChannelAccount within the tenant (another tenant's account is NOT_FOUND).
 * The returned message lives in `arena`. Thread-safe.
 */
oc_err_t line_account_get(line_t *l, int timeout_ms, const char *tenant_id, const char *account_id,
                          const char *request_id, oc_arena_t *arena, PB(ChannelAccount) * *out,
                          oc_error_t *err);
/* Replaces the cached copy of an account (after a status change this process recorded). */
void line_account_put(line_t *l, const PB(ChannelAccount) * acc);
/* Drops the cached copy of an account. */
void line_account_invalidate(line_t *l, const char *account_id);

/* The sealed credential `field` of an account, or NULL. */
const PB(SealedCredential) *
    line_account_credential(const PB(ChannelAccount) * acc, const char *field);

/* Name of an error category for metrics and logs ("auth_error"; "" for none). */
const char *line_category_name(int category);

/* --- the service as an object (line.c) --- */
typedef struct line_service line_service_t;

/* Loads the vault, creates clients, caches and metrics (nothing listens yet). The config is
 * copied by value; its strings must outlive the service. NULL with err. */
line_service_t *line_service_create(const line_config_t *cfg, oc_error_t *err);
/* Binds and starts gRPC, HTTP and the retry worker; reports the bound ports. */
oc_err_t line_service_start(line_service_t *s, int *grpc_port, int *http_port, oc_error_t *err);
/* Stops the worker, then HTTP, then gRPC (graceful, shutdown-grace-ms). */
void line_service_stop(line_service_t *s);
/* Frees everything and wipes the vault keys. NULL is fine. */
void line_service_destroy(line_service_t *s);

/* --- gRPC handlers --- */
oc_err_t line_send_text(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp);
oc_err_t line_connect_channel(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req,
                              ProtobufCMessage **resp);

#endif
