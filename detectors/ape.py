"""APE detector: entity embeddings trained by NCE with context-dependent noise.

Chen, Tang, Sun, Chen, Zhang, IJCAI 2016 (arXiv 1608.07502). For each minibatch one entity
type i is picked; every observed event gets k negatives that replace only a_i with a draw from
type i's unigram distribution raised to 0.75 (the other entities are the context). The NCE logit
is Delta(x) = S(x) - log(k * P_n(x_i)) with P_n the raw unigram probability, and the loss is
-mean over positives and negatives of log sigma(y * Delta). The anomaly score is -S(e); the
per-pair terms w_ij <v_ai, v_aj> explain it. Same code on CUDA and CPU; scoring runs under
`torch.inference_mode` in fixed-size chunks.

Two ways to learn. A batch fit (`train_steps_per_event=0`, the default, the authors' demo):
every `learn_many` call runs `epochs` passes over its batch, ~150 us per event on one CPU
core. A stream (`train_steps_per_event > 0`, what the service runs): METHODS.md's "fine-tune
on a replay window": each call counts every event into the vocabulary (the noise
distribution) and keeps the newest `replay_size` events, then takes `train_steps_per_event`
NCE minibatches per learned event (a fraction, carried across calls) drawn uniformly from
that window, with one Adam optimiser kept between calls. Training cost per event is then
fixed (~8 ms a minibatch on one CPU core), whatever the traffic rate. The first window's
events (until `replay_size` events are seen) are trained at the batch fit's rate, `epochs /
batch_size` steps per event, so a new model starts where a batch fit would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detectors.ape_model import APEModel
from detectors.base import (
    STATE_FORMAT,
    Detector,
    EntityRarity,
    EventBatch,
    Explanation,
    PairContribution,
)
from detectors.vocabulary import Vocabulary

_EPS = 1e-12


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class APEDetector(Detector):
    """Unsupervised entity-embedding detector; the score is -S(e)."""

    name = "ape"

    def __init__(
        self,
        entity_types: Sequence[str],
        dim: int = 16,
        negatives: int = 5,
        batch_size: int = 512,
        epochs: int = 10,
        lr: float = 0.01,
        min_count: int = 2,
        max_size: int = 100_000,
        half_life_events: float = 0.0,
        seed: int = 0,
        device: str | None = None,
        score_chunk: int = 16384,
        train_steps_per_event: float = 0.0,
        replay_size: int = 16384,
    ) -> None:
        super().__init__(entity_types)
        if len(self.entity_types) < 2:
            raise ValueError("APE needs at least two entity types")
        self.config: dict[str, Any] = {
            "dim": int(dim), "negatives": int(negatives), "batch_size": int(batch_size),
            "epochs": int(epochs), "lr": float(lr), "min_count": int(min_count),
            "max_size": int(max_size), "half_life_events": float(half_life_events),
            "seed": int(seed), "score_chunk": int(score_chunk),
            "train_steps_per_event": float(train_steps_per_event),
            "replay_size": int(replay_size),
        }  # fmt: skip
        if train_steps_per_event < 0 or replay_size < 1:
            raise ValueError("train_steps_per_event must be >= 0 and replay_size >= 1")
        self.device = torch.device(device) if device else default_device()
        self.vocab = Vocabulary(self.entity_types, min_count, max_size, half_life_events)
        self.steps_ = 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = APEModel(len(self.vocab), len(self.entity_types), dim).to(self.device)
        # streaming: the replay window (a ring of encoded events), the fractional step carry
        # and the optimiser kept between calls (rebuilt when the table grows); not saved,
        # a restarted stream refills its window
        self._replay = np.zeros((0, len(self.entity_types)), dtype=np.int64)
        self._replay_next = 0
        self._carry = 0.0
        self.streamed_ = 0  # events learned as a stream (saved: a restart does not re-warm)
        self._opt: torch.optim.Optimizer | None = None
        self._opt_rows = 0

    # -- learning -------------------------------------------------------------------------
    def _noise(self) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Raw unigram P_n per id (for the logit) and, per type, (ids, unigram^0.75 weights)."""
        voc = self.vocab
        p_raw = np.zeros(len(voc), dtype=np.float64)
        samplers = []
        for j in range(len(self.entity_types)):
            ids = voc.type_ids(j)
            c = np.maximum(voc.counts[ids], 0.0)
            total = c.sum()
            p_raw[ids] = c / total if total > 0 else 1.0 / len(ids)
            w = c**0.75
            w = w / w.sum() if w.sum() > 0 else np.full(len(ids), 1.0 / len(ids))
            samplers.append(
                (torch.as_tensor(ids, device=self.device),
                 torch.as_tensor(w, dtype=torch.float32, device=self.device))
            )  # fmt: skip
        return torch.as_tensor(p_raw, dtype=torch.float32, device=self.device), samplers

    def learn_many(self, batch: EventBatch) -> None:
        """Update the vocabulary, then `epochs` NCE passes over the batch (a replay window)."""
        self._check(batch)
        if len(batch) == 0:
            return
        ids_np, fresh = self.vocab.observe(batch.rows)
        self.events_seen_ = self.vocab.events_seen
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"] * 1_000_003 + self.steps_)
            self.model.grow(len(self.vocab))
            self.model.reset_rows(fresh)
            if cfg["train_steps_per_event"] > 0:
                self._stream(ids_np, fresh)
            else:
                self._train(torch.as_tensor(ids_np, device=self.device))

    def _train(self, ids: torch.Tensor) -> None:
        """The batch fit: `epochs` shuffled passes over `ids`, a fresh optimiser."""
        cfg = self.config
        bs = cfg["batch_size"]
        p_raw, samplers = self._noise()
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.model.train()
        n = ids.shape[0]
        for _ in range(cfg["epochs"]):
            perm = torch.randperm(n, device=self.device)
            for start in range(0, n, bs):
                self._step(opt, ids[perm[start : start + bs]], p_raw, samplers)
        self.model.eval()

    def _stream(self, ids: np.ndarray, fresh: list[int]) -> None:
        """Streaming learning: remember `ids` in the replay window, then take this call's share
        of `train_steps_per_event` minibatches from the window."""
        cfg = self.config
        if fresh and len(self._replay):
            self._forget(fresh)
        self._remember(ids)
        rate = cfg["train_steps_per_event"]
        if self.streamed_ < cfg["replay_size"]:  # the first window: as a batch fit would
            rate = max(rate, cfg["epochs"] / cfg["batch_size"])
        self.streamed_ += len(ids)
        self._carry += len(ids) * rate
        steps = int(self._carry)
        self._carry -= steps
        if not steps:
            return
        if self._opt is None or self._opt_rows != len(self.vocab):
            self._opt = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
            self._opt_rows = len(self.vocab)
        p_raw, samplers = self._noise()
        window = torch.as_tensor(self._replay, device=self.device)
        self.model.train()
        for _ in range(steps):
            pick = torch.randint(len(window), (min(cfg["batch_size"], len(window)),),
                                 device=self.device)  # fmt: skip
            self._step(self._opt, window[pick], p_raw, samplers)
        self.model.eval()

    def _forget(self, recycled: list[int]) -> None:
        """Drop the remembered events naming `recycled` ids (they name other entities now),
        the window put back in time order first so the next overwrite hits the oldest."""
        window = np.roll(self._replay, -self._replay_next, axis=0)  # oldest first
        self._replay = window[~np.isin(window, recycled).any(axis=1)]
        self._replay_next = 0

    def _remember(self, ids: np.ndarray) -> None:
        """Keep the newest `replay_size` encoded events (a ring, oldest overwritten)."""
        size = self.config["replay_size"]
        ids = ids[-size:]
        room = size - len(self._replay)
        if room > 0:  # still filling
            self._replay = np.concatenate([self._replay, ids[:room]])
            ids = ids[room:]
        if len(ids):
            at = (self._replay_next + np.arange(len(ids))) % size
            self._replay[at] = ids
            self._replay_next = int(at[-1] + 1) % size

    def _step(
        self,
        opt: torch.optim.Optimizer,
        pos: torch.Tensor,
        p_raw: torch.Tensor,
        samplers: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """One NCE minibatch: negatives replace one random type's entity in every event."""
        k = self.config["negatives"]
        b, m = pos.shape
        i = int(torch.randint(m, (1,)))
        type_ids, weights = samplers[i]
        draw = type_ids[torch.multinomial(weights, b * k, replacement=True)]
        neg = pos.repeat_interleave(k, dim=0)
        neg[:, i] = draw
        x = torch.cat([pos, neg])
        y = torch.cat([torch.ones(b, device=self.device),
                       -torch.ones(b * k, device=self.device)])  # fmt: skip
        delta = self.model(x) - float(np.log(k)) - torch.log(p_raw[x[:, i]] + _EPS)
        loss = -torch.nn.functional.logsigmoid(y * delta).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.steps_ += 1

    def nce_loss(self, batch: EventBatch, seed: int = 0) -> float:
        """Mean NCE loss over all types on a batch (for monitoring and tests)."""
        ids = torch.as_tensor(self.vocab.encode(batch.rows), device=self.device)
        p_raw, samplers = self._noise()
        k = self.config["negatives"]
        gen = torch.Generator(device=self.device).manual_seed(seed)
        total = 0.0
        with torch.inference_mode():
            for i, (type_ids, weights) in enumerate(samplers):
                draw = type_ids[torch.multinomial(weights, len(ids) * k, True, generator=gen)]
                neg = ids.repeat_interleave(k, dim=0)
                neg[:, i] = draw
                x = torch.cat([ids, neg])
                y = torch.cat([torch.ones(len(ids)), -torch.ones(len(neg))]).to(self.device)
                delta = self.model(x) - float(np.log(k)) - torch.log(p_raw[x[:, i]] + _EPS)
                total += float(-torch.nn.functional.logsigmoid(y * delta).mean())
        return total / len(samplers)

    # -- scoring --------------------------------------------------------------------------
    def _apply(self, ids: np.ndarray, fn: str) -> np.ndarray:
        chunk = self.config["score_chunk"]
        outs = []
        with torch.inference_mode():
            for s in range(0, len(ids), chunk):
                x = torch.as_tensor(ids[s : s + chunk], device=self.device)
                y = self.model(x) if fn == "score" else self.model.pair_terms(x)
                outs.append(y.to("cpu", torch.float64).numpy())
        return np.concatenate(outs)

    def log_likelihood(self, batch: EventBatch) -> np.ndarray:
        """S(e) per event (unnormalised log-likelihood)."""
        self._check(batch)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float64)
        return self._apply(self.vocab.encode(batch.rows), "score")

    def score_many(self, batch: EventBatch) -> np.ndarray:
        return -self.log_likelihood(batch)

    def embed(self, batch: EventBatch) -> np.ndarray:
        """Concatenated entity embeddings [n, m*d] (detached features for heads)."""
        ids = torch.as_tensor(self.vocab.encode(batch.rows), device=self.device)
        with torch.inference_mode():
            v = self.model.embedding(ids).reshape(len(ids), -1)
        return v.to("cpu", torch.float64).numpy()

    def rarity(self, row: Sequence[str]) -> tuple[EntityRarity, ...]:
        seen = max(self.vocab.events_seen, 1.0)
        out = []
        for j, t in enumerate(self.entity_types):
            c = self.vocab.count_of(j, row[j])
            out.append(EntityRarity(t, row[j], c, min(c / seen, 1.0)))
        return tuple(out)

    def explain_many(self, batch: EventBatch, top_k: int = 3) -> list[Explanation]:
        self._check(batch)
        if len(batch) == 0:
            return []
        terms = self._apply(self.vocab.encode(batch.rows), "pairs")
        pi: list[int] = self.model.get_buffer("pair_i").tolist()
        pj: list[int] = self.model.get_buffer("pair_j").tolist()
        types = self.entity_types
        out = []
        for row, t in zip(batch.rows, terms, strict=True):
            blame = t.max() - t  # how far each pair sits below the best-fitting pair
            share = blame / blame.sum() if blame.sum() > 0 else np.full(len(t), 1.0 / len(t))
            order = np.argsort(t, kind="stable")[:top_k]
            pairs = tuple(
                PairContribution(types[pi[p]], row[pi[p]], types[pj[p]], row[pj[p]],
                                 float(share[p]))
                for p in order
            )  # fmt: skip
            out.append(Explanation(pairs=pairs, rarity=self.rarity(row)))
        return out

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, vmeta = self.vocab.state()
        n = len(self.vocab)
        arrays["embedding"] = self.model.embedding.weight.detach()[:n].cpu().numpy().copy()
        arrays["pair_raw"] = self.model.pair_raw.detach().cpu().numpy().copy()
        arrays["bias"] = self.model.bias.detach().cpu().numpy().reshape(1).copy()
        meta = {
            "detector": self.name,
            "state_format": STATE_FORMAT,
            "entity_types": list(self.entity_types),
            "config": self.config,
            "steps": self.steps_,
            "streamed": self.streamed_,
            "vocab": vmeta,
        }
        return arrays, meta

    @classmethod
    def _check_meta(cls, meta: dict[str, Any]) -> None:
        cls.check_state(meta)

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> APEDetector:
        cls._check_meta(meta)
        det = cls(meta["entity_types"], **meta["config"])
        det.load_arrays(arrays, meta)
        return det

    def load_arrays(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore vocabulary and weights from `state_dict()` output."""
        self.vocab = Vocabulary.from_state(arrays, meta["vocab"])
        emb = np.asarray(arrays["embedding"], np.float32)
        if emb.shape != (len(self.vocab), self.config["dim"]):
            raise ValueError(f"embedding shape {emb.shape} does not match the vocabulary")
        self.model.grow(len(self.vocab))
        with torch.no_grad():
            self.model.embedding.weight[: len(emb)] = torch.as_tensor(emb)
            self.model.pair_raw.copy_(torch.as_tensor(arrays["pair_raw"]))
            self.model.bias.copy_(torch.as_tensor(arrays["bias"]).reshape(()))
        self.steps_ = int(meta["steps"])
        self.streamed_ = int(meta.get("streamed", 0))  # states before 2026-12-05 lack it
        self.events_seen_ = self.vocab.events_seen
