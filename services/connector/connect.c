/* Connector/ConnectChannel: verify the token with the provider, register the account, seal the
 * credentials and store them, read the result back. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connect.h"
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
    if (n > CONN_CREDENTIAL_MAX) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be at most %d bytes", field,
                     CONN_CREDENTIAL_MAX);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e) {
            oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be printable ASCII", field);
            return false;
        }
    return true;
}

static PB(SealedCredential) * seal(conn_t *c, oc_rpc_ctx_t *ctx, const char *tenant,
                                   const char *account, const char *field, const char *value)
{
    PB(SealedCredential) *sc = oc_arena_alloc(ctx->arena, sizeof *sc);
    PB(SealedCredential) init = PB_INIT(SEALED_CREDENTIAL);
    const char *key_id = NULL;
    uint8_t *sealed = NULL;
    size_t len = 0;
    oc_error_t err;

    oc_error_clear(&err);
    if (sc == NULL) return NULL;
    if (oc_vault_seal(c->vault, tenant, account, field, value, strlen(value), &key_id, &sealed,
                      &len, &err) != OC_OK) {
        oc_error_set(&ctx->err, OC_E_INTERNAL, "credential: could not be sealed");
        return NULL;
    }
    *sc = init;
    sc->field = (char *)field;
    sc->key_id = (char *)key_id;
    sc->ciphertext.data = oc_arena_alloc(ctx->arena, len);
    if (sc->ciphertext.data == NULL) {
        free(sealed);
        return NULL;
    }
    memcpy(sc->ciphertext.data, sealed, len);
    sc->ciphertext.len = len;
    free(sealed);
    return sc;
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
    conn_t *c = ctx->user;
    CPB(ConnectChannelResponse) * resp;
    CPB(ConnectChannelResponse) init = CPB_INIT(CONNECT_CHANNEL_RESPONSE);
    PB(RegisterChannelAccountRequest) rreq = PB_INIT(REGISTER_CHANNEL_ACCOUNT_REQUEST);
    PB(RegisterChannelAccountResponse) *rresp = NULL;
    PB(UpdateChannelCredentialsRequest) ureq = PB_INIT(UPDATE_CHANNEL_CREDENTIALS_REQUEST);
    PB(UpdateChannelCredentialsResponse) *uresp = NULL;
    PB(SealedCredential) * creds[2];
    PB(ChannelAccount) * acc;
    conn_verified_t v = {.external_account_id = "", .display_name = NULL};
    bool per_account = c->p->secret_scope == CONN_SECRET_PER_ACCOUNT;
    int type = req->channel_type != 0 ? (int)req->channel_type : c->p->channel_types[0];
    oc_error_t e;
    oc_err_t rc;

    if (req->tenant_id[0] == '\0' || !oc_uuid_valid(req->tenant_id))
        return oc_error_set(&ctx->err, OC_E_INVALID, "tenant_id: %s",
                            req->tenant_id[0] == '\0' ? "is required" : "must be a UUID");
    snprintf(ctx->tenant_id, sizeof ctx->tenant_id, "%s", req->tenant_id);
    if (!conn_serves(c, type))
        return oc_error_set(&ctx->err, OC_E_INVALID, "channel_type: not served by this connector");
    if (!check_credential(ctx, "access_token", req->access_token) ||
        (per_account && !check_credential(ctx, "channel_secret", req->channel_secret)))
        return ctx->err.code;
    if (strlen(req->display_name) > CONN_NAME_MAX ||
        !oc_utf8_valid(req->display_name, strlen(req->display_name)))
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "display_name: must be valid UTF-8 of at most %d bytes", CONN_NAME_MAX);
    if (req->external_account_id[0] != '\0' && strlen(req->external_account_id) > CONN_KEY_MAX)
        return oc_error_set(&ctx->err, OC_E_INVALID, "external_account_id: too long");

    conn_verify_t vr = {req->access_token, req->external_account_id, type};
    if (c->p->verify(c, ctx, &vr, &v) != OC_OK) return ctx->err.code;
    /* The provider reports the account id itself; a caller's different claim is a mistake
     * worth telling. */
    if (req->external_account_id[0] != '\0' &&
        strcmp(req->external_account_id, v.external_account_id) != 0)
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "external_account_id: does not match the account of this "
                            "access_token");

    oc_error_clear(&e);
    rreq.tenant_id = req->tenant_id;
    rreq.channel_type = type;
    rreq.external_account_id = v.external_account_id;
    rreq.display_name = req->display_name[0] != '\0' ? req->display_name
                        : v.display_name != NULL     ? v.display_name
                                                     : (char *)"";
    rc = conn_pst_call(c, 0, "RegisterChannelAccount", &rreq.base,
                       &omnichat__persistence__v1__register_channel_account_response__descriptor,
                       ctx->request_id, ctx->arena, (ProtobufCMessage **)&rresp, &e);
    if (rc != OC_OK) return oc_error_set(&ctx->err, rc, "%s", e.msg);
    if (rresp->channel_account == NULL)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "channel account: missing in the answer");
    acc = rresp->channel_account;

    creds[0] =
        seal(c, ctx, acc->tenant_id, acc->channel_account_id, c->p->token_field, req->access_token);
    creds[1] = per_account ? seal(c, ctx, acc->tenant_id, acc->channel_account_id,
                                  c->p->secret_field, req->channel_secret)
                           : NULL;
    wipe_credentials(req); /* sealed (or failed to be): the plaintext is not needed any more */
    if (creds[0] == NULL || (per_account && creds[1] == NULL))
        return ctx->err.code != OC_OK ? ctx->err.code
                                      : oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    ureq.tenant_id = acc->tenant_id;
    ureq.channel_account_id = acc->channel_account_id;
    ureq.n_credentials = per_account ? 2 : 1;
    ureq.credentials = creds;
    rc = conn_pst_call(c, 0, "UpdateChannelCredentials", &ureq.base,
                       &omnichat__persistence__v1__update_channel_credentials_response__descriptor,
                       ctx->request_id, ctx->arena, (ProtobufCMessage **)&uresp, &e);
    conn_account_invalidate(c, acc->channel_account_id);
    if (rc != OC_OK) return oc_error_set(&ctx->err, rc, "%s", e.msg);
    /* A new account is AUTH_FAILED until its credentials are stored: the reply shows the
     * account as it is now, read back if the answer did not carry it. */
    if (uresp->channel_account != NULL) {
        acc = uresp->channel_account;
    } else {
        PB(ChannelAccount) *now = NULL;
        rc = conn_account_get(c, 0, acc->tenant_id, acc->channel_account_id, ctx->request_id,
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
    resp->webhook_path =
        c->p->routing == CONN_ROUTE_PATH
            ? oc_arena_sprintf(ctx->arena, "%s%s", c->p->webhook_path, acc->channel_account_id)
            : oc_arena_strdup(ctx->arena, c->p->webhook_path);
    if (resp->webhook_path == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *out = &resp->base;
    return OC_OK;
}

oc_err_t conn_connect_channel(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const CPB(ConnectChannelRequest) *req = (const void *)in;
    oc_err_t rc = connect_channel(ctx, req, out);

    wipe_credentials(req); /* whatever path was taken: no plaintext outlives the handler */
    return rc;
}
