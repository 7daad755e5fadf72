/* The webhook skeleton: deadline, signature through the provider, routing, one PersistInbound
 * per tenant, echoes to ReconcileOutbound, the answer only after the commit. */
#include "inbound.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "omnichat/log.h"
#include "omnichat/util.h"

/* Calls that would get less than this are not made: the answer could not arrive in time. */
#define CALL_MIN_MS 10

/* Milliseconds left before a monotonic deadline (0 when it passed). */
static long left_ms(int64_t deadline_us)
{
    int64_t d = (deadline_us - oc_mono_us()) / 1000;

    return d > 0 ? (long)d : 0;
}

/* omnichat_webhook_events_total{provider,outcome}: outcomes are this file's constants. */
static void count(conn_t *c, const char *outcome, size_t n)
{
    if (n > 0)
        oc_metric_inc(c->m_webhook_events, (const char *const[]){c->p->name, outcome}, (double)n);
}

/*
 * The answer to a failed persistence call after the signature passed. Providers redeliver on
 * 5xx only, so a content problem must never be a 4xx here: INVALID_ARGUMENT means our
 * validation missed something, a 500 keeps the POST for a redelivery once that is fixed.
 */
static int http_status_of(oc_err_t rc)
{
    switch (rc) {
    case OC_E_UNAVAILABLE:
    case OC_E_DEADLINE:
    case OC_E_CONFLICT:
    case OC_E_NOMEM:
        return 503;
    case OC_E_NOT_FOUND:
        return 404;
    default:
        return 500;
    }
}

/* One request in flight. */
typedef struct hook {
    conn_t *c;
    oc_arena_t *arena;
    char request_id[64];
    int64_t t0, deadline;
    oc_error_t err;
} hook_t;

/*
 * Merging concurrent PersistInbound calls of one channel account.
 *
 * Webhook POSTs of one account arrive concurrently (LINE and Meta send many at once), and their
 * messages touch the same conversations: as separate transactions they wait for each other's
 * row locks in PostgreSQL, and every one pays its own commit. So at most one PersistInbound per
 * account is in flight: a POST that finds one running queues its
 * messages, and the next call takes every queued POST of the same tenant, up to
 * CONN_PERSIST_BATCH_MAX messages, in arrival order. One transaction, one commit, no lock waits
 * between the POSTs of an account. Each POST is still answered only after the call that carried
 * its messages returned: 200 after the commit, 503 when it failed or when its own deadline
 * passed while it waited (the provider then redelivers; its messages are stored once, by key).
 * A merged call refused for its content (not for availability) is retried per POST, so one bad
 * POST never fails another.
 */
#define MERGE_SLOTS 64 /* lock stripes; every account has its own queue in its stripe */

enum { JOB_QUEUED, JOB_TAKEN, JOB_DONE, JOB_ALONE };

typedef struct pin_job {
    conn_t *c;
    const char *tenant_id;
    PB(InboundMessage) * *msgs;
    size_t n;
    int64_t deadline;
    int state;
    oc_err_t rc;
    char err[256];
    size_t created; /* of its messages, how many were new */
    struct pin_job *next;
} pin_job_t;

/* The queue of one account of one connector; exists while a POST of it is being stored. */
typedef struct pin_acct {
    struct pin_acct *next; /* in its stripe */
    conn_t *c;
    pin_job_t *head; /* queued jobs, oldest first */
    bool busy;       /* a call of this account is in flight */
    int users;       /* jobs of it not yet returned */
    char id[];
} pin_acct_t;

typedef struct pin_slot {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pin_acct_t *accts;
} pin_slot_t;

static pin_slot_t g_slots[MERGE_SLOTS];
static pthread_once_t g_slots_once = PTHREAD_ONCE_INIT;

static void slots_init(void)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    for (int i = 0; i < MERGE_SLOTS; i++) {
        pthread_mutex_init(&g_slots[i].mu, NULL);
        pthread_cond_init(&g_slots[i].cv, &ca);
    }
    pthread_condattr_destroy(&ca);
}

static pin_slot_t *slot_of(const char *account_id)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const char *s = account_id != NULL ? account_id : ""; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return &g_slots[h % MERGE_SLOTS];
}

