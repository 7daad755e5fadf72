/* The retry worker: one claimer thread feeding a small queue of delivery threads. */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "omnichat/log.h"
#include "omnichat/util.h"
#include "outbound.h"

#define WORKER_THREADS_MAX 64

typedef struct job {
    uint8_t *packed; /* a packed ClaimedOutbound: each job owns its bytes */
    size_t len;
    char owner[CONN_LEASE_OWNER_MAX + 1]; /* the lease owner of the claim that leased it */
} job_t;

struct conn_worker {
    conn_t *c;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* jobs queued, or stop */
    pthread_cond_t idle; /* room in the queue, or stop */
    bool stop;
    job_t *queue; /* ring of capacity cap */
    size_t head, count, cap;
    size_t busy; /* delivery threads working on a job */
    pthread_t claimer;
    bool claimer_started;
    bool claim_failing; /* claimer thread only: log the first failure, not every poll */
    pthread_t threads[WORKER_THREADS_MAX];
    int nthreads;
};

static void deadline_in(struct timespec *ts, long long ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Claims at most `limit` messages and queues them; returns how many were claimed. */
static size_t claim(conn_worker_t *w, size_t limit)
{
    conn_t *c = w->c;
    PB(ClaimDueOutboundRequest) req = PB_INIT(CLAIM_DUE_OUTBOUND_REQUEST);
    PB(ClaimDueOutboundResponse) *resp = NULL;
    oc_arena_t *arena = oc_arena_create(0);
    char request_id[OC_UUID_STR_LEN + 1];
    char owner[CONN_LEASE_OWNER_MAX + 1];
    oc_error_t err;
    size_t n = 0;

    if (arena == NULL) return 0;
    oc_error_clear(&err);
    if (oc_uuid_v4(request_id) != OC_OK) request_id[0] = '\0';
    /* One owner per claim, never reused: a delivery thread of an earlier claim whose lease ran
     * out cannot complete what this claim took over (and the other way round). */
    if (conn_lease_owner(c->cfg.instance_id, owner) != OC_OK) {
        oc_arena_destroy(arena);
        return 0;
    }
    req.n_channel_types = c->p->n_channel_types;
    req.channel_types = (PB(ChannelType) *)c->p->channel_types;
    req.limit = (int32_t)limit;
    req.lease_owner = owner;
    req.lease_seconds = (int32_t)c->cfg.lease_seconds;
    if (conn_pst_call(c, 0, "ClaimDueOutbound", &req.base,
                      &omnichat__persistence__v1__claim_due_outbound_response__descriptor,
                      request_id, arena, (ProtobufCMessage **)&resp, &err) != OC_OK) {
        if (!w->claim_failing)
            OC_WARN("retry worker cannot claim", OC_LS("request_id", request_id),
                    OC_LS("detail", err.msg));
        w->claim_failing = true;
        oc_arena_destroy(arena);
        return 0;
    }
    if (w->claim_failing) OC_INFO("retry worker claims again");
    w->claim_failing = false;
    n = resp->n_claimed;
    if (n > 0) {
        oc_metric_inc(c->m_retry_claimed, NULL, (double)n);
        OC_DEBUG("claimed due messages", OC_LS("request_id", request_id),
                 OC_LI("count", (long long)n));
    }
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < n; i++) {
        job_t j;
        j.len = protobuf_c_message_get_packed_size(&resp->claimed[i]->base);
        j.packed = malloc(j.len > 0 ? j.len : 1);
        if (j.packed == NULL || w->count == w->cap) {
            free(j.packed); /* lease runs out; claimed again later */
            continue;
        }
        protobuf_c_message_pack(&resp->claimed[i]->base, j.packed);
        memcpy(j.owner, owner, sizeof j.owner);
        w->queue[(w->head + w->count) % w->cap] = j;
        w->count++;
    }
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    oc_arena_destroy(arena);
    return n;
}

