"""Readiness, liveness and graceful shutdown of the connectors (LINE and Meta, one engine):
not ready while starting without persistence, ready once it answers SERVING; persistence stopped -> NOT_SERVING and /readyz 503 while
/healthz stays 200; persistence back -> SERVING; SIGTERM -> NOT_SERVING during the drain pause,
then calls refused, then a clean exit. Runs on its own cluster and persistence service."""
import os
import sys
import time

import pytest

from conftest import start_stack, stop_stack  # ../conftest.py (the persistence harness)
from harness import Api, health_pb, log_tail, new_calls_refused, wait_until
from line_harness import SLOW, Connector

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "meta"))
from meta_harness import MetaConnector  # noqa: E402

SERVING = health_pb.HealthCheckResponse.SERVING
NOT_SERVING = health_pb.HealthCheckResponse.NOT_SERVING
DRAIN_MS = 2000


@pytest.fixture(scope="module")
def probe_stack():
    cluster, svc = start_stack("conn-probes")
    yield cluster, svc
    stop_stack(cluster, svc)


def _make(kind, svc, sim_port, **kw):
    if kind == "line":
        return Connector(svc.grpc_port, sim_port, name="connector-line-probes", **kw)
    return MetaConnector(svc.grpc_port, sim_port, "probe-app-secret", "probe-verify-token",
                         name="connector-meta-probes", **kw)


def _status(conn):
    return Api(conn.channel, timeout=5).health("").status


def _readyz(conn):
    status, _, body = conn.http("GET", "/readyz")
    return status, body.decode()


@pytest.mark.parametrize("kind", ["line", "meta"])
def test_readiness_follows_persistence(probe_stack, line_sim, kind):
    cluster, svc = probe_stack
    conn = _make(kind, svc, line_sim.port)
    # Starting while persistence is away: the process is up and live, not ready.
    svc.stop()
    svc.fixed_grpc_port = svc.grpc_port  # the connector is given this address
    try:
        conn.start()
        assert _status(conn) == NOT_SERVING
        assert _readyz(conn) == (503, "not ready: persistence unreachable\n")
        assert conn.http("GET", "/healthz")[0] == 200
    finally:
        svc.start()
    try:
        # starting -> ready once persistence answers.
        wait_until(lambda: _status(conn) == SERVING, 20 * SLOW, "SERVING after persistence came")
        assert _readyz(conn) == (200, "ready\n")

        # Persistence's database down: persistence is NOT_SERVING, so is the connector.
        cluster.stop()
        try:
            wait_until(lambda: _status(conn) == NOT_SERVING, 15 * SLOW, "NOT_SERVING (database)")
            # The readiness check sees NOT_SERVING; the retry worker's calls see UNAVAILABLE.
            status, body = _readyz(conn)
            assert status == 503 and body in ("not ready: persistence not serving\n",
                                              "not ready: persistence unreachable\n"), body
            assert conn.http("GET", "/healthz")[0] == 200
        finally:
            cluster.start()
        wait_until(lambda: _status(conn) == SERVING, 15 * SLOW, "SERVING after the database")

        # Persistence itself gone: unreachable; liveness is still about the process.
        svc.stop()
        try:
            wait_until(lambda: _status(conn) == NOT_SERVING, 15 * SLOW, "NOT_SERVING (process)")
            assert _readyz(conn) == (503, "not ready: persistence unreachable\n")
            for _ in range(3):  # across several readiness checks
                assert conn.http("GET", "/healthz")[0] == 200
                time.sleep(0.5)
        finally:
            svc.start()
        wait_until(lambda: _status(conn) == SERVING, 20 * SLOW, "SERVING after persistence")
        assert _readyz(conn) == (200, "ready\n")
    finally:
        rc = conn.stop()
    assert rc == 0, log_tail(conn.log_path)


OUTAGE_S = 60  # gRPC's default backoff then put its next attempt 10-40 s away (12.7 s measured)


def test_ready_again_within_seconds_after_a_long_persistence_outage(probe_stack, line_sim):
    """The persistence client retries its connection every few seconds, however long the
    outage: with gRPC's default backoff (growing to 120 s) the connector stayed unready for
    12.7 s after persistence was back from a 60 s outage."""
    cluster, svc = probe_stack
    conn = _make("line", svc, line_sim.port)
    conn.start()
    try:
        assert _status(conn) == SERVING
        svc.stop()
        svc.fixed_grpc_port = svc.grpc_port
        try:
            wait_until(lambda: _status(conn) == NOT_SERVING, 15 * SLOW, "NOT_SERVING")
            time.sleep(OUTAGE_S)  # the outage itself: nothing to await
        finally:
            svc.start()
        back = time.monotonic()
        wait_until(lambda: _status(conn) == SERVING, 30 * SLOW, "SERVING after the outage")
        waited = time.monotonic() - back
        # 5 s between attempts at most, plus a readiness check (1 s) and a margin.
        assert waited < 8 * SLOW, f"ready {waited:.1f} s after persistence was back"
    finally:
        rc = conn.stop()
    assert rc == 0, log_tail(conn.log_path)


@pytest.mark.parametrize("kind", ["line", "meta"])
def test_sigterm_drains_then_refuses_then_exits(probe_stack, line_sim, kind):
    cluster, svc = probe_stack
    conn = _make(kind, svc, line_sim.port, shutdown_drain_ms=DRAIN_MS)
    conn.start()
    assert _status(conn) == SERVING
    t_term = time.monotonic()
    conn.proc.send_signal(15)
    wait_until(lambda: _status(conn) == NOT_SERVING, 5, "NOT_SERVING after SIGTERM")
    assert _readyz(conn) == (503, "not ready: shutting down\n")
    assert conn.http("GET", "/healthz")[0] == 200
    assert time.monotonic() - t_term < DRAIN_MS / 1000, "the checks above outlasted the drain"

    wait_until(lambda: new_calls_refused(conn.new_channel), 10 * SLOW, "new calls to be refused after the drain")
    assert time.monotonic() - t_term >= DRAIN_MS / 1000 * 0.9
    conn.channel.close()
    rc = conn.proc.wait(timeout=30 * SLOW)
    assert rc == 0, log_tail(conn.log_path)
