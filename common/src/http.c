/* Embedded HTTP server over libmicrohttpd: routing, bounded bodies, blocking handlers. */
#include "omnichat/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "omnichat/util.h"

#define DEFAULT_THREADS 8
#define DEFAULT_MAX_BODY ((size_t)1 << 20)
#define DEFAULT_TIMEOUT_S 30
#define RESP_BODY_MAX ((size_t)16 << 20)
/* After a chunked body passed max_body we keep reading (and dropping) this much more so a
 * client that stops soon still gets its 413; past that it is a flood and we just close. */
#define DISCARD_MAX ((size_t)1 << 20)
#define ALLOW_MAX 128

struct oc_http_server {
    struct MHD_Daemon *daemon;
    const oc_http_route_t *routes;
    size_t nroutes;
    size_t max_body;
    void (*on_complete)(void *user, const oc_http_request_t *req, int status, int64_t latency_us);
    void *user;
    int port;
    /* MHD reports why it could not start only through its logger; we keep the first message
     * written by the starting thread and ignore the rest (common/ does not log by itself). */
    pthread_t starter;
    char start_err[OC_ERROR_MSG_MAX];
};

/* Per-request state, from the headers until MHD reports the request as completed. */
typedef struct req_ctx {
    const oc_http_route_t *route;
    oc_buf_t body;
    size_t discarded;
    bool too_large;
    int64_t start_us;
    char remote[INET6_ADDRSTRLEN];
} req_ctx_t;

/* ---- responses ---- */

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

void oc_http_response_header(oc_http_response_t *resp, const char *name, const char *value)
{
    if (!resp || !name || !value || resp->nheaders >= OC_HTTP_MAX_RESP_HEADERS) return;
    size_t nl = strlen(name), vl = strlen(value);
    if (nl == 0 || nl >= sizeof resp->headers[0].name || vl >= sizeof resp->headers[0].value)
        return;
    /* A CR or LF would let a caller-supplied value split the response (header injection). */
    if (has_crlf(name) || has_crlf(value)) return;
    memcpy(resp->headers[resp->nheaders].name, name, nl + 1);
    memcpy(resp->headers[resp->nheaders].value, value, vl + 1);
    resp->nheaders++;
}

void oc_http_response_error(oc_http_response_t *resp, int status, const char *reason)
{
    if (!resp) return;
    resp->status = status;
    resp->content_type = "application/json";
    oc_buf_reset(&resp->body);
    oc_buf_appends(&resp->body, "{\"error\":\"");
    if (reason) oc_buf_append_json_str(&resp->body, reason, strlen(reason));
    oc_buf_appends(&resp->body, "\"}");
}

static void response_init(oc_http_response_t *resp)
{
    memset(resp, 0, sizeof *resp);
    resp->status = 200;
    resp->content_type = "application/json";
    oc_buf_init(&resp->body, RESP_BODY_MAX);
}

/* Hands resp to MHD (the body memory moves to MHD); resp->status ends as the status sent.
 * Returns MHD_NO when nothing could be queued, which makes MHD close the connection: the best
 * we can do then. */
static enum MHD_Result send_response(struct MHD_Connection *conn, oc_http_response_t *resp)
{
    if (resp->body.failed != OC_OK || resp->status < 100 || resp->status > 999) {
        /* A truncated JSON body would be worse than an honest 500. */
        oc_buf_dispose(&resp->body);
        oc_buf_init(&resp->body, RESP_BODY_MAX);
        resp->nheaders = 0;
        oc_http_response_error(resp, 500, "internal error");
    }
    size_t len = 0;
    char *data = oc_buf_detach(&resp->body, &len);
    struct MHD_Response *r;
    if (data)
        r = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    else
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            resp->content_type ? resp->content_type : "application/json");
    for (int i = 0; i < resp->nheaders && i < OC_HTTP_MAX_RESP_HEADERS; i++)
        MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r); /* MHD holds its own reference once queued */
    return ret;
}

/* ---- requests ---- */

const char *oc_http_header(const oc_http_request_t *r, const char *name)
{
    if (!r || !r->internal || !name) return NULL;
    /* MHD compares header names case-insensitively, as HTTP wants. */
    return MHD_lookup_connection_value((struct MHD_Connection *)r->internal, MHD_HEADER_KIND, name);
}

