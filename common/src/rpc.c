/* gRPC servers over a method table (unary calls here, streams in rpc_stream.c, reflection in
 * rpc_reflect.c) and health checking, on gRPC core. The client is in rpc_client.c. */
#include "omnichat/rpc.h"

#include "omnichat/pbcheck.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "omnichat/log.h"
#include "omnichat/resources.h"
#include "omnichat/util.h"
#include "rpc_internal.h"
#include "rpc_tls.h"

#define DEFAULT_WORKERS 16
#define DEFAULT_MAX_MESSAGE (4u * 1024 * 1024)
#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
#define HEALTH_WATCH_PATH "/grpc.health.v1.Health/Watch"
#define HEALTH_MAX_REQUEST 1024 /* a service name */
/* Worker threads per completion queue: in practice one CQ for all workers. Measured on 2 cores
 * (64 blocking client threads, separate processes): 1 CQ x 16 workers and 4 CQs x 4 workers
 * both gave ~20k calls/s with a trivial handler and ~11-13k/s with a 1 ms blocking one, within
 * noise. One CQ wins on behaviour: gRPC matches a connection's calls to "its" CQ first, so with
 * several CQs a few slow handlers can leave calls waiting while threads of other CQs idle. */
#define THREADS_PER_CQ 4096
/* Requests kept posted per registered method and per CQ: accepting a call never waits for a
 * worker, and a burst larger than this only waits in the core's matcher, not on the socket. */
#define REQUESTS_PER_METHOD 8
#define REQUESTS_UNREGISTERED 2
#define REQUEST_ID_MAX ((int)sizeof(((oc_rpc_ctx_t *)0)->request_id) - 1)
#define UNREGISTERED (-1)
#define SERVER_ARGS 16
#define DEFAULT_IDLE_MS (5 * 60 * 1000)
#define DEFAULT_AGE_MS (30 * 60 * 1000)
#define CONNECTION_AGE_GRACE_MS (30 * 1000)
#define DEFAULT_HANDSHAKE_MS (10 * 1000)
#define DEFAULT_QUOTA ((size_t)512 << 20)
#define DEFAULT_HOUSEKEEPING_MS 1000
#define DEFAULT_PROBE_TIMEOUT_MS 2000
#define DEFAULT_MAX_CONNECTIONS 4096
/* Descriptors kept for database connections, the admin server, logs and gRPC's own. */
#define FD_RESERVE 128
/* Heap growth after which the housekeeping thread gives freed memory back. */
#define TRIM_SLACK ((size_t)2 << 20)
/* Arena block of a stream's context (a unary call's arena lives microseconds and uses 8 KiB). */
#define STREAM_ARENA_BLOCK 1024
/* Decoding budget beyond the wire walk's estimate. */

#define CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

typedef rpc_tag_t tag_t;

typedef struct method {
    const char *path;
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    oc_rpc_handler_fn handler;
    oc_rpc_limits_t limits;                 /* the table's, with the server's defaults filled in */
    void *registered;                       /* grpc_server_register_method handle */
    const oc_rpc_stream_handlers_t *stream; /* NULL: unary */
    void *arg;                              /* our own methods: ctx->user instead of opts.user */
} method_t;

typedef struct worker {
    oc_rpc_server_t *s;
    int index;
    grpc_completion_queue *cq;
    pthread_t thread;
    bool running;
} worker_t;

/* One accepted (or requested) call. It first waits as a posted request, then carries the call
 * through its single final batch; only one batch is outstanding at a time, so no lock. */
typedef struct srv_call {
    tag_t tag;
    oc_rpc_server_t *s;
    int midx; /* index into s->methods, or UNREGISTERED */
    int cqi;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* unregistered calls only */
    int64_t start_us;
    int64_t latency_us;
    int status;
    int cancelled;
    grpc_byte_buffer *resp_bb;
    grpc_slice status_details;
    bool have_details;
    bool handed_off;       /* to a stream, with the call and the arena */
    grpc_metadata trailer; /* x-request-id */
    bool have_trailer;
    oc_rpc_ctx_t ctx;
} srv_call_t;

struct oc_rpc_server {
    oc_rpc_server_opts_t opts;
    grpc_server *server;
    int port;
    method_t *methods;
    size_t nmethods;
    char **services; /* service names answered SERVING by health Check */
    size_t nservices;
    int ncq;
    grpc_completion_queue **cqs;
    worker_t *workers;
    int nworkers;
    bool started;
    bool shut_down;
    atomic_bool serving;
    /* Set when shutdown begins; request tags are no longer re-posted. */
    atomic_bool stopping;
    /* Request tags and calls we own that gRPC still holds or that are being served. The CQs may
     * only be shut down when it is zero: a handler still running would start a batch on a
     * shut-down queue, which gRPC treats as a fatal assertion. */
    atomic_long outstanding;
    /* Shutdown waits only; never taken on the call path except by the last call to finish
     * while stopping. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_tag_seen;
    tag_t shutdown_tag;
    /* TLS: set when opts.tls is; the credentials call back into tls_watch. */
    rpc_tls_server_t *tls_watch;
    rpc_roles_t roles;
    /* The caller's method table (it outlives the server): its rows carry the roles. Methods
     * past its end are ours (health) and open to every authenticated peer. */
    const oc_rpc_method_t *table;
    size_t ntable;
    grpc_resource_quota *quota;
    /* Guards `server` and the methods' `registered` handles while a listener is replaced. */
    pthread_mutex_t gen_mu;
    /* Servers whose listener died, shutting down or shut down; destroyed with the server. */
    struct retired *retired;
    long accept_failures_seen;
    char *probe_target;     /* "127.0.0.1:port": where the health probe connects */
    oc_rpc_tls_t probe_tls; /* with TLS: our own certificate, checked as "localhost" */
    atomic_bool healthy;
    char health_detail[OC_ERROR_MSG_MAX + 1]; /* under mu */
    rpc_streams_t *streams;
    rpc_reflect_t *reflect; /* NULL: no descriptor set, no reflection */
    rpc_health_t *health;   /* Health/Watch; NULL when the table serves its own health */
    /* Housekeeping thread (memory trim; listener watchdog and health probe). */
    pthread_t keeper;
    bool keeper_running;
    bool keeper_stop; /* under mu */
};

typedef struct retired {
    tag_t tag; /* shutdown_and_notify tag */
    oc_rpc_server_t *s;
    grpc_server *server;
    struct retired *next;
} retired_t;

/* The call this thread's handler is running, for oc_rpc_current_request_id. */
static _Thread_local const oc_rpc_ctx_t *tls_call;
/* "Failed accept4" lines seen from gRPC core: in 1.51 the listening port is dead after one. */
static atomic_long g_accept_failures;

static void on_request(void *tag, bool ok);
static bool replace_listener(oc_rpc_server_t *s);
static grpc_server *build_server(oc_rpc_server_t *s, const char *addr, void **regs, int *port,
                                 oc_error_t *err);
