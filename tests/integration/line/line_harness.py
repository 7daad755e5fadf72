"""Integration-test harness for omnichat-connector-line.

Builds on ../harness.py (cluster, persistence service, persistence stubs, psql). Adds:
- connector stubs (protoc --python_out at import time, reusing harness's persistence_pb2),
- the LINE simulator process (`omnichat-line-sim`) and a client for its /__sim/ control API,
- the connector process (restartable, SIGKILL-able, stderr captured to a file),
- webhook helpers (LINE signing, raw HTTP posts), polling helpers.

Plain Python 3 + Debian's grpcio/protobuf: run with /usr/bin/python3.
"""
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import grpc

import harness
from harness import pb, log_tail, sanitizer_lines

BIN_DIR = harness.BIN_DIR
CONNECTOR_BIN = os.path.join(BIN_DIR, "omnichat-connector-line")
SIM_BIN = os.environ.get("OMNICHAT_LINE_SIM_BIN", os.path.join(BIN_DIR, "omnichat-line-sim"))
CONNECTOR_SERVICE = "omnichat.connector.v1.Connector"
PUSH_PATH = "/v2/bot/message/push"
RPC_TIMEOUT = harness.RPC_TIMEOUT
# Slow builds (ASan ~3x) stretch every wait in this suite by this factor.
SLOW = float(os.environ.get("OMNICHAT_TEST_SLOW", "1"))

# Connector settings for the suite: short timeouts so retries happen within a test. The
# connector requires lease-seconds * 1000 > line-timeout-ms + 2 * persistence-timeout-ms (an
# attempt holds its lease through an account look-up, the push and CompleteOutbound).
LINE_TIMEOUT_MS = 500
PERSISTENCE_TIMEOUT_MS = 1500
WORKER_INTERVAL_MS = 100
BACKOFF_BASE_MS = 100
LEASE_SECONDS = 4
MAX_ATTEMPTS = 8
BACKOFF_MAX_MS = 800
assert LEASE_SECONDS * 1000 > LINE_TIMEOUT_MS + 2 * PERSISTENCE_TIMEOUT_MS


# ---------------------------------------------------------------------------------------------
# Connector stubs


def _generate_connector_stubs():
    gen = tempfile.mkdtemp(prefix="omnichat-it-line-gen-")
    subprocess.run(["protoc", f"--python_out={gen}", "-I", harness.PROTO_DIR,
                    os.path.join(harness.PROTO_DIR, "omnichat/connector/v1/connector.proto")],
                   check=True)
    path = os.path.join(gen, "omnichat", "connector", "v1", "connector_pb2.py")
    with open(path) as f:
        src = f.read()
    # Reuse harness's top-level persistence_pb2 module (one set of message classes).
    src = src.replace("from omnichat.persistence.v1 import persistence_pb2 as",
                      "import persistence_pb2 as")
    flat = os.path.join(gen, "connector_pb2.py")
    with open(flat, "w") as f:
        f.write(src)
    sys.path.insert(0, gen)
    import connector_pb2  # noqa: E402
    return connector_pb2


cpb = _generate_connector_stubs()


# ---------------------------------------------------------------------------------------------
# Small utilities


def new_user_id():
    return "U" + uuid.uuid4().hex


def new_group_id():
    return "C" + uuid.uuid4().hex


def new_room_id():
    return "R" + uuid.uuid4().hex


def new_secret():
    return uuid.uuid4().hex  # 32 hex chars, like a LINE channel secret


def line_message_id():
    return str(random.randint(10 ** 17, 10 ** 18 - 1))


def sign(secret, body):
    """x-line-signature: Base64(HMAC-SHA256(channel secret, raw body))."""
    if isinstance(body, str):
        body = body.encode()
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def utf16_units(s):
    return len(s.encode("utf-16-le")) // 2


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return it. Fail after timeout*SLOW s."""
    deadline = time.time() + timeout * SLOW
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout * SLOW:.1f}s waiting for {what}; "
                                 f"last value: {last!r}")
        time.sleep(interval)


def _env():
    # Flags are given explicitly; stray OMNICHAT_* settings from the caller must not leak in.
    return harness.child_env(strip_omnichat=True)


class _Proc(harness.ChildProcess):
    """A child process of this suite (simulator, connector): the shared harness's, with this
    suite's environment and slow factor."""

    def __init__(self, name):
        super().__init__(name, slow=SLOW)

    def _spawn(self, cmd, env=None, preexec_fn=None):
        super()._spawn(cmd, env if env is not None else _env(), preexec_fn)


