/* omnichatctl's shared context: global options, argument parsing, RPC calls, error reporting. */
#ifndef CTL_H
#define CTL_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "omnichat/arena.h"
#include "omnichat/pb.h"
#include "omnichat/rpc.h"

#define CTL_PERSISTENCE "/omnichat.persistence.v1.Persistence/"
#define CTL_CONNECTOR "/omnichat.connector.v1.Connector/"

/* Exit codes. */
#define CTL_EXIT_OK 0
#define CTL_EXIT_FAIL 1  /* an RPC or HTTP call failed, or a file could not be read */
#define CTL_EXIT_USAGE 2 /* bad command line */

#define CTL_DEFAULT_PERSISTENCE "127.0.0.1:50051"
#define CTL_DEFAULT_CONNECTOR "127.0.0.1:50052"
#define CTL_DEFAULT_META_CONNECTOR "127.0.0.1:50053"
#define CTL_DEFAULT_TIMEOUT_MS 10000

/* Options every command accepts (anywhere on the command line). */
typedef struct ctl {
    const char *persistence;    /* --persistence, OMNICHAT_PERSISTENCE, default above */
    const char *connector;      /* --connector, OMNICHAT_CONNECTOR, default above: LINE */
    const char *meta_connector; /* --meta-connector, OMNICHAT_META_CONNECTOR: facebook, instagram */
    const char *tenant;         /* --tenant, OMNICHAT_TENANT; NULL when neither is given */
    /* --tls-cert-file/--tls-key-file/--tls-ca-file (OMNICHAT_TLS_*_FILE): mutual TLS to both
     * services when all three are set, plaintext when none is. */
    oc_rpc_tls_t tls;
    bool json;           /* --json: one JSON document on stdout instead of text */
    int timeout_ms;      /* --timeout-ms: deadline of each call */
    const char *command; /* "timeline", "connect line", ... (for messages) */
    bool quiet;          /* ctl_call prints nothing on failure (best-effort look-ups) */
    char request_id[48]; /* sent as x-request-id with every call; printed on failures */
    oc_arena_t *arena;   /* responses and scratch memory; freed at exit */
    /* One channel per target, reused by every call of the command (ctl_dispose frees them). */
    struct {
        const char *target;
        oc_rpc_client_t *client;
    } clients[4];
    size_t nclients;
} ctl_t;

/* The connector address serving a channel type (one connector per provider). */
const char *ctl_connector_for(const ctl_t *ctl, int channel_type);

/* Closes the channels ctl_call opened. */
void ctl_dispose(ctl_t *ctl);

/* One command-specific option. Exactly one of `value` (an option taking a value; it points
 * into argv afterwards) and `flag` (a switch) is set. */
typedef struct ctl_opt {
    const char *name; /* without dashes: "text" for --text */
    const char **value;
    bool *flag;
} ctl_opt_t;

/*
 * Parses argv (the words after the command name) against `opts` plus the global options
 * (stored into ctl). Accepts --name value, --name=value and "--" (everything after it is
 * positional). Positional words go to pos[0..maxpos); *npos receives their count. On a
 * problem prints "omnichatctl CMD: ..." and the command's usage line to stderr and returns
 * CTL_EXIT_USAGE; on --help prints the usage to stdout and returns -1; otherwise 0.
 */
int ctl_parse(ctl_t *ctl, int argc, char **argv, const ctl_opt_t *opts, size_t nopts,
              const char **pos, size_t maxpos, size_t *npos, const char *usage);

/* Prints "omnichatctl CMD: <message>" to stderr and returns CTL_EXIT_USAGE. */
int ctl_usage_error(const ctl_t *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "omnichatctl CMD: <message>" to stderr and returns CTL_EXIT_FAIL. */
int ctl_fail(const ctl_t *ctl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The tenant, validated: returns 0 and sets *out, or prints a usage error and returns 2. */
int ctl_need_tenant(const ctl_t *ctl, const char **out);
/* Parses a decimal integer option in [min, max]; 0 or a usage error (2). NULL value: keeps *out. */
int ctl_int_opt(const ctl_t *ctl, const char *name, const char *value, long min, long max,
                long *out);
/* "line" / "facebook" / "instagram" → the enum value; 0 or a usage error (2). */
int ctl_channel_opt(const ctl_t *ctl, const char *value, PB(ChannelType) * out);

/*
 * One blocking unary call to `target` (a persistence or connector address). `method` is the
 * full path. The response is unpacked into ctl->arena. On failure prints
 * "omnichatctl CMD: METHOD failed: STATUS_NAME: server message" (plus a hint when the server
 * could not be reached) and returns CTL_EXIT_FAIL; *status_out (optional) gets the gRPC status.
 */
int ctl_call(ctl_t *ctl, const char *target, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, int *status_out);

/*
 * Reads a secret from a file: the whole file, trailing CR/LF and blanks stripped, at most
 * `max` bytes. Refuses an empty file. Warns on stderr (without the contents) when group or
 * others may read it. On success *out is a malloc'ed NUL-terminated string the caller wipes
 * and frees with ctl_secret_free. Returns 0, or prints the reason and returns CTL_EXIT_FAIL.
 */
int ctl_read_secret(const ctl_t *ctl, const char *what, const char *path, size_t max, char **out);
/* Wipes (OPENSSL_cleanse) and frees a string from ctl_read_secret. NULL is fine. */
void ctl_secret_free(char *s);

/* Writes a jansson value to stdout as one line of compact JSON and frees it. Returns 0, or
 * CTL_EXIT_FAIL when it cannot be encoded or written. */
int ctl_print_json(json_t *v);

/* Commands (argv[0] is the first word after the command name). */
int cmd_channels(ctl_t *ctl, int argc, char **argv);
int cmd_conversations(ctl_t *ctl, int argc, char **argv);
int cmd_timeline(ctl_t *ctl, int argc, char **argv);
int cmd_send(ctl_t *ctl, int argc, char **argv);
int cmd_connect(ctl_t *ctl, int argc, char **argv);
int cmd_health(ctl_t *ctl, int argc, char **argv);
int cmd_vault_keygen(ctl_t *ctl, int argc, char **argv);
int cmd_simulate(ctl_t *ctl, int argc, char **argv);

#endif
