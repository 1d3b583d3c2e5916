"""Analyst verdicts from a terminal or a script: what `outrider label` publishes.

The triage page and the CLI build the same `schemas.Feedback` through `make_feedback`, so a
verdict is validated identically wherever it comes from. `label_command` publishes one to the
feedback topic keyed by its target id: every verdict on one alert or group lands on one
partition in order, and the latest wins when the label store is rebuilt from the topic.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from schemas.feedback import Feedback, Verdict, VerdictReason

#: Words an analyst types, next to the Feedback vocabulary itself (`true_positive`, ...).
VERDICT_ALIASES = {
    "malicious": Verdict.true_positive,
    "benign": Verdict.benign_positive,
}


def parse_verdict(value: str) -> Verdict:
    """A verdict from the Feedback vocabulary or an alias; ValueError naming the choices."""
    choices = ", ".join([*VERDICT_ALIASES, *Verdict])
    if not isinstance(value, str):
        raise ValueError(f"verdict must be a string, one of: {choices}")
    key = value.strip().lower()
    if key in VERDICT_ALIASES:
        return VERDICT_ALIASES[key]
    try:
        return Verdict(key)
    except ValueError:
        raise ValueError(f"verdict {value!r} is not one of: {choices}") from None


def make_feedback(
    target_id: str,
    verdict: str | Verdict,
    *,
    analyst: str,
    comment: str = "",
    reason: str | None = None,
    now: float | None = None,
    source_ref: str | None = None,
) -> Feedback:
    """A validated Feedback, or ValueError with one readable reason (shown to the analyst)."""
    for name, text in (("target_id", target_id), ("analyst", analyst)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} is required")
        if not text.isprintable():
            raise ValueError(f"{name} contains control characters")
    if not isinstance(comment, str):
        raise ValueError("comment must be a string")
    if reason is not None:
        try:
            reason = VerdictReason(reason)
        except ValueError:
            raise ValueError(
                f"reason {reason!r} is not one of: {', '.join(VerdictReason)}"
            ) from None
    try:
        return Feedback(
            target_id=target_id,
            verdict=parse_verdict(verdict),
            reason=reason,
            analyst=analyst.strip(),
            comment=comment,
            time=time.time() if now is None else now,
            source_ref=source_ref,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{where}: {err['msg']}") from None


def feedback_bytes(feedback: Feedback) -> bytes:
    """The feedback topic's value: the Feedback as JSON (what `Feedback.model_validate_json`
    reads back)."""
    return json.dumps(feedback.model_dump(mode="json"), separators=(",", ":")).encode()


def label_command(
    bootstrap_config: dict[str, Any],
    feedback_topic: str,
    target_id: str,
    verdict: str,
    note: str,
    analyst: str,
) -> Feedback:
    """Validate one verdict, publish it (key = target id, acks=all) and return it.

    Raises ValueError before connecting when the verdict is invalid, and the producer's
    KafkaError when the broker does not acknowledge it within 30 s: a script must know.
    """
    feedback = make_feedback(target_id, verdict, analyst=analyst, comment=note or "")
    from kafka import KafkaProducer  # here: validation and tests need no Kafka client

    config = {"client_id": "outrider-label", **bootstrap_config, "acks": "all"}
    producer = KafkaProducer(**config)
    try:
        producer.send(
            feedback_topic, key=feedback.target_id.encode(), value=feedback_bytes(feedback)
        ).get(timeout=30)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    return feedback
