"""The decoder's fast path: the common, well-formed record shapes checked without pydantic.

Decoding one record through `SourceMapping.to_event` and `schemas.Event.model_validate` costs
~9 us; a stream is almost always a handful of record *shapes* (the same keys, in the same
order, from the same producer). A `ShapeBook` compiles, once per shape, what the full path
would do with a record of that shape: which source mapping matches it (decided by its keys
alone, or no plan), which fields become which entities, the time field, the attributes. A
record of a known shape is then checked field by field against exactly the rules of
`schemas.Event` (types, bounds, patterns) and becomes a `CheckedEvent` in ~1-2 us.

The fast path only ever *accepts*. Whatever it is not certain of (a value of an unexpected
type, a bound exceeded, a shape whose match depends on values, an unknown shape once the book
is full, a source header, a log line) returns None and the record takes the full path, which
alone writes dead letters, so every bad input keeps its reason and detail. Values accepted
here are the values the full path would produce (entities as text, time as epoch seconds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from schemas.events import KIND_PATTERN, MAX_ENTITIES, MAX_ENTITY_CHARS
from service.sources import SourceConfig, SourceMapping, parse_time

#: schemas.events.EntityType's pattern, anchored as pydantic-core anchors it (no trailing \n).
_ENTITY_TYPE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_KIND = re.compile(KIND_PATTERN.removeprefix("^").removesuffix("$"))
#: Canonical events: the fields of schemas.Event; any other top-level key takes the full path.
_CANONICAL_FIELDS = frozenset({"kind", "time", "entities", "attributes"})
_STR_ONLY = frozenset({str})
_STR_INT = frozenset({str, int})
_INT_ONLY = frozenset({int})
_NUMBERS = frozenset({int, float})
_INF = math.inf


class CheckedEvent:
    """An event the fast path checked against `schemas.Event`'s rules: the same fields
    (`kind`, `time`, `entities`, `attributes`) without a pydantic model per event. Entities
    and attributes of a mapped record are kept as values beside their (shared) names and
    become dicts on first access: most events are scored by their row and never read them."""

    __slots__ = ("_attr_names", "_attrs", "_ents", "_names", "kind", "time")

    def __init__(
        self,
        kind: str,
        time: float,
        entities: dict[str, str] | tuple[str, ...],
        attributes: dict[str, Any] | tuple = (),
        names: tuple[str, ...] | None = None,
        attr_names: tuple[str, ...] | None = (),
    ) -> None:
        self.kind = kind
        self.time = time
        self._ents = entities  # a dict, or the values of `names`
        self._names = names
        self._attrs = attributes  # a dict, or the values of `attr_names`
        self._attr_names = attr_names

    @property
    def entities(self) -> dict[str, str]:
        if self._names is not None:
            self._ents = dict(zip(self._names, self._ents, strict=True))
            self._names = None
        return self._ents  # type: ignore[return-value]

    @property
    def attributes(self) -> dict[str, Any]:
        if self._attr_names is not None:
            self._attrs = dict(zip(self._attr_names, self._attrs, strict=True))
            self._attr_names = None
        return self._attrs  # type: ignore[return-value]

    def model_dump(self, **_: Any) -> dict[str, Any]:
        """The event as `schemas.Event.model_dump()` would give it."""
        return {
            "kind": self.kind,
            "time": self.time,
            "entities": dict(self.entities),
            "attributes": dict(self.attributes),
        }

    def __repr__(self) -> str:
        return (
            f"CheckedEvent(kind={self.kind!r}, time={self.time!r}, "
            f"entities={self.entities!r}, attributes={self.attributes!r})"
        )


#: One record's event and scoring row (entity values in the kind's order).
Checked = tuple[CheckedEvent, tuple[str, ...]]


def _text_values(values: tuple) -> tuple[str, ...] | None:
    """Entity values as `schemas.Event` keeps them (text; integers as their decimal text),
    or None when one is of another type or too long (the full path says why)."""
    kinds = {*map(type, values)}
    if not kinds <= _STR_ONLY:
        if not kinds <= _STR_INT:  # bool, float, None, list, dict: the full path decides
            return None
        values = tuple(v if type(v) is str else str(v) for v in values)
    if values and max(map(len, values)) > MAX_ENTITY_CHARS:
        return None
    return values


def _stamp(timestamp_ms: int | None) -> float | None:
    """The Kafka record timestamp as the event time (records without a time field)."""
    if timestamp_ms is None:
        return None
    t = timestamp_ms / 1000.0
    return t if 0.0 <= t < _INF else None


class Plan:
    """What the full path does with records of one shape, compiled."""

    def one(self, obj: dict[str, Any], timestamp_ms: int | None) -> Checked | None:
        """One record's event and row, or None = take the full path."""
        raise NotImplementedError

    def many(
        self, objs: list[dict[str, Any]], stamps: list[int | None]
    ) -> tuple[list[CheckedEvent], list[tuple[str, ...]]] | None:
        """Events and rows of every record of the group when all of them pass the checks
        at once; None = check them one by one."""
        return None


