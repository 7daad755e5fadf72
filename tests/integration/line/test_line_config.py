"""Start-up validation of the connector's configuration (--check-config): lease versus
timeouts, the retry window under LINE's 24 h, the instance id within lease-owner limits."""
import base64
import os
import subprocess
import tempfile

import pytest

from line_harness import CONNECTOR_BIN, Connector, _env, write_vault_key_file


@pytest.fixture(scope="module")
def key_file():
    d = tempfile.mkdtemp(prefix="omnichat-it-line-config-")
    return write_vault_key_file(os.path.join(d, "vault.keys"))


def check(key_file, **settings):
    if not Connector.binary_present():
        pytest.exit("omnichat-connector-line not found (set OMNICHAT_BIN_DIR)", returncode=3)
    cmd = [CONNECTOR_BIN, "--check-config", "--vault-key-file", key_file]
    for k, v in settings.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=30)
    return r.returncode, r.stderr


def test_defaults_are_valid(key_file):
    rc, err = check(key_file)
    assert rc == 0, err


def test_lease_must_outlast_line_timeout_plus_two_persistence_timeouts(key_file):
    # The old rule (lease > LINE timeout) accepted this: 2 s lease, 5 s persistence calls.
    rc, err = check(key_file, lease_seconds=2, line_timeout_ms=500, persistence_timeout_ms=5000)
    assert rc == 1, err
    assert "--lease-seconds" in err and "--persistence-timeout-ms" in err, err
    rc, err = check(key_file, lease_seconds=4, line_timeout_ms=500, persistence_timeout_ms=1750)
    assert rc == 1, err  # 4000 ms is not longer than 500 + 2 x 1750
    rc, err = check(key_file, lease_seconds=4, line_timeout_ms=500, persistence_timeout_ms=1749)
    assert rc == 0, err
    rc, err = check(key_file, lease_seconds=30, line_timeout_ms=10000, persistence_timeout_ms=10000)
    assert rc == 1, err


def test_retry_window_stays_under_24h_with_lease_and_timeout(key_file):
    # 23 h + up to 1 h of lease + 2 min of LINE timeout could outlive LINE's 24 h retry key.
    rc, err = check(key_file, retry_window_s=82800)
    assert rc == 1, err
    assert "--retry-window-s" in err, err
    rc, err = check(key_file, retry_window_s=82620, lease_seconds=3600, line_timeout_ms=120000)
    assert rc == 0, err


def test_instance_id_leaves_room_for_a_uuid_in_the_lease_owner(key_file):
    rc, err = check(key_file, instance_id="i" * 92)  # + ":" + 36 > 128
    assert rc == 1, err
    assert "--instance-id" in err, err
    rc, err = check(key_file, instance_id="i" * 91)
    assert rc == 0, err


BAD_VAULT_FILES = {
    # name: (contents, mode, words of the problem)
    "short_key": ("k1:" + base64.b64encode(b"x" * 16).decode() + "\n", 0o600,
                  "key must be 32 bytes"),
    "no_separator": ("just-some-text\n", 0o600, "expected key_id:base64_key"),
    "not_base64": ("k1:!!!!not-base64!!!!\n", 0o600, "line 1"),
    "comments_only": ("# no key here\n\n", 0o600, "no key"),
    "duplicate_id": ("k1:" + base64.b64encode(b"a" * 32).decode() + "\n"
                     "k1:" + base64.b64encode(b"b" * 32).decode() + "\n", 0o600, "line 2"),
    "world_writable": ("k1:" + base64.b64encode(b"a" * 32).decode() + "\n", 0o602,
                       "writable"),
}


@pytest.mark.parametrize("case", sorted(BAD_VAULT_FILES))
def test_check_config_loads_the_vault_key_file_like_start_up(case):
    contents, mode, words = BAD_VAULT_FILES[case]
    d = tempfile.mkdtemp(prefix="omnichat-it-line-vault-")
    path = os.path.join(d, "vault.keys")
    with open(path, "w") as f:
        f.write(contents)
    os.chmod(path, mode)
    rc, err = check(path)
    assert rc == 1, err
    assert "--vault-key-file" in err and words in err, err
    # Nothing of the key material is echoed.
    for line in contents.splitlines():
        if ":" in line:
            assert line.split(":", 1)[1] not in err, err
