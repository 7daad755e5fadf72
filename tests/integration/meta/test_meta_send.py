"""Meta SendText: success linked to the conversation, idempotency, the error table (190, 10,
2018278, 613), echo confirmation of lost responses, Page-inbox echoes, ConnectChannel."""
import json
import time

import grpc

import harness
from harness import rpc_error
from line_harness import LINE_TIMEOUT_MS, SLOW, WORKER_INTERVAL_MS
from meta_harness import (ECHO_GRACE_MS, FACEBOOK, INSTAGRAM, echo_event, new_psid,
                          wait_for)

pb = harness.pb


def _only(items, what):
    assert len(items) == 1, f"expected exactly one {what}, got {len(items)}: {items}"
    return items[0]


def outbound(ch):
    return ch.db_messages("direction = 'outbound'")


def test_send_success_is_linked_and_its_echo_adds_nothing(fb):
    conv, psid = fb.conversation()
    m = fb.send(conv, "Hello from Omnichat \u00e9 \U0001F44B")
    assert m.status == pb.MESSAGE_STATUS_SENT, m
    assert m.conversation_id == conv.conversation_id and m.attempts == 1
    req = _only(fb.send_requests(), "send request")
    assert req["path"] == f"/v21.0/{fb.page_id}/messages"
    assert "access_token" not in req["path"] and req["token_sha256"]
    assert req["content_type"].startswith("application/x-www-form-urlencoded")
    assert req["appsecret_proof"] is True and req["messaging_type"] == "RESPONSE"
    assert json.loads(req["recipient"]) == {"id": psid}
    msg = json.loads(req["message"])
    assert msg == {"text": m.content_text, "metadata": m.message_id}
    assert m.external_message_id == req["message_id"]
    # The echo of our own send arrives and settles nothing new: one row, still sent.
    wait_for(lambda: fb.conn.metric("omnichat_webhook_events_total", outcome="reconciled") > 0,
             5, what="the echo to be reconciled")
    row = _only(outbound(fb), "outbound row")
    assert row["status"] == "sent" and row["external_message_id"] == m.external_message_id
    assert fb.get_account().status == pb.CHANNEL_STATUS_ACTIVE


def test_same_key_twice_one_send_and_other_text_already_exists(fb):
    conv, _ = fb.conversation()
    key = fb.key()
    a = fb.send(conv, "once", key=key)
    b = fb.send(conv, "once", key=key)
    assert a.message_id == b.message_id and b.status == pb.MESSAGE_STATUS_SENT
    assert len(fb.send_requests()) == 1
    e = rpc_error(fb.conn.api.SendText, fb.send_request(conv, "other text", key=key))
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e
    assert len(fb.send_requests()) == 1 and len(outbound(fb)) == 1


def test_text_of_2000_characters_is_invalid(fb):
    conv, _ = fb.conversation()
    assert fb.send(conv, "é" * 1999).status == pb.MESSAGE_STATUS_SENT
    e = rpc_error(fb.conn.api.SendText, fb.send_request(conv, "é" * 2000))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e


def test_190_auth_failed_then_fails_fast_until_reconnected(fb):
    conv, _ = fb.conversation()
    fb.fault({"kind": "token"})
    m = fb.send(conv, "token rejected")
    assert (m.status, m.error_category) == (pb.MESSAGE_STATUS_FAILED,
                                            pb.ERROR_CATEGORY_AUTH_ERROR), m
    assert fb.get_account().status == pb.CHANNEL_STATUS_AUTH_FAILED
    n = len(fb.send_requests())
    m2 = fb.send(conv, "while auth failed")
    assert m2.status == pb.MESSAGE_STATUS_FAILED and m2.attempts == 0, m2
    assert m2.error_category == pb.ERROR_CATEGORY_AUTH_ERROR
    time.sleep(WORKER_INTERVAL_MS * 5 / 1000 * SLOW)
    assert len(fb.send_requests()) == n == 1
    r = fb.connect()
    assert r.channel_account.status == pb.CHANNEL_STATUS_ACTIVE
    assert fb.send(conv, "after reconnect").status == pb.MESSAGE_STATUS_SENT


def test_10_permission_is_auth_error(fb):
    conv, _ = fb.conversation()
    fb.fault({"kind": "permission"})
    m = fb.send(conv, "no permission")
    assert (m.status, m.error_category) == (pb.MESSAGE_STATUS_FAILED,
                                            pb.ERROR_CATEGORY_AUTH_ERROR), m


def test_2018278_is_window_closed_and_the_account_stays_active(fb):
    conv, _ = fb.conversation()
    fb.fault({"kind": "window"})
    m = fb.send(conv, "too late")
    assert (m.status, m.error_category) == (pb.MESSAGE_STATUS_FAILED,
                                            pb.ERROR_CATEGORY_WINDOW_CLOSED), m
    assert fb.get_account().status == pb.CHANNEL_STATUS_ACTIVE


