"""Raw log lines -> log_line events: formats on real samples, templates, ids, state, bounds."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas import Event
from service.logmining import LogMiner, LogParseError, MinerParams, load_log_formats
from service.replay import encode_record, read_records, sniff_format
from service.sources import SourceConfig

CONFIG = SourceConfig.load()
SLOT_TYPES = {"ip", "number", "path", "id", "word"}
RECEIVED = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


def _lines(path: Path, n: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    return lines[:n] if n else lines


def _check_event(ev: dict) -> Event:
    event = Event.model_validate(ev)
    spec = CONFIG.kinds[event.kind]
    assert all(t in event.entities for t in spec.entities if t not in spec.optional)
    return event


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("loghub/BGL_2k.log.gz", "bgl"),
        ("loghub/HDFS_2k.log.gz", "hdfs"),
        ("security-samples/syslog/loghub_Linux_2k.log.gz", "syslog_3164"),
        ("security-samples/syslog/loghub_OpenSSH_2k.log.gz", "syslog_3164"),
        ("security-samples/syslog/metron_Syslog3164Output.log.gz", "syslog_3164"),
        ("security-samples/syslog/metron_Syslog5424Output.log.gz", "syslog_5424"),
    ],
)
def test_every_line_of_real_samples_parses_into_a_valid_event(
    datasets: Path, path: str, fmt: str
) -> None:
    miner = LogMiner()
    lines = _lines(datasets / path)
    events = [miner.event_for_line(line, received_time=RECEIVED) for line in lines]
    formats = [e["attributes"]["log_format"] for e in events]
    assert formats.count(fmt) >= 0.99 * len(lines)
    for ev in events:
        event = _check_event(ev)
        assert event.kind == "log_line"
        assert event.entities["template"].startswith("T")
        assert 0 < event.time <= RECEIVED + 86_400


def test_header_fields_of_each_format(datasets: Path) -> None:
    miner = LogMiner()
    bgl = miner.event_for_line(_lines(datasets / "loghub/BGL_2k.log.gz", 1)[0])
    assert bgl["time"] == 1117838570.0
    assert bgl["entities"] | {"template": ""} == {
        "template": "",
        "host": "R02-M1-N0-C:J12-U11",
        "program": "KERNEL",
        "level": "info",  # levels lower-cased: one vocabulary across sources
    }
    assert bgl["attributes"]["alert_category"] == "-"  # the label: kept, never scored
    assert bgl["attributes"]["message"] == "instruction cache parity error corrected"

    hdfs = miner.event_for_line(_lines(datasets / "loghub/HDFS_2k.log.gz", 1)[0])
    assert hdfs["time"] == datetime(2008, 11, 9, 20, 36, 15, tzinfo=UTC).timestamp()
    assert hdfs["entities"]["program"] == "dfs.DataNode$PacketResponder"
    assert hdfs["entities"]["level"] == "info"
    assert (
        hdfs["attributes"]["template_text"] == "PacketResponder <NUM> for block <BLK> terminating"
    )
    assert hdfs["entities"]["slot_1"] == "id:<id>"

    sys5424 = _lines(datasets / "security-samples/syslog/metron_Syslog5424Output.log.gz")
    ev = miner.event_for_line(sys5424[1])
    assert ev["time"] == datetime(2014, 6, 20, 9, 14, 8, tzinfo=UTC).timestamp()
    assert (ev["entities"]["host"], ev["entities"]["level"]) == ("loggregator", "info")
    assert ev["attributes"]["msgid"] == "MSG-02"
    assert ev["attributes"]["structured_data"].startswith("[exampleSDID@32473")
    assert ev["attributes"]["message"] == "Removing instance"

    asa = _lines(datasets / "security-samples/syslog/metron_Syslog3164Output.log.gz", 1)[0]
    ev = miner.event_for_line(asa, received_time=RECEIVED)
    assert ev["entities"]["level"] == "debug"  # <167>: severity 7
    assert ev["attributes"]["facility"] == 20
    assert ev["entities"]["program"] == "%ASA-7-609001"
    assert ev["time"] == datetime(2024, 1, 5, 8, 52, 35, tzinfo=UTC).timestamp()

    ssh = miner.event_for_line(
        _lines(datasets / "security-samples/syslog/loghub_OpenSSH_2k.log.gz", 2)[1], RECEIVED
    )
    assert (ssh["entities"]["host"], ssh["entities"]["program"]) == ("LabSZ", "sshd")
    assert ssh["attributes"]["pid"] == "24200"
    assert "ip:173.234.31.186" in ssh["entities"].values()
    # A December line received in March belongs to the year before.
    assert ssh["time"] == datetime(2023, 12, 10, 6, 55, 46, tzinfo=UTC).timestamp()


def _grouping_accuracy(predicted: list[str], reference: list[str]) -> float:
    by_pred: dict[str, set[int]] = defaultdict(set)
    by_ref: dict[str, set[int]] = defaultdict(set)
    for i, (p, r) in enumerate(zip(predicted, reference, strict=True)):
        by_pred[p].add(i)
        by_ref[r].add(i)
    right = sum(len(s) for s in by_ref.values() if by_pred[predicted[min(s)]] == s)
    return right / len(reference)


@pytest.mark.parametrize("name", ["BGL_2k", "HDFS_2k"])
def test_grouping_accuracy_meets_the_target(datasets: Path, name: str) -> None:
    miner = LogMiner()
    lines = _lines(datasets / "loghub" / f"{name}.log.gz")
    predicted = [miner.event_for_line(line)["entities"]["template"] for line in lines]
    with gzip.open(datasets / "loghub" / f"{name}.log_structured.csv.gz", "rt") as f:
        import csv

        reference = [row["EventId"] for row in csv.DictReader(f)]
    assert _grouping_accuracy(predicted, reference) >= 0.9


def test_ids_and_events_are_identical_after_a_reload(datasets: Path) -> None:
    lines = _lines(datasets / "loghub/BGL_2k.log.gz")
    miner = LogMiner()
    for line in lines[:1000]:
        miner.event_for_line(line)
    state = json.loads(json.dumps(miner.state()))  # through text, as a checkpoint stores it
    reloaded = LogMiner.from_state(state)
    assert reloaded.templates == miner.templates
    for line in lines[1000:]:
        assert reloaded.event_for_line(line, 1.0) == miner.event_for_line(line, 1.0)
    assert reloaded.state() == miner.state()


def test_least_recently_used_templates_are_evicted_and_the_state_stays_bounded() -> None:
    miner = LogMiner(params=MinerParams(max_clusters=3))
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    for i, w in enumerate(words):
        miner.event_for_line(f"Jun 14 15:16:0{i} h p[1]: {w} {w} {w} happened")
    assert len(miner.templates) == 3
    state = miner.state()
    assert [c[4][0] for c in state["clusters"]] == ["charlie", "delta", "echo"]  # LRU order
    again = LogMiner.from_state(state)
    line = "Jun 14 15:16:09 h p[1]: foxtrot foxtrot foxtrot happened"
    assert again.event_for_line(line) == miner.event_for_line(line)
    assert again.templates == miner.templates and len(again.templates) == 3


def test_template_ids_do_not_depend_on_creation_order() -> None:
    lines = [
        "Jun 14 15:16:01 combo sshd[1]: Accepted password for root from 10.0.0.1 port 22 ssh2",
        "Jun 14 15:16:02 combo sshd[1]: Connection closed by 10.0.0.2 [preauth]",
        "Jun 14 15:16:03 combo su[2]: session opened for user news by (uid=0)",
    ]
    a, b = LogMiner(), LogMiner()
    ids_a = [a.event_for_line(x)["entities"]["template"] for x in lines]
    ids_b = [b.event_for_line(x)["entities"]["template"] for x in reversed(lines)]
    assert ids_a == list(reversed(ids_b))
    assert len(set(ids_a)) == 3


def test_template_id_is_kept_when_the_template_generalises() -> None:
    miner = LogMiner()
    first = miner.event_for_line("Jun 14 15:16:01 combo app[1]: session opened for alice on tty1")
    later = miner.event_for_line("Jun 14 15:16:02 combo app[1]: session opened for bob on tty1")
    assert first["attributes"]["template_text"] == "session opened for alice on tty1"
    assert later["attributes"]["template_text"] == "session opened for <*> on tty1"
    assert later["entities"]["template"] == first["entities"]["template"]
    assert later["entities"]["slot_0"] == "word:bob"
    again = LogMiner.from_state(miner.state())
    ev = again.event_for_line("Jun 14 15:16:03 combo app[1]: session opened for carol on tty1")
    assert ev["entities"]["template"] == first["entities"]["template"]


def test_state_is_plain_json_and_a_tampered_one_is_refused() -> None:
    miner = LogMiner()
    miner.event_for_line("081109 203615 148 INFO dfs.DataNode: Receiving block blk_1 src: /1.2.3.4")
    state = miner.state()
    assert json.loads(json.dumps(state)) == state
    assert state["params"]["sim_th"] == MinerParams().sim_th
    bad = json.loads(json.dumps(state))
    bad["clusters"][0][1] = "Tforged"
    with pytest.raises(ValueError, match="checksum"):
        LogMiner.from_state(bad)
    with pytest.raises(ValueError, match="not"):
        LogMiner.from_state({**state, "version": 99})


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   \t ",
        "\x00\x01\x02binary\x7f garbage",
        "Jun 14 15:16:01 combo sshd[1]: ok \ufffd\ufffd",
        "Jun 14 15:16:01 combo sshd[1]: " + "A" * 20_000,
        "this is not a line of any configured format",
    ],
)
def test_unparseable_lines_raise_log_parse_error(line: str) -> None:
    with pytest.raises(LogParseError) as err:
        LogMiner().event_for_line(line)
    assert err.value.reason


def test_parameter_slots_are_bounded_and_typed(datasets: Path) -> None:
    miner = LogMiner()
    events = [
        miner.event_for_line(line, RECEIVED)
        for name in ("loghub_OpenSSH_2k", "loghub_Linux_2k")
        for line in _lines(datasets / "security-samples/syslog" / f"{name}.log.gz")
    ]
    values: set[str] = set()
    for ev in events:
        slots = {k: v for k, v in ev["entities"].items() if k.startswith("slot_")}
        assert set(slots) <= {f"slot_{i}" for i in range(MinerParams().max_slots)}
        for v in slots.values():
            assert v.split(":", 1)[0] in SLOT_TYPES and len(v) <= 80
        values |= set(slots.values())
    assert len(values) < 0.25 * len(events)  # ids and numbers bucketed, not one value per line
    assert "word:root" in values and "ip:183.62.140.253" in values
    # A line naming 100 blocks still fills only max_slots slots, every block id bucketed.
    hdfs = _lines(datasets / "loghub/HDFS_2k.log.gz")
    long_line = max(hdfs, key=len)
    ev = miner.event_for_line(long_line)
    assert sum(k.startswith("slot_") for k in ev["entities"]) == MinerParams().max_slots
    assert ev["entities"]["slot_1"] == "id:<id>"


def test_formats_come_from_config_and_a_site_can_add_a_catch_all(tmp_path: Path) -> None:
    assert [f.name for f in load_log_formats()][:2] == ["bgl", "hdfs"]
    (tmp_path / "90-plain.toml").write_text(
        "[logformats.plain]\npattern = '^(?P<message>.*\\S.*)$'\n"
    )
    formats = load_log_formats() + load_log_formats(tmp_path)
    ev = LogMiner(formats).event_for_line("free text from some app 42", received_time=7.0)
    assert ev["attributes"]["log_format"] == "plain" and ev["time"] == 7.0
    assert ev["entities"]["slot_0"] == "number:~1e1"  # order of magnitude
    _check_event(ev)
    (tmp_path / "91-bad.toml").write_text("[logformats.bad]\npattern = '^(?P<host>\\S+)$'\n")
    with pytest.raises(ValueError, match="message"):
        load_log_formats(tmp_path)


def test_replay_reads_raw_log_files_as_lines(datasets: Path, tmp_path: Path) -> None:
    lines = read_records(datasets / "loghub/HDFS_2k.log.gz")
    assert len(lines) == 2000 and isinstance(lines[0], str)
    assert encode_record(lines[0]) == lines[0].encode("utf-8")
    assert encode_record({"a": 1}) == b'{"a":1}'
    plain = tmp_path / "auth.log"
    plain.write_text("Jun 14 15:16:01 combo sshd[1]: a, b and c\n\nJun 14 15:16:02 combo x: y\n")
    assert sniff_format(plain) == "lines"
    assert read_records(plain, order="time") == [
        "Jun 14 15:16:01 combo sshd[1]: a, b and c",
        "Jun 14 15:16:02 combo x: y",
    ]
    assert sniff_format(datasets / "ait-ads/russellmitchell_alerts.csv.gz") == "csv"


def test_shipper_parsed_syslog_json_maps_by_config(datasets: Path) -> None:
    line = _lines(datasets / "security-samples/syslog/loghub_OpenSSH_2k.log.gz", 2)[1]
    _, groups = LogMiner().parse_header(line)
    record = {  # fluent-bit's rfc3164 parser fields, as its Kafka output publishes them
        "@timestamp": 1702191346.0,
        "host": groups["host"],
        "ident": groups["program"],
        "pid": groups["pid"],
        "message": groups["message"],
    }
    src = CONFIG.match(record)
    assert src is not None and src.name == "syslog_json"
    ev = Event.model_validate(src.to_event(record))
    assert ev.entities == {"host": "LabSZ", "program": "sshd"}
    assert ev.attributes["message"] == "Invalid user webmaster from 173.234.31.186"
