"""One LightningDataModule for every model: leave-one-out splits, prefix training samples, padded batches.

Protocol (../shared/DESIGN.md): for a user sequence ``s`` of length ``n`` the last item is the test target, the
second-to-last the validation target and ``s[:n-2]`` the training part; training samples are every prefix of the
training part (``s[:t] -> s[t]`` for ``1 <= t <= n-3``); histories are capped at the ``max_history`` most recent
items.

``train_samples="sequence"`` gives the same (history, target) pairs packed for causal models that predict at every
position in one forward pass (SASRec-style, RPG's reference code): one window per user whose every position is a
target, plus, for training parts longer than ``max_history + 1``, one window per later target with only its last
position counted. A batch then also carries ``targets`` [B, max_history]: the item that follows each history
position, ``PAD`` where that position is not a target. The pairs are exactly the prefix samples' pairs. Evaluation counts every user exactly once, also under DDP: the evaluation sampler shards users across
ranks without the padding that ``DistributedSampler`` adds.

A batch is a dict of tensors: ``user`` [B], ``history`` [B, max_history] (item ids, left-padded with ``PAD``
= -1 so the most recent item is always the last column), ``history_len`` [B] and ``target`` [B]. A model that
needs its own encoding of a batch (semantic IDs, prompts) passes a ``batch_hook`` that adds keys to the dict.
With ``device_batches`` the training batches are gathered from the split's tensors on the module's device
instead (``device_batches.py``: the same rows, no per-sample collate; not with a ``batch_hook``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from .dataset import ProcessedDataset
from .device_batches import DeviceBatches, materialise
from .samplers import LengthGroupedBatchSampler

PAD = -1
SUBSET_SEED = 0  # the draw of ``max_test_users``: fixed, so capped results of different runs share their users
BatchHook = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
DEVICE_BATCHES_WITH_HOOK = ("data.device_batches=true needs batches that are whole tensors, but this model renders its "
                            "batches in Python (a batch_hook, e.g. LLM prompts): set data.device_batches=false")


class PrefixSamples(Dataset):
    """Samples ``(user, end)``: history ``seq[max(0, end-max_history):end]``, target ``seq[end]``."""

    def __init__(self, sequences: list[np.ndarray], users: np.ndarray, ends: np.ndarray, max_history: int) -> None:
        self.sequences = sequences
        self.users = users
        self.ends = ends
        self.max_history = max_history

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, int]:
        u, t = int(self.users[i]), int(self.ends[i])
        seq = self.sequences[u]
        return u, seq[max(0, t - self.max_history):t], int(seq[t])


class SequenceSamples(Dataset):
    """Packed windows over the training parts: ``(user, history, last target, per-position targets)``."""

    def __init__(self, sequences: list[np.ndarray], max_history: int) -> None:
        self.sequences, self.max_history = sequences, max_history
        users, ends, full = [], [], []
        for u, s in enumerate(sequences):
            n_train = len(s) - 2                       # training part s[:n-2]; targets at positions 1..n-3
            if n_train < 2:
                continue
            first = min(n_train - 1, max_history)      # window s[0:first] -> s[1:first+1], every position counted
            users.append(u), ends.append(first), full.append(True)
            for t in range(first + 1, n_train):        # later targets: one window each, last position only
                users.append(u), ends.append(t), full.append(False)
        self.users = np.asarray(users, dtype=np.int64)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.full = np.asarray(full, dtype=bool)

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, int, np.ndarray]:
        u, t = int(self.users[i]), int(self.ends[i])
        seq = self.sequences[u]
        start = max(0, t - self.max_history)
        targets = seq[start + 1:t + 1].copy()
        if not self.full[i]:
            targets[:-1] = PAD
        return u, seq[start:t], int(seq[t]), targets

    def num_targets(self) -> int:
        return int(sum(min(int(t), self.max_history) if f else 1 for t, f in zip(self.ends, self.full)))


def split_indices(sequences: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Leave-one-out sample indices ``(users, ends)`` for train / val / test."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    users = np.arange(len(sequences), dtype=np.int64)
    n_train = np.maximum(lengths - 3, 0)  # targets at positions 1..n-3
    train_users = np.repeat(users, n_train)
    offsets = np.concatenate([[0], np.cumsum(n_train)[:-1]]) if len(users) else np.zeros(0, np.int64)
    train_ends = np.arange(len(train_users), dtype=np.int64) - np.repeat(offsets, n_train) + 1
    return {"train": (train_users, train_ends), "val": (users, lengths - 2), "test": (users, lengths - 1)}


class EvalShardSampler(DistributedSampler):
    """Rank ``r`` of ``w`` gets indices ``r, r+w, ...``: no padding, no repeats, every sample exactly once.

    It is a ``DistributedSampler`` only so that Lightning keeps it as is: with ``use_distributed_sampler=True``
    (Lightning's default) any other sampler is wrapped in a ``DistributedSamplerWrapper`` that shards this rank's
    shard again (lightning 2.6.6, 2 ranks, 101 test users: 51 users evaluated). ``DistributedSampler.__init__``
    is deliberately not called (it needs the dataset and pads); the attributes Lightning and torch read are set here.
    """

    def __init__(self, n: int, rank: int, world_size: int) -> None:  # noqa: D107 (no super().__init__: see above)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid rank {rank} for world size {world_size}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n, self.rank, self.world_size = n, rank, world_size
        self.dataset = None
        self.num_replicas = world_size
        self.num_samples = len(range(rank, n, world_size))
        self.total_size = n
        self.shuffle, self.drop_last, self.seed, self.epoch = False, False, 0, 0

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


class ResumableLoader(DataLoader):
    """The training ``DataLoader``, resumable from a checkpoint with the order the uninterrupted run had.

    Its ``state_dict`` holds the shuffle generator's state when the current epoch's iterator was made and now (after
    the epoch's draws), and the batches training completed in the epoch. A run resumed from a checkpoint saved at the
    end of an epoch starts the next epoch from the generator's state then (``start_after``; the datamodule keeps the
    state in the checkpoint). One resumed from a checkpoint saved inside an epoch (Lightning loads the state with the
    fit loop's and calls ``load_state_dict``) replays that epoch: the generator goes back to the epoch's start, the
    completed batches are drawn and dropped, the rest follow. Samplers seeded by the epoch (DDP, ``group_by_length``)
    need only the skip, and their epoch set when an iterator is made (Lightning 2.6 makes a resumed run's first one
    before it sets the samplers' epoch, which would then serve epoch 0's order). Every training loader has a
    generator of its own (also where it only seeds workers), so none draws from torch's global one, which the
    checkpoint carries for the model (``benchmarks/callbacks.py``, ``RNGState``); the replay runs on a fork of it all
    the same. Built with the ``DataLoader`` signature only (Lightning may rebuild a loader from it); the datamodule
    sets ``progress``, a callable that returns Lightning's index of the epoch being trained and the batches whose
    training step finished in it (its ``processed`` counts, from which a restart goes on; the loader's own count runs
    ahead by the batches Lightning prefetches). A checkpoint saved as an epoch starts, before that epoch's iterator
    exists, replays it whole.
    """

    progress: Callable[[], tuple[int, int]] | None = None
    _epoch_start: torch.Tensor | None = None
    _epoch: int | None = None           # the epoch (Lightning's index) the current iterator serves
    _served = 0
    _resume: tuple[str, dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        self._epoch = self.progress()[0] if self.progress is not None else None
        if self._epoch is not None:     # also for the iterator Lightning makes before it sets the epoch (a resume)
            for name in ("sampler", "batch_sampler"):
                sampler = getattr(self, name, None)
                if callable(getattr(sampler, "set_epoch", None)):
                    sampler.set_epoch(self._epoch)
        if resume is not None and resume[0] == "next" and self.generator is not None and \
                resume[1].get("now") is not None:
            self.generator.set_state(resume[1]["now"])
        if resume is None or resume[0] == "next":
            self._epoch_start = self.generator.get_state() if self.generator is not None else None
            self._served = 0
            return self._count(super().__iter__())
        state = resume[1]
        with torch.random.fork_rng(devices=[]):          # draws the saving run made before its checkpoint
            if self.generator is not None and state.get("epoch_start") is not None:
                self.generator.set_state(state["epoch_start"])
            self._epoch_start = self.generator.get_state() if self.generator is not None else None
            it = super().__iter__()
            self._served = 0
            for _ in range(int(state.get("batches", 0))):
                try:
                    next(it)
                except StopIteration:
                    break
                self._served += 1
        return self._count(it)

    def _count(self, it: Iterator[Any]) -> Iterator[Any]:
        for batch in it:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        now = self.generator.get_state() if self.generator is not None else None
        epoch, done = self.progress() if self.progress is not None else (self._epoch, self._served)
        if epoch != self._epoch:        # saved as an epoch starts, before its iterator: that epoch from the start
            return {"epoch_start": now, "now": now, "batches": 0}
        return {"epoch_start": self._epoch_start, "now": now, "batches": int(done)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay the epoch the state was saved in (a restart inside an epoch)."""
        self._resume = ("replay", dict(state))

    def start_after(self, state: dict[str, Any]) -> None:
        """Start the next epoch where the epoch the state was saved in left the generator (a restart between epochs)."""
        self._resume = ("next", dict(state))


class Collate:
    """Pads histories to ``max_history`` on the left with PAD and applies an optional model hook."""

    def __init__(self, max_history: int, batch_hook: BatchHook | None = None) -> None:
        self.max_history = max_history
        self.batch_hook = batch_hook

    def __call__(self, samples: list[tuple]) -> dict[str, torch.Tensor]:
        hist = np.full((len(samples), self.max_history), PAD, dtype=np.int64)
        lens = np.zeros(len(samples), dtype=np.int64)
        packed = len(samples[0]) == 4 if samples else False
        targets = np.full((len(samples), self.max_history), PAD, dtype=np.int64) if packed else None
        for i, sample in enumerate(samples):
            h = sample[1]
            if len(h):
                hist[i, -len(h):] = h
                if targets is not None:
                    targets[i, -len(h):] = sample[3]
            lens[i] = len(h)
        batch = {
            "user": torch.tensor([s[0] for s in samples], dtype=torch.long),
            "history": torch.from_numpy(hist),
            "history_len": torch.from_numpy(lens),
            "target": torch.tensor([s[2] for s in samples], dtype=torch.long),
        }
        if targets is not None:
            batch["targets"] = torch.from_numpy(targets)
        return self.batch_hook(batch) if self.batch_hook is not None else batch


class SequenceDataModule(L.LightningDataModule):
    """Serves every model. ``dataset`` is a registered name (prepared and cached on rank 0) or a ProcessedDataset."""

    def __init__(self, dataset: str | ProcessedDataset, *, max_history: int = 20, batch_size: int = 256,
                 eval_batch_size: int = 512, num_workers: int = 0, seed: int = 0,
                 cache_dir: str | Path | None = None, data_dir: str | Path | None = None,
                 raw_dir: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 batch_hook: BatchHook | None = None, train_samples: str = "prefix",
                 group_by_length: bool = False, max_test_users: int | None = None,
                 max_val_users: int | None = None, download: bool | None = None,
                 device_batches: bool = False) -> None:
        super().__init__()
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        if train_samples not in ("prefix", "sequence"):
            raise ValueError(f"data.train_samples must be 'prefix' or 'sequence', got {train_samples!r}")
        self.train_samples = train_samples
        self.group_by_length = group_by_length
        if max_test_users is not None and int(max_test_users) < 1:
            raise ValueError(f"eval.max_test_users must be a positive number of users or null, got {max_test_users}")
        self.max_test_users = None if max_test_users is None else int(max_test_users)
        if max_val_users is not None and int(max_val_users) < 1:
            raise ValueError(f"eval.max_val_users must be a positive number of users or null, got {max_val_users}")
        self.max_val_users = None if max_val_users is None else int(max_val_users)
        #: None, or {"users", "of", "seed"} when the test (validation) split is a subset (set by setup)
        self.test_subset: dict[str, int] | None = None
        self.val_subset: dict[str, int] | None = None
        self.dataset_name = dataset if isinstance(dataset, str) else dataset.name
        self.data: ProcessedDataset | None = None if isinstance(dataset, str) else dataset
        self.max_history = max_history
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.cache_dir, self.data_dir, self.raw_dir = cache_dir, data_dir, raw_dir
        self.overrides = dict(overrides or {})
        self.download = download
        self.batch_hook = batch_hook
        if device_batches and batch_hook is not None:
            raise ValueError(DEVICE_BATCHES_WITH_HOOK)
        #: training batches gathered from the split's tensors on the device (device_batches.py)
        self.device_batches = bool(device_batches)
        self._train_tensors: dict[str, torch.Tensor] | None = None
        self.splits: dict[str, Dataset] = {}
        self._train_loader: ResumableLoader | None = None       # the last training loader (its state: checkpoints)
        self._train_state: dict[str, Any] | None = None         # a checkpoint's, for the next training loader

    # ---------------------------------------------------------------- Lightning hooks
    def _prepare(self) -> ProcessedDataset:
        from .prepare import prepare_dataset

        return prepare_dataset(self.dataset_name, cache_dir=self.cache_dir, data_dir=self.data_dir,
                               raw_dir=self.raw_dir, overrides=self.overrides, download=self.download)

    def prepare_data(self) -> None:
        """Read, preprocess and cache (rank 0 only; a cache hit is a no-op)."""
        if self.data is None:
            self._prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load the cache and build the split samples (every rank)."""
        if self.data is None:
            self.data = self._prepare()
        if not self.splits:
            self.data.validate()
            for name, (users, ends) in split_indices(self.data.sequences).items():
                self.splits[name] = PrefixSamples(self.data.sequences, users, ends, self.max_history)
            if self.train_samples == "sequence":
                self.splits["train"] = SequenceSamples(self.data.sequences, self.max_history)
            self._subset_test_users()
            self.val_subset = self._subset("val", self.max_val_users)

    def _subset(self, split: str, cap: int | None) -> dict[str, int] | None:
        """Keep a random subset of ``cap`` users of an evaluation split, drawn with a fixed seed (``SUBSET_SEED``, not
        the run's seed) so that every model and seed evaluated with the same cap sees the same users; the whole
        split stays in ``splits[split + "_all"]``. Returns ``{"users", "of", "seed"}``, or None for the whole split."""
        whole = self.splits.setdefault(f"{split}_all", self.splits[split])
        self.splits[split] = whole
        if cap is None or cap >= len(whole):
            return None
        keep = np.sort(np.random.default_rng(SUBSET_SEED).choice(len(whole), cap, replace=False))
        self.splits[split] = PrefixSamples(whole.sequences, whole.users[keep], whole.ends[keep], whole.max_history)
        return {"users": int(len(keep)), "of": int(len(whole)), "seed": SUBSET_SEED}

    def _subset_test_users(self) -> None:
        """``max_test_users``: test on a fixed-seed random subset of the test users (``_subset``)."""
        self.test_subset = self._subset("test", self.max_test_users)

    def limit_test_users(self, max_test_users: int | None) -> None:
        """Test on a fixed-seed subset of ``max_test_users`` users from now on (None: every test user again)."""
        if max_test_users is not None and int(max_test_users) < 1:
            raise ValueError(f"max_test_users must be a positive number of users or null, got {max_test_users}")
        self.max_test_users = None if max_test_users is None else int(max_test_users)
        if self.splits:
            self._subset_test_users()

    # ---------------------------------------------------------------- facts models need
    @property
    def num_items(self) -> int:
        assert self.data is not None, "call setup() first"
        return self.data.num_items

    def train_item_counts(self) -> np.ndarray:
        """How often each item is a training target or in a training history (the training part only)."""
        assert self.data is not None, "call setup() first"
        counts = np.zeros(self.data.num_items, dtype=np.int64)
        for s in self.data.sequences:
            np.add.at(counts, s[: max(len(s) - 2, 0)], 1)
        return counts

    # ---------------------------------------------------------------- loaders
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, split: str, sampler: Sampler[int] | None, batch_size: int, shuffle: bool = False,
                kind: type[DataLoader] = DataLoader) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return kind(self.splits[split], batch_size=batch_size, sampler=sampler,
                    shuffle=shuffle if sampler is None else False, drop_last=False,
                    num_workers=self.num_workers, generator=gen if shuffle else None,
                    collate_fn=Collate(self.max_history, self.batch_hook),
                    persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        rank, world = self._world()
        if self.device_batches:    # whole tensors on the module's device, one gather per batch (device_batches.py)
            if self.batch_hook is not None:
                raise ValueError(DEVICE_BATCHES_WITH_HOOK)
            if self._train_tensors is None:
                self._train_tensors = materialise(self.splits["train"], Collate(self.max_history))
            trainer = getattr(self, "trainer", None)
            return self._resumable(DeviceBatches(
                self._train_tensors, self.batch_size, seed=self.seed, rank=rank, world_size=world,
                device=(lambda: trainer.strategy.root_device) if trainer is not None else "cpu",
                group_by_length=self.group_by_length, lengths=np.minimum(self.splits["train"].ends, self.max_history)))
        if self.group_by_length:   # batches of similar history length (samplers.py); seeded, new grouping per epoch
            train = self.splits["train"]
            lengths = np.minimum(train.ends, self.max_history)      # both sample kinds: history = seq[..end]
            batches = LengthGroupedBatchSampler(lengths, self.batch_size, seed=self.seed, rank=rank, world_size=world)
            return self._resumable(ResumableLoader(train, batch_sampler=batches, num_workers=self.num_workers,
                                                   collate_fn=Collate(self.max_history, self.batch_hook),
                                                   generator=torch.Generator().manual_seed(self.seed),
                                                   persistent_workers=self.num_workers > 0))
        sampler = (DistributedSampler(self.splits["train"], num_replicas=world, rank=rank, shuffle=True,
                                      seed=self.seed) if world > 1 else None)
        return self._resumable(self._loader("train", sampler, self.batch_size, shuffle=True, kind=ResumableLoader))

    def _resumable(self, loader: Any) -> Any:
        """Give a training loader Lightning's progress (the epoch, the batches done in it), and start a
        ``ResumableLoader`` where a checkpoint left the order (``load_state_dict``)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            loader.progress = lambda: (trainer.fit_loop.epoch_progress.current.processed,
                                       trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if isinstance(loader, ResumableLoader):
            if self._train_state is not None:
                loader.start_after(self._train_state)
                self._train_state = None
            self._train_loader = loader
        return loader

    # ---------------------------------------------------------------- checkpoints (Lightning calls these)
    def state_dict(self) -> dict[str, Any]:
        """The training order's state (``ResumableLoader``): a resumed run goes on with the uninterrupted run's."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_state = state_dict.get("train_loader")

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = self._world()
        return self._loader(split, EvalShardSampler(len(self.splits[split]), rank, world), self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
