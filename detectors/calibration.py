"""Score calibration: raw anomaly scores -> percentile and severity, comparable across models.

Raw scores of different detectors, kinds and model versions live on different scales; an
analyst's threshold must not. Following Merlion's post-rule idea (calibrate, then threshold),
each event kind keeps a window of its recent raw scores; an event's percentile is its mid-rank
in that window (ties share the middle rank, so a score seen often is never 'rare'), and the
severity is a fixed band of percentiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: (minimum percentile, severity), highest first.
SEVERITY_BANDS: tuple[tuple[float, str], ...] = (
    (99.9, "critical"),
    (99.5, "high"),
    (99.0, "medium"),
    (0.0, "low"),
)


def severity_of(percentile: float) -> str:
    for floor, name in SEVERITY_BANDS:
        if percentile >= floor:
            return name
    return "low"


class QuantileCalibrator:
    """Mid-rank percentile of a score among the last `window` scores seen."""

    def __init__(self, window: int = 50_000, min_samples: int = 1_000) -> None:
        if window < 1 or min_samples < 1:
            raise ValueError("window and min_samples must be positive")
        self.window = window
        self.min_samples = min(min_samples, window)
        self._ring = np.zeros(window, dtype=np.float64)
        self._next = 0
        self.seen_ = 0
        self._sorted: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        """True once enough scores were seen for a percentile to mean something."""
        return self.seen_ >= self.min_samples

    def update(self, scores: np.ndarray) -> None:
        scores = np.asarray(scores, dtype=np.float64)[-self.window :]
        n = len(scores)
        if n == 0:
            return
        end = self._next + n
        if end <= self.window:
            self._ring[self._next : end] = scores
        else:
            first = self.window - self._next
            self._ring[self._next :] = scores[:first]
            self._ring[: n - first] = scores[first:]
        self._next = end % self.window
        self.seen_ += n
        self._sorted = None

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Percentile in [0, 100] of each score; NaN while not `ready`."""
        scores = np.asarray(scores, dtype=np.float64)
        if not self.ready:
            return np.full(len(scores), np.nan)
        if self._sorted is None:
            self._sorted = np.sort(self._ring[: min(self.seen_, self.window)])
        ref = self._sorted
        below = np.searchsorted(ref, scores, side="left")
        upto = np.searchsorted(ref, scores, side="right")
        return 100.0 * (below + upto) / (2.0 * len(ref))

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"ring": self._ring.copy()}, {
            "window": self.window,
            "min_samples": self.min_samples,
            "next": self._next,
            "seen": self.seen_,
        }

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> QuantileCalibrator:
        cal = cls(window=int(meta["window"]), min_samples=int(meta["min_samples"]))
        ring = np.asarray(arrays["ring"], dtype=np.float64)
        if ring.shape != (cal.window,):
            raise ValueError(f"calibration ring has shape {ring.shape}, expected ({cal.window},)")
        cal._ring[:] = ring
        cal._next = int(meta["next"])
        cal.seen_ = int(meta["seen"])
        return cal
