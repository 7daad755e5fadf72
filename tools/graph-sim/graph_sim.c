/* The simulated Graph API: POST /{version}/{id}/messages (the Send API), the Page and Instagram
 * account look-up, signed echo webhooks of successful sends, receipts and events on request,
 * and the control API. Errors follow PROVIDERS.md: {"error": {message, type, code,
 * error_subcode, is_transient, fbtrace_id}}. */
#include "graph_sim.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/crypto.h>

#include "meta_wire.h"
#include "omnichat/util.h"
#include "sim_control.h"

#define MAX_HTTP_BODY ((size_t)4 * 1024 * 1024)
#define FIELD_MAX 65536
#define TEXT_MAX_CHARS 1999
#define METADATA_MAX 999
#define WEBHOOK_TIMEOUT_MS 10000L
#define ECHO_TRIES 100 /* Meta retries failed deliveries "at once and repeatedly" */
#define ECHO_RETRY_MS 200

/* Fault kinds: the error bodies of the PROVIDERS.md table. */
enum { K_NONE, K_TOKEN, K_PERMISSION, K_PERMISSION_200, K_WINDOW, K_BLOCKED, K_RATE, K_TRANSIENT };

static const struct {
    const char *name;
    int status;
    long code, subcode;
    bool transient;
    const char *message, *type;
} kinds[] = {
    [K_TOKEN] = {"token", 400, 190, 460, false,
                 "Error validating access token: The session has been invalidated.",
                 "OAuthException"},
    [K_PERMISSION] = {"permission", 403, 10, 0, false,
                      "(#10) Requires pages_messaging permission to manage the object",
                      "OAuthException"},
    [K_PERMISSION_200] = {"permission_200", 403, 200, 0, false,
                          "(#200) The user hasn't authorized the application to perform this "
                          "action",
                          "OAuthException"},
    [K_WINDOW] = {"window", 400, 10, 2018278, false,
                  "(#10) This message is sent outside of allowed window.", "OAuthException"},
    [K_BLOCKED] = {"blocked", 400, 551, 1545041, false,
                   "(#551) This person isn't available right now.", "OAuthException"},
    [K_RATE] = {"rate_limit", 400, 613, 0, false,
                "(#613) Calls to this api have exceeded the "
                "rate limit.",
                "OAuthException"},
    [K_TRANSIENT] = {"transient", 500, 2, 0, true,
                     "An unexpected error has occurred. Please "
                     "retry your request later.",
                     "OAuthException"},
};
#define NKINDS (int)(sizeof kinds / sizeof kinds[0])

struct gsim {
    sim_t core; /* accounts (Pages), faults, logs, clock, server; core.mu guards the rest too */
    char app_secret[256];
    char app_id[32];
    char webhook_url[512];
    bool echo;
    long echo_delay_ms;
    uint64_t next_mid;
    int pending;   /* echo deliveries in flight */
    bool stopping; /* echo deliveries give up */
    pthread_cond_t idle;
};

