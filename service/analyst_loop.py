"""The analyst loop: verdicts resolve to alert groups, teach the model, and start a new model
generation that every later alert names.

A verdict names an alert id or a group id. It resolves through the group book to the group's
entity pattern; what the verdict teaches (service/verdicts.py `training_signal`) goes to the
scorer's feedback learner (detectors/feedback.py): a benign verdict sinks look-alikes by what
is specific to the pattern, a malicious one lifts them, an undo (`undetermined`) retracts.
Fine-tuning the count-based layer is a cheap, bounded update between batches. A kind whose
detector has a semi-supervised head (devnet: ~1 s of training on a CPU) records the verdicts
there at once too (its benign look-alike term applies to the next batch) and, in the service
(`background=True`), trains the head in a worker thread while scoring goes on with the
previous head; the trained head is installed between batches, through the same regression
check, as a model generation of its own. A head left stale by a stop or a crash is trained
after the restart (the detector's checkpoint says so).

Two guard rails stand between a verdict and the model:
- a per-analyst rate limit (the triage page's sliding-minute limiter, run on the verdicts'
  Kafka timestamps, so a replayed history is judged as it was sent): a flood from one
  analyst, or a script using their name, goes to the dead-letter topic as `rate_limited` and
  teaches nothing;
- a regression check: the verdicts learned before a fine-tune are its held-out set. If the
  fine-tuned model ranks them worse (the AUC of their scores, malicious above benign, drops),
  the fine-tune is rolled back: the model stays as it was and no new version is published.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.feedback import pattern_key, pattern_row
from schemas import DeadLetter, DeadLetterReason, Feedback, Verdict
from service.decode import clip, dead_letter
from service.feedback_intake import FeedbackIntake
from service.groups import GroupBook
from service.metrics import Metrics
from service.scoring import Scorer, learns_labels
from service.triage import RateLimiter
from service.verdicts import training_signal

log = logging.getLogger(__name__)

Rows = list[tuple[str, ...]]
#: alert times a verdict passes to the model (evenly spaced over the group's, first and last)
ALERTS_PER_VERDICT = 64


def ranking_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """P(a malicious pattern scores above a benign one), ties half; None without both."""
    mal, ben = scores[labels == 1], scores[labels == 0]
    if not len(mal) or not len(ben):
        return None
    diff = mal[:, None] - ben[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


@dataclass(slots=True)
class Outcome:
    """What one pass over new verdicts did."""

    changed: bool  # the model learned something: a new generation to checkpoint and announce
    resolved: list[Feedback]  # live verdicts that resolved to a group (their findings close)
    dead: list[DeadLetter]  # bad, unknown-target or rate-limited verdicts
    rolled_back: int = 0  # kinds whose fine-tune the regression check refused


class AnalystLoop:
    """Applies the feedback topic's verdicts to a scorer."""

    def __init__(
        self,
        intake: FeedbackIntake,
        scorer: Scorer,
        groups: GroupBook,
        metrics: Metrics,
        verdicts_per_minute: float = 60.0,
        background: bool = False,
    ) -> None:
        self.intake = intake
        self.scorer = scorer
        self.groups = groups
        self.metrics = metrics
        self.limiter = RateLimiter(max(int(verdicts_per_minute), 1))  # per sliding minute
        # heads trained off the scoring thread (one at a time: they share two cores with it)
        self.background = background
        self._pool: ThreadPoolExecutor | None = None
        self.jobs: dict[str, tuple[Future, Any]] = {}  # kind -> (its training, the job)
        self._failed: set[str] = set()  # kinds whose training raised: not again until told more

    def apply(self, before_learning: Callable[[], object] | None = None) -> Outcome:
        """Read new verdicts and learn the live ones that pass the guard rails.
        `before_learning` runs first when there are verdicts: a scorer settles the batch it
        has in flight, whose alert ids name the model version these verdicts may end."""
        changed, rolled_back = False, 0
        if self.background:
            changed, rolled_back = self._install_trained_heads(before_learning)
        verdicts, dead = self.intake.poll()
        if verdicts and before_learning is not None:
            before_learning()
        resolved: list[Feedback] = []
        learned: dict[str, tuple[Rows, list[int], list[float]]] = {}
        for v in verdicts:
            fb = v.feedback
            if v.live:
                at = v.record.timestamp / 1000 if v.record.timestamp else fb.time
                if self.limiter.retry_after(fb.analyst, at) is not None:
                    if self.intake.store.get(fb.target_id) is fb:
                        del self.intake.store[fb.target_id]
                    dead.append(dead_letter(
                        v.record, DeadLetterReason.rate_limited,
                        f"analyst {clip(fb.analyst, 64)!r} sent more than "
                        f"{self.limiter.per_min} verdicts a minute; send it again later",
                    ))  # fmt: skip
                    continue
            self.metrics.verdicts.labels(fb.verdict.value).inc()
            group = self.groups.mark(fb.target_id, fb.verdict.value)
            if group is None:
                if v.live:  # history from before this start was learned already (checkpoint)
                    dead.append(dead_letter(
                        v.record, DeadLetterReason.unknown_target,
                        f"no alert or group {clip(fb.target_id, 64)!r} is known to this "
                        "process (evicted, or not yet read from the alerts topic)",
                    ))  # fmt: skip
                continue
            if not v.live:
                continue
            resolved.append(fb)
            self._failed.discard(group.kind)  # new verdicts: a failed training may try again
            types = self.scorer.config.kinds[group.kind].entities
            row = tuple(group.entities.get(t, "") for t in types)
            signal = training_signal(fb.verdict)
            if signal.detector_mistake:
                self.metrics.detector_mistakes.inc()
            if signal.label is not None:
                # the pattern, once per time its alerts fired (a sample): a malicious verdict
                # confirms its host was attacked then (Scorer.peek's time lift)
                rows, labels, times = learned.setdefault(group.kind, ([], [], []))
                seconds, _ = group.fired_at(most=ALERTS_PER_VERDICT)
                at = seconds.tolist() or [fb.time]
                rows += [row] * len(at)
                labels += [signal.label] * len(at)
                times += at
            elif fb.verdict is Verdict.undetermined:
                changed |= self.scorer.retract(group.kind, row, train_head=not self.background)
        for kind, (rows, labels, times) in learned.items():
            if self.fine_tune(kind, rows, labels, times):
                changed = True
            else:
                rolled_back += 1
        if changed:  # the queue reflects what the verdicts taught, before any new alert
            self.scorer.rescore_book(self.groups)
            self.metrics.fine_tunes.inc()
            log.info("fine-tuned from %d verdicts: model %s", len(verdicts), self.scorer.version)
        if self.background:  # heads left stale (by these verdicts, by a restart) train now
            self._train_stale_heads()
        return Outcome(changed, resolved, dead, rolled_back)

    # -- heads trained in the background --------------------------------------------------
    def _install_trained_heads(
        self, before_install: Callable[[], object] | None = None
    ) -> tuple[bool, int]:
        """Install every head whose training finished, each unless it ranks the verdicts it
        did not train on worse (then the previous head stays). (installed any, how many
        were rolled back)"""
        installed, refused = False, 0
        for kind, (future, job) in list(self.jobs.items()):
            if not future.done():
                continue
            del self.jobs[kind]
            det = self.scorer.detectors.get(kind)
            if future.exception() is not None:
                log.error("training the %s head failed: %s", kind, future.exception())
                self._failed.add(kind)
                continue
            if det is None or not learns_labels(det):  # the kind's model was replaced
                continue
            if before_install is not None:  # the batch in flight names the version now
                before_install()
            if self._install(kind, det, job):
                installed = True
            else:
                refused += 1
        if installed:
            self.scorer.rescore_book(self.groups)
            self.metrics.fine_tunes.inc()
            log.info("trained head installed: model %s", self.scorer.version)
        return installed, refused

    def _train_stale_heads(self) -> None:
        """Start a training for every stale head that has none running."""
        for kind, det in self.scorer.detectors.items():
            if (
                kind not in self.jobs
                and kind not in self._failed
                and learns_labels(det)
                and det.head_stale
            ):
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="head-training")
                job = det.head_job()  # its inputs gathered here, on the scoring thread
                self.jobs[kind] = (self._pool.submit(job.run), job)

    def finish_heads(self, timeout_s: float = 60.0) -> bool:
        """Wait for the heads in training and install them (a stop); True if one was."""
        wait_for([f for f, _ in self.jobs.values()], timeout=timeout_s)
        installed = self._install_trained_heads()[0]
        self.jobs.clear()  # still running after the wait: given up (trained after restart)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        return installed

    def _install(self, kind: str, det: Any, job: Any) -> bool:
        """Swap a trained head in unless the verdicts it did not train on (the held-out
        set) rank worse with it; a new generation when it stays."""
        held = self._held_out(kind, {pattern_key(row) for row, _ in job.labels - det.head_labels_})
        auc_before = self._auc(kind, held)
        undo = det.install(job)
        if self._ranks_worse(kind, held, auc_before, f"trained {kind} head"):
            undo()
            return False
        self.scorer.generation += 1
        return True

    def _held_out(self, kind: str, new: set[str]) -> tuple[Rows, np.ndarray]:
        """The kind's verdicts but the patterns in `new`, as rows and labels."""
        held = [(k, y) for k, y in self.scorer.feedback_of(kind).labeled_.items() if k not in new]
        labels = np.fromiter((y for _, y in held), np.int64, len(held))
        return [pattern_row(k) for k, _ in held], labels

    def _auc(self, kind: str, held: tuple[Rows, np.ndarray]) -> float | None:
        """How the model ranks the held-out verdicts now (None: nothing to rank)."""
        rows, labels = held
        return ranking_auc(self.scorer.peek(kind, rows), labels) if rows else None

    def _ranks_worse(
        self, kind: str, held: tuple[Rows, np.ndarray], auc_before: float | None, what: str
    ) -> bool:
        """The regression check: whether the model now ranks the held-out verdicts worse
        than `auc_before`; counted and logged as a rollback of `what` when it does."""
        if auc_before is None:
            return False
        auc_after = self._auc(kind, held)
        if auc_after is None or auc_after >= auc_before - 1e-9:
            return False
        self.metrics.fine_tune_rollbacks.inc()
        log.warning("%s rolled back: earlier verdicts' ranking AUC %.3f -> %.3f",
                    what, auc_before, auc_after)  # fmt: skip
        return True

    def fine_tune(
        self, kind: str, rows: Rows, labels: list[int], times: list[float] | None = None
    ) -> bool:
        """Learn one kind's new verdicts (`times`: when each labeled alert fired) unless that
        ranks the earlier verdicts worse; False (and the model untouched) when rolled back."""
        held = self._held_out(kind, {pattern_key(r) for r in rows})
        auc_before = self._auc(kind, held)
        snapshot = None
        if auc_before is not None:  # what the verdicts change: the count-based layer, and
            # the kind's detector where it learns from verdicts (a semi-supervised head)
            det = self.scorer.detectors[kind]
            head = learns_labels(det)
            snapshot = copy.deepcopy((self.scorer.feedback_of(kind), det if head else None))
        generation = self.scorer.generation
        self.scorer.learn_verdicts(kind, rows, labels, times, train_head=not self.background)
        what = f"fine-tune of {kind} from {len(rows)} verdicts"
        if snapshot is None or not self._ranks_worse(kind, held, auc_before, what):
            return True
        self.scorer.feedback[kind], det_before = snapshot
        if det_before is not None:
            self.scorer.detectors[kind] = det_before
        self.scorer.generation = generation
        return False
