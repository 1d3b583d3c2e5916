"""The group book: folding, ranking, verdict resolution, state across restarts."""

from __future__ import annotations

from service.groups import (
    _SEVERITY_RANK,
    KEEP_SECONDS,
    GroupBook,
    GroupState,
    _why,
    ask_flags,
    digest,
)


def _alert(aid: str, gid: str, score: float, host: str = "h", sev: str = "high") -> dict:
    return {
        "alert_id": aid,
        "group_id": gid,
        "kind": "ids_alert",
        "score": score,
        "percentile": 99.0 + score / 100,
        "severity": sev,
        "event_time": 100.0 + score,
        "entities": {"name": "n", "host": host},
        "explanation": [],
        "rarity": [],
    }


def test_folding_counts_each_alert_once_and_ranks_by_score() -> None:
    book = GroupBook()
    for a in (
        _alert("a1", "g1", 5),
        _alert("a2", "g1", 7),
        _alert("a2", "g1", 7),
        _alert("b1", "g2", 9, host="x"),
    ):
        book.add(a)
    assert book.groups["g1"].count == 2  # the redelivered a2 is not counted twice
    assert [g.group_id for g in book.ranked()] == ["g2", "g1"]
    assert book.rank_of("g1") == 2


def test_verdicts_resolve_by_alert_or_group_and_benign_sinks() -> None:
    book = GroupBook()
    book.add(_alert("a1", "g1", 9))
    book.add(_alert("b1", "g2", 5))
    assert book.resolve("a1") is book.resolve("g1") is not None
    assert not book.knows("nope")
    book.mark("a1", "benign_positive")
    assert [g.group_id for g in book.ranked()] == ["g2", "g1"]
    book.mark("g1", "undetermined")  # undo
    assert book.groups["g1"].verdict is None


def test_state_round_trip_keeps_groups_and_alert_ids() -> None:
    book = GroupBook()
    for i in range(30):
        book.add(_alert(f"a{i}", f"g{i % 7}", float(i), host=f"h{i % 3}"))
    again = GroupBook.from_state(book.state())
    assert again.groups.keys() == book.groups.keys()
    assert again.resolve("a29") is not None and again.resolve("a29").group_id == "g1"
    assert [g.group_id for g in again.ranked()] == [g.group_id for g in book.ranked()]


def test_digest_lists_top_groups_and_asks_about_others() -> None:
    book = GroupBook()
    for i in range(40):
        book.add(_alert(f"a{i}", f"g{i}", float(i), host=f"h{i % 5}"))
    ask = ask_flags(book.ranked(), threshold=99.0, top=10, k=3)
    assert len(ask) == 3 and not ask & {g.group_id for g in book.ranked()[:10]}
    d = digest(book, {"name": "frequency", "version": "v"}, threshold=99.0, top=5)
    assert [r["group_id"] for r in d["top"][:5]] == [g.group_id for g in book.ranked()[:5]]
    assert sum(r["ask"] for r in d["top"]) == 3


def test_diverse_ranking_puts_a_distinct_threat_before_one_incidents_second_pattern() -> None:
    """Two patterns of one burst on one host score highest; a different host's alert in
    another hour scores third. By score alone it is read third; with time-aware MMR, second."""

    def alert(aid: str, name: str, host: str, score: float, t: float) -> dict:
        entities = {"name": name, "short": "S-Scan", "ip": "10.0.0.9", "host": host}
        base = _alert(aid, f"g-{name}-{host}", score, host=host)
        return {**base, "event_time": t, "entities": entities}

    alerts = [
        alert("a1", "scan-1", "web", 9.0, 3600.0 * 5 + 10),
        alert("a2", "scan-2", "web", 8.6, 3600.0 * 5 + 20),
        alert("a3", "dns-exfil", "dns", 8.5, 3600.0 * 9),
    ]
    by_score, diverse = GroupBook(mmr_lambda=0), GroupBook(mmr_lambda=1.0)
    for a in alerts:
        by_score.add(dict(a))
        diverse.add(dict(a))
    assert [g.entities["name"] for g in by_score.ranked()] == ["scan-1", "scan-2", "dns-exfil"]
    assert [g.entities["name"] for g in diverse.ranked()] == ["scan-1", "dns-exfil", "scan-2"]
    assert diverse.rank_of("g-dns-exfil-dns") == 2
    again = GroupBook.from_state(diverse.state(), mmr_lambda=1.0)  # buckets survive a restart
    assert [g.group_id for g in again.ranked()] == [g.group_id for g in diverse.ranked()]


