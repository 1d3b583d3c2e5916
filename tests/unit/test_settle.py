"""A batch is committed only once its outputs are acknowledged, and the acknowledgement of batch
k is awaited after batch k+1 is scored: a refusal rewinds over both, and neither is committed
or counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from service.app import InFlight, Pipeline
from service.kafka_io import PublishError
from service.settings import Settings
from tests.conftest import Record


class ScriptedIO:
    """KafkaIO's chain-facing surface; hand-overs named in `refuse` are not acknowledged."""

    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.handed = 0
        self.sent: list[str] = []
        self.committed: list[list[Any]] = []
        self.rewound: list[list[Any]] = []

    def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None) -> None:
        self.sent.append(topic)

    def hand_over(self) -> int:
        self.handed += 1
        return self.handed

    def await_acks(self, delivery: int, timeout_s: float = 30.0) -> None:
        if delivery in self.refuse:
            raise PublishError("the broker refused 1 output(s)")

    def commit(self, records: list[Any], wait: bool = False) -> bool:
        self.committed.append(records)
        return True

    def rewind(self, records: list[Any]) -> None:
        self.rewound.append(records)

    def lag(self) -> dict:
        return {}


def _batch(first_offset: int, n: int = 50) -> list[Record]:
    values = [
        orjson.dumps(
            {"kind": "ids_alert", "time": 1000 + i, "entities": {"name": "x", "host": "h"}}
        )
        for i in range(n)
    ]
    return [
        Record("events", 0, first_offset + i, 1_700_000_000_000, v) for i, v in enumerate(values)
    ]


def _pipeline(tmp_path: Path) -> tuple[Pipeline, list[list[Any]]]:
    pipeline = Pipeline(Settings(state_dir=tmp_path, metrics_port=0))
    settled: list[list[Any]] = []
    pipeline.on_batch = lambda records, _alerts: settled.append(records)
    return pipeline, settled


def test_a_batch_is_committed_after_its_acks_while_the_next_is_in_flight(tmp_path: Path) -> None:
    pipeline, settled = _pipeline(tmp_path)
    io = ScriptedIO(refuse=set())
    first = pipeline.process(io, _batch(0))  # type: ignore[arg-type]
    assert isinstance(first, InFlight) and not io.committed, "nothing commits before its acks"
    second = pipeline.process(io, _batch(50))  # type: ignore[arg-type]
    assert pipeline.settle(io, first, redo_also=second.records)  # type: ignore[arg-type]
    assert io.committed == [first.records] and settled == [first.records] and not io.rewound
    assert pipeline.settle(io, second)  # type: ignore[arg-type]
    assert io.committed == [first.records, second.records]


def test_a_refused_batch_rewinds_over_the_batch_scored_after_it(tmp_path: Path) -> None:
    pipeline, settled = _pipeline(tmp_path)
    io = ScriptedIO(refuse={1})
    failures = pipeline.metrics.publish_failures
    first = pipeline.process(io, _batch(0))  # type: ignore[arg-type]
    second = pipeline.process(io, _batch(50))  # type: ignore[arg-type]
    assert not pipeline.settle(io, first, redo_also=second.records)  # type: ignore[arg-type]
    assert io.rewound == [first.records + second.records], "both are redone"
    assert not io.committed and not settled, "nothing of either is committed or counted"
    assert failures._value.get() == 1


def test_the_batch_in_flight_is_settled_before_verdicts_change_the_model(tmp_path: Path) -> None:
    """A crash after the version changed would redo the batch under the new version: alert ids
    other than the ones already published. So the batch is committed before the change."""
    from service.analyst_loop import AnalystLoop
    from tests.unit.test_analyst_guards import FakeIntake, _alert, _ent

    pipeline, _ = _pipeline(tmp_path)
    io = ScriptedIO(refuse=set())
    versions_at_commit: list[str] = []
    commit = io.commit
    io.commit = lambda records, wait=False: (  # type: ignore[method-assign]
        versions_at_commit.append(pipeline.scorer.version) or commit(records, wait)
    )
    pipeline.groups.add(_alert("g1", _ent("scan", "S-1", "10.0.0.9", "web")))
    intake = FakeIntake()
    pipeline.intake = intake  # type: ignore[assignment]
    pipeline.loop = AnalystLoop(intake, pipeline.scorer, pipeline.groups, pipeline.metrics)  # type: ignore[arg-type]
    pipeline.in_flight = pipeline.process(io, _batch(0))  # type: ignore[arg-type]
    before = pipeline.scorer.version
    pipeline.learn_from_analysts(io)  # type: ignore[arg-type]
    assert pipeline.in_flight is not None and not io.committed, "no verdicts: nothing settles"
    intake.give([("g1", "false_positive", "ana")])
    pipeline.learn_from_analysts(io)  # type: ignore[arg-type]
    assert pipeline.scorer.version != before, "the verdict made a new model generation"
    assert versions_at_commit == [before] and pipeline.in_flight is None