static const char *kind_name(int k)
{
    return k > 0 && k < NKINDS ? kinds[k].name : NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------- answers ---------- */

typedef struct answer {
    int status;
    json_t *body;
    bool drop;
} answer_t;

static void graph_error(answer_t *a, int status, long code, long subcode, bool transient,
                        const char *type, const char *message)
{
    char trace[16];
    uint8_t raw[8];

    if (RAND_bytes(raw, sizeof raw) != 1) memset(raw, 7, sizeof raw);
    oc_base64url_encode(raw, sizeof raw, trace);
    json_decref(a->body);
    a->status = status;
    a->body = json_pack("{s:{s:s, s:s, s:I, s:s}}", "error", "message", message, "type", type,
                        "code", (json_int_t)code, "fbtrace_id", trace);
    if (subcode != 0)
        json_object_set_new(json_object_get(a->body, "error"), "error_subcode",
                            json_integer(subcode));
    if (transient)
        json_object_set_new(json_object_get(a->body, "error"), "is_transient", json_true());
}

static void fault_answer(const sim_fault_t *f, answer_t *a)
{
    if (f->drop) {
        a->drop = true;
    } else if (f->kind > 0 && f->kind < NKINDS) {
        graph_error(a, f->status != 0 ? f->status : kinds[f->kind].status, kinds[f->kind].code,
                    kinds[f->kind].subcode, kinds[f->kind].transient, kinds[f->kind].type,
                    f->message[0] != '\0' ? f->message : kinds[f->kind].message);
    } else {
        /* A bare status: an HTTP failure with Meta's generic unknown-error body. */
        graph_error(a, f->status, 1, 0, false, "OAuthException",
                    f->message[0] != '\0' ? f->message : "An unknown error has occurred.");
    }
}

/* ---------- request fields: the form body, then the query ---------- */

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* The URL-decoded value of form field `name` (malloc'ed), or NULL. */
static char *form_get(const char *body, size_t len, const char *name)
{
    size_t nl = strlen(name), i = 0;

    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end - i > nl && memcmp(body + i, name, nl) == 0 && body[i + nl] == '=') {
            char *out = malloc(end - i), *o = out;
            if (out == NULL) return NULL;
            for (size_t k = i + nl + 1; k < end; k++) {
                if (body[k] == '+') {
                    *o++ = ' ';
                } else if (body[k] == '%' && k + 2 < end + 1 && hexval(body[k + 1]) >= 0 &&
                           hexval(body[k + 2]) >= 0) {
                    *o++ = (char)(hexval(body[k + 1]) << 4 | hexval(body[k + 2]));
                    k += 2;
                } else {
                    *o++ = body[k];
                }
            }
            *o = '\0';
            return out;
        }
        i = end + 1;
    }
    return NULL;
}

static char *field(const oc_http_request_t *req, const char *name)
{
    char *v = req->body_len > 0 ? form_get(req->body, req->body_len, name) : NULL;
    const char *q = v == NULL ? oc_http_query(req, name) : NULL;

    return v != NULL ? v : q != NULL ? strdup(q) : NULL;
}

/* ---------- the API ---------- */

typedef struct call {
    int64_t received_ms;
    bool have_fault;
    sim_fault_t fault;
    char token_sha256[65];
    char page_id[SIM_ID_MAX];
    bool executed;
    char mid[64];
} call_t;

/* The Page of the request's access_token, checking appsecret_proof when a secret is set. */
static bool authenticate(gsim_t *s, const oc_http_request_t *req, call_t *c, sim_account_t *page,
                         answer_t *a)
{
    char *token = field(req, "access_token");
    char *proof = field(req, "appsecret_proof");
    char want[META_PROOF_LEN + 1];
    uint8_t sha[32];
    bool ok = false;

    if (token == NULL || token[0] == '\0') {
        graph_error(a, 400, 2500, 0, false, "OAuthException",
                    "An active access token must be used to query information about the "
                    "current user.");
        goto out;
    }
    sim_sha256(token, strlen(token), sha);
    oc_hex_encode(sha, sizeof sha, c->token_sha256);
    if (!sim_find_account(&s->core, token, strlen(token), page)) {
        graph_error(a, 400, 190, 0, false, "OAuthException", "Invalid OAuth access token.");
        goto out;
    }
    snprintf(c->page_id, sizeof c->page_id, "%s", page->user_id);
    if (s->app_secret[0] != '\0' &&
        (proof == NULL ||
         !meta_appsecret_proof(s->app_secret, strlen(s->app_secret), token, strlen(token), want) ||
         !oc_ct_equal(want, strlen(want), proof, strlen(proof)))) {
        graph_error(a, 400, 100, 0, false, "GraphMethodException",
                    "Invalid appsecret_proof provided in the API argument");
        goto out;
    }
    ok = true;
out:
    if (token != NULL) OPENSSL_cleanse(token, strlen(token));
    free(token);
    free(proof);
    return ok;
}

typedef struct echo_job {
    char *url, *body;
    char sig[META_SIGNATURE_LEN + 1];
    long delay_ms;
    gsim_t *s;
} echo_job_t;

/* Delivers one echo like Meta: retried while it fails (the connector may be restarting, at
 * another address: the URL is read again before every attempt), until ECHO_TRIES or shutdown. */
