/* LINE webhook: x-line-signature over the raw bytes, normalization of message events, and
 * profile enrichment. The engine runs the request (inbound.c). */
#include "line_webhook.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/lru.h"
#include "items.h"
#include "line_api.h"
#include "omnichat/log.h"
#include "omnichat/util.h"

#define CT(name) PBE(CONTENT_TYPE__CONTENT_TYPE_##name)

/* ---------- parsing ---------- */

/* The raw message object plus the event fields that say how it arrived. */
static char *struct_json(oc_arena_t *arena, json_t *event, json_t *message)
{
    json_t *copy = json_deep_copy(message);
    json_t *v;
    char *out;

    if (copy == NULL) return NULL;
    if ((v = json_object_get(event, "webhookEventId")) != NULL && json_is_string(v))
        json_object_set(copy, "webhookEventId", v);
    v = json_object_get(json_object_get(event, "deliveryContext"), "isRedelivery");
    if (v != NULL && json_is_boolean(v)) json_object_set(copy, "isRedelivery", v);
    if ((v = json_object_get(event, "mode")) != NULL && json_is_string(v))
        json_object_set(copy, "mode", v);
    out = conn_json_struct(arena, copy, "id");
    json_decref(copy);
    return out;
}

static const char OOM[] = "out of memory";

/*
 * Fills one item from a message event. NULL when the event is usable, else why not (a fixed
 * phrase naming the field, never any of its content), or OOM.
 */
static const char *normalize(oc_arena_t *arena, json_t *ev, line_inbound_item_t *it)
{
    json_t *msg = json_object_get(ev, "message");
    json_t *src = json_object_get(ev, "source");
    json_t *ts = json_object_get(ev, "timestamp");
    const char *stype = json_string_value(json_object_get(src, "type"));
    const char *user = conn_json_id(src, "userId");
    const char *thread = NULL;
    const char *mid = conn_json_id(msg, "id");
    const char *mtype = json_string_value(json_object_get(msg, "type"));
    const char *text = conn_json_text(msg, "text");
    json_int_t t;

    if (!json_is_object(msg)) return "message: missing";
    if (mid == NULL) return "message.id: missing or too long";
    if (!json_is_object(src) || stype == NULL) return "source: missing";
    /* Integers only: a real is not a LINE timestamp, and casting a huge one is undefined. */
    if (!json_is_integer(ts)) return "timestamp: not an integer";
    t = json_integer_value(ts);
    if (t <= 0 || t > LINE_TIMESTAMP_MAX_MS) return "timestamp: out of range";
    it->timestamp_ms = (int64_t)t;
    if (strcmp(stype, "user") == 0)
        thread = user;
    else if (strcmp(stype, "group") == 0)
        thread = conn_json_id(src, "groupId");
    else if (strcmp(stype, "room") == 0)
        thread = conn_json_id(src, "roomId");
    if (thread == NULL) return "source: no user, group or room id";
    it->thread_key = oc_arena_strdup(arena, thread);
    it->external_user_id = oc_arena_strdup(arena, user != NULL ? user : thread);
    it->external_message_id = oc_arena_strdup(arena, mid);
    if (mtype != NULL && strcmp(mtype, "text") == 0 && text != NULL) {
        it->content_type = CT(TEXT);
        it->content_text = oc_arena_strdup(arena, text);
    } else {
        it->content_type = CT(UNSUPPORTED);
        it->content_text = "";
    }
    it->content_struct_json = struct_json(arena, ev, msg);
    it->display_name = "";
    it->avatar_url = "";
    if (it->thread_key == NULL || it->external_user_id == NULL || it->external_message_id == NULL ||
        it->content_text == NULL || it->content_struct_json == NULL)
        return OOM;
    return NULL;
}

oc_err_t line_webhook_parse(const char *body, size_t len, oc_arena_t *arena,
                            line_webhook_batch_t *out, oc_error_t *err)
{
    json_t *root = NULL, *events, *ev;
    size_t i;
    oc_err_t rc = OC_OK;

    memset(out, 0, sizeof *out);
    if ((root = conn_json_body(body, len, err)) == NULL) return err->code;
    events = json_object_get(root, "events");
    if (!json_is_array(events)) {
        rc = oc_error_set(err, OC_E_INVALID, "events: must be an array");
        goto out;
    }
    out->items = oc_arena_alloc(arena, (json_array_size(events) + 1) * sizeof *out->items);
    if (out->items == NULL) {
        rc = oc_error_set(err, OC_E_NOMEM, "out of memory");
        goto out;
    }
    json_array_foreach(events, i, ev)
    {
        const char *type = json_string_value(json_object_get(ev, "type"));
        const char *why;

        if (type == NULL) {
            conn_batch_invalid(out, i, "type: missing");
        } else if (strcmp(type, "message") != 0) {
            out->ignored++;
        } else {
            line_inbound_item_t *it = &out->items[out->nitems];
            memset(it, 0, sizeof *it);
            why = normalize(arena, ev, it);
            if (why == OOM) {
                rc = oc_error_set(err, OC_E_NOMEM, "out of memory"); /* not the event's fault */
                goto out;
            }
            if (why == NULL)
                out->nitems++;
            else
                conn_batch_invalid(out, i, why);
        }
    }
out:
    json_decref(root);
    return rc;
}

