/* Persistence RPCs for messages: idempotent inserts, inbound batches, attachments, the timeline. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pst.h"

#define TIMELINE(cmp, order) \
    "SELECT * FROM omnichat.v_messages WHERE tenant_id = $1 AND conversation_id = $2" \
    " AND (channel_timestamp, id) " cmp " (omnichat.from_us($3), $4::uuid)" \
    " ORDER BY channel_timestamp " order ", id " order " LIMIT $5"

/*
 * Replay after a connection lost during COMMIT (OC_PG_IDEMPOTENT): messages are inserted keyed
 * by their idempotency key and a replay finds the row (created = false, as to a client retry);
 * attachments are keyed by ordinal (ON CONFLICT DO NOTHING); the rest are reads.
 */
const oc_pg_stmt_t pst_stmts_messages[] = {
    {"insert_message",
     "SELECT * FROM omnichat.insert_message($1, $2, $3, $4, $5, $6, $7, $8, "
     "$9, $10, $11, $12, $13, $14, $15, $16, $17)",
     OC_PG_IDEMPOTENT},
    {"get_result_message",
     "SELECT * FROM omnichat.v_messages WHERE tenant_id = $1"
     " AND id = current_setting('omnichat.result_id')::uuid",
     OC_PG_IDEMPOTENT},
    {"persist_inbound_one",
     "SELECT * FROM omnichat.persist_inbound_one($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
     "$12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
     OC_PG_IDEMPOTENT},
    {"add_attachments", "SELECT omnichat.add_attachments($1, $2, $3)", OC_PG_IDEMPOTENT},
    {"get_message_attachments",
     "SELECT id, attachments FROM omnichat.v_messages WHERE tenant_id = $1 AND id = $2",
     OC_PG_IDEMPOTENT},
    {"conversation_exists", "SELECT 1 FROM omnichat.conversations WHERE tenant_id = $1 AND id = $2",
     OC_PG_IDEMPOTENT},
    {"timeline_before", TIMELINE("<", "DESC"), OC_PG_IDEMPOTENT},
    {"timeline_after", TIMELINE(">", "ASC"), OC_PG_IDEMPOTENT},
};
const size_t pst_nstmts_messages = sizeof pst_stmts_messages / sizeof pst_stmts_messages[0];

/* Year 9999 and year 1: sentinels before/after every real position. */
#define TS_MAX_US INT64_C(253402300799000000)
#define TS_MIN_US INT64_C(-62135596800000000)
#define TS_MAX_MS INT64_C(253402300799000)

/* Checks what InsertMessage and PersistInbound items share; `pfx` prefixes field names. */
static bool check_content(oc_rpc_ctx_t *ctx, const char *pfx, int content_type, const char *text,
                          const char *structure, int64_t ts_ms)
{
    char f[96];

    if (pst_content_type_str(content_type) == NULL)
        return oc_error_set(&ctx->err, OC_E_INVALID, "%scontent_type: is required (got %d)", pfx,
                            content_type),
               false;
    snprintf(f, sizeof f, "%scontent_text", pfx);
    if (!pst_check_str(ctx, f, text, PST_MAX_TEXT, false)) return false;
    snprintf(f, sizeof f, "%scontent_struct_json", pfx);
    if (!pst_check_json(ctx, f, structure, PST_MAX_JSON, true)) return false;
    if (ts_ms <= 0 || ts_ms > TS_MAX_MS)
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "%schannel_timestamp_ms: is required (milliseconds since the epoch)",
                            pfx),
               false;
    return true;
}