# ---------------------------------------------------------------------------------------------
# HTTP


def http_request(method, url, body=None, headers=None, timeout=15):
    """(status, headers dict (lowercase names), body bytes); never raises on HTTP status."""
    data = body
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None and not any(k.lower() == "content-type" for k in (headers or {})):
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout * SLOW) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def raw_post(port, path, body, headers, expect_continue=False, timeout=15):
    """POST over a raw socket (for oversize bodies: the server may answer before reading the
    body). Returns (status, body bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
                f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if expect_continue:
            head.append("Expect: 100-continue")
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        buf = b""
        if expect_continue:
            buf = _recv_head(s)
            status = int(buf.split(b" ", 2)[1])
            if status != 100:
                return status, buf
            buf = buf.split(b"\r\n\r\n", 1)[1]
        try:
            s.sendall(body)
        except OSError:
            pass  # the server answered early and closed
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        if not buf.startswith(b"HTTP/"):
            raise AssertionError(f"no HTTP response: {buf[:200]!r}")
        return int(buf.split(b" ", 2)[1]), buf
    finally:
        s.close()


def _recv_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


# ---------------------------------------------------------------------------------------------
# LINE simulator


class Sim(_Proc):
    """A provider simulator on tools/sim (the LINE one here; meta_harness.GraphSim too)."""
    BIN = SIM_BIN
    NAME = "line-sim"

    def __init__(self):
        super().__init__(self.NAME)
        self.port = None

    @classmethod
    def binary_present(cls):
        return os.access(cls.BIN, os.X_OK)

    def extra_flags(self):
        return []

    def start(self, timeout=30):
        self._spawn([self.BIN, "--listen", "127.0.0.1:0", "--log-level", "info",
                     "--threads", "32"] + self.extra_flags())
        self.port = int(self._wait_listening("port", timeout)["port"])
        return self

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def ctl(self, method, path, body=None, expect=200):
        status, _, data = http_request(method, self.base + path, body)
        text = data.decode("utf-8", "replace")
        if expect is not None:
            assert status == expect, f"sim {method} {path} -> {status}: {text}"
        return json.loads(text) if text.strip() else None

    def reset(self):
        self.ctl("POST", "/__sim/reset")

    def add_bot(self, token, bot_user_id, display_name=None, basic_id=None):
        body = {"token": token, "bot_user_id": bot_user_id}
        if display_name is not None:
            body["display_name"] = display_name
        if basic_id is not None:
            body["basic_id"] = basic_id
        return self.ctl("POST", "/__sim/bots", body)

    def revoke(self, token):
        return self.ctl("POST", "/__sim/bots/revoke", {"token": token})

    def set_profile(self, user_id, **fields):
        return self.ctl("POST", "/__sim/profiles", {"user_id": user_id, **fields})

    def fault(self, *faults, path=PUSH_PATH):
        return self.ctl("POST", "/__sim/faults", {"path": path, "faults": list(faults)})

    def pending_faults(self):
        return self.ctl("GET", "/__sim/faults")

    def requests(self, path=None):
        q = "?" + urllib.parse.urlencode({"path": path}) if path else ""
        reqs = self.ctl("GET", "/__sim/requests" + q)
        for r in reqs:  # the log keeps the body as text; parse JSON bodies for convenience
            if isinstance(r.get("body"), str):
                r["body_text"] = r["body"]
                try:
                    r["body"] = json.loads(r["body"])
                except ValueError:
                    pass
        # Arrival order: an entry is logged when its answer is ready, so a request that waited
        # for an in-flight retry key can be logged before the one it waited for.
        reqs.sort(key=lambda r: r.get("time_ms", 0))
        return reqs

    def deliveries(self, to=None):
        q = "?" + urllib.parse.urlencode({"to": to}) if to else ""
        return self.ctl("GET", "/__sim/deliveries" + q)

    def stop(self):
        return self.terminate()


# ---------------------------------------------------------------------------------------------
# Connector


class ConnectorApi(harness.Api):
    """`api.SendText(tenant_id=..., ...)` → SendTextResponse (raises grpc.RpcError)."""

    def __init__(self, channel, timeout=RPC_TIMEOUT):
        super().__init__(channel, timeout, module=cpb, service=CONNECTOR_SERVICE)

    def raw(self, method, payload, response_cls, timeout=None):
        """Send pre-serialized request bytes (e.g. a string field with invalid UTF-8)."""
        mc = self._channel.unary_unary(f"/{CONNECTOR_SERVICE}/{method}",
                                       request_serializer=lambda b: b,
                                       response_deserializer=response_cls.FromString)
        return mc(payload, timeout=timeout or self._timeout)


def write_vault_key_file(path, key_id="it-line-1"):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# integration-test vault key (random, throw-away)\n")
        f.write(f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}\n")
    os.chmod(path, 0o600)
    return path


class Connector(_Proc):
    """A connector on the engine (LINE here; meta_harness.MetaConnector the Meta one)."""
    BIN = CONNECTOR_BIN
    NAME = "connector-line"
    API = "line"  # options <API>-api-base, <API>-timeout-ms

    def __init__(self, persistence_port, sim_port, name=None, tls=harness.SUITE,
                 client_roles=harness.CLIENT_ROLES, **overrides):
        """tls: a harness.Certs with a "connector-line" certificate → mutual TLS on the gRPC
        server and to persistence; self.channel then presents "omnichatctl" (the operator).
        None → plaintext; SUITE (default) → as OMNICHAT_TEST_TLS says."""
        super().__init__(name or self.NAME)
        self.tls = harness.suite_certs() if tls is harness.SUITE else tls
        self.client_roles = client_roles
        self.persistence_port = persistence_port
        self.sim_port = sim_port
        self.key_path = write_vault_key_file(os.path.join(self.work, "vault.keys"))
        self.settings = {
            f"{self.API}-timeout-ms": LINE_TIMEOUT_MS,
            "persistence-timeout-ms": PERSISTENCE_TIMEOUT_MS,
            "lease-seconds": LEASE_SECONDS,
            "worker-interval-ms": WORKER_INTERVAL_MS,
            "backoff-base-ms": BACKOFF_BASE_MS,
            "max-attempts": MAX_ATTEMPTS,
            "backoff-max-ms": BACKOFF_MAX_MS,
            "log-level": "debug",
            # No drain pause on SIGTERM unless a test asks for one: the suite stops often.
            "shutdown-drain-ms": 0,
        }
        self.settings.update({k.replace("_", "-"): v for k, v in overrides.items()})
        self.grpc_port = None
        self.http_port = None
        self.channel = None
        self.api = None

    @classmethod
    def binary_present(cls):
        return os.access(cls.BIN, os.X_OK)

    def command(self):
        cmd = [self.BIN, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
               "--persistence-target", f"127.0.0.1:{self.persistence_port}",
               f"--{self.API}-api-base", f"http://127.0.0.1:{self.sim_port}",
               "--vault-key-file", self.key_path]
        for k, v in self.settings.items():
            cmd += [f"--{k}", str(v)]
        if self.tls is not None:
            cmd += self.tls.flags(self.NAME, self.client_roles)
        return cmd

    def start(self, timeout=60):
        self._spawn(self.command())
        ev = self._wait_listening("grpc_port", timeout)
        self.grpc_port = int(ev["grpc_port"])
        self.http_port = int(ev["http_port"])
        self.channel = self.new_channel()
        grpc.channel_ready_future(self.channel).result(timeout=30 * SLOW)
        self.api = ConnectorApi(self.channel)
        return self

    def new_channel(self, identity="omnichatctl"):
        if self.tls is None:
            return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        return self.tls.channel(self.grpc_port, identity)

    def _close_channel(self):
        if self.channel is not None:
            self.channel.close()
            self.channel = None
            self.api = None

    def stop(self, timeout=30):
        self._close_channel()
        return self.terminate(timeout)

    def kill9(self):
        self._close_channel()
        super().kill9()

    def restart(self):
        if self.alive():
            self.stop()
        return self.start()

    @contextlib.contextmanager
    def reconfigured(self, **overrides):
        """Runs the block with these settings (restarting the connector), then restores the
        previous ones (restarting again)."""
        saved = dict(self.settings)
        try:
            self.settings.update({k.replace("_", "-"): v for k, v in overrides.items()})
            rc = self.stop()
            assert rc in (0, -15), f"connector exit code after SIGTERM: {rc}"
            self.start()
            yield self
        finally:
            self.settings = saved
            if self.alive():
                self.stop()
            self.start()

    def metric(self, name, **labels):
        """Sum of the samples `name` on /metrics whose labels include `labels` (0 when none):
        metric("omnichat_webhook_events_total", outcome="stored") whatever the other labels."""
        status, _, body = self.http("GET", "/metrics")
        assert status == 200, status
        total = 0.0
        for line in body.decode().splitlines():
            m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
            if m is None or m.group(1) != name:
                continue
            have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                   m.group(2) or ""))
            if all(have.get(k) == str(v) for k, v in labels.items()):
                total += float(m.group(3))
        return total

    # -- HTTP side ------------------------------------------------------------------------

    def http(self, method, path, body=None, headers=None, timeout=15):
        return http_request(method, f"http://127.0.0.1:{self.http_port}{path}", body,
                            headers, timeout)

    def webhook(self, account_id, body, secret=None, signature=None, headers=None,
                timeout=15):
        """POST /webhooks/line/{account_id}; body: dict (compact JSON) or bytes/str.
        Signs with `secret` unless `signature` is given; neither → no signature header."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        elif isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json"}
        if signature is not None:
            h["x-line-signature"] = signature
        elif secret is not None:
            h["x-line-signature"] = sign(secret, body)
        h.update(headers or {})
        status, _, data = self.http("POST", f"/webhooks/line/{account_id}", body, h, timeout)
        return status, data


