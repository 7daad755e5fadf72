"""Malformed input: INVALID_ARGUMENT naming the field, and nothing written (rows counted in the
database before and after, for the tenant of the test)."""
import base64
import uuid

import grpc
import pytest

from harness import Builder, assert_code, expect_invalid, new_id, now_ms, pb, rpc_error

TS = 1_700_000_000_000
BAD_UUIDS = ["not-a-uuid", "1234", str(uuid.uuid4())[:-1], str(uuid.uuid4()) + "0",
             "g" + str(uuid.uuid4())[1:], str(uuid.uuid4()).replace("-", "")]


class Ctx:
    def __init__(self, api):
        self.b = Builder(api)
        self.tenant = self.b.tenant
        self.acct = self.b.account()
        self.contact = self.b.contact(self.acct, "U-v")
        self.conv = self.b.conversation(self.acct, "T-v", contact=self.contact)
        self.msg = self.b.message(self.conv, TS, key="existing").message

    def msg_req(self, **over):
        base = dict(tenant_id=self.tenant, conversation_id=self.conv.conversation_id,
                    direction=pb.DIRECTION_INBOUND, idempotency_key="k-" + uuid.uuid4().hex,
                    sender_type=pb.SENDER_TYPE_CONTACT, content_type=pb.CONTENT_TYPE_TEXT,
                    content_text="ok", channel_timestamp_ms=TS)
        base.update(over)
        return base

    def inbound(self, **over):
        base = dict(channel_account_id=self.acct.channel_account_id, external_user_id="U-new",
                    thread_key="T-new", external_message_id="mid-" + uuid.uuid4().hex,
                    content_type=pb.CONTENT_TYPE_TEXT, content_text="ok", channel_timestamp_ms=TS)
        base.update(over)
        return pb.InboundMessage(**base)


@pytest.fixture
def ctx(api, db):
    c = Ctx(api)
    c.before = db.tenant_counts(c.tenant)
    yield c
    # Zero rows written by the rejected call (every table of the tenant).
    assert db.tenant_counts(c.tenant) == c.before, "a rejected call wrote rows"


def att(**kw):
    kw.setdefault("kind", "image")
    kw.setdefault("url", "https://cdn.example/x.png")
    return pb.AttachmentInput(**kw)


# (case id, method, fields(ctx), field named in the error)
INSERT_CASES = [
    ("missing tenant", lambda c: c.msg_req(tenant_id=""), "tenant_id"),
    *[(f"malformed tenant {i}", (lambda bad: lambda c: c.msg_req(tenant_id=bad))(bad), "tenant_id")
      for i, bad in enumerate(BAD_UUIDS)],
    ("missing conversation", lambda c: c.msg_req(conversation_id=""), "conversation_id"),
    ("malformed conversation", lambda c: c.msg_req(conversation_id="conv-1"), "conversation_id"),
    ("malformed channel account", lambda c: c.msg_req(channel_account_id="acct"), "channel_account_id"),
    ("malformed contact", lambda c: c.msg_req(contact_id="xyz"), "contact_id"),
    ("direction unspecified", lambda c: c.msg_req(direction=pb.DIRECTION_UNSPECIFIED), "direction"),
    ("direction out of range", lambda c: c.msg_req(direction=99), "direction"),
    ("missing idempotency key", lambda c: c.msg_req(idempotency_key=""), "idempotency_key"),
    ("idempotency key too long", lambda c: c.msg_req(idempotency_key="k" * 257), "idempotency_key"),
    ("sender type unspecified", lambda c: c.msg_req(sender_type=pb.SENDER_TYPE_UNSPECIFIED), "sender_type"),
    ("content type unspecified", lambda c: c.msg_req(content_type=pb.CONTENT_TYPE_UNSPECIFIED), "content_type"),
    ("timestamp zero", lambda c: c.msg_req(channel_timestamp_ms=0), "channel_timestamp_ms"),
    ("timestamp negative", lambda c: c.msg_req(channel_timestamp_ms=-5), "channel_timestamp_ms"),
    ("content_text 20001 bytes", lambda c: c.msg_req(content_text="x" * 20001), "content_text"),
    ("content_text 20001 bytes multibyte", lambda c: c.msg_req(content_text="ก" * 6667), "content_text"),
    ("content_struct_json not JSON", lambda c: c.msg_req(content_struct_json="{not json"), "content_struct_json"),
    ("content_struct_json trailing garbage", lambda c: c.msg_req(content_struct_json='{"a":1} x'), "content_struct_json"),
    ("content_struct_json too large", lambda c: c.msg_req(content_struct_json='{"a":"' + "x" * 65536 + '"}'),
     "content_struct_json"),
    ("sender display name too long", lambda c: c.msg_req(sender_display_name="n" * 513), "sender_display_name"),
    ("external id too long", lambda c: c.msg_req(external_message_id="e" * 257), "external_message_id"),
    ("attachment without kind", lambda c: c.msg_req(attachments=[att(), att(kind="")]), "kind"),
    ("attachment metadata not JSON", lambda c: c.msg_req(attachments=[att(metadata_json="nope")]), "metadata_json"),
    ("attachment url too long", lambda c: c.msg_req(attachments=[att(url="https://x/" + "a" * 2048)]), "url"),
    ("21 attachments", lambda c: c.msg_req(attachments=[att(ordinal=i + 1) for i in range(21)]), "attachments"),
]


