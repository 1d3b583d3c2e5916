"""Replay real captures onto a topic: AIT alert CSVs, Zeek conn.log TSV, JSON lines, raw log
lines (plain or gzip), in order, as fast as possible, at a fixed rate, or paced by recorded time
(xN).

Records are published as the JSON objects their source produced (a Zeek TSV row becomes the
record Zeek's JSON writer would have written), so the service maps them by configuration
exactly as it would map the live source; a raw log line is published as its UTF-8 bytes
(`encode_record`), as a syslog shipper would publish it.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import re
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from service.sources import parse_time

TIME_FIELDS = ("time", "ts", "@timestamp", "timestamp")
_ZEEK_NUMERIC = {"time", "interval", "double", "count", "int", "port"}


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


#: A CSV header: two or more comma-separated column names (a log line has ':' or no commas).
_CSV_HEADER = re.compile(r'^"?[A-Za-z_@][\w .@-]*"?(?:,"?[A-Za-z_@][\w .@-]*"?)+$')


def sniff_format(path: Path) -> str:
    """'zeek_tsv', 'csv', 'jsonl' or 'lines' (raw log lines), from the first line."""
    with _open_text(path) as f:
        first = f.readline()
    if "\x00" in first:
        raise ValueError(f"{path}: binary content, not a capture this tool reads")
    if first.startswith("#separator"):
        return "zeek_tsv"
    if first.lstrip().startswith("{"):
        return "jsonl"
    if _CSV_HEADER.match(first.strip()):
        return "csv"
    if first.strip():
        return "lines"
    raise ValueError(f"{path}: cannot tell the format from its first line")


def _zeek_value(text: str, ztype: str, unset: str, empty: str) -> Any:
    if text == empty:
        return ""
    base = ztype.split("[", 1)[0]
    if base in _ZEEK_NUMERIC:
        try:
            return float(text) if base in {"time", "interval", "double"} else int(text)
        except ValueError:
            return text
    if base == "bool":
        return text == "T"
    return text


def read_zeek_tsv(f: IO[str]) -> Iterator[dict[str, Any]]:
    """Zeek TSV (`#fields`/`#types` headers) rows as Zeek-JSON-shaped dicts; unset omitted."""
    fields: list[str] = []
    types: list[str] = []
    sep, unset, empty = "\t", "-", "(empty)"
    for line in f:
        line = line.rstrip("\n")
        if line.startswith("#"):
            key, _, rest = line.partition(sep if not line.startswith("#separator") else " ")
            if key == "#separator":
                sep = rest.encode().decode("unicode_escape")
            elif key == "#unset_field":
                unset = rest
            elif key == "#empty_field":
                empty = rest
            elif key == "#fields":
                fields = rest.split(sep)
            elif key == "#types":
                types = rest.split(sep)
            continue
        if not fields or not line:
            continue
        values = line.split(sep)
        types_ = types or ["string"] * len(fields)
        yield {
            name: _zeek_value(v, t, unset, empty)
            for name, v, t in zip(fields, values, types_, strict=False)
            if v != unset
        }


def read_csv(f: IO[str]) -> Iterator[dict[str, Any]]:
    for row in csv.DictReader(f):
        t = row.get("time")
        if t is not None:
            with contextlib.suppress(ValueError):  # not a number: the mapping will say so
                row["time"] = int(t) if t.isdigit() else float(t)  # type: ignore[assignment]
        yield row


def read_jsonl(f: IO[str]) -> Iterator[dict[str, Any]]:
    for line in f:
        line = line.strip()
        if line:
            obj = orjson.loads(line)
            yield obj if isinstance(obj, dict) else {"value": obj}


def read_lines(f: IO[str]) -> Iterator[str]:
    """Raw log lines (BGL, HDFS, syslog files), without their line ends; blank lines skipped."""
    for line in f:
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


def read_records(path: str | Path, order: str = "auto") -> list[Any]:
    """All records of a capture (dicts; strings for raw log lines); `order` 'time' sorts by
    recorded time, 'file' keeps file order, 'auto' sorts CSV (the AIT files are not sorted)
    and keeps the rest."""
    path = Path(path)
    fmt = sniff_format(path)
    reader: Any = {
        "zeek_tsv": read_zeek_tsv,
        "csv": read_csv,
        "jsonl": read_jsonl,
        "lines": read_lines,
    }[fmt]
    with _open_text(path) as f:
        records = list(reader(f))
    if order == "time" or (order == "auto" and fmt == "csv"):
        records.sort(key=lambda r: record_time(r) or 0.0)
    return records


def record_time(record: Any) -> float | None:
    if not isinstance(record, dict):  # a raw log line: its time is in its header, unparsed here
        return None
    for name in TIME_FIELDS:
        if name in record:
            t = parse_time(record[name])
            return t if isinstance(t, float) else None
    return None


def encode_record(record: Any) -> bytes:
    """The bytes to publish: a raw log line as its UTF-8 text, anything else as JSON."""
    if isinstance(record, str):
        return record.encode("utf-8")
    return orjson.dumps(record, default=str)


def record_bytes(records: Iterable[Any]) -> Iterator[bytes]:
    """`encode_record` of each record, in order."""
    for rec in records:
        yield encode_record(rec)


class Progress:
    """A progress bar on stderr (a line every few seconds when not a terminal)."""

    def __init__(self, total: int, label: str, stream: IO[str] | None = None) -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = self._last = time.monotonic()

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        frac = done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        text = f"{self.label} [{bar:<30}] {done}/{self.total} {frac:6.1%} {rate:,.0f} ev/s"
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def close(self, done: int) -> None:
        self.update(done, force=True)
        if self.tty:
            self.stream.write("\n")


def pace(
    records: Iterable[dict[str, Any]], rate: float = 0.0, speed: float = 0.0
) -> Iterator[dict[str, Any]]:
    """Yield records at `rate` per second, or at `speed` x their recorded pace, or at once."""
    start = time.monotonic()
    first_t: float | None = None
    for i, rec in enumerate(records):
        if rate > 0:
            wait = start + i / rate - time.monotonic()
        elif speed > 0 and (t := record_time(rec)) is not None:
            first_t = t if first_t is None else first_t
            wait = start + (t - first_t) / speed - time.monotonic()
        else:
            wait = 0.0
        if wait > 0:
            time.sleep(wait)
        yield rec


def replay(
    producer: Any,
    topic: str,
    records: list[Any],
    rate: float = 0.0,
    speed: float = 0.0,
    source: str | None = None,
    progress: bool = True,
) -> int:
    """Publish `records` to `topic`; returns how many the broker acknowledged."""
    headers = [("outrider-source", source.encode())] if source else None
    bar = Progress(len(records), f"replay -> {topic}") if progress else None
    n = 0
    for n, rec in enumerate(pace(records, rate, speed), start=1):
        producer.send(topic, encode_record(rec), headers=headers)
        if bar:
            bar.update(n)
    producer.flush()
    if bar:
        bar.close(n)
    return n


def is_raw_lines(records: list[Any]) -> bool:
    """True for a capture of raw log lines (published to the logs topic, not the events one)."""
    return bool(records) and isinstance(records[0], str)
