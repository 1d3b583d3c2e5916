"""One frozen settings object, from `OUTRIDER_*` environment variables and CLI flags.

Every CLI flag has an environment twin (bytewax's habit): `--batch-max-events 500` and
`OUTRIDER_BATCH_MAX_EVENTS=500` mean the same. Settings are passed down explicitly; no module
reads the environment on its own.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.redact import redact
from service.sources import DetectorName


class Settings(BaseSettings):
    """Everything an operator can set."""

    model_config = SettingsConfigDict(env_prefix="OUTRIDER_", frozen=True, extra="forbid")

    # -- Kafka ----------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="", description="host:port[,host:port]; empty = start a local broker (demo)"
    )
    client_id: str = "outrider"
    group_id: str = Field(default="outrider-scorer", description="consumer group of scorers")
    events_topic: str = "outrider.events"
    alerts_topic: str = "outrider.alerts"
    logs_topic: str = Field(
        default="outrider.logs", description="raw log lines (template-mined); empty = off"
    )
    scores_topic: str = Field(default="", description="every event's score; empty = off")
    findings_topic: str = Field(
        default="outrider.findings",
        description="OCSF 1.x Detection Findings, one per alert group; empty = off",
    )
    ecs_topic: str = Field(default="", description="ECS alert documents; empty = off")
    dead_letter_topic: str = "outrider.dead-letter"
    feedback_topic: str = "outrider.feedback"
    models_topic: str = "outrider.models"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None

    # -- the chain ------------------------------------------------------------------------
    role: Literal["all", "scorer", "trainer"] = Field(
        default="all",
        description="all: one process does everything; scorer: scores events and hot-swaps "
        "to the trainer's models (run N in one group); trainer: learns from events, alerts "
        "and verdicts, publishes models, serves the triage page (run one)",
    )
    consumer_client: Literal["kafka-python", "librdkafka"] = Field(
        default="kafka-python",
        description="which client reads the events: kafka-python (parses records in "
        "Python) or librdkafka via confluent-kafka (in C; the pipeline measured 1.1-1.35x the "
        "default kafka-python child process, "
        "bench/README.md)",
    )
    consumer_process: bool = Field(
        default=True,
        description="with kafka-python: consume in a child process, so its record parsing "
        "runs beside scoring instead of taking turns with it (service/procconsumer.py); "
        "false = in the service's own process",
    )
    exactly_once: bool = Field(
        default=False,
        description="each batch's outputs and the offsets of the events they came from are "
        "committed in one Kafka transaction, so readers with isolation.level=read_committed "
        "see every output once, even across a crash (without it: at least once, with a "
        "redone batch's alerts under the same ids); needs --consumer-client librdkafka "
        "(kafka-python cannot put consumer offsets in a transaction); the batches in flight "
        "commit together at least every 100 ms",
    )
    transactional_id: str = Field(
        default="",
        description="with exactly_once: this process's transactional id, the same across "
        "its restarts (a restart then fences its predecessor's open transaction at once) and "
        "distinct between scorers; empty = <group_id>.<client_id>.<host name>",
    )
    align_partitions_s: float = Field(
        default=600.0,
        ge=0,
        description="while catching up on a backlog: partitions more "
        "than this far ahead (record time) of the slowest one behind its end wait for it, so "
        "the model does not learn one partition's future before scoring another's past "
        "(service/timealign.py; at most the learning delay by default); 0 = off",
    )
    output_compression: Literal["none", "gzip", "lz4"] = Field(
        default="lz4",
        description="compression of every output record batch (alerts, findings, scores, dead "
        "letters): alert storms are thousands of alike 1.5 KB JSON records, and lz4 made a "
        "storm's pipeline a fifth faster on our 2 cores (bench/README.md); readers need the codec "
        "(kafka-python: the lz4 package, a dependency here; librdkafka and Java have it)",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="how long the broker may hold an events fetch that found nothing new; a "
        "client has one fetch in flight per broker, so a partition at its end held the next "
        "fetch of the others (Kafka's 500 ms default: the aligned consumer read 102-116k "
        "records/s, at 100 ms 138-144k, bench/README.md); lower = more requests when idle",
    )
    batch_max_events: int = Field(default=2000, ge=1, le=100_000)
    batch_max_wait_ms: int = Field(default=100, ge=1, le=60_000)
    max_message_bytes: int = Field(
        default=256 * 1024, ge=1024, description="larger input records are dead-lettered"
    )
    sources_config: Path | None = Field(
        default=None, description="TOML of kinds and source mappings; empty = packaged default"
    )

    # -- the model ------------------------------------------------------------------------
    detector: DetectorName = Field(
        default="frequency",
        description="for kinds whose config names no detector: frequency = per-field rarity "
        "with co-occurrence explanations (default; best measured on AIT, BGL and Zeek); "
        "outrider = rarity + time context; outrider+ape = that + entity embeddings (APE, "
        "Chen et al. 2016); ape = entity embeddings alone; devnet = APE + a DevNet head that "
        "analysts' verdicts train (Pang et al. 2019, the AnoOnly way)",
    )
    model_max_values: int = Field(
        default=100_000,
        ge=100,
        description="per kind and entity type: values the model keeps counts of (the "
        "least seen are forgotten past it; new addresses and ports never stop coming)",
    )
    model_max_pairs: int = Field(
        default=100_000,
        ge=100,
        description="per kind and pair of entity types: value pairs counted for the "
        "explanations (frequency and outrider), bounded as the values are",
    )
    ape_train_steps_per_event: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="APE's training budget as a stream: NCE minibatches (512 events, ~8 ms "
        "each on one CPU core) per learned event, drawn from a window of recent traffic; "
        "0 = every learned batch trained 10 passes (~150 us per event on CPU)",
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="CPU threads of torch's kernels (APE, DevNet; the head's training too): "
        "0 = one fewer than the cores, at least 1, so the chain's thread and the consumer keep "
        "a core (on our 2-core VM one thread, against torch's default of two, had the DevNet "
        "head trained a third sooner and scored batches an eighth faster: bench/README.md)",
    )
    alert_percentile: float = Field(default=99.0, ge=0, le=100)
    calibration_window: int = Field(
        default=20_000,
        ge=100,
        description="recent raw scores per kind for percentiles (mean age: this many scores)",
    )
    calibration_min_samples: int = Field(
        default=1000, ge=1, description="scores seen per kind before any alert is raised"
    )
    learn_delay_s: float = Field(
        default=600.0,
        ge=0,
        description="traffic is learned this late (event time), minus "
        "patterns that alerted meanwhile, so an attack does not teach the model it is normal",
    )
    learn_hold_max_events: int = Field(
        default=200_000,
        ge=0,
        description="per kind; beyond it the oldest held events are "
        "learned early (bounds memory at high rates)",
    )
    session_key_field: str = Field(
        default="",
        description="session view: entity/attribute holding the session key; "
        "empty = off (e.g. 'message' with the pattern below for HDFS blocks)",
    )
    session_key_pattern: str = Field(
        default="",
        description="regex whose matches in the key field are session keys "
        r"(e.g. blk_-?\d+); empty = the field's whole value",
    )
    session_idle_s: float = Field(default=300.0, gt=0, description="event-time idle timeout")
    session_max_s: float = Field(default=3600.0, gt=0, description="longest session")
    state_dir: Path = Field(
        default=Path("outrider-state"), description="checkpoint store and local state"
    )
    checkpoint_interval_s: float = Field(
        default=60.0, gt=0, description="local state saved; the trainer publishes a model"
    )
    keep_checkpoints: int = Field(
        default=100, ge=2, description="the trainer keeps this many newest models in the store"
    )

    # -- analysts -------------------------------------------------------------------------
    digest_topic: str = Field(
        default="outrider.digest", description="periodic top groups + ask-about; empty = off"
    )
    digest_interval_s: float = Field(default=30.0, gt=0)
    group_diversity: float = Field(
        default=2.0,
        ge=0,
        description="how strongly alert groups like one ranked above them "
        "(same entities, same hours) wait: time-aware MMR; 0 = rank by score alone",
    )
    group_cofire_s: float = Field(
        default=5.0,
        ge=0,
        description="alert groups firing within this many seconds of a group ranked above "
        "them on the same --group-cofire-fields value wait, as one action seen by several "
        "rules; 0 = off",
    )
    group_cofire_fields: str = Field(
        default="host",
        description="comma-separated entity types two co-firing groups must share a value of",
    )
    feedback_weight: float = Field(
        default=1.0, ge=0, description="how strongly verdicts move look-alikes' scores"
    )
    verdict_lift_weight: float = Field(
        default=0.0,
        ge=0,
        description="a malicious verdict lifts unread groups sharing its pattern's entity "
        "values by this x their specificity; 0 = only the time lift below (measured best: "
        "bench/README.md)",
    )
    verdict_sink_min_fields: int = Field(
        default=2,
        ge=1,
        description="a benign verdict sinks unread groups sharing at least this many of its "
        "entity values at once (2: 'this rule on this host', not the rule everywhere)",
    )
    verdict_time_weight: float = Field(
        default=3.0,
        ge=0,
        description="a malicious verdict lifts the unread groups on its --verdict-time-field "
        "value (the same host) by this x the share of their alerts near the confirmed ones; "
        "0 = off",
    )
    verdict_time_scale_s: float = Field(
        default=600.0, gt=0, description="how fast that lift fades with time apart (e-folding)"
    )
    verdict_time_field: str = Field(
        default="host",
        description="entity type naming where an attack is confirmed; kinds without it get "
        "no time lift",
    )
    verdicts_per_minute: float = Field(
        default=60.0,
        gt=0,
        description="per analyst; beyond it (burst: one minute's worth) "
        "verdicts are dead-lettered as rate_limited",
    )
    triage_host: str = Field(default="127.0.0.1", description="triage page; loopback default")
    triage_port: int = Field(default=8765, ge=-1, le=65535, description="-1 = off, 0 = any")
    triage_token: SecretStr | None = Field(
        default=None,
        description="bearer token of the triage page and label API; unset = "
        "generated at start and written to <state_dir>/triage-token (0600)",
    )

    # -- operations -----------------------------------------------------------------------
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 = any free port")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    startup_timeout_s: float = Field(
        default=60.0, gt=0, description="how long `serve` waits for the broker at start"
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        le=300_000,
        description="consumer group session timeout: how fast a dead scorer's partitions move",
    )

    @model_validator(mode="after")
    def _transactions_need_librdkafka(self) -> Settings:
        if self.exactly_once and self.consumer_client != "librdkafka":
            raise ValueError(
                "exactly_once needs consumer_client = librdkafka: kafka-python cannot send "
                "consumer offsets to a transaction"
            )
        return self

    def producer_transactional_id(self) -> str | None:
        """The output producer's transactional id with `exactly_once`, else None."""
        if not self.exactly_once:
            return None
        return self.transactional_id or f"{self.group_id}.{self.client_id}.{socket.gethostname()}"

    def kafka_client_config(self) -> dict[str, object]:
        """Connection settings shared by every Kafka client; secrets are never logged (the
        password is registered with the log redaction before any client sees it)."""
        cfg: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            password = self.sasl_password.get_secret_value() if self.sasl_password else None
            redact(password)
            cfg["sasl_plain_password"] = password
        if self.ssl_cafile:
            cfg["ssl_cafile"] = str(self.ssl_cafile)
        return cfg
