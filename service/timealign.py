"""Partitions read in step by record time while a consumer catches up on a backlog.

kafka-python hands out one partition's fetched records before the next one's, and with 10 MiB
partition fetches a backlog is read partition after partition: the chain then sees one
partition hours or days ahead in event time of the others, and learns from "the future" of
the partitions behind (a 3,000-record backlog of two partitions was read 50 hours apart).
Kafka Streams solves the same problem by always taking the partition whose next record is
oldest; `TimeAligner.poll` does the same over kafka-python:
- each partition's polled records wait in a stash; once a partition has a poll's worth
  stashed (or all stashes together `STASH_POLLS` polls' worth) it is paused, so the client
  fetches and returns the others (its fetched records stay parked in the client, KAFKA-7548);
- records leave a stash once they are at most `window_ms` (record time) ahead of the slowest
  partition: the oldest stashed record, or the last record handed out of a partition that is
  behind its end and has nothing stashed (the next poll fetches it).
A partition at its end never holds the others back, so live traffic, whose partitions move
together, passes straight through; nor does one that brought nothing for `max_idle_s` (a
leader that is away must not stop the service). Record time is the producer's timestamp.
Stashed records count as consumed in the client's positions (the lag reads lower by what is
stashed); a seek or a rebalance drops the stashes and reads them again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from kafka.structs import TopicPartition

#: Polls' worth of records all stashes together may hold before every stashed partition waits.
STASH_POLLS = 8


class TimeAligner:
    """Polls a kafka-python consumer, handing records out with its partitions in step."""

    def __init__(
        self,
        window_ms: int,
        max_idle_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_ms = window_ms
        self.max_idle_s = max_idle_s
        self.clock = clock
        self.stash: dict[TopicPartition, list[Any]] = {}  # polled, not handed out yet
        self.read_to: dict[TopicPartition, int] = {}  # record time of the last one handed out
        self.last_seen: dict[TopicPartition, float] = {}  # wall clock of its last records
        self.paused: set[TopicPartition] = set()
        self.owned: set[TopicPartition] = set()

    def poll(self, consumer: Any, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        """Up to `max_records` records by partition, as kafka-python's `poll` returns them,
        none more than the window ahead of the slowest partition."""
        from service.procconsumer import poll_through_outage  # it imports this module

        if not self.window_ms:
            return poll_through_outage(consumer, timeout_ms, max_records)
        self._follow_assignment(consumer)
        out = self._release(consumer, max_records)
        if out:
            self._pause_stashed(consumer, max_records)
            return out
        polled = poll_through_outage(consumer, timeout_ms, max_records)
        self._follow_assignment(consumer)  # a poll is where a rebalance happens
        now = self.clock()
        for tp, records in polled.items():
            if records and tp in self.owned:
                self.stash.setdefault(tp, []).extend(records)
                self.last_seen[tp] = now
        out = self._release(consumer, max_records)
        self._pause_stashed(consumer, max_records)
        return out

    def _follow_assignment(self, consumer: Any) -> None:
        owned = consumer.assignment()
        if owned != self.owned:  # a rebalance: positions restart at the commits, pauses end
            self.owned, self.paused, self.stash = set(owned), set(), {}
            for gone in [tp for tp in self.read_to if tp not in owned]:
                del self.read_to[gone]
                self.last_seen.pop(gone, None)

    def _release(self, consumer: Any, max_records: int) -> dict[Any, list[Any]]:
        """What may leave the stashes now: from the partition whose oldest record is oldest,
        the records at most the window ahead of every other partition (as a merge would)."""
        out: dict[Any, list[Any]] = {}
        if not self.stash:
            return out
        room = max_records
        now = self.clock()  # the client's offsets, once per release (not per partition taken)
        behind = {tp for tp in self.owned if self._behind(consumer, tp, now)}
        while self.stash and room:
            marks = self._marks(behind)
            tp = min(self.stash, key=lambda t: marks[t])
            others = [m for t, m in marks.items() if t != tp]
            limit = min(others) + self.window_ms if others else float("inf")
            records = self.stash[tp]
            if len(records) <= room and _ts(records[-1]) <= limit:
                n = len(records)  # the usual case: all of it (live traffic, a short stash)
            else:
                n = 0
                while n < len(records) and n < room and _ts(records[n]) <= limit:
                    n += 1
            if not n:
                break  # it waits for a partition behind it
            out.setdefault(tp, []).extend(records[:n])
            self.read_to[tp] = max(self.read_to.get(tp, -1), _ts(records[n - 1]))
            if n == len(records):
                del self.stash[tp]
            else:
                del records[:n]
            room -= n
        return out

    def _marks(self, behind: set[TopicPartition]) -> dict[TopicPartition, int]:
        """How far each partition that can hold the others back is: its oldest stashed
        record, or, for one behind its end with nothing stashed, the last record handed out
        (-1: none yet; its next poll brings more)."""
        marks = {tp: _ts(records[0]) for tp, records in self.stash.items()}
        for tp in behind:
            if tp not in marks:
                marks[tp] = self.read_to.get(tp, -1)
        return marks

    def _behind(self, consumer: Any, tp: TopicPartition, now: float) -> bool:
        """Records left to read (or not known yet: before its first fetch a partition may be
        far behind), and it brought some within `max_idle_s`."""
        if consumer.highwater(tp) == 0:  # empty: librdkafka knows no position of it
            return False
        if records_left(consumer, tp) == 0:
            return False
        return now - self.last_seen.setdefault(tp, now) <= self.max_idle_s

    def _pause_stashed(self, consumer: Any, max_records: int) -> None:
        """A partition with a poll's worth of records stashed waits in the client (so the
        next poll brings the others); one with less stays fetchable, so the client keeps
        fetching it ahead (pausing a partition right after a poll drained it threw away the
        fetch the client had just sent for it, and every partition then waited on a round
        trip: the raw consumer read 40-64k records/s instead of 150k). All stashed partitions
        wait once the stashes hold `STASH_POLLS` polls' worth."""
        full = sum(map(len, self.stash.values())) >= STASH_POLLS * max_records
        wait = {tp for tp, r in self.stash.items() if full or len(r) >= max_records} & self.owned
        if wait != self.paused:
            if self.paused - wait:
                consumer.resume(*(self.paused - wait))
            if wait - self.paused:
                consumer.pause(*(wait - self.paused))
            self.paused = wait
        unstick_parked_records(consumer)

    def forget(self, consumer: Any, sought: Iterable[TopicPartition]) -> None:
        """`sought` partitions were sought back: their stashes go, and every other stashed
        partition is sought back to its oldest stashed record (nothing read is lost)."""
        if not self.window_ms:
            return
        sought = set(sought)
        for tp, records in self.stash.items():
            if tp not in sought and tp in self.owned:
                consumer.seek(tp, records[0].offset)
        self.stash = {}
        for tp in sought:
            self.read_to.pop(tp, None)
        if self.paused:
            with contextlib.suppress(Exception):
                consumer.resume(*self.paused)
            self.paused = set()


