/* What every part of the gRPC layer shares and that depends on none of them: request decoding
 * under a budget, message packing, the request-id character check, and the worker thread's
 * state. rpc.c (servers), rpc_client.c, rpc_stream.c and the rest build on it. */
#include <protobuf-c/protobuf-c.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice.h>

#include "omnichat/pbcheck.h"
#include "rpc_internal.h"

static _Thread_local void *tls_worker;

void *rpc_current_worker(void)
{
    return tls_worker;
}

void rpc_set_current_worker(void *worker)
{
    tls_worker = worker;
}

/* Request ids end up in logs and responses: only printable ASCII is trusted. */
bool rpc_printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e) return false;
    return true;
}

grpc_byte_buffer *rpc_pack_message(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice sl = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl); /* the buffer holds its own reference */
    return bb;
}

ProtobufCMessage *oc_rpc_decode(const ProtobufCMessageDescriptor *desc,
                                const oc_rpc_limits_t *limits, const uint8_t *p, size_t len,
                                oc_arena_t *arena, oc_error_t *err)
{
    size_t cost = 0, max = limits->max_decode_bytes;

    if (max == 0) max = 4 * limits->max_request_bytes + DECODE_SLACK;
    if (oc_pb_check(desc, p, len, &limits->wire, &cost, err) != OC_OK) return NULL;
    /* The wire walk bounds what unpacking will allocate; the budget holds protobuf-c to that
     * (with slack for what the model does not see, such as merged duplicate sub-messages),
     * and the method's ceiling refuses expensive input before anything is spent. */
    size_t budget = cost + cost / 2 + DECODE_SLACK;
    if (budget > max) {
        oc_error_set(err, OC_E_TOO_LARGE,
                     "request: decoding would need %zu bytes, at most %zu for this method", budget,
                     max);
        return NULL;
    }
    oc_arena_budget_t b;
    ProtobufCAllocator alloc;
    oc_arena_protobuf_allocator_budget(arena, budget, &b, &alloc);
    ProtobufCMessage *req = protobuf_c_message_unpack(desc, &alloc, len, p);
    if (req == NULL && b.exhausted)
        oc_error_set(err, OC_E_TOO_LARGE, "request: decoding needs more than %zu bytes", budget);
    else if (req == NULL)
        oc_error_set(err, OC_E_INVALID, "request: malformed protobuf");
    return req;
}
