/* The one HTTP client of Omnichat (libcurl underneath): provider APIs, simulators, tools. */
#ifndef OMNICHAT_HTTP_CLIENT_H
#define OMNICHAT_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"
#include "omnichat/metrics.h"

/* How the transport ended, independent of any HTTP status: "could anything have been sent?" */
typedef enum oc_http_transport {
    OC_HTTP_TX_OK = 0,  /* an HTTP status arrived (status and body are set) */
    OC_HTTP_TX_TIMEOUT, /* the request was sent (at least in part) and no answer came in time */
    OC_HTTP_TX_CONNECT, /* nothing was sent: resolve, connect or TLS failure, connect timeout */
    OC_HTTP_TX_DROPPED  /* the connection broke after the request was sent (empty reply, reset,
                           or a re-send on a new connection that the client refused) */
} oc_http_transport_t;

/* "ok", "timeout", "connect", "dropped". */
const char *oc_http_transport_name(oc_http_transport_t t);

/* Where a secret of a call travels. Either way the buffer that carries it is wiped after use. */
typedef enum oc_http_secret_in {
    OC_HTTP_SECRET_NONE = 0,
    OC_HTTP_SECRET_HEADER, /* one header line: secret_name is its prefix, "Authorization: Bearer "
                            */
    OC_HTTP_SECRET_FORM    /* one form field appended to an x-www-form-urlencoded body:
                              secret_name is the field, "access_token" (URL-encoded value) */
} oc_http_secret_in_t;

typedef struct oc_http_call {
    const char *method;         /* "GET" or "POST" */
    const char *path;           /* appended to the client's base; a full URL when the base is "" */
    const char *endpoint;       /* label of the latency histogram ("push"); NULL: "other" */
    const char *const *headers; /* extra header lines, NULL-terminated; never secrets */
    const char *content_type;   /* POST only; NULL: application/json (form with a form secret) */
    const char *body;           /* POST only */
    size_t body_len;
    oc_http_secret_in_t secret_in;
    const char *secret_name;
    const char *secret; /* not NUL-terminated: secret_len bytes, no CR or LF */
    size_t secret_len;
    long timeout_ms; /* the whole exchange; the connect phase at most 5 s of it */
    /* Response headers to keep (names, case-insensitive, NULL-terminated, at most
     * OC_HTTP_CAPTURE_MAX): a provider's hints such as Retry-After, or request ids. */
    const char *const *capture;
} oc_http_call_t;

#define OC_HTTP_CAPTURE_MAX 4
#define OC_HTTP_CAPTURE_LEN 128

typedef struct oc_http_result {
    oc_http_transport_t transport;
    long status;
    oc_buf_t body; /* at most the client's body_max bytes; the rest is dropped, not an error */
    int64_t latency_us;
    bool resend_refused; /* libcurl wanted to send the body again on a new connection */
    /* captured[i]: the value of call->capture[i] ("" when absent; cut to fit) */
    char captured[OC_HTTP_CAPTURE_MAX][OC_HTTP_CAPTURE_LEN];
} oc_http_result_t;

/* A result with an empty body capped at body_max bytes (0: 64 KiB). */
void oc_http_result_init(oc_http_result_t *r, size_t body_max);
void oc_http_result_dispose(oc_http_result_t *r);

typedef struct oc_http_client oc_http_client_t;

typedef struct oc_http_client_opts {
    const char *base;       /* "https://api.line.me" (trailing slashes dropped); "" or NULL: none */
    const char *user_agent; /* NULL: "omnichat/0.1" */
    oc_metric_t *latency;   /* optional histogram with one label, the call's endpoint */
    bool reuse_connections; /* keep-alive through a handle per thread (default false: the
                               tools' one-shot calls); services set it */
} oc_http_client_opts_t;

/*
 * A client. libcurl is initialised once per process, whoever asks first. With
 * reuse_connections each thread that calls gets its own easy handle, kept for the thread's
 * life (its connections and DNS cache with it). NULL with err. Thread-safe.
 */
oc_http_client_t *oc_http_client_create(const oc_http_client_opts_t *opts, oc_error_t *err);
/* Frees the client and the calling thread's handle; other threads' handles go with their
 * thread. NULL is fine. */
void oc_http_client_destroy(oc_http_client_t *c);

/*
 * One exchange. The outcome is in *res (initialised by the caller); the return is OC_OK unless
 * the request could not be built (OC_E_INVALID: a secret with CR/LF or over 4 KiB, a method
 * other than GET/POST; OC_E_NOMEM; OC_E_INTERNAL), in which case nothing was sent.
 *
 * No request is ever sent twice behind the caller's back: libcurl 7.88 re-sends a request
 * whose reused keep-alive connection died, and offers no option against it. A POST body is
 * therefore given through a read callback whose seek callback refuses to rewind once any of
 * the body was read, so such a re-send fails (CURLE_SEND_FAIL_REWIND) and is reported as
 * OC_HTTP_TX_DROPPED with resend_refused: the caller sees, counts and classifies every request
 * that may have reached the server. A GET has no body and may be re-sent (it changes nothing).
 *
 * The secret is copied only into a header line or a body buffer of this call, wiped before
 * return; it never reaches a URL or a log. Blocks. Thread-safe.
 */
oc_err_t oc_http_client_call(oc_http_client_t *c, const oc_http_call_t *call,
                             oc_http_result_t *res);

/* For tests only: false turns the re-send guard off (the body goes through CURLOPT_POSTFIELDS,
 * as before), so a test can show that it detects libcurl's silent re-send. */
void oc__http_client_set_resend_guard(oc_http_client_t *c, bool on);

#endif
