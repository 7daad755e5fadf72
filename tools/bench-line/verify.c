/* Exactly-once checks after a phase: the simulator's delivery log and the database's rows. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bl.h"
#include "omnichat/pg.h"

/* A growable array of fixed-size strings (BL_ID_LEN or 40 bytes), sortable. */
typedef struct strs {
    char *v;
    size_t n, cap, width;
} strs_t;

static bool strs_add(strs_t *s, const char *x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap != 0 ? s->cap * 2 : 4096;
        char *p = realloc(s->v, cap * s->width);
        if (p == NULL) return false;
        s->v = p;
        s->cap = cap;
    }
    snprintf(s->v + s->n * s->width, s->width, "%s", x != NULL ? x : "");
    s->n++;
    return true;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static const char *strs_at(const strs_t *s, size_t i)
{
    return s->v + i * s->width;
}

/* Sorts s and returns how many entries repeat an earlier one. */
static uint64_t strs_sort_dups(strs_t *s)
{
    uint64_t dups = 0;

    if (s->n > 1) qsort(s->v, s->n, s->width, cmp_id);
    for (size_t i = 1; i < s->n; i++)
        if (strcmp(strs_at(s, i - 1), strs_at(s, i)) == 0) dups++;
    return dups;
}

long long bl_sql_count(bl_ctx_t *ctx, const char *sql, char *err, size_t errlen)
{
    oc_error_t e;
    oc_pg_conn_t *c;
    oc_pg_result_t *r = NULL;
    long long v = -1;

    oc_error_clear(&e);
    c = oc_pg_connect(ctx->super_dsn, &e);
    if (c != NULL && oc_pg_exec_simple(c, sql, &r, &e) == OC_OK && r != NULL &&
        oc_pg_ntuples(r) > 0 && !oc_pg_isnull(r, 0, 0))
        v = strtoll(oc_pg_value(r, 0, 0), NULL, 10);
    else
        snprintf(err, errlen, "query failed: %.200s", e.msg[0] ? e.msg : "no rows");
    oc_pg_result_free(r);
    oc_pg_disconnect(c);
    return v;
}

int bl_checkpoint(bl_ctx_t *ctx, char *err, size_t errlen)
{
    oc_error_t e;
    oc_pg_conn_t *c;
    int rc = -1;

    oc_error_clear(&e);
    c = oc_pg_connect(ctx->super_dsn, &e);
    if (c != NULL && oc_pg_exec_simple(c, "CHECKPOINT", NULL, &e) == OC_OK) rc = 0;
    if (rc != 0) snprintf(err, errlen, "CHECKPOINT: %.200s", e.msg);
    oc_pg_disconnect(c);
    return rc;
}

/* Adds the provider ids and de-duplication keys of every send the simulator executed for user. */
static int read_deliveries(bl_ctx_t *ctx, const char *user, strs_t *ids, strs_t *keys, char *err,
                           size_t errlen)
{
    char url[400];
    oc_buf_t body;
    json_t *root = NULL, *d;
    size_t i;
    int status, rc = -1;

    snprintf(url, sizeof url, "%s/__sim/deliveries?to=%s", ctx->sim_base, user);
    oc_buf_init(&body, 64u << 20);
    status = bl_http(ctx->th[0].http, url, NULL, NULL, 0, 30000, &body, err, errlen);
    if (status != 200) {
        if (status > 0) snprintf(err, errlen, "GET %.120s: HTTP %d", url, status);
        goto out;
    }
    root = json_loadb(body.data, body.len, 0, NULL);
    if (!json_is_array(root)) {
        snprintf(err, errlen, "GET %.120s: not a JSON array", url);
        goto out;
    }
    json_array_foreach(root, i, d)
    {
        const char *id = NULL, *key = NULL;
        char lowered[64];
        size_t n = 0;

        ctx->drv->delivery_fields(d, &id, &key);
        for (; key != NULL && key[n] != '\0' && n < sizeof lowered - 1; n++)
            lowered[n] = (char)tolower((unsigned char)key[n]);
        lowered[n] = '\0';
        /* A provider without de-duplication keys gives "": nothing to count twice. */
        if (!strs_add(ids, id != NULL ? id : "") ||
            (lowered[0] != '\0' && !strs_add(keys, lowered))) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    oc_buf_dispose(&body);
    return rc;
}

void bl_verify_sends(bl_ctx_t *ctx, const char *tag, bl_send_check_t *out)
{
    strs_t replies = {NULL, 0, 0, BL_ID_LEN}, ids = {NULL, 0, 0, BL_ID_LEN},
           keys = {NULL, 0, 0, 48};
    char sql[512];
    uint64_t dup_replies;
    size_t a = 0, b = 0;

    memset(out, 0, sizeof *out);
    for (int t = 0; t < BENCH_MAX_THREADS; t++)
        for (size_t i = 0; i < ctx->th[t].nsent; i++)
            if (!strs_add(&replies, ctx->th[t].sent_ids + i * BL_ID_LEN)) {
                snprintf(out->error, sizeof out->error, "out of memory");
                goto out;
            }
    for (int u = 0; u < ctx->nusers; u++)
        if (read_deliveries(ctx, ctx->users[u].id, &ids, &keys, out->error, sizeof out->error) != 0)
            goto out;
    out->replies_sent = replies.n;
    out->deliveries = ids.n;
    dup_replies = strs_sort_dups(&replies);
    out->dup_ids = strs_sort_dups(&ids) + dup_replies;
    out->dup_retry_keys = strs_sort_dups(&keys);
    /* Merge walk over the two sorted lists. */
    while (a < replies.n || b < ids.n) {
        int c = a >= replies.n ? 1
                : b >= ids.n   ? -1
                               : strcmp(strs_at(&replies, a), strs_at(&ids, b));
        if (c == 0) {
            out->matched++;
            a++;
            b++;
        } else if (c < 0) {
            out->missing++;
            a++;
        } else {
            out->extra++;
            b++;
        }
    }
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE status = 'sent') || ' ' || count(*)"
             "  FROM omnichat.messages WHERE direction = 'outbound'"
             "   AND idempotency_key LIKE 'lb-%s-%s-%%'",
             ctx->run, tag);
    {
        oc_error_t e;
        oc_pg_conn_t *c;
        oc_pg_result_t *r = NULL;

        oc_error_clear(&e);
        c = oc_pg_connect(ctx->super_dsn, &e);
        if (c != NULL && oc_pg_exec_simple(c, sql, &r, &e) == OC_OK && r != NULL &&
            oc_pg_ntuples(r) > 0) {
            unsigned long long s = 0, tot = 0;
            if (sscanf(oc_pg_value(r, 0, 0), "%llu %llu", &s, &tot) == 2) {
                out->db_sent = s;
                out->db_total = tot;
            }
        } else {
            snprintf(out->error, sizeof out->error, "database count: %.200s", e.msg);
        }
        oc_pg_result_free(r);
        oc_pg_disconnect(c);
    }
    out->done = out->error[0] == '\0';
    out->exact = out->done && out->missing == 0 && out->extra == 0 && out->dup_ids == 0 &&
                 out->dup_retry_keys == 0 && out->deliveries == out->replies_sent &&
                 out->matched == out->replies_sent && out->db_sent == out->replies_sent;
