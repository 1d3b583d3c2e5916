"""The record every events consumer hands the chain, whichever client read it."""

from __future__ import annotations


class ConsumedRecord:
    """One consumed record, with the attributes of kafka-python's `ConsumerRecord` the chain
    reads (headers as a list of (key, bytes), timestamp in ms or None). The chain takes
    kafka-python's own records too; the consumer process and the librdkafka adapter build
    these."""

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int | None,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.timestamp, self.value, self.key = timestamp, value, key
        self.headers = headers or []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.topic}/{self.partition}@{self.offset})"
