"""Wire models: lenient inputs, strict outputs, JSON Schema files in sync with the code."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import Alert, DeadLetter, Event, Feedback
from schemas.export import SCHEMA_DIR, WIRE_MODELS, render


@pytest.mark.parametrize("name", sorted(WIRE_MODELS))
def test_checked_in_json_schema_matches_the_model(name: str) -> None:
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.exists(), f"run `python -m schemas.export` to create {path}"
    assert path.read_text() == render(WIRE_MODELS[name]), "run `python -m schemas.export`"
    assert json.loads(path.read_text())["type"] == "object"


def test_event_keeps_unknown_fields_and_turns_numbers_into_categories() -> None:
    ev = Event.model_validate(
        {"kind": "net", "time": 1, "entities": {"dst_port": 4444, "host": "a"}, "vendor": "x"}
    )
    assert ev.entities == {"dst_port": "4444", "host": "a"}
    assert ev.model_extra == {"vendor": "x"}


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "net", "time": 1, "entities": {"host": True}},  # bool is not a category
        {"kind": "net", "time": 1, "entities": {"host": ["a"]}},
        {"kind": "net", "time": -5, "entities": {"host": "a"}},
        {"kind": "bad kind!", "time": 1, "entities": {"host": "a"}},
        {"kind": "net", "time": 1, "entities": {"host": "x" * 5000}},
        {"kind": "net", "time": 1, "entities": {f"t{i}": "v" for i in range(100)}},
        {"kind": "net", "time": 1},
    ],
)
def test_event_rejects_what_it_cannot_score(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Event.model_validate(bad)


def test_outputs_are_strict() -> None:
    with pytest.raises(ValidationError):
        DeadLetter.model_validate({"reason": "nope"})
    fields = set(Alert.model_fields)
    assert {"alert_id", "group_id", "severity", "percentile", "model", "explanation"} <= fields
    assert Alert.model_config["extra"] == "forbid"


def test_feedback_uses_the_standard_verdict_vocabulary() -> None:
    fb = Feedback.model_validate(
        {"target_id": "abc", "verdict": "benign_positive", "analyst": "ana", "time": 1.0}
    )
    assert fb.verdict.value == "benign_positive"
    with pytest.raises(ValidationError):
        Feedback.model_validate({"target_id": "a", "verdict": "benign", "analyst": "x", "time": 1})
