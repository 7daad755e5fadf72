"""--check-config refuses the cursor key files that start-up refuses (it runs the same decoder),
naming the option and the problem, and never printing any part of the key."""
import base64
import os
import subprocess
import tempfile

import pytest

import harness

BIN = os.path.join(harness.BIN_DIR, "omnichat-persistence")
GOOD = base64.b64encode(bytes(range(32))).decode()

BAD = {
    "too_short": (base64.b64encode(b"k" * 31).decode(), "too short"),
    "not_base64": ("this is *not* base64!", "not base64"),
    "too_long": (base64.b64encode(os.urandom(300)).decode(), "longer than 256 bytes"),
}


def check(contents):
    d = tempfile.mkdtemp(prefix="omnichat-it-keys-")
    path = os.path.join(d, "cursor.key")
    with open(path, "w") as f:
        f.write(contents + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNICHAT_")}
    r = subprocess.run([BIN, "--check-config", "--database-url", "dbname=omnichat",
                        "--cursor-key-file", path], capture_output=True, text=True,
                       timeout=30, env=env)
    return r.returncode, r.stdout + r.stderr


def test_good_cursor_key_is_ok():
    rc, out = check(GOOD)
    assert rc == 0 and "configuration ok" in out, out


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_cursor_key_is_refused_by_check_config(case):
    contents, why = BAD[case]
    rc, out = check(contents)
    assert rc == 1, out
    assert "--cursor-key-file" in out and why in out, out
    assert contents not in out


def test_start_up_refuses_what_check_config_refuses():
    # Without --check-config the same file stops start-up as an invalid configuration.
    d = tempfile.mkdtemp(prefix="omnichat-it-keys-")
    path = os.path.join(d, "cursor.key")
    with open(path, "w") as f:
        f.write(BAD["too_short"][0] + "\n")
    r = subprocess.run([BIN, "--database-url", "dbname=omnichat", "--grpc-listen", "127.0.0.1:0",
                        "--admin-listen", "", "--cursor-key-file", path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "--cursor-key-file" in r.stderr and "too short" in r.stderr, r.stderr
