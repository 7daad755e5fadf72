/* Unit tests of the shared service runtime (common/src/svc.c). */
#include <CUnit/Basic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "omnichat/svc.h"
#include "omnichat/util.h"

#include "test_main.h"

typedef struct cfg {
    long long workers;
    long long floor;
} cfg_t;

static const oc_config_option_t opts[] = {
    {"workers", OC_CFG_INT, "4", 1, 64, 0, offsetof(cfg_t, workers), "threads", NULL},
    {"floor", OC_CFG_INT, "1", 1, 64, 0, offsetof(cfg_t, floor), "lower bound", NULL},
};

static int checks;

static bool floor_below_workers(const void *p, oc_buf_t *problems)
{
    const cfg_t *c = p;
    checks++;
    if (c->floor > c->workers) {
        oc_buf_appends(problems, "--floor: must not exceed --workers\n");
        return false;
    }
    return true;
}

static int configure(int argc, char **argv, bool *run)
{
    cfg_t c;
    int code = -1;

    memset(&c, 0, sizeof c);
    *run = oc_svc_configure("test", "1.0", "test [--flags]", opts, 2, &c, argc, argv,
                            floor_below_workers, &code);
    if (*run) oc_config_free(opts, 2, &c);
    return code;
}

static void test_valid_configuration_runs(void)
{
    char *argv[] = {"test", "--workers", "8", NULL};
    bool run;

    checks = 0;
    configure(3, argv, &run);
    CU_ASSERT_TRUE(run);
    CU_ASSERT_EQUAL(checks, 1);
}

static void test_cross_option_rule_refuses_with_exit_2(void)
{
    char *argv[] = {"test", "--workers", "2", "--floor", "3", NULL};
    bool run;

    CU_ASSERT_EQUAL(configure(5, argv, &run), 2);
    CU_ASSERT_FALSE(run);
}

static void test_check_config_exits_0_or_1(void)
{
    char *good[] = {"test", "--check-config", NULL};
    char *bad[] = {"test", "--check-config", "--workers", "0", NULL};
    bool run;

    CU_ASSERT_EQUAL(configure(2, good, &run), 0);
    CU_ASSERT_FALSE(run);
    CU_ASSERT_EQUAL(configure(4, bad, &run), 1);
    CU_ASSERT_FALSE(run);
}

static void test_help_and_version_stop_with_0(void)
{
    char *help[] = {"test", "--help", NULL};
    char *version[] = {"test", "--version", NULL};
    bool run;

    CU_ASSERT_EQUAL(configure(2, help, &run), 0);
    CU_ASSERT_FALSE(run);
    CU_ASSERT_EQUAL(configure(2, version, &run), 0);
    CU_ASSERT_FALSE(run);
}

static void test_unknown_methods_share_one_label(void)
{
    oc_metrics_t *m = oc_metrics_create();
    oc_svc_rpc_metrics_t rm;
    oc_rpc_ctx_t ctx;
    oc_buf_t out;

    CU_ASSERT_EQUAL_FATAL(oc_svc_rpc_metrics_init(&rm, m), OC_OK);
    memset(&ctx, 0, sizeof ctx);
    ctx.method = "/pkg.Service/Known";
    oc_svc_rpc_record(&rm, &ctx, 5, 1000);
    ctx.method = "/scanner/whatever-1";
    oc_svc_rpc_record(&rm, &ctx, 12, 10);
    ctx.method = "/scanner/whatever-2";
    oc_svc_rpc_record(&rm, &ctx, 12, 10);
    oc_buf_init(&out, 1 << 20);
    CU_ASSERT_EQUAL(oc_metrics_render(m, &out), OC_OK);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(out.data, "omnichat_rpc_requests_total{method=\"Known\",code=\"NOT_FOUND\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(
        out.data, "omnichat_rpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 2"));
    CU_ASSERT_PTR_NULL(strstr(out.data, "whatever"));
    oc_buf_dispose(&out);
    oc_metrics_destroy(m);
}

static rlim_t core_soft_limit(void)
{
    struct rlimit lim;

    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_CORE, &lim), 0);
    return lim.rlim_cur;
}

