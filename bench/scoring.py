"""Scoring speed: events/s of score_many per batch size, on CPU (and CUDA when present).

    python -m bench.scoring --json

Synthetic events of 7 entity types (the process/socket shape of DESIGN.md) over a vocabulary of
`--entities` values; each detector is fitted once, then every batch size is timed (best of
`--repeat`). Also reports the bytes of checkpoint state (safetensors arrays + JSON manifest)
per million entities, and `learn_many`'s rate in the service's 2,000-event calls: APE as a
batch fit (10 passes per call) and as a stream at the service's default budget (0.001 NCE
minibatches per event, timed after its first window), next to the frequency detector.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from detectors.ape import APEDetector
from detectors.base import Detector, EventBatch
from detectors.frequency import FrequencyDetector
from detectors.outrider import OutriderDetector
from service.settings import Settings

TYPES = ("user", "host", "process", "parent", "dst_ip", "dst_port", "protocol")
BATCHES = (256, 1024, 4096, 16384)


def synthetic(n: int, entities: int, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    per_type = max(entities // len(TYPES), 2)
    ids = np.minimum(rng.zipf(1.3, size=(n, len(TYPES))) - 1, per_type - 1)
    rows = [tuple(f"{t}{v}" for t, v in zip(TYPES, r, strict=True)) for r in ids.tolist()]
    return EventBatch(TYPES, rows, np.arange(n, dtype=np.float64))


def state_bytes(det: Detector) -> int:
    arrays, meta = det.state_dict()
    return sum(a.nbytes for a in arrays.values()) + len(json.dumps(meta).encode())


def time_scoring(det: Any, events: EventBatch, repeat: int) -> dict[str, float]:
    out = {}
    for b in BATCHES:
        batch = EventBatch(TYPES, events.rows[:b], events.times[:b])
        det.score_many(batch)  # warm-up
        best = min(_timed(det, batch) for _ in range(repeat))
        out[str(b)] = round(b / best)
    return out


def _timed(det: Any, batch: EventBatch) -> float:
    t0 = time.perf_counter()
    det.score_many(batch)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


#: events per learn call, as the service's batches (its `batch_max_events` default)
SERVICE_BATCH: int = Settings.model_fields["batch_max_events"].default


def time_learning(device: str, events: EventBatch, calls: int = 5) -> dict[str, int]:
    """Events/s of `learn_many` in service-sized calls, per way of learning."""

    def rate(det: Detector, warm: int = 0) -> int:
        n = SERVICE_BATCH
        for s in range(0, warm, n):
            det.learn_many(EventBatch(TYPES, events.rows[s : s + n], events.times[s : s + n]))
        t0 = time.perf_counter()
        for s in range(warm, warm + calls * n, n):
            det.learn_many(EventBatch(TYPES, events.rows[s : s + n], events.times[s : s + n]))
        return round(calls * n / (time.perf_counter() - t0))

    stream = APEDetector(TYPES, device=device, train_steps_per_event=0.001)
    out = {
        "ape batch fit": rate(APEDetector(TYPES, device=device)),
        "ape stream 0.001": rate(stream, warm=stream.config["replay_size"]),
    }
    if device == "cpu":
        out["frequency"] = rate(FrequencyDetector(TYPES))
    return out


class _EncodeOnly:
    """Times `Vocabulary.encode` alone through the same harness as a detector."""

    def __init__(self, vocab: Any) -> None:
        self.vocab = vocab

    def score_many(self, batch: EventBatch) -> Any:
        return self.vocab.encode(batch.rows)


def run(entities: int, repeat: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    fit = synthetic(50_000, entities, seed=1)
    events = synthetic(max(BATCHES), entities, seed=2)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result: dict[str, Any] = {
        "threads": threads,
        "entity_types": len(TYPES),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "events_per_s": {},
        "state_bytes_per_million_entities": {},
        # The host-side floor under every neural detector: strings to ids (what a GPU can't do).
        "vocabulary_encode_events_per_s": {},
        "learn_events_per_s": {},
    }
    for device in devices:
        learn = synthetic(30_000, entities, seed=3)
        for name, r in time_learning(device, learn).items():
            result["learn_events_per_s"][f"{name}@{device}"] = r
        dets: dict[str, Detector] = {
            "outrider": OutriderDetector(TYPES, device=device, epochs=1),
            "outrider+ape": OutriderDetector(TYPES, ape_weight=0.25, device=device, epochs=1),
            "ape": APEDetector(TYPES, device=device, epochs=1),
        }
        if device == "cpu":
            dets["frequency"] = FrequencyDetector(TYPES)
        for name, det in dets.items():
            det.learn_many(fit)
            result["events_per_s"][f"{name}@{device}"] = time_scoring(det, events, repeat)
            if name == "ape" and device == "cpu":
                encode = _EncodeOnly(det.vocab)  # type: ignore[attr-defined]
                result["vocabulary_encode_events_per_s"] = time_scoring(encode, events, repeat)
            if device == "cpu":
                n_ent = len(det.ape.vocab) if hasattr(det, "ape") else None
                n_ent = n_ent or (len(det.vocab) if hasattr(det, "vocab") else None)
                if n_ent:
                    per_m = state_bytes(det) / n_ent * 1e6
                    result["state_bytes_per_million_entities"][name] = round(per_m)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    result = run(args.entities, args.repeat, args.threads)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, per in result["events_per_s"].items():
            print(f"{name:<24}" + "".join(f"{b:>8}: {v:>10,}/s" for b, v in per.items()))
        print("state bytes per million entities:", result["state_bytes_per_million_entities"])
        print("learn_many events/s (2,000-event calls):", result["learn_events_per_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
