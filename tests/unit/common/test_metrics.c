/* Unit tests for common/src/metrics.c: exact Prometheus text, escaping, hooks, threads. */
#include "omnichat/metrics.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "test_main.h"

static char *render(oc_metrics_t *m)
{
    oc_buf_t b;
    oc_buf_init(&b, 1 << 20);
    CU_ASSERT_EQUAL(oc_metrics_render(m, &b), OC_OK);
    char *s = oc_buf_detach(&b, NULL);
    return s ? s : calloc(1, 1);
}

static void test_small_registry(void)
{
    oc_metrics_t *m = oc_metrics_create();
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    const char *const rl[] = {"method", "code"};
    oc_metric_t *rpc = oc_metrics_counter(m, "oc_rpc_total", "RPCs handled.", rl, 2);
    oc_metric_t *depth = oc_metrics_gauge(m, "oc_retry_queue_depth", "Queued retries.", NULL, 0);
    const char *const hl[] = {"route"};
    const double b[] = {0.01, 0.1, 1};
    oc_metric_t *lat = oc_metrics_histogram(m, "oc_http_seconds", "HTTP latency.", hl, 1, b, 3);
    oc_metric_t *empty = oc_metrics_counter(m, "oc_unused_total", "Never used.", rl, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rpc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(depth);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lat);
    CU_ASSERT_PTR_NOT_NULL_FATAL(empty);

    oc_metric_inc(rpc, (const char *const[]){"GetMessage", "OK"}, 1);
    oc_metric_inc(rpc, (const char *const[]){"PersistInbound", "UNAVAILABLE"}, 1);
    oc_metric_inc(rpc, (const char *const[]){"GetMessage", "OK"}, 2);
    oc_metric_inc(rpc, (const char *const[]){"GetMessage", "OK"}, -5); /* ignored */
    oc_metric_set(depth, NULL, 7);
    oc_metric_inc(depth, NULL, -2.5);
    const char *const r1[] = {"/webhooks/meta"};
    oc_metric_observe(lat, r1, 0.005);
    oc_metric_observe(lat, r1, 0.01); /* on the bound: counts in le="0.01" */
    oc_metric_observe(lat, r1, 0.5);
    oc_metric_observe(lat, r1, 3);
    oc_metric_observe(lat, r1, NAN); /* ignored */

    char *s = render(m);
    const char *want = "# HELP oc_rpc_total RPCs handled.\n"
                       "# TYPE oc_rpc_total counter\n"
                       "oc_rpc_total{method=\"GetMessage\",code=\"OK\"} 3\n"
                       "oc_rpc_total{method=\"PersistInbound\",code=\"UNAVAILABLE\"} 1\n"
                       "# HELP oc_retry_queue_depth Queued retries.\n"
                       "# TYPE oc_retry_queue_depth gauge\n"
                       "oc_retry_queue_depth 4.5\n"
                       "# HELP oc_http_seconds HTTP latency.\n"
                       "# TYPE oc_http_seconds histogram\n"
                       "oc_http_seconds_bucket{route=\"/webhooks/meta\",le=\"0.01\"} 2\n"
                       "oc_http_seconds_bucket{route=\"/webhooks/meta\",le=\"0.1\"} 2\n"
                       "oc_http_seconds_bucket{route=\"/webhooks/meta\",le=\"1\"} 3\n"
                       "oc_http_seconds_bucket{route=\"/webhooks/meta\",le=\"+Inf\"} 4\n"
                       "oc_http_seconds_sum{route=\"/webhooks/meta\"} 3.515\n"
                       "oc_http_seconds_count{route=\"/webhooks/meta\"} 4\n"
                       "# HELP oc_unused_total Never used.\n"
                       "# TYPE oc_unused_total counter\n";
    CU_ASSERT_STRING_EQUAL(s, want);
    if (strcmp(s, want) != 0) fprintf(stderr, "\n--- got ---\n%s--- end ---\n", s);
    free(s);
    oc_metrics_destroy(m);
}

