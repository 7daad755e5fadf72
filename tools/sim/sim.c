/* The provider simulator core: accounts, profiles, faults, bounded logs, clock, HTTP split. */
#include "sim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "omnichat/http_client.h"
#include "omnichat/util.h"

void sim_sha256(const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 32;
    /* EVP_Digest only fails when OpenSSL itself is broken; going on with a made-up digest
     * would let any token pass as any bot, so a test tool had better stop. */
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL)) abort();
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

int64_t sim_now_ms(sim_t *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t off = s->clock_offset_ms;
    pthread_mutex_unlock(&s->mu);
    return oc_now_ms() + off;
}

/* ---------- accounts ---------- */

oc_err_t sim_add_account(sim_t *s, const sim_account_def_t *def, oc_error_t *err)
{
    if (!def->token || !*def->token || strlen(def->token) > 1024)
        return oc_error_set(err, OC_E_INVALID, "token: must be 1 to 1024 bytes");
    if (!def->user_id || !*def->user_id || strlen(def->user_id) >= SIM_ID_MAX)
        return oc_error_set(err, OC_E_INVALID, "bot_user_id: must be 1 to %d bytes",
                            SIM_ID_MAX - 1);
    if (def->display_name && strlen(def->display_name) >= SIM_NAME_MAX)
        return oc_error_set(err, OC_E_INVALID, "display_name: too long");
    if (def->basic_id && strlen(def->basic_id) >= SIM_ID_MAX)
        return oc_error_set(err, OC_E_INVALID, "basic_id: too long");
    if (def->picture_url && strlen(def->picture_url) >= SIM_URL_MAX)
        return oc_error_set(err, OC_E_INVALID, "picture_url: too long");

    sim_account_rec_t nb = {0};
    sim_sha256(def->token, strlen(def->token), nb.token_sha);
    size_t ul = strlen(def->user_id);
    copy_str(nb.v.user_id, sizeof nb.v.user_id, def->user_id);
    if (def->display_name)
        copy_str(nb.v.display_name, sizeof nb.v.display_name, def->display_name);
    else
        snprintf(nb.v.display_name, sizeof nb.v.display_name, "Bot %s",
                 def->user_id + (ul > 6 ? ul - 6 : 0));
    if (def->basic_id)
        copy_str(nb.v.basic_id, sizeof nb.v.basic_id, def->basic_id);
    else
        snprintf(nb.v.basic_id, sizeof nb.v.basic_id, "@%.8s", def->user_id + (ul > 1 ? 1 : 0));
    if (def->picture_url)
        copy_str(nb.v.picture_url, sizeof nb.v.picture_url, def->picture_url);
    else
        snprintf(nb.v.picture_url, sizeof nb.v.picture_url, "%s%s", s->picture_base, nb.v.user_id);

    pthread_mutex_lock(&s->mu);
    sim_account_rec_t *b = s->accounts;
    for (; b; b = b->next)
        if (CRYPTO_memcmp(b->token_sha, nb.token_sha, 32) == 0) break;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) {
            pthread_mutex_unlock(&s->mu);
            return oc_error_set(err, OC_E_NOMEM, "could not allocate an account");
        }
        b->next = s->accounts;
        s->accounts = b;
    }
    sim_account_rec_t *keep_next = b->next;
    *b = nb;
    b->next = keep_next;
    pthread_mutex_unlock(&s->mu);
    return OC_OK;
}

