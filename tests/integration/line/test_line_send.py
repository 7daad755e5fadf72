"""Connector/SendText for LINE: success path, idempotency, input validation."""
import hashlib
import struct
import uuid

import grpc
import pytest

import harness
from harness import UUID_RE, assert_code, pb, rpc_error, run_concurrently
from line_harness import cpb, utf16_units


def _only(items, what):
    assert len(items) == 1, f"expected exactly one {what}, got {len(items)}: {items}"
    return items[0]


def test_send_success_is_stored_sent_and_linked(line, db):
    conv, user = line.conversation()
    before = line.get_conversation(conv.conversation_id)
    text = "Hello from Omnichat \u3053\u3093\u306b\u3061\u306f \U0001F44B"
    key = line.key()
    m = line.send(conv, text, key=key, sender_id="agent-42", sender_display_name="Ada")

    # The reply carries the persisted message.
    assert m.status == pb.MESSAGE_STATUS_SENT, m
    assert m.error_category == pb.ERROR_CATEGORY_UNSPECIFIED, m
    assert UUID_RE.match(m.message_id)
    assert m.tenant_id == line.tenant
    assert m.conversation_id == conv.conversation_id
    assert m.channel_account_id == line.account_id
    assert m.direction == pb.DIRECTION_OUTBOUND
    assert m.idempotency_key == key
    assert m.sender_type == pb.SENDER_TYPE_AGENT
    assert m.sender_id == "agent-42" and m.sender_display_name == "Ada"
    assert m.content_type == pb.CONTENT_TYPE_TEXT and m.content_text == text
    assert m.attempts == 1, m
    assert UUID_RE.match(m.provider_retry_key), m.provider_retry_key

    # The simulator saw exactly one push, with our token, retry key, recipient and text.
    req = _only(line.push_requests(), "push request")
    assert req["headers"]["authorization"] == "Bearer " + line.token
    assert req["retry_key"].lower() == m.provider_retry_key.lower()
    assert req["body"] == {"to": user, "messages": [{"type": "text", "text": text}]}
    d = _only(line.deliveries(), "delivery")
    assert d["to"] == user and d["texts"] == [text]
    assert m.external_message_id == d["sentMessages"][0]["id"], (m.external_message_id, d)

    # Persistence agrees: the timeline shows it, the conversation counts it.
    stored = _only(line.messages(conv), "message in the timeline")
    assert stored.message_id == m.message_id
    assert stored.status == pb.MESSAGE_STATUS_SENT
    assert stored.external_message_id == m.external_message_id
    after = line.get_conversation(conv.conversation_id)
    assert after.message_count == before.message_count + 1
    assert after.last_message_preview == text

    # And so does the database itself (superuser, no RLS).
    row = _only(line.db_messages(), "row")
    assert row["id"] == m.message_id
    assert row["conversation_id"] == conv.conversation_id
    assert row["channel_account_id"] == line.account_id
    assert row["direction"] == "outbound" and row["status"] == "sent"
    assert row["external_message_id"] == m.external_message_id
    assert row["provider_retry_key"] == m.provider_retry_key.lower()
    assert row["content_text"] == text and row["sender_type"] == "agent"
    # The channel account is (still) active with a recorded success.
    acct = line.get_account()
    assert acct.status == pb.CHANNEL_STATUS_ACTIVE
    assert acct.last_success_at_ms > 0


def test_connect_channel_verifies_token_and_stores_bot_id(line, line_sim):
    acct = line.account
    assert acct.tenant_id == line.tenant
    assert acct.channel_type == pb.CHANNEL_TYPE_LINE
    assert acct.external_account_id == line.bot_user_id
    assert acct.status == pb.CHANNEL_STATUS_ACTIVE
    assert line.webhook_path == f"/webhooks/line/{acct.channel_account_id}"
    # Verified with GET /v2/bot/info using the token.
    infos = [r for r in line_sim.requests("/v2/bot/info")
             if r["headers"].get("authorization") == "Bearer " + line.token]
    assert infos, "ConnectChannel did not call GET /v2/bot/info with the token"
    # Sealed credentials are stored; the plaintext is not part of them.
    stored = line.get_account()
    assert stored.credentials, "no sealed credentials stored"
    for c in stored.credentials:
        assert line.token.encode() not in c.ciphertext and line.secret.encode() not in c.ciphertext
    # Reply never carries plaintext credentials.
    blob = acct.SerializeToString()
    assert line.token.encode() not in blob and line.secret.encode() not in blob


