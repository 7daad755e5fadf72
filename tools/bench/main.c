/* omnichat-bench-persistence: drives a running persistence service and prints its figures. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAX_LEVELS 8

typedef struct opts {
    const char *target;
    oc_rpc_tls_t tls; /* client certificate: all three files, or none for plaintext */
    pid_t service_pid, postgres_pid;
    const char *owner_dsn, *app_dsn, *super_dsn;
    const char *pgbench;
    const char *out_dir;
    int duration, list_duration;
    int levels[MAX_LEVELS];
    int nlevels;
    long deep;
    bool reads, writes;
} opts_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: omnichat-bench-persistence --target HOST:PORT --owner-dsn DSN --app-dsn DSN\n"
            "           [--super-dsn DSN] [--service-pid PID] [--postgres-pid PID]\n"
            "           [--pgbench PATH] [--out-dir DIR]\n"
            "           [--duration S] [--list-duration S] [--levels 1,8,64] [--deep N]\n"
            "           [--phases reads,writes]\n"
            "\n"
            "Runs against a database seeded by scripts/bench-persistence.sh (which is the one\n"
            "documented way to run it). Prints a table and writes DIR/results.json and\n"
            "DIR/results.md. Figures are results, not tests: the exit status is 0 when the run\n"
            "completed, whatever the targets say.\n"
            "  --target         the omnichat-persistence gRPC address\n"
            "  --tls-cert-file, --tls-key-file, --tls-ca-file\n"
            "                   client certificate, key and CA for mutual TLS (default: "
            "plaintext)\n"
            "  --owner-dsn      libpq conninfo of the schema owner (reads the seed)\n"
            "  --app-dsn        conninfo of the runtime role (reference SQL)\n"
            "  --super-dsn      conninfo allowed to CHECKPOINT before each write phase\n"
            "  --service-pid    the service's pid, for its memory and CPU use (/proc/PID)\n"
            "  --postgres-pid   the postmaster's pid, for PostgreSQL's CPU use\n"
            "  --pgbench        pgbench binary; without it the pgbench columns stay empty\n"
            "  --out-dir        where results and pgbench logs go (default var/bench)\n"
            "  --duration       seconds of each write phase (default 10)\n"
            "  --list-duration  seconds of each read phase (default duration/2, at least 3)\n"
            "  --levels         concurrent callers of the write phases (default 1,8,64)\n"
            "  --deep           messages above the deep ListMessages page (default 150000)\n"
            "  --phases         which phases to run (default reads,writes)\n");
}

static int parse_levels(const char *s, opts_t *o)
{
    char *end;

    o->nlevels = 0;
    while (*s != '\0') {
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > BENCH_MAX_THREADS || o->nlevels == MAX_LEVELS) return -1;
        o->levels[o->nlevels++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0') return -1;
    }
    return o->nlevels > 0 ? 0 : -1;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        {"target", required_argument, NULL, 't'},
        {"tls-cert-file", required_argument, NULL, 'C'},
        {"tls-key-file", required_argument, NULL, 'K'},
        {"tls-ca-file", required_argument, NULL, 'A'},
        {"service-pid", required_argument, NULL, 'p'},
        {"postgres-pid", required_argument, NULL, 'P'},
        {"owner-dsn", required_argument, NULL, 'o'},
        {"app-dsn", required_argument, NULL, 'a'},
        {"super-dsn", required_argument, NULL, 's'},
        {"pgbench", required_argument, NULL, 'g'},
        {"out-dir", required_argument, NULL, 'd'},
        {"duration", required_argument, NULL, 'D'},
        {"list-duration", required_argument, NULL, 'L'},
        {"levels", required_argument, NULL, 'l'},
        {"deep", required_argument, NULL, 'e'},
        {"phases", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    memset(o, 0, sizeof *o);
    o->out_dir = "var/bench";
    o->duration = 10;
    o->list_duration = -1;
    o->deep = 150000;
    o->reads = o->writes = true;
    parse_levels("1,8,64", o);
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 't':
            o->target = optarg;
            break;
        case 'C':
            o->tls.cert_file = optarg;
            break;
        case 'K':
            o->tls.key_file = optarg;
            break;
        case 'A':
            o->tls.ca_file = optarg;
            break;
        case 'p':
            o->service_pid = (pid_t)atol(optarg);
            break;
        case 'P':
            o->postgres_pid = (pid_t)atol(optarg);
            break;
        case 'o':
            o->owner_dsn = optarg;
            break;
        case 'a':
            o->app_dsn = optarg;
            break;
        case 's':
            o->super_dsn = optarg;
            break;
        case 'g':
            o->pgbench = optarg;
            break;
        case 'd':
            o->out_dir = optarg;
            break;
        case 'D':
            o->duration = atoi(optarg);
            break;
        case 'L':
            o->list_duration = atoi(optarg);
            break;
        case 'e':
            o->deep = atol(optarg);
            break;
        case 'f':
            o->reads = strstr(optarg, "reads") != NULL;
            o->writes = strstr(optarg, "writes") != NULL;
            break;
        case 'l':
            if (parse_levels(optarg, o) != 0) {
                fprintf(stderr, "--levels: a comma-separated list of 1..%d\n", BENCH_MAX_THREADS);
                return -1;
            }
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind != argc || o->target == NULL || o->owner_dsn == NULL || o->app_dsn == NULL) {
        usage(stderr);
        return -1;
    }
    if (o->duration < 1 || o->duration > 3600 || o->deep < 200 || o->deep % 200 != 0) {
        fprintf(stderr, "--duration must be 1..3600 and --deep a multiple of 200\n");
        return -1;
    }
    if (o->list_duration < 0) o->list_duration = o->duration / 2 < 3 ? 3 : o->duration / 2;
    return 0;
}

