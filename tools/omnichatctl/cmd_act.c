/* omnichatctl's commands that change or probe things: connect, send, health, vault-keygen. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "grpc/health/v1/health.pb-c.h"
#include "omnichat/util.h"
#include "omnichat/vault.h"
#include "render.h"

/* Credentials are short (LINE tokens ~200 bytes); the connector refuses more than 1 KiB. */
#define SECRET_FILE_MAX 65536

/* ---- connect ---------------------------------------------------------------------------- */

int cmd_connect(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] =
        "omnichatctl connect line --token-file FILE --secret-file FILE [--name NAME]\n"
        "       omnichatctl connect facebook|instagram --token-file FILE --account-id ID "
        "[--name NAME]";
    const char *token_file = NULL, *secret_file = NULL, *name = NULL, *token_arg = NULL,
               *secret_arg = NULL, *account_id = NULL, *tenant = NULL, *pos[1];
    size_t npos;
    ctl_opt_t opts[] = {{"token-file", &token_file, NULL},
                        {"secret-file", &secret_file, NULL},
                        {"name", &name, NULL},
                        {"account-id", &account_id, NULL},
                        /* Accepted only to refuse them with a clear reason. */
                        {"token", &token_arg, NULL},
                        {"secret", &secret_arg, NULL}};
    CPB(ConnectChannelRequest) req = CPB_INIT(CONNECT_CHANNEL_REQUEST);
    CPB(ConnectChannelResponse) *resp = NULL;
    char *token = NULL, *secret = NULL;
    const PB(ChannelAccount) * acc;
    PB(ChannelType) type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_LINE);
    bool meta;
    int rc;

    if ((rc = ctl_parse(ctl, argc, argv, opts, 6, pos, 1, &npos, usage)) != 0) return rc;
    if (token_arg != NULL || secret_arg != NULL)
        return ctl_usage_error(ctl, "credentials are read from files only, never from the "
                                    "command line (other users can see it): use --token-file "
                                    "and --secret-file");
    if (npos != 1 || (strcmp(pos[0], "line") != 0 && strcmp(pos[0], "facebook") != 0 &&
                      strcmp(pos[0], "instagram") != 0)) {
        if (npos == 1)
            ctl_usage_error(ctl, "channel '%s' is not supported (line, facebook, instagram)",
                            pos[0]);
        else
            ctl_usage_error(ctl, "which channel? (line, facebook, instagram)");
        fprintf(stderr, "usage: %s\n", usage);
        return CTL_EXIT_USAGE;
    }
    meta = strcmp(pos[0], "line") != 0;
    if (meta)
        type = strcmp(pos[0], "facebook") == 0 ? PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK)
                                               : PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM);
    if (!meta && (token_file == NULL || secret_file == NULL))
        return ctl_usage_error(ctl, "--token-file and --secret-file are required");
    if (meta && (token_file == NULL || account_id == NULL || account_id[0] == '\0'))
        return ctl_usage_error(
            ctl,
            "--token-file (the Page access token) and --account-id (the "
            "%s id) are required",
            type == PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK) ? "Page" : "Instagram account");
    if ((rc = ctl_need_tenant(ctl, &tenant)) != 0) return rc;

    if ((rc = ctl_read_secret(ctl, meta ? "Page access token" : "channel access token", token_file,
                              SECRET_FILE_MAX, &token)) != 0)
        goto out;
    if (!meta &&
        (rc = ctl_read_secret(ctl, "channel secret", secret_file, SECRET_FILE_MAX, &secret)) != 0)
        goto out;
    req.channel_type = type;
    req.external_account_id = (char *)(account_id != NULL ? account_id : "");
    req.tenant_id = (char *)tenant;
    req.access_token = token;
    req.channel_secret = (char *)(secret != NULL ? secret : "");
    req.display_name = (char *)(name != NULL ? name : "");
    rc = ctl_call(ctl, ctl_connector_for(ctl, type), CTL_CONNECTOR "ConnectChannel", &req.base,
                  &omnichat__connector__v1__connect_channel_response__descriptor,
                  (ProtobufCMessage **)&resp, NULL);
    /* The plaintext is no longer needed, whatever the outcome. */
    ctl_secret_free(token);
    ctl_secret_free(secret);
    token = secret = NULL;
    if (rc != 0) goto out;
    acc = resp->channel_account;
    if (acc == NULL) {
        rc = ctl_fail(ctl, "ConnectChannel answered without a channel account");
        goto out;
    }

    if (ctl->json) {
        json_t *root = json_object();
        if (root != NULL) {
            json_object_set_new(root, "channel_account", rnd_json_account(ctl->arena, acc));
            json_object_set_new(root, "webhook_path", json_string(resp->webhook_path));
        }
        rc = ctl_print_json(root);
        goto out;
    }
    printf("connected %s channel account for tenant %s\n",
           rnd_channel(ctl->arena, acc->channel_type), tenant);
    printf("  account id:    %s\n", acc->channel_account_id);
    printf("  external id:   %s\n", rnd_cell(ctl->arena, acc->external_account_id, 0, 0));
    printf("  name:          %s\n", rnd_cell(ctl->arena, acc->display_name, 0, 0));
    printf("  status:        %s\n", rnd_channel_status(ctl->arena, acc->status));
    printf("  webhook path:  %s\n", rnd_cell(ctl->arena, resp->webhook_path, 0, 0));
    printf("                 (%s must POST to the connector's HTTP address + this path)\n",
           meta ? "Meta" : "LINE");
    rc = CTL_EXIT_OK;
