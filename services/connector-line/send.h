/* SendText and the delivery attempt shared with the retry worker (ARCHITECTURE.md section 4). */
#ifndef LINE_SEND_H
#define LINE_SEND_H

#include <stdint.h>

#include "line.h"

#define LINE_FINGERPRINT_LEN 64 /* hex SHA-256 */

/*
 * Hex SHA-256 over the length-prefixed (8-byte big-endian) conversation id, text, sender id and
 * sender display name: the same request always gives the same digest, and no two different
 * field splits collide. out needs LINE_FINGERPRINT_LEN + 1 bytes. Pure.
 */
void line_fingerprint(const char *conversation_id, const char *text, const char *sender_id,
                      const char *sender_display_name, char out[LINE_FINGERPRINT_LEN + 1]);

typedef struct line_retry_policy {
    int max_attempts;  /* provider calls per message, in all */
    int64_t base_ms;   /* first delay */
    int64_t max_ms;    /* delay cap */
    int64_t window_ms; /* no attempt later than created_at + window (LINE's retry-key life) */
} line_retry_policy_t;

/*
 * Delay before the next attempt after `attempts` earlier provider calls failed:
 * min(max, base * 2^attempts) scaled by full jitter in [0.5, 1.0] (jitter01 in [0, 1]). Pure.
 */
int64_t line_backoff_ms(const line_retry_policy_t *p, int attempts, double jitter01);

/*
 * When to try again after the attempt that just failed, which was call number attempts + 1;
 * 0 means give up (the attempts are used up, or the next attempt would fall outside the retry
 * window that starts at created_at_ms). Pure.
 */
int64_t line_next_attempt_ms(const line_retry_policy_t *p, int attempts, int64_t now_ms,
                             int64_t created_at_ms, double jitter01);

/*
 * Steps 4-7 for an outbound message whose lease this process holds (lease owner = instance
 * id): channel account check, unseal, push with the message's retry key, classify, schedule,
 * CompleteOutbound, channel status. *out is the persisted message after the attempt (in
 * `arena`). Returns OC_E_UNAVAILABLE when persistence could not record the outcome (the lease
 * then expires and the worker settles it with the same retry key). Blocks. Thread-safe.
 */
oc_err_t line_deliver(line_t *l, oc_arena_t *arena, const char *request_id, const PB(Message) * msg,
                      const char *thread_key, PB(Message) * *out, oc_error_t *err);

#endif
