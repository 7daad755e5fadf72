/* Unit tests for the credential vault: sealing, binding, tampering, rotation, key-file parsing. */
#include "omnichat/vault.h"

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omnichat/util.h"

#include "test_main.h"

#define TENANT "3f1c2a9e-7b41-4c55-9d1e-0a2b3c4d5e6f"
#define ACCOUNT "7a8b9c0d-1e2f-4a3b-8c4d-5e6f708192a3"
#define FIELD "access_token"
#define TOKEN "line-channel-access-token-0123456789abcdefghijklmnopqrstuvwxyz"

/* Fixed, distinct test keys: key n is 32 bytes of a pattern derived from n. */
static void test_key(int n, uint8_t out[OC_VAULT_KEY_LEN])
{
    for (int i = 0; i < OC_VAULT_KEY_LEN; i++)
        out[i] = (uint8_t)(n * 37 + i * 11 + 1);
}

static void test_key_b64(int n, char out[64])
{
    uint8_t k[OC_VAULT_KEY_LEN];
    test_key(n, k);
    oc_base64_encode(k, sizeof(k), out);
}

/* Builds "id:base64(key n)\n" lines for (id, n) pairs; ids[i] == NULL ends the list. */
static void key_text(char *out, size_t cap, const char *const *ids, const int *ns)
{
    out[0] = '\0';
    for (size_t i = 0; ids[i] != NULL; i++) {
        char b64[64];
        test_key_b64(ns[i], b64);
        size_t used = strlen(out);
        snprintf(out + used, cap - used, "%s:%s\n", ids[i], b64);
    }
}

static oc_vault_t *vault_with(const char *const *ids, const int *ns)
{
    char text[2048];
    oc_error_t err;
    oc_error_clear(&err);
    key_text(text, sizeof(text), ids, ns);
    oc_vault_t *v = oc_vault_create_from_buffer(text, strlen(text), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(err.code, OC_OK);
    return v;
}

static oc_vault_t *vault_k1(void)
{
    static const char *const ids[] = {"k1", NULL};
    static const int ns[] = {1};
    return vault_with(ids, ns);
}

static void seal_ok(const oc_vault_t *v, const char *tenant, const char *account, const char *field,
                    const char *plain, size_t len, const char **kid, uint8_t **sealed, size_t *slen)
{
    oc_error_t err;
    oc_error_clear(&err);
    oc_err_t rc = oc_vault_seal(v, tenant, account, field, plain, len, kid, sealed, slen, &err);
    CU_ASSERT_EQUAL_FATAL(rc, OC_OK);
    CU_ASSERT_EQUAL(*slen, OC_VAULT_SEALED_LEN(len));
}

/* Asserts that opening fails the one uniform way. */
static void open_fails(const oc_vault_t *v, const char *tenant, const char *account,
                       const char *field, const char *kid, const uint8_t *sealed, size_t slen)
{
    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_secret_t s = {(char *)"x", 1};
    oc_err_t rc = oc_vault_open(v, tenant, account, field, kid, sealed, slen, &s, &err);
    CU_ASSERT_EQUAL(rc, OC_E_PERMISSION);
    CU_ASSERT_STRING_EQUAL(err.msg, OC_VAULT_UNSEAL_FAILED_MSG);
    CU_ASSERT_PTR_NULL(s.data);
    CU_ASSERT_EQUAL(s.len, 0);
}

static void test_round_trip(void)
{
    oc_vault_t *v = vault_k1();
    const char *kid = NULL;
    uint8_t *sealed = NULL;
    size_t slen = 0;
    seal_ok(v, TENANT, ACCOUNT, FIELD, TOKEN, strlen(TOKEN), &kid, &sealed, &slen);
    CU_ASSERT_STRING_EQUAL(kid, "k1");
    /* The plaintext, or any 8-byte piece of it, must not be visible in the sealed bytes. */
    for (size_t i = 0; i + 8 <= strlen(TOKEN); i++)
        CU_ASSERT_PTR_NULL(memmem(sealed, slen, &TOKEN[i], 8));

    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_secret_t s = {NULL, 0};
    CU_ASSERT_EQUAL_FATAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, &err),
                          OC_OK);
    CU_ASSERT_EQUAL(s.len, strlen(TOKEN));
    CU_ASSERT_EQUAL(memcmp(s.data, TOKEN, s.len), 0);
    CU_ASSERT_EQUAL(s.data[s.len], '\0');
    oc_vault_secret_dispose(&s);
    CU_ASSERT_PTR_NULL(s.data);
    oc_vault_secret_dispose(&s); /* twice is fine */
    oc_vault_secret_dispose(NULL);

    free(sealed);
    oc_vault_destroy(v);
    oc_vault_destroy(NULL);
}

