#!/usr/bin/python3
"""Measures omnichat-persistence's memory under hostile gRPC input (issue 6, items 3 and 7).

    scripts/grpc-memory.py bodies [--concurrent 16] [--mib 8] [--rounds 1]
        N concurrent PersistInbound bodies of M MiB each, made of empty `messages` entries,
        unknown fields, empty attachments and one huge string in turn (--kinds); prints peak
        RSS (VmHWM) and the RSS a few seconds after.
    scripts/grpc-memory.py storms [--rounds 45] [--clients 1000] [--requests 20000]
        rounds of `h2load -c CLIENTS -n REQUESTS` against grpc.health.v1.Health/Check (Debian
        package nghttp2-client); prints RSS before, after each 5th round, and settled.

Starts a throw-away PostgreSQL cluster and the service from OMNICHAT_BIN_DIR (default build/bin),
like the integration tests. Takes minutes; never part of the test suite. Figures go to
docs/reliability.md / docs/operations.md.
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))

import grpc  # noqa: E402

from harness import PgCluster, Service  # noqa: E402

PERSIST_INBOUND = "/omnichat.persistence.v1.Persistence/PersistInbound"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def hostile_body(kind, size):
    """An encoded PersistInboundRequest of about `size` bytes that is cheap on the wire and
    expensive to unpack."""
    if kind == "empty-messages":  # field 2 (messages), length 0, repeated
        return b"\x12\x00" * (size // 2)
    if kind == "unknown-fields":  # field 15, varint 0: unknown to the service
        return b"\x78\x00" * (size // 2)
    if kind == "empty-attachments":  # one message with field 16 (attachments) repeated, empty
        inner = b"\x82\x01\x00" * ((size - 8) // 3)
        return b"\x12" + _varint(len(inner)) + inner
    if kind == "big-string":  # one message whose content_text (field 13) is the whole body
        text = b"a" * (size - 16)
        inner = b"\x6a" + _varint(len(text)) + text
        return b"\x12" + _varint(len(inner)) + inner
    raise ValueError(kind)


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def start(extra_args=()):
    cluster = PgCluster().init()
    svc = Service(cluster, name="measure", extra_args=extra_args)
    svc.migrate()
    cluster.grant()
    svc.start()
    return cluster, svc


def bodies(args):
    cluster, svc = start()
    try:
        pid = svc.proc.pid
        print(f"start: VmRSS {mib(status_kb(pid, 'VmRSS'))}")
        opts = [("grpc.max_send_message_length", 64 << 20)]
        channels = [grpc.insecure_channel(f"127.0.0.1:{svc.grpc_port}", options=opts)
                    for _ in range(args.concurrent)]
        codes = {}
        for rnd in range(args.rounds):
            for kind in args.kinds.split(","):
                body = hostile_body(kind, args.mib << 20)
                calls = [ch.unary_unary(PERSIST_INBOUND, request_serializer=lambda x: x,
                                        response_deserializer=lambda x: x).future(body, timeout=60)
                         for ch in channels]
                for c in calls:
                    try:
                        c.result()
                        code = "OK"
                    except grpc.RpcError as e:
                        code = e.code().name
                    codes[(kind, code)] = codes.get((kind, code), 0) + 1
                print(f"round {rnd + 1} {kind}: VmHWM {mib(status_kb(pid, 'VmHWM'))}, "
                      f"VmRSS {mib(status_kb(pid, 'VmRSS'))}")
        for ch in channels:
            ch.close()
        time.sleep(args.settle)
        print(f"answers: {sorted(codes.items())}")
        print(f"RESULT bodies concurrent={args.concurrent} size={args.mib}MiB: "
              f"peak VmHWM {mib(status_kb(pid, 'VmHWM'))}, VmRSS {args.settle}s after "
              f"{mib(status_kb(pid, 'VmRSS'))}")
    finally:
        svc.stop()
        cluster.destroy()


def storms(args):
    h2load = shutil.which("h2load")
    if not h2load:
        sys.exit("grpc-memory.py: h2load is missing (apt-get install nghttp2-client)")
    cluster, svc = start()
    tmp = tempfile.mkdtemp(prefix="omnichat-storm-")
    try:
        pid = svc.proc.pid
        # A gRPC frame: not compressed, length, then an empty HealthCheckRequest.
        body = os.path.join(tmp, "check.bin")
        with open(body, "wb") as f:
            f.write(b"\x00" + struct.pack(">I", 0))
        print(f"start: VmRSS {mib(status_kb(pid, 'VmRSS'))}")
        for rnd in range(1, args.rounds + 1):
            r = subprocess.run([h2load, "-c", str(args.clients), "-n", str(args.requests),
                                "-m", "1", "-d", body, "-H", "content-type: application/grpc",
                                "-H", "te: trailers",
                                f"http://127.0.0.1:{svc.grpc_port}{HEALTH_CHECK}"],
                               capture_output=True, text=True, check=False)
            if rnd == 1:
                print("round 1 h2load: " + " | ".join(
                    ln.strip() for ln in r.stdout.splitlines()
                    if ln.startswith(("requests:", "status codes:", "finished in"))))
            if rnd % 5 == 0 or rnd == args.rounds:
                print(f"round {rnd}: VmRSS {mib(status_kb(pid, 'VmRSS'))}, "
                      f"VmHWM {mib(status_kb(pid, 'VmHWM'))}", flush=True)
        time.sleep(args.settle)
        print(f"RESULT storms rounds={args.rounds} clients={args.clients} "
              f"requests={args.requests}: VmRSS {args.settle}s after "
              f"{mib(status_kb(pid, 'VmRSS'))}, peak VmHWM {mib(status_kb(pid, 'VmHWM'))}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        svc.stop()
        cluster.destroy()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bodies")
    b.add_argument("--concurrent", type=int, default=16)
    b.add_argument("--mib", type=int, default=8)
    b.add_argument("--rounds", type=int, default=1)
    b.add_argument("--settle", type=float, default=5)
    b.add_argument("--kinds", default="empty-messages,unknown-fields,empty-attachments,big-string")
    s = sub.add_parser("storms")
    s.add_argument("--rounds", type=int, default=45)
    s.add_argument("--clients", type=int, default=1000)
    s.add_argument("--requests", type=int, default=20000)
    s.add_argument("--settle", type=float, default=5)
    args = p.parse_args()
    bodies(args) if args.cmd == "bodies" else storms(args)


if __name__ == "__main__":
    main()
