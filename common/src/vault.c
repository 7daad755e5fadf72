/* Credential vault: key-file parsing and AES-256-GCM sealing bound to tenant, account and field. */
#include "omnichat/vault.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "omnichat/util.h"

/* Changing the format or the associated-data layout means a new domain string, so values sealed
 * under the old layout can never be mistaken for new ones. */
#define VAULT_DOMAIN "omnichat-vault-v1"
#define B64_KEY_MAX 128 /* longest base64 text we decode; 32 bytes need 44 */

/* Domain, key id and three ids, each behind a 4-byte length. */
#define AAD_MAX (5 * 4 + (sizeof(VAULT_DOMAIN) - 1) + OC_VAULT_KEY_ID_MAX + 3 * OC_VAULT_ID_MAX)

typedef struct vault_key {
    char id[OC_VAULT_KEY_ID_MAX + 1];
    unsigned char key[OC_VAULT_KEY_LEN];
} vault_key_t;

struct oc_vault {
    /* Fetched once: an EVP_CIPHER is immutable and may be shared by threads, and fetching per
     * call would take a provider lock on every seal. */
    EVP_CIPHER *cipher;
    unsigned warnings;
    size_t nkeys;
    vault_key_t keys[OC_VAULT_MAX_KEYS]; /* keys[0] is active; inline so one cleanse wipes all */
};

