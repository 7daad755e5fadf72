"""The first tenant wall on its own: every statement filters by tenant_id itself.

Row-level security is the second wall, and with it on, a statement that lost its
`tenant_id = $1` still returns nothing of another tenant: test_isolation.py would pass. Here a
throw-away cluster has row-level security switched off on every tenant table (as superuser:
DISABLE and NO FORCE), and the cross-tenant tests of test_isolation.py run again against it,
with the read paths they do not reach (the filtered list variants, both timeline directions,
registration by key). A statement without its tenant filter now hands tenant A's rows to
tenant B, and a test here fails."""
import grpc
import pytest

import test_isolation
from conftest import start_stack, stop_stack
from harness import Api, Db, assert_code, pb, rpc_error

TENANT_TABLES = ["channel_accounts", "channel_credentials", "contacts", "conversations",
                 "messages", "attachments"]

# Every cross-tenant API test of test_isolation.py; the test_rls_* ones check the wall that is
# switched off here.
for _name in dir(test_isolation):
    if _name.startswith("test_") and not _name.startswith("test_rls_"):
        globals()[_name] = getattr(test_isolation, _name)
victim = test_isolation.victim
attacker = test_isolation.attacker


@pytest.fixture(scope="module")
def stack():
    cluster, svc = start_stack("persistence-no-rls")
    sup = Db(cluster.dsn("super"))
    sup.run(*[f"ALTER TABLE omnichat.{t} DISABLE ROW LEVEL SECURITY, NO FORCE ROW LEVEL SECURITY"
              for t in TENANT_TABLES])
    yield cluster, svc
    stop_stack(cluster, svc)


@pytest.fixture(scope="module")
def service(stack):
    return stack[1]


@pytest.fixture(scope="module")
def cluster(stack):
    return stack[0]


@pytest.fixture(scope="module")
def api(service):
    return Api(service.channel)


@pytest.fixture(scope="module")
def db(cluster):
    return Db(cluster.dsn("super"))


@pytest.fixture(scope="module")
def app_db(cluster):
    return Db(cluster.dsn("app"))


def test_row_level_security_is_really_off(victim, attacker, app_db):
    """The control: the runtime role, with no tenant set, sees every tenant's rows here, so the
    other tests of this module rely on the statements' own filters."""
    for t in TENANT_TABLES:
        if t == "channel_credentials" or t == "attachments":
            continue  # only the victim has some; counted below
        assert app_db.count(f"SELECT count(DISTINCT tenant_id) FROM omnichat.{t}") >= 2, t
    assert app_db.count("SELECT count(*) FROM omnichat.channel_credentials") >= 1
    assert app_db.count("SELECT count(*) FROM omnichat.attachments") >= 1


def test_filtered_conversation_lists_show_only_own(victim, attacker):
    line = pb.CHANNEL_TYPE_LINE
    own = {attacker.conv.conversation_id}
    for kw in (dict(channel_type=line),
               dict(channel_type=line, channel_account_id=attacker.acct.channel_account_id)):
        got = attacker.api.ListConversations(tenant_id=attacker.tenant, page_size=200, **kw)
        assert {c.conversation_id for c in got.conversations} == own, kw
    got = attacker.api.ListConversations(tenant_id=attacker.tenant, channel_type=line,
                                         channel_account_id=victim.acct.channel_account_id)
    assert list(got.conversations) == []


def test_channel_account_list_by_type_shows_only_own(victim, attacker):
    got = attacker.api.ListChannelAccounts(tenant_id=attacker.tenant,
                                           channel_type=pb.CHANNEL_TYPE_LINE).channel_accounts
    assert [a.channel_account_id for a in got] == [attacker.acct.channel_account_id]


@pytest.mark.parametrize("from_oldest", [False, True], ids=["newest-first", "oldest-first"])
def test_timeline_of_another_tenant_is_not_found_or_empty(victim, attacker, from_oldest):
    try:
        r = attacker.api.ListMessages(tenant_id=attacker.tenant, from_oldest=from_oldest,
                                      conversation_id=victim.conv.conversation_id)
    except grpc.RpcError as e:
        assert_code(e, grpc.StatusCode.NOT_FOUND)
    else:
        assert list(r.messages) == [], "tenant B read tenant A's timeline"


def test_register_another_tenants_external_account_does_not_return_it(victim, attacker):
    """Registration looks the account up by (tenant, type, external id) first: without its
    tenant filter it would answer with tenant A's account."""
    e = rpc_error(attacker.api.RegisterChannelAccount, tenant_id=attacker.tenant,
                  channel_type=pb.CHANNEL_TYPE_LINE,
                  external_account_id=victim.acct.external_account_id)
    assert_code(e, grpc.StatusCode.ALREADY_EXISTS)

