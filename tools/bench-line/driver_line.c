/* The connector benchmark's LINE driver: bots in the LINE simulator, signed webhooks, pushes. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "bl.h"
#include "line_wire.h"
#include "omnichat/util.h"

/* POST /__sim/bots: the simulator learns the bot's token. */
static int add_channel(bl_ctx_t *ctx, bl_channel_t *c, int i, char *err, size_t errlen)
{
    char body[512];

    c->provider_account[0] = 'U';
    bl_rand_hex(&ctx->th[0].rng, c->provider_account + 1, 32);
    bl_rand_hex(&ctx->th[0].rng, c->token, 40);
    bl_rand_hex(&ctx->th[0].rng, c->secret, 32);
    snprintf(body, sizeof body,
             "{\"token\":\"%s\",\"bot_user_id\":\"%s\",\"display_name\":\"Bench Bot %d\"}",
             c->token, c->provider_account, i + 1);
    return bl_sim_post(ctx, "/__sim/bots", body, err, errlen);
}

static void connect_request(const bl_channel_t *c, CPB(ConnectChannelRequest) * req)
{
    req->access_token = (char *)c->token;
    req->channel_secret = (char *)c->secret;
}

static void new_user(const bl_channel_t *c, uint64_t *rng, bl_user_t *u)
{
    (void)c;
    u->id[0] = 'U';
    bl_rand_hex(rng, u->id + 1, 32);
    /* What the simulator's profile answers. */
    snprintf(u->display_name, sizeof u->display_name, "User %s", u->id + 27);
    snprintf(u->avatar, sizeof u->avatar, "https://profile.line-scdn.net/line-sim/%s", u->id);
}

/* A 1:1 chat's thread is the user. */
static void thread_key(const bl_channel_t *c, const bl_user_t *u, char *out, size_t cap)
{
    (void)c;
    snprintf(out, cap, "%s", u->id);
}

static size_t webhook(const bl_ctx_t *ctx, const bl_channel_t *c, const int *users, int k,
                      const char *id_prefix, uint64_t *rng, char *buf, size_t cap, bl_headers_t *h)
{
    char ids[BL_MAX_K][BL_ID_LEN + 24], quote[BL_MAX_K][33], reply[BL_MAX_K][33];
    char event_id[BL_MAX_K][27], text[BL_MAX_K][128], sig[64];
    line_text_event_t ev[BL_MAX_K];
    int64_t now = oc_now_ms();
    oc_buf_t b;
    size_t len = 0;

    if (k < 1 || k > BL_MAX_K) return 0;
    for (int j = 0; j < k; j++) {
        bl_rand_hex(rng, quote[j], 32);
        bl_rand_hex(rng, reply[j], 32);
        bl_rand_hex(rng, event_id[j], 26);
        for (char *p = event_id[j]; *p; p++)
            if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
        event_id[j][0] = '0';
        event_id[j][1] = '1';
        bl_inbound_text(text[j], sizeof text[j], bench_rand(rng));
        snprintf(ids[j], sizeof ids[j], "%s-%d", id_prefix, j);
        ev[j] = (line_text_event_t){
            ctx->users[users[j]].id, ids[j], text[j], event_id[j], reply[j], quote[j], now};
    }
    oc_buf_init(&b, cap);
    if (line_webhook_body(&b, c->provider_account, ev, (size_t)k) == OC_OK && b.len < cap) {
        memcpy(buf, b.data, b.len + 1);
        len = b.len;
    }
    oc_buf_dispose(&b);
    if (len == 0) return 0;
    line_sign(c->secret, strlen(c->secret), buf, len, sig);
    bl_webhook_headers(h, "x-line-signature", sig, "LineBotWebhook/2.0");
    return len;
}

/* The push the connector makes: a fresh retry key, the same shape of body. */
static int raw_send(bl_ctx_t *ctx, bl_thread_t *t, const bl_channel_t *c, const bl_user_t *u,
                    uint64_t n, oc_buf_t *resp, char *err, size_t errlen)
{
    char auth[96], key_hdr[64], key[OC_UUID_STR_LEN + 1], url[300], text[160];
    const char *headers[] = {auth, "Content-Type: application/json", key_hdr, "Expect:", NULL};
    int len;

    if (oc_uuid_v4(key) != OC_OK) {
        snprintf(err, errlen, "no randomness for the retry key");
        return -1;
    }
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
    snprintf(key_hdr, sizeof key_hdr, "X-Line-Retry-Key: %s", key);
    snprintf(url, sizeof url, "%s/v2/bot/message/push", ctx->sim_base);
    bl_reply_text(text, sizeof text, n);
    len =
        snprintf(t->body, BL_BODY_MAX,
                 "{\"to\":\"%s\",\"messages\":[{\"type\":\"text\",\"text\":\"%s\"}]}", u->id, text);
    return bl_http(t->http, url, headers, t->body, (size_t)len, BL_CALL_TIMEOUT_MS, resp, err,
                   errlen);
}

static void delivery_fields(const void *entry, const char **id, const char **key)
{
    const json_t *d = entry;

    *id = json_string_value(
        json_object_get(json_array_get(json_object_get(d, "sentMessages"), 0), "id"));
    *key = json_string_value(json_object_get(d, "retry_key"));
}

const bl_driver_t bl_driver_line = {
    .name = "line",
    .add_channel = add_channel,
    .connect_request = connect_request,
    .new_user = new_user,
    .thread_key = thread_key,
    .webhook = webhook,
    .raw_send = raw_send,
    .delivery_fields = delivery_fields,
};

const bl_driver_t *bl_driver_find(const char *name)
{
    static const bl_driver_t *const drivers[] = {&bl_driver_line, &bl_driver_meta};

    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (strcmp(drivers[i]->name, name) == 0) return drivers[i];
    return NULL;
}
