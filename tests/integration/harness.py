"""Integration-test harness for omnichat-persistence.

Starts a throw-away PostgreSQL cluster (scripts/pg-cluster.sh), migrates it with the real binary,
starts the real service, and gives tests a thin gRPC client generated at import time with
`protoc --python_out` (no grpc_tools). Everything here is plain Python 3 + Debian's grpcio and
protobuf: run with /usr/bin/python3.
"""
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

# Before grpc is imported: its fork handlers join grpcio's executor threads in the parent, which
# can deadlock a subprocess started with preexec_fn (a real fork, as the core-dump, descriptor
# and privilege tests need); an exec follows every fork here, so they have nothing to protect.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(REPO, "proto")
PERSISTENCE_PROTO = "omnichat/persistence/v1/persistence.proto"
HEALTH_PROTO_DIR = "/usr/share/grpc-proto/grpc/health/v1"
PG_CLUSTER = os.path.join(REPO, "scripts", "pg-cluster.sh")
CERTS_SH = os.path.join(REPO, "scripts", "certs.sh")
# The identities of the sandbox and of the TLS tests (scripts/certs.sh names) and their roles.
CLIENT_ROLES = ("connector-line=connector,connector-meta=connector,inbox=inbox,"
                "omnichatctl=operator")
# OMNICHAT_TEST_TLS=1 runs every service the suite starts with mutual TLS (its clients present
# the operator's certificate); by default they run plaintext. test_tls.py runs its own mutual-TLS
# stack either way.
TEST_TLS = os.environ.get("OMNICHAT_TEST_TLS", "0") == "1"
SUITE = object()  # "as the suite runs": the default of the `tls` arguments below
PSQL = "/usr/bin/psql"
BIN_DIR = os.environ.get("OMNICHAT_BIN_DIR", os.path.join(REPO, "build", "bin"))
SERVICE = "omnichat.persistence.v1.Persistence"
# Generous: the service runs ~3x slower under ASan, and the database-down test waits on it.
RPC_TIMEOUT = float(os.environ.get("OMNICHAT_TEST_RPC_TIMEOUT", "30"))
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
DAY_MS = 86_400_000


# ---------------------------------------------------------------------------------------------
# Generated protobuf modules


def _generate_stubs():
    gen = tempfile.mkdtemp(prefix="omnichat-it-gen-")
    subprocess.run(["protoc", f"--python_out={gen}", "-I", PROTO_DIR,
                    os.path.join(PROTO_DIR, PERSISTENCE_PROTO)], check=True)
    # Flat include path so the module is health_pb2, not grpc.health... (which would shadow grpc).
    subprocess.run(["protoc", f"--python_out={gen}", "-I", HEALTH_PROTO_DIR,
                    os.path.join(HEALTH_PROTO_DIR, "health.proto")], check=True)
    sys.path.insert(0, gen)
    sys.path.insert(0, os.path.join(gen, "omnichat", "persistence", "v1"))
    import persistence_pb2  # noqa: E402
    import health_pb2  # noqa: E402
    return persistence_pb2, health_pb2


pb, health_pb = _generate_stubs()


# ---------------------------------------------------------------------------------------------
# Small utilities


def new_id():
    return str(uuid.uuid4())


def now_ms():
    return int(time.time() * 1000)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sql_lit(value):
    """SQL string literal (tests only build literals from values they made themselves)."""
    return "'" + str(value).replace("'", "''") + "'"


def log_tail(path, n=60):
    try:
        with open(path, "r", errors="replace") as f:
            lines = f.readlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "".join(lines[-n:])


def sanitizer_lines(text):
    return [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKERS)]


# ---------------------------------------------------------------------------------------------
# PostgreSQL cluster (scripts/pg-cluster.sh)


