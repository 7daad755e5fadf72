/* A thin layer over gRPC core (1.51): unary and streaming servers with a method table, server
 * reflection, and a blocking client. */
#ifndef OMNICHAT_RPC_H
#define OMNICHAT_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/arena.h"
#include "omnichat/err.h"
#include "omnichat/pbcheck.h"

/* Per-call context handed to a handler. Everything in it lives until the response is sent. */
typedef struct oc_rpc_ctx {
    oc_arena_t *arena;   /* for the response and any scratch memory of this call */
    void *worker;        /* what opts.worker_init returned for the thread running the call */
    void *user;          /* opts.user */
    const char *method;  /* full path, "/pkg.Service/Method" */
    int64_t deadline_us; /* absolute, oc_now_us() clock; INT64_MAX when the client set none */
    char request_id[64]; /* "x-request-id" metadata when sent (truncated), else a new UUIDv4 */
    char tenant_id[40];  /* set by the handler (for access logs); "" when none */
    char peer[64];       /* the client certificate's identity (a SAN, truncated); "" in plaintext */
    bool denied;         /* refused by the method's roles (PERMISSION_DENIED, nothing ran) */
    oc_error_t err;      /* a failing handler records its code and message here */
} oc_rpc_ctx_t;

/*
 * A unary handler. `req` was unpacked with the call's arena allocator. On success it stores a
 * response message (allocated in ctx->arena, or static) in *resp and returns OC_OK. On failure
 * it returns an error (usually via oc_error_set(&ctx->err, ...)); the client then receives the
 * gRPC status of that error with ctx->err.msg as the status message. Handlers may block (they
 * run on one of opts.workers threads).
 */
typedef oc_err_t (*oc_rpc_handler_fn)(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req,
                                      ProtobufCMessage **resp);

/*
 * Client roles. Over TLS a client's certificate SANs are mapped to roles by the server's
 * `client_roles` ("connector-line=connector,inbox-web=inbox,omnichatctl=operator"), and a call
 * runs only when the method's `roles` share a bit with the client's: the tables are the policy.
 * OC_RPC_ROLE_ANY admits every authenticated peer, mapped or not (health checks). Without TLS
 * there is no identity and nothing is checked: plaintext is for the laptop sandbox only.
 */
#define OC_RPC_ROLE_CONNECTOR 0x1u
#define OC_RPC_ROLE_INBOX 0x2u
#define OC_RPC_ROLE_OPERATOR 0x4u
#define OC_RPC_ROLE_ANY 0x80000000u

/*
 * How much work one request of a method may cause before its handler runs. A request over
 * max_request_bytes gets RESOURCE_EXHAUSTED; one whose wire content breaks `wire` gets
 * INVALID_ARGUMENT naming the field, before anything is unpacked; unpacking draws from the
 * call's arena under a hard budget: what the wire walk says it will need (oc_pb_check) plus
 * slack, and never more than max_decode_bytes (RESOURCE_EXHAUSTED past it, refused before
 * unpacking).
 */
typedef struct oc_rpc_limits {
    size_t max_request_bytes; /* 0: the server's max_message_bytes */
    size_t max_decode_bytes;  /* 0: 4 x max_request_bytes + 64 KiB */
    oc_pb_limits_t wire;
} oc_rpc_limits_t;

