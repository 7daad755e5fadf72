/* Persistence RPCs for contacts and conversations: upserts, Get and the inbox list. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pst.h"

#define CONTACT_COLS \
    "id, tenant_id, channel_account_id, external_user_id, display_name, avatar_url, " \
    "profile::text AS profile, omnichat.us(created_at) AS created_at_us, " \
    "omnichat.us(updated_at) AS updated_at_us"

/* Keyset over (last_activity_at, id) descending; the first page starts past every row. */
#define LIST_CONV(filter) \
    "SELECT * FROM omnichat.v_conversations WHERE tenant_id = $1 " filter \
    " AND (last_activity_at, id) < (omnichat.from_us($2), $3::uuid)" \
    " ORDER BY last_activity_at DESC, id DESC LIMIT $4"

/*
 * Replay after a connection lost during COMMIT (OC_PG_IDEMPOTENT): the upserts are keyed by
 * (account, external user) and (account, thread key) and answer the same row again
 * (created = false, as to a client retry); the rest are reads.
 */
const oc_pg_stmt_t pst_stmts_conversations[] = {
    {"upsert_contact", "SELECT * FROM omnichat.upsert_contact($1, $2, $3, $4, $5, $6, $7)",
     OC_PG_IDEMPOTENT},
    {"get_contact_by_key",
     "SELECT " CONTACT_COLS " FROM omnichat.contacts"
     " WHERE tenant_id = $1 AND channel_account_id = $2 AND external_user_id = $3",
     OC_PG_IDEMPOTENT},
    {"upsert_conversation",
     "SELECT * FROM omnichat.upsert_conversation($1, $2, $3, $4, omnichat.from_ms($5), $6)",
     OC_PG_IDEMPOTENT},
    {"get_conversation_by_key",
     "SELECT * FROM omnichat.v_conversations"
     " WHERE tenant_id = $1 AND channel_account_id = $2 AND thread_key = $3",
     OC_PG_IDEMPOTENT},
    {"get_conversation", "SELECT * FROM omnichat.v_conversations WHERE tenant_id = $1 AND id = $2",
     OC_PG_IDEMPOTENT},
    {"list_conversations", LIST_CONV(""), OC_PG_IDEMPOTENT},
    {"list_conversations_type", LIST_CONV("AND channel_type = $5"), OC_PG_IDEMPOTENT},
    {"list_conversations_account", LIST_CONV("AND channel_account_id = $5"), OC_PG_IDEMPOTENT},
    {"list_conversations_type_account",
     LIST_CONV("AND channel_type = $5 AND channel_account_id = $6"), OC_PG_IDEMPOTENT},
};
const size_t pst_nstmts_conversations =
    sizeof pst_stmts_conversations / sizeof pst_stmts_conversations[0];

/* Past any real timestamp (year 9999) and any UUID: where the first page starts. */
#define FIRST_PAGE_TS_US "253402300799000000"
#define FIRST_PAGE_ID "ffffffff-ffff-ffff-ffff-ffffffffffff"

static oc_err_t upsert_contact(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                               ProtobufCMessage **out)
{
    const PB(UpsertContactRequest) *req = (const void *)in;
    PB(UpsertContactResponse) * resp;
    PB(UpsertContactResponse) init = PB_INIT(UPSERT_CONTACT_RESPONSE);

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, true) ||
        !pst_check_str(ctx, "external_user_id", req->external_user_id, PST_MAX_KEY, true) ||
        !pst_check_str(ctx, "display_name", req->display_name, PST_MAX_NAME, false) ||
        !pst_check_str(ctx, "avatar_url", req->avatar_url, PST_MAX_URL, false) ||
        !pst_check_json(ctx, "profile_json", req->profile_json, PST_MAX_JSON, false))
        return ctx->err.code;
    if (req->profile_json[0] != '\0' && req->profile_json[0] != '{')
        return oc_error_set(&ctx->err, OC_E_INVALID, "profile_json: must be a JSON object");

    const char *p1[] = {req->tenant_id,    req->channel_account_id, req->external_user_id,
                        req->display_name, req->avatar_url,         pst_opt(req->profile_json),
                        pst_new_id(ctx)};
    const char *p2[] = {req->tenant_id, req->channel_account_id, req->external_user_id};
    oc_pg_query_t q[] = {{"upsert_contact", 7, p1, NULL}, {"get_contact_by_key", 3, p2, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[1].res) != 1)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "contact: not stored");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->contact = pst_row_contact(ctx, q[1].res, 0);
    resp->created = oc_pg_value(q[0].res, 0, oc_pg_fnumber(q[0].res, "created"))[0] == 't';
    *out = &resp->base;
    return resp->contact != NULL ? OC_OK : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
}

