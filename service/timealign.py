"""Partitions read in step by record time while a consumer catches up on a backlog.

kafka-python hands out one partition's fetched records before the next one's, and with 10 MiB
partition fetches a backlog is read partition after partition: the chain then sees one
partition hours or days ahead in event time of the others, and learns from "the future" of
the partitions behind. On the throughput bench's 200,000 AIT events (four partitions) that cost
two thirds of the alerts, and the count swung between runs with the fetch order (885-22,423;
in memory, in order: 18,935). Kafka Streams solves the same problem by picking the partition
with the oldest record next; with kafka-python the cheap lever is `pause`: after each poll,
the partitions more than `window_ms` ahead of the slowest partition still behind its end
are paused (their fetched records stay parked in the client, KAFKA-7548) until it catches up.
A partition at its end never holds the others back, so live traffic, whose partitions move
together, is never paused; nor does a partition that brought nothing for `max_idle_s` (a
leader that is away must not stop the service).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kafka.structs import TopicPartition


class TimeAligner:
    """Decides after each poll which partitions of a kafka-python consumer wait."""

    def __init__(
        self,
        window_ms: int,
        max_idle_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_ms = window_ms
        self.max_idle_s = max_idle_s
        self.clock = clock
        self.read_to: dict[TopicPartition, int] = {}  # record time of the last record handed out
        self.last_seen: dict[TopicPartition, float] = {}  # wall clock of the last records
        self.paused: set[TopicPartition] = set()
        self.owned: set[TopicPartition] = set()

    def after_poll(self, consumer: Any, polled: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Note how far each polled partition was read, then pause and resume."""
        if not self.window_ms:
            return
        now = self.clock()
        for tp, records in polled.items():
            if records:
                ts = records[-1].timestamp
                if ts is not None and ts >= 0:
                    self.read_to[tp] = max(self.read_to.get(tp, ts), ts)
                self.last_seen[tp] = now
        owned = consumer.assignment()
        if owned != self.owned:  # a rebalance: the client forgot its pauses
            self.owned, self.paused = set(owned), set()
            for gone in [tp for tp in self.read_to if tp not in owned]:
                del self.read_to[gone]
                self.last_seen.pop(gone, None)
        behind = self._behind(consumer, owned, now)
        wait = self.waiting(owned, behind)
        if wait != self.paused:
            if self.paused - wait:
                consumer.resume(*(self.paused - wait))
            if wait - self.paused:
                consumer.pause(*(wait - self.paused))
            self.paused = wait
        unstick_parked_records(consumer)

    def waiting(
        self, owned: set[TopicPartition], behind: set[TopicPartition]
    ) -> set[TopicPartition]:
        """The partitions that should wait: more than the window ahead of the slowest
        partition still behind its end (one never read yet counts as the slowest)."""
        if not behind:
            return set()
        floor = min(self.read_to.get(tp, -1) for tp in behind)
        return {tp for tp in owned if self.read_to.get(tp, -1) > floor + self.window_ms}

    def _behind(self, consumer: Any, owned: set[TopicPartition], now: float) -> set[TopicPartition]:
        """Owned partitions with records left to read (or not known yet), not idle for longer
        than allowed."""
        out = set()
        for tp in owned:
            high = consumer.highwater(tp)
            if high is not None:  # unknown until the partition's first fetch: it may be far
                position = None  # behind (at start-up, one partition's first fetch came back
                with contextlib.suppress(Exception):  # alone and was read 170 h ahead)
                    position = consumer.position(tp, timeout_ms=0)
                if position is not None and position >= high:
                    continue
            if tp in self.paused or now - self.last_seen.setdefault(tp, now) <= self.max_idle_s:
                out.add(tp)
        return out

    def forget(self, consumer: Any, partitions: Iterable[TopicPartition]) -> None:
        """`partitions` were sought back: they are read again from where they are now
        (unknown until their next records), and nothing waits until the next poll."""
        for tp in partitions:
            self.read_to.pop(tp, None)
        if self.paused:
            with contextlib.suppress(Exception):
                consumer.resume(*self.paused)
            self.paused = set()


def unstick_parked_records(consumer: Any) -> None:
    """Work around kafka-python 3.0.12: a resumed partition's parked records are put back
    only when no partition's records are in line (`_next_partition_records is None`), but a
    drained one stays in line (falsy, not None), so the resumed partition was never read and
    never fetched again (the chain stalled at 87,715 of 200,000 records). A drained entry holds
    nothing: clearing it lets the next poll take the parked records."""
    fetcher = getattr(consumer, "_fetcher", None)
    in_line = getattr(fetcher, "_next_partition_records", None)
    if in_line is not None and not in_line and getattr(fetcher, "_paused_partition_records", None):
        fetcher._next_partition_records = None  # type: ignore[union-attr]
