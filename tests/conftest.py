"""Fixtures for every test layer: the shared datasets (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

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
