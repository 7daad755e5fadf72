/* The start-up, signal, health/metrics and RPC bookkeeping every Omnichat service shares. */
#include "omnichat/svc.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "omnichat/log.h"

void oc_svc_block_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

const char *oc_svc_wait_for_signal(void)
{
    sigset_t set;
    int sig = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigwait(&set, &sig);
    return sig == SIGTERM ? "SIGTERM" : "SIGINT";
}

/* RLIMIT_CORE as the process found it, for oc_svc_allow_core_dumps. */
static struct rlimit start_core_limit;
static bool start_core_limit_saved;

oc_err_t oc_svc_forbid_core_dumps(oc_error_t *err)
{
    struct rlimit lim;

    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return oc_error_set(err, OC_E_INTERNAL, "could not make the process non-dumpable: %s",
                            strerror(errno));
    /* The soft limit only: the hard one stays where it was so that the opt-in can restore
     * the soft one without privileges. Non-dumpable already stops dumps through a pipe
     * (core_pattern |...), which ignores RLIMIT_CORE. */
    if (getrlimit(RLIMIT_CORE, &lim) != 0)
        return oc_error_set(err, OC_E_INTERNAL, "could not read RLIMIT_CORE: %s", strerror(errno));
    if (!start_core_limit_saved) {
        start_core_limit = lim;
        start_core_limit_saved = true;
    }
    lim.rlim_cur = 0;
    if (setrlimit(RLIMIT_CORE, &lim) != 0)
        return oc_error_set(err, OC_E_INTERNAL, "could not set RLIMIT_CORE to 0: %s",
                            strerror(errno));
    return OC_OK;
}

oc_err_t oc_svc_allow_core_dumps(oc_error_t *err)
{
    if (start_core_limit_saved && setrlimit(RLIMIT_CORE, &start_core_limit) != 0)
        return oc_error_set(err, OC_E_INTERNAL, "could not restore RLIMIT_CORE: %s",
                            strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
        return oc_error_set(err, OC_E_INTERNAL, "could not make the process dumpable: %s",
                            strerror(errno));
    return OC_OK;
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0) return true;
    return false;
}

/* What oc_svc_configure was given, for omnichat_build_info. */
static const char *svc_version;

bool oc_svc_configure(const char *program, const char *version, const char *usage,
                      const oc_config_option_t *opts, size_t nopts, void *cfg, int argc,
                      char **argv, oc_svc_check_fn check, int *exit_code)
{
    static const char *const passthrough[] = {"check-config", "help", "version", NULL};
    oc_buf_t problems;
    oc_error_t err;
    bool ok;

    svc_version = version;
    /* Before the option table reads any secret file. */
    oc_error_clear(&err);
    if (oc_svc_forbid_core_dumps(&err) != OC_OK) {
        fprintf(stderr, "%s: %s\n", program, err.msg);
        *exit_code = 1;
        return false;
    }
    if (has_flag(argc, argv, "--help")) {
        printf("usage: %s\n\n", usage);
        oc_config_usage(opts, nopts, program);
        *exit_code = 0;
        return false;
    }
    if (has_flag(argc, argv, "--version")) {
        printf("%s %s\n", program, version);
        *exit_code = 0;
        return false;
    }
    oc_buf_init(&problems, 16384);
    ok = oc_config_load(opts, nopts, cfg, argc, argv, passthrough, &problems) == OC_OK;
    /* Cross-field rules only make sense once every option parsed. */
    if (ok && check != NULL) ok = check(cfg, &problems);
    if (has_flag(argc, argv, "--check-config")) {
        fprintf(stderr, "%s",
                ok ? "configuration ok\n" : (problems.data != NULL ? problems.data : ""));
        *exit_code = ok ? 0 : 1;
        ok = false;
    } else if (!ok) {
        fprintf(stderr, "%s: invalid configuration:\n%s", program,
                problems.data != NULL ? problems.data : "");
        *exit_code = 2;
    }
    oc_buf_dispose(&problems);
    if (!ok) oc_config_free(opts, nopts, cfg);
    return ok;
}

oc_err_t oc_svc_rpc_metrics_init(oc_svc_rpc_metrics_t *m, oc_metrics_t *registry)
{
    m->total = oc_metrics_counter(registry, "omnichat_rpc_requests_total",
                                  "gRPC calls handled, by method and status code",
                                  (const char *const[]){"method", "code"}, 2);
    m->latency = oc_metrics_histogram(registry, "omnichat_rpc_latency_seconds",
                                      "gRPC call latency from arrival to status, by method and "
                                      "status code",
                                      (const char *const[]){"method", "code"}, 2, NULL, 0);
    m->denied = oc_metrics_counter(registry, "omnichat_rpc_denied_total",
                                   "gRPC calls refused because the client's role may not call "
                                   "the method, by method and client identity",
                                   (const char *const[]){"method", "peer"}, 2);
    if (m->total == NULL || m->latency == NULL || m->denied == NULL) return OC_E_NOMEM;
    /* Every service makes its registry here first: the process and build families come with
     * it, in one place. */
    return oc_metrics_process(registry, svc_version);
}

