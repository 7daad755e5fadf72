/* The benchmark's calls: PersistInbound/ListMessages/ListConversations and their SQL references. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "omnichat/util.h"
#include "pst.h" /* the service's own statement tables: the reference runs the same SQL */

#define CALL_TIMEOUT_MS 30000
#define WALK_PAGE 200
#define READ_PAGE 50
#define CONV_PAGE 50
/* Where the first page starts, exactly as the service passes it (past every real row). */
#define FIRST_TS_US "253402300799000000"
#define FIRST_ID "ffffffff-ffff-ffff-ffff-ffffffffffff"

typedef PB(ListMessagesResponse) list_messages_resp_t;
typedef PB(ListConversationsResponse) list_conversations_resp_t;

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15u;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
    return x ^ (x >> 31);
}

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src != NULL ? src : "");
}

int bench_sql(const char *dsn, const char *sql, char *err, size_t errlen)
{
    oc_error_t e;
    oc_pg_conn_t *c;
    int rc = -1;

    oc_error_clear(&e);
    c = oc_pg_connect(dsn, &e);
    if (c != NULL && oc_pg_exec_simple(c, sql, NULL, &e) == OC_OK) rc = 0;
    if (rc != 0) snprintf(err, errlen, "%s: %s", sql, e.msg);
    oc_pg_disconnect(c);
    return rc;
}

/* Runs one query on c and returns its result (NULL with err on failure or no rows). */
static oc_pg_result_t *query(oc_pg_conn_t *c, const char *sql, char *err, size_t errlen)
{
    oc_error_t e;
    oc_pg_result_t *r = NULL;

    oc_error_clear(&e);
    if (oc_pg_exec_simple(c, sql, &r, &e) != OC_OK) {
        snprintf(err, errlen, "seed query failed: %s", e.msg);
        oc_pg_result_free(r);
        return NULL;
    }
    if (r == NULL || oc_pg_ntuples(r) == 0) {
        snprintf(err, errlen,
                 "seed query returned nothing (was the database seeded by "
                 "scripts/bench-persistence.sh?)");
        oc_pg_result_free(r);
        return NULL;
    }
    return r;
}

