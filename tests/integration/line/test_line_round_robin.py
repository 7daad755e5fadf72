"""The connector balances its persistence calls over every address a dns:/// target resolves to.

On Kubernetes the chart (helm/omnichat) points the connectors at persistence's headless
Service, `dns:///<headless>.<namespace>.svc.cluster.local:50051`, whose DNS name resolves to
one address per ready pod. This test builds the same situation on one machine: a small DNS
server on loopback answers the name "persistence" with two addresses, 127.0.0.1 and
127.0.0.2, each with its own omnichat-persistence on the same port, and the connector is given
`dns://<that DNS server>/persistence:<port>` (the authority part of a dns: target names the
DNS server to ask, instead of the system's). The connector's retry worker calls
ClaimDueOutbound every few milliseconds; each instance's /metrics counts the calls it got.
With round_robin both get about half; with gRPC's default (pick_first) one would get all.
"""

import os
import re
import socket
import struct
import threading

import pytest

import harness
from line_harness import Connector

NAME = "persistence"
ADDRESSES = ("127.0.0.1", "127.0.0.2")
CALLS = 200  # ClaimDueOutbound calls counted over both instances before judging the split


class LoopbackDns:
    """A UDP DNS server on 127.0.0.1 that answers A queries for one name with fixed
    addresses, every other type of that name with no records, and other names NXDOMAIN."""

    def __init__(self, name, addresses):
        self.name = name.lower()
        self.addresses = addresses
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = []  # (name, type) of every query, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            reply = self._answer(data)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def _answer(self, data):
        if len(data) < 12:
            return None
        qid, _flags, qdcount = struct.unpack("!HHH", data[:6])
        if qdcount != 1:
            return None
        labels, i = [], 12
        while i < len(data) and data[i] != 0:
            n = data[i]
            labels.append(data[i + 1 : i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        question_end = i + 5
        if question_end > len(data):
            return None
        qtype, _qclass = struct.unpack("!HH", data[i + 1 : question_end])
        qname = ".".join(labels).lower()
        self.queries.append((qname, qtype))
        question = data[12:question_end]
        if qname != self.name:
            return struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
        answers = b""
        if qtype == 1:  # A
            for a in self.addresses:
                # A pointer to the name in the question, type A, class IN, TTL 1 s, 4 bytes.
                answers += struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + socket.inet_aton(a)
        count = len(self.addresses) if qtype == 1 else 0
        return struct.pack("!HHHHHH", qid, 0x8580, 1, count, 0, 0) + question + answers


def claims(svc):
    """ClaimDueOutbound calls the instance answered, from its /metrics."""
    status, body = svc.admin_get("/metrics")
    assert status == 200, body
    total = 0
    for line in body.splitlines():
        if line.startswith("omnichat_rpc_requests_total{") and 'method="ClaimDueOutbound"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


class DnsTargetConnector(Connector):
    """The LINE connector, plaintext, dialling persistence through a dns: target."""

    def __init__(self, target, **kw):
        super().__init__(0, harness.free_port(), tls=None, **kw)
        self.target = target

    def command(self):
        cmd = super().command()
        cmd[cmd.index("--persistence-target") + 1] = self.target
        return cmd


@pytest.fixture
def two_instances(cluster):
    port = harness.free_port()
    started = []
    try:
        for addr in ADDRESSES:
            svc = harness.Service(cluster, name=f"persistence-{addr}", tls=None, grpc_port=port,
                                  extra_args=["--grpc-listen", f"{addr}:{port}",
                                              "--log-level", "info"])
            started.append(svc.start())
        yield port, started
    finally:
        # Stop both before judging either, so that a failed check leaves no process behind.
        codes = [svc.stop() for svc in started]
        for svc, addr, rc in zip(started, ADDRESSES, codes):
            harness.assert_clean_exit(svc, f"persistence on {addr}", rc)


def test_connector_spreads_persistence_calls_over_every_resolved_address(two_instances):
    port, instances = two_instances
    # Each instance listens on its own address only: a call that reached one was routed there.
    for svc in instances:
        assert svc.log_text().count('"msg":"listening"') == 1
    before = [claims(svc) for svc in instances]
    with LoopbackDns(NAME, ADDRESSES) as dns:
        conn = DnsTargetConnector(f"dns://127.0.0.1:{dns.port}/{NAME}:{port}",
                                  worker_interval_ms=10)
        conn.start()
        try:
            counts = [0, 0]

            def enough():
                counts[:] = [claims(svc) - b for svc, b in zip(instances, before)]
                return sum(counts) >= CALLS

            harness.wait_until(enough, 60 * float(os.environ.get("OMNICHAT_TEST_SLOW", "1")),
                               f"{CALLS} ClaimDueOutbound calls")
        finally:
            rc = conn.stop()
        assert rc in (0, -15), f"connector exit code after SIGTERM: {rc}"
        assert (NAME, 1) in dns.queries, dns.queries  # resolved through this DNS server
    # Both pods served calls, about evenly (round_robin alternates; pick_first would give one
    # instance everything). The margin allows for the calls in flight while counting.
    total = sum(counts)
    print(f"ClaimDueOutbound calls per instance: {dict(zip(ADDRESSES, counts))}")
    assert min(counts) > 0, counts
    for n in counts:
        assert 0.35 <= n / total <= 0.65, counts
    # Neither instance logged a failed call: the connector never dialled an address that was
    # not serving.
    for svc in instances:
        assert not re.search(r'"msg":"rpc failed"', svc.log_text()), svc.log_text()[-2000:]
