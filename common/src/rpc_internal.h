/* What the rpc_*.c files share inside common/: not an API. */
#ifndef OMNICHAT_RPC_INTERNAL_H
#define OMNICHAT_RPC_INTERNAL_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/rpc.h"

/* Every tag handed to gRPC starts with this, so workers dispatch without knowing the type. */
typedef struct rpc_tag {
    void (*fn)(void *tag, bool ok);
} rpc_tag_t;

/* ---- shared pieces (rpc_wire.c) ---- */

/* Decoding headroom beyond the wire walk's estimate, and in the default budget. */
#define DECODE_SLACK (64u * 1024)

/* What opts.worker_init returned for the calling worker thread; NULL on other threads. */
void *rpc_current_worker(void);
/* Set by each worker thread at its start and end. */
void rpc_set_current_worker(void *worker);

/* A message as a new byte buffer (the caller destroys it). */
grpc_byte_buffer *rpc_pack_message(const ProtobufCMessage *m);
/* Whether p[0..n) is printable ASCII: request ids end up in logs and replies. */
bool rpc_printable(const uint8_t *p, size_t n);

/* ---- client (rpc_client.c) ---- */

/* A client of `target`; with own_connections, its connections are not shared with other
 * channels of the process (the health self-probe must open a new one). NULL with err set. */
oc_rpc_client_t *rpc_client_new(const char *target, const oc_rpc_tls_t *tls, bool own_connections,
                                oc_error_t *err);

/* ---- streams (rpc_stream.c) ---- */

/* The open streams of one server, for shutdown. */
typedef struct rpc_streams rpc_streams_t;

/* Called once per stream, after on_done, when gRPC holds nothing of the call any more: the
 * server's on_complete and its count of outstanding work. */
typedef void (*rpc_stream_finished_fn)(void *host, const oc_rpc_ctx_t *ctx, int grpc_status,
                                       int64_t latency_us);

/* NULL when out of memory. */
rpc_streams_t *rpc_streams_create(rpc_stream_finished_fn finished, void *host);
/* After every stream has finished. NULL is fine. */
void rpc_streams_destroy(rpc_streams_t *r);
/* Graceful shutdown: calls on_shutdown (or ends with UNAVAILABLE) for every open stream, and
 * for every stream that starts from now on. Blocks only while callbacks run. */
void rpc_streams_shutdown(rpc_streams_t *r);

/*
 * Starts a stream on an accepted, authorized call. On OC_OK the stream owns `call` (the
 * caller's reference) and the context (ctx->arena is set to NULL in *ctx), and on_start has
 * been called or is queued; the caller must not touch the call again. On failure (out of
 * memory) nothing is taken and the caller answers the call itself. `req` (server streaming)
 * lives in ctx->arena. `limits` is copied.
 */
oc_err_t rpc_stream_begin(rpc_streams_t *r, const oc_rpc_stream_handlers_t *h,
                          const ProtobufCMessageDescriptor *input,
                          const ProtobufCMessageDescriptor *output, const oc_rpc_limits_t *limits,
                          grpc_call *call, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req,
                          int64_t start_us);

/* ---- health watch (rpc_health.c) ---- */

typedef struct rpc_health rpc_health_t;

/* Watchers of one server; `services` (the served names, not copied) must outlive it. NULL when
 * out of memory. */
rpc_health_t *rpc_health_create(char *const *services, size_t nservices, bool serving);
/* After every watch stream has finished. NULL is fine. */
void rpc_health_destroy(rpc_health_t *h);
/* The serving status; a change is sent to every watcher. Any thread; NULL is fine. */
void rpc_health_set(rpc_health_t *h, bool serving);

/* The Health/Watch handlers; ctx->user is the rpc_health_t. */
extern const oc_rpc_stream_handlers_t rpc_health_watch_handlers;

/* ---- reflection (rpc_reflect.c) ---- */

typedef struct rpc_reflect rpc_reflect_t;

/*
 * Indexes a FileDescriptorSet (not copied: it must outlive the index). `services` are the
 * served services (the method table's); each must be defined in the set, as must
 * grpc.health.v1.Health and both reflection services. max_response bounds one response.
 * NULL with err set on a malformed or incomplete set.
 */
rpc_reflect_t *rpc_reflect_create(const uint8_t *set, size_t len, char *const *services,
                                  size_t nservices, size_t max_response, oc_error_t *err);
void rpc_reflect_destroy(rpc_reflect_t *r);

/* The ServerReflectionInfo handlers; ctx->user is the rpc_reflect_t. */
extern const oc_rpc_stream_handlers_t rpc_reflect_handlers;

#define RPC_REFLECT_V1_PATH "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define RPC_REFLECT_V1ALPHA_PATH "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

#endif
