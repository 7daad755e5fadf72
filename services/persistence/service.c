/* Wires the persistence service together: method and statement tables, metrics, admin HTTP. */
#include "service.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/http.h"
#include "omnichat/log.h"
#include "omnichat/ready.h"
#include "omnichat/svc.h"
#include "omnichat/util.h"

typedef struct table_part {
    const oc_rpc_method_t *methods;
    const size_t *nmethods;
    const oc_pg_stmt_t *stmts;
    const size_t *nstmts;
} table_part_t;

static const size_t no_methods = 0;
static const table_part_t parts[] = {
    {pst_methods_conversations, &pst_nmethods_conversations, pst_stmts_conversations,
     &pst_nstmts_conversations},
    {pst_methods_messages, &pst_nmethods_messages, pst_stmts_messages, &pst_nstmts_messages},
    {pst_methods_channels, &pst_nmethods_channels, pst_stmts_channels, &pst_nstmts_channels},
    {pst_methods_outbound, &pst_nmethods_outbound, pst_stmts_outbound, &pst_nstmts_outbound},
    {NULL, &no_methods, pst_stmts_metrics, &pst_nstmts_metrics},
};
#define NPARTS (sizeof parts / sizeof parts[0])

struct pst_service {
    pst_t pst;
    oc_rpc_method_t *methods;
    size_t nmethods;
    oc_pg_stmt_t *stmts;
    oc_rpc_server_t *rpc;
    oc_http_server_t *admin;
    oc_http_route_t routes[3];
    oc_ready_t *ready;
    oc_pg_conn_t *ready_conn; /* the readiness thread's own connection */
};

/* The tracker the database log hook reports connection failures to (one service a process). */
static oc_ready_t *db_ready_tracker;
/* Set on the readiness thread while it checks: its failures are readiness, not request errors,
 * and are logged once per change rather than once a second. */
static _Thread_local bool in_ready_check;

static void on_complete(void *user, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    const pst_t *pst = user;

    oc_svc_rpc_record(&pst->rpc_metrics, ctx, status, latency_us);
}

static void pg_log(const char *sqlstate, const char *cause, const char *detail)
{
    const char *request_id = oc_rpc_current_request_id();

    if (in_ready_check) return;
    /* A failed connect is the database being away: readiness needs no second to notice. A
     * lost connection is not (an administrator ending sessions); the pool remakes it. */
    if (strcmp(cause, "connect_failed") == 0)
        oc_ready_fail(db_ready_tracker, "database unreachable");
    OC_WARN("database error", OC_LS("request_id", request_id), OC_LS("sqlstate", sqlstate),
            OC_LS("cause", cause), OC_LS("detail", detail));
}

static char *full_conninfo(const pst_config_t *cfg);

/*
 * The service's conninfo plus tcp_user_timeout: statement_timeout runs on the server, so a
 * database cut off by the network would hold SELECT 1 (and the readiness thread, and a stale
 * "ready") for as long as TCP retransmits, many minutes. Malloc'ed; the caller wipes it.
 */
static char *ready_conninfo(const pst_config_t *cfg)
{
    char *base = full_conninfo(cfg), *out = NULL;

    if (base == NULL) return NULL;
    /* full_conninfo's URI form always has a query string by now. */
    bool uri = strncmp(base, "postgres://", 11) == 0 || strncmp(base, "postgresql://", 13) == 0;

    if (asprintf(&out, "%s%stcp_user_timeout=%lld", base, uri ? "&" : " ",
                 cfg->connect_timeout_s * 1000) < 0)
        out = NULL;
    OPENSSL_cleanse(base, strlen(base));
    free(base);
    return out;
}

/*
 * The readiness check: SELECT 1 over a connection of its own, outside the pool, so that a probe
 * never takes a worker's connection nor waits behind busy workers. One statement a second
 * whatever the probe rate; a broken connection is remade at once (bounded by connect-timeout-s).
 */
static bool db_check(void *user, char *reason, size_t n)
{
    pst_service_t *s = user;
    char *conninfo = NULL;
    oc_error_t err;
    bool ok = false;

    oc_error_clear(&err);
    in_ready_check = true;
    if (s->ready_conn != NULL &&
        oc_pg_exec_simple(s->ready_conn, "SELECT 1", NULL, &err) == OC_OK) {
        ok = true;
        goto out;
    }
    oc_pg_disconnect(s->ready_conn);
    s->ready_conn = NULL;
    conninfo = ready_conninfo(&s->pst.cfg);
    if (conninfo == NULL) goto out;
    s->ready_conn = oc_pg_connect(conninfo, &err);
    OPENSSL_cleanse(conninfo, strlen(conninfo));
    free(conninfo);
    /* Its own application name: tools counting the pool's sessions do not see it. */
    ok = s->ready_conn != NULL &&
         oc_pg_exec_simple(s->ready_conn,
                           "SET application_name = 'omnichat-persistence-readiness'; SELECT 1",
                           NULL, &err) == OC_OK;
out:
    in_ready_check = false;
    if (!ok) snprintf(reason, n, "database unreachable");
    return ok;
}

