/* The provider contract of the connector engine: the facts and callbacks a provider declares. */
#ifndef CONN_PROVIDER_H
#define CONN_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/arena.h"
#include "omnichat/config.h"
#include "omnichat/err.h"
#include "omnichat/http.h"
#include "omnichat/http_client.h"
#include "omnichat/pb.h"
#include "omnichat/rpc.h"

/*
 * A provider (LINE, Meta, later WhatsApp) is one const conn_provider_t handed to conn_main().
 * The engine never names a provider; what differs is declared here, as data, and the few
 * things only the provider knows (its API, its webhook bytes) are callbacks. See
 * docs/internals/connector.md for what the engine guarantees around each callback.
 */

typedef struct conn conn_t;

/* How the provider protects against a request that was sent twice. */
typedef enum conn_delivery {
    /* The provider removes duplicates by a key we send (LINE's X-Line-Retry-Key, stored as the
     * message's provider_retry_key): an unknown outcome is retried with the same key. Exactly
     * once, within the provider's retry window. */
    CONN_DELIVERY_RETRY_KEY = 1,
    /* The provider has no key (Meta). An unknown outcome is never re-sent blindly: the message
     * stays UNKNOWN and waits echo-grace-ms for the echo webhook that carries our message id
     * (ReconcileOutbound settles it as sent). After the grace period it is re-sent when
     * echo_resend is set (at least once: a duplicate needs both the response and the echo to
     * be lost), or stays UNKNOWN for good otherwise. */
    CONN_DELIVERY_ECHO_CONFIRMS = 2
} conn_delivery_t;

/* Where a webhook names the channel account of its items. */
typedef enum conn_routing {
    CONN_ROUTE_PATH = 1, /* "{webhook_path}{channel_account_id}": one account per POST (LINE) */
    CONN_ROUTE_BODY = 2  /* each item names the external account id (Meta: entry[].id); needs
                            CONN_SECRET_PER_APP, as the signature is checked before parsing */
} conn_routing_t;

/* Where the webhook signing secret lives. */
typedef enum conn_secret_scope {
    CONN_SECRET_PER_ACCOUNT = 1, /* sealed with the account's credentials, as secret_field */
    CONN_SECRET_PER_APP = 2      /* one per deployment, read from the app-secret-file option */
} conn_secret_scope_t;

/* How the text limit counts. */
typedef enum conn_text_unit {
    CONN_TEXT_UTF16_UNITS = 1, /* LINE: 5,000 UTF-16 code units */
    CONN_TEXT_CHARACTERS = 2   /* Messenger: fewer than 2,000 characters (code points) */
} conn_text_unit_t;

/* What to do with a send attempt; the values mirror persistence's OutboundOutcome. */
typedef enum conn_outcome {
    CONN_OUT_SENT = 1,   /* accepted */
    CONN_OUT_FAILED = 2, /* permanent */
    CONN_OUT_RETRY = 3,  /* transient, nothing was delivered: try again later */
    CONN_OUT_UNKNOWN = 4 /* may or may not have been delivered */
} conn_outcome_t;

/* "sent", "failed", "retry", "unknown". */
const char *conn_outcome_name(conn_outcome_t o);

/* A classified provider answer. */
typedef struct conn_class {
    conn_outcome_t outcome;
    int category;     /* persistence ErrorCategory; 0 with SENT */
    bool auth_failed; /* the credentials were rejected: the account moves to AUTH_FAILED */
    char external_message_id[128];
    char detail[128]; /* short redacted phrase; never any part of the provider body */
} conn_class_t;

/* One send, as the engine hands it to the provider. */
typedef struct conn_send {
    const PB(ChannelAccount) * account;
    const PB(Message) * message; /* message_id, content_text, provider_retry_key, ... */
    const char *thread_key;      /* the conversation's provider thread */
    const char *token;           /* unsealed token_field; wiped by the engine after the call */
    size_t token_len;
    long timeout_ms; /* the <api>-timeout-ms option */
} conn_send_t;

