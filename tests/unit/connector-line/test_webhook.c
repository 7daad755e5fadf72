/* LINE webhook: the official signature vector, and normalization cases from tests/data/line. */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "line_webhook.h"

#include "test_main.h"

#define VECTOR_BODY "{\"destination\":\"U8e742f61d673b39c7fff3cecb7536ef0\",\"events\":[]}"
#define VECTOR_SECRET "8c570fa6dd201bb328f1c1eac23a96d8"
#define VECTOR_SIG "GhRKmvmHys4Pi8DxkF4+EayaH0OqtJtaZxgTD9fMDLs="

static void test_signature_vector(void)
{
    CU_ASSERT_TRUE(line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), VECTOR_BODY,
                                        strlen(VECTOR_BODY), VECTOR_SIG));
}

static void test_signature_tampered(void)
{
    char body[] = VECTOR_BODY;
    char secret[] = VECTOR_SECRET;

    body[5] ^= 1;
    CU_ASSERT_FALSE(
        line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), body, strlen(body), VECTOR_SIG));
    secret[0] = '9';
    CU_ASSERT_FALSE(
        line_signature_valid(secret, strlen(secret), VECTOR_BODY, strlen(VECTOR_BODY), VECTOR_SIG));
    /* Truncated body, missing header, not base64, wrong length, trailing garbage. */
    CU_ASSERT_FALSE(line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), VECTOR_BODY,
                                         strlen(VECTOR_BODY) - 1, VECTOR_SIG));
    CU_ASSERT_FALSE(line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), VECTOR_BODY,
                                         strlen(VECTOR_BODY), NULL));
    CU_ASSERT_FALSE(line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), VECTOR_BODY,
                                         strlen(VECTOR_BODY), "%%%"));
    CU_ASSERT_FALSE(line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), VECTOR_BODY,
                                         strlen(VECTOR_BODY), "GhRKmvmHys4Pi8DxkF4+Eaya"));
    CU_ASSERT_FALSE(line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), VECTOR_BODY,
                                         strlen(VECTOR_BODY), VECTOR_SIG "AAAA"));
    CU_ASSERT_FALSE(line_signature_valid(VECTOR_SECRET, strlen(VECTOR_SECRET), VECTOR_BODY,
                                         strlen(VECTOR_BODY), ""));
}

static const char *content_name(int t)
{
    return t == OMNICHAT__PERSISTENCE__V1__CONTENT_TYPE__CONTENT_TYPE_TEXT          ? "TEXT"
           : t == OMNICHAT__PERSISTENCE__V1__CONTENT_TYPE__CONTENT_TYPE_UNSUPPORTED ? "UNSUPPORTED"
                                                                                    : "?";
}

/* Every key of `want` is in the produced JSON with an equal value. */
static int struct_contains(const char *produced, json_t *want)
{
    json_t *got = json_loads(produced, 0, NULL);
    const char *k;
    json_t *v;
    int ok = got != NULL;

    json_object_foreach(want, k, v)
    {
        if (!json_equal(json_object_get(got, k), v)) {
            fprintf(stderr, "    content_struct: key %s differs in %s\n", k, produced);
            ok = 0;
        }
    }
    json_decref(got);
    return ok;
}

static int run_case(const char *path)
{
    json_error_t jerr;
    json_t *c = json_load_file(path, 0, &jerr);
    json_t *jb, *items;
    char *body;
    oc_arena_t *arena = oc_arena_create(0);
    line_webhook_batch_t b;
    oc_error_t err;
    oc_err_t rc;
    int ok = 1;

    if (c == NULL) {
        fprintf(stderr, "  %s: %s\n", path, jerr.text);
        oc_arena_destroy(arena);
        return 0;
    }
    jb = json_object_get(c, "body");
    body = json_is_string(jb) ? strdup(json_string_value(jb)) : json_dumps(jb, JSON_COMPACT);
    oc_error_clear(&err);
    rc = line_webhook_parse(body, strlen(body), arena, &b, &err);
    if (json_object_get(c, "error") != NULL) {
        ok = rc == OC_E_INVALID &&
             strcmp(err.msg, json_string_value(json_object_get(c, "error"))) == 0;
        if (!ok) fprintf(stderr, "  %s: want error, got %d \"%s\"\n", path, rc, err.msg);
        goto out;
    }
    if (rc != OC_OK) {
        fprintf(stderr, "  %s: unexpected error %s\n", path, err.msg);
        ok = 0;
        goto out;
    }
    items = json_object_get(c, "items");
    if (b.nitems != json_array_size(items) ||
        b.ignored != (size_t)json_integer_value(json_object_get(c, "ignored")) ||
        b.invalid != (size_t)json_integer_value(json_object_get(c, "invalid"))) {
        fprintf(stderr, "  %s: %zu items %zu ignored %zu invalid\n", path, b.nitems, b.ignored,
                b.invalid);
        ok = 0;
        goto out;
    }
    for (size_t i = 0; i < b.nitems; i++) {
        json_t *w = json_array_get(items, i);
        const line_inbound_item_t *it = &b.items[i];
#define EQ(field, val) \
    if (strcmp(val, json_string_value(json_object_get(w, field))) != 0) { \
        fprintf(stderr, "  %s: item %zu %s = \"%s\"\n", path, i, field, val); \
        ok = 0; \
    }
        EQ("thread_key", it->thread_key);
        EQ("external_user_id", it->external_user_id);
        EQ("external_message_id", it->external_message_id);
        EQ("content_type", content_name(it->content_type));
        EQ("content_text", it->content_text);
#undef EQ
        if (it->timestamp_ms != json_integer_value(json_object_get(w, "timestamp_ms"))) {
            fprintf(stderr, "  %s: item %zu timestamp %lld\n", path, i,
                    (long long)it->timestamp_ms);
            ok = 0;
        }
        if (json_object_get(w, "content_struct") != NULL &&
            !struct_contains(it->content_struct_json, json_object_get(w, "content_struct")))
            ok = 0;
    }
out:
    free(body);
    json_decref(c);
    oc_arena_destroy(arena);
    return ok;
}

static void test_normalization_cases(void)
{
    const char *dir = LINE_TEST_DATA_DIR "/webhooks";
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    while ((e = readdir(d)) != NULL) {
        char path[1024];
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int ok = run_case(path);
        if (!ok) fprintf(stderr, "  FAILED case %s\n", e->d_name);
        CU_ASSERT_TRUE(ok);
        n++;
    }
    closedir(d);
    CU_ASSERT_TRUE(n >= 10);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("line_webhook", NULL, NULL);
    CU_add_test(s, "official signature vector", test_signature_vector);
    CU_add_test(s, "tampered body, secret or header", test_signature_tampered);
    CU_add_test(s, "normalization cases (tests/data/line/webhooks)", test_normalization_cases);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