static void test_empty_and_binary_plaintext(void)
{
    oc_vault_t *v = vault_k1();
    const char *kid;
    uint8_t *sealed;
    size_t slen;
    oc_error_t err;
    oc_vault_secret_t s;

    seal_ok(v, TENANT, ACCOUNT, FIELD, NULL, 0, &kid, &sealed, &slen);
    CU_ASSERT_EQUAL(slen, OC_VAULT_OVERHEAD);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, &err), OC_OK);
    CU_ASSERT_EQUAL(s.len, 0);
    CU_ASSERT_PTR_NOT_NULL(s.data);
    oc_vault_secret_dispose(&s);
    free(sealed);

    static const char bin[] = {'a', '\0', 'b', '\xff', '\0'};
    seal_ok(v, TENANT, ACCOUNT, FIELD, bin, sizeof(bin), &kid, &sealed, &slen);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, &err), OC_OK);
    CU_ASSERT_EQUAL(s.len, sizeof(bin));
    CU_ASSERT_EQUAL(memcmp(s.data, bin, sizeof(bin)), 0);
    oc_vault_secret_dispose(&s);
    free(sealed);
    oc_vault_destroy(v);
}

static void test_binding(void)
{
    static const char *const ids[] = {"k1", "k2", NULL};
    static const int ns[] = {1, 2};
    oc_vault_t *v = vault_with(ids, ns);
    const char *kid;
    uint8_t *sealed;
    size_t slen;
    seal_ok(v, TENANT, ACCOUNT, FIELD, TOKEN, strlen(TOKEN), &kid, &sealed, &slen);

    open_fails(v, "3f1c2a9e-7b41-4c55-9d1e-0a2b3c4d5e60", ACCOUNT, FIELD, kid, sealed, slen);
    open_fails(v, TENANT, "7a8b9c0d-1e2f-4a3b-8c4d-5e6f708192a4", FIELD, kid, sealed, slen);
    open_fails(v, TENANT, ACCOUNT, "channel_secret", kid, sealed, slen);
    open_fails(v, ACCOUNT, TENANT, FIELD, kid, sealed, slen);  /* swapped ids */
    open_fails(v, TENANT, ACCOUNT, FIELD, "k2", sealed, slen); /* another loaded key */
    open_fails(v, TENANT, ACCOUNT, FIELD, "k9", sealed, slen); /* unknown key */
    CU_ASSERT_FALSE(oc_vault_has_key(v, "k9"));
    CU_ASSERT_TRUE(oc_vault_has_key(v, "k2"));
    free(sealed);

    /* Length prefixes: moving a byte from one id to the next must not give the same AAD. */
    seal_ok(v, "ab", "c", FIELD, TOKEN, strlen(TOKEN), &kid, &sealed, &slen);
    open_fails(v, "a", "bc", FIELD, kid, sealed, slen);
    open_fails(v, "ab", "c", "access_token ", kid, sealed, slen);
    free(sealed);
    oc_vault_destroy(v);
}

/* The same key material under another id must not open a value: the key id is bound too. */
static void test_key_id_bound(void)
{
    static const char *const ida[] = {"old", NULL};
    static const char *const idb[] = {"new", NULL};
    static const int ns[] = {5};
    oc_vault_t *a = vault_with(ida, ns);
    oc_vault_t *b = vault_with(idb, ns);
    const char *kid;
    uint8_t *sealed;
    size_t slen;
    seal_ok(a, TENANT, ACCOUNT, FIELD, TOKEN, strlen(TOKEN), &kid, &sealed, &slen);
    open_fails(b, TENANT, ACCOUNT, FIELD, "new", sealed, slen);
    free(sealed);
    oc_vault_destroy(a);
    oc_vault_destroy(b);
}

