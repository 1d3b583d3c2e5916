"""Model-checkpoint announcements, published on a compacted topic keyed by model name."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from schemas.base import SCHEMA_VERSION, OutputModel


class ModelAnnouncement(OutputModel):
    """A new checkpoint is in the store: scorers hot-swap to it between batches."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    model_name: str
    version: str
    path: str
    sha256: str
    created_at: float


class SensitivityUpdate(OutputModel):
    """Alert thresholds changed at run time: every scorer applies it between batches. Keyed
    `sensitivity` on the (compacted) models topic, so the latest setting survives."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    type: Literal["sensitivity"] = "sensitivity"
    alert_percentile: float | None = Field(default=None, ge=0, le=100, description="global")
    kinds: dict[str, float] = Field(default_factory=dict, description="per event kind")
    analyst: str = ""
    time: float = 0.0

    @field_validator("kinds")
    @classmethod
    def _percentiles(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: p for k, p in v.items() if not 0 <= p <= 100}
        if bad:
            raise ValueError(f"percentiles must be within 0..100: {bad}")
        return v
