/* Persistence service plumbing: validation, enum names, row mapping and signed cursors. */
#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omnichat/buf.h"
#include "omnichat/util.h"
#include "pst.h"

/* ---------------------------------------------------------------- database access */

oc_err_t pst_exec(oc_rpc_ctx_t *ctx, const char *tenant_id, oc_pg_query_t *q, size_t n)
{
    pst_t *pst = ctx->user;
    oc_err_t rc;

    if (tenant_id != NULL) snprintf(ctx->tenant_id, sizeof ctx->tenant_id, "%s", tenant_id);
    /* Retried once on a fresh connection when the connection failed; which statements may be
     * replayed after a loss during COMMIT is said in each statement table (OC_PG_IDEMPOTENT). */
    rc = oc_pg_pool_exec_tx(pst->pool, 2000, tenant_id, q, n, &ctx->err);
    if (rc != OC_OK) return rc;
    for (size_t i = 0; i < n; i++)
        if (q[i].res != NULL &&
            oc_arena_defer(ctx->arena, (void (*)(void *))oc_pg_result_free, q[i].res) != 0)
            return oc_error_set(&ctx->err, OC_E_NOMEM, "out of memory");
    return OC_OK;
}

/* ---------------------------------------------------------------- validation */

bool pst_check_uuid(oc_rpc_ctx_t *ctx, const char *field, const char *v, bool required)
{
    if (v == NULL || v[0] == '\0') {
        if (!required) return true;
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: is required", field);
        return false;
    }
    /* Canonical lowercase only: ids are compared and bound into cursors as text. */
    if (!oc_uuid_valid(v) || strpbrk(v, "ABCDEF") != NULL) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be a UUID (lowercase)", field);
        return false;
    }
    return true;
}

bool pst_check_str(oc_rpc_ctx_t *ctx, const char *field, const char *v, size_t max, bool required)
{
    size_t n = v != NULL ? strlen(v) : 0;

    if (n == 0) {
        if (!required) return true;
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: is required", field);
        return false;
    }
    if (n > max) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: longer than %zu bytes", field, max);
        return false;
    }
    if (!oc_utf8_valid(v, n)) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: not valid UTF-8", field);
        return false;
    }
    return true;
}

bool pst_check_json(oc_rpc_ctx_t *ctx, const char *field, const char *v, size_t max, bool container)
{
    size_t n = v != NULL ? strlen(v) : 0;

    if (n == 0) return true;
    if (n > max) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: longer than %zu bytes", field, max);
        return false;
    }
    if (!oc_json_valid(v, n, container)) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: not valid JSON%s", field,
                     container ? " (object or array)" : "");
        return false;
    }
    return true;
}

bool pst_check_attachments(oc_rpc_ctx_t *ctx, const char *field, size_t n,
                           PB(AttachmentInput) *const *a)
{
    char f[160];

    if (n > PST_MAX_ATTACHMENTS) {
        oc_error_set(&ctx->err, OC_E_INVALID, "%s: more than %d attachments", field,
                     PST_MAX_ATTACHMENTS);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const PB(AttachmentInput) *x = a[i];
#define F(name) (snprintf(f, sizeof f, "%s[%zu].%s", field, i, name), f)
        if (!pst_check_str(ctx, F("kind"), x->kind, 32, true) ||
            !pst_check_str(ctx, F("url"), x->url, PST_MAX_URL, false) ||
            !pst_check_str(ctx, F("mime_type"), x->mime_type, 256, false) ||
            !pst_check_str(ctx, F("name"), x->name, PST_MAX_NAME, false) ||
            !pst_check_json(ctx, F("metadata_json"), x->metadata_json, PST_MAX_JSON, false))
            return false;
        if (x->metadata_json != NULL && x->metadata_json[0] != '\0' && x->metadata_json[0] != '{') {
            oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be a JSON object", F("metadata_json"));
            return false;
        }
        if (x->size_bytes < 0) {
            oc_error_set(&ctx->err, OC_E_INVALID, "%s: must not be negative", F("size_bytes"));
            return false;
        }
        if (x->ordinal < 0 || x->ordinal > 1000) {
            oc_error_set(&ctx->err, OC_E_INVALID, "%s: must be between 0 and 1000", F("ordinal"));
            return false;
        }
        /* Two attachments in one place: one would be dropped without a word. */
        int ordinal = x->ordinal != 0 ? x->ordinal : (int)i;
        for (size_t k = 0; k < i; k++) {
            if ((a[k]->ordinal != 0 ? a[k]->ordinal : (int)k) == ordinal) {
                oc_error_set(&ctx->err, OC_E_INVALID, "%s: %d is used twice", F("ordinal"),
                             ordinal);
                return false;
            }
        }
#undef F
    }
    return true;
}

