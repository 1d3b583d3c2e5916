"""The decoder's fast path decides exactly as the full path (pydantic) does, or defers to it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import DeadLetter
from service.decode import DecodedEvent, Decoder
from service.fastpath import CheckedEvent, ShapeBook
from service.sources import SourceConfig
from tests.conftest import Record

CONFIG = SourceConfig.load()


def _decoder(**kw: Any) -> Decoder:
    return Decoder(CONFIG, max_message_bytes=4096, **kw)


def _outcome(result: DecodedEvent | DeadLetter) -> tuple:
    if isinstance(result, DeadLetter):
        return ("dead", result.reason, result.detail, result.topic, result.offset)
    ev = result.event
    return (
        "ok",
        ev.kind,
        ev.time,
        dict(ev.entities),
        dict(ev.attributes),
        result.row,
        result.record,
    )


def _both(records: list[Record]) -> tuple[list[tuple], list[tuple]]:
    """(decode_many's outcomes, the full path's outcomes), each in record order."""
    dec = _decoder()
    ok, dead = dec.decode_many(records)
    by_offset = {r.record.offset: _outcome(r) for r in ok} | {d.offset: _outcome(d) for d in dead}
    many = [by_offset[r.offset] for r in records]
    full = [_outcome(_decoder().decode(r)) for r in records]
    return many, full


def _records(values: list[bytes], ts: int | None = 1_700_000_000_000) -> list[Record]:
    return [Record("events", 1, i, ts, v, []) for i, v in enumerate(values)]


AIT = {"time": 1642723201, "name": "n", "ip": "10.0.0.1", "host": "h", "short": "s"}


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.text(min_size=1020, max_size=1030),
    st.sampled_from(["", "2022-01-21T10:00:00Z", "1642723201", "soon", "-5", "1e400"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
times = st.one_of(
    values,
    st.integers(0, 2**62),
    st.floats(0, 1e15, allow_nan=False),
    st.sampled_from([0, 1e11, 1e11 + 1, 100_000_000_001, -0.0, 2**53 + 1]),
)
entity_keys = st.one_of(
    st.sampled_from(["name", "short", "ip", "host", "orig_h", "a.b", "x@y"]),
    st.text(max_size=70),
)


def test_ait_rows_take_the_fast_path_and_equal_the_full_path(datasets) -> None:  # type: ignore[no-untyped-def]
    from bench.throughput import load_events

    records = _records(load_events(datasets, 3000))
    many, full = _both(records)
    assert many == full
    ok, dead = _decoder().decode_many(records)
    assert not dead and all(isinstance(e.event, CheckedEvent) for e in ok)
    assert [e.record.offset for e in ok] == list(range(3000))


def test_a_batch_of_mixed_shapes_and_bad_records_keeps_record_order() -> None:
    canonical = {
        "kind": "ids_alert",
        "time": 5,
        "entities": {"name": "n", "short": "s", "ip": "i", "host": "h"},
    }
    zeek = {"ts": 1.5, "id.orig_h": "a", "id.resp_h": "b", "id.resp_p": 53, "proto": "udp"}
    values = [
        orjson.dumps(AIT),
        b"{not json",
        orjson.dumps(canonical),
        orjson.dumps({**AIT, "time": "2022-01-21T00:00:00Z"}),
        orjson.dumps({**AIT, "ip": None}),
        orjson.dumps(zeek),
        orjson.dumps({**AIT, "extra": {"nested": [1, 2]}}),
        orjson.dumps({**canonical, "kind": "martian"}),
        orjson.dumps({**AIT, "time": -1}),
        b"[1]",
    ]
    many, full = _both(_records(values))
    assert many == full
    assert [m[0] for m in many] == [
        "ok",
        "dead",
        "ok",
        "ok",
        "dead",
        "ok",
        "ok",
        "dead",
        "dead",
        "dead",
    ]


def test_lazy_entities_and_attributes_read_as_dicts() -> None:
    (ev,), _ = _decoder().decode_many(_records([orjson.dumps({**AIT, "x": 1, "y": "z"})]))
    assert isinstance(ev.event, CheckedEvent)
    assert ev.event.entities == {"name": "n", "short": "s", "ip": "10.0.0.1", "host": "h"}
    assert ev.event.entities is ev.event.entities  # built once
    assert ev.event.attributes == {"x": 1, "y": "z"}
    assert ev.event.model_dump()["time"] == 1642723201.0
    assert ev.row == ("n", "s", "10.0.0.1", "h")


def test_records_the_fast_path_must_not_judge_take_the_full_path() -> None:
    rec = orjson.dumps({"name": "n", "short": "s", "ip": "i", "host": "h", "time": 5})
    headered = [Record("events", 0, 0, 1, rec, [("outrider-source", b"nope")])]
    (dead,) = _decoder().decode_many(headered)[1]
    assert dead.reason.value == "unknown_kind" and "outrider-source" in dead.detail
    oversized = _records([orjson.dumps({**AIT, "name": "x" * 5000})])
    assert _decoder().decode_many(oversized)[1][0].reason.value == "oversized"
    no_stamp = _records([orjson.dumps({k: v for k, v in AIT.items() if k != "time"})], ts=None)
    many, full = _both(no_stamp)
    assert many == full and many[0][0] == "dead"


def test_the_shape_book_is_bounded_and_still_decodes_new_shapes() -> None:
    dec = _decoder()
    dec.shapes = ShapeBook(CONFIG, max_shapes=3)
    values = [orjson.dumps({**AIT, f"extra{i}": i}) for i in range(10)]
    ok, dead = dec.decode_many(_records(values))
    assert len(ok) == 10 and not dead
    assert len(dec.shapes.plans) == 3


def test_value_dependent_sources_get_no_plan() -> None:
    book = ShapeBook(CONFIG)
    # ECS: a dotted match path reached through a nested object depends on the value
    assert book.plan(("process", "destination", "@timestamp")) is None
    # no source matches: the full path writes the dead letter
    assert book.plan(("hello",)) is None
    assert book.plan(("kind", "entities", "extra")) is None  # extra top-level field


VALUE_DEPENDENT = SourceConfig.from_toml(
    """