static void note(bench_report_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(bench_report_t *r, const char *fmt, ...)
{
    va_list ap;

    if (r->nnotes == (int)(sizeof r->notes / sizeof r->notes[0])) return;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->nnotes++], sizeof r->notes[0], fmt, ap);
    va_end(ap);
}

static bench_target_t *target(bench_report_t *r, const char *what, const char *goal)
{
    bench_target_t *t = &r->targets[r->ntargets++];

    snprintf(t->what, sizeof t->what, "%s", what);
    snprintf(t->target, sizeof t->target, "%s", goal);
    t->measured_ok = true;
    return t;
}

static pid_t g_pg_pid;

static void run_phase(bench_ctx_t *ctx, int kind, bool reference, int threads, int seconds,
                      pid_t pid, bench_stats_t *out, const char *label)
{
    bench_job_t job = {ctx, kind};
    bench_phase_t ph = {
        .threads = threads,
        .seconds = seconds,
        .fn = reference ? bench_call_reference : bench_call_service,
        .user = &job,
        .rss_pid = pid,
        .pg_pid = g_pg_pid,
    };

    bench_run(&ph, out);
    bench_progress("%-52s %8.0f calls/s  p50 %7.3f ms  p99 %7.3f ms%s%s", label, out->rate,
                   out->p50_ms, out->p99_ms, out->errors ? "  errors: " : "",
                   out->errors ? out->first_error : "");
}

static const char *sql_error_note(const bench_stats_t *s)
{
    return s->errors ? s->first_error : "";
}

static void read_row(bench_report_t *r, bench_ctx_t *ctx, const opts_t *o, const char *rpc,
                     const char *page, const char *key, int kind)
{
    bench_read_row_t *x = &r->reads[r->nreads++];
    char label[128];

    x->rpc = rpc;
    snprintf(x->page, sizeof x->page, "%s", page);
    x->key = key;
    snprintf(label, sizeof label, "%s %s", rpc, key);
    run_phase(ctx, kind, false, 1, o->list_duration, o->service_pid, &x->svc, label);
    snprintf(label, sizeof label, "  reference SQL %s", key);
    run_phase(ctx, kind, true, 1, o->list_duration, 0, &x->ref, label);
    if (x->svc.errors)
        note(r, "%s %s: %llu failed calls, first: %s", rpc, key, (unsigned long long)x->svc.errors,
             x->svc.first_error);
    if (x->ref.errors) note(r, "reference SQL %s: %s", key, sql_error_note(&x->ref));
}

/* The three load averages, e.g. "0.52 0.61 0.70". */
static void checkpoint(const opts_t *o)
{
    char err[BENCH_ERR_LEN];

    if (o->super_dsn != NULL && bench_sql(o->super_dsn, "CHECKPOINT", err, sizeof err) != 0)
        bench_progress("warning: %s", err);
}

