/* Unit tests for the gRPC server and client layer (common/src/rpc.c, rpc_client.c) over loopback.
 */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "omnichat/rpc.h"
#include "omnichat/util.h"

#include "test_main.h"

typedef Grpc__Health__V1__HealthCheckRequest Req;
typedef Grpc__Health__V1__HealthCheckResponse Resp;
#define REQ_DESC (&grpc__health__v1__health_check_request__descriptor)
#define RESP_DESC (&grpc__health__v1__health_check_response__descriptor)
#define ST_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define ST_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define HEALTH "/grpc.health.v1.Health/Check"

static atomic_int g_count_runs;
static atomic_int g_worker_inits, g_worker_finis, g_completions;
static atomic_int g_deadline_statuses; /* completions sent as DEADLINE_EXCEEDED */
/* Callbacks run on server threads, where CUnit's asserts are not safe: they count here. */
static atomic_int g_callback_errors;
static atomic_int g_sleeps_started; /* "sleep:" handlers that have begun */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Echo: the request's service string drives the behaviour under test. */
static oc_err_t echo(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const char *in = ((const Req *)req)->service;
    const char *out = in;
    /* Every call starts with a clean context. */
    if (ctx->tenant_id[0] != '\0' || ctx->err.code != OC_OK)
        atomic_fetch_add(&g_callback_errors, 1);
    snprintf(ctx->tenant_id, sizeof(ctx->tenant_id), "tenant-of-%s", in);
    if (strcmp(in, "fail:notfound") == 0)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "contact 42 not found");
    if (strcmp(in, "fail:nomsg") == 0) return OC_E_FAILED_PRECONDITION;
    if (strcmp(in, "fail:noresp") == 0) return OC_OK;
    if (strncmp(in, "sleep:", 6) == 0) {
        atomic_fetch_add(&g_sleeps_started, 1);
        usleep((useconds_t)atoi(in + 6) * 1000);
    }
    if (strcmp(in, "count") == 0) atomic_fetch_add(&g_count_runs, 1);
    if (strcmp(in, "rid") == 0) out = ctx->request_id;
    if (strcmp(in, "worker") == 0) out = ctx->worker ? (const char *)ctx->worker : "none";
    if (strcmp(in, "deadline") == 0)
        out = ctx->deadline_us == INT64_MAX
                  ? "none"
                  : oc_arena_sprintf(ctx->arena, "%lld",
                                     (long long)(ctx->deadline_us - oc_now_us()) / 1000);
    if (strcmp(in, "method") == 0) out = ctx->method;
    Req *r = oc_arena_alloc(ctx->arena, sizeof(*r));
    grpc__health__v1__health_check_request__init(r);
    r->service = oc_arena_strdup(ctx->arena, out);
    *resp = &r->base;
    return OC_OK;
}

/* Waits (up to 10 s) until n more "sleep:" handlers than `before` have begun. */
static bool wait_sleeps_started(int before, int n)
{
    for (int i = 0; i < 2000 && atomic_load(&g_sleeps_started) < before + n; i++)
        usleep(5000);
    return atomic_load(&g_sleeps_started) >= before + n;
}

static oc_err_t check(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)req;
    Resp *r = oc_arena_alloc(ctx->arena, sizeof(*r));
    grpc__health__v1__health_check_response__init(r);
    r->status = ST_SERVING;
    *resp = &r->base;
    return OC_OK;
}

static const oc_rpc_method_t g_methods[] = {
    {"/test.Echo/Echo", REQ_DESC, REQ_DESC, echo, OC_RPC_ROLE_OPERATOR, NULL, NULL},
    {"/test.Echo/Check", REQ_DESC, RESP_DESC, check, OC_RPC_ROLE_OPERATOR, NULL, NULL},
    {"/test.Other/Ping", REQ_DESC, REQ_DESC, echo, OC_RPC_ROLE_OPERATOR, NULL, NULL},
};
#define NMETHODS (sizeof(g_methods) / sizeof(g_methods[0]))

