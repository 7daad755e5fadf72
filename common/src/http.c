/*
 * Embedded HTTP/1.1 server: one epoll I/O thread, handlers on a thread pool.
 *
 * Why our own and not libmicrohttpd (used until issue 6): 0.9.75 has only an idle timeout and
 * no hook before a request head is complete, so a client sending one header byte a second can
 * be neither timed out nor closed from outside; it also writes its own 400 for
 * "Content-Length: -5" twice, holds the connection on "Transfer-Encoding: gzip, chunked" or a
 * stream of empty lines, lets the first of two differing Content-Length values win, and decodes
 * the path before we can route on it. Each of those is a few lines here, and the server is
 * small enough to read in one sitting.
 *
 * Shape: the I/O thread owns every connection (accept, read, parse, deadlines, write). A
 * complete request goes to a worker, which runs the handler and serialises the response, then
 * hands the connection back through a queue and an eventfd. A connection is touched by one
 * thread at a time, so it needs no lock, and a slow client costs a descriptor and a 16 KiB
 * buffer, never a thread.
 */
#include "omnichat/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "omnichat/util.h"

#define DEFAULT_THREADS 8
#define DEFAULT_MAX_BODY ((size_t)1 << 20)
#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_HEAD_TIMEOUT_MS 10000
#define DEFAULT_BODY_TIMEOUT_MS 30000
#define DEFAULT_MAX_CONNECTIONS 4096
#define DEFAULT_MAX_PER_IP 256
#define RESP_BODY_MAX ((size_t)16 << 20)
#define HEAD_MAX (16 * 1024) /* request line + headers; 431 beyond */
#define MAX_HEADERS 64
#define MAX_QUERY 64
#define MAX_EMPTY_LINES 2   /* RFC 9112 §2.2: ignore "at least one" CRLF before a request */
#define CHUNK_LINE_MAX 1024 /* chunk-size line with extensions */
#define TRAILER_MAX 4096    /* all trailer lines together */
#define READ_CHUNK (16 * 1024)
#define LINGER_MS 2000 /* reading (and dropping) after an error answer, see start_close */
#define LINGER_MAX ((size_t)1 << 20)
#define TICK_MS 100    /* deadline granularity */
#define FD_RESERVE 128 /* descriptors the rest of the process keeps beyond our cap */
#define IP_BUCKETS 1024
#define ALLOW_MAX 128

typedef enum conn_state {
    ST_HEAD,    /* reading a request head (or idle between requests) */
    ST_BODY,    /* reading its body */
    ST_HANDLER, /* a worker has it; the I/O thread neither reads nor writes it */
    ST_WRITE,   /* writing the response */
    ST_LINGER,  /* answer sent, write side shut; draining what the client still sends */
} conn_state_t;

typedef enum chunk_state {
    CK_SIZE,
    CK_EXT,
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRAILER
} chunk_state_t;

typedef struct ip_count {
    struct ip_count *next;
    unsigned char addr[16];
    int family;
    int n;
} ip_count_t;

typedef struct kv {
    const char *name;
    const char *value;
} kv_t;

typedef struct conn {
    struct conn *prev, *next;   /* every connection; I/O thread only */
    struct conn *qnext;         /* work or done queue */
    struct conn *wprev, *wnext; /* waiting for a head, oldest first; I/O thread only */
    oc_http_server_t *s;
    int fd;
    conn_state_t state;
    int64_t deadline_us;
    bool registered;     /* in epoll (not while a handler has it) */
    bool head_started;   /* the current head has begun (empty lines before it skipped) */
    bool awaiting_first; /* idle between keep-alive requests: the idle timeout applies */
    ip_count_t *ip;
    char remote[INET6_ADDRSTRLEN];

    char in[HEAD_MAX + 1]; /* the head, NUL-terminated in place once parsed */
    size_t in_len;
    size_t scanned; /* in[0..scanned) holds no end of head */
    int empty_lines;
    char *carry; /* bytes read past the current request (pipelining) */
    size_t carry_len;

    /* the parsed request; pointers into in[] */
    const char *method, *path, *query;
    kv_t hdr[MAX_HEADERS];
    int nhdr;
    kv_t q[MAX_QUERY];
    int nq;
    char *qbuf; /* decoded query names and values */
    bool keep_alive, chunked;
    unsigned long long body_left; /* Content-Length still to read */
    const oc_http_route_t *route;
    oc_buf_t body;
    chunk_state_t ck;
    unsigned long long ck_left;
    size_t ck_line;
    int64_t start_us;

    /* the response */
    char *out;
    size_t out_len, out_off;
    bool close_after; /* close once the response is out */
    bool drop;        /* the handler asked to close without an answer */
    size_t lingered;
} conn_t;

struct oc_http_server {
    const oc_http_route_t *routes;
    size_t nroutes;
    size_t max_body;
    int64_t idle_us, head_us, body_us;
    int max_conns, max_per_ip;
    bool thread_per_connection;
    void (*on_complete)(void *user, const oc_http_request_t *req, int status, int64_t latency_us);
    void *user;
    int port;

    int lfd, efd, wfd; /* listener, epoll, wake-up eventfd */
    int spare_fd;      /* closed to accept-and-close when the process is out of descriptors */
    bool listen_paused;
    int64_t listen_resume_us;
    pthread_t io;
    bool io_started;
    _Atomic bool stopping;

    conn_t *conns;                 /* I/O thread only */
    conn_t *ready;                 /* connections with pipelined bytes to parse; I/O thread only */
    conn_t *wait_head, *wait_tail; /* connections in ST_HEAD, oldest first; I/O thread only */
    int nconns;
    ip_count_t *ips[IP_BUCKETS];

    pthread_mutex_t mu; /* work and done queues, worker bookkeeping */
    pthread_cond_t work_cv, idle_cv;
    conn_t *work_head, *work_tail;
    conn_t *done_head;
    bool workers_stop;
    int active_detached; /* thread_per_connection handlers running */
    pthread_t *workers;
    int nworkers;
};

/* Sentinels for epoll data (connections carry their conn_t pointer). */
static char listen_tag, wake_tag;

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

