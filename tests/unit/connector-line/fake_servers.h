/* A fake persistence (gRPC) and a fake LINE API (HTTP) for connector-line unit tests. */
#ifndef LINE_TEST_FAKE_SERVERS_H
#define LINE_TEST_FAKE_SERVERS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "line.h"
#include "omnichat/lru.h"
#include "line_api.h"
#include "omnichat/http.h"
#include "omnichat/util.h"

#define FAKE_UNUSED __attribute__((unused))
#define FAKE_TENANT "0191d7a2-3b4c-7d5e-8f60-718293a4b5c6"
#define FAKE_ACCOUNT "0191d7a2-3b4c-7d5e-8f60-718293a4b5c7"
#define FAKE_MESSAGE "0191d7a2-3b4c-7d5e-8f60-718293a4b5c8"
#define FAKE_TOKEN "fake-access-token-0123456789"
#define FAKE_SECRET "fake-channel-secret-0123456789ab"
#define FAKE_BOT "Ub0000000000000000000000000000042"
/* A throw-away vault key (32 zero-free bytes, base64). */
#define FAKE_VAULT_KEYS "unit-1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"

enum { M_GET, M_RESOLVE, M_COMPLETE, M_RECORD, M_PERSIST, M_REGISTER, M_UPDATE, M_COUNT };

