"""The analyst triage page: ranked alert groups, verdict buttons and live updates over HTTP.

No Kafka in here. The service hands in three callables — `groups()` (ranked group rows, see
`group_row`), `submit_verdict(feedback)` (writes to the feedback topic) and `model_version()` —
so the page runs and is tested with in-memory ones, and the service decides how verdicts travel.

Security, because entity values are attacker-controlled strings and verdicts train the model:

- binds 127.0.0.1 by default; every ``/api/*`` call needs ``Authorization: Bearer <token>``
  (compared in constant time). The page takes the token once from ``#token=...`` (a fragment is
  never sent to a server or written to its log) or a form, and keeps it in sessionStorage;
- entity values are rendered only as text (``textContent``), and a Content-Security-Policy
  without inline script means a value that did reach the DOM as markup still could not run;
- each analyst's verdicts are rate-limited; a verdict for an id `known_ids` rejects is refused.
  The analyst name comes from ``X-Analyst`` (percent-encoded UTF-8) and is self-declared: the
  token, shared by the team, is the authentication.

API (JSON; errors are ``{"error": reason}``):

==============================  ==============================================================
GET  /api/groups?kind=&severity=&limit=
                                ranked groups; `kind` exact, `severity` a minimum; each row
                                gets its unfiltered `rank` (1 = most anomalous)
GET  /api/kinds                 the event kinds present, for the filter
GET  /api/model                 ``{"version": ...}``
POST /api/verdict               ``{target_id, verdict, reason?, comment?}`` -> the Feedback
POST /api/undo                  ``{target_id}``: a verdict ``undetermined`` with comment
                                ``"undo"``. The feedback topic is append-only and the latest
                                verdict on a target wins; undetermined teaches nothing, so
                                this retracts the label while keeping the history.
==============================  ==============================================================

Status codes: 400 invalid input, 401 missing or wrong token, 413 body too large, 422 unknown
id, 429 too many verdicts from one analyst (with Retry-After), 503 a callable failed.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from schemas.alerts import Severity
from schemas.feedback import Feedback, Verdict
from service.labels import make_feedback

log = logging.getLogger(__name__)

SEVERITY_ORDER = {s.value: i for i, s in enumerate(Severity)}  # low < medium < high < critical
MAX_BODY_BYTES = 16 << 10
VERDICT_FIELDS = frozenset({"target_id", "verdict", "reason", "comment"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC = {  # path -> (file in service/static, content type)
    "/": ("triage.html", "text/html; charset=utf-8"),
    "/static/triage.js": ("triage.js", "text/javascript; charset=utf-8"),
    "/static/triage.css": ("triage.css", "text/css; charset=utf-8"),
}


def describe_pair(pair: Mapping[str, Any]) -> str:
    """An explanation pair as an analyst reads it: how often the two were seen together when
    the model counts pairs, else the pair's share of the blame."""
    text = f"{pair['type_a']}={pair['value_a']} with {pair['type_b']}={pair['value_b']}"
    together = pair.get("seen_together")
    if together is None:
        return f"{text} ({float(pair['contribution']):.0%})"
    return f"{text}: never seen together" if together == 0 else f"{text}: together {together:g}x"


def blamed_pairs(alert: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The explanation's pairs that carry blame (a counting model lists pairs seen as often as
    chance too, with share 0: they are not why the event is unusual)."""
    return [p for p in alert.get("explanation") or [] if float(p["contribution"]) > 0]


def rarest_value(alert: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The alert's least seen entity value; of equally rare ones (an alert code and its name)
    the shortest, which says it in fewest words."""
    rarity = alert.get("rarity") or []
    return min(rarity, key=lambda r: (float(r["count"]), len(str(r["value"]))), default=None)


