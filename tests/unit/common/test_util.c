/* Unit tests for common/src/util.c: UUIDs, base64, UTF-8 rules, JSON validity, clocks, files. */
#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "omnichat/util.h"

#include "test_main.h"

/* ---- UUIDs ---- */

static void test_uuid_v4(void)
{
    char a[OC_UUID_STR_LEN + 1], b[OC_UUID_STR_LEN + 1];
    CU_ASSERT_EQUAL(oc_uuid_v4(a), OC_OK);
    CU_ASSERT_EQUAL(oc_uuid_v4(b), OC_OK);
    CU_ASSERT_EQUAL(strlen(a), 36);
    CU_ASSERT(oc_uuid_valid(a));
    CU_ASSERT_EQUAL(a[14], '4');
    CU_ASSERT_PTR_NOT_NULL(strchr("89ab", a[19]));
    CU_ASSERT_STRING_NOT_EQUAL(a, b);
}

/* Ids come from a per-thread block of random bytes: many in a row are all distinct (a block
 * boundary is crossed), and a forked child never hands out the ids its parent hands out next. */
static void test_uuid_v4_block_and_fork(void)
{
    enum { N = 200 }; /* 200 x 16 bytes: several blocks */
    static char ids[N][OC_UUID_STR_LEN + 1];
    char parent_next[OC_UUID_STR_LEN + 1], child_next[OC_UUID_STR_LEN + 1] = "";
    int fds[2];

    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL_FATAL(oc_uuid_v4(ids[i]), OC_OK);
    for (int i = 0; i < N; i++)
        for (int k = i + 1; k < N; k++)
            CU_ASSERT_STRING_NOT_EQUAL(ids[i], ids[k]);

    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        char id[OC_UUID_STR_LEN + 1];
        ssize_t w = oc_uuid_v4(id) == OC_OK ? write(fds[1], id, sizeof id) : -1;
        _exit(w == (ssize_t)sizeof id ? 0 : 1);
    }
    close(fds[1]);
    CU_ASSERT_EQUAL(oc_uuid_v4(parent_next), OC_OK);
    CU_ASSERT_EQUAL(read(fds[0], child_next, sizeof child_next), (ssize_t)sizeof child_next);
    close(fds[0]);
    int status = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT(oc_uuid_valid(child_next));
    CU_ASSERT_STRING_NOT_EQUAL(parent_next, child_next);
}

static void test_uuid_v7_layout(void)
{
    char s[OC_UUID_STR_LEN + 1];
    uint8_t b[16];
    int64_t before = oc_now_ms();
    CU_ASSERT_EQUAL_FATAL(oc_uuid_v7(s), OC_OK);
    int64_t after = oc_now_ms();
    CU_ASSERT_FATAL(oc_uuid_parse(s, b));
    CU_ASSERT_EQUAL(b[6] >> 4, 7);
    CU_ASSERT_EQUAL(b[8] >> 6, 2);
    int64_t ts = 0;
    for (int i = 0; i < 6; i++)
        ts = ts << 8 | b[i];
    /* the timestamp is big-endian unix ms (it may run ahead by a few ms after a burst) */
    CU_ASSERT(ts >= before);
    CU_ASSERT(ts <= after + 50);
}

static void test_uuid_v7_ordering(void)
{
    enum { N = 20000 };
    char prev[OC_UUID_STR_LEN + 1], cur[OC_UUID_STR_LEN + 1];
    CU_ASSERT_EQUAL_FATAL(oc_uuid_v7(prev), OC_OK);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        oc_uuid_v7(cur);
        /* many fall in the same millisecond: they must still sort strictly after */
        if (strcmp(cur, prev) <= 0) bad++;
        memcpy(prev, cur, sizeof cur);
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* and across a millisecond boundary */
    struct timespec ts = {0, 3 * 1000 * 1000};
    nanosleep(&ts, NULL);
    oc_uuid_v7(cur);
    CU_ASSERT(strcmp(cur, prev) > 0);
}

