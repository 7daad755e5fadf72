/* Meta webhook: the hub.challenge subscription check, X-Hub-Signature-256 over the raw bytes, and
 * the normalization of messaging[] events of Pages and Instagram accounts. The engine runs the
 * request (inbound.c) and routes each item by its entry id. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "items.h"
#include "meta.h"
#include "meta_wire.h"
#include "omnichat/util.h"

#define CT(name) PBE(CONTENT_TYPE__CONTENT_TYPE_##name)
#define CHALLENGE_MAX 256

static const char OOM[] = "out of memory";

/* ---------- subscription check ---------- */

static bool printable(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e) return false;
    return true;
}

void meta_webhook_get(conn_t *c, const oc_http_request_t *req, oc_http_response_t *resp)
{
    const meta_config_t *mc = conn_provider_config(c);
    const char *mode = oc_http_query(req, "hub.mode");
    const char *token = oc_http_query(req, "hub.verify_token");
    const char *challenge = oc_http_query(req, "hub.challenge");
    bool ok = mode != NULL && strcmp(mode, "subscribe") == 0 && token != NULL &&
              mc->verify_token != NULL && mc->verify_token[0] != '\0';

    /* Compared in constant time, and only after everything else is known to be in order. */
    ok = oc_ct_equal(token != NULL ? token : "", token != NULL ? strlen(token) : 0,
                     mc->verify_token != NULL ? mc->verify_token : "",
                     mc->verify_token != NULL ? strlen(mc->verify_token) : 0) &&
         ok;
    if (!ok || challenge == NULL || challenge[0] == '\0' || strlen(challenge) > CHALLENGE_MAX ||
        !printable(challenge)) {
        oc_http_response_error(resp, 403, "verification failed");
        return;
    }
    resp->content_type = "text/plain";
    oc_buf_appends(&resp->body, challenge);
}

bool meta_request_signed(const char *secret, size_t secret_len, const oc_http_request_t *req)
{
    return meta_signature_valid(secret, secret_len, req->body, req->body_len,
                                oc_http_header(req, "x-hub-signature-256"));
}

/* ---------- parsing ---------- */

static char *thread_of(oc_arena_t *arena, const char *account, const char *user)
{
    size_t a = strlen(account), u = strlen(user);
    char *t = oc_arena_alloc(arena, a + u + 2);

    if (t == NULL) return NULL;
    memcpy(t, account, a);
    t[a] = ':';
    memcpy(t + a + 1, user, u + 1);
    return t;
}

/*
 * Fills one item from a messaging[] event carrying a message. NULL when usable, else why not
 * (a fixed phrase naming the field, never its content), or OOM.
 */
static const char *normalize(oc_arena_t *arena, const char *account, json_t *ev, conn_item_t *it)
{
    json_t *msg = json_object_get(ev, "message");
    json_t *ts = json_object_get(ev, "timestamp");
    const char *sender = conn_json_id(json_object_get(ev, "sender"), "id");
    const char *recipient = conn_json_id(json_object_get(ev, "recipient"), "id");
    const char *mid = conn_json_id(msg, "mid");
    const char *text = conn_json_text(msg, "text");
    const char *user;
    json_int_t t;

    if (mid == NULL) return "message.mid: missing or too long";
    if (sender == NULL || recipient == NULL) return "sender/recipient: missing id";
    if (!json_is_integer(ts)) return "timestamp: not an integer";
    t = json_integer_value(ts);
    if (t <= 0 || t > CONN_TIMESTAMP_MAX_MS) return "timestamp: out of range";
    it->timestamp_ms = (int64_t)t;
    it->echo = json_is_true(json_object_get(msg, "is_echo"));
    /* An echo goes from the Page to the person: the thread is still (account, person). */
    user = it->echo ? recipient : sender;
    if (it->echo) {
        const char *meta = json_string_value(json_object_get(msg, "metadata"));
        it->echo_message_id = meta != NULL ? oc_arena_strdup(arena, meta) : "";
        it->direction = PBE(DIRECTION__DIRECTION_OUTBOUND);
        it->sender_type = PBE(SENDER_TYPE__SENDER_TYPE_AGENT);
    }
    it->thread_key = thread_of(arena, account, user);
    it->external_user_id = oc_arena_strdup(arena, user);
    it->external_message_id = oc_arena_strdup(arena, mid);
    if (text != NULL) {
        it->content_type = CT(TEXT);
        it->content_text = oc_arena_strdup(arena, text);
    } else {
        it->content_type = CT(UNSUPPORTED); /* attachments, stickers, shares: kept raw */
        it->content_text = "";
    }
    it->content_struct_json = conn_json_struct(arena, msg, "mid");
    it->display_name = "";
    it->avatar_url = "";
    if (it->thread_key == NULL || it->external_user_id == NULL || it->external_message_id == NULL ||
        it->content_text == NULL || it->content_struct_json == NULL ||
        (it->echo && it->echo_message_id == NULL))
        return OOM;
    return NULL;
}

/* A delivery {mids?, watermark} or read {watermark} event of the person `sender` as a receipt
 * for the thread (account, sender). NULL when usable, else why not, or OOM. */
