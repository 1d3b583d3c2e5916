"""Fixtures for every test layer: the shared datasets (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent


def datasets_root() -> Path | None:
    env = os.environ.get("OUTRIDER_DATA")
    for root in ([Path(env)] if env else []) + [REPO.parent / "shared" / "datasets"]:
        if root.is_dir():
            return root
    return None


@pytest.fixture(scope="session")
def datasets() -> Path:
    root = datasets_root()
    if root is None:
        pytest.skip("shared datasets not present (set OUTRIDER_DATA)")
    return root


class Record(NamedTuple):
    """A consumed Kafka record as the chain sees it, for tests without a broker."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None


def records_of(
    values: list[bytes], topic: str = "events", ts: int = 1_700_000_000_000
) -> list[Record]:
    return [Record(topic, 0, i, ts + i, v) for i, v in enumerate(values)]


def beacon_stop_events() -> list[tuple[float, str, str]]:
    """(time, alert code, host) over 8 h of ids_alert traffic in which a steady stream stops:
    a beacon on 'share' every 20 s until 6 h; routine alerts on 'web' every minute and a
    service stop there hourly; odd alerts on other hosts every half hour; a service stop on
    'share' at hour 2 (beacon running) and 14 s after the beacon's last alert."""
    hour = 3600.0
    rows = [(float(t), "beacon", "share") for t in range(0, int(6 * hour), 20)]
    rows += [(t + 5.0, "login", "web") for t in range(0, int(8 * hour), 60)]
    rows += [(h * hour + 7.0, "svc-stop", "web") for h in range(8)]
    rows += [(2 * hour + 9.0, "svc-stop", "share"), (6 * hour - 20 + 14.0, "svc-stop", "share")]
    rows += [(k * hour / 2 + 33.0, f"odd-{k % 5}", f"host-{k % 3}") for k in range(1, 16)]
    return sorted(rows)


def ids_alert_value(t: float, code: str, host: str) -> bytes:
    """One canonical ids_alert event."""
    entities = {"name": f"{code} alert", "short": code, "ip": f"ip-{host}", "host": host}
    return orjson.dumps({"kind": "ids_alert", "time": t, "entities": entities})
