/* LINE Messaging API simulator (push, bot info, profile, /__sim/ control API) as a library. */
#ifndef OMNICHAT_LINE_SIM_H
#define OMNICHAT_LINE_SIM_H

#include <stdbool.h>
#include <stddef.h>

#include "omnichat/err.h"
#include "sim.h"

typedef struct lsim lsim_t;

typedef struct lsim_opts {
    const char *listen;      /* "127.0.0.1:0" picks a free port; NULL means that */
    int threads;             /* HTTP handler threads; 0 means 16 */
    size_t max_requests;     /* recorded requests kept (oldest dropped); 0 means 100000 */
    size_t max_deliveries;   /* recorded deliveries kept (oldest dropped); 0 means 100000 */
    size_t max_record_bytes; /* bytes of both logs together; 0 means 256 MiB */
    size_t max_retry_keys;   /* accepted retry keys kept (oldest dropped); 0 means 200000 */
} lsim_opts_t;

/* One bot (a LINE channel) the simulator accepts a channel access token for: an account of
 * the simulator core (token 1..1024 bytes, user_id = the bot's userId, display_name NULL: "Bot "
 * + last 6 characters of user_id, basic_id NULL: "@" + 8 characters of user_id, picture_url
 * NULL: a fixed https URL). */
typedef sim_account_def_t lsim_bot_def_t;

/*
 * Creates the simulator and starts serving HTTP on opts->listen. Returns NULL with err on
 * failure (OC_E_IO when the address cannot be bound, OC_E_NOMEM). The caller owns the result
 * and frees it with lsim_destroy.
 */
lsim_t *lsim_create(const lsim_opts_t *opts, oc_error_t *err);
/* The bound TCP port (useful with port 0). */
int lsim_port(const lsim_t *s);
/* Stops the server, waiting for running handlers, and frees everything. NULL is fine. */
void lsim_destroy(lsim_t *s);

/*
 * Adds a bot, or replaces the bot that has the same token (un-revoking it). Strings are copied;
 * the token is kept only as its SHA-256. OC_E_INVALID on a missing or too long field.
 * Thread-safe.
 */
oc_err_t lsim_add_bot(lsim_t *s, const lsim_bot_def_t *def, oc_error_t *err);
/* Makes a token answer 401 from now on. False when no bot has it. Thread-safe. */
bool lsim_revoke_bot(lsim_t *s, const char *token);
/*
 * Loads bots from a text file, one per line: "token bot_user_id display name with spaces".
 * Blank lines and lines starting with '#' are skipped. OC_E_IO when unreadable, OC_E_INVALID
 * (with the line number) on a malformed line; bots of earlier lines stay loaded.
 */
oc_err_t lsim_load_tokens_file(lsim_t *s, const char *path, oc_error_t *err);
/* Forgets requests, deliveries, faults, accepted retry keys and the clock offset; keeps bots
 * and profiles. Requests in flight finish normally. Thread-safe. */
void lsim_reset(lsim_t *s);

/* The documented sandbox bot of `omnichat-line-sim --sandbox` (see docs/line-simulator.md). */
#define LSIM_SANDBOX_USER_ID "Ub0000000000000000000000000000001"
#define LSIM_SANDBOX_DISPLAY_NAME "Omnichat Sandbox"
#define LSIM_SANDBOX_BASIC_ID "@omnichat-sandbox"

#endif
