/* omnichat-persistence: serve the Persistence gRPC API, or apply the schema migrations. */
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate.h"
#include "omnichat/config.h"
#include "omnichat/log.h"
#include "omnichat/resources.h"
#include "omnichat/rpc.h"
#include "omnichat/svc.h"
#include "omnichat/svc_run.h"
#include "service.h"

#define VERSION "0.1.0"

static bool valid_level(const char *v, char *why, size_t len)
{
    if (oc_log_level_parse(v) >= 0) return true;
    snprintf(why, len, "must be one of debug, info, warn, error, off");
    return false;
}

static bool no_password(const char *v, char *why, size_t len)
{
    /* Secrets never travel in argv or the environment: a password belongs in
     * --database-url-file or a PGPASSFILE. */
    if (strstr(v, "password") != NULL || (strstr(v, "://") != NULL && strchr(v, '@') != NULL &&
                                          strchr(strstr(v, "://") + 3, ':') != NULL &&
                                          strchr(strstr(v, "://") + 3, ':') < strchr(v, '@'))) {
        snprintf(why, len, "must not contain a password (use --database-url-file)");
        return false;
    }
    return true;
}

/* The contents of the cursor key file, decoded by the code start-up uses (a validator of a
 * secret file sees its contents; only the reason is printed). */
static bool valid_cursor_key(const char *v, char *why, size_t len)
{
    uint8_t key[PST_CURSOR_KEY_LEN];
    oc_error_t err;

    oc_error_clear(&err);
    bool ok = pst_cursor_key_decode(v, key, &err) == OC_OK;
    OPENSSL_cleanse(key, sizeof key);
    if (!ok) snprintf(why, len, "%s", err.msg);
    return ok;
}

#define OPT(name, type, def, min, max, flags, field, help, validate) \
    { \
        name, type, def, min, max, flags, offsetof(pst_config_t, field), help, validate \
    }

static const oc_config_option_t options[] = {
    OPT("grpc-listen", OC_CFG_STR, "0.0.0.0:50051", 0, 0, 0, grpc_listen,
        "gRPC listen address (port 0: any free port)", NULL),
    OPT("admin-listen", OC_CFG_STR, "0.0.0.0:8080", 0, 0, 0, admin_listen,
        "HTTP address for /healthz, /readyz and /metrics (empty: off)", NULL),
    OPT("database-url", OC_CFG_STR, NULL, 0, 0, 0, database_url,
        "libpq conninfo or URI, without a password", no_password),
    OPT("database-url-file", OC_CFG_SECRET_FILE, NULL, 0, 0, 0, database_url_file,
        "file holding the libpq conninfo (may hold a password)", NULL),
    OPT("workers", OC_CFG_INT, "32", 1, 512, 0, workers,
        "handler threads, each with its own database connection", NULL),
    OPT("cursor-key-file", OC_CFG_SECRET_FILE, NULL, 0, 0, 0, cursor_key_file,
        "file holding base64 of >= 32 random bytes that sign page tokens", valid_cursor_key),
    OPT("fallback-bucket-seconds", OC_CFG_INT, "86400", 60, 31536000, 0, fallback_bucket_seconds,
        "time bucket of the fallback thread rule", NULL),
    OPT("statement-timeout-ms", OC_CFG_INT, "5000", 100, 600000, 0, statement_timeout_ms,
        "PostgreSQL statement_timeout of the service's connections", NULL),
    OPT("connect-timeout-s", OC_CFG_INT, "3", 1, 60, 0, connect_timeout_s,
        "how long one database connection attempt may take", NULL),
    OPT("shutdown-grace-ms", OC_CFG_INT, "5000", 0, 600000, 0, shutdown_grace_ms,
        "how long in-flight calls may finish after SIGTERM", NULL),
    OPT("shutdown-drain-ms", OC_CFG_INT, "1000", 0, 600000, 0, shutdown_drain_ms,
        "after SIGTERM, how long calls are still served while readiness says not ready (so "
        "load balancers drop the endpoint first)",
        NULL),
    OPT("log-level", OC_CFG_STR, "info", 0, 0, 0, log_level, "debug, info, warn, error or off",
        valid_level),
    OC_SVC_TLS_OPTIONS(pst_config_t, tls),
    OPT("allow-core-dumps", OC_CFG_BOOL, "false", 0, 0, 0, allow_core_dumps,
        "let the process dump core, for debugging only: key pages stay out of the dump, but "
        "requests and other memory go in (docs/operations.md)",
        NULL),
};
#define NOPTIONS (sizeof options / sizeof options[0])