static double others(const bench_report_t *r, double cpu_other_s, double seconds)
{
    return seconds > 0 && r->ncpu > 0 ? 100.0 * cpu_other_s / (seconds * r->ncpu) : 0;
}

static double max2(double a, double b)
{
    return a > b ? a : b;
}

static void compute_targets(bench_report_t *r, const opts_t *o)
{
    bench_target_t *t;
    const bench_write_row_t *w64 = NULL;
    int top = o->levels[o->nlevels - 1];

    for (int i = 0; i < r->nwrites; i++)
        if (strcmp(r->writes[i].kind, "new") == 0 && r->writes[i].concurrency == top)
            w64 = &r->writes[i];

    char what[96];
    snprintf(what, sizeof what, "PersistInbound new messages, %d callers, vs pgbench", top);
    t = target(r, what, ">= 50%");
    if (w64 == NULL || !w64->pg.ok || w64->svc.calls == 0) {
        t->measured_ok = false;
        snprintf(t->measured, sizeof t->measured, "not measured");
    } else {
        double q = w64->svc.rate / w64->pg.tps;
        snprintf(t->measured, sizeof t->measured, "%.0f%% (%.0f calls/s vs %.0f tps)", 100 * q,
                 w64->svc.rate, w64->pg.tps);
        t->pass = q >= 0.5 && w64->svc.errors == 0;
        t->others_pct = max2(others(r, w64->svc.cpu_other_s, w64->svc.seconds),
                             others(r, w64->pg.cpu_other_s, w64->pg.seconds));
    }

    const bench_read_row_t *first = NULL, *deep = NULL;
    double conv_p99 = 0;
    const char *conv_worst = "";
    bool conv_errors = false;
    double conv_others = 0;
    for (int i = 0; i < r->nreads; i++) {
        const bench_read_row_t *x = &r->reads[i];
        if (strcmp(x->key, "messages_first") == 0)
            first = x;
        else if (strcmp(x->key, "messages_deep_before") == 0)
            deep = x;
        else if (strncmp(x->key, "conversations_", 14) == 0) {
            conv_errors |= x->svc.errors > 0;
            conv_others = max2(conv_others, others(r, x->svc.cpu_other_s, x->svc.seconds));
            if (x->svc.p99_ms >= conv_p99) {
                conv_p99 = x->svc.p99_ms;
                conv_worst = x->page;
            }
        }
    }
    if (first != NULL) {
        t = target(r, "ListMessages first page p99", "<= 5 ms");
        snprintf(t->measured, sizeof t->measured, "%.3f ms (p50 %.3f ms)", first->svc.p99_ms,
                 first->svc.p50_ms);
        t->pass = first->svc.p99_ms <= 5.0 && first->svc.errors == 0 && first->svc.calls > 0;
        t->others_pct = others(r, first->svc.cpu_other_s, first->svc.seconds);
    }
    if (deep != NULL) {
        snprintf(what, sizeof what, "ListMessages page %ld messages deep p99", o->deep);
        t = target(r, what, "<= 5 ms");
        snprintf(t->measured, sizeof t->measured, "%.3f ms (p50 %.3f ms)", deep->svc.p99_ms,
                 deep->svc.p50_ms);
        t->pass = deep->svc.p99_ms <= 5.0 && deep->svc.errors == 0 && deep->svc.calls > 0;
        t->others_pct = others(r, deep->svc.cpu_other_s, deep->svc.seconds);
    }
    if (first != NULL && deep != NULL) {
        double q50 = deep->svc.p50_ms / (first->svc.p50_ms > 0 ? first->svc.p50_ms : 1e-9);
        double q99 = deep->svc.p99_ms / (first->svc.p99_ms > 0 ? first->svc.p99_ms : 1e-9);
        t = target(r, "ListMessages deep/first latency ratio (p50 and p99)", "<= 1.5");
        snprintf(t->measured, sizeof t->measured, "p50 %.2f, p99 %.2f", q50, q99);
        t->pass = q50 <= 1.5 && q99 <= 1.5;
        t->others_pct = max2(others(r, first->svc.cpu_other_s, first->svc.seconds),
                             others(r, deep->svc.cpu_other_s, deep->svc.seconds));
    }
    if (r->nreads > 0) {
        t = target(r, "ListConversations p99, 10,000-conversation tenant", "<= 10 ms");
        snprintf(t->measured, sizeof t->measured, "%.3f ms (worst row: %s)", conv_p99, conv_worst);
        t->pass = conv_p99 <= 10.0 && !conv_errors;
        t->others_pct = conv_others;
    }
    snprintf(what, sizeof what, "Service peak RSS under %d callers", top);
    t = target(r, what, "<= 100 MB");
    if (r->rss_hwm_kb <= 0) {
        t->measured_ok = false;
        snprintf(t->measured, sizeof t->measured, "not measured (no --service-pid)");
    } else {
        snprintf(t->measured, sizeof t->measured, "%.1f MB VmHWM (%.1f MB sampled VmRSS)",
                 (double)r->rss_hwm_kb / 1024, (double)r->rss_max_64_kb / 1024);
        t->pass = r->rss_hwm_kb <= 100 * 1024;
        for (int i = 0; i < r->nwrites; i++)
            if (r->writes[i].concurrency == top)
                t->others_pct = max2(t->others_pct, others(r, r->writes[i].svc.cpu_other_s,
                                                           r->writes[i].svc.seconds));
    }
}