int bench_ctx_load(bench_ctx_t *ctx, const char *owner_dsn, char *err, size_t errlen)
{
    oc_error_t e;
    oc_pg_conn_t *c;
    oc_pg_result_t *r = NULL;
    char sql[1024];
    int rc = -1;

    oc_error_clear(&e);
    c = oc_pg_connect(owner_dsn, &e);
    if (c == NULL) {
        snprintf(err, errlen, "could not connect as the owner: %s", e.msg);
        return -1;
    }
    /* PersistInbound goes to 250 existing conversations of each tenant (not the big one), as
     * a webhook would: known contact, known thread, a new provider message id. */
    r = query(c,
              "SELECT c.tenant_id, c.account_id, c.external_user_id, ct.display_name,"
              "       ct.avatar_url, v.thread_key"
              "  FROM bench.seed_convs c"
              "  JOIN omnichat.contacts ct ON ct.tenant_id = c.tenant_id AND ct.id = c.contact_id"
              "  JOIN omnichat.conversations v ON v.tenant_id = c.tenant_id AND v.id = c.id"
              " WHERE c.n BETWEEN 2 AND 251 ORDER BY c.k, c.n",
              err, errlen);
    if (r == NULL) goto out;
    ctx->nsamples = (size_t)oc_pg_ntuples(r);
    ctx->samples = calloc(ctx->nsamples, sizeof *ctx->samples);
    if (ctx->samples == NULL) goto oom;
    for (size_t i = 0; i < ctx->nsamples; i++) {
        bench_sample_t *s = &ctx->samples[i];
        copy(s->tenant, sizeof s->tenant, oc_pg_value(r, (int)i, 0));
        copy(s->account, sizeof s->account, oc_pg_value(r, (int)i, 1));
        copy(s->user, sizeof s->user, oc_pg_value(r, (int)i, 2));
        copy(s->name, sizeof s->name, oc_pg_value(r, (int)i, 3));
        copy(s->avatar, sizeof s->avatar, oc_pg_value(r, (int)i, 4));
        copy(s->thread, sizeof s->thread, oc_pg_value(r, (int)i, 5));
    }
    oc_pg_result_free(r);

    r = query(c,
              "SELECT tenant_id, id, message_count FROM omnichat.conversations"
              " ORDER BY message_count DESC LIMIT 1",
              err, errlen);
    if (r == NULL) goto out;
    copy(ctx->big_tenant, sizeof ctx->big_tenant, oc_pg_value(r, 0, 0));
    copy(ctx->big_conv, sizeof ctx->big_conv, oc_pg_value(r, 0, 1));
    ctx->big_conv_messages = strtoll(oc_pg_value(r, 0, 2), NULL, 10);
    oc_pg_result_free(r);
    if (ctx->big_conv_messages < ctx->deep_position + READ_PAGE) {
        snprintf(err, errlen, "the biggest conversation has %lld messages; the deep page needs %ld",
                 ctx->big_conv_messages, ctx->deep_position + READ_PAGE);
        r = NULL;
        goto out;
    }

    r = query(c,
              "SELECT tenant_id, count(*) FROM omnichat.conversations GROUP BY tenant_id"
              " ORDER BY 2 DESC LIMIT 1",
              err, errlen);
    if (r == NULL) goto out;
    copy(ctx->inbox_tenant, sizeof ctx->inbox_tenant, oc_pg_value(r, 0, 0));
    ctx->inbox_conversations = strtoll(oc_pg_value(r, 0, 1), NULL, 10);
    oc_pg_result_free(r);

    /* The deep positions as raw keys: the message deep_position from either end. */
    for (int dir = 0; dir < 2; dir++) {
        snprintf(sql, sizeof sql,
                 "SELECT omnichat.us(channel_timestamp), id FROM omnichat.messages"
                 " WHERE tenant_id = '%s' AND conversation_id = '%s'"
                 " ORDER BY channel_timestamp %s, id %s OFFSET %ld LIMIT 2",
                 ctx->big_tenant, ctx->big_conv, dir == 0 ? "DESC" : "ASC",
                 dir == 0 ? "DESC" : "ASC", ctx->deep_position - 1);
        r = query(c, sql, err, errlen);
        if (r == NULL) goto out;
        if (dir == 0) {
            copy(ctx->deep_before_ts, sizeof ctx->deep_before_ts, oc_pg_value(r, 0, 0));
            copy(ctx->deep_before_id, sizeof ctx->deep_before_id, oc_pg_value(r, 0, 1));
            /* The newest message of the deep page, to check the service's page against. */
            copy(ctx->deep_first_id_sql, sizeof ctx->deep_first_id_sql, oc_pg_value(r, 1, 1));
        } else {
            copy(ctx->deep_after_ts, sizeof ctx->deep_after_ts, oc_pg_value(r, 0, 0));
            copy(ctx->deep_after_id, sizeof ctx->deep_after_id, oc_pg_value(r, 0, 1));
        }
        oc_pg_result_free(r);
    }

    /* Keyset positions of every inbox page (the last row of the page before). */
    snprintf(sql, sizeof sql,
             "SELECT omnichat.us(last_activity_at), id FROM omnichat.conversations"
             " WHERE tenant_id = '%s' ORDER BY last_activity_at DESC, id DESC",
             ctx->inbox_tenant);
    r = query(c, sql, err, errlen);
    if (r == NULL) goto out;
    {
        size_t rows = (size_t)oc_pg_ntuples(r);
        size_t pages = (rows + CONV_PAGE - 1) / CONV_PAGE;
        ctx->conv_keys_ts = calloc(pages, sizeof(char *));
        ctx->conv_keys_id = calloc(pages, sizeof(char *));
        if (ctx->conv_keys_ts == NULL || ctx->conv_keys_id == NULL) goto oom;
        for (size_t p = 0; p < pages; p++) {
            const char *ts = p == 0 ? FIRST_TS_US : oc_pg_value(r, (int)(p * CONV_PAGE - 1), 0);
            const char *id = p == 0 ? FIRST_ID : oc_pg_value(r, (int)(p * CONV_PAGE - 1), 1);
            ctx->conv_keys_ts[p] = strdup(ts);
            ctx->conv_keys_id[p] = strdup(id);
            if (ctx->conv_keys_ts[p] == NULL || ctx->conv_keys_id[p] == NULL) goto oom;
        }
        ctx->nconv_tokens = pages; /* the walk must find the same number of pages */
    }
    oc_pg_result_free(r);
    r = NULL;
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    oc_pg_result_free(r);
    oc_pg_disconnect(c);
    return rc;
}

