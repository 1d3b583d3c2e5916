"""Metric names follow Prometheus conventions and the service exports them over HTTP."""

from __future__ import annotations

import urllib.request

from prometheus_client import Counter, Histogram

from service.metrics import Metrics


def test_names_units_and_labels_follow_conventions() -> None:
    m = Metrics()
    for metric in vars(m).values():
        if not hasattr(metric, "_name"):
            continue
        name = metric._name
        assert name.startswith("outrider_"), name
        if isinstance(metric, Histogram):
            assert name.endswith(("_seconds", "_events", "_ratio")), name
        assert not set(metric._labelnames) & {"value", "host", "user", "ip", "entity"}
    assert isinstance(m.events_consumed, Counter)


def test_metrics_are_served_over_http() -> None:
    m = Metrics()
    m.dead_letters.labels("malformed_json").inc(3)
    port = m.serve(0)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'outrider_dead_letters_total{reason="malformed_json"} 3.0' in body
