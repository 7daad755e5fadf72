/* grpc.health.v1.Health/Watch: a server stream per watcher that carries the serving status
 * now and again at every change, for clients and load balancers that watch instead of polling
 * Check (grpc-health-probe -watch, Envoy, gRPC's own client-side health checking). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc_internal.h"

/* Watchers per server: a watch costs a stream (about 16 KB) for as long as the client keeps
 * it, so past this many the new one is refused with RESOURCE_EXHAUSTED. */
#define MAX_WATCHERS 1024
/* Statuses queued per watcher: only the latest matters, so a slow reader is sent the current
 * status once it has room (on_writable) instead of every change in between. */
#define WATCH_QUEUE 2

typedef struct watcher {
    oc_rpc_stream_t *st; /* holds a reference while registered */
    bool known;          /* the service name is served: it follows the status */
    bool liveness;       /* OC_RPC_HEALTH_LIVENESS: SERVING until shutdown */
    bool behind;         /* a change found the queue full: send the current status when writable */
    Grpc__Health__V1__HealthCheckResponse__ServingStatus last; /* the last status queued */
} watcher_t;

struct rpc_health {
    pthread_mutex_t mu;
    char *const *services;
    size_t nservices;
    bool serving;
    bool closing; /* shutdown began: no new watcher */
    watcher_t *w[MAX_WATCHERS];
    size_t n;
};

rpc_health_t *rpc_health_create(char *const *services, size_t nservices, bool serving)
{
    rpc_health_t *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    pthread_mutex_init(&h->mu, NULL);
    h->services = services;
    h->nservices = nservices;
    h->serving = serving;
    return h;
}

void rpc_health_destroy(rpc_health_t *h)
{
    if (!h) return;
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static bool known_service(const rpc_health_t *h, const char *name)
{
    if (name[0] == '\0') return true;
    for (size_t i = 0; i < h->nservices; i++)
        if (strcmp(h->services[i], name) == 0) return true;
    return false;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus status_of(bool known, bool serving)
{
    if (!known) return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    return serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/* Queues one status; false when the queue is full (the caller marks the watcher behind). */
static bool send_status(oc_rpc_stream_t *st, Grpc__Health__V1__HealthCheckResponse__ServingStatus v)
{
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = v;
    return oc_rpc_stream_send(st, &r.base) != OC_E_AGAIN;
}

/*
 * A change of status, sent to every watcher of a served name. The stream calls happen outside
 * the lock, on references taken under it: a watcher that goes away meanwhile is only sent to in
 * vain (after on_done a send fails), never freed under us.
 */
void rpc_health_set(rpc_health_t *h, bool serving)
{
    oc_rpc_stream_t *snap[MAX_WATCHERS];
    size_t n = 0;

    if (!h) return;
    pthread_mutex_lock(&h->mu);
    bool changed = h->serving != serving;
    h->serving = serving;
    if (changed) {
        for (size_t i = 0; i < h->n; i++) {
            if (!h->w[i]->known || h->w[i]->liveness) continue;
            h->w[i]->last = status_of(true, serving);
            oc_rpc_stream_ref(h->w[i]->st);
            snap[n++] = h->w[i]->st;
        }
    }
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++) {
        if (!send_status(snap[i], status_of(true, serving))) {
            pthread_mutex_lock(&h->mu);
            for (size_t j = 0; j < h->n; j++)
                if (h->w[j]->st == snap[i]) h->w[j]->behind = true;
            pthread_mutex_unlock(&h->mu);
        }
        oc_rpc_stream_unref(snap[i]);
    }
}

static oc_err_t watch_start(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req)
{
    rpc_health_t *h = ctx->user;
    const Grpc__Health__V1__HealthCheckRequest *r = (const void *)req;
    watcher_t *w = oc_arena_alloc(ctx->arena, sizeof(*w));

    if (!w) return oc_error_set(&ctx->err, OC_E_NOMEM, "health: out of memory");
    w->st = st;
    w->liveness = r->service && strcmp(r->service, OC_RPC_HEALTH_LIVENESS) == 0;
    w->known = w->liveness || known_service(h, r->service ? r->service : "");
    w->behind = false;
    pthread_mutex_lock(&h->mu);
    if (h->closing || h->n == MAX_WATCHERS) {
        bool closing = h->closing;
        pthread_mutex_unlock(&h->mu);
        return closing ? oc_error_set(&ctx->err, OC_E_UNAVAILABLE, "health: shutting down")
                       : oc_error_set(&ctx->err, OC_E_TOO_LARGE,
                                      "health: too many watchers (at most %d)", MAX_WATCHERS);
    }
    oc_rpc_stream_ref(st);
    h->w[h->n++] = w;
    /* The first status is sent under the lock, so no change can overtake it. */
    w->last = status_of(w->known, w->liveness || h->serving);
    send_status(st, w->last);
    pthread_mutex_unlock(&h->mu);
    return OC_OK;
}

static void watch_writable(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx)
{
    rpc_health_t *h = ctx->user;

    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++) {
        watcher_t *w = h->w[i];
        if (w->st != st || !w->behind) continue;
        w->last = status_of(w->known, w->liveness || h->serving);
        w->behind = !send_status(st, w->last);
    }
    pthread_mutex_unlock(&h->mu);
}

/* Shutdown: the watcher learns NOT_SERVING (the server stops serving every service), unless
 * that was the last status it was sent (the service turned not ready first), then the stream
 * ends with UNAVAILABLE as every stream does. */
static void watch_shutdown(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx)
{
    rpc_health_t *h = ctx->user;
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    bool send = true;

    r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    pthread_mutex_lock(&h->mu);
    h->closing = true;
    for (size_t i = 0; i < h->n; i++) {
        watcher_t *w = h->w[i];
        if (w->st != st) continue;
        r.status = status_of(w->known, false);
        send = w->behind || w->last != r.status;
    }
    pthread_mutex_unlock(&h->mu);
    oc_rpc_stream_end(st, OC_E_UNAVAILABLE, "server shutting down", send ? &r.base : NULL);
}

static void watch_done(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, int grpc_status)
{
    rpc_health_t *h = ctx->user;
    bool found = false;

    (void)grpc_status;
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n; i++) {
        if (h->w[i]->st != st) continue;
        h->w[i] = h->w[--h->n];
        found = true;
        break;
    }
    pthread_mutex_unlock(&h->mu);
    if (found) oc_rpc_stream_unref(st);
}

const oc_rpc_stream_handlers_t rpc_health_watch_handlers = {
    .client_streaming = false,
    .queue_max = WATCH_QUEUE,
    .on_start = watch_start,
    .on_writable = watch_writable,
    .on_shutdown = watch_shutdown,
    .on_done = watch_done,
};