/* ---- service calls ---- */

static bool rpc(bench_ctx_t *ctx, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, oc_arena_t *arena, ProtobufCMessage **resp,
                char *err, size_t errlen)
{
    oc_error_t e;
    int status = 0;

    oc_error_clear(&e);
    if (oc_rpc_client_call(ctx->rpc, method, req, desc, CALL_TIMEOUT_MS, NULL, arena, resp, &status,
                           &e) != OC_OK) {
        snprintf(err, errlen, "%s: status %d: %s", method + sizeof("/" PST_SERVICE), status, e.msg);
        return false;
    }
    return true;
}

#define METHOD(name) ("/" PST_SERVICE "/" name)

static bool persist(bench_ctx_t *ctx, const bench_key_t *k, bool expect_new, oc_arena_t *arena,
                    char *err, size_t errlen)
{
    const bench_sample_t *s = &ctx->samples[k->sample];
    PB(PersistInboundRequest) req = PB_INIT(PERSIST_INBOUND_REQUEST);
    PB(InboundMessage) m = PB_INIT(INBOUND_MESSAGE);
    PB(InboundMessage) *mp = &m;
    PB(PersistInboundResponse) *resp = NULL;
    char key[96], text[160];

    /* A provider message id no one has used, and about 100 bytes of text. */
    snprintf(key, sizeof key, "bench-%s-%u-%u-%" PRIu64, ctx->run_id, (unsigned)k->phase,
             (unsigned)k->thread, k->seq);
    snprintf(text, sizeof text,
             "Hello! Could you check order %" PRIu64 " for me? The tracking page has not "
             "changed since Monday.",
             (uint64_t)k->thread * 1000000007u + k->seq);
    m.channel_account_id = (char *)s->account;
    m.external_user_id = (char *)s->user;
    m.contact_display_name = (char *)s->name;
    m.contact_avatar_url = (char *)s->avatar;
    m.thread_key = (char *)s->thread;
    m.external_message_id = key;
    m.content_type = PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT);
    m.content_text = text;
    m.channel_timestamp_ms = k->ts_ms;
    req.tenant_id = (char *)s->tenant;
    req.n_messages = 1;
    req.messages = &mp;
    if (!rpc(ctx, METHOD("PersistInbound"), &req.base,
             &omnichat__persistence__v1__persist_inbound_response__descriptor, arena,
             (ProtobufCMessage **)&resp, err, errlen))
        return false;
    if (resp->n_results != 1) {
        snprintf(err, errlen, "PersistInbound: %zu results for 1 message", resp->n_results);
        return false;
    }
    if (resp->results[0]->created != expect_new) {
        snprintf(err, errlen, "PersistInbound: created=%d for a %s key",
                 (int)resp->results[0]->created, expect_new ? "new" : "known");
        return false;
    }
    return true;
}

static bool remember(bench_ctx_t *ctx, const bench_key_t *k)
{
    bool ok = true;

    pthread_mutex_lock(&ctx->keys_mu);
    if (ctx->nkeys == ctx->capkeys) {
        size_t cap = ctx->capkeys != 0 ? ctx->capkeys * 2 : 65536;
        bench_key_t *p = realloc(ctx->keys, cap * sizeof *p);
        if (p == NULL) {
            ok = false;
        } else {
            ctx->keys = p;
            ctx->capkeys = cap;
        }
    }
    if (ok) ctx->keys[ctx->nkeys++] = *k;
    pthread_mutex_unlock(&ctx->keys_mu);
    return ok;
}

