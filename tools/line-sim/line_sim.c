/* LINE simulator state: lifecycle, bots, profiles, faults, bounded logs and retry keys. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "lsim_internal.h"

/* Retry keys live in a chained hash table; the bucket count doubles when it gets crowded. */
#define LSIM_MIN_BUCKETS 1024

void lsim__sha256(const void *data, size_t len, uint8_t out[32])
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

/* ---------- clock and ids ---------- */

int64_t lsim__now_ms(lsim_t *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t off = s->clock_offset_ms;
    pthread_mutex_unlock(&s->mu);
    return oc_now_ms() + off;
}

void lsim__message_id(lsim_t *s, char out[24])
{
    pthread_mutex_lock(&s->mu);
    uint64_t id = s->next_message_id++;
    pthread_mutex_unlock(&s->mu);
    snprintf(out, 24, "%llu", (unsigned long long)id);
}

/* ---------- bots ---------- */

oc_err_t lsim_add_bot(lsim_t *s, const lsim_bot_def_t *def, oc_error_t *err)
{
    if (!def->token || !*def->token || strlen(def->token) > 1024)
        return oc_error_set(err, OC_E_INVALID, "token: must be 1 to 1024 bytes");
    if (!def->user_id || !*def->user_id || strlen(def->user_id) >= LSIM_USER_ID_MAX)
        return oc_error_set(err, OC_E_INVALID, "bot_user_id: must be 1 to %d bytes",
                            LSIM_USER_ID_MAX - 1);
    if (def->display_name && strlen(def->display_name) >= LSIM_NAME_MAX)
        return oc_error_set(err, OC_E_INVALID, "display_name: too long");
    if (def->basic_id && strlen(def->basic_id) >= LSIM_USER_ID_MAX)
        return oc_error_set(err, OC_E_INVALID, "basic_id: too long");
    if (def->picture_url && strlen(def->picture_url) >= LSIM_URL_MAX)
        return oc_error_set(err, OC_E_INVALID, "picture_url: too long");

    lsim_bot_t nb = {0};
    lsim__sha256(def->token, strlen(def->token), nb.token_sha);
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
        snprintf(nb.v.picture_url, sizeof nb.v.picture_url,
                 "https://profile.line-scdn.net/line-sim/%s", nb.v.user_id);

    pthread_mutex_lock(&s->mu);
    lsim_bot_t *b = s->bots;
    for (; b; b = b->next)
        if (CRYPTO_memcmp(b->token_sha, nb.token_sha, 32) == 0) break;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) {
            pthread_mutex_unlock(&s->mu);
            return oc_error_set(err, OC_E_NOMEM, "could not allocate a bot");
        }
        b->next = s->bots;
        s->bots = b;
    }
    lsim_bot_t *keep_next = b->next;
    *b = nb;
    b->next = keep_next;
    pthread_mutex_unlock(&s->mu);
    return OC_OK;
}

