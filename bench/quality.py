"""Detection quality on real labeled data: Outrider's detector against published peers.

    python -m bench.quality --dataset ait-ads --json [--data DIR]
    python -m bench.quality --dataset stratosphere-zeek

AIT follows protocol v2 (../shared/datasets/README.md, bench/ait.py). Zeek protocol (ours): per
capture, sort by ts, keep every benign/background flow and a seeded random 5% (of the benign
count) of the malicious ones, fit on the first 40% of the stream by time, score the rest;
label = Malicious; group = identical entity tuple. `--zeek-fields service` scores the packaged
`network_conn` kind's six fields (no `history`), as the service does.

`outrider+ape-stream` is `outrider+ape` learning as the service runs it: in 2,000-event calls,
APE streamed at the service's default budget (`--ape-train-steps-per-event`, 0.001).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bench import ait, scoring
from detectors.ape import APEDetector
from detectors.base import Detector, EventBatch
from detectors.frequency import FrequencyDetector
from detectors.outrider import OutriderDetector
from detectors.peers import HalfSpaceTreesOneHot, IsolationForestOneHot, ZeroPlusPlus
from detectors.ranking import rank_groups
from service.scoring import DETECTOR_FACTORIES, ModelLimits

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets"
ZEEK_TYPES = ("id.orig_h", "id.resp_h", "id.resp_p", "proto", "service", "conn_state", "history")
#: the packaged `network_conn` kind's fields (service/config/10-core.toml)
ZEEK_SERVICE_TYPES = ZEEK_TYPES[:6]
#: events per learn call in the `-stream` columns, as the service's batches (bench/scoring.py)
SERVICE_BATCH = scoring.SERVICE_BATCH

# name -> (factory, MMR lambda used for the group ranking; 0 = by group score only)
Method = tuple[Callable[[tuple[str, ...]], Detector], float]


#: Burst context + burst-aware ranking (bench/README.md); names no field, so it runs on Zeek too.
BURST: dict[str, float] = {"burst_weight": 0.25, "chronic_weight": 0.1, "mmr_burst": 0.2}
#: AIT's ranking configuration: MMR compares (alert code, host, code family), lambda 2.
AIT_RANK: dict[str, Any] = {"mmr_lambda": 2.0, "mmr_types": ("short", "host"),
                            "family_types": ("short",)}  # fmt: skip
COFIRE, STREAMS = ait.COFIRE, ait.STREAMS  # AIT's co-firing and stream context settings


def methods(dataset: str = "ait-ads") -> dict[str, Method]:
    rank = AIT_RANK if dataset == "ait-ads" else {}
    out: dict[str, Method] = {
        "outrider": (lambda t: OutriderDetector(t), OutriderDetector(("a", "b")).mmr_lambda),
        "outrider-no-mmr": (lambda t: OutriderDetector(t), 0.0),
        # AIT only: MMR compares (alert code, host, code family), lambda 2 (bench/README.md)
        "outrider-code-host": (
            lambda t: OutriderDetector(
                t, mmr_lambda=2.0, mmr_types=("short", "host"), family_types=("short",)
            ),
            -1.0,
        ),
        # burst context + burst-aware ranking on top (AIT: with AIT's ranking configuration)
        "outrider-burst": (lambda t: OutriderDetector(t, **BURST, **rank), -1.0),
        # AIT only: + groups firing within 5 s of a shown group on its host count as shown
        "outrider-cofire": (lambda t: OutriderDetector(t, **BURST, **rank, **COFIRE), -1.0),
        # AIT only: + the stream context (silenced and unmirrored streams) on (code, host)
        "outrider-streams": (
            lambda t: OutriderDetector(t, **BURST, **rank, **COFIRE, **STREAMS),
            -1.0,
        ),
        "outrider+ape": (lambda t: OutriderDetector(t, ape_weight=0.25), 1.0),
        # the service's own `outrider+ape` detector, with its default limits and APE budget
        "outrider+ape-stream": (
            lambda t: learning_in_batches(DETECTOR_FACTORIES["outrider+ape"](t, ModelLimits())),
            1.0,
        ),
        "ape": (lambda t: APEDetector(t), 0.0),
        "avf": (lambda t: FrequencyDetector(t), 0.0),
        "zero++": (lambda t: ZeroPlusPlus(t), 0.0),
        "iforest": (lambda t: IsolationForestOneHot(t), 0.0),
        "hst": (lambda t: HalfSpaceTreesOneHot(t), 0.0),
    }
    return out


def learning_in_batches(det: Detector, size: int = SERVICE_BATCH) -> Detector:
    """`det`, its `learn_many` split into calls of `size` events, as the service feeds it."""
    whole = det.learn_many

    def learn_many(batch: EventBatch) -> None:
        for s in range(0, len(batch), size):
            whole(EventBatch(batch.entity_types, batch.rows[s : s + size],
                             batch.times[s : s + size]))  # fmt: skip

    det.learn_many = learn_many  # type: ignore[method-assign]
    return det


#: configurations that name AIT's fields
AIT_ONLY = {"outrider-code-host", "outrider-cofire", "outrider-streams"}


def _auc_ap(labels: np.ndarray, scores: np.ndarray) -> tuple[float | None, float | None]:
    if labels.all() or not labels.any():
        return None, None
    return float(roc_auc_score(labels, scores)), float(average_precision_score(labels, scores))


def run_ait(data: Path, only: set[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": "AIT v2 (datasets/README.md)", "scenarios": {}}
    for path in ait.find_scenarios(data):
        split = ait.load_split(path)
        groups = ait.group_ids(split.test.rows)
        res: dict[str, Any] = {
            "warmup_alerts": len(split.warmup),
            "test_alerts": len(split.test),
            "groups": int(groups.max() + 1),
            "steps": sorted({s for s in split.steps if s != "-"}),
            "fewest_possible": ait.min_groups_to_cover(groups, split.steps),
            "methods": {},
        }
        for name, (factory, lam) in methods("ait-ads").items():
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            det = factory(ait.ENTITY_TYPES)
            det.learn_many(split.warmup)
            scores = det.score_many(split.test)
            secs = time.perf_counter() - t0
            if lam < 0:  # the detector's own ranking
                ranked = det.rank(split.test, scores)
            else:
                ranked = rank_groups(split.test.rows, split.test.times, scores, lam=lam)
            # rank_groups numbers groups exactly as ait.group_ids does (first-seen order)
            seen = ait.groups_to_see(ranked.order.tolist(), ranked.group_of, split.steps)
            auc, ap = _auc_ap(split.labels, scores)
            res["methods"][name] = {
                "all": seen[-1], "all_minus_1": seen[-2] if len(seen) > 1 else seen[-1],
                "auc_roc": auc, "avg_precision": ap, "seconds": round(secs, 2),
            }  # fmt: skip
        out["scenarios"][split.scenario] = res
    return out


def load_zeek(path: Path) -> tuple[EventBatch, np.ndarray]:
    """(events in time order, malicious label) from a labeled Zeek conn.log (TSV)."""
    fields: list[str] = []
    rows, times, labels = [], [], []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith("#fields"):
                fields = line.rstrip("\n").split("\t")[1:]
                continue
            if line.startswith("#") or not fields:
                continue
            rec = dict(zip(fields, line.rstrip("\n").split("\t"), strict=False))
            rows.append(tuple(rec.get(t, "") for t in ZEEK_TYPES))
            times.append(float(rec["ts"]))
            labels.append(rec.get("label", "") == "Malicious")
    order = np.argsort(np.array(times), kind="stable")
    batch = EventBatch(ZEEK_TYPES, [rows[i] for i in order], np.array(times)[order])
    return batch, np.array(labels)[order]


def _fields(batch: EventBatch, idx: np.ndarray, types: tuple[str, ...]) -> EventBatch:
    """Events `idx` of a Zeek batch with only the fields `types`."""
    cols = [batch.entity_types.index(t) for t in types]
    return EventBatch(types, [tuple(batch.rows[i][c] for c in cols) for i in idx], batch.times[idx])


def run_zeek(
    data: Path, only: set[str] | None = None, types: tuple[str, ...] = ZEEK_TYPES
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "protocol": "per capture: sort by ts; all non-malicious flows + seeded 5% (of their "
        "count) malicious; fit on first 40% by time, score the rest; label = Malicious; "
        f"group = identical ({', '.join(types)})",
        "scenarios": {},
    }
    for path in sorted((data / "stratosphere-zeek").glob("*/*.gz")):
        batch, labels = load_zeek(path)
        rng = np.random.default_rng(0)
        mal = np.flatnonzero(labels)
        keep_mal = rng.choice(mal, size=min(len(mal), max(1, int(0.05 * (~labels).sum()))),
                              replace=False)  # fmt: skip
        keep = np.sort(np.concatenate([np.flatnonzero(~labels), keep_mal]))
        cut = int(0.4 * len(keep))
        fit_idx, test_idx = keep[:cut], keep[cut:]

        fit, test = _fields(batch, fit_idx, types), _fields(batch, test_idx, types)
        y = labels[test_idx]
        res: dict[str, Any] = {"fit": len(fit), "test": len(test), "malicious": int(y.sum()),
                               "methods": {}}  # fmt: skip
        for name, (factory, lam) in methods("stratosphere-zeek").items():
            if (only and name not in only) or name in AIT_ONLY:
                continue
            t0 = time.perf_counter()
            det = factory(types)
            det.learn_many(fit)
            scores = det.score_many(test)
            secs = time.perf_counter() - t0
            if lam < 0:  # the detector's own ranking
                ranked = det.rank(test, scores)
            else:
                ranked = rank_groups(test.rows, test.times, scores, lam=lam)
            gmal = np.zeros(len(ranked.keys), bool)
            gmal[ranked.group_of[y]] = True
            read = gmal[ranked.order]
            auc, ap = _auc_ap(y, scores)
            res["methods"][name] = {
                "groups_to_first_malicious": int(np.argmax(read)) + 1 if read.any() else None,
                "malicious_in_top10_groups": int(read[:10].sum()),
                "auc_roc": auc, "avg_precision": ap, "seconds": round(secs, 2),
            }  # fmt: skip
        out["scenarios"][path.parent.name] = res
    return out


def _table(result: dict[str, Any]) -> str:
    lines = [result["protocol"]]
    for scen, res in result["scenarios"].items():
        extra = {k: v for k, v in res.items() if k not in ("methods", "steps")}
        lines.append(f"\n{scen}  {extra}")
        cols: list[str] = []
        for name, m in res["methods"].items():
            cols = cols or list(m)
            vals = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in m.values()]
            lines.append(f"  {name:<16}" + "".join(f"{v:>22}" for v in vals))
        lines.insert(len(lines) - len(res["methods"]),
                     "  " + " " * 16 + "".join(f"{c:>22}" for c in cols))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["ait-ads", "stratosphere-zeek"], default="ait-ads")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--json", action="store_true")
    p.add_argument("--methods", default="", help="comma-separated subset")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--zeek-fields", choices=["bench", "service"], default="bench",
                   help="Zeek: the bench's 7 fields, or the service's network_conn 6")  # fmt: skip
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    only = set(args.methods.split(",")) if args.methods else None
    if args.dataset == "ait-ads":
        result = {"dataset": args.dataset, **run_ait(args.data, only)}
    else:
        types = ZEEK_SERVICE_TYPES if args.zeek_fields == "service" else ZEEK_TYPES
        result = {"dataset": args.dataset, **run_zeek(args.data, only, types)}
    if not result["scenarios"]:
        print(f"no data for {args.dataset} under {args.data}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
