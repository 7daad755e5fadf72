"""/metrics of every service, read with a real exposition-format parser (Debian's
python3-prometheus-client): Prometheus naming (counters end in _total, durations in _seconds,
sizes in _bytes), types, one label set per family, bounded label values, and the families that
docs/operations.md ("Metrics") promises, moved by known traffic.

The module runs its own persistence (on the suite's cluster), LINE and Meta connectors and
simulators, so that every counter starts at zero and the traffic below is all they saw: one
webhook each, one SendText each, one send that fails for a retry (LINE), and failing calls."""
import math
import os
import re
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "line"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "meta"))

import harness  # noqa: E402
from harness import Db, PgCluster, Service, rpc_error, sql_lit  # noqa: E402
from line_harness import Connector, LineChannel, Sim, check_logs  # noqa: E402
from meta_harness import FACEBOOK, GraphSim, MetaChannel, MetaConnector  # noqa: E402

APP_SECRET = "it-metrics-secret"
VERIFY_TOKEN = "it-metrics-verify"
# A failed LINE send must stay in the retry queue while the test reads it.
SLOW_RETRY = {"backoff_base_ms": 600000, "backoff_max_ms": 600000}

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Units that are not base units, as a name part: _ms, _milliseconds, _kb, ...
NON_BASE_UNITS = re.compile(r"_(ms|us|ns|msec|usec|milliseconds|microseconds|nanoseconds|minutes|"
                            r"hours|days|kb|kib|mb|mib|gb|gib|kilobytes|megabytes|percent)(_|$)")
DURATION_WORDS = ("latency", "duration", "elapsed", "wait", "time", "age", "lag")

PROCESS = {
    "process_cpu_seconds": ("counter", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "process_virtual_memory_bytes": ("gauge", set()),
    "process_open_fds": ("gauge", set()),
    "process_max_fds": ("gauge", set()),
    "process_start_time_seconds": ("gauge", set()),
    "omnichat_build_info": ("gauge", {"version", "revision"}),
}
RPC = {
    "omnichat_rpc_requests": ("counter", {"method", "code"}),
    "omnichat_rpc_latency_seconds": ("histogram", {"method", "code"}),
    "omnichat_rpc_denied": ("counter", {"method", "peer"}),
}
# Family name as the parser gives it (a counter's without _total) -> (type, label names).
REQUIRED = {
    "persistence": {
        **PROCESS, **RPC,
        "omnichat_dedupe_hits": ("counter", {"method"}),
        "omnichat_db_pool_in_use": ("gauge", set()),
        "omnichat_db_pool_size": ("gauge", set()),
        "omnichat_db_pool_waits": ("counter", set()),
        "omnichat_db_pool_wait_seconds": ("counter", set()),
        "omnichat_retry_queue_messages": ("gauge", {"channel", "state"}),
    },
    "connector": {
        **PROCESS, **RPC,
        "omnichat_webhook_events": ("counter", {"provider", "outcome"}),
        "omnichat_webhook_requests": ("counter", {"provider", "status"}),
        "omnichat_sends": ("counter", {"channel", "outcome", "category"}),
        "omnichat_provider_latency_seconds": ("histogram", {"endpoint"}),
        "omnichat_retry_claimed": ("counter", set()),
    },
}


def check_exposition(text):
    """Problems of a /metrics body against Prometheus naming and our rules, one line each, and
    the parsed families by name."""
    problems, families = [], {}
    try:
        parsed = list(text_string_to_metric_families(text))
    except ValueError as e:
        return [f"not parsable as text format 0.0.4: {e}"], families
    problems += raw_counter_problems(text)
    for fam in parsed:
        name = fam.name
        families[name] = fam
        if not name.startswith(("omnichat_", "process_")):
            problems.append(f"{name}: not in the omnichat_ or process_ namespace")
        if fam.type not in ("counter", "gauge", "histogram"):
            problems.append(f"{name}: type {fam.type} (no TYPE line, or one we do not use)")
        if NON_BASE_UNITS.search(name):
            problems.append(f"{name}: unit is not a base unit (seconds, bytes)")
        if any(w in name.split("_") for w in DURATION_WORDS) and fam.type != "counter" \
                and not name.endswith("_seconds") and "_seconds_" not in name:
            problems.append(f"{name}: a duration without the _seconds suffix")
        if fam.type != "counter" and name.endswith("_total"):
            problems.append(f"{name}: _total on a {fam.type}")
        label_sets = set()
        for s in fam.samples:
            labels = dict(s.labels)
            if fam.type == "counter":
                pass  # the parser adds _total itself: raw_counter_problems reads the text
            elif fam.type == "histogram":
                suffix = s.name[len(name):]
                if not s.name.startswith(name) or suffix not in ("_bucket", "_sum", "_count"):
                    problems.append(f"{name}: histogram sample {s.name}")
                if suffix == "_bucket":
                    if "le" not in labels:
                        problems.append(f"{name}: bucket without le")
                    labels.pop("le", None)
            elif s.name != name:
                problems.append(f"{name}: gauge sample {s.name}")
            label_sets.add(frozenset(labels))
            for k, v in labels.items():
                if UUID.search(v):
                    problems.append(f"{name}: label {k}={v!r} holds an id (unbounded)")
            if fam.type == "counter" and not (s.value >= 0 and math.isfinite(s.value)):
                problems.append(f"{name}: counter value {s.value}")
        if len(label_sets) > 1:
            problems.append(f"{name}: mixed label sets {sorted(sorted(x) for x in label_sets)}")
        if fam.type == "histogram":
            problems += histogram_problems(fam)
    return problems, families


def raw_counter_problems(text):
    """Counter names as exposed: the parser hands out "x_total" samples for a counter "x", so
    the rule is checked on the text itself (TYPE line and sample lines)."""
    out, counters, current = [], set(), None
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)$", line)
        if m:
            current = m.group(1) if m.group(2) == "counter" else None
            if current is not None:
                counters.add(current)
                if not current.endswith("_total"):
                    out.append(f"{current}: counter does not end in _total")
            continue
        if current is None or line.startswith("#") or not line.strip():
            continue
        sample = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        if sample != current:
            out.append(f"{current}: counter sample {sample} is not named {current}")
    return out


