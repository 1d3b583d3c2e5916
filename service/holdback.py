"""Learning held back: traffic is learned only once it is `delay_s` old (event time).

Learning from every batch at once lets an attack teach the model that it is normal: a step that
fires many alerts just under the threshold is learned batch by batch, and its later alerts,
the ones that would have crossed the threshold, never do. Measured on AIT (bench/product.py):
with immediate learning the service never alerted on 2-3 attack steps of each scenario that a
model fitted before the attack flags. So the scorer holds each batch's learnable events back
for `delay_s` and then learns them, minus those whose pattern was flagged within `delay_s`
of them (the same burst): a pattern that alerts is not learned from its own burst. Until a
kind's calibration has its minimum sample, nothing is held (a new model protects nothing and
must warm up). This is
the replay buffer of DESIGN.md's continual learning. Memory is bounded: beyond `max_events`
held, the oldest are learned early. Held events are not checkpointed: a restart loses at most
`delay_s` of learning, never data.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import numpy as np

from detectors.base import EventBatch


@dataclass(slots=True)
class _Chunk:
    batch: EventBatch  # the learnable events of one scored batch
    scores: np.ndarray  # every event's score: calibration learns them at the same time
    newest: float


class HoldBack:
    """One event kind's held-back learning."""

    def __init__(self, delay_s: float, max_events: int) -> None:
        self.delay_s = delay_s
        self.max_events = max_events
        self.chunks: deque[_Chunk] = deque()
        self.held = 0
        self.latest = -np.inf  # newest event time seen
        # pattern -> (when its current alert episode began, when it last alerted)
        self.flagged: dict[tuple[str, ...], tuple[float, float]] = {}

    def push(
        self, batch: EventBatch, scores: np.ndarray, alerted: np.ndarray, learnable: np.ndarray
    ) -> None:
        """A scored batch: what alerted is remembered, what may be learned is held."""
        if not len(batch):
            return
        for i in np.flatnonzero(alerted).tolist():
            row, t = batch.rows[i], float(batch.times[i])
            start, last = self.flagged.get(row, (-np.inf, -np.inf))
            if abs(t - last) > self.delay_s:  # quiet for longer than the window: a new episode
                self.flagged[row] = (t, t)
            elif t > last:
                self.flagged[row] = (start, t)
        keep = np.flatnonzero(learnable)
        sub = batch if len(keep) == len(batch) else _subset(batch, keep)
        newest = float(batch.times.max())
        self.latest = max(self.latest, newest)
        self.chunks.append(_Chunk(sub, scores, newest))
        self.held += len(sub)

    def ready(self, everything: bool = False) -> Iterator[tuple[EventBatch, np.ndarray]]:
        """(events to learn, scores to calibrate on) that have waited long enough, or all
        held ones (`everything`: a young model learns at once)."""
        horizon = self.latest - self.delay_s
        while self.chunks and self.held > self.max_events:  # over budget: oldest first
            chunk = self.chunks.popleft()
            self.held -= len(chunk.batch)
            yield self._unflagged(chunk.batch), chunk.scores
        # partitions move at their own pace: a chunk behind a newer one may be due
        due = [c for c in self.chunks if everything or c.newest <= horizon]
        if due:
            self.chunks = deque(c for c in self.chunks if not (everything or c.newest <= horizon))
            for chunk in due:
                self.held -= len(chunk.batch)
                yield self._unflagged(chunk.batch), chunk.scores
        if len(self.flagged) > 10_000:  # forget alerts older than any held event can reach
            old = horizon - self.delay_s
            self.flagged = {r: se for r, se in self.flagged.items() if se[1] >= old}

    def _unflagged(self, batch: EventBatch) -> EventBatch:
        """The events outside their pattern's alert episode's first window: within `delay_s`
        before or after the episode began (the burst that alerted) an event is not learned;
        a pattern that keeps alerting longer than that is learned again and fades, so a
        change in normal traffic does not flood the analysts for good. Windows are two-sided,
        so partitions read at different paces in event time do not poison each other."""
        if not self.flagged or not self.delay_s:
            return batch
        never = (np.inf, np.inf)
        episodes = map(self.flagged.get, batch.rows, repeat(never))  # at C speed
        began = np.fromiter(map(itemgetter(0), episodes), np.float64, len(batch))
        keep = np.flatnonzero(np.abs(batch.times - began) > self.delay_s)
        return batch if len(keep) == len(batch) else _subset(batch, keep)


def _subset(batch: EventBatch, idx: np.ndarray) -> EventBatch:
    return EventBatch(batch.entity_types, [batch.rows[i] for i in idx], batch.times[idx])