static bool key_id_valid(const char *s, size_t n)
{
    if (n == 0 || n > OC_VAULT_KEY_ID_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        /* ASCII ranges, not isalnum(): the locale must not change which ids are valid. */
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

static bool is_b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Strict shape check before decoding: the shared decoder's leniency (if any) must not decide
 * what a key file may contain, and a clear "not base64" beats a confusing length error. */
static bool b64_shape_valid(const char *s, size_t n)
{
    if (n == 0 || n % 4 != 0) return false;
    size_t pad = 0;
    if (s[n - 1] == '=') pad = (n >= 2 && s[n - 2] == '=') ? 2 : 1;
    for (size_t i = 0; i < n - pad; i++)
        if (!is_b64_char((unsigned char)s[i])) return false;
    return true;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/*
 * Parses key-file text. Messages carry the label and a line number only: any part of a line
 * could be key material pasted in the wrong place, so no line text is ever echoed.
 */
static oc_vault_t *parse_keys(const char *text, size_t len, const char *label, oc_error_t *err)
{
    oc_vault_t *v = NULL;
    oc_vault_t *ret = NULL;
    size_t first_line[OC_VAULT_MAX_KEYS]; /* line of each key, for duplicate messages */
    uint8_t raw[B64_KEY_MAX];

    if (text == NULL && len > 0) {
        oc_error_set(err, OC_E_INVALID, "%s: no text", label);
        goto out;
    }
    /* The keys live inline: the whole vault goes on pages left out of core dumps. */
    v = oc_secret_alloc(sizeof(*v));
    if (v == NULL) {
        oc_error_set(err, OC_E_NOMEM, "%s: out of memory", label);
        goto out;
    }

    size_t lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        lineno++;

        /* Surrounding blanks (and the CR of a file edited on Windows) are forgiven; nothing
         * inside a line is. */
        while (n > 0 && is_blank(line[0])) {
            line++;
            n--;
        }
        while (n > 0 && is_blank(line[n - 1]))
            n--;
        if (n == 0 || line[0] == '#') continue;

        const char *colon = memchr(line, ':', n);
        if (colon == NULL) {
            oc_error_set(err, OC_E_CONFIG, "%s: line %zu: expected key_id:base64_key", label,
                         lineno);
            goto out;
        }
        size_t idlen = (size_t)(colon - line);
        const char *b64 = colon + 1;
        size_t b64len = n - idlen - 1;
        if (!key_id_valid(line, idlen)) {
            oc_error_set(err, OC_E_CONFIG,
                         "%s: line %zu: key id must be 1 to %d characters of A-Z a-z 0-9 . _ -",
                         label, lineno, OC_VAULT_KEY_ID_MAX);
            goto out;
        }
        if (b64len == 0) {
            oc_error_set(err, OC_E_CONFIG, "%s: line %zu: key is empty", label, lineno);
            goto out;
        }
        if (b64len > B64_KEY_MAX) {
            oc_error_set(err, OC_E_CONFIG, "%s: line %zu: key must be %d bytes, it is longer",
                         label, lineno, OC_VAULT_KEY_LEN);
            goto out;
        }
        if (!b64_shape_valid(b64, b64len)) {
            oc_error_set(err, OC_E_CONFIG, "%s: line %zu: key is not valid base64", label, lineno);
            goto out;
        }
        long got = oc_base64_decode(b64, b64len, raw, sizeof(raw));
        if (got < 0) {
            oc_error_set(err, OC_E_CONFIG, "%s: line %zu: key is not valid base64", label, lineno);
            goto out;
        }
        if (got != OC_VAULT_KEY_LEN) {
            oc_error_set(err, OC_E_CONFIG, "%s: line %zu: key must be %d bytes, not %ld", label,
                         lineno, OC_VAULT_KEY_LEN, got);
            goto out;
        }
        for (size_t k = 0; k < v->nkeys; k++) {
            if (strlen(v->keys[k].id) == idlen && memcmp(v->keys[k].id, line, idlen) == 0) {
                oc_error_set(err, OC_E_CONFIG, "%s: line %zu: duplicate key id (first on line %zu)",
                             label, lineno, first_line[k]);
                goto out;
            }
            /* One key under two ids is a copy-paste slip during rotation: the "new" key would
             * protect nothing the old one did not. */
            if (CRYPTO_memcmp(v->keys[k].key, raw, OC_VAULT_KEY_LEN) == 0) {
                oc_error_set(err, OC_E_CONFIG,
                             "%s: line %zu: same key as line %zu (every key id needs its own key)",
                             label, lineno, first_line[k]);
                goto out;
            }
        }
        if (v->nkeys == OC_VAULT_MAX_KEYS) {
            oc_error_set(err, OC_E_CONFIG, "%s: line %zu: more than %d keys", label, lineno,
                         OC_VAULT_MAX_KEYS);
            goto out;
        }
        vault_key_t *k = &v->keys[v->nkeys];
        memcpy(k->id, line, idlen);
        k->id[idlen] = '\0';
        memcpy(k->key, raw, OC_VAULT_KEY_LEN);
        OPENSSL_cleanse(raw, sizeof(raw));
        first_line[v->nkeys] = lineno;
        v->nkeys++;
    }
    if (v->nkeys == 0) {
        oc_error_set(err, OC_E_CONFIG, "%s: no keys (expected lines key_id:base64_key)", label);
        goto out;
    }

    v->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    if (v->cipher == NULL) {
        ERR_clear_error();
        oc_error_set(err, OC_E_INTERNAL, "%s: AES-256-GCM is not available", label);
        goto out;
    }
    ret = v;
    v = NULL;

out:
    OPENSSL_cleanse(raw, sizeof(raw));
    oc_vault_destroy(v);
    return ret;
}

oc_vault_t *oc_vault_create_from_buffer(const char *text, size_t len, oc_error_t *err)
{
    return parse_keys(text, len, "vault keys", err);
}

oc_vault_t *oc_vault_create_from_file(const char *path, unsigned flags, oc_error_t *err)
{
    oc_vault_t *ret = NULL;
    char *text = NULL;
    size_t len = 0;
    size_t cap = OC_VAULT_FILE_MAX + 1; /* one byte of slack detects a file that grew */
    int fd = -1;
    unsigned warnings = 0;
    struct stat st;
    char label[160];

    if (path == NULL || path[0] == '\0') {
        oc_error_set(err, OC_E_INVALID, "vault key file: no path");
        goto out;
    }
    snprintf(label, sizeof(label), "vault key file %s", path);

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        oc_error_set(err, OC_E_IO, "%s: could not open: %s", label, strerror(errno));
        goto out;
    }
    /* fstat on the open descriptor, not stat on the path, so the checks and the read see the
     * same file even if the Secret's symlinks are swapped in between. */
    if (fstat(fd, &st) != 0) {
        oc_error_set(err, OC_E_IO, "%s: could not stat: %s", label, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        oc_error_set(err, OC_E_CONFIG, "%s: not a regular file", label);
        goto out;
    }
    /* Whoever can write the key file can choose the key new secrets are sealed with. */
    if (st.st_mode & S_IWOTH) {
        oc_error_set(err, OC_E_CONFIG, "%s: writable by others (mode %04o)", label,
                     (unsigned)(st.st_mode & 07777));
        goto out;
    }
    /* Kubernetes mounts Secrets 0644 unless the chart sets defaultMode, so group/other read
     * bits are only an error when the caller asks for it. */
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        if (flags & OC_VAULT_F_REQUIRE_PRIVATE) {
            oc_error_set(err, OC_E_CONFIG,
                         "%s: group or others have access (mode %04o, expected 0400 or 0600)",
                         label, (unsigned)(st.st_mode & 07777));
            goto out;
        }
        warnings |= OC_VAULT_W_FILE_NOT_PRIVATE;
    }
    if (st.st_size > OC_VAULT_FILE_MAX) {
        oc_error_set(err, OC_E_CONFIG, "%s: larger than %d bytes", label, OC_VAULT_FILE_MAX);
        goto out;
    }

    /* Plain read(2) into our own buffer: stdio would leave a copy of the keys in a FILE buffer
     * that fclose frees without wiping. */
    text = malloc(cap);
    if (text == NULL) {
        oc_error_set(err, OC_E_NOMEM, "%s: out of memory", label);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, text + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            oc_error_set(err, OC_E_IO, "%s: could not read: %s", label, strerror(errno));
            goto out;
        }
        if (r == 0) break;
        len += (size_t)r;
        if (len == cap) {
            oc_error_set(err, OC_E_CONFIG, "%s: larger than %d bytes", label, OC_VAULT_FILE_MAX);
            goto out;
        }
    }

    ret = parse_keys(text, len, label, err);
    if (ret != NULL) ret->warnings = warnings;

out:
    if (text != NULL) {
        OPENSSL_cleanse(text, cap);
        free(text);
    }
    if (fd >= 0) close(fd);
    return ret;
}

