"""The producer of every output topic: librdkafka (confluent-kafka), acknowledged in bulk.

Why not kafka-python's producer, when the events are consumed with kafka-python: its `send`
is pure Python (record building, partitioning, size estimates) and wakes its sender thread
through a socket for every new batch; the GIL hand-offs between that thread and the chain
made outputs about 30% of the pipeline's CPU (py-spy, bench.throughput, 2026-12-03).
librdkafka builds and sends requests in its own C threads, without the GIL; a `produce` is
a few microseconds. Each hand-over gets a `Delivery` that counts its acknowledgements, so the
chain can score the next batch while the broker acknowledges the last one.

The delivery promise is the same as before: acks=all, idempotent (a retried request never
writes a record twice), and `wait` raises unless every output of a hand-over was
acknowledged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from service.settings import Settings

log = logging.getLogger("kafka.librdkafka")

Header = tuple[str, bytes]
Queued = tuple[str, bytes, bytes | None, list[Header] | None]  # topic, value, key, headers


class PublishError(RuntimeError):
    """The broker did not acknowledge a batch's outputs; nothing of it may be committed."""


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """The connection settings of `Settings.kafka_client_config` in librdkafka's names (that
    call also registers the password with the log redaction)."""
    common = settings.kafka_client_config()
    cfg: dict[str, Any] = {
        "bootstrap.servers": ",".join(common["bootstrap_servers"]),  # type: ignore[arg-type]
        "security.protocol": common["security_protocol"],
    }
    if "sasl_mechanism" in common:
        cfg["sasl.mechanism"] = common["sasl_mechanism"]
        cfg["sasl.username"] = common["sasl_plain_username"]
        cfg["sasl.password"] = common["sasl_plain_password"]
    if "ssl_cafile" in common:
        cfg["ssl.ca.location"] = common["ssl_cafile"]
    return cfg


class Delivery:
    """The acknowledgements still owed for one hand-over of outputs (or several, joined):
    librdkafka calls it once per output, on `poll`."""

    __slots__ = ("failures", "left")

    def __init__(self) -> None:
        self.left = 0
        self.failures: list[str] = []

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        self.left -= 1
        if err is not None:
            self.failures.append(err.str())


class OutputProducer:
    """Hands outputs to librdkafka and waits for their acknowledgement in one call."""

    def __init__(self, settings: Settings, client_id: str, max_request_bytes: int) -> None:
        self._last_error: tuple[float, str] | None = None  # (monotonic time, what it said)
        self._producer = Producer(
            {
                **librdkafka_config(settings),
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 1,  # a batch is handed over at once: little to gain by waiting
                "message.max.bytes": max_request_bytes,
                "compression.type": settings.output_compression,
                "queue.buffering.max.messages": 1_000_000,
                "error_cb": self._on_error,
                "logger": log,
            }
        )

    def _on_error(self, err: KafkaError) -> None:
        # connection-level trouble (broker down, authentication refused); librdkafka retries
        # by itself, so this only explains a later PublishError
        self._last_error = (time.monotonic(), err.str())
        log.warning("kafka: %s", err.str())

    def send_many(self, outputs: list[Queued], into: Delivery | None = None) -> Delivery:
        """Hand outputs over; the returned Delivery (`into`, when given) tracks their acks."""
        delivery = into if into is not None else Delivery()
        delivery.left += len(outputs)
        produce = self._producer.produce
        for topic, value, key, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=delivery)
                    break
                except BufferError:  # a million outputs in flight: let the broker catch up
                    self._producer.poll(0.1)
        return delivery

    def acknowledged(self, delivery: Delivery) -> bool:
        """Whether every output of `delivery` has its answer (serves the reports due now,
        without waiting); a refusal counts: `wait` then raises at once."""
        if delivery.left > 0:
            self._producer.poll(0)
        return delivery.left <= 0 or bool(delivery.failures)

    def wait(self, delivery: Delivery, timeout_s: float) -> None:
        """Block until every output of `delivery` is acknowledged (later hand-overs may still
        be on their way); PublishError if one was refused or is still unacknowledged at the
        deadline (it stays queued: if it lands later, the redone batch writes it again with
        the same ids)."""
        deadline = time.monotonic() + timeout_s
        while delivery.left > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._producer.poll(min(left, 0.05))
        if delivery.failures:
            n, first = len(delivery.failures), delivery.failures[0]
            raise PublishError(f"the broker refused {n} output(s): {first}")
        if delivery.left > 0:
            cause = ""
            if self._last_error is not None:  # its age: an old one may not be the cause
                at, what = self._last_error
                cause = f" (last client error {time.monotonic() - at:.0f} s ago: {what})"
            raise PublishError(
                f"{delivery.left} output(s) not acknowledged in {timeout_s:g} s{cause}"
            )

    def abandon(self) -> None:
        """Give up on everything still queued or in flight: each gets a failed delivery report
        now (its batch is redone, through another producer), and the client is let go."""
        self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._producer.poll(0)  # serve the purged outputs' reports

    def close(self, timeout_s: float = 10.0) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            log.error("%d output(s) were not acknowledged before close", left)
