"""Run-time control from the models topic: alert sensitivity and model announcements.

The models topic is compacted and read whole at start, so the latest sensitivity setting
applies to a scorer that starts later too, and a scorer (role `scorer`) finds the trainer's
newest model there: `announced` holds the latest announcement for the scorer's detector, which
the pipeline hot-swaps to between batches.
"""

from __future__ import annotations

import logging

import orjson
from pydantic import ValidationError

from schemas import DeadLetter, DeadLetterReason
from schemas.models import ModelAnnouncement, SensitivityUpdate
from service.decode import clip, dead_letter, summarize
from service.kafka_io import whole_topic_consumer
from service.procconsumer import poll_through_outage
from service.scoring import Scorer
from service.settings import Settings

log = logging.getLogger(__name__)


class ControlIntake:
    """Follows the models topic from its beginning; applies sensitivity updates."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = whole_topic_consumer(settings, settings.models_topic, "control")
        self.announced: ModelAnnouncement | None = None  # the newest for this detector

    def apply(self, scorer: Scorer) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        for records in poll_through_outage(self.consumer, 0).values():
            for rec in records:
                try:
                    obj = orjson.loads(rec.value or b"")
                except orjson.JSONDecodeError as exc:
                    dead.append(dead_letter(rec, DeadLetterReason.malformed_json, str(exc)))
                    continue
                if isinstance(obj, dict) and "model_name" in obj:
                    try:
                        announced = ModelAnnouncement.model_validate_json(rec.value)
                    except ValidationError as exc:
                        dead.append(
                            dead_letter(rec, DeadLetterReason.invalid_event, summarize(exc))
                        )
                        continue
                    if announced.model_name == scorer.detector_name:
                        self.announced = announced
                    continue
                if not isinstance(obj, dict) or obj.get("type") != "sensitivity":
                    dead.append(
                        dead_letter(
                            rec,
                            DeadLetterReason.invalid_event,
                            "neither a model announcement nor a sensitivity update",
                        )
                    )
                    continue
                try:
                    update = SensitivityUpdate.model_validate_json(rec.value)
                except ValidationError as exc:
                    dead.append(dead_letter(rec, DeadLetterReason.invalid_event, summarize(exc)))
                    continue
                unknown = set(update.kinds) - set(scorer.config.kinds)
                if unknown:
                    dead.append(
                        dead_letter(
                            rec,
                            DeadLetterReason.unknown_kind,
                            clip(f"unknown kinds {sorted(unknown)}", 300),
                        )
                    )
                    continue
                if update.alert_percentile is not None:
                    scorer.alert_percentile = update.alert_percentile
                scorer.kind_thresholds.update(update.kinds)
                log.info("sensitivity now: global %s, per kind %s", scorer.alert_percentile,
                         scorer.kind_thresholds)  # fmt: skip
        return dead

    def close(self) -> None:
        self.consumer.close(autocommit=False)
