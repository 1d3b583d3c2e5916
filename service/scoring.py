"""Score: per event kind, a detector scores the batch, a calibrator turns scores into
percentiles, and the detector learns from what it did not flag.

The detector never learns from events it currently flags (an attack must not teach the model
that it is normal); analysts' benign verdicts are the way such events become normal.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import torch

from detectors.ape import APEDetector
from detectors.base import Detector, EventBatch, Explanation, LabelLearner
from detectors.calibration import QuantileCalibrator
from detectors.checkpoint import (
    CheckpointError,
    checkpoint_digest,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from detectors.devnet import DevNetDetector
from detectors.feedback import FeedbackDetector, pattern_key
from detectors.frequency import FrequencyDetector
from detectors.outrider import OutriderDetector
from service.decode import DecodedEvent
from service.holdback import HoldBack, flood_cap
from service.settings import Settings
from service.sources import DetectorName, SourceConfig

if TYPE_CHECKING:
    from service.groups import GroupBook

log = logging.getLogger(__name__)

#: Field readers for a batch's events, applied with map() (C speed, no per-event frame).
_KIND, _ROW, _TIME = attrgetter("event.kind"), attrgetter("row"), attrgetter("event.time")
_SOURCE = attrgetter("record.topic", "record.partition")
FEEDBACK_KEY = "~feedback~"  # checkpoint key prefix: '~' is never part of a kind name


@dataclass(frozen=True)
class ModelLimits:
    """What bounds a kind's detector: memory (values per entity type, value pairs per pair of
    types) and APE's training budget as a stream (NCE minibatches per learned event); by
    default, the service's settings' defaults."""

    max_values: int = Settings.model_fields["model_max_values"].default
    max_pairs: int = Settings.model_fields["model_max_pairs"].default
    ape_train_steps: float = Settings.model_fields["ape_train_steps_per_event"].default

    def ape(self) -> dict[str, Any]:
        return {"max_size": self.max_values, "train_steps_per_event": self.ape_train_steps}


#: (entity types, limits) -> a new detector
DetectorFactory = Callable[[tuple[str, ...], ModelLimits], Detector]

DETECTOR_FACTORIES: dict[DetectorName, DetectorFactory] = {
    "frequency": lambda types, lim: FrequencyDetector(
        types, max_values=lim.max_values, max_pairs=lim.max_pairs
    ),
    "outrider": lambda types, lim: OutriderDetector(
        types, max_pairs=lim.max_pairs, max_size=lim.max_values
    ),
    # APE's weight as in bench.quality's `outrider+ape` column (bench/README.md)
    "outrider+ape": lambda types, lim: OutriderDetector(types, ape_weight=0.25, **lim.ape()),
    "ape": lambda types, lim: APEDetector(types, **lim.ape()),
    # APE + the semi-supervised head: verdicts train the head (Scorer.learn_verdicts)
    "devnet": lambda types, lim: DevNetDetector(types, ape_config=lim.ape()),
}


def learns_labels(det: Detector) -> TypeGuard[LabelLearner]:
    """Whether the kind's detector itself learns from verdicts (a semi-supervised head);
    every kind's verdicts also train its count-based layer (`Scorer.feedback`)."""
    return isinstance(det, LabelLearner)


class ForeignModelError(CheckpointError):
    """A valid checkpoint of another detector than the one this scorer runs."""


@dataclass(slots=True)
class ScoredKind:
    """One kind's share of a batch, scored."""

    kind: str
    events: list[DecodedEvent]
    scores: np.ndarray
    percentiles: np.ndarray  # NaN while the kind's calibrator warms up
    alerted: np.ndarray  # bool
    explanations: dict[int, Explanation]  # by index into events, for alerted ones only
    events_seen: float = 0.0  # the kind's detector experience when it scored the batch
    calibration_seen: int = 0  # the kind's calibration sample size then
    calibration_min_samples: int = 1
    flood_scores: int = 0  # alerts of floods whose scores the calibration will not learn


def explain(det: Detector, batch: EventBatch, flagged: list[int]) -> dict[int, Explanation]:
    """Explanations of the flagged events, each distinct pattern explained once: an
    explanation depends on the pattern and the model only, and an alert storm is thousands
    of alerts of a few patterns."""
    if not flagged:
        return {}
    first: dict[tuple[str, ...], int] = {}
    for i in flagged:
        first.setdefault(batch.rows[i], i)
    idx = np.fromiter(first.values(), np.int64, len(first))
    sub = EventBatch(batch.entity_types, list(first), batch.times[idx])
    by_row = dict(zip(first, det.explain_many(sub), strict=True))
    return {i: by_row[batch.rows[i]] for i in flagged}


