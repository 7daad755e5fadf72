/* The simulator's control API under /__sim/: faults, bots, profiles, logs, clock, webhooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lsim_internal.h"
#include "line_wire.h"

#define MAX_DELAY_MS 600000L
#define MAX_FAULT_REPEAT 100000L
#define WEBHOOK_TIMEOUT_MS 10000L
#define WEBHOOK_MAX_REPLY ((size_t)64 * 1024)

static void send_json(oc_http_response_t *resp, int status, json_t *j)
{
    resp->status = status;
    char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (txt)
        oc_buf_appends(&resp->body, txt);
    else
        oc_http_response_error(resp, 500, "out of memory");
    free(txt);
    json_decref(j);
}

static void send_ok(oc_http_response_t *resp)
{
    send_json(resp, 200, json_pack("{s:b}", "ok", true));
}

/* Parses the body as a JSON object, answering 400 when it is not one. */
static json_t *body_object(const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_error_t jerr;
    json_t *j = json_loadb(req->body ? req->body : "", req->body_len, 0, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        oc_http_response_error(resp, 400, "body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Reads an optional string field into dst; false (with a 400 sent) when it is not a string or
 * does not fit. */
static bool opt_str(const json_t *o, const char *name, char *dst, size_t cap,
                    oc_http_response_t *resp)
{
    const json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return true;
    if (!json_is_string(v) || json_string_length(v) >= cap) {
        char why[128];
        snprintf(why, sizeof why, "%s: must be a string shorter than %zu bytes", name, cap);
        oc_http_response_error(resp, 400, why);
        return false;
    }
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return true;
}

static bool opt_int(const json_t *o, const char *name, long min, long max, long *dst,
                    oc_http_response_t *resp)
{
    const json_t *v = json_object_get(o, name);
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char why[128];
        snprintf(why, sizeof why, "%s: must be an integer between %ld and %ld", name, min, max);
        oc_http_response_error(resp, 400, why);
        return false;
    }
    *dst = (long)json_integer_value(v);
    return true;
}

static bool opt_bool(const json_t *o, const char *name, bool *dst, bool *present,
                     oc_http_response_t *resp)
{
    const json_t *v = json_object_get(o, name);
    if (present) *present = v != NULL;
    if (!v) return true;
    if (!json_is_boolean(v)) {
        char why[128];
        snprintf(why, sizeof why, "%s: must be a boolean", name);
        oc_http_response_error(resp, 400, why);
        return false;
    }
    *dst = json_is_true(v);
    return true;
}

/* POST /__sim/faults {"path": "...", "faults": [{...}, ...]} */
static void post_faults(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = body_object(req, resp);
    if (!root) return;
    sim_fault_t *parsed = NULL;
    long *repeat = NULL;
    const char *path = json_string_value(json_object_get(root, "path"));
    const json_t *arr = json_object_get(root, "faults");
    if (!path || path[0] != '/' || strlen(path) >= sizeof parsed->path) {
        oc_http_response_error(resp, 400, "path: must be an absolute path under 256 bytes");
        goto out;
    }
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        oc_http_response_error(resp, 400, "faults: must be a non-empty array");
        goto out;
    }
    size_t n = json_array_size(arr);
    repeat = calloc(n, sizeof *repeat);
    parsed = calloc(n, sizeof *parsed);
    if (!parsed || !repeat) {
        oc_http_response_error(resp, 500, "out of memory");
        goto out;
    }
    /* Validate the whole list before queueing any of it, so a bad entry queues nothing. */
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(arr, i);
        sim_fault_t *f = &parsed[i];
        long status = 0;
        bool has_exec = false;
        repeat[i] = 1;
        if (!json_is_object(o)) {
            oc_http_response_error(resp, 400, "faults[]: must be objects");
            goto out;
        }
        snprintf(f->path, sizeof f->path, "%s", path);
        if (!opt_int(o, "status", 100, 599, &status, resp) ||
            !opt_int(o, "delay_ms", 0, MAX_DELAY_MS, &f->delay_ms, resp) ||
            !opt_int(o, "hold_ms", 0, MAX_DELAY_MS, &f->hold_ms, resp) ||
            !opt_int(o, "repeat", 1, MAX_FAULT_REPEAT, &repeat[i], resp) ||
            !opt_bool(o, "drop", &f->drop, NULL, resp) ||
            !opt_bool(o, "execute", &f->execute, &has_exec, resp) ||
            !opt_str(o, "message", f->message, sizeof f->message, resp))
            goto out;
        f->status = (int)status;
        const char *kind = json_string_value(json_object_get(o, "kind"));
        if (kind && strcmp(kind, "rate_limit") == 0) {
            f->kind = LSIM_KIND_RATE_LIMIT;
        } else if (kind && strcmp(kind, "quota") == 0) {
            f->kind = LSIM_KIND_QUOTA;
        } else if (json_object_get(o, "kind")) {
            oc_http_response_error(resp, 400, "kind: must be \"rate_limit\" or \"quota\"");
            goto out;
        }
        /* A fault that answers for the provider (status or drop) skips the work unless told
         * otherwise; a pure delay or hold is a slow provider that still does the work. */
        if (!has_exec) f->execute = !(f->status || f->drop);
        if (!f->execute && !f->status && !f->drop) {
            oc_http_response_error(resp, 400,
                                   "a fault with \"execute\": false needs \"status\" or \"drop\"");
            goto out;
        }
    }
    long queued = 0;
    for (size_t i = 0; i < n; i++) {
        for (long r = 0; r < repeat[i]; r++) {
            if (sim_push_fault(&s->core, &parsed[i]) != OC_OK) {
                oc_http_response_error(resp, 500, "out of memory");
                goto out;
            }
            queued++;
        }
    }
    send_json(resp, 200, json_pack("{s:I}", "queued", (json_int_t)queued));
out:
    free(repeat);
    free(parsed);
    json_decref(root);
}

