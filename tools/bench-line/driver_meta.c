/* The connector benchmark's Meta driver: Pages in the Graph API simulator, X-Hub-Signature-256
 * webhooks, Send API calls; facebook channels (Instagram takes the same paths). */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "bl.h"
#include "meta_wire.h"
#include "omnichat/util.h"

#define GRAPH_VERSION "v21.0"

/* Random decimal digits: Meta's ids are numbers written as strings. */
static void rand_digits(uint64_t *rng, char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + bench_rand(rng) % 10);
    out[0] = (char)('1' + bench_rand(rng) % 9);
    out[n] = '\0';
}

/* Echoes of our sends go back to the connector, signed with the app secret, as Meta's do. */
static int prepare(bl_ctx_t *ctx, char *err, size_t errlen)
{
    json_t *cfg = json_pack("{s:s+, s:s}", "webhook_url", ctx->webhook_base, "/webhooks/meta",
                            "app_secret", ctx->app_secret);
    char *body = cfg != NULL ? json_dumps(cfg, JSON_COMPACT) : NULL;
    int rc;

    json_decref(cfg);
    if (body == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    rc = bl_sim_post(ctx, "/__sim/config", body, err, errlen);
    free(body);
    return rc;
}

/* POST /__sim/pages: the simulator learns the Page and its token. */
static int add_channel(bl_ctx_t *ctx, bl_channel_t *c, int i, char *err, size_t errlen)
{
    char body[512];

    rand_digits(&ctx->th[0].rng, c->provider_account, 15);
    memcpy(c->token, "EAAG", 4);
    bl_rand_hex(&ctx->th[0].rng, c->token + 4, 40);
    snprintf(c->secret, sizeof c->secret, "%s", ctx->app_secret);
    snprintf(body, sizeof body, "{\"token\":\"%s\",\"page_id\":\"%s\",\"name\":\"Bench Page %d\"}",
             c->token, c->provider_account, i + 1);
    return bl_sim_post(ctx, "/__sim/pages", body, err, errlen);
}

static void connect_request(const bl_channel_t *c, CPB(ConnectChannelRequest) * req)
{
    req->access_token = (char *)c->token;
    req->channel_type = OMNICHAT__PERSISTENCE__V1__CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK;
    req->external_account_id = (char *)c->provider_account;
}

/* A PSID. The connector looks no profile up for Meta: the reference stores no name either. */
static void new_user(const bl_channel_t *c, uint64_t *rng, bl_user_t *u)
{
    (void)c;
    rand_digits(rng, u->id, 16);
    u->display_name[0] = '\0';
    u->avatar[0] = '\0';
}

/* "page_id:psid": a PSID is only unique within its Page. */
static void thread_key(const bl_channel_t *c, const bl_user_t *u, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%s", c->provider_account, u->id);
}

static size_t webhook(const bl_ctx_t *ctx, const bl_channel_t *c, const int *users, int k,
                      const char *id_prefix, uint64_t *rng, char *buf, size_t cap, bl_headers_t *h)
{
    char mids[BL_MAX_K][BL_ID_LEN + 24], text[BL_MAX_K][128], sig[META_SIGNATURE_LEN + 1];
    meta_event_t ev[BL_MAX_K];
    int64_t now = oc_now_ms();
    oc_buf_t b;
    size_t len = 0;

    if (k < 1 || k > BL_MAX_K) return 0;
    for (int j = 0; j < k; j++) {
        bl_inbound_text(text[j], sizeof text[j], bench_rand(rng));
        snprintf(mids[j], sizeof mids[j], "%s-%d", id_prefix, j);
        ev[j] = (meta_event_t){.kind = META_EV_MESSAGE,
                               .sender_id = ctx->users[users[j]].id,
                               .recipient_id = c->provider_account,
                               .timestamp_ms = now,
                               .mid = mids[j],
                               .text = text[j]};
    }
    oc_buf_init(&b, cap);
    if (meta_webhook_body(&b, "page", c->provider_account, ev, (size_t)k) == OC_OK && b.len < cap) {
        memcpy(buf, b.data, b.len + 1);
        len = b.len;
    }
    oc_buf_dispose(&b);
    if (len == 0 || !meta_sign(c->secret, strlen(c->secret), buf, len, sig)) return 0;
    bl_webhook_headers(h, "X-Hub-Signature-256", sig, "facebookexternalua");
    return len;
}

/* The Send API call the connector makes: a form body, the token as a field. */
static int raw_send(bl_ctx_t *ctx, bl_thread_t *t, const bl_channel_t *c, const bl_user_t *u,
                    uint64_t n, oc_buf_t *resp, char *err, size_t errlen)
{
    char url[300], text[160], recipient[96], message[256];
    const char *headers[] = {"Content-Type: application/x-www-form-urlencoded", "Expect:", NULL};
    oc_buf_t body;
    int status;

    snprintf(url, sizeof url, "%s/%s/%s/messages", ctx->sim_base, GRAPH_VERSION,
             c->provider_account);
    bl_reply_text(text, sizeof text, n);
    snprintf(recipient, sizeof recipient, "{\"id\":\"%s\"}", u->id);
    snprintf(message, sizeof message, "{\"text\":\"%s\"}", text);
    oc_buf_init(&body, BL_BODY_MAX);
    oc_buf_appends(&body, "recipient=");
    oc_buf_append_form_encoded(&body, recipient, strlen(recipient));
    oc_buf_appends(&body, "&message=");
    oc_buf_append_form_encoded(&body, message, strlen(message));
    oc_buf_appends(&body, "&messaging_type=RESPONSE&access_token=");
    oc_buf_append_form_encoded(&body, c->token, strlen(c->token));
    /* As the connector does when it has the app secret (the simulator then requires it). */
    char proof[META_PROOF_LEN + 1];
    if (meta_appsecret_proof(ctx->app_secret, strlen(ctx->app_secret), c->token, strlen(c->token),
                             proof)) {
        oc_buf_appends(&body, "&appsecret_proof=");
        oc_buf_appends(&body, proof);
    }
    if (body.failed != OC_OK) {
        oc_buf_dispose(&body);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    status =
        bl_http(t->http, url, headers, body.data, body.len, BL_CALL_TIMEOUT_MS, resp, err, errlen);
    oc_buf_dispose(&body);
    return status;
}

/* Meta has no de-duplication key: only the message id identifies a delivery. */
static void delivery_fields(const void *entry, const char **id, const char **key)
{
    *id = json_string_value(json_object_get((const json_t *)entry, "message_id"));
    *key = "";
}

const bl_driver_t bl_driver_meta = {
    .name = "meta",
    .needs_app_secret = true,
    .prepare = prepare,
    .add_channel = add_channel,
    .connect_request = connect_request,
    .new_user = new_user,
    .thread_key = thread_key,
    .webhook = webhook,
    .raw_send = raw_send,
    .delivery_fields = delivery_fields,
};