/* What ConnectChannel asks the provider to check. */
typedef struct conn_verify {
    const char *token;               /* the plaintext token of the request */
    const char *external_account_id; /* the caller's claim ("" when none; Meta: the Page id) */
    int channel_type;                /* one of the provider's channel types */
} conn_verify_t;

/* What ConnectChannel learned from the provider about a token. */
typedef struct conn_verified {
    char external_account_id[128]; /* the account id the provider reports (bot user id) */
    char *display_name;            /* in the call's arena; "" when none */
} conn_verified_t;

/* One normalized inbound item. Strings live in the parse arena. */
typedef struct conn_item {
    int channel_type;                /* CONN_ROUTE_BODY: the channel type of route_id */
    const char *route_id;            /* CONN_ROUTE_BODY: external account id (Page id) */
    bool echo;                       /* our own outbound message echoed back */
    const char *echo_message_id;     /* echo: our message id (metadata), NULL/"" when not ours */
    const char *thread_key;          /* the provider thread */
    const char *external_user_id;    /* the contact */
    const char *external_message_id; /* also the idempotency key */
    int64_t timestamp_ms;
    int direction;   /* persistence Direction; 0: inbound */
    int sender_type; /* persistence SenderType; 0: contact */
    int content_type;
    const char *content_text;
    const char *content_struct_json;
    const char *display_name; /* "" until enriched */
    const char *avatar_url;
    /* A receipt instead of a message: persistence MessageStatus DELIVERED or READ for the
     * outbound messages of thread_key up to watermark_ms and those listed (ApplyReceipt); 0 for
     * a message. Only the routing fields and thread_key matter then. */
    int receipt;
    int64_t watermark_ms;
    char **receipt_mids;
    size_t n_receipt_mids;
    /* Filled by the engine: the account the item routed to (NULL: unroutable). */
    const PB(ChannelAccount) * account;
} conn_item_t;

/* What a webhook body held. */
typedef struct conn_batch {
    conn_item_t *items;
    size_t nitems;
    size_t ignored; /* events of other types: acknowledged and counted, not stored */
    size_t invalid; /* events that fail validation: skipped and counted */
    size_t first_invalid_index;
    const char *first_invalid_reason; /* static phrase naming the field, never its content */
} conn_batch_t;