# ---------------------------------------------------------------------------------------------
# Webhook payloads


def event_base(source, ts=None, redelivery=False):
    return {
        "type": "message",
        "mode": "active",
        "timestamp": ts or harness.now_ms(),
        "webhookEventId": "01" + uuid.uuid4().hex[:24].upper(),
        "deliveryContext": {"isRedelivery": redelivery},
        "source": source,
        "replyToken": uuid.uuid4().hex,
    }


def user_source(user):
    return {"type": "user", "userId": user}


def text_event(user=None, text="hello", msg_id=None, ts=None, source=None, redelivery=False):
    ev = event_base(source or user_source(user), ts, redelivery)
    ev["message"] = {"id": msg_id or line_message_id(), "type": "text", "text": text,
                     "quoteToken": base64.b64encode(os.urandom(32)).decode().rstrip("=")}
    return ev


def sticker_event(user, msg_id=None, ts=None):
    ev = event_base(user_source(user), ts)
    ev["message"] = {"id": msg_id or line_message_id(), "type": "sticker", "packageId": "446",
                     "stickerId": "1988", "stickerResourceType": "STATIC",
                     "keywords": ["happy", "hello"],
                     "quoteToken": base64.b64encode(os.urandom(32)).decode().rstrip("=")}
    return ev