/* Issue 10's goals, and the values its table recorded before the work ("today" in the issue).
 * The "before" strings are quoted from the issue, never measured here. */
#define ISSUE10_NEW_VS_PGBENCH_MIN 0.50
#define ISSUE10_DUP_VS_NEW_MIN 1.5
#define ISSUE10_LIST_MESSAGES_VS_SQL_MAX 2.0
#define ISSUE10_LIST_CONVERSATIONS_VS_SQL_MAX 1.7
#define ISSUE10_BEFORE_NEW_VS_PGBENCH "34% (2,853 vs 8,475)"
#define ISSUE10_BEFORE_DUP_VS_NEW "2.7x"
#define ISSUE10_BEFORE_LIST_MESSAGES "3.0x (0.615 vs 0.206 ms)"
#define ISSUE10_BEFORE_LIST_CONVERSATIONS "2.2x (0.784 vs 0.360 ms)"
#define ISSUE10_BEFORE_READS_AND_RSS "within (p99 ~1-2 ms, 40 MB)"

static const bench_target_t *find_target(const bench_report_t *r, const char *prefix)
{
    for (int i = 0; i < r->ntargets; i++)
        if (strncmp(r->targets[i].what, prefix, strlen(prefix)) == 0) return &r->targets[i];
    return NULL;
}

static const bench_read_row_t *find_read(const bench_report_t *r, const char *key)
{
    for (int i = 0; i < r->nreads; i++)
        if (strcmp(r->reads[i].key, key) == 0) return &r->reads[i];
    return NULL;
}

