/* omnichat-line-sim: serves the simulated LINE Messaging API until SIGTERM or SIGINT. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "line_sim.h"
#include "omnichat/config.h"
#include "omnichat/log.h"
#include "omnichat/svc.h"

typedef struct sim_cfg {
    char *listen;
    char *tokens_file;
    bool sandbox;
    char *token; /* contents of --token-file */
    long long threads;
    long long max_requests;
    long long max_record_mb;
    long long max_retry_keys;
    char *log_level;
} sim_cfg_t;

static bool valid_level(const char *v, char *why, size_t len)
{
    if (oc_log_level_parse(v) >= 0) return true;
    snprintf(why, len, "must be one of debug, info, warn, error, off");
    return false;
}

static const oc_config_option_t options[] = {
    {"listen", OC_CFG_STR, "127.0.0.1:0", 0, 0, 0, offsetof(sim_cfg_t, listen),
     "address to serve on; port 0 picks a free one (logged as {\"msg\":\"listening\"})", NULL},
    {"tokens-file", OC_CFG_STR, NULL, 0, 0, 0, offsetof(sim_cfg_t, tokens_file),
     "bots to preload, one per line: token bot_user_id display name", NULL},
    {"sandbox", OC_CFG_BOOL, "false", 0, 0, 0, offsetof(sim_cfg_t, sandbox),
     "preload the documented sandbox bot (needs --token-file)", NULL},
    {"token-file", OC_CFG_SECRET_FILE, NULL, 0, 0, 0, offsetof(sim_cfg_t, token),
     "file holding the sandbox bot's channel access token", NULL},
    {"threads", OC_CFG_INT, "16", 1, 512, 0, offsetof(sim_cfg_t, threads),
     "HTTP handler threads (injected delays occupy one each)", NULL},
    {"max-requests", OC_CFG_INT, "100000", 1, 10000000, 0, offsetof(sim_cfg_t, max_requests),
     "requests kept in /__sim/requests (oldest dropped)", NULL},
    {"max-record-mb", OC_CFG_INT, "256", 1, 65536, 0, offsetof(sim_cfg_t, max_record_mb),
     "memory for the request and delivery logs together", NULL},
    {"max-retry-keys", OC_CFG_INT, "200000", 1, 100000000, 0, offsetof(sim_cfg_t, max_retry_keys),
     "accepted retry keys kept (oldest dropped)", NULL},
    {"log-level", OC_CFG_STR, "info", 0, 0, 0, offsetof(sim_cfg_t, log_level),
     "debug, info, warn, error or off", valid_level},
};
#define NOPTS (sizeof options / sizeof options[0])

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0) return true;
    return false;
}

int main(int argc, char **argv)
{
    sim_cfg_t cfg = {0};
    lsim_t *sim = NULL;
    int code = 1;
    oc_buf_t problems;
    oc_buf_init(&problems, 64 * 1024);
    static const char *const passthrough[] = {"help", "check-config", NULL};

    /* Block the stop signals before any thread exists so every thread inherits the mask and
     * only oc_svc_wait_for_signal below ever sees them. */
    oc_svc_block_signals();

    if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
        printf("Simulated LINE Messaging API for tests and sandbox mode; see "
               "docs/line-simulator.md.\n");
        oc_config_usage(options, NOPTS, argv[0]);
        code = 0;
        goto out;
    }
    bool check_only = has_flag(argc, argv, "--check-config");
    if (oc_config_load(options, NOPTS, &cfg, argc, argv, passthrough, &problems) != OC_OK) {
        fprintf(stderr, "%s", problems.data ? problems.data : "invalid configuration\n");
        goto out;
    }
    if (cfg.sandbox && (!cfg.token || !cfg.token[0])) {
        fprintf(stderr, "--sandbox: needs --token-file with the sandbox bot's token\n");
        goto out;
    }
    if (check_only) {
        code = 0;
        goto out;
    }

    oc_log_init("line-sim", (oc_log_level_t)oc_log_level_parse(cfg.log_level));
    oc_error_t err;
    oc_error_clear(&err);
    lsim_opts_t opts = {
        .listen = cfg.listen,
        .threads = (int)cfg.threads,
        .max_requests = (size_t)cfg.max_requests,
        .max_deliveries = (size_t)cfg.max_requests,
        .max_record_bytes = (size_t)cfg.max_record_mb << 20,
        .max_retry_keys = (size_t)cfg.max_retry_keys,
    };
    sim = lsim_create(&opts, &err);
    if (!sim) {
        OC_ERROR("could not start the simulator", OC_LS("listen", cfg.listen),
                 OC_LS("error", err.msg));
        goto out_sim;
    }
    if (cfg.tokens_file && lsim_load_tokens_file(sim, cfg.tokens_file, &err) != OC_OK) {
        OC_ERROR("could not load the tokens file", OC_LS("error", err.msg));
        goto out_sim;
    }
    if (cfg.sandbox) {
        lsim_bot_def_t def = {.token = cfg.token,
                              .user_id = LSIM_SANDBOX_USER_ID,
                              .display_name = LSIM_SANDBOX_DISPLAY_NAME,
                              .basic_id = LSIM_SANDBOX_BASIC_ID};
        if (lsim_add_bot(sim, &def, &err) != OC_OK) {
            OC_ERROR("could not add the sandbox bot", OC_LS("error", err.msg));
            goto out_sim;
        }
        OC_INFO("sandbox bot loaded", OC_LS("bot_user_id", LSIM_SANDBOX_USER_ID));
    }
    OC_INFO("listening", OC_LI("port", lsim_port(sim)), OC_LS("listen", cfg.listen));

    /* Outside the log call: its arguments are not evaluated when info is off. */
    const char *sig = oc_svc_wait_for_signal();
    OC_INFO("shutting down", OC_LS("signal", sig));
    code = 0;
out_sim:
    lsim_destroy(sim);
out:
    oc_config_free(options, NOPTS, &cfg);
    oc_buf_dispose(&problems);
    return code;
}
