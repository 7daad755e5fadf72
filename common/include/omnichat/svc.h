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

/*
 * Core dumps carry whatever memory holds: database passwords, keys, tokens. oc_svc_configure
 * makes the process non-dumpable first thing (prctl PR_SET_DUMPABLE 0, which also keeps other
 * processes of the same user from ptrace or /proc/<pid>/mem, and RLIMIT_CORE soft limit 0),
 * before any secret file is read. Key material additionally lives in oc_secret_alloc pages
 * (MADV_DONTDUMP). Call from main only.
 *
 * oc_svc_forbid_core_dumps does the first part (oc_svc_configure calls it; exposed for tools);
 * oc_svc_allow_core_dumps undoes it for debugging (an explicit opt-in such as
 * --allow-core-dumps): dumpable again, RLIMIT_CORE back to what it was at start. The
 * MADV_DONTDUMP pages stay out of the dump. Both return OC_E_INTERNAL with the errno text.
 */
oc_err_t oc_svc_forbid_core_dumps(oc_error_t *err);
oc_err_t oc_svc_allow_core_dumps(oc_error_t *err);
/* The --allow-core-dumps opt-in of a service's main: oc_svc_allow_core_dumps, with a warning
 * that says what the dump will hold (or why dumps stay off). */
void oc_svc_opt_in_core_dumps(void);

/* Extra validation across options; appends one line per problem and returns false. */
typedef bool (*oc_svc_check_fn)(const void *cfg, oc_buf_t *problems);

/*
 * The start-up every service shares: the process is made non-dumpable (above; a failure there
 * stops with 1); --help and --version print and stop; the option table is
 * loaded from flags and environment (oc_config_load) and `check` (optional) adds its own
 * problems; --check-config prints "configuration ok" or every problem and stops with 0 or 1; an
 * invalid configuration prints every problem and stops with 2. Returns true when the service
 * should run (cfg filled; free it with oc_config_free), false with *exit_code set otherwise
 * (cfg already freed). Call from main only.
 */
bool oc_svc_configure(const char *program, const char *version, const char *usage,
                      const oc_config_option_t *opts, size_t nopts, void *cfg, int argc,
                      char **argv, oc_svc_check_fn check, int *exit_code);

/* The RPC families of /metrics: omnichat_rpc_requests_total{method,code},
 * omnichat_rpc_latency_seconds{method,code} and omnichat_rpc_denied_total{method,peer}. */
typedef struct oc_svc_rpc_metrics {
    oc_metric_t *total;
    oc_metric_t *latency;
    oc_metric_t *denied; /* omnichat_rpc_denied_total{method,peer} */
} oc_svc_rpc_metrics_t;

/* Registers the three families in `registry`, and the process and build families
 * (oc_metrics_process, with the version oc_svc_configure was given). OC_E_NOMEM on failure. */
oc_err_t oc_svc_rpc_metrics_init(oc_svc_rpc_metrics_t *m, oc_metrics_t *registry);

/*
 * Records one finished call: metrics by method (unknown methods share one "unknown" label, so
 * clients cannot mint label values) and an access-log line with request id, tenant, code and
 * latency: debug level, warn with the error detail for UNKNOWN, INTERNAL and UNAVAILABLE (ours
 * to look at). A call refused by its method's roles is a warning with the peer's identity, and
 * counted in omnichat_rpc_denied_total. Thread-safe; use it from an
 * oc_rpc_server_opts_t.on_complete hook.
 */
void oc_svc_rpc_record(const oc_svc_rpc_metrics_t *m, const oc_rpc_ctx_t *ctx, int status,
                       int64_t latency_us);

/*
 * The TLS options every service shares. Embed the struct in the config and add
 * OC_SVC_TLS_OPTIONS(config_type, member) to the option table. All three files set: mutual TLS
 * on the service's gRPC server and on its gRPC clients; none: plaintext (the sandbox).
 */
typedef struct oc_svc_tls_config {
    char *cert_file;
    char *key_file;
    char *ca_file;
    char *client_roles;
} oc_svc_tls_config_t;

#define OC_SVC__STR_OPT(name, def, type, field, help, validate) \
    { \
        name, OC_CFG_STR, def, 0, 0, 0, offsetof(type, field), help, validate \
    }
#define OC_SVC_TLS_OPTIONS(type, member) \
    OC_SVC__STR_OPT("tls-cert-file", NULL, type, member.cert_file, \
                    "PEM certificate this process presents to gRPC peers (with --tls-key-file " \
                    "and --tls-ca-file: mutual TLS; none of the three: plaintext)", \
                    NULL), \
        OC_SVC__STR_OPT("tls-key-file", NULL, type, member.key_file, \
                        "PEM private key of --tls-cert-file (files are re-read when they change)", \
                        NULL), \
        OC_SVC__STR_OPT("tls-ca-file", NULL, type, member.ca_file, \
                        "PEM CA certificate(s) that gRPC peers' certificates must chain to", \
                        NULL), \
        OC_SVC__STR_OPT("tls-client-roles", "", type, member.client_roles, \
                        "client certificate SAN to role: name=role,... (connector, inbox, " \
                        "operator)", \
                        oc_rpc_roles_valid)

/* The rpc TLS settings in *out, or NULL for plaintext. */
const oc_rpc_tls_t *oc_svc_tls(const oc_svc_tls_config_t *c, oc_rpc_tls_t *out);
/* All three files or none, and the files usable as start-up will use them (for the config
 * check). Appends one line per problem and returns false. */
bool oc_svc_tls_check(const oc_svc_tls_config_t *c, oc_buf_t *problems);

/* HTTP handler: GET /metrics renders the registry passed as user (an oc_metrics_t *). */
void oc_svc_http_metrics(void *user, const oc_http_request_t *req, oc_http_response_t *resp);
/* GET /healthz for a process that serves gRPC: user is its oc_rpc_server_t *. 200
 * {"status":"ok"} while the server's self-probe of the real gRPC path succeeds (a new
 * connection to its own port, Health/Check), 503 {"status":"unavailable","detail":...} when it
 * fails, so an orchestrator restarts a service that cannot accept or serve calls. */
void oc_svc_http_healthz_rpc(void *user, const oc_http_request_t *req, oc_http_response_t *resp);

/* An oc_ready_opts_t.on_change that logs each change: "ready" (info), "not ready" with the
 * reason (warn). user is unused. */
void oc_svc_log_ready_change(void *user, bool ready, const char *reason);

#endif
