/* Unit tests for streaming calls (common/src/rpc_stream.c) over loopback, with a gRPC core
 * client: order, backpressure, cancellation, deadlines, shutdown and a producer racing cancels. */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "omnichat/rpc.h"
#include "omnichat/util.h"

#include "test_main.h"

typedef Grpc__Health__V1__HealthCheckRequest Msg;
#define MSG_DESC (&grpc__health__v1__health_check_request__descriptor)

/* Callbacks run on server threads, where CUnit's asserts are not safe: they count here. */
static atomic_int g_errors;
static atomic_int g_starts, g_cancels, g_dones, g_writables, g_agains, g_completions;
static atomic_int g_last_done_status, g_last_complete_status;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to 10 s for *v >= n. */
static bool await_at_least(atomic_int *v, int n)
{
    for (int64_t end = mono_ms() + 10000; mono_ms() < end; usleep(2000))
        if (atomic_load(v) >= n) return true;
    return atomic_load(v) >= n;
}

static void reset_counters(void)
{
    atomic_store(&g_starts, 0);
    atomic_store(&g_cancels, 0);
    atomic_store(&g_dones, 0);
    atomic_store(&g_writables, 0);
    atomic_store(&g_agains, 0);
    atomic_store(&g_completions, 0);
    atomic_store(&g_last_done_status, -1);
    atomic_store(&g_last_complete_status, -1);
}

static Msg *new_msg(oc_arena_t *a, const char *text)
{
    Msg *m = oc_arena_alloc(a, sizeof(*m));
    grpc__health__v1__health_check_request__init(m);
    m->service = oc_arena_strdup(a, text);
    return m;
}

/* ---- server methods ---- */

/* Count: "count:N[:SIZE]" streams N messages "i:<padding>" (SIZE bytes), pushing while the
 * queue has room and going on from on_writable. */
typedef struct counter {
    int next, n, size;
    bool abort_when_full; /* "count:N:SIZE:abort": a slow consumer is ended at once */
} counter_t;

static void count_pump(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx)
{
    counter_t *c = oc_rpc_stream_data(st);
    while (c->next < c->n) {
        oc_arena_t *a = oc_arena_create(0);
        char *text = oc_arena_alloc(a, (size_t)c->size + 32);
        int k = snprintf(text, 32, "%d:", c->next);
        memset(text + k, 'x', (size_t)c->size);
        text[k + c->size] = '\0';
        oc_err_t rc = oc_rpc_stream_send(st, &new_msg(a, text)->base);
        oc_arena_destroy(a);
        if (rc == OC_E_AGAIN) {
            atomic_fetch_add(&g_agains, 1);
            if (c->abort_when_full) oc_rpc_stream_abort(st, OC_E_UNAVAILABLE, "too slow");
            return;
        }
        if (rc != OC_OK) {
            atomic_fetch_add(&g_errors, 1);
            return;
        }
        c->next++;
    }
    (void)ctx;
    oc_rpc_stream_end(st, OC_OK, NULL, NULL);
}

static oc_err_t count_start(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req)
{
    const char *in = ((const Msg *)req)->service;
    counter_t *c = oc_arena_alloc(ctx->arena, sizeof(*c));
    *c = (counter_t){0, 0, 1, strstr(in, ":abort") != NULL};
    if (sscanf(in, "count:%d:%d", &c->n, &c->size) < 1 || c->n < 0)
        return oc_error_set(&ctx->err, OC_E_INVALID, "bad count request");
    atomic_fetch_add(&g_starts, 1);
    oc_rpc_stream_set_data(st, c);
    count_pump(st, ctx);
    return OC_OK;
}

static void count_writable(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx)
{
    /* On a worker thread: ctx->worker is that thread's state, not the starting one's. */
    if (!ctx->worker || strcmp(ctx->worker, "worker") != 0) atomic_fetch_add(&g_errors, 1);
    atomic_fetch_add(&g_writables, 1);
    count_pump(st, ctx);
}

static void on_cancel(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx)
{
    (void)st;
    (void)ctx;
    atomic_fetch_add(&g_cancels, 1);
}

static void on_done(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, int status)
{
    (void)st;
    (void)ctx;
    atomic_store(&g_last_done_status, status);
    atomic_fetch_add(&g_dones, 1);
}

