"""What is written between batches, kept until the broker has it.

A batch's outputs are safe by construction: its offsets are committed only after they were
acknowledged, otherwise the batch is redone. What is written between batches has no offsets to
hold back (the dead letters of bad verdicts and control records, the OCSF findings a verdict
closes, model announcements), so the outbox keeps each record until a flush succeeded and sends
it again on the next pass if it did not: a broker hiccup delays these records, never loses them
(at least once: a record the broker took before the failure may come twice). Dead letters are
counted once acknowledged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from schemas import DeadLetter
from service.kafka_io import KafkaIO, PublishError
from service.metrics import Metrics
from service.outputs import dead_letter_headers

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]] | None


@dataclass(slots=True)
class Pending:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = None
    dead: DeadLetter | None = None  # counted in the metric once acknowledged


def dead_letter_record(dl: DeadLetter) -> tuple[bytes, Headers]:
    """A dead letter as its record: JSON value, Kafka Connect error headers."""
    return orjson.dumps(dl.model_dump(mode="json")), dead_letter_headers(dl)


def send_dead_letters(io: KafkaIO, topic: str, dead: list[DeadLetter]) -> None:
    """Hand dead letters to the producer (a batch's: acknowledged with the batch)."""
    for dl in dead:
        value, headers = dead_letter_record(dl)
        io.send(topic, value, headers=headers)


class Outbox:
    """Between-batch outputs, retried until acknowledged (bounded: `limit` records)."""

    def __init__(self, dead_letter_topic: str, metrics: Metrics, limit: int = 100_000) -> None:
        self.dead_letter_topic = dead_letter_topic
        self.metrics = metrics
        self.limit = limit
        self.pending: list[Pending] = []

    def put(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = None
    ) -> None:
        self._keep([Pending(topic, value, key, headers)])

    def put_dead(self, dead: list[DeadLetter]) -> None:
        items = []
        for dl in dead:
            value, headers = dead_letter_record(dl)
            items.append(Pending(self.dead_letter_topic, value, headers=headers, dead=dl))
        self._keep(items)

    def _keep(self, items: list[Pending]) -> None:
        self.pending.extend(items)
        over = len(self.pending) - self.limit
        if over > 0:  # the broker has refused everything for a long time: keep the newest
            log.error("outbox full: %d between-batch records dropped (broker down?)", over)
            del self.pending[:over]

    def flush(self, io: KafkaIO) -> bool:
        """Send what is pending and wait for the acks; True when none is left."""
        if not self.pending:
            return True
        for p in self.pending:
            io.send(p.topic, p.value, key=p.key, headers=p.headers)
        try:
            io.flush_or_raise()
        except PublishError as exc:
            log.error("%d between-batch records not acknowledged, retried next pass: %s",
                      len(self.pending), exc)  # fmt: skip
            return False
        for p in self.pending:
            if p.dead is not None:
                self.metrics.dead_letters.labels(p.dead.reason.value).inc()
        self.pending.clear()
        return True
