"""Write the JSON Schema of every wire model to schemas/json/ (checked by a test)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.alerts import Alert, ScoreRecord
from schemas.deadletter import DeadLetter
from schemas.events import Event
from schemas.feedback import Feedback
from schemas.models import ModelAnnouncement, SensitivityUpdate

WIRE_MODELS: dict[str, type[BaseModel]] = {
    "event": Event,
    "alert": Alert,
    "score": ScoreRecord,
    "dead_letter": DeadLetter,
    "feedback": Feedback,
    "model_announcement": ModelAnnouncement,
    "sensitivity_update": SensitivityUpdate,
}
SCHEMA_DIR = Path(__file__).parent / "json"


def render(model: type[BaseModel]) -> str:
    """The schema as stable, diff-friendly text."""
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, model in WIRE_MODELS.items():
        (SCHEMA_DIR / f"{name}.schema.json").write_text(render(model))
        print(f"wrote {SCHEMA_DIR / f'{name}.schema.json'}")


if __name__ == "__main__":
    main()
