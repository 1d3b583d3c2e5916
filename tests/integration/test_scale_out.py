"""Scale-out is Kafka's: two `outrider serve` processes in one consumer group over a
4-partition topic share the AIT russellmitchell alerts; one is killed with SIGKILL mid-stream,
the other takes its partitions, and every input offset ends up scored at least once."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from service.replay import read_records
from service.settings import Settings
from tests.integration.kit import (
    ScoreReader,
    committed_total,
    free_port,
    fresh_settings,
    scrape,
    serve_process,
    wait_until,
)

N_RECORDS = 20_000
PARTITIONS = 4


def _serve(settings: Settings, name: str, state: Path, port: int, log: Path) -> subprocess.Popen:
    return serve_process(
        settings, log, "--batch-max-events", "500", "--client-id", f"outrider-{name}",
        "--state-dir", str(state), "--metrics-port", str(port),
    )  # fmt: skip


def _consumed(port: int) -> float:
    found = re.findall(r"^outrider_events_consumed_total\{[^}]*\} (\S+)$", scrape(port), re.M)
    return sum(float(v) for v in found)


def _assignment(admin: KafkaAdminClient, group: str, topic: str) -> dict[str, set[int]] | None:
    """Partitions of `topic` per consumer client id, once the group is stable."""
    try:
        info = admin.describe_groups([group])[group]
    except KafkaError:  # e.g. no coordinator yet on a fresh broker
        return None
    if info["group_state"] != "Stable":
        return None
    out: dict[str, set[int]] = {}
    for member in info["members"]:
        parts = out.setdefault(member["client_id"], set())
        for item in member["member_assignment"]["assigned_partitions"]:
            if item["topic"] == topic:
                parts.update(item["partitions"])
    return out


def _input_offsets(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        end = consumer.end_offsets(parts)
    finally:
        consumer.close()
    return {(tp.partition, o) for tp in parts for o in range(end[tp])}


def _produce_paced(bootstrap: str, topic: str, values: list[bytes], per_s: float) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    try:
        chunk = 250
        for i in range(0, len(values), chunk):
            for v in values[i : i + chunk]:
                producer.send(topic, v)
            producer.flush()
            time.sleep(chunk / per_s)
    finally:
        producer.close()


def test_two_scorers_share_the_load_and_survive_a_kill(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    records = read_records(datasets / "ait-ads" / "russellmitchell_alerts.csv.gz")[:N_RECORDS]
    values = [orjson.dumps(r) for r in records]
    half = len(values) // 2
    s = fresh_settings(kafka_bootstrap, tmp_path / "unused")
    log = tmp_path / "serve.log"
    ports = {"a": free_port(), "b": free_port()}
    procs: dict[str, subprocess.Popen] = {}
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="scale-out-test")

    def tail() -> str:
        return log.read_text(errors="replace")[-4000:]

    def committed() -> int:
        return committed_total(kafka_bootstrap, s.group_id, s.events_topic, PARTITIONS)

    scores = ScoreReader(kafka_bootstrap, s.scores_topic, PARTITIONS)
    try:
        for name in ("a", "b"):
            procs[name] = _serve(s, name, tmp_path / name, ports[name], log)

        # both joined: the group is stable with two members holding two partitions each
        shares: dict[str, Any] = {}

        def balanced() -> bool:
            got = _assignment(admin, s.group_id, s.events_topic)
            shares.clear()
            shares.update(got or {})
            return sorted(len(p) for p in shares.values()) == [2, 2]

        assert wait_until(balanced, 120, 0.5), f"{shares}\n{tail()}"
        assert set(shares) == {"outrider-a-consumer", "outrider-b-consumer"}
        assert set().union(*shares.values()) == set(range(PARTITIONS))

        # phase 1: both process part of the load
        _produce_paced(kafka_bootstrap, s.events_topic, values[:half], per_s=50_000)
        first = _input_offsets(kafka_bootstrap, s.events_topic)
        assert len(first) == half
        assert wait_until(lambda: scores.covers(first), 180, 0), tail()
        before = {name: _consumed(port) for name, port in ports.items()}
        assert all(n > 0 for n in before.values()), f"both scorers consumed: {before}"
        assert sum(before.values()) >= half

        # phase 2: kill -9 `a` while events still stream in
        producer = threading.Thread(
            target=_produce_paced,
            args=(kafka_bootstrap, s.events_topic, values[half:], 2_000.0),
            daemon=True,
        )
        producer.start()
        assert wait_until(lambda: _consumed(ports["a"]) >= before["a"] + 250, 60, 0.05), tail()
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(30)
        scores.covers(set())
        at_kill = len(scores.origins)
        producer.join(120)
        assert not producer.is_alive()
        assert at_kill < len(values), "killed too late to test anything"
        expected = _input_offsets(kafka_bootstrap, s.events_topic)
        assert len(expected) == len(values)

        # `b` takes every partition and finishes the stream
        def taken_over() -> bool:
            got = _assignment(admin, s.group_id, s.events_topic)
            return got == {"outrider-b-consumer": set(range(PARTITIONS))}

        assert wait_until(taken_over, 120, 0.5), tail()
        # every input offset scored at least once: a's uncommitted work was redone by b
        assert wait_until(lambda: scores.covers(expected), 180, 0), (
            f"{len(expected - scores.origins)} offsets never scored\n{tail()}"
        )
        assert scores.count >= len(values)
        commits_caught_up = wait_until(lambda: committed() == len(values), 60, 0.5)
        stuck_at = committed()
        assert procs["b"].poll() is None, "the survivor is still running"
        assert _consumed(ports["b"]) > before["b"]
        lag_partitions = set(
            re.findall(
                r'^outrider_consumer_lag_events\{partition="(\d+)",topic="'
                + re.escape(s.events_topic),
                scrape(ports["b"]),
                re.M,
            )
        )
        assert lag_partitions == {str(p) for p in range(PARTITIONS)}, "b reports all partitions"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        admin.close()
        scores.close()
    assert procs["b"].returncode == 0, "SIGTERM drains and exits cleanly"

    # the group's offsets catch up too (a quiet topic's progress is recommitted once a second,
    # kafka_io.py `poll_batch`): a restart redoes nothing already scored
    assert commits_caught_up, f"committed offsets stuck at {stuck_at} of {len(values)}"
