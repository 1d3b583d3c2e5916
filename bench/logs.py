"""Log parsing and detection on loghub's labeled samples (Zhu et al., "Loghub", ISSRE 2023).

    python -m bench.logs --json [--data DIR]      (default DIR: ../shared/datasets)

Parsing: the grouping accuracy of Outrider's mined templates (service/logmining.py, drain3's
Drain, He et al. ICWS 2017) against every `*.log_structured.csv.gz` reference parse found: a line
counts as parsed right when the set of lines in its mined group equals the set of lines in its
reference group (EventId), the loghub benchmark's definition.

Detection (unsupervised, fitted on the whole sample and scored on it: the 2k samples are not
contiguous streams): AUC-ROC and average precision
- per line where the line carries its label (BGL: first token != '-');
- per session where `<name>.block_labels.csv.gz` exists (HDFS: a block is anomalous), sessions
  built by service/sessions.py from the block ids in each line, a block's score the max over
  its sessions (or lines).
Outrider's approach (the default detector over the log_line kind's entities, and over every
entity the miner emits; the session scorer for blocks) is measured next to a per-template
frequency baseline (and the same baseline on loghub's reference templates) in the same run.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from detectors.base import EventBatch
from detectors.frequency import FrequencyDetector
from detectors.outrider import OutriderDetector
from service.logmining import LogMiner, LogParseError
from service.sessions import SessionAggregator, SessionRecord, SessionScorer, SessionSpec
from service.sources import SourceConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets"
KIND_TYPES = SourceConfig.load().kinds["log_line"].entities
ALL_TYPES = ("template", "host", "program", "level", "slot_0", "slot_1", "slot_2", "slot_3")


def _read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def grouping_accuracy(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Share of lines whose predicted group holds exactly the lines of their reference group."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} reference lines")
    by_pred: dict[str, set[int]] = defaultdict(set)
    by_ref: dict[str, set[int]] = defaultdict(set)
    for i, (p, r) in enumerate(zip(predicted, reference, strict=True)):
        by_pred[p].add(i)
        by_ref[r].add(i)
    right = sum(len(lines) for lines in by_ref.values()
                if by_pred[predicted[next(iter(lines))]] == lines)  # fmt: skip
    return right / max(len(reference), 1)


def _auc_ap(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    if labels.min() == labels.max():
        return {"auc_roc": None, "avg_precision": None}
    return {
        "auc_roc": round(float(roc_auc_score(labels, scores)), 4),
        "avg_precision": round(float(average_precision_score(labels, scores)), 4),
    }


def _fit_score(make: Callable[[tuple[str, ...]], Any], rows: list[tuple[str, ...]],
               types: tuple[str, ...]) -> np.ndarray:  # fmt: skip
    batch = EventBatch(types, rows)
    det = make(types)
    det.learn_many(batch)
    return np.asarray(det.score_many(batch), dtype=np.float64)


def line_scores(events: list[dict[str, Any]], ref_ids: list[str] | None) -> dict[str, np.ndarray]:
    """Per-line scores of every method, each fitted on the whole sample."""

    def rows(types: tuple[str, ...]) -> list[tuple[str, ...]]:
        return [tuple(e["entities"].get(t, "") for t in types) for e in events]

    out = {
        "outrider (default detector, log_line kind as configured)": _fit_score(
            OutriderDetector, rows(KIND_TYPES), KIND_TYPES
        ),
        "outrider, every log_line entity (+ host, slots)": _fit_score(
            OutriderDetector, rows(ALL_TYPES), ALL_TYPES
        ),
        "baseline: template frequency (mined)": _fit_score(
            FrequencyDetector, rows(("template",)), ("template",)
        ),
    }
    if ref_ids is not None:
        out["reference: template frequency (loghub EventId)"] = _fit_score(
            FrequencyDetector, [(r,) for r in ref_ids], ("template",)
        )
    return out


def run_file(log: Path) -> dict[str, Any]:
    stem = log.name.removesuffix(".log.gz")
    folder = log.parent
    lines = _read_lines(log)
    miner = LogMiner()
    t0 = time.perf_counter()
    events: list[dict[str, Any]] = []
    unparsed = 0
    for line in lines:
        try:
            events.append(miner.event_for_line(line, received_time=0.0))
        except LogParseError:
            unparsed += 1
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {
        "lines": len(lines),
        "unparsed": unparsed,
        "templates": len(miner.templates),
        "parse_lines_per_s": round(len(lines) / max(elapsed, 1e-9)),
        "state_bytes": len(json.dumps(miner.state())),
    }
    structured = folder / f"{stem}.log_structured.csv.gz"
    ref_ids: list[str] | None = None
    if structured.exists() and not unparsed:
        ref_rows = _read_csv(structured)
        ref_ids = [r["EventId"] for r in ref_rows]
        pred = [e["entities"]["template"] for e in events]
        result["grouping_accuracy"] = round(grouping_accuracy(pred, ref_ids), 4)
        result["reference_templates"] = len(set(ref_ids))
    if unparsed:
        return result
    scores = line_scores(events, ref_ids)
    first = [line.split(" ", 1)[0] for line in lines]
    if stem.startswith("BGL"):
        labels = np.array([tok != "-" for tok in first], dtype=np.int8)
        result["per_line"] = {
            "anomalies": int(labels.sum()),
            **{name: _auc_ap(labels, s) for name, s in scores.items()},
        }
    blocks = folder / f"{stem}.block_labels.csv.gz"
    if blocks.exists():
        result["per_block"] = per_block(events, scores, _read_csv(blocks))
    return result


def per_block(events: list[dict[str, Any]], scores: dict[str, np.ndarray],
              block_rows: list[dict[str, str]]) -> dict[str, Any]:  # fmt: skip
    """Block scores: the session scorer over closed sessions, and each line method's max."""
    agg = SessionAggregator(
        SessionSpec(key_field="message", key_pattern=r"blk_-?\d+", max_keys_per_event=1024)
    )
    closed: list[SessionRecord] = []
    lines_of: dict[str, list[int]] = defaultdict(list)
    for i, ev in enumerate(events):
        closed.extend(agg.add(ev))
        for key in agg.keys_for(ev):
            lines_of[key].append(i)
    closed.extend(agg.flush())
    scorer = SessionScorer()
    scorer.learn_many(closed)
    session_scores = scorer.score_many(closed)
    block_score: dict[str, float] = defaultdict(float)
    for rec, s in zip(closed, session_scores, strict=True):
        block_score[rec.key] = max(block_score[rec.key], float(s))
    keys = [r["BlockId"] for r in block_rows]
    labels = np.array([r["Label"] != "Normal" for r in block_rows], dtype=np.int8)
    out: dict[str, Any] = {
        "blocks": len(keys),
        "anomalies": int(labels.sum()),
        "sessions": len(closed),
        "outrider (session scorer, bag of templates)": _auc_ap(
            labels, np.array([block_score.get(k, 0.0) for k in keys])
        ),
    }
    for name, s in scores.items():
        per = np.array([max((s[i] for i in lines_of.get(k, [])), default=0.0) for k in keys])
        out[f"{name}, max over the block's lines"] = _auc_ap(labels, per)
    return out


