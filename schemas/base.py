"""Shared model configuration: strict, versioned outputs; lenient, lossless inputs."""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict

#: Version of every output record's shape; bump the major part on a breaking change.
SCHEMA_VERSION: Final = "1.0"


class OutputModel(BaseModel):
    """Base of records Outrider writes: unknown fields are an error, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class InputModel(BaseModel):
    """Base of records Outrider reads: unknown fields are kept, not lost."""

    model_config = ConfigDict(extra="allow", frozen=True)
