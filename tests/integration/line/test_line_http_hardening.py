"""The webhook's HTTP server under hostile clients (issue 6, items 5 and 8): slow connections
are cut off by whole-head deadlines and connection caps while signed webhooks keep answering,
and ambiguous requests never reach an account.

Sized for CI (a few hundred connections, a low cap through the config table); the 2,000-
connection measurement is tests/chaos/http_slow_clients.py."""
import json
import select
import socket
import threading
import time

from line_harness import new_user_id, payload, sign, text_event

HEAD_TIMEOUT_MS = 2000
PER_IP = 100
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def _connect(port, source):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _closed_now(s, timeout):
    """True when the server closes s within timeout (EOF or reset), reading what it sent."""
    s.setblocking(False)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        try:
            if not s.recv(4096):
                return True
        except ConnectionError:
            return True
    return False


class _Trickler:
    """Holds connections that send one header byte every 0.2 s, as a slowloris client does,
    and records when the server closed each of them and what it answered."""

    def __init__(self, socks):
        self.socks = list(socks)
        self.closed_at = {}
        self.answers = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for s in self.socks:
            s.setblocking(False)
            s.send(b"POST /webhooks/line/x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while not self.stop.is_set() and len(self.closed_at) < len(self.socks):
            for s in self.socks:
                if s in self.closed_at:
                    continue
                try:
                    s.send(b"a")
                except OSError:
                    pass
            # Notice closes as they come, so their times are measured, not guessed.
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                open_ = [s for s in self.socks if s not in self.closed_at]
                if not open_:
                    break
                r, _, _ = select.select(open_, [], [], max(0.0, end - time.monotonic()))
                for s in r:
                    try:
                        data = s.recv(4096)
                    except ConnectionError:
                        data = b""
                    if data:
                        self.answers[s] = self.answers.get(s, b"") + data
                    else:
                        self.closed_at[s] = time.monotonic()

    def __enter__(self):
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


def test_slow_clients_are_cut_off_and_webhooks_still_answer(conn, line):
    with conn.reconfigured(http_head_timeout_ms=HEAD_TIMEOUT_MS, http_max_connections=1000,
                           http_max_connections_per_ip=PER_IP):
        port = conn.http_port
        slow = [_connect(port, a) for a in ADDRESSES for _ in range(PER_IP)]
        # Past its per-address cap, a client is closed at accept, before it sends a byte.
        extra = [_connect(port, ADDRESSES[0]) for _ in range(5)]
        assert all(_closed_now(s, 2.0) for s in extra), "per-address cap not enforced"
        for s in extra:
            s.close()

        with _Trickler(slow) as t:
            # Signed webhooks from another address, while all slow connections are open.
            latencies = []
            for i in range(10):
                ev = text_event(new_user_id(), f"under slowloris {i}")
                t0 = time.monotonic()
                status, body = line.deliver(ev)
                latencies.append(time.monotonic() - t0)
                assert status == 200, body
            assert len(t.closed_at) == 0, "slow connections closed before their deadline"
            assert max(latencies) < 1.0, latencies

            # Every trickling connection is cut off by the whole-head deadline, although it
            # never stops sending (an idle timeout would never fire).
            deadline = time.monotonic() + HEAD_TIMEOUT_MS / 1000 + 5
            while len(t.closed_at) < len(slow) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(t.closed_at) == len(slow), f"{len(slow) - len(t.closed_at)} still open"
            took = [at - t.started for at in t.closed_at.values()]
            assert min(took) >= HEAD_TIMEOUT_MS / 1000 - 0.5, min(took)
            assert max(took) <= HEAD_TIMEOUT_MS / 1000 + 3, max(took)
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in t.answers.values())

        # Room comes back: a webhook from a slow client's own address is served.
        body = json.dumps(payload(line.bot_user_id, text_event(new_user_id(), "after")),
                          separators=(",", ":")).encode()
        s = _connect(port, ADDRESSES[0])
        s.sendall(f"POST /webhooks/line/{line.account_id} HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Type: application/json\r\nx-line-signature: {sign(line.secret, body)}"
                  f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        s.settimeout(10)
        answer = s.recv(4096)
        s.close()
        assert answer.startswith(b"HTTP/1.1 200 "), answer


def _raw(port, data):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(5)
    s.sendall(data)
    out = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            out += d
    finally:
        s.close()
    return out


def test_ambiguous_requests_never_reach_the_account(line):
    ev = text_event(new_user_id(), "smuggled")
    body = json.dumps(payload(line.bot_user_id, ev), separators=(",", ":")).encode()
    sig = sign(line.secret, body)
    acc = line.account_id
    port = line.conn.http_port

    def post(path, extra=b"", length=None):
        cl = b"" if length == "none" else (
            f"Content-Length: {len(body) if length is None else length}\r\n".encode())
        return _raw(port, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"x-line-signature: {sig}\r\n".encode() + cl + extra + b"\r\n" + body)

    # Encoded separators and NUL in the path: routed on the raw path, refused.
    assert post(f"/webhooks/line%2F{acc}").startswith(b"HTTP/1.1 400 ")
    assert post(f"/webhooks/line/{acc}%00").startswith(b"HTTP/1.1 400 ")
    # Two different lengths: 400 and close, whichever one a proxy would have believed.
    out = post(f"/webhooks/line/{acc}", extra=f"Content-Length: {len(body) + 5}\r\n".encode())
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1") == 1, out
    # An unknown transfer coding is 501, not a connection held open.
    out = post(f"/webhooks/line/{acc}", extra=b"Transfer-Encoding: gzip, chunked\r\n",
               length="none")
    assert out.startswith(b"HTTP/1.1 501 "), out
    # A negative length: one 400, written once.
    out = post(f"/webhooks/line/{acc}", length=-5)
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1") == 1, out
    assert line.db_messages("direction = 'inbound'") == []
    # The same request, well-formed, is stored: the refusals above were about framing.
    assert post(f"/webhooks/line/{acc}", extra=b"Connection: close\r\n").startswith(
        b"HTTP/1.1 200 ")
    assert len(line.db_messages("direction = 'inbound'")) == 1
