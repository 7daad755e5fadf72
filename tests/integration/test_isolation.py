"""Tenant isolation: every method given another tenant's ids answers NOT_FOUND (indistinguishable
from a missing id) or an empty list, and changes nothing; row-level security as the second wall."""
import grpc
import pytest

from harness import Builder, assert_code, new_id, now_ms, pb, rpc_error, sql_lit

TS = 1_700_000_000_000
NF = grpc.StatusCode.NOT_FOUND


class Victim:
    """Tenant A: an account with credentials, contact, conversation, inbound message with an
    attachment, and an outbound message leased by worker w-a."""

    def __init__(self, api):
        self.b = b = Builder(api)
        self.acct = b.account(pb.CHANNEL_TYPE_LINE)
        b.api.UpdateChannelCredentials(tenant_id=b.tenant, channel_account_id=self.acct.channel_account_id,
                                       credentials=[pb.SealedCredential(field="access_token", key_id="k1",
                                                                        ciphertext=b"A" * 44)])
        self.contact = b.contact(self.acct, "U-victim", display_name="Victim")
        self.conv = b.conversation(self.acct, "T-victim", contact=self.contact)
        self.msg = b.message(self.conv, TS, key="victim-msg", text="secret text",
                             attachments=[pb.AttachmentInput(kind="image", url="https://v.example/1")]).message
        self.out = b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=self.conv.conversation_id,
                                        idempotency_key="victim-out", request_fingerprint="fp",
                                        content_text="reply", lease_owner="w-a", lease_seconds=600).message


@pytest.fixture
def victim(api, db):
    v = Victim(api)
    v.before = db.tenant_counts(v.b.tenant)
    yield v
    assert db.tenant_counts(v.b.tenant) == v.before, "another tenant's call changed tenant A's rows"
    # Tenant A's own view is unchanged.
    acct = v.b.api.GetChannelAccount(tenant_id=v.b.tenant, channel_account_id=v.acct.channel_account_id).channel_account
    assert acct.status == pb.CHANNEL_STATUS_ACTIVE
    assert [(c.field, c.ciphertext) for c in acct.credentials] == [("access_token", b"A" * 44)]
    msgs = v.b.api.ListMessages(tenant_id=v.b.tenant, conversation_id=v.conv.conversation_id).messages
    by_id = {m.message_id: m for m in msgs}
    assert by_id[v.out.message_id].status == pb.MESSAGE_STATUS_PENDING
    assert by_id[v.out.message_id].external_message_id == ""
    assert len(by_id[v.msg.message_id].attachments) == 1


@pytest.fixture
def attacker(api, db):
    b = Builder(api)
    b.acct = b.account(pb.CHANNEL_TYPE_LINE)
    b.conv = b.conversation(b.acct, "T-attacker")
    yield b


def same_as_missing(fn, foreign, missing, expected=NF):
    """fn(id) with another tenant's id answers exactly like a random missing id."""
    e1 = rpc_error(fn, foreign)
    e2 = rpc_error(fn, missing)
    assert e1.code() == e2.code(), f"foreign id → {e1.code().name}, missing id → {e2.code().name}"
    if expected is not None:
        assert_code(e1, expected)
    return e1


def test_get_conversation_of_another_tenant_is_not_found(victim, attacker):
    same_as_missing(lambda cid: attacker.api.GetConversation(tenant_id=attacker.tenant, conversation_id=cid),
                    victim.conv.conversation_id, new_id())


def test_list_messages_of_another_tenant_is_not_found_or_empty(victim, attacker):
    try:
        r = attacker.api.ListMessages(tenant_id=attacker.tenant, conversation_id=victim.conv.conversation_id)
    except grpc.RpcError as e:
        assert_code(e, NF)
    else:
        assert list(r.messages) == [], "tenant B read tenant A's timeline"


def test_list_conversations_with_another_tenants_account_is_empty(victim, attacker):
    r = attacker.api.ListConversations(tenant_id=attacker.tenant,
                                       channel_account_id=victim.acct.channel_account_id)
    assert list(r.conversations) == []
    every = attacker.api.ListConversations(tenant_id=attacker.tenant, page_size=200).conversations
    assert {c.conversation_id for c in every} == {attacker.conv.conversation_id}


