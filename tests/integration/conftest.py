"""Session fixtures: one PostgreSQL cluster + one migrated omnichat-persistence for the suite.
A skipped test fails the run unless skips-allowed.txt lists it with its reason.

Run:  /usr/bin/python3 -m pytest tests/integration -q
Env:  OMNICHAT_BIN_DIR (default build/bin) — where omnichat-persistence lives.
      OMNICHAT_TEST_TLS=1 — every service runs with mutual TLS (harness.TEST_TLS).

Each test gets a fresh random tenant (uuid4), so tests do not depend on each other. The
database-down test (test_resilience.py) brings up its own cluster and service.
"""
import fnmatch
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402
from harness import (Api, Builder, Db, PgCluster, Service, assert_clean_exit, log_tail,  # noqa: E402
                     sanitizer_lines)


def start_stack(name, extra_args=()):
    """Cluster + migrations + grant + service; returns (cluster, service)."""
    if not os.path.exists(harness.PG_CLUSTER):
        pytest.exit(f"{harness.PG_CLUSTER} is missing", returncode=3)
    if not Service.binary_present():
        pytest.exit(f"omnichat-persistence not found in {harness.BIN_DIR} "
                    f"(set OMNICHAT_BIN_DIR)", returncode=3)
    cluster = PgCluster().init()
    try:
        svc = Service(cluster, name=name, extra_args=extra_args)
        svc.migrate()
        cluster.grant()
        svc.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster, svc


def stop_stack(cluster, svc):
    """Stop the service and the cluster; assert a clean exit and a log free of sanitizer
    reports (LeakSanitizer reports only at exit, so this is the last word)."""
    rc = svc.stop()
    try:
        cluster.destroy()
    finally:
        assert_clean_exit(svc, "service", rc)


@pytest.fixture(scope="session")
def stack():
    cluster, svc = start_stack("persistence")
    yield cluster, svc
    stop_stack(cluster, svc)


@pytest.fixture(scope="session")
def service(stack):
    return stack[1]


@pytest.fixture(scope="session")
def cluster(stack):
    return stack[0]


@pytest.fixture(scope="session")
def api(service):
    return Api(service.channel)


@pytest.fixture(scope="session")
def db(cluster):
    """psql as superuser: sees every row (RLS does not apply)."""
    return Db(cluster.dsn("super"))


@pytest.fixture(scope="session")
def app_db(cluster):
    """psql as the runtime role the service uses: subject to row-level security."""
    return Db(cluster.dsn("app"))


@pytest.fixture
def tenant():
    return harness.new_id()


@pytest.fixture
def b(api, tenant):
    """Builder for this test's fresh tenant."""
    return Builder(api, tenant)


@pytest.fixture
def b2(api):
    """Builder for a second fresh tenant."""
    return Builder(api)


@pytest.fixture(autouse=True)
def _service_health_after_each_test(request):
    """After every test that used the shared service: it is still alive and its log has no
    sanitizer report since the previous check (attributes a report to the test that caused it)."""
    yield
    if "stack" not in request.fixturenames:
        return
    svc = request.getfixturevalue("service")
    new = svc.new_log_since_last_check()
    bad = sanitizer_lines(new)
    assert not bad, ("sanitizer report in the service log during this test:\n"
                     + "\n".join(bad[:20]) + "\n--- log tail ---\n" + log_tail(svc.log_path))
    assert svc.alive(), (f"service died (exit {svc.proc.returncode}) during this test\n"
                         f"--- log tail ---\n{log_tail(svc.log_path)}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    # Show the service log tail next to any failing test that used the shared service.
    if call.when == "call" and call.excinfo is not None and "stack" in item.fixturenames:
        svc = item.funcargs.get("service")
        if svc is None:
            try:
                svc = item._request.getfixturevalue("service")
            except Exception:
                svc = None
        if svc is not None:
            item.add_report_section("call", "service log tail", log_tail(svc.log_path, 30))


# ---------------------------------------------------------------------------------------------
# Skips fail the run unless skips-allowed.txt lists them with a reason.

SKIPS_ALLOWED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skips-allowed.txt")
_skips = {"allowed": [], "rootdir": None, "unlisted": []}


def _allowed_skip_patterns():
    patterns = []
    with open(SKIPS_ALLOWED) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            pattern, sep, reason = line.partition("|")
            if not sep or not pattern.strip() or not reason.strip():
                raise pytest.UsageError(f"{SKIPS_ALLOWED}:{n}: expected '<node id> | <reason>'")
            patterns.append(pattern.strip())
    return patterns


def pytest_configure(config):
    _skips["allowed"] = _allowed_skip_patterns()
    _skips["rootdir"] = str(config.rootpath)


def pytest_runtest_logreport(report):
    if not report.skipped:
        return
    # Node ids are relative to pytest's rootdir, which depends on how pytest was called; the
    # list names them from the repository root.
    path, sep, rest = report.nodeid.partition("::")
    path = os.path.relpath(os.path.join(_skips["rootdir"], path), harness.REPO)
    nodeid = path + sep + rest
    if any(fnmatch.fnmatchcase(nodeid, p) for p in _skips["allowed"]):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    _skips["unlisted"].append((nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if _skips["unlisted"] and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if not _skips["unlisted"]:
        return
    terminalreporter.section("skipped tests not in skips-allowed.txt (they fail the run)",
                             red=True)
    for nodeid, reason in _skips["unlisted"]:
        terminalreporter.line(f"SKIPPED-UNLISTED {nodeid}: {reason}")
