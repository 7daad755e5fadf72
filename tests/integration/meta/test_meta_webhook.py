"""Meta webhook: the subscription check, X-Hub-Signature-256 over the raw bytes, routing of a
batch across tenants, duplicates, order, Instagram, non-text and ignored events."""
import json
import threading

import harness
from meta_harness import (INSTAGRAM, body_bytes, entry, new_mid, new_page_id,
                          new_psid, payload, sign, text_event)

pb = harness.pb


def inbound(ch, where="true"):
    return ch.db_messages(f"direction = 'inbound' AND ({where})")


def test_challenge_success_wrong_token_missing_mode(mconn):
    status, body = mconn.challenge(**{"hub.mode": "subscribe",
                                      "hub.verify_token": mconn.verify_token,
                                      "hub.challenge": "1158201444"})
    assert (status, body) == (200, "1158201444")
    status, _ = mconn.challenge(**{"hub.mode": "subscribe",
                                   "hub.verify_token": mconn.verify_token + "x",
                                   "hub.challenge": "1158201444"})
    assert status == 403
    status, _ = mconn.challenge(**{"hub.verify_token": mconn.verify_token,
                                   "hub.challenge": "1158201444"})
    assert status == 403
    status, _ = mconn.challenge(**{"hub.mode": "unsubscribe",
                                   "hub.verify_token": mconn.verify_token,
                                   "hub.challenge": "1"})
    assert status == 403


def test_signature_over_raw_bytes_with_escaped_non_ascii(fb):
    psid = new_psid()
    text = "สวัสดี café 😀"
    raw = body_bytes(payload("page", entry(fb.page_id, text_event(psid, fb.page_id, text))))
    assert b"\\u0e2a" in raw and "สวัสดี".encode() not in raw  # escaped as Meta sends it
    # Tampered: one byte changed after signing.
    sig = sign(fb.conn.app_secret, raw)
    status, _ = fb.conn.meta_webhook(raw.replace(b"caf", b"cap"), signature=sig)
    assert status == 401
    # Missing.
    status, _ = fb.conn.meta_webhook(raw, sign_with=False)
    assert status == 401
    # The same JSON re-serialized (UTF-8 instead of \u escapes) does not carry the signature.
    reser = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()
    assert reser != raw
    status, _ = fb.conn.meta_webhook(reser, signature=sig)
    assert status == 401
    assert inbound(fb) == []
    # Valid.
    status, data = fb.conn.meta_webhook(raw, signature=sig)
    assert status == 200, data
    rows = inbound(fb)
    assert len(rows) == 1 and rows[0]["content_text"] == text


def test_routing_two_tenants_and_an_unconnected_page(meta_factory, mconn):
    a = meta_factory()
    b = meta_factory()
    users_a, users_b = [new_psid(), new_psid()], [new_psid(), new_psid(), new_psid()]
    stranger = new_page_id()
    body = payload("page",
                   entry(a.page_id, *[text_event(u, a.page_id, f"a-{u}") for u in users_a]),
                   entry(stranger, text_event(new_psid(), stranger, "nobody's")),
                   entry(b.page_id, *[text_event(u, b.page_id, f"b-{u}") for u in users_b]))
    before = mconn.metric("omnichat_webhook_events_total", outcome="unroutable")
    status, _ = mconn.meta_webhook(body)
    assert status == 200
    ra, rb = inbound(a), inbound(b)
    assert sorted(r["content_text"] for r in ra) == sorted(f"a-{u}" for u in users_a)
    assert sorted(r["content_text"] for r in rb) == sorted(f"b-{u}" for u in users_b)
    assert {r["channel_account_id"] for r in ra} == {a.account_id}
    assert {r["channel_account_id"] for r in rb} == {b.account_id}
    threads = {c.thread_key for c in a.conversations()}
    assert threads == {f"{a.page_id}:{u}" for u in users_a}
    assert mconn.metric("omnichat_webhook_events_total", outcome="unroutable") == before + 1


def test_duplicates_sequential_and_concurrent(fb):
    ev = text_event(new_psid(), fb.page_id, "once")
    for _ in range(2):
        assert fb.deliver(ev)[0] == 200
    assert len(inbound(fb)) == 1
    ev2 = text_event(new_psid(), fb.page_id, "once, concurrently")
    results = []
    threads = [threading.Thread(target=lambda: results.append(fb.deliver(ev2)[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert len(inbound(fb)) == 2


def test_out_of_order_events_in_timestamp_order(fb):
    psid = new_psid()
    t0 = harness.now_ms() - 10000
    evs = [text_event(psid, fb.page_id, f"n{i}", ts=t0 + i * 1000) for i in range(4)]
    for ev in (evs[2], evs[0], evs[3], evs[1]):
        assert fb.deliver(ev)[0] == 200
    conv = fb.conversation_by_thread(f"{fb.page_id}:{psid}")
    assert [m.content_text for m in fb.messages(conv)] == ["n0", "n1", "n2", "n3"]


def test_instagram_message_lands_on_an_instagram_conversation(ig):
    status, _, igsid, ev = ig.deliver_text(text="from instagram")
    assert status == 200
    conv = ig.conversation_by_thread(f"{ig.ig_id}:{igsid}")
    assert conv is not None and conv.channel_type == INSTAGRAM
    msgs = ig.messages(conv)
    assert [m.content_text for m in msgs] == ["from instagram"]
    assert msgs[0].external_message_id == ev["message"]["mid"]
    # The same Page id as a facebook entry does not route to the instagram account.
    status, _ = ig.conn.meta_webhook(payload("page", entry(ig.ig_id, text_event(
        new_psid(), ig.ig_id, "wrong object")))), None
    assert status[0] == 200 and len(inbound(ig)) == 1


def test_non_text_kept_unsupported_and_other_events_acknowledged(fb):
    psid = new_psid()
    img = {"sender": {"id": psid}, "recipient": {"id": fb.page_id},
           "timestamp": harness.now_ms(),
           "message": {"mid": new_mid(), "attachments": [
               {"type": "image", "payload": {"url": "https://example.invalid/a.jpg"}}]}}
    postback = {"sender": {"id": psid}, "recipient": {"id": fb.page_id},
                "timestamp": harness.now_ms(), "postback": {"title": "Go", "payload": "GO"}}
    body = payload("page", entry(fb.page_id, img, postback))
    body["entry"][0]["standby"] = [text_event(psid, fb.page_id, "other app's thread")]
    assert fb.conn.meta_webhook(body)[0] == 200
    rows = inbound(fb)
    assert len(rows) == 1 and rows[0]["content_type"] == "unsupported"
    conv = fb.conversation_by_thread(f"{fb.page_id}:{psid}")
    m = fb.messages(conv)[0]
    assert json.loads(m.content_struct_json)["attachments"][0]["type"] == "image"


def test_body_over_the_cap_is_413_and_bad_json_400(fb):
    big = b'{"object":"page","entry":[],"pad":"' + b"x" * (1 << 20) + b'"}'
    assert fb.conn.meta_webhook(big)[0] == 413
    assert fb.conn.meta_webhook(b'{"object":"page","entry":')[0] == 400
    assert fb.conn.meta_webhook(b'{"object":"user","entry":[{"id":"1","changes":[]}]}')[0] == 200