static oc_err_t insert_message(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                               ProtobufCMessage **out)
{
    const PB(InsertMessageRequest) *req = (const void *)in;
    PB(InsertMessageResponse) * resp;
    PB(InsertMessageResponse) init = PB_INIT(INSERT_MESSAGE_RESPONSE);
    const char *direction = pst_direction_str(req->direction);
    const char *sender = pst_sender_type_str(req->sender_type);
    const char *status;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "conversation_id", req->conversation_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, false) ||
        !pst_check_uuid(ctx, "contact_id", req->contact_id, false))
        return ctx->err.code;
    if (direction == NULL)
        return oc_error_set(&ctx->err, OC_E_INVALID, "direction: must be INBOUND or OUTBOUND");
    if (!pst_check_str(ctx, "idempotency_key", req->idempotency_key, PST_MAX_KEY, true) ||
        !pst_check_str(ctx, "external_message_id", req->external_message_id, PST_MAX_KEY, false) ||
        !pst_check_str(ctx, "sender_id", req->sender_id, PST_MAX_KEY, false) ||
        !pst_check_str(ctx, "sender_display_name", req->sender_display_name, PST_MAX_NAME, false))
        return ctx->err.code;
    if (sender == NULL) return oc_error_set(&ctx->err, OC_E_INVALID, "sender_type: is required");
    if (!check_content(ctx, "", req->content_type, req->content_text, req->content_struct_json,
                       req->channel_timestamp_ms) ||
        !pst_check_attachments(ctx, "attachments", req->n_attachments, req->attachments))
        return ctx->err.code;
    if (req->status == 0) {
        status = req->direction == PBE(DIRECTION__DIRECTION_INBOUND) ? "received" : "sent";
    } else {
        status = pst_status_str(req->status);
        bool inbound = req->direction == PBE(DIRECTION__DIRECTION_INBOUND);
        /* Pending/unknown outbound messages are the retry worker's: only CreateOutbound
         * makes them, with the provider retry key that keeps a retry from sending twice. */
        if (req->status == PBE(MESSAGE_STATUS__MESSAGE_STATUS_PENDING) ||
            req->status == PBE(MESSAGE_STATUS__MESSAGE_STATUS_UNKNOWN))
            return oc_error_set(&ctx->err, OC_E_INVALID,
                                "status: PENDING and UNKNOWN messages are made by CreateOutbound");
        /* Inbound messages are only ever received; outbound ones never are. */
        if (status == NULL ||
            inbound != (req->status == PBE(MESSAGE_STATUS__MESSAGE_STATUS_RECEIVED)))
            return oc_error_set(&ctx->err, OC_E_INVALID, "status: not valid for a%s message",
                                inbound ? "n inbound" : "n outbound");
    }

    const char *p[] = {req->tenant_id,
                       req->conversation_id,
                       pst_opt(req->channel_account_id),
                       direction,
                       req->idempotency_key,
                       req->external_message_id,
                       sender,
                       req->sender_id,
                       req->sender_display_name,
                       pst_content_type_str(req->content_type),
                       req->content_text,
                       pst_opt(req->content_struct_json),
                       status,
                       pst_i64(ctx, req->channel_timestamp_ms),
                       pst_attachments_json(ctx, req->n_attachments, req->attachments),
                       pst_opt(req->contact_id),
                       pst_new_id(ctx)};
    const char *p2[] = {req->tenant_id};
    oc_pg_query_t q[] = {{"insert_message", 17, p, NULL}, {"get_result_message", 1, p2, NULL}};

    if (req->n_attachments > 0 && p[14] == NULL)
        return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[1].res) != 1)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "message: not stored");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->created = oc_pg_value(q[0].res, 0, oc_pg_fnumber(q[0].res, "created"))[0] == 't';
    resp->message = pst_row_message(ctx, q[1].res, 0);
    if (!resp->created) {
        const pst_t *pst = ctx->user;
        oc_metric_inc(pst->m_dedupe, (const char *const[]){"InsertMessage"}, 1);
    }
    *out = &resp->base;
    return resp->message != NULL ? OC_OK : ctx->err.code ? ctx->err.code : OC_E_NOMEM;
}

/* qsort_r comparator over item indexes: (channel account, thread key, idempotency key), the
 * parameters 1, 6 and 7 of persist_inbound_one. */
static int cmp_lock_order(const void *a, const void *b, void *arg)
{
    const oc_pg_query_t *q = arg;
    const char *const *x = q[*(const size_t *)a].values;
    const char *const *y = q[*(const size_t *)b].values;
    static const int cols[] = {1, 6, 7};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        int c = strcmp(x[cols[i]], y[cols[i]]);
        if (c != 0) return c;
    }
    return 0;
}

