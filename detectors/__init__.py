"""Outrider's models, usable without Kafka: fit on a file, score a batch."""

from detectors.base import Detector, EntityRarity, EventBatch, Explanation, PairContribution

__all__ = ["Detector", "EntityRarity", "EventBatch", "Explanation", "PairContribution"]
