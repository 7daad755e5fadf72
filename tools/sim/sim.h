/* The provider simulator core: accounts by token digest, users' profiles, the fault queue,
 * bounded request and delivery logs, the clock offset, the API versus /__sim/ control split,
 * and signed webhook delivery. A provider simulator (tools/line-sim) adds only its endpoints,
 * its error bodies and what is its own (LINE: retry keys). */
#ifndef OMNICHAT_SIM_H
#define OMNICHAT_SIM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"
#include "omnichat/http.h"

#define SIM_ID_MAX 64
#define SIM_NAME_MAX 256
#define SIM_URL_MAX 512

/* One account (a bot, a Page) the simulator accepts a token for. */
typedef struct sim_account_def {
    const char *token;        /* 1..1024 bytes; kept only as its SHA-256 */
    const char *user_id;      /* the account's own id (LINE: the bot's userId), 1..63 bytes */
    const char *display_name; /* NULL: "Bot " + last 6 characters of user_id */
    const char *basic_id;     /* NULL: "@" + 8 characters of user_id */
    const char *picture_url;  /* NULL: picture_base + user_id */
} sim_account_def_t;

/* Copy of an account's public fields, taken under the lock so handlers never hold pointers. */
typedef struct sim_account {
    char user_id[SIM_ID_MAX];
    char display_name[SIM_NAME_MAX];
    char basic_id[SIM_ID_MAX];
    char picture_url[SIM_URL_MAX];
} sim_account_t;

typedef struct sim_account_rec {
    struct sim_account_rec *next;
    uint8_t token_sha[32];
    bool revoked;
    sim_account_t v;
} sim_account_rec_t;

/* A profile set through the control API; overrides the simulator's deterministic default. */
typedef struct sim_profile {
    struct sim_profile *next;
    char user_id[SIM_ID_MAX];
    char display_name[SIM_NAME_MAX];
    char picture_url[SIM_URL_MAX];
    char status_message[SIM_NAME_MAX];
    char language[16];
    bool not_found; /* the profile look-up answers 404 (user unreachable) */
    bool blocked;   /* sends answer success but deliver nothing (the user blocked the account) */
} sim_profile_t;

/* One injected failure, consumed by one request to a matching path. */
typedef struct sim_fault {
    struct sim_fault *next;
    char path[256];    /* exact path, or a prefix when it ends with '*' */
    int status;        /* 0: the normal answer */
    int kind;          /* a fault kind named by the provider (0: none) */
    char message[256]; /* overrides the default body message when non-empty */
    long delay_ms;     /* sleep before the response leaves */
    long hold_ms;      /* provider-specific hold while the request executes */
    bool execute;      /* the request is processed (and delivered) */
    bool drop;         /* close the connection instead of answering */
} sim_fault_t;

/* A bounded log of pre-serialised JSON objects; oldest entries go first. */
typedef struct sim_rec {
    char *key; /* filter key: the path for requests, the recipient for deliveries */
    char *json;
    size_t size;
} sim_rec_t;

typedef struct sim_ring {
    sim_rec_t *items;
    size_t cap, head, count;
    size_t bytes;
    uint64_t dropped;
} sim_ring_t;

typedef struct sim_opts {
    const char *listen;       /* "127.0.0.1:0" picks a free port; NULL means that */
    int threads;              /* HTTP handler threads; 0 means 16 */
    size_t max_requests;      /* recorded requests kept (oldest dropped); 0 means 100000 */
    size_t max_deliveries;    /* recorded deliveries kept (oldest dropped); 0 means 100000 */
    size_t max_record_bytes;  /* bytes of both logs together; 0 means 256 MiB */
    size_t max_http_body;     /* bytes the HTTP server buffers per request */
    const char *picture_base; /* default picture URL prefix of an account */
    /* The provider's API (every path outside /__sim/) and its control API (/__sim/...). */
    oc_http_handler_fn api;
    oc_http_handler_fn control;
    void *user; /* passed to both handlers */
    /* The provider's names of its fault kinds ("rate_limit"); NULL for an unknown kind. */
    const char *(*kind_name)(int kind);
} sim_opts_t;

/*
 * The core state. A provider simulator embeds it first in its own struct and may take `mu` for
 * its own state too (one lock for everything, as the records are small).
 */
