/* omnichat-bench-line: drives a running connector stack (LINE or Meta) and prints its figures. */
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bl.h"

#define TARGET_SENDS_PER_S 1000.0
#define TARGET_EVENTS_PER_S 1000.0

/* Issue 10's goals, and the values its table recorded before the work ("today" in the issue:
 * one LINE run of this benchmark). The "before" strings are quoted, never measured here. */
#define ISSUE10_PG_US_PER_INBOUND_MAX 300.0
#define ISSUE10_PG_US_PER_SEND_MAX 400.0
#define ISSUE10_CONN_US_PER_SEND_MAX 150.0
#define ISSUE10_SEND_VS_PAIRS_MIN 0.90
#define ISSUE10_WEBHOOK_P99_MS_MAX 250.0
#define ISSUE10_BEFORE_PG_US_PER_INBOUND "446 µs"
#define ISSUE10_BEFORE_PG_US_PER_SEND "756 µs"
#define ISSUE10_BEFORE_CONN_US_PER_SEND "308 µs"
#define ISSUE10_BEFORE_SEND_VS_PAIRS "79% (1,330 vs 1,680)"
#define ISSUE10_BEFORE_WEBHOOK_K10 "1,031 ms, one 503"

typedef struct opts {
    const char *connector, *persistence, *webhook_base, *sim_base, *super_dsn, *out_dir, *flags;
    oc_rpc_tls_t tls; /* client certificate (operator) for both services; none: plaintext */
    pid_t connector_pid, persistence_pid, sim_pid, postgres_pid;
    int duration, ref_duration, threads, tenants, channels, users, k;
    bool sends, ingest, ordered;
    const bl_driver_t *drv;
    const char *app_secret_file;
    const char *phase_hook; /* a command run before and after each phase (profiling) */
    uint64_t calls;         /* main phases stop after this many calls (0: duration only) */
} opts_t;

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: omnichat-bench-line --connector HOST:PORT --persistence HOST:PORT\n"
        "           --webhook-base URL --sim-base URL --super-dsn DSN\n"
        "           [--connector-pid P] [--persistence-pid P] [--sim-pid P]\n"
        "           [--postgres-pid P] [--duration S] [--ref-duration S] [--threads N]\n"
        "           [--tenants N] [--channels N] [--users N] [--k N] [--out-dir DIR]\n"
        "           [--phases send,ingest] [--flags TEXT] [--provider line|meta]\n"
        "           [--app-secret-file FILE] [--calls N] [--phase-hook CMD]\n"
        "\n"
        "Runs against a fresh stack started by scripts/bench-line.sh (the one documented way\n"
        "to run it). Connects --channels bots through the connector, makes one conversation\n"
        "per user with a signed webhook, then measures SendText and webhook ingest beside\n"
        "their references (the simulator's raw send rate; the same persistence calls made\n"
        "directly). Prints a table and writes DIR/results.json and DIR/results.md. Figures\n"
        "are results, not tests: the exit status is 0 when the run completed, whatever the\n"
        "targets say.\n"
        "  --provider         the provider driver (default line): how channels are made at\n"
        "                     the simulator, webhooks signed and sends checked\n"
        "  --app-secret-file  the app secret that signs webhooks (meta: required)\n"
        "  --connector        the connector's gRPC address\n"
        "  --persistence      the persistence service's gRPC address\n"
        "  --tls-cert-file, --tls-key-file, --tls-ca-file\n"
        "                     client certificate, key and CA for mutual TLS to both "
        "(default: plaintext)\n"
        "  --webhook-base     the connector's HTTP base URL (http://127.0.0.1:PORT)\n"
        "  --sim-base         the provider simulator's base URL\n"
        "  --super-dsn        libpq conninfo of a superuser (CHECKPOINT, exactly-once counts)\n"
        "  --*-pid            pids for CPU and memory figures from /proc\n"
        "  --duration         seconds of each main phase (default 15)\n"
        "  --ref-duration     seconds of the simulator's raw send phase (default 10)\n"
        "  --threads          concurrent callers (default 64)\n"
        "  --tenants/--channels/--users  the shape of the data (default 4, 8, 256)\n"
        "  --k                events per POST of the batched webhook phase (default 10)\n"
        "  --out-dir          where results go (default var/bench-line)\n"
        "  --phases           which phases to run (default send,ingest)\n"
        "  --flags            a description of the services' flags, copied to the results\n"
        "  --ordered-batches  an experiment, not the benchmark: the users of each batch in\n"
        "                     one global order (shows what lock-order cycles cost)\n"
        "  --calls            an experiment: each main phase (SendText, webhook) stops after\n"
        "                     N calls, for the same work in every run (profiles)\n"
        "  --phase-hook       an experiment: runs 'CMD begin TAG' before and 'CMD end TAG'\n"
        "                     after each phase (TAG: s, w1, w10, ...; e.g. callgrind_control)\n");
}