def group_row(group: Any, verdict: str | None = None, ask: bool = False) -> dict[str, Any]:
    """The page's row for a group (service.groups.GroupState), plus its latest verdict and
    whether the model asks for one (a verdict there would teach it most)."""
    return {
        "group_id": group.group_id,
        "kind": group.kind,
        "severity": group.severity,
        "percentile": group.percentile,
        "top_score": group.top_score,
        "count": group.count,
        "entities": dict(group.entities),
        "why": group.reason,
        "verdict_note": getattr(group, "verdict_note", ""),
        "first_seen": group.first_seen,
        "last_seen": group.last_seen,
        "verdict": verdict,
        "ask": ask,
    }


class ApiError(Exception):
    """An answer other than 200, with the reason the analyst (or script) reads."""

    def __init__(self, status: HTTPStatus, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


@dataclass
class RateLimiter:
    """At most `per_min` events per key in any sliding 60 s window."""

    per_min: int
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[float]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def retry_after(self, key: str, now: float | None = None) -> float | None:
        """Record one event for `key` at `now` (default: the clock): None when allowed, else
        seconds until it would be."""
        now = self.clock() if now is None else now
        with self._lock:
            if len(self._seen) > 10_000:  # forget idle analysts; bounded memory
                self._seen = {k: q for k, q in self._seen.items() if q and q[-1] > now - 60}
            q = self._seen.setdefault(key, deque())
            while q and q[0] <= now - 60:
                q.popleft()
            if len(q) >= self.per_min:
                return q[0] + 60 - now
            q.append(now)
            return None


class TriageServer:
    """The triage page and its JSON API on a background thread (stdlib only)."""

    def __init__(
        self,
        groups: Callable[[], list[dict[str, Any]]],
        submit_verdict: Callable[[Feedback], None],
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        model_version: Callable[[], str] | None = None,
        rate_limit_per_min: int = 60,
        known_ids: Callable[[str], bool] | None = None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        if not token or len(token) < 8:
            raise ValueError("the triage page needs a token of at least 8 characters")
        if rate_limit_per_min < 1:
            raise ValueError("rate_limit_per_min must be at least 1")
        self.groups, self.submit_verdict = groups, submit_verdict
        self.model_version, self.known_ids = model_version, known_ids
        self.host, self.port = host, port
        self.on_stop = on_stop  # e.g. closes the verdicts' producer
        self._token = token.encode()
        self.limiter = RateLimiter(rate_limit_per_min)
        self._static = {
            path: ((resources.files("service") / "static" / name).read_bytes(), ctype)
            for path, (name, ctype) in STATIC.items()
        }
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port (useful with port=0)."""
        if self._httpd is not None:
            return self.port
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns promptly
            name="outrider-triage",
            daemon=True,
        )
        self._thread.start()
        log.info("triage page on %s", self.url)
        return self.port

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None
        if self.on_stop is not None:
            self.on_stop()

    @property
    def url(self) -> str:
        """The page's address, without the token (add ``#token=...`` to open it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # -- API ------------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )

    def list_groups(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        kind = _param(query, "kind")
        severity = _param(query, "severity")
        if severity and severity not in SEVERITY_ORDER:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"severity must be one of: {_sev_names()}")
        limit_s = _param(query, "limit")
        if limit_s and not (limit_s.isdigit() and 1 <= int(limit_s) <= 10_000):
            raise ApiError(HTTPStatus.BAD_REQUEST, "limit must be an integer from 1 to 10000")
        floor = SEVERITY_ORDER.get(severity, -1)
        rows = []
        for rank, g in enumerate(self._call(self.groups), 1):
            if kind and g.get("kind") != kind:
                continue
            if SEVERITY_ORDER.get(str(g.get("severity")), -1) < floor:
                continue
            rows.append({"rank": rank, **g})
        return rows[: int(limit_s)] if limit_s else rows

    def kinds(self) -> list[str]:
        return sorted({str(g.get("kind")) for g in self._call(self.groups)})

    def model(self) -> dict[str, str | None]:
        return {"version": self._call(self.model_version) if self.model_version else None}

    def verdict(self, body: dict[str, Any], analyst: str, undo: bool = False) -> Feedback:
        """Validate, check the id and the rate limit, submit; the Feedback as submitted."""
        wait = self.limiter.retry_after(analyst)
        if wait is not None:
            secs = max(1, math.ceil(wait))
            raise ApiError(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"more than {self.limiter.per_min} verdicts a minute from {analyst!r}; "
                f"retry in {secs} s",
                {"Retry-After": str(secs)},
            )
        allowed = {"target_id"} if undo else VERDICT_FIELDS
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}")
        for name in ("target_id", "verdict"):
            if name not in body and (name == "target_id" or not undo):
                raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} is required")
        try:
            feedback = make_feedback(
                body["target_id"],
                Verdict.undetermined if undo else body["verdict"],
                analyst=analyst,
                comment="undo" if undo else body.get("comment") or "",
                reason=None if undo else body.get("reason"),
                source_ref="triage-page",
            )
        except ValueError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        if self.known_ids is not None and not self._call(self.known_ids, feedback.target_id):
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"unknown id {feedback.target_id!r}: no alert or group has it",
            )
        self._call(self.submit_verdict, feedback)
        return feedback

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> Any:
        """A service callable; its failure is the service's, so 503 rather than a dead thread."""
        try:
            return fn(*args)
        except Exception:
            log.exception("triage: %s failed", getattr(fn, "__name__", fn))
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "the service could not answer") from None


