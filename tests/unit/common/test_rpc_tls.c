/* Unit tests for mutual TLS and method roles in the rpc layer (common/src/rpc.c, rpc_tls.c),
 * with certificates from scripts/certs.sh over loopback. */
#include <CUnit/Basic.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "omnichat/rpc.h"
#include "omnichat/util.h"

#include "test_main.h"

typedef Grpc__Health__V1__HealthCheckRequest Req;
#define REQ_DESC (&grpc__health__v1__health_check_request__descriptor)

static char g_dir[64];
static oc_rpc_server_t *g_srv;
static char g_target[64];
static oc_rpc_tls_t g_server_tls;
/* What on_complete saw of the last denied call (server thread; read after the call). */
static atomic_int g_denied;
static char g_denied_peer[64];

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

/* Who: answers the caller's identity as the server saw it. */
static oc_err_t who(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)req;
    Req *r = oc_arena_alloc(ctx->arena, sizeof(*r));
    grpc__health__v1__health_check_request__init(r);
    r->service = oc_arena_strdup(ctx->arena, ctx->peer);
    *resp = &r->base;
    return OC_OK;
}

/* A server stream of one message (the peer), so the unary client can call it too. */
static atomic_int g_stream_starts;
static oc_err_t who_stream(oc_rpc_stream_t *st, oc_rpc_ctx_t *ctx, const ProtobufCMessage *req)
{
    ProtobufCMessage *resp = NULL;
    atomic_fetch_add(&g_stream_starts, 1);
    who(ctx, req, &resp);
    return oc_rpc_stream_end(st, OC_OK, NULL, resp);
}

static const oc_rpc_stream_handlers_t who_stream_handlers = {.on_start = who_stream};

static const oc_rpc_method_t g_methods[] = {
    {.path = "/t.S/OperatorStream",
     .input = REQ_DESC,
     .output = REQ_DESC,
     .roles = OC_RPC_ROLE_OPERATOR,
     .limits = NULL,
     .stream = &who_stream_handlers},
    {"/t.S/Who", REQ_DESC, REQ_DESC, who, OC_RPC_ROLE_ANY, NULL, NULL},
    {"/t.S/OperatorOnly", REQ_DESC, REQ_DESC, who, OC_RPC_ROLE_OPERATOR, NULL, NULL},
    {"/t.S/Nobody", REQ_DESC, REQ_DESC, who, 0, NULL, NULL},
};

static void on_complete(void *user, const oc_rpc_ctx_t *ctx, int status, int64_t latency_us)
{
    (void)user;
    (void)latency_us;
    if (ctx->denied && status == 7) {
        snprintf(g_denied_peer, sizeof g_denied_peer, "%s", ctx->peer);
        atomic_fetch_add(&g_denied, 1);
    }
}

static int sh(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "failed (%d): %s\n", rc, cmd);
    return rc;
}

static int suite_init(void)
{
    char cmd[512];
    snprintf(g_dir, sizeof g_dir, "/tmp/omnichat-rpc-tls-XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    snprintf(cmd, sizeof cmd, "bash '%s/scripts/certs.sh' '%s' server alpha beta >/dev/null",
             OMNICHAT_SOURCE_DIR, g_dir);
    if (sh(cmd) != 0) return 1;
    /* A second CA's client, and files the reload test replaces. */
    snprintf(cmd, sizeof cmd,
             "bash '%s/scripts/certs.sh' '%s/other' alpha >/dev/null && cp '%s/alpha.crt' "
             "'%s/client.crt' && cp '%s/alpha.key' '%s/client.key'",
             OMNICHAT_SOURCE_DIR, g_dir, g_dir, g_dir, g_dir, g_dir);
    if (sh(cmd) != 0) return 1;

    static char cert[128], key[128], ca[128];
    path_of(cert, sizeof cert, "server.crt");
    path_of(key, sizeof key, "server.key");
    path_of(ca, sizeof ca, "ca.crt");
    g_server_tls = (oc_rpc_tls_t){cert, key, ca, NULL};
    oc_rpc_server_opts_t o = {
        .listen = "127.0.0.1:0",
        .workers = 2,
        .on_complete = on_complete,
        .tls = &g_server_tls,
        .client_roles = "alpha=operator, beta=inbox",
    };
    oc_error_t err;
    oc_error_clear(&err);
    g_srv = oc_rpc_server_create(&o, g_methods, sizeof g_methods / sizeof g_methods[0], &err);
    if (!g_srv || oc_rpc_server_start(g_srv, &err) != OC_OK) {
        fprintf(stderr, "server: %s\n", err.msg);
        return 1;
    }
    snprintf(g_target, sizeof g_target, "127.0.0.1:%d", oc_rpc_server_port(g_srv));
    return 0;
}

