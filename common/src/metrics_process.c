/* The process_* families of the standard Prometheus clients, read from /proc/self at each
 * scrape, and omnichat_build_info. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "omnichat/metrics.h"

/* Filled by the build (cmake/revision.cmake); "unknown" outside a git checkout. */
extern const char oc_build_revision[];

typedef struct proc_metrics {
    oc_metric_t *cpu, *rss, *vsize, *open_fds, *max_fds, *start_time;
} proc_metrics_t;

/* Boot time (seconds since the epoch) from /proc/stat's btime line; 0 when unreadable. */
static double boot_time(void)
{
    char line[256];
    double bt = 0;
    FILE *f = fopen("/proc/stat", "re");

    if (f == NULL) return 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return bt;
}

/*
 * utime, stime (clock ticks), starttime (ticks since boot), vsize (bytes) and rss (pages) of
 * /proc/self/stat. The command name, field 2, may hold spaces and parentheses: parse from the
 * last ')'. False when the file cannot be read.
 */
static bool read_stat(unsigned long long *utime, unsigned long long *stime,
                      unsigned long long *start, unsigned long long *vsize, long long *rss)
{
    char buf[1024];
    size_t n;
    char *p;
    FILE *f = fopen("/proc/self/stat", "re");

    if (f == NULL) return false;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL) return false;
    /* Fields 3.. after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize
     * rss. */
    return sscanf(p + 2,
                  "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                  "%*d %llu %llu %lld",
                  utime, stime, start, vsize, rss) == 5;
}

/* Entries of /proc/self/fd, less the one opendir itself holds; -1 when unreadable. */
static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (d == NULL) return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1;
}

static void on_render(void *arg)
{
    proc_metrics_t *pm = arg;
    unsigned long long utime, stime, start, vsize;
    long long rss;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    struct rlimit lim;
    long fds = count_fds();

    if (ticks > 0 && read_stat(&utime, &stime, &start, &vsize, &rss)) {
        oc_metric_set(pm->cpu, NULL, (double)(utime + stime) / (double)ticks);
        oc_metric_set(pm->vsize, NULL, (double)vsize);
        if (page > 0) oc_metric_set(pm->rss, NULL, (double)rss * (double)page);
    }
    if (fds >= 0) oc_metric_set(pm->open_fds, NULL, (double)fds);
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0)
        oc_metric_set(pm->max_fds, NULL,
                      lim.rlim_cur == RLIM_INFINITY ? 1e308 : (double)lim.rlim_cur);
}

oc_err_t oc_metrics_process(oc_metrics_t *m, const char *version)
{
    proc_metrics_t *pm = calloc(1, sizeof *pm);
    oc_metric_t *info;
    unsigned long long utime, stime, start, vsize;
    long long rss;
    long ticks = sysconf(_SC_CLK_TCK);
    double bt;

    if (pm == NULL) return OC_E_NOMEM;
    pm->cpu = oc_metrics_counter(m, "process_cpu_seconds_total",
                                 "Total user and system CPU time spent in seconds.", NULL, 0);
    pm->rss = oc_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.",
                               NULL, 0);
    pm->vsize = oc_metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                 NULL, 0);
    pm->open_fds =
        oc_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.", NULL, 0);
    pm->max_fds =
        oc_metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.", NULL, 0);
    pm->start_time =
        oc_metrics_gauge(m, "process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.", NULL, 0);
    info = oc_metrics_gauge(m, "omnichat_build_info", "always 1; the labels name the running build",
                            (const char *const[]){"version", "revision"}, 2);
    if (pm->cpu == NULL || pm->rss == NULL || pm->vsize == NULL || pm->open_fds == NULL ||
        pm->max_fds == NULL || pm->start_time == NULL || info == NULL) {
        free(pm);
        return OC_E_NOMEM;
    }
    /* Registration runs at start-up, so this is the process's own start to within a tick;
     * reading it here keeps on_render free of shared writes (scrapes may run in parallel). */
    if (ticks > 0 && read_stat(&utime, &stime, &start, &vsize, &rss) && (bt = boot_time()) > 0)
        oc_metric_set(pm->start_time, NULL, bt + (double)start / (double)ticks);
    oc_metric_set(info,
                  (const char *const[]){version != NULL && version[0] != '\0' ? version : "unknown",
                                        oc_build_revision},
                  1);
    /* The registry frees pm with itself. */
    return oc_metrics_on_render_owned(m, on_render, pm);
}
