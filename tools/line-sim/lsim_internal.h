/* State shared by the LINE simulator's modules (store, LINE API, control API); not public. */
#ifndef OMNICHAT_LSIM_INTERNAL_H
#define OMNICHAT_LSIM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "line_sim.h"
#include "omnichat/http.h"
#include "omnichat/util.h"

/* LINE rejects a push body over 2 MB with 413; we take MB as MiB. */
#define LSIM_MAX_PUSH_BODY ((size_t)2 * 1024 * 1024)
/* The HTTP server buffers up to this, so the 413 above is ours (with X-Line-Request-Id). */
#define LSIM_MAX_HTTP_BODY ((size_t)8 * 1024 * 1024)
#define LSIM_RETRY_KEY_TTL_MS (24LL * 3600 * 1000)
/* Bodies kept in the request log are cut here; memory stays bounded under big pushes. */
#define LSIM_MAX_RECORDED_BODY ((size_t)64 * 1024)

#define LSIM_USER_ID_MAX 64
#define LSIM_NAME_MAX 256
#define LSIM_URL_MAX 512

/* Copy of a bot's public fields, taken under the lock so handlers never hold bot pointers. */
typedef struct lsim_bot_view {
    char user_id[LSIM_USER_ID_MAX];
    char display_name[LSIM_NAME_MAX];
    char basic_id[LSIM_USER_ID_MAX];
    char picture_url[LSIM_URL_MAX];
} lsim_bot_view_t;

typedef struct lsim_bot {
    struct lsim_bot *next;
    uint8_t token_sha[32];
    bool revoked;
    lsim_bot_view_t v;
} lsim_bot_t;

/* A profile set through the control API; overrides the deterministic default. */
typedef struct lsim_profile {
    struct lsim_profile *next;
    char user_id[LSIM_USER_ID_MAX];
    char display_name[LSIM_NAME_MAX];
    char picture_url[LSIM_URL_MAX];
    char status_message[LSIM_NAME_MAX];
    char language[16];
    bool not_found; /* GET profile answers 404 (user unreachable) */
    bool blocked;   /* push answers 200 but delivers nothing, like a user who blocked the bot */
} lsim_profile_t;

typedef enum lsim_fault_kind {
    LSIM_KIND_NONE,
    LSIM_KIND_RATE_LIMIT,
    LSIM_KIND_QUOTA
} lsim_fault_kind_t;

/* One injected failure, consumed by one request to a matching path. */
typedef struct lsim_fault {
    struct lsim_fault *next;
    char path[256]; /* exact path, or a prefix when it ends with '*' */
    int status;     /* 0: the normal answer */
    lsim_fault_kind_t kind;
    char message[256]; /* overrides the default body message when non-empty */
    long delay_ms;     /* sleep before the response leaves */
    long hold_ms;      /* executing push only: sleep while its retry key is in flight */
    bool execute;      /* the request is processed (and a push delivered) */
    bool drop;         /* close the connection instead of answering */
} lsim_fault_t;

/* A bounded log of pre-serialised JSON objects; oldest entries go first. */
typedef struct lsim_rec {
    char *key; /* filter key: the path for requests, the recipient for deliveries */
    char *json;
    size_t size;
} lsim_rec_t;

typedef struct lsim_ring {
    lsim_rec_t *items;
    size_t cap, head, count;
    size_t bytes;
    uint64_t dropped;
} lsim_ring_t;

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
    pthread_mutex_t mu;
    pthread_cond_t key_cv; /* broadcast when an in-flight retry key settles */
    lsim_bot_t *bots;
    lsim_profile_t *profiles;
    lsim_fault_t *faults_head, *faults_tail;
    lsim_ring_t requests, deliveries;
    size_t max_record_bytes;
    lsim_key_t **buckets;
    size_t nbuckets, nkeys, max_keys;
    lsim_key_t *oldest_key, *newest_key;
    int64_t clock_offset_ms;
    uint64_t next_message_id;
    oc_http_route_t routes[2];
    oc_http_server_t *server;
};

/* SHA-256 of a byte string (all zero in the unreachable case that OpenSSL fails). */
void lsim__sha256(const void *data, size_t len, uint8_t out[32]);
/* Simulator clock (wall clock plus the /__sim/clock offset), in ms. Takes the lock. */
int64_t lsim__now_ms(lsim_t *s);
/* Finds the non-revoked bot of a token, comparing digests in constant time. */
bool lsim__find_bot(lsim_t *s, const char *token, size_t len, lsim_bot_view_t *out);
/* Copies the control-API profile of user_id; false when none was set. */
bool lsim__find_profile(lsim_t *s, const char *user_id, lsim_profile_t *out);
oc_err_t lsim__set_profile(lsim_t *s, const lsim_profile_t *p);

/* Appends a copy of f to the FIFO. */
oc_err_t lsim__push_fault(lsim_t *s, const lsim_fault_t *f);
/* Takes the first fault whose path matches; false when none. */
bool lsim__pop_fault(lsim_t *s, const char *path, lsim_fault_t *out);
/* JSON array of the pending faults (caller frees). */
char *lsim__faults_json(lsim_t *s);

/* Stores a record, taking ownership of key and json (both malloc'ed). */
void lsim__record(lsim_t *s, lsim_ring_t *ring, char *key, char *json, size_t size);
/*
 * Appends "[rec,rec,...]" of the newest `limit` records (0: all) whose key equals `key` (NULL:
 * any) to out. Returns the buffer's error (OC_E_TOO_LARGE when it does not fit).
 */
oc_err_t lsim__dump(lsim_t *s, lsim_ring_t *ring, const char *key, size_t limit, oc_buf_t *out);

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
