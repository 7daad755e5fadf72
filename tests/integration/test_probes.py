"""Readiness, liveness and graceful shutdown of persistence: /readyz and Health/Check follow the
database (a service started while it is down is not ready until it comes), /healthz stays about
the process, and SIGTERM turns NOT_SERVING first, serves through the drain pause, then refuses
new calls while an in-flight call finishes. Runs on its own cluster and service."""
import subprocess
import threading
import time

import grpc
import pytest

from harness import (PSQL, Api, Builder, PgCluster, Service, health_pb, log_tail,
                     new_calls_refused, wait_until)

SERVING = health_pb.HealthCheckResponse.SERVING
NOT_SERVING = health_pb.HealthCheckResponse.NOT_SERVING
DRAIN_MS = 2000


@pytest.fixture(scope="module")
def cluster():
    c = PgCluster().init()
    yield c
    c.destroy()


def _status(api):
    return api.health("", timeout=5).status


def _ready(svc):
    return svc.admin_get("/readyz", timeout=5)


def test_readiness_follows_the_database_and_liveness_does_not(cluster):
    svc = Service(cluster, name="probes", extra_args=["--connect-timeout-s", "1"])
    svc.migrate()
    cluster.grant()
    cluster.stop()
    try:
        # Starting while the database is down: the process is up, not ready.
        svc.start()
        api = Api(svc.channel, timeout=10)
        assert _status(api) == NOT_SERVING
        status, body = _ready(svc)
        assert (status, body.strip()) == (503, "not ready: database unreachable")
        assert svc.admin_get("/healthz")[0] == 200

        # starting -> ready once the database comes.
        cluster.start()
        wait_until(lambda: _status(api) == SERVING, 15, "SERVING after the database started")
        assert _ready(svc) == (200, "ready\n")

        # database stopped: NOT_SERVING and 503, while liveness stays 200 throughout.
        cluster.stop()
        wait_until(lambda: _status(api) == NOT_SERVING, 15, "NOT_SERVING after the database stopped")
        assert _ready(svc)[0] == 503
        for _ in range(3):  # across several readiness checks (one a second)
            assert svc.admin_get("/healthz")[0] == 200
            # The gRPC liveness service (a Kubernetes gRPC liveness probe) stays SERVING.
            assert api.health("liveness", timeout=5).status == SERVING
            time.sleep(0.5)
        assert _status(api) == NOT_SERVING

        # back: SERVING again, and calls work.
        cluster.start()
        wait_until(lambda: _status(api) == SERVING, 15, "SERVING after the database is back")
        assert _ready(svc) == (200, "ready\n")
        Builder(api).account()
        log = svc.log_text()
        assert '"msg":"not ready"' in log and '"msg":"ready"' in log, log_tail(svc.log_path)
    finally:
        rc = svc.stop()
    assert rc == 0, log_tail(svc.log_path)


def _sql(dsn, statement):
    return subprocess.run([PSQL, dsn, "-X", "-A", "-t", "-c", statement], capture_output=True,
                          text=True, timeout=30).stdout.strip()


