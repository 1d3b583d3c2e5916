"""Kafka I/O for the chain: bounded batch polls, acknowledged publishes, explicit commits.

The chain's delivery promise lives here: a batch's outputs are handed over together, the chain
waits (`await_acks`) until the broker acknowledged every one of them (acks=all), and only then
are the batch's offsets committed. A refused publish rewinds the consumer to the batch start so
the batch is redone. With `--exactly-once` the offsets are not committed to the group but sent
into the output producer's transaction, which `commit` then commits: outputs and offsets
together (an aborted transaction raises PublishError, and the batch is redone the same way).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException as RdKafkaException
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from service.procconsumer import ProcessConsumer
from service.producer import (
    Delivery,
    OutputProducer,
    PublishError,
    TransactionExpired,
    librdkafka_config,
)
from service.rdconsumer import RdConsumer
from service.settings import Settings
from service.timealign import TimeAligner, records_left

log = logging.getLogger(__name__)

#: Shortest time between two asynchronous offset commits, seconds.
COMMIT_EVERY_S = 0.1
#: Shortest time between two asynchronous offset commits while they keep failing, seconds.
COMMIT_RETRY_S = 1.0
#: Shortest wait of one consumer poll, ms. kafka-python 3.0 polled with 0-1 ms sends its next
#: fetch late; a batch filled by such polls came in bursts every ~0.6 s (p99 latency 630 ms
#: at 25k events/s; 24 ms with this floor, same machine and rate).
MIN_POLL_MS = 10
#: Hand-overs in a row left unacknowledged after which the output producer is replaced by a
#: new one: after a broker restart librdkafka can stay stuck on what it knew of the broker
#: and never deliver again (confluentinc/librdkafka#3009, #4976); CI's broker-outage test saw
#: 4,591 outputs unacknowledged for 4.5 minutes after the broker was back (2026-12-04).
PRODUCER_RESET_AFTER = 3

__all__ = ["Delivery", "KafkaIO", "PublishError", "ensure_topics", "whole_topic_consumer"]


class KafkaIO:
    """The consumer of the events topic and the producer of every output topic."""

    def __init__(self, settings: Settings, keep_trying: Callable[[], bool] = lambda: True) -> None:
        """`keep_trying`: whether the output producer tries a transaction call the broker does
        not answer again (--exactly-once waits out an outage until the service stops)."""
        self.settings = settings
        self.keep_trying = keep_trying
        topics = [settings.events_topic] + ([settings.logs_topic] if settings.logs_topic else [])
        client_id = f"{settings.client_id}-consumer"
        self.consumer: KafkaConsumer | RdConsumer | ProcessConsumer
        if settings.consumer_client == "librdkafka":
            self.consumer = RdConsumer(settings, topics, client_id)
        elif settings.consumer_process:
            self.consumer = ProcessConsumer(settings, topics, client_id, settings.batch_max_events)
        else:
            self.consumer = kafka_python_consumer(
                settings, topics, client_id, settings.batch_max_events
            )
        # a backlog's partitions are read in step here (the consumer process does it itself)
        self._aligner = TimeAligner(
            0
            if isinstance(self.consumer, ProcessConsumer)
            else int(settings.align_partitions_s * 1000)
        )
        self.settings = settings
        self.producer = self._new_producer()
        self._unacked_in_a_row = 0  # hand-overs in a row that failed to be acknowledged
        # outputs handed to `send`, given to the producer in one go at the next hand-over (or
        # poll): the batch's outputs then leave in few requests, after it is scored; what a
        # poll hands over joins the next hand-over's Delivery, so someone waits for its acks
        self._queued: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]] | None]] = []
        self._open: Delivery | None = None
        # per partition, the offset after the last record whose outputs were acknowledged;
        # every commit sends the whole map, so a lost async commit is covered by the next
        self._done: dict[TopicPartition, int] = {}
        self._commit_lost = False
        self._commit_failures = 0  # async commits failed in a row (a broker outage)
        self._commit_failing_since = 0.0
        self._uncommitted = False  # acknowledged progress not yet sent to the coordinator
        self._last_commit_at = 0.0

    # -- input ----------------------------------------------------------------------------
    def poll_batch(self, max_events: int, max_wait_s: float) -> list[Any]:
        """Up to `max_events` records, waiting about `max_wait_s` for the batch to fill (at
        most MIN_POLL_MS more)."""
        deadline = time.monotonic() + max_wait_s
        batch: list[Any] = []
        self._give()  # written between batches: on its way while we wait
        if self._commit_lost and self._commit_due():  # a lost commit: recommit what is done
            self._commit_lost = False
            self._commit_async()
        while len(batch) < max_events:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 and batch:
                break
            polled = self._aligner.poll(  # partitions in step (kafka-python in process)
                self.consumer, max(left_ms, MIN_POLL_MS), max_events - len(batch)
            )
            for records in polled.values():
                batch.extend(records)
            if left_ms <= 0:
                break
        if not batch and not self.producer.in_transaction:
            # idle: librdkafka hands the producer's logs over only in a poll; without this an
            # outage's connection errors came out at the next batch, minutes late
            self.producer.serve()
        if self.producer.transactional:  # offsets go into transactions; what was written
            # between batches is committed now when no batch came (else with the next one's)
            if not batch and self.producer.in_transaction:
                try:
                    self.flush_or_raise()
                except PublishError as exc:  # between-batch records: the outbox resends
                    log.warning("between-batch outputs not committed: %s", exc)
            return batch
        if (
            not batch
            and self._done
            and (self._uncommitted or time.monotonic() - self._last_commit_at > 1.0)
            and (not self._commits_failing() or self._commit_due())
        ):
            # a quiet topic brings no next commit: send what is done now, and repeat it
            # once a second in case it never reached the coordinator (idempotent)
            self._commit_async()
        return batch

    # -- output ---------------------------------------------------------------------------
    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue an output; the next `hand_over` (or `poll_batch`) gives it to the producer."""
        self._queued.append((topic, value, key, headers))

    def _give(self) -> None:
        if self._queued:
            self._open = self.producer.send_many(self._queued, into=self._open)
            self._queued = []

    def hand_over(self) -> Delivery:
        """Give every queued output to the producer without waiting; `await_acks` on the
        returned Delivery before committing what they came from."""
        self._give()
        delivery, self._open = self._open or Delivery(), None
        return delivery

    def acknowledged(self, delivery: Delivery) -> bool:
        """Whether `await_acks` would return (or raise) at once."""
        return self.producer.acknowledged(delivery)

    def await_acks(self, delivery: Delivery, timeout_s: float = 30.0) -> None:
        """Block until the broker acknowledged every output of `delivery` (PublishError).
        After `PRODUCER_RESET_AFTER` failures in a row the producer is replaced, so the redone
        batches go out through a client that looks the broker up afresh. With --exactly-once
        the producer has aborted the open transaction by then (`OutputProducer.wait`)."""
        try:
            self.producer.wait(delivery, timeout_s)
        except TransactionExpired:
            self._replace_producer("its transaction expired")  # the successor redoes them
            raise
        except PublishError:
            # a refusal is an answer: the client reaches the broker, a new one would not help
            unanswered = delivery.left > 0 and not delivery.failures
            self._unacked_in_a_row = self._unacked_in_a_row + 1 if unanswered else 0
            if self._unacked_in_a_row >= PRODUCER_RESET_AFTER:
                self._replace_producer(
                    f"outputs unacknowledged {self._unacked_in_a_row} times in a row"
                )
            raise
        self._unacked_in_a_row = 0

    def _new_producer(self) -> OutputProducer:
        return OutputProducer(
            self.settings,
            f"{self.settings.client_id}-producer",
            max_request_bytes=4 << 20,
            transactional_id=self.settings.producer_transactional_id(),
            keep_trying=self.keep_trying,
        )

    def _replace_producer(self, why: str) -> None:
        log.warning("%s: replacing the output producer", why)
        old, self.producer = self.producer, self._new_producer()
        self._unacked_in_a_row = 0
        old.abandon()  # what it held fails now (an open hand-over too): redone, never lost

    def flush_or_raise(self, timeout_s: float = 30.0) -> None:
        """Block until every output sent since the last hand-over is acknowledged (with
        --exactly-once: and committed, in a transaction with the offsets done so far)."""
        self.await_acks(self.hand_over(), timeout_s)
        if self.producer.transactional:
            self._commit_transaction()

    # -- offsets --------------------------------------------------------------------------
    @staticmethod
    def next_offsets(records: Sequence[Any]) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record of the batch."""
        # records of a partition come in offset order: the last one of each wins
        nxt = {(r.topic, r.partition): r.offset + 1 for r in records}
        return {TopicPartition(t, p): o for (t, p), o in nxt.items()}

    def commit(self, records: Sequence[Any], wait: bool = False) -> bool:
        """Commit the batch's offsets. The batch's outputs are already acknowledged, so the
        commit need not block the next batch: it is sent asynchronously and carries every
        owned partition's progress, so a later commit supersedes a lost one (at worst a crash
        redoes a batch, with the same alert ids). `wait=True` (shutdown) commits
        synchronously. False when a rebalance took the partitions (the new owner redoes the
        work). Asynchronous commits go out at most every COMMIT_EVERY_S (each costs the
        client a request and a wake-up of its network thread); a crash redoes at most that
        much more."""
        self._done.update(self.next_offsets(records))
        if self.producer.transactional:  # outputs and offsets at once; PublishError: redo
            self._commit_transaction()
            return True
        if wait:
            return self._commit_sync()
        self._uncommitted = True
        if self._commit_due():
            self._commit_async()
        return True

    def _commit_due(self) -> bool:
        """Whether the next asynchronous commit may go: COMMIT_EVERY_S after the last, or
        COMMIT_RETRY_S while they keep failing (a broker outage: asking at every poll, 6 a
        second, only filled the log)."""
        every = COMMIT_RETRY_S if self._commits_failing() else COMMIT_EVERY_S
        return time.monotonic() - self._last_commit_at >= every

    def _commits_failing(self) -> bool:
        """Async commits failed twice in a row or more: the coordinator is out of reach (one
        lost commit is a rebalance, redone at the usual pace)."""
        return self._commit_failures >= 2

    def _owned_offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        owned = self.consumer.assignment()
        for tp in [tp for tp in self._done if tp not in owned]:
            del self._done[tp]  # revoked: its new owner commits it from now on
        return {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._done.items()}

    def _commit_transaction(self) -> None:
        """Commit the producer's transaction with every owned partition's progress."""
        offsets = [(tp.topic, tp.partition, om.offset) for tp, om in self._owned_offsets().items()]
        assert isinstance(self.consumer, RdConsumer)  # Settings allows no other client
        try:
            self.producer.commit(offsets, self.consumer.group_metadata())
        except TransactionExpired:
            self._replace_producer("its transaction expired")
            raise

    def _commit_async(self) -> None:
        self._last_commit_at, self._uncommitted = time.monotonic(), False
        offsets = self._owned_offsets()
        if offsets:
            self.consumer.commit_async(offsets, callback=self._on_commit)

    def _commit_sync(self) -> bool:
        offsets = self._owned_offsets()
        if not offsets:
            return True
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("offset commit refused (rebalance?); the work will be redone: %s", exc)
            return False
        return True

    def _on_commit(self, offsets: Any, response: Any) -> None:
        """An async commit's answer: a failure is recommitted at a later poll, once it is
        `_commit_due` (logged once a minute while they last, `RepeatLimiter`); the first
        success after failures says so."""
        if isinstance(response, Exception):
            self._commit_lost = True
            if not self._commit_failures:
                self._commit_failing_since = time.monotonic()
            self._commit_failures += 1
            log.warning("async offset commit failed (recommitted next poll): %s", response)
        elif self._commit_failures:
            log.info(
                "offset commits go through again, after %d failed attempts over %.0f s",
                self._commit_failures, time.monotonic() - self._commit_failing_since,
            )  # fmt: skip
            self._commit_failures = 0

    def rewind(self, records: Sequence[Any]) -> None:
        """Seek back to the first record of the batch on each partition we still own."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        owned = self.consumer.assignment()
        for tp, off in first.items():
            if tp in owned:
                self.consumer.seek(tp, off)
        self._aligner.forget(self.consumer, first)

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the partition end, from the consumer's last fetch metadata."""
        out: dict[TopicPartition, int] = {}
        for tp in self.consumer.assignment():
            left = records_left(self.consumer, tp)
            if left is not None:  # unknown right after a rebalance
                out[tp] = left
        return out

    def close(self) -> None:
        """Flush outputs, commit everything done synchronously, close both clients."""
        try:
            if self.producer.transactional:
                try:
                    self.flush_or_raise()
                except (RuntimeError, RdKafkaException) as exc:  # PublishError included
                    # not committed (aborted, or the broker gone while stopping): the restart
                    # aborts what is open and redoes it; the reason the loop ended stays the
                    # error the service stops with
                    log.warning("the last transaction was not committed at close: %s", exc)
            else:
                self._commit_sync()
                self._give()
        finally:
            self.producer.close(timeout_s=10)
            self.consumer.close(autocommit=False)


