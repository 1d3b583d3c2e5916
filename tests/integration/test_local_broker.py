"""The local broker behaves like Kafka: it answers, keeps order per key, keeps committed
offsets and data across a restart, and keeps its address, which the service's restart and
at-least-once tests rely on."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from service.local_broker import EXTERNAL_ENV, LocalBroker

TopicFactory = Callable[..., str]  # the `topic_factory` fixture (tests/integration/conftest.py)

N_MESSAGES = 1000
PARTITIONS = 4


def _produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(topic, key=f"k{i % 37}".encode(), value=f"m{i}".encode())
            for i in range(start, start + count)
        ]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )


def _drain(consumer: KafkaConsumer, expected: int, timeout_s: float = 60.0) -> list[str]:
    """Poll until `expected` values arrived, then a little longer to catch any extras."""
    values: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values.extend(r.value.decode() for r in records)
    for records in consumer.poll(timeout_ms=500).values():
        values.extend(r.value.decode() for r in records)
    return values


def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        consumer.close(autocommit=False)


def _expected(start: int, count: int) -> list[str]:
    return sorted(f"m{i}" for i in range(start, start + count))


def test_broker_answers(kafka_bootstrap: str, local_broker: LocalBroker) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    assert host and port.isdigit()
    assert local_broker.is_running()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()


def test_produce_consume_commit(kafka_bootstrap: str, topic_factory: TopicFactory) -> None:
    topic = topic_factory(partitions=PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, 0, N_MESSAGES)

    consumer = _consumer(kafka_bootstrap, topic, group)
    try:
        values = _drain(consumer, N_MESSAGES)
        consumer.commit()
        assert consumer.assignment() == {TopicPartition(topic, p) for p in range(PARTITIONS)}
    finally:
        consumer.close(autocommit=False)

    assert sorted(values) == _expected(0, N_MESSAGES)  # all of them, each once
    committed = _committed(kafka_bootstrap, topic, group)
    assert all(offset for offset in committed.values()), committed  # keys spread over all 4
    assert sum(o or 0 for o in committed.values()) == N_MESSAGES


@pytest.mark.skipif(bool(os.environ.get(EXTERNAL_ENV)), reason="cannot restart an external cluster")
def test_restart_keeps_data_offsets_and_address(
    kafka_bootstrap: str, local_broker: LocalBroker, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=PARTITIONS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, 0, N_MESSAGES)
    consumer = _consumer(kafka_bootstrap, topic, group)
    try:
        assert len(_drain(consumer, N_MESSAGES)) == N_MESSAGES
        consumer.commit()
    finally:
        consumer.close(autocommit=False)
    before = _committed(kafka_bootstrap, topic, group)

    assert local_broker.restart() == kafka_bootstrap
    assert local_broker.is_running()

    # Committed offsets survived, so the group resumes exactly where it stopped...
    assert _committed(kafka_bootstrap, topic, group) == before
    _produce(kafka_bootstrap, topic, N_MESSAGES, 10)
    consumer = _consumer(kafka_bootstrap, topic, group)
    try:
        assert sorted(_drain(consumer, 10)) == _expected(N_MESSAGES, 10)
    finally:
        consumer.close(autocommit=False)

    # ...and the data survived: a new group reads everything from the start.
    consumer = _consumer(kafka_bootstrap, topic, f"g-{uuid.uuid4().hex[:8]}")
    try:
        assert sorted(_drain(consumer, N_MESSAGES + 10)) == _expected(0, N_MESSAGES + 10)
    finally:
        consumer.close(autocommit=False)
