/* How omnichatctl shows persistence objects: terminal-safe text, times, enum names, JSON. */
#include "render.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "omnichat/util.h"

#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */
#define ELLIPSIS "\xE2\x80\xA6"    /* U+2026 */

/* The value's name (omnichat/pb.h): "line", "auth_error"; `zero` for 0, "unknown(N)" for a
 * value this build does not know. */
static const char *enum_short(oc_arena_t *a, oc_pb_enum_t e, int v, const char *zero)
{
    const char *name = oc_pb_enum_name(e, v);
    char *out;

    if (v == 0) return zero;
    if (name != NULL) return name;
    out = oc_arena_sprintf(a, "unknown(%d)", v);
    return out != NULL ? out : "unknown";
}

const char *rnd_channel(oc_arena_t *a, int v)
{
    return enum_short(a, OC_PB_CHANNEL_TYPE, v, "unspecified");
}

const char *rnd_channel_status(oc_arena_t *a, int v)
{
    return enum_short(a, OC_PB_CHANNEL_STATUS, v, "unspecified");
}

const char *rnd_direction(oc_arena_t *a, int v)
{
    return enum_short(a, OC_PB_DIRECTION, v, "unspecified");
}

const char *rnd_sender_type(oc_arena_t *a, int v)
{
    return enum_short(a, OC_PB_SENDER_TYPE, v, "unspecified");
}

const char *rnd_content_type(oc_arena_t *a, int v)
{
    return enum_short(a, OC_PB_CONTENT_TYPE, v, "unspecified");
}

const char *rnd_message_status(oc_arena_t *a, int v)
{
    return enum_short(a, OC_PB_MESSAGE_STATUS, v, "unspecified");
}

const char *rnd_error_category(oc_arena_t *a, int v)
{
    return enum_short(a, OC_PB_ERROR_CATEGORY, v, "");
}

const char *rnd_time(int64_t ms, char *buf, size_t len)
{
    struct tm tm;
    time_t t;

    if (ms <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    t = (time_t)(ms / 1000);
    if (localtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, len, "%" PRId64, ms);
    return buf;
}

/* Length of the UTF-8 sequence starting at s (1..4), or 0 when it is not valid there. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    size_t n;

    if (s[0] < 0x80) return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        n = 2;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF)
        n = 3;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4)
        n = 4;
    else
        return 0;
    if (n > avail) return 0;
    /* oc_utf8_valid also refuses overlong forms and surrogates. */
    return oc_utf8_valid((const char *)s, n) ? n : 0;
}

