"""Ranked alert groups for a terminal: what `outrider demo` and `outrider alerts` print.

Alerts with the same group id (the same kind and entity pattern) fold into one row, so an
analyst reads distinct patterns, not a flood of events. Rows rank by their most anomalous
alert; each row shows how many alerts it folded and why the model flagged it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_SEVERITY_RANK = {"critical": 3, "high": 2, "medium": 1, "low": 0}


@dataclass
class Group:
    group_id: str
    kind: str
    entities: dict[str, str]
    top_score: float
    percentile: float
    severity: str
    count: int = 0
    alert_ids: set[str] = field(default_factory=set)
    why: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0


class AlertBoard:
    """Folds alert records (as decoded JSON dicts) into ranked groups; duplicates by alert id
    (a redo after a crash) are counted once."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.alerts_seen = 0
        self.duplicates = 0

    def add(self, alert: dict[str, Any]) -> None:
        gid = alert["group_id"]
        g = self.groups.get(gid)
        if g is None:
            g = self.groups[gid] = Group(
                gid,
                alert["kind"],
                alert["entities"],
                alert["score"],
                alert["percentile"],
                alert["severity"],
                first_seen=alert["event_time"],
                last_seen=alert["event_time"],
            )
        if alert["alert_id"] in g.alert_ids:
            self.duplicates += 1
            return
        self.alerts_seen += 1
        g.alert_ids.add(alert["alert_id"])
        g.count += 1
        g.first_seen = min(g.first_seen, alert["event_time"])
        g.last_seen = max(g.last_seen, alert["event_time"])
        if alert["score"] >= g.top_score or not g.why:
            g.top_score = max(g.top_score, alert["score"])
            g.percentile = max(g.percentile, alert["percentile"])
            if _SEVERITY_RANK[alert["severity"]] >= _SEVERITY_RANK[g.severity]:
                g.severity = alert["severity"]
            g.why = explain_line(alert)

    def ranked(self) -> list[Group]:
        return sorted(self.groups.values(), key=lambda g: (-g.top_score, -g.count, g.group_id))

    def render(self, top: int = 10, width: int = 120) -> str:
        rows = self.ranked()[:top]
        lines = [
            f"{len(self.groups)} alert groups from {self.alerts_seen} alerts "
            f"({self.duplicates} redelivered duplicates folded)",
            f"{'#':>3} {'severity':<8} {'pct':>6} {'score':>7} {'count':>6}  pattern / why",
        ]
        for i, g in enumerate(rows, 1):
            pattern = " ".join(f"{k}={v}" for k, v in g.entities.items())
            lines.append(
                f"{i:>3} {g.severity:<8} {g.percentile:6.2f} {g.top_score:7.2f} {g.count:>6}  "
                f"[{g.kind}] {_fit(pattern, width - 40)}"
            )
            lines.append(f"{'':>35}why: {_fit(g.why, width - 40)}")
        return "\n".join(lines)


def explain_line(alert: dict[str, Any]) -> str:
    """'a=x with b=y (62%); ...; rarest: host=z seen 0x' from an alert's explanation."""
    pairs = "; ".join(
        f"{p['type_a']}={p['value_a']} with {p['type_b']}={p['value_b']} ({p['contribution']:.0%})"
        for p in alert.get("explanation", [])[:2]
    )
    rarest = min(alert.get("rarity", []), key=lambda r: r["count"], default=None)
    if rarest is not None:
        pairs += f"; rarest: {rarest['type']}={rarest['value']} seen {rarest['count']:.0f}x"
    return pairs


def _fit(text: str, width: int) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= width else text[: width - 3] + "..."
