"""A kind configured with APE through the real broker: Zeek flows scored by outrider+ape (APE
learning as a stream within its budget), alerts explained by APE's pair terms, the kind's
detector in the checkpoint; the other kinds stay on the default detector."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from detectors.checkpoint import latest_checkpoint, load_checkpoint
from service.labels import label_command
from service.model_store import model_store
from service.replay import encode_record, read_records
from service.sources import SourceConfig
from tests.integration.kit import (
    committed_total,
    consume_all,
    fresh_settings,
    ids_events,
    produce,
    running,
    wait_until,
)

PACKAGED = Path(__file__).resolve().parents[2] / "service" / "config"


def test_a_kind_scored_by_ape_through_the_broker(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    for f in PACKAGED.glob("*.toml"):  # the packaged config, network_conn given APE
        text = f.read_text()
        text = text.replace(
            "[kinds.network_conn]\n", '[kinds.network_conn]\ndetector = "outrider+ape"\n'
        )
        (config / f.name).write_text(text)
    assert SourceConfig.load(config).kinds["network_conn"].detector == "outrider+ape"
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=200,
                       batch_max_events=500, sources_config=config)  # fmt: skip
    zeek = read_records(datasets / "stratosphere-zeek" / "008-zeek-mixed" / "conn.log.labeled.gz")
    values = [encode_record(z) for z in zeek] + ids_events(0, 600)
    produce(kafka_bootstrap, s.events_topic, values)
    with running(s):
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == len(values),
            240,
        )
    scored = Counter(
        orjson.loads(r.value)["kind"]
        for r in consume_all(kafka_bootstrap, s.scores_topic, len(values))
    )
    assert scored == {"network_conn": len(zeek), "ids_alert": 600}
    alerts = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.alerts_topic, 1)]
    flows = [a for a in alerts if a["kind"] == "network_conn"]
    assert flows, "APE-scored flows alert"
    pair = flows[0]["explanation"][0]
    assert {pair["type_a"], pair["type_b"]} <= set(SourceConfig.load(config).kinds[
        "network_conn"].entities)  # fmt: skip
    _, detectors, extra = load_checkpoint(latest_checkpoint(model_store(s)))
    assert extra["kind_detectors"] == {"network_conn": "outrider+ape", "ids_alert": "frequency"}
    ape = detectors["network_conn"].ape  # type: ignore[attr-defined]
    # learned as a stream: all but the flagged flows and the last 10 minutes (held back)
    assert ape.streamed_ >= 0.5 * len(zeek)
    # the budget: the first 16,384-event window at the batch fit's rate and nothing beyond
    assert 0 < ape.steps_ <= ape.streamed_ * 10 / 512 + 1
    assert type(detectors["ids_alert"]).__name__ == "FrequencyDetector"


def test_verdicts_train_the_devnet_head_through_the_broker(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    """`[kinds.ids_alert] detector = "devnet"`: an analyst's verdict from the feedback topic
    trains the kind's DevNet head (not only the count-based layer), a new model version is
    announced, and the trained head comes back from the checkpoint after a restart."""
    config = tmp_path / "config"
    config.mkdir()
    for f in PACKAGED.glob("*.toml"):
        text = f.read_text()
        text = text.replace("[kinds.ids_alert]\n", '[kinds.ids_alert]\ndetector = "devnet"\n')
        (config / f.name).write_text(text)
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=200,
                       batch_max_events=1000, sources_config=config)  # fmt: skip
    rows = read_records(datasets / "ait-ads" / "russellmitchell_alerts.csv.gz")[:8000]
    produce(kafka_bootstrap, s.events_topic, [encode_record(r) for r in rows])
    with running(s) as pipeline:
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == len(rows),
            240,
        )
        det = pipeline.scorer.detectors["ids_alert"]
        assert type(det).__name__ == "DevNetDetector" and not det.trained_
        top = pipeline.groups.ranked()[0]
        version = pipeline.model.version
        label_command(s.kafka_client_config(), s.feedback_topic, top.group_id, "malicious",
                      "confirmed scan", "ana")  # fmt: skip
        assert wait_until(lambda: pipeline.model.version != version, 60), "no fine-tune"
        det = pipeline.scorer.detectors["ids_alert"]
        types = det.entity_types
        assert det.malicious == [tuple(top.entities.get(t, "") for t in types)]
        # the head trains in a worker thread and is installed between batches: a second
        # generation after the verdict's own
        assert wait_until(lambda: det.trained_ and not det.head_stale, 60), "head not trained"
        assert wait_until(lambda: pipeline.scorer.generation >= 2, 10)
        new_version = pipeline.model.version
    announced = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.models_topic, 1)]
    assert any(m["version"] == new_version for m in announced)
    with running(s) as again:  # restarted: the trained head is part of the model
        assert again.model.version == new_version
        back = again.scorer.detectors["ids_alert"]
        assert back.trained_ and back.malicious == det.malicious
