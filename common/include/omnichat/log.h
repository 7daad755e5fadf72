/* JSON-lines logger on stderr, level-gated before any argument is evaluated. */
#ifndef OMNICHAT_LOG_H
#define OMNICHAT_LOG_H

#include <stdbool.h>
#include <stdint.h>

typedef enum oc_log_level {
    OC_LOG_DEBUG = 0,
    OC_LOG_INFO = 1,
    OC_LOG_WARN = 2,
    OC_LOG_ERROR = 3,
    OC_LOG_OFF = 4
} oc_log_level_t;

typedef enum oc_log_ftype {
    OC_LF_T_END = 0,
    OC_LF_T_STR,
    OC_LF_T_INT,
    OC_LF_T_DBL,
    OC_LF_T_BOOL
} oc_log_ftype_t;

/* One "key": value pair of a log line. Build them with the OC_LS/OC_LI/OC_LD/OC_LB macros. */
typedef struct oc_log_field {
    const char *key;
    oc_log_ftype_t type;
    union {
        const char *s;
        long long i;
        double d;
        bool b;
    } v;
} oc_log_field_t;

#define OC_LS(k, val) ((oc_log_field_t){.key = (k), .type = OC_LF_T_STR, .v.s = (val)})
#define OC_LI(k, val) ((oc_log_field_t){.key = (k), .type = OC_LF_T_INT, .v.i = (long long)(val)})
#define OC_LD(k, val) ((oc_log_field_t){.key = (k), .type = OC_LF_T_DBL, .v.d = (double)(val)})
#define OC_LB(k, val) ((oc_log_field_t){.key = (k), .type = OC_LF_T_BOOL, .v.b = (val)})
#define OC_LF_END ((oc_log_field_t){.key = NULL, .type = OC_LF_T_END})

/*
 * Sets the process-wide service name (the "svc" field) and minimum level. Call once from main
 * before threads start. Not thread-safe; everything else here is.
 */
void oc_log_init(const char *service, oc_log_level_t level);
/* Parses "debug", "info", "warn", "error", "off"; returns -1 when unknown. */
int oc_log_level_parse(const char *s);
/* Whether a line of this level would be written (cheap: one load). */
bool oc_log_enabled(oc_log_level_t level);

/*
 * Writes one line {"ts":"…","level":"…","svc":"…","msg":"…", fields…} with a single write(2).
 * The variadic arguments are oc_log_field_t values terminated by OC_LF_END (the macros below
 * add it). A NULL string field is written as null. Never fails loudly; never allocates more
 * than one line (lines are capped at 8 KiB, longer values are truncated).
 */
void oc__log_write(oc_log_level_t level, const char *msg, ...);

/*
 * Usage: OC_LOG(OC_LOG_INFO, "rpc done", OC_LS("method", m), OC_LI("latency_us", us));
 * The arguments are not evaluated when the level is off, so they must have no side effect:
 * compute anything that waits, allocates or changes state into a local first.
 * scripts/check-log-args.py (format.sh --check, ctest log_args) rejects any other call.
 */
#define OC_LOG(level, ...) \
    do { \
        if (oc_log_enabled(level)) oc__log_write((level), __VA_ARGS__, OC_LF_END); \
    } while (0)
#define OC_DEBUG(...) OC_LOG(OC_LOG_DEBUG, __VA_ARGS__)
#define OC_INFO(...) OC_LOG(OC_LOG_INFO, __VA_ARGS__)
#define OC_WARN(...) OC_LOG(OC_LOG_WARN, __VA_ARGS__)
#define OC_ERROR(...) OC_LOG(OC_LOG_ERROR, __VA_ARGS__)

#endif
