/* Streaming calls on gRPC core: one event-driven state machine per call, a bounded send queue,
 * serialized callbacks, and reference counting for producers on other threads. */
#include "rpc_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "omnichat/log.h"
#include "omnichat/util.h"

#define DEFAULT_QUEUE 8
/* A cancellation this close to the deadline is reported as the deadline. */
#define DEADLINE_TOLERANCE_US 200000
#define QUEUE_MAX 4096

#define CONTAINER_OF(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Events waiting for the stream's callbacks, run lowest bit first: on_start before anything,
 * on_done last. */
enum {
    EV_START = 1u << 0,
    EV_MESSAGE = 1u << 1,
    EV_HALF_CLOSE = 1u << 2,
    EV_WRITABLE = 1u << 3,
    EV_SHUTDOWN = 1u << 4,
    EV_CANCEL = 1u << 5,
    EV_DONE = 1u << 6,
};

struct rpc_streams {
    pthread_mutex_t mu; /* lock order: rpc_streams.mu before oc_rpc_stream.mu */
    oc_rpc_stream_t *head;
    bool stopping;
    rpc_stream_finished_fn finished;
    void *host;
};

/*
 * Three lanes, each with at most one batch outstanding (gRPC's rule is one per op type): the
 * send lane (initial metadata, then one message at a time, then the status), the receive lane
 * (bidirectional only: one RECV_MESSAGE) and the close lane (RECV_CLOSE_ON_SERVER, posted at
 * the start, completing when the call is over for whatever reason). Completions only record
 * events; whichever thread finds no callback running runs them, so one stream's callbacks never
 * overlap and a callback may call send/end without deadlock (mu is not held around callbacks).
 */
struct oc_rpc_stream {
    rpc_tag_t send_tag, recv_tag, close_tag;
    rpc_streams_t *reg;
    oc_rpc_stream_t *prev, *next; /* reg's list, under reg->mu */
    const oc_rpc_stream_handlers_t *h;
    const ProtobufCMessageDescriptor *input, *output;
    oc_rpc_limits_t limits;
    const ProtobufCMessage *req; /* server streaming: in ctx.arena */
    oc_rpc_ctx_t ctx;            /* written by callbacks only (they never overlap) */
    int64_t start_us;
    atomic_long refs;

    pthread_mutex_t mu; /* everything below */
    grpc_call *call;    /* NULL once finished */
    void *data;
    /* send lane: a ring of qmax + 1 slots (the extra one for end's final message) */
    grpc_byte_buffer **q;
    size_t qhead, qlen, qmax;
    grpc_byte_buffer *inflight;
    bool sending, md_sent, want_writable;
    /* the end: requested (ending), its status on the wire (status_started), or forced */
    bool ending, status_started, aborted, broken;
    oc_err_t end_code;
    oc_error_t end_err;
    grpc_slice details;
    /* receive lane */
    grpc_byte_buffer *recv_bb, *msg;
    bool receiving, recv_paused, half_closed;
    /* close lane */
    int cancelled_flag;
    bool closed, cancelled, finished;
    /* callbacks */
    unsigned pending;
    bool running;
};

static void run_locked(oc_rpc_stream_t *st);

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

static void stream_free(oc_rpc_stream_t *st)
{
    pthread_mutex_destroy(&st->mu);
    free(st->q);
    oc_arena_destroy(st->ctx.arena);
    free(st);
}

void oc_rpc_stream_ref(oc_rpc_stream_t *st)
{
    atomic_fetch_add(&st->refs, 1);
}

void oc_rpc_stream_unref(oc_rpc_stream_t *st)
{
    if (st && atomic_fetch_sub(&st->refs, 1) == 1) stream_free(st);
}

/* Starts a batch; a batch holds a reference until it completes. On failure the call is
 * cancelled so that the close lane completes and the stream can finish. */
static bool start_locked(oc_rpc_stream_t *st, const grpc_op *ops, size_t n, rpc_tag_t *tag)
{
    grpc_call_error e = grpc_call_start_batch(st->call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        OC_LOG(OC_LOG_ERROR, "rpc: could not start a stream batch", OC_LS("method", st->ctx.method),
               OC_LI("grpc_call_error", e));
        st->broken = true;
        grpc_call_cancel(st->call, NULL);
        return false;
    }
    oc_rpc_stream_ref(st);
    return true;
}