static const oc_rpc_stream_handlers_t count_handlers = {
    .queue_max = 4,
    .on_start = count_start,
    .on_writable = count_writable,
    .on_cancel = on_cancel,
    .on_done = on_done,
};

/* Idle: sends nothing until shutdown, which sends "bye" and ends with UNAVAILABLE. */
static oc_err_t idle_start(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req)
{
    (void)st;
    (void)ctx;
    (void)req;
    atomic_fetch_add(&g_starts, 1);
    return OC_OK;
}

static void idle_shutdown(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx)
{
    if (oc_rpc_stream_end(st, OC_E_UNAVAILABLE, "going away", &new_msg(ctx->arena, "bye")->base) !=
        OC_OK)
        atomic_fetch_add(&g_errors, 1);
}

static const oc_rpc_stream_handlers_t idle_handlers = {
    .on_start = idle_start,
    .on_cancel = on_cancel,
    .on_shutdown = idle_shutdown,
    .on_done = on_done,
};

/* Echo (bidirectional): answers each message with "echo:<text>". */
static oc_err_t echo_message(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *msg,
                             oc_arena_t *arena)
{
    (void)ctx;
    const char *in = ((const Msg *)msg)->service;
    if (strcmp(in, "fail") == 0) return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "no such thing");
    oc_err_t rc =
        oc_rpc_stream_send(st, &new_msg(arena, oc_arena_sprintf(arena, "echo:%s", in))->base);
    if (rc != OC_OK) atomic_fetch_add(&g_errors, 1);
    return OC_OK;
}

static const oc_rpc_limits_t echo_limits = {.max_request_bytes = 256};

static const oc_rpc_stream_handlers_t echo_handlers = {
    .client_streaming = true,
    .on_start = idle_start,
    .on_message = echo_message,
    .on_cancel = on_cancel,
    .on_done = on_done,
};

/* Race: every stream is registered for a producer thread (with a reference) until on_done. */
#define RACE_MAX 64
static pthread_mutex_t g_race_mu = PTHREAD_MUTEX_INITIALIZER;
static oc_rpc_stream_t *g_race[RACE_MAX];
static atomic_int g_race_sends;

static oc_err_t race_start(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req)
{
    (void)ctx;
    (void)req;
    pthread_mutex_lock(&g_race_mu);
    for (int i = 0; i < RACE_MAX; i++)
        if (!g_race[i]) {
            oc_rpc_stream_ref(st);
            g_race[i] = st;
            break;
        }
    pthread_mutex_unlock(&g_race_mu);
    atomic_fetch_add(&g_starts, 1);
    return OC_OK;
}

static void race_done(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, int status)
{
    bool found = false;
    pthread_mutex_lock(&g_race_mu);
    for (int i = 0; i < RACE_MAX; i++)
        if (g_race[i] == st) {
            g_race[i] = NULL;
            found = true;
        }
    pthread_mutex_unlock(&g_race_mu);
    if (found) oc_rpc_stream_unref(st);
    on_done(st, ctx, status);
}

static const oc_rpc_stream_handlers_t race_handlers = {
    .queue_max = 2,
    .on_start = race_start,
    .on_cancel = on_cancel,
    .on_done = race_done,
};

static oc_err_t unary(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)req;
    *resp = &new_msg(ctx->arena, "unary")->base;
    return OC_OK;
}

static const oc_rpc_method_t g_methods[] = {
    {.path = "/t.S/Count",
     .input = MSG_DESC,
     .output = MSG_DESC,
     .roles = OC_RPC_ROLE_ANY,
     .limits = NULL,
     .stream = &count_handlers},
    {.path = "/t.S/Idle",
     .input = MSG_DESC,
     .output = MSG_DESC,
     .roles = OC_RPC_ROLE_ANY,
     .limits = NULL,
     .stream = &idle_handlers},
    {.path = "/t.S/Echo",
     .input = MSG_DESC,
     .output = MSG_DESC,
     .roles = OC_RPC_ROLE_ANY,
     .limits = &echo_limits,
     .stream = &echo_handlers},
    {.path = "/t.S/Race",
     .input = MSG_DESC,
     .output = MSG_DESC,
     .roles = OC_RPC_ROLE_ANY,
     .limits = NULL,
     .stream = &race_handlers},
    {.path = "/t.S/Unary",
     .input = MSG_DESC,
     .output = MSG_DESC,
     .handler = unary,
     .roles = OC_RPC_ROLE_ANY,
     .limits = NULL},
};
#define NMETHODS (sizeof(g_methods) / sizeof(g_methods[0]))

