/* Persistence RPCs for the outbound lifecycle: create-or-get, complete, claim due retries,
 * reconcile. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "omnichat/util.h"
#include "pst.h"

#define LEASE_OWNER_MAX 128
#define LEASE_SECONDS_MAX 3600
#define LEASE_SECONDS_DEFAULT 30
#define FINGERPRINT_MAX 128
#define CLAIM_MAX 100
/* Year 9999: past any real schedule, and inside what from_ms can represent. */
#define TS_MAX_MS INT64_C(253402300799000)

/* The columns of omnichat.v_messages, computed from a message row M that the function returned
 * (no read-back through the view). Keep in step with v_messages in 0001_schema.sql. */
#define MSG_COLS(M) \
    " " M ".tenant_id, " M ".id, " M ".channel_account_id, " M ".conversation_id, " M \
    ".contact_id, " M ".direction, " M ".idempotency_key, " M ".external_message_id, " M \
    ".sender_type, " M ".sender_id, " M ".sender_display_name, " M ".content_type, " M \
    ".content_text, " M ".content_struct::text AS content_struct, " M ".status, " M \
    ".error_category, " M ".error_detail, " M ".attempts," \
    " omnichat.us(" M ".next_attempt_at) AS next_attempt_at_us, " M ".channel_timestamp," \
    " omnichat.us(" M ".channel_timestamp) AS channel_timestamp_us," \
    " omnichat.us(" M ".created_at) AS created_at_us," \
    " omnichat.us(" M ".updated_at) AS updated_at_us, " M ".provider_retry_key," \
    " CASE WHEN " M ".attachment_count > 0 THEN" \
    " (SELECT json_agg(json_build_object(" \
    "'id', a.id, 'ordinal', a.ordinal, 'kind', a.kind, 'url', a.url," \
    " 'mime_type', a.mime_type, 'size_bytes', a.size_bytes, 'name', a.name," \
    " 'metadata', a.metadata, 'created_at_us', omnichat.us(a.created_at)) ORDER BY a.ordinal)" \
    " FROM omnichat.attachments a" \
    " WHERE a.tenant_id = " M ".tenant_id AND a.message_id = " M ".id)::text" \
    " END AS attachments, " M ".lease_owner, omnichat.us(" M ".lease_until) AS lease_until_us"

#define MSG_COLS_CREATE MSG_COLS("(r.msg)")
#define MSG_COLS_COMPLETE MSG_COLS("m")

/*
 * Replay after a connection lost during COMMIT (OC_PG_IDEMPOTENT): create_outbound is keyed by
 * the idempotency key (a replay gets created = false and, if the first run took the lease,
 * lease_acquired = false: exactly what the connector's own retry would get, and the retry
 * worker sends once the lease runs out); complete_outbound on a final message returns it as
 * it is; reconcile writes a fixed value. NOT ob_claim: it has no key, and a replay would lease
 * a second batch while the first stays leased to a caller that never saw it.
 */
const oc_pg_stmt_t pst_stmts_outbound[] = {
    {"ob_create",
     "SELECT r.created, r.lease_acquired, r.thread_key," MSG_COLS_CREATE
     " FROM omnichat.create_outbound_typed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,"
     " $12, $13, $14, $15) r",
     OC_PG_IDEMPOTENT},
    {"ob_complete",
     "SELECT" MSG_COLS_COMPLETE
     " FROM omnichat.complete_outbound($1, $2, $3, $4, $5, $6, $7, $8, $9) m",
     OC_PG_IDEMPOTENT},
    {"ob_get",
     "SELECT * FROM omnichat.v_messages"
     " WHERE tenant_id = $1 AND id = $2 AND direction = 'outbound'",
     OC_PG_IDEMPOTENT},
    {"ob_claim", "SELECT * FROM omnichat.claim_due_outbound_types($1, $2, $3, $4)", 0},
    /* Already sent: keep the first provider id (a repeated echo changes nothing). */
    {"ob_reconcile",
     "UPDATE omnichat.messages SET status = 'sent', external_message_id = $3,"
     " error_category = NULL, error_detail = NULL, next_attempt_at = NULL, lease_owner = NULL,"
     " lease_until = NULL, updated_at = now()"
     " WHERE tenant_id = $1 AND id = $2 AND direction = 'outbound'"
     " AND status NOT IN ('sent', 'delivered', 'read')",
     OC_PG_IDEMPOTENT},
    /* Receipts move statuses forward only: sent -> delivered -> read. */
    {"ob_receipt",
     "UPDATE omnichat.messages m SET status = $4, updated_at = now()"
     " FROM omnichat.conversations c"
     " WHERE c.tenant_id = $1 AND c.channel_account_id = $2 AND c.thread_key = $3"
     " AND m.tenant_id = $1 AND m.conversation_id = c.id AND m.direction = 'outbound'"
     " AND (m.status = 'sent' OR ($4 = 'read' AND m.status = 'delivered'))"
     /* The watermark is whole milliseconds: it covers the whole millisecond it names. */
     " AND (m.channel_timestamp < omnichat.from_ms(NULLIF($5, '0')::bigint + 1)"
     " OR m.external_message_id = ANY ($6::text[]))"
     " RETURNING m.id",
     OC_PG_IDEMPOTENT},
};
const size_t pst_nstmts_outbound = sizeof pst_stmts_outbound / sizeof pst_stmts_outbound[0];

