"""The reliability signal: young models and strangers are low-confidence, not hidden."""

from __future__ import annotations

from service.confidence import LOW_CONFIDENCE, confidence


def test_confidence_grows_with_experience_calibration_and_familiarity() -> None:
    young, _ = confidence(200, 300, 100, [0, 0, 50])
    mature, parts = confidence(200_000, 20_000, 100, [0, 0, 50])
    familiar, _ = confidence(200_000, 20_000, 100, [50, 50, 50])
    assert young < LOW_CONFIDENCE <= mature < familiar <= 100
    assert parts == {
        "kind_events_seen": 200_000,
        "calibration_samples": 20_000,
        "entities_familiar": round(1 / 3, 3),
    }


def test_no_data_means_no_confidence() -> None:
    assert confidence(0, 0, 100, [])[0] == 0.0
