/* omnichatctl's shared context: global options, argument parsing, RPC calls, error reporting. */
#include "ctl.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "omnichat/err.h"
#include "omnichat/rpc.h"
#include "omnichat/util.h"

/* gRPC status codes this file names (grpc_status_code values; kept literal like err.h). */
#define GRPC_UNAVAILABLE 14
#define GRPC_DEADLINE_EXCEEDED 4
#define GRPC_UNIMPLEMENTED 12

static void vreport(const ctl_t *ctl, const char *fmt, va_list ap)
{
    fprintf(stderr, "omnichatctl%s%s: ", ctl->command ? " " : "", ctl->command ? ctl->command : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int ctl_usage_error(const ctl_t *ctl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport(ctl, fmt, ap);
    va_end(ap);
    return CTL_EXIT_USAGE;
}

int ctl_fail(const ctl_t *ctl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport(ctl, fmt, ap);
    va_end(ap);
    return CTL_EXIT_FAIL;
}

const char *ctl_connector_for(const ctl_t *ctl, int channel_type)
{
    return channel_type == PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK) ||
                   channel_type == PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM)
               ? ctl->meta_connector
               : ctl->connector;
}

/* Global options: recognised anywhere on the command line. */
static int global_opt(ctl_t *ctl, const char *name, const char *value, bool *takes_value,
                      bool *matched)
{
    *matched = true;
    *takes_value = true;
    if (strcmp(name, "persistence") == 0) {
        if (value) ctl->persistence = value;
    } else if (strcmp(name, "connector") == 0) {
        if (value) ctl->connector = value;
    } else if (strcmp(name, "meta-connector") == 0) {
        if (value) ctl->meta_connector = value;
    } else if (strcmp(name, "tenant") == 0) {
        if (value) ctl->tenant = value;
    } else if (strcmp(name, "timeout-ms") == 0) {
        long ms = 0;
        if (value) {
            int rc = ctl_int_opt(ctl, "--timeout-ms", value, 1, 3600000, &ms);
            if (rc != 0) return rc;
            ctl->timeout_ms = (int)ms;
        }
    } else if (strcmp(name, "json") == 0) {
        *takes_value = false;
        ctl->json = true;
    } else if (strcmp(name, "verbose") == 0) {
        *takes_value = false; /* main() has acted on it already */
    } else {
        *matched = false;
    }
    return 0;
}

int ctl_parse(ctl_t *ctl, int argc, char **argv, const ctl_opt_t *opts, size_t nopts,
              const char **pos, size_t maxpos, size_t *npos, const char *usage)
{
    bool only_positional = false;

    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i], *value = NULL, *eq;
        char name[64];
        size_t nlen;
        bool takes_value = false, matched = false;
        const ctl_opt_t *o = NULL;
        int rc;

        if (only_positional || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (*npos >= maxpos) {
                ctl_usage_error(ctl, "unexpected argument '%s'", arg);
                goto usage;
            }
            pos[(*npos)++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            printf("usage: %s\n", usage);
            return -1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            ctl_usage_error(ctl, "unknown option '%s'", arg);
            goto usage;
        }
        eq = strchr(arg + 2, '=');
        nlen = eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2);
        if (nlen == 0 || nlen >= sizeof name) {
            ctl_usage_error(ctl, "unknown option '%s'", arg);
            goto usage;
        }
        memcpy(name, arg + 2, nlen);
        name[nlen] = '\0';

        for (size_t k = 0; k < nopts; k++)
            if (strcmp(opts[k].name, name) == 0) o = &opts[k];
        if (o != NULL)
            takes_value = o->value != NULL;
        else {
            rc = global_opt(ctl, name, NULL, &takes_value, &matched);
            if (!matched) {
                ctl_usage_error(ctl, "unknown option '--%s'", name);
                goto usage;
            }
        }
        if (takes_value) {
            if (eq)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else {
                ctl_usage_error(ctl, "option '--%s' needs a value", name);
                goto usage;
            }
        } else if (eq) {
            ctl_usage_error(ctl, "option '--%s' takes no value", name);
            goto usage;
        }
        if (o != NULL) {
            if (o->value)
                *o->value = value;
            else
                *o->flag = true;
        } else {
            rc = global_opt(ctl, name, value != NULL ? value : "", &takes_value, &matched);
            if (rc != 0) goto usage;
        }
    }
    return 0;
usage:
    fprintf(stderr, "usage: %s\n", usage);
    return CTL_EXIT_USAGE;
}

int ctl_need_tenant(const ctl_t *ctl, const char **out)
{
    if (ctl->tenant == NULL || ctl->tenant[0] == '\0')
        return ctl_usage_error(ctl, "a tenant is required: give --tenant UUID or set "
                                    "OMNICHAT_TENANT");
    if (!oc_uuid_valid(ctl->tenant))
        return ctl_usage_error(ctl, "--tenant: '%s' is not a UUID", ctl->tenant);
    *out = ctl->tenant;
    return 0;
}

