#!/usr/bin/env python3
"""check-log-args.py: rejects log calls whose arguments could have a side effect.

Usage: scripts/check-log-args.py [FILE...]   (default: every *.c and *.h under common/ services/
       tools/; exits 1 and names each offending call)

OC_LOG and its level wrappers (OC_DEBUG, OC_INFO, OC_WARN, OC_ERROR) evaluate their arguments
only when the level is enabled, so an argument that waits, allocates or changes state silently
stops doing so at another log level (a service once waited for SIGTERM inside OC_INFO and exited
at once under --log-level warn). The rule is mechanical so that a reviewer need not spot it:

  * every call inside a log macro's arguments must name a function of ALLOWED below: field
    builders and pure accessors that read their arguments and return, nothing else;
  * no assignment (=, +=, ...), increment or decrement may appear in the arguments.

A new pure accessor is added to ALLOWED with a word on why it is pure. Anything else is computed
into a local before the log call.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Production code only: tests/unit/common/test_log.c puts side effects in log arguments on
# purpose, to prove that they are not evaluated.
DIRS = ("common", "services", "tools")
LOG_MACROS = ("OC_LOG", "OC_DEBUG", "OC_INFO", "OC_WARN", "OC_ERROR")

# Calls allowed inside log arguments: none of them waits, allocates, or changes state.
ALLOWED = {
    # field builders (compound literals)
    "OC_LS", "OC_LI", "OC_LD", "OC_LB",
    # operators that look like calls
    "sizeof", "_Alignof",
    # table look-ups returning static strings
    "oc_err_name", "oc_err_message", "oc_grpc_status_name", "oc_log_level_name",
    "curl_easy_strerror", "curl_multi_strerror", "conn_category_name",
    "conn_outcome_name", "PBE",
    # reads of their arguments, of a field or of a clock
    "strlen", "lsim_port", "atomic_load", "oc_mono_us",
}

CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
MUTATION = re.compile(r"(?<![=!<>])=(?!=)|\+\+|--|[-+*/%&|^]=|<<=|>>=")


def strip_comments_and_strings(text):
    """Blanks out comments and string/char literals, keeping offsets and newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * (j - i - 2) + c if j - i >= 2 else c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def log_calls(code):
    """Yields (offset, macro, argument text) of every log macro use in comment-free code."""
    pat = re.compile(r"\b(" + "|".join(LOG_MACROS) + r")\s*\(")
    for m in pat.finditer(code):
        # The macro definitions themselves (#define OC_INFO(...)) are not uses.
        line_start = code.rfind("\n", 0, m.start()) + 1
        if code[line_start:m.start()].lstrip().startswith("#"):
            continue
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[j], 0)
            j += 1
        yield m.start(), m.group(1), code[m.end():j - 1]


def check_file(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        code = strip_comments_and_strings(f.read())
    problems = []
    for off, macro, args in log_calls(code):
        line = code.count("\n", 0, off) + 1
        for call in CALL.finditer(args):
            name = call.group(1)
            if name not in ALLOWED and name not in LOG_MACROS:
                problems.append(f"{path}:{line}: {macro}: calls {name}() in its arguments "
                                f"(not evaluated when the level is off; compute it first)")
        if MUTATION.search(args):
            problems.append(f"{path}:{line}: {macro}: assigns in its arguments "
                            f"(not evaluated when the level is off)")
    return problems


def default_files():
    for d in DIRS:
        for base, dirs, files in os.walk(os.path.join(ROOT, d)):
            dirs[:] = [x for x in dirs if not x.startswith("build")]
            for name in sorted(files):
                if name.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(base, name), ROOT)


def main(argv):
    files = argv[1:]
    if not files:
        os.chdir(ROOT)
        files = sorted(default_files())
    problems = [p for f in files for p in check_file(f)]
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check-log-args: {len(problems)} log call(s) with side effects in their "
              f"arguments (see {os.path.basename(argv[0])})", file=sys.stderr)
        return 1
    print(f"check-log-args: {len(files)} files, log arguments free of side effects")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
