/* The outbound engine: SendText validation, Stripe-style create-or-get, one delivery attempt,
 * and the retry policy of both delivery guarantees. */
#include "outbound.h"

#include <ctype.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "omnichat/log.h"
#include "omnichat/util.h"

#define CAT(name) PBE(ERROR_CATEGORY__ERROR_CATEGORY_##name)
#define STATUS(name) PBE(MESSAGE_STATUS__MESSAGE_STATUS_##name)
/* A success refreshes the account's last_success_at at most this often (off the hot path). */
#define SUCCESS_REFRESH_MS (10LL * 60 * 1000)

/* ---------- pure helpers ---------- */

static void hash_field(EVP_MD_CTX *md, const char *s)
{
    uint64_t n = s != NULL ? strlen(s) : 0;
    uint8_t len[8];

    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(n >> (56 - 8 * i));
    EVP_DigestUpdate(md, len, sizeof len);
    if (n > 0) EVP_DigestUpdate(md, s, (size_t)n);
}

void conn_fingerprint(const char *conversation_id, const char *text, const char *sender_id,
                      const char *sender_display_name, char out[CONN_FINGERPRINT_LEN + 1])
{
    uint8_t digest[32];
    unsigned int dlen = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    char lowered[OC_UUID_STR_LEN + 1];
    size_t i = 0;

    /* A UUID spelled in upper case is the same conversation. */
    for (; conversation_id[i] != '\0' && i < OC_UUID_STR_LEN; i++)
        lowered[i] = (char)tolower((unsigned char)conversation_id[i]);
    lowered[i] = '\0';
    memset(digest, 0, sizeof digest);
    if (md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1) {
        hash_field(md, conversation_id[i] == '\0' ? lowered : conversation_id);
        hash_field(md, text);
        hash_field(md, sender_id);
        hash_field(md, sender_display_name);
        EVP_DigestFinal_ex(md, digest, &dlen);
    }
    EVP_MD_CTX_free(md);
    oc_hex_encode(digest, sizeof digest, out);
}

int64_t conn_backoff_ms(const conn_policy_t *p, int attempts, double jitter01)
{
    int64_t d = p->base_ms;

    if (attempts < 0) attempts = 0;
    for (int i = 0; i < attempts && d < p->max_ms; i++)
        d *= 2;
    if (d > p->max_ms) d = p->max_ms;
    if (!(jitter01 >= 0.0)) jitter01 = 0.0;
    if (jitter01 > 1.0) jitter01 = 1.0;
    d = (int64_t)llround((double)d * (0.5 + 0.5 * jitter01));
    return d > 0 ? d : 1;
}

void conn_policy_of(const conn_t *c, conn_policy_t *p)
{
    *p = (conn_policy_t){.max_attempts = (int)c->cfg.max_attempts,
                         .base_ms = c->cfg.backoff_base_ms,
                         .max_ms = c->cfg.backoff_max_ms,
                         .window_ms = c->cfg.retry_window_s * 1000,
                         .delivery = c->p->delivery,
                         .echo_grace_ms = c->cfg.echo_grace_ms,
                         .echo_resend = c->p->echo_resend};
}

int64_t conn_next_attempt_ms(const conn_policy_t *p, int attempts, int64_t now_ms,
                             int64_t created_at_ms, double jitter01, bool unknown)
{
    int64_t delay, next;

    if (attempts + 1 >= p->max_attempts) return 0;
    delay = conn_backoff_ms(p, attempts, jitter01);
    /* Without a retry key the echo may still settle it: give the echo its time first. */
    if (unknown && p->delivery == CONN_DELIVERY_ECHO_CONFIRMS && delay < p->echo_grace_ms)
        delay = p->echo_grace_ms;
    next = now_ms + delay;
    /* An attempt due at the very end would find the window closed (conn_window_closed). */
    if (p->window_ms > 0 && created_at_ms > 0 && next >= created_at_ms + p->window_ms) return 0;
    return next;
}

