"""bench/skew.py: its delivery orders, and the behaviour it measures on the real capture."""

from __future__ import annotations

from pathlib import Path

from bench.skew import PARTITIONS, out_of_step, partitioned, run


def test_out_of_step_delivers_every_record_once_in_partition_order() -> None:
    records = partitioned([b'{"time": %d}' % i for i in range(1000)])
    assert {r.partition for r in records} == set(range(PARTITIONS))
    assert out_of_step(records, 0) == records
    skewed = out_of_step(records, 30)
    assert sorted(map(id, skewed)) == sorted(map(id, records))
    for p in range(PARTITIONS):  # each partition's own order is kept
        offsets = [r.offset for r in skewed if r.partition == p]
        assert offsets == sorted(offsets) == list(range(len(offsets)))
    assert skewed != records  # and partitions are read out of step: 30 of one, then the next
    runs, last = [], None
    for r in skewed:
        if r.partition != last:
            runs.append(0)
            last = r.partition
        runs[-1] += 1
    assert runs[: 2 * PARTITIONS] == [30] * (2 * PARTITIONS)  # (the longest lasts alone)


def test_a_recurring_scan_alerts_again_when_read_in_time_order(datasets: Path) -> None:
    """The web scan of the capture's first repetition recurs in its second one; read in time
    order, the held-back learning keeps it out of the model and it alerts both times."""
    result = run(datasets, 2 * 45_544, [0])
    first, second = result["skews"]["0"]["per_repetition"]
    assert result["capture_events"] == 45_544
    assert first > 10_000 and second > 10_000, (first, second)
