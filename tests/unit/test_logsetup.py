"""A warning repeated during an outage is said once a minute, with a count of the rest
(service/logsetup.py `RepeatLimiter`), through real `logging` records and handlers."""

from __future__ import annotations

import logging

import pytest

from service.logsetup import RepeatLimiter, template


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured() -> tuple[logging.Logger, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")

    handler = Keep()
    handler.addFilter(RepeatLimiter(every_s=60.0, clock=clock))
    logger = logging.getLogger("test.repeat_limiter")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.DEBUG)
    return logger, lines, clock


def test_a_reconnect_error_repeated_for_a_minute_is_said_once_then_counted(captured) -> None:
    logger, lines, clock = captured
    for i in range(120):  # a client retrying every half second, with varying ports
        logger.error("Connect to 127.0.0.1:%d failed: 111 ECONNREFUSED", 40000 + i)
        clock.now += 0.5
    assert lines == ["ERROR test.repeat_limiter: Connect to 127.0.0.1:40000 failed: "
                     "111 ECONNREFUSED"]  # fmt: skip
    logger.error("Connect to 127.0.0.1:%d failed: 111 ECONNREFUSED", 40999)
    assert lines[-1] == ("ERROR test.repeat_limiter: Connect to 127.0.0.1:40999 failed: "
                         "111 ECONNREFUSED [119 more like this in the last 60 s]")  # fmt: skip
    logger.error("Connect to 127.0.0.1:1 failed: 111 ECONNREFUSED")
    assert len(lines) == 2, "the next minute starts from the line just said"


def test_other_messages_other_loggers_and_info_lines_are_never_held(captured) -> None:
    logger, lines, _ = captured
    logger.warning("async offset commit failed: NodeNotReadyError")
    logger.warning("async offset commit failed: NodeNotReadyError")
    logger.warning("async offset commit failed: KafkaConnectionError")  # another cause
    logging.getLogger("test.repeat_limiter.child").warning("async offset commit failed: x")
    for n in range(5):
        logger.info("hot-swapped to model %d", n)  # progress, not a repeated fault
    assert lines == [
        "WARNING test.repeat_limiter: async offset commit failed: NodeNotReadyError",
        "WARNING test.repeat_limiter: async offset commit failed: KafkaConnectionError",
        "WARNING test.repeat_limiter.child: async offset commit failed: x",
        *(f"INFO test.repeat_limiter: hot-swapped to model {n}" for n in range(5)),
    ]


def test_librdkafkas_own_suppression_count_does_not_make_a_new_line() -> None:
    a = "127.0.0.1:9092/1: Connect failed: Connection refused (after 0ms in state CONNECT)"
    b = ("127.0.0.1:9092/1: Connect failed: Connection refused (after 0ms in state CONNECT, "
         "3 identical error(s) suppressed)")  # fmt: skip
    assert template(a) == template(b)
    assert template("node 1 failed") != template("node 1 refused")


def test_the_remembered_messages_are_bounded() -> None:
    limiter = RepeatLimiter(max_keys=10, clock=lambda: 0.0)
    for i in range(100):
        rec = logging.LogRecord("x", logging.WARNING, __file__, 1, f"distinct {chr(65 + i % 26)}"
                                f"{chr(65 + i // 26)}", None, None)  # fmt: skip
        assert limiter.filter(rec)
    assert len(limiter._seen) == 10
