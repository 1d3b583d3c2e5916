"""The producer of every output topic: librdkafka (confluent-kafka), acknowledged in bulk.

Why not kafka-python's producer, when the events are consumed with kafka-python: its `send`
is pure Python (record building, partitioning, size estimates) and wakes its sender thread
through a socket for every new batch; the GIL hand-offs between that thread and the chain
made outputs about 30% of the pipeline's CPU (py-spy, bench.throughput, 2026-12-03).
librdkafka builds and sends requests in its own C threads, without the GIL; a `produce` is
a few microseconds. Each hand-over gets a `Delivery` that counts its acknowledgements, so the
chain can score the next batch while the broker acknowledges the last one.

The delivery promise is the same as before: acks=all, idempotent (a retried request never
writes a record twice), and `wait` raises unless every output of a hand-over was
acknowledged. With a transactional id (`--exactly-once`) the outputs go out inside a Kafka
transaction, begun by the first output after a commit, and `commit` ends it together with the
consumer offsets of the events they came from: read_committed readers see both or neither.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as RdTopicPartition

from service.settings import Settings

log = logging.getLogger("kafka.librdkafka")

Header = tuple[str, bytes]
Queued = tuple[str, bytes, bytes | None, list[Header] | None]  # topic, value, key, headers


class PublishError(RuntimeError):
    """The broker did not acknowledge a batch's outputs; nothing of it may be committed."""


class TransactionExpired(PublishError):
    """--exactly-once: the broker aborted the open transaction itself, for outliving its
    timeout (the producer could not reach the broker for longer than that): the producer
    cannot go on and is replaced; the transaction's batches are redone."""


class TransactionFenced(RuntimeError):
    """--exactly-once: the output producer can never commit again (another process took its
    transactional id): the service stops rather than publish what it cannot commit; what it
    did not commit is redone by whoever restarts."""


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """The connection settings of `Settings.kafka_client_config` in librdkafka's names (that
    call also registers the password with the log redaction)."""
    common = settings.kafka_client_config()
    cfg: dict[str, Any] = {
        "bootstrap.servers": ",".join(common["bootstrap_servers"]),  # type: ignore[arg-type]
        "security.protocol": common["security_protocol"],
    }
    if "sasl_mechanism" in common:
        cfg["sasl.mechanism"] = common["sasl_mechanism"]
        cfg["sasl.username"] = common["sasl_plain_username"]
        cfg["sasl.password"] = common["sasl_plain_password"]
    if "ssl_cafile" in common:
        cfg["ssl.ca.location"] = common["ssl_cafile"]
    return cfg


class Delivery:
    """The acknowledgements still owed for one hand-over of outputs (or several, joined):
    librdkafka calls it once per output, on `poll`."""

    __slots__ = ("failures", "left")

    def __init__(self) -> None:
        self.left = 0
        self.failures: list[str] = []

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        self.left -= 1
        if err is not None:
            self.failures.append(err.str())


#: Seconds one try of a transaction call (init, offsets, commit, abort) waits for the broker.
#: A try that times out is tried again (librdkafka allows it) until the broker answers or
#: the service stops: a broker outage of any length is waited out, as at least once does.
TRANSACTION_TRY_S = 5.0
#: Seconds a transaction may stay open before the broker aborts it (transaction.timeout.ms).
TRANSACTION_TIMEOUT_S = 60.0
#: Seconds between two warnings of one transaction call the broker does not answer.
TRANSACTION_WARN_EVERY_S = 30.0


