#!/usr/bin/python3
"""chaos.py: hostile scenarios against a fresh system, with a table of what they cost.

Never part of CI: run through scripts/chaos.sh. Each scenario starts its own PostgreSQL cluster,
services and (for the connector) LINE simulator from tests/integration's harness, drives load
with unique idempotency keys, breaks something under that load, then checks the database:

- lost:       calls that were acknowledged (OK) whose row is not there afterwards. Must be 0.
- duplicated: keys stored more than once, or messages the provider delivered more than once,
              after every unacknowledged call was retried with the same key. Must be 0.
- recovery:   seconds from "the broken part is back" (PostgreSQL accepts connections again, or
              the killed process listens again) to the first call that succeeded after it.
- failed after back: calls that started after that moment and still failed.

Figures are results, not assertions: the exit status is 1 only when something was lost or
duplicated (or a scenario could not run at all).
"""
import argparse
import json
import os
import random
import signal
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "integration", "line"))

import grpc  # noqa: E402

import harness  # noqa: E402
from harness import Api, Builder, Db, PgCluster, Service, free_port, sql_lit  # noqa: E402
import line_harness  # noqa: E402
from line_harness import Connector, LineChannel, Sim, text_event  # noqa: E402

CALL_TIMEOUT = 5.0


class Load:
    """Callers that each loop: make a unique key, call fn(key), record the outcome.

    fn raises on failure. A key whose call failed is kept with the time it started, so that
    failures after "back" can be counted and every unacknowledged key retried later."""

    def __init__(self, name, fn, callers):
        self.name, self.fn, self.callers = name, fn, callers
        self.acked = set()
        self.unacked = {}  # key -> start time of its last failed call
        self.ok_times = []  # start times of successful calls
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.running = threading.Event()  # cleared: callers hold (an idle pool, warm before)
        self.running.set()
        self.threads = []
        self.errors = {}

    def _run(self, idx):
        n = 0
        while not self.stop_flag.is_set():
            if not self.running.wait(timeout=0.1):
                continue
            n += 1
            key = f"{self.name}-{idx}-{n}-{uuid.uuid4().hex[:8]}"
            t = time.time()
            try:
                self.fn(key)
            except Exception as e:  # noqa: BLE001 - every failure is an unacknowledged call
                with self.lock:
                    self.unacked[key] = t
                    label = e.code().name if isinstance(e, grpc.RpcError) else type(e).__name__
                    self.errors[label] = self.errors.get(label, 0) + 1
                time.sleep(0.02)  # a failing dependency must not turn callers into a busy loop
                continue
            with self.lock:
                self.acked.add(key)
                self.ok_times.append(t)

    def start(self):
        for i in range(self.callers):
            th = threading.Thread(target=self._run, args=(i,), daemon=True)
            th.start()
            self.threads.append(th)
        return self

    def pause(self):
        self.running.clear()
        time.sleep(CALL_TIMEOUT)  # calls in flight end (or time out) before the break

    def resume(self):
        self.running.set()

    def stop(self):
        self.stop_flag.set()
        for th in self.threads:
            th.join(timeout=CALL_TIMEOUT * 3)

    def after(self, t_back):
        """(seconds to the first success that started after t_back, failures after t_back)."""
        with self.lock:
            firsts = [t for t in self.ok_times if t >= t_back]
            failed = sum(1 for t in self.unacked.values() if t >= t_back)
        return (min(firsts) - t_back if firsts else None), failed

    def retry_unacked(self, deadline_s=60):
        """Retries every unacknowledged key with the same key until it succeeds."""
        pending = list(self.unacked)
        end = time.time() + deadline_s
        while pending and time.time() < end:
            left = []
            for key in pending:
                try:
                    self.fn(key)
                    self.acked.add(key)
                except Exception:  # noqa: BLE001
                    left.append(key)
            pending = left
            if pending:
                time.sleep(0.2)
        return pending


def postmaster_pid(cluster):
    with open(os.path.join(cluster.dir, "data", "postmaster.pid")) as f:
        return int(f.readline())


def restart_postgres(cluster, mode):
    """Fast (SIGINT) or immediate (SIGQUIT) shutdown of the postmaster, then start. Returns the
    time the cluster accepts connections again."""
    pid = postmaster_pid(cluster)
    os.kill(pid, signal.SIGINT if mode == "fast" else signal.SIGQUIT)
    end = time.time() + 60
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    time.sleep(0.5)  # an outage callers can see, whatever the shutdown speed
    cluster.start()  # pg_ctl -w: returns once the server accepts connections
    return time.time()


