"""RQ-VAE item tokenizer, as in TIGER (Rajput et al. 2023, §3.1 "Semantic ID generation") and LC-Rec.

An MLP encoder maps an item embedding x to a latent z (default dims D -> 512 -> 256 -> 128 -> 32, ReLU). A
residual quantiser with ``levels`` codebooks of ``codebook_size`` codes turns z into codes: r_0 = z, and at level
d, c_d = argmin_k ||r_d - e^d_k||, r_{d+1} = r_d - e^d_{c_d}; the quantised latent is z_q = sum_d e^d_{c_d}
(with the straight-through estimator, so gradients reach the encoder). An MLP decoder mirroring the encoder
reconstructs x from z_q. The loss (TIGER §3.1) is

    L = ||x - x_hat||^2 + sum_d ( ||sg[r_d] - e^d_{c_d}||^2 + beta ||r_d - sg[e^d_{c_d}]||^2 ),  beta = 0.25,

each term a mean squared error as in LC-Rec's code. As in LC-Rec's (and most open RQ-VAE) code, the residual
passed to level d+1 is r_d minus the straight-through output, so it carries no gradient: the encoder's
commitment term comes from level 0, the deeper levels' terms train their codebooks. The codebooks start from
k-means (faiss) on the residuals of all items' initial latents, level by level (LC-Rec's ``kmeans_init``).
Training is a Lightning Trainer run (AdamW, lr 1e-3, weight decay 1e-4 as LC-Rec, batch 1024, no logger or
checkpoint files); with the same data and seed it gives the same codes (on CPU; CUDA kernels may not be
bit-reproducible). ``reinit_dead_codes`` (off by default: LC-Rec does not) resets, at each epoch end, the codes
that no item used during the epoch to random residuals of the epoch's last batch. ``encode`` is deterministic:
argmin distance at every level.

Default ``epochs`` = 150: 12101 x 384 clustered items fit in about 100 s on the 2-core development CPU with one
torch thread (0.67 s per epoch; oversubscribed cores make two OpenMP threads many times slower, so set
``torch.set_num_threads(1)`` when other work shares the CPU). TIGER and LC-Rec train for thousands of epochs:
raise ``epochs`` for a benchmark-quality tokenizer.
"""
from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any, Sequence

import faiss
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from grbench.tokenizers.item_tokenizer import ItemTokenizer, check_embeddings
from grbench.tokenizers.rq_kmeans import check_enough_items

KMEANS_NITER = 20  # faiss k-means iterations per level for the codebook initialisation


def mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``dims`` with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sq_distances(r: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [N, K] between residuals [N, d] and codes [K, d]."""
    return (r * r).sum(1, keepdim=True) - 2.0 * r @ codebook.T + (codebook * codebook).sum(1)


class RQVAEModule(L.LightningModule):
    """Encoder, residual quantiser and decoder; ``history`` holds per-epoch mean losses and level-0 usage."""

    def __init__(self, input_dim: int, hidden_dims: Sequence[int], latent_dim: int, levels: int,
                 codebook_size: int, beta: float, lr: float, weight_decay: float, reinit_dead_codes: bool) -> None:
        super().__init__()
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, latent_dim))
        self.beta, self.lr, self.weight_decay, self.reinit_dead_codes = beta, lr, weight_decay, reinit_dead_codes
        self.history: list[dict[str, float]] = []
        self._epoch: dict[str, Any] = {}

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Codes [N, L], straight-through z_q [N, d], the summed codebook + commitment loss, and the residual
        entering each level."""
        residual, z_q, loss = z, torch.zeros_like(z), z.new_zeros(())
        codes, residuals = [], []
        for codebook in self.codebooks:
            idx = sq_distances(residual.detach(), codebook).argmin(1)
            e = codebook[idx]
            loss = loss + F.mse_loss(e, residual.detach()) + self.beta * F.mse_loss(residual, e.detach())
            e_st = residual + (e - residual).detach()
            residuals.append(residual)
            codes.append(idx)
            z_q = z_q + e_st
            residual = residual - e_st
        return torch.stack(codes, 1), z_q, loss, residuals

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, seed: int) -> None:
        """k-means (faiss) on the initial latents of all items, level by level on the residuals."""
        residual = self.encoder(x).numpy().astype(np.float32)
        for lvl in range(self.codebooks.shape[0]):
            km = faiss.Kmeans(residual.shape[1], self.codebooks.shape[1], niter=KMEANS_NITER, seed=seed + lvl,
                              verbose=False)
            km.train(residual)
            centroids = torch.from_numpy(km.centroids)
            self.codebooks[lvl] = centroids
            idx = sq_distances(torch.from_numpy(residual), centroids).argmin(1)
            residual = residual - km.centroids[idx.numpy()]

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (x,) = batch
        codes, z_q, vq_loss, residuals = self.quantize(self.encoder(x))
        recon = F.mse_loss(self.decoder(z_q), x)
        for lvl in range(codes.shape[1]):
            self._epoch["usage"][lvl] += torch.bincount(codes[:, lvl], minlength=self.codebooks.shape[1]).cpu()
        n = len(x)
        self._epoch["n"] += n
        self._epoch["recon"] += recon.item() * n
        self._epoch["vq"] += vq_loss.item() * n
        self._epoch["residuals"] = [r.detach() for r in residuals]
        return recon + vq_loss

    def on_train_epoch_start(self) -> None:
        self._epoch = {"n": 0, "recon": 0.0, "vq": 0.0, "residuals": [],
                       "usage": torch.zeros(self.codebooks.shape[:2], dtype=torch.long)}

    @torch.no_grad()
    def on_train_epoch_end(self) -> None:
        usage, n = self._epoch["usage"], self._epoch["n"]
        self.history.append({"recon": self._epoch["recon"] / n, "vq": self._epoch["vq"] / n,
                             "usage0": float((usage[0] > 0).float().mean())})
        if self.reinit_dead_codes:
            for lvl, residual in enumerate(self._epoch["residuals"]):
                dead = (usage[lvl] == 0).nonzero().flatten().to(self.codebooks.device)
                pick = torch.randint(len(residual), (len(dead),), device=residual.device)
                self.codebooks[lvl, dead] = residual[pick]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class _EpochLines(L.Callback):
    """One stderr line every tenth of the epochs (and at the last): ``rq_vae: epoch 30/150 recon ... (12 s, ~48 s
    left)``."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.every = epochs, max(1, epochs // 10)
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        if done % self.every and done != self.epochs:
            return
        spent = time.perf_counter() - self.start
        epoch = getattr(module, "_epoch", {})        # this epoch's sums (the module's own hook runs after callbacks)
        n = max(int(epoch.get("n", 0)), 1)
        losses = " ".join(f"{k} {epoch[k] / n:.4g}" for k in ("recon", "vq") if k in epoch)
        print(f"rq_vae: epoch {done}/{self.epochs} {losses} ({spent:.0f} s, ~{spent / done * (self.epochs - done):.0f} "
              "s left)", file=sys.stderr, flush=True)


class RQVAE(ItemTokenizer):
    """RQ-VAE tokenizer: codes [N, levels], each level ``codebook_size`` codes."""

    kind = "rq_vae"

    def __init__(self, levels: int = 3, codebook_size: int = 256, hidden_dims: Sequence[int] = (512, 256, 128),
                 latent_dim: int = 32, beta: float = 0.25, lr: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 1024, epochs: int = 150, reinit_dead_codes: bool = False,
                 accelerator: str = "cpu", progress: bool = False) -> None:
        if min(levels, codebook_size, latent_dim, batch_size, epochs, *hidden_dims) < 1:
            raise ValueError("rq_vae: levels, codebook_size, hidden_dims, latent_dim, batch_size and epochs "
                             "must all be >= 1")
        self.levels, self.codebook_size = levels, codebook_size
        self.hidden_dims, self.latent_dim = [int(h) for h in hidden_dims], latent_dim
        self.beta, self.lr, self.weight_decay = beta, lr, weight_decay
        self.batch_size, self.epochs, self.reinit_dead_codes = batch_size, epochs, reinit_dead_codes
        self.accelerator = accelerator
        self.progress = progress  # display only: not part of ``params`` (nor of a cache key)
        self.module: RQVAEModule | None = None

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return (self.codebook_size,) * self.levels

    @property
    def params(self) -> dict[str, Any]:
        return {"levels": self.levels, "codebook_size": self.codebook_size, "hidden_dims": self.hidden_dims,
                "latent_dim": self.latent_dim, "beta": self.beta, "lr": self.lr, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "epochs": self.epochs, "reinit_dead_codes": self.reinit_dead_codes,
                "accelerator": self.accelerator}

    @property
    def history(self) -> list[dict[str, float]]:
        """Per-epoch mean reconstruction and quantisation losses and level-0 usage of the last ``fit``."""
        return self.module.history if self.module is not None else []

    def _new_module(self, input_dim: int) -> RQVAEModule:
        return RQVAEModule(input_dim, self.hidden_dims, self.latent_dim, self.levels, self.codebook_size,
                           self.beta, self.lr, self.weight_decay, self.reinit_dead_codes)

    def fit(self, embeddings: np.ndarray, seed: int = 0) -> "RQVAE":
        """Train on ``embeddings`` [N, D]; without the progress bar, one line every tenth of the epochs says how far
        it got (epoch, losses, elapsed and remaining time): a full-size fit takes minutes."""
        x = torch.from_numpy(check_embeddings(embeddings))
        check_enough_items(len(x), self.codebook_size, self.kind)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._new_module(x.shape[1])
            module.init_codebooks(x, seed)
            loader = DataLoader(TensorDataset(x), batch_size=self.batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(seed))
            lightning_log = logging.getLogger("lightning.pytorch")
            level = lightning_log.level
            if not self.progress:
                lightning_log.setLevel(logging.WARNING)  # no "GPU available: ..." banner or tips
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", ".*does not have many workers.*")
                    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # Lightning vs torch 2.13
                    trainer = L.Trainer(max_epochs=self.epochs, accelerator=self.accelerator, devices=1,
                                        logger=False, enable_checkpointing=False, enable_progress_bar=self.progress,
                                        enable_model_summary=False, log_every_n_steps=1,
                                        callbacks=[] if self.progress else [_EpochLines(self.epochs)])
                    trainer.fit(module, loader)
            finally:
                lightning_log.setLevel(level)
        self.module = module.cpu().eval()
        return self

    @torch.no_grad()
    def _quantize(self, embeddings: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if self.module is None:
            raise RuntimeError("rq_vae: fit or load the tokenizer before encoding")
        x = check_embeddings(embeddings, self.module.encoder[0].in_features)
        codes, _, _, residuals = self.module.quantize(self.module.encoder(torch.from_numpy(x)))
        return codes, residuals

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        return self._quantize(embeddings)[0].numpy().astype(np.int64)

    def last_level_distances(self, embeddings: np.ndarray) -> np.ndarray:
        residual = self._quantize(embeddings)[1][-1]
        return sq_distances(residual, self.module.codebooks[-1].detach()).clamp_min(0).numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        if self.module is None:
            raise RuntimeError("rq_vae: nothing to save before fit")
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}

    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if "encoder.0.weight" not in arrays:
            raise ValueError("rq_vae: saved arrays lack 'encoder.0.weight'")
        module = self._new_module(int(arrays["encoder.0.weight"].shape[1]))
        try:
            module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
        except RuntimeError as e:
            raise ValueError(f"rq_vae: saved arrays do not match params {self.params}: {e}") from e
        self.module = module.eval()
