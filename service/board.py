"""Ranked alert groups for a terminal: what `outrider demo` and `outrider alerts` print.

The folding is the service's own group book (service/groups.py), fed from the alerts topic:
alerts with the same group id fold into one row, a redelivered alert id is counted once, rows
rank by their most anomalous alert and show how many alerts they folded and why.
"""

from __future__ import annotations

from typing import Any

from service.groups import GroupBook, GroupState


class AlertBoard:
    """A group book that renders itself; counts redelivered duplicates it folded."""

    def __init__(self) -> None:
        self.book = GroupBook()
        self.alerts_seen = 0
        self.duplicates = 0

    @property
    def groups(self) -> dict[str, GroupState]:
        return self.book.groups

    def add(self, alert: dict[str, Any]) -> None:
        if alert["alert_id"] in self.book.group_of_alert:
            self.duplicates += 1
            return
        self.alerts_seen += 1
        self.book.add(alert)

    def ranked(self) -> list[GroupState]:
        return self.book.ranked()

    def render(self, top: int = 10, width: int = 120) -> str:
        rows = self.ranked()[:top]
        lines = [
            f"{len(self.groups)} alert groups from {self.alerts_seen} alerts "
            f"({self.duplicates} redelivered duplicates folded)",
            f"{'#':>3} {'severity':<8} {'pct':>6} {'score':>7} {'count':>6}  pattern / why",
        ]
        for i, g in enumerate(rows, 1):
            pattern = pattern_text(g.entities)
            lines.append(
                f"{i:>3} {g.severity:<8} {g.percentile:6.2f} {g.top_score:7.2f} {g.count:>6}  "
                f"[{g.kind}] {_fit(pattern, width - 40)}"
            )
            lines.append(f"{'':>35}why: {_fit(g.reason, width - 40)}")
        return "\n".join(lines)


#: entity values longer than this (alert names, messages) go last on a row, so the
#: truncation of a narrow terminal cuts free text, not the host or address
LONG_VALUE = 32


def pattern_text(entities: dict[str, str]) -> str:
    """`type=value ...` in the configured order, long free-text values last."""
    items = sorted(entities.items(), key=lambda kv: len(kv[1]) > LONG_VALUE)  # stable
    return " ".join(f"{k}={v}" for k, v in items)


def _fit(text: str, width: int) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= width else text[: width - 3] + "..."
