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


def test_a_service_stop_after_a_beacon_ends_is_a_stream_alert_on_the_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    rows = beacon_stop_events()
    s = fresh_settings(kafka_bootstrap, tmp_path, calibration_min_samples=200)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)
    for t, code, host in rows:  # keyed by host: a host's streams stay in order on a partition
        producer.send(s.events_topic, ids_alert_value(t, code, host), key=host.encode())
    producer.flush()
    producer.close()

    with running(s) as pipeline:
        port = pipeline.metrics.serve(0)
        done = lambda: committed_total(kafka_bootstrap, s.group_id, s.events_topic)  # noqa: E731
        assert wait(lambda: done() == len(rows))
        metrics = scrape(port)

    alerts = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, s.alerts_topic, 1)]
    found = [a for a in alerts if "stream_context" in a["attributes"]]
    assert len(found) == 1, [a["attributes"]["stream_context"] for a in found]
    alert = found[0]
    Alert.model_validate_json(orjson.dumps(alert))
    ctx = alert["attributes"]["stream_context"]
    assert (ctx["reason"], ctx["source"], ctx["host"]) == ("silence", "beacon", "share")
    assert alert["entities"]["short"] == "svc-stop" and alert["entities"]["host"] == "share"
    assert alert["event_time"] == 6 * 3600 - 6.0
    assert alert["model"]["version"] == pipeline.model.version
    line = 'outrider_stream_alerts_total{kind="ids_alert",reason="silence"} 1.0'
    assert line in metrics, [m for m in metrics.splitlines() if "stream" in m]
