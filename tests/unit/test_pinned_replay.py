"""Version-pinned re-scoring: the same input and version give the same alerts, every time."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.decode import Decoder
from service.pinned import PinnedVersionError, file_records, pinned_scorer, rescore
from service.replay import encode_record, read_records
from service.scoring import Scorer
from service.settings import Settings
from service.sources import SourceConfig
from tests.conftest import records_of


def _train(datasets: Path, state: Path, capture: Path) -> Scorer:
    rows = read_records(datasets / "ait-ads" / "wardbeck_alerts.csv.gz")[:12_000]
    capture.write_bytes(b"\n".join(encode_record(r) for r in rows[8_000:]))
    config = SourceConfig.load()
    scorer = Scorer(config, calibration_min_samples=500)
    ok, _ = Decoder(config, 1 << 16).decode_many(
        records_of([encode_record(r) for r in rows[:8_000]])
    )
    for i in range(0, len(ok), 1000):
        scorer.score(ok[i : i + 1000])
    scorer.save(state / "checkpoints")
    return scorer


def test_same_version_same_alerts_other_version_other_ids(datasets: Path, tmp_path: Path) -> None:
    capture = tmp_path / "tuesday.jsonl"
    scorer = _train(datasets, tmp_path, capture)
    v1 = scorer.version
    settings = Settings(state_dir=tmp_path, calibration_min_samples=500)

    def run(version: str) -> list[dict]:
        pinned, decoder = pinned_scorer(settings, version)
        return list(rescore(pinned, decoder, file_records(capture), batch=500))

    first, again = run(v1), run(v1)
    assert first, "the capture raises alerts under the pinned model"
    key = [(a["alert_id"], a["score"], a["percentile"]) for a in first]
    assert key == [(a["alert_id"], a["score"], a["percentile"]) for a in again]
    assert all(a["model"]["version"] == v1 for a in first)

    scorer.generation += 1  # another stored version of the same model
    scorer.save(tmp_path / "checkpoints")
    other = run(scorer.version)
    assert [a["origin"] for a in other] == [a["origin"] for a in first]
    assert [a["score"] for a in other] == [a["score"] for a in first]
    assert not {a["alert_id"] for a in other} & {a["alert_id"] for a in first}
    orjson.dumps(first)  # JSON-ready


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PinnedVersionError, match="no checkpoint"):
        pinned_scorer(Settings(state_dir=tmp_path), "frequency-19700101T000000Z.0")


def test_the_cli_writes_the_pinned_alerts(datasets: Path, tmp_path: Path) -> None:
    from service.cli import main

    capture = tmp_path / "tuesday.jsonl"
    scorer = _train(datasets, tmp_path, capture)
    out = tmp_path / "alerts.jsonl"
    argv = [
        "replay",
        str(capture),
        "--model-version",
        scorer.version,
        "--state-dir",
        str(tmp_path),
        "--calibration-min-samples",
        "500",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    assert main([*argv[:-1], str(tmp_path / "again.jsonl")]) == 0

    def alerts(path: Path) -> list[dict]:  # all but detected_at, the wall clock of the run
        return [{k: v for k, v in orjson.loads(line).items() if k != "detected_at"}
                for line in path.read_bytes().splitlines()]  # fmt: skip

    assert alerts(out) and alerts(out) == alerts(tmp_path / "again.jsonl")
    assert (
        main(["replay", str(capture), "--model-version", "nope", "--state-dir", str(tmp_path)]) == 2
    )
