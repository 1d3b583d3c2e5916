"""Detector classes by name: the only classes a checkpoint may ask to rebuild."""

from __future__ import annotations

from detectors.ape import APEDetector
from detectors.base import Detector
from detectors.devnet import DevNetDetector
from detectors.feedback import FeedbackDetector
from detectors.frequency import FrequencyDetector
from detectors.outrider import OutriderDetector

DETECTORS: dict[str, type[Detector]] = {
    FrequencyDetector.name: FrequencyDetector,
    APEDetector.name: APEDetector,
    OutriderDetector.name: OutriderDetector,
    DevNetDetector.name: DevNetDetector,
    FeedbackDetector.name: FeedbackDetector,
}

#: What the service should build when configuration names no detector.
DEFAULT_DETECTOR = OutriderDetector.name
