"""librdkafka messages become records with the attributes the chain reads from kafka-python's
(the whole consumer is tested on the real broker: tests/integration/test_pipeline.py and
test_crash_and_bad_input.py run with both clients)."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

from service.rdconsumer import RdRecord


class Message:
    """What confluent-kafka's Message answers (it cannot be built from Python)."""

    def __init__(self, stamp: tuple[int, int], headers: Any) -> None:
        self._stamp, self._headers = stamp, headers

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 41

    def timestamp(self) -> tuple[int, int]:
        return self._stamp

    def value(self) -> bytes:
        return b'{"a": 1}'

    def headers(self) -> Any:
        return self._headers

    def key(self) -> bytes | None:
        return None


def test_a_message_becomes_a_record_as_kafka_python_gives_it() -> None:
    r = RdRecord(Message((TIMESTAMP_CREATE_TIME, 1_700_000_000_123), [("traceparent", b"00-")]))
    assert (r.topic, r.partition, r.offset, r.timestamp) == ("events", 3, 41, 1_700_000_000_123)
    assert r.value == b'{"a": 1}' and r.key is None and r.headers == [("traceparent", b"00-")]


def test_no_timestamp_and_no_headers_read_as_kafka_python_reads_them() -> None:
    r = RdRecord(Message((TIMESTAMP_NOT_AVAILABLE, -1), None))
    assert r.timestamp is None and r.headers == []


def test_the_fetch_wait_setting_reaches_librdkafka(monkeypatch: Any, tmp_path: Any) -> None:
    """A partition at its end must not hold the others' next fetch for Kafka's 500 ms."""
    import service.rdconsumer as rdconsumer
    from service.settings import Settings

    seen: dict[str, Any] = {}

    class Captured:
        def __init__(self, conf: dict[str, Any]) -> None:
            seen.update(conf)

        def subscribe(self, topics: list[str]) -> None:
            seen["topics"] = topics

    monkeypatch.setattr(rdconsumer, "Consumer", Captured)
    for wait in (100, 7):
        s = Settings(kafka_bootstrap="127.0.0.1:9", state_dir=tmp_path, fetch_max_wait_ms=wait)
        rdconsumer.RdConsumer(s, ["events"], "it")
        assert seen["fetch.wait.max.ms"] == wait and seen["topics"] == ["events"]
        assert seen["fetch.queue.backoff.ms"] == rdconsumer.RESUME_FETCH_BACKOFF_MS < 1000
    assert Settings.model_fields["fetch_max_wait_ms"].default == 100