const char *oc_http_response_header_value(const oc_http_response_t *resp, const char *name)
{
    if (!resp || !name) return NULL;
    for (int i = 0; i < resp->nheaders && i < OC_HTTP_MAX_RESP_HEADERS; i++)
        if (strcasecmp(resp->headers[i].name, name) == 0) return resp->headers[i].value;
    return NULL;
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

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Serialises resp into c->out (status line, headers, body); resp->status ends as the status
 * sent. HEAD gets the headers only; 1xx, 204 and 304 carry no body (RFC 9110 §6.4.1). */
static void build_response(conn_t *c, oc_http_response_t *resp, bool head_only)
{
    if (resp->body.failed != OC_OK || resp->status < 200 || resp->status > 999) {
        /* A truncated JSON body would be worse than an honest 500. */
        oc_buf_dispose(&resp->body);
        oc_buf_init(&resp->body, RESP_BODY_MAX);
        resp->nheaders = 0;
        oc_http_response_error(resp, 500, "internal error");
    }
    bool no_body = resp->status == 204 || resp->status == 304;
    char date[64];
    struct tm tm;
    time_t now = time(NULL);
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);

    oc_buf_t b;
    oc_buf_init(&b, RESP_BODY_MAX + 64 * 1024);
    oc_buf_appendf(&b, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n", resp->status,
                   reason_phrase(resp->status), date,
                   resp->content_type ? resp->content_type : "application/json");
    for (int i = 0; i < resp->nheaders && i < OC_HTTP_MAX_RESP_HEADERS; i++)
        oc_buf_appendf(&b, "%s: %s\r\n", resp->headers[i].name, resp->headers[i].value);
    if (!no_body) oc_buf_appendf(&b, "Content-Length: %zu\r\n", resp->body.len);
    if (c->close_after) oc_buf_appends(&b, "Connection: close\r\n");
    oc_buf_appends(&b, "\r\n");
    if (!no_body && !head_only && resp->body.len)
        oc_buf_append(&b, resp->body.data, resp->body.len);
    if (b.failed != OC_OK) {
        /* Out of memory: nothing sane to write; the connection closes. */
        oc_buf_dispose(&b);
        c->drop = true;
        resp->status = 0;
        return;
    }
    free(c->out);
    c->out = oc_buf_detach(&b, &c->out_len);
    c->out_off = 0;
}

/* ---- requests ---- */

const char *oc_http_header(const oc_http_request_t *r, const char *name)
{
    if (!r || !r->internal || !name) return NULL;
    const conn_t *c = r->internal;
    for (int i = 0; i < c->nhdr; i++)
        if (strcasecmp(c->hdr[i].name, name) == 0) return c->hdr[i].value;
    return NULL;
}

const char *oc_http_query(const oc_http_request_t *r, const char *name)
{
    if (!r || !r->internal || !name) return NULL;
    const conn_t *c = r->internal;
    /* Query names are case-sensitive (hub.verify_token is not HUB.VERIFY_TOKEN). */
    for (int i = 0; i < c->nq; i++)
        if (strcmp(c->q[i].name, name) == 0) return c->q[i].value;
    return NULL;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Decodes '+' and %XX of src[0..n) into dst (never longer); a bad escape stays as written. */
static char *form_decode(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (src[i] == '+') {
            *dst++ = ' ';
        } else if (src[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)src[i + 1])) >= 0 &&
                   (lo = hexval((unsigned char)src[i + 2])) >= 0) {
            *dst++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *dst++ = src[i];
        }
    }
    *dst++ = '\0';
    return dst;
}

/* Splits and decodes the query into c->q (names and values in c->qbuf). */
static bool parse_query(conn_t *c)
{
    c->nq = 0;
    if (!c->query || !*c->query) return true;
    size_t len = strlen(c->query);
    /* Each pair decodes to at most its own length plus two NULs ("" for a bare name). */
    c->qbuf = malloc(2 * len + 2 * MAX_QUERY + 2);
    if (!c->qbuf) return false;
    char *w = c->qbuf;
    const char *p = c->query;
    while (*p && c->nq < MAX_QUERY) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > 0) {
            const char *eq = memchr(p, '=', n);
            size_t nl = eq ? (size_t)(eq - p) : n;
            c->q[c->nq].name = w;
            w = form_decode(w, p, nl);
            c->q[c->nq].value = w;
            w = eq ? form_decode(w, eq + 1, n - nl - 1) : form_decode(w, "", 0);
            c->nq++;
        }
        p += n;
        if (*p == '&') p++;
    }
    return true;
}

/* RFC 9110 §5.6.2 token characters. */
static bool is_tchar(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* The raw path is what we route on, so anything that a decoder, a proxy or a file system
 * behind us could read as a different path is refused: encoded '/', '\\' or NUL, a bad escape,
 * a raw backslash, "." or ".." segments. */
static bool path_acceptable(const char *p)
{
    if (p[0] != '/') return false;
    for (const char *q = p; *q; q++) {
        if (*q == '\\') return false;
        if (*q == '%') {
            int hi = hexval((unsigned char)q[1]);
            int lo = hi >= 0 ? hexval((unsigned char)q[2]) : -1;
            if (hi < 0 || lo < 0) return false;
            int v = hi * 16 + lo;
            if (v == '/' || v == '\\' || v == 0) return false;
            q += 2;
        }
        if (*q == '/') {
            const char *seg = q + 1;
            size_t dots = 0;
            while (seg[dots] == '.')
                dots++;
            if ((dots == 1 || dots == 2) && (seg[dots] == '/' || seg[dots] == '\0')) return false;
        }
    }
    return true;
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

/* Parses a Content-Length value, itself possibly a list ("5, 5"): every element must be the
 * same run of digits. Returns false when it is not a valid length. */
static bool parse_content_length(const char *v, unsigned long long *out)
{
    bool have = false;
    unsigned long long first = 0;
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p < '0' || *p > '9') return false;
        unsigned long long n = 0;
        int digits = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (++digits > 18) return false; /* no overflow, and far beyond any max_body */
            n = n * 10 + (unsigned long long)(*p - '0');
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (have && n != first) return false;
        first = n;
        have = true;
        if (*p == '\0') break;
        if (*p != ',') return false;
        p++;
    }
    *out = first;
    return true;
}