bool sim_revoke_account(sim_t *s, const char *token)
{
    uint8_t sha[32];
    sim_sha256(token, strlen(token), sha);
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (sim_account_rec_t *b = s->accounts; b; b = b->next) {
        if (CRYPTO_memcmp(b->token_sha, sha, 32) == 0) {
            b->revoked = true;
            found = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

bool sim_find_account(sim_t *s, const char *token, size_t len, sim_account_t *out)
{
    /* Digests have a fixed length and every bot is compared, so neither the token's length nor
     * how much of it matches shows in the timing. */
    uint8_t sha[32];
    sim_sha256(token, len, sha);
    const sim_account_rec_t *hit = NULL;
    pthread_mutex_lock(&s->mu);
    for (const sim_account_rec_t *b = s->accounts; b; b = b->next) {
        bool eq = CRYPTO_memcmp(b->token_sha, sha, 32) == 0;
        if (eq && !hit) hit = b;
    }
    bool ok = hit && !hit->revoked;
    if (ok) *out = hit->v;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

oc_err_t sim_load_tokens_file(sim_t *s, const char *path, oc_error_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) return oc_error_set(err, OC_E_IO, "could not open %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0;
    oc_err_t rc = OC_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#') continue;
        char *token = strtok_r(p, " \t", &p);
        char *user = strtok_r(NULL, " \t", &p);
        while (p && (*p == ' ' || *p == '\t'))
            p++;
        if (!token || !user) {
            rc = oc_error_set(err, OC_E_INVALID,
                              "%s:%d: expected \"token bot_user_id display_name\"", path, lineno);
            break;
        }
        sim_account_def_t def = {
            .token = token, .user_id = user, .display_name = (p && *p) ? p : NULL};
        rc = sim_add_account(s, &def, err);
        if (rc != OC_OK) break;
    }
    /* The file holds secrets: do not leave the last line on the stack. */
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    return rc;
}

/* ---------- profiles ---------- */

bool sim_find_profile(sim_t *s, const char *user_id, sim_profile_t *out)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (const sim_profile_t *p = s->profiles; p; p = p->next) {
        if (strcmp(p->user_id, user_id) == 0) {
            *out = *p;
            out->next = NULL;
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

oc_err_t sim_set_profile(sim_t *s, const sim_profile_t *np)
{
    pthread_mutex_lock(&s->mu);
    sim_profile_t *p = s->profiles;
    for (; p; p = p->next)
        if (strcmp(p->user_id, np->user_id) == 0) break;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&s->mu);
            return OC_E_NOMEM;
        }
        p->next = s->profiles;
        s->profiles = p;
    }
    sim_profile_t *keep_next = p->next;
    *p = *np;
    p->next = keep_next;
    pthread_mutex_unlock(&s->mu);
    return OC_OK;
}

/* ---------- faults ---------- */

static bool fault_matches(const sim_fault_t *f, const char *path)
{
    size_t n = strlen(f->path);
    if (n > 0 && f->path[n - 1] == '*') return strncmp(f->path, path, n - 1) == 0;
    return strcmp(f->path, path) == 0;
}

oc_err_t sim_push_fault(sim_t *s, const sim_fault_t *f)
{
    sim_fault_t *c = malloc(sizeof *c);
    if (!c) return OC_E_NOMEM;
    *c = *f;
    c->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->faults_tail)
        s->faults_tail->next = c;
    else
        s->faults_head = c;
    s->faults_tail = c;
    pthread_mutex_unlock(&s->mu);
    return OC_OK;
}

bool sim_pop_fault(sim_t *s, const char *path, sim_fault_t *out)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    /* The common case, no fault queued, costs one pointer test. */
    sim_fault_t *prev = NULL;
    for (sim_fault_t *f = s->faults_head; f; prev = f, f = f->next) {
        if (!fault_matches(f, path)) continue;
        if (prev)
            prev->next = f->next;
        else
            s->faults_head = f->next;
        if (s->faults_tail == f) s->faults_tail = prev;
        *out = *f;
        out->next = NULL;
        free(f);
        found = true;
        break;
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

char *sim_faults_json(sim_t *s)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&s->mu);
    for (const sim_fault_t *f = s->faults_head; f; f = f->next) {
        json_t *o = json_pack("{s:s, s:b, s:b, s:I, s:I}", "path", f->path, "execute", f->execute,
                              "drop", f->drop, "delay_ms", (json_int_t)f->delay_ms, "hold_ms",
                              (json_int_t)f->hold_ms);
        if (!o) continue;
        if (f->status) json_object_set_new(o, "status", json_integer(f->status));
        const char *kind = s->kind_name != NULL && f->kind != 0 ? s->kind_name(f->kind) : NULL;
        if (kind) json_object_set_new(o, "kind", json_string(kind));
        if (f->message[0]) json_object_set_new(o, "message", json_string(f->message));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&s->mu);
    char *out = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return out;
}

