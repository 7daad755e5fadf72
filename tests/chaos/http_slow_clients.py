#!/usr/bin/python3
"""Measurement, not a test (never run by CI): signed LINE webhooks while slowloris clients hold
the webhook's HTTP server (issue 6, item 5; target: p99 <= 1 s with 2,000 slow connections).

It starts a fresh stack from the integration harness (PostgreSQL cluster, omnichat-persistence,
omnichat-line-sim, omnichat-connector-line with its default HTTP limits), connects one LINE
channel, then opens --slow connections that each send one header byte a second, spread over
loopback addresses 127.0.0.2.. (--per-address each, under the default per-address cap), and
reopens any the server closes, as a real attacker would. Meanwhile, for --duration seconds (long
enough for several whole-head deadlines to cut the slow clients off and for them to come back),
it posts signed webhooks from 127.0.0.1 (--concurrency clients, each pausing 0.1 s between
posts) and prints their p50/p99/max latency, the statuses, and how many slow connections were
open while they ran.

Run:  OMNICHAT_BIN_DIR=$PWD/build/bin /usr/bin/python3 tests/chaos/http_slow_clients.py
"""
import argparse
import http.client
import json
import os
import selectors
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "line"))

from harness import Api, Db, PgCluster, Service  # noqa: E402
from line_harness import (Connector, LineChannel, Sim, new_user_id, payload, sign,  # noqa: E402
                          text_event)


class Slowloris:
    """Keeps `count` connections open, each trickling one header byte a second."""

    HEAD = b"POST /webhooks/line/x HTTP/1.1\r\nHost: x\r\nX-Slow: "

    def __init__(self, port, count, per_address):
        self.port, self.count, self.per_address = port, count, per_address
        self.sel = selectors.DefaultSelector()  # epoll: select() stops at 1,024 descriptors
        self.by_addr = {}
        self.open = 0
        self.closed_by_server = 0
        self.answers_408 = 0
        self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open_one(self, addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((addr, 0))
            s.connect(("127.0.0.1", self.port))
            s.setblocking(False)
            s.send(self.HEAD)
        except OSError:
            s.close()
            self.refused += 1
            return
        self.sel.register(s, selectors.EVENT_READ, addr)
        self.by_addr[addr] = self.by_addr.get(addr, 0) + 1
        self.open += 1

    def _fill(self):
        naddr = (self.count + self.per_address - 1) // self.per_address
        for i in range(naddr):
            addr = f"127.0.0.{2 + i}"
            want = min(self.per_address, self.count - i * self.per_address)
            while self.by_addr.get(addr, 0) < want and not self.stop.is_set():
                self._open_one(addr)

    def _run(self):
        self._fill()
        next_byte = time.monotonic() + 1
        while not self.stop.is_set():
            for key, _ in self.sel.select(timeout=max(0.0, next_byte - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except ConnectionError:
                    data = b""
                if data.startswith(b"HTTP/1.1 408"):
                    self.answers_408 += 1
                if not data:
                    self.sel.unregister(s)
                    s.close()
                    self.by_addr[key.data] -= 1
                    self.open -= 1
                    self.closed_by_server += 1
            if time.monotonic() >= next_byte:
                for key in list(self.sel.get_map().values()):
                    try:
                        key.fileobj.send(b"a")
                    except OSError:
                        pass
                next_byte = time.monotonic() + 1
                self._fill()  # an attacker reconnects what the server cut off

    def start(self):
        self.thread.start()
        end = time.monotonic() + 15  # past a cap they never all open: measure anyway
        while self.open < self.count and time.monotonic() < end:
            time.sleep(0.05)
        return self

    def close(self):
        self.stop.set()
        self.thread.join()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()


def webhook(port, line):
    body = json.dumps(payload(line.bot_user_id, text_event(new_user_id(), "under slowloris")),
                      separators=(",", ":")).encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.monotonic()
    try:
        c.request("POST", f"/webhooks/line/{line.account_id}", body,
                  {"Content-Type": "application/json", "x-line-signature": sign(line.secret, body)})
        status = c.getresponse().status
    except OSError as e:
        status = type(e).__name__
    finally:
        c.close()
    return status, time.monotonic() - t0


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slow", type=int, default=2000)
    ap.add_argument("--per-address", type=int, default=200)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--nofile", type=int, default=0,
                    help="run the connector under this descriptor limit (e.g. 1024, fewer than "
                         "--slow: the overall cap then decides)")
    args = ap.parse_args()

    cluster = PgCluster().init()
    svc = sim = conn = None
    try:
        svc = Service(cluster, name="chaos-persistence")
        svc.migrate()
        cluster.grant()
        svc.start()
        sim = Sim().start()
        conn = Connector(svc.grpc_port, sim.port, log_level="info")
        if args.nofile:
            base = conn.command
            conn.command = lambda: ["prlimit", f"--nofile={args.nofile}:{args.nofile}"] + base()
        conn.start()
        line = LineChannel(conn, sim, Api(svc.channel), Db(cluster.dsn("super")))
        assert webhook(conn.http_port, line)[0] == 200, "a webhook fails before any attack"

        lor = Slowloris(conn.http_port, args.slow, args.per_address).start()
        results, open_seen = [], []
        lock = threading.Lock()
        t0 = time.monotonic()

        def client():
            while time.monotonic() - t0 < args.duration:
                r = webhook(conn.http_port, line)
                with lock:
                    results.append(r)
                    open_seen.append(lor.open)
                time.sleep(0.1)

        threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        lor.close()

        lat = [r[1] for r in results]
        statuses = {}
        for s, _ in results:
            statuses[s] = statuses.get(s, 0) + 1
        print(f"slow connections open while measuring: median {statistics.median(open_seen):.0f}, "
              f"min {min(open_seen)}, max {max(open_seen)} (target {args.slow}; the minimum is "
              f"the moment a deadline cut them off, before they reconnect); refused at connect "
              f"{lor.refused}; closed by the server {lor.closed_by_server} "
              f"({lor.answers_408} with a 408)")
        print(f"signed webhooks: {len(results)} in {wall:.1f} s, {args.concurrency} at a time; "
              f"statuses {statuses}")
        print(f"latency: p50 {statistics.median(lat) * 1000:.1f} ms, p99 "
              f"{pct(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")
        ok = statuses.get(200, 0) == len(results) and pct(lat, 99) <= 1.0
        print("target (all 200, p99 <= 1 s):", "met" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        for p in (conn, sim, svc):
            if p is not None:
                p.stop()
        cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