/* The rows of issue 10's table this benchmark measures, each beside its reference. */
static void issue_targets(bench_report_t *r, const opts_t *o)
{
    const int cap = (int)(sizeof r->issue / sizeof r->issue[0]);
    const int top = o->levels[o->nlevels - 1];
    const bench_write_row_t *wn = NULL, *wd = NULL;
    bench_issue_row_t *x;
    char fig[112];
    bool ok;
    double q;

    for (int i = 0; i < r->nwrites; i++)
        if (r->writes[i].concurrency == top) {
            if (strcmp(r->writes[i].kind, "new") == 0) wn = &r->writes[i];
            if (strcmp(r->writes[i].kind, "duplicate") == 0) wd = &r->writes[i];
        }

    ok = wn != NULL && wn->pg.ok && wn->pg.tps > 0 && wn->svc.calls > 0;
    q = ok ? wn->svc.rate / wn->pg.tps : 0;
    snprintf(fig, sizeof fig, "PersistInbound, new message, %d callers, vs pgbench's insert", top);
    x = bench_issue_row(r->issue, &r->nissue, cap, fig, ">= 50%", ISSUE10_BEFORE_NEW_VS_PGBENCH, ok,
                        q >= ISSUE10_NEW_VS_PGBENCH_MIN && wn->svc.errors == 0, "%.0f calls/s",
                        ok ? wn->svc.rate : 0);
    if (x != NULL && ok)
        x->others_pct = max2(others(r, wn->svc.cpu_other_s, wn->svc.seconds),
                             others(r, wn->pg.cpu_other_s, wn->pg.seconds));
    if (x != NULL && ok) {
        snprintf(x->reference, sizeof x->reference, "%.0f tps (pgbench)", wn->pg.tps);
        snprintf(x->ratio, sizeof x->ratio, "%.1f%%", 100 * q);
    }

    ok = wn != NULL && wd != NULL && wn->svc.rate > 0 && wd->svc.calls > 0;
    q = ok ? wd->svc.rate / wn->svc.rate : 0;
    snprintf(fig, sizeof fig, "PersistInbound, duplicate vs new message, %d callers", top);
    x = bench_issue_row(r->issue, &r->nissue, cap, fig, ">= 1.5x (stays)",
                        ISSUE10_BEFORE_DUP_VS_NEW, ok,
                        q >= ISSUE10_DUP_VS_NEW_MIN && wd->svc.errors == 0,
                        "%.0f calls/s duplicate", ok ? wd->svc.rate : 0);
    if (x != NULL && ok)
        x->others_pct = max2(others(r, wn->svc.cpu_other_s, wn->svc.seconds),
                             others(r, wd->svc.cpu_other_s, wd->svc.seconds));
    if (x != NULL && ok) {
        snprintf(x->reference, sizeof x->reference, "%.0f calls/s new", wn->svc.rate);
        snprintf(x->ratio, sizeof x->ratio, "%.2fx", q);
    }

    for (int k = 0; k < 2; k++) {
        const bench_read_row_t *x1 =
            find_read(r, k == 0 ? "messages_first" : "conversations_first");
        const double max =
            k == 0 ? ISSUE10_LIST_MESSAGES_VS_SQL_MAX : ISSUE10_LIST_CONVERSATIONS_VS_SQL_MAX;
        ok = x1 != NULL && x1->svc.calls > 0 && x1->ref.calls > 0 && x1->ref.p50_ms > 0;
        q = ok ? x1->svc.p50_ms / x1->ref.p50_ms : 0;
        snprintf(fig, sizeof fig, "%s first page, 1 caller: service p50 vs the same SQL",
                 k == 0 ? "ListMessages" : "ListConversations");
        x = bench_issue_row(
            r->issue, &r->nissue, cap, fig, k == 0 ? "<= 2x" : "<= 1.7x",
            k == 0 ? ISSUE10_BEFORE_LIST_MESSAGES : ISSUE10_BEFORE_LIST_CONVERSATIONS, ok,
            q <= max && x1->svc.errors == 0, "%.3f ms", ok ? x1->svc.p50_ms : 0);
        if (x != NULL && ok)
            x->others_pct = max2(others(r, x1->svc.cpu_other_s, x1->svc.seconds),
                                 others(r, x1->ref.cpu_other_s, x1->ref.seconds));
        if (x != NULL && ok) {
            snprintf(x->reference, sizeof x->reference, "%.3f ms (SQL through libpq)",
                     x1->ref.p50_ms);
            snprintf(x->ratio, sizeof x->ratio, "%.2fx", q);
        }
    }

    /* The existing targets of these figures, as compute_targets judged them. */
    const bench_target_t *tm = find_target(r, "ListMessages first page p99");
    const bench_target_t *tc = find_target(r, "ListConversations p99");
    const bench_target_t *tr = find_target(r, "Service peak RSS");
    const bench_read_row_t *m1 = find_read(r, "messages_first");
    double conv_p99 = 0;
    for (int i = 0; i < r->nreads; i++)
        if (strncmp(r->reads[i].key, "conversations_", 14) == 0 &&
            r->reads[i].svc.p99_ms > conv_p99)
            conv_p99 = r->reads[i].svc.p99_ms;
    ok = tm != NULL && tc != NULL && tr != NULL && m1 != NULL && tm->measured_ok &&
         tc->measured_ok && tr->measured_ok;
    snprintf(fig, sizeof fig,
             "ListMessages and ListConversations p99 (1 caller), service peak RSS at %d callers",
             top);
    x = bench_issue_row(r->issue, &r->nissue, cap, fig, "stay within their targets",
                        ISSUE10_BEFORE_READS_AND_RSS, ok, ok && tm->pass && tc->pass && tr->pass,
                        "%.1f ms, %.1f ms, %.1f MB", m1 != NULL ? m1->svc.p99_ms : 0, conv_p99,
                        (double)r->rss_hwm_kb / 1024);
    if (x != NULL && ok) x->others_pct = max2(tm->others_pct, max2(tc->others_pct, tr->others_pct));
    if (x != NULL && ok)
        snprintf(x->reference, sizeof x->reference, "%.28s, %.28s, %.28s (their targets)",
                 tm->target, tc->target, tr->target);
}

