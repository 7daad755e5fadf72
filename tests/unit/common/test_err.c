/* Unit tests for common/src/err.c: the error table and oc_error_t's first-wins message rules. */
#include <CUnit/Basic.h>
#include <string.h>

#include "omnichat/err.h"
#include "omnichat/util.h"

#include "test_main.h"

static void test_table_rows(void)
{
    CU_ASSERT_EQUAL(OC_OK, 0);
    CU_ASSERT_STRING_EQUAL(oc_err_message(OC_E_NOT_FOUND), "not found");
    CU_ASSERT_STRING_EQUAL(oc_err_name(OC_E_NOT_FOUND), "NOT_FOUND");
    CU_ASSERT_EQUAL(oc_err_grpc_status(OC_E_NOT_FOUND), 5);
    CU_ASSERT_EQUAL(oc_err_http_status(OC_E_NOT_FOUND), 404);
    CU_ASSERT_STRING_EQUAL(oc_err_name(OC_OK), "OK");
    CU_ASSERT_EQUAL(oc_err_http_status(OC_OK), 200);
    CU_ASSERT_EQUAL(oc_err_grpc_status(OC_E_CONFLICT), 10);
    CU_ASSERT_EQUAL(oc_err_http_status(OC_E_TOO_LARGE), 413);
    CU_ASSERT_STRING_EQUAL(oc_err_name(OC_E_UNKNOWN), "UNKNOWN");
    for (int i = 0; i < (int)OC_E__COUNT; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(oc_err_message((oc_err_t)i));
        CU_ASSERT(strlen(oc_err_message((oc_err_t)i)) > 0);
        CU_ASSERT(strlen(oc_err_name((oc_err_t)i)) > 0);
        CU_ASSERT(oc_err_http_status((oc_err_t)i) >= 200);
    }
}

static void test_out_of_range(void)
{
    CU_ASSERT_STRING_EQUAL(oc_err_name(OC_E__COUNT), "UNKNOWN");
    CU_ASSERT_STRING_EQUAL(oc_err_message((oc_err_t)-1), "unknown error");
    CU_ASSERT_EQUAL(oc_err_grpc_status((oc_err_t)1000), 2);
}

static void test_from_grpc(void)
{
    CU_ASSERT_EQUAL(oc_err_from_grpc_status(0), OC_OK);
    CU_ASSERT_EQUAL(oc_err_from_grpc_status(5), OC_E_NOT_FOUND);
    /* two rows share 8 and 13: the first row is canonical */
    CU_ASSERT_EQUAL(oc_err_from_grpc_status(8), OC_E_TOO_LARGE);
    CU_ASSERT_EQUAL(oc_err_from_grpc_status(13), OC_E_INTERNAL);
    CU_ASSERT_EQUAL(oc_err_from_grpc_status(14), OC_E_UNAVAILABLE);
    CU_ASSERT_EQUAL(oc_err_from_grpc_status(99), OC_E_UNKNOWN);
    CU_ASSERT_EQUAL(oc_err_from_grpc_status(-1), OC_E_UNKNOWN);
    /* every status maps back to a row with the same status */
    for (int i = 0; i < (int)OC_E__COUNT; i++) {
        int s = oc_err_grpc_status((oc_err_t)i);
        CU_ASSERT_EQUAL(oc_err_grpc_status(oc_err_from_grpc_status(s)), s);
    }
}

static void test_error_first_wins(void)
{
    oc_error_t e;
    oc_error_clear(&e);
    CU_ASSERT_EQUAL(e.code, OC_OK);
    CU_ASSERT_STRING_EQUAL(e.msg, "");
    CU_ASSERT_EQUAL(oc_error_set(&e, OC_E_INVALID, "tenant_id: %s", "must be a UUID"),
                    OC_E_INVALID);
    CU_ASSERT_EQUAL(e.code, OC_E_INVALID);
    CU_ASSERT_STRING_EQUAL(e.msg, "tenant_id: must be a UUID");
    /* the second error is returned but not recorded */
    CU_ASSERT_EQUAL(oc_error_set(&e, OC_E_NOT_FOUND, "later"), OC_E_NOT_FOUND);
    CU_ASSERT_EQUAL(e.code, OC_E_INVALID);
    CU_ASSERT_STRING_EQUAL(e.msg, "tenant_id: must be a UUID");
    oc_error_clear(&e);
    CU_ASSERT_EQUAL(oc_error_set(&e, OC_E_IO, "again"), OC_E_IO);
    CU_ASSERT_STRING_EQUAL(e.msg, "again");
    /* NULL is allowed */
    CU_ASSERT_EQUAL(oc_error_set(NULL, OC_E_IO, "x"), OC_E_IO);
}

static void test_error_newlines(void)
{
    oc_error_t e;
    oc_error_clear(&e);
    oc_error_set(&e, OC_E_INTERNAL, "line one\nline two\r\n%s", "three\n");
    CU_ASSERT_PTR_NULL(strchr(e.msg, '\n'));
    CU_ASSERT_PTR_NULL(strchr(e.msg, '\r'));
    CU_ASSERT_STRING_EQUAL(e.msg, "line one line two  three ");
}

static void test_error_truncation(void)
{
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    oc_error_t e;
    oc_error_clear(&e);
    oc_error_set(&e, OC_E_INVALID, "%s", big);
    CU_ASSERT_EQUAL(strlen(e.msg), OC_ERROR_MSG_MAX - 1);

    /* a multi-byte character straddling the limit is dropped whole */
    char mb[OC_ERROR_MSG_MAX + 8];
    memset(mb, 'a', OC_ERROR_MSG_MAX - 2);
    memcpy(mb + OC_ERROR_MSG_MAX - 2, "\xE2\x82\xAC", 3); /* euro sign across byte 255 */
    mb[OC_ERROR_MSG_MAX + 1] = '\0';
    oc_error_clear(&e);
    oc_error_set(&e, OC_E_INVALID, "%s", mb);
    CU_ASSERT_EQUAL(strlen(e.msg), OC_ERROR_MSG_MAX - 2);
    CU_ASSERT(oc_utf8_valid(e.msg, strlen(e.msg)));
}

static void test_grpc_status_name(void)
{
    CU_ASSERT_STRING_EQUAL(oc_grpc_status_name(0), "OK");
    CU_ASSERT_STRING_EQUAL(oc_grpc_status_name(5), "NOT_FOUND");
    CU_ASSERT_STRING_EQUAL(oc_grpc_status_name(16), "UNAUTHENTICATED");
    CU_ASSERT_STRING_EQUAL(oc_grpc_status_name(17), "UNKNOWN");
    CU_ASSERT_STRING_EQUAL(oc_grpc_status_name(-1), "UNKNOWN");
    /* Every error's status has a name of its own. */
    for (int e = 0; e < OC_E__COUNT; e++)
        CU_ASSERT_STRING_NOT_EQUAL(oc_grpc_status_name(oc_err_grpc_status((oc_err_t)e)), "");
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("err", NULL, NULL);
    CU_add_test(s, "table rows", test_table_rows);
    CU_add_test(s, "out of range codes", test_out_of_range);
    CU_add_test(s, "from grpc status", test_from_grpc);
    CU_add_test(s, "first error wins", test_error_first_wins);
    CU_add_test(s, "newlines replaced", test_error_newlines);
    CU_add_test(s, "truncation", test_error_truncation);
    CU_add_test(s, "grpc status names", test_grpc_status_name);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
