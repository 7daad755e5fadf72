/* A fake persistence (gRPC) shared by the unit tests of the connector engine and its providers:
 * it answers one stored channel account and records what it was asked. */
#ifndef TEST_FAKE_PERSISTENCE_H
#define TEST_FAKE_PERSISTENCE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "omnichat/pb.h"
#include "omnichat/rpc.h"
#include "omnichat/util.h"
#include "omnichat/vault.h"

#define FAKE_UNUSED __attribute__((unused))
#define FAKE_TENANT "0191d7a2-3b4c-7d5e-8f60-718293a4b5c6"
#define FAKE_ACCOUNT "0191d7a2-3b4c-7d5e-8f60-718293a4b5c7"
#define FAKE_MESSAGE "0191d7a2-3b4c-7d5e-8f60-718293a4b5c8"
#define FAKE_TOKEN "fake-access-token-0123456789"
#define FAKE_SECRET "fake-channel-secret-0123456789ab"
#define FAKE_BOT "Ub0000000000000000000000000000042"

/* Each user of this header defines it: forgets the provider fake's faults and counters. */
static void fake_line_reset(void);
/* A throw-away vault key (32 zero-free bytes, base64). */
#define FAKE_VAULT_KEYS "unit-1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"

enum {
    M_GET,
    M_RESOLVE,
    M_COMPLETE,
    M_RECORD,
    M_PERSIST,
    M_REGISTER,
    M_UPDATE,
    M_CLAIM,
    M_RECONCILE,
    M_COUNT
};

#define FAKE_DUE_MAX 8

/* What the fake answers and what it saw. Guarded by mu (handlers run on server threads). */
typedef struct fake {
    pthread_mutex_t mu;
    oc_rpc_server_t *pst;
    int pst_port;
    uint8_t *account; /* packed ChannelAccount answered by Get/Resolve/Record */
    size_t account_len;
    int sleep_ms[M_COUNT];
    int calls[M_COUNT];
    oc_err_t persist_error; /* PersistInbound fails with this when not OC_OK */
    bool update_without_account;
    uint8_t *last_complete; /* packed CompleteOutboundRequest */
    size_t last_complete_len;
    /* ClaimDueOutbound hands these out once (packed Messages), with thread key "thread-1" */
    uint8_t *due[FAKE_DUE_MAX];
    size_t due_len[FAKE_DUE_MAX];
    int ndue;
    int last_claim_types[4]; /* the channel types of the last claim */
    size_t last_claim_ntypes;
    char reconcile_known[40]; /* ReconcileOutbound finds this message id, NOT_FOUND otherwise */
    char last_reconciled[40];
    int persisted_messages;        /* InboundMessages received, in all */
    char persisted_tenants[4][40]; /* tenant of each PersistInbound, in order */
    int npersisted_tenants;
} fake_t;

static fake_t F = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void fake_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    if (ms > 0) nanosleep(&ts, NULL);
}

/* Counts the call and sleeps as configured; returns the stored account (in the arena). */
static PB(ChannelAccount) * fake_enter(oc_rpc_ctx_t *ctx, int m)
{
    ProtobufCAllocator alloc;
    PB(ChannelAccount) *acc = NULL;
    int sleep_ms;

    pthread_mutex_lock(&F.mu);
    F.calls[m]++;
    sleep_ms = F.sleep_ms[m];
    oc_arena_protobuf_allocator(ctx->arena, &alloc);
    if (F.account != NULL)
        acc = (PB(ChannelAccount) *)protobuf_c_message_unpack(
            &omnichat__persistence__v1__channel_account__descriptor, &alloc, F.account_len,
            F.account);
    pthread_mutex_unlock(&F.mu);
    fake_sleep_ms(sleep_ms);
    return acc;
}

static oc_err_t fake_get(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    PB(GetChannelAccountResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(GetChannelAccountResponse) init = PB_INIT(GET_CHANNEL_ACCOUNT_RESPONSE);

    (void)in;
    *r = init;
    r->channel_account = fake_enter(ctx, M_GET);
    if (r->channel_account == NULL)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "channel_account_id: not found");
    *out = &r->base;
    return OC_OK;
}

