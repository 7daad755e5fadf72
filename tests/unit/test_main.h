/* The end of every unit-test main: runs the registry and decides the exit status.
 *
 * CUnit alone counts "nothing ran" as success: a suite whose set-up fails runs none of its
 * tests, records no failed assertion, and a main that returns CU_get_number_of_failures() exits
 * 0, which ctest reports as Passed. Here a program passes only when tests ran, every registered
 * test ran, no suite set-up or clean-up failed and no assertion failed. tests/CMakeLists.txt
 * refuses a test program that does not end through oc_test_run(). */
#ifndef OMNICHAT_TEST_MAIN_H
#define OMNICHAT_TEST_MAIN_H

#include <CUnit/Basic.h>
#include <stdio.h>

/* Runs every registered test (verbose), prints why the program fails, cleans the registry up.
 * Returns the exit status for main: 0 or 1. */
static inline int oc_test_run(void)
{
    CU_pTestRegistry reg = CU_get_registry();
    const CU_RunSummary *sum;
    unsigned registered;
    int rc = 0;

    if (reg == NULL) {
        fprintf(stderr, "unit test: no CUnit registry (CU_initialize_registry failed?)\n");
        return 1;
    }
    registered = reg->uiNumberOfTests;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS) {
        fprintf(stderr, "unit test: CUnit error: %s\n", CU_get_error_msg());
        rc = 1;
    }
    sum = CU_get_run_summary();
    if (sum->nTestsRun == 0) {
        fprintf(stderr, "unit test: FAILED: no test ran\n");
        rc = 1;
    } else if (sum->nTestsRun != registered) {
        fprintf(stderr, "unit test: FAILED: %u of %u registered tests ran\n", sum->nTestsRun,
                registered);
        rc = 1;
    }
    if (sum->nSuitesFailed > 0 || CU_get_number_of_suites_failed() > 0) {
        fprintf(stderr, "unit test: FAILED: %u suite set-up or clean-up failed\n",
                sum->nSuitesFailed);
        rc = 1;
    }
    if (sum->nTestsFailed > 0 || sum->nAssertsFailed > 0 || CU_get_number_of_failures() > 0) {
        fprintf(stderr, "unit test: FAILED: %u tests with failed assertions\n", sum->nTestsFailed);
        rc = 1;
    }
    CU_cleanup_registry();
    return rc;
}

#endif
