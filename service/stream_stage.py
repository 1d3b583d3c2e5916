"""Stream alerts: a kind's (source, host) streams watched for silence and lost mirrors.

Per-event rarity cannot see that a host's steady stream just went quiet (a service stopped, a
beacon ended) or that an alert fired on one host without the host that always sees it too
(traffic took another path): both are properties of whole streams, known only some time after
the event (detectors/streams.py). For a kind that declares `streams = [source, host]`, every
scored event is watched; the events whose flag is later confirmed (an event on a host just
after one of its steady streams stopped; the events of an episode that lacked its mirror)
become *stream alerts*, one per pattern and finding: the event's own alert fields and
explanation, its own alert id (the event's origin and the reason), a `stream_context`
attribute saying what happened, and a lift of its group in the analysts' ranking. On AIT
this is what brought the DNS exfiltration's service stop (santos) and the DNS scan (shaw) up
(bench/README.md).

The streams' history (steadiness, episodes, mirrors, recent stops) is saved with the model's
checkpoint and restored with it, and so are the events waiting for a flag (at most `keep` per
stream and source, and `WAITING_SAVED` per kind): their records' bytes, score and percentile,
decoded again on restore, so a stop or a lonely episode confirmed after a restart still
raises its alerts. What a crash loses is what the model loses: the time since the last
checkpoint.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from detectors.base import arrays_under
from detectors.streams import Confirmed, StreamContext
from schemas import ModelRef
from service.decode import DecodedEvent
from service.outputs import alert_id, build_alerts
from service.records import ConsumedRecord
from service.scoring import ScoredKind
from service.sources import SourceConfig

#: How far a stream alert lifts its group among the unread ones, in standard deviations of
#: the groups' ranking scores. Measured through the service on AIT (bench.product, in-sample;
#: bench/README.md, "Stream alerts through the service"): 1.8 / 1.4 (the library's weights 4
#: and 3 over a spread of ~2.2) left russellmitchell at 24 groups to every step with
#: verdicts, 2.2 / 1.8 reads at most 18 on all four captures; 3 / 3 buries other steps.
STREAM_LIFT = {"silence": 2.2, "mirror": 1.8}
REASONS = tuple(STREAM_LIFT)
#: Stream alerts remembered for a redo (far more than the batches that can be in flight hold).
EMITTED_KEPT = 10_000
#: A stream alert's severity: a finding about a host's streams, not a calibrated score.
STREAM_SEVERITY = "medium"
#: Waiting events saved per kind with a checkpoint (the newest; the rest are forgotten).
WAITING_SAVED = 20_000

Waiting = tuple[DecodedEvent, float, float]  # the event, its score, its percentile


class StreamStage:
    """Watch every scored event of the kinds with `streams`; alert on confirmed flags."""

    def __init__(
        self,
        config: SourceConfig,
        explain: Callable[[str, Sequence[DecodedEvent]], ScoredKind],
        context: Callable[[], StreamContext] = StreamContext,
    ) -> None:
        self.fields: dict[str, tuple[int, int]] = {
            kind: (spec.entities.index(spec.streams[0]), spec.entities.index(spec.streams[1]))
            for kind, spec in config.kinds.items()
            if spec.streams is not None
        }
        self.explain = explain
        self._new_context = context
        self.contexts: dict[str, StreamContext] = {}
        self.waiting: dict[str, dict[int, Waiting]] = {}
        self._next_ref = 0
        #: the consumed records behind the last `process` call's alerts (their trace context
        #: goes with them: an event confirmed now may have come in an earlier batch)
        self.records: list[Any] = []
        self._emitted: OrderedDict[str, Any] = OrderedDict()  # alert id -> record (recent)
        self._resend: list[tuple[dict[str, Any], Any]] = []

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The streams' history and waiting events per kind: arrays (for the checkpoint's
        tensors) and JSON."""
        arrays, meta = {}, {}
        for kind, ctx in self.contexts.items():
            ctx_arrays, meta[kind] = ctx.state()
            arrays.update({f"streams/{kind}/{k}": v for k, v in ctx_arrays.items()})
            waiting = sorted(self.waiting.get(kind, {}).items())[-WAITING_SAVED:]
            w_arrays, meta[kind]["waiting"] = _pack_waiting(waiting)
            arrays.update({f"stream_waiting/{kind}/{k}": v for k, v in w_arrays.items()})
            meta[kind]["next_ref"] = self._next_ref
        return arrays, meta

    def restore(
        self,
        arrays: dict[str, np.ndarray],
        meta: dict[str, Any],
        decode: Callable[[list[ConsumedRecord]], Sequence[DecodedEvent]] | None = None,
    ) -> None:
        """Take back the history `state` saved, for the kinds that still declare streams
        (ValueError when the arrays do not match); this process's options win over the saved
        ones (a changed setting applies after a restart too). With `decode`, the waiting
        events come back too (a record that no longer decodes is forgotten)."""
        options = self._new_context().options
        for kind, ctx_meta in meta.items():
            if kind in self.fields:
                saved = {**ctx_meta, "options": {**ctx_meta.get("options", {}), **options}}
                own = arrays_under(arrays, f"streams/{kind}/")
                self.contexts[kind] = StreamContext.from_state(own, saved)
                self._next_ref = max(self._next_ref, int(ctx_meta.get("next_ref", 0)))
                if decode is not None and "waiting" in ctx_meta:
                    own = arrays_under(arrays, f"stream_waiting/{kind}/")
                    self.waiting[kind] = _unpack_waiting(own, ctx_meta["waiting"], decode)

    def process(self, scored: Sequence[ScoredKind], model: ModelRef) -> list[dict[str, Any]]:
        """Feed a batch's scored kinds; returns the stream alerts its events confirmed."""
        alerts = [a for a, _ in self._resend]  # of batches being redone, first
        self.records = [r for _, r in self._resend]
        self._resend = []
        for part in scored:
            if part.kind in self.fields and part.events:
                alerts += self._alerts(part.kind, self._watch(part), model)
        return alerts

    def resend(self, alerts: Sequence[dict[str, Any]]) -> None:
        """The outputs of batches being redone were not acknowledged: their stream alerts go
        out again with the next batch (the redo does not confirm them again: the streams
        have moved on). Same ids, so a copy that did arrive is folded, never counted twice."""
        for alert in alerts:
            record = self._emitted.get(alert["alert_id"])
            if record is not None and "stream_context" in alert.get("attributes", {}):
                self._resend.append((alert, record))

    def _watch(self, part: ScoredKind) -> list[tuple[Confirmed, Waiting]]:
        """Observe a kind's scored events; keep the ones still waiting for a flag, return the
        ones (of this batch or earlier) whose flag this batch confirmed."""
        src, host = self.fields[part.kind]
        ctx = self.contexts.get(part.kind)
        if ctx is None:
            ctx = self.contexts[part.kind] = self._new_context()
        held = self.waiting.get(part.kind, {})
        base, n = self._next_ref, len(part.events)
        self._next_ref += n
        rows = [ev.row for ev in part.events]
        times = np.fromiter((ev.event.time for ev in part.events), np.float64, n)
        confirmed = ctx.observe([(r[src], r[host]) for r in rows], times, range(base, base + n))
        scores, pcts = part.scores.tolist(), part.percentiles.tolist()
        live = ctx.held_refs()
        here = {}  # this batch's events that matter: confirmed already, or still waiting
        for ref in [c.ref for c in confirmed] + sorted(live):
            if ref >= base:
                i = ref - base
                here[ref] = (part.events[i], scores[i], pcts[i])
        known = {**held, **here}
        self.waiting[part.kind] = {r: known[r] for r in live if r in known}
        return [(c, known[c.ref]) for c in confirmed if c.ref in known]

    def _alerts(
        self, kind: str, found: list[tuple[Confirmed, Waiting]], model: ModelRef
    ) -> list[dict[str, Any]]:
        # one alert per pattern and finding: a stop or a lonely episode flags up to `keep`
        # events of a pattern, and the analyst needs the finding, not each repetition
        first: dict[tuple, tuple[Confirmed, Waiting]] = {}
        for c, m in found:
            first.setdefault((c.reason, c.stream, c.at, m[0].row), (c, m))
        found = list(first.values())
        if not found:
            return []
        events = [m[0] for _, m in found]
        self.records += [ev.record for ev in events]
        part = self.explain(kind, events)  # explanations and what the model knew, now
        part.scores = np.array([m[1] for _, m in found], np.float64)
        part.percentiles = np.nan_to_num(np.array([m[2] for _, m in found], np.float64))
        # by origin: the record and its findings (one event may have two)
        by_origin: dict[tuple[str, int, int], tuple[Any, list[Confirmed]]] = {}
        for (c, _), ev in zip(found, events, strict=True):
            rec = ev.record
            by_origin.setdefault((rec.topic, rec.partition, rec.offset), (rec, []))[1].append(c)
        out = []
        for alert in build_alerts(part, model):
            o = alert["origin"]
            rec, findings = by_origin[(o["topic"], o["partition"], o["offset"])]
            c = findings.pop()
            alert["alert_id"] = alert_id(
                o["topic"], o["partition"], o["offset"], f"{model.version}\x1fstream:{c.reason}"
            )
            alert["severity"] = STREAM_SEVERITY
            alert["attributes"]["stream_context"] = stream_context(c, alert["event_time"])
            out.append(alert)
            self._emitted[alert["alert_id"]] = rec
        while len(self._emitted) > EMITTED_KEPT:
            self._emitted.popitem(last=False)
        return out