out:
    ctl_secret_free(token);
    ctl_secret_free(secret);
    return rc;
}

/* ---- send ------------------------------------------------------------------------------- */

/* The connector of the conversation's channel type (persistence knows it); the LINE one when
 * the look-up fails (SendText then reports what is wrong). */
static const char *conversation_connector(ctl_t *ctl, const char *tenant, const char *conv)
{
    PB(GetConversationRequest) req = PB_INIT(GET_CONVERSATION_REQUEST);
    PB(GetConversationResponse) *resp = NULL;
    int rc;

    req.tenant_id = (char *)tenant;
    req.conversation_id = (char *)conv;
    ctl->quiet = true;
    rc = ctl_call(ctl, ctl->persistence, CTL_PERSISTENCE "GetConversation", &req.base,
                  &omnichat__persistence__v1__get_conversation_response__descriptor,
                  (ProtobufCMessage **)&resp, NULL);
    ctl->quiet = false;
    if (rc != 0 || resp->conversation == NULL) return ctl->connector;
    return ctl_connector_for(ctl, resp->conversation->channel_type);
}

int cmd_send(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] = "omnichatctl send CONVERSATION_ID --text TEXT [--key KEY] "
                                "[--agent ID] [--agent-name NAME]";
    const char *text = NULL, *key = NULL, *agent = "omnichatctl", *agent_name = "", *tenant = NULL,
               *pos[1];
    char generated[OC_UUID_STR_LEN + 1];
    size_t npos;
    ctl_opt_t opts[] = {{"text", &text, NULL},
                        {"key", &key, NULL},
                        {"agent", &agent, NULL},
                        {"agent-name", &agent_name, NULL}};
    CPB(SendTextRequest) req = CPB_INIT(SEND_TEXT_REQUEST);
    CPB(SendTextResponse) *resp = NULL;
    const PB(Message) * m;
    int rc;

    if ((rc = ctl_parse(ctl, argc, argv, opts, 4, pos, 1, &npos, usage)) != 0) return rc;
    if (npos != 1) {
        ctl_usage_error(ctl, "which conversation? give its id");
        fprintf(stderr, "usage: %s\n", usage);
        return CTL_EXIT_USAGE;
    }
    if (text == NULL || text[0] == '\0') return ctl_usage_error(ctl, "--text: is required");
    if (key != NULL && key[0] == '\0') return ctl_usage_error(ctl, "--key: must not be empty");
    if (agent[0] == '\0') return ctl_usage_error(ctl, "--agent: must not be empty");
    if ((rc = ctl_need_tenant(ctl, &tenant)) != 0) return rc;
    if (key == NULL) {
        if (oc_uuid_v4(generated) != OC_OK) return ctl_fail(ctl, "could not make a key");
        key = generated;
    }

    req.tenant_id = (char *)tenant;
    req.conversation_id = (char *)pos[0];
    req.text = (char *)text;
    const char *target = conversation_connector(ctl, tenant, pos[0]);
    req.idempotency_key = (char *)key;
    req.sender_id = (char *)agent;
    req.sender_display_name = (char *)agent_name;
    rc = ctl_call(ctl, target, CTL_CONNECTOR "SendText", &req.base,
                  &omnichat__connector__v1__send_text_response__descriptor,
                  (ProtobufCMessage **)&resp, NULL);
    if (rc != 0) {
        /* Whether or not it went out, the same key makes a retry safe. */
        fprintf(stderr,
                "  idempotency key: %s (retry with the same --text and --key %s: it "
                "is never sent twice)\n",
                key, key);
        return rc;
    }
    m = resp->message;
    if (m == NULL) return ctl_fail(ctl, "SendText answered without a message");

    if (ctl->json) {
        json_t *root = json_object();
        if (root != NULL) {
            json_object_set_new(root, "message", rnd_json_message(ctl->arena, m));
            json_object_set_new(root, "idempotency_key", json_string(key));
        }
        return ctl_print_json(root);
    }
    const char *cat = rnd_error_category(ctl->arena, m->error_category);
    printf("message id:   %s\n", m->message_id);
    printf("status:       %s\n", rnd_message_status(ctl->arena, m->status));
    printf("category:     %s\n", cat[0] ? cat : "-");
    printf("attempts:     %d\n", (int)m->attempts);
    if (m->external_message_id[0])
        printf("provider id:  %s\n", rnd_cell(ctl->arena, m->external_message_id, 0, 0));
    printf("key:          %s\n", key);
    switch (m->status) {
    case PBE(MESSAGE_STATUS__MESSAGE_STATUS_PENDING):
    case PBE(MESSAGE_STATUS__MESSAGE_STATUS_UNKNOWN):
        printf("(not confirmed yet: the connector retries it by itself; watch it with "
               "omnichatctl timeline %s)\n",
               pos[0]);
        break;
    case PBE(MESSAGE_STATUS__MESSAGE_STATUS_FAILED):
        printf("(delivery failed permanently: %s)\n", cat[0] ? cat : "no category");
        break;
    default:
        break;
    }
    return CTL_EXIT_OK;
}