@pytest.mark.parametrize("case,fields,field", INSERT_CASES, ids=[c[0] for c in INSERT_CASES])
def test_insert_message_invalid(ctx, case, fields, field):
    expect_invalid(ctx.b.api.InsertMessage, field, **fields(ctx))


def test_insert_message_boundaries_are_accepted(ctx, db):
    """Positive control for the limits above: exactly at the limit is fine."""
    r = ctx.b.api.InsertMessage(**ctx.msg_req(content_text="ก" * 6666 + "xx",  # 20000 bytes
                                              idempotency_key="k" * 256,
                                              attachments=[att(ordinal=i + 1) for i in range(20)]))
    assert r.created and len(r.message.attachments) == 20
    assert len(r.message.content_text.encode()) == 20000
    ctx.before = db.tenant_counts(ctx.tenant)  # this call was meant to write


OTHER_CASES = [
    ("UpsertContact", "missing tenant", lambda c: dict(channel_account_id=c.acct.channel_account_id,
                                                       external_user_id="U"), "tenant_id"),
    ("UpsertContact", "malformed account", lambda c: dict(tenant_id=c.tenant, channel_account_id="a-1",
                                                          external_user_id="U"), "channel_account_id"),
    ("UpsertContact", "missing external user", lambda c: dict(tenant_id=c.tenant,
                                                              channel_account_id=c.acct.channel_account_id),
     "external_user_id"),
    ("UpsertContact", "profile not JSON", lambda c: dict(tenant_id=c.tenant, channel_account_id=c.acct.channel_account_id,
                                                         external_user_id="U", profile_json="{oops"), "profile_json"),
    ("UpsertContact", "avatar url too long", lambda c: dict(tenant_id=c.tenant, channel_account_id=c.acct.channel_account_id,
                                                            external_user_id="U", avatar_url="https://x/" + "a" * 2048),
     "avatar_url"),
    ("UpsertConversation", "no thread and no user", lambda c: dict(tenant_id=c.tenant,
                                                                   channel_account_id=c.acct.channel_account_id,
                                                                   channel_timestamp_ms=TS), "external_user_id"),
    ("UpsertConversation", "no thread and no timestamp", lambda c: dict(tenant_id=c.tenant,
                                                                        channel_account_id=c.acct.channel_account_id,
                                                                        external_user_id="U"), "channel_timestamp_ms"),
    ("UpsertConversation", "malformed contact", lambda c: dict(tenant_id=c.tenant, channel_account_id=c.acct.channel_account_id,
                                                               thread_key="T", contact_id="c"), "contact_id"),
    ("UpsertConversation", "thread key too long", lambda c: dict(tenant_id=c.tenant, channel_account_id=c.acct.channel_account_id,
                                                                 thread_key="t" * 257), "thread_key"),
    ("PersistInbound", "missing tenant", lambda c: dict(messages=[c.inbound()]), "tenant_id"),
    ("PersistInbound", "no messages", lambda c: dict(tenant_id=c.tenant, messages=[]), "messages"),
    ("PersistInbound", "101 messages", lambda c: dict(tenant_id=c.tenant, messages=[c.inbound() for _ in range(101)]),
     "messages"),
    ("AddAttachments", "malformed message id", lambda c: dict(tenant_id=c.tenant, message_id="m", attachments=[att()]),
     "message_id"),
    ("AddAttachments", "no attachments", lambda c: dict(tenant_id=c.tenant, message_id=c.msg.message_id,
                                                        attachments=[]), "attachments"),
    ("AddAttachments", "21 attachments", lambda c: dict(tenant_id=c.tenant, message_id=c.msg.message_id,
                                                        attachments=[att(ordinal=i + 1) for i in range(21)]),
     "attachments"),
    ("AddAttachments", "kind missing", lambda c: dict(tenant_id=c.tenant, message_id=c.msg.message_id,
                                                      attachments=[att(kind="")]), "kind"),
    ("GetConversation", "malformed conversation", lambda c: dict(tenant_id=c.tenant, conversation_id="nope"),
     "conversation_id"),
    ("GetConversation", "missing tenant", lambda c: dict(conversation_id=c.conv.conversation_id), "tenant_id"),
    ("ListMessages", "missing tenant", lambda c: dict(conversation_id=c.conv.conversation_id), "tenant_id"),
    ("ListMessages", "malformed tenant", lambda c: dict(tenant_id="t", conversation_id=c.conv.conversation_id),
     "tenant_id"),
    ("ListMessages", "page size 201", lambda c: dict(tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
                                                     page_size=201), "page_size"),
    ("ListMessages", "page size negative", lambda c: dict(tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
                                                          page_size=-1), "page_size"),
    ("ListMessages", "garbled before", lambda c: dict(tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
                                                      before="%%%not-base64%%%"), "before"),
    ("ListMessages", "garbled after", lambda c: dict(tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
                                                     after="AAAA"), "after"),
    ("ListMessages", "forged after", lambda c: dict(
        tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
        after=base64.urlsafe_b64encode(('{"ts":0,"id":"%s","t":"%s","c":"%s"}' % (
            new_id(), c.tenant, c.conv.conversation_id)).encode()).decode().rstrip("=")), "after"),
    ("ListConversations", "missing tenant", lambda c: dict(), "tenant_id"),
    ("ListConversations", "malformed account filter", lambda c: dict(tenant_id=c.tenant, channel_account_id="x"),
     "channel_account_id"),
    ("ListConversations", "channel type out of range", lambda c: dict(tenant_id=c.tenant, channel_type=42),
     "channel_type"),
    ("ListConversations", "page size 201", lambda c: dict(tenant_id=c.tenant, page_size=201), "page_size"),
    ("ListConversations", "garbled token", lambda c: dict(tenant_id=c.tenant, page_token="!!"), "page_token"),
    ("RegisterChannelAccount", "channel type unspecified", lambda c: dict(tenant_id=c.tenant, external_account_id="X"),
     "channel_type"),
    ("RegisterChannelAccount", "missing external account", lambda c: dict(tenant_id=c.tenant,
                                                                          channel_type=pb.CHANNEL_TYPE_LINE),
     "external_account_id"),
    ("RegisterChannelAccount", "missing tenant", lambda c: dict(channel_type=pb.CHANNEL_TYPE_LINE,
                                                                external_account_id="X"), "tenant_id"),
    ("UpdateChannelCredentials", "no credentials", lambda c: dict(tenant_id=c.tenant,
                                                                  channel_account_id=c.acct.channel_account_id),
     "credentials"),
    ("UpdateChannelCredentials", "9 credentials", lambda c: dict(
        tenant_id=c.tenant, channel_account_id=c.acct.channel_account_id,
        credentials=[pb.SealedCredential(field=f"f{i}", key_id="k1", ciphertext=b"\x01" * 40) for i in range(9)]),
     "credentials"),
    ("GetChannelAccount", "malformed account", lambda c: dict(tenant_id=c.tenant, channel_account_id="a"),
     "channel_account_id"),
    ("ResolveChannelAccount", "nothing given", lambda c: dict(), "channel"),
    ("ResolveChannelAccount", "malformed account", lambda c: dict(channel_account_id="a"), "channel_account_id"),
    ("RecordChannelStatus", "status unspecified", lambda c: dict(tenant_id=c.tenant,
                                                                 channel_account_id=c.acct.channel_account_id),
     "status"),
    ("CreateOutbound", "missing idempotency key", lambda c: dict(tenant_id=c.tenant,
                                                                 conversation_id=c.conv.conversation_id,
                                                                 request_fingerprint="f", content_text="hi"),
     "idempotency_key"),
    ("CreateOutbound", "malformed conversation", lambda c: dict(tenant_id=c.tenant, conversation_id="c",
                                                                idempotency_key="k", content_text="hi"),
     "conversation_id"),
    ("CreateOutbound", "lease seconds too long", lambda c: dict(tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
                                                                idempotency_key="k", content_text="hi",
                                                                request_fingerprint="f",
                                                                lease_owner="w", lease_seconds=3601), "lease_seconds"),
    ("CreateOutbound", "content too long", lambda c: dict(tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
                                                          idempotency_key="k", request_fingerprint="f",
                                                          content_text="x" * 20001),
     "content_text"),
    # Without a fingerprint a reused key could not tell a different request from a retry.
    ("CreateOutbound", "missing fingerprint", lambda c: dict(tenant_id=c.tenant, conversation_id=c.conv.conversation_id,
                                                             idempotency_key="k", content_text="hi"),
     "request_fingerprint"),
    ("CompleteOutbound", "outcome unspecified", lambda c: dict(tenant_id=c.tenant, message_id=c.msg.message_id,
                                                               lease_owner="w"), "outcome"),
    ("CompleteOutbound", "error detail too long", lambda c: dict(
        tenant_id=c.tenant, message_id=c.msg.message_id, lease_owner="w", outcome=pb.OUTBOUND_OUTCOME_FAILED,
        error_category=pb.ERROR_CATEGORY_PROVIDER_ERROR, error_detail="d" * 513), "error_detail"),
    ("ClaimDueOutbound", "limit 0", lambda c: dict(channel_type=pb.CHANNEL_TYPE_LINE, limit=0, lease_owner="w",
                                                   lease_seconds=30), "limit"),
    ("ClaimDueOutbound", "limit 101", lambda c: dict(channel_type=pb.CHANNEL_TYPE_LINE, limit=101, lease_owner="w",
                                                     lease_seconds=30), "limit"),
    ("ClaimDueOutbound", "lease seconds 0", lambda c: dict(channel_type=pb.CHANNEL_TYPE_LINE, limit=1,
                                                           lease_owner="w", lease_seconds=0), "lease_seconds"),
    ("ClaimDueOutbound", "channel type unspecified", lambda c: dict(limit=1, lease_owner="w", lease_seconds=30),
     "channel_type"),
    ("ClaimDueOutbound", "missing lease owner", lambda c: dict(channel_type=pb.CHANNEL_TYPE_LINE, limit=1,
                                                               lease_seconds=30), "lease_owner"),
    ("ReconcileOutbound", "malformed message id", lambda c: dict(tenant_id=c.tenant, message_id="m",
                                                                 external_message_id="x"), "message_id"),
    ("ApplyReceipt", "status sent", lambda c: dict(tenant_id=c.tenant, channel_account_id=c.tenant,
                                                   thread_key="t", status=pb.MESSAGE_STATUS_SENT,
                                                   watermark_ms=1), "status"),
    ("ApplyReceipt", "missing thread key", lambda c: dict(tenant_id=c.tenant, channel_account_id=c.tenant,
                                                          status=pb.MESSAGE_STATUS_READ), "thread_key"),
    ("ApplyReceipt", "negative watermark", lambda c: dict(tenant_id=c.tenant, channel_account_id=c.tenant,
                                                          thread_key="t", status=pb.MESSAGE_STATUS_READ,
                                                          watermark_ms=-1), "watermark_ms"),
]