def kafka_python_consumer(
    settings: Settings, topics: list[str], client_id: str, max_records: int
) -> KafkaConsumer:
    """The events consumer through kafka-python, in this process or in the consumer process
    (`service/procconsumer.py`): the same configuration either way."""
    consumer = KafkaConsumer(
        *topics,
        group_id=settings.group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        fetch_max_bytes=50 << 20,
        max_partition_fetch_bytes=max(10 << 20, settings.max_message_bytes * 2),
        # with incremental fetch sessions (KIP-227) kafka-python 3.0 sometimes settled
        # into the broker holding each fetch for fetch_max_wait_ms: batches came in
        # bursts every ~0.6 s (warm p99 554-670 ms at 38k events/s in 3 of 5 runs;
        # 58-74 ms in 3 of 3 without sessions, same machine and rate). Full fetches
        # cost little on our few partitions.
        enable_incremental_fetch_sessions=False,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(settings.session_timeout_ms // 3, 500),
        **settings.kafka_client_config(),
    )
    # the topics' metadata before the first poll joins the group: kafka-python sends the join
    # without waiting for it, assigns nothing of topics it has no metadata for ("No partition
    # metadata for topic") and joins again once its metadata arrives
    for topic in topics:
        consumer.partitions_for_topic(topic)
    return consumer


def whole_topic_consumer(
    settings: Settings, topic: str, role: str, offsets: dict[int, int] | None = None
) -> KafkaConsumer:
    """A consumer of every partition of `topic`, outside any group, from `offsets` (partition
    -> next offset) where given and from the beginning elsewhere: how the feedback, models and
    alerts topics are read whole (state rebuilt from them, offsets kept in checkpoints)."""
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False,
                             client_id=f"{settings.client_id}-{role}",
                             **settings.kafka_client_config())  # fmt: skip
    parts = consumer.partitions_for_topic(topic) or {0}
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    offsets = offsets or {}
    for tp in tps:
        if tp.partition in offsets:
            consumer.seek(tp, offsets[tp.partition])
        else:
            consumer.seek_to_beginning(tp)
    return consumer


