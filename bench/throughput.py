"""Pipeline throughput and latency against a real broker, with baselines from the same run.

    python -m bench.throughput --events 200000 --json [--data DIR] [--peers]

Measures, on one broker and one topic of AIT alert events (russellmitchell, repeated to N):
  raw_consumer_events_per_s    kafka-python consuming the topic, no processing (the ratio's
                               denominator: the client library's own ceiling)
  pipeline_events_per_s        Outrider's whole chain (decode, validate, score, calibrate,
                               explain and publish alerts, commit after acks), as it runs by
                               default: kafka-python consuming in a child process
  ratio                        median pipeline over median raw consumer: both run `--repeat`
                               times (default 3), alternating, so they sample the same moments
                               of a shared machine (single runs of the same code spread 2x);
                               *_runs list every run, ratio_runs each pair's ratio
  pipeline_in_process_events_per_s
                               the same chain with kafka-python in the pipeline's own process
                               (`--consumer-process false`); consumer_process_speedup = the
                               default over it, ratio_in_process its ratio;
                               in_process_[warm_]p50/p99_latency_ms: the latency runs again
                               with it, at the same rate
  pipeline_alerts              alerts the pipeline run raised (each is two produced records)
  pipeline_cpu_runs            per default pipeline run, microseconds of CPU per event of the
                               chain's thread, this process's other threads, the consumer
                               process and the local broker, and the share of the run the
                               chain's thread was busy / runnable but waiting for a core
  pipeline_ceiling_events_per_s
                               the fastest those runs' CPU per event allows on this machine
                               (median): min(one core for the chain's thread, all cores for
                               every task measured); ratio_ceiling = it over the raw read: a
                               ratio above it needs less CPU per event, not better scheduling
  p50/p99_latency_ms           record timestamp -> outputs acknowledged, with a producer
                               process pacing events at half the measured pipeline rate,
                               a fresh service from the capture's start (cold start)
  warm_p50/p99_latency_ms      the same with the model the throughput run left, on the
                               events after its N (a service in its steady state)
  raw_consumer_pure_python_crc_events_per_s
                               the raw consumer as a plain `pip install kafka-python` runs it
                               (pure-Python CRC-32C; Outrider ships the C `crc32c`)
  raw_confluent_events_per_s   confluent-kafka consuming the same topic (what another client
                               library could gain), when installed
  pipeline_librdkafka_events_per_s
                               the whole chain again, consuming through librdkafka
                               (`--consumer-client librdkafka`); librdkafka_speedup = it over
                               pipeline_events_per_s; librdkafka_[warm_]p50/p99_latency_ms:
                               the latency runs again through it, at the same rate
  pipeline_exactly_once_events_per_s
                               the librdkafka chain with `--exactly-once` (outputs and offsets
                               in transactions); exactly_once_vs_librdkafka = it
                               over pipeline_librdkafka_events_per_s
  peer_*_events_per_s          with --peers: the peer pipelines of ../shared/bench (kafka-python
                               + river HalfSpaceTrees, Quix Streams + river), same broker/events
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.cpu import CpuWatch, ceiling_events_per_s, local_broker_pid

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets"
PRIMING_EVENTS = 100  # produced before a latency run's pipeline starts: it signals readiness


def capture_rows(data: Path) -> list[Any]:
    """The rows of the first AIT alert capture under `data`/ait-ads (what the benches replay)."""
    from service.replay import read_records

    files = sorted((data / "ait-ads").glob("*_alerts.csv*"))
    if not files:
        raise SystemExit(f"no AIT alert files under {data / 'ait-ads'}")
    return read_records(files[0])


def load_events(data: Path, n: int) -> list[bytes]:
    """The first AIT alert capture as JSON events, repeated to `n`. Each repetition is shifted
    forward by the capture's span, so event time keeps moving forward as in live traffic (a
    replay whose time jumped back would look to the model like the past coming back: patterns
    it had alerted on "later" would never become learnable, an alert storm of the bench's
    own making)."""
    rows = capture_rows(data)
    times = [float(r["time"]) for r in rows]
    span = max(times) - min(times) + 1.0
    out: list[bytes] = []
    for rep in range(n // len(rows) + 1):
        shift = rep * span
        out.extend(
            orjson.dumps(
                {
                    "time": r["time"] + shift if shift else r["time"],
                    "name": r["name"],
                    "ip": r["ip"],
                    "host": r["host"],
                    "short": r["short"],
                }
            )
            for r in rows
        )
        if len(out) >= n:
            break
    return out[:n]


def make_topic(bootstrap: str, partitions: int = 4, keep_forever: bool = False) -> str:
    """A new topic; `keep_forever`: no time-based retention (records stamped with the
    capture's event time are years old, and the broker would delete them)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    configs = {"retention.ms": "-1"} if keep_forever else None
    admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    admin.close()
    return name


def topic_names(bootstrap: str) -> set[str]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def drop_new_topics(bootstrap: str, before: set[str]) -> int:
    """Delete the topics this run created (ours `bench-*`, the peers' `peer-*`) and return how
    many: a run writes ~1 GB to the broker, and a development broker that had kept a day of
    runs' topics (369 topics, 3.7 GB) gave some of that day's worst latencies (bench/README.md,
    run 15)."""
    from kafka.admin import KafkaAdminClient

    ours = sorted(t for t in topic_names(bootstrap) - before if t.startswith(("bench-", "peer-")))
    if ours:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.delete_topics(ours, timeout_ms=60_000)
        finally:
            admin.close()
    return len(ours)


def produce_all(bootstrap: str, topic: str, events: list[bytes], event_time: bool = False) -> None:
    """Produce `events`; `event_time`: each record stamped with its event's time, as a
    backlog of live traffic is (a live producer writes when the event happens), instead of
    the time it was produced."""
    stamps = [int(orjson.loads(e)["time"] * 1000) for e in events] if event_time else None
    try:
        from confluent_kafka import Producer
    except ImportError:
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
        for i, e in enumerate(events):
            p.send(topic, e, timestamp_ms=stamps[i] if stamps else None)
        p.flush()
        p.close()
        return
    cp = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000}
    )
    for i, e in enumerate(events):
        while True:
            try:
                if stamps:
                    cp.produce(topic, e, timestamp=stamps[i])
                else:
                    cp.produce(topic, e)
                break
            except BufferError:
                cp.poll(0.05)
        if i % 10_000 == 0:
            cp.poll(0)
    cp.flush(60)