/* What the fakes answer and what they saw. Guarded by mu (handlers run on server threads). */
typedef struct fake {
    pthread_mutex_t mu;
    oc_rpc_server_t *pst;
    oc_http_server_t *line;
    int pst_port, line_port;
    /* persistence */
    uint8_t *account; /* packed ChannelAccount answered by Get/Resolve/Record */
    size_t account_len;
    int sleep_ms[M_COUNT];
    int calls[M_COUNT];
    oc_err_t persist_error; /* PersistInbound fails with this when not OC_OK */
    bool update_without_account;
    uint8_t *last_complete; /* packed CompleteOutboundRequest */
    size_t last_complete_len;
    /* LINE */
    int push_calls;
    int push_status;
    int push_delay_ms;
    int bot_info_status;
    char last_retry_key[80];
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

static oc_err_t fake_resolve(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    PB(ResolveChannelAccountResponse) *r = oc_arena_alloc(ctx->arena, sizeof *r);
    PB(ResolveChannelAccountResponse) init = PB_INIT(RESOLVE_CHANNEL_ACCOUNT_RESPONSE);

    (void)in;
    *r = init;
    r->channel_account = fake_enter(ctx, M_RESOLVE);
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

#define FAKE_METHOD(name, fn, snake) \
    { \
        LINE_PST_SERVICE name, &omnichat__persistence__v1__##snake##_request__descriptor, \
            &omnichat__persistence__v1__##snake##_response__descriptor, fn \
    }

static const oc_rpc_method_t fake_methods[] = {
    FAKE_METHOD("GetChannelAccount", fake_get, get_channel_account),
    FAKE_METHOD("ResolveChannelAccount", fake_resolve, resolve_channel_account),
    FAKE_METHOD("CompleteOutbound", fake_complete, complete_outbound),
    FAKE_METHOD("RecordChannelStatus", fake_record, record_channel_status),
    FAKE_METHOD("PersistInbound", fake_persist, persist_inbound),
    FAKE_METHOD("RegisterChannelAccount", fake_register, register_channel_account),
    FAKE_METHOD("UpdateChannelCredentials", fake_update, update_channel_credentials),
};

/* ---------- LINE ---------- */

static void fake_push(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    const char *key = oc_http_header(req, "x-line-retry-key");
    int status, delay;

    (void)user;
    pthread_mutex_lock(&F.mu);
    F.push_calls++;
    snprintf(F.last_retry_key, sizeof F.last_retry_key, "%s", key != NULL ? key : "");
    status = F.push_status != 0 ? F.push_status : 200;
    delay = F.push_delay_ms;
    pthread_mutex_unlock(&F.mu);
    fake_sleep_ms(delay);
    resp->status = status;
    oc_buf_appends(&resp->body, status == 200
                                    ? "{\"sentMessages\":[{\"id\":\"461230966842064897\"}]}"
                                    : "{\"message\":\"An internal server error occurred\"}");
}

static void fake_bot_info(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    int status;

    (void)user;
    (void)req;
    pthread_mutex_lock(&F.mu);
    status = F.bot_info_status != 0 ? F.bot_info_status : 200;
    pthread_mutex_unlock(&F.mu);
    resp->status = status;
    oc_buf_appends(&resp->body, status == 200 ? "{\"userId\":\"" FAKE_BOT
                                                "\",\"displayName\":\"Fake Bot\"}"
                                              : "{\"message\":\"Authentication failed\"}");
}

static void fake_profile(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    (void)user;
    (void)req;
    oc_buf_appends(&resp->body, "{\"displayName\":\"Someone\"}");
}

static const oc_http_route_t fake_routes[] = {
    {"POST", "/v2/bot/message/push", false, fake_push, NULL},
    {"GET", "/v2/bot/info", false, fake_bot_info, NULL},
    {"GET", "/v2/bot/profile/", true, fake_profile, NULL},
};

/* ---------- the connector's context against the fakes ---------- */

static line_t L;

/* Seals value for the fake account and appends it to acc's credentials (arena-owned). */
static void fake_add_credential(oc_arena_t *arena, PB(ChannelAccount) * acc, const char *field,
                                const char *value)
{
    PB(SealedCredential) *c = oc_arena_alloc(arena, sizeof *c);
    PB(SealedCredential) init = PB_INIT(SEALED_CREDENTIAL);
    PB(SealedCredential) **list = oc_arena_alloc(arena, (acc->n_credentials + 1) * sizeof *list);
    const char *key_id = NULL;
    uint8_t *sealed = NULL;
    size_t len = 0;
    oc_error_t err;

    oc_error_clear(&err);
    if (oc_vault_seal(L.vault, acc->tenant_id, acc->channel_account_id, field, value, strlen(value),
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

/* Makes the fakes answer this account: ACTIVE or not, with or without credentials. */
static FAKE_UNUSED void fake_set_account(int status, bool with_credentials)
{
    oc_arena_t *arena = oc_arena_create(0);
    PB(ChannelAccount) acc = PB_INIT(CHANNEL_ACCOUNT);

    acc.channel_account_id = (char *)FAKE_ACCOUNT;
    acc.tenant_id = (char *)FAKE_TENANT;
    acc.channel_type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_LINE);
    acc.external_account_id = (char *)FAKE_BOT;
    acc.status = status;
    acc.last_success_at_ms = oc_now_ms();
    if (with_credentials) {
        fake_add_credential(arena, &acc, "access_token", FAKE_TOKEN);
        fake_add_credential(arena, &acc, "channel_secret", FAKE_SECRET);
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
    F.push_calls = 0;
    F.push_status = 0;
    F.push_delay_ms = 0;
    F.bot_info_status = 0;
    F.last_retry_key[0] = '\0';
    pthread_mutex_unlock(&F.mu);
}

static FAKE_UNUSED int fake_calls(int m)
{
    int n;

    pthread_mutex_lock(&F.mu);
    n = F.calls[m];
    pthread_mutex_unlock(&F.mu);
    return n;
}

static FAKE_UNUSED int fake_push_calls(void)
{
    int n;

    pthread_mutex_lock(&F.mu);
    n = F.push_calls;
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

/* Starts both fakes and fills L as line_service_create would (no account cache). */
static int fake_start(void)
{
    oc_rpc_server_opts_t opts = {.listen = "127.0.0.1:0", .workers = 8};
    oc_http_server_opts_t hopts = {.listen = "127.0.0.1:0",
                                   .threads = 8,
                                   .routes = fake_routes,
                                   .nroutes = sizeof fake_routes / sizeof fake_routes[0]};
    char target[64], base[64];
    oc_error_t err;

    oc_error_clear(&err);
    F.pst = oc_rpc_server_create(&opts, fake_methods, sizeof fake_methods / sizeof fake_methods[0],
                                 &err);
    if (F.pst == NULL || oc_rpc_server_start(F.pst, &err) != OC_OK) goto fail;
    F.pst_port = oc_rpc_server_port(F.pst);
    F.line = oc_http_server_start(&hopts, &err);
    if (F.line == NULL) goto fail;
    F.line_port = oc_http_server_port(F.line);

    memset(&L, 0, sizeof L);
    L.cfg.persistence_timeout_ms = 3000;
    L.cfg.webhook_timeout_ms = 1500;
    L.cfg.line_timeout_ms = 1000;
    L.cfg.profile_timeout_ms = 500;
    L.cfg.max_attempts = 8;
    L.cfg.backoff_base_ms = 100;
    L.cfg.backoff_max_ms = 800;
    L.cfg.retry_window_s = 82620;
    L.cfg.lease_seconds = 30;
    L.cfg.instance_id = (char *)"unit";
    L.vault = oc_vault_create_from_buffer(FAKE_VAULT_KEYS, strlen(FAKE_VAULT_KEYS), &err);
    if (L.vault == NULL) goto fail;
    snprintf(target, sizeof target, "127.0.0.1:%d", F.pst_port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", F.line_port);
    L.pst = oc_rpc_client_create(target, &err);
    L.api = line_api_create(base, NULL, &err);
    L.conversations = oc_lru_create(100, 0);
    L.profiles = oc_lru_create(100, 0);
    if (L.pst == NULL || L.api == NULL || L.conversations == NULL || L.profiles == NULL) goto fail;
    return 0;
fail:
    fprintf(stderr, "fake servers: %s\n", err.msg);
    return -1;
}

static void fake_stop(void)
{
    oc_lru_destroy(L.conversations);
    oc_lru_destroy(L.profiles);
    line_api_destroy(L.api);
    oc_rpc_client_destroy(L.pst);
    oc_vault_destroy(L.vault);
    oc_http_server_stop(F.line);
    oc_rpc_server_destroy(F.pst);
    free(F.account);
    free(F.last_complete);
    memset(&L, 0, sizeof L);
}

/*
 * POST body to the connector's own HTTP server on `port` with the given signature header
 * (NULL: none); returns the HTTP status (-1 on a transport failure).
 */
static FAKE_UNUSED int fake_http_post(int port, const char *path, const char *body,
                                      const char *signature)
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
             "Content-Length: %zu\r\nConnection: close\r\n%s%s%s\r\n",
             path, strlen(body), signature != NULL ? "x-line-signature: " : "",
             signature != NULL ? signature : "", signature != NULL ? "\r\n" : "");
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
