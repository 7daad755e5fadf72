/* Small helpers with no better home: ids, encodings, UTF-8, JSON checks, clocks. */
#ifndef OMNICHAT_UTIL_H
#define OMNICHAT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "omnichat/err.h"

#define OC_UUID_STR_LEN 36 /* without the NUL */

/* Random UUIDv4 / time-ordered UUIDv7 (48-bit ms timestamp, then random) into out[37].
 * Uses OpenSSL's CSPRNG. Thread-safe. Returns OC_OK or OC_E_INTERNAL. */
oc_err_t oc_uuid_v4(char out[OC_UUID_STR_LEN + 1]);
/* n bytes of RAND_bytes output, taken from a per-thread block (cheap for small n): for
 * identifiers and jitter, never for keys or nonces. */
oc_err_t oc_random_id_bytes(void *out, size_t n);
oc_err_t oc_uuid_v7(char out[OC_UUID_STR_LEN + 1]);
/* True when s is a canonical lowercase or uppercase 8-4-4-4-12 hex UUID (exactly 36 bytes). */
bool oc_uuid_valid(const char *s);
/* Parses a UUID string into 16 bytes; false when invalid. */
bool oc_uuid_parse(const char *s, uint8_t out[16]);
/* Formats 16 bytes as a lowercase UUID into out[37]. */
void oc_uuid_format(const uint8_t in[16], char out[OC_UUID_STR_LEN + 1]);

/* Base64 (standard alphabet with padding) and base64url (no padding). Encode returns the length
 * written (out needs oc_base64_encoded_len(n) + 1 bytes, NUL-terminated). Decode returns the
 * number of bytes written, or -1 on invalid input or if it would exceed out_cap. */
size_t oc_base64_encoded_len(size_t n);
size_t oc_base64_encode(const uint8_t *in, size_t n, char *out);
size_t oc_base64url_encode(const uint8_t *in, size_t n, char *out);
long oc_base64_decode(const char *in, size_t n, uint8_t *out, size_t out_cap);
long oc_base64url_decode(const char *in, size_t n, uint8_t *out, size_t out_cap);

/* Lowercase hex; out needs 2n+1 bytes. */
void oc_hex_encode(const uint8_t *in, size_t n, char *out);

/* True when s[0..n) is valid UTF-8 (no overlongs, no surrogates, no NUL byte). */
bool oc_utf8_valid(const char *s, size_t n);
/* Number of UTF-16 code units of valid UTF-8 text (a character outside the BMP counts 2). */
size_t oc_utf16_units(const char *s, size_t n);
/* Number of Unicode code points of valid UTF-8 text. */
size_t oc_utf8_chars(const char *s, size_t n);
/* Length in bytes of the longest prefix of valid UTF-8 s[0..n) holding at most max_chars
 * code points, never cutting a character in two. */
size_t oc_utf8_prefix(const char *s, size_t n, size_t max_chars);

/* True when s[0..n) is one well-formed JSON value (nesting depth at most 64). When
 * `require_container` is set it must be an object or an array. */
bool oc_json_valid(const char *s, size_t n, bool require_container);

/* Constant-time equality of two byte strings of possibly different lengths (the length
 * difference is not hidden, the content is). */
bool oc_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Wall clock in milliseconds / microseconds since the epoch; monotonic clock in
 * microseconds / nanoseconds. */
int64_t oc_now_ms(void);
int64_t oc_now_us(void);
int64_t oc_mono_us(void);
int64_t oc_mono_ns(void);

/* Reads a whole small file (at most max bytes) into a malloc'ed NUL-terminated buffer; strips
 * one trailing newline when strip_newline. OC_E_IO (with errno text in err) or OC_E_TOO_LARGE. */
oc_err_t oc_read_file(const char *path, size_t max, bool strip_newline, char **out, size_t *len_out,
                      oc_error_t *err);

/*
 * Memory for key material (vault keys, the cursor key, secret file contents, decrypted tokens):
 * n zeroed bytes on whole anonymous pages of their own, marked MADV_DONTDUMP so that they stay
 * out of a core file even when core dumps were allowed for debugging, and MADV_WIPEONFORK so
 * that a child never inherits them. NULL on failure (the caller may fall back to nothing: this
 * never returns heap memory). Costs at least one page, and two system calls unless a freed page
 * can be reused (one-page allocations are recycled, wiped): for secrets, not for bulk data.
 * Thread-safe.
 */
void *oc_secret_alloc(size_t n);
/* Wipes (OPENSSL_cleanse) and unmaps memory from oc_secret_alloc (a one-page allocation's page
 * may be kept, wiped, for the next one). NULL is fine. */
void oc_secret_free(void *p);
/* A NUL-terminated copy of s[0..n) in secret memory; NULL on failure. */
char *oc_secret_strndup(const char *s, size_t n);

#endif