/* The account's queue in stripe s (made when absent; NULL when out of memory). */
static pin_acct_t *acct_get(pin_slot_t *s, conn_t *c, const char *id)
{
    pin_acct_t *a;
    size_t len = strlen(id);

    for (a = s->accts; a != NULL; a = a->next)
        if (a->c == c && strcmp(a->id, id) == 0) return a;
    if ((a = calloc(1, sizeof *a + len + 1)) == NULL) return NULL;
    a->c = c;
    memcpy(a->id, id, len + 1);
    a->next = s->accts;
    s->accts = a;
    return a;
}

static void acct_put(pin_slot_t *s, pin_acct_t *a)
{
    if (--a->users > 0) return;
    for (pin_acct_t **p = &s->accts; *p != NULL; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            break;
        }
    free(a);
}

static void slot_unlink(pin_acct_t *s, pin_job_t *j)
{
    for (pin_job_t **p = &s->head; *p != NULL; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            j->next = NULL;
            return;
        }
}

/* True when a message of j has the idempotency key of one of taken[0..n) (persistence dedupes
 * by key: the two must not be in one call, where both would count as the same new message). */
static bool keys_clash(const pin_job_t *j, PB(InboundMessage) * *taken, size_t n)
{
    for (size_t a = 0; a < j->n; a++)
        for (size_t b = 0; b < n; b++)
            if (strcmp(j->msgs[a]->idempotency_key, taken[b]->idempotency_key) == 0 &&
                strcmp(j->msgs[a]->channel_account_id, taken[b]->channel_account_id) == 0)
                return true;
    return false;
}

static void wait_until(pin_slot_t *s, int64_t until_us)
{
    struct timespec ts = {(time_t)(until_us / 1000000), (long)(until_us % 1000000) * 1000};
    int rc = pthread_cond_timedwait(&s->cv, &s->mu, &ts);

    (void)rc; /* ETIMEDOUT or a wake-up: the caller looks at the state again */
}

/* The slot's call, made by `me` (queued, the slot idle, s->mu held; held again on return). */
static void lead(hook_t *h, pin_slot_t *s, pin_acct_t *a, pin_job_t *me)
{
    PB(InboundMessage) * msgs[CONN_PERSIST_BATCH_MAX];
    pin_job_t *jobs[CONN_PERSIST_BATCH_MAX];
    size_t nmsg = 0, njob = 0;
    int64_t deadline = me->deadline;
    PB(PersistInboundRequest) req = PB_INIT(PERSIST_INBOUND_REQUEST);
    PB(PersistInboundResponse) *resp = NULL;
    oc_error_t e;
    oc_err_t rc;

    a->busy = true;
    slot_unlink(a, me);
    jobs[njob++] = me;
    for (size_t i = 0; i < me->n; i++)
        msgs[nmsg++] = me->msgs[i];
    for (pin_job_t *j = a->head, *next; j != NULL; j = next) {
        next = j->next;
        if (j->c != me->c || strcasecmp(j->tenant_id, me->tenant_id) != 0 ||
            nmsg + j->n > CONN_PERSIST_BATCH_MAX || left_ms(j->deadline) < CALL_MIN_MS ||
            keys_clash(j, msgs, nmsg))
            continue;
        slot_unlink(a, j);
        j->state = JOB_TAKEN;
        jobs[njob++] = j;
        for (size_t i = 0; i < j->n; i++)
            msgs[nmsg++] = j->msgs[i];
        if (j->deadline < deadline) deadline = j->deadline;
    }
    me->state = JOB_TAKEN;
    pthread_mutex_unlock(&s->mu);

    req.tenant_id = (char *)me->tenant_id;
    req.n_messages = nmsg;
    req.messages = msgs;
    oc_error_clear(&e);
    long left = left_ms(deadline);
    rc = left < CALL_MIN_MS
             ? oc_error_set(&e, OC_E_UNAVAILABLE, "webhook deadline reached, retry")
             : conn_pst_call(me->c, (int)left, "PersistInbound", &req.base,
                             &omnichat__persistence__v1__persist_inbound_response__descriptor,
                             h->request_id, h->arena, (ProtobufCMessage **)&resp, &e);
    if (rc == OC_OK && resp->n_results != nmsg)
        rc = oc_error_set(&e, OC_E_INTERNAL, "PersistInbound: %zu results for %zu messages",
                          resp->n_results, nmsg);
    if (njob > 1)
        OC_DEBUG("webhook messages persisted together", OC_LS("request_id", h->request_id),
                 OC_LI("posts", (long long)njob), OC_LI("messages", (long long)nmsg),
                 OC_LS("code", oc_err_name(rc)));

    pthread_mutex_lock(&s->mu);
    for (size_t k = 0, off = 0; k < njob; k++) {
        pin_job_t *j = jobs[k];
        j->created = 0;
        if (rc == OC_OK)
            for (size_t i = 0; i < j->n; i++)
                j->created += resp->results[off + i]->created ? 1 : 0;
        off += j->n;
        j->rc = rc;
        snprintf(j->err, sizeof j->err, "%s", rc == OC_OK ? "" : e.msg);
        /* Refused for its content: each POST tries alone, so that one cannot fail another. */
        j->state = njob > 1 && rc != OC_OK && rc != OC_E_UNAVAILABLE ? JOB_ALONE : JOB_DONE;
    }
    a->busy = false;
    pthread_cond_broadcast(&s->cv);
}

