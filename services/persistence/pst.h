/* Shared declarations of the persistence service: context, validation, conversions, RPC tables. */
#ifndef PST_H
#define PST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/metrics.h"
#include "omnichat/pb.h"
#include "omnichat/pg.h"
#include "omnichat/rpc.h"
#include "omnichat/svc.h"
#include "omnichat/persistence/v1/persistence.pb-c.h"

#define PST_SERVICE "omnichat.persistence.v1.Persistence"

/*
 * Who may call what (over TLS; see oc_rpc_method_t.roles). The connector writes what arrives,
 * routes, claims and completes outbound messages and stores credentials; an inbox reads; the
 * operator may do everything. Each table row names its roles, so the policy reads as data.
 */
#define PST_CONNECTOR (OC_RPC_ROLE_CONNECTOR | OC_RPC_ROLE_OPERATOR)
#define PST_READ (OC_RPC_ROLE_CONNECTOR | OC_RPC_ROLE_INBOX | OC_RPC_ROLE_OPERATOR)
#define PST_INBOX_READ (OC_RPC_ROLE_INBOX | OC_RPC_ROLE_OPERATOR)

/* One row of a method table:
 * PST_METHOD("UpsertContact", fn, upsert_contact_request, upsert_contact_response, roles). */
#define PST_METHOD(name, fn, in, out, who) \
    { \
        .path = "/" PST_SERVICE "/" name, .input = &omnichat__persistence__v1__##in##__descriptor, \
        .output = &omnichat__persistence__v1__##out##__descriptor, .handler = fn, .roles = who \
    }

/* Limits of the API (documented in persistence.proto). */
#define PST_MAX_TEXT 20000
#define PST_MAX_JSON 65536
#define PST_MAX_KEY 256
#define PST_MAX_NAME 512
#define PST_MAX_URL 2048
#define PST_MAX_BATCH 100
#define PST_MAX_ATTACHMENTS 20
#define PST_MAX_CREDENTIALS 8
#define PST_MAX_DETAIL 512
#define PST_PAGE_DEFAULT 50
#define PST_PAGE_MAX 200
#define PST_MAX_PAGE_BYTES (3u << 20) /* a ListMessages page is cut short beyond this */
#define PST_CURSOR_KEY_LEN 32

typedef struct pst_config {
    char *grpc_listen;
    char *admin_listen;
    char *database_url;
    char *database_url_file; /* contents of the file (secret) */
    long long workers;
    char *cursor_key_file; /* contents (secret): base64 of >= 32 bytes */
    long long fallback_bucket_seconds;
    long long statement_timeout_ms;
    long long connect_timeout_s;
    long long shutdown_grace_ms;
    long long shutdown_drain_ms;
    char *log_level;
    oc_svc_tls_config_t tls;
    bool allow_core_dumps;
} pst_config_t;

typedef struct pst {
    pst_config_t cfg;
    oc_rpc_tls_t tls; /* what cfg.tls names, for the gRPC server */
    oc_pg_pool_t *pool;
    uint8_t *cursor_key; /* PST_CURSOR_KEY_LEN bytes of oc_secret_alloc memory */
    oc_metrics_t *metrics;
    oc_svc_rpc_metrics_t rpc_metrics;
    oc_metric_t *m_dedupe;
} pst_t;

/* Registers the service's own families in pst->metrics (metrics.c): deduplication, the
 * database pool, and the retry queue counted through the statements below at most every 10 s
 * of scrapes. OC_E_NOMEM on failure. */
oc_err_t pst_metrics_init(pst_t *pst);
extern const oc_pg_stmt_t pst_stmts_metrics[];
extern const size_t pst_nstmts_metrics;

/* --- RPC tables (one per file) and the statements each file prepares --- */
extern const oc_rpc_method_t pst_methods_conversations[];
extern const size_t pst_nmethods_conversations;
extern const oc_pg_stmt_t pst_stmts_conversations[];
extern const size_t pst_nstmts_conversations;
extern const oc_rpc_method_t pst_methods_messages[];
extern const size_t pst_nmethods_messages;
extern const oc_pg_stmt_t pst_stmts_messages[];
extern const size_t pst_nstmts_messages;
extern const oc_rpc_method_t pst_methods_channels[];
extern const size_t pst_nmethods_channels;
extern const oc_pg_stmt_t pst_stmts_channels[];
extern const size_t pst_nstmts_channels;
extern const oc_rpc_method_t pst_methods_outbound[];
extern const size_t pst_nmethods_outbound;
extern const oc_pg_stmt_t pst_stmts_outbound[];
extern const size_t pst_nstmts_outbound;
/* The API's FileDescriptorSet for server reflection, generated at build time from proto/. */
extern const uint8_t pst_descriptor_set[];
extern const size_t pst_descriptor_set_len;

