"""The triage page's HTTP API against in-memory callables, and `outrider label`'s publishing."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from schemas.feedback import Feedback, Verdict
from service import labels
from service.board import AlertBoard
from service.triage import RateLimiter, TriageServer, group_row

TOKEN = "s3cret-token-for-tests"
HOSTILE = "<script>alert('x')</script>\"'&<img src=x onerror=alert(1)>"


def _group(gid: str, kind: str, severity: str, score: float, **kw: Any) -> dict[str, Any]:
    return {
        "group_id": gid,
        "kind": kind,
        "severity": severity,
        "percentile": 99.0,
        "top_score": score,
        "count": 3,
        "entities": {"user": "alice", "host": "web-1"},
        "why": "user=alice with host=web-1 (60%)",
        "first_seen": 1_700_000_000.0,
        "last_seen": 1_700_000_060.0,
        "verdict": None,
        "ask": False,
        **kw,
    }


GROUPS = [
    _group("g-crit", "auth", "critical", 9.0, entities={"user": HOSTILE}),
    _group("g-high", "dns", "high", 7.0),
    _group("g-med", "auth", "medium", 5.0, ask=True),
    _group("g-low", "process", "low", 3.0),
]


class App:
    """The service side of the page, in memory."""

    def __init__(self, **kw: Any) -> None:
        self.submitted: list[Feedback] = []
        self.version = "v1"
        self.server = TriageServer(
            groups=lambda: GROUPS,
            submit_verdict=self.submitted.append,
            token=TOKEN,
            model_version=lambda: self.version,
            known_ids=lambda tid: tid in {g["group_id"] for g in GROUPS},
            **kw,
        )
        self.server.start()

    def call(
        self,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server.url.rstrip("/") + path, data=data)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=5) as res:
                raw, status, hdrs = res.read(), res.status, dict(res.headers)
        except urllib.error.HTTPError as err:
            raw, status, hdrs = err.read(), err.code, dict(err.headers)
        ctype = hdrs.get("Content-Type", "")
        return status, json.loads(raw) if "json" in ctype else raw.decode(), hdrs


@pytest.fixture
def app() -> Iterator[App]:
    a = App()
    yield a
    a.server.stop()


def test_api_needs_the_token(app: App) -> None:
    for token in (None, "wrong-token", TOKEN + "x", ""):
        status, body, hdrs = app.call("/api/groups", token=token)
        assert status == 401, token
        assert "token" in body["error"]
        assert hdrs["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = app.call("/api/verdict", {"target_id": "g-crit", "verdict": "benign"}, None)
    assert status == 401 and app.submitted == []


def test_page_is_served_with_a_strict_csp(app: App) -> None:
    status, html, hdrs = app.call("/", token=None)
    assert status == 200 and "<title>Outrider triage</title>" in html
    csp = hdrs["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert hdrs["X-Content-Type-Options"] == "nosniff"
    assert "http" not in html.replace(app.server.url, "")  # no CDN: works offline
    status, js, _ = app.call("/static/triage.js", token=None)
    assert status == 200 and "textContent" in js
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", js)
    assert app.call("/static/nope.js", token=None)[0] == 404


def test_groups_ranked_and_filtered(app: App) -> None:
    status, rows, _ = app.call("/api/groups")
    assert status == 200
    assert [r["group_id"] for r in rows] == ["g-crit", "g-high", "g-med", "g-low"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    _, rows, _ = app.call("/api/groups?kind=auth")
    assert [(r["group_id"], r["rank"]) for r in rows] == [("g-crit", 1), ("g-med", 3)]
    _, rows, _ = app.call("/api/groups?severity=high")
    assert [r["group_id"] for r in rows] == ["g-crit", "g-high"]
    _, rows, _ = app.call("/api/groups?kind=auth&severity=medium&limit=1")
    assert [r["group_id"] for r in rows] == ["g-crit"]
    assert app.call("/api/groups?kind=nope")[1] == []
    status, body, _ = app.call("/api/groups?severity=urgent")
    assert status == 400 and "severity" in body["error"]
    assert app.call("/api/kinds")[1] == ["auth", "dns", "process"]
    assert app.call("/api/model")[1] == {"version": "v1"}
    app.version = "v2"
    assert app.call("/api/model")[1] == {"version": "v2"}


def test_hostile_entity_strings_come_back_intact_as_json_strings(app: App) -> None:
    _, rows, hdrs = app.call("/api/groups")
    assert hdrs["Content-Type"] == "application/json"
    assert rows[0]["entities"]["user"] == HOSTILE


def test_verdict_is_submitted_as_a_valid_feedback(app: App) -> None:
    status, body, _ = app.call(
        "/api/verdict",
        {"target_id": "g-high", "verdict": "benign_positive", "comment": "backup job"},
        headers={"X-Analyst": "J%C3%BCrgen"},
    )
    assert status == 200 and body["ok"]
    (fb,) = app.submitted
    assert isinstance(fb, Feedback)
    assert (fb.target_id, fb.verdict, fb.analyst, fb.comment) == (
        "g-high",
        Verdict.benign_positive,
        "Jürgen",
        "backup job",
    )
    assert fb.time > 1_700_000_000
    assert Feedback.model_validate(body["feedback"]) == fb
    app.call("/api/verdict", {"target_id": "g-crit", "verdict": "true_positive"})
    assert app.submitted[-1].analyst == "analyst" and app.submitted[-1].verdict == "true_positive"


def test_undo_submits_undetermined(app: App) -> None:
    status, _, _ = app.call("/api/undo", {"target_id": "g-med"})
    assert status == 200
    fb = app.submitted[-1]
    assert (fb.target_id, fb.verdict, fb.comment) == ("g-med", Verdict.undetermined, "undo")
    assert app.call("/api/undo", {"target_id": "g-med", "verdict": "benign"})[0] == 400


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"target_id": "g-high", "verdict": "maybe"}, "not one of"),
        ({"target_id": "g-high"}, "verdict is required"),
        ({"verdict": "benign_positive"}, "target_id is required"),
        ({"target_id": "g-high", "verdict": "benign_positive", "reason": "vibes"}, "reason"),
        ({"target_id": "g-high", "verdict": "benign_positive", "x": 1}, "unknown field"),
        ({"target_id": "g-high", "verdict": "benign_positive", "comment": "x" * 5000}, "comment"),
        ({"target_id": 7, "verdict": "benign_positive"}, "target_id"),
        ({"target_id": "g-high", "verdict": ["benign"]}, "must be a string"),
        ({"target_id": "g\nhigh", "verdict": "benign_positive"}, "control"),
        (["g-high", "benign_positive"], "JSON object"),
    ],
)
def test_invalid_verdict_is_400_with_a_reason(app: App, body: Any, reason: str) -> None:
    status, answer, _ = app.call("/api/verdict", body)
    assert status == 400
    assert reason in answer["error"]
    assert app.submitted == []


def test_malformed_and_oversized_bodies(app: App) -> None:
    url = app.server.url + "api/verdict"
    for data, code in ((b"{not json", 400), (b"x" * 20_000, 413)):
        req = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == code
    assert app.call("/api/nothing")[0] == 404


def test_unknown_id_is_422_with_a_reason(app: App) -> None:
    status, body, _ = app.call("/api/verdict", {"target_id": "g-nope", "verdict": "benign"})
    assert status == 422 and "unknown id 'g-nope'" in body["error"]
    assert app.call("/api/undo", {"target_id": "g-nope"})[0] == 422
    assert app.submitted == []


def test_one_analyst_flooding_is_429() -> None:
    a = App(rate_limit_per_min=3)
    try:
        ok = {"target_id": "g-low", "verdict": "benign"}
        codes = [a.call("/api/verdict", ok, headers={"X-Analyst": "eve"})[0] for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        status, body, hdrs = a.call("/api/verdict", ok, headers={"X-Analyst": "eve"})
        assert status == 429 and "eve" in body["error"] and int(hdrs["Retry-After"]) >= 1
        assert a.call("/api/verdict", ok, headers={"X-Analyst": "bob"})[0] == 200  # per analyst
        assert len(a.submitted) == 4
    finally:
        a.server.stop()


def test_rate_limiter_window_slides() -> None:
    now = [0.0]
    rl = RateLimiter(2, clock=lambda: now[0])
    assert rl.retry_after("a") is None and rl.retry_after("a") is None
    assert rl.retry_after("a") == pytest.approx(60)
    now[0] = 60.5
    assert rl.retry_after("a") is None


def test_failing_service_callable_is_503_not_a_dead_page() -> None:
    def boom() -> list[dict[str, Any]]:
        raise RuntimeError("board unavailable")

    server = TriageServer(boom, lambda fb: None, TOKEN)
    server.start()
    try:
        req = urllib.request.Request(
            server.url + "api/groups", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 503
    finally:
        server.stop()


def test_server_refuses_a_weak_token_and_binds_localhost() -> None:
    with pytest.raises(ValueError, match="token"):
        TriageServer(lambda: [], lambda fb: None, "")
    server = TriageServer(lambda: [], lambda fb: None, TOKEN)
    assert server.start() == server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/"
    server.stop()
    server.stop()  # idempotent


def test_group_row_from_the_alert_board() -> None:
    board = AlertBoard()
    board.add(
        {
            "alert_id": "a1",
            "group_id": "g1",
            "kind": "auth",
            "entities": {"user": "bob"},
            "score": 4.0,
            "percentile": 99.5,
            "severity": "high",
            "event_time": 10.0,
            "explanation": [],
            "rarity": [],
        }
    )
    row = group_row(board.ranked()[0], verdict="true_positive", ask=True)
    assert row["group_id"] == "g1" and row["count"] == 1 and row["ask"] is True
    json.dumps(row)  # JSON-ready


# -- outrider label ----------------------------------------------------------------------------
class FakeProducer:
    sent: ClassVar[list[tuple[str, bytes, bytes]]] = []
    configs: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **config: Any) -> None:
        self.configs.append(config)

    def send(self, topic: str, key: bytes, value: bytes) -> FakeProducer:
        self.sent.append((topic, key, value))
        return self

    def get(self, timeout: float) -> None:
        return None

    def flush(self, timeout: float) -> None:
        return None

    def close(self, timeout: float) -> None:
        return None


def test_label_command_publishes_one_keyed_feedback(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    monkeypatch.setattr(kafka, "KafkaProducer", FakeProducer)
    FakeProducer.sent, FakeProducer.configs = [], []
    fb = labels.label_command(
        {"bootstrap_servers": ["k:9092"]}, "feedback", "g-1", "malicious", "seen before", "ana"
    )
    assert (fb.verdict, fb.comment, fb.analyst) == (Verdict.true_positive, "seen before", "ana")
    ((topic, key, value),) = FakeProducer.sent
    assert (topic, key) == ("feedback", b"g-1")
    assert Feedback.model_validate_json(value) == fb
    assert FakeProducer.configs[0]["acks"] == "all"
    assert FakeProducer.configs[0]["bootstrap_servers"] == ["k:9092"]


def test_label_command_validates_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    monkeypatch.setattr(kafka, "KafkaProducer", FakeProducer)
    FakeProducer.sent = []
    with pytest.raises(ValueError, match="not one of"):
        labels.label_command({}, "feedback", "g-1", "spicy", "", "ana")
    with pytest.raises(ValueError, match="target_id"):
        labels.label_command({}, "feedback", "x" * 200, "benign", "", "ana")
    assert FakeProducer.sent == []
    assert labels.parse_verdict(" Benign ") is Verdict.benign_positive
    assert labels.parse_verdict("false_positive") is Verdict.false_positive


def test_the_board_keeps_host_and_address_in_view_before_long_names() -> None:
    """A terminal row is cut at its width: the alert name (free text) goes last so what an
    analyst pivots on, the host and the address, stays on screen."""
    board = AlertBoard()
    name = "Wazuh: Multiple web server 400 error codes from same source ip."
    board.add({
        "alert_id": "a1", "group_id": "g1", "kind": "ids_alert", "score": 8.0,
        "percentile": 99.9, "severity": "critical", "event_time": 1.0,
        "entities": {"name": name, "short": "W-All-Mul3", "ip": "10.143.2.4",
                     "host": "intranet_server"},
        "explanation": [], "rarity": [],
    })  # fmt: skip
    row = board.render(top=1, width=110).splitlines()[2]
    assert "[ids_alert] short=W-All-Mul3 ip=10.143.2.4 host=intranet_server name=Wazuh" in row
    assert row.endswith("...")  # the name is what the width cut
