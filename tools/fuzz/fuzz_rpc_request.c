/* libFuzzer harness for the gRPC request path of every Persistence method: wire check,
 * unpacking under the decoding budget, and the handler's validation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/arena.h"
#include "omnichat/pbcheck.h"
#include "omnichat/rpc.h"
#include "pst.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input: method selector (1 byte, modulo the number of methods) | request body.
 *
 * The body goes through oc_rpc_decode with the method's own limits (services/persistence/
 * limits.c), exactly as the server does after the receive limit. Then:
 *  - a refused body carries OC_E_INVALID or OC_E_TOO_LARGE and a one-line message;
 *  - a decoded body re-encodes to bytes that pass the same wire check (the limits hold for
 *    what was unpacked) and is handed to the real handler. The handler's database is a pool
 *    whose connections fail at once (a socket directory that does not exist), so a request that
 *    passes validation ends in OC_E_UNAVAILABLE; whatever it returns, an error carries a
 *    one-line message, and the call's arena is released with everything the handler drew.
 */
#define CONNINFO "host=/nonexistent/omnichat-fuzz connect_timeout=1"

typedef struct table_part {
    const oc_rpc_method_t *methods;
    const size_t *n;
} table_part_t;

static const table_part_t parts[] = {
    {pst_methods_conversations, &pst_nmethods_conversations},
    {pst_methods_messages, &pst_nmethods_messages},
    {pst_methods_channels, &pst_nmethods_channels},
    {pst_methods_outbound, &pst_nmethods_outbound},
};

static pst_t pst;
static oc_rpc_method_t methods[64];
static size_t nmethods;

static void setup(void)
{
    oc_error_t err;

    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        for (size_t k = 0; k < *parts[i].n && nmethods < 64; k++) {
            methods[nmethods] = parts[i].methods[k];
            methods[nmethods].limits = pst_method_limits(strrchr(methods[nmethods].path, '/') + 1);
            if (methods[nmethods].limits == NULL) abort(); /* every method has a row */
            nmethods++;
        }
    oc_error_clear(&err);
    pst.cfg.fallback_bucket_seconds = 86400;
    static uint8_t key[PST_CURSOR_KEY_LEN];
    memset(key, 0x5a, sizeof key);
    pst.cursor_key = key; /* the service's is oc_secret_alloc memory; plain memory will do */
    pst.pool = oc_pg_pool_create(CONNINFO, 1, NULL, 0, &err);
    if (pst.pool == NULL) abort();
}

static void check_message(const oc_error_t *err)
{
    if (err->msg[0] == '\0' || strchr(err->msg, '\n') != NULL) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1) return 0;
    const oc_rpc_method_t *m = &methods[data[0] % nmethods];
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    if (len > m->limits->max_request_bytes) return 0; /* the server refuses these unread */

    oc_rpc_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.arena = oc_arena_create(0);
    if (ctx.arena == NULL) abort();
    ctx.user = &pst;
    ctx.method = m->path;
    ctx.deadline_us = INT64_MAX;
    oc_error_clear(&ctx.err);

    ProtobufCMessage *req = oc_rpc_decode(m->input, m->limits, body, len, ctx.arena, &ctx.err);
    if (req == NULL) {
        if (ctx.err.code != OC_E_INVALID && ctx.err.code != OC_E_TOO_LARGE) abort();
        check_message(&ctx.err);
        goto out;
    }
    size_t packed = protobuf_c_message_get_packed_size(req);
    uint8_t *again = oc_arena_alloc(ctx.arena, packed);
    if (again == NULL || protobuf_c_message_pack(req, again) != packed) abort();
    oc_error_t err2;
    oc_error_clear(&err2);
    if (oc_pb_check(m->input, again, packed, &m->limits->wire, NULL, &err2) != OC_OK) abort();

    ProtobufCMessage *resp = NULL;
    oc_err_t rc = m->handler(&ctx, req, &resp);
    if (rc != OC_OK) check_message(&ctx.err);
out:
    oc_arena_destroy(ctx.arena);
    return 0;
}