def _cofire_alerts() -> list[dict]:
    """One scan step on host `web` trips two rules (different names and codes, so the
    field-based MMR sees little alike) within 3 s, in a storm of alerts; a different action
    on host `db` half an hour later scores between them."""

    def alert(aid: str, name: str, short: str, host: str, score: float, t: float) -> dict:
        entities = {"name": name, "short": short, "ip": "10.0.0.9", "host": host}
        base = _alert(aid, f"g-{name}-{host}", score, host=host)
        return {**base, "event_time": t, "entities": entities}

    t0 = 3600.0 * 5
    storm = [alert(f"s{i}", "scan-ids", "S-Scan", "web", 9.0, t0 + i * 0.01) for i in range(300)]
    return [
        *storm,
        alert("a2", "auth-burst", "A-Aud", "web", 8.6, t0 + 3.0),
        alert("a3", "dns-exfil", "D-Exf", "db", 8.5, t0 + 1800.0),
    ]


def test_co_firing_groups_on_one_host_count_as_one_action() -> None:
    """With co-firing on (the service default) the second rule of the same step waits behind
    the other host's action; with it off the field-based MMR keeps it second. The seconds a
    group fired in (a storm is one second's run) survive a restart."""
    on, off = GroupBook(mmr_lambda=2.0), GroupBook(mmr_lambda=2.0, cofire_s=0)
    other_host = GroupBook(mmr_lambda=2.0, cofire_fields="ip")  # shared ip: co-fire too
    for a in _cofire_alerts():
        for book in (on, off, other_host):
            book.add(dict(a))
    assert [g.entities["name"] for g in off.ranked()] == ["scan-ids", "auth-burst", "dns-exfil"]
    assert [g.entities["name"] for g in on.ranked()] == ["scan-ids", "dns-exfil", "auth-burst"]
    assert [g.entities["name"] for g in other_host.ranked()][1] == "dns-exfil"
    storm = on.groups["g-scan-ids-web"]
    assert sum(storm.fired) == 300 and len(storm.seconds) == 3  # 300 alerts in 3 seconds
    again = GroupBook.from_state(on.state(), mmr_lambda=2.0)
    assert [g.group_id for g in again.ranked()] == [g.group_id for g in on.ranked()]
    assert list(again.groups["g-scan-ids-web"].fired) == list(storm.fired)


def test_co_firing_needs_a_shared_value_and_nearby_times() -> None:
    """The same two rules on different hosts, or on one host an hour apart, are not one
    action: co-firing leaves their order as the field-based MMR gives it."""
    for change in ({"host": "mail"}, {"time": 3600.0}):
        alerts = _cofire_alerts()
        second = alerts[-2]
        if "host" in change:
            second["entities"] = {**second["entities"], "host": change["host"]}
            second["group_id"] = "g-auth-burst-mail"
        else:
            second["event_time"] += change["time"]
        on, off = GroupBook(mmr_lambda=2.0), GroupBook(mmr_lambda=2.0, cofire_s=0)
        for a in alerts:
            on.add(dict(a))
            off.add(dict(a))
        assert [g.group_id for g in on.ranked()] == [g.group_id for g in off.ranked()], change


def _random_batches(seed: int) -> list[list[dict]]:
    import random

    rng = random.Random(seed)
    batches = []
    t = 1000.0
    for b in range(6):
        batch = []
        storm = b == 3  # one batch whose alerts fire in more seconds than a group keeps
        for _ in range(1500 if storm else rng.randint(0, 300)):
            gid = "g0" if storm else f"g{rng.randint(0, 5)}"
            t += 1.0 if storm else rng.choice([0.0, 0.2, 1.0, 30.0, 4000.0])
            pairs = [] if rng.random() < 0.3 else [
                {"type_a": "name", "value_a": gid, "type_b": "host", "value_b": "h",
                 "contribution": rng.random()}]  # fmt: skip
            batch.append({
                "alert_id": f"a{rng.randint(0, 2000)}", "group_id": gid, "kind": "ids_alert",
                "score": rng.choice([1.0, 2.0, 2.0, 3.5, rng.random() * 4]),
                "percentile": 99 + rng.random(), "severity": rng.choice(["high", "critical"]),
                "event_time": t + rng.choice([0.0, -50.0]),
                "entities": {"name": gid, "host": "h"}, "explanation": pairs,
                "rarity": [] if rng.random() < 0.5 else [
                    {"type": "host", "value": "h", "count": rng.randint(0, 9)}],
            })  # fmt: skip
        batches.append(batch)
    return batches


