"""Stream alerts end to end on the real broker: a steady stream stops, the service stop right
after it comes out on the alerts topic as a stream alert, and /metrics counts it."""

from __future__ import annotations

from pathlib import Path

import orjson
from kafka import KafkaProducer

from schemas import Alert
from tests.conftest import beacon_stop_events, ids_alert_value
from tests.integration.kit import committed_total, consume_all, fresh_settings, running, scrape
from tests.integration.kit import wait_until as wait

TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_service_stop_after_a_beacon_ends_is_a_stream_alert_on_the_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    rows = beacon_stop_events()
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=200)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)

    def publish(part: list[tuple[float, str, str]]) -> None:
        for t, code, host in part:  # keyed by host: a host's streams stay in order
            producer.send(s.events_topic, ids_alert_value(t, code, host), key=host.encode(),
                          headers=[("traceparent", TRACE)])  # fmt: skip
        producer.flush()

    # up to a minute after the service stop, then the rest: the stop of the beacon is
    # confirmed an hour later, in a later batch than the event it is about
    first = [r for r in rows if r[0] <= 6 * 3600 + 60]
    with running(s) as pipeline:
        port = pipeline.metrics.serve(0)
        done = lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic)  # noqa: E731
        publish(first)
        assert wait(lambda: done() == len(first))
        silence = 'outrider_stream_alerts_total{kind="ids_alert",reason="silence"}'
        assert f"{silence} 0.0" in scrape(port)  # the series is there before any alert
        publish(rows[len(first) :])
        assert wait(lambda: done() == len(rows))
        metrics = scrape(port)
    producer.close()

    records = consume_all(kafka_bootstrap, s.alerts_topic, 1)
    alerts = [orjson.loads(r.value) for r in records]
    found = [i for i, a in enumerate(alerts) if "stream_context" in a["attributes"]]
    assert len(found) == 1, [alerts[i]["attributes"]["stream_context"] for i in found]
    alert = alerts[found[0]]
    # the event it is about came in an earlier batch: its trace context goes with it
    assert dict(records[found[0]].headers)["ce_traceparent"] == TRACE
    Alert.model_validate_json(orjson.dumps(alert))
    ctx = alert["attributes"]["stream_context"]
    assert (ctx["reason"], ctx["source"], ctx["host"]) == ("silence", "beacon", "share")
    assert alert["entities"]["short"] == "svc-stop" and alert["entities"]["host"] == "share"
    assert alert["event_time"] == 6 * 3600 - 6.0
    assert alert["model"]["version"] == pipeline.model.version
    assert f"{silence} 1.0" in metrics, [m for m in metrics.splitlines() if "stream" in m]
