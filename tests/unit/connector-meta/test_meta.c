/* The Meta provider's pure parts: the Send API error table (code, error_subcode, is_transient;
 * never the message text), the webhook parser (routing ids, echoes, receipts, unsupported,
 * ignored events) and the X-Hub-Signature-256 verifier. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "meta.h"
#include "meta_wire.h"

#include "test_main.h"

#define CAT(name) PBE(ERROR_CATEGORY__ERROR_CATEGORY_##name)

static void classify(long status, const char *body, conn_class_t *out)
{
    oc_http_result_t res;

    oc_http_result_init(&res, 65536);
    res.transport = OC_HTTP_TX_OK;
    res.status = status;
    oc_buf_appends(&res.body, body);
    meta_classify_send(&res, 1000, out);
    oc_http_result_dispose(&res);
}

static void test_error_table(void)
{
    static const struct {
        long status;
        const char *body;
        conn_outcome_t outcome;
        int category;
        bool auth_failed;
    } cases[] = {
        {200, "{\"recipient_id\":\"1\",\"message_id\":\"m_1\"}", CONN_OUT_SENT, 0, false},
        {400, "{\"error\":{\"code\":190,\"error_subcode\":460}}", CONN_OUT_FAILED, CAT(AUTH_ERROR),
         true},
        {403, "{\"error\":{\"code\":10}}", CONN_OUT_FAILED, CAT(AUTH_ERROR), true},
        {403, "{\"error\":{\"code\":230}}", CONN_OUT_FAILED, CAT(AUTH_ERROR), true},
        {400, "{\"error\":{\"code\":10,\"error_subcode\":2018278}}", CONN_OUT_FAILED,
         CAT(WINDOW_CLOSED), false},
        {400, "{\"error\":{\"code\":10,\"error_subcode\":2534022}}", CONN_OUT_FAILED,
         CAT(WINDOW_CLOSED), false},
        {400, "{\"error\":{\"code\":551,\"error_subcode\":1545041}}", CONN_OUT_FAILED,
         CAT(RECIPIENT_ERROR), false},
        {400, "{\"error\":{\"code\":100,\"error_subcode\":2018001}}", CONN_OUT_FAILED,
         CAT(RECIPIENT_ERROR), false},
        {400, "{\"error\":{\"code\":100}}", CONN_OUT_FAILED, CAT(INVALID_REQUEST_ERROR), false},
        {400, "{\"error\":{\"code\":613}}", CONN_OUT_RETRY, CAT(RATE_LIMIT_ERROR), false},
        {400, "{\"error\":{\"code\":4}}", CONN_OUT_RETRY, CAT(RATE_LIMIT_ERROR), false},
        {401, "{\"error\":{\"code\":2,\"is_transient\":true}}", CONN_OUT_RETRY, CAT(PROVIDER_ERROR),
         false},
        /* A transient flag wins over the code; the text never decides. */
        {400, "{\"error\":{\"code\":190,\"is_transient\":true}}", CONN_OUT_RETRY,
         CAT(PROVIDER_ERROR), false},
        {400, "{\"error\":{\"code\":368,\"message\":\"(#613) rate limit\"}}", CONN_OUT_FAILED,
         CAT(INVALID_REQUEST_ERROR), false},
        {500, "<html>oops</html>", CONN_OUT_RETRY, CAT(PROVIDER_ERROR), false},
        {200, "{}", CONN_OUT_UNKNOWN, CAT(PROVIDER_ERROR), false},
    };
    conn_class_t c;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        classify(cases[i].status, cases[i].body, &c);
        CU_ASSERT_EQUAL(c.outcome, cases[i].outcome);
        CU_ASSERT_EQUAL(c.category, cases[i].category);
        CU_ASSERT_EQUAL(c.auth_failed, cases[i].auth_failed);
        if (c.outcome != cases[i].outcome || c.category != cases[i].category)
            fprintf(stderr, "case %zu: %s -> %d/%d\n", i, cases[i].body, c.outcome, c.category);
    }
    classify(200, "{\"message_id\":\"m_abc\"}", &c);
    CU_ASSERT_STRING_EQUAL(c.external_message_id, "m_abc");
}

