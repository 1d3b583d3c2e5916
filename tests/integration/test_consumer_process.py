"""The consumer process on the real broker: a seek drops what the child read ahead and loses
nothing, commits go through the child, a dead child stops the chain with its reason, and the
child never outlives its parent. (The whole chain runs through it in test_pipeline.py and
test_crash_and_bad_input.py, kill -9 of the service included.)"""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from service.kafka_io import KafkaIO
from service.procconsumer import ConsumerProcessDied, ProcessConsumer
from tests.integration.kit import committed_total, fresh_settings, produce, wait_until

PER_PARTITION = 3000


def _consumer(kafka_bootstrap: str, tmp_path: Path) -> tuple[ProcessConsumer, str, str]:
    s = fresh_settings(kafka_bootstrap, tmp_path)
    for p in (0, 1):
        values = [f"{p}-{i}".encode() for i in range(PER_PARTITION)]
        produce(kafka_bootstrap, s.events_topic, values, partition=p)
    return ProcessConsumer(s, [s.events_topic], "it", 500), s.events_topic, s.group_id


def _poll_until(pc: ProcessConsumer, got: dict[int, list[int]], total: int) -> None:
    def more() -> bool:
        for r in pc.poll(timeout_ms=200, max_records=500).get("records", []):
            assert r.value == f"{r.partition}-{r.offset}".encode()
            got[r.partition].append(r.offset)
        return sum(map(len, got.values())) >= total

    assert wait_until(more, timeout_s=60, every_s=0)


def test_a_seek_drops_the_read_ahead_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path):
    pc, topic, _ = _consumer(kafka_bootstrap, tmp_path)
    try:
        got: dict[int, list[int]] = defaultdict(list)
        _poll_until(pc, got, 1500)  # the child has read further ahead by now
        before = {p: len(offs) for p, offs in got.items()}
        sought = max(before, key=before.__getitem__)  # kafka-python reads a partition at a time
        other = 1 - sought
        pc.seek(TopicPartition(topic, sought), 100)  # the chain rewinds it (a refused publish)
        assert pc.position(TopicPartition(topic, sought)) == 100
        _poll_until(pc, got, 2 * PER_PARTITION + before[sought] - 100)
        assert got[sought] == list(range(before[sought])) + list(range(100, PER_PARTITION))
        assert got[other] == list(range(PER_PARTITION)), "a partition not sought goes on as it was"
        assert pc.position(TopicPartition(topic, other)) == PER_PARTITION
    finally:
        pc.close()


def test_commits_go_through_the_child(kafka_bootstrap: str, tmp_path: Path) -> None:
    pc, topic, group = _consumer(kafka_bootstrap, tmp_path)
    try:
        _poll_until(pc, defaultdict(list), 100)
        assert wait_until(lambda: len(pc.assignment()) == 4, timeout_s=30)
        pc.commit({TopicPartition(topic, 0): OffsetAndMetadata(40, "", -1)})
        assert committed_total(kafka_bootstrap, group, topic) == 40
        answers: list = []
        pc.commit_async(
            {TopicPartition(topic, 1): OffsetAndMetadata(60, "", -1)},
            callback=lambda offsets, exc: answers.append(exc),
        )
        assert wait_until(lambda: committed_total(kafka_bootstrap, group, topic) == 100, 30)

        def answered() -> bool:
            pc.poll(timeout_ms=50)  # where the answer is read
            return bool(answers)

        assert wait_until(answered, 10, 0)
        assert answers == [None], "the success is answered (None), no failure"
    finally:
        pc.close()
    assert pc._child.returncode == 0


def test_a_dead_child_stops_the_chain_with_its_reason(kafka_bootstrap: str, tmp_path: Path):
    pc, topic, _ = _consumer(kafka_bootstrap, tmp_path)
    _poll_until(pc, defaultdict(list), 100)
    pc._child.send_signal(signal.SIGKILL)
    with pytest.raises(ConsumerProcessDied, match="exited"):
        for _ in range(100):
            pc.poll(timeout_ms=100)
    with pytest.raises(ConsumerProcessDied):  # every later poll too: never a silent stall
        pc.poll(timeout_ms=10)
    with pytest.raises(CommitFailedError):  # a shutdown's final commit: refused, not hung
        pc.commit({TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)})
    lost: list = []
    pc.commit_async(
        {TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)}, lambda o, e: lost.append(e)
    )
    assert lost, "an async commit to a dead child is reported lost"
    pc.close()


