/* omnichatctl: the operator CLI (connect a channel, send, list, timeline, simulate webhooks). */
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "omnichat/log.h"
#include "omnichat/rpc.h"
#include "omnichat/util.h"

static const char usage_text[] =
    "usage: omnichatctl [global options] COMMAND [options]\n"
    "\n"
    "Commands:\n"
    "  connect line --token-file F --secret-file F [--name N]\n"
    "                         connect a LINE Official Account (Connector/ConnectChannel)\n"
    "  connect facebook|instagram --token-file F --account-id ID [--name N]\n"
    "                         connect a Facebook Page (ID: the Page id) or its Instagram\n"
    "                         account (ID: the Instagram account id) with the Page token\n"
    "  channels [--channel line|facebook|instagram]\n"
    "                         list the tenant's channel accounts (never their credentials)\n"
    "  conversations [--channel C] [--account ID] [--thread KEY] [--limit N] [--page-token T]\n"
    "                         list conversations, newest activity first\n"
    "  timeline CONVERSATION_ID [--limit N] [--before CURSOR | --after CURSOR | --oldest]\n"
    "                         show a conversation as a chat log\n"
    "  send CONVERSATION_ID --text T [--key K] [--agent ID] [--agent-name N]\n"
    "                         send a text through the connector (Connector/SendText)\n"
    "  simulate line-webhook --account ID --secret-file F --user U... --text T [--url URL]\n"
    "  simulate meta-webhook --account-id ID --app-secret-file F --user PSID --text T\n"
    "                         [--instagram] [--url URL]: a signed Messenger (or Instagram)\n"
    "                         message, as Meta posts it\n"
    "                         post a signed LINE webhook, as LINE would (sandbox, tests)\n"
    "  vault-keygen [--key-id ID]\n"
    "                         print a new vault key-file line (docs/vault.md)\n"
    "  health [--target ADDR] [--service NAME]\n"
    "                         grpc.health.v1.Health/Check\n"
    "\n"
    "Global options (anywhere on the line):\n"
    "  --persistence ADDR     persistence gRPC address (OMNICHAT_PERSISTENCE, "
    "default " CTL_DEFAULT_PERSISTENCE ")\n"
    "  --connector ADDR       LINE connector gRPC address (OMNICHAT_CONNECTOR, "
    "default " CTL_DEFAULT_CONNECTOR ")\n"
    "  --meta-connector ADDR  Meta connector (facebook, instagram) gRPC address\n"
    "                         (OMNICHAT_META_CONNECTOR, default " CTL_DEFAULT_META_CONNECTOR ")\n"
    "  --tenant UUID          the tenant (OMNICHAT_TENANT)\n"
    "  --tls-cert-file F      client certificate (PEM) for mutual TLS (OMNICHAT_TLS_CERT_FILE)\n"
    "  --tls-key-file F       its private key (OMNICHAT_TLS_KEY_FILE)\n"
    "  --tls-ca-file F        CA the services' certificates must chain to "
    "(OMNICHAT_TLS_CA_FILE);\n"
    "                         all three: TLS, none: plaintext\n"
    "  --json                 machine output: one JSON document on stdout\n"
    "  --timeout-ms N         deadline of each call (default 10000)\n"
    "  --verbose              gRPC and debug logs on stderr\n"
    "\n"
    "Exit status: 0 ok, 1 a call failed (the gRPC status name and message are printed),\n"
    "2 bad usage. Secrets are read from files only and never printed. See docs/omnichatctl.md.\n";

typedef struct command {
    const char *name;
    int (*fn)(ctl_t *ctl, int argc, char **argv);
} command_t;

static const command_t commands[] = {
    {"connect", cmd_connect},
    {"channels", cmd_channels},
    {"conversations", cmd_conversations},
    {"timeline", cmd_timeline},
    {"send", cmd_send},
    {"simulate", cmd_simulate},
    {"vault-keygen", cmd_vault_keygen},
    {"health", cmd_health},
};

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return (v != NULL && v[0] != '\0') ? v : def;
}