def raw_kafka_python(bootstrap: str, topic: str, n: int, batch: int) -> float:
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=batch,
        fetch_max_bytes=50 << 20,
        max_partition_fetch_bytes=10 << 20,
    )
    got, t0 = 0, None
    while got < n:
        recs = c.poll(1000)
        if recs and t0 is None:
            t0 = time.perf_counter()
        got += sum(len(v) for v in recs.values())
    dt = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return got / dt


def raw_kafka_python_pure_crc(bootstrap: str, topic: str, n: int, batch: int) -> float:
    """The same raw consumer with kafka-python's pure-Python CRC-32C, i.e. a plain
    `pip install kafka-python` without the `crc32c` accelerator Outrider depends on (the
    figure ../shared/KAFKA.md quotes)."""
    import kafka.record.default_records as records
    from kafka.record._crc32c import crc as pure_crc

    fast = records.calc_crc32c
    records.calc_crc32c = pure_crc  # type: ignore[assignment]
    try:
        return raw_kafka_python(bootstrap, topic, n, batch)
    finally:
        records.calc_crc32c = fast  # type: ignore[assignment]


def raw_confluent(bootstrap: str, topic: str, n: int) -> float | None:
    try:
        from confluent_kafka import Consumer
    except ImportError:
        return None
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"rawc-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        ms = c.consume(10_000, 1.0)
        if ms and t0 is None:
            t0 = time.perf_counter()
        got += sum(1 for m in ms if m.error() is None)
    dt = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return got / dt


