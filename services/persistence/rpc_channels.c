/* Persistence RPCs for channel accounts: register, sealed credentials, get, list, resolve, status.
 */
#include <stdio.h>
#include <string.h>

#include "omnichat/buf.h"
#include "omnichat/util.h"
#include "pst.h"

#define CRED_MAX PST_MAX_CREDENTIALS
#define CRED_NAME_MAX 64
#define CRED_CIPHERTEXT_MAX 16384
/* Every credential at its largest, base64-encoded, plus field names and punctuation. */
#define CRED_JSON_MAX ((size_t)CRED_MAX * (((CRED_CIPHERTEXT_MAX + 2) / 3) * 4 + 256) + 16)

/* A successful send on an account that is already active rewrites last_success_at at most
 * once a minute, so the send hot path does not take a row lock on every message. */
#define SUCCESS_REFRESH "60 seconds"

/*
 * Replay after a connection lost during COMMIT (OC_PG_IDEMPOTENT): reads; registration is keyed
 * by (channel_type, external_account_id) and answers the same account again (created = false,
 * as to a client retry); credentials and status updates write fixed values.
 */
const oc_pg_stmt_t pst_stmts_channels[] = {
    {"ch_register", "SELECT * FROM omnichat.register_channel_account($1, $2, $3, $4, $5)",
     OC_PG_IDEMPOTENT},
    {"ch_get_by_key",
     "SELECT * FROM omnichat.v_channel_accounts"
     " WHERE tenant_id = $1 AND channel_type = $2 AND external_account_id = $3"
     " AND status <> 'disabled'",
     OC_PG_IDEMPOTENT},
    {"ch_get", "SELECT * FROM omnichat.v_channel_accounts WHERE tenant_id = $1 AND id = $2",
     OC_PG_IDEMPOTENT},
    {"ch_update_credentials", "SELECT omnichat.update_channel_credentials($1, $2, $3)",
     OC_PG_IDEMPOTENT},
    {"ch_list",
     "SELECT * FROM omnichat.v_channel_accounts WHERE tenant_id = $1"
     " ORDER BY created_at_us, id",
     OC_PG_IDEMPOTENT},
    {"ch_list_type",
     "SELECT * FROM omnichat.v_channel_accounts"
     " WHERE tenant_id = $1 AND channel_type = $2 ORDER BY created_at_us, id",
     OC_PG_IDEMPOTENT},
    {"ch_resolve", "SELECT * FROM omnichat.resolve_channel_account($1, $2, $3)", OC_PG_IDEMPOTENT},
    /* A disabled account stays disabled whatever a provider call reports. */
    {"ch_status_auth_failed",
     "UPDATE omnichat.channel_accounts"
     " SET status = CASE WHEN status = 'disabled' THEN status ELSE 'auth_failed' END,"
     " last_error_category = $3, last_error_at = now(), updated_at = now()"
     " WHERE tenant_id = $1 AND id = $2"
     " AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM omnichat.channel_credentials c"
     " WHERE c.tenant_id = $1 AND c.channel_account_id = $2 AND c.field = $4"
     " AND c.ciphertext = decode($5, 'base64')))",
     OC_PG_IDEMPOTENT},
    {"ch_status_active",
     "UPDATE omnichat.channel_accounts"
     " SET status = CASE WHEN status = 'disabled' THEN status ELSE 'active' END,"
     " last_success_at = now(), updated_at = now()"
     " WHERE tenant_id = $1 AND id = $2"
     " AND (status = 'auth_failed' OR last_success_at IS NULL"
     " OR last_success_at < now() - interval '" SUCCESS_REFRESH "')",
     OC_PG_IDEMPOTENT},
};
const size_t pst_nstmts_channels = sizeof pst_stmts_channels / sizeof pst_stmts_channels[0];

/* Builds the response's account from row 0, or records NOT_FOUND naming the account id. */
static PB(ChannelAccount) *
    one_account(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, const char *missing)
{
    PB(ChannelAccount) * a;

    if (oc_pg_ntuples(r) < 1) {
        oc_error_set(&ctx->err, OC_E_NOT_FOUND, "%s", missing);
        return NULL;
    }
    a = pst_row_channel_account(ctx, r, 0);
    if (a == NULL) oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    return a;
}

/* Channel type of a request: required, or 0 allowed when optional; NULL with the error set. */
static bool check_channel_type(oc_rpc_ctx_t *ctx, int v, bool required, const char **out)
{
    *out = NULL;
    if (v == 0 && !required) return true;
    *out = pst_channel_type_str(v);
    if (*out == NULL) {
        if (v == 0)
            oc_error_set(&ctx->err, OC_E_INVALID, "channel_type: is required");
        else
            oc_error_set(&ctx->err, OC_E_INVALID, "channel_type: unknown value %d", v);
        return false;
    }
    return true;
}

