/* libFuzzer harness for the persistence service's signed page cursors (pst_cursor_decode). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/arena.h"
#include "omnichat/util.h"
#include "pst.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Input layout (short inputs are padded with zeros):
 *
 *     kind (1) | ts_us (8, big-endian) | id (16) | tamper position (1) | tamper xor (1) |
 *     scope (up to the first NUL) | NUL | cursor text (up to the next NUL)
 *
 * 1. The cursor text is decoded under (kind, scope): it must either fail with the fixed
 *    INVALID_ARGUMENT message or succeed, and then encoding what it returned gives it back.
 * 2. A cursor encoded from (kind, ts, id, scope) must decode to exactly ts and id, and must not
 *    decode under another kind, another scope, or with one character changed.
 */
#define HDR 27
#define MSG "cursor: invalid cursor (garbled, forged, or from another scope)"

static pst_t pst; /* only cursor_key is used */

static void ctx_init(oc_rpc_ctx_t *ctx, oc_arena_t *arena)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->arena = arena;
    ctx->user = &pst;
    ctx->method = "/omnichat.persistence.v1.Persistence/ListMessages";
    ctx->deadline_us = INT64_MAX;
    oc_error_clear(&ctx->err);
}

static void expect_reject(oc_arena_t *arena, const char *cursor, char kind, const char *scope)
{
    oc_rpc_ctx_t ctx;
    int64_t ts = 0x5A5A;
    char id[37] = "untouched";
    ctx_init(&ctx, arena);
    if (pst_cursor_decode(&ctx, "cursor", cursor, kind, scope, &ts, id)) abort();
    if (ctx.err.code != OC_E_INVALID || strcmp(ctx.err.msg, MSG) != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t hdr[HDR] = {0};
    memcpy(hdr, data, size < HDR ? size : HDR);
    const uint8_t *rest = size > HDR ? data + HDR : NULL;
    size_t rest_len = size > HDR ? size - HDR : 0;

    char kind = (char)hdr[0];
    uint64_t uts = 0;
    for (int i = 0; i < 8; i++)
        uts = uts << 8 | hdr[1 + i];
    int64_t ts = (int64_t)uts;
    char id[OC_UUID_STR_LEN + 1];
    oc_uuid_format(hdr + 9, id);

    /* scope and cursor as C strings (the API's inputs are NUL-terminated protobuf strings) */
    const uint8_t *nul = rest != NULL ? memchr(rest, 0, rest_len) : NULL;
    size_t scope_len = nul != NULL ? (size_t)(nul - rest) : rest_len;
    char *scope = malloc(scope_len + 1);
    size_t cur_len = nul != NULL ? rest_len - scope_len - 1 : 0;
    char *cursor = malloc(cur_len + 1);
    if (scope == NULL || cursor == NULL) abort();
    if (scope_len > 0) memcpy(scope, rest, scope_len);
    scope[scope_len] = '\0';
    if (cur_len > 0) memcpy(cursor, nul + 1, cur_len);
    cursor[cur_len] = '\0';

    oc_arena_t *arena = oc_arena_create(0);
    if (arena == NULL) abort();
    oc_rpc_ctx_t ctx;

    /* 1. arbitrary cursor text */
    ctx_init(&ctx, arena);
    int64_t got_ts = 0;
    char got_id[37] = {0};
    if (pst_cursor_decode(&ctx, "cursor", cursor, kind, scope, &got_ts, got_id)) {
        if (ctx.err.code != OC_OK || !oc_uuid_valid(got_id)) abort();
        /* a cursor that verifies has one spelling: re-encoding reproduces it */
        char *again = pst_cursor_encode(&ctx, kind, got_ts, got_id, scope);
        if (again == NULL || strcmp(again, cursor) != 0) abort();
    } else if (ctx.err.code != OC_E_INVALID || strcmp(ctx.err.msg, MSG) != 0) {
        abort();
    }

    /* 2. round trip of a fresh cursor */
    ctx_init(&ctx, arena);
    char *enc = pst_cursor_encode(&ctx, kind, ts, id, scope);
    if (enc == NULL) abort();
    size_t elen = strlen(enc);
    if (elen == 0 || elen > 128) abort();
    got_ts = 0;
    memset(got_id, 0, sizeof got_id);
    if (!pst_cursor_decode(&ctx, "cursor", enc, kind, scope, &got_ts, got_id)) abort();
    if (got_ts != ts || strcmp(got_id, id) != 0 || ctx.err.code != OC_OK) abort();

    /* ... bound to its kind ... */
    expect_reject(arena, enc, (char)(kind ^ (char)(hdr[26] | 1)), scope);
    /* ... and to its scope (the MAC covers the first 512 bytes of it) ... */
    if (scope_len < 512) {
        char *other = malloc(scope_len + 2);
        if (other == NULL) abort();
        memcpy(other, scope, scope_len);
        other[scope_len] = (char)(hdr[26] | 1);
        other[scope_len + 1] = '\0';
        expect_reject(arena, enc, kind, other);
        free(other);
    }
    /* ... and has no malleable character (strict base64url + MAC over every byte) */
    char *tampered = oc_arena_strdup(arena, enc);
    if (tampered == NULL) abort();
    size_t pos = hdr[25] % elen;
    uint8_t x = hdr[26] != 0 ? hdr[26] : 1;
    tampered[pos] = (char)((uint8_t)tampered[pos] ^ x);
    if (tampered[pos] == '\0') tampered[pos] = '.';
    expect_reject(arena, tampered, kind, scope);
    /* ... nor survives truncation */
    tampered[pos] = '\0';
    expect_reject(arena, tampered, kind, scope);

    oc_arena_destroy(arena);
    free(scope);
    free(cursor);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* A fixed key keeps every run deterministic (and crashing inputs reproducible). The
     * service keeps its key in oc_secret_alloc memory; plain memory will do here. */
    static uint8_t key[PST_CURSOR_KEY_LEN];
    pst.cursor_key = key;
    for (size_t i = 0; i < PST_CURSOR_KEY_LEN; i++)
        pst.cursor_key[i] = (uint8_t)(0xC0 + i);
    return 0;
}