static void test_configure_makes_the_process_non_dumpable(void)
{
    char *argv[] = {"test", NULL};
    struct rlimit lim;
    oc_error_t err;
    bool run;

    /* main() raised the soft limit to the hard one before the first oc_svc_configure, as a
     * shell with `ulimit -c unlimited` would leave it; earlier tests may have lowered it. */
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_CORE, &lim), 0);
    CU_ASSERT_EQUAL_FATAL(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), 0);

    configure(1, argv, &run);
    CU_ASSERT_TRUE(run);
    CU_ASSERT_EQUAL(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    CU_ASSERT_EQUAL(core_soft_limit(), 0);

    /* The opt-in flips both back, to the limit found at start. */
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_svc_allow_core_dumps(&err), OC_OK);
    CU_ASSERT_EQUAL(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
    CU_ASSERT_EQUAL(core_soft_limit(), lim.rlim_max);

    /* --help stops early but is non-dumpable too: nothing runs before the protection. */
    char *help[] = {"test", "--help", NULL};
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w");
    configure(2, help, &run);
    fclose(stdout);
    stdout = saved;
    CU_ASSERT_FALSE(run);
    CU_ASSERT_EQUAL(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    CU_ASSERT_EQUAL(core_soft_limit(), 0);
}

/* The VmFlags of the /proc/self/smaps mapping that holds p ("" when not found). */
static void vmflags_of(const void *p, char *out, size_t cap)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    bool in = false;
    uintptr_t a = (uintptr_t)p;

    out[0] = '\0';
    if (f == NULL) return;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        /* A mapping's header line starts "lo-hi "; field lines ("Size:", "VmFlags:") do not. */
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
            in = a >= lo && a < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, cap, "%.200s", line + 8);
            break;
        }
    }
    fclose(f);
}

static void test_secret_memory_is_left_out_of_core_dumps(void)
{
    char flags[256];
    char *s = oc_secret_strndup("hunter2", 7);
    uint8_t *big = oc_secret_alloc(10000);

    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    CU_ASSERT_STRING_EQUAL(s, "hunter2");
    for (size_t i = 0; i < 10000; i++)
        CU_ASSERT_EQUAL_FATAL(big[i], 0);
    big[9999] = 1; /* the whole size is usable */
    vmflags_of(s, flags, sizeof flags);
    CU_ASSERT_PTR_NOT_NULL(strstr(flags, " dd"));
    vmflags_of(big + 9999, flags, sizeof flags);
    CU_ASSERT_PTR_NOT_NULL(strstr(flags, " dd"));
    oc_secret_free(s);
    oc_secret_free(big);
    oc_secret_free(NULL);
}

/* A freed one-page secret is wiped and its page reused (the same address: the pool is used),
 * zeroed, and still left out of core dumps. */
static void test_secret_page_reused_wiped_and_undumpable(void)
{
    char flags[256];
    char *a = oc_secret_strndup("hunter2", 7), *b;

    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    oc_secret_free(a);
    b = oc_secret_alloc(64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_EQUAL(b, a);
    for (size_t i = 0; i < 64; i++)
        CU_ASSERT_EQUAL_FATAL(b[i], 0);
    vmflags_of(b, flags, sizeof flags);
    CU_ASSERT_PTR_NOT_NULL(strstr(flags, " dd"));
    oc_secret_free(b);
}

static void test_healthz_rpc_reports_a_failed_probe(void)
{
    oc_http_response_t resp;

    /* No server to vouch for the gRPC path: unavailable, not ok. */
    memset(&resp, 0, sizeof resp);
    resp.status = 200;
    oc_buf_init(&resp.body, 4096);
    oc_svc_http_healthz_rpc(NULL, NULL, &resp);
    CU_ASSERT_EQUAL(resp.status, 503);
    CU_ASSERT_PTR_NOT_NULL(resp.body.data);
    if (resp.body.data)
        CU_ASSERT_PTR_NOT_NULL(strstr(resp.body.data, "\"status\":\"unavailable\""));
    oc_buf_dispose(&resp.body);
}

int main(void)
{
    CU_pSuite s;

    struct rlimit core;
    if (getrlimit(RLIMIT_CORE, &core) != 0) return 1;
    core.rlim_cur = core.rlim_max;
    if (setrlimit(RLIMIT_CORE, &core) != 0) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("svc", NULL, NULL);
    CU_add_test(s, "/healthz reports a failed gRPC probe", test_healthz_rpc_reports_a_failed_probe);
    CU_add_test(s, "a freed secret page is reused wiped and undumpable",
                test_secret_page_reused_wiped_and_undumpable);
    CU_add_test(s, "valid configuration runs", test_valid_configuration_runs);
    CU_add_test(s, "cross-option rule refuses with exit 2",
                test_cross_option_rule_refuses_with_exit_2);
    CU_add_test(s, "--check-config exits 0 or 1", test_check_config_exits_0_or_1);
    CU_add_test(s, "--help and --version stop with 0", test_help_and_version_stop_with_0);
    CU_add_test(s, "unknown methods share one label", test_unknown_methods_share_one_label);
    CU_add_test(s, "configure makes the process non-dumpable",
                test_configure_makes_the_process_non_dumpable);
    CU_add_test(s, "secret memory is left out of core dumps",
                test_secret_memory_is_left_out_of_core_dumps);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
