/* omnichat-bench-persistence: declarations shared by the benchmark's modules. */
#ifndef BENCH_H
#define BENCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "benchlib.h"
#include "omnichat/arena.h"
#include "omnichat/pg.h"
#include "omnichat/rpc.h"

/* ---- scenarios.c: the calls of each phase, against the service and the reference SQL ---- */

typedef struct bench_sample {
    char tenant[37];
    char account[37];
    char user[80];
    char name[64];
    char avatar[128];
    char thread[128];
} bench_sample_t;

/* A message persisted by a "new" phase, enough to send the identical request again. */
typedef struct bench_key {
    uint32_t sample;
    uint16_t phase;
    uint16_t thread;
    uint64_t seq;
    int64_t ts_ms;
} bench_key_t;

typedef struct bench_ctx {
    oc_rpc_client_t *rpc;
    char run_id[24];
    bench_sample_t *samples;
    size_t nsamples;

    int phase_no; /* numbers the "new" phases, so their keys never repeat */
    pthread_mutex_t keys_mu;
    bench_key_t *keys;
    size_t nkeys, capkeys;

    /* The big conversation and the inbox of 10,000 conversations. */
    char big_tenant[37], big_conv[37];
    long long big_conv_messages;
    char inbox_tenant[37];
    long long inbox_conversations;
    long deep_position; /* messages newer than the deep page (150,000) */
    char *deep_before;  /* service cursor: `before` at deep_position from the newest */
    char *deep_after;   /* service cursor: `after` at deep_position from the oldest */
    double walk_before_s, walk_after_s; /* time the cursor walks took */
    int walk_pages;
    /* The same positions as raw keys for the reference statements. */
    char deep_before_ts[24], deep_before_id[37];
    char deep_after_ts[24], deep_after_id[37];
    char deep_first_id_service[37], deep_first_id_sql[37]; /* cross-check of the deep page */

    char **conv_tokens; /* page tokens of every ListConversations page (page_size 50) */
    size_t nconv_tokens;
    size_t conv_deep_page; /* index of the deep page used by the "deep" phase */
    char **conv_keys_ts;   /* the same positions as raw (ts_us, id) for the reference */
    char **conv_keys_id;

    /* Reference: one connection as the runtime role, the service's own statements. */
    oc_pg_pool_t *ref_pool;
    oc_pg_conn_t *ref_conn;
} bench_ctx_t;

/* A call plus what it needs: user argument of bench_run for the scenario functions. */
typedef struct bench_job {
    bench_ctx_t *ctx;
    int kind; /* BENCH_* below */
} bench_job_t;

enum {
    BENCH_PERSIST_NEW,
    BENCH_PERSIST_DUP,
    BENCH_MSG_FIRST,
    BENCH_MSG_DEEP_BEFORE,
    BENCH_MSG_DEEP_AFTER,
    BENCH_CONV_FIRST,
    BENCH_CONV_ALL,
    BENCH_CONV_DEEP,
};

/* Loads samples and ids from the seeded database (owner conninfo). 0 or -1 with err. */
int bench_ctx_load(bench_ctx_t *ctx, const char *owner_dsn, char *err, size_t errlen);
/* Walks the big conversation and the inbox to obtain real deep cursors and page tokens. */
int bench_ctx_walk(bench_ctx_t *ctx, char *err, size_t errlen);
/* Opens the reference connection (runtime role, with the service's prepared statements). */
int bench_ctx_ref_open(bench_ctx_t *ctx, const char *app_dsn, char *err, size_t errlen);
void bench_ctx_dispose(bench_ctx_t *ctx);

/* Service calls (user = bench_job_t) and reference calls (user = bench_job_t, 1 thread). */
bool bench_call_service(void *user, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                        size_t errlen);
bool bench_call_reference(void *user, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                          size_t errlen);

/* Runs one SQL statement (CHECKPOINT) on a fresh connection. 0 or -1 with err. */
int bench_sql(const char *dsn, const char *sql, char *err, size_t errlen);

/* ---- pgbench.c: the reference for writes ---- */

typedef struct bench_pgbench {
    bool ok;
    int clients;
    double seconds;                              /* wall time of the whole pgbench run */
    double cpu_pgbench_s, cpu_pg_s, cpu_other_s; /* CPU seconds during it */
    double tps;                                  /* without initial connection time */
    long xacts;
    long failed;
    double p50_ms, p99_ms, max_ms, mean_ms;
    char error[BENCH_ERR_LEN];
} bench_pgbench_t;

/* Writes the two pgbench scripts (new keys, existing keys) into dir. 0 or -1. */
int bench_pgbench_scripts(const char *dir, char *err, size_t errlen);
/* Runs pgbench with `script` ("new" or "dup") at `clients` for `seconds`, logs in dir. */
void bench_pgbench_run(const char *pgbench, const char *dsn, const char *dir, const char *script,
                       int clients, int seconds, pid_t pg_pid, bench_pgbench_t *out);

/* ---- report.c: the table on stdout, results.json, results.md ---- */

typedef struct bench_write_row {
    const char *kind; /* "new" or "duplicate" */
    int concurrency;
    bench_stats_t svc;
    bench_pgbench_t pg;
} bench_write_row_t;

typedef struct bench_read_row {
    const char *rpc; /* "ListMessages", "ListConversations" */
    char page[96];   /* what was read */
    const char *key; /* short id for JSON */
    bench_stats_t svc;
    bench_stats_t ref;
} bench_read_row_t;

typedef struct bench_target {
    char what[96];
    char target[48];
    char measured[128];
    bool pass;
    bool measured_ok;  /* false: the figure could not be measured */
    double others_pct; /* CPU share other processes took during the phases behind it */
} bench_target_t;

typedef struct bench_report {
    int duration_s, list_duration_s;
    bench_write_row_t writes[16];
    int nwrites;
    bench_read_row_t reads[16];
    int nreads;
    bench_target_t targets[16];
    int ntargets;
    long rss_hwm_kb;    /* VmHWM after the 64-concurrency phases */
    long rss_max_64_kb; /* highest sampled VmRSS during them */
    long rss_idle_kb;   /* VmRSS before any load */
    int ncpu;
    char loadavg_start[64], loadavg_end[64]; /* /proc/loadavg around the run */
    const bench_ctx_t *ctx;
    char notes[8][256];
    int nnotes;
    bench_issue_row_t issue[8]; /* "Targets (issue 10)": the issue's rows this run measures */
    int nissue;
} bench_report_t;

void bench_report_print(const bench_report_t *r, FILE *f);
int bench_report_json(const bench_report_t *r, const char *path);
int bench_report_markdown(const bench_report_t *r, const char *path);

#endif
