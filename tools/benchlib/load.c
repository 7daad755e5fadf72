/* Timed phases of N blocking callers: per-call latency, percentiles and process memory. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "benchlib.h"

int64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t bench_rand(uint64_t *state)
{
    uint64_t x = *state != 0 ? *state : 0x9E3779B97F4A7C15u;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Du;
}

long bench_proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    size_t flen = strlen(field);
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    f = fopen(path, "r");
    if (f == NULL) return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            kb = strtol(line + flen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* utime+stime (+ cutime+cstime when `children`) of /proc/<pid>/stat in ticks, and its ppid.
 * The command name may hold spaces and parentheses: fields are counted after the last ')'. */
static long long stat_ticks(pid_t pid, bool children, pid_t *ppid)
{
    char path[64], buf[1024];
    long long v[20] = {0};
    FILE *f;
    size_t n;
    char *p;

    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (f == NULL) return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL) return -1;
    p++;
    /* Field 3 is the state letter; 4 ppid; 14..17 utime stime cutime cstime. */
    for (int field = 3; field <= 17 && *p; field++) {
        while (*p == ' ')
            p++;
        if (field > 3) v[field] = strtoll(p, NULL, 10);
        while (*p && *p != ' ')
            p++;
    }
    if (ppid != NULL) *ppid = (pid_t)v[4];
    return v[14] + v[15] + (children ? v[16] + v[17] : 0);
}

void bench_cpu_sample(pid_t svc, pid_t pm, bench_cpu_t *out)
{
    double tick = (double)sysconf(_SC_CLK_TCK);
    struct rusage ru;
    long long t;

    memset(out, 0, sizeof *out);
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        out->self_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    if (svc > 0 && (t = stat_ticks(svc, false, NULL)) >= 0) out->svc_s = (double)t / tick;
    if (pm > 0) {
        /* Backends that exited are in the postmaster's cutime/cstime; live ones are summed. */
        long long sum = stat_ticks(pm, true, NULL);
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (sum >= 0 && d != NULL && (de = readdir(d)) != NULL) {
            pid_t ppid = 0;
            if (!isdigit((unsigned char)de->d_name[0])) continue;
            t = stat_ticks((pid_t)atol(de->d_name), false, &ppid);
            if (t >= 0 && ppid == pm) sum += t;
        }
        if (d != NULL) closedir(d);
        out->pg_s = sum > 0 ? (double)sum / tick : 0;
    }
    /* Busy time of every CPU: user nice system idle iowait irq softirq steal. */
    FILE *f = fopen("/proc/stat", "r");
    if (f != NULL) {
        long long u = 0, ni = 0, sy = 0, id = 0, io = 0, irq = 0, sirq = 0, st = 0;
        if (fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &u, &ni, &sy, &id, &io, &irq,
                   &sirq, &st) >= 7)
            out->machine_s = (double)(u + ni + sy + irq + sirq + st) / tick;
        fclose(f);
    }
}

typedef struct worker {
    pthread_t tid;
    int index;
    const bench_phase_t *ph;
    struct shared *sh;
    int64_t *lat_ns; /* successful calls' latencies */
    size_t nlat, caplat;
    uint64_t errors;
    char first_error[BENCH_ERR_LEN];
    bool oom;
} worker_t;

struct shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool go;
    int64_t start_ns, deadline_ns;
    atomic_int running;
    atomic_long rss_max_kb;
};

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct shared *sh = w->sh;
    oc_arena_t *arena = oc_arena_create(64 * 1024);
    char err[BENCH_ERR_LEN];

    pthread_mutex_lock(&sh->mu);
    while (!sh->go)
        pthread_cond_wait(&sh->cv, &sh->mu);
    pthread_mutex_unlock(&sh->mu);

    if (arena == NULL) {
        snprintf(w->first_error, sizeof w->first_error, "out of memory");
        w->errors++;
        goto out;
    }
    for (uint64_t seq = 0;; seq++) {
        if (w->ph->max_calls > 0 && seq >= w->ph->max_calls) break;
        int64_t t0 = bench_now_ns();
        if (t0 >= sh->deadline_ns) break;
        err[0] = '\0';
        bool ok = w->ph->fn(w->ph->user, w->index, seq, arena, err, sizeof err);
        int64_t dt = bench_now_ns() - t0;
        oc_arena_reset(arena);
        if (!ok) {
            if (w->errors++ == 0)
                snprintf(w->first_error, sizeof w->first_error, "%s", err[0] ? err : "failed");
            /* A phase that cannot succeed at all stops instead of spinning on its error. */
            if (w->nlat == 0 && w->errors >= 100) break;
            continue;
        }
        if (w->nlat == w->caplat) {
            size_t cap = w->caplat != 0 ? w->caplat * 2 : 4096;
            int64_t *p = realloc(w->lat_ns, cap * sizeof *p);
            if (p == NULL) {
                w->oom = true;
                break;
            }
            w->lat_ns = p;
            w->caplat = cap;
        }
        w->lat_ns[w->nlat++] = dt;
    }
out:
    oc_arena_destroy(arena);
    atomic_fetch_sub(&sh->running, 1);
    return NULL;
}

typedef struct sampler {
    pthread_t tid;
    pid_t pid;
    struct shared *sh;
} sampler_t;

