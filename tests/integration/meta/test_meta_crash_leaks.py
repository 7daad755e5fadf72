"""The Meta connector killed mid-send, and no credential leaks."""
import subprocess
import uuid

import harness
from harness import rpc_error
from line_harness import LEASE_SECONDS, kill_mid_send
from meta_harness import echo_event, wait_for
from test_line_leaks import PG_DUMP, _find, _read

pb = harness.pb


def _kill_mid_send(ch, fault, echo_delay_ms):
    """line_harness.kill_mid_send with a Meta fault; the simulator's webhook URL follows the
    restarted connector. Returns the conversation and the settled message."""
    def point(conn, delay=echo_delay_ms):
        ch.sim.config(webhook_url=conn.webhook_url, echo_delay_ms=delay)

    conv, mid, _ = kill_mid_send(ch, ch.conn, lambda: ch.fault(fault),
                                 lambda: ch.sim.ctl("GET", "/__sim/faults") == [], point)
    ch.sim.config(echo_delay_ms=20)
    return conv, ch.wait_status(conv, mid, pb.MESSAGE_STATUS_SENT, 4 * LEASE_SECONDS + 5)


def test_sigkill_before_meta_executes_ends_sent_with_one_delivery(fb):
    _, final = _kill_mid_send(fb, {"delay_ms": 5000, "status": 500}, 20)
    assert len(fb.deliveries()) == 1 and len(fb.db_messages()) == 1
    assert final.external_message_id == fb.deliveries()[0]["message_id"]


def test_sigkill_after_meta_executed_is_reconciled_by_its_echo(fb):
    # Executed at once; its echo is delivered (and retried, like Meta) after the kill.
    _, final = _kill_mid_send(fb, {"delay_ms": 5000, "execute": True}, 300)
    assert len(fb.send_requests()) == 1 and len(fb.deliveries()) == 1
    assert final.external_message_id == fb.deliveries()[0]["message_id"]
    assert len(fb.db_messages()) == 1


def test_no_secret_in_logs_database_or_errors(meta_factory, graph_sim, service, cluster, mconn):
    token = f"EAAG-SENTINEL-{uuid.uuid4()}"
    bad_token = f"EAAG-SENTINEL-bad-{uuid.uuid4()}"
    secrets = [token, bad_token, mconn.app_secret, mconn.verify_token]
    ch = meta_factory(token=token)
    conv, psid = ch.conversation()
    errors = []
    assert ch.send(conv, "leak check: ok").status == pb.MESSAGE_STATUS_SENT
    ch.fault({"status": 500, "message": f"boom {token}"})
    m = ch.send(conv, "leak check: 500")
    ch.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 10)
    ch.fault({"kind": "window", "message": f"window {token} {mconn.app_secret}"})
    errors.append(str(ch.send(conv, "leak check: window")))
    ch.fault({"kind": "token", "message": f"bad token {token}"})
    errors.append(str(ch.send(conv, "leak check: 190")))
    errors.append(str(ch.send(conv, "leak check: fail fast")))
    e = rpc_error(ch.connect, token=bad_token)
    errors.append(f"{e.code()} {e.details()} {e.trailing_metadata()}")
    graph_sim.fault({"status": 500, "message": f"lookup {token}"}, path=f"/v21.0/{ch.page_id}")
    e = rpc_error(ch.connect)
    errors.append(f"{e.code()} {e.details()} {e.trailing_metadata()}")
    errors.append(str(ch.connect()))
    assert ch.deliver_text(psid, "inbound ok")[0] == 200
    assert ch.deliver(echo_event(ch.page_id, psid, "inbox"), sign_with=token)[0] == 401
    status, body = mconn.challenge(**{"hub.mode": "subscribe", "hub.verify_token": bad_token,
                                      "hub.challenge": "7"})
    errors.append(body)
    assert status == 403
    sent = [m.message_id for m in ch.messages(conv) if m.direction == pb.DIRECTION_OUTBOUND]

    # Positive controls: the logs hold this test's activity, the simulator got the token.
    wait_for(lambda: ch.tenant in _read(mconn.log_path) and sent[-1] in _read(mconn.log_path),
             10, what="this tenant's sends in the connector log")
    digest = __import__("hashlib").sha256(token.encode()).hexdigest()
    assert any(r.get("token_sha256") == digest for r in graph_sim.requests()), \
        "positive control: the simulator should have received the sentinel token"
    assert _find(f"x {token} y", [token])

    problems = []
    for label, path in (("connector log", mconn.log_path), ("persistence log", service.log_path),
                        ("graph-sim log", graph_sim.log_path)):
        hits = _find(_read(path), secrets)
        if hits:
            problems.append(f"{label}: {sorted({s for s, _ in hits})}")
    if _find(str(graph_sim.requests()), secrets):
        problems.append("graph-sim request log")
    dump = subprocess.run([PG_DUMP, "--data-only", "-d", cluster.dsn("super")],
                          capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0 and ch.tenant in dump.stdout, dump.stderr
    if _find(dump.stdout, secrets):
        problems.append(f"database dump: {_find(dump.stdout, secrets)}")
    if _find("\n".join(errors), secrets):
        problems.append(f"gRPC replies/errors: {_find(chr(10).join(errors), secrets)}")
    for msg in ch.messages(conv):
        if _find(msg.error_detail + msg.content_struct_json, secrets):
            problems.append(f"message {msg.message_id}: {msg.error_detail!r}")
    assert not problems, "secrets leaked:\n" + "\n".join(problems)
