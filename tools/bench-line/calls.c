/* The benchmark's calls: SendText, signed webhook POSTs, and the two reference paths. */
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bl.h"
#include "omnichat/util.h"

#define REF_LEASE_OWNER "bench-line-reference"

/* ---------- helpers ---------- */

bool bl_rpc(oc_rpc_client_t *c, const char *path, const ProtobufCMessage *req,
            const ProtobufCMessageDescriptor *desc, oc_arena_t *arena, ProtobufCMessage **resp,
            char *err, size_t errlen)
{
    oc_error_t e;
    int status = 0;
    const char *method = strrchr(path, '/');

    oc_error_clear(&e);
    if (oc_rpc_client_call(c, path, req, desc, BL_CALL_TIMEOUT_MS, NULL, arena, resp, &status,
                           &e) == OC_OK)
        return true;
    snprintf(err, errlen, "%s: %s: %s", method != NULL ? method + 1 : path,
             oc_grpc_status_name(status), e.msg);
    return false;
}

int bl_http(oc_http_client_t *c, const char *url, const char *const *headers, const char *body,
            size_t blen, long timeout_ms, oc_buf_t *out, char *err, size_t errlen)
{
    oc_http_call_t call = {.method = body != NULL ? "POST" : "GET",
                           .path = url,
                           .headers = headers,
                           .body = body,
                           .body_len = blen,
                           .timeout_ms = timeout_ms};
    oc_http_result_t res;
    int status = -1;

    oc_http_result_init(&res, out != NULL ? out->max : 0);
    if (oc_http_client_call(c, &call, &res) != OC_OK)
        snprintf(err, errlen, "%s: request could not be built", url);
    else if (res.transport != OC_HTTP_TX_OK)
        snprintf(err, errlen, "%s: %s", url, oc_http_transport_name(res.transport));
    else
        status = (int)res.status;
    if (out != NULL && res.body.len > 0) oc_buf_append(out, res.body.data, res.body.len);
    oc_http_result_dispose(&res);
    return status;
}

void bl_rand_hex(uint64_t *rng, char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t r = 0;

    for (size_t i = 0; i < n; i++) {
        if (i % 16 == 0) r = bench_rand(rng);
        out[i] = hex[r & 15];
        r >>= 4;
    }
    out[n] = '\0';
}

void bl_webhook_headers(bl_headers_t *h, const char *sig_header, const char *sig,
                        const char *user_agent)
{
    snprintf(h->buf[0], sizeof h->buf[0], "%s: %s", sig_header, sig);
    snprintf(h->buf[1], sizeof h->buf[1], "User-Agent: %s", user_agent);
    h->line[0] = "Content-Type: application/json";
    h->line[1] = h->buf[0];
    h->line[2] = h->buf[1];
    h->line[3] = "Expect:";
    h->line[4] = NULL;
}

void bl_inbound_text(char *buf, size_t cap, uint64_t n)
{
    snprintf(buf, cap,
             "Hi! Is order %" PRIu64 " ready to pick up? I could come by the store after work.",
             n % 1000000);
}

void bl_reply_text(char *buf, size_t cap, uint64_t n)
{
    snprintf(buf, cap,
             "Thanks for waiting! Your order %" PRIu64
             " left the warehouse today and arrives tomorrow.",
             n % 1000000);
}

void bl_threads_reset(bl_ctx_t *ctx)
{
    for (int i = 0; i < BENCH_MAX_THREADS; i++) {
        bl_thread_t *t = &ctx->th[i];
        t->nsent = 0;
        memset(t->by_status, 0, sizeof t->by_status);
        t->items_ok = t->items_failed = t->http_other = t->http_503 = 0;
        t->last_http_status = 0;
        t->npost = 0;
    }
}

/* Callers spread over the users: at one moment, each of 64 callers has its own user. */
static int pick_user(const bl_ctx_t *ctx, int thread, uint64_t seq)
{
    return (int)((seq * (uint64_t)ctx->threads + (uint64_t)thread) % (uint64_t)ctx->nusers);
}

