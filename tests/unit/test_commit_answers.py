"""Every async commit is answered, success included (None), by all three consumers, so the
service can say when commits go through again after an outage (service/kafka_io.py
`_on_commit`); the real clients' answers are exercised through the broker in
tests/integration/test_consumer_process.py and test_broker_restart.py."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka.errors import CommitFailedError

from service.kafka_io import KafkaIO
from service.procconsumer import ProcessConsumer
from service.rdconsumer import RdConsumer


def _answers() -> tuple[list[Any], Any]:
    got: list[Any] = []
    return got, lambda offsets, response: got.append(response)


def test_librdkafkas_commit_answer_is_none_on_success_and_an_exception_on_failure() -> None:
    rd = RdConsumer.__new__(RdConsumer)
    got, rd._commit_callback = _answers()
    ok = RdTopicPartition("events", 0, 10)

    class Refused:  # librdkafka sets `error` on a partition it refused (read-only here)
        error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)

    refused: Any = Refused()
    rd._on_commit(None, [ok])
    rd._on_commit(KafkaError(KafkaError._WAIT_COORD), [ok])
    rd._on_commit(None, [ok, refused])  # one partition refused: the commit failed
    assert got[0] is None
    assert all(isinstance(e, KafkaException) for e in got[1:]) and len(got) == 3


def test_the_consumer_process_answers_success_as_none() -> None:
    pc = ProcessConsumer.__new__(ProcessConsumer)
    got, callback = _answers()
    pc._callbacks, pc._answers = {1: ({}, callback), 2: ({}, callback)}, {}
    pc._answered(1, None)
    pc._answered(2, "coordinator not available")
    assert got[0] is None and isinstance(got[1], CommitFailedError)


def test_failed_commits_are_recommitted_and_their_end_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    io = KafkaIO.__new__(KafkaIO)  # no clients: only the commit answers are under test
    io._commit_lost, io._commit_failures, io._commit_failing_since = False, 0, 0.0
    with caplog.at_level(logging.INFO, logger="service.kafka_io"):
        io._on_commit({}, None)  # a success with nothing failed before: nothing to say
        for _ in range(3):
            io._on_commit({}, CommitFailedError("NodeNotReadyError: coordinator"))
        assert io._commit_lost, "recommitted at the next poll"
        io._on_commit({}, None)
        io._on_commit({}, None)
    said = [r.getMessage() for r in caplog.records]
    assert said[:3] == ["async offset commit failed (recommitted next poll): CommitFailedError: "
                        "NodeNotReadyError: coordinator"] * 3  # fmt: skip
    assert len(said) == 4 and said[3].startswith(
        "offset commits go through again, after 3 failed attempts over"
    )


def test_while_commits_keep_failing_they_are_retried_once_a_second_not_at_every_poll() -> None:
    io = KafkaIO.__new__(KafkaIO)
    io._last_commit_at = time.monotonic() - 0.5  # half a second since the last try
    io._commit_failures = 1  # one lost commit (a rebalance): redone at the usual pace
    assert io._commit_due()
    io._commit_failures = 2  # failing in a row (an outage): once a second
    assert not io._commit_due()
    io._last_commit_at -= 0.6
    assert io._commit_due()
