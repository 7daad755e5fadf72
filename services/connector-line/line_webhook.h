/* LINE webhook: signature check, parsing and normalization, profile enrichment. */
#ifndef LINE_WEBHOOK_H
#define LINE_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "line.h"
#include "line_wire.h"
#include "omnichat/http.h"

#define LINE_PROFILE_BUDGET_MS 800 /* all profile look-ups of one POST together */

/* One message event, as parsed: a conn_item_t (thread_key = source.userId | groupId | roomId by
 * source.type; external_user_id = source.userId, else the group/room id; external_message_id =
 * message.id, also the idempotency key; timestamp_ms = event.timestamp; content TEXT or
 * UNSUPPORTED with the raw message object + webhookEventId, isRedelivery, mode). */
typedef conn_item_t line_inbound_item_t;
typedef conn_batch_t line_webhook_batch_t;

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

/* provider->signature_valid: line_signature_valid on the x-line-signature header. */
bool line_request_signed(const char *secret, size_t secret_len, const oc_http_request_t *req);

/* provider->parse: line_webhook_parse. */
oc_err_t line_parse(const char *body, size_t len, oc_arena_t *arena, conn_batch_t *out,
                    oc_error_t *err);

/*
 * provider->enrich: display names and pictures from the profile cache, else from LINE (GET
 * /v2/bot/profile/{userId} with the account's token) until budget_end_us, but at most
 * LINE_PROFILE_BUDGET_MS for the POST and profile-timeout-ms for one look-up. Best effort:
 * a failed look-up leaves the name empty; a 404 is remembered.
 */
void line_enrich(conn_t *c, oc_arena_t *arena, const PB(ChannelAccount) * acc, conn_item_t *items,
                 size_t n, int64_t budget_end_us);

#endif