static int suite_clean(void)
{
    char cmd[128];
    oc_rpc_server_destroy(g_srv);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return sh(cmd) != 0;
}

/* Files for a client presenting NAME's certificate, trusting `ca_dir`'s CA. */
typedef struct files {
    char cert[128], key[128], ca[128];
    oc_rpc_tls_t tls;
} files_t;

static void files_for(files_t *f, const char *cert_name, const char *ca_dir)
{
    snprintf(f->cert, sizeof f->cert, "%s/%s.crt", g_dir, cert_name);
    snprintf(f->key, sizeof f->key, "%s/%s.key", g_dir, cert_name);
    snprintf(f->ca, sizeof f->ca, "%s/ca.crt", ca_dir);
    f->tls = (oc_rpc_tls_t){f->cert, f->key, f->ca, NULL};
}

/* One call; returns the gRPC status and copies the answer (the peer) into out. */
static int call(oc_rpc_client_t *c, const char *method, char *out, size_t cap)
{
    Req req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)"";
    oc_arena_t *a = oc_arena_create(0);
    ProtobufCMessage *resp = NULL;
    int status = -1;
    oc_error_t err;
    oc_error_clear(&err);
    oc_rpc_client_call(c, method, &req.base, REQ_DESC, 3000, NULL, a, &resp, &status, &err);
    if (out) snprintf(out, cap, "%s", status == 0 && resp ? ((Req *)resp)->service : "");
    oc_arena_destroy(a);
    return status;
}

static void test_roles_spec(void)
{
    char why[256];
    CU_ASSERT_TRUE(oc_rpc_roles_valid("", why, sizeof why));
    CU_ASSERT_TRUE(oc_rpc_roles_valid("a=connector,b=inbox, c=operator ,a=inbox", why, sizeof why));
    CU_ASSERT_FALSE(oc_rpc_roles_valid("a=root", why, sizeof why));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "connector, inbox or operator"));
    CU_ASSERT_FALSE(oc_rpc_roles_valid("a", why, sizeof why));
    CU_ASSERT_FALSE(oc_rpc_roles_valid("=operator", why, sizeof why));
}

