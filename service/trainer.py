"""Role `trainer`: the one process that learns, so that N scorers score with one model.

    events topic ──► decode ──► learn (counts, calibration; never from what it flags)
    alerts topic ──► group book (every scorer's alerts: any alert or group id resolves)
    feedback topic ──► analyst loop (rate limit, fine-tune, regression check)
                                  │
        every checkpoint interval, or at once after verdicts:
        model store ◄── checkpoint ──► models topic (announcement) ──► scorers hot-swap

The trainer reads the events topic in its own consumer group (its `group_id`) and commits the
offsets only once a published model was built after them, so a crash re-reads the events after
the last model, never skips them (what the hold-back still held is learned no more: at most
`learn_delay_s` of learning, see service/holdback.py). The alerts topic is read by assignment, its
offsets kept in the model's checkpoint beside the group book they built. Bad input is the
scorers' to dead-letter; the trainer dead-letters bad verdicts (it alone reads them to learn).
It also serves the triage page and the digest: its group book is the whole picture.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import orjson

from service.analyst_loop import AnalystLoop
from service.control import ControlIntake
from service.feedback_intake import FeedbackIntake
from service.groups import group_book
from service.kafka_io import KafkaIO, ensure_topics, whole_topic_consumer
from service.metrics import Metrics
from service.model_store import announce, load_model, model_store, prune
from service.outbox import Outbox
from service.procconsumer import poll_through_outage
from service.scoring import tune_torch
from service.settings import Settings
from service.shutdown import run_steps
from service.triage import TriageServer
from service.triage_wiring import AnalystFeed, start_triage

log = logging.getLogger("outrider.trainer")


class AlertFollower:
    """The alerts topic by assignment, from the offsets the last model recorded."""

    def __init__(self, settings: Settings, read: dict[int, int]) -> None:
        self.consumer = whole_topic_consumer(settings, settings.alerts_topic, "alerts", read)
        self.read = dict(read)

    def poll(self) -> list[dict[str, Any]]:
        alerts = []
        for tp, records in poll_through_outage(self.consumer, 0, 20_000).items():
            for rec in records:
                self.read[tp.partition] = rec.offset + 1
                try:
                    alert = orjson.loads(rec.value or b"")
                except orjson.JSONDecodeError:
                    log.warning("alerts topic: %s[%d]@%d is not JSON", tp.topic, tp.partition,
                                rec.offset)  # fmt: skip
                    continue
                if isinstance(alert, dict) and "group_id" in alert and "alert_id" in alert:
                    alerts.append(alert)
        return alerts

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class Trainer:
    """Learns from events, alerts and verdicts; publishes and announces models."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.store = model_store(settings)
        self.scorer, self.decoder, extra = load_model(settings, self.store)
        restored = extra or {}
        self.groups = group_book(settings, restored.get("groups"))
        self._alerts_read = {int(p): int(o) for p, o in restored.get("alerts_read", {}).items()}
        self._feedback_applied: dict[str, int] = restored.get("feedback_applied", {})
        self.feed = AnalystFeed(settings, self.groups)  # the triage page's rows, the digest
        self.stopping = threading.Event()
        self.outbox = Outbox(settings.dead_letter_topic, self.metrics)  # bad verdicts, models
        self._learned: dict[tuple[str, int], Any] = {}  # newest record learned, per partition
        self._published = self.scorer.version if restored else ""
        self._last_publish = 0.0

    def run(self) -> None:
        s, m = self.settings, self.metrics
        tune_torch(s.torch_threads)
        ensure_topics(s)
        io = KafkaIO(s, keep_trying=lambda: not self.stopping.is_set())
        alerts = AlertFollower(s, self._alerts_read)
        intake = FeedbackIntake(s, self._feedback_applied)
        loop = AnalystLoop(
            intake, self.scorer, self.groups, m, s.verdicts_per_minute, background=True
        )
        control = ControlIntake(s)
        triage: TriageServer | None = start_triage(
            s, self.groups, self.feed.snapshot, lambda: self.scorer.version
        )
        m.model_info.info({"name": self.scorer.detector_name, "version": self.scorer.version})
        log.info("training on %s, %s and %s as group %s; models to %s", s.events_topic,
                 s.alerts_topic, s.feedback_topic, s.group_id, self.store)  # fmt: skip
        self._last_publish = time.monotonic()
        failed = False
        try:
            while not self.stopping.is_set():
                records = io.poll_batch(s.batch_max_events, s.batch_max_wait_ms / 1000)
                if records:
                    self.learn(records)
                    for tp, lag in io.lag().items():  # how far the model is behind traffic
                        m.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
                self.groups.add_many(alerts.poll())
                control.apply(self.scorer)  # thresholds decide what is "flagged"; the
                # scorers dead-letter bad control records, so the trainer does not repeat them
                outcome = loop.apply()
                self.outbox.put_dead(outcome.dead)
                now = time.monotonic()
                due = now - self._last_publish >= s.checkpoint_interval_s
                if outcome.changed or (due and self._learned):
                    self.publish(io, alerts, intake)
                model = {"name": self.scorer.detector_name, "version": self.scorer.version}
                self.feed.tick(io, model, now)
                self.outbox.flush(io)
        except BaseException:
            failed = True
            raise
        finally:

            def publish_last() -> None:
                loop.finish_heads()  # a head in training is published with the last model
                if self._learned or self.scorer.version != self._published:
                    self.publish(io, alerts, intake)

            run_steps(
                [
                    publish_last,
                    *([triage.stop] if triage is not None else []),
                    alerts.close,
                    intake.close,
                    control.close,
                    lambda: self.outbox.flush(io),
                    io.close,
                ],
                failed,
            )

    def learn(self, records: list) -> None:
        """Decode and score without publishing: the model learns from what it does not flag."""
        events, _dead = self.decoder.decode_many(records)  # the scorers dead-letter these
        self.scorer.score(events)
        for r in records:
            self._learned[(r.topic, r.partition)] = r

    def publish(self, io: KafkaIO, alerts: AlertFollower, intake: FeedbackIntake) -> None:
        """A new model version: checkpoint, announce, then commit the events it learned."""
        m = self.metrics
        if self.scorer.version == self._published:  # traffic alone: a generation of its own
            self.scorer.generation += 1
        extra: dict[str, Any] = {
            "groups": self.groups.state(),
            "alerts_read": {str(p): o for p, o in alerts.read.items()},
            "feedback_applied": {str(p): o for p, o in intake.applied.items()},
        }
        if self.decoder.miner is not None:
            extra["log_miner"] = self.decoder.miner.state()
        self._last_publish = time.monotonic()
        try:
            path = self.scorer.save(self.store, extra=extra)
        except OSError as exc:
            m.checkpoints.labels("failed").inc()
            log.error("model %s not written to %s: %s", self.scorer.version, self.store, exc)
            return
        m.checkpoints.labels("ok").inc()
        announce(self.outbox, self.settings, self.scorer.detector_name, self.scorer.version, path)
        if not self.outbox.flush(io):  # kept and retried; the events stay uncommitted
            return
        self._published = self.scorer.version
        if self._learned:
            io.commit(list(self._learned.values()))
            self._learned.clear()
        m.model_info.info({"name": self.scorer.detector_name, "version": self.scorer.version})
        m.model_timestamp.set(time.time())
        prune(self.store, self.settings.keep_checkpoints)
        log.info("published model %s", self.scorer.version)

    def stop(self) -> None:
        self.stopping.set()
