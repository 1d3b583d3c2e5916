"""Split roles through the real broker: one trainer, one scorer, one shared model store.

The scorer scores; the trainer learns from the same events, folds the scorer's alerts into its
group book, takes a verdict on a group only the scorer alerted on, publishes a new model and
announces it; the scorer hot-swaps between batches without a restart, a look-alike then scores
lower on the scorer, and every later alert names an announced trainer version. A tampered
model is refused (the scorer keeps its model and counts the refusal), and after a restart of
both the trainer's group book and the scorer's model version come back."""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import orjson

from schemas import ModelAnnouncement
from service.app import Pipeline
from service.labels import label_command
from service.model_store import model_store
from service.replay import encode_record, read_records
from service.trainer import Trainer
from tests.integration.kit import (
    benign_group_with_look_alike,
    committed_total,
    consume_all,
    free_port,
    fresh_settings,
    ids_events,
    produce,
    running,
    scrape,
    serve_process,
    wait_until,
)

TYPES = ("name", "short", "ip", "host")


def test_trainer_teaches_a_hot_swapping_scorer(
    kafka_bootstrap: str, datasets: Path, tmp_path: Path
) -> None:
    rows = read_records(datasets / "ait-ads" / "russellmitchell_alerts.csv.gz")
    first, later = rows[:20_000], rows[25_000:30_000]
    scorer_s = fresh_settings(
        kafka_bootstrap, tmp_path, role="scorer", batch_max_events=1000, checkpoint_interval_s=5
    )
    trainer_s = scorer_s.model_copy(
        update={"role": "trainer", "group_id": scorer_s.group_id + "-trainer",
                "checkpoint_interval_s": 3.0, "client_id": "trainer", "digest_interval_s": 1.0}
    )  # fmt: skip
    produce(kafka_bootstrap, scorer_s.events_topic, [encode_record(r) for r in first])

    with running(trainer_s) as trainer, running(scorer_s) as scorer:
        bootstrap_version = scorer.model.version
        assert wait_until(
            lambda: (
                committed_total(kafka_bootstrap, scorer_s.group_id, scorer_s.events_topic)
                == len(first)
            ),
            240,
        ), "the scorer did not score the capture"
        assert wait_until(
            lambda: (
                committed_total(kafka_bootstrap, trainer_s.group_id, trainer_s.events_topic)
                == len(first)
            ),
            240,
        ), "the trainer did not learn the capture (offsets commit with a published model)"
        swapped = wait_until(
            lambda: scorer.adopted and scorer.model.version.startswith(trainer.scorer.lineage), 60
        )
        assert swapped, "the scorer did not swap to the trainer's model"
        assert scorer.model.version != bootstrap_version
        assert wait_until(lambda: len(trainer.groups.groups) >= len(scorer.groups.groups), 60)
        assert trainer.groups.groups.keys() >= scorer.groups.groups.keys(), (
            "the trainer's group book folds every alert the scorer published"
        )

        # the analyst's pick, from the trainer's book: a benign group with a look-alike
        pick, look_alike = benign_group_with_look_alike(
            kafka_bootstrap, scorer_s.alerts_topic, trainer.groups.ranked()
        )
        assert pick is not None and look_alike is not None
        row = tuple(look_alike.entities[t] for t in TYPES)
        swapped_to = scorer.model.version
        before = float(scorer.scorer.peek("ids_alert", [row])[0])
        label_command(
            scorer_s.kafka_client_config(), scorer_s.feedback_topic, pick.group_id,
            "benign", "backup job", "ana",
        )  # fmt: skip
        assert wait_until(lambda: trainer.scorer.feedback["ids_alert"].labeled_, 60), (
            "the trainer did not learn the verdict"
        )
        assert wait_until(
            lambda: (
                scorer.scorer.feedback.get("ids_alert") is not None
                and scorer.scorer.feedback["ids_alert"].labeled_
            ),
            60,
        ), "the scorer did not swap to the model that knows the verdict"
        after = float(scorer.scorer.peek("ids_alert", [row])[0])
        assert after < before, f"look-alike did not sink on the scorer: {before} -> {after}"
        # the scorer's own group book was re-scored with the swapped-in model
        mirror = scorer.groups.groups[look_alike.group_id]
        assert wait_until(
            lambda: mirror.model_score is not None and abs(mirror.model_score - after) < 1e-9,
            30,
        ), (mirror.model_score, after)
        knows_verdict = scorer.model.version
        assert knows_verdict != swapped_to

        # a tampered model in the store, announced with the digest of the real one
        real = model_store(scorer_s) / knows_verdict
        fake_version = knows_verdict + "-tampered"
        shutil.copytree(real, model_store(scorer_s) / fake_version)
        tensors = model_store(scorer_s) / fake_version / "model.safetensors"
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0xFF
        tensors.write_bytes(bytes(data))
        sha = orjson.loads((real / "manifest.json").read_bytes())["sha256"]["model.safetensors"]
        fake = ModelAnnouncement(
            model_name=scorer.model.name, version=fake_version, path="/etc/passwd",
            sha256=sha, created_at=0.0,
        )  # fmt: skip
        produce(kafka_bootstrap, scorer_s.models_topic, [orjson.dumps(fake.model_dump())],
                key=scorer.model.name.encode())  # fmt: skip
        refused = scorer.metrics.model_swaps.labels("refused")
        assert wait_until(lambda: refused._value.get() >= 1, 60), "tampered model not refused"
        assert scorer.model.version != fake_version
        shutil.rmtree(model_store(scorer_s) / fake_version)

        produce(kafka_bootstrap, scorer_s.events_topic, [encode_record(r) for r in later])
        assert wait_until(
            lambda: (
                committed_total(kafka_bootstrap, scorer_s.group_id, scorer_s.events_topic)
                == len(first) + len(later)
            ),
            120,
        )

    announced = {
        orjson.loads(r.value)["version"]
        for r in consume_all(kafka_bootstrap, scorer_s.models_topic, 1, timeout_s=20)
    }
    late = [
        orjson.loads(r.value)
        for r in consume_all(kafka_bootstrap, scorer_s.alerts_topic, 1, timeout_s=20)
        if orjson.loads(r.value)["event_time"] >= float(later[0]["time"])
    ]
    assert late, "the second phase raised alerts"
    versions = {a["model"]["version"] for a in late}
    assert versions <= announced - {fake_version}, versions - announced
    assert all(int(v.rsplit(".", 1)[1]) >= int(knows_verdict.rsplit(".", 1)[1]) for v in versions)

    digests = [
        orjson.loads(r.value) for r in consume_all(kafka_bootstrap, scorer_s.digest_topic, 1)
    ]
    assert digests, "the trainer publishes the digest of the whole book"
    assert {r["group_id"] for r in digests[-1]["top"]} <= trainer.groups.groups.keys()

    # restart both: the trainer's book and model, the scorer's adopted version, come back
    restarted_trainer, restarted_scorer = Trainer(trainer_s), Pipeline(scorer_s)
    assert restarted_trainer.scorer.version == trainer.scorer.version
    assert (restarted_trainer.groups.groups[pick.group_id].verdict or "").startswith("benign")
    assert restarted_scorer.adopted
    assert restarted_scorer.model.version == scorer.model.version