static void *claimer_main(void *arg)
{
    conn_worker_t *w = arg;
    struct timespec ts;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        /* Claim only what idle threads can start now: a claimed message waiting in a queue
         * would burn its lease. */
        size_t free_slots = (size_t)w->nthreads - w->busy - w->count;
        size_t limit = free_slots < (size_t)w->c->cfg.worker_batch ? free_slots
                                                                   : (size_t)w->c->cfg.worker_batch;
        size_t got = 0;

        if (w->busy + w->count >= (size_t)w->nthreads) limit = 0;
        if (limit > 0) {
            pthread_mutex_unlock(&w->mu);
            got = claim(w, limit);
            pthread_mutex_lock(&w->mu);
        }
        if (w->stop) break;
        if (limit > 0 && got == limit)
            continue; /* more may be due: go on without waiting, once threads are free */
        deadline_in(&ts, w->c->cfg.worker_interval_ms);
        while (!w->stop) {
            int rc = pthread_cond_timedwait(&w->idle, &w->mu, &ts);
            if (rc == ETIMEDOUT) break;
            if (limit == 0 && w->busy + w->count < (size_t)w->nthreads)
                break; /* a thread came free after a full round: look again */
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void run_job(conn_worker_t *w, job_t *j)
{
    conn_t *c = w->c;
    oc_arena_t *arena = oc_arena_create(0);
    ProtobufCAllocator alloc;
    PB(ClaimedOutbound) * co;
    PB(Message) *out = NULL;
    char request_id[OC_UUID_STR_LEN + 1];
    oc_error_t err;

    if (arena == NULL) return;
    oc_error_clear(&err);
    oc_arena_protobuf_allocator(arena, &alloc);
    co = (PB(ClaimedOutbound) *)protobuf_c_message_unpack(
        &omnichat__persistence__v1__claimed_outbound__descriptor, &alloc, j->len, j->packed);
    /* A new id for each retried attempt: the id of the SendText that queued the message is
     * not stored, and an attempt is a request of its own. Its log lines carry the message_id,
     * as the SendText's do, which links them. */
    if (oc_uuid_v4(request_id) != OC_OK) request_id[0] = '\0';
    if (co != NULL && co->message != NULL &&
        conn_deliver(c, arena, request_id, j->owner, co->message, co->thread_key, &out, &err) !=
            OC_OK)
        OC_WARN("retry attempt not recorded", OC_LS("request_id", request_id),
                OC_LS("tenant_id", co->message->tenant_id),
                OC_LS("message_id", co->message->message_id), OC_LS("detail", err.msg));
    oc_arena_destroy(arena);
}

static void *delivery_main(void *arg)
{
    conn_worker_t *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && w->count == 0)
            pthread_cond_wait(&w->cond, &w->mu);
        if (w->stop) break;
        job_t j = w->queue[w->head];
        w->head = (w->head + 1) % w->cap;
        w->count--;
        w->busy++;
        pthread_mutex_unlock(&w->mu);
        run_job(w, &j);
        free(j.packed);
        pthread_mutex_lock(&w->mu);
        w->busy--;
        pthread_cond_signal(&w->idle);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

conn_worker_t *conn_worker_start(conn_t *c, oc_error_t *err)
{
    conn_worker_t *w = calloc(1, sizeof *w);
    pthread_condattr_t ca;

    if (w == NULL) {
        oc_error_set(err, OC_E_NOMEM, "out of memory");
        return NULL;
    }
    w->c = c;
    w->cap = (size_t)(c->cfg.worker_threads > 0 ? c->cfg.worker_threads : 1);
    if (w->cap > WORKER_THREADS_MAX) w->cap = WORKER_THREADS_MAX;
    w->queue = calloc(w->cap, sizeof *w->queue);
    if (w->queue == NULL) {
        free(w);
        oc_error_set(err, OC_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->idle, &ca);
    pthread_condattr_destroy(&ca);
    for (size_t i = 0; i < w->cap; i++) {
        if (pthread_create(&w->threads[i], NULL, delivery_main, w) != 0) break;
        w->nthreads++;
    }
    if (w->nthreads == (int)w->cap && pthread_create(&w->claimer, NULL, claimer_main, w) == 0)
        w->claimer_started = true;
    if (!w->claimer_started) {
        conn_worker_stop(w);
        oc_error_set(err, OC_E_INTERNAL, "retry worker: could not start threads");
        return NULL;
    }
    return w;
}

void conn_worker_stop(conn_worker_t *w)
{
    if (w == NULL) return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_cond_broadcast(&w->idle);
    pthread_mutex_unlock(&w->mu);
    if (w->claimer_started) pthread_join(w->claimer, NULL);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    for (size_t i = 0; i < w->count; i++)
        free(w->queue[(w->head + i) % w->cap].packed);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->idle);
    pthread_mutex_destroy(&w->mu);
    free(w->queue);
    free(w);
}