def test_list_channel_accounts_shows_only_own(victim, attacker):
    accts = attacker.api.ListChannelAccounts(tenant_id=attacker.tenant).channel_accounts
    assert [a.channel_account_id for a in accts] == [attacker.acct.channel_account_id]


def test_add_attachments_to_another_tenants_message_is_not_found(victim, attacker):
    same_as_missing(lambda mid: attacker.api.AddAttachments(
        tenant_id=attacker.tenant, message_id=mid,
        attachments=[pb.AttachmentInput(kind="file", url="https://evil.example/x", ordinal=5)]),
        victim.msg.message_id, new_id())


def test_insert_message_into_another_tenants_conversation_is_not_found(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    same_as_missing(lambda cid: attacker.api.InsertMessage(
        attacker.message_request(pb.Conversation(conversation_id=cid), TS, key="k-evil")),
        victim.conv.conversation_id, new_id())
    assert db.tenant_counts(attacker.tenant) == before


def test_insert_message_with_another_tenants_channel_account_is_rejected(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    e = same_as_missing(lambda aid: attacker.api.InsertMessage(
        attacker.message_request(attacker.conv, TS, key="k-evil2", channel_account_id=aid)),
        victim.acct.channel_account_id, new_id(), expected=None)
    # Checked against the conversation's own account: a foreign id is simply not that one.
    assert_code(e, grpc.StatusCode.INVALID_ARGUMENT, field="channel_account_id")
    assert db.tenant_counts(attacker.tenant) == before


def test_insert_message_with_another_tenants_contact_is_rejected(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    e = same_as_missing(lambda cid: attacker.api.InsertMessage(
        attacker.message_request(attacker.conv, TS, key="k-evil3", contact_id=cid)),
        victim.contact.contact_id, new_id(), expected=None)
    assert e.code() == NF, e
    assert db.tenant_counts(attacker.tenant) == before


def test_upsert_contact_with_another_tenants_account_is_not_found(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    same_as_missing(lambda aid: attacker.api.UpsertContact(tenant_id=attacker.tenant, channel_account_id=aid,
                                                           external_user_id="U-victim", display_name="Pwned"),
                    victim.acct.channel_account_id, new_id())
    assert db.tenant_counts(attacker.tenant) == before
    c = victim.b.api.UpsertContact(tenant_id=victim.b.tenant, channel_account_id=victim.acct.channel_account_id,
                                   external_user_id="U-victim").contact
    assert c.display_name == "Victim"


def test_upsert_conversation_with_another_tenants_account_is_not_found(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    same_as_missing(lambda aid: attacker.api.UpsertConversation(tenant_id=attacker.tenant, channel_account_id=aid,
                                                                thread_key="T-victim"),
                    victim.acct.channel_account_id, new_id())
    assert db.tenant_counts(attacker.tenant) == before


def test_upsert_conversation_with_another_tenants_contact_is_rejected(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    e = same_as_missing(lambda cid: attacker.api.UpsertConversation(
        tenant_id=attacker.tenant, channel_account_id=attacker.acct.channel_account_id,
        thread_key="T-new", contact_id=cid), victim.contact.contact_id, new_id(), expected=None)
    assert e.code() == NF, e
    assert db.tenant_counts(attacker.tenant) == before


def test_persist_inbound_into_another_tenants_account_is_not_found(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    same_as_missing(lambda aid: attacker.api.PersistInbound(tenant_id=attacker.tenant, messages=[
        pb.InboundMessage(channel_account_id=aid, external_user_id="U-victim", thread_key="T-victim",
                          external_message_id="victim-msg", content_type=pb.CONTENT_TYPE_TEXT,
                          content_text="x", channel_timestamp_ms=TS)]),
        victim.acct.channel_account_id, new_id())
    assert db.tenant_counts(attacker.tenant) == before


def test_get_channel_account_of_another_tenant_is_not_found(victim, attacker):
    same_as_missing(lambda aid: attacker.api.GetChannelAccount(tenant_id=attacker.tenant, channel_account_id=aid),
                    victim.acct.channel_account_id, new_id())


def test_update_credentials_of_another_tenants_account_is_not_found(victim, attacker):
    same_as_missing(lambda aid: attacker.api.UpdateChannelCredentials(
        tenant_id=attacker.tenant, channel_account_id=aid,
        credentials=[pb.SealedCredential(field="access_token", key_id="k-evil", ciphertext=b"E" * 44)]),
        victim.acct.channel_account_id, new_id())


def test_record_status_of_another_tenants_account_is_not_found(victim, attacker):
    same_as_missing(lambda aid: attacker.api.RecordChannelStatus(
        tenant_id=attacker.tenant, channel_account_id=aid, status=pb.CHANNEL_STATUS_AUTH_FAILED,
        error_category=pb.ERROR_CATEGORY_AUTH_ERROR), victim.acct.channel_account_id, new_id())


def test_create_outbound_in_another_tenants_conversation_is_not_found(victim, attacker, db):
    before = db.tenant_counts(attacker.tenant)
    same_as_missing(lambda cid: attacker.api.CreateOutbound(
        tenant_id=attacker.tenant, conversation_id=cid, idempotency_key="victim-out",
        request_fingerprint="fp", content_text="reply"), victim.conv.conversation_id, new_id())
    assert db.tenant_counts(attacker.tenant) == before


def test_complete_outbound_of_another_tenant_is_not_found(victim, attacker):
    same_as_missing(lambda mid: attacker.api.CompleteOutbound(
        tenant_id=attacker.tenant, message_id=mid, lease_owner="w-a", outcome=pb.OUTBOUND_OUTCOME_SENT,
        external_message_id="forged"), victim.out.message_id, new_id())


def test_reconcile_outbound_of_another_tenant_is_not_found(victim, attacker):
    same_as_missing(lambda mid: attacker.api.ReconcileOutbound(
        tenant_id=attacker.tenant, message_id=mid, external_message_id="forged"),
        victim.out.message_id, new_id())


# ---------------------------------------------------------------------------------------------
# Row-level security, checked directly in PostgreSQL

TABLES = ["messages", "contacts", "conversations", "channel_accounts", "channel_credentials", "attachments"]


@pytest.mark.parametrize("table", TABLES)
def test_rls_runtime_role_without_tenant_setting_sees_nothing(victim, attacker, db, app_db, table):
    total = db.count(f"SELECT count(*) FROM omnichat.{table}")
    assert total > 0, "positive control: the superuser sees rows"
    assert app_db.count(f"SELECT count(*) FROM omnichat.{table}") == 0, \
        f"runtime role sees {table} rows without omnichat.tenant_id set"


@pytest.mark.parametrize("table", TABLES)
def test_rls_runtime_role_sees_only_the_set_tenant(victim, attacker, db, app_db, table):
    a, b = victim.b.tenant, attacker.tenant
    a_rows = db.count(f"SELECT count(*) FROM omnichat.{table} WHERE tenant_id = {sql_lit(a)}")
    assert a_rows > 0
    set_a = f"SELECT set_config('omnichat.tenant_id', {sql_lit(a)}, false)"
    assert app_db.count(set_a, f"SELECT count(*) FROM omnichat.{table}") == a_rows
    assert app_db.count(set_a, f"SELECT count(*) FROM omnichat.{table} WHERE tenant_id <> {sql_lit(a)}") == 0
    set_b = f"SELECT set_config('omnichat.tenant_id', {sql_lit(b)}, false)"
    assert app_db.count(set_b, f"SELECT count(*) FROM omnichat.{table} WHERE tenant_id = {sql_lit(a)}") == 0


def test_rls_runtime_role_cannot_write_into_another_tenant(victim, attacker, app_db, db):
    """With tenant B set, an UPDATE of tenant A's rows touches nothing."""
    a, b = victim.b.tenant, attacker.tenant
    r = app_db.run(f"SELECT set_config('omnichat.tenant_id', {sql_lit(b)}, false)",
                   f"UPDATE omnichat.contacts SET display_name = 'pwned' WHERE tenant_id = {sql_lit(a)}",
                   check=False)
    assert db.count(f"SELECT count(*) FROM omnichat.contacts WHERE tenant_id = {sql_lit(a)} "
                    f"AND display_name = 'pwned'") == 0, r.stderr
