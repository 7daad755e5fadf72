"""omnichatctl, the operator CLI, run as a subprocess against the real services.

Persistence paths (channels, conversations, timeline, health) use the suite's shared
persistence service (../conftest.py). The send/connect/webhook paths go through a real
omnichat-connector-line and omnichat-line-sim started once for this module (tests/integration/
line/line_harness.py), so a `send` is checked end to end: CLI -> connector -> persistence ->
simulated LINE, and back through `timeline`.

Every CLI run is checked for sanitizer reports; the CLI gets no OMNICHAT_* variable from the
caller's environment (a stray OMNICHAT_TENANT would change what it reads).

Run:  /usr/bin/python3 -m pytest tests/integration/test_omnichatctl.py -q
Env:  OMNICHAT_BIN_DIR (default build/bin): omnichatctl, omnichat-persistence,
      omnichat-line-sim, omnichat-connector-line.
"""
import base64
import json
import os
import re
import subprocess
import sys
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "line"))

import harness  # noqa: E402
from harness import new_id, now_ms, pb, sanitizer_lines, log_tail  # noqa: E402
import line_harness as lh  # noqa: E402

CTL = os.path.join(harness.BIN_DIR, "omnichatctl")
ESC = "\x1b"


# ---------------------------------------------------------------------------------------------
# Running the CLI


class Run:
    def __init__(self, args, proc):
        self.args = args
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        assert self.rc == 0, f"{self}"
        lines = [ln for ln in self.out.splitlines() if ln.strip()]
        assert len(lines) == 1, f"--json must print one line:\n{self.out}"
        return json.loads(lines[0])

    def __str__(self):
        return (f"omnichatctl {' '.join(self.args)}\n-> exit {self.rc}\n--- stdout ---\n"
                f"{self.out}--- stderr ---\n{self.err}")


def ctl(*args, tenant=None, env=None, timeout=60, stdin=None):
    """Runs omnichatctl with args; tenant (if given) via --tenant. Returns a Run."""
    assert os.access(CTL, os.X_OK), f"{CTL} not built (set OMNICHAT_BIN_DIR)"
    argv = [CTL] + (["--tenant", tenant] if tenant else []) + [str(a) for a in args]
    e = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHAT_")}
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    e["LC_ALL"] = "C.UTF-8"
    e["TZ"] = "UTC"
    e.update(harness.ctl_tls_env())
    e.update(env or {})
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout * lh.SLOW, env=e,
                       input=stdin)
    r = Run(argv[1:], p)
    bad = sanitizer_lines(p.stderr)
    assert not bad, f"sanitizer report from omnichatctl:\n{r}"
    return r


def ok(r):
    assert r.rc == 0, str(r)
    return r


def fails(r, code=1, *needles):
    assert r.rc == code, str(r)
    for n in needles:
        assert n in r.err, f"{n!r} missing from stderr:\n{r}"
    return r


def secret_file(tmp_path, name, value):
    path = tmp_path / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return str(path)


@pytest.fixture
def P(service):
    """Global flags pointing at the shared persistence service."""
    return ["--persistence", f"127.0.0.1:{service.grpc_port}"]


# ---------------------------------------------------------------------------------------------
# Usage, health, vault-keygen


def test_usage_errors_exit_2_with_plain_words(P):
    fails(ctl(), 2)
    fails(ctl("frobnicate"), 2, "unknown command 'frobnicate'")
    fails(ctl(*P, "conversations"), 2, "OMNICHAT_TENANT")
    fails(ctl(*P, "conversations", tenant="not-a-uuid"), 2, "--tenant", "not a UUID")
    t = new_id()
    fails(ctl(*P, "timeline", tenant=t), 2, "which conversation")
    fails(ctl(*P, "timeline", new_id(), "--limit", "0", tenant=t), 2, "--limit")
    fails(ctl(*P, "timeline", new_id(), "--before", "x", "--after", "y", tenant=t), 2,
          "at most one")
    fails(ctl(*P, "conversations", "--channel", "telegram", tenant=t), 2, "--channel")
    fails(ctl(*P, "conversations", "--bogus", tenant=t), 2, "unknown option '--bogus'")
    fails(ctl(*P, "send", new_id(), tenant=t), 2, "--text")
    fails(ctl("connect", "line", "--token", "abc", "--secret", "def", tenant=t), 2,
          "files only")
    fails(ctl("simulate", "line-webhook", "--account", new_id(), "--secret-file", "/dev/null",
              "--user", "Ubad", "--text", "x"), 2, "--user")
    assert "usage: omnichatctl" in ok(ctl("--help")).out
    assert "usage: omnichatctl timeline" in ok(ctl("timeline", "--help")).out


