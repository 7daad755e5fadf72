/* Unit tests for common/src/log.c: one valid JSON line per call, escaping, gating, the cap. */
#include <CUnit/Basic.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omnichat/log.h"
#include "omnichat/util.h"

#include "test_main.h"

static char cap_path[64];
static int cap_saved = -1;

/* Redirects fd 2 into a fresh temporary file (O_APPEND, like a shared log pipe). */
static void capture_begin(void)
{
    snprintf(cap_path, sizeof cap_path, "/tmp/oc_test_log.XXXXXX");
    int fd = mkstemp(cap_path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    fd = open(cap_path, O_WRONLY | O_APPEND);
    CU_ASSERT_FATAL(fd >= 0);
    fflush(stderr);
    cap_saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Restores fd 2 and returns what was written (malloc'ed), its length in *len. */
static char *capture_end(size_t *len)
{
    dup2(cap_saved, STDERR_FILENO);
    close(cap_saved);
    char *out = NULL;
    oc_error_t err;
    oc_error_clear(&err);
    if (oc_read_file(cap_path, 16 << 20, false, &out, len, &err) != OC_OK) *len = 0;
    unlink(cap_path);
    return out;
}

static int count_char(const char *s, size_t n, char c)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == c;
    return k;
}

static json_t *parse_line(const char *s, size_t n)
{
    json_error_t je;
    json_t *v = json_loadb(s, n, 0, &je);
    if (v == NULL) fprintf(stdout, "\nnot JSON (%s): %.*s\n", je.text, (int)n, s);
    return v;
}

static void test_line_shape(void)
{
    oc_log_init("persistence", OC_LOG_DEBUG);
    capture_begin();
    OC_INFO("rpc done", OC_LS("method", "/omnichat.Persistence/Get"), OC_LI("latency_us", 1234),
            OC_LD("ratio", 0.25), OC_LB("ok", true), OC_LS("tenant", NULL),
            OC_LI("neg", -9223372036854775807LL - 1));
    size_t n;
    char *out = capture_end(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    /* exactly one line, newline-terminated */
    CU_ASSERT_EQUAL(count_char(out, n, '\n'), 1);
    CU_ASSERT_EQUAL(out[n - 1], '\n');
    json_t *v = parse_line(out, n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);

    /* field order: ts, level, svc, msg, then the fields as given */
    static const char *const order[] = {"ts",         "level", "svc", "msg",    "method",
                                        "latency_us", "ratio", "ok",  "tenant", "neg"};
    size_t k = 0;
    for (void *it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it), k++) {
        CU_ASSERT(k < 10 && strcmp(json_object_iter_key(it), order[k]) == 0);
    }
    CU_ASSERT_EQUAL(k, 10);

    const char *ts = json_string_value(json_object_get(v, "ts"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ts);
    /* RFC 3339 UTC with milliseconds: 2024-05-01T12:34:56.789Z */
    CU_ASSERT_EQUAL(strlen(ts), 24);
    CU_ASSERT(ts[4] == '-' && ts[7] == '-' && ts[10] == 'T' && ts[13] == ':' && ts[16] == ':' &&
              ts[19] == '.' && ts[23] == 'Z');
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "level")), "info");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "svc")), "persistence");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "msg")), "rpc done");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "method")),
                           "/omnichat.Persistence/Get");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(v, "latency_us")), 1234);
    CU_ASSERT_DOUBLE_EQUAL(json_real_value(json_object_get(v, "ratio")), 0.25, 1e-12);
    CU_ASSERT(json_is_true(json_object_get(v, "ok")));
    CU_ASSERT(json_is_null(json_object_get(v, "tenant")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(v, "neg")), -9223372036854775807LL - 1);
    json_decref(v);
    free(out);
}

static void test_escaping(void)
{
    oc_log_init("svc", OC_LOG_DEBUG);
    capture_begin();
    OC_WARN("line1\nline2\t\"quoted\" back\\slash \x01\x1f",
            OC_LS("bad\nkey", "caf\xC3\xA9 \xFF \xF0\x9F\x98\x80"), OC_LD("nan", NAN),
            OC_LD("inf", INFINITY), OC_LD("tenth", 0.1));
    size_t n;
    char *out = capture_end(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(count_char(out, n, '\n'), 1); /* the message's newline is escaped */
    CU_ASSERT(oc_json_valid(out, n, true));
    CU_ASSERT(oc_utf8_valid(out, n));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\\u0001"));
    json_t *v = parse_line(out, n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "level")), "warn");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "msg")),
                           "line1\nline2\t\"quoted\" back\\slash \x01\x1f");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "bad\nkey")),
                           "caf\xC3\xA9 \xEF\xBF\xBD \xF0\x9F\x98\x80");
    CU_ASSERT(json_is_null(json_object_get(v, "nan")));
    CU_ASSERT(json_is_null(json_object_get(v, "inf")));
    CU_ASSERT(json_real_value(json_object_get(v, "tenth")) == 0.1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"tenth\":0.1}"));
    json_decref(v);
    free(out);
}

static int evaluated;

static const char *side_effect(void)
{
    evaluated++;
    return "x";
}