def measure(row, load, t_back):
    rec, failed = load.after(t_back)
    row["recovery_s"] = None if rec is None else round(rec, 3)
    row["failed_after_back"] = failed
    row["calls_ok"] = len(load.acked)
    row["calls_failed"] = len(load.unacked)
    row["errors"] = dict(load.errors)


# ---------------------------------------------------------------------------------------------
# Persistence scenarios: PersistInbound under load, something breaks, every key checked


def persistence_stack(fixed_port):
    cluster = PgCluster().init()
    svc = Service(cluster, name="chaos-persistence", grpc_port=fixed_port)
    svc.migrate()
    cluster.grant()
    svc.start()
    return cluster, svc


def persistence_scenario(name, breaker, args, idle=False):
    port = free_port()
    cluster, svc = persistence_stack(port)
    row = {"scenario": name}
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        api = Api(channel, timeout=CALL_TIMEOUT)
        b = Builder(api)
        acct = b.account()
        users = [f"U{i:03d}" for i in range(50)]

        def call(key):
            user = random.choice(users)
            item = b.inbound(acct, harness.now_ms(), user=user, thread_key=user, ext_id=key,
                             text="chaos " + key)
            api.PersistInbound(tenant_id=b.tenant, messages=[item], timeout=CALL_TIMEOUT)

        load = Load("pi", call, args.callers).start()
        time.sleep(args.warm)
        if idle:
            load.pause()
        t_back = breaker(cluster, svc)
        load.resume()
        time.sleep(args.after)
        load.stop()
        measure(row, load, t_back)
        left = load.retry_unacked()
        db = Db(cluster.dsn("super"))
        counts = dict((k, int(c)) for k, c in db.rows(
            "SELECT external_message_id, count(*) FROM omnichat.messages "
            f"WHERE tenant_id = {sql_lit(b.tenant)} GROUP BY 1"))
        row["lost"] = sum(1 for k in load.acked if k not in counts)
        row["duplicated"] = sum(1 for c in counts.values() if c > 1)
        row["unretriable"] = len(left)
        channel.close()
    finally:
        svc.stop()
        cluster.destroy()
    return row


def pg_breaker(mode):
    def brk(cluster, svc):
        return restart_postgres(cluster, mode)
    return brk


def persistence_idle_scenario(name, breaker, args):
    """The pool is warm, then idle while the database restarts: the first calls after it is
    back meet connections that died in the meantime."""
    return persistence_scenario(name, breaker, args, idle=True)


def kill_persistence(cluster, svc):
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait()
    svc.stop()  # closes its log files and channel
    svc.start()
    return time.time()


# ---------------------------------------------------------------------------------------------
# Connector scenarios: signed webhooks and SendText under load, something breaks


