/* The Meta provider of the connector engine (Messenger and Instagram): its facts, options, and
 * what its modules share. */
#ifndef META_H
#define META_H

#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

#define META_TEXT_MAX_CHARS 1999 /* "fewer than 2000 characters" */
#define META_WEBHOOK_PATH "/webhooks/meta"
#define META_BODY_MAX 65536 /* bytes of a Graph API answer kept */
#define META_TOKEN_MAX 4096 /* bytes of a Page access token we accept */

/* The Meta provider (meta_provider.c): hand it to conn_main. */
extern const conn_provider_t meta_provider;

/* The Meta options beyond the engine's (conn_provider_config). */
typedef struct meta_config {
    char *graph_version; /* "v21.0": the path's first segment */
    char *verify_token;  /* contents of verify-token-file: the hub.verify_token */
} meta_config_t;

/* ---- Graph API client (meta_api.c) ---- */

/* A Graph API error, as far as classification needs it. */
typedef struct meta_error {
    bool present; /* the body held an "error" object */
    long code, subcode;
    bool transient;
} meta_error_t;

/*
 * POST /{version}/{path} with form `fields` (already encoded, "a=b&c=d"), the token as the
 * access_token form field (never in the URL) and appsecret_proof when an app secret is
 * configured, through the engine's client (no silent re-send). The answer is in *res
 * (initialised here, capped at META_BODY_MAX; the caller disposes it). OC_OK unless the request
 * could not be built. Blocks; thread-safe.
 */
oc_err_t meta_api_post(conn_t *c, const char *path, const char *endpoint, const char *fields,
                       const char *token, size_t token_len, long timeout_ms, oc_http_result_t *res);

/* The "error" object of a Graph API body (code, error_subcode, is_transient). Pure. */
void meta_api_error(const char *body, size_t len, meta_error_t *out);

/* Classifies the answer to a send (PROVIDERS.md, Meta error table as data in meta_api.c):
 * transport, status, code/error_subcode/is_transient, never the message text. Pure. */
void meta_classify_send(const oc_http_result_t *res, long timeout_ms, conn_class_t *out);

/* ---- webhook (meta_webhook.c) ---- */

bool meta_request_signed(const char *secret, size_t secret_len, const oc_http_request_t *req);
oc_err_t meta_parse(const char *body, size_t len, oc_arena_t *arena, conn_batch_t *out,
                    oc_error_t *err);
void meta_webhook_get(conn_t *c, const oc_http_request_t *req, oc_http_response_t *resp);

#endif