static void test_uuid_case_folded(void)
{
    oc_vault_t *v = vault_k1();
    const char *kid;
    uint8_t *sealed;
    size_t slen;
    seal_ok(v, "3F1C2A9E-7B41-4C55-9D1E-0A2B3C4D5E6F", ACCOUNT, FIELD, TOKEN, strlen(TOKEN), &kid,
            &sealed, &slen);
    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_secret_t s;
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, &err), OC_OK);
    oc_vault_secret_dispose(&s);
    /* Field names are not folded. */
    open_fails(v, TENANT, ACCOUNT, "ACCESS_TOKEN", kid, sealed, slen);
    free(sealed);
    oc_vault_destroy(v);
}

static void test_tamper(void)
{
    oc_vault_t *v = vault_k1();
    const char *kid;
    uint8_t *sealed;
    size_t slen;
    seal_ok(v, TENANT, ACCOUNT, FIELD, "secret", 6, &kid, &sealed, &slen);
    /* Every single-bit flip, in the nonce, the ciphertext and the tag, must be caught. */
    for (size_t i = 0; i < slen; i++) {
        for (int bit = 0; bit < 8; bit++) {
            sealed[i] ^= (uint8_t)(1u << bit);
            open_fails(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen);
            sealed[i] ^= (uint8_t)(1u << bit);
        }
    }
    /* Truncated, empty and extended values. */
    open_fails(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen - 1);
    open_fails(v, TENANT, ACCOUNT, FIELD, kid, sealed, OC_VAULT_OVERHEAD - 1);
    open_fails(v, TENANT, ACCOUNT, FIELD, kid, sealed, 0);
    open_fails(v, TENANT, ACCOUNT, FIELD, kid, NULL, 0);
    uint8_t *longer = calloc(1, slen + 1);
    memcpy(longer, sealed, slen);
    open_fails(v, TENANT, ACCOUNT, FIELD, kid, longer, slen + 1);
    free(longer);

    /* Untouched, it still opens. */
    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_secret_t s;
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, &err), OC_OK);
    oc_vault_secret_dispose(&s);
    free(sealed);
    oc_vault_destroy(v);
}

static void test_seals_differ(void)
{
    oc_vault_t *v = vault_k1();
    const char *kid;
    uint8_t *a, *b;
    size_t alen, blen;
    seal_ok(v, TENANT, ACCOUNT, FIELD, TOKEN, strlen(TOKEN), &kid, &a, &alen);
    seal_ok(v, TENANT, ACCOUNT, FIELD, TOKEN, strlen(TOKEN), &kid, &b, &blen);
    CU_ASSERT_EQUAL(alen, blen);
    CU_ASSERT_NOT_EQUAL(memcmp(a, b, OC_VAULT_NONCE_LEN), 0);
    CU_ASSERT_NOT_EQUAL(
        memcmp(a + OC_VAULT_NONCE_LEN, b + OC_VAULT_NONCE_LEN, alen - OC_VAULT_NONCE_LEN), 0);
    free(a);
    free(b);
    oc_vault_destroy(v);
}