static void probe_health(oc_rpc_server_t *s);
static void on_call_done(void *tag, bool ok);

/* ---- helpers ---- */

static int64_t timespec_to_epoch_us(gpr_timespec t)
{
    if (gpr_time_cmp(t, gpr_inf_future(t.clock_type)) == 0) return INT64_MAX;
    t = gpr_convert_clock_type(t, GPR_CLOCK_REALTIME);
    if (t.tv_sec >= INT64_MAX / 1000000 - 1) return INT64_MAX;
    return t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static bool slice_eq(grpc_slice s, const char *lit, size_t n)
{
    return GRPC_SLICE_LENGTH(s) == n && memcmp(GRPC_SLICE_START_PTR(s), lit, n) == 0;
}

static void request_id_from(const grpc_metadata_array *md, char out[REQUEST_ID_MAX + 1])
{
    for (size_t i = 0; i < md->count; i++) {
        if (!slice_eq(md->metadata[i].key, "x-request-id", 12)) continue;
        grpc_slice v = md->metadata[i].value;
        size_t n = GRPC_SLICE_LENGTH(v);
        if (n > (size_t)REQUEST_ID_MAX) n = REQUEST_ID_MAX;
        if (n > 0 && rpc_printable(GRPC_SLICE_START_PTR(v), n)) {
            memcpy(out, GRPC_SLICE_START_PTR(v), n);
            out[n] = '\0';
            return;
        }
        break;
    }
    char uuid[OC_UUID_STR_LEN + 1];
    if (oc_uuid_v4(uuid) == OC_OK)
        memcpy(out, uuid, sizeof(uuid));
    else
        strcpy(out, "-");
}

/*
 * Server side: turns the received buffer into a request under the method's limits, taking
 * *payload (destroyed here as early as possible: the contiguous copy and the buffer never both
 * outlive the wire check). Strings are checked on the wire because protobuf-c would cut them at
 * an embedded NUL without telling anyone; element counts, because protobuf-c spends hundreds of
 * bytes on each 2-byte empty element. On failure returns NULL with ctx->err set.
 */
static ProtobufCMessage *decode_request(const method_t *m, grpc_byte_buffer **payload,
                                        oc_rpc_ctx_t *ctx)
{
    grpc_byte_buffer_reader r;
    ProtobufCMessage *req = NULL;
    size_t len = grpc_byte_buffer_length(*payload);

    if (len > m->limits.max_request_bytes) {
        oc_error_set(&ctx->err, OC_E_TOO_LARGE, "request: %zu bytes, at most %zu for this method",
                     len, m->limits.max_request_bytes);
        return NULL;
    }
    if (!grpc_byte_buffer_reader_init(&r, *payload)) {
        oc_error_set(&ctx->err, OC_E_INVALID, "request: unreadable message");
        return NULL;
    }
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    grpc_byte_buffer_destroy(*payload);
    *payload = NULL;
    req = oc_rpc_decode(m->input, &m->limits, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl),
                        ctx->arena, &ctx->err);
    /* Unpacked messages own copies of their strings: the wire bytes can go now. */
    grpc_slice_unref(sl);
    return req;
}

/* ---- server: health ---- */

static bool service_known(const oc_rpc_server_t *s, const char *name)
{
    for (size_t i = 0; i < s->nservices; i++)
        if (strcmp(s->services[i], name) == 0) return true;
    return false;
}

static oc_err_t health_check(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req,
                             ProtobufCMessage **resp)
{
    const oc_rpc_server_t *s = CONTAINER_OF(ctx, srv_call_t, ctx)->s;
    const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
    const char *name = r->service ? r->service : "";
    bool liveness = strcmp(name, OC_RPC_HEALTH_LIVENESS) == 0;
    if (name[0] != '\0' && !liveness && !service_known(s, name))
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "unknown service %s", name);
    Grpc__Health__V1__HealthCheckResponse *out = oc_arena_alloc(ctx->arena, sizeof(*out));
    if (!out) return oc_error_set(&ctx->err, OC_E_NOMEM, "health: out of memory");
    grpc__health__v1__health_check_response__init(out);
    /* Liveness is about the process: it answered over the real gRPC path, whatever its
     * dependencies say. Readiness ("" and the service names) follows them. */
    out->status = liveness || atomic_load_explicit(&s->serving, memory_order_relaxed)
                      ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    *resp = &out->base;
    return OC_OK;
}

/* ---- server: call path ---- */

static void stop_signal(oc_rpc_server_t *s)
{
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Frees a call. A call handed to a stream (c->call NULL) leaves its share of `outstanding` to
 * the stream, which gives it back when it finishes (stream_finished). */
static void release_call(srv_call_t *c)
{
    oc_rpc_server_t *s = c->s;
    bool handed_off = c->handed_off;
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->resp_bb) grpc_byte_buffer_destroy(c->resp_bb);
    if (c->have_details) grpc_slice_unref(c->status_details);
    if (c->have_trailer) grpc_slice_unref(c->trailer.value);
    grpc_metadata_array_destroy(&c->md);
    if (c->midx == UNREGISTERED) grpc_call_details_destroy(&c->details);
    if (c->call) grpc_call_unref(c->call);
    oc_arena_destroy(c->ctx.arena);
    free(c);
    if (!handed_off && atomic_fetch_sub(&s->outstanding, 1) == 1 && atomic_load(&s->stopping))
        stop_signal(s);
}

static void stream_finished(void *host, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    oc_rpc_server_t *s = host;
    if (s->opts.on_complete) s->opts.on_complete(s->opts.user, ctx, status, latency_us);
    if (atomic_fetch_sub(&s->outstanding, 1) == 1 && atomic_load(&s->stopping)) stop_signal(s);
}

/* A bidirectional stream reads its messages itself, one at a time: no payload with the call. */
static bool reads_itself(const method_t *m)
{
    return m->stream && m->stream->client_streaming;
}

static bool post_request(oc_rpc_server_t *s, int midx, int cqi)
{
    srv_call_t *c = calloc(1, sizeof(*c));
    if (!c) return false;
    c->tag.fn = on_request;
    c->s = s;
    c->midx = midx;
    c->cqi = cqi;
    grpc_metadata_array_init(&c->md);
    grpc_completion_queue *cq = s->cqs[cqi];
    atomic_fetch_add(&s->outstanding, 1);
    grpc_call_error e;
    if (midx == UNREGISTERED) grpc_call_details_init(&c->details);
    /* The listener may be being replaced (replace_listener): requests go to the current
     * server with its own method handles, or nowhere while there is none (the replacement
     * posts a full set). */
    pthread_mutex_lock(&s->gen_mu);
    if (!s->server) {
        pthread_mutex_unlock(&s->gen_mu);
        release_call(c);
        return true;
    }
    if (midx == UNREGISTERED)
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, cq, cq, c);
    else
        e = grpc_server_request_registered_call(
            s->server, s->methods[midx].registered, &c->call, &c->deadline, &c->md,
            reads_itself(&s->methods[midx]) ? NULL : &c->payload, cq, cq, c);
    pthread_mutex_unlock(&s->gen_mu);
    if (e != GRPC_CALL_OK) {
        release_call(c);
        return false;
    }
    return true;
}