static void *echo_thread(void *arg)
{
    echo_job_t *j = arg;
    char hdr[META_SIGNATURE_LEN + 32], url[sizeof j->s->webhook_url];
    oc_buf_t reply;
    oc_error_t err;
    long status = 0;
    bool stop = false;

    if (j->delay_ms > 0) sleep_ms(j->delay_ms);
    snprintf(hdr, sizeof hdr, "X-Hub-Signature-256: %s", j->sig);
    for (int i = 0; i < ECHO_TRIES && !stop; i++) {
        pthread_mutex_lock(&j->s->core.mu);
        memcpy(url, j->s->webhook_url, sizeof url);
        stop = j->s->stopping;
        pthread_mutex_unlock(&j->s->core.mu);
        if (stop || url[0] == '\0') break;
        oc_buf_init(&reply, 4096);
        oc_error_clear(&err);
        status = 0;
        sim_post_webhook(url, j->body, strlen(j->body), hdr, "facebookexternalua",
                         WEBHOOK_TIMEOUT_MS, &status, &reply, &err);
        oc_buf_dispose(&reply);
        if (status == 200) break;
        sleep_ms(ECHO_RETRY_MS);
    }
    pthread_mutex_lock(&j->s->core.mu);
    if (--j->s->pending == 0) pthread_cond_broadcast(&j->s->idle);
    pthread_mutex_unlock(&j->s->core.mu);
    free(j->url);
    free(j->body);
    free(j);
    return NULL;
}

/* Signs body with the app secret and posts it to the webhook URL, after delay_ms, from a
 * thread of its own (Meta's webhooks arrive independently of the API answer). */
static void deliver(gsim_t *s, const char *body, size_t len, long delay_ms)
{
    echo_job_t *j = calloc(1, sizeof *j);
    pthread_t t;

    if (j == NULL) return;
    pthread_mutex_lock(&s->core.mu);
    if (s->webhook_url[0] != '\0') {
        j->url = strdup(s->webhook_url);
        j->body = strndup(body, len);
        meta_sign(s->app_secret, strlen(s->app_secret), body, len, j->sig);
    }
    j->delay_ms = delay_ms;
    j->s = s;
    if (j->url != NULL && j->body != NULL && pthread_create(&t, NULL, echo_thread, j) == 0) {
        s->pending++;
        pthread_detach(t);
        j = NULL;
    }
    pthread_mutex_unlock(&s->core.mu);
    if (j != NULL) {
        free(j->url);
        free(j->body);
        free(j);
    }
}

static void send_message(gsim_t *s, const oc_http_request_t *req, const char *id, call_t *c,
                         answer_t *a)
{
    char *recipient = field(req, "recipient"), *message = field(req, "message");
    json_t *jr = recipient != NULL ? json_loads(recipient, 0, NULL) : NULL;
    json_t *jm = message != NULL ? json_loads(message, 0, NULL) : NULL;
    const char *to = json_string_value(json_object_get(jr, "id"));
    const char *text = json_string_value(json_object_get(jm, "text"));
    const char *metadata = json_string_value(json_object_get(jm, "metadata"));
    sim_account_t page;
    bool ig;

    if (!authenticate(s, req, c, &page, a)) goto out;
    ig = strcmp(id, page.basic_id) == 0;
    if (strcmp(id, "me") != 0 && strcmp(id, page.user_id) != 0 && !ig) {
        graph_error(a, 400, 100, 33, false, "GraphMethodException",
                    "Unsupported post request. Object does not exist or cannot be loaded.");
        goto out;
    }
    if (to == NULL || to[0] == '\0') {
        graph_error(a, 400, 100, 2018001, false, "OAuthException", "(#100) No matching user found");
        goto out;
    }
    if (text == NULL || text[0] == '\0' || oc_utf8_chars(text, strlen(text)) > TEXT_MAX_CHARS ||
        (metadata != NULL && strlen(metadata) > METADATA_MAX)) {
        graph_error(a, 400, 100, 0, false, "OAuthException",
                    "(#100) Length of param message[text] must be less than or equal to 2000");
        goto out;
    }
    pthread_mutex_lock(&s->core.mu);
    snprintf(c->mid, sizeof c->mid, "m_sim%llu", (unsigned long long)s->next_mid++);
    bool echo = s->echo;
    long delay = s->echo_delay_ms;
    pthread_mutex_unlock(&s->core.mu);
    c->executed = true;
    json_t *rec =
        json_pack("{s:I, s:s, s:s, s:s, s:s, s:s?, s:s, s:b}", "time_ms",
                  (json_int_t)c->received_ms, "page_id", page.user_id, "account_id", id, "to", to,
                  "text", text, "metadata", metadata, "message_id", c->mid, "instagram", ig);
    char *rj = rec != NULL ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    if (rj != NULL) sim_record(&s->core, &s->core.deliveries, strdup(to), rj, strlen(rj));
    json_decref(a->body);
    a->status = 200;
    a->body = json_pack("{s:s, s:s}", "recipient_id", to, "message_id", c->mid);
    if (echo) {
        const char *acct = ig ? page.basic_id : page.user_id;
        meta_event_t ev = {.kind = META_EV_MESSAGE,
                           .sender_id = acct,
                           .recipient_id = to,
                           .timestamp_ms = sim_now_ms(&s->core),
                           .mid = c->mid,
                           .text = text,
                           .is_echo = true,
                           .metadata = metadata,
                           .app_id = s->app_id};
        oc_buf_t b;
        oc_buf_init(&b, 1u << 20);
        if (meta_webhook_body(&b, ig ? "instagram" : "page", acct, &ev, 1) == OC_OK)
            deliver(s, b.data, b.len, delay);
        oc_buf_dispose(&b);
    }
out:
    json_decref(jr);
    json_decref(jm);
    free(recipient);
    free(message);
}

