/* LINE Messaging API client on the common HTTP client, and the data-driven classification of push
 * answers. */
#include "line_api.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT(name) PBE(ERROR_CATEGORY__ERROR_CATEGORY_##name)

void line_http_result_init(oc_http_result_t *r)
{
    oc_http_result_init(r, LINE_BODY_MAX);
}

static oc_err_t perform(conn_t *c, const char *token, size_t token_len, const char *path,
                        const char *endpoint, const char *post_body, size_t post_len,
                        const char *retry_key, long timeout_ms, oc_http_result_t *res)
{
    char key_hdr[96];
    const char *headers[2] = {NULL, NULL};
    oc_http_call_t call = {.method = post_body != NULL ? "POST" : "GET",
                           .path = path,
                           .endpoint = endpoint,
                           .headers = headers,
                           .body = post_body,
                           .body_len = post_len,
                           .timeout_ms = timeout_ms};

    if (token_len > LINE_TOKEN_MAX) return OC_E_INVALID;
    if (retry_key != NULL && retry_key[0] != '\0') {
        snprintf(key_hdr, sizeof key_hdr, "X-Line-Retry-Key: %s", retry_key);
        headers[0] = key_hdr;
    }
    return conn_api_call(c, &call, token, token_len, res);
}

oc_err_t line_api_push(conn_t *c, const char *token, size_t token_len, const char *to,
                       const char *text, const char *retry_key, long timeout_ms,
                       oc_http_result_t *res)
{
    oc_buf_t body;
    oc_err_t rc;

    /* A push without the key could be delivered twice by a retry: never send one. */
    if (retry_key == NULL || retry_key[0] == '\0') return OC_E_INVALID;
    oc_buf_init(&body, 1u << 20);
    oc_buf_appends(&body, "{\"to\":\"");
    oc_buf_append_json_str(&body, to, strlen(to));
    oc_buf_appends(&body, "\",\"messages\":[{\"type\":\"text\",\"text\":\"");
    oc_buf_append_json_str(&body, text, strlen(text));
    oc_buf_appends(&body, "\"}]}");
    if (body.failed != OC_OK) {
        rc = body.failed;
        oc_buf_dispose(&body);
        return rc;
    }
    rc = perform(c, token, token_len, "/v2/bot/message/push", "push", body.data, body.len,
                 retry_key, timeout_ms, res);
    oc_buf_dispose(&body);
    return rc;
}

oc_err_t line_api_get(conn_t *c, const char *token, size_t token_len, const char *path,
                      const char *endpoint, long timeout_ms, oc_http_result_t *res)
{
    return perform(c, token, token_len, path, endpoint, NULL, 0, NULL, timeout_ms, res);
}

/* ---------- classification ---------- */

/*
 * The LINE error table of PROVIDERS.md as data: first matching row wins. `message` matches the
 * body's "message" exactly (LINE offers nothing else to tell quota from rate limit, or an
 * unreachable recipient from a malformed request). `detail` may hold one %ld (the status).
 */
typedef struct class_row {
    long lo, hi;
    const char *message;
    conn_outcome_t outcome;
    int category;
    bool auth_failed;
    const char *detail;
} class_row_t;

