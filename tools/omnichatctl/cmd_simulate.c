/* omnichatctl simulate line-webhook / meta-webhook: posts a signed message event, as LINE or
 * Meta would. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "line_wire.h"
#include "meta_wire.h"
#include "omnichat/buf.h"
#include "omnichat/http_client.h"
#include "omnichat/util.h"
#include "render.h"

#define SECRET_FILE_MAX 4096
#define RESPONSE_MAX 4096
#define DEFAULT_URL "http://127.0.0.1:8081"
#define DEFAULT_META_URL "http://127.0.0.1:8082"

/* LINE ids: U/C/R then 32 lowercase hex digits. */
static bool line_user_id(const char *s)
{
    if (s[0] != 'U' || strlen(s) != 33) return false;
    for (size_t i = 1; i < 33; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

/* Random digits / hex / base64url of the shapes LINE uses, from the CSPRNG. */
static bool random_digits(char *out, size_t n)
{
    unsigned char r[32];

    if (n > sizeof r || RAND_bytes(r, (int)n) != 1) return false;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('0' + r[i] % 10);
    if (out[0] == '0') out[0] = '1';
    out[n] = '\0';
    return true;
}

static bool random_hex(char *out, size_t nbytes)
{
    unsigned char r[32];

    if (nbytes > sizeof r || RAND_bytes(r, (int)nbytes) != 1) return false;
    oc_hex_encode(r, nbytes, out);
    return true;
}

/* The webhook body: one text message event from a user, now. */
static char *build_body(const char *destination, const char *user, const char *text,
                        const char *message_id, int64_t now_ms)
{
    char event_id[27], reply_token[33], quote[33];
    line_text_event_t ev = {user, message_id, text, event_id, reply_token, quote, now_ms};
    oc_buf_t b;

    if (!random_hex(reply_token, 16) || !random_hex(quote, 16) || !random_hex(event_id, 13))
        return NULL;
    event_id[0] = '0';
    event_id[1] = '1';
    for (char *p = event_id; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
    oc_buf_init(&b, 1u << 20);
    if (line_webhook_body(&b, destination, &ev, 1) != OC_OK) {
        oc_buf_dispose(&b);
        return NULL;
    }
    return oc_buf_detach(&b, NULL);
}

/* The channel account's bot id, for the body's "destination" (best effort: LINE always sends
 * it, the connector routes by the URL). */
static const char *lookup_destination(ctl_t *ctl, const char *account)
{
    PB(GetChannelAccountRequest) req = PB_INIT(GET_CHANNEL_ACCOUNT_REQUEST);
    PB(GetChannelAccountResponse) *resp = NULL;
    int rc;

    if (ctl->tenant == NULL || !oc_uuid_valid(ctl->tenant)) return NULL;
    req.tenant_id = (char *)ctl->tenant;
    req.channel_account_id = (char *)account;
    ctl->quiet = true;
    rc = ctl_call(ctl, ctl->persistence, CTL_PERSISTENCE "GetChannelAccount", &req.base,
                  &omnichat__persistence__v1__get_channel_account_response__descriptor,
                  (ProtobufCMessage **)&resp, NULL);
    ctl->quiet = false;
    if (rc != 0 || resp->channel_account == NULL) return NULL;
    return resp->channel_account->external_account_id;
}

/* POSTs a signed webhook body; fills *response. 0, or the failure already reported. */
static int post_signed(ctl_t *ctl, const char *full_url, const char *url, const char *body,
                       const char *sig_header, const char *agent, oc_http_result_t *response)
{
    const char *headers[] = {sig_header, NULL};
    oc_http_call_t call = {.method = "POST",
                           .path = full_url,
                           .headers = headers,
                           .content_type = "application/json; charset=utf-8",
                           .body = body,
                           .body_len = strlen(body),
                           .timeout_ms = (long)ctl->timeout_ms};
    oc_http_client_opts_t hopts = {.user_agent = agent};
    oc_http_client_t *http;
    oc_error_t err;
    int rc = 0;

    oc_error_clear(&err);
    if ((http = oc_http_client_create(&hopts, &err)) == NULL)
        return ctl_fail(ctl, "could not set up the HTTP client: %s", err.msg);
    if (oc_http_client_call(http, &call, response) != OC_OK) {
        rc = ctl_fail(ctl, "could not build the request");
    } else if (response->transport != OC_HTTP_TX_OK) {
        rc = ctl_fail(ctl, "POST %s failed: %s", full_url,
                      oc_http_transport_name(response->transport));
        if (response->transport == OC_HTTP_TX_CONNECT)
            fprintf(stderr, "  (is the connector's HTTP listener at %s? --url sets it)\n", url);
    }
    oc_http_client_destroy(http);
    return rc;
}

/* A non-2xx answer of the webhook, reported. */
static int webhook_refused(ctl_t *ctl, const oc_http_result_t *response, const char *secret_hint)
{
    const char *why =
        rnd_cell(ctl->arena, response->body.data != NULL ? response->body.data : "", 300, 0);
    int rc = ctl_fail(ctl, "the webhook answered HTTP %ld%s%s", response->status,
                      why[0] ? ": " : "", why);
    if (response->status == 401) fprintf(stderr, "  (signature refused: is %s?)\n", secret_hint);
    return rc;
}

/* simulate meta-webhook: one Messenger (or Instagram) text message, signed with the app
 * secret over the raw bytes (non-ASCII escaped as Meta does). */
static int simulate_meta(ctl_t *ctl, const char *account, const char *secret_file, const char *user,
                         const char *text, const char *url, bool instagram)
{
    char mid[40], hex[33], sig[META_SIGNATURE_LEN + 1], *secret = NULL, *full_url, *sig_header;
    oc_http_result_t response;
    oc_buf_t b;
    int rc;

    oc_http_result_init(&response, RESPONSE_MAX);
    oc_buf_init(&b, 1u << 20);
    if (!random_hex(hex, 16)) {
        rc = ctl_fail(ctl, "could not make a message id (no randomness)");
        goto out;
    }
    snprintf(mid, sizeof mid, "m_%s", hex);
    meta_event_t ev = {.kind = META_EV_MESSAGE,
                       .sender_id = user,
                       .recipient_id = account,
                       .timestamp_ms = oc_now_ms(),
                       .mid = mid,
                       .text = text};
    if (meta_webhook_body(&b, instagram ? "instagram" : "page", account, &ev, 1) != OC_OK) {
        rc = ctl_fail(ctl, "could not build the webhook body");
        goto out;
    }
    if ((rc = ctl_read_secret(ctl, "app secret", secret_file, SECRET_FILE_MAX, &secret)) != 0)
        goto out;
    if (!meta_sign(secret, strlen(secret), b.data, b.len, sig)) {
        rc = ctl_fail(ctl, "could not sign the body");
        goto out;
    }
    size_t ulen = strlen(url);
    while (ulen > 0 && url[ulen - 1] == '/')
        ulen--;
    full_url = oc_arena_sprintf(ctl->arena, "%.*s/webhooks/meta", (int)ulen, url);
    sig_header = oc_arena_sprintf(ctl->arena, "X-Hub-Signature-256: %s", sig);
    if (full_url == NULL || sig_header == NULL) {
        rc = ctl_fail(ctl, "out of memory");
        goto out;
    }
    if ((rc = post_signed(ctl, full_url, url, b.data, sig_header, "facebookexternalua",
                          &response)) != 0)
        goto out;
    if (ctl->json) {
        rc = ctl_print_json(json_pack("{s:s, s:I, s:s, s:s}", "url", full_url, "status",
                                      (json_int_t)response.status, "message_id", mid, "user_id",
                                      user));
        if (rc == 0 && (response.status < 200 || response.status > 299)) rc = CTL_EXIT_FAIL;
        goto out;
    }
    printf("POST %s -> HTTP %ld\n", full_url, response.status);
    printf("%s message id %s from %s\n", instagram ? "Instagram" : "Messenger", mid, user);
    rc = response.status >= 200 && response.status <= 299
             ? CTL_EXIT_OK
             : webhook_refused(ctl, &response, "--app-secret-file the connector's app secret");
out:
    ctl_secret_free(secret);
    oc_buf_dispose(&b);
    oc_http_result_dispose(&response);
    return rc;
}

int cmd_simulate(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] =
        "omnichatctl simulate line-webhook --account ID --secret-file FILE --user U... "
        "--text TEXT [--url http://127.0.0.1:8081] [--destination BOT_USER_ID]\n"
        "       omnichatctl simulate meta-webhook --account-id ID --app-secret-file FILE "
        "--user PSID --text TEXT [--instagram] [--url http://127.0.0.1:8082]";
    const char *account = NULL, *secret_file = NULL, *user = NULL, *text = NULL, *url = NULL,
               *destination = NULL, *account_id = NULL, *app_secret_file = NULL, *pos[1];
    bool instagram = false;
    size_t npos;
    ctl_opt_t opts[] = {{"account", &account, NULL},
                        {"secret-file", &secret_file, NULL},
                        {"user", &user, NULL},
                        {"text", &text, NULL},
                        {"url", &url, NULL},
                        {"destination", &destination, NULL},
                        {"account-id", &account_id, NULL},
                        {"app-secret-file", &app_secret_file, NULL},
                        {"instagram", NULL, &instagram}};
    char message_id[19], *secret = NULL, *body = NULL, *full_url = NULL, *sig_header = NULL;
    char sig[LINE_SIGNATURE_LEN + 1];
    oc_http_result_t response;
    long status = 0;
    int rc;

    oc_http_result_init(&response, RESPONSE_MAX);
    if ((rc = ctl_parse(ctl, argc, argv, opts, 9, pos, 1, &npos, usage)) != 0) goto out;
    const char *url_given = url;
    if (url == NULL) url = DEFAULT_URL;
    if (npos == 1 && strcmp(pos[0], "meta-webhook") == 0) {
        if (account_id == NULL || app_secret_file == NULL || user == NULL || text == NULL) {
            rc = ctl_usage_error(ctl, "--account-id, --app-secret-file, --user and --text are "
                                      "required");
            goto out;
        }
        if (text[0] == '\0' || !oc_utf8_valid(text, strlen(text))) {
            rc = ctl_usage_error(ctl, "--text: must be non-empty UTF-8");
            goto out;
        }
        rc = simulate_meta(ctl, account_id, app_secret_file, user, text,
                           url_given != NULL ? url_given : DEFAULT_META_URL, instagram);
        goto out;
    }
    if (npos != 1 || strcmp(pos[0], "line-webhook") != 0) {
        ctl_usage_error(ctl,
                        npos == 1 ? "unknown simulation '%s' (line-webhook, meta-webhook)"
                                  : "what to simulate? (line-webhook, meta-webhook)%s",
                        npos == 1 ? pos[0] : "");
        fprintf(stderr, "usage: %s\n", usage);
        rc = CTL_EXIT_USAGE;
        goto out;
    }
    if (account == NULL || secret_file == NULL || user == NULL || text == NULL) {
        rc = ctl_usage_error(ctl, "--account, --secret-file, --user and --text are required");
        goto out;
    }
    if (!oc_uuid_valid(account)) {
        rc = ctl_usage_error(ctl, "--account: '%s' is not a channel account id (UUID)", account);
        goto out;
    }
    if (!line_user_id(user)) {
        rc = ctl_usage_error(ctl, "--user: a LINE user id is U followed by 32 lowercase hex "
                                  "digits");
        goto out;
    }
    if (text[0] == '\0' || !oc_utf8_valid(text, strlen(text))) {
        rc = ctl_usage_error(ctl, "--text: must be non-empty UTF-8");
        goto out;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        rc = ctl_usage_error(ctl, "--url: must start with http:// or https://");
        goto out;
    }
    if ((rc = ctl_read_secret(ctl, "channel secret", secret_file, SECRET_FILE_MAX, &secret)) != 0)
        goto out;
    if (destination == NULL) destination = lookup_destination(ctl, account);
    if (destination == NULL) destination = "";

    if (!random_digits(message_id, 18)) {
        rc = ctl_fail(ctl, "could not make a message id (no randomness)");
        goto out;
    }
    body = build_body(destination, user, text, message_id, oc_now_ms());
    if (body == NULL) {
        rc = ctl_fail(ctl, "could not build the webhook body");
        goto out;
    }
    /* x-line-signature = base64(HMAC-SHA256(channel secret, raw body)). */
    if (!line_sign(secret, strlen(secret), body, strlen(body), sig)) {
        rc = ctl_fail(ctl, "could not sign the body");
        goto out;
    }
    ctl_secret_free(secret);
    secret = NULL;

    size_t ulen = strlen(url);
    while (ulen > 0 && url[ulen - 1] == '/')
        ulen--;
    full_url = oc_arena_sprintf(ctl->arena, "%.*s/webhooks/line/%s", (int)ulen, url, account);
    sig_header = oc_arena_sprintf(ctl->arena, "x-line-signature: %s", sig);
    if (full_url == NULL || sig_header == NULL) {
        rc = ctl_fail(ctl, "out of memory");
        goto out;
    }

    if ((rc = post_signed(ctl, full_url, url, body, sig_header, "LineBotWebhook/2.0 (omnichatctl)",
                          &response)) != 0)
        goto out;
    status = response.status;

    if (ctl->json) {
        json_t *root = json_object();
        if (root != NULL) {
            json_object_set_new(root, "url", json_string(full_url));
            json_object_set_new(root, "status", json_integer(status));
            json_object_set_new(root, "message_id", json_string(message_id));
            json_object_set_new(root, "user_id", json_string(user));
        }
        rc = ctl_print_json(root);
        if (rc == 0 && (status < 200 || status > 299)) rc = CTL_EXIT_FAIL;
        goto out;
    }
    printf("POST %s -> HTTP %ld\n", full_url, status);
    printf("LINE message id %s from %s\n", message_id, user);
    if (status < 200 || status > 299) {
        rc = webhook_refused(ctl, &response,
                             "--secret-file the channel secret this account was connected with");
        goto out;
    }
    rc = CTL_EXIT_OK;
out:
    ctl_secret_free(secret);
    free(body);
    oc_http_result_dispose(&response);
    return rc;
}