static void *worker_init(void *arg, int index)
{
    if (arg != &g_worker_inits) atomic_fetch_add(&g_callback_errors, 1);
    atomic_fetch_add(&g_worker_inits, 1);
    char *w = malloc(16);
    snprintf(w, 16, "w%d", index);
    return w;
}

static void worker_fini(void *w)
{
    atomic_fetch_add(&g_worker_finis, 1);
    free(w);
}

static void on_complete(void *user, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    if (user != &g_completions || latency_us < 0 || !ctx->method || !ctx->arena ||
        (strcmp(ctx->method, "/test.Echo/Echo") == 0 && status == 0 &&
         strncmp(ctx->tenant_id, "tenant-of-", 10) != 0))
        atomic_fetch_add(&g_callback_errors, 1);
    if (status == 4) atomic_fetch_add(&g_deadline_statuses, 1);
    atomic_fetch_add(&g_completions, 1);
}

static oc_rpc_server_t *start_server(const char *listen, int workers, size_t max_msg,
                                     oc_error_t *err)
{
    oc_rpc_server_opts_t o = {
        .listen = listen,
        .workers = workers,
        .max_message_bytes = max_msg,
        .worker_init = worker_init,
        .worker_fini = worker_fini,
        .worker_arg = &g_worker_inits,
        .user = &g_completions,
        .on_complete = on_complete,
    };
    oc_rpc_server_t *s = oc_rpc_server_create(&o, g_methods, NMETHODS, err);
    if (!s) return NULL;
    if (oc_rpc_server_start(s, err) != OC_OK) {
        oc_rpc_server_destroy(s);
        return NULL;
    }
    return s;
}

static oc_rpc_client_t *client_for(const oc_rpc_server_t *s)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", oc_rpc_server_port(s));
    oc_error_t err;
    oc_error_clear(&err);
    oc_rpc_client_t *c = oc_rpc_client_create(target, &err);
    if (!c) fprintf(stderr, "client: %s\n", err.msg);
    return c;
}

static oc_rpc_server_t *g_srv;
static oc_rpc_client_t *g_cli;

/* One Echo call; returns the error, fills *out (arena-owned) and *status. */
static oc_err_t call_echo(oc_rpc_client_t *c, const char *method, const char *in, int timeout_ms,
                          const char *rid, oc_arena_t *a, const char **out, int *status,
                          oc_error_t *err)
{
    Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)in;
    ProtobufCMessage *resp = NULL;
    oc_error_clear(err);
    oc_err_t rc =
        oc_rpc_client_call(c, method, &req.base, REQ_DESC, timeout_ms, rid, a, &resp, status, err);
    if (out) *out = rc == OC_OK ? ((Req *)resp)->service : NULL;
    return rc;
}

static oc_err_t call_health(oc_rpc_client_t *c, const char *service, int *serving, int *status)
{
    Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    oc_arena_t *a = oc_arena_create(0);
    ProtobufCMessage *resp = NULL;
    oc_error_t err;
    oc_error_clear(&err);
    oc_err_t rc =
        oc_rpc_client_call(c, HEALTH, &req.base, RESP_DESC, 2000, NULL, a, &resp, status, &err);
    *serving = rc == OC_OK ? (int)((Resp *)resp)->status : -1;
    oc_arena_destroy(a);
    return rc;
}

static int suite_init(void)
{
    oc_error_t err;
    oc_error_clear(&err);
    g_srv = start_server("127.0.0.1:0", 16, 0, &err);
    if (!g_srv) {
        fprintf(stderr, "server: %s\n", err.msg);
        return 1;
    }
    g_cli = client_for(g_srv);
    return g_cli ? 0 : 1;
}

static int suite_clean(void)
{
    oc_rpc_client_destroy(g_cli);
    oc_rpc_server_destroy(g_srv);
    return 0;
}

