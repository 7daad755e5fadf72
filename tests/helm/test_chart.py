"""The Helm chart helm/omnichat, with the real helm and the Kubernetes API schemas.

Run by scripts/helm-test.sh, which installs the pinned tools and sets OMNICHAT_HELM_TOOLS.
Each check that something is absent or rejected also shows that the same check finds it where
it must be (the production values, a manifest broken on purpose).
"""

import copy
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "omnichat"
PRODUCTION = CHART / "ci" / "production-values.yaml"
BAD = CHART / "ci" / "bad-values.yaml"
TOOLS = Path(os.environ.get("OMNICHAT_HELM_TOOLS", "/nonexistent"))
HELM = TOOLS / "bin" / "helm"
RELEASE, NAMESPACE = "oc", "omnichat"
FULL = f"{RELEASE}-omnichat"

# name, gRPC port, HTTP port name and number, program
SERVICES = {
    "persistence": (50051, "admin", 8080, "omnichat-persistence"),
    "connector-line": (50052, "http", 8081, "omnichat-connector-line"),
    "connector-meta": (50053, "http", 8082, "omnichat-connector-meta"),
}
VALUES = {"default": [], "production": ["-f", str(PRODUCTION)]}

if not HELM.exists():
    pytest.fail(
        "OMNICHAT_HELM_TOOLS does not hold bin/helm: run scripts/helm-test.sh",
        pytrace=False,
    )


def helm(*args, check=True):
    r = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def render(*extra):
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra).stdout
    return [d for d in yaml.safe_load_all(out) if d]


_rendered = {}


def manifests(values):
    if values not in _rendered:
        _rendered[values] = render(*VALUES[values])
    return copy.deepcopy(_rendered[values])


