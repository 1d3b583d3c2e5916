"""Does a recurring attack keep alerting when partitions are read out of step in event time?

    python -m bench.skew --events 455440 --skew 0,2000,10000 --json [--data DIR]

The throughput bench's events (the first AIT alert capture under DIR/ait-ads, repeated, each
repetition shifted forward by the capture's span) scored in memory by the service's own
scorer (decode, score, held-back learning, calibration; no Kafka) over four partitions filled
as a keyless producer fills them (runs of 40 records to a random partition), and delivered
in batches of random size (20-2,000) either in time order (skew 0) or a partition's next
SKEW records at a time (a partition ahead of another by up to ~4 x SKEW records of the
stream in event time). Prints per skew the alerts raised per repetition of the capture.

Why: the live latency runs of bench/throughput.py raised 87k-243k alerts for the same
1,000,000 events (bench/README.md, run 50): the capture's web scan either alerted at every
repetition or stopped at one. In time order it alerts at every repetition whatever the
batching; out of step it is learned (the README says how).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import orjson

from bench.throughput import capture_rows, load_events
from service.model_store import load_model
from service.records import ConsumedRecord
from service.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets"
PARTITIONS = 4
RUN = 40  # records a keyless producer sends to one partition before it picks another
BATCH_SIZES = (20, 50, 100, 300, 700, 2000)


def partitioned(events: list[bytes], seed: int = 7) -> list[ConsumedRecord]:
    """The events as records of four partitions, in runs of RUN to a random one."""
    rng = random.Random(seed)
    out, offsets = [], [0] * PARTITIONS
    for i, value in enumerate(events):
        if i % RUN == 0:
            part = rng.randrange(PARTITIONS)
        ms = int(orjson.loads(value)["time"] * 1000)
        out.append(ConsumedRecord("events", part, offsets[part], ms, value))
        offsets[part] += 1
    return out


def out_of_step(records: list[ConsumedRecord], skew: int) -> list[ConsumedRecord]:
    """Each partition's next `skew` records in turn (0: as produced, in time order)."""
    if skew <= 0:
        return records
    parts = [[r for r in records if r.partition == p] for p in range(PARTITIONS)]
    out: list[ConsumedRecord] = []
    for start in range(0, max(map(len, parts)), skew):
        for part in parts:
            out += part[start : start + skew]
    return out


def alerts_per_repetition(
    records: list[ConsumedRecord], produced: dict[int, int], capture_len: int, seed: int = 1
) -> list[int]:
    """Score `records` in random-size batches with a fresh model; alerts per repetition of
    the capture (`produced`: each record's place in the produced stream, by its id)."""
    with tempfile.TemporaryDirectory(prefix="outrider-skew-") as state:
        settings = Settings(kafka_bootstrap="unused:9092", state_dir=state)
        scorer, decoder, _ = load_model(settings, Path(state))
    rng = random.Random(seed)
    reps = [0] * (len(records) // capture_len + 1)
    i = 0
    while i < len(records):
        batch = records[i : i + rng.choice(BATCH_SIZES)]
        i += len(batch)
        events, _dead = decoder.decode_many(batch)
        for part in scorer.score(events, learn=True):
            for k in part.alerted.nonzero()[0].tolist():
                rec = part.events[k].record
                reps[produced[id(rec)] // capture_len] += 1
    while reps and reps[-1] == 0:
        reps.pop()
    return reps


def run(data: Path, n: int, skews: list[int]) -> dict[str, Any]:
    events = load_events(data, n)
    capture_len = len(capture_rows(data))  # one repetition
    records = partitioned(events)
    produced = {id(r): i for i, r in enumerate(records)}
    out: dict[str, Any] = {"events": n, "capture_events": capture_len, "skews": {}}
    for skew in skews:
        reps = alerts_per_repetition(out_of_step(records, skew), produced, capture_len)
        out["skews"][str(skew)] = {"alerts": sum(reps), "per_repetition": reps}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--events", type=int, default=455_440)
    p.add_argument("--skew", default="0,2000,10000", help="comma-separated; 0 = time order")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    result = run(a.data, a.events, [int(s) for s in a.skew.split(",")])
    if a.json:
        print(json.dumps(result))
    else:
        for skew, r in result["skews"].items():
            print(f"skew {skew:>6}: {r['alerts']:,} alerts; per repetition {r['per_repetition']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