def _event_batch(entity_types: tuple[str, ...], events: Sequence[DecodedEvent]) -> EventBatch:
    """Decoded events as the detectors' batch (rows and times read at C speed)."""
    times = np.fromiter(map(_TIME, events), np.float64, len(events))
    return EventBatch(entity_types, list(map(_ROW, events)), times)


def _time_share(
    fb: FeedbackDetector,
    rows: Sequence[tuple[str, ...]],
    fired: Sequence[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Per row: the mean of `fb.time_term` over its alerts (seconds weighted by how many
    fired in each), so a group is part of a confirmed attack by the share of its alerts near
    it, and a chronic group with one alert in that hour stays down."""
    lengths = [len(seconds) for seconds, _ in fired]
    out = np.zeros(len(rows))
    if not sum(lengths):
        return out
    owner = np.repeat(np.arange(len(rows)), lengths)
    seconds = np.concatenate([np.asarray(t, np.float64) for t, _ in fired])
    counts = np.concatenate([np.asarray(c, np.float64) for _, c in fired])
    near = fb.time_term(seconds, [rows[i] for i in owner.tolist()])
    total = np.bincount(owner, weights=counts, minlength=len(rows))
    np.divide(np.bincount(owner, weights=near * counts, minlength=len(rows)), total,
              out=out, where=total > 0)  # fmt: skip
    return out


def _verdict_note(pattern: float, near: float, where: str) -> str:
    """Why verdicts moved a group, in the analyst's words: '+1.9: its alerts fired near
    alerts confirmed malicious on host=web; -3.2: look-alikes of benign verdicts'."""
    parts = []
    if near >= 0.1:
        parts.append(f"+{near:.1f}: its alerts fired near alerts confirmed malicious on {where}")
    if pattern <= -0.5:
        parts.append(f"{pattern:.1f}: look-alikes of benign verdicts")
    elif pattern >= 0.5:
        parts.append(f"+{pattern:.1f}: look-alikes of malicious verdicts")
    return "; ".join(parts)


#: the service's defaults, for scorers made without settings (benches, tests)
_DEFAULT = Settings.model_fields


class Scorer:
    """The detectors and calibrators of every kind, and the model version they form."""

    def __init__(
        self,
        config: SourceConfig,
        detector: str = "frequency",
        alert_percentile: float = 99.0,
        calibration_window: int = 50_000,
        calibration_min_samples: int = 1000,
        feedback_weight: float = 1.0,
        learn_delay_s: float = 0.0,
        learn_hold_max: int = 200_000,
        verdict_time_weight: float = _DEFAULT["verdict_time_weight"].default,
        verdict_time_scale_s: float = _DEFAULT["verdict_time_scale_s"].default,
        verdict_time_field: str = _DEFAULT["verdict_time_field"].default,
        verdict_lift_weight: float = _DEFAULT["verdict_lift_weight"].default,
        verdict_sink_min_fields: int = _DEFAULT["verdict_sink_min_fields"].default,
        ape_train_steps_per_event: float = _DEFAULT["ape_train_steps_per_event"].default,
        model_max_values: int = _DEFAULT["model_max_values"].default,
        model_max_pairs: int = _DEFAULT["model_max_pairs"].default,
    ) -> None:
        self.config = config
        if detector not in DETECTOR_FACTORIES:
            raise ValueError(f"unknown detector {detector!r}")
        self.detector_name = detector  # the default; a kind's config may name its own
        self.limits = ModelLimits(model_max_values, model_max_pairs, ape_train_steps_per_event)
        self.alert_percentile = alert_percentile
        self.calibration_window = calibration_window
        self.calibration_min_samples = calibration_min_samples
        self.feedback_weight = feedback_weight
        # a malicious verdict lifts its host's groups near the confirmed time (detectors/
        # feedback.py `time_term`, `time_same`), for kinds with that entity type
        self.verdict_time = (verdict_time_weight, verdict_time_scale_s, verdict_time_field)
        # how look-alikes of a verdict's pattern move: lifted by shared tokens (0 = never),
        # sunk by shared tokens spanning at least this many entity types
        self.verdict_tokens = {"lift_weight": verdict_lift_weight,
                               "sink_min_types": verdict_sink_min_fields}  # fmt: skip
        self.kind_thresholds: dict[str, float] = {}  # set at run time, win over config
        self.detectors: dict[str, Detector] = {}
        self.calibrators: dict[str, QuantileCalibrator] = {}
        # what analysts' verdicts taught, per kind (detectors/feedback.py: pattern tokens
        # weighted by their log-odds among verdicts and their specificity)
        self.feedback: dict[str, FeedbackDetector] = {}
        # detector + birth + a random tag: two processes born in the same second (a trainer
        # and its scorers) must never name different models alike
        born = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.lineage = f"{detector}-{born}-{secrets.token_hex(2)}"
        self.generation = 0  # bumped by every fine-tune from verdicts
        # traffic is learned `learn_delay_s` late, minus patterns that alerted meanwhile
        # (service/holdback.py); 0 = at once
        self.learn_delay_s, self.learn_hold_max = learn_delay_s, learn_hold_max
        self.holdbacks: dict[str, HoldBack] = {}
        self._source_ids: dict[tuple[str, int], int] = {}  # (topic, partition) -> small int

    @classmethod
    def for_settings(cls, config: SourceConfig, settings: Settings) -> Scorer:
        """A scorer as the settings configure it."""
        return cls(
            config,
            detector=settings.detector,
            alert_percentile=settings.alert_percentile,
            calibration_window=settings.calibration_window,
            calibration_min_samples=settings.calibration_min_samples,
            feedback_weight=settings.feedback_weight,
            learn_delay_s=settings.learn_delay_s,
            learn_hold_max=settings.learn_hold_max_events,
            verdict_time_weight=settings.verdict_time_weight,
            verdict_time_scale_s=settings.verdict_time_scale_s,
            verdict_time_field=settings.verdict_time_field,
            verdict_lift_weight=settings.verdict_lift_weight,
            verdict_sink_min_fields=settings.verdict_sink_min_fields,
            ape_train_steps_per_event=settings.ape_train_steps_per_event,
            model_max_values=settings.model_max_values,
            model_max_pairs=settings.model_max_pairs,
        )

    @property
    def version(self) -> str:
        """The model version on every alert: lineage (detector + birth) and generation."""
        return f"{self.lineage}.{self.generation}"

    def detector_of(self, kind: str) -> DetectorName:
        """The kind's detector: its config's (`[kinds.X] detector`), else the default."""
        spec = self.config.kinds.get(kind)
        return (spec.detector if spec is not None else None) or self.detector_name

    def _for_kind(self, kind: str) -> tuple[Detector, QuantileCalibrator]:
        det = self.detectors.get(kind)
        if det is None:
            make = DETECTOR_FACTORIES[self.detector_of(kind)]
            det = self.detectors[kind] = make(self.config.kinds[kind].entities, self.limits)
            self.calibrators[kind] = self._new_calibrator()
        if kind not in self.feedback:
            self.feedback[kind] = FeedbackDetector(
                det.entity_types, base="frequency", **self._verdict_options(det.entity_types)
            )
        return det, self.calibrators[kind]

    def _verdict_options(self, entity_types: Sequence[str]) -> dict[str, Any]:
        """How this scorer's settings say verdicts generalise (FeedbackDetector's options):
        given to new verdict learners and to restored ones, so a changed setting applies
        after a restart too."""
        weight, scale, field = self.verdict_time
        local = field in entity_types and weight > 0
        return {"time_weight": weight if local else 0.0, "time_scale_s": scale,
                "time_same": field if local else None, **self.verdict_tokens}  # fmt: skip

    def feedback_of(self, kind: str) -> FeedbackDetector:
        """The kind's verdict learner (made with the kind's detector if new)."""
        self._for_kind(kind)
        return self.feedback[kind]

    def threshold(self, kind: str) -> float:
        """The kind's alert percentile: set at run time (`outrider sensitivity`), else the
        kind's config (`[kinds.X] alert_percentile`), else the global one."""
        if kind in self.kind_thresholds:
            return self.kind_thresholds[kind]
        own = self.config.kinds[kind].alert_percentile
        return self.alert_percentile if own is None else own

    def _new_calibrator(self) -> QuantileCalibrator:
        return QuantileCalibrator(size=self.calibration_window, seed=0)

    def score(self, events: Sequence[DecodedEvent], learn: bool = True) -> list[ScoredKind]:
        """Score, calibrate, explain the flagged, then learn from the rest. `learn=False`
        leaves the model exactly as it is (a version-pinned replay)."""
        kinds = list(map(_KIND, events))  # attribute reads at C speed, no frame per event
        by_kind: dict[str, list[DecodedEvent]] = {}
        if len(set(kinds)) <= 1:
            if kinds:
                by_kind[kinds[0]] = events if isinstance(events, list) else list(events)
        else:
            for kind, ev in zip(kinds, events, strict=True):
                by_kind.setdefault(kind, []).append(ev)
        out = []
        for kind, evs in by_kind.items():
            det, cal = self._for_kind(kind)
            batch = _event_batch(det.entity_types, evs)
            scores = det.score_many(batch)
            fb = self.feedback[kind]
            if learn:
                fb.observe_patterns(dict.fromkeys(batch.rows))  # pattern specificity, cheap
            if fb.labeled_:
                scores = scores + self.feedback_weight * fb.pattern_term(batch.rows)
            if cal.seen >= self.calibration_min_samples:
                pct = cal.percentile(scores)
            else:  # too few scores for a percentile to mean anything: no alerts yet
                pct = np.full(len(evs), np.nan)
            alerted = np.nan_to_num(pct, nan=-1.0) >= self.threshold(kind)
            flagged = np.flatnonzero(alerted)
            explanations = explain(det, batch, flagged.tolist())
            # what the model knew when it judged: the alerts' confidence reads this
            out.append(
                ScoredKind(
                    kind,
                    evs,
                    scores,
                    pct,
                    alerted,
                    explanations,
                    det.events_seen_,
                    cal.seen,
                    self.calibration_min_samples,
                )
            )
            if learn:
                out[-1].flood_scores = self._learn(
                    kind, det, cal, fb, batch, scores, alerted, self._sources(evs)
                )
        return out

    def explain_events(self, kind: str, events: Sequence[DecodedEvent]) -> ScoredKind:
        """The kind's explanations of events scored earlier, as a ScoredKind with no scores
        (the stream stage fills them in): what the model says about them now, and what it
        knew (for the alerts' confidence)."""
        det, cal = self._for_kind(kind)
        n = len(events)
        return ScoredKind(
            kind, list(events), np.zeros(n), np.zeros(n), np.ones(n, dtype=bool),
            explain(det, _event_batch(det.entity_types, events), list(range(n))),
            det.events_seen_, cal.seen,
            self.calibration_min_samples,
        )  # fmt: skip

    def _sources(self, events: Sequence[DecodedEvent]) -> np.ndarray:
        """Per event, a small int naming its topic partition: held-back learning keeps a
        clock per partition (service/holdback.py)."""
        ids = self._source_ids
        keys = list(map(_SOURCE, events))
        for key in dict.fromkeys(keys):  # the batch's few partitions
            ids.setdefault(key, len(ids))
        return np.fromiter(map(ids.__getitem__, keys), np.int64, len(keys))

    def _learn(
        self,
        kind: str,
        det: Detector,
        cal: QuantileCalibrator,
        fb: FeedbackDetector,
        batch: EventBatch,
        scores: np.ndarray,
        alerted: np.ndarray,
        sources: np.ndarray | None = None,
    ) -> int:
        """Calibrate on the batch's scores and learn from every event not flagged, plus the
        flagged ones whose pattern an analyst called benign, once the hold-back lets them.
        Returns how many of the batch's scores the calibration leaves out (alert floods)."""
        learnable = ~alerted
        if fb.labeled_ and alerted.any():
            for i in np.flatnonzero(alerted).tolist():
                if fb.labeled_.get(pattern_key(batch.rows[i])) == 0:
                    learnable[i] = True
        hold = self.holdbacks.get(kind)
        if hold is None:
            hold = self.holdbacks[kind] = HoldBack(
                self.learn_delay_s, self.learn_hold_max,
                flood_cap=flood_cap(self.calibration_window),
            )  # fmt: skip
        flood = hold.push(batch, scores, alerted & ~learnable, learnable, sources)
        # a young model has nothing to protect yet: it learns at once until it is calibrated
        young = cal.seen < self.calibration_min_samples
        for events, chunk_scores in hold.ready(everything=young):
            if det.events_seen_ > 0:  # an empty model's scores would skew calibration
                cal.update(chunk_scores)
            if len(events):
                det.learn_many(events)
        return flood

    def peek(
        self,
        kind: str,
        rows: list[tuple[str, ...]],
        fired: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> np.ndarray:
        """Scores the model would give `rows` now, learning nothing (what-if queries).
        With `fired` (per row: the seconds its alerts fired at and how many in each, as an
        alert group keeps them), a row is lifted by the share of its alerts near alerts an
        analyst confirmed malicious on its host (`verdict_time_*`)."""
        det, _ = self._for_kind(kind)
        scores = det.peek_many(EventBatch(det.entity_types, rows))
        pattern, near = self.verdict_terms(kind, rows, fired)
        return scores + pattern + near

    def verdict_terms(
        self,
        kind: str,
        rows: list[tuple[str, ...]],
        fired: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the verdicts add to each row's score: by the look-alikes they judged (the
        pattern term) and, given `fired`, by nearness to confirmed attacks on its host."""
        fb = self.feedback_of(kind)
        pattern, near = np.zeros(len(rows)), np.zeros(len(rows))
        if fb.labeled_:
            pattern = self.feedback_weight * fb.pattern_term(rows)
        weight = fb.config["time_weight"]
        if fired is not None and weight and len(fb.malicious_times_) and rows:
            near = self.feedback_weight * weight * _time_share(fb, rows, fired)
        return pattern, near

    def rescore_book(self, book: GroupBook) -> None:
        """Re-rank `book`'s groups under the model as it is now (after verdicts, or a swap to
        the trainer's model)."""
        book.rescore(self.rescore_groups, lambda kind: self.config.kinds[kind].entities)

    def rescore_groups(
        self,
        kind: str,
        rows: list[tuple[str, ...]],
        fired: Sequence[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, list[str]]:
        """Alert groups' scores under the model as it is now (`peek` with when their alerts
        fired) and, for the analyst, what the verdicts did to each (empty when nothing)."""
        det, _ = self._for_kind(kind)
        base = det.peek_many(EventBatch(det.entity_types, rows))
        pattern, near = self.verdict_terms(kind, rows, fired)
        field = self.feedback[kind].config.get("time_same")
        at = det.entity_types.index(field) if field else -1
        notes = [
            _verdict_note(p, n, f"{field}={row[at]}" if at >= 0 else "")
            for p, n, row in zip(pattern.tolist(), near.tolist(), rows, strict=True)
        ]
        return base + pattern + near, notes

    def learn_verdicts(
        self,
        kind: str,
        rows: list[tuple[str, ...]],
        labels: list[int],
        times: Sequence[float] | None = None,
        train_head: bool = True,
    ) -> None:
        """Fine-tune from analyst verdicts (1 = malicious, 0 = benign; `times`: when each
        labeled alert fired) and start a new model generation, so every later alert names the
        model that knew these verdicts. `train_head=False`: a semi-supervised head only
        records them, for a training off this thread (service/analyst_loop.py)."""
        det, _ = self._for_kind(kind)
        at = np.zeros(len(rows)) if times is None else np.asarray(times, np.float64)
        batch = EventBatch(det.entity_types, rows, at)
        self.feedback[kind].learn_labels(batch, labels)
        if learns_labels(det):  # a semi-supervised head (devnet) learns them too
            det.learn_labels(batch, np.asarray(labels), train=train_head)
        self.generation += 1

    def retract(self, kind: str, row: tuple[str, ...], train_head: bool = True) -> bool:
        """Forget the verdict on one pattern (an analyst's undo); True if there was one."""
        fb = self.feedback.get(kind)
        if fb is None or not fb.forget(row):
            return False
        det = self.detectors.get(kind)
        if det is not None and learns_labels(det):
            det.forget(row, train=train_head)
        self.generation += 1
        return True

    # -- state ----------------------------------------------------------------------------
    def save(
        self, store: Path, extra: dict | None = None, arrays: dict[str, np.ndarray] | None = None
    ) -> Path:
        """Checkpoint detectors and calibrators under this scorer's version; `extra` is more
        JSON state that must move with the model (e.g. the log miner's templates), `arrays`
        more arrays (back in the extra's `_aux`)."""
        cal_meta, aux = {}, dict(arrays or {})
        for kind, cal in self.calibrators.items():
            arrays, cal_meta[kind] = cal.state()
            aux.update({f"calibration/{kind}/{k}": v for k, v in arrays.items()})
        detectors = dict(self.detectors)
        detectors.update({FEEDBACK_KEY + k: fb for k, fb in self.feedback.items()})
        return save_checkpoint(
            store,
            self.version,
            detectors,
            extra={
                **(extra or {}),
                "detector": self.detector_name,
                "kind_detectors": {kind: self.detector_of(kind) for kind in self.detectors},
                "lineage": self.lineage,
                "generation": self.generation,
                "calibrators": cal_meta,
            },
            aux=aux,
        )

    def restore(self, store: Path, version: str | None = None) -> dict | None:
        """Load the newest checkpoint in `store` (or exactly `version`, as it was saved: a
        pinned replay); its extra state, or None when there is none (or it is another
        detector's)."""
        path = latest_checkpoint(store) if version is None else Path(store) / version
        if path is None or (version is not None and not path.is_dir()):
            return None
        try:
            return self.load(path, as_saved=version is not None)
        except ForeignModelError:
            return None

    def adopt(self, store: Path, version: str, sha256: str) -> None:
        """Hot swap to an announced model (service role `scorer`): its detectors, calibrators,
        verdict learning and version replace this scorer's, between batches. Only a version
        name inside `store` is read (never a path from the topic), and its tensor file must
        hash to the announced digest; anything else raises CheckpointError and the current
        model stays."""
        if not version or "/" in version or "\\" in version or version.startswith("."):
            raise CheckpointError(f"announced version {version[:80]!r} is not a store name")
        path = Path(store) / version
        if not path.is_dir():
            raise CheckpointError(f"{path}: announced model is not in the store")
        if checkpoint_digest(path) != sha256:
            raise CheckpointError(f"{path}: digest differs from the announcement")
        self.load(path, as_saved=True)  # the announced version is the model, as it was saved

    def load(self, path: Path, as_saved: bool = False) -> dict:
        """Replace the model with checkpoint `path` (verified by load_checkpoint); its extra.
        A kind whose config now names another detector than the one that learned it starts
        over (a restart after a config change), unless `as_saved` (a pinned version, an
        announced model: what the version scored with is what it must score with)."""
        version, detectors, extra = load_checkpoint(path)
        saved_default = extra.get("detector")
        saved = extra.get("kind_detectors", {})  # absent before 2026-12-05: all the default
        kinds = [k for k in detectors if not k.startswith(FEEDBACK_KEY)]
        foreign = [k for k in kinds if saved.get(k, saved_default) != self.detector_of(k)]
        if saved_default != self.detector_name and (not kinds or len(foreign) == len(kinds)):
            raise ForeignModelError(
                f"{path}: another detector's model ({saved_default!r}, "
                f"this scorer runs {self.detector_name!r})"
            )
        for kind in [] if as_saved else foreign:  # its config names another detector now
            log.warning(
                "checkpoint %s: kind %s was scored by %s, now %s; it learns anew",
                path.name,
                kind,
                saved.get(kind, saved_default),
                self.detector_of(kind),
            )
            del detectors[kind]
        self.lineage = extra.get("lineage", version)
        self.generation = int(extra.get("generation", 0))
        self.feedback = {
            k[len(FEEDBACK_KEY) :]: d  # type: ignore[misc]
            for k, d in detectors.items()
            if k.startswith(FEEDBACK_KEY)
        }
        for fb in self.feedback.values():  # this process's settings say how verdicts move
            fb.reconfigure(**self._verdict_options(fb.entity_types))
        self.detectors = {k: d for k, d in detectors.items() if not k.startswith(FEEDBACK_KEY)}
        aux = extra["_aux"]
        self.calibrators = {
            kind: QuantileCalibrator.from_state(
                {
                    k.rsplit("/", 1)[1]: v
                    for k, v in aux.items()
                    if k.startswith(f"calibration/{kind}/")
                },
                meta,
            )
            for kind, meta in extra.get("calibrators", {}).items()
            if kind in self.detectors  # a dropped kind's scores were another detector's
        }
        for kind in self.detectors:
            self.calibrators.setdefault(kind, self._new_calibrator())
        return extra


def tune_torch(threads: int) -> int:
    """Set the CPU threads of torch's kernels (`--torch-threads`; 0 = one fewer than the
    cores, at least 1) and return the number. torch's default, one per core, competes with
    the chain's own thread and the consumer for the same cores: on our 2-core VM it made
    DevNet batches 12% slower and the background head training 35% longer than one thread
    (bench/head_training.py)."""
    n = threads or max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(n)
    return n
