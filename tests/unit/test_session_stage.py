"""The session view in the chain: HDFS lines folded per block, scored when the block closes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from schemas import Alert, ModelRef
from service.decode import Decoder
from service.replay import encode_record, read_records
from service.session_stage import SessionStage
from service.sessions import SessionRecord, SessionSpec
from service.sources import SourceConfig
from tests.conftest import records_of

MODEL = ModelRef(name="frequency", version="v1")


def test_hdfs_blocks_close_and_unusual_ones_alert(datasets: Path) -> None:
    lines = read_records(datasets / "loghub" / "HDFS_2k.log.gz")
    decoder = Decoder(SourceConfig.load(), 1 << 16, logs_topic="logs")
    ok, dead = decoder.decode_many(records_of([encode_record(x) for x in lines], topic="logs"))
    assert not dead and len(ok) == 2000
    stage = SessionStage(
        SessionSpec(idle_timeout_s=60, max_duration_s=3600), alert_percentile=99.0, min_samples=50
    )
    alerts = []
    for i in range(0, len(ok), 250):
        alerts += stage.process(ok[i : i + 250], MODEL)
    assert stage.scorer.sessions_seen_ > 50  # blocks closed by idle time and were learned
    for wire in alerts:
        alert = Alert.model_validate_json(orjson.dumps(wire))
        assert alert.kind == "session" and alert.entities["session_key"].startswith("blk_")
        assert alert.rarity and alert.percentile >= 99.0


def test_a_block_with_a_template_no_other_block_has_scores_highest() -> None:
    s = SessionStage(SessionSpec(), alert_percentile=0.0, min_samples=1).scorer
    common = [SessionRecord(f"b{i}", 0, 1, 1) for i in range(20)]
    for rec in common:
        rec.template_counts["T1"] += 1
    s.learn_many(common)
    odd = SessionRecord("x", 0, 1, 1)
    odd.template_counts["T9"] += 1
    scores = s.score_many([common[0], odd])
    assert np.argmax(scores) == 1