static oc_err_t register_channel_account(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                         ProtobufCMessage **out)
{
    const PB(RegisterChannelAccountRequest) *req = (const void *)in;
    PB(RegisterChannelAccountResponse) * resp;
    PB(RegisterChannelAccountResponse) init = PB_INIT(REGISTER_CHANNEL_ACCOUNT_RESPONSE);
    const char *type;
    const char *new_id;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !check_channel_type(ctx, req->channel_type, true, &type) ||
        !pst_check_str(ctx, "external_account_id", req->external_account_id, PST_MAX_KEY, true) ||
        !pst_check_str(ctx, "display_name", req->display_name, PST_MAX_NAME, false))
        return ctx->err.code;
    new_id = pst_new_id(ctx);
    if (new_id == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");

    const char *p1[] = {req->tenant_id, new_id, type, req->external_account_id, req->display_name};
    const char *p2[] = {req->tenant_id, type, req->external_account_id};
    oc_pg_query_t q[] = {{"ch_register", 5, p1, NULL}, {"ch_get_by_key", 3, p2, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    if (oc_pg_ntuples(q[0].res) != 1 || oc_pg_ntuples(q[1].res) != 1)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "channel account: not stored");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->created = oc_pg_value(q[0].res, 0, oc_pg_fnumber(q[0].res, "created"))[0] == 't';
    resp->channel_account = one_account(ctx, q[1].res, "channel account: not stored");
    if (resp->channel_account == NULL) return ctx->err.code;
    *out = &resp->base;
    return OC_OK;
}

/* Field names and key ids are identifiers: they end up in logs and metrics, never free text. */
static bool check_cred_name(oc_rpc_ctx_t *ctx, const char *field, size_t i, const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > CRED_NAME_MAX) {
        oc_error_set(&ctx->err, OC_E_INVALID, "credentials[%zu].%s: must be 1 to %d bytes", i,
                     field, CRED_NAME_MAX);
        return false;
    }
    for (size_t k = 0; k < n; k++) {
        char c = v[k];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-')) {
            oc_error_set(&ctx->err, OC_E_INVALID,
                         "credentials[%zu].%s: only letters, digits, '_', '.' and '-' allowed", i,
                         field);
            return false;
        }
    }
    return true;
}

static bool check_credentials(oc_rpc_ctx_t *ctx, size_t n, PB(SealedCredential) *const *c)
{
    if (n == 0 || n > CRED_MAX) {
        oc_error_set(&ctx->err, OC_E_INVALID, "credentials: must hold 1 to %d items", CRED_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!check_cred_name(ctx, "field", i, c[i]->field) ||
            !check_cred_name(ctx, "key_id", i, c[i]->key_id))
            return false;
        if (c[i]->ciphertext.len == 0 || c[i]->ciphertext.len > CRED_CIPHERTEXT_MAX) {
            oc_error_set(&ctx->err, OC_E_INVALID,
                         "credentials[%zu].ciphertext: must be 1 to %d bytes", i,
                         CRED_CIPHERTEXT_MAX);
            return false;
        }
        /* One row per field: a repeated field would be a unique violation in the database. */
        for (size_t k = 0; k < i; k++)
            if (strcmp(c[k]->field, c[i]->field) == 0) {
                oc_error_set(&ctx->err, OC_E_INVALID, "credentials[%zu].field: repeated", i);
                return false;
            }
    }
    return true;
}

/* [{"field","key_id","ciphertext":"<base64>"}] for update_channel_credentials; NULL on OOM. */
static char *credentials_json(oc_rpc_ctx_t *ctx, size_t n, PB(SealedCredential) *const *c)
{
    oc_buf_t b;
    char *out = NULL;
    char *b64 = oc_arena_alloc(ctx->arena, oc_base64_encoded_len(CRED_CIPHERTEXT_MAX) + 1);

    if (b64 == NULL) return NULL;
    oc_buf_init(&b, CRED_JSON_MAX);
    oc_buf_appends(&b, "[");
    for (size_t i = 0; i < n; i++) {
        oc_base64_encode(c[i]->ciphertext.data, c[i]->ciphertext.len, b64);
        oc_buf_appends(&b, i > 0 ? ",{\"field\":\"" : "{\"field\":\"");
        oc_buf_append_json_str(&b, c[i]->field, strlen(c[i]->field));
        oc_buf_appends(&b, "\",\"key_id\":\"");
        oc_buf_append_json_str(&b, c[i]->key_id, strlen(c[i]->key_id));
        oc_buf_appends(&b, "\",\"ciphertext\":\"");
        oc_buf_appends(&b, b64);
        oc_buf_appends(&b, "\"}");
    }
    oc_buf_appends(&b, "]");
    if (b.failed == OC_OK) out = oc_arena_strndup(ctx->arena, b.data, b.len);
    oc_buf_dispose(&b);
    return out;
}