def test_connect_channel_with_invalid_token_is_unauthenticated(conn, line_sim, db):
    tenant = harness.new_id()
    err = rpc_error(conn.api.ConnectChannel, tenant_id=tenant,
                    access_token="tok-unknown-" + uuid.uuid4().hex, channel_secret="s" * 32)
    assert_code(err, grpc.StatusCode.UNAUTHENTICATED)
    assert db.tenant_counts(tenant)["channel_accounts"] == 0


def test_same_key_twice_is_one_message_and_one_push(line):
    conv, _ = line.conversation()
    key = line.key()
    m1 = line.send(conv, "once", key=key)
    m2 = line.send(conv, "once", key=key)
    assert m1.status == pb.MESSAGE_STATUS_SENT
    assert m2.message_id == m1.message_id
    assert m2.status == pb.MESSAGE_STATUS_SENT
    assert m2.external_message_id == m1.external_message_id
    assert len(line.db_messages()) == 1
    assert len(line.push_requests()) == 1, line.push_requests()
    assert len(line.deliveries()) == 1


def test_twenty_concurrent_calls_with_one_key(line):
    conv, _ = line.conversation()
    req = line.send_request(conv, "concurrent hello", key=line.key())
    results = run_concurrently(lambda: line.conn.api.SendText(req), 20)
    ids = {r.message.message_id for r in results}
    assert len(ids) == 1, f"20 calls with one key gave {len(ids)} messages: {ids}"
    mid = ids.pop()
    final = line.wait_status(conv, mid, pb.MESSAGE_STATUS_SENT)
    rows = line.db_messages()
    assert len(rows) == 1, rows
    assert len(line.deliveries()) == 1, line.deliveries()
    assert len(line.push_requests()) == 1, line.push_requests()
    assert final.external_message_id == line.deliveries()[0]["sentMessages"][0]["id"]
    # Every reply is the same message, in a state consistent with one in-flight send.
    for r in results:
        assert r.message.status in (pb.MESSAGE_STATUS_SENT, pb.MESSAGE_STATUS_PENDING), r


def test_same_key_different_text_is_already_exists(line):
    conv, _ = line.conversation()
    key = line.key()
    m1 = line.send(conv, "original text", key=key)
    err = rpc_error(line.send, conv, "a different text", key=key)
    assert_code(err, grpc.StatusCode.ALREADY_EXISTS)
    rows = line.db_messages()
    assert len(rows) == 1 and rows[0]["content_text"] == "original text"
    assert rows[0]["id"] == m1.message_id
    assert len(line.push_requests()) == 1


def test_same_key_other_conversation_is_already_exists(line):
    conv1, _ = line.conversation()
    conv2, _ = line.conversation()
    key = line.key()
    line.send(conv1, "same text", key=key)
    err = rpc_error(line.send, conv2, "same text", key=key)
    assert_code(err, grpc.StatusCode.ALREADY_EXISTS)
    assert len(line.db_messages()) == 1
    assert len(line.push_requests()) == 1


# ---------------------------------------------------------------------------------------------
# Input checks: nothing stored, nothing pushed


def _assert_nothing_happened(line):
    assert line.db_messages() == [], line.db_messages()
    assert line.push_requests("*") == [], line.push_requests("*")