static void lookup(gsim_t *s, const oc_http_request_t *req, const char *id, call_t *c, answer_t *a)
{
    sim_account_t page;
    char username[SIM_ID_MAX + 8];

    if (!authenticate(s, req, c, &page, a)) return;
    json_decref(a->body);
    a->status = 200;
    if (strcmp(id, page.user_id) == 0 || strcmp(id, "me") == 0) {
        a->body = json_pack("{s:s, s:s}", "id", page.user_id, "name", page.display_name);
    } else if (page.basic_id[0] != '\0' && strcmp(id, page.basic_id) == 0) {
        snprintf(username, sizeof username, "ig_%s", page.basic_id);
        a->body = json_pack("{s:s, s:s}", "id", page.basic_id, "username", username);
    } else {
        a->body = NULL;
        graph_error(a, 400, 100, 33, false, "GraphMethodException",
                    "Unsupported get request. Object with ID does not exist, cannot be loaded "
                    "due to missing permissions, or does not support this operation.");
    }
}

static void dispatch(gsim_t *s, const oc_http_request_t *req, call_t *c, answer_t *a)
{
    /* /{version}/{id} or /{version}/{id}/messages */
    char id[SIM_ID_MAX] = "";
    const char *p = req->path[0] == '/' ? strchr(req->path + 1, '/') : NULL;
    const char *rest = p != NULL ? strchr(p + 1, '/') : NULL;
    size_t n = p == NULL ? 0 : rest != NULL ? (size_t)(rest - p - 1) : strlen(p + 1);
    char *method = field(req, "method");
    bool get =
        strcmp(req->method, "GET") == 0 || (method != NULL && strcasecmp(method, "GET") == 0);

    free(method);
    if (req->path[1] != 'v' || n == 0 || n >= sizeof id) {
        graph_error(a, 400, 2500, 0, false, "OAuthException", "Unknown path components");
        return;
    }
    memcpy(id, p + 1, n);
    id[n] = '\0';
    if (rest != NULL && strcmp(rest, "/messages") == 0 && !get)
        send_message(s, req, id, c, a);
    else if (rest == NULL && get)
        lookup(s, req, id, c, a);
    else
        graph_error(a, 400, 2500, 0, false, "OAuthException", "Unknown path components");
}

