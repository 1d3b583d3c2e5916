"""Where the CPU goes during a pipeline run (Linux /proc schedstat), for bench.throughput.

On our 2-core VM the broker, the consumer child process, librdkafka's threads and the chain's
thread share two cores: the ratio of a run depends on how busy the chain's thread is and how
long it waits for a core. Per task, schedstat gives the seconds it ran and the seconds it was
runnable but waiting for a CPU.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any


def _schedstat(path: Path) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable and waiting for one) of one task; zeros when the
    task is gone or this is not Linux."""
    try:
        run, wait, _ = path.read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run) / 1e9, int(wait) / 1e9


def _process(pid: int) -> tuple[float, float]:
    """schedstat summed over a process's threads."""
    total = [0.0, 0.0]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        run, wait = _schedstat(task / "schedstat")
        total[0] += run
        total[1] += wait
    return total[0], total[1]


def _children() -> list[int]:
    """This process's child processes (the consumer process)."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == me:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


class CpuWatch:
    """A snapshot at the run's first batch (`start`, on the chain's thread) and one at its end
    (`stop`, before the pipeline is stopped)."""

    def __init__(self, broker_pid: int | None) -> None:
        self.broker_pid = broker_pid
        self._at: list[dict[str, tuple[float, float]]] = []
        self._thread = 0

    def _snapshot(self) -> dict[str, tuple[float, float]]:
        me = _process(os.getpid())
        chain = _schedstat(Path(f"/proc/self/task/{self._thread}/schedstat"))
        children = [_process(pid) for pid in _children()]
        snap = {
            "chain_thread": chain,
            "other_threads": (me[0] - chain[0], me[1] - chain[1]),
            "consumer_process": (sum(c[0] for c in children), sum(c[1] for c in children)),
        }
        if self.broker_pid:
            snap["broker"] = _process(self.broker_pid)
        return snap

    def start(self) -> None:
        """At the first batch, on the chain's own thread."""
        self._thread = threading.get_native_id()
        self._at = [self._snapshot()]

    def stop(self) -> None:
        if self._at:
            self._at.append(self._snapshot())

    def result(self, events: int, seconds: float) -> dict[str, Any]:
        """Per task: microseconds on a CPU per event; for the chain's thread also the share of
        the run it was busy and the share it waited for a core."""
        if len(self._at) != 2 or seconds <= 0:
            return {}
        (a, b), out = self._at, {}  # a child started or gone meanwhile counts from zero
        for name in b:
            ran = b[name][0] - a[name][0]
            out[f"{name}_us_per_event"] = round(ran / events * 1e6, 2)
        chain_ran = b["chain_thread"][0] - a["chain_thread"][0]
        chain_waited = b["chain_thread"][1] - a["chain_thread"][1]
        out["chain_thread_busy_share"] = round(chain_ran / seconds, 3)
        out["chain_thread_waiting_for_cpu_share"] = round(chain_waited / seconds, 3)
        return out


def ceiling_events_per_s(cpu: dict[str, Any], cores: int) -> float | None:
    """The fastest this run's work could go on `cores` cores, however it were scheduled: the
    chain's thread is serial (one core at most), and every task measured together cannot use
    more than `cores` (None without a measurement). A ratio target above this ceiling over
    the raw read cannot be met on the machine by scheduling: only by less CPU per event."""
    chain = cpu.get("chain_thread_us_per_event")
    if not chain or cores < 1:
        return None
    total = sum(v for k, v in cpu.items() if k.endswith("_us_per_event"))
    return min(1e6 / chain, cores * 1e6 / total)


def local_broker_pid(state_dir: Path) -> int | None:
    """The local broker's pid (deploy/kafka/local-kafka.sh writes it), None when external."""
    try:
        return int((state_dir / "pid").read_text().strip())
    except (OSError, ValueError):
        return None