bool pst_page_size(oc_rpc_ctx_t *ctx, int32_t in, int *out)
{
    if (in == 0) {
        *out = PST_PAGE_DEFAULT;
        return true;
    }
    if (in < 1 || in > PST_PAGE_MAX) {
        oc_error_set(&ctx->err, OC_E_INVALID, "page_size: must be between 1 and %d", PST_PAGE_MAX);
        return false;
    }
    *out = in;
    return true;
}

/* ---------------------------------------------------------------- enums */

/* The names are the proto's (omnichat/pb.h), the very strings of the SQL enums. */
#define ENUM_FNS(fn, e) \
    const char *pst_##fn##_str(int v) \
    { \
        return oc_pb_enum_name(e, v); \
    } \
    int pst_##fn##_val(const char *s) \
    { \
        return oc_pb_enum_value(e, s); \
    }

ENUM_FNS(channel_type, OC_PB_CHANNEL_TYPE)
ENUM_FNS(channel_status, OC_PB_CHANNEL_STATUS)
ENUM_FNS(direction, OC_PB_DIRECTION)
ENUM_FNS(sender_type, OC_PB_SENDER_TYPE)
ENUM_FNS(content_type, OC_PB_CONTENT_TYPE)
ENUM_FNS(status, OC_PB_MESSAGE_STATUS)
ENUM_FNS(error_category, OC_PB_ERROR_CATEGORY)

/* ---------------------------------------------------------------- formatting */

char *pst_i64(oc_rpc_ctx_t *ctx, int64_t v)
{
    return oc_arena_sprintf(ctx->arena, "%" PRId64, v);
}

