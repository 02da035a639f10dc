"""The base LightningModule every model subclasses: implement ``training_loss`` and ``recommend``, inherit the rest.

The base owns the optimiser and scheduler (from the ``optim`` config), logging, validation and test through the
shared evaluator (``RankingMetrics``), evaluation throughput (users per second) and the test figures that the
benchmark runner writes into a result record. ``recommend(batch, k)`` returns ``[B, k]`` item ids, best first,
``-1`` for an empty slot; models that decode with a beam declare ``beam_size`` and ``k <= beam_size`` is enforced.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Any, ClassVar

import lightning as L
import torch

from .evaluator import DEFAULT_KS, RankingMetrics


def float32(like: torch.Tensor) -> torch.autocast:
    """A block that computes in float32 under mixed precision too (``trainer.precision=bf16-mixed``): cast its
    inputs with ``.float()``. For scores that are ranked or normalised (softmax, cosine / temperature, top-k), where
    bf16's 8-bit mantissa would tie or shift them."""
    return torch.autocast(like.device.type, enabled=False)


DEFAULT_OPTIM: dict[str, Any] = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.999],
                                 "scheduler": "none", "warmup_steps": 0, "grad_clip": None}


class GenerativeRecommender(L.LightningModule):
    """Subclass and implement ``training_loss(batch) -> scalar`` and ``recommend(batch, k) -> [B, k] item ids``."""

    #: False for models with nothing to train (the runner then skips ``fit``), e.g. popularity.
    trainable: ClassVar[bool] = True
    #: True for models whose ``training_loss`` uses a packed batch's ``targets`` (``data.train_samples=sequence``)
    sequence_training: ClassVar[bool] = False

    def __init__(self, num_items: int, optim: dict[str, Any] | None = None,
                 eval: dict[str, Any] | None = None, **_: Any) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_items = int(num_items)
        self.optim_cfg = {**DEFAULT_OPTIM, **dict(optim or {})}
        eval_cfg = dict(eval or {})
        self.ks = sorted(int(k) for k in eval_cfg.get("ks", DEFAULT_KS))
        self.beam_size: int | None = eval_cfg.get("beam_size")
        if self.beam_size is not None and self.ks[-1] > int(self.beam_size):
            raise ValueError(f"largest cut-off K={self.ks[-1]} exceeds beam size B={self.beam_size}: K <= B is "
                             "required (a generative model cannot rank beyond its beam)")
        self.val_metrics = RankingMetrics(self.num_items, self.ks)
        self.test_metrics = RankingMetrics(self.num_items, self.ks)
        self.test_results: dict[str, float] = {}
        #: per-user test outcome after ``test``: ``{"user": [N] dataset user indices, ascending, "rank": [N] 0-based
        #: slot of the target in the top max(K), -1 for a miss}`` (numpy; every rank's users gathered)
        self.test_outcomes: dict[str, Any] | None = None
        self._outcomes: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: model-specific facts for the result record (e.g. the tokenizer's codebook usage and collisions)
        self.result_extras: dict[str, Any] = {}
        self._test_started = 0.0
        self._compiled_loss: Any = None     # compile_network (trainer.compile)

    # ---------------------------------------------------------------- to implement
    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement training_loss(batch)")

    def recommend(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement recommend(batch, k)")

    def prepare(self, datamodule: Any) -> None:
        """Optional: fit anything that needs the training data before training (statistics, tokenizers)."""

    def compile_network(self, **options: Any) -> None:
        """``trainer.compile``: train through ``torch.compile(training_loss)`` (the model's forward and its loss, one
        graph where the shapes allow). Call after ``prepare`` (which may build the network). Evaluation stays eager:
        beam search and graph decoding are loops with data-dependent shapes."""
        self._compiled_loss = torch.compile(self.training_loss, **options)

    # ---------------------------------------------------------------- loops
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = (self._compiled_loss or self.training_loss)(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["target"]))
        return loss

    def _ranked(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        k = self.ks[-1]
        ranked = self.recommend(batch, k)
        if ranked.shape != (len(batch["target"]), k):
            raise ValueError(f"{type(self).__name__}.recommend returned shape {tuple(ranked.shape)}, "
                             f"expected ({len(batch['target'])}, {k})")
        return ranked

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.val_metrics.update(self._ranked(batch), batch["target"])

    def on_validation_epoch_end(self) -> None:
        figures = self.val_metrics.compute()
        self.val_metrics.reset()
        figures.pop("users")
        for key, value in figures.items():  # already reduced over ranks by the metric
            self.log(f"val/{key}", value, prog_bar=key in ("ndcg@10", "hr@10"), sync_dist=False)

    def on_test_epoch_start(self) -> None:
        self._test_started = time.perf_counter()
        self._outcomes = []

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.record_test(self._ranked(batch), batch)

    def record_test(self, ranked: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Score a test batch's ranked lists [B, K] (the suite's figures) and keep each user's outcome (the target's
        slot, or a miss) for the per-user file (``test_outcomes``). Every model's ``test_step`` ends here."""
        self.test_metrics.update(ranked, batch["target"])
        if "user" in batch:
            k, pos = self.test_metrics.max_k, self.test_metrics.last_positions
            self._outcomes.append((batch["user"].detach().to("cpu", torch.long),
                                   torch.where(pos < k, pos, -1).to("cpu", torch.long)))

    def on_test_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._test_started
        if self.trainer is not None and self.trainer.world_size > 1:  # the slowest rank sets the pace
            elapsed = float(self.trainer.strategy.reduce(torch.tensor(elapsed, device=self.device), reduce_op="max"))
        figures = self.test_metrics.compute()
        self.test_metrics.reset()
        figures["eval_seconds"] = elapsed
        self.test_outcomes = self._gather_outcomes()
        figures["eval_users_per_s"] = figures["users"] / elapsed if elapsed > 0 else float("inf")
        self.test_results = figures
        self.log_dict({f"test/{k}": v for k, v in figures.items() if "@" in k}, sync_dist=False)

    def _gather_outcomes(self) -> dict[str, Any] | None:
        """This test's per-user outcomes from every rank, by user index (None when the batches carried no users)."""
        if not self._outcomes:
            return None
        local = torch.stack([torch.cat([u for u, _ in self._outcomes]), torch.cat([r for _, r in self._outcomes])])
        self._outcomes = []
        if self.trainer is not None and self.trainer.world_size > 1:     # shards differ in size: pad, gather, cut
            sizes = self.all_gather(torch.tensor(local.shape[1], device=self.device)).view(-1).tolist()
            padded = torch.full((2, max(sizes)), -1, dtype=torch.long, device=self.device)
            padded[:, :local.shape[1]] = local.to(self.device)
            everyone = self.all_gather(padded).cpu()                      # [world, 2, max]
            local = torch.cat([everyone[i, :, :n] for i, n in enumerate(sizes)], dim=1)
        order = torch.argsort(local[0])
        users, ranks = local[0, order], local[1, order]
        if len(users) > 1 and bool((users[1:] == users[:-1]).any()):     # a padding sampler (not the suite's)
            warnings.warn("per-user test outcomes not kept: a user was tested more than once (a sampler that pads "
                          "the shards; the figures count that user twice as well)", RuntimeWarning, stacklevel=2)
            return None
        small = self.test_metrics.max_k <= 127
        return {"user": users.numpy().astype("int32"), "rank": ranks.numpy().astype("int8" if small else "int16")}

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        cfg = self.optim_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        name = str(cfg["name"]).lower()
        if name == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=tuple(cfg["betas"]))
        elif name == "adam":
            opt = torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=tuple(cfg["betas"]))
        elif name == "sgd":
            opt = torch.optim.SGD(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], momentum=cfg.get("momentum", 0.9))
        else:
            raise ValueError(f"optim.name: unknown optimiser {cfg['name']!r} (adamw, adam, sgd)")
        sched = str(cfg.get("scheduler", "none")).lower()
        if sched == "none":
            return opt
        warmup = int(cfg.get("warmup_steps", 0))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        if sched == "cosine":
            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / max(warmup, 1)
                return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))
        elif sched == "inverse_sqrt":  # T5 / TIGER: constant for `warmup` steps, then 1/sqrt(step)
            def factor(step: int) -> float:
                return 1.0 / math.sqrt(max(step, warmup, 1)) * math.sqrt(max(warmup, 1))
        elif sched == "linear":
            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / max(warmup, 1)
                return max(0.0, 1 - (step - warmup) / max(total - warmup, 1))
        else:
            raise ValueError(f"optim.scheduler: unknown scheduler {cfg['scheduler']!r} (none, cosine, inverse_sqrt, linear)")
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SemanticIDRecommender(GenerativeRecommender):
    """Base of the models that work on semantic IDs (TIGER, RPG, the LLM models): ``prepare`` builds the SID table
    from the model's ``tokenizer`` config (``grbench.tokenizers.build``, cached) and records the tokenizer report in
    the result; a subclass sets ``tokenizer_cfg`` and ``seed`` and implements ``setup_table(table)``."""

    tokenizer_cfg: dict[str, Any]
    seed: int

    def prepare(self, datamodule: Any) -> None:
        from grbench.tokenizers.build import build_sid_table

        table, report = build_sid_table(datamodule.data, self.tokenizer_cfg, datamodule.cache_dir, self.seed)
        self.setup_table(table)
        self.result_extras["tokenizer"] = report

    def setup_table(self, table: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement setup_table(table)")

    def check_table(self, table: Any) -> None:
        """The table must cover exactly the dataset's items."""
        if table.num_items != self.num_items:
            raise ValueError(f"SID table has {table.num_items} items, the dataset {self.num_items}")