def connector_scenario(name, breaker, args):
    port = free_port()
    cluster, svc = persistence_stack(port)
    sim = Sim().start()
    conn = Connector(port, sim.port, log_level="info").start()
    row = {"scenario": name}
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        api = Api(channel, timeout=CALL_TIMEOUT)
        db = Db(cluster.dsn("super"))
        line = LineChannel(conn, sim, api, db)
        convs = [line.conversation()[0] for _ in range(20)]
        users = [line_harness.new_user_id() for _ in range(20)]

        def hook(key):
            ev = text_event(random.choice(users), "chaos " + key, msg_id=key)
            status, body = line.deliver(ev, timeout=CALL_TIMEOUT)
            if status != 200:
                raise RuntimeError(f"webhook {status}")

        def send(key):
            if conn.api is None:
                raise RuntimeError("connector down")
            line.send(random.choice(convs), "reply " + key, key=key, timeout=CALL_TIMEOUT)

        loads = [Load("wh", hook, args.callers // 2).start(),
                 Load("st", send, args.callers // 2).start()]
        time.sleep(args.warm)
        t_back = breaker(cluster, svc, conn)
        time.sleep(args.after)
        for ld in loads:
            ld.stop()
        wh, st = loads
        measure(row, wh, t_back)
        rec_s, failed_s = st.after(t_back)
        row["send_recovery_s"] = None if rec_s is None else round(rec_s, 3)
        row["failed_after_back"] += failed_s
        row["calls_ok"] += len(st.acked)
        row["calls_failed"] += len(st.unacked)
        for k, v in st.errors.items():
            row["errors"][k] = row["errors"].get(k, 0) + v
        left = wh.retry_unacked() + st.retry_unacked()
        row["unretriable"] = len(left)
        line.drain(timeout=60)
        rows = line.db_messages()
        inbound = {}
        outbound = {}
        for r in rows:
            if r["direction"] == "inbound":
                inbound[r["external_message_id"]] = inbound.get(r["external_message_id"], 0) + 1
            else:
                outbound[r["idempotency_key"]] = outbound.get(r["idempotency_key"], 0) + 1
        # What the customer saw: deliveries by the simulator, per message text (the key).
        delivered = {}
        for d in line.deliveries():
            for t in d.get("texts", []) if d.get("delivered") else []:
                if isinstance(t, str) and t.startswith("reply "):
                    delivered[t[6:]] = delivered.get(t[6:], 0) + 1
        sent_status = dict((r["idempotency_key"], r["status"]) for r in rows
                           if r["direction"] == "outbound")
        lost_in = sum(1 for k in wh.acked if k not in inbound)
        lost_out = sum(1 for k in st.acked if k not in outbound)
        undelivered = sum(1 for k in st.acked if sent_status.get(k) == "sent" and k not in delivered)
        row["lost"] = lost_in + lost_out + undelivered
        row["duplicated"] = (sum(1 for c in inbound.values() if c > 1)
                             + sum(1 for c in outbound.values() if c > 1)
                             + sum(1 for c in delivered.values() if c > 1))
        row["not_sent"] = sum(1 for k in st.acked if sent_status.get(k) != "sent")
        channel.close()
    finally:
        conn.stop()
        sim.stop()
        svc.stop()
        cluster.destroy()
    return row


def kill_connector(cluster, svc, conn):
    conn.kill9()
    conn.start()
    return time.time()


def pg_breaker_conn(mode):
    def brk(cluster, svc, conn):
        return restart_postgres(cluster, mode)
    return brk


def kill_persistence_conn(cluster, svc, conn):
    return kill_persistence(cluster, svc)


SCENARIOS = [
    ("persistence: PostgreSQL fast restart", persistence_scenario, pg_breaker("fast")),
    ("persistence: PostgreSQL immediate restart", persistence_scenario, pg_breaker("immediate")),
    ("persistence: SIGKILL persistence", persistence_scenario, kill_persistence),
    ("persistence, idle pool: PostgreSQL fast restart", persistence_idle_scenario,
     pg_breaker("fast")),
    ("persistence, idle pool: PostgreSQL immediate restart", persistence_idle_scenario,
     pg_breaker("immediate")),
    ("connector-line: PostgreSQL immediate restart", connector_scenario,
     pg_breaker_conn("immediate")),
    ("connector-line: SIGKILL persistence", connector_scenario, kill_persistence_conn),
    ("connector-line: SIGKILL connector", connector_scenario, kill_connector),
]


def fmt(v):
    return "—" if v is None else str(v)


def print_table(rows):
    cols = [("scenario", "scenario"), ("calls ok", "calls_ok"), ("calls failed", "calls_failed"),
            ("lost", "lost"), ("duplicated", "duplicated"), ("recovery s", "recovery_s"),
            ("failed after back", "failed_after_back")]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(fmt(r.get(k)) for _, k in cols) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--warm", type=float, default=3.0, help="seconds of load before the break")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of load after it")
    ap.add_argument("--only", default="", help="run scenarios whose name contains this")
    ap.add_argument("--json", default="", help="also write the rows to this file")
    args = ap.parse_args()
    rows = []
    for name, fn, brk in SCENARIOS:
        if args.only and args.only not in name:
            continue
        print(f"chaos: {name} ...", file=sys.stderr, flush=True)
        try:
            rows.append(fn(name, brk, args))
        except Exception as e:  # noqa: BLE001 - a scenario that cannot run is a failed run
            rows.append({"scenario": name, "error": repr(e)})
            print(f"chaos: {name}: could not run: {e!r}", file=sys.stderr)
        print(f"chaos: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if r.get("error") or r.get("lost") or r.get("duplicated")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