def _fold_one(book: GroupBook, alert: dict) -> None:
    """The group book's alert-by-alert fold as it was before `add_many`: the reference
    the batched fold must agree with."""
    gid, aid = alert["group_id"], alert["alert_id"]
    g = book.groups.get(gid)
    if g is None:
        g = book.groups[gid] = GroupState(
            gid, alert["kind"], dict(alert["entities"]), alert["score"],
            alert["percentile"], alert["severity"], alert["event_time"],
            alert["event_time"],
        )  # fmt: skip
        while len(book.groups) > book.max_groups:
            book.groups.popitem(last=False)
    else:
        book.groups.move_to_end(gid)
    if aid not in book.group_of_alert:
        g.count += 1
        g.alert_ids = [*g.alert_ids[-9:], aid]
        book.group_of_alert[aid] = gid
        while len(book.group_of_alert) > book.max_alert_ids:
            book.group_of_alert.popitem(last=False)
    second = int(alert["event_time"])
    if g.seconds and g.seconds[-1] == second:
        g.fired[-1] += 1
    else:
        g.seconds.append(second)
        g.fired.append(1)
        if len(g.seconds) >= 2 * KEEP_SECONDS:
            del g.seconds[:-KEEP_SECONDS], g.fired[:-KEEP_SECONDS]
    bucket = int(alert["event_time"] // book.bucket_s)
    if bucket not in g.buckets:
        g.buckets = [*g.buckets[-63:], bucket]
    g.first_seen = min(g.first_seen, alert["event_time"])
    g.last_seen = max(g.last_seen, alert["event_time"])
    g.last_alert_id = aid
    if g.model_score is not None:  # scored by the newest model, like the re-score
        g.model_score = max(g.model_score, alert["score"])
    if alert["score"] >= g.top_score or not g.why:
        if alert["score"] > g.top_score or not g.why:  # a storm's equal scores: kept
            g.why = _why(alert)
        g.top_score = max(g.top_score, alert["score"])
        g.percentile = max(g.percentile, alert["percentile"])
    if _SEVERITY_RANK[alert["severity"]] > _SEVERITY_RANK[g.severity]:
        g.severity = alert["severity"]
    alert["group_count"] = g.count
    book._dirty = True


def test_folding_a_batch_at_once_is_folding_it_alert_by_alert() -> None:
    for seed in range(8):
        for max_groups in (50_000, 4):  # 4: a batch may evict, the alert-by-alert path
            one_by_one = GroupBook(max_groups=max_groups)
            at_once = GroupBook(max_groups=max_groups)
            for k, batch in enumerate(_random_batches(seed)):
                a, b = [dict(x) for x in batch], [dict(x) for x in batch]
                for alert in a:
                    _fold_one(one_by_one, alert)
                at_once.add_many(b)
                assert [x["group_count"] for x in a] == [x["group_count"] for x in b]
                assert list(one_by_one.groups) == list(at_once.groups)
                assert list(one_by_one.group_of_alert.items()) == list(
                    at_once.group_of_alert.items()
                )
                for g in one_by_one.groups.values():
                    assert vars(g) == vars(at_once.groups[g.group_id]), (seed, k, g.group_id)
                if k == 1:  # a fine-tune scored the groups: model_score then follows alerts
                    for book in (one_by_one, at_once):
                        for g in book.groups.values():
                            g.model_score = 2.5


def test_a_batch_folded_at_once_keeps_the_alert_id_map_bounded() -> None:
    book = GroupBook(max_alert_ids=100)
    book.add_many([_alert(f"a{i}", f"g{i % 3}", 1.0) for i in range(250)])
    assert list(book.group_of_alert) == [f"a{i}" for i in range(150, 250)], "the newest kept"
    assert sum(g.count for g in book.groups.values()) == 250


def test_why_says_what_is_new_what_never_met_and_what_is_rare() -> None:
    alert = _alert("a1", "g1", 5.0)
    alert["explanation"] = [
        {"type_a": "code", "value_a": "ssh", "type_b": "host", "value_b": "h2",
         "contribution": 0.7, "seen_together": 0.0},
        {"type_a": "ip", "value_a": "10.0.0.9", "type_b": "host", "value_b": "h2",
         "contribution": 0.3, "seen_together": 3.0},
        {"type_a": "code", "value_a": "ssh", "type_b": "ip", "value_b": "10.0.0.9",
         "contribution": 0.0, "seen_together": 40.0},
    ]  # fmt: skip
    alert["rarity"] = [
        {"type": "code", "value": "ssh", "count": 400.0, "frequency": 0.4},
        {"type": "ip", "value": "10.0.0.9", "count": 40.0, "frequency": 0.04},
    ]
    assert _why(alert) == (
        "code=ssh with host=h2: never seen together; ip=10.0.0.9 with host=h2: together 3x; "
        "rarest: ip=10.0.0.9 seen 40x"
    )
    alert["rarity"][1]["count"] = 0.0
    alert["explanation"][0]["seen_together"] = None  # a model that does not count pairs
    assert _why(alert) == (
        "new: ip=10.0.0.9; code=ssh with host=h2 (70%); ip=10.0.0.9 with host=h2: together 3x"
    )