oc_err_t pst_cursor_key_decode(const char *text, uint8_t key[PST_CURSOR_KEY_LEN], oc_error_t *err)
{
    uint8_t raw[256];
    long n = oc_base64_decode(text, strlen(text), raw, sizeof raw);
    oc_err_t rc = OC_OK;

    if (n < PST_CURSOR_KEY_LEN) {
        OPENSSL_cleanse(key, PST_CURSOR_KEY_LEN);
        rc = oc_error_set(err, OC_E_CONFIG,
                          n < 0 ? "must hold base64 of at least %d random bytes (not base64, or "
                                  "longer than 256 bytes)"
                                : "must hold base64 of at least %d random bytes (too short)",
                          PST_CURSOR_KEY_LEN);
        goto out;
    }
    memcpy(key, raw, PST_CURSOR_KEY_LEN);
out:
    OPENSSL_cleanse(raw, sizeof raw);
    return rc;
}

static oc_err_t load_cursor_key(pst_t *pst, oc_error_t *err)
{
    oc_error_t local;

    if (pst->cfg.cursor_key_file == NULL || pst->cfg.cursor_key_file[0] == '\0') {
        /* Cursors then die with the process and differ between replicas: fine on a laptop,
         * wrong for production, hence the warning. */
        OC_WARN("no cursor key file configured: using a random key; page tokens will not "
                "survive a restart or work across replicas");
        if (RAND_bytes(pst->cursor_key, PST_CURSOR_KEY_LEN) != 1)
            return oc_error_set(err, OC_E_INTERNAL, "cursor key: no randomness");
        return OC_OK;
    }
    oc_error_clear(&local);
    if (pst_cursor_key_decode(pst->cfg.cursor_key_file, pst->cursor_key, &local) != OC_OK)
        return oc_error_set(err, local.code, "cursor-key-file: %s", local.msg);
    return OC_OK;
}

/* Adds timeouts and the application name to the operator's conninfo (URI or keywords). */
static char *full_conninfo(const pst_config_t *cfg)
{
    const char *base = cfg->database_url_file != NULL && cfg->database_url_file[0] != '\0'
                           ? cfg->database_url_file
                           : cfg->database_url;
    bool uri = strncmp(base, "postgres://", 11) == 0 || strncmp(base, "postgresql://", 13) == 0;
    char *out = NULL;
    int rc;

    if (uri)
        rc = asprintf(&out,
                      "%s%sconnect_timeout=%lld&application_name=omnichat-persistence"
                      "&options=-c%%20statement_timeout%%3D%lld",
                      base, strchr(base, '?') != NULL ? "&" : "?", cfg->connect_timeout_s,
                      cfg->statement_timeout_ms);
    else
        rc = asprintf(&out,
                      "%s connect_timeout=%lld application_name=omnichat-persistence "
                      "options='-c statement_timeout=%lld'",
                      base, cfg->connect_timeout_s, cfg->statement_timeout_ms);
    return rc < 0 ? NULL : out;
}

char *pst_conninfo(const pst_config_t *cfg)
{
    return full_conninfo(cfg);
}

/* Every method decodes under its row of limits.c; a method without one is a bug. */
static oc_err_t attach_limits(pst_service_t *s, oc_error_t *err)
{
    for (size_t i = 0; i < s->nmethods; i++) {
        const char *name = strrchr(s->methods[i].path, '/') + 1;

        s->methods[i].limits = pst_method_limits(name);
        if (s->methods[i].limits == NULL)
            return oc_error_set(err, OC_E_INTERNAL, "method %s has no decoding limits", name);
    }
    return OC_OK;
}

