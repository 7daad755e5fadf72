"""No credential leaks: a sentinel access token and channel secret, driven through success, 401,
500, timeout, provider error bodies, ConnectChannel failures and webhooks, must not appear in
any service log (connector, persistence), any database column (pg_dump --data-only as
superuser), any gRPC error detail, or any message's error_detail.

Excluded on purpose: the LINE simulator's own log and request log. The simulator plays the
provider, which legitimately receives the token (its request log is our positive control)."""
import base64
import os
import subprocess
import tempfile
import uuid

import grpc

from harness import pb, rpc_error
from line_harness import LINE_TIMEOUT_MS, PUSH_PATH, sign, text_event, wait_for

PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"


def _forms(secret):
    """The secret as it could show up in text: plain, hex (bytea in a dump), base64."""
    raw = secret.encode()
    forms = {secret, raw.hex()}
    for i in range(3):  # base64 of the value at any alignment
        forms.add(base64.b64encode(b"\0" * i + raw).decode()[4:-4])
    return [f for f in forms if len(f) >= 12]


def _find(text, secrets):
    return [(s, f) for s in secrets for f in _forms(s) if f in text]


def _read(path):
    with open(path, "r", errors="replace") as f:
        return f.read()


def test_no_secret_in_logs_database_or_errors(line_factory, line_sim, service, cluster, conn):
    token = f"tok-SENTINEL-{uuid.uuid4()}"
    secret = f"sec-SENTINEL-{uuid.uuid4()}"
    bad_token = f"tok-SENTINEL-bad-{uuid.uuid4()}"
    secrets = [token, secret, bad_token]
    ch = line_factory(token=token, secret=secret)
    conv, user = ch.conversation()
    errors = []  # every gRPC error detail and every reply we got

    # success
    m = ch.send(conv, "leak check: ok")
    assert m.status == pb.MESSAGE_STATUS_SENT, m
    # 500 then success
    line_sim.fault({"status": 500, "message": f"boom {token}"})
    m = ch.send(conv, "leak check: 500")
    ch.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 15)
    # timeout then 409
    line_sim.fault({"delay_ms": LINE_TIMEOUT_MS * 3, "execute": True})
    m = ch.send(conv, "leak check: timeout")
    ch.wait_status(conv, m.message_id, pb.MESSAGE_STATUS_SENT, 15)
    # a provider error body that echoes the credentials
    line_sim.fault({"status": 400, "message": f"bad request token={token} secret={secret}"})
    m = ch.send(conv, "leak check: 400 echo")
    assert m.status == pb.MESSAGE_STATUS_FAILED, m
    errors.append(str(m))
    # 401 → auth_failed, fail-fast, then reconnect with the same token
    line_sim.fault({"status": 401, "message": f"Authentication failed: {token}"})
    m = ch.send(conv, "leak check: 401")
    assert m.status == pb.MESSAGE_STATUS_FAILED and m.error_category == pb.ERROR_CATEGORY_AUTH_ERROR
    errors.append(str(m))
    errors.append(str(ch.send(conv, "leak check: fail fast")))
    # ConnectChannel with an unknown token → UNAUTHENTICATED (details must not echo it)
    e = rpc_error(ch.connect, token=bad_token)
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    errors.append(f"{e.code()} {e.details()} {e.trailing_metadata()}")
    # ConnectChannel with the token while the provider fails
    line_sim.fault({"status": 500, "message": f"info failed {token}"}, path="/v2/bot/info")
    e = rpc_error(ch.connect)
    errors.append(f"{e.code()} {e.details()} {e.trailing_metadata()}")
    r = ch.connect()
    assert r.channel_account.status == pb.CHANNEL_STATUS_ACTIVE
    errors.append(str(r))
    # validation errors
    for req in (ch.send_request(conv, ""), ch.send_request(conv, "x", key="")):
        e = rpc_error(ch.conn.api.SendText, req)
        errors.append(f"{e.code()} {e.details()} {e.trailing_metadata()}")
    e = rpc_error(ch.conn.api.ConnectChannel, tenant_id="not-a-uuid", access_token=token,
                  channel_secret=secret)
    errors.append(f"{e.code()} {e.details()} {e.trailing_metadata()}")
    # webhooks: good, bad signature, missing signature, signature made with the token
    assert ch.deliver(text_event(user, "inbound ok"))[0] == 200
    body = b'{"destination":"%s","events":[]}' % ch.bot_user_id.encode()
    assert ch.conn.webhook(ch.account_id, body, signature=sign(token, body))[0] == 401
    assert ch.conn.webhook(ch.account_id, body, signature=secret)[0] == 401
    assert ch.conn.webhook(ch.account_id, body)[0] == 401
    status, resp = ch.conn.webhook(ch.account_id, body, signature="x" + secret)
    errors.append(resp.decode("utf-8", "replace"))
    sent = [m.message_id for m in ch.messages(conv) if m.direction == pb.DIRECTION_OUTBOUND]
    assert sent

    # --- positive controls: the search finds what is there --------------------------------
    # The logs scanned below are the ones this test's activity went to: each holds this
    # tenant's calls (a log sent elsewhere would pass the scan vacuously). Awaited, because a
    # service writes a call's line after its reply.
    wait_for(lambda: ch.tenant in _read(service.log_path), 10,
             what="this tenant's calls in the persistence log")
    wait_for(lambda: ch.tenant in _read(conn.log_path) and sent[-1] in _read(conn.log_path), 10,
             what="this tenant's sends in the connector log")
    reqs = line_sim.requests(PUSH_PATH)
    assert any(r["headers"].get("authorization") == f"Bearer {token}" for r in reqs), \
        "positive control: the sentinel token should be in the simulator's request log"
    fd, control = tempfile.mkstemp(prefix="omnichat-it-sentinel-")
    with os.fdopen(fd, "w") as f:
        f.write(f"control: {token} / {secret}\n")
    assert {s for s, _ in _find(_read(control), secrets)} == {token, secret}
    assert _find(bytes.fromhex(token.encode().hex()).hex(), [token])  # hex form is searched

    # --- the checks ------------------------------------------------------------------------
    problems = []
    for label, path in (("connector log", conn.log_path), ("persistence log", service.log_path)):
        hits = _find(_read(path), secrets)
        if hits:
            problems.append(f"{label} {path}: {sorted({s for s, _ in hits})}")
    for extra in (conn.out_path, service.out_path):
        if os.path.exists(extra) and _find(_read(extra), secrets):
            problems.append(f"stdout {extra}")
    dump = subprocess.run([PG_DUMP, "--data-only", "-d", cluster.dsn("super")],
                          capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert ch.tenant in dump.stdout, "positive control: the dump holds this tenant's rows"
    hits = _find(dump.stdout, secrets)
    if hits:
        problems.append(f"database dump: {hits}")
    hits = _find("\n".join(errors), secrets)
    if hits:
        problems.append(f"gRPC replies/errors: {hits}")
    for msg in ch.messages(conv):
        if _find(msg.error_detail + msg.content_struct_json, secrets):
            problems.append(f"message {msg.message_id} error_detail: {msg.error_detail!r}")
    acct = ch.get_account()
    for c in acct.credentials:
        if any(s.encode() in c.ciphertext for s in secrets):
            problems.append(f"plaintext inside the sealed {c.field}")
    assert not problems, "secrets leaked:\n" + "\n".join(problems)
