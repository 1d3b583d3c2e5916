"""Stopping runs every shutdown step, and keeps the loop's own error (service/shutdown.py)."""

from __future__ import annotations

import logging

import pytest

from service.shutdown import run_steps


def _steps(ran: list[str], failing: set[str]) -> list:
    def step(name: str):  # type: ignore[no-untyped-def]
        def run() -> None:
            ran.append(name)
            if name in failing:
                raise RuntimeError(f"{name} failed")

        return run

    return [step(n) for n in ("settle", "checkpoint", "flush", "close")]


def test_a_step_that_fails_is_raised_after_every_step_ran() -> None:
    ran: list[str] = []
    with pytest.raises(RuntimeError, match="checkpoint failed"):
        run_steps(_steps(ran, {"checkpoint", "flush"}), failed=False)
    assert ran == ["settle", "checkpoint", "flush", "close"]  # the consumer is still closed


def test_after_the_loop_failed_a_steps_error_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    with caplog.at_level(logging.ERROR):
        run_steps(_steps(ran, {"flush"}), failed=True)  # the loop's error is raised by it
    assert ran == ["settle", "checkpoint", "flush", "close"]
    assert "while stopping: RuntimeError: flush failed" in caplog.text
