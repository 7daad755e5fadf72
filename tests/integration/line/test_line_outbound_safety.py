"""Outbound safety: LINE's 24 h retry-key window, unknown outcomes that stay unknown, and one
lease owner per attempt. The window is crossed by moving a message's created_at back in the
database (the connector compares it with its clock before every push)."""
import re
import threading
import time

import grpc

import harness
from harness import pb
from line_harness import LINE_TIMEOUT_MS, SLOW, WORKER_INTERVAL_MS, wait_for

SETTLE = 15
OWNER_RE = re.compile(r"^(.+):[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _row(line, mid):
    cols = ["status", "coalesce(error_category, '')", "coalesce(error_detail, '')", "attempts",
            "next_attempt_at IS NULL", "coalesce(lease_owner, '')",
            "coalesce(lease_until > now(), false)"]
    names = ["status", "category", "detail", "attempts", "no_next", "lease_owner", "leased"]
    rows = line.db.rows(f"SELECT {', '.join(cols)} FROM omnichat.messages WHERE tenant_id = "
                        f"{harness.sql_lit(line.tenant)} AND id = {harness.sql_lit(mid)}")
    assert len(rows) == 1, rows
    r = dict(zip(names, rows[0]))
    r["attempts"] = int(r["attempts"])
    r["no_next"] = r["no_next"] == "t"
    r["leased"] = r["leased"] == "t"
    return r


def _cross_the_window(line, mid):
    """The message was created a day ago (LINE's retry key is dead) and is due now."""
    line.db.run("UPDATE omnichat.messages SET created_at = now() - interval '24 hours', "
                "next_attempt_at = now() "
                f"WHERE tenant_id = {harness.sql_lit(line.tenant)} AND id = {harness.sql_lit(mid)}")


def _quiet_period():
    """Before a "nothing was sent" check: proves ten worker passes (at least 1 s), stretched
    by SLOW, without a push."""
    time.sleep(max(WORKER_INTERVAL_MS * 10 / 1000, 1.0) * SLOW)


def test_retry_after_window_of_pending_message_fails_without_calling_line(line, conn):
    # Retries far apart, so only the test decides when the message is due again.
    with conn.reconfigured(backoff_base_ms=60000, backoff_max_ms=60000):
        conv, _ = line.conversation()
        line.sim.fault({"status": 500})
        m = line.send(conv, "a 500, then the window closes")
        assert m.status == pb.MESSAGE_STATUS_PENDING and m.attempts == 1, m
        _cross_the_window(line, m.message_id)
        final = line.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_FAILED, SETTLE)
        assert final.error_category == pb.ERROR_CATEGORY_PROVIDER_ERROR, final
        assert final.error_detail == "provider retry window closed", final
        assert final.attempts == 1, "no provider call, so no attempt counted"
        assert len(line.push_requests()) == 1, line.push_requests()
        assert line.deliveries() == []


def test_retry_after_window_of_unknown_message_stays_unknown_for_good(line, conn):
    with conn.reconfigured(backoff_base_ms=60000, backoff_max_ms=60000):
        conv, _ = line.conversation()
        # Executed at once, answer lost to our timeout: it may well have been delivered.
        line.sim.fault({"delay_ms": LINE_TIMEOUT_MS * 3, "execute": True})
        m = line.send(conv, "timed out, then the window closes")
        assert m.status == pb.MESSAGE_STATUS_UNKNOWN, m
        _cross_the_window(line, m.message_id)
        want = "provider retry window closed; delivery unknown"
        r = wait_for(lambda: (lambda r: r if r["detail"] == want else None)(_row(line, m.message_id)),
                     SETTLE, 0.1, "the worker to settle the message")
        assert r["status"] == "unknown" and r["no_next"], r
        assert r["category"] == "timeout" and r["attempts"] == 1, r
        assert r["lease_owner"] == "", r
        # Never claimed or pushed again.
        _quiet_period()
        assert len(line.push_requests()) == 1, line.push_requests()
        assert _row(line, m.message_id) == r
        assert len(line.deliveries()) == 1  # it was delivered: FAILED would invite a resend


def test_max_attempts_after_unknown_outcomes_ends_unknown_not_failed(line, conn):
    with conn.reconfigured(max_attempts=2):
        conv, _ = line.conversation()
        # Connection reset after the request was sent, twice: outcome unknown both times.
        line.sim.fault({"drop": True}, {"drop": True})
        m = line.send(conv, "dropped twice")
        assert m.status == pb.MESSAGE_STATUS_UNKNOWN, m
        r = wait_for(lambda: (lambda r: r if r["attempts"] == 2 and r["lease_owner"] == ""
                              else None)(_row(line, m.message_id)),
                     SETTLE, 0.1, "the second attempt to be recorded")
        assert r["status"] == "unknown" and r["no_next"], r
        assert r["category"] == "network_error", r
        assert r["detail"].endswith("gave up after 2 attempts; delivery unknown"), r
        _quiet_period()
        assert len(line.push_requests()) == 2, line.push_requests()
        assert _row(line, m.message_id)["status"] == "unknown"


def test_stale_send_cannot_complete_a_message_the_worker_took_over(line, conn):
    """The lease of a SendText attempt runs out while its push is in flight; the retry worker
    of the same process takes the message over. Only the worker may record the outcome."""
    with conn.reconfigured(lease_seconds=10, line_timeout_ms=3000):
        conv, _ = line.conversation()
        # Both pushes are held past the 3 s timeout (the first one executed).
        line.sim.fault({"delay_ms": 6000, "execute": True}, {"delay_ms": 6000})
        req = line.send_request(conv, "two holders")
        outcome = {}

        def call():
            try:
                outcome["reply"] = conn.api.SendText(req, timeout=30 * SLOW)
            except grpc.RpcError as e:
                outcome["error"] = e

        t = threading.Thread(target=call)
        t.start()
        try:
            wait_for(lambda: len(line.sim.pending_faults()) == 1, 10, 0.01,
                     "the first push to reach the simulator")
            rows = line.db_messages()
            assert len(rows) == 1, rows
            mid = rows[0]["id"]
            first = _row(line, mid)
            m = OWNER_RE.match(first["lease_owner"])
            assert m, f"lease owner is not '<instance-id>:<uuid>': {first['lease_owner']!r}"
            # The lease runs out under the in-flight push (as after a stall).
            line.db.run("UPDATE omnichat.messages SET lease_until = now() - interval '1 second', "
                        "next_attempt_at = now() - interval '1 second' "
                        f"WHERE tenant_id = {harness.sql_lit(line.tenant)} "
                        f"AND id = {harness.sql_lit(mid)}")
            taken = wait_for(lambda: (lambda r: r if r["leased"] else None)(_row(line, mid)),
                             10, 0.02, "the worker to take the message over")
            assert taken["lease_owner"] != first["lease_owner"], (
                "the worker's lease must not share its owner with the SendText attempt")
            m2 = OWNER_RE.match(taken["lease_owner"])
            assert m2 and m2.group(1) == m.group(1), (first, taken)  # same process
        finally:
            t.join(40 * SLOW)
        assert "error" in outcome, f"the stale SendText recorded its outcome: {outcome}"
        assert outcome["error"].code() == grpc.StatusCode.UNAVAILABLE, outcome["error"]
        final = line.wait_status(conv, mid, pb.MESSAGE_STATUS_SENT, SETTLE + 10)
        assert len(line.deliveries()) == 1
        assert final.attempts >= 2, final