static void get_faults(lsim_t *s, oc_http_response_t *resp)
{
    char *txt = sim_faults_json(&s->core);
    if (txt)
        oc_buf_appends(&resp->body, txt);
    else
        oc_http_response_error(resp, 500, "out of memory");
    free(txt);
}

/* POST /__sim/bots {"token","bot_user_id","display_name","basic_id","picture_url"} */
static void post_bot(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = body_object(req, resp);
    if (!root) return;
    lsim_bot_def_t def = {
        .token = json_string_value(json_object_get(root, "token")),
        .user_id = json_string_value(json_object_get(root, "bot_user_id")),
        .display_name = json_string_value(json_object_get(root, "display_name")),
        .basic_id = json_string_value(json_object_get(root, "basic_id")),
        .picture_url = json_string_value(json_object_get(root, "picture_url")),
    };
    oc_error_t err;
    oc_error_clear(&err);
    if (lsim_add_bot(s, &def, &err) != OC_OK)
        oc_http_response_error(resp, 400, err.msg);
    else
        send_ok(resp);
    json_decref(root);
}

static void get_bots(lsim_t *s, oc_http_response_t *resp)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&s->core.mu);
    /* Tokens are kept only as digests and never listed. */
    for (const sim_account_rec_t *b = s->core.accounts; b; b = b->next)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:b}", "bot_user_id",
                                             b->v.user_id, "display_name", b->v.display_name,
                                             "basic_id", b->v.basic_id, "picture_url",
                                             b->v.picture_url, "revoked", b->revoked));
    pthread_mutex_unlock(&s->core.mu);
    send_json(resp, 200, arr);
}

static void revoke_bot(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = body_object(req, resp);
    if (!root) return;
    const char *token = json_string_value(json_object_get(root, "token"));
    if (!token)
        oc_http_response_error(resp, 400, "token: required");
    else if (!lsim_revoke_bot(s, token))
        oc_http_response_error(resp, 404, "no bot has this token");
    else
        send_ok(resp);
    json_decref(root);
}

/* POST /__sim/profiles {"user_id","display_name","picture_url","status_message","language",
 * "not_found","blocked"} */
static void post_profile(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = body_object(req, resp);
    if (!root) return;
    sim_profile_t p = {0};
    if (!opt_str(root, "user_id", p.user_id, sizeof p.user_id, resp) ||
        !opt_str(root, "display_name", p.display_name, sizeof p.display_name, resp) ||
        !opt_str(root, "picture_url", p.picture_url, sizeof p.picture_url, resp) ||
        !opt_str(root, "status_message", p.status_message, sizeof p.status_message, resp) ||
        !opt_str(root, "language", p.language, sizeof p.language, resp) ||
        !opt_bool(root, "not_found", &p.not_found, NULL, resp) ||
        !opt_bool(root, "blocked", &p.blocked, NULL, resp))
        goto out;
    if (!p.user_id[0]) {
        oc_http_response_error(resp, 400, "user_id: required");
        goto out;
    }
    if (!p.display_name[0]) snprintf(p.display_name, sizeof p.display_name, "%s", p.user_id);
    if (sim_set_profile(&s->core, &p) != OC_OK)
        oc_http_response_error(resp, 500, "out of memory");
    else
        send_ok(resp);
out:
    json_decref(root);
}

/* GET /__sim/requests?path=&limit= and GET /__sim/deliveries?to=&limit= */
static void dump_log(lsim_t *s, sim_ring_t *ring, const char *key, const oc_http_request_t *req,
                     oc_http_response_t *resp)
{
    const char *lim = oc_http_query(req, "limit");
    size_t limit = 0;
    if (lim) {
        char *end;
        unsigned long long v = strtoull(lim, &end, 10);
        if (*lim == '\0' || *end != '\0') {
            oc_http_response_error(resp, 400, "limit: must be a number");
            return;
        }
        limit = (size_t)v;
    }
    if (sim_dump(&s->core, ring, key, limit, &resp->body) != OC_OK) {
        oc_buf_reset(&resp->body);
        oc_http_response_error(resp, 500, "log too large for one response; use ?limit=");
    }
}

