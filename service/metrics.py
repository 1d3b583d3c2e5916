"""Every Prometheus metric Outrider exports, in one place.

Names are under `outrider_`, in base units (counters end `_total`, durations `_seconds`), and
labels are bounded (topic, partition, event kind, reason, severity, outcome; never an entity
value). Each metric's comment says what to do when it moves. A `Metrics` owns its own
`CollectorRegistry`, so tests and several pipelines in one process never collide.
"""

from __future__ import annotations

import platform
from importlib import metadata

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

from schemas.feedback import Verdict

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000)


class Metrics:
    """The service's metrics, registered in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Input rate; flat while lag grows = the scorer is stuck or too slow: scale out.
        self.events_consumed = Counter(
            "outrider_events_consumed_total",
            "Records read from the events topic.",
            ["topic"],
            registry=r,
        )
        # Events that passed validation and were scored, per kind.
        self.events_scored = Counter(
            "outrider_events_scored_total", "Events scored.", ["kind"], registry=r
        )
        # Bad input by reason; a spike = a producer changed its format: read the dead letters.
        self.dead_letters = Counter(
            "outrider_dead_letters_total",
            "Records sent to the dead-letter topic.",
            ["reason"],
            registry=r,
        )
        # Alerts by kind and severity; a flood = drift or an attack: check the triage page.
        self.alerts = Counter(
            "outrider_alerts_total", "Alerts published.", ["kind", "severity"], registry=r
        )
        # Stream alerts (service/stream_stage.py) by kind and reason (silence: a host's steady
        # stream stopped just before; mirror: an episode without its usual mirror host).
        self.stream_alerts = Counter(
            "outrider_stream_alerts_total",
            "Stream alerts raised (also counted in outrider_alerts_total).",
            ["kind", "reason"],
            registry=r,
        )
        # Alert-flood scores kept out of the percentile sample (an alert episode's alerts
        # past the calibration's flood cap): rising = one pattern is alerting in bulk now.
        self.calibration_flood_scores = Counter(
            "outrider_calibration_flood_scores_total",
            "Scores of alert floods the calibration left out of its sample.",
            ["kind"],
            registry=r,
        )
        # Calibrated percentile of every scored event per kind; mass moving up = drift or an
        # attack wave (more of the traffic looks unusual than the calibration expects).
        self.score_percentile = Histogram(
            "outrider_score_percentile_ratio",
            "Calibrated percentile of scored events / 100.",
            ["kind"],
            buckets=(0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0),
            registry=r,
        )
        # Confidence of alerts per kind; low = a young model or a new kind: expect noise.
        self.alert_confidence = Histogram(
            "outrider_alert_confidence_ratio",
            "Confidence of published alerts (confidence_score / 100).",
            ["kind"],
            buckets=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
            registry=r,
        )
        # Batch fill; always at the maximum = the scorer is behind (see lag).
        self.batch_size = Histogram(
            "outrider_batch_size_events",
            "Records per processed batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        # Model time per batch; growing = model or vocabulary too big, or CPU contention.
        self.scoring_seconds = Histogram(
            "outrider_scoring_seconds",
            "Time to score (and learn from) one batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Whole-batch time from poll to commit.
        self.batch_seconds = Histogram(
            "outrider_batch_seconds",
            "Time to process one batch, poll to commit.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Record timestamp to outputs acknowledged; p99 above a few seconds = behind.
        self.end_to_end_seconds = Histogram(
            "outrider_end_to_end_latency_seconds",
            "From the input record's timestamp to its outputs being acknowledged.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Records behind the end of each partition; growing = add scorers (up to partitions).
        self.consumer_lag = Gauge(
            "outrider_consumer_lag_events",
            "Records not yet processed, per partition.",
            ["topic", "partition"],
            registry=r,
        )
        # Offset commits by outcome; failures = rebalances or broker trouble (work is redone).
        self.commits = Counter(
            "outrider_offset_commits_total", "Offset commits.", ["outcome"], registry=r
        )
        # Output publish failures; the batch is retried, nothing is committed past it.
        self.publish_failures = Counter(
            "outrider_publish_failures_total",
            "Batches whose outputs the broker refused.",
            registry=r,
        )
        # Time of the last processed record; stale while input flows = the scorer is stuck.
        self.last_processed = Gauge(
            "outrider_last_processed_timestamp_seconds",
            "Kafka timestamp of the newest record processed.",
            registry=r,
        )
        # Which model scores now; changes on every hot swap.
        self.model_info = Info("outrider_model", "The model that scores events.", registry=r)
        # Which build runs; pair with the model info when a behaviour changes.
        self.build_info = Info("outrider_build", "The Outrider build.", registry=r)
        self.build_info.info({"version": _version(), "python": platform.python_version()})
        # Analyst verdicts by verdict; none for days = the loop is not used (check the page).
        self.verdicts = Counter(
            "outrider_verdicts_total", "Analyst verdicts received.", ["verdict"], registry=r
        )
        for verdict in Verdict:  # a bounded set: every series exists (at 0) from the start
            self.verdicts.labels(verdict.value)
        # Fine-tunes from verdicts; each starts a model generation (see outrider_model_info).
        self.fine_tunes = Counter(
            "outrider_fine_tunes_total",
            "Model generations started by analyst verdicts.",
            registry=r,
        )
        # False-positive verdicts: the detector's mistakes; rising = retune the threshold.
        self.detector_mistakes = Counter(
            "outrider_detector_mistakes_total",
            "Verdicts calling an alert a false positive.",
            registry=r,
        )
        # Checkpoints written by outcome; failures = the checkpoint store is full or unwritable.
        self.checkpoints = Counter(
            "outrider_checkpoints_total", "Model checkpoints written.", ["outcome"], registry=r
        )
        # Hot swaps to the trainer's models by outcome; "refused" = a checkpoint failed its
        # checksum or did not load (the scorer keeps its model: check the store and the trainer).
        self.model_swaps = Counter(
            "outrider_model_swaps_total",
            "Scorer hot swaps to an announced model.",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "refused"):
            self.model_swaps.labels(outcome)
        # Fine-tunes rolled back because they ranked the earlier verdicts worse; rising = the
        # analysts disagree with each other (or with themselves): read the verdicts' notes.
        self.fine_tune_rollbacks = Counter(
            "outrider_fine_tune_rollbacks_total",
            "Fine-tunes not published: they made the held-out verdicts rank worse.",
            registry=r,
        )
        # Time of the newest model this process scores with or published (trainer); stale
        # while verdicts or traffic flow = the trainer is down or cannot write the store.
        self.model_timestamp = Gauge(
            "outrider_model_timestamp_seconds",
            "When the model in use was made (Unix time).",
            registry=r,
        )

    @staticmethod
    def observe_many(histogram: Histogram, values: np.ndarray) -> None:
        """Observe a batch of values at once: one bucket pass in numpy instead of one locked
        `observe` per record (per-record observes cost more than decoding the record). Uses
        the client's bucket layout (`_upper_bounds`, `_buckets`, `_sum`); falls back to plain
        observes should a client version change it."""
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return
        bounds = getattr(histogram, "_upper_bounds", None)
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(histogram, "_sum", None)
        if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
            for v in values.tolist():
                histogram.observe(v)
            return
        # bucket i holds values in (bounds[i-1], bounds[i]]; the last bound is +Inf
        idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left")
        counts = np.bincount(idx, minlength=len(bounds))
        for bucket, n in zip(buckets, counts.tolist(), strict=False):
            if n:
                bucket.inc(n)
        total.inc(float(values.sum()))

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose /metrics over HTTP; returns the bound port (0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])


def _version() -> str:
    try:
        return metadata.version("outrider")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"