def test_551_is_recipient_error_and_500_is_retried(fb):
    conv, _ = fb.conversation()
    fb.fault({"kind": "blocked"})
    m = fb.send(conv, "blocked")
    assert m.error_category == pb.ERROR_CATEGORY_RECIPIENT_ERROR, m
    fb.fault({"status": 500})
    m = fb.send(conv, "after a 500")
    assert m.status == pb.MESSAGE_STATUS_PENDING, m
    fb.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 10)


def test_613_is_retried_then_sent(fb):
    conv, _ = fb.conversation()
    fb.fault({"kind": "rate_limit"}, {"kind": "transient"})
    m = fb.send(conv, "rate limited")
    assert m.status == pb.MESSAGE_STATUS_PENDING, m
    assert m.error_category == pb.ERROR_CATEGORY_RATE_LIMIT_ERROR, m
    final = fb.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 10)
    assert final.attempts == 3, final
    assert len(fb.send_requests()) == 3 and len(fb.deliveries()) == 1


def test_echo_confirms_a_timed_out_send_without_a_second_send(fb):
    conv, _ = fb.conversation()
    # Executed (and echoed) at once, the answer held past the connector's timeout.
    fb.fault({"delay_ms": LINE_TIMEOUT_MS * 3, "execute": True})
    m = fb.send(conv, "answer lost")
    assert m.status in (pb.MESSAGE_STATUS_UNKNOWN, pb.MESSAGE_STATUS_SENT), m
    final = fb.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 5)
    assert final.external_message_id == fb.deliveries()[0]["message_id"]
    time.sleep(ECHO_GRACE_MS / 1000 + 1)  # past the grace period: still no second send
    assert len(fb.send_requests()) == 1 and len(fb.deliveries()) == 1
    assert _only(outbound(fb), "outbound row")["status"] == "sent"


def test_dropped_after_read_reaches_the_sim_once_and_waits_for_its_echo(fb):
    conv, _ = fb.conversation()
    fb.sim.config(echo=False)
    fb.fault({"drop": True, "execute": True})
    m = fb.send(conv, "connection dropped")
    assert m.status == pb.MESSAGE_STATUS_UNKNOWN, m
    # No silent re-send by the HTTP client, and none before the echo grace period.
    time.sleep(ECHO_GRACE_MS / 1000 / 2)
    assert len(fb.send_requests()) == 1
    row = _only(outbound(fb), "outbound row")
    assert row["status"] == "unknown"
    # The echo that was late arrives: settled as sent, still one provider call.
    d = _only(fb.deliveries(), "delivery")
    status, _ = fb.conn.meta_webhook({"object": "page", "entry": [{
        "id": fb.page_id, "time": harness.now_ms(),
        "messaging": [echo_event(fb.page_id, d["to"], d["text"], mid=d["message_id"],
                                 metadata=m.message_id)]}]})
    assert status == 200
    final = fb.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 5)
    assert final.external_message_id == d["message_id"]
    time.sleep(ECHO_GRACE_MS / 1000 + 0.5)
    assert len(fb.send_requests()) == 1 and len(outbound(fb)) == 1


def test_without_an_echo_the_send_is_repeated_after_the_grace(fb):
    conv, _ = fb.conversation()
    fb.sim.config(echo=False)
    fb.fault({"drop": True})  # not executed, and no echo will come
    m = fb.send(conv, "lost before Meta")
    assert m.status == pb.MESSAGE_STATUS_UNKNOWN, m
    final = fb.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, ECHO_GRACE_MS / 1000 + 5)
    assert len(fb.send_requests()) == 2 and len(fb.deliveries()) == 1, final


def test_page_inbox_echo_is_stored_once_as_an_agent_message(fb):
    psid = new_psid()
    ev = echo_event(fb.page_id, psid, "typed in the Page inbox")
    for _ in range(2):
        assert fb.deliver(ev)[0] == 200
    rows = outbound(fb)
    row = _only(rows, "outbound row")
    assert row["sender_type"] == "agent" and row["content_text"] == "typed in the Page inbox"
    assert row["external_message_id"] == ev["message"]["mid"]
    conv = fb.conversation_by_thread(f"{fb.page_id}:{psid}")
    assert [m.direction for m in fb.messages(conv)] == [pb.DIRECTION_OUTBOUND]


def test_instagram_send_and_connect(ig):
    assert ig.account.channel_type == INSTAGRAM and ig.account.external_account_id == ig.ig_id
    conv, igsid = ig.conversation()
    m = ig.send(conv, "hi on instagram")
    assert m.status == pb.MESSAGE_STATUS_SENT, m
    req = _only(ig.send_requests(), "send request")
    assert req["path"] == f"/v21.0/{ig.ig_id}/messages"
    assert _only(ig.deliveries(), "delivery")["instagram"] is True


def test_connect_channel_checks_the_page_and_token(meta_factory, mconn):
    ch = meta_factory(connect=False)
    e = rpc_error(ch.connect, token="EAAGnot-a-token")
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    e = rpc_error(ch.connect, external_account_id="999999")
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
    r = ch.connect()
    assert r.channel_account.channel_type == FACEBOOK
    assert r.channel_account.external_account_id == ch.page_id
    assert r.channel_account.display_name == "IT Page " + ch.page_id[-6:]