typedef struct query_find {
    const char *name;
    size_t name_len;
    const char *value;
    bool found;
} query_find_t;

static enum MHD_Result query_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)value_size;
    query_find_t *q = cls;
    if (key_size != q->name_len || memcmp(key, q->name, key_size) != 0) return MHD_YES;
    q->value = value ? value : "";
    q->found = true;
    return MHD_NO;
}

const char *oc_http_query(const oc_http_request_t *r, const char *name)
{
    if (!r || !r->internal || !name) return NULL;
    /* MHD's own lookup ignores case for every kind of value; query names are case-sensitive
     * (hub.verify_token is not HUB.VERIFY_TOKEN), so we walk the arguments ourselves. */
    query_find_t q = {.name = name, .name_len = strlen(name)};
    MHD_get_connection_values_n((struct MHD_Connection *)r->internal, MHD_GET_ARGUMENT_KIND,
                                query_iter, &q);
    return q.found ? q.value : NULL;
}

static void remote_addr(struct MHD_Connection *conn, char out[INET6_ADDRSTRLEN])
{
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  INET6_ADDRSTRLEN);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  INET6_ADDRSTRLEN);
}

/* remote is NULL when not yet known (early answers): looked up only if someone listens. */
static void complete(oc_http_server_t *s, const char *method, const char *path, const char *remote,
                     struct MHD_Connection *conn, int status, int64_t start_us)
{
    if (!s->on_complete) return;
    char buf[INET6_ADDRSTRLEN];
    if (!remote) {
        remote_addr(conn, buf);
        remote = buf;
    }
    oc_http_request_t req = {.method = method,
                             .path = path,
                             .body = NULL,
                             .body_len = 0,
                             .remote_addr = remote,
                             .internal = conn};
    s->on_complete(s->user, &req, status, oc_mono_us() - start_us);
}

static bool path_matches(const oc_http_route_t *rt, const char *path)
{
    if (!rt->path) return false;
    if (rt->prefix) return strncmp(path, rt->path, strlen(rt->path)) == 0;
    return strcmp(path, rt->path) == 0;
}

/* First route matching path and method; when only the path matches, fills allow with the
 * methods that would have matched, for the 405's Allow header. */
static const oc_http_route_t *route_find(const oc_http_server_t *s, const char *method,
                                         const char *path, char *allow, size_t allow_cap)
{
    size_t alen = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < s->nroutes; i++) {
        const oc_http_route_t *rt = &s->routes[i];
        if (!path_matches(rt, path)) continue;
        if (!rt->method || strcmp(rt->method, method) == 0) return rt;
        /* Skip methods already listed by an earlier route on an overlapping path. */
        size_t ml = strlen(rt->method);
        if (ml == 0) continue;
        bool dup = false;
        for (const char *p = allow; (p = strstr(p, rt->method)) != NULL; p += ml) {
            if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0')) {
                dup = true;
                break;
            }
        }
        if (dup) continue;
        int n = snprintf(allow + alen, allow_cap - alen, "%s%s", alen ? ", " : "", rt->method);
        if (n > 0 && (size_t)n < allow_cap - alen)
            alen += (size_t)n;
        else
            allow[alen] = '\0';
    }
    return NULL;
}

/* Answers straight from the headers callback: MHD then skips the body and closes the
 * connection after the response, so an unwanted upload is never read. */
