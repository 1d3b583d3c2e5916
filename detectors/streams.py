"""Stream context: what happens to whole alert streams, which per-event rarity cannot see.

A *stream* is the events sharing one (source, host) pair, e.g. one alert code on one host. Two
signals, each a flag on events that is known only some time after the event (a steady stream
is known to have stopped once it stayed quiet; an episode lacks its mirror once it is over):
ranking reads them retrospectively, so a group rises once its flag is confirmed.

- **silence**: a steady stream (it fired in >= `steady_share` of the `bucket_s` buckets of the
  `steady_s` before its last event) stops: no event for `silence_s`. Events on the same host
  in the `after_s` seconds after the stop are flagged: something changed on a host whose
  telemetry just went quiet (MITRE ATT&CK T1489 Service Stop, T1562 Impair Defenses: a service
  stopped, a beacon ended, a sensor died). The host's own steady streams (running around the
  stop, or stopping with it) are background there and not flagged.
- **mirror**: a stream whose episodes (runs of events with gaps <= `episode_gap_s`) were
  nearly always (>= `mirror_share` of at least `mirror_min_episodes`) matched within
  `mirror_within_s` seconds by the same source on another host (one DNS query seen by the DNS
  server's and the firewall's sensors; one flow by two taps) has an episode without it: the
  traffic took another path. Its events in that episode are flagged. A source seen on more
  than `mirror_max_hosts` hosts is fleet-wide, not a mirror pair, and is not watched so
  (which also bounds the work and memory per episode).

Our own design, measured on AIT (protocol v2, bench/README.md): on santos the DNS
exfiltration's beacon on internal_share (12,854 alerts) stops 14 s before the service stop the
attack step is labeled by; on shaw the DNS scan reaches the firewall's DNS rule without the
DNS server's. Both flags are rare on background traffic (1-10 benign groups of 107-154).

State: per stream its last event, recent buckets, open episode, a few closed episodes and how
often each mirror matched; the last `keep` stops per host and flagged episodes per stream; at
most `max_streams` streams (the ones quiet the longest are forgotten first).
Events are taken in time order; one older than its stream's last event counts at that time.
Where events of different streams arrive out of order (partitions read up to a window apart),
`lateness_s` delays every decision that waits for other streams' events by that much.

For a live service, `observe` also takes a reference per event and returns the references of
earlier events whose flag it has just confirmed (`Confirmed`): the events that may still be
flagged wait, at most `keep` per stream (and source), on the steady stream whose stop would
flag them or on their stream's open episode (not in the saved state: a restart forgets them).
"""

from __future__ import annotations

import heapq
import inspect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Key = tuple[str, str]  # (source, host)


@dataclass(frozen=True, slots=True)
class Confirmed:
    """An event's flag, confirmed: `reason` "silence" (`stream` stopped at `at`, just before
    the event) or "mirror" (the event's episode lacked `stream`, its usual mirror)."""

    ref: Any
    reason: str
    stream: Key
    at: float


@dataclass(slots=True)
class _Stream:
    last: float = -math.inf
    steady: bool = False  # steady as of its last event
    stop_noted: float = -math.inf  # the last event already recorded as a stop
    buckets: deque[int] = field(default_factory=deque)  # distinct buckets within steady_s
    open_a: float = math.nan  # open episode (nan: none)
    open_b: float = math.nan
    episodes: int = 0  # closed episodes
    mirrored: dict[Key, int] = field(default_factory=dict)  # mirror -> episodes it matched
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=16))
    mirror: Key | None = None  # the mirror its episodes nearly always had, once established
    waiting: dict[str, list[Any]] = field(default_factory=dict)  # source -> refs a stop flags
    episode_refs: list[Any] = field(default_factory=list)  # refs in its open episode


