"""Training batches gathered from tensors that live on the device (``data.device_batches``): no per-sample collate.

A GPU epoch of the ordinary loader waits on Python: every batch is ``batch_size`` ``__getitem__`` calls, a numpy
collate and a host-to-device copy. Here the training split is collated once, at the first training epoch, into
whole padded tensors (``materialise``: ``Collate`` itself runs over the split in chunks, so every row is exactly the
batch row the ordinary loader would give that sample, every key included), moved once to the module's device, and
each batch is one index gather ``tensor[index]`` per key.

Order. Epoch ``e`` draws one permutation of all samples from ``torch.Generator().manual_seed(seed + e)``: the batch
composition is a function of the seed and the epoch only (not the same order as the ``DataLoader``'s, which draws
its epochs from one running generator; the set of samples per epoch is the same). Under DDP the permutation is cut
into global batches of ``world_size * batch_size`` and rank ``r`` takes the strided slice ``r, r + w, ...`` of each,
so the ranks' shards are disjoint, together hold every sample once, and every rank takes the same number of steps;
a last global batch with fewer samples than ranks is merged into the one before (no padding, nothing dropped). With
one process every batch is ``batch_size`` samples and the last partial one is kept. ``data.group_by_length`` keeps
its own batches (``samplers.LengthGroupedBatchSampler``, seeded the same way as with the ordinary loader).
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from .samplers import LengthGroupedBatchSampler

Batch = dict[str, torch.Tensor]
CHUNK = 65_536  # samples collated per call while materialising (bounds the numpy scratch memory)


def materialise(samples: Dataset, collate: Callable[[list], Batch], chunk: int = CHUNK) -> Batch:
    """Every sample of ``samples`` as one row of whole tensors: ``collate`` over consecutive chunks, concatenated."""
    n = len(samples)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("data.device_batches: the training split has no samples")
    parts = [collate([samples[i] for i in range(start, min(start + chunk, n))]) for start in range(0, n, chunk)]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def rank_batches(n: int, batch_size: int, perm: torch.Tensor, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """Rank ``rank``'s batches of one epoch: ``perm`` (a permutation of ``n`` samples) cut into global batches of
    ``world_size * batch_size``, this rank's strided slice of each; a last global batch with fewer than
    ``world_size`` samples joins the one before, so that no rank gets an empty batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world size {world_size}")
    if n < world_size:
        raise ValueError(f"data.device_batches: {n} training samples cannot be shared by {world_size} ranks")
    step = world_size * batch_size
    bounds = list(range(0, n, step)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < world_size:
        del bounds[-2]
    return [perm[lo + rank:hi:world_size] for lo, hi in zip(bounds[:-1], bounds[1:])]


class DeviceBatches:
    """An iterable of training batches (dicts of tensors on ``device``), one gather per key; Lightning uses it as a
    train dataloader: ``len`` is this rank's batches per epoch, and ``sampler.set_epoch`` (called by Lightning at
    every epoch start) picks the epoch's permutation.

    ``tensors``: the materialised split (CPU). ``device``: a device, or a callable that returns it (read at the
    first iteration, when the module is on its device). ``lengths``: history lengths, only for
    ``group_by_length``.

    Resumable (Lightning saves ``state_dict`` with the fit loop and loads it when a fit restarts inside an epoch): the
    order is a function of the seed and the epoch, so the state is the batches training finished in the epoch, which
    a restarted iterator skips. The datamodule sets ``progress``, a callable that returns Lightning's index of the
    epoch being trained and those batches; an iterator takes its epoch from it (Lightning 2.6 makes a resumed run's
    first iterator before it sets the epoch)."""

    #: set by the datamodule: ``() -> (epoch index, batches whose training step finished in it)``, Lightning's counts
    progress: Callable[[], tuple[int, int]] | None = None

    def __init__(self, tensors: Batch, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 device: torch.device | str | Callable[[], torch.device] = "cpu",
                 group_by_length: bool = False, lengths: np.ndarray | None = None) -> None:
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self._device = device
        self._on_device: Batch | None = None
        self.epoch = 0
        self.sampler = self            # Lightning calls ``dataloader.sampler.set_epoch(epoch)``
        self._skip = 0                 # batches of the epoch a restart skips (load_state_dict)
        self._iter_epoch: int | None = None
        self.grouped = (LengthGroupedBatchSampler(lengths, batch_size, seed=seed, rank=rank, world_size=world_size)
                        if group_by_length else None)
        rank_batches(self.n, batch_size, torch.arange(self.n), rank, world_size)   # validates the arguments

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.grouped is not None:
            self.grouped.set_epoch(epoch)

    def to(self, device: torch.device | str) -> DeviceBatches:
        """Serve the batches on ``device`` from now on (e.g. outside a trainer); returns ``self``."""
        self._device = device
        return self

    @property
    def device(self) -> torch.device:
        device = torch.device(self._device() if callable(self._device) else self._device)
        if device.type == "cuda" and device.index is None:          # "cuda": the current device, as .to() reads it
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def on_device(self) -> Batch:
        """The split's tensors on the device (moved once; again only if the device changes)."""
        device = self.device
        if self._on_device is None or next(iter(self._on_device.values())).device != device:
            self._on_device = {k: v.to(device) for k, v in self.tensors.items()}
        return self._on_device

    def indices(self) -> list[torch.Tensor]:
        """This rank's batches of the current epoch as CPU index tensors."""
        if self.grouped is not None:
            return [torch.as_tensor(b, dtype=torch.long) for b in self.grouped]
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return rank_batches(self.n, self.batch_size, perm, self.rank, self.world_size)

    def __len__(self) -> int:
        if self.grouped is not None:
            return len(self.grouped)
        return len(rank_batches(self.n, self.batch_size, torch.arange(self.n), self.rank, self.world_size))

    def state_dict(self) -> dict[str, int]:
        epoch, done = self.progress() if self.progress is not None else (self._iter_epoch, 0)
        return {"batches": int(done) if epoch == self._iter_epoch else 0}    # else: saved as an epoch starts

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = int(state.get("batches", 0))

    def __iter__(self) -> Iterator[Batch]:
        if self.progress is not None:
            self.set_epoch(self.progress()[0])
        self._iter_epoch = self.epoch
        skip, self._skip = self._skip, 0
        return self._batches(skip)

    def _batches(self, skip: int) -> Iterator[Batch]:
        tensors = self.on_device()
        device = next(iter(tensors.values())).device
        batches = self.indices()[skip:]
        if not batches:
            return
        # one host-to-device copy of the epoch's indices, then only gathers
        flat = torch.cat(batches).to(device, non_blocking=True)
        for index in flat.split([len(b) for b in batches]):
            yield {k: v[index] for k, v in tensors.items()}