static void test_callbacks_clean(void)
{
    CU_ASSERT_EQUAL(atomic_load(&g_callback_errors), 0);
}

static void test_round_trip(void)
{
    oc_arena_t *a = oc_arena_create(0);
    oc_error_t err;
    const char *out;
    int status = -1;
    int before = atomic_load(&g_completions);
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "hello", 2000, NULL, a, &out, &status, &err), OC_OK);
    CU_ASSERT_EQUAL(status, 0);
    CU_ASSERT_STRING_EQUAL(out, "hello");
    /* Empty response message (zero bytes on the wire) is still a message. */
    CU_ASSERT_EQUAL(call_echo(g_cli, "/test.Echo/Echo", "", 2000, NULL, a, &out, &status, &err),
                    OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "");
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Other/Ping", "method", 2000, NULL, a, &out, &status, &err), OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "/test.Other/Ping");
    /* Worker state from worker_init reaches the handler. */
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "worker", 2000, NULL, a, &out, &status, &err), OC_OK);
    CU_ASSERT_EQUAL(out[0], 'w');
    /* Workers initialise concurrently with serving; all 16 are up within moments. */
    for (int i = 0; i < 1000 && atomic_load(&g_worker_inits) < 16; i++)
        usleep(1000);
    CU_ASSERT_EQUAL(atomic_load(&g_worker_inits), 16);
    /* Deadlines reach the handler on the oc_now_us clock. */
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "deadline", 0, NULL, a, &out, &status, &err), OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "none");
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "deadline", 5000, NULL, a, &out, &status, &err), OC_OK);
    /* grpc-timeout is rounded up on the wire, so the server may see a few ms more. */
    long left = atol(out);
    CU_ASSERT(left > 4000 && left <= 5100);
    /* on_complete runs after the status is sent, so allow it a moment. */
    for (int i = 0; i < 100 && atomic_load(&g_completions) < before + 6; i++)
        usleep(1000);
    CU_ASSERT_EQUAL(atomic_load(&g_completions), before + 6);
    oc_arena_destroy(a);
}

static void test_handler_errors(void)
{
    oc_arena_t *a = oc_arena_create(0);
    oc_error_t err;
    int status = -1;
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "fail:notfound", 2000, NULL, a, NULL, &status, &err),
        OC_E_NOT_FOUND);
    CU_ASSERT_EQUAL(status, 5);
    CU_ASSERT_EQUAL(err.code, OC_E_NOT_FOUND);
    CU_ASSERT_STRING_EQUAL(err.msg, "contact 42 not found");
    /* No message recorded: the table's default message is sent. */
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "fail:nomsg", 2000, NULL, a, NULL, &status, &err),
        OC_E_FAILED_PRECONDITION);
    CU_ASSERT_EQUAL(status, 9);
    CU_ASSERT_STRING_EQUAL(err.msg, "failed precondition");
    /* OK without a response is a server bug, reported as INTERNAL. */
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "fail:noresp", 2000, NULL, a, NULL, &status, &err),
        OC_E_INTERNAL);
    CU_ASSERT_EQUAL(status, 13);
    oc_arena_destroy(a);
}

static void test_unimplemented(void)
{
    oc_arena_t *a = oc_arena_create(0);
    oc_error_t err;
    int status = -1;
    const char *paths[] = {"/test.Echo/Nope", "/nope.Svc/X", "/grpc.health.v1.Health/Watch"};
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(call_echo(g_cli, paths[i], "x", 2000, NULL, a, NULL, &status, &err),
                        OC_E_UNIMPLEMENTED);
        CU_ASSERT_EQUAL(status, 12);
    }
    oc_arena_destroy(a);
}

