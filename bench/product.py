"""What an analyst sees through the service, on AIT: the product's own detection quality.

`bench.quality` ranks every test alert group with a model fitted on the warm-up (protocol v2).
The service is not that: it learns online, raises an alert only above the alert percentile,
and its triage page lists the groups of those alerts in its group book's order. This bench runs
the service's own decode -> score -> alert -> group book code in process (no Kafka: the same
classes `service/app.py` chains) over each AIT capture in time order, in batches of 2,000, and
reads the group book like the simulated analyst of protocol v2: groups in ranked order until
every attack step present in the test stream has been seen ("all") or all but one ("all-1").
An attack step whose alerts never crossed the threshold is "missed": no reading order finds it.

    python -m bench.product --json [--data ../shared/datasets] [--detector frequency]

Configurations, each measured in the same run: learning at once or held back
(`--learn-delay-s`, service/holdback.py), group ranking by score alone or diverse
(`--group-diversity`, time-aware MMR in service/groups.py), and co-firing groups counted as
one action or not (`--group-cofire-s`, 0 = off). Stream alerts (service/stream_stage.py: a
host's steady stream that stopped, an episode without its usual mirror host) are raised as the
service raises them (`--no-streams`: without them, for comparison).

Then the analyst loop through the service, on the default settings: each round the simulated
analyst of protocol v2 reads the top 5 unread groups of the group book and gives each its
verdict from the ground truth (malicious when any of its alerts has an attack step); the
verdicts go through the service's `AnalystLoop` (rate limit, fine-tune, regression check,
re-scoring of the unread queue) before the next round. Reported beside the same reading with
no learning from the verdicts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from schemas import Feedback, ModelRef
from service.analyst_loop import AnalystLoop
from service.decode import Decoder
from service.feedback_intake import Verdict
from service.groups import GroupBook
from service.metrics import Metrics
from service.outputs import build_alerts
from service.replay import encode_record, read_records
from service.scoring import Scorer
from service.settings import Settings
from service.sources import SourceConfig
from service.stream_stage import StreamStage

FIELDS = ("name", "short", "ip", "host")
DEFAULTS = Settings.model_fields


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes
    headers: Any = None
    key: Any = None


def groups_to_see(ranked: list, steps_of: dict[tuple[str, ...], set[str]], steps: set[str]):
    """(groups read until every step was seen, until all but one, the steps never seen)."""
    seen: set[str] = set()
    n_all = n_all1 = None
    for k, g in enumerate(ranked, 1):
        seen |= steps_of.get(tuple(g.entities[f] for f in FIELDS), set())
        if n_all1 is None and len(steps - seen) <= 1:
            n_all1 = k
        if n_all is None and not steps - seen:
            n_all = k
            break
    return n_all, n_all1, sorted(steps - seen)


class ListIntake:
    """Verdicts handed to the analyst loop in process (FeedbackIntake's interface)."""

    def __init__(self) -> None:
        self.pending: list[Verdict] = []
        self.store: dict[str, Feedback] = {}
        self.applied: dict[int, int] = {}
        self.offset = 0

    def give(self, target: str, verdict: str, at: float) -> None:
        fb = Feedback(target_id=target, verdict=verdict, analyst="sim", time=at)
        self.offset += 1
        record = Record("feedback", 0, self.offset, int(at * 1000), b"")
        self.store[target] = fb
        self.pending.append(Verdict(fb, record, live=True))

    def poll(self) -> tuple[list[Verdict], list[Any]]:
        out, self.pending = self.pending, []
        return out, []


def simulate_analyst(
    book: GroupBook, scorer: Scorer, steps_of: dict, steps: set[str], learn: bool,
    per_round: int = 5,
) -> dict[str, Any]:  # fmt: skip
    """Rounds of `per_round` verdicts on the top unread groups; groups read to all / all-1."""
    intake = ListIntake()
    loop = AnalystLoop(intake, scorer, book, Metrics())  # type: ignore[arg-type]
    read, seen = 0, set()
    n_all = n_all1 = None
    rolled_back = 0
    at = 2e9  # verdict time: after the capture, one round a minute (under the rate limit)
    while n_all is None:
        unread = [g for g in book.ranked() if not g.verdict][:per_round]
        if not unread:
            break
        for g in unread:
            read += 1
            found = steps_of.get(tuple(g.entities[f] for f in FIELDS), set())
            seen |= found
            if n_all1 is None and len(steps - seen) <= 1:
                n_all1 = read
            if n_all is None and not steps - seen:
                n_all = read
            verdict = "true_positive" if found else "benign_positive"
            if learn:
                intake.give(g.group_id, verdict, at)
            else:
                book.mark(g.group_id, verdict)
        if learn:
            rolled_back += loop.apply().rolled_back
        at += 60
    return {"all": n_all, "all_1": n_all1, "groups_read": read, "rolled_back": rolled_back}


def run_scenario(
    path: Path, detector: str, delays: list[float], lambdas: list[float], percentile: float,
    default: tuple[float, float, float, float], cofires: list[float],
    time_weights: list[float], streams: bool = True,
) -> dict[str, Any]:  # fmt: skip
    rows = sorted(read_records(path), key=lambda r: float(r["time"]))
    attack_start = next(float(r["time"]) for r in rows if r["time_label"] != "false_positive")
    test = [r for r in rows if float(r["time"]) >= attack_start]
    steps_of: dict[tuple[str, ...], set[str]] = {}
    for r in test:
        steps_of.setdefault(tuple(r[f] for f in FIELDS), set()).add(r["event_label"])
    for labels in steps_of.values():
        labels.discard("-")
    steps = set().union(*steps_of.values())
    records = [
        Record("events", 0, i, int(float(r["time"]) * 1000), encode_record(r))
        for i, r in enumerate(rows)
    ]
    config = SourceConfig.load()
    out: dict[str, Any] = {
        "scenario": path.name.split("_")[0], "steps": len(steps),
        "test_events": len(test), "test_attack_events": sum(r["event_label"] != "-" for r in test),
        "configs": [],
    }  # fmt: skip
    # the configurations, then the analyst loop at each verdict time weight and unlearned
    runs = [(delay, None, 0.0) for delay in delays]
    runs += [(default[0], "feedback", w) for w in time_weights]
    runs += [(default[0], "no_feedback", 0.0)]
    for delay, analyst, time_weight in runs:
        t0 = time.perf_counter()
        decoder = Decoder(config, 1 << 18)
        scorer = Scorer(
            config, detector=detector, alert_percentile=percentile,
            calibration_window=DEFAULTS["calibration_window"].default,
            calibration_min_samples=DEFAULTS["calibration_min_samples"].default,
            learn_delay_s=delay, verdict_time_weight=time_weight,
            verdict_time_scale_s=DEFAULTS["verdict_time_scale_s"].default,
            verdict_time_field=DEFAULTS["verdict_time_field"].default,
            verdict_lift_weight=DEFAULTS["verdict_lift_weight"].default,
            verdict_sink_min_fields=DEFAULTS["verdict_sink_min_fields"].default,
        )  # fmt: skip
        model = ModelRef(name=detector, version="bench")
        stage = StreamStage(config, scorer.explain_events) if streams else None
        books = {(lam, c): GroupBook(mmr_lambda=lam, rerank_s=0, cofire_s=c)
                 for lam in ([default[1]] if analyst else lambdas)
                 for c in ([default[2]] if analyst else cofires)}  # fmt: skip
        raised = on_attack = stream_alerts = 0
        for i in range(0, len(records), 2000):
            events, _ = decoder.decode_many(records[i : i + 2000])
            scored = scorer.score(events)
            alerts = [a for part in scored for a in build_alerts(part, model)]
            if stage is not None:
                found = stage.process(scored, model)
                stream_alerts += sum(a["event_time"] >= attack_start for a in found)
                alerts += found
            for alert in alerts:
                if alert["event_time"] >= attack_start:
                    raised += 1
                    on_attack += rows[alert["origin"]["offset"]]["event_label"] != "-"
                    for book in books.values():
                        book.add(dict(alert))
        seconds = time.perf_counter() - t0
        if analyst:
            learn = analyst == "feedback"
            result = simulate_analyst(books[default[1:3]], scorer, steps_of, steps, learn)
            if learn:
                out.setdefault("feedback_by_verdict_time_weight", {})[time_weight] = result
            if not learn or time_weight == default[3]:
                out[analyst] = result
            continue
        for (lam, cofire), book in books.items():
            n_all, n_all1, missed = groups_to_see(book.ranked(), steps_of, steps)
            out["configs"].append({
                "learn_delay_s": delay, "group_diversity": lam, "group_cofire_s": cofire,
                "all": n_all, "all_1": n_all1,
                "missed_steps": missed, "alerts": raised, "alert_groups": len(book.groups),
                "alerts_on_attack_events": on_attack, "stream_alerts": stream_alerts,
                "seconds": round(seconds, 1),
            })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--detector", default=DEFAULTS["detector"].default)
    ap.add_argument("--alert-percentile", type=float, default=DEFAULTS["alert_percentile"].default)
    ap.add_argument("--learn-delay-s", type=float, nargs="+", default=[0.0, 600.0])
    ap.add_argument("--group-diversity", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--group-cofire-s", type=float, nargs="+",
                    default=[0.0, DEFAULTS["group_cofire_s"].default])  # fmt: skip
    ap.add_argument("--verdict-time-weight", type=float, nargs="+", default=[0.0],
                    help="analyst loop also at these (the default always runs)")  # fmt: skip
    ap.add_argument("--no-streams", action="store_true", help="no stream alerts (to compare)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args(argv)
    files = sorted((args.data / "ait-ads").glob("*_alerts.csv*"))
    if not files:
        print(f"no AIT captures under {args.data / 'ait-ads'}", file=sys.stderr)
        return 2
    results = []
    for f in files:
        default = (
            DEFAULTS["learn_delay_s"].default,
            DEFAULTS["group_diversity"].default,
            DEFAULTS["group_cofire_s"].default,
            DEFAULTS["verdict_time_weight"].default,
        )
        time_weights = sorted({*args.verdict_time_weight, default[3]})
        res = run_scenario(f, args.detector, args.learn_delay_s, args.group_diversity,
                           args.alert_percentile, default, args.group_cofire_s,
                           time_weights, streams=not args.no_streams)  # fmt: skip
        results.append(res)
        if not args.json:
            for c in res["configs"]:
                print(
                    f"{res['scenario']:16} delay {c['learn_delay_s']:>6.0f}s diversity "
                    f"{c['group_diversity']:.1f} co-fire {c['group_cofire_s']:g}s: all "
                    f"{c['all']} all-1 {c['all_1']} missed "
                    f"{c['missed_steps']} ({c['alert_groups']} groups, {c['alerts']} alerts, "
                    f"{c['alerts_on_attack_events']} of {res['test_attack_events']} attack events)"
                )
            analyst = [
                (f"feedback, verdict time weight {w:g}", r)
                for w, r in res["feedback_by_verdict_time_weight"].items()
            ]
            for name, r in [*analyst, ("no_feedback", res["no_feedback"])]:
                print(
                    f"{res['scenario']:16} analyst, {name}: all {r['all']} all-1 {r['all_1']}"
                    f" ({r['groups_read']} read, {r['rolled_back']} fine-tunes rolled back)"
                )
    if args.json:
        # the analyst loop's results are keyed by verdict time weight (a float): JSON keys
        # are strings, so they print as "3.0"
        out = {"detector": args.detector, "alert_percentile": args.alert_percentile,
               "scenarios": results}  # fmt: skip
        print(orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
