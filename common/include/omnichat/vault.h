/* Credential vault: seals channel secrets with AES-256-GCM under keys loaded from a key file. */
#ifndef OMNICHAT_VAULT_H
#define OMNICHAT_VAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/err.h"

/*
 * Sealed format (the `ciphertext` bytes of persistence.v1.SealedCredential):
 *
 *     nonce (12 bytes, random) || ciphertext (same length as the plaintext) || tag (16 bytes)
 *
 * The associated data, which is authenticated but not stored, binds the domain string
 * "omnichat-vault-v1", the key id, the tenant id, the channel account id and the field name,
 * each as a 4-byte big-endian length followed by its bytes. A sealed value copied to another
 * row, field or key id therefore fails to open. UUID-shaped ids are bound in lowercase, so the
 * case in which a caller spells a UUID does not matter; every other id is bound byte for byte.
 *
 * Key file (see docs/vault.md): one `key_id:base64(32 bytes)` per line; blank lines and lines
 * starting with '#' are ignored. The FIRST key in the file is the active key used for new seals;
 * every key listed can open.
 */

#define OC_VAULT_KEY_LEN 32   /* AES-256 */
#define OC_VAULT_NONCE_LEN 12 /* 96-bit GCM nonce */
#define OC_VAULT_TAG_LEN 16   /* 128-bit GCM tag */
#define OC_VAULT_OVERHEAD (OC_VAULT_NONCE_LEN + OC_VAULT_TAG_LEN)
#define OC_VAULT_KEY_ID_MAX 64       /* key ids: 1..64 of [A-Za-z0-9._-] */
#define OC_VAULT_ID_MAX 256          /* tenant id, channel account id and field name: 1..256 */
#define OC_VAULT_PLAINTEXT_MAX 65536 /* a credential is a token, not a document */
#define OC_VAULT_MAX_KEYS 64         /* keys per key file */
#define OC_VAULT_FILE_MAX 65536      /* bytes per key file */
/* Sealed length for a plaintext of n bytes. */
#define OC_VAULT_SEALED_LEN(n) ((size_t)(n) + OC_VAULT_OVERHEAD)
/* Buffer size oc_vault_keygen_line needs: id, ':', 44 base64 characters, NUL. */
#define OC_VAULT_KEYGEN_LINE_MAX (OC_VAULT_KEY_ID_MAX + 1 + 44 + 1)

/* The message of every failure to open a sealed value, whatever the reason. */
#define OC_VAULT_UNSEAL_FAILED_MSG "credential: could not be unsealed"

typedef struct oc_vault oc_vault_t;

/*
 * A plaintext returned by oc_vault_open: `data` is in oc_secret_alloc memory (left out of core
 * dumps; never free() it), NUL-terminated after `len`
 * bytes (so a token can be used as a C string; it may still contain NUL bytes inside), and
 * owned by the caller, who must release it with oc_vault_secret_dispose as soon as possible.
 */
typedef struct oc_vault_secret {
    char *data;
    size_t len;
} oc_vault_secret_t;

/* Flags for oc_vault_create_from_file. */
#define OC_VAULT_F_REQUIRE_PRIVATE 0x1u /* refuse a key file group or others may access */

/* Non-fatal findings about a loaded vault, from oc_vault_warnings. */
#define OC_VAULT_W_FILE_NOT_PRIVATE 0x1u /* the key file has group or other permission bits */

/*
 * Loads every key from the key file at `path` (symlinks are followed, as Kubernetes mounts
 * Secrets through them). The file is read with plain read(2), never stdio, so no copy of the
 * key material stays behind in a FILE buffer; the read buffer is wiped before it is freed.
 *
 * File checks: it must be a regular file of at most OC_VAULT_FILE_MAX bytes and not writable by
 * others. Group or other permission bits are a warning (OC_VAULT_W_FILE_NOT_PRIVATE) unless
 * `flags` has OC_VAULT_F_REQUIRE_PRIVATE, which makes them an error.
 *
 * Returns a heap vault owned by the caller (oc_vault_destroy), or NULL with `err` set:
 * OC_E_IO (cannot open/read; errno text), OC_E_CONFIG (file checks or contents: the message
 * names the file and line number but never any part of a line's text), OC_E_NOMEM,
 * OC_E_INTERNAL (OpenSSL). Blocks on file I/O. Thread-safe (touches no shared state).
 */
oc_vault_t *oc_vault_create_from_file(const char *path, unsigned flags, oc_error_t *err);

/*
 * Like oc_vault_create_from_file, for key-file text already in memory (tests, fuzzing, a secret
 * handed over by another mechanism). `text` is not modified or retained; the caller still owns
 * and wipes it. Error messages say "vault keys: line N: ...". Does not block.
 */
