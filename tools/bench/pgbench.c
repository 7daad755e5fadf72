/* The write reference: pgbench doing one INSERT ... ON CONFLICT DO NOTHING RETURNING per call. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

/*
 * bench.bench_messages is shaped like omnichat.messages (same columns, checks, unique key and
 * indexes; made and filled with a copy of the seeded rows by scripts/bench-persistence.sh).
 * Each transaction is one plain single-row insert of an inbound text message of the same size
 * as the service's, into one of 250 conversations of one of the 20 tenants, with a UUIDv7 id.
 * "new": a random 63-bit key, never seen before. "dup": the first message of a seeded
 * conversation, which always exists, so the insert finds the key and writes nothing.
 */
static const char INSERT_HEAD[] =
    "\\set t random(1, 20)\n"
    "\\set c random(2, 251)\n"
    "%s"
    "INSERT INTO bench.bench_messages (tenant_id, id, channel_account_id, conversation_id, "
    "contact_id, direction, idempotency_key, external_message_id, sender_type, sender_id, "
    "sender_display_name, content_type, content_text, status, channel_timestamp) "
    "VALUES (md5('omnichat-bench-tenant-' || :t)::uuid, bench.uuid7(clock_timestamp()), "
    "(CASE WHEN (:c)::int %% 2 = 0 THEN md5('omnichat-bench-line-' || :t) "
    "ELSE md5('omnichat-bench-fb-' || :t) END)::uuid, "
    "md5('omnichat-bench-conv-' || :t || '-' || :c)::uuid, "
    "md5('omnichat-bench-contact-' || :t || '-' || :c)::uuid, 'inbound', %s, %s, 'contact', "
    "'U4af4980629d2b5e8c0e4d6b1a9f7c3e21', 'Customer', 'text', "
    "'Hello! Could you check order 1234567 for me? The tracking page has not changed since "
    "Monday.', 'received', now()) "
    "ON CONFLICT (tenant_id, channel_account_id, direction, idempotency_key) DO NOTHING "
    "RETURNING id;\n";