/*
 * Streaming calls: server streaming (one request, then any number of responses) and
 * bidirectional (requests and responses in both directions), registered in the same method
 * table as unary calls (a row with .stream instead of .handler).
 *
 * Threading contract:
 * - No thread per stream. Callbacks run on the server's worker threads as the call's events
 *   complete (on_shutdown: on the thread that called oc_rpc_server_shutdown, or a worker).
 *   The callbacks of ONE stream never run concurrently and come in order: on_start first,
 *   on_done last and exactly once; on_cancel at most once. Callbacks of different streams
 *   run in parallel. A callback must not block for long: it holds a worker. In a callback,
 *   ctx->worker is the running thread's worker state (NULL off the worker threads).
 * - oc_rpc_stream_send, _end, _abort, _ref and _unref are thread-safe and may be called from
 *   any thread (a fan-out thread, another stream's callback), also while the stream is being
 *   torn down: a producer that keeps a stream beyond the callback it got it from takes a
 *   reference (oc_rpc_stream_ref) and drops it when done (after on_done, calls only fail).
 * - Backpressure: at most one message is on the wire per call (gRPC allows one SEND_MESSAGE
 *   outstanding); the rest wait in a bounded per-stream queue (queue_max). When it is full,
 *   send returns OC_E_AGAIN and on_writable follows once there is room again, so a producer
 *   can drop, coalesce or end a slow consumer (e.g. oc_rpc_stream_abort).
 * - Client messages (bidirectional) arrive one at a time through on_message (one RECV_MESSAGE
 *   outstanding), each decoded under the method's oc_rpc_limits_t like a unary request into
 *   an arena of its own that is freed when on_message returns. While the send queue is full
 *   no further message is read, so a client that writes without reading is held back by
 *   HTTP/2 flow control, not by our memory.
 * - The client going away (cancel, deadline, lost connection) is seen through
 *   RECV_CLOSE_ON_SERVER: on_cancel, then on_done. Queued messages are dropped.
 * - Graceful shutdown (oc_rpc_server_shutdown) calls on_shutdown of every open stream at its
 *   start; it should send a last message if it has one and end the stream (the default ends
 *   it with UNAVAILABLE). Streams still open when the grace period is over are cancelled.
 * - Roles are checked at the start as for unary calls (a refused stream runs no callback but
 *   the server's on_complete). opts.on_complete fires once per stream, after on_done, with
 *   the final status; latency is the stream's lifetime.
 */
typedef struct oc_rpc_stream oc_rpc_stream_t;

typedef struct oc_rpc_stream_handlers {
    /* false: server streaming, the request arrives with the start; true: bidirectional. */
    bool client_streaming;
    /* Messages that may wait to be sent (0: 8). The final message of oc_rpc_stream_end does
     * not count. */
    size_t queue_max;
    /*
     * Required. The stream has started: `req` is the request (server streaming; decoded into
     * ctx->arena, which lives as long as the stream) or NULL (bidirectional). Return OC_OK to
     * keep the stream open (responses may be sent from here or later, from any thread), or an
     * error (with oc_error_set(&ctx->err, ...)) to end it with that status.
     */
    oc_err_t (*on_start)(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req);
    /* Bidirectional: one client message, in `arena` (freed on return). An error ends the
     * stream with that status. NULL: client messages are read and ignored. */
    oc_err_t (*on_message)(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *msg,
                           oc_arena_t *arena);
    /* Bidirectional: the client has sent its last message. NULL: the stream ends with OK
     * once the queued messages are sent. */
    void (*on_half_close)(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx);
    /* The queue was full (a send returned OC_E_AGAIN) and has room again. Optional. */
    void (*on_writable)(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx);
    /* The client cancelled, its deadline passed or its connection was lost. Optional. */
    void (*on_cancel)(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx);
    /* The server is shutting down gracefully. NULL: end with UNAVAILABLE. */
    void (*on_shutdown)(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx);
    /* The call is over (grpc_status as sent, or CANCELLED / DEADLINE_EXCEEDED): nothing more
     * will be sent or received; drop every registration of `st` here. Optional. */
    void (*on_done)(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, int grpc_status);
} oc_rpc_stream_handlers_t;

typedef struct oc_rpc_method {
    const char *path; /* "/omnichat.persistence.v1.Persistence/UpsertContact" */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    oc_rpc_handler_fn handler;     /* unary; NULL for a streaming method */
    unsigned roles;                /* OC_RPC_ROLE_* allowed to call it over TLS; 0: nobody */
    const oc_rpc_limits_t *limits; /* NULL: server defaults (copied at create) */
    /* Streaming; NULL for a unary method (exactly one of handler and stream is set). The
     * handlers must outlive the server. */
    const oc_rpc_stream_handlers_t *stream;
} oc_rpc_method_t;

