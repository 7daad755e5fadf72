/* omnichat-connector-line: the LINE connector (SendText, ConnectChannel, webhook, retries). */
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "line.h"
#include "omnichat/config.h"
#include "omnichat/log.h"
#include "omnichat/resources.h"
#include "omnichat/svc.h"
#include "omnichat/util.h"
#include "omnichat/vault.h"

#define VERSION "0.1.0"

static bool valid_level(const char *v, char *why, size_t len)
{
    if (oc_log_level_parse(v) >= 0) return true;
    snprintf(why, len, "must be one of debug, info, warn, error, off");
    return false;
}

static bool valid_url(const char *v, char *why, size_t len)
{
    if ((strncmp(v, "https://", 8) == 0 && v[8] != '\0') ||
        (strncmp(v, "http://", 7) == 0 && v[7] != '\0'))
        return true;
    snprintf(why, len, "must be an http:// or https:// URL");
    return false;
}

static bool valid_required(const char *v, char *why, size_t len)
{
    if (v[0] != '\0') return true;
    snprintf(why, len, "must not be empty");
    return false;
}

static bool valid_instance(const char *v, char *why, size_t len)
{
    size_t n = strlen(v);

    /* Each attempt's lease owner is "<instance-id>:<UUID>", at most 128 bytes in persistence. */
    if (n <= LINE_INSTANCE_ID_MAX) return true;
    snprintf(why, len, "must be at most %d bytes", LINE_INSTANCE_ID_MAX);
    return false;
}

/*
 * LINE keeps a retry key for 24 h from the first request, and that request came after the
 * message was created. The last push may start up to one lease after the window check and
 * take up to one LINE timeout, so window + lease + LINE timeout must stay under 24 h for every
 * allowed value of the three (plus a minute for clock skew between us and the database).
 */
#define LEASE_SECONDS_MAX 3600       /* persistence's limit */
#define LINE_TIMEOUT_MAX_MS 120000LL /* the bound of line-timeout-ms below */
#define CLOCK_SKEW_S 60
#define RETRY_WINDOW_MAX_S (86400 - LEASE_SECONDS_MAX - LINE_TIMEOUT_MAX_MS / 1000 - CLOCK_SKEW_S)
_Static_assert(RETRY_WINDOW_MAX_S == 82620, "keep the retry-window-s bound and default in step");

#define OPT(name, type, def, min, max, flags, field, help, validate) \
    { \
        name, type, def, min, max, flags, offsetof(line_config_t, field), help, validate \
    }