static void post_clock(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = body_object(req, resp);
    if (!root) return;
    const json_t *v = json_object_get(root, "advance_ms");
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        oc_http_response_error(resp, 400, "advance_ms: must be a non-negative integer");
    } else {
        pthread_mutex_lock(&s->core.mu);
        s->core.clock_offset_ms += (int64_t)json_integer_value(v);
        int64_t off = s->core.clock_offset_ms;
        pthread_mutex_unlock(&s->core.mu);
        send_json(resp, 200, json_pack("{s:I}", "offset_ms", (json_int_t)off));
    }
    json_decref(root);
}

/* POST /__sim/webhook {"url","channel_secret","body": string|JSON, "signature"?}: signs the raw
 * body as LINE does (base64 HMAC-SHA256 keyed by the channel secret) and delivers it. */
static void post_webhook(const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = body_object(req, resp);
    if (!root) return;
    oc_error_t err;
    char *body = NULL;
    oc_buf_t reply;
    long status = 0;
    oc_error_clear(&err);
    oc_buf_init(&reply, WEBHOOK_MAX_REPLY);

    const char *url = json_string_value(json_object_get(root, "url"));
    const char *secret = json_string_value(json_object_get(root, "channel_secret"));
    const char *sig_override = json_string_value(json_object_get(root, "signature"));
    const json_t *jb = json_object_get(root, "body");
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        oc_http_response_error(resp, 400, "url: must be an http(s) URL");
        goto out;
    }
    if (!secret && !sig_override) {
        oc_http_response_error(resp, 400, "channel_secret: required (or give signature)");
        goto out;
    }
    /* A string is sent byte for byte, so tests control exactly what gets signed. */
    if (json_is_string(jb))
        body = strdup(json_string_value(jb));
    else if (json_is_object(jb))
        body = json_dumps(jb, JSON_COMPACT);
    if (!body) {
        oc_http_response_error(resp, 400, "body: must be a string or an object");
        goto out;
    }
    size_t blen = strlen(body);

    char sig[128];
    if (sig_override) {
        snprintf(sig, sizeof sig, "%s", sig_override);
    } else {
        if (!line_sign(secret, strlen(secret), body, blen, sig)) {
            oc_http_response_error(resp, 500, "could not compute the signature");
            goto out;
        }
    }
    char sig_hdr[160];
    snprintf(sig_hdr, sizeof sig_hdr, "x-line-signature: %s", sig);
    if (sim_post_webhook(url, body, blen, sig_hdr, "LineBotWebhook/2.0", WEBHOOK_TIMEOUT_MS,
                         &status, &reply, &err) != OC_OK) {
        oc_http_response_error(resp, err.code == OC_E_UNAVAILABLE ? 502 : 500, err.msg);
        goto out;
    }
    json_t *out = json_pack("{s:i, s:s}", "status", (int)status, "signature", sig);
    json_t *rb = json_stringn(reply.data ? reply.data : "", reply.len);
    if (out && rb) json_object_set_new(out, "body", rb);
    send_json(resp, 200, out);
out:
    free(body);
    oc_buf_dispose(&reply);
    json_decref(root);
}

void lsim__handle_control(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    lsim_t *s = user;
    const char *p = req->path + strlen("/__sim/");
    bool get = strcmp(req->method, "GET") == 0;
    bool post = strcmp(req->method, "POST") == 0;

    if (get && strcmp(p, "healthz") == 0)
        send_ok(resp);
    else if (post && strcmp(p, "faults") == 0)
        post_faults(s, req, resp);
    else if (get && strcmp(p, "faults") == 0)
        get_faults(s, resp);
    else if (post && strcmp(p, "bots") == 0)
        post_bot(s, req, resp);
    else if (get && strcmp(p, "bots") == 0)
        get_bots(s, resp);
    else if (post && strcmp(p, "bots/revoke") == 0)
        revoke_bot(s, req, resp);
    else if (post && strcmp(p, "profiles") == 0)
        post_profile(s, req, resp);
    else if (get && strcmp(p, "requests") == 0)
        dump_log(s, &s->core.requests, oc_http_query(req, "path"), req, resp);
    else if (get && strcmp(p, "deliveries") == 0)
        dump_log(s, &s->core.deliveries, oc_http_query(req, "to"), req, resp);
    else if (post && strcmp(p, "reset") == 0) {
        lsim_reset(s);
        send_ok(resp);
    } else if (post && strcmp(p, "clock") == 0)
        post_clock(s, req, resp);
    else if (post && strcmp(p, "webhook") == 0)
        post_webhook(req, resp);
    else
        oc_http_response_error(resp, 404, "no such control endpoint");
}
