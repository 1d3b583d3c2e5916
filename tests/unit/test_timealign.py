"""Partitions read in step by record time (service/timealign.py), against a stand-in for
kafka-python's consumer that, like kafka-python, hands out one partition's fetched records
before the next one's; tests/integration/test_consumer_process.py reads a real backlog
through the broker, in the consumer process and in process."""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka.structs import TopicPartition

from service.timealign import TimeAligner, unstick_parked_records

A, B = TopicPartition("events", 0), TopicPartition("events", 1)
MINUTE = 60_000


@dataclass
class Rec:
    partition: int
    offset: int
    timestamp: int


@dataclass
class FakeConsumer:
    """Partition after partition, skipping paused ones; `away` partitions bring nothing."""

    logs: dict[TopicPartition, list[Rec]]
    pos: dict[TopicPartition, int] = field(default_factory=dict)
    paused: set[TopicPartition] = field(default_factory=set)
    away: set[TopicPartition] = field(default_factory=set)

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return self.pos.get(tp, 0)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = offset

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict:
        for tp in sorted(self.logs):
            at = self.pos.get(tp, 0)
            if tp in self.paused or tp in self.away or at >= len(self.logs[tp]):
                continue
            got = self.logs[tp][at : at + max_records]
            self.pos[tp] = at + len(got)
            return {tp: got}
        return {}


def _log(p: int, n: int, every_min: float, start_min: float = 0) -> list[Rec]:
    return [Rec(p, i, int((start_min + i * every_min) * MINUTE)) for i in range(n)]


def _drain(al: TimeAligner, c: FakeConsumer, total: int) -> tuple[list[Rec], float]:
    """Every record, and the largest gap (minutes) between how far the two partitions were
    read after a poll (the chain scores a poll's records together)."""
    out: list[Rec] = []
    read_to: dict[int, int] = {}
    gap = 0.0
    for _ in range(10 * total):
        for records in al.poll(c, 0, 50).values():
            out.extend(records)
            read_to[records[-1].partition] = records[-1].timestamp
        if len(read_to) == 2:
            gap = max(gap, abs(read_to[0] - read_to[1]) / MINUTE)
        if len(out) >= total:
            break
    return out, gap


def test_a_backlog_comes_out_in_step_and_whole() -> None:
    logs = {A: _log(0, 300, 1), B: _log(1, 300, 1)}
    _, apart = _drain(TimeAligner(0), FakeConsumer(dict(logs)), 600)
    assert apart >= 250, "the stand-in reads partition after partition"
    got, gap = _drain(TimeAligner(10 * MINUTE, clock=lambda: 0.0), FakeConsumer(dict(logs)), 600)
    assert gap <= 10 + 1, f"{gap} minutes apart"
    for p, tp in ((0, A), (1, B)):
        assert [r.offset for r in got if r.partition == p] == list(range(300)), tp


def test_live_partitions_at_their_end_pass_straight_through() -> None:
    c = FakeConsumer({A: _log(0, 5, 1, start_min=600), B: _log(1, 3, 1)}, pos={B: 3})
    al = TimeAligner(MINUTE, clock=lambda: 0.0)
    assert [r.offset for r in al.poll(c, 0, 50)[A]] == [0, 1, 2, 3, 4]
    assert c.paused == set(), "B has nothing left to read: nothing to wait for"


def test_a_partition_that_brings_nothing_stops_holding_the_others() -> None:
    now = [0.0]
    c = FakeConsumer({A: _log(0, 10, 60, start_min=100), B: _log(1, 10, 60)}, away={B})
    al = TimeAligner(MINUTE, max_idle_s=2.0, clock=lambda: now[0])
    assert al.poll(c, 0, 50) == {}, "B has records left and has not been read yet"
    assert len(al.stash[A]) == 10
    now[0] = 3.0  # B's leader is away: the service must not stop
    assert len(al.poll(c, 0, 50)[A]) == 10


def test_a_seek_drops_the_stashes_and_loses_nothing() -> None:
    c = FakeConsumer({A: _log(0, 100, 1, start_min=1000), B: _log(1, 100, 1)})
    al = TimeAligner(MINUTE, clock=lambda: 0.0)
    al.poll(c, 0, 50)  # A's first 50 stashed: B not read yet
    assert al.stash and c.pos[A] == 50
    al.forget(c, [])  # the chain sought nothing itself: A goes back to what it stashed
    assert c.pos[A] == 0 and not al.stash and not c.paused
    got, _ = _drain(al, c, 200)
    assert sorted((r.partition, r.offset) for r in got) == [
        (p, i) for p in (0, 1) for i in range(100)
    ]


class _Drained:
    def __bool__(self) -> bool:
        return False


def test_a_drained_partition_in_line_is_cleared_for_the_parked_ones() -> None:
    class Subscriptions:
        def is_paused(self, tp: TopicPartition) -> bool:
            return False  # B was resumed

    class Fetcher:
        def __init__(self) -> None:
            self._next_partition_records: object = _Drained()
            self._paused_partition_records = {B: object()}
            self._subscriptions = Subscriptions()

    class Consumer:
        def __init__(self) -> None:
            self._fetcher = Fetcher()

    consumer = Consumer()
    unstick_parked_records(consumer)
    assert consumer._fetcher._next_partition_records is None


def test_a_paused_partition_in_line_is_parked_for_a_resumed_one() -> None:
    class InLine:
        topic_partition = A

        def __bool__(self) -> bool:
            return True  # records left

    class Subscriptions:
        def is_paused(self, tp: TopicPartition) -> bool:
            return tp == A  # A was paused after its records came in line; B resumed

    class Fetcher:
        def __init__(self) -> None:
            self._next_partition_records: object = InLine()
            self._paused_partition_records: dict = {B: object()}
            self._subscriptions = Subscriptions()

    class Consumer:
        def __init__(self) -> None:
            self._fetcher = Fetcher()

    consumer = Consumer()
    in_line = consumer._fetcher._next_partition_records
    unstick_parked_records(consumer)
    assert consumer._fetcher._next_partition_records is None
    assert consumer._fetcher._paused_partition_records[A] is in_line, "kept, not dropped"


def test_an_empty_partition_never_read_does_not_hold_the_others() -> None:
    """librdkafka knows no position of a partition it has read nothing of: an empty one
    (end offset 0) must not count as behind, or every other partition would wait on it."""

    class NoPosition(FakeConsumer):
        def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int | None:  # type: ignore[override]
            return None if tp == B else super().position(tp)

    c = NoPosition({A: _log(0, 5, 60, start_min=600), B: []})
    al = TimeAligner(MINUTE, clock=lambda: 0.0)
    assert len(al.poll(c, 0, 50)[A]) == 5
