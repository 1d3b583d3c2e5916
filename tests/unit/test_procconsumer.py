"""The consumer process's pipe: what the child reads from kafka-python reaches the chain intact,
and the child obeys seeks and commits in order. The whole consumer is tested on the real
broker: tests/integration/test_consumer_process.py, and test_pipeline.py and
test_crash_and_bad_input.py run the chain with it."""

from __future__ import annotations

import io
import queue
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import OffsetAndMetadata, TopicPartition

from service.procconsumer import (
    BATCH,
    COMMITTED,
    _Child,
    _decode_batch,
    read_frame,
    write_frame,
)

TP0, TP1 = TopicPartition("events", 0), TopicPartition("events", 1)


@dataclass
class Rec:
    """kafka-python's ConsumerRecord, the attributes the child reads."""

    offset: int
    value: bytes | None
    timestamp: int = 1_700_000_000_000
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeConsumer:
    """The calls the child makes of a KafkaConsumer, recorded."""

    def __init__(self, polls: list[dict[TopicPartition, list[Rec]]]) -> None:
        self.polls, self.seeks, self.commits = polls, [], []
        self.owned = {TP0, TP1}

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Rec]]:
        return self.polls.pop(0) if self.polls else {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    def highwater(self, tp: TopicPartition) -> int:
        return 100 + tp.partition

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return 50

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})


def frames(buf: io.BytesIO) -> list[tuple[bytes, Any, bytes]]:
    buf.seek(0)
    out = []
    while (f := read_frame(buf)) is not None:
        out.append(f)
    return out


def child_with(polls: list[dict[TopicPartition, list[Rec]]]) -> tuple[_Child, io.BytesIO]:
    out = io.BytesIO()
    child = _Child(out, queue.Queue())
    child.consumer, child.max_records, child.credit = FakeConsumer(polls), 2000, 4000
    return child, out


def test_a_frame_round_trips_and_a_cut_frame_reads_as_the_end() -> None:
    buf = io.BytesIO()
    write_frame(buf, BATCH, {"a": [1, 2]}, b"\x00\xff raw")
    write_frame(buf, COMMITTED, {"id": 3})
    whole = buf.getvalue()
    assert frames(buf) == [(BATCH, {"a": [1, 2]}, b"\x00\xff raw"), (COMMITTED, {"id": 3}, b"")]
    assert read_frame(io.BytesIO(whole[:-3])) is not None  # the first frame is whole
    cut = io.BytesIO(whole[:-3])
    read_frame(cut)
    assert read_frame(cut) is None, "a frame cut short (the child died mid-write) is the end"


def test_what_the_child_polled_reaches_the_parent_intact() -> None:
    binary = bytes(range(256))
    polled = {
        TP0: [
            Rec(7, b'{"a": 1}'),
            Rec(8, None, timestamp=5),  # a tombstone
            Rec(9, b"", key=binary, headers=[("traceparent", binary), ("empty", b"")]),
        ],
        TP1: [Rec(3, "é".encode(), key=b"k")],
    }
    child, out = child_with([polled])
    child._poll()
    ((kind, meta, blob),) = frames(out)
    assert kind == BATCH and child.credit == 4000 - 4, "credit is spent per record sent"
    assert sorted(map(tuple, meta["assign"])) == [("events", 0), ("events", 1)]
    records = _decode_batch(meta, blob)
    got = [
        (r.topic, r.partition, r.offset, r.timestamp, r.value, r.key, r.headers) for r in records
    ]
    want = [
        (tp.topic, tp.partition, r.offset, r.timestamp, r.value, r.key, r.headers)
        for tp, recs in polled.items()
        for r in recs
    ]
    assert got == want


def test_the_child_seeks_only_what_it_owns_and_tags_later_batches() -> None:
    child, out = child_with([{TP0: [Rec(4, b"x")]}])
    child.consumer.owned = {TP0}
    child._op_seek({"epoch": 5, "to": [["events", 0, 4], ["events", 1, 9]]})
    assert child.consumer.seeks == [(TP0, 4)], "a partition it no longer owns is not sought"
    child._poll()
    ((_, meta, _),) = frames(out)
    assert meta["epoch"] == 5, "the parent drops batches read before its seek by this tag"


def test_a_seek_brings_back_what_was_read_ahead_of_a_partition_the_parent_has_none_of() -> None:
    """The parent names the partitions it has records of; the child's read-ahead of any other
    partition is dropped with the seek too, so that partition goes back to the first offset
    sent (else those records would be skipped, and a later commit would pass them)."""
    child, _ = child_with([{TP0: [Rec(10, b"a")], TP1: [Rec(40, b"b"), Rec(41, b"c")]},
                           {TP1: [Rec(42, b"d")]}])  # fmt: skip
    child._poll()
    child._poll()
    child._op_seek({"epoch": 1, "to": [["events", 0, 10]]})  # the parent had nothing of TP1
    assert sorted(child.consumer.seeks) == [(TP0, 10), (TP1, 40)]
    child.consumer.seeks.clear()
    child._op_seek({"epoch": 2, "to": [["events", 0, 11]]})  # nothing sent of TP1 since
    assert sorted(child.consumer.seeks) == [(TP0, 11), (TP1, 40)]


def test_the_child_commits_what_it_owns_and_answers_each_commit() -> None:
    child, out = child_with([])
    child.consumer.owned = {TP0}
    child._op_commit({"id": 1, "sync": True, "offsets": [["events", 0, 10], ["events", 1, 20]]})
    child._op_commit({"id": 2, "sync": True, "offsets": [["events", 1, 20]]})
    assert child.consumer.commits == [{TP0: 10}], "a revoked partition is its new owner's"
    answers = [(k, m) for k, m, _ in frames(out)]
    assert answers == [(COMMITTED, {"id": 1, "error": None}), (COMMITTED, {"id": 2, "error": None})]


def test_the_child_obeys_commands_in_order_and_stops_at_close() -> None:
    child, _ = child_with([])
    for command in ({"op": "credit", "n": 200}, {"op": "close"}, {"op": "credit", "n": 9}):
        child.commands.put(command)
    child._obey(wait_s=0.0)
    assert child.credit == 4200 and child.closing, "credit before close applied; nothing after"