static void test_unlabelled_starts_at_zero_and_default_buckets(void)
{
    oc_metrics_t *m = oc_metrics_create();
    oc_metric_t *c = oc_metrics_counter(m, "dedupe_hits_total", "Dedupe hits.", NULL, 0);
    oc_metric_t *h = oc_metrics_histogram(m, "db_seconds", "DB time.", NULL, 0, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    oc_metric_observe(h, NULL, 0.0007);
    char *s = render(m);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\ndedupe_hits_total 0\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\ndb_seconds_bucket{le=\"0.0005\"} 0\n"
                                     "db_seconds_bucket{le=\"0.001\"} 1\n"
                                     "db_seconds_bucket{le=\"0.0025\"} 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\ndb_seconds_bucket{le=\"10\"} 1\n"
                                     "db_seconds_bucket{le=\"+Inf\"} 1\n"
                                     "db_seconds_sum 0.0007\n"
                                     "db_seconds_count 1\n"));
    free(s);
    oc_metrics_destroy(m);
}

static void test_escaping(void)
{
    oc_metrics_t *m = oc_metrics_create();
    const char *const ln[] = {"v"};
    oc_metric_t *g = oc_metrics_gauge(m, "esc", "Back\\slash and\nnewline \"quoted\".", ln, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    oc_metric_set(g, (const char *const[]){"a\\b\"c\nd"}, 1);
    oc_metric_set(g, (const char *const[]){NULL}, 2);
    char *s = render(m);
    const char *want = "# HELP esc Back\\\\slash and\\nnewline \"quoted\".\n"
                       "# TYPE esc gauge\n"
                       "esc{v=\"a\\\\b\\\"c\\nd\"} 1\n"
                       "esc{v=\"\"} 2\n";
    CU_ASSERT_STRING_EQUAL(s, want);
    free(s);
    oc_metrics_destroy(m);
}

static void test_value_format(void)
{
    oc_metrics_t *m = oc_metrics_create();
    const char *const ln[] = {"k"};
    oc_metric_t *g = oc_metrics_gauge(m, "g", "G.", ln, 1);
    oc_metric_set(g, (const char *const[]){"a"}, 0.1);
    oc_metric_set(g, (const char *const[]){"b"}, 1e21);
    oc_metric_set(g, (const char *const[]){"c"}, -INFINITY);
    oc_metric_set(g, (const char *const[]){"d"}, 123456789);
    oc_metric_set(g, (const char *const[]){"e"}, 2.5e-05);
    char *s = render(m);
    CU_ASSERT_STRING_EQUAL(s, "# HELP g G.\n# TYPE g gauge\n"
                              "g{k=\"a\"} 0.1\ng{k=\"b\"} 1e+21\ng{k=\"c\"} -Inf\n"
                              "g{k=\"d\"} 123456789\ng{k=\"e\"} 2.5e-05\n");
    free(s);
    oc_metrics_destroy(m);
}

static void test_registration_errors(void)
{
    oc_metrics_t *m = oc_metrics_create();
    const char *const ok[] = {"a"};
    const char *const dup[] = {"a", "a"};
    const char *const le[] = {"le"};
    const char *const reserved[] = {"__x"};
    const char *const badl[] = {"1a"};
    CU_ASSERT_PTR_NOT_NULL(oc_metrics_counter(m, "x_total", "X.", ok, 1));
    CU_ASSERT_PTR_NULL(oc_metrics_gauge(m, "x_total", "dup name", NULL, 0));
    CU_ASSERT_PTR_NULL(oc_metrics_counter(m, "bad-name", "", NULL, 0));
    CU_ASSERT_PTR_NULL(oc_metrics_counter(m, "9lives", "", NULL, 0));
    CU_ASSERT_PTR_NULL(oc_metrics_counter(m, "y", "", dup, 2));
    CU_ASSERT_PTR_NULL(oc_metrics_counter(m, "y", "", reserved, 1));
    CU_ASSERT_PTR_NULL(oc_metrics_counter(m, "y", "", badl, 1));
    CU_ASSERT_PTR_NULL(oc_metrics_counter(m, "y", "", NULL, 1));
    CU_ASSERT_PTR_NULL(oc_metrics_histogram(m, "h", "", le, 1, NULL, 0));
    CU_ASSERT_PTR_NOT_NULL(oc_metrics_gauge(m, "y", "le is fine on a gauge", le, 1));
    const double unsorted[] = {1, 0.5};
    const double with_inf[] = {1, INFINITY};
    CU_ASSERT_PTR_NULL(oc_metrics_histogram(m, "h", "", NULL, 0, unsorted, 2));
    oc_metric_t *h = oc_metrics_histogram(m, "h", "", NULL, 0, with_inf, 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    /* Wrong kinds and NULL families are no-ops. */
    oc_metric_inc(h, NULL, 1);
    oc_metric_set(h, NULL, 1);
    oc_metric_observe(NULL, NULL, 1);
    oc_metric_inc(NULL, NULL, 1);
    char *s = render(m);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "# HELP h \n# TYPE h histogram\nh_bucket{le=\"1\"} 0\n"
                                     "h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"));
    free(s);
    oc_metrics_destroy(m);
    oc_metrics_destroy(NULL);
}