static const oc_config_option_t options[] = {
    OPT("grpc-listen", OC_CFG_STR, "0.0.0.0:50052", 0, 0, 0, grpc_listen,
        "gRPC listen address (port 0: any free port)", valid_required),
    OPT("http-listen", OC_CFG_STR, "0.0.0.0:8081", 0, 0, 0, http_listen,
        "HTTP address for the webhook, /healthz and /metrics (port 0: any free port)",
        valid_required),
    OPT("persistence-target", OC_CFG_STR, "127.0.0.1:50051", 0, 0, 0, persistence_target,
        "gRPC target of the persistence service", valid_required),
    OPT("persistence-timeout-ms", OC_CFG_INT, "5000", 50, 600000, 0, persistence_timeout_ms,
        "deadline of each persistence call", NULL),
    OPT("webhook-timeout-ms", OC_CFG_INT, "1500", 50, 600000, 0, webhook_timeout_ms,
        "deadline of one webhook request from arrival to answer: account look-up, profiles and "
        "persisting share it (LINE gives up after 2 s)",
        NULL),
    OPT("line-api-base", OC_CFG_STR, "https://api.line.me", 0, 0, 0, line_api_base,
        "base URL of the LINE Messaging API (the simulator's in tests)", valid_url),
    OPT("line-timeout-ms", OC_CFG_INT, "10000", 100, LINE_TIMEOUT_MAX_MS, 0, line_timeout_ms,
        "total timeout of a push or bot info call", NULL),
    OPT("profile-timeout-ms", OC_CFG_INT, "500", 10, 10000, 0, profile_timeout_ms,
        "timeout of one profile look-up in the webhook (best effort)", NULL),
    OPT("vault-key-file", OC_CFG_STR, NULL, 0, 0, OC_CFG_REQUIRED, vault_key_file,
        "path of the vault key file (docs/vault.md)", valid_required),
    OPT("workers", OC_CFG_INT, "32", 1, 512, 0, workers, "gRPC handler threads", NULL),
    OPT("http-threads", OC_CFG_INT, "16", 1, 512, 0, http_threads, "HTTP handler threads", NULL),
    OPT("max-body-bytes", OC_CFG_INT, "1048576", 1024, 67108864, 0, max_body_bytes,
        "largest webhook body accepted (413 beyond)", NULL),
    OPT("http-head-timeout-ms", OC_CFG_INT, "10000", 100, 600000, 0, http_head_timeout_ms,
        "deadline for a whole HTTP request head, from its first byte (408 and close beyond)", NULL),
    OPT("http-body-timeout-ms", OC_CFG_INT, "30000", 100, 600000, 0, http_body_timeout_ms,
        "deadline for a whole HTTP request body, from the end of its head", NULL),
    OPT("http-max-connections", OC_CFG_INT, "4096", 1, 1000000, 0, http_max_connections,
        "HTTP connections open at once; more are closed at accept (held below the descriptor "
        "limit)",
        NULL),
    OPT("http-max-connections-per-ip", OC_CFG_INT, "256", 1, 1000000, 0,
        http_max_connections_per_ip,
        "HTTP connections open at once from one client address (raise it behind a proxy)", NULL),
    OPT("worker-interval-ms", OC_CFG_INT, "500", 10, 600000, 0, worker_interval_ms,
        "how often the retry worker looks for due messages", NULL),
    OPT("worker-batch", OC_CFG_INT, "32", 1, 100, 0, worker_batch, "most messages claimed at once",
        NULL),
    OPT("worker-threads", OC_CFG_INT, "4", 1, 64, 0, worker_threads,
        "threads delivering claimed messages", NULL),
    OPT("lease-seconds", OC_CFG_INT, "30", 1, LEASE_SECONDS_MAX, 0, lease_seconds,
        "lease taken on a message while it is being sent; must outlast line-timeout-ms plus "
        "two persistence-timeout-ms",
        NULL),
    OPT("max-attempts", OC_CFG_INT, "8", 1, 1000, 0, max_attempts,
        "provider calls per message before it fails", NULL),
    OPT("backoff-base-ms", OC_CFG_INT, "1000", 1, 3600000, 0, backoff_base_ms,
        "first retry delay (doubles each attempt, full jitter)", NULL),
    OPT("backoff-max-ms", OC_CFG_INT, "300000", 1, 86400000, 0, backoff_max_ms,
        "largest retry delay", NULL),
    OPT("retry-window-s", OC_CFG_INT, "82620", 1, RETRY_WINDOW_MAX_S, 0, retry_window_s,
        "no push later than this after the message was created (LINE retry keys live 24 h; "
        "window + lease + LINE timeout stay under that)",
        NULL),
    OPT("account-cache-ms", OC_CFG_INT, "5000", 0, 3600000, 0, account_cache_ms,
        "how long a channel account is cached (0: not at all)", NULL),
    OPT("instance-id", OC_CFG_STR, "", 0, 0, 0, instance_id,
        "name of this process in lease owners, \"<instance-id>:<UUID>\" per attempt (default: "
        "hostname-pid-random)",
        valid_instance),
    OPT("shutdown-grace-ms", OC_CFG_INT, "5000", 0, 600000, 0, shutdown_grace_ms,
        "how long in-flight calls may finish after SIGTERM", NULL),
    OPT("log-level", OC_CFG_STR, "info", 0, 0, 0, log_level, "debug, info, warn, error or off",
        valid_level),
    OC_SVC_TLS_OPTIONS(line_config_t, tls),
    OPT("allow-core-dumps", OC_CFG_BOOL, "false", 0, 0, 0, allow_core_dumps,
        "let the process dump core, for debugging only: key pages stay out of the dump, but "
        "requests and other memory go in (docs/operations.md)",
        NULL),
};
#define NOPTIONS (sizeof options / sizeof options[0])

