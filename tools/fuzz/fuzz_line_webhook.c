/* libFuzzer harness for the LINE webhook: line_signature_valid and line_webhook_parse. */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/arena.h"
#include "omnichat/util.h"
#include "line_webhook.h"
#include "line_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The input is a webhook body, exactly as LINE would POST it (the seeds are JSON files). It is
 * handed over in a buffer of exactly `size` bytes with no NUL after it, so a parser reading
 * past the length is an ASan report.
 *
 * Signature: the correct x-line-signature for the body verifies; the same header with one
 * character changed, under another secret, or for a body one byte shorter does not; the first
 * bytes of the input used as a header string never verify (a forged header would need the MAC).
 *
 * Parse: OC_OK or OC_E_INVALID with a message; on OC_OK every event is counted exactly once
 * (items + ignored + invalid == events) and every item satisfies the contract of
 * line_inbound_item_t and of the PersistInbound limits.
 */

static const char secret[] = "fuzz-channel-secret-0123456789ab";

static char *sign(const char *key, size_t key_len, const char *body, size_t len)
{
    char *out = malloc(LINE_SIGNATURE_LEN + 1);
    if (out == NULL || !line_sign(key, key_len, body, len, out)) abort();
    return out;
}

static void check_signature(const char *body, size_t len)
{
    size_t slen = sizeof secret - 1;
    char *good = sign(secret, slen, body, len);
    if (!line_signature_valid(secret, slen, body, len, good)) abort();
    if (line_signature_valid(secret, slen - 1, body, len, good)) abort();
    if (len > 0 && line_signature_valid(secret, slen, body, len - 1, good)) abort();
    if (line_signature_valid(secret, slen, body, len, NULL)) abort();
    if (line_signature_valid(NULL, 0, body, len, good)) abort();

    /* one character changed, at a place the body chooses */
    size_t glen = strlen(good);
    size_t pos = len > 0 ? (uint8_t)body[0] % glen : 0;
    char saved = good[pos];
    good[pos] = saved == 'A' ? 'B' : 'A';
    if (line_signature_valid(secret, slen, body, len, good)) abort();
    good[pos] = saved;
    /* cut short */
    good[glen - 1] = '\0';
    if (line_signature_valid(secret, slen, body, len, good)) abort();
    free(good);

    /* the input's first bytes as a header: the decoder sees arbitrary text */
    char hdr[129];
    size_t hlen = len < sizeof hdr - 1 ? len : sizeof hdr - 1;
    memcpy(hdr, body, hlen);
    hdr[hlen] = '\0';
    if (line_signature_valid(secret, slen, body, len, hdr)) abort();
}

/* Events in the body as an independent parse sees them, or SIZE_MAX when that parse cannot
 * read what the connector accepts (it reads huge integers and \u0000 on purpose). */
static size_t events_in(const char *body, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL, &jerr);
    size_t n = root != NULL ? json_array_size(json_object_get(root, "events")) : SIZE_MAX;
    json_decref(root);
    return n;
}

static void check_item(const line_inbound_item_t *it)
{
    const char *strs[] = {it->thread_key,   it->external_user_id,    it->external_message_id,
                          it->content_text, it->content_struct_json, it->display_name,
                          it->avatar_url};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strs[i] == NULL) abort();
    if (it->thread_key[0] == '\0' || strlen(it->thread_key) > 256) abort();
    if (it->external_user_id[0] == '\0' || strlen(it->external_user_id) > 256) abort();
    if (it->external_message_id[0] == '\0' || strlen(it->external_message_id) > 256) abort();
    if (it->timestamp_ms <= 0) abort();
    if (it->content_type == OMNICHAT__PERSISTENCE__V1__CONTENT_TYPE__CONTENT_TYPE_TEXT) {
        if (it->content_text[0] == '\0' || strlen(it->content_text) > 20000) abort();
    } else if (it->content_type ==
               OMNICHAT__PERSISTENCE__V1__CONTENT_TYPE__CONTENT_TYPE_UNSUPPORTED) {
        if (it->content_text[0] != '\0') abort();
    } else {
        abort();
    }
    size_t jlen = strlen(it->content_struct_json);
    if (jlen > 65536 || !oc_json_valid(it->content_struct_json, jlen, true)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size > 0 ? size : 1);
    if (body == NULL) abort();
    if (size > 0) memcpy(body, data, size);

    check_signature(body, size);

    oc_arena_t *arena = oc_arena_create(0);
    if (arena == NULL) abort();
    line_webhook_batch_t batch;
    oc_error_t err;
    oc_error_clear(&err);
    oc_err_t rc = line_webhook_parse(body, size, arena, &batch, &err);
    if (rc == OC_OK) {
        if (err.code != OC_OK) abort();
        if (batch.nitems > 0 && batch.items == NULL) abort();
        size_t expect = events_in(body, size);
        if (expect != SIZE_MAX && batch.nitems + batch.ignored + batch.invalid != expect) abort();
        for (size_t i = 0; i < batch.nitems; i++)
            check_item(&batch.items[i]);
    } else if (rc != OC_E_INVALID || err.code != rc || err.msg[0] == '\0') {
        abort();
    }
    oc_arena_destroy(arena);
    free(body);
    return 0;
}