static void test_rotation(void)
{
    static const char *const old_ids[] = {"k1", NULL};
    static const int old_ns[] = {1};
    /* The first key is the active one: k2 is listed first, k1 stays to open old values. */
    static const char *const new_ids[] = {"k2", "k1", NULL};
    static const int new_ns[] = {2, 1};
    oc_vault_t *before = vault_with(old_ids, old_ns);
    oc_vault_t *after = vault_with(new_ids, new_ns);
    CU_ASSERT_STRING_EQUAL(oc_vault_active_key_id(after), "k2");
    CU_ASSERT_EQUAL(oc_vault_key_count(after), 2);

    const char *kid1, *kid2;
    uint8_t *ct1, *ct2;
    size_t len1, len2;
    seal_ok(before, TENANT, ACCOUNT, FIELD, "old-token", 9, &kid1, &ct1, &len1);
    CU_ASSERT_STRING_EQUAL(kid1, "k1");
    seal_ok(after, TENANT, ACCOUNT, FIELD, "new-token", 9, &kid2, &ct2, &len2);
    CU_ASSERT_STRING_EQUAL(kid2, "k2");

    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_secret_t s;
    CU_ASSERT_EQUAL(oc_vault_open(after, TENANT, ACCOUNT, FIELD, "k1", ct1, len1, &s, &err), OC_OK);
    CU_ASSERT_EQUAL(s.len, 9);
    CU_ASSERT_EQUAL(memcmp(s.data, "old-token", 9), 0);
    oc_vault_secret_dispose(&s);
    CU_ASSERT_EQUAL(oc_vault_open(after, TENANT, ACCOUNT, FIELD, "k2", ct2, len2, &s, &err), OC_OK);
    oc_vault_secret_dispose(&s);
    /* A replica still on the old file cannot open new values: hence the two-step rollout. */
    CU_ASSERT_FALSE(oc_vault_has_key(before, "k2"));
    open_fails(before, TENANT, ACCOUNT, FIELD, "k2", ct2, len2);

    free(ct1);
    free(ct2);
    oc_vault_destroy(before);
    oc_vault_destroy(after);
}

static void test_file_format_tolerances(void)
{
    char b1[64], b2[64], text[1024];
    test_key_b64(1, b1);
    test_key_b64(2, b2);
    snprintf(text, sizeof(text),
             "# omnichat vault keys\r\n"
             "\r\n"
             "   \t\n"
             "  2026-01.b_k-2:%s  \r\n"
             "    # old key, kept for opening\n"
             "k1:%s", /* no final newline */
             b2, b1);
    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_t *v = oc_vault_create_from_buffer(text, strlen(text), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(oc_vault_key_count(v), 2);
    CU_ASSERT_STRING_EQUAL(oc_vault_active_key_id(v), "2026-01.b_k-2");
    CU_ASSERT_TRUE(oc_vault_has_key(v, "k1"));
    CU_ASSERT_EQUAL(oc_vault_warnings(v), 0);
    oc_vault_destroy(v);
}

/* One malformed key file: the error must be OC_E_CONFIG, mention `want` and leak no key. */
static void expect_bad(const char *text, const char *want)
{
    oc_error_t err;
    oc_error_clear(&err);
    oc_vault_t *v = oc_vault_create_from_buffer(text, strlen(text), &err);
    CU_ASSERT_PTR_NULL(v);
    oc_vault_destroy(v);
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);
    if (strstr(err.msg, want) == NULL) {
        fprintf(stderr, "\nmessage \"%s\" lacks \"%s\"\n", err.msg, want);
        CU_FAIL("message does not say what is wrong");
    }
    /* Neither any test key's base64 (or a 12-character piece of it) nor its raw bytes. */
    for (int n = 0; n < 8; n++) {
        char b64[64];
        uint8_t raw[OC_VAULT_KEY_LEN];
        test_key_b64(n, b64);
        test_key(n, raw);
        for (size_t i = 0; i + 12 <= strlen(b64); i++)
            CU_ASSERT_PTR_NULL(memmem(err.msg, strlen(err.msg), b64 + i, 12));
        CU_ASSERT_PTR_NULL(memmem(err.msg, strlen(err.msg), raw, 8));
    }
    /* Nor any piece of the offending text longer than the label words. */
    CU_ASSERT_PTR_NULL(strstr(err.msg, "AAAAAAAA"));
}