class PgCluster:
    def __init__(self, port=None):
        # DIR is a new subdirectory of a fresh mkdtemp() directory, which is made traversable
        # (0711): as root, the server runs as `postgres`, which must be able to enter DIR, and
        # pg-cluster.sh checks that before it chowns DIR.
        self.base = tempfile.mkdtemp(prefix="omnichat-it-pg-")
        os.chmod(self.base, 0o711)
        self.dir = os.path.join(self.base, "cluster")
        self.port = port or free_port()
        self._dsn = {}

    def _script(self, *args, timeout=120):
        r = subprocess.run(["bash", PG_CLUSTER, *args], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"pg-cluster.sh {' '.join(args)} failed ({r.returncode}):\n"
                               f"{r.stdout}\n{r.stderr}")
        return r.stdout

    def init(self):
        self._script("init", self.dir, str(self.port))
        return self

    def start(self):
        self._script("start", self.dir)

    def stop(self):
        self._script("stop", self.dir)

    def grant(self):
        self._script("grant", self.dir)

    def restart(self, mode):
        """pg_ctl restart -m fast|immediate, waiting until the server accepts connections
        again. Every backend ends: a fast shutdown sends each client FATAL 57P01, an
        immediate one just drops them."""
        pg_ctl = os.path.join(os.environ.get("OMNICHAT_PGBIN", "/usr/lib/postgresql/15/bin"),
                              "pg_ctl")
        cmd = [pg_ctl, "-D", os.path.join(self.dir, "data"), "-l",
               os.path.join(self.dir, "postgres.log"), "-m", mode, "-w", "-t", "60", "restart"]
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl restart -m {mode} failed ({r.returncode}):\n"
                               f"{r.stdout}\n{r.stderr}")

    def dsn(self, role):
        if role not in self._dsn:
            self._dsn[role] = self._script("dsn", self.dir, role).strip()
        return self._dsn[role]

    def destroy(self):
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.base, ignore_errors=True)


class Db:
    """Direct SQL through psql, for checks the API cannot make (row counts, RLS)."""

    def __init__(self, dsn):
        self.dsn = dsn

    def run(self, *statements, check=True):
        cmd = [PSQL, self.dsn, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]
        for s in statements:
            cmd += ["-c", s]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed: {statements}\n{r.stderr}")
        return r

    def rows(self, *statements):
        """Rows of the last statement's result, each a list of strings ('|'-separated)."""
        out = self.run(*statements).stdout
        return [ln.split("|") for ln in out.splitlines() if ln != ""]

    def scalar(self, *statements):
        rows = self.rows(*statements)
        assert rows, f"no row from {statements}"
        return rows[-1][0]

    def count(self, *statements):
        return int(self.scalar(*statements))

    def tenant_counts(self, tenant):
        """Rows of a tenant in every table: {table: count}."""
        t = sql_lit(tenant)
        tables = ["channel_accounts", "contacts", "conversations", "messages", "attachments"]
        sel = ", ".join(f"(SELECT count(*) FROM omnichat.{tb} WHERE tenant_id = {t})"
                        for tb in tables)
        row = self.rows(f"SELECT {sel}")[0]
        return dict(zip(tables, map(int, row)))


# ---------------------------------------------------------------------------------------------
# Certificates (mutual TLS)


