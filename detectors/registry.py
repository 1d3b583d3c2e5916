"""Detector classes by name: the only classes a checkpoint may ask to rebuild."""

from __future__ import annotations

from detectors.base import Detector
from detectors.frequency import FrequencyDetector

DETECTORS: dict[str, type[Detector]] = {
    FrequencyDetector.name: FrequencyDetector,
}
