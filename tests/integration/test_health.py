"""grpc.health.v1.Health/Check, the admin HTTP endpoints (/healthz, /metrics) and migrations."""
import glob
import os
import re
import subprocess

import grpc
import pytest

from harness import assert_code, health_pb, rpc_error


def test_health_check_overall_is_serving(api):
    assert api.health("").status == health_pb.HealthCheckResponse.SERVING


def test_health_check_persistence_service_is_serving(api):
    assert api.health("omnichat.persistence.v1.Persistence").status == health_pb.HealthCheckResponse.SERVING


def test_health_check_unknown_service_is_not_found(api):
    assert_code(rpc_error(api.health, "no.such.Service"), grpc.StatusCode.NOT_FOUND)


def test_unknown_method_is_unimplemented(service):
    mc = service.channel.unary_unary("/omnichat.persistence.v1.Persistence/NoSuchMethod",
                                     request_serializer=lambda x: x, response_deserializer=lambda x: x)
    with pytest.raises(grpc.RpcError) as e:
        mc(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unparsable_request_bytes_are_rejected_without_harm(service, api):
    mc = service.channel.unary_unary("/omnichat.persistence.v1.Persistence/GetConversation",
                                     request_serializer=lambda x: x, response_deserializer=lambda x: x)
    for garbage in (b"\xff\xff\xff\xff\x0f\x01", b"\x0a\xff\x01abc", b"\x12\x05ab"):
        with pytest.raises(grpc.RpcError) as e:
            mc(garbage, timeout=10)
        assert e.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), e.value
    assert api.health("").status == health_pb.HealthCheckResponse.SERVING


@pytest.fixture
def admin(service):
    if not service.admin_port:
        pytest.fail("the 'listening' log line carries no admin_port")
    return service


def test_admin_healthz(admin):
    status, _ = admin.admin_get("/healthz")
    assert status == 200


def test_admin_unknown_path_is_404(admin):
    status, _ = admin.admin_get("/no-such-path")
    assert status == 404


def _eventual_counter(admin, method, code, ok):
    """The service counts a call once its status is queued, so a client can see the answer a
    moment before the counter moves: read /metrics again for up to two seconds."""
    import time
    value = None
    for _ in range(20):
        value = _counter(admin.admin_get("/metrics")[1], method, code=code)
        if value is not None and ok(value):
            break
        time.sleep(0.1)
    return value


def _counter(text, method, code="OK"):
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("omnichat_rpc_requests_total{") and method in line and re.search(
                rf'code="{code}"', line, re.I):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def test_admin_metrics_count_rpcs(admin, b):
    b.account()  # at least one RegisterChannelAccount
    status, text = admin.admin_get("/metrics")
    assert status == 200
    assert "omnichat_rpc_requests_total" in text, "RPC counter missing from /metrics"
    assert "omnichat_rpc_latency_seconds" in text, "RPC latency histogram missing from /metrics"
    assert re.search(r"^omnichat_rpc_latency_seconds_bucket\{.*le=\"\+Inf\"\} \d", text, re.M), \
        "latency histogram has no +Inf bucket"
    before = _counter(text, "RegisterChannelAccount")
    assert before is not None and before >= 1, "no RegisterChannelAccount/OK sample"
    for _ in range(3):
        b.account()
    after = _eventual_counter(admin, "RegisterChannelAccount", "OK", lambda v: v >= before + 3)
    assert after is not None and after >= before + 3


def test_admin_metrics_count_error_codes(admin, b):
    from harness import new_id
    rpc_error(b.api.GetConversation, tenant_id=b.tenant, conversation_id=new_id())
    got = _eventual_counter(admin, "GetConversation", "NOT_FOUND", lambda v: v > 0)
    assert got not in (None, 0), "no GetConversation sample with code NOT_FOUND"


def test_migrate_again_is_a_no_op(service, db):
    before = db.rows("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'omnichat'")
    service.migrate()
    assert db.rows("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'omnichat'") == before


def test_log_lines_are_json(service):
    import json
    lines = [ln for ln in service.log_text().splitlines() if ln.strip()]
    assert lines
    bad = []
    for ln in lines:
        try:
            ev = json.loads(ln)
            if "msg" not in ev:
                bad.append(ln)
        except ValueError:
            bad.append(ln)
    assert not bad, f"{len(bad)} stderr lines are not JSON log events, e.g. {bad[:3]}"


def test_migrate_refuses_edited_history(service, db):
    """A checksum that no longer matches the embedded migration stops migrate before it
    touches anything; putting the checksum back makes it work again."""
    good = db.scalar("SELECT checksum FROM omnichat.schema_migrations WHERE version = 1")
    db.run("UPDATE omnichat.schema_migrations SET checksum = 'edited' WHERE version = 1")
    try:
        with pytest.raises(RuntimeError) as e:
            service.migrate()
        assert "0001_schema.sql was edited after it was applied" in str(e.value)
    finally:
        db.run(f"UPDATE omnichat.schema_migrations SET checksum = '{good}' WHERE version = 1")
    service.migrate()


def test_migrate_refuses_a_newer_schema(service, db):
    """An older binary never runs over a schema with migrations it does not know."""
    db.run("INSERT INTO omnichat.schema_migrations (version, name, checksum) "
           "VALUES (9999, '9999_future.sql', 'x')")
    try:
        with pytest.raises(RuntimeError) as e:
            service.migrate()
        assert "migration 9999" in str(e.value) and "does not know" in str(e.value)
    finally:
        db.run("DELETE FROM omnichat.schema_migrations WHERE version = 9999")


def test_concurrent_migrations_wait_for_each_other(service, db):
    """Several pods starting at once: the advisory lock serialises them and all succeed."""
    import threading
    errors = []

    def run():
        try:
            service.migrate()
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errors.append(str(e))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    migrations = glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "services",
                                        "persistence", "migrations", "*.sql"))
    assert db.scalar("SELECT count(*) FROM omnichat.schema_migrations") == str(len(migrations))


def test_runtime_role_cannot_rewrite_migration_history(service):
    """The service's login role must not be able to touch schema_migrations."""
    import subprocess
    from harness import PSQL
    r = subprocess.run([PSQL, service.cluster.dsn("app"), "-X", "-c",
                        "UPDATE omnichat.schema_migrations SET checksum = 'x'"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "permission denied" in r.stderr
