"""A reliability signal on every alert: how much the model knows about what it judges.

An analyst must tell "rare because new to the model" (a young model, a kind it has barely
seen, a calibration from few scores) from "rare and well understood". The score (0-100) is our
own heuristic, not a probability: the geometric mean of the model's experience with the kind
and the size of the kind's calibration sample, scaled by how familiar the event's entities
are. The components travel with the alert so the number can be read, not just trusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Events of a kind after which the model's experience with it counts as full (~63% at this).
KIND_EXPERIENCE_EVENTS = 10_000.0
#: Entity sightings after which an entity counts as familiar.
FAMILIAR_COUNT = 20.0
#: Below this an alert is marked low-confidence (shown, never hidden).
LOW_CONFIDENCE = 50.0


def confidence(
    kind_events_seen: float,
    calibration_seen: int,
    calibration_min_samples: int,
    entity_counts: Sequence[float],
) -> tuple[float, dict[str, float]]:
    """(score 0-100, its components)."""
    experience = 1.0 - math.exp(-kind_events_seen / KIND_EXPERIENCE_EVENTS)
    calibration = min(1.0, calibration_seen / max(10.0 * calibration_min_samples, 1.0))
    familiar = (
        sum(min(1.0, c / FAMILIAR_COUNT) for c in entity_counts) / len(entity_counts)
        if entity_counts
        else 1.0
    )
    score = 100.0 * math.sqrt(experience * calibration) * (0.6 + 0.4 * familiar)
    return round(score, 1), {
        "kind_events_seen": round(kind_events_seen, 1),
        "calibration_samples": float(calibration_seen),
        "entities_familiar": round(familiar, 3),
    }
