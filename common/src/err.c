/* The project-wide error table (names, messages, gRPC and HTTP statuses) and oc_error_t. */
#include "omnichat/err.h"

#include <stdio.h>
#include <string.h>

typedef struct err_row {
    const char *name;
    const char *message;
    int grpc;
    int http;
} err_row_t;

static const err_row_t err_rows[OC_E__COUNT] = {
#define OC__ERR_ROW(name, msg, grpc, http) [OC_E_##name] = {#name, msg, grpc, http},
    OC_ERRNO_MAP(OC__ERR_ROW)
#undef OC__ERR_ROW
};

/* Out-of-range codes (a cast int, memory corruption) map to UNKNOWN rather than reading past
 * the table. */
static const err_row_t *row_of(oc_err_t e)
{
    if ((int)e < 0 || (int)e >= (int)OC_E__COUNT) return &err_rows[OC_E_UNKNOWN];
    return &err_rows[e];
}

const char *oc_err_message(oc_err_t e)
{
    return row_of(e)->message;
}

const char *oc_err_name(oc_err_t e)
{
    return row_of(e)->name;
}

int oc_err_grpc_status(oc_err_t e)
{
    return row_of(e)->grpc;
}

int oc_err_http_status(oc_err_t e)
{
    return row_of(e)->http;
}

oc_err_t oc_err_from_grpc_status(int status)
{
    for (int i = 0; i < (int)OC_E__COUNT; i++) {
        if (err_rows[i].grpc == status) return (oc_err_t)i;
    }
    return OC_E_UNKNOWN;
}

void oc_error_clear(oc_error_t *err)
{
    if (err == NULL) return;
    err->code = OC_OK;
    err->msg[0] = '\0';
}

/* vsnprintf truncates at a byte count; back off so the message never ends inside a UTF-8
 * sequence (the message may end up in JSON logs and gRPC details, which must be valid UTF-8). */
static void trim_partial_utf8(char *s, size_t len)
{
    size_t i = len;
    size_t cont = 0;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80 && cont < 3) {
        i--;
        cont++;
    }
    if (i == 0) return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need;
    if (lead < 0x80)
        return; /* ASCII: any continuation bytes after it are stray, leave them */
    else if ((lead & 0xE0) == 0xC0)
        need = 1;
    else if ((lead & 0xF0) == 0xE0)
        need = 2;
    else if ((lead & 0xF8) == 0xF0)
        need = 3;
    else
        return;
    if (cont < need) s[i - 1] = '\0';
}

oc_err_t oc_error_vset(oc_error_t *err, oc_err_t code, const char *fmt, va_list ap)
{
    if (err == NULL || code == OC_OK || err->code != OC_OK) return code;
    err->code = code;
    err->msg[0] = '\0';
    if (fmt == NULL) return code;
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    if (n < 0) {
        err->msg[0] = '\0';
        return code;
    }
    size_t len = strlen(err->msg);
    if ((size_t)n >= sizeof err->msg) {
        trim_partial_utf8(err->msg, len);
        len = strlen(err->msg);
    }
    for (size_t i = 0; i < len; i++) {
        if (err->msg[i] == '\n' || err->msg[i] == '\r') err->msg[i] = ' ';
    }
    return code;
}

oc_err_t oc_error_set(oc_error_t *err, oc_err_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    oc_err_t r = oc_error_vset(err, code, fmt, ap);
    va_end(ap);
    return r;
}

const char *oc_grpc_status_name(int status)
{
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};

    if (status < 0 || (size_t)status >= sizeof names / sizeof names[0]) return "UNKNOWN";
    return names[status];
}
