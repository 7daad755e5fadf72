/* The simulated LINE Messaging API: POST /v2/bot/message/push, GET /v2/bot/info, GET profile. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "lsim_internal.h"

/* Bodies LINE is documented (or its SDK fixtures show) to send. */
#define MSG_INVALID_TOKEN \
    "Authentication failed due to the following reason: invalid token. Confirm that the " \
    "access token in the authorization header is valid."
#define MSG_NO_AUTH \
    "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS " \
    "TOKEN>'"
#define MSG_FORBIDDEN "Access to this API is not available for your account"
#define MSG_RATE_LIMIT "The API rate limit has been exceeded. Try again later."
#define MSG_QUOTA "You have reached your monthly limit."
#define MSG_NOT_FOUND "Not found"
#define MSG_RETRY_ACCEPTED "The retry key is already accepted"
#define MSG_FAILED_TO_SEND "Failed to send messages"
/* Wording of the simulator where LINE's text is not documented. */
#define MSG_INTERNAL "An internal server error occurred"
#define MSG_TOO_LARGE "Request Entity Too Large"
#define MSG_BAD_JSON "The request body could not be parsed as JSON"
#define MSG_BAD_RETRY_KEY "The value of the X-Line-Retry-Key header must be a UUID"
#define MSG_RETRY_UNSUPPORTED "The X-Line-Retry-Key header is not supported by this API"
#define MSG_METHOD "Method Not Allowed"

#define PUSH_PATH "/v2/bot/message/push"
#define INFO_PATH "/v2/bot/info"
#define PROFILE_PREFIX "/v2/bot/profile/"
#define MAX_TEXT_UTF16 5000
#define MAX_MESSAGES 5

/* What a handler decided to answer; written to the response only at the very end so that an
 * injected fault can still replace it. */
typedef struct answer {
    int status;
    json_t *body; /* owned */
    char accepted_id[OC_UUID_STR_LEN + 1];
    bool drop;
} answer_t;

/* Facts about one request, kept for the request log. */
typedef struct call {
    char request_id[OC_UUID_STR_LEN + 1];
    const char *retry_key;
    int64_t received_ms;
    bool have_fault;
    sim_fault_t fault;
    char bot_user_id[SIM_ID_MAX];
    bool executed;
    bool retry_conflict;
    bool retry_body_differs;
} call_t;

static void answer_msg(answer_t *a, int status, const char *msg)
{
    json_decref(a->body);
    a->status = status;
    a->body = json_pack("{s:s}", "message", msg);
    a->accepted_id[0] = '\0';
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void fault_answer(const sim_fault_t *f, answer_t *a)
{
    if (f->drop) {
        a->drop = true;
        return;
    }
    const char *msg = f->message;
    if (!msg[0]) {
        switch (f->status) {
        case 401:
            msg = MSG_INVALID_TOKEN;
            break;
        case 403:
            msg = MSG_FORBIDDEN;
            break;
        case 404:
            msg = MSG_NOT_FOUND;
            break;
        case 413:
            msg = MSG_TOO_LARGE;
            break;
        case 429:
            msg = f->kind == LSIM_KIND_QUOTA ? MSG_QUOTA : MSG_RATE_LIMIT;
            break;
        case 400:
            msg = MSG_FAILED_TO_SEND;
            break;
        default:
            msg = MSG_INTERNAL;
            break;
        }
    }
    answer_msg(a, f->status, msg);
}

/* Accepts "Bearer <token>" (scheme case-insensitive, as RFC 6750 says) of a known bot. */
static bool authenticate(lsim_t *s, const oc_http_request_t *req, call_t *c, sim_account_t *bot,
                         answer_t *a)
{
    const char *h = oc_http_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        answer_msg(a, 401, MSG_NO_AUTH);
        return false;
    }
    const char *tok = h + 7;
    while (*tok == ' ')
        tok++;
    if (!sim_find_account(&s->core, tok, strlen(tok), bot)) {
        answer_msg(a, 401, MSG_INVALID_TOKEN);
        return false;
    }
    snprintf(c->bot_user_id, sizeof c->bot_user_id, "%s", bot->user_id);
    return true;
}

