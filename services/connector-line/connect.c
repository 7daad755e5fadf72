/* Connector/ConnectChannel: verify the token with LINE, register the account, seal and store. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "line.h"
#include "line_api.h"
#include "omnichat/log.h"
#include "omnichat/util.h"

/* Credentials are printable ASCII without blanks: anything else is a paste accident. */
static bool check_credential(oc_rpc_ctx_t *ctx, const char *field, const char *v)
{
    size_t n = strlen(v);

    if (n == 0) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: is required", field);
        return false;
    }
    if (n > LINE_CREDENTIAL_MAX) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be at most %d bytes", field,
                     LINE_CREDENTIAL_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e) {
            oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be printable ASCII", field);
            return false;
        }
    return true;
}

/* GET /v2/bot/info: the bot's user id and name, or why the token is not usable. */
static oc_err_t bot_info(line_t *l, oc_rpc_ctx_t *ctx, const char *token, char *user_id,
                         size_t user_cap, char **display_name)
{
    oc_http_result_t res;
    json_t *root = NULL;
    const char *uid, *name;
    oc_err_t rc = OC_OK;

    line_http_result_init(&res);
    if (line_api_get(l->api, token, strlen(token), "/v2/bot/info", "bot_info",
                     (long)l->cfg.line_timeout_ms, &res) != OC_OK) {
        rc = oc_error_set(&ctx->err, OC_E_INTERNAL, "LINE request could not be built");
        goto out;
    }
    if (res.transport != OC_HTTP_TX_OK) {
        rc = oc_error_set(&ctx->err, OC_E_UNAVAILABLE, "LINE: %s, retry",
                          res.transport == OC_HTTP_TX_TIMEOUT ? "timed out"
                                                              : "could not be reached");
        goto out;
    }
    if (res.status == 401 || res.status == 403) {
        rc = oc_error_set(&ctx->err, OC_E_UNAUTHENTICATED, "access_token: rejected by LINE");
        goto out;
    }
    if (res.status != 200) {
        rc = oc_error_set(&ctx->err,
                          res.status >= 500 || res.status == 429 ? OC_E_UNAVAILABLE
                                                                 : OC_E_FAILED_PRECONDITION,
                          "LINE answered %ld to the bot info request", res.status);
        goto out;
    }
    root = json_loadb(res.body.data != NULL ? res.body.data : "", res.body.len, 0, NULL);
    uid = json_string_value(json_object_get(root, "userId"));
    name = json_string_value(json_object_get(root, "displayName"));
    if (uid == NULL || uid[0] == '\0' || strlen(uid) >= user_cap) {
        rc = oc_error_set(&ctx->err, OC_E_UNAVAILABLE, "LINE: bot info without a user id");
        goto out;
    }
    strcpy(user_id, uid);
    *display_name = oc_arena_strdup(ctx->arena, name != NULL && strlen(name) <= LINE_NAME_MAX &&
                                                        oc_utf8_valid(name, strlen(name))
                                                    ? name
                                                    : "");
out:
    json_decref(root);
    oc_http_result_dispose(&res);
    return rc;
}

static PB(SealedCredential) * seal(line_t *l, oc_rpc_ctx_t *ctx, const char *tenant,
                                   const char *account, const char *field, const char *value)
{
    PB(SealedCredential) *c = oc_arena_alloc(ctx->arena, sizeof *c);
    PB(SealedCredential) init = PB_INIT(SEALED_CREDENTIAL);
    const char *key_id = NULL;
    uint8_t *sealed = NULL;
    size_t len = 0;
    oc_error_t err;

    oc_error_clear(&err);
    if (c == NULL) return NULL;
    if (oc_vault_seal(l->vault, tenant, account, field, value, strlen(value), &key_id, &sealed,
                      &len, &err) != OC_OK) {
        oc_error_set(&ctx->err, OC_E_INTERNAL, "credential: could not be sealed");
        return NULL;
    }
    *c = init;
    c->field = (char *)field;
    c->key_id = (char *)key_id;
    c->ciphertext.data = oc_arena_alloc(ctx->arena, len);
    if (c->ciphertext.data == NULL) {
        free(sealed);
        return NULL;
    }
    memcpy(c->ciphertext.data, sealed, len);
    c->ciphertext.len = len;
    free(sealed);
    return c;
}

/* The plaintext credentials of the decoded request (strings in the call's arena). */
static void wipe_credentials(const CPB(ConnectChannelRequest) * req)
{
    /* The request is ours to scribble on: it was unpacked into this call's arena. */
    if (req->access_token != NULL) OPENSSL_cleanse(req->access_token, strlen(req->access_token));
    if (req->channel_secret != NULL)
        OPENSSL_cleanse(req->channel_secret, strlen(req->channel_secret));
}

