"""docs/operations.md's configuration reference matches each service's own option table.

Each service prints its option table with --help (the table the service loads its configuration
from); scripts/config-reference.py parses it. The reference in docs/operations.md must list the
same options with the same environment variable, default and range, and a meaning for each."""
import importlib.util
import os
import re

import pytest

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(ROOT, "docs", "operations.md")
SERVICES = ["omnichat-persistence", "omnichat-connector-line", "omnichat-connector-meta"]

_spec = importlib.util.spec_from_file_location(
    "config_reference", os.path.join(ROOT, "scripts", "config-reference.py"))
config_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(config_reference)


def doc_rows(text, service):
    """The rows of the table under '### Configuration reference: `service`', by flag."""
    head = "### Configuration reference: `%s`" % service
    assert text.count(head) == 1, "docs/operations.md needs exactly one heading %r" % head
    section = text.split(head, 1)[1]
    section = re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.M)[0]
    rows = {}
    in_table = False
    for line in section.splitlines():
        if line.startswith("| flag | environment | default | range | meaning |"):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            break
        if line.startswith("|---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 5, "%s: malformed row %r" % (service, line)
        flag, env, default, rng, meaning = cells
        assert flag not in rows, "%s: %s documented twice" % (service, flag)
        rows[flag] = {"env": env, "default": default, "range": rng, "meaning": meaning}
    return rows


def compare(binary_rows, documented):
    """Every difference between the binary's table and the documented one, as sentences."""
    problems = []
    seen = set()
    for r in binary_rows:
        flag = r["flag"]
        seen.add(flag)
        d = documented.get(flag)
        if d is None:
            problems.append("%s is not documented" % flag)
            continue
        for key in ("env", "default", "range"):
            if d[key] != r[key]:
                problems.append("%s: %s is %r in the doc, %r in the binary"
                                % (flag, key, d[key], r[key]))
        if not d["meaning"]:
            problems.append("%s: no meaning given" % flag)
    for flag in documented:
        if flag not in seen:
            problems.append("%s is documented but the binary has no such option" % flag)
    return problems


@pytest.mark.parametrize("service", SERVICES)
def test_reference_matches_the_option_table(service):
    binary_rows = config_reference.options(os.path.join(harness.BIN_DIR, service))
    with open(DOC) as f:
        documented = doc_rows(f.read(), service)
    # The parse saw the whole table: at least the options every service has.
    assert {"`--log-level`", "`--grpc-listen`", "`--shutdown-grace-ms`"} <= set(documented)
    assert compare(binary_rows, documented) == []


def test_the_check_finds_a_drifted_reference():
    """Positive control: a changed default, a missing option and a stale one are all reported."""
    binary_rows = config_reference.options(os.path.join(harness.BIN_DIR, SERVICES[0]))
    with open(DOC) as f:
        documented = doc_rows(f.read(), SERVICES[0])
    documented["`--workers`"] = dict(documented["`--workers`"], default="`33`")
    del documented["`--log-level`"]
    documented["`--gone`"] = {"env": "`OMNICHAT_GONE`", "default": "–", "range": "",
                              "meaning": "removed"}
    problems = compare(binary_rows, documented)
    assert any(p.startswith("`--workers`: default") for p in problems), problems
    assert "`--log-level` is not documented" in problems
    assert "`--gone` is documented but the binary has no such option" in problems