static oc_err_t upsert_conversation(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                    ProtobufCMessage **out)
{
    const PB(UpsertConversationRequest) *req = (const void *)in;
    PB(UpsertConversationResponse) * resp;
    PB(UpsertConversationResponse) init = PB_INIT(UPSERT_CONVERSATION_RESPONSE);
    const char *thread = req->thread_key;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, true) ||
        !pst_check_str(ctx, "thread_key", req->thread_key, PST_MAX_KEY, false) ||
        !pst_check_str(ctx, "external_user_id", req->external_user_id, PST_MAX_KEY, false) ||
        !pst_check_uuid(ctx, "contact_id", req->contact_id, false))
        return ctx->err.code;
    /* Year 9999 is as far as PostgreSQL's timestamps (and the cursors) go. */
    if (req->channel_timestamp_ms < 0 || req->channel_timestamp_ms > INT64_C(253402300799000))
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "channel_timestamp_ms: must be between 0 and 253402300799000");
    if (thread[0] == '\0') {
        if (req->external_user_id[0] == '\0')
            return oc_error_set(&ctx->err, OC_E_INVALID,
                                "external_user_id: is required when thread_key is empty");
        if (req->channel_timestamp_ms <= 0)
            return oc_error_set(&ctx->err, OC_E_INVALID,
                                "channel_timestamp_ms: is required when thread_key is empty");
        thread = pst_fallback_thread(ctx, req->external_user_id, req->channel_timestamp_ms);
    }

    const char *ts = req->channel_timestamp_ms > 0 ? pst_i64(ctx, req->channel_timestamp_ms) : NULL;
    const char *p1[] = {
        req->tenant_id, req->channel_account_id, thread, pst_opt(req->contact_id), ts,
        pst_new_id(ctx)};
    const char *p2[] = {req->tenant_id, req->channel_account_id, thread};
    oc_pg_query_t q[] = {{"upsert_conversation", 6, p1, NULL},
                         {"get_conversation_by_key", 3, p2, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[1].res) != 1)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "conversation: not stored");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->conversation = pst_row_conversation(ctx, q[1].res, 0);
    resp->created = oc_pg_value(q[0].res, 0, oc_pg_fnumber(q[0].res, "created"))[0] == 't';
    *out = &resp->base;
    return resp->conversation != NULL ? OC_OK
                                      : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
}

