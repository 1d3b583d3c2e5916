"""Alert sensitivity changed at run time through the models topic, without a restart."""

from __future__ import annotations

from pathlib import Path

import orjson

from service.cli import main
from tests.integration.kit import (
    committed_total,
    consume_all,
    fresh_settings,
    ids_events,
    produce,
    running,
    wait_until,
)


def test_a_kinds_threshold_changes_while_scoring(kafka_bootstrap: str, tmp_path: Path) -> None:
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=100, batch_max_events=500)
    produce(kafka_bootstrap, s.events_topic, ids_events(0, 2000))
    common = ["--kafka-bootstrap", kafka_bootstrap, "--models-topic", s.models_topic]
    with running(s) as pipeline:
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == 2000
        )
        assert pipeline.scorer.threshold("ids_alert") == 99.0
        quiet = len(consume_all(kafka_bootstrap, s.alerts_topic, 0, timeout_s=3))
        assert main(["sensitivity", "--kind", "ids_alert=0", *common]) == 0
        assert main(["sensitivity", "--kind", "martian=5", *common]) == 0  # dead-lettered
        assert wait_until(lambda: pipeline.scorer.threshold("ids_alert") == 0.0, 30)
        produce(kafka_bootstrap, s.events_topic, ids_events(2000, 300))
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == 2300
        )
    alerts = consume_all(kafka_bootstrap, s.alerts_topic, quiet + 300, timeout_s=30)
    assert len(alerts) - quiet == 300, "at percentile 0 every new event alerts"
    dead = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.dead_letter_topic, 1)]
    assert [d["reason"] for d in dead] == ["unknown_kind"]
    assert main(["sensitivity", "--kind", "ids_alert=101", *common]) == 2  # refused up front
