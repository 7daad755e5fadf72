/* LINE Messaging API client and the classification of its answers. */
#ifndef LINE_API_H
#define LINE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "omnichat/http_client.h"

#define LINE_BODY_MAX 65536 /* bytes of a LINE answer kept; the rest is discarded */
#define LINE_TOKEN_MAX 4096 /* bytes of an access token we accept to send */

/* A result of a LINE call, its body capped at LINE_BODY_MAX. */
void line_http_result_init(oc_http_result_t *r);

/*
 * POST /v2/bot/message/push {"to": to, "messages": [{"type":"text","text": text}]} with the
 * token (as the provider declares: "Authorization: Bearer", wiped after use) and
 * "X-Line-Retry-Key: retry_key" (required: NULL or "" is OC_E_INVALID and nothing is sent),
 * through the engine's HTTP client (never a silent re-send), timeout_ms for the whole
 * exchange. The outcome is in *res (initialised by the caller); the return is OC_OK unless
 * the request could not be built (OC_E_INVALID, OC_E_NOMEM, OC_E_INTERNAL). Blocks.
 * Thread-safe.
 */
oc_err_t line_api_push(conn_t *c, const char *token, size_t token_len, const char *to,
                       const char *text, const char *retry_key, long timeout_ms,
                       oc_http_result_t *res);

/*
 * GET {base}{path} with the token, for the bot info and profile endpoints. `endpoint` labels
 * the latency metric. Same contract as line_api_push.
 */
oc_err_t line_api_get(conn_t *c, const char *token, size_t token_len, const char *path,
                      const char *endpoint, long timeout_ms, oc_http_result_t *res);

/*
 * Classifies the answer to a push (PROVIDERS.md, LINE error table; the rows are data in
 * line_api.c). Reads only the status, the body's "message" and "sentMessages[0].id". Pure.
 */
void line_classify_push(const oc_http_result_t *res, long timeout_ms, conn_class_t *out);

/* Extracts the string member `key` of the JSON object body into out (""/false when absent). */
bool line_json_string(const char *body, size_t len, const char *key, char *out, size_t cap);

#endif