static void on_complete(void *user, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    (void)user;
    if (latency_us < 0 || !ctx->method) atomic_fetch_add(&g_errors, 1);
    atomic_store(&g_last_complete_status, status);
    atomic_fetch_add(&g_completions, 1);
}

static void *worker_init(void *arg, int index)
{
    (void)arg;
    (void)index;
    return strdup("worker");
}

static oc_rpc_server_t *start_server(void)
{
    oc_error_t err;
    oc_rpc_server_opts_t o = {
        .listen = "127.0.0.1:0",
        .workers = 4,
        .on_complete = on_complete,
        .worker_init = worker_init,
        .worker_fini = free,
    };
    oc_error_clear(&err);
    oc_rpc_server_t *s = oc_rpc_server_create(&o, g_methods, NMETHODS, &err);
    if (s && oc_rpc_server_start(s, &err) != OC_OK) {
        oc_rpc_server_destroy(s);
        s = NULL;
    }
    if (!s) fprintf(stderr, "server: %s\n", err.msg);
    return s;
}

/* ---- a gRPC core client ---- */

typedef struct cli {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_metadata_array md, trailing;
    grpc_status_code status;
    grpc_slice details;
    bool status_started;
    char tag_send, tag_recv, tag_status;
} cli_t;

static grpc_channel *g_channel;
static oc_rpc_server_t *g_srv;

/* small_window: a client that buffers little for a stream it does not read (no BDP probing,
 * which would grow the window to megabytes), so that the server's sends stall soon. */
static grpc_channel *channel_to_ex(oc_rpc_server_t *s, bool small_window)
{
    char target[64];
    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
         .value.integer = 65536},
    };
    grpc_channel_args cargs = {.num_args = 2, .args = args};
    snprintf(target, sizeof target, "127.0.0.1:%d", oc_rpc_server_port(s));
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, small_window ? &cargs : NULL);
    grpc_channel_credentials_release(creds);
    return ch;
}

static grpc_channel *channel_to(oc_rpc_server_t *s)
{
    return channel_to_ex(s, false);
}

static bool pluck(cli_t *c, void *tag, int timeout_ms)
{
    gpr_timespec until = timeout_ms < 0
                             ? gpr_inf_future(GPR_CLOCK_REALTIME)
                             : gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                            gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, until, NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static grpc_byte_buffer *pack(const char *text)
{
    Msg m = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    m.service = (char *)text;
    size_t n = protobuf_c_message_get_packed_size(&m.base);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(&m.base, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* Starts a call on `ch`; with `first` (server streaming) sends it and half-closes. */
static bool cli_start(cli_t *c, grpc_channel *ch, const char *path, const char *first,
                      int deadline_ms)
{
    memset(c, 0, sizeof(*c));
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_metadata_array_init(&c->md);
    grpc_metadata_array_init(&c->trailing);
    c->details = grpc_empty_slice();
    gpr_timespec deadline = deadline_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(deadline_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_REALTIME);
    c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                       grpc_slice_from_static_string(path), NULL, deadline, NULL);
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    grpc_byte_buffer *bb = first ? pack(first) : NULL;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    /* The server sends its headers as a stream starts (or with a unary response). */
    ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[n++].data.recv_initial_metadata.recv_initial_metadata = &c->md;
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
        ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    }
    bool ok = grpc_call_start_batch(c->call, ops, n, &c->tag_send, NULL) == GRPC_CALL_OK &&
              pluck(c, &c->tag_send, 10000);
    if (bb) grpc_byte_buffer_destroy(bb);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &c->trailing;
    ops[0].data.recv_status_on_client.status = &c->status;
    ops[0].data.recv_status_on_client.status_details = &c->details;
    c->status_started =
        grpc_call_start_batch(c->call, ops, 1, &c->tag_status, NULL) == GRPC_CALL_OK;
    return ok && c->status_started;
}

static bool cli_send(cli_t *c, const char *text, bool close)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    grpc_byte_buffer *bb = text ? pack(text) : NULL;
    if (bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = bb;
    }
    if (close) ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    bool ok = grpc_call_start_batch(c->call, ops, n, &c->tag_send, NULL) == GRPC_CALL_OK &&
              pluck(c, &c->tag_send, 10000);
    if (bb) grpc_byte_buffer_destroy(bb);
    return ok;
}

