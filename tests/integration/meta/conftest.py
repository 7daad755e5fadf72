"""Meta connector integration fixtures.

Stack (session): the shared PostgreSQL cluster + omnichat-persistence from ../conftest.py, one
omnichat-graph-sim (echoes and events posted to the connector's /webhooks/meta, signed with the
suite's app secret), one omnichat-connector-meta pointing at both.

Per test: `fb` = a fresh tenant with a fresh Page connected as a facebook channel; `ig` the same
as an instagram channel; `meta_factory` for more. The simulator is reset before every test.

Run:  /usr/bin/python3 -m pytest tests/integration/meta -q
"""
import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "line"))
sys.path.insert(0, os.path.dirname(__file__))

from harness import assert_clean_exit, log_tail  # noqa: E402
from line_harness import channel_factory, check_logs  # noqa: E402
from meta_harness import FACEBOOK, INSTAGRAM, GraphSim, MetaChannel, MetaConnector  # noqa: E402

APP_SECRET = "it-app-secret-" + uuid.uuid4().hex
VERIFY_TOKEN = "it-verify-" + uuid.uuid4().hex


_final_log_check = assert_clean_exit


@pytest.fixture(scope="session")
def graph_sim():
    if not GraphSim.binary_present():
        pytest.exit("omnichat-graph-sim not found (set OMNICHAT_BIN_DIR)", returncode=3)
    sim = GraphSim().start()
    yield sim
    _final_log_check(sim, "graph-sim", sim.stop())


@pytest.fixture(scope="session")
def meta_connector(service, graph_sim):
    if not MetaConnector.binary_present():
        pytest.exit("omnichat-connector-meta not found (set OMNICHAT_BIN_DIR)", returncode=3)
    conn = MetaConnector(service.grpc_port, graph_sim.port, APP_SECRET, VERIFY_TOKEN).start()
    yield conn
    _final_log_check(conn, "connector-meta", conn.stop())


@pytest.fixture
def mconn(meta_connector, graph_sim):
    """The session connector, alive, with a freshly reset simulator that echoes to it."""
    if not meta_connector.alive():
        meta_connector.start()
    graph_sim.reset()
    graph_sim.config(webhook_url=meta_connector.webhook_url, app_secret=APP_SECRET, echo=True,
                     echo_delay_ms=20)
    yield meta_connector
    check_logs(meta_connector, "connector-meta")
    check_logs(graph_sim, "graph-sim")
    assert meta_connector.alive(), f"connector died during this test\n{log_tail(meta_connector.log_path)}"


@pytest.fixture
def fb(mconn, graph_sim, api, db):
    ch = MetaChannel(mconn, graph_sim, api, db, FACEBOOK)
    yield ch
    ch.drain()


@pytest.fixture
def ig(mconn, graph_sim, api, db):
    ch = MetaChannel(mconn, graph_sim, api, db, INSTAGRAM)
    yield ch
    ch.drain()


@pytest.fixture
def meta_factory(mconn, graph_sim, api, db):
    """More channels (other tenants, chosen token or ids, facebook or instagram)."""
    yield from channel_factory(MetaChannel, mconn, graph_sim, api, db)
