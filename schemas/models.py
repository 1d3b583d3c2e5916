"""Model-checkpoint announcements, published on a compacted topic keyed by model name."""

from __future__ import annotations

from typing import Literal

from schemas.base import SCHEMA_VERSION, OutputModel


class ModelAnnouncement(OutputModel):
    """A new checkpoint is in the store: scorers hot-swap to it between batches."""

    schema_version: Literal["1.0"] = SCHEMA_VERSION
    model_name: str
    version: str
    path: str
    sha256: str
    created_at: float
