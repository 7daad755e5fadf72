/* The persistence service as an object: create from config, start, stop, destroy. */
#ifndef PST_SERVICE_H
#define PST_SERVICE_H

#include "pst.h"

typedef struct pst_service pst_service_t;

/* Builds the method and statement tables, metrics and the database pool (nothing connects
 * yet). The config is copied by value; its strings must outlive the service. NULL with err. */
pst_service_t *pst_service_create(const pst_config_t *cfg, oc_error_t *err);
/* Binds and starts the gRPC server and the admin HTTP server; reports the bound ports. */
oc_err_t pst_service_start(pst_service_t *s, int *grpc_port, int *admin_port, oc_error_t *err);
/* Graceful stop: not ready (Health/Check NOT_SERVING, /readyz 503) while calls are still
 * served for the drain pause, then new calls are refused and in-flight ones finish within the
 * grace period. */
void pst_service_stop(pst_service_t *s);
void pst_service_destroy(pst_service_t *s);

/* The libpq conninfo the service uses (timeouts and application name added); malloc'ed, the
 * caller wipes and frees it. NULL on OOM. */
char *pst_conninfo(const pst_config_t *cfg);

/*
 * Decodes the contents of a cursor key file (base64 of at least PST_CURSOR_KEY_LEN bytes) into
 * key. Start-up and --check-config both call it, so the one accepts exactly what the other does.
 * OC_E_CONFIG with the reason (never any part of the key) otherwise; key is then zeroed.
 */
oc_err_t pst_cursor_key_decode(const char *text, uint8_t key[PST_CURSOR_KEY_LEN], oc_error_t *err);

#endif