/*
 * A text[] literal of channel type names ("{line}", "{facebook,instagram}", "{}" for none) of
 * `one` (0: none) and the list, without repeats; NULL with ctx->err on an unknown value.
 */
static const char *channel_types_array(oc_rpc_ctx_t *ctx, int one, size_t n, const int *list)
{
    char buf[64] = "{";
    bool seen[8] = {false};
    size_t len = 1;

    for (size_t i = 0; i <= n; i++) {
        int v = i < n ? list[i] : one;
        const char *name;
        if (i == n && v == 0) break;
        name = pst_channel_type_str(v);
        if (name == NULL || v >= 8) {
            if (i == n)
                oc_error_set(&ctx->err, OC_E_INVALID, "channel_type: unknown value");
            else
                oc_error_set(&ctx->err, OC_E_INVALID, "channel_types[%zu]: unknown value %d", i, v);
            return NULL;
        }
        if (seen[v]) continue;
        seen[v] = true;
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", len > 1 ? "," : "", name);
    }
    snprintf(buf + len, sizeof buf - len, "}");
    char *out = oc_arena_strdup(ctx->arena, buf);
    if (out == NULL) oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    return out;
}

/* A digest of the caller's request: short, visible ASCII, compared byte for byte. */
static bool check_fingerprint(oc_rpc_ctx_t *ctx, const char *v)
{
    size_t n = strlen(v);

    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e) n = FINGERPRINT_MAX + 1;
    if (n > FINGERPRINT_MAX) {
        oc_error_set(&ctx->err, OC_E_INVALID,
                     "request_fingerprint: must be at most %d printable ASCII characters",
                     FINGERPRINT_MAX);
        return false;
    }
    return true;
}

static bool check_lease_seconds(oc_rpc_ctx_t *ctx, int32_t v)
{
    if (v < 1 || v > LEASE_SECONDS_MAX) {
        oc_error_set(&ctx->err, OC_E_INVALID, "lease_seconds: must be between 1 and %d",
                     LEASE_SECONDS_MAX);
        return false;
    }
    return true;
}

