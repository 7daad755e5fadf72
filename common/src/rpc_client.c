/* The blocking gRPC client: one channel per target with round_robin balancing, mutual TLS with
 * certificate reload, unary calls on a completion queue of their own. */
#include "omnichat/rpc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "omnichat/util.h"
#include "rpc_internal.h"
#include "rpc_tls.h"

/* Clients re-check their TLS files at most this often (a stat of three files per check). */
#define CLIENT_TLS_CHECK_US 1000000
/* Longest wait between two connection attempts to a server that is down (see new_channel). */
#define CLIENT_MAX_RECONNECT_BACKOFF_MS 5000

/* Client side: the response of a server we called. NULL when it is not a valid `desc`. */
static ProtobufCMessage *unpack_message(grpc_byte_buffer *bb,
                                        const ProtobufCMessageDescriptor *desc, oc_arena_t *arena)
{
    grpc_byte_buffer_reader r;
    ProtobufCMessage *m = NULL;

    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCAllocator alloc;
    oc_arena_protobuf_allocator(arena, &alloc);
    m = protobuf_c_message_unpack(desc, &alloc, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
    grpc_slice_unref(sl);
    return m;
}

struct oc_rpc_client {
    const char *target;
    const oc_rpc_tls_t *tls; /* NULL: plaintext */
    bool own_connections;    /* not shared with other channels (the health self-probe) */
    /* Held for reading while a call is created on the channel (the call then holds its own
     * reference), for writing only to swap in a channel with reloaded certificates. */
    pthread_rwlock_t lock;
    grpc_channel *channel;
    /* The channel replaced by the last reload: calls started on it may still run, so it is
     * destroyed at the next reload (certificates rotate in days) or with the client. */
    grpc_channel *retired;
    pthread_mutex_t reload_mu;
    rpc_tls_stamps_t stamps;
    _Atomic int64_t next_check_us;
};

static grpc_channel *new_channel(const char *target, const oc_rpc_tls_t *tls, bool own_connections,
                                 rpc_tls_stamps_t *stamps, oc_error_t *err)
{
    grpc_arg args[4] = {
        {.type = GRPC_ARG_STRING,
         .key = GRPC_ARG_SERVICE_CONFIG,
         .value.string = "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}"},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
         .value.integer = own_connections ? 1 : 0},
        /* gRPC's default backoff grows to 120 s between connection attempts: after a long
         * persistence outage (a restart, a rollout of every replica) calls and readiness would
         * fail for up to two more minutes although persistence is back. The peers are our own
         * services inside one cluster, so a few seconds between attempts costs nothing. */
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
         .value.integer = CLIENT_MAX_RECONNECT_BACKOFF_MS},
        {.type = GRPC_ARG_STRING, .key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG},
    };
    grpc_channel_args cargs = {.num_args = 3, .args = args};
    grpc_channel_credentials *creds;
    if (tls) {
        creds = rpc_tls_client_creds(tls, stamps, err);
        if (!creds) return NULL;
        if (tls->server_name && tls->server_name[0]) {
            args[3].value.string = (char *)tls->server_name;
            cargs.num_args = 4;
        }
    } else {
        creds = grpc_insecure_credentials_create();
    }
    grpc_channel *ch = grpc_channel_create(target, creds, &cargs);
    grpc_channel_credentials_release(creds);
    if (!ch) oc_error_set(err, OC_E_INVALID, "rpc client: could not create channel to %s", target);
    return ch;
}

oc_rpc_client_t *rpc_client_new(const char *target, const oc_rpc_tls_t *tls, bool own_connections,
                                oc_error_t *err)
{
    if (!target || !target[0]) {
        oc_error_set(err, OC_E_INVALID, "rpc client: empty target");
        return NULL;
    }
    oc_rpc_client_t *c = calloc(1, sizeof(*c));
    if (!c) {
        oc_error_set(err, OC_E_NOMEM, "rpc client: out of memory");
        return NULL;
    }
    grpc_init();
    c->target = target;
    c->tls = tls;
    c->own_connections = own_connections;
    c->channel = new_channel(target, tls, own_connections, &c->stamps, err);
    if (!c->channel) {
        free(c);
        grpc_shutdown();
        return NULL;
    }
    pthread_rwlock_init(&c->lock, NULL);
    pthread_mutex_init(&c->reload_mu, NULL);
    atomic_init(&c->next_check_us, oc_mono_us() + CLIENT_TLS_CHECK_US);
    return c;
}

oc_rpc_client_t *oc_rpc_client_create_tls(const char *target, const oc_rpc_tls_t *tls,
                                          oc_error_t *err)
{
    return rpc_client_new(target, tls, false, err);
}

oc_rpc_client_t *oc_rpc_client_create(const char *target, oc_error_t *err)
{
    return rpc_client_new(target, NULL, false, err);
}

void oc_rpc_client_destroy(oc_rpc_client_t *c)
{
    if (!c) return;
    grpc_channel_destroy(c->channel);
    if (c->retired) grpc_channel_destroy(c->retired);
    pthread_rwlock_destroy(&c->lock);
    pthread_mutex_destroy(&c->reload_mu);
    free(c);
    grpc_shutdown();
}

