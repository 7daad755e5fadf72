#!/usr/bin/python3
"""The configuration reference of each service, read from its own option table.

Every service prints its option table with --help (oc_config_usage in common/src/config.c). This
script parses that output into rows (flag, environment variable, default, range, help) so that
docs/operations.md can be checked against the binaries (tests/integration/
test_config_reference.py) and new rows can be generated instead of typed:

    scripts/config-reference.py build/bin/omnichat-connector-meta    # markdown rows
"""
import re
import subprocess
import sys

# "  --name=<type>   OMNICHAT_NAME   (default: x)   help text [min..max]"
LINE = re.compile(
    r"^  (?P<flag>--[a-z0-9-]+)(?:=<\w+>|\[=<\w+>\])\s+(?P<env>OMNICHAT_[A-Z0-9_]+)\s+"
    r"\((?:default: (?P<default>[^)]*)|(?P<required>required)|(?P<none>no default))\)"
    r"(?:\s{2,}(?P<help>.*?))?\s*$")
RANGE = re.compile(r"\s*\[(-?\d+)\.\.(-?\d+)\]$")


def default_cell(m):
    """How the reference writes a default: `value`, empty, required, or – (none)."""
    if m.group("required"):
        return "required"
    if m.group("none"):
        return "–"
    if m.group("default") == "":
        return "empty"
    return "`%s`" % m.group("default")


def options(binary):
    """The rows of binary --help, in table order: dicts with flag, env, default, range, help."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        if not line.startswith("  --"):
            continue
        m = LINE.match(line)
        if m is None:
            raise ValueError("cannot parse --help line of %s: %r" % (binary, line))
        help_text = m.group("help") or ""
        rng = ""
        r = RANGE.search(help_text)
        if r:
            rng = "%s..%s" % (r.group(1), r.group(2))
            help_text = help_text[:r.start()]
        rows.append({"flag": "`%s`" % m.group("flag"), "env": "`%s`" % m.group("env"),
                     "default": default_cell(m), "range": rng, "help": help_text})
    if not rows:
        raise ValueError("%s --help listed no options" % binary)
    return rows


def main(argv):
    if len(argv) != 2:
        print("usage: scripts/config-reference.py <service binary>", file=sys.stderr)
        return 2
    print("| flag | environment | default | range | meaning |")
    print("|---|---|---|---|---|")
    for r in options(argv[1]):
        print("| %s | %s | %s | %s | %s |" % (r["flag"], r["env"], r["default"], r["range"],
                                               r["help"].replace("|", "\\|")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
