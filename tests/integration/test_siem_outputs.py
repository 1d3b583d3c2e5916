"""What a SIEM reads, through the real broker: OCSF Detection Findings (create, then an update
per batch, keyed by finding uid, counting every alert), ECS documents, CloudEvents headers and
trace context carried through."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from service.replay import encode_record, read_records
from tests.integration.kit import (
    committed_total,
    consume_all,
    fresh_settings,
    produce,
    running,
    wait_until,
)

ocsf_events = pytest.importorskip("ocsf.v1_7_0.events", reason="pydantic-ocsf not installed")

TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_findings_ecs_and_cloudevents_on_an_ait_replay(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    rows = read_records(datasets / "ait-ads" / "wardbeck_alerts.csv.gz")[:20_000]
    s = fresh_settings(kafka_bootstrap, tmp_path, batch_max_events=1000)
    produce(
        kafka_bootstrap,
        s.events_topic,
        [encode_record(r) for r in rows],
        headers=[("traceparent", TRACE)],
    )
    with running(s):
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == len(rows), 240
        )

    alerts = consume_all(kafka_bootstrap, s.alerts_topic, 1, timeout_s=20)
    findings = consume_all(kafka_bootstrap, s.findings_topic, 1, timeout_s=60)
    ecs = consume_all(kafka_bootstrap, s.ecs_topic, len(alerts), timeout_s=60)
    assert alerts and len(ecs) == len(alerts)
    # one finding record per group and batch: fewer than alerts, and together they count all
    assert 0 < len(findings) < len(alerts)
    alerts_of_group = Counter(orjson.loads(rec.value)["group_id"] for rec in alerts)

    for rec in alerts:
        h = dict(rec.headers)
        assert h["ce_specversion"] == b"1.0" and h["ce_type"] == b"dev.outrider.alert.v1"
        assert h["ce_id"] == orjson.loads(rec.value)["alert_id"].encode()
        assert h["content-type"] == b"application/json" and h["ce_traceparent"] == TRACE

    by_uid: dict[str, list[dict]] = defaultdict(list)
    for rec in findings:
        finding = orjson.loads(rec.value)
        ocsf_events.DetectionFinding.model_validate(finding)
        uid = finding["finding_info"]["uid"]
        assert rec.key == uid.encode(), "keyed by finding uid: sinks upsert idempotently"
        assert dict(rec.headers)["ce_traceparent"] == TRACE
        assert finding["class_uid"] == 2004 and finding["category_uid"] == 2
        assert finding["type_uid"] == 2004 * 100 + finding["activity_id"]
        by_uid[uid].append(finding)
    assert by_uid.keys() == alerts_of_group.keys(), "every group of alerts has its finding"
    for uid, seq in by_uid.items():
        assert seq[0]["activity_id"] == 1, "the first alert of a group creates its finding"
        assert all(f["activity_id"] == 2 for f in seq[1:]), "later batches update it"
        counts = [f["count"] for f in seq]
        assert counts == sorted(set(counts)), "each update folds in more alerts"
        assert counts[-1] == alerts_of_group[uid], "the finding counts every alert of its group"
        newest = {e["uid"] for e in seq[-1]["evidences"]}
        assert seq[-1]["unmapped"]["outrider"]["alert_id"] in newest
    assert any(len(seq) > 1 for seq in by_uid.values())

    for rec in ecs:
        doc = orjson.loads(rec.value)
        assert doc["event"]["kind"] == "alert"
        assert doc["event"]["severity"] in {21, 47, 73, 99}
        assert not any(k.startswith("kibana.") for k in doc)
