"""The configuration the Helm chart gives each container is one the real binaries accept.

helm/omnichat configures the services through OMNICHAT_* environment variables and mounted
files. A misspelt variable would be ignored silently by the services (the environment is read
per known option), and a value they reject would only show on a cluster. So for the default and
the production values: render the chart with the pinned helm (scripts/helm-test.sh --tools),
take each container's command, arguments and environment, check every variable name against
the binary's own --help, give every mounted file a valid stand-in, and run the binary with
--check-config, which validates every option as start-up does (files read, keys decoded, TLS
pair matched) and exits 0 only when there is no problem.
"""

import base64
import os
import re
import subprocess

import pytest
import yaml

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "omnichat")
VALUES = {
    "default": [],
    "production": ["-f", os.path.join(CHART, "ci", "production-values.yaml")],
}


@pytest.fixture(scope="module")
def helm_bin():
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "helm-test.sh"), "--tools"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"could not get the pinned helm:\n{r.stderr}"
    return os.path.join(r.stdout.strip(), "bin", "helm")


def containers(helm_bin, values):
    out = subprocess.run([helm_bin, "template", "oc", CHART, "--namespace", "omnichat",
                          *VALUES[values]], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    found = []
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] in ("Deployment", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                found.append((doc["metadata"]["name"], c))
    return found


def env_names_of(program):
    r = subprocess.run([os.path.join(harness.BIN_DIR, program), "--help"], capture_output=True,
                       text=True, timeout=30)
    names = set(re.findall(r"\bOMNICHAT_[A-Z0-9_]+\b", r.stdout))
    assert len(names) > 10, r.stdout  # the help was read
    return names


def stand_in(path, work, certs):
    """A local file with valid contents for a path the chart mounts."""
    base = os.path.basename(path)
    if base in ("tls.crt", "tls.key", "ca.crt"):
        return {"tls.crt": certs.crt("svc"), "tls.key": certs.key("svc"), "ca.crt": certs.ca}[base]
    contents = {
        "database-url": "host=127.0.0.1 port=5432 dbname=omnichat user=omnichat_app password=x",
        "cursor.key": base64.b64encode(os.urandom(32)).decode(),
        "vault.keys": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
        "app-secret": "0123456789abcdef0123456789abcdef",
        "verify-token": "a-verify-token",
    }[base]
    local = os.path.join(work, path.strip("/").replace("/", "_"))
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(contents + "\n")
    return local


@pytest.mark.parametrize("values", sorted(VALUES))
def test_chart_configuration_passes_the_binaries_own_check(helm_bin, values, tmp_path):
    work = str(tmp_path)
    certs = harness.Certs(os.path.join(work, "certs")).make("svc")
    checked = []
    for name, c in containers(helm_bin, values):
        (program,) = c["command"]
        known = env_names_of(program)
        env = harness.child_env(strip_omnichat=True)
        mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
        for e in c["env"]:
            assert e["name"] in known, f"{name}: {e['name']} is not an option of {program}"
            if "valueFrom" in e:
                assert e["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, e
                value = f"{name}-5d8f7c9b6d-x2x7q"  # what the pod's name looks like
            elif e["name"].endswith("_FILE"):
                assert os.path.dirname(e["value"]) in mounted, e  # the file is mounted there
                value = stand_in(e["value"], work, certs)
            else:
                value = e["value"]
            env[e["name"]] = value
        r = subprocess.run([os.path.join(harness.BIN_DIR, program), *c.get("args", []),
                            "--check-config"], capture_output=True, text=True, timeout=60,
                           env=env)
        assert r.returncode == 0, f"{name} ({values}):\n{r.stdout}\n{r.stderr}"
        checked.append(name)
    assert sorted(checked) == sorted(["oc-omnichat-persistence", "oc-omnichat-connector-line",
                                      "oc-omnichat-connector-meta", "oc-omnichat-migrate"])


def test_check_config_catches_what_the_test_relies_on(helm_bin):
    # The control: the same run reports a value the binary refuses, so a pass above means the
    # chart's values were checked.
    (_, c), *_ = [x for x in containers(helm_bin, "default") if x[0].endswith("persistence")]
    env = harness.child_env(strip_omnichat=True)
    env.update({e["name"]: e["value"] for e in c["env"] if not e["name"].endswith("_FILE")})
    env["OMNICHAT_WORKERS"] = "0"
    env["OMNICHAT_DATABASE_URL"] = "host=127.0.0.1 dbname=omnichat"
    r = subprocess.run([os.path.join(harness.BIN_DIR, "omnichat-persistence"), "serve",
                        "--check-config"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1, r
    assert "OMNICHAT_WORKERS: must be between 1 and 512" in r.stderr
    assert "OMNICHAT_WORKERS" in env_names_of("omnichat-persistence")
