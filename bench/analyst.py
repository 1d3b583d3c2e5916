"""The analyst loop on real labeled alerts: how fast verdicts lead an analyst to every attack step.

    python -m bench.analyst --dataset ait-ads --json [--data DIR] [--config ait-local|...]

Per AIT scenario, protocol v2 (../shared/datasets/README.md, bench/ait.py): fit on the warm-up,
then rounds: the analyst reads the top `--per-round` (5) unread groups of the model's ranking
and labels each from the ground truth (malicious when any of its alerts has an attack-step
`event_label`), the model learns the verdicts (`FeedbackDetector.learn_labels`), and the unread
groups are re-scored and re-ranked. Printed per scenario, all from this run: groups read until
every attack step was seen ("all") and all but one ("all_minus_1") with feedback, with the same
detector and ranking but no feedback, and with the per-field frequency baseline (AVF) ranked by
group score. With each loop, `best_after_first_page`: the fewest groups any ranking could
need for "all" / "all_minus_1" once the loop's first page (read before any verdict) is read,
every later pick perfect (exact set cover): how much of a miss verdicts could still win back.

A verdict is passed to the model as up to `--alerts-per-verdict` alerts of the group (evenly
spaced in time, first and last included): the group's pattern and when it fired.

`--config ait-streams` (default): `ait-local` plus the stream context in the base detector
(detectors/streams.py: alerts on a host just after one of its steady streams stopped, and
episodes missing their usual mirror host, rank higher); `--config ait-local`: burst context +
burst-aware ranking in which groups firing within seconds of a read group on its host count
as read, a malicious verdict lifting its host's alerts around the time it was confirmed, a
benign verdict sinking its host's alerts of the same rule family; `--config ait-burst`: the
same base, verdicts lifting the entity fields at any time; `--config ait`: the earliest
configuration (bench/README.md, Analyst loop).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import ait
from detectors.base import EventBatch
from detectors.feedback import FeedbackDetector
from detectors.frequency import FrequencyDetector
from detectors.ranking import rank_groups

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets"

#: The earlier configuration (AIT's alert code is `short`; its family = W-Acc, A-Aud...).
AIT_CONFIG: dict[str, Any] = {"family_types": ("short",), "rank_types": ("short", "host")}
#: Burst context in the base detector + burst-aware ranking (names no field; bench/README.md).
BURST_CONFIG: dict[str, Any] = {"base_config": {"burst_weight": 0.25}, "chronic_weight": 0.1,
                                "mmr_burst": 0.2}  # fmt: skip
#: Verdicts generalise over the entity fields only, and only upwards (detectors/feedback.py).
ENTITY_LIFT: dict[str, Any] = {"lift_types": ("ip", "host"), "sink_types": (), "lift_weight": 1.0}
#: Groups firing within 5 s of a read group on its host are that action seen by another rule.
COFIRE = ait.COFIRE
#: Verdicts generalise locally: a malicious one lifts its host's alerts around its time (10-min
#: scale; a group by the share of its alerts there), a benign one sinks its host's alerts of
#: the same rule family / rule (conjunctions only).
LOCAL: dict[str, Any] = {
    "lift_types": (), "time_weight": 3.0, "time_scale_s": 600.0, "time_same": "host",
    "time_by_group": True,
    "sink_types": ("short", "host"), "sink_min_types": 2, "pattern_weight": 1.0,
}  # fmt: skip
#: The burst configuration with the stream context (bench/ait.py `STREAMS`: silenced and
#: unmirrored (code, host) streams, detectors/streams.py) added to its base detector.
STREAMS_BURST: dict[str, Any] = {
    **BURST_CONFIG,
    "base_config": {**BURST_CONFIG["base_config"], **ait.STREAMS},
}
CONFIGS: dict[str, dict[str, Any]] = {
    # measured best, the default since 2026-12-05
    "ait-streams": {**AIT_CONFIG, **STREAMS_BURST, **COFIRE, **LOCAL},
    "ait-local": {**AIT_CONFIG, **BURST_CONFIG, **COFIRE, **LOCAL},
    "ait-burst": {**AIT_CONFIG, **BURST_CONFIG, **ENTITY_LIFT},
    "ait": AIT_CONFIG,
}
DEFAULT_CONFIG = "ait-streams"


def _steps_seen(read: list[int], group_steps: list[set[str]]) -> tuple[int, int]:
    seen: set[str] = set()
    ranks: list[int] = []
    for rank, g in enumerate(read, start=1):
        new = group_steps[g] - seen
        ranks += [rank] * len(new)
        seen |= new
    if not ranks:
        return 0, 0
    return ranks[-1], ranks[-2] if len(ranks) > 1 else ranks[-1]


def fewest_after(first: list[int], group_steps: list[set[str]], missing: int = 0) -> int:
    """Groups read, at the fewest, until all attack steps but `missing` are seen, when `first`
    were read first and every later pick were perfect (exact set cover, breadth first over
    step masks): what no verdict-driven ranking can beat once the verdict-free first page
    is read."""
    names = sorted(set().union(*group_steps))
    bit = {s: 1 << i for i, s in enumerate(names)}
    mask_of = [sum(bit[s] for s in steps) for steps in group_steps]
    need = max(len(names) - missing, 0)
    state = 0
    for g in first:
        state |= mask_of[g]
    shown = set(first)
    masks = {m for g, m in enumerate(mask_of) if m and g not in shown}
    frontier, known, depth = {state}, {state}, 0
    while frontier and max(s.bit_count() for s in frontier) < need:
        depth += 1
        frontier = {s | m for s in frontier for m in masks} - known
        known |= frontier
    return len(first) + depth


def _verdict_batch(split: ait.Split, members: np.ndarray, cap: int) -> EventBatch:
    if len(members) > cap:
        members = members[np.unique(np.linspace(0, len(members) - 1, cap).round().astype(int))]
    test = split.test
    return EventBatch(test.entity_types, [test.rows[i] for i in members], test.times[members])


def simulate(
    split: ait.Split,
    feedback: bool = True,
    per_round: int = 5,
    alerts_per_verdict: int = 64,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One scenario's loop; stops when every attack step has been seen."""
    config = CONFIGS[DEFAULT_CONFIG] if config is None else config
    det = FeedbackDetector(ait.ENTITY_TYPES, **config)
    det.learn_many(split.warmup)
    det.observe_patterns(split.test.rows)  # the service sees every pattern it scores
    test = split.test
    base = det.base.score_many(test)  # once: a base with time context advances as it scores
    ranked = det.rank(test, base_scores=base)
    group_of = ranked.group_of
    members = [np.flatnonzero(group_of == g) for g in range(len(ranked.keys))]
    group_steps: list[set[str]] = [set() for _ in ranked.keys]
    for g, s in zip(group_of.tolist(), split.steps, strict=True):
        if s != "-":
            group_steps[g].add(s)
    all_steps = set().union(*group_steps)
    read: list[int] = []
    seen: set[str] = set()
    rounds = 0
    while len(read) < len(ranked.keys) and seen != all_steps:
        pick = ranked.order[:per_round].tolist()
        read += pick
        for g in pick:
            seen |= group_steps[g]
        rounds += 1
        if feedback:
            rows, times, labels = [], [], []
            for g in pick:
                vb = _verdict_batch(split, members[g], alerts_per_verdict)
                rows += list(vb.rows)
                times.append(vb.times)
                labels += [1 if group_steps[g] else 0] * len(vb)
            det.learn_labels(EventBatch(test.entity_types, rows, np.concatenate(times)),
                             np.array(labels))  # fmt: skip
        ranked = det.rank(test, shown=read, base_scores=base)
    all_, all_1 = _steps_seen(read, group_steps)
    first = read[:per_round]  # the page read before any verdict
    best = {"all": fewest_after(first, group_steps),
            "all_minus_1": fewest_after(first, group_steps, missing=1)}  # fmt: skip
    return {"all": all_, "all_minus_1": all_1, "rounds": rounds,
            "malicious_read": sum(1 for g in read[:all_] if group_steps[g]),
            "best_after_first_page": best}  # fmt: skip