enum { TH = 4, PER = 5000 };
static char th_ids[TH][PER][OC_UUID_STR_LEN + 1];

static void *v7_thread(void *arg)
{
    char(*ids)[OC_UUID_STR_LEN + 1] = arg;
    for (int i = 0; i < PER; i++)
        oc_uuid_v7(ids[i]);
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_uuid_v7_threads_unique(void)
{
    pthread_t t[TH];
    for (int i = 0; i < TH; i++)
        pthread_create(&t[i], NULL, v7_thread, th_ids[i]);
    for (int i = 0; i < TH; i++)
        pthread_join(t[i], NULL);
    int bad = 0;
    for (int i = 0; i < TH; i++) {
        for (int j = 1; j < PER; j++)
            bad += strcmp(th_ids[i][j], th_ids[i][j - 1]) <= 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
    qsort(th_ids, TH * PER, OC_UUID_STR_LEN + 1, cmp_id);
    char(*all)[OC_UUID_STR_LEN + 1] = &th_ids[0][0];
    int dup = 0;
    for (int k = 1; k < TH * PER; k++)
        dup += strcmp(all[k], all[k - 1]) == 0;
    CU_ASSERT_EQUAL(dup, 0);
}

static void test_uuid_parse_format(void)
{
    const char *s = "0189f7a2-3b4c-7d5e-8f60-718293a4b5c6";
    uint8_t b[16];
    char out[OC_UUID_STR_LEN + 1];
    CU_ASSERT_FATAL(oc_uuid_parse(s, b));
    CU_ASSERT_EQUAL(b[0], 0x01);
    CU_ASSERT_EQUAL(b[15], 0xc6);
    oc_uuid_format(b, out);
    CU_ASSERT_STRING_EQUAL(out, s);
    CU_ASSERT(oc_uuid_parse("0189F7A2-3B4C-7D5E-8F60-718293A4B5C6", b));
    oc_uuid_format(b, out);
    CU_ASSERT_STRING_EQUAL(out, s);

    CU_ASSERT_FALSE(oc_uuid_valid(NULL));
    CU_ASSERT_FALSE(oc_uuid_valid(""));
    CU_ASSERT_FALSE(oc_uuid_valid("0189f7a2-3b4c-7d5e-8f60-718293a4b5c"));   /* short */
    CU_ASSERT_FALSE(oc_uuid_valid("0189f7a2-3b4c-7d5e-8f60-718293a4b5c6a")); /* long */
    CU_ASSERT_FALSE(oc_uuid_valid("0189f7a2x3b4c-7d5e-8f60-718293a4b5c6"));
    CU_ASSERT_FALSE(oc_uuid_valid("0189f7a23b4c7d5e8f60718293a4b5c6abcd"));
    CU_ASSERT_FALSE(oc_uuid_valid("0189f7g2-3b4c-7d5e-8f60-718293a4b5c6"));
    CU_ASSERT_FALSE(oc_uuid_valid("{189f7a2-3b4c-7d5e-8f60-718293a4b5c6"));
    CU_ASSERT_FALSE(oc_uuid_valid("0189f7A2-3b4c-7d5e-8f60-718293a4b5c6")); /* mixed case */
    CU_ASSERT_FALSE(oc_uuid_valid(" 0189f7a2-3b4c-7d5e-8f60-718293a4b5c6"));
}

/* ---- base64 ---- */

static void test_base64_vectors(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const std[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[32];
    uint8_t dec[32];
    for (int i = 0; i < 7; i++) {
        size_t n = strlen(plain[i]);
        CU_ASSERT_EQUAL(oc_base64_encode((const uint8_t *)plain[i], n, out), strlen(std[i]));
        CU_ASSERT_STRING_EQUAL(out, std[i]);
        CU_ASSERT_EQUAL(oc_base64_encoded_len(n), strlen(std[i]));
        CU_ASSERT_EQUAL(oc_base64url_encode((const uint8_t *)plain[i], n, out), strlen(url[i]));
        CU_ASSERT_STRING_EQUAL(out, url[i]);
        CU_ASSERT_EQUAL(oc_base64_decode(std[i], strlen(std[i]), dec, sizeof dec), (long)n);
        CU_ASSERT(memcmp(dec, plain[i], n) == 0);
        CU_ASSERT_EQUAL(oc_base64url_decode(url[i], strlen(url[i]), dec, sizeof dec), (long)n);
        CU_ASSERT(memcmp(dec, plain[i], n) == 0);
    }
    /* the alphabets differ in the last two characters */
    const uint8_t hi[] = {0xfb, 0xff, 0xbf};
    oc_base64_encode(hi, 3, out);
    CU_ASSERT_STRING_EQUAL(out, "+/+/");
    oc_base64url_encode(hi, 3, out);
    CU_ASSERT_STRING_EQUAL(out, "-_-_");
}

static void test_base64_round_trip(void)
{
    uint8_t in[300], dec[300];
    char enc[512];
    int bad = 0;
    srand(12345);
    for (size_t n = 0; n < sizeof in; n++) {
        for (size_t i = 0; i < n; i++)
            in[i] = (uint8_t)rand();
        size_t el = oc_base64_encode(in, n, enc);
        bad += el != oc_base64_encoded_len(n) || el != strlen(enc);
        bad += oc_base64_decode(enc, el, dec, sizeof dec) != (long)n || memcmp(in, dec, n) != 0;
        el = oc_base64url_encode(in, n, enc);
        bad += el > oc_base64_encoded_len(n) || strchr(enc, '=') != NULL;
        bad += oc_base64url_decode(enc, el, dec, sizeof dec) != (long)n || memcmp(in, dec, n) != 0;
    }
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_base64_rejects(void)
{
    uint8_t d[64];
#define REJ(fn, s) CU_ASSERT_EQUAL(fn(s, strlen(s), d, sizeof d), -1)
    REJ(oc_base64_decode, "Zg");   /* missing padding */
    REJ(oc_base64_decode, "Zg=");  /* length not a multiple of 4 */
    REJ(oc_base64_decode, "Z==="); /* too much padding */
    REJ(oc_base64_decode, "====");
    REJ(oc_base64_decode, "Zg==Zg=="); /* padding in the middle */
    REJ(oc_base64_decode, "=Zg=");
    REJ(oc_base64_decode, "Zh=="); /* non-zero unused bits */
    REJ(oc_base64_decode, "Zm9=");
    REJ(oc_base64_decode, "Zm9v\n"); /* whitespace */
    REJ(oc_base64_decode, "Zm 9v");
    REJ(oc_base64_decode, "Zm9-"); /* url alphabet in standard */
    REJ(oc_base64_decode, "Zm9_");
    REJ(oc_base64_decode, "Zm9\x80");
    REJ(oc_base64url_decode, "Zm9+"); /* standard alphabet in url */
    REJ(oc_base64url_decode, "Zg=="); /* padding in url */
    REJ(oc_base64url_decode, "Z");    /* impossible length */
    REJ(oc_base64url_decode, "Zm9vY");
    REJ(oc_base64url_decode, "Zh");
#undef REJ
    /* embedded NUL is not base64 */
    CU_ASSERT_EQUAL(oc_base64_decode("Zm\0v", 4, d, sizeof d), -1);
    /* output capacity is respected */
    CU_ASSERT_EQUAL(oc_base64_decode("Zm9vYmFy", 8, d, 5), -1);
    CU_ASSERT_EQUAL(oc_base64_decode("Zm9vYmFy", 8, d, 6), 6);
    CU_ASSERT_EQUAL(oc_base64url_decode("Zm9vYmE", 7, d, 4), -1);
    CU_ASSERT_EQUAL(oc_base64_decode("", 0, d, 0), 0);
}

static void test_hex(void)
{
    const uint8_t in[] = {0x00, 0x01, 0xab, 0xff};
    char out[9];
    oc_hex_encode(in, 4, out);
    CU_ASSERT_STRING_EQUAL(out, "0001abff");
    oc_hex_encode(in, 0, out);
    CU_ASSERT_STRING_EQUAL(out, "");
}

/* ---- UTF-8 ---- */

#define V(s) oc_utf8_valid(s, sizeof(s) - 1)

static void test_utf8_valid(void)
{
    CU_ASSERT(V(""));
    CU_ASSERT(V("plain ascii"));
    CU_ASSERT(V("caf\xC3\xA9"));      /* é */
    CU_ASSERT(V("\xE2\x82\xAC"));     /* € */
    CU_ASSERT(V("\xF0\x9F\x98\x80")); /* 😀 */
    CU_ASSERT(V("\xF4\x8F\xBF\xBF")); /* U+10FFFF */
    CU_ASSERT(V("\xED\x9F\xBF"));     /* U+D7FF, just below the surrogates */
    CU_ASSERT(V("\xEE\x80\x80"));     /* U+E000, just above */
    CU_ASSERT(V("\xC2\x80"));         /* U+0080, smallest 2-byte */
    CU_ASSERT(V("\xE0\xA0\x80"));     /* U+0800, smallest 3-byte */
    CU_ASSERT(V("\xF0\x90\x80\x80")); /* U+10000, smallest 4-byte */

    CU_ASSERT_FALSE(V("a\0b"));         /* NUL */
    CU_ASSERT_FALSE(V("\xC0\x80"));     /* overlong NUL */
    CU_ASSERT_FALSE(V("\xC1\xBF"));     /* overlong */
    CU_ASSERT_FALSE(V("\xE0\x80\x80")); /* overlong 3-byte */
    CU_ASSERT_FALSE(V("\xE0\x9F\xBF"));
    CU_ASSERT_FALSE(V("\xF0\x80\x80\x80")); /* overlong 4-byte */
    CU_ASSERT_FALSE(V("\xF0\x8F\xBF\xBF"));
    CU_ASSERT_FALSE(V("\xED\xA0\x80"));     /* U+D800 */
    CU_ASSERT_FALSE(V("\xED\xBF\xBF"));     /* U+DFFF */
    CU_ASSERT_FALSE(V("\xF4\x90\x80\x80")); /* U+110000 */
    CU_ASSERT_FALSE(V("\xF5\x80\x80\x80"));
    CU_ASSERT_FALSE(V("\xFF"));
    CU_ASSERT_FALSE(V("\x80")); /* lone continuation */
    CU_ASSERT_FALSE(V("\xC3")); /* truncated */
    CU_ASSERT_FALSE(V("\xE2\x82"));
    CU_ASSERT_FALSE(V("\xF0\x9F\x98"));
    CU_ASSERT_FALSE(V("\xE2\x28\xA1")); /* bad continuation */
    /* the length is honoured: a valid prefix of an invalid buffer */
    CU_ASSERT(oc_utf8_valid("ab\xFF", 2));
}

static void test_utf16_units(void)
{
    CU_ASSERT_EQUAL(oc_utf16_units("", 0), 0);
    CU_ASSERT_EQUAL(oc_utf16_units("a", 1), 1);
    CU_ASSERT_EQUAL(oc_utf16_units("\xC3\xA9", 2), 1);
    CU_ASSERT_EQUAL(oc_utf16_units("\xE2\x82\xAC", 3), 1);
    CU_ASSERT_EQUAL(oc_utf16_units("\xF0\x9F\x98\x80", 4), 2);
    CU_ASSERT_EQUAL(oc_utf8_chars("\xF0\x9F\x98\x80", 4), 1);
    CU_ASSERT_EQUAL(oc_utf8_chars("a\xC3\xA9\xE2\x82\xAC", 6), 3);

    /* The LINE 5000-unit rule: emoji outside the BMP count twice. */
    enum { LIMIT = 5000 };
    char *s = malloc(4 * 5001 + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    memset(s, 'a', LIMIT);
    CU_ASSERT_EQUAL(oc_utf16_units(s, LIMIT), LIMIT);
    memcpy(s + LIMIT - 1, "\xF0\x9F\x98\x80", 4); /* 4999 'a' + one emoji */
    CU_ASSERT_EQUAL(oc_utf16_units(s, LIMIT + 3), LIMIT + 1);
    CU_ASSERT_EQUAL(oc_utf8_chars(s, LIMIT + 3), LIMIT);
    for (int i = 0; i < 2501; i++)
        memcpy(s + 4 * i, "\xF0\x9F\x98\x80", 4);
    CU_ASSERT(oc_utf8_valid(s, 4 * 2500));
    CU_ASSERT_EQUAL(oc_utf16_units(s, 4 * 2500), LIMIT);     /* exactly at the limit */
    CU_ASSERT_EQUAL(oc_utf16_units(s, 4 * 2501), LIMIT + 2); /* over */
    CU_ASSERT_EQUAL(oc_utf8_chars(s, 4 * 2501), 2501);
    free(s);
}

static void test_utf8_prefix(void)
{
    const char *s = "a\xE2\x82\xAC\xF0\x9F\x98\x80"
                    "b"; /* a € 😀 b */
    size_t n = strlen(s);
    CU_ASSERT_EQUAL(oc_utf8_prefix(s, n, 0), 0);
    CU_ASSERT_EQUAL(oc_utf8_prefix(s, n, 1), 1);
    CU_ASSERT_EQUAL(oc_utf8_prefix(s, n, 2), 4);
    CU_ASSERT_EQUAL(oc_utf8_prefix(s, n, 3), 8);
    CU_ASSERT_EQUAL(oc_utf8_prefix(s, n, 4), 9);
    CU_ASSERT_EQUAL(oc_utf8_prefix(s, n, 100), 9);
    /* never cuts a character when the buffer itself ends mid-character */
    CU_ASSERT_EQUAL(oc_utf8_prefix(s, 6, 10), 4);
    /* stops at an invalid byte */
    CU_ASSERT_EQUAL(oc_utf8_prefix("ab\xFF"
                                   "cd",
                                   5, 10),
                    2);
}

/* ---- JSON ---- */

#define JV(s, c) oc_json_valid(s, strlen(s), c)

static char *nested(int depth, const char *open, const char *close)
{
    char *s = malloc((size_t)depth * 2 + 1);
    for (int i = 0; i < depth; i++) {
        s[i] = open[0];
        s[depth + i] = close[0];
    }
    s[2 * depth] = '\0';
    return s;
}

static void test_json_valid(void)
{
    CU_ASSERT(JV("{}", true));
    CU_ASSERT(JV("[]", true));
    CU_ASSERT(JV(" {\"a\": [1, 2.5e3, -0, {\"b\": null}], \"c\": \"\\u00e9\\n\"} \n", true));
    CU_ASSERT(JV("\"str\"", false));
    CU_ASSERT(JV("1", false));
    CU_ASSERT(JV("true", false));
    CU_ASSERT(JV("null", false));
    CU_ASSERT(JV("[123456789012345678901234567890]", true)); /* does not fit long long */
    CU_ASSERT(JV("\"\xF0\x9F\x98\x80\"", false));
    CU_ASSERT(JV("\"\\ud83d\\ude00\"", false));

    CU_ASSERT_FALSE(JV("\"str\"", true)); /* scalars refused when a container is required */
    CU_ASSERT_FALSE(JV("1", true));
    CU_ASSERT_FALSE(JV("null", true));
    CU_ASSERT_FALSE(JV("", false));
    CU_ASSERT_FALSE(JV("   ", false));
    CU_ASSERT_FALSE(JV("{", true));
    CU_ASSERT_FALSE(JV("{\"a\":1,}", true));
    CU_ASSERT_FALSE(JV("[1,]", true));
    CU_ASSERT_FALSE(JV("{'a':1}", true));
    CU_ASSERT_FALSE(JV("{a:1}", true));
    CU_ASSERT_FALSE(JV("{\"a\":1} x", true));
    CU_ASSERT_FALSE(JV("{} {}", true));
    CU_ASSERT_FALSE(JV("[NaN]", true));
    CU_ASSERT_FALSE(JV("[01]", true));
    CU_ASSERT_FALSE(JV("[\"\t\"]", true));       /* raw control character in a string */
    CU_ASSERT_FALSE(JV("[\"\xC0\x80\"]", true)); /* invalid UTF-8 */
    CU_ASSERT_FALSE(JV("[\"\\ud800\"]", true));  /* lone surrogate escape */
    CU_ASSERT_FALSE(JV("[\"\\x41\"]", true));
    CU_ASSERT_FALSE(oc_json_valid("{}\0", 3, true));       /* trailing NUL byte */
    CU_ASSERT_FALSE(oc_json_valid("[\"a\0b\"]", 7, true)); /* NUL inside a string */
    CU_ASSERT_FALSE(oc_json_valid(NULL, 0, false));
    /* only n bytes are looked at */
    CU_ASSERT(oc_json_valid("[1]garbage", 3, true));
}

static void test_json_depth(void)
{
    char *s = nested(64, "[", "]");
    CU_ASSERT(JV(s, true));
    free(s);
    s = nested(65, "[", "]");
    CU_ASSERT_FALSE(JV(s, true));
    free(s);
    s = nested(65, "{", "}");
    CU_ASSERT_FALSE(JV(s, true));
    free(s);
    s = nested(5000, "[", "]");
    CU_ASSERT_FALSE(JV(s, true));
    free(s);
    /* 64 levels mixing objects and arrays */
    char mix[1024] = "";
    for (int i = 0; i < 32; i++)
        strcat(mix, "{\"k\":[");
    strcat(mix, "1");
    for (int i = 0; i < 32; i++)
        strcat(mix, "]}");
    CU_ASSERT(JV(mix, true));
    /* brackets inside strings do not count, nor do escaped quotes end strings */
    char str[256] = "[\"\\\"";
    for (int i = 0; i < 100; i++)
        strcat(str, "[");
    strcat(str, "\"]");
    CU_ASSERT(JV(str, true));
}

/* ---- misc ---- */

static void test_ct_equal(void)
{
    CU_ASSERT(oc_ct_equal("abc", 3, "abc", 3));
    CU_ASSERT(oc_ct_equal("", 0, "", 0));
    CU_ASSERT(oc_ct_equal(NULL, 0, NULL, 0));
    CU_ASSERT_FALSE(oc_ct_equal("abc", 3, "abd", 3));
    CU_ASSERT_FALSE(oc_ct_equal("abc", 3, "abcd", 4)); /* prefix */
    CU_ASSERT_FALSE(oc_ct_equal("abcd", 4, "abc", 3));
    CU_ASSERT_FALSE(oc_ct_equal("abc", 3, "", 0));
    CU_ASSERT_FALSE(oc_ct_equal("a\0b", 3, "a\0c", 3)); /* not a string compare */
}

static void test_clocks(void)
{
    int64_t ms = oc_now_ms(), us = oc_now_us();
    int64_t t = (int64_t)time(NULL) * 1000;
    CU_ASSERT(ms >= t - 1000 && ms <= t + 2000);
    CU_ASSERT(us / 1000 >= ms && us / 1000 <= ms + 1000);
    int64_t m1 = oc_mono_ns(), u1 = oc_mono_us();
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
    int64_t m2 = oc_mono_ns(), u2 = oc_mono_us();
    CU_ASSERT(m2 - m1 >= 2 * 1000 * 1000);
    CU_ASSERT(u2 - u1 >= 2000);
}

static char tmpdir[64];

static char *write_tmp(const char *name, const char *data, size_t n)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

static void test_read_file(void)
{
    char *out = NULL;
    size_t len = 99;
    oc_error_t err;

    oc_error_clear(&err);
    const char *p = write_tmp("a", "s3cret\n", 7);
    CU_ASSERT_EQUAL(oc_read_file(p, 64, true, &out, &len, &err), OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "s3cret");
    CU_ASSERT_EQUAL(len, 6);
    free(out);
    CU_ASSERT_EQUAL(oc_read_file(p, 64, false, &out, &len, &err), OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "s3cret\n");
    free(out);

    p = write_tmp("b", "tok\r\n\n", 6); /* only one newline is stripped */
    CU_ASSERT_EQUAL(oc_read_file(p, 64, true, &out, &len, &err), OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "tok\r\n");
    free(out);
    p = write_tmp("c", "tok\r\n", 5);
    CU_ASSERT_EQUAL(oc_read_file(p, 64, true, &out, &len, &err), OC_OK);
    CU_ASSERT_STRING_EQUAL(out, "tok");
    free(out);

    p = write_tmp("d", "", 0);
    CU_ASSERT_EQUAL(oc_read_file(p, 64, true, &out, &len, &err), OC_OK);
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_STRING_EQUAL(out, "");
    free(out);

    /* exactly max is fine, one more is too large */
    p = write_tmp("e", "0123456789", 10);
    CU_ASSERT_EQUAL(oc_read_file(p, 10, false, &out, &len, &err), OC_OK);
    CU_ASSERT_EQUAL(len, 10);
    free(out);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_read_file(p, 9, false, &out, &len, &err), OC_E_TOO_LARGE);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(err.code, OC_E_TOO_LARGE);

    /* a file bigger than the first guess of a size-less file still reads whole */
    enum { BIG = 100000 };
    char *big = malloc(BIG);
    for (int i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    p = write_tmp("f", big, BIG);
    CU_ASSERT_EQUAL(oc_read_file(p, BIG, false, &out, &len, &err), OC_OK);
    CU_ASSERT_EQUAL(len, BIG);
    CU_ASSERT(out != NULL && memcmp(out, big, BIG) == 0);
    free(out);
    free(big);

    /* a pipe-like file without a size: /proc reports 0 */
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_read_file("/proc/self/stat", 4096, false, &out, &len, &err), OC_OK);
    CU_ASSERT(len > 10);
    free(out);

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_read_file("/nonexistent/x", 64, true, &out, &len, &err), OC_E_IO);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/nonexistent/x"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "No such file"));

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_read_file(tmpdir, 64, true, &out, &len, &err), OC_E_IO); /* a dir */
}

static int suite_init(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/oc_test_util.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int suite_clean(void)
{
    static const char *const names[] = {"a", "b", "c", "d", "e", "f"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("util", suite_init, suite_clean);
    CU_add_test(s, "uuid v4", test_uuid_v4);
    CU_add_test(s, "uuid v4: per-thread block, none shared with a forked child",
                test_uuid_v4_block_and_fork);
    CU_add_test(s, "uuid v7 layout", test_uuid_v7_layout);
    CU_add_test(s, "uuid v7 ordering", test_uuid_v7_ordering);
    CU_add_test(s, "uuid v7 threads unique", test_uuid_v7_threads_unique);
    CU_add_test(s, "uuid parse/format", test_uuid_parse_format);
    CU_add_test(s, "base64 vectors", test_base64_vectors);
    CU_add_test(s, "base64 round trip", test_base64_round_trip);
    CU_add_test(s, "base64 rejects", test_base64_rejects);
    CU_add_test(s, "hex", test_hex);
    CU_add_test(s, "utf8 valid", test_utf8_valid);
    CU_add_test(s, "utf16 units", test_utf16_units);
    CU_add_test(s, "utf8 prefix", test_utf8_prefix);
    CU_add_test(s, "json valid", test_json_valid);
    CU_add_test(s, "json depth", test_json_depth);
    CU_add_test(s, "ct equal", test_ct_equal);
    CU_add_test(s, "clocks", test_clocks);
    CU_add_test(s, "read file", test_read_file);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