static void record_request(gsim_t *s, const oc_http_request_t *req, const call_t *c,
                           const answer_t *a)
{
    /* The form body without its access_token: the token is logged as its SHA-256 only. */
    char *fields[] = {field(req, "recipient"), field(req, "message"), field(req, "messaging_type"),
                      field(req, "appsecret_proof")};
    json_t *rec = json_pack(
        "{s:I, s:s, s:s, s:s?, s:s?, s:s?, s:b, s:s?, s:s?, s:i, s:b, s:b, s:b, s:s?, s:s?}",
        "time_ms", (json_int_t)c->received_ms, "method", req->method, "path", req->path,
        "recipient", fields[0], "message", fields[1], "messaging_type", fields[2],
        "appsecret_proof", fields[3] != NULL, "token_sha256",
        c->token_sha256[0] ? c->token_sha256 : NULL, "page_id", c->page_id[0] ? c->page_id : NULL,
        "status", a->drop ? 0 : a->status, "dropped", a->drop, "fault", c->have_fault, "executed",
        c->executed, "message_id", c->mid[0] ? c->mid : NULL, "content_type",
        oc_http_header(req, "content-type"));
    char *json = rec != NULL ? json_dumps(rec, JSON_COMPACT) : NULL;

    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        free(fields[i]);
    json_decref(rec);
    if (json != NULL)
        sim_record(&s->core, &s->core.requests, strdup(req->path), json, strlen(json));
}

static void handle_api(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    gsim_t *s = user;
    call_t c = {.received_ms = oc_now_ms()};
    answer_t a = {0};
    char *txt;

    c.have_fault = sim_pop_fault(&s->core, req->path, &c.fault);
    if (c.have_fault && !c.fault.execute) {
        fault_answer(&c.fault, &a);
    } else {
        dispatch(s, req, &c, &a);
        /* Executed, then the answer is lost or replaced (a slow provider only delays it). */
        if (c.have_fault && (c.fault.drop || c.fault.status || c.fault.kind))
            fault_answer(&c.fault, &a);
    }
    record_request(s, req, &c, &a);
    if (c.have_fault && c.fault.delay_ms > 0) sleep_ms(c.fault.delay_ms);
    if (a.drop) {
        resp->drop_connection = true;
    } else {
        resp->status = a.status != 0 ? a.status : 500;
        txt = a.body != NULL ? json_dumps(a.body, JSON_COMPACT) : NULL;
        oc_buf_appends(&resp->body, txt != NULL ? txt : "{}");
        free(txt);
    }
    json_decref(a.body);
}

/* ---------- control ---------- */

oc_err_t gsim_add_page(gsim_t *s, const gsim_page_def_t *def, oc_error_t *err)
{
    char name[SIM_NAME_MAX];
    size_t n = def->page_id != NULL ? strlen(def->page_id) : 0;
    sim_account_def_t acc = {.token = def->token,
                             .user_id = def->page_id,
                             .display_name = def->name,
                             .basic_id = def->ig_id != NULL ? def->ig_id : ""};

    if (def->name == NULL && n > 0) {
        snprintf(name, sizeof name, "Page %s", def->page_id + (n > 6 ? n - 6 : 0));
        acc.display_name = name;
    }
    return sim_add_account(&s->core, &acc, err);
}

/* POST /__sim/pages {"token", "page_id", "name"?, "ig_id"?} */
static void post_page(gsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
    oc_error_t err;

    if (root == NULL) return;
    gsim_page_def_t def = {.token = json_string_value(json_object_get(root, "token")),
                           .page_id = json_string_value(json_object_get(root, "page_id")),
                           .name = json_string_value(json_object_get(root, "name")),
                           .ig_id = json_string_value(json_object_get(root, "ig_id"))};
    oc_error_clear(&err);
    if (gsim_add_page(s, &def, &err) != OC_OK)
        oc_http_response_error(resp, 400, err.msg);
    else
        sim_send_ok(resp);
    json_decref(root);
}

