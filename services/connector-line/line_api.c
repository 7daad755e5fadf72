/* LINE Messaging API client over libcurl, and the data-driven classification of push answers. */
#include "line_api.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/persistence/v1/persistence.pb-c.h"
#include "omnichat/util.h"

#define CAT(name) OMNICHAT__PERSISTENCE__V1__ERROR_CATEGORY__ERROR_CATEGORY_##name
#define CONNECT_TIMEOUT_MAX_MS 5000L
#define LINE_TOKEN_HEADER_PREFIX "Authorization: Bearer "
#define LINE_TOKEN_HEADER_PREFIX_LEN (sizeof LINE_TOKEN_HEADER_PREFIX - 1)

struct line_api {
    char *base;
    oc_metric_t *latency;
    pthread_key_t handle_key; /* per-thread CURL easy handle: keeps its connections alive */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void handle_free(void *h)
{
    curl_easy_cleanup(h);
}

void line_http_result_init(line_http_result_t *r)
{
    memset(r, 0, sizeof *r);
    oc_buf_init(&r->body, LINE_BODY_MAX);
}

void line_http_result_dispose(line_http_result_t *r)
{
    if (r != NULL) oc_buf_dispose(&r->body);
}

line_api_t *line_api_create(const char *base, oc_metric_t *latency, oc_error_t *err)
{
    line_api_t *a;
    size_t n;

    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        oc_error_set(err, OC_E_INTERNAL, "libcurl: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    a = calloc(1, sizeof *a);
    if (a == NULL || (a->base = strdup(base)) == NULL) {
        free(a);
        oc_error_set(err, OC_E_NOMEM, "out of memory");
        return NULL;
    }
    n = strlen(a->base);
    while (n > 0 && a->base[n - 1] == '/')
        a->base[--n] = '\0';
    a->latency = latency;
    if (pthread_key_create(&a->handle_key, handle_free) != 0) {
        free(a->base);
        free(a);
        oc_error_set(err, OC_E_INTERNAL, "pthread_key_create failed");
        return NULL;
    }
    return a;
}

void line_api_destroy(line_api_t *a)
{
    if (a == NULL) return;
    /* Handles of threads still alive are freed by their thread's exit (the key destructor
     * only runs while the key exists), so free the calling thread's own one here. */
    CURL *h = pthread_getspecific(a->handle_key);
    if (h != NULL) {
        pthread_setspecific(a->handle_key, NULL);
        curl_easy_cleanup(h);
    }
    pthread_key_delete(a->handle_key);
    free(a->base);
    free(a);
}

static CURL *thread_handle(line_api_t *a)
{
    CURL *h = pthread_getspecific(a->handle_key);

    if (h != NULL) {
        /* Keeps live connections and the DNS cache; forgets every option. */
        curl_easy_reset(h);
        return h;
    }
    h = curl_easy_init();
    if (h != NULL && pthread_setspecific(a->handle_key, h) != 0) {
        curl_easy_cleanup(h);
        h = NULL;
    }
    return h;
}

static size_t on_body(char *p, size_t sz, size_t n, void *u)
{
    oc_buf_t *b = u;

    /* Past the cap the rest is dropped, not an error: only the start matters to us. */
    if (b->failed == OC_OK) oc_buf_append(b, p, sz * n);
    return sz * n;
}

static line_transport_t transport_of(CURL *h, CURLcode rc)
{
    long req_size = 0;

    if (rc == CURLE_OK) return LINE_TX_OK;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &req_size);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return LINE_TX_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        /* A connect timeout sent nothing: that is a plain network failure, safe to retry. */
        return req_size > 0 ? LINE_TX_TIMEOUT : LINE_TX_CONNECT;
    default:
        return req_size > 0 ? LINE_TX_DROPPED : LINE_TX_CONNECT;
    }
}

/*
 * One request. The headers are a hand-built curl_slist whose strings are ours, so the
 * Authorization line can be wiped after the transfer (curl_slist_append would keep an
 * unwiped copy).
 */
