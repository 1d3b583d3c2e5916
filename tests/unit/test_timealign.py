"""Partitions read in step by record time (service/timealign.py), against a stand-in for
kafka-python's consumer calls; tests/integration/test_consumer_process.py reads a real
backlog through the broker."""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka.structs import TopicPartition

from service.timealign import TimeAligner, unstick_parked_records

A, B = TopicPartition("events", 0), TopicPartition("events", 1)


@dataclass
class Rec:
    timestamp: int


@dataclass
class FakeConsumer:
    high: dict[TopicPartition, int | None]
    pos: dict[TopicPartition, int]
    paused: set[TopicPartition] = field(default_factory=set)

    def assignment(self) -> set[TopicPartition]:
        return set(self.high)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high[tp]

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return self.pos[tp]

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)


def _minutes(m: float) -> list[Rec]:
    return [Rec(int(m * 60_000))]


def test_a_partition_ahead_of_one_behind_its_end_waits_for_it() -> None:
    c = FakeConsumer(high={A: 1000, B: 1000}, pos={A: 100, B: 10})
    al = TimeAligner(window_ms=600_000, clock=lambda: 0.0)
    al.after_poll(c, {A: _minutes(60), B: _minutes(5)})
    assert c.paused == {A}, "A is 55 minutes ahead of B, which still has records to read"
    al.after_poll(c, {B: _minutes(52)})
    assert c.paused == set(), "B came within the window: A reads again"


def test_live_partitions_at_their_end_never_wait() -> None:
    c = FakeConsumer(high={A: 100, B: 50}, pos={A: 100, B: 50})
    al = TimeAligner(window_ms=1000, clock=lambda: 0.0)
    al.after_poll(c, {A: _minutes(600), B: _minutes(1)})
    assert c.paused == set(), "B has nothing left to read: nothing to wait for"


def test_a_partition_not_read_yet_counts_as_the_slowest() -> None:
    c = FakeConsumer(high={A: 1000, B: None}, pos={A: 10, B: 0})
    al = TimeAligner(window_ms=1000, clock=lambda: 0.0)
    al.after_poll(c, {A: _minutes(1)})
    assert c.paused == {A}, "B's first fetch has not come: it may be far behind"


def test_a_partition_that_brings_nothing_stops_holding_the_others() -> None:
    now = [0.0]
    c = FakeConsumer(high={A: 1000, B: 1000}, pos={A: 10, B: 0})
    al = TimeAligner(window_ms=1000, max_idle_s=2.0, clock=lambda: now[0])
    al.after_poll(c, {A: _minutes(1)})
    assert c.paused == {A}
    now[0] = 1.0
    al.after_poll(c, {})
    assert c.paused == {A}
    now[0] = 3.0  # B's leader is away: the service must not stop
    al.after_poll(c, {})
    assert c.paused == set()


def test_off_by_default_window_zero_and_forget_resumes() -> None:
    c = FakeConsumer(high={A: 1000, B: 1000}, pos={A: 10, B: 0})
    TimeAligner(window_ms=0).after_poll(c, {A: _minutes(100), B: _minutes(1)})
    assert c.paused == set()
    al = TimeAligner(window_ms=1000, clock=lambda: 0.0)
    al.after_poll(c, {A: _minutes(100), B: _minutes(1)})
    assert c.paused == {A}
    al.forget(c, [A])  # A was sought back: its records come again
    assert c.paused == set() and A not in al.read_to


class _Drained:
    def __bool__(self) -> bool:
        return False


def test_a_drained_partition_in_line_is_cleared_for_the_parked_ones() -> None:
    class Fetcher:
        def __init__(self) -> None:
            self._next_partition_records: object = _Drained()
            self._paused_partition_records = {B: object()}

    class Consumer:
        def __init__(self) -> None:
            self._fetcher = Fetcher()

    consumer = Consumer()
    unstick_parked_records(consumer)
    assert consumer._fetcher._next_partition_records is None