def test_other_tenants_conversation_is_not_found(line, line_factory):
    other = line_factory()
    conv, _ = other.conversation()
    err = rpc_error(line.send, conv, "hi", tenant_id=line.tenant)
    assert_code(err, grpc.StatusCode.NOT_FOUND)
    # Indistinguishable from a conversation that does not exist.
    err2 = rpc_error(line.send, harness.new_id(), "hi")
    assert_code(err2, grpc.StatusCode.NOT_FOUND)
    assert other.db_messages() == []
    _assert_nothing_happened(line)


def test_facebook_conversation_is_failed_precondition(line, api):
    fb = api.RegisterChannelAccount(tenant_id=line.tenant,
                                    channel_type=pb.CHANNEL_TYPE_FACEBOOK,
                                    external_account_id="page-" + uuid.uuid4().hex[:16],
                                    display_name="FB Page").channel_account
    psid = str(uuid.uuid4().int)[:16]
    conv = api.UpsertConversation(tenant_id=line.tenant,
                                  channel_account_id=fb.channel_account_id,
                                  thread_key=f"{fb.external_account_id}:{psid}").conversation
    err = rpc_error(line.send, conv, "hello facebook?")
    assert_code(err, grpc.StatusCode.FAILED_PRECONDITION)
    _assert_nothing_happened(line)


@pytest.mark.parametrize("text,label", [
    ("", "empty"),
    ("\U0001F600" * 2500 + "a", "5001 UTF-16 units"),
    ("\U0001F600" * 2501, "2501 emoji = 5002 units"),
    ("a" * 5001, "5001 ASCII"),
])
def test_invalid_text_is_invalid_argument(line, text, label):
    conv, _ = line.conversation()
    err = rpc_error(line.send, conv, text)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="text")
    assert err.details().startswith("text"), f"{label}: details should start with the field: {err.details()!r}"
    _assert_nothing_happened(line)


def _raw_send_request(tenant, conversation_id, key, text_bytes):
    base = cpb.SendTextRequest(tenant_id=tenant, conversation_id=conversation_id,
                               idempotency_key=key, sender_id="agent-7").SerializeToString()
    n = len(text_bytes)
    varint = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            varint.append(b | 0x80)
        else:
            varint.append(b)
            break
    return base + b"\x1a" + bytes(varint) + text_bytes  # field 3 (text), wire type 2


def test_invalid_utf8_text_is_invalid_argument(line):
    conv, _ = line.conversation()
    payload = _raw_send_request(line.tenant, conv.conversation_id, line.key(),
                                b"caf\xc3 \xff\xfe broken")
    # Sanity: the python client would refuse to build this.
    with pytest.raises(Exception):
        cpb.SendTextRequest.FromString(payload)
    try:
        r = line.conn.api.raw("SendText", payload, cpb.SendTextResponse)
    except grpc.RpcError as e:
        assert_code(e, grpc.StatusCode.INVALID_ARGUMENT)
    else:
        pytest.fail(f"invalid UTF-8 text was accepted: {r}")
    _assert_nothing_happened(line)
    assert line.conn.alive()


@pytest.mark.parametrize("text", ["\U0001F600" * 2500, "a" * 5000, "\u3042" * 5000],
                         ids=["2500-emoji", "5000-ascii", "5000-bmp"])
def test_exactly_5000_units_is_sent(line, text):
    assert utf16_units(text) == 5000
    conv, _ = line.conversation()
    m = line.send(conv, text)
    assert m.status == pb.MESSAGE_STATUS_SENT, m
    assert line.deliveries()[0]["texts"] == [text]


@pytest.mark.parametrize("field,value", [
    ("idempotency_key", ""),
    ("idempotency_key", "k" * 257),
    ("sender_id", ""),
    ("tenant_id", "not-a-uuid"),
    ("tenant_id", ""),
    ("conversation_id", "not-a-uuid"),
    ("conversation_id", ""),
])
def test_missing_or_malformed_fields_are_invalid_argument(line, field, value):
    conv, _ = line.conversation()
    req = line.send_request(conv, "hello")
    setattr(req, field, value)
    err = rpc_error(line.conn.api.SendText, req)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field=field)
    _assert_nothing_happened(line)