class PollingIO(ScriptedIO):
    """ScriptedIO that also polls: `polled` is what the next poll brings; hand-overs in `acked`
    have all their answers by then."""

    def __init__(self, refuse: set[int], acked: set[int], polled: list[Record]) -> None:
        super().__init__(refuse)
        self.acked, self.polled = acked, polled
        self.awaited: list[Any] = []

    def poll_batch(self, max_events: int, max_wait_s: float, until_acked: Any = None) -> list:
        self.awaited.append(until_acked)
        got, self.polled = self.polled[:max_events], self.polled[max_events:]
        return got

    def acknowledged(self, delivery: int) -> bool:
        return delivery in self.acked


def test_the_batch_in_flight_is_committed_once_acknowledged_before_the_next_is_scored(
    tmp_path: Path,
) -> None:
    """Its commit (and the latency counted at it) no longer waits for the next batch's work."""
    pipeline, settled = _pipeline(tmp_path)
    polled = _batch(50)
    io = PollingIO(refuse=set(), acked={1}, polled=polled)
    first = pipeline.in_flight = pipeline.process(io, _batch(0))  # type: ignore[arg-type]
    records = pipeline.next_batch(io)  # type: ignore[arg-type]
    assert io.awaited[0] == first.delivery, "the poll watched the batch's acknowledgements"
    assert io.committed == [first.records] and settled == [first.records]
    assert pipeline.in_flight is None and records == polled, "the new records come to scoring"
    assert io.awaited[1:] == [None], "then the batch fills for the rest of the wait"


def test_the_batch_in_flight_waits_for_the_next_batch_when_unacknowledged_or_full(
    tmp_path: Path,
) -> None:
    pipeline, _ = _pipeline(tmp_path)
    polled = _batch(50)
    io = PollingIO(refuse=set(), acked=set(), polled=polled)
    first = pipeline.in_flight = pipeline.process(io, _batch(0))  # type: ignore[arg-type]
    assert pipeline.next_batch(io) == polled  # type: ignore[arg-type]
    assert not io.committed and pipeline.in_flight is first, "no acks yet: settled later"
    # a full batch (a backlog) is scored first even when the acks are in: as before
    full = Pipeline(Settings(state_dir=tmp_path / "full", metrics_port=0, batch_max_events=50))
    io = PollingIO(refuse=set(), acked={1}, polled=polled)
    full.in_flight = full.process(io, _batch(0))  # type: ignore[arg-type]
    assert full.next_batch(io) == polled and not io.committed  # type: ignore[arg-type]


def test_a_refusal_seen_while_polling_rewinds_over_the_records_just_polled(tmp_path: Path) -> None:
    pipeline, settled = _pipeline(tmp_path)
    polled = _batch(50)
    io = PollingIO(refuse={1}, acked={1}, polled=polled)
    first = pipeline.in_flight = pipeline.process(io, _batch(0))  # type: ignore[arg-type]
    assert pipeline.next_batch(io) == [], "nothing is scored: it all comes again"  # type: ignore[arg-type]
    assert io.rewound == [first.records + polled] and not io.committed and not settled


class IdleSource:
    """A consumer with nothing to read, counting its polls and their waits."""

    def __init__(self) -> None:
        self.waits: list[int] = []

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.waits.append(timeout_ms)
        return {}


class AnsweringProducer:
    """Says a hand-over is acknowledged at the `answer_at`-th question."""

    def __init__(self, answer_at: int) -> None:
        self.answer_at, self.asked = answer_at, 0

    def acknowledged(self, delivery: Any) -> bool:
        self.asked += 1
        return self.asked >= self.answer_at


def test_a_poll_waiting_for_records_ends_when_the_batch_before_is_acknowledged() -> None:
    from service.kafka_io import ACK_CHECK_MS, KafkaIO

    io = object.__new__(KafkaIO)  # the poll's own state; no clients
    io.consumer, io.producer = IdleSource(), AnsweringProducer(answer_at=3)  # type: ignore[assignment]
    io._queued, io._open, io._commit_lost, io._done = [], None, False, {}
    assert io.poll_batch(2000, max_wait_s=30.0, until_acked=object()) == []
    assert io.consumer.waits == [ACK_CHECK_MS] * 3, "short polls, until the third check said so"
    io.consumer.waits.clear()
    assert io.poll_batch(2000, max_wait_s=0.05) == []
    assert io.producer.asked == 3, "nothing awaited: the producer is not asked"
    assert io.consumer.waits[0] >= 40, "and the poll waits whole, not in short slices"


class FailingSource:
    """A kafka-python consumer whose poll raises `error`, as 3.0 does when a metadata refresh
    finds no broker."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        raise self.error


def test_a_broker_outage_reads_as_an_empty_poll_and_other_errors_still_raise() -> None:
    from kafka.errors import IllegalStateError, KafkaConnectionError

    from service.procconsumer import poll_through_outage

    refused = FailingSource(KafkaConnectionError("111 ECONNREFUSED"))
    assert poll_through_outage(refused, timeout_ms=5, max_records=10) == {}
    broken = FailingSource(IllegalStateError("not subscribed"))
    with pytest.raises(IllegalStateError):
        poll_through_outage(broken, timeout_ms=5, max_records=10)