static void free_faults(sim_t *s)
{
    for (sim_fault_t *f = s->faults_head, *n; f; f = n) {
        n = f->next;
        free(f);
    }
    s->faults_head = s->faults_tail = NULL;
}

/* ---------- bounded logs ---------- */

static oc_err_t ring_init(sim_ring_t *r, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->items = calloc(cap, sizeof *r->items);
    if (!r->items) return OC_E_NOMEM;
    r->cap = cap;
    return OC_OK;
}

static void ring_drop_oldest(sim_ring_t *r)
{
    sim_rec_t *it = &r->items[r->head];
    r->bytes -= it->size;
    free(it->key);
    free(it->json);
    memset(it, 0, sizeof *it);
    r->head = (r->head + 1) % r->cap;
    r->count--;
    r->dropped++;
}

static void ring_clear(sim_ring_t *r)
{
    while (r->count)
        ring_drop_oldest(r);
    r->head = 0;
    r->dropped = 0;
}

static void ring_dispose(sim_ring_t *r)
{
    if (r->items) ring_clear(r);
    free(r->items);
    r->items = NULL;
}

void sim_record(sim_t *s, sim_ring_t *ring, char *key, char *json, size_t size)
{
    if (!json) {
        free(key);
        return;
    }
    size_t cost = size + (key ? strlen(key) : 0) + sizeof(sim_rec_t);
    pthread_mutex_lock(&s->mu);
    /* Both logs share one byte budget: drop the oldest of whichever log receives the record,
     * then, if still over, the oldest of the other one. */
    sim_ring_t *other = ring == &s->requests ? &s->deliveries : &s->requests;
    while (
        ring->count == ring->cap ||
        (ring->count > 0 && s->requests.bytes + s->deliveries.bytes + cost > s->max_record_bytes))
        ring_drop_oldest(ring);
    while (other->count > 0 && s->requests.bytes + s->deliveries.bytes + cost > s->max_record_bytes)
        ring_drop_oldest(other);
    sim_rec_t *it = &ring->items[(ring->head + ring->count) % ring->cap];
    it->key = key;
    it->json = json;
    it->size = cost;
    ring->bytes += cost;
    ring->count++;
    pthread_mutex_unlock(&s->mu);
}

oc_err_t sim_dump(sim_t *s, sim_ring_t *ring, const char *key, size_t limit, oc_buf_t *out)
{
    pthread_mutex_lock(&s->mu);
    /* Walk backwards to find where the newest `limit` matches start, then emit oldest first. */
    size_t start = 0, seen = 0;
    for (size_t i = ring->count; i > 0; i--) {
        const sim_rec_t *it = &ring->items[(ring->head + i - 1) % ring->cap];
        if (key && (!it->key || strcmp(it->key, key) != 0)) continue;
        start = i - 1;
        if (limit && ++seen == limit) break;
    }
    oc_buf_appends(out, "[");
    bool first = true;
    for (size_t i = start; i < ring->count; i++) {
        const sim_rec_t *it = &ring->items[(ring->head + i) % ring->cap];
        if (key && (!it->key || strcmp(it->key, key) != 0)) continue;
        if (!first) oc_buf_appends(out, ",");
        oc_buf_appends(out, it->json);
        first = false;
    }
    oc_buf_appends(out, "]");
    pthread_mutex_unlock(&s->mu);
    return out->failed;
}

/* ---------- lifecycle ---------- */

void sim_reset_locked(sim_t *s)
{
    ring_clear(&s->requests);
    ring_clear(&s->deliveries);
    free_faults(s);
    s->clock_offset_ms = 0;
}

int sim_port(const sim_t *s)
{
    return oc_http_server_port(s->server);
}

void *sim_new(size_t size, sim_opts_t *opts, oc_error_t *err)
{
    sim_t *s = size >= sizeof *s ? calloc(1, size) : NULL;

    if (s == NULL) {
        oc_error_set(err, OC_E_NOMEM, "could not allocate the simulator");
        return NULL;
    }
    opts->user = s;
    if (sim_init(s, opts, err) != OC_OK) {
        free(s);
        return NULL;
    }
    return s;
}