static oc_err_t create_outbound(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                ProtobufCMessage **out)
{
    const PB(CreateOutboundRequest) *req = (const void *)in;
    PB(CreateOutboundResponse) * resp;
    PB(CreateOutboundResponse) init = PB_INIT(CREATE_OUTBOUND_RESPONSE);
    const char *sender;
    const char *content;
    const char *retry_key = req->provider_retry_key;
    bool leased = req->lease_owner[0] != '\0';
    int32_t lease_seconds = req->lease_seconds != 0 ? req->lease_seconds : LEASE_SECONDS_DEFAULT;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "conversation_id", req->conversation_id, true) ||
        !pst_check_str(ctx, "idempotency_key", req->idempotency_key, PST_MAX_KEY, true) ||
        !pst_check_str(ctx, "request_fingerprint", req->request_fingerprint, FINGERPRINT_MAX,
                       true) ||
        !check_fingerprint(ctx, req->request_fingerprint) ||
        !pst_check_str(ctx, "sender_id", req->sender_id, PST_MAX_KEY, false) ||
        !pst_check_str(ctx, "sender_display_name", req->sender_display_name, PST_MAX_NAME, false))
        return ctx->err.code;
    if (req->sender_type == 0) {
        sender = "agent";
    } else if ((sender = pst_sender_type_str(req->sender_type)) == NULL ||
               req->sender_type == PBE(SENDER_TYPE__SENDER_TYPE_CONTACT)) {
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "sender_type: must be AGENT, BOT or SYSTEM for an outbound message");
    }
    if (req->content_type == 0) {
        content = "text";
    } else if ((content = pst_content_type_str(req->content_type)) == NULL) {
        return oc_error_set(&ctx->err, OC_E_INVALID, "content_type: unknown value %d",
                            req->content_type);
    }
    if (!pst_check_str(ctx, "content_text", req->content_text, PST_MAX_TEXT,
                       strcmp(content, "text") == 0) ||
        !pst_check_json(ctx, "content_struct_json", req->content_struct_json, PST_MAX_JSON, true) ||
        !pst_check_uuid(ctx, "provider_retry_key", req->provider_retry_key, false) ||
        !pst_check_str(ctx, "lease_owner", req->lease_owner, LEASE_OWNER_MAX, false))
        return ctx->err.code;
    if (req->lease_seconds != 0 && !check_lease_seconds(ctx, req->lease_seconds))
        return ctx->err.code;
    /* Without an owner nobody sends it now: the SQL makes it due at once for the worker. */
    if (!leased) lease_seconds = 0;
    if (retry_key[0] == '\0') {
        char *k = oc_arena_alloc(ctx->arena, OC_UUID_STR_LEN + 1);
        if (k == NULL || oc_uuid_v4(k) != OC_OK)
            return oc_error_set(&ctx->err, OC_E_INTERNAL, "provider_retry_key: could not be made");
        retry_key = k;
    }

    const char *types =
        channel_types_array(ctx, 0, req->n_channel_types, (const int *)req->channel_types);
    if (types == NULL) return ctx->err.code;

    const char *p1[] = {req->tenant_id,
                        req->conversation_id,
                        req->idempotency_key,
                        pst_opt(req->request_fingerprint),
                        sender,
                        req->sender_id,
                        req->sender_display_name,
                        content,
                        req->content_text,
                        pst_opt(req->content_struct_json),
                        retry_key,
                        pst_opt(req->lease_owner),
                        pst_i64(ctx, lease_seconds),
                        pst_new_id(ctx),
                        types};
    oc_pg_query_t q[] = {{"ob_create", 15, p1, NULL}};

    if (p1[12] == NULL || p1[13] == NULL)
        return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    if (pst_exec(ctx, req->tenant_id, q, 1) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[0].res) != 1)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "message: not stored");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->created = oc_pg_value(q[0].res, 0, oc_pg_fnumber(q[0].res, "created"))[0] == 't';
    resp->lease_acquired =
        oc_pg_value(q[0].res, 0, oc_pg_fnumber(q[0].res, "lease_acquired"))[0] == 't';
    resp->thread_key = oc_arena_strdup(
        ctx->arena, oc_pg_value(q[0].res, 0, oc_pg_fnumber(q[0].res, "thread_key")));
    resp->message = pst_row_message(ctx, q[0].res, 0);
    if (resp->message == NULL || resp->thread_key == NULL)
        return ctx->err.code != OC_OK ? ctx->err.code
                                      : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    if (!resp->created) {
        const pst_t *pst = ctx->user;
        oc_metric_inc(pst->m_dedupe, (const char *const[]){"CreateOutbound"}, 1);
    }
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t complete_outbound(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                  ProtobufCMessage **out)
{
    const PB(CompleteOutboundRequest) *req = (const void *)in;
    PB(CompleteOutboundResponse) * resp;
    PB(CompleteOutboundResponse) init = PB_INIT(COMPLETE_OUTBOUND_RESPONSE);
    const char *category = pst_error_category_str(req->error_category);
    const char *outcome;
    bool scheduled = false; /* RETRY / UNKNOWN: the worker tries again at next_attempt_at */

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "message_id", req->message_id, true) ||
        !pst_check_str(ctx, "lease_owner", req->lease_owner, LEASE_OWNER_MAX, true))
        return ctx->err.code;
    switch (req->outcome) {
    case PBE(OUTBOUND_OUTCOME__OUTBOUND_OUTCOME_SENT):
        outcome = "sent";
        break;
    case PBE(OUTBOUND_OUTCOME__OUTBOUND_OUTCOME_FAILED):
        outcome = "failed";
        break;
    case PBE(OUTBOUND_OUTCOME__OUTBOUND_OUTCOME_RETRY):
        outcome = "retry";
        scheduled = true;
        break;
    case PBE(OUTBOUND_OUTCOME__OUTBOUND_OUTCOME_UNKNOWN):
        /* Without a next attempt the outcome stays unknown for good (e.g. the provider's
         * retry window closed): never FAILED, which would invite a manual resend. */
        outcome = "unknown";
        scheduled = req->next_attempt_at_ms != 0;
        break;
    default:
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "outcome: must be SENT, FAILED, RETRY or UNKNOWN");
    }
    if (!pst_check_str(ctx, "external_message_id", req->external_message_id, PST_MAX_KEY, false) ||
        !pst_check_str(ctx, "error_detail", req->error_detail, PST_MAX_DETAIL, false))
        return ctx->err.code;
    if (req->error_category != 0 && category == NULL)
        return oc_error_set(&ctx->err, OC_E_INVALID, "error_category: unknown value %d",
                            req->error_category);
    if (strcmp(outcome, "sent") != 0 && category == NULL)
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "error_category: is required with FAILED, RETRY and UNKNOWN");
    if (req->next_attempt_at_ms < 0 || req->next_attempt_at_ms > TS_MAX_MS ||
        (scheduled && req->next_attempt_at_ms == 0))
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "next_attempt_at_ms: %s (milliseconds since the epoch)",
                            scheduled ? "is required with RETRY" : "out of range");

    const char *p1[] = {req->tenant_id,
                        req->message_id,
                        req->lease_owner,
                        outcome,
                        req->external_message_id,
                        category,
                        req->error_detail,
                        scheduled ? pst_i64(ctx, req->next_attempt_at_ms) : NULL,
                        req->no_provider_call ? "false" : "true"};
    oc_pg_query_t q[] = {{"ob_complete", 9, p1, NULL}};

    if (scheduled && p1[7] == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    if (pst_exec(ctx, req->tenant_id, q, 1) != OC_OK) return ctx->err.code;
    /* The function raises "not found"; a row of NULLs would mean it returned none. */
    if (oc_pg_ntuples(q[0].res) != 1 || oc_pg_isnull(q[0].res, 0, oc_pg_fnumber(q[0].res, "id")))
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "message_id: not found");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->message = pst_row_message(ctx, q[0].res, 0);
    if (resp->message == NULL)
        return ctx->err.code != OC_OK ? ctx->err.code
                                      : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *out = &resp->base;
    return OC_OK;
}