/* One PersistInbound of msgs[0..n) (n <= CONN_PERSIST_BATCH_MAX) of one tenant, merged with the
 * concurrent ones of the same account; *created counts the new messages. */
static oc_err_t persist_merged(hook_t *h, const char *tenant_id, PB(InboundMessage) * *msgs,
                               size_t n, size_t *created)
{
    pin_job_t me = {.c = h->c,
                    .tenant_id = tenant_id,
                    .msgs = msgs,
                    .n = n,
                    .deadline = h->deadline,
                    .state = JOB_QUEUED};
    pin_slot_t *s;
    pin_acct_t *a;

    pthread_once(&g_slots_once, slots_init);
    s = slot_of(msgs[0]->channel_account_id);
    pthread_mutex_lock(&s->mu);
    if ((a = acct_get(s, h->c, msgs[0]->channel_account_id)) == NULL) {
        pthread_mutex_unlock(&s->mu);
        return oc_error_set(&h->err, OC_E_NOMEM, "out of memory");
    }
    a->users++;
    pin_job_t **tail = &a->head;
    while (*tail != NULL)
        tail = &(*tail)->next;
    *tail = &me;
    for (;;) {
        if (me.state == JOB_DONE || me.state == JOB_ALONE) break;
        if (me.state == JOB_QUEUED && !a->busy) {
            lead(h, s, a, &me);
            continue;
        }
        if (me.state == JOB_QUEUED && left_ms(me.deadline) < CALL_MIN_MS) {
            slot_unlink(a, &me);
            me.rc = OC_E_UNAVAILABLE;
            snprintf(me.err, sizeof me.err, "webhook deadline reached, retry");
            me.state = JOB_DONE;
            break;
        }
        /* Queued: until the deadline; taken: the call ends by the deadline of its jobs. */
        wait_until(s, me.state == JOB_QUEUED ? me.deadline - 1000LL * (CALL_MIN_MS - 1)
                                             : oc_mono_us() + 1000000);
    }
    acct_put(s, a);
    pthread_mutex_unlock(&s->mu);

    if (me.state == JOB_ALONE) {
        PB(PersistInboundRequest) req = PB_INIT(PERSIST_INBOUND_REQUEST);
        PB(PersistInboundResponse) *resp = NULL;
        long left = left_ms(h->deadline);
        oc_err_t rc;

        req.tenant_id = (char *)tenant_id;
        req.n_messages = n;
        req.messages = msgs;
        rc = left < CALL_MIN_MS
                 ? oc_error_set(&h->err, OC_E_UNAVAILABLE, "webhook deadline reached, retry")
                 : conn_pst_call(h->c, (int)left, "PersistInbound", &req.base,
                                 &omnichat__persistence__v1__persist_inbound_response__descriptor,
                                 h->request_id, h->arena, (ProtobufCMessage **)&resp, &h->err);
        if (rc != OC_OK) return rc;
        *created = 0;
        for (size_t i = 0; i < resp->n_results; i++)
            *created += resp->results[i]->created ? 1 : 0;
        return OC_OK;
    }
    if (me.rc != OC_OK) return oc_error_set(&h->err, me.rc, "%s", me.err);
    *created = me.created;
    return OC_OK;
}

/* Persists items[0..n) of one tenant, CONN_PERSIST_BATCH_MAX per call, each call within the
 * time left; returns the first failure. */