/* ---------- profiles (best effort) ---------- */

static bool safe_user_id(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i])) return false;
    return true;
}

/* Cache value: display name, NUL, picture URL. */
static bool profile_cached(line_state_t *st, oc_arena_t *arena, const char *key,
                           line_inbound_item_t *it)
{
    char *val;
    size_t len;

    if (!oc_lru_get(st->profiles, key, arena, &val, &len)) return false;
    it->display_name = val;
    it->avatar_url = strlen(val) < len ? val + strlen(val) + 1 : "";
    return true;
}

static void profile_fetch(conn_t *c, oc_arena_t *arena, const oc_vault_secret_t *token,
                          const char *key, long timeout_ms, line_inbound_item_t *it)
{
    oc_http_result_t res;
    char path[128];
    json_t *root;

    snprintf(path, sizeof path, "/v2/bot/profile/%s", it->external_user_id);
    line_http_result_init(&res);
    if (line_api_get(c, token->data, token->len, path, "profile", timeout_ms, &res) != OC_OK) {
        oc_http_result_dispose(&res);
        return;
    }
    if (res.transport == OC_HTTP_TX_OK && res.status == 404) {
        oc_lru_put(((line_state_t *)c->provider_state)->profiles, key, "",
                   1); /* not reachable: do not ask again soon */
    } else if (res.transport == OC_HTTP_TX_OK && res.status == 200 &&
               (root = json_loadb(res.body.data, res.body.len, 0, NULL)) != NULL) {
        const char *name = json_string_value(json_object_get(root, "displayName"));
        const char *pic = json_string_value(json_object_get(root, "pictureUrl"));
        oc_buf_t v;

        name = conn_display_name(arena, name);
        pic = pic != NULL && strlen(pic) <= 2048 && strncmp(pic, "https://", 8) == 0 ? pic : "";
        oc_buf_init(&v, 4096);
        oc_buf_append(&v, name, strlen(name) + 1);
        oc_buf_append(&v, pic, strlen(pic));
        if (v.failed == OC_OK) {
            oc_lru_put(((line_state_t *)c->provider_state)->profiles, key, v.data, v.len);
            it->display_name = oc_arena_strdup(arena, name);
            it->avatar_url = oc_arena_strdup(arena, pic);
            if (it->display_name == NULL || it->avatar_url == NULL)
                it->display_name = it->avatar_url = "";
        }
        oc_buf_dispose(&v);
        json_decref(root);
    }
    oc_http_result_dispose(&res);
}

/* Milliseconds left before a monotonic deadline (0 when it passed). */
static long left_ms(int64_t deadline_us)
{
    int64_t d = (deadline_us - oc_mono_us()) / 1000;

    return d > 0 ? (long)d : 0;
}

void line_enrich(conn_t *c, oc_arena_t *arena, const PB(ChannelAccount) * acc, conn_item_t *items,
                 size_t n, int64_t budget_end_us)
{
    line_state_t *st = c->provider_state;
    const line_config_t *lc = conn_provider_config(c);
    oc_vault_secret_t token = {NULL, 0};
    bool token_tried = false;
    char key[OC_UUID_STR_LEN + 80];
    int64_t cap = oc_mono_us() + 1000LL * LINE_PROFILE_BUDGET_MS;

    if (budget_end_us > cap) budget_end_us = cap;
    for (size_t i = 0; i < n; i++) {
        conn_item_t *it = &items[i];
        bool done = false;

        if (!safe_user_id(it->external_user_id) || it->external_user_id[0] != 'U') continue;
        for (size_t j = 0; j < i && !done; j++) /* same user earlier in this POST */
            if (strcmp(items[j].external_user_id, it->external_user_id) == 0) {
                it->display_name = items[j].display_name;
                it->avatar_url = items[j].avatar_url;
                done = true;
            }
        snprintf(key, sizeof key, "%s/%s", acc->channel_account_id, it->external_user_id);
        if (done || profile_cached(st, arena, key, it)) continue;
        long left = left_ms(budget_end_us);
        if (left < 20) continue; /* budget spent: empty name now, fetched on a later POST */
        if (!token_tried) {
            const PB(SealedCredential) *cred = conn_account_credential(acc, c->p->token_field);
            oc_error_t err;
            oc_error_clear(&err);
            token_tried = true;
            if (cred != NULL)
                oc_vault_open(c->vault, acc->tenant_id, acc->channel_account_id, c->p->token_field,
                              cred->key_id, cred->ciphertext.data, cred->ciphertext.len, &token,
                              &err);
        }
        if (token.data == NULL) break;
        profile_fetch(c, arena, &token, key,
                      left < lc->profile_timeout_ms ? left : (long)lc->profile_timeout_ms, it);
    }
    oc_vault_secret_dispose(&token);
}

bool line_request_signed(const char *secret, size_t secret_len, const oc_http_request_t *req)
{
    return line_signature_valid(secret, secret_len, req->body, req->body_len,
                                oc_http_header(req, "x-line-signature"));
}

oc_err_t line_parse(const char *body, size_t len, oc_arena_t *arena, conn_batch_t *out,
                    oc_error_t *err)
{
    return line_webhook_parse(body, len, arena, out, err);
}
