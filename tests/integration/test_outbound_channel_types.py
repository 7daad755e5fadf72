"""One connector serves several channel types: CreateOutbound checks the conversation's channel
type itself (no GetConversation round trip for the connector), and ClaimDueOutbound claims the
due messages of a list of types (the old single field still works)."""
import grpc

from harness import assert_code, now_ms, pb, rpc_error, sql_lit

FB, IG, LINE = pb.CHANNEL_TYPE_FACEBOOK, pb.CHANNEL_TYPE_INSTAGRAM, pb.CHANNEL_TYPE_LINE


def create(b, conv, key, **kw):
    return b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv.conversation_id,
                                idempotency_key=key, request_fingerprint="fp-" + key,
                                sender_id="agent-1", content_text="reply", lease_owner="creator",
                                lease_seconds=60, **kw)


def make_due(b, conv, key):
    m = create(b, conv, key).message
    b.api.CompleteOutbound(tenant_id=b.tenant, message_id=m.message_id, lease_owner="creator",
                           outcome=pb.OUTBOUND_OUTCOME_RETRY,
                           error_category=pb.ERROR_CATEGORY_NETWORK_ERROR,
                           next_attempt_at_ms=now_ms() - 1000)
    return m.message_id


def drain(api, types):
    """Lease every currently due message of these types for an hour, out of the way."""
    for _ in range(100):
        if not api.ClaimDueOutbound(channel_types=types, limit=100, lease_owner="drain",
                                    lease_seconds=3600).claimed:
            return
    raise AssertionError("could not drain due messages")


def test_create_outbound_checks_the_channel_types(b, db):
    conv = b.conversation(b.account(IG), "IGSID-types")
    err = rpc_error(create, b, conv, "k1", channel_types=[LINE])
    assert_code(err, grpc.StatusCode.FAILED_PRECONDITION)
    assert "instagram" in err.details() and "line" in err.details(), err.details()
    assert db.count("SELECT count(*) FROM omnichat.messages "
                    f"WHERE tenant_id = {sql_lit(b.tenant)}") == 0
    assert create(b, conv, "k1", channel_types=[FB, IG]).created
    assert create(b, conv, "k2").created  # no list: no check, as before
    err = rpc_error(create, b, conv, "k3", channel_types=[99])
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT)


def test_claim_due_outbound_takes_a_list_of_types(b):
    drain(b.api, [FB, IG])
    fb = make_due(b, b.conversation(b.account(FB), "PSID-types"), "fb")
    ig = make_due(b, b.conversation(b.account(IG), "IGSID-types"), "ig")
    got = b.api.ClaimDueOutbound(channel_types=[FB, IG], limit=100, lease_owner="both",
                                 lease_seconds=60).claimed
    assert {c.message.message_id for c in got if c.message.tenant_id == b.tenant} == {fb, ig}

    fb2 = make_due(b, b.conversation(b.account(FB), "PSID-types-2"), "fb2")
    ig2 = make_due(b, b.conversation(b.account(IG), "IGSID-types-2"), "ig2")
    old = b.api.ClaimDueOutbound(channel_type=FB, limit=100, lease_owner="old",
                                 lease_seconds=60).claimed
    assert {c.message.message_id for c in old if c.message.tenant_id == b.tenant} == {fb2}
    union = b.api.ClaimDueOutbound(channel_type=FB, channel_types=[IG], limit=100,
                                   lease_owner="union", lease_seconds=60).claimed
    assert {c.message.message_id for c in union if c.message.tenant_id == b.tenant} == {ig2}

    for kw in (dict(), dict(channel_types=[99]), dict(channel_type=99)):
        err = rpc_error(b.api.ClaimDueOutbound, limit=1, lease_owner="x", lease_seconds=60, **kw)
        assert_code(err, grpc.StatusCode.INVALID_ARGUMENT)