/* The next message's text (malloc'd), or NULL at the end of the stream. */
static char *cli_recv(cli_t *c)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    if (grpc_call_start_batch(c->call, &op, 1, &c->tag_recv, NULL) != GRPC_CALL_OK) return NULL;
    if (!pluck(c, &c->tag_recv, 10000) || !bb) {
        if (bb) grpc_byte_buffer_destroy(bb);
        return NULL;
    }
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, bb);
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(bb);
    Msg *m = (Msg *)protobuf_c_message_unpack(MSG_DESC, NULL, GRPC_SLICE_LENGTH(sl),
                                              GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    char *out = m ? strdup(m->service) : NULL;
    if (m) protobuf_c_message_free_unpacked(&m->base, NULL);
    return out;
}

/* Waits for the status; returns it (-1 when it never came). */
static int cli_finish(cli_t *c, char *details, size_t n)
{
    int st = -1;
    if (c->status_started && pluck(c, &c->tag_status, 15000)) st = (int)c->status;
    if (details && n) {
        size_t k = GRPC_SLICE_LENGTH(c->details);
        snprintf(details, n, "%.*s", (int)k, (const char *)GRPC_SLICE_START_PTR(c->details));
    }
    return st;
}

static void cli_destroy(cli_t *c)
{
    if (c->call) grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    grpc_metadata_array_destroy(&c->trailing);
    grpc_slice_unref(c->details);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_past(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c->cq);
}

/* ---- tests ---- */

static int suite_init(void)
{
    grpc_init();
    g_srv = start_server();
    if (!g_srv) return 1;
    g_channel = channel_to(g_srv);
    return g_channel ? 0 : 1;
}

static int suite_clean(void)
{
    if (g_channel) grpc_channel_destroy(g_channel);
    oc_rpc_server_destroy(g_srv);
    grpc_shutdown();
    return 0;
}

static void test_server_stream_in_order(void)
{
    cli_t c;
    reset_counters();
    CU_ASSERT_FATAL(cli_start(&c, g_channel, "/t.S/Count", "count:100", 0));
    int got = 0;
    bool in_order = true;
    for (char *m; (m = cli_recv(&c)) != NULL; free(m)) {
        in_order &= atoi(m) == got;
        got++;
    }
    CU_ASSERT_EQUAL(got, 100);
    CU_ASSERT(in_order);
    CU_ASSERT_EQUAL(cli_finish(&c, NULL, 0), GRPC_STATUS_OK);
    cli_destroy(&c);
    CU_ASSERT(await_at_least(&g_completions, 1));
    CU_ASSERT_EQUAL(atomic_load(&g_dones), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), 0);
    CU_ASSERT_EQUAL(atomic_load(&g_last_done_status), GRPC_STATUS_OK);
    CU_ASSERT_EQUAL(atomic_load(&g_last_complete_status), GRPC_STATUS_OK);
}

static void test_backpressure(void)
{
    cli_t c;
    reset_counters();
    /* 48 messages of 64 KiB: far more than HTTP/2 lets through to a client that reads nothing. */
    grpc_channel *ch = channel_to_ex(g_srv, true);
    CU_ASSERT_FATAL(cli_start(&c, ch, "/t.S/Count", "count:48:65536", 0));
    CU_ASSERT(await_at_least(&g_agains, 1)); /* the queue filled and the producer was told */
    /* A few sends may still drain into the transport's window; then it stalls: nothing moves
     * for 100 ms while the client does not read, and the stream is not over. */
    bool stalled = false;
    for (int i = 0; i < 50 && !stalled; i++) {
        int w = atomic_load(&g_writables);
        usleep(100 * 1000);
        stalled = atomic_load(&g_writables) == w;
    }
    CU_ASSERT(stalled);
    CU_ASSERT_EQUAL(atomic_load(&g_dones), 0);
    int got = 0;
    bool in_order = true;
    for (char *m; (m = cli_recv(&c)) != NULL; free(m)) {
        in_order &= atoi(m) == got && strlen(m) > 65536;
        got++;
    }
    CU_ASSERT_EQUAL(got, 48);
    CU_ASSERT(in_order);
    CU_ASSERT(atomic_load(&g_writables) >= 1); /* drained, and the producer went on */
    CU_ASSERT_EQUAL(cli_finish(&c, NULL, 0), GRPC_STATUS_OK);
    cli_destroy(&c);
    grpc_channel_destroy(ch);
    CU_ASSERT(await_at_least(&g_dones, 1));
}