def histogram_problems(fam):
    """Per label set: cumulative buckets ending in +Inf, and _count equal to the +Inf bucket."""
    out, series = [], {}
    for s in fam.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        series.setdefault(key, {"buckets": [], "count": None})
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
    for key, ser in series.items():
        b = sorted(ser["buckets"])
        if not b or b[-1][0] != math.inf:
            out.append(f"{fam.name}{dict(key)}: no +Inf bucket")
            continue
        if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            out.append(f"{fam.name}{dict(key)}: buckets are not cumulative")
        if ser["count"] != b[-1][1]:
            out.append(f"{fam.name}{dict(key)}: _count {ser['count']} != +Inf bucket {b[-1][1]}")
    return out


def check_required(families, required):
    problems = []
    for name, (typ, labels) in required.items():
        fam = families.get(name)
        if fam is None:
            problems.append(f"{name}: missing")
            continue
        if fam.type != typ:
            problems.append(f"{name}: type {fam.type}, want {typ}")
        for s in fam.samples:
            have = set(s.labels) - {"le"}
            if have != labels:
                problems.append(f"{name}: labels {sorted(have)}, want {sorted(labels)}")
                break
    return problems


def value(families, name, **labels):
    """Sum of the samples of family `name` (its plain samples; a histogram's _count) whose
    labels include `labels`."""
    fam = families[name]
    want = {"counter": name + "_total", "gauge": name, "histogram": name + "_count"}[fam.type]
    return sum(s.value for s in fam.samples
               if s.name == want and all(s.labels.get(k) == v for k, v in labels.items()))


def scrape(url_get):
    status, body = url_get("/metrics")
    assert status == 200, body
    return body


# ---------------------------------------------------------------------------------------------
# The positive control: the checker finds what it is there to find.

BAD = """\
# HELP omnichat_things things
# TYPE omnichat_things counter
omnichat_things{kind="a"} 1
# HELP omnichat_mixed_total mixed
# TYPE omnichat_mixed_total counter
omnichat_mixed_total{kind="a"} 1
omnichat_mixed_total{other="b"} 2
# HELP omnichat_call_latency_ms latency
# TYPE omnichat_call_latency_ms histogram
omnichat_call_latency_ms_bucket{le="1"} 2
omnichat_call_latency_ms_bucket{le="+Inf"} 1
omnichat_call_latency_ms_sum 3
omnichat_call_latency_ms_count 5
# HELP omnichat_by_tenant_total by tenant
# TYPE omnichat_by_tenant_total counter
omnichat_by_tenant_total{tenant="7b0a8a52-3c51-4b8e-9d1e-2d3f5a6b7c8d"} 1
# HELP omnichat_queue_total not a counter
# TYPE omnichat_queue_total gauge
omnichat_queue_total 3
"""