static oc_err_t connect_channel(oc_rpc_ctx_t *ctx, const CPB(ConnectChannelRequest) * req,
                                ProtobufCMessage **out)
{
    line_t *l = ctx->user;
    CPB(ConnectChannelResponse) * resp;
    CPB(ConnectChannelResponse) init = CPB_INIT(CONNECT_CHANNEL_RESPONSE);
    PB(RegisterChannelAccountRequest) rreq = PB_INIT(REGISTER_CHANNEL_ACCOUNT_REQUEST);
    PB(RegisterChannelAccountResponse) *rresp = NULL;
    PB(UpdateChannelCredentialsRequest) ureq = PB_INIT(UPDATE_CHANNEL_CREDENTIALS_REQUEST);
    PB(UpdateChannelCredentialsResponse) *uresp = NULL;
    PB(SealedCredential) * creds[2];
    PB(ChannelAccount) * acc;
    char user_id[128];
    char *reported_name = NULL;
    oc_error_t e;
    oc_err_t rc;

    if (req->tenant_id[0] == '\0' || !oc_uuid_valid(req->tenant_id))
        return oc_error_set(&ctx->err, OC_E_INVALID, "tenant_id: %s",
                            req->tenant_id[0] == '\0' ? "is required" : "must be a UUID");
    snprintf(ctx->tenant_id, sizeof ctx->tenant_id, "%s", req->tenant_id);
    if (!check_credential(ctx, "access_token", req->access_token) ||
        !check_credential(ctx, "channel_secret", req->channel_secret))
        return ctx->err.code;
    if (strlen(req->display_name) > LINE_NAME_MAX ||
        !oc_utf8_valid(req->display_name, strlen(req->display_name)))
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "display_name: must be valid UTF-8 of at most %d bytes", LINE_NAME_MAX);
    if (req->external_account_id[0] != '\0' && strlen(req->external_account_id) > LINE_KEY_MAX)
        return oc_error_set(&ctx->err, OC_E_INVALID, "external_account_id: too long");

    if (bot_info(l, ctx, req->access_token, user_id, sizeof user_id, &reported_name) != OC_OK)
        return ctx->err.code;
    /* LINE reports its bot id itself; a caller's different claim is a mistake worth telling. */
    if (req->external_account_id[0] != '\0' && strcmp(req->external_account_id, user_id) != 0)
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "external_account_id: does not match the bot of this access_token");

    oc_error_clear(&e);
    rreq.tenant_id = req->tenant_id;
    rreq.channel_type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_LINE);
    rreq.external_account_id = user_id;
    rreq.display_name = req->display_name[0] != '\0' ? req->display_name
                        : reported_name != NULL      ? reported_name
                                                     : (char *)"";
    rc = line_pst_call(l, 0, "RegisterChannelAccount", &rreq.base,
                       &omnichat__persistence__v1__register_channel_account_response__descriptor,
                       ctx->request_id, ctx->arena, (ProtobufCMessage **)&rresp, &e);
    if (rc != OC_OK) return oc_error_set(&ctx->err, rc, "%s", e.msg);
    if (rresp->channel_account == NULL)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "channel account: missing in the answer");
    acc = rresp->channel_account;

    creds[0] =
        seal(l, ctx, acc->tenant_id, acc->channel_account_id, "access_token", req->access_token);
    creds[1] = seal(l, ctx, acc->tenant_id, acc->channel_account_id, "channel_secret",
                    req->channel_secret);
    wipe_credentials(req); /* sealed (or failed to be): the plaintext is not needed any more */
    if (creds[0] == NULL || creds[1] == NULL)
        return ctx->err.code != OC_OK ? ctx->err.code
                                      : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    ureq.tenant_id = acc->tenant_id;
    ureq.channel_account_id = acc->channel_account_id;
    ureq.n_credentials = 2;
    ureq.credentials = creds;
    rc = line_pst_call(l, 0, "UpdateChannelCredentials", &ureq.base,
                       &omnichat__persistence__v1__update_channel_credentials_response__descriptor,
                       ctx->request_id, ctx->arena, (ProtobufCMessage **)&uresp, &e);
    line_account_invalidate(l, acc->channel_account_id);
    if (rc != OC_OK) return oc_error_set(&ctx->err, rc, "%s", e.msg);
    /* A new account is AUTH_FAILED until its credentials are stored: the reply shows the
     * account as it is now, read back if the answer did not carry it. */
    if (uresp->channel_account != NULL) {
        acc = uresp->channel_account;
    } else {
        PB(ChannelAccount) *now = NULL;
        rc = line_account_get(l, 0, acc->tenant_id, acc->channel_account_id, ctx->request_id,
                              ctx->arena, &now, &e);
        if (rc != OC_OK) return oc_error_set(&ctx->err, rc, "%s", e.msg);
        acc = now;
    }

    OC_INFO(
        "channel connected", OC_LS("request_id", ctx->request_id),
        OC_LS("tenant_id", acc->tenant_id), OC_LS("channel_account_id", acc->channel_account_id),
        OC_LS("external_account_id", acc->external_account_id), OC_LB("created", rresp->created),
        OC_LS("status",
              acc->status == PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE) ? "active" : "not active"));
    acc->n_credentials = 0;
    acc->credentials = NULL;
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->channel_account = acc;
    resp->webhook_path = oc_arena_sprintf(ctx->arena, "/webhooks/line/%s", acc->channel_account_id);
    if (resp->webhook_path == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *out = &resp->base;
    return OC_OK;
}

oc_err_t line_connect_channel(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const CPB(ConnectChannelRequest) *req = (const void *)in;
    oc_err_t rc = connect_channel(ctx, req, out);

    wipe_credentials(req); /* whatever path was taken: no plaintext outlives the handler */
    return rc;
}
