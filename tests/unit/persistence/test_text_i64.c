/* pst_text_i64, the row conversion's bigint reader: the same answers as strtoll(s, NULL, 10) for
 * what PostgreSQL prints, including both ends of the range and saturation beyond them. */
#include "pst.h"

#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdlib.h>

#include "test_main.h"

static void test_matches_strtoll(void)
{
    static const char *const cases[] = {"0",
                                        "7",
                                        "-7",
                                        "1690000000000000",
                                        "-1690000000000000",
                                        "9223372036854775807",
                                        "-9223372036854775808",
                                        "9223372036854775808",
                                        "-9223372036854775809",
                                        "99999999999999999999",
                                        "-99999999999999999999",
                                        "+42",
                                        "12abc",
                                        "",
                                        "-"};

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CU_ASSERT_EQUAL(pst_text_i64(cases[i]), strtoll(cases[i], NULL, 10));
}

static void test_range_ends(void)
{
    CU_ASSERT_EQUAL(pst_text_i64("9223372036854775807"), INT64_MAX);
    CU_ASSERT_EQUAL(pst_text_i64("-9223372036854775808"), INT64_MIN);
    CU_ASSERT_EQUAL(pst_text_i64("18446744073709551616"), INT64_MAX);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("bigint text", NULL, NULL);
    CU_add_test(s, "same as strtoll", test_matches_strtoll);
    CU_add_test(s, "range ends and saturation", test_range_ends);
    return oc_test_run();
}
