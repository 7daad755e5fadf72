/* TLS for rpc.c: credentials that follow their files (rotation without restart), and the
 * mapping from a client certificate's SANs to roles. */
#include "rpc_tls.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>

#include <grpc/grpc_security_constants.h>

#include "omnichat/util.h"

/* PEM files are small; a bound keeps a wrong path (a log, a device) from being slurped. */
#define PEM_MAX (256 * 1024)
#define ROLES_MAX 64
#define ROLE_NAME_MAX 255

/* ---- files ---- */

typedef struct pem_set {
    char *cert;
    char *key; /* secret: wiped on free */
    char *ca;
    size_t key_len;
} pem_set_t;

static void pem_free(pem_set_t *p)
{
    free(p->cert);
    if (p->key) OPENSSL_cleanse(p->key, p->key_len);
    free(p->key);
    free(p->ca);
    memset(p, 0, sizeof *p);
}

static bool stamp_one(const char *path, rpc_tls_stamp_t *st)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return false;
    memset(st, 0, sizeof *st);
    st->dev = sb.st_dev;
    st->ino = sb.st_ino;
    st->size = sb.st_size;
    st->mtime = sb.st_mtim;
    st->ctime = sb.st_ctim;
    return true;
}

static bool stamp_all(const oc_rpc_tls_t *tls, rpc_tls_stamps_t *out)
{
    return stamp_one(tls->cert_file, &out->f[0]) && stamp_one(tls->key_file, &out->f[1]) &&
           stamp_one(tls->ca_file, &out->f[2]);
}

static bool stamps_equal(const rpc_tls_stamps_t *a, const rpc_tls_stamps_t *b)
{
    for (int i = 0; i < 3; i++) {
        const rpc_tls_stamp_t *x = &a->f[i], *y = &b->f[i];
        if (x->dev != y->dev || x->ino != y->ino || x->size != y->size ||
            x->mtime.tv_sec != y->mtime.tv_sec || x->mtime.tv_nsec != y->mtime.tv_nsec ||
            x->ctime.tv_sec != y->ctime.tv_sec || x->ctime.tv_nsec != y->ctime.tv_nsec)
            return false;
    }
    return true;
}

/* The key must belong to the certificate: files replaced one at a time are briefly a mismatched
 * pair, and serving that would fail every handshake until the next change. */
static oc_err_t check_pair(const pem_set_t *p, oc_error_t *err)
{
    oc_err_t rc = OC_OK;
    BIO *cb = BIO_new_mem_buf(p->cert, -1), *kb = BIO_new_mem_buf(p->key, (int)p->key_len);
    BIO *ab = BIO_new_mem_buf(p->ca, -1);
    X509 *cert = NULL, *ca = NULL;
    EVP_PKEY *key = NULL;

    if (!cb || !kb || !ab) {
        rc = oc_error_set(err, OC_E_NOMEM, "tls: out of memory");
        goto out;
    }
    cert = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    ca = PEM_read_bio_X509(ab, NULL, NULL, NULL);
    if (!cert)
        rc = oc_error_set(err, OC_E_CONFIG, "tls: no PEM certificate in the certificate file");
    else if (!key)
        rc = oc_error_set(err, OC_E_CONFIG, "tls: no PEM private key in the key file");
    else if (!ca)
        rc = oc_error_set(err, OC_E_CONFIG, "tls: no PEM certificate in the CA file");
    else if (X509_check_private_key(cert, key) != 1)
        rc = oc_error_set(err, OC_E_CONFIG, "tls: the key file does not match the certificate");
out:
    X509_free(cert);
    X509_free(ca);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    BIO_free(ab);
    return rc;
}

/* Reads the three files and checks them. The stamps are taken first: a file replaced while it
 * is read then differs from them at the next check, and is read again. */
static oc_err_t load(const oc_rpc_tls_t *tls, pem_set_t *p, rpc_tls_stamps_t *stamps,
                     oc_error_t *err)
{
    oc_err_t rc;
    size_t n;

    memset(p, 0, sizeof *p);
    if (!tls->cert_file || !tls->key_file || !tls->ca_file || !tls->cert_file[0] ||
        !tls->key_file[0] || !tls->ca_file[0])
        return oc_error_set(err, OC_E_CONFIG, "tls: certificate, key and CA files are required");
    if (!stamp_all(tls, stamps)) memset(stamps, 0, sizeof *stamps);
    if ((rc = oc_read_file(tls->cert_file, PEM_MAX, false, &p->cert, &n, err)) != OC_OK ||
        (rc = oc_read_file(tls->key_file, PEM_MAX, false, &p->key, &p->key_len, err)) != OC_OK ||
        (rc = oc_read_file(tls->ca_file, PEM_MAX, false, &p->ca, &n, err)) != OC_OK ||
        (rc = check_pair(p, err)) != OC_OK) {
        pem_free(p);
        return rc;
    }
    return OC_OK;
}