/* By id: the stored account. By external id: FAKE_EXTERNAL2 is the same account moved to
 * FAKE_TENANT2 (a second tenant), FAKE_EXTERNAL_UNKNOWN is not connected. */
#define FAKE_TENANT2 "0191d7a2-3b4c-7d5e-8f60-718293a4b5d6"
#define FAKE_ACCOUNT2 "0191d7a2-3b4c-7d5e-8f60-718293a4b5d7"
#define FAKE_EXTERNAL2 "page-2"
#define FAKE_EXTERNAL_UNKNOWN "page-unknown"

static oc_err_t fake_resolve(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const PB(ResolveChannelAccountRequest) *req = (const void *)in;
    PB(ResolveChannelAccountResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(ResolveChannelAccountResponse) init = PB_INIT(RESOLVE_CHANNEL_ACCOUNT_RESPONSE);
    const char *ext = req->external_account_id;

    *r = init;
    r->channel_account = fake_enter(ctx, M_RESOLVE);
    if (ext != NULL && strcmp(ext, FAKE_EXTERNAL_UNKNOWN) == 0) r->channel_account = NULL;
    if (ext != NULL && strcmp(ext, FAKE_EXTERNAL2) == 0 && r->channel_account != NULL) {
        r->channel_account->tenant_id = (char *)FAKE_TENANT2;
        r->channel_account->channel_account_id = (char *)FAKE_ACCOUNT2;
        r->channel_account->external_account_id = (char *)FAKE_EXTERNAL2;
    }
    if (r->channel_account == NULL)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "channel_account_id: not found");
    *out = &r->base;
    return OC_OK;
}

