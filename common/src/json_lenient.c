/* The lenient JSON pre-pass shared by every webhook parser. */
#include "omnichat/json_lenient.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Where a scan is: inside a string (after a backslash) or not, and how deep. */
typedef struct scan {
    bool in_str, esc;
    int depth;
} scan_t;

/* Feeds one character; false when it opens a container deeper than depth_max. Strings are
 * tracked exactly for well-formed JSON; for anything else the answer does not matter,
 * jansson refuses it. */
static bool scan_char(scan_t *st, char c, int depth_max)
{
    if (st->in_str) {
        if (st->esc)
            st->esc = false;
        else if (c == '\\')
            st->esc = true;
        else if (c == '"')
            st->in_str = false;
        return true;
    }
    if (c == '"')
        st->in_str = true;
    else if (c == '[' || c == '{')
        return ++st->depth <= depth_max;
    else if (c == ']' || c == '}')
        st->depth--;
    return true;
}

bool oc_json_depth_ok(const char *s, size_t n, int depth_max)
{
    scan_t st = {false, false, 0};

    for (size_t i = 0; i < n; i++)
        if (!scan_char(&st, s[i], depth_max)) return false;
    return true;
}

/* A number token jansson would refuse: an integer beyond int64 or a real beyond double. */
static bool number_overflows(const char *tok, size_t n)
{
    char small[64], *copy = small, *end = NULL;
    bool is_int =
        memchr(tok, '.', n) == NULL && memchr(tok, 'e', n) == NULL && memchr(tok, 'E', n) == NULL;
    bool over = false;

    if (n >= sizeof small && (copy = malloc(n + 1)) == NULL) return false;
    memcpy(copy, tok, n);
    copy[n] = '\0';
    /* The very conversions jansson makes, so both agree on what overflows. */
    errno = 0;
    if (is_int) {
        (void)strtoll(copy, &end, 10);
        over = errno == ERANGE;
    } else {
        double d = strtod(copy, &end);
        over = errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
    }
    over = over && end != NULL && *end == '\0';
    if (copy != small) free(copy);
    return over;
}

bool oc_json_lenient_copy(const char *body, size_t len, oc_buf_t *out)
{
    scan_t st = {false, false, 0};
    size_t i = 0;
    size_t run = 0; /* body[run, i) goes out unchanged: copied in one piece, not per byte */

    while (i < len) {
        char c = body[i];
        if (st.in_str && st.esc && c == 'u' && len - i >= 5 &&
            memcmp(body + i + 1, "0000", 4) == 0) {
            oc_buf_append(out, body + run, i - run);
            oc_buf_append(out, "uFFFD", 5);
            i += 5;
            run = i;
            st.esc = false;
            continue;
        }
        if (!st.in_str && (c == '-' || (c >= '0' && c <= '9'))) {
            size_t n = 0;
            while (i + n < len && strchr("0123456789+-.eE", body[i + n]) != NULL &&
                   body[i + n] != '\0')
                n++;
            if (number_overflows(body + i, n)) {
                oc_buf_append(out, body + run, i - run);
                oc_buf_append(out, "\"", 1);
                oc_buf_append(out, body + i, n);
                oc_buf_append(out, "\"", 1);
                run = i + n;
            }
            i += n;
            continue;
        }
        if (!scan_char(&st, c, OC_JSON_DEPTH_MAX)) return false;
        i++;
    }
    oc_buf_append(out, body + run, i - run);
    return out->failed == OC_OK;
}

json_t *oc_json_lenient_load(const char *body, size_t len, oc_error_t *err)
{
    json_error_t jerr;
    oc_buf_t clean;
    json_t *root;

    oc_buf_init(&clean, 3 * len + 16); /* every byte could be a number gaining two quotes */
    if (len == 0 || !oc_json_lenient_copy(body, len, &clean)) {
        bool oom = clean.failed != OC_OK;
        oc_buf_dispose(&clean);
        oc_error_set(err, oom ? OC_E_NOMEM : OC_E_INVALID,
                     oom ? "out of memory" : "body: not valid JSON");
        return NULL;
    }
    /* Duplicate keys are valid JSON (the last one wins): refusing them would lose the body. */
    root = json_loadb(clean.data, clean.len, JSON_ALLOW_NUL, &jerr);
    oc_buf_dispose(&clean);
    if (root == NULL) oc_error_set(err, OC_E_INVALID, "body: not valid JSON");
    return root;
}