/* UTF-16 code units of valid UTF-8 (jansson has validated it): one per character, two for a
 * 4-byte sequence, which is what LINE counts for its 5000 limit. */
static size_t utf16_units(const char *s, size_t n)
{
    size_t units = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch & 0xC0) != 0x80) units += ch >= 0xF0 ? 2 : 1;
    }
    return units;
}

static bool is_line_id(const char *s, const char *prefixes)
{
    if (!s || !strchr(prefixes, s[0]) || strlen(s) != 33) return false;
    for (int i = 1; i < 33; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f')) return false;
    return true;
}

static void detail(json_t *details, const char *property, const char *msg)
{
    json_array_append_new(details, json_pack("{s:s, s:s}", "message", msg, "property", property));
}

/* Checks a push body the way LINE's validator reports it: every problem, with its property. */
static void validate_push(const json_t *root, json_t *details)
{
    const json_t *to = json_object_get(root, "to");
    if (!json_is_string(to) || json_string_length(to) == 0)
        detail(details, "to", "must be specified");

    const json_t *msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs)) {
        detail(details, "messages", "must be specified");
        return;
    }
    size_t n = json_array_size(msgs);
    if (n < 1 || n > MAX_MESSAGES) {
        detail(details, "messages", "Size must be between 1 and 5");
        return;
    }
    char prop[64];
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(msgs, i);
        snprintf(prop, sizeof prop, "messages[%zu]", i);
        if (!json_is_object(m)) {
            detail(details, prop, "must be an object");
            continue;
        }
        const char *type = json_string_value(json_object_get(m, "type"));
        snprintf(prop, sizeof prop, "messages[%zu].type", i);
        if (!type) {
            detail(details, prop, "must be specified");
            continue;
        }
        if (strcmp(type, "text") != 0) {
            /* Other LINE types exist; the simulator models text only and says so. */
            detail(details, prop,
                   "Must be one of the following values: [text] (the simulator supports text "
                   "messages only)");
            continue;
        }
        const json_t *text = json_object_get(m, "text");
        snprintf(prop, sizeof prop, "messages[%zu].text", i);
        if (!json_is_string(text) || json_string_length(text) == 0) {
            detail(details, prop, "must be specified");
            continue;
        }
        if (utf16_units(json_string_value(text), json_string_length(text)) > MAX_TEXT_UTF16)
            detail(details, prop, "Length must be between 0 and 5000");
    }
}

static json_t *new_sent_messages(lsim_t *s, size_t n)
{
    json_t *sent = json_array();
    for (size_t i = 0; i < n && sent; i++) {
        char id[24];
        uint8_t raw[32];
        char quote[64];
        lsim__message_id(s, id);
        if (RAND_bytes(raw, sizeof raw) != 1) memset(raw, (int)i, sizeof raw);
        oc_base64url_encode(raw, sizeof raw, quote);
        json_array_append_new(sent, json_pack("{s:s, s:s}", "id", id, "quoteToken", quote));
    }
    return sent;
}

static void record_delivery(lsim_t *s, const call_t *c, const json_t *root, const json_t *sent,
                            bool delivered)
{
    const char *to = json_string_value(json_object_get(root, "to"));
    json_t *texts = json_array();
    json_t *msgs = json_object_get(root, "messages"), *m;
    size_t i;
    json_array_foreach(msgs, i, m) json_array_append(texts, json_object_get(m, "text"));
    json_t *rec = json_pack("{s:I, s:s, s:s, s:s, s:o, s:s?, s:O, s:b}", "time_ms",
                            (json_int_t)c->received_ms, "request_id", c->request_id, "bot_user_id",
                            c->bot_user_id, "to", to, "texts", texts, "retry_key", c->retry_key,
                            "sentMessages", sent, "delivered", delivered);
    if (!rec) return;
    char *json = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (json) sim_record(&s->core, &s->core.deliveries, strdup(to), json, strlen(json));
}

