/* Enum names come from the proto descriptors: every name round-trips, zero has none. */
#include <CUnit/Basic.h>

#include "omnichat/pb.h"

#include "test_main.h"

static void test_known_names(void)
{
    CU_ASSERT_STRING_EQUAL(
        oc_pb_enum_name(OC_PB_CHANNEL_TYPE, PBE(CHANNEL_TYPE__CHANNEL_TYPE_LINE)), "line");
    CU_ASSERT_STRING_EQUAL(
        oc_pb_enum_name(OC_PB_ERROR_CATEGORY, PBE(ERROR_CATEGORY__ERROR_CATEGORY_AUTH_ERROR)),
        "auth_error");
    CU_ASSERT_STRING_EQUAL(
        oc_pb_enum_name(OC_PB_MESSAGE_STATUS, PBE(MESSAGE_STATUS__MESSAGE_STATUS_UNKNOWN)),
        "unknown");
    CU_ASSERT_STRING_EQUAL(
        oc_pb_enum_name(OC_PB_CHANNEL_STATUS, PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED)),
        "auth_failed");
    CU_ASSERT_EQUAL(oc_pb_enum_value(OC_PB_CONTENT_TYPE, "unsupported"),
                    PBE(CONTENT_TYPE__CONTENT_TYPE_UNSUPPORTED));
}

static void test_round_trip_and_unknowns(void)
{
    for (int e = 0; e < OC_PB_ENUM__COUNT; e++) {
        int named = 0;
        CU_ASSERT_PTR_NULL(oc_pb_enum_name((oc_pb_enum_t)e, 0));
        for (int v = 1; v < 32; v++) {
            const char *n = oc_pb_enum_name((oc_pb_enum_t)e, v);
            if (n == NULL) continue;
            named++;
            CU_ASSERT_EQUAL(oc_pb_enum_value((oc_pb_enum_t)e, n), v);
        }
        CU_ASSERT_TRUE(named >= 2);
        CU_ASSERT_EQUAL(oc_pb_enum_value((oc_pb_enum_t)e, "no_such_value"), 0);
        CU_ASSERT_EQUAL(oc_pb_enum_value((oc_pb_enum_t)e, NULL), 0);
    }
    CU_ASSERT_PTR_NULL(oc_pb_enum_name(OC_PB_ERROR_CATEGORY, 999));
    CU_ASSERT_PTR_NULL(oc_pb_enum_name(OC_PB_ENUM__COUNT, 1));
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("pb", NULL, NULL);
    CU_add_test(s, "known names", test_known_names);
    CU_add_test(s, "round trip, zero and unknown values", test_round_trip_and_unknowns);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
