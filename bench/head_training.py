"""What a verdict costs the scoring thread when a kind runs the DevNet head (`devnet`).

A verdict retrains the head (~1 s of CPU). The service trains it in a worker thread and keeps
scoring with the previous head (service/analyst_loop.py, `background=True`); before
2026-12-05 the training ran between two batches, on the scoring thread. This bench measures
both on the same model, on AIT captures, with the service's own classes (no Kafka):

    python -m bench.head_training --json [--data ../shared/datasets] [--events 10000]

Per capture (every `ait-ads/*_alerts.csv*` under `--data`): a `devnet` scorer learns its first
`--events` events in batches of 2,000 and its alerts fill a group book; an analyst then gives
the top 5 groups their verdicts from the ground truth (malicious when a group has an attack
step). From that same model (a copy for each way), the loop applies the verdicts and the
scorer goes on with the next batches of the capture until the trained head is installed:
  verdict_pass_ms           the loop's pass over the verdicts, on the scoring thread
  batches_until_installed   batches scored (with the previous head) while the head trained
  seconds_until_installed   from the verdicts to the trained head scoring
  batch_ms_before           median batch (score + the loop's pass) before the verdicts
  batch_ms_max_training     the slowest batch while the head trained (it shares the CPU)
torch's CPU threads are set as the service sets them (`--torch-threads`, default: one fewer
than the cores, at least 1); the JSON says how many.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.ait import find_scenarios
from bench.product import FIELDS, ListIntake, Record
from schemas import ModelRef
from service.analyst_loop import AnalystLoop
from service.decode import Decoder
from service.groups import GroupBook
from service.metrics import Metrics
from service.outputs import build_alerts
from service.replay import encode_record, read_records
from service.scoring import Scorer, tune_torch
from service.sources import SourceConfig

BATCH = 2000
VERDICTS = 5
AFTER_BATCHES = 100  # at most this many batches after the verdicts (the capture may end first)


def _warm(path: Path, events: int) -> tuple[Scorer, GroupBook, list, list[list]]:
    """A devnet scorer that learned the capture's first `events`, its group book, the ground
    truth rows and the batches of records that follow."""
    rows = sorted(read_records(path), key=lambda r: float(r["time"]))
    records = [
        Record("events", 0, i, int(float(r["time"]) * 1000), encode_record(r))
        for i, r in enumerate(rows)
    ]
    config = SourceConfig.load()
    decoder = Decoder(config, 1 << 18)
    scorer = Scorer(config, detector="devnet")
    book = GroupBook()
    model = ModelRef(name="devnet", version="bench")
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    warm = max(1, events // BATCH)
    for batch in batches[:warm]:
        events_, _ = decoder.decode_many(batch)
        for part in scorer.score(events_):
            for alert in build_alerts(part, model):
                book.add(alert)
    after = [decoder.decode_many(b)[0] for b in batches[warm : warm + AFTER_BATCHES]]
    return scorer, book, rows, after


def _measure(
    scorer: Scorer, book: GroupBook, rows: list, after: list, background: bool
) -> dict[str, Any]:
    intake = ListIntake()
    loop = AnalystLoop(intake, scorer, book, Metrics(), background=background)  # type: ignore[arg-type]
    steps = {tuple(r[f] for f in FIELDS): r["event_label"] != "-" for r in rows}
    before = []
    for events in after[:3]:  # the scoring thread's usual batch, before any verdict
        t = time.perf_counter()
        scorer.score(events)
        loop.apply()
        before.append(time.perf_counter() - t)
    for g in [g for g in book.ranked() if not g.verdict][:VERDICTS]:
        attack = steps.get(tuple(g.entities.get(f, "") for f in FIELDS), False)
        intake.give(g.group_id, "true_positive" if attack else "benign_positive", 2e9)
    start = time.perf_counter()
    loop.apply()
    verdict_pass = time.perf_counter() - start
    during, installed_at = [], None
    for events in after[3:]:
        if not loop.jobs:
            installed_at = time.perf_counter()
            break
        t = time.perf_counter()
        scorer.score(events)
        loop.apply()
        during.append(time.perf_counter() - t)
    if loop.jobs:  # the capture ended first: wait for it
        loop.finish_heads()
        installed_at = time.perf_counter()
    det = scorer.detectors["ids_alert"]
    return {
        "verdict_pass_ms": round(verdict_pass * 1000, 1),
        "batches_until_installed": len(during),
        "seconds_until_installed": round((installed_at or start) - start, 2),
        "batch_ms_before": round(statistics.median(before) * 1000, 1),
        "batch_ms_max_training": round(max(during) * 1000, 1) if during else None,
        "head_trained": bool(det.trained_),  # type: ignore[attr-defined]
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--events", type=int, default=10_000, help="events learned before verdicts")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch's CPU threads, as the service's --torch-threads (0 = its "
                    "default: one fewer than the cores, at least 1)")  # fmt: skip
    args = ap.parse_args(argv)
    threads = tune_torch(args.torch_threads)
    files = find_scenarios(args.data)
    if not files:
        print(f"no AIT captures under {args.data / 'ait-ads'}", file=sys.stderr)
        return 2
    results = []
    for f in files:
        scorer, book, rows, after = _warm(f, args.events)
        res: dict[str, Any] = {"scenario": f.name.split("_")[0]}
        for way, background in (("scoring_thread", False), ("worker_thread", True)):
            res[way] = _measure(copy.deepcopy(scorer), copy.deepcopy(book), rows, after,
                                background)  # fmt: skip
        results.append(res)
        if not args.json:
            print(res["scenario"], json.dumps({k: v for k, v in res.items() if k != "scenario"}))
    if args.json:
        print(json.dumps({"bench": "head_training", "events": args.events,
                          "torch_threads": threads, "scenarios": results}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
