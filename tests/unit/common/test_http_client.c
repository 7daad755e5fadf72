/* The HTTP client against raw socket servers: no silent re-send, transport classes, secrets. */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "omnichat/http_client.h"

#include "test_main.h"

/* A server that reads whole requests; what it does with each is its mode. */
enum mode {
    DROP_SECOND,    /* answers the first request of a connection, closes at the second */
    DROP_AFTER_READ /* reads the request and closes without answering */
};

typedef struct server {
    int fd, port;
    enum mode mode;
    pthread_t thread;
    pthread_mutex_t mu;
    char seen[64][512]; /* every request received: head + body */
    int nseen;
} server_t;

static size_t read_request(int fd, char *buf, size_t cap)
{
    size_t got = 0, want = 0;
    ssize_t n;

    while (got < cap - 1) {
        char *end;
        buf[got] = '\0';
        if ((end = strstr(buf, "\r\n\r\n")) != NULL) {
            const char *cl = strcasestr(buf, "content-length:");
            size_t head = (size_t)(end + 4 - buf);
            want = head + (cl != NULL && cl < end ? (size_t)atol(cl + 15) : 0);
            if (got >= want) break;
        }
        n = read(fd, buf + got, cap - 1 - got);
        if (n <= 0) return 0;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return got;
}

static void *serve(void *arg)
{
    server_t *s = arg;
    int c;

    while ((c = accept(s->fd, NULL, NULL)) >= 0) {
        char buf[4096];
        for (int i = 0;; i++) {
            if (read_request(c, buf, sizeof buf) == 0) break;
            pthread_mutex_lock(&s->mu);
            if (s->nseen < 64) {
                memcpy(s->seen[s->nseen], buf, sizeof s->seen[0] - 1);
                s->seen[s->nseen++][sizeof s->seen[0] - 1] = '\0';
            }
            pthread_mutex_unlock(&s->mu);
            if (s->mode == DROP_AFTER_READ || (s->mode == DROP_SECOND && i == 1)) break;
            static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nRetry-After:  7 \r\n"
                                     "Connection: keep-alive\r\n\r\nok";
            if (write(c, ok, sizeof ok - 1) < 0) break;
        }
        close(c);
    }
    return NULL;
}

static void server_start(server_t *s, enum mode mode)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;

    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->mode = mode;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(s->fd, (struct sockaddr *)&sa, sizeof sa);
    listen(s->fd, 16);
    getsockname(s->fd, (struct sockaddr *)&sa, &len);
    s->port = ntohs(sa.sin_port);
    pthread_create(&s->thread, NULL, serve, s);
}

static void server_stop(server_t *s)
{
    shutdown(s->fd, SHUT_RDWR);
    close(s->fd);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
}

/* How many received requests contain `needle`. */
static int copies(server_t *s, const char *needle)
{
    int n = 0;

    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nseen; i++)
        n += strstr(s->seen[i], needle) != NULL;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static oc_http_client_t *client_for(const server_t *s)
{
    char base[64];
    oc_http_client_opts_t o = {.base = base, .reuse_connections = true};
    oc_error_t err;

    oc_error_clear(&err);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", s->port);
    return oc_http_client_create(&o, &err);
}

static oc_http_transport_t post(oc_http_client_t *c, const char *body, bool *refused)
{
    oc_http_call_t call = {.method = "POST",
                           .path = "/send",
                           .body = body,
                           .body_len = strlen(body),
                           .timeout_ms = 2000};
    oc_http_result_t res;
    oc_http_transport_t t;

    oc_http_result_init(&res, 0);
    CU_ASSERT_EQUAL(oc_http_client_call(c, &call, &res), OC_OK);
    t = res.transport;
    if (refused != NULL) *refused = res.resend_refused;
    oc_http_result_dispose(&res);
    return t;
}

/*
 * The reused keep-alive connection dies after the server read the whole second request:
 * exactly one copy may arrive, and the caller is told the connection dropped after sending.
 */
static void test_no_silent_resend(void)
{
    server_t s;
    oc_http_client_t *c;
    bool refused = false;

    server_start(&s, DROP_SECOND);
    c = client_for(&s);
    CU_ASSERT_EQUAL(post(c, "{\"n\":\"first\"}", NULL), OC_HTTP_TX_OK);
    CU_ASSERT_EQUAL(post(c, "{\"n\":\"second\"}", &refused), OC_HTTP_TX_DROPPED);
    CU_ASSERT_TRUE(refused);
    CU_ASSERT_EQUAL(copies(&s, "second"), 1);
    /* The next call works on a fresh connection. */
    CU_ASSERT_EQUAL(post(c, "{\"n\":\"third\"}", NULL), OC_HTTP_TX_OK);
    oc_http_client_destroy(c);
    server_stop(&s);
}

