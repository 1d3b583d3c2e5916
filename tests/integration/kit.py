"""Helpers for integration tests: settings on fresh topics, a pipeline in a thread, and
producing/consuming whole topics against the real broker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from service.app import Pipeline
from service.kafka_io import ensure_topics
from service.settings import Settings
from service.trainer import Trainer

#: The ways the chain can consume, by test id: each runs the chain's delivery tests.
CONSUMERS: dict[str, dict[str, Any]] = {
    "kafka-python-process": {"consumer_client": "kafka-python", "consumer_process": True},
    "kafka-python": {"consumer_client": "kafka-python", "consumer_process": False},
    "librdkafka": {"consumer_client": "librdkafka"},
}


def fresh_settings(bootstrap: str, state_dir: Path, **overrides: Any) -> Settings:
    run = uuid.uuid4().hex[:10]
    base: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "events_topic": f"it-events-{run}",
        "alerts_topic": f"it-alerts-{run}",
        "scores_topic": f"it-scores-{run}",
        "logs_topic": f"it-logs-{run}",
        "findings_topic": f"it-findings-{run}",
        "ecs_topic": f"it-ecs-{run}",
        "digest_topic": f"it-digest-{run}",
        "triage_port": -1,
        "dead_letter_topic": f"it-dlq-{run}",
        "feedback_topic": f"it-feedback-{run}",
        "models_topic": f"it-models-{run}",
        "group_id": f"it-group-{run}",
        "state_dir": state_dir,
        "metrics_port": 0,
        "calibration_min_samples": 500,
    }
    settings = Settings(**{**base, **overrides})
    ensure_topics(settings)
    return settings


@contextmanager
def running(settings: Settings) -> Iterator[Any]:
    """A pipeline (or, for role `trainer`, a trainer) consuming in a background thread;
    stopped and joined on exit."""
    pipeline = Trainer(settings) if settings.role == "trainer" else Pipeline(settings)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "pipeline did not stop"
        if errors:
            raise errors[0]


def produce(bootstrap: str, topic: str, values: list[bytes], **kwargs: Any) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 << 10)
    for v in values:
        producer.send(topic, v, **kwargs)
    producer.flush()
    producer.close()


def consume_all(
    bootstrap: str,
    topic: str,
    expect: int,
    timeout_s: float = 120,
    isolation_level: str = "read_uncommitted",
) -> list:
    """Read `topic` from the start until `expect` records arrived (or time out), then on to
    the end every partition had by then: duplicates beyond `expect` must be seen too. (A
    count reached on duplicates stopped the read with a partition's tail unread: kafka-python
    reads one partition's fetch before the next, and a kill -9 test saw 29,000 of 30,000
    offsets scored.) `isolation_level="read_committed"`: as a reader of transactional
    outputs sees them (no record of an open or aborted transaction)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        isolation_level=isolation_level,
    )
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expect and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(records)
        while not consumer.assignment() and time.monotonic() < deadline:  # expect=0
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(records)
        ends = consumer.end_offsets(list(consumer.assignment()))
        while time.monotonic() < deadline and any(
            consumer.position(tp) < end for tp, end in ends.items()
        ):
            for records in consumer.poll(timeout_ms=200).values():
                got.extend(records)
    finally:
        consumer.close()
    return got


def committed_total(bootstrap: str, group: str, topic: str, partitions: int = 4) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        total = 0
        for p in range(partitions):
            off = consumer.committed(TopicPartition(topic, p))
            total += off or 0
        return total
    finally:
        consumer.close()


def wait_until(predicate: Any, timeout_s: float = 120, every_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return False


def ids_events(start: int, n: int, odd_every: int = 0) -> list[bytes]:
    """Canonical ids_alert events at one-second steps; every `odd_every`-th one (from `start`
    on a multiple) is a rare pattern the model should flag."""
    return [
        orjson.dumps({"kind": "ids_alert", "time": 1_700_000_000 + i, "entities": {
            "name": "odd" if odd_every and i % odd_every == 0 else "x",
            "short": "s", "ip": "10.0.0.1", "host": "h"}})
        for i in range(start, start + n)
    ]  # fmt: skip


class ScoreReader:
    """Reads a scores topic from the start as it grows: the (partition, offset) of every
    scored input record, and how many score records there were (redos included)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int = 4,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            max_poll_records=5000,
            isolation_level=isolation_level,
        )
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.origins: set[tuple[int, int]] = set()
        self.count = 0

    def covers(self, expected: set[tuple[int, int]]) -> bool:
        for records in self.consumer.poll(timeout_ms=500).values():
            for r in records:
                o = orjson.loads(r.value)["origin"]
                self.origins.add((o["partition"], o["offset"]))
                self.count += 1
        return expected <= self.origins

    def close(self) -> None:
        self.consumer.close()


def benign_group_with_look_alike(bootstrap: str, alerts_topic: str, ranked: list) -> tuple:
    """An analyst's pick: the top-ranked group whose alerts the attack did not cause (AIT's
    `event_label` is `-` on all of them) that has a look-alike (same alert name and code) on
    another host; (pick, look-alike), or (None, None)."""
    labels: dict[str, set[str]] = {}
    for rec in consume_all(bootstrap, alerts_topic, 1, timeout_s=30):
        a = orjson.loads(rec.value)
        labels.setdefault(a["group_id"], set()).add(a["attributes"].get("event_label", "-"))
    for g in ranked:
        if labels.get(g.group_id) != {"-"}:
            continue
        for h in ranked:
            if (
                h is not g
                and h.entities["name"] == g.entities["name"]
                and h.entities["short"] == g.entities["short"]
                and h.entities["host"] != g.entities["host"]
            ):
                return g, h
    return None, None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_process(settings: Settings, log: Path, *args: str) -> subprocess.Popen:
    """`outrider serve` as an operator runs it: settings as OUTRIDER_* variables, `args` as
    flags (which win), output appended to `log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTRIDER_")}
    for key, value in settings.model_dump().items():
        if value is not None and key != "sasl_password":
            env[f"OUTRIDER_{key.upper()}"] = str(value)
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def scrape(port: int) -> str:
    """The /metrics page on a loopback port ("" while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return ""