oc_vault_t *oc_vault_create_from_buffer(const char *text, size_t len, oc_error_t *err);

/* Wipes every key (OPENSSL_cleanse) and frees the vault. NULL is fine. Must not race with any
 * other call on the same vault. */
void oc_vault_destroy(oc_vault_t *v);

/*
 * After creation a vault is immutable: every function below may be called from any number of
 * threads at once (each seal/open uses its own EVP_CIPHER_CTX).
 */

/* Id of the active key (the first in the file). Owned by the vault, valid until destroy. */
const char *oc_vault_active_key_id(const oc_vault_t *v);
/* Number of keys loaded (at least 1). */
size_t oc_vault_key_count(const oc_vault_t *v);
/* True when a key with this id is loaded. Lets an operator tool tell "key removed too early"
 * apart from corruption without oc_vault_open revealing why it failed. */
bool oc_vault_has_key(const oc_vault_t *v, const char *key_id);
/* OC_VAULT_W_* bits found while loading (0 for a vault created from a buffer). */
unsigned oc_vault_warnings(const oc_vault_t *v);

/*
 * Seals plaintext[0..len) for (tenant_id, channel_account_id, field) under the active key.
 * plaintext may be NULL when len is 0. Every id must be a NUL-terminated string of 1 to
 * OC_VAULT_ID_MAX bytes.
 *
 * On OC_OK: *key_id_out points at the active key id (owned by the vault, valid until destroy;
 * store it as SealedCredential.key_id), *sealed_out is a malloc'ed buffer of
 * *sealed_len_out == OC_VAULT_SEALED_LEN(len) bytes owned by the caller (free()); it holds no
 * plaintext, so it need not be wiped. On failure the outputs are NULL/0.
 *
 * Errors: OC_E_INVALID (missing or over-long argument), OC_E_TOO_LARGE (len >
 * OC_VAULT_PLAINTEXT_MAX), OC_E_NOMEM, OC_E_INTERNAL (OpenSSL or RNG failure). The plaintext is
 * never copied: it is encrypted straight into the output.
 */
oc_err_t oc_vault_seal(const oc_vault_t *v, const char *tenant_id, const char *channel_account_id,
                       const char *field, const void *plaintext, size_t len,
                       const char **key_id_out, uint8_t **sealed_out, size_t *sealed_len_out,
                       oc_error_t *err);

/*
 * Opens a value sealed by oc_vault_seal for the same (tenant_id, channel_account_id, field)
 * under the key named `key_id`. On OC_OK, *out holds the plaintext (see oc_vault_secret_t; the
 * caller disposes it). On failure *out is {NULL, 0}.
 *
 * Errors: OC_E_INVALID (missing or over-long id argument, NULL sealed with a non-zero length);
 * OC_E_PERMISSION with OC_VAULT_UNSEAL_FAILED_MSG for every reason the value does not open:
 * unknown key id, wrong tenant/account/field/key id, truncated or tampered bytes. The reasons
 * are deliberately not told apart (use oc_vault_has_key to diagnose a missing key).
 * OC_E_NOMEM, OC_E_INTERNAL (OpenSSL). Decrypts straight into the returned buffer and wipes
 * it before freeing when authentication fails.
 */
oc_err_t oc_vault_open(const oc_vault_t *v, const char *tenant_id, const char *channel_account_id,
                       const char *field, const char *key_id, const uint8_t *sealed,
                       size_t sealed_len, oc_vault_secret_t *out, oc_error_t *err);

/* Wipes (OPENSSL_cleanse) and frees s->data, then sets *s to {NULL, 0}. NULL s, a zeroed s and
 * calling it twice are fine. */
void oc_vault_secret_dispose(oc_vault_secret_t *s);

/*
 * Writes one key-file line "key_id:base64(32 fresh random bytes)" (no newline, NUL-terminated)
 * into out[0..outlen), for `omnichatctl vault-keygen`. The key comes from OpenSSL's private
 * DRBG (RAND_priv_bytes). `out` then holds key material: the caller wipes it (OPENSSL_cleanse)
 * after writing it out. outlen must be at least OC_VAULT_KEYGEN_LINE_MAX.
 *
 * Errors: OC_E_INVALID (key id not 1..OC_VAULT_KEY_ID_MAX of [A-Za-z0-9._-], outlen too small),
 * OC_E_INTERNAL (RNG failure). On failure `out` is wiped. Thread-safe.
 */
oc_err_t oc_vault_keygen_line(const char *key_id, char *out, size_t outlen, oc_error_t *err);

#endif