@pytest.mark.parametrize("method,case,fields,field", OTHER_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in OTHER_CASES])
def test_other_rpcs_invalid(ctx, method, case, fields, field):
    expect_invalid(getattr(ctx.b.api, method), field, **fields(ctx))


def test_list_messages_with_two_cursor_modes_is_invalid(ctx):
    r = ctx.b.api.ListMessages(tenant_id=ctx.tenant, conversation_id=ctx.conv.conversation_id)
    cur = r.after_cursor
    assert cur
    for extra in (dict(before=r.before_cursor, after=cur), dict(after=cur, from_oldest=True),
                  dict(before=r.before_cursor, from_oldest=True)):
        err = rpc_error(ctx.b.api.ListMessages, tenant_id=ctx.tenant,
                        conversation_id=ctx.conv.conversation_id, **extra)
        assert_code(err, grpc.StatusCode.INVALID_ARGUMENT)


def _tamper(cursor, pos):
    """Change one base64 character at pos (stays within both base64 alphabets)."""
    ch = cursor[pos]
    repl = "B" if ch != "B" else "C"
    return cursor[:pos] + repl + cursor[pos + 1:]


def test_forged_cursor_is_rejected(api):
    b = Builder(api)
    conv = b.conversation(b.account())
    for i in range(5):
        b.message(conv, TS + i)
    r = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id, page_size=2)
    cur = r.before_cursor
    assert len(cur) >= 16, f"cursor suspiciously short: {cur!r}"
    # Positive control: the genuine cursor works.
    ok = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id, before=cur, page_size=2)
    assert len(ok.messages) == 2
    body = cur.rstrip("=")
    for pos in sorted({2, len(body) // 3, len(body) // 2, len(body) - 3}):
        forged = _tamper(cur, pos)
        err = rpc_error(b.api.ListMessages, tenant_id=b.tenant, conversation_id=conv.conversation_id,
                        before=forged, page_size=2)
        assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="before")
    # A genuine cursor spliced with random bytes in the payload part.
    raw = cur.rstrip("=")
    spliced = raw[:4] + base64.urlsafe_b64encode(b"\x00" * 9).decode() + raw[16:]
    err = rpc_error(b.api.ListMessages, tenant_id=b.tenant, conversation_id=conv.conversation_id,
                    before=spliced, page_size=2)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="before")


