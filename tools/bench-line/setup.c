/* Bench setup: bots in the simulator, channels through the connector, one conversation per user. */
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bl.h"
#include "omnichat/util.h"

int bl_sim_post(bl_ctx_t *ctx, const char *path, const char *json, char *err, size_t errlen)
{
    char url[300];
    int status;

    snprintf(url, sizeof url, "%s%s", ctx->sim_base, path);
    status =
        bl_http(ctx->th[0].http, url, (const char *const[]){"Content-Type: application/json", NULL},
                json, strlen(json), 10000, NULL, err, errlen);
    if (status == 200) return 0;
    if (status > 0) snprintf(err, errlen, "POST %s: HTTP %d", path, status);
    return -1;
}

int bl_sim_reset(bl_ctx_t *ctx, char *err, size_t errlen)
{
    return bl_sim_post(ctx, "/__sim/reset", "{}", err, errlen);
}

static int connect_channel(bl_ctx_t *ctx, bl_channel_t *c, int i, char *err, size_t errlen)
{
    CPB(ConnectChannelRequest) req = CPB_INIT(CONNECT_CHANNEL_REQUEST);
    CPB(ConnectChannelResponse) *resp = NULL;
    oc_arena_t *arena = oc_arena_create(0);
    char name[32];
    int rc = -1;

    if (arena == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(name, sizeof name, "Bench Bot %d", i + 1);
    req.tenant_id = c->tenant;
    ctx->drv->connect_request(c, &req);
    req.display_name = name;
    if (!bl_rpc(ctx->conn, BL_CONN "ConnectChannel", &req.base,
                &omnichat__connector__v1__connect_channel_response__descriptor, arena,
                (ProtobufCMessage **)&resp, err, errlen))
        goto out;
    if (resp->channel_account == NULL || resp->webhook_path == NULL ||
        resp->webhook_path[0] != '/') {
        snprintf(err, errlen, "ConnectChannel: answer without account or webhook path");
        goto out;
    }
    snprintf(c->account, sizeof c->account, "%s", resp->channel_account->channel_account_id);
    snprintf(c->webhook_url, sizeof c->webhook_url, "%s%s", ctx->webhook_base, resp->webhook_path);
    rc = 0;
out:
    oc_arena_destroy(arena);
    return rc;
}

/* One signed webhook with one text event from user u: the connector creates its conversation. */
static int first_message(bl_ctx_t *ctx, int u, char *err, size_t errlen)
{
    bl_thread_t *t = &ctx->th[0];
    const bl_channel_t *c = &ctx->ch[ctx->users[u].channel];
    char prefix[64];
    bl_headers_t h;
    oc_buf_t resp;
    size_t len;
    int status;

    snprintf(prefix, sizeof prefix, "lb%sinit-%d", ctx->run, u);
    len = ctx->drv->webhook(ctx, c, &u, 1, prefix, &t->rng, t->body, BL_BODY_MAX, &h);
    if (len == 0) {
        snprintf(err, errlen, "first webhook of user %d: body too large", u);
        return -1;
    }
    oc_buf_init(&resp, 4096);
    status = bl_http(t->http, c->webhook_url, h.line, t->body, len, BL_CALL_TIMEOUT_MS, &resp, err,
                     errlen);
    if (status > 0 && status != 200)
        snprintf(err, errlen, "first webhook of user %d: HTTP %d: %.*s", u, status,
                 (int)(resp.len < 200 ? resp.len : 200), resp.data != NULL ? resp.data : "");
    oc_buf_dispose(&resp);
    return status == 200 ? 0 : -1;
}

/* Reads every conversation of channel c and gives each of its users their conversation id. */
static int read_conversations(bl_ctx_t *ctx, bl_channel_t *c, char *err, size_t errlen)
{
    oc_arena_t *arena = oc_arena_create(0);
    char token[1024] = "";
    int found = 0, rc = -1;

    if (arena == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    do {
        PB(ListConversationsRequest) req = PB_INIT(LIST_CONVERSATIONS_REQUEST);
        PB(ListConversationsResponse) *resp = NULL;

        req.tenant_id = c->tenant;
        req.channel_account_id = c->account;
        req.page_size = 200;
        req.page_token = token;
        if (!bl_rpc(ctx->pst, BL_PST "ListConversations", &req.base,
                    &omnichat__persistence__v1__list_conversations_response__descriptor, arena,
                    (ProtobufCMessage **)&resp, err, errlen))
            goto out;
        for (size_t i = 0; i < resp->n_conversations; i++) {
            const PB(Conversation) *v = resp->conversations[i];
            for (int u = c->first_user; u < c->first_user + c->nusers; u++) {
                char key[160];
                ctx->drv->thread_key(c, &ctx->users[u], key, sizeof key);
                if (strcmp(key, v->thread_key) == 0) {
                    snprintf(ctx->users[u].conversation, sizeof ctx->users[u].conversation, "%s",
                             v->conversation_id);
                    found++;
                }
            }
        }
        if (strlen(resp->next_page_token) >= sizeof token) {
            snprintf(err, errlen, "ListConversations: page token too long");
            goto out;
        }
        snprintf(token, sizeof token, "%s", resp->next_page_token);
        oc_arena_reset(arena);
    } while (token[0] != '\0');
    if (found != c->nusers) {
        snprintf(err, errlen, "channel %s: %d conversations for %d users", c->account, found,
                 c->nusers);
        goto out;
    }
    rc = 0;
out:
    oc_arena_destroy(arena);
    return rc;
}

int bl_setup(bl_ctx_t *ctx, int ntenants, int nch, int nusers, char *err, size_t errlen)
{
    char uuid[OC_UUID_STR_LEN + 1];
    struct timespec ts;

    oc_http_client_opts_t hopts = {.user_agent = "bench-line/0.1", .reuse_connections = true};
    oc_http_client_t *http;
    oc_error_t herr;

    oc_error_clear(&herr);
    if ((http = oc_http_client_create(&hopts, &herr)) == NULL) {
        snprintf(err, errlen, "HTTP client: %s", herr.msg);
        return -1;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    for (int i = 0; i < BENCH_MAX_THREADS; i++) {
        bl_thread_t *t = &ctx->th[i];
        t->http = http;
        t->body = malloc(BL_BODY_MAX);
        t->rng = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15u + (uint64_t)i * 0xD1B54A32D192ED03u + 1;
        if (t->http == NULL || t->body == NULL) {
            snprintf(err, errlen, "out of memory (per-thread handles)");
            return -1;
        }
    }
    if (oc_uuid_v4(uuid) != OC_OK) {
        snprintf(err, errlen, "no randomness");
        return -1;
    }
    snprintf(ctx->run, sizeof ctx->run, "%.8s", uuid);

    ctx->nch = nch;
    ctx->nusers = nusers;
    ctx->ch = calloc((size_t)nch, sizeof *ctx->ch);
    ctx->users = calloc((size_t)nusers, sizeof *ctx->users);
    if (ctx->ch == NULL || ctx->users == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (ctx->drv->prepare != NULL && ctx->drv->prepare(ctx, err, errlen) != 0) return -1;
    for (int i = 0, next = 0; i < nch; i++) {
        bl_channel_t *c = &ctx->ch[i];
        snprintf(c->tenant, sizeof c->tenant, "b1e00000-0000-4000-8000-%012d", i % ntenants + 1);
        c->first_user = next;
        c->nusers = nusers / nch + (i < nusers % nch ? 1 : 0);
        next += c->nusers;
        if (ctx->drv->add_channel(ctx, c, i, err, errlen) != 0 ||
            connect_channel(ctx, c, i, err, errlen) != 0)
            return -1;
        for (int u = c->first_user; u < c->first_user + c->nusers; u++) {
            ctx->users[u].channel = i;
            ctx->drv->new_user(c, &ctx->th[0].rng, &ctx->users[u]);
        }
    }
    for (int u = 0; u < nusers; u++)
        if (first_message(ctx, u, err, errlen) != 0) return -1;
    for (int i = 0; i < nch; i++)
        if (read_conversations(ctx, &ctx->ch[i], err, errlen) != 0) return -1;
    return 0;
}

void bl_ctx_dispose(bl_ctx_t *ctx)
{
    oc_http_client_destroy(ctx->th[0].http); /* one client shared by every thread */
    for (int i = 0; i < BENCH_MAX_THREADS; i++) {
        free(ctx->th[i].body);
        free(ctx->th[i].sent_ids);
        free(ctx->th[i].post_ok);
    }
    free(ctx->ch);
    free(ctx->users);
    oc_rpc_client_destroy(ctx->conn);
    oc_rpc_client_destroy(ctx->pst);
    memset(ctx, 0, sizeof *ctx);
}