/* POST /__sim/config {"webhook_url", "app_secret", "app_id", "echo", "echo_delay_ms"} */
static void post_config(gsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp);
    char url[sizeof s->webhook_url] = "", secret[sizeof s->app_secret] = "";
    char app_id[sizeof s->app_id] = "";
    bool echo = true, has_echo = false;
    long delay = -1;

    if (root == NULL) return;
    if (sim_opt_str(root, "webhook_url", url, sizeof url, resp) &&
        sim_opt_str(root, "app_secret", secret, sizeof secret, resp) &&
        sim_opt_str(root, "app_id", app_id, sizeof app_id, resp) &&
        sim_opt_bool(root, "echo", &echo, &has_echo, resp) &&
        sim_opt_int(root, "echo_delay_ms", 0, 600000, &delay, resp)) {
        pthread_mutex_lock(&s->core.mu);
        if (json_object_get(root, "webhook_url") != NULL) memcpy(s->webhook_url, url, sizeof url);
        if (json_object_get(root, "app_secret") != NULL)
            memcpy(s->app_secret, secret, sizeof secret);
        if (app_id[0] != '\0') memcpy(s->app_id, app_id, sizeof app_id);
        if (has_echo) s->echo = echo;
        if (delay >= 0) s->echo_delay_ms = delay;
        pthread_mutex_unlock(&s->core.mu);
        sim_send_ok(resp);
    }
    json_decref(root);
}

/* POST /__sim/events {"object": "page"|"instagram", "account_id", "events": [{"kind":
 * "message"|"delivery"|"read", "sender", "recipient", "timestamp", "mid", "text", "watermark"}]}
 * or {"body": "<raw>"}: signed with the app secret and delivered now; answers the status. */
static void post_events(gsim_t *s, const oc_http_request_t *req, oc_http_response_t *resp)
{
    json_t *root = sim_body_object(req, resp), *evs, *e;
    const char *raw, *object, *acct;
    meta_event_t ev[64];
    char sig[META_SIGNATURE_LEN + 1], hdr[META_SIGNATURE_LEN + 32], url[sizeof s->webhook_url];
    char secret[sizeof s->app_secret];
    oc_buf_t body, reply;
    oc_error_t err;
    long status = 0;
    size_t i, n = 0;

    if (root == NULL) return;
    oc_buf_init(&body, 1u << 22);
    oc_buf_init(&reply, 65536);
    oc_error_clear(&err);
    raw = json_string_value(json_object_get(root, "body"));
    object = json_string_value(json_object_get(root, "object"));
    acct = json_string_value(json_object_get(root, "account_id"));
    evs = json_object_get(root, "events");
    if (raw != NULL) {
        oc_buf_appends(&body, raw);
    } else if (object != NULL && acct != NULL && json_is_array(evs) && json_array_size(evs) > 0 &&
               json_array_size(evs) <= 64) {
        json_array_foreach(evs, i, e)
        {
            const char *k = json_string_value(json_object_get(e, "kind"));
            ev[n] =
                (meta_event_t){.kind = k != NULL && strcmp(k, "delivery") == 0 ? META_EV_DELIVERY
                                       : k != NULL && strcmp(k, "read") == 0   ? META_EV_READ
                                                                               : META_EV_MESSAGE,
                               .sender_id = json_string_value(json_object_get(e, "sender")),
                               .recipient_id = json_string_value(json_object_get(e, "recipient")),
                               .timestamp_ms = json_integer_value(json_object_get(e, "timestamp")),
                               .mid = json_string_value(json_object_get(e, "mid")),
                               .text = json_string_value(json_object_get(e, "text")),
                               .watermark_ms = json_integer_value(json_object_get(e, "watermark"))};
            if (ev[n].timestamp_ms == 0) ev[n].timestamp_ms = sim_now_ms(&s->core);
            if (ev[n].sender_id == NULL || ev[n].recipient_id == NULL) {
                oc_http_response_error(resp, 400, "events[]: sender and recipient required");
                goto out;
            }
            n++;
        }
        meta_webhook_body(&body, object, acct, ev, n);
    } else {
        oc_http_response_error(resp, 400,
                               "give \"body\", or \"object\", \"account_id\" and 1..64 "
                               "\"events\"");
        goto out;
    }
    pthread_mutex_lock(&s->core.mu);
    memcpy(url, s->webhook_url, sizeof url);
    memcpy(secret, s->app_secret, sizeof secret);
    pthread_mutex_unlock(&s->core.mu);
    if (url[0] == '\0' || body.failed != OC_OK) {
        oc_http_response_error(resp, 400, "no webhook_url configured (POST /__sim/config)");
        goto out;
    }
    meta_sign(secret, strlen(secret), body.data, body.len, sig);
    snprintf(hdr, sizeof hdr, "X-Hub-Signature-256: %s", sig);
    if (sim_post_webhook(url, body.data, body.len, hdr, "facebookexternalua", WEBHOOK_TIMEOUT_MS,
                         &status, &reply, &err) != OC_OK) {
        oc_http_response_error(resp, 502, err.msg);
        goto out;
    }
    sim_send_json(resp, 200,
                  json_pack("{s:i, s:s%, s:s%}", "status", (int)status, "body",
                            reply.data != NULL ? reply.data : "", reply.len, "sent", body.data,
                            body.len));
out:
    oc_buf_dispose(&body);
    oc_buf_dispose(&reply);
    json_decref(root);
}

