/* SendText and the delivery attempt shared with the retry worker (ARCHITECTURE.md section 4). */
#ifndef LINE_SEND_H
#define LINE_SEND_H

#include <stdbool.h>
#include <stdint.h>

#include "line.h"
#include "line_api.h"

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
 * 0 means give up (the attempts are used up, or the next attempt would not start before the
 * retry window, which starts at created_at_ms, closes). Pure.
 */
int64_t line_next_attempt_ms(const line_retry_policy_t *p, int attempts, int64_t now_ms,
                             int64_t created_at_ms, double jitter01);

/* True when now - created_at >= the retry window: the provider retry key may be dead. Pure. */
bool line_window_closed(const line_retry_policy_t *p, int64_t now_ms, int64_t created_at_ms);

/*
 * A fresh lease owner, "<instance_id>:<UUIDv4>" (the instance id cut to LINE_INSTANCE_ID_MAX
 * bytes), for one SendText attempt or one ClaimDueOutbound batch. Owners are never shared, so a
 * holder whose lease ran out cannot complete a message someone else took over, even in this
 * process. OC_E_INTERNAL when the RNG fails. Thread-safe.
 */
oc_err_t line_lease_owner(const char *instance_id, char out[LINE_LEASE_OWNER_MAX + 1]);

/* One attempt on an outbound message, as line_window_verdict and line_settle see it. */
typedef struct line_attempt {
    int prior_status;      /* the message's status before: MESSAGE_STATUS_PENDING or _UNKNOWN */
    int prior_category;    /* its error category before ("the last category") */
    int attempts;          /* provider calls before this attempt */
    int64_t created_at_ms; /* start of the retry window */
    int64_t now_ms;
    double jitter01; /* for the backoff, in [0, 1] */
    bool called;     /* this attempt called the provider */
} line_attempt_t;

/* What CompleteOutbound records for an attempt. */
typedef struct line_verdict {
    line_outcome_t outcome;
    int category;               /* 0 with SENT */
    int64_t next_attempt_at_ms; /* RETRY/UNKNOWN: when to try again; 0: settled for good */
    char detail[200];           /* redacted: never a provider body or a secret */
} line_verdict_t;

/*
 * Checked before anything else of an attempt: true (and *v filled) when the retry window has
 * closed, so the provider must not be called. A message whose last outcome was UNKNOWN stays
 * UNKNOWN for good (it may have been delivered; next_attempt_at 0), "provider retry window
 * closed; delivery unknown"; a PENDING one (nothing was executed) becomes FAILED with its last
 * category (internal_error when it never had one), "provider retry window closed". Pure.
 */
bool line_window_verdict(const line_retry_policy_t *p, const line_attempt_t *a, line_verdict_t *v);

/*
 * The verdict for a classified attempt. An earlier UNKNOWN outcome is never forgotten: a clean
 * transient failure of the retry leaves the message UNKNOWN (retried with the same key), and a
 * permanent failure that does not prove the request itself was refused (no provider call, an
 * auth or quota error) ends it UNKNOWN for good instead of FAILED, because the earlier attempt
 * may have been delivered and FAILED invites a resend. Giving up (attempts used up or window
 * about to close) ends UNKNOWN for good when the outcome is unknown, FAILED after a clean
 * transient failure. Pure.
 */
void line_settle(const line_retry_policy_t *p, const line_attempt_t *a, const line_class_t *cls,
                 line_verdict_t *v);

/*
 * Steps 4-7 for an outbound message whose lease `lease_owner` holds: retry-window check,
 * channel account check, unseal, push with the message's retry key, classify, schedule,
 * CompleteOutbound (with exactly that lease owner), channel status. *out is the persisted
 * message after the attempt (in `arena`). Returns OC_E_UNAVAILABLE when persistence could not
 * record the outcome or another holder took the message over (the lease then expires and the
 * worker settles it with the same retry key). Blocks. Thread-safe.
 */
oc_err_t line_deliver(line_t *l, oc_arena_t *arena, const char *request_id, const char *lease_owner,
                      const PB(Message) * msg, const char *thread_key, PB(Message) * *out,
                      oc_error_t *err);

#endif
