/* LINE's webhook wire format: signer, verifier, text message event bodies. */
#include "line_wire.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "omnichat/util.h"

bool line_sign(const char *secret, size_t secret_len, const char *body, size_t len,
               char out[LINE_SIGNATURE_LEN + 1])
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;

    out[0] = '\0';
    if (secret == NULL ||
        HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)body, len, mac,
             &mac_len) == NULL ||
        mac_len != 32)
        return false;
    oc_base64_encode(mac, mac_len, out);
    OPENSSL_cleanse(mac, sizeof mac);
    return true;
}

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

static void member(oc_buf_t *b, const char *key, const char *value)
{
    oc_buf_appendf(b, "\"%s\":\"", key);
    oc_buf_append_json_str(b, value, strlen(value));
    oc_buf_appends(b, "\"");
}

oc_err_t line_webhook_body(oc_buf_t *b, const char *destination, const line_text_event_t *events,
                           size_t n)
{
    oc_buf_appends(b, "{");
    member(b, "destination", destination);
    oc_buf_appends(b, ",\"events\":[");
    for (size_t i = 0; i < n; i++) {
        const line_text_event_t *e = &events[i];
        oc_buf_appends(b, i > 0 ? ",{\"type\":\"message\",\"mode\":\"active\","
                                : "{\"type\":\"message\",\"mode\":\"active\",");
        oc_buf_appendf(b, "\"timestamp\":%" PRId64 ",", e->timestamp_ms);
        member(b, "webhookEventId", e->webhook_event_id);
        oc_buf_appends(b, ",\"deliveryContext\":{\"isRedelivery\":false},"
                          "\"source\":{\"type\":\"user\",");
        member(b, "userId", e->user_id);
        oc_buf_appends(b, "},");
        member(b, "replyToken", e->reply_token);
        oc_buf_appends(b, ",\"message\":{");
        member(b, "id", e->message_id);
        oc_buf_appends(b, ",\"type\":\"text\",");
        member(b, "text", e->text);
        oc_buf_appends(b, ",");
        member(b, "quoteToken", e->quote_token);
        oc_buf_appends(b, "}}");
    }
    oc_buf_appends(b, "]}");
    return b->failed;
}