static oc_err_t perform(line_api_t *a, const char *token, size_t token_len, const char *path,
                        const char *endpoint, const char *post_body, size_t post_len,
                        const char *retry_key, long timeout_ms, line_http_result_t *res)
{
    char auth[LINE_TOKEN_HEADER_PREFIX_LEN + LINE_TOKEN_MAX + 1];
    char key_hdr[96];
    struct curl_slist h_auth, h_type, h_key, h_expect;
    struct curl_slist *headers = &h_auth;
    char *url = NULL;
    CURL *h;
    CURLcode rc;
    int64_t t0;
    oc_err_t ret = OC_OK;

    if (token_len > LINE_TOKEN_MAX || memchr(token, '\r', token_len) != NULL ||
        memchr(token, '\n', token_len) != NULL)
        return OC_E_INVALID;
    h = thread_handle(a);
    if (h == NULL) return OC_E_NOMEM;
    if (asprintf(&url, "%s%s", a->base, path) < 0) return OC_E_NOMEM;

    memcpy(auth, LINE_TOKEN_HEADER_PREFIX, LINE_TOKEN_HEADER_PREFIX_LEN);
    memcpy(auth + LINE_TOKEN_HEADER_PREFIX_LEN, token, token_len);
    auth[LINE_TOKEN_HEADER_PREFIX_LEN + token_len] = '\0';
    h_auth = (struct curl_slist){auth, &h_expect};
    h_expect = (struct curl_slist){(char *)"Expect:", NULL};
    if (post_body != NULL) {
        h_expect.next = &h_type;
        h_type = (struct curl_slist){(char *)"Content-Type: application/json", NULL};
        if (retry_key != NULL && retry_key[0] != '\0') {
            snprintf(key_hdr, sizeof key_hdr, "X-Line-Retry-Key: %s", retry_key);
            h_type.next = &h_key;
            h_key = (struct curl_slist){key_hdr, NULL};
        }
    }

    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < CONNECT_TIMEOUT_MAX_MS ? timeout_ms : CONNECT_TIMEOUT_MAX_MS);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "omnichat-connector-line/0.1");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &res->body);
    if (post_body != NULL) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post_body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)post_len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }

    t0 = oc_mono_us();
    rc = curl_easy_perform(h);
    res->latency_us = oc_mono_us() - t0;
    OPENSSL_cleanse(auth, sizeof auth);
    /* Nothing of ours may stay referenced by the reusable handle. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);

    res->transport = transport_of(h, rc);
    if (res->transport == LINE_TX_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
    oc_metric_observe(a->latency, (const char *const[]){endpoint}, (double)res->latency_us / 1e6);
    free(url);
    return ret;
}

oc_err_t line_api_push(line_api_t *a, const char *token, size_t token_len, const char *to,
                       const char *text, const char *retry_key, long timeout_ms,
                       line_http_result_t *res)
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
    rc = perform(a, token, token_len, "/v2/bot/message/push", "push", body.data, body.len,
                 retry_key, timeout_ms, res);
    oc_buf_dispose(&body);
    return rc;
}

oc_err_t line_api_get(line_api_t *a, const char *token, size_t token_len, const char *path,
                      const char *endpoint, long timeout_ms, line_http_result_t *res)
{
    return perform(a, token, token_len, path, endpoint, NULL, 0, NULL, timeout_ms, res);
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
    line_outcome_t outcome;
    int category;
    bool auth_failed;
    const char *detail;
} class_row_t;

static const class_row_t push_rows[] = {
    {200, 299, NULL, LINE_OUT_SENT, 0, false, ""},
    {409, 409, NULL, LINE_OUT_SENT, 0, false, ""}, /* retry key already accepted */
    {401, 401, NULL, LINE_OUT_FAILED, CAT(AUTH_ERROR), true,
     "LINE rejected the access token (401)"},
    {403, 403, NULL, LINE_OUT_FAILED, CAT(AUTH_ERROR), true, "LINE denied access to the API (403)"},
    {400, 400, "Failed to send messages", LINE_OUT_FAILED, CAT(RECIPIENT_ERROR), false,
     "LINE could not send to the recipient (400)"},
    {400, 400, NULL, LINE_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false,
     "LINE rejected the request (400)"},
    {413, 413, NULL, LINE_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false,
     "LINE rejected the request as too large (413)"},
    {429, 429, "You have reached your monthly limit.", LINE_OUT_FAILED, CAT(QUOTA_EXCEEDED), false,
     "LINE monthly message limit reached (429)"},
    {429, 429, NULL, LINE_OUT_RETRY, CAT(RATE_LIMIT_ERROR), false,
     "LINE rate limit exceeded (429)"},
    {500, 599, NULL, LINE_OUT_RETRY, CAT(PROVIDER_ERROR), false, "LINE answered %ld"},
    {400, 499, NULL, LINE_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false, "LINE answered %ld"},
    /* 1xx/3xx: nothing LINE documents; assume it was not executed, the key keeps it safe. */
    {0, 999, NULL, LINE_OUT_RETRY, CAT(PROVIDER_ERROR), false, "LINE answered unexpected %ld"},
};

const char *line_outcome_name(line_outcome_t o)
{
    switch (o) {
    case LINE_OUT_SENT:
        return "sent";
    case LINE_OUT_FAILED:
        return "failed";
    case LINE_OUT_RETRY:
        return "retry";
    case LINE_OUT_UNKNOWN:
        return "unknown";
    }
    return "unknown";
}

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

void line_classify_push(const line_http_result_t *res, long timeout_ms, line_class_t *out)
{
    char message[256];

    memset(out, 0, sizeof *out);
    switch (res->transport) {
    case LINE_TX_TIMEOUT:
        out->outcome = LINE_OUT_UNKNOWN;
        out->category = CAT(TIMEOUT);
        snprintf(out->detail, sizeof out->detail, "timed out after %ld ms", timeout_ms);
        return;
    case LINE_TX_CONNECT:
        out->outcome = LINE_OUT_RETRY;
        out->category = CAT(NETWORK_ERROR);
        snprintf(out->detail, sizeof out->detail, "could not connect to LINE");
        return;
    case LINE_TX_DROPPED:
        out->outcome = LINE_OUT_UNKNOWN;
        out->category = CAT(NETWORK_ERROR);
        snprintf(out->detail, sizeof out->detail, "connection to LINE lost after sending");
        return;
    case LINE_TX_OK:
        break;
    }
    line_json_string(res->body.data, res->body.len, "message", message, sizeof message);
    for (size_t i = 0; i < sizeof push_rows / sizeof push_rows[0]; i++) {
        const class_row_t *r = &push_rows[i];
        if (res->status < r->lo || res->status > r->hi) continue;
        if (r->message != NULL && strcmp(r->message, message) != 0) continue;
        out->outcome = r->outcome;
        out->category = r->category;
        out->auth_failed = r->auth_failed;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(out->detail, sizeof out->detail, r->detail, res->status);
#pragma GCC diagnostic pop
        if (r->outcome == LINE_OUT_SENT)
            sent_id(res->body.data, res->body.len, out->external_message_id,
                    sizeof out->external_message_id);
        return;
    }
}
