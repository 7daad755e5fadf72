/* Process-wide resource settings every service applies at start: file descriptors and the
 * allocator's retention of memory after spikes. */
#ifndef OMNICHAT_RESOURCES_H
#define OMNICHAT_RESOURCES_H

#include <stddef.h>

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit (a connection is a descriptor; the default
 * soft 1024 is what a connection flood exhausts first). Returns the soft limit now in force, or
 * -1 when it could not be read. Call once from main, before threads start.
 */
long oc_resources_raise_nofile(void);

/*
 * Tunes glibc malloc so memory goes back after a spike: at most 2 arenas (per-thread arenas
 * each kept hundreds of MB of freed request buffers) and a fixed 128 KiB mmap threshold (the
 * dynamic threshold otherwise grows to 32 MiB and large buffers stop going back to the
 * kernel). Skipped when the operator set MALLOC_ARENA_MAX or GLIBC_TUNABLES. Call first thing
 * in main, before threads start.
 */
void oc_resources_tune_malloc(void);

/* Resident set size of this process in bytes (0 if unknown). Thread-safe. */
size_t oc_resources_rss(void);

/*
 * Gives freed heap memory back to the kernel (malloc_trim) when the resident size grew by more
 * than `slack` bytes since the last trim. Returns the bytes released (by RSS), 0 when nothing
 * was done. Thread-safe; meant for a periodic housekeeping thread (it takes malloc's locks).
 */
size_t oc_resources_trim_if_grown(size_t slack);

#endif