def run_pipeline(
    bootstrap: str,
    topic: str,
    n: int,
    batch: int,
    state: Path,
    latencies: list[float] | None = None,
    timeout_s: float = 600,
    stats: dict[str, Any] | None = None,
    state_dir: Path | None = None,
    on_first_batch: Callable[[], object] | None = None,
    client: str = "kafka-python",
    process: bool = True,
    align_s: float | None = None,
    exactly_once: bool = False,
    broker_pid: int | None = None,
) -> float:
    """Outrider's chain over `n` records of `topic`; events/s from first batch to last.
    `stats` receives the number of alerts (each is a produced record, and its group's OCSF
    finding one more per batch; the alert rate moves the figure more than anything else).
    `state_dir`: the model and groups to start from (a fresh one when None);
    `on_first_batch`: called once the pipeline has its partitions and scored a first batch;
    `client`: which client consumes the events (`--consumer-client`); `process`: kafka-python
    in a child process (`--consumer-process`, the default) or in the pipeline's own;
    `align_s`: `--align-partitions-s` (None = the default); `exactly_once`: outputs and
    offsets in transactions (`--exactly-once`, librdkafka only). `stats["cpu"]` receives
    where the CPU went from first batch to last (bench/cpu.py; the broker with `broker_pid`)."""
    from service.app import Pipeline
    from service.settings import Settings

    run = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=bootstrap,
        events_topic=topic,
        alerts_topic=f"{topic}-alerts",
        dead_letter_topic=f"{topic}-dlq",
        feedback_topic=f"{topic}-fb",
        models_topic=f"{topic}-models",
        logs_topic=f"{topic}-logs",  # the service's default topics, named for this run
        findings_topic=f"{topic}-findings",
        digest_topic=f"{topic}-digest",
        group_id=f"bench-{run}",
        state_dir=state_dir or state / run,
        batch_max_events=batch,
        consumer_client=client,
        consumer_process=process,
        exactly_once=exactly_once,
        **({} if align_s is None else {"align_partitions_s": align_s}),
        metrics_port=0,
        log_level="WARNING",
    )
    pipeline = Pipeline(settings)
    seen = {"n": 0, "t0": 0.0, "t1": 0.0, "alerts": 0}
    done = threading.Event()
    cpu = CpuWatch(broker_pid)

    def on_batch(records: list, alerts: list) -> None:
        now = time.time()
        if not seen["n"]:
            cpu.start()
            seen["t0"] = time.perf_counter()
            if on_first_batch is not None:
                on_first_batch()
        seen["n"] += len(records)
        seen["alerts"] += len(alerts)
        if latencies is not None:
            latencies.extend(now - r.timestamp / 1000.0 for r in records)
        if seen["n"] >= n:
            seen["t1"] = time.perf_counter()
            done.set()

    pipeline.on_batch = on_batch
    if stats is not None:
        stats["state_dir"] = settings.state_dir
    worker = threading.Thread(target=pipeline.run, daemon=True)
    worker.start()
    finished = done.wait(timeout_s)
    cpu.stop()
    pipeline.stop()
    worker.join(60)
    if not finished:
        raise RuntimeError(f"pipeline processed {seen['n']} of {n} in {timeout_s} s")
    if stats is not None:
        stats["alerts"] = int(seen["alerts"])
        stats["cpu"] = cpu.result(n, seen["t1"] - seen["t0"])
    return n / max(seen["t1"] - seen["t0"], 1e-9)


def _paced_producer(bootstrap: str, topic: str, events: list[bytes], rate: float) -> None:
    """Produce at a steady `rate` from another process with librdkafka (its C client leaves
    the CPU to the pipeline under test; the record timestamp is set at send). The client is
    connected and knows the topic's leaders before pacing starts, so its own start-up is not
    counted as the pipeline's latency."""
    from confluent_kafka import Producer

    cp = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    cp.list_topics(topic, timeout=30)
    start = time.monotonic()
    for i, e in enumerate(events):
        wait = start + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        cp.produce(topic, e)
        if i % 1000 == 0:
            cp.poll(0)
    cp.flush(30)