static bool list_messages(bench_ctx_t *ctx, int page_size, const char *before, const char *after,
                          bool from_oldest, oc_arena_t *arena, list_messages_resp_t **out,
                          char *err, size_t errlen)
{
    PB(ListMessagesRequest) req = PB_INIT(LIST_MESSAGES_REQUEST);

    req.tenant_id = ctx->big_tenant;
    req.conversation_id = ctx->big_conv;
    req.page_size = page_size;
    req.before = (char *)(before != NULL ? before : "");
    req.after = (char *)(after != NULL ? after : "");
    req.from_oldest = from_oldest;
    if (!rpc(ctx, METHOD("ListMessages"), &req.base,
             &omnichat__persistence__v1__list_messages_response__descriptor, arena,
             (ProtobufCMessage **)out, err, errlen))
        return false;
    if ((int)(*out)->n_messages != page_size) {
        snprintf(err, errlen, "ListMessages: %zu messages, expected %d", (*out)->n_messages,
                 page_size);
        return false;
    }
    return true;
}

static bool list_conversations(bench_ctx_t *ctx, const char *token, oc_arena_t *arena,
                               list_conversations_resp_t **out, char *err, size_t errlen)
{
    PB(ListConversationsRequest) req = PB_INIT(LIST_CONVERSATIONS_REQUEST);

    req.tenant_id = ctx->inbox_tenant;
    req.page_size = CONV_PAGE;
    req.page_token = (char *)token;
    if (!rpc(ctx, METHOD("ListConversations"), &req.base,
             &omnichat__persistence__v1__list_conversations_response__descriptor, arena,
             (ProtobufCMessage **)out, err, errlen))
        return false;
    if ((*out)->n_conversations == 0) {
        snprintf(err, errlen, "ListConversations: empty page");
        return false;
    }
    return true;
}

bool bench_call_service(void *user, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                        size_t errlen)
{
    bench_job_t *job = user;
    bench_ctx_t *ctx = job->ctx;
    list_messages_resp_t *lm = NULL;
    list_conversations_resp_t *lc = NULL;

    switch (job->kind) {
    case BENCH_PERSIST_NEW: {
        bench_key_t k = {
            .sample = (uint32_t)(mix64(((uint64_t)thread << 40) ^ seq) % ctx->nsamples),
            .phase = (uint16_t)ctx->phase_no,
            .thread = (uint16_t)thread,
            .seq = seq,
            .ts_ms = oc_now_ms(),
        };
        if (!persist(ctx, &k, true, arena, err, errlen)) return false;
        if (!remember(ctx, &k)) {
            snprintf(err, errlen, "out of memory");
            return false;
        }
        return true;
    }
    case BENCH_PERSIST_DUP: {
        if (ctx->nkeys == 0) {
            snprintf(err, errlen, "no persisted keys to send again");
            return false;
        }
        bench_key_t k = ctx->keys[mix64(((uint64_t)thread << 40) ^ seq) % ctx->nkeys];
        return persist(ctx, &k, false, arena, err, errlen);
    }
    case BENCH_MSG_FIRST:
        return list_messages(ctx, READ_PAGE, NULL, NULL, false, arena, &lm, err, errlen);
    case BENCH_MSG_DEEP_BEFORE:
        return list_messages(ctx, READ_PAGE, ctx->deep_before, NULL, false, arena, &lm, err,
                             errlen);
    case BENCH_MSG_DEEP_AFTER:
        return list_messages(ctx, READ_PAGE, NULL, ctx->deep_after, false, arena, &lm, err, errlen);
    case BENCH_CONV_FIRST:
        return list_conversations(ctx, "", arena, &lc, err, errlen);
    case BENCH_CONV_ALL:
        return list_conversations(ctx,
                                  ctx->conv_tokens[(seq + (uint64_t)thread) % ctx->nconv_tokens],
                                  arena, &lc, err, errlen);
    case BENCH_CONV_DEEP:
        return list_conversations(ctx, ctx->conv_tokens[ctx->conv_deep_page], arena, &lc, err,
                                  errlen);
    default:
        snprintf(err, errlen, "unknown scenario %d", job->kind);
        return false;
    }
}

/* ---- the walks: real cursors and page tokens, obtained the way a client would ---- */