/*
 * Decoding limits of a method by its name ("PersistInbound"); every method has a row (limits.c).
 * NULL for a name without one.
 */
const oc_rpc_limits_t *pst_method_limits(const char *name);

/* --- database access from a handler --- */

/*
 * Runs q[0..n) as one transaction for tenant_id (NULL: no tenant, privileged statements only)
 * on a pooled connection. Results are released with the call's arena. Returns the error
 * recorded in ctx->err.
 */
oc_err_t pst_exec(oc_rpc_ctx_t *ctx, const char *tenant_id, oc_pg_query_t *q, size_t n);

/* --- validation: each records INVALID_ARGUMENT naming the field and returns false --- */

bool pst_check_uuid(oc_rpc_ctx_t *ctx, const char *field, const char *v, bool required);
/* Valid UTF-8, at most max bytes; required means non-empty. */
bool pst_check_str(oc_rpc_ctx_t *ctx, const char *field, const char *v, size_t max, bool required);
/* A JSON value (object or array when container) of at most max bytes; "" passes. */
bool pst_check_json(oc_rpc_ctx_t *ctx, const char *field, const char *v, size_t max,
                    bool container);
bool pst_check_attachments(oc_rpc_ctx_t *ctx, const char *field, size_t n,
                           PB(AttachmentInput) *const *a);
/* Page size: 0 → default, 1..max, else INVALID_ARGUMENT. */
bool pst_page_size(oc_rpc_ctx_t *ctx, int32_t in, int *out);

/* --- enums <-> database text (NULL / 0 when unknown) --- */

const char *pst_channel_type_str(int v);
int pst_channel_type_val(const char *s);
const char *pst_channel_status_str(int v);
int pst_channel_status_val(const char *s);
const char *pst_direction_str(int v);
int pst_direction_val(const char *s);
const char *pst_sender_type_str(int v);
int pst_sender_type_val(const char *s);
const char *pst_content_type_str(int v);
int pst_content_type_val(const char *s);
const char *pst_status_str(int v);
int pst_status_val(const char *s);
const char *pst_error_category_str(int v);
int pst_error_category_val(const char *s);

/* --- small formatting helpers (arena strings) --- */
char *pst_i64(oc_rpc_ctx_t *ctx, int64_t v);
/* NULL for "" so optional text becomes SQL NULL. */
const char *pst_opt(const char *s);
/* JSON array of attachment inputs for the SQL functions; NULL when n == 0. */
char *pst_attachments_json(oc_rpc_ctx_t *ctx, size_t n, PB(AttachmentInput) *const *a);
/* The v1 fallback thread when the provider gave none: "fallback:{user}:{bucket}", one
 * conversation per user and time bucket, the same on every replica and every retry. */
char *pst_fallback_thread(oc_rpc_ctx_t *ctx, const char *external_user_id, int64_t ts_ms);
/* Fresh UUIDv7 in the arena (ids are generated here so they are time-ordered). */
char *pst_new_id(oc_rpc_ctx_t *ctx);

/* --- rows -> protobuf (arena-allocated) --- */
/* A bigint column's text as strtoll(s, NULL, 10) reads it, faster (row conversion). */
int64_t pst_text_i64(const char *s);
PB(Message) * pst_row_message(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row);
PB(Conversation) * pst_row_conversation(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row);
PB(Contact) * pst_row_contact(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row);
PB(ChannelAccount) * pst_row_channel_account(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row);
/* Parses the attachments JSON column into messages' attachments. */
bool pst_parse_attachments(oc_rpc_ctx_t *ctx, const char *json, const char *message_id,
                           size_t *n_out, PB(Attachment) * **out);

/* --- cursors: opaque, HMAC-signed, bound to a scope (tenant + conversation or filters) --- */

/* Writes a base64url cursor for position (ts_us, id) in scope into the arena. */
char *pst_cursor_encode(oc_rpc_ctx_t *ctx, char kind, int64_t ts_us, const char *id,
                        const char *scope);
/* Verifies and decodes; INVALID_ARGUMENT naming `field` on any problem. */
bool pst_cursor_decode(oc_rpc_ctx_t *ctx, const char *field, const char *cursor, char kind,
                       const char *scope, int64_t *ts_us, char id_out[37]);

#endif