static oc_err_t get_conversation(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                 ProtobufCMessage **out)
{
    const PB(GetConversationRequest) *req = (const void *)in;
    PB(GetConversationResponse) * resp;
    PB(GetConversationResponse) init = PB_INIT(GET_CONVERSATION_RESPONSE);

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "conversation_id", req->conversation_id, true))
        return ctx->err.code;

    const char *p[] = {req->tenant_id, req->conversation_id};
    oc_pg_query_t q[] = {{"get_conversation", 2, p, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 1) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[0].res) != 1)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "conversation_id: not found");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->conversation = pst_row_conversation(ctx, q[0].res, 0);
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t list_conversations(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                   ProtobufCMessage **out)
{
    const PB(ListConversationsRequest) *req = (const void *)in;
    PB(ListConversationsResponse) * resp;
    PB(ListConversationsResponse) init = PB_INIT(LIST_CONVERSATIONS_RESPONSE);
    const char *type = NULL;
    const char *stmt;
    const char *scope;
    char cur_id[37];
    const char *ts = FIRST_PAGE_TS_US;
    const char *id = FIRST_PAGE_ID;
    int limit;
    int64_t ts_us;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, false) ||
        !pst_page_size(ctx, req->page_size, &limit))
        return ctx->err.code;
    if (req->channel_type != 0) {
        type = pst_channel_type_str(req->channel_type);
        if (type == NULL)
            return oc_error_set(&ctx->err, OC_E_INVALID, "channel_type: unknown value %d",
                                req->channel_type);
    }
    /* The cursor is only valid with the filters it was made for. */
    scope = oc_arena_sprintf(ctx->arena, "conversations|%s|%s|%s", req->tenant_id,
                             type != NULL ? type : "", req->channel_account_id);
    if (req->page_token[0] != '\0') {
        if (!pst_cursor_decode(ctx, "page_token", req->page_token, 'c', scope, &ts_us, cur_id))
            return ctx->err.code;
        ts = pst_i64(ctx, ts_us);
        id = cur_id;
    }

    const char *lim = pst_i64(ctx, limit + 1); /* one extra row says whether a page follows */
    const char *p[6] = {req->tenant_id, ts, id, lim, NULL, NULL};
    int np = 4;
    if (type != NULL && req->channel_account_id[0] != '\0') {
        stmt = "list_conversations_type_account";
        p[np++] = type;
        p[np++] = req->channel_account_id;
    } else if (type != NULL) {
        stmt = "list_conversations_type";
        p[np++] = type;
    } else if (req->channel_account_id[0] != '\0') {
        stmt = "list_conversations_account";
        p[np++] = req->channel_account_id;
    } else {
        stmt = "list_conversations";
    }
    oc_pg_query_t q[] = {{stmt, np, p, NULL}};
    if (pst_exec(ctx, req->tenant_id, q, 1) != OC_OK) return ctx->err.code;

    int rows = oc_pg_ntuples(q[0].res);
    int n = rows > limit ? limit : rows;
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->conversations = oc_arena_alloc(ctx->arena, (size_t)(n + 1) * sizeof(void *));
    if (resp->conversations == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        resp->conversations[i] = pst_row_conversation(ctx, q[0].res, i);
        if (resp->conversations[i] == NULL)
            return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    }
    resp->n_conversations = (size_t)n;
    if (rows > limit) {
        int c = oc_pg_fnumber(q[0].res, "last_activity_at_us");
        int64_t last_ts = strtoll(oc_pg_value(q[0].res, n - 1, c), NULL, 10);
        resp->next_page_token = pst_cursor_encode(
            ctx, 'c', last_ts, resp->conversations[n - 1]->conversation_id, scope);
        if (resp->next_page_token == NULL)
            return oc_error_set(&ctx->err, OC_E_INTERNAL, "page_token: could not be made");
    }
    *out = &resp->base;
    return OC_OK;
}

const oc_rpc_method_t pst_methods_conversations[] = {
    PST_METHOD("UpsertContact", upsert_contact, upsert_contact_request, upsert_contact_response,
               PST_CONNECTOR),
    PST_METHOD("UpsertConversation", upsert_conversation, upsert_conversation_request,
               upsert_conversation_response, PST_CONNECTOR),
    PST_METHOD("GetConversation", get_conversation, get_conversation_request,
               get_conversation_response, PST_READ),
    PST_METHOD("ListConversations", list_conversations, list_conversations_request,
               list_conversations_response, PST_INBOX_READ),
};
const size_t pst_nmethods_conversations =
    sizeof pst_methods_conversations / sizeof pst_methods_conversations[0];
