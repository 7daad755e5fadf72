/* Connector/ConnectChannel against fakes: final account state, plaintext credentials wiped. */
#include <CUnit/Basic.h>

#include "connect.h"
#include "fake_line.h"

#include "test_main.h"

#define LONG_NAME_LEN 600

/* A decoded request as the gRPC layer hands it over: every string in the call's arena. */
static CPB(ConnectChannelRequest) * request(oc_arena_t *arena, const char *display_name)
{
    CPB(ConnectChannelRequest) *r = oc_arena_alloc(arena, sizeof *r);
    CPB(ConnectChannelRequest) init = CPB_INIT(CONNECT_CHANNEL_REQUEST);

    *r = init;
    r->tenant_id = oc_arena_strdup(arena, FAKE_TENANT);
    r->access_token = oc_arena_strdup(arena, FAKE_TOKEN);
    r->channel_secret = oc_arena_strdup(arena, FAKE_SECRET);
    r->display_name = oc_arena_strdup(arena, display_name);
    r->external_account_id = oc_arena_strdup(arena, "");
    return r;
}

static bool zeroed(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != '\0') return false;
    return true;
}

/* Calls the handler; checks that both plaintext credentials were wiped whatever happened. */
static oc_err_t do_connect(oc_arena_t *arena, CPB(ConnectChannelRequest) * req,
                           CPB(ConnectChannelResponse) * *resp)
{
    oc_rpc_ctx_t ctx;
    ProtobufCMessage *out = NULL;
    oc_err_t rc;

    memset(&ctx, 0, sizeof ctx);
    ctx.arena = arena;
    ctx.user = &L;
    ctx.method = CONN_SERVICE "ConnectChannel";
    snprintf(ctx.request_id, sizeof ctx.request_id, "req-unit");
    rc = conn_connect_channel(&ctx, &req->base, &out);
    CU_ASSERT_TRUE(zeroed(req->access_token, sizeof FAKE_TOKEN - 1));
    CU_ASSERT_TRUE(zeroed(req->channel_secret, sizeof FAKE_SECRET - 1));
    *resp = (CPB(ConnectChannelResponse) *)out;
    return rc;
}

static void test_reply_shows_active_and_wipes(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    CPB(ConnectChannelResponse) *resp = NULL;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), false);
    CU_ASSERT_EQUAL(do_connect(arena, request(arena, "Shop"), &resp), OC_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp->channel_account);
    CU_ASSERT_EQUAL(resp->channel_account->status, PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE));
    CU_ASSERT_EQUAL(resp->channel_account->n_credentials, 0);
    CU_ASSERT_EQUAL(fake_calls(M_REGISTER), 1);
    CU_ASSERT_EQUAL(fake_calls(M_UPDATE), 1);
    oc_arena_destroy(arena);
}

/* Register answers AUTH_FAILED; when Update does not carry the account, it is read back. */
static void test_reply_read_back_after_update(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    CPB(ConnectChannelResponse) *resp = NULL;

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), false);
    F.update_without_account = true;
    CU_ASSERT_EQUAL(do_connect(arena, request(arena, "Shop"), &resp), OC_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_EQUAL(resp->channel_account->status, PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE));
    CU_ASSERT_EQUAL(fake_calls(M_GET), 1);
    oc_arena_destroy(arena);
}

static void test_failures_wipe_too(void)
{
    oc_arena_t *arena = oc_arena_create(0);
    CPB(ConnectChannelResponse) *resp = NULL;
    char long_name[LONG_NAME_LEN + 1];

    fake_reset();
    fake_set_account(PBE(CHANNEL_STATUS__CHANNEL_STATUS_ACTIVE), false);
    /* validation fails after the credentials were checked */
    memset(long_name, 'n', LONG_NAME_LEN);
    long_name[LONG_NAME_LEN] = '\0';
    CU_ASSERT_EQUAL(do_connect(arena, request(arena, long_name), &resp), OC_E_INVALID);
    /* LINE rejects the token */
    FL.bot_info_status = 401;
    CU_ASSERT_EQUAL(do_connect(arena, request(arena, "Shop"), &resp), OC_E_UNAUTHENTICATED);
    CU_ASSERT_EQUAL(fake_calls(M_REGISTER), 0);
    oc_arena_destroy(arena);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (fake_start() != 0) return 1;
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    s = CU_add_suite("line_connect", NULL, NULL);
    CU_add_test(s, "reply shows ACTIVE, credentials wiped", test_reply_shows_active_and_wipes);
    CU_add_test(s, "account read back after UpdateChannelCredentials",
                test_reply_read_back_after_update);
    CU_add_test(s, "failures wipe the credentials too", test_failures_wipe_too);
    failed = oc_test_run();
    fake_stop();
    return failed == 0 ? 0 : 1;
}
