/* LINE webhook: verify x-line-signature on the raw bytes, normalize, persist, then answer. */
#include "webhook.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/lru.h"
#include "line_api.h"
#include "omnichat/json_lenient.h"
#include "omnichat/log.h"
#include "omnichat/util.h"

#define CT(name) PBE(CONTENT_TYPE__CONTENT_TYPE_##name)
#define STRUCT_MAX 65536 /* persistence's content_struct_json limit */
#define TEXT_MAX 20000   /* persistence's content_text limit (bytes) */
#define ID_MAX 256
#define BATCH_MAX 100 /* messages per PersistInbound */

/* ---------- signature ---------- */

bool line_signature_valid(const char *secret, size_t secret_len, const char *body, size_t len,
                          const char *header)
{
    uint8_t want[EVP_MAX_MD_SIZE], got[64];
    unsigned int want_len = 0;
    long got_len;
    bool ok;

    if (header == NULL || secret == NULL) return false;
    got_len = oc_base64_decode(header, strlen(header), got, sizeof got);
    if (got_len != 32) return false;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)body, len, want,
             &want_len) == NULL)
        return false;
    ok = oc_ct_equal(want, want_len, got, (size_t)got_len);
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}

/* ---------- parsing ---------- */

/* A non-empty string member of at most ID_MAX bytes, else NULL. */
static const char *str_member(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    const char *s = json_string_value(v);

    /* A NUL inside (the lenient pre-pass leaves none) would silently shorten an id: refuse it. */
    if (s == NULL || s[0] == '\0' || json_string_length(v) > ID_MAX ||
        strlen(s) != json_string_length(v))
        return NULL;
    return s;
}

