/* Meta's webhook wire format: the X-Hub-Signature-256 signer and verifier, appsecret_proof, and
 * the body of messaging events. One copy, linked by the connector, the Graph API simulator,
 * omnichatctl and the benchmark (library meta_wire). */
#ifndef META_WIRE_H
#define META_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/buf.h"

#define META_SIGNATURE_LEN 71 /* "sha256=" + 64 lowercase hex digits */
#define META_PROOF_LEN 64     /* hex HMAC-SHA256 */

/* "sha256=<lowercase hex HMAC-SHA256(secret, body)>" into out. False when OpenSSL fails (out is
 * then ""). Pure; thread-safe. */
bool meta_sign(const char *secret, size_t secret_len, const char *body, size_t len,
               char out[META_SIGNATURE_LEN + 1]);

/* True when `header` (X-Hub-Signature-256) is the signature of the raw body: the hex is decoded
 * (either case) and the 32 bytes compared in constant time. NULL or malformed is false. */
bool meta_signature_valid(const char *secret, size_t secret_len, const char *body, size_t len,
                          const char *header);

/* appsecret_proof: lowercase hex HMAC-SHA256(app secret, access token). */
bool meta_appsecret_proof(const char *secret, size_t secret_len, const char *token,
                          size_t token_len, char out[META_PROOF_LEN + 1]);

typedef enum meta_event_kind {
    META_EV_MESSAGE = 0, /* message {mid, text, is_echo?, metadata?, app_id?} */
    META_EV_DELIVERY,    /* delivery {mids?, watermark} */
    META_EV_READ         /* read {watermark} */
} meta_event_kind_t;

/* One messaging[] event as Meta sends it. */
typedef struct meta_event {
    meta_event_kind_t kind;
    const char *sender_id;    /* PSID / IGSID; the Page (account) for echoes and receipts */
    const char *recipient_id; /* the Page (account); the PSID for echoes */
    int64_t timestamp_ms;
    const char *mid;      /* MESSAGE; DELIVERY: the one mid listed (NULL: none) */
    const char *text;     /* MESSAGE: UTF-8, written with non-ASCII as \uXXXX; NULL: none */
    bool is_echo;         /* MESSAGE */
    const char *metadata; /* MESSAGE, echoes: what the send set; NULL: none */
    const char *app_id;   /* MESSAGE, echoes */
    int64_t watermark_ms; /* DELIVERY, READ */
} meta_event_t;

/*
 * Appends {"object": object ("page" or "instagram"), "entry": [{"id": account_id, "time",
 * "messaging": [the n events]}]} to b, compact, non-ASCII escaped as \uXXXX like Meta.
 * b->failed tells; OC_E_NOMEM.
 */
oc_err_t meta_webhook_body(oc_buf_t *b, const char *object, const char *account_id,
                           const meta_event_t *events, size_t n);

#endif
