/* The lenient JSON pre-pass: provider bodies that are JSON but that jansson alone would refuse. */
#ifndef OMNICHAT_JSON_LENIENT_H
#define OMNICHAT_JSON_LENIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"

#define OC_JSON_DEPTH_MAX 64 /* jansson's parser recurses: deeper bodies are refused first */

/*
 * True when no object or array in s is nested deeper than depth_max, counting outside strings.
 * Exact for well-formed JSON; for anything else the answer does not matter, jansson refuses it.
 * Pure.
 */
bool oc_json_depth_ok(const char *s, size_t n, int depth_max);

/*
 * Copies body into out (which should allow 3 * len + 16 bytes), making parseable what jansson
 * would refuse although it is JSON: the escape \u0000 becomes \uFFFD (jansson keeps NUL only
 * with JSON_ALLOW_NUL and never in a key, PostgreSQL's jsonb refuses it anywhere, and a C string
 * would end there), and a number jansson cannot hold (an integer beyond int64, a real beyond
 * double) becomes a string of its characters, so the item that carries it is refused for that
 * field rather than the whole body. False when nested deeper than OC_JSON_DEPTH_MAX or when out
 * failed (out->failed tells OC_E_NOMEM from OC_E_TOO_LARGE). Pure.
 */
bool oc_json_lenient_copy(const char *body, size_t len, oc_buf_t *out);

/*
 * oc_json_lenient_copy, then json_loadb; duplicate keys are accepted (the last one wins), as
 * JSON allows. A new reference, or NULL with OC_E_INVALID "body: not valid JSON" (also for
 * an empty or too deeply nested body) or OC_E_NOMEM. Thread-safe.
 */
json_t *oc_json_lenient_load(const char *body, size_t len, oc_error_t *err);

#endif