static void read_phases(bench_report_t *rep, bench_ctx_t *ctx, const opts_t *o)
{
    read_row(rep, ctx, o, "ListMessages", "newest page", "messages_first", BENCH_MSG_FIRST);
    char deep_page[96], deep_after[96];
    snprintf(deep_page, sizeof deep_page, "%ld deep, scrolling up (before cursor)", o->deep);
    snprintf(deep_after, sizeof deep_after, "%ld deep from the oldest (after cursor)", o->deep);
    read_row(rep, ctx, o, "ListMessages", deep_page, "messages_deep_before", BENCH_MSG_DEEP_BEFORE);
    read_row(rep, ctx, o, "ListMessages", deep_after, "messages_deep_after", BENCH_MSG_DEEP_AFTER);
    char all_pages[96], conv_deep[96];
    snprintf(all_pages, sizeof all_pages, "every page in turn (%zu pages)", ctx->nconv_tokens);
    snprintf(conv_deep, sizeof conv_deep, "page %zu (%zu conversations deep)",
             ctx->conv_deep_page + 1, ctx->conv_deep_page * 50);
    read_row(rep, ctx, o, "ListConversations", "first page", "conversations_first",
             BENCH_CONV_FIRST);
    read_row(rep, ctx, o, "ListConversations", all_pages, "conversations_all", BENCH_CONV_ALL);
    read_row(rep, ctx, o, "ListConversations", conv_deep, "conversations_deep", BENCH_CONV_DEEP);
}

static void write_phases(bench_report_t *rep, bench_ctx_t *ctx, const opts_t *o, const char *pgdir)
{
    int top = o->levels[o->nlevels - 1];
    for (int li = 0; li < o->nlevels; li++) {
        int c = o->levels[li];
        bench_write_row_t *wn = &rep->writes[rep->nwrites++];
        bench_write_row_t *wd = &rep->writes[rep->nwrites++];
        char label[96];

        wn->kind = "new";
        wd->kind = "duplicate";
        wn->concurrency = wd->concurrency = c;
        ctx->phase_no = li + 1;
        checkpoint(o);
        snprintf(label, sizeof label, "PersistInbound new, %d callers", c);
        run_phase(ctx, BENCH_PERSIST_NEW, false, c, o->duration, o->service_pid, &wn->svc, label);
        if (o->pgbench != NULL) {
            checkpoint(o);
            bench_pgbench_run(o->pgbench, o->owner_dsn, pgdir, "new", c, o->duration, g_pg_pid,
                              &wn->pg);
            bench_progress("pgbench new, %-38d %8.0f tps      p50 %7.3f ms  p99 %7.3f ms %s", c,
                           wn->pg.tps, wn->pg.p50_ms, wn->pg.p99_ms, wn->pg.error);
        }
        snprintf(label, sizeof label, "PersistInbound duplicate, %d callers", c);
        run_phase(ctx, BENCH_PERSIST_DUP, false, c, o->duration, o->service_pid, &wd->svc, label);
        if (o->pgbench != NULL) {
            bench_pgbench_run(o->pgbench, o->owner_dsn, pgdir, "dup", c, o->duration, g_pg_pid,
                              &wd->pg);
            bench_progress("pgbench duplicate, %-32d %8.0f tps      p50 %7.3f ms  p99 %7.3f ms %s",
                           c, wd->pg.tps, wd->pg.p50_ms, wd->pg.p99_ms, wd->pg.error);
        }
        for (int k = 0; k < 2; k++) {
            const bench_write_row_t *w = k == 0 ? wn : wd;
            if (w->svc.errors)
                note(rep, "PersistInbound %s at %d callers: %llu failed calls, first: %s", w->kind,
                     c, (unsigned long long)w->svc.errors, w->svc.first_error);
            if (o->pgbench != NULL && !w->pg.ok)
                note(rep, "pgbench %s at %d clients: %s", w->kind, c, w->pg.error);
            else if (w->pg.failed > 0)
                note(rep, "pgbench %s at %d clients: %ld failed transactions", w->kind, c,
                     w->pg.failed);
        }
        if (c == top && o->service_pid > 0) {
            rep->rss_hwm_kb = bench_proc_kb(o->service_pid, "VmHWM");
            rep->rss_max_64_kb =
                wn->svc.rss_max_kb > wd->svc.rss_max_kb ? wn->svc.rss_max_kb : wd->svc.rss_max_kb;
        }
    }
}

