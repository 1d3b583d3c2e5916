"""bench/cpu.py accounts a run's CPU to the right tasks (Linux /proc schedstat)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cpu import CpuWatch, local_broker_pid

pytestmark = pytest.mark.skipif(not Path("/proc/self/schedstat").exists(), reason="Linux only")


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def test_the_chain_threads_cpu_is_its_own() -> None:
    watch = CpuWatch(broker_pid=None)
    watch.start()
    t0 = time.perf_counter()
    _burn(0.4)
    watch.stop()
    got = watch.result(events=1000, seconds=time.perf_counter() - t0)
    assert got["chain_thread_us_per_event"] > 100  # > 0.1 s of the 0.4 s burnt, per 1000
    assert 0.05 < got["chain_thread_busy_share"] <= 1.05
    assert got["other_threads_us_per_event"] < got["chain_thread_us_per_event"]


def test_a_live_child_process_counts_as_the_consumer() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time\n"
                              "e = time.perf_counter() + 3\n"
                              "while time.perf_counter() < e: sum(range(1000))"])  # fmt: skip
    try:
        time.sleep(0.2)
        watch = CpuWatch(broker_pid=None)
        watch.start()
        t0 = time.perf_counter()
        time.sleep(0.5)
        watch.stop()
        got = watch.result(events=1000, seconds=time.perf_counter() - t0)
    finally:
        child.kill()
        child.wait(10)
    assert got["consumer_process_us_per_event"] > 50  # it ran while this thread slept
    assert got["chain_thread_us_per_event"] < got["consumer_process_us_per_event"]
    assert "broker_us_per_event" not in got


def test_the_brokers_pid_comes_from_its_state_dir(tmp_path: Path) -> None:
    assert local_broker_pid(tmp_path) is None
    (tmp_path / "pid").write_text("4242\n")
    assert local_broker_pid(tmp_path) == 4242


def test_the_ceiling_is_the_serial_chain_or_all_cores_whichever_binds() -> None:
    from bench.cpu import ceiling_events_per_s

    run = {"chain_thread_us_per_event": 10.0, "other_threads_us_per_event": 1.0,
           "consumer_process_us_per_event": 5.0, "broker_us_per_event": 4.0,
           "chain_thread_busy_share": 0.8}  # fmt: skip
    assert ceiling_events_per_s(run, cores=2) == pytest.approx(2e6 / 20.0)  # all cores bind
    assert ceiling_events_per_s(run, cores=8) == pytest.approx(1e6 / 10.0)  # the chain binds
    assert ceiling_events_per_s({}, cores=2) is None