static void test_health(void)
{
    int serving, status;
    CU_ASSERT_EQUAL(call_health(g_cli, "", &serving, &status), OC_OK);
    CU_ASSERT_EQUAL(serving, ST_SERVING);
    CU_ASSERT_EQUAL(call_health(g_cli, "test.Echo", &serving, &status), OC_OK);
    CU_ASSERT_EQUAL(serving, ST_SERVING);
    CU_ASSERT_EQUAL(call_health(g_cli, "test.Other", &serving, &status), OC_OK);
    CU_ASSERT_EQUAL(serving, ST_SERVING);
    CU_ASSERT_EQUAL(call_health(g_cli, "test.Nope", &serving, &status), OC_E_NOT_FOUND);
    CU_ASSERT_EQUAL(status, 5);
    oc_rpc_server_set_serving(g_srv, false);
    CU_ASSERT_EQUAL(call_health(g_cli, "", &serving, &status), OC_OK);
    CU_ASSERT_EQUAL(serving, ST_NOT_SERVING);
    CU_ASSERT_EQUAL(call_health(g_cli, "test.Echo", &serving, &status), OC_OK);
    CU_ASSERT_EQUAL(serving, ST_NOT_SERVING);
    CU_ASSERT_EQUAL(call_health(g_cli, "test.Nope", &serving, &status), OC_E_NOT_FOUND);
    oc_rpc_server_set_serving(g_srv, true);
    CU_ASSERT_EQUAL(call_health(g_cli, "", &serving, &status), OC_OK);
    CU_ASSERT_EQUAL(serving, ST_SERVING);
}

static void test_request_id(void)
{
    oc_arena_t *a = oc_arena_create(0);
    oc_error_t err;
    const char *out;
    int status;
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "rid", 2000, "req-123 abc", a, &out, &status, &err),
        OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "req-123 abc");
    CU_ASSERT_EQUAL(call_echo(g_cli, "/test.Echo/Echo", "rid", 2000, NULL, a, &out, &status, &err),
                    OC_OK);
    CU_ASSERT(oc_uuid_valid(out));
    char longid[101];
    memset(longid, 'r', 100);
    longid[100] = '\0';
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "rid", 2000, longid, a, &out, &status, &err), OC_OK);
    CU_ASSERT_EQUAL(strlen(out), 63);
    /* Not printable: refused by the client before anything is sent. */
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "rid", 2000, "bad\nid", a, &out, &status, &err),
        OC_E_INVALID);
    oc_arena_destroy(a);
}

static void test_client_deadline(void)
{
    oc_arena_t *a = oc_arena_create(0);
    oc_error_t err;
    int status;
    int64_t t0 = mono_ms();
    CU_ASSERT_EQUAL(
        call_echo(g_cli, "/test.Echo/Echo", "sleep:600", 100, NULL, a, NULL, &status, &err),
        OC_E_DEADLINE);
    int64_t took = mono_ms() - t0;
    CU_ASSERT_EQUAL(status, 4);
    CU_ASSERT(took >= 90 && took < 500);
    oc_arena_destroy(a);
}

/* Sends raw bytes to a method with gRPC core directly; returns the status and details. */
static int raw_call(int port, const char *method, const void *bytes, size_t n, char *details,
                    size_t cap)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(method), NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(3000, GPR_TIMESPAN)), NULL);
    grpc_slice sl = grpc_slice_from_copied_buffer(bytes, n);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_byte_buffer *rb = NULL;
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice det = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &rb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &det;
    CU_ASSERT_EQUAL(grpc_call_start_batch(call, ops, 6, (void *)1, NULL), GRPC_CALL_OK);
    grpc_event ev =
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    CU_ASSERT(ev.success);
    snprintf(details, cap, "%.*s", (int)GRPC_SLICE_LENGTH(det), GRPC_SLICE_START_PTR(det));
    grpc_slice_unref(det);
    if (rb) grpc_byte_buffer_destroy(rb);
    grpc_byte_buffer_destroy(bb);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    return st;
}