/* k distinct users of one channel, in random order, for a webhook POST or its PersistInbound
 * twin: concurrent batches overlap in any order, as LINE's do. */
static const bl_channel_t *pick_batch(bl_ctx_t *ctx, int thread, uint64_t seq, int k, int *users)
{
    const bl_channel_t *c = &ctx->ch[(uint64_t)(thread + (int)(seq % 1000003)) % ctx->nch];
    uint64_t *rng = &ctx->th[thread].rng;
    int idx[BL_MAX_USERS_PER_CHANNEL];
    int n = c->nusers < BL_MAX_USERS_PER_CHANNEL ? c->nusers : BL_MAX_USERS_PER_CHANNEL;

    for (int i = 0; i < n; i++)
        idx[i] = i;
    for (int j = 0; j < k && j < n; j++) { /* partial Fisher-Yates */
        int r = j + (int)(bench_rand(rng) % (uint64_t)(n - j));
        int tmp = idx[j];
        idx[j] = idx[r];
        idx[r] = tmp;
        users[j] = c->first_user + idx[j];
    }
    if (ctx->ordered_batches) /* the same users in one global order: no lock cycles */
        for (int j = 1; j < k; j++)
            for (int i = j; i > 0 && users[i - 1] > users[i]; i--) {
                int tmp = users[i];
                users[i] = users[i - 1];
                users[i - 1] = tmp;
            }
    return c;
}

static const char *status_name(int s)
{
    switch (s) {
    case 1:
        return "RECEIVED";
    case 2:
        return "PENDING";
    case 3:
        return "SENT";
    case 4:
        return "FAILED";
    case 5:
        return "UNKNOWN";
    }
    return "UNSPECIFIED";
}

static bool remember_sent(bl_thread_t *t, const char *id)
{
    if (t->nsent == t->capsent) {
        size_t cap = t->capsent != 0 ? t->capsent * 2 : 4096;
        char *p = realloc(t->sent_ids, cap * BL_ID_LEN);
        if (p == NULL) return false;
        t->sent_ids = p;
        t->capsent = cap;
    }
    snprintf(t->sent_ids + t->nsent * BL_ID_LEN, BL_ID_LEN, "%s", id != NULL ? id : "");
    t->nsent++;
    return true;
}

/* Records the outcome of POST seq (seq counts from 0 without gaps in each phase). */
static bool mark_post(bl_thread_t *t, uint64_t seq, bool ok)
{
    while (seq >= t->cappost) {
        size_t cap = t->cappost != 0 ? t->cappost * 2 : 4096;
        uint8_t *p = realloc(t->post_ok, cap);
        if (p == NULL) return false;
        t->post_ok = p;
        t->cappost = cap;
    }
    while (t->npost <= seq)
        t->post_ok[t->npost++] = 0;
    t->post_ok[seq] = ok ? 1 : 2;
    return true;
}

/* ---------- the calls ---------- */

