"""Stream alerts through the service's own classes: decode -> score -> stream stage -> group
book (service/stream_stage.py), on ids_alert events, whose kind declares its streams."""

from __future__ import annotations

import orjson
import pytest

from schemas import Alert, ModelRef
from service.decode import DecodedEvent, Decoder
from service.groups import GroupBook
from service.outputs import build_alerts
from service.scoring import Scorer
from service.sources import KindSpec, SourceConfig
from service.stream_stage import StreamStage
from tests.conftest import beacon_stop_events, ids_alert_value, records_of

CONFIG = SourceConfig.load()
MODEL = ModelRef(name="frequency", version="v1")
HOUR = 3600.0


def _events(rows: list[tuple[float, str, str]], decoder: Decoder) -> list[DecodedEvent]:
    ok, dead = decoder.decode_many(records_of([ids_alert_value(*r) for r in rows]))
    assert not dead
    return ok


def _run(stage: StreamStage | None, scorer: Scorer, decoder: Decoder, book: GroupBook):
    alerts, stream_alerts = [], []
    rows = beacon_stop_events()
    for i in range(0, len(rows), 500):
        scored = scorer.score(_events(rows[i : i + 500], decoder))
        batch = [a for part in scored for a in build_alerts(part, MODEL)]
        if stage is not None:
            found = stage.process(scored, MODEL)
            stream_alerts += found
            batch += found
        book.add_many(batch)
        alerts += batch
    return alerts, stream_alerts


def test_a_service_stop_right_after_a_beacon_ends_becomes_a_stream_alert() -> None:
    scorer = Scorer(CONFIG, calibration_window=5000, calibration_min_samples=200)
    decoder = Decoder(CONFIG, 1 << 16)
    stage = StreamStage(CONFIG, scorer.explain_events)
    book = GroupBook(rerank_s=0)
    alerts, stream_alerts = _run(stage, scorer, decoder, book)
    assert len(stream_alerts) == 1
    found = stream_alerts[0]
    Alert.model_validate_json(orjson.dumps(found))  # the wire schema, as every alert
    ctx = found["attributes"]["stream_context"]
    assert found["entities"]["short"] == "svc-stop" and found["entities"]["host"] == "share"
    assert found["event_time"] == 6 * HOUR - 6.0
    assert (ctx["reason"], ctx["source"], ctx["host"]) == ("silence", "beacon", "share")
    assert ctx["at"] == 6 * HOUR - 20 and "stopped 14 s before" in ctx["note"]
    # its own id: not the id of an alert the model raised on the same event
    assert found["alert_id"] not in {a["alert_id"] for a in alerts if a is not found}
    group = book.resolve(found["alert_id"])
    assert group is not None and group.reason.startswith("share's steady beacon stream")
    lifted = book.ranked().index(group)
    group.stream_lift, book._dirty = 0.0, True
    assert lifted < book.ranked().index(group)  # the finding lifts it in the analysts' list
    # the earlier service stop on 'share' (beacon still running) raised none
    assert all(a["event_time"] != 2 * HOUR + 9.0 for a in stream_alerts)


def test_a_kind_names_two_of_its_own_entity_types_as_streams() -> None:
    KindSpec(entities=("a", "b"), streams=("a", "b"))
    for bad in (("a", "c"), ("a", "a")):
        with pytest.raises(ValueError, match="streams"):
            KindSpec(entities=("a", "b"), streams=bad)


def test_the_streams_history_survives_a_restart_through_the_checkpoint(tmp_path) -> None:
    """A service stopped at hour 5 and started again from its checkpoint still knows the
    beacon was steady, so its stop at hour 6 is found; without the checkpoint it is not."""
    from service.app import Pipeline
    from service.settings import Settings
    from tests.conftest import Record
    from tests.unit.test_settle import ScriptedIO

    rows = beacon_stop_events()
    records = [
        Record("events", 0, i, int(r[0] * 1000), ids_alert_value(*r)) for i, r in enumerate(rows)
    ]
    cut = next(i for i, r in enumerate(rows) if r[0] >= 5 * HOUR)

    def run(state_dir, part) -> list[dict]:
        pipeline = Pipeline(Settings(state_dir=state_dir, metrics_port=0,
                                     calibration_min_samples=200))  # fmt: skip
        io = ScriptedIO(refuse=set())
        out = []
        for k in range(0, len(part), 500):
            batch = pipeline.process(io, part[k : k + 500])
            pipeline.settle(io, batch)
            out += batch.alerts
        pipeline._checkpoint()
        return [a for a in out if "stream_context" in a["attributes"]]

    assert run(tmp_path / "a", records[:cut]) == []
    restarted = run(tmp_path / "a", records[cut:])
    assert [a["attributes"]["stream_context"]["reason"] for a in restarted] == ["silence"]
    assert run(tmp_path / "b", records[cut:]) == []  # a fresh service never saw it steady


def pipeline_alerts_topic() -> str:
    from service.settings import Settings

    return Settings().alerts_topic


