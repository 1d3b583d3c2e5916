"""Between-batch outputs survive a broker that refuses them: kept, re-sent, counted once."""

from __future__ import annotations

from typing import Any

from schemas import DeadLetterReason
from service.decode import dead_letter
from service.kafka_io import PublishError
from service.metrics import Metrics
from service.outbox import Outbox
from tests.conftest import records_of


class FlakyIO:
    """A producer whose first `failures` flushes are refused."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.headers: list[Any] = []
        self.acked: list[tuple[str, bytes, Any]] = []
        self._unacked: list[tuple[str, bytes, Any]] = []

    def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None) -> None:
        self._unacked.append((topic, value, key))
        self.headers.append(headers)

    def flush_or_raise(self) -> None:
        batch, self._unacked = self._unacked, []
        if self.failures:
            self.failures -= 1
            raise PublishError("broker unreachable")
        self.acked.extend(batch)


def test_refused_records_are_retried_and_dead_letters_counted_once_acknowledged() -> None:
    metrics = Metrics()
    box = Outbox("dlq", metrics)
    (rec,) = records_of([b"{not json"], "feedback")
    box.put_dead([dead_letter(rec, DeadLetterReason.invalid_verdict, "bad")])
    box.put("findings", b'{"closed": 1}', key=b"g1")
    io = FlakyIO(failures=2)
    counted = metrics.dead_letters.labels("invalid_verdict")
    assert not box.flush(io) and not box.flush(io)  # type: ignore[arg-type]
    assert counted._value.get() == 0 and len(box.pending) == 2
    assert box.flush(io)  # type: ignore[arg-type]
    assert {t for t, _, _ in io.acked} == {"dlq", "findings"} and len(io.acked) == 2
    assert counted._value.get() == 1 and not box.pending
    dlq = [(key, h) for (t, _, key), h in zip(io.acked, io.headers[-2:], strict=True) if t == "dlq"]
    ((key, headers),) = dlq
    assert key is None and any(name.startswith("__connect.errors.") for name, _ in headers)
    assert box.flush(io)  # nothing left: nothing re-sent  # type: ignore[arg-type]
    assert len(io.acked) == 2


def test_a_full_outbox_keeps_the_newest() -> None:
    box = Outbox("dlq", Metrics(), limit=3)
    for i in range(5):
        box.put("t", str(i).encode())
    assert [p.value for p in box.pending] == [b"2", b"3", b"4"]
