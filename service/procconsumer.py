"""kafka-python consuming in a child process: the client's record parsing runs beside the chain.

kafka-python parses every record in Python, ~4-5 us per record on our 2-core VM, and the chain
scores in Python too; in one process (one GIL) the two take turns, so the pipeline cannot go
faster than the sum of both. `--consumer-process` (the default with kafka-python) moves the
same `KafkaConsumer` into a child process (`python -m service.procconsumer`): it fetches and
parses the next batches while the parent scores the current one, and hands them over a pipe as
one frame per poll (offsets, timestamps and keys as JSON, values as one byte string).

`ProcessConsumer` answers the calls `KafkaIO` makes of a consumer (poll, assignment, commits,
seek, highwater, position, close), so the chain and its delivery promise do not change:
- offsets are committed by the child, only when `KafkaIO` asks, only for partitions the child
  still owns;
- the child reads ahead at most `READ_AHEAD_BATCHES` batches of records; a `seek` (a
  refused publish rewinds) drops what was read ahead and puts every partition back where the
  chain is: the sought offset, or the offset after the last record handed to the chain;
- the child dies with its parent: end of input on its command pipe closes the consumer (it
  leaves the group at once, commits nothing) and exits; a dead child raises
  `ConsumerProcessDied` in the parent at its next call, so the service stops rather than
  waiting forever (at-least-once: uncommitted work is redone by whoever restarts it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from itertools import accumulate, repeat
from typing import IO, Any, BinaryIO

import orjson
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from service.logsetup import configure_logging
from service.records import ConsumedRecord
from service.settings import Settings
from service.timealign import TimeAligner

log = logging.getLogger(__name__)

#: Batches of records the child may read ahead of the chain: it keeps fetching while the
#: chain scores (counted in frames, small frames of paced traffic stopped it early and added
#: ~10 ms to the median latency), and the memory read ahead stays bounded.
READ_AHEAD_BATCHES = 2
#: How long one poll of the child waits for records, ms; it returns as soon as records come,
#: and the parent's commands wait for it. kafka-python 3.0 gives up a group coordinator
#: lookup that a poll's timeout cut short and starts it again: with 20 ms polls on our
#: loaded two cores a child never joined its group. Until it holds partitions, it polls for
#: JOIN_POLL_MS.
CHILD_POLL_MS = 100
JOIN_POLL_MS = 1000
#: Seconds between two status frames of an idle child (assignment, end offsets: the lag).
STATUS_EVERY_S = 1.0
#: Seconds `close` and a synchronous commit wait for the child.
ANSWER_TIMEOUT_S = 30.0

_LEN = struct.Struct(">I")
BATCH, STATUS, COMMITTED, FAILED = b"B", b"S", b"C", b"E"


#: Seconds a poll that failed for a broker outage waits before the next one.
OUTAGE_RETRY_S = 0.1
#: Seconds between two warnings of the same outage.
OUTAGE_WARN_EVERY_S = 10.0
_last_outage_warning = [0.0]


def poll_through_outage(consumer: Any, timeout_ms: int, max_records: int | None = None) -> dict:
    """kafka-python's `poll`, where a broker outage reads as a poll that brought nothing:
    kafka-python 3.0 raises a connection error out of `poll` when a metadata refresh finds no
    broker (the consumer process died of it mid-outage in CI, 2026-12-04), and reconnects by
    itself at the next poll. Other errors still raise. Every kafka-python consumer of the
    service polls through it (events, feedback, models, the trainer's alerts)."""
    try:
        return consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        now = time.monotonic()
        if now - _last_outage_warning[0] >= OUTAGE_WARN_EVERY_S:
            _last_outage_warning[0] = now
            log.warning("consuming paused, the broker is unreachable; retrying: %s", exc)
        time.sleep(min(max(timeout_ms, 0) / 1000, OUTAGE_RETRY_S))
        return {}


class ConsumerProcessDied(RuntimeError):
    """The child consuming the events is gone; the service cannot go on without it."""


_WRITING = threading.Lock()


def write_frame(out: IO[bytes], kind: bytes, meta: Any, blob: bytes = b"") -> None:
    """One frame: length, kind, JSON length, JSON, then the raw bytes; written whole, in one
    call under a lock, so no other thread's frame can cut into it (kafka-python 3.0 runs
    commit callbacks inside `poll`, on the child's main thread; the lock keeps that its
    detail, not an assumption of the pipe)."""
    head = orjson.dumps(meta)
    frame = b"".join(
        (_LEN.pack(1 + 4 + len(head) + len(blob)), kind, _LEN.pack(len(head)), head, blob)
    )
    with _WRITING:
        out.write(frame)
        out.flush()


def read_frame(inp: BinaryIO) -> tuple[bytes, Any, bytes] | None:
    """The next frame (kind, meta, blob), None at end of input."""
    head = inp.read(4)
    if len(head) < 4:
        return None
    (size,) = _LEN.unpack(head)
    body = inp.read(size)
    if len(body) < size:
        return None
    (meta_len,) = _LEN.unpack_from(body, 1)
    return body[:1], orjson.loads(body[5 : 5 + meta_len]), body[5 + meta_len :]


def _latin(b: bytes | None) -> str | None:
    """Bytes as a JSON-safe string, losslessly (keys, header values)."""
    return None if b is None else b.decode("latin-1")


def _decode_batch(meta: dict[str, Any], blob: bytes) -> list[ConsumedRecord]:
    """The records of a batch frame, in the order the child polled them."""
    records: list[ConsumedRecord] = []
    pos = 0
    for part in meta["parts"]:
        sizes: list[int] = part["n"]
        values: list[bytes | None]
        if min(sizes) >= 0:  # the usual part: every record has a value
            ends = list(accumulate(sizes, initial=pos))
            values = list(map(blob.__getitem__, map(slice, ends[:-1], ends[1:])))
            pos = ends[-1]
        else:  # a tombstone (no value) among them
            values = []
            for size in sizes:
                values.append(None if size < 0 else blob[pos : pos + size])
                pos += max(size, 0)
        n = len(sizes)
        got = list(
            map(
                ConsumedRecord,
                repeat(part["t"], n),
                repeat(part["p"], n),
                part["o"],
                part["ts"],
                values,
            )
        )
        for rec, key in zip(got, part.get("k") or (), strict=False):
            if key is not None:
                rec.key = key.encode("latin-1")
        for rec, pairs in zip(got, part.get("h") or (), strict=False):
            if pairs:
                rec.headers = [(k, (v or "").encode("latin-1")) for k, v in pairs]
        records.extend(got)
    return records


class ProcessConsumer:
    """A kafka-python consumer in a child process, answering as `KafkaIO` asks."""

    def __init__(
        self, settings: Settings, topics: list[str], client_id: str, max_records: int
    ) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "service.procconsumer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=1 << 20,
        )
        assert self._child.stdin is not None and self._child.stdout is not None
        self._to_child = self._child.stdin
        data = settings.model_dump(mode="json")
        if settings.sasl_password is not None:  # a secret goes through the pipe only
            data["sasl_password"] = settings.sasl_password.get_secret_value()
        self._send(
            {
                "op": "start",
                "settings": data,
                "topics": topics,
                "client_id": client_id,
                "max_records": max_records,
            }
        )
        self._frames: queue.Queue[tuple[bytes, Any, bytes] | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, args=(self._child.stdout,), name="consumer-pipe", daemon=True
        )
        self._reader.start()
        self._epoch = 0
        self._ready: list[ConsumedRecord] = []
        self._seeks: dict[TopicPartition, int] = {}
        self._delivered: dict[TopicPartition, int] = {}  # offset after the last handed out
        self._assignment: set[TopicPartition] = set()
        self._high: dict[TopicPartition, int] = {}
        self._child_pos: dict[TopicPartition, int] = {}
        self._commit_id = 0
        self._callbacks: dict[int, tuple[Any, Callable[[Any, Any], None] | None]] = {}
        self._answers: dict[int, str | None] = {}
        self._dead: str | None = None

    # -- the pipe -------------------------------------------------------------------------
    def _send(self, command: dict[str, Any]) -> None:
        try:
            write_frame(self._to_child, b"P", command)
        except (BrokenPipeError, ValueError, OSError):
            raise ConsumerProcessDied(self._death()) from None

    def _read(self, stdout: BinaryIO) -> None:
        while (frame := read_frame(stdout)) is not None:
            self._frames.put(frame)
        self._frames.put(None)

    def _death(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._child.wait(1.0)
        why = self._dead or "no reason given"
        return f"the consumer process exited ({self._child.returncode}): {why}"

    def _take(self, timeout_s: float) -> bool:
        """Handle the next frame from the child, waiting at most `timeout_s`; False when none
        came."""
        try:
            if timeout_s > 0:
                frame = self._frames.get(timeout=timeout_s)
            else:
                frame = self._frames.get_nowait()
        except queue.Empty:
            return False
        if frame is None:
            self._frames.put(None)  # every later call sees the death too
            raise ConsumerProcessDied(self._death())
        kind, meta, blob = frame
        if kind == COMMITTED:
            self._answered(meta["id"], meta.get("error"))
            return True
        if kind == FAILED:
            self._dead = meta.get("error")
            return True
        self._status(meta)
        if kind == BATCH:
            self._send({"op": "credit", "n": sum(len(p["o"]) for p in meta["parts"])})
            if meta["epoch"] == self._epoch:  # else read before a seek: dropped
                self._ready.extend(_decode_batch(meta, blob))
        return True

    def _status(self, meta: dict[str, Any]) -> None:
        owned = {TopicPartition(t, p) for t, p in meta["assign"]}
        if self._assignment - owned and self._ready:  # a rebalance took partitions: their
            # records read ahead are the new owner's now (as kafka-python drops its buffer)
            keep = [r for r in self._ready if TopicPartition(r.topic, r.partition) in owned]
            self._ready = keep
        self._assignment = owned
        self._high = {TopicPartition(t, p): h for t, p, h in meta["high"]}
        if "pos" in meta:
            self._child_pos = {TopicPartition(t, p): o for t, p, o in meta["pos"]}
        for tp in [tp for tp in self._delivered if tp not in self._assignment]:
            del self._delivered[tp]

    def _answered(self, commit_id: int, error: str | None) -> None:
        offsets, callback = self._callbacks.pop(commit_id, (None, None))
        if callback is not None:
            callback(offsets, None if error is None else CommitFailedError(error))
        else:
            self._answers[commit_id] = error

    # -- records --------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[str, list[ConsumedRecord]]:
        """Up to `max_records` records read ahead by the child, waiting at most `timeout_ms`
        for the first ones (kafka-python's shape: records by source; here one list)."""
        if self._seeks:
            self._restart_reading()
        deadline = time.monotonic() + timeout_ms / 1000
        while len(self._ready) < max_records and self._take(0):  # what already came
            pass
        while not self._ready and self._take(deadline - time.monotonic()):
            pass
        if not self._ready:
            return {}
        out, self._ready = self._ready[:max_records], self._ready[max_records:]
        nxt = {(r.topic, r.partition): r.offset + 1 for r in out}  # in offset order: last wins
        for (topic, partition), offset in nxt.items():
            self._delivered[TopicPartition(topic, partition)] = offset
        return {"records": out}

    def _restart_reading(self) -> None:
        """Apply the seeks: the child drops what it read ahead and reads every partition from
        where the chain is (the sought offset, or after the last record handed out)."""
        self._epoch += 1
        to = dict(self._delivered)
        to.update(self._seeks)
        self._delivered.update(self._seeks)
        self._seeks.clear()
        self._ready.clear()
        where = [[tp.topic, tp.partition, o] for tp, o in to.items()]
        self._send({"op": "seek", "epoch": self._epoch, "to": where})

    # -- partitions and offsets -----------------------------------------------------------
    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def commit_async(
        self,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        callback: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Send the commit; `callback(offsets, exception)` runs on a failure, `callback(offsets,
        None)` on success (from a later poll, when the child's answer comes)."""
        self._commit_id += 1
        self._callbacks[self._commit_id] = (offsets, callback or (lambda *_: None))
        try:
            self._send_commit(offsets, sync=False)
        except ConsumerProcessDied as exc:  # the next poll says so; this commit is lost
            self._callbacks.pop(self._commit_id)
            if callback is not None:
                callback(offsets, exc)

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit synchronously; CommitFailedError (what `KafkaIO` expects) on refusal."""
        self._commit_id += 1
        commit_id = self._commit_id
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        try:
            self._send_commit(offsets, sync=True)
            while commit_id not in self._answers:
                if time.monotonic() > deadline:
                    raise CommitFailedError("the consumer process did not answer the commit")
                self._take(deadline - time.monotonic())
        except ConsumerProcessDied as exc:
            raise CommitFailedError(str(exc)) from None
        error = self._answers.pop(commit_id)
        if error is not None:
            raise CommitFailedError(error)

    def _send_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], sync: bool) -> None:
        self._send(
            {
                "op": "commit",
                "id": self._commit_id,
                "sync": sync,
                "offsets": [[tp.topic, tp.partition, om.offset] for tp, om in offsets.items()],
            }
        )

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read `tp` from `offset` next (applied at the next poll)."""
        self._seeks[tp] = offset

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as of the child's last fetch (no request)."""
        return self._high.get(tp)

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int | None:
        """The next offset the chain will get of `tp` (not the child's read-ahead)."""
        if tp in self._seeks:
            return self._seeks[tp]
        return self._delivered.get(tp, self._child_pos.get(tp))

    def close(self, autocommit: bool = False) -> None:
        """Stop the child: it leaves the group and exits (offsets are committed by `KafkaIO`
        only)."""
        with contextlib.suppress(ConsumerProcessDied):
            self._send({"op": "close"})
        with contextlib.suppress(OSError):
            self._to_child.close()
        try:
            self._child.wait(ANSWER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("the consumer process did not stop; killed")
            self._child.kill()
            self._child.wait()
        self._reader.join(5)


# -- the child ----------------------------------------------------------------------------
class _Child:
    """The child's loop: poll while the parent has room for records (its credit, in records),
    obey its commands in order."""

    def __init__(self, out: BinaryIO, commands: queue.Queue[dict[str, Any] | None]) -> None:
        self.out, self.commands = out, commands
        self.credit, self.epoch, self.closing = 0, 0, False
        self.last_status = 0.0
        # per partition, the first offset sent since the parent last said where it is: what
        # a seek must go back to for a partition the parent has handed nothing of yet
        self.base: dict[TopicPartition, int] = {}
        self.owned: set[TopicPartition] = set()  # the assignment as of the last poll
        self.consumer: Any = None
        self.aligner = TimeAligner(0)  # set from the settings at start

    def run(self, start: dict[str, Any]) -> None:
        from service.kafka_io import kafka_python_consumer

        settings = Settings(**start["settings"])
        self.consumer = kafka_python_consumer(
            settings, start["topics"], start["client_id"], start["max_records"]
        )
        self.max_records = start["max_records"]
        self.credit = READ_AHEAD_BATCHES * self.max_records
        self.aligner = TimeAligner(int(settings.align_partitions_s * 1000))
        try:
            while not self.closing:
                self._obey(wait_s=0.0 if self.credit > 0 else 0.05)
                if self.closing:
                    break
                if self.credit > 0:
                    self._poll()
                elif time.monotonic() - self.last_status > STATUS_EVERY_S:
                    self._write(STATUS, self._state())
        finally:
            self.consumer.close(autocommit=False)

    def _obey(self, wait_s: float) -> None:
        try:
            command = self.commands.get(timeout=wait_s) if wait_s else self.commands.get_nowait()
        except queue.Empty:
            return
        while True:
            if command is None or command["op"] == "close":
                self.closing = True
                return
            getattr(self, "_op_" + command["op"])(command)
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return

    def _op_credit(self, command: dict[str, Any]) -> None:
        self.credit += command["n"]

    def _op_seek(self, command: dict[str, Any]) -> None:
        """Every partition goes back to where the parent is: the offset it names, or, for a
        partition it has had nothing of, the first offset sent (all of it is dropped)."""
        self.epoch = command["epoch"]
        owned = self.consumer.assignment()
        to = {TopicPartition(t, p): offset for t, p, offset in command["to"]}
        sought = set()
        for tp in owned:
            where = to.get(tp, self.base.get(tp))
            if where is not None:
                self.consumer.seek(tp, where)
                sought.add(tp)
        self.aligner.forget(self.consumer, sought)  # the others: back to what it stashed
        self.base = {tp: self.base[tp] for tp in owned if tp in self.base and tp not in to}

    def _op_commit(self, command: dict[str, Any]) -> None:
        owned = self.consumer.assignment()
        offsets = {
            TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
            for t, p, o in command["offsets"]
            if TopicPartition(t, p) in owned
        }
        commit_id = command["id"]
        if not offsets:
            self._write(COMMITTED, {"id": commit_id, "error": None})
            return
        if not command["sync"]:

            def answer(_offsets: Any, response: Any) -> None:
                error = str(response) if isinstance(response, Exception) else None
                self._write(COMMITTED, {"id": commit_id, "error": error})

            self.consumer.commit_async(offsets, callback=answer)
            return
        try:
            self.consumer.commit(offsets)
        except Exception as exc:  # refused (rebalance): the parent decides
            self._write(COMMITTED, {"id": commit_id, "error": f"{type(exc).__name__}: {exc}"})
        else:
            self._write(COMMITTED, {"id": commit_id, "error": None})

    def _poll(self) -> None:
        wait_ms = CHILD_POLL_MS if self.owned else JOIN_POLL_MS
        room = min(self.max_records, self.credit)
        polled = self.aligner.poll(self.consumer, wait_ms, room)  # partitions in step
        owned = self.consumer.assignment()  # a poll is where a rebalance happens
        rebalanced = owned != self.owned
        if rebalanced:  # each partition restarts at its commit: nothing sent before counts
            self.base, self.owned = {}, owned
        if not polled:
            if rebalanced or time.monotonic() - self.last_status > STATUS_EVERY_S:
                self._write(STATUS, self._state())
            return
        parts, values = [], []
        for tp, records in polled.items():
            self.base.setdefault(tp, records[0].offset)
            sizes = []
            for r in records:
                if r.value is None:
                    sizes.append(-1)
                else:
                    sizes.append(len(r.value))
                    values.append(r.value)
            part: dict[str, Any] = {
                "t": tp.topic,
                "p": tp.partition,
                "o": [r.offset for r in records],
                "ts": [r.timestamp for r in records],
                "n": sizes,
            }
            if any(r.key is not None for r in records):
                part["k"] = [_latin(r.key) for r in records]
            if any(r.headers for r in records):
                part["h"] = [[[k, _latin(v)] for k, v in r.headers or ()] for r in records]
            parts.append(part)
        meta = self._state(positions=rebalanced)
        meta["epoch"], meta["parts"] = self.epoch, parts
        self.credit -= sum(map(len, polled.values()))
        self._write(BATCH, meta, b"".join(values))

    def _state(self, positions: bool = True) -> dict[str, Any]:
        """What the parent knows of the partitions: the assignment and end offsets (cheap,
        on every frame); the positions (a client call per partition: on status frames, and
        after a rebalance) for the lag of partitions the chain has no record of."""
        owned = self.owned
        high = []
        for tp in owned:
            h = self.consumer.highwater(tp)
            if h is not None:
                high.append([tp.topic, tp.partition, h])
        state: dict[str, Any] = {"assign": [[tp.topic, tp.partition] for tp in owned], "high": high}
        if positions:
            pos = []
            for tp in owned:
                with contextlib.suppress(Exception):
                    p = self.consumer.position(tp, timeout_ms=0)
                    if p is not None:
                        pos.append([tp.topic, tp.partition, p])
            state["pos"] = pos
            self.last_status = time.monotonic()
        return state

    def _write(self, kind: bytes, meta: Any, blob: bytes = b"") -> None:
        write_frame(self.out, kind, meta, blob)


def _commands(inp: BinaryIO, into: queue.Queue[dict[str, Any] | None]) -> None:
    """The parent's commands, in order; None when the parent is gone (its end of the pipe
    closed: it exited, or was killed)."""
    while (frame := read_frame(inp)) is not None:
        into.put(frame[1])
    into.put(None)


def main() -> None:
    """The child: frames out on the original stdout, which nothing else may write to."""
    # the parent stops the child (and a terminal's Ctrl-C or a service manager's SIGTERM
    # reaches the whole process group): the child must outlive the parent's final commit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, not into the frames
    inp = os.fdopen(0, "rb")
    first = read_frame(inp)
    if first is None:
        return
    start = first[1]
    configure_logging(start["settings"].get("log_level", "INFO"))
    commands: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_commands, args=(inp, commands), daemon=True).start()
    child = _Child(out, commands)
    try:
        child.run(start)
    except BrokenPipeError:  # the parent is gone
        pass
    except BaseException as exc:
        with contextlib.suppress(Exception):
            write_frame(out, FAILED, {"error": f"{type(exc).__name__}: {exc}"})
        raise


if __name__ == "__main__":
    main()