/* The retry worker serves every tenant of its channel type: no tenant, privileged function. */
static oc_err_t claim_due_outbound(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                   ProtobufCMessage **out)
{
    const PB(ClaimDueOutboundRequest) *req = (const void *)in;
    PB(ClaimDueOutboundResponse) * resp;
    PB(ClaimDueOutboundResponse) init = PB_INIT(CLAIM_DUE_OUTBOUND_RESPONSE);
    const char *type = channel_types_array(ctx, req->channel_type, req->n_channel_types,
                                           (const int *)req->channel_types);

    if (type == NULL) return ctx->err.code;
    if (strcmp(type, "{}") == 0)
        return oc_error_set(&ctx->err, OC_E_INVALID, "channel_type: is required");
    if (req->limit < 1 || req->limit > CLAIM_MAX)
        return oc_error_set(&ctx->err, OC_E_INVALID, "limit: must be between 1 and %d", CLAIM_MAX);
    if (!pst_check_str(ctx, "lease_owner", req->lease_owner, LEASE_OWNER_MAX, true) ||
        !check_lease_seconds(ctx, req->lease_seconds))
        return ctx->err.code;

    const char *p[] = {type, pst_i64(ctx, req->limit), req->lease_owner,
                       pst_i64(ctx, req->lease_seconds)};
    oc_pg_query_t q[] = {{"ob_claim", 4, p, NULL}};

    if (p[1] == NULL || p[3] == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    if (pst_exec(ctx, NULL, q, 1) != OC_OK) return ctx->err.code;

    int n = oc_pg_ntuples(q[0].res);
    int tk = oc_pg_fnumber(q[0].res, "thread_key");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->claimed = oc_arena_alloc(ctx->arena, (size_t)(n + 1) * sizeof *resp->claimed);
    if (resp->claimed == NULL || (n > 0 && tk < 0))
        return oc_error_set(&ctx->err, n > 0 && tk < 0 ? OC_E_INTERNAL : OC_E_NOMEM,
                            "claimed: could not be read");
    for (int i = 0; i < n; i++) {
        PB(ClaimedOutbound) *c = oc_arena_alloc(ctx->arena, sizeof *c);
        PB(ClaimedOutbound) cinit = PB_INIT(CLAIMED_OUTBOUND);

        if (c == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
        *c = cinit;
        c->message = pst_row_message(ctx, q[0].res, i);
        c->thread_key = oc_arena_strdup(ctx->arena, oc_pg_value(q[0].res, i, tk));
        if (c->message == NULL || c->thread_key == NULL)
            return ctx->err.code != OC_OK ? ctx->err.code
                                          : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
        resp->claimed[i] = c;
    }
    resp->n_claimed = (size_t)n;
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t reconcile_outbound(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                   ProtobufCMessage **out)
{
    const PB(ReconcileOutboundRequest) *req = (const void *)in;
    PB(ReconcileOutboundResponse) * resp;
    PB(ReconcileOutboundResponse) init = PB_INIT(RECONCILE_OUTBOUND_RESPONSE);

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "message_id", req->message_id, true) ||
        !pst_check_str(ctx, "external_message_id", req->external_message_id, PST_MAX_KEY, true))
        return ctx->err.code;

    const char *p[] = {req->tenant_id, req->message_id, req->external_message_id};
    oc_pg_query_t q[] = {{"ob_reconcile", 3, p, NULL}, {"ob_get", 2, p, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[1].res) != 1)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "message_id: not found");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->message = pst_row_message(ctx, q[1].res, 0);
    if (resp->message == NULL)
        return ctx->err.code != OC_OK ? ctx->err.code
                                      : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *out = &resp->base;
    return OC_OK;
}