const char *pst_opt(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

char *pst_fallback_thread(oc_rpc_ctx_t *ctx, const char *external_user_id, int64_t ts_ms)
{
    const pst_t *pst = ctx->user;
    int64_t bucket = ts_ms / ((int64_t)pst->cfg.fallback_bucket_seconds * 1000);

    return oc_arena_sprintf(ctx->arena, "fallback:%s:%" PRId64, external_user_id, bucket);
}

char *pst_new_id(oc_rpc_ctx_t *ctx)
{
    char *id = oc_arena_alloc(ctx->arena, OC_UUID_STR_LEN + 1);

    if (id != NULL && oc_uuid_v7(id) != OC_OK) return NULL;
    return id;
}

char *pst_attachments_json(oc_rpc_ctx_t *ctx, size_t n, PB(AttachmentInput) *const *a)
{
    oc_buf_t b;
    char *out = NULL;

    if (n == 0) return NULL;
    oc_buf_init(&b, (size_t)PST_MAX_ATTACHMENTS * (PST_MAX_JSON + 8192));
    oc_buf_appends(&b, "[");
    for (size_t i = 0; i < n; i++) {
        const PB(AttachmentInput) *x = a[i];
        const char *s;
        /* An unset ordinal means "position in this list". */
        int ordinal = x->ordinal != 0 ? x->ordinal : (int)i;

        oc_buf_appendf(&b, "%s{\"ordinal\":%d,\"size_bytes\":%" PRId64 ",\"kind\":\"",
                       i > 0 ? "," : "", ordinal, x->size_bytes);
        s = x->kind != NULL ? x->kind : "";
        oc_buf_append_json_str(&b, s, strlen(s));
        oc_buf_appends(&b, "\",\"url\":\"");
        s = x->url != NULL ? x->url : "";
        oc_buf_append_json_str(&b, s, strlen(s));
        oc_buf_appends(&b, "\",\"mime_type\":\"");
        s = x->mime_type != NULL ? x->mime_type : "";
        oc_buf_append_json_str(&b, s, strlen(s));
        oc_buf_appends(&b, "\",\"name\":\"");
        s = x->name != NULL ? x->name : "";
        oc_buf_append_json_str(&b, s, strlen(s));
        oc_buf_appends(&b, "\",\"metadata\":");
        /* Validated JSON objects are spliced in as they are. */
        oc_buf_appends(
            &b, x->metadata_json != NULL && x->metadata_json[0] != '\0' ? x->metadata_json : "{}");
        oc_buf_appends(&b, "}");
    }
    oc_buf_appends(&b, "]");
    if (b.failed == OC_OK) out = oc_arena_strndup(ctx->arena, b.data, b.len);
    oc_buf_dispose(&b);
    return out;
}

/* ---------------------------------------------------------------- rows */

/*
 * Row conversion runs once per row and column of every page, so each lookup is cheap: a column
 * number comes from the caller's hint (see oc_pg_fnumber_hint; each row function keeps one per
 * column and per thread), and strings point into the result instead of being copied. That is
 * safe because every result comes from pst_exec, which frees it only with the call's arena,
 * after the response has been packed.
 */
static char *col_str(const oc_pg_result_t *r, int row, const char *name, int *hint)
{
    const char *v = oc_pg_cell(r, row, name, hint, NULL);

    return (char *)(v != NULL ? v : protobuf_c_empty_string);
}

/* PostgreSQL's text of a bigint ("-?[0-9]+"), as strtoll reads it (it saturates; bigints never
 * need to), without strtoll's locale and base handling, which cost more than the rest of the
 * cell: four of these per message row. */
int64_t pst_text_i64(const char *s)
{
    bool neg = *s == '-';
    uint64_t v = 0;

    if (neg || *s == '+') s++;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > ((uint64_t)INT64_MAX + 1 - (uint64_t)(*s - '0')) / 10)
            return neg ? INT64_MIN : INT64_MAX;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (neg) return v >= (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
}

static int64_t col_i64(const oc_pg_result_t *r, int row, const char *name, int *hint)
{
    const char *v = oc_pg_cell(r, row, name, hint, NULL);

    return v != NULL ? pst_text_i64(v) : 0;
}

/* Microsecond columns leave the API as milliseconds. */
static int64_t col_ms(const oc_pg_result_t *r, int row, const char *name, int *hint)
{
    return col_i64(r, row, name, hint) / 1000;
}

static const char *col_raw(const oc_pg_result_t *r, int row, const char *name, int *hint)
{
    return oc_pg_cell(r, row, name, hint, NULL);
}

/*
 * In a row function: HINTS declares its column hints, per thread and per result shape (the
 * rows of one function come from several statements: an outbox insert's row carries more
 * columns than a page's), and NEXT_HINT hands them out in call order. The shape is told by the
 * column count; a wrong guess costs only the scan the hint check falls back to.
 */
#define HINTS_MAX 32
#define HINT_SHAPES 4
typedef struct hint_set {
    int nfields;
    int col[HINTS_MAX];
} hint_set_t;
typedef struct hints {
    hint_set_t set[HINT_SHAPES];
    unsigned next; /* the set a new shape replaces */
} hints_t;

static int *hints_for(hints_t *h, const oc_pg_result_t *r)
{
    int nf = oc_pg_nfields(r);

    for (int i = 0; i < HINT_SHAPES; i++)
        if (h->set[i].nfields == nf) return h->set[i].col;
    hint_set_t *s = &h->set[h->next++ % HINT_SHAPES];
    s->nfields = nf;
    return s->col; /* the old shape's hints: checked by name, so harmless */
}

#define HINTS() \
    static _Thread_local hints_t hints_; \
    int *hint_ = hints_for(&hints_, r); \
    int nh_ = 0
#define NEXT_HINT() (assert(nh_ < HINTS_MAX), &hint_[nh_++])
#define STR(name) col_str(r, row, name, NEXT_HINT())
#define RAW(name) col_raw(r, row, name, NEXT_HINT())
#define I64(name) col_i64(r, row, name, NEXT_HINT())
#define MS(name) col_ms(r, row, name, NEXT_HINT())

bool pst_parse_attachments(oc_rpc_ctx_t *ctx, const char *json, const char *message_id,
                           size_t *n_out, PB(Attachment) * **out)
{
    json_error_t jerr;
    json_t *root = NULL;
    bool ok = false;

    *n_out = 0;
    *out = NULL;
    if (json == NULL || json[0] == '\0') return true;
    root = json_loads(json, 0, &jerr);
    if (!json_is_array(root)) goto out;
    size_t n = json_array_size(root);
    PB(Attachment) **arr = oc_arena_alloc(ctx->arena, (n + 1) * sizeof *arr);
    if (arr == NULL) goto out;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(root, i);
        PB(Attachment) *a = oc_arena_alloc(ctx->arena, sizeof *a);
        PB(Attachment) init = PB_INIT(ATTACHMENT);
        char *meta;

        if (a == NULL) goto out;
        *a = init;
#define JS(key) \
    oc_arena_strdup(ctx->arena, json_string_value(json_object_get(o, key)) != NULL \
                                    ? json_string_value(json_object_get(o, key)) \
                                    : "")
        a->attachment_id = JS("id");
        a->kind = JS("kind");
        a->url = JS("url");
        a->mime_type = JS("mime_type");
        a->name = JS("name");
#undef JS
        a->message_id = (char *)message_id;
        a->ordinal = (int32_t)json_integer_value(json_object_get(o, "ordinal"));
        a->size_bytes = json_integer_value(json_object_get(o, "size_bytes"));
        a->created_at_ms = json_integer_value(json_object_get(o, "created_at_us")) / 1000;
        meta = json_dumps(json_object_get(o, "metadata"), JSON_COMPACT | JSON_ENCODE_ANY);
        a->metadata_json = oc_arena_strdup(ctx->arena, meta != NULL ? meta : "{}");
        free(meta);
        arr[i] = a;
    }
    *n_out = n;
    *out = arr;
    ok = true;
out:
    json_decref(root);
    if (!ok) oc_error_set(&ctx->err, OC_E_INTERNAL, "attachments: could not be read");
    return ok;
}