void oc_vault_destroy(oc_vault_t *v)
{
    if (v == NULL) return;
    EVP_CIPHER_free(v->cipher);
    oc_secret_free(v); /* wipes */
}

const char *oc_vault_active_key_id(const oc_vault_t *v)
{
    return v->keys[0].id;
}

size_t oc_vault_key_count(const oc_vault_t *v)
{
    return v->nkeys;
}

static const vault_key_t *find_key(const oc_vault_t *v, const char *key_id)
{
    for (size_t i = 0; i < v->nkeys; i++)
        if (strcmp(v->keys[i].id, key_id) == 0) return &v->keys[i];
    return NULL;
}

bool oc_vault_has_key(const oc_vault_t *v, const char *key_id)
{
    return key_id != NULL && find_key(v, key_id) != NULL;
}

unsigned oc_vault_warnings(const oc_vault_t *v)
{
    return v->warnings;
}

static oc_err_t check_id(const char *what, const char *s, size_t max, oc_error_t *err)
{
    if (s == NULL || s[0] == '\0' || strnlen(s, max + 1) > max)
        return oc_error_set(err, OC_E_INVALID, "%s: must be 1 to %zu bytes", what, max);
    return OC_OK;
}

static void put_field(uint8_t *aad, size_t *off, const char *s, bool fold_uuid)
{
    size_t n = strlen(s);
    aad[(*off)++] = (uint8_t)(n >> 24);
    aad[(*off)++] = (uint8_t)(n >> 16);
    aad[(*off)++] = (uint8_t)(n >> 8);
    aad[(*off)++] = (uint8_t)n;
    /* A UUID typed in upper case by an operator and read back in lower case from PostgreSQL is
     * the same row; folding keeps such a credential openable without making two rows equal. */
    bool fold = fold_uuid && oc_uuid_valid(s);
    for (size_t i = 0; i < n; i++)
        aad[(*off)++] = fold ? (uint8_t)tolower((unsigned char)s[i]) : (uint8_t)s[i];
}

/*
 * Every component is length-prefixed, so no two different (key id, tenant, account, field)
 * tuples give the same bytes ("ab"+"c" vs "a"+"bc"). The key id is bound too: the same key
 * material loaded under another id must not open the value.
 */
static size_t build_aad(uint8_t aad[AAD_MAX], const char *key_id, const char *tenant_id,
                        const char *account_id, const char *field)
{
    size_t off = 0;
    put_field(aad, &off, VAULT_DOMAIN, false);
    put_field(aad, &off, key_id, false);
    put_field(aad, &off, tenant_id, true);
    put_field(aad, &off, account_id, true);
    put_field(aad, &off, field, false);
    return off;
}

