"""Database down: calls answer UNAVAILABLE and the service stays up; when PostgreSQL comes back,
calls succeed again without restarting the service. Runs on its own cluster and service."""
import time

import grpc
import pytest

from conftest import start_stack, stop_stack
from harness import Api, Builder, assert_code, log_tail, rpc_error

TS = 1_700_000_000_000


@pytest.fixture(scope="module")
def own_stack():
    cluster, svc = start_stack("resilience")
    yield cluster, svc
    stop_stack(cluster, svc)


def test_database_down_then_back(own_stack):
    cluster, svc = own_stack
    api = Api(svc.channel, timeout=20)
    b = Builder(api)
    acct = b.account()
    conv = b.conversation(acct, "T-res")
    b.message(conv, TS)

    cluster.stop()
    try:
        for call in (lambda: api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id),
                     lambda: b.message(conv, TS + 1, key="during-outage"),
                     lambda: api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id),
                     lambda: b.persist(b.inbound(acct, TS + 2, user="U", thread_key="T-res"))):
            t0 = time.time()
            err = rpc_error(call)
            assert_code(err, grpc.StatusCode.UNAVAILABLE)
            assert time.time() - t0 < 15, "UNAVAILABLE should come quickly, not after a long hang"
            assert svc.alive(), f"service died with the database down:\n{log_tail(svc.log_path)}"
        # Still alive after the outage lasted one more second with nothing calling it.
        time.sleep(1)
        assert svc.alive()
    finally:
        cluster.start()

    deadline = time.time() + 15
    last = None
    while time.time() < deadline:
        try:
            got = api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id, timeout=5)
            break
        except grpc.RpcError as e:
            last = e
            time.sleep(0.25)
    else:
        pytest.fail(f"calls did not succeed within 15 s after PostgreSQL came back: {last.code()} "
                    f"{last.details()}\n{log_tail(svc.log_path)}")
    assert got.conversation.message_count == 1, "the failed insert during the outage wrote something"
    # Writes work again too, on every pooled connection (several calls).
    for i in range(8):
        r = b.message(conv, TS + 10 + i, key=f"after-{i}")
        assert r.created
    assert len(api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id).messages) == 9
    assert svc.alive()
