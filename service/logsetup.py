"""How every Outrider process logs: one line per record on stderr, kafka-python's chatter held
back (the service process and its consumer process configure logging the same way)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # kafka-python 3 warns whenever one of its I/O tasks ran > 100 ms; on a busy scorer that is
    # a batch being scored between polls, not a fault (lag and latency metrics tell the truth)
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
