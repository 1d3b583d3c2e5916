"""Session view: keys, idle timeout, max duration, bounds, and the bag-of-templates scorer."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from schemas import Event
from service.logmining import LogMiner
from service.sessions import SessionAggregator, SessionRecord, SessionScorer, SessionSpec


def _ev(t: float, message: str, template: str = "T1", **entities: str) -> dict:
    return {
        "kind": "log_line",
        "time": t,
        "entities": {"template": template, **entities},
        "attributes": {"message": message},
    }


def test_a_session_closes_after_its_idle_timeout_in_event_time() -> None:
    agg = SessionAggregator(SessionSpec(idle_timeout_s=300))
    assert agg.add(_ev(0, "Receiving block blk_1", "Trecv")) == []
    assert agg.add(_ev(5, "Receiving block blk_-2", "Trecv")) == []
    assert agg.add(_ev(10, "Received block blk_1", "Tdone")) == []
    assert agg.add(_ev(305, "a line without a block")) == []  # blk_-2 idle exactly 300 s
    assert [r.key for r in agg.add(_ev(306, "no block either"))] == ["blk_-2"]
    closed = agg.add(_ev(311, "Receiving block blk_3", "Trecv"))
    assert [r.key for r in closed] == ["blk_1"]
    one = closed[0]
    assert (one.start, one.end, one.count, one.closed_by) == (0, 10, 2, "idle")
    assert one.template_counts == {"Trecv": 1, "Tdone": 1}
    assert json.loads(json.dumps(one.to_dict()))["template_counts"] == {"Trecv": 1, "Tdone": 1}
    assert len(agg) == 1
    assert agg.advance(1000)[0].key == "blk_3"  # a quiet stream: the wall clock moves time on
    assert len(agg) == 0


def test_max_duration_splits_a_long_session_and_flush_closes_the_rest() -> None:
    agg = SessionAggregator(SessionSpec(idle_timeout_s=300, max_duration_s=500))
    closed = []
    for t in range(0, 700, 100):
        closed += agg.add(_ev(t, "heartbeat for blk_7"))
    assert [(r.start, r.end, r.count, r.closed_by) for r in closed] == [(0, 500, 6, "max_duration")]
    rest = agg.flush()
    assert [(r.start, r.count, r.closed_by) for r in rest] == [(600, 1, "flush")]


def test_open_sessions_and_templates_per_session_are_bounded() -> None:
    agg = SessionAggregator(SessionSpec(max_open=2, max_templates=2))
    assert agg.add(_ev(0, "blk_1", "Ta")) == []
    assert agg.add(_ev(1, "blk_2")) == []
    evicted = agg.add(_ev(2, "blk_3"))
    assert [(r.key, r.closed_by) for r in evicted] == [("blk_1", "evicted")]
    for i, t in enumerate(["Ta", "Tb", "Tc", "Td", "Ta"]):
        agg.add(_ev(3 + i, "blk_9", t))
    rec = next(r for r in agg.flush() if r.key == "blk_9")
    assert rec.template_counts == {"Ta": 2, "Tb": 1, "<other>": 2}


def test_the_session_scorers_template_counts_are_bounded() -> None:
    """Templates are minted as long as the logs change: the scorer keeps the most common
    ones, and a common one still scores below a forgotten one-off."""
    scorer = SessionScorer(max_templates=100)
    common = SessionRecord("k", 0.0, 1.0, 1)
    common.template_counts.update({"T-common": 1})
    for i in range(500):
        one_off = SessionRecord(f"s{i}", 0.0, 1.0, 1)
        one_off.template_counts.update({f"T{i}": 1, "T-common": 1})
        scorer.learn_many([one_off])
        assert len(scorer.df_) <= 100
    assert scorer.df_["T-common"] == 500 and "T0" not in scorer.df_
    gone = SessionRecord("g", 0.0, 1.0, 1)
    gone.template_counts.update({"T0": 1})
    assert scorer.score_many([common])[0] < scorer.score_many([gone])[0]
    assert SessionScorer.from_state(scorer.state()).max_templates == 100


def test_sessions_keyed_by_an_entity_from_dicts_and_events() -> None:
    agg = SessionAggregator(SessionSpec(key_field="user", key_pattern=None, idle_timeout_s=60))
    agg.add(_ev(0, "login", user="alice"))
    agg.add(Event.model_validate(_ev(1, "sudo", "T2", user="alice")))
    agg.add(_ev(2, "no user here"))
    (rec,) = agg.flush()
    assert (rec.key, rec.count, dict(rec.template_counts)) == ("alice", 2, {"T1": 1, "T2": 1})


def _hdfs(datasets: Path) -> tuple[list[dict], dict[str, bool]]:
    miner = LogMiner()
    with gzip.open(datasets / "loghub/HDFS_2k.log.gz", "rt") as f:
        events = [miner.event_for_line(line) for line in f.read().splitlines()]
    with gzip.open(datasets / "loghub/HDFS_2k.block_labels.csv.gz", "rt") as f:
        labels = {r["BlockId"]: r["Label"] != "Normal" for r in csv.DictReader(f)}
    return events, labels


def test_real_hdfs_blocks_become_sessions_and_the_scorer_ranks_them(datasets: Path) -> None:
    events, labels = _hdfs(datasets)
    agg = SessionAggregator(SessionSpec(max_keys_per_event=1024))
    closed: list[SessionRecord] = []
    for ev in events:
        closed += agg.add(ev)
    closed += agg.flush()
    assert {r.key for r in closed} == set(labels)  # every labeled block, incl. 100-block lines
    assert sum(r.count for r in closed) >= len(events)
    assert any(r.closed_by == "idle" for r in closed)
    scorer = SessionScorer()
    scorer.learn_many(closed)
    scores = scorer.score_many(closed)
    y = np.array([labels[r.key] for r in closed])
    assert average_precision_score(y, scores) > 2 * y.mean()  # well above chance
    again = SessionScorer.from_state(json.loads(json.dumps(scorer.state())))
    np.testing.assert_array_equal(again.score_many(closed), scores)
    worst = closed[int(np.argmax(scores))]
    assert scorer.explain(worst)[0][1] == pytest.approx(scores.max() / 1.1)


def test_a_never_seen_template_scores_above_every_seen_bag() -> None:
    seen = [SessionRecord(f"b{i}", 0, 1, 2, {"Ta": 1, "Tb": 1}) for i in range(50)]
    scorer = SessionScorer()
    scorer.learn_many(seen)
    novel = SessionRecord("x", 0, 1, 2, {"Ta": 1, "Tnew": 1})
    scores = scorer.score_many([*seen, novel])
    assert scores[-1] > scores[:-1].max()
    with pytest.raises(ValueError):
        SessionScorer.from_state({"format": "other"})