bool conn_window_closed(const conn_policy_t *p, int64_t now_ms, int64_t created_at_ms)
{
    return p->window_ms > 0 && created_at_ms > 0 && now_ms - created_at_ms >= p->window_ms;
}

oc_err_t conn_lease_owner(const char *instance_id, char out[CONN_LEASE_OWNER_MAX + 1])
{
    char uuid[OC_UUID_STR_LEN + 1];
    int n = 0;

    if (oc_uuid_v4(uuid) != OC_OK) {
        out[0] = '\0';
        return OC_E_INTERNAL;
    }
    if (instance_id != NULL) {
        size_t len = strlen(instance_id);
        n = (int)(len < CONN_INSTANCE_ID_MAX ? len : CONN_INSTANCE_ID_MAX);
    }
    snprintf(out, CONN_LEASE_OWNER_MAX + 1, "%.*s:%s", n, instance_id != NULL ? instance_id : "",
             uuid);
    return OC_OK;
}

bool conn_pre_verdict(const conn_policy_t *p, const conn_attempt_t *a, conn_verdict_t *v)
{
    bool echo_wait = p->delivery == CONN_DELIVERY_ECHO_CONFIRMS && !p->echo_resend &&
                     a->prior_status == STATUS(UNKNOWN);

    if (!conn_window_closed(p, a->now_ms, a->created_at_ms) && !echo_wait) return false;
    memset(v, 0, sizeof *v);
    v->category = a->prior_category != 0 ? a->prior_category : CAT(INTERNAL_ERROR);
    if (!conn_window_closed(p, a->now_ms, a->created_at_ms)) {
        v->outcome = CONN_OUT_UNKNOWN; /* next_attempt_at 0: unknown for good */
        snprintf(v->detail, sizeof v->detail, "no echo within the grace period; delivery unknown");
    } else if (a->prior_status == STATUS(UNKNOWN)) {
        v->outcome = CONN_OUT_UNKNOWN; /* next_attempt_at 0: unknown for good */
        snprintf(v->detail, sizeof v->detail, "provider retry window closed; delivery unknown");
    } else {
        v->outcome = CONN_OUT_FAILED;
        snprintf(v->detail, sizeof v->detail, "provider retry window closed");
    }
    return true;
}

/* A refusal of the request itself: the identical earlier request was refused too. */
static bool request_refused(const conn_attempt_t *a, const conn_class_t *cls)
{
    return a->called &&
           (cls->category == CAT(INVALID_REQUEST_ERROR) || cls->category == CAT(RECIPIENT_ERROR));
}

void conn_settle(const conn_policy_t *p, const conn_attempt_t *a, const conn_class_t *cls,
                 conn_verdict_t *v)
{
    bool was_unknown = a->prior_status == STATUS(UNKNOWN);
    int calls = a->attempts + (a->called ? 1 : 0);

    memset(v, 0, sizeof *v);
    v->outcome = cls->outcome;
    if (cls->outcome == CONN_OUT_SENT) return;
    v->category = cls->category != 0 ? cls->category : CAT(INTERNAL_ERROR);
    snprintf(v->detail, sizeof v->detail, "%s", cls->detail);
    if (was_unknown && cls->outcome == CONN_OUT_RETRY) v->outcome = CONN_OUT_UNKNOWN;
    if (cls->outcome == CONN_OUT_FAILED) {
        if (!was_unknown || request_refused(a, cls)) return;
        v->outcome = CONN_OUT_UNKNOWN; /* next_attempt_at 0: unknown for good */
        snprintf(v->detail, sizeof v->detail, "%s; delivery unknown", cls->detail);
        return;
    }
    v->next_attempt_at_ms = conn_next_attempt_ms(p, a->attempts, a->now_ms, a->created_at_ms,
                                                 a->jitter01, v->outcome == CONN_OUT_UNKNOWN);
    if (v->next_attempt_at_ms != 0) return;
    if (v->outcome == CONN_OUT_UNKNOWN) {
        snprintf(v->detail, sizeof v->detail, "%s; gave up after %d attempts; delivery unknown",
                 cls->detail, calls);
    } else {
        v->outcome = CONN_OUT_FAILED;
        snprintf(v->detail, sizeof v->detail, "%s; gave up after %d attempts", cls->detail, calls);
    }
}

