"""POST /webhooks/line/{channel_account_id}: signature, limits, routing, dedupe, threading,
non-text messages, display names."""
import json
import os
import uuid

import pytest

import harness
from harness import pb
from line_harness import (image_event, new_group_id, new_room_id,
                          new_user_id, payload, raw_post, sign, sticker_event, text_event,
                          find_in_tree)

DATA = os.path.join(harness.REPO, "tests", "data", "line", "integration")


def _vector():
    with open(os.path.join(DATA, "signature_vector.json")) as f:
        return json.load(f)


def _inbound(line, where="true"):
    return line.db_messages(f"direction = 'inbound' AND ({where})")


# ---------------------------------------------------------------------------------------------
# Signature and limits


def test_official_signature_vector_is_accepted(line_factory, db):
    v = _vector()
    # A bot whose user id is the vector's destination, connected with the vector's secret.
    # (The bot id can be connected by only one tenant: this test owns it in this database.)
    existing = db.count("SELECT count(*) FROM omnichat.channel_accounts WHERE "
                        f"external_account_id = {harness.sql_lit(v['destination'])}")
    assert existing == 0, "the vector's bot id is already connected in this database"
    ch = line_factory(secret=v["channel_secret"], bot_user_id=v["destination"])
    status, body = ch.conn.webhook(ch.account_id, v["body"].encode(), signature=v["signature"])
    assert status == 200, body
    # The same bytes with one byte changed → 401.
    tampered = v["body"].replace('"events":[]', '"events":[ ]').encode()
    status, _ = ch.conn.webhook(ch.account_id, tampered, signature=v["signature"])
    assert status == 401


def test_tampered_body_is_401_and_not_stored(line):
    user = new_user_id()
    body = json.dumps(payload(line.bot_user_id, text_event(user, "genuine")),
                      separators=(",", ":")).encode()
    sig = sign(line.secret, body)
    tampered = body.replace(b"genuine", b"forged!")
    status, _ = line.conn.webhook(line.account_id, tampered, signature=sig)
    assert status == 401
    # Signed with another secret → 401.
    status, _ = line.conn.webhook(line.account_id, body, signature=sign("0" * 32, body))
    assert status == 401
    # Garbage signature → 401.
    status, _ = line.conn.webhook(line.account_id, body, signature="not base64 at all!")
    assert status == 401
    assert _inbound(line) == []
    # The genuine one is accepted.
    status, _ = line.conn.webhook(line.account_id, body, signature=sig)
    assert status == 200
    assert len(_inbound(line)) == 1


def test_missing_signature_is_401(line):
    body = payload(line.bot_user_id, text_event(new_user_id(), "unsigned"))
    status, _ = line.conn.webhook(line.account_id, body)  # no secret, no signature
    assert status == 401
    status, _ = line.conn.webhook(line.account_id, body, signature="")
    assert status == 401
    assert _inbound(line) == []


def test_signature_header_name_is_case_insensitive(line):
    body = json.dumps(payload(line.bot_user_id, text_event(new_user_id(), "case")),
                      separators=(",", ":")).encode()
    status, _, data = line.conn.http("POST", f"/webhooks/line/{line.account_id}", body,
                                     {"Content-Type": "application/json",
                                      "X-Line-Signature": sign(line.secret, body)})
    assert status == 200, data
    assert len(_inbound(line)) == 1


@pytest.mark.parametrize("expect_continue", [False, True], ids=["plain", "expect-100"])
def test_oversize_body_is_413(line, expect_continue):
    ev = text_event(new_user_id(), "x" * (4 * 1024 * 1024))
    body = json.dumps(payload(line.bot_user_id, ev)).encode()
    status, _ = raw_post(line.conn.http_port, f"/webhooks/line/{line.account_id}", body,
                         {"Content-Type": "application/json",
                          "x-line-signature": sign(line.secret, body)},
                         expect_continue=expect_continue)
    assert status == 413
    assert _inbound(line) == []
    assert line.conn.alive()


