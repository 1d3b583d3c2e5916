"""Where models live and how a new one is made known.

The model store (`<state_dir>/checkpoints`) holds the models that alerts name: the single
process of role `all` and the trainer write there, `outrider replay --model-version` reads
there, scorers hot-swap from there. A scorer of role `scorer` keeps its own state (group book,
open findings, the log miner, a copy of the model it scores with) apart, under
`<state_dir>/scorers/<client id>-<host>`, so N scorers on one shared volume never overwrite
each other or the trainer.
"""

from __future__ import annotations

import logging
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from detectors.checkpoint import MANIFEST, checkpoint_digest
from schemas import ModelAnnouncement
from service.decode import Decoder
from service.logmining import LogMiner
from service.outbox import Outbox
from service.scoring import Scorer
from service.settings import Settings
from service.sources import SourceConfig

log = logging.getLogger(__name__)


def model_store(settings: Settings) -> Path:
    """The shared store of announced models."""
    return Path(settings.state_dir) / "checkpoints"


def load_model(
    settings: Settings, store: Path, version: str | None = None
) -> tuple[Scorer, Decoder, dict[str, Any] | None]:
    """The scorer and decoder the settings configure, restored from `store` (its newest model,
    or exactly `version`) with the log miner saved beside it; and the checkpoint's extra
    state, None when the store had no model of this detector."""
    config = SourceConfig.load(settings.sources_config)
    scorer = Scorer.for_settings(config, settings)
    extra = scorer.restore(store, version=version)
    if extra is not None:
        log.info("restored model %s from %s", scorer.version, store)
    miner = LogMiner.from_state(extra["log_miner"]) if extra and "log_miner" in extra else None
    return scorer, Decoder(config, settings.max_message_bytes, settings.logs_topic, miner), extra


def local_store(settings: Settings) -> Path:
    """Where this process checkpoints: the model store, or a scorer's own folder."""
    if settings.role != "scorer":
        return model_store(settings)
    return Path(settings.state_dir) / "scorers" / f"{settings.client_id}-{socket.gethostname()}"


def announce(outbox: Outbox, settings: Settings, model_name: str, version: str, path: Path) -> None:
    """Announce a checkpoint on the compacted models topic (keyed by model name, so the topic
    keeps the newest); scorers hot-swap to it between batches."""
    announcement = ModelAnnouncement(
        model_name=model_name, version=version, path=str(path),
        sha256=checkpoint_digest(path), created_at=time.time(),
    )  # fmt: skip
    outbox.put(settings.models_topic, orjson.dumps(announcement.model_dump()),
               key=model_name.encode())  # fmt: skip


def prune(store: Path, keep: int) -> int:
    """Remove all but the `keep` newest models; how many went. A scorer swaps to the newest
    announced one, so only version-pinned replays of old versions lose their model."""
    done = sorted(
        (p for p in store.iterdir() if not p.name.startswith(".") and (p / MANIFEST).exists()),
        key=lambda p: (p / MANIFEST).stat().st_mtime_ns,
    )
    gone = done[: max(len(done) - keep, 0)]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    if gone:
        log.info("pruned %d old models from %s (keeping %d)", len(gone), store, keep)
    return len(gone)
