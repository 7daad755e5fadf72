"""Provider faults: 5xx, timeouts, 401, 429 (rate limit vs monthly quota), and a connector
killed with SIGKILL mid-send. Faults are injected at the LINE simulator (/__sim/faults)."""
import threading
import time

import grpc

from harness import assert_code, pb, rpc_error
from line_harness import (LEASE_SECONDS, LINE_TIMEOUT_MS, SLOW, WORKER_INTERVAL_MS, kill_mid_send,
                          wait_for)

SETTLE = 15  # seconds a retry may take to settle (lease + backoff, before SLOW)


def _keys(reqs):
    return [(r.get("retry_key") or "").lower() for r in reqs]


def _summary(reqs):
    return [{k: r.get(k) for k in ("time_ms", "status", "executed", "retry_conflict", "fault",
                                   "retry_key")} for r in reqs]


def _assert_single_delivery(line, m_final, first=None, retries=None):
    """One delivery, every attempt with the message's retry key and an identical body.
    first: the status the first push got (None: the push was executed and answered 200 or
    held); retries: the status the retry that settled it got (200: executed; 409: the key
    was already accepted). Extra attempts are tolerated only as 409s: a retry that timed out
    on a loaded machine is retried again with the same key, harmlessly."""
    ds = line.deliveries()
    assert len(ds) == 1, f"expected one delivery, got {len(ds)}: {ds}"
    assert m_final.external_message_id == ds[0]["sentMessages"][0]["id"], (m_final, ds)
    reqs = line.push_requests()
    assert len(reqs) >= (1 if first is None else 2), _summary(reqs)
    executed = [r for r in reqs if r.get("executed")]
    assert len(executed) == 1, f"pushes executed: {len(executed)}: {_summary(reqs)}"
    if first is not None:
        assert reqs[0]["status"] == first, _summary(reqs)
    if retries == 200:
        assert reqs[1]["status"] == 200 and reqs[1]["executed"], _summary(reqs)
        assert all(r["status"] == 409 for r in reqs[2:]), _summary(reqs)
    elif retries == 409:
        assert all(r["status"] == 409 and r["retry_conflict"] for r in reqs[1:]), _summary(reqs)
    keys = set(_keys(reqs))
    assert keys == {m_final.provider_retry_key.lower()}, (
        f"every attempt must carry the message's retry key {m_final.provider_retry_key}: {keys}")
    assert not any(r.get("retry_body_differs") for r in reqs), "a retry changed the push body"
    return reqs


def test_500_then_success_same_retry_key(line):
    conv, _ = line.conversation()
    line.sim.fault({"status": 500})
    m = line.send(conv, "after a 500")
    assert m.status in (pb.MESSAGE_STATUS_PENDING, pb.MESSAGE_STATUS_SENT), m
    if m.status == pb.MESSAGE_STATUS_PENDING:
        assert m.error_category == pb.ERROR_CATEGORY_PROVIDER_ERROR, m
    final = line.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, SETTLE)
    reqs = _assert_single_delivery(line, final, first=500, retries=200)
    assert final.attempts == len(reqs), (final, reqs)
    assert len(line.db_messages()) == 1


def test_timeout_then_retry_gets_409_and_delivers_once(line):
    conv, _ = line.conversation()
    # Executed at once, answer held past the connector's timeout: the response is "lost".
    line.sim.fault({"delay_ms": LINE_TIMEOUT_MS * 3, "execute": True})
    t0 = time.time()
    m = line.send(conv, "slow provider")
    took = time.time() - t0
    assert m.status in (pb.MESSAGE_STATUS_UNKNOWN, pb.MESSAGE_STATUS_PENDING), m
    assert m.error_category == pb.ERROR_CATEGORY_TIMEOUT, m
    assert took < (LINE_TIMEOUT_MS * 3 / 1000) * SLOW + 2, f"SendText waited {took:.2f}s"
    final = line.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, SETTLE)
    reqs = _assert_single_delivery(line, final, retries=409)
    assert len(reqs) >= 2 and reqs[0]["executed"], reqs
    assert len(line.db_messages()) == 1