PB(Message) * pst_row_message(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row)
{
    HINTS();
    PB(Message) *m = oc_arena_alloc(ctx->arena, sizeof *m);
    PB(Message) init = PB_INIT(MESSAGE);

    if (m == NULL) return NULL;
    *m = init;
    m->message_id = STR("id");
    m->tenant_id = STR("tenant_id");
    m->channel_account_id = STR("channel_account_id");
    m->conversation_id = STR("conversation_id");
    m->contact_id = STR("contact_id");
    m->direction = pst_direction_val(RAW("direction"));
    m->idempotency_key = STR("idempotency_key");
    m->external_message_id = STR("external_message_id");
    m->sender_type = pst_sender_type_val(RAW("sender_type"));
    m->sender_id = STR("sender_id");
    m->sender_display_name = STR("sender_display_name");
    m->content_type = pst_content_type_val(RAW("content_type"));
    m->content_text = STR("content_text");
    m->content_struct_json = STR("content_struct");
    m->status = pst_status_val(RAW("status"));
    m->error_category = pst_error_category_val(RAW("error_category"));
    m->error_detail = STR("error_detail");
    m->attempts = (int32_t)I64("attempts");
    m->next_attempt_at_ms = MS("next_attempt_at_us");
    m->channel_timestamp_ms = MS("channel_timestamp_us");
    m->created_at_ms = MS("created_at_us");
    m->updated_at_ms = MS("updated_at_us");
    m->provider_retry_key = STR("provider_retry_key");
    if (!pst_parse_attachments(ctx, RAW("attachments"), m->message_id, &m->n_attachments,
                               &m->attachments))
        return NULL;
    return m;
}

