"""A malicious verdict through the service lifts its host's unread groups around the time it
confirmed, by the share of their alerts there; not the host's activity of days before, not
another host's; an undo takes the lift back."""

from __future__ import annotations

from typing import Any

from service.analyst_loop import AnalystLoop
from service.groups import GroupBook
from service.metrics import Metrics
from service.scoring import Scorer
from tests.unit.test_analyst_guards import CONFIG, FakeIntake, _ent

T0 = 1_700_000_000.0


def _alert(gid: str, entities: dict[str, str], at: float, n: int) -> dict[str, Any]:
    return {
        "group_id": gid, "alert_id": f"{gid}-{n}", "kind": "ids_alert", "entities": entities,
        "score": 5.0, "percentile": 99.5, "severity": "high", "event_time": at,
    }  # fmt: skip


def _book() -> GroupBook:
    book = GroupBook(rerank_s=0)
    fired = {
        "scan": (_ent("ET SCAN", "S-Scan", "10.0.0.9", "web"), [T0 + s for s in range(0, 60, 5)]),
        # the next step on the attacked host, minutes later
        "shell": (_ent("Webshell", "W-Shell", "10.0.0.9", "web"), [T0 + 400, T0 + 460]),
        # the host's housekeeping, two days before, and one alert of it in the attack's hour
        "cron": (_ent("Cron ran", "A-Cron", "10.0.0.9", "web"),
                 [T0 - 2 * 86_400 + 60 * i for i in range(20)] + [T0 + 300]),
        # another host in the same minutes
        "mail": (_ent("Mail auth", "M-Auth", "10.0.0.3", "mail"), [T0 + 400, T0 + 460]),
    }  # fmt: skip
    for gid, (entities, times) in fired.items():
        for n, at in enumerate(times):
            book.add(_alert(gid, entities, at, n))
    return book


def test_a_malicious_verdict_lifts_its_hosts_groups_near_its_time() -> None:
    book = _book()
    loop = AnalystLoop(FakeIntake(), Scorer(CONFIG), book, Metrics())  # type: ignore[arg-type]
    loop.intake.give([("scan", "true_positive", "ana")])  # type: ignore[attr-defined]
    assert loop.apply().changed
    score = {gid: g.ranking_score for gid, g in book.groups.items() if gid != "scan"}
    # the shell's alerts are 6-7 minutes from the scan's: lifted by 3 x ~0.5 (600 s scale)
    assert score["shell"] - score["mail"] > 1.0, score
    assert score["cron"] - score["mail"] < 0.2, "1 of 21 alerts near: a chronic group stays"
    # the analyst reads why: on the page and in the digest
    note = book.groups["shell"].verdict_note
    assert note.startswith("+1.") and "confirmed malicious on host=web" in note, note
    assert book.groups["mail"].verdict_note == ""

    # the analyst takes it back: the lift goes with it
    loop.intake.give([("scan", "undetermined", "ana")])  # type: ignore[attr-defined]
    assert loop.apply().changed
    assert abs(book.groups["shell"].ranking_score - book.groups["mail"].ranking_score) < 1e-9
    assert book.groups["shell"].verdict_note == ""


def test_the_time_lift_can_be_switched_off() -> None:
    book = _book()
    scorer = Scorer(CONFIG, verdict_time_weight=0.0)
    loop = AnalystLoop(FakeIntake(), scorer, book, Metrics())  # type: ignore[arg-type]
    loop.intake.give([("scan", "true_positive", "ana")])  # type: ignore[attr-defined]
    loop.apply()
    assert abs(book.groups["shell"].ranking_score - book.groups["mail"].ranking_score) < 1e-9


def test_a_restored_model_takes_the_settings_of_the_process_that_loads_it(tmp_path) -> None:
    book = _book()
    before = Scorer(CONFIG, verdict_time_weight=0.0, verdict_lift_weight=0.25)
    loop = AnalystLoop(FakeIntake(), before, book, Metrics())  # type: ignore[arg-type]
    loop.intake.give([("scan", "true_positive", "ana")])  # type: ignore[attr-defined]
    loop.apply()
    before.save(tmp_path)
    fb = before.feedback_of("ids_alert")
    assert fb.config["time_weight"] == 0.0 and fb.config["lift_weight"] == 0.25

    after = Scorer(CONFIG)  # the defaults: time lift 3, no token lift
    after.restore(tmp_path)
    fb = after.feedback_of("ids_alert")
    assert (fb.config["time_weight"], fb.config["time_same"], fb.config["lift_weight"]) == (
        3.0, "host", 0.0,
    )  # fmt: skip
    assert len(fb.malicious_times_), "the verdict's times were saved with the model"
    book.rescore(after.rescore_groups, lambda k: CONFIG.kinds[k].entities)
    assert book.groups["shell"].ranking_score - book.groups["mail"].ranking_score > 1.0
