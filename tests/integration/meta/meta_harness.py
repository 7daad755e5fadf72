"""Integration-test harness for omnichat-connector-meta.

Builds on ../line/line_harness.py (processes, HTTP, connector stubs and process control, polling)
and ../harness.py: only what is Meta's lives here — the Graph API simulator
(`omnichat-graph-sim`) and its control API, X-Hub-Signature-256 signing, Messenger and Instagram
payloads, and one test's Page or Instagram account.
"""
import hashlib
import hmac
import json
import os
import random
import time
import urllib.parse
import uuid

import harness
import line_harness as lh
from line_harness import cpb, wait_for  # noqa: F401  (re-exported for the tests)

BIN_DIR = harness.BIN_DIR
pb = harness.pb
FACEBOOK = pb.CHANNEL_TYPE_FACEBOOK
INSTAGRAM = pb.CHANNEL_TYPE_INSTAGRAM
GRAPH_VERSION = "v21.0"
ECHO_GRACE_MS = int(1500 * lh.SLOW)  # the connector's echo-grace-ms, stretched like every wait


def sign(secret, body):
    """X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>."""
    if isinstance(body, str):
        body = body.encode()
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def new_page_id():
    return str(random.randint(10 ** 14, 10 ** 15 - 1))


def new_ig_id():
    return "1784" + str(random.randint(10 ** 12, 10 ** 13 - 1))


def new_psid():
    return str(random.randint(10 ** 15, 10 ** 16 - 1))


def new_mid():
    return "m_" + uuid.uuid4().hex


def text_event(sender, recipient, text="hello", mid=None, ts=None):
    return {"sender": {"id": sender}, "recipient": {"id": recipient},
            "timestamp": ts or harness.now_ms(),
            "message": {"mid": mid or new_mid(), "text": text}}


def echo_event(page, psid, text="typed in the inbox", mid=None, metadata=None, ts=None):
    msg = {"mid": mid or new_mid(), "is_echo": True, "app_id": 1517000000000001, "text": text}
    if metadata is not None:
        msg["metadata"] = metadata
    return {"sender": {"id": page}, "recipient": {"id": psid},
            "timestamp": ts or harness.now_ms(), "message": msg}


def entry(account_id, *events):
    return {"id": account_id, "time": harness.now_ms(), "messaging": list(events)}


def payload(obj, *entries):
    return {"object": obj, "entry": list(entries)}


def body_bytes(body):
    """Compact JSON with non-ASCII escaped as \\uXXXX: the bytes Meta signs."""
    if isinstance(body, (dict, list)):
        return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
    return body.encode() if isinstance(body, str) else body


class GraphSim(lh.Sim):
    BIN = os.environ.get("OMNICHAT_GRAPH_SIM_BIN", os.path.join(BIN_DIR, "omnichat-graph-sim"))
    NAME = "graph-sim"

    def add_page(self, token, page_id, name=None, ig_id=None):
        body = {"token": token, "page_id": page_id}
        if name:
            body["name"] = name
        if ig_id:
            body["ig_id"] = ig_id
        return self.ctl("POST", "/__sim/pages", body)

    def config(self, **kw):
        return self.ctl("POST", "/__sim/config", kw)

    def fault(self, *faults, path="/*"):
        return self.ctl("POST", "/__sim/faults", {"path": path, "faults": list(faults)})

    def events(self, obj, account_id, *events):
        return self.ctl("POST", "/__sim/events",
                        {"object": obj, "account_id": account_id, "events": list(events)})

    def requests(self, path=None):
        q = "?" + urllib.parse.urlencode({"path": path}) if path else ""
        reqs = self.ctl("GET", "/__sim/requests" + q)
        reqs.sort(key=lambda r: r.get("time_ms", 0))
        return reqs