def test_empty_events_is_200(line):
    status, body = line.deliver()
    assert status == 200, body
    assert _inbound(line) == [] and line.conversations() == []


def test_unknown_channel_account_is_404(line):
    body = payload(line.bot_user_id, text_event(new_user_id()))
    status, _ = line.conn.webhook(harness.new_id(), body, secret=line.secret)
    assert status == 404
    status, _ = line.conn.webhook("not-a-uuid", body, secret=line.secret)
    assert status == 404
    assert _inbound(line) == []


def test_malformed_json_with_valid_signature_is_rejected_without_crash(line):
    body = b'{"destination":"' + line.bot_user_id.encode() + b'","events":[{"type":'
    status, _ = line.conn.webhook(line.account_id, body, secret=line.secret)
    assert 400 <= status < 500, f"malformed JSON should be a client error, got {status}"
    assert line.conn.alive()
    assert _inbound(line) == []


# ---------------------------------------------------------------------------------------------
# Persisting events


def test_text_message_is_persisted(line):
    user = new_user_id()
    ev = text_event(user, "hello \U0001F600 world", ts=1_790_000_000_123)
    status, body = line.deliver(ev)
    assert status == 200, body
    conv = line.conversation_by_thread(user)
    assert conv is not None, f"no conversation for thread {user}: {line.conversations()}"
    assert conv.channel_type == pb.CHANNEL_TYPE_LINE
    assert conv.message_count == 1
    msgs = line.messages(conv)
    assert len(msgs) == 1
    m = msgs[0]
    assert m.direction == pb.DIRECTION_INBOUND
    assert m.status == pb.MESSAGE_STATUS_RECEIVED
    assert m.idempotency_key == ev["message"]["id"]
    assert m.external_message_id == ev["message"]["id"]
    assert m.content_type == pb.CONTENT_TYPE_TEXT
    assert m.content_text == "hello \U0001F600 world"
    assert m.sender_type == pb.SENDER_TYPE_CONTACT
    assert m.sender_id == user
    assert m.channel_timestamp_ms == 1_790_000_000_123
    assert m.channel_account_id == line.account_id and m.tenant_id == line.tenant
    assert m.contact_id and m.contact_id == conv.contact_id


def test_same_event_twice_is_one_message(line):
    user = new_user_id()
    ev = text_event(user, "dup")
    assert line.deliver(ev)[0] == 200
    redelivered = dict(ev, deliveryContext={"isRedelivery": True})
    assert line.deliver(redelivered)[0] == 200
    assert line.deliver(ev)[0] == 200
    assert len(_inbound(line)) == 1
    assert line.conversation_by_thread(user).message_count == 1


def test_same_event_concurrently_is_one_message(line):
    user = new_user_id()
    ev = text_event(user, "concurrent dup")
    statuses = harness.run_concurrently(lambda: line.deliver(ev)[0], 10)
    assert statuses == [200] * 10, statuses
    assert len(_inbound(line)) == 1
    assert len(line.conversations()) == 1
    assert line.db.count("SELECT count(*) FROM omnichat.contacts WHERE tenant_id = "
                         f"{harness.sql_lit(line.tenant)}") == 1


def test_concurrent_posts_of_shared_users_are_each_stored_once(line):
    # The connector persists concurrent POSTs of one account together (one PersistInbound):
    # every POST still gets its own 200 only after its events are stored, each event once,
    # in its user's conversation, and a POST repeated while others run is still one message.
    users = [new_user_id() for _ in range(4)]
    posts = [[text_event(users[(p + i) % 4], f"post {p} event {i}") for i in range(3)]
             for p in range(12)]
    repeated = posts[0]
    work = posts + [repeated]
    it = iter(range(len(work)))
    statuses = harness.run_concurrently(lambda: line.deliver(*work[next(it)])[0], len(work))
    assert statuses == [200] * len(work), statuses
    stored = _inbound(line)
    want = sorted(ev["message"]["id"] for evs in posts for ev in evs)
    assert sorted(m["external_message_id"] for m in stored) == want
    for u in users:
        conv = line.conversation_by_thread(u)
        ids = {m.external_message_id for m in line.messages(conv)}
        assert ids == {ev["message"]["id"] for evs in posts for ev in evs
                       if ev["source"]["userId"] == u}