class Certs:
    """A private CA and certificates made by scripts/certs.sh, the sandbox's own tool. Each
    certificate NAME has the SANs DNS:NAME (its identity), DNS:localhost and IP:127.0.0.1."""

    def __init__(self, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="omnichat-it-certs-")

    def make(self, *names):
        r = subprocess.run(["bash", CERTS_SH, self.dir, *names], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, f"certs.sh failed:\n{r.stdout}\n{r.stderr}"
        return self

    @property
    def ca(self):
        return os.path.join(self.dir, "ca.crt")

    def crt(self, name):
        return os.path.join(self.dir, f"{name}.crt")

    def key(self, name):
        return os.path.join(self.dir, f"{name}.key")

    def flags(self, name, roles=None):
        """The service flags presenting NAME's certificate and trusting this CA."""
        f = ["--tls-cert-file", self.crt(name), "--tls-key-file", self.key(name),
             "--tls-ca-file", self.ca]
        return f + (["--tls-client-roles", roles] if roles is not None else [])

    def credentials(self, name=None, ca=None):
        """Client credentials: NAME's certificate (None: no client certificate), trusting `ca`
        (default: this CA)."""
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        return grpc.ssl_channel_credentials(
            root_certificates=read(ca or self.ca),
            private_key=read(self.key(name)) if name else None,
            certificate_chain=read(self.crt(name)) if name else None)

    def channel(self, port, name=None, ca=None, options=None):
        return grpc.secure_channel(f"127.0.0.1:{port}", self.credentials(name, ca),
                                   options=options)


_suite_certs = None


def suite_certs():
    """The suite's certificates when OMNICHAT_TEST_TLS=1 (made once), else None."""
    global _suite_certs
    if TEST_TLS and _suite_certs is None:
        _suite_certs = Certs().make("persistence", "connector-line", "connector-meta", "omnichatctl",
                                    "inbox")
    return _suite_certs


def ctl_tls_env():
    """OMNICHAT_TLS_* for omnichatctl as the operator, when the suite runs mutual TLS."""
    c = suite_certs()
    if c is None:
        return {}
    return {"OMNICHAT_TLS_CERT_FILE": c.crt("omnichatctl"),
            "OMNICHAT_TLS_KEY_FILE": c.key("omnichatctl"), "OMNICHAT_TLS_CA_FILE": c.ca}


# ---------------------------------------------------------------------------------------------
# The service process


def assert_clean_exit(proc, label, rc):
    """After a process stopped on SIGTERM with exit code rc: no sanitizer report in its whole log
    (LeakSanitizer reports only at exit, so this is the last word) and a clean exit."""
    text = proc.log_text()
    bad = sanitizer_lines(text)
    assert not bad, (f"sanitizer report in the {label} log ({proc.log_path}):\n"
                     + "\n".join(bad[:20]) + "\n--- log tail ---\n" + log_tail(proc.log_path))
    assert rc in (0, -15), (f"{label} exit code after SIGTERM: {rc}\n--- log tail ---\n"
                            + log_tail(proc.log_path))


def read_listening(log_path, offset, key):
    """The first JSON log line "listening" with field `key`, from byte `offset` on, or None."""
    try:
        with open(log_path, "r", errors="replace") as f:
            f.seek(offset)
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("msg") == "listening" and ev.get(key):
                    return ev
    except OSError:
        pass
    return None


def child_env(strip_omnichat=False):
    """The environment of a child process: sanitizer defaults, and without the caller's
    OMNICHAT_* settings when the child gets every setting as a flag."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    if strip_omnichat:
        for k in list(env):
            if k.startswith("OMNICHAT_") and k != "OMNICHAT_BIN_DIR":
                del env[k]
    return env


class ChildProcess:
    """A child process with stderr/stdout appended to files in its own work dir: every process
    the integration tests start (services, simulators) is one. `slow` stretches its waits (an
    ASan build runs about 3x slower). `marks`: starts and kills are noted in the log as "###"
    lines for the reader (off where tests require every stderr line to be a JSON event)."""

    def __init__(self, name, slow=1.0, marks=True):
        self.work = tempfile.mkdtemp(prefix=f"omnichat-it-{name}-")
        self.log_path = os.path.join(self.work, "stderr.log")
        self.out_path = os.path.join(self.work, "stdout.log")
        self.proc = None
        self.slow = slow
        self.marks = marks
        self._check_offset = 0
        self._start_offset = 0
        self.starts = 0

    def _spawn(self, cmd, env, preexec_fn=None):
        if self.marks:
            with open(self.log_path, "ab") as f:
                f.write(f"### start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
        self._start_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        err = open(self.log_path, "ab")
        out = open(self.out_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env,
                                         preexec_fn=preexec_fn)
        finally:
            err.close()
            out.close()
        self.starts += 1

    def _wait_listening(self, key, timeout):
        """The "listening" line of the latest start (an earlier start's line never counts)."""
        deadline = time.time() + timeout * self.slow
        while time.time() < deadline:
            ev = read_listening(self.log_path, self._start_offset, key)
            if ev:
                return ev
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.work}: exited with {self.proc.returncode} before "
                                   f"listening:\n{log_tail(self.log_path)}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.work}: no 'listening' line within {timeout}s:\n"
                           f"{log_tail(self.log_path)}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def new_log_since_last_check(self):
        with open(self.log_path, "r", errors="replace") as f:
            f.seek(self._check_offset)
            text = f.read()
            self._check_offset = f.tell()
        return text

    def terminate(self, timeout=30):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout * self.slow)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
        return rc

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.marks:
            with open(self.log_path, "ab") as f:
                f.write(b"### SIGKILL by the test\n")


