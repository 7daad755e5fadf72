/* Unit tests for the pool's wait statistics (common/src/pg.c), without a database: a slot is
 * held by a connect that hangs on a listener which never answers, so a second take must wait. */
#include "omnichat/pg.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "omnichat/util.h"
#include "test_main.h"

/* A TCP listener that completes handshakes (the kernel's backlog) and never reads: libpq's
 * start-up then waits for an answer until connect_timeout. Returns the fd; *port is set. */
static int silent_listener(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static void *hold_slot(void *arg)
{
    oc_error_t err;

    oc_error_clear(&err);
    /* Holds the only slot while libpq waits for the silent server, then gives it back. */
    oc_pg_conn_t *c = oc_pg_acquire(arg, 5000, &err);
    oc_pg_release(arg, c);
    return NULL;
}

static void test_a_take_that_finds_every_slot_busy_is_counted_with_its_wait(void)
{
    char conninfo[160];
    int port = 0, fd = silent_listener(&port);
    size_t in_use = 0, size = 0;
    uint64_t waits = 99;
    double waited = -1;
    oc_error_t err;
    pthread_t t;

    CU_ASSERT_FATAL(fd >= 0);
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d connect_timeout=2 dbname=x user=x sslmode=disable", port);
    oc_error_clear(&err);
    oc_pg_pool_t *p = oc_pg_pool_create(conninfo, 1, NULL, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    oc_pg_pool_wait_stats(p, &waits, &waited);
    CU_ASSERT_EQUAL(waits, 0);
    CU_ASSERT_EQUAL(waited, 0);

    CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, hold_slot, p), 0);
    /* Until the holder has the slot (it keeps it for the 2 s connect timeout). */
    for (int i = 0; i < 2000 && in_use == 0; i++) {
        oc_pg_pool_stats(p, &in_use, &size);
        if (in_use == 0) usleep(1000);
    }
    CU_ASSERT_EQUAL(in_use, 1);
    CU_ASSERT_EQUAL(size, 1);

    int64_t t0 = oc_mono_us();
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_pg_acquire(p, 150, &err)); /* times out: no slot frees in time */
    CU_ASSERT_EQUAL(err.code, OC_E_UNAVAILABLE);
    double elapsed = (double)(oc_mono_us() - t0) / 1e6;
    oc_pg_pool_wait_stats(p, &waits, &waited);
    CU_ASSERT_EQUAL(waits, 1);
    CU_ASSERT(waited >= 0.14 && waited <= elapsed + 0.001);

    pthread_join(t, NULL);
    /* A free slot is taken without waiting: the counter does not move (the connect fails,
     * which is not a wait). */
    oc_error_clear(&err);
    close(fd); /* refused from now on: the take fails at once */
    CU_ASSERT_PTR_NULL(oc_pg_acquire(p, 150, &err));
    oc_pg_pool_wait_stats(p, &waits, NULL);
    CU_ASSERT_EQUAL(waits, 1);
    oc_pg_pool_destroy(p);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("pg_pool", NULL, NULL);
    CU_add_test(s, "a take that finds every slot busy is counted with its wait",
                test_a_take_that_finds_every_slot_busy_is_counted_with_its_wait);
    int failed = oc_test_run();
    return failed ? 1 : 0;
}