def ensure_topics(settings: Settings, partitions: int = 4) -> None:
    """Create Outrider's topics if missing (the models topic compacted)."""
    admin = KafkaAdminClient(
        client_id=f"{settings.client_id}-admin", **settings.kafka_client_config()
    )
    try:
        wanted = [
            NewTopic(settings.events_topic, partitions, 1),
            NewTopic(settings.alerts_topic, partitions, 1),
            NewTopic(settings.dead_letter_topic, 1, 1),
            NewTopic(settings.feedback_topic, 1, 1),
            NewTopic(settings.models_topic, 1, 1, topic_configs={"cleanup.policy": "compact"}),
        ]
        if settings.scores_topic:
            wanted.append(NewTopic(settings.scores_topic, partitions, 1))
        extras = (settings.logs_topic, settings.findings_topic, settings.ecs_topic,
                  settings.digest_topic)  # fmt: skip
        for extra in extras:
            if extra:
                wanted.append(NewTopic(extra, partitions, 1))
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another scorer was faster
                admin.create_topics(missing)
    finally:
        admin.close()


class StartupError(RuntimeError):
    """The broker could not be reached or refused us at start; the message says what to fix."""


def wait_for_broker(settings: Settings, timeout_s: float = 120.0) -> None:
    """Block until the cluster answers a metadata request, retrying with backoff (a scorer
    often starts before its broker); a refused login fails at once with a clear message."""
    who: str = settings.security_protocol
    if settings.sasl_mechanism:
        who += f", SASL {settings.sasl_mechanism} as {settings.sasl_username!r}"
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            admin = KafkaAdminClient(client_id=f"{settings.client_id}-probe",
                                     request_timeout_ms=10_000,
                                     **settings.kafka_client_config())  # fmt: skip
            try:
                admin.list_topics()
            finally:
                admin.close()
            return
        except SaslAuthenticationFailedError as exc:
            raise StartupError(
                f"Kafka at {settings.kafka_bootstrap} refused the login ({who}): "
                f"Authentication failed: {exc}"
            ) from None
        except KafkaError as exc:
            refusal = login_refusal(settings) if settings.sasl_mechanism else None
            if refusal is not None:
                raise StartupError(
                    f"Kafka at {settings.kafka_bootstrap} refused the login ({who}): {refusal}"
                ) from None
            if time.monotonic() + delay > deadline:
                raise StartupError(
                    f"cannot reach Kafka at {settings.kafka_bootstrap} ({who}) within "
                    f"{timeout_s:.0f} s: {type(exc).__name__}: {exc}. Check the address, the "
                    "TLS CA and the credentials."
                ) from None
            log.warning("Kafka not answering yet (%s); retrying in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def login_refusal(settings: Settings, timeout_s: float = 10.0) -> str | None:
    """The broker's reason when it refuses our SASL login, asked through librdkafka: it
    reports an authentication failure every time, where kafka-python does only when it reads
    the broker's error before the connection drops (otherwise: "Unable to bootstrap")."""
    refused: list[str] = []

    def on_error(err: RdKafkaError) -> None:
        if err.code() == RdKafkaError._AUTHENTICATION:
            refused.append(err.str())

    admin = AdminClient({**librdkafka_config(settings), "error_cb": on_error, "logger": log})
    with contextlib.suppress(RdKafkaException):
        admin.list_topics(timeout=timeout_s)
    admin.poll(0)  # serve the error callbacks
    return refused[0] if refused else None