static oc_err_t persist(hook_t *h, const char *tenant_id, conn_item_t **items, size_t n)
{
    conn_t *c = h->c;

    for (size_t off = 0; off < n; off += CONN_PERSIST_BATCH_MAX) {
        size_t k = n - off < CONN_PERSIST_BATCH_MAX ? n - off : CONN_PERSIST_BATCH_MAX;
        PB(InboundMessage) *msgs = oc_arena_alloc(h->arena, k * sizeof *msgs);
        PB(InboundMessage) **ptrs = oc_arena_alloc(h->arena, k * sizeof *ptrs);
        size_t created = 0;
        oc_err_t rc;

        if (msgs == NULL || ptrs == NULL) return oc_error_set(&h->err, OC_E_NOMEM, "out of memory");
        for (size_t i = 0; i < k; i++) {
            const conn_item_t *it = items[off + i];
            PB(InboundMessage) init = PB_INIT(INBOUND_MESSAGE);
            msgs[i] = init;
            msgs[i].channel_account_id = it->account->channel_account_id;
            msgs[i].external_user_id = (char *)it->external_user_id;
            msgs[i].contact_display_name = (char *)it->display_name;
            msgs[i].contact_avatar_url = (char *)it->avatar_url;
            msgs[i].thread_key = (char *)it->thread_key;
            msgs[i].external_message_id = (char *)it->external_message_id;
            msgs[i].idempotency_key = (char *)it->external_message_id;
            msgs[i].direction =
                it->direction != 0 ? it->direction : PBE(DIRECTION__DIRECTION_INBOUND);
            msgs[i].sender_type =
                it->sender_type != 0 ? it->sender_type : PBE(SENDER_TYPE__SENDER_TYPE_CONTACT);
            msgs[i].content_type = it->content_type;
            msgs[i].content_text = (char *)it->content_text;
            msgs[i].content_struct_json = (char *)it->content_struct_json;
            msgs[i].channel_timestamp_ms = it->timestamp_ms;
            ptrs[i] = &msgs[i];
        }
        rc = persist_merged(h, tenant_id, ptrs, k, &created);
        if (rc != OC_OK) {
            count(c, "failed", n - off);
            return rc;
        }
        count(c, "stored", created);
        count(c, "duplicate", k - created);
    }
    return OC_OK;
}

/*
 * An echo that names one of our messages confirms it (the send whose response was lost is
 * settled as sent). True when it did, so the item is not stored again; false when the echo is
 * not ours (a reply typed elsewhere) and is stored as the provider gave it.
 */
static bool reconcile(hook_t *h, conn_item_t *it, oc_err_t *failed)
{
    PB(ReconcileOutboundRequest) req = PB_INIT(RECONCILE_OUTBOUND_REQUEST);
    PB(ReconcileOutboundResponse) *resp = NULL;
    oc_error_t e;
    oc_err_t rc;
    long left = left_ms(h->deadline);

    *failed = OC_OK;
    if (it->echo_message_id == NULL || !oc_uuid_valid(it->echo_message_id)) return false;
    oc_error_clear(&e);
    req.tenant_id = it->account->tenant_id;
    req.message_id = (char *)it->echo_message_id;
    req.external_message_id = (char *)it->external_message_id;
    rc = left < CALL_MIN_MS
             ? oc_error_set(&e, OC_E_UNAVAILABLE, "webhook deadline reached, retry")
             : conn_pst_call(h->c, (int)left, "ReconcileOutbound", &req.base,
                             &omnichat__persistence__v1__reconcile_outbound_response__descriptor,
                             h->request_id, h->arena, (ProtobufCMessage **)&resp, &e);
    if (rc == OC_OK) {
        count(h->c, "reconciled", 1);
        return true;
    }
    if (rc == OC_E_NOT_FOUND || rc == OC_E_INVALID) return false; /* not one of ours */
    *failed = oc_error_set(&h->err, rc, "%s", e.msg);
    return false;
}