/* Starts the single final batch; the call is released when it completes. */
static void finish_call(srv_call_t *c, oc_err_t rc, const ProtobufCMessage *resp)
{
    oc_rpc_ctx_t *ctx = &c->ctx;
    if (rc == OC_OK) {
        c->resp_bb = rpc_pack_message(resp);
        c->status = GRPC_STATUS_OK;
    } else {
        c->status = oc_err_grpc_status(rc);
        const char *msg = ctx->err.msg[0] ? ctx->err.msg : oc_err_message(rc);
        /* A refcounted copy, not a static slice over ctx->err.msg: the details must outlive
         * the batch, and gRPC may keep a reference after the call struct is gone. */
        c->status_details = grpc_slice_from_copied_string(msg);
        c->have_details = true;
    }
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n++].data.send_initial_metadata.count = 0;
    if (c->resp_bb) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->resp_bb;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    /* Every reply names its request id, so that a client can quote it (errors above all); the
     * id is printable ASCII by construction (request_id_from). */
    c->trailer.key = grpc_slice_from_static_string("x-request-id");
    c->trailer.value = grpc_slice_from_copied_string(ctx->request_id); /* as status_details */
    c->have_trailer = true;
    ops[n].data.send_status_from_server.trailing_metadata_count = 1;
    ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
    ops[n].data.send_status_from_server.status = (grpc_status_code)c->status;
    ops[n++].data.send_status_from_server.status_details =
        c->have_details ? &c->status_details : NULL;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->tag.fn = on_call_done;
    c->latency_us = oc_mono_us() - c->start_us;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
    if (e != GRPC_CALL_OK) {
        OC_LOG(OC_LOG_ERROR, "rpc: could not start final batch", OC_LS("method", ctx->method),
               OC_LS("request_id", ctx->request_id), OC_LI("grpc_call_error", e));
        on_call_done(c, false);
    }
}

/* Over TLS, the method's roles must include one of the peer's (see OC_RPC_ROLE_*). */
static bool authorized(srv_call_t *c)
{
    const oc_rpc_server_t *s = c->s;
    if (!s->opts.tls) return true;
    unsigned allowed =
        (size_t)c->midx < s->ntable ? s->table[c->midx].roles : (unsigned)OC_RPC_ROLE_ANY;
    unsigned roles = rpc_roles_of_call(&s->roles, c->call, c->ctx.peer, sizeof c->ctx.peer);
    return (roles & allowed) != 0;
}

/* Hands an authorized call to a stream (rpc_stream.c). False when it could not: the call is
 * still ours to answer. */
static bool serve_stream(srv_call_t *c, const method_t *m, const ProtobufCMessage *req)
{
    oc_rpc_server_t *s = c->s;
    if (m->arg) c->ctx.user = m->arg;
    if (rpc_stream_begin(s->streams, m->stream, m->input, m->output, &m->limits, c->call, &c->ctx,
                         req, c->start_us) != OC_OK)
        return false;
    c->call = NULL;
    c->handed_off = true;
    release_call(c);
    return true;
}

static void serve_call(srv_call_t *c)
{
    oc_rpc_server_t *s = c->s;
    oc_rpc_ctx_t *ctx = &c->ctx;
    c->start_us = oc_mono_us();
    oc_error_clear(&ctx->err);
    ctx->worker = rpc_current_worker();
    ctx->user = s->opts.user;
    const method_t *m = c->midx == UNREGISTERED ? NULL : &s->methods[c->midx];
    /* A stream keeps its arena for its whole life, mostly idle: small blocks keep thousands of
     * open streams cheap (rpc.h, streaming). */
    ctx->arena = oc_arena_create(m && m->stream ? STREAM_ARENA_BLOCK : 0);
    request_id_from(&c->md, ctx->request_id);

    if (m) {
        ctx->method = m->path;
        ctx->deadline_us = timespec_to_epoch_us(c->deadline);
    } else {
        /* Bounded copy: the path is client-chosen and only used for logs and metrics. */
        size_t n = GRPC_SLICE_LENGTH(c->details.method);
        ctx->method = ctx->arena
                          ? oc_arena_strndup(ctx->arena,
                                             (const char *)GRPC_SLICE_START_PTR(c->details.method),
                                             n > 256 ? 256 : n)
                          : NULL;
        if (!ctx->method) ctx->method = "";
        ctx->deadline_us = timespec_to_epoch_us(c->details.deadline);
    }

    ProtobufCMessage *resp = NULL;
    oc_err_t rc;
    if (!ctx->arena) {
        rc = oc_error_set(&ctx->err, OC_E_NOMEM, "server: out of memory");
    } else if (!m) {
        rc = oc_error_set(&ctx->err, OC_E_UNIMPLEMENTED, "unknown method %s", ctx->method);
    } else if (!authorized(c)) {
        /* Before the payload is even unpacked: a refused caller costs no decoding. */
        ctx->denied = true;
        rc = oc_error_set(&ctx->err, OC_E_PERMISSION, "permission denied");
    } else if (ctx->deadline_us != INT64_MAX && ctx->deadline_us <= oc_now_us()) {
        /* The client has given up already (typically the call queued behind busy workers):
         * running the handler would only spend a database connection on nothing. */
        rc = oc_error_set(&ctx->err, OC_E_DEADLINE, "deadline exceeded before the call started");
    } else if (reads_itself(m)) {
        if (serve_stream(c, m, NULL)) return;
        rc = oc_error_set(&ctx->err, OC_E_NOMEM, "server: out of memory");
    } else if (!c->payload) {
        rc = oc_error_set(&ctx->err, OC_E_INVALID, "request: missing message");
    } else if (m->stream) {
        ProtobufCMessage *req = decode_request(m, &c->payload, ctx);
        if (req && serve_stream(c, m, req)) return;
        rc = req ? oc_error_set(&ctx->err, OC_E_NOMEM, "server: out of memory") : ctx->err.code;
    } else {
        ProtobufCMessage *req = decode_request(m, &c->payload, ctx);
        if (!req) {
            rc = ctx->err.code;
        } else {
            tls_call = ctx;
            rc = m->handler(ctx, req, &resp);
            tls_call = NULL;
            if (rc == OC_OK && (!resp || resp->descriptor != m->output)) {
                OC_LOG(OC_LOG_ERROR, "rpc: handler returned no response of the declared type",
                       OC_LS("method", m->path), OC_LS("request_id", ctx->request_id));
                rc = oc_error_set(&ctx->err, OC_E_INTERNAL, "internal error");
            }
        }
    }
    finish_call(c, rc, resp);
}