static void test_transport(void)
{
    oc_http_result_t res;
    conn_class_t c;

    oc_http_result_init(&res, 1024);
    res.transport = OC_HTTP_TX_TIMEOUT;
    meta_classify_send(&res, 500, &c);
    CU_ASSERT_EQUAL(c.outcome, CONN_OUT_UNKNOWN);
    res.transport = OC_HTTP_TX_DROPPED;
    meta_classify_send(&res, 500, &c);
    CU_ASSERT_EQUAL(c.outcome, CONN_OUT_UNKNOWN);
    res.transport = OC_HTTP_TX_CONNECT;
    meta_classify_send(&res, 500, &c);
    CU_ASSERT_EQUAL(c.outcome, CONN_OUT_RETRY);
    oc_http_result_dispose(&res);
}

static void test_parse(void)
{
    const char *body =
        "{\"object\":\"page\",\"entry\":["
        "{\"id\":\"P1\",\"time\":1,\"messaging\":["
        "{\"sender\":{\"id\":\"U1\"},\"recipient\":{\"id\":\"P1\"},\"timestamp\":1000,"
        "\"message\":{\"mid\":\"m_1\",\"text\":\"caf\\u00e9\"}},"
        "{\"sender\":{\"id\":\"P1\"},\"recipient\":{\"id\":\"U1\"},\"timestamp\":1001,"
        "\"message\":{\"mid\":\"m_2\",\"is_echo\":true,\"metadata\":\"ours\",\"text\":\"hi\"}},"
        "{\"sender\":{\"id\":\"U1\"},\"recipient\":{\"id\":\"P1\"},\"timestamp\":1002,"
        "\"message\":{\"mid\":\"m_3\",\"attachments\":[{\"type\":\"image\"}]}},"
        "{\"sender\":{\"id\":\"U1\"},\"recipient\":{\"id\":\"P1\"},\"timestamp\":1003,"
        "\"delivery\":{\"mids\":[\"m_9\"],\"watermark\":999}},"
        "{\"sender\":{\"id\":\"U1\"},\"recipient\":{\"id\":\"P1\"},\"timestamp\":1004,"
        "\"postback\":{\"payload\":\"x\"}},"
        "{\"sender\":{\"id\":\"U1\"},\"recipient\":{\"id\":\"P1\"},\"timestamp\":\"bad\","
        "\"message\":{\"mid\":\"m_4\",\"text\":\"x\"}}],"
        "\"standby\":[{}]},"
        "{\"id\":\"P2\",\"time\":1,\"messaging\":["
        "{\"sender\":{\"id\":\"U2\"},\"recipient\":{\"id\":\"P2\"},\"timestamp\":2000,"
        "\"read\":{\"watermark\":1500}}]}]}";
    oc_arena_t *a = oc_arena_create(0);
    conn_batch_t b;
    oc_error_t err;

    oc_error_clear(&err);
    CU_ASSERT_EQUAL_FATAL(meta_parse(body, strlen(body), a, &b, &err), OC_OK);
    CU_ASSERT_EQUAL_FATAL(b.nitems, 5);
    CU_ASSERT_EQUAL(b.ignored, 2); /* the postback and the standby event */
    CU_ASSERT_EQUAL(b.invalid, 1); /* the string timestamp */
    CU_ASSERT_STRING_EQUAL(b.items[0].route_id, "P1");
    CU_ASSERT_EQUAL(b.items[0].channel_type, PBE(CHANNEL_TYPE__CHANNEL_TYPE_FACEBOOK));
    CU_ASSERT_STRING_EQUAL(b.items[0].thread_key, "P1:U1");
    CU_ASSERT_STRING_EQUAL(b.items[0].content_text, "caf\xc3\xa9");
    CU_ASSERT_EQUAL(b.items[0].timestamp_ms, 1000);
    CU_ASSERT_TRUE(b.items[1].echo);
    CU_ASSERT_STRING_EQUAL(b.items[1].echo_message_id, "ours");
    CU_ASSERT_STRING_EQUAL(b.items[1].thread_key, "P1:U1"); /* the person's thread */
    CU_ASSERT_EQUAL(b.items[1].direction, PBE(DIRECTION__DIRECTION_OUTBOUND));
    CU_ASSERT_EQUAL(b.items[2].content_type, PBE(CONTENT_TYPE__CONTENT_TYPE_UNSUPPORTED));
    CU_ASSERT_PTR_NOT_NULL(strstr(b.items[2].content_struct_json, "image"));
    CU_ASSERT_EQUAL(b.items[3].receipt, PBE(MESSAGE_STATUS__MESSAGE_STATUS_DELIVERED));
    CU_ASSERT_EQUAL(b.items[3].watermark_ms, 999);
    CU_ASSERT_EQUAL_FATAL(b.items[3].n_receipt_mids, 1);
    CU_ASSERT_STRING_EQUAL(b.items[3].receipt_mids[0], "m_9");
    CU_ASSERT_EQUAL(b.items[4].receipt, PBE(MESSAGE_STATUS__MESSAGE_STATUS_READ));
    CU_ASSERT_STRING_EQUAL(b.items[4].thread_key, "P2:U2");
    oc_arena_destroy(a);

    a = oc_arena_create(0);
    CU_ASSERT_EQUAL(meta_parse("[1]", 3, a, &b, &err), OC_E_INVALID);
    CU_ASSERT_EQUAL(meta_parse("{\"object\":\"page\"}", 17, a, &b, &err), OC_E_INVALID);
    const char *ig =
        "{\"object\":\"instagram\",\"entry\":[{\"id\":\"I1\",\"messaging\":[{\"sender\":"
        "{\"id\":\"S\"},\"recipient\":{\"id\":\"I1\"},\"timestamp\":5,\"message\":"
        "{\"mid\":\"m\",\"text\":\"t\"}}]}]}";
    CU_ASSERT_EQUAL(meta_parse(ig, strlen(ig), a, &b, &err), OC_OK);
    CU_ASSERT_EQUAL_FATAL(b.nitems, 1);
    CU_ASSERT_EQUAL(b.items[0].channel_type, PBE(CHANNEL_TYPE__CHANNEL_TYPE_INSTAGRAM));
    oc_arena_destroy(a);
}

