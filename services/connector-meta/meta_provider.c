/* The Meta provider: its facts, the Send API call, the account look-up of ConnectChannel, its
 * options. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "items.h"
#include "meta.h"
#include "omnichat/util.h"

#define IS_IG(t) ((t) == PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM))
#define META_TIMEOUT_MAX_MS 120000LL

/* Appends name=<form-encoded JSON of j> (j is released). */
static void form_json(oc_buf_t *b, const char *name, json_t *j)
{
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    json_decref(j);
    if (s == NULL) {
        b->failed = OC_E_NOMEM;
        return;
    }
    oc_buf_appendf(b, "%s%s=", b->len > 0 ? "&" : "", name);
    oc_buf_append_form_encoded(b, s, strlen(s));
    free(s);
}

static bool meta_send(conn_t *c, const conn_send_t *s, conn_class_t *out)
{
    const char *colon = strchr(s->thread_key, ':');
    const char *psid = colon != NULL ? colon + 1 : s->thread_key;
    char path[300];
    oc_http_result_t res;
    oc_buf_t form;
    oc_err_t rc;

    /* /{page-id}/messages; an Instagram account sends as /{ig-id}/messages with its Page's
     * token (Facebook Login) or its own (Instagram Login, with the API base changed). */
    snprintf(path, sizeof path, "%s/messages", s->account->external_account_id);
    oc_http_result_init(&res, META_BODY_MAX);
    oc_buf_init(&form, 1u << 20);
    form_json(&form, "recipient", json_pack("{s:s}", "id", psid));
    oc_buf_appends(&form, "&messaging_type=RESPONSE");
    /* metadata = our message id: the echo brings it back and settles a lost response. */
    form_json(&form, "message",
              json_pack("{s:s, s:s}", "text", s->message->content_text, "metadata",
                        s->message->message_id));
    rc = form.failed != OC_OK ? form.failed
                              : meta_api_post(c, path, "send", form.data, s->token, s->token_len,
                                              s->timeout_ms, &res);
    oc_buf_dispose(&form);
    return conn_class_finish(rc, &res, meta_classify_send, s->timeout_ms, out);
}

/* The claimed Page (or Instagram account) looked up with the token: the id Meta reports and its
 * name, or why the token cannot be used for it. */
static oc_err_t meta_verify(conn_t *c, oc_rpc_ctx_t *ctx, const conn_verify_t *vr,
                            conn_verified_t *v)
{
    bool ig = IS_IG(vr->channel_type);
    const char *claimed = vr->external_account_id;
    oc_http_result_t res;
    meta_error_t e;
    char path[300];
    oc_err_t rc = OC_OK;

    /* Graph ids are digits; anything else would change the path of the look-up. */
    if (claimed == NULL || claimed[0] == '\0' || strlen(claimed) > 64 ||
        strspn(claimed, "0123456789") != strlen(claimed))
        return oc_error_set(&ctx->err, OC_E_INVALID,
                            "external_account_id: the %s id (digits) is required for Meta",
                            ig ? "Instagram account" : "Page");
    snprintf(path, sizeof path, "%s", claimed);
    /* A POST with method=GET keeps the token a form field, out of the URL. */
    if (meta_api_post(c, path, "lookup",
                      ig ? "fields=id,username&method=GET" : "fields=id,name&method=GET", vr->token,
                      strlen(vr->token), (long)c->cfg.api_timeout_ms, &res) != OC_OK) {
        oc_http_result_dispose(&res);
        return oc_error_set(&ctx->err, OC_E_INVALID, "access_token: empty or too long");
    }
    if ((rc = conn_verify_reached(ctx, &res, "Meta")) != OC_OK) goto out;
    meta_api_error(res.body.data, res.body.len, &e);
    if (e.present || res.status != 200) {
        if (e.code == 190 || e.code == 10 || (e.code >= 200 && e.code <= 299))
            rc = oc_error_set(&ctx->err, OC_E_UNAUTHENTICATED, "access_token: rejected by Meta");
        else if (e.transient || e.code == 1 || e.code == 2 || e.code == 4 || e.code == 17 ||
                 e.code == 32 || e.code == 613 || res.status >= 500)
            rc = oc_error_set(&ctx->err, OC_E_UNAVAILABLE, "Meta is unavailable, retry");
        else
            rc = oc_error_set(&ctx->err, OC_E_FAILED_PRECONDITION,
                              "Meta: the %s is not accessible with this token (code %ld)",
                              ig ? "Instagram account" : "Page", e.code);
        goto out;
    }
    rc = conn_verified_from(ctx, &res, "id", ig ? "username" : "name", "Meta", v);
out:
    oc_http_result_dispose(&res);
    return rc;
}

static bool valid_version(const char *v, char *why, size_t len)
{
    bool ok = v[0] == 'v' && strlen(v) < 16 && strspn(v + 1, "0123456789.") == strlen(v + 1);

    if (!ok) snprintf(why, len, "must look like v21.0");
    return ok;
}

static const oc_config_option_t meta_options[] = {
    {"graph-version", OC_CFG_STR, "v21.0", 0, 0, 0, offsetof(meta_config_t, graph_version),
     "Graph API version, the first path segment of every call", valid_version},
    {"verify-token-file", OC_CFG_SECRET_FILE, NULL, 0, 0, OC_CFG_REQUIRED,
     offsetof(meta_config_t, verify_token),
     "file holding the webhook verify token (hub.verify_token)", NULL},
};

static const int meta_channel_types[] = {PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK),
                                         PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM)};

/* Grouped by concern: identity, the webhook, sending. */
const conn_provider_t meta_provider = {
    .name = "meta",
    .version = "0.1.0",
    .channel_types = meta_channel_types,
    .n_channel_types = sizeof meta_channel_types / sizeof meta_channel_types[0],
    CONN_FACTS_LISTEN("0.0.0.0:50053", "0.0.0.0:8082"),
    CONN_FACTS_OPTIONS(meta_options, meta_config_t),

    /* One app per deployment signs every webhook; each entry names its Page or account. */
    .secret_scope = CONN_SECRET_PER_APP,
    .routing = CONN_ROUTE_BODY,
    CONN_FACTS_WEBHOOK(META_WEBHOOK_PATH, "4000",
                       "deadline of one webhook request from arrival to answer (Meta gives up "
                       "after 5 s)"),
    .webhook_get = meta_webhook_get,
    .signature_valid = meta_request_signed,
    .parse = meta_parse,

    /* No retry key at Meta: our message id rides as metadata and its echo settles it. */
    .delivery = CONN_DELIVERY_ECHO_CONFIRMS,
    .echo_resend = true,
    .echo_grace_default = "30000",
    CONN_FACTS_RETRY_WINDOW("86400", 0, 7 * 86400,
                            "no send later than this after the message was created (0: no "
                            "limit; Meta's standard window is 24 h after the person's last "
                            "message)"),
    CONN_FACTS_TEXT(CONN_TEXT_CHARACTERS, META_TEXT_MAX_CHARS,
                    "fewer than 2000 characters for Meta"),
    CONN_FACTS_API("meta", "https://graph.facebook.com", META_TIMEOUT_MAX_MS,
                   "omnichat-connector-meta/0.1"),
    CONN_FACTS_TOKEN("access_token", OC_HTTP_SECRET_FORM, "access_token"),
    .send = meta_send,
    .verify = meta_verify,
};