static void on_request(void *tag, bool ok)
{
    srv_call_t *c = tag;
    oc_rpc_server_t *s = c->s;
    if (!ok) {
        /* Failed requests happen at shutdown; re-posting here could spin otherwise. */
        release_call(c);
        return;
    }
    /* Replace the consumed request before the handler (which may block) runs. */
    if (!atomic_load_explicit(&s->stopping, memory_order_acquire) &&
        !post_request(s, c->midx, c->cqi))
        OC_LOG(OC_LOG_ERROR, "rpc: could not re-post a request call");
    serve_call(c);
}

static void on_call_done(void *tag, bool ok)
{
    srv_call_t *c = tag;
    (void)ok;
    oc_rpc_server_t *s = c->s;
    if (s->opts.on_complete) s->opts.on_complete(s->opts.user, &c->ctx, c->status, c->latency_us);
    release_call(c);
}

static void on_shutdown_tag(void *tag, bool ok)
{
    (void)ok;
    oc_rpc_server_t *s = CONTAINER_OF(tag, oc_rpc_server_t, shutdown_tag);
    pthread_mutex_lock(&s->mu);
    s->shutdown_tag_seen = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    oc_rpc_server_t *s = w->s;
    rpc_set_current_worker(s->opts.worker_init ? s->opts.worker_init(s->opts.worker_arg, w->index)
                                               : NULL);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        tag_t *t = ev.tag;
        t->fn(t, ev.success != 0);
    }
    if (s->opts.worker_fini) s->opts.worker_fini(rpc_current_worker());
    rpc_set_current_worker(NULL);
    return NULL;
}

/* ---- server: housekeeping ---- */

static void on_retired_tag(void *tag, bool ok)
{
    (void)ok;
    retired_t *r = CONTAINER_OF(tag, retired_t, tag);
    oc_rpc_server_t *s = r->s;
    if (atomic_fetch_sub(&s->outstanding, 1) == 1 && atomic_load(&s->stopping)) stop_signal(s);
}

/*
 * Recreates the gRPC server after its listener died (gRPC 1.51 never accepts again on a port
 * whose accept4 failed with EMFILE; see core_log). The old server stops accepting and drains:
 * its calls finish normally, its connections get GOAWAY (which also gives their descriptors
 * back). A new server with the same methods and queues binds the same port and gets a fresh
 * set of posted requests. While it cannot bind (descriptors still exhausted) there is no
 * server and the next tick tries again. Keeper thread only. True when a server is listening.
 */
static bool replace_listener(oc_rpc_server_t *s)
{
    oc_error_t err;
    void **regs = calloc(s->nmethods, sizeof(*regs));
    retired_t *r = calloc(1, sizeof(*r));
    grpc_server *old;
    bool ok = false;

    if (!regs || !r) goto out;
    pthread_mutex_lock(&s->gen_mu);
    old = s->server;
    s->server = NULL;
    pthread_mutex_unlock(&s->gen_mu);
    if (old) {
        OC_LOG(OC_LOG_WARN, "rpc: listener stopped accepting, recreating it",
               OC_LI("port", s->port));
        r->tag.fn = on_retired_tag;
        r->s = s;
        r->server = old;
        r->next = s->retired;
        s->retired = r;
        r = NULL;
        atomic_fetch_add(&s->outstanding, 1);
        grpc_server_shutdown_and_notify(old, s->cqs[0], &s->retired->tag);
    }
    /* The old listening socket closes asynchronously: the port may still be taken a moment. */
    char addr[300];
    const char *colon = strrchr(s->opts.listen, ':');
    snprintf(addr, sizeof addr, "%.*s:%d", colon ? (int)(colon - s->opts.listen) : 0,
             s->opts.listen, s->port);
    grpc_server *srv = NULL;
    int port = 0;
    for (int attempt = 0; attempt < 10 && !srv; attempt++) {
        oc_error_clear(&err);
        srv = build_server(s, addr, regs, &port, &err);
        if (!srv) nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
    }
    if (!srv) {
        OC_LOG(OC_LOG_ERROR, "rpc: could not recreate the listener, retrying",
               OC_LS("detail", err.msg));
        goto out;
    }
    grpc_server_start(srv);
    pthread_mutex_lock(&s->gen_mu);
    s->server = srv;
    for (size_t i = 0; i < s->nmethods; i++)
        s->methods[i].registered = regs[i];
    pthread_mutex_unlock(&s->gen_mu);
    ok = true;
    for (int q = 0; q < s->ncq; q++) {
        for (size_t m = 0; m < s->nmethods; m++)
            for (int k = 0; k < REQUESTS_PER_METHOD; k++)
                ok &= post_request(s, (int)m, q);
        for (int k = 0; k < REQUESTS_UNREGISTERED; k++)
            ok &= post_request(s, UNREGISTERED, q);
    }
    if (ok) OC_LOG(OC_LOG_WARN, "rpc: listener recreated", OC_LI("port", s->port));
out:
    free(regs);
    free(r);
    return ok;
}

/* Where the probe connects: the listen address, with a wildcard host made loopback. */
static oc_err_t probe_target(oc_rpc_server_t *s)
{
    const char *colon = strrchr(s->opts.listen, ':');
    int hn = colon ? (int)(colon - s->opts.listen) : 0;
    const char *host = s->opts.listen;
    if (hn == 0 || (hn == 7 && strncmp(host, "0.0.0.0", 7) == 0)) {
        host = "127.0.0.1";
        hn = 9;
    } else if ((hn == 4 && strncmp(host, "[::]", 4) == 0) ||
               (hn == 2 && strncmp(host, "::", 2) == 0)) {
        host = "[::1]";
        hn = 5;
    }
    if (asprintf(&s->probe_target, "%.*s:%d", hn, host, s->port) < 0) {
        s->probe_target = NULL;
        return OC_E_NOMEM;
    }
    if (s->opts.tls) {
        /* The probe dials an address, not a name: it checks our certificate as "localhost",
         * which service certificates carry for exactly this (docs/operations.md). */
        s->probe_tls = *s->opts.tls;
        s->probe_tls.server_name = "localhost";
    }
    return OC_OK;
}

/*
 * Calls our own Health/Check over a new connection, so the whole path is tested: accept,
 * HTTP/2, a worker. Its outcome is what oc_rpc_server_healthy reports (/healthz).
 */