static const char *normalize_receipt(oc_arena_t *arena, const char *account, json_t *ev,
                                     conn_item_t *it)
{
    json_t *d = json_object_get(ev, "delivery"), *r = d != NULL ? d : json_object_get(ev, "read");
    json_t *wm = json_object_get(r, "watermark"), *mids = json_object_get(d, "mids"), *v;
    const char *sender = conn_json_id(json_object_get(ev, "sender"), "id");
    size_t i;

    if (sender == NULL) return "sender.id: missing";
    if (wm != NULL && (!json_is_integer(wm) || json_integer_value(wm) < 0 ||
                       json_integer_value(wm) > CONN_TIMESTAMP_MAX_MS))
        return "watermark: not a timestamp";
    if (json_array_size(mids) > 100) return "delivery.mids: more than 100";
    it->receipt = d != NULL ? PBE(MESSAGE_STATUS__MESSAGE_STATUS_DELIVERED)
                            : PBE(MESSAGE_STATUS__MESSAGE_STATUS_READ);
    it->watermark_ms = wm != NULL ? (int64_t)json_integer_value(wm) : 0;
    it->thread_key = thread_of(arena, account, sender);
    it->receipt_mids = oc_arena_alloc(arena, (json_array_size(mids) + 1) * sizeof(char *));
    if (it->thread_key == NULL || it->receipt_mids == NULL) return OOM;
    json_array_foreach(mids, i, v)
    {
        const char *m = json_string_value(v);
        if (m == NULL || m[0] == '\0' || strlen(m) > CONN_ID_MAX) continue;
        if ((it->receipt_mids[it->n_receipt_mids++] = oc_arena_strdup(arena, m)) == NULL)
            return OOM;
    }
    if (it->watermark_ms == 0 && it->n_receipt_mids == 0) return "receipt: no watermark or mids";
    return NULL;
}

/* Items of one entry. OC_OK, or OC_E_NOMEM with err. */
static oc_err_t parse_entry(oc_arena_t *arena, int channel_type, json_t *entry, size_t *index,
                            conn_batch_t *out, oc_error_t *err)
{
    const char *id = conn_json_id(entry, "id");
    json_t *events = json_object_get(entry, "messaging"), *ev;
    size_t i;

    /* Threads another app controls (handover protocol): acknowledged, not ours to store. */
    out->ignored += json_array_size(json_object_get(entry, "standby"));
    if (id == NULL) {
        conn_batch_invalid(out, *index, "entry.id: missing");
        (*index)++;
        return OC_OK;
    }
    json_array_foreach(events, i, ev)
    {
        conn_item_t *it = &out->items[out->nitems];
        const char *why;

        (*index)++;
        bool receipt = json_is_object(json_object_get(ev, "delivery")) ||
                       json_is_object(json_object_get(ev, "read"));
        if (!json_is_object(json_object_get(ev, "message")) && !receipt) {
            /* postback, reaction, referral, ...: acknowledged and counted. */
            out->ignored++;
            continue;
        }
        memset(it, 0, sizeof *it);
        it->channel_type = channel_type;
        it->route_id = oc_arena_strdup(arena, id);
        why = it->route_id == NULL ? OOM
              : receipt            ? normalize_receipt(arena, id, ev, it)
                                   : normalize(arena, id, ev, it);
        if (why == OOM) return oc_error_set(err, OC_E_NOMEM, "out of memory");
        if (why == NULL)
            out->nitems++;
        else
            conn_batch_invalid(out, *index - 1, why);
    }
    return OC_OK;
}

oc_err_t meta_parse(const char *body, size_t len, oc_arena_t *arena, conn_batch_t *out,
                    oc_error_t *err)
{
    json_t *root, *entries, *entry;
    const char *object;
    size_t i, total = 0, index = 0;
    int type;
    oc_err_t rc = OC_OK;

    memset(out, 0, sizeof *out);
    if ((root = conn_json_body(body, len, err)) == NULL) return err->code;
    object = json_string_value(json_object_get(root, "object"));
    entries = json_object_get(root, "entry");
    if (object == NULL || !json_is_array(entries)) {
        rc = oc_error_set(err, OC_E_INVALID, "body: needs \"object\" and an \"entry\" array");
        goto out;
    }
    if (strcmp(object, "page") == 0) {
        type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK);
    } else if (strcmp(object, "instagram") == 0) {
        type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM);
    } else {
        out->ignored = json_array_size(entries); /* another product's subscription */
        goto out;
    }
    json_array_foreach(entries, i, entry) total +=
        json_array_size(json_object_get(entry, "messaging"));
    out->items = oc_arena_alloc(arena, (total + 1) * sizeof *out->items);
    if (out->items == NULL) {
        rc = oc_error_set(err, OC_E_NOMEM, "out of memory");
        goto out;
    }
    json_array_foreach(entries, i, entry)
    {
        if ((rc = parse_entry(arena, type, entry, &index, out, err)) != OC_OK) goto out;
    }
out:
    json_decref(root);
    return rc;
}