static double jitter(void)
{
    uint32_t r = 0;

    if (oc_random_id_bytes(&r, sizeof r) != OC_OK) return 1.0;
    return (double)r / 4294967295.0;
}

/* ---------- one delivery attempt ---------- */

static void record_status(conn_t *c, oc_arena_t *arena, const char *request_id,
                          const PB(ChannelAccount) * acc, int status, int category)
{
    PB(RecordChannelStatusRequest) req = PB_INIT(RECORD_CHANNEL_STATUS_REQUEST);
    PB(RecordChannelStatusResponse) *resp = NULL;
    oc_error_t err;

    oc_error_clear(&err);
    req.tenant_id = acc->tenant_id;
    req.channel_account_id = acc->channel_account_id;
    req.status = status;
    req.error_category = category;
    /* A 401 seen with a token that was replaced meanwhile must not mark the new one. */
    const PB(SealedCredential) *used = conn_account_credential(acc, c->p->token_field);
    if (status == PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED) && used != NULL) {
        req.if_credential_field = (char *)c->p->token_field;
        req.if_credential_ciphertext = used->ciphertext;
    }
    if (conn_pst_call(c, 0, "RecordChannelStatus", &req.base,
                      &omnichat__persistence__v1__record_channel_status_response__descriptor,
                      request_id, arena, (ProtobufCMessage **)&resp, &err) == OC_OK &&
        resp->channel_account != NULL) {
        conn_account_put(c, resp->channel_account);
    } else {
        conn_account_invalidate(c, acc->channel_account_id);
        OC_WARN("could not record channel status", OC_LS("request_id", request_id),
                OC_LS("tenant_id", acc->tenant_id),
                OC_LS("channel_account_id", acc->channel_account_id), OC_LS("detail", err.msg));
    }
}

/* Unseals the token and makes one provider call; fills cls. Returns false when no request
 * could have reached the provider. */
static bool call_provider(conn_t *c, const char *request_id, const PB(ChannelAccount) * acc,
                          const PB(Message) * msg, const char *thread_key, conn_class_t *cls)
{
    const char *field = c->p->token_field;
    const PB(SealedCredential) *cred = conn_account_credential(acc, field);
    oc_vault_secret_t token = {NULL, 0};
    oc_error_t err;
    bool called;

    oc_error_clear(&err);
    memset(cls, 0, sizeof *cls);
    /* With a retry-key provider a retry without the stored key could deliver twice: never
     * send without it. */
    if (c->p->delivery == CONN_DELIVERY_RETRY_KEY &&
        (msg->provider_retry_key == NULL || !oc_uuid_valid(msg->provider_retry_key))) {
        cls->outcome = CONN_OUT_FAILED;
        cls->category = CAT(INTERNAL_ERROR);
        snprintf(cls->detail, sizeof cls->detail, "message has no provider retry key");
        return false;
    }
    if (cred == NULL) {
        cls->outcome = CONN_OUT_FAILED;
        cls->category = CAT(AUTH_ERROR);
        snprintf(cls->detail, sizeof cls->detail, "channel account has no access token");
        return false;
    }
    if (oc_vault_open(c->vault, acc->tenant_id, acc->channel_account_id, field, cred->key_id,
                      cred->ciphertext.data, cred->ciphertext.len, &token, &err) != OC_OK) {
        /* An operator problem (key removed or mismatched), not the message's fault: keep it
         * pending so that fixing the key file lets it go out. */
        OC_ERROR("could not unseal the access token", OC_LS("request_id", request_id),
                 OC_LS("tenant_id", acc->tenant_id),
                 OC_LS("channel_account_id", acc->channel_account_id),
                 OC_LS("key_id", cred->key_id), OC_LS("detail", err.msg));
        cls->outcome = CONN_OUT_RETRY;
        cls->category = CAT(INTERNAL_ERROR);
        snprintf(cls->detail, sizeof cls->detail, "access token could not be unsealed");
        return false;
    }
    conn_send_t s = {.account = acc,
                     .message = msg,
                     .thread_key = thread_key,
                     .token = token.data,
                     .token_len = token.len,
                     .timeout_ms = (long)c->cfg.api_timeout_ms};
    called = c->p->send(c, &s, cls);
    oc_vault_secret_dispose(&token);
    return called;
}

