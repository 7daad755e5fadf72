/* The benchmark library of omnichat-bench-persistence and omnichat-bench-line: timed phases of
 * N callers with latency percentiles, /proc sampling, and the report writers' helpers. */
#ifndef BENCHLIB_H
#define BENCHLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "omnichat/arena.h"

#define BENCH_MAX_THREADS 256
#define BENCH_ERR_LEN 256

/* ---- load.c: timed phases, latency percentiles, process memory ---- */

/* Figures of one phase. Latencies are of successful calls only. */
typedef struct bench_stats {
    int threads;
    uint64_t calls;  /* successful calls */
    uint64_t errors; /* failed calls */
    double seconds;  /* wall time from the start signal until the last thread stopped */
    double rate;     /* successful calls per second */
    double p50_ms, p99_ms, max_ms, mean_ms;
    long rss_max_kb; /* highest VmRSS sampled during the phase; 0 without a pid */
    /* CPU seconds used during the phase by this program, the service and PostgreSQL (the
     * postmaster and all its children), and by everything else on the machine. */
    double cpu_self_s, cpu_svc_s, cpu_pg_s, cpu_other_s;
    char first_error[BENCH_ERR_LEN];
} bench_stats_t;

/*
 * One call of a scenario, made by `thread` (0 .. threads-1); `seq` counts that thread's calls
 * from 0. `arena` is the thread's scratch memory, reset after each call. Returns true on
 * success; on failure writes a message into err[0..errlen) and returns false. Called from many
 * threads at once: it must be thread-safe for distinct `thread` values.
 */
typedef bool (*bench_call_fn)(void *user, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                              size_t errlen);

typedef struct bench_phase {
    int threads;        /* concurrent callers, 1 .. BENCH_MAX_THREADS */
    double seconds;     /* each thread stops calling once this much time has passed... */
    uint64_t max_calls; /* ...or when it made this many calls (0: no limit) */
    bench_call_fn fn;
    void *user;
    pid_t rss_pid; /* when > 0, VmRSS of this process is sampled every 20 ms */
    pid_t pg_pid;  /* when > 0, the postmaster whose CPU use is measured */
} bench_phase_t;

/* Runs one phase to completion and fills *out. Blocks. Returns 0, or -1 when threads could not
 * be started (out->first_error says why). */
int bench_run(const bench_phase_t *ph, bench_stats_t *out);

/* A field of /proc/<pid>/status in kB ("VmHWM", "VmRSS"); -1 when it cannot be read. */
long bench_proc_kb(pid_t pid, const char *field);

/* CPU seconds so far: this process, `svc` (0: none), the postgres tree under `pm` (0: none),
 * and the whole machine's busy time (all CPUs). */
typedef struct bench_cpu {
    double self_s, svc_s, pg_s, machine_s;
} bench_cpu_t;
void bench_cpu_sample(pid_t svc, pid_t pm, bench_cpu_t *out);

/* Monotonic clock in nanoseconds. */
int64_t bench_now_ns(void);

/* xorshift64*: a per-thread pseudo-random sequence (not for secrets). */
uint64_t bench_rand(uint64_t *state);

/* ---- report.c: what every report writer needs ---- */

/* The time now in UTC, "2026-01-31T23:59:07Z". */
void bench_utc_now(char *buf, size_t cap);
/* The machine's load averages, "0.52 0.61 0.40" ("unknown" when /proc cannot be read). */
void bench_loadavg(char *buf, size_t cap);
/* Writes s as a JSON string (quotes included). */
void bench_json_str(FILE *f, const char *s);
/* Starts a JSON target row: `{"what": what, "target": target, "measured": measured` (the caller
 * adds its own members and the closing brace). */
void bench_json_target(FILE *f, const char *what, const char *target, const char *measured);
/* Writes s as a Markdown table cell: '|' escaped, newlines as spaces. */
void bench_md_cell(FILE *f, const char *s);
/* The end of a Markdown report: the load averages at start and end, then the nnotes notes
 * (strings note_len bytes apart from `notes` on) under `heading`; closes f. 0, or -1 when the
 * file could not be written. */
int bench_md_finish(FILE *f, const char *loadavg_start, const char *loadavg_end,
                    const char *heading, const char *notes, size_t note_len, int nnotes);
/*
 * One row of an issue's target table ("Targets (issue 10)"): the figure measured in this run,
 * the reference it is compared with in the same run, their ratio, the goal, PASS/MISS, and
 * the value the issue recorded before the work (a constant of the benchmark).
 */
typedef struct bench_issue_row {
    char figure[112];
    char measured[96];
    char reference[112]; /* "" when the goal is absolute */
    char ratio[48];      /* measured / reference, "" when there is no reference */
    char goal[48];
    char before[64];
    bool measured_ok; /* false: not measured in this run ("n/a") */
    bool pass;
    double others_pct; /* share of the cores other processes took meanwhile; < 0 unknown */
} bench_issue_row_t;
/* Sets the next row of rows[*n] (at most cap), the measured value from fmt. NULL when full. */
bench_issue_row_t *bench_issue_row(bench_issue_row_t *rows, int *n, int cap, const char *figure,
                                   const char *goal, const char *before, bool measured_ok,
                                   bool pass, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));
/* "PASS", "MISS" or "n/a" (Markdown: the MISS in bold). */
const char *bench_issue_verdict(const bench_issue_row_t *r, bool markdown);
/* The table as text (title line, then one line per row), as Markdown (a "### "/"## " heading
 * given, a sentence, the table), and as a JSON array (no trailing newline). */
void bench_issue_print(FILE *f, const char *title, const bench_issue_row_t *rows, int n);
void bench_issue_markdown(FILE *f, const char *heading, const char *intro,
                          const bench_issue_row_t *rows, int n);
void bench_issue_json(FILE *f, const bench_issue_row_t *rows, int n);
/* A progress line on stderr, "[HH:MM:SS] ...". */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