oc_err_t oc_rpc_tls_check(const oc_rpc_tls_t *tls, oc_error_t *err)
{
    pem_set_t p;
    rpc_tls_stamps_t stamps;
    if (!tls) return OC_OK;
    oc_err_t rc = load(tls, &p, &stamps, err);
    pem_free(&p);
    return rc;
}

bool rpc_tls_changed(const oc_rpc_tls_t *tls, const rpc_tls_stamps_t *stamps)
{
    rpc_tls_stamps_t now;
    return !stamp_all(tls, &now) || !stamps_equal(&now, stamps);
}

/* ---- server ---- */

struct rpc_tls_server {
    oc_rpc_tls_t files;
    /* gRPC may fetch from several handshakes at once. */
    pthread_mutex_t mu;
    rpc_tls_stamps_t seen;
};

/* Called by gRPC for every new connection. Three stat calls are cheap next to a handshake;
 * a changed set is re-read, and only a complete, matching one replaces the served config. */
static grpc_ssl_certificate_config_reload_status fetch(void *user,
                                                       grpc_ssl_server_certificate_config **config)
{
    rpc_tls_server_t *w = user;
    grpc_ssl_certificate_config_reload_status st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    rpc_tls_stamps_t stamps;
    pem_set_t p;
    oc_error_t err;

    pthread_mutex_lock(&w->mu);
    if (!rpc_tls_changed(&w->files, &w->seen)) goto out;
    oc_error_clear(&err);
    /* A broken set keeps the old config, and w->seen unchanged, so it is tried again. */
    if (load(&w->files, &p, &stamps, &err) != OC_OK) goto out;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = p.key, .cert_chain = p.cert};
    *config = grpc_ssl_server_certificate_config_create(p.ca, &pair, 1); /* copies */
    pem_free(&p);
    if (*config) {
        w->seen = stamps;
        st = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
    }
out:
    pthread_mutex_unlock(&w->mu);
    return st;
}

grpc_server_credentials *rpc_tls_server_creds(const oc_rpc_tls_t *tls, rpc_tls_server_t **watch,
                                              oc_error_t *err)
{
    pem_set_t p;
    rpc_tls_stamps_t stamps;

    *watch = NULL;
    if (load(tls, &p, &stamps, err) != OC_OK) return NULL;
    pem_free(&p);
    rpc_tls_server_t *w = calloc(1, sizeof *w);
    if (!w) {
        oc_error_set(err, OC_E_NOMEM, "tls: out of memory");
        return NULL;
    }
    w->files = *tls;
    pthread_mutex_init(&w->mu, NULL);
    /* seen stays zero: the first fetch (when the port is added) loads the files. */
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, fetch, w);
    grpc_server_credentials *creds = o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
    if (!creds) {
        rpc_tls_server_free(w);
        oc_error_set(err, OC_E_INTERNAL, "tls: could not create server credentials");
        return NULL;
    }
    *watch = w;
    return creds;
}

grpc_server_credentials *rpc_tls_server_creds_renew(rpc_tls_server_t *w, oc_error_t *err)
{
    /* A new security connector must get a config from its first fetch: forget what was seen. */
    pthread_mutex_lock(&w->mu);
    memset(&w->seen, 0, sizeof w->seen);
    pthread_mutex_unlock(&w->mu);
    grpc_ssl_server_credentials_options *o =
        grpc_ssl_server_credentials_create_options_using_config_fetcher(
            GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, fetch, w);
    grpc_server_credentials *creds = o ? grpc_ssl_server_credentials_create_with_options(o) : NULL;
    if (!creds) oc_error_set(err, OC_E_INTERNAL, "tls: could not create server credentials");
    return creds;
}

void rpc_tls_server_free(rpc_tls_server_t *w)
{
    if (!w) return;
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* ---- client ---- */

grpc_channel_credentials *rpc_tls_client_creds(const oc_rpc_tls_t *tls, rpc_tls_stamps_t *stamps,
                                               oc_error_t *err)
{
    pem_set_t p;

    if (load(tls, &p, stamps, err) != OC_OK) return NULL;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = p.key, .cert_chain = p.cert};
    /* Default verification: the server's chain must lead to ca_file and name the target. */
    grpc_channel_credentials *c = grpc_ssl_credentials_create_ex(p.ca, &pair, NULL, NULL);
    pem_free(&p);
    if (!c) oc_error_set(err, OC_E_INTERNAL, "tls: could not create client credentials");
    return c;
}

