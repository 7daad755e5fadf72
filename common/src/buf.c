/* Growable byte buffer with a maximum size, sticky failure and optional wiping of secrets. */
#include "omnichat/buf.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Escapes s[0..len) as the inside of a JSON string into dst (at most cap bytes, no NUL).
 * Stops before an escape or character that would not fit, so the output is always valid; the
 * number of input bytes consumed goes to *consumed. Shared with log.c, which escapes into a
 * stack buffer.
 */
size_t oc__json_escape(char *dst, size_t cap, const char *s, size_t len, size_t *consumed);

#define BUF_MIN_CAP 64

void oc_buf_init(oc_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->failed = OC_OK;
    b->secret = false;
}

void oc_buf_init_secret(oc_buf_t *b, size_t max)
{
    oc_buf_init(b, max);
    b->secret = true;
}

void oc_buf_dispose(oc_buf_t *b)
{
    if (b == NULL) return;
    if (b->data != NULL) {
        if (b->secret) OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = OC_OK;
}

void oc_buf_reset(oc_buf_t *b)
{
    if (b->data != NULL) {
        if (b->secret) OPENSSL_cleanse(b->data, b->cap);
        b->data[0] = '\0';
    }
    b->len = 0;
    b->failed = OC_OK;
}

static oc_err_t fail(oc_buf_t *b, oc_err_t e)
{
    b->failed = e;
    return e;
}

/* Makes room for `extra` more bytes plus the NUL, or fails (stickily) without touching the
 * contents. */
static oc_err_t ensure(oc_buf_t *b, size_t extra)
{
    if (b->failed != OC_OK) return b->failed;
    if (extra > b->max || b->len > b->max - extra) return fail(b, OC_E_TOO_LARGE);
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return OC_OK;

    size_t limit = b->max < SIZE_MAX ? b->max + 1 : SIZE_MAX;
    size_t ncap = b->cap < BUF_MIN_CAP ? BUF_MIN_CAP : b->cap;
    while (ncap < need && ncap <= SIZE_MAX / 2)
        ncap *= 2;
    if (ncap < need) ncap = need;
    if (ncap > limit) ncap = limit;

    char *nd;
    if (b->secret) {
        /* realloc may leave the old copy in freed memory: move it by hand and wipe it */
        nd = malloc(ncap);
        if (nd == NULL) return fail(b, OC_E_NOMEM);
        if (b->data != NULL) {
            memcpy(nd, b->data, b->len + 1);
            OPENSSL_cleanse(b->data, b->cap);
            free(b->data);
        }
    } else {
        nd = realloc(b->data, ncap);
        if (nd == NULL) return fail(b, OC_E_NOMEM);
    }
    if (b->data == NULL) nd[0] = '\0';
    b->data = nd;
    b->cap = ncap;
    return OC_OK;
}

oc_err_t oc_buf_append(oc_buf_t *b, const void *data, size_t len)
{
    oc_err_t e = ensure(b, len);
    if (e != OC_OK) return e;
    if (len > 0) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return OC_OK;
}

oc_err_t oc_buf_appends(oc_buf_t *b, const char *s)
{
    return oc_buf_append(b, s, s != NULL ? strlen(s) : 0);
}

oc_err_t oc_buf_appendf(oc_buf_t *b, const char *fmt, ...)
{
    oc_err_t e = ensure(b, 0);
    if (e != OC_OK) return e;

    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->data[b->len] = '\0';
        return fail(b, OC_E_INVALID);
    }
    if ((size_t)n >= room) {
        b->data[b->len] = '\0';
        e = ensure(b, (size_t)n);
        if (e != OC_OK) return e;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    b->data[b->len] = '\0';
    return OC_OK;
}

/* ---- JSON string escaping ---- */

/* Length of the well-formed UTF-8 sequence at s[0..n) (no overlongs, surrogates or values
 * above U+10FFFF), or 0. NUL is handled by the caller as a control character. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
    }
    return len;
}

size_t oc__json_escape(char *dst, size_t cap, const char *s, size_t len, size_t *consumed)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        unsigned char c = p[i];
        char tmp[6];
        const char *rep = tmp;
        size_t rlen, in_len = 1;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            rlen = 2;
        } else if (c < 0x20) {
            tmp[0] = '\\';
            rlen = 2;
            switch (c) {
            case '\b':
                tmp[1] = 'b';
                break;
            case '\f':
                tmp[1] = 'f';
                break;
            case '\n':
                tmp[1] = 'n';
                break;
            case '\r':
                tmp[1] = 'r';
                break;
            case '\t':
                tmp[1] = 't';
                break;
            default:
                tmp[1] = 'u';
                tmp[2] = '0';
                tmp[3] = '0';
                tmp[4] = hex[c >> 4];
                tmp[5] = hex[c & 0xF];
                rlen = 6;
            }
        } else if (c < 0x80) {
            rep = (const char *)p + i;
            rlen = 1;
        } else {
            size_t l = utf8_len(p + i, len - i);
            if (l == 0) {
                rep = "\xEF\xBF\xBD"; /* U+FFFD for each bad byte */
                rlen = 3;
            } else {
                rep = (const char *)p + i;
                rlen = l;
                in_len = l;
            }
        }
        if (rlen > cap - o) break;
        memcpy(dst + o, rep, rlen);
        o += rlen;
        i += in_len;
    }
    if (consumed != NULL) *consumed = i;
    return o;
}

oc_err_t oc_buf_append_json_str(oc_buf_t *b, const char *s, size_t len)
{
    if (b->failed != OC_OK) return b->failed;
    /* Escape through a stack chunk (always big enough for one escape, so every pass makes
     * progress); roll back to `start` on failure so the append is all or nothing. */
    char chunk[512];
    size_t start = b->len, done = 0;
    oc_err_t e = OC_OK;
    do {
        size_t used;
        size_t w = oc__json_escape(chunk, sizeof chunk, s + done, len - done, &used);
        e = oc_buf_append(b, chunk, w);
        if (e != OC_OK) {
            b->len = start;
            if (b->data != NULL) b->data[start] = '\0';
            break;
        }
        done += used;
    } while (done < len);
    if (b->secret) OPENSSL_cleanse(chunk, sizeof chunk);
    return e;
}

char *oc_buf_detach(oc_buf_t *b, size_t *len_out)
{
    char *d = b->data;
    size_t len = b->len;
    if (d != NULL && len == 0) {
        if (b->secret) OPENSSL_cleanse(d, b->cap);
        free(d);
        d = NULL;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = OC_OK;
    if (len_out != NULL) *len_out = len;
    return d;
}

oc_err_t oc_buf_append_form_encoded(oc_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    size_t run = 0; /* s[run, i) is unreserved: appended in one piece */

    for (size_t i = 0; i < n && b->failed == OC_OK; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~')
            continue;
        char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
        oc_buf_append(b, s + run, i - run);
        oc_buf_append(b, e, 3);
        run = i + 1;
    }
    if (run < n) oc_buf_append(b, s + run, n - run);
    return b->failed;
}
