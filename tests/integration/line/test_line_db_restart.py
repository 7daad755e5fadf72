"""LINE webhooks right after a PostgreSQL restart: no 503 once the database is back.

Regression (issue 6, item 2): persistence's pooled connections each failed one call after a
restart, so webhooks answered 503 several times although the database was up. Restarts the
shared cluster (fast, then immediate); the pool recovers by itself, so later tests are not
affected.
"""
import threading

import pytest

from harness import Db
from line_harness import text_event

WARM = 8


def _pool_connections(db):
    return db.count("SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'omnichat-persistence'")


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_webhooks_answer_200_right_after_a_database_restart(line, cluster, mode):
    db = Db(cluster.dsn("super"))
    statuses = []
    lock = threading.Lock()

    def burst(n, tag):
        def one(i):
            status, body, _, _ = line.deliver_text(text=f"{tag}-{i}")
            with lock:
                statuses.append((tag, i, status, body))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # The retry worker would otherwise poll persistence every 100 ms and, while the database
    # is restarting, use up the stale connections before the webhooks arrive.
    def warm():
        # Concurrent persistence reads: a connector stores one account's webhooks one call at
        # a time, so its own bursts no longer open several pooled connections.
        threads = [threading.Thread(target=lambda: line.api.ListChannelAccounts(
            tenant_id=line.tenant)) for _ in range(WARM)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with line.conn.reconfigured(worker_interval_ms=600000):
        # A warm pool: several connections in persistence, all about to go stale.
        for _ in range(20):
            warm()
            burst(WARM, "warm")
            if _pool_connections(db) >= 4:
                break
        assert _pool_connections(db) >= 4
        statuses.clear()

        cluster.restart(mode)

        for i in range(5):  # sequential, the very first one included
            status, body, _, _ = line.deliver_text(text=f"after-{i}")
            statuses.append(("sequential", i, status, body))
        burst(WARM * 2, "concurrent")

    bad = [s for s in statuses if s[2] != 200]
    assert not bad, f"webhooks failed after the database was back: {bad}"
    # And they were stored, not just answered.
    texts = {m["content_text"] for m in line.db_messages("direction = 'inbound'")}
    assert {f"after-{i}" for i in range(5)} <= texts