static void test_malformed_key_files(void)
{
    char b1[64], b2[64], t[1024];
    test_key_b64(1, b1);
    test_key_b64(2, b2);

    expect_bad("", "no keys");
    expect_bad("# only a comment\n\n", "no keys");

    /* A key pasted without its id: the line is key material and must not be echoed. */
    snprintf(t, sizeof(t), "# keys\n%s\n", b1);
    expect_bad(t, "line 2: expected key_id:base64_key");

    snprintf(t, sizeof(t), "k1:%s\nk2:%.43s!\n", b1, b2);
    expect_bad(t, "line 2: key is not valid base64");
    snprintf(t, sizeof(t), "k1:%.43s\n", b1); /* missing padding */
    expect_bad(t, "line 1: key is not valid base64");
    snprintf(t, sizeof(t), "k1: %s\n", b1); /* blank inside the line */
    expect_bad(t, "line 1: key is not valid base64");
    snprintf(t, sizeof(t), "k1:%s # trailing comment\n", b1);
    expect_bad(t, "line 1: key is not valid base64");

    /* Valid base64, wrong length: 16 bytes (AES-128 key by mistake), 33 bytes, huge. */
    expect_bad("k1:AAAAAAAAAAAAAAAAAAAAAA==\n", "line 1: key must be 32 bytes, not 16");
    snprintf(t, sizeof(t), "k1:%.42sAAAAAA\n", b1);
    expect_bad(t, "line 1: key must be 32 bytes, not 36");
    snprintf(t, sizeof(t), "k1:%s%s%s\n", b1, b1, b1);
    expect_bad(t, "line 1: key must be 32 bytes");
    expect_bad("k1:\n", "line 1: key is empty");

    snprintf(t, sizeof(t), "k1:%s\nk2:%s\n\nk1:%s\n", b1, b2, b2);
    expect_bad(t, "line 4: duplicate key id (first on line 1)");
    snprintf(t, sizeof(t), "k1:%s\nk2:%s\n", b1, b1);
    expect_bad(t, "line 2: same key as line 1");

    snprintf(t, sizeof(t), ":%s\n", b1);
    expect_bad(t, "line 1: key id must be");
    snprintf(t, sizeof(t), "key one:%s\n", b1);
    expect_bad(t, "line 1: key id must be");
    snprintf(t, sizeof(t), "k\xc3\xa9:%s\n", b1);
    expect_bad(t, "line 1: key id must be");
    snprintf(t, sizeof(t), "%065d:%s\n", 7, b1);
    expect_bad(t, "line 1: key id must be");

    /* Too many keys. */
    char *big = malloc(100 * (OC_VAULT_MAX_KEYS + 2));
    big[0] = '\0';
    for (int i = 0; i <= OC_VAULT_MAX_KEYS; i++) {
        uint8_t k[OC_VAULT_KEY_LEN] = {0};
        char b64[64];
        k[0] = (uint8_t)i;
        k[1] = 0x5a;
        oc_base64_encode(k, sizeof(k), b64);
        sprintf(big + strlen(big), "k%d:%s\n", i, b64);
    }
    expect_bad(big, "more than 64 keys");
    free(big);

    /* NUL bytes inside the text are rejected, not read as string ends. */
    oc_error_t err;
    oc_error_clear(&err);
    snprintf(t, sizeof(t), "k1:%s\n", b1);
    t[2] = '\0';
    CU_ASSERT_PTR_NULL(oc_vault_create_from_buffer(t, 3 + strlen(b1) + 1, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);
}

static char tmpdir[64];

static char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
    CU_ASSERT_EQUAL(chmod(path, mode), 0);
    return path;
}