static enum MHD_Result early_error(oc_http_server_t *s, struct MHD_Connection *conn,
                                   const char *method, const char *path, int status,
                                   const char *reason, const char *allow, int64_t start_us)
{
    oc_http_response_t resp;
    response_init(&resp);
    oc_http_response_error(&resp, status, reason);
    if (allow) oc_http_response_header(&resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = send_response(conn, &resp);
    oc_buf_dispose(&resp.body);
    complete(s, method, path, NULL, conn, ret == MHD_YES ? status : 0, start_us);
    return ret;
}

/* Content-Length when the client sent a valid one; -1 otherwise (chunked or absent). */
static long long content_length(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl || !*cl) return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(cl, &end, 10);
    if (errno || *end || v < 0) return -1;
    return v;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **req_cls)
{
    (void)version;
    oc_http_server_t *s = cls;
    req_ctx_t *ctx = *req_cls;

    if (!ctx) {
        /* First call: only the headers are in. Route now so that 404/405/413 never wait for
         * (or buffer) a body. */
        int64_t start = oc_mono_us();
        char allow[ALLOW_MAX];
        const oc_http_route_t *rt = route_find(s, method, url, allow, sizeof allow);
        if (!rt) {
            if (allow[0])
                return early_error(s, conn, method, url, 405, "method not allowed", allow, start);
            return early_error(s, conn, method, url, 404, "not found", NULL, start);
        }
        long long cl = content_length(conn);
        if (cl >= 0 && (unsigned long long)cl > s->max_body)
            return early_error(s, conn, method, url, 413, "request body too large", NULL, start);
        ctx = calloc(1, sizeof *ctx);
        if (!ctx) return MHD_NO;
        ctx->route = rt;
        ctx->start_us = start;
        oc_buf_init(&ctx->body, s->max_body);
        remote_addr(conn, ctx->remote);
        *req_cls = ctx;
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        /* A body chunk. Going past max_body here means a chunked upload (a Content-Length
         * too big was refused above); MHD cannot queue a response in the middle of a body,
         * so drop the rest and answer at the end. */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!ctx->too_large) {
            oc_err_t e = oc_buf_append(&ctx->body, upload_data, n);
            if (e == OC_E_TOO_LARGE) {
                ctx->too_large = true;
                oc_buf_dispose(&ctx->body);
            } else if (e != OC_OK) {
                return MHD_NO; /* OOM: nothing sane to answer with */
            }
        } else {
            ctx->discarded += n;
            if (ctx->discarded > DISCARD_MAX) return MHD_NO;
        }
        return MHD_YES;
    }

    /* Final call: the whole request is in. */
    if (ctx->too_large)
        return early_error(s, conn, method, url, 413, "request body too large", NULL,
                           ctx->start_us);

    oc_http_request_t req = {
        .method = method,
        .path = url,
        .body = ctx->body.data ? ctx->body.data : "",
        .body_len = ctx->body.len,
        .remote_addr = ctx->remote,
        .internal = conn,
    };
    oc_http_response_t resp;
    response_init(&resp);
    ctx->route->handler(ctx->route->user, &req, &resp);

    enum MHD_Result ret;
    int status;
    if (resp.drop_connection) {
        ret = MHD_NO; /* MHD closes the socket without writing anything */
        status = 0;
    } else {
        ret = send_response(conn, &resp);
        status = ret == MHD_YES ? resp.status : 0;
    }
    oc_buf_dispose(&resp.body);
    complete(s, method, url, ctx->remote, conn, status, ctx->start_us);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req_ctx_t *ctx = *req_cls;
    if (!ctx) return;
    oc_buf_dispose(&ctx->body);
    free(ctx);
    *req_cls = NULL;
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    oc_http_server_t *s = cls;
    if (!pthread_equal(pthread_self(), s->starter) || s->start_err[0]) return;
    vsnprintf(s->start_err, sizeof s->start_err, fmt, ap);
    size_t n = strlen(s->start_err);
    while (n > 0 && (s->start_err[n - 1] == '\n' || s->start_err[n - 1] == '.'))
        s->start_err[--n] = '\0';
}

/* ---- listen address ---- */

typedef struct listen_addr {
    struct sockaddr_storage ss;
    bool v6;
    uint16_t port;
} listen_addr_t;