/*
 * Queues `msg` (packed now: the caller's memory may go on return) after the messages already
 * queued. OC_OK; OC_E_AGAIN when the queue is full (nothing queued; on_writable follows when
 * there is room); OC_E_CANCELLED when the stream has ended or is ending (nothing queued);
 * OC_E_INVALID for a message of another type than the method's output. Never blocks.
 * Thread-safe.
 */
oc_err_t oc_rpc_stream_send(oc_rpc_stream_t *st, const ProtobufCMessage *msg);
/*
 * Ends the stream with `code` (OC_OK or an error; its gRPC status is sent) and the status
 * message `msg` (NULL: the code's message), after the queued messages and, when given, one
 * `final` message (for example a last bookmark; it never gets OC_E_AGAIN). The first end wins:
 * OC_E_CANCELLED when the stream was already ending or over. Never blocks. Thread-safe.
 */
oc_err_t oc_rpc_stream_end(oc_rpc_stream_t *st, oc_err_t code, const char *msg,
                           const ProtobufCMessage *final);
/* Ends the stream at once with `code` and `msg`, dropping what is queued (a slow consumer).
 * No on_cancel follows; on_done does. Thread-safe. */
void oc_rpc_stream_abort(oc_rpc_stream_t *st, oc_err_t code, const char *msg);
/* References: the stream's memory stays valid until the last one is dropped. The server holds
 * one until after on_done. Thread-safe. */
void oc_rpc_stream_ref(oc_rpc_stream_t *st);
void oc_rpc_stream_unref(oc_rpc_stream_t *st);
/* The service's own per-stream pointer (NULL until set). Thread-safe. */
void oc_rpc_stream_set_data(oc_rpc_stream_t *st, void *data);
void *oc_rpc_stream_data(oc_rpc_stream_t *st);
/* Messages currently queued (including the one on the wire). Thread-safe. */
size_t oc_rpc_stream_queued(oc_rpc_stream_t *st);

/*
 * TLS files (PEM). Servers and clients alike present cert_file/key_file and trust ca_file,
 * and both sides require the other's certificate (mutual TLS). The files are read again when
 * they change (checked on each new connection by servers, at most once a second by clients),
 * so certificates rotate without a restart; a half-written pair (key not matching the
 * certificate) is ignored until it is complete.
 */
typedef struct oc_rpc_tls {
    const char *cert_file;   /* certificate chain, leaf first */
    const char *key_file;    /* its private key */
    const char *ca_file;     /* the CA(s) the peer's certificate must chain to */
    const char *server_name; /* client only, optional: the name checked in the server's
                                certificate instead of the target's host */
} oc_rpc_tls_t;

/* Reads and checks the files as a server or client would (for --check-config). */
oc_err_t oc_rpc_tls_check(const oc_rpc_tls_t *tls, oc_error_t *err);

/* Checks a client_roles spec ("name=role,..."; roles connector, inbox, operator). Suitable as
 * a config validator: false with a reason in `why`. */
bool oc_rpc_roles_valid(const char *spec, char *why, size_t why_len);