def test_the_checker_complains_about_a_bad_exposition():
    problems, _ = check_exposition(BAD)
    text = "\n".join(problems)
    assert "omnichat_things: counter does not end in _total" in text
    assert "omnichat_mixed: mixed label sets" in text
    assert "omnichat_call_latency_ms: unit is not a base unit" in text
    assert "omnichat_call_latency_ms: a duration without the _seconds suffix" in text
    assert "buckets are not cumulative" in text
    assert "_count 5.0 != +Inf bucket 1.0" in text
    assert "omnichat_by_tenant: label tenant=" in text
    assert "omnichat_queue_total: _total on a gauge" in text
    assert check_required({}, {"omnichat_x": ("gauge", set())}) == ["omnichat_x: missing"]


# ---------------------------------------------------------------------------------------------
# The services


@pytest.fixture(scope="module")
def cluster():
    """A database of this module's own: the retry queue gauge counts across tenants, so other
    tests' messages moving in and out of the queue of a shared cluster would move it too."""
    c = PgCluster().init()
    try:
        Service(c, name="persistence-metrics-migrate").migrate()
        c.grant()
        yield c
    finally:
        c.destroy()


@pytest.fixture(scope="module")
def db(cluster):
    return Db(cluster.dsn("super"))


@pytest.fixture(scope="module")
def stack3(cluster, db):
    """Own database, persistence, LINE and Meta connectors and simulators, all fresh."""
    procs = []
    try:
        pst = Service(cluster, name="persistence-metrics").start()
        procs.append(pst)
        line_sim = Sim().start()
        procs.append(line_sim)
        graph_sim = GraphSim().start()
        procs.append(graph_sim)
        lconn = Connector(pst.grpc_port, line_sim.port, name="connector-line-metrics",
                          **SLOW_RETRY).start()
        procs.append(lconn)
        mconn = MetaConnector(pst.grpc_port, graph_sim.port, APP_SECRET, VERIFY_TOKEN,
                              name="connector-meta-metrics").start()
        procs.append(mconn)
        graph_sim.config(webhook_url=mconn.webhook_url, app_secret=APP_SECRET, echo=False)
        yield pst, line_sim, graph_sim, lconn, mconn
    finally:
        for p in reversed(procs):
            rc = p.stop()
            harness.assert_clean_exit(p, type(p).__name__, rc)


def _http_get(conn):
    def get(path):
        status, _, body = conn.http("GET", path)
        return status, body.decode()
    return get


@pytest.fixture(scope="module")
def scraped(stack3, db):
    """Drives the traffic once, then scrapes the three services: {service: (text, families)}."""
    pst, line_sim, graph_sim, lconn, mconn = stack3
    pst_api = harness.Api(pst.channel)
    line = LineChannel(lconn, line_sim, pst_api, db)
    fb = MetaChannel(mconn, graph_sim, pst_api, db, FACEBOOK)
    try:
        # One webhook each, stored.
        assert line.deliver_text()[0] == 200
        assert fb.deliver_text()[0] == 200
        # One SendText each that goes out.
        conv, _ = line.conversation()
        assert line.send(conv).status == harness.pb.MESSAGE_STATUS_SENT
        fconv, _ = fb.conversation()
        assert fb.send(fconv).status == harness.pb.MESSAGE_STATUS_SENT
        # One LINE send the provider fails with a 500: pending, scheduled for a retry.
        line_sim.fault({"status": 500})
        assert line.send(conv).status == harness.pb.MESSAGE_STATUS_PENDING
        # Failing calls: a conversation that does not exist (connector and persistence), a
        # webhook with a bad signature (rejected), an unknown account (NOT_FOUND).
        rpc_error(line.send, harness.new_id())
        assert fb.deliver_text(signature="sha256=" + "0" * 64)[0] == 401
        rpc_error(pst_api.GetChannelAccount, tenant_id=line.tenant,
                  channel_account_id=harness.new_id())
        out = {
            "persistence": scrape(pst.admin_get),
            "connector-line": scrape(_http_get(lconn)),
            "connector-meta": scrape(_http_get(mconn)),
        }
        queue_rows = db.rows(
            "SELECT count(*) FROM omnichat.messages m JOIN omnichat.channel_accounts a "
            "ON a.tenant_id = m.tenant_id AND a.id = m.channel_account_id "
            "WHERE a.channel_type = 'line' AND m.direction = 'outbound' "
            f"AND m.status IN ('pending', 'unknown') AND m.tenant_id = {sql_lit(line.tenant)}")
        assert int(queue_rows[0][0]) == 1  # the failed send, as the database has it
        pids = {"persistence": pst.proc.pid, "connector-line": lconn.proc.pid,
                "connector-meta": mconn.proc.pid}
        yield {k: (t, check_exposition(t)[1], pids[k]) for k, t in out.items()}
    finally:
        # The suite's own LINE connector must not retry this tenant's send.
        db.run("UPDATE omnichat.messages SET status = 'failed', next_attempt_at = NULL "
               f"WHERE tenant_id = {sql_lit(line.tenant)} AND status IN ('pending', 'unknown')")
        check_logs(lconn, "connector-line")
        check_logs(mconn, "connector-meta")


