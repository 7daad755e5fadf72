"""PostgreSQL restarts under a warm connection pool: the first call after the database is back
succeeds, and every database error logged meanwhile says what happened.

Regression (issue 6, items 2 and 11): each pooled connection used to fail one call after a
restart (57P01, then 08006) before it was replaced, and the `database error` lines of libpq's
own errors had an empty sqlstate and detail. Runs on its own cluster and service.
"""
import json
import threading

import grpc
import pytest

from conftest import start_stack, stop_stack
from harness import Api, Builder, Db, log_tail, run_concurrently

TS = 1_700_000_000_000
WORKERS = 6


@pytest.fixture(scope="module")
def own_stack():
    # A smaller pool than the default, so that all of it is warmed below.
    cluster, svc = start_stack("db-restart", ["--workers", str(WORKERS)])
    yield cluster, svc
    stop_stack(cluster, svc)


def _pool_connections(db):
    return db.count("SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'omnichat-persistence'")


def _warm(api, b, conv, db):
    """Concurrent reads until at least 4 pooled connections exist (the pool prefers connected
    slots, so only concurrency opens more)."""
    for _ in range(50):
        run_concurrently(lambda: api.ListMessages(tenant_id=b.tenant,
                                                  conversation_id=conv.conversation_id),
                         WORKERS * 2)
        if _pool_connections(db) >= 4:
            return
    pytest.fail(f"the pool did not warm up: {_pool_connections(db)} connections")


def _db_error_lines(text):
    out = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        if ev.get("msg") == "database error":
            out.append(ev)
    return out


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_first_calls_after_restart_succeed(own_stack, mode):
    cluster, svc = own_stack
    api = Api(svc.channel, timeout=20)
    db = Db(cluster.dsn("super"))
    b = Builder(api)
    acct = b.account()
    conv = b.conversation(acct, f"T-restart-{mode}")
    b.message(conv, TS)
    _warm(api, b, conv, db)
    svc.new_log_since_last_check()

    cluster.restart(mode)

    failures = []
    # Sequential: reads and keyed writes, each of which must succeed at the first try.
    calls = [
        lambda: api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id),
        lambda: b.message(conv, TS + 1, key=f"after-{mode}-1"),
        lambda: api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id),
        lambda: b.persist(b.inbound(acct, TS + 2, user="U-restart", thread_key="T-r")),
        lambda: api.ListConversations(tenant_id=b.tenant),
    ] * 2
    for i, call in enumerate(calls):
        try:
            call()
        except grpc.RpcError as e:
            failures.append(f"sequential call {i}: {e.code()} {e.details()}")

    # Concurrent: more calls at once than the pool has connections.
    lock = threading.Lock()

    def one(i):
        try:
            if i % 2:
                b.message(conv, TS + 100 + i, key=f"conc-{mode}-{i}")
            else:
                api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id)
        except grpc.RpcError as e:
            with lock:
                failures.append(f"concurrent call {i}: {e.code()} {e.details()}")
    # A second restart with a pool warmed again, then the concurrent burst first.
    _warm(api, b, conv, db)
    cluster.restart(mode)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(WORKERS * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    log = svc.new_log_since_last_check()
    assert not failures, ("calls failed after PostgreSQL was back:\n" + "\n".join(failures)
                          + "\n--- log ---\n" + log[-4000:])
    # Every database error logged across both restarts says what happened.
    for ev in _db_error_lines(log):
        for field in ("sqlstate", "cause", "detail"):
            assert ev.get(field), f"database error without {field}: {ev}"
    assert svc.alive()


def test_database_errors_during_an_outage_name_their_cause(own_stack):
    """Calls while the database is down fail (UNAVAILABLE); each `database error` line they
    cause has a non-empty sqlstate, cause and detail."""
    cluster, svc = own_stack
    api = Api(svc.channel, timeout=20)
    db = Db(cluster.dsn("super"))
    b = Builder(api)
    acct = b.account()
    conv = b.conversation(acct, "T-outage")
    _warm(api, b, conv, db)
    svc.new_log_since_last_check()

    # Immediate stop: the backends are killed without a goodbye, as in a crash.
    cluster.restart("immediate")  # stale pool, database up
    cluster.stop()
    try:
        for i in range(WORKERS):
            try:
                api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id,
                                    timeout=10)
                pytest.fail("a call succeeded with the database down")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
    finally:
        cluster.start()
    log = svc.new_log_since_last_check()
    lines = _db_error_lines(log)
    assert lines, "no database error was logged during the outage:\n" + log[-3000:]
    causes = set()
    for ev in lines:
        for field in ("sqlstate", "cause", "detail"):
            assert ev.get(field), f"database error without {field}: {ev}"
        causes.add(ev["cause"])
    assert causes <= {"server_error", "connection_lost", "connect_failed", "client_error"}, causes
    assert "connect_failed" in causes, lines
    api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id)
    assert svc.alive(), log_tail(svc.log_path)


def test_calls_succeed_after_an_administrator_ends_every_session(own_stack):
    """pg_terminate_backend on every pooled session (a failover tool, a DBA): the server says
    FATAL 57P01 and closes them while they sit idle; the next calls still succeed."""
    cluster, svc = own_stack
    api = Api(svc.channel, timeout=20)
    db = Db(cluster.dsn("super"))
    b = Builder(api)
    acct = b.account()
    conv = b.conversation(acct, "T-terminate")
    _warm(api, b, conv, db)
    ended = db.count("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                     "pg_stat_activity WHERE application_name = 'omnichat-persistence') t")
    assert ended >= 4
    for i in range(WORKERS * 2):
        b.message(conv, TS + i, key=f"after-terminate-{i}")
    assert len(api.ListMessages(tenant_id=b.tenant,
                                conversation_id=conv.conversation_id).messages) == WORKERS * 2