def image_event(user, msg_id=None, ts=None):
    ev = event_base(user_source(user), ts)
    ev["message"] = {"id": msg_id or line_message_id(), "type": "image",
                     "contentProvider": {"type": "line"},
                     "quoteToken": base64.b64encode(os.urandom(32)).decode().rstrip("=")}
    return ev


def payload(destination, *events):
    return {"destination": destination, "events": list(events)}


# ---------------------------------------------------------------------------------------------
# One test's world: tenant + bot + connected channel


class LineChannel:
    """A fresh tenant with a fresh LINE bot registered at the simulator and connected through
    the connector. Helpers create conversations, send, deliver webhooks and inspect results."""

    def __init__(self, conn, sim, api, db, token=None, secret=None, bot_user_id=None,
                 tenant=None, connect=True):
        self.conn, self.sim, self.api, self.db = conn, sim, api, db
        self.tenant = tenant or harness.new_id()
        self.token = token or f"tok-{uuid.uuid4().hex}"
        self.secret = secret or new_secret()
        self.bot_user_id = bot_user_id or new_user_id()
        self.account = None
        self._seq = 0
        sim.add_bot(self.token, self.bot_user_id, display_name="IT Bot " + self.bot_user_id[-6:])
        if connect:
            self.connect()

    @property
    def account_id(self):
        return self.account.channel_account_id

    def connect(self, token=None, secret=None, **kw):
        r = self.conn.api.ConnectChannel(tenant_id=self.tenant, access_token=token or self.token,
                                         channel_secret=secret or self.secret, **kw)
        self.account = r.channel_account
        self.webhook_path = r.webhook_path
        return r

    def get_account(self):
        return self.api.GetChannelAccount(tenant_id=self.tenant,
                                          channel_account_id=self.account_id).channel_account

    # -- conversations --------------------------------------------------------------------

    def conversation(self, user=None):
        """A 1:1 conversation with a new user, created through persistence (independent of
        the webhook). Returns (conversation, user_id)."""
        user = user or new_user_id()
        contact = self.api.UpsertContact(tenant_id=self.tenant,
                                         channel_account_id=self.account_id,
                                         external_user_id=user,
                                         display_name="User " + user[-6:]).contact
        conv = self.api.UpsertConversation(tenant_id=self.tenant,
                                           channel_account_id=self.account_id,
                                           thread_key=user,
                                           contact_id=contact.contact_id).conversation
        return conv, user

    def get_conversation(self, conversation_id):
        return self.api.GetConversation(tenant_id=self.tenant,
                                        conversation_id=conversation_id).conversation

    def conversations(self):
        r = self.api.ListConversations(tenant_id=self.tenant, channel_account_id=self.account_id,
                                       page_size=200)
        return list(r.conversations)

    def conversation_by_thread(self, thread_key):
        for c in self.conversations():
            if c.thread_key == thread_key:
                return c
        return None

    # -- sending --------------------------------------------------------------------------

    def key(self):
        self._seq += 1
        return f"idem-{uuid.uuid4().hex}-{self._seq}"

    def send_request(self, conv, text="hello from an agent", key=None, **fields):
        fields.setdefault("sender_id", "agent-7")
        fields.setdefault("sender_display_name", "Agent Seven")
        cid = conv if isinstance(conv, str) else conv.conversation_id
        return cpb.SendTextRequest(tenant_id=fields.pop("tenant_id", self.tenant),
                                   conversation_id=cid, text=text,
                                   idempotency_key=key if key is not None else self.key(),
                                   **fields)

    def send(self, conv, text="hello from an agent", key=None, timeout=None, **fields):
        return self.conn.api.SendText(self.send_request(conv, text, key, **fields),
                                      timeout=timeout).message

    # -- messages -------------------------------------------------------------------------

    def messages(self, conv):
        cid = conv if isinstance(conv, str) else conv.conversation_id
        return list(self.api.ListMessages(tenant_id=self.tenant, conversation_id=cid,
                                          page_size=200).messages)

    def message(self, conv, message_id):
        for m in self.messages(conv):
            if m.message_id == message_id:
                return m
        return None

    def wait_status(self, conv, message_id, statuses, timeout=10):
        statuses = set(statuses) if isinstance(statuses, (set, list, tuple)) else {statuses}

        def check():
            m = self.message(conv, message_id)
            return m if m is not None and m.status in statuses else None

        try:
            return wait_for(check, timeout, 0.1,
                            f"message {message_id} to reach {[pb.MessageStatus.Name(s) for s in statuses]}")
        except AssertionError as e:
            m = self.message(conv, message_id)
            raise AssertionError(f"{e}\nmessage now: {m}") from None

    def db_messages(self, where="true"):
        """Rows of this tenant's messages as dicts (psql as superuser)."""
        cols = ["id", "channel_account_id", "conversation_id", "direction", "idempotency_key",
                "coalesce(external_message_id,'')", "status", "coalesce(error_category,'')",
                "attempts", "coalesce(provider_retry_key::text,'')", "content_text",
                "sender_type", "sender_id", "content_type"]
        names = ["id", "channel_account_id", "conversation_id", "direction", "idempotency_key",
                 "external_message_id", "status", "error_category", "attempts",
                 "provider_retry_key", "content_text", "sender_type", "sender_id",
                 "content_type"]
        rows = self.db.rows(
            f"SELECT {', '.join(cols)} FROM omnichat.messages "
            f"WHERE tenant_id = {harness.sql_lit(self.tenant)} AND ({where}) ORDER BY id")
        return [dict(zip(names, r)) for r in rows]

    # -- simulator view of this bot -------------------------------------------------------

    def push_requests(self, token=None):
        """Push requests made with this channel's token (any token when token='*')."""
        reqs = self.sim.requests(PUSH_PATH)
        if token == "*":
            return reqs
        want = "Bearer " + (token or self.token)
        return [r for r in reqs if r.get("headers", {}).get("authorization") == want
                or r.get("bot_user_id") == self.bot_user_id]

    def deliveries(self):
        return [d for d in self.sim.deliveries() if d.get("bot_user_id") == self.bot_user_id]

    # -- webhooks -------------------------------------------------------------------------

    def deliver(self, *events, secret=None, **kw):
        body = payload(self.bot_user_id, *events)
        return self.conn.webhook(self.account_id, body, secret=secret or self.secret, **kw)

    def deliver_text(self, user=None, text="hi there", msg_id=None, **kw):
        user = user or new_user_id()
        ev = text_event(user, text, msg_id)
        status, body = self.deliver(ev, **kw)
        return status, body, user, ev

    def drain(self, timeout=8):
        """Wait until no outbound message of this tenant is still due for a retry (PENDING, or
        UNKNOWN with a next attempt; UNKNOWN for good is settled), so the retry worker leaves
        the next test's faults alone. Returns the stragglers, if any."""
        deadline = time.time() + timeout * SLOW
        while True:
            left = self.db.count(
                "SELECT count(*) FROM omnichat.messages WHERE tenant_id = "
                f"{harness.sql_lit(self.tenant)} AND (status = 'pending' OR "
                "(status = 'unknown' AND next_attempt_at IS NOT NULL))")
            if left == 0 or time.time() > deadline:
                return left
            time.sleep(0.1)