static void test_slow_consumer_aborted(void)
{
    cli_t c;
    char details[64];
    reset_counters();
    grpc_channel *ch = channel_to_ex(g_srv, true);
    CU_ASSERT_FATAL(cli_start(&c, ch, "/t.S/Count", "count:48:65536:abort", 0));
    CU_ASSERT(await_at_least(&g_dones, 1));
    /* The client gets the server's reason, not a cancellation of its own. */
    int got = 0;
    for (char *m; (m = cli_recv(&c)) != NULL; free(m))
        got++;
    CU_ASSERT(got < 48);
    CU_ASSERT_EQUAL(cli_finish(&c, details, sizeof details), GRPC_STATUS_UNAVAILABLE);
    CU_ASSERT_STRING_EQUAL(details, "too slow");
    cli_destroy(&c);
    grpc_channel_destroy(ch);
    CU_ASSERT_EQUAL(atomic_load(&g_agains), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), 0); /* the server ended it: no on_cancel */
    CU_ASSERT_EQUAL(atomic_load(&g_last_done_status), GRPC_STATUS_UNAVAILABLE);
    CU_ASSERT(await_at_least(&g_completions, 1));
    CU_ASSERT_EQUAL(atomic_load(&g_last_complete_status), GRPC_STATUS_UNAVAILABLE);
}

static void test_client_cancel(void)
{
    cli_t c;
    reset_counters();
    CU_ASSERT_FATAL(cli_start(&c, g_channel, "/t.S/Idle", "x", 0));
    CU_ASSERT(await_at_least(&g_starts, 1));
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), 0);
    grpc_call_cancel(c.call, NULL);
    CU_ASSERT_EQUAL(cli_finish(&c, NULL, 0), GRPC_STATUS_CANCELLED);
    cli_destroy(&c);
    CU_ASSERT(await_at_least(&g_completions, 1));
    usleep(50 * 1000); /* a second on_cancel would come now */
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_dones), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_last_done_status), GRPC_STATUS_CANCELLED);
    CU_ASSERT_EQUAL(atomic_load(&g_last_complete_status), GRPC_STATUS_CANCELLED);
}

static void test_deadline(void)
{
    cli_t c;
    reset_counters();
    int64_t t0 = mono_ms();
    CU_ASSERT_FATAL(cli_start(&c, g_channel, "/t.S/Idle", "x", 300));
    CU_ASSERT_EQUAL(cli_finish(&c, NULL, 0), GRPC_STATUS_DEADLINE_EXCEEDED);
    cli_destroy(&c);
    CU_ASSERT(await_at_least(&g_dones, 1));
    CU_ASSERT(mono_ms() - t0 >= 250);
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), 1);
    CU_ASSERT_EQUAL(atomic_load(&g_last_done_status), GRPC_STATUS_DEADLINE_EXCEEDED);
}

static void test_bidi_echo_and_limits(void)
{
    cli_t c;
    char details[128];
    reset_counters();
    CU_ASSERT_FATAL(cli_start(&c, g_channel, "/t.S/Echo", NULL, 0));
    const char *words[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT(cli_send(&c, words[i], false));
        char *m = cli_recv(&c);
        char want[32];
        snprintf(want, sizeof want, "echo:%s", words[i]);
        CU_ASSERT(m && strcmp(m, want) == 0);
        free(m);
    }
    CU_ASSERT(cli_send(&c, NULL, true)); /* half-close: the default ends with OK */
    CU_ASSERT_PTR_NULL(cli_recv(&c));
    CU_ASSERT_EQUAL(cli_finish(&c, NULL, 0), GRPC_STATUS_OK);
    cli_destroy(&c);

    /* A message over the method's limit ends the stream as a unary request would be refused. */
    char big[400];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CU_ASSERT_FATAL(cli_start(&c, g_channel, "/t.S/Echo", NULL, 0));
    CU_ASSERT(cli_send(&c, big, false));
    CU_ASSERT_EQUAL(cli_finish(&c, details, sizeof details), GRPC_STATUS_RESOURCE_EXHAUSTED);
    CU_ASSERT(strstr(details, "at most 256") != NULL);
    cli_destroy(&c);

    /* A handler error ends the stream with its status and message. */
    CU_ASSERT_FATAL(cli_start(&c, g_channel, "/t.S/Echo", NULL, 0));
    CU_ASSERT(cli_send(&c, "fail", false));
    CU_ASSERT_EQUAL(cli_finish(&c, details, sizeof details), GRPC_STATUS_NOT_FOUND);
    CU_ASSERT_STRING_EQUAL(details, "no such thing");
    cli_destroy(&c);
    CU_ASSERT(await_at_least(&g_dones, 3));
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), 0);
}

