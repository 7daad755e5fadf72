/* Graph API client on the engine's HTTP client, and the data-driven classification of Send API
 * answers. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meta.h"
#include "meta_wire.h"

#define CAT(name) PBE(ERROR_CATEGORY__ERROR_CATEGORY_##name)

oc_err_t meta_api_post(conn_t *c, const char *path, const char *endpoint, const char *fields,
                       const char *token, size_t token_len, long timeout_ms, oc_http_result_t *res)
{
    const meta_config_t *mc = conn_provider_config(c);
    char url[512], proof[META_PROOF_LEN + 1];
    oc_buf_t body;
    oc_err_t rc;

    oc_http_result_init(res, META_BODY_MAX);
    if (token_len == 0 || token_len > META_TOKEN_MAX) return OC_E_INVALID;
    if ((size_t)snprintf(url, sizeof url, "/%s/%s", mc->graph_version, path) >= sizeof url)
        return OC_E_INVALID;
    oc_buf_init(&body, 1u << 20);
    oc_buf_appends(&body, fields);
    if (c->cfg.app_secret != NULL && c->cfg.app_secret[0] != '\0') {
        if (!meta_appsecret_proof(c->cfg.app_secret, strlen(c->cfg.app_secret), token, token_len,
                                  proof)) {
            oc_buf_dispose(&body);
            return OC_E_INTERNAL;
        }
        oc_buf_appendf(&body, "%sappsecret_proof=%s", body.len > 0 ? "&" : "", proof);
    }
    if (body.failed != OC_OK) {
        rc = body.failed;
        oc_buf_dispose(&body);
        return rc;
    }
    oc_http_call_t call = {.method = "POST",
                           .path = url,
                           .endpoint = endpoint,
                           .body = body.data,
                           .body_len = body.len,
                           .timeout_ms = timeout_ms};
    rc = conn_api_call(c, &call, token, token_len, res);
    oc_buf_dispose(&body);
    return rc;
}

static void error_of(const json_t *root, meta_error_t *out)
{
    const json_t *e = json_object_get(root, "error");

    memset(out, 0, sizeof *out);
    if (json_is_object(e)) {
        out->present = true;
        out->code = (long)json_integer_value(json_object_get(e, "code"));
        out->subcode = (long)json_integer_value(json_object_get(e, "error_subcode"));
        out->transient = json_is_true(json_object_get(e, "is_transient"));
    }
}

void meta_api_error(const char *body, size_t len, meta_error_t *out)
{
    json_t *root;

    memset(out, 0, sizeof *out);
    if (body == NULL || len == 0) return;
    root = json_loadb(body, len, 0, NULL);
    error_of(root, out);
    json_decref(root);
}

/* What an error means for the message (an index into verdicts[]). */
enum {
    V_TRANSIENT,
    V_WINDOW,
    V_RECIPIENT,
    V_NO_USER,
    V_PARAM,
    V_TOKEN,
    V_PERMISSION,
    V_RATE,
    V_POLICY
};

static const struct {
    conn_outcome_t outcome;
    int category;
    bool auth_failed; /* the account moves to auth_failed */
    const char *detail;
} verdicts[] = {
    [V_TRANSIENT] = {CONN_OUT_RETRY, CAT(PROVIDER_ERROR), false, "Meta: transient error"},
    [V_WINDOW] = {CONN_OUT_FAILED, CAT(WINDOW_CLOSED), false, "Meta: outside the messaging window"},
    [V_RECIPIENT] = {CONN_OUT_FAILED, CAT(RECIPIENT_ERROR), false, "Meta: recipient not available"},
    [V_NO_USER] = {CONN_OUT_FAILED, CAT(RECIPIENT_ERROR), false, "Meta: no matching user"},
    [V_PARAM] = {CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false, "Meta: invalid parameter"},
    [V_TOKEN] = {CONN_OUT_FAILED, CAT(AUTH_ERROR), true, "Meta rejected the access token (190)"},
    [V_PERMISSION] = {CONN_OUT_FAILED, CAT(AUTH_ERROR), true, "Meta: permission denied"},
    [V_RATE] = {CONN_OUT_RETRY, CAT(RATE_LIMIT_ERROR), false, "Meta: rate limited"},
    [V_POLICY] = {CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false,
                  "Meta: temporarily blocked for policy violations"},
};

