/* The lenient JSON pre-pass shared by every webhook parser. */
#include "omnichat/json_lenient.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

bool oc_json_depth_ok(const char *s, size_t n, int depth_max)
{
    int depth = 0;
    bool in_str = false, esc = false;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > depth_max) return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
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

/* Strings are tracked exactly for well-formed JSON; for anything else the result does not
 * matter, jansson refuses it. The depth is counted in the same pass. */
bool oc_json_lenient_copy(const char *body, size_t len, oc_buf_t *out)
{
    bool in_str = false, esc = false;
    int depth = 0;
    size_t i = 0;

    while (i < len) {
        char c = body[i];
        if (in_str) {
            if (esc && c == 'u' && len - i >= 5 && memcmp(body + i + 1, "0000", 4) == 0) {
                oc_buf_append(out, "uFFFD", 5);
                i += 5;
                esc = false;
                continue;
            }
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            oc_buf_append(out, &c, 1);
            i++;
            continue;
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            size_t n = 0;
            while (i + n < len && strchr("0123456789+-.eE", body[i + n]) != NULL &&
                   body[i + n] != '\0')
                n++;
            if (number_overflows(body + i, n)) {
                oc_buf_append(out, "\"", 1);
                oc_buf_append(out, body + i, n);
                oc_buf_append(out, "\"", 1);
            } else {
                oc_buf_append(out, body + i, n);
            }
            i += n;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > OC_JSON_DEPTH_MAX) return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
        oc_buf_append(out, &c, 1);
        i++;
    }
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