void oc_svc_rpc_record(const oc_svc_rpc_metrics_t *m, const oc_rpc_ctx_t *ctx, int status,
                       int64_t latency_us)
{
    const char *method = strrchr(ctx->method, '/');
    const char *code = oc_grpc_status_name(status);

    method = method != NULL ? method + 1 : ctx->method;
    /* Unknown methods come from the client's path: one label keeps a scanner from minting
     * unbounded label values. */
    if (status == 12) method = "unknown";
    oc_metric_inc(m->total, (const char *const[]){method, code}, 1);
    oc_metric_observe(m->latency, (const char *const[]){method, code}, (double)latency_us / 1e6);
    /* UNKNOWN, INTERNAL and UNAVAILABLE are ours to look at; the rest are the caller's, except
     * a refusal by role: a misconfigured client or someone probing, to be seen either way. */
    if (ctx->denied) {
        oc_metric_inc(m->denied, (const char *const[]){method, ctx->peer}, 1);
        OC_WARN("rpc permission denied", OC_LS("method", method), OC_LS("peer", ctx->peer),
                OC_LS("request_id", ctx->request_id));
    } else if (status == 2 || status == 13 || status == 14)
        OC_WARN("rpc failed", OC_LS("method", method), OC_LS("code", code),
                OC_LS("request_id", ctx->request_id), OC_LS("tenant_id", ctx->tenant_id),
                OC_LS("detail", ctx->err.msg), OC_LI("latency_us", latency_us));
    else
        OC_DEBUG("rpc", OC_LS("method", method), OC_LS("code", code),
                 OC_LS("request_id", ctx->request_id), OC_LS("tenant_id", ctx->tenant_id),
                 OC_LI("latency_us", latency_us));
}

static bool given(const char *s)
{
    return s != NULL && s[0] != '\0';
}

const oc_rpc_tls_t *oc_svc_tls(const oc_svc_tls_config_t *c, oc_rpc_tls_t *out)
{
    memset(out, 0, sizeof *out);
    if (!given(c->cert_file) && !given(c->key_file) && !given(c->ca_file)) return NULL;
    out->cert_file = c->cert_file;
    out->key_file = c->key_file;
    out->ca_file = c->ca_file;
    return out;
}

bool oc_svc_tls_check(const oc_svc_tls_config_t *c, oc_buf_t *problems)
{
    int set = given(c->cert_file) + given(c->key_file) + given(c->ca_file);
    oc_rpc_tls_t tls;
    oc_error_t err;

    if (set == 0) return true;
    if (set != 3) {
        /* Half a TLS setting must not quietly mean plaintext. */
        oc_buf_appends(problems, "--tls-cert-file: --tls-cert-file, --tls-key-file and "
                                 "--tls-ca-file go together (none of them: plaintext)\n");
        return false;
    }
    oc_error_clear(&err);
    if (oc_rpc_tls_check(oc_svc_tls(c, &tls), &err) != OC_OK) {
        oc_buf_appendf(problems, "--tls-cert-file: %s\n", err.msg);
        return false;
    }
    return true;
}

void oc_svc_http_healthz_rpc(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    char detail[OC_ERROR_MSG_MAX + 1];

    (void)req;
    if (oc_rpc_server_healthy(user, detail, sizeof detail)) {
        oc_buf_appends(&resp->body, "{\"status\":\"ok\"}");
        return;
    }
    resp->status = 503;
    oc_buf_appends(&resp->body, "{\"status\":\"unavailable\",\"detail\":\"");
    /* The detail comes from our own error messages; keep it JSON-safe all the same. */
    for (const char *p = detail; *p; p++)
        if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) oc_buf_append(&resp->body, p, 1);
    oc_buf_appends(&resp->body, "\"}");
}

void oc_svc_http_metrics(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    (void)req;
    resp->content_type = OC_METRICS_CONTENT_TYPE;
    if (oc_metrics_render(user, &resp->body) != OC_OK)
        oc_http_response_error(resp, 500, "metrics could not be rendered");
}

void oc_svc_opt_in_core_dumps(void)
{
    oc_error_t err;

    oc_error_clear(&err);
    if (oc_svc_allow_core_dumps(&err) != OC_OK)
        OC_WARN("core dumps stay off", OC_LS("detail", err.msg));
    else
        OC_WARN("core dumps allowed (--allow-core-dumps): a dump holds request data; key "
                "material stays out of it");
}

void oc_svc_log_ready_change(void *user, bool ready, const char *reason)
{
    (void)user;
    if (ready)
        OC_INFO("ready");
    else
        OC_WARN("not ready", OC_LS("reason", reason));
}