static uint32_t utf8_cp(const unsigned char *s, size_t n)
{
    switch (n) {
    case 1:
        return s[0];
    case 2:
        return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* Characters that could reorder or hide what an operator reads (Trojan Source). */
static bool is_bidi_control(uint32_t cp)
{
    return (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

size_t rnd_clean(oc_buf_t *b, const char *s, size_t max_chars, const char *newline)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t len = strlen((const char *)p), total = 0, limit, count = 0;

    /* Count first, so that a cut keeps room for the ellipsis. */
    for (size_t i = 0; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) total++;
    limit = (max_chars > 0 && total > max_chars) ? max_chars - 1 : (size_t)-1;

    for (size_t i = 0; i < len && count < limit;) {
        size_t n = utf8_seq(p + i, len - i);
        uint32_t cp;

        if (n == 0) {
            oc_buf_appends(b, REPLACEMENT);
            i++;
            count++;
            continue;
        }
        cp = utf8_cp(p + i, n);
        if (cp == '\r' && i + 1 < len && p[i + 1] == '\n') {
            i++; /* CRLF is one line break */
            continue;
        }
        if (cp == '\n' || cp == '\r')
            oc_buf_appends(b, newline);
        else if (cp == '\t')
            oc_buf_appends(b, " ");
        else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F) || is_bidi_control(cp))
            oc_buf_appends(b, REPLACEMENT);
        else
            oc_buf_append(b, p + i, n);
        i += n;
        count++;
    }
    if (limit != (size_t)-1) {
        oc_buf_appends(b, ELLIPSIS);
        count++;
    }
    return count;
}

const char *rnd_cell(oc_arena_t *a, const char *s, size_t max_chars, size_t width)
{
    oc_buf_t b;
    size_t n;
    const char *out;

    oc_buf_init(&b, 1 << 20);
    n = rnd_clean(&b, s, max_chars, " ");
    while (n < width) {
        oc_buf_appends(&b, " ");
        n++;
    }
    out = b.failed == OC_OK ? oc_arena_strdup(a, b.data != NULL ? b.data : "") : NULL;
    oc_buf_dispose(&b);
    return out;
}

/* ---- JSON ----------------------------------------------------------------------------- */

/* A JSON string of s; text that is not valid UTF-8 (which persistence never returns) is
 * cleaned rather than dropped. */
static json_t *jstr(const char *s)
{
    json_t *v = json_string(s != NULL ? s : "");
    oc_buf_t b;

    if (v != NULL) return v;
    oc_buf_init(&b, 1 << 20);
    rnd_clean(&b, s, 0, "\n");
    v = json_string(b.data != NULL ? b.data : "");
    oc_buf_dispose(&b);
    return v;
}

static void set_str(json_t *o, const char *k, const char *s)
{
    json_object_set_new(o, k, jstr(s));
}

static void set_int(json_t *o, const char *k, int64_t v)
{
    json_object_set_new(o, k, json_integer((json_int_t)v));
}

json_t *rnd_json_message(oc_arena_t *a, const PB(Message) * m)
{
    json_t *o = json_object(), *atts = json_array();

    if (o == NULL || atts == NULL) {
        json_decref(o);
        json_decref(atts);
        return NULL;
    }
    set_str(o, "message_id", m->message_id);
    set_str(o, "conversation_id", m->conversation_id);
    set_str(o, "channel_account_id", m->channel_account_id);
    set_str(o, "contact_id", m->contact_id);
    set_str(o, "direction", rnd_direction(a, m->direction));
    set_str(o, "idempotency_key", m->idempotency_key);
    set_str(o, "external_message_id", m->external_message_id);
    set_str(o, "sender_type", rnd_sender_type(a, m->sender_type));
    set_str(o, "sender_id", m->sender_id);
    set_str(o, "sender_display_name", m->sender_display_name);
    set_str(o, "content_type", rnd_content_type(a, m->content_type));
    set_str(o, "content_text", m->content_text);
    set_str(o, "content_struct_json", m->content_struct_json);
    set_str(o, "status", rnd_message_status(a, m->status));
    set_str(o, "error_category", rnd_error_category(a, m->error_category));
    set_str(o, "error_detail", m->error_detail);
    set_int(o, "attempts", m->attempts);
    set_int(o, "next_attempt_at_ms", m->next_attempt_at_ms);
    set_int(o, "channel_timestamp_ms", m->channel_timestamp_ms);
    set_int(o, "created_at_ms", m->created_at_ms);
    set_int(o, "updated_at_ms", m->updated_at_ms);
    for (size_t i = 0; i < m->n_attachments; i++) {
        const PB(Attachment) *at = m->attachments[i];
        json_t *jo = json_object();

        if (jo == NULL) continue;
        set_str(jo, "attachment_id", at->attachment_id);
        set_int(jo, "ordinal", at->ordinal);
        set_str(jo, "kind", at->kind);
        set_str(jo, "url", at->url);
        set_str(jo, "mime_type", at->mime_type);
        set_int(jo, "size_bytes", at->size_bytes);
        set_str(jo, "name", at->name);
        set_str(jo, "metadata_json", at->metadata_json);
        json_array_append_new(atts, jo);
    }
    json_object_set_new(o, "attachments", atts);
    return o;
}

json_t *rnd_json_conversation(oc_arena_t *a, const PB(Conversation) * c)
{
    json_t *o = json_object();

    if (o == NULL) return NULL;
    set_str(o, "conversation_id", c->conversation_id);
    set_str(o, "channel_account_id", c->channel_account_id);
    set_str(o, "channel_type", rnd_channel(a, c->channel_type));
    set_str(o, "thread_key", c->thread_key);
    set_str(o, "contact_id", c->contact_id);
    set_int(o, "message_count", c->message_count);
    set_str(o, "last_message_preview", c->last_message_preview);
    set_int(o, "last_message_at_ms", c->last_message_at_ms);
    set_int(o, "last_activity_at_ms", c->last_activity_at_ms);
    set_int(o, "created_at_ms", c->created_at_ms);
    set_int(o, "updated_at_ms", c->updated_at_ms);
    return o;
}

json_t *rnd_json_account(oc_arena_t *a, const PB(ChannelAccount) * acc)
{
    json_t *o = json_object(), *keys = json_array();

    if (o == NULL || keys == NULL) {
        json_decref(o);
        json_decref(keys);
        return NULL;
    }
    set_str(o, "channel_account_id", acc->channel_account_id);
    set_str(o, "channel_type", rnd_channel(a, acc->channel_type));
    set_str(o, "external_account_id", acc->external_account_id);
    set_str(o, "display_name", acc->display_name);
    set_str(o, "status", rnd_channel_status(a, acc->status));
    set_str(o, "last_error_category", rnd_error_category(a, acc->last_error_category));
    set_int(o, "last_error_at_ms", acc->last_error_at_ms);
    set_int(o, "last_success_at_ms", acc->last_success_at_ms);
    set_int(o, "created_at_ms", acc->created_at_ms);
    set_int(o, "updated_at_ms", acc->updated_at_ms);
    /* Which vault keys sealed the credentials (for key rotation); never the values. */
    for (size_t i = 0; i < acc->n_credentials; i++) {
        json_t *k = json_object();

        if (k == NULL) continue;
        set_str(k, "field", acc->credentials[i]->field);
        set_str(k, "key_id", acc->credentials[i]->key_id);
        json_array_append_new(keys, k);
    }
    json_object_set_new(o, "sealed_with", keys);
    return o;
}
