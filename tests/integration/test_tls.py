"""Mutual TLS and method-level authorization (who may call what), on real processes.

This module runs its own stack over mutual TLS: a PostgreSQL cluster, omnichat-persistence and
omnichat-connector-line with certificates from scripts/certs.sh (the sandbox's tool), the
roles of harness.CLIENT_ROLES (connector-line=connector, inbox=inbox, omnichatctl=operator),
and the LINE simulator. The rest of the suite runs plaintext.

Run:  /usr/bin/python3 -m pytest tests/integration/test_tls.py -q
Env:  OMNICHAT_BIN_DIR (default build/bin).
"""
import json
import os
import re
import subprocess
import sys
import uuid

import grpc
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "line"))

import harness  # noqa: E402
from harness import Api, Certs, PgCluster, Service, log_tail, new_id, pb, sanitizer_lines  # noqa: E402
import line_harness as lh  # noqa: E402

CTL = os.path.join(harness.BIN_DIR, "omnichatctl")
PST = "/omnichat.persistence.v1.Persistence/"
CONN = "/omnichat.connector.v1.Connector/"

# The policy, stated here independently of the method tables it checks.
CONNECTOR_ONLY = {"UpsertContact", "UpsertConversation", "InsertMessage", "PersistInbound",
                  "AddAttachments", "RegisterChannelAccount", "UpdateChannelCredentials",
                  "ResolveChannelAccount", "RecordChannelStatus", "CreateOutbound",
                  "CompleteOutbound", "ClaimDueOutbound", "ReconcileOutbound", "ApplyReceipt"}
CONNECTOR_AND_INBOX = {"GetConversation", "GetChannelAccount"}
INBOX_ONLY = {"ListConversations", "ListMessages", "ListChannelAccounts"}


def persistence_methods():
    return {m.name: m for m in pb.DESCRIPTOR.services_by_name["Persistence"].methods}