static void test_roles_decide(void)
{
    files_t alpha, beta;
    files_for(&alpha, "alpha", g_dir);
    files_for(&beta, "beta", g_dir);
    oc_error_t err;
    oc_error_clear(&err);
    oc_rpc_client_t *ca = oc_rpc_client_create_tls(g_target, &alpha.tls, &err);
    oc_rpc_client_t *cb = oc_rpc_client_create_tls(g_target, &beta.tls, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    char peer[64];
    /* The identity is the certificate's SAN that maps to a role. */
    CU_ASSERT_EQUAL(call(ca, "/t.S/Who", peer, sizeof peer), 0);
    CU_ASSERT_STRING_EQUAL(peer, "alpha");
    CU_ASSERT_EQUAL(call(ca, "/t.S/OperatorOnly", NULL, 0), 0);
    /* beta is an inbox: ANY methods yes, operator methods no, and the denial is reported. */
    CU_ASSERT_EQUAL(call(cb, "/t.S/Who", peer, sizeof peer), 0);
    CU_ASSERT_STRING_EQUAL(peer, "beta");
    int before = atomic_load(&g_denied);
    CU_ASSERT_EQUAL(call(cb, "/t.S/OperatorOnly", NULL, 0), 7);
    /* on_complete runs after the status is queued: wait for it, bounded. */
    for (int i = 0; i < 200 && atomic_load(&g_denied) == before; i++)
        usleep(10000);
    CU_ASSERT_EQUAL(atomic_load(&g_denied), before + 1);
    CU_ASSERT_STRING_EQUAL(g_denied_peer, "beta");
    /* A method without roles is closed to everyone, the operator included. */
    CU_ASSERT_EQUAL(call(ca, "/t.S/Nobody", NULL, 0), 7);
    /* Streams are checked at their start the same way: beta's never starts. */
    int starts = atomic_load(&g_stream_starts);
    CU_ASSERT_EQUAL(call(cb, "/t.S/OperatorStream", NULL, 0), 7);
    CU_ASSERT_EQUAL(atomic_load(&g_stream_starts), starts);
    CU_ASSERT_EQUAL(call(ca, "/t.S/OperatorStream", peer, sizeof peer), 0);
    CU_ASSERT_STRING_EQUAL(peer, "alpha");
    CU_ASSERT_EQUAL(atomic_load(&g_stream_starts), starts + 1);
    oc_rpc_client_destroy(ca);
    oc_rpc_client_destroy(cb);
}

static void test_refusals(void)
{
    oc_error_t err;
    oc_error_clear(&err);
    /* Plaintext to a TLS port. */
    oc_rpc_client_t *plain = oc_rpc_client_create(g_target, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(plain);
    CU_ASSERT_EQUAL(call(plain, "/t.S/Who", NULL, 0), 14);
    oc_rpc_client_destroy(plain);
    /* A client certificate of another CA (the server's CA trusted). */
    files_t other;
    char other_dir[96];
    snprintf(other_dir, sizeof other_dir, "%s/other", g_dir);
    files_for(&other, "other/alpha", g_dir);
    oc_rpc_client_t *c = oc_rpc_client_create_tls(g_target, &other.tls, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(call(c, "/t.S/Who", NULL, 0), 14);
    oc_rpc_client_destroy(c);
    /* Trusting only the other CA: the server's certificate is refused by the client. */
    files_for(&other, "alpha", other_dir);
    c = oc_rpc_client_create_tls(g_target, &other.tls, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(call(c, "/t.S/Who", NULL, 0), 14);
    oc_rpc_client_destroy(c);
    /* A key that does not belong to the certificate is a clear error at creation. */
    files_t bad;
    files_for(&bad, "alpha", g_dir);
    snprintf(bad.key, sizeof bad.key, "%s/beta.key", g_dir);
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_rpc_client_create_tls(g_target, &bad.tls, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "does not match"));
}

/* A long-lived client picks up replaced certificate files without being re-created. */
static void test_client_reload(void)
{
    files_t f;
    files_for(&f, "client", g_dir);
    oc_error_t err;
    oc_error_clear(&err);
    oc_rpc_client_t *c = oc_rpc_client_create_tls(g_target, &f.tls, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    char peer[64];
    CU_ASSERT_EQUAL(call(c, "/t.S/Who", peer, sizeof peer), 0);
    CU_ASSERT_STRING_EQUAL(peer, "alpha");
    char cmd[512];
    /* Key first, then certificate, each renamed into place: in between the pair does not
     * match, and the client must keep its working channel. */
    snprintf(cmd, sizeof cmd,
             "cp '%s/beta.key' '%s/client.key.new' && mv '%s/client.key.new' '%s/client.key'",
             g_dir, g_dir, g_dir, g_dir);
    CU_ASSERT_EQUAL_FATAL(sh(cmd), 0);
    sleep(1); /* one check interval (1 s) passes with the half-replaced pair */
    CU_ASSERT_EQUAL(call(c, "/t.S/Who", peer, sizeof peer), 0);
    CU_ASSERT_STRING_EQUAL(peer, "alpha");
    snprintf(cmd, sizeof cmd,
             "cp '%s/beta.crt' '%s/client.crt.new' && mv '%s/client.crt.new' '%s/client.crt'",
             g_dir, g_dir, g_dir, g_dir);
    CU_ASSERT_EQUAL_FATAL(sh(cmd), 0);
    /* Checked at most once a second: poll for up to 5 s. */
    bool seen = false;
    for (int i = 0; i < 50 && !seen; i++) {
        seen = call(c, "/t.S/Who", peer, sizeof peer) == 0 && strcmp(peer, "beta") == 0;
        if (!seen) usleep(100000);
    }
    CU_ASSERT_TRUE(seen);
    oc_rpc_client_destroy(c);
}

int main(void)
{
    oc_rpc_route_core_logs();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("rpc_tls", suite_init, suite_clean);
    CU_add_test(s, "client roles spec", test_roles_spec);
    CU_add_test(s, "roles decide per method; denials reported", test_roles_decide);
    CU_add_test(s, "plaintext, foreign CA and mismatched key refused", test_refusals);
    CU_add_test(s, "client reloads replaced certificate files", test_client_reload);
    return oc_test_run();
}