static void drop_queue_locked(oc_rpc_stream_t *st)
{
    while (st->qlen > 0) {
        grpc_byte_buffer_destroy(st->q[st->qhead]);
        st->qhead = (st->qhead + 1) % (st->qmax + 1);
        st->qlen--;
    }
}

static void push_locked(oc_rpc_stream_t *st, grpc_byte_buffer *bb)
{
    st->q[(st->qhead + st->qlen) % (st->qmax + 1)] = bb;
    st->qlen++;
}

/* Moves the send lane one step when it is free: headers first (so that a client sees the
 * stream open even when nothing follows for a long time), then each queued message, then the
 * status, riding with the last message when there is one. */
static void kick_send_locked(oc_rpc_stream_t *st)
{
    grpc_op ops[2];
    size_t n = 0;

    if (st->sending || st->closed || st->broken || st->aborted || !st->call) return;
    memset(ops, 0, sizeof ops);
    if (!st->md_sent) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        st->md_sent = true;
    } else {
        if (st->qlen > 0) {
            st->inflight = st->q[st->qhead];
            st->qhead = (st->qhead + 1) % (st->qmax + 1);
            st->qlen--;
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n++].data.send_message.send_message = st->inflight;
        }
        if (st->ending && st->qlen == 0 && !st->status_started) {
            ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[n].data.send_status_from_server.status =
                st->end_code == OC_OK ? GRPC_STATUS_OK
                                      : (grpc_status_code)oc_err_grpc_status(st->end_code);
            ops[n++].data.send_status_from_server.status_details = &st->details;
            st->status_started = true;
        }
        if (n == 0) return;
    }
    st->sending = start_locked(st, ops, n, &st->send_tag);
}

static void start_recv_locked(oc_rpc_stream_t *st)
{
    grpc_op op;

    if (!st->h->client_streaming || st->receiving || st->half_closed || st->closed || st->ending ||
        st->broken || !st->call || (st->pending & (EV_START | EV_MESSAGE)))
        return;
    if (st->qlen >= st->qmax) {
        /* Read no more until the client reads: its writes then wait in HTTP/2 flow control. */
        st->recv_paused = true;
        return;
    }
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &st->recv_bb;
    st->receiving = start_locked(st, &op, 1, &st->recv_tag);
}

static void check_finished_locked(oc_rpc_stream_t *st)
{
    if (st->finished || !st->closed || st->sending || st->receiving) return;
    st->finished = true;
    st->pending |= EV_DONE;
}

/* After any lane moved: room in the queue wakes the producer and the reader. */
static void after_io_locked(oc_rpc_stream_t *st)
{
    bool room = st->qlen < st->qmax;
    if (room && st->want_writable && !st->ending && !st->closed) {
        st->want_writable = false;
        st->pending |= EV_WRITABLE;
    }
    if (room && st->recv_paused) {
        st->recv_paused = false;
        start_recv_locked(st);
    }
    check_finished_locked(st);
    run_locked(st);
}

static void on_send_done(void *tag, bool ok)
{
    oc_rpc_stream_t *st = CONTAINER_OF(tag, oc_rpc_stream_t, send_tag);

    pthread_mutex_lock(&st->mu);
    st->sending = false;
    if (st->inflight) {
        grpc_byte_buffer_destroy(st->inflight);
        st->inflight = NULL;
    }
    if (!ok)
        st->broken = true; /* the call is gone; the close lane says how */
    else
        kick_send_locked(st);
    after_io_locked(st);
    oc_rpc_stream_unref(st);
}

static void on_recv_done(void *tag, bool ok)
{
    oc_rpc_stream_t *st = CONTAINER_OF(tag, oc_rpc_stream_t, recv_tag);

    pthread_mutex_lock(&st->mu);
    st->receiving = false;
    if (!ok || !st->recv_bb) {
        st->half_closed = true;
        if (ok && !st->ending && !st->closed) st->pending |= EV_HALF_CLOSE;
    } else {
        st->msg = st->recv_bb;
        st->recv_bb = NULL;
        st->pending |= EV_MESSAGE;
    }
    check_finished_locked(st);
    run_locked(st);
    oc_rpc_stream_unref(st);
}

static void on_close_done(void *tag, bool ok)
{
    oc_rpc_stream_t *st = CONTAINER_OF(tag, oc_rpc_stream_t, close_tag);

    pthread_mutex_lock(&st->mu);
    st->closed = true;
    if ((!ok || st->cancelled_flag) && !st->aborted) {
        st->cancelled = true;
        st->pending |= EV_CANCEL;
    }
    drop_queue_locked(st);
    check_finished_locked(st);
    run_locked(st);
    oc_rpc_stream_unref(st);
}

