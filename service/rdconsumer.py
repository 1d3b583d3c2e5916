"""The events consumer through librdkafka (confluent-kafka), behind kafka-python's interface.

kafka-python parses every record in Python (~4-5 us per record on our 2-core VM: the ceiling
of a pipeline built on it, bench/README.md); librdkafka parses in C and reads the same topic
8-12x faster. `--consumer-client librdkafka` makes `KafkaIO` consume through this adapter: it
offers exactly the calls `KafkaIO` makes of a kafka-python `KafkaConsumer` (poll, assignment,
commits, seek, highwater, position, pause, resume, close) and hands over records with the
attributes the chain reads (`topic`, `partition`, `offset`, `timestamp`, `value`, `headers`,
`key`), so the chain, its delivery promise and its tests do not know which client reads.

Semantics kept: offsets are committed only by `KafkaIO` (no auto commit, no auto offset
store), a new group starts at the earliest offset, the consumer group's session timeout is
the setting's. Consumer errors (a broker down, a partition moved) are logged and retried by
librdkafka; they are never records, so nothing is scored from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from service.producer import librdkafka_config
from service.records import ConsumedRecord
from service.settings import Settings

log = logging.getLogger(__name__)

#: How soon librdkafka fetches a partition again once its local queue had room (or it was
#: resumed); a timer check, no request while the queue is still over its threshold.
RESUME_FETCH_BACKOFF_MS = 10


class RdRecord(ConsumedRecord):
    """A record from a librdkafka message (built field by field: this is the hot path)."""

    __slots__ = ()

    def __init__(self, msg: Any) -> None:  # no super().__init__: one call less per record
        self.topic = msg.topic()
        self.partition = msg.partition()
        self.offset = msg.offset()
        kind, stamp = msg.timestamp()
        self.timestamp = stamp if kind and stamp >= 0 else None
        self.value = msg.value()
        self.headers = msg.headers() or []
        self.key = msg.key()


class RdConsumer:
    """A librdkafka consumer in a consumer group, answering as `KafkaIO` asks."""

    def __init__(self, settings: Settings, topics: list[str], client_id: str) -> None:
        fetch_bytes = max(10 << 20, settings.max_message_bytes * 2)
        self._commit_callback: Callable[[Any, Any], None] | None = None
        self._consumer = Consumer(
            {
                **librdkafka_config(settings),
                "group.id": settings.group_id,
                "client.id": client_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": settings.session_timeout_ms,
                "heartbeat.interval.ms": max(settings.session_timeout_ms // 3, 500),
                "fetch.wait.max.ms": settings.fetch_max_wait_ms,
                # a partition whose local queue was over its threshold was not fetched again
                # for 1 s (the default), also right after the time-aligned merge resumed it:
                # the aligned consumer alone read 82-214k records/s (bimodal), 195-263k at 10 ms
                "fetch.queue.backoff.ms": RESUME_FETCH_BACKOFF_MS,
                "max.partition.fetch.bytes": fetch_bytes,
                "fetch.max.bytes": fetch_bytes * 4,
                "receive.message.max.bytes": fetch_bytes * 4 + (1 << 20),
                "on_commit": self._on_commit,
                "error_cb": self._on_error,
                "logger": log,
            }
        )
        self._consumer.subscribe(topics)

    # -- records --------------------------------------------------------------------------
    def poll(
        self, timeout_ms: int = 0, max_records: int = 500
    ) -> dict[TopicPartition, list[RdRecord]]:
        """Up to `max_records` records by partition (kafka-python's shape), waiting at most
        `timeout_ms` for that many."""
        msgs = self._consumer.consume(num_messages=max(max_records, 1), timeout=timeout_ms / 1000)
        by_partition: dict[tuple[str, int], list[RdRecord]] = {}
        for m in msgs:
            err = m.error()
            if err is None:
                rec = RdRecord(m)
                by_partition.setdefault((rec.topic, rec.partition), []).append(rec)
            else:  # not a record: librdkafka retries; say so, score nothing
                log.warning("consumer: %s", err.str())
        return {TopicPartition(t, p): records for (t, p), records in by_partition.items()}

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching `partitions`; librdkafka drops what it fetched ahead of them and
        fetches again from the position the chain has reached when they resume."""
        self._consumer.pause([RdTopicPartition(tp.topic, tp.partition) for tp in partitions])

    def resume(self, *partitions: TopicPartition) -> None:
        self._consumer.resume([RdTopicPartition(tp.topic, tp.partition) for tp in partitions])

    # -- partitions and offsets -----------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    @staticmethod
    def _rd(offsets: dict[TopicPartition, OffsetAndMetadata]) -> list[RdTopicPartition]:
        return [RdTopicPartition(tp.topic, tp.partition, om.offset) for tp, om in offsets.items()]

    def commit_async(
        self,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        callback: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Send the commit; `callback(offsets, exception)` runs on a failure, `callback(offsets,
        None)` on success (from a later poll, where librdkafka serves its callbacks)."""
        self._commit_callback = callback
        try:
            self._consumer.commit(offsets=self._rd(offsets), asynchronous=True)
        except KafkaException as exc:  # refused at once (no coordinator): a lost commit
            if callback is not None:
                callback(offsets, exc)

    def _on_commit(self, err: Any, partitions: list[RdTopicPartition]) -> None:
        if self._commit_callback is None:
            return
        failed = err is not None or any(tp.error is not None for tp in partitions)
        if failed:
            why = err if err is not None else next(tp.error for tp in partitions if tp.error)
            self._commit_callback(partitions, KafkaException(why))
        else:
            self._commit_callback(partitions, None)

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit synchronously; CommitFailedError (what `KafkaIO` expects) on refusal."""
        try:
            result = self._consumer.commit(offsets=self._rd(offsets), asynchronous=False)
        except KafkaException as exc:
            raise CommitFailedError(str(exc)) from None
        errors = [tp.error for tp in result or [] if tp.error is not None]
        if errors:
            raise CommitFailedError(str(errors[0]))

    def group_metadata(self) -> Any:
        """This member's group metadata, for a producer's transaction (--exactly-once): the
        broker refuses its offsets once a rebalance made this member stale."""
        return self._consumer.consumer_group_metadata()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(RdTopicPartition(tp.topic, tp.partition, offset))

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as of the last fetch (no request)."""
        try:
            _, high = self._consumer.get_watermark_offsets(
                RdTopicPartition(tp.topic, tp.partition), cached=True
            )
        except KafkaException:
            return None
        return high if high >= 0 else None

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int | None:
        """The next offset this consumer will read of `tp`, None when not known yet."""
        (pos,) = self._consumer.position([RdTopicPartition(tp.topic, tp.partition)])
        return pos.offset if pos.offset != OFFSET_INVALID and pos.offset >= 0 else None

    def close(self, autocommit: bool = False) -> None:
        """Leave the group (offsets are committed by `KafkaIO` only)."""
        self._consumer.close()

    @staticmethod
    def _on_error(err: Any) -> None:
        log.warning("consumer: %s", err.str())
