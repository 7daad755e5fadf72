/* Readiness: a dependency check run in the background and cached, /readyz, and the drain. */
#ifndef OMNICHAT_READY_H
#define OMNICHAT_READY_H

#include <stdbool.h>
#include <stddef.h>

#include "omnichat/err.h"
#include "omnichat/http.h"
#include "omnichat/rpc.h"

/*
 * Readiness says whether a service can do its work now (its database, or persistence, is
 * reachable); liveness (/healthz) says whether the process itself works. A probe storm must not
 * become a query storm, so the dependency is checked by one thread every period and probes read
 * the cached answer. Failures seen by the request path (oc_ready_fail) turn readiness off at
 * once; only the next successful check turns it on again. Once oc_ready_drain ran, the service
 * stays not ready ("shutting down") until it exits.
 *
 * While not ready, the gRPC server given to oc_ready_start answers grpc.health.v1.Health/Check
 * with NOT_SERVING (its calls are still served: a Health/Check is advice to load balancers).
 */
typedef struct oc_ready oc_ready_t;

/* Checks the dependency; true when usable, else false with a short reason in `reason` (n
 * bytes; no secrets: it is served on /readyz). Runs on the readiness thread and may block for a
 * bounded time (well under the period). */
typedef bool (*oc_ready_check_fn)(void *user, char *reason, size_t n);
/* Called on each change, with the reason when not ready ("" when ready): log it there.
 * Runs on whatever thread made the change, never under the module's lock. */
typedef void (*oc_ready_change_fn)(void *user, bool ready, const char *reason);

typedef struct oc_ready_opts {
    int period_ms; /* between two checks; 0: 1000 */
    oc_ready_check_fn check;
    oc_ready_change_fn on_change; /* optional */
    void *user;
} oc_ready_opts_t;

/* A tracker, not ready ("starting") and with no thread yet. NULL with err on OOM. */
oc_ready_t *oc_ready_create(const oc_ready_opts_t *opts, oc_error_t *err);
/*
 * Runs the first check now (so a service whose dependency is up is ready by the time it logs
 * "listening"), then starts the thread that checks every period. `rpc` (optional, must outlive
 * the tracker) then reports NOT_SERVING whenever the tracker is not ready. OC_E_INTERNAL when
 * the thread cannot start.
 */
oc_err_t oc_ready_start(oc_ready_t *r, oc_rpc_server_t *rpc, oc_error_t *err);
/* Whether ready now; when not, the reason in `reason` (optional, n bytes). Thread-safe. */
bool oc_ready_get(oc_ready_t *r, char *reason, size_t n);
/* A failure of the dependency seen elsewhere (a request could not reach it): not ready now,
 * until the next successful check. Thread-safe, does not block. */
void oc_ready_fail(oc_ready_t *r, const char *reason);
/*
 * The first step of a graceful stop: not ready for good ("shutting down"; Health/Check says
 * NOT_SERVING, /readyz 503), then sleeps drain_ms while everything else keeps serving, so that
 * load balancers take the endpoint out before new calls are refused. Blocks. NULL is fine.
 */
void oc_ready_drain(oc_ready_t *r, int drain_ms);
/* Stops the thread and frees. NULL is fine. */
void oc_ready_destroy(oc_ready_t *r);

/* GET /readyz; user is the oc_ready_t *. 200 "ready", or 503 "not ready: <reason>" (text). */
void oc_ready_http(void *user, const oc_http_request_t *req, oc_http_response_t *resp);

#endif