typedef struct sim {
    pthread_mutex_t mu;
    sim_account_rec_t *accounts;
    sim_profile_t *profiles;
    sim_fault_t *faults_head, *faults_tail;
    sim_ring_t requests, deliveries;
    size_t max_record_bytes;
    int64_t clock_offset_ms;
    char picture_base[128];
    const char *(*kind_name)(int kind);
    oc_http_route_t routes[2];
    oc_http_server_t *server;
} sim_t;

/* A provider simulator of `size` bytes (zeroed) whose first member is the core, initialised with
 * *opts, whose `user` becomes the new simulator. NULL with err (OC_E_NOMEM); free with free()
 * after sim_dispose. */
void *sim_new(size_t size, sim_opts_t *opts, oc_error_t *err);
/* Initialises the state (nothing listens yet). OC_E_NOMEM with err. */
oc_err_t sim_init(sim_t *s, const sim_opts_t *opts, oc_error_t *err);
/* Starts serving: /__sim/ to opts->control, everything else to opts->api. OC_E_IO when the
 * address cannot be bound. */
oc_err_t sim_start(sim_t *s, const sim_opts_t *opts, oc_error_t *err);
/* The bound TCP port (useful with port 0). */
int sim_port(const sim_t *s);
/* Stops the server (waiting for running handlers). Then sim_dispose frees the state. */
void sim_stop(sim_t *s);
void sim_dispose(sim_t *s);
/* Forgets requests, deliveries, faults and the clock offset; keeps accounts and profiles.
 * Call with s->mu held (so a provider can clear its own state in the same critical section). */
void sim_reset_locked(sim_t *s);

/* SHA-256 of a byte string (aborts in the unreachable case that OpenSSL fails). */
void sim_sha256(const void *data, size_t len, uint8_t out[32]);
/* Simulator clock (wall clock plus the clock offset), in ms. Takes the lock. */
int64_t sim_now_ms(sim_t *s);

/* Adds an account, or replaces the one that has the same token (un-revoking it). Strings are
 * copied; OC_E_INVALID on a missing or too long field. Thread-safe. */
oc_err_t sim_add_account(sim_t *s, const sim_account_def_t *def, oc_error_t *err);
/* Makes a token answer as revoked from now on. False when no account has it. Thread-safe. */
bool sim_revoke_account(sim_t *s, const char *token);
/* Finds the non-revoked account of a token, comparing digests in constant time. */
bool sim_find_account(sim_t *s, const char *token, size_t len, sim_account_t *out);
/* Loads accounts from a text file, one per line: "token user_id display name with spaces".
 * Blank lines and lines starting with '#' are skipped. OC_E_IO, OC_E_INVALID (line number). */
oc_err_t sim_load_tokens_file(sim_t *s, const char *path, oc_error_t *err);

/* Copies the control-API profile of user_id; false when none was set. */
bool sim_find_profile(sim_t *s, const char *user_id, sim_profile_t *out);
oc_err_t sim_set_profile(sim_t *s, const sim_profile_t *p);

/* Appends a copy of f to the FIFO. */
oc_err_t sim_push_fault(sim_t *s, const sim_fault_t *f);
/* Takes the first fault whose path matches; false when none. */
bool sim_pop_fault(sim_t *s, const char *path, sim_fault_t *out);
/* JSON array of the pending faults (caller frees). */
char *sim_faults_json(sim_t *s);

/* Stores a record, taking ownership of key and json (both malloc'ed). The two logs share one
 * byte budget. */
void sim_record(sim_t *s, sim_ring_t *ring, char *key, char *json, size_t size);
/*
 * Appends "[rec,rec,...]" of the newest `limit` records (0: all) whose key equals `key` (NULL:
 * any) to out. Returns the buffer's error (OC_E_TOO_LARGE when it does not fit).
 */
oc_err_t sim_dump(sim_t *s, sim_ring_t *ring, const char *key, size_t limit, oc_buf_t *out);

/*
 * Delivers a signed webhook: POSTs body to url with the signature header line the provider's
 * signer made (NULL: none) and a User-Agent. The answer's status and body (capped at
 * reply_max) are in *status and reply. OC_E_UNAVAILABLE with err when it could not be delivered.
 */
oc_err_t sim_post_webhook(const char *url, const char *body, size_t len, const char *sig_header,
                          const char *user_agent, long timeout_ms, long *status, oc_buf_t *reply,
                          oc_error_t *err);

#endif