static oc_err_t update_channel_credentials(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                           ProtobufCMessage **out)
{
    const PB(UpdateChannelCredentialsRequest) *req = (const void *)in;
    PB(UpdateChannelCredentialsResponse) * resp;
    PB(UpdateChannelCredentialsResponse) init = PB_INIT(UPDATE_CHANNEL_CREDENTIALS_RESPONSE);
    char *json;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, true) ||
        !check_credentials(ctx, req->n_credentials, req->credentials))
        return ctx->err.code;
    json = credentials_json(ctx, req->n_credentials, req->credentials);
    if (json == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");

    const char *p1[] = {req->tenant_id, req->channel_account_id, json};
    oc_pg_query_t q[] = {{"ch_update_credentials", 3, p1, NULL}, {"ch_get", 2, p1, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->channel_account = one_account(ctx, q[1].res, "channel_account_id: not found");
    if (resp->channel_account == NULL) return ctx->err.code;
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t get_channel_account(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                    ProtobufCMessage **out)
{
    const PB(GetChannelAccountRequest) *req = (const void *)in;
    PB(GetChannelAccountResponse) * resp;
    PB(GetChannelAccountResponse) init = PB_INIT(GET_CHANNEL_ACCOUNT_RESPONSE);

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, true))
        return ctx->err.code;

    const char *p[] = {req->tenant_id, req->channel_account_id};
    oc_pg_query_t q[] = {{"ch_get", 2, p, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 1) != OC_OK) return ctx->err.code;
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->channel_account = one_account(ctx, q[0].res, "channel_account_id: not found");
    if (resp->channel_account == NULL) return ctx->err.code;
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t list_channel_accounts(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                      ProtobufCMessage **out)
{
    const PB(ListChannelAccountsRequest) *req = (const void *)in;
    PB(ListChannelAccountsResponse) * resp;
    PB(ListChannelAccountsResponse) init = PB_INIT(LIST_CHANNEL_ACCOUNTS_RESPONSE);
    const char *type;

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !check_channel_type(ctx, req->channel_type, false, &type))
        return ctx->err.code;

    const char *p[] = {req->tenant_id, type};
    oc_pg_query_t q[] = {
        {type != NULL ? "ch_list_type" : "ch_list", type != NULL ? 2 : 1, p, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 1) != OC_OK) return ctx->err.code;

    int n = oc_pg_ntuples(q[0].res);
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->channel_accounts = oc_arena_alloc(ctx->arena, (size_t)(n + 1) * sizeof(void *));
    if (resp->channel_accounts == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        resp->channel_accounts[i] = pst_row_channel_account(ctx, q[0].res, i);
        if (resp->channel_accounts[i] == NULL)
            return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    }
    resp->n_channel_accounts = (size_t)n;
    *out = &resp->base;
    return OC_OK;
}

/*
 * Webhook routing: no tenant yet, so this goes through the privileged SQL function. By id, any
 * other field given must match too (a LINE webhook may insist on a LINE account); otherwise
 * channel type and external account id are both required.
 */
static oc_err_t resolve_channel_account(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                        ProtobufCMessage **out)
{
    const PB(ResolveChannelAccountRequest) *req = (const void *)in;
    PB(ResolveChannelAccountResponse) * resp;
    PB(ResolveChannelAccountResponse) init = PB_INIT(RESOLVE_CHANNEL_ACCOUNT_RESPONSE);
    bool by_id = req->channel_account_id[0] != '\0';
    const char *type;
    PB(ChannelAccount) * a;

    if (!by_id && req->channel_type == 0 && req->external_account_id[0] == '\0')
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "channel_account_id: is required (or channel_type with "
                            "external_account_id)");
    if (!pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, false) ||
        !check_channel_type(ctx, req->channel_type, !by_id, &type) ||
        !pst_check_str(ctx, "external_account_id", req->external_account_id, PST_MAX_KEY, !by_id))
        return ctx->err.code;

    const char *p[] = {by_id ? req->channel_account_id : NULL, by_id ? NULL : type,
                       by_id ? NULL : req->external_account_id};
    oc_pg_query_t q[] = {{"ch_resolve", 3, p, NULL}};

    if (pst_exec(ctx, NULL, q, 1) != OC_OK) return ctx->err.code;
    a = one_account(ctx, q[0].res,
                    by_id ? "channel_account_id: not found" : "external_account_id: not found");
    if (a == NULL) return ctx->err.code;
    if (by_id && ((type != NULL && a->channel_type != req->channel_type) ||
                  (req->external_account_id[0] != '\0' &&
                   strcmp(a->external_account_id, req->external_account_id) != 0)))
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "channel_account_id: not found");
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->channel_account = a;
    *out = &resp->base;
    return OC_OK;
}

