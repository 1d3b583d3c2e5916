"""Every setting is a CLI flag with an OUTRIDER_* twin; flags win."""

from __future__ import annotations

import pytest

from service.cli import build_parser, settings_from
from service.settings import Settings


def test_flag_and_env_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTRIDER_BATCH_MAX_EVENTS", "700")
    monkeypatch.setenv("OUTRIDER_ALERTS_TOPIC", "from-env")
    args = build_parser().parse_args(["serve", "--alerts-topic", "from-flag"])
    s = settings_from(args)
    assert s.batch_max_events == 700
    assert s.alerts_topic == "from-flag"


def test_every_setting_has_a_flag() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {opt for a in serve._actions for opt in a.option_strings}
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in flags


def test_secrets_are_not_printed() -> None:
    s = Settings(sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.kafka_client_config()["sasl_plain_password"] == "hunter2"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Settings(batch_max_events=0)


def test_exactly_once_needs_librdkafka_and_names_a_stable_transactional_id() -> None:
    with pytest.raises(ValueError, match="librdkafka"):
        Settings(exactly_once=True)  # kafka-python cannot put offsets in a transaction
    assert Settings(consumer_client="librdkafka").producer_transactional_id() is None
    s = Settings(exactly_once=True, consumer_client="librdkafka", group_id="g", client_id="c")
    tid = s.producer_transactional_id()
    assert tid is not None and tid.startswith("g.c.") and tid == s.producer_transactional_id()
    pinned = s.model_copy(update={"transactional_id": "scorer-0"})
    assert pinned.producer_transactional_id() == "scorer-0"