PB(Conversation) * pst_row_conversation(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row)
{
    HINTS();
    PB(Conversation) *c = oc_arena_alloc(ctx->arena, sizeof *c);
    PB(Conversation) init = PB_INIT(CONVERSATION);

    if (c == NULL) return NULL;
    *c = init;
    c->conversation_id = STR("id");
    c->tenant_id = STR("tenant_id");
    c->channel_account_id = STR("channel_account_id");
    c->channel_type = pst_channel_type_val(RAW("channel_type"));
    c->thread_key = STR("thread_key");
    c->contact_id = STR("contact_id");
    c->last_message_at_ms = MS("last_message_at_us");
    c->last_message_preview = STR("last_message_preview");
    c->message_count = I64("message_count");
    c->last_activity_at_ms = MS("last_activity_at_us");
    c->created_at_ms = MS("created_at_us");
    c->updated_at_ms = MS("updated_at_us");
    return c;
}

PB(Contact) * pst_row_contact(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row)
{
    HINTS();
    PB(Contact) *c = oc_arena_alloc(ctx->arena, sizeof *c);
    PB(Contact) init = PB_INIT(CONTACT);

    if (c == NULL) return NULL;
    *c = init;
    c->contact_id = STR("id");
    c->tenant_id = STR("tenant_id");
    c->channel_account_id = STR("channel_account_id");
    c->external_user_id = STR("external_user_id");
    c->display_name = STR("display_name");
    c->avatar_url = STR("avatar_url");
    c->profile_json = STR("profile");
    c->created_at_ms = MS("created_at_us");
    c->updated_at_ms = MS("updated_at_us");
    return c;
}

PB(ChannelAccount) * pst_row_channel_account(oc_rpc_ctx_t *ctx, const oc_pg_result_t *r, int row)
{
    HINTS();
    PB(ChannelAccount) *a = oc_arena_alloc(ctx->arena, sizeof *a);
    PB(ChannelAccount) init = PB_INIT(CHANNEL_ACCOUNT);
    const char *creds;

    if (a == NULL) return NULL;
    *a = init;
    a->channel_account_id = STR("id");
    a->tenant_id = STR("tenant_id");
    a->channel_type = pst_channel_type_val(RAW("channel_type"));
    a->external_account_id = STR("external_account_id");
    a->display_name = STR("display_name");
    a->status = pst_channel_status_val(RAW("status"));
    a->last_error_category = pst_error_category_val(RAW("last_error_category"));
    a->last_error_at_ms = MS("last_error_at_us");
    a->last_success_at_ms = MS("last_success_at_us");
    a->created_at_ms = MS("created_at_us");
    a->updated_at_ms = MS("updated_at_us");
    creds = RAW("credentials");
    if (creds != NULL) {
        json_error_t jerr;
        json_t *root = json_loads(creds, 0, &jerr);
        size_t n = json_array_size(root);

        a->credentials = oc_arena_alloc(ctx->arena, (n + 1) * sizeof *a->credentials);
        for (size_t i = 0; a->credentials != NULL && i < n; i++) {
            json_t *o = json_array_get(root, i);
            PB(SealedCredential) *s = oc_arena_alloc(ctx->arena, sizeof *s);
            PB(SealedCredential) sinit = PB_INIT(SEALED_CREDENTIAL);
            const char *b64 = json_string_value(json_object_get(o, "ciphertext"));
            size_t blen = b64 != NULL ? strlen(b64) : 0;
            uint8_t *bytes = oc_arena_alloc(ctx->arena, blen + 1);
            long dn;

            if (s == NULL || bytes == NULL) break;
            *s = sinit;
            s->field = oc_arena_strdup(ctx->arena, json_string_value(json_object_get(o, "field")));
            s->key_id =
                oc_arena_strdup(ctx->arena, json_string_value(json_object_get(o, "key_id")));
            /* PostgreSQL's base64 breaks lines every 76 characters: drop the newlines. */
            size_t k = 0;
            char *clean = oc_arena_alloc(ctx->arena, blen + 1);
            for (size_t j = 0; clean != NULL && j < blen; j++)
                if (b64[j] != '\n' && b64[j] != '\r') clean[k++] = b64[j];
            dn = clean != NULL ? oc_base64_decode(clean, k, bytes, blen + 1) : -1;
            if (dn < 0 || s->field == NULL || s->key_id == NULL) continue;
            s->ciphertext.data = bytes;
            s->ciphertext.len = (size_t)dn;
            a->credentials[a->n_credentials++] = s;
        }
        json_decref(root);
    }
    return a;
}