/* ---- roles ---- */

static unsigned role_bit(const char *s, size_t n)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"connector", OC_RPC_ROLE_CONNECTOR},
        {"inbox", OC_RPC_ROLE_INBOX},
        {"operator", OC_RPC_ROLE_OPERATOR},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i].name) == n && memcmp(names[i].name, s, n) == 0) return names[i].bit;
    return 0;
}

void rpc_roles_free(rpc_roles_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++)
        free(r->e[i].name);
    free(r->e);
    r->e = NULL;
    r->n = 0;
}

/* "name=role,name=role"; blanks around items are allowed; a name may appear more than once. */
oc_err_t rpc_roles_parse(const char *spec, rpc_roles_t *out, oc_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (!spec || !spec[0]) return OC_OK;
    out->e = calloc(ROLES_MAX, sizeof *out->e);
    if (!out->e) return oc_error_set(err, OC_E_NOMEM, "client roles: out of memory");
    const char *p = spec;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        while (p < end && *p == ' ')
            p++;
        const char *q = end;
        while (q > p && q[-1] == ' ')
            q--;
        const char *eq = memchr(p, '=', (size_t)(q - p));
        if (q > p) {
            if (!eq || eq == p || (size_t)(eq - p) > ROLE_NAME_MAX) goto bad;
            unsigned bit = role_bit(eq + 1, (size_t)(q - eq - 1));
            if (!bit) goto bad;
            if (out->n == ROLES_MAX) {
                rpc_roles_free(out);
                return oc_error_set(err, OC_E_CONFIG, "client roles: more than %d entries",
                                    ROLES_MAX);
            }
            out->e[out->n].name = strndup(p, (size_t)(eq - p));
            if (!out->e[out->n].name) {
                rpc_roles_free(out);
                return oc_error_set(err, OC_E_NOMEM, "client roles: out of memory");
            }
            out->e[out->n++].roles = bit;
        }
        p = *end ? end + 1 : end;
    }
    return OC_OK;
bad:
    rpc_roles_free(out);
    return oc_error_set(err, OC_E_CONFIG,
                        "client roles: expected name=role[,name=role...] with role connector, "
                        "inbox or operator");
}

bool oc_rpc_roles_valid(const char *spec, char *why, size_t why_len)
{
    rpc_roles_t r;
    oc_error_t err;
    oc_error_clear(&err);
    if (rpc_roles_parse(spec, &r, &err) != OC_OK) {
        snprintf(why, why_len, "%s", err.msg);
        return false;
    }
    rpc_roles_free(&r);
    return true;
}

unsigned rpc_roles_of_call(const rpc_roles_t *r, grpc_call *call, char *peer, size_t peer_cap)
{
    unsigned roles = 0;
    bool named = false;
    grpc_auth_context *ac = grpc_call_auth_context(call);

    if (peer_cap) peer[0] = '\0';
    if (!ac) return 0;
    if (!grpc_auth_context_peer_is_authenticated(ac)) goto out;
    roles = OC_RPC_ROLE_ANY;
    /* SANs only, by design: a CN is not checked against anything by the CA's tooling as
     * reliably, and a certificate without SANs simply has no role. */
    grpc_auth_property_iterator it =
        grpc_auth_context_find_properties_by_name(ac, GRPC_X509_SAN_PROPERTY_NAME);
    const grpc_auth_property *prop;
    while ((prop = grpc_auth_property_iterator_next(&it)) != NULL) {
        unsigned mine = 0;
        for (size_t i = 0; i < r->n; i++)
            if (strlen(r->e[i].name) == prop->value_length &&
                memcmp(r->e[i].name, prop->value, prop->value_length) == 0)
                mine |= r->e[i].roles;
        roles |= mine;
        /* The log names the identity that earned the roles, else the first one seen. */
        if (peer_cap && (!peer[0] || (mine && !named))) {
            size_t n = prop->value_length < peer_cap - 1 ? prop->value_length : peer_cap - 1;
            memcpy(peer, prop->value, n);
            peer[n] = '\0';
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)peer[i] < 0x20 || (unsigned char)peer[i] > 0x7e) peer[i] = '?';
            named = mine != 0;
        }
    }
out:
    grpc_auth_context_release(ac);
    return roles;
}