def test_the_child_exits_when_its_parent_goes(kafka_bootstrap: str, tmp_path: Path) -> None:
    pc, _, group_id = _consumer(kafka_bootstrap, tmp_path)
    _poll_until(pc, defaultdict(list), 100)
    pc._to_child.close()  # what the kernel does to a killed parent's end of the pipe
    assert pc._child.wait(30) == 0, "end of input: the child closes its consumer and exits"
    pc._reader.join(5)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        (group,) = admin.describe_groups([group_id]).values()
    finally:
        admin.close()
    assert group["members"] == [], "it left the group: no wait for the session timeout"


def test_the_fetch_wait_setting_reaches_kafka_python(kafka_bootstrap: str, tmp_path: Path):
    """The events consumer (in the child and in process alike) long-polls the broker for the
    configured time, not kafka-python's 500 ms (bench/README.md: 102-116k against 138-144k
    records/s aligned)."""
    from service.kafka_io import kafka_python_consumer

    s = fresh_settings(kafka_bootstrap, tmp_path, fetch_max_wait_ms=77)
    consumer = kafka_python_consumer(s, [s.events_topic], "it", 100)
    try:
        assert consumer.config["fetch_max_wait_ms"] == 77
    finally:
        consumer.close()


def _backlog_skew(
    kafka_bootstrap: str, tmp_path: Path, align_s: float, how: str = "consumer-process"
) -> tuple[float, int]:
    """Two partitions holding the same 50 hours of records, read as a backlog: the largest
    gap (minutes, record time) between how far the partitions were read after a poll, and
    how many records came."""
    from kafka import KafkaProducer

    s = fresh_settings(kafka_bootstrap, tmp_path, align_partitions_s=align_s)
    start, n = 1_700_000_000_000, 3000
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
    for p in (0, 1):
        for i in range(n):
            producer.send(s.events_topic, f"{p}-{i}".encode(), partition=p,
                          timestamp_ms=start + i * 60_000)  # fmt: skip
    producer.flush()
    producer.close()
    child = how == "consumer-process"
    client = "librdkafka" if how == "librdkafka" else "kafka-python"
    io = None if child else KafkaIO(s.model_copy(update={"consumer_process": False,
                                                         "consumer_client": client}))  # fmt: skip
    pc = ProcessConsumer(s, [s.events_topic], "it", 100) if child else None
    read_to: dict[int, int] = {}
    skew = 0.0
    got: dict[int, list[int]] = defaultdict(list)
    try:

        def more() -> bool:
            nonlocal skew
            if pc is not None:
                records = pc.poll(timeout_ms=200, max_records=100).get("records", [])
            else:
                records = io.poll_batch(100, 0.2)  # type: ignore[union-attr]
            for r in records:
                got[r.partition].append(r.offset)
                read_to[r.partition] = r.timestamp
            if len(read_to) == 2:  # the chain scores a poll's records together
                skew = max(skew, abs(read_to[0] - read_to[1]) / 60_000)
            return sum(map(len, got.values())) >= 2 * n

        assert wait_until(more, timeout_s=60, every_s=0)
    finally:
        if pc is not None:
            pc.close()
        if io is not None:
            io.close()
    assert got[0] == list(range(n)) and got[1] == list(range(n)), "every record, in order"
    return skew, sum(map(len, got.values()))


@pytest.mark.parametrize("how", ["consumer-process", "in-process", "librdkafka"])
def test_a_backlog_is_read_with_its_partitions_in_step(
    kafka_bootstrap: str, tmp_path: Path, how: str
) -> None:
    """kafka-python hands out one partition's fetched records before the other's: a backlog
    was read 50 hours of one partition, then 50 of the other. The consumer hands records out
    as a merge by record time would (service/timealign.py): the two stay within the window."""
    apart, _ = _backlog_skew(kafka_bootstrap, tmp_path, align_s=0, how=how)
    assert apart > 1000, f"without alignment the partitions drift apart ({apart:.0f} min)"
    in_step, _ = _backlog_skew(kafka_bootstrap, tmp_path, align_s=600, how=how)
    assert in_step <= 10 + 2, f"{in_step:.0f} minutes apart"