static void test_cardinality_cap(void)
{
    oc_metrics_t *m = oc_metrics_create();
    const char *const ln[] = {"id"};
    oc_metric_t *c = oc_metrics_counter(m, "ids_total", "Ids.", ln, 1);
    char id[32];
    for (int i = 0; i < OC_METRICS_MAX_CHILDREN + 50; i++) {
        snprintf(id, sizeof id, "%d", i);
        oc_metric_inc(c, (const char *const[]){id}, 1);
    }
    /* Existing children still count after the cap. */
    oc_metric_inc(c, (const char *const[]){"0"}, 1);
    char *s = render(m);
    size_t lines = 0;
    for (const char *p = s; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    CU_ASSERT_EQUAL(lines, 2 + OC_METRICS_MAX_CHILDREN);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "ids_total{id=\"0\"} 2\n"));
    free(s);
    oc_metrics_destroy(m);
}

typedef struct hook_state {
    oc_metric_t *g;
    int calls;
} hook_state_t;

static void pool_hook(void *arg)
{
    hook_state_t *h = arg;
    h->calls++;
    oc_metric_set(h->g, NULL, 10 * h->calls);
}

static void test_on_render_hook(void)
{
    oc_metrics_t *m = oc_metrics_create();
    hook_state_t h = {.g = oc_metrics_gauge(m, "pool_in_use", "Connections in use.", NULL, 0)};
    oc_metrics_on_render(m, pool_hook, &h);
    char *s = render(m);
    CU_ASSERT_EQUAL(h.calls, 1);
    CU_ASSERT_STRING_EQUAL(s, "# HELP pool_in_use Connections in use.\n"
                              "# TYPE pool_in_use gauge\npool_in_use 10\n");
    free(s);
    s = render(m);
    CU_ASSERT_EQUAL(h.calls, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "pool_in_use 20\n"));
    free(s);
    oc_metrics_destroy(m);
}

static void test_render_too_large(void)
{
    oc_metrics_t *m = oc_metrics_create();
    oc_metrics_counter(m, "a_total", "A fairly long help text for a tiny buffer.", NULL, 0);
    oc_buf_t b;
    oc_buf_init(&b, 16);
    CU_ASSERT_EQUAL(oc_metrics_render(m, &b), OC_E_TOO_LARGE);
    oc_buf_dispose(&b);
    oc_metrics_destroy(m);
}

#define THREADS 4
#define ITERS 20000

