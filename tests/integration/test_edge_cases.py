"""Edge cases where PostgreSQL is stricter than protobuf (NUL bytes, invalid UTF-8, \\u0000 in JSON,
timestamps beyond PostgreSQL's range), out-of-range enum values, races across tenants, and
cancelled calls. Malformed input must be INVALID_ARGUMENT naming the field (or, where the value
is storable, be stored exactly) — never INTERNAL — and nothing may be written on error."""
import concurrent.futures
import json
import threading

import grpc
import pytest

from harness import RPC_TIMEOUT, Builder, assert_code, pb, rpc_error, run_concurrently

TS = 1_700_000_000_000


def ok_or_invalid(fn, field, **kw):
    """Returns the response, or None after checking the error is INVALID_ARGUMENT naming field."""
    try:
        return fn(**kw)
    except grpc.RpcError as e:
        assert_code(e, grpc.StatusCode.INVALID_ARGUMENT, field=field)
        return None


def stored_message(b, conv, message_id):
    """The message as a later read sees it (not the write's own reply)."""
    msgs = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id,
                              page_size=200).messages
    found = [m for m in msgs if m.message_id == message_id]
    assert len(found) == 1, f"accepted message {message_id} is not in its conversation"
    return found[0]


@pytest.fixture
def conv(b, db):
    c = b.conversation(b.account(), "T-edge")
    yield c


def msg_fields(b, conv, **over):
    base = dict(tenant_id=b.tenant, conversation_id=conv.conversation_id, direction=pb.DIRECTION_INBOUND,
                idempotency_key=b.uniq("k"), sender_type=pb.SENDER_TYPE_CONTACT,
                content_type=pb.CONTENT_TYPE_TEXT, content_text="ok", channel_timestamp_ms=TS)
    base.update(over)
    return base


@pytest.mark.parametrize("field,value", [
    ("content_text", "before\x00after"),
    ("idempotency_key", "key\x00nul"),
    ("sender_display_name", "Ann\x00"),
    ("external_message_id", "mid\x00"),
])
def test_nul_character_in_strings(b, conv, db, field, value):
    before = db.tenant_counts(b.tenant)
    r = ok_or_invalid(b.api.InsertMessage, field, **msg_fields(b, conv, **{field: value}))
    if r is None:
        assert db.tenant_counts(b.tenant) == before
    else:
        assert getattr(r.message, field) == value, "the reply differs from the value given"
        assert getattr(stored_message(b, conv, r.message.message_id), field) == value, \
            "stored value differs from the one given"


def test_json_with_escaped_nul_in_content_struct(b, conv, db):
    before = db.tenant_counts(b.tenant)
    doc = '{"note": "a\\u0000b"}'
    r = ok_or_invalid(b.api.InsertMessage, "content_struct_json", **msg_fields(b, conv, content_struct_json=doc))
    if r is None:
        assert db.tenant_counts(b.tenant) == before
    else:
        assert json.loads(r.message.content_struct_json) == json.loads(doc)
        stored = stored_message(b, conv, r.message.message_id)
        assert json.loads(stored.content_struct_json) == json.loads(doc)


def test_json_with_escaped_nul_in_profile(b, db):
    acct = b.account()
    before = db.tenant_counts(b.tenant)
    r = ok_or_invalid(b.api.UpsertContact, "profile_json", tenant_id=b.tenant,
                      channel_account_id=acct.channel_account_id, external_user_id="U",
                      profile_json='{"x": "\\u0000"}')
    if r is None:
        assert db.tenant_counts(b.tenant) == before
    else:
        assert json.loads(r.contact.profile_json) == {"x": "\x00"}
        again = b.api.UpsertContact(tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                                    external_user_id="U").contact
        assert again.contact_id == r.contact.contact_id
        assert json.loads(again.profile_json) == {"x": "\x00"}, "stored profile differs"


def _raw_call(service, method, payload):
    mc = service.channel.unary_unary(f"/omnichat.persistence.v1.Persistence/{method}",
                                     request_serializer=lambda x: x,
                                     response_deserializer=getattr(pb, method + "Response").FromString)
    return mc(payload, timeout=RPC_TIMEOUT)


