/* State shared by the LINE simulator's modules (retry keys, LINE API, control API); not public.
 * The rest of the state is the simulator core's (tools/sim/sim.h). */
#ifndef OMNICHAT_LSIM_INTERNAL_H
#define OMNICHAT_LSIM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "line_sim.h"
#include "sim.h"
#include "omnichat/http.h"
#include "omnichat/util.h"

/* LINE rejects a push body over 2 MB with 413; we take MB as MiB. */
#define LSIM_MAX_PUSH_BODY ((size_t)2 * 1024 * 1024)
/* The HTTP server buffers up to this, so the 413 above is ours (with X-Line-Request-Id). */
#define LSIM_MAX_HTTP_BODY ((size_t)8 * 1024 * 1024)
#define LSIM_RETRY_KEY_TTL_MS (24LL * 3600 * 1000)
/* Bodies kept in the request log are cut here; memory stays bounded under big pushes. */
#define LSIM_MAX_RECORDED_BODY ((size_t)64 * 1024)

typedef enum lsim_fault_kind {
    LSIM_KIND_NONE,
    LSIM_KIND_RATE_LIMIT,
    LSIM_KIND_QUOTA
} lsim_fault_kind_t;

/* An accepted (or in-flight) retry key of one bot. */
typedef struct lsim_key {
    struct lsim_key *hnext;
    struct lsim_key *older, *newer; /* accepted keys in acceptance order, for expiry */
    uint64_t hash;
    char *id; /* bot user id + '/' + lowercase key */
    bool accepted;
    int64_t accepted_ms; /* simulator clock */
    char request_id[OC_UUID_STR_LEN + 1];
    char *sent_json; /* the original "sentMessages" array */
    uint8_t body_sha[32];
} lsim_key_t;

struct lsim {
    sim_t core;            /* accounts, profiles, faults, logs, clock, server; core.mu guards all */
    pthread_cond_t key_cv; /* broadcast when an in-flight retry key settles */
    lsim_key_t **buckets;
    size_t nbuckets, nkeys, max_keys;
    lsim_key_t *oldest_key, *newest_key;
    uint64_t next_message_id;
};

typedef enum lsim_key_state {
    LSIM_KEY_RESERVED, /* caller must lsim__key_commit or lsim__key_abort */
    LSIM_KEY_ACCEPTED  /* request_id / sent_json / body_differs describe the first request */
} lsim_key_state_t;

/*
 * Reserves a retry key for a bot, waiting while another request holds it in flight. When it was
 * already accepted (and has not expired) fills request_id (37 bytes), *sent_json (caller frees)
 * and *body_differs (this body is not the original one).
 */
lsim_key_state_t lsim__key_reserve(lsim_t *s, const char *bot_user_id, const char *key,
                                   const uint8_t body_sha[32], char *request_id, char **sent_json,
                                   bool *body_differs);
/* Marks a reserved key accepted by request_id with the given sentMessages (copied). */
void lsim__key_commit(lsim_t *s, const char *bot_user_id, const char *key, const char *request_id,
                      const char *sent_json);
/* Releases a reserved key that was not executed; the next request may use it. */
void lsim__key_abort(lsim_t *s, const char *bot_user_id, const char *key);

/* A fresh 18-digit message id. */
void lsim__message_id(lsim_t *s, char out[24]);

/* HTTP handlers: the LINE API (every path outside /__sim/) and the control API. */
void lsim__handle_line(void *user, const oc_http_request_t *req, oc_http_response_t *resp);
void lsim__handle_control(void *user, const oc_http_request_t *req, oc_http_response_t *resp);

#endif
