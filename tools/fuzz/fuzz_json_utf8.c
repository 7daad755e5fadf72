/* libFuzzer harness for util.h's byte checkers: JSON validity, UTF-8, base64/base64url, UUIDs. */
#include <ctype.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The whole input is the text under test; its first byte also serves as the max_chars argument
 * of oc_utf8_prefix. Every output buffer is malloc'ed at exactly the size the contract promises
 * to be enough, so any write past it is an ASan report.
 *
 * UTF-8 is checked against an independent reference decoder written from Unicode Table 3-7,
 * JSON against jansson itself (nesting measured on the parsed tree), base64 by round trips in
 * both directions: the decoders are strict, so an accepted text must re-encode to itself.
 */

/* ---- reference UTF-8: decode a code point, then judge it ---- */

/* Length of the well-formed sequence at s[0..n), or 0; *cp receives the code point. */
static size_t ref_seq(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t v, min;
    if (c == 0) return 0;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Decodes at most max_chars characters; returns the bytes consumed; *complete when it stopped
 * at the end of the input rather than at an ill-formed sequence or the character limit. */
static size_t ref_walk(const uint8_t *s, size_t n, size_t max_chars, size_t *chars, size_t *units,
                       bool *complete)
{
    size_t i = 0;
    *chars = 0;
    *units = 0;
    while (i < n && *chars < max_chars) {
        uint32_t cp;
        size_t l = ref_seq(s + i, n - i, &cp);
        if (l == 0) break;
        i += l;
        (*chars)++;
        *units += cp > 0xFFFF ? 2 : 1;
    }
    *complete = i == n;
    return i;
}

static void check_utf8(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    size_t chars, units;
    bool complete;
    ref_walk(data, size, SIZE_MAX, &chars, &units, &complete);

    bool valid = oc_utf8_valid(s, size);
    if (valid != complete) abort();
    if (valid) {
        if (oc_utf8_chars(s, size) != chars) abort();
        if (oc_utf16_units(s, size) != units) abort();
        if (oc_utf8_prefix(s, size, SIZE_MAX) != size) abort();
    } else {
        /* the counters only promise to terminate on invalid input */
        (void)oc_utf8_chars(s, size);
        (void)oc_utf16_units(s, size);
    }

    size_t maxes[] = {0, 1, size > 0 ? data[0] : 7, size / 2, SIZE_MAX};
    for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        size_t p = oc_utf8_prefix(s, size, maxes[m]);
        size_t rchars, runits;
        bool rcomplete;
        size_t rp = ref_walk(data, size, maxes[m], &rchars, &runits, &rcomplete);
        if (p > size || p != rp) abort();
        if (!oc_utf8_valid(s, p)) abort();
        if (oc_utf8_chars(s, p) > maxes[m]) abort();
        /* it stopped short of the limit only at an ill-formed or truncated sequence */
        if (p < size && oc_utf8_chars(s, p) < maxes[m]) {
            for (size_t k = 1; k <= 4 && p + k <= size; k++)
                if (oc_utf8_valid(s + p, k)) abort();
        }
    }
}

/* ---- JSON ---- */

static size_t depth_of(const json_t *v)
{
    size_t d = 0, max = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            d = depth_of(e);
            if (d > max) max = d;
        }
        return max + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            d = depth_of(e);
            if (d > max) max = d;
        }
        return max + 1;
    }
    return 0;
}

static void check_json(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    bool any = oc_json_valid(s, size, false);
    bool container = oc_json_valid(s, size, true);
    if (container && !any) abort();
    if (any && (size == 0 || memchr(s, '\0', size) != NULL)) abort();

    /* What jansson (same flags) says, with the nesting limit applied to the parsed tree. */
    bool expect = false, expect_container = false;
    if (size > 0 && memchr(s, '\0', size) == NULL) {
        json_error_t jerr;
        json_t *v = json_loadb(s, size, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &jerr);
        if (v != NULL) {
            expect = depth_of(v) <= 64;
            expect_container = expect && (json_is_object(v) || json_is_array(v));
            json_decref(v);
        }
    }
    if (any != expect || container != expect_container) abort();
}

/* ---- base64 ---- */

static size_t url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    if (p == NULL) abort();
    return p;
}

/* text -> bytes -> text must give the text back; a smaller buffer must be refused. */
static void check_decode(const char *s, size_t n, bool url)
{
    size_t cap = n / 4 * 3 + 2;
    uint8_t *out = xmalloc(cap);
    long r = url ? oc_base64url_decode(s, n, out, cap) : oc_base64_decode(s, n, out, cap);
    if (r < -1 || r > (long)cap) abort();
    if (r >= 0) {
        size_t elen = url ? url_len((size_t)r) : oc_base64_encoded_len((size_t)r);
        char *enc = xmalloc(elen + 1);
        size_t e =
            url ? oc_base64url_encode(out, (size_t)r, enc) : oc_base64_encode(out, (size_t)r, enc);
        if (e != n || e != elen || memcmp(enc, s, n) != 0 || enc[e] != '\0') abort();
        free(enc);
        /* exact-size and one-too-small buffers */
        uint8_t *exact = xmalloc((size_t)r);
        long r2 = url ? oc_base64url_decode(s, n, exact, (size_t)r)
                      : oc_base64_decode(s, n, exact, (size_t)r);
        if (r2 != r || memcmp(exact, out, (size_t)r) != 0) abort();
        free(exact);
        if (r > 0) {
            uint8_t *small = xmalloc((size_t)r - 1);
            long r3 = url ? oc_base64url_decode(s, n, small, (size_t)r - 1)
                          : oc_base64_decode(s, n, small, (size_t)r - 1);
            if (r3 != -1) abort();
            free(small);
        }
    }
    free(out);
}

/* bytes -> text -> bytes must give the bytes back. */
static void check_encode(const uint8_t *data, size_t size, bool url)
{
    size_t elen = url ? url_len(size) : oc_base64_encoded_len(size);
    char *enc = xmalloc(elen + 1);
    size_t e = url ? oc_base64url_encode(data, size, enc) : oc_base64_encode(data, size, enc);
    if (e != elen || enc[e] != '\0' || strlen(enc) != e) abort();
    uint8_t *dec = xmalloc(size);
    long r = url ? oc_base64url_decode(enc, e, dec, size) : oc_base64_decode(enc, e, dec, size);
    if (r != (long)size || (size > 0 && memcmp(dec, data, size) != 0)) abort();
    free(dec);
    free(enc);
}

/* ---- UUIDs ---- */

static void check_uuid(const uint8_t *data, size_t size)
{
    char s[OC_UUID_STR_LEN + 2] = {0};
    memcpy(s, data, size < sizeof s - 1 ? size : sizeof s - 1);
    uint8_t b[16];
    bool ok = oc_uuid_parse(s, b);
    if (ok != oc_uuid_valid(s)) abort();
    if (!ok) return;
    char f[OC_UUID_STR_LEN + 1];
    oc_uuid_format(b, f);
    for (size_t i = 0; i <= OC_UUID_STR_LEN; i++)
        if (f[i] != (char)tolower((unsigned char)s[i])) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly `size` bytes: libFuzzer's buffer may have slack after it. */
    char *s = xmalloc(size);
    if (size > 0) memcpy(s, data, size);

    check_utf8((const uint8_t *)s, size);
    check_json((const uint8_t *)s, size);
    check_decode(s, size, false);
    check_decode(s, size, true);
    check_encode((const uint8_t *)s, size, false);
    check_encode((const uint8_t *)s, size, true);
    check_uuid((const uint8_t *)s, size);

    free(s);
    return 0;
}
