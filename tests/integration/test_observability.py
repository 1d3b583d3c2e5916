"""The shipped dashboard and alerting rules against a live service: every metric they name is
in a real /metrics scrape of a running pipeline; a real Prometheus (Debian's package) scrapes
that pipeline, loads the rules and answers every dashboard query; promtool accepts the rules,
their unit tests and the compose stack's Prometheus config.

The Prometheus and promtool parts skip when the binaries are absent (CI installs the Debian
package `prometheus`)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kit import (
    committed_total,
    fresh_settings,
    ids_events,
    produce,
    running,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "outrider.json"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
METRIC_RE = re.compile(r"\boutrider_[a-zA-Z0-9_:]*")
# Grafana's variables, as Grafana would substitute them for a query
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$instance": ".*",
}


def shipped_queries() -> dict[str, str]:
    """Every PromQL expression in deploy/: dashboard panels and variables, alerting rules."""
    out: dict[str, str] = {}
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out[f"variable {var['name']}"] = var["definition"]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            out[f"rule {rule.get('alert') or rule.get('record')}"] = rule["expr"]
    return out


BAD = [b"oops", b"[]", b'{"kind": "nope"}']
TOTAL = 2000 + 500 + len(BAD)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _sample_names(body: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(body) for s in fam.samples}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A pipeline that has scored normal and odd events, dead-lettered bad ones and written a
    checkpoint; its /metrics stays served for the module's tests."""
    s = fresh_settings(
        kafka_bootstrap,
        tmp_path_factory.mktemp("observability"),
        calibration_min_samples=100,
        batch_max_events=500,
        checkpoint_interval_s=0.5,
    )
    produce(kafka_bootstrap, s.events_topic, ids_events(1, 2000))
    with running(s) as pipeline:
        port = pipeline.metrics.serve(0)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == 2000, 120
        )
        produce(kafka_bootstrap, s.events_topic, ids_events(2001, 500, odd_every=100) + BAD)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == TOTAL, 120
        )
        assert wait_until(lambda: "outrider_checkpoints_total{" in _scrape(port), 30)
        yield {"port": port, "settings": s}


def test_every_dashboard_and_rule_metric_is_in_the_live_scrape(live: dict[str, Any]) -> None:
    body = _scrape(live["port"])
    scraped = _sample_names(body)
    assert "outrider_alerts_total" in scraped, "the odd events raised alerts"
    assert "outrider_dead_letters_total" in scraped
    queries = shipped_queries()
    assert len(queries) > 20
    missing = {
        where: sorted(set(METRIC_RE.findall(expr)) - scraped)
        for where, expr in queries.items()
        if set(METRIC_RE.findall(expr)) - scraped
    }
    assert not missing, f"queries name metrics the service does not export: {missing}"
    for where, expr in queries.items():
        assert METRIC_RE.search(expr) or re.search(r"\bup\{", expr), where


# -- a real Prometheus ------------------------------------------------------------------------


def _prom_get(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in re.sub(r"\{\{.*?\}\}", "", expr), f"unsubstituted variable in {expr}"
    return expr


def test_real_prometheus_scrapes_the_service(live: dict[str, Any], tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package `prometheus`; CI installs it)")
    web = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "outrider-scorer",
                        "static_configs": [{"targets": [f"127.0.0.1:{live['port']}"]}],
                    }
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{web}"
    try:
        consumed: list[float] = []

        def scraped() -> bool:
            try:
                data = _prom_get(base, "/api/v1/query", query="outrider_events_consumed_total")
            except OSError:
                return False
            consumed[:] = [float(r["value"][1]) for r in data["data"]["result"]]
            return bool(consumed)

        assert wait_until(scraped, 60, 0.5), log.read_text()[-3000:]
        assert consumed == [TOTAL]
        up = _prom_get(base, "/api/v1/query", query='up{job="outrider-scorer"}')
        assert [r["value"][1] for r in up["data"]["result"]] == ["1"]

        # the rules load and evaluate without errors
        def rules_evaluated() -> bool:
            groups = _prom_get(base, "/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return bool(rules) and all(r.get("lastEvaluation", "").startswith("2") for r in rules)

        assert wait_until(rules_evaluated, 30, 0.5)
        groups = _prom_get(base, "/api/v1/rules")["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"]}
        assert set(loaded) == {
            r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        }
        assert all(r["health"] == "ok" for r in loaded.values()), loaded
        # every dashboard query is valid PromQL here (Grafana's variables substituted)
        time.sleep(2.5)  # a few more scrapes, so rate() has points to work on
        for where, expr in shipped_queries().items():
            if where.startswith("variable"):
                continue  # label_values() is Grafana's, not PromQL
            answer = _prom_get(base, "/api/v1/query", query=_substitute(expr))
            assert answer["status"] == "success", (where, answer)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- promtool ---------------------------------------------------------------------------------


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; CI installs it)")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


def test_promtool_accepts_the_rules_and_their_unit_tests() -> None:
    checked = _promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool("test", "rules", str(RULES.with_name("rules_test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    checked = _promtool("check", "config", str(RULES.with_name("prometheus.yml")))
    assert checked.returncode == 0, checked.stdout + checked.stderr