/* Whether the comma-separated list v holds token tok (case-insensitive). */
static bool list_has(const char *v, const char *tok)
{
    size_t tl = strlen(tok);
    const char *p = v;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, tok, tl) == 0) return true;
        p = e;
    }
    return false;
}

/* Outcome of parsing a head: 0 when the request is acceptable, else the status to answer. */
typedef struct head_result {
    int status;
    const char *reason;
    bool expect_continue;
} head_result_t;

static head_result_t bad(int status, const char *reason)
{
    return (head_result_t){.status = status, .reason = reason};
}

/* Parses c->in[0..len) (the head, its final empty line included) in place. */
static head_result_t parse_head(conn_t *c, size_t len)
{
    char *p = c->in, *end = c->in + len;
    /* A NUL would end a C string early and make us read less than the client wrote. */
    if (memchr(c->in, '\0', len)) return bad(400, "NUL in request head");
    *end = '\0';
    /* Line ends are CRLF, or a bare LF (RFC 9112 §2.2); a CR anywhere else is an error. */
    char *lines[MAX_HEADERS + 2];
    int nlines = 0;
    while (p < end) {
        char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf) break;
        char *eol = lf > p && lf[-1] == '\r' ? lf - 1 : lf;
        *eol = '\0';
        if (memchr(p, '\r', (size_t)(eol - p))) return bad(400, "bare CR in request head");
        if (eol == p) break; /* the empty line ending the head */
        if (nlines == MAX_HEADERS + 1) return bad(431, "too many header fields");
        lines[nlines++] = p;
        p = lf + 1;
    }
    if (nlines == 0) return bad(400, "no request line");

    /* request-line = method SP request-target SP HTTP-version */
    char *rl = lines[0];
    char *sp1 = strchr(rl, ' ');
    if (!sp1 || sp1 == rl) return bad(400, "malformed request line");
    *sp1 = '\0';
    for (char *m = rl; *m; m++)
        if (!is_tchar((unsigned char)*m)) return bad(400, "malformed request line");
    char *target = sp1 + 1;
    char *sp2 = strchr(target, ' ');
    if (!sp2 || sp2 == target) return bad(400, "malformed request line");
    *sp2 = '\0';
    const char *version = sp2 + 1;
    for (char *t = target; *t; t++)
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t >= 0x7f)
            return bad(400, "malformed request target");
    bool http10;
    if (strcmp(version, "HTTP/1.1") == 0)
        http10 = false;
    else if (strcmp(version, "HTTP/1.0") == 0)
        http10 = true;
    else if (strncmp(version, "HTTP/", 5) == 0 && version[5] >= '0' && version[5] <= '9')
        return bad(505, "HTTP version not supported");
    else
        return bad(400, "malformed request line");
    c->method = rl;
    char *qm = strchr(target, '?');
    if (qm) *qm = '\0';
    c->path = target;
    c->query = qm ? qm + 1 : NULL;

    /* Header fields: no obs-fold, no space before the colon (RFC 9112 §5.1, §5.2). */
    const char *cl = NULL, *host = NULL, *expect = NULL;
    bool te = false, te_chunked_last = false, te_other = false, te_chunked_early = false;
    bool cl_conflict = false, conn_close = false, conn_keep = false;
    int nhost = 0;
    unsigned long long clen = 0;
    c->nhdr = 0;
    for (int i = 1; i < nlines; i++) {
        char *h = lines[i];
        if (*h == ' ' || *h == '\t') return bad(400, "obsolete line folding");
        char *colon = strchr(h, ':');
        if (!colon || colon == h) return bad(400, "malformed header field");
        *colon = '\0';
        for (char *n = h; *n; n++)
            if (!is_tchar((unsigned char)*n)) return bad(400, "malformed header field");
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *ve = v + strlen(v);
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            *--ve = '\0';
        for (char *x = v; *x; x++)
            if (((unsigned char)*x < 0x20 && *x != '\t') || *x == 0x7f)
                return bad(400, "control character in header field");
        c->hdr[c->nhdr++] = (kv_t){h, v};

        if (strcasecmp(h, "Content-Length") == 0) {
            unsigned long long n;
            if (!parse_content_length(v, &n)) return bad(400, "invalid Content-Length");
            /* RFC 9112 §6.3: differing lengths are unrecoverable framing; first-wins would
             * let a proxy in front of us read a different request than we do. */
            if (cl && n != clen) cl_conflict = true;
            cl = v;
            clen = n;
        } else if (strcasecmp(h, "Transfer-Encoding") == 0) {
            /* Codings may span several fields; chunked must be the last and appear once. */
            if (te_chunked_last) te_chunked_early = true;
            te = true;
            te_chunked_last = false;
            const char *q = v;
            while (*q) {
                while (*q == ' ' || *q == '\t' || *q == ',')
                    q++;
                const char *e = q;
                while (*e && *e != ',')
                    e++;
                const char *t = e;
                while (t > q && (t[-1] == ' ' || t[-1] == '\t'))
                    t--;
                if (t > q) {
                    if (te_chunked_last) te_chunked_early = true;
                    if ((size_t)(t - q) == 7 && strncasecmp(q, "chunked", 7) == 0)
                        te_chunked_last = true;
                    else
                        te_other = true;
                }
                q = e;
            }
        } else if (strcasecmp(h, "Host") == 0) {
            host = v;
            nhost++;
        } else if (strcasecmp(h, "Connection") == 0) {
            if (list_has(v, "close")) conn_close = true;
            if (list_has(v, "keep-alive")) conn_keep = true;
        } else if (strcasecmp(h, "Expect") == 0) {
            expect = v;
        }
    }
    if (cl_conflict) return bad(400, "conflicting Content-Length");
    if (te && cl) return bad(400, "both Transfer-Encoding and Content-Length");
    if (te && http10) return bad(400, "Transfer-Encoding in HTTP/1.0");
    if (te && (te_chunked_early || !te_chunked_last)) return bad(400, "chunked is not last");
    if (te && te_other) return bad(501, "unsupported transfer coding");
    if (!http10 && nhost != 1) return bad(400, "HTTP/1.1 needs exactly one Host");
    (void)host;
    if (!path_acceptable(c->path)) return bad(400, "path not acceptable");

    c->keep_alive = http10 ? conn_keep && !conn_close : !conn_close;
    c->chunked = te;
    c->body_left = cl ? clen : 0;
    head_result_t r = {0};
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0) return bad(417, "unsupported expectation");
        r.expect_continue = !http10;
    }
    if (cl && clen > c->s->max_body) return bad(413, "request body too large");
    return r;
}

