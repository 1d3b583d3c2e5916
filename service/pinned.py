"""Version-pinned re-scoring: "why did this fire last Tuesday?"

Loads one stored model version from the checkpoint store and scores a capture file or a
topic with it, frozen: nothing is learned and calibration does not move, so the same input
with the same version gives the same scores and the same alert ids, every time. Alert ids
hash the record's origin and the version: pinned to another version, the same alerts differ
only by that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from schemas import ModelRef
from service.decode import Decoder
from service.model_store import load_model, model_store
from service.outputs import build_alerts
from service.replay import encode_record, read_records
from service.scoring import Scorer
from service.settings import Settings


class PinnedVersionError(LookupError):
    """The store has no checkpoint of that version (or one of another detector)."""


class FileRecord(NamedTuple):
    """A capture line as if it were a Kafka record: origin `file:<name>`, offset = line."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


def pinned_scorer(settings: Settings, version: str) -> tuple[Scorer, Decoder]:
    scorer, decoder, extra = load_model(settings, model_store(settings), version)
    if extra is None or scorer.version != version:
        raise PinnedVersionError(
            f"no checkpoint of model version {version!r} for detector {settings.detector!r} "
            f"in {model_store(settings)}"
        )
    return scorer, decoder


def rescore(
    scorer: Scorer, decoder: Decoder, records: Iterable[Any], batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """Alert dicts of `records` under the pinned model, in input order of batches."""
    model = ModelRef(name=scorer.detector_name, version=scorer.version)
    chunk: list[Any] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= batch:
            yield from _score(scorer, decoder, chunk, model)
            chunk = []
    if chunk:
        yield from _score(scorer, decoder, chunk, model)


def _score(scorer: Scorer, decoder: Decoder, chunk: list, model: ModelRef) -> Iterator[dict]:
    events, _dead = decoder.decode_many(chunk)
    for part in scorer.score(events, learn=False):
        yield from build_alerts(part, model)


def file_records(path: Path, logs_topic: str = "") -> Iterator[FileRecord]:
    """A capture's records with stable origins (raw log lines on the logs topic's name, so
    the decoder mines them)."""
    records = read_records(path)
    topic = f"file:{path.name}"
    for i, rec in enumerate(records):
        yield FileRecord(logs_topic if isinstance(rec, str) and logs_topic else topic, 0, i,
                         None, encode_record(rec))  # fmt: skip


def topic_records(settings: Settings, topic: str, timeout_s: float = 5.0) -> Iterator[Any]:
    """Every record of `topic` from the beginning, read without a consumer group."""
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False,
                             **settings.kafka_client_config())  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                break
            for records in polled.values():
                yield from records
    finally:
        consumer.close()
