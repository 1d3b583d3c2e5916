"""Time context: how surprising a pattern's rate is now, against its own history.

For an event of pattern p (its entity tuple) at time t: x = events of p in (t - window, t],
lam = window * (earlier count + 0.5) / elapsed seconds before the window, and the surprise is
s = -log P(X >= x) for X ~ Poisson(lam). Causal and cheap; a burst of something ordinarily quiet
scores high, a steady stream scores ~0. The +0.5 keeps a never-seen pattern finite.

Both contexts keep state per pattern (entity tuple), so both are bounded: past
`max_patterns` the patterns quiet the longest (then the least seen) are forgotten down to 90%
of it; one that comes back scores as never seen, the most surprising it can.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

_SEP = "\x1f"


def poisson_surprise(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """-log P(X >= x), X ~ Poisson(lam); stable in the far tail (pmf bound)."""
    from scipy.special import gammainc, gammaln  # scipy only where time context is used

    x = np.asarray(x, np.float64)
    lam = np.maximum(np.asarray(lam, np.float64), 1e-12)
    sf = gammainc(x, lam)  # regularised lower incomplete gamma = P(X >= x) for x >= 1
    tail = x * np.log(lam) - lam - gammaln(x + 1.0)
    out = -np.where(sf > 1e-300, np.log(np.maximum(sf, 1e-300)), tail)
    return np.where(x <= 0, 0.0, out)


class RateContext:
    """Per-pattern counts with a sliding window; `observe` returns each event's surprise."""

    def __init__(self, window_s: float = 600.0, max_patterns: int = 200_000) -> None:
        self.window_s = float(window_s)
        self.max_patterns = int(max_patterns)
        self.start: float | None = None
        self.clock = -np.inf  # latest time observed
        self.total: dict[str, int] = {}
        self.recent: dict[str, deque[float]] = {}

    def observe(self, rows: Sequence[Sequence[str]], times: np.ndarray) -> np.ndarray:
        """Surprise of each event given all earlier ones, then remember them (in time order)."""
        n = len(rows)
        xs = np.zeros(n)
        lam = np.ones(n)
        if n == 0:
            return xs
        w = self.window_s
        for i in np.argsort(times, kind="stable").tolist():
            t = float(times[i])
            if self.start is None:
                self.start = t
            key = _SEP.join(rows[i])
            d = self.recent.get(key)
            if d is None:
                d = self.recent[key] = deque()
            while d and d[0] <= t - w:
                d.popleft()
            earlier = self.total.get(key, 0) - len(d)
            xs[i] = len(d) + 1
            lam[i] = w * (earlier + 0.5) / max(t - w - self.start, w)
            d.append(t)
            self.total[key] = self.total.get(key, 0) + 1
            self.clock = max(self.clock, t)
        if len(self.total) > self.max_patterns:
            self._forget(int(0.9 * self.max_patterns))
        return poisson_surprise(xs, lam)

    def _forget(self, keep: int) -> None:
        """Keep the `keep` patterns seen last (then most): the rest start over."""
        last = {k: (d[-1] if d else -np.inf) for k, d in self.recent.items()}
        order = sorted(self.total, key=lambda k: (last.get(k, -np.inf), self.total[k]))
        for k in order[: len(order) - keep]:
            del self.total[k]
            self.recent.pop(k, None)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        keys = list(self.total)
        recent = [list(self.recent.get(k, ())) for k in keys]
        arrays = {
            "ctx.total": np.array([self.total[k] for k in keys], np.int64),
            "ctx.recent_len": np.array([len(r) for r in recent], np.int64),
            "ctx.recent": np.array([t for r in recent for t in r], np.float64),
        }
        meta = {"window_s": self.window_s, "start": self.start, "keys": keys,
                "max_patterns": self.max_patterns}  # fmt: skip
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> RateContext:
        ctx = cls(meta["window_s"], meta.get("max_patterns", 200_000))
        ctx.start = meta["start"]
        keys = meta["keys"]
        lens = arrays["ctx.recent_len"].tolist()
        if len(keys) != len(lens) or len(arrays["ctx.total"]) != len(keys):
            raise ValueError("rate context arrays do not match its keys")
        flat = arrays["ctx.recent"].tolist()
        pos = 0
        for k, tot, ln in zip(keys, arrays["ctx.total"].tolist(), lens, strict=True):
            ctx.total[k] = int(tot)
            ctx.recent[k] = deque(flat[pos : pos + ln])
            pos += ln
        if flat:
            ctx.clock = max(flat)
        return ctx