static void test_key_file(void)
{
    char b1[64], text[256];
    oc_error_t err;
    test_key_b64(1, b1);
    snprintf(text, sizeof(text), "k1:%s\n", b1);

    char *p = write_file("keys", text, 0600);
    oc_error_clear(&err);
    oc_vault_t *v = oc_vault_create_from_file(p, OC_VAULT_F_REQUIRE_PRIVATE, &err);
    CU_ASSERT_PTR_NOT_NULL(v);
    CU_ASSERT_EQUAL(oc_vault_warnings(v), 0);
    oc_vault_destroy(v);

    /* Kubernetes' default 0644: loads, with a warning, unless privacy is required. */
    p = write_file("keys", text, 0644);
    oc_error_clear(&err);
    v = oc_vault_create_from_file(p, 0, &err);
    CU_ASSERT_PTR_NOT_NULL(v);
    CU_ASSERT_EQUAL(oc_vault_warnings(v), OC_VAULT_W_FILE_NOT_PRIVATE);
    oc_vault_destroy(v);
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_vault_create_from_file(p, OC_VAULT_F_REQUIRE_PRIVATE, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "group or others have access"));

    /* Followed through a symlink, as with a mounted Secret's ..data links. */
    char link[300];
    snprintf(link, sizeof(link), "%s/link", tmpdir);
    CU_ASSERT_EQUAL(symlink(p, link), 0);
    oc_error_clear(&err);
    v = oc_vault_create_from_file(link, 0, &err);
    CU_ASSERT_PTR_NOT_NULL(v);
    oc_vault_destroy(v);
    unlink(link);

    p = write_file("keys", text, 0646);
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_vault_create_from_file(p, 0, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "writable by others"));
    unlink(p);

    /* Parse errors name the file and the line. */
    p = write_file("bad", "# header\nk1:abc\n", 0600);
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_vault_create_from_file(p, 0, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/bad: line 2: key is not valid base64"));
    unlink(p);

    char *big = malloc(OC_VAULT_FILE_MAX + 2);
    memset(big, '#', OC_VAULT_FILE_MAX + 1);
    big[OC_VAULT_FILE_MAX + 1] = '\0';
    p = write_file("big", big, 0600);
    free(big);
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_vault_create_from_file(p, 0, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);
    unlink(p);

    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_vault_create_from_file(tmpdir, 0, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_CONFIG);

    snprintf(link, sizeof(link), "%s/missing", tmpdir);
    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_vault_create_from_file(link, 0, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "No such file"));

    oc_error_clear(&err);
    CU_ASSERT_PTR_NULL(oc_vault_create_from_file(NULL, 0, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_INVALID);
}

static void test_keygen(void)
{
    char l1[OC_VAULT_KEYGEN_LINE_MAX], l2[OC_VAULT_KEYGEN_LINE_MAX];
    char text[2 * OC_VAULT_KEYGEN_LINE_MAX + 2];
    oc_error_t err;
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_keygen_line("2026-07", l1, sizeof(l1), &err), OC_OK);
    CU_ASSERT_EQUAL(oc_vault_keygen_line("2026-01", l2, sizeof(l2), &err), OC_OK);
    CU_ASSERT_EQUAL(strlen(l1), strlen("2026-07:") + 44);
    CU_ASSERT_NOT_EQUAL(strcmp(l1 + 8, l2 + 8), 0);
    snprintf(text, sizeof(text), "%s\n%s\n", l1, l2);
    oc_vault_t *v = oc_vault_create_from_buffer(text, strlen(text), &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_STRING_EQUAL(oc_vault_active_key_id(v), "2026-07");

    const char *kid;
    uint8_t *sealed;
    size_t slen;
    oc_vault_secret_t s;
    seal_ok(v, TENANT, ACCOUNT, FIELD, TOKEN, strlen(TOKEN), &kid, &sealed, &slen);
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, &err), OC_OK);
    oc_vault_secret_dispose(&s);
    free(sealed);
    oc_vault_destroy(v);

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_keygen_line("bad id", l1, sizeof(l1), &err), OC_E_INVALID);
    CU_ASSERT_EQUAL(l1[0], '\0');
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_keygen_line("k", l1, OC_VAULT_KEYGEN_LINE_MAX - 1, &err),
                    OC_E_INVALID);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_keygen_line(NULL, l1, sizeof(l1), &err), OC_E_INVALID);
}