def test_roles_through_the_cli(kafka_bootstrap: str, tmp_path: Path) -> None:
    """`outrider serve --role trainer` and `--role scorer` as an operator runs them: the scorer
    hot-swaps to the trainer's model (seen in its /metrics over HTTP), alerts name the
    trainer's version, and both stop cleanly on SIGTERM."""
    s = fresh_settings(kafka_bootstrap, tmp_path, checkpoint_interval_s=2.0)
    produce(kafka_bootstrap, s.events_topic, ids_events(0, 3000, odd_every=300))
    ports = {"trainer": free_port(), "scorer": free_port()}
    procs = {
        role: serve_process(
            s,
            tmp_path / f"{role}.log",
            "--role",
            role,
            "--metrics-port",
            str(ports[role]),
            "--group-id",
            f"{s.group_id}-{role}",
            "--client-id",
            f"cli-{role}",
        )
        for role in ("trainer", "scorer")
    }
    try:
        swapped = wait_until(lambda: _swaps(scrape(ports["scorer"])) >= 1, 120, 0.5)
        logs = {r: (tmp_path / f"{r}.log").read_text() for r in procs}
        assert swapped, logs["scorer"][-2000:] + logs["trainer"][-2000:]
        trainer_page = scrape(ports["trainer"])
        assert "training on" in logs["trainer"] and "hot-swapped to model" in logs["scorer"]
        version = re.search(r'outrider_model_info\{name="frequency",version="([^"]+)"\}',
                            scrape(ports["scorer"]))  # fmt: skip
        assert version is not None and version.group(1) in logs["trainer"]
        assert "outrider_model_timestamp_seconds" in trainer_page
        produce(kafka_bootstrap, s.events_topic, ids_events(3000, 600, odd_every=100))
        assert wait_until(
            lambda: (
                committed_total(kafka_bootstrap, f"{s.group_id}-scorer", s.events_topic) == 3600
            ),
            120,
        )
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        codes = {role: proc.wait(60) for role, proc in procs.items()}
    assert codes == {"trainer": 0, "scorer": 0}, codes
    late = [
        orjson.loads(r.value)
        for r in consume_all(kafka_bootstrap, s.alerts_topic, 1, timeout_s=20)
        if orjson.loads(r.value)["event_time"] >= 1_700_003_000
    ]
    assert late and {a["model"]["version"] for a in late} <= {
        orjson.loads(r.value)["version"]
        for r in consume_all(kafka_bootstrap, s.models_topic, 1, timeout_s=20)
    }, "every later alert names a model the trainer announced"


def _swaps(page: str) -> float:
    found = re.search(r'^outrider_model_swaps_total\{outcome="ok"\} (\S+)$', page, re.M)
    return float(found.group(1)) if found else 0.0