def test_health_of_persistence(P, service):
    r = ok(ctl(*P, "health"))
    assert "SERVING" in r.out
    assert ok(ctl(*P, "--json", "health")).json()["status"] == "SERVING"
    # --target wins over --persistence; a service the server does not know is NOT_FOUND.
    ok(ctl("health", "--target", f"127.0.0.1:{service.grpc_port}",
           "--service", "omnichat.persistence.v1.Persistence"))
    fails(ctl(*P, "health", "--service", "no.such.Service"), 1, "NOT_FOUND")


def test_unreachable_service_is_exit_1_with_status_name():
    port = harness.free_port()
    r = fails(ctl("--persistence", f"127.0.0.1:{port}", "conversations", tenant=new_id()), 1,
              "ListConversations failed", "UNAVAILABLE", f"127.0.0.1:{port}")
    assert r.out == ""


def test_vault_keygen_prints_loadable_distinct_lines():
    lines = [ok(ctl("vault-keygen", "--key-id", "2026-07")).out.strip() for _ in range(3)]
    for ln in lines:
        key_id, key = ln.split(":", 1)
        assert key_id == "2026-07"
        assert len(base64.b64decode(key, validate=True)) == 32
    assert len(set(lines)) == 3
    # Positional key id (docs/vault.md) and the default (a UTC date-time) work too.
    assert ok(ctl("vault-keygen", "k.2")).out.startswith("k.2:")
    assert re.match(r"^\d{8}T\d{6}Z:[A-Za-z0-9+/]{43}=$", ok(ctl("vault-keygen")).out.strip())
    fails(ctl("vault-keygen", "--key-id", "bad id"), 2, "--key-id")


# ---------------------------------------------------------------------------------------------
# conversations


def _conv_with_messages(b, acct, thread, texts, t0):
    conv = b.conversation(acct, thread)
    for i, text in enumerate(texts):
        b.message(conv, t0 - (len(texts) - i) * 1000, text=text, sender_display_name="Taro")
    return b.api.GetConversation(tenant_id=b.tenant,
                                 conversation_id=conv.conversation_id).conversation


def test_conversations_table_json_and_filters(b, b2, P):
    line = b.account(pb.CHANNEL_TYPE_LINE)
    fb = b.account(pb.CHANNEL_TYPE_FACEBOOK)
    # Activity order = creation order here (last activity is the later of creation and the
    # newest message).
    old = _conv_with_messages(b, line, "U-old", ["first", "hello old"], now_ms())
    page = _conv_with_messages(b, fb, "page:psid", ["from messenger"], now_ms())
    new = _conv_with_messages(b, line, "U-new", ["newest message"], now_ms())

    doc = ok(ctl(*P, "--json", "conversations", tenant=b.tenant)).json()
    ids = [c["conversation_id"] for c in doc["conversations"]]
    assert ids == [new.conversation_id, page.conversation_id, old.conversation_id]
    first = doc["conversations"][0]
    assert first["channel_type"] == "line" and first["thread_key"] == "U-new"
    assert first["message_count"] == 1 and first["last_message_preview"] == "newest message"
    assert doc["next_page_token"] == ""

    out = ok(ctl(*P, "conversations", tenant=b.tenant)).out
    lines = out.splitlines()
    assert lines[0].split() == ["CONVERSATION", "CHANNEL", "THREAD", "LAST", "ACTIVITY", "MSGS",
                                "PREVIEW"]
    assert [ln.split()[0] for ln in lines[1:4]] == ids
    row = lines[1].split()
    assert row[1:3] == ["line", "U-new"] and row[5] == "1" and "newest message" in lines[1]
    assert "hello old" in lines[3] and " 2 " in lines[3]

    fb_only = ok(ctl(*P, "--json", "conversations", "--channel", "facebook",
                     tenant=b.tenant)).json()
    assert [c["conversation_id"] for c in fb_only["conversations"]] == [page.conversation_id]
    by_acct = ok(ctl(*P, "--json", "conversations", "--account", line.channel_account_id,
                     tenant=b.tenant)).json()
    assert [c["conversation_id"] for c in by_acct["conversations"]] == \
        [new.conversation_id, old.conversation_id]
    by_thread = ok(ctl(*P, "--json", "conversations", "--thread", "U-old",
                       tenant=b.tenant)).json()
    assert [c["conversation_id"] for c in by_thread["conversations"]] == [old.conversation_id]
    assert "no conversation with that thread" in \
        ok(ctl(*P, "conversations", "--thread", "U-none", tenant=b.tenant)).out

    # Another tenant sees none of it.
    assert ok(ctl(*P, "conversations", tenant=b2.tenant)).out.strip() == "no conversations"
    assert ok(ctl(*P, "--json", "conversations", tenant=b2.tenant)).json()["conversations"] == []


