/* Unit tests for common/src/buf.c: growth, the maximum, sticky failure, JSON escaping, detach. */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/buf.h"
#include "omnichat/util.h"

#include "test_main.h"

static void test_append_basic(void)
{
    oc_buf_t b;
    oc_buf_init(&b, 1024);
    CU_ASSERT_PTR_NULL(b.data); /* nothing allocated yet */
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "hello"), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_append(&b, ", world", 7), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_append(&b, "\0x", 2), OC_OK); /* binary-safe */
    CU_ASSERT_EQUAL(b.len, 14);
    CU_ASSERT_STRING_EQUAL(b.data, "hello, world");
    CU_ASSERT_EQUAL(b.data[13], 'x');
    CU_ASSERT_EQUAL(b.data[14], '\0');
    /* growth across many appends keeps the contents */
    oc_buf_reset(&b);
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_STRING_EQUAL(b.data, "");
    for (int i = 0; i < 100; i++)
        CU_ASSERT_EQUAL(oc_buf_appends(&b, "0123456789"), OC_OK);
    CU_ASSERT_EQUAL(b.len, 1000);
    CU_ASSERT(b.cap > b.len);
    CU_ASSERT(b.cap <= b.max + 1);
    CU_ASSERT(memcmp(b.data + 990, "0123456789", 11) == 0);
    oc_buf_dispose(&b);
    CU_ASSERT_PTR_NULL(b.data);
    oc_buf_dispose(NULL);
}

static void test_empty_append_allocates(void)
{
    oc_buf_t b;
    oc_buf_init(&b, 16);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, ""), OC_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b.data);
    CU_ASSERT_STRING_EQUAL(b.data, "");
    oc_buf_dispose(&b);
}

static void test_max_and_sticky(void)
{
    oc_buf_t b;
    oc_buf_init(&b, 10);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "0123456"), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "789"), OC_OK); /* exactly max */
    CU_ASSERT_EQUAL(b.len, 10);
    CU_ASSERT_EQUAL(b.failed, OC_OK);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "x"), OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(b.failed, OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(b.len, 10); /* unchanged */
    CU_ASSERT_STRING_EQUAL(b.data, "0123456789");
    oc_buf_dispose(&b);

    oc_buf_init(&b, 10);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "abc"), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "this is far too long"), OC_E_TOO_LARGE);
    CU_ASSERT_STRING_EQUAL(b.data, "abc");
    /* sticky: even appends that would fit now fail with the same error */
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "d"), OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(oc_buf_append(&b, "", 0), OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(oc_buf_appendf(&b, "%d", 1), OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(oc_buf_append_json_str(&b, "e", 1), OC_E_TOO_LARGE);
    CU_ASSERT_STRING_EQUAL(b.data, "abc");
    /* reset clears the failure */
    oc_buf_reset(&b);
    CU_ASSERT_EQUAL(b.failed, OC_OK);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "d"), OC_OK);
    CU_ASSERT_STRING_EQUAL(b.data, "d");
    oc_buf_dispose(&b);

    /* max 0: only empty content */
    oc_buf_init(&b, 0);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, ""), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "a"), OC_E_TOO_LARGE);
    oc_buf_dispose(&b);

    /* a huge length does not overflow the size check */
    oc_buf_init(&b, 100);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "a"), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_append(&b, "x", (size_t)-1), OC_E_TOO_LARGE);
    oc_buf_dispose(&b);
}

