"""The output producer against the real broker: acknowledged outputs land with their keys and
headers; an output the broker refuses (larger than the topic accepts) raises PublishError, and
the producer goes on: the next hand-over is acknowledged normally. (A refused request takes the
records batched with it down too, so their hand-overs fail as well and their batches are redone:
at least once.)"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from service.kafka_io import KafkaIO, PublishError
from service.producer import OutputProducer, TransactionFenced
from tests.integration.kit import consume_all, fresh_settings


def test_acks_land_and_a_refusal_raises_without_stopping_the_producer(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"it-producer-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"max.message.bytes": "20000"})])
    admin.close()
    producer = OutputProducer(
        fresh_settings(kafka_bootstrap, tmp_path), "it-producer", max_request_bytes=4 << 20
    )
    try:
        headers = [("ce_id", b"a-1")]
        good = producer.send_many(
            [(topic, b"small-1", b"k1", headers), (topic, b"small-2", None, None)]
        )
        producer.wait(good, 30)
        assert good.left == 0 and not good.failures
        # incompressible: outputs are lz4-compressed, and 100 kB of one byte would fit
        too_big = producer.send_many([(topic, os.urandom(100_000), b"k2", None)])
        with pytest.raises(PublishError, match=r"refused 1 output.*too large"):
            producer.wait(too_big, 30)
        later = producer.send_many([(topic, b"small-3", b"k3", None)])
        producer.wait(later, 30)
    finally:
        producer.close()
    got = consume_all(kafka_bootstrap, topic, 3, timeout_s=30)
    assert sorted(r.value for r in got) == [b"small-1", b"small-2", b"small-3"]
    first = next(r for r in got if r.value == b"small-1")
    assert first.key == b"k1" and [(k, bytes(v)) for k, v in first.headers] == headers


def test_transactions_commit_together_abort_unseen_and_a_second_owner_fences_the_first(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """--exactly-once's producer: a committed transaction is seen by read_committed readers,
    an aborted one never is; a second producer with the same transactional id (a restarted
    scorer) fences the first, which then stops with TransactionFenced instead of writing."""
    topic = f"it-txn-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    settings = fresh_settings(kafka_bootstrap, tmp_path)
    txn_id = f"it-txn-{uuid.uuid4().hex[:8]}"
    first = OutputProducer(settings, "it-txn-1", 4 << 20, transactional_id=txn_id)
    kept = first.send_many([(topic, b"kept-1", None, None), (topic, b"kept-2", None, None)])
    first.wait(kept, 30)
    first.commit([], None)  # no offsets: outputs only
    dropped = first.send_many([(topic, b"aborted", None, None)])
    first.wait(dropped, 30)
    first.abort()
    open_one = first.send_many([(topic, b"left-open", None, None)])
    first.wait(open_one, 30)
    second = OutputProducer(settings, "it-txn-2", 4 << 20, transactional_id=txn_id)
    try:  # the first's open transaction is aborted by the second's start
        with pytest.raises(TransactionFenced, match=txn_id):
            for _ in range(5):  # at most a refused hand-over first
                with contextlib.suppress(PublishError):
                    first.wait(first.send_many([(topic, b"zombie", None, None)]), 30)
                    first.commit([], None)
        done = second.send_many([(topic, b"second", None, None)])
        second.wait(done, 30)
        second.commit([], None)
    finally:
        first.close()
        second.close()
    got = consume_all(kafka_bootstrap, topic, 3, timeout_s=30, isolation_level="read_committed")
    assert [r.value for r in got] == [b"kept-1", b"kept-2", b"second"]


def test_exactly_once_an_unacknowledged_hand_over_aborts_its_transaction_before_the_redo(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A hand-over not acknowledged in time (PublishError: its batch is redone) ends its
    transaction with an abort: its outputs that land later must not be committed with the
    redone batch's. Then a hand-over the broker refuses: the same, and the redo commits."""
    topic = f"it-txn-small-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "20000"})])
    admin.close()
    s = fresh_settings(kafka_bootstrap, tmp_path, consumer_client="librdkafka",
                       exactly_once=True)  # fmt: skip
    io = KafkaIO(s)

    def redo(value: bytes) -> None:  # as the chain redoes a batch: librdkafka may fail the
        for _ in range(3):  # first transaction after an abort (its epoch bump)
            io.send(topic, value)
            try:
                io.flush_or_raise()
                return
            except PublishError:
                assert not io.producer.in_transaction
        raise AssertionError("never committed")

    try:
        io.send(topic, b"too-late")
        with pytest.raises(PublishError, match="not acknowledged"):
            io.await_acks(io.hand_over(), 0.0)  # it lands, after the wait gave up
        assert not io.producer.in_transaction
        redo(b"redone-1")
        io.send(topic, b"refused-with")
        io.send(topic, os.urandom(100_000))  # incompressible, over the topic's limit
        with pytest.raises(PublishError, match="refused"):
            io.await_acks(io.hand_over(), 30)
        redo(b"redone-2")
    finally:
        io.close()
    got = consume_all(kafka_bootstrap, topic, 2, timeout_s=30, isolation_level="read_committed")
    assert [r.value for r in got] == [b"redone-1", b"redone-2"]