/* The channel label of a send: the account's channel type, or the connector's only one when
 * the account could not be read; a bounded set either way. */
static const char *send_channel(const conn_t *c, const PB(ChannelAccount) * acc)
{
    int type = acc != NULL                  ? (int)acc->channel_type
               : c->p->n_channel_types == 1 ? c->p->channel_types[0]
                                            : 0;
    const char *name = type != 0 ? oc_pb_enum_name(OC_PB_CHANNEL_TYPE, type) : NULL;

    return name != NULL ? name : "unknown";
}

/* Fail-fast checks of the channel account; false (cls filled) when the push must not happen. */
static bool account_usable(const PB(ChannelAccount) * acc, conn_class_t *cls)
{
    const char *why = NULL;

    if (acc->status == PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED))
        why = "channel account needs new credentials";
    else if (acc->status == PBE(CHANNEL_STATUS__CHANNEL_STATUS_DISABLED))
        why = "channel account is disabled";
    if (why == NULL) return true;
    cls->outcome = CONN_OUT_FAILED;
    cls->category = CAT(AUTH_ERROR);
    snprintf(cls->detail, sizeof cls->detail, "%s", why);
    return false;
}

oc_err_t conn_deliver(conn_t *c, oc_arena_t *arena, const char *request_id, const char *lease_owner,
                      const PB(Message) * msg, const char *thread_key, PB(Message) * *out,
                      oc_error_t *err)
{
    PB(ChannelAccount) *acc = NULL;
    PB(CompleteOutboundRequest) creq = PB_INIT(COMPLETE_OUTBOUND_REQUEST);
    PB(CompleteOutboundResponse) *cresp = NULL;
    conn_policy_t policy;
    conn_attempt_t at = {.prior_status = msg->status,
                         .prior_category = msg->error_category,
                         .attempts = msg->attempts,
                         .created_at_ms = msg->created_at_ms,
                         .now_ms = oc_now_ms(),
                         .jitter01 = 1.0,
                         .called = false};
    conn_class_t cls;
    conn_verdict_t v;
    int64_t t0 = oc_mono_us();
    oc_err_t rc;

    *out = NULL;
    memset(&cls, 0, sizeof cls);
    conn_policy_of(c, &policy);
    /* First, before even the account: past the window a call could deliver a second copy. */
    if (!conn_pre_verdict(&policy, &at, &v)) {
        rc = conn_account_get(c, 0, msg->tenant_id, msg->channel_account_id, request_id, arena,
                              &acc, err);
        if (rc == OC_E_NOT_FOUND) {
            cls.outcome = CONN_OUT_FAILED;
            cls.category = CAT(INTERNAL_ERROR);
            snprintf(cls.detail, sizeof cls.detail, "channel account not found");
            oc_error_clear(err);
        } else if (rc != OC_OK) {
            return rc; /* our lease expires; the worker tries again */
        } else if (account_usable(acc, &cls)) {
            at.called = call_provider(c, request_id, acc, msg, thread_key, &cls);
        }
        at.now_ms = oc_now_ms();
        at.jitter01 = jitter();
        conn_settle(&policy, &at, &cls, &v);
    }

    creq.tenant_id = msg->tenant_id;
    creq.message_id = msg->message_id;
    creq.lease_owner = (char *)lease_owner;
    creq.outcome = (int)v.outcome; /* conn_outcome_t mirrors OutboundOutcome */
    creq.external_message_id = cls.external_message_id;
    creq.error_category = v.category;
    creq.error_detail = v.detail;
    creq.next_attempt_at_ms = v.next_attempt_at_ms;
    creq.no_provider_call = !at.called; /* attempts counts provider calls only */
    rc = conn_pst_call(c, 0, "CompleteOutbound", &creq.base,
                       &omnichat__persistence__v1__complete_outbound_response__descriptor,
                       request_id, arena, (ProtobufCMessage **)&cresp, err);

    oc_metric_inc(c->m_sends,
                  (const char *const[]){send_channel(c, acc), conn_outcome_name(v.outcome),
                                        v.category != 0 ? conn_category_name(v.category) : "none"},
                  1);
    OC_LOG(v.outcome == CONN_OUT_SENT ? OC_LOG_DEBUG : OC_LOG_INFO, "send attempt",
           OC_LS("request_id", request_id), OC_LS("tenant_id", msg->tenant_id),
           OC_LS("message_id", msg->message_id), OC_LB("provider_called", at.called),
           OC_LS("outcome", conn_outcome_name(v.outcome)),
           OC_LS("category", conn_category_name(v.category)),
           OC_LB("final", v.next_attempt_at_ms == 0), OC_LS("detail", v.detail),
           OC_LI("attempt", msg->attempts + (at.called ? 1 : 0)),
           OC_LI("latency_us", oc_mono_us() - t0));

    if (acc != NULL && at.called && cls.auth_failed)
        record_status(c, arena, request_id, acc, PBE(CHANNEL_STATUS__CHANNEL_STATUS_AUTH_FAILED),
                      CAT(AUTH_ERROR));
    else if (acc != NULL && v.outcome == CONN_OUT_SENT &&
             (acc->status != PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE) ||
              oc_now_ms() - acc->last_success_at_ms > SUCCESS_REFRESH_MS))
        record_status(c, arena, request_id, acc, PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), 0);

    if (rc == OC_E_FAILED_PRECONDITION) {
        /* Someone else took the message over (our lease had run out): they settle it. */
        oc_error_clear(err);
        return oc_error_set(err, OC_E_UNAVAILABLE,
                            "message: being delivered by another worker, retry with the same "
                            "idempotency_key");
    }
    if (rc != OC_OK) return rc;
    if (cresp->message == NULL)
        return oc_error_set(err, OC_E_INTERNAL, "message: missing in the answer");
    *out = cresp->message;
    return OC_OK;
}