/* Feeds body bytes; returns how many were used (the rest belongs to the next request), sets
 * *done when the body is complete, *status to 400/413 on an error. */
static size_t body_feed(conn_t *c, const char *d, size_t n, bool *done, int *status)
{
    size_t i = 0;
    *done = false;
    *status = 0;
    if (!c->chunked) {
        size_t take = n < c->body_left ? n : (size_t)c->body_left;
        if (take && oc_buf_append(&c->body, d, take) != OC_OK) {
            *status = 500;
            return take;
        }
        c->body_left -= take;
        *done = c->body_left == 0;
        return take;
    }
    while (i < n) {
        char ch = d[i];
        switch (c->ck) {
        case CK_SIZE: {
            int h = hexval((unsigned char)ch);
            if (h >= 0) {
                if (++c->ck_line > 16) goto bad_chunk;
                c->ck_left = c->ck_left * 16 + (unsigned)h;
                i++;
                break;
            }
            if (c->ck_line == 0) goto bad_chunk;
            c->ck = CK_EXT;
            break;
        }
        case CK_EXT: /* chunk extensions are ignored, but bounded */
            i++;
            if (ch == '\r') {
                c->ck = CK_SIZE_LF;
                break;
            }
            if (ch != '\n') {
                if (++c->ck_line > CHUNK_LINE_MAX) goto bad_chunk;
                break;
            }
            goto size_line_done;
        case CK_SIZE_LF:
            i++;
            if (ch != '\n') goto bad_chunk;
        size_line_done:
            c->ck_line = 0;
            if (c->ck_left == 0) {
                c->ck = CK_TRAILER;
            } else if (c->ck_left > c->s->max_body - c->body.len) {
                *status = 413;
                return i;
            } else {
                c->ck = CK_DATA;
            }
            break;
        case CK_DATA: {
            size_t take = n - i < c->ck_left ? n - i : (size_t)c->ck_left;
            if (oc_buf_append(&c->body, d + i, take) != OC_OK) {
                *status = 500;
                return i;
            }
            i += take;
            c->ck_left -= take;
            if (c->ck_left == 0) c->ck = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            i++;
            if (ch == '\n') {
                c->ck = CK_SIZE;
            } else if (ch == '\r') {
                c->ck = CK_DATA_LF;
            } else {
                goto bad_chunk;
            }
            break;
        case CK_DATA_LF:
            i++;
            if (ch != '\n') goto bad_chunk;
            c->ck = CK_SIZE;
            break;
        case CK_TRAILER:
            /* Trailer fields are dropped; an empty line ends the message. ck_line counts the
             * bytes of the current line, ck_left all trailer bytes. */
            i++;
            if (++c->ck_left > TRAILER_MAX) goto bad_chunk;
            if (ch == '\n') {
                if (c->ck_line == 0) {
                    *done = true;
                    return i;
                }
                c->ck_line = 0;
            } else if (ch != '\r' || c->ck_line > 0) {
                c->ck_line++;
            }
            break;
        }
    }
    return i;
bad_chunk:
    *status = 400;
    return i;
}

/* ---- connections (I/O thread) ---- */

static unsigned ip_hash(const unsigned char *a, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ a[i]) * 16777619u;
    return h % IP_BUCKETS;
}

static size_t ip_key(const struct sockaddr_storage *ss, unsigned char out[16])
{
    if (ss->ss_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr, 16);
        return 16;
    }
    memcpy(out, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, 4);
    return 4;
}

/* Counts a connection against its address; NULL when the address is at its cap (or OOM). */
static ip_count_t *ip_acquire(oc_http_server_t *s, const struct sockaddr_storage *ss)
{
    unsigned char key[16];
    size_t n = ip_key(ss, key);
    unsigned b = ip_hash(key, n);
    ip_count_t *e = s->ips[b];
    while (e && !(e->family == ss->ss_family && memcmp(e->addr, key, n) == 0))
        e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) return NULL;
        memcpy(e->addr, key, n);
        e->family = ss->ss_family;
        e->next = s->ips[b];
        s->ips[b] = e;
    }
    if (e->n >= s->max_per_ip) return NULL;
    e->n++;
    return e;
}

static void ip_release(oc_http_server_t *s, ip_count_t *e)
{
    if (!e || --e->n > 0) return;
    unsigned b = ip_hash(e->addr, e->family == AF_INET6 ? 16 : 4);
    for (ip_count_t **pp = &s->ips[b]; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            free(e);
            return;
        }
    }
}

static void request_reset(conn_t *c)
{
    c->method = c->path = c->query = NULL;
    c->nhdr = 0;
    c->nq = 0;
    free(c->qbuf);
    c->qbuf = NULL;
    c->chunked = false;
    c->keep_alive = false;
    c->body_left = 0;
    c->route = NULL;
    oc_buf_dispose(&c->body);
    c->ck = CK_SIZE;
    c->ck_left = 0;
    c->ck_line = 0;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    c->close_after = false;
    c->drop = false;
    c->in_len = 0;
    c->scanned = 0;
    c->empty_lines = 0;
    c->head_started = false;
}

/* Moves c to state st, keeping the list of connections waiting for a head (ST_HEAD) in the
 * order they started waiting: its oldest is what a new connection displaces at the cap. */
static void set_state(oc_http_server_t *s, conn_t *c, conn_state_t st)
{
    bool was = c->state == ST_HEAD && (c->wprev || s->wait_head == c);
    if (was && st != ST_HEAD) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            s->wait_head = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        else
            s->wait_tail = c->wprev;
        c->wprev = c->wnext = NULL;
    } else if (!was && st == ST_HEAD) {
        c->wprev = s->wait_tail;
        c->wnext = NULL;
        if (s->wait_tail)
            s->wait_tail->wnext = c;
        else
            s->wait_head = c;
        s->wait_tail = c;
    }
    c->state = st;
}