static void probe_health(oc_rpc_server_t *s)
{
    oc_error_t err;
    ProtobufCMessage *resp = NULL;
    oc_arena_t *arena = oc_arena_create(0);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    oc_rpc_client_t *c = NULL;
    oc_err_t rc;

    oc_error_clear(&err);
    /* A client of its own each time, with connections of its own: a new TCP connection (and,
     * with TLS, a handshake with our own certificate) proves that the listener accepts. */
    c = rpc_client_new(s->probe_target, s->opts.tls ? &s->probe_tls : NULL, true, &err);
    if (!arena || !c) {
        rc = arena ? err.code : oc_error_set(&err, OC_E_NOMEM, "out of memory");
    } else {
        rc = oc_rpc_client_call(c, HEALTH_CHECK_PATH, &req.base,
                                &grpc__health__v1__health_check_response__descriptor,
                                s->opts.probe_timeout_ms, "health-probe", arena, &resp, NULL, &err);
        /* Any answer, NOT_SERVING included, proves the process works: NOT_SERVING is
         * readiness (a dependency is down, or a drain), and liveness must not fail over it or
         * an orchestrator would restart a healthy process in a loop. */
    }
    oc_rpc_client_destroy(c);
    oc_arena_destroy(arena);
    pthread_mutex_lock(&s->mu);
    if (rc != OC_OK)
        snprintf(s->health_detail, sizeof s->health_detail, "grpc self-check failed: %.200s",
                 err.msg[0] ? err.msg : oc_err_message(rc));
    else
        s->health_detail[0] = '\0';
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->healthy, rc == OC_OK);
}

const char *oc_rpc_current_request_id(void)
{
    return tls_call != NULL ? tls_call->request_id : "";
}

bool oc_rpc_server_healthy(oc_rpc_server_t *s, char *detail, size_t n)
{
    bool ok = s && atomic_load(&s->healthy);
    if (detail && n > 0) {
        detail[0] = '\0';
        if (s && !ok) {
            pthread_mutex_lock(&s->mu);
            snprintf(detail, n, "%s", s->health_detail);
            pthread_mutex_unlock(&s->mu);
        }
    }
    return ok;
}

/* The local port of a connected (not listening) TCP socket, or -1. */
static int accepted_port(int fd)
{
    struct stat st;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int listening = 0;
    socklen_t ll = sizeof listening;

    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return -1;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || listening) return -1;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return -1;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

/*
 * gRPC 1.51 has no cap on connections, and its accept loop dies for good when descriptors run
 * out. So the housekeeping thread counts the sockets accepted on our port (their local port is
 * ours; a client socket's is ephemeral) and, past max_connections, shuts the newest ones down:
 * shutdown(2), never close(2), so gRPC still owns the descriptor, sees the connection end and
 * closes it itself. A descriptor closed and reused between the check and the shutdown would
 * have to be another socket accepted on our port in those microseconds. Keeper thread only.
 */
static void shed_connections(oc_rpc_server_t *s)
{
    DIR *d = opendir("/proc/self/fd");
    int *fds = NULL;
    size_t n = 0, cap = 0, entries = 0;
    struct dirent *e;

    if (!d) return;
    /* Cheap first: fewer descriptors than the cap means nothing to count. */
    while ((e = readdir(d)) != NULL)
        entries++;
    if (entries <= (size_t)s->opts.max_connections) goto out;
    rewinddir(d);
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end != '\0' || fd < 0 || fd == dirfd(d)) continue;
        if (accepted_port((int)fd) != s->port) continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            int *nf = realloc(fds, ncap * sizeof(*nf));
            if (!nf) goto out;
            fds = nf;
            cap = ncap;
        }
        fds[n++] = (int)fd;
    }
    if (n <= (size_t)s->opts.max_connections) goto out;
    /* Newest first: descriptors are handed out lowest-free, so high numbers are recent. */
    size_t shed = n - (size_t)s->opts.max_connections;
    for (size_t i = 0; i < shed; i++) {
        size_t hi = i;
        for (size_t k = i + 1; k < n; k++)
            if (fds[k] > fds[hi]) hi = k;
        int t = fds[i];
        fds[i] = fds[hi];
        fds[hi] = t;
        if (accepted_port(fds[i]) == s->port) shutdown(fds[i], SHUT_RDWR);
    }
    OC_LOG(OC_LOG_WARN, "rpc: too many connections, closing the newest",
           OC_LI("connections", (long long)n), OC_LI("max", s->opts.max_connections),
           OC_LI("closed", (long long)shed));
out:
    free(fds);
    closedir(d);
}

static void *keeper_main(void *arg)
{
    oc_rpc_server_t *s = arg;

    pthread_mutex_lock(&s->mu);
    while (!s->keeper_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += s->opts.housekeeping_ms / 1000;
        until.tv_nsec += (long)(s->opts.housekeeping_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &until);
        if (s->keeper_stop) break;
        pthread_mutex_unlock(&s->mu);
        long failures = atomic_load(&g_accept_failures);
        if (failures != s->accept_failures_seen || !s->server) {
            if (replace_listener(s)) s->accept_failures_seen = failures;
        }
        shed_connections(s);
        probe_health(s);
        /* Request buffers and connection state freed after a spike otherwise stay in malloc's
         * free lists for good (issue 6, items 3 and 7: hundreds of MB kept). */
        oc_resources_trim_if_grown(TRIM_SLACK);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void keeper_stop(oc_rpc_server_t *s)
{
    if (!s->keeper_running) return;
    pthread_mutex_lock(&s->mu);
    s->keeper_stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->keeper, NULL);
    s->keeper_running = false;
}

/* ---- server: lifecycle ---- */

static oc_err_t add_service_name(oc_rpc_server_t *s, const char *path, oc_error_t *err)
{
    const char *slash = strrchr(path, '/');
    size_t n = (size_t)(slash - path) - 1;
    for (size_t i = 0; i < s->nservices; i++)
        if (strlen(s->services[i]) == n && memcmp(s->services[i], path + 1, n) == 0) return OC_OK;
    char *name = strndup(path + 1, n);
    if (!name) return oc_error_set(err, OC_E_NOMEM, "rpc server: out of memory");
    s->services[s->nservices++] = name;
    return OC_OK;
}

/* DEFAULT_MAX_CONNECTIONS, lowered to leave FD_RESERVE descriptors for everything else when
 * RLIMIT_NOFILE is smaller. */
static int default_max_connections(void)
{
    struct rlimit rl;
    long max = DEFAULT_MAX_CONNECTIONS;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (long)rl.rlim_cur - FD_RESERVE < max)
        max = (long)rl.rlim_cur - FD_RESERVE;
    return max < 16 ? 16 : (int)max;
}