out:
    free(replies.v);
    free(ids.v);
    free(keys.v);
}

void bl_verify_ingest(bl_ctx_t *ctx, const char *id_prefix, int k, bl_ingest_check_t *out)
{
    char sql[512];
    oc_error_t e;
    oc_pg_conn_t *c = NULL;
    oc_pg_result_t *r = NULL;
    uint8_t *seen[BENCH_MAX_THREADS] = {NULL};
    size_t plen = strlen(id_prefix);

    memset(out, 0, sizeof *out);
    for (int t = 0; t < BENCH_MAX_THREADS; t++) {
        const bl_thread_t *th = &ctx->th[t];
        for (size_t i = 0; i < th->npost; i++) {
            if (th->post_ok[i] == 1) out->expected += (uint64_t)k;
            if (th->post_ok[i] == 2) out->failed_events += (uint64_t)k;
        }
        if (th->npost > 0 && (seen[t] = calloc(th->npost * (size_t)k, 1)) == NULL) {
            snprintf(out->error, sizeof out->error, "out of memory");
            goto out;
        }
    }
    /* The ids are "<prefix><thread>-<seq>-<j>" (calls.c): each row names its event. */
    snprintf(sql, sizeof sql,
             "SELECT external_message_id FROM omnichat.messages WHERE direction = 'inbound'"
             "   AND external_message_id LIKE '%s%%'",
             id_prefix);
    oc_error_clear(&e);
    c = oc_pg_connect(ctx->super_dsn, &e);
    if (c == NULL || oc_pg_exec_simple(c, sql, &r, &e) != OC_OK || r == NULL) {
        snprintf(out->error, sizeof out->error, "database read: %.200s", e.msg);
        goto out;
    }
    out->rows = (uint64_t)oc_pg_ntuples(r);
    for (int i = 0; i < oc_pg_ntuples(r); i++) {
        const char *id = oc_pg_value(r, i, 0);
        unsigned long long seq = 0;
        int t = -1, j = -1, used = 0;

        if (strncmp(id, id_prefix, plen) != 0 ||
            sscanf(id + plen, "%d-%llu-%d%n", &t, &seq, &j, &used) != 3 ||
            id[plen + (size_t)used] != '\0' || t < 0 || t >= BENCH_MAX_THREADS || j < 0 || j >= k ||
            seq >= ctx->th[t].npost) {
            out->unparsed++;
            continue;
        }
        uint8_t *cnt = &seen[t][seq * (size_t)k + (size_t)j];
        if (*cnt < 255) (*cnt)++;
        if (*cnt > 1) out->duplicates++;
    }
    for (int t = 0; t < BENCH_MAX_THREADS; t++)
        for (size_t i = 0; i < ctx->th[t].npost; i++)
            for (int j = 0; j < k; j++) {
                bool stored = seen[t][i * (size_t)k + (size_t)j] > 0;
                if (ctx->th[t].post_ok[i] == 1) {
                    if (stored)
                        out->stored_accepted++;
                    else
                        out->missing++;
                } else if (stored) {
                    out->stored_of_failed++;
                }
            }
    out->done = true;
    out->exact = out->missing == 0 && out->duplicates == 0 && out->unparsed == 0 &&
                 out->stored_accepted == out->expected;
out:
    for (int t = 0; t < BENCH_MAX_THREADS; t++)
        free(seen[t]);
    oc_pg_result_free(r);
    oc_pg_disconnect(c);
}
