/* The persistence service's own /metrics families: deduplication, the database pool and the
 * retry queue. The RPC, process and build families come from common/ (oc_svc_rpc_metrics_init). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/util.h"
#include "pst.h"
#include "service.h"

/* The queue is counted at most once per interval, however often and by how many scrapers
 * /metrics is read: Prometheus scrapes every 15 to 60 s, so 10 s keeps the figure fresh for
 * any of them at one cheap query per interval per replica. */
#define QUEUE_REFRESH_MS 10000
/* Counting stops there (see migration 0007): past it the gauge reads as "at least". */
#define QUEUE_CAP "100000"
/* The metrics slot is our own (the pool has one more slot than workers); a short wait for it
 * all the same. A (re)connect adds at most --connect-timeout-s (3 s by default) to the scrape
 * that makes it, well inside Prometheus's default scrape timeout of 10 s. */
#define QUEUE_ACQUIRE_MS 500

const oc_pg_stmt_t pst_stmts_metrics[] = {
    {"metrics_queue", "SELECT channel_type, due, messages FROM omnichat.retry_queue_depth($1)",
     OC_PG_IDEMPOTENT},
};
const size_t pst_nstmts_metrics = sizeof pst_stmts_metrics / sizeof pst_stmts_metrics[0];

typedef struct pst_metrics {
    pst_t *pst;
    oc_metric_t *pool_in_use, *pool_size, *pool_waits, *pool_wait_seconds, *queue;
    atomic_flag refreshing; /* a scrape is counting the queue: the others keep the last figure */
    _Atomic int64_t queue_at_ms;
} pst_metrics_t;

/* The values of the channel label: the schema's channel types. */
static const char *const channel_types[] = {"line", "facebook", "instagram"};
#define NCHANNELS (sizeof channel_types / sizeof channel_types[0])

static void refresh_queue(pst_metrics_t *pm)
{
    int64_t now = oc_mono_us() / 1000, at = atomic_load(&pm->queue_at_ms);
    double counts[NCHANNELS][2] = {{0}};
    const char *params[] = {QUEUE_CAP};
    oc_pg_query_t q[] = {{"metrics_queue", 1, params, NULL}};
    oc_error_t err;

    if (at != 0 && now - at < QUEUE_REFRESH_MS) return;
    if (atomic_flag_test_and_set(&pm->refreshing)) return;
    /* Stamped before the query: while the database is down a scrape tries once per interval,
     * not every time, and the gauges keep their last values. */
    atomic_store(&pm->queue_at_ms, now);
    oc_error_clear(&err);
    if (oc_pg_pool_exec_tx(pm->pst->pool, QUEUE_ACQUIRE_MS, NULL, q, 1, &err) == OC_OK) {
        for (int r = 0; r < oc_pg_ntuples(q[0].res); r++) {
            const char *type = oc_pg_value(q[0].res, r, 0);
            int due = oc_pg_value(q[0].res, r, 1)[0] == 't';
            for (size_t i = 0; i < NCHANNELS; i++)
                if (strcmp(type, channel_types[i]) == 0)
                    counts[i][due] = strtod(oc_pg_value(q[0].res, r, 2), NULL);
        }
        oc_pg_result_free(q[0].res);
        /* Every label set, zeros included, so that a queue that empties reads 0. */
        for (size_t i = 0; i < NCHANNELS; i++) {
            oc_metric_set(pm->queue, (const char *const[]){channel_types[i], "due"}, counts[i][1]);
            oc_metric_set(pm->queue, (const char *const[]){channel_types[i], "scheduled"},
                          counts[i][0]);
        }
    }
    atomic_flag_clear(&pm->refreshing);
}

static void on_render(void *arg)
{
    pst_metrics_t *pm = arg;
    size_t in_use = 0, size = 0;
    uint64_t waits = 0;
    double waited = 0;

    oc_pg_pool_stats(pm->pst->pool, &in_use, &size);
    oc_pg_pool_wait_stats(pm->pst->pool, &waits, &waited);
    oc_metric_set(pm->pool_in_use, NULL, (double)in_use);
    oc_metric_set(pm->pool_size, NULL, (double)size);
    oc_metric_set(pm->pool_waits, NULL, (double)waits);
    oc_metric_set(pm->pool_wait_seconds, NULL, waited);
    refresh_queue(pm);
}

oc_err_t pst_metrics_init(pst_t *pst)
{
    pst_metrics_t *pm = calloc(1, sizeof *pm);
    oc_metrics_t *m = pst->metrics;

    if (pm == NULL) return OC_E_NOMEM;
    pm->pst = pst;
    atomic_flag_clear(&pm->refreshing);
    pst->m_dedupe = oc_metrics_counter(
        m, "omnichat_dedupe_hits_total",
        "messages whose idempotency key already existed (nothing written), by method",
        (const char *const[]){"method"}, 1);
    pm->pool_in_use = oc_metrics_gauge(
        m, "omnichat_db_pool_in_use", "database connections in use (taken from the pool)", NULL, 0);
    pm->pool_size =
        oc_metrics_gauge(m, "omnichat_db_pool_size",
                         "database connection slots (workers + 1 for /metrics)", NULL, 0);
    pm->pool_waits = oc_metrics_counter(m, "omnichat_db_pool_waits_total",
                                        "takes of a database connection that found every slot "
                                        "busy and had to wait",
                                        NULL, 0);
    pm->pool_wait_seconds = oc_metrics_counter(
        m, "omnichat_db_pool_wait_seconds_total",
        "seconds spent waiting for a free database connection, all waits together", NULL, 0);
    pm->queue = oc_metrics_gauge(m, "omnichat_retry_queue_messages",
                                 "outbound messages waiting for a (re)try, by channel type and "
                                 "state: due (may be claimed now) or scheduled (backing off); "
                                 "refreshed at most every 10 s, counting stops at 100000",
                                 (const char *const[]){"channel", "state"}, 2);
    if (pst->m_dedupe == NULL || pm->pool_in_use == NULL || pm->pool_size == NULL ||
        pm->pool_waits == NULL || pm->pool_wait_seconds == NULL || pm->queue == NULL) {
        free(pm);
        return OC_E_NOMEM;
    }
    return oc_metrics_on_render_owned(m, on_render, pm);
}
