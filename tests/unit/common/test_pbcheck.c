/* Unit tests of the wire-level string check (common/src/pbcheck.c). */
#include <CUnit/Basic.h>
#include <string.h>

#include "omnichat/arena.h"
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

/* The path of the 13th element: the index is written in full (paths are built by hand). */
static void test_path_with_multi_digit_index(void)
{
    uint8_t item[32], msg[512];
    size_t at = put_ld(msg, 0, 1, "t", 1), n;
    oc_error_t err;

    oc_error_clear(&err);
    for (int i = 0; i < 13; i++) {
        n = put_ld(item, 0, 7, "mid", 3);
        if (i == 12) n = put_ld(item, n, 13, "a\0b", 3);
        at = put_ld(msg, at, 2, item, n);
    }
    CU_ASSERT_EQUAL(
        oc_pb_check_strings(&omnichat__persistence__v1__persist_inbound_request__descriptor, msg,
                            at, &err),
        OC_E_INVALID);
    CU_ASSERT_STRING_EQUAL(err.msg,
                           "messages[12].content_text: must be valid UTF-8 without NUL characters");
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

#define INBOUND (&omnichat__persistence__v1__persist_inbound_request__descriptor)

static const oc_pb_field_limit_t g_inbound_limits[] = {{"messages", 3},
                                                       {"messages.attachments", 2}};
static const oc_pb_limits_t g_limits = {
    .fields = g_inbound_limits, .nfields = 2, .max_unknown = 1, .max_fields = 64};

/* n empty `messages` entries (the 2-byte element that cost ~200 bytes each to unpack). */
static size_t empty_messages(uint8_t *buf, unsigned n)
{
    size_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        buf[at++] = 0x12;
        buf[at++] = 0x00;
    }
    return at;
}

static void test_repeated_count_limit(void)
{
    uint8_t buf[64];
    oc_error_t err;
    size_t cost = 0;

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, buf, empty_messages(buf, 3), &g_limits, &cost, &err),
                    OC_OK);
    CU_ASSERT(cost > 0);
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, buf, empty_messages(buf, 4), &g_limits, NULL, &err),
                    OC_E_INVALID);
    CU_ASSERT_STRING_EQUAL(err.msg, "messages: at most 3 elements");
    /* Without limits the same input passes (strings only). */
    CU_ASSERT_EQUAL(oc_pb_check_strings(INBOUND, buf, empty_messages(buf, 4), &err), OC_OK);
}

static void test_nested_count_limit_names_path(void)
{
    uint8_t item[16], msg[64];
    size_t n = 0, at = 0;
    oc_error_t err;

    /* attachments (field 16: a two-byte tag), empty, three times: 3 > 2 */
    for (int i = 0; i < 3; i++) {
        memcpy(item + n, "\x82\x01\x00", 3);
        n += 3;
    }
    at = put_ld(msg, at, 2, "", 0);
    at = put_ld(msg, at, 2, item, n); /* messages[1] */
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, msg, at, &g_limits, NULL, &err), OC_E_INVALID);
    CU_ASSERT_STRING_EQUAL(err.msg, "messages[1].attachments: at most 2 elements");
    /* Two per message is fine, in each of three messages. */
    n = 6; /* the first two of them */
    at = 0;
    for (int i = 0; i < 3; i++)
        at = put_ld(msg, at, 2, item, n);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, msg, at, &g_limits, NULL, &err), OC_OK);
}

static void test_unknown_fields_limit(void)
{
    uint8_t msg[16] = {0x78, 0x00}; /* field 15, varint: unknown */
    oc_error_t err;

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, msg, 2, &g_limits, NULL, &err), OC_OK);
    msg[2] = 0x78;
    msg[3] = 0x01;
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, msg, 4, &g_limits, NULL, &err), OC_E_INVALID);
    CU_ASSERT_STRING_EQUAL(err.msg,
                           "request: unknown field 15 (at most 1 unknown fields per request)");
}

static void test_field_occurrences_limit(void)
{
    uint8_t msg[200];
    size_t at = 0;
    oc_error_t err;

    for (int i = 0; i < 65; i++)
        at = put_ld(msg, at, 1, "", 0); /* tenant_id, 65 times */
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, msg, at, &g_limits, NULL, &err), OC_E_INVALID);
    CU_ASSERT_STRING_EQUAL(err.msg, "request: more than 64 fields");
}

static void test_cost_bounds_unpack(void)
{
    /* The estimate must cover what protobuf-c really allocates, or valid requests would fail
     * their budget: unpack with a counting allocator and compare. */
    static uint8_t buf[2 * 100];
    size_t len = empty_messages(buf, 100), cost = 0;
    oc_error_t err;
    oc_pb_limits_t lim = {.max_repeated = 100};

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_pb_check(INBOUND, buf, len, &lim, &cost, &err), OC_OK);
    oc_arena_t *a = oc_arena_create(0);
    oc_arena_budget_t b;
    ProtobufCAllocator alloc;
    oc_arena_protobuf_allocator_budget(a, cost, &b, &alloc);
    ProtobufCMessage *m = protobuf_c_message_unpack(INBOUND, &alloc, len, buf);
    CU_ASSERT_PTR_NOT_NULL(m);
    CU_ASSERT(b.used <= cost);
    oc_arena_destroy(a);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("pbcheck", NULL, NULL);
    CU_add_test(s, "clean strings pass", test_clean_strings_pass);
    CU_add_test(s, "NUL refused with the field path", test_nul_refused_with_path);
    CU_add_test(s, "invalid UTF-8 refused", test_invalid_utf8_refused);
    CU_add_test(s, "multi-digit element index in the path", test_path_with_multi_digit_index);
    CU_add_test(s, "bytes and unknown fields ignored", test_bytes_and_unknown_fields_ignored);
    CU_add_test(s, "truncated framing left to the unpacker",
                test_truncated_framing_left_to_unpacker);
    CU_add_test(s, "repeated elements counted against their limit", test_repeated_count_limit);
    CU_add_test(s, "nested limits name the path", test_nested_count_limit_names_path);
    CU_add_test(s, "unknown fields counted", test_unknown_fields_limit);
    CU_add_test(s, "field occurrences counted", test_field_occurrences_limit);
    CU_add_test(s, "decode cost bounds protobuf-c's allocations", test_cost_bounds_unpack);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