def test_dropped_connection_after_execution_is_sent_once(line):
    conv, _ = line.conversation()
    line.sim.fault({"drop": True, "execute": True})
    m = line.send(conv, "dropped after execution")
    assert m.status in (pb.MESSAGE_STATUS_UNKNOWN, pb.MESSAGE_STATUS_PENDING,
                        pb.MESSAGE_STATUS_SENT), m
    final = line.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, SETTLE)
    _assert_single_delivery(line, final)


def test_401_marks_auth_failed_then_fails_fast_until_reconnected(line, line_sim):
    conv, _ = line.conversation()
    line.sim.fault({"status": 401})
    m = line.send(conv, "token rejected")
    assert m.status == pb.MESSAGE_STATUS_FAILED, m
    assert m.error_category == pb.ERROR_CATEGORY_AUTH_ERROR, m
    acct = line.get_account()
    assert acct.status == pb.CHANNEL_STATUS_AUTH_FAILED, acct
    assert acct.last_error_category == pb.ERROR_CATEGORY_AUTH_ERROR, acct
    n_push = len(line.push_requests("*"))
    assert n_push == 1

    # The next send fails fast, without calling LINE, through the account's AUTH_FAILED status
    # alone: the 401 fault is used up and the stored token is still one the simulator accepts,
    # so a push would have succeeded.
    assert line.sim.pending_faults() == [], line.sim.pending_faults()
    m2 = line.send(conv, "while auth failed")
    assert m2.status == pb.MESSAGE_STATUS_FAILED, m2
    assert m2.error_category == pb.ERROR_CATEGORY_AUTH_ERROR, m2
    assert m2.error_detail == "channel account needs new credentials", m2
    assert m2.attempts == 0, m2
    # The interval proves that neither message goes out through the retry worker either: five
    # worker passes (WORKER_INTERVAL_MS each, stretched by SLOW).
    time.sleep(WORKER_INTERVAL_MS * 5 / 1000 * SLOW)
    assert len(line.push_requests("*")) == n_push, "a send to an AUTH_FAILED account called LINE"
    # The first message is not retried either (permanent failure).
    assert line.message(conv, m.message_id).status == pb.MESSAGE_STATUS_FAILED

    # Reconnect with a new valid token: ACTIVE again, and sends work with the new token.
    new_token = "tok-new-" + line.bot_user_id
    line_sim.add_bot(new_token, line.bot_user_id)
    r = line.connect(token=new_token)
    assert r.channel_account.channel_account_id == line.account_id
    assert r.channel_account.status == pb.CHANNEL_STATUS_ACTIVE
    assert line.get_account().status == pb.CHANNEL_STATUS_ACTIVE
    m3 = line.send(conv, "after reconnect")
    assert m3.status == pb.MESSAGE_STATUS_SENT, m3
    last = line.push_requests("*")[-1]
    assert last["headers"]["authorization"] == "Bearer " + new_token


def test_revoked_token_gives_auth_error(line, line_sim):
    """A real 401 from LINE (revoked token), not an injected one."""
    conv, _ = line.conversation()
    line_sim.revoke(line.token)
    m = line.send(conv, "revoked")
    assert m.status == pb.MESSAGE_STATUS_FAILED, m
    assert m.error_category == pb.ERROR_CATEGORY_AUTH_ERROR, m
    assert line.get_account().status == pb.CHANNEL_STATUS_AUTH_FAILED
    # Reconnecting with the revoked token is refused and changes nothing.
    err = rpc_error(line.connect)
    assert_code(err, grpc.StatusCode.UNAUTHENTICATED)
    assert line.get_account().status == pb.CHANNEL_STATUS_AUTH_FAILED


def test_rate_limit_429_is_retried_and_sent(line):
    conv, _ = line.conversation()
    line.sim.fault({"status": 429, "kind": "rate_limit"})
    m = line.send(conv, "rate limited once")
    assert m.status in (pb.MESSAGE_STATUS_PENDING, pb.MESSAGE_STATUS_SENT), m
    if m.status == pb.MESSAGE_STATUS_PENDING:
        assert m.error_category == pb.ERROR_CATEGORY_RATE_LIMIT_ERROR, m
    final = line.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, SETTLE)
    _assert_single_delivery(line, final, first=429, retries=200)
    assert line.get_account().status == pb.CHANNEL_STATUS_ACTIVE