def test_three_users_in_one_post_give_three_conversations(line):
    users = [new_user_id() for _ in range(3)]
    evs = [text_event(u, f"from {u[-4:]}") for u in users]
    status, body = line.deliver(*evs)
    assert status == 200, body
    convs = line.conversations()
    assert sorted(c.thread_key for c in convs) == sorted(users)
    for u, ev in zip(users, evs):
        c = line.conversation_by_thread(u)
        msgs = line.messages(c)
        assert [m.external_message_id for m in msgs] == [ev["message"]["id"]]
        assert msgs[0].sender_id == u
    assert len({c.contact_id for c in convs}) == 3


def test_group_and_room_sources_map_to_their_threads(line):
    group, room = new_group_id(), new_room_id()
    u1, u2 = new_user_id(), new_user_id()
    g_ev = text_event(text="in a group", source={"type": "group", "groupId": group, "userId": u1})
    r_ev = text_event(text="in a room", source={"type": "room", "roomId": room, "userId": u2})
    status, body = line.deliver(g_ev, r_ev)
    assert status == 200, body
    g = line.conversation_by_thread(group)
    r = line.conversation_by_thread(room)
    assert g is not None and r is not None, [c.thread_key for c in line.conversations()]
    assert line.conversation_by_thread(u1) is None and line.conversation_by_thread(u2) is None
    gm, rm = line.messages(g), line.messages(r)
    assert len(gm) == 1 and gm[0].sender_id == u1 and gm[0].content_text == "in a group"
    assert len(rm) == 1 and rm[0].sender_id == u2
    # A second member of the same group lands in the same conversation.
    u3 = new_user_id()
    g2 = text_event(text="me too", source={"type": "group", "groupId": group, "userId": u3})
    assert line.deliver(g2)[0] == 200
    assert len(line.messages(g)) == 2
    assert {m.sender_id for m in line.messages(g)} == {u1, u3}


@pytest.mark.parametrize("make", [sticker_event, image_event], ids=["sticker", "image"])
def test_non_text_message_is_kept_as_unsupported(line, make):
    user = new_user_id()
    ev = make(user)
    status, body = line.deliver(ev)
    assert status == 200, body
    conv = line.conversation_by_thread(user)
    assert conv is not None
    msgs = line.messages(conv)
    assert len(msgs) == 1, msgs
    m = msgs[0]
    assert m.content_type == pb.CONTENT_TYPE_UNSUPPORTED, m
    assert m.external_message_id == ev["message"]["id"]
    raw = json.loads(m.content_struct_json)
    # The raw LINE message is in content_struct_json.
    assert find_in_tree(raw, lambda v: v == ev["message"]["type"]), raw
    if ev["message"]["type"] == "sticker":
        assert find_in_tree(raw, lambda v: v == "1988") and find_in_tree(raw, lambda v: v == "446"), raw
    else:
        assert find_in_tree(raw, lambda v: v == "contentProvider"), raw


def test_non_message_events_are_acknowledged(line):
    user = new_user_id()
    follow = {"type": "follow", "mode": "active", "timestamp": harness.now_ms(),
              "webhookEventId": "01" + uuid.uuid4().hex[:24].upper(),
              "deliveryContext": {"isRedelivery": False},
              "source": {"type": "user", "userId": user}, "replyToken": uuid.uuid4().hex}
    text = text_event(new_user_id(), "alongside a follow")
    status, body = line.deliver(follow, text)
    assert status == 200, body
    assert len(_inbound(line)) == 1


# ---------------------------------------------------------------------------------------------
# Display names