@pytest.mark.parametrize("field", ["content_text", "idempotency_key", "sender_display_name"])
def test_invalid_utf8_in_strings_is_invalid_argument(b, conv, db, service, field):
    """protobuf-c does not check UTF-8; PostgreSQL refuses it. Bytes patched on the wire."""
    marker = "QQQQQQQQ"
    raw = pb.InsertMessageRequest(**msg_fields(b, conv, **{field: marker})).SerializeToString()
    assert raw.count(marker.encode()) == 1
    raw = raw.replace(marker.encode(), b"\xff\xfe\xc3(QQQQ")
    before = db.tenant_counts(b.tenant)
    with pytest.raises(grpc.RpcError) as e:
        _raw_call(service, "InsertMessage", raw)
    assert_code(e.value, grpc.StatusCode.INVALID_ARGUMENT, field=field)
    assert db.tenant_counts(b.tenant) == before


def test_invalid_utf8_in_persist_inbound_writes_nothing(b, db, service):
    acct = b.account()
    items = [b.inbound(acct, TS, user="U-1", thread_key="T-1"),
             b.inbound(acct, TS, user="U-2", thread_key="T-2", text="QQQQQQQQ")]
    raw = pb.PersistInboundRequest(tenant_id=b.tenant, messages=items).SerializeToString()
    raw = raw.replace(b"QQQQQQQQ", b"\xff\xfe\xc3(QQQQ")
    before = db.tenant_counts(b.tenant)
    with pytest.raises(grpc.RpcError) as e:
        _raw_call(service, "PersistInbound", raw)
    assert_code(e.value, grpc.StatusCode.INVALID_ARGUMENT, field="content_text")
    assert db.tenant_counts(b.tenant) == before


@pytest.mark.parametrize("ts", [9_000_000_000_000_000, 2**63 - 1, 253_402_300_800_000 * 1000])
def test_timestamp_beyond_postgres_range(b, conv, db, ts):
    before = db.tenant_counts(b.tenant)
    r = ok_or_invalid(b.api.InsertMessage, "channel_timestamp_ms", **msg_fields(b, conv, channel_timestamp_ms=ts))
    if r is None:
        assert db.tenant_counts(b.tenant) == before
    else:
        assert r.message.channel_timestamp_ms == ts
        assert stored_message(b, conv, r.message.message_id).channel_timestamp_ms == ts


def test_fallback_conversation_with_huge_timestamp(b, db):
    acct = b.account()
    before = db.tenant_counts(b.tenant)
    r = ok_or_invalid(b.api.UpsertConversation, "channel_timestamp_ms", tenant_id=b.tenant,
                      channel_account_id=acct.channel_account_id, external_user_id="U",
                      channel_timestamp_ms=2**63 - 1)
    if r is None:
        assert db.tenant_counts(b.tenant) == before
    else:
        got = b.api.GetConversation(tenant_id=b.tenant,
                                    conversation_id=r.conversation.conversation_id).conversation
        assert got.last_activity_at_ms == 2**63 - 1, "stored timestamp differs from the one given"


def test_retry_with_huge_next_attempt_at(b, conv):
    m = b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv.conversation_id, idempotency_key="k",
                             request_fingerprint="f", content_text="x", lease_owner="w",
                             lease_seconds=30).message
    r = ok_or_invalid(b.api.CompleteOutbound, "next_attempt_at_ms", tenant_id=b.tenant,
                      message_id=m.message_id, lease_owner="w", outcome=pb.OUTBOUND_OUTCOME_RETRY,
                      error_category=pb.ERROR_CATEGORY_NETWORK_ERROR, next_attempt_at_ms=2**63 - 1)
    if r is not None:
        assert r.message.status == pb.MESSAGE_STATUS_PENDING
        assert r.message.next_attempt_at_ms == 2**63 - 1
        stored = stored_message(b, conv, m.message_id)
        assert (stored.status, stored.next_attempt_at_ms) == (pb.MESSAGE_STATUS_PENDING, 2**63 - 1)


@pytest.mark.parametrize("field", ["sender_type", "content_type", "status"])
def test_out_of_range_enum_values_in_insert_message(b, conv, db, field):
    before = db.tenant_counts(b.tenant)
    err = rpc_error(b.api.InsertMessage, **msg_fields(b, conv, **{field: 77}))
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field=field)
    assert db.tenant_counts(b.tenant) == before