pst_service_t *pst_service_create(const pst_config_t *cfg, oc_error_t *err)
{
    pst_service_t *s = calloc(1, sizeof *s);
    size_t nstmts = 0, k = 0;
    char *conninfo = NULL;

    if (s == NULL) {
        oc_error_set(err, OC_E_NOMEM, "out of memory");
        return NULL;
    }
    s->pst.cfg = *cfg;
    for (size_t i = 0; i < NPARTS; i++) {
        s->nmethods += *parts[i].nmethods;
        nstmts += *parts[i].nstmts;
    }
    s->methods = calloc(s->nmethods, sizeof *s->methods);
    s->stmts = calloc(nstmts, sizeof *s->stmts);
    if (s->methods == NULL || s->stmts == NULL) goto oom;
    for (size_t i = 0, m = 0; i < NPARTS; i++) {
        if (*parts[i].nmethods > 0) /* metrics.c has statements only */
            memcpy(s->methods + m, parts[i].methods, *parts[i].nmethods * sizeof *s->methods);
        m += *parts[i].nmethods;
        memcpy(s->stmts + k, parts[i].stmts, *parts[i].nstmts * sizeof *s->stmts);
        k += *parts[i].nstmts;
    }
    s->pst.cursor_key = oc_secret_alloc(PST_CURSOR_KEY_LEN); /* left out of core dumps */
    if (s->pst.cursor_key == NULL) goto oom;
    if (attach_limits(s, err) != OC_OK) goto fail;
    if (load_cursor_key(&s->pst, err) != OC_OK) goto fail;

    s->pst.metrics = oc_metrics_create();
    if (s->pst.metrics == NULL) goto oom;
    if (oc_svc_rpc_metrics_init(&s->pst.rpc_metrics, s->pst.metrics) != OC_OK) goto oom;
    if (pst_metrics_init(&s->pst) != OC_OK) goto oom;

    oc_pg_set_log_hook(pg_log);
    conninfo = full_conninfo(cfg);
    if (conninfo == NULL) goto oom;
    /* One connection per worker: a handler never waits for a slot; and one for /metrics (the
     * retry queue count), so a scrape never takes a worker's. */
    s->pst.pool = oc_pg_pool_create(conninfo, (size_t)cfg->workers + 1, s->stmts, nstmts, err);
    OPENSSL_cleanse(conninfo, strlen(conninfo));
    free(conninfo);
    if (s->pst.pool == NULL) goto fail;
    s->ready = oc_ready_create(
        &(oc_ready_opts_t){.check = db_check, .on_change = oc_svc_log_ready_change, .user = s},
        err);
    if (s->ready == NULL) goto fail;
    db_ready_tracker = s->ready;
    return s;
oom:
    oc_error_set(err, OC_E_NOMEM, "out of memory");
fail:
    pst_service_destroy(s);
    return NULL;
}

oc_err_t pst_service_start(pst_service_t *s, int *grpc_port, int *admin_port, oc_error_t *err)
{
    oc_rpc_server_opts_t opts = {
        .listen = s->pst.cfg.grpc_listen,
        .workers = (int)s->pst.cfg.workers,
        .max_message_bytes = 8u << 20,
        .user = &s->pst,
        .on_complete = on_complete,
        .tls = oc_svc_tls(&s->pst.cfg.tls, &s->pst.tls),
        .client_roles = s->pst.cfg.tls.client_roles,
        .descriptor_set = pst_descriptor_set,
        .descriptor_set_len = pst_descriptor_set_len,
    };

    if (opts.tls == NULL)
        OC_WARN("gRPC without TLS: any process that reaches the port may call every method; "
                "set --tls-cert-file, --tls-key-file and --tls-ca-file outside a sandbox",
                OC_LS("listen", s->pst.cfg.grpc_listen));

    s->rpc = oc_rpc_server_create(&opts, s->methods, s->nmethods, err);
    if (s->rpc == NULL) return err->code;
    if (oc_rpc_server_start(s->rpc, err) != OC_OK) return err->code;
    if (oc_ready_start(s->ready, s->rpc, err) != OC_OK) return err->code;
    *grpc_port = oc_rpc_server_port(s->rpc);
    *admin_port = 0;
    if (s->pst.cfg.admin_listen != NULL && s->pst.cfg.admin_listen[0] != '\0') {
        s->routes[0] = (oc_http_route_t){"GET", "/healthz", false, oc_svc_http_healthz_rpc, s->rpc};
        s->routes[1] =
            (oc_http_route_t){"GET", "/metrics", false, oc_svc_http_metrics, s->pst.metrics};
        s->routes[2] = (oc_http_route_t){"GET", "/readyz", false, oc_ready_http, s->ready};
        oc_http_server_opts_t hopts = {
            .listen = s->pst.cfg.admin_listen,
            .threads = 2,
            .max_body = 4096,
            .timeout_s = 10,
            .routes = s->routes,
            .nroutes = 3,
        };
        s->admin = oc_http_server_start(&hopts, err);
        if (s->admin == NULL) return err->code;
        *admin_port = oc_http_server_port(s->admin);
    }
    return OC_OK;
}

void pst_service_stop(pst_service_t *s)
{
    if (s == NULL) return;
    if (s->rpc != NULL) {
        oc_ready_drain(s->ready, (int)s->pst.cfg.shutdown_drain_ms);
        oc_rpc_server_set_serving(s->rpc, false);
        oc_rpc_server_shutdown(s->rpc, (int)s->pst.cfg.shutdown_grace_ms);
    }
    oc_http_server_stop(s->admin);
    s->admin = NULL;
}

void pst_service_destroy(pst_service_t *s)
{
    if (s == NULL) return;
    /* Before the server it sets the health status of. */
    oc_ready_destroy(s->ready);
    if (db_ready_tracker == s->ready) db_ready_tracker = NULL;
    oc_pg_disconnect(s->ready_conn);
    oc_rpc_server_destroy(s->rpc);
    oc_http_server_stop(s->admin);
    oc_pg_pool_destroy(s->pst.pool);
    oc_metrics_destroy(s->pst.metrics);
    oc_secret_free(s->pst.cursor_key); /* wipes */
    free(s->methods);
    free(s->stmts);
    free(s);
}
