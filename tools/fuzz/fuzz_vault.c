/* libFuzzer harness for the vault key-file parser: no crash, no leak, no input text in errors. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/vault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every message the parser may produce, with sample numbers. Comparing messages with digit runs
 * folded to '#' proves that no byte of the input (which could be key material) reaches them. */
static const char *const templates[] = {
    "vault keys: no keys (expected lines key_id:base64_key)",
    "vault keys: line 1: expected key_id:base64_key",
    "vault keys: line 1: key id must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
    "vault keys: line 1: key is empty",
    "vault keys: line 1: key must be 32 bytes, it is longer",
    "vault keys: line 1: key is not valid base64",
    "vault keys: line 1: key must be 32 bytes, not 1",
    "vault keys: line 1: duplicate key id (first on line 1)",
    "vault keys: line 1: same key as line 1 (every key id needs its own key)",
    "vault keys: line 1: more than 64 keys",
    "vault keys: out of memory",
};

static void fold_digits(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; in[i] != '\0' && o + 1 < cap; i++) {
        if (isdigit((unsigned char)in[i])) {
            if (o == 0 || out[o - 1] != '#') out[o++] = '#';
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
}

static int known_message(const char *msg)
{
    char m[OC_ERROR_MSG_MAX + 1], t[OC_ERROR_MSG_MAX + 1];
    fold_digits(msg, m, sizeof(m));
    for (size_t i = 0; i < sizeof(templates) / sizeof(templates[0]); i++) {
        fold_digits(templates[i], t, sizeof(t));
        if (strcmp(m, t) == 0) return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_t *v = oc_vault_create_from_buffer((const char *)data, size, &err);
    if (v == NULL) {
        if (err.code == OC_OK || !known_message(err.msg)) abort();
        return 0;
    }
    /* A vault that loads must work: seal under the active key and open again. */
    size_t n = oc_vault_key_count(v);
    const char *active = oc_vault_active_key_id(v);
    if (n < 1 || n > OC_VAULT_MAX_KEYS || !oc_vault_has_key(v, active)) abort();
    const char *kid = NULL;
    uint8_t *sealed = NULL;
    size_t slen = 0;
    oc_vault_secret_t s = {NULL, 0};
    if (oc_vault_seal(v, "t", "a", "f", data, size < 64 ? size : 64, &kid, &sealed, &slen, NULL) !=
            OC_OK ||
        strcmp(kid, active) != 0 ||
        oc_vault_open(v, "t", "a", "f", kid, sealed, slen, &s, NULL) != OC_OK ||
        s.len != (size < 64 ? size : 64) || memcmp(s.data, data, s.len) != 0)
        abort();
    oc_vault_secret_dispose(&s);
    free(sealed);
    oc_vault_destroy(v);
    return 0;
}