static bool call_sendtext(bl_job_t *job, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                          size_t errlen)
{
    bl_ctx_t *ctx = job->ctx;
    bl_thread_t *t = &ctx->th[thread];
    const bl_user_t *u = &ctx->users[pick_user(ctx, thread, seq)];
    CPB(SendTextRequest) req = CPB_INIT(SEND_TEXT_REQUEST);
    CPB(SendTextResponse) *resp = NULL;
    char key[96], text[160], agent[16], agent_name[24];
    int st;

    snprintf(key, sizeof key, "lb-%s-%s-%d-%" PRIu64, ctx->run, job->tag, thread, seq);
    snprintf(text, sizeof text,
             "Thanks for waiting! Your order %" PRIu64
             " left the warehouse today and arrives tomorrow.",
             ((uint64_t)thread << 32 | seq) % 1000000);
    snprintf(agent, sizeof agent, "agent-%d", thread % 8);
    snprintf(agent_name, sizeof agent_name, "Agent %d", thread % 8);
    req.tenant_id = (char *)ctx->ch[u->channel].tenant;
    req.conversation_id = (char *)u->conversation;
    req.text = text;
    req.idempotency_key = key;
    req.sender_id = agent;
    req.sender_display_name = agent_name;
    if (!bl_rpc(ctx->conn, BL_CONN "SendText", &req.base,
                &omnichat__connector__v1__send_text_response__descriptor, arena,
                (ProtobufCMessage **)&resp, err, errlen))
        return false;
    if (resp->message == NULL) {
        snprintf(err, errlen, "SendText: reply without a message");
        return false;
    }
    st = (int)resp->message->status;
    t->by_status[st >= 0 && st < 8 ? st : 0]++;
    if (st != PBE(MESSAGE_STATUS__MESSAGE_STATUS_SENT)) {
        snprintf(err, errlen, "SendText: status %s (%s)", status_name(st),
                 resp->message->error_detail != NULL ? resp->message->error_detail : "");
        return false;
    }
    if (!remember_sent(t, resp->message->external_message_id)) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    return true;
}

static bool call_webhook(bl_job_t *job, int thread, uint64_t seq, char *err, size_t errlen)
{
    bl_ctx_t *ctx = job->ctx;
    bl_thread_t *t = &ctx->th[thread];
    int users[BL_MAX_K];
    const bl_channel_t *c = pick_batch(ctx, thread, seq, job->k, users);
    char prefix[96];
    bl_headers_t h;
    oc_buf_t resp;
    size_t len;
    int status;

    snprintf(prefix, sizeof prefix, "lb%s%s-%d-%" PRIu64, ctx->run, job->tag, thread, seq);
    len = ctx->drv->webhook(ctx, c, users, job->k, prefix, &t->rng, t->body, BL_BODY_MAX, &h);
    if (len == 0) {
        snprintf(err, errlen, "webhook body too large");
        return false;
    }
    oc_buf_init(&resp, 1024);
    status = bl_http(t->http, c->webhook_url, h.line, t->body, len, BL_CALL_TIMEOUT_MS, &resp, err,
                     errlen);
    if (status == 200) {
        t->items_ok += (uint64_t)job->k;
    } else {
        t->items_failed += (uint64_t)job->k;
        t->http_other++;
        if (status == 503) t->http_503++; /* the connector could not store the events */
        t->last_http_status = status;
        if (status > 0)
            snprintf(err, errlen, "webhook: HTTP %d: %.*s", status,
                     (int)(resp.len < 160 ? resp.len : 160), resp.data != NULL ? resp.data : "");
    }
    oc_buf_dispose(&resp);
    if (!mark_post(t, seq, status == 200)) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    return status == 200;
}

static bool call_raw_send(bl_job_t *job, int thread, uint64_t seq, char *err, size_t errlen)
{
    bl_ctx_t *ctx = job->ctx;
    bl_thread_t *t = &ctx->th[thread];
    const bl_user_t *u = &ctx->users[pick_user(ctx, thread, seq)];
    const bl_channel_t *c = &ctx->ch[u->channel];
    oc_buf_t resp;
    int status;

    oc_buf_init(&resp, 4096);
    status = ctx->drv->raw_send(ctx, t, c, u, (uint64_t)thread << 32 | seq, &resp, err, errlen);
    if (status == 200) {
        t->items_ok++;
    } else {
        t->http_other++;
        t->last_http_status = status;
        if (status > 0)
            snprintf(err, errlen, "%s send: HTTP %d: %.*s", ctx->drv->name, status,
                     (int)(resp.len < 160 ? resp.len : 160), resp.data != NULL ? resp.data : "");
    }
    oc_buf_dispose(&resp);
    return status == 200;
}

