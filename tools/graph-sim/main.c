/* omnichat-graph-sim: serves the simulated Graph API until SIGTERM or SIGINT. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_sim.h"
#include "omnichat/config.h"
#include "omnichat/log.h"
#include "omnichat/svc.h"

typedef struct gcfg {
    char *listen;
    char *webhook_url;
    char *app_secret; /* contents of --app-secret-file */
    bool sandbox;
    char *token; /* contents of --token-file */
    long long threads;
    long long max_requests;
    char *log_level;
} gcfg_t;

static const oc_config_option_t options[] = {
    {"listen", OC_CFG_STR, "127.0.0.1:0", 0, 0, 0, offsetof(gcfg_t, listen),
     "address to serve on; port 0 picks a free one (logged as {\"msg\":\"listening\"})", NULL},
    {"webhook-url", OC_CFG_STR, NULL, 0, 0, 0, offsetof(gcfg_t, webhook_url),
     "where echoes and events are posted (the Meta connector's /webhooks/meta)", NULL},
    {"app-secret-file", OC_CFG_SECRET_FILE, NULL, 0, 0, 0, offsetof(gcfg_t, app_secret),
     "file holding the app secret: signs webhooks, checks appsecret_proof", NULL},
    {"sandbox", OC_CFG_BOOL, "false", 0, 0, 0, offsetof(gcfg_t, sandbox),
     "preload the documented sandbox Page and Instagram account (needs --token-file)", NULL},
    {"token-file", OC_CFG_SECRET_FILE, NULL, 0, 0, 0, offsetof(gcfg_t, token),
     "file holding the sandbox Page access token", NULL},
    {"threads", OC_CFG_INT, "16", 1, 512, 0, offsetof(gcfg_t, threads),
     "HTTP handler threads (injected delays occupy one each)", NULL},
    {"max-requests", OC_CFG_INT, "100000", 1, 10000000, 0, offsetof(gcfg_t, max_requests),
     "requests and deliveries kept in the logs (oldest dropped)", NULL},
    {"log-level", OC_CFG_STR, "info", 0, 0, 0, offsetof(gcfg_t, log_level),
     "debug, info, warn, error or off", NULL},
};
#define NOPTS (sizeof options / sizeof options[0])

int main(int argc, char **argv)
{
    static const char *const passthrough[] = {"help", NULL};
    gcfg_t cfg = {0};
    gsim_t *sim = NULL;
    oc_buf_t problems;
    oc_error_t err;
    int code = 1;

    oc_svc_block_signals();
    oc_buf_init(&problems, 64 * 1024);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0) {
            printf("Simulated Graph API (Messenger and Instagram) for tests and sandbox mode.\n");
            oc_config_usage(options, NOPTS, argv[0]);
            code = 0;
            goto out;
        }
    if (oc_config_load(options, NOPTS, &cfg, argc, argv, passthrough, &problems) != OC_OK) {
        fprintf(stderr, "%s", problems.data ? problems.data : "invalid configuration\n");
        goto out;
    }
    if (cfg.sandbox && (cfg.token == NULL || cfg.token[0] == '\0')) {
        fprintf(stderr, "--sandbox: needs --token-file with the sandbox Page's token\n");
        goto out;
    }
    oc_log_init("graph-sim", (oc_log_level_t)oc_log_level_parse(cfg.log_level));
    oc_error_clear(&err);
    gsim_opts_t o = {.listen = cfg.listen,
                     .threads = (int)cfg.threads,
                     .max_requests = (size_t)cfg.max_requests,
                     .app_secret = cfg.app_secret,
                     .webhook_url = cfg.webhook_url};
    if ((sim = gsim_create(&o, &err)) == NULL) {
        OC_ERROR("could not start the simulator", OC_LS("error", err.msg));
        goto out;
    }
    if (cfg.sandbox) {
        gsim_page_def_t def = {.token = cfg.token,
                               .page_id = GSIM_SANDBOX_PAGE_ID,
                               .name = GSIM_SANDBOX_NAME,
                               .ig_id = GSIM_SANDBOX_IG_ID};
        if (gsim_add_page(sim, &def, &err) != OC_OK) {
            OC_ERROR("could not add the sandbox Page", OC_LS("error", err.msg));
            goto out;
        }
    }
    int port = gsim_port(sim);
    OC_INFO("listening", OC_LI("port", port), OC_LS("listen", cfg.listen));
    const char *sig = oc_svc_wait_for_signal();
    OC_INFO("shutting down", OC_LS("signal", sig));
    code = 0;
out:
    gsim_destroy(sim);
    oc_config_free(options, NOPTS, &cfg);
    oc_buf_dispose(&problems);
    return code;
}
