/* The serve() every service shares: create, start, log the ports, wait for a signal, stop. */
#ifndef OMNICHAT_SVC_RUN_H
#define OMNICHAT_SVC_RUN_H

#include "omnichat/err.h"

/* A service as oc_svc_run drives it. */
typedef struct oc_svc_ops {
    /* Loads everything the service needs (nothing listens yet); NULL with err. */
    void *(*create)(void *cfg, oc_error_t *err);
    /* Binds and starts; fills the bound ports (ports[i] named port_names[i]). */
    oc_err_t (*start)(void *svc, int ports[2], oc_error_t *err);
    /* Stops serving gracefully; then destroy frees everything. Both accept NULL. */
    void (*stop)(void *svc);
    void (*destroy)(void *svc);
    /* Optional: logs what an operator wants to see once the service runs. */
    void (*started)(void *svc, void *cfg);
    const char *port_names[2]; /* log fields of the two ports: "grpc_port", "http_port" */
} oc_svc_ops_t;

/*
 * Creates and starts the service, logs "listening" with both ports and `version` (the line
 * tests and operators wait for), waits for SIGINT or SIGTERM (blocked beforehand with
 * oc_svc_block_signals), then stops and destroys it. Returns the exit code: 0, or 1 when the
 * service could not start (logged with the reason). Blocks. Call from main only.
 */
int oc_svc_run(const oc_svc_ops_t *ops, void *cfg, const char *version);

#endif