static void push(lsim_t *s, const oc_http_request_t *req, call_t *c, answer_t *a)
{
    json_t *root = NULL, *details = NULL, *sent = NULL;
    bool reserved = false;
    sim_account_t bot;

    if (req->body_len > LSIM_MAX_PUSH_BODY) {
        answer_msg(a, 413, MSG_TOO_LARGE);
        goto out;
    }
    if (!authenticate(s, req, c, &bot, a)) goto out;
    if (c->retry_key && !oc_uuid_valid(c->retry_key)) {
        answer_msg(a, 400, MSG_BAD_RETRY_KEY);
        goto out;
    }
    json_error_t jerr;
    root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        answer_msg(a, 400, MSG_BAD_JSON);
        goto out;
    }
    details = json_array();
    validate_push(root, details);
    if (json_array_size(details) > 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "The request body has %zu error(s)", json_array_size(details));
        answer_msg(a, 400, msg);
        json_object_set(a->body, "details", details);
        goto out;
    }
    const char *to = json_string_value(json_object_get(root, "to"));
    if (!is_line_id(to, "UCR")) {
        answer_msg(a, 400, MSG_FAILED_TO_SEND);
        goto out;
    }

    if (c->retry_key) {
        uint8_t sha[32];
        char accepted[OC_UUID_STR_LEN + 1];
        char *prev_sent = NULL;
        sim_sha256(req->body, req->body_len, sha);
        if (lsim__key_reserve(s, bot.user_id, c->retry_key, sha, accepted, &prev_sent,
                              &c->retry_body_differs) == LSIM_KEY_ACCEPTED) {
            answer_msg(a, 409, MSG_RETRY_ACCEPTED);
            json_t *orig = prev_sent ? json_loads(prev_sent, 0, NULL) : NULL;
            json_object_set_new(a->body, "sentMessages", orig ? orig : json_array());
            memcpy(a->accepted_id, accepted, sizeof accepted);
            c->retry_conflict = true;
            free(prev_sent);
            goto out;
        }
        reserved = true;
    }
    /* A slow provider: the key is in flight now, so a concurrent retry has to wait. */
    if (c->have_fault && c->fault.hold_ms > 0) sleep_ms(c->fault.hold_ms);

    sent = new_sent_messages(s, json_array_size(json_object_get(root, "messages")));
    sim_profile_t prof;
    bool blocked = sim_find_profile(&s->core, to, &prof) && prof.blocked;
    record_delivery(s, c, root, sent, !blocked);
    c->executed = true;
    if (reserved) {
        char *sent_json = json_dumps(sent, JSON_COMPACT);
        lsim__key_commit(s, bot.user_id, c->retry_key, c->request_id, sent_json ? sent_json : "[]");
        free(sent_json);
        reserved = false;
    }
    json_decref(a->body);
    a->status = 200;
    a->body = json_pack("{s:O}", "sentMessages", sent);
out:
    /* Not executed: the key was not consumed, a retry may execute it. */
    if (reserved) lsim__key_abort(s, bot.user_id, c->retry_key);
    json_decref(sent);
    json_decref(details);
    json_decref(root);
}

static void bot_info(lsim_t *s, const oc_http_request_t *req, call_t *c, answer_t *a)
{
    sim_account_t bot;
    if (!authenticate(s, req, c, &bot, a)) return;
    json_decref(a->body);
    a->status = 200;
    a->body = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "userId", bot.user_id, "basicId",
                        bot.basic_id, "displayName", bot.display_name, "pictureUrl",
                        bot.picture_url, "chatMode", "bot", "markAsReadMode", "manual");
}

