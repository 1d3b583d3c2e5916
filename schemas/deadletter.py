"""Dead letters: input that could not be scored, with the reason and the original bytes."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from schemas.base import SCHEMA_VERSION, OutputModel


class DeadLetterReason(StrEnum):
    """Why a record was not scored; a bounded set, used as a metric label."""

    oversized = "oversized"  #: larger than the configured message limit
    malformed_json = "malformed_json"  #: not valid JSON (or not UTF-8)
    unparseable_line = "unparseable_line"  #: a raw log line no configured log format parses
    not_an_object = "not_an_object"  #: valid JSON but not an object
    invalid_event = "invalid_event"  #: wrong types, missing fields, bounds exceeded
    unknown_kind = "unknown_kind"  #: event kind not configured / no source mapping matched
    missing_entity = "missing_entity"  #: an entity type the kind requires is absent
    invalid_verdict = "invalid_verdict"  #: a feedback record no verdict vocabulary reads
    unknown_target = "unknown_target"  #: a verdict for an alert or group id nobody knows
    rate_limited = "rate_limited"  #: one analyst sent verdicts faster than the configured rate
    scoring_error = "scoring_error"  #: the detector failed on this record (a bug: report it)


class DeadLetter(OutputModel):
    """A record Outrider could not score; `original_b64` holds its exact bytes."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    reason: DeadLetterReason
    detail: str = Field(description="human-readable cause, e.g. the first validation errors")
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    original_size: int
    original_b64: str
    failed_at: float
