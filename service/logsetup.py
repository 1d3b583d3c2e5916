"""How every Outrider process logs: one line per record on stderr, kafka-python's chatter held
back, and a warning that repeats said once a minute (the service process and its consumer
process configure logging the same way)."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

#: What varies between two lines that say the same thing: numbers (ports, node ids, offsets,
#: milliseconds, counts), so "Fetch to node 1 failed: ... 111 ECONNREFUSED" is one line however
#: often a client retries.
_VARYING = re.compile(r"\d+")
#: librdkafka's own count of the repeats it held back: part of what varies.
_RDKAFKA_HELD = re.compile(r", \d+ identical error\(s\) suppressed")


def template(message: str) -> str:
    """What a log line says, without what varies between its repeats."""
    return _VARYING.sub("#", _RDKAFKA_HELD.sub("", message))


class RepeatLimiter(logging.Filter):
    """Lets a warning or error through once per `every_s` per logger and message template;
    the next one through after that says how many like it were held back.

    During a broker outage the Kafka clients log every reconnect attempt and the service its
    every commit retry (a 20 s outage: 298 lines through kafka-python, 126 through
    librdkafka; 36 and 30 with this filter); the first line of each says what happened, the
    rest bury it. Records below WARNING pass: the service's INFO lines are its progress."""

    def __init__(
        self, every_s: float = 60.0, max_keys: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        super().__init__()
        self.every_s = every_s
        self.max_keys = max_keys
        self.clock = clock
        # (logger, template) -> [when it last passed, how many held back since]
        self._seen: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        key = (record.name, template(message))
        with self._lock:  # client threads log too
            now = self.clock()
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.every_s:
                seen[1] += 1
                return False
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if seen is not None and seen[1]:
            held, since = int(seen[1]), now - seen[0]
            record.msg = f"{message} [{held} more like this in the last {since:.0f} s]"
            record.args = ()
        return True


def configure_logging(level: str) -> None:
    """stderr, one line per record, repeats limited (on this handler only: a process that
    already has handlers, as under pytest, keeps its own)."""
    handler = logging.StreamHandler(sys.stderr)
    # the pid as syslog puts it: a scorer and its consumer process share one stream
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    )
    handler.addFilter(RepeatLimiter())
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # kafka-python 3 warns whenever one of its I/O tasks ran > 100 ms; on a busy scorer that is
    # a batch being scored between polls, not a fault (lag and latency metrics tell the truth)
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
