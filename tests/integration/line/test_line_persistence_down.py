"""Webhook while persistence cannot write: 503 (LINE redelivers), and after recovery the
redelivery is 200 with exactly one message. Runs on its own cluster, persistence service and
connector (the shared simulator is reused; this test injects no faults there)."""
import time

import pytest

from conftest import start_stack, stop_stack  # ../conftest.py (the persistence harness)
import grpc

from harness import Api, Db, assert_code, log_tail, pb, rpc_error, sanitizer_lines
from line_harness import SLOW, Connector, LineChannel, new_user_id, text_event


@pytest.fixture(scope="module")
def isolated(line_sim):
    if not Connector.binary_present():
        pytest.exit("omnichat-connector-line not found (set OMNICHAT_BIN_DIR)", returncode=3)
    cluster, svc = start_stack("line-pdown")
    conn = None
    try:
        conn = Connector(svc.grpc_port, line_sim.port, name="connector-line-pdown").start()
        yield cluster, svc, conn
    finally:
        rc = conn.stop() if conn else 0
        try:
            stop_stack(cluster, svc)
        finally:
            if conn is not None:
                bad = sanitizer_lines(conn.log_text())
                assert not bad, "\n".join(bad[:20]) + "\n" + log_tail(conn.log_path)
                assert rc in (0, -15), f"connector exit {rc}\n{log_tail(conn.log_path)}"


def test_database_down_webhook_503_then_redelivery_200(isolated, line_sim):
    cluster, svc, conn = isolated
    ch = LineChannel(conn, line_sim, Api(svc.channel, timeout=20), Db(cluster.dsn("super")))
    user = new_user_id()
    assert ch.deliver(text_event(user, "before the outage"))[0] == 200

    ev = text_event(user, "during the outage")
    cluster.stop()
    try:
        t0 = time.time()
        status, body = ch.deliver(ev, timeout=30)
        took = time.time() - t0
        assert status == 503, f"expected 503 while the database is down, got {status}: {body}"
        assert took < 2 + 0.5 * SLOW, f"503 took {took:.2f}s (LINE's deadline is 2 s)"
        assert conn.alive(), log_tail(conn.log_path)
    finally:
        cluster.start()

    deadline = time.time() + 20 * SLOW
    statuses = []
    while time.time() < deadline:
        status, _ = ch.deliver(dict(ev, deliveryContext={"isRedelivery": True}), timeout=30)
        statuses.append(status)
        if status == 200:
            break
        time.sleep(0.25)
    assert statuses[-1] == 200, f"redelivery after recovery: {statuses}"
    assert all(s in (200, 503) for s in statuses), statuses
    rows = ch.db_messages("direction = 'inbound'")
    keys = [r["idempotency_key"] for r in rows]
    assert len(rows) == 2 and keys.count(ev["message"]["id"]) == 1, rows


def test_persistence_process_down_webhook_503(isolated, line_sim):
    """The persistence service itself is gone (not only the database): still 503, no crash."""
    cluster, svc, conn = isolated
    ch = LineChannel(conn, line_sim, Api(svc.channel, timeout=20), Db(cluster.dsn("super")))
    user = new_user_id()
    assert ch.deliver(text_event(user, "before"))[0] == 200
    svc.proc.send_signal(19)  # SIGSTOP: connections hang rather than refuse
    try:
        t0 = time.time()
        status, _ = ch.deliver(text_event(user, "frozen persistence"), timeout=30)
        took = time.time() - t0
        assert status == 503, status
        assert took < 2 + 0.5 * SLOW, f"503 took {took:.2f}s (LINE's deadline is 2 s)"
    finally:
        svc.proc.send_signal(18)  # SIGCONT
    assert conn.alive(), log_tail(conn.log_path)


def test_database_down_send_is_unavailable_then_retry_sends_once(isolated, line_sim):
    cluster, svc, conn = isolated
    ch = LineChannel(conn, line_sim, Api(svc.channel, timeout=20), Db(cluster.dsn("super")))
    conv, user = ch.conversation()
    req = ch.send_request(conv, "sent after the outage")
    cluster.stop()
    try:
        t0 = time.time()
        err = rpc_error(conn.api.SendText, req)
        assert_code(err, grpc.StatusCode.UNAVAILABLE)
        assert time.time() - t0 < 10 * SLOW
        assert ch.push_requests() == [], "LINE was called although nothing could be recorded"
    finally:
        cluster.start()
    deadline = time.time() + 20 * SLOW
    while True:
        try:
            m = conn.api.SendText(req).message
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            assert time.time() < deadline, "SendText still UNAVAILABLE 20 s after recovery"
            time.sleep(0.25)
    if m.status != pb.MESSAGE_STATUS_SENT:
        m = ch.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 15)
    assert len(ch.deliveries()) == 1 and len(ch.db_messages()) == 1
