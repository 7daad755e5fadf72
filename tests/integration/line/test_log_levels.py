"""Every service serves at every log level, set by flag or by OMNICHAT_LOG_LEVEL.

Regression: both services waited for SIGTERM inside the arguments of OC_INFO, which are not
evaluated below info, so at warn, error and off they exited 0 right after start. Below info there
is no "listening" line to read the port from, so each process here gets fixed free ports, and
the test waits for the port to accept, makes a call that must succeed, and checks that the
process is still running and stops cleanly on SIGTERM.
"""
import os
import signal
import socket
import subprocess
import tempfile
import time

import grpc
import pytest

import harness
from harness import Api, free_port, log_tail
from line_harness import CONNECTOR_BIN, SIM_BIN, SLOW, ConnectorApi, http_request, \
    write_vault_key_file

LEVELS = ("debug", "info", "warn", "error", "off")
HOW = ("flag", "env")


def _spawn(cmd, level, how, work, preexec=None, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OMNICHAT_") or k == "OMNICHAT_BIN_DIR"}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env.update(env_extra or {})
    if how == "flag":
        cmd = cmd + ["--log-level", level]
    else:
        env["OMNICHAT_LOG_LEVEL"] = level
    log = open(os.path.join(work, "stderr.log"), "ab")
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=log, env=env, preexec_fn=preexec)
    finally:
        log.close()


def _wait_port(proc, port, work, timeout=30):
    """Waits until 127.0.0.1:port accepts; fails at once if the process exits meanwhile."""
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before serving on port {port}:\n"
                        f"{log_tail(os.path.join(work, 'stderr.log'))}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"port {port} did not accept within {timeout * SLOW}s")


def _stop(proc, work, level):
    assert proc.poll() is None, (f"exited with {proc.returncode} after its call:\n"
                                 f"{log_tail(os.path.join(work, 'stderr.log'))}")
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=30 * SLOW)
    text = open(os.path.join(work, "stderr.log"), errors="replace").read()
    assert rc == 0, f"exit code {rc} after SIGTERM:\n{text[-3000:]}"
    assert not harness.sanitizer_lines(text), text[-3000:]
    # The level was applied: nothing at info or below is written at warn and above.
    if LEVELS.index(level) > LEVELS.index("info"):
        assert '"level":"info"' not in text and '"level":"debug"' not in text, text[-3000:]
    else:
        assert '"msg":"shutting down"' in text, text[-3000:]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("level", LEVELS)
def test_persistence_serves_at_every_level(service, cluster, level, how):
    work = tempfile.mkdtemp(prefix=f"omnichat-it-loglevel-pst-{level}-")
    key = os.path.join(work, "cursor.key")
    with open(key, "w") as f:
        f.write("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
    port = free_port()
    cmd = [os.path.join(harness.BIN_DIR, "omnichat-persistence"),
           "--database-url", cluster.dsn("app"), "--grpc-listen", f"127.0.0.1:{port}",
           "--admin-listen", "", "--cursor-key-file", key, "--workers", "2"]
    proc = _spawn(cmd, level, how, work)
    try:
        _wait_port(proc, port, work)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            got = Api(ch).ListConversations(tenant_id=harness.new_id())
        assert len(got.conversations) == 0
        _stop(proc, work, level)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("level", LEVELS)
def test_connector_line_serves_at_every_level(service, line_sim, level, how):
    if not os.access(CONNECTOR_BIN, os.X_OK):
        pytest.fail(f"{CONNECTOR_BIN} is missing")
    work = tempfile.mkdtemp(prefix=f"omnichat-it-loglevel-line-{level}-")
    gport, hport = free_port(), free_port()
    cmd = [CONNECTOR_BIN, "--grpc-listen", f"127.0.0.1:{gport}",
           "--http-listen", f"127.0.0.1:{hport}",
           "--persistence-target", f"127.0.0.1:{service.grpc_port}",
           "--line-api-base", line_sim.base,
           "--vault-key-file", write_vault_key_file(os.path.join(work, "vault.keys")),
           "--workers", "2", "--http-threads", "2", "--worker-threads", "1"]
    # In the TLS run persistence takes only mutual TLS: the connector needs its certificate to
    # reach it (and be ready), and then serves its own port over TLS too.
    certs = harness.suite_certs()
    if certs is not None:
        cmd += certs.flags("connector-line", harness.CLIENT_ROLES)
    proc = _spawn(cmd, level, how, work)
    try:
        _wait_port(proc, gport, work)
        _wait_port(proc, hport, work)
        with (certs.channel(gport, "omnichatctl") if certs is not None
              else grpc.insecure_channel(f"127.0.0.1:{gport}")) as ch:
            got = ConnectorApi(ch).health()
        assert got.status == 1  # SERVING: up, and persistence reachable
        status, _, body = http_request("GET", f"http://127.0.0.1:{hport}/healthz")
        assert status == 200, body
        _stop(proc, work, level)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("level", LEVELS)
def test_line_sim_serves_at_every_level(level, how):
    work = tempfile.mkdtemp(prefix=f"omnichat-it-loglevel-sim-{level}-")
    port = free_port()
    proc = _spawn([SIM_BIN, "--listen", f"127.0.0.1:{port}", "--threads", "2"], level, how,
                  work)
    try:
        _wait_port(proc, port, work)
        status, _, body = http_request("GET", f"http://127.0.0.1:{port}/__sim/requests")
        assert status == 200, body
        _stop(proc, work, level)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