/*
 * The Meta error table of PROVIDERS.md as data, first match wins: code range [lo, hi] (hi 0:
 * just lo), error_subcode (0: any); a transient row matches is_transient: true whatever the code.
 */
static const struct {
    long lo, hi, subcode;
    bool transient;
    int verdict;
} error_rows[] = {
    {0, 0, 0, true, V_TRANSIENT},        {10, 0, 2018278, false, V_WINDOW},
    {10, 0, 2534022, false, V_WINDOW},   {10, 0, 2018108, false, V_RECIPIENT},
    {551, 0, 0, false, V_RECIPIENT},     {200, 0, 1545041, false, V_RECIPIENT},
    {100, 0, 2018001, false, V_NO_USER}, {100, 0, 0, false, V_PARAM},
    {190, 0, 0, false, V_TOKEN},         {10, 0, 0, false, V_PERMISSION},
    {200, 299, 0, false, V_PERMISSION},  {4, 0, 0, false, V_RATE},
    {17, 0, 0, false, V_RATE},           {32, 0, 0, false, V_RATE},
    {613, 0, 0, false, V_RATE},          {341, 0, 0, false, V_RATE},
    {368, 0, 0, false, V_POLICY},        {1, 2, 0, false, V_TRANSIENT},
    {1200, 0, 0, false, V_TRANSIENT},
};

static void message_id(const json_t *root, char *out, size_t cap)
{
    const char *s = json_string_value(json_object_get(root, "message_id"));

    out[0] = '\0';
    if (s != NULL && strlen(s) < cap) strcpy(out, s);
}

static void set(conn_class_t *out, conn_outcome_t o, int category, const char *detail)
{
    out->outcome = o;
    out->category = category;
    snprintf(out->detail, sizeof out->detail, "%s", detail);
}

void meta_classify_send(const oc_http_result_t *res, long timeout_ms, conn_class_t *out)
{
    meta_error_t e;

    memset(out, 0, sizeof *out);
    switch (res->transport) {
    case OC_HTTP_TX_TIMEOUT:
        set(out, CONN_OUT_UNKNOWN, CAT(TIMEOUT), "");
        snprintf(out->detail, sizeof out->detail, "timed out after %ld ms", timeout_ms);
        return;
    case OC_HTTP_TX_CONNECT:
        set(out, CONN_OUT_RETRY, CAT(NETWORK_ERROR), "could not connect to Meta");
        return;
    case OC_HTTP_TX_DROPPED:
        set(out, CONN_OUT_UNKNOWN, CAT(NETWORK_ERROR), "connection to Meta lost after sending");
        return;
    case OC_HTTP_TX_OK:
        break;
    }
    /* One parse for both the error and the id. */
    json_t *root = res->body.len > 0 && res->body.data != NULL
                       ? json_loadb(res->body.data, res->body.len, 0, NULL)
                       : NULL;
    error_of(root, &e);
    if (res->status >= 200 && res->status <= 299 && !e.present)
        message_id(root, out->external_message_id, sizeof out->external_message_id);
    json_decref(root);
    if (res->status >= 200 && res->status <= 299 && !e.present) {
        if (out->external_message_id[0] != '\0') {
            out->outcome = CONN_OUT_SENT;
            return;
        }
        /* Accepted without an id: it may well have left; its echo settles it. */
        set(out, CONN_OUT_UNKNOWN, CAT(PROVIDER_ERROR), "Meta answered without a message id");
        return;
    }
    for (size_t i = 0; e.present && i < sizeof error_rows / sizeof error_rows[0]; i++) {
        long hi = error_rows[i].hi != 0 ? error_rows[i].hi : error_rows[i].lo;
        bool match = error_rows[i].transient
                         ? e.transient
                         : e.code >= error_rows[i].lo && e.code <= hi &&
                               (error_rows[i].subcode == 0 || error_rows[i].subcode == e.subcode);
        if (!match) continue;
        set(out, verdicts[error_rows[i].verdict].outcome, verdicts[error_rows[i].verdict].category,
            verdicts[error_rows[i].verdict].detail);
        out->auth_failed = verdicts[error_rows[i].verdict].auth_failed;
        return;
    }
    if (res->status >= 500 || res->status == 429)
        set(out, CONN_OUT_RETRY, CAT(PROVIDER_ERROR), "");
    else
        set(out, CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), "");
    snprintf(out->detail, sizeof out->detail, "Meta answered %ld (code %ld)", res->status, e.code);
}