/* The server's channel arguments into args[SERVER_ARGS]; returns how many. */
static size_t server_args(oc_rpc_server_t *s, grpc_arg *args)
{
    size_t n = 0;
#define INT_ARG(k, v) \
    args[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER, .key = (char *)(k), .value.integer = (v)}
    INT_ARG(GRPC_ARG_ALLOW_REUSEPORT, 0);
    INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)s->opts.max_message_bytes);
    /* Connections do not live for ever: an idle one (no call for max_idle) and any one older
     * than max_age get GOAWAY, a peer that never finishes its handshake is dropped, and one
     * connection cannot open unbounded streams. gRPC 1.51 has no cap on the number of
     * connections; its memory quota drops new connections under memory pressure. */
    INT_ARG(GRPC_ARG_MAX_CONNECTION_IDLE_MS, s->opts.max_connection_idle_ms);
    INT_ARG(GRPC_ARG_MAX_CONNECTION_AGE_MS, s->opts.max_connection_age_ms);
    INT_ARG(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, CONNECTION_AGE_GRACE_MS);
    INT_ARG(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, s->opts.handshake_timeout_ms);
    INT_ARG(GRPC_ARG_MAX_CONCURRENT_STREAMS, s->opts.max_streams_per_connection);
#undef INT_ARG
    if (!s->quota) {
        s->quota = grpc_resource_quota_create("omnichat-rpc");
        grpc_resource_quota_resize(s->quota, s->opts.memory_quota_bytes);
    }
    args[n++] = (grpc_arg){.type = GRPC_ARG_POINTER,
                           .key = (char *)GRPC_ARG_RESOURCE_QUOTA,
                           .value.pointer = {s->quota, grpc_resource_quota_arg_vtable()}};
    return n;
}

/* A method's limits with the server's defaults in place of zeros. */
static oc_rpc_limits_t method_limits(const oc_rpc_server_t *s, const oc_rpc_method_t *m)
{
    oc_rpc_limits_t l = m->limits ? *m->limits : (oc_rpc_limits_t){0};

    if (l.max_request_bytes == 0 || l.max_request_bytes > s->opts.max_message_bytes)
        l.max_request_bytes = s->opts.max_message_bytes;
    if (l.max_decode_bytes == 0) l.max_decode_bytes = 4 * l.max_request_bytes + DECODE_SLACK;
    return l;
}

/* Reflection for opts.descriptor_set: both versions share one implementation and the v1
 * message types (v1alpha's are the same messages on the wire). */
static oc_err_t add_reflection(oc_rpc_server_t *s, oc_error_t *err)
{
    static const char *const paths[] = {RPC_REFLECT_V1_PATH, RPC_REFLECT_V1ALPHA_PATH};
    /* A request names a file or a symbol; grpc's own clients send a few hundred bytes. */
    static const oc_rpc_limits_t limits = {.max_request_bytes = 4096,
                                           .max_decode_bytes = 4096 * 4 + DECODE_SLACK};

    /* Responses stay within what gRPC clients accept by default (4 MiB), whatever we accept. */
    size_t max_response = s->opts.max_message_bytes < DEFAULT_MAX_MESSAGE
                              ? s->opts.max_message_bytes
                              : DEFAULT_MAX_MESSAGE;
    s->reflect = rpc_reflect_create(s->opts.descriptor_set, s->opts.descriptor_set_len, s->services,
                                    s->nservices, max_response, err);
    if (!s->reflect) return err->code;
    for (size_t i = 0; i < 2; i++)
        s->methods[s->nmethods++] =
            (method_t){paths[i],
                       &grpc__reflection__v1__server_reflection_request__descriptor,
                       &grpc__reflection__v1__server_reflection_response__descriptor,
                       NULL,
                       limits,
                       NULL,
                       &rpc_reflect_handlers,
                       s->reflect};
    return OC_OK;
}

static bool path_valid(const char *p)
{
    if (!p || p[0] != '/') return false;
    const char *slash = strrchr(p, '/');
    return slash > p + 1 && slash[1] != '\0';
}

/* Drains a queue nobody else polls (server never started, or failed to start). */
static void drain_alone(grpc_completion_queue *cq)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) return;
        if (ev.type == GRPC_OP_COMPLETE) ((tag_t *)ev.tag)->fn(ev.tag, ev.success != 0);
    }
}

static bool idle(oc_rpc_server_t *s)
{
    return s->shutdown_tag_seen && atomic_load(&s->outstanding) == 0;
}

/* Without workers (never started, or none came up) this thread polls every queue itself until
 * the shutdown tag has arrived and every tag of ours is back; only then may the queues shut
 * down, as with workers. */
static void pump_alone(oc_rpc_server_t *s)
{
    while (!idle(s)) {
        for (int q = 0; q < s->ncq; q++) {
            gpr_timespec until =
                gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(10, GPR_TIMESPAN));
            grpc_event ev = grpc_completion_queue_next(s->cqs[q], until, NULL);
            if (ev.type == GRPC_OP_COMPLETE) ((tag_t *)ev.tag)->fn(ev.tag, ev.success != 0);
        }
    }
}

static void free_server(oc_rpc_server_t *s)
{
    if (s->server) grpc_server_destroy(s->server);
    while (s->retired) {
        retired_t *r = s->retired;
        s->retired = r->next;
        grpc_server_destroy(r->server);
        free(r);
    }
    if (s->quota) grpc_resource_quota_unref(s->quota);
    rpc_streams_destroy(s->streams);
    rpc_reflect_destroy(s->reflect);
    rpc_health_destroy(s->health);
    free(s->probe_target);
    for (int i = 0; i < s->ncq; i++)
        if (s->cqs[i]) grpc_completion_queue_destroy(s->cqs[i]);
    for (size_t i = 0; i < s->nservices; i++)
        free(s->services[i]);
    free(s->services);
    free(s->methods);
    free(s->cqs);
    free(s->workers);
    /* After grpc_server_destroy: the credentials no longer call back into it. */
    rpc_tls_server_free(s->tls_watch);
    rpc_roles_free(&s->roles);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->gen_mu);
    free(s);
    grpc_shutdown();
}

/*
 * Creates a grpc_server with the server's arguments, completion queues and methods (handles in
 * regs[s->nmethods]) and binds it to `addr`; not started. Used at creation and again when the
 * listener has to be recreated (see replace_listener). NULL with err set on failure.
 */
/*
 * The credentials of a new listener. With TLS, the first listener creates the file watch; a
 * listener rebuilt after EMFILE shares it (rpc_tls_server_creds_renew), so the watch lives as
 * long as the server and is freed after every grpc_server that used it is destroyed.
 */
static grpc_server_credentials *server_creds(oc_rpc_server_t *s, oc_error_t *err)
{
    if (!s->opts.tls) return grpc_insecure_server_credentials_create();
    if (!s->tls_watch) return rpc_tls_server_creds(s->opts.tls, &s->tls_watch, err);
    return rpc_tls_server_creds_renew(s->tls_watch, err);
}