typedef struct oc_rpc_server_opts {
    const char *listen;       /* "127.0.0.1:50051"; port 0 picks a free port */
    int workers;              /* threads running handlers (each may block); default 16 */
    size_t max_message_bytes; /* receive limit; default 4 MiB */
    /* Connection limits (0: default). Idle connections (no call) get GOAWAY after
     * max_connection_idle_ms (5 min), every connection after max_connection_age_ms (30 min,
     * then 30 s to finish its calls); a handshake must finish within handshake_timeout_ms
     * (10 s); one connection carries at most max_streams_per_connection calls at once (256). */
    int max_connection_idle_ms;
    int max_connection_age_ms;
    int handshake_timeout_ms;
    int max_streams_per_connection;
    /* gRPC core's memory quota (0: 512 MiB): past it, buffers shrink and new connections are
     * dropped. */
    size_t memory_quota_bytes;
    /* Period of the housekeeping thread (0: 1000 ms). Each tick it sheds connections over
     * max_connections, recreates the listener if
     * gRPC core stopped accepting (accept4 failed, e.g. EMFILE: 1.51 never retries), calls its
     * own Health/Check over a new connection with probe_timeout_ms (0: 2000) for
     * oc_rpc_server_healthy, and gives memory back after spikes. */
    int housekeeping_ms;
    int probe_timeout_ms;
    /* Cap on concurrent gRPC connections (0: 4096, or RLIMIT_NOFILE - 128 when lower). gRPC
     * 1.51 has none: each housekeeping period the newest connections past it are shut down. */
    int max_connections;
    /* Optional per-thread state (e.g. one database connection per worker). */
    void *(*worker_init)(void *worker_arg, int index);
    void (*worker_fini)(void *worker);
    void *worker_arg;
    void *user;
    /* Optional: called after each call finished, from the worker thread (metrics, access log).
     * grpc_status is the status sent; latency is from arrival to the status being queued. */
    void (*on_complete)(void *user, const oc_rpc_ctx_t *ctx, int grpc_status, int64_t latency_us);
    /* NULL: plaintext, no authorization. Otherwise mutual TLS, and client_roles maps the
     * client certificates' SANs to roles (NULL or "": every call but ANY ones is denied).
     * Both must outlive the server. */
    const oc_rpc_tls_t *tls;
    const char *client_roles;
    /* Optional: a FileDescriptorSet (protoc --include_imports --descriptor_set_out) holding
     * the served services, grpc/health/v1/health.proto and both reflection protos. When set,
     * the server answers gRPC server reflection, grpc.reflection.v1 and v1alpha (see
     * oc_rpc_server_create). Not copied: it must outlive the server (an embedded array). */
    const uint8_t *descriptor_set;
    size_t descriptor_set_len;
} oc_rpc_server_opts_t;

typedef struct oc_rpc_server oc_rpc_server_t;

/* The Health/Check service name of liveness (a Kubernetes gRPC liveness probe's `service`):
 * SERVING whenever the server answers, while "" follows readiness. */
#define OC_RPC_HEALTH_LIVENESS "liveness"

/*
 * Creates a server bound to opts->listen (SO_REUSEPORT off, so a busy port fails). It serves
 * `methods` (the table must outlive the server) and grpc.health.v1.Health/Check, answering
 * SERVING for "" and for each service named in the method paths while serving, NOT_SERVING
 * after oc_rpc_server_set_serving(false) (readiness), SERVING for OC_RPC_HEALTH_LIVENESS
 * whenever it answers at all (liveness), NOT_FOUND for other names; and Health/Watch, a
 * stream that sends the status at once and again at every change (SERVICE_UNKNOWN, once, for
 * other names; NOT_SERVING at shutdown, then UNAVAILABLE; at most 1024 watchers). A table that
 * has its own Health/Check gets neither. Every unknown method is UNIMPLEMENTED. With
 * opts->descriptor_set it also serves grpc.reflection.v1.ServerReflection and
 * grpc.reflection.v1alpha.ServerReflection (ServerReflectionInfo) to every authenticated peer
 * (OC_RPC_ROLE_ANY, like health): the services of `methods`, Health and both reflection services
 * are listed; files are found by name or by symbol (service, method, message, enum, nested ones)
 * and sent with their transitive dependencies; extensions are NOT_FOUND (the API has none). A set
 * that lacks one of the served services is an error. Every reply, error or not, carries the call's
 * request id as trailing metadata x-request-id. Calls grpc_init. Returns NULL with err set on
 * failure.
 */
oc_rpc_server_t *oc_rpc_server_create(const oc_rpc_server_opts_t *opts,
                                      const oc_rpc_method_t *methods, size_t nmethods,
                                      oc_error_t *err);
