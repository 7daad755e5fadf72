/* The engine's bottom layer: persistence client, channel account cache, provider API calls. */
#include "conn.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "omnichat/log.h"
#include "omnichat/util.h"

#define ROUTE_KEY_MAX 300

const char *conn_outcome_name(conn_outcome_t o)
{
    switch (o) {
    case CONN_OUT_SENT:
        return "sent";
    case CONN_OUT_FAILED:
        return "failed";
    case CONN_OUT_RETRY:
        return "retry";
    case CONN_OUT_UNKNOWN:
        return "unknown";
    }
    return "unknown";
}

const char *conn_category_name(int category)
{
    const char *name = oc_pb_enum_name(OC_PB_ERROR_CATEGORY, category);

    return category == 0 ? "" : name != NULL ? name : "internal_error";
}

bool conn_serves(const conn_t *c, int channel_type)
{
    for (size_t i = 0; i < c->p->n_channel_types; i++)
        if (c->p->channel_types[i] == channel_type) return true;
    return false;
}

/* ---------- persistence ---------- */

oc_err_t conn_pst_call(conn_t *c, int timeout_ms, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, const char *request_id,
                       oc_arena_t *arena, ProtobufCMessage **resp, oc_error_t *err)
{
    char path[128];
    oc_error_t e;
    oc_err_t rc;

    snprintf(path, sizeof path, "%s%s", CONN_PST_SERVICE, method);
    oc_error_clear(&e);
    rc = oc_rpc_client_call(c->pst, path, req, resp_desc,
                            timeout_ms > 0 ? timeout_ms : (int)c->cfg.persistence_timeout_ms,
                            request_id, arena, resp, NULL, &e);
    if (rc == OC_OK) return OC_OK;
    /* Readiness needs no second to notice what a call just found; the next good check of
     * persistence's health makes the connector ready again. */
    if (rc == OC_E_UNAVAILABLE) oc_ready_fail(c->ready, "persistence unreachable");
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

/* The cache key of a route: "<type>/<external id>" (ids are case-sensitive). */
static bool route_key(char *key, size_t cap, int type, const char *external_id)
{
    int n = snprintf(key, cap, "%d/%s", type, external_id);

    return n > 0 && (size_t)n < cap;
}

static void cache_put(conn_t *c, const char *key, const PB(ChannelAccount) * acc)
{
    size_t n = protobuf_c_message_get_packed_size(&acc->base);
    uint8_t *buf = malloc(n > 0 ? n : 1);

    if (buf == NULL) return;
    protobuf_c_message_pack(&acc->base, buf);
    oc_lru_put(c->accounts, key, buf, n);
    free(buf);
}

void conn_account_put(conn_t *c, const PB(ChannelAccount) * acc)
{
    char key[ROUTE_KEY_MAX];

    if (acc == NULL || acc->channel_account_id == NULL) return;
    lower_copy(key, acc->channel_account_id, sizeof key);
    cache_put(c, key, acc);
    if (c->p->routing == CONN_ROUTE_BODY && acc->external_account_id != NULL &&
        route_key(key, sizeof key, acc->channel_type, acc->external_account_id))
        cache_put(c, key, acc);
}

void conn_account_invalidate(conn_t *c, const char *account_id)
{
    char key[OC_UUID_STR_LEN + 1];

    /* A route entry (CONN_ROUTE_BODY) lives on until account-cache-ms: it is found by the
     * provider's id, which this caller may not know. */
    lower_copy(key, account_id, sizeof key);
    oc_lru_remove(c->accounts, key);
}

static PB(ChannelAccount) * cache_get(conn_t *c, const char *key, oc_arena_t *arena)
{
    ProtobufCAllocator alloc;
    char *val;
    size_t len;

    if (!oc_lru_get(c->accounts, key, arena, &val, &len)) return NULL;
    oc_arena_protobuf_allocator(arena, &alloc);
    return (PB(ChannelAccount) *)protobuf_c_message_unpack(
        &omnichat__persistence__v1__channel_account__descriptor, &alloc, len, (const uint8_t *)val);
}

/* What every lookup checks of a found account, cached or fresh. */
static oc_err_t account_check(conn_t *c, const char *tenant_id, const PB(ChannelAccount) * acc,
                              oc_error_t *err)
{
    /* The id is global, so an account of another tenant is simply not theirs. */
    if (tenant_id != NULL && strcasecmp(acc->tenant_id, tenant_id) != 0)
        return oc_error_set(err, OC_E_NOT_FOUND, "channel_account_id: not found");
    if (tenant_id == NULL && acc->status == PBE(CHANNEL_STATUS__CHANNEL_STATUS_DISABLED))
        return oc_error_set(err, OC_E_NOT_FOUND, "channel_account_id: not found");
    if (!conn_serves(c, acc->channel_type))
        return oc_error_set(err, OC_E_NOT_FOUND, "channel_account_id: not found");
    return OC_OK;
}

oc_err_t conn_account_get(conn_t *c, int timeout_ms, const char *tenant_id, const char *account_id,
                          const char *request_id, oc_arena_t *arena, PB(ChannelAccount) * *out,
                          oc_error_t *err)
{
    char key[OC_UUID_STR_LEN + 1];
    PB(ChannelAccount) * acc;
    oc_err_t rc;

    *out = NULL;
    lower_copy(key, account_id, sizeof key);
    if ((acc = cache_get(c, key, arena)) != NULL) {
        if (account_check(c, tenant_id, acc, err) != OC_OK) return err->code;
        *out = acc;
        return OC_OK;
    }
    if (tenant_id != NULL) {
        PB(GetChannelAccountRequest) req = PB_INIT(GET_CHANNEL_ACCOUNT_REQUEST);
        PB(GetChannelAccountResponse) *resp = NULL;
        req.tenant_id = (char *)tenant_id;
        req.channel_account_id = (char *)account_id;
        rc = conn_pst_call(c, timeout_ms, "GetChannelAccount", &req.base,
                           &omnichat__persistence__v1__get_channel_account_response__descriptor,
                           request_id, arena, (ProtobufCMessage **)&resp, err);
        if (rc == OC_OK) acc = resp->channel_account;
    } else {
        PB(ResolveChannelAccountRequest) req = PB_INIT(RESOLVE_CHANNEL_ACCOUNT_REQUEST);
        PB(ResolveChannelAccountResponse) *resp = NULL;
        req.channel_account_id = (char *)account_id;
        rc = conn_pst_call(c, timeout_ms, "ResolveChannelAccount", &req.base,
                           &omnichat__persistence__v1__resolve_channel_account_response__descriptor,
                           request_id, arena, (ProtobufCMessage **)&resp, err);
        if (rc == OC_OK) acc = resp->channel_account;
    }
    if (rc != OC_OK) return rc;
    if (acc == NULL)
        return oc_error_set(err, OC_E_INTERNAL, "channel account: missing in the answer");
    if (account_check(c, tenant_id, acc, err) != OC_OK) return err->code;
    conn_account_put(c, acc);
    *out = acc;
    return OC_OK;
}

oc_err_t conn_account_route(conn_t *c, int timeout_ms, int channel_type, const char *external_id,
                            const char *request_id, oc_arena_t *arena, PB(ChannelAccount) * *out,
                            oc_error_t *err)
{
    char key[ROUTE_KEY_MAX];
    PB(ResolveChannelAccountRequest) req = PB_INIT(RESOLVE_CHANNEL_ACCOUNT_REQUEST);
    PB(ResolveChannelAccountResponse) *resp = NULL;
    PB(ChannelAccount) * acc;
    oc_err_t rc;

    *out = NULL;
    if (!conn_serves(c, channel_type) || !route_key(key, sizeof key, channel_type, external_id))
        return oc_error_set(err, OC_E_NOT_FOUND, "channel account: not found");
    if ((acc = cache_get(c, key, arena)) != NULL) {
        if (account_check(c, NULL, acc, err) != OC_OK) return err->code;
        *out = acc;
        return OC_OK;
    }
    req.channel_type = channel_type;
    req.external_account_id = (char *)external_id;
    rc = conn_pst_call(c, timeout_ms, "ResolveChannelAccount", &req.base,
                       &omnichat__persistence__v1__resolve_channel_account_response__descriptor,
                       request_id, arena, (ProtobufCMessage **)&resp, err);
    if (rc != OC_OK) return rc;
    if ((acc = resp->channel_account) == NULL)
        return oc_error_set(err, OC_E_INTERNAL, "channel account: missing in the answer");
    if (account_check(c, NULL, acc, err) != OC_OK) return err->code;
    conn_account_put(c, acc);
    *out = acc;
    return OC_OK;
}

const PB(SealedCredential) *
    conn_account_credential(const PB(ChannelAccount) * acc, const char *field)
{
    if (field == NULL) return NULL;
    for (size_t i = 0; i < acc->n_credentials; i++)
        if (acc->credentials[i]->field != NULL && strcmp(acc->credentials[i]->field, field) == 0)
            return acc->credentials[i];
    return NULL;
}

/* ---------- provider API ---------- */

oc_err_t conn_api_call(conn_t *c, oc_http_call_t *call, const char *token, size_t token_len,
                       oc_http_result_t *res)
{
    if (token != NULL) {
        call->secret_in = c->p->token_in;
        call->secret_name = c->p->token_name;
        call->secret = token;
        call->secret_len = token_len;
    } else {
        call->secret_in = OC_HTTP_SECRET_NONE;
    }
    return oc_http_client_call(c->api, call, res);
}

/* A client's id goes into logs, the persistence call's metadata and the response header:
 * printable ASCII (no CR/LF, no controls, no bytes a header could not carry) or nothing. */
static bool request_id_usable(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n >= 64) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

void conn_request_id(const oc_http_request_t *req, char out[64])
{
    const char *rid = oc_http_header(req, "x-request-id");

    if (rid != NULL && request_id_usable(rid))
        snprintf(out, 64, "%s", rid);
    else if (oc_uuid_v4(out) != OC_OK)
        out[0] = '\0';
}
