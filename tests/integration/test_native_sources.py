"""The real samples of every native security source through the real broker: records of a
mapped shape are scored under their kind, the others dead-lettered as unknown_kind with Kafka
Connect's headers, and every record is accounted for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from service.replay import encode_record, read_records
from service.sources import SourceConfig
from tests.integration.kit import (
    committed_total,
    consume_all,
    fresh_settings,
    produce,
    running,
    wait_until,
)
from tests.unit.test_security_sources import EXPECTED


def test_every_native_sample_is_scored_or_dead_lettered(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    config = SourceConfig.load()
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=50)
    total, mapped, unmapped = 0, Counter(), 0
    values: list[bytes] = []
    for name, counts in EXPECTED.items():
        records = read_records(datasets / "security-samples" / name)
        assert len(records) == sum(counts.values()), name
        values += [encode_record(r) for r in records]
        for source, n in counts.items():
            if source is None:
                unmapped += n
            else:
                mapped[config.sources[source].kind] += n
    total = len(values)
    produce(kafka_bootstrap, s.events_topic, values)
    with running(s):
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == total, 180
        )
    scored = Counter(
        orjson.loads(r.value)["kind"]
        for r in consume_all(kafka_bootstrap, s.scores_topic, total - unmapped)
    )
    dead = consume_all(kafka_bootstrap, s.dead_letter_topic, unmapped)
    reasons = Counter(orjson.loads(r.value)["reason"] for r in dead)
    assert sum(scored.values()) + len(dead) == total, "every record accounted for"
    assert reasons["unknown_kind"] == unmapped
    assert set(scored) == set(mapped)
    for kind, n in mapped.items():  # a mapped record can still miss a required entity
        assert scored[kind] <= n and scored[kind] >= 0.95 * n, (kind, scored[kind], n)
    for r in dead:
        headers = dict(r.headers)
        assert headers["__connect.errors.topic"] == s.events_topic.encode()
        assert headers["__connect.errors.exception.class.name"].startswith(b"outrider.")
