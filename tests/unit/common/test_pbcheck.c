/* Unit tests of the wire-level string check (common/src/pbcheck.c). */
#include <CUnit/Basic.h>
#include <string.h>

#include "omnichat/pbcheck.h"
#include "omnichat/persistence/v1/persistence.pb-c.h"

#include "test_main.h"

/* Appends a length-delimited field (tag, bytes) to buf; returns the new length. */
static size_t put_ld(uint8_t *buf, size_t at, unsigned field, const void *data, size_t n)
{
    buf[at++] = (uint8_t)(field << 3 | 2);
    buf[at++] = (uint8_t)n; /* test payloads stay under 128 bytes */
    memcpy(buf + at, data, n);
    return at + n;
}

static oc_err_t check_inbound(const char *text, size_t text_len, int bad_item)
{
    uint8_t item[64], msg[256];
    size_t at = 0;
    oc_error_t err;

    oc_error_clear(&err);
    at = put_ld(msg, at, 1, "t", 1); /* tenant_id */
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        n = put_ld(item, n, 7, "mid", 3);                           /* external_message_id */
        if (i == bad_item) n = put_ld(item, n, 13, text, text_len); /* content_text */
        at = put_ld(msg, at, 2, item, n);                           /* messages[i] */
    }
    oc_err_t rc = oc_pb_check_strings(
        &omnichat__persistence__v1__persist_inbound_request__descriptor, msg, at, &err);
    if (rc != OC_OK) CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "messages[2].content_text"));
    return rc;
}

static void test_clean_strings_pass(void)
{
    CU_ASSERT_EQUAL(check_inbound("hello \xe0\xb8\xaa", 9, 2), OC_OK);
}

static void test_nul_refused_with_path(void)
{
    CU_ASSERT_EQUAL(check_inbound("a\0b", 3, 2), OC_E_INVALID);
}

static void test_invalid_utf8_refused(void)
{
    CU_ASSERT_EQUAL(check_inbound("\xc3\x28", 2, 2), OC_E_INVALID);
}

static void test_bytes_and_unknown_fields_ignored(void)
{
    /* SealedCredential.ciphertext is bytes: NUL is fine there. Field 99 is unknown. */
    uint8_t msg[64];
    size_t at = put_ld(msg, 0, 3, "\0\0\x01", 3);
    at = put_ld(msg, at, 99, "\0", 1);
    oc_error_t err;
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_pb_check_strings(&omnichat__persistence__v1__sealed_credential__descriptor,
                                        msg, at, &err),
                    OC_OK);
}

static void test_truncated_framing_left_to_unpacker(void)
{
    uint8_t msg[] = {0x0a, 0x7f, 'x'}; /* claims 127 bytes, has 1 */
    oc_error_t err;
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(
        oc_pb_check_strings(&omnichat__persistence__v1__persist_inbound_request__descriptor, msg,
                            sizeof msg, &err),
        OC_OK);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("pbcheck", NULL, NULL);
    CU_add_test(s, "clean strings pass", test_clean_strings_pass);
    CU_add_test(s, "NUL refused with the field path", test_nul_refused_with_path);
    CU_add_test(s, "invalid UTF-8 refused", test_invalid_utf8_refused);
    CU_add_test(s, "bytes and unknown fields ignored", test_bytes_and_unknown_fields_ignored);
    CU_add_test(s, "truncated framing left to the unpacker",
                test_truncated_framing_left_to_unpacker);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
