/* File-descriptor limit and malloc tuning shared by every service process. */
#include "omnichat/resources.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

long oc_resources_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        /* Failing leaves the old limit, which is still a working one. */
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl.rlim_cur = rl.rlim_max;
    }
    return rl.rlim_cur == RLIM_INFINITY ? (long)0x7fffffff : (long)rl.rlim_cur;
}

void oc_resources_tune_malloc(void)
{
    if (getenv("MALLOC_ARENA_MAX") != NULL || getenv("GLIBC_TUNABLES") != NULL) return;
    /* Measured (scripts/grpc-memory.py bodies, 16 x 8 MiB hostile bodies, 32 workers):
     * default arenas: peak 257 MiB, 233 MiB kept; 2 arenas: 74 MiB, 56 MiB kept; 2 arenas and
     * a fixed mmap threshold: 96 MiB peak, 40 MiB kept. */
    mallopt(M_ARENA_MAX, 2);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
}

size_t oc_resources_rss(void)
{
    unsigned long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f == NULL) return 0;
    if (fscanf(f, "%lu %lu", &pages, &resident) != 2) resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

static atomic_size_t trimmed_at;

size_t oc_resources_trim_if_grown(size_t slack)
{
    size_t before = oc_resources_rss(), after;

    if (before == 0 || before < atomic_load(&trimmed_at) + slack) {
        /* Shrinking by itself moves the mark down, so the next growth is measured from here. */
        if (before != 0 && before < atomic_load(&trimmed_at)) atomic_store(&trimmed_at, before);
        return 0;
    }
    malloc_trim(0);
    after = oc_resources_rss();
    atomic_store(&trimmed_at, after);
    return before > after ? before - after : 0;
}