/* The producer: pushes to every registered stream, holding a reference while it does. */
static atomic_bool g_race_stop;
static void *race_producer(void *arg)
{
    (void)arg;
    oc_arena_t *a = oc_arena_create(0);
    Msg *m = new_msg(a, "tick");
    while (!atomic_load(&g_race_stop)) {
        oc_rpc_stream_t *mine[RACE_MAX];
        int n = 0;
        pthread_mutex_lock(&g_race_mu);
        for (int i = 0; i < RACE_MAX; i++)
            if (g_race[i]) {
                oc_rpc_stream_ref(g_race[i]);
                mine[n++] = g_race[i];
            }
        pthread_mutex_unlock(&g_race_mu);
        for (int i = 0; i < n; i++) {
            oc_err_t rc = oc_rpc_stream_send(mine[i], &m->base);
            if (rc != OC_OK && rc != OC_E_AGAIN && rc != OC_E_CANCELLED)
                atomic_fetch_add(&g_errors, 1);
            if (rc == OC_OK) atomic_fetch_add(&g_race_sends, 1);
            oc_rpc_stream_unref(mine[i]);
        }
        if (n == 0) usleep(200);
    }
    oc_arena_destroy(a);
    return NULL;
}

static void test_push_races_cancel(void)
{
    enum { ROUNDS = 40, AT_ONCE = 8 };
    pthread_t producer;
    reset_counters();
    atomic_store(&g_race_stop, false);
    CU_ASSERT_FATAL(pthread_create(&producer, NULL, race_producer, NULL) == 0);
    srand(42);
    for (int r = 0; r < ROUNDS; r++) {
        cli_t c[AT_ONCE];
        for (int i = 0; i < AT_ONCE; i++)
            CU_ASSERT_FATAL(cli_start(&c[i], g_channel, "/t.S/Race", "x", 0));
        CU_ASSERT(await_at_least(&g_starts, (r + 1) * AT_ONCE));
        /* Some read a little, then all cancel while the producer keeps pushing. */
        for (int i = 0; i < AT_ONCE; i += 2)
            free(cli_recv(&c[i]));
        usleep((useconds_t)(rand() % 2000));
        for (int i = 0; i < AT_ONCE; i++)
            grpc_call_cancel(c[i].call, NULL);
        for (int i = 0; i < AT_ONCE; i++) {
            CU_ASSERT_EQUAL(cli_finish(&c[i], NULL, 0), GRPC_STATUS_CANCELLED);
            cli_destroy(&c[i]);
        }
    }
    CU_ASSERT(await_at_least(&g_dones, ROUNDS * AT_ONCE));
    atomic_store(&g_race_stop, true);
    pthread_join(producer, NULL);
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), ROUNDS * AT_ONCE);
    CU_ASSERT_EQUAL(atomic_load(&g_dones), ROUNDS * AT_ONCE);
    CU_ASSERT(atomic_load(&g_race_sends) > 0); /* the producer did reach live streams */
    pthread_mutex_lock(&g_race_mu);
    for (int i = 0; i < RACE_MAX; i++)
        CU_ASSERT_PTR_NULL(g_race[i]);
    pthread_mutex_unlock(&g_race_mu);
}