/* The raw message object plus the event fields that say how it arrived. */
static char *struct_json(oc_arena_t *arena, json_t *event, json_t *message)
{
    json_t *copy = json_deep_copy(message);
    json_t *v;
    char *s, *out = NULL;

    if (copy == NULL) return NULL;
    if ((v = json_object_get(event, "webhookEventId")) != NULL && json_is_string(v))
        json_object_set(copy, "webhookEventId", v);
    v = json_object_get(json_object_get(event, "deliveryContext"), "isRedelivery");
    if (v != NULL && json_is_boolean(v)) json_object_set(copy, "isRedelivery", v);
    if ((v = json_object_get(event, "mode")) != NULL && json_is_string(v))
        json_object_set(copy, "mode", v);
    s = json_dumps(copy, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s != NULL && strlen(s) > STRUCT_MAX) {
        /* Far beyond anything LINE sends; keep the identity, not the bulk. */
        free(s);
        json_t *small = json_pack("{s:O?,s:O?,s:b}", "id", json_object_get(message, "id"), "type",
                                  json_object_get(message, "type"), "truncated", 1);
        s = small != NULL ? json_dumps(small, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref(small);
    }
    if (s != NULL) out = oc_arena_strdup(arena, s);
    free(s);
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
    json_t *jtext = json_object_get(msg, "text");
    const char *stype = json_string_value(json_object_get(src, "type"));
    const char *user = str_member(src, "userId");
    const char *thread = NULL;
    const char *mid = str_member(msg, "id");
    const char *mtype = json_string_value(json_object_get(msg, "type"));
    const char *text = json_string_value(jtext);
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
        thread = str_member(src, "groupId");
    else if (strcmp(stype, "room") == 0)
        thread = str_member(src, "roomId");
    if (thread == NULL) return "source: no user, group or room id";
    it->thread_key = oc_arena_strdup(arena, thread);
    it->external_user_id = oc_arena_strdup(arena, user != NULL ? user : thread);
    it->external_message_id = oc_arena_strdup(arena, mid);
    if (mtype != NULL && strcmp(mtype, "text") == 0 && text != NULL && text[0] != '\0' &&
        strlen(text) == json_string_length(jtext) && strlen(text) <= TEXT_MAX) {
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

static void note_invalid(line_webhook_batch_t *out, size_t index, const char *why)
{
    if (out->invalid++ == 0) {
        out->first_invalid_index = index;
        out->first_invalid_reason = why;
    }
}

oc_err_t line_webhook_parse(const char *body, size_t len, oc_arena_t *arena,
                            line_webhook_batch_t *out, oc_error_t *err)
{
    json_t *root = NULL, *events, *ev;
    oc_error_t jerr;
    size_t i;
    oc_err_t rc = OC_OK;

    memset(out, 0, sizeof *out);
    oc_error_clear(&jerr);
    root = oc_json_lenient_load(body, len, &jerr);
    if (root == NULL) return oc_error_set(err, jerr.code, "%s", jerr.msg);
    if (!json_is_object(root)) {
        rc = oc_error_set(err, OC_E_INVALID, "body: not a JSON object");
        goto out;
    }
    events = json_object_get(root, "events");
    if (!json_is_array(events)) {
        rc = oc_error_set(err, OC_E_INVALID, "events: must be an array");
        goto out;
    }
    if (str_member(root, "destination") != NULL)
        out->destination = oc_arena_strdup(arena, str_member(root, "destination"));
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
            note_invalid(out, i, "type: missing");
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
                note_invalid(out, i, why);
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
static bool profile_cached(line_t *l, oc_arena_t *arena, const char *key, line_inbound_item_t *it)
{
    char *val;
    size_t len;

    if (!oc_lru_get(l->profiles, key, arena, &val, &len)) return false;
    it->display_name = val;
    it->avatar_url = strlen(val) < len ? val + strlen(val) + 1 : "";
    return true;
}

static void profile_fetch(line_t *l, oc_arena_t *arena, const oc_vault_secret_t *token,
                          const char *key, long timeout_ms, line_inbound_item_t *it)
{
    oc_http_result_t res;
    char path[128];
    json_t *root;

    snprintf(path, sizeof path, "/v2/bot/profile/%s", it->external_user_id);
    line_http_result_init(&res);
    if (line_api_get(l->api, token->data, token->len, path, "profile", timeout_ms, &res) != OC_OK) {
        oc_http_result_dispose(&res);
        return;
    }
    if (res.transport == OC_HTTP_TX_OK && res.status == 404) {
        oc_lru_put(l->profiles, key, "", 1); /* not reachable: do not ask again soon */
    } else if (res.transport == OC_HTTP_TX_OK && res.status == 200 &&
               (root = json_loadb(res.body.data, res.body.len, 0, NULL)) != NULL) {
        const char *name = json_string_value(json_object_get(root, "displayName"));
        const char *pic = json_string_value(json_object_get(root, "pictureUrl"));
        oc_buf_t v;

        name = name != NULL && strlen(name) <= LINE_NAME_MAX && oc_utf8_valid(name, strlen(name))
                   ? name
                   : "";
        pic = pic != NULL && strlen(pic) <= 2048 && strncmp(pic, "https://", 8) == 0 ? pic : "";
        oc_buf_init(&v, 4096);
        oc_buf_append(&v, name, strlen(name) + 1);
        oc_buf_append(&v, pic, strlen(pic));
        if (v.failed == OC_OK) {
            oc_lru_put(l->profiles, key, v.data, v.len);
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

/*
 * Display names from the LRU, else from LINE until `budget_end_us` (monotonic), each look-up
 * within profile-timeout-ms and the time left.
 */
static void fill_profiles(line_t *l, oc_arena_t *arena, const PB(ChannelAccount) * acc,
                          line_webhook_batch_t *b, int64_t budget_end_us)
{
    oc_vault_secret_t token = {NULL, 0};
    bool token_tried = false;
    char key[OC_UUID_STR_LEN + 80];

    for (size_t i = 0; i < b->nitems; i++) {
        line_inbound_item_t *it = &b->items[i];
        bool done = false;

        if (!safe_user_id(it->external_user_id) || it->external_user_id[0] != 'U') continue;
        for (size_t j = 0; j < i && !done; j++) /* same user earlier in this POST */
            if (strcmp(b->items[j].external_user_id, it->external_user_id) == 0) {
                it->display_name = b->items[j].display_name;
                it->avatar_url = b->items[j].avatar_url;
                done = true;
            }
        snprintf(key, sizeof key, "%s/%s", acc->channel_account_id, it->external_user_id);
        if (done || profile_cached(l, arena, key, it)) continue;
        long left = left_ms(budget_end_us);
        if (left < 20) continue; /* budget spent: empty name now, fetched on a later POST */
        if (!token_tried) {
            const PB(SealedCredential) *cred = line_account_credential(acc, "access_token");
            oc_error_t err;
            oc_error_clear(&err);
            token_tried = true;
            if (cred != NULL)
                oc_vault_open(l->vault, acc->tenant_id, acc->channel_account_id, "access_token",
                              cred->key_id, cred->ciphertext.data, cred->ciphertext.len, &token,
                              &err);
        }
        if (token.data == NULL) break;
        profile_fetch(l, arena, &token, key,
                      left < l->cfg.profile_timeout_ms ? left : (long)l->cfg.profile_timeout_ms,
                      it);
    }
    oc_vault_secret_dispose(&token);
}

/* ---------- the handler ---------- */

static void count(line_t *l, const char *outcome, size_t n)
{
    if (n > 0) oc_metric_inc(l->m_webhook_events, (const char *const[]){outcome}, (double)n);
}

/*
 * The answer to a failed persistence call after the signature passed. LINE redelivers on 5xx
 * only, so a content problem must never be a 4xx here: INVALID_ARGUMENT means our validation
 * missed something, a 500 keeps the POST for a redelivery once that is fixed.
 */
static int http_status_of(oc_err_t rc)
{
    switch (rc) {
    case OC_E_UNAVAILABLE:
    case OC_E_DEADLINE:
    case OC_E_CONFLICT:
    case OC_E_NOMEM:
        return 503;
    case OC_E_NOT_FOUND:
        return 404;
    default:
        return 500;
    }
}

/* Calls that would get less than this are not made: the answer could not arrive in time. */
#define CALL_MIN_MS 10

/* Persists every item, BATCH_MAX per call, each call within the time left before
 * deadline_us (monotonic); returns the first failure. */
static oc_err_t persist(line_t *l, oc_arena_t *arena, const char *request_id,
                        const PB(ChannelAccount) * acc, line_webhook_batch_t *b,
                        int64_t deadline_us, oc_error_t *err)
{
    for (size_t off = 0; off < b->nitems; off += BATCH_MAX) {
        size_t n = b->nitems - off < BATCH_MAX ? b->nitems - off : BATCH_MAX;
        PB(PersistInboundRequest) req = PB_INIT(PERSIST_INBOUND_REQUEST);
        PB(PersistInboundResponse) *resp = NULL;
        PB(InboundMessage) *msgs = oc_arena_alloc(arena, n * sizeof *msgs);
        PB(InboundMessage) **ptrs = oc_arena_alloc(arena, n * sizeof *ptrs);
        size_t created = 0;
        oc_err_t rc;

        if (msgs == NULL || ptrs == NULL) return oc_error_set(err, OC_E_NOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            const line_inbound_item_t *it = &b->items[off + i];
            PB(InboundMessage) init = PB_INIT(INBOUND_MESSAGE);
            msgs[i] = init;
            msgs[i].channel_account_id = acc->channel_account_id;
            msgs[i].external_user_id = (char *)it->external_user_id;
            msgs[i].contact_display_name = (char *)it->display_name;
            msgs[i].contact_avatar_url = (char *)it->avatar_url;
            msgs[i].thread_key = (char *)it->thread_key;
            msgs[i].external_message_id = (char *)it->external_message_id;
            msgs[i].idempotency_key = (char *)it->external_message_id;
            msgs[i].direction = PBE(DIRECTION__DIRECTION_INBOUND);
            msgs[i].sender_type = PBE(SENDER_TYPE__SENDER_TYPE_CONTACT);
            msgs[i].content_type = it->content_type;
            msgs[i].content_text = (char *)it->content_text;
            msgs[i].content_struct_json = (char *)it->content_struct_json;
            msgs[i].channel_timestamp_ms = it->timestamp_ms;
            ptrs[i] = &msgs[i];
        }
        req.tenant_id = acc->tenant_id;
        req.n_messages = n;
        req.messages = ptrs;
        long left = left_ms(deadline_us);
        if (left < CALL_MIN_MS)
            rc = oc_error_set(err, OC_E_UNAVAILABLE, "webhook deadline reached, retry");
        else
            rc = line_pst_call(l, (int)left, "PersistInbound", &req.base,
                               &omnichat__persistence__v1__persist_inbound_response__descriptor,
                               request_id, arena, (ProtobufCMessage **)&resp, err);
        if (rc != OC_OK) {
            count(l, "failed", b->nitems - off);
            return rc;
        }
        for (size_t i = 0; i < resp->n_results; i++)
            created += resp->results[i]->created ? 1 : 0;
        count(l, "stored", created);
        count(l, "duplicate", resp->n_results - created);
    }
    return OC_OK;
}

void line_webhook_handle(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    line_t *l = user;
    const char *id = req->path + strlen(LINE_WEBHOOK_PREFIX);
    const char *rid_hdr = oc_http_header(req, "x-request-id");
    char request_id[64];
    oc_arena_t *arena = oc_arena_create(0);
    PB(ChannelAccount) *acc = NULL;
    const PB(SealedCredential) * cred;
    oc_vault_secret_t secret = {NULL, 0};
    line_webhook_batch_t batch;
    oc_error_t err;
    bool sig_ok;
    oc_err_t rc;
    int64_t t0 = oc_mono_us();
    /* One deadline for the whole request (the body has just arrived): every call below gets
     * what is left of it, never a fresh budget of its own. */
    int64_t deadline = t0 + (int64_t)l->cfg.webhook_timeout_ms * 1000;
    long left;

    oc_error_clear(&err);
    if (rid_hdr != NULL && rid_hdr[0] != '\0' && strlen(rid_hdr) < sizeof request_id &&
        oc_utf8_valid(rid_hdr, strlen(rid_hdr)))
        snprintf(request_id, sizeof request_id, "%s", rid_hdr);
    else if (oc_uuid_v4(request_id) != OC_OK)
        request_id[0] = '\0';
    if (arena == NULL) {
        oc_http_response_error(resp, 503, "out of memory");
        return;
    }
    if (strncmp(req->path, LINE_WEBHOOK_PREFIX, strlen(LINE_WEBHOOK_PREFIX)) != 0 ||
        !oc_uuid_valid(id)) {
        oc_http_response_error(resp, 404, "unknown channel account");
        goto out;
    }
    left = left_ms(deadline);
    rc = left >= CALL_MIN_MS
             ? line_account_get(l, (int)left, NULL, id, request_id, arena, &acc, &err)
             : oc_error_set(&err, OC_E_UNAVAILABLE, "webhook deadline reached");
    if (rc == OC_E_NOT_FOUND || rc == OC_E_INVALID) {
        oc_http_response_error(resp, 404, "unknown channel account");
        goto out;
    }
    if (rc != OC_OK) {
        oc_http_response_error(resp, http_status_of(rc), "channel account lookup failed");
        goto out;
    }

    /* Authenticate the raw bytes before looking inside them. */
    cred = line_account_credential(acc, "channel_secret");
    if (cred == NULL) {
        /* Registered but never given credentials (ConnectChannel failed half-way), or they
         * were removed: nothing to check a signature with. */
        OC_WARN("webhook for an account without a channel secret", OC_LS("request_id", request_id),
                OC_LS("tenant_id", acc->tenant_id),
                OC_LS("channel_account_id", acc->channel_account_id));
        oc_http_response_error(resp, 401, "signature cannot be verified");
        goto out;
    }
    if (oc_vault_open(l->vault, acc->tenant_id, acc->channel_account_id, "channel_secret",
                      cred->key_id, cred->ciphertext.data, cred->ciphertext.len, &secret,
                      &err) != OC_OK) {
        OC_ERROR("could not unseal the channel secret", OC_LS("request_id", request_id),
                 OC_LS("tenant_id", acc->tenant_id),
                 OC_LS("channel_account_id", acc->channel_account_id),
                 OC_LS("key_id", cred->key_id));
        oc_http_response_error(resp, 500, "channel secret unavailable");
        goto out;
    }
    sig_ok = line_signature_valid(secret.data, secret.len, req->body, req->body_len,
                                  oc_http_header(req, "x-line-signature"));
    oc_vault_secret_dispose(&secret);
    if (!sig_ok) {
        count(l, "bad_signature", 1);
        oc_http_response_error(resp, 401, "invalid signature");
        goto out;
    }

    /* From here on the body is LINE's: only a body that is no JSON at all, or has no events
     * array, is a 400. A bad event is skipped, a failure of ours is a 5xx (LINE redelivers). */
    oc_error_clear(&err);
    if (line_webhook_parse(req->body, req->body_len, arena, &batch, &err) != OC_OK) {
        if (err.code == OC_E_INVALID) count(l, "unparsable", 1);
        oc_http_response_error(resp, err.code == OC_E_INVALID ? 400 : 503, err.msg);
        goto out;
    }
    count(l, "ignored", batch.ignored);
    count(l, "invalid", batch.invalid);
    if (batch.invalid > 0)
        OC_WARN("webhook events skipped as invalid", OC_LS("request_id", request_id),
                OC_LS("tenant_id", acc->tenant_id),
                OC_LS("channel_account_id", acc->channel_account_id),
                OC_LI("invalid", (long long)batch.invalid),
                OC_LI("first_index", (long long)batch.first_invalid_index),
                OC_LS("first_reason", batch.first_invalid_reason));
    if (batch.nitems > 0) {
        /* Profiles are a nicety: they may use at most half of what is left, the rest is for
         * storing the events. */
        left = left_ms(deadline);
        fill_profiles(l, arena, acc, &batch,
                      oc_mono_us() + 1000LL * (left / 2 < LINE_PROFILE_BUDGET_MS
                                                   ? left / 2
                                                   : LINE_PROFILE_BUDGET_MS));
        oc_error_clear(&err);
        rc = persist(l, arena, request_id, acc, &batch, deadline, &err);
        if (rc != OC_OK) {
            OC_WARN("webhook not persisted", OC_LS("request_id", request_id),
                    OC_LS("tenant_id", acc->tenant_id),
                    OC_LS("channel_account_id", acc->channel_account_id),
                    OC_LS("code", oc_err_name(rc)), OC_LS("detail", err.msg));
            oc_http_response_error(resp, http_status_of(rc), "could not store the events");
            goto out;
        }
    }
    oc_buf_appends(&resp->body, "{}");
    OC_DEBUG("webhook", OC_LS("request_id", request_id), OC_LS("tenant_id", acc->tenant_id),
             OC_LS("channel_account_id", acc->channel_account_id),
             OC_LI("messages", (long long)batch.nitems), OC_LI("ignored", (long long)batch.ignored),
             OC_LI("invalid", (long long)batch.invalid), OC_LI("latency_us", oc_mono_us() - t0));
out:
    oc_arena_destroy(arena);
}
