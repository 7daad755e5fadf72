/* Meta's webhook wire format (see meta_wire.h). */
#include "meta_wire.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/util.h"

static bool hmac_hex(const char *key, size_t key_len, const char *data, size_t len,
                     char out[META_PROOF_LEN + 1])
{
    uint8_t mac[32];
    unsigned int mac_len = 0;

    out[0] = '\0';
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, len, mac, &mac_len) ==
            NULL ||
        mac_len != sizeof mac)
        return false;
    oc_hex_encode(mac, sizeof mac, out);
    OPENSSL_cleanse(mac, sizeof mac);
    return true;
}

bool meta_sign(const char *secret, size_t secret_len, const char *body, size_t len,
               char out[META_SIGNATURE_LEN + 1])
{
    memcpy(out, "sha256=", 7);
    if (hmac_hex(secret, secret_len, body, len, out + 7)) return true;
    out[0] = '\0';
    return false;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

bool meta_signature_valid(const char *secret, size_t secret_len, const char *body, size_t len,
                          const char *header)
{
    uint8_t want[32], got[32];
    unsigned int mac_len = 0;
    bool ok;

    if (header == NULL || secret == NULL || secret_len == 0 || strncmp(header, "sha256=", 7) != 0 ||
        strlen(header) != META_SIGNATURE_LEN)
        return false;
    for (size_t i = 0; i < 32; i++) {
        int hi = hexval(header[7 + 2 * i]), lo = hexval(header[8 + 2 * i]);
        if (hi < 0 || lo < 0) return false;
        got[i] = (uint8_t)(hi << 4 | lo);
    }
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)(body ? body : ""), len,
             want, &mac_len) == NULL ||
        mac_len != sizeof want)
        return false;
    ok = CRYPTO_memcmp(want, got, sizeof want) == 0;
    OPENSSL_cleanse(want, sizeof want);
    return ok;
}

bool meta_appsecret_proof(const char *secret, size_t secret_len, const char *token,
                          size_t token_len, char out[META_PROOF_LEN + 1])
{
    return hmac_hex(secret, secret_len, token, token_len, out);
}

static json_t *event_json(const meta_event_t *e)
{
    json_t *ev = json_pack("{s:{s:s}, s:{s:s}, s:I}", "sender", "id", e->sender_id, "recipient",
                           "id", e->recipient_id, "timestamp", (json_int_t)e->timestamp_ms);
    json_t *m = NULL;

    if (ev == NULL) return NULL;
    switch (e->kind) {
    case META_EV_MESSAGE:
        m = json_pack("{s:s}", "mid", e->mid != NULL ? e->mid : "");
        if (m != NULL && e->is_echo) {
            json_object_set_new(m, "is_echo", json_true());
            if (e->app_id != NULL) json_object_set_new(m, "app_id", json_string(e->app_id));
            if (e->metadata != NULL) json_object_set_new(m, "metadata", json_string(e->metadata));
        }
        if (m != NULL && e->text != NULL) json_object_set_new(m, "text", json_string(e->text));
        json_object_set_new(ev, "message", m);
        break;
    case META_EV_DELIVERY:
        m = json_pack("{s:I}", "watermark", (json_int_t)e->watermark_ms);
        if (m != NULL && e->mid != NULL) json_object_set_new(m, "mids", json_pack("[s]", e->mid));
        json_object_set_new(ev, "delivery", m);
        break;
    case META_EV_READ:
        m = json_pack("{s:I}", "watermark", (json_int_t)e->watermark_ms);
        json_object_set_new(ev, "read", m);
        break;
    }
    if (m == NULL) {
        json_decref(ev);
        return NULL;
    }
    return ev;
}

oc_err_t meta_webhook_body(oc_buf_t *b, const char *object, const char *account_id,
                           const meta_event_t *events, size_t n)
{
    json_t *msgs = json_array();
    json_t *root;
    char *txt;

    for (size_t i = 0; i < n && msgs != NULL; i++)
        if (json_array_append_new(msgs, event_json(&events[i])) != 0) {
            json_decref(msgs);
            msgs = NULL;
        }
    root = msgs == NULL ? NULL
                        : json_pack("{s:s, s:[{s:s, s:I, s:o}]}", "object", object, "entry", "id",
                                    account_id, "time",
                                    (json_int_t)(n > 0 ? events[n - 1].timestamp_ms : oc_now_ms()),
                                    "messaging", msgs);
    /* Meta escapes non-ASCII as \uXXXX and signs those bytes. */
    txt = root != NULL ? json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER)
                       : NULL;
    json_decref(root);
    if (txt == NULL) return b->failed = OC_E_NOMEM;
    oc_buf_appends(b, txt);
    free(txt);
    return b->failed;
}
