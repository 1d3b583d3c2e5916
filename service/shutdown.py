"""Stopping a process loop: every shutdown step runs, and the loop's own error stays the one
the service stops with."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


def run_steps(steps: Sequence[Callable[[], object]], failed: bool) -> None:
    """Run every step (settle, checkpoint, close...). A step's error is raised once all
    have run; when the loop failed already (`failed`), it is only logged: an error met on
    the way out (the broker gone, say) must not hide the one that stopped the loop, nor skip
    the steps after it (closing the consumer)."""
    first: Exception | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:
            if failed or first is not None:
                log.error("while stopping: %s: %s", type(exc).__name__, exc)
            else:
                first = exc
    if first is not None:
        raise first