static void test_signature(void)
{
    const char *body = "{\"object\":\"page\",\"entry\":[]}";
    char sig[META_SIGNATURE_LEN + 1], upper[META_SIGNATURE_LEN + 1];

    CU_ASSERT_TRUE_FATAL(meta_sign("s3cret", 6, body, strlen(body), sig));
    CU_ASSERT_TRUE(meta_signature_valid("s3cret", 6, body, strlen(body), sig));
    CU_ASSERT_FALSE(meta_signature_valid("s3cret!", 7, body, strlen(body), sig));
    CU_ASSERT_FALSE(meta_signature_valid("s3cret", 6, body, strlen(body) - 1, sig));
    CU_ASSERT_FALSE(meta_signature_valid("s3cret", 6, body, strlen(body), NULL));
    CU_ASSERT_FALSE(meta_signature_valid("s3cret", 6, body, strlen(body), sig + 7));
    CU_ASSERT_FALSE(meta_signature_valid("", 0, body, strlen(body), sig));
    for (size_t i = 0; i <= META_SIGNATURE_LEN; i++)
        upper[i] = i >= 7 && sig[i] >= 'a' && sig[i] <= 'f' ? (char)(sig[i] - 32) : sig[i];
    CU_ASSERT_TRUE(meta_signature_valid("s3cret", 6, body, strlen(body), upper));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("meta", NULL, NULL);
    CU_add_test(s, "error table", test_error_table);
    CU_add_test(s, "transport", test_transport);
    CU_add_test(s, "parse", test_parse);
    CU_add_test(s, "signature", test_signature);
    return oc_test_run();
}