class BurstContext:
    """How unusual a pattern's count in the current window is against its *own* past windows.

    For an event of pattern p in window w (windows of `window_s` seconds from the first event
    seen): x = events of p so far in w, and the surprise is
    s = -log((#past windows in which p reached >= x events + a) / (w + 1)), `a` = 0.5: an
    empirical tail probability of "this many in one window" over every window elapsed. Unlike
    the Poisson surprise above it does not assume a steady rate: a chronic, bursty stream (an
    firewall's IDS chatter) has had bursts this large before and scores ~0, while a rare
    pattern that fires in one window, or a known pattern bursting beyond anything in its past
    (a DNS scan inside a chronic DNS alert group), scores high; a never-seen pattern scores
    log(2(w + 1)), the most any pattern can. Causal: within a window the last event carries
    the window's full count, so the max over a group's events sees every burst. Our own
    design (an episode-count variant of the rate surprise in METHODS.md).

    State per pattern: its open window and count, and a histogram of its past window counts
    (count -> windows), so memory grows with the distinct burst sizes, not with time.
    """

    def __init__(
        self, window_s: float = 600.0, prior: float = 0.5, max_patterns: int = 200_000
    ) -> None:
        self.window_s = float(window_s)
        self.prior = float(prior)
        self.max_patterns = int(max_patterns)
        self.start: float | None = None
        self.clock = -np.inf
        self.open: dict[str, tuple[int, int]] = {}  # pattern -> (window, count so far)
        self.hist: dict[str, dict[int, int]] = {}  # pattern -> {window count: windows}

    def observe(
        self, rows: Sequence[Sequence[str]], times: np.ndarray, update: bool = True
    ) -> np.ndarray:
        """Surprise of each event given every earlier one (time order), remembering the events
        when `update` (with `update=False` the state is left exactly as it was: a what-if)."""
        n = len(rows)
        out = np.zeros(n)
        if n == 0:
            return out
        start = self.start if self.start is not None else float(np.min(times))
        opened: dict[str, tuple[int, int]] = {}  # this call's view; written back if update
        hists: dict[str, dict[int, int]] = {}
        clock = self.clock
        for i in np.argsort(times, kind="stable").tolist():
            t = float(times[i])
            w = max(int((t - start) // self.window_s), 0)
            key = _SEP.join(rows[i])
            if key not in opened:
                if key in self.open:
                    opened[key] = self.open[key]
                hists[key] = dict(self.hist.get(key, {}))
            cur = opened.get(key)
            h = hists[key]
            if cur is None or cur[0] != w:
                if cur is not None:
                    h[cur[1]] = h.get(cur[1], 0) + 1
                cur = (w, 0)
            x = cur[1] + 1
            opened[key] = (w, x)
            ge = sum(c for k, c in h.items() if k >= x)
            out[i] = -np.log((ge + self.prior) / (w + 1.0))
            clock = max(clock, t)
        if update:
            self.start = start
            self.clock = clock
            self.open.update(opened)
            self.hist.update({k: h for k, h in hists.items() if h})
            if len(self.open) > self.max_patterns:
                self._forget(int(0.9 * self.max_patterns))
        return np.maximum(out, 0.0)

    def _forget(self, keep: int) -> None:
        """Keep the `keep` patterns whose window is the latest (then the most windows seen):
        the rest start over."""

        def recency(k: str) -> tuple[int, int]:
            return self.open[k][0], sum(self.hist.get(k, {}).values())

        order = sorted(self.open, key=recency)
        for k in order[: len(order) - keep]:
            del self.open[k]
            self.hist.pop(k, None)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        keys = sorted(set(self.open) | set(self.hist))
        hists = [sorted(self.hist.get(k, {}).items()) for k in keys]
        arrays = {
            "burst.open": np.array([self.open.get(k, (-1, 0)) for k in keys], np.int64).reshape(
                len(keys), 2
            ),
            "burst.hist_len": np.array([len(h) for h in hists], np.int64),
            "burst.hist": np.array([kv for h in hists for kv in h], np.int64).reshape(-1, 2),
        }
        meta = {"window_s": self.window_s, "prior": self.prior, "start": self.start,
                "clock": None if not np.isfinite(self.clock) else self.clock,
                "keys": keys, "max_patterns": self.max_patterns}  # fmt: skip
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> BurstContext:
        ctx = cls(meta["window_s"], meta.get("prior", 0.5), meta.get("max_patterns", 200_000))
        ctx.start = meta["start"]
        ctx.clock = -np.inf if meta.get("clock") is None else float(meta["clock"])
        keys = meta["keys"]
        opened = arrays["burst.open"].reshape(-1, 2).tolist()
        lens = arrays["burst.hist_len"].tolist()
        if len(opened) != len(keys) or len(lens) != len(keys):
            raise ValueError("burst context arrays do not match its keys")
        flat = arrays["burst.hist"].reshape(-1, 2).tolist()
        if sum(lens) != len(flat):
            raise ValueError("burst context histogram does not match its lengths")
        pos = 0
        for k, (w, c), ln in zip(keys, opened, lens, strict=True):
            if w >= 0:
                ctx.open[k] = (int(w), int(c))
            if ln:
                ctx.hist[k] = {int(a): int(b) for a, b in flat[pos : pos + ln]}
            pos += ln
        return ctx