/* Applies a receipt item to its conversation. OC_OK, or a failure (in h->err) to answer. */
static oc_err_t receipt(hook_t *h, conn_item_t *it)
{
    PB(ApplyReceiptRequest) req = PB_INIT(APPLY_RECEIPT_REQUEST);
    PB(ApplyReceiptResponse) *resp = NULL;
    long left = left_ms(h->deadline);
    oc_err_t rc;

    req.tenant_id = it->account->tenant_id;
    req.channel_account_id = it->account->channel_account_id;
    req.thread_key = (char *)it->thread_key;
    req.status = it->receipt;
    req.watermark_ms = it->watermark_ms;
    req.external_message_ids = it->receipt_mids;
    req.n_external_message_ids = it->n_receipt_mids;
    rc = left < CALL_MIN_MS
             ? oc_error_set(&h->err, OC_E_UNAVAILABLE, "webhook deadline reached, retry")
             : conn_pst_call(h->c, (int)left, "ApplyReceipt", &req.base,
                             &omnichat__persistence__v1__apply_receipt_response__descriptor,
                             h->request_id, h->arena, (ProtobufCMessage **)&resp, &h->err);
    if (rc == OC_E_INVALID) rc = OC_OK; /* a receipt we cannot apply: acknowledged, counted */
    count(h->c, rc == OC_OK && resp != NULL ? "receipt" : "receipt_skipped", 1);
    return rc;
}

/* The signing secret of a path-routed POST: the account's sealed secret_field. 0 when it
 * could be unsealed; otherwise the HTTP status already answered. */
static int path_secret(hook_t *h, const oc_http_request_t *req, oc_http_response_t *resp,
                       PB(ChannelAccount) * *acc, oc_vault_secret_t *secret)
{
    conn_t *c = h->c;
    const char *id = req->path + strlen(c->p->webhook_path);
    const PB(SealedCredential) * cred;
    long left;
    oc_err_t rc;

    if (strncmp(req->path, c->p->webhook_path, strlen(c->p->webhook_path)) != 0 ||
        !oc_uuid_valid(id)) {
        count(c, "rejected", 1);
        oc_http_response_error(resp, 404, "unknown channel account");
        return 404;
    }
    left = left_ms(h->deadline);
    rc = left >= CALL_MIN_MS
             ? conn_account_get(c, (int)left, NULL, id, h->request_id, h->arena, acc, &h->err)
             : oc_error_set(&h->err, OC_E_UNAVAILABLE, "webhook deadline reached");
    if (rc == OC_E_NOT_FOUND || rc == OC_E_INVALID) {
        count(c, "rejected", 1);
        oc_http_response_error(resp, 404, "unknown channel account");
        return 404;
    }
    if (rc != OC_OK) {
        oc_http_response_error(resp, http_status_of(rc), "channel account lookup failed");
        return http_status_of(rc);
    }
    if (c->p->secret_scope == CONN_SECRET_PER_APP) return 0;
    cred = conn_account_credential(*acc, c->p->secret_field);
    if (cred == NULL) {
        /* Registered but never given credentials (ConnectChannel failed half-way), or they
         * were removed: nothing to check a signature with. */
        OC_WARN("webhook for an account without a channel secret",
                OC_LS("request_id", h->request_id), OC_LS("tenant_id", (*acc)->tenant_id),
                OC_LS("channel_account_id", (*acc)->channel_account_id));
        oc_http_response_error(resp, 401, "signature cannot be verified");
        return 401;
    }
    if (oc_vault_open(c->vault, (*acc)->tenant_id, (*acc)->channel_account_id, c->p->secret_field,
                      cred->key_id, cred->ciphertext.data, cred->ciphertext.len, secret,
                      &h->err) != OC_OK) {
        OC_ERROR("could not unseal the channel secret", OC_LS("request_id", h->request_id),
                 OC_LS("tenant_id", (*acc)->tenant_id),
                 OC_LS("channel_account_id", (*acc)->channel_account_id),
                 OC_LS("key_id", cred->key_id));
        oc_http_response_error(resp, 500, "channel secret unavailable");
        return 500;
    }
    return 0;
}