def test_an_event_waiting_for_its_flag_survives_a_restart(tmp_path) -> None:
    """Stopped right after the service stop on 'share' (its flag needs an hour of the beacon's
    silence), started again from the checkpoint: the restarted service raises the stream
    alert on that event, read before the restart, with its trace context."""
    from service.app import Pipeline
    from service.settings import Settings
    from tests.conftest import Record
    from tests.unit.test_settle import ScriptedIO

    rows = beacon_stop_events()
    trace = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    records = [
        Record("events", 0, i, int(r[0] * 1000), ids_alert_value(*r),
               [("traceparent", trace)] if r[1:] == ("svc-stop", "share") else None)
        for i, r in enumerate(rows)
    ]  # fmt: skip
    stop = next(i for i, r in enumerate(rows) if r == (6 * HOUR - 6.0, "svc-stop", "share"))
    cut = stop + 3  # the stop and a few events after it: it waits for an hour of silence

    def run(part) -> list[dict]:
        pipeline = Pipeline(Settings(state_dir=tmp_path, metrics_port=0,
                                     calibration_min_samples=200))  # fmt: skip
        io = ScriptedIO(refuse=set())
        traced = []
        io.send = lambda topic, value, key=None, headers=None: traced.extend(  # type: ignore
            (topic, v) for k, v in headers or () if k == "ce_traceparent"
        )
        out = []
        for k in range(0, len(part), 500):
            batch = pipeline.process(io, part[k : k + 500])
            pipeline.settle(io, batch)
            out += batch.alerts
        waiting = sum(len(w) for w in pipeline.streams.waiting.values())
        pipeline._checkpoint()
        return [a for a in out if "stream_context" in a["attributes"]], waiting, traced

    before, waiting, _ = run(records[:cut])
    assert before == [] and waiting >= 1
    after, _, traced = run(records[cut:])
    assert [a["origin"]["offset"] for a in after] == [stop]
    assert after[0]["attributes"]["stream_context"]["reason"] == "silence"
    assert (pipeline_alerts_topic(), trace) in traced  # the trace context came back too
    restarted = Pipeline(Settings(state_dir=tmp_path, metrics_port=0))
    assert not any(restarted.streams.waiting.values())  # confirmed and gone: none waits twice


def test_a_stream_alert_whose_batch_is_redone_goes_out_again(tmp_path) -> None:
    """The broker refuses the outputs of the batch that raised the stream alert: the batch is
    redone, and the alert (same id) goes out with the redo, though the redo itself confirms
    nothing new (the stage's streams have moved on)."""
    from service.app import Pipeline
    from service.settings import Settings
    from tests.conftest import Record
    from tests.unit.test_settle import ScriptedIO

    rows = beacon_stop_events()
    records = [
        Record("events", 0, i, int(r[0] * 1000), ids_alert_value(*r)) for i, r in enumerate(rows)
    ]
    batches = [records[k : k + 500] for k in range(0, len(records), 500)]

    def run(state_dir, refuse: set[int]) -> tuple[list[dict], int]:
        """Stream alerts of the acknowledged batches, and the hand-over that carried them."""
        pipeline = Pipeline(Settings(state_dir=state_dir, metrics_port=0,
                                     calibration_min_samples=200))  # fmt: skip
        io = ScriptedIO(refuse=refuse)
        settled, carried, queue = [], 0, list(batches)
        while queue:
            batch = pipeline.process(io, queue[0])
            if pipeline.settle(io, batch):  # acknowledged: the next; refused: redo this one
                found = [a for a in batch.alerts if "stream_context" in a["attributes"]]
                settled += found
                carried = carried or (io.handed if found else 0)
                queue.pop(0)
        return settled, carried

    plain, carried = run(tmp_path / "a", set())
    assert len(plain) == 1 and carried > 0
    redone, carried_again = run(tmp_path / "b", {carried})

    def what(alerts: list[dict]) -> list[tuple]:  # ids name the model version: each run's own
        return [
            (a["origin"]["offset"], a["attributes"]["stream_context"]["reason"]) for a in alerts
        ]

    assert what(redone) == what(plain)
    assert carried_again == carried + 1  # by the redo of the refused batch


def test_a_restored_history_takes_this_process_options() -> None:
    from detectors.streams import StreamContext

    scorer = Scorer(CONFIG, calibration_window=5000, calibration_min_samples=200)
    before = StreamStage(CONFIG, scorer.explain_events, lambda: StreamContext(lateness_s=100))
    before.process(scorer.score(_events(beacon_stop_events()[:300], Decoder(CONFIG, 1 << 16))),
                   MODEL)  # fmt: skip
    after = StreamStage(CONFIG, scorer.explain_events, lambda: StreamContext(lateness_s=700))
    after.restore(*before.state())
    ctx = after.contexts["ids_alert"]
    assert ctx.options["lateness_s"] == 700.0
    assert ctx.streams.keys() == before.contexts["ids_alert"].streams.keys()