static void *sampler_main(void *arg)
{
    sampler_t *s = arg;
    const struct timespec pause = {0, 20 * 1000 * 1000};

    while (atomic_load(&s->sh->running) > 0) {
        long kb = bench_proc_kb(s->pid, "VmRSS");
        if (kb > atomic_load(&s->sh->rss_max_kb)) atomic_store(&s->sh->rss_max_kb, kb);
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values, in milliseconds. */
static double pct_ms(const int64_t *v, size_t n, double p)
{
    size_t rank;

    if (n == 0) return 0;
    rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return (double)v[rank - 1] / 1e6;
}

int bench_run(const bench_phase_t *ph, bench_stats_t *out)
{
    struct shared sh;
    worker_t *w = NULL;
    sampler_t smp;
    bool sampling = false;
    int started = 0, rc = -1;
    int64_t *all = NULL;
    size_t total = 0;

    memset(out, 0, sizeof *out);
    out->threads = ph->threads;
    if (ph->threads < 1 || ph->threads > BENCH_MAX_THREADS) {
        snprintf(out->first_error, sizeof out->first_error, "threads must be 1..%d",
                 BENCH_MAX_THREADS);
        return -1;
    }
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.mu, NULL);
    pthread_cond_init(&sh.cv, NULL);
    atomic_init(&sh.running, ph->threads);
    atomic_init(&sh.rss_max_kb, 0);
    w = calloc((size_t)ph->threads, sizeof *w);
    if (w == NULL) {
        snprintf(out->first_error, sizeof out->first_error, "out of memory");
        goto out;
    }
    for (int i = 0; i < ph->threads; i++) {
        w[i].index = i;
        w[i].ph = ph;
        w[i].sh = &sh;
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0) {
            snprintf(out->first_error, sizeof out->first_error, "pthread_create: %s",
                     strerror(errno));
            break;
        }
        started++;
    }
    /* Threads that never started must not be waited for by the sampler. */
    atomic_fetch_sub(&sh.running, ph->threads - started);

    bench_cpu_t cpu0, cpu1;
    bench_cpu_sample(ph->rss_pid, ph->pg_pid, &cpu0);
    pthread_mutex_lock(&sh.mu);
    sh.start_ns = bench_now_ns();
    sh.deadline_ns = started == ph->threads ? sh.start_ns + (int64_t)(ph->seconds * 1e9)
                                            : sh.start_ns; /* setup failed: stop at once */
    sh.go = true;
    pthread_cond_broadcast(&sh.cv);
    pthread_mutex_unlock(&sh.mu);

    if (ph->rss_pid > 0 && started > 0) {
        smp.pid = ph->rss_pid;
        smp.sh = &sh;
        sampling = pthread_create(&smp.tid, NULL, sampler_main, &smp) == 0;
    }
    for (int i = 0; i < started; i++)
        pthread_join(w[i].tid, NULL);
    out->seconds = (double)(bench_now_ns() - sh.start_ns) / 1e9;
    bench_cpu_sample(ph->rss_pid, ph->pg_pid, &cpu1);
    out->cpu_self_s = cpu1.self_s - cpu0.self_s;
    out->cpu_svc_s = cpu1.svc_s - cpu0.svc_s;
    out->cpu_pg_s = cpu1.pg_s - cpu0.pg_s;
    out->cpu_other_s =
        cpu1.machine_s - cpu0.machine_s - out->cpu_self_s - out->cpu_svc_s - out->cpu_pg_s;
    if (out->cpu_other_s < 0) out->cpu_other_s = 0;
    if (sampling) pthread_join(smp.tid, NULL);
    out->rss_max_kb = atomic_load(&sh.rss_max_kb);
    if (started != ph->threads) goto out;

    for (int i = 0; i < ph->threads; i++) {
        total += w[i].nlat;
        out->errors += w[i].errors;
        if (out->first_error[0] == '\0' && w[i].first_error[0] != '\0')
            snprintf(out->first_error, sizeof out->first_error, "%s", w[i].first_error);
        if (w[i].oom && out->first_error[0] == '\0')
            snprintf(out->first_error, sizeof out->first_error, "out of memory (latencies)");
    }
    all = malloc((total != 0 ? total : 1) * sizeof *all);
    if (all == NULL) {
        snprintf(out->first_error, sizeof out->first_error, "out of memory");
        goto out;
    }
    total = 0;
    for (int i = 0; i < ph->threads; i++) {
        memcpy(all + total, w[i].lat_ns, w[i].nlat * sizeof *all);
        total += w[i].nlat;
    }
    qsort(all, total, sizeof *all, cmp_i64);
    out->calls = total;
    out->rate = out->seconds > 0 ? (double)total / out->seconds : 0;
    out->p50_ms = pct_ms(all, total, 50);
    out->p99_ms = pct_ms(all, total, 99);
    out->max_ms = total > 0 ? (double)all[total - 1] / 1e6 : 0;
    double sum = 0;
    for (size_t i = 0; i < total; i++)
        sum += (double)all[i];
    out->mean_ms = total > 0 ? sum / (double)total / 1e6 : 0;
    rc = 0;
out:
    if (w != NULL)
        for (int i = 0; i < ph->threads; i++)
            free(w[i].lat_ns);
    free(w);
    free(all);
    pthread_cond_destroy(&sh.cv);
    pthread_mutex_destroy(&sh.mu);
    return rc;
}
