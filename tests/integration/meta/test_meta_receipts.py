"""Delivery and read receipts: watermarks (and mids) move outbound statuses forward only, within
the thread, and never another tenant's."""
import time

import harness
from meta_harness import new_psid

pb = harness.pb
S = pb.MessageStatus


def statuses(ch, conv, ids):
    by_id = {m.message_id: m.status for m in ch.messages(conv)}
    return [S.Name(by_id[i]).replace("MESSAGE_STATUS_", "").lower() for i in ids]


def test_watermarks_move_forward_only_within_the_thread(meta_factory, graph_sim):
    a = meta_factory()
    conv, psid = a.conversation()
    other, psid2 = a.conversation()
    sent = []
    for i in range(3):
        sent.append(a.send(conv, f"m{i}"))
        time.sleep(0.02)
    assert [m.status for m in sent] == [pb.MESSAGE_STATUS_SENT] * 3
    o = a.send(other, "other thread")
    # Another tenant's Page with the same person id: its message must not move either.
    b = meta_factory()
    conv_b, _ = b.conversation(user=psid)
    mb = b.send(conv_b, "other tenant")
    ids = [m.message_id for m in sent]
    wm2 = sent[1].channel_timestamp_ms
    wm_all = max(m.channel_timestamp_ms for m in sent + [o, mb]) + 1000

    r = graph_sim.events("page", a.page_id, {"kind": "delivery", "sender": psid,
                                             "recipient": a.page_id, "watermark": wm2})
    assert r["status"] == 200, r
    assert statuses(a, conv, ids) == ["delivered", "delivered", "sent"]
    r = graph_sim.events("page", a.page_id, {"kind": "read", "sender": psid,
                                             "recipient": a.page_id,
                                             "watermark": sent[0].channel_timestamp_ms})
    assert r["status"] == 200, r
    assert statuses(a, conv, ids) == ["read", "delivered", "sent"]
    # An older delivery receipt after the read: never back.
    graph_sim.events("page", a.page_id, {"kind": "delivery", "sender": psid,
                                         "recipient": a.page_id, "watermark": wm_all})
    assert statuses(a, conv, ids) == ["read", "delivered", "delivered"]
    # A read covering all of them.
    graph_sim.events("page", a.page_id, {"kind": "read", "sender": psid, "recipient": a.page_id,
                                         "watermark": wm_all})
    assert statuses(a, conv, ids) == ["read", "read", "read"]
    # Nothing else moved: the other thread, the other tenant.
    assert statuses(a, other, [o.message_id]) == ["sent"]
    assert statuses(b, conv_b, [mb.message_id]) == ["sent"]


def test_delivery_by_mids_and_unknown_thread(fb):
    conv, psid = fb.conversation()
    m1, m2 = fb.send(conv, "one"), fb.send(conv, "two")
    ev = {"sender": {"id": psid}, "recipient": {"id": fb.page_id},
          "timestamp": harness.now_ms(), "delivery": {"mids": [m2.external_message_id]}}
    stranger = {"sender": {"id": new_psid()}, "recipient": {"id": fb.page_id},
                "timestamp": harness.now_ms(), "read": {"watermark": harness.now_ms()}}
    assert fb.deliver(ev, stranger)[0] == 200
    assert statuses(fb, conv, [m1.message_id, m2.message_id]) == ["sent", "delivered"]
    # A redelivered receipt changes nothing; the echo after a read does not move it back.
    assert fb.deliver(ev)[0] == 200
    assert statuses(fb, conv, [m1.message_id, m2.message_id]) == ["sent", "delivered"]
