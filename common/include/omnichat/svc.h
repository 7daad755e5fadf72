/* What every Omnichat service process shares: start-up, signals, health/metrics endpoints and
 * the per-call RPC metrics and access log. */
#ifndef OMNICHAT_SVC_H
#define OMNICHAT_SVC_H

#include <stdbool.h>
#include <stdint.h>

#include "omnichat/buf.h"
#include "omnichat/config.h"
#include "omnichat/http.h"
#include "omnichat/metrics.h"
#include "omnichat/rpc.h"

/* Blocks SIGINT and SIGTERM (oc_svc_wait_for_signal takes them) and ignores SIGPIPE. Call
 * first thing in main: threads made later (gRPC's included) inherit the mask. */
void oc_svc_block_signals(void);
/* Waits for SIGINT or SIGTERM and returns its name ("SIGTERM"). Blocks. */
const char *oc_svc_wait_for_signal(void);

/* Extra validation across options; appends one line per problem and returns false. */
typedef bool (*oc_svc_check_fn)(const void *cfg, oc_buf_t *problems);

/*
 * The start-up every service shares: --help and --version print and stop; the option table is
 * loaded from flags and environment (oc_config_load) and `check` (optional) adds its own
 * problems; --check-config prints "configuration ok" or every problem and stops with 0 or 1; an
 * invalid configuration prints every problem and stops with 2. Returns true when the service
 * should run (cfg filled; free it with oc_config_free), false with *exit_code set otherwise
 * (cfg already freed). Call from main only.
 */
bool oc_svc_configure(const char *program, const char *version, const char *usage,
                      const oc_config_option_t *opts, size_t nopts, void *cfg, int argc,
                      char **argv, oc_svc_check_fn check, int *exit_code);

/* The RPC families of /metrics: omnichat_rpc_requests_total{method,code} and
 * omnichat_rpc_latency_seconds{method}. */
typedef struct oc_svc_rpc_metrics {
    oc_metric_t *total;
    oc_metric_t *latency;
} oc_svc_rpc_metrics_t;

/* Registers both families in `registry`. OC_E_NOMEM on failure. */
oc_err_t oc_svc_rpc_metrics_init(oc_svc_rpc_metrics_t *m, oc_metrics_t *registry);

/*
 * Records one finished call: metrics by method (unknown methods share one "unknown" label, so
 * clients cannot mint label values) and an access-log line with request id, tenant, code and
 * latency: debug level, warn with the error detail for UNKNOWN, INTERNAL and UNAVAILABLE (ours
 * to look at). Thread-safe; use it from an oc_rpc_server_opts_t.on_complete hook.
 */
void oc_svc_rpc_record(const oc_svc_rpc_metrics_t *m, const oc_rpc_ctx_t *ctx, int status,
                       int64_t latency_us);

/* HTTP handlers: GET /healthz answers {"status":"ok"} (user unused); GET /metrics renders the
 * registry passed as user (an oc_metrics_t *). */
void oc_svc_http_healthz(void *user, const oc_http_request_t *req, oc_http_response_t *resp);
void oc_svc_http_metrics(void *user, const oc_http_request_t *req, oc_http_response_t *resp);
/* GET /healthz for a process that serves gRPC: user is its oc_rpc_server_t *. 200
 * {"status":"ok"} while the server's self-probe of the real gRPC path succeeds (a new
 * connection to its own port, Health/Check), 503 {"status":"unavailable","detail":...} when it
 * fails, so an orchestrator restarts a service that cannot accept or serve calls. */
void oc_svc_http_healthz_rpc(void *user, const oc_http_request_t *req, oc_http_response_t *resp);

#endif