static const class_row_t push_rows[] = {
    {200, 299, NULL, CONN_OUT_SENT, 0, false, ""},
    {409, 409, NULL, CONN_OUT_SENT, 0, false, ""}, /* retry key already accepted */
    {401, 401, NULL, CONN_OUT_FAILED, CAT(AUTH_ERROR), true,
     "LINE rejected the access token (401)"},
    {403, 403, NULL, CONN_OUT_FAILED, CAT(AUTH_ERROR), true, "LINE denied access to the API (403)"},
    {400, 400, "Failed to send messages", CONN_OUT_FAILED, CAT(RECIPIENT_ERROR), false,
     "LINE could not send to the recipient (400)"},
    {400, 400, NULL, CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false,
     "LINE rejected the request (400)"},
    {413, 413, NULL, CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false,
     "LINE rejected the request as too large (413)"},
    {429, 429, "You have reached your monthly limit.", CONN_OUT_FAILED, CAT(QUOTA_EXCEEDED), false,
     "LINE monthly message limit reached (429)"},
    {429, 429, NULL, CONN_OUT_RETRY, CAT(RATE_LIMIT_ERROR), false,
     "LINE rate limit exceeded (429)"},
    {500, 599, NULL, CONN_OUT_RETRY, CAT(PROVIDER_ERROR), false, "LINE answered %ld"},
    {400, 499, NULL, CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false, "LINE answered %ld"},
    /* 1xx/3xx: nothing LINE documents; assume it was not executed, the key keeps it safe. */
    {0, 999, NULL, CONN_OUT_RETRY, CAT(PROVIDER_ERROR), false, "LINE answered unexpected %ld"},
};

bool line_json_string(const char *body, size_t len, const char *key, char *out, size_t cap)
{
    json_t *root;
    const char *s;
    bool ok = false;

    out[0] = '\0';
    if (body == NULL || len == 0) return false;
    root = json_loadb(body, len, JSON_DISABLE_EOF_CHECK, NULL);
    if (root != NULL && (s = json_string_value(json_object_get(root, key))) != NULL &&
        strlen(s) < cap) {
        strcpy(out, s);
        ok = true;
    }
    json_decref(root);
    return ok;
}

/* sentMessages[0].id of a 200 or 409 body. */
static void sent_id(const char *body, size_t len, char *out, size_t cap)
{
    json_t *root;
    const char *s;

    out[0] = '\0';
    if (body == NULL || len == 0) return;
    root = json_loadb(body, len, 0, NULL);
    s = json_string_value(
        json_object_get(json_array_get(json_object_get(root, "sentMessages"), 0), "id"));
    if (s != NULL && strlen(s) < cap) strcpy(out, s);
    json_decref(root);
}

void line_classify_push(const oc_http_result_t *res, long timeout_ms, conn_class_t *out)
{
    char message[256];

    memset(out, 0, sizeof *out);
    switch (res->transport) {
    case OC_HTTP_TX_TIMEOUT:
        out->outcome = CONN_OUT_UNKNOWN;
        out->category = CAT(TIMEOUT);
        snprintf(out->detail, sizeof out->detail, "timed out after %ld ms", timeout_ms);
        return;
    case OC_HTTP_TX_CONNECT:
        out->outcome = CONN_OUT_RETRY;
        out->category = CAT(NETWORK_ERROR);
        snprintf(out->detail, sizeof out->detail, "could not connect to LINE");
        return;
    case OC_HTTP_TX_DROPPED:
        out->outcome = CONN_OUT_UNKNOWN;
        out->category = CAT(NETWORK_ERROR);
        snprintf(out->detail, sizeof out->detail, "connection to LINE lost after sending");
        return;
    case OC_HTTP_TX_OK:
        break;
    }
    /* The body's "message" matters only to rows that name one (errors): a success is parsed
     * once, for its id. */
    bool have_message = false;
    for (size_t i = 0; i < sizeof push_rows / sizeof push_rows[0]; i++) {
        const class_row_t *r = &push_rows[i];
        if (res->status < r->lo || res->status > r->hi) continue;
        if (r->message != NULL && !have_message) {
            line_json_string(res->body.data, res->body.len, "message", message, sizeof message);
            have_message = true;
        }
        if (r->message != NULL && strcmp(r->message, message) != 0) continue;
        out->outcome = r->outcome;
        out->category = r->category;
        out->auth_failed = r->auth_failed;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(out->detail, sizeof out->detail, r->detail, res->status);
#pragma GCC diagnostic pop
        if (r->outcome == CONN_OUT_SENT)
            sent_id(res->body.data, res->body.len, out->external_message_id,
                    sizeof out->external_message_id);
        return;
    }
}
