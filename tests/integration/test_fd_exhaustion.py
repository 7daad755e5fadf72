"""File-descriptor exhaustion (issue 6, item 4): under a low RLIMIT_NOFILE, a flood of HTTP/2
connections makes accept4 fail with EMFILE. gRPC 1.51 then stops accepting on that port for
good; the service must notice, recreate its listener, and serve new connections again within
5 s of the flood going away, while /healthz reports the outage meanwhile."""
import socket
import time

import grpc
import pytest

from harness import PgCluster, Service, health_pb, sanitizer_lines

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # empty SETTINGS frame
NOFILE = 256


@pytest.fixture(scope="module")
def small_stack():
    cluster = PgCluster().init()
    svc = None
    try:
        # Plaintext whatever OMNICHAT_TEST_TLS says: the held connections are raw HTTP/2.
        svc = Service(cluster, name="fd-exhaustion", nofile=NOFILE, tls=None)
        svc.migrate()
        cluster.grant()
        svc.start()
        yield svc
    finally:
        if svc is not None:
            svc.stop()
        cluster.destroy()
    assert not sanitizer_lines(svc.log_text()), svc.log_text()[-4000:]


def _fresh_check(port, timeout):
    """Health/Check over a new connection (a new channel never reuses another's)."""
    ch = grpc.insecure_channel(f"127.0.0.1:{port}",
                               options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        call = ch.unary_unary("/grpc.health.v1.Health/Check",
                              request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                              response_deserializer=health_pb.HealthCheckResponse.FromString)
        return call(health_pb.HealthCheckRequest(service=""), timeout=timeout).status
    finally:
        ch.close()


def _healthz(svc):
    """/healthz status, or None when the admin server cannot answer at all (it is out of
    descriptors too): both are a failed liveness probe."""
    try:
        return svc.admin_get("/healthz", timeout=2)[0]
    except OSError:
        return None


def _flood(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(PREFACE + SETTINGS)
        socks.append(s)
    return socks


def test_listener_recovers_after_emfile(small_stack):
    svc = small_stack
    assert _fresh_check(svc.grpc_port, 10) == health_pb.HealthCheckResponse.SERVING
    socks = _flood(svc.grpc_port, NOFILE + 50)
    try:
        # Exhausted: a new connection is not served.
        with pytest.raises(grpc.RpcError):
            _fresh_check(svc.grpc_port, 2)
        # /healthz never lies for long: within 10 s either it fails (the self-probe of the real
        # gRPC path cannot connect), or the service served a new call again by itself (the
        # connection cap sheds the newest connections every second, which can free descriptors
        # before the flood is released; on a slow build it often does). What must not happen
        # is /healthz answering ok for the whole time while no new call is served.
        deadline = time.time() + 10
        unhealthy = served = False
        while time.time() < deadline and not (unhealthy or served):
            if _healthz(svc) != 200:
                unhealthy = True
                break
            try:
                served = _fresh_check(svc.grpc_port, 1) == health_pb.HealthCheckResponse.SERVING
            except grpc.RpcError:
                time.sleep(0.2)
        assert unhealthy or served, "/healthz answered ok for 10 s while no new call was served"
    finally:
        for s in socks:
            s.close()
    released = time.time()
    last = None
    while time.time() - released < 5:
        try:
            if _fresh_check(svc.grpc_port, 1) == health_pb.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError as e:
            last = e
        time.sleep(0.1)
    else:
        pytest.fail(f"no new call succeeded within 5 s of releasing the connections: {last}")
    # And it stays healthy: /healthz follows within a probe period or two.
    deadline = time.time() + 5
    while time.time() < deadline and _healthz(svc) != 200:
        time.sleep(0.2)
    assert _healthz(svc) == 200


def test_descriptor_limit_raised_to_the_hard_limit():
    cluster = PgCluster().init()
    svc = Service(cluster, name="nofile", nofile=(256, 2048))
    try:
        svc.migrate()
        cluster.grant()
        svc.start()
        with open(f"/proc/{svc.proc.pid}/limits") as f:
            row = next(line for line in f if line.startswith("Max open files"))
        assert row.split()[3:5] == ["2048", "2048"], row
    finally:
        svc.stop()
        cluster.destroy()
    assert not sanitizer_lines(svc.log_text()), svc.log_text()[-4000:]
