"""Health check for containers and probes: does this process answer on its metrics endpoint?

The metrics server runs inside the serving process, which exits when its pipeline fails, so an
answer with Outrider's metrics means the process is alive. Used by the Dockerfile's
HEALTHCHECK as ``python -m service.health`` (no curl in a slim image); Kubernetes probes
fetch the same endpoint with ``httpGet``.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

MARKER = b"outrider_events_consumed_total"  # always exported, from the first scrape on


def check(url: str, timeout: float) -> int:
    """0 if ``url`` answers 200 with Outrider's metrics within ``timeout`` seconds, else 1."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = resp.status
            body = resp.read(1 << 20)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200 or MARKER not in body:
        print(f"unhealthy: {url} answered {status} without Outrider metrics", file=sys.stderr)
        return 1
    return 0


def default_url() -> str:
    """The metrics endpoint of the process configured by ``OUTRIDER_*`` in this environment
    (always fetched over loopback: ``metrics_host`` may be 0.0.0.0)."""
    from service.settings import Settings

    return f"http://127.0.0.1:{Settings().metrics_port}/metrics"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outrider health", description=__doc__)
    parser.add_argument("url", nargs="?", help="default: http://127.0.0.1:<metrics port>/metrics")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    args = parser.parse_args(argv)
    return check(args.url or default_url(), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