/* The control: with the body in CURLOPT_POSTFIELDS, libcurl silently sends the second
 * request again on a new connection, and the test above would see two copies. */
static void test_control_postfields_resends(void)
{
    server_t s;
    oc_http_client_t *c;

    server_start(&s, DROP_SECOND);
    c = client_for(&s);
    oc__http_client_set_resend_guard(c, false);
    CU_ASSERT_EQUAL(post(c, "{\"n\":\"first\"}", NULL), OC_HTTP_TX_OK);
    CU_ASSERT_EQUAL(post(c, "{\"n\":\"second\"}", NULL), OC_HTTP_TX_OK);
    CU_ASSERT_EQUAL(copies(&s, "second"), 2);
    oc_http_client_destroy(c);
    server_stop(&s);
}

/* A fresh connection that is dropped after the request was read: dropped, one copy. */
static void test_dropped_on_fresh_connection(void)
{
    server_t s;
    oc_http_client_t *c;

    server_start(&s, DROP_AFTER_READ);
    c = client_for(&s);
    CU_ASSERT_EQUAL(post(c, "{\"n\":\"only\"}", NULL), OC_HTTP_TX_DROPPED);
    CU_ASSERT_EQUAL(copies(&s, "only"), 1);
    oc_http_client_destroy(c);
    server_stop(&s);
}

static void test_connect_refused(void)
{
    server_t s;
    oc_http_client_t *c;

    server_start(&s, DROP_SECOND);
    c = client_for(&s);
    server_stop(&s); /* nothing listens on the port any more */
    CU_ASSERT_EQUAL(post(c, "{}", NULL), OC_HTTP_TX_CONNECT);
    oc_http_client_destroy(c);
}

/* A secret in a header or a form field reaches the server, in that place only. */
static void test_secret_transport(void)
{
    server_t s;
    oc_http_client_t *c;
    oc_http_result_t res;
    oc_http_call_t call = {.method = "POST",
                           .path = "/form",
                           .body = "recipient=42",
                           .body_len = 12,
                           .secret_in = OC_HTTP_SECRET_FORM,
                           .secret_name = "access_token",
                           .secret = "tok en&=1",
                           .secret_len = 9,
                           .timeout_ms = 2000,
                           .capture = (const char *const[]){"retry-after", "x-absent", NULL}};

    server_start(&s, DROP_SECOND);
    c = client_for(&s);
    oc_http_result_init(&res, 0);
    CU_ASSERT_EQUAL(oc_http_client_call(c, &call, &res), OC_OK);
    CU_ASSERT_EQUAL(res.transport, OC_HTTP_TX_OK);
    CU_ASSERT_EQUAL(res.status, 200);
    CU_ASSERT_EQUAL(copies(&s, "\r\n\r\nrecipient=42&access_token=tok%20en%26%3D1"), 1);
    CU_ASSERT_EQUAL(copies(&s, "application/x-www-form-urlencoded"), 1);
    CU_ASSERT_STRING_EQUAL(res.captured[0], "7"); /* call.capture: Retry-After */
    CU_ASSERT_STRING_EQUAL(res.captured[1], "");  /* absent */
    oc_http_result_dispose(&res);
    oc_http_client_destroy(c);
    server_stop(&s);

    server_start(&s, DROP_AFTER_READ);
    c = client_for(&s);
    call = (oc_http_call_t){.method = "GET",
                            .path = "/info",
                            .secret_in = OC_HTTP_SECRET_HEADER,
                            .secret_name = "Authorization: Bearer ",
                            .secret = "sekrit",
                            .secret_len = 6,
                            .timeout_ms = 2000};
    oc_http_result_init(&res, 0);
    CU_ASSERT_EQUAL(oc_http_client_call(c, &call, &res), OC_OK);
    CU_ASSERT_EQUAL(copies(&s, "GET /info HTTP/1.1\r\n"), 1);
    CU_ASSERT_EQUAL(copies(&s, "Authorization: Bearer sekrit\r\n"), 1);
    oc_http_result_dispose(&res);
    /* A secret that would split a header is refused before anything is sent. */
    call.secret = "a\r\nX: b";
    call.secret_len = 7;
    oc_http_result_init(&res, 0);
    CU_ASSERT_EQUAL(oc_http_client_call(c, &call, &res), OC_E_INVALID);
    oc_http_result_dispose(&res);
    oc_http_client_destroy(c);
    server_stop(&s);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("http_client", NULL, NULL);
    CU_add_test(s, "no silent re-send on a dead keep-alive connection", test_no_silent_resend);
    CU_add_test(s, "control: CURLOPT_POSTFIELDS re-sends", test_control_postfields_resends);
    CU_add_test(s, "dropped after reading on a fresh connection", test_dropped_on_fresh_connection);
    CU_add_test(s, "connect refused", test_connect_refused);
    CU_add_test(s, "secret in a header or a form body", test_secret_transport);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