def test_conversations_paging_visits_every_conversation_once(b, P):
    acct = b.account()
    want = [_conv_with_messages(b, acct, f"U-{i}", [f"m{i}"], now_ms()).conversation_id
            for i in range(5)]
    seen, token, pages = [], None, 0
    while True:
        args = ["--json", "conversations", "--limit", "2"] + (["--page-token", token] if token
                                                                else [])
        doc = ok(ctl(*P, *args, tenant=b.tenant)).json()
        seen += [c["conversation_id"] for c in doc["conversations"]]
        pages += 1
        token = doc["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(want)) and pages == 3
    # The text output prints the command for the next page.
    out = ok(ctl(*P, "conversations", "--limit", "2", "--account", acct.channel_account_id,
                 tenant=b.tenant)).out
    m = re.search(r"^more: omnichatctl conversations --account (\S+) --limit 2 "
                  r"--page-token (\S+)$", out, re.M)
    assert m and m.group(1) == acct.channel_account_id
    doc = ok(ctl(*P, "--json", "conversations", "--account", acct.channel_account_id,
                 "--limit", "2", "--page-token", m.group(2), tenant=b.tenant)).json()
    assert [c["conversation_id"] for c in doc["conversations"]] == \
        list(reversed(want))[2:4]
    # A token is bound to its filters: reusing it without them is the server's INVALID_ARGUMENT.
    fails(ctl(*P, "conversations", "--page-token", m.group(2), tenant=b.tenant), 1,
          "INVALID_ARGUMENT")


# ---------------------------------------------------------------------------------------------
# timeline


def _timeline_conv(b, n):
    acct = b.account()
    conv = b.conversation(acct, "U-" + uuid.uuid4().hex)
    t0 = now_ms() - 3_600_000
    ids = []
    for i in range(n):
        out = i % 3 == 2
        r = b.message(conv, t0 + i * 1000, text=f"msg {i}",
                      direction=pb.DIRECTION_OUTBOUND if out else pb.DIRECTION_INBOUND,
                      sender_id="agent-7" if out else "U-x",
                      sender_display_name="Agent Seven" if out else "Taro")
        ids.append(r.message.message_id)
    return acct, conv, ids


def test_timeline_pages_with_cursors(b, P):
    _, conv, ids = _timeline_conv(b, 7)
    cid = conv.conversation_id

    newest = ok(ctl(*P, "--json", "timeline", cid, "--limit", "3", tenant=b.tenant)).json()
    assert [m["message_id"] for m in newest["messages"]] == ids[4:]
    assert newest["has_older"] and not newest["has_newer"]
    assert newest["conversation"]["conversation_id"] == cid
    older = ok(ctl(*P, "--json", "timeline", cid, "--limit", "3", "--before",
                   newest["before_cursor"], tenant=b.tenant)).json()
    assert [m["message_id"] for m in older["messages"]] == ids[1:4]
    oldest = ok(ctl(*P, "--json", "timeline", cid, "--limit", "2", "--oldest",
                    tenant=b.tenant)).json()
    assert [m["message_id"] for m in oldest["messages"]] == ids[:2]
    assert not oldest["has_older"] and oldest["has_newer"]
    after = ok(ctl(*P, "--json", "timeline", cid, "--limit", "3", "--after",
                   oldest["after_cursor"], tenant=b.tenant)).json()
    assert [m["message_id"] for m in after["messages"]] == ids[2:5]
    m0 = oldest["messages"][0]
    assert (m0["direction"], m0["sender_type"], m0["sender_display_name"], m0["content_text"],
            m0["status"]) == ("inbound", "contact", "Taro", "msg 0", "received")

    # Text: a chat log, then the commands for the next pages with the real cursors.
    out = ok(ctl(*P, "timeline", cid, "--limit", "3", tenant=b.tenant)).out
    assert f"conversation {cid}  line  thread {conv.thread_key}  7 messages" in out
    log = [ln for ln in out.splitlines() if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", ln)]
    assert len(log) == 3
    assert "\u2190  Taro (contact)  msg 4" in log[0]
    assert "\u2192  Agent Seven (agent) [sent]  msg 5" in log[1]
    assert "\u2190  Taro (contact)  msg 6" in log[2]
    assert f"older: omnichatctl timeline {cid} --before {newest['before_cursor']}" in out
    assert f"newer: omnichatctl timeline {cid} --after {newest['after_cursor']}" in out
    # An ASCII terminal gets ASCII arrows.
    out = ok(ctl(*P, "timeline", cid, "--limit", "2", tenant=b.tenant,
                 env={"LC_ALL": "C"})).out
    assert "->  Agent Seven (agent) [sent]  msg 5" in out and "<-  Taro (contact)  msg 6" in out


def test_timeline_shows_status_category_and_non_text(b, P):
    acct = b.account()
    user = "U" + uuid.uuid4().hex
    t = now_ms() - 60_000
    sticker = b.inbound(acct, t, user=user, thread_key=user, text="",
                        content_type=pb.CONTENT_TYPE_STICKER, contact_display_name="Hanako",
                        content_struct_json='{"packageId":"446","stickerId":"1988"}')
    res = b.persist(sticker)[0]
    conv_id = res.conversation_id
    created = b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv_id,
                                   idempotency_key="k-" + uuid.uuid4().hex,
                                   request_fingerprint="ab" * 16, sender_id="agent-1",
                                   sender_display_name="Agent One", content_text="sorry!",
                                   lease_owner="w1", lease_seconds=30)
    b.api.CompleteOutbound(tenant_id=b.tenant, message_id=created.message.message_id,
                           lease_owner="w1", outcome=pb.OUTBOUND_OUTCOME_FAILED,
                           error_category=pb.ERROR_CATEGORY_AUTH_ERROR,
                           error_detail="LINE answered 401")
    out = ok(ctl(*P, "timeline", conv_id, tenant=b.tenant)).out
    assert "Hanako (contact)  [sticker]" in out
    assert "Agent One (agent) [failed: auth_error]  sorry!" in out
    doc = ok(ctl(*P, "--json", "timeline", conv_id, tenant=b.tenant)).json()
    failed = doc["messages"][1]
    assert (failed["status"], failed["error_category"], failed["attempts"]) == \
        ("failed", "auth_error", 1)
    assert doc["messages"][0]["content_type"] == "sticker"


def test_timeline_text_cannot_drive_the_terminal(b, P):
    acct = b.account()
    conv = b.conversation(acct, "U-" + uuid.uuid4().hex)
    evil = "red\x1b[31mALERT\x1b]0;pwned\x07 \u202eevil\u202c line1\nline2\r\nline3\x7f"
    b.message(conv, now_ms() - 1000, text=evil, sender_display_name="Mallory\x1b[2J")
    out = ok(ctl(*P, "timeline", conv.conversation_id, tenant=b.tenant)).out
    for bad in (ESC, "\x07", "\u202e", "\u202c", "\x7f", "\r"):
        assert bad not in out, f"{bad!r} reached the terminal:\n{out!r}"
    assert "red\ufffd[31mALERT" in out and "Mallory\ufffd[2J (contact)" in out
    assert "line1\n      line2\n      line3" in out  # continuation lines are indented
    conv_out = ok(ctl(*P, "conversations", tenant=b.tenant)).out
    assert ESC not in conv_out and "\n      line2" not in conv_out
    # JSON keeps the text exactly (escaped by the encoder).
    doc = ok(ctl(*P, "--json", "timeline", conv.conversation_id, tenant=b.tenant)).json()
    assert doc["messages"][0]["content_text"] == evil


def test_timeline_of_another_tenant_is_not_found(b, b2, P):
    _, conv, _ = _timeline_conv(b, 2)
    r = fails(ctl(*P, "timeline", conv.conversation_id, tenant=b2.tenant), 1,
              "GetConversation failed: NOT_FOUND")
    assert r.out == "" and "msg 0" not in r.err
    fails(ctl(*P, "timeline", "not-a-uuid", tenant=b.tenant), 1, "INVALID_ARGUMENT",
          "conversation_id")


# ---------------------------------------------------------------------------------------------
# channels


def test_channels_never_print_credentials(b, P):
    acct = b.account(pb.CHANNEL_TYPE_LINE, display_name="My Shop OA")
    ct = b"\x00SEALED-" + os.urandom(24) + b"-ENDSEALED"
    b.api.UpdateChannelCredentials(
        tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
        credentials=[pb.SealedCredential(field="access_token", key_id="kek-7", ciphertext=ct),
                     pb.SealedCredential(field="channel_secret", key_id="kek-7",
                                         ciphertext=ct[::-1])])
    text = ok(ctl(*P, "channels", tenant=b.tenant))
    js = ok(ctl(*P, "--json", "channels", tenant=b.tenant))
    for r in (text, js):
        blob = r.out + r.err
        for enc in (ct, ct[::-1]):
            assert base64.b64encode(enc).decode() not in blob
            assert enc.hex() not in blob
            assert "SEALED" not in blob
    assert acct.channel_account_id in text.out and "My Shop OA" in text.out
    assert " active " in text.out
    a = js.json()["channel_accounts"][0]
    assert a["channel_account_id"] == acct.channel_account_id and a["status"] == "active"
    assert a["sealed_with"] == [{"field": "access_token", "key_id": "kek-7"},
                                {"field": "channel_secret", "key_id": "kek-7"}]
    assert "credentials" not in a


# ---------------------------------------------------------------------------------------------
# connect, simulate, send: through the LINE connector and the simulator


def _final_check(proc, label):
    rc = proc.stop() if hasattr(proc, "stop") else proc.terminate()
    text = proc.log_text()
    bad = sanitizer_lines(text)
    assert not bad, f"sanitizer report in the {label} log:\n" + "\n".join(bad[:20])
    assert rc in (0, -15), f"{label} exit code {rc}\n{log_tail(proc.log_path)}"


@pytest.fixture(scope="module")
def sim():
    assert lh.Sim.binary_present(), f"{lh.SIM_BIN} not built (set OMNICHAT_BIN_DIR)"
    s = lh.Sim().start()
    yield s
    _final_check(s, "line-sim")


@pytest.fixture(scope="module")
def connector(service, sim):
    assert lh.Connector.binary_present(), \
        f"{lh.CONNECTOR_BIN} not built: the send paths need it (set OMNICHAT_BIN_DIR)"
    c = lh.Connector(service.grpc_port, sim.port).start()
    yield c
    _final_check(c, "connector")


def _read(path):
    with open(path, "r", errors="replace") as f:
        return f.read()


class World:
    """A fresh tenant with a fresh bot at the simulator, connected with `omnichatctl connect`."""

    def __init__(self, tmp_path, service, sim, connector):
        self.tenant = new_id()
        self.sim, self.connector = sim, connector
        self.token = "tok-" + uuid.uuid4().hex + uuid.uuid4().hex
        self.secret = uuid.uuid4().hex
        self.bot = lh.new_user_id()
        self.token_file = secret_file(tmp_path, "token", self.token)
        self.secret_file = secret_file(tmp_path, "secret", self.secret)
        self.flags = ["--persistence", f"127.0.0.1:{service.grpc_port}",
                      "--connector", f"127.0.0.1:{connector.grpc_port}"]
        self.url = f"http://127.0.0.1:{connector.http_port}"
        sim.add_bot(self.token, self.bot, display_name="CLI Bot")

    def run(self, *args, **kw):
        r = ctl(*self.flags, *args, tenant=self.tenant, **kw)
        self.assert_no_secret(r.out + r.err)
        return r

    def assert_no_secret(self, text):
        assert self.token not in text and self.secret not in text, "a secret was printed"

    def connect(self, *extra):
        return self.run("--json", "connect", "line", "--token-file", self.token_file,
                        "--secret-file", self.secret_file, *extra).json()

    def simulate(self, user, text, *extra):
        return self.run("simulate", "line-webhook", "--account", self.account_id,
                        "--secret-file", self.secret_file, "--user", user, "--text", text,
                        "--url", self.url, *extra)

    def conversation_for(self, user):
        doc = self.run("--json", "conversations", "--thread", user).json()
        assert len(doc["conversations"]) == 1, doc
        return doc["conversations"][0]


@pytest.fixture
def world(tmp_path, service, sim, connector):
    w = World(tmp_path, service, sim, connector)
    yield w
    # Neither secret may reach the connector's log either. The log scanned holds this test's
    # calls (its tenant), so a log written elsewhere could not pass the scan vacuously; a call
    # writes its line after its reply, hence the wait.
    log = lh.wait_for(lambda: (lambda t: t if w.tenant in t else None)(_read(connector.log_path)),
                      10, what="this tenant's calls in the connector log")
    w.assert_no_secret(connector.new_log_since_last_check())
    w.assert_no_secret(log)
    assert connector.alive(), log_tail(connector.log_path)


def test_connect_prints_ids_and_never_the_credentials(world):
    doc = world.connect("--name", "CLI Shop")
    acc = doc["channel_account"]
    assert acc["external_account_id"] == world.bot and acc["status"] == "active"
    assert acc["display_name"] == "CLI Shop" and acc["channel_type"] == "line"
    assert doc["webhook_path"] == f"/webhooks/line/{acc['channel_account_id']}"
    # Text output names the same things; connecting again is idempotent (same account).
    out = world.run("connect", "line", "--token-file", world.token_file, "--secret-file",
                    world.secret_file).out
    assert f"account id:    {acc['channel_account_id']}" in out
    assert f"external id:   {world.bot}" in out and "status:        active" in out
    assert f"webhook path:  {doc['webhook_path']}" in out
    listed = world.run("--json", "channels").json()["channel_accounts"]
    assert [a["channel_account_id"] for a in listed] == [acc["channel_account_id"]]


def test_connect_failures(world, tmp_path):
    bad = secret_file(tmp_path, "bad-token", "tok-unknown-" + uuid.uuid4().hex)
    r = fails(world.run("connect", "line", "--token-file", bad, "--secret-file",
                        world.secret_file), 1, "ConnectChannel failed: UNAUTHENTICATED")
    assert "tok-unknown" not in r.out + r.err
    fails(world.run("connect", "line", "--token-file", str(tmp_path / "missing"),
                    "--secret-file", world.secret_file), 1, "could not read the channel access "
                                                            "token")
    empty = secret_file(tmp_path, "empty", "")
    fails(world.run("connect", "line", "--token-file", empty, "--secret-file",
                    world.secret_file), 1, "is empty")
    fails(world.run("connect", "facebook", "--token-file", world.token_file, "--secret-file",
                    world.secret_file), 2, "--account-id")
    fails(world.run("connect", "whatsapp", "--token-file", world.token_file), 2,
          "line, facebook, instagram")
    # The connector is unreachable: the gRPC status is named.
    r = fails(ctl("--connector", f"127.0.0.1:{harness.free_port()}", "connect", "line",
                  "--token-file", world.token_file, "--secret-file", world.secret_file,
                  tenant=world.tenant), 1, "UNAVAILABLE")
    world.assert_no_secret(r.out + r.err)


def test_webhook_send_and_timeline_end_to_end(world, sim, db):
    world.account_id = world.connect()["channel_account"]["channel_account_id"]
    user = lh.new_user_id()
    r = ok(world.simulate(user, "Hi, is my order shipped?"))
    assert f"/webhooks/line/{world.account_id} -> HTTP 200" in r.out
    line_msg_id = re.search(r"LINE message id (\d{18})", r.out).group(1)
    conv = world.conversation_for(user)
    assert conv["message_count"] == 1 and conv["last_message_preview"] == \
        "Hi, is my order shipped?"
    cid = conv["conversation_id"]

    sent = world.run("--json", "send", cid, "--text", "Yes, it left today.", "--key",
                     "order-42", "--agent", "agent-7", "--agent-name", "Agent Seven").json()
    m = sent["message"]
    assert (m["status"], m["error_category"], m["attempts"], m["direction"]) == \
        ("sent", "", 1, "outbound")
    assert sent["idempotency_key"] == "order-42" and m["external_message_id"]
    deliveries = sim.deliveries(to=user)
    assert [d["texts"] for d in deliveries] == [["Yes, it left today."]]

    # The same key again: the same message, not a second delivery.
    again = world.run("send", cid, "--text", "Yes, it left today.", "--key", "order-42",
                      "--agent", "agent-7", "--agent-name", "Agent Seven")
    assert f"message id:   {m['message_id']}" in ok(again).out and "status:       sent" in again.out
    assert len(sim.deliveries(to=user)) == 1
    # The same key with another text: ALREADY_EXISTS, nothing sent.
    fails(world.run("send", cid, "--text", "Something else", "--key", "order-42", "--agent",
                    "agent-7", "--agent-name", "Agent Seven"), 1, "ALREADY_EXISTS")
    assert len(sim.deliveries(to=user)) == 1

    # Persistence has both, and the timeline shows them in order, both directions.
    rows = db.rows("SELECT direction, idempotency_key, status FROM omnichat.messages WHERE "
                   f"conversation_id = {harness.sql_lit(cid)} ORDER BY channel_timestamp, id")
    assert rows == [["inbound", line_msg_id, "received"], ["outbound", "order-42", "sent"]]
    out = world.run("timeline", cid).out
    log = [ln for ln in out.splitlines() if re.match(r"^\d{4}-", ln)]
    assert len(log) == 2
    assert "\u2190  " in log[0] and "(contact)  Hi, is my order shipped?" in log[0]
    assert "\u2192  Agent Seven (agent) [sent]  Yes, it left today." in log[1]


def test_send_default_key_is_printed_and_reusable(world, sim):
    world.account_id = world.connect()["channel_account"]["channel_account_id"]
    user = lh.new_user_id()
    ok(world.simulate(user, "hello"))
    cid = world.conversation_for(user)["conversation_id"]
    r = ok(world.run("send", cid, "--text", "first reply"))
    key = re.search(r"^key:\s+(\S+)$", r.out, re.M).group(1)
    assert harness.UUID_RE.match(key)
    assert "status:       sent" in r.out and "category:     -" in r.out
    mid = re.search(r"^message id:\s+(\S+)$", r.out, re.M).group(1)
    r2 = ok(world.run("send", cid, "--text", "first reply", "--key", key))
    assert f"message id:   {mid}" in r2.out
    assert len(sim.deliveries(to=user)) == 1


def test_send_failures_name_the_status(world, sim):
    world.account_id = world.connect()["channel_account"]["channel_account_id"]
    fails(world.run("send", new_id(), "--text", "hi"), 1, "SendText failed: NOT_FOUND")
    user = lh.new_user_id()
    ok(world.simulate(user, "hello"))
    cid = world.conversation_for(user)["conversation_id"]
    # Connector down: UNAVAILABLE, and the key to retry with is printed.
    r = fails(ctl("--connector", f"127.0.0.1:{harness.free_port()}", "send", cid, "--text",
                  "hi", "--key", "k-down", tenant=world.tenant), 1, "SendText failed: UNAVAILABLE",
              "--key k-down")
    # A provider refusal is a recorded outcome, not an RPC error: exit 0, status failed.
    sim.fault({"status": 400}, path=lh.PUSH_PATH)
    r = ok(world.run("--json", "send", cid, "--text", "hi", "--key", "k-400"))
    m = r.json()["message"]
    assert m["status"] == "failed" and m["error_category"].endswith("_error")
    r = ok(world.run("send", cid, "--text", "hi", "--key", "k-400"))
    assert "status:       failed" in r.out
    assert f"category:     {m['error_category']}" in r.out


def test_simulate_signature_and_errors(world, tmp_path):
    world.account_id = world.connect()["channel_account"]["channel_account_id"]
    wrong = secret_file(tmp_path, "wrong", uuid.uuid4().hex)
    r = fails(world.run("simulate", "line-webhook", "--account", world.account_id,
                        "--secret-file", wrong, "--user", lh.new_user_id(), "--text", "x",
                        "--url", world.url), 1, "HTTP 401")
    assert "-> HTTP 401" in r.out
    doc = world.run("--json", "simulate", "line-webhook", "--account", world.account_id,
                    "--secret-file", world.secret_file, "--user", lh.new_user_id(), "--text",
                    "json please", "--url", world.url + "/").json()
    assert doc["status"] == 200 and re.match(r"^\d{18}$", doc["message_id"])
    fails(world.run("simulate", "line-webhook", "--account", world.account_id, "--secret-file",
                    world.secret_file, "--user", lh.new_user_id(), "--text", "x", "--url",
                    f"http://127.0.0.1:{harness.free_port()}"), 1, "POST", "failed")
