"""A real single-node Kafka broker for the demo and the tests, driven from Python.

A thin wrapper around ``deploy/kafka/local-kafka.sh`` so that the shell script stays the one place
that knows how to fetch, configure, start and stop the broker; the CLI demo, the pytest fixtures
and CI all go through it. With ``OUTRIDER_KAFKA_BOOTSTRAP`` set, an existing cluster is used
instead and nothing is started or stopped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "local-kafka.sh"
EXTERNAL_ENV = "OUTRIDER_KAFKA_BOOTSTRAP"


class LocalBrokerError(RuntimeError):
    """The script failed; the message carries its stderr (which includes the broker log tail)."""


def default_state_dir() -> Path:
    """Where the script keeps a broker when no state dir is given (one shared dev broker)."""
    cache = os.environ.get("OUTRIDER_CACHE") or str(Path.home() / ".cache" / "outrider")
    return Path(cache) / "broker"


class LocalBroker:
    """A local Kafka broker (KRaft) whose data and ports live in ``state_dir``.

    Use as a context manager, or call ``start()`` / ``stop()``. ``restart()`` keeps the data,
    the committed offsets and the bootstrap address, so tests can simulate a broker bounce.

    ``extra_listener`` (``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``), ``extra_props`` (a file
    appended to server.properties) and ``format_args`` (extra ``kafka-storage format``
    arguments, e.g. ``--add-scram``) set up a secured listener beside the PLAINTEXT one on a
    fresh start; ``listeners()`` then gives its address.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        script: Path = SCRIPT,
        timeout: float = 180.0,
        extra_listener: str | None = None,
        extra_props: Path | None = None,
        format_args: Sequence[str] = (),
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.script = script
        # Covers a first-time jar fetch (Maven) plus the script's own 60 s start timeout.
        self.timeout = timeout
        self.bootstrap: str | None = None
        self._env: dict[str, str] = {}
        if extra_listener:
            self._env["OUTRIDER_KAFKA_EXTRA_LISTENER"] = extra_listener
        if extra_props is not None:
            self._env["OUTRIDER_KAFKA_EXTRA_PROPS"] = str(Path(extra_props).resolve())
        if format_args:
            self._env["OUTRIDER_KAFKA_FORMAT_ARGS"] = " ".join(format_args)

    @property
    def external(self) -> bool:
        """True when an existing cluster is used (``OUTRIDER_KAFKA_BOOTSTRAP``)."""
        return bool(os.environ.get(EXTERNAL_ENV))

    def start(self, *, keep: bool = False) -> str:
        """Start the broker (or reuse the one already running here); return its bootstrap.

        ``keep=True`` starts a stopped broker again with its ports and data (``start --keep``),
        for a broker outage that lasts a while; plain ``start`` of a stopped broker formats a
        fresh one."""
        if self.external:
            self.bootstrap = os.environ[EXTERNAL_ENV]
        else:
            args = ("start", "--keep") if keep else ("start",)
            self.bootstrap = self._last_line(self._run(*args, str(self.state_dir)))
        return self.bootstrap

    def restart(self) -> str:
        """Stop and start the same broker: same ports, same data, same committed offsets."""
        if self.external:
            raise LocalBrokerError(f"{EXTERNAL_ENV} is set: cannot restart an external cluster")
        self.bootstrap = self._last_line(self._run("restart", str(self.state_dir)))
        return self.bootstrap

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM, SIGKILL after 30 s); a no-op if it is not running."""
        if not self.external:
            self._run("stop", str(self.state_dir))

    def listeners(self) -> dict[str, str]:
        """Advertised ``host:port`` per listener name (``PLAINTEXT``, ``SASL_SSL``, ...)."""
        if self.external:
            return {"PLAINTEXT": os.environ[EXTERNAL_ENV]}
        props = (self.state_dir / "server.properties").read_text()
        out: dict[str, str] = {}
        for line in props.splitlines():
            if line.startswith("advertised.listeners="):
                for item in line.split("=", 1)[1].split(","):
                    name, _, address = item.partition("://")
                    out[name.strip()] = address.strip()
        return out

    def is_running(self) -> bool:
        """True if the broker process is alive and answers a metadata request."""
        if self.external:
            return True
        return self._run("status", str(self.state_dir), check=False).returncode == 0

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalBroker(state_dir={str(self.state_dir)!r}, bootstrap={self.bootstrap!r})"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if not self.script.is_file():
            raise LocalBrokerError(f"broker script not found: {self.script}")
        proc = subprocess.run(
            ["bash", str(self.script), *args],
            env={**os.environ, **self._env} if self._env else None,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise LocalBrokerError(
                f"local-kafka.sh {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()}"
            )
        return proc

    @staticmethod
    def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
        lines = proc.stdout.strip().splitlines()
        if not lines:
            raise LocalBrokerError(f"local-kafka.sh printed no bootstrap:\n{proc.stderr.strip()}")
        return lines[-1].strip()
