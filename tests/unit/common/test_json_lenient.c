/* The lenient JSON pre-pass: what jansson alone refuses although it is JSON. */
#include <CUnit/Basic.h>
#include <string.h>

#include "omnichat/json_lenient.h"

#include "test_main.h"

static json_t *load(const char *s, oc_err_t *code)
{
    oc_error_t err;
    json_t *v;

    oc_error_clear(&err);
    v = oc_json_lenient_load(s, strlen(s), &err);
    *code = err.code;
    return v;
}

static void test_nul_escape_and_big_numbers(void)
{
    oc_err_t code;
    json_t *v = load("{\"a\\u0000b\":\"x\\u0000y\",\"n\":123456789012345678901234567890,"
                     "\"r\":1e999,\"ok\":42,\"s\":\"9999999999999999999999\"}",
                     &code);

    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "a\xEF\xBF\xBD"
                                                                "b")),
                           "x\xEF\xBF\xBDy");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "n")),
                           "123456789012345678901234567890");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "r")), "1e999");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(v, "ok")), 42);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "s")), "9999999999999999999999");
    json_decref(v);
}

/* The copy itself, byte for byte: unchanged runs around each rewrite, at both ends. */
static void test_copy_exact(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"{\"a\":\"plain text\",\"b\":[1,2.5,-3]}", "{\"a\":\"plain text\",\"b\":[1,2.5,-3]}"},
        {"\"\\u0000\"", "\"\\uFFFD\""},
        {"[\"x\\u0000y\\u0000\",12345678901234567890,7,99999999999999999999]",
         "[\"x\\uFFFDy\\uFFFD\",\"12345678901234567890\",7,\"99999999999999999999\"]"},
        {"123456789012345678901", "\"123456789012345678901\""},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        oc_buf_t b;
        oc_buf_init(&b, 1024);
        CU_ASSERT_TRUE(oc_json_lenient_copy(cases[i].in, strlen(cases[i].in), &b));
        CU_ASSERT_STRING_EQUAL(b.data != NULL ? b.data : "", cases[i].out);
        oc_buf_dispose(&b);
    }
}

static void test_duplicates_depth_and_garbage(void)
{
    char deep[200];
    oc_err_t code;
    json_t *v = load("{\"k\":1,\"k\":2}", &code);

    CU_ASSERT_EQUAL(json_integer_value(json_object_get(v, "k")), 2); /* the last one wins */
    json_decref(v);
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    deep[128] = '\0';
    v = load(deep, &code);
    CU_ASSERT_PTR_NOT_NULL(v);
    json_decref(v);
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    deep[130] = '\0';
    CU_ASSERT_PTR_NULL(load(deep, &code));
    CU_ASSERT_EQUAL(code, OC_E_INVALID);
    CU_ASSERT_TRUE(oc_json_depth_ok("[\"[[[[\"]", 8, 1)); /* brackets in strings do not count */
    CU_ASSERT_FALSE(oc_json_depth_ok("[[1]]", 5, 1));
    CU_ASSERT_PTR_NULL(load("", &code));
    CU_ASSERT_PTR_NULL(load("{\"a\":", &code));
    CU_ASSERT_EQUAL(code, OC_E_INVALID);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("json_lenient", NULL, NULL);
    CU_add_test(s, "\\u0000 and numbers jansson cannot hold", test_nul_escape_and_big_numbers);
    CU_add_test(s, "duplicate keys, depth, garbage", test_duplicates_depth_and_garbage);
    CU_add_test(s, "the copy, byte for byte", test_copy_exact);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