@pytest.mark.parametrize("svc", ["persistence", "connector-line", "connector-meta"])
def test_every_family_follows_the_naming_rules(scraped, svc):
    text, _, _ = scraped[svc]
    problems, families = check_exposition(text)
    assert not problems, "\n".join(problems)
    # It looked: the body holds the families it checked.
    assert len(families) >= 12 and "omnichat_rpc_requests" in families


@pytest.mark.parametrize("svc", ["persistence", "connector-line", "connector-meta"])
def test_the_documented_families_exist_with_their_labels(scraped, svc):
    _, families, _ = scraped[svc]
    problems = check_required(families, REQUIRED["persistence" if svc == "persistence"
                                                 else "connector"])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("svc", ["persistence", "connector-line", "connector-meta"])
def test_process_and_build_info_are_read_from_the_process(scraped, svc):
    _, f, pid = scraped[svc]
    # What the process's /proc files say now (the scrape came a moment earlier).
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as fh:
        btime = next(int(x.split()[1]) for x in fh if x.startswith("btime "))
    cpu_now = (int(stat[11]) + int(stat[12])) / ticks
    assert 0 <= value(f, "process_cpu_seconds") <= cpu_now
    assert value(f, "process_start_time_seconds") == pytest.approx(btime + int(stat[19]) / ticks,
                                                                   abs=0.02)
    assert value(f, "process_resident_memory_bytes") > 1 << 20
    assert value(f, "process_virtual_memory_bytes") >= value(f, "process_resident_memory_bytes")
    assert 3 < value(f, "process_open_fds") < value(f, "process_max_fds")
    soft = int(next(x for x in open(f"/proc/{pid}/limits") if x.startswith("Max open files"))
               .split()[3])
    assert value(f, "process_max_fds") == soft
    info = f["omnichat_build_info"].samples
    assert len(info) == 1 and info[0].value == 1
    assert re.fullmatch(r"\d+\.\d+\.\d+", info[0].labels["version"]), info[0].labels
    assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?|unknown", info[0].labels["revision"])


def test_rpc_families_count_calls_by_method_and_code_name(scraped):
    _, f, _ = scraped["connector-line"]
    assert value(f, "omnichat_rpc_requests", method="SendText", code="OK") == 2
    assert value(f, "omnichat_rpc_requests", method="SendText", code="NOT_FOUND") == 1
    assert value(f, "omnichat_rpc_requests", method="ConnectChannel", code="OK") == 1
    # The histogram has the same (method, code) series as the counter.
    assert value(f, "omnichat_rpc_latency_seconds", method="SendText", code="OK") == 2
    assert value(f, "omnichat_rpc_latency_seconds", method="SendText", code="NOT_FOUND") == 1
    _, p, _ = scraped["persistence"]
    assert value(p, "omnichat_rpc_requests", method="GetChannelAccount", code="NOT_FOUND") == 1
    assert value(p, "omnichat_rpc_requests", method="PersistInbound", code="OK") == 2
    assert value(p, "omnichat_rpc_latency_seconds", method="PersistInbound", code="OK") == 2
    # Only gRPC code names, never numbers.
    codes = {s.labels["code"] for s in p["omnichat_rpc_requests"].samples}
    assert codes and all(re.fullmatch(r"[A-Z_]+", c) for c in codes), codes