def test_cursor_of_another_conversation_is_rejected(api):
    b = Builder(api)
    acct = b.account()
    c1, c2 = b.conversation(acct), b.conversation(acct)
    for i in range(3):
        b.message(c1, TS + i)
        b.message(c2, TS + i)
    cur = b.api.ListMessages(tenant_id=b.tenant, conversation_id=c1.conversation_id, page_size=1).before_cursor
    err = rpc_error(b.api.ListMessages, tenant_id=b.tenant, conversation_id=c2.conversation_id, before=cur)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="before")


def test_upsert_conversation_contact_of_another_account_is_rejected(api, db):
    b = Builder(api)
    a1, a2 = b.account(), b.account()
    foreign_contact = b.contact(a2, "U-other")
    before = db.tenant_counts(b.tenant)
    err = rpc_error(b.api.UpsertConversation, tenant_id=b.tenant, channel_account_id=a1.channel_account_id,
                    thread_key="T-x", contact_id=foreign_contact.contact_id)
    assert err.code() == grpc.StatusCode.NOT_FOUND, err
    assert db.tenant_counts(b.tenant) == before


def test_persist_inbound_batch_with_one_invalid_item_writes_nothing(ctx):
    good = [ctx.inbound(external_user_id=f"U-b{i}", thread_key=f"T-b{i}") for i in range(3)]
    bad = ctx.inbound(external_user_id="U-bad", thread_key="T-bad", content_text="x" * 20001)
    err = rpc_error(ctx.b.api.PersistInbound, tenant_id=ctx.tenant, messages=good + [bad])
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="content_text")


