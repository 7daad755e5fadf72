/* The connector service: options, metrics, servers and the retry worker around a provider. */
#ifndef CONN_SERVICE_H
#define CONN_SERVICE_H

#include "conn.h"

typedef struct conn_service conn_service_t;

/* Loads the vault, creates the clients, the caches, the metrics and the provider's state
 * (nothing listens yet). The config is copied by value; its strings must outlive the service.
 * NULL with err. */
conn_service_t *conn_service_create(const conn_provider_t *p, const conn_config_t *cfg,
                                    oc_error_t *err);
/* The engine context of a service (for tests). */
conn_t *conn_service_conn(conn_service_t *s);
/* Binds and starts gRPC, HTTP and the retry worker; reports the bound ports. */
oc_err_t conn_service_start(conn_service_t *s, int *grpc_port, int *http_port, oc_error_t *err);
/* Stops the worker, then HTTP, then gRPC (graceful, shutdown-grace-ms). NULL is fine. */
void conn_service_stop(conn_service_t *s);
/* Frees everything and wipes the vault keys. NULL is fine. */
void conn_service_destroy(conn_service_t *s);

/*
 * The option table of a provider's connector: the shared rows (with the provider's names,
 * defaults and bounds) followed by the provider's own. *n gets the count. Static storage,
 * built on the first call; not thread-safe (call from main).
 */
const oc_config_option_t *conn_options(const conn_provider_t *p, size_t *n);

/* The cross-field rules of the shared options; appends one line per problem. */
bool conn_check_config(const conn_provider_t *p, const conn_config_t *cfg, oc_buf_t *problems);

/*
 * The whole program: configuration (flags, environment, --check-config, --help), logs, the
 * service through oc_svc_run until SIGINT/SIGTERM. Returns the exit code. Call from main only,
 * before any thread exists.
 */
int conn_main(const conn_provider_t *p, int argc, char **argv);

#endif