static void test_appendf(void)
{
    oc_buf_t b;
    oc_buf_init(&b, 4096);
    CU_ASSERT_EQUAL(oc_buf_appendf(&b, "%s=%d", "n", 42), OC_OK);
    CU_ASSERT_STRING_EQUAL(b.data, "n=42");
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CU_ASSERT_EQUAL(oc_buf_appendf(&b, ";%s;", big), OC_OK); /* forces a regrow */
    CU_ASSERT_EQUAL(b.len, 4 + 1 + 999 + 1);
    CU_ASSERT_EQUAL(b.data[5], 'z');
    CU_ASSERT_EQUAL(b.data[b.len - 1], ';');
    CU_ASSERT_EQUAL(b.data[b.len], '\0');
    oc_buf_dispose(&b);

    oc_buf_init(&b, 8);
    CU_ASSERT_EQUAL(oc_buf_appendf(&b, "%d", 1234), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_appendf(&b, "%d", 56789), OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(b.len, 4);
    CU_ASSERT_STRING_EQUAL(b.data, "1234");
    CU_ASSERT_EQUAL(b.failed, OC_E_TOO_LARGE);
    oc_buf_dispose(&b);
}

static void json_of(const char *in, size_t n, const char *expect)
{
    oc_buf_t b;
    oc_buf_init(&b, 1 << 20);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "\""), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_append_json_str(&b, in, n), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "\""), OC_OK);
    CU_ASSERT_STRING_EQUAL(b.data, expect);
    /* oc_json_valid refuses \u0000 on purpose (as jsonb does), so skip that one */
    if (memchr(in, '\0', n) == NULL) CU_ASSERT(oc_json_valid(b.data, b.len, false));
    oc_buf_dispose(&b);
}

#define J(in, expect) json_of(in, sizeof(in) - 1, expect)

static void test_json_str(void)
{
    J("plain", "\"plain\"");
    J("", "\"\"");
    J("q\"b\\s/", "\"q\\\"b\\\\s/\"");
    J("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
    J("\x01\x1f\x7f", "\"\\u0001\\u001f\x7f\"");
    J("a\0b", "\"a\\u0000b\"");
    J("caf\xC3\xA9 \xF0\x9F\x98\x80", "\"caf\xC3\xA9 \xF0\x9F\x98\x80\"");
    /* invalid bytes become U+FFFD, one per byte */
    J("a\xFF"
      "b",
      "\"a\xEF\xBF\xBD"
      "b\"");
    J("\xC0\x80", "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");                 /* overlong */
    J("\xED\xA0\x80", "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\""); /* surrogate */
    J("x\xE2\x82", "\"x\xEF\xBF\xBD\xEF\xBF\xBD\"");               /* truncated at the end */
}

static void test_json_str_long_and_limit(void)
{
    /* longer than the internal chunk, every byte escaped */
    enum { N = 3000 };
    char *in = malloc(N);
    for (int i = 0; i < N; i++)
        in[i] = (i % 3 == 0) ? '\n' : (i % 3 == 1 ? '"' : '\x02');
    oc_buf_t b;
    oc_buf_init(&b, 1 << 20);
    CU_ASSERT_EQUAL(oc_buf_append_json_str(&b, in, N), OC_OK);
    CU_ASSERT_EQUAL(b.len, (size_t)(N / 3) * (2 + 2 + 6));
    CU_ASSERT(memcmp(b.data, "\\n\\\"\\u0002\\n", 12) == 0);
    oc_buf_dispose(&b);

    /* all or nothing at the maximum, even when part of it would have fitted */
    oc_buf_init(&b, 2000);
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "head:"), OC_OK);
    CU_ASSERT_EQUAL(oc_buf_append_json_str(&b, in, N), OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(b.len, 5);
    CU_ASSERT_STRING_EQUAL(b.data, "head:");
    CU_ASSERT_EQUAL(b.failed, OC_E_TOO_LARGE);
    oc_buf_dispose(&b);

    /* the escaped length, not the input length, counts against max */
    oc_buf_init(&b, 11);
    CU_ASSERT_EQUAL(oc_buf_append_json_str(&b, "\x01\x02", 2), OC_E_TOO_LARGE);
    oc_buf_reset(&b);
    CU_ASSERT_EQUAL(oc_buf_append_json_str(&b, "\x01\x02", 1), OC_OK);
    CU_ASSERT_EQUAL(b.len, 6);
    oc_buf_dispose(&b);
    free(in);
}