class Service(ChildProcess):
    def __init__(self, cluster, name="persistence", extra_args=(), tls=SUITE, tls_client=None,
                 client_roles=CLIENT_ROLES, grpc_port=0, nofile=None):
        """tls: a Certs with a "persistence" certificate → mutual TLS with client_roles, and
        self.channel presents tls_client's certificate (default "omnichatctl", the operator);
        None → plaintext; SUITE (default) → as OMNICHAT_TEST_TLS says. grpc_port: 0 → any free
        port (tests); a fixed port lets a restarted service keep its address for clients that
        were given it (the chaos run kills and restarts persistence under load)."""
        super().__init__(name, marks=False)
        self.cluster = cluster
        self.fixed_grpc_port = grpc_port
        self.tls = suite_certs() if tls is SUITE else tls
        self.tls_client = tls_client or "omnichatctl"
        self.client_roles = client_roles
        self.bin = os.path.join(BIN_DIR, "omnichat-persistence")
        self.key_path = os.path.join(self.work, "cursor.key")
        self.extra_args = list(extra_args)
        self.nofile = nofile  # RLIMIT_NOFILE of the process: n (soft = hard) or (soft, hard)
        self.grpc_port = None
        self.admin_port = None
        self.channel = None

    @staticmethod
    def binary_present():
        return os.access(os.path.join(BIN_DIR, "omnichat-persistence"), os.X_OK)

    def env(self):
        return child_env()

    def migrate(self):
        r = subprocess.run([self.bin, "migrate", "--database-url", self.cluster.dsn("owner")],
                           capture_output=True, text=True, timeout=180, env=self.env())
        with open(os.path.join(self.work, "migrate.log"), "a") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"migrate failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        bad = sanitizer_lines(r.stdout + r.stderr)
        assert not bad, f"sanitizer report during migrate:\n{r.stderr}"
        return r

    def start(self, timeout=90):
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.chmod(self.key_path, 0o600)
        cmd = [self.bin, "--database-url", self.cluster.dsn("app"),
               "--grpc-listen", f"127.0.0.1:{self.fixed_grpc_port}", "--admin-listen", "127.0.0.1:0",
               "--cursor-key-file", self.key_path, *self.extra_args]
        # Debug: one line per call with its tenant, which lets the leak tests show that the log
        # they scanned holds their own activity.
        if not any(a.startswith("--log-level") for a in self.extra_args):
            cmd += ["--log-level", "debug"]
        # No drain pause on SIGTERM unless a test asks for one: the suite stops services often.
        if not any(a.startswith("--shutdown-drain-ms") for a in self.extra_args):
            cmd += ["--shutdown-drain-ms", "0"]
        if self.tls is not None:
            cmd += self.tls.flags("persistence", self.client_roles)
        preexec = None
        if self.nofile is not None:
            import resource
            limit = self.nofile if isinstance(self.nofile, tuple) else (self.nofile,) * 2

            def preexec():
                resource.setrlimit(resource.RLIMIT_NOFILE, limit)
        self._spawn(cmd, self.env(), preexec)
        try:
            ev = self._wait_listening("grpc_port", timeout)
        except RuntimeError as e:
            raise RuntimeError(f"persistence did not start: {e}") from None
        self.grpc_port = int(ev["grpc_port"])
        self.admin_port = int(ev["admin_port"]) if ev.get("admin_port") else None
        self.channel = self.new_channel()
        grpc.channel_ready_future(self.channel).result(timeout=30)
        return self

    def new_channel(self, identity=None, options=None):
        """A channel to the service: plaintext, or over TLS as `identity` (default tls_client);
        options: grpc channel options."""
        if self.tls is None:
            return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}", options=options)
        return self.tls.channel(self.grpc_port, identity or self.tls_client, options=options)

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        return self.terminate(timeout)

    def admin_get(self, path, timeout=10):
        """(status, body) of GET http://127.0.0.1:{admin_port}{path}."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# gRPC client


class Api:
    """`api.UpsertContact(tenant_id=..., ...)` → UpsertContactResponse (raises grpc.RpcError).

    A prepared request message may be passed positionally instead of keyword fields.
    """

    def __init__(self, channel, timeout=RPC_TIMEOUT, module=None, service=SERVICE):
        self._channel = channel
        self._timeout = timeout
        self._module = module or pb  # the generated *_pb2 module of the service's messages
        self._service = service
        self._calls = {}
        self._lock = threading.Lock()

    def _callable(self, method):
        with self._lock:
            if method not in self._calls:
                req = getattr(self._module, method + "Request")
                resp = getattr(self._module, method + "Response")
                mc = self._channel.unary_unary(f"/{self._service}/{method}",
                                               request_serializer=req.SerializeToString,
                                               response_deserializer=resp.FromString)
                self._calls[method] = (req, mc)
            return self._calls[method]

    def __getattr__(self, method):
        if not method[:1].isupper():
            raise AttributeError(method)
        req_cls, mc = self._callable(method)

        def call(request=None, *, timeout=None, **fields):
            if request is None:
                request = req_cls(**fields)
            return mc(request, timeout=timeout or self._timeout)

        call.__name__ = method
        return call

    def health(self, service="", timeout=None):
        mc = self._channel.unary_unary("/grpc.health.v1.Health/Check",
                                       request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                                       response_deserializer=health_pb.HealthCheckResponse.FromString)
        return mc(health_pb.HealthCheckRequest(service=service), timeout=timeout or self._timeout)


def new_calls_refused(new_channel):
    """Whether a Health/Check over a new connection from new_channel() gets UNAVAILABLE: the
    server stopped taking calls (after its shutdown drain)."""
    ch = new_channel()
    try:
        Api(ch, timeout=2).health("")
        return False
    except grpc.RpcError as e:
        return e.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred() until it is truthy and returns its value; fails after timeout seconds."""
    deadline = time.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_leases_expired(db, tenant, ids, timeout=30):
    """Waits until the database's clock is past the lease of every message in ids."""
    idl = ", ".join(sql_lit(i) for i in ids)
    q = (f"SELECT bool_and(lease_until IS NULL OR lease_until < now()) FROM omnichat.messages "
         f"WHERE tenant_id = {sql_lit(tenant)} AND id IN ({idl})")
    wait_until(lambda: db.scalar(q) == "t", timeout, f"the leases of {ids} to expire")