class OutputProducer:
    """Hands outputs to librdkafka and waits for their acknowledgement in one call."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        max_request_bytes: int,
        transactional_id: str | None = None,
        keep_trying: Callable[[], bool] = lambda: True,
    ) -> None:
        """`keep_trying`: whether a transaction call the broker does not answer is tried
        again (False once the service is stopping: it then stops with the transaction open,
        and its restart aborts it)."""
        self._last_error: tuple[float, str] | None = None  # (monotonic time, what it said)
        self.transactional_id = transactional_id
        self.keep_trying = keep_trying
        self.in_transaction = False
        self._began_at = 0.0  # monotonic time the open transaction began
        self._producer = Producer(
            {
                **librdkafka_config(settings),
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 1,  # a batch is handed over at once: little to gain by waiting
                "message.max.bytes": max_request_bytes,
                "compression.type": settings.output_compression,
                "queue.buffering.max.messages": 1_000_000,
                "error_cb": self._on_error,
                "logger": log,
                **(
                    {
                        "transactional.id": transactional_id,
                        "transaction.timeout.ms": int(TRANSACTION_TIMEOUT_S * 1000),
                    }
                    if transactional_id
                    else {}
                ),
            }
        )
        if self.transactional:  # fences a predecessor with this id: its open transaction
            # is aborted now, not at its timeout
            self._until_answered("init", self._producer.init_transactions)

    @property
    def transactional(self) -> bool:
        """Outputs go out in transactions (`--exactly-once`)."""
        return self.transactional_id is not None

    def _on_error(self, err: KafkaError) -> None:
        # connection-level trouble (broker down, authentication refused); librdkafka retries
        # by itself, so this only explains a later PublishError
        self._last_error = (time.monotonic(), err.str())
        log.warning("kafka: %s", err.str())

    def send_many(self, outputs: list[Queued], into: Delivery | None = None) -> Delivery:
        """Hand outputs over; the returned Delivery (`into`, when given) tracks their acks."""
        delivery = into if into is not None else Delivery()
        if self.transactional and not self.in_transaction and outputs:
            self._begin()
        delivery.left += len(outputs)
        produce = self._producer.produce
        for topic, value, key, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=delivery)
                    break
                except BufferError:  # a million outputs in flight: let the broker catch up
                    self._poll(0.1)
                except KafkaException as exc:  # a transaction that already failed takes no
                    if not self.transactional:  # more: the output fails with it (its
                        raise  # hand-over raises PublishError; the transaction is aborted)
                    delivery(exc.args[0], None)
                    break
        return delivery

    def acknowledged(self, delivery: Delivery) -> bool:
        """Whether every output of `delivery` has its answer (serves the reports due now,
        without waiting); a refusal counts: `wait` then raises at once."""
        if delivery.left > 0:
            self._poll(0)
        return delivery.left <= 0 or bool(delivery.failures)

    def wait(self, delivery: Delivery, timeout_s: float) -> None:
        """Block until every output of `delivery` is acknowledged (later hand-overs may still
        be on their way); PublishError if one was refused or is still unacknowledged at the
        deadline (it stays queued: if it lands later, the redone batch writes it again with
        the same ids; with --exactly-once its transaction is aborted first, so read_committed
        readers never see it)."""
        deadline = time.monotonic() + timeout_s
        while delivery.left > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._poll(min(left, 0.05))
        if delivery.failures:
            n, first = len(delivery.failures), delivery.failures[0]
            failure = PublishError(f"the broker refused {n} output(s): {first}")
        elif delivery.left > 0:
            cause = ""
            if self._last_error is not None:  # its age: an old one may not be the cause
                at, what = self._last_error
                cause = f" (last client error {time.monotonic() - at:.0f} s ago: {what})"
            failure = PublishError(
                f"{delivery.left} output(s) not acknowledged in {timeout_s:g} s{cause}"
            )
        else:
            return
        # --exactly-once: the batch is redone, so its transaction ends here: outputs of it
        # that landed (or land late) must not be committed with the redo's
        self._abort_or_stop(str(failure))
        raise failure

    def commit(self, offsets: list[tuple[str, int, int]], group_metadata: Any) -> None:
        """End the transaction: its outputs and the consumer `offsets` ((topic, partition,
        next offset)) become visible together. PublishError when it had to be aborted (a
        rebalance fenced it, an output was refused): nothing of it counts, the batch is
        redone. TransactionFenced when another process took this transactional id; a commit
        the broker does not answer is tried again until it does (an outage is waited out);
        one that fails otherwise, or still unanswered when the service stops, raises
        RuntimeError: the service stops, and its restart aborts the transaction and redoes
        what it held."""
        if not self.in_transaction:
            if not offsets:
                return
            self._begin()
        rd = [RdTopicPartition(t, p, o) for t, p, o in offsets]
        send_offsets = self._producer.send_offsets_to_transaction
        try:
            with self._fatal_is_fenced():
                if rd:
                    self._until_answered("offsets", lambda t: send_offsets(rd, group_metadata, t))
                self._until_answered("commit", self._producer.commit_transaction)
        except KafkaException as exc:
            err = exc.args[0]
            if not err.txn_requires_abort():
                raise RuntimeError(
                    f"transaction commit failed ({err.str()}); stopping: a restart aborts it "
                    "and redoes the uncommitted batches"
                ) from None
            self._abort_or_stop(err.str())
            raise PublishError(f"transaction aborted, the batch is redone: {err.str()}") from None
        self.in_transaction = False

    def serve(self) -> None:
        """Serve what is due now (delivery reports, the client's log lines), without waiting."""
        self._poll(0)

    def _poll(self, timeout_s: float) -> None:
        """Serve delivery reports (librdkafka raises a fenced producer's fatal error out of
        `poll`)."""
        with self._fatal_is_fenced():
            self._producer.poll(timeout_s)

    def _until_answered(
        self, what: str, call: Callable[[float], Any], keep_trying: Callable[[], bool] | None = None
    ) -> None:
        """A transaction call, tried again while librdkafka says another try may succeed (a
        timeout: the broker does not answer) and `keep_trying` (default: the producer's)
        allows; raises the call's KafkaException otherwise."""
        keep_trying = keep_trying or self.keep_trying
        started = warned = time.monotonic()
        while True:
            try:
                call(TRANSACTION_TRY_S)
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or err.txn_requires_abort() or not keep_trying():
                    raise
                now = time.monotonic()
                if now - warned >= TRANSACTION_WARN_EVERY_S:
                    warned = now
                    log.warning("transaction %s unanswered for %.0f s (%s): trying again until "
                                "the broker answers", what, now - started, err.str())  # fmt: skip
                continue
            if warned > started:
                log.warning("transaction %s answered after %.0f s", what,
                            time.monotonic() - started)  # fmt: skip
            return

    def _begin(self) -> None:
        with self._fatal_is_fenced():
            self._producer.begin_transaction()
        self.in_transaction = True
        self._began_at = time.monotonic()

    @contextlib.contextmanager
    def _fatal_is_fenced(self) -> Iterator[None]:
        """A transactional producer's fatal error as TransactionFenced (the reason and what
        to do) or TransactionExpired; other errors as they are."""
        try:
            yield
        except KafkaException as exc:
            if self.transactional and exc.args[0].fatal():
                raise self._fenced(exc.args[0]) from None
            raise

    def _abort_or_stop(self, why: str) -> None:
        """Abort the open transaction after `why` (nothing when none is open), waiting out a
        broker outage; one that cannot be aborted (refused, or the service stops before the
        broker is back) stops the service: its restart aborts it."""
        try:
            with self._fatal_is_fenced():
                self.abort()
        except KafkaException as exc:
            raise RuntimeError(
                f"{why}; the transaction could not be aborted ({exc.args[0].str()}); stopping: "
                "a restart aborts it and redoes the uncommitted batches"
            ) from None

    def _fenced(self, err: KafkaError) -> TransactionFenced | TransactionExpired:
        """What a fatal error means: the broker ended a transaction open longer than its
        timeout (the broker was unreachable meanwhile), or else another process took the
        transactional id."""
        if self.in_transaction and time.monotonic() - self._began_at > TRANSACTION_TIMEOUT_S:
            return TransactionExpired(
                f"the transaction outlived its {TRANSACTION_TIMEOUT_S:g} s timeout and the "
                f"broker aborted it ({err.str()}): its batches are redone"
            )
        return TransactionFenced(
            f"the output producer's transactions failed for good ({err.str()}): is another "
            f"process using transactional id {self.transactional_id!r}? Give each scorer its "
            "own --transactional-id (or --client-id)"
        )

    def abort(self, keep_trying: Callable[[], bool] | None = None) -> None:
        """Abort the open transaction (its outputs are never seen by read_committed readers).
        Until the broker answered, the transaction counts as open: it is never begun anew
        over a pending abort (librdkafka refuses that)."""
        if self.in_transaction:
            self._until_answered("abort", self._producer.abort_transaction, keep_trying)
            self.in_transaction = False

    def abandon(self) -> None:
        """Give up on everything still queued or in flight: each gets a failed delivery report
        now (its batch is redone, through another producer), and the client is let go."""
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        with contextlib.suppress(KafkaException):  # a fenced one raises its fatal error
            self._producer.poll(0)  # serve the purged outputs' reports
        if self.in_transaction:  # its successor's init fenced it: an abort may be refused
            with contextlib.suppress(KafkaException):
                self.abort(keep_trying=_once)
            self.in_transaction = False

    def close(self, timeout_s: float = 10.0) -> None:
        if self.in_transaction:  # not committed by its owner: none of it happened
            with contextlib.suppress(KafkaException):
                self.abort(keep_trying=_once)
        try:
            left = self._producer.flush(timeout_s)
        except KafkaException as exc:  # a producer that failed for good: nothing to flush to
            log.error("outputs not flushed at close: %s", exc.args[0].str())
            return
        if left:
            log.error("%d output(s) were not acknowledged before close", left)


def _once() -> bool:
    """A transaction call tried once (closing, or letting a replaced producer go)."""
    return False