/* ---------- Connector/SendText ---------- */

static bool check_str(oc_rpc_ctx_t *ctx, const char *field, const char *v, size_t max,
                      bool required)
{
    size_t n = strlen(v);

    if (required && n == 0) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: is required", field);
        return false;
    }
    if (n > max) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be at most %zu bytes", field, max);
        return false;
    }
    if (!oc_utf8_valid(v, n)) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be valid UTF-8", field);
        return false;
    }
    return true;
}

static bool check_uuid(oc_rpc_ctx_t *ctx, const char *field, const char *v)
{
    if (v[0] == '\0') {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: is required", field);
        return false;
    }
    if (!oc_uuid_valid(v)) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be a UUID", field);
        return false;
    }
    return true;
}

/* The provider's text rule: at most text_max UTF-16 units or characters. */
static bool text_fits(const conn_provider_t *p, const char *text, size_t n)
{
    size_t units =
        p->text_unit == CONN_TEXT_UTF16_UNITS ? oc_utf16_units(text, n) : oc_utf8_chars(text, n);
    return units <= p->text_max;
}

static oc_err_t validate(const conn_t *c, oc_rpc_ctx_t *ctx, const CPB(SendTextRequest) * req)
{
    size_t n = strlen(req->text);

    if (!check_uuid(ctx, "tenant_id", req->tenant_id) ||
        !check_uuid(ctx, "conversation_id", req->conversation_id))
        return ctx->err.code;
    if (n == 0) return oc_error_set(&ctx->err, OC_E_INVALID, "text: is required");
    if (!oc_utf8_valid(req->text, n))
        return oc_error_set(&ctx->err, OC_E_INVALID, "text: must be valid UTF-8");
    if (!text_fits(c->p, req->text, n))
        return oc_error_set(&ctx->err, OC_E_INVALID, "text: must be %s", c->p->text_rule);
    if (!check_str(ctx, "idempotency_key", req->idempotency_key, CONN_KEY_MAX, true) ||
        !check_str(ctx, "sender_id", req->sender_id, CONN_KEY_MAX, true) ||
        !check_str(ctx, "sender_display_name", req->sender_display_name, CONN_NAME_MAX, false))
        return ctx->err.code;
    return OC_OK;
}

