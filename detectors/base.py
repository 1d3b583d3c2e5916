"""The detector contract every Outrider model follows.

The service knows detectors only through this contract, so a model can be swapped (frequency
baseline, APE, APE + DevNet head) without touching the pipeline, and one parametrized test
suite can hold every detector to the same checks.

Conventions (after river and pyod): higher score = more anomalous; a detector is fitted on a
batch of events of *one* event kind, whose entity types are fixed when it is built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Bumped when the meaning of a detector's saved state changes incompatibly.
STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Events of one kind, as the detector sees them.

    `rows[i][j]` is the value of entity type `entity_types[j]` in event i (a string; a missing
    entity is the empty string). `times` are event times in epoch seconds, used by detectors
    that model time context; they may all be zero when the source has no time.
    """

    entity_types: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if len(self.times) != len(self.rows):
            object.__setattr__(self, "times", np.zeros(len(self.rows), dtype=np.float64))

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True, slots=True)
class PairContribution:
    """One term of an explanation: how much two entities of one event pull its score up."""

    type_a: str
    value_a: str
    type_b: str
    value_b: str
    contribution: float  # share of the anomaly score, higher = more to blame
    together: float | None = None  # (decayed) times seen together, when the model counts


@dataclass(frozen=True, slots=True)
class EntityRarity:
    """How often the model has seen one entity value of an event (the analyst's 'how rare')."""

    entity_type: str
    value: str
    count: float  # (decayed) times seen
    frequency: float  # count / events seen of this kind, in [0, 1]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why one event scored as it did: the top entity pairs and the rarity of each entity."""

    pairs: tuple[PairContribution, ...]
    rarity: tuple[EntityRarity, ...]


def arrays_under(arrays: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The arrays a state saved under `prefix` (one part's, in a state of several parts), by
    their own names."""
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


class LabelJob(Protocol):
    """A label learner's training, its inputs gathered: `run` may go on in another thread."""

    #: the (pattern, label) pairs it trains on
    labels: frozenset[tuple[tuple[str, ...], int]]

    def run(self) -> LabelJob: ...


@runtime_checkable
class LabelLearner(Protocol):
    """A detector that also learns from analysts' verdicts (1 = malicious, 0 = benign) and
    can forget the verdicts on one pattern (an undo). With `train=False` both only record
    the change and leave the learner stale: `head_job()` then trains it off the caller's
    thread, and `install` ends that (it returns the call that undoes it: a rolled-back
    training)."""

    def learn_labels(self, batch: EventBatch, labels: np.ndarray, train: bool = True) -> None: ...

    def forget(self, row: Sequence[str], train: bool = True) -> bool: ...

    @property
    def head_stale(self) -> bool: ...

    @property
    def head_labels_(self) -> frozenset[tuple[tuple[str, ...], int]]: ...

    def head_job(self) -> LabelJob: ...

    def install(self, job: Any) -> Callable[[], None]: ...


class Detector(ABC):
    """Base of every detector: learn on batches, score batches, explain, save and load state."""

    #: Short stable name, e.g. "frequency" or "ape"; part of the model version string.
    name: str = "detector"

    def __init__(self, entity_types: Sequence[str]) -> None:
        if not entity_types:
            raise ValueError("a detector needs at least one entity type")
        if len(set(entity_types)) != len(entity_types):
            raise ValueError(f"entity types must be distinct: {list(entity_types)}")
        self.entity_types: tuple[str, ...] = tuple(entity_types)
        self.events_seen_: float = 0.0

    def _check(self, batch: EventBatch) -> None:
        if batch.entity_types != self.entity_types:
            raise ValueError(
                f"batch entity types {batch.entity_types} != detector's {self.entity_types}"
            )

    @abstractmethod
    def learn_many(self, batch: EventBatch) -> None:
        """Update the model with (presumed normal) events. An empty batch is a no-op."""

    @abstractmethod
    def score_many(self, batch: EventBatch) -> np.ndarray:
        """Anomaly scores, float64 of shape (len(batch),), higher = more anomalous."""

    def peek_many(self, batch: EventBatch) -> np.ndarray:
        """The scores `score_many` would give, leaving all state as it is: what-if queries
        and re-scoring what was already seen. Detectors whose scoring moves state (time
        context) override it."""
        return self.score_many(batch)

    @abstractmethod
    def explain_many(self, batch: EventBatch, top_k: int = 3) -> list[Explanation]:
        """One explanation per event, its `top_k` most anomalous entity pairs first."""

    @abstractmethod
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON-able metadata): everything needed to rebuild the detector, no code."""

    @classmethod
    def check_state(cls, meta: dict[str, Any]) -> None:
        """Refuse a state saved by another detector or in another state format."""
        if meta.get("detector") != cls.name or meta.get("state_format") != STATE_FORMAT:
            raise ValueError(
                f"state is for {meta.get('detector')!r} format {meta.get('state_format')!r}, "
                f"not {cls.name!r} format {STATE_FORMAT}"
            )

    @classmethod
    @abstractmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Detector:
        """Rebuild a detector from `state_dict()` output; refuses a mismatched state."""
