/* The one HTTP client: libcurl with a handle per thread, capped bodies, wiped secrets, and no
 * silent re-send. The only file of Omnichat that includes curl.h. */
#include "omnichat/http_client.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "omnichat/util.h"

#define CONNECT_TIMEOUT_MAX_MS 5000L
#define SECRET_MAX 4096
#define HEADER_LINE_MAX 256 /* the secret header's prefix */
#define EXTRA_HEADERS_MAX 16
#define BODY_MAX_DEFAULT 65536
#define REQUEST_BODY_MAX (4u << 20)

struct oc_http_client {
    char *base;
    char *user_agent;
    oc_metric_t *latency;
    bool reuse;
    bool resend_guard;
    pthread_key_t handle_key; /* per-thread easy handle: keeps its connections alive */
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

const char *oc_http_transport_name(oc_http_transport_t t)
{
    switch (t) {
    case OC_HTTP_TX_OK:
        return "ok";
    case OC_HTTP_TX_TIMEOUT:
        return "timeout";
    case OC_HTTP_TX_CONNECT:
        return "connect";
    case OC_HTTP_TX_DROPPED:
        return "dropped";
    }
    return "unknown";
}

void oc_http_result_init(oc_http_result_t *r, size_t body_max)
{
    memset(r, 0, sizeof *r);
    oc_buf_init(&r->body, body_max > 0 ? body_max : BODY_MAX_DEFAULT);
}

void oc_http_result_dispose(oc_http_result_t *r)
{
    if (r != NULL) oc_buf_dispose(&r->body);
}

oc_http_client_t *oc_http_client_create(const oc_http_client_opts_t *opts, oc_error_t *err)
{
    oc_http_client_t *c;
    size_t n;

    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        oc_error_set(err, OC_E_INTERNAL, "libcurl: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) goto oom;
    c->base = strdup(opts->base != NULL ? opts->base : "");
    c->user_agent = strdup(opts->user_agent != NULL ? opts->user_agent : "omnichat/0.1");
    if (c->base == NULL || c->user_agent == NULL) goto oom;
    n = strlen(c->base);
    while (n > 0 && c->base[n - 1] == '/')
        c->base[--n] = '\0';
    c->latency = opts->latency;
    c->reuse = opts->reuse_connections;
    c->resend_guard = true;
    /* One-shot clients (the tools) need no key: the process has only PTHREAD_KEYS_MAX. */
    if (c->reuse && pthread_key_create(&c->handle_key, handle_free) != 0) {
        free(c->base);
        free(c->user_agent);
        free(c);
        oc_error_set(err, OC_E_INTERNAL, "pthread_key_create failed");
        return NULL;
    }
    return c;
oom:
    if (c != NULL) {
        free(c->base);
        free(c->user_agent);
    }
    free(c);
    oc_error_set(err, OC_E_NOMEM, "out of memory");
    return NULL;
}

void oc_http_client_destroy(oc_http_client_t *c)
{
    CURL *h;

    if (c == NULL) return;
    if (c->reuse) {
        /* Handles of threads still alive are freed by their thread's exit (the key destructor
         * only runs while the key exists), so free the calling thread's own one here. */
        h = pthread_getspecific(c->handle_key);
        if (h != NULL) {
            pthread_setspecific(c->handle_key, NULL);
            curl_easy_cleanup(h);
        }
        pthread_key_delete(c->handle_key);
    }
    free(c->base);
    free(c->user_agent);
    free(c);
}

void oc__http_client_set_resend_guard(oc_http_client_t *c, bool on)
{
    c->resend_guard = on;
}

static CURL *take_handle(oc_http_client_t *c)
{
    CURL *h;

    if (!c->reuse) return curl_easy_init();
    h = pthread_getspecific(c->handle_key);
    if (h != NULL) {
        /* Keeps live connections and the DNS cache; forgets every option. */
        curl_easy_reset(h);
        return h;
    }
    h = curl_easy_init();
    if (h != NULL && pthread_setspecific(c->handle_key, h) != 0) {
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

/* Response headers the caller asked for. */
typedef struct capture {
    const char *const *names;
    oc_http_result_t *res;
} capture_t;

static size_t on_header(char *p, size_t sz, size_t n, void *u)
{
    capture_t *cap = u;
    size_t len = sz * n;

    for (size_t i = 0; cap->names != NULL && cap->names[i] != NULL && i < OC_HTTP_CAPTURE_MAX;
         i++) {
        size_t nl = strlen(cap->names[i]);
        if (len <= nl || p[nl] != ':' || strncasecmp(p, cap->names[i], nl) != 0) continue;
        const char *v = p + nl + 1;
        size_t vl = len - nl - 1;
        while (vl > 0 && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        snprintf(cap->res->captured[i], OC_HTTP_CAPTURE_LEN, "%.*s", (int)vl, v);
    }
    return len;
}

/* The request body as libcurl reads it, and the guard against reading it twice. */
typedef struct body_src {
    const char *data;
    size_t len, pos;
    bool refused; /* libcurl asked to rewind a body it had already read */
} body_src_t;

static size_t on_read(char *buf, size_t sz, size_t n, void *u)
{
    body_src_t *s = u;
    size_t k = s->len - s->pos;

    if (k > sz * n) k = sz * n;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return k;
}

/*
 * libcurl rewinds the body only to send the whole request again: on a new connection after
 * the reused one died (Curl_retry_request), which would be a second copy the caller never
 * sees. A rewind before anything was read is harmless and allowed.
 */
static int on_seek(void *u, curl_off_t offset, int origin)
{
    body_src_t *s = u;

    if (origin == SEEK_SET && offset == 0 && s->pos == 0) return CURL_SEEKFUNC_OK;
    s->refused = true;
    return CURL_SEEKFUNC_FAIL;
}

static oc_http_transport_t transport_of(CURL *h, CURLcode rc, bool refused)
{
    long req_size = 0;

    if (rc == CURLE_OK) return OC_HTTP_TX_OK;
    /* The first copy went out on the connection that died: it may have been executed. */
    if (refused || rc == CURLE_SEND_FAIL_REWIND) return OC_HTTP_TX_DROPPED;
    curl_easy_getinfo(h, CURLINFO_REQUEST_SIZE, &req_size);
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return OC_HTTP_TX_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        /* A connect timeout sent nothing: that is a plain network failure, safe to retry. */
        return req_size > 0 ? OC_HTTP_TX_TIMEOUT : OC_HTTP_TX_CONNECT;
    default:
        return req_size > 0 ? OC_HTTP_TX_DROPPED : OC_HTTP_TX_CONNECT;
    }
}

static bool secret_ok(const oc_http_call_t *call)
{
    if (call->secret_in == OC_HTTP_SECRET_NONE) return true;
    if (call->secret == NULL || call->secret_name == NULL || call->secret_len > SECRET_MAX)
        return false;
    return memchr(call->secret, '\r', call->secret_len) == NULL &&
           memchr(call->secret, '\n', call->secret_len) == NULL &&
           memchr(call->secret, '\0', call->secret_len) == NULL;
}

/* Appends s percent-encoded for a form body (RFC 3986 unreserved characters stay). */
static bool has_header(const char *const *headers, const char *prefix)
{
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        if (strncasecmp(headers[i], prefix, strlen(prefix)) == 0) return true;
    return false;
}

/*
 * The headers are a hand-built curl_slist whose strings are ours, so the secret line can be
 * wiped after the transfer (curl_slist_append would keep an unwiped copy).
 */
oc_err_t oc_http_client_call(oc_http_client_t *c, const oc_http_call_t *call, oc_http_result_t *res)
{
    char secret_hdr[HEADER_LINE_MAX + SECRET_MAX + 1];
    char type_hdr[HEADER_LINE_MAX];
    struct curl_slist nodes[EXTRA_HEADERS_MAX + 3];
    size_t nn = 0;
    bool post;
    oc_buf_t body; /* the body as sent: a secret buffer, wiped on dispose */
    body_src_t src;
    capture_t cap = {call->capture, res};
    char *url = NULL;
    CURL *h = NULL;
    CURLcode rc;
    int64_t t0;
    oc_err_t ret = OC_OK;

    secret_hdr[0] = '\0';
    oc_buf_init_secret(&body, REQUEST_BODY_MAX);
    if (call->method == NULL || call->path == NULL) return OC_E_INVALID;
    post = strcmp(call->method, "POST") == 0;
    if (!post && strcmp(call->method, "GET") != 0) return OC_E_INVALID;
    if (!secret_ok(call)) return OC_E_INVALID;
    if (call->secret_in == OC_HTTP_SECRET_FORM && !post) return OC_E_INVALID;
    if (asprintf(&url, "%s%s", c->base, call->path) < 0) return OC_E_NOMEM;

    /* Header lines: the secret (if it travels there), "Expect:" (no 100-continue round trip),
     * the content type, then the caller's. */
    if (call->secret_in == OC_HTTP_SECRET_HEADER) {
        size_t plen = strlen(call->secret_name);
        if (plen >= HEADER_LINE_MAX) {
            ret = OC_E_INVALID;
            goto out;
        }
        memcpy(secret_hdr, call->secret_name, plen);
        memcpy(secret_hdr + plen, call->secret, call->secret_len);
        secret_hdr[plen + call->secret_len] = '\0';
        nodes[nn++] = (struct curl_slist){secret_hdr, NULL};
    }
    nodes[nn++] = (struct curl_slist){(char *)"Expect:", NULL};
    if (post && !has_header(call->headers, "Content-Type:")) {
        const char *type = call->content_type != NULL ? call->content_type
                           : call->secret_in == OC_HTTP_SECRET_FORM
                               ? "application/x-www-form-urlencoded"
                               : "application/json";
        snprintf(type_hdr, sizeof type_hdr, "Content-Type: %s", type);
        nodes[nn++] = (struct curl_slist){type_hdr, NULL};
    }
    for (size_t i = 0; call->headers != NULL && call->headers[i] != NULL; i++) {
        if (i >= EXTRA_HEADERS_MAX) {
            ret = OC_E_INVALID;
            goto out;
        }
        if (strcasecmp(call->headers[i], "Expect:") != 0)
            nodes[nn++] = (struct curl_slist){(char *)call->headers[i], NULL};
    }
    for (size_t i = 0; i + 1 < nn; i++)
        nodes[i].next = &nodes[i + 1];

    if (post) {
        if (call->body_len > 0) oc_buf_append(&body, call->body, call->body_len);
        if (call->secret_in == OC_HTTP_SECRET_FORM) {
            if (call->body_len > 0) oc_buf_append(&body, "&", 1);
            oc_buf_append_form_encoded(&body, call->secret_name, strlen(call->secret_name));
            oc_buf_append(&body, "=", 1);
            oc_buf_append_form_encoded(&body, call->secret, call->secret_len);
        }
        if (body.failed != OC_OK) {
            ret = body.failed == OC_E_TOO_LARGE ? OC_E_INVALID : OC_E_NOMEM;
            goto out;
        }
    }

    h = take_handle(c);
    if (h == NULL) {
        ret = OC_E_NOMEM;
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, call->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     call->timeout_ms < CONNECT_TIMEOUT_MAX_MS ? call->timeout_ms
                                                               : CONNECT_TIMEOUT_MAX_MS);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nodes);
    curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &res->body);
    if (call->capture != NULL) {
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &cap);
    }
    src = (body_src_t){body.data != NULL ? body.data : "", body.len, 0, false};
    if (post && c->resend_guard) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)src.len);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &src);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &src);
    } else if (post) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, src.data);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)src.len);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }

    t0 = oc_mono_us();
    rc = curl_easy_perform(h);
    res->latency_us = oc_mono_us() - t0;
    res->resend_refused = src.refused;
    res->transport = transport_of(h, rc, src.refused);
    if (res->transport == OC_HTTP_TX_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
    /* Nothing of this call may stay referenced by a reusable handle. */
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(h, CURLOPT_READDATA, NULL);
    curl_easy_setopt(h, CURLOPT_SEEKDATA, NULL);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, NULL);
    if (!c->reuse) curl_easy_cleanup(h);
    oc_metric_observe(c->latency,
                      (const char *const[]){call->endpoint != NULL ? call->endpoint : "other"},
                      (double)res->latency_us / 1e6);
out:
    OPENSSL_cleanse(secret_hdr, sizeof secret_hdr);
    oc_buf_dispose(&body);
    free(url);
    return ret;
}