static void conn_free(oc_http_server_t *s, conn_t *c)
{
    set_state(s, c, ST_LINGER); /* off the waiting list */
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    if (c->fd >= 0) close(c->fd);
    ip_release(s, c->ip);
    request_reset(c);
    free(c->carry);
    free(c);
}

/* events 0 takes the descriptor out of epoll altogether: epoll reports EPOLLHUP and EPOLLERR
 * whatever the mask, so a client resetting while its handler runs would make a level-triggered
 * loop spin until the handler returns. */
static void set_events(oc_http_server_t *s, conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    int rc = 0;
    if (events == 0) {
        if (c->registered) rc = epoll_ctl(s->efd, EPOLL_CTL_DEL, c->fd, NULL);
        c->registered = false;
    } else {
        rc = epoll_ctl(s->efd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
        c->registered = rc == 0;
    }
    /* Cannot fail for a descriptor we own but for ENOMEM; the deadline then closes it. */
    if (rc != 0) c->deadline_us = 1;
}

static void after_write(oc_http_server_t *s, conn_t *c);
static void process_head(oc_http_server_t *s, conn_t *c);

static void try_write(oc_http_server_t *s, conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(s, c, EPOLLOUT);
            return;
        }
        conn_free(s, c);
        return;
    }
    after_write(s, c);
}

/* Sends an answer built by the I/O thread itself (errors found before any handler). */
static void answer(oc_http_server_t *s, conn_t *c, int status, const char *reason,
                   const char *allow, bool close_conn)
{
    oc_http_response_t resp;
    response_init(&resp);
    oc_http_response_error(&resp, status, reason);
    if (allow) oc_http_response_header(&resp, "Allow", allow);
    c->close_after = close_conn || !c->keep_alive;
    build_response(c, &resp, c->method && strcmp(c->method, "HEAD") == 0);
    oc_buf_dispose(&resp.body);
    if (s->on_complete) {
        oc_http_request_t req = {.method = c->method ? c->method : "",
                                 .path = c->path ? c->path : "",
                                 .remote_addr = c->remote,
                                 .internal = c,
                                 .response = &resp};
        s->on_complete(s->user, &req, c->drop ? 0 : status, oc_mono_us() - c->start_us);
    }
    if (c->drop) {
        conn_free(s, c);
        return;
    }
    set_state(s, c, ST_WRITE);
    c->deadline_us = oc_mono_us() + s->idle_us;
    try_write(s, c);
}

static void run_handler(conn_t *c)
{
    oc_http_server_t *s = c->s;
    oc_http_request_t req = {
        .method = c->method,
        .path = c->path,
        .body = c->body.data ? c->body.data : "",
        .body_len = c->body.len,
        .remote_addr = c->remote,
        .internal = c,
    };
    oc_http_response_t resp;
    response_init(&resp);
    c->route->handler(c->route->user, &req, &resp);
    int status;
    if (resp.drop_connection) {
        c->drop = true;
        status = 0;
    } else {
        build_response(c, &resp, strcmp(c->method, "HEAD") == 0);
        status = c->drop ? 0 : resp.status;
    }
    oc_buf_dispose(&resp.body);
    if (s->on_complete) {
        req.body = NULL;
        req.body_len = 0;
        req.response = &resp;
        s->on_complete(s->user, &req, status, oc_mono_us() - c->start_us);
    }
}

static void wake(oc_http_server_t *s)
{
    uint64_t one = 1;
    ssize_t n = write(s->wfd, &one, sizeof one);
    (void)n; /* a full counter already means "wake up" */
}

static void push_done(oc_http_server_t *s, conn_t *c)
{
    pthread_mutex_lock(&s->mu);
    c->qnext = s->done_head;
    s->done_head = c;
    pthread_mutex_unlock(&s->mu);
    wake(s);
}

static void *worker_main(void *arg)
{
    oc_http_server_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->work_head && !s->workers_stop)
            pthread_cond_wait(&s->work_cv, &s->mu);
        if (s->workers_stop) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        conn_t *c = s->work_head;
        s->work_head = c->qnext;
        if (!s->work_head) s->work_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        run_handler(c);
        push_done(s, c);
    }
}

static void *detached_main(void *arg)
{
    conn_t *c = arg;
    oc_http_server_t *s = c->s;
    run_handler(c);
    push_done(s, c);
    pthread_mutex_lock(&s->mu);
    if (--s->active_detached == 0) pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* The request is complete: hand it to a handler thread. */
static void dispatch(oc_http_server_t *s, conn_t *c)
{
    set_state(s, c, ST_HANDLER);
    c->deadline_us = 0; /* handlers bound their own time */
    set_events(s, c, 0);
    c->close_after = !c->keep_alive || atomic_load(&s->stopping);
    if (s->thread_per_connection) {
        pthread_attr_t attr;
        pthread_t th;
        pthread_mutex_lock(&s->mu);
        s->active_detached++;
        pthread_mutex_unlock(&s->mu);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, detached_main, c);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            pthread_mutex_lock(&s->mu);
            s->active_detached--;
            pthread_mutex_unlock(&s->mu);
            answer(s, c, 503, "no thread for the request", NULL, true);
        }
        return;
    }
    pthread_mutex_lock(&s->mu);
    c->qnext = NULL;
    if (s->work_tail)
        s->work_tail->qnext = c;
    else
        s->work_head = c;
    s->work_tail = c;
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Feeds body bytes; completes, refuses or waits for more. */
static void body_consume(oc_http_server_t *s, conn_t *c, const char *d, size_t n)
{
    bool done;
    int st;
    size_t used = body_feed(c, d, n, &done, &st);
    if (st == 413) {
        answer(s, c, 413, "request body too large", NULL, true);
        return;
    }
    if (st == 500) {
        answer(s, c, 500, "out of memory", NULL, true);
        return;
    }
    if (st) {
        answer(s, c, 400, "malformed chunked body", NULL, true);
        return;
    }
    if (!done) return;
    if (used < n) {
        /* Pipelined bytes of the next request: kept until this one is answered. */
        c->carry = malloc(n - used);
        if (!c->carry) {
            answer(s, c, 500, "out of memory", NULL, true);
            return;
        }
        memcpy(c->carry, d + used, n - used);
        c->carry_len = n - used;
    }
    dispatch(s, c);
}

