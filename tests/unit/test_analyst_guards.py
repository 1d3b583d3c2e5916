"""Guard rails between a verdict and the model: per-analyst rate limit, the regression check
that rolls a fine-tune back, and the checks a scorer makes before it hot-swaps a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.checkpoint import CheckpointError
from schemas import DeadLetterReason, Feedback
from service.analyst_loop import AnalystLoop, ranking_auc
from service.decode import Decoder
from service.feedback_intake import Verdict
from service.groups import GroupBook
from service.metrics import Metrics
from service.scoring import Scorer
from service.sources import SourceConfig
from service.triage import RateLimiter
from tests.conftest import records_of

CONFIG = SourceConfig.load()
TYPES = CONFIG.kinds["ids_alert"].entities


class FakeIntake:
    """The feedback topic's verdicts, handed over once (FeedbackIntake's interface)."""

    def __init__(self) -> None:
        self.pending: list[Verdict] = []
        self.store: dict[str, Feedback] = {}
        self.applied: dict[int, int] = {}

    def give(self, verdicts: list[tuple[str, str, str]], ts_ms: int = 1_700_000_000_000) -> None:
        values = [
            orjson.dumps({"target_id": t, "verdict": v, "analyst": a, "time": 1.0})
            for t, v, a in verdicts
        ]
        for rec, (t, v, a) in zip(records_of(values, "feedback", ts_ms), verdicts, strict=True):
            fb = Feedback(target_id=t, verdict=v, analyst=a, time=1.0)
            self.store[t] = fb
            self.pending.append(Verdict(fb, rec, live=True))

    def poll(self) -> tuple[list[Verdict], list[Any]]:
        out, self.pending = self.pending, []
        return out, []


def _alert(gid: str, entities: dict[str, str]) -> dict[str, Any]:
    return {
        "group_id": gid, "alert_id": f"a-{gid}", "kind": "ids_alert", "entities": entities,
        "score": 1.0, "percentile": 99.5, "severity": "high", "event_time": 1.0,
    }  # fmt: skip


def _loop(
    patterns: dict[str, dict[str, str]], per_minute: float = 60.0, scorer: Scorer | None = None
) -> AnalystLoop:
    book = GroupBook()
    for gid, ent in patterns.items():
        book.add(_alert(gid, ent))
    scorer = scorer or Scorer(CONFIG)
    return AnalystLoop(FakeIntake(), scorer, book, Metrics(), per_minute)  # type: ignore[arg-type]


def _ent(name: str, short: str, ip: str, host: str) -> dict[str, str]:
    return {"name": name, "short": short, "ip": ip, "host": host}


def test_the_verdict_limit_runs_on_the_verdicts_own_time() -> None:
    lim = RateLimiter(per_min=3)
    assert [lim.retry_after("ana", 0.0) for _ in range(3)] == [None, None, None]
    assert lim.retry_after("ana", 30.0) == 30.0, "full: the oldest leaves the window at 60 s"
    assert lim.retry_after("bob", 30.0) is None, "limits are per analyst"
    assert lim.retry_after("ana", 60.5) is None


def test_a_flood_of_verdicts_is_dead_lettered_and_teaches_nothing() -> None:
    patterns = {f"g{i}": _ent(f"n{i}", f"S-{i}", "10.0.0.1", f"h{i}") for i in range(8)}
    loop = _loop(patterns, per_minute=5)
    loop.intake.give([(f"g{i}", "benign_positive", "bot") for i in range(8)])  # type: ignore[attr-defined]
    out = loop.apply()
    limited = [d for d in out.dead if d.reason is DeadLetterReason.rate_limited]
    assert len(limited) == 3 and "bot" in limited[0].detail
    assert len(loop.scorer.feedback_of("ids_alert").labeled_) == 5
    assert set(loop.intake.store) == {f"g{i}" for i in range(5)}, "limited ones leave the store"
    assert out.changed and not out.rolled_back


def test_ranking_auc() -> None:
    assert ranking_auc(np.array([3.0, 1.0, 2.0]), np.array([1, 0, 0])) == 1.0
    assert ranking_auc(np.array([1.0, 1.0]), np.array([1, 0])) == 0.5
    assert ranking_auc(np.array([1.0, 2.0]), np.array([1, 1])) is None


def _devnet_scorer() -> Scorer:
    """A scorer whose ids_alert kind runs APE + the DevNet head, with traffic learned (the
    head trains only with traffic in its replay)."""
    config = SourceConfig.from_toml(
        '[kinds.ids_alert]\nentities = ["name", "short", "ip", "host"]\ndetector = "devnet"\n'
    )
    scorer = Scorer(config, calibration_min_samples=200)
    values = [
        orjson.dumps({"kind": "ids_alert", "time": 1000 + i, "entities": _ent(
            "Login ok", "A-Auth", f"10.0.0.{i % 5}", ("mail", "web", "db")[i % 3])})
        for i in range(3000)
    ]  # fmt: skip
    events, dead = Decoder(config, 1 << 16).decode_many(records_of(values))
    assert not dead
    scorer.score(events)
    return scorer


@pytest.mark.parametrize("detector", ["frequency", "devnet"])
def test_a_fine_tune_that_ranks_earlier_verdicts_worse_is_rolled_back(detector: str) -> None:
    """Rolled back: the count-based layer and, for a semi-supervised head, the head too."""
    attack = _ent("ET SCAN", "S-Scan", "10.0.0.9", "web")
    noise = _ent("Login ok", "A-Auth", "10.0.0.2", "mail")
    # a second analyst's verdicts that contradict the first's: the attack's look-alikes on
    # its host (from other addresses) benign, the housekeeping's look-alikes malicious
    twins = {f"t{i}": {**attack, "ip": f"10.0.1.{i}"} for i in range(10)}
    flips = {f"f{i}": {**noise, "ip": f"10.0.2.{i}"} for i in range(6)}
    scorer = _devnet_scorer() if detector == "devnet" else None
    loop = _loop({"attack": attack, "noise": noise, **twins, **flips}, scorer=scorer)
    loop.intake.give([("attack", "true_positive", "ana"), ("noise", "benign_positive", "ana")])  # type: ignore[attr-defined]
    assert loop.apply().changed
    fb = loop.scorer.feedback_of("ids_alert")
    version, learned = loop.scorer.version, dict(fb.labeled_)
    det = loop.scorer.detectors["ids_alert"]
    told = (list(det.malicious), list(det.benign)) if detector == "devnet" else None  # type: ignore[attr-defined]
    if detector == "devnet":
        assert det.trained_  # type: ignore[attr-defined]
    rows = [tuple(attack[t] for t in TYPES), tuple(noise[t] for t in TYPES)]
    before = loop.scorer.peek("ids_alert", rows)
    assert before[0] > before[1]

    loop.intake.give(  # type: ignore[attr-defined]
        [(t, "benign_positive", "bob") for t in twins]
        + [(f, "true_positive", "bob") for f in flips]
    )
    out = loop.apply()
    assert out.rolled_back == 1 and not out.changed
    assert loop.scorer.version == version, "no new generation for a rolled-back fine-tune"
    assert loop.scorer.feedback_of("ids_alert").labeled_ == learned
    assert np.array_equal(loop.scorer.peek("ids_alert", rows), before)
    if told is not None:
        kept = loop.scorer.detectors["ids_alert"]
        assert (kept.malicious, kept.benign) == told  # type: ignore[attr-defined]
    assert loop.metrics.fine_tune_rollbacks._value.get() == 1


def _background_loop() -> tuple[AnalystLoop, list[tuple[str, ...]]]:
    """The service's loop (`background=True`) over a devnet scorer with two groups, an
    attack and housekeeping; and their rows."""
    patterns = {"attack": _ent("ET SCAN", "S-Scan", "10.0.0.9", "web"),
                "noise": _ent("Login ok", "A-Auth", "10.0.0.2", "mail")}  # fmt: skip
    book = GroupBook()
    for gid, ent in patterns.items():
        book.add(_alert(gid, ent))
    loop = AnalystLoop(FakeIntake(), _devnet_scorer(), book, Metrics(), background=True)  # type: ignore[arg-type]
    return loop, [tuple(ent[t] for t in TYPES) for ent in patterns.values()]


def test_a_head_trains_in_the_background_while_scoring_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The service's loop (`background=True`): a verdict on a devnet kind is recorded at once
    (the count-based layer, the head's verdict lists), the head trains in a worker thread
    (held here on a gate, as a slow CPU would), batches are scored meanwhile with the
    previous head, and the trained head is installed between batches as a new generation."""
    import threading

    from detectors.devnet import HeadJob

    gate, started = threading.Event(), threading.Event()
    train = HeadJob.run

    def held(job: HeadJob) -> HeadJob:
        started.set()
        assert gate.wait(30), "the test never opened the gate"
        return train(job)

    monkeypatch.setattr(HeadJob, "run", held)
    loop, rows = _background_loop()
    scorer = loop.scorer
    det = scorer.detectors["ids_alert"]
    untrained = scorer.peek("ids_alert", rows)
    loop.intake.give([("attack", "true_positive", "ana"), ("noise", "benign_positive", "ana")])  # type: ignore[attr-defined]
    out = loop.apply()
    assert out.changed, "the count-based layer learned at once: a generation"
    recorded = scorer.version
    assert started.wait(30) and "ids_alert" in loop.jobs
    assert det.head_stale and not det.trained_  # type: ignore[attr-defined]
    assert det.malicious == [rows[0]] and det.benign == [rows[1]]  # type: ignore[attr-defined]

    # scoring goes on, with the previous (untrained) head, while the head trains
    values = [
        orjson.dumps({"kind": "ids_alert", "time": 5000 + i,
                      "entities": dict(zip(TYPES, rows[0], strict=True))})
        for i in range(50)
    ]  # fmt: skip
    events, _ = Decoder(scorer.config, 1 << 16).decode_many(records_of(values))
    scored = scorer.score(events, learn=False)
    assert len(scored[0].scores) == 50 and not det.trained_  # type: ignore[attr-defined]
    assert not loop.apply().changed and scorer.version == recorded, "nothing to install yet"

    gate.set()
    future, _ = loop.jobs["ids_alert"]
    future.result(60)
    settled: list[bool] = []
    out = loop.apply(before_learning=lambda: settled.append(True))
    assert out.changed and settled, "installed between batches, after settling the one in flight"
    assert scorer.version != recorded and scorer.generation == 2
    assert det.trained_ and not det.head_stale and not loop.jobs  # type: ignore[attr-defined]
    trained = scorer.peek("ids_alert", rows)
    assert trained[0] - trained[1] > untrained[0] - untrained[1], "the head lifts the attack"


