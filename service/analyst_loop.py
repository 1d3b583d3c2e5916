"""The analyst loop inside a scorer: verdicts resolve to alert groups, teach the model, and
start a new model generation that every later alert names.

A verdict names an alert id or a group id. It resolves through the group book to the group's
entity pattern; what the verdict teaches (service/verdicts.py `training_signal`) goes to the
scorer's feedback learner (detectors/feedback.py): a benign verdict sinks look-alikes by what
is specific to the pattern, a malicious one lifts them, an undo (`undetermined`) retracts.
Fine-tuning is a cheap, bounded update between batches, so it never stalls scoring.
"""

from __future__ import annotations

import logging

from schemas import DeadLetter, DeadLetterReason, Feedback, Verdict
from service.decode import clip, dead_letter
from service.feedback_intake import FeedbackIntake
from service.groups import GroupBook
from service.metrics import Metrics
from service.scoring import Scorer
from service.verdicts import training_signal

log = logging.getLogger(__name__)


class AnalystLoop:
    """Applies the feedback topic's verdicts to a scorer."""

    def __init__(
        self, intake: FeedbackIntake, scorer: Scorer, groups: GroupBook, metrics: Metrics
    ) -> None:
        self.intake = intake
        self.scorer = scorer
        self.groups = groups
        self.metrics = metrics

    def apply(self) -> tuple[bool, list[Feedback], list[DeadLetter]]:
        """Read new verdicts: (whether the model changed, the live verdicts that resolved to a
        group, dead letters for the bad ones)."""
        verdicts, dead = self.intake.poll()
        resolved: list[Feedback] = []
        learned: dict[str, tuple[list[tuple[str, ...]], list[int]]] = {}
        changed = False
        for v in verdicts:
            fb = v.feedback
            self.metrics.verdicts.labels(fb.verdict.value).inc()
            group = self.groups.mark(fb.target_id, fb.verdict.value)
            if group is None:
                if v.live:  # history from before this start was learned already (checkpoint)
                    dead.append(dead_letter(
                        v.record, DeadLetterReason.unknown_target,
                        f"no alert or group {clip(fb.target_id, 64)!r} is known to this "
                        "scorer (evicted, or scored by another scorer of the group)",
                    ))  # fmt: skip
                continue
            if not v.live:
                continue
            resolved.append(fb)
            types = self.scorer.config.kinds[group.kind].entities
            row = tuple(group.entities.get(t, "") for t in types)
            signal = training_signal(fb.verdict)
            if signal.detector_mistake:
                self.metrics.detector_mistakes.inc()
            if signal.label is not None:
                rows, labels = learned.setdefault(group.kind, ([], []))
                rows.append(row)
                labels.append(signal.label)
            elif fb.verdict is Verdict.undetermined:
                changed |= self.scorer.retract(group.kind, row)
        for kind, (rows, labels) in learned.items():
            self.scorer.learn_verdicts(kind, rows, labels)
            changed = True
        if changed:
            self.metrics.fine_tunes.inc()
            log.info("fine-tuned from %d verdicts: model %s", len(verdicts), self.scorer.version)
        return changed, resolved, dead
