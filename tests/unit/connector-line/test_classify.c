/* Classification of LINE push answers: one case per file in tests/data/line/responses. */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "line.h"
#include "line_api.h"

#include "test_main.h"

static oc_http_transport_t transport_of(const char *s)
{
    if (strcmp(s, "timeout") == 0) return OC_HTTP_TX_TIMEOUT;
    if (strcmp(s, "connect") == 0) return OC_HTTP_TX_CONNECT;
    if (strcmp(s, "dropped") == 0) return OC_HTTP_TX_DROPPED;
    return OC_HTTP_TX_OK;
}

static int run_case(const char *path)
{
    json_error_t jerr;
    json_t *c = json_load_file(path, 0, &jerr), *jb, *want;
    oc_http_result_t res;
    conn_class_t cls;
    char *body = NULL;
    const char *s;
    int ok = 1;

    if (c == NULL) {
        fprintf(stderr, "  %s: %s\n", path, jerr.text);
        return 0;
    }
    line_http_result_init(&res);
    res.transport = transport_of(json_string_value(json_object_get(c, "transport")));
    res.status = (long)json_integer_value(json_object_get(c, "status"));
    jb = json_object_get(c, "body");
    if (jb != NULL) {
        body = json_is_string(jb) ? strdup(json_string_value(jb)) : json_dumps(jb, JSON_COMPACT);
        oc_buf_appends(&res.body, body);
    }
    line_classify_push(&res,
                       json_object_get(c, "timeout_ms") != NULL
                           ? (long)json_integer_value(json_object_get(c, "timeout_ms"))
                           : 10000,
                       &cls);
    want = json_object_get(c, "expect");
    if (strcmp(conn_outcome_name(cls.outcome),
               json_string_value(json_object_get(want, "outcome"))) != 0 ||
        strcmp(conn_category_name(cls.category),
               json_string_value(json_object_get(want, "category"))) != 0 ||
        cls.auth_failed != json_is_true(json_object_get(want, "auth_failed"))) {
        fprintf(stderr, "  %s: got %s/%s auth=%d\n", path, conn_outcome_name(cls.outcome),
                conn_category_name(cls.category), cls.auth_failed);
        ok = 0;
    }
    if ((s = json_string_value(json_object_get(want, "external_message_id"))) != NULL &&
        strcmp(s, cls.external_message_id) != 0) {
        fprintf(stderr, "  %s: external id \"%s\"\n", path, cls.external_message_id);
        ok = 0;
    }
    if ((s = json_string_value(json_object_get(want, "detail"))) != NULL &&
        strcmp(s, cls.detail) != 0) {
        fprintf(stderr, "  %s: detail \"%s\"\n", path, cls.detail);
        ok = 0;
    }
    /* The detail is ours: never a copy of what LINE said. */
    if (body != NULL && strlen(body) > 8 && strstr(cls.detail, body) != NULL) ok = 0;
    if (cls.outcome != CONN_OUT_SENT && cls.detail[0] == '\0') ok = 0;
    free(body);
    oc_http_result_dispose(&res);
    json_decref(c);
    return ok;
}

static void test_response_cases(void)
{
    const char *dir = LINE_TEST_DATA_DIR "/responses";
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
    CU_ASSERT_TRUE(n >= 15);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("line_classify", NULL, NULL);
    CU_add_test(s, "response cases (tests/data/line/responses)", test_response_cases);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