static void test_invalid_arguments(void)
{
    oc_vault_t *v = vault_k1();
    const char *kid = "x";
    uint8_t *sealed = (uint8_t *)"x";
    size_t slen = 1;
    oc_error_t err;
    char long_id[OC_VAULT_ID_MAX + 2];
    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_seal(v, NULL, ACCOUNT, FIELD, "a", 1, &kid, &sealed, &slen, &err),
                    OC_E_INVALID);
    CU_ASSERT_PTR_NULL(kid);
    CU_ASSERT_PTR_NULL(sealed);
    CU_ASSERT_EQUAL(slen, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "tenant_id"));
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_seal(v, TENANT, "", FIELD, "a", 1, &kid, &sealed, &slen, &err),
                    OC_E_INVALID);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_seal(v, TENANT, ACCOUNT, long_id, "a", 1, &kid, &sealed, &slen, &err),
                    OC_E_INVALID);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_seal(v, TENANT, ACCOUNT, FIELD, NULL, 1, &kid, &sealed, &slen, &err),
                    OC_E_INVALID);
    char *huge = calloc(1, OC_VAULT_PLAINTEXT_MAX + 1);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_seal(v, TENANT, ACCOUNT, FIELD, huge, OC_VAULT_PLAINTEXT_MAX + 1, &kid,
                                  &sealed, &slen, &err),
                    OC_E_TOO_LARGE);
    /* The largest allowed plaintext round-trips. */
    seal_ok(v, TENANT, ACCOUNT, FIELD, huge, OC_VAULT_PLAINTEXT_MAX, &kid, &sealed, &slen);
    oc_vault_secret_t s;
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, &err), OC_OK);
    CU_ASSERT_EQUAL(s.len, OC_VAULT_PLAINTEXT_MAX);
    oc_vault_secret_dispose(&s);
    free(huge);

    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, FIELD, NULL, sealed, slen, &s, &err),
                    OC_E_INVALID);
    oc_error_clear(&err);
    CU_ASSERT_EQUAL(oc_vault_open(v, TENANT, ACCOUNT, NULL, kid, sealed, slen, &s, &err),
                    OC_E_INVALID);
    free(sealed);
    oc_vault_destroy(v);
}

/* Many threads sealing and opening through one vault (run under ASan/TSan to mean much). */
static void *hammer(void *arg)
{
    const oc_vault_t *v = arg;
    long failures = 0;
    char plain[64];
    for (int i = 0; i < 300; i++) {
        int n = snprintf(plain, sizeof(plain), "token-%d-%p", i, (void *)&plain);
        const char *kid;
        uint8_t *sealed;
        size_t slen;
        oc_vault_secret_t s;
        if (oc_vault_seal(v, TENANT, ACCOUNT, FIELD, plain, (size_t)n, &kid, &sealed, &slen,
                          NULL) != OC_OK) {
            failures++;
            continue;
        }
        if (oc_vault_open(v, TENANT, ACCOUNT, FIELD, kid, sealed, slen, &s, NULL) != OC_OK ||
            s.len != (size_t)n || memcmp(s.data, plain, s.len) != 0)
            failures++;
        oc_vault_secret_dispose(&s);
        free(sealed);
    }
    return (void *)failures;
}

static void test_threads(void)
{
    oc_vault_t *v = vault_k1();
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, hammer, v), 0);
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        pthread_join(th[i], &r);
        CU_ASSERT_EQUAL((long)r, 0);
    }
    oc_vault_destroy(v);
}

static int suite_init(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/oc_vault_test.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int suite_clean(void)
{
    return rmdir(tmpdir) == 0 ? 0 : -1;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return CU_get_error();
    CU_pSuite s = CU_add_suite("vault", suite_init, suite_clean);
    if (s == NULL) goto fail;
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"round trip", test_round_trip},
        {"empty and binary plaintext", test_empty_and_binary_plaintext},
        {"bound to tenant, account, field and key id", test_binding},
        {"same key material under another id does not open", test_key_id_bound},
        {"uuid case folded", test_uuid_case_folded},
        {"every tampered bit fails", test_tamper},
        {"two seals of one plaintext differ", test_seals_differ},
        {"rotation", test_rotation},
        {"key file tolerances", test_file_format_tolerances},
        {"malformed key files", test_malformed_key_files},
        {"key file on disk", test_key_file},
        {"keygen line", test_keygen},
        {"invalid arguments", test_invalid_arguments},
        {"threads", test_threads},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (CU_add_test(s, tests[i].name, tests[i].fn) == NULL) goto fail;
    int failed = oc_test_run();
    return failed ? 1 : 0;
fail:
    CU_cleanup_registry();
    return 1;
}
