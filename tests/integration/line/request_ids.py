"""Following one request id through the services' JSON logs (shared by the LINE and Meta
request-id tests)."""
import json
import os
import re
import time

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def mark(proc):
    return os.path.getsize(proc.log_path)


def events_since(proc, offset):
    """The JSON log events written after offset (other lines skipped)."""
    with open(proc.log_path, "r", errors="replace") as f:
        f.seek(offset)
        text = f.read()
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def wait_for_event(proc, offset, pred, timeout=5):
    """Access lines are written after the reply: poll for them."""
    deadline = time.time() + timeout
    while True:
        evs = events_since(proc, offset)
        if any(pred(e) for e in evs):
            return evs
        if time.time() > deadline:
            raise AssertionError(f"no such log line in {proc.log_path}: {evs[-10:]}")
        time.sleep(0.05)


def assert_followed(rid, tenant, conn, conn_off, pst, pst_off, conn_access, pst_access):
    """The access lines named are there with rid, every line carrying rid names this tenant or
    none, and every line about `tenant` (fresh per test) since the offsets carries a request id:
    rid, or the one of the channel's connect, whose access lines may land after the offsets."""
    has = lambda access: lambda e: e.get("request_id") == rid and all(  # noqa: E731
        e.get(k) == v for k, v in access.items())
    conn_evs = wait_for_event(conn, conn_off, has(conn_access))
    pst_evs = wait_for_event(pst, pst_off, has(pst_access))
    # Positive control: the logs were parsed and hold this request's lines.
    assert len([e for e in conn_evs if e.get("request_id") == rid]) >= 1
    assert len([e for e in pst_evs if e.get("request_id") == rid]) >= 1
    for label, evs in (("connector", conn_evs), ("persistence", pst_evs)):
        about = [e for e in evs if e.get("tenant_id") == tenant]
        # A webhook routed by its body is logged by the connector before (without) a tenant.
        assert about or label == "connector", f"no {label} line names the tenant: {evs[-10:]}"
        stray = [e for e in about if not e.get("request_id")]
        assert not stray, f"{label} lines about the tenant without a request id: {stray}"
        other = [e for e in evs if e.get("request_id") == rid and e.get("tenant_id", tenant)
                 not in (tenant, "")]
        assert not other, f"{label} lines with {rid} about another tenant: {other}"
