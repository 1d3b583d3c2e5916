"""Event kinds and source mappings from configuration: a new source is config, not code.

A record arrives as a JSON object in whatever shape its producer uses (an AIT alert row, a
Zeek conn record, an ECS document, or Outrider's own canonical event). A `SourceMapping` turns
it into the canonical event dict that `schemas.Event` validates; the kind's spec says which
entity types the detector scores.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_MISSING = object()

#: The detectors a kind can be scored by (service/scoring.py DETECTOR_FACTORIES builds them).
DetectorName = Literal["frequency", "outrider", "outrider+ape", "ape", "devnet"]


class KindSpec(BaseModel):
    """An event kind: the entity types its detector scores, in a fixed order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entities: tuple[str, ...] = Field(min_length=1)
    optional: frozenset[str] = frozenset()
    alert_percentile: float | None = Field(
        default=None, ge=0, le=100, description="this kind's alert threshold; None = global"
    )
    detector: DetectorName | None = Field(
        default=None, description="this kind's detector; None = the global --detector"
    )
    streams: tuple[str, str] | None = Field(
        default=None,
        description="(source, host) entity types whose pairs are watched as streams: "
        "silenced steady streams and lost mirrors raise stream alerts (service/stream_stage.py)",
    )

    @model_validator(mode="after")
    def _optional_are_entities(self) -> KindSpec:
        unknown = self.optional - set(self.entities)
        if unknown:
            raise ValueError(f"optional types {sorted(unknown)} are not among the entities")
        pair = self.streams
        if pair is not None and (set(pair) - set(self.entities) or pair[0] == pair[1]):
            raise ValueError(f"streams {list(pair)} must be two different entity types of the kind")
        return self


Scalar = str | int | float | bool


class SourceMapping(BaseModel):
    """How records of one shape become events of one kind.

    `where` narrows a shape shared by several event types (Suricata `event_type`, Sysmon event
    ids): every listed path must hold one of the given values, compared as text so that 10 and
    "10" (Winlogbeat 7 vs 8) both match. An entity path may be a list: the first present wins.
    `before` names sources this one must be tried ahead of, whatever their file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    match: tuple[str, ...] = Field(min_length=1)
    where: dict[str, Scalar | tuple[Scalar, ...]] = Field(default_factory=dict)
    before: tuple[str, ...] = ()
    time: str | None = None
    entities: dict[str, str | tuple[str, ...]]

    def model_post_init(self, _context: Any) -> None:
        # Precomputed for the hot path: a set test covers the flat paths at C speed.
        flat = frozenset(p for p in self.match if "." not in p)
        object.__setattr__(self, "_flat_match", flat)
        object.__setattr__(self, "_dotted_match", tuple(p for p in self.match if p not in flat))
        object.__setattr__(
            self,
            "_entity_paths",
            tuple((t, (p,) if isinstance(p, str) else p) for t, p in self.entities.items()),
        )
        object.__setattr__(
            self,
            "_where",
            tuple(
                (path, frozenset(_text(v) for v in (want if isinstance(want, tuple) else (want,))))
                for path, want in self.where.items()
            ),
        )

    def matches(self, record: dict[str, Any]) -> bool:
        if not (
            record.keys() >= self._flat_match  # type: ignore[attr-defined]
            and all(
                lookup(record, path) is not _MISSING
                for path in self._dotted_match  # type: ignore[attr-defined]
            )
        ):
            return False
        for path, allowed in self._where:  # type: ignore[attr-defined]
            value = lookup(record, path)
            if value is _MISSING or _text(value) not in allowed:
                return False
        return True

    def to_event(self, record: dict[str, Any]) -> dict[str, Any]:
        """The canonical event dict for `record`; fields not mapped by a flat key stay as
        attributes (nested objects are kept whole: nothing the source sent is lost)."""
        entities: dict[str, Any] = {}
        used: set[str] = set()
        for etype, paths in self._entity_paths:  # type: ignore[attr-defined]
            for path in paths:
                value = record.get(path, _MISSING)
                if value is _MISSING and "." in path:
                    value = lookup(record, path)
                if value is not _MISSING and value is not None:
                    entities[etype] = value
                    if path in record:
                        used.add(path)
                    break
        event: dict[str, Any] = {"kind": self.kind, "entities": entities}
        if self.time is not None:
            t = lookup(record, self.time)
            if t is not _MISSING:
                event["time"] = parse_time(t)
                if self.time in record:
                    used.add(self.time)
        event["attributes"] = {k: v for k, v in record.items() if k not in used}
        return event


def _text(value: Any) -> str:
    """A `where` value as text; booleans as TOML and JSON write them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def lookup(record: dict[str, Any], path: str) -> Any:
    """Value at `path`: at each nesting level the literal remaining (possibly dotted) key
    first, then one more level down. So `conn.id.orig_h` finds the Zeek Kafka plugin's
    `{"conn": {"id.orig_h": ...}}` as well as ECS's nested `{"conn": {"id": {"orig_h": ...}}}`."""
    value = record.get(path, _MISSING)
    if value is not _MISSING or "." not in path:
        return value
    head, rest = path.split(".", 1)
    node = record.get(head, _MISSING)
    if not isinstance(node, dict):
        return _MISSING
    return lookup(node, rest)


