"""Streaming score calibration: raw score -> percentile in [0, 100] and a severity.

Raw scores mean different things per event kind and per model version (a surprisal in nats, a
negative log-likelihood, a deviation); thresholds on them do not transfer. The calibrator keeps
a fixed-size sample of recent raw scores and maps a score to its percentile among them, after
Merlion's calibrate-then-threshold post-rules. Per kind and model version, keep one
calibrator; the percentile and severity are then comparable. State is two arrays and a little
JSON, so it checkpoints like a detector.

Recent, not all history: once full, every new score takes a random slot (a biased reservoir,
Aggarwal 2006), so a score's chance to still be in the sample halves every ~0.7 x `size`
scores. A uniform sample of all history (Vitter's Algorithm R, used here before 2026-12-04)
kept the scores of the model's first hours, when everything was new and scored high, in the
tail forever: they set the 99th percentile long after the model had learned. On AIT santos
(bench/product.py) the DNS-exfiltration step then sat at the 96.9th percentile and never
alerted; with the recent sample it is at the 99.1th and alerts. The price of recency: a flood
of alike high scores (a scan) fills the sample and raises the threshold until it ages out,
blinding the threshold to lesser anomalies meanwhile. The service therefore feeds its
calibrators at most a few alerts of each alert episode (service/holdback.py, `flood_cap`);
this class calibrates on whatever it is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Percentile thresholds of each severity (at or above).
SEVERITIES: tuple[tuple[str, float], ...] = (
    ("critical", 99.9), ("high", 99.0), ("medium", 95.0), ("low", 0.0),
)  # fmt: skip
_NAMES = [name for name, _ in SEVERITIES]
_CUTS = np.array([cut for _, cut in SEVERITIES])


class QuantileCalibrator:
    """Percentile of a raw score among a sample of recent raw scores."""

    def __init__(self, size: int = 10_000, seed: int = 0) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = int(size)
        self.seed = int(seed)
        self.reservoir = np.zeros(0, dtype=np.float64)
        self.seen = 0
        self._sorted: np.ndarray | None = None

    def update(self, scores: np.ndarray) -> None:
        """Add raw scores: into free room first, then each into a random slot (the newest
        scores are the likeliest to be in the sample, the oldest the least)."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        scores = scores[np.isfinite(scores)]
        if len(scores) == 0:
            return
        room = self.size - len(self.reservoir)
        if room > 0:
            self.reservoir = np.concatenate([self.reservoir, scores[:room]])
            self.seen += min(room, len(scores))
            scores = scores[room:]
        if len(scores):
            rng = np.random.default_rng([self.seed, self.seen])
            slot = rng.integers(0, self.size, len(scores))
            self.reservoir[slot] = scores  # two drawing one slot: one of them stays
            self.seen += len(scores)
        self._sorted = None

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """Mid-rank percentile (in %) of each score among the reservoir: the share below it
        plus half the share tied with it, 50 before any data. Ties matter: discrete scores
        (counts) tie often, and counting ties as 'at or below' would put a pattern that fills
        5% of the traffic at the 100th percentile, i.e. alert on it forever."""
        scores = np.asarray(scores, dtype=np.float64)
        if len(self.reservoir) == 0:
            return np.full(scores.shape, 50.0)
        if self._sorted is None:
            self._sorted = np.sort(self.reservoir)
        below = np.searchsorted(self._sorted, scores, side="left")
        upto = np.searchsorted(self._sorted, scores, side="right")
        return 100.0 * (below + upto) / (2.0 * len(self._sorted))

    @staticmethod
    def severity(percentiles: np.ndarray) -> list[str]:
        """The severity of each percentile: the first of SEVERITIES whose cut it reaches (a
        NaN, never an alert's, is low). At once for a batch: an alert storm is thousands."""
        p = np.asarray(percentiles, dtype=np.float64).reshape(-1)
        short_of = (p[:, None] < _CUTS).sum(axis=1)  # the cuts descend: a prefix is missed
        short_of[np.isnan(p)] = len(_CUTS) - 1
        return [_NAMES[i] for i in short_of.tolist()]

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"reservoir": self.reservoir.copy()}, {
            "calibrator": "quantile", "size": self.size, "seed": self.seed, "seen": self.seen,
        }  # fmt: skip

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> QuantileCalibrator:
        if meta.get("calibrator") != "quantile":
            raise ValueError(f"not a quantile calibrator state: {meta.get('calibrator')!r}")
        cal = cls(meta["size"], meta["seed"])
        res = np.asarray(arrays["reservoir"], dtype=np.float64)
        if len(res) > cal.size:
            raise ValueError("reservoir larger than its size")
        cal.reservoir = res.copy()
        cal.seen = int(meta["seen"])
        return cal
