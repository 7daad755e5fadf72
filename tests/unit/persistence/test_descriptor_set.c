/* The descriptor set compiled into omnichat-persistence: a server with reflection accepts it for
 * the real method tables, and refuses a set that is malformed or does not describe a service. */
#include <CUnit/Basic.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "omnichat/rpc.h"
#include "pst.h"

#include "test_main.h"

static oc_rpc_server_t *create(const oc_rpc_method_t *m, size_t n, const uint8_t *set, size_t len,
                               oc_error_t *err)
{
    oc_rpc_server_opts_t o = {
        .listen = "127.0.0.1:0",
        .workers = 1,
        .descriptor_set = set,
        .descriptor_set_len = len,
    };
    oc_error_clear(err);
    return oc_rpc_server_create(&o, m, n, err);
}

static void test_real_tables_are_described(void)
{
    oc_error_t err;
    const struct {
        const oc_rpc_method_t *m;
        size_t n;
    } tables[] = {
        {pst_methods_conversations, pst_nmethods_conversations},
        {pst_methods_messages, pst_nmethods_messages},
        {pst_methods_channels, pst_nmethods_channels},
        {pst_methods_outbound, pst_nmethods_outbound},
    };
    CU_ASSERT(pst_descriptor_set_len > 1000);
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        oc_rpc_server_t *s =
            create(tables[i].m, tables[i].n, pst_descriptor_set, pst_descriptor_set_len, &err);
        CU_ASSERT_PTR_NOT_NULL(s);
        if (!s) fprintf(stderr, "table %zu: %s\n", i, err.msg);
        oc_rpc_server_destroy(s);
    }
}

static oc_err_t nothing(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    (void)ctx;
    (void)req;
    (void)resp;
    return OC_E_INTERNAL;
}

static void test_undescribed_service_is_refused(void)
{
    oc_error_t err;
    const oc_rpc_method_t m[] = {
        {.path = "/omnichat.other.v1.Other/Do",
         .input = &grpc__health__v1__health_check_request__descriptor,
         .output = &grpc__health__v1__health_check_request__descriptor,
         .handler = nothing,
         .roles = OC_RPC_ROLE_ANY,
         .limits = NULL},
    };
    CU_ASSERT_PTR_NULL(create(m, 1, pst_descriptor_set, pst_descriptor_set_len, &err));
    CU_ASSERT_EQUAL(err.code, OC_E_INVALID);
    CU_ASSERT(strstr(err.msg, "omnichat.other.v1.Other") != NULL);
    /* Without a descriptor set the same table is served (no reflection): the refusal above was
     * the set's. */
    oc_rpc_server_t *s = create(m, 1, NULL, 0, &err);
    CU_ASSERT_PTR_NOT_NULL(s);
    oc_rpc_server_destroy(s);
}

static void test_malformed_sets_are_refused(void)
{
    oc_error_t err;
    static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0x01, 0x00};
    CU_ASSERT_PTR_NULL(
        create(pst_methods_messages, pst_nmethods_messages, garbage, sizeof garbage, &err));
    CU_ASSERT_STRING_EQUAL(err.msg, "reflection: malformed descriptor set");
    /* Cut short: a file's bytes run past the end. */
    CU_ASSERT_PTR_NULL(create(pst_methods_messages, pst_nmethods_messages, pst_descriptor_set,
                              pst_descriptor_set_len / 2, &err));
    CU_ASSERT_STRING_EQUAL(err.msg, "reflection: malformed descriptor set");
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("descriptor_set", NULL, NULL);
    CU_add_test(s, "every persistence table is described", test_real_tables_are_described);
    CU_add_test(s, "an undescribed service is refused", test_undescribed_service_is_refused);
    CU_add_test(s, "malformed sets are refused", test_malformed_sets_are_refused);
    return oc_test_run();
}