def avf(split: ait.Split) -> dict[str, Any]:
    det = FrequencyDetector(ait.ENTITY_TYPES)
    det.learn_many(split.warmup)
    ranked = rank_groups(split.test.rows, split.test.times, det.score_many(split.test), lam=0.0)
    seen = ait.groups_to_see(ranked.order.tolist(), ranked.group_of, split.steps)
    return {"all": seen[-1], "all_minus_1": seen[-2] if len(seen) > 1 else seen[-1]}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return list(v) if isinstance(v, tuple) else v


def run_ait(
    data: Path, per_round: int = 5, alerts_per_verdict: int = 64, config: str = DEFAULT_CONFIG
) -> dict[str, Any]:
    cfg = CONFIGS[config]
    out: dict[str, Any] = {
        "protocol": "AIT v2 (datasets/README.md); analyst reads the top "
        f"{per_round} unread groups per round, verdict = any alert with an attack step",
        "config_name": config,
        "config": _jsonable(cfg),
        "scenarios": {},
    }
    for path in ait.find_scenarios(data):
        split = ait.load_split(path)
        groups = ait.group_ids(split.test.rows)
        res: dict[str, Any] = {
            "groups": int(groups.max() + 1),
            "fewest_possible": ait.min_groups_to_cover(groups, split.steps),
        }
        for name, fb in (("feedback", True), ("no_feedback", False)):
            t0 = time.perf_counter()
            res[name] = simulate(split, fb, per_round, alerts_per_verdict, cfg)
            res[name]["seconds"] = round(time.perf_counter() - t0, 2)
        res["avf"] = avf(split)
        out["scenarios"][split.scenario] = res
    return out


def _table(result: dict[str, Any]) -> str:
    lines = [result["protocol"], f"{'scenario':<18}{'feedback':>12}{'no feedback':>14}{'AVF':>10}"]
    for scen, r in result["scenarios"].items():
        cells = [f"{r[m]['all']}/{r[m]['all_minus_1']}" for m in ("feedback", "no_feedback", "avf")]
        lines.append(f"{scen:<18}{cells[0]:>12}{cells[1]:>14}{cells[2]:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["ait-ads"], default="ait-ads")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--json", action="store_true")
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--alerts-per-verdict", type=int, default=64)
    p.add_argument(
        "--config", choices=sorted(CONFIGS), default=DEFAULT_CONFIG,
        help="feedback/ranking configuration (bench/README.md, Analyst loop)",
    )  # fmt: skip
    args = p.parse_args(argv)
    result = {
        "dataset": args.dataset,
        **run_ait(args.data, args.per_round, args.alerts_per_verdict, args.config),
    }
    if not result["scenarios"]:
        print(f"no data for {args.dataset} under {args.data}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
