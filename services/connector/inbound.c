/* The webhook skeleton: deadline, signature through the provider, routing, one PersistInbound
 * per tenant, echoes to ReconcileOutbound, the answer only after the commit. */
#include "inbound.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* Persists items[0..n) of one tenant, CONN_PERSIST_BATCH_MAX per call, each call within the
 * time left; returns the first failure. */
static oc_err_t persist(hook_t *h, const char *tenant_id, conn_item_t **items, size_t n)
{
    conn_t *c = h->c;

    for (size_t off = 0; off < n; off += CONN_PERSIST_BATCH_MAX) {
        size_t k = n - off < CONN_PERSIST_BATCH_MAX ? n - off : CONN_PERSIST_BATCH_MAX;
        PB(PersistInboundRequest) req = PB_INIT(PERSIST_INBOUND_REQUEST);
        PB(PersistInboundResponse) *resp = NULL;
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
        req.tenant_id = (char *)tenant_id;
        req.n_messages = k;
        req.messages = ptrs;
        long left = left_ms(h->deadline);
        if (left < CALL_MIN_MS)
            rc = oc_error_set(&h->err, OC_E_UNAVAILABLE, "webhook deadline reached, retry");
        else
            rc = conn_pst_call(c, (int)left, "PersistInbound", &req.base,
                               &omnichat__persistence__v1__persist_inbound_response__descriptor,
                               h->request_id, h->arena, (ProtobufCMessage **)&resp, &h->err);
        if (rc != OC_OK) {
            count(c, "failed", n - off);
            return rc;
        }
        for (size_t i = 0; i < resp->n_results; i++)
            created += resp->results[i]->created ? 1 : 0;
        count(c, "stored", created);
        count(c, "duplicate", resp->n_results - created);
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