def parse_time(value: Any) -> Any:
    """Epoch seconds from epoch s/ms numbers or ISO 8601 text; anything else is left to fail
    validation with a clear message."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        # A naive time (Sysmon `UtcTime`, NXLog) is UTC, never this host's local zone.
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return value


class SourceConfig(BaseModel):
    """All configured kinds and sources, validated together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: dict[str, KindSpec]
    sources: dict[str, SourceMapping]

    @model_validator(mode="after")
    def _sources_are_consistent(self) -> SourceConfig:
        for src in self.sources.values():
            spec = self.kinds.get(src.kind)
            if spec is None:
                raise ValueError(f"source {src.name!r} maps to undeclared kind {src.kind!r}")
            unknown = set(src.entities) - set(spec.entities)
            if unknown:
                raise ValueError(f"source {src.name!r} maps unknown entity types {unknown}")
            missing = set(src.before) - set(self.sources)
            if missing:
                raise ValueError(f"source {src.name!r} comes before unknown sources {missing}")
        object.__setattr__(self, "_order", _match_order(self.sources))
        return self

    @classmethod
    def from_toml(cls, *texts: str) -> SourceConfig:
        """Merge TOML documents in order; a kind or source declared twice is an error."""
        kinds: dict[str, Any] = {}
        sources: dict[str, Any] = {}
        for text in texts:
            raw = tomllib.loads(text)
            for table, merged in (("kinds", kinds), ("sources", sources)):
                for name, body in raw.get(table, {}).items():
                    if name in merged:
                        raise ValueError(f"{table[:-1]} {name!r} is declared twice")
                    merged[name] = {"name": name, **body} if table == "sources" else body
        return cls.model_validate({"kinds": kinds, "sources": sources})

    @classmethod
    def load(cls, path: str | Path | None = None) -> SourceConfig:
        """Load `path` (a TOML file, or a folder of them in name order), or the packaged
        configuration (`service/config/*.toml`) when None. Sources match in that order."""
        if path is None:
            folder = resources.files("service").joinpath("config")
            files = sorted(
                (f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name
            )
            return cls.from_toml(*(f.read_text() for f in files))
        path = Path(path)
        if path.is_dir():
            return cls.from_toml(*(f.read_text() for f in sorted(path.glob("*.toml"))))
        return cls.from_toml(path.read_text())

    def match(self, record: dict[str, Any]) -> SourceMapping | None:
        for src in self._order:  # type: ignore[attr-defined]
            if src.matches(record):
                return src
        return None


def _match_order(sources: dict[str, SourceMapping]) -> tuple[SourceMapping, ...]:
    """Declaration order, except that a source with `before` moves just ahead of the first
    source it names (a later file can claim records an earlier file's source would take)."""
    order = [s for s in sources.values() if not s.before]
    for src in (s for s in sources.values() if s.before):
        names = [s.name for s in order]
        ahead = [names.index(n) for n in src.before if n in names]
        order.insert(min(ahead) if ahead else len(order), src)
    return tuple(order)
