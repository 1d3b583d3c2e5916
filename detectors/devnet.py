"""Semi-supervised head: DevNet deviation loss trained the AnoOnly way, on top of APE.

- Features: the APE entity embeddings (detached: the head never moves the unsupervised model)
  and the standardised APE score (Chen et al. IJCAI 2016).
- Deviation (Pang et al. KDD 2019): dev(x) = (phi(x) - mean(r)) / std(r), r = 5000 draws of
  N(0, 1) fixed at construction.
- AnoOnly (Zhou et al. arXiv 2305.18798): the loss keeps only max(0, a - dev(x)) on labeled
  anomalies; every batch is half labeled examples, half unlabeled traffic from a replay buffer,
  so the BatchNorm statistics model normal. A batch with no labeled anomaly trains nothing on
  that term (no NaN: the head is simply not trained until a label exists).
- Benign verdicts (our own design, not in either paper): analyst-benign events form a second
  labeled set with the term `benign_weight * max(0, dev(x) + margin)`, pushing them and, through
  the shared embeddings, their look-alikes below the reference mean. This is the "confirmed
  normal" half of DevNet's |dev| term, applied only where an analyst vouched for normality.
  Because the head generalises through embeddings only loosely, scoring also subtracts
  `benign_suppress * max_b (share of entity fields equal to benign event b)^2` (default: the
  margin a): an exact repeat of an analyst-benign event sinks by the full amount, a look-alike
  differing in one of four fields by 56% of it. Both are ours; the look-alike test relies on
  the second.
- Score: z(APE score) + dev(x) once the head has trained, z(APE score) before. It stands in for
  the active-learning layer of Pimentel et al. (arXiv 1805.09411), whose exact layer we did not
  retrieve; the composition is ours.
- Training off the scoring thread: a retrain costs ~1 s on a CPU. `learn_labels(...,
  train=False)` and `forget(..., train=False)` only record the verdicts (the benign look-alike
  term applies at once) and leave the head *stale*; `head_job()` gathers its inputs on the
  caller's thread, `HeadJob.run()` trains a copy of the head on any thread (it touches nothing
  of the detector), and `install(job)` swaps it in. The service scores with the previous
  head meanwhile (service/analyst_loop.py).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from detectors.ape import APEDetector
from detectors.base import STATE_FORMAT, Detector, EventBatch, Explanation, arrays_under
from detectors.devnet_model import DevNetHead

#: Events over which the standardisation of APE's score (the head's z feature) halves the
#: weight of what came before.
NORM_HALF_LIFE_EVENTS = 20_000


def deviation(head: DevNetHead, x: torch.Tensor, ref_mean: float, ref_std: float) -> torch.Tensor:
    """DevNet's deviation: the head's score against the reference N(0, 1) draws."""
    return (head(x) - ref_mean) / ref_std


class DevNetDetector(Detector):
    """APE + a DevNet/AnoOnly head learning from analyst labels (1 malicious, 0 benign)."""

    name = "devnet"

    def __init__(
        self,
        entity_types: Sequence[str],
        margin: float = 5.0,
        benign_weight: float = 1.0,
        benign_margin: float = 1.0,
        benign_suppress: float = 5.0,
        hidden: int = 20,
        batch_size: int = 512,
        batches_per_epoch: int = 20,
        epochs: int = 50,
        lr: float = 1e-3,
        replay: int = 4096,
        max_labeled: int = 4096,
        seed: int = 0,
        ape_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(entity_types)
        self.config: dict[str, Any] = {
            "margin": float(margin), "benign_weight": float(benign_weight),
            "benign_margin": float(benign_margin), "hidden": int(hidden),
            "benign_suppress": float(benign_suppress),
            "batch_size": int(batch_size), "batches_per_epoch": int(batches_per_epoch),
            "epochs": int(epochs), "lr": float(lr), "replay": int(replay), "seed": int(seed),
            "max_labeled": int(max_labeled),
        }  # fmt: skip
        ape_config = dict(ape_config or {})
        device = ape_config.pop("device", None)  # where to run, not state: kept out of checkpoints
        self.ape_config = {k: v for k, v in ape_config.items() if k != "seed"}
        self.base = APEDetector(entity_types, seed=seed, device=device, **self.ape_config)
        self.device = self.base.device
        gen = torch.Generator().manual_seed(seed)
        ref = torch.randn(5000, generator=gen)
        self.ref_mean, self.ref_std = float(ref.mean()), float(ref.std())
        self.head = self._fresh_head()
        self.trained_ = False
        self.center_, self.scale_ = 0.0, 1.0
        self.unlabeled: deque[tuple[str, ...]] = deque(maxlen=replay)
        self.malicious: list[tuple[str, ...]] = []
        self.benign: list[tuple[str, ...]] = []
        # verdict changes recorded, and how many of them the head has been trained on (or
        # refused: a rolled-back job); the head is stale while they differ
        self.labels_version_ = 0
        self.head_version_ = 0
        # the labels version of the last undo: a head trained before it knew the undone
        # verdict, so the next job starts from a fresh head
        self.fresh_from_ = -1
        # (pattern, label) pairs the installed head was trained on (not checkpointed)
        self.head_labels_: frozenset[tuple[tuple[str, ...], int]] = frozenset()

    def _fresh_head(self) -> DevNetHead:
        in_dim = len(self.entity_types) * self.base.config["dim"] + 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config["seed"])
            head = DevNetHead(in_dim, self.config["hidden"]).to(self.device)
        return head.eval()

    # -- features -------------------------------------------------------------------------
    def _base_z(self, rows: Sequence[tuple[str, ...]]) -> np.ndarray:
        return (self.base.score_many(EventBatch(self.entity_types, rows)) - self.center_) / (
            self.scale_
        )

    def features(self, rows: Sequence[tuple[str, ...]]) -> torch.Tensor:
        """[detached embeddings, z(APE score)] as float32 on the model's device."""
        batch = EventBatch(self.entity_types, rows)
        emb = self.base.embed(batch)
        z = self._base_z(rows)[:, None]
        return torch.as_tensor(np.hstack([emb, z]), dtype=torch.float32, device=self.device)

    def _dev(self, x: torch.Tensor) -> torch.Tensor:
        return deviation(self.head, x, self.ref_mean, self.ref_std)

    # -- learning -------------------------------------------------------------------------
    def learn_many(self, batch: EventBatch) -> None:
        """Unsupervised update of APE; the events join the head's unlabeled replay buffer."""
        self._check(batch)
        if len(batch) == 0:
            return
        first = self.events_seen_ == 0
        self.base.learn_many(batch)
        s = self.base.score_many(batch)
        center, scale = float(np.median(s)), float(s.std() + 1e-9)
        # the head's z feature: a moving estimate over ~NORM_HALF_LIFE_EVENTS events, so a
        # service's batch (an alert storm, a quiet minute) does not jump it
        a = 1.0 if first else 1.0 - 0.5 ** (len(batch) / NORM_HALF_LIFE_EVENTS)
        self.center_ += a * (center - self.center_)
        self.scale_ += a * (scale - self.scale_)
        self.unlabeled.extend(tuple(r) for r in batch.rows)
        self.events_seen_ = self.base.events_seen_

    def learn_labels(self, batch: EventBatch, labels: np.ndarray, train: bool = True) -> None:
        """Analyst verdicts: 1 = malicious, 0 = benign. Retrains the head, with the replay of
        traffic as it is now (its BatchNorm statistics); `train=False` records them and leaves
        the head stale for a `head_job`. Traffic alone never retrains it: a retrain costs ~1 s
        on a CPU, and a scorer learns traffic every batch. Each pattern counts once, with its
        latest verdict (a service passes one row per alert of a judged group: a verdict is one
        judgment, however many alerts it covers); the newest `max_labeled` patterns of each
        side are kept."""
        self._check(batch)
        labels = np.asarray(labels)
        if len(labels) != len(batch):
            raise ValueError("one label per event")
        if not len(batch):
            return
        latest = dict(zip(map(tuple, batch.rows), labels.tolist(), strict=True))
        mal = [r for r in self.malicious if r not in latest]
        ben = [r for r in self.benign if r not in latest]
        for row, y in latest.items():
            (mal if y == 1 else ben).append(row)
        keep = self.config["max_labeled"]
        self.malicious, self.benign = mal[-keep:], ben[-keep:]
        self.labels_version_ += 1
        if train:
            self.install(self.head_job().run())

    def forget(self, row: Sequence[str], train: bool = True) -> bool:
        """Drop every verdict on `row` (an analyst's undo) and retrain the head from a fresh
        one on the rest (untrained again when none is left; `train=False`: left stale for a
        `head_job`); True if there was one."""
        row = tuple(row)
        mal = [r for r in self.malicious if r != row]
        ben = [r for r in self.benign if r != row]
        if len(mal) == len(self.malicious) and len(ben) == len(self.benign):
            return False
        self.malicious, self.benign = mal, ben
        self.labels_version_ += 1
        if not mal and not ben:  # as if never told: nothing to train
            self.head, self.trained_ = self._fresh_head(), False
            self.head_version_, self.head_labels_ = self.labels_version_, frozenset()
        else:
            self.fresh_from_ = self.labels_version_
            if train:
                self.install(self.head_job().run())
        return True

    @property
    def head_stale(self) -> bool:
        """Verdicts were recorded that the head has not been trained on."""
        return self.head_version_ < self.labels_version_

    def head_job(self) -> HeadJob:
        """The head's next training, its inputs gathered now (APE's embeddings of the replay
        and the verdicts, on the thread that owns APE); `run()` it anywhere."""
        fresh = self.fresh_from_ > self.head_version_
        head = self._fresh_head() if fresh else copy.deepcopy(self.head)
        labels = frozenset([(r, 1) for r in self.malicious] + [(r, 0) for r in self.benign])
        # without traffic to contrast with there is nothing to train on
        unl, mal, ben = (
            (list(self.unlabeled), self.malicious, self.benign) if self.unlabeled else ([], [], [])
        )
        return HeadJob(
            head,
            self.features(unl) if unl else None,
            self.features(mal) if mal else None,
            self.features(ben) if ben else None,
            self,
            self.labels_version_,
            labels,
            fresh,
        )

    def install(self, job: HeadJob) -> Callable[[], None]:
        """Score with the head `job` trained (it knows the verdicts up to its version); the
        returned call puts the previous head back (a rolled-back training: its verdicts stay
        recorded, for the benign look-alike term, and are trained on with the next one)."""
        before = (self.head, self.trained_, self.head_labels_)
        self.head = job.head
        self.trained_ = job.trained or (self.trained_ and not job.fresh)
        self.head_version_ = max(self.head_version_, job.version)
        self.head_labels_ = job.labels

        def undo() -> None:
            self.head, self.trained_, self.head_labels_ = before

        return undo

    # -- scoring --------------------------------------------------------------------------
    def score_many(self, batch: EventBatch) -> np.ndarray:
        self._check(batch)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float64)
        z = self._base_z(batch.rows)
        if not self.trained_:
            return z
        with torch.inference_mode():
            dev = self._dev(self.features(batch.rows)).to("cpu", torch.float64).numpy()
        return z + dev - self.config["benign_suppress"] * self.benign_similarity(batch.rows)

    def benign_similarity(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """Per event: max over analyst-benign events of (share of equal fields)^2. Fields are
        compared as small integers (a value no benign event has never matches)."""
        out = np.zeros(len(rows))
        if not self.benign or not len(rows):
            return out
        distinct = list(dict.fromkeys(self.benign))
        codes = [
            {v: i for i, v in enumerate(dict.fromkeys(col))} for col in zip(*distinct, strict=True)
        ]
        ben = np.array([[c[v] for c, v in zip(codes, r, strict=True)] for r in distinct])
        x = np.array([[c.get(v, -1) for c, v in zip(codes, r, strict=True)] for r in rows])
        step = max(1, 4_000_000 // (len(distinct) * len(codes)))  # bounded scratch memory
        for s in range(0, len(x), step):
            eq = (x[s : s + step, None, :] == ben[None, :, :]).mean(axis=2)
            out[s : s + step] = eq.max(axis=1) ** 2
        return out

    def explain_many(self, batch: EventBatch, top_k: int = 3) -> list[Explanation]:
        return self.base.explain_many(batch, top_k)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        base_arrays, base_meta = self.base.state_dict()
        arrays = {f"base.{k}": v for k, v in base_arrays.items()}
        for k, v in self.head.state_dict().items():
            arrays[f"head.{k}"] = v.detach().cpu().numpy().copy()
        meta = {
            "detector": self.name,
            "state_format": STATE_FORMAT,
            "entity_types": list(self.entity_types),
            "config": self.config,
            "base": base_meta,
            "ape_config": self.ape_config,
            "trained": self.trained_,
            "center": self.center_,
            "scale": self.scale_,
            "unlabeled": [list(r) for r in self.unlabeled],
            "malicious": [list(r) for r in self.malicious],
            "benign": [list(r) for r in self.benign],
            # a head left stale (a crash while it trained) is trained after the restart
            "labels_version": self.labels_version_,
            "head_version": self.head_version_,
            "fresh_from": self.fresh_from_,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> DevNetDetector:
        cls.check_state(meta)
        det = cls(meta["entity_types"], **meta["config"], ape_config=meta["ape_config"])
        det.base.load_arrays(arrays_under(arrays, "base."), meta["base"])
        head = {k: torch.as_tensor(v) for k, v in arrays_under(arrays, "head.").items()}
        det.head.load_state_dict(head)
        det.head.eval()
        det.trained_ = bool(meta["trained"])
        det.center_, det.scale_ = float(meta["center"]), float(meta["scale"])
        det.unlabeled.extend(tuple(r) for r in meta["unlabeled"])
        det.malicious = [tuple(r) for r in meta["malicious"]]
        det.benign = [tuple(r) for r in meta["benign"]]
        det.labels_version_ = int(meta.get("labels_version", 0))  # absent before 2026-12-05
        det.head_version_ = int(meta.get("head_version", 0))
        det.fresh_from_ = int(meta.get("fresh_from", -1))
        det.events_seen_ = det.base.events_seen_
        return det


class HeadJob:
    """One training of the head: a copy of it (or a fresh one) and the features it trains
    on, so `run` may go on in another thread while the detector scores and learns traffic."""

    def __init__(
        self,
        head: DevNetHead,
        unl: torch.Tensor | None,
        mal: torch.Tensor | None,
        ben: torch.Tensor | None,
        det: DevNetDetector,
        version: int,
        labels: frozenset[tuple[tuple[str, ...], int]],
        fresh: bool,
    ) -> None:
        self.head, self.unl, self.mal, self.ben = head, unl, mal, ben
        self.config, self.device = dict(det.config), det.device
        self.ref_mean, self.ref_std = det.ref_mean, det.ref_std
        self.version, self.labels, self.fresh = version, labels, fresh
        self.trained = False

    def run(self) -> HeadJob:
        """Train the head copy (nothing without traffic to contrast with); returns self."""
        if self.unl is None:
            return self
        cfg, unl, mal, ben, device = self.config, self.unl, self.mal, self.ben, self.device
        half = cfg["batch_size"] // 2
        gen = torch.Generator(device=device).manual_seed(cfg["seed"])
        opt = torch.optim.RMSprop(self.head.parameters(), lr=cfg["lr"])
        self.head.train()
        for _ in range(cfg["epochs"] * cfg["batches_per_epoch"]):
            parts, kinds = [], []
            for label, pool in ((1, mal), (0, ben)):
                if pool is not None:
                    k = half if mal is None or ben is None else half // 2
                    idx = torch.randint(len(pool), (k,), generator=gen, device=device)
                    parts.append(pool[idx])
                    kinds.append(torch.full((k,), label, device=device))
            idx = torch.randint(len(unl), (half,), generator=gen, device=device)
            parts.append(unl[idx])
            kinds.append(torch.full((half,), -1, device=device))
            x, kind = torch.cat(parts), torch.cat(kinds)
            dev = deviation(self.head, x, self.ref_mean, self.ref_std)
            loss = torch.zeros((), device=device)
            if (kind == 1).any():  # AnoOnly: the anomaly term only
                loss = loss + torch.relu(cfg["margin"] - dev[kind == 1]).mean()
            if (kind == 0).any():  # our benign term
                loss = (
                    loss
                    + cfg["benign_weight"]
                    * torch.relu(dev[kind == 0] + cfg["benign_margin"]).mean()
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.head.parameters(), 1.0)
            opt.step()
        self.head.eval()
        self.trained = True
        return self