static grpc_server *build_server(oc_rpc_server_t *s, const char *addr, void **regs, int *port,
                                 oc_error_t *err)
{
    grpc_arg args[SERVER_ARGS];
    grpc_channel_args cargs = {.num_args = server_args(s, args), .args = args};
    grpc_server *srv = grpc_server_create(&cargs, NULL);
    if (!srv) {
        oc_error_set(err, OC_E_INTERNAL, "rpc server: could not create server");
        return NULL;
    }
    for (int i = 0; i < s->ncq; i++)
        grpc_server_register_completion_queue(srv, s->cqs[i], NULL);
    for (size_t i = 0; i < s->nmethods; i++) {
        regs[i] = grpc_server_register_method(srv, s->methods[i].path, NULL,
                                              reads_itself(&s->methods[i])
                                                  ? GRPC_SRM_PAYLOAD_NONE
                                                  : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
                                              0);
        if (!regs[i]) {
            oc_error_set(err, OC_E_INVALID, "rpc server: could not register method %s",
                         s->methods[i].path);
            grpc_server_destroy(srv);
            return NULL;
        }
    }
    grpc_server_credentials *creds = server_creds(s, err);
    if (!creds) {
        grpc_server_destroy(srv);
        return NULL;
    }
    *port = grpc_server_add_http2_port(srv, addr, creds);
    grpc_server_credentials_release(creds);
    if (*port == 0) {
        oc_error_set(err, OC_E_IO, "could not listen on %s", addr);
        /* Not started and nothing bound: it can go without a shutdown. */
        grpc_server_destroy(srv);
        return NULL;
    }
    return srv;
}