/* Serving needs a database; the table cannot say "one of two options" by itself. The TLS
 * files go together and must be usable as start-up will use them. */
static bool check_database(const void *cfg, oc_buf_t *problems)
{
    const pst_config_t *c = cfg;

    if (!oc_svc_tls_check(&c->tls, problems)) return false;
    if ((c->database_url == NULL || c->database_url[0] == '\0') &&
        (c->database_url_file == NULL || c->database_url_file[0] == '\0')) {
        oc_buf_appends(problems, "--database-url: one of --database-url and "
                                 "--database-url-file is required\n");
        return false;
    }
    return true;
}

/* ---------- the service, as oc_svc_run drives it ---------- */

static void *svc_create(void *cfg, oc_error_t *err)
{
    return pst_service_create(cfg, err);
}

static oc_err_t svc_start(void *svc, int ports[2], oc_error_t *err)
{
    return pst_service_start(svc, &ports[0], &ports[1], err);
}

static void svc_stop(void *svc)
{
    pst_service_stop(svc);
}

static void svc_destroy(void *svc)
{
    pst_service_destroy(svc);
}

static void svc_started(void *svc, void *cfgp)
{
    const pst_config_t *cfg = cfgp;

    (void)svc;
    OC_INFO("serving", OC_LI("workers", cfg->workers));
}

static const oc_svc_ops_t service_ops = {svc_create,  svc_start,   svc_stop,
                                         svc_destroy, svc_started, {"grpc_port", "admin_port"}};

static int migrate(pst_config_t *cfg)
{
    oc_error_t err;
    int applied = 0;
    char *conninfo = pst_conninfo(cfg);

    oc_error_clear(&err);
    if (conninfo == NULL) {
        OC_ERROR("out of memory");
        return 1;
    }
    oc_err_t rc = pst_migrate(conninfo, &applied, &err);
    OPENSSL_cleanse(conninfo, strlen(conninfo));
    free(conninfo);
    if (rc != OC_OK) {
        OC_ERROR("could not migrate", OC_LS("detail", err.msg));
        return 1;
    }
    OC_INFO("migrations done", OC_LI("applied", applied),
            OC_LI("known", (long long)pst_nmigrations));
    return 0;
}

int main(int argc, char **argv)
{
    pst_config_t cfg;
    const char *cmd = "serve";
    int rc = 0;

    /* Before any thread exists (gRPC's included): signals are taken by sigwait in oc_svc_run();
     * malloc's arena count and the descriptor limit are process-wide and threads created later
     * inherit them. */
    oc_resources_tune_malloc();
    oc_resources_raise_nofile();
    oc_svc_block_signals();
    if (argc > 1 && argv[1][0] != '-') {
        cmd = argv[1];
        if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0) {
            fprintf(stderr, "omnichat-persistence: unknown command \"%s\" (serve, migrate)\n", cmd);
            return 2;
        }
        argv[1] = (char *)"serve"; /* positional words are left alone by the config loader */
    }
    memset(&cfg, 0, sizeof cfg);
    if (!oc_svc_configure("omnichat-persistence", VERSION,
                          "omnichat-persistence [serve|migrate] [--flags]", options, NOPTIONS, &cfg,
                          argc, argv, check_database, &rc))
        return rc;
    oc_log_init("persistence", (oc_log_level_t)oc_log_level_parse(cfg.log_level));
    oc_rpc_route_core_logs();
    if (cfg.allow_core_dumps) oc_svc_opt_in_core_dumps();

    rc = strcmp(cmd, "migrate") == 0 ? migrate(&cfg) : oc_svc_run(&service_ops, &cfg, VERSION);
    oc_config_free(options, NOPTIONS, &cfg);
    return rc;
}
