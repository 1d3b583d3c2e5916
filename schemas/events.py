"""The input event: one kind, a time, entities by type, and raw attributes kept as they came."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from schemas.base import InputModel

#: Bounds that keep one hostile record from costing the service memory or a crash.
MAX_ENTITIES = 64
MAX_ENTITY_CHARS = 1024
KIND_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

EntityType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
EntityValue = Annotated[str, StringConstraints(max_length=MAX_ENTITY_CHARS)]


class Event(InputModel):
    """A heterogeneous categorical event, e.g. a process opening a socket or an IDS alert.

    `entities` maps entity type (user, host, process, dst_port, ...) to its value. Numbers are
    accepted as values and kept as their decimal string (a port is a category, not a
    quantity). `attributes` keeps whatever else the source sent (labels, raw fields).
    """

    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)

    kind: Annotated[str, StringConstraints(pattern=KIND_PATTERN)]
    time: float = Field(ge=0, description="event time, epoch seconds")
    entities: dict[EntityType, EntityValue] = Field(max_length=MAX_ENTITIES)
    attributes: dict[str, Any] = Field(default_factory=dict)