static int int_arg(const char *name, const char *v, int lo, int hi, int *out)
{
    char *end;
    long n = strtol(v, &end, 10);

    if (*v == '\0' || *end != '\0' || n < lo || n > hi) {
        fprintf(stderr, "omnichat-bench-line: %s must be a number in %d..%d\n", name, lo, hi);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int parse(int argc, char **argv, opts_t *o)
{
    enum {
        O_CONN = 256,
        O_PST,
        O_WH,
        O_SIM,
        O_SUPER,
        O_CPID,
        O_PPID,
        O_SPID,
        O_GPID,
        O_DUR,
        O_RDUR,
        O_THREADS,
        O_TENANTS,
        O_CHANNELS,
        O_USERS,
        O_K,
        O_OUT,
        O_PHASES,
        O_FLAGS,
        O_ORDERED,
        O_HELP,
        O_TLS_CERT,
        O_TLS_KEY,
        O_TLS_CA,
        O_PROVIDER,
        O_APP_SECRET,
        O_CALLS,
        O_HOOK
    };
    static const struct option longopts[] = {
        {"connector", required_argument, NULL, O_CONN},
        {"persistence", required_argument, NULL, O_PST},
        {"webhook-base", required_argument, NULL, O_WH},
        {"sim-base", required_argument, NULL, O_SIM},
        {"super-dsn", required_argument, NULL, O_SUPER},
        {"connector-pid", required_argument, NULL, O_CPID},
        {"persistence-pid", required_argument, NULL, O_PPID},
        {"sim-pid", required_argument, NULL, O_SPID},
        {"postgres-pid", required_argument, NULL, O_GPID},
        {"duration", required_argument, NULL, O_DUR},
        {"ref-duration", required_argument, NULL, O_RDUR},
        {"threads", required_argument, NULL, O_THREADS},
        {"tenants", required_argument, NULL, O_TENANTS},
        {"channels", required_argument, NULL, O_CHANNELS},
        {"users", required_argument, NULL, O_USERS},
        {"k", required_argument, NULL, O_K},
        {"out-dir", required_argument, NULL, O_OUT},
        {"phases", required_argument, NULL, O_PHASES},
        {"flags", required_argument, NULL, O_FLAGS},
        {"ordered-batches", no_argument, NULL, O_ORDERED},
        {"help", no_argument, NULL, O_HELP},
        {"tls-cert-file", required_argument, NULL, O_TLS_CERT},
        {"tls-key-file", required_argument, NULL, O_TLS_KEY},
        {"tls-ca-file", required_argument, NULL, O_TLS_CA},
        {"provider", required_argument, NULL, O_PROVIDER},
        {"app-secret-file", required_argument, NULL, O_APP_SECRET},
        {"calls", required_argument, NULL, O_CALLS},
        {"phase-hook", required_argument, NULL, O_HOOK},
        {NULL, 0, NULL, 0},
    };
    int c, v;

    memset(o, 0, sizeof *o);
    o->duration = 15;
    o->ref_duration = 10;
    o->threads = 64;
    o->tenants = 4;
    o->channels = 8;
    o->users = 256;
    o->k = 10;
    o->out_dir = "var/bench-line";
    o->flags = "";
    o->sends = o->ingest = true;
    o->drv = &bl_driver_line;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_APP_SECRET:
            o->app_secret_file = optarg;
            break;
        case O_CALLS:
            if (int_arg("--calls", optarg, 1, 100000000, &v) != 0) return -1;
            o->calls = (uint64_t)v;
            break;
        case O_HOOK:
            o->phase_hook = optarg;
            break;
        case O_PROVIDER:
            o->drv = bl_driver_find(optarg);
            if (o->drv == NULL) {
                fprintf(stderr, "omnichat-bench-line: --provider: unknown driver '%s'\n", optarg);
                return -1;
            }
            break;
        case O_CONN:
            o->connector = optarg;
            break;
        case O_PST:
            o->persistence = optarg;
            break;
        case O_TLS_CERT:
            o->tls.cert_file = optarg;
            break;
        case O_TLS_KEY:
            o->tls.key_file = optarg;
            break;
        case O_TLS_CA:
            o->tls.ca_file = optarg;
            break;
        case O_WH:
            o->webhook_base = optarg;
            break;
        case O_SIM:
            o->sim_base = optarg;
            break;
        case O_SUPER:
            o->super_dsn = optarg;
            break;
        case O_OUT:
            o->out_dir = optarg;
            break;
        case O_FLAGS:
            o->flags = optarg;
            break;
        case O_ORDERED:
            o->ordered = true;
            break;
        case O_CPID:
        case O_PPID:
        case O_SPID:
        case O_GPID:
            if (int_arg("a pid", optarg, 1, 1 << 30, &v) != 0) return -1;
            if (c == O_CPID) o->connector_pid = v;
            if (c == O_PPID) o->persistence_pid = v;
            if (c == O_SPID) o->sim_pid = v;
            if (c == O_GPID) o->postgres_pid = v;
            break;
        case O_DUR:
            if (int_arg("--duration", optarg, 1, 3600, &o->duration) != 0) return -1;
            break;
        case O_RDUR:
            if (int_arg("--ref-duration", optarg, 1, 3600, &o->ref_duration) != 0) return -1;
            break;
        case O_THREADS:
            if (int_arg("--threads", optarg, 1, BENCH_MAX_THREADS, &o->threads) != 0) return -1;
            break;
        case O_TENANTS:
            if (int_arg("--tenants", optarg, 1, 1000, &o->tenants) != 0) return -1;
            break;
        case O_CHANNELS:
            if (int_arg("--channels", optarg, 1, 1000, &o->channels) != 0) return -1;
            break;
        case O_USERS:
            if (int_arg("--users", optarg, 1, 100000, &o->users) != 0) return -1;
            break;
        case O_K:
            if (int_arg("--k", optarg, 2, BL_MAX_K, &o->k) != 0) return -1;
            break;
        case O_PHASES:
            o->sends = strstr(optarg, "send") != NULL;
            o->ingest = strstr(optarg, "ingest") != NULL;
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (o->connector == NULL || o->persistence == NULL || o->webhook_base == NULL ||
        o->sim_base == NULL || o->super_dsn == NULL) {
        fprintf(stderr, "omnichat-bench-line: --connector, --persistence, --webhook-base, "
                        "--sim-base and --super-dsn are required\n");
        usage(stderr);
        return -1;
    }
    if (o->channels > o->users || o->users / o->channels < o->k ||
        o->users / o->channels >= BL_MAX_USERS_PER_CHANNEL) {
        fprintf(stderr, "omnichat-bench-line: every channel needs --k to %d users\n",
                BL_MAX_USERS_PER_CHANNEL - 1);
        return -1;
    }
    if (o->tenants > o->channels) o->tenants = o->channels;
    return 0;
}

/* CPU seconds (user + system) of one process so far; 0 when it cannot be read. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;
    size_t n;

    if (pid <= 0) return 0;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    if ((f = fopen(path, "r")) == NULL) return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if ((p = strrchr(buf, ')')) == NULL) return 0;
    /* After ") ": state(3) ... utime(14) stime(15). */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct cpu_snap {
    bench_cpu_t base; /* self, the postgres tree, the whole machine */
    double conn, pst, sim;
} cpu_snap_t;

static void snap(const opts_t *o, cpu_snap_t *s)
{
    bench_cpu_sample(0, o->postgres_pid, &s->base);
    s->conn = proc_cpu_s(o->connector_pid);
    s->pst = proc_cpu_s(o->persistence_pid);
    s->sim = proc_cpu_s(o->sim_pid);
}

/* pg_stat_database.deadlocks of the database, or -1. */
static long long deadlocks(bl_ctx_t *ctx)
{
    char err[BENCH_ERR_LEN];

    return bl_sql_count(ctx,
                        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
                        err, sizeof err);
}

/* --phase-hook: runs the command synchronously, so that nothing of the phase is in flight
 * while it runs (a profiler's counters then cover exactly the phase's calls). */
static void phase_hook(const opts_t *o, const char *when, const char *tag)
{
    char cmd[1024];
    int rc;

    if (o->phase_hook == NULL) return;
    snprintf(cmd, sizeof cmd, "%s %s %s", o->phase_hook, when, tag);
    rc = system(cmd);
    if (rc != 0) bench_progress("warning: the phase hook '%s' exited with %d", cmd, rc);
}

/* Runs one phase of bl_call and fills ph (figures, items, CPU by process). */
static void run_phase(const opts_t *o, bl_ctx_t *ctx, bl_phase_t *ph, bl_job_t *job, double seconds,
                      uint64_t max_calls, pid_t rss_pid)
{
    bench_phase_t bp = {o->threads, seconds, max_calls, bl_call, job, rss_pid, 0};
    const struct timespec settle = {1, 200 * 1000 * 1000};
    cpu_snap_t a, b;
    double all;
    long long dl0, dl1;

    bl_threads_reset(ctx);
    dl0 = deadlocks(ctx);
    phase_hook(o, "begin", job->tag);
    snap(o, &a);
    bench_run(&bp, &ph->st);
    snap(o, &b);
    phase_hook(o, "end", job->tag);
    /* Backends report their statistics at most once a second, when idle. */
    nanosleep(&settle, NULL);
    dl1 = deadlocks(ctx);
    ph->deadlocks = dl0 >= 0 && dl1 >= 0 ? dl1 - dl0 : -1;
    ph->ran = true;
    ph->k = job->k;
    ph->cpu.self_s = b.base.self_s - a.base.self_s;
    ph->cpu.pg_s = b.base.pg_s - a.base.pg_s;
    ph->cpu.conn_s = b.conn - a.conn;
    ph->cpu.pst_s = b.pst - a.pst;
    ph->cpu.sim_s = b.sim - a.sim;
    all = b.base.machine_s - a.base.machine_s;
    ph->cpu.other_s =
        all - ph->cpu.self_s - ph->cpu.pg_s - ph->cpu.conn_s - ph->cpu.pst_s - ph->cpu.sim_s;
    if (ph->cpu.other_s < 0) ph->cpu.other_s = 0;
    ph->items = job->k > 1 ? ph->st.calls * (uint64_t)job->k : ph->st.calls;
    ph->items_rate = ph->st.seconds > 0 ? (double)ph->items / ph->st.seconds : 0;
    ph->http_other = ph->http_503 = 0;
    for (int i = 0; i < o->threads; i++) {
        ph->http_other += ctx->th[i].http_other;
        ph->http_503 += ctx->th[i].http_503;
        if (ctx->th[i].last_http_status != 0) ph->last_http_status = ctx->th[i].last_http_status;
    }
    bench_progress("  %s: %.0f %s (%.0f calls/s), p50 %.2f ms, p99 %.2f ms, max %.2f ms, %lld "
                   "deadlocks, %llu errors%s%s",
                   ph->title, ph->items_rate, ph->unit, ph->st.rate, ph->st.p50_ms, ph->st.p99_ms,
                   ph->st.max_ms, ph->deadlocks, (unsigned long long)ph->st.errors,
                   ph->st.errors ? ": " : "", ph->st.errors ? ph->st.first_error : "");
}

static void set_job(bl_job_t *job, bl_ctx_t *ctx, bl_kind_t kind, int k, const char *tag)
{
    memset(job, 0, sizeof *job);
    job->ctx = ctx;
    job->kind = kind;
    job->k = k;
    snprintf(job->tag, sizeof job->tag, "%s", tag);
}

static void checkpoint(bl_ctx_t *ctx)
{
    char err[BENCH_ERR_LEN];

    if (bl_checkpoint(ctx, err, sizeof err) != 0)
        bench_progress("warning: %s (the phase runs anyway)", err);
}

static uint64_t per_thread(uint64_t total, int threads)
{
    return total == 0 ? 0 : (total + (uint64_t)threads - 1) / (uint64_t)threads;
}

static void note(bl_report_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(bl_report_t *r, const char *fmt, ...)
{
    va_list ap;

    if (r->nnotes >= (int)(sizeof r->notes / sizeof r->notes[0])) return;
    va_start(ap, fmt);
    vsnprintf(r->notes[r->nnotes++], sizeof r->notes[0], fmt, ap);
    va_end(ap);
}

static void target(bl_report_t *r, const char *what, const char *tgt, bool ok, bool pass,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void target(bl_report_t *r, const char *what, const char *tgt, bool ok, bool pass,
                   const char *fmt, ...)
{
    bl_target_t *t;
    va_list ap;

    if (r->ntargets >= (int)(sizeof r->targets / sizeof r->targets[0])) return;
    t = &r->targets[r->ntargets++];
    snprintf(t->what, sizeof t->what, "%s", what);
    snprintf(t->target, sizeof t->target, "%s", tgt);
    t->measured_ok = ok;
    t->pass = ok && pass;
    va_start(ap, fmt);
    vsnprintf(t->measured, sizeof t->measured, fmt, ap);
    va_end(ap);
}

/* CPU of the benchmark's own processes (client, services, PostgreSQL), without the rest. */
static double cpu_total(const bl_phase_t *p)
{
    return p->cpu.self_s + p->cpu.conn_s + p->cpu.pst_s + p->cpu.sim_s + p->cpu.pg_s;
}

/* Facts the references support, written as numbers; the analysis is for a human to add. */
static void analyse(bl_report_t *r)
{
    const bl_phase_t *s = &r->ph[BL_PH_SENDTEXT], *push = &r->ph[BL_PH_REF_PUSH],
                     *out = &r->ph[BL_PH_REF_OUTBOUND];

    if (s->ran && push->ran && out->ran && s->items > 0)
        note(r,
             "SendText: %.0f sends/s; the simulator alone took %.0f raw sends/s from %d callers "
             "(%.1fx), and persistence alone did %.0f CreateOutbound+CompleteOutbound pairs/s "
             "(%.2fx the SendText rate). CPU per send of the client, the services and "
             "PostgreSQL: %.0f us (PostgreSQL %.0f, connector %.0f, persistence %.0f, simulator "
             "%.0f, client %.0f); per pair without the connector and the provider: %.0f us. At "
             "that cost %d cores give at most about %.0f sends/s even with nothing else running "
             "(other processes used %.0f%% of the machine during the phase).",
             s->items_rate, push->items_rate, s->st.threads, push->items_rate / s->items_rate,
             out->items_rate, out->items_rate / s->items_rate,
             1e6 * cpu_total(s) / (double)s->items, 1e6 * s->cpu.pg_s / (double)s->items,
             1e6 * s->cpu.conn_s / (double)s->items, 1e6 * s->cpu.pst_s / (double)s->items,
             1e6 * s->cpu.sim_s / (double)s->items, 1e6 * s->cpu.self_s / (double)s->items,
             out->items > 0 ? 1e6 * cpu_total(out) / (double)out->items : 0, r->ncpu,
             cpu_total(s) > 0 ? (double)s->items / cpu_total(s) * r->ncpu : 0,
             s->st.seconds > 0 ? 100.0 * s->cpu.other_s / (s->st.seconds * r->ncpu) : 0);
    for (int i = 0; i < 2; i++) {
        const bl_phase_t *w = &r->ph[i == 0 ? BL_PH_WEBHOOK_K1 : BL_PH_WEBHOOK_K10];
        const bl_phase_t *p = &r->ph[i == 0 ? BL_PH_REF_INBOUND_K1 : BL_PH_REF_INBOUND_K10];
        if (!w->ran || !p->ran || w->items == 0) continue;
        note(r,
             "Webhook, %d event%s per POST: %.0f events/s with %lld deadlocks and %llu failed "
             "POSTs; persistence alone stored the same kind of batches at %.0f events/s (%.2fx) "
             "with %lld deadlocks. CPU per event of the client, the services and PostgreSQL: "
             "%.0f us (PostgreSQL %.0f, persistence %.0f, connector %.0f, client %.0f); without "
             "the connector: %.0f us.",
             w->k, w->k > 1 ? "s" : "", w->items_rate, w->deadlocks,
             (unsigned long long)w->st.errors, p->items_rate, p->items_rate / w->items_rate,
             p->deadlocks, 1e6 * cpu_total(w) / (double)w->items,
             1e6 * w->cpu.pg_s / (double)w->items, 1e6 * w->cpu.pst_s / (double)w->items,
             1e6 * w->cpu.conn_s / (double)w->items, 1e6 * w->cpu.self_s / (double)w->items,
             p->items > 0 ? 1e6 * cpu_total(p) / (double)p->items : 0);
    }
}

static double us_per(double cpu_s, uint64_t items)
{
    return items > 0 ? cpu_s * 1e6 / (double)items : 0;
}

/* The share of the cores other processes took during phases a and b (the higher of the two
 * that ran), -1 when neither ran. */
static double others_of(const bl_report_t *r, const bl_phase_t *a, const bl_phase_t *b)
{
    double v = -1;
    const bl_phase_t *ph[2] = {a, b};

    for (int i = 0; i < 2; i++)
        if (ph[i] != NULL && ph[i]->ran && ph[i]->st.seconds > 0 && r->ncpu > 0) {
            double o = 100.0 * ph[i]->cpu.other_s / (ph[i]->st.seconds * (double)r->ncpu);
            if (o > v) v = o;
        }
    return v;
}

/* The rows of issue 10's table this benchmark measures, each beside its reference. */
static void issue_targets(bl_report_t *r)
{
    const bl_phase_t *s = &r->ph[BL_PH_SENDTEXT], *pair = &r->ph[BL_PH_REF_OUTBOUND];
    const bl_phase_t *w1 = &r->ph[BL_PH_WEBHOOK_K1], *p1 = &r->ph[BL_PH_REF_INBOUND_K1];
    const bl_phase_t *wk = &r->ph[BL_PH_WEBHOOK_K10], *pk = &r->ph[BL_PH_REF_INBOUND_K10];
    const int cap = (int)(sizeof r->issue / sizeof r->issue[0]);
    bench_issue_row_t *x;
    char fig[112];
    double v, ref;
    bool ok;

    ok = w1->ran && w1->items > 0;
    v = ok ? us_per(w1->cpu.pg_s, w1->items) : 0;
    ref = p1->ran ? us_per(p1->cpu.pg_s, p1->items) : 0;
    x = bench_issue_row(r->issue, &r->nissue, cap,
                        "PostgreSQL CPU per inbound message (webhook, 1 event per POST)",
                        "<= 300 µs", ISSUE10_BEFORE_PG_US_PER_INBOUND, ok,
                        v <= ISSUE10_PG_US_PER_INBOUND_MAX && w1->st.errors == 0, "%.0f µs", v);
    if (x != NULL) x->others_pct = others_of(r, w1, p1);
    if (x != NULL && ok && ref > 0) {
        snprintf(x->reference, sizeof x->reference, "%.0f µs (PersistInbound alone)", ref);
        snprintf(x->ratio, sizeof x->ratio, "%.2fx", v / ref);
    }

    ok = s->ran && s->items > 0;
    v = ok ? us_per(s->cpu.pg_s, s->items) : 0;
    ref = pair->ran ? us_per(pair->cpu.pg_s, pair->items) : 0;
    x = bench_issue_row(r->issue, &r->nissue, cap, "PostgreSQL CPU per SendText", "<= 400 µs",
                        ISSUE10_BEFORE_PG_US_PER_SEND, ok, v <= ISSUE10_PG_US_PER_SEND_MAX,
                        "%.0f µs", v);
    if (x != NULL) x->others_pct = others_of(r, s, pair);
    if (x != NULL && ok && ref > 0) {
        snprintf(x->reference, sizeof x->reference, "%.0f µs (the pair alone)", ref);
        snprintf(x->ratio, sizeof x->ratio, "%.2fx", v / ref);
    }

    v = ok ? us_per(s->cpu.conn_s, s->items) : 0;
    ref = ok ? us_per(cpu_total(s), s->items) : 0;
    x = bench_issue_row(r->issue, &r->nissue, cap, "connector CPU per SendText", "<= 150 µs",
                        ISSUE10_BEFORE_CONN_US_PER_SEND, ok, v <= ISSUE10_CONN_US_PER_SEND_MAX,
                        "%.0f µs", v);
    if (x != NULL) x->others_pct = others_of(r, s, NULL);
    if (x != NULL && ok && ref > 0) {
        snprintf(x->reference, sizeof x->reference, "%.0f µs (all processes per send)", ref);
        snprintf(x->ratio, sizeof x->ratio, "%.0f%% of it", 100.0 * v / ref);
    }

    ok = s->ran && pair->ran && s->st.calls > 0 && pair->items_rate > 0;
    v = ok ? s->items_rate / pair->items_rate : 0;
    x = bench_issue_row(r->issue, &r->nissue, cap,
                        "SendText throughput vs CreateOutbound+CompleteOutbound pairs alone",
                        ">= 90%", ISSUE10_BEFORE_SEND_VS_PAIRS, ok,
                        v >= ISSUE10_SEND_VS_PAIRS_MIN && s->st.errors == 0, "%.0f sends/s",
                        s->items_rate);
    if (x != NULL) x->others_pct = others_of(r, s, pair);
    if (x != NULL && ok) {
        snprintf(x->reference, sizeof x->reference, "%.0f pairs/s", pair->items_rate);
        snprintf(x->ratio, sizeof x->ratio, "%.1f%%", 100.0 * v);
    }

    /* A POST answered 503 (or not answered) is a failure: its events were not stored. */
    ok = wk->ran && wk->st.calls + wk->st.errors > 0;
    snprintf(fig, sizeof fig, "webhook, %d events per POST, %d concurrent POSTs: p99, 503s", wk->k,
             wk->st.threads);
    x = bench_issue_row(r->issue, &r->nissue, cap, fig, "<= 250 ms, no 503",
                        ISSUE10_BEFORE_WEBHOOK_K10, ok,
                        wk->st.p99_ms <= ISSUE10_WEBHOOK_P99_MS_MAX && wk->st.errors == 0,
                        "%.0f ms, %llu 503s (%llu failed POSTs of %llu)", wk->st.p99_ms,
                        (unsigned long long)wk->http_503, (unsigned long long)wk->st.errors,
                        (unsigned long long)(wk->st.calls + wk->st.errors));
    if (x != NULL) x->others_pct = others_of(r, wk, pk);
    if (x != NULL && ok && pk->ran && pk->st.p99_ms > 0) {
        snprintf(x->reference, sizeof x->reference, "%.0f ms (PersistInbound of %d alone)",
                 pk->st.p99_ms, pk->k);
        snprintf(x->ratio, sizeof x->ratio, "%.2fx", wk->st.p99_ms / pk->st.p99_ms);
    }
}

/* The app secret: the file's first line (a benchmark's throw-away secret, not a credential). */
static int read_app_secret(const char *path, char *out, size_t cap)
{
    FILE *f = path != NULL ? fopen(path, "r") : NULL;

    if (f == NULL || fgets(out, (int)cap, f) == NULL) {
        fprintf(stderr, "omnichat-bench-line: --app-secret-file: %s\n",
                path == NULL ? "required by this provider" : "cannot be read");
        if (f != NULL) fclose(f);
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return out[0] != '\0' ? 0 : -1;
}

int main(int argc, char **argv)
{
    opts_t o;
    static bl_ctx_t ctx; /* large (per-thread state): not on the stack */
    static bl_report_t rep;
    bl_job_t job;
    oc_error_t e;
    char err[BENCH_ERR_LEN], path[1024], prefix[64];
    int rc = 1;

    signal(SIGPIPE, SIG_IGN);
    if (parse(argc, argv, &o) != 0) return 2;
    memset(&rep, 0, sizeof rep);
    rep.duration_s = o.duration;
    rep.ref_duration_s = o.ref_duration;
    rep.threads = o.threads;
    rep.ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    rep.ntenants = o.tenants;
    rep.nch = o.channels;
    rep.nusers = o.users;
    rep.k_big = o.k;
    snprintf(rep.flags, sizeof rep.flags, "%s", o.flags);
    bench_loadavg(rep.loadavg_start, sizeof rep.loadavg_start);

    static const struct {
        const char *key, *title, *unit;
        bool ref;
    } phase_names[BL_PH__COUNT] = {
        [BL_PH_SENDTEXT] = {"sendtext", "SendText via the connector", "sends/s", false},
        [BL_PH_REF_PUSH] = {"ref_raw_push", "ref: raw send straight to the simulator", "sends/s",
                            true},
        [BL_PH_REF_OUTBOUND] = {"ref_pst_outbound",
                                "ref: persistence CreateOutbound+CompleteOutbound", "pairs/s",
                                true},
        [BL_PH_WEBHOOK_K1] = {"webhook_k1", "Webhook ingest, 1 event per POST", "events/s", false},
        [BL_PH_REF_INBOUND_K1] = {"ref_pst_inbound_k1", "ref: persistence PersistInbound, 1 msg",
                                  "events/s", true},
        [BL_PH_WEBHOOK_K10] = {"webhook_kN", "Webhook ingest, N events per POST", "events/s",
                               false},
        [BL_PH_REF_INBOUND_K10] = {"ref_pst_inbound_kN", "ref: persistence PersistInbound, N msgs",
                                   "events/s", true},
    };
    static char title_k[2][80];
    for (int i = 0; i < BL_PH__COUNT; i++) {
        rep.ph[i].key = phase_names[i].key;
        rep.ph[i].title = phase_names[i].title;
        rep.ph[i].unit = phase_names[i].unit;
        rep.ph[i].reference = phase_names[i].ref;
    }
    snprintf(title_k[0], sizeof title_k[0], "Webhook ingest, %d events per POST", o.k);
    snprintf(title_k[1], sizeof title_k[1], "ref: persistence PersistInbound, %d msgs", o.k);
    rep.ph[BL_PH_WEBHOOK_K10].title = title_k[0];
    rep.ph[BL_PH_REF_INBOUND_K10].title = title_k[1];

    ctx.drv = o.drv;
    if (o.drv->needs_app_secret &&
        read_app_secret(o.app_secret_file, ctx.app_secret, sizeof ctx.app_secret) != 0)
        return 2;
    ctx.connector_target = o.connector;
    ctx.persistence_target = o.persistence;
    ctx.webhook_base = o.webhook_base;
    ctx.sim_base = o.sim_base;
    ctx.super_dsn = o.super_dsn;
    ctx.connector_pid = o.connector_pid;
    ctx.persistence_pid = o.persistence_pid;
    ctx.sim_pid = o.sim_pid;
    ctx.postmaster_pid = o.postgres_pid;
    ctx.threads = o.threads;
    ctx.ordered_batches = o.ordered;
    oc_error_clear(&e);
    const oc_rpc_tls_t *tls = o.tls.cert_file ? &o.tls : NULL;
    ctx.conn = oc_rpc_client_create_tls(o.connector, tls, &e);
    if (ctx.conn != NULL) ctx.pst = oc_rpc_client_create_tls(o.persistence, tls, &e);
    if (ctx.conn == NULL || ctx.pst == NULL) {
        fprintf(stderr, "omnichat-bench-line: %s\n", e.msg);
        goto out;
    }
    if (o.connector_pid > 0) rep.rss_idle_conn_kb = bench_proc_kb(o.connector_pid, "VmRSS");
    if (o.persistence_pid > 0) rep.rss_idle_pst_kb = bench_proc_kb(o.persistence_pid, "VmRSS");

    bench_progress("setup: %d bots over %d tenants, %d users (one conversation each)", o.channels,
                   o.tenants, o.users);
    if (bl_setup(&ctx, o.tenants, o.channels, o.users, err, sizeof err) != 0) {
        fprintf(stderr, "omnichat-bench-line: setup failed: %s\n", err);
        goto out;
    }
    bench_progress("setup done (run id %s)", ctx.run);

    if (o.sends) {
        bl_phase_t warm = {.title = "warm-up", .unit = "sends/s"};
        bench_progress("SendText: warm-up 2 s");
        set_job(&job, &ctx, BL_SENDTEXT, 1, "sw");
        run_phase(&o, &ctx, &warm, &job, 2, 0, 0);
        if (bl_sim_reset(&ctx, err, sizeof err) != 0) {
            fprintf(stderr, "omnichat-bench-line: %s\n", err);
            goto out;
        }
        checkpoint(&ctx);
        bench_progress("SendText: %d callers, %d s", o.threads, o.duration);
        set_job(&job, &ctx, BL_SENDTEXT, 1, "s");
        run_phase(&o, &ctx, &rep.ph[BL_PH_SENDTEXT], &job, o.duration,
                  per_thread(o.calls, o.threads), o.connector_pid);
        bench_progress("SendText: checking the simulator's deliveries and the database");
        bl_verify_sends(&ctx, "s", &rep.sends);
        uint64_t sends = rep.ph[BL_PH_SENDTEXT].st.calls;

        if (bl_sim_reset(&ctx, err, sizeof err) != 0) bench_progress("warning: %s", err);
        bench_progress("reference: raw sends to the simulator, %d callers, %d s", o.threads,
                       o.ref_duration);
        set_job(&job, &ctx, BL_RAW_PUSH, 1, "rp");
        run_phase(&o, &ctx, &rep.ph[BL_PH_REF_PUSH], &job, o.ref_duration, 0, o.sim_pid);
        if (bl_sim_reset(&ctx, err, sizeof err) != 0) bench_progress("warning: %s", err);

        checkpoint(&ctx);
        bench_progress("reference: %llu CreateOutbound+CompleteOutbound pairs, %d callers",
                       (unsigned long long)sends, o.threads);
        set_job(&job, &ctx, BL_PST_OUTBOUND, 1, "o");
        run_phase(&o, &ctx, &rep.ph[BL_PH_REF_OUTBOUND], &job,
                  sends > 0 ? 3.0 * o.duration : o.duration, per_thread(sends, o.threads),
                  o.persistence_pid);
    }

    if (o.ingest) {
        bl_phase_t warm = {.title = "warm-up", .unit = "events/s", .k = 1};
        const int ks[2] = {1, o.k};
        const int main_ph[2] = {BL_PH_WEBHOOK_K1, BL_PH_WEBHOOK_K10};
        const int ref_ph[2] = {BL_PH_REF_INBOUND_K1, BL_PH_REF_INBOUND_K10};
        bl_ingest_check_t *checks[2] = {&rep.ingest_k1, &rep.ingest_k10};

        bench_progress("webhook: warm-up 1 s");
        set_job(&job, &ctx, BL_WEBHOOK, 1, "ww");
        run_phase(&o, &ctx, &warm, &job, 1, 0, 0);
        for (int i = 0; i < 2; i++) {
            char tag[8];
            uint64_t posts;

            checkpoint(&ctx);
            bench_progress("webhook: %d callers, %d event%s per POST, %d s", o.threads, ks[i],
                           ks[i] > 1 ? "s" : "", o.duration);
            snprintf(tag, sizeof tag, "w%d", ks[i]);
            set_job(&job, &ctx, BL_WEBHOOK, ks[i], tag);
            run_phase(&o, &ctx, &rep.ph[main_ph[i]], &job, o.duration,
                      per_thread(o.calls, o.threads), o.connector_pid);
            snprintf(prefix, sizeof prefix, "lb%s%s-", ctx.run, tag);
            bench_progress("webhook: matching the stored rows to the POSTs");
            bl_verify_ingest(&ctx, prefix, ks[i], checks[i]);
            posts = rep.ph[main_ph[i]].st.calls;

            checkpoint(&ctx);
            bench_progress("reference: %llu PersistInbound calls of %d message%s, %d callers",
                           (unsigned long long)posts, ks[i], ks[i] > 1 ? "s" : "", o.threads);
            snprintf(tag, sizeof tag, "p%d", ks[i]);
            set_job(&job, &ctx, BL_PST_INBOUND, ks[i], tag);
            run_phase(&o, &ctx, &rep.ph[ref_ph[i]], &job, posts > 0 ? 3.0 * o.duration : o.duration,
                      per_thread(posts, o.threads), o.persistence_pid);
        }
    }

    if (o.connector_pid > 0) rep.hwm_conn_kb = bench_proc_kb(o.connector_pid, "VmHWM");
    if (o.persistence_pid > 0) rep.hwm_pst_kb = bench_proc_kb(o.persistence_pid, "VmHWM");
    if (o.sim_pid > 0) rep.hwm_sim_kb = bench_proc_kb(o.sim_pid, "VmHWM");
    rep.pg_connections = (long)bl_sql_count(
        &ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'", err,
        sizeof err);
    bench_loadavg(rep.loadavg_end, sizeof rep.loadavg_end);

    /* ---- targets ---- */
    {
        const bl_phase_t *s = &rep.ph[BL_PH_SENDTEXT];
        char what[96];
        if (s->ran)
            target(&rep, "SendText, 64 concurrent calls", ">= 1000 sends/s", s->st.calls > 0,
                   s->items_rate >= TARGET_SENDS_PER_S,
                   "%.0f sends/s (p50 %.1f ms, p99 %.1f ms, %llu errors)", s->items_rate,
                   s->st.p50_ms, s->st.p99_ms, (unsigned long long)s->st.errors);
        if (rep.sends.done)
            target(&rep, "SendText deliveries == SENT replies (exactly once)", "exact", true,
                   rep.sends.exact, "%llu deliveries, %llu SENT, %llu missing, %llu duplicates",
                   (unsigned long long)rep.sends.deliveries,
                   (unsigned long long)rep.sends.replies_sent,
                   (unsigned long long)rep.sends.missing,
                   (unsigned long long)(rep.sends.dup_ids + rep.sends.extra));
        for (int i = 0; i < 2; i++) {
            const bl_phase_t *w = &rep.ph[i == 0 ? BL_PH_WEBHOOK_K1 : BL_PH_WEBHOOK_K10];
            const bl_ingest_check_t *c = i == 0 ? &rep.ingest_k1 : &rep.ingest_k10;
            if (!w->ran) continue;
            snprintf(what, sizeof what, "Webhook ingest, 64 concurrent POSTs, %d event%s/POST",
                     w->k, w->k > 1 ? "s" : "");
            target(&rep, what, ">= 1000 events/s", w->st.calls > 0,
                   w->items_rate >= TARGET_EVENTS_PER_S,
                   "%.0f events/s, %.0f POSTs/s (POST p50 %.1f ms, p99 %.1f ms, %llu errors)",
                   w->items_rate, w->st.rate, w->st.p50_ms, w->st.p99_ms,
                   (unsigned long long)w->st.errors);
            snprintf(what, sizeof what, "Webhook %d event%s/POST: accepted events stored once",
                     w->k, w->k > 1 ? "s" : "");
            target(&rep, what, "exact", c->done, c->exact,
                   "%llu of %llu accepted events stored, %llu missing, %llu duplicates",
                   (unsigned long long)c->stored_accepted, (unsigned long long)c->expected,
                   (unsigned long long)c->missing, (unsigned long long)c->duplicates);
        }
    }
    issue_targets(&rep);
    analyse(&rep);

    bl_report_print(&rep, stdout);
    mkdir(o.out_dir, 0755);
    snprintf(path, sizeof path, "%s/results.json", o.out_dir);
    if (bl_report_json(&rep, path) != 0) fprintf(stderr, "could not write %s\n", path);
    snprintf(path, sizeof path, "%s/results.md", o.out_dir);
    if (bl_report_markdown(&rep, path) != 0) fprintf(stderr, "could not write %s\n", path);
    rc = 0;
out:
    bl_ctx_dispose(&ctx);
    return rc;
}
