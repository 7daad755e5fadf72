/* What the providers' webhook parsers and account look-ups share: id members, the raw content
 * kept as content_struct, skipped events, display names. */
#ifndef CONN_ITEMS_H
#define CONN_ITEMS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "omnichat/arena.h"
#include "provider.h"

#define CONN_ID_MAX 256       /* bytes of a provider id we accept */
#define CONN_STRUCT_MAX 65536 /* persistence's content_struct_json limit */
#define CONN_TEXT_MAX 20000   /* persistence's content_text limit (bytes) */

/* A webhook body as a JSON object (oc_json_lenient_load: also what jansson alone refuses), or
 * NULL with err (OC_E_INVALID: not JSON or not an object; OC_E_NOMEM). The caller decrefs. */
json_t *conn_json_body(const char *body, size_t len, oc_error_t *err);

/* A non-empty string member of at most CONN_ID_MAX bytes without a NUL inside (which would
 * silently shorten an id), else NULL. */
const char *conn_json_id(const json_t *obj, const char *key);

/* The member `key` when it is a text persistence takes as content_text (non-empty, no NUL, at
 * most CONN_TEXT_MAX bytes), else NULL. */
const char *conn_json_text(const json_t *obj, const char *key);

/* obj as compact JSON with non-ASCII escaped, in the arena; above CONN_STRUCT_MAX only its
 * `id_key` and "type" members and "truncated": true. NULL when out of memory. */
char *conn_json_struct(oc_arena_t *arena, const json_t *obj, const char *id_key);

/* Counts a skipped event, remembering the first one's index and reason (a fixed phrase). */
void conn_batch_invalid(conn_batch_t *b, size_t index, const char *why);

/* A provider's display name as we store it: a copy in the arena when it is valid UTF-8 of at
 * most CONN_NAME_MAX bytes, else "" (also when out of memory: NULL is never returned). */
const char *conn_display_name(oc_arena_t *arena, const char *name);

/* Fills *out for an attempt whose request could not be built (nothing left: retry, internal
 * error) and returns false, what a provider's send returns then. */
bool conn_class_unbuilt(conn_class_t *out);

/* The end of a provider's send: rc is how building the request went, *res its answer (disposed
 * here either way), classified by `classify` when the request was made. The send's return. */
bool conn_class_finish(oc_err_t rc, oc_http_result_t *res,
                       void (*classify)(const oc_http_result_t *res, long timeout_ms,
                                        conn_class_t *out),
                       long timeout_ms, conn_class_t *out);

/* ConnectChannel's look-up answered at all: OC_OK, or OC_E_UNAVAILABLE "<provider>: timed out,
 * retry" (could not be reached) in ctx->err. */
oc_err_t conn_verify_reached(oc_rpc_ctx_t *ctx, const oc_http_result_t *res, const char *provider);

/* The account a look-up reported: the string members id_key and name_key of the JSON body into
 * *v (the name checked by conn_display_name). OC_E_UNAVAILABLE "<provider>: answer without an
 * id" when the id is missing or too long. */
oc_err_t conn_verified_from(oc_rpc_ctx_t *ctx, const oc_http_result_t *res, const char *id_key,
                            const char *name_key, const char *provider, conn_verified_t *v);

#endif