typedef struct worker {
    oc_metrics_t *m;
    oc_metric_t *c, *h;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    const char *const a[] = {"x"};
    const char *const b[] = {"y"};
    for (int i = 0; i < ITERS; i++) {
        oc_metric_inc(w->c, (i & 1) ? a : b, 1);
        oc_metric_observe(w->h, NULL, 0.001 * (i % 100));
        if (i % 5000 == 0) {
            oc_buf_t buf;
            oc_buf_init(&buf, 1 << 20);
            oc_metrics_render(w->m, &buf);
            oc_buf_dispose(&buf);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    oc_metrics_t *m = oc_metrics_create();
    const char *const ln[] = {"k"};
    worker_t w = {.m = m,
                  .c = oc_metrics_counter(m, "ops_total", "Ops.", ln, 1),
                  .h = oc_metrics_histogram(m, "op_seconds", "Op time.", NULL, 0, NULL, 0)};
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, worker_main, &w);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *s = render(m);
    char want[128];
    /* Children render in first-use order, which the scheduler picks here. */
    snprintf(want, sizeof want, "ops_total{k=\"x\"} %d\n", THREADS * ITERS / 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, want));
    snprintf(want, sizeof want, "ops_total{k=\"y\"} %d\n", THREADS * ITERS / 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, want));
    snprintf(want, sizeof want, "op_seconds_count %d\n", THREADS * ITERS);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, want));
    free(s);
    oc_metrics_destroy(m);
}

/* The process families read /proc/self: this very process's fd count and limit, and a build
 * info line with the version given; a second registration of the same registry fails. */
static void test_process_families(void)
{
    oc_metrics_t *m = oc_metrics_create();
    struct rlimit lim;
    char want[128];
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(oc_metrics_process(m, "9.8.7"), OC_OK);
    CU_ASSERT_NOT_EQUAL(oc_metrics_process(m, "9.8.7"), OC_OK); /* duplicate names */
    char *s = render(m);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "# TYPE process_cpu_seconds_total counter\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "omnichat_build_info{version=\"9.8.7\",revision=\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"} 1\n"));
    CU_ASSERT_EQUAL(getrlimit(RLIMIT_NOFILE, &lim), 0);
    snprintf(want, sizeof want, "process_max_fds %llu\n", (unsigned long long)lim.rlim_cur);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, want));
    /* Sample lines start a line; the HELP line names the family too. */
    const char *rss = strstr(s, "\nprocess_resident_memory_bytes ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(rss);
    CU_ASSERT(strtod(rss + strlen("\nprocess_resident_memory_bytes "), NULL) > 1 << 20);
    /* Open one more descriptor: the next render counts it. */
    const char *fds = strstr(s, "\nprocess_open_fds ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fds);
    long before = strtol(fds + strlen("\nprocess_open_fds "), NULL, 10);
    free(s);
    FILE *extra = fopen("/dev/null", "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(extra);
    s = render(m);
    fds = strstr(s, "\nprocess_open_fds ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fds);
    CU_ASSERT_EQUAL(strtol(fds + strlen("\nprocess_open_fds "), NULL, 10), before + 1);
    fclose(extra);
    free(s);
    oc_metrics_destroy(m); /* frees the owned hook state: ASan would report a leak */
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("metrics", NULL, NULL);
    CU_add_test(s, "small registry renders exactly", test_small_registry);
    CU_add_test(s, "unlabelled zero, default buckets",
                test_unlabelled_starts_at_zero_and_default_buckets);
    CU_add_test(s, "escaping", test_escaping);
    CU_add_test(s, "value format", test_value_format);
    CU_add_test(s, "registration errors", test_registration_errors);
    CU_add_test(s, "cardinality cap", test_cardinality_cap);
    CU_add_test(s, "on_render hook", test_on_render_hook);
    CU_add_test(s, "render into a small buffer", test_render_too_large);
    CU_add_test(s, "threads", test_threads);
    CU_add_test(s, "process families", test_process_families);
    int failed = oc_test_run();
    return failed ? 1 : 0;
}
