/* Growable byte buffer with a mandatory maximum size and sticky failure (curl's dynbuf). */
#ifndef OMNICHAT_BUF_H
#define OMNICHAT_BUF_H

#include <stdbool.h>
#include <stddef.h>

#include "omnichat/err.h"

typedef struct oc_buf {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t max;      /* appends that would make len exceed max fail */
    oc_err_t failed; /* sticky: OC_OK until an append fails (OC_E_TOO_LARGE or OC_E_NOMEM) */
    bool secret;     /* wipe with OPENSSL_cleanse on growth and dispose */
} oc_buf_t;

/* Caller-owned buffer of at most `max` bytes. Allocates nothing until the first append. */
void oc_buf_init(oc_buf_t *b, size_t max);
/* Like oc_buf_init, but the contents are wiped whenever memory is released. */
void oc_buf_init_secret(oc_buf_t *b, size_t max);
/* Frees the memory (wiping it when secret). The buffer may be init'ed again. */
void oc_buf_dispose(oc_buf_t *b);
/* Empties the buffer, keeps the memory, clears the sticky failure. */
void oc_buf_reset(oc_buf_t *b);

/* Appends; on failure returns the error, leaves contents as they were, and sets b->failed.
 * Once failed, every later append fails at once with the same error. */
oc_err_t oc_buf_append(oc_buf_t *b, const void *data, size_t len);
oc_err_t oc_buf_appends(oc_buf_t *b, const char *s);
oc_err_t oc_buf_appendf(oc_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as the inside of a JSON string (escapes quotes, backslash, control characters;
 * passes valid UTF-8 through, replaces invalid bytes with U+FFFD). */
oc_err_t oc_buf_append_json_str(oc_buf_t *b, const char *s, size_t len);
/* Appends s[0..n) percent-encoded for application/x-www-form-urlencoded (unreserved
 * characters as they are, every other byte as %XX). */
oc_err_t oc_buf_append_form_encoded(oc_buf_t *b, const char *s, size_t n);

/* Takes the data out: the caller owns it (free()), the buffer is empty again. NULL if empty. */
char *oc_buf_detach(oc_buf_t *b, size_t *len_out);

#endif