/* A text[] literal of the ids: each quoted, quotes and backslashes escaped. */
static const char *text_array(oc_rpc_ctx_t *ctx, char **ids, size_t n)
{
    oc_buf_t b;
    char *out;

    oc_buf_init(&b, 1u << 20);
    oc_buf_appends(&b, "{");
    for (size_t i = 0; i < n; i++) {
        oc_buf_appends(&b, i > 0 ? ",\"" : "\"");
        for (const char *p = ids[i]; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\') oc_buf_append(&b, "\\", 1);
            oc_buf_append(&b, p, 1);
        }
        oc_buf_appends(&b, "\"");
    }
    oc_buf_appends(&b, "}");
    out = b.failed == OC_OK ? oc_arena_strdup(ctx->arena, b.data) : NULL;
    oc_buf_dispose(&b);
    if (out == NULL) oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    return out;
}

static oc_err_t apply_receipt(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const PB(ApplyReceiptRequest) *req = (const void *)in;
    PB(ApplyReceiptResponse) * resp;
    PB(ApplyReceiptResponse) init = PB_INIT(APPLY_RECEIPT_RESPONSE);
    char wm[24];
    const char *ids;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, true) ||
        !pst_check_str(ctx, "thread_key", req->thread_key, PST_MAX_KEY, true))
        return ctx->err.code;
    if (req->status != PBE(MESSAGE_STATUS__MESSAGE_STATUS_DELIVERED) &&
        req->status != PBE(MESSAGE_STATUS__MESSAGE_STATUS_READ))
        return oc_error_set(&ctx->err, OC_E_INVALID, "status: must be DELIVERED or READ");
    if (req->watermark_ms < 0 || req->watermark_ms > TS_MAX_MS)
        return oc_error_set(&ctx->err, OC_E_INVALID, "watermark_ms: out of range");
    if (req->n_external_message_ids > 100)
        return oc_error_set(&ctx->err, OC_E_INVALID, "external_message_ids: at most 100");
    for (size_t i = 0; i < req->n_external_message_ids; i++)
        if (!pst_check_str(ctx, "external_message_ids[]", req->external_message_ids[i], PST_MAX_KEY,
                           true))
            return ctx->err.code;
    if ((ids = text_array(ctx, req->external_message_ids, req->n_external_message_ids)) == NULL)
        return ctx->err.code;
    snprintf(wm, sizeof wm, "%" PRId64, req->watermark_ms);
    const char *p[] = {req->tenant_id,
                       req->channel_account_id,
                       req->thread_key,
                       req->status == PBE(MESSAGE_STATUS__MESSAGE_STATUS_READ) ? "read"
                                                                               : "delivered",
                       wm,
                       ids};
    oc_pg_query_t q[] = {{"ob_receipt", 6, p, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 1) != OC_OK) return ctx->err.code;
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->updated = oc_pg_ntuples(q[0].res);
    *out = &resp->base;
    return OC_OK;
}

const oc_rpc_method_t pst_methods_outbound[] = {
    PST_METHOD("CreateOutbound", create_outbound, create_outbound_request, create_outbound_response,
               PST_CONNECTOR),
    PST_METHOD("CompleteOutbound", complete_outbound, complete_outbound_request,
               complete_outbound_response, PST_CONNECTOR),
    PST_METHOD("ClaimDueOutbound", claim_due_outbound, claim_due_outbound_request,
               claim_due_outbound_response, PST_CONNECTOR),
    PST_METHOD("ReconcileOutbound", reconcile_outbound, reconcile_outbound_request,
               reconcile_outbound_response, PST_CONNECTOR),
    PST_METHOD("ApplyReceipt", apply_receipt, apply_receipt_request, apply_receipt_response,
               PST_CONNECTOR),
};
const size_t pst_nmethods_outbound = sizeof pst_methods_outbound / sizeof pst_methods_outbound[0];
