"""Analyst verdicts in: read from the feedback topic, validated like any input, kept as the
label store (the latest verdict per target), and turned into training signal.

The label store is rebuilt from the topic at every start (the consumer reads it from the
beginning; the topic is the durable store, keyed by target id). What the model learned from
it is restored from the checkpoint, which also records up to which offset verdicts were
applied: a verdict before that offset is history, one after it (even one given while the
scorer was down) is live and trains the model. Verdicts arrive
in Outrider's own shape or in the vocabularies SIEMs use (Elastic, Sentinel, Splunk ES, OCSF;
service/verdicts.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from schemas import DeadLetter, DeadLetterReason, Feedback
from service.decode import clip, dead_letter
from service.kafka_io import whole_topic_consumer
from service.procconsumer import poll_through_outage
from service.settings import Settings
from service.verdicts import feedback_from_any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Verdict:
    """A valid verdict and whether the model has yet to learn it (a live one)."""

    feedback: Feedback
    record: Any
    live: bool


class FeedbackIntake:
    """The feedback topic, read whole at start and then followed."""

    def __init__(self, settings: Settings, applied: dict[str, int] | None = None) -> None:
        self.topic = settings.feedback_topic
        self.consumer = whole_topic_consumer(settings, self.topic, "feedback")
        # per partition, the offset from which verdicts are not yet in the model
        self.applied = {int(p): int(o) for p, o in (applied or {}).items()}
        self.store: dict[str, Feedback] = {}

    def poll(self, timeout_ms: int = 0) -> tuple[list[Verdict], list[DeadLetter]]:
        ok: list[Verdict] = []
        dead: list[DeadLetter] = []
        for tp, records in poll_through_outage(self.consumer, timeout_ms).items():
            live_from = self.applied.get(tp.partition, 0)
            for rec in records:
                self.applied[tp.partition] = max(live_from, rec.offset + 1)
                try:
                    fb = feedback_from_any(orjson.loads(rec.value or b""))
                except (orjson.JSONDecodeError, ValueError) as exc:
                    dead.append(
                        dead_letter(
                            rec,
                            DeadLetterReason.invalid_verdict,
                            clip(str(exc).replace("\n", " "), 300),
                        )
                    )
                    continue
                self.store[fb.target_id] = fb
                ok.append(Verdict(fb, rec, rec.offset >= live_from))
        return ok, dead

    def close(self) -> None:
        self.consumer.close(autocommit=False)