static oc_err_t check_ids(const char *tenant_id, const char *account_id, const char *field,
                          oc_error_t *err)
{
    oc_err_t rc = check_id("credential: tenant_id", tenant_id, OC_VAULT_ID_MAX, err);
    if (rc == OC_OK)
        rc = check_id("credential: channel_account_id", account_id, OC_VAULT_ID_MAX, err);
    if (rc == OC_OK) rc = check_id("credential: field", field, OC_VAULT_ID_MAX, err);
    return rc;
}

oc_err_t oc_vault_seal(const oc_vault_t *v, const char *tenant_id, const char *channel_account_id,
                       const char *field, const void *plaintext, size_t len,
                       const char **key_id_out, uint8_t **sealed_out, size_t *sealed_len_out,
                       oc_error_t *err)
{
    oc_err_t rc = OC_OK;
    uint8_t *sealed = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t aad[AAD_MAX];
    int outl = 0;

    *key_id_out = NULL;
    *sealed_out = NULL;
    *sealed_len_out = 0;
    rc = check_ids(tenant_id, channel_account_id, field, err);
    if (rc != OC_OK) goto out;
    if (plaintext == NULL && len > 0) {
        rc = oc_error_set(err, OC_E_INVALID, "credential: no plaintext");
        goto out;
    }
    if (len > OC_VAULT_PLAINTEXT_MAX) {
        rc = oc_error_set(err, OC_E_TOO_LARGE, "credential: longer than %d bytes",
                          OC_VAULT_PLAINTEXT_MAX);
        goto out;
    }

    const vault_key_t *k = &v->keys[0];
    size_t aadlen = build_aad(aad, k->id, tenant_id, channel_account_id, field);
    sealed = malloc(OC_VAULT_SEALED_LEN(len));
    ctx = EVP_CIPHER_CTX_new();
    if (sealed == NULL || ctx == NULL) {
        rc = oc_error_set(err, OC_E_NOMEM, "credential: out of memory");
        goto out;
    }
    /* A fresh random nonce per seal: with 96 bits, collisions stay negligible for far more
     * seals than one key will ever see (rotate long before 2^32 seals per key). */
    uint8_t *nonce = sealed;
    uint8_t *body = sealed + OC_VAULT_NONCE_LEN;
    uint8_t *tag = body + len;
    if (RAND_bytes(nonce, OC_VAULT_NONCE_LEN) != 1) {
        rc = oc_error_set(err, OC_E_INTERNAL, "credential: random number generator failed");
        goto out;
    }
    /* AES-GCM's default IV length is the 12 bytes we use, so no SET_IVLEN is needed. */
    if (EVP_EncryptInit_ex2(ctx, v->cipher, k->key, nonce, NULL) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aadlen) != 1 ||
        (len > 0 && EVP_EncryptUpdate(ctx, body, &outl, plaintext, (int)len) != 1) ||
        EVP_EncryptFinal_ex(ctx, body + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, OC_VAULT_TAG_LEN, tag) != 1) {
        rc = oc_error_set(err, OC_E_INTERNAL, "credential: could not be sealed");
        goto out;
    }
    *key_id_out = k->id;
    *sealed_out = sealed;
    *sealed_len_out = OC_VAULT_SEALED_LEN(len);
    sealed = NULL;

out:
    if (rc != OC_OK)
        ERR_clear_error(); /* do not leave our failure on the thread's queue for someone else */
    /* Frees the key schedule with it: OpenSSL wipes cipher contexts on free. */
    EVP_CIPHER_CTX_free(ctx);
    free(sealed); /* nonce and partial ciphertext only, never plaintext */
    return rc;
}

