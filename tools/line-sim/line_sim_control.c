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
#include "sim_control.h"

#define WEBHOOK_TIMEOUT_MS 10000L
#define WEBHOOK_MAX_REPLY ((size_t)64 * 1024)

/* POST /__sim/bots {"token","bot_user_id","display_name","basic_id","picture_url"} */
static void post_bot(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
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
        sim_send_ok(resp);
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
    sim_send_json(resp, 200, arr);
}

static void revoke_bot(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
    if (!root) return;
    const char *token = json_string_value(json_object_get(root, "token"));
    if (!token)
        oc_http_response_error(resp, 400, "token: required");
    else if (!lsim_revoke_bot(s, token))
        oc_http_response_error(resp, 404, "no bot has this token");
    else
        sim_send_ok(resp);
    json_decref(root);
}

/* POST /__sim/profiles {"user_id","display_name","picture_url","status_message","language",
 * "not_found","blocked"} */
static void post_profile(lsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
    if (!root) return;
    sim_profile_t p = {0};
    if (!sim_opt_str(root, "user_id", p.user_id, sizeof p.user_id, resp) ||
        !sim_opt_str(root, "display_name", p.display_name, sizeof p.display_name, resp) ||
        !sim_opt_str(root, "picture_url", p.picture_url, sizeof p.picture_url, resp) ||
        !sim_opt_str(root, "status_message", p.status_message, sizeof p.status_message, resp) ||
        !sim_opt_str(root, "language", p.language, sizeof p.language, resp) ||
        !sim_opt_bool(root, "not_found", &p.not_found, NULL, resp) ||
        !sim_opt_bool(root, "blocked", &p.blocked, NULL, resp))
        goto out;
    if (!p.user_id[0]) {
        oc_http_response_error(resp, 400, "user_id: required");
        goto out;
    }
    if (!p.display_name[0]) snprintf(p.display_name, sizeof p.display_name, "%s", p.user_id);
    if (sim_set_profile(&s->core, &p) != OC_OK)
        oc_http_response_error(resp, 500, "out of memory");
    else
        sim_send_ok(resp);
out:
    json_decref(root);
}

/* POST /__sim/webhook {"url","channel_secret","body": string|JSON, "signature"?}: signs the raw
 * body as LINE does (base64 HMAC-SHA256 keyed by the channel secret) and delivers it. */
static void post_webhook(const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
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
    sim_send_json(resp, 200, out);
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
        sim_send_ok(resp);
    else if (post && strcmp(p, "faults") == 0)
        sim_post_faults(&s->core, req, resp);
    else if (get && strcmp(p, "faults") == 0)
        sim_get_faults(&s->core, resp);
    else if (post && strcmp(p, "bots") == 0)
        post_bot(s, req, resp);
    else if (get && strcmp(p, "bots") == 0)
        get_bots(s, resp);
    else if (post && strcmp(p, "bots/revoke") == 0)
        revoke_bot(s, req, resp);
    else if (post && strcmp(p, "profiles") == 0)
        post_profile(s, req, resp);
    else if (get && strcmp(p, "requests") == 0)
        sim_dump_log(&s->core, &s->core.requests, oc_http_query(req, "path"), req, resp);
    else if (get && strcmp(p, "deliveries") == 0)
        sim_dump_log(&s->core, &s->core.deliveries, oc_http_query(req, "to"), req, resp);
    else if (post && strcmp(p, "reset") == 0) {
        lsim_reset(s);
        sim_send_ok(resp);
    } else if (post && strcmp(p, "clock") == 0)
        sim_post_clock(&s->core, req, resp);
    else if (post && strcmp(p, "webhook") == 0)
        post_webhook(req, resp);
    else
        oc_http_response_error(resp, 404, "no such control endpoint");
}