oc_rpc_server_t *oc_rpc_server_create(const oc_rpc_server_opts_t *opts,
                                      const oc_rpc_method_t *methods, size_t nmethods,
                                      oc_error_t *err)
{
    oc_rpc_server_t *s = NULL;
    void **regs = NULL;

    if (!opts || !opts->listen || (nmethods && !methods) || opts->workers < 0 ||
        opts->workers > 1024) {
        oc_error_set(err, OC_E_INVALID, "rpc server: invalid options");
        return NULL;
    }
    bool own_health = true;
    for (size_t i = 0; i < nmethods; i++) {
        const oc_rpc_method_t *m = &methods[i];
        if (!path_valid(m->path) || !m->input || !m->output || !m->handler == !m->stream ||
            (m->stream && !m->stream->on_start)) {
            oc_error_set(err, OC_E_INVALID, "rpc server: invalid method entry %zu (%s)", i,
                         m->path ? m->path : "null");
            return NULL;
        }
        if (strcmp(m->path, HEALTH_CHECK_PATH) == 0) own_health = false;
    }

    grpc_init();
    s = calloc(1, sizeof(*s));
    if (!s) {
        grpc_shutdown();
        oc_error_set(err, OC_E_NOMEM, "rpc server: out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->gen_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    s->opts = *opts;
    if (s->opts.workers == 0) s->opts.workers = DEFAULT_WORKERS;
    if (s->opts.max_message_bytes == 0) s->opts.max_message_bytes = DEFAULT_MAX_MESSAGE;
    if (s->opts.max_message_bytes > INT_MAX) s->opts.max_message_bytes = INT_MAX;
    if (s->opts.max_connection_idle_ms <= 0) s->opts.max_connection_idle_ms = DEFAULT_IDLE_MS;
    if (s->opts.max_connection_age_ms <= 0) s->opts.max_connection_age_ms = DEFAULT_AGE_MS;
    if (s->opts.handshake_timeout_ms <= 0) s->opts.handshake_timeout_ms = DEFAULT_HANDSHAKE_MS;
    if (s->opts.max_streams_per_connection <= 0) s->opts.max_streams_per_connection = 256;
    if (s->opts.memory_quota_bytes == 0) s->opts.memory_quota_bytes = DEFAULT_QUOTA;
    if (s->opts.housekeeping_ms <= 0) s->opts.housekeeping_ms = DEFAULT_HOUSEKEEPING_MS;
    if (s->opts.probe_timeout_ms <= 0) s->opts.probe_timeout_ms = DEFAULT_PROBE_TIMEOUT_MS;
    if (s->opts.max_connections <= 0) s->opts.max_connections = default_max_connections();
    atomic_init(&s->serving, true);
    atomic_init(&s->healthy, true);
    s->accept_failures_seen = atomic_load(&g_accept_failures);
    atomic_init(&s->stopping, false);
    atomic_init(&s->outstanding, 0);
    s->shutdown_tag.fn = on_shutdown_tag;
    s->nworkers = s->opts.workers;
    s->ncq = (s->nworkers + THREADS_PER_CQ - 1) / THREADS_PER_CQ;

    /* The table, then health (Check, Watch) and the two reflection methods. */
    s->methods = calloc(nmethods + 4, sizeof(*s->methods));
    s->services = calloc(nmethods + 1, sizeof(*s->services));
    s->cqs = calloc((size_t)s->ncq, sizeof(*s->cqs));
    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    if (!s->methods || !s->services || !s->cqs || !s->workers) {
        oc_error_set(err, OC_E_NOMEM, "rpc server: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nmethods; i++) {
        s->methods[i] = (method_t){methods[i].path,
                                   methods[i].input,
                                   methods[i].output,
                                   methods[i].handler,
                                   method_limits(s, &methods[i]),
                                   NULL,
                                   methods[i].stream,
                                   NULL};
        if (add_service_name(s, methods[i].path, err) != OC_OK) goto fail;
    }
    s->nmethods = nmethods;
    s->table = methods;
    s->ntable = nmethods;
    if (own_health)
        s->methods[s->nmethods++] =
            (method_t){HEALTH_CHECK_PATH,
                       &grpc__health__v1__health_check_request__descriptor,
                       &grpc__health__v1__health_check_response__descriptor,
                       health_check,
                       (oc_rpc_limits_t){.max_request_bytes = HEALTH_MAX_REQUEST,
                                         .max_decode_bytes = HEALTH_MAX_REQUEST * 4 + DECODE_SLACK},
                       NULL,
                       NULL,
                       NULL};
    if (own_health) {
        s->health = rpc_health_create(s->services, s->nservices, true);
        if (!s->health) {
            oc_error_set(err, OC_E_NOMEM, "rpc server: out of memory");
            goto fail;
        }
        s->methods[s->nmethods++] =
            (method_t){HEALTH_WATCH_PATH,
                       &grpc__health__v1__health_check_request__descriptor,
                       &grpc__health__v1__health_check_response__descriptor,
                       NULL,
                       (oc_rpc_limits_t){.max_request_bytes = HEALTH_MAX_REQUEST,
                                         .max_decode_bytes = HEALTH_MAX_REQUEST * 4 + DECODE_SLACK},
                       NULL,
                       &rpc_health_watch_handlers,
                       s->health};
    }
    s->streams = rpc_streams_create(stream_finished, s);
    if (!s->streams) {
        oc_error_set(err, OC_E_NOMEM, "rpc server: out of memory");
        goto fail;
    }
    if (opts->descriptor_set && add_reflection(s, err) != OC_OK) goto fail;

    for (int i = 0; i < s->ncq; i++)
        s->cqs[i] = grpc_completion_queue_create_for_next(NULL);
    regs = calloc(s->nmethods, sizeof(*regs));
    if (!regs) {
        oc_error_set(err, OC_E_NOMEM, "rpc server: out of memory");
        goto fail;
    }
    if (opts->tls && rpc_roles_parse(opts->client_roles, &s->roles, err) != OC_OK) goto fail;
    s->server = build_server(s, opts->listen, regs, &s->port, err);
    if (!s->server) goto fail;
    for (size_t i = 0; i < s->nmethods; i++)
        s->methods[i].registered = regs[i];
    free(regs);
    if (probe_target(s) != OC_OK) {
        oc_error_set(err, OC_E_NOMEM, "rpc server: out of memory");
        goto fail;
    }
    return s;

fail:
    free(regs);
    if (s->server) {
        /* Never started: nobody polls the queues, so the shutdown tag is drained here. */
        grpc_server_shutdown_and_notify(s->server, s->cqs[0], &s->shutdown_tag);
        pump_alone(s);
    }
    for (int i = 0; i < s->ncq; i++) {
        if (!s->cqs[i]) continue;
        grpc_completion_queue_shutdown(s->cqs[i]);
        drain_alone(s->cqs[i]);
    }
    free_server(s);
    return NULL;
}

int oc_rpc_server_port(const oc_rpc_server_t *s)
{
    return s ? s->port : 0;
}

oc_err_t oc_rpc_server_start(oc_rpc_server_t *s, oc_error_t *err)
{
    if (!s || s->started || s->shut_down)
        return oc_error_set(err, OC_E_INVALID, "rpc server: already started or stopped");
    grpc_server_start(s->server);
    s->started = true;
    for (int q = 0; q < s->ncq; q++) {
        for (size_t m = 0; m < s->nmethods; m++)
            for (int k = 0; k < REQUESTS_PER_METHOD; k++)
                if (!post_request(s, (int)m, q)) goto nomem;
        for (int k = 0; k < REQUESTS_UNREGISTERED; k++)
            if (!post_request(s, UNREGISTERED, q)) goto nomem;
    }
    /* Workers must never take the process's termination signals: main sigwaits for them
     * (GRPC-CORE.md pitfall 3), even when it forgot to block them before calling us. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGQUIT);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    for (int i = 0; i < s->nworkers; i++) {
        worker_t *w = &s->workers[i];
        w->s = s;
        w->index = i;
        w->cq = s->cqs[i % s->ncq];
        rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) break;
        w->running = true;
    }
    if (rc == 0) {
        rc = pthread_create(&s->keeper, NULL, keeper_main, s);
        s->keeper_running = rc == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return oc_error_set(err, OC_E_INTERNAL, "rpc server: could not start worker threads: %s",
                            strerror(rc));
    return OC_OK;

nomem:
    /* Requests already posted are released at shutdown (they complete with ok=0). */
    return oc_error_set(err, OC_E_NOMEM, "rpc server: could not post request calls");
}

void oc_rpc_server_set_serving(oc_rpc_server_t *s, bool serving)
{
    if (!s) return;
    atomic_store(&s->serving, serving);
    rpc_health_set(s->health, serving);
}

void oc_rpc_server_shutdown(oc_rpc_server_t *s, int grace_ms)
{
    if (!s || s->shut_down) return;
    s->shut_down = true;
    keeper_stop(s);
    atomic_store(&s->serving, false);
    rpc_health_set(s->health, false);
    atomic_store(&s->stopping, true);
    /* Refuses new calls; pending request tags complete with ok=0 and are released by the
     * workers; the tag arrives once the listeners and connections are gone. Without a current
     * server (its replacement could not bind yet) there is nothing to wait for. */
    if (s->server)
        grpc_server_shutdown_and_notify(s->server, s->cqs[0], &s->shutdown_tag);
    else
        s->shutdown_tag_seen = true;

    bool running = false;
    for (int i = 0; i < s->nworkers; i++)
        running |= s->workers[i].running;
    if (!running) {
        /* Never started (or no thread came up): this thread is the only poller. */
        grpc_server_cancel_all_calls(s->server);
        pump_alone(s);
        for (int q = 0; q < s->ncq; q++) {
            grpc_completion_queue_shutdown(s->cqs[q]);
            drain_alone(s->cqs[q]);
        }
        return;
    }

    /* Open streams are told now (on_shutdown), so they can end within the grace period. */
    rpc_streams_shutdown(s->streams);

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (grace_ms > 0) {
        until.tv_sec += grace_ms / 1000;
        until.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&s->mu);
    while (!idle(s))
        if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT) break;
    bool done = idle(s);
    pthread_mutex_unlock(&s->mu);
    if (!done) {
        /* Grace is over: in-flight calls fail at once; handlers still blocked finish their
         * work, and their final batches complete (unsuccessfully) right away. */
        OC_LOG(OC_LOG_WARN, "rpc: shutdown grace period over, cancelling calls",
               OC_LI("pending_tags", atomic_load(&s->outstanding)));
        if (s->server) grpc_server_cancel_all_calls(s->server);
        for (retired_t *r = s->retired; r; r = r->next)
            grpc_server_cancel_all_calls(r->server);
        pthread_mutex_lock(&s->mu);
        while (!idle(s))
            pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
    }
    /* Nothing of ours is pending any more, so no batch can start on a shut-down queue. */
    for (int q = 0; q < s->ncq; q++)
        grpc_completion_queue_shutdown(s->cqs[q]);
    for (int i = 0; i < s->nworkers; i++) {
        if (!s->workers[i].running) continue;
        pthread_join(s->workers[i].thread, NULL);
        s->workers[i].running = false;
    }
}

void oc_rpc_server_destroy(oc_rpc_server_t *s)
{
    if (!s) return;
    oc_rpc_server_shutdown(s, 0);
    free_server(s);
}

/* ---- gRPC core logs ---- */

static void core_log(gpr_log_func_args *a)
{
    /* gRPC 1.51 gives up on a listening port when accept4 fails with anything but EAGAIN or
     * ECONNABORTED (EMFILE, ENFILE, ENOBUFS...), and says so only in this line. */
    if (a->message && strncmp(a->message, "Failed accept4", 14) == 0)
        atomic_fetch_add(&g_accept_failures, 1);
    oc_log_level_t level = a->severity == GPR_LOG_SEVERITY_ERROR  ? OC_LOG_ERROR
                           : a->severity == GPR_LOG_SEVERITY_INFO ? OC_LOG_INFO
                                                                  : OC_LOG_DEBUG;
    /* gpr_log has already applied GRPC_VERBOSITY; our own level gate applies on top. */
    OC_LOG(level, a->message ? a->message : "", OC_LS("component", "grpc-core"),
           OC_LS("file", a->file), OC_LI("line", a->line));
}

void oc_rpc_route_core_logs(void)
{
    gpr_set_log_function(core_log);
}