oc_err_t sim_init(sim_t *s, const sim_opts_t *opts, oc_error_t *err)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->max_record_bytes = opts->max_record_bytes ? opts->max_record_bytes : (size_t)256 << 20;
    s->kind_name = opts->kind_name;
    copy_str(s->picture_base, sizeof s->picture_base, opts->picture_base);
    if (ring_init(&s->requests, opts->max_requests ? opts->max_requests : 100000) != OC_OK ||
        ring_init(&s->deliveries, opts->max_deliveries ? opts->max_deliveries : 100000) != OC_OK)
        return oc_error_set(err, OC_E_NOMEM, "could not allocate the simulator's logs");
    return OC_OK;
}

oc_err_t sim_start(sim_t *s, const sim_opts_t *opts, oc_error_t *err)
{
    s->routes[0] = (oc_http_route_t){.method = NULL,
                                     .path = "/__sim/",
                                     .prefix = true,
                                     .handler = opts->control,
                                     .user = opts->user};
    s->routes[1] = (oc_http_route_t){
        .method = NULL, .path = "/", .prefix = true, .handler = opts->api, .user = opts->user};
    oc_http_server_opts_t so = {
        .listen = opts->listen ? opts->listen : "127.0.0.1:0",
        .threads = opts->threads > 0 ? opts->threads : 16,
        .max_body = opts->max_http_body,
        .timeout_s = 60,
        .routes = s->routes,
        .nroutes = 2,
        /* Injected delays sleep in the handler: with a pool, a retry arriving on a keep-alive
         * connection of that thread would wait behind it and meet the wrong fault. */
        .thread_per_connection = true,
    };
    s->server = oc_http_server_start(&so, err);
    return s->server != NULL ? OC_OK : err->code;
}

void sim_stop(sim_t *s)
{
    /* Handlers may still be using the state: stop before anything is freed. */
    oc_http_server_stop(s->server);
    s->server = NULL;
}

void sim_dispose(sim_t *s)
{
    sim_stop(s);
    ring_dispose(&s->requests);
    ring_dispose(&s->deliveries);
    free_faults(s);
    for (sim_account_rec_t *b = s->accounts, *n; b; b = n) {
        n = b->next;
        OPENSSL_cleanse(b, sizeof *b);
        free(b);
    }
    for (sim_profile_t *p = s->profiles, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    s->accounts = NULL;
    s->profiles = NULL;
    pthread_mutex_destroy(&s->mu);
}

/* ---------- signed webhook delivery ---------- */

oc_err_t sim_post_webhook(const char *url, const char *body, size_t len, const char *sig_header,
                          const char *user_agent, long timeout_ms, long *status, oc_buf_t *reply,
                          oc_error_t *err)
{
    oc_http_client_opts_t hopts = {.user_agent = user_agent};
    const char *hdrs[] = {sig_header, NULL};
    oc_http_call_t call = {.method = "POST",
                           .path = url,
                           .headers = hdrs,
                           .content_type = "application/json; charset=utf-8",
                           .body = body,
                           .body_len = len,
                           .timeout_ms = timeout_ms};
    oc_http_client_t *http = oc_http_client_create(&hopts, err);
    oc_http_result_t res;
    oc_err_t rc = OC_OK;

    if (http == NULL) return err->code;
    oc_http_result_init(&res, reply->max);
    if (oc_http_client_call(http, &call, &res) != OC_OK)
        rc = oc_error_set(err, OC_E_INTERNAL, "could not build the webhook request");
    else if (res.transport != OC_HTTP_TX_OK)
        rc = oc_error_set(err, OC_E_UNAVAILABLE, "could not deliver the webhook: %s",
                          oc_http_transport_name(res.transport));
    else
        *status = res.status;
    if (rc == OC_OK && res.body.len > 0) oc_buf_append(reply, res.body.data, res.body.len);
    oc_http_result_dispose(&res);
    oc_http_client_destroy(http);
    return rc;
}
