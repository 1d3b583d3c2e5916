"""Decoding: every record ends as exactly one event or one dead letter with a reason."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import DeadLetter, DeadLetterReason
from service.decode import DecodedEvent, Decoder
from service.sources import SourceConfig
from tests.conftest import Record, records_of

DECODER = Decoder(SourceConfig.load(), max_message_bytes=4096)
GOOD = {
    "kind": "ids_alert",
    "time": 1.0,
    "entities": {"name": "n", "short": "s", "ip": "10.0.0.1", "host": "h"},
}


def _one(value: bytes, headers: list | None = None) -> DecodedEvent | DeadLetter:
    return DECODER.decode(Record("events", 2, 7, 1_700_000_000_000, value, headers))


def test_a_canonical_event_decodes_with_its_row_in_kind_order() -> None:
    out = _one(orjson.dumps(GOOD))
    assert isinstance(out, DecodedEvent)
    assert out.row == ("n", "s", "10.0.0.1", "h")


def test_a_source_record_without_time_takes_the_kafka_timestamp() -> None:
    out = _one(orjson.dumps({"name": "n", "short": "s", "ip": "i", "host": "h"}))
    assert isinstance(out, DecodedEvent)
    assert out.event.time == 1_700_000_000.0


def test_the_source_header_selects_a_mapping() -> None:
    rec = {"name": "n", "short": "s", "ip": "i", "host": "h", "time": 5}
    assert isinstance(
        _one(orjson.dumps(rec), [("outrider-source", b"ait_ids_alert")]), DecodedEvent
    )
    out = _one(orjson.dumps(rec), [("outrider-source", b"nope")])
    assert isinstance(out, DeadLetter) and out.reason is DeadLetterReason.unknown_kind


@pytest.mark.parametrize(
    ("value", "reason", "fragment"),
    [
        (b"{not json", DeadLetterReason.malformed_json, "not valid JSON"),
        (b"\xff\xfe\x00garbage", DeadLetterReason.malformed_json, "not valid JSON"),
        (b"", DeadLetterReason.malformed_json, "not valid JSON"),
        (b"[1, 2, 3]", DeadLetterReason.not_an_object, "got list"),
        (b'"just a string"', DeadLetterReason.not_an_object, "got str"),
        (b"x" * 5000, DeadLetterReason.oversized, "exceeds the limit of 4096"),
        (orjson.dumps({**GOOD, "time": "yesterday"}), DeadLetterReason.invalid_event, "time"),
        (
            orjson.dumps({**GOOD, "entities": {"name": None}}),
            DeadLetterReason.invalid_event,
            "entities.name",
        ),
        (orjson.dumps({**GOOD, "kind": "martian"}), DeadLetterReason.unknown_kind, "martian"),
        (orjson.dumps({"hello": "world"}), DeadLetterReason.unknown_kind, "fields: hello"),
        (
            orjson.dumps({**GOOD, "entities": {"name": "n"}}),
            DeadLetterReason.missing_entity,
            "short",
        ),
        (b"[" * 2000 + b"]" * 2000, DeadLetterReason.malformed_json, "not valid JSON"),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_a_reason(
    value: bytes, reason: DeadLetterReason, fragment: str
) -> None:
    out = _one(value)
    assert isinstance(out, DeadLetter)
    assert out.reason is reason
    assert fragment in out.detail
    assert (out.topic, out.partition, out.offset) == ("events", 2, 7)
    assert base64.b64decode(out.original_b64) == value
    assert out.original_size == len(value)


def test_hostile_strings_are_bounded_in_the_reason() -> None:
    out = _one(orjson.dumps({"kind": "k" * 10_000, "time": 1, "entities": {}}))
    assert isinstance(out, DeadLetter)
    assert len(out.detail) < 500


def test_optional_entities_default_to_empty() -> None:
    rec = {
        "kind": "network_conn",
        "time": 1,
        "entities": {"orig_h": "a", "resp_h": "b", "resp_p": 53, "proto": "udp"},
    }
    out = _one(orjson.dumps(rec))
    assert isinstance(out, DecodedEvent)
    assert out.row == ("a", "b", "53", "udp", "", "")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(orjson.dumps),
        st.fixed_dictionaries(
            {"kind": st.text(max_size=20), "time": json_values, "entities": json_values}
        ).map(orjson.dumps),
    )
)
def test_any_bytes_give_exactly_one_outcome_and_never_raise(value: bytes) -> None:
    ok, dead = DECODER.decode_many(records_of([value]))
    assert len(ok) + len(dead) == 1
    if dead:
        assert dead[0].detail
        assert base64.b64decode(dead[0].original_b64) == value
