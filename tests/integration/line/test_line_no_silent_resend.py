"""No push is sent twice behind the connector's back. libcurl re-sends a request whose reused
keep-alive connection died; with LINE's retry key that is harmless, with a provider without a
key it is a duplicate message to a customer. The connector's HTTP client refuses the re-send, so
the attempt is one the engine sees, counts and classifies (unknown, retried later with the same
key)."""
import time

from harness import pb
from line_harness import SLOW


def test_dropped_reused_connection_is_one_attempt_not_a_silent_resend(line, conn):
    # One gRPC worker thread: the second send reuses the first one's keep-alive connection.
    # A long backoff keeps the retry worker away while the simulator is watched.
    with conn.reconfigured(workers=1, backoff_base_ms=60000, backoff_max_ms=60000):
        conv, _ = line.conversation()
        warm = line.send(conv, "warm the keep-alive connection")
        assert warm.status == pb.MESSAGE_STATUS_SENT, warm
        before = len(line.push_requests())
        line.sim.fault({"drop": True})  # read the push, then close without an answer
        m = line.send(conv, "dropped on a reused connection")
        time.sleep(0.5 * SLOW)  # a silent re-send comes 10-30 ms later
        reqs = line.push_requests()[before:]
        assert len(reqs) == 1, reqs
        assert m.status == pb.MESSAGE_STATUS_UNKNOWN, m
        assert m.attempts == 1, m
        assert m.error_category == pb.ERROR_CATEGORY_NETWORK_ERROR, m