static oc_err_t record_channel_status(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                                      ProtobufCMessage **out)
{
    const PB(RecordChannelStatusRequest) *req = (const void *)in;
    PB(RecordChannelStatusResponse) * resp;
    PB(RecordChannelStatusResponse) init = PB_INIT(RECORD_CHANNEL_STATUS_RESPONSE);
    bool failed = req->status == PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED);
    const char *category = pst_error_category_str(req->error_category);

    if (!pst_check_uuid(ctx, "tenant_id", req->tenant_id, true) ||
        !pst_check_uuid(ctx, "channel_account_id", req->channel_account_id, true))
        return ctx->err.code;
    if (!failed && req->status != PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE))
        return oc_error_set(&ctx->err, OC_E_INVALID, "status: must be ACTIVE or AUTH_FAILED");
    if (req->error_category != 0 && category == NULL)
        return oc_error_set(&ctx->err, OC_E_INVALID, "error_category: unknown value %d",
                            req->error_category);
    if (failed && category == NULL)
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "error_category: is required with AUTH_FAILED");

    const char *guard_field = pst_opt(req->if_credential_field);
    char *guard_ct = NULL;
    if (guard_field != NULL || req->if_credential_ciphertext.len > 0) {
        if (!pst_check_str(ctx, "if_credential_field", req->if_credential_field, 64, true))
            return ctx->err.code;
        if (req->if_credential_ciphertext.len == 0 || req->if_credential_ciphertext.len > 16384)
            return oc_error_set(&ctx->err, OC_E_INVALID,
                                "if_credential_ciphertext: 1 to 16384 bytes with the field");
        guard_ct = oc_arena_alloc(ctx->arena,
                                  oc_base64_encoded_len(req->if_credential_ciphertext.len) + 1);
        if (guard_ct == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
        oc_base64_encode(req->if_credential_ciphertext.data, req->if_credential_ciphertext.len,
                         guard_ct);
    }

    /* The read-back returns the row even when an update had nothing to write (a success
     * recorded recently, or a guard that no longer holds). */
    const char *p[] = {req->tenant_id, req->channel_account_id, category, guard_field, guard_ct};
    oc_pg_query_t q[] = {
        {failed ? "ch_status_auth_failed" : "ch_status_active", failed ? 5 : 2, p, NULL},
        {"ch_get", 2, p, NULL}};

    if (pst_exec(ctx, req->tenant_id, q, 2) != OC_OK) return ctx->err.code;
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->channel_account = one_account(ctx, q[1].res, "channel_account_id: not found");
    if (resp->channel_account == NULL) return ctx->err.code;
    *out = &resp->base;
    return OC_OK;
}

const oc_rpc_method_t pst_methods_channels[] = {
    PST_METHOD("RegisterChannelAccount", register_channel_account, register_channel_account_request,
               register_channel_account_response, PST_CONNECTOR),
    PST_METHOD("UpdateChannelCredentials", update_channel_credentials,
               update_channel_credentials_request, update_channel_credentials_response,
               PST_CONNECTOR),
    PST_METHOD("GetChannelAccount", get_channel_account, get_channel_account_request,
               get_channel_account_response, PST_READ),
    PST_METHOD("ListChannelAccounts", list_channel_accounts, list_channel_accounts_request,
               list_channel_accounts_response, PST_INBOX_READ),
    PST_METHOD("ResolveChannelAccount", resolve_channel_account, resolve_channel_account_request,
               resolve_channel_account_response, PST_CONNECTOR),
    PST_METHOD("RecordChannelStatus", record_channel_status, record_channel_status_request,
               record_channel_status_response, PST_CONNECTOR),
};
const size_t pst_nmethods_channels = sizeof pst_methods_channels / sizeof pst_methods_channels[0];