static void profile(lsim_t *s, const oc_http_request_t *req, call_t *c, answer_t *a)
{
    sim_account_t bot;
    if (!authenticate(s, req, c, &bot, a)) return;
    const char *uid = req->path + strlen(PROFILE_PREFIX);
    sim_profile_t p;
    json_t *body = NULL;
    if (sim_find_profile(&s->core, uid, &p)) {
        if (p.not_found) {
            answer_msg(a, 404, MSG_NOT_FOUND);
            return;
        }
        body = json_pack("{s:s, s:s}", "displayName", p.display_name, "userId", p.user_id);
        /* LINE leaves out optional fields a user has not set; so do we. */
        if (body && p.picture_url[0])
            json_object_set_new(body, "pictureUrl", json_string(p.picture_url));
        if (body && p.status_message[0])
            json_object_set_new(body, "statusMessage", json_string(p.status_message));
        if (body && p.language[0]) json_object_set_new(body, "language", json_string(p.language));
    } else if (is_line_id(uid, "U")) {
        /* Deterministic, so a test can predict the name without any setup. */
        char name[16], url[128];
        snprintf(name, sizeof name, "User %s", uid + 27);
        snprintf(url, sizeof url, "https://profile.line-scdn.net/line-sim/%s", uid);
        body =
            json_pack("{s:s, s:s, s:s, s:s, s:s}", "displayName", name, "userId", uid, "pictureUrl",
                      url, "statusMessage", "Hello from the LINE simulator", "language", "en");
    } else {
        answer_msg(a, 404, MSG_NOT_FOUND);
        return;
    }
    json_decref(a->body);
    a->status = 200;
    a->body = body;
}

static void dispatch(lsim_t *s, const oc_http_request_t *req, call_t *c, answer_t *a)
{
    bool is_push = strcmp(req->path, PUSH_PATH) == 0;
    bool is_info = strcmp(req->path, INFO_PATH) == 0;
    bool is_profile = strncmp(req->path, PROFILE_PREFIX, strlen(PROFILE_PREFIX)) == 0 &&
                      req->path[strlen(PROFILE_PREFIX)] != '\0' &&
                      !strchr(req->path + strlen(PROFILE_PREFIX), '/');
    if (!is_push && !is_info && !is_profile) {
        answer_msg(a, 404, MSG_NOT_FOUND);
        return;
    }
    const char *want = is_push ? "POST" : "GET";
    if (strcmp(req->method, want) != 0) {
        answer_msg(a, 405, MSG_METHOD);
        return;
    }
    if (is_push) {
        push(s, req, c, a);
        return;
    }
    /* LINE accepts retry keys only on the sending endpoints and answers 400 elsewhere; the
     * check follows authentication as it does for push. */
    if (c->retry_key) {
        sim_account_t bot;
        if (!authenticate(s, req, c, &bot, a)) return;
        answer_msg(a, 400, MSG_RETRY_UNSUPPORTED);
        return;
    }
    if (is_info)
        bot_info(s, req, c, a);
    else
        profile(s, req, c, a);
}

/* Headers kept in the request log. The HTTP layer only offers lookup by name, so this is the
 * list of everything a LINE client plausibly sends. */
static const char *const logged_headers[] = {
    "authorization", "content-type",    "content-length",    "x-line-retry-key",
    "user-agent",    "accept",          "accept-encoding",   "host",
    "expect",        "connection",      "x-line-signature",  "x-request-id",
    "traceparent",   "x-forwarded-for", "transfer-encoding",
};

static json_t *body_json(const char *body, size_t len, bool *truncated)
{
    size_t n = len > LSIM_MAX_RECORDED_BODY ? LSIM_MAX_RECORDED_BODY : len;
    *truncated = n < len;
    /* A cut may split a UTF-8 sequence: back off up to three bytes before giving up. */
    for (size_t back = 0; back <= (*truncated ? 3u : 0u) && back <= n; back++) {
        json_t *j = json_stringn(body, n - back);
        if (j) return j;
    }
    return NULL;
}