def latency_at(
    bootstrap: str,
    events: list[bytes],
    rate: float,
    batch: int,
    state: Path,
    state_dir: Path | None = None,
    client: str = "kafka-python",
    process: bool = True,
) -> dict[str, float]:
    """Latency percentiles while a separate process produces at `rate` events/s; the
    pipeline starts from the model in `state_dir` (warm) or from nothing (cold). The paced
    producer starts once the pipeline scored a first few events (it has joined its group
    and holds its partitions): the service's start-up is not part of its latency."""
    topic = make_topic(bootstrap)
    lat: list[float] = []
    # the priming batch ends in a dead letter, so its settle also waits out the output
    # producer's start (an idempotent producer first fetches its producer id)
    produce_all(bootstrap, topic, [*events[:PRIMING_EVENTS], b"{priming: not json"])
    proc = mp.get_context("spawn").Process(
        target=_paced_producer,
        args=(bootstrap, topic, events[PRIMING_EVENTS:], rate),
        daemon=True,
    )
    stats: dict[str, Any] = {}
    run_pipeline(
        bootstrap,
        topic,
        len(events) + 1,
        batch,
        state,
        latencies=lat,
        timeout_s=len(events) / rate + 120,
        stats=stats,
        state_dir=state_dir,
        on_first_batch=proc.start,
        client=client,
        process=process,
    )
    proc.join(30)
    arr = np.asarray(lat[len(lat) // 10 :]) * 1000.0  # not the first 10%: cold caches
    return {
        "p50_latency_ms": float(np.percentile(arr, 50)),
        "p99_latency_ms": float(np.percentile(arr, 99)),
        "latency_rate_events_per_s": rate,
        "latency_run_alerts": stats["alerts"],
    }


def peers(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    path = REPO.parent / "shared" / "bench" / "peer_pipeline.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location("peer_pipeline", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = {}
    for name in ("kp_river", "quix_river"):
        try:
            out[f"peer_{name}_events_per_s"] = round(getattr(mod, name)(bootstrap, topic, n))
        except Exception as exc:  # a missing optional peer dependency must not hide our figures
            print(f"peer {name} failed: {exc}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2000, help="pipeline batch / poll size")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--latency-seconds",
        type=float,
        default=20.0,
        help="how long the paced latency run produces",
    )
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of the raw consumer and the default pipeline (medians)")  # fmt: skip
    ap.add_argument("--peers", action="store_true", help="also run ../shared/bench peers")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")

    from service.app import tune_gc
    from service.local_broker import LocalBroker

    broker = None
    bootstrap = os.environ.get("OUTRIDER_KAFKA_BOOTSTRAP", "")
    state = Path(tempfile.mkdtemp(prefix="outrider-bench-"))
    if not bootstrap:
        broker = LocalBroker(state / "broker")
        bootstrap = broker.start()
    existing = topic_names(bootstrap)
    try:
        tune_gc()
        events = load_events(a.data, a.events)
        topic = make_topic(bootstrap, keep_forever=True)
        produce_all(bootstrap, topic, events, event_time=True)
        res: dict[str, Any] = {
            "events": a.events,
            "batch": a.batch,
            "machine": f"{os.cpu_count()} cores",
        }
        raws, pipes, alerts, cpus = [], [], [], []
        pid = None if broker is None else local_broker_pid(broker.state_dir)
        for _ in range(a.repeat):  # alternating: both sample the same moments of the machine
            raws.append(raw_kafka_python(bootstrap, topic, a.events, a.batch))
            stats: dict[str, Any] = {}
            pipes.append(run_pipeline(bootstrap, topic, a.events, a.batch, state, stats=stats,
                                      broker_pid=pid))  # fmt: skip
            alerts.append(stats["alerts"])
            cpus.append(stats["cpu"])
        res["raw_consumer_events_per_s"] = round(float(np.median(raws)))
        res["pipeline_events_per_s"] = round(float(np.median(pipes)))
        res["pipeline_alerts"] = alerts[int(np.argsort(pipes)[len(pipes) // 2])]
        res["ratio"] = round(res["pipeline_events_per_s"] / res["raw_consumer_events_per_s"], 3)
        res["raw_consumer_runs"] = [round(r) for r in raws]
        res["pipeline_runs"] = [round(r) for r in pipes]
        res["pipeline_alerts_runs"] = alerts
        # where the CPU went in each run (bench/cpu.py): the chain's thread is the pipeline's
        # speed while it is busy; the rest shares the other core
        res["pipeline_cpu_runs"] = cpus
        res["ratio_runs"] = [round(p / r, 3) for p, r in zip(pipes, raws, strict=True)]
        # what no scheduling could beat with this CPU per event on this machine's cores
        ceilings = [c for c in (ceiling_events_per_s(r, os.cpu_count() or 1) for r in cpus)
                    if c is not None]  # fmt: skip
        if len(ceilings) == len(cpus):  # every run measured
            top = float(np.median(ceilings))
            res["pipeline_ceiling_events_per_s"] = round(top)
            res["ratio_ceiling"] = round(top / res["raw_consumer_events_per_s"], 3)
        # the same chain reading the backlog's partitions as kafka-python hands them out
        # (--align-partitions-s 0): what reading them in step costs, and its alerts
        free_stats: dict[str, Any] = {}
        free = run_pipeline(bootstrap, topic, a.events, a.batch, state, stats=free_stats,
                            align_s=0)  # fmt: skip
        res["pipeline_unaligned_events_per_s"] = round(free)
        res["pipeline_unaligned_alerts"] = free_stats["alerts"]
        one_stats: dict[str, Any] = {}
        one = run_pipeline(bootstrap, topic, a.events, a.batch, state, stats=one_stats,
                           process=False)  # fmt: skip
        res["pipeline_in_process_events_per_s"] = round(one)
        res["pipeline_in_process_alerts"] = one_stats["alerts"]
        res["ratio_in_process"] = round(one / res["raw_consumer_events_per_s"], 3)
        res["consumer_process_speedup"] = round(res["pipeline_events_per_s"] / one, 2)
        pure = raw_kafka_python_pure_crc(bootstrap, topic, a.events, a.batch)
        res["raw_consumer_pure_python_crc_events_per_s"] = round(pure)
        res["ratio_vs_pure_python_crc"] = round(res["pipeline_events_per_s"] / pure, 3)
        conf = raw_confluent(bootstrap, topic, a.events)
        if conf is not None:
            res["raw_confluent_events_per_s"] = round(conf)
        rd_stats: dict[str, Any] = {}
        rd = run_pipeline(bootstrap, topic, a.events, a.batch, state, stats=rd_stats,
                          client="librdkafka")  # fmt: skip
        res["pipeline_librdkafka_events_per_s"] = round(rd)
        res["pipeline_librdkafka_alerts"] = rd_stats["alerts"]
        res["librdkafka_speedup"] = round(rd / res["pipeline_events_per_s"], 2)
        # the same librdkafka chain with --exactly-once: the batches in flight commit together
        # in one transaction (at least every 100 ms)
        eos_stats: dict[str, Any] = {}
        eos = run_pipeline(bootstrap, topic, a.events, a.batch, state, stats=eos_stats,
                           client="librdkafka", exactly_once=True)  # fmt: skip
        res["pipeline_exactly_once_events_per_s"] = round(eos)
        res["pipeline_exactly_once_alerts"] = eos_stats["alerts"]
        res["exactly_once_vs_librdkafka"] = round(eos / rd, 2)
        half = res["pipeline_events_per_s"] / 2
        paced_n = int(half * a.latency_seconds)
        # cold: a fresh service on the capture's start (its warm-up and first alert storms);
        # warm: the model the throughput run left, on the events that follow its 200k
        paced = load_events(a.data, a.events + paced_n)
        cold = latency_at(bootstrap, paced[:paced_n], half, a.batch, state)
        res.update({k: round(v, 1) for k, v in cold.items()})
        later = paced[a.events :]
        warm = latency_at(bootstrap, later, half, a.batch, state, state_dir=stats["state_dir"])
        res.update({f"warm_{k}": round(v, 1) for k, v in warm.items() if "rate" not in k})
        # the same two latency runs with kafka-python in the pipeline's process (same rate)
        cold = latency_at(bootstrap, paced[:paced_n], half, a.batch, state, process=False)
        warm = latency_at(bootstrap, later, half, a.batch, state,
                          state_dir=one_stats["state_dir"], process=False)  # fmt: skip
        for prefix, run in (("in_process_", cold), ("in_process_warm_", warm)):
            res.update({prefix + k: round(v, 1) for k, v in run.items() if "rate" not in k})
        # the same two latency runs, consuming through librdkafka (same rate)
        cold = latency_at(bootstrap, paced[:paced_n], half, a.batch, state, client="librdkafka")
        warm = latency_at(bootstrap, later, half, a.batch, state,
                          state_dir=rd_stats["state_dir"], client="librdkafka")  # fmt: skip
        for prefix, run in (("librdkafka_", cold), ("librdkafka_warm_", warm)):
            res.update({prefix + k: round(v, 1) for k, v in run.items() if "rate" not in k})
        if a.peers:
            res.update(peers(bootstrap, topic, a.events))
            for k in [k for k in res if k.startswith("peer_")]:
                res[k.replace("_events_per_s", "_speedup")] = round(
                    res["pipeline_events_per_s"] / res[k], 2
                )
    finally:
        if broker is not None:
            broker.stop()
        else:
            try:
                dropped = drop_new_topics(bootstrap, existing)
                print(f"deleted the run's {dropped} topics", file=sys.stderr)
            except Exception as exc:  # the figures stand; the topics stay
                print(f"could not delete the run's topics: {exc}", file=sys.stderr)
        shutil.rmtree(state, ignore_errors=True)  # checkpoints, and an embedded broker's data
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>32}: {v}")


if __name__ == "__main__":
    main()
