"""`outrider demo`: the embedded default. A local Kafka broker, the service, a real capture
replayed, ranked alert groups printed live, metrics up until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer

from service.app import Pipeline
from service.board import AlertBoard
from service.kafka_io import ensure_topics
from service.replay import is_raw_lines, read_records, replay
from service.settings import Settings
from service.triage_wiring import triage_token

log = logging.getLogger("outrider.demo")


def _drain_alerts(consumer: KafkaConsumer, board: AlertBoard, timeout_ms: int = 500) -> None:
    for records in consumer.poll(timeout_ms=timeout_ms).values():
        for r in records:
            try:
                board.add(orjson.loads(r.value))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("skipping an unreadable alert record at offset %s", r.offset)


def _alerts_consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        settings.alerts_topic,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **settings.kafka_client_config(),
    )


def print_top_alerts(settings: Settings, top: int, wait_s: float) -> str:
    """Read the alerts topic for `wait_s` seconds and render the top groups."""
    consumer = _alerts_consumer(settings)
    board = AlertBoard()
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            _drain_alerts(consumer, board)
    finally:
        consumer.close()
    return board.render(top)


def run_demo(args: argparse.Namespace, settings_from: Callable[..., Settings]) -> int:
    from service.cli import default_dataset
    from service.local_broker import LocalBroker

    dataset = args.dataset or default_dataset()
    if dataset is None or not Path(dataset).exists():
        print(
            "no dataset: pass --dataset FILE (AIT CSV, Zeek TSV or JSON lines), or set "
            "OUTRIDER_DATA to the shared datasets folder",
            file=sys.stderr,
        )
        return 2
    base = settings_from(args)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # stop as Ctrl-C does: the finally blocks run
    broker = None
    bootstrap = base.kafka_bootstrap
    try:
        if not bootstrap:
            print(
                "starting a local Apache Kafka broker (first run fetches it from Maven Central)...",
                file=sys.stderr,
            )
            broker = LocalBroker()
            if broker.is_running():  # a developer's broker: used, and left running
                bootstrap, broker = broker.start(), None
            else:
                bootstrap = broker.start()
        return _run_on(args, settings_from, base, bootstrap, dataset)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    finally:  # a service manager's or `timeout`'s SIGTERM too: never leave our broker running
        if broker is not None:
            broker.stop()


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """While the demo runs, Ctrl-C and SIGTERM ask its loop to stop (it looks every half
    second) instead of raising inside whatever runs then: raised inside the Kafka client's
    network code, the interrupt left a socket half closed and the client logged a traceback
    while closing. A second signal raises at once, for a stop that hangs. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def ask(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    before = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in before.items():
            signal.signal(sig, handler)

    return restore


def _interrupt(_signum: int, _frame: Any) -> None:
    """SIGTERM stops the demo as Ctrl-C does (Python's default would skip every cleanup)."""
    raise KeyboardInterrupt


def _run_on(
    args: argparse.Namespace,
    settings_from: Callable[..., Settings],
    base: Settings,
    bootstrap: str,
    dataset: str | Path,
) -> int:
    run_id = uuid.uuid4().hex[:8]
    state = Path(tempfile.mkdtemp(prefix="outrider-demo-"))
    fields = Settings.model_fields
    overrides: dict[str, Any] = {"kafka_bootstrap": bootstrap, "state_dir": state}
    for name in ("events_topic", "logs_topic", "alerts_topic", "dead_letter_topic", "group_id"):
        if getattr(base, name) == fields[name].default:  # keep runs apart on a shared broker
            overrides[name] = f"{getattr(base, name)}.demo-{run_id}"
    settings = settings_from(args, **overrides)

    records = read_records(dataset)
    if args.limit:
        records = records[: args.limit]
    ensure_topics(settings)  # before the replay, so it never races topic creation
    topic = settings.logs_topic if is_raw_lines(records) else settings.events_topic
    pipeline = Pipeline(settings)
    try:
        port = pipeline.metrics.serve(settings.metrics_port, settings.metrics_host)
    except OSError:
        port = pipeline.metrics.serve(0, settings.metrics_host)
    processed = {"n": 0}

    def count(batch: list, _alerts: list) -> None:
        processed["n"] += len(batch)

    pipeline.on_batch = count
    worker = threading.Thread(target=pipeline.run, name="pipeline", daemon=True)
    worker.start()
    producer = KafkaProducer(linger_ms=20, batch_size=512 << 10, **settings.kafka_client_config())
    replayer = threading.Thread(
        target=replay,
        name="replay",
        daemon=True,
        args=(producer, topic, records),
        kwargs={"rate": args.rate, "progress": False},
    )
    replayer.start()
    print(
        f"replaying {len(records)} records from {dataset}\n"
        f"broker {bootstrap} | input -> {topic} | alerts -> "
        f"{settings.alerts_topic}\nmetrics: http://{settings.metrics_host}:{port}/metrics",
        file=sys.stderr,
    )

    board = AlertBoard()
    consumer = _alerts_consumer(settings)
    page_shown = False
    tty = sys.stdout.isatty()
    last_render = 0.0
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    try:
        while not stop.is_set():
            _drain_alerts(consumer, board)
            done = processed["n"] >= len(records) and not replayer.is_alive()
            if not page_shown and pipeline.triage is not None:
                page_shown = True  # a local demo's page: its token is printed, not logged
                token = triage_token(settings)
                print(f"triage page: {pipeline.triage.url}#token={token}", file=sys.stderr)
            if time.monotonic() - last_render > 2.0 or done:
                last_render = time.monotonic()
                if tty:
                    sys.stdout.write("\x1b[2J\x1b[H")
                print(
                    f"processed {processed['n']}/{len(records)} events "
                    f"| model {pipeline.model.version}"
                )
                print(board.render(args.top), flush=True)
            if done and args.until_done:
                _drain_alerts(consumer, board, timeout_ms=1000)
                print("\nfinal ranking:\n" + board.render(args.top), flush=True)
                break
            if done and not worker.is_alive():
                break
    except KeyboardInterrupt:  # a second signal, or one before the handlers were in place
        stop.set()
    finally:
        if stop.is_set():
            print("\nstopping...", file=sys.stderr)
        restore()
        consumer.close()
        pipeline.stop()
        worker.join(timeout=30)
        producer.close()
    return 0 if board.alerts_seen > 0 else 1