oc_err_t conn_send_text(oc_rpc_ctx_t *ctx, const ProtobufCMessage *in, ProtobufCMessage **out)
{
    const CPB(SendTextRequest) *req = (const void *)in;
    conn_t *c = ctx->user;
    CPB(SendTextResponse) * resp;
    CPB(SendTextResponse) init = CPB_INIT(SEND_TEXT_RESPONSE);
    PB(CreateOutboundRequest) creq = PB_INIT(CREATE_OUTBOUND_REQUEST);
    PB(CreateOutboundResponse) *cresp = NULL;
    PB(Message) *msg = NULL;
    char fingerprint[CONN_FINGERPRINT_LEN + 1];
    char retry_key[OC_UUID_STR_LEN + 1];
    char owner[CONN_LEASE_OWNER_MAX + 1];
    oc_error_t e;
    oc_err_t rc;

    if (validate(c, ctx, req) != OC_OK) return ctx->err.code;
    snprintf(ctx->tenant_id, sizeof ctx->tenant_id, "%s", req->tenant_id);

    conn_fingerprint(req->conversation_id, req->text, req->sender_id, req->sender_display_name,
                     fingerprint);
    if (oc_uuid_v4(retry_key) != OC_OK || conn_lease_owner(c->cfg.instance_id, owner) != OC_OK)
        return oc_error_set(&ctx->err, OC_E_INTERNAL,
                            "retry key or lease owner: could not be made");
    creq.tenant_id = req->tenant_id;
    creq.conversation_id = req->conversation_id;
    creq.idempotency_key = req->idempotency_key;
    creq.request_fingerprint = fingerprint;
    creq.sender_id = req->sender_id;
    creq.sender_display_name = req->sender_display_name;
    creq.sender_type = PBE(SENDER_TYPE__SENDER_TYPE_AGENT);
    creq.content_type = PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT);
    creq.content_text = req->text;
    creq.provider_retry_key = retry_key;
    creq.lease_owner = owner; /* this attempt's own: see conn_lease_owner */
    creq.lease_seconds = (int32_t)c->cfg.lease_seconds;
    /* Persistence checks the conversation's channel type in the same statement that creates
     * the message (FAILED_PRECONDITION, nothing written): no GetConversation round trip. */
    creq.n_channel_types = c->p->n_channel_types;
    creq.channel_types = (PB(ChannelType) *)c->p->channel_types;
    oc_error_clear(&e);
    rc = conn_pst_call(c, 0, "CreateOutbound", &creq.base,
                       &omnichat__persistence__v1__create_outbound_response__descriptor,
                       ctx->request_id, ctx->arena, (ProtobufCMessage **)&cresp, &e);
    if (rc == OC_E_NOT_FOUND)
        return oc_error_set(&ctx->err, OC_E_NOT_FOUND, "conversation_id: not found");
    if (rc != OC_OK) return oc_error_set(&ctx->err, rc, "%s", e.msg);
    if (cresp->message == NULL)
        return oc_error_set(&ctx->err, OC_E_INTERNAL, "message: missing in the answer");

    msg = cresp->message;
    if (cresp->lease_acquired) {
        rc = conn_deliver(c, ctx->arena, ctx->request_id, owner, cresp->message, cresp->thread_key,
                          &msg, &ctx->err);
        if (rc != OC_OK) return rc;
    }
    resp = oc_arena_alloc(ctx->arena, sizeof *resp);
    if (resp == NULL) return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    *resp = init;
    resp->message = msg;
    *out = &resp->base;
    return OC_OK;
}