typedef struct conn_provider {
    /* ---- facts ---- */
    const char *name;    /* "line": program omnichat-connector-<name>, logs, metric labels */
    const char *version; /* of the program */
    const char *grpc_listen_default; /* "0.0.0.0:50052" */
    const char *http_listen_default; /* "0.0.0.0:8081" */
    const int *channel_types;        /* persistence ChannelType values this connector serves */
    size_t n_channel_types;
    conn_delivery_t delivery;
    bool echo_resend;               /* CONN_DELIVERY_ECHO_CONFIRMS: re-send after the grace */
    const char *echo_grace_default; /* "30000": default of echo-grace-ms */
    /* Retry window (retry-window-s): no attempt later than this after creation. 0 means no
     * limit, never "always closed"; a provider whose key dies (LINE) bounds it instead. */
    const char *retry_window_default;
    long long retry_window_min_s, retry_window_max_s;
    const char *retry_window_help;
    conn_routing_t routing;
    const char *webhook_path;            /* "/webhooks/line/" (a prefix with CONN_ROUTE_PATH) */
    const char *webhook_timeout_default; /* the provider's deadline with room: "1500" (LINE 2 s) */
    const char *webhook_timeout_help;
    /* Token transport, applied by conn_api_call: a header prefix ("Authorization: Bearer ")
     * or a form field ("access_token"). */
    oc_http_secret_in_t token_in;
    const char *token_name;
    conn_text_unit_t text_unit;
    size_t text_max;       /* inclusive, in text_unit */
    const char *text_rule; /* the error message's tail: "at most 5000 UTF-16 code units for LINE" */
    const char *token_field;  /* sealed credential of the token: "access_token" */
    const char *secret_field; /* CONN_SECRET_PER_ACCOUNT: sealed credential, "channel_secret" */
    conn_secret_scope_t secret_scope;
    const char *api_option;       /* "line": options line-api-base and line-timeout-ms */
    const char *api_base_default; /* "https://api.line.me" */
    long long api_timeout_max_ms;
    const char *user_agent;
    /* Provider options (offsets into the provider's own struct, at most CONN_PROVIDER_CFG_MAX
     * bytes, read back with conn_provider_config). */
    const oc_config_option_t *options;
    size_t noptions;
    size_t config_size;

    /* ---- callbacks (thread-safe; they may block up to the timeouts they are given) ---- */
    /* Optional: provider state (caches) after the engine is set up; conn_provider_state. */
    oc_err_t (*init)(conn_t *c, oc_error_t *err);
    void (*dispose)(conn_t *c);
    /* One delivery attempt: calls the provider (through conn_api_call) and classifies the
     * answer into *out. Returns false when no request could have left (nothing was sent). */
    bool (*send)(conn_t *c, const conn_send_t *s, conn_class_t *out);
    /* ConnectChannel: checks a token with the provider. OC_E_UNAUTHENTICATED when refused,
     * OC_E_UNAVAILABLE when the provider could not be asked; messages in ctx->err. */
    oc_err_t (*verify)(conn_t *c, oc_rpc_ctx_t *ctx, const conn_verify_t *v, conn_verified_t *out);
    /* True when the request's signature header is valid for `secret` over the raw body.
     * Constant-time. Called before any parsing. */
    bool (*signature_valid)(const char *secret, size_t secret_len, const oc_http_request_t *req);
    /* Parses an authenticated body into items (see conn_batch_t). OC_E_INVALID only when the
     * body is unusable as a whole; OC_E_NOMEM. */
    oc_err_t (*parse)(const char *body, size_t len, oc_arena_t *arena, conn_batch_t *out,
                      oc_error_t *err);
    /* Optional: best-effort enrichment (profiles) of items[0..n) of one account until the
     * monotonic deadline budget_end_us; never fails the webhook. */
    void (*enrich)(conn_t *c, oc_arena_t *arena, const PB(ChannelAccount) * acc, conn_item_t *items,
                   size_t n, int64_t budget_end_us);
    /* Optional: GET on webhook_path (Meta's hub.challenge subscription check); served by the
     * engine's HTTP server when set. */
    void (*webhook_get)(conn_t *c, const oc_http_request_t *req, oc_http_response_t *resp);
} conn_provider_t;

#define CONN_PROVIDER_CFG_MAX 512

/* Facts that go together, for a provider's initializer. */
#define CONN_FACTS_TEXT(unit, max, rule) .text_unit = (unit), .text_max = (max), .text_rule = (rule)
#define CONN_FACTS_API(option, base, timeout_max, agent) \
    .api_option = (option), .api_base_default = (base), .api_timeout_max_ms = (timeout_max), \
    .user_agent = (agent)
#define CONN_FACTS_TOKEN(field, in, name) \
    .token_field = (field), .token_in = (in), .token_name = (name)
#define CONN_FACTS_LISTEN(grpc, http) .grpc_listen_default = (grpc), .http_listen_default = (http)
#define CONN_FACTS_OPTIONS(rows, cfg_type) \
    .options = (rows), .noptions = sizeof(rows) / sizeof((rows)[0]), .config_size = sizeof(cfg_type)
#define CONN_FACTS_WEBHOOK(path, timeout_default, timeout_help) \
    .webhook_path = (path), .webhook_timeout_default = (timeout_default), \
    .webhook_timeout_help = (timeout_help)
#define CONN_FACTS_RETRY_WINDOW(def, min_s, max_s, help) \
    .retry_window_default = (def), .retry_window_min_s = (min_s), .retry_window_max_s = (max_s), \
    .retry_window_help = (help)

#endif
