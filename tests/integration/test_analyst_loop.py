"""The analyst loop through the real broker: a benign verdict on the top benign group of an
AIT scenario fine-tunes the model; a look-alike (same alert type, another host) then scores
lower, every later alert names the new model version, the version is announced, and after a
restart the label store and the model come back."""

from __future__ import annotations

from pathlib import Path

import orjson

from service.app import Pipeline
from service.labels import label_command
from service.replay import encode_record, read_records
from tests.integration.kit import (
    benign_group_with_look_alike,
    committed_total,
    consume_all,
    fresh_settings,
    produce,
    running,
    wait_until,
)


def test_benign_verdict_sinks_a_look_alike_and_advances_the_model(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    rows = read_records(datasets / "ait-ads" / "russellmitchell_alerts.csv.gz")
    first, later = rows[:25_000], rows[25_000:30_000]
    s = fresh_settings(kafka_bootstrap, tmp_path, batch_max_events=1000, digest_interval_s=1.0)
    produce(kafka_bootstrap, s.events_topic, [encode_record(r) for r in first])
    with running(s) as pipeline:
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == len(first), 240
        )
        book = pipeline.groups
    version_before = pipeline.model.version

    # the analyst's pick: a benign group with a look-alike on another host
    ranked = book.ranked()
    pick, look_alike = benign_group_with_look_alike(kafka_bootstrap, s.alerts_topic, ranked)
    assert pick is not None, "no benign group with a look-alike on another host"
    types = ("name", "short", "ip", "host")
    row = tuple(look_alike.entities[t] for t in types)

    with running(s) as pipeline:  # restarted: the model comes back from its checkpoint
        assert pipeline.model.version == version_before
        before = float(pipeline.scorer.peek("ids_alert", [row])[0])
        label_command(
            s.kafka_client_config(),
            s.feedback_topic,
            pick.group_id,
            "benign",
            "mail server housekeeping",
            "ana",
        )
        assert wait_until(lambda: pipeline.model.version != version_before, 60), (
            "no fine-tune after the verdict"
        )
        new_version = pipeline.model.version
        produce(kafka_bootstrap, s.events_topic, [encode_record(r) for r in later])
        assert wait_until(
            lambda: (
                committed_total(kafka_bootstrap, s.group_id, s.events_topic)
                == len(first) + len(later)
            ),
            120,
        )
        # a verdict as Splunk ES sends it (disposition 1 = true positive) on another group:
        # read in its own vocabulary, it trains the model too and starts another generation
        other = next(g for g in ranked if g.group_id not in (pick.group_id, look_alike.group_id))
        produce(
            kafka_bootstrap,
            s.feedback_topic,
            [
                orjson.dumps(
                    {
                        "event_id": "ABC@@notable@@1",
                        "disposition": "disposition:1",
                        "owner": "carol",
                        "comment": "confirmed",
                        "time": 1714561200,
                        "finding_uid": other.group_id,
                    }
                )
            ],
        )
        assert wait_until(
            lambda: pipeline.model.version not in (version_before, new_version), 60
        ), "the Splunk verdict did not train the model"
        # a true positive confirms its host was attacked when its alerts fired: the model
        # keeps those times (the time lift of its host's unread groups)
        fb = pipeline.scorer.feedback_of("ids_alert")
        confirmed = {t for t, w in zip(fb.malicious_times_, fb.malicious_where_, strict=True)
                     if w == other.entities["host"]}  # fmt: skip
        fired = pipeline.groups.groups[other.group_id].fired_at()[0]
        assert confirmed and confirmed <= set(fired.tolist())
    after = float(pipeline.scorer.peek("ids_alert", [row])[0])
    assert after < before, f"look-alike did not sink: {before} -> {after}"

    closed = {}
    for rec in consume_all(kafka_bootstrap, s.findings_topic, 1, timeout_s=20):
        f = orjson.loads(rec.value)
        if f["activity_id"] == 3:
            closed[f["finding_info"]["uid"]] = f
    assert {pick.group_id, other.group_id} <= closed.keys(), "verdicts close their findings"

    late_alerts = [
        orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.alerts_topic, 1, timeout_s=20)
    ]
    produced_later = {  # offsets of the second phase, per partition
        (a["origin"]["partition"], a["origin"]["offset"])
        for a in late_alerts
        if a["event_time"] >= float(later[0]["time"])
    }
    assert produced_later, "the second phase raised alerts"
    for a in late_alerts:
        if a["event_time"] >= float(later[0]["time"]):
            assert a["model"]["version"] == new_version
    announced = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.models_topic, 1)]
    assert any(m["version"] == new_version for m in announced)

    digests = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.digest_topic, 1)]
    assert digests and all(d["type"] == "digest" and d["top"] for d in digests)
    assert {r["group_id"] for d in digests for r in d["top"]} <= pipeline.groups.groups.keys()

    restarted = Pipeline(s)  # restart: the model version comes back from the store
    assert restarted.model.version == pipeline.model.version
    assert restarted.scorer.peek("ids_alert", [row])[0] == after
    back = restarted.scorer.feedback_of("ids_alert")
    assert back.malicious_times_.tolist() == fb.malicious_times_.tolist()
    assert back.malicious_keys_ == fb.malicious_keys_