/* ---- health ----------------------------------------------------------------------------- */

static const char *serving_name(int s)
{
    switch (s) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
        return "SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
        return "NOT_SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
        return "SERVICE_UNKNOWN";
    default:
        return "UNKNOWN";
    }
}

int cmd_health(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] = "omnichatctl health [--target ADDR] [--service NAME]";
    const char *target = NULL, *service = "", *pos[1];
    size_t npos;
    ctl_opt_t opts[] = {{"target", &target, NULL}, {"service", &service, NULL}};
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    int rc;

    if ((rc = ctl_parse(ctl, argc, argv, opts, 2, pos, 0, &npos, usage)) != 0) return rc;
    if (target == NULL) target = ctl->persistence;
    req.service = (char *)service;
    rc = ctl_call(ctl, target, "/grpc.health.v1.Health/Check", &req.base,
                  &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&resp,
                  NULL);
    if (rc != 0) return rc;
    if (ctl->json) {
        json_t *root = json_object();
        if (root != NULL) {
            json_object_set_new(root, "target", json_string(target));
            json_object_set_new(root, "service", json_string(service));
            json_object_set_new(root, "status", json_string(serving_name(resp->status)));
        }
        rc = ctl_print_json(root);
        if (rc != 0) return rc;
    } else {
        printf("%s %s%s%s\n", target, service[0] ? service : "", service[0] ? " " : "",
               serving_name(resp->status));
    }
    return resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
               ? CTL_EXIT_OK
               : CTL_EXIT_FAIL;
}

/* ---- vault-keygen ----------------------------------------------------------------------- */

int cmd_vault_keygen(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] = "omnichatctl vault-keygen [--key-id ID | ID]";
    const char *key_id = NULL, *pos[1];
    char def_id[32], line[OC_VAULT_KEYGEN_LINE_MAX];
    size_t npos;
    ctl_opt_t opts[] = {{"key-id", &key_id, NULL}};
    oc_error_t err;
    int rc;

    if ((rc = ctl_parse(ctl, argc, argv, opts, 1, pos, 1, &npos, usage)) != 0) return rc;
    if (npos == 1) {
        if (key_id != NULL) return ctl_usage_error(ctl, "give the key id once");
        key_id = pos[0];
    }
    if (key_id == NULL) {
        /* A date-time id sorts, says when the key was made, and does not repeat. */
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(def_id, sizeof def_id, "%Y%m%dT%H%M%SZ", &tm);
        key_id = def_id;
    }
    oc_error_clear(&err);
    if (oc_vault_keygen_line(key_id, line, sizeof line, &err) != OC_OK) {
        if (err.code == OC_E_INVALID) return ctl_usage_error(ctl, "--key-id: %s", err.msg);
        return ctl_fail(ctl, "could not make a key: %s", err.msg);
    }
    if (isatty(STDOUT_FILENO))
        fprintf(stderr, "omnichatctl: the line below is a secret key: append it to the vault "
                        "key file (mode 0600) and clear your terminal\n");
    rc = printf("%s\n", line) < 0 ? CTL_EXIT_FAIL : CTL_EXIT_OK;
    if (fflush(stdout) != 0) rc = CTL_EXIT_FAIL;
    OPENSSL_cleanse(line, sizeof line);
    return rc;
}