/* Looks for the empty line that ends the head; its length including that line, or 0. */
static size_t head_end(conn_t *c)
{
    size_t i = c->scanned;
    for (; i < c->in_len; i++) {
        if (c->in[i] != '\n') continue;
        if (i + 1 < c->in_len && c->in[i + 1] == '\n') return i + 2;
        if (i + 2 < c->in_len && c->in[i + 1] == '\r' && c->in[i + 2] == '\n') return i + 3;
        if (i + 2 >= c->in_len) break; /* not enough bytes yet to tell */
    }
    c->scanned = i;
    return 0;
}

static void process_head(oc_http_server_t *s, conn_t *c)
{
    /* RFC 9112 §2.2 lets a server ignore empty lines before a request; a few, not a stream
     * of them (that would hold the connection without ever being a request). */
    while (!c->head_started && c->in_len > 0) {
        size_t skip;
        if (c->in[0] == '\n') {
            skip = 1;
        } else if (c->in[0] == '\r') {
            if (c->in_len < 2) return;
            if (c->in[1] != '\n') {
                answer(s, c, 400, "bare CR before the request", NULL, true);
                return;
            }
            skip = 2;
        } else {
            c->head_started = true;
            break;
        }
        memmove(c->in, c->in + skip, c->in_len - skip);
        c->in_len -= skip;
        if (++c->empty_lines > MAX_EMPTY_LINES) {
            answer(s, c, 400, "empty lines instead of a request", NULL, true);
            return;
        }
    }
    if (!c->head_started) return;
    size_t hl = head_end(c);
    if (hl == 0) {
        if (c->in_len >= HEAD_MAX) answer(s, c, 431, "request head too large", NULL, true);
        return;
    }
    /* parse_head writes a NUL at in[hl]: keep what follows the head first. */
    char rest[HEAD_MAX];
    size_t rest_len = c->in_len - hl;
    memcpy(rest, c->in + hl, rest_len);
    c->start_us = oc_mono_us();
    head_result_t hr = parse_head(c, hl);
    if (hr.status) {
        answer(s, c, hr.status, hr.reason, NULL, true);
        return;
    }
    if (!parse_query(c)) {
        answer(s, c, 500, "out of memory", NULL, true);
        return;
    }
    bool body_pending = c->chunked || c->body_left > 0;
    char allow[ALLOW_MAX];
    const oc_http_route_t *rt = route_find(s, c->method, c->path, allow, sizeof allow);
    if (!rt) {
        /* An unread body would be taken for the next request: close in that case. Otherwise
         * the connection stays, and so do the bytes of a pipelined next request. */
        if (!body_pending && rest_len > 0 && !(c->carry = malloc(rest_len))) {
            answer(s, c, 500, "out of memory", NULL, true);
            return;
        }
        if (c->carry) {
            memcpy(c->carry, rest, rest_len);
            c->carry_len = rest_len;
        }
        if (allow[0])
            answer(s, c, 405, "method not allowed", allow, body_pending);
        else
            answer(s, c, 404, "not found", NULL, body_pending);
        return;
    }
    c->route = rt;
    set_state(s, c, ST_BODY);
    c->deadline_us = c->start_us + s->body_us;
    oc_buf_init(&c->body, s->max_body);
    if (hr.expect_continue && body_pending && rest_len == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        /* Best effort: a client that misses it sends the body after its own short wait. */
        ssize_t n = send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    }
    body_consume(s, c, rest, rest_len);
}

static void after_write(oc_http_server_t *s, conn_t *c)
{
    if (c->close_after) {
        /* Lingering close: shut our side, then read until the client closes (or a short
         * deadline). Closing with unread data would send a reset that can destroy the
         * answer before the client reads it. */
        shutdown(c->fd, SHUT_WR);
        free(c->out);
        c->out = NULL;
        set_state(s, c, ST_LINGER);
        c->lingered = 0;
        c->deadline_us = oc_mono_us() + (int64_t)LINGER_MS * 1000;
        set_events(s, c, EPOLLIN);
        return;
    }
    request_reset(c);
    set_state(s, c, ST_HEAD);
    set_events(s, c, EPOLLIN);
    if (c->carry) {
        memcpy(c->in, c->carry, c->carry_len);
        c->in_len = c->carry_len;
        free(c->carry);
        c->carry = NULL;
        c->carry_len = 0;
        c->awaiting_first = false;
        c->deadline_us = oc_mono_us() + s->head_us;
        /* Parsed by the I/O loop, not here: a run of pipelined requests answered from the
         * I/O thread would otherwise recurse once per request. */
        c->qnext = s->ready;
        s->ready = c;
        return;
    }
    c->awaiting_first = true;
    c->deadline_us = oc_mono_us() + s->idle_us;
}

static void on_readable(oc_http_server_t *s, conn_t *c)
{
    char buf[READ_CHUNK];
    ssize_t n;
    switch (c->state) {
    case ST_HEAD:
        n = recv(c->fd, c->in + c->in_len, HEAD_MAX - c->in_len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (n <= 0) break;
        if (c->awaiting_first) {
            /* The head deadline runs from its first byte, not from the last answer. */
            c->awaiting_first = false;
            c->deadline_us = oc_mono_us() + s->head_us;
        }
        c->in_len += (size_t)n;
        process_head(s, c);
        return;
    case ST_BODY:
        n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (n <= 0) break;
        body_consume(s, c, buf, (size_t)n);
        return;
    case ST_LINGER:
        n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (n > 0 && (c->lingered += (size_t)n) <= LINGER_MAX) return;
        break;
    default:
        return;
    }
    conn_free(s, c);
}

/* A request that missed its deadline gets a best-effort 408; an idle or lingering
 * connection is just closed. */
static void expire(oc_http_server_t *s, conn_t *c)
{
    if ((c->state == ST_HEAD && !c->awaiting_first) || c->state == ST_BODY) {
        static const char r408[] = "HTTP/1.1 408 Request Timeout\r\nContent-Type: "
                                   "application/json\r\nContent-Length: 33\r\nConnection: "
                                   "close\r\n\r\n{\"error\":\"request took too long\"}";
        ssize_t n = send(c->fd, r408, sizeof r408 - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    }
    conn_free(s, c);
}

static void tick(oc_http_server_t *s, int64_t now)
{
    for (conn_t *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state != ST_HANDLER && c->deadline_us && now >= c->deadline_us) expire(s, c);
    }
    if (s->listen_paused && now >= s->listen_resume_us) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_tag};
        if (epoll_ctl(s->efd, EPOLL_CTL_MOD, s->lfd, &ev) == 0) s->listen_paused = false;
    }
}

