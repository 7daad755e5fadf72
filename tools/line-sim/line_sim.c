/* LINE simulator state on the simulator core (tools/sim): lifecycle, message ids, retry keys. */
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

/* ---------- clock and ids ---------- */

void lsim__message_id(lsim_t *s, char out[24])
{
    pthread_mutex_lock(&s->core.mu);
    uint64_t id = s->next_message_id++;
    pthread_mutex_unlock(&s->core.mu);
    snprintf(out, 24, "%llu", (unsigned long long)id);
}

/* ---------- bots ---------- */

oc_err_t lsim_add_bot(lsim_t *s, const lsim_bot_def_t *def, oc_error_t *err)
{
    return sim_add_account(&s->core, def, err);
}

bool lsim_revoke_bot(lsim_t *s, const char *token)
{
    return sim_revoke_account(&s->core, token);
}

oc_err_t lsim_load_tokens_file(lsim_t *s, const char *path, oc_error_t *err)
{
    return sim_load_tokens_file(&s->core, path, err);
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
    pthread_mutex_lock(&s->core.mu);
    if (!id) goto out; /* out of memory: execute without the guarantee rather than fail */
    for (;;) {
        keys_expire(s, oc_now_ms() + s->core.clock_offset_ms);
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
        pthread_cond_wait(&s->key_cv, &s->core.mu);
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
    pthread_mutex_unlock(&s->core.mu);
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
    pthread_mutex_lock(&s->core.mu);
    lsim_key_t *k = *key_slot(s, id, h);
    if (k && !k->accepted) {
        k->accepted = true;
        k->accepted_ms = oc_now_ms() + s->core.clock_offset_ms;
        snprintf(k->request_id, sizeof k->request_id, "%s", request_id ? request_id : "");
        k->sent_json = copy;
        copy = NULL;
        k->older = s->newest_key;
        if (s->newest_key) s->newest_key->newer = k;
        s->newest_key = k;
        if (!s->oldest_key) s->oldest_key = k;
        keys_expire(s, k->accepted_ms);
    }
    pthread_cond_broadcast(&s->key_cv);
    pthread_mutex_unlock(&s->core.mu);
    free(copy);
    free(id);
}

void lsim__key_abort(lsim_t *s, const char *bot_user_id, const char *key)
{
    char *id = key_id(bot_user_id, key);
    if (!id) return;
    uint64_t h = fnv1a(id);
    pthread_mutex_lock(&s->core.mu);
    lsim_key_t *k = *key_slot(s, id, h);
    if (k && !k->accepted) key_remove(s, k);
    pthread_cond_broadcast(&s->key_cv);
    pthread_mutex_unlock(&s->core.mu);
    free(id);
}

/* Drops accepted keys; in-flight ones stay so their waiters and owners stay consistent. */
static void keys_clear_accepted(lsim_t *s)
{
    while (s->oldest_key)
        key_remove(s, s->oldest_key);
}

/* ---------- lifecycle ---------- */

static const char *kind_name(int k)
{
    return k == LSIM_KIND_RATE_LIMIT ? "rate_limit" : k == LSIM_KIND_QUOTA ? "quota" : NULL;
}

void lsim_reset(lsim_t *s)
{
    pthread_mutex_lock(&s->core.mu);
    sim_reset_locked(&s->core);
    keys_clear_accepted(s);
    pthread_mutex_unlock(&s->core.mu);
}

int lsim_port(const lsim_t *s)
{
    return sim_port(&s->core);
}

lsim_t *lsim_create(const lsim_opts_t *opts, oc_error_t *err)
{
    lsim_t *s;
    sim_opts_t so = {
        .listen = opts->listen,
        .threads = opts->threads,
        .max_requests = opts->max_requests,
        .max_deliveries = opts->max_deliveries,
        .max_record_bytes = opts->max_record_bytes,
        .max_http_body = LSIM_MAX_HTTP_BODY,
        .picture_base = "https://profile.line-scdn.net/line-sim/",
        .api = lsim__handle_line,
        .control = lsim__handle_control,
        .kind_name = kind_name,
    };

    s = sim_new(sizeof *s, &so, err);
    if (s == NULL) return NULL;
    pthread_cond_init(&s->key_cv, NULL);
    s->max_keys = opts->max_retry_keys ? opts->max_retry_keys : 200000;
    s->nbuckets = LSIM_MIN_BUCKETS;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (!s->buckets) {
        oc_error_set(err, OC_E_NOMEM, "could not allocate the simulator's retry keys");
        goto fail;
    }
    /* Message ids are 18 digits like LINE's; a random start keeps runs from repeating ids. */
    uint64_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1) r = (uint64_t)oc_now_us();
    s->next_message_id = 400000000000000000ULL + r % 100000000000000000ULL;
    if (sim_start(&s->core, &so, err) != OC_OK) goto fail;
    return s;
fail:
    lsim_destroy(s);
    return NULL;
}

void lsim_destroy(lsim_t *s)
{
    if (!s) return;
    /* Stop first: handlers may still be using the state below. */
    sim_stop(&s->core);
    if (s->buckets) {
        for (size_t i = 0; i < s->nbuckets; i++) {
            for (lsim_key_t *k = s->buckets[i], *n; k; k = n) {
                n = k->hnext;
                key_free(k);
            }
        }
    }
    free(s->buckets);
    pthread_cond_destroy(&s->key_cv);
    sim_dispose(&s->core);
    free(s);
}