oc_err_t oc_rpc_stream_send(oc_rpc_stream_t *st, const ProtobufCMessage *msg)
{
    oc_err_t rc = OC_OK;

    if (!st || !msg || msg->descriptor != st->output) return OC_E_INVALID;
    pthread_mutex_lock(&st->mu);
    if (st->ending || st->closed || st->broken || st->aborted) {
        rc = OC_E_CANCELLED;
    } else if (st->qlen >= st->qmax) {
        st->want_writable = true;
        rc = OC_E_AGAIN;
    } else {
        push_locked(st, pack(msg));
        kick_send_locked(st);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

oc_err_t oc_rpc_stream_end(oc_rpc_stream_t *st, oc_err_t code, const char *msg,
                           const ProtobufCMessage *final)
{
    oc_err_t rc = OC_OK;

    if (!st || (final && final->descriptor != st->output)) return OC_E_INVALID;
    pthread_mutex_lock(&st->mu);
    if (st->ending || st->closed || st->broken || st->aborted) {
        rc = OC_E_CANCELLED;
        goto out;
    }
    /* The ring keeps one slot beyond qmax for this. */
    if (final) push_locked(st, pack(final));
    st->ending = true;
    st->want_writable = false;
    st->end_code = code;
    oc_error_clear(&st->end_err);
    if (code != OC_OK) {
        oc_error_set(&st->end_err, code, "%s", msg ? msg : oc_err_message(code));
        /* Refcounted copy: gRPC may hold the details past the batch. */
        st->details = grpc_slice_from_copied_string(st->end_err.msg);
    }
    kick_send_locked(st);
out:
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void oc_rpc_stream_abort(oc_rpc_stream_t *st, oc_err_t code, const char *msg)
{
    if (!st) return;
    if (code == OC_OK) code = OC_E_CANCELLED;
    pthread_mutex_lock(&st->mu);
    if (!st->closed && !st->aborted && st->call) {
        st->aborted = true;
        st->end_code = code;
        oc_error_clear(&st->end_err);
        oc_error_set(&st->end_err, code, "%s", msg ? msg : oc_err_message(code));
        drop_queue_locked(st);
        grpc_call_cancel_with_status(st->call, (grpc_status_code)oc_err_grpc_status(code),
                                     st->end_err.msg, NULL);
    }
    pthread_mutex_unlock(&st->mu);
}

void oc_rpc_stream_set_data(oc_rpc_stream_t *st, void *data)
{
    pthread_mutex_lock(&st->mu);
    st->data = data;
    pthread_mutex_unlock(&st->mu);
}

void *oc_rpc_stream_data(oc_rpc_stream_t *st)
{
    pthread_mutex_lock(&st->mu);
    void *d = st->data;
    pthread_mutex_unlock(&st->mu);
    return d;
}

size_t oc_rpc_stream_queued(oc_rpc_stream_t *st)
{
    pthread_mutex_lock(&st->mu);
    size_t n = st->qlen + (st->inflight ? 1 : 0);
    pthread_mutex_unlock(&st->mu);
    return n;
}

/* ---- callbacks ---- */

/* One client message: decoded under the method's limits like a unary request, into an arena
 * that lives as long as on_message. A bad message ends the stream with its error. */
static void deliver(oc_rpc_stream_t *st, grpc_byte_buffer *bb)
{
    oc_error_t err;
    oc_arena_t *arena = oc_arena_create(0);
    size_t len = grpc_byte_buffer_length(bb);
    ProtobufCMessage *m = NULL;
    grpc_byte_buffer_reader r;
    oc_err_t rc;

    oc_error_clear(&err);
    if (!arena) {
        rc = oc_error_set(&err, OC_E_NOMEM, "server: out of memory");
    } else if (len > st->limits.max_request_bytes) {
        rc = oc_error_set(&err, OC_E_TOO_LARGE, "request: %zu bytes, at most %zu for this method",
                          len, st->limits.max_request_bytes);
    } else if (!grpc_byte_buffer_reader_init(&r, bb)) {
        rc = oc_error_set(&err, OC_E_INVALID, "request: unreadable message");
    } else {
        grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        m = oc_rpc_decode(st->input, &st->limits, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl),
                          arena, &err);
        grpc_slice_unref(sl);
        rc = m ? OC_OK : err.code;
    }
    if (rc == OC_OK && st->h->on_message) {
        oc_error_clear(&st->ctx.err);
        rc = st->h->on_message(st, &st->ctx, m, arena);
    } else if (rc != OC_OK) {
        st->ctx.err = err;
    }
    if (rc != OC_OK) oc_rpc_stream_end(st, rc, st->ctx.err.msg[0] ? st->ctx.err.msg : NULL, NULL);
    oc_arena_destroy(arena);
}

/* The call is over and gRPC holds no batch of ours: give everything of gRPC's back, then tell
 * the service and the server. The stream's memory stays while references remain. */
static void finish(oc_rpc_stream_t *st)
{
    rpc_streams_t *r = st->reg;
    grpc_call *call;
    oc_err_t code;
    int status;

    pthread_mutex_lock(&st->mu);
    if (st->aborted || (st->status_started && !st->cancelled)) {
        code = st->end_code;
    } else if (st->cancelled || st->broken) {
        /* RECV_CLOSE_ON_SERVER does not say why. The client's own timer usually fires first:
         * our deadline is its timeout counted from arrival, later by the transit time. */
        code = st->ctx.deadline_us != INT64_MAX &&
                       oc_now_us() >= st->ctx.deadline_us - DEADLINE_TOLERANCE_US
                   ? OC_E_DEADLINE
                   : OC_E_CANCELLED;
    } else {
        code = OC_E_UNKNOWN;
    }
    status = code == OC_OK ? GRPC_STATUS_OK : oc_err_grpc_status(code);
    call = st->call;
    st->call = NULL;
    drop_queue_locked(st);
    if (st->msg) grpc_byte_buffer_destroy(st->msg);
    if (st->recv_bb) grpc_byte_buffer_destroy(st->recv_bb);
    st->msg = st->recv_bb = NULL;
    grpc_slice_unref(st->details);
    st->details = grpc_empty_slice();
    if (st->ctx.err.code == OC_OK && code != OC_OK)
        st->ctx.err = st->end_err.code != OC_OK ? st->end_err : (oc_error_t){.code = code};
    pthread_mutex_unlock(&st->mu);
    if (call) grpc_call_unref(call);

    pthread_mutex_lock(&r->mu);
    if (st->prev)
        st->prev->next = st->next;
    else
        r->head = st->next;
    if (st->next) st->next->prev = st->prev;
    st->prev = st->next = NULL;
    pthread_mutex_unlock(&r->mu);

    if (st->h->on_done) st->h->on_done(st, &st->ctx, status);
    r->finished(r->host, &st->ctx, status, oc_mono_us() - st->start_us);
    /* The server's reference; the runner still holds its own. */
    oc_rpc_stream_unref(st);
}

static void dispatch(oc_rpc_stream_t *st, unsigned ev, grpc_byte_buffer *msg)
{
    const oc_rpc_stream_handlers_t *h = st->h;

    switch (ev) {
    case EV_START: {
        oc_error_clear(&st->ctx.err);
        oc_err_t rc = h->on_start(st, &st->ctx, st->req);
        if (rc != OC_OK)
            oc_rpc_stream_end(st, rc, st->ctx.err.msg[0] ? st->ctx.err.msg : NULL, NULL);
        break;
    }
    case EV_MESSAGE:
        deliver(st, msg);
        break;
    case EV_HALF_CLOSE:
        if (h->on_half_close)
            h->on_half_close(st, &st->ctx);
        else
            oc_rpc_stream_end(st, OC_OK, NULL, NULL);
        break;
    case EV_WRITABLE:
        if (h->on_writable) h->on_writable(st, &st->ctx);
        break;
    case EV_SHUTDOWN:
        if (h->on_shutdown)
            h->on_shutdown(st, &st->ctx);
        else
            oc_rpc_stream_end(st, OC_E_UNAVAILABLE, "server shutting down", NULL);
        break;
    case EV_CANCEL:
        if (h->on_cancel) h->on_cancel(st, &st->ctx);
        break;
    case EV_DONE:
        finish(st);
        break;
    default:
        break;
    }
}

/* Runs pending events unless another thread is already at it (it will see them). Called with
 * mu held; returns with it released. */
static void run_locked(oc_rpc_stream_t *st)
{
    if (st->running || st->pending == 0) {
        pthread_mutex_unlock(&st->mu);
        return;
    }
    st->running = true;
    oc_rpc_stream_ref(st);
    while (st->pending) {
        unsigned ev = st->pending & -st->pending;
        grpc_byte_buffer *msg = NULL;
        st->pending &= ~ev;
        if (ev == EV_MESSAGE) {
            msg = st->msg;
            st->msg = NULL;
        }
        /* Once the stream is ending or over, only the cancellation and the end matter. */
        bool skip = (ev & (EV_MESSAGE | EV_HALF_CLOSE | EV_WRITABLE | EV_SHUTDOWN)) &&
                    (st->closed || st->aborted || st->ending);
        pthread_mutex_unlock(&st->mu);
        /* Callbacks move between threads: ctx->worker is always the running thread's. */
        st->ctx.worker = rpc_current_worker();
        if (!skip) dispatch(st, ev, msg);
        if (msg) grpc_byte_buffer_destroy(msg);
        pthread_mutex_lock(&st->mu);
        /* The next client message is read only once this one was handled. */
        if (ev == EV_START || ev == EV_MESSAGE) start_recv_locked(st);
    }
    st->running = false;
    pthread_mutex_unlock(&st->mu);
    oc_rpc_stream_unref(st);
}

/* ---- the server's side ---- */

rpc_streams_t *rpc_streams_create(rpc_stream_finished_fn finished, void *host)
{
    rpc_streams_t *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->finished = finished;
    r->host = host;
    return r;
}

void rpc_streams_destroy(rpc_streams_t *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void rpc_streams_shutdown(rpc_streams_t *r)
{
    oc_rpc_stream_t **all = NULL;
    size_t n = 0, i = 0;

    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    for (oc_rpc_stream_t *st = r->head; st; st = st->next)
        n++;
    all = n ? calloc(n, sizeof(*all)) : NULL;
    for (oc_rpc_stream_t *st = r->head; st && all; st = st->next) {
        oc_rpc_stream_ref(st);
        all[i++] = st;
    }
    pthread_mutex_unlock(&r->mu);
    if (n && !all)
        OC_LOG(OC_LOG_ERROR, "rpc: out of memory, open streams end with the grace period");
    for (i = 0; all && i < n; i++) {
        oc_rpc_stream_t *st = all[i];
        pthread_mutex_lock(&st->mu);
        if (!st->closed) st->pending |= EV_SHUTDOWN;
        run_locked(st);
        oc_rpc_stream_unref(st);
    }
    free(all);
}

oc_err_t rpc_stream_begin(rpc_streams_t *r, const oc_rpc_stream_handlers_t *h,
                          const ProtobufCMessageDescriptor *input,
                          const ProtobufCMessageDescriptor *output, const oc_rpc_limits_t *limits,
                          grpc_call *call, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req,
                          int64_t start_us)
{
    oc_rpc_stream_t *st = calloc(1, sizeof(*st));
    size_t qmax = h->queue_max == 0 ? DEFAULT_QUEUE : h->queue_max;
    grpc_op op;

    if (qmax > QUEUE_MAX) qmax = QUEUE_MAX;
    if (st) st->q = calloc(qmax + 1, sizeof(*st->q));
    if (!st || !st->q) {
        if (st) free(st);
        return OC_E_NOMEM;
    }
    st->send_tag.fn = on_send_done;
    st->recv_tag.fn = on_recv_done;
    st->close_tag.fn = on_close_done;
    st->reg = r;
    st->h = h;
    st->input = input;
    st->output = output;
    st->limits = *limits;
    st->req = req;
    st->ctx = *ctx;
    ctx->arena = NULL;
    st->start_us = start_us;
    st->qmax = qmax;
    st->call = call;
    st->details = grpc_empty_slice();
    atomic_init(&st->refs, 1); /* the server's, dropped after on_done */
    pthread_mutex_init(&st->mu, NULL);
    /* Nothing runs before on_start: a shutdown seen now only queues its event. */
    st->running = true;
    st->pending = EV_START;

    pthread_mutex_lock(&r->mu);
    st->next = r->head;
    if (r->head) r->head->prev = st;
    r->head = st;
    pthread_mutex_lock(&st->mu);
    if (r->stopping) st->pending |= EV_SHUTDOWN;
    pthread_mutex_unlock(&r->mu);

    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &st->cancelled_flag;
    /* Without the close lane nothing would tell when the call is over: call it over now. */
    if (!start_locked(st, &op, 1, &st->close_tag)) st->closed = true;
    kick_send_locked(st);
    st->running = false;
    check_finished_locked(st);
    run_locked(st);
    return OC_OK;
}
