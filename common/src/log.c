/* JSON-lines logger: each call builds one line on the stack and writes it with one write(2). */
#include "omnichat/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Defined in buf.c (see there). */
size_t oc__json_escape(char *dst, size_t cap, const char *s, size_t len, size_t *consumed);

#define LOG_LINE_MAX 8192
/* Room always kept for `,"truncated":true}\n` so a cut line is still one JSON object. */
#define LOG_TAIL_RESERVE 24
#define LOG_SVC_MAX 64

static _Atomic int log_min_level = OC_LOG_INFO;
static char log_service[LOG_SVC_MAX] = "omnichat";

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void oc_log_init(const char *service, oc_log_level_t level)
{
    if (service != NULL) {
        /* keep it short and printable so it can be written without escaping */
        size_t o = 0;
        for (size_t i = 0; service[i] != '\0' && o < LOG_SVC_MAX - 1; i++) {
            unsigned char c = (unsigned char)service[i];
            if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') log_service[o++] = (char)c;
        }
        log_service[o] = '\0';
    }
    atomic_store_explicit(&log_min_level, (int)level, memory_order_relaxed);
}

int oc_log_level_parse(const char *s)
{
    if (s == NULL) return -1;
    for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) return i;
    }
    if (strcasecmp(s, "warning") == 0) return OC_LOG_WARN;
    if (strcasecmp(s, "off") == 0) return OC_LOG_OFF;
    return -1;
}

bool oc_log_enabled(oc_log_level_t level)
{
    return (int)level < OC_LOG_OFF &&
           (int)level >= atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

typedef struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    size_t limit; /* LOG_LINE_MAX - LOG_TAIL_RESERVE */
    bool truncated;
} line_t;

/* Appends raw bytes if they fit entirely; otherwise marks the line truncated. */
static bool put(line_t *l, const char *s, size_t n)
{
    if (l->truncated || n > l->limit - l->len) {
        l->truncated = true;
        return false;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

static bool puts_(line_t *l, const char *s)
{
    return put(l, s, strlen(s));
}

/* Appends "s" escaped; a value that does not fit is cut at a character boundary. */
static bool put_str(line_t *l, const char *s)
{
    if (l->truncated || l->limit - l->len < 2) {
        l->truncated = true;
        return false;
    }
    size_t len = strlen(s), used;
    l->buf[l->len++] = '"';
    l->len += oc__json_escape(l->buf + l->len, l->limit - l->len - 1, s, len, &used);
    l->buf[l->len++] = '"';
    if (used < len) l->truncated = true;
    return used == len;
}

/* `,"key":` — the whole key or nothing, so a cut line never ends with a dangling key. */
static bool put_key(line_t *l, const char *key)
{
    size_t save = l->len;
    if (!put(l, ",", 1) || !put_str(l, key) || !put(l, ":", 1)) {
        l->len = save;
        l->truncated = true;
        return false;
    }
    return true;
}

static void put_ts(line_t *l)
{
    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + n, sizeof tbuf - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
    put(l, "\"", 1);
    puts_(l, tbuf);
    put(l, "\"", 1);
}

static void write_all(const char *p, size_t n)
{
    /* One write(2) in the normal case; retries only after a signal or a short write (pipes
     * above PIPE_BUF may split). Errors are dropped: logging never fails loudly. */
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void oc__log_write(oc_log_level_t level, const char *msg, ...)
{
    if ((int)level < OC_LOG_DEBUG || !oc_log_enabled(level)) return;
    int saved_errno = errno;
    line_t l;
    l.len = 0;
    l.limit = LOG_LINE_MAX - LOG_TAIL_RESERVE;
    l.truncated = false;

    puts_(&l, "{\"ts\":");
    put_ts(&l);
    puts_(&l, ",\"level\":\"");
    puts_(&l, level_names[level]);
    puts_(&l, "\",\"svc\":");
    put_str(&l, log_service);
    puts_(&l, ",\"msg\":");
    if (msg != NULL)
        put_str(&l, msg);
    else
        puts_(&l, "null");

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        oc_log_field_t f = va_arg(ap, oc_log_field_t);
        if (f.type == OC_LF_T_END || f.key == NULL) break;
        if (l.truncated) continue; /* drain the list; nothing more fits */
        char num[64];
        size_t save = l.len;
        if (!put_key(&l, f.key)) continue;
        bool ok = true;
        switch (f.type) {
        case OC_LF_T_STR:
            ok = f.v.s != NULL ? (put_str(&l, f.v.s), true) : puts_(&l, "null");
            break;
        case OC_LF_T_INT:
            snprintf(num, sizeof num, "%lld", f.v.i);
            ok = puts_(&l, num);
            break;
        case OC_LF_T_DBL:
            /* NaN and infinities have no JSON spelling */
            if (isfinite(f.v.d)) {
                /* shortest of the usual precisions that reads back exactly */
                snprintf(num, sizeof num, "%.15g", f.v.d);
                if (strtod(num, NULL) != f.v.d) snprintf(num, sizeof num, "%.17g", f.v.d);
            } else
                snprintf(num, sizeof num, "null");
            ok = puts_(&l, num);
            break;
        case OC_LF_T_BOOL:
            ok = puts_(&l, f.v.b ? "true" : "false");
            break;
        default:
            ok = puts_(&l, "null");
            break;
        }
        if (!ok) l.len = save; /* a number or literal that does not fit: drop the field */
    }
    va_end(ap);

    bool cut = l.truncated;
    l.truncated = false;
    l.limit = LOG_LINE_MAX;
    if (cut) puts_(&l, ",\"truncated\":true");
    puts_(&l, "}\n");
    write_all(l.buf, l.len);
    errno = saved_errno;
}
