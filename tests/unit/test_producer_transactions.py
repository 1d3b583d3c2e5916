"""--exactly-once's transaction calls through a broker outage (service/producer.py): a call
the broker does not answer is tried again until it does or the service stops, and a fatal
error is told apart: the broker's own abort of a transaction that outlived its timeout (redo
through a new producer) or another process holding the transactional id (stop)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from service import producer as producer_mod
from service.producer import (
    TRANSACTION_TIMEOUT_S,
    OutputProducer,
    PublishError,
    TransactionExpired,
    TransactionFenced,
)


def _producer(keep_trying: Any = lambda: True) -> OutputProducer:
    p = OutputProducer.__new__(OutputProducer)  # no client: the transaction logic only
    p.transactional_id, p.keep_trying = "scorer-1", keep_trying
    p.in_transaction, p._began_at = True, time.monotonic()
    return p


def _timeout() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "unanswered", retriable=True))


class Broker:
    """Answers a transaction call after `down` tries timed out."""

    def __init__(self, down: int) -> None:
        self.down, self.calls = down, 0

    def __call__(self, timeout_s: float) -> None:
        self.calls += 1
        assert timeout_s == producer_mod.TRANSACTION_TRY_S
        if self.calls <= self.down:
            raise _timeout()


def test_an_unanswered_call_is_tried_until_the_broker_answers() -> None:
    broker = Broker(down=4)
    _producer()._until_answered("commit", broker)
    assert broker.calls == 5


def test_a_stopping_service_tries_an_unanswered_call_once_more_only() -> None:
    broker, stopping = Broker(down=100), [False]
    p = _producer(keep_trying=lambda: not stopping[0])

    def call(timeout_s: float) -> None:
        if broker.calls == 2:
            stopping[0] = True  # SIGTERM while the broker is away
        broker(timeout_s)

    with pytest.raises(KafkaException):
        p._until_answered("abort", call)
    assert broker.calls == 3


def test_an_error_a_retry_cannot_fix_is_raised_at_once() -> None:
    calls = []

    def refused(timeout_s: float) -> None:
        calls.append(timeout_s)
        raise KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "refused", fatal=True))

    with pytest.raises(KafkaException):
        _producer()._until_answered("commit", refused)
    assert len(calls) == 1


def test_a_fatal_error_on_a_young_transaction_means_another_process_took_the_id() -> None:
    err = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    assert isinstance(_producer()._fenced(err), TransactionFenced)


def test_a_fatal_error_on_a_transaction_past_its_timeout_is_the_brokers_own_abort() -> None:
    p = _producer()
    p._began_at = time.monotonic() - TRANSACTION_TIMEOUT_S - 1  # open through an outage
    err = KafkaError(KafkaError.INVALID_TXN_STATE, "invalid state", fatal=True)
    expired = p._fenced(err)
    assert isinstance(expired, TransactionExpired) and isinstance(expired, PublishError)
    assert "redone" in str(expired)