static void test_shutdown_with_open_streams(void)
{
    enum { N = 6 };
    cli_t c[N + 1];
    reset_counters();
    oc_rpc_server_t *s = start_server();
    CU_ASSERT_FATAL(s != NULL);
    grpc_channel *ch = channel_to(s);
    for (int i = 0; i < N; i++)
        CU_ASSERT_FATAL(cli_start(&c[i], ch, "/t.S/Idle", "x", 0));
    /* And one bidirectional stream, which has no shutdown hook: UNAVAILABLE by default. */
    CU_ASSERT_FATAL(cli_start(&c[N], ch, "/t.S/Echo", NULL, 0));
    CU_ASSERT(await_at_least(&g_starts, N + 1));
    int64_t t0 = mono_ms();
    oc_rpc_server_shutdown(s, 5000);
    int64_t took = mono_ms() - t0;
    CU_ASSERT(took < 2000); /* ended by the hooks, not by the grace period running out */
    for (int i = 0; i < N; i++) {
        char details[64];
        char *m = cli_recv(&c[i]);
        CU_ASSERT(m && strcmp(m, "bye") == 0); /* the last message, then the status */
        free(m);
        CU_ASSERT_EQUAL(cli_finish(&c[i], details, sizeof details), GRPC_STATUS_UNAVAILABLE);
        CU_ASSERT_STRING_EQUAL(details, "going away");
        cli_destroy(&c[i]);
    }
    CU_ASSERT_EQUAL(cli_finish(&c[N], NULL, 0), GRPC_STATUS_UNAVAILABLE);
    cli_destroy(&c[N]);
    CU_ASSERT_EQUAL(atomic_load(&g_dones), N + 1);
    CU_ASSERT_EQUAL(atomic_load(&g_completions), N + 1);
    CU_ASSERT_EQUAL(atomic_load(&g_cancels), 0);
    grpc_channel_destroy(ch);
    oc_rpc_server_destroy(s);
}

static void test_unary_beside_streams_and_bad_rows(void)
{
    /* A row must have exactly one of handler and stream. */
    static const oc_rpc_stream_handlers_t no_start = {.queue_max = 1};
    oc_rpc_method_t bad[] = {
        {.path = "/t.S/Both",
         .input = MSG_DESC,
         .output = MSG_DESC,
         .handler = unary,
         .roles = OC_RPC_ROLE_ANY,
         .limits = NULL,
         .stream = &idle_handlers},
        {.path = "/t.S/NoStart",
         .input = MSG_DESC,
         .output = MSG_DESC,
         .roles = OC_RPC_ROLE_ANY,
         .limits = NULL,
         .stream = &no_start},
    };
    oc_rpc_server_opts_t o = {.listen = "127.0.0.1:0"};
    for (int i = 0; i < 2; i++) {
        oc_error_t err;
        oc_error_clear(&err);
        CU_ASSERT_PTR_NULL(oc_rpc_server_create(&o, &bad[i], 1, &err));
        CU_ASSERT_EQUAL(err.code, OC_E_INVALID);
    }
    /* The unary row of the same table still works. */
    cli_t c;
    CU_ASSERT_FATAL(cli_start(&c, g_channel, "/t.S/Unary", "x", 0));
    char *m = cli_recv(&c);
    CU_ASSERT(m && strcmp(m, "unary") == 0);
    free(m);
    CU_ASSERT_EQUAL(cli_finish(&c, NULL, 0), GRPC_STATUS_OK);
    cli_destroy(&c);
}

static void test_callbacks_clean(void)
{
    CU_ASSERT_EQUAL(atomic_load(&g_errors), 0);
}

int main(void)
{
    oc_rpc_route_core_logs();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("rpc_stream", suite_init, suite_clean);
    CU_add_test(s, "server stream of N messages in order", test_server_stream_in_order);
    CU_add_test(s, "backpressure: queue full, then drained", test_backpressure);
    CU_add_test(s, "slow consumer ended with abort", test_slow_consumer_aborted);
    CU_add_test(s, "client cancel: on_cancel exactly once", test_client_cancel);
    CU_add_test(s, "deadline ends the stream", test_deadline);
    CU_add_test(s, "bidirectional echo, limits, handler error", test_bidi_echo_and_limits);
    CU_add_test(s, "producer thread racing cancels", test_push_races_cancel);
    CU_add_test(s, "shutdown ends open streams through their hook",
                test_shutdown_with_open_streams);
    CU_add_test(s, "unary beside streams; bad rows refused",
                test_unary_beside_streams_and_bad_rows);
    CU_add_test(s, "server callbacks saw what they expected", test_callbacks_clean);
    return oc_test_run();
}