def test_webhook_events_by_provider_and_outcome(scraped):
    _, line, _ = scraped["connector-line"]
    _, meta, _ = scraped["connector-meta"]
    assert value(line, "omnichat_webhook_events", provider="line", outcome="stored") == 1
    assert value(meta, "omnichat_webhook_events", provider="meta", outcome="stored") == 1
    assert value(meta, "omnichat_webhook_events", provider="meta", outcome="rejected") == 1
    assert value(line, "omnichat_webhook_events", outcome="rejected") == 0
    assert value(meta, "omnichat_webhook_requests", provider="meta", status="401") == 1
    assert value(meta, "omnichat_webhook_requests", provider="meta", status="200") == 1
    assert value(line, "omnichat_webhook_requests", provider="line", status="200") == 1


def test_sends_by_channel_outcome_and_category(scraped):
    _, line, _ = scraped["connector-line"]
    _, meta, _ = scraped["connector-meta"]
    assert value(line, "omnichat_sends", channel="line", outcome="sent", category="none") == 1
    assert value(line, "omnichat_sends", channel="line", outcome="retry",
                 category="provider_error") == 1
    assert value(meta, "omnichat_sends", channel="facebook", outcome="sent", category="none") == 1
    assert value(line, "omnichat_provider_latency_seconds", endpoint="push") == 2


def test_retry_queue_and_database_pool(scraped):
    _, p, _ = scraped["persistence"]
    # The failed LINE send backs off for ten minutes: scheduled, not due. Other tests' tenants
    # share the cluster, hence at least.
    assert value(p, "omnichat_retry_queue_messages", channel="line", state="scheduled") >= 1
    states = {(s.labels["channel"], s.labels["state"])
              for s in p["omnichat_retry_queue_messages"].samples}
    assert states == {(c, st) for c in ("line", "facebook", "instagram")
                      for st in ("due", "scheduled")}
    size = value(p, "omnichat_db_pool_size")
    assert size == 33  # --workers 32 + the /metrics slot
    assert 0 <= value(p, "omnichat_db_pool_in_use") <= size
    assert value(p, "omnichat_db_pool_waits") == 0  # a pool sized to its workers never waits
    assert value(p, "omnichat_db_pool_wait_seconds") == 0


def test_the_retry_queue_is_counted_at_most_once_per_interval(stack3, scraped, db):
    """Scrapes between two counts return the last figures: the database sees one query per
    10 s however often /metrics is read. Positive control: the next count sees the change."""
    pst, line_sim, _, lconn, _ = stack3
    line = LineChannel(lconn, line_sim, harness.Api(pst.channel), db)

    def gauge():
        _, f = check_exposition(scrape(pst.admin_get))
        return value(f, "omnichat_retry_queue_messages", channel="line", state="scheduled")

    def in_db():
        return db.count("SELECT count(*) FROM omnichat.messages m JOIN omnichat.channel_accounts a "
                        "ON a.tenant_id = m.tenant_id AND a.id = m.channel_account_id "
                        "WHERE a.channel_type = 'line' AND m.direction = 'outbound' "
                        "AND m.status IN ('pending', 'unknown') AND m.next_attempt_at > now()")

    conv, _ = line.conversation()

    def held_message():
        # A pending outbound message whose creator holds its lease for an hour: it is in the
        # queue (scheduled) and stays there, since no retry worker can claim it meanwhile. (A
        # send failed through the connector would be retried and leave the queue within the
        # 10 s this test waits.)
        line.api.CreateOutbound(tenant_id=line.tenant, conversation_id=conv.conversation_id,
                                idempotency_key=harness.new_id(), request_fingerprint="fp",
                                content_text="held", lease_owner="holder", lease_seconds=3600)

    try:
        # A change, then the first scrape that shows it: a count made just now.
        held_message()
        counted = harness.wait_until(lambda: gauge() == in_db() and gauge(), 15,
                                     "a count that includes the first held message")
        # Another change at once: the scrapes of the next 10 s return the last count.
        held_message()
        assert in_db() != counted
        assert gauge() == counted, "a scrape within 10 s of the last count queried again"
        # Positive control: the next count sees the database as it is then. (The module's
        # retried LINE send may turn due meanwhile, so the figure is compared with the
        # database rather than with counted + 1.)
        try:
            harness.wait_until(lambda: gauge() == in_db(), 15, "the next count (10 s later)")
        except AssertionError as e:
            raise AssertionError(f"{e}: gauge {gauge()}, database {in_db()}, "
                                 f"last count {counted}") from None
    finally:
        db.run("UPDATE omnichat.messages SET status = 'failed', next_attempt_at = NULL "
               f"WHERE tenant_id = {sql_lit(line.tenant)} AND status IN ('pending', 'unknown')")