static int write_script(const char *dir, const char *name, const char *extra, const char *key,
                        char *err, size_t errlen)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s.sql", dir, name);
    f = fopen(path, "w");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, INSERT_HEAD, extra, key, key);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int bench_pgbench_scripts(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    if (write_script(dir, "new", "\\set k random(1, 9000000000000000000)\n",
                     "'pgb-' || :client_id || '-' || :k", err, errlen) != 0)
        return -1;
    return write_script(dir, "dup", "", "'m' || :t || '-' || :c || '-1'", err, errlen);
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

/* Reads every transaction latency (microseconds, third field) of the per-transaction logs. */
static void read_logs(const char *logdir, bench_pgbench_t *out)
{
    DIR *d = opendir(logdir);
    struct dirent *de;
    long *v = NULL;
    size_t n = 0, cap = 0;
    double sum = 0;

    if (d == NULL) return;
    while ((de = readdir(d)) != NULL) {
        char path[4096], line[256];
        FILE *f;

        if (strncmp(de->d_name, "log.", 4) != 0) continue;
        if (snprintf(path, sizeof path, "%s/%s", logdir, de->d_name) >= (int)sizeof path) continue;
        f = fopen(path, "r");
        if (f == NULL) continue;
        while (fgets(line, sizeof line, f) != NULL) {
            long client, xact, us;
            if (sscanf(line, "%ld %ld %ld", &client, &xact, &us) != 3) continue;
            if (n == cap) {
                size_t ncap = cap != 0 ? cap * 2 : 65536;
                long *p = realloc(v, ncap * sizeof *p);
                if (p == NULL) break;
                v = p;
                cap = ncap;
            }
            v[n++] = us;
            sum += (double)us;
        }
        fclose(f);
    }
    closedir(d);
    if (n > 0) {
        qsort(v, n, sizeof *v, cmp_long);
        size_t r50 = (n * 50 + 99) / 100, r99 = (n * 99 + 99) / 100;
        out->p50_ms = (double)v[(r50 > 0 ? r50 : 1) - 1] / 1e3;
        out->p99_ms = (double)v[(r99 > 0 ? r99 : 1) - 1] / 1e3;
        out->max_ms = (double)v[n - 1] / 1e3;
        out->mean_ms = sum / (double)n / 1e3;
    }
    free(v);
}

/* Parses pgbench's summary: tps, processed and failed transactions. */
static void read_summary(const char *path, bench_pgbench_t *out)
{
    char line[512];
    FILE *f = fopen(path, "r");

    if (f == NULL) return;
    while (fgets(line, sizeof line, f) != NULL) {
        const char *p;
        if ((p = strstr(line, "tps = ")) != NULL && strstr(line, "without initial") != NULL)
            out->tps = strtod(p + 6, NULL);
        else if ((p = strstr(line, "number of transactions actually processed: ")) != NULL)
            out->xacts = strtol(p + 43, NULL, 10);
        else if ((p = strstr(line, "number of failed transactions: ")) != NULL)
            out->failed = strtol(p + 31, NULL, 10);
    }
    fclose(f);
}

void bench_pgbench_run(const char *pgbench, const char *dsn, const char *dir, const char *script,
                       int clients, int seconds, pid_t pg_pid, bench_pgbench_t *out)
{
    char logdir[4096], prefix[4200], outpath[4200], scriptpath[4200];
    char cs[16], js[16], ts[16];
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status = 0, rc;

    memset(out, 0, sizeof *out);
    out->clients = clients;
    snprintf(logdir, sizeof logdir, "%s/%s-c%d", dir, script, clients);
    if (mkdir(logdir, 0755) != 0 && errno != EEXIST) {
        snprintf(out->error, sizeof out->error, "%.180s: %s", logdir, strerror(errno));
        return;
    }
    /* A rerun in the same directory must not read the previous run's logs. */
    DIR *d = opendir(logdir);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL)
            if (strncmp(de->d_name, "log.", 4) == 0) {
                char p[4400];
                snprintf(p, sizeof p, "%s/%s", logdir, de->d_name);
                unlink(p);
            }
        closedir(d);
    }
    snprintf(prefix, sizeof prefix, "--log-prefix=%s/log", logdir);
    snprintf(outpath, sizeof outpath, "%s/pgbench.out", logdir);
    snprintf(scriptpath, sizeof scriptpath, "%s/%s.sql", dir, script);
    snprintf(cs, sizeof cs, "%d", clients);
    snprintf(js, sizeof js, "%d", clients < 2 ? clients : 2);
    snprintf(ts, sizeof ts, "%d", seconds);
    char *argv[] = {(char *)pgbench, "-n", "-M",   "prepared",  "-c", cs, "-j", js, "-T", ts, "-f",
                    scriptpath,      "-l", prefix, (char *)dsn, NULL};

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    bench_cpu_t cpu0, cpu1;
    struct rusage ru;
    bench_cpu_sample(0, pg_pid, &cpu0);
    int64_t t0 = bench_now_ns();
    rc = posix_spawn(&pid, pgbench, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        snprintf(out->error, sizeof out->error, "could not run %s: %s", pgbench, strerror(rc));
        return;
    }
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR)
        ;
    bench_cpu_sample(0, pg_pid, &cpu1);
    out->seconds = (double)(bench_now_ns() - t0) / 1e9;
    out->cpu_pgbench_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    out->cpu_pg_s = cpu1.pg_s - cpu0.pg_s;
    out->cpu_other_s = cpu1.machine_s - cpu0.machine_s - (cpu1.self_s - cpu0.self_s) -
                       out->cpu_pgbench_s - out->cpu_pg_s;
    if (out->cpu_other_s < 0) out->cpu_other_s = 0;
    read_summary(outpath, out);
    read_logs(logdir, out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out->tps <= 0) {
        snprintf(out->error, sizeof out->error, "pgbench failed (exit %d); see %.180s",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1, outpath);
        return;
    }
    out->ok = true;
}
