"""A batch is committed only once its outputs are acknowledged, in order; the acknowledgement of
batch k is awaited after batch k+1 is scored (after k+2 while reading a backlog): a refusal
rewinds over every batch from k on, and none of them is committed or counted."""

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

    def __init__(self, refuse: set[int], unanswered: set[int] | None = None) -> None:
        self.refuse = refuse
        self.unanswered = unanswered or set()  # hand-overs not yet answered when asked
        self.handed = 0
        self.sent: list[str] = []
        self.committed: list[list[Any]] = []
        self.rewound: list[list[Any]] = []

    def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None) -> None:
        self.sent.append(topic)

    def hand_over(self) -> int:
        self.handed += 1
        return self.handed

    def acknowledged(self, delivery: int) -> bool:
        return delivery not in self.unanswered

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
    assert pipeline.settle(io, first, redo_also=[second])  # type: ignore[arg-type]
    assert io.committed == [first.records] and settled == [first.records] and not io.rewound
    assert pipeline.settle(io, second)  # type: ignore[arg-type]
    assert io.committed == [first.records, second.records]


def test_a_refused_batch_rewinds_over_the_batch_scored_after_it(tmp_path: Path) -> None:
    pipeline, settled = _pipeline(tmp_path)
    io = ScriptedIO(refuse={1})
    failures = pipeline.metrics.publish_failures
    first = pipeline.process(io, _batch(0))  # type: ignore[arg-type]
    second = pipeline.process(io, _batch(50))  # type: ignore[arg-type]
    assert not pipeline.settle(io, first, redo_also=[second])  # type: ignore[arg-type]
    assert io.rewound == [first.records + second.records], "both are redone"
    assert not io.committed and not settled, "nothing of either is committed or counted"
    assert failures._value.get() == 1


def test_batches_settle_in_order_each_as_soon_as_it_is_acknowledged(tmp_path: Path) -> None:
    """Reading a backlog, the chain waits for a batch only when `keep` batches scored after
    it are in flight; an acknowledged batch settles without waiting, but never before an
    older one that is not."""
    pipeline, settled = _pipeline(tmp_path)
    io = ScriptedIO(refuse=set(), unanswered={1, 2})
    batches = [_batch(50 * i) for i in range(3)]
    for records in batches[:2]:
        pipeline.in_flight.append(pipeline.process(io, records))  # type: ignore[arg-type]
    assert pipeline.settle_in_flight(io, keep=2)  # type: ignore[arg-type]
    assert not io.committed, "unanswered and within the window: nothing waits, nothing commits"
    io.unanswered = {1, 3}  # the second is answered, the first is not: order holds
    assert pipeline.settle_in_flight(io, keep=2)  # type: ignore[arg-type]
    assert not io.committed
    pipeline.in_flight.append(pipeline.process(io, batches[2]))  # type: ignore[arg-type]
    assert pipeline.settle_in_flight(io, keep=2)  # type: ignore[arg-type]
    assert io.committed == batches[:2], "over the window: the first waited, the second was ready"
    assert settled == batches[:2] and len(pipeline.in_flight) == 1
    assert pipeline.settle_in_flight(io)  # type: ignore[arg-type]
    assert io.committed == batches


def test_a_refused_batch_rewinds_over_every_batch_in_flight_after_it(tmp_path: Path) -> None:
    pipeline, settled = _pipeline(tmp_path)
    io = ScriptedIO(refuse={2}, unanswered={1, 2, 3})
    batches = [_batch(50 * i) for i in range(3)]
    for records in batches:
        pipeline.in_flight.append(pipeline.process(io, records))  # type: ignore[arg-type]
    assert not pipeline.settle_in_flight(io)  # type: ignore[arg-type]
    assert io.committed == batches[:1] and settled == batches[:1]
    assert io.rewound == [batches[1] + batches[2]], "the refused batch and the one after it"
    assert not pipeline.in_flight, "nothing of them stays in flight: they are redone"


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
    pipeline.in_flight.append(pipeline.process(io, _batch(0)))  # type: ignore[arg-type]
    before = pipeline.scorer.version
    pipeline.learn_from_analysts(io)  # type: ignore[arg-type]
    assert pipeline.in_flight and not io.committed, "no verdicts: nothing settles"
    intake.give([("g1", "false_positive", "ana")])
    pipeline.learn_from_analysts(io)  # type: ignore[arg-type]
    assert pipeline.scorer.version != before, "the verdict made a new model generation"
    assert versions_at_commit == [before] and not pipeline.in_flight


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


class RefusingCommitIO(ScriptedIO):
    """A transaction commit that aborts (a rebalance fenced it): PublishError."""

    def commit(self, records: list[Any], wait: bool = False) -> bool:
        raise PublishError("transaction aborted, the batch is redone")


def test_exactly_once_settles_the_batches_in_flight_in_one_transaction(tmp_path: Path) -> None:
    """--exactly-once: every batch in flight wrote into the one open transaction, so they
    are committed together, with all their offsets, once more than `keep` are in flight (or
    the oldest is TRANSACTION_EVERY_S old); an aborted commit redoes all of them."""
    settings = Settings(state_dir=tmp_path, metrics_port=0, exactly_once=True,
                        consumer_client="librdkafka")  # fmt: skip
    pipeline = Pipeline(settings)
    settled: list[list[Any]] = []
    pipeline.on_batch = lambda records, _alerts: settled.append(records)
    io = ScriptedIO(refuse=set())
    batches = [_batch(0), _batch(50), _batch(100)]
    for b in batches[:2]:
        pipeline.in_flight.append(pipeline.process(io, b))  # type: ignore[arg-type]
    assert pipeline.settle_in_flight(io, keep=2)  # type: ignore[arg-type]
    assert not io.committed and len(pipeline.in_flight) == 2, "young, within keep: open"
    pipeline.in_flight.append(pipeline.process(io, batches[2]))  # type: ignore[arg-type]
    assert pipeline.settle_in_flight(io, keep=2)  # type: ignore[arg-type]
    assert io.committed == [[r for b in batches for r in b]], "one commit, every offset"
    assert settled == batches and not pipeline.in_flight

    refusing = RefusingCommitIO(refuse=set())
    again = [_batch(150), _batch(200)]
    for b in again:
        pipeline.in_flight.append(pipeline.process(refusing, b))  # type: ignore[arg-type]
    assert not pipeline.settle_in_flight(refusing, keep=0)  # type: ignore[arg-type]
    assert refusing.rewound == [[r for b in again for r in b]], "aborted: all redone"
    assert settled == batches and not pipeline.in_flight, "nothing of them counted"
