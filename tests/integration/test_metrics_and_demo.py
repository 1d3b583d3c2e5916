"""What an operator sees: /metrics scraped over HTTP from a live pipeline, and the demo
command run end to end as a user runs it."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from service.local_broker import EXTERNAL_ENV, LocalBroker
from tests.integration.kit import (
    committed_total,
    fresh_settings,
    ids_events,
    produce,
    running,
    wait_until,
)


def _sample(body: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` whose labels start with `labels`."""
    head = re.escape(name) + (r"\{" + labels + r"[^}]*\}" if labels else r"(?:\{[^}]*\})?")
    values = [float(m.group(1)) for m in re.finditer(r"^" + head + r" (\S+)$", body, re.M)]
    assert values, f"{name}{{{labels}}} not exported"
    return sum(values)


def test_live_metrics_count_what_happened(kafka_bootstrap: str, tmp_path: Path) -> None:
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=100, batch_max_events=500)

    bad = [
        b"oops",
        b"[]",
        b'{"kind": "nope"}',
        b'{"kind": "ids_alert", "time": "x", "entities": {}}',
    ]
    produce(kafka_bootstrap, s.events_topic, ids_events(1, 2000))  # history: all normal
    with running(s) as pipeline:
        port = pipeline.metrics.serve(0)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == 2000
        )
        produce(kafka_bootstrap, s.events_topic, ids_events(2001, 500, odd_every=100) + bad)
        assert wait_until(
            lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic) == 2504
        )

        def scrape() -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()

        # a batch is accounted for just after its commit (only what is durable counts), so
        # the broker can show the commit a moment before the metrics do: wait for the last
        # series the batch's accounting sets
        assert wait_until(
            lambda: _sample(scrape().decode(), "outrider_end_to_end_latency_seconds_count") == 2504,
            10,
        )
        body = scrape()
    text = body.decode()
    assert _sample(text, "outrider_events_consumed_total", 'topic="' + s.events_topic + '"') == 2504
    assert _sample(text, "outrider_events_scored_total", 'kind="ids_alert"') == 2500
    assert _sample(text, "outrider_dead_letters_total", 'reason="malformed_json"') == 1
    assert _sample(text, "outrider_dead_letters_total", 'reason="not_an_object"') == 1
    assert _sample(text, "outrider_dead_letters_total", 'reason="invalid_event"') == 1
    assert _sample(text, "outrider_dead_letters_total", 'reason="unknown_kind"') == 1
    assert _sample(text, "outrider_end_to_end_latency_seconds_count") == 2504
    assert _sample(text, "outrider_batch_size_events_sum") == 2504
    assert 'outrider_model_info{name="frequency"' in text
    assert "outrider_consumer_lag_events{" in text
    assert _sample(text, "outrider_alerts_total") == 5  # the five odd events, nothing else


def test_demo_command_runs_end_to_end(kafka_bootstrap: str, datasets: Path) -> None:
    env = {**os.environ, "OUTRIDER_KAFKA_BOOTSTRAP": kafka_bootstrap}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "demo",
            "--until-done",
            "--limit",
            "20000",
            "--metrics-port",
            "0",
            "--top",
            "5",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = proc.stdout.split("final ranking:")[-1]
    assert "alert groups from" in final
    ranked = [
        line for line in final.splitlines() if re.match(r"\s+\d+ (low|medium|high|crit)", line)
    ]
    assert 1 <= len(ranked) <= 5
    assert "why:" in final


def _alive(pid: int) -> bool:
    """A process that has not exited (a zombie has: this sandbox's init may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_stops_the_demo_and_the_broker_it_started(tmp_path: Path, datasets: Path) -> None:
    """`timeout`, `kill` or a service manager stop the demo as Ctrl-C does: the broker it
    started is stopped, not left running in the background. On that fresh broker the demo
    starts without warnings."""
    if os.environ.get(EXTERNAL_ENV):
        pytest.skip(f"{EXTERNAL_ENV} names an external cluster: the demo starts no broker")
    cache = Path(os.environ.get("OUTRIDER_CACHE") or Path.home() / ".cache" / "outrider")
    jars = sorted(cache.glob("kafka-*"))
    assert jars, f"no Kafka server fetched under {cache} (the broker fixture fetches it)"
    for jar_dir in jars:  # the fetched server, not a second download
        (tmp_path / jar_dir.name).symlink_to(jar_dir)
    env = {**os.environ, "OUTRIDER_CACHE": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "demo", "--limit", "20000",
         "--metrics-port", "0", "--top", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    broker = LocalBroker(tmp_path / "broker")
    try:
        deadline = time.monotonic() + 240
        seen = ""
        while "processed 20000/20000" not in seen and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                seen += lines.get(timeout=1)
        assert "processed 20000/20000" in seen, seen[-2000:]
        assert broker.is_running()  # the demo's own broker, in the cache it was given
        pid = int((tmp_path / "broker" / "pid").read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
        err = proc.stderr.read() if proc.stderr else ""
        # a fresh broker is ready for consumer groups when `start` returns, and the consumer
        # has its topics' metadata before it joins: one clean join, no alarming warnings
        for noise in ("NotCoordinatorError", "No partition metadata"):
            assert noise not in err, err[-3000:]
        assert not broker.is_running()
        assert not _alive(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()
