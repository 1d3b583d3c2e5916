"""Checkpoints: detector state as safetensors + a JSON manifest, never pickle.

A checkpoint is a directory `<store>/<version>/` holding `model.safetensors` (all arrays) and
`manifest.json` (the version, each detector's JSON metadata, and the SHA-256 of the tensor
file). Loading is data only: the manifest names detector classes from a fixed registry, the
checksum is verified before anything is parsed, and a mismatch is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from detectors.base import Detector, arrays_under

MANIFEST_FORMAT = 1
TENSORS = "model.safetensors"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, tampered with, or for another format."""


def _registry() -> dict[str, type[Detector]]:
    from detectors.registry import DETECTORS

    return DETECTORS


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


AUX_PREFIX = "_aux/"


def save_checkpoint(
    store: str | Path,
    version: str,
    detectors: dict[str, Detector],
    extra: dict[str, Any] | None = None,
    aux: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write detectors (keyed by event kind) as checkpoint `version`; atomic via rename.

    `extra` is JSON kept with the manifest; `aux` holds further arrays (e.g. calibrator
    state) that come back from `load_checkpoint` as `extra["_aux"]`.
    """
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    metas: dict[str, Any] = {}
    for kind, det in detectors.items():
        det_arrays, meta = det.state_dict()
        metas[kind] = meta
        for key, arr in det_arrays.items():
            arrays[f"{kind}/{key}"] = np.ascontiguousarray(arr)
    for key, arr in (aux or {}).items():
        arrays[AUX_PREFIX + key] = np.ascontiguousarray(arr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=store))
    save_file(arrays, str(tmp / TENSORS))
    manifest = {
        "manifest_format": MANIFEST_FORMAT,
        "version": version,
        "sha256": {TENSORS: _sha256(tmp / TENSORS)},
        "detectors": metas,
        "extra": extra or {},
    }
    (tmp / MANIFEST).write_bytes(json.dumps(manifest).encode())
    final = store / version
    if final.exists():
        old = store / f".{version}.old"
        os.replace(final, old)
        os.replace(tmp, final)
        for p in old.iterdir():
            p.unlink()
        old.rmdir()
    else:
        os.replace(tmp, final)
    return final


def load_checkpoint(path: str | Path) -> tuple[str, dict[str, Detector], dict[str, Any]]:
    """Load (version, detectors by kind, extra) from a checkpoint directory, verifying it."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest: {exc}") from exc
    if manifest.get("manifest_format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: manifest format {manifest.get('manifest_format')!r}")
    expected = manifest.get("sha256", {}).get(TENSORS)
    if not expected or not (path / TENSORS).exists():
        raise CheckpointError(f"{path}: tensor file or its checksum missing")
    actual = _sha256(path / TENSORS)
    if actual != expected:
        raise CheckpointError(f"{path}: checksum mismatch ({actual[:12]} != {expected[:12]})")
    arrays = load_file(str(path / TENSORS))
    registry = _registry()
    detectors: dict[str, Detector] = {}
    for kind, meta in manifest["detectors"].items():
        cls = registry.get(meta.get("detector", ""))
        if cls is None:
            raise CheckpointError(f"{path}: unknown detector {meta.get('detector')!r} for {kind}")
        try:
            detectors[kind] = cls.from_state(arrays_under(arrays, f"{kind}/"), meta)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: bad state for {kind}: {exc}") from exc
    extra = dict(manifest.get("extra", {}))
    extra["_aux"] = arrays_under(arrays, AUX_PREFIX)
    return manifest["version"], detectors, extra


def latest_checkpoint(store: str | Path) -> Path | None:
    """The most recently written complete checkpoint in a store, or None."""
    store = Path(store)
    if not store.is_dir():
        return None
    done = [p for p in store.iterdir() if not p.name.startswith(".") and (p / MANIFEST).exists()]
    return max(done, key=lambda p: (p / MANIFEST).stat().st_mtime_ns, default=None)


def checkpoint_digest(path: str | Path) -> str:
    """The SHA-256 of a checkpoint's tensor file, as its manifest records it."""
    manifest = json.loads((Path(path) / MANIFEST).read_bytes())
    return str(manifest["sha256"][TENSORS])
