"""LINE connector integration fixtures.

Stack (session): the shared PostgreSQL cluster + omnichat-persistence from ../conftest.py,
one omnichat-line-sim, one omnichat-connector-line pointing at both. The connector is
restartable and SIGKILL-able (tests that kill it restart it; a connector found dead before a
test is restarted and the test that killed it is failed by the after-test check).

Per test: `line` = a fresh tenant (uuid4) with a fresh bot token and bot user id registered
at the simulator and connected with ConnectChannel. The simulator is reset (faults, request
and delivery logs, retry keys) before every test, so tests run one at a time (no xdist).

Run:  /usr/bin/python3 -m pytest tests/integration/line -q
Env:  OMNICHAT_BIN_DIR (default build/bin): omnichat-persistence, omnichat-line-sim,
      omnichat-connector-line. OMNICHAT_TEST_SLOW=3 stretches waits for ASan builds.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
sys.path.insert(0, os.path.dirname(__file__))

from harness import assert_clean_exit, log_tail  # noqa: E402
from line_harness import Connector, LineChannel, Sim, channel_factory, check_logs  # noqa: E402


_final_log_check = assert_clean_exit


@pytest.fixture(scope="session")
def line_sim():
    if not Sim.binary_present():
        pytest.exit("omnichat-line-sim not found (set OMNICHAT_BIN_DIR)", returncode=3)
    sim = Sim().start()
    yield sim
    _final_log_check(sim, "line-sim", sim.stop())


@pytest.fixture(scope="session")
def connector(service, line_sim):
    if not Connector.binary_present():
        # An error, as for persistence: a suite that skips itself would pass having tested nothing.
        pytest.exit("omnichat-connector-line not found (set OMNICHAT_BIN_DIR)", returncode=3)
    conn = Connector(service.grpc_port, line_sim.port).start()
    yield conn
    _final_log_check(conn, "connector", conn.stop())


@pytest.fixture
def conn(connector, line_sim, request):
    """The session connector, alive, with a freshly reset simulator."""
    if not connector.alive():
        connector.start()
    line_sim.reset()
    yield connector
    check_logs(connector, "connector")
    check_logs(line_sim, "line-sim")
    assert connector.alive(), (f"connector died during this test (exit "
                               f"{connector.proc.returncode})\n{log_tail(connector.log_path)}")


@pytest.fixture
def line(conn, line_sim, api, db):
    ch = LineChannel(conn, line_sim, api, db)
    yield ch
    ch.drain()


@pytest.fixture
def line_factory(conn, line_sim, api, db):
    """More channels (other tenants, or chosen token/secret/bot id)."""
    yield from channel_factory(LineChannel, conn, line_sim, api, db)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        for name, label in (("connector", "connector"), ("line_sim", "line-sim")):
            proc = item.funcargs.get(name)
            if proc is None and name in item.fixturenames:
                try:
                    proc = item._request.getfixturevalue(name)
                except Exception:
                    proc = None
            if proc is not None:
                item.add_report_section("call", f"{label} log tail", log_tail(proc.log_path, 15))
