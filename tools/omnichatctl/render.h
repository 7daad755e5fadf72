/* How omnichatctl shows persistence objects: terminal-safe text, times, enum names, JSON. */
#ifndef RENDER_H
#define RENDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl.h"
#include "omnichat/buf.h"

/* Lowercase short names of enum values ("line", "outbound", "auth_error"); "" for the zero
 * value of ErrorCategory, "unspecified" for the other zero values, "unknown(N)" for values
 * this build does not know. The strings are static or in `a`. */
const char *rnd_channel(oc_arena_t *a, int v);
const char *rnd_channel_status(oc_arena_t *a, int v);
const char *rnd_direction(oc_arena_t *a, int v);
const char *rnd_sender_type(oc_arena_t *a, int v);
const char *rnd_content_type(oc_arena_t *a, int v);
const char *rnd_message_status(oc_arena_t *a, int v);
const char *rnd_error_category(oc_arena_t *a, int v);

/* "2026-01-31 23:59:07" in local time (TZ decides), "-" for 0. buf needs 32 bytes. */
const char *rnd_time(int64_t ms, char *buf, size_t len);

/*
 * Appends text that came from outside (customers, providers) so that it cannot drive the
 * terminal: C0/C1 control characters, DEL and the bidirectional-override characters become
 * U+FFFD, invalid UTF-8 bytes too. A newline becomes `newline` (e.g. " " in a table cell,
 * "\n    " in a chat log); a tab becomes a space. At most max_chars code points are kept
 * (0: no limit); a cut adds "…". Returns the number of code points appended.
 */
size_t rnd_clean(oc_buf_t *b, const char *s, size_t max_chars, const char *newline);
/* rnd_clean into a fresh string in `a`, padded with spaces to `width` code points (0: no
 * padding). NULL on OOM. */
const char *rnd_cell(oc_arena_t *a, const char *s, size_t max_chars, size_t width);

/* JSON views (new references; enum values as rnd_* names; times as *_ms integers). Channel
 * accounts never carry credentials: only the key ids of the sealed values are shown. */
json_t *rnd_json_message(oc_arena_t *a, const PB(Message) * m);
json_t *rnd_json_conversation(oc_arena_t *a, const PB(Conversation) * c);
json_t *rnd_json_account(oc_arena_t *a, const PB(ChannelAccount) * acc);

#endif
