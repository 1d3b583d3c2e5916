"""AIT Alert Data Set, protocol v2 (see ../shared/datasets/README.md): loading and metrics.

Landauer, Skopik, Wurzenberger, "Introducing a New Alert Data Set for Multi-Step Attack
Analysis", CSET 2024. Sort by time; warm-up = alerts before the first alert whose time_label is
not false_positive; label = event_label != '-'; a group = identical (name, short, ip, host);
the analyst reads groups in ranked order.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import EventBatch

ENTITY_TYPES = ("name", "short", "ip", "host")
#: Co-firing groups (within 5 s, same host) are one action seen by several rules (AIT: host);
#: bench.quality's ranking and bench.analyst's loop use the same settings.
COFIRE: dict[str, Any] = {"cofire_sim": 1.5, "cofire_s": 5.0, "cofire_types": ("host",)}
#: Stream context over (alert code, host) streams (detectors/streams.py): alerts on a host just
#: after one of its steady streams stopped, and episodes missing their usual mirror host, rank
#: higher.
STREAMS: dict[str, Any] = {"stream_types": ("short", "host"), "silence_weight": 4.0,
                           "mirror_weight": 3.0}  # fmt: skip


@dataclass(frozen=True)
class Split:
    """One scenario split per protocol v2."""

    scenario: str
    warmup: EventBatch
    test: EventBatch
    steps: list[str]  # event_label per test alert ('-' = not caused by the attack)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s != "-" for s in self.steps], dtype=bool)


def _open(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="")


def load_split(path: Path) -> Split:
    """Read one `<scenario>_alerts.csv[.gz]` and split it per protocol v2."""
    with _open(path) as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: float(r["time"]))  # stable: ties keep file order
    first = next((i for i, r in enumerate(rows) if r["time_label"] != "false_positive"), len(rows))

    def batch(part: Sequence[dict[str, str]]) -> EventBatch:
        return EventBatch(
            ENTITY_TYPES,
            [tuple(r[t] for t in ENTITY_TYPES) for r in part],
            np.array([float(r["time"]) for r in part], dtype=np.float64),
        )

    scenario = path.name.split("_alerts")[0]
    test = rows[first:]
    return Split(scenario, batch(rows[:first]), batch(test), [r["event_label"] for r in test])


def find_scenarios(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "ait-ads").glob("*_alerts.csv*"))


def group_ids(rows: Sequence[Sequence[str]]) -> np.ndarray:
    """Protocol-v2 group of each alert: identical entity tuple (first-seen order)."""
    index: dict[tuple[str, ...], int] = {}
    return np.array([index.setdefault(tuple(r), len(index)) for r in rows], dtype=np.int64)


def min_groups_to_cover(groups: np.ndarray, steps: Sequence[str]) -> int:
    """Fewest groups that together show every attack step (exact set cover over step masks)."""
    names = sorted({s for s in steps if s != "-"})
    bit = {s: 1 << i for i, s in enumerate(names)}
    masks: dict[int, int] = {}
    for g, s in zip(groups.tolist(), steps, strict=True):
        if s != "-":
            masks[g] = masks.get(g, 0) | bit[s]
    full = (1 << len(names)) - 1
    best = {0: 0}
    frontier = {0}
    depth = 0
    while full not in best and frontier:
        depth += 1
        nxt = set()
        for state in frontier:
            for m in set(masks.values()):
                s2 = state | m
                if s2 not in best:
                    best[s2] = depth
                    nxt.add(s2)
        frontier = nxt
    return best.get(full, 0)


def groups_to_see(order: Sequence[int], groups: np.ndarray, steps: Sequence[str]) -> list[int]:
    """For a ranked list of group ids: groups read until k steps are seen, k = 1..n_steps."""
    by_group: dict[int, set[str]] = {}
    for g, s in zip(groups.tolist(), steps, strict=True):
        if s != "-":
            by_group.setdefault(g, set()).add(s)
    seen: set[str] = set()
    out: list[int] = []
    for rank, g in enumerate(order, start=1):
        new = by_group.get(g, set()) - seen
        for _ in new:
            out.append(rank)
        seen |= new
    return out
