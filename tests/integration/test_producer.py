"""The output producer against the real broker: acknowledged outputs land with their keys and
headers; an output the broker refuses (larger than the topic accepts) raises PublishError, and
the producer goes on: the next hand-over is acknowledged normally. (A refused request takes the
records batched with it down too, so their hand-overs fail as well and their batches are redone:
at least once.)"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from service.kafka_io import PublishError
from service.producer import OutputProducer
from tests.integration.kit import consume_all, fresh_settings


def test_acks_land_and_a_refusal_raises_without_stopping_the_producer(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = f"it-producer-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"max.message.bytes": "20000"})])
    admin.close()
    producer = OutputProducer(
        fresh_settings(kafka_bootstrap, tmp_path), "it-producer", max_request_bytes=4 << 20
    )
    try:
        headers = [("ce_id", b"a-1")]
        good = producer.send_many(
            [(topic, b"small-1", b"k1", headers), (topic, b"small-2", None, None)]
        )
        producer.wait(good, 30)
        assert good.left == 0 and not good.failures
        # incompressible: outputs are lz4-compressed, and 100 kB of one byte would fit
        too_big = producer.send_many([(topic, os.urandom(100_000), b"k2", None)])
        with pytest.raises(PublishError, match=r"refused 1 output.*too large"):
            producer.wait(too_big, 30)
        later = producer.send_many([(topic, b"small-3", b"k3", None)])
        producer.wait(later, 30)
    finally:
        producer.close()
    got = consume_all(kafka_bootstrap, topic, 3, timeout_s=30)
    assert sorted(r.value for r in got) == [b"small-1", b"small-2", b"small-3"]
    first = next(r for r in got if r.value == b"small-1")
    assert first.key == b"k1" and [(k, bytes(v)) for k, v in first.headers] == headers
