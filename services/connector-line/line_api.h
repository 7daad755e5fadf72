/* LINE Messaging API client and the classification of its answers. */
#ifndef LINE_API_H
#define LINE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"
#include "omnichat/http_client.h"
#include "omnichat/metrics.h"

#define LINE_BODY_MAX 65536 /* bytes of a LINE answer kept; the rest is discarded */
#define LINE_TOKEN_MAX 4096 /* bytes of an access token we accept to send */

/* A result of a LINE call, its body capped at LINE_BODY_MAX. */
void line_http_result_init(oc_http_result_t *r);

typedef struct line_api line_api_t;

/*
 * A client of `base` ("https://api.line.me", no trailing slash needed) on the common HTTP
 * client: a handle per thread, so connections are reused, and never a silent re-send of a
 * push. `latency` (optional) is a histogram with one label, the endpoint ("push", "bot_info",
 * "profile"). NULL with err on failure.
 */
line_api_t *line_api_create(const char *base, oc_metric_t *latency, oc_error_t *err);
void line_api_destroy(line_api_t *a);

/*
 * POST /v2/bot/message/push {"to": to, "messages": [{"type":"text","text": text}]} with
 * "Authorization: Bearer <token>" and "X-Line-Retry-Key: retry_key" (required: NULL or "" is
 * OC_E_INVALID and nothing is sent), timeout_ms for the whole exchange. The token travels in a
 * header line that is wiped before return; it never reaches a URL or a log. The outcome is in
 * *res (initialised by the caller); the return is OC_OK unless the request could not be built
 * (OC_E_INVALID, OC_E_NOMEM, OC_E_INTERNAL). Blocks. Thread-safe.
 */
oc_err_t line_api_push(line_api_t *a, const char *token, size_t token_len, const char *to,
                       const char *text, const char *retry_key, long timeout_ms,
                       oc_http_result_t *res);

/*
 * GET {base}{path} with the token, for the bot info and profile endpoints. `endpoint` labels
 * the latency metric. Same contract as line_api_push.
 */
oc_err_t line_api_get(line_api_t *a, const char *token, size_t token_len, const char *path,
                      const char *endpoint, long timeout_ms, oc_http_result_t *res);

/* What to do with a send attempt. */
typedef enum line_outcome {
    LINE_OUT_SENT = 1,   /* accepted (200, or 409: the retry key was already accepted) */
    LINE_OUT_FAILED = 2, /* permanent */
    LINE_OUT_RETRY = 3,  /* transient, nothing was delivered: try again later */
    LINE_OUT_UNKNOWN = 4 /* may or may not have been delivered: retry with the same key */
} line_outcome_t;

typedef struct line_class {
    line_outcome_t outcome;
    int category;     /* persistence ErrorCategory value; 0 with SENT */
    bool auth_failed; /* the account's credentials were rejected: record AUTH_FAILED */
    char external_message_id[128];
    char detail[128]; /* short redacted phrase; never any part of the provider body */
} line_class_t;

/*
 * Classifies the answer to a push (PROVIDERS.md, LINE error table; the rows are data in
 * line_api.c). Reads only the status, the body's "message" and "sentMessages[0].id". Pure.
 */
void line_classify_push(const oc_http_result_t *res, long timeout_ms, line_class_t *out);

/* "sent", "failed", "retry", "unknown". */
const char *line_outcome_name(line_outcome_t o);

/* Extracts the string member `key` of the JSON object body into out (""/false when absent). */
bool line_json_string(const char *body, size_t len, const char *key, char *out, size_t cap);

#endif
