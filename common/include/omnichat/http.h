/* Embedded HTTP/1.1 server (our own, over epoll) for webhooks, /metrics and /healthz. */
#ifndef OMNICHAT_HTTP_H
#define OMNICHAT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"

typedef struct oc_http_request {
    const char *method; /* "GET", "POST", ... */
    /* Path exactly as sent, without the query string, never percent-decoded: routing sees
     * what the client wrote. Paths holding %2F, %5C, %00, a bad escape, a backslash or a dot
     * segment are refused with 400 before any route is looked up. */
    const char *path;
    const char *body; /* raw bytes exactly as received (NUL-terminated for convenience) */
    size_t body_len;
    const char *remote_addr;
    void *internal; /* for oc_http_header / oc_http_query */
    /* In on_complete only (NULL in handlers): the response sent, its headers readable with
     * oc_http_response_header_value (the body is gone by then). */
    const struct oc_http_response *response;
} oc_http_request_t;

/* Request header by case-insensitive name; NULL when absent. Valid during the handler. */
const char *oc_http_header(const oc_http_request_t *r, const char *name);
/* Decoded query parameter ('+' and %XX decoded), name matched case-sensitively, first
 * occurrence wins; "" for a bare "?name"; NULL when absent. Valid during the handler. */
const char *oc_http_query(const oc_http_request_t *r, const char *name);

#define OC_HTTP_MAX_RESP_HEADERS 8

struct oc_http_response {
    int status;               /* default 200 */
    const char *content_type; /* static string; default "application/json" */
    oc_buf_t body;            /* append the body here (max 16 MiB) */
    struct {
        char name[64];
        char value[256];
    } headers[OC_HTTP_MAX_RESP_HEADERS];
    int nheaders;
    bool drop_connection; /* close the connection without any response (simulators) */
};
typedef struct oc_http_response oc_http_response_t;

/* Adds a response header (ignored past OC_HTTP_MAX_RESP_HEADERS or when too long). */
void oc_http_response_header(oc_http_response_t *resp, const char *name, const char *value);
/* A header added with oc_http_response_header, by case-insensitive name; NULL when absent. */
const char *oc_http_response_header_value(const oc_http_response_t *resp, const char *name);
/* Sets status and a JSON body {"error": reason} — the usual 4xx/5xx answer. */
void oc_http_response_error(oc_http_response_t *resp, int status, const char *reason);

/* Handlers may block; they run on the server's thread pool, never on the I/O thread. */
typedef void (*oc_http_handler_fn)(void *user, const oc_http_request_t *req,
                                   oc_http_response_t *resp);

typedef struct oc_http_route {
    const char *method; /* NULL: any method */
    const char *path;   /* exact path, or a prefix when prefix is true ("/webhooks/line/") */
    bool prefix;
    oc_http_handler_fn handler;
    void *user;
} oc_http_route_t;

typedef struct oc_http_server_opts {
    const char *listen; /* "127.0.0.1:8081"; port 0 picks a free port */
    int threads;        /* thread pool size; default 8 */
    size_t max_body;    /* larger bodies get 413 before any handler runs; default 1 MiB */
    int timeout_s;      /* idle keep-alive connection, and a stalled response write; default 30 */
    /* Whole-request deadlines, not idle timeouts: a client trickling one byte a second is cut
     * off all the same (408, then close). */
    int head_timeout_ms; /* request line and headers, from their first byte; default 10000 */
    int body_timeout_ms; /* the whole body, from the end of the head; default 30000 */
    /* Connection caps. Connections past them are closed at accept. The overall cap is further
     * held below RLIMIT_NOFILE (soft) minus a reserve, read at start. */
    int max_connections;        /* default 4096 */
    int max_connections_per_ip; /* default 256 */
    /* One thread per connection instead of a pool (threads is then ignored): a handler that
     * sleeps on purpose (a simulator's injected delay) then never holds up requests arriving on
     * other keep-alive connections. Services keep the pool. */
    bool thread_per_connection;
    const oc_http_route_t *routes; /* first match wins; must outlive the server */
    size_t nroutes;
    /* Optional, after each response (metrics, access log); never sees the body (req->body is
     * NULL). Runs on handler threads, concurrently, and on the I/O thread for answers given
     * before any handler (400, 404, 405, 413, 431, 501...; method and path are "" when the
     * request line itself was bad): must be thread-safe and quick. status is 0 when a handler
     * asked for drop_connection. latency runs from the request headers to the response being
     * queued. A connection cut off by a deadline (408) or a cap is not reported. */
    void (*on_complete)(void *user, const oc_http_request_t *req, int status, int64_t latency_us);
    void *user;
} oc_http_server_opts_t;

typedef struct oc_http_server oc_http_server_t;

/*
 * Creates and starts a server. A path with no route is 404, a route matched on path but not
 * method is 405 with Allow. Requests that HTTP/1.1 leaves ambiguous (RFC 9112: differing
 * Content-Length values, Content-Length with Transfer-Encoding, obs-fold, bad framing) get 400
 * and the connection is closed; a transfer coding other than chunked gets 501. listen is
 * "a.b.c.d:port", "[v6]:port", or "*:port" / ":port" for every IPv4 address. Returns NULL with err
 * on failure: OC_E_CONFIG for a bad listen address or option, OC_E_IO when the server cannot start
 * (e.g. port busy; the reason in err). A handler that cannot build its response (body over 16 MiB,
 * OOM) yields a 500.
 */
oc_http_server_t *oc_http_server_start(const oc_http_server_opts_t *opts, oc_error_t *err);
/* The bound port (the real one when opts->listen asked for port 0). */
int oc_http_server_port(const oc_http_server_t *s);
/* Stops accepting, waits for running handlers, frees. NULL is fine. */
void oc_http_server_stop(oc_http_server_t *s);

#endif