/* Rules across options that the table cannot express. */
static bool check_rules(const void *cfgp, oc_buf_t *problems)
{
    const line_config_t *cfg = cfgp;
    bool ok = oc_svc_tls_check(&cfg->tls, problems);

    if (cfg->backoff_base_ms > cfg->backoff_max_ms) {
        oc_buf_appends(problems, "--backoff-base-ms: must not exceed --backoff-max-ms\n");
        ok = false;
    }
    if (cfg->lease_seconds * 1000 <= cfg->line_timeout_ms + 2 * cfg->persistence_timeout_ms) {
        /* An attempt holds its lease through an account look-up, the push and CompleteOutbound:
         * a lease that ran out meanwhile would let a second worker send concurrently. */
        oc_buf_appendf(problems,
                       "--lease-seconds: %lld s must be longer than --line-timeout-ms + 2 x "
                       "--persistence-timeout-ms (%lld ms)\n",
                       cfg->lease_seconds, cfg->line_timeout_ms + 2 * cfg->persistence_timeout_ms);
        ok = false;
    }
    /* The key file as start-up loads it (same code), so that --check-config says ok only for
     * a file the service will accept; the keys are wiped right away. */
    if (cfg->vault_key_file != NULL && cfg->vault_key_file[0] != '\0') {
        oc_error_t err;
        oc_error_clear(&err);
        oc_vault_t *v = oc_vault_create_from_file(cfg->vault_key_file, 0, &err);
        if (v == NULL) {
            oc_buf_appendf(problems, "--vault-key-file: %s\n", err.msg);
            ok = false;
        }
        oc_vault_destroy(v);
    }
    return ok;
}

/* hostname-pid-random: unique per process, readable in the database's lease_owner column. */
static char *default_instance_id(void)
{
    char host[64] = "line";
    uint8_t rnd[4] = {0};
    char hex[9];
    char *out = NULL;

    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    RAND_bytes(rnd, sizeof rnd);
    oc_hex_encode(rnd, sizeof rnd, hex);
    /* Short enough for LINE_INSTANCE_ID_MAX whatever the host name. */
    if (asprintf(&out, "%.60s-%ld-%s", host, (long)getpid(), hex) < 0) return NULL;
    return out;
}

static int serve(line_config_t *cfg)
{
    oc_error_t err;
    line_service_t *svc;
    int grpc_port = 0, http_port = 0;

    oc_error_clear(&err);
    svc = line_service_create(cfg, &err);
    if (svc == NULL || line_service_start(svc, &grpc_port, &http_port, &err) != OC_OK) {
        OC_ERROR("could not start", OC_LS("detail", err.msg));
        line_service_stop(svc);
        line_service_destroy(svc);
        return 1;
    }
    OC_INFO("listening", OC_LI("grpc_port", grpc_port), OC_LI("http_port", http_port),
            OC_LS("version", VERSION), OC_LS("instance_id", cfg->instance_id),
            OC_LS("line_api_base", cfg->line_api_base));

    /* Outside the log call: its arguments are not evaluated when info is off. */
    const char *sig = oc_svc_wait_for_signal();
    OC_INFO("shutting down", OC_LS("signal", sig));
    line_service_stop(svc);
    line_service_destroy(svc);
    OC_INFO("stopped");
    return 0;
}

int main(int argc, char **argv)
{
    line_config_t cfg;
    char *generated_id = NULL;
    int rc = 0;

    /* Before any thread exists (gRPC's included): signals are taken by sigwait in serve(). */
    /* Before any thread exists: malloc's arena count and the descriptor limit are
     * process-wide and threads created later inherit them. */
    oc_resources_tune_malloc();
    oc_resources_raise_nofile();
    oc_svc_block_signals();
    memset(&cfg, 0, sizeof cfg);
    if (!oc_svc_configure("omnichat-connector-line", VERSION, "omnichat-connector-line [--flags]",
                          options, NOPTIONS, &cfg, argc, argv, check_rules, &rc))
        return rc;
    oc_log_init("connector-line", (oc_log_level_t)oc_log_level_parse(cfg.log_level));
    oc_rpc_route_core_logs();
    if (cfg.allow_core_dumps) {
        oc_error_t err;
        oc_error_clear(&err);
        if (oc_svc_allow_core_dumps(&err) != OC_OK)
            OC_WARN("core dumps stay off", OC_LS("detail", err.msg));
        else
            OC_WARN("core dumps allowed (--allow-core-dumps): a dump holds request data; key "
                    "material stays out of it");
    }

    char *configured_id = cfg.instance_id;
    if (cfg.instance_id == NULL || cfg.instance_id[0] == '\0') {
        generated_id = default_instance_id();
        if (generated_id == NULL) {
            OC_ERROR("out of memory");
            oc_config_free(options, NOPTIONS, &cfg);
            return 1;
        }
        cfg.instance_id = generated_id;
    }
    rc = serve(&cfg);
    cfg.instance_id = configured_id; /* the table frees what it allocated */
    free(generated_id);
    oc_config_free(options, NOPTIONS, &cfg);
    return rc;
}