int bench_ctx_walk(bench_ctx_t *ctx, char *err, size_t errlen)
{
    oc_arena_t *arena = oc_arena_create(256 * 1024);
    list_messages_resp_t *lm = NULL;
    list_conversations_resp_t *lc = NULL;
    char *cursor = NULL;
    int rc = -1;
    int pages = (int)(ctx->deep_position / WALK_PAGE);
    size_t n = 0;

    if (arena == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ctx->walk_pages = pages;
    /* Scrolling up from the newest page: the before cursor of page k sits at message 200*k. */
    for (int dir = 0; dir < 2; dir++) {
        int64_t t0 = bench_now_ns();
        for (int p = 0; p < pages; p++) {
            bool ok =
                dir == 0
                    ? list_messages(ctx, WALK_PAGE, cursor, NULL, false, arena, &lm, err, errlen)
                    : list_messages(ctx, WALK_PAGE, NULL, cursor, p == 0, arena, &lm, err, errlen);
            free(cursor);
            cursor = ok ? strdup(dir == 0 ? lm->before_cursor : lm->after_cursor) : NULL;
            oc_arena_reset(arena);
            if (!ok) goto out;
            if (cursor == NULL || cursor[0] == '\0') {
                snprintf(err, errlen, "ListMessages walk: no cursor after page %d", p + 1);
                goto out;
            }
        }
        double s = (double)(bench_now_ns() - t0) / 1e9;
        if (dir == 0) {
            ctx->walk_before_s = s;
            ctx->deep_before = cursor;
        } else {
            ctx->walk_after_s = s;
            ctx->deep_after = cursor;
        }
        cursor = NULL;
    }
    /* The deep page must be the one the SQL positions name. */
    if (!list_messages(ctx, READ_PAGE, ctx->deep_before, NULL, false, arena, &lm, err, errlen))
        goto out;
    copy(ctx->deep_first_id_service, sizeof ctx->deep_first_id_service,
         lm->messages[lm->n_messages - 1]->message_id);
    oc_arena_reset(arena);

    /* The inbox, page by page (page_size 50): token k opens page k. */
    ctx->conv_tokens = calloc(ctx->nconv_tokens + 1, sizeof(char *));
    if (ctx->conv_tokens == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    ctx->conv_tokens[n] = strdup("");
    if (ctx->conv_tokens[n++] == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (;;) {
        if (!list_conversations(ctx, ctx->conv_tokens[n - 1], arena, &lc, err, errlen)) goto out;
        if (lc->next_page_token[0] == '\0') break;
        if (n >= ctx->nconv_tokens) {
            snprintf(err, errlen, "ListConversations walk: more pages than the %zu expected",
                     ctx->nconv_tokens);
            goto out;
        }
        ctx->conv_tokens[n] = strdup(lc->next_page_token);
        if (ctx->conv_tokens[n++] == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        oc_arena_reset(arena);
    }
    if (n != ctx->nconv_tokens) {
        snprintf(err, errlen, "ListConversations walk: %zu pages, expected %zu", n,
                 ctx->nconv_tokens);
        goto out;
    }
    /* About 9,000 conversations deep. */
    ctx->conv_deep_page = n * 9 / 10;
    rc = 0;
out:
    free(cursor);
    oc_arena_destroy(arena);
    return rc;
}

/* ---- reference: the service's statements over one libpq connection ---- */

int bench_ctx_ref_open(bench_ctx_t *ctx, const char *app_dsn, char *err, size_t errlen)
{
    static oc_pg_stmt_t stmts[64];
    size_t n = 0;
    oc_error_t e;

    for (size_t i = 0; i < pst_nstmts_messages && n < 64; i++)
        stmts[n++] = pst_stmts_messages[i];
    for (size_t i = 0; i < pst_nstmts_conversations && n < 64; i++)
        stmts[n++] = pst_stmts_conversations[i];
    oc_error_clear(&e);
    ctx->ref_pool = oc_pg_pool_create(app_dsn, 1, stmts, n, &e);
    if (ctx->ref_pool != NULL) ctx->ref_conn = oc_pg_acquire(ctx->ref_pool, 10000, &e);
    if (ctx->ref_conn == NULL) {
        snprintf(err, errlen, "reference connection: %s", e.msg);
        return -1;
    }
    return 0;
}

static bool ref_exec(bench_ctx_t *ctx, const char *tenant, oc_pg_query_t *q, size_t nq,
                     int want_rows, char *err, size_t errlen)
{
    oc_error_t e;
    bool ok;

    oc_error_clear(&e);
    if (oc_pg_exec_tx(ctx->ref_conn, tenant, q, nq, &e) != OC_OK) {
        snprintf(err, errlen, "reference %s: %s", q[nq - 1].stmt, e.msg);
        return false;
    }
    ok = oc_pg_ntuples(q[nq - 1].res) == want_rows;
    if (!ok)
        snprintf(err, errlen, "reference %s: %d rows, expected %d", q[nq - 1].stmt,
                 oc_pg_ntuples(q[nq - 1].res), want_rows);
    for (size_t i = 0; i < nq; i++)
        oc_pg_result_free(q[i].res);
    return ok;
}

bool bench_call_reference(void *user, int thread, uint64_t seq, oc_arena_t *arena, char *err,
                          size_t errlen)
{
    bench_job_t *job = user;
    bench_ctx_t *ctx = job->ctx;
    const char *ts = FIRST_TS_US, *id = FIRST_ID;
    const char *timeline = "timeline_before";
    char lim[16];

    (void)arena;
    switch (job->kind) {
    case BENCH_MSG_DEEP_BEFORE:
        ts = ctx->deep_before_ts;
        id = ctx->deep_before_id;
        break;
    case BENCH_MSG_DEEP_AFTER:
        ts = ctx->deep_after_ts;
        id = ctx->deep_after_id;
        timeline = "timeline_after";
        break;
    case BENCH_CONV_FIRST:
    case BENCH_CONV_ALL:
    case BENCH_CONV_DEEP: {
        size_t p = job->kind == BENCH_CONV_FIRST ? 0
                   : job->kind == BENCH_CONV_DEEP
                       ? ctx->conv_deep_page
                       : (size_t)((seq + (uint64_t)thread) % ctx->nconv_tokens);
        /* Exactly what list_conversations binds: tenant, position, limit + 1. */
        snprintf(lim, sizeof lim, "%d", CONV_PAGE + 1);
        const char *p1[] = {ctx->inbox_tenant, ctx->conv_keys_ts[p], ctx->conv_keys_id[p], lim};
        oc_pg_query_t q[] = {{"list_conversations", 4, p1, NULL}};
        int rows = p + 1 == ctx->nconv_tokens
                       ? (int)(ctx->inbox_conversations - (long long)p * CONV_PAGE)
                       : CONV_PAGE + 1;
        return ref_exec(ctx, ctx->inbox_tenant, q, 1, rows, err, errlen);
    }
    default:
        break;
    }
    /* Exactly what list_messages runs: the existence check, then limit + 1 rows. */
    snprintf(lim, sizeof lim, "%d", READ_PAGE + 1);
    const char *p2[] = {ctx->big_tenant, ctx->big_conv, ts, id, lim};
    oc_pg_query_t q[] = {{"conversation_exists", 2, p2, NULL}, {timeline, 5, p2, NULL}};
    return ref_exec(ctx, ctx->big_tenant, q, 2, READ_PAGE + 1, err, errlen);
}

void bench_ctx_dispose(bench_ctx_t *ctx)
{
    if (ctx->ref_pool != NULL) {
        oc_pg_release(ctx->ref_pool, ctx->ref_conn);
        oc_pg_pool_destroy(ctx->ref_pool);
    }
    for (size_t i = 0; ctx->conv_tokens != NULL && i < ctx->nconv_tokens; i++)
        free(ctx->conv_tokens[i]);
    for (size_t i = 0; ctx->conv_keys_ts != NULL && i < ctx->nconv_tokens; i++) {
        free(ctx->conv_keys_ts[i]);
        free(ctx->conv_keys_id[i]);
    }
    free(ctx->conv_tokens);
    free(ctx->conv_keys_ts);
    free(ctx->conv_keys_id);
    free(ctx->deep_before);
    free(ctx->deep_after);
    free(ctx->samples);
    free(ctx->keys);
    memset(ctx, 0, sizeof *ctx);
}