BATCH_BAD_ITEMS = [
    (dict(external_message_id=""), "external_message_id"),
    (dict(external_user_id=""), "external_user_id"),
    (dict(channel_account_id=""), "channel_account_id"),
    (dict(channel_account_id="not-uuid"), "channel_account_id"),
    (dict(content_type=pb.CONTENT_TYPE_UNSPECIFIED), "content_type"),
    (dict(channel_timestamp_ms=0), "channel_timestamp_ms"),
    (dict(content_struct_json="[1,"), "content_struct_json"),
    (dict(thread_key="", channel_timestamp_ms=-1), "channel_timestamp_ms"),
    (dict(contact_profile_json="nope"), "contact_profile_json"),
    (dict(attachments=[pb.AttachmentInput(kind="")]), "kind"),
    (dict(direction=7), "direction"),
]


@pytest.mark.parametrize("bad,field", BATCH_BAD_ITEMS, ids=[",".join(b[0]) for b in BATCH_BAD_ITEMS])
def test_persist_inbound_batch_invalid_item_variants_write_nothing(ctx, bad, field):
    items = [ctx.inbound(external_user_id="U-1", thread_key="T-1"),
             ctx.inbound(**bad),
             ctx.inbound(external_user_id="U-2", thread_key="T-2")]
    expect_invalid(ctx.b.api.PersistInbound, field, tenant_id=ctx.tenant, messages=items)


