"""The triage page inside a scorer process: its rows come from the group book (a snapshot
refreshed between batches, so the HTTP threads never see a book mid-update), its verdicts go
to the feedback topic like any other verdict, and its token never appears in a log."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from schemas import Feedback
from service.groups import GroupBook, ask_flags, digest
from service.kafka_io import KafkaIO
from service.labels import feedback_bytes
from service.settings import Settings
from service.triage import TriageServer, group_row

log = logging.getLogger(__name__)

#: Rows the page lists (the top of the ranking plus the groups the model asks about).
PAGE_ROWS = 200


def triage_token(settings: Settings) -> str:
    """The configured token, or one generated once and kept (0600) in the state dir."""
    if settings.triage_token is not None:
        return settings.triage_token.get_secret_value()
    path = Path(settings.state_dir) / "triage-token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


class TriageSnapshot:
    """What the page shows, rebuilt by the pipeline thread; read by the server's threads."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def refresh(self, book: GroupBook, threshold: float) -> None:
        ranked = book.ranked()
        ask = ask_flags(ranked, threshold)
        rows = [group_row(g, g.verdict, g.group_id in ask) for g in ranked[:PAGE_ROWS]]
        rows += [group_row(g, g.verdict, True) for g in ranked[PAGE_ROWS:] if g.group_id in ask]
        self.rows = rows  # one reference swap: readers see the old or the new list


class AnalystFeed:
    """What analysts read off a group book, renewed between batches: the triage page's rows
    (at most once a second) and the digest record (every `digest_interval_s`). Fed by the
    process whose book is the whole picture: role `all`, or the trainer."""

    def __init__(self, settings: Settings, book: GroupBook) -> None:
        self.settings, self.book = settings, book
        self.snapshot = TriageSnapshot()
        self._refreshed = self._digested = 0.0

    def tick(self, io: KafkaIO, model: dict[str, str], now: float) -> None:
        s = self.settings
        if now - self._refreshed >= 1.0:
            self._refreshed = now
            self.snapshot.refresh(self.book, s.alert_percentile)
        if s.digest_topic and self.book.groups and now - self._digested >= s.digest_interval_s:
            self._digested = now
            record = digest(self.book, model, s.alert_percentile)
            io.send(s.digest_topic, orjson.dumps(record), key=b"digest")


def start_triage(
    settings: Settings, book: GroupBook, snapshot: TriageSnapshot, version: Any
) -> TriageServer | None:
    """Serve the page, or None when it is off or its port is taken (the scorer goes on)."""
    if settings.triage_port < 0:
        return None
    producer = KafkaProducer(client_id=f"{settings.client_id}-triage", acks="all",
                             **settings.kafka_client_config())  # fmt: skip

    def submit(feedback: Feedback) -> None:
        producer.send(settings.feedback_topic, key=feedback.target_id.encode(),
                      value=feedback_bytes(feedback)).get(timeout=30)  # fmt: skip

    server = TriageServer(
        groups=lambda: snapshot.rows, submit_verdict=submit, token=triage_token(settings),
        host=settings.triage_host, port=max(settings.triage_port, 0), model_version=version,
        known_ids=book.knows, rate_limit_per_min=max(int(settings.verdicts_per_minute), 1),
        on_stop=producer.close,
    )  # fmt: skip
    try:
        port = server.start()
    except OSError as exc:
        log.error("triage page not started on %s:%s: %s", settings.triage_host,
                  settings.triage_port, exc)  # fmt: skip
        producer.close()
        return None
    log.info("triage page on http://%s:%d/ (token in %s or OUTRIDER_TRIAGE_TOKEN)",
             settings.triage_host, port, Path(settings.state_dir) / "triage-token")  # fmt: skip
    return server