def records_left(consumer: Any, tp: TopicPartition) -> int | None:
    """Records between the consumer's position and the partition's end, from its last fetch
    (no request); None while either is unknown (before the first fetch, after a rebalance)."""
    high = consumer.highwater(tp)
    if high is None:
        return None
    try:
        position = consumer.position(tp, timeout_ms=0)
    except Exception:
        return None
    return None if position is None else max(high - position, 0)


def _ts(record: Any) -> int:
    ts = record.timestamp
    return -1 if ts is None else ts


def unstick_parked_records(consumer: Any) -> None:
    """Work around kafka-python 3.0.12, which puts a resumed partition's parked records back
    only when no partition's records are in line (`_next_partition_records is None`). Two
    cases kept them parked: a drained entry stays in line (falsy, not None), so the resumed
    partition was never read nor fetched again (the chain stalled at 87,715 of 200,000
    records); and a paused partition's records in line are parked only later in the same
    call, so each such poll came back empty after its whole timeout. Here the entry in line is
    cleared or parked first, as the client itself would; nothing else changes."""
    fetcher = getattr(consumer, "_fetcher", None)
    in_line = getattr(fetcher, "_next_partition_records", None)
    parked = getattr(fetcher, "_paused_partition_records", None)
    subscriptions = getattr(fetcher, "_subscriptions", None)
    if in_line is None or not parked or subscriptions is None:
        return
    with contextlib.suppress(Exception):  # private parts: do nothing if they changed
        if not any(not subscriptions.is_paused(tp) for tp in parked):
            return
        if not in_line:
            fetcher._next_partition_records = None  # type: ignore[union-attr]
        elif subscriptions.is_paused(in_line.topic_partition):
            parked[in_line.topic_partition] = in_line
            fetcher._next_partition_records = None  # type: ignore[union-attr]
