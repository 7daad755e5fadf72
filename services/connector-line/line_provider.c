/* The LINE provider: its facts, the push, the bot-info check of ConnectChannel, its options. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "items.h"
#include "line.h"
#include "line_api.h"
#include "line_webhook.h"
#include "omnichat/util.h"

#define PROFILE_CACHE_MAX 10000
#define PROFILE_TTL_MS (60LL * 60 * 1000) /* names and pictures change; refresh hourly */

/*
 * LINE keeps a retry key for 24 h from the first request, and that request came after the
 * message was created. The last push may start up to one lease after the window check and
 * take up to one LINE timeout, so window + lease + LINE timeout must stay under 24 h for every
 * allowed value of the three (plus a minute for clock skew between us and the database).
 */
#define LEASE_SECONDS_MAX 3600       /* persistence's limit */
#define LINE_TIMEOUT_MAX_MS 120000LL /* the bound of line-timeout-ms */
#define CLOCK_SKEW_S 60
#define RETRY_WINDOW_MAX_S (86400 - LEASE_SECONDS_MAX - LINE_TIMEOUT_MAX_MS / 1000 - CLOCK_SKEW_S)
_Static_assert(RETRY_WINDOW_MAX_S == 82620, "keep the retry-window-s bound and default in step");

static oc_err_t line_init(conn_t *c, oc_error_t *err)
{
    line_state_t *st = calloc(1, sizeof *st);

    if (st == NULL || (st->profiles = oc_lru_create(PROFILE_CACHE_MAX, PROFILE_TTL_MS)) == NULL) {
        free(st);
        return oc_error_set(err, OC_E_NOMEM, "out of memory");
    }
    c->provider_state = st;
    return OC_OK;
}

static void line_dispose(conn_t *c)
{
    line_state_t *st = c->provider_state;

    if (st == NULL) return;
    oc_lru_destroy(st->profiles);
    free(st);
    c->provider_state = NULL;
}

static bool line_send(conn_t *c, const conn_send_t *s, conn_class_t *out)
{
    oc_http_result_t res;
    oc_err_t rc;

    line_http_result_init(&res);
    rc = line_api_push(c, s->token, s->token_len, s->thread_key, s->message->content_text,
                       s->message->provider_retry_key, s->timeout_ms, &res);
    return conn_class_finish(rc, &res, line_classify_push, s->timeout_ms, out);
}

/* GET /v2/bot/info: the bot's user id and name, or why the token is not usable (LINE reports
 * its bot id itself: the engine compares a claimed one). */
static oc_err_t line_verify(conn_t *c, oc_rpc_ctx_t *ctx, const conn_verify_t *vr,
                            conn_verified_t *v)
{
    const char *token = vr->token;

    oc_http_result_t res;
    oc_err_t rc = OC_OK;

    line_http_result_init(&res);
    if (line_api_get(c, token, strlen(token), "/v2/bot/info", "bot_info",
                     (long)c->cfg.api_timeout_ms, &res) != OC_OK) {
        rc = oc_error_set(&ctx->err, OC_E_INTERNAL, "LINE request could not be built");
        goto out;
    }
    if ((rc = conn_verify_reached(ctx, &res, "LINE")) != OC_OK) goto out;
    if (res.status == 401 || res.status == 403) {
        rc = oc_error_set(&ctx->err, OC_E_UNAUTHENTICATED, "access_token: rejected by LINE");
        goto out;
    }
    if (res.status != 200) {
        rc = oc_error_set(&ctx->err,
                          res.status >= 500 || res.status == 429 ? OC_E_UNAVAILABLE
                                                                 : OC_E_FAILED_PRECONDITION,
                          "LINE answered %ld to the bot info request", res.status);
        goto out;
    }
    rc = conn_verified_from(ctx, &res, "userId", "displayName", "LINE", v);
out:
    oc_http_result_dispose(&res);
    return rc;
}

static const oc_config_option_t line_options[] = {
    {"profile-timeout-ms", OC_CFG_INT, "500", 10, 10000, 0,
     offsetof(line_config_t, profile_timeout_ms),
     "timeout of one profile look-up in the webhook (best effort)", NULL},
};

static const int line_channel_types[] = {PBE(CHANNEL_TYPE__CHANNEL_TYPE_LINE)};

const conn_provider_t line_provider = {
    .name = "line",
    .version = "0.1.0",
    .grpc_listen_default = "0.0.0.0:50052",
    .http_listen_default = "0.0.0.0:8081",
    .channel_types = line_channel_types,
    .n_channel_types = 1,
    .delivery = CONN_DELIVERY_RETRY_KEY,
    .retry_window_default = "82620",
    .retry_window_min_s = 1,
    .retry_window_max_s = RETRY_WINDOW_MAX_S,
    .retry_window_help = "no push later than this after the message was created (LINE retry "
                         "keys live 24 h; window + lease + LINE timeout stay under that)",
    .routing = CONN_ROUTE_PATH,
    .webhook_path = LINE_WEBHOOK_PREFIX,
    .webhook_timeout_default = "1500",
    .webhook_timeout_help = "deadline of one webhook request from arrival to answer: account "
                            "look-up, profiles and persisting share it (LINE gives up after 2 s)",
    .token_in = OC_HTTP_SECRET_HEADER,
    .token_name = "Authorization: Bearer ",
    .text_unit = CONN_TEXT_UTF16_UNITS,
    .text_max = LINE_TEXT_MAX_UNITS,
    .text_rule = "at most 5000 UTF-16 code units for LINE",
    .token_field = "access_token",
    .secret_field = "channel_secret",
    .secret_scope = CONN_SECRET_PER_ACCOUNT,
    .api_option = "line",
    .api_base_default = "https://api.line.me",
    .api_timeout_max_ms = LINE_TIMEOUT_MAX_MS,
    .user_agent = "omnichat-connector-line/0.1",
    .options = line_options,
    .noptions = sizeof line_options / sizeof line_options[0],
    .config_size = sizeof(line_config_t),
    .init = line_init,
    .dispose = line_dispose,
    .send = line_send,
    .verify = line_verify,
    .signature_valid = line_request_signed,
    .parse = line_parse,
    .enrich = line_enrich,
};
