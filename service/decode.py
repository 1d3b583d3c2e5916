"""Decode: raw Kafka bytes -> a validated event, or a dead letter that says why not.

Decoding splits the stream in two (an ok stream and an error stream, as bytewax does): every
record ends as exactly one `DecodedEvent` or one `DeadLetter`, so nothing is dropped silently.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from schemas import DeadLetter, DeadLetterReason, Event
from service.fastpath import CheckedEvent, Plan, ShapeBook
from service.logmining import LogMiner, LogParseError
from service.sources import SourceConfig

SOURCE_HEADER = "outrider-source"
_DICT_ONLY = {dict}
_value, _headers, _timestamp = attrgetter("value"), attrgetter("headers"), attrgetter("timestamp")


class KafkaRecord(Protocol):
    """The parts of a consumed record decoding needs (kafka-python's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...  # ms
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...  # a value may be null


@dataclass(slots=True)
class DecodedEvent:
    """A valid event with its scoring row (entity values in the kind's order) and origin.
    `event` is a `schemas.Event`, or a `CheckedEvent` (same fields) from the fast path."""

    event: Event | CheckedEvent
    row: tuple[str, ...]
    record: KafkaRecord


class Decoder:
    """Turns records into events using the configured kinds and source mappings."""

    def __init__(
        self,
        config: SourceConfig,
        max_message_bytes: int,
        logs_topic: str = "",
        miner: LogMiner | None = None,
    ) -> None:
        self.config = config
        self.max_message_bytes = max_message_bytes
        self.logs_topic = logs_topic
        self.miner = miner if miner is not None else (LogMiner() if logs_topic else None)
        # per kind: (entity types in scoring order, the required ones as a set)
        self._kinds = {
            name: (spec.entities, frozenset(spec.entities) - spec.optional)
            for name, spec in config.kinds.items()
        }
        self.shapes = ShapeBook(config)

    def decode_many(
        self, records: Sequence[KafkaRecord]
    ) -> tuple[list[DecodedEvent], list[DeadLetter]]:
        """Every record as an event or a dead letter, in record order. Records of a known,
        well-formed shape take the fast path (service/fastpath.py), a whole group of one
        shape at a time; every other record, and every one the fast path is not certain of,
        takes `decode`, which alone writes dead letters."""
        if records:
            ok = self._one_shape(records)
            if ok is not None:
                return ok, []
        loads, plan_for, limit = orjson.loads, self.shapes.plan, self.max_message_bytes
        logs = self.logs_topic if self.miner is not None else None
        groups: dict[Plan, tuple[list[int], list[dict], list[KafkaRecord]]] = {}
        for i, rec in enumerate(records):
            value = rec.value
            if (
                value is None
                or len(value) > limit
                or rec.topic == logs
                or (rec.headers and header(rec, SOURCE_HEADER) is not None)
            ):
                continue
            try:
                obj = loads(value)
            except orjson.JSONDecodeError:
                continue
            if type(obj) is dict:
                plan = plan_for(tuple(obj))
                if plan is not None:
                    group = groups.get(plan)
                    if group is None:
                        group = groups[plan] = ([], [], [])
                    group[0].append(i)
                    group[1].append(obj)
                    group[2].append(rec)
        out: list[DecodedEvent | None] = [None] * len(records)
        for plan, (idx, objs, recs) in groups.items():
            for i, ev in zip(idx, self._fast(plan, objs, recs)[0], strict=True):
                out[i] = ev
        ok_list: list[DecodedEvent] = []
        dead: list[DeadLetter] = []
        for rec, event in zip(records, out, strict=True):
            result = self.decode(rec) if event is None else event
            if isinstance(result, DecodedEvent):
                ok_list.append(result)
            else:
                dead.append(result)
        return ok_list, dead

    def _one_shape(self, records: Sequence[KafkaRecord]) -> list[DecodedEvent] | None:
        """The usual batch, at C speed where it can be: JSON objects of one known shape,
        none oversized, without headers. None = anything else (decode_many sorts it out)."""
        values = list(map(_value, records))
        if None in values or max(map(len, values)) > self.max_message_bytes:  # type: ignore[arg-type]
            return None
        if any(map(_headers, records)):
            return None
        if self.miner is not None and self.logs_topic in {r.topic for r in records}:
            return None
        try:
            objs = list(map(orjson.loads, values))  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            return None
        if {*map(type, objs)} != _DICT_ONLY:
            return None
        keys = list(map(tuple, objs))
        if keys.count(keys[0]) != len(keys):
            return None
        plan = self.shapes.plan(keys[0])
        if plan is None:
            return None
        events, complete = self._fast(plan, objs, records)
        return events if complete else None  # type: ignore[return-value]

    @staticmethod
    def _fast(
        plan: Plan, objs: list[dict], recs: Sequence[KafkaRecord]
    ) -> tuple[list[DecodedEvent | None], bool]:
        """Events of one shape's records, None where a record must take the full path; and
        whether there is no such record."""
        checked = plan.many(objs, list(map(_timestamp, recs)))
        if checked is not None:
            events, rows = checked
            return list(map(DecodedEvent, events, rows, recs)), True
        out: list[DecodedEvent | None] = []
        complete = True
        for obj, rec in zip(objs, recs, strict=True):
            one = plan.one(obj, rec.timestamp)
            if one is None:
                out.append(None)
                complete = False
            else:
                out.append(DecodedEvent(one[0], one[1], rec))
        return out, complete

    def decode(self, rec: KafkaRecord) -> DecodedEvent | DeadLetter:
        value = rec.value or b""
        if len(value) > self.max_message_bytes:
            return dead_letter(
                rec,
                DeadLetterReason.oversized,
                f"{len(value)} bytes exceeds the limit of {self.max_message_bytes}",
            )
        if self.miner is not None and rec.topic == self.logs_topic:
            mapped = self._log_line(value, rec)
        else:
            try:
                obj = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                return dead_letter(rec, DeadLetterReason.malformed_json, f"not valid JSON: {exc}")
            if not isinstance(obj, dict):
                return dead_letter(
                    rec,
                    DeadLetterReason.not_an_object,
                    f"expected a JSON object, got {type(obj).__name__}",
                )
            mapped = self._to_canonical(obj, rec)
        if isinstance(mapped, DeadLetter):
            return mapped
        try:
            event = Event.model_validate(mapped)
        except ValidationError as exc:
            return dead_letter(rec, DeadLetterReason.invalid_event, summarize(exc))
        kind = self._kinds.get(event.kind)
        if kind is None:
            return dead_letter(
                rec,
                DeadLetterReason.unknown_kind,
                f"event kind {clip(event.kind)!r} is not configured",
            )
        types, required = kind
        ents = event.entities
        if not required <= ents.keys():
            missing = [t for t in types if t in required and t not in ents]
            return dead_letter(
                rec,
                DeadLetterReason.missing_entity,
                f"kind {event.kind!r} requires entity types {missing}",
            )
        return DecodedEvent(event, tuple([ents.get(t, "") for t in types]), rec)

    def _log_line(self, value: bytes, rec: KafkaRecord) -> dict[str, Any] | DeadLetter:
        """A raw log line -> canonical event via the template miner (Drain)."""
        assert self.miner is not None
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return dead_letter(rec, DeadLetterReason.unparseable_line, f"not UTF-8 text: {exc}")
        received = rec.timestamp / 1000.0 if rec.timestamp is not None else None
        try:
            return self.miner.event_for_line(text, received_time=received)
        except LogParseError as exc:
            return dead_letter(rec, DeadLetterReason.unparseable_line, clip(exc.reason, 300))

    def _to_canonical(self, obj: dict[str, Any], rec: KafkaRecord) -> dict[str, Any] | DeadLetter:
        named = header(rec, SOURCE_HEADER)
        if named is not None:
            src = self.config.sources.get(named)
            if src is None:
                return dead_letter(
                    rec,
                    DeadLetterReason.unknown_kind,
                    f"header {SOURCE_HEADER}={clip(named)!r} names no configured source",
                )
            mapped = src.to_event(obj)
        elif "kind" in obj and "entities" in obj:
            mapped = obj
        else:
            src = self.config.match(obj)
            if src is None:
                keys = ", ".join(clip(str(k), 40) for k in list(obj)[:8])
                return dead_letter(
                    rec,
                    DeadLetterReason.unknown_kind,
                    f"no event kind and no source mapping matches (fields: {keys})",
                )
            mapped = src.to_event(obj)
        if "time" not in mapped and rec.timestamp is not None:
            mapped = {**mapped, "time": rec.timestamp / 1000.0}
        return mapped


def header(rec: KafkaRecord, name: str) -> str | None:
    for key, val in rec.headers or ():
        if key == name:
            return val.decode("utf-8", "replace") if isinstance(val, bytes) else str(val)
    return None


def clip(text: str, limit: int = 80) -> str:
    """Bound hostile text before it goes into a reason string."""
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit} chars)"


def summarize(exc: ValidationError, limit: int = 3) -> str:
    """The first validation errors as 'field.path: message', without echoing the input."""
    parts = []
    for err in exc.errors(include_input=False)[:limit]:
        loc = ".".join(clip(str(p), 40) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def dead_letter(rec: KafkaRecord, reason: DeadLetterReason, detail: str) -> DeadLetter:
    value = rec.value or b""
    return DeadLetter(
        reason=reason,
        detail=detail,
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        timestamp_ms=rec.timestamp,
        original_size=len(value),
        original_b64=base64.b64encode(value).decode("ascii"),
        failed_at=time.time(),
    )
