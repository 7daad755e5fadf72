"""Hostile request bodies (issue 6, item 3): element counts are checked on the wire before
anything is unpacked, unpacking runs under a budget, and memory goes back after the spike.

The full measurement (16 concurrent 8 MiB bodies) is scripts/grpc-memory.py; this is the light
version: 4 concurrent bodies of each kind. On the code before the fix, 4 bodies of empty
`messages` made the service allocate ~2 GB.
"""
import os
import time

import grpc
import pytest

from harness import BIN_DIR, assert_code, now_ms, pb, rpc_error

PERSIST_INBOUND = "/omnichat.persistence.v1.Persistence/PersistInbound"
GET_CONVERSATION = "/omnichat.persistence.v1.Persistence/GetConversation"
MIB = 1 << 20
# ASan's shadow memory and quarantine make RSS meaningless; the answers are still checked.
MEASURE_RSS = "asan" not in os.path.basename(os.path.normpath(os.path.dirname(BIN_DIR)))


def _status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} missing from /proc/{pid}/status")


def _raw(service, path):
    return service.channel.unary_unary(path, request_serializer=lambda x: x,
                                       response_deserializer=lambda x: x)


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _bodies(size):
    inner = b"\x82\x01\x00" * ((size - 8) // 3)
    return {
        # field 2 (messages), empty, repeated
        "empty-messages": (b"\x12\x00" * (size // 2), "messages: at most 100 elements"),
        # field 15: unknown to PersistInboundRequest
        "unknown-fields": (b"\x78\x00" * (size // 2), "unknown field 15"),
        # one message whose field 16 (attachments) is repeated, empty
        "empty-attachments": (b"\x12" + _varint(len(inner)) + inner,
                              "messages[0].attachments: at most 20 elements"),
    }


@pytest.fixture
def big_channel(service):
    ch = service.new_channel(options=[("grpc.max_send_message_length", 64 * MIB)])
    yield ch
    ch.close()


def test_hostile_bodies_refused_on_the_wire_with_bounded_memory(service, big_channel):
    pid = service.proc.pid
    for kind, (body, field) in _bodies(8 * MIB).items():
        call = big_channel.unary_unary(PERSIST_INBOUND, request_serializer=lambda x: x,
                                       response_deserializer=lambda x: x)
        futures = [call.future(body, timeout=60) for _ in range(4)]
        for f in futures:
            with pytest.raises(grpc.RpcError) as e:
                f.result()
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (kind, e.value)
            assert field in e.value.details(), (kind, e.value.details())
    if MEASURE_RSS:
        # Before the fix: ~500 MB per body of empty messages, 230-400 MB for the others.
        hwm = _status_kb(pid, "VmHWM") / 1024
        assert hwm <= 150, f"peak RSS {hwm:.0f} MiB with 4 concurrent 8 MiB hostile bodies"
        # The housekeeping thread trims within a second or two; wait for it, up to 5 s.
        deadline = time.time() + 5
        while _status_kb(pid, "VmRSS") / 1024 > 60 and time.time() < deadline:
            time.sleep(0.2)
        rss = _status_kb(pid, "VmRSS") / 1024
        assert rss <= 60, f"RSS {rss:.0f} MiB 5 s after the hostile bodies"


def test_request_over_the_method_receive_limit(service):
    # GetConversation takes 256 KiB at most (services/persistence/limits.c); the server-wide
    # gRPC limit is 8 MiB.
    body = b"\x0a" + _varint(300 * 1024) + b"a" * (300 * 1024)
    err = rpc_error(_raw(service, GET_CONVERSATION), body, timeout=30)
    assert_code(err, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "at most 262144 for this method" in err.details()


def test_unknown_fields_within_the_allowance_are_accepted(service, b):
    """A newer client's few extra fields still pass (16 per request)."""
    acct = b.account()
    req = pb.PersistInboundRequest(tenant_id=b.tenant,
                                   messages=[b.inbound(acct, now_ms(), user="U-unknown")])
    body = req.SerializeToString() + b"\xf8\x07\x01" * 16  # field 127, varint, 16 times
    reply = pb.PersistInboundResponse.FromString(_raw(service, PERSIST_INBOUND)(body, timeout=30))
    assert len(reply.results) == 1 and reply.results[0].created
    err = rpc_error(_raw(service, PERSIST_INBOUND), body + b"\xf8\x07\x01", timeout=30)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT)
    assert "unknown field 127" in err.details()


def test_largest_valid_batch_decodes_within_its_budget(b):
    """100 messages of 20 attachments each: the decoding budget derived from the wire walk must
    leave room for every valid request, not only for small ones."""
    acct = b.account()
    ts = now_ms()
    items = []
    for i in range(100):
        atts = [pb.AttachmentInput(kind="image", url=f"https://cdn.example/{i}/{k}.png",
                                   mime_type="image/png", name="n", metadata_json="{}",
                                   size_bytes=1, ordinal=k + 1) for k in range(20)]
        items.append(b.inbound(acct, ts + i, user=f"U-{i % 7}", text="t", attachments=atts,
                               contact_display_name="d", sender_display_name="s"))
    results = b.persist(*items)
    assert len(results) == 100 and all(r.created for r in results)