class _TableLock:
    """The messages table locked by a psql session until released: a ListMessages waits behind
    it (an in-flight call that ends when the test says)."""

    def __init__(self, dsn):
        self.p = subprocess.Popen([PSQL, dsn, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, text=True)
        self.p.stdin.write("SET application_name = 'probes-row-lock';\nBEGIN;\n"
                           "LOCK TABLE omnichat.messages IN ACCESS EXCLUSIVE MODE;\n")
        self.p.stdin.flush()
        # The server's view says when the lock is held (psql's piped output is buffered).
        wait_until(lambda: _sql(dsn, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
                                     "USING (pid) WHERE a.application_name = 'probes-row-lock' "
                                     "AND a.state = 'idle in transaction' "
                                     "AND l.mode = 'AccessExclusiveLock'") == "1", 10,
                   "the table lock")

    def release(self):
        if self.p.poll() is None:
            self.p.stdin.write("COMMIT;\n")
            self.p.stdin.close()
            self.p.wait(timeout=10)


def test_sigterm_drains_then_refuses_then_exits_cleanly(cluster):
    svc = Service(cluster, name="probes-term",
                  extra_args=["--shutdown-drain-ms", str(DRAIN_MS), "--shutdown-grace-ms", "20000",
                              "--statement-timeout-ms", "30000"])
    svc.migrate()
    cluster.grant()
    svc.start()
    api = Api(svc.channel, timeout=30)
    b = Builder(api)
    acct = b.account()
    conv = b.conversation(acct, "T-inflight")
    assert _status(api) == SERVING

    lock = _TableLock(cluster.dsn("super"))
    inflight = {}

    def slow_call():
        try:
            inflight["resp"] = Api(svc.new_channel(), timeout=30).ListMessages(
                tenant_id=b.tenant, conversation_id=conv.conversation_id)
        except grpc.RpcError as e:
            inflight["err"] = e

    t = threading.Thread(target=slow_call)
    try:
        t.start()
        wait_until(lambda: _sql(cluster.dsn("super"),
                                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                                "'Lock' AND application_name = 'omnichat-persistence'") == "1",
                   10, "the call to wait for the row")

        t_term = time.monotonic()
        svc.proc.send_signal(15)
        # The drain: NOT_SERVING and /readyz 503 at once, while calls are still served.
        wait_until(lambda: _status(api) == NOT_SERVING, 5, "NOT_SERVING after SIGTERM")
        status, body = _ready(svc)
        assert (status, body.strip()) == (503, "not ready: shutting down")
        assert svc.admin_get("/healthz")[0] == 200
        # Calls are still served during the drain, on a new connection too. (A data call here
        # could wait behind the table lock: a new pooled connection prepares every statement.)
        ch = svc.new_channel()
        try:
            assert _status(Api(ch, timeout=5)) == NOT_SERVING
        finally:
            ch.close()
        assert time.monotonic() - t_term < DRAIN_MS / 1000, "the checks above outlasted the drain"

        # After the drain: new calls are refused while the in-flight one still runs.
        wait_until(lambda: new_calls_refused(svc.new_channel), 10, "new calls to be refused after the drain")
        assert time.monotonic() - t_term >= DRAIN_MS / 1000 * 0.9
        assert svc.alive(), "exited with a call in flight"
        assert t.is_alive() and not inflight
    finally:
        lock.release()
        t.join(30)

    # The in-flight call finished with an answer, then the process exited cleanly.
    assert "resp" in inflight, inflight.get("err")
    svc.channel.close()
    svc.channel = None
    rc = svc.proc.wait(timeout=30)
    assert rc == 0, log_tail(svc.log_path)


class _Watch:
    """A Health/Watch stream read on a thread of its own: every status received, in order,
    and the status that ended the stream."""

    def __init__(self, channel, service=""):
        call = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=health_pb.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb.HealthCheckResponse.FromString)
        self.call = call(health_pb.HealthCheckRequest(service=service), timeout=120)
        self.statuses, self.ended = [], None
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        try:
            for r in self.call:
                self.statuses.append(r.status)
            self.ended = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.ended = e.code()

    def wait(self, statuses, what):
        wait_until(lambda: self.statuses == statuses, 15, f"{what}: {self.statuses}")


def test_watch_follows_readiness_and_ends_at_shutdown(cluster):
    """Health/Watch: the status at once, then each change (database down, back), as it
    happens; an unknown service is SERVICE_UNKNOWN and stays open; SIGTERM sends NOT_SERVING,
    then the stream ends UNAVAILABLE."""
    svc = Service(cluster, name="watch", extra_args=["--connect-timeout-s", "1"])
    svc.migrate()
    cluster.grant()
    svc.start()
    ch = svc.new_channel()  # its own: stop() closes svc.channel before the signal
    try:
        w = _Watch(ch)
        w.wait([SERVING], "the current status first")
        unknown = _Watch(svc.channel, "no.such.Service")
        unknown.wait([health_pb.HealthCheckResponse.SERVICE_UNKNOWN], "an unknown service")
        named = _Watch(svc.channel, "omnichat.persistence.v1.Persistence")
        named.wait([SERVING], "the persistence service by name")

        cluster.stop()
        w.wait([SERVING, NOT_SERVING], "NOT_SERVING when the database stopped")
        cluster.start()
        w.wait([SERVING, NOT_SERVING, SERVING], "SERVING when it came back")
        named.wait([SERVING, NOT_SERVING, SERVING], "the named watch follows too")
        assert unknown.statuses == [health_pb.HealthCheckResponse.SERVICE_UNKNOWN]
        assert w.ended is None and unknown.ended is None  # still open
    finally:
        rc = svc.stop()
    assert rc == 0, log_tail(svc.log_path)
    try:
        w.wait([SERVING, NOT_SERVING, SERVING, NOT_SERVING], "NOT_SERVING at shutdown")
        wait_until(lambda: w.ended is not None, 15, "the watch to end")
        assert w.ended == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()