class MappingPlan(Plan):
    """Records of one source mapping's shape: which field becomes which entity, the time
    field, the attributes (every field not used), all fixed by the keys."""

    def __init__(
        self,
        kind: str,
        types: tuple[str, ...],
        etypes: tuple[str, ...],
        fields: tuple[str, ...],
        time_key: str | None,
        attr_keys: tuple[str, ...],
    ) -> None:
        self.kind = kind
        self.etypes = etypes
        self.time_key = time_key
        self.attr_keys = attr_keys
        self.get_values = _getter(fields)
        self.get_attrs = _getter(attr_keys) if attr_keys else None
        self.get_time = itemgetter(time_key) if time_key is not None else None
        where = {t: i for i, t in enumerate(etypes)}
        # None: the values in field order are already the row (entity values in kind order)
        self.get_row = (
            None if etypes == types else _getter([where.get(t, len(etypes)) for t in types])
        )

    def one(self, obj: dict[str, Any], timestamp_ms: int | None) -> Checked | None:
        values = _text_values(self.get_values(obj))
        if values is None:
            return None
        if self.get_time is None:
            t = _stamp(timestamp_ms)
            if t is None:
                return None
        else:
            t = parse_time(self.get_time(obj))
            if type(t) is not float or not 0.0 <= t < _INF:
                return None
        attrs = () if self.get_attrs is None else self.get_attrs(obj)
        row = values if self.get_row is None else self.get_row((*values, ""))
        event = CheckedEvent(self.kind, t, values, attrs, self.etypes, self.attr_keys)
        return event, row

    def many(
        self, objs: list[dict[str, Any]], stamps: list[int | None]
    ) -> tuple[list[CheckedEvent], list[tuple[str, ...]]] | None:
        n = len(objs)
        vals = list(map(self.get_values, objs))
        flat = list(chain.from_iterable(vals))
        if not {*map(type, flat)} <= _STR_ONLY or (flat and max(map(len, flat)) > MAX_ENTITY_CHARS):
            return None
        if self.get_time is None:
            if not {*map(type, stamps)} <= _INT_ONLY:
                return None
            times = [s / 1000.0 for s in stamps]  # type: ignore[operator]
        else:
            raw = list(map(self.get_time, objs))
            if not {*map(type, raw)} <= _NUMBERS:
                return None
            times = [t / 1000.0 if t > 1e11 else float(t) for t in raw]  # parse_time's rule
        if n and not (min(times) >= 0.0 and max(times) < _INF):
            return None
        attrs = repeat(()) if self.get_attrs is None else map(self.get_attrs, objs)
        events = list(
            map(
                CheckedEvent,
                repeat(self.kind),
                times,
                vals,
                attrs,
                repeat(self.etypes),
                repeat(self.attr_keys),
            )
        )
        get_row = self.get_row
        return events, vals if get_row is None else [get_row((*v, "")) for v in vals]


class CanonicalPlan(Plan):
    """Records already in `schemas.Event`'s shape (kind, entities, time?, attributes?)."""

    def __init__(self, book: ShapeBook) -> None:
        self.kinds = book.kinds
        self.type_ok = book.entity_type_ok

    def one(self, obj: dict[str, Any], timestamp_ms: int | None) -> Checked | None:
        kind = obj["kind"]
        ents = obj["entities"]
        if type(kind) is not str or type(ents) is not dict or len(ents) > MAX_ENTITIES:
            return None
        spec = self.kinds.get(kind)
        if spec is None:
            return None
        types, required = spec
        if not required <= ents.keys() or not all(map(self.type_ok, ents)):
            return None
        values = _text_values(tuple(ents.values()))
        if values is None:
            return None
        ents = dict(zip(ents, values, strict=True))
        attrs = obj.get("attributes", _MISSING)
        if attrs is _MISSING:
            attrs = {}
        elif type(attrs) is not dict:
            return None
        if "time" in obj:  # as sent: schemas.Event takes a number as float seconds
            t = obj["time"]
            if type(t) is not int and type(t) is not float:
                return None
            t = float(t)
            if not 0.0 <= t < _INF:
                return None
        else:
            t = _stamp(timestamp_ms)
            if t is None:
                return None
        row = tuple(map(ents.get, types, ("",) * len(types)))
        return CheckedEvent(kind, t, ents, attrs, None, None), row