static oc_err_t fake_record(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    PB(RecordChannelStatusResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(RecordChannelStatusResponse) init = PB_INIT(RECORD_CHANNEL_STATUS_RESPONSE);

    (void)in;
    *r = init;
    r->channel_account = fake_enter(ctx, M_RECORD);
    *out = &r->base;
    return OC_OK;
}

/* Records the request; answers the message as persistence would store it. */
static oc_err_t fake_complete(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const PB(CompleteOutboundRequest) *req = (const void *)in;
    PB(CompleteOutboundResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(CompleteOutboundResponse) init = PB_INIT(COMPLETE_OUTBOUND_RESPONSE);
    PB(Message) *m = oc_arena_alloc(ctx->arena, sizeof *m);
    PB(Message) minit = PB_INIT(MESSAGE);
    static const int status_of[] = {0, 3, 4, 2, 5}; /* outcome -> MessageStatus */

    (void)fake_enter(ctx, M_COMPLETE);
    pthread_mutex_lock(&F.mu);
    free(F.last_complete);
    F.last_complete_len = protobuf_c_message_get_packed_size(in);
    F.last_complete = malloc(F.last_complete_len + 1);
    protobuf_c_message_pack(in, F.last_complete);
    pthread_mutex_unlock(&F.mu);
    *r = init;
    *m = minit;
    m->message_id = req->message_id;
    m->tenant_id = req->tenant_id;
    m->status = req->outcome >= 1 && req->outcome <= 4 ? status_of[req->outcome] : 0;
    m->error_category = req->error_category;
    m->error_detail = req->error_detail;
    m->next_attempt_at_ms = req->next_attempt_at_ms;
    r->message = m;
    *out = &r->base;
    return OC_OK;
}

static oc_err_t fake_persist(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const PB(PersistInboundRequest) *req = (const void *)in;
    PB(PersistInboundResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(PersistInboundResponse) init = PB_INIT(PERSIST_INBOUND_RESPONSE);
    oc_err_t fail;

    (void)fake_enter(ctx, M_PERSIST);
    pthread_mutex_lock(&F.mu);
    fail = F.persist_error;
    pthread_mutex_unlock(&F.mu);
    if (fail != OC_OK)
        return oc_error_set(&ctx->err, fail, "messages[0].content_text: not valid UTF-8");
    pthread_mutex_lock(&F.mu);
    F.persisted_messages += (int)req->n_messages;
    if (F.npersisted_tenants < 4)
        snprintf(F.persisted_tenants[F.npersisted_tenants++], sizeof F.persisted_tenants[0], "%s",
                 req->tenant_id);
    pthread_mutex_unlock(&F.mu);
    *r = init;
    r->n_results = req->n_messages;
    r->results = oc_arena_alloc(ctx->arena, (req->n_messages + 1) * sizeof *r->results);
    for (size_t i = 0; i < req->n_messages; i++) {
        PB(InboundResult) *x = oc_arena_alloc(ctx->arena, sizeof *x);
        PB(InboundResult) xinit = PB_INIT(INBOUND_RESULT);
        *x = xinit;
        x->created = true;
        r->results[i] = x;
    }
    *out = &r->base;
    return OC_OK;
}

static oc_err_t fake_register(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    PB(RegisterChannelAccountResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(RegisterChannelAccountResponse) init = PB_INIT(REGISTER_CHANNEL_ACCOUNT_RESPONSE);
    PB(ChannelAccount) *acc = fake_enter(ctx, M_REGISTER);

    (void)in;
    *r = init;
    /* As persistence does now: a new account has no credentials and is AUTH_FAILED. */
    acc->status = PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED);
    acc->n_credentials = 0;
    r->channel_account = acc;
    r->created = true;
    *out = &r->base;
    return OC_OK;
}

static oc_err_t fake_update(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    PB(UpdateChannelCredentialsResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(UpdateChannelCredentialsResponse) init = PB_INIT(UPDATE_CHANNEL_CREDENTIALS_RESPONSE);
    PB(ChannelAccount) *acc = fake_enter(ctx, M_UPDATE);
    bool without;

    (void)in;
    pthread_mutex_lock(&F.mu);
    without = F.update_without_account;
    pthread_mutex_unlock(&F.mu);
    *r = init;
    r->channel_account = without ? NULL : acc;
    *out = &r->base;
    return OC_OK;
}

static oc_err_t fake_claim(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const PB(ClaimDueOutboundRequest) *req = (const void *)in;
    PB(ClaimDueOutboundResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(ClaimDueOutboundResponse) init = PB_INIT(CLAIM_DUE_OUTBOUND_RESPONSE);
    ProtobufCAllocator alloc;

    (void)fake_enter(ctx, M_CLAIM);
    oc_arena_protobuf_allocator(ctx->arena, &alloc);
    *r = init;
    pthread_mutex_lock(&F.mu);
    F.last_claim_ntypes = req->n_channel_types < 4 ? req->n_channel_types : 4;
    for (size_t i = 0; i < F.last_claim_ntypes; i++)
        F.last_claim_types[i] = req->channel_types[i];
    r->claimed = oc_arena_alloc(ctx->arena, (size_t)(F.ndue + 1) * sizeof *r->claimed);
    for (int i = 0; i < F.ndue && (int32_t)r->n_claimed < req->limit; i++) {
        PB(ClaimedOutbound) *co = oc_arena_alloc(ctx->arena, sizeof *co);
        PB(ClaimedOutbound) coinit = PB_INIT(CLAIMED_OUTBOUND);
        *co = coinit;
        co->message = (PB(Message) *)protobuf_c_message_unpack(
            &omnichat__persistence__v1__message__descriptor, &alloc, F.due_len[i], F.due[i]);
        co->thread_key = (char *)"thread-1";
        r->claimed[r->n_claimed++] = co;
        free(F.due[i]);
        F.due[i] = NULL;
    }
    F.ndue = 0;
    pthread_mutex_unlock(&F.mu);
    *out = &r->base;
    return OC_OK;
}

static oc_err_t fake_reconcile(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in,
                               ProtobufCMessage **out)
{
    const PB(ReconcileOutboundRequest) *req = (const void *)in;
    PB(ReconcileOutboundResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(ReconcileOutboundResponse) init = PB_INIT(RECONCILE_OUTBOUND_RESPONSE);
    bool known;

    (void)fake_enter(ctx, M_RECONCILE);
    pthread_mutex_lock(&F.mu);
    known = strcmp(req->message_id, F.reconcile_known) == 0;
    if (known) snprintf(F.last_reconciled, sizeof F.last_reconciled, "%s", req->message_id);
    pthread_mutex_unlock(&F.mu);
    if (!known) return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "message_id: not found");
    *r = init;
    *out = &r->base;
    return OC_OK;
}

#define FAKE_PST_SERVICE "/omnichat.persistence.v1.Persistence/"
#define FAKE_METHOD(name, fn, snake) \
    { \
        FAKE_PST_SERVICE name, &omnichat__persistence__v1__##snake##_request__descriptor, \
            &omnichat__persistence__v1__##snake##_response__descriptor, fn, OC_RPC_ROLE_CONNECTOR, \
            NULL, NULL \
    }

static const oc_rpc_method_t fake_methods[] = {
    FAKE_METHOD("GetChannelAccount", fake_get, get_channel_account),
    FAKE_METHOD("ResolveChannelAccount", fake_resolve, resolve_channel_account),
    FAKE_METHOD("CompleteOutbound", fake_complete, complete_outbound),
    FAKE_METHOD("RecordChannelStatus", fake_record, record_channel_status),
    FAKE_METHOD("PersistInbound", fake_persist, persist_inbound),
    FAKE_METHOD("RegisterChannelAccount", fake_register, register_channel_account),
    FAKE_METHOD("UpdateChannelCredentials", fake_update, update_channel_credentials),
    FAKE_METHOD("ClaimDueOutbound", fake_claim, claim_due_outbound),
    FAKE_METHOD("ReconcileOutbound", fake_reconcile, reconcile_outbound),
};

/* Seals value for the fake account and appends it to acc's credentials (arena-owned). */
static void fake_add_credential(oc_vault_t *vault, oc_arena_t *arena, PB(ChannelAccount) * acc,
                                const char *field, const char *value)
{
    PB(SealedCredential) *c = oc_arena_alloc(arena, sizeof *c);
    PB(SealedCredential) init = PB_INIT(SEALED_CREDENTIAL);
    PB(SealedCredential) **list = oc_arena_alloc(arena, (acc->n_credentials + 1) * sizeof *list);
    const char *key_id = NULL;
    uint8_t *sealed = NULL;
    size_t len = 0;
    oc_error_t err;

    oc_error_clear(&err);
    if (oc_vault_seal(vault, acc->tenant_id, acc->channel_account_id, field, value, strlen(value),
                      &key_id, &sealed, &len, &err) != OC_OK)
        abort();
    *c = init;
    c->field = oc_arena_strdup(arena, field);
    c->key_id = oc_arena_strdup(arena, key_id);
    c->ciphertext.data = oc_arena_alloc(arena, len);
    memcpy(c->ciphertext.data, sealed, len);
    c->ciphertext.len = len;
    free(sealed);
    for (size_t i = 0; i < acc->n_credentials; i++)
        list[i] = acc->credentials[i];
    list[acc->n_credentials++] = c;
    acc->credentials = list;
}

/* The vault that seals the fake account's credentials (the connector's, so it can open them),
 * and the channel type and external id of the account. */
static oc_vault_t *fake_vault;
static int fake_channel_type = OMNICHAT__PERSISTENCE__V1__CHANNEL_TYPE__CHANNEL_TYPE_LINE;

/* Makes the fake answer this account: ACTIVE or not, with or without credentials. */
static FAKE_UNUSED void fake_set_account(int status, bool with_credentials)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(ChannelAccount) acc = PB_INIT(CHANNEL_ACCOUNT);

    acc.channel_account_id = (char *)FAKE_ACCOUNT;
    acc.tenant_id = (char *)FAKE_TENANT;
    acc.channel_type = fake_channel_type;
    acc.external_account_id = (char *)FAKE_BOT;
    acc.status = status;
    acc.last_success_at_ms = oc_now_ms();
    if (with_credentials) {
        fake_add_credential(fake_vault, arena, &acc, "access_token", FAKE_TOKEN);
        fake_add_credential(fake_vault, arena, &acc, "channel_secret", FAKE_SECRET);
    }
    pthread_mutex_lock(&F.mu);
    free(F.account);
    F.account_len = protobuf_c_message_get_packed_size(&acc.base);
    F.account = malloc(F.account_len + 1);
    protobuf_c_message_pack(&acc.base, F.account);
    pthread_mutex_unlock(&F.mu);
    oc_arena_destroy(arena);
}

/* Forgets counters and faults; keeps the account. */
static FAKE_UNUSED void fake_reset(void)
{
    pthread_mutex_lock(&F.mu);
    memset(F.sleep_ms, 0, sizeof F.sleep_ms);
    memset(F.calls, 0, sizeof F.calls);
    F.persist_error = OC_OK;
    F.update_without_account = false;
    free(F.last_complete);
    F.last_complete = NULL;
    F.last_complete_len = 0;
    for (int i = 0; i < F.ndue; i++)
        free(F.due[i]);
    F.ndue = 0;
    F.last_claim_ntypes = 0;
    F.reconcile_known[0] = F.last_reconciled[0] = '\0';
    F.persisted_messages = F.npersisted_tenants = 0;
    pthread_mutex_unlock(&F.mu);
    fake_line_reset();
}

static FAKE_UNUSED int fake_calls(int m)
{
    int n;

    pthread_mutex_lock(&F.mu);
    n = F.calls[m];
    pthread_mutex_unlock(&F.mu);
    return n;
}

/* The last CompleteOutbound request, unpacked into arena (NULL when none came). */
static FAKE_UNUSED PB(CompleteOutboundRequest) * fake_last_complete(oc_arena_t *arena)
{
    ProtobufCAllocator alloc;
    PB(CompleteOutboundRequest) *r = NULL;

    oc_arena_protobuf_allocator(arena, &alloc);
    pthread_mutex_lock(&F.mu);
    if (F.last_complete != NULL)
        r = (PB(CompleteOutboundRequest) *)protobuf_c_message_unpack(
            &omnichat__persistence__v1__complete_outbound_request__descriptor, &alloc,
            F.last_complete_len, F.last_complete);
    pthread_mutex_unlock(&F.mu);
    return r;
}

/* Queues a message for the next ClaimDueOutbound. */
static FAKE_UNUSED void fake_add_due(const PB(Message) * m)
{
    pthread_mutex_lock(&F.mu);
    if (F.ndue < FAKE_DUE_MAX) {
        F.due_len[F.ndue] = protobuf_c_message_get_packed_size(&m->base);
        F.due[F.ndue] = malloc(F.due_len[F.ndue] + 1);
        protobuf_c_message_pack(&m->base, F.due[F.ndue]);
        F.ndue++;
    }
    pthread_mutex_unlock(&F.mu);
}

/* Starts the fake persistence; target gets "127.0.0.1:<port>". 0 or -1. */
static FAKE_UNUSED int fake_pst_start(char *target, size_t cap)
{
    oc_rpc_server_opts_t opts = {.listen = "127.0.0.1:0", .workers = 8};
    oc_error_t err;

    oc_error_clear(&err);
    F.pst = oc_rpc_server_create(&opts, fake_methods, sizeof fake_methods / sizeof fake_methods[0],
                                 &err);
    if (F.pst == NULL || oc_rpc_server_start(F.pst, &err) != OC_OK) {
        fprintf(stderr, "fake persistence: %s\n", err.msg);
        return -1;
    }
    F.pst_port = oc_rpc_server_port(F.pst);
    snprintf(target, cap, "127.0.0.1:%d", F.pst_port);
    return 0;
}

static FAKE_UNUSED void fake_pst_stop(void)
{
    oc_rpc_server_destroy(F.pst);
    free(F.account);
    free(F.last_complete);
    for (int i = 0; i < F.ndue; i++)
        free(F.due[i]);
    F.ndue = 0;
    F.account = NULL;
    F.last_complete = NULL;
}

/*
 * POST body to an HTTP server on `port` with one extra header line ("x-line-signature: ...",
 * NULL: none); returns the HTTP status (-1 on a transport failure).
 */
static FAKE_UNUSED int fake_http_post(int port, const char *path, const char *body,
                                      const char *header)
{
    struct sockaddr_in sa;
    char head[512], resp[256];
    size_t got = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;
    ssize_t n;

    if (fd < 0) return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) goto out;
    snprintf(head, sizeof head,
             "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n%s%s\r\n",
             path, strlen(body), header != NULL ? header : "", header != NULL ? "\r\n" : "");
    if (write(fd, head, strlen(head)) < 0 || write(fd, body, strlen(body)) < 0) goto out;
    while (got < sizeof resp - 1 && (n = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)n;
    resp[got] = '\0';
    if (strncmp(resp, "HTTP/1.", 7) == 0 && got > 12) status = atoi(resp + 9);
out:
    close(fd);
    return status;
}

#endif