/* The bound port (useful with port 0). */
int oc_rpc_server_port(const oc_rpc_server_t *s);
/* Starts the worker threads. */
oc_err_t oc_rpc_server_start(oc_rpc_server_t *s, oc_error_t *err);
/*
 * Whether the last self-probe (Health/Check over a new connection to our own port, every
 * housekeeping period) got an answer, SERVING or NOT_SERVING alike (liveness is about the
 * process, not its dependencies): false when the service cannot accept or serve a call, with
 * the reason in detail (optional, n bytes). True until the first probe ran. Thread-safe.
 * Accept failures are seen through gRPC core's log: call oc_rpc_route_core_logs first.
 */
bool oc_rpc_server_healthy(oc_rpc_server_t *s, char *detail, size_t n);
/* The request id of the call whose handler runs on this thread, "" elsewhere: for log hooks
 * that cannot be handed the call (a database error logged deep in a handler). */
const char *oc_rpc_current_request_id(void);
/* Health status reported by Check. Thread-safe. */
void oc_rpc_server_set_serving(oc_rpc_server_t *s, bool serving);
/*
 * Graceful stop: refuses new calls, asks open streams to end (on_shutdown, on this thread),
 * lets in-flight calls and streams finish for up to grace_ms, then cancels the rest, drains the
 * queues and joins the workers. Call once, from one thread.
 */
void oc_rpc_server_shutdown(oc_rpc_server_t *s, int grace_ms);
/* Frees the server (shutting it down first if needed) and calls grpc_shutdown. NULL is fine. */
void oc_rpc_server_destroy(oc_rpc_server_t *s);

/*
 * The server's decoding step, exposed for tests and fuzzing: checks `p[0..len)` on the wire
 * against limits->wire, then unpacks it as `desc` into `arena` under the budget described at
 * oc_rpc_limits_t (max_decode_bytes 0: 4 x max_request_bytes + 64 KiB; max_request_bytes is
 * checked by the caller). Returns the message, or NULL with err set: OC_E_INVALID naming the
 * field or "request: malformed protobuf", OC_E_TOO_LARGE over the budget. Thread-safe.
 */
ProtobufCMessage *oc_rpc_decode(const ProtobufCMessageDescriptor *desc,
                                const oc_rpc_limits_t *limits, const uint8_t *p, size_t len,
                                oc_arena_t *arena, oc_error_t *err);

/* Routes gRPC core's own log lines into oc_log (call before anything else touches grpc). */
void oc_rpc_route_core_logs(void);

typedef struct oc_rpc_client oc_rpc_client_t;

/* A client of one target ("127.0.0.1:50051", "dns:///persistence:50051"), insecure
 * credentials, round_robin load balancing. Thread-safe. NULL with err on failure. */
oc_rpc_client_t *oc_rpc_client_create(const char *target, oc_error_t *err);
/* The same over mutual TLS when tls is not NULL (the files are read now; a missing or unusable
 * file is an error), plaintext otherwise. `tls` and its strings must outlive the client. */
oc_rpc_client_t *oc_rpc_client_create_tls(const char *target, const oc_rpc_tls_t *tls,
                                          oc_error_t *err);
void oc_rpc_client_destroy(oc_rpc_client_t *c);

/*
 * Blocking unary call. The response is unpacked into `arena` and stored in *resp. On a non-OK
 * status returns the matching error (oc_err_from_grpc_status) with the server's status message
 * in err->msg; *grpc_status_out (optional) receives the raw status code. timeout_ms <= 0 means
 * no deadline. request_id (optional) is sent as x-request-id. Thread-safe.
 */
oc_err_t oc_rpc_client_call(oc_rpc_client_t *c, const char *method, const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *resp_desc, int timeout_ms,
                            const char *request_id, oc_arena_t *arena, ProtobufCMessage **resp,
                            int *grpc_status_out, oc_error_t *err);

#endif