class StreamContext:
    """Silence and mirror flags over (source, host) streams; see the module docstring."""

    def __init__(
        self,
        silence_s: float = 3600.0,
        steady_s: float = 7200.0,
        steady_share: float = 0.9,
        bucket_s: float = 600.0,
        after_s: float = 300.0,
        episode_gap_s: float = 60.0,
        mirror_within_s: float = 5.0,
        mirror_min_episodes: int = 4,
        mirror_share: float = 0.9,
        keep: int = 64,
        lateness_s: float = 0.0,
        max_streams: int = 100_000,
        mirror_max_hosts: int = 16,
    ) -> None:
        self.options: dict[str, float] = {
            "silence_s": float(silence_s), "steady_s": float(steady_s),
            "steady_share": float(steady_share), "bucket_s": float(bucket_s),
            "after_s": float(after_s), "episode_gap_s": float(episode_gap_s),
            "mirror_within_s": float(mirror_within_s),
            "mirror_min_episodes": int(mirror_min_episodes),
            "mirror_share": float(mirror_share), "keep": int(keep),
            "lateness_s": float(lateness_s), "max_streams": int(max_streams),
            "mirror_max_hosts": int(mirror_max_hosts),
        }  # fmt: skip
        self.clock = -math.inf
        self.streams: dict[Key, _Stream] = {}
        self.by_source: dict[str, set[str]] = {}  # source -> hosts
        self.by_host: dict[str, set[str]] = {}  # host -> sources
        # host -> (stop time, stream, the host's sources that were steady around it)
        self.stops: dict[str, deque[tuple[float, Key, frozenset[str]]]] = {}
        self.lonely: dict[Key, deque[tuple[float, float]]] = {}  # stream -> unmirrored episodes
        self._due: list[tuple[float, Key]] = []  # (time an open episode may close, stream)
        self.steady_on: dict[str, set[str]] = {}  # host -> its sources steady now
        self._confirmed: list[Confirmed] = []
        self._holding: set[Key] = set()  # streams holding waiting references

    # -- observing ------------------------------------------------------------------------
    def observe(
        self, keys: Sequence[Key], times: np.ndarray, refs: Sequence[Any] | None = None
    ) -> list[Confirmed]:
        """Take events (their (source, host) and time) in time order; with `refs` (one per
        event), return the earlier events' flags this confirms (see the module docstring)."""
        o = self.options
        gap, silence, after = o["episode_gap_s"], o["silence_s"], o["after_s"]
        bucket_s, width = o["bucket_s"], max(round(o["steady_s"] / o["bucket_s"]), 1)
        steady_n, keep = o["steady_share"] * width, int(o["keep"])
        late = o.get("lateness_s", 0.0)
        streams, due, nan = self.streams, self._due, math.isnan
        tl = np.asarray(times, np.float64).tolist()
        prev: tuple[Key, float] | None = None
        s = _Stream()
        targets: list[list[Any]] = []  # the waiting lists the previous event joined
        for i in np.argsort(times, kind="stable").tolist():  # a hot loop: kept flat
            key, t = keys[i], tl[i]
            if prev is not None and prev[0] == key and prev[1] == t:  # an alert storm's repeat:
                if refs is not None:  # the stream is as the previous event left it
                    for waiting in targets:
                        if len(waiting) < keep:
                            waiting.append(refs[i])
                    if s.mirror is not None and len(s.episode_refs) < keep:
                        s.episode_refs.append(refs[i])
                continue
            prev, targets = (key, t), []
            if due and due[0][0] < t:
                self._close_due(t)
            found = streams.get(key)
            if found is None:
                found = streams[key] = _Stream()
                self.by_source.setdefault(key[0], set()).add(key[1])
                self.by_host.setdefault(key[1], set()).add(key[0])
            s = found
            if t < s.last:
                t = s.last
            if s.steady and t - s.last > silence:
                self._note_stop(key, s)
            if s.waiting:
                s.waiting = {}  # it fired again: no stop before these
            if refs is not None and not (s.steady and s.last >= t - bucket_s):
                for src in self.steady_on.get(key[1], ()):  # not background here: it waits
                    other = streams[(src, key[1])]  # on each steady stream just quiet
                    if src != key[0] and t - after <= other.last < t:
                        same = other.waiting.get(key[0])
                        if same is None and len(other.waiting) < keep:
                            same = other.waiting[key[0]] = [refs[i]]
                            self._holding.add((src, key[1]))
                            targets.append(same)
                        elif same is not None and len(same) < keep:
                            same.append(refs[i])
                            targets.append(same)
            if t - s.open_b <= gap:  # False while no episode is open (nan)
                s.open_b = t
            else:
                if not nan(s.open_a):
                    self._close(key, s)
                s.open_a = s.open_b = t
                heapq.heappush(due, (t + gap + late, key))
            if refs is not None and s.mirror is not None and len(s.episode_refs) < keep:
                s.episode_refs.append(refs[i])
                self._holding.add(key)
            s.last = t
            b = int(t // bucket_s)
            bk = s.buckets
            if not bk or bk[-1] != b:
                bk.append(b)
                while bk[0] <= b - width:
                    bk.popleft()
                steady = len(bk) >= steady_n
                if steady != s.steady:
                    on = self.steady_on.setdefault(key[1], set())
                    (on.add if steady else on.discard)(key[0])
                    s.steady = steady
        if tl:
            self.clock = max(self.clock, max(tl))
        if refs is not None:  # quiet long enough now: the streams events wait on
            for key in list(self._holding):
                s = self.streams[key]
                if s.waiting and s.steady and self.clock - s.last > silence + late:
                    self._note_stop(key, s)
        if len(streams) > o.get("max_streams", math.inf):
            self._evict(int(0.9 * o["max_streams"]))
        out, self._confirmed = self._confirmed, []
        return out

    def _evict(self, target: int) -> None:
        """Forget the streams quiet the longest (none an event waits on) down to `target`:
        memory stays bounded however many (source, host) pairs the traffic brings."""
        idle = sorted((k for k in self.streams if k not in self._holding),
                      key=lambda k: self.streams[k].last)  # fmt: skip
        for key in idle[: max(len(self.streams) - target, 0)]:
            src, host = key
            del self.streams[key]
            self.lonely.pop(key, None)
            for index, a, b in ((self.by_source, src, host), (self.by_host, host, src)):
                index[a].discard(b)
                if not index[a]:
                    del index[a]
            self.steady_on.get(host, set()).discard(src)
            for h in self.by_source.get(src, ()):  # it is no one's mirror any more
                other = self.streams[(src, h)]
                if other.mirrored.pop(key, None) is not None:
                    other.mirror = self._mirror_of(other)

    def settle(self, now: float | None = None) -> list[Confirmed]:
        """Confirm what the clock (or `now`) makes known: episodes over, steady streams quiet;
        returns the waiting events' flags this confirms."""
        now = self.clock if now is None else max(now, self.clock)
        late = self.options.get("lateness_s", 0.0)
        self._close_due(now)
        for key, s in self.streams.items():
            if s.steady and now - s.last > self.options["silence_s"] + late:
                self._note_stop(key, s)
        out, self._confirmed = self._confirmed, []
        return out

    def held_refs(self) -> set[Any]:
        """The references still waiting for a flag (the caller keeps what it needs of those
        events, and may forget every other)."""
        held: set[Any] = set()
        for key in list(self._holding):
            s = self.streams[key]
            if not s.waiting and not s.episode_refs:
                self._holding.discard(key)
            for refs in s.waiting.values():
                held.update(refs)
            held.update(s.episode_refs)
        return held

    def _close_due(self, now: float) -> None:
        gap = self.options["episode_gap_s"] + self.options.get("lateness_s", 0.0)
        while self._due and self._due[0][0] < now:
            _, key = heapq.heappop(self._due)
            s = self.streams.get(key)
            if s is None or math.isnan(s.open_a):  # forgotten, or closed already
                continue
            if s.open_b + gap < now:
                self._close(key, s)
            else:  # it grew since: due later
                heapq.heappush(self._due, (s.open_b + gap, key))

    def _close(self, key: Key, s: _Stream) -> None:
        a, b = s.open_a, s.open_b
        s.open_a = s.open_b = math.nan
        o = self.options
        w = o["mirror_within_s"]
        hosts = self.by_source.get(key[0], ())
        if len(hosts) > o.get("mirror_max_hosts", math.inf):  # fleet-wide, not a mirror pair:
            hosts = ()  # what fires on many hosts at once has no one host that must see it
            s.mirrored.clear()
        near = {
            (key[0], h)
            for h in hosts
            if h != key[1] and self._fired_within(self.streams[(key[0], h)], a - w, b + w)
        }
        missing = [
            m
            for m, n in s.mirrored.items()
            if s.episodes >= o["mirror_min_episodes"]
            and n >= o["mirror_share"] * s.episodes
            and m not in near
        ]
        if missing:
            self.lonely.setdefault(key, deque(maxlen=int(o["keep"]))).append((a, b))
            self._confirmed += [Confirmed(r, "mirror", missing[0], a) for r in s.episode_refs]
        s.episode_refs = []
        s.episodes += 1
        for m in near:
            s.mirrored[m] = s.mirrored.get(m, 0) + 1
        s.recent.append((a, b))
        s.mirror = self._mirror_of(s)

    def _mirror_of(self, s: _Stream) -> Key | None:
        """The mirror the stream's episodes nearly always had, once it has enough of them."""
        o = self.options
        if s.episodes < o["mirror_min_episodes"]:
            return None
        usual = [m for m, n in s.mirrored.items() if n >= o["mirror_share"] * s.episodes]
        return max(usual, key=lambda m: s.mirrored[m], default=None)

    @staticmethod
    def _fired_within(s: _Stream, lo: float, hi: float) -> bool:
        if not math.isnan(s.open_a) and s.open_a <= hi and s.open_b >= lo:
            return True
        for a, b in reversed(s.recent):  # newest first; episodes follow one another in time
            if b < lo:
                return False
            if a <= hi:
                return True
        return False

    def _note_stop(self, key: Key, s: _Stream) -> None:
        if s.stop_noted == s.last:
            return
        s.stop_noted = s.last
        near = s.last - self.options["bucket_s"]
        steady = frozenset(
            src
            for src in self.by_host.get(key[1], ())
            if (o := self.streams[(src, key[1])]).steady and o.last >= near
        )
        host = self.stops.setdefault(key[1], deque(maxlen=int(self.options["keep"])))
        host.append((s.last, key, steady | {key[0]}))
        self._confirmed += [
            Confirmed(r, "silence", key, s.last) for refs in s.waiting.values() for r in refs
        ]
        s.waiting = {}

    # -- flags ----------------------------------------------------------------------------
    def flags(self, keys: Sequence[Key], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(after a stop, in an unmirrored episode) for each event, as known now."""
        self.settle()
        n = len(keys)
        after, lonely = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        if n == 0 or not (self.stops or self.lonely):
            return after, lonely
        times = np.asarray(times, np.float64)
        span = self.options["after_s"]
        index: dict[Key, list[int]] = {}
        for i, k in enumerate(keys):
            index.setdefault(k, []).append(i)
        for key, rows in index.items():
            idx = np.array(rows)
            t = times[idx]
            for at, _, background in self.stops.get(key[1], ()):
                if key[0] not in background:
                    after[idx] |= (t > at) & (t <= at + span)
            for a, b in self.lonely.get(key, ()):
                lonely[idx] |= (t >= a) & (t <= b)
        return after, lonely

    # -- state ----------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        keys = list(self.streams)
        pos = {k: i for i, k in enumerate(keys)}
        ss = [self.streams[k] for k in keys]
        num = [[s.last, float(s.steady), s.stop_noted, s.open_a, s.open_b, float(s.episodes)]
               for s in ss]  # fmt: skip
        mirrored = [[i, pos[m], n] for i, s in enumerate(ss) for m, n in s.mirrored.items()]
        arrays = {
            "streams.num": np.array(num, np.float64).reshape(len(ss), 6),
            "streams.buckets_len": np.array([len(s.buckets) for s in ss], np.int64),
            "streams.buckets": np.array([b for s in ss for b in s.buckets], np.int64),
            "streams.mirrored": np.array(mirrored, np.int64).reshape(-1, 3),
            "streams.recent_len": np.array([len(s.recent) for s in ss], np.int64),
            "streams.recent": np.array([ab for s in ss for ab in s.recent], np.float64).reshape(
                -1, 2
            ),
            "streams.lonely": np.array(
                [[pos[k], a, b] for k, d in self.lonely.items() for a, b in d], np.float64
            ).reshape(-1, 3),
        }
        stops = [[at, k[0], k[1], sorted(bg)] for d in self.stops.values() for at, k, bg in d]
        # the references still waiting for a flag (the caller's, kept when JSON can hold
        # them): [stream, source a stop flags them for (None: its open episode), refs]
        held: list[list[Any]] = []
        for k in sorted(self._holding, key=pos.__getitem__):
            s = self.streams[k]
            held += [[pos[k], src, list(refs)] for src, refs in s.waiting.items()]
            if s.episode_refs:
                held.append([pos[k], None, list(s.episode_refs)])
        meta = {"options": self.options, "keys": [list(k) for k in keys], "stops": stops,
                "clock": None if not math.isfinite(self.clock) else self.clock,
                "held": held}  # fmt: skip
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> StreamContext:
        known = inspect.signature(cls).parameters  # options a newer version added are dropped
        ctx = cls(**{k: v for k, v in meta["options"].items() if k in known})
        ctx.clock = -math.inf if meta.get("clock") is None else float(meta["clock"])
        keys: list[Key] = [(str(a), str(b)) for a, b in meta["keys"]]
        num = arrays["streams.num"].reshape(-1, 6)
        blen, rlen = arrays["streams.buckets_len"], arrays["streams.recent_len"]
        if not (len(num) == len(blen) == len(rlen) == len(keys)):
            raise ValueError("stream context arrays do not match its keys")
        if blen.sum() != len(arrays["streams.buckets"]) or rlen.sum() != len(
            arrays["streams.recent"].reshape(-1, 2)
        ):
            raise ValueError("stream context buckets or episodes do not match their lengths")
        buckets = np.split(arrays["streams.buckets"], np.cumsum(blen)[:-1]) if len(keys) else []
        recent = (
            np.split(arrays["streams.recent"].reshape(-1, 2), np.cumsum(rlen)[:-1])
            if len(keys)
            else []
        )
        gap = ctx.options["episode_gap_s"] + ctx.options.get("lateness_s", 0.0)
        for i, key in enumerate(keys):
            last, steady, noted, oa, ob, eps = num[i].tolist()
            s = _Stream(last=last, steady=bool(steady), stop_noted=noted, open_a=oa, open_b=ob,
                        episodes=int(eps), buckets=deque(int(b) for b in buckets[i]))  # fmt: skip
            s.recent.extend((float(a), float(b)) for a, b in recent[i])
            ctx.streams[key] = s
            ctx.by_source.setdefault(key[0], set()).add(key[1])
            ctx.by_host.setdefault(key[1], set()).add(key[0])
            if s.steady:
                ctx.steady_on.setdefault(key[1], set()).add(key[0])
            if not math.isnan(ob):
                heapq.heappush(ctx._due, (ob + gap, key))
        for i, j, n in arrays["streams.mirrored"].reshape(-1, 3).tolist():
            ctx.streams[keys[i]].mirrored[keys[j]] = int(n)
        for s in ctx.streams.values():
            s.mirror = ctx._mirror_of(s)
        keep = int(ctx.options["keep"])
        for at, src, host, bg in meta.get("stops", []):
            stop = (float(at), (str(src), str(host)), frozenset(map(str, bg)))
            ctx.stops.setdefault(str(host), deque(maxlen=keep)).append(stop)
        for k, a, b in arrays["streams.lonely"].reshape(-1, 3).tolist():
            ctx.lonely.setdefault(keys[int(k)], deque(maxlen=keep)).append((float(a), float(b)))
        for i, src, refs in meta.get("held", []):  # states before 2026-12-05 have none
            s = ctx.streams[keys[int(i)]]
            if src is None:
                s.episode_refs = list(refs)
            else:
                s.waiting[str(src)] = list(refs)
            ctx._holding.add(keys[int(i)])
        return ctx