def test_a_head_left_training_at_a_stop_is_installed_or_trained_after_restart() -> None:
    """A stop waits for the head in training (`finish_heads`); a checkpoint taken while it
    was stale (a crash) says so, and the restarted loop trains it."""
    loop, _ = _background_loop()
    scorer = loop.scorer
    loop.intake.give([("attack", "true_positive", "ana"), ("noise", "benign_positive", "ana")])  # type: ignore[attr-defined]
    loop.apply()
    det = scorer.detectors["ids_alert"]
    arrays, meta = det.state_dict()  # as a crash mid-training leaves it
    assert loop.finish_heads() and det.trained_ and not det.head_stale  # type: ignore[attr-defined]
    assert not loop.jobs

    from detectors.devnet import DevNetDetector

    back = DevNetDetector.from_state(arrays, meta)
    assert back.head_stale and not back.trained_
    scorer.detectors["ids_alert"] = back
    again = AnalystLoop(FakeIntake(), scorer, loop.groups, Metrics(), background=True)  # type: ignore[arg-type]
    again.apply()  # nothing new on the topic: the stale head starts training anyway
    assert "ids_alert" in again.jobs
    assert again.finish_heads() and back.trained_ and not back.head_stale


def test_a_head_training_that_fails_is_not_retried_until_new_verdicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A training that raises (out of memory, say) is logged; the loop does not start it
    again at every pass, only once a new verdict comes for the kind."""
    from detectors.devnet import HeadJob

    runs: list[int] = []

    def broken(job: HeadJob) -> HeadJob:
        runs.append(1)
        raise MemoryError("no room for the head")

    monkeypatch.setattr(HeadJob, "run", broken)
    loop, _ = _background_loop()
    scorer = loop.scorer
    loop.intake.give([("attack", "true_positive", "ana")])  # type: ignore[attr-defined]
    loop.apply()
    loop.jobs["ids_alert"][0].exception(30)
    for _ in range(3):
        assert not loop.apply().changed
    assert runs == [1] and not loop.jobs and scorer.detectors["ids_alert"].head_stale  # type: ignore[attr-defined]
    loop.intake.give([("noise", "benign_positive", "ana")])  # type: ignore[attr-defined]
    loop.apply()
    loop.jobs["ids_alert"][0].exception(30)
    assert runs == [1, 1]


def test_a_consistent_fine_tune_is_kept() -> None:
    attack = _ent("ET SCAN", "S-Scan", "10.0.0.9", "web")
    noise = _ent("Login ok", "A-Auth", "10.0.0.2", "mail")
    other = _ent("Cron ran", "A-Cron", "10.0.0.3", "db")
    loop = _loop({"attack": attack, "noise": noise, "other": other})
    loop.intake.give([("attack", "true_positive", "ana"), ("noise", "benign_positive", "ana")])  # type: ignore[attr-defined]
    loop.apply()
    version = loop.scorer.version
    loop.intake.give([("other", "benign_positive", "ana")])  # type: ignore[attr-defined]
    out = loop.apply()
    assert out.changed and not out.rolled_back and loop.scorer.version != version


def test_adopt_refuses_names_outside_the_store_and_wrong_digests(tmp_path: Path) -> None:
    trainer = Scorer(CONFIG)
    trainer.peek("ids_alert", [])
    path = trainer.save(tmp_path)
    manifest = orjson.loads((path / "manifest.json").read_bytes())
    digest = manifest["sha256"]["model.safetensors"]
    scorer = Scorer(CONFIG)
    own = scorer.version
    for name in ("../etc", "/abs", ".hidden", ""):
        with pytest.raises(CheckpointError):
            scorer.adopt(tmp_path, name, digest)
    with pytest.raises(CheckpointError, match="digest"):
        scorer.adopt(tmp_path, trainer.version, "0" * 64)
    with pytest.raises(CheckpointError, match="not in the store"):
        scorer.adopt(tmp_path, trainer.version + "x", digest)
    assert scorer.version == own
    scorer.adopt(tmp_path, trainer.version, digest)
    assert scorer.version == trainer.version
    other = Scorer(CONFIG, detector="outrider")
    with pytest.raises(CheckpointError, match="another detector"):
        other.adopt(tmp_path, trainer.version, digest)


def test_a_verdict_re_ranks_the_unread_queue_at_once() -> None:
    noise = _ent("Login ok", "A-Auth", "10.0.0.2", "mail")
    twin = {**noise, "host": "web"}  # the same rule on another host
    other = _ent("Cron ran", "A-Cron", "10.0.0.3", "db")
    loop = _loop({"a-twin": twin, "b-other": other, "c-noise": noise})
    assert loop.groups.rank_of("a-twin") < loop.groups.rank_of("b-other")  # a tie: by id
    loop.intake.give([("c-noise", "benign_positive", "ana")])  # type: ignore[attr-defined]
    assert loop.apply().changed
    g = loop.groups.groups
    assert g["a-twin"].ranking_score < g["b-other"].ranking_score
    ranked = [x.group_id for x in loop.groups.ranked()]
    assert ranked.index("a-twin") > ranked.index("b-other"), "the look-alike sank"
    assert ranked[-1] == "c-noise", "the benign group itself goes last"
