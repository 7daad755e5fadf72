/* Private to rpc.c: TLS credentials that follow their files, and client roles from certificates. */
#ifndef OMNICHAT_RPC_TLS_H
#define OMNICHAT_RPC_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "omnichat/err.h"
#include "omnichat/rpc.h"

/* What a file looked like when it was last read: any difference means "read it again". */
typedef struct rpc_tls_stamp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
} rpc_tls_stamp_t;

typedef struct rpc_tls_stamps {
    rpc_tls_stamp_t f[3]; /* cert, key, ca */
} rpc_tls_stamps_t;

/* Server credentials whose certificate config is re-read when the files change. */
typedef struct rpc_tls_server rpc_tls_server_t;

/* Checks the files now (so a bad file is a clear start-up error, not a failed listen) and
 * returns credentials that fetch them on each new connection. *watch must be freed with
 * rpc_tls_server_free after the grpc_server that uses the credentials is destroyed. */
grpc_server_credentials *rpc_tls_server_creds(const oc_rpc_tls_t *tls, rpc_tls_server_t **watch,
                                              oc_error_t *err);
/* New credentials for a rebuilt listener that follow the same watch (and files). The first
 * fetch of the new credentials reads the files again. */
grpc_server_credentials *rpc_tls_server_creds_renew(rpc_tls_server_t *w, oc_error_t *err);
void rpc_tls_server_free(rpc_tls_server_t *w);

/* Client credentials from the files as they are now; *stamps records what was read. */
grpc_channel_credentials *rpc_tls_client_creds(const oc_rpc_tls_t *tls, rpc_tls_stamps_t *stamps,
                                               oc_error_t *err);
/* True when a file differs from `stamps` (or cannot be looked at). */
bool rpc_tls_changed(const oc_rpc_tls_t *tls, const rpc_tls_stamps_t *stamps);

/* The client_roles map of a server. */
typedef struct rpc_roles {
    size_t n;
    struct rpc_role_entry {
        char *name;
        unsigned roles;
    } * e;
} rpc_roles_t;

oc_err_t rpc_roles_parse(const char *spec, rpc_roles_t *out, oc_error_t *err);
void rpc_roles_free(rpc_roles_t *r);
/* The roles of the call's authenticated peer (the union over its certificate's SANs, plus
 * OC_RPC_ROLE_ANY when authenticated at all); 0 when unauthenticated. `peer` receives the
 * mapped SAN, else the first SAN, for logs. */
unsigned rpc_roles_of_call(const rpc_roles_t *r, grpc_call *call, char *peer, size_t peer_cap);

#endif