/* Gives every item its account; unroutable ones keep NULL. OC_OK or a lookup failure. */
static oc_err_t route(hook_t *h, PB(ChannelAccount) * path_acc, conn_batch_t *b, size_t *unroutable)
{
    *unroutable = 0;
    for (size_t i = 0; i < b->nitems; i++) {
        conn_item_t *it = &b->items[i];
        PB(ChannelAccount) *acc = path_acc;
        oc_err_t rc;

        if (h->c->p->routing == CONN_ROUTE_BODY) {
            acc = NULL;
            for (size_t j = 0; j < i && acc == NULL; j++) /* same account earlier in this POST */
                if (b->items[j].account != NULL && b->items[j].channel_type == it->channel_type &&
                    strcmp(b->items[j].route_id, it->route_id) == 0)
                    acc = (PB(ChannelAccount) *)b->items[j].account;
            if (acc == NULL && it->route_id != NULL) {
                long left = left_ms(h->deadline);
                oc_error_t e;
                oc_error_clear(&e);
                rc = left < CALL_MIN_MS
                         ? oc_error_set(&e, OC_E_UNAVAILABLE, "webhook deadline reached")
                         : conn_account_route(h->c, (int)left, it->channel_type, it->route_id,
                                              h->request_id, h->arena, &acc, &e);
                if (rc != OC_OK && rc != OC_E_NOT_FOUND)
                    return oc_error_set(&h->err, rc, "%s", e.msg);
            }
        }
        it->account = acc;
        if (acc == NULL) (*unroutable)++;
    }
    return OC_OK;
}

/* Enriches and persists the routed items, one tenant at a time. */
static oc_err_t store(hook_t *h, conn_batch_t *b)
{
    conn_t *c = h->c;
    conn_item_t **group = oc_arena_alloc(h->arena, (b->nitems + 1) * sizeof *group);
    bool *done = oc_arena_alloc(h->arena, b->nitems + 1);
    oc_err_t rc = OC_OK;

    if (group == NULL || done == NULL) return oc_error_set(&h->err, OC_E_NOMEM, "out of memory");
    memset(done, 0, b->nitems + 1);
    for (size_t i = 0; i < b->nitems; i++) {
        const char *tenant;
        size_t n = 0;
        if (done[i] || b->items[i].account == NULL) continue;
        tenant = b->items[i].account->tenant_id;
        for (size_t j = i; j < b->nitems; j++) {
            conn_item_t *it = &b->items[j];
            if (done[j] || it->account == NULL || strcasecmp(it->account->tenant_id, tenant) != 0)
                continue;
            done[j] = true;
            group[n++] = it;
        }
        if (c->p->enrich != NULL) {
            /* A nicety: at most half of what is left, the rest is for storing the items. */
            long left = left_ms(h->deadline);
            for (size_t s = 0; s < n;) {
                size_t e = s + 1;
                while (e < n && group[e]->account == group[s]->account)
                    e++;
                /* Items of one account are contiguous in the common case (one account per
                 * POST); enrich works on an array, so copy the run. */
                conn_item_t *run = oc_arena_alloc(h->arena, (e - s) * sizeof *run);
                if (run == NULL) return oc_error_set(&h->err, OC_E_NOMEM, "out of memory");
                for (size_t k = s; k < e; k++)
                    run[k - s] = *group[k];
                c->p->enrich(c, h->arena, group[s]->account, run, e - s,
                             oc_mono_us() + 1000LL * (left / 2));
                for (size_t k = s; k < e; k++) {
                    group[k]->display_name = run[k - s].display_name;
                    group[k]->avatar_url = run[k - s].avatar_url;
                }
                s = e;
            }
        }
        rc = persist(h, tenant, group, n);
        if (rc != OC_OK) {
            OC_WARN("webhook not persisted", OC_LS("request_id", h->request_id),
                    OC_LS("tenant_id", tenant),
                    OC_LS("channel_account_id", group[0]->account->channel_account_id),
                    OC_LS("code", oc_err_name(rc)), OC_LS("detail", h->err.msg));
            return rc;
        }
    }
    return OC_OK;
}