class ShapeBook:
    """Compiled plans by record shape (its keys in order), bounded in number so that a
    producer of ever-new shapes costs memory only up to `max_shapes`."""

    def __init__(self, config: SourceConfig, max_shapes: int = 256) -> None:
        self.config = config
        self.max_shapes = max_shapes
        self.plans: dict[tuple[str, ...], Plan | None] = {}
        # per kind: (entity types in scoring order, required types), for kinds whose name
        # and entity types schemas.Event accepts
        self.kinds = {
            name: (spec.entities, frozenset(spec.entities) - spec.optional)
            for name, spec in config.kinds.items()
            if _KIND.fullmatch(name)
            and len(spec.entities) <= MAX_ENTITIES
            and all(_ENTITY_TYPE.fullmatch(t) for t in spec.entities)
        }
        self._entity_types: set[str] = set()  # entity type names seen valid (bounded)
        self._canonical = CanonicalPlan(self)

    def plan(self, keys: tuple[str, ...]) -> Plan | None:
        """The plan for records with these keys (compiled on first sight), or None."""
        try:
            return self.plans[keys]
        except KeyError:
            pass
        plan = self._compile(keys)
        if len(self.plans) < self.max_shapes:
            self.plans[keys] = plan
        return plan

    def entity_type_ok(self, name: str) -> bool:
        """Whether `name` is an entity type schemas.Event accepts (memoised, bounded)."""
        if name in self._entity_types:
            return True
        if type(name) is not str or not _ENTITY_TYPE.fullmatch(name):
            return False
        if len(self._entity_types) < 4096:
            self._entity_types.add(name)
        return True

    # -- compiling ------------------------------------------------------------------------
    def _compile(self, keys: tuple[str, ...]) -> Plan | None:
        present = frozenset(keys)
        if "kind" in present and "entities" in present:  # the canonical event shape
            return self._canonical if present <= _CANONICAL_FIELDS else None
        src = self._source_for(present)
        if src is None or src.kind not in self.kinds:
            return None
        return self._mapping_plan(src, keys, present)

    def _source_for(self, present: frozenset[str]) -> SourceMapping | None:
        """The source `SourceConfig.match` picks for any record with these keys; None when
        no source matches or when the pick depends on values (a `where` clause, a dotted
        path that may reach into a nested object)."""
        for src in self.config._order:  # type: ignore[attr-defined]
            if not src._flat_match <= present:  # type: ignore[attr-defined]
                continue
            maybe = False
            for path in src._dotted_match:  # type: ignore[attr-defined]
                if path in present:
                    continue
                if path.split(".", 1)[0] in present:
                    maybe = True  # nested lookup: depends on the value
                else:
                    break  # certainly missing
            else:
                if maybe or src._where:  # type: ignore[attr-defined]
                    return None
                return src
        return None

    def _mapping_plan(
        self, src: SourceMapping, keys: tuple[str, ...], present: frozenset[str]
    ) -> Plan | None:
        """`SourceMapping.to_event` for records with exactly these keys; None when a value
        could change which field is used (a nested path)."""
        types, required = self.kinds[src.kind]
        etypes: list[str] = []
        fields: list[str] = []
        for etype, paths in src._entity_paths:  # type: ignore[attr-defined]
            for path in paths:
                if path in present:  # a None value here: the full path tries the next one
                    etypes.append(etype)
                    fields.append(path)
                    break
                if "." in path and path.split(".", 1)[0] in present:
                    return None  # a nested lookup: depends on the value
        if not required <= set(etypes):
            return None  # the full path writes the missing_entity dead letter
        used = set(fields)
        time_key = src.time
        if time_key is not None:
            if time_key in present:
                used.add(time_key)
            elif "." in time_key and time_key.split(".", 1)[0] in present:
                return None
            else:
                time_key = None  # absent: the record timestamp
        attr_keys = tuple(k for k in keys if k not in used)
        return MappingPlan(src.kind, types, tuple(etypes), tuple(fields), time_key, attr_keys)


_MISSING = object()


def _getter(items: list | tuple) -> Callable[[Any], tuple]:
    """itemgetter that always returns a tuple (itemgetter of one item returns the item)."""
    if len(items) == 1:
        one = items[0]
        return lambda obj: (obj[one],)
    if not items:
        return lambda obj: ()
    return itemgetter(*items)