int main(int argc, char **argv)
{
    static bench_report_t rep;
    static bench_ctx_t ctx;
    opts_t o;
    oc_error_t e;
    char err[BENCH_ERR_LEN], path[4096], pgdir[4096];
    int rc = 1;

    signal(SIGPIPE, SIG_IGN);
    if (parse_args(argc, argv, &o) != 0) return 2;
    if (mkdir(o.out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "omnichat-bench-persistence: %s: %s\n", o.out_dir, strerror(errno));
        return 1;
    }
    g_pg_pid = o.postgres_pid;
    rep.duration_s = o.duration;
    rep.ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    bench_loadavg(rep.loadavg_start, sizeof rep.loadavg_start);
    rep.list_duration_s = o.list_duration;
    rep.ctx = &ctx;
    ctx.deep_position = o.deep;
    snprintf(ctx.run_id, sizeof ctx.run_id, "%lx", (unsigned long)time(NULL));
    pthread_mutex_init(&ctx.keys_mu, NULL);

    bench_progress("loading the seed's ids and samples");
    if (bench_ctx_load(&ctx, o.owner_dsn, err, sizeof err) != 0) goto fail;
    oc_error_clear(&e);
    ctx.rpc = oc_rpc_client_create_tls(o.target, o.tls.cert_file ? &o.tls : NULL, &e);
    if (ctx.rpc == NULL) {
        snprintf(err, sizeof err, "%s", e.msg);
        goto fail;
    }
    if (bench_ctx_ref_open(&ctx, o.app_dsn, err, sizeof err) != 0) goto fail;
    snprintf(pgdir, sizeof pgdir, "%s/pgbench", o.out_dir);
    if (o.pgbench != NULL && bench_pgbench_scripts(pgdir, err, sizeof err) != 0) goto fail;
    if (o.service_pid > 0) rep.rss_idle_kb = bench_proc_kb(o.service_pid, "VmRSS");

    if (o.reads) {
        bench_progress("walking %ld messages up and down the big conversation, and the inbox",
                       o.deep);
        if (bench_ctx_walk(&ctx, err, sizeof err) != 0) goto fail;
        if (strcmp(ctx.deep_first_id_service, ctx.deep_first_id_sql) != 0)
            note(&rep, "the deep page's newest message is %s by the service but %s by SQL",
                 ctx.deep_first_id_service, ctx.deep_first_id_sql);
    }

    /* Every worker connects and prepares its statements before anything is timed. */
    bench_stats_t warm;
    run_phase(&ctx, BENCH_CONV_FIRST, false, 64, 2, 0, &warm,
              "warm-up: ListConversations, 64 callers");
    sleep(1); /* let the warm-up's 64 threads and their sockets wind down */

    if (o.reads) read_phases(&rep, &ctx, &o);
    if (o.writes) write_phases(&rep, &ctx, &o, pgdir);

    bench_loadavg(rep.loadavg_end, sizeof rep.loadavg_end);
    compute_targets(&rep, &o);
    issue_targets(&rep, &o);
    bench_report_print(&rep, stdout);
    snprintf(path, sizeof path, "%s/results.json", o.out_dir);
    if (bench_report_json(&rep, path) != 0)
        fprintf(stderr, "omnichat-bench-persistence: could not write %s\n", path);
    snprintf(path, sizeof path, "%s/results.md", o.out_dir);
    if (bench_report_markdown(&rep, path) != 0)
        fprintf(stderr, "omnichat-bench-persistence: could not write %s\n", path);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "omnichat-bench-persistence: %s\n", err);
out:
    oc_rpc_client_destroy(ctx.rpc);
    bench_ctx_dispose(&ctx);
    return rc;
}
