"""The producer of every output topic: librdkafka (confluent-kafka), acknowledged in bulk.

Why not kafka-python's producer, when the events are consumed with kafka-python: its `send`
is pure Python (record building, partitioning, size estimates) and wakes its sender thread
through a socket for every new batch; the GIL hand-offs between that thread and the chain
made outputs about 30% of the pipeline's CPU (py-spy, bench.throughput, 2026-12-03).
librdkafka builds and sends requests in its own C threads, without the GIL; a `produce` is
a few microseconds. Delivery reports come back on `flush`, which is where the chain waits for
the broker's acknowledgement anyway.

The delivery promise is the same as before: acks=all, idempotent (a retried request never
writes a record twice), and `flush_or_raise` raises unless every output handed over since
the last call was acknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

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


class OutputProducer:
    """Hands outputs to librdkafka and waits for their acknowledgement in one call."""

    def __init__(self, settings: Settings, client_id: str, max_request_bytes: int) -> None:
        self._failures: list[str] = []
        self._last_error: str | None = None
        self._producer = Producer(
            {
                **librdkafka_config(settings),
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": max_request_bytes,
                "compression.type": "none",
                "queue.buffering.max.messages": 1_000_000,
                "delivery.report.only.error": True,  # success shows as nothing left at flush
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
                "logger": log,
            }
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._failures.append(err.str())

    def _on_error(self, err: KafkaError) -> None:
        # connection-level trouble (broker down, authentication refused); librdkafka retries
        # by itself, so this only explains a later PublishError
        self._last_error = err.str()
        log.warning("kafka: %s", err.str())

    def send_many(self, outputs: list[Queued]) -> None:
        produce = self._producer.produce
        for topic, value, key, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:  # a million outputs in flight: let the broker catch up
                    self._producer.poll(0.1)

    def flush_or_raise(self, timeout_s: float) -> None:
        """Block until every output handed over so far is acknowledged; PublishError if one
        was refused or is still unacknowledged at the deadline (it stays queued: if it lands
        later, the redone batch writes it again with the same ids)."""
        try:
            left = self._producer.flush(timeout_s)
        except KafkaException as exc:
            raise PublishError(f"flush failed: {exc}") from exc
        failures, self._failures = self._failures, []
        if failures:
            raise PublishError(f"the broker refused {len(failures)} output(s): {failures[0]}")
        if left:
            cause = f" (last client error: {self._last_error})" if self._last_error else ""
            raise PublishError(f"{left} output(s) not acknowledged in {timeout_s:g} s{cause}")

    def close(self, timeout_s: float = 10.0) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            log.error("%d output(s) were not acknowledged before close", left)