def test_monthly_quota_429_fails_without_retry(line):
    conv, _ = line.conversation()
    line.sim.fault({"status": 429, "kind": "quota"})
    m = line.send(conv, "over the monthly limit")
    assert m.status == pb.MESSAGE_STATUS_FAILED, m
    assert m.error_category == pb.ERROR_CATEGORY_QUOTA_EXCEEDED, m
    # The interval proves no retry: ten worker passes (at least 1 s), stretched by SLOW.
    time.sleep(max(WORKER_INTERVAL_MS * 10 / 1000, 1.0) * SLOW)
    assert len(line.push_requests()) == 1, line.push_requests()
    assert line.deliveries() == []
    assert line.message(conv, m.message_id).status == pb.MESSAGE_STATUS_FAILED
    # Not an auth problem: the account stays active.
    assert line.get_account().status == pb.CHANNEL_STATUS_ACTIVE


def test_400_recipient_error_is_permanent(line):
    conv, _ = line.conversation()
    line.sim.fault({"status": 400})  # "Failed to send messages"
    m = line.send(conv, "to nobody")
    assert m.status == pb.MESSAGE_STATUS_FAILED, m
    # The simulator's 400 carries LINE's "Failed to send messages": a recipient problem (any
    # other 400 would be INVALID_REQUEST_ERROR; line_api.c tells them apart by that text).
    assert m.error_category == pb.ERROR_CATEGORY_RECIPIENT_ERROR, m
    assert m.error_detail == "LINE could not send to the recipient (400)", m
    # The interval proves no retry: five worker passes (at least 0.5 s), stretched by SLOW.
    time.sleep(max(WORKER_INTERVAL_MS * 5 / 1000, 0.5) * SLOW)
    assert len(line.push_requests()) == 1


def test_max_attempts_ends_failed(line):
    conv, _ = line.conversation()
    line.sim.fault({"status": 500, "repeat": 20})
    m = line.send(conv, "always 500")
    final = line.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_FAILED, 30)
    assert final.error_category == pb.ERROR_CATEGORY_PROVIDER_ERROR, final
    n = len(line.push_requests())
    assert 2 <= n <= 8, f"max-attempts 8: {n} pushes"
    assert final.attempts == n, (final.attempts, n)
    assert line.deliveries() == []
    line.sim.reset()  # leftover faults


# ---------------------------------------------------------------------------------------------
# SIGKILL between recording and sending


def _kill_during_push(line, conn, fault):
    """Send with `fault` at the simulator, SIGKILL the connector while the push is in flight,
    restart it (short lease) and wait for the message to settle (line_harness.kill_mid_send)."""
    conv, mid, req = kill_mid_send(line, conn, lambda: line.sim.fault(fault),
                                   lambda: line.sim.pending_faults() == [])
    final = line.wait_status(conv, mid, pb.MESSAGE_STATUS_SENT, SETTLE + LEASE_SECONDS)
    return conv, final, req


def test_sigkill_before_provider_executes(line, conn):
    # The push is held and then refused (not executed): after the kill nothing was delivered.
    conv, final, req = _kill_during_push(line, conn, {"delay_ms": 5000, "status": 500})
    _assert_single_delivery(line, final, first=500, retries=200)
    # The caller, whose SendText died with the connector, retries it with the same key: it gets
    # the same message, already sent, and LINE is not called again.
    pushes = len(line.push_requests())
    again = conn.api.SendText(req).message
    assert again.message_id == final.message_id, again
    assert again.status == pb.MESSAGE_STATUS_SENT, again
    assert len(line.push_requests()) == pushes
    rows = line.db_messages()
    assert len(rows) == 1 and rows[0]["status"] == "sent"


def test_sigkill_after_provider_executed_gets_409(line, conn):
    conv, final, _ = _kill_during_push(line, conn, {"delay_ms": 5000, "execute": True})
    _assert_single_delivery(line, final, retries=409)
    assert len(line.db_messages()) == 1


def test_sigkill_while_push_is_held_in_flight(line, conn):
    # hold_ms: the sim holds the retry key in flight, then executes although the client died.
    conv, final, _ = _kill_during_push(line, conn, {"hold_ms": 3000})
    reqs = _assert_single_delivery(line, final, retries=409)
    assert len(reqs) >= 2, reqs
