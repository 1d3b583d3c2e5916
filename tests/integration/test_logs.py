"""Raw logs and Zeek records through the real broker: template-mined, scored, alerted; lines
no log format parses go to the dead-letter topic with a reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from service.replay import encode_record, read_records
from tests.integration.kit import (
    committed_total,
    consume_all,
    fresh_settings,
    produce,
    running,
    wait_until,
)

GARBAGE = [b"", b"\xff\xfe\xfd not utf-8", b"\x00\x01\x02\x03", b"x" * 20_000]


def test_bgl_lines_and_zeek_records_are_scored(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=200, batch_max_events=250)
    lines = read_records(datasets / "loghub" / "BGL_2k.log.gz")
    zeek = read_records(datasets / "stratosphere-zeek" / "008-zeek-mixed" / "conn.log.labeled.gz")[
        :3000
    ]
    assert len(lines) == 2000 and isinstance(lines[0], str)
    produce(kafka_bootstrap, s.logs_topic, [encode_record(x) for x in lines] + GARBAGE)
    produce(kafka_bootstrap, s.events_topic, [encode_record(z) for z in zeek])

    with running(s):
        assert wait_until(
            lambda: (
                committed_total(kafka_bootstrap, s.group_id, s.logs_topic) == 2004
                and committed_total(kafka_bootstrap, s.group_id, s.events_topic) == 3000
            ),
            180,
        )

    scored = Counter(
        orjson.loads(r.value)["kind"] for r in consume_all(kafka_bootstrap, s.scores_topic, 5000)
    )
    assert scored == {"log_line": 2000, "network_conn": 3000}
    dead = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.dead_letter_topic, 4)]
    assert len(dead) == 4
    assert {d["reason"] for d in dead} == {"unparseable_line"}
    alerts = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.alerts_topic, 1)]
    kinds = {a["kind"] for a in alerts}
    assert "log_line" in kinds
    log_alert = next(a for a in alerts if a["kind"] == "log_line")
    assert log_alert["entities"]["template"].startswith("T")
    assert "message" in log_alert["attributes"]