static void handle_control(void *user, const oc_http_request_t *req, oc_http_response_t *resp)
{
    gsim_t *s = user;
    const char *p = req->path + strlen("/__sim/");
    bool get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;

    if (get && strcmp(p, "healthz") == 0) {
        sim_send_ok(resp);
    } else if (post && strcmp(p, "faults") == 0) {
        sim_post_faults(&s->core, req, resp);
    } else if (get && strcmp(p, "faults") == 0) {
        sim_get_faults(&s->core, resp);
    } else if (post && strcmp(p, "pages") == 0) {
        post_page(s, req, resp);
    } else if (post && strcmp(p, "config") == 0) {
        post_config(s, req, resp);
    } else if (post && strcmp(p, "events") == 0) {
        post_events(s, req, resp);
    } else if (get && strcmp(p, "requests") == 0) {
        sim_dump_log(&s->core, &s->core.requests, oc_http_query(req, "path"), req, resp);
    } else if (get && strcmp(p, "deliveries") == 0) {
        sim_dump_log(&s->core, &s->core.deliveries, oc_http_query(req, "to"), req, resp);
    } else if (post && strcmp(p, "clock") == 0) {
        sim_post_clock(&s->core, req, resp);
    } else if (post && strcmp(p, "reset") == 0) {
        pthread_mutex_lock(&s->core.mu);
        sim_reset_locked(&s->core);
        pthread_mutex_unlock(&s->core.mu);
        sim_send_ok(resp);
    } else {
        oc_http_response_error(resp, 404, "no such control endpoint");
    }
}

/* ---------- lifecycle ---------- */

int gsim_port(const gsim_t *s)
{
    return sim_port(&s->core);
}

gsim_t *gsim_create(const gsim_opts_t *opts, oc_error_t *err)
{
    gsim_t *s;
    sim_opts_t so = {.listen = opts->listen,
                     .threads = opts->threads,
                     .max_requests = opts->max_requests,
                     .max_deliveries = opts->max_requests,
                     .max_http_body = MAX_HTTP_BODY,
                     .picture_base = "https://graph-sim.invalid/picture/",
                     .api = handle_api,
                     .control = handle_control,
                     .kind_name = kind_name};
    uint32_t r = 0;

    if ((s = sim_new(sizeof *s, &so, err)) == NULL) return NULL;
    pthread_cond_init(&s->idle, NULL);
    snprintf(s->app_secret, sizeof s->app_secret, "%s",
             opts->app_secret != NULL ? opts->app_secret : "");
    snprintf(s->webhook_url, sizeof s->webhook_url, "%s",
             opts->webhook_url != NULL ? opts->webhook_url : "");
    snprintf(s->app_id, sizeof s->app_id, "1517000000000001");
    s->echo = true;
    s->echo_delay_ms = 20;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1) r = (uint32_t)oc_now_us();
    s->next_mid = (uint64_t)r << 20;
    if (sim_start(&s->core, &so, err) != OC_OK) {
        gsim_destroy(s);
        return NULL;
    }
    return s;
}

void gsim_destroy(gsim_t *s)
{
    if (s == NULL) return;
    sim_stop(&s->core);
    pthread_mutex_lock(&s->core.mu);
    s->stopping = true;
    while (s->pending > 0)
        pthread_cond_wait(&s->idle, &s->core.mu);
    pthread_mutex_unlock(&s->core.mu);
    pthread_cond_destroy(&s->idle);
    sim_dispose(&s->core);
    free(s);
}