/* What the connector sends persistence for one SendText, minus the provider call. */
static bool call_pst_outbound(bl_job_t *job, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                              size_t errlen)
{
    bl_ctx_t *ctx = job->ctx;
    const bl_user_t *u = &ctx->users[pick_user(ctx, thread, seq)];
    PB(CreateOutboundRequest) creq = PB_INIT(CREATE_OUTBOUND_REQUEST);
    PB(CreateOutboundResponse) *cresp = NULL;
    PB(CompleteOutboundRequest) dreq = PB_INIT(COMPLETE_OUTBOUND_REQUEST);
    PB(CompleteOutboundResponse) *dresp = NULL;
    char key[96], text[160], agent[16], agent_name[24], retry_key[OC_UUID_STR_LEN + 1];
    char fingerprint[65], ext_id[32];
    uint8_t digest[32];
    unsigned int dlen = 0;

    snprintf(key, sizeof key, "lb-%s-%s-%d-%" PRIu64, ctx->run, job->tag, thread, seq);
    snprintf(text, sizeof text,
             "Thanks for waiting! Your order %" PRIu64
             " left the warehouse today and arrives tomorrow.",
             ((uint64_t)thread << 32 | seq) % 1000000);
    snprintf(agent, sizeof agent, "agent-%d", thread % 8);
    snprintf(agent_name, sizeof agent_name, "Agent %d", thread % 8);
    /* A SHA-256 over the request, as the connector's fingerprint is. */
    memset(digest, 0, sizeof digest);
    EVP_Digest(text, strlen(text), digest, &dlen, EVP_sha256(), NULL);
    oc_hex_encode(digest, sizeof digest, fingerprint);
    if (oc_uuid_v4(retry_key) != OC_OK) {
        snprintf(err, errlen, "no randomness for the retry key");
        return false;
    }
    creq.tenant_id = (char *)ctx->ch[u->channel].tenant;
    creq.conversation_id = (char *)u->conversation;
    creq.idempotency_key = key;
    creq.request_fingerprint = fingerprint;
    creq.sender_id = agent;
    creq.sender_display_name = agent_name;
    creq.sender_type = PBE(SENDER_TYPE__SENDER_TYPE_AGENT);
    creq.content_type = PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT);
    creq.content_text = text;
    creq.provider_retry_key = retry_key;
    creq.lease_owner = (char *)REF_LEASE_OWNER;
    creq.lease_seconds = 30;
    if (!bl_rpc(ctx->pst, BL_PST "CreateOutbound", &creq.base,
                &omnichat__persistence__v1__create_outbound_response__descriptor, arena,
                (ProtobufCMessage **)&cresp, err, errlen))
        return false;
    if (cresp->message == NULL || !cresp->lease_acquired) {
        snprintf(err, errlen, "CreateOutbound: no lease on a new key");
        return false;
    }
    snprintf(ext_id, sizeof ext_id, "9%02d%015" PRIu64, thread % 100, seq);
    dreq.tenant_id = creq.tenant_id;
    dreq.message_id = cresp->message->message_id;
    dreq.lease_owner = (char *)REF_LEASE_OWNER;
    dreq.outcome = PBE(OUTBOUND_OUTCOME__OUTBOUND_OUTCOME_SENT);
    dreq.external_message_id = ext_id;
    if (!bl_rpc(ctx->pst, BL_PST "CompleteOutbound", &dreq.base,
                &omnichat__persistence__v1__complete_outbound_response__descriptor, arena,
                (ProtobufCMessage **)&dresp, err, errlen))
        return false;
    if (dresp->message == NULL ||
        dresp->message->status != PBE(MESSAGE_STATUS__MESSAGE_STATUS_SENT)) {
        snprintf(err, errlen, "CompleteOutbound: message not SENT");
        return false;
    }
    return true;
}