/* Rotation: when the files changed, later calls go through a new channel with the new
 * certificates. One caller checks at a time, at most once per CLIENT_TLS_CHECK_US; a broken or
 * half-replaced set keeps the current channel and is tried again at the next check. */
static void client_maybe_reload(oc_rpc_client_t *c)
{
    int64_t now = oc_mono_us(),
            next = atomic_load_explicit(&c->next_check_us, memory_order_relaxed);
    if (!c->tls || now < next ||
        !atomic_compare_exchange_strong(&c->next_check_us, &next, now + CLIENT_TLS_CHECK_US))
        return;
    if (pthread_mutex_trylock(&c->reload_mu) != 0) return;
    if (rpc_tls_changed(c->tls, &c->stamps)) {
        oc_error_t err;
        rpc_tls_stamps_t stamps;
        oc_error_clear(&err);
        grpc_channel *ch = new_channel(c->target, c->tls, c->own_connections, &stamps, &err);
        if (ch) {
            pthread_rwlock_wrlock(&c->lock);
            grpc_channel *old = c->retired;
            c->retired = c->channel;
            c->channel = ch;
            pthread_rwlock_unlock(&c->lock);
            c->stamps = stamps;
            if (old) grpc_channel_destroy(old);
        }
    }
    pthread_mutex_unlock(&c->reload_mu);
}

static grpc_call *client_new_call(oc_rpc_client_t *c, grpc_completion_queue *cq, grpc_slice path,
                                  gpr_timespec deadline)
{
    client_maybe_reload(c);
    pthread_rwlock_rdlock(&c->lock);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path,
                                               NULL, deadline, NULL);
    pthread_rwlock_unlock(&c->lock);
    return call;
}

oc_err_t oc_rpc_client_call(oc_rpc_client_t *c, const char *method, const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *resp_desc, int timeout_ms,
                            const char *request_id, oc_arena_t *arena, ProtobufCMessage **resp,
                            int *grpc_status_out, oc_error_t *err)
{
    oc_err_t rc = OC_OK;
    grpc_completion_queue *cq = NULL;
    grpc_call *call = NULL;
    grpc_byte_buffer *send_bb = NULL, *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    bool remote = false;

    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    if (resp) *resp = NULL;
    if (!c || !method || !req || !resp_desc || !arena || !resp) {
        rc = oc_error_set(err, OC_E_INVALID, "rpc call: missing argument");
        goto out;
    }
    grpc_metadata md[1];
    size_t nmd = 0;
    if (request_id && request_id[0]) {
        size_t n = strlen(request_id);
        /* gRPC rejects non-printable ASCII in text metadata; report it as the caller's bug
         * rather than as a failed call. */
        if (n > 255 || !rpc_printable((const uint8_t *)request_id, n)) {
            rc = oc_error_set(err, OC_E_INVALID,
                              "request_id: must be printable ASCII, at most "
                              "255 bytes");
            goto out;
        }
        md[0].key = grpc_slice_from_static_string("x-request-id");
        md[0].value = grpc_slice_from_static_buffer(request_id, n);
        nmd = 1;
    }

    send_bb = rpc_pack_message(req);
    /* A queue per call: 64 threads calling at once never wait on one another's events. */
    cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = timeout_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_REALTIME);
    /* The static slice borrows `method`, which outlives the call (unref'd before return). */
    grpc_slice path = grpc_slice_from_static_string(method);
    call = client_new_call(c, cq, path, deadline);
    if (!call) {
        rc = oc_error_set(err, OC_E_INTERNAL, "rpc call: could not create call");
        goto out;
    }

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = nmd ? md : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;
    void *tag = call;
    if (grpc_call_start_batch(call, ops, 6, tag, NULL) != GRPC_CALL_OK) {
        rc = oc_error_set(err, OC_E_INTERNAL, "rpc call: could not start batch");
        goto out;
    }
    grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
        rc = oc_error_set(err, OC_E_INTERNAL, "rpc call: batch failed");
        goto out;
    }
    remote = true;
    if (status != GRPC_STATUS_OK) {
        rc = oc_err_from_grpc_status(status);
        size_t n = GRPC_SLICE_LENGTH(details);
        if (n > 0)
            oc_error_set(err, rc, "%.*s", (int)(n > OC_ERROR_MSG_MAX ? OC_ERROR_MSG_MAX : n),
                         (const char *)GRPC_SLICE_START_PTR(details));
        else
            oc_error_set(err, rc, "%s", oc_err_message(rc));
        goto out;
    }
    if (!recv_bb) {
        rc = oc_error_set(err, OC_E_INTERNAL, "response: missing message");
        goto out;
    }
    *resp = unpack_message(recv_bb, resp_desc, arena);
    if (!*resp) rc = oc_error_set(err, OC_E_INTERNAL, "response: malformed protobuf");

out:
    if (grpc_status_out) *grpc_status_out = remote ? (int)status : oc_err_grpc_status(rc);
    if (send_bb) grpc_byte_buffer_destroy(send_bb);
    if (recv_bb) grpc_byte_buffer_destroy(recv_bb);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    if (call) grpc_call_unref(call);
    if (cq) {
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
    }
    return rc;
}
