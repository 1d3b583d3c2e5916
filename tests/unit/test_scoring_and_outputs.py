"""Scoring through the service's Scorer and the shape of what it publishes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from detectors.base import EventBatch
from detectors.checkpoint import CheckpointError, latest_checkpoint
from schemas import Alert, ModelRef, ScoreRecord
from service.decode import DecodedEvent, Decoder
from service.outputs import alert_id, build_alerts, dead_letter_headers, group_id, score_records
from service.scoring import Scorer, explain
from service.sources import SourceConfig
from tests.conftest import records_of

CONFIG = SourceConfig.load()
DECODER = Decoder(CONFIG, 1 << 16)
MODEL = ModelRef(name="frequency", version="v1")


def _events(n: int, odd_every: int = 0) -> list[DecodedEvent]:
    values = []
    for i in range(n):
        odd = odd_every and i % odd_every == odd_every - 1
        ent = {
            "name": "rare thing" if odd else "login ok",
            "short": "X" if odd else "A",
            "ip": f"10.0.0.{i % 3}",
            "host": "evil" if odd else "web",
        }
        values.append(orjson.dumps({"kind": "ids_alert", "time": 1000 + i, "entities": ent}))
    ok, dead = DECODER.decode_many(records_of(values))
    assert not dead
    return ok


def _scorer() -> Scorer:
    return Scorer(CONFIG, calibration_window=5000, calibration_min_samples=200)


def _warm_scorer() -> Scorer:
    """A scorer past its cold start: the model has data and the calibrator enough scores."""
    scorer = _scorer()
    scorer.score(_events(100))
    scorer.score(_events(2000))
    return scorer


def test_no_alert_before_calibration_then_rare_events_alert() -> None:
    scorer = _scorer()
    for n in (100, 150):
        first = scorer.score(_events(n, odd_every=10))[0]
        assert np.isnan(first.percentiles).all() and not first.alerted.any()
    scorer.score(_events(2000))
    part = scorer.score(_events(500, odd_every=100))[0]
    flagged = set(np.flatnonzero(part.alerted).tolist())
    assert flagged == {99, 199, 299, 399, 499}
    alerts = list(build_alerts(part, ModelRef(name="frequency", version="v")))
    assert len(alerts) == len(flagged)
    assert all(a["severity"] in {"medium", "high", "critical"} for a in alerts)


def test_flagged_events_are_not_learned() -> None:
    scorer = _warm_scorer()
    det = scorer.detectors["ids_alert"]
    part = scorer.score(_events(500, odd_every=100))[0]
    assert part.alerted.sum() == 5
    assert det.counts_[3].get("evil", 0) == 0  # type: ignore[attr-defined]


def test_checkpoint_restore_gives_identical_scores(tmp_path: Path) -> None:
    scorer = _scorer()
    scorer.score(_events(3000, odd_every=500))
    scorer.save(tmp_path)
    again = _scorer()
    assert again.restore(tmp_path)
    assert again.version == scorer.version
    probe = _events(300, odd_every=50)
    a, b = scorer.score(probe)[0], again.score(probe)[0]
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.percentiles, b.percentiles)


def test_alerts_are_explained_valid_and_ids_deterministic() -> None:
    scorer = _warm_scorer()
    part = scorer.score(_events(300, odd_every=100))[0]
    alerts = list(build_alerts(part, MODEL))
    assert len(alerts) == 3
    for wire in alerts:
        alert = Alert.model_validate_json(orjson.dumps(wire))  # strict schema, as on the wire
        assert alert.model_dump(mode="json") == wire
        assert alert.explanation and alert.rarity
        assert alert.low_confidence and alert.confidence_score < 50  # a model of 2,100 events
        assert alert.alert_id == alert_id("events", 0, alert.origin.offset, "v1")
        assert alert.group_id == group_id("ids_alert", alert.entities)
    assert alert_id("t", 0, 1, "v1") != alert_id("t", 0, 1, "v2")
    assert alert_id("t", 0, 1, "v1") != alert_id("t", 1, 1, "v1")


def test_score_records_match_their_schema() -> None:
    part = _scorer().score(_events(50))[0]
    for raw in score_records(part, MODEL):
        ScoreRecord.model_validate_json(raw, strict=False)


def test_dead_letter_headers_follow_kafka_connect() -> None:
    _, dead = DECODER.decode_many(records_of([b"nope"]))
    headers = dict(dead_letter_headers(dead[0]))
    assert headers["__connect.errors.topic"] == b"events"
    assert headers["__connect.errors.offset"] == b"0"
    assert headers["__connect.errors.exception.class.name"] == b"outrider.malformed_json"


def test_a_kind_can_have_its_own_threshold() -> None:
    sensitive = SourceConfig.from_toml(
        '[kinds.ids_alert]\nentities = ["name", "short", "ip", "host"]\nalert_percentile = 0\n'
    )
    own = Scorer(sensitive, calibration_window=5000, calibration_min_samples=200)
    assert own.threshold("ids_alert") == 0.0
    default = _scorer()
    assert default.threshold("ids_alert") == 99.0
    for s in (own, default):
        s.score(_events(100))
        s.score(_events(2000))
    assert default.score(_events(300, odd_every=100))[0].alerted.sum() == 3
    assert own.score(_events(300, odd_every=100))[0].alerted.sum() == 300  # every event


def test_each_distinct_flagged_pattern_is_explained_once() -> None:
    det = _warm_scorer()._for_kind("ids_alert")[0]
    rows = [("a", "A", "1", "h"), ("b", "B", "2", "h"), ("a", "A", "1", "h"), ("c", "C", "3", "h")]
    batch = EventBatch(det.entity_types, rows, np.arange(4, dtype=np.float64))
    asked: list[list[tuple[str, ...]]] = []
    real = det.explain_many

    def spy(sub: EventBatch, top_k: int = 3) -> list:
        asked.append(list(sub.rows))
        return real(sub, top_k)

    det.explain_many = spy  # type: ignore[method-assign]
    got = explain(det, batch, [0, 1, 2])
    assert asked == [[rows[0], rows[1]]], "the repeated pattern is explained once, row 3 not at all"
    assert sorted(got) == [0, 1, 2] and got[2] == got[0]
    assert got[1] == real(EventBatch(det.entity_types, [rows[1]], np.zeros(1)))[0]


def _stream(n: int, start: float, step: float, ent: dict[str, str]) -> list[DecodedEvent]:
    values = [
        orjson.dumps({"kind": "ids_alert", "time": start + i * step, "entities": ent})
        for i in range(n)
    ]
    ok, dead = DECODER.decode_many(records_of(values))
    assert not dead
    return ok


def _after_a_flood(capped: bool) -> bool:
    """Normal traffic, a 4,000-alert scan in 40 s, normal traffic for 50 min: does a quieter
    anomaly (one unknown field, not four) still alert?"""
    normal = {"name": "login ok", "short": "A", "ip": "10.0.0.1", "host": "web"}
    scan = {"name": "scan", "short": "S", "ip": "10.9.9.9", "host": "dmz"}
    scorer = Scorer(CONFIG, calibration_window=5000, calibration_min_samples=200,
                    learn_delay_s=600)  # fmt: skip
    for k in range(4):
        scorer.score(_stream(500, k * 500.0, 1.0, normal))
    if not capped:
        scorer.holdbacks["ids_alert"].flood_cap = None
    flood = [scorer.score(part)[0] for part in np.array_split(
        _stream(4000, 2000.0, 0.01, scan), 4)]  # fmt: skip
    assert sum(int(p.alerted.sum()) for p in flood) > 3900, "the scan itself alerts"
    left_out = sum(p.flood_scores for p in flood)  # counted for the metric
    assert left_out == (sum(int(p.alerted.sum()) for p in flood) - 12 if capped else 0)
    for k in range(6):  # the scan's held scores are released into the calibration
        scorer.score(_stream(500, 3000.0 + k * 500, 1.0, normal))
    probe = scorer.score(_stream(1, 6100.0, 1.0, {**normal, "name": "new thing"}))[0]
    return bool(probe.alerted[0])


def test_a_flood_does_not_blind_the_threshold() -> None:
    assert _after_a_flood(capped=True), "one field never seen before alerts after the scan"
    assert not _after_a_flood(capped=False), "uncapped, the scan fills the sample (the old way)"


def test_each_alert_record_carries_its_own_cloudevents_headers() -> None:
    from service.views import AlertViews, cloudevent_headers

    part = _warm_scorer().score(_events(500, odd_every=100))[0]
    alerts = list(build_alerts(part, MODEL))
    views = AlertViews("alerts", "", "", source="urn:test")
    origin = alerts[1]["origin"]
    trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = (origin["topic"], origin["partition"], origin["offset"])
    out = list(views.render(alerts, {traced: trace}))
    assert len(out) == len(alerts) == 5
    at = dict(out[0][3])["ce_time"]
    for (topic, key, value, headers), alert in zip(out, alerts, strict=True):
        expected = cloudevent_headers(alert["alert_id"], "dev.outrider.alert.v1", "urn:test",
                                      "alert.schema.json", trace if alert is alerts[1] else None,
                                      at)  # fmt: skip
        assert (topic, key, orjson.loads(value)) == ("alerts", alert["group_id"].encode(), alert)
        assert headers == expected


def _ape_kind_config(detector: str | None) -> SourceConfig:
    line = f'detector = "{detector}"\n' if detector else ""
    return SourceConfig.from_toml(
        f'[kinds.ids_alert]\nentities = ["name", "short", "ip", "host"]\n{line}'
    )


def test_a_kind_can_name_its_own_detector_and_apes_learn_as_a_stream(tmp_path: Path) -> None:
    """`[kinds.X] detector` wins over the default; APE learns within the stream budget; a
    checkpoint remembers each kind's detector, and a kind whose detector the config changed
    since is learned anew while the rest of the model (version, verdicts) is kept."""
    own = Scorer(_ape_kind_config("outrider+ape"), calibration_window=5000,
                 calibration_min_samples=200, ape_train_steps_per_event=0.001)  # fmt: skip
    assert own.detector_name == "frequency" and own.detector_of("ids_alert") == "outrider+ape"
    own.score(_events(100))
    det = own.detectors["ids_alert"]
    assert det.config["ape_weight"] > 0  # type: ignore[attr-defined]
    ape = det.ape  # type: ignore[attr-defined]
    first = ape.steps_
    assert first > 0  # the first window is trained as a batch fit would
    for _ in range(3):
        own.score(_events(2000))
    ape.streamed_ = ape.config["replay_size"]  # past the first window: the budget applies
    before = ape.steps_
    own.score(_events(2000))
    # ~2,000 learned events (minus the flagged) x 0.001, plus the carry; a batch fit: 39
    assert 1 <= ape.steps_ - before <= 2
    flagged = own.score(_events(300, odd_every=100))[0]
    assert flagged.alerted.any()
    ex = flagged.explanations[int(np.flatnonzero(flagged.alerted)[0])]
    assert ex.pairs  # APE's pair terms explain the alert

    own.save(tmp_path)
    again = Scorer(_ape_kind_config("outrider+ape"))
    again.restore(tmp_path)
    assert again.version == own.version
    np.testing.assert_allclose(
        again.detectors["ids_alert"].score_many(
            EventBatch(det.entity_types, [("login ok", "A", "10.0.0.1", "web")])
        ),
        det.score_many(EventBatch(det.entity_types, [("login ok", "A", "10.0.0.1", "web")])),
    )
    changed = Scorer(_ape_kind_config(None))  # the kind back on the default, frequency
    changed.restore(tmp_path)
    assert changed.version == own.version and "ids_alert" not in changed.detectors
    changed.score(_events(10))
    assert type(changed.detectors["ids_alert"]).__name__ == "FrequencyDetector"
    pinned = Scorer(_ape_kind_config(None))  # a pinned replay scores as the version did
    pinned.restore(tmp_path, version=own.version)
    assert type(pinned.detectors["ids_alert"]).__name__ == "OutriderDetector"
    with pytest.raises(CheckpointError, match="another detector"):
        Scorer(_ape_kind_config(None), detector="ape").load(latest_checkpoint(tmp_path))


def test_a_kind_on_devnet_learns_verdicts_in_its_head_and_forgets_them_on_undo(
    tmp_path: Path,
) -> None:
    """`detector = "devnet"`: APE + the DevNet head. Verdicts train the head (besides the
    count-based layer every kind has), the trained head is in the checkpoint, and an undo
    leaves the head as if it had never been told."""
    scorer = Scorer(_ape_kind_config("devnet"), calibration_window=5000,
                    calibration_min_samples=200)  # fmt: skip
    for n in (100, 2000, 2000):
        scorer.score(_events(n))
    det = scorer.detectors["ids_alert"]
    assert type(det).__name__ == "DevNetDetector" and not det.trained_  # type: ignore[attr-defined]
    odd = ("rare thing", "X", "10.0.0.1", "evil")
    probe = EventBatch(det.entity_types, [("rare thing", "X", "10.0.0.2", "evil"),
                                          ("login ok", "A", "10.0.0.1", "web")])  # fmt: skip
    before = det.peek_many(probe)
    version = scorer.version
    scorer.learn_verdicts("ids_alert", [odd] * 4, [1] * 4)
    assert det.trained_ and scorer.version != version  # type: ignore[attr-defined]
    lift = det.peek_many(probe) - before
    assert lift[0] > lift[1] + 1.0, f"the head did not lift the look-alike: {lift}"

    scorer.save(tmp_path)
    again = Scorer(_ape_kind_config("devnet"))
    again.restore(tmp_path)
    back = again.detectors["ids_alert"]
    assert back.trained_  # type: ignore[attr-defined]
    np.testing.assert_array_equal(back.peek_many(probe), det.peek_many(probe))

    assert scorer.retract("ids_alert", odd)
    assert not det.trained_ and not det.malicious  # type: ignore[attr-defined]
    np.testing.assert_array_equal(det.peek_many(probe), before)


def test_torch_threads_default_to_one_fewer_than_the_cores(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    from service.scoring import tune_torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr("os.cpu_count", lambda: 2)
        assert tune_torch(0) == 1 and torch.get_num_threads() == 1  # the 2-core VM
        monkeypatch.setattr("os.cpu_count", lambda: 1)
        assert tune_torch(0) == 1  # never none
        monkeypatch.setattr("os.cpu_count", lambda: 16)
        assert tune_torch(0) == 15
        assert tune_torch(3) == 3 and torch.get_num_threads() == 3  # --torch-threads 3
    finally:
        torch.set_num_threads(before)
