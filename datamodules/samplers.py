"""Training batch sampler that groups samples of similar history length into the same batch (``data.group_by_length``).

Batches are padded to ``max_history`` by ``Collate``; a model that trims the all-padding columns of a batch
(RPG does) then runs its transformer over ``max length in the batch`` positions instead of ``max_history``. With
random batches of 256 Amazon users that maximum is almost always ``max_history``; grouped, most batches are short.

The scheme is the usual "mega-batch" one: shuffle all indices (seeded by ``seed`` and the epoch), cut them into
mega-batches of ``batch_size * mega`` samples, sort each mega-batch by length (longest first), then shuffle the
order of the resulting batches. Every index appears exactly once per epoch on one rank; under DDP the permutation
is padded by wrapping (as ``DistributedSampler`` does) so that every rank gets the same number of samples, and rank
``r`` takes whole batches ``r, r + w, ...`` so that its batches stay grouped.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Yields batches (lists of sample indices) whose samples have similar ``lengths``; a ``DataLoader``
    ``batch_sampler``. Every batch but the last of each mega-batch is full."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, mega: int = 50, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1 or mega < 1:
            raise ValueError(f"batch_size and mega must be >= 1, got {batch_size} and {mega}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world size {world_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.mega = batch_size, seed, mega
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.sampler = self   # Lightning calls ``dataloader.batch_sampler.sampler.set_epoch`` every epoch
        n_batches = -(-len(self.lengths) // batch_size)
        self.batches_per_rank = -(-n_batches // world_size)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch: a new grouping each epoch."""
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        """All batches of this epoch (every rank's), in order, before the rank's share is taken."""
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(len(self.lengths))
        size = self.batch_size * self.mega
        out: list[np.ndarray] = []
        for start in range(0, len(perm), size):
            chunk = perm[start:start + size]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            out.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        order = rng.permutation(len(out))
        out = [out[i] for i in order]
        while len(out) < self.batches_per_rank * self.world_size:   # DDP: equal batch counts on every rank
            out.append(out[len(out) % max(len(order), 1)])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches()[self.rank::self.world_size]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self.batches_per_rank