int main(int argc, char **argv)
{
    ctl_t ctl;
    const command_t *cmd = NULL;
    bool verbose = false;
    char uuid[OC_UUID_STR_LEN + 1];
    int first = 1, rc;

    setlocale(LC_CTYPE, "");
    signal(SIGPIPE, SIG_IGN);
    memset(&ctl, 0, sizeof ctl);
    ctl.persistence = env_or("OMNICHAT_PERSISTENCE", CTL_DEFAULT_PERSISTENCE);
    ctl.connector = env_or("OMNICHAT_CONNECTOR", CTL_DEFAULT_CONNECTOR);
    ctl.meta_connector = env_or("OMNICHAT_META_CONNECTOR", CTL_DEFAULT_META_CONNECTOR);
    ctl.tenant = env_or("OMNICHAT_TENANT", NULL);
    ctl.tls.cert_file = env_or("OMNICHAT_TLS_CERT_FILE", NULL);
    ctl.tls.key_file = env_or("OMNICHAT_TLS_KEY_FILE", NULL);
    ctl.tls.ca_file = env_or("OMNICHAT_TLS_CA_FILE", NULL);
    ctl.timeout_ms = CTL_DEFAULT_TIMEOUT_MS;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "--verbose") == 0) verbose = true;
    }
    /* gRPC core prints its own complaints (e.g. every failed connect) on stderr; this tool
     * reports failures itself, so they only show with --verbose. */
    oc_log_init("omnichatctl", verbose ? OC_LOG_DEBUG : OC_LOG_OFF);
    oc_rpc_route_core_logs();

    /* The command is the first word that is not a global option (or its value). */
    for (; first < argc; first++) {
        const char *a = argv[first];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0) {
            fputs(usage_text, stdout);
            return CTL_EXIT_OK;
        }
        if (a[0] != '-') break;
        if (strcmp(a, "--json") == 0 || strcmp(a, "--verbose") == 0) {
            ctl.json = ctl.json || strcmp(a, "--json") == 0;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        const char *val = eq ? eq + 1 : (first + 1 < argc ? argv[first + 1] : NULL);
        if (val == NULL) {
            fprintf(stderr, "omnichatctl: option '%s' needs a value\n", a);
            return CTL_EXIT_USAGE;
        }
        if (n == 13 && strncmp(a, "--persistence", n) == 0)
            ctl.persistence = val;
        else if (n == 11 && strncmp(a, "--connector", n) == 0)
            ctl.connector = val;
        else if (n == 16 && strncmp(a, "--meta-connector", n) == 0)
            ctl.meta_connector = val;
        else if (n == 8 && strncmp(a, "--tenant", n) == 0)
            ctl.tenant = val;
        else if (n == 15 && strncmp(a, "--tls-cert-file", n) == 0)
            ctl.tls.cert_file = val;
        else if (n == 14 && strncmp(a, "--tls-key-file", n) == 0)
            ctl.tls.key_file = val;
        else if (n == 13 && strncmp(a, "--tls-ca-file", n) == 0)
            ctl.tls.ca_file = val;
        else if (n == 12 && strncmp(a, "--timeout-ms", n) == 0) {
            long ms = 0;
            if ((rc = ctl_int_opt(&ctl, "--timeout-ms", val, 1, 3600000, &ms)) != 0) return rc;
            ctl.timeout_ms = (int)ms;
        } else {
            fprintf(stderr,
                    "omnichatctl: unknown option '%.*s' (global options come before "
                    "or after the command; see omnichatctl --help)\n",
                    (int)n, a);
            return CTL_EXIT_USAGE;
        }
        if (!eq) first++;
    }
    if (first >= argc) {
        fputs(usage_text, stderr);
        return CTL_EXIT_USAGE;
    }
    int tls_set =
        (ctl.tls.cert_file != NULL) + (ctl.tls.key_file != NULL) + (ctl.tls.ca_file != NULL);
    if (tls_set != 0 && tls_set != 3) {
        /* Half a TLS setting must not quietly mean plaintext. */
        fprintf(stderr, "omnichatctl: --tls-cert-file, --tls-key-file and --tls-ca-file go "
                        "together\n");
        return CTL_EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, argv[first]) == 0) cmd = &commands[i];
    if (cmd == NULL) {
        fprintf(stderr, "omnichatctl: unknown command '%s' (see omnichatctl --help)\n",
                argv[first]);
        return CTL_EXIT_USAGE;
    }

    ctl.command = cmd->name;
    if (oc_uuid_v4(uuid) != OC_OK) {
        fprintf(stderr, "omnichatctl: could not make a request id (no randomness)\n");
        return CTL_EXIT_FAIL;
    }
    snprintf(ctl.request_id, sizeof ctl.request_id, "ctl-%s", uuid);
    ctl.arena = oc_arena_create(0);
    if (ctl.arena == NULL) {
        fprintf(stderr, "omnichatctl: out of memory\n");
        return CTL_EXIT_FAIL;
    }
    rc = cmd->fn(&ctl, argc - first - 1, argv + first + 1);
    ctl_dispose(&ctl);
    oc_arena_destroy(ctl.arena);
    if (rc < 0) rc = CTL_EXIT_OK; /* --help */
    if (fflush(stdout) != 0 && rc == CTL_EXIT_OK) rc = CTL_EXIT_FAIL;
    return rc;
}
