"""The whole pipeline, top to bottom, in one place.

    poll a batch ──► decode ──► score ──► publish alerts / scores / dead letters
                                              │
                        commit offsets ◄── broker acknowledged every output

At-least-once: a batch's offsets are committed only after the broker acknowledged all of its
outputs; if publishing fails, the consumer rewinds to the batch start and the batch is redone
(alert ids are deterministic, so a redo never mints a second alert). Batches are settled in
order, each as soon as its outputs are acknowledged; the chain waits for batch k's
acknowledgement only after batch k+1 is scored, or, while it reads a backlog (full batches),
after batch k+`BACKLOG_IN_FLIGHT`-1, so the broker's round trip overlaps scoring instead of
stalling it (a failure rewinds to batch k's start: the batches scored after it are redone
too). Bad input goes to the dead-letter topic with its reason and never stops the loop.

Between batches: verdicts, run-time sensitivity, the digest, checkpoints. In role `all` this
process also learns from verdicts; in role `scorer` it hot-swaps to the models the trainer
(service/trainer.py) announces and scores with them frozen.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.checkpoint import CheckpointError
from detectors.streams import StreamContext
from schemas import DeadLetter, ModelRef
from service.analyst_loop import AnalystLoop
from service.control import ControlIntake
from service.feedback_intake import FeedbackIntake
from service.groups import group_book
from service.kafka_io import Delivery, KafkaIO, PublishError, ensure_topics
from service.metrics import Metrics
from service.model_store import announce, load_model, local_store, model_store
from service.outbox import Outbox, send_dead_letters
from service.outputs import build_alerts, score_records
from service.scoring import tune_torch
from service.session_stage import SessionStage
from service.sessions import SessionSpec
from service.settings import Settings
from service.shutdown import run_steps
from service.stream_stage import REASONS, StreamStage
from service.triage import TriageServer
from service.triage_wiring import AnalystFeed, start_triage
from service.views import AlertViews, traceparent

log = logging.getLogger("outrider")

BatchHook = Callable[[list, list[dict]], None]

#: How long a poll waits for records while a batch's outputs are being acknowledged.
IN_FLIGHT_WAIT_S = 0.01
#: Scored batches whose outputs may still be on their way while the chain reads a backlog.
#: In an alert storm every event is an output: the acknowledgement of a batch's 2,000
#: alerts was at times not in when the next batch was scored, and with one batch in
#: flight the chain spent 4% (200,000 events) to 33% (60,000) of a storm waiting for
#: acknowledgements with part of a core idle (bench/README.md, "In-flight window"). Caught
#: up (a batch that is not full), one batch in flight, as before: its offsets are committed
#: as soon as possible.
BACKLOG_IN_FLIGHT = 3
#: --exactly-once: the batches in flight share the output producer's open transaction and
#: are committed together, at the latest this long after the oldest of them was scored (as
#: Kafka Streams' exactly-once commit interval: readers see outputs at most this much later;
#: a transaction per batch, settled before the next batch was scored, ran at 0.55-0.70x
#: the events/s of at least once, 2026-12-05).
TRANSACTION_EVERY_S = 0.1


@dataclass(slots=True)
class InFlight:
    """A scored batch whose outputs are on their way: committed once all are acknowledged."""

    records: list
    alerts: list[dict]
    dead: list[DeadLetter]
    delivery: Delivery
    started: float  # perf_counter at the batch's start


class Pipeline:
    """One scorer process: consumes the events topic as a member of the scorer group."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.checkpoints = local_store(settings)
        self.scorer, self.decoder, restored = load_model(settings, self.checkpoints)
        # role `scorer`: learns on its own only until it first adopts the trainer's model;
        # from then on it scores with exactly the announced version (frozen between swaps)
        self.adopted = bool((restored or {}).get("adopted", False))
        self.groups = group_book(settings, (restored or {}).get("groups"))
        self.intake: FeedbackIntake | None = None  # verdicts in; started with Kafka clients
        self.loop: AnalystLoop | None = None  # learns from them (role `all`)
        self._feedback_applied: dict[str, int] = (restored or {}).get("feedback_applied", {})
        self.sessions = (
            SessionStage(
                SessionSpec(
                    key_field=settings.session_key_field,
                    key_pattern=settings.session_key_pattern or None,
                    idle_timeout_s=settings.session_idle_s,
                    max_duration_s=settings.session_max_s,
                ),
                alert_percentile=settings.alert_percentile,
            )
            if settings.session_key_field
            else None
        )
        # streams of the kinds that declare them (`streams = [source, host]`): a host's
        # steady stream that stopped, an episode without its usual mirror -> stream alerts
        # (partitions are read up to `align_partitions_s` apart: decisions that wait for other
        # streams' events wait that much longer)
        self.streams = StreamStage(
            self.scorer.config,
            lambda kind, evs: self.scorer.explain_events(kind, evs),
            lambda: StreamContext(lateness_s=settings.align_partitions_s),
        )
        for kind in self.streams.fields:  # at 0 from the start: the dashboard's series exist
            for reason in REASONS:
                self.metrics.stream_alerts.labels(kind, reason)
        if restored and "streams" in restored:
            try:
                self.streams.restore(restored["_aux"], restored["streams"],
                                     lambda recs: self.decoder.decode_many(recs)[0])  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:  # it rebuilds from traffic
                log.warning("stream history not restored: %s", exc)
        self.views = AlertViews(
            settings.alerts_topic,
            settings.findings_topic,
            settings.ecs_topic,
            source=f"urn:outrider:{settings.group_id}",
            findings_state=(restored or {}).get("findings"),
        )
        self.feed = AnalystFeed(settings, self.groups)  # page rows and digest (role `all`)
        self.triage: TriageServer | None = None
        self.control: ControlIntake | None = None  # run-time sensitivity, started in run()
        self._last_intake = 0.0
        self._lag_series: set[tuple[str, str]] = set()
        self.stopping = threading.Event()
        self.outbox = Outbox(settings.dead_letter_topic, self.metrics)  # between batches
        self.on_batch: BatchHook | None = None  # benchmarks and tests observe batches here
        self.in_flight: deque[InFlight] = deque()  # scored, outputs not yet acknowledged
        self._last_checkpoint = time.monotonic()
        if restored is None:  # make the version durable now: a redo after a crash must
            self._checkpoint()  # mint the same alert ids

    @property
    def model(self) -> ModelRef:
        return ModelRef(name=self.scorer.detector_name, version=self.scorer.version)

    def run(self) -> None:
        """Process batches until `stop()`; then finish the batch in hand, checkpoint, close."""
        s, m = self.settings, self.metrics
        ensure_topics(s)
        io = KafkaIO(s, keep_trying=lambda: not self.stopping.is_set())
        tune_gc()
        tune_torch(s.torch_threads)
        intake = FeedbackIntake(s, self._feedback_applied) if s.feedback_topic else None
        self.intake = intake
        self.control = ControlIntake(s)
        if intake is not None and s.role == "all":
            self.loop = AnalystLoop(
                intake, self.scorer, self.groups, m, s.verdicts_per_minute, background=True
            )
        self._show_model()
        log.info("scoring %s -> %s as group %s", s.events_topic, s.alerts_topic, s.group_id)
        if s.role == "all":  # split roles: the trainer's page shows every scorer's groups
            self.triage = start_triage(
                s, self.groups, self.feed.snapshot, lambda: self.model.version
            )
        failed = False
        try:
            while not self.stopping.is_set():
                # with a batch in flight, wait briefly: waiting for a full batch would hold the
                # last one's commit (and its latency) back, and kafka-python sends its next
                # fetch late when polled with no wait at all (p99 +100 ms measured)
                wait_s = IN_FLIGHT_WAIT_S if self.in_flight else s.batch_max_wait_ms / 1000
                records = io.poll_batch(s.batch_max_events, wait_s)
                if not records:  # idle: settle everything
                    keep = 0
                else:
                    self.in_flight.append(self.process(io, records))
                    # a backlog (a full batch): read on meanwhile; caught up: this batch's
                    # acknowledgement overlaps the next poll
                    keep = BACKLOG_IN_FLIGHT - 1 if len(records) >= s.batch_max_events else 1
                self.settle_in_flight(io, keep)
                self.between_batches(io)
        except BaseException:
            failed = True
            raise
        finally:
            self._shut_down(io, intake, failed)

    def _shut_down(self, io: KafkaIO, intake: FeedbackIntake | None, failed: bool) -> None:
        """Settle what is in flight, checkpoint, close (service/shutdown.py: every step runs,
        and the loop's own error stays the one the service stops with)."""

        def finish_heads() -> None:
            if self.loop is not None and self.loop.finish_heads():  # verdicts a head was
                # still training on are in the final checkpoint (else: trained after restart)
                self._show_model()

        run_steps(
            [
                lambda: self.settle_in_flight(io),
                finish_heads,
                self._checkpoint,
                *([self.triage.stop] if self.triage is not None else []),
                *([intake.close] if intake is not None else []),
                *([self.control.close] if self.control is not None else []),
                lambda: self.outbox.flush(io),
                io.close,  # a synchronous final commit
            ],
            failed,
        )

    def between_batches(self, io: KafkaIO) -> None:
        """Verdicts, the triage page's rows, the digest, the periodic checkpoint."""
        s, now = self.settings, time.monotonic()
        if now - self._last_intake >= 0.1:  # verdicts and control: 10 polls a second at most
            self._last_intake = now
            self.follow_topics(io)
        if s.role == "all":  # split roles: the trainer's page and digest show every scorer's
            self.feed.tick(io, self.model.model_dump(), now)
        if now - self._last_checkpoint >= s.checkpoint_interval_s:
            self._checkpoint()
        self.outbox.flush(io)

    def follow_topics(self, io: KafkaIO) -> None:
        """Verdicts from the feedback topic; sensitivity and models from the models topic."""
        if self.intake is not None:
            self.learn_from_analysts(io)
        if self.control is not None:
            self.outbox.put_dead(self.control.apply(self.scorer))
            if self.settings.role == "scorer":
                self.follow_trainer(io)

    def learn_from_analysts(self, io: KafkaIO) -> None:
        """Between batches: apply new verdicts; a changed model is checkpointed and announced
        on the models topic (compacted, keyed by model name) before the next batch. In role
        `scorer` the trainer learns (and dead-letters bad verdicts); verdicts here only close
        the OCSF findings this scorer opened."""
        assert self.intake is not None
        if self.loop is not None:
            outcome = self.loop.apply(before_learning=lambda: self.settle_in_flight(io))
            changed, resolved, dead = outcome.changed, outcome.resolved, outcome.dead
        else:
            verdicts, _ = self.intake.poll()
            changed, resolved, dead = False, [v.feedback for v in verdicts if v.live], []
        self.outbox.put_dead(dead)
        for fb in resolved:  # a verdict closes the group's OCSF finding
            for topic, key, value, headers in self.views.close(fb):
                self.outbox.put(topic, value, key=key, headers=headers)
        if changed:
            path = self._checkpoint()
            if path is not None:
                announce(self.outbox, self.settings, self.model.name, self.model.version, path)
            self._show_model()

    def follow_trainer(self, io: KafkaIO) -> None:
        """Role `scorer`: hot-swap to the newest model the trainer announced, between batches;
        a model that fails its checks is refused and the current one stays."""
        assert self.control is not None
        announced = self.control.announced
        if announced is None or announced.version == self.scorer.version:
            return
        self.control.announced = None  # tried once; the next announcement tries again
        self.settle_in_flight(io)  # its alert ids name the version about to be replaced
        try:
            self.scorer.adopt(model_store(self.settings), announced.version, announced.sha256)
        except (CheckpointError, OSError) as exc:
            self.metrics.model_swaps.labels("refused").inc()
            log.error("model %s refused, still scoring with %s: %s", announced.version,
                      self.scorer.version, exc)  # fmt: skip
            return
        self.adopted = True
        # this scorer's groups, ranked by what the adopted model knows of the verdicts (its
        # alerts' group_rank then agrees with the trainer's page)
        self.scorer.rescore_book(self.groups)
        self.metrics.model_swaps.labels("ok").inc()
        self._show_model()
        self.metrics.model_timestamp.set(announced.created_at)
        log.info("hot-swapped to model %s", self.scorer.version)
        self._checkpoint()  # a restart resumes with this version

    def process(self, io: KafkaIO, records: list) -> InFlight:
        """One batch through the chain up to handing its outputs over; `settle` commits it."""
        s, m = self.settings, self.metrics
        started = time.perf_counter()
        for topic, n in Counter(r.topic for r in records).items():
            m.events_consumed.labels(topic).inc(n)
        m.batch_size.observe(len(records))

        # decode: every record becomes an event or a dead letter
        events, dead = self.decoder.decode_many(records)

        # score: calibrated percentiles; explanations for the flagged; learn from the rest
        t0 = time.perf_counter()
        scored = self.scorer.score(events, learn=not self.adopted)
        m.scoring_seconds.observe(time.perf_counter() - t0)

        # publish: alerts (keyed by group, so a group stays on one partition) and their OCSF /
        # ECS views, scores, dead letters
        model = self.model
        alerts: list[dict] = []
        for part in scored:
            m.events_scored.labels(part.kind).inc(len(part.events))
            # at 0 from the kind's first batch: a series that appears only with a flood
            # would read as "no data" on the dashboard until then
            m.calibration_flood_scores.labels(part.kind).inc(part.flood_scores)
            pct = part.percentiles[~np.isnan(part.percentiles)] / 100.0
            m.observe_many(m.score_percentile.labels(part.kind), pct)
            alerts.extend(build_alerts(part, model))
            if s.scores_topic:
                for value in score_records(part, model):
                    io.send(s.scores_topic, value)
        if self.sessions is not None:  # sessions that closed unusual become session alerts
            alerts.extend(self.sessions.process(events, model))
        stream_records: list = []
        if self.streams.fields:  # events whose stream context was confirmed: stream alerts
            found = self.streams.process(scored, model)
            for alert in found:
                m.stream_alerts.labels(alert["kind"], alert["attributes"]["stream_context"]
                                       ["reason"]).inc()  # fmt: skip
            alerts.extend(found)
            stream_records = self.streams.records  # some came in earlier batches
        self.groups.add_many(alerts)  # fold into groups, then stamp each with its rank now
        ranks = {gid: self.groups.rank_of(gid) for gid in {a["group_id"] for a in alerts}}
        for alert in alerts:
            alert["group_rank"] = ranks[alert["group_id"]]
        traces = trace_contexts([*records, *stream_records]) if alerts else {}
        for topic, key, value, headers in self.views.render(alerts, traces):
            io.send(topic, value, key=key, headers=headers)
        send_dead_letters(io, s.dead_letter_topic, dead)

        return InFlight(records, alerts, dead, io.hand_over(), started)

    def settle_in_flight(self, io: KafkaIO, keep: int = 0) -> bool:
        """Settle the batches in flight, oldest first: every one already acknowledged, and
        then, waiting for their acknowledgement, until at most `keep` are left. Every batch
        before the model version changes between batches (keep 0): a crash must not redo a
        batch under a version other than the one its published alert ids name (they would
        not match: a second alert). False = a batch was not acknowledged: it and every batch
        after it are redone (see `settle`)."""
        if self.settings.exactly_once:
            return self._settle_transaction(io, keep)
        while self.in_flight:
            batch = self.in_flight[0]
            if len(self.in_flight) <= keep and not io.acknowledged(batch.delivery):
                return True
            self.in_flight.popleft()
            if not self.settle(io, batch, redo_also=list(self.in_flight)):
                self.in_flight.clear()
                return False
        return True

    def _settle_transaction(self, io: KafkaIO, keep: int) -> bool:
        """--exactly-once: every batch in flight wrote into the producer's open transaction,
        so they are settled together, by one commit of the transaction with all their
        offsets: once more than `keep` are in flight or the oldest was scored
        TRANSACTION_EVERY_S ago. False = aborted: all of them are redone."""
        if not self.in_flight or (
            len(self.in_flight) <= keep
            and time.perf_counter() - self.in_flight[0].started < TRANSACTION_EVERY_S
        ):
            return True
        batches = list(self.in_flight)
        self.in_flight.clear()
        try:
            for batch in batches:
                io.await_acks(batch.delivery)
            io.commit([r for b in batches for r in b.records])
        except PublishError as exc:
            self._redo(io, batches, exc)
            return False
        for batch in batches:
            self._account(io, batch, committed=True)
        return True

    def _redo(self, io: KafkaIO, batches: Sequence[InFlight], exc: PublishError) -> None:
        """Rewind over batches whose outputs were not acknowledged (or not committed)."""
        self.metrics.publish_failures.inc()
        log.error("outputs not acknowledged, redoing the batch: %s", exc)
        io.rewind([r for b in batches for r in b.records])
        self.streams.resend([a for b in batches for a in b.alerts])

    def settle(self, io: KafkaIO, batch: InFlight, redo_also: Sequence[InFlight] = ()) -> bool:
        """Commit `batch` once the broker acknowledged every output of it, then account for
        it. False = not acknowledged: the consumer rewinds to the batch's start (and over
        `redo_also`, the batches scored after it), so all are redone."""
        try:
            io.await_acks(batch.delivery)
        except PublishError as exc:
            self._redo(io, [batch, *redo_also], exc)
            return False
        self._account(io, batch, committed=io.commit(batch.records))
        return True

    def _account(self, io: KafkaIO, batch: InFlight, committed: bool) -> None:
        """Metrics and the batch hook for a batch whose outputs are durable."""
        m, records, alerts = self.metrics, batch.records, batch.alerts
        m.commits.labels("ok" if committed else "rebalanced").inc()

        # account only for what is now durable
        done = time.time()
        for dl in batch.dead:
            m.dead_letters.labels(dl.reason.value).inc()
        # per label set at once: an alert storm is thousands of alerts of few label sets
        for (kind, severity), n in Counter((a["kind"], a["severity"]) for a in alerts).items():
            m.alerts.labels(kind, severity).inc(n)
        confidences: dict[str, list[float]] = {}
        for a in alerts:
            confidences.setdefault(a["kind"], []).append(a["confidence_score"] / 100)
        for kind, values in confidences.items():
            m.observe_many(m.alert_confidence.labels(kind), np.asarray(values))
        stamps = np.fromiter((r.timestamp or 0 for r in records), np.float64, len(records))
        stamps = stamps[stamps > 0] / 1000.0
        if len(stamps):
            m.observe_many(m.end_to_end_seconds, np.maximum(done - stamps, 0.0))
            m.last_processed.set(float(stamps.max()))
        lags = {(tp.topic, str(tp.partition)): lag for tp, lag in io.lag().items()}
        for labels in self._lag_series - lags.keys():  # partitions a rebalance took away
            m.consumer_lag.remove(*labels)
        for labels, lag in lags.items():
            m.consumer_lag.labels(*labels).set(lag)
        self._lag_series = set(lags)
        m.batch_seconds.observe(time.perf_counter() - batch.started)
        if self.on_batch is not None:
            self.on_batch(records, alerts)

    def _show_model(self) -> None:
        """The model this process scores with, on the `outrider_model_info` metric."""
        self.metrics.model_info.info({"name": self.model.name, "version": self.model.version})

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and exit (safe from a signal handler)."""
        self.stopping.set()

    def _checkpoint(self) -> Path | None:
        self._last_checkpoint = time.monotonic()
        extra: dict = {"groups": self.groups.state()}
        if self.views.findings is not None:
            extra["findings"] = self.views.findings.state()
        if self.intake is not None:
            extra["feedback_applied"] = {str(p): o for p, o in self.intake.applied.items()}
        if self.adopted:
            extra["adopted"] = True
        if self.decoder.miner is not None:
            extra["log_miner"] = self.decoder.miner.state()
        stream_arrays, extra["streams"] = self.streams.state()
        try:
            path = self.scorer.save(self.checkpoints, extra=extra, arrays=stream_arrays)
            self.metrics.checkpoints.labels("ok").inc()
            if self.settings.role == "all":  # a scorer's model dates from its announcement
                self.metrics.model_timestamp.set(time.time())
            return path
        except OSError as exc:
            self.metrics.checkpoints.labels("failed").inc()
            log.error("checkpoint to %s failed: %s", self.checkpoints, exc)
            return None


def trace_contexts(records: list) -> dict[tuple[str, int, int], bytes]:
    """W3C trace context of the records that carry one, by origin."""
    out = {}
    for r in records:
        if r.headers:
            trace = traceparent(r.headers)
            if trace is not None:
                out[(r.topic, r.partition, r.offset)] = trace
    return out


def tune_gc() -> None:
    """Keep the cyclic GC off the hot path: freeze the long-lived start-up heap and collect
    young objects less often. Batches allocate many short-lived, acyclic objects (records,
    dicts, events) that reference counting frees anyway; default thresholds made the collector
    rescan them thousands of times per second (measured: validation 2x slower)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
