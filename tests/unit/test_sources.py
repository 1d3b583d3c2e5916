"""Source mappings from configuration, checked on real records from the shared datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas import Event
from service.replay import read_records
from service.sources import SourceConfig, lookup, parse_time

CONFIG = SourceConfig.load()


def _event(record: dict) -> Event:
    src = CONFIG.match(record)
    assert src is not None, f"no source matched {list(record)[:6]}"
    return Event.model_validate(src.to_event(record))


def test_ait_rows_become_ids_alert_events(datasets: Path) -> None:
    rows = read_records(datasets / "ait-ads" / "russellmitchell_alerts.csv.gz")
    assert [r["time"] for r in rows[:50]] == sorted(r["time"] for r in rows[:50])
    ev = _event(rows[0])
    assert ev.kind == "ids_alert"
    assert set(ev.entities) == {"name", "short", "ip", "host"}
    assert ev.attributes["event_label"] == rows[0]["event_label"]  # labels kept, not scored
    assert ev.time == float(rows[0]["time"])


def test_zeek_tsv_and_zeek_json_map_the_same_way(datasets: Path) -> None:
    tsv = read_records(
        datasets / "stratosphere-zeek" / "001-zeek-scenario-malicious" / "labeled-conn.log.gz"
    )
    js = read_records(datasets / "security-samples" / "zeek" / "rita_conn.json.gz")
    for rec in (tsv[0], js[0]):
        ev = _event(rec)
        assert ev.kind == "network_conn"
        assert ev.entities["orig_h"] == rec["id.orig_h"]
        assert ev.entities["resp_p"] == str(rec["id.resp_p"])
        assert "id.orig_p" in ev.attributes  # unmapped fields kept


def test_nested_ecs_document_maps_by_dotted_paths() -> None:
    doc = {
        "@timestamp": "2024-05-01T10:00:00Z",
        "process": {"name": "powershell.exe", "parent": {"name": "winword.exe"}},
        "destination": {"ip": "203.0.113.9", "port": 4444},
        "host": {"name": "ws-17"},
        "user": {"name": "alice"},
        "network": {"transport": "tcp"},
    }
    ev = _event(doc)
    assert ev.kind == "process_network"
    assert ev.entities["parent_process"] == "winword.exe"
    assert ev.entities["dst_port"] == "4444"
    assert ev.time == 1714557600.0


def test_lookup_prefers_literal_dotted_keys() -> None:
    assert lookup({"a.b": 1, "a": {"b": 2}}, "a.b") == 1
    assert lookup({"a": {"b": 2}}, "a.b") == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1700000000, 1700000000.0),
        (1700000000123, 1700000000.123),
        ("1.5", 1.5),
        ("2024-01-01T00:00:00+00:00", 1704067200.0),
    ],
)
def test_parse_time(raw: object, expected: float) -> None:
    assert parse_time(raw) == pytest.approx(expected)


def test_config_refuses_inconsistent_sources() -> None:
    bad = """
[kinds.k]
entities = ["a"]
[sources.s]
kind = "k"
match = ["x"]
entities = { b = "x" }
"""
    with pytest.raises(ValidationError, match="unknown entity types"):
        SourceConfig.from_toml(bad)
    with pytest.raises(ValidationError, match="undeclared kind"):
        SourceConfig.from_toml(bad.replace('kind = "k"', 'kind = "nope"'))


def test_packaged_config_merges_every_file_and_refuses_duplicates() -> None:
    assert {"ids_alert", "network_conn"} <= set(CONFIG.kinds)
    doc = '[kinds.k]\nentities = ["a"]\n'
    with pytest.raises(ValueError, match="declared twice"):
        SourceConfig.from_toml(doc, doc)