def test_persist_inbound_batch_failing_late_in_the_database_writes_nothing(ctx):
    """One item names a channel account that does not exist (only the database can tell): the
    other items, already written inside the transaction, must be rolled back.

    The service writes a batch in lock order (channel account id, thread key, key), not request
    order. The ghost account id is the greatest UUID, so the ghost item is written last whatever
    id the real account got; a random ghost id would sort first now and then (the real id is a
    UUIDv7, 019x...) and the test would pass without any write to roll back."""
    ghost = "ffffffff-ffff-4fff-bfff-ffffffffffff"
    assert ghost > ctx.acct.channel_account_id
    items = [ctx.inbound(channel_account_id=ghost, external_user_id="U-ghost", thread_key="T-ghost")]
    items += [ctx.inbound(external_user_id=f"U-l{i}", thread_key=f"T-l{i}") for i in range(3)]
    err = rpc_error(ctx.b.api.PersistInbound, tenant_id=ctx.tenant, messages=items)
    assert_code(err, grpc.StatusCode.NOT_FOUND, field="channel_account_id")


def test_persist_inbound_duplicate_key_inside_one_batch_is_one_message(ctx, db):
    """Two items with the same key in one batch (a provider repeating an event in one POST)."""
    a = ctx.inbound(external_message_id="dup-in-batch", external_user_id="U-d", thread_key="T-d")
    results = ctx.b.api.PersistInbound(tenant_id=ctx.tenant, messages=[a, a]).results
    assert results[0].message_id == results[1].message_id
    assert [r.created for r in results] == [True, False]
    ctx.before = db.tenant_counts(ctx.tenant)


def test_duplicate_attachment_ordinals_are_refused(b, db):
    """Two attachments in one place would silently lose one of them."""
    acct = b.account()
    conv = b.conversation(acct, "U-dup-ordinals")
    before = db.tenant_counts(b.tenant)
    req = b.message_request(conv, now_ms(), key="att-dup")
    req.attachments.add(kind="image", url="https://x/1", ordinal=1)
    req.attachments.add(kind="image", url="https://x/2", ordinal=0)  # index 1: ordinal 1 again
    err = rpc_error(b.api.InsertMessage, req)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="attachments[1].ordinal")
    assert db.tenant_counts(b.tenant) == before
