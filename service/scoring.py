"""Score: per event kind, a detector scores the batch, a calibrator turns scores into
percentiles, and the detector learns from what it did not flag.

The detector never learns from events it currently flags (an attack must not teach the model
that it is normal); analysts' benign verdicts are the way such events become normal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.ape import APEDetector
from detectors.base import Detector, EventBatch, Explanation
from detectors.calibration import QuantileCalibrator
from detectors.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from detectors.frequency import FrequencyDetector
from detectors.outrider import OutriderDetector
from service.decode import DecodedEvent
from service.sources import SourceConfig

DetectorFactory = Callable[[tuple[str, ...]], Detector]

DETECTOR_FACTORIES: dict[str, DetectorFactory] = {
    "frequency": lambda types: FrequencyDetector(types),
    "outrider": lambda types: OutriderDetector(types),
    "ape": lambda types: APEDetector(types),
}


@dataclass(slots=True)
class ScoredKind:
    """One kind's share of a batch, scored."""

    kind: str
    events: list[DecodedEvent]
    scores: np.ndarray
    percentiles: np.ndarray  # NaN while the kind's calibrator warms up
    alerted: np.ndarray  # bool
    explanations: dict[int, Explanation]  # by index into events, for alerted ones only

    def severity(self, i: int) -> str:
        return QuantileCalibrator.severity(self.percentiles[i : i + 1])[0]


class Scorer:
    """The detectors and calibrators of every kind, and the model version they form."""

    def __init__(
        self,
        config: SourceConfig,
        detector: str = "frequency",
        alert_percentile: float = 99.0,
        calibration_window: int = 50_000,
        calibration_min_samples: int = 1000,
    ) -> None:
        self.config = config
        self.detector_name = detector
        self.factory = DETECTOR_FACTORIES[detector]
        self.alert_percentile = alert_percentile
        self.calibration_window = calibration_window
        self.calibration_min_samples = calibration_min_samples
        self.detectors: dict[str, Detector] = {}
        self.calibrators: dict[str, QuantileCalibrator] = {}
        self.version = f"{detector}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"

    def _for_kind(self, kind: str) -> tuple[Detector, QuantileCalibrator]:
        det = self.detectors.get(kind)
        if det is None:
            det = self.detectors[kind] = self.factory(self.config.kinds[kind].entities)
            self.calibrators[kind] = self._new_calibrator()
        return det, self.calibrators[kind]

    def _new_calibrator(self) -> QuantileCalibrator:
        return QuantileCalibrator(size=self.calibration_window, seed=0)

    def score(self, events: Sequence[DecodedEvent]) -> list[ScoredKind]:
        """Score, calibrate, explain the flagged, then learn from the rest."""
        by_kind: dict[str, list[DecodedEvent]] = {}
        for ev in events:
            by_kind.setdefault(ev.event.kind, []).append(ev)
        out = []
        for kind, evs in by_kind.items():
            det, cal = self._for_kind(kind)
            batch = EventBatch(
                det.entity_types,
                [e.row for e in evs],
                np.fromiter((e.event.time for e in evs), np.float64, len(evs)),
            )
            scores = det.score_many(batch)
            if cal.seen >= self.calibration_min_samples:
                pct = cal.percentile(scores)
            else:  # too few scores for a percentile to mean anything: no alerts yet
                pct = np.full(len(evs), np.nan)
            alerted = np.nan_to_num(pct, nan=-1.0) >= self.alert_percentile
            flagged = np.flatnonzero(alerted)
            explanations: dict[int, Explanation] = {}
            if len(flagged):
                sub = EventBatch(
                    batch.entity_types, [batch.rows[i] for i in flagged], batch.times[flagged]
                )
                explanations = dict(zip(flagged.tolist(), det.explain_many(sub), strict=True))
            if det.events_seen_ > 0:  # an empty model's scores would skew calibration
                cal.update(scores)
            keep = np.flatnonzero(~alerted)
            if len(keep) == len(evs):
                det.learn_many(batch)
            elif len(keep):
                det.learn_many(
                    EventBatch(batch.entity_types, [batch.rows[i] for i in keep], batch.times[keep])
                )
            out.append(ScoredKind(kind, evs, scores, pct, alerted, explanations))
        return out

    # -- state ----------------------------------------------------------------------------
    def save(self, store: Path, extra: dict | None = None) -> Path:
        """Checkpoint detectors and calibrators under this scorer's version; `extra` is more
        JSON state that must move with the model (e.g. the log miner's templates)."""
        cal_meta, aux = {}, {}
        for kind, cal in self.calibrators.items():
            arrays, cal_meta[kind] = cal.state()
            aux.update({f"calibration/{kind}/{k}": v for k, v in arrays.items()})
        return save_checkpoint(
            store,
            self.version,
            self.detectors,
            extra={**(extra or {}), "detector": self.detector_name, "calibrators": cal_meta},
            aux=aux,
        )

    def restore(self, store: Path) -> dict | None:
        """Load the newest checkpoint in `store`; its extra state, or None when there is none
        (or it is another detector's)."""
        path = latest_checkpoint(store)
        if path is None:
            return None
        version, detectors, extra = load_checkpoint(path)
        if extra.get("detector") != self.detector_name:
            return None
        self.version = version
        self.detectors = detectors
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
        }
        for kind in self.detectors:
            self.calibrators.setdefault(kind, self._new_calibrator())
        return extra