def call_empty(channel, path, request_cls, response_cls):
    """Calls one method with an empty request; returns the status code."""
    fn = channel.unary_unary(path, request_serializer=request_cls.SerializeToString,
                             response_deserializer=response_cls.FromString)
    try:
        fn(request_cls(), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def code_of(channel, method):
    m = persistence_methods()[method]
    return call_empty(channel, PST + method, getattr(pb, m.input_type.name),
                      getattr(pb, m.output_type.name))


def health(channel, timeout=5):
    return Api(channel).health(timeout=timeout)


def metric(text, name, **labels):
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def log_events(text, msg):
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("msg") == msg:
                out.append(ev)
    return out


def ctl(*args, tenant=None):
    argv = [CTL] + (["--tenant", tenant] if tenant else []) + [str(a) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHAT_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env["LC_ALL"] = "C.UTF-8"
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60 * lh.SLOW, env=env)
    assert not sanitizer_lines(p.stderr), p.stderr
    return p


# ---------------------------------------------------------------------------------------------
# The mutual-TLS stack


class TlsStack:
    def __init__(self):
        self.certs = Certs().make("persistence", "connector-line", "omnichatctl", "inbox",
                                  "stranger")
        self.cluster = PgCluster().init()
        self.pst = Service(self.cluster, name="persistence-tls", tls=self.certs)
        self.pst.migrate()
        self.cluster.grant()
        self.pst.start()
        self.sim = lh.Sim().start()
        self.conn = lh.Connector(self.pst.grpc_port, self.sim.port, tls=self.certs).start()
        self.api = Api(self.pst.channel)  # the operator
        self.db = harness.Db(self.cluster.dsn("super"))

    def close(self):
        results = []
        for label, proc, stop in (("connector", self.conn, self.conn.stop),
                                  ("line-sim", self.sim, self.sim.stop),
                                  ("persistence", self.pst, self.pst.stop)):
            rc = stop()
            results.append((label, proc, rc))
        self.cluster.destroy()
        for label, proc, rc in results:
            bad = sanitizer_lines(proc.log_text())
            assert not bad, f"sanitizer report in the {label} log:\n" + "\n".join(bad[:20])
            assert rc in (0, -15), f"{label} exit code {rc}\n{log_tail(proc.log_path)}"


@pytest.fixture(scope="module")
def tls_stack():
    for b in (Service.binary_present(), lh.Sim.binary_present(), lh.Connector.binary_present(),
              os.access(CTL, os.X_OK)):
        assert b, f"binaries missing in {harness.BIN_DIR} (set OMNICHAT_BIN_DIR)"
    s = TlsStack()
    yield s
    s.close()


# ---------------------------------------------------------------------------------------------
# Who may connect


def test_plaintext_warning_only_without_tls(tls_stack):
    warning = "gRPC without TLS"
    assert warning not in tls_stack.pst.log_text()
    assert warning not in tls_stack.conn.log_text()
    plain = Service(tls_stack.cluster, name="persistence-plain", tls=None).start()
    try:
        assert [ev["listen"] for ev in log_events(plain.log_text(), warning + ": any process "
                "that reaches the port may call every method; set --tls-cert-file, "
                "--tls-key-file and --tls-ca-file outside a sandbox")] == ["127.0.0.1:0"]
    finally:
        assert plain.stop() in (0, -15)


def test_client_without_certificate_is_refused(tls_stack):
    port = tls_stack.pst.grpc_port
    for channel in (tls_stack.certs.channel(port, None),  # TLS, no client certificate
                    grpc.insecure_channel(f"127.0.0.1:{port}")):  # plaintext
        with channel:
            with pytest.raises(grpc.RpcError) as e:
                health(channel)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert code_of(channel, "ResolveChannelAccount") == grpc.StatusCode.UNAVAILABLE
    # The same for the connector's gRPC port.
    with tls_stack.certs.channel(tls_stack.conn.grpc_port, None) as channel:
        with pytest.raises(grpc.RpcError) as e:
            health(channel)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # With a certificate the same calls go through (so the refusals above were the TLS layer).
    with tls_stack.certs.channel(port, "inbox") as channel:
        assert health(channel).status == 1


def test_certificate_from_another_ca_is_refused(tls_stack):
    other = Certs().make("omnichatctl", "persistence")
    port = tls_stack.pst.grpc_port
    # A client certificate of another CA (same name), the server's CA trusted: refused.
    with other.channel(port, "omnichatctl", ca=tls_stack.certs.ca) as channel:
        with pytest.raises(grpc.RpcError) as e:
            health(channel)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # Our C client refuses a server whose certificate is not from its CA.
    r = ctl("--persistence", f"127.0.0.1:{port}", "--tls-cert-file", other.crt("omnichatctl"),
            "--tls-key-file", other.key("omnichatctl"), "--tls-ca-file", other.ca, "health")
    assert r.returncode == 1 and "UNAVAILABLE" in r.stderr, r.stderr
    # The same client with the right files is served.
    c = tls_stack.certs
    r = ctl("--persistence", f"127.0.0.1:{port}", "--tls-cert-file", c.crt("omnichatctl"),
            "--tls-key-file", c.key("omnichatctl"), "--tls-ca-file", c.ca, "health")
    assert r.returncode == 0 and "SERVING" in r.stdout, r.stderr


# ---------------------------------------------------------------------------------------------
# Who may call what


def test_inbox_gets_permission_denied_on_claim_due_outbound_logged_and_counted(tls_stack):
    pst = tls_stack.pst
    pst.new_log_since_last_check()
    _, before = pst.admin_get("/metrics")
    with pst.new_channel("inbox") as channel:
        req = pb.ClaimDueOutboundRequest(channel_type=pb.CHANNEL_TYPE_LINE, lease_owner="evil",
                                         lease_seconds=30, limit=100)
        with pytest.raises(grpc.RpcError) as e:
            Api(channel).ClaimDueOutbound(req)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Reads are the inbox's: the same identity is served there.
        assert Api(channel).ListConversations(tenant_id=new_id()).conversations is not None
    denied = [ev for ev in log_events(pst.new_log_since_last_check(), "rpc permission denied")
              if ev.get("method") == "ClaimDueOutbound"]
    assert len(denied) == 1 and denied[0]["peer"] == "inbox" and denied[0]["level"] == "warn", \
        denied
    _, after = pst.admin_get("/metrics")
    labels = {"method": "ClaimDueOutbound", "peer": "inbox"}
    assert metric(after, "omnichat_rpc_denied_total", **labels) == \
        metric(before, "omnichat_rpc_denied_total", **labels) + 1
    assert metric(after, "omnichat_rpc_requests_total", method="ClaimDueOutbound",
                  code="PERMISSION_DENIED") >= 1


@pytest.mark.parametrize("identity", ["omnichatctl", "connector-line", "inbox", "stranger"])
def test_every_persistence_method_follows_the_role_table(tls_stack, identity):
    allowed = {
        "omnichatctl": set(persistence_methods()),
        "connector-line": CONNECTOR_ONLY | CONNECTOR_AND_INBOX,
        "inbox": INBOX_ONLY | CONNECTOR_AND_INBOX,
        "stranger": set(),  # same CA, no role
    }[identity]
    assert CONNECTOR_ONLY | CONNECTOR_AND_INBOX | INBOX_ONLY == set(persistence_methods())
    with tls_stack.pst.new_channel(identity) as channel:
        # Health is for every authenticated peer, mapped to a role or not.
        assert health(channel).status == 1
        for method in sorted(persistence_methods()):
            code = code_of(channel, method)
            if method in allowed:
                # Empty requests: the handler ran and refused the arguments.
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (identity, method, code)
            else:
                assert code == grpc.StatusCode.PERMISSION_DENIED, (identity, method, code)


def test_connector_rpcs_follow_the_role_table(tls_stack):
    port = tls_stack.conn.grpc_port
    cases = {"SendText": {"omnichatctl", "inbox"}, "ConnectChannel": {"omnichatctl"}}
    for identity in ("omnichatctl", "inbox", "connector-line", "stranger"):
        with tls_stack.certs.channel(port, identity) as channel:
            assert health(channel).status == 1
            for method, who in cases.items():
                req = getattr(lh.cpb, f"{method}Request")
                resp = getattr(lh.cpb, f"{method}Response")
                code = call_empty(channel, CONN + method, req, resp)
                want = grpc.StatusCode.INVALID_ARGUMENT if identity in who else \
                    grpc.StatusCode.PERMISSION_DENIED
                assert code == want, (identity, method, code)


# ---------------------------------------------------------------------------------------------
# End to end over mutual TLS


def test_connector_identity_end_to_end(tls_stack):
    """ConnectChannel (operator) -> connector -> persistence; a signed webhook -> PersistInbound;
    SendText as the inbox -> ClaimDue/Complete by the connector; all over mutual TLS."""
    s = tls_stack
    s.pst.new_log_since_last_check()
    ch = lh.LineChannel(s.conn, s.sim, s.api, s.db)  # connects as the operator
    user = lh.new_user_id()
    status, _ = s.conn.webhook(ch.account_id, lh.payload(ch.bot_user_id,
                                                         lh.text_event(user, "over mTLS")),
                               secret=ch.secret)
    assert status == 200
    conv = lh.wait_for(lambda: ch.conversation_by_thread(user), 10, what="the conversation")
    assert [m.content_text for m in ch.messages(conv)] == ["over mTLS"]
    with s.conn.new_channel("inbox") as channel:
        inbox = lh.ConnectorApi(channel)
        msg = inbox.SendText(ch.send_request(conv, "reply over mTLS")).message
    assert msg.status == pb.MESSAGE_STATUS_SENT
    assert [d["texts"] for d in s.sim.deliveries(to=user)] == [["reply over mTLS"]]
    # Nothing the connector needed was refused on the way.
    assert not log_events(s.pst.new_log_since_last_check(), "rpc permission denied")


def test_omnichatctl_walkthrough_over_mtls(tls_stack, tmp_path):
    """The sandbox walkthrough (README) with client certificates: connect, a simulated
    webhook, conversations, timeline, send."""
    s, c = tls_stack, tls_stack.certs
    token, secret = "tok-" + uuid.uuid4().hex, uuid.uuid4().hex
    bot = lh.new_user_id()
    s.sim.add_bot(token, bot, display_name="mTLS Bot")
    files = {}
    for name, value in (("token", token), ("secret", secret)):
        path = tmp_path / name
        path.write_text(value + "\n")
        os.chmod(path, 0o600)
        files[name] = str(path)
    tenant = new_id()
    flags = ["--persistence", f"127.0.0.1:{s.pst.grpc_port}",
             "--connector", f"127.0.0.1:{s.conn.grpc_port}",
             "--tls-cert-file", c.crt("omnichatctl"), "--tls-key-file", c.key("omnichatctl"),
             "--tls-ca-file", c.ca]

    def run(*args):
        r = ctl(*flags, *args, tenant=tenant)
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return r.stdout

    acc = json.loads(run("--json", "connect", "line", "--token-file", files["token"],
                         "--secret-file", files["secret"]))["channel_account"]
    user = lh.new_user_id()
    out = run("simulate", "line-webhook", "--account", acc["channel_account_id"],
              "--secret-file", files["secret"], "--user", user, "--text", "hello mTLS",
              "--url", f"http://127.0.0.1:{s.conn.http_port}")
    assert "-> HTTP 200" in out
    convs = json.loads(run("--json", "conversations", "--thread", user))["conversations"]
    assert len(convs) == 1
    cid = convs[0]["conversation_id"]
    sent = json.loads(run("--json", "send", cid, "--text", "answer", "--agent-name", "A"))
    assert sent["message"]["status"] == "sent"
    assert "hello mTLS" in run("timeline", cid)
    # Half a TLS setting is a usage error, never a silent plaintext call.
    r = ctl("--tls-cert-file", c.crt("omnichatctl"), "health")
    assert r.returncode == 2 and "go together" in r.stderr


# ---------------------------------------------------------------------------------------------
# Configuration and rotation


def test_check_config_refuses_incomplete_or_mismatched_tls(tls_stack):
    c = tls_stack.certs
    base = [os.path.join(harness.BIN_DIR, "omnichat-persistence"), "--check-config",
            "--database-url", "host=/nonexistent"]

    def check(*extra):
        return subprocess.run(base + list(extra), capture_output=True, text=True, timeout=30)

    assert check(*c.flags("persistence")).returncode == 0
    r = check("--tls-cert-file", c.crt("persistence"))
    assert r.returncode == 1 and "go together" in r.stdout + r.stderr
    r = check("--tls-cert-file", c.crt("persistence"), "--tls-key-file", c.key("inbox"),
              "--tls-ca-file", c.ca)
    assert r.returncode == 1 and "does not match" in r.stdout + r.stderr
    r = check(*c.flags("persistence", "inbox=superuser"))
    assert r.returncode != 0 and "--tls-client-roles" in r.stdout + r.stderr


def served_serial(port, certs, identity="omnichatctl"):
    """Serial of the certificate the server presents to a new connection."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2",
                        "-cert", certs.crt(identity), "-key", certs.key(identity),
                        "-CAfile", certs.ca], input=b"", capture_output=True, timeout=20)
    m = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", p.stdout, re.S)
    assert m, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=m.group(0),
                       capture_output=True, timeout=20, check=True)
    return x.stdout.decode().strip()


def file_serial(path):
    x = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", path],
                       capture_output=True, text=True, timeout=20, check=True)
    return x.stdout.strip()


def replace_file(path, data):
    """Atomic replacement, as certificate tooling does it."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def test_certificates_reload_without_restart(tls_stack):
    certs = Certs().make("persistence", "omnichatctl")
    other = Certs().make("omnichatctl")
    svc = Service(tls_stack.cluster, name="persistence-reload", tls=certs).start()
    try:
        pid = svc.proc.pid
        port = svc.grpc_port
        # 1. A renewed server certificate is served to new connections.
        old = served_serial(port, certs)
        assert old == file_serial(certs.crt("persistence"))
        os.remove(certs.crt("persistence"))
        os.remove(certs.key("persistence"))
        certs.make("persistence")
        new = file_serial(certs.crt("persistence"))
        assert new != old
        lh.wait_for(lambda: served_serial(port, certs) == new, 10, interval=0.1,
                    what="the renewed certificate to be served")

        # 2. A client of another CA is refused until the CA file trusts that CA too.
        def other_client_code():
            with other.channel(port, "omnichatctl", ca=certs.ca) as channel:
                try:
                    health(channel, timeout=3)
                    return grpc.StatusCode.OK
                except grpc.RpcError as e:
                    return e.code()
        assert other_client_code() == grpc.StatusCode.UNAVAILABLE
        with open(certs.ca, "rb") as a, open(other.ca, "rb") as b:
            replace_file(certs.ca, a.read() + b.read())
        lh.wait_for(lambda: other_client_code() == grpc.StatusCode.OK, 10, interval=0.1,
                    what="the new CA to be accepted")

        # 3. A key that does not match the certificate (a half-done replacement) is not taken:
        # the previous pair keeps being served.
        with open(certs.key("omnichatctl"), "rb") as f:
            replace_file(certs.key("persistence"), f.read())
        assert served_serial(port, certs) == new
        assert svc.proc.pid == pid and svc.alive()
    finally:
        rc = svc.stop()
        assert not sanitizer_lines(svc.log_text()), log_tail(svc.log_path)
        assert rc in (0, -15), log_tail(svc.log_path)


def test_reflection_is_open_to_every_authenticated_peer_only(tls_stack):
    from test_reflection import BUILTIN, CONNECTOR, PERSISTENCE, services_of
    for port, served in ((tls_stack.pst.grpc_port, PERSISTENCE),
                         (tls_stack.conn.grpc_port, CONNECTOR)):
        # A certificate of our CA without any role may explore the API, as it may check health
        # (it still may not call a method: test_every_persistence_method_follows_the_role_table).
        with tls_stack.certs.channel(port, "stranger") as channel:
            for version in ("v1", "v1alpha"):
                assert services_of(channel, version) == {served} | BUILTIN
        with tls_stack.certs.channel(port, None) as channel:
            with pytest.raises(grpc.RpcError) as e:
                services_of(channel, "v1")
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