bool lsim_revoke_bot(lsim_t *s, const char *token)
{
    uint8_t sha[32];
    lsim__sha256(token, strlen(token), sha);
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (lsim_bot_t *b = s->bots; b; b = b->next) {
        if (CRYPTO_memcmp(b->token_sha, sha, 32) == 0) {
            b->revoked = true;
            found = true;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return found;
}

bool lsim__find_bot(lsim_t *s, const char *token, size_t len, lsim_bot_view_t *out)
{
    /* Digests have a fixed length and every bot is compared, so neither the token's length nor
     * how much of it matches shows in the timing. */
    uint8_t sha[32];
    lsim__sha256(token, len, sha);
    const lsim_bot_t *hit = NULL;
    pthread_mutex_lock(&s->mu);
    for (const lsim_bot_t *b = s->bots; b; b = b->next) {
        bool eq = CRYPTO_memcmp(b->token_sha, sha, 32) == 0;
        if (eq && !hit) hit = b;
    }
    bool ok = hit && !hit->revoked;
    if (ok) *out = hit->v;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

oc_err_t lsim_load_tokens_file(lsim_t *s, const char *path, oc_error_t *err)
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
        lsim_bot_def_t def = {
            .token = token, .user_id = user, .display_name = (p && *p) ? p : NULL};
        rc = lsim_add_bot(s, &def, err);
        if (rc != OC_OK) break;
    }
    /* The file holds secrets: do not leave the last line on the stack. */
    OPENSSL_cleanse(line, sizeof line);
    fclose(f);
    return rc;
}

/* ---------- profiles ---------- */

bool lsim__find_profile(lsim_t *s, const char *user_id, lsim_profile_t *out)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    for (const lsim_profile_t *p = s->profiles; p; p = p->next) {
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

oc_err_t lsim__set_profile(lsim_t *s, const lsim_profile_t *np)
{
    pthread_mutex_lock(&s->mu);
    lsim_profile_t *p = s->profiles;
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
    lsim_profile_t *keep_next = p->next;
    *p = *np;
    p->next = keep_next;
    pthread_mutex_unlock(&s->mu);
    return OC_OK;
}

/* ---------- faults ---------- */

static bool fault_matches(const lsim_fault_t *f, const char *path)
{
    size_t n = strlen(f->path);
    if (n > 0 && f->path[n - 1] == '*') return strncmp(f->path, path, n - 1) == 0;
    return strcmp(f->path, path) == 0;
}

oc_err_t lsim__push_fault(lsim_t *s, const lsim_fault_t *f)
{
    lsim_fault_t *c = malloc(sizeof *c);
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

bool lsim__pop_fault(lsim_t *s, const char *path, lsim_fault_t *out)
{
    bool found = false;
    pthread_mutex_lock(&s->mu);
    /* The common case, no fault queued, costs one pointer test. */
    lsim_fault_t *prev = NULL;
    for (lsim_fault_t *f = s->faults_head; f; prev = f, f = f->next) {
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

static const char *kind_name(lsim_fault_kind_t k)
{
    return k == LSIM_KIND_RATE_LIMIT ? "rate_limit" : k == LSIM_KIND_QUOTA ? "quota" : NULL;
}

char *lsim__faults_json(lsim_t *s)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&s->mu);
    for (const lsim_fault_t *f = s->faults_head; f; f = f->next) {
        json_t *o = json_pack("{s:s, s:b, s:b, s:I, s:I}", "path", f->path, "execute", f->execute,
                              "drop", f->drop, "delay_ms", (json_int_t)f->delay_ms, "hold_ms",
                              (json_int_t)f->hold_ms);
        if (!o) continue;
        if (f->status) json_object_set_new(o, "status", json_integer(f->status));
        if (kind_name(f->kind)) json_object_set_new(o, "kind", json_string(kind_name(f->kind)));
        if (f->message[0]) json_object_set_new(o, "message", json_string(f->message));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&s->mu);
    char *out = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return out;
}

static void free_faults(lsim_t *s)
{
    for (lsim_fault_t *f = s->faults_head, *n; f; f = n) {
        n = f->next;
        free(f);
    }
    s->faults_head = s->faults_tail = NULL;
}

/* ---------- bounded logs ---------- */

static oc_err_t ring_init(lsim_ring_t *r, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->items = calloc(cap, sizeof *r->items);
    if (!r->items) return OC_E_NOMEM;
    r->cap = cap;
    return OC_OK;
}

static void ring_drop_oldest(lsim_ring_t *r)
{
    lsim_rec_t *it = &r->items[r->head];
    r->bytes -= it->size;
    free(it->key);
    free(it->json);
    memset(it, 0, sizeof *it);
    r->head = (r->head + 1) % r->cap;
    r->count--;
    r->dropped++;
}

static void ring_clear(lsim_ring_t *r)
{
    while (r->count)
        ring_drop_oldest(r);
    r->head = 0;
    r->dropped = 0;
}

static void ring_dispose(lsim_ring_t *r)
{
    if (r->items) ring_clear(r);
    free(r->items);
    r->items = NULL;
}

void lsim__record(lsim_t *s, lsim_ring_t *ring, char *key, char *json, size_t size)
{
    if (!json) {
        free(key);
        return;
    }
    size_t cost = size + (key ? strlen(key) : 0) + sizeof(lsim_rec_t);
    pthread_mutex_lock(&s->mu);
    /* Both logs share one byte budget: drop the oldest of whichever log receives the record,
     * then, if still over, the oldest of the other one. */
    lsim_ring_t *other = ring == &s->requests ? &s->deliveries : &s->requests;
    while (
        ring->count == ring->cap ||
        (ring->count > 0 && s->requests.bytes + s->deliveries.bytes + cost > s->max_record_bytes))
        ring_drop_oldest(ring);
    while (other->count > 0 && s->requests.bytes + s->deliveries.bytes + cost > s->max_record_bytes)
        ring_drop_oldest(other);
    lsim_rec_t *it = &ring->items[(ring->head + ring->count) % ring->cap];
    it->key = key;
    it->json = json;
    it->size = cost;
    ring->bytes += cost;
    ring->count++;
    pthread_mutex_unlock(&s->mu);
}

oc_err_t lsim__dump(lsim_t *s, lsim_ring_t *ring, const char *key, size_t limit, oc_buf_t *out)
{
    pthread_mutex_lock(&s->mu);
    /* Walk backwards to find where the newest `limit` matches start, then emit oldest first. */
    size_t start = 0, seen = 0;
    for (size_t i = ring->count; i > 0; i--) {
        const lsim_rec_t *it = &ring->items[(ring->head + i - 1) % ring->cap];
        if (key && (!it->key || strcmp(it->key, key) != 0)) continue;
        start = i - 1;
        if (limit && ++seen == limit) break;
    }
    oc_buf_appends(out, "[");
    bool first = true;
    for (size_t i = start; i < ring->count; i++) {
        const lsim_rec_t *it = &ring->items[(ring->head + i) % ring->cap];
        if (key && (!it->key || strcmp(it->key, key) != 0)) continue;
        if (!first) oc_buf_appends(out, ",");
        oc_buf_appends(out, it->json);
        first = false;
    }
    oc_buf_appends(out, "]");
    pthread_mutex_unlock(&s->mu);
    return out->failed;
}

/* ---------- retry keys ---------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static char *key_id(const char *bot, const char *key)
{
    /* UUIDs compare case-insensitively, so a retry in upper case is the same key. */
    size_t bl = strlen(bot), kl = strlen(key);
    char *id = malloc(bl + kl + 2);
    if (!id) return NULL;
    memcpy(id, bot, bl);
    id[bl] = '/';
    for (size_t i = 0; i < kl; i++)
        id[bl + 1 + i] = (char)tolower((unsigned char)key[i]);
    id[bl + 1 + kl] = '\0';
    return id;
}

static lsim_key_t **key_slot(lsim_t *s, const char *id, uint64_t h)
{
    lsim_key_t **pp = &s->buckets[h & (s->nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->id, id) != 0))
        pp = &(*pp)->hnext;
    return pp;
}

static void key_unlink_order(lsim_t *s, lsim_key_t *k)
{
    if (!k->accepted) return;
    if (k->older)
        k->older->newer = k->newer;
    else if (s->oldest_key == k)
        s->oldest_key = k->newer;
    if (k->newer)
        k->newer->older = k->older;
    else if (s->newest_key == k)
        s->newest_key = k->older;
    k->older = k->newer = NULL;
}

static void key_free(lsim_key_t *k)
{
    if (!k) return;
    free(k->id);
    free(k->sent_json);
    free(k);
}

/* Removes k from the table and the order list and frees it. Lock held. */
static void key_remove(lsim_t *s, lsim_key_t *k)
{
    lsim_key_t **pp = key_slot(s, k->id, k->hash);
    if (*pp == k) *pp = k->hnext;
    key_unlink_order(s, k);
    s->nkeys--;
    key_free(k);
}

/* Expires keys older than 24 h and, past the cap, the oldest accepted ones. Lock held. */
static void keys_expire(lsim_t *s, int64_t now)
{
    while (s->oldest_key &&
           (now - s->oldest_key->accepted_ms >= LSIM_RETRY_KEY_TTL_MS || s->nkeys > s->max_keys))
        key_remove(s, s->oldest_key);
}

static void keys_grow(lsim_t *s)
{
    size_t nb = s->nbuckets * 2;
    lsim_key_t **b = calloc(nb, sizeof *b);
    if (!b) return; /* a crowded table is still correct, only slower */
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (lsim_key_t *k = s->buckets[i], *n; k; k = n) {
            n = k->hnext;
            k->hnext = b[k->hash & (nb - 1)];
            b[k->hash & (nb - 1)] = k;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = nb;
}

lsim_key_state_t lsim__key_reserve(lsim_t *s, const char *bot_user_id, const char *key,
                                   const uint8_t body_sha[32], char *request_id, char **sent_json,
                                   bool *body_differs)
{
    char *id = key_id(bot_user_id, key);
    uint64_t h = id ? fnv1a(id) : 0;
    lsim_key_state_t st = LSIM_KEY_RESERVED;
    pthread_mutex_lock(&s->mu);
    if (!id) goto out; /* out of memory: execute without the guarantee rather than fail */
    for (;;) {
        keys_expire(s, oc_now_ms() + s->clock_offset_ms);
        lsim_key_t *k = *key_slot(s, id, h);
        if (!k) break;
        if (k->accepted) {
            st = LSIM_KEY_ACCEPTED;
            memcpy(request_id, k->request_id, sizeof k->request_id);
            *sent_json = strdup(k->sent_json ? k->sent_json : "[]");
            *body_differs = CRYPTO_memcmp(k->body_sha, body_sha, 32) != 0;
            goto out;
        }
        /* Another request holds the key in flight: wait until it is accepted or released. */
        pthread_cond_wait(&s->key_cv, &s->mu);
    }
    lsim_key_t *k = calloc(1, sizeof *k);
    if (!k) goto out;
    k->id = id;
    id = NULL;
    k->hash = h;
    memcpy(k->body_sha, body_sha, 32);
    lsim_key_t **slot = &s->buckets[h & (s->nbuckets - 1)];
    k->hnext = *slot;
    *slot = k;
    if (++s->nkeys > s->nbuckets) keys_grow(s);
out:
    pthread_mutex_unlock(&s->mu);
    free(id);
    return st;
}

void lsim__key_commit(lsim_t *s, const char *bot_user_id, const char *key, const char *request_id,
                      const char *sent_json)
{
    char *id = key_id(bot_user_id, key);
    char *copy = strdup(sent_json);
    if (!id) {
        free(copy);
        return;
    }
    uint64_t h = fnv1a(id);
    pthread_mutex_lock(&s->mu);
    lsim_key_t *k = *key_slot(s, id, h);
    if (k && !k->accepted) {
        k->accepted = true;
        k->accepted_ms = oc_now_ms() + s->clock_offset_ms;
        copy_str(k->request_id, sizeof k->request_id, request_id);
        k->sent_json = copy;
        copy = NULL;
        k->older = s->newest_key;
        if (s->newest_key) s->newest_key->newer = k;
        s->newest_key = k;
        if (!s->oldest_key) s->oldest_key = k;
        keys_expire(s, k->accepted_ms);
    }
    pthread_cond_broadcast(&s->key_cv);
    pthread_mutex_unlock(&s->mu);
    free(copy);
    free(id);
}

void lsim__key_abort(lsim_t *s, const char *bot_user_id, const char *key)
{
    char *id = key_id(bot_user_id, key);
    if (!id) return;
    uint64_t h = fnv1a(id);
    pthread_mutex_lock(&s->mu);
    lsim_key_t *k = *key_slot(s, id, h);
    if (k && !k->accepted) key_remove(s, k);
    pthread_cond_broadcast(&s->key_cv);
    pthread_mutex_unlock(&s->mu);
    free(id);
}

/* Drops accepted keys; in-flight ones stay so their waiters and owners stay consistent. */
static void keys_clear_accepted(lsim_t *s)
{
    while (s->oldest_key)
        key_remove(s, s->oldest_key);
}

/* ---------- lifecycle ---------- */

void lsim_reset(lsim_t *s)
{
    pthread_mutex_lock(&s->mu);
    ring_clear(&s->requests);
    ring_clear(&s->deliveries);
    free_faults(s);
    keys_clear_accepted(s);
    s->clock_offset_ms = 0;
    pthread_mutex_unlock(&s->mu);
}

int lsim_port(const lsim_t *s)
{
    return oc_http_server_port(s->server);
}

lsim_t *lsim_create(const lsim_opts_t *opts, oc_error_t *err)
{
    lsim_t *s = calloc(1, sizeof *s);
    if (!s) {
        oc_error_set(err, OC_E_NOMEM, "could not allocate the simulator");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->key_cv, NULL);
    s->max_record_bytes = opts->max_record_bytes ? opts->max_record_bytes : (size_t)256 << 20;
    s->max_keys = opts->max_retry_keys ? opts->max_retry_keys : 200000;
    s->nbuckets = LSIM_MIN_BUCKETS;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (!s->buckets ||
        ring_init(&s->requests, opts->max_requests ? opts->max_requests : 100000) != OC_OK ||
        ring_init(&s->deliveries, opts->max_deliveries ? opts->max_deliveries : 100000) != OC_OK) {
        oc_error_set(err, OC_E_NOMEM, "could not allocate the simulator's logs");
        goto fail;
    }
    /* Message ids are 18 digits like LINE's; a random start keeps runs from repeating ids. */
    uint64_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1) r = (uint64_t)oc_now_us();
    s->next_message_id = 400000000000000000ULL + r % 100000000000000000ULL;

    s->routes[0] = (oc_http_route_t){.method = NULL,
                                     .path = "/__sim/",
                                     .prefix = true,
                                     .handler = lsim__handle_control,
                                     .user = s};
    s->routes[1] = (oc_http_route_t){
        .method = NULL, .path = "/", .prefix = true, .handler = lsim__handle_line, .user = s};
    oc_http_server_opts_t so = {
        .listen = opts->listen ? opts->listen : "127.0.0.1:0",
        .threads = opts->threads > 0 ? opts->threads : 16,
        .max_body = LSIM_MAX_HTTP_BODY,
        .timeout_s = 60,
        .routes = s->routes,
        .nroutes = 2,
        /* Injected delays sleep in the handler: with a pool, a retry arriving on a keep-alive
         * connection of that thread would wait behind it and meet the wrong fault. */
        .thread_per_connection = true,
    };
    s->server = oc_http_server_start(&so, err);
    if (!s->server) goto fail;
    return s;
fail:
    lsim_destroy(s);
    return NULL;
}

void lsim_destroy(lsim_t *s)
{
    if (!s) return;
    /* Stop first: handlers may still be using the state below. */
    oc_http_server_stop(s->server);
    ring_dispose(&s->requests);
    ring_dispose(&s->deliveries);
    free_faults(s);
    if (s->buckets) {
        for (size_t i = 0; i < s->nbuckets; i++) {
            for (lsim_key_t *k = s->buckets[i], *n; k; k = n) {
                n = k->hnext;
                key_free(k);
            }
        }
    }
    free(s->buckets);
    for (lsim_bot_t *b = s->bots, *n; b; b = n) {
        n = b->next;
        OPENSSL_cleanse(b, sizeof *b);
        free(b);
    }
    for (lsim_profile_t *p = s->profiles, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    pthread_cond_destroy(&s->key_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
