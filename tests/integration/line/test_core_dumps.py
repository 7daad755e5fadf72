"""Core dumps carry no secrets: the services are not dumpable and have RLIMIT_CORE 0 by default,
key material sits on MADV_DONTDUMP pages, and --allow-core-dumps / OMNICHAT_ALLOW_CORE_DUMPS is
the explicit opt-in that flips the first two back.

What is observed from outside: /proc/<pid>/limits (core file size), /proc/<pid>/smaps (VmFlags
"dd" = left out of a dump), and PR_SET_DUMPABLE through its effect: a process of the service's
own user may read /proc/<pid>/environ only when the service is dumpable.
"""
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile

import grpc
import pytest

import harness
from harness import Api, free_port
from line_harness import CONNECTOR_BIN, ConnectorApi, write_vault_key_file
from test_log_levels import _spawn, _stop, _wait_port

IS_ROOT = os.getuid() == 0
# AddressSanitizer sets RLIMIT_CORE to 0 itself unless told not to; the limit seen here must be
# the service's doing (a release build ignores the variable).
ASAN_ENV = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1")
            + ":disable_coredump=0"}


def _raise_core_limit():
    # As `ulimit -c unlimited` would: so that "0" below is the service's doing.
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _core_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4]  # the soft limit
    raise AssertionError("no core line in /proc/<pid>/limits")


def _environ_readable_by_peer(pid, uid):
    """Whether a process running as uid (the service's user) may read /proc/pid/environ."""
    code = f"open('/proc/{pid}/environ','rb').read()"
    def pre():
        os.setgid(pwd.getpwuid(uid).pw_gid)
        os.setgroups([])
        os.setuid(uid)
    r = subprocess.run([sys.executable, "-c", code],
                       preexec_fn=pre if IS_ROOT and uid != 0 else None, capture_output=True,
                       timeout=30)
    return r.returncode == 0


def _dontdump_kib(pid):
    """KiB of the process's mappings marked "dd" in smaps (only root can read a non-dumpable
    process's smaps)."""
    total, size = 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("VmFlags:") and " dd" in f" {line[8:]}":
                total += size
    return total


def _start_connector(service, line_sim, work, opt_in, uid):
    gport, hport = free_port(), free_port()
    key = write_vault_key_file(os.path.join(work, "vault.keys"))
    binary = CONNECTOR_BIN
    if uid is not None:
        os.chmod(work, 0o755)
        os.chown(key, uid, -1)
        os.chown(work, uid, -1)
        # `nobody` may not be able to reach the checkout (one under /root is mode 0700): run a
        # copy from the work directory, which it owns.
        binary = os.path.join(work, os.path.basename(CONNECTOR_BIN))
        shutil.copy2(CONNECTOR_BIN, binary)
        os.chmod(binary, 0o755)
    cmd = [binary, "--grpc-listen", f"127.0.0.1:{gport}",
           "--http-listen", f"127.0.0.1:{hport}",
           "--persistence-target", f"127.0.0.1:{service.grpc_port}",
           "--line-api-base", line_sim.base, "--vault-key-file", key,
           "--workers", "2", "--http-threads", "2", "--worker-threads", "1"]
    if opt_in == "flag":
        cmd.append("--allow-core-dumps")
    env_extra = dict(ASAN_ENV)
    if opt_in == "env":
        env_extra["OMNICHAT_ALLOW_CORE_DUMPS"] = "true"

    def pre():
        _raise_core_limit()
        if uid is not None:
            os.setgid(pwd.getpwuid(uid).pw_gid)
            os.setgroups([])
            os.setuid(uid)
    proc = _spawn(cmd, "info", "flag", work, preexec=pre, env_extra=env_extra)
    _wait_port(proc, gport, work)
    with grpc.insecure_channel(f"127.0.0.1:{gport}") as ch:
        # It answers: the process is up. (NOT_SERVING in the TLS run, where this plaintext
        # connector cannot reach the suite's persistence: readiness, not liveness.)
        assert ConnectorApi(ch).health().status in (1, 2)
    return proc


@pytest.mark.parametrize("opt_in", [None, "flag", "env"])
def test_connector_is_not_dumpable_unless_asked(service, line_sim, opt_in):
    if not os.access(CONNECTOR_BIN, os.X_OK):
        pytest.fail(f"{CONNECTOR_BIN} is missing")
    # As root, the connector runs as `nobody` so that a peer of the same user exists to ask.
    uid = pwd.getpwnam("nobody").pw_uid if IS_ROOT else None
    work = tempfile.mkdtemp(prefix="omnichat-it-core-line-")
    proc = _start_connector(service, line_sim, work, opt_in, uid)
    try:
        peer = uid if uid is not None else os.getuid()
        if opt_in is None:
            assert _core_limit(proc.pid) == "0"
            assert not _environ_readable_by_peer(proc.pid, peer), "the connector is dumpable"
        else:
            assert _core_limit(proc.pid) != "0"
            assert _environ_readable_by_peer(proc.pid, peer), "the opt-in did not apply"
            assert "core dumps allowed" in open(os.path.join(work, "stderr.log")).read()
        if IS_ROOT:
            # The vault (keys inline) and the secret file contents: at least one page each.
            assert _dontdump_kib(proc.pid) >= 4
        _stop(proc, work, "info")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("opt_in", [None, "flag"])
def test_persistence_is_not_dumpable_unless_asked(service, cluster, opt_in):
    work = tempfile.mkdtemp(prefix="omnichat-it-core-pst-")
    key = os.path.join(work, "cursor.key")
    with open(key, "w") as f:
        f.write("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
    port = free_port()
    cmd = [os.path.join(harness.BIN_DIR, "omnichat-persistence"),
           "--database-url", cluster.dsn("app"), "--grpc-listen", f"127.0.0.1:{port}",
           "--admin-listen", "", "--cursor-key-file", key, "--workers", "2"]
    if opt_in:
        cmd.append("--allow-core-dumps")
    proc = _spawn(cmd, "info", "flag", work, preexec=_raise_core_limit, env_extra=ASAN_ENV)
    try:
        _wait_port(proc, port, work)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            Api(ch).ListConversations(tenant_id=harness.new_id())
        assert (_core_limit(proc.pid) == "0") == (opt_in is None)
        if IS_ROOT:
            # Cursor key, pool conninfo, cursor key file contents: pages of their own.
            assert _dontdump_kib(proc.pid) >= 12
        else:
            assert _environ_readable_by_peer(proc.pid, os.getuid()) == (opt_in is not None)
        _stop(proc, work, "info")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