def _pack_waiting(
    waiting: Sequence[tuple[int, Waiting]],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Waiting events as arrays (numbers, the records' bytes) and JSON (topics, keys and
    headers, base64)."""
    recs = [w[0].record for _, w in waiting]
    num = [[ref, score, pct, r.partition, r.offset, -1 if r.timestamp is None else r.timestamp]
           for (ref, (_, score, pct)), r in zip(waiting, recs, strict=True)]  # fmt: skip
    values = [r.value or b"" for r in recs]
    arrays: dict[str, np.ndarray] = {
        "num": np.array(num, np.float64).reshape(-1, 6),
        "value_len": np.array([len(v) for v in values], np.int64),
        "values": np.frombuffer(b"".join(values), np.uint8).copy(),
    }
    b64 = lambda b: None if b is None else base64.b64encode(b).decode()  # noqa: E731
    meta = {
        "topics": [r.topic for r in recs],
        "keys": [b64(getattr(r, "key", None)) for r in recs],
        "headers": [[[k, b64(v)] for k, v in (r.headers or [])] for r in recs],
    }
    return arrays, meta


def _unpack_waiting(
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    decode: Callable[[list[ConsumedRecord]], Sequence[DecodedEvent]],
) -> dict[int, Waiting]:
    num = arrays["num"].reshape(-1, 6)
    lens = arrays["value_len"]
    if not (len(num) == len(lens) == len(meta["topics"])) or lens.sum() != len(arrays["values"]):
        raise ValueError("waiting stream events do not match their lengths")
    blob = arrays["values"].tobytes()
    ends = np.cumsum(lens).tolist()
    unb64 = lambda s: None if s is None else base64.b64decode(s)  # noqa: E731
    records, saved = [], {}
    for i, (ref, score, pct, part, offset, ts) in enumerate(num.tolist()):
        rec = ConsumedRecord(
            meta["topics"][i], int(part), int(offset), None if ts < 0 else int(ts),
            blob[ends[i] - int(lens[i]) : ends[i]], unb64(meta["keys"][i]),
            [(k, unb64(v)) for k, v in meta["headers"][i]],
        )  # fmt: skip
        records.append(rec)
        saved[(rec.topic, rec.partition, rec.offset)] = (int(ref), score, pct)
    out: dict[int, Waiting] = {}
    for ev in decode(records):
        r = ev.record
        ref, score, pct = saved[(r.topic, r.partition, r.offset)]
        out[ref] = (ev, score, pct)
    return out


def stream_context(c: Confirmed, event_time: float) -> dict[str, Any]:
    """What a stream alert says happened, for the analyst and the group book."""
    source, host = c.stream
    if c.reason == "silence":
        note = (
            f"{host}'s steady {source} stream stopped "
            f"{max(event_time - c.at, 0.0):.0f} s before this"
        )
    else:
        note = f"fired without {source} on {host}, which nearly always fires with it"
    return {"reason": c.reason, "source": source, "host": host, "at": c.at,
            "lift": STREAM_LIFT[c.reason], "note": note}  # fmt: skip
