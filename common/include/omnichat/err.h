/* The project-wide error table: one enum, one message, one gRPC status and one HTTP status each. */
#ifndef OMNICHAT_ERR_H
#define OMNICHAT_ERR_H

#include <stdarg.h>
#include <stddef.h>

/*
 * X(name, message, grpc_status, http_status). The gRPC numbers are those of grpc_status_code
 * (kept literal so this header does not need grpc). Rows are matched top-down when a gRPC status
 * is turned back into an error, so the canonical row for a status comes first.
 */
#define OC_ERRNO_MAP(X) \
    X(OK, "ok", 0, 200) \
    X(INVALID, "invalid argument", 3, 400) \
    X(NOT_FOUND, "not found", 5, 404) \
    X(ALREADY_EXISTS, "already exists", 6, 409) \
    X(FAILED_PRECONDITION, "failed precondition", 9, 409) \
    X(UNAVAILABLE, "service unavailable", 14, 503) \
    X(DEADLINE, "deadline exceeded", 4, 504) \
    X(CANCELLED, "cancelled", 1, 499) \
    X(UNAUTHENTICATED, "unauthenticated", 16, 401) \
    X(PERMISSION, "permission denied", 7, 403) \
    X(TOO_LARGE, "payload too large", 8, 413) \
    X(NOMEM, "out of memory", 8, 503) \
    X(CONFLICT, "transaction conflict, retry", 10, 409) \
    X(UNIMPLEMENTED, "not implemented", 12, 501) \
    X(INTERNAL, "internal error", 13, 500) \
    X(IO, "input/output error", 13, 500) \
    X(CONFIG, "invalid configuration", 13, 500) \
    X(AGAIN, "try again later", 8, 429) \
    X(UNKNOWN, "unknown error", 2, 500)

typedef enum oc_err {
#define OC__ERR_ENUM(name, msg, grpc, http) OC_E_##name,
    OC_ERRNO_MAP(OC__ERR_ENUM)
#undef OC__ERR_ENUM
        OC_E__COUNT
} oc_err_t;

#define OC_OK OC_E_OK

/* Short, static, human name of an error ("not found"). Never NULL. Thread-safe. */
const char *oc_err_message(oc_err_t e);
/* Symbolic name ("NOT_FOUND"). Never NULL. */
const char *oc_err_name(oc_err_t e);
/* gRPC status code (grpc_status_code value) for an error. */
int oc_err_grpc_status(oc_err_t e);
/* HTTP status for an error. */
int oc_err_http_status(oc_err_t e);
/* Canonical name of a gRPC status code ("NOT_FOUND"); "UNKNOWN" when out of range. For metric
 * labels and logs. */
const char *oc_grpc_status_name(int status);
/* The error for a gRPC status code (first row of the table with that code; UNKNOWN if none). */
oc_err_t oc_err_from_grpc_status(int status);

#define OC_ERROR_MSG_MAX 256

/*
 * Human detail beside the code: first message wins, no newline, truncated to fit. Embed it on
 * the stack; there is nothing to free.
 */
typedef struct oc_error {
    oc_err_t code;
    char msg[OC_ERROR_MSG_MAX];
} oc_error_t;

/* Reset to OC_OK with an empty message. */
void oc_error_clear(oc_error_t *err);

/*
 * Records code and a printf-style message unless a code is already recorded (first error wins).
 * Newlines in the result are replaced by spaces. err may be NULL. Returns `code` so callers can
 * write `return oc_error_set(err, OC_E_INVALID, "tenant_id: must be a UUID");`.
 */
oc_err_t oc_error_set(oc_error_t *err, oc_err_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
oc_err_t oc_error_vset(oc_error_t *err, oc_err_t code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
