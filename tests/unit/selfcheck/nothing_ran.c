/* Checks test_main.h itself: a unit-test program whose tests did not all run must fail.
 *
 *   nothing_ran ok            one passing test: exit 0
 *   nothing_ran setup-fails   the suite's set-up fails, so no test runs: exit 1
 *   nothing_ran empty         no test registered: exit 1
 *   nothing_ran inactive      one of two tests deactivated: exit 1
 *
 * ctest runs all four (tests/CMakeLists.txt) and wants exactly these statuses. */
#include <CUnit/Basic.h>
#include <string.h>

#include "test_main.h"

static int init_fails(void)
{
    return 1;
}

static void test_passes(void)
{
    CU_ASSERT_EQUAL(1 + 1, 2);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    CU_pSuite s;
    CU_pTest t;

    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    if (strcmp(mode, "ok") == 0) {
        s = CU_add_suite("ok", NULL, NULL);
        CU_add_test(s, "passes", test_passes);
    } else if (strcmp(mode, "setup-fails") == 0) {
        s = CU_add_suite("setup fails", init_fails, NULL);
        CU_add_test(s, "never runs", test_passes);
    } else if (strcmp(mode, "empty") == 0) {
        CU_add_suite("empty", NULL, NULL);
    } else if (strcmp(mode, "inactive") == 0) {
        s = CU_add_suite("inactive", NULL, NULL);
        CU_add_test(s, "passes", test_passes);
        t = CU_add_test(s, "deactivated", test_passes);
        CU_set_test_active(t, CU_FALSE);
    } else {
        CU_cleanup_registry();
        return 2;
    }
    return oc_test_run();
}
