/* LINE webhook: signature check, parsing and normalization, one PersistInbound per POST. */
#ifndef LINE_WEBHOOK_H
#define LINE_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "line.h"
#include "omnichat/http.h"

#define LINE_WEBHOOK_PREFIX "/webhooks/line/"
#define LINE_PROFILE_BUDGET_MS 800 /* all profile look-ups of one POST together */

/*
 * True when `header` (the x-line-signature value) is Base64(HMAC-SHA256(secret, body)). The
 * header is decoded and the 32 bytes compared in constant time; NULL or malformed is false.
 * Pure; thread-safe.
 */
bool line_signature_valid(const char *secret, size_t secret_len, const char *body, size_t len,
                          const char *header);

/* One normalized message event. Strings live in the parse arena. */
typedef struct line_inbound_item {
    const char *thread_key;          /* source.userId | groupId | roomId by source.type */
    const char *external_user_id;    /* source.userId, else the group/room id */
    const char *external_message_id; /* message.id, also the idempotency key */
    int64_t timestamp_ms;            /* event.timestamp */
    int content_type;                /* persistence ContentType: TEXT or UNSUPPORTED */
    const char *content_text;        /* "" unless TEXT */
    const char *content_struct_json; /* the raw message object + webhookEventId, isRedelivery,
                                        mode */
    const char *display_name;        /* filled by the profile look-up ("" when unknown) */
    const char *avatar_url;
} line_inbound_item_t;

typedef struct line_webhook_batch {
    line_inbound_item_t *items;
    size_t nitems;
    size_t ignored; /* events of other types (follow, unfollow, postback, ...) */
    size_t invalid; /* events without a type, message events that fail validation: skipped */
    size_t first_invalid_index;       /* position in events[] of the first invalid one */
    const char *first_invalid_reason; /* static phrase naming the field, never its content */
    const char *destination;
} line_webhook_batch_t;

/*
 * Parses a webhook body (already authenticated) into message items, in event order.
 * OC_E_INVALID with a reason ("body: not valid JSON", "body: not a JSON object", "events: must
 * be an array") only when the body is unusable as a whole (not JSON, nested deeper than 64, no
 * events array); OC_E_NOMEM. Anything else is judged event by event: a bad event is counted in
 * `invalid` and skipped, so one odd event never loses the rest of the POST. A message event
 * needs an object `message` with a string id of 1..256 bytes, a `source` with the id its type
 * names, and an integer `timestamp` in (0, LINE_TIMESTAMP_MAX_MS]. Accepted although jansson
 * alone would refuse them: \u0000 anywhere (read as U+FFFD), numbers beyond int64/double
 * (read as strings, so such a timestamp is invalid), duplicate keys (the last one wins).
 * Not thread-safe per arena; otherwise pure.
 */
oc_err_t line_webhook_parse(const char *body, size_t len, oc_arena_t *arena,
                            line_webhook_batch_t *out, oc_error_t *err);

/* The HTTP handler of POST /webhooks/line/{channel_account_id}; user is the line_t. */
void line_webhook_handle(void *user, const oc_http_request_t *req, oc_http_response_t *resp);

#endif
