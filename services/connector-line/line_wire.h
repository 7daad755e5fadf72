/* LINE's webhook wire format: the x-line-signature signer and verifier, and the body of text
 * message events. One copy, linked by the connector, the simulator, omnichatctl, the benchmark
 * and the fuzzers (library line_wire). */
#ifndef LINE_WIRE_H
#define LINE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/buf.h"

#define LINE_SIGNATURE_LEN 44 /* base64 of an HMAC-SHA256 */

/* x-line-signature of body: Base64(HMAC-SHA256(secret, body)) into out. False when OpenSSL
 * fails (out is then ""). Pure; thread-safe. */
bool line_sign(const char *secret, size_t secret_len, const char *body, size_t len,
               char out[LINE_SIGNATURE_LEN + 1]);

/*
 * True when `header` (the x-line-signature value) is Base64(HMAC-SHA256(secret, body)). The
 * header is decoded and the 32 bytes compared in constant time; NULL or malformed is false.
 * Pure; thread-safe.
 */
bool line_signature_valid(const char *secret, size_t secret_len, const char *body, size_t len,
                          const char *header);

/* One text message event from a user, as LINE sends it. */
typedef struct line_text_event {
    const char *user_id;          /* "U" + 32 hex digits */
    const char *message_id;       /* digits */
    const char *text;             /* UTF-8; escaped as JSON */
    const char *webhook_event_id; /* 26 characters, "01..." */
    const char *reply_token;      /* 32 hex digits */
    const char *quote_token;
    int64_t timestamp_ms;
} line_text_event_t;

/* Appends {"destination": destination, "events": [the n events]} to b; b->failed tells. */
oc_err_t line_webhook_body(oc_buf_t *b, const char *destination, const line_text_event_t *events,
                           size_t n);

#endif