static void pause_listen(oc_http_server_t *s)
{
    struct epoll_event ev = {.events = 0, .data.ptr = &listen_tag};
    if (epoll_ctl(s->efd, EPOLL_CTL_MOD, s->lfd, &ev) == 0) {
        s->listen_paused = true;
        s->listen_resume_us = oc_mono_us() + (int64_t)TICK_MS * 1000;
    }
}

static void accept_ready(oc_http_server_t *s)
{
    bool accepted = false, evicted = false;
    /* Bounded, so that a connection storm does not starve the connections already open. */
    for (int i = 0; i < 256; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            /* Linux reports EMFILE before it looks at the backlog: after an accept, it says
             * nothing about anyone waiting. The listener stays readable if someone is. */
            if ((errno == EMFILE || errno == ENFILE) && accepted) return;
            if ((errno == EMFILE || errno == ENFILE) && s->wait_head && !evicted) {
                /* Out of descriptors with connections still waiting for a head: the oldest
                 * gives its descriptor to the newcomer, as at the cap. */
                conn_free(s, s->wait_head);
                evicted = true;
                continue;
            }
            if ((errno == EMFILE || errno == ENFILE) && s->spare_fd >= 0) {
                /* Out of descriptors. The pending connection would stay in the backlog and
                 * keep the listener readable forever: spend the spare descriptor to take it
                 * and close it at once (the client sees a prompt close, not a hang), then
                 * take the spare back. */
                close(s->spare_fd);
                s->spare_fd = -1;
                int tmp = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
                if (tmp >= 0) close(tmp);
                s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            }
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM: try again next tick, never give up. */
            pause_listen(s);
            return;
        }
        accepted = true;
        ip_count_t *ip = ip_acquire(s, &ss);
        /* At the overall cap, the connection that has waited longest for a request head (a
         * slow client, or an idle keep-alive) makes room: a full server full of slowloris
         * connections still takes a genuine request, which needs only milliseconds to arrive.
         * With none waiting (all busy), the newcomer is refused. */
        if (ip && s->nconns >= s->max_conns && s->wait_head) conn_free(s, s->wait_head);
        conn_t *c = NULL;
        if (!ip || s->nconns >= s->max_conns || !(c = calloc(1, sizeof *c))) {
            /* Over a cap: close at once, before reading a byte. */
            ip_release(s, ip);
            close(fd);
            continue;
        }
        c->s = s;
        c->fd = fd;
        c->ip = ip;
        set_state(s, c, ST_HEAD);
        c->start_us = oc_mono_us();
        c->deadline_us = c->start_us + s->head_us;
        oc_buf_init(&c->body, s->max_body);
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&ss)->sin_addr, c->remote,
                      sizeof c->remote);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&ss)->sin6_addr, c->remote,
                      sizeof c->remote);
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        set_events(s, c, EPOLLIN);
        if (!c->registered) conn_free(s, c);
    }
}

static void drain_done(oc_http_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    conn_t *c = s->done_head;
    s->done_head = NULL;
    pthread_mutex_unlock(&s->mu);
    while (c) {
        conn_t *next = c->qnext;
        if (c->drop) {
            conn_free(s, c);
        } else {
            set_state(s, c, ST_WRITE);
            c->deadline_us = oc_mono_us() + s->idle_us;
            try_write(s, c);
        }
        c = next;
    }
}

static void *io_main(void *arg)
{
    oc_http_server_t *s = arg;
    struct epoll_event evs[256];
    int64_t next_tick = oc_mono_us() + (int64_t)TICK_MS * 1000;
    while (!atomic_load(&s->stopping)) {
        int n = epoll_wait(s->efd, evs, 256, TICK_MS);
        bool listen_ready = false;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listen_tag) {
                listen_ready = true;
            } else if (p == &wake_tag) {
                uint64_t v;
                ssize_t r = read(s->wfd, &v, sizeof v);
                (void)r;
            } else {
                conn_t *c = p;
                if (c->state == ST_WRITE)
                    try_write(s, c);
                else if (c->state != ST_HANDLER)
                    on_readable(s, c);
            }
        }
        /* Accept last: a connection accepted in the previous round has then had its request
         * read before anything could make room at its expense. */
        if (listen_ready) accept_ready(s);
        drain_done(s);
        while (s->ready) {
            conn_t *c = s->ready;
            s->ready = c->qnext;
            process_head(s, c);
        }
        int64_t now = oc_mono_us();
        if (now >= next_tick) {
            tick(s, now);
            next_tick = now + (int64_t)TICK_MS * 1000;
        }
    }
    return NULL;
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

static int listen_socket(int fd)
{
    return listen(fd, SOMAXCONN);
}

static oc_err_t open_listener(oc_http_server_t *s, const listen_addr_t *la, const char *listen,
                              oc_error_t *err)
{
    int one = 1;
    socklen_t len = la->v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    s->lfd = socket(la->v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0)
        return oc_error_set(err, OC_E_IO, "could not start http server on %s: socket: %s", listen,
                            strerror(errno));
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (la->v6) setsockopt(s->lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s->lfd, (const struct sockaddr *)&la->ss, len) != 0)
        return oc_error_set(err, OC_E_IO, "could not start http server on %s: bind: %s", listen,
                            strerror(errno));
    if (listen_socket(s->lfd) != 0)
        return oc_error_set(err, OC_E_IO, "could not start http server on %s: listen: %s", listen,
                            strerror(errno));
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (getsockname(s->lfd, (struct sockaddr *)&bound, &bl) != 0)
        return oc_error_set(err, OC_E_IO, "could not start http server on %s: getsockname: %s",
                            listen, strerror(errno));
    s->port = bound.ss_family == AF_INET6
                  ? ntohs(((struct sockaddr_in6 *)(void *)&bound)->sin6_port)
                  : ntohs(((struct sockaddr_in *)(void *)&bound)->sin_port);
    return OC_OK;
}