def kill_mid_send(ch, conn, arm, reached, after_start=None):
    """SendText on a fresh conversation of ch with the simulator armed by arm(); SIGKILL the
    connector once reached() says the request is at the simulator; restart it. Until the kill
    the connector runs with a provider timeout as long as the lease allows (lease > timeout + 2
    persistence timeouts), so the call is surely still in flight when it dies. after_start(conn)
    runs after each start (Meta: point the simulator's webhooks at the new port). Returns
    (conversation, message id, request) with the message recorded PENDING or UNKNOWN."""
    saved = dict(conn.settings)
    try:
        conn.settings["persistence-timeout-ms"] = 500
        conn.settings[f"{conn.API}-timeout-ms"] = LEASE_SECONDS * 1000 - 2 * 500 - 200
        rc = conn.stop()
        assert rc in (0, -15), f"connector exit code after SIGTERM: {rc}"
        conn.start()
        if after_start:
            after_start(conn)
        conv, _ = ch.conversation()
        arm()
        req = ch.send_request(conv, "survives a crash")
        outcome = {}

        def call():
            try:
                outcome["reply"] = conn.api.SendText(req, timeout=20)
            except grpc.RpcError as e:
                outcome["error"] = e

        t = threading.Thread(target=call)
        t.start()
        wait_for(reached, 10, 0.01, "the send to reach the simulator")
        conn.kill9()
        t.join(10)
        assert "reply" not in outcome, f"SendText answered although the send was in flight: {outcome}"
        rows = ch.db_messages()
        assert len(rows) == 1, f"the message must be recorded before the send: {rows}"
        assert rows[0]["status"] in ("pending", "unknown"), rows
        return conv, rows[0]["id"], req
    finally:
        conn.settings = saved
        if not conn.alive():
            conn.start()
        if after_start:
            after_start(conn)


def channel_factory(cls, *args):
    """The body of a factory fixture: yields make(**kw) -> cls(*args, **kw), then drains every
    connected channel it made (`yield from channel_factory(...)`)."""
    made = []

    def make(**kw):
        ch = cls(*args, **kw)
        made.append(ch)
        return ch

    yield make
    for ch in made:
        if ch.account is not None:
            ch.drain()


def find_in_tree(obj, pred):
    """True if pred(value) holds for any scalar inside a JSON-like tree."""
    if isinstance(obj, dict):
        return any(find_in_tree(v, pred) or pred(k) for k, v in obj.items())
    if isinstance(obj, list):
        return any(find_in_tree(v, pred) for v in obj)
    return pred(obj)


def check_logs(proc, label):
    """Sanitizer lines in the new part of proc's log (since the previous check)."""
    bad = sanitizer_lines(proc.new_log_since_last_check())
    assert not bad, (f"sanitizer report in the {label} log ({proc.log_path}):\n"
                     + "\n".join(bad[:20]) + "\n--- log tail ---\n" + log_tail(proc.log_path))