static void test_malformed(void)
{
    char det[256];
    /* Field 1, length 5, but only two bytes follow. */
    static const unsigned char garbage[] = {0x0a, 0x05, 'a', 'b'};
    CU_ASSERT_EQUAL(raw_call(oc_rpc_server_port(g_srv), "/test.Echo/Echo", garbage, sizeof(garbage),
                             det, sizeof(det)),
                    GRPC_STATUS_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(det, "request: malformed protobuf");
    static const unsigned char ff[] = {0xff, 0xff, 0xff, 0xff};
    CU_ASSERT_EQUAL(
        raw_call(oc_rpc_server_port(g_srv), "/test.Echo/Echo", ff, sizeof(ff), det, sizeof(det)),
        GRPC_STATUS_INVALID_ARGUMENT);
    /* A message of another type: field 1 as a varint where a string is expected. */
    Resp other = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    other.status = ST_SERVING;
    oc_arena_t *a = oc_arena_create(0);
    ProtobufCMessage *resp = NULL;
    oc_error_t err;
    oc_error_clear(&err);
    int status = -1;
    CU_ASSERT_EQUAL(oc_rpc_client_call(g_cli, "/test.Echo/Echo", &other.base, REQ_DESC, 2000, NULL,
                                       a, &resp, &status, &err),
                    OC_E_INVALID);
    CU_ASSERT_EQUAL(status, 3);
    CU_ASSERT_STRING_EQUAL(err.msg, "request: malformed protobuf");
    oc_arena_destroy(a);
}

typedef struct load_arg {
    int id;
    int calls;
    const char *payload; /* NULL: a unique string per call */
    int timeout_ms;
    oc_rpc_client_t *client;
    int ok;
    oc_err_t last;
} load_arg_t;

static void *load_thread(void *p)
{
    load_arg_t *la = p;
    oc_arena_t *a = oc_arena_create(0);
    for (int i = 0; i < la->calls; i++) {
        char in[64];
        snprintf(in, sizeof(in), "t%d-c%d", la->id, i);
        const char *send = la->payload ? la->payload : in;
        const char *out;
        oc_error_t err;
        int status;
        la->last = call_echo(la->client, "/test.Echo/Echo", send, la->timeout_ms, NULL, a, &out,
                             &status, &err);
        if (la->last == OC_OK && strcmp(out, send) == 0) la->ok++;
        oc_arena_reset(a);
    }
    oc_arena_destroy(a);
    return NULL;
}

static void test_concurrent(void)
{
    enum { THREADS = 64, CALLS = 200 };
    pthread_t th[THREADS];
    load_arg_t la[THREADS];
    int64_t t0 = mono_ms();
    for (int i = 0; i < THREADS; i++) {
        la[i] = (load_arg_t){.id = i, .calls = CALLS, .timeout_ms = 10000, .client = g_cli};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, load_thread, &la[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += la[i].ok;
    }
    int64_t ms = mono_ms() - t0;
    CU_ASSERT_EQUAL(ok, THREADS * CALLS);
    printf("\n    %d calls from %d threads in %lld ms: %.0f calls/s\n", ok, THREADS, (long long)ms,
           ms > 0 ? ok * 1000.0 / (double)ms : 0.0);
}

static void test_busy_port(void)
{
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", oc_rpc_server_port(g_srv));
    oc_rpc_server_opts_t o = {.listen = listen, .workers = 2};
    oc_error_t err;
    oc_error_clear(&err);
    oc_rpc_server_t *s = oc_rpc_server_create(&o, g_methods, NMETHODS, &err);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(err.code, OC_E_IO);
    oc_rpc_server_destroy(s);
    /* Invalid tables are refused before anything is bound. */
    oc_rpc_method_t bad = {"noslash", REQ_DESC, REQ_DESC, echo, 0, NULL, NULL};
    o.listen = "127.0.0.1:0";
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_rpc_server_create(&o, &bad, 1, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_INVALID);
    /* Created but never started: destroy still tears everything down. */
    oc_error_clear(&err);
    s = oc_rpc_server_create(&o, g_methods, NMETHODS, &err);
    CU_ASSERT_PTR_NOT_NULL(s);
    CU_ASSERT(oc_rpc_server_port(s) > 0);
    oc_rpc_server_destroy(s);
}

/* A call that arrives after its deadline (queued behind the only, busy worker) is answered
 * DEADLINE_EXCEEDED without running the handler; oversized requests are refused. */
static void test_server_side_deadline_and_limit(void)
{
    oc_error_t err;
    oc_error_clear(&err);
    oc_rpc_server_t *s = start_server("127.0.0.1:0", 1, 1024, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    oc_rpc_client_t *c = client_for(s);
    pthread_t th;
    load_arg_t busy = {
        .id = 0, .calls = 1, .payload = "sleep:400", .timeout_ms = 5000, .client = c};
    int sleeps = atomic_load(&g_sleeps_started);
    pthread_create(&th, NULL, load_thread, &busy);
    /* The single worker is busy once the sleeping handler has begun. */
    CU_ASSERT_TRUE_FATAL(wait_sleeps_started(sleeps, 1));
    oc_arena_t *a = oc_arena_create(0);
    int status;
    atomic_store(&g_count_runs, 0);
    int deadlines = atomic_load(&g_deadline_statuses);
    CU_ASSERT_EQUAL(call_echo(c, "/test.Echo/Echo", "count", 100, NULL, a, NULL, &status, &err),
                    OC_E_DEADLINE);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(busy.ok, 1);
    /* Let the single worker reach the queued call. */
    for (int i = 0; i < 200 && atomic_load(&g_deadline_statuses) == deadlines; i++)
        usleep(5000);
    CU_ASSERT_EQUAL(atomic_load(&g_deadline_statuses), deadlines + 1);
    CU_ASSERT_EQUAL(atomic_load(&g_count_runs), 0);

    char big[2048];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CU_ASSERT_EQUAL(call_echo(c, "/test.Echo/Echo", big, 2000, NULL, a, NULL, &status, &err),
                    OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(status, 8);
    const char *out;
    CU_ASSERT_EQUAL(call_echo(c, "/test.Echo/Echo", "small", 2000, NULL, a, &out, &status, &err),
                    OC_OK);
    oc_arena_destroy(a);
    oc_rpc_client_destroy(c);
    oc_rpc_server_destroy(s);
}

static void run_shutdown(int grace_ms, const char *payload, bool expect_ok)
{
    enum { N = 8 };
    oc_error_t err;
    oc_error_clear(&err);
    int inits = atomic_load(&g_worker_inits), finis = atomic_load(&g_worker_finis);
    oc_rpc_server_t *s = start_server("127.0.0.1:0", 4, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    oc_rpc_client_t *c = client_for(s);
    pthread_t th[N];
    load_arg_t la[N];
    for (int i = 0; i < N; i++) {
        la[i] =
            (load_arg_t){.id = i, .calls = 1, .payload = payload, .timeout_ms = 10000, .client = c};
        pthread_create(&th[i], NULL, load_thread, &la[i]);
    }
    /* 150 ms for the eight calls to reach the server (four running, four queued) before the
     * shutdown starts: a call arriving after it would be refused, which is another test. */
    usleep(150 * 1000);
    int64_t t0 = mono_ms();
    oc_rpc_server_shutdown(s, grace_ms);
    int64_t took = mono_ms() - t0;
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += la[i].ok;
    }
    if (expect_ok) {
        CU_ASSERT_EQUAL(ok, N);
    } else {
        CU_ASSERT_EQUAL(ok, 0);
        for (int i = 0; i < N; i++)
            CU_ASSERT(la[i].last == OC_E_CANCELLED || la[i].last == OC_E_UNAVAILABLE);
        CU_ASSERT(took >= grace_ms);
    }
    CU_ASSERT(took < 5000);
    CU_ASSERT_EQUAL(atomic_load(&g_worker_inits) - inits, 4);
    CU_ASSERT_EQUAL(atomic_load(&g_worker_finis) - finis, 4);
    /* Nothing listens after shutdown: the client reports UNAVAILABLE. */
    oc_arena_t *a = oc_arena_create(0);
    int status;
    CU_ASSERT_EQUAL(call_echo(c, "/test.Echo/Echo", "x", 1000, NULL, a, NULL, &status, &err),
                    OC_E_UNAVAILABLE);
    CU_ASSERT_EQUAL(status, 14);
    oc_arena_destroy(a);
    oc_rpc_server_destroy(s);
    oc_rpc_client_destroy(c);
}

static void test_shutdown_graceful(void)
{
    /* 8 calls on 4 workers: half wait in the queue and still complete within the grace. */
    run_shutdown(3000, "sleep:300", true);
}

static void test_shutdown_cancels(void)
{
    run_shutdown(100, "sleep:800", false);
}

typedef struct sleeper {
    oc_rpc_client_t *c;
    oc_err_t rc;
} sleeper_t;

static void *sleep_call(void *p)
{
    sleeper_t *sl = p;
    oc_arena_t *a = oc_arena_create(0);
    oc_error_t err;
    int status = 0;
    sl->rc = call_echo(sl->c, "/test.Echo/Echo", "sleep:1500", 10000, NULL, a, NULL, &status, &err);
    oc_arena_destroy(a);
    return NULL;
}

/* Waits up to ms for oc_rpc_server_healthy to become `want`; returns whether it did. */
static bool await_healthy(oc_rpc_server_t *s, bool want, int ms, char *detail, size_t n)
{
    int64_t until = mono_ms() + ms;
    while (mono_ms() < until) {
        if (oc_rpc_server_healthy(s, detail, n) == want) return true;
        usleep(20 * 1000);
    }
    return false;
}

static void test_health_probe_follows_grpc_path(void)
{
    /* One worker, blocked by a slow call: the self-probe cannot be served, so the server
     * reports unhealthy (with the reason) until the worker is free again. */
    oc_error_t err;
    oc_rpc_server_opts_t o = {
        .listen = "127.0.0.1:0", .workers = 1, .housekeeping_ms = 100, .probe_timeout_ms = 300};
    oc_rpc_server_t *s = oc_rpc_server_create(&o, g_methods, NMETHODS, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(oc_rpc_server_start(s, &err), OC_OK);
    char detail[256];
    CU_ASSERT_TRUE(await_healthy(s, true, 2000, detail, sizeof detail));
    sleeper_t sl = {client_for(s), OC_E_INTERNAL};
    pthread_t t;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, sleep_call, &sl), 0);
    CU_ASSERT_TRUE(await_healthy(s, false, 1400, detail, sizeof detail));
    CU_ASSERT_PTR_NOT_NULL(strstr(detail, "grpc self-check failed"));
    pthread_join(t, NULL);
    CU_ASSERT_EQUAL(sl.rc, OC_OK);
    CU_ASSERT_TRUE(await_healthy(s, true, 3000, NULL, 0));
    oc_rpc_client_destroy(sl.c);
    oc_rpc_server_destroy(s);
}

static atomic_int probes_seen;

static void count_probes(void *user, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    (void)user;
    (void)latency_us;
    if (strcmp(ctx->request_id, "health-probe") == 0 && status == 0)
        atomic_fetch_add(&probes_seen, 1);
}

static void test_not_serving_is_still_alive(void)
{
    /* NOT_SERVING is readiness (a dependency down, a drain): the self-probe gets an answer, so
     * liveness holds, or an orchestrator would restart a process that works. */
    oc_error_t err;
    oc_rpc_server_opts_t o = {.listen = "127.0.0.1:0",
                              .workers = 1,
                              .housekeeping_ms = 100,
                              .probe_timeout_ms = 300,
                              .on_complete = count_probes};
    oc_rpc_server_t *s = oc_rpc_server_create(&o, g_methods, NMETHODS, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(oc_rpc_server_start(s, &err), OC_OK);
    oc_rpc_server_set_serving(s, false);
    int before = atomic_load(&probes_seen);
    /* Positive control: probes of the NOT_SERVING server ran and were answered. */
    for (int i = 0; i < 300 && atomic_load(&probes_seen) < before + 3; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CU_ASSERT_TRUE(atomic_load(&probes_seen) >= before + 3);
    CU_ASSERT_TRUE(oc_rpc_server_healthy(s, NULL, 0));
    oc_rpc_server_destroy(s);
}

static void test_connection_cap(void)
{
    /* 60 idle HTTP/2 connections against a cap of 20: the newest 40 are closed by the server
     * within a few housekeeping periods, and calls on a new connection still work. */
    enum { N = 60, CAP = 20 };
    static const char hello[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0";
    oc_error_t err;
    oc_rpc_server_opts_t o = {
        .listen = "127.0.0.1:0", .workers = 2, .housekeeping_ms = 100, .max_connections = CAP};
    oc_rpc_server_t *s = oc_rpc_server_create(&o, g_methods, NMETHODS, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(oc_rpc_server_start(s, &err), OC_OK);
    int fds[N];
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)oc_rpc_server_port(s)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        CU_ASSERT_EQUAL_FATAL(connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
        CU_ASSERT(write(fds[i], hello, sizeof hello - 1) == (ssize_t)(sizeof hello - 1));
    }
    /* Count connections the server ended (EOF or reset), reading whatever it sent first. */
    int closed = 0;
    bool done[N] = {false};
    int64_t until = mono_ms() + 5000;
    while (closed < N - CAP && mono_ms() < until) {
        for (int i = 0; i < N; i++) {
            if (done[i]) continue;
            char buf[512];
            ssize_t r = recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                done[i] = true;
                closed++;
            }
        }
        usleep(20 * 1000);
    }
    CU_ASSERT(closed >= N - CAP);
    CU_ASSERT(closed <= N - CAP + 2); /* the probe's own connection may take a slot */
    oc_rpc_client_t *c = client_for(s);
    oc_arena_t *a = oc_arena_create(0);
    int status = -1;
    const char *out = NULL;
    CU_ASSERT_EQUAL(call_echo(c, "/test.Echo/Echo", "hi", 5000, NULL, a, &out, &status, &err),
                    OC_OK);
    oc_arena_destroy(a);
    oc_rpc_client_destroy(c);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    oc_rpc_server_destroy(s);
}

int main(void)
{
    /* Core log lines (the busy-port bind error) come out as JSON lines from here on. */
    oc_rpc_route_core_logs();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("rpc", suite_init, suite_clean);
    CU_add_test(s, "NOT_SERVING is still alive", test_not_serving_is_still_alive);
    CU_add_test(s, "unary round trip", test_round_trip);
    CU_add_test(s, "handler errors carry status and message", test_handler_errors);
    CU_add_test(s, "unknown methods are UNIMPLEMENTED", test_unimplemented);
    CU_add_test(s, "health check", test_health);
    CU_add_test(s, "x-request-id", test_request_id);
    CU_add_test(s, "client deadline", test_client_deadline);
    CU_add_test(s, "malformed payload", test_malformed);
    CU_add_test(s, "64 concurrent clients", test_concurrent);
    CU_add_test(s, "busy port, bad table, unstarted server", test_busy_port);
    CU_add_test(s, "expired on arrival, size limit", test_server_side_deadline_and_limit);
    CU_add_test(s, "graceful shutdown with calls in flight", test_shutdown_graceful);
    CU_add_test(s, "shutdown cancels after grace", test_shutdown_cancels);
    CU_add_test(s, "health probe follows the gRPC path", test_health_probe_follows_grpc_path);
    CU_add_test(s, "connections over the cap are shed", test_connection_cap);
    CU_add_test(s, "server callbacks saw what they expected", test_callbacks_clean);
    int failed = oc_test_run();
    return failed ? 1 : 0;
}