def test_out_of_range_enums_elsewhere(b, conv):
    acct = b.account()
    assert_code(rpc_error(b.api.RecordChannelStatus, tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                          status=pb.CHANNEL_STATUS_AUTH_FAILED, error_category=99),
                grpc.StatusCode.INVALID_ARGUMENT, field="error_category")
    assert_code(rpc_error(b.api.ClaimDueOutbound, channel_type=9, limit=1, lease_owner="w", lease_seconds=5),
                grpc.StatusCode.INVALID_ARGUMENT, field="channel_type")
    assert_code(rpc_error(b.api.RegisterChannelAccount, tenant_id=b.tenant, channel_type=9,
                          external_account_id="x"), grpc.StatusCode.INVALID_ARGUMENT, field="channel_type")
    m = b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv.conversation_id, idempotency_key="k",
                             request_fingerprint="f", content_text="x", lease_owner="w", lease_seconds=30).message
    assert_code(rpc_error(b.api.CompleteOutbound, tenant_id=b.tenant, message_id=m.message_id, lease_owner="w",
                          outcome=pb.OUTBOUND_OUTCOME_FAILED, error_category=99),
                grpc.StatusCode.INVALID_ARGUMENT, field="error_category")
    assert_code(rpc_error(b.api.CompleteOutbound, tenant_id=b.tenant, message_id=m.message_id, lease_owner="w",
                          outcome=9), grpc.StatusCode.INVALID_ARGUMENT, field="outcome")


def test_two_tenants_racing_for_one_external_account(api, db):
    """Exactly one tenant gets the account; the others get ALREADY_EXISTS."""
    ext = "race-" + Builder(api).uniq("oa")
    builders = [Builder(api) for _ in range(8)]
    barrier = threading.Barrier(len(builders))

    def register(bl):
        barrier.wait(timeout=30)
        try:
            return bl.api.RegisterChannelAccount(tenant_id=bl.tenant, channel_type=pb.CHANNEL_TYPE_LINE,
                                                 external_account_id=ext).channel_account.tenant_id
        except grpc.RpcError as e:
            return e.code()

    with concurrent.futures.ThreadPoolExecutor(len(builders)) as ex:
        outcomes = list(ex.map(register, builders))
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1, outcomes
    assert all(o == grpc.StatusCode.ALREADY_EXISTS for o in outcomes if not isinstance(o, str)), outcomes
    assert db.count("SELECT count(*) FROM omnichat.channel_accounts "
                    f"WHERE external_account_id = '{ext}' AND status <> 'disabled'") == 1


def test_update_credentials_with_8_is_accepted(b):
    acct = b.account()
    creds = [pb.SealedCredential(field=f"f{i}", key_id="k", ciphertext=bytes([i + 1]) * 40) for i in range(8)]
    r = b.api.UpdateChannelCredentials(tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                                       credentials=creds)
    assert sorted(c.field for c in r.channel_account.credentials) == [f"f{i}" for i in range(8)]


def test_cancelled_and_expired_calls_do_not_harm_the_service(b, conv, api):
    """200 calls with a deadline too short to finish; then everything still works."""
    req = pb.ListMessagesRequest(tenant_id=b.tenant, conversation_id=conv.conversation_id)
    for i in range(5):
        b.message(conv, TS + i)

    def short(_):
        try:
            api.ListMessages(req, timeout=0.001)
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        codes = set(ex.map(short, range(200)))
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}, codes
    results = run_concurrently(api.ListMessages, 40, req)
    assert all(len(r.messages) == 5 for r in results)


def test_idempotency_keys_differing_after_a_nul_are_two_messages(b, conv, db):
    """If NUL bytes were dropped silently, "k\\0a" and "k\\0b" would collide and the second,
    different message would be reported as a duplicate and lost."""
    r1 = ok_or_invalid(b.api.InsertMessage, "idempotency_key",
                       **msg_fields(b, conv, idempotency_key="k\x00a", content_text="first"))
    r2 = ok_or_invalid(b.api.InsertMessage, "idempotency_key",
                       **msg_fields(b, conv, idempotency_key="k\x00b", content_text="second"))
    assert (r1 is None) == (r2 is None), "one key with a NUL was accepted, the other refused"
    if r1 is not None:
        assert r2.created, "a different key was treated as a duplicate: the second message is lost"
        assert r1.message.message_id != r2.message.message_id