oc_err_t oc_vault_open(const oc_vault_t *v, const char *tenant_id, const char *channel_account_id,
                       const char *field, const char *key_id, const uint8_t *sealed,
                       size_t sealed_len, oc_vault_secret_t *out, oc_error_t *err)
{
    oc_err_t rc = OC_OK;
    char *plain = NULL;
    size_t plen = 0;
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t aad[AAD_MAX];
    uint8_t tag[OC_VAULT_TAG_LEN];
    int outl = 0;

    out->data = NULL;
    out->len = 0;
    rc = check_ids(tenant_id, channel_account_id, field, err);
    if (rc == OC_OK) rc = check_id("credential: key_id", key_id, OC_VAULT_KEY_ID_MAX, err);
    if (rc == OC_OK && sealed == NULL && sealed_len > 0)
        rc = oc_error_set(err, OC_E_INVALID, "credential: no sealed value");
    if (rc != OC_OK) goto out;

    /* From here on every way of not opening looks the same to the caller: telling "unknown
     * key", "wrong row" and "tampered" apart would help only someone probing the store. */
    const vault_key_t *k = find_key(v, key_id);
    if (k == NULL || sealed_len < OC_VAULT_OVERHEAD ||
        sealed_len > OC_VAULT_SEALED_LEN(OC_VAULT_PLAINTEXT_MAX)) {
        rc = oc_error_set(err, OC_E_PERMISSION, OC_VAULT_UNSEAL_FAILED_MSG);
        goto out;
    }
    plen = sealed_len - OC_VAULT_OVERHEAD;
    size_t aadlen = build_aad(aad, k->id, tenant_id, channel_account_id, field);
    const uint8_t *nonce = sealed;
    const uint8_t *body = sealed + OC_VAULT_NONCE_LEN;
    /* A copy because EVP_CTRL_AEAD_SET_TAG takes a non-const pointer. */
    memcpy(tag, body + plen, OC_VAULT_TAG_LEN);

    plain = oc_secret_alloc(plen + 1);
    ctx = EVP_CIPHER_CTX_new();
    if (plain == NULL || ctx == NULL) {
        rc = oc_error_set(err, OC_E_NOMEM, "credential: out of memory");
        goto out;
    }
    if (EVP_DecryptInit_ex2(ctx, v->cipher, k->key, nonce, NULL) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aadlen) != 1 ||
        (plen > 0 && EVP_DecryptUpdate(ctx, (uint8_t *)plain, &outl, body, (int)plen) != 1) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, OC_VAULT_TAG_LEN, tag) != 1) {
        rc = oc_error_set(err, OC_E_INTERNAL, "credential: could not be unsealed (crypto error)");
        goto out;
    }
    if (EVP_DecryptFinal_ex(ctx, (uint8_t *)plain + plen, &outl) != 1) {
        rc = oc_error_set(err, OC_E_PERMISSION, OC_VAULT_UNSEAL_FAILED_MSG);
        goto out;
    }
    plain[plen] = '\0';
    out->data = plain;
    out->len = plen;
    plain = NULL;

out:
    if (rc != OC_OK) ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    /* Unauthenticated plaintext must not outlive this call, even in freed memory. */
    oc_secret_free(plain); /* wipes */
    return rc;
}

void oc_vault_secret_dispose(oc_vault_secret_t *s)
{
    if (s == NULL) return;
    oc_secret_free(s->data); /* wipes */
    s->data = NULL;
    s->len = 0;
}

oc_err_t oc_vault_keygen_line(const char *key_id, char *out, size_t outlen, oc_error_t *err)
{
    oc_err_t rc = OC_OK;
    uint8_t key[OC_VAULT_KEY_LEN];

    if (out == NULL || outlen < OC_VAULT_KEYGEN_LINE_MAX) {
        rc = oc_error_set(err, OC_E_INVALID, "vault keygen: output buffer needs %d bytes",
                          OC_VAULT_KEYGEN_LINE_MAX);
        goto out;
    }
    if (key_id == NULL || !key_id_valid(key_id, strnlen(key_id, OC_VAULT_KEY_ID_MAX + 1))) {
        rc = oc_error_set(err, OC_E_INVALID,
                          "vault keygen: key id must be 1 to %d characters of A-Z a-z 0-9 . _ -",
                          OC_VAULT_KEY_ID_MAX);
        goto out;
    }
    /* The private DRBG is OpenSSL's stream for long-term secrets, kept apart from the public one
     * that also produces our nonces. */
    if (RAND_priv_bytes(key, sizeof(key)) != 1) {
        rc = oc_error_set(err, OC_E_INTERNAL, "vault keygen: random number generator failed");
        goto out;
    }
    size_t idlen = strlen(key_id);
    memcpy(out, key_id, idlen);
    out[idlen] = ':';
    oc_base64_encode(key, sizeof(key), out + idlen + 1);

out:
    if (rc != OC_OK) {
        ERR_clear_error();
        if (out != NULL && outlen > 0) OPENSSL_cleanse(out, outlen);
    }
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}