class _Handler(BaseHTTPRequestHandler):
    app: TriageServer
    server_version = "outrider-triage"
    sys_version = ""
    timeout = 15  # a stalled client must not hold a thread for ever

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path in self.app._static:
            body, ctype = self.app._static[url.path]
            return self._send(HTTPStatus.OK, body, ctype)
        if url.path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
        self._api(lambda: self._get_api(url.path, parse_qs(url.query)))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        self._api(lambda: self._post_api(path))

    def _get_api(self, path: str, query: dict[str, list[str]]) -> Any:
        if path == "/api/groups":
            return self.app.list_groups(query)
        if path == "/api/kinds":
            return self.app.kinds()
        if path == "/api/model":
            return self.app.model()
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: GET {path}")

    def _post_api(self, path: str) -> Any:
        if path not in ("/api/verdict", "/api/undo"):
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {path}")
        analyst = unquote(self.headers.get("X-Analyst", "")).strip() or "analyst"
        feedback = self.app.verdict(self._json_body(), analyst, undo=path == "/api/undo")
        return {"ok": True, "feedback": feedback.model_dump(mode="json")}

    def _json_body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if int(length) > MAX_BODY_BYTES:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body larger than 16 KiB")
        try:
            body = json.loads(self.rfile.read(int(length)))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body

    def _api(self, answer: Callable[[], Any]) -> None:
        try:
            if not self.path.startswith("/api/"):
                raise ApiError(HTTPStatus.NOT_FOUND, "not found")
            if not self.app.authorized(self.headers.get("Authorization")):
                raise ApiError(
                    HTTPStatus.UNAUTHORIZED,
                    "missing or wrong token (Authorization: Bearer <token>)",
                    {"WWW-Authenticate": 'Bearer realm="outrider-triage"'},
                )
            status, data, extra = HTTPStatus.OK, answer(), {}
        except ApiError as exc:
            status, data, extra = exc.status, {"error": exc.reason}, exc.headers
        try:
            body = json.dumps(data, default=_jsonable, allow_nan=False).encode()
        except ValueError:  # NaN or infinity: JSON.parse in the page would fail on it
            log.error("triage: %s answered a non-finite number", self.path)
            status, extra = HTTPStatus.SERVICE_UNAVAILABLE, {}
            body = b'{"error": "the service answered a non-finite number"}'
        self._send(status, body, "application/json", extra)

    def _send(
        self, status: HTTPStatus, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        headers = {
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            **(extra or {}),
        }
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("triage %s " + format, self.address_string(), *args)


def _param(query: dict[str, list[str]], name: str) -> str:
    return (query.get(name) or [""])[-1].strip()


def _sev_names() -> str:
    return ", ".join(SEVERITY_ORDER)


def _jsonable(value: Any) -> Any:
    """Sets (alert ids) as sorted lists, anything else odd as its text."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)