/* What the connector sends persistence for one webhook POST of k events. */
static bool call_pst_inbound(bl_job_t *job, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                             size_t errlen)
{
    bl_ctx_t *ctx = job->ctx;
    bl_thread_t *t = &ctx->th[thread];
    int users[BL_MAX_K], k = job->k;
    const bl_channel_t *c = pick_batch(ctx, thread, seq, k, users);
    PB(PersistInboundRequest) req = PB_INIT(PERSIST_INBOUND_REQUEST);
    PB(PersistInboundResponse) *resp = NULL;
    PB(InboundMessage) *msgs = oc_arena_alloc(arena, (size_t)k * sizeof *msgs);
    PB(InboundMessage) **ptrs = oc_arena_alloc(arena, (size_t)k * sizeof *ptrs);
    int64_t now = oc_now_ms();

    if (msgs == NULL || ptrs == NULL) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    for (int j = 0; j < k; j++) {
        const bl_user_t *u = &ctx->users[users[j]];
        PB(InboundMessage) init = PB_INIT(INBOUND_MESSAGE);
        char quote[33], event_id[27], text[128];

        bl_rand_hex(&t->rng, quote, 32);
        bl_rand_hex(&t->rng, event_id, 26);
        bl_inbound_text(text, sizeof text, bench_rand(&t->rng));
        msgs[j] = init;
        msgs[j].channel_account_id = (char *)c->account;
        msgs[j].external_user_id = (char *)u->id;
        msgs[j].contact_display_name = (char *)u->display_name;
        msgs[j].contact_avatar_url = (char *)u->avatar;
        msgs[j].thread_key = (char *)u->id;
        msgs[j].external_message_id =
            oc_arena_sprintf(arena, "lb%s%s-%d-%" PRIu64 "-%d", ctx->run, job->tag, thread, seq, j);
        msgs[j].idempotency_key = msgs[j].external_message_id;
        msgs[j].direction = PBE(DIRECTION__DIRECTION_INBOUND);
        msgs[j].sender_type = PBE(SENDER_TYPE__SENDER_TYPE_CONTACT);
        msgs[j].content_type = PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT);
        msgs[j].content_text = oc_arena_strdup(arena, text);
        /* The webhook stores the raw message object plus how it arrived. */
        msgs[j].content_struct_json = oc_arena_sprintf(
            arena,
            "{\"type\":\"text\",\"id\":\"%s\",\"quoteToken\":\"%s\",\"text\":\"%s\","
            "\"webhookEventId\":\"%s\",\"isRedelivery\":false,\"mode\":\"active\"}",
            msgs[j].external_message_id, quote, text, event_id);
        msgs[j].channel_timestamp_ms = now;
        if (msgs[j].external_message_id == NULL || msgs[j].content_text == NULL ||
            msgs[j].content_struct_json == NULL) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        ptrs[j] = &msgs[j];
    }
    req.tenant_id = (char *)c->tenant;
    req.n_messages = (size_t)k;
    req.messages = ptrs;
    if (!bl_rpc(ctx->pst, BL_PST "PersistInbound", &req.base,
                &omnichat__persistence__v1__persist_inbound_response__descriptor, arena,
                (ProtobufCMessage **)&resp, err, errlen))
        return false;
    if (resp->n_results != (size_t)k) {
        snprintf(err, errlen, "PersistInbound: %zu results for %d messages", resp->n_results, k);
        return false;
    }
    for (int j = 0; j < k; j++)
        if (!resp->results[j]->created) {
            snprintf(err, errlen, "PersistInbound: a new message was not created");
            return false;
        }
    t->items_ok += (uint64_t)k;
    return true;
}

bool bl_call(void *user, int thread, uint64_t seq, oc_arena_t *arena, char *err, size_t errlen)
{
    bl_job_t *job = user;

    switch (job->kind) {
    case BL_SENDTEXT:
        return call_sendtext(job, thread, seq, arena, err, errlen);
    case BL_WEBHOOK:
        return call_webhook(job, thread, seq, err, errlen);
    case BL_RAW_PUSH:
        return call_raw_send(job, thread, seq, err, errlen);
    case BL_PST_OUTBOUND:
        return call_pst_outbound(job, thread, seq, arena, err, errlen);
    case BL_PST_INBOUND:
        return call_pst_inbound(job, thread, seq, arena, err, errlen);
    }
    snprintf(err, errlen, "unknown call kind");
    return false;
}