def rpc_error(fn, *args, **kwargs):
    """Call fn and return the grpc.RpcError it raises; fail if it succeeds."""
    try:
        resp = fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded but an error was expected; "
                         f"response: {resp}")


def assert_code(err, code, *, field=None):
    assert err.code() == code, (f"expected {code.name}, got {err.code().name}: "
                                f"{err.details()!r}")
    if field is not None:
        assert field in (err.details() or ""), (f"{code.name} details should name {field!r}: "
                                                f"{err.details()!r}")
    return err


def expect_invalid(fn, field, **kwargs):
    return assert_code(rpc_error(fn, **kwargs), grpc.StatusCode.INVALID_ARGUMENT, field=field)


def expect_not_found(fn, **kwargs):
    return assert_code(rpc_error(fn, **kwargs), grpc.StatusCode.NOT_FOUND)


def run_concurrently(fn, n, *args, **kwargs):
    """Run fn(*args, **kwargs) in n threads released together; returns results (or
    exceptions) in thread order."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        try:
            barrier.wait(timeout=30)
            results[i] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=RPC_TIMEOUT * 3)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} of {n} concurrent calls failed, first: {errors[0]!r}"
    return results


# ---------------------------------------------------------------------------------------------
# Builders: small, explicit helpers that create the objects most tests need


class Builder:
    """Creates channel accounts, contacts, conversations and messages for one tenant."""

    def __init__(self, api, tenant=None):
        self.api = api
        self.tenant = tenant or new_id()
        self._seq = 0

    def uniq(self, prefix):
        self._seq += 1
        return f"{prefix}-{uuid.uuid4().hex[:12]}-{self._seq}"

    def account(self, channel_type=None, external_account_id=None, display_name="Test OA"):
        r = self.api.RegisterChannelAccount(
            tenant_id=self.tenant,
            channel_type=channel_type or pb.CHANNEL_TYPE_LINE,
            external_account_id=external_account_id or self.uniq("ext-acct"),
            display_name=display_name)
        return r.channel_account

    def contact(self, account, external_user_id=None, **fields):
        return self.api.UpsertContact(
            tenant_id=self.tenant, channel_account_id=account.channel_account_id,
            external_user_id=external_user_id or self.uniq("user"), **fields).contact

    def conversation(self, account, thread_key=None, contact=None, **fields):
        if contact is not None:
            fields["contact_id"] = contact.contact_id
        return self.api.UpsertConversation(
            tenant_id=self.tenant, channel_account_id=account.channel_account_id,
            thread_key=thread_key if thread_key is not None else self.uniq("thread"),
            **fields).conversation

    def message_request(self, conversation, ts, *, key=None, direction=None, text="hello",
                        **fields):
        direction = direction or pb.DIRECTION_INBOUND
        fields.setdefault("sender_type", pb.SENDER_TYPE_CONTACT
                          if direction == pb.DIRECTION_INBOUND else pb.SENDER_TYPE_AGENT)
        fields.setdefault("content_type", pb.CONTENT_TYPE_TEXT)
        return pb.InsertMessageRequest(
            tenant_id=self.tenant, conversation_id=conversation.conversation_id,
            direction=direction, idempotency_key=key or self.uniq("key"),
            content_text=text, channel_timestamp_ms=ts, **fields)

    def message(self, conversation, ts, **kw):
        return self.api.InsertMessage(self.message_request(conversation, ts, **kw))

    def inbound(self, account, ts, *, user=None, thread_key=None, ext_id=None, text="hi",
                **fields):
        fields.setdefault("content_type", pb.CONTENT_TYPE_TEXT)
        return pb.InboundMessage(
            channel_account_id=account.channel_account_id,
            external_user_id=user or "U-default",
            thread_key=thread_key if thread_key is not None else "",
            external_message_id=ext_id or self.uniq("mid"),
            content_text=text, channel_timestamp_ms=ts, **fields)

    def persist(self, *items):
        return self.api.PersistInbound(tenant_id=self.tenant, messages=list(items)).results
