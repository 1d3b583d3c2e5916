"""Delivery under failure: kill -9 mid-stream loses nothing; hostile input never stops the
consumer and always reaches the dead-letter topic with a reason."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from service.replay import read_records
from tests.integration.kit import (
    CONSUMERS,
    committed_total,
    consume_all,
    fresh_settings,
    produce,
    running,
    wait_until,
)


def _serve(settings, log: Path) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    env = {**os.environ}
    for name, value in settings.model_dump().items():
        if value is not None and name != "sasl_password":
            env[f"OUTRIDER_{name.upper()}"] = str(value)
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--batch-max-events", "500"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _killed_and_restarted(bootstrap: str, s, records: list, log: Path) -> None:  # type: ignore[no-untyped-def]
    """Replay `records`, kill -9 the service once it committed 3,000, start it again and let
    it finish them (every offset committed), then stop it with SIGTERM."""
    produce(bootstrap, s.events_topic, [orjson.dumps(r) for r in records])
    first = _serve(s, log)
    progressed = wait_until(
        lambda: committed_total(bootstrap, s.group_id, s.events_topic) > 3000, 120, 0.05
    )
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert progressed, log.read_text()[-3000:]
    at_kill = committed_total(bootstrap, s.group_id, s.events_topic)
    assert at_kill < len(records), "killed too late to test anything"

    second = _serve(s, log)
    try:
        assert wait_until(
            lambda: committed_total(bootstrap, s.group_id, s.events_topic) == len(records), 180
        ), log.read_text()[-3000:]
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, "SIGTERM drains and exits cleanly"


@pytest.mark.parametrize("client", CONSUMERS)
def test_kill_9_mid_stream_leaves_nothing_unscored(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path, client: str
) -> None:
    records = read_records(datasets / "ait-ads" / "russellmitchell_alerts.csv.gz")[:30_000]
    s = fresh_settings(kafka_bootstrap, tmp_path, **CONSUMERS[client])
    _killed_and_restarted(kafka_bootstrap, s, records, tmp_path / "serve.log")

    scored = consume_all(kafka_bootstrap, s.scores_topic, len(records))
    offsets = {
        (o["partition"], o["offset"]) for o in (orjson.loads(r.value)["origin"] for r in scored)
    }
    assert len(offsets) == len(records), "every input offset was scored at least once"

    ids_by_origin: dict[tuple, set] = defaultdict(set)  # by event and finding: the model's
    for r in consume_all(kafka_bootstrap, s.alerts_topic, 1, timeout_s=20):  # or a stream's
        a = orjson.loads(r.value)
        finding = a["attributes"].get("stream_context", {}).get("reason")
        ids_by_origin[(a["origin"]["partition"], a["origin"]["offset"], finding)].add(a["alert_id"])
    assert ids_by_origin
    assert all(len(ids) == 1 for ids in ids_by_origin.values()), "a redo mints the same id"


def test_exactly_once_a_kill_9_leaves_every_output_once_for_committed_readers(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    """`--exactly-once` (librdkafka): each batch's outputs and offsets commit in one
    transaction. A kill -9 mid-stream leaves its open transaction behind; the restarted
    service (same transactional id) fences and aborts it and redoes the batch. A
    read_committed reader then sees every input offset's score exactly once and every alert
    id once: no duplicates to recognise, where at least once has them."""
    records = read_records(datasets / "ait-ads" / "russellmitchell_alerts.csv.gz")[:30_000]
    s = fresh_settings(kafka_bootstrap, tmp_path, consumer_client="librdkafka",
                       exactly_once=True)  # fmt: skip
    _killed_and_restarted(kafka_bootstrap, s, records, tmp_path / "serve.log")

    scored = consume_all(kafka_bootstrap, s.scores_topic, len(records),
                         isolation_level="read_committed")  # fmt: skip
    origins = [(o["partition"], o["offset"]) for o in (orjson.loads(r.value)["origin"]
                                                        for r in scored)]  # fmt: skip
    assert len(set(origins)) == len(records), "every input offset was scored"
    assert len(origins) == len(records), "and exactly once, for a read_committed reader"
    alerts = consume_all(kafka_bootstrap, s.alerts_topic, 1, timeout_s=20,
                         isolation_level="read_committed")  # fmt: skip
    ids = [orjson.loads(r.value)["alert_id"] for r in alerts]
    assert ids and len(ids) == len(set(ids)), "no alert twice"


hostile = st.one_of(
    st.binary(min_size=0, max_size=200),
    st.text(max_size=200).map(str.encode),
    st.just(b'{"kind": "ids_alert", "time": 1, "entities": {"name": 1e999}}'),
    st.builds(lambda n: b"[" * n + b"]" * n, st.integers(100, 5000)),
    st.builds(
        lambda s: orjson.dumps(
            {"kind": "ids_alert", "time": 1, "entities": {"name": s, "short": "x", "ip": "1.1.1.1"}}
        ),
        st.text(max_size=50),
    ),  # host missing
    st.builds(
        lambda s: orjson.dumps({"kind": s, "time": 1, "entities": {"a": "b"}}),
        st.text(min_size=1, max_size=30).filter(lambda k: k != "ids_alert"),
    ),
    st.just(b"\x00" * 400_000),  # oversized
    st.builds(
        lambda s: orjson.dumps(
            {
                "name": s,
                "short": "<script>alert(1)</script>",
                "ip": "'; DROP TABLE x;--",
                "host": "\u202e\u0000",
                "time": "soon",
            }
        ),
        st.text(max_size=20),
    ),
)


@pytest.mark.parametrize("client", CONSUMERS)
@hsettings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(hostile, min_size=300, max_size=300))
def test_hostile_messages_all_reach_the_dead_letter_topic(
    kafka_bootstrap: str,
    tmp_path_factory,
    client: str,
    bad: list[bytes],  # type: ignore[no-untyped-def]
) -> None:
    s = fresh_settings(
        kafka_bootstrap,
        tmp_path_factory.mktemp("bad"),
        calibration_min_samples=100,
        **CONSUMERS[client],
    )
    good = [
        orjson.dumps(
            {
                "kind": "ids_alert",
                "time": 1_700_000_000 + i,
                "entities": {"name": f"n{i % 7}", "short": "s", "ip": "10.0.0.1", "host": "h"},
            }
        )
        for i in range(600)
    ]
    mixed = [v for pair in zip(good, bad + [b"{}"] * 300, strict=True) for v in pair]
    produce(kafka_bootstrap, s.events_topic, mixed)
    with running(s):
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == len(mixed), 120
        )
    dead = consume_all(kafka_bootstrap, s.dead_letter_topic, 600, timeout_s=60)
    scored = consume_all(kafka_bootstrap, s.scores_topic, 600, timeout_s=60)
    assert len(scored) == 600, "every good event scored"
    assert len(dead) == 600, "every bad record dead-lettered, none twice"
    originals = set()
    for r in dead:
        dl = orjson.loads(r.value)
        assert dl["reason"] and dl["detail"]
        headers = dict(r.headers)
        assert headers["__connect.errors.topic"] == s.events_topic.encode()
        originals.add(base64.b64decode(dl["original_b64"]))
    assert set(bad) | {b"{}"} == originals
