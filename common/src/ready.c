/* Readiness: one background check of a dependency, cached for probes, and the shutdown drain. */
#include "omnichat/ready.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REASON_MAX 160

struct oc_ready {
    oc_ready_opts_t opts;
    oc_rpc_server_t *rpc;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* stop */
    pthread_t thread;
    bool thread_started;
    bool stop;
    bool ready;    /* under mu */
    bool draining; /* under mu; sticky */
    char reason[REASON_MAX];
};

static void ms_from_now(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/*
 * Moves to `ready` (with `reason` when not) unless draining, where nothing but "shutting down"
 * holds. The Health/Check status and the change hook follow outside the lock; two racing
 * changes may reach the hook out of order, but the gRPC status is set from the state read
 * under the lock, so it always ends as the state ends.
 */
static void set_state(oc_ready_t *r, bool ready, const char *reason)
{
    bool changed, now;
    char why[REASON_MAX];

    pthread_mutex_lock(&r->mu);
    if (r->draining) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    changed = r->ready != ready || (!ready && strcmp(r->reason, reason) != 0);
    r->ready = ready;
    snprintf(r->reason, sizeof r->reason, "%s", ready ? "" : reason);
    snprintf(why, sizeof why, "%s", r->reason);
    now = r->ready;
    if (r->rpc != NULL) oc_rpc_server_set_serving(r->rpc, now);
    pthread_mutex_unlock(&r->mu);
    if (changed && r->opts.on_change != NULL) r->opts.on_change(r->opts.user, now, why);
}

static void check_once(oc_ready_t *r)
{
    char reason[REASON_MAX] = "";
    bool ok = r->opts.check(r->opts.user, reason, sizeof reason);

    set_state(r, ok, reason[0] != '\0' ? reason : "dependency unavailable");
}

static void *ready_main(void *arg)
{
    oc_ready_t *r = arg;
    struct timespec until;

    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        ms_from_now(&until, r->opts.period_ms);
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) != ETIMEDOUT) {
        }
        if (r->stop || r->draining) continue;
        pthread_mutex_unlock(&r->mu);
        check_once(r);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

oc_ready_t *oc_ready_create(const oc_ready_opts_t *opts, oc_error_t *err)
{
    oc_ready_t *r = calloc(1, sizeof *r);
    pthread_condattr_t attr;

    if (r == NULL) {
        oc_error_set(err, OC_E_NOMEM, "readiness: out of memory");
        return NULL;
    }
    r->opts = *opts;
    if (r->opts.period_ms <= 0) r->opts.period_ms = 1000;
    snprintf(r->reason, sizeof r->reason, "starting");
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_init(&attr);
    /* The wall clock may jump; the period must not. */
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &attr);
    pthread_condattr_destroy(&attr);
    return r;
}

oc_err_t oc_ready_start(oc_ready_t *r, oc_rpc_server_t *rpc, oc_error_t *err)
{
    int rc;

    pthread_mutex_lock(&r->mu);
    r->rpc = rpc;
    if (rpc != NULL) oc_rpc_server_set_serving(rpc, r->ready && !r->draining);
    pthread_mutex_unlock(&r->mu);
    check_once(r);
    rc = pthread_create(&r->thread, NULL, ready_main, r);
    if (rc != 0)
        return oc_error_set(err, OC_E_INTERNAL, "readiness: could not start a thread: %s",
                            strerror(rc));
    r->thread_started = true;
    return OC_OK;
}

bool oc_ready_get(oc_ready_t *r, char *reason, size_t n)
{
    bool ok;

    pthread_mutex_lock(&r->mu);
    ok = r->ready && !r->draining;
    if (reason != NULL && n > 0) snprintf(reason, n, "%s", ok ? "" : r->reason);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

void oc_ready_fail(oc_ready_t *r, const char *reason)
{
    if (r != NULL) set_state(r, false, reason);
}

void oc_ready_drain(oc_ready_t *r, int drain_ms)
{
    struct timespec ts;

    if (r == NULL) return;
    pthread_mutex_lock(&r->mu);
    r->draining = true;
    r->ready = false;
    snprintf(r->reason, sizeof r->reason, "shutting down");
    if (r->rpc != NULL) oc_rpc_server_set_serving(r->rpc, false);
    pthread_mutex_unlock(&r->mu);
    if (r->opts.on_change != NULL) r->opts.on_change(r->opts.user, false, "shutting down");
    if (drain_ms <= 0) return;
    ts.tv_sec = drain_ms / 1000;
    ts.tv_nsec = (long)(drain_ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void oc_ready_destroy(oc_ready_t *r)
{
    if (r == NULL) return;
    if (r->thread_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void oc_ready_http(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    char reason[REASON_MAX];

    (void)req;
    resp->content_type = "text/plain; charset=utf-8";
    if (oc_ready_get(user, reason, sizeof reason)) {
        oc_buf_appends(&resp->body, "ready\n");
        return;
    }
    resp->status = 503;
    oc_buf_appendf(&resp->body, "not ready: %s\n", reason);
}