int ctl_int_opt(const ctl_t *ctl, const char *name, const char *value, long min, long max,
                long *out)
{
    char *end = NULL;
    long v;

    if (value == NULL) return 0;
    errno = 0;
    v = strtol(value, &end, 10);
    if (value[0] == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return ctl_usage_error(ctl, "%s: must be a whole number from %ld to %ld, not '%s'", name,
                               min, max, value);
    *out = v;
    return 0;
}

int ctl_channel_opt(const ctl_t *ctl, const char *value, PB(ChannelType) * out)
{
    if (value == NULL) return 0;
    if (strcmp(value, "line") == 0)
        *out = PBE(CHANNEL_TYPE__CHANNEL_TYPE_LINE);
    else if (strcmp(value, "facebook") == 0)
        *out = PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK);
    else if (strcmp(value, "instagram") == 0)
        *out = PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM);
    else
        return ctl_usage_error(ctl, "--channel: must be line, facebook or instagram, not '%s'",
                               value);
    return 0;
}

/* "/omnichat.persistence.v1.Persistence/ListMessages" → "ListMessages". */
static const char *short_method(const char *method)
{
    const char *slash = strrchr(method, '/');
    return slash ? slash + 1 : method;
}

int ctl_call(ctl_t *ctl, const char *target, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int *status_out)
{
    oc_error_t err;
    oc_rpc_client_t *client = NULL;
    int status = 0;
    oc_err_t rc;

    oc_error_clear(&err);
    for (size_t i = 0; i < ctl->nclients; i++)
        if (strcmp(ctl->clients[i].target, target) == 0) client = ctl->clients[i].client;
    if (client == NULL) {
        if (ctl->nclients == sizeof ctl->clients / sizeof ctl->clients[0]) {
            if (status_out) *status_out = 13;
            return ctl_fail(ctl, "too many addresses in one command");
        }
        client = oc_rpc_client_create_tls(target, ctl->tls.cert_file ? &ctl->tls : NULL, &err);
        if (client == NULL) {
            if (status_out) *status_out = 3;
            if (ctl->quiet) return CTL_EXIT_FAIL;
            return ctl_fail(ctl, "cannot use the address '%s': %s", target, err.msg);
        }
        ctl->clients[ctl->nclients].target = target;
        ctl->clients[ctl->nclients].client = client;
        ctl->nclients++;
    }
    rc = oc_rpc_client_call(client, method, req, resp_desc, ctl->timeout_ms, ctl->request_id,
                            ctl->arena, resp, &status, &err);
    if (status_out) *status_out = status;
    if (rc == OC_OK) return CTL_EXIT_OK;
    if (ctl->quiet) return CTL_EXIT_FAIL;

    ctl_fail(ctl, "%s failed: %s: %s", short_method(method), oc_grpc_status_name(status),
             err.msg[0] ? err.msg : oc_err_message(rc));
    if (status == GRPC_UNAVAILABLE)
        fprintf(stderr, "  (is the service at %s running? this is safe to retry)\n", target);
    else if (status == GRPC_DEADLINE_EXCEEDED)
        fprintf(stderr, "  (no answer within %d ms; --timeout-ms sets the deadline)\n",
                ctl->timeout_ms);
    else if (status == GRPC_UNIMPLEMENTED)
        fprintf(stderr,
                "  (the service at %s does not serve %s: wrong --persistence or "
                "--connector address?)\n",
                target, short_method(method));
    fprintf(stderr, "  request id: %s\n", ctl->request_id);
    return CTL_EXIT_FAIL;
}

void ctl_dispose(ctl_t *ctl)
{
    for (size_t i = 0; i < ctl->nclients; i++)
        oc_rpc_client_destroy(ctl->clients[i].client);
    ctl->nclients = 0;
}

int ctl_read_secret(const ctl_t *ctl, const char *what, const char *path, size_t max, char **out)
{
    oc_error_t err;
    struct stat st;
    char *data = NULL;
    size_t len = 0;

    *out = NULL;
    oc_error_clear(&err);
    if (oc_read_file(path, max, false, &data, &len, &err) != OC_OK)
        return ctl_fail(ctl, "could not read the %s from %s: %s", what, path,
                        err.code == OC_E_TOO_LARGE ? "file too large" : err.msg);
    /* Editors and `echo` add line ends; blanks around a token are never part of it. */
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' ' ||
                       data[len - 1] == '\t'))
        data[--len] = '\0';
    if (len == 0) {
        ctl_secret_free(data);
        return ctl_fail(ctl, "the %s file %s is empty", what, path);
    }
    if (memchr(data, '\0', len) != NULL) {
        ctl_secret_free(data);
        return ctl_fail(ctl, "the %s file %s holds a NUL byte", what, path);
    }
    if (stat(path, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        fprintf(stderr,
                "omnichatctl: warning: %s (the %s) can be read by other users; "
                "chmod 600 it\n",
                path, what);
    *out = data;
    return CTL_EXIT_OK;
}

void ctl_secret_free(char *s)
{
    if (s == NULL) return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

int ctl_print_json(json_t *v)
{
    char *s;
    int rc = CTL_EXIT_OK;

    if (v == NULL) {
        fprintf(stderr, "omnichatctl: could not build the JSON output (out of memory)\n");
        return CTL_EXIT_FAIL;
    }
    s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(v);
    if (s == NULL) {
        fprintf(stderr, "omnichatctl: could not encode the JSON output\n");
        return CTL_EXIT_FAIL;
    }
    if (puts(s) == EOF) rc = CTL_EXIT_FAIL;
    free(s);
    return rc;
}
