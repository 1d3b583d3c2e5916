"""The `outrider` command: serve, replay, demo, alerts.

Every setting is a flag with an `OUTRIDER_*` environment twin; flags win over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.logsetup import configure_logging
from service.settings import Settings

log = logging.getLogger("outrider")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (each also as OUTRIDER_<NAME>)")
    for name, info in Settings.model_fields.items():
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=f"setting_{name}",
            default=None,
            metavar="V",
            help=info.description or f"default: {info.default!r}",
        )


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    given = {
        k.removeprefix("setting_"): v
        for k, v in vars(args).items()
        if k.startswith("setting_") and v is not None
    }
    return Settings(**{**given, **overrides})


def has_bootstrap(settings: Settings, command: str, hint: str = "") -> bool:
    """False (after saying what is missing) when a command that talks to Kafka has no
    bootstrap address; only `outrider demo` starts a broker of its own."""
    if settings.kafka_bootstrap:
        return True
    print(f"outrider {command} needs --kafka-bootstrap (or OUTRIDER_KAFKA_BOOTSTRAP){hint}",
          file=sys.stderr)  # fmt: skip
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    from service.app import Pipeline
    from service.trainer import Trainer

    settings = settings_from(args)
    if not has_bootstrap(settings, "serve", "; `outrider demo` starts a local broker for you"):
        return 2
    from service.kafka_io import StartupError, wait_for_broker

    try:
        wait_for_broker(settings, settings.startup_timeout_s)
    except StartupError as exc:
        print(f"outrider serve: {exc}", file=sys.stderr)
        return 2
    pipeline: Pipeline | Trainer = (
        Trainer(settings) if settings.role == "trainer" else Pipeline(settings)
    )
    port = pipeline.metrics.serve(settings.metrics_port, settings.metrics_host)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    signal.signal(signal.SIGTERM, lambda *_: pipeline.stop())
    signal.signal(signal.SIGINT, lambda *_: pipeline.stop())
    pipeline.run()
    return 0


def cmd_pinned(args: argparse.Namespace, settings: Settings) -> int:
    """`replay --model-version V`: re-score a file or topic with a stored, frozen model."""
    import orjson

    from service.pinned import (
        PinnedVersionError,
        file_records,
        pinned_scorer,
        rescore,
        topic_records,
    )

    try:
        scorer, decoder = pinned_scorer(settings, args.model_version)
    except PinnedVersionError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if args.from_topic:
        records = topic_records(settings, args.from_topic)
    else:
        records = file_records(args.file, settings.logs_topic)
    out = args.output.open("wb") if args.output else sys.stdout.buffer
    n = 0
    try:
        for alert in rescore(scorer, decoder, records):
            out.write(orjson.dumps(alert) + b"\n")
            n += 1
    finally:
        if args.output:
            out.close()
    print(f"{n} alerts from model {scorer.version} (pinned, nothing learned)", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from service.replay import is_raw_lines, read_records, replay

    settings = settings_from(args)
    if args.model_version:
        if not args.from_topic and args.file is None:
            print("replay --model-version needs a FILE or --from-topic", file=sys.stderr)
            return 2
        return cmd_pinned(args, settings)
    if not settings.kafka_bootstrap or args.file is None:
        print("outrider replay needs FILE and --kafka-bootstrap (or OUTRIDER_KAFKA_BOOTSTRAP)",
              file=sys.stderr)  # fmt: skip
        return 2
    records = read_records(args.file, order=args.order)
    if args.limit:
        records = records[: args.limit]
    # raw log lines go to the logs topic, structured records to the events topic
    default_topic = settings.logs_topic if is_raw_lines(records) else settings.events_topic
    producer = KafkaProducer(
        linger_ms=20, batch_size=512 << 10, acks="all", **settings.kafka_client_config()
    )
    try:
        n = replay(
            producer,
            args.topic or default_topic,
            records,
            rate=args.rate,
            speed=args.speed,
            source=args.source,
            progress=not args.quiet,
        )
    finally:
        producer.close()
    print(f"replayed {n} records from {args.file}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.demo import run_demo

    return run_demo(args, settings_from)


def cmd_alerts(args: argparse.Namespace) -> int:
    from service.demo import print_top_alerts

    settings = settings_from(args)
    if not has_bootstrap(settings, "alerts"):
        return 2
    print(print_top_alerts(settings, args.top, args.wait))
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from service.labels import label_command

    settings = settings_from(args)
    if not has_bootstrap(settings, "label"):
        return 2
    verdict = args.verdict or ("malicious" if args.malicious else "benign")
    try:
        fb = label_command(
            settings.kafka_client_config(),
            settings.feedback_topic,
            args.target,
            verdict,
            args.note,
            args.analyst,
        )
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{fb.verdict.value} on {fb.target_id} -> {settings.feedback_topic}")
    return 0


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Publish a run-time alert threshold change; every scorer applies it between batches."""
    import time

    import orjson
    from kafka import KafkaProducer
    from pydantic import ValidationError

    from schemas.models import SensitivityUpdate

    settings = settings_from(args)
    if not has_bootstrap(settings, "sensitivity"):
        return 2
    try:
        kinds = dict(_kind_percentile(k) for k in args.kind)
        update = SensitivityUpdate(alert_percentile=args.percentile, kinds=kinds,
                                   analyst=args.analyst, time=time.time())  # fmt: skip
    except (ValueError, ValidationError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    producer = KafkaProducer(acks="all", **settings.kafka_client_config())
    try:
        producer.send(settings.models_topic, key=b"sensitivity",
                      value=orjson.dumps(update.model_dump())).get(timeout=30)  # fmt: skip
    finally:
        producer.close()
    print(f"sensitivity -> {settings.models_topic}: {update.model_dump_json()}")
    return 0


def _kind_percentile(text: str) -> tuple[str, float]:
    kind, sep, pct = text.partition("=")
    if not sep:
        raise ValueError(f"--kind takes KIND=PERCENTILE, got {text!r}")
    return kind, float(pct)


def default_dataset() -> Path | None:
    """The shared AIT sample the demo replays, if this checkout sits beside shared/."""
    env = os.environ.get("OUTRIDER_DATA")
    roots = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    roots += [here.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"]
    for root in roots:
        candidate = root / "ait-ads" / "russellmitchell_alerts.csv.gz"
        if candidate.exists():
            return candidate
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="outrider", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the scoring service")
    _add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    rep = sub.add_parser("replay", help="publish a capture file to a topic")
    rep.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="AIT CSV, Zeek TSV, JSON lines, or raw log lines (.gz ok)",
    )
    rep.add_argument("--topic", help="default: the events topic (the logs topic for raw lines)")
    rep.add_argument("--rate", type=float, default=0.0, help="records/s; 0 = as fast as possible")
    rep.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="pace by recorded time at this multiple (e.g. 60); 0 = off",
    )
    rep.add_argument("--order", choices=["auto", "time", "file"], default="auto")
    rep.add_argument("--limit", type=int, default=0, help="only the first N records")
    rep.add_argument("--source", help="name the source mapping (header outrider-source)")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.add_argument(
        "--model-version",
        help="instead of publishing: re-score FILE (or "
        "--from-topic) with this stored model version, frozen; alerts as JSON lines",
    )
    rep.add_argument("--from-topic", help="with --model-version: re-score this topic")
    rep.add_argument("--output", type=Path, help="with --model-version: write alerts here")
    _add_settings_flags(rep)
    rep.set_defaults(func=cmd_replay)

    demo = sub.add_parser("demo", help="local broker + service + a real sample, alerts live")
    demo.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="capture to replay (default: the shared AIT russellmitchell alerts)",
    )
    demo.add_argument("--rate", type=float, default=0.0, help="replay rate; 0 = max")
    demo.add_argument("--limit", type=int, default=0)
    demo.add_argument("--top", type=int, default=10, help="groups shown")
    demo.add_argument(
        "--until-done",
        action="store_true",
        help="exit once every replayed record is processed (scripts, CI)",
    )
    _add_settings_flags(demo)
    demo.set_defaults(func=cmd_demo)

    label = sub.add_parser("label", help="send a verdict on an alert or group id")
    label.add_argument("target", help="alert id or group id")
    which = label.add_mutually_exclusive_group(required=True)
    which.add_argument("--malicious", action="store_true", help="true_positive")
    which.add_argument("--benign", action="store_true", help="benign_positive")
    which.add_argument("--verdict", help="any verdict of the vocabulary, e.g. false_positive")
    label.add_argument("--note", default="", help="the analyst's comment")
    label.add_argument("--analyst", default=os.environ.get("USER", "analyst"))
    _add_settings_flags(label)
    label.set_defaults(func=cmd_label)

    sens = sub.add_parser("sensitivity", help="change alert thresholds at run time")
    sens.add_argument("--percentile", type=float, help="the global alert percentile")
    sens.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND=PCT",
        help="a kind's alert percentile, e.g. ids_alert=99.5 (repeatable)",
    )
    sens.add_argument("--analyst", default=os.environ.get("USER", "analyst"))
    _add_settings_flags(sens)
    sens.set_defaults(func=cmd_sensitivity)

    alerts = sub.add_parser("alerts", help="print the top alert groups from the alerts topic")
    alerts.add_argument("--top", type=int, default=10)
    alerts.add_argument("--wait", type=float, default=5.0, help="seconds to read the topic")
    _add_settings_flags(alerts)
    alerts.set_defaults(func=cmd_alerts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        level = settings_from(args).log_level
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(level)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