/* ---------------------------------------------------------------- cursors */

/*
 * Layout before base64url: version (1) | kind (1) | ts_us (8, big-endian) | id (16) |
 * HMAC-SHA256(key, version|kind|ts|id|scope) truncated to 16 bytes. The scope binds the
 * cursor to the tenant and the conversation (or list filters), so a cursor is useless
 * anywhere else and cannot be forged without the service's key.
 */
#define CURSOR_VERSION 1
#define CURSOR_BODY 26
#define CURSOR_MAC 16
#define CURSOR_RAW (CURSOR_BODY + CURSOR_MAC)

static void cursor_mac(const pst_t *pst, const uint8_t *body, const char *scope, uint8_t mac[32])
{
    unsigned int maclen = 32;
    unsigned int dlen = 32;
    uint8_t buf[CURSOR_BODY + 32];

    /* The scope enters as its digest: any length binds, and the MAC input stays fixed. */
    memcpy(buf, body, CURSOR_BODY);
    EVP_Digest(scope, strlen(scope), buf + CURSOR_BODY, &dlen, EVP_sha256(), NULL);
    HMAC(EVP_sha256(), pst->cursor_key, PST_CURSOR_KEY_LEN, buf, sizeof buf, mac, &maclen);
}

char *pst_cursor_encode(oc_rpc_ctx_t *ctx, char kind, int64_t ts_us, const char *id,
                        const char *scope)
{
    uint8_t raw[CURSOR_RAW];
    uint8_t mac[32];
    char *out;

    raw[0] = CURSOR_VERSION;
    raw[1] = (uint8_t)kind;
    for (int i = 0; i < 8; i++)
        raw[2 + i] = (uint8_t)((uint64_t)ts_us >> (56 - 8 * i));
    if (!oc_uuid_parse(id, raw + 10)) return NULL;
    cursor_mac(ctx->user, raw, scope, mac);
    memcpy(raw + CURSOR_BODY, mac, CURSOR_MAC);
    out = oc_arena_alloc(ctx->arena, oc_base64_encoded_len(CURSOR_RAW) + 1);
    if (out != NULL) oc_base64url_encode(raw, CURSOR_RAW, out);
    return out;
}

bool pst_cursor_decode(oc_rpc_ctx_t *ctx, const char *field, const char *cursor, char kind,
                       const char *scope, int64_t *ts_us, char id_out[37])
{
    uint8_t raw[CURSOR_RAW + 4];
    uint8_t mac[32];
    size_t n = strlen(cursor);
    long got;
    uint64_t ts = 0;

    if (n > 128) goto bad;
    got = oc_base64url_decode(cursor, n, raw, sizeof raw);
    if (got != CURSOR_RAW || raw[0] != CURSOR_VERSION || raw[1] != (uint8_t)kind) goto bad;
    cursor_mac(ctx->user, raw, scope, mac);
    if (CRYPTO_memcmp(mac, raw + CURSOR_BODY, CURSOR_MAC) != 0) goto bad;
    for (int i = 0; i < 8; i++)
        ts = (ts << 8) | raw[2 + i];
    *ts_us = (int64_t)ts;
    oc_uuid_format(raw + 10, id_out);
    return true;
bad:
    oc_error_set(&ctx->err, OC_E_INVALID,
                 "%s: invalid cursor (garbled, forged, or from another scope)", field);
    return false;
}