def test_display_name_comes_from_the_profile(line, line_sim, db):
    user = new_user_id()
    name = "Ada Lovelace \U0001F338"
    line_sim.set_profile(user, display_name=name,
                         picture_url="https://profile.example/ada.png")
    ev = text_event(user, "who am I?")
    assert line.deliver(ev)[0] == 200
    conv = line.conversation_by_thread(user)
    m = line.messages(conv)[0]
    assert m.sender_display_name == name, m
    rows = db.rows("SELECT display_name FROM omnichat.contacts WHERE tenant_id = "
                   f"{harness.sql_lit(line.tenant)} AND external_user_id = {harness.sql_lit(user)}")
    assert rows == [[name]], rows
    # The profile lookup used the channel's token.
    prof = [r for r in line_sim.requests(f"/v2/bot/profile/{user}")]
    assert prof and all(r["headers"]["authorization"] == "Bearer " + line.token for r in prof)


def test_display_name_default_profile_and_unknown_profile(line, line_sim, db):
    known = new_user_id()  # sim's deterministic default profile: "User <last 6>"
    gone = new_user_id()
    line_sim.set_profile(gone, not_found=True)
    s1 = line.deliver(text_event(known, "a"))[0]
    s2 = line.deliver(text_event(gone, "b"))[0]
    assert (s1, s2) == (200, 200), "a profile 404 must not lose the message"
    m_known = line.messages(line.conversation_by_thread(known))[0]
    assert m_known.sender_display_name == "User " + known[-6:]
    assert len(line.messages(line.conversation_by_thread(gone))) == 1


# ---------------------------------------------------------------------------------------------
# Content problems after a valid signature: never a 4xx (LINE would drop the whole POST)


def test_bad_events_never_lose_the_rest_of_the_post(line, conn):
    user = new_user_id()
    good = text_event(user, "a good one")
    nul = text_event(user, "NUL-PLACEHOLDER")
    real_ts = text_event(user, "SENTINEL-real-timestamp", ts=111)
    huge_ts = text_event(user, "SENTINEL-huge-timestamp", ts=222)
    far_ts = text_event(user, "SENTINEL-year-10000", ts=253402300799001)
    body = json.dumps(payload(line.bot_user_id, good, nul, real_ts, huge_ts, far_ts),
                      separators=(",", ":"))
    # What json.dumps cannot write: \u0000 in a text, a real and an overflowing timestamp,
    # and an integer beyond int64 in a field nobody reads.
    body = body.replace('"NUL-PLACEHOLDER"', '"nul\\u0000inside"')
    body = body.replace('"timestamp":111', '"timestamp":1790000000000.5')
    body = body.replace('"timestamp":222', '"timestamp":1e300')
    body = body.replace('{"destination"', '{"unrelated":123456789012345678901234567890,'
                                          '"destination"', 1)
    before = conn.metric("omnichat_webhook_events_total", outcome="invalid")
    status, resp = conn.webhook(line.account_id, body.encode(), secret=line.secret)
    assert status == 200, resp
    rows = _inbound(line)
    assert sorted(r["idempotency_key"] for r in rows) == sorted(
        [good["message"]["id"], nul["message"]["id"]]), rows
    texts = {r["idempotency_key"]: r["content_text"] for r in rows}
    assert texts[nul["message"]["id"]] == "nul\ufffdinside"
    assert conn.metric("omnichat_webhook_events_total", outcome="invalid") == before + 3
    log = conn.log_text()
    assert "webhook events skipped as invalid" in log
    for marker in ("SENTINEL-real-timestamp", "SENTINEL-huge-timestamp", "SENTINEL-year-10000"):
        assert marker not in log, "an invalid event's content reached the log"
    # The same body again is a redelivery: 200, nothing new.
    status, _ = conn.webhook(line.account_id, body.encode(), secret=line.secret)
    assert status == 200 and len(_inbound(line)) == 2


def test_signed_body_that_is_not_json_is_still_400(line):
    for body in (b"not json", b'{"destination":"x"}', b'{"events":{}}', b"[]"):
        status, _ = line.conn.webhook(line.account_id, body, secret=line.secret)
        assert status == 400, (body, status)