void conn_webhook_handle(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    hook_t h = {.c = user};
    conn_t *c = h.c;
    PB(ChannelAccount) *acc = NULL;
    oc_vault_secret_t secret = {NULL, 0};
    conn_batch_t batch;
    size_t unroutable = 0, reconciled = 0;
    bool sig_ok;
    oc_err_t rc;

    oc_error_clear(&h.err);
    h.t0 = oc_mono_us();
    /* One deadline for the whole request (the body has just arrived): every call below gets
     * what is left of it, never a fresh budget of its own. */
    h.deadline = h.t0 + (int64_t)c->cfg.webhook_timeout_ms * 1000;
    conn_request_id(req, h.request_id);
    /* On every answer, errors included: the provider's delivery log then names the id our
     * logs carry. */
    oc_http_response_header(resp, "X-Request-Id", h.request_id);
    h.arena = oc_arena_create(0);
    if (h.arena == NULL) {
        oc_http_response_error(resp, 503, "out of memory");
        return;
    }

    /* Authenticate the raw bytes before looking inside them. */
    if (c->p->routing == CONN_ROUTE_PATH && path_secret(&h, req, resp, &acc, &secret) != 0)
        goto out;
    if (c->p->secret_scope == CONN_SECRET_PER_APP)
        sig_ok = c->p->signature_valid(
            c->cfg.app_secret, c->cfg.app_secret != NULL ? strlen(c->cfg.app_secret) : 0, req);
    else
        sig_ok = c->p->signature_valid(secret.data, secret.len, req);
    oc_vault_secret_dispose(&secret);
    if (!sig_ok) {
        count(c, "rejected", 1); /* the 401 of omnichat_webhook_requests_total */
        oc_http_response_error(resp, 401, "invalid signature");
        goto out;
    }

    /* From here on the body is the provider's: only a body that is unusable as a whole is a
     * 400. A bad item is skipped, a failure of ours is a 5xx (the provider redelivers). */
    oc_error_clear(&h.err);
    if (c->p->parse(req->body, req->body_len, h.arena, &batch, &h.err) != OC_OK) {
        if (h.err.code == OC_E_INVALID) count(c, "rejected", 1); /* the 400 */
        oc_http_response_error(resp, h.err.code == OC_E_INVALID ? 400 : 503, h.err.msg);
        goto out;
    }
    count(c, "ignored", batch.ignored);
    count(c, "invalid", batch.invalid);
    if (batch.invalid > 0)
        OC_WARN("webhook events skipped as invalid", OC_LS("request_id", h.request_id),
                OC_LS("tenant_id", acc != NULL ? acc->tenant_id : ""),
                OC_LS("channel_account_id", acc != NULL ? acc->channel_account_id : ""),
                OC_LI("invalid", (long long)batch.invalid),
                OC_LI("first_index", (long long)batch.first_invalid_index),
                OC_LS("first_reason", batch.first_invalid_reason));

    if ((rc = route(&h, acc, &batch, &unroutable)) != OC_OK) {
        oc_http_response_error(resp, http_status_of(rc), "channel account lookup failed");
        goto out;
    }
    if (unroutable > 0) {
        count(c, "unroutable", unroutable);
        OC_WARN("webhook items for no connected account acknowledged",
                OC_LS("request_id", h.request_id), OC_LI("items", (long long)unroutable));
    }
    for (size_t i = 0; i < batch.nitems; i++) {
        conn_item_t *it = &batch.items[i];
        if (it->account == NULL || it->receipt == 0) continue;
        if (receipt(&h, it) != OC_OK) {
            oc_http_response_error(resp, http_status_of(h.err.code), "could not apply a receipt");
            goto out;
        }
        it->account = NULL; /* applied: nothing to store */
    }
    for (size_t i = 0; i < batch.nitems; i++) {
        conn_item_t *it = &batch.items[i];
        oc_err_t failed;
        if (it->account == NULL || !it->echo) continue;
        if (reconcile(&h, it, &failed)) {
            it->account = NULL; /* settled: nothing to store */
            reconciled++;
        } else if (failed != OC_OK) {
            oc_http_response_error(resp, http_status_of(failed), "could not reconcile an echo");
            goto out;
        }
    }
    if (store(&h, &batch) != OC_OK) {
        oc_http_response_error(resp, http_status_of(h.err.code), "could not store the events");
        goto out;
    }
    oc_buf_appends(&resp->body, "{}");
    OC_DEBUG("webhook", OC_LS("request_id", h.request_id),
             OC_LS("tenant_id", acc != NULL ? acc->tenant_id : ""),
             OC_LS("channel_account_id", acc != NULL ? acc->channel_account_id : ""),
             OC_LI("messages", (long long)batch.nitems), OC_LI("ignored", (long long)batch.ignored),
             OC_LI("invalid", (long long)batch.invalid), OC_LI("unroutable", (long long)unroutable),
             OC_LI("reconciled", (long long)reconciled), OC_LI("latency_us", oc_mono_us() - h.t0));
out:
    oc_arena_destroy(h.arena);
}