/* Unreserved runs stay as they are, everything else is %XX, at either end too. */
static void test_form_encoded(void)
{
    oc_buf_t b;

    oc_buf_init(&b, 256);
    oc_buf_append_form_encoded(&b, "a b&c=d~e_f.g-h", 15);
    CU_ASSERT_STRING_EQUAL(b.data, "a%20b%26c%3Dd~e_f.g-h");
    oc_buf_dispose(&b);
    oc_buf_init(&b, 256);
    oc_buf_append_form_encoded(&b, "\xe0\xb8\xaa{}", 5);
    CU_ASSERT_STRING_EQUAL(b.data, "%E0%B8%AA%7B%7D");
    oc_buf_dispose(&b);
    oc_buf_init(&b, 4); /* too small: the buffer fails, nothing past its cap */
    CU_ASSERT_EQUAL(oc_buf_append_form_encoded(&b, "abcdefgh", 8), OC_E_TOO_LARGE);
    oc_buf_dispose(&b);
}

static void test_detach(void)
{
    oc_buf_t b;
    size_t len = 99;
    oc_buf_init(&b, 100);
    CU_ASSERT_PTR_NULL(oc_buf_detach(&b, &len));
    CU_ASSERT_EQUAL(len, 0);
    oc_buf_appends(&b, "");
    CU_ASSERT_PTR_NULL(oc_buf_detach(&b, &len)); /* allocated but empty */
    oc_buf_appends(&b, "abc");
    char *d = oc_buf_detach(&b, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(d, "abc");
    CU_ASSERT_EQUAL(len, 3);
    CU_ASSERT_PTR_NULL(b.data);
    CU_ASSERT_EQUAL(b.len, 0);
    free(d);
    /* usable again, with the same maximum */
    CU_ASSERT_EQUAL(oc_buf_appends(&b, "xyz"), OC_OK);
    CU_ASSERT_STRING_EQUAL(b.data, "xyz");
    CU_ASSERT_EQUAL(b.max, 100);
    oc_buf_dispose(&b);
}

static void test_secret(void)
{
    oc_buf_t b;
    oc_buf_init_secret(&b, 1 << 16);
    CU_ASSERT(b.secret);
    /* growth by copy keeps contents intact across many reallocations */
    for (int i = 0; i < 1000; i++)
        CU_ASSERT_EQUAL(oc_buf_appendf(&b, "%04d", i), OC_OK);
    CU_ASSERT_EQUAL(b.len, 4000);
    CU_ASSERT(memcmp(b.data, "000000010002", 12) == 0);
    CU_ASSERT(memcmp(b.data + 3996, "0999", 4) == 0);
    CU_ASSERT_EQUAL(oc_buf_append_json_str(&b, "\"tok\"", 5), OC_OK);
    CU_ASSERT_STRING_EQUAL(b.data + 4000, "\\\"tok\\\"");
    /* reset wipes what is kept */
    size_t cap = b.cap;
    char *data = b.data;
    oc_buf_reset(&b);
    CU_ASSERT_PTR_EQUAL(b.data, data);
    int nonzero = 0;
    for (size_t i = 0; i < cap; i++)
        nonzero += data[i] != 0;
    CU_ASSERT_EQUAL(nonzero, 0);
    oc_buf_dispose(&b);
    CU_ASSERT_PTR_NULL(b.data);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("buf", NULL, NULL);
    CU_add_test(s, "append basic", test_append_basic);
    CU_add_test(s, "empty append allocates", test_empty_append_allocates);
    CU_add_test(s, "max and sticky failure", test_max_and_sticky);
    CU_add_test(s, "appendf", test_appendf);
    CU_add_test(s, "json string escaping", test_json_str);
    CU_add_test(s, "json string long and limit", test_json_str_long_and_limit);
    CU_add_test(s, "detach", test_detach);
    CU_add_test(s, "secret", test_secret);
    CU_add_test(s, "form encoding", test_form_encoded);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