def test_key_of_256_bytes_is_accepted(line):
    conv, _ = line.conversation()
    key = "k" * 224 + uuid.uuid4().hex
    assert len(key.encode()) == 256
    m = line.send(conv, "long key", key=key)
    assert m.status == pb.MESSAGE_STATUS_SENT and m.idempotency_key == key


def test_group_conversation_pushes_to_group_id(line, api):
    group = "C" + uuid.uuid4().hex
    conv = api.UpsertConversation(tenant_id=line.tenant, channel_account_id=line.account_id,
                                  thread_key=group).conversation
    m = line.send(conv, "hello group")
    assert m.status == pb.MESSAGE_STATUS_SENT, m
    assert line.push_requests()[0]["body"]["to"] == group


def _fingerprint(conversation_id, text, sender_id, sender_display_name):
    """The connector's request fingerprint: SHA-256 over 8-byte big-endian length-prefixed
    fields, the conversation id lowercased."""
    h = hashlib.sha256()
    for f in (conversation_id.lower(), text, sender_id, sender_display_name):
        b = f.encode()
        h.update(struct.pack(">Q", len(b)) + b)
    return h.hexdigest()


def test_request_fingerprint_is_sent_and_stored(line, db):
    conv, _ = line.conversation()
    m = line.send(conv, "fingerprinted", sender_id="agent-9", sender_display_name="Nine")
    fp = db.scalar("SELECT request_fingerprint FROM omnichat.messages WHERE tenant_id = "
                   f"{harness.sql_lit(line.tenant)} AND id = {harness.sql_lit(m.message_id)}")
    assert fp == _fingerprint(conv.conversation_id, "fingerprinted", "agent-9", "Nine")
    # The same key with another request is refused, and nothing is pushed for it.
    err = rpc_error(line.send, conv, "another text", key=m.idempotency_key,
                    sender_id="agent-9", sender_display_name="Nine")
    assert_code(err, grpc.StatusCode.ALREADY_EXISTS)
    assert len(line.push_requests()) == 1


def test_account_registered_without_credentials(line_factory, conn, api):
    """RegisterChannelAccount alone leaves an AUTH_FAILED account without credentials (as a
    ConnectChannel that failed half-way would): sends fail fast without calling LINE, the
    webhook refuses without crashing; ConnectChannel then completes it and says ACTIVE."""
    ch = line_factory(connect=False)
    acc = api.RegisterChannelAccount(tenant_id=ch.tenant, channel_type=pb.CHANNEL_TYPE_LINE,
                                     external_account_id=ch.bot_user_id,
                                     display_name="half connected").channel_account
    assert acc.status == pb.CHANNEL_STATUS_AUTH_FAILED and not acc.credentials, acc
    ch.account = acc
    conv, user = ch.conversation()

    m = ch.send(conv, "no credentials yet")
    assert m.status == pb.MESSAGE_STATUS_FAILED, m
    assert m.error_category == pb.ERROR_CATEGORY_AUTH_ERROR, m
    # The account check stopped it, before the missing token could ("has no access token").
    assert m.error_detail == "channel account needs new credentials", m
    assert m.attempts == 0, "no provider call, so no attempt"
    assert ch.push_requests() == [] and ch.deliveries() == []

    body = {"destination": ch.bot_user_id, "events": []}
    status, _ = conn.webhook(ch.account_id, body, secret=ch.secret)
    assert status == 401, status
    assert conn.alive()

    r = ch.connect()
    assert r.channel_account.channel_account_id == acc.channel_account_id
    assert r.channel_account.status == pb.CHANNEL_STATUS_ACTIVE, r.channel_account
    assert not r.channel_account.credentials
    m2 = ch.send(conv, "now connected")
    assert m2.status == pb.MESSAGE_STATUS_SENT, m2
    assert m2.attempts == 1
    assert conn.webhook(ch.account_id, body, secret=ch.secret)[0] == 200
