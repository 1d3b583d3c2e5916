"""A producer stuck after a broker restart is replaced (service/kafka_io.py): librdkafka can
stay on stale broker state and never deliver again, and every redo would then fail forever."""

from __future__ import annotations

import time
from typing import Any

import pytest

from service import kafka_io
from service.kafka_io import PRODUCER_RESET_AFTER, KafkaIO
from service.producer import Delivery, PublishError, TransactionExpired


class FakeProducer:
    """Answers as OutputProducer.wait does: no answer (outputs left), a refusal, or acks.
    Not transactional (at least once), as OutputProducer without a transactional id."""

    transactional = False
    in_transaction = False

    def __init__(self, acks: bool, refuses: bool = False) -> None:
        self.acks, self.refuses, self.waits, self.abandoned = acks, refuses, 0, False

    def wait(self, delivery: Delivery, timeout_s: float) -> None:
        self.waits += 1
        if self.refuses:
            delivery.left -= 1
            delivery.failures.append("Broker: Message size too large")
            raise PublishError("the broker refused 1 output(s): Broker: Message size too large")
        if not self.acks:
            raise PublishError("1 output(s) not acknowledged in 30 s")
        delivery.left = 0

    def abandon(self) -> None:
        self.abandoned = True


def _owed() -> Delivery:
    """One output handed over, its acknowledgement still owed."""
    delivery = Delivery()
    delivery.left = 1
    return delivery


def _io(first: FakeProducer, then: list[FakeProducer]) -> Any:
    io = KafkaIO.__new__(KafkaIO)  # no clients: only the acknowledgement path is under test
    io.producer, io._unacked_in_a_row = first, 0
    io._new_producer = lambda: then.pop(0)  # type: ignore[method-assign]
    return io


def test_a_producer_that_never_delivers_is_replaced_and_every_failure_still_raises() -> None:
    stuck, fresh = FakeProducer(acks=False), FakeProducer(acks=True)
    io = _io(stuck, [fresh])
    for attempt in range(1, PRODUCER_RESET_AFTER + 1):
        with pytest.raises(PublishError):  # the batch is redone each time: nothing is lost
            io.await_acks(_owed())
        assert (io.producer is fresh) == (attempt == PRODUCER_RESET_AFTER)
    assert stuck.abandoned and stuck.waits == PRODUCER_RESET_AFTER
    io.await_acks(_owed())  # the redo goes through the new client
    assert fresh.waits == 1 and io._unacked_in_a_row == 0


def test_a_failure_now_and_then_does_not_replace_the_producer() -> None:
    flaky = FakeProducer(acks=False)
    io = _io(flaky, [])
    for _ in range(4):
        for _ in range(PRODUCER_RESET_AFTER - 1):
            flaky.acks = False
            with pytest.raises(PublishError):
                io.await_acks(_owed())
        flaky.acks = True
        io.await_acks(_owed())  # acknowledged: the count starts again
    assert io.producer is flaky and not flaky.abandoned
    assert kafka_io.PRODUCER_RESET_AFTER >= 2


def test_refusals_do_not_replace_the_producer() -> None:
    """A refusal is the broker answering: a new client would be refused the same."""
    refusing = FakeProducer(acks=False, refuses=True)
    io = _io(refusing, [])
    for _ in range(PRODUCER_RESET_AFTER * 2):
        with pytest.raises(PublishError, match="refused"):
            io.await_acks(_owed())
    assert io.producer is refusing and not refusing.abandoned


def test_abandoning_a_real_producer_fails_what_it_held(tmp_path: Any) -> None:
    """librdkafka with no broker to talk to: the outputs it held report failed at once, so the
    batch they belong to is redone (never counted as delivered)."""
    from service.producer import OutputProducer
    from service.settings import Settings

    s = Settings(kafka_bootstrap="127.0.0.1:9", state_dir=tmp_path)
    producer = OutputProducer(s, "it-abandon", max_request_bytes=1 << 20)
    delivery = producer.send_many([("it-topic", b"v", None, None), ("it-topic", b"w", b"k", None)])
    producer.abandon()
    assert delivery.left == 0 and len(delivery.failures) == 2
    assert all("urge" in f for f in delivery.failures), delivery.failures


def test_an_unacknowledged_hand_over_names_the_age_of_the_last_client_error(tmp_path: Any) -> None:
    """An operator reading "not acknowledged" must see whether the client error it quotes is
    current or minutes old (CI's outage test quoted one from 4.5 minutes before): here the
    client's own error, seconds old, with no broker at the address."""
    from service.producer import OutputProducer
    from service.settings import Settings

    s = Settings(kafka_bootstrap="127.0.0.1:9", state_dir=tmp_path)
    producer = OutputProducer(s, "it-age", max_request_bytes=1 << 20)
    try:
        delivery = producer.send_many([("it-topic", b"v", None, None)])
        with pytest.raises(PublishError, match=r"last client error \d s ago: .*127\.0\.0\.1:9"):
            producer.wait(delivery, timeout_s=1.0)
        assert producer._last_error is not None and time.monotonic() - producer._last_error[0] < 5
    finally:
        producer.abandon()


class ExpiredProducer(FakeProducer):
    """--exactly-once: the broker aborted the transaction itself (it outlived its timeout
    during an outage); the client has failed for good."""

    transactional = True

    def wait(self, delivery: Delivery, timeout_s: float) -> None:
        self.waits += 1
        raise TransactionExpired("the transaction outlived its 60 s timeout")


def test_an_expired_transaction_replaces_the_producer_at_once() -> None:
    expired, fresh = ExpiredProducer(acks=False), FakeProducer(acks=True)
    io = _io(expired, [fresh])
    with pytest.raises(PublishError):  # a PublishError: the batches are redone
        io.await_acks(_owed())
    assert io.producer is fresh and expired.abandoned and expired.waits == 1
    io.await_acks(_owed())  # the redo goes through the new client