[kinds.k]
entities = ["x", "y"]
optional = ["y"]

[sources.nested_match]
kind = "k"
match = ["a.b"]
entities = { x = "c" }

[sources.by_value]
kind = "k"
match = ["c", "d"]
where = { d = ["yes", 1] }
entities = { x = "c" }

[sources.fallback]
kind = "k"
match = ["c"]
time = "t.s"
entities = { x = "c", y = ["e.f", "g"] }
"""
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.fixed_dictionaries(
            {"c": st.one_of(st.text(max_size=3), scalars)},
            optional={
                "a": st.one_of(values, st.fixed_dictionaries({"b": scalars})),
                "a.b": scalars,
                "d": st.one_of(st.sampled_from(["yes", "no", 1, "1", True]), values),
                "t": st.one_of(times, st.fixed_dictionaries({"s": times})),
                "t.s": times,
                "e": st.one_of(values, st.fixed_dictionaries({"f": scalars})),
                "e.f": st.one_of(st.text(max_size=3), scalars),
                "g": st.one_of(st.text(max_size=3), scalars),
            },
        ),
        min_size=1,
        max_size=5,
    )
)
def test_matches_that_depend_on_values_decode_as_the_full_path_decodes_them(
    recs: list[dict],
) -> None:
    records = _records([orjson.dumps(r) for r in recs])
    ok, dead = Decoder(VALUE_DEPENDENT, 4096).decode_many(records)
    by_offset = {r.record.offset: _outcome(r) for r in ok} | {d.offset: _outcome(d) for d in dead}
    full = [_outcome(Decoder(VALUE_DEPENDENT, 4096).decode(r)) for r in records]
    assert [by_offset[r.offset] for r in records] == full


def _ait_like(draw: st.DrawFn) -> dict:
    rec: dict[str, Any] = {}
    for key in draw(st.permutations(["time", "name", "ip", "host", "short"])):
        if draw(st.booleans()) or key != "time":
            rec[key] = (
                draw(st.one_of(st.text(max_size=6), values)) if key != "time" else draw(times)
            )
    for i in range(draw(st.integers(0, 2))):
        rec[f"attr{i}"] = draw(values)
    return rec


def _canonical_like(draw: st.DrawFn) -> dict:
    """A valid canonical event, then up to two fields of it made arbitrary."""
    kind = draw(st.sampled_from(["ids_alert", "network_conn"]))
    ents: Any = (
        {"name": "n", "short": "s", "ip": "i", "host": "h"}
        if kind == "ids_alert"
        else {"orig_h": "a", "resp_h": "b", "resp_p": 53, "proto": "udp"}
    )
    rec: dict[str, Any] = {"kind": kind, "entities": dict(ents), "time": 1.0, "attributes": {}}
    for _ in range(draw(st.integers(0, 2))):
        what = draw(st.sampled_from(["kind", "ent_key", "ent_value", "ents", "time", "no_time",
                                     "attrs", "no_attrs", "extra", "drop_ent"]))  # fmt: skip
        if what == "kind":
            rec["kind"] = draw(st.one_of(st.sampled_from(["login", "x y", "k" * 65, ""]), values))
        elif what == "ent_key" and isinstance(rec["entities"], dict):
            rec["entities"][draw(entity_keys)] = "v"
        elif what == "ent_value" and isinstance(rec["entities"], dict):
            key = draw(st.sampled_from(sorted(rec["entities"]) or ["name"]))
            rec["entities"][key] = draw(values)
        elif what == "ents":
            rec["entities"] = draw(values)
        elif what == "drop_ent" and isinstance(rec["entities"], dict) and rec["entities"]:
            rec["entities"].pop(draw(st.sampled_from(sorted(rec["entities"]))))
        elif what == "time":
            rec["time"] = draw(times)
        elif what == "no_time":
            rec.pop("time", None)
        elif what == "attrs":
            rec["attributes"] = draw(values)
        elif what == "no_attrs":
            rec.pop("attributes", None)
        elif what == "extra":
            rec["extra"] = draw(values)
    return rec


def _zeek_like(draw: st.DrawFn) -> dict:
    rec: dict[str, Any] = {
        "ts": draw(times),
        "id.orig_h": draw(st.one_of(st.text(max_size=5), scalars)),
        "id.resp_h": "10.0.0.2",
        "id.resp_p": draw(st.one_of(st.integers(0, 65535), scalars)),
        "proto": "tcp",
    }
    if draw(st.booleans()):
        rec["service"] = draw(st.one_of(st.text(max_size=5), scalars))
    if draw(st.booleans()):
        rec["id"] = {"orig_h": "nested"}  # a head of a dotted path: no plan
    return rec


@st.composite
def shaped(draw: st.DrawFn) -> dict:
    return draw(st.sampled_from([_ait_like, _canonical_like, _zeek_like]))(draw)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(shaped(), min_size=1, max_size=6), st.sampled_from([1_700_000_000_000, None, -1]))
def test_any_near_valid_record_decodes_as_the_full_path_decodes_it(
    recs: list[dict], ts: int | None
) -> None:
    many, full = _both(_records([orjson.dumps(r) for r in recs], ts=ts))
    assert many == full


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.builds(dict), min_size=0, max_size=0), st.data())
def test_a_batch_of_one_shape_with_one_bad_value_equals_the_full_path(
    _: list, data: st.DataObject
) -> None:
    good = [{**AIT, "name": f"n{i}"} for i in range(20)]
    i = data.draw(st.integers(0, 19))
    field = data.draw(st.sampled_from(["time", "name", "ip", "host", "short"]))
    good[i] = {**good[i], field: data.draw(values if field != "time" else times)}
    many, full = _both(_records([orjson.dumps(r) for r in good]))
    assert many == full


@pytest.mark.parametrize("value", [53, 2**63, -7])
def test_integer_entities_become_their_decimal_text(value: int) -> None:
    rec = {
        "kind": "network_conn",
        "time": 1,
        "entities": {"orig_h": "a", "resp_h": "b", "resp_p": value, "proto": "udp"},
    }
    many, full = _both(_records([orjson.dumps(rec)]))
    assert many == full and many[0][5][2] == str(value)


@pytest.mark.parametrize(
    "rec",
    [
        {"c": "x", "e": {"f": "nested"}, "g": "flat"},  # y from the nested e.f, not g
        {"c": "x", "e": "not a dict", "g": "flat"},  # e.f missing: y from g
        {"c": "x", "t": {"s": 7}},  # time from the nested t.s
        {"c": "x", "t": 7},  # t.s missing: the record timestamp
        {"c": "x", "a": {"b": 1}},  # nested_match through a nested object
        {"c": "x", "a": 1},  # a.b missing: fallback
        {"c": "x", "d": "yes"},  # by_value
        {"c": "x", "d": 1},
        {"c": "x", "d": True},
    ],
)
def test_value_dependent_examples(rec: dict) -> None:
    (record,) = _records([orjson.dumps(rec)])
    (many,) = [
        _outcome(r) for part in Decoder(VALUE_DEPENDENT, 4096).decode_many([record]) for r in part
    ]
    assert many == _outcome(Decoder(VALUE_DEPENDENT, 4096).decode(record))


def test_a_mapped_record_without_a_required_entity_is_a_dead_letter() -> None:
    config = SourceConfig.from_toml(
        '[kinds.k]\nentities = ["x", "y"]\n'
        '[sources.s]\nkind = "k"\nmatch = ["c"]\nentities = { x = "c", y = "g" }\n'
    )
    (record,) = _records([orjson.dumps({"c": "x"})])
    ok, (dead,) = Decoder(config, 4096).decode_many([record])
    assert not ok and dead.reason.value == "missing_entity"