static oc_err_t parse_listen(const char *listen, listen_addr_t *out, oc_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (!listen || !*listen) return oc_error_set(err, OC_E_CONFIG, "listen: empty address");
    const char *colon;
    char host[INET6_ADDRSTRLEN + 1];
    size_t hlen;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':')
            return oc_error_set(err, OC_E_CONFIG, "listen: expected [addr]:port: %s", listen);
        hlen = (size_t)(close - listen - 1);
        if (hlen == 0 || hlen >= sizeof host)
            return oc_error_set(err, OC_E_CONFIG, "listen: bad IPv6 address: %s", listen);
        memcpy(host, listen + 1, hlen);
        colon = close + 1;
        out->v6 = true;
    } else {
        colon = strrchr(listen, ':');
        if (!colon) return oc_error_set(err, OC_E_CONFIG, "listen: expected host:port: %s", listen);
        hlen = (size_t)(colon - listen);
        if (hlen >= sizeof host)
            return oc_error_set(err, OC_E_CONFIG, "listen: bad address: %s", listen);
        memcpy(host, listen, hlen);
    }
    host[hlen] = '\0';

    const char *p = colon + 1;
    if (!*p) return oc_error_set(err, OC_E_CONFIG, "listen: missing port: %s", listen);
    unsigned long port = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || port > 65535)
            return oc_error_set(err, OC_E_CONFIG, "listen: bad port: %s", listen);
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535) return oc_error_set(err, OC_E_CONFIG, "listen: bad port: %s", listen);
    out->port = (uint16_t)port;

    if (out->v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(out->port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return oc_error_set(err, OC_E_CONFIG, "listen: bad IPv6 address: %s", listen);
        return OC_OK;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)&out->ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(out->port);
    if (hlen == 0 || strcmp(host, "*") == 0) {
        a->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (strcmp(host, "localhost") == 0) {
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
        /* No DNS: a listen address that resolves differently on another node is a trap. */
        return oc_error_set(err, OC_E_CONFIG, "listen: not a numeric IPv4 address: %s", listen);
    }
    return OC_OK;
}

/* ---- lifecycle ---- */

oc_http_server_t *oc_http_server_start(const oc_http_server_opts_t *opts, oc_error_t *err)
{
    oc_http_server_t *s = NULL;
    if (!opts) {
        oc_error_set(err, OC_E_INVALID, "http server: no options");
        goto fail;
    }
    if (opts->nroutes > 0 && !opts->routes) {
        oc_error_set(err, OC_E_CONFIG, "http server: nroutes without routes");
        goto fail;
    }
    for (size_t i = 0; i < opts->nroutes; i++) {
        if (!opts->routes[i].path || !opts->routes[i].handler) {
            oc_error_set(err, OC_E_CONFIG, "http server: route %zu has no path or handler", i);
            goto fail;
        }
    }
    listen_addr_t la;
    if (parse_listen(opts->listen, &la, err) != OC_OK) goto fail;
    if (opts->threads < 0 || opts->timeout_s < 0) {
        oc_error_set(err, OC_E_CONFIG, "http server: negative threads or timeout");
        goto fail;
    }

    s = calloc(1, sizeof *s);
    if (!s) {
        oc_error_set(err, OC_E_NOMEM, "http server: out of memory");
        goto fail;
    }
    s->routes = opts->routes;
    s->nroutes = opts->nroutes;
    s->max_body = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
    s->on_complete = opts->on_complete;
    s->user = opts->user;
    s->starter = pthread_self();

    unsigned threads = opts->threads > 0 ? (unsigned)opts->threads : DEFAULT_THREADS;
    unsigned timeout = opts->timeout_s > 0 ? (unsigned)opts->timeout_s : DEFAULT_TIMEOUT_S;
    /* MHD_USE_AUTO picks epoll on Linux. Each pool thread polls its own share of the
     * connections and runs their handlers itself, so a blocking handler holds one thread. */
    unsigned flags = MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (la.v6) flags |= MHD_USE_IPv6;
    if (opts->thread_per_connection)
        s->daemon =
            MHD_start_daemon(flags | MHD_USE_THREAD_PER_CONNECTION, la.port, NULL, NULL, on_access,
                             s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_SOCK_ADDR,
                             (const struct sockaddr *)&la.ss, MHD_OPTION_CONNECTION_TIMEOUT,
                             timeout, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    else
        s->daemon =
            MHD_start_daemon(flags, la.port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER,
                             on_mhd_log, s, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&la.ss,
                             MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_TIMEOUT,
                             timeout, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->daemon) {
        oc_error_set(err, OC_E_IO, "could not start http server on %s: %s", opts->listen,
                     s->start_err[0] ? s->start_err : "libmicrohttpd refused to start");
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di && di->port ? di->port : la.port;
    return s;

fail:
    free(s);
    return NULL;
}

int oc_http_server_port(const oc_http_server_t *s)
{
    return s ? s->port : 0;
}

void oc_http_server_stop(oc_http_server_t *s)
{
    if (!s) return;
    /* Joins the pool threads, so a handler still running finishes first; open connections
     * are closed and their contexts freed through on_completed. */
    if (s->daemon) MHD_stop_daemon(s->daemon);
    free(s);
}
