/* The outbound engine: SendText, one delivery attempt, and the retry policy (ARCHITECTURE §4). */
#ifndef CONN_OUTBOUND_H
#define CONN_OUTBOUND_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

#define CONN_FINGERPRINT_LEN 64 /* hex SHA-256 */

/*
 * Hex SHA-256 over the length-prefixed (8-byte big-endian) conversation id, text, sender id and
 * sender display name: the same request always gives the same digest, and no two different
 * field splits collide. out needs CONN_FINGERPRINT_LEN + 1 bytes. Pure.
 */
void conn_fingerprint(const char *conversation_id, const char *text, const char *sender_id,
                      const char *sender_display_name, char out[CONN_FINGERPRINT_LEN + 1]);

typedef struct conn_policy {
    int max_attempts;  /* provider calls per message, in all */
    int64_t base_ms;   /* first delay */
    int64_t max_ms;    /* delay cap */
    int64_t window_ms; /* no attempt later than created_at + window; 0: no limit */
    conn_delivery_t delivery;
    int64_t echo_grace_ms; /* CONN_DELIVERY_ECHO_CONFIRMS: wait for the echo this long */
    bool echo_resend;      /* ... then send again (true) or stay unknown for good (false) */
} conn_policy_t;

/* The policy of a running connector (its options and its provider's facts). */
void conn_policy_of(const conn_t *c, conn_policy_t *p);

/*
 * Delay before the next attempt after `attempts` earlier provider calls failed:
 * min(max, base * 2^attempts) scaled by full jitter in [0.5, 1.0] (jitter01 in [0, 1]). Pure.
 */
int64_t conn_backoff_ms(const conn_policy_t *p, int attempts, double jitter01);

/*
 * When to try again after the attempt that just failed, which was call number attempts + 1;
 * 0 means give up (the attempts are used up, or the next attempt would not start before the
 * retry window, which starts at created_at_ms, closes). `unknown`: the outcome was unknown, so
 * with echo confirms the next attempt waits at least the echo grace period. Pure.
 */
int64_t conn_next_attempt_ms(const conn_policy_t *p, int attempts, int64_t now_ms,
                             int64_t created_at_ms, double jitter01, bool unknown);

/* True when a window is set and now - created_at >= it. A window of 0 never closes. Pure. */
bool conn_window_closed(const conn_policy_t *p, int64_t now_ms, int64_t created_at_ms);

/*
 * A fresh lease owner, "<instance_id>:<UUIDv4>" (the instance id cut to CONN_INSTANCE_ID_MAX
 * bytes), for one SendText attempt or one ClaimDueOutbound batch. Owners are never shared, so a
 * holder whose lease ran out cannot complete a message someone else took over, even in this
 * process. OC_E_INTERNAL when the RNG fails. Thread-safe.
 */
oc_err_t conn_lease_owner(const char *instance_id, char out[CONN_LEASE_OWNER_MAX + 1]);

/* One attempt on an outbound message, as the verdict functions see it. */
typedef struct conn_attempt {
    int prior_status;      /* the message's status before: MESSAGE_STATUS_PENDING or _UNKNOWN */
    int prior_category;    /* its error category before ("the last category") */
    int attempts;          /* provider calls before this attempt */
    int64_t created_at_ms; /* start of the retry window */
    int64_t now_ms;
    double jitter01; /* for the backoff, in [0, 1] */
    bool called;     /* this attempt called the provider */
} conn_attempt_t;

/* What CompleteOutbound records for an attempt. */
typedef struct conn_verdict {
    conn_outcome_t outcome;
    int category;               /* 0 with SENT */
    int64_t next_attempt_at_ms; /* RETRY/UNKNOWN: when to try again; 0: settled for good */
    char detail[200];           /* redacted: never a provider body or a secret */
} conn_verdict_t;

/*
 * Checked before anything else of an attempt: true (and *v filled) when the provider must not
 * be called. (1) The retry window has closed: a message whose last outcome was UNKNOWN stays
 * UNKNOWN for good (it may have been delivered; next_attempt_at 0), "provider retry window
 * closed; delivery unknown"; a PENDING one becomes FAILED with its last category
 * (internal_error when it never had one), "provider retry window closed". (2) Echo confirms
 * without re-sending: an UNKNOWN message whose echo did not come within the grace period stays
 * UNKNOWN for good, "no echo within the grace period; delivery unknown". Pure.
 */
bool conn_pre_verdict(const conn_policy_t *p, const conn_attempt_t *a, conn_verdict_t *v);

/*
 * The verdict for a classified attempt. An earlier UNKNOWN outcome is never forgotten: a clean
 * transient failure of the retry leaves the message UNKNOWN, and a permanent failure that does
 * not prove the request itself was refused (no provider call, an auth or quota error) ends it
 * UNKNOWN for good instead of FAILED, because the earlier attempt may have been delivered and
 * FAILED invites a resend. Giving up (attempts used up or window about to close) ends UNKNOWN
 * for good when the outcome is unknown, FAILED after a clean transient failure. With echo
 * confirms an UNKNOWN outcome is due again no sooner than the echo grace period. Pure.
 */
void conn_settle(const conn_policy_t *p, const conn_attempt_t *a, const conn_class_t *cls,
                 conn_verdict_t *v);

/*
 * Steps 4-7 for an outbound message whose lease `lease_owner` holds: pre-verdict, channel
 * account check, unseal, one provider call, classify, schedule, CompleteOutbound (with exactly
 * that lease owner), channel status. *out is the persisted message after the attempt (in
 * `arena`). Returns OC_E_UNAVAILABLE when persistence could not record the outcome or another
 * holder took the message over (the lease then expires and the worker settles it). Blocks.
 * Thread-safe.
 */
oc_err_t conn_deliver(conn_t *c, oc_arena_t *arena, const char *request_id, const char *lease_owner,
                      const PB(Message) * msg, const char *thread_key, PB(Message) * *out,
                      oc_error_t *err);

/* gRPC Connector/SendText; ctx->user is the conn_t. */
oc_err_t conn_send_text(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp);

#endif