static void server_free(oc_http_server_t *s)
{
    if (!s) return;
    while (s->conns)
        conn_free(s, s->conns);
    for (int i = 0; i < IP_BUCKETS; i++) {
        while (s->ips[i]) {
            ip_count_t *e = s->ips[i];
            s->ips[i] = e->next;
            free(e);
        }
    }
    if (s->lfd >= 0) close(s->lfd);
    if (s->efd >= 0) close(s->efd);
    if (s->wfd >= 0) close(s->wfd);
    if (s->spare_fd >= 0) close(s->spare_fd);
    free(s->workers);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->idle_cv);
    free(s);
}

/* Stops and joins the threads started so far; connections stay for server_free. */
static void server_halt(oc_http_server_t *s)
{
    atomic_store(&s->stopping, true);
    if (s->io_started) {
        wake(s);
        pthread_join(s->io, NULL);
        s->io_started = false;
    }
    pthread_mutex_lock(&s->mu);
    s->workers_stop = true;
    pthread_cond_broadcast(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->nworkers; i++)
        pthread_join(s->workers[i], NULL);
    s->nworkers = 0;
    /* Handlers of thread_per_connection: each pushes its connection back, then counts down. */
    pthread_mutex_lock(&s->mu);
    while (s->active_detached > 0)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

oc_http_server_t *oc_http_server_start(const oc_http_server_opts_t *opts, oc_error_t *err)
{
    oc_http_server_t *s = NULL;
    listen_addr_t la;
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
    if (parse_listen(opts->listen, &la, err) != OC_OK) goto fail;
    if (opts->threads < 0 || opts->timeout_s < 0 || opts->head_timeout_ms < 0 ||
        opts->body_timeout_ms < 0 || opts->max_connections < 0 ||
        opts->max_connections_per_ip < 0) {
        oc_error_set(err, OC_E_CONFIG, "http server: negative threads, timeout or cap");
        goto fail;
    }

    s = calloc(1, sizeof *s);
    if (!s) {
        oc_error_set(err, OC_E_NOMEM, "http server: out of memory");
        goto fail;
    }
    s->lfd = s->efd = s->wfd = s->spare_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    s->routes = opts->routes;
    s->nroutes = opts->nroutes;
    s->max_body = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
    s->on_complete = opts->on_complete;
    s->user = opts->user;
    s->thread_per_connection = opts->thread_per_connection;
    s->idle_us = (int64_t)(opts->timeout_s > 0 ? opts->timeout_s : DEFAULT_TIMEOUT_S) * 1000000;
    s->head_us =
        (int64_t)(opts->head_timeout_ms > 0 ? opts->head_timeout_ms : DEFAULT_HEAD_TIMEOUT_MS) *
        1000;
    s->body_us =
        (int64_t)(opts->body_timeout_ms > 0 ? opts->body_timeout_ms : DEFAULT_BODY_TIMEOUT_MS) *
        1000;
    s->max_conns = opts->max_connections > 0 ? opts->max_connections : DEFAULT_MAX_CONNECTIONS;
    s->max_per_ip =
        opts->max_connections_per_ip > 0 ? opts->max_connections_per_ip : DEFAULT_MAX_PER_IP;
    /* Stay below the descriptor limit, so that hitting the cap is a clean refusal and the rest
     * of the process (gRPC, database, files) keeps descriptors of its own. The limit is read
     * here; raising it is the process's business at start. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        long room = (long)rl.rlim_cur - FD_RESERVE;
        if (room < 16) room = 16;
        if (s->max_conns > room) s->max_conns = (int)room;
    }

    if (open_listener(s, &la, opts->listen, err) != OC_OK) goto fail;
    s->efd = epoll_create1(EPOLL_CLOEXEC);
    s->wfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->efd < 0 || s->wfd < 0) {
        oc_error_set(err, OC_E_IO, "could not start http server on %s: %s", opts->listen,
                     strerror(errno));
        goto fail;
    }
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &wake_tag};
    if (epoll_ctl(s->efd, EPOLL_CTL_ADD, s->lfd, &lev) != 0 ||
        epoll_ctl(s->efd, EPOLL_CTL_ADD, s->wfd, &wev) != 0) {
        oc_error_set(err, OC_E_IO, "could not start http server on %s: epoll: %s", opts->listen,
                     strerror(errno));
        goto fail;
    }
    if (!s->thread_per_connection) {
        int n = opts->threads > 0 ? opts->threads : DEFAULT_THREADS;
        s->workers = calloc((size_t)n, sizeof *s->workers);
        if (!s->workers) {
            oc_error_set(err, OC_E_NOMEM, "http server: out of memory");
            goto fail;
        }
        for (; s->nworkers < n; s->nworkers++) {
            if (pthread_create(&s->workers[s->nworkers], NULL, worker_main, s) != 0) {
                oc_error_set(err, OC_E_IO, "http server: could not start its threads");
                goto fail;
            }
        }
    }
    if (pthread_create(&s->io, NULL, io_main, s) != 0) {
        oc_error_set(err, OC_E_IO, "http server: could not start its I/O thread");
        goto fail;
    }
    s->io_started = true;
    return s;

fail:
    if (s) {
        server_halt(s);
        server_free(s);
    }
    return NULL;
}

int oc_http_server_port(const oc_http_server_t *s)
{
    return s ? s->port : 0;
}

void oc_http_server_stop(oc_http_server_t *s)
{
    if (!s) return;
    /* The I/O thread goes first (no new request starts), then the handlers still running
     * finish; open connections are closed and freed last. */
    server_halt(s);
    server_free(s);
}