class MetaConnector(lh.Connector):
    BIN = os.path.join(BIN_DIR, "omnichat-connector-meta")
    NAME = "connector-meta"
    API = "meta"

    def __init__(self, persistence_port, sim_port, app_secret, verify_token, **kw):
        super().__init__(persistence_port, sim_port, **kw)
        self.app_secret, self.verify_token = app_secret, verify_token
        self.secret_path = self._secret_file("app.secret", app_secret)
        self.verify_path = self._secret_file("verify.token", verify_token)
        self.settings.setdefault("echo-grace-ms", ECHO_GRACE_MS)

    def _secret_file(self, name, value):
        path = os.path.join(self.work, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return path

    def command(self):
        return super().command() + ["--app-secret-file", self.secret_path,
                                    "--verify-token-file", self.verify_path]

    @property
    def webhook_url(self):
        return f"http://127.0.0.1:{self.http_port}/webhooks/meta"

    def meta_webhook(self, body, signature=None, sign_with=None, headers=None):
        raw = body_bytes(body)
        h = {"Content-Type": "application/json"}
        if signature is not None:
            h["X-Hub-Signature-256"] = signature
        elif signature is None and sign_with is not False:
            h["X-Hub-Signature-256"] = sign(sign_with or self.app_secret, raw)
        h.update(headers or {})
        status, _, data = self.http("POST", "/webhooks/meta", raw, h)
        return status, data

    def challenge(self, **params):
        q = urllib.parse.urlencode(params)
        status, _, data = self.http("GET", "/webhooks/meta?" + q)
        return status, data.decode()


class MetaChannel(lh.LineChannel):
    """A fresh tenant with a fresh Page (and its Instagram account) at the simulator, connected
    as a facebook or an instagram channel. Reuses LineChannel's conversation, sending, message
    and drain helpers."""

    def __init__(self, conn, sim, api, db, channel_type=FACEBOOK, token=None, tenant=None,
                 page_id=None, ig_id=None, connect=True):
        self.conn, self.sim, self.api, self.db = conn, sim, api, db
        self.tenant = tenant or harness.new_id()
        self.token = token or f"EAAG{uuid.uuid4().hex}"
        self.page_id = page_id or new_page_id()
        self.ig_id = ig_id or new_ig_id()
        self.channel_type = channel_type
        self.account = None
        self._seq = 0
        sim.add_page(self.token, self.page_id, name="IT Page " + self.page_id[-6:],
                     ig_id=self.ig_id)
        if connect:
            self.connect()

    @property
    def external_id(self):
        return self.ig_id if self.channel_type == INSTAGRAM else self.page_id

    @property
    def object(self):
        return "instagram" if self.channel_type == INSTAGRAM else "page"

    def connect(self, token=None, **kw):
        kw.setdefault("external_account_id", self.external_id)
        r = self.conn.api.ConnectChannel(tenant_id=self.tenant, access_token=token or self.token,
                                         channel_type=self.channel_type, **kw)
        self.account = r.channel_account
        return r

    def conversation(self, user=None):
        user = user or new_psid()
        contact = self.api.UpsertContact(tenant_id=self.tenant,
                                         channel_account_id=self.account_id,
                                         external_user_id=user).contact
        conv = self.api.UpsertConversation(tenant_id=self.tenant,
                                           channel_account_id=self.account_id,
                                           thread_key=f"{self.external_id}:{user}",
                                           contact_id=contact.contact_id).conversation
        return conv, user

    @property
    def send_path(self):
        return f"/{GRAPH_VERSION}/{self.external_id}/messages"

    def fault(self, *faults):
        """Faults for this account's Send API path, consumed in order."""
        return self.sim.fault(*faults, path=self.send_path)

    def send_requests(self):
        return self.sim.requests(self.send_path)

    def deliveries(self):
        return [d for d in self.sim.deliveries() if d.get("page_id") == self.page_id]

    def deliver(self, *events, **kw):
        return self.conn.meta_webhook(payload(self.object, entry(self.external_id, *events)),
                                      **kw)

    def deliver_text(self, user=None, text="hi there", mid=None, ts=None, **kw):
        user = user or new_psid()
        ev = text_event(user, self.external_id, text, mid, ts)
        status, body = self.deliver(ev, **kw)
        return status, body, user, ev

    def wait_sent_requests(self, n, timeout=10):
        return wait_for(lambda: len(self.send_requests()) >= n and self.send_requests(), timeout,
                        0.05, f"{n} send request(s)")


def settle(seconds):
    time.sleep(seconds * lh.SLOW)