static void test_level_gating(void)
{
    oc_log_init("svc", OC_LOG_WARN);
    CU_ASSERT_FALSE(oc_log_enabled(OC_LOG_DEBUG));
    CU_ASSERT_FALSE(oc_log_enabled(OC_LOG_INFO));
    CU_ASSERT(oc_log_enabled(OC_LOG_WARN));
    CU_ASSERT(oc_log_enabled(OC_LOG_ERROR));
    CU_ASSERT_FALSE(oc_log_enabled(OC_LOG_OFF));
    evaluated = 0;
    capture_begin();
    OC_INFO("hidden", OC_LS("a", side_effect()));
    OC_DEBUG("hidden", OC_LS("a", side_effect()));
    OC_ERROR("shown", OC_LS("a", side_effect()));
    size_t n;
    char *out = capture_end(&n);
    CU_ASSERT_EQUAL(evaluated, 1); /* arguments of gated lines are never evaluated */
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(count_char(out, n, '\n'), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"level\":\"error\""));
    CU_ASSERT_PTR_NULL(strstr(out, "hidden"));
    free(out);

    oc_log_init("svc", OC_LOG_OFF);
    capture_begin();
    OC_ERROR("nothing");
    out = capture_end(&n);
    CU_ASSERT_EQUAL(n, 0);
    free(out);
}

static void test_level_parse(void)
{
    CU_ASSERT_EQUAL(oc_log_level_parse("debug"), OC_LOG_DEBUG);
    CU_ASSERT_EQUAL(oc_log_level_parse("info"), OC_LOG_INFO);
    CU_ASSERT_EQUAL(oc_log_level_parse("warn"), OC_LOG_WARN);
    CU_ASSERT_EQUAL(oc_log_level_parse("ERROR"), OC_LOG_ERROR);
    CU_ASSERT_EQUAL(oc_log_level_parse("off"), OC_LOG_OFF);
    CU_ASSERT_EQUAL(oc_log_level_parse("verbose"), -1);
    CU_ASSERT_EQUAL(oc_log_level_parse(""), -1);
    CU_ASSERT_EQUAL(oc_log_level_parse(NULL), -1);
}

static void test_cap(void)
{
    oc_log_init("svc", OC_LOG_DEBUG);
    enum { BIG = 20000 };
    char *big = malloc(BIG + 1);
    /* escapes and multibyte characters near the cut: neither may be split */
    for (int i = 0; i < BIG; i += 4)
        memcpy(big + i, i % 8 ? "\xE2\x82\xAC\n" : "ab\"c", 4);
    big[BIG] = '\0';
    capture_begin();
    OC_INFO("big", OC_LS("a", "first"), OC_LS("blob", big), OC_LI("after", 1));
    OC_INFO(big);
    size_t n;
    char *out = capture_end(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(count_char(out, n, '\n'), 2);
    char *nl = memchr(out, '\n', n);
    size_t l1 = (size_t)(nl - out) + 1, l2 = n - l1;
    CU_ASSERT(l1 <= 8192);
    CU_ASSERT(l2 <= 8192);
    CU_ASSERT(l1 > 8000); /* filled, not dropped */
    json_t *v = parse_line(out, l1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "a")), "first");
    CU_ASSERT(json_is_true(json_object_get(v, "truncated")));
    CU_ASSERT_PTR_NULL(json_object_get(v, "after"));
    const char *blob = json_string_value(json_object_get(v, "blob"));
    CU_ASSERT(blob != NULL && strncmp(blob, big, strlen(blob)) == 0);
    json_decref(v);
    v = parse_line(out + l1, l2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT(json_is_true(json_object_get(v, "truncated")));
    json_decref(v);
    free(out);
    free(big);
}

enum { TH = 4, LINES = 300 };

static void *log_thread(void *arg)
{
    long id = (long)arg;
    char val[600];
    memset(val, 'a' + (int)id, sizeof val - 1);
    val[sizeof val - 1] = '\0';
    for (int i = 0; i < LINES; i++)
        OC_INFO("thread line", OC_LI("thread", id), OC_LS("v", val));
    return NULL;
}

static void test_threads(void)
{
    oc_log_init("svc", OC_LOG_INFO);
    capture_begin();
    pthread_t t[TH];
    for (long i = 0; i < TH; i++)
        pthread_create(&t[i], NULL, log_thread, (void *)i);
    for (int i = 0; i < TH; i++)
        pthread_join(t[i], NULL);
    size_t n;
    char *out = capture_end(&n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    int lines = 0, bad = 0;
    for (char *p = out; p < out + n;) {
        char *e = memchr(p, '\n', (size_t)(out + n - p));
        if (e == NULL) {
            bad++;
            break;
        }
        bad += !oc_json_valid(p, (size_t)(e - p), true);
        lines++;
        p = e + 1;
    }
    CU_ASSERT_EQUAL(lines, TH * LINES);
    CU_ASSERT_EQUAL(bad, 0); /* no interleaving */
    free(out);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("log", NULL, NULL);
    CU_add_test(s, "line shape", test_line_shape);
    CU_add_test(s, "escaping", test_escaping);
    CU_add_test(s, "level gating", test_level_gating);
    CU_add_test(s, "level parse", test_level_parse);
    CU_add_test(s, "8 KiB cap", test_cap);
    CU_add_test(s, "threads", test_threads);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