def run(data: Path) -> dict[str, Any]:
    """Every loghub sample, and the syslog samples (parse only: no reference, no labels)."""
    logs = sorted((data / "loghub").glob("*.log.gz"))
    logs += sorted((data / "security-samples" / "syslog").glob("*.log.gz"))
    t0 = time.perf_counter()
    files = {log.name: run_file(log) for log in logs}
    return {
        "data": str(data),
        "protocol": "fit on the whole sample, score it; grouping accuracy per loghub",
        "machine": f"{platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores",
        "seconds": round(time.perf_counter() - t0, 2),
        "files": files,
    }


def _table(result: dict[str, Any]) -> str:
    out = [f"data: {result['data']}  ({result['seconds']} s)"]
    for name, r in result["files"].items():
        ga = r.get("grouping_accuracy")
        out.append(
            f"\n{name}: {r['lines']} lines ({r['unparsed']} unparsed), {r['templates']} templates"
            f" (reference {r.get('reference_templates', '-')}), grouping accuracy "
            f"{ga if ga is not None else '-'}, {r['parse_lines_per_s']:,} lines/s"
        )
        for view in ("per_line", "per_block"):
            if view not in r:
                continue
            out.append(f"  {view} ({r[view]['anomalies']} anomalies)      AUC-ROC   AP")
            for method, m in r[view].items():
                if isinstance(m, dict):
                    out.append(f"    {method:<84} {m['auc_roc']!s:>7} {m['avg_precision']!s:>6}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.logs", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared datasets folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if not (args.data / "loghub").is_dir():
        p.error(f"{args.data / 'loghub'} not found (pass --data)")
    result = run(args.data)
    print(json.dumps(result, indent=1) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