static void record_request(lsim_t *s, const oc_http_request_t *req, const call_t *c,
                           const answer_t *a)
{
    json_t *headers = json_object();
    for (size_t i = 0; i < sizeof logged_headers / sizeof logged_headers[0]; i++) {
        const char *v = oc_http_header(req, logged_headers[i]);
        if (v) json_object_set_new(headers, logged_headers[i], json_string(v));
    }
    bool truncated = false;
    json_t *rec =
        json_pack("{s:I, s:s, s:s, s:s, s:o, s:I, s:b, s:s?, s:i, s:b, s:b, s:b, s:s?, s:b, s:b}",
                  "time_ms", (json_int_t)c->received_ms, "request_id", c->request_id, "method",
                  req->method, "path", req->path, "headers", headers, "body_len",
                  (json_int_t)req->body_len, "body_truncated", false, "retry_key", c->retry_key,
                  "status", a->drop ? 0 : a->status, "dropped", a->drop, "fault", c->have_fault,
                  "executed", c->executed, "bot_user_id", c->bot_user_id[0] ? c->bot_user_id : NULL,
                  "retry_conflict", c->retry_conflict, "retry_body_differs", c->retry_body_differs);
    if (!rec) return;
    json_t *b = body_json(req->body ? req->body : "", req->body ? req->body_len : 0, &truncated);
    if (b) {
        json_object_set_new(rec, "body", b);
    } else {
        /* Not UTF-8: keep the bytes, base64-encoded. */
        size_t n = req->body_len > LSIM_MAX_RECORDED_BODY ? LSIM_MAX_RECORDED_BODY : req->body_len;
        char *enc = malloc(oc_base64_encoded_len(n) + 1);
        if (enc) {
            oc_base64_encode((const uint8_t *)req->body, n, enc);
            json_object_set_new(rec, "body_base64", json_string(enc));
            free(enc);
        }
        truncated = n < req->body_len;
    }
    json_object_set_new(rec, "body_truncated", json_boolean(truncated));
    if (a->accepted_id[0])
        json_object_set_new(rec, "accepted_request_id", json_string(a->accepted_id));
    char *json = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (json) sim_record(&s->core, &s->core.requests, strdup(req->path), json, strlen(json));
}

void lsim__handle_line(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    lsim_t *s = user;
    call_t c = {0};
    answer_t a = {0};
    c.received_ms = oc_now_ms();
    if (oc_uuid_v4(c.request_id) != OC_OK)
        snprintf(c.request_id, sizeof c.request_id, "00000000-0000-4000-8000-000000000000");
    c.retry_key = oc_http_header(req, "X-Line-Retry-Key");
    c.have_fault = sim_pop_fault(&s->core, req->path, &c.fault);

    if (c.have_fault && !c.fault.execute) {
        fault_answer(&c.fault, &a);
    } else {
        dispatch(s, req, &c, &a);
        /* Executed, then the answer is lost or replaced: what a client sees when the provider
         * did the work but the response never made it back. */
        if (c.have_fault && (c.fault.drop || c.fault.status)) fault_answer(&c.fault, &a);
    }
    record_request(s, req, &c, &a);
    if (c.have_fault && c.fault.delay_ms > 0) sleep_ms(c.fault.delay_ms);

    oc_http_response_header(resp, "X-Line-Request-Id", c.request_id);
    if (a.drop) {
        resp->drop_connection = true;
    } else {
        resp->status = a.status ? a.status : 500;
        if (a.accepted_id[0])
            oc_http_response_header(resp, "X-Line-Accepted-Request-Id", a.accepted_id);
        char *txt = a.body ? json_dumps(a.body, JSON_COMPACT) : NULL;
        oc_buf_appends(&resp->body, txt ? txt : "{\"message\":\"" MSG_INTERNAL "\"}");
        free(txt);
    }
    json_decref(a.body);
}