static oc_err_t persist_inbound(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                ProtobufCMessage **out)
{
    const PB(PersistInboundRequest) *req = (const void *)in;
    const pst_t *pst = ctx->user;
    PB(PersistInboundResponse) * resp;
    PB(PersistInboundResponse) init = PB_INIT(PERSIST_INBOUND_RESPONSE);
    oc_pg_query_t *q;
    size_t n = req->n_messages;
    char f[96];

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true)) return ctx->err.code;
    if (n == 0 || n > PST_MAX_BATCH)
        return oc_error_set(&ctx->err, OC_E_INVALID, "messages: must hold 1 to %d items",
                            PST_MAX_BATCH);
    q = oc_arena_alloc(ctx->arena, n * sizeof *q);
    if (q == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");

    /* Validate every item before anything is sent: a batch is all or nothing. */
    for (size_t i = 0; i < n; i++) {
        const PB(InboundMessage) *m = req->messages[i];
        char pfx[32];
        const char *direction;
        const char *sender;
        const char *thread = m->thread_key;
        const char *key =
            m->idempotency_key[0] != '\0' ? m->idempotency_key : m->external_message_id;
        const char **p = oc_arena_alloc(ctx->arena, 21 * sizeof *p);

        if (p == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
        snprintf(pfx, sizeof pfx, "messages[%zu].", i);
#define F(name) (snprintf(f, sizeof f, "%s%s", pfx, name), f)
        if (!pst_check_uuid(ctx, F("channel_account_id"), m->channel_account_id, true) ||
            !pst_check_str(ctx, F("external_user_id"), m->external_user_id, PST_MAX_KEY, true) ||
            !pst_check_str(ctx, F("contact_display_name"), m->contact_display_name, PST_MAX_NAME,
                           false) ||
            !pst_check_str(ctx, F("contact_avatar_url"), m->contact_avatar_url, PST_MAX_URL,
                           false) ||
            !pst_check_json(ctx, F("contact_profile_json"), m->contact_profile_json, PST_MAX_JSON,
                            true) ||
            !pst_check_str(ctx, F("thread_key"), m->thread_key, PST_MAX_KEY, false) ||
            !pst_check_str(ctx, F("external_message_id"), m->external_message_id, PST_MAX_KEY,
                           true) ||
            !pst_check_str(ctx, F("idempotency_key"), m->idempotency_key, PST_MAX_KEY, false) ||
            !pst_check_str(ctx, F("sender_display_name"), m->sender_display_name, PST_MAX_NAME,
                           false) ||
            !check_content(ctx, pfx, m->content_type, m->content_text, m->content_struct_json,
                           m->channel_timestamp_ms) ||
            !pst_check_attachments(ctx, F("attachments"), m->n_attachments, m->attachments))
            return ctx->err.code;
        if (m->contact_profile_json[0] != '\0' && m->contact_profile_json[0] != '{')
            return oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be a JSON object",
                                F("contact_profile_json"));
        if (m->direction == 0) {
            direction = "inbound";
        } else if ((direction = pst_direction_str(m->direction)) == NULL) {
            return oc_error_set(&ctx->err, OC_E_INVALID, "%s: unknown value %d", F("direction"),
                                m->direction);
        }
        if (m->sender_type == 0) {
            sender = strcmp(direction, "inbound") == 0 ? "contact" : "agent";
        } else if ((sender = pst_sender_type_str(m->sender_type)) == NULL) {
            return oc_error_set(&ctx->err, OC_E_INVALID, "%s: unknown value %d", F("sender_type"),
                                m->sender_type);
        }
#undef F
        if (thread[0] == '\0')
            thread = pst_fallback_thread(ctx, m->external_user_id, m->channel_timestamp_ms);
        p[0] = req->tenant_id;
        p[1] = m->channel_account_id;
        p[2] = m->external_user_id;
        p[3] = m->contact_display_name;
        p[4] = m->contact_avatar_url;
        p[5] = pst_opt(m->contact_profile_json);
        p[6] = thread;
        p[7] = key;
        p[8] = m->external_message_id;
        p[9] = direction;
        p[10] = sender;
        p[11] = m->sender_display_name[0] != '\0' || strcmp(direction, "inbound") != 0
                    ? m->sender_display_name
                    : m->contact_display_name;
        p[12] = pst_content_type_str(m->content_type);
        p[13] = m->content_text;
        p[14] = pst_opt(m->content_struct_json);
        p[15] = pst_i64(ctx, m->channel_timestamp_ms);
        p[16] = pst_attachments_json(ctx, m->n_attachments, m->attachments);
        p[17] = pst_new_id(ctx);
        p[18] = pst_new_id(ctx);
        p[19] = pst_new_id(ctx);
        p[20] = pst_i64(ctx, (int64_t)i);
        for (int k = 15; k < 21; k++)
            if (p[k] == NULL && !(k == 16 && m->n_attachments == 0))
                return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
        q[i] = (oc_pg_query_t){"persist_inbound_one", 21, p, NULL};
    }

    /* Each item locks its conversation until commit. Taking them in one global order (account,
     * thread, key) means two batches naming the same users never wait on each other in a
     * circle: no deadlock, no one-second deadlock_timeout, no retry. Results go back in request
     * order. */
    size_t *order = oc_arena_alloc(ctx->arena, n * sizeof *order);
    oc_pg_query_t *sorted = oc_arena_alloc(ctx->arena, n * sizeof *sorted);
    if (order == NULL || sorted == NULL)
        return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof *order, cmp_lock_order, q);
    for (size_t k = 0; k < n; k++)
        sorted[k] = q[order[k]];
    if (pst_exec(ctx, req->tenant_id, sorted, n) != OC_OK) return ctx->err.code;
    for (size_t k = 0; k < n; k++)
        q[order[k]].res = sorted[k].res;

    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->results = oc_arena_alloc(ctx->arena, n * sizeof *resp->results);
    if (resp->results == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    size_t dupes = 0;
    for (size_t i = 0; i < n; i++) {
        const oc_pg_result_t *r = q[i].res;
        PB(InboundResult) *x = oc_arena_alloc(ctx->arena, sizeof *x);
        PB(InboundResult) xinit = PB_INIT(INBOUND_RESULT);

        if (x == NULL || oc_pg_ntuples(r) != 1)
            return oc_error_set(&ctx->err, OC_E_INTERNAL, "messages: result missing");
        *x = xinit;
        x->message_id = oc_arena_strdup(ctx->arena, oc_pg_value(r, 0, 0));
        x->created = oc_pg_value(r, 0, 1)[0] == 't';
        x->contact_id = oc_arena_strdup(ctx->arena, oc_pg_value(r, 0, 2));
        x->conversation_id = oc_arena_strdup(ctx->arena, oc_pg_value(r, 0, 3));
        dupes += x->created ? 0 : 1;
        resp->results[i] = x;
    }
    resp->n_results = n;
    if (dupes > 0)
        oc_metric_inc(pst->m_dedupe, (const char *const[]){"PersistInbound"}, (double)dupes);
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t add_attachments(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                ProtobufCMessage **out)
{
    const PB(AddAttachmentsRequest) *req = (const void *)in;
    PB(AddAttachmentsResponse) * resp;
    PB(AddAttachmentsResponse) init = PB_INIT(ADD_ATTACHMENTS_RESPONSE);
    char *json;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "message_id", req->message_id, true))
        return ctx->err.code;
    if (req->n_attachments == 0)
        return oc_error_set(&ctx->err, OC_E_INVALID, "attachments: at least one is required");
    if (!pst_check_attachments(ctx, "attachments", req->n_attachments, req->attachments))
        return ctx->err.code;
    json = pst_attachments_json(ctx, req->n_attachments, req->attachments);
    if (json == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");

    const char *p[] = {req->tenant_id, req->message_id, json};
    oc_pg_query_t q[] = {{"add_attachments", 3, p, NULL}, {"get_message_attachments", 2, p, NULL}};
    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[1].res) != 1)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "message_id: not found");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    if (!pst_parse_attachments(ctx, oc_pg_value(q[1].res, 0, 1), req->message_id,
                               &resp->n_attachments, &resp->attachments))
        return ctx->err.code;
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t list_messages(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const PB(ListMessagesRequest) *req = (const void *)in;
    PB(ListMessagesResponse) * resp;
    PB(ListMessagesResponse) init = PB_INIT(LIST_MESSAGES_RESPONSE);
    bool has_before = req->before[0] != '\0';
    bool has_after = req->after[0] != '\0';
    bool backwards = !has_after && !req->from_oldest; /* newest page or scrolling up */
    int64_t ts_us = backwards ? TS_MAX_US : TS_MIN_US;
    char id[37];
    const char *scope;
    int limit;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "conversation_id", req->conversation_id, true) ||
        !pst_page_size(ctx, req->page_size, &limit))
        return ctx->err.code;
    if ((int)has_before + (int)has_after + (int)req->from_oldest > 1)
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "before: at most one of before, after and from_oldest may be set");
    strcpy(id, backwards ? "ffffffff-ffff-ffff-ffff-ffffffffffff"
                         : "00000000-0000-0000-0000-000000000000");
    scope = oc_arena_sprintf(ctx->arena, "messages|%s|%s", req->tenant_id, req->conversation_id);
    if (has_before && !pst_cursor_decode(ctx, "before", req->before, 'm', scope, &ts_us, id))
        return ctx->err.code;
    if (has_after && !pst_cursor_decode(ctx, "after", req->after, 'm', scope, &ts_us, id))
        return ctx->err.code;

    const char *p[] = {req->tenant_id, req->conversation_id, pst_i64(ctx, ts_us), id,
                       pst_i64(ctx, limit + 1)};
    oc_pg_query_t q[] = {{"conversation_exists", 2, p, NULL},
                         {backwards ? "timeline_before" : "timeline_after", 5, p, NULL}};
    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[0].res) != 1)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "conversation_id: not found");

    int rows = oc_pg_ntuples(q[1].res);
    int n = rows > limit ? limit : rows;
    bool more = rows > limit;
    /* Rows come nearest-to-the-cursor first: cutting the page short keeps the nearest and
     * leaves a response every client accepts (gRPC's default limit is 4 MiB). */
    size_t used = 0;
    int nf = oc_pg_nfields(q[1].res);
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < nf; c++)
            used += (size_t)oc_pg_length(q[1].res, i, c);
        used += 256; /* field tags, ids as text */
        if (used > PST_MAX_PAGE_BYTES && i > 0) {
            n = i;
            more = true;
            break;
        }
    }
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->messages = oc_arena_alloc(ctx->arena, (size_t)(n + 1) * sizeof(void *));
    if (resp->messages == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    /* Backwards pages come newest first from the index; the API is always chronological. */
    for (int i = 0; i < n; i++) {
        int row = backwards ? n - 1 - i : i;
        resp->messages[i] = pst_row_message(ctx, q[1].res, row);
        if (resp->messages[i] == NULL)
            return ctx->err.code != OC_OK ? ctx->err.code
                                          : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    }
    resp->n_messages = (size_t)n;
    /* Messages are never deleted, so the cursor's own message proves the other side. */
    resp->has_older = backwards ? more : has_after;
    resp->has_newer = backwards ? has_before : more;
    if (n > 0) {
        int c = oc_pg_fnumber(q[1].res, "channel_timestamp_us");
        int first = backwards ? n - 1 : 0;
        int last = backwards ? 0 : n - 1;
        resp->before_cursor =
            pst_cursor_encode(ctx, 'm', strtoll(oc_pg_value(q[1].res, first, c), NULL, 10),
                              resp->messages[0]->message_id, scope);
        resp->after_cursor =
            pst_cursor_encode(ctx, 'm', strtoll(oc_pg_value(q[1].res, last, c), NULL, 10),
                              resp->messages[n - 1]->message_id, scope);
        if (resp->before_cursor == NULL || resp->after_cursor == NULL)
            return oc_error_set(&ctx->err, OC_E_INTERNAL, "cursor: could not be made");
    } else {
        /* An empty page keeps the caller where it was, so polling can go on. */
        if (has_after) resp->after_cursor = req->after;
        if (has_before) resp->before_cursor = req->before;
    }
    *out = &resp->base;
    return OC_OK;
}

const oc_rpc_method_t pst_methods_messages[] = {
    PST_METHOD("InsertMessage", insert_message, insert_message_request, insert_message_response,
               PST_CONNECTOR),
    PST_METHOD("PersistInbound", persist_inbound, persist_inbound_request, persist_inbound_response,
               PST_CONNECTOR),
    PST_METHOD("AddAttachments", add_attachments, add_attachments_request, add_attachments_response,
               PST_CONNECTOR),
    PST_METHOD("ListMessages", list_messages, list_messages_request, list_messages_response,
               PST_INBOX_READ),
};
const size_t pst_nmethods_messages = sizeof pst_methods_messages / sizeof pst_methods_messages[0];