def kinds(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployment(docs, svc):
    return kinds(docs, "Deployment")[f"{FULL}-{svc}"]


def container(docs, svc):
    (c,) = deployment(docs, svc)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def validate(docs):
    """Runs tests/helm/validate.js over docs; returns (exit code, output)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([{"source": "test", "doc": d} for d in docs], f)
        path = f.name
    try:
        r = subprocess.run(
            ["node", str(ROOT / "tests" / "helm" / "validate.js"), path],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_PATH": str(TOOLS / "node_modules")},
        )
    finally:
        os.unlink(path)
    return r.returncode, r.stdout + r.stderr


# ---------- lint, render, API schemas ----------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_lint_strict_passes(values):
    r = helm("lint", "--strict", str(CHART), *VALUES[values])
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout, r.stdout


@pytest.mark.parametrize("values", sorted(VALUES))
def test_every_rendered_manifest_validates_against_the_api_schemas(values):
    docs = manifests(values)
    rc, out = validate(docs)
    assert rc == 0, out
    assert f"{len(docs)} valid, 0 invalid" in out, out
    assert out.count("\nok ") + out.startswith("ok ") == len(docs), out


def test_validator_rejects_unknown_fields_wrong_types_and_unknown_kinds():
    # The control for the test above: the same validator fails manifests broken on purpose.
    docs = manifests("production")
    dep = deployment(docs, "persistence")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["readinessProbe"]["httpGet"]["prot"] = 8080  # misspelt field
    c["ports"][0]["containerPort"] = "50051"  # wrong type
    (cert,) = [
        d for d in docs if d["kind"] == "Certificate" and "persistence" in d["metadata"]["name"]
    ]
    cert["spec"]["dnsName"] = ["x"]  # misspelt CRD field
    (sm,) = [d for d in docs if d["kind"] == "ServiceMonitor" and "persistence" in d["metadata"]["name"]]
    sm["spec"]["endpoints"][0]["interval"] = 30  # wrong type in a CRD
    unknown_kind = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    rc, out = validate([dep, cert, sm, unknown_kind])
    assert rc == 1, out
    assert "/spec/template/spec/containers/0/readinessProbe/httpGet/prot: unknown field" in out
    assert "/spec/template/spec/containers/0/ports/0/containerPort must be integer" in out
    assert "/spec/dnsName: unknown field" in out
    assert "/spec/endpoints/0/interval must be string" in out
    assert "no schema for example.com/v1 Widget" in out
    assert "0 valid, 4 invalid" in out


def test_schema_rejects_the_bad_values_file_for_each_reason():
    expected = [
        "(root): Additional property replicas is not allowed",
        "persistence: Additional property databasePassword is not allowed",
        "persistence.workers: Invalid type. Expected: integer, given: string",
        "persistence.shutdownGraceMs: Must be less than or equal to 600000",
        "connectorLine.replicaCount: Must be greater than or equal to 1",
        "tls.mode: Invalid type. Expected: string, given: boolean",
        'probes.readiness.type must be one of the following: "auto", "grpc", "http"',
        "networkPolicy.grpcAllowedFrom.0: Must have at least 1 properties",
        "tls.extraClientRoles.0: Must not validate the schema (not)",
    ]
    for cmd in (["lint", "--strict", str(CHART)], ["template", RELEASE, str(CHART)]):
        r = helm(*cmd, "-f", str(BAD), check=False)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert "don't meet the specifications of the schema" in out, out
        for reason in expected:
            assert reason in out, f"{cmd[0]}: {reason!r} not in:\n{out}"


def test_render_refuses_grpc_probes_with_mutual_tls():
    r = helm(
        "template", RELEASE, str(CHART), "--set", "tls.mode=secrets",
        "--set", "probes.readiness.type=grpc", check=False,
    )
    assert r.returncode != 0
    assert "probes.readiness.type: grpc cannot work with tls.mode secrets" in r.stderr
    # Control: the same setting renders without TLS.
    helm("template", RELEASE, str(CHART), "--set", "probes.readiness.type=grpc")


# ---------- workloads ----------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_one_deployment_and_service_per_service_with_their_ports(values):
    docs = manifests(values)
    services = kinds(docs, "Service")
    assert set(kinds(docs, "Deployment")) == {f"{FULL}-{s}" for s in SERVICES}
    for svc, (grpc_port, http_name, http_port, program) in SERVICES.items():
        c = container(docs, svc)
        assert c["command"] == [program]
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
            "grpc": grpc_port,
            http_name: http_port,
        }
        env = env_of(c)
        assert env["OMNICHAT_GRPC_LISTEN"] == f"0.0.0.0:{grpc_port}"
        listen = "OMNICHAT_ADMIN_LISTEN" if svc == "persistence" else "OMNICHAT_HTTP_LISTEN"
        assert env[listen] == f"0.0.0.0:{http_port}"
        s = services[f"{FULL}-{svc}"]
        assert {p["name"]: (p["port"], p["targetPort"]) for p in s["spec"]["ports"]} == {
            "grpc": (grpc_port, "grpc"),
            http_name: (http_port, http_name),
        }
        assert s["spec"]["selector"] == deployment(docs, svc)["spec"]["selector"]["matchLabels"]


def test_connectors_dial_the_headless_persistence_service_with_dns():
    docs = manifests("default")
    headless = kinds(docs, "Service")[f"{FULL}-persistence-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == (
        deployment(docs, "persistence")["spec"]["selector"]["matchLabels"]
    )
    target = f"dns:///{FULL}-persistence-headless.{NAMESPACE}.svc.cluster.local:50051"
    for svc in ("connector-line", "connector-meta"):
        assert env_of(container(docs, svc))["OMNICHAT_PERSISTENCE_TARGET"] == target
    # The client balances over the resolved addresses: every channel it makes carries the
    # round_robin service config (common/src/rpc_client.c, new_channel()).
    rpc = (ROOT / "common" / "src" / "rpc_client.c").read_text()
    new_channel = rpc[rpc.index("static grpc_channel *new_channel(") :]
    new_channel = new_channel[: new_channel.index("\n}\n")]
    assert '{\\"loadBalancingConfig\\":[{\\"round_robin\\":{}}]}' in new_channel
    assert "GRPC_ARG_SERVICE_CONFIG" in new_channel


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook_run_as_the_owner():
    docs = manifests("production")
    (job,) = kinds(docs, "Job").values()
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["command"] == ["omnichat-persistence"] and c["args"] == ["migrate"]
    env = env_of(c)
    path = env["OMNICHAT_DATABASE_URL_FILE"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vol = {v["name"]: v for v in spec["volumes"]}[mounts[os.path.dirname(path)]]
    assert vol["secret"]["secretName"] == "omnichat-database-owner"
    assert vol["secret"]["items"] == [
        {"key": "database-url", "path": os.path.basename(path)}
    ]
    assert int(env["OMNICHAT_STATEMENT_TIMEOUT_MS"]) == 600000
    # The services connect as the runtime login (through PgBouncer in these values).
    pc = container(docs, "persistence")
    pspec = deployment(docs, "persistence")["spec"]["template"]["spec"]
    pmounts = {m["mountPath"]: m["name"] for m in pc["volumeMounts"]}
    pvol = {v["name"]: v for v in pspec["volumes"]}[
        pmounts[os.path.dirname(env_of(pc)["OMNICHAT_DATABASE_URL_FILE"])]
    ]
    assert pvol["secret"]["secretName"] == "omnichat-database-runtime-pgbouncer"


# ---------- health and scaling ----------


def test_native_grpc_probes_without_tls():
    docs = manifests("default")
    for svc, (grpc_port, *_rest) in SERVICES.items():
        c = container(docs, svc)
        # Liveness and startup ask the "liveness" service (SERVING whenever the process
        # answers), readiness the whole server ("": follows the dependency).
        for probe, service in (("livenessProbe", "liveness"), ("readinessProbe", ""),
                               ("startupProbe", "liveness")):
            assert c[probe]["grpc"] == {"port": grpc_port, "service": service}, (svc, probe)
            assert "httpGet" not in c[probe]


def test_http_probes_of_the_grpc_self_check_with_mutual_tls():
    docs = manifests("production")
    for svc, (_grpc, http_name, *_rest) in SERVICES.items():
        c = container(docs, svc)
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": http_name}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": http_name}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": http_name}
        assert "grpc" not in c["readinessProbe"]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_prestop_pause_and_termination_grace_cover_the_shutdown(values):
    docs = manifests(values)
    for svc in SERVICES:
        c = container(docs, svc)
        pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 1
        env = env_of(c)
        grace_ms = int(env["OMNICHAT_SHUTDOWN_DRAIN_MS"]) + int(env["OMNICHAT_SHUTDOWN_GRACE_MS"])
        period = deployment(docs, svc)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period > pause + grace_ms / 1000, (svc, period, pause, grace_ms)
    # The exec form, for clusters before 1.30.
    c = container(render("--set", "lifecycle.preStopAction=exec"), "persistence")
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}


def test_resources_pdb_and_optional_hpa_and_servicemonitor():
    default, prod = manifests("default"), manifests("production")
    for svc in SERVICES:
        r = container(default, svc)["resources"]
        assert set(r) == {"requests", "limits"} and set(r["requests"]) == {"cpu", "memory"}
        pdb = kinds(default, "PodDisruptionBudget")[f"{FULL}-{svc}"]
        assert pdb["spec"]["selector"]["matchLabels"] == (
            deployment(default, svc)["spec"]["selector"]["matchLabels"]
        )
        hpa = kinds(prod, "HorizontalPodAutoscaler")[f"{FULL}-{svc}"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULL}-{svc}"
        assert "replicas" not in deployment(prod, svc)["spec"]  # left to the autoscaler
        assert deployment(default, svc)["spec"]["replicas"] == 2
        sm = kinds(prod, "ServiceMonitor")[f"{FULL}-{svc}"]
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        # It selects exactly the Service with the metrics port (not the headless one).
        want = sm["spec"]["selector"]["matchLabels"].items()
        selected = [n for n, s in kinds(prod, "Service").items()
                    if want <= s["metadata"]["labels"].items()]
        assert selected == [f"{FULL}-{svc}"], selected
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
        assert sm["spec"]["endpoints"][0]["port"] == SERVICES[svc][1]
    # Optional: absent by default (present with the production values, above).
    assert not kinds(default, "HorizontalPodAutoscaler")
    assert not kinds(default, "ServiceMonitor")


# ---------- security ----------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_pods_and_containers_run_locked_down(values):
    docs = manifests(values)
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    assert len(pods) == 4
    for spec in pods:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int)
            assert sc["runAsUser"] > 0
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def secret_files(docs, svc):
    """{env name: (Secret name, key, mode)} for every *_FILE variable of a service."""
    spec = deployment(docs, svc)["spec"]["template"]["spec"]
    c = container(docs, svc)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    out = {}
    for name, value in env_of(c).items():
        if not name.endswith("_FILE"):
            continue
        m = mounts[os.path.dirname(value)]
        assert m["readOnly"] is True and "subPath" not in m
        sec = vols[m["name"]]["secret"]
        items = {i["path"]: i["key"] for i in sec["items"]}
        out[name] = (sec["secretName"], items[os.path.basename(value)], sec["defaultMode"])
    return out


def test_every_secret_is_a_file_from_an_existing_secret():
    docs = manifests("default")
    assert secret_files(docs, "persistence") == {
        "OMNICHAT_DATABASE_URL_FILE": ("omnichat-database-runtime", "database-url", 0o400),
        "OMNICHAT_CURSOR_KEY_FILE": ("omnichat-cursor-key", "cursor.key", 0o400),
    }
    assert secret_files(docs, "connector-line") == {
        "OMNICHAT_VAULT_KEY_FILE": ("omnichat-vault-key", "vault.keys", 0o400),
    }
    assert secret_files(docs, "connector-meta") == {
        "OMNICHAT_VAULT_KEY_FILE": ("omnichat-vault-key", "vault.keys", 0o400),
        "OMNICHAT_APP_SECRET_FILE": ("omnichat-meta-app", "app-secret", 0o400),
        "OMNICHAT_VERIFY_TOKEN_FILE": ("omnichat-meta-app", "verify-token", 0o400),
    }
    # No secret travels as a plain variable, and no Secret object is made by the chart.
    for svc in SERVICES:
        env = env_of(container(docs, svc))
        assert "OMNICHAT_DATABASE_URL" not in env
        assert not [n for n in env if re.search("PASSWORD|SECRET$|TOKEN$|KEY$", n)], env
    assert not kinds(docs, "Secret")


def test_mutual_tls_files_and_cert_manager_certificates():
    docs = manifests("production")
    certs = kinds(docs, "Certificate")
    for svc in SERVICES:
        files = secret_files(docs, svc)
        for var, key in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
            assert files[f"OMNICHAT_TLS_{var}_FILE"] == (f"{FULL}-{svc}-tls", key, 0o400)
        cert = certs[f"{FULL}-{svc}"]["spec"]
        assert cert["secretName"] == f"{FULL}-{svc}-tls"
        assert "localhost" in cert["dnsNames"]  # the self-probe checks it
        assert cert["dnsNames"][0] == f"{FULL}-{svc}"  # the identity
        assert {"server auth", "client auth"} <= set(cert["usages"])
        assert cert["issuerRef"] == {
            "name": "omnichat-internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io",
        }
    assert (
        f"{FULL}-persistence-headless.{NAMESPACE}.svc.cluster.local"
        in certs[f"{FULL}-persistence"]["spec"]["dnsNames"]
    )
    roles = env_of(container(docs, "persistence"))["OMNICHAT_TLS_CLIENT_ROLES"].split(",")
    assert roles == [
        f"{FULL}-connector-line=connector", f"{FULL}-connector-meta=connector",
        "inbox-web=inbox", "omnichatctl=operator",
    ]
    # Control: without TLS there are no certificate files and no Certificates.
    plain = manifests("default")
    assert not kinds(plain, "Certificate")
    assert not [n for n in env_of(container(plain, "persistence")) if n.startswith("OMNICHAT_TLS")]


def test_network_policies_admit_only_the_expected_peers():
    docs = manifests("production")
    pols = kinds(docs, "NetworkPolicy")
    assert len(pols) == 3
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    ingress_ns = {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    ingress_pods = {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}
    inbox = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "inbox"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "inbox-web"}},
    }
    for svc, (_grpc, http_name, *_rest) in SERVICES.items():
        spec = pols[f"{FULL}-{svc}"]["spec"]
        assert spec["podSelector"] == deployment(docs, svc)["spec"]["selector"]
        assert spec["policyTypes"] == ["Ingress"]
        rules = {r["ports"][0]["port"]: r["from"] for r in spec["ingress"]}
        assert set(rules) == {"grpc", http_name}
        assert rules["grpc"] == [{"podSelector": {}}, inbox]
        http_from = [{"namespaceSelector": monitoring}]
        if svc != "persistence":
            http_from.append({"namespaceSelector": ingress_ns, "podSelector": ingress_pods})
        assert rules[http_name] == http_from, svc
    # Control: they can be turned off.
    off = render("-f", str(PRODUCTION), "--set", "networkPolicy.enabled=false")
    assert not kinds(off, "NetworkPolicy")


def test_ingress_routes_only_the_two_webhook_paths():
    docs = manifests("production")
    (ing,) = kinds(docs, "Ingress").values()
    (rule,) = ing["spec"]["rules"]
    paths = {
        p["path"]: (p["pathType"], p["backend"]["service"]["name"], p["backend"]["service"]["port"])
        for p in rule["http"]["paths"]
    }
    assert paths == {
        "/webhooks/line/": ("Prefix", f"{FULL}-connector-line", {"name": "http"}),
        "/webhooks/meta": ("Exact", f"{FULL}-connector-meta", {"name": "http"}),
    }
    assert ing["spec"]["tls"] == [{"hosts": ["hooks.example.com"], "secretName": "hooks-example-com-tls"}]
    assert not kinds(manifests("default"), "Ingress")


def test_every_values_key_is_commented():
    # Kubernetes objects passed through as they are (resources, label selectors) are described
    # by the comment on their parent key.
    passthrough = {"resources", "requests", "limits", "namespaceSelector", "podSelector",
                   "matchLabels"}
    stack, prev, missing, keys = [], "", [], 0
    for n, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        m = re.match(r"^(\s*)([A-Za-z][\w./-]*):(.*)$", line)
        if m:
            keys += 1
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1] if stack else ""
            commented = prev.lstrip().startswith("#") or "#" in m.group(3)
            if not commented and parent not in passthrough:
                missing.append(f"values.yaml:{n}: {m.group(2)}")
            stack.append((indent, m.group(2)))
        if line.strip():
            prev = line
    assert keys > 100, keys  # the scan saw the file's keys
    assert not missing, "keys without a comment:\n" + "\n".join(missing)
