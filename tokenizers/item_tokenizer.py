"""Item tokenizers behind one interface: embeddings -> semantic-ID codes -> a one-to-one SID table.

``ItemTokenizer`` is what every tokenizer implements (``rq_kmeans``: TS-Rec / MiniOneRec's residual k-means;
``rq_vae``: TIGER, Rajput et al. 2023 §3.1, and LC-Rec; ``pq`` / ``opq``: RPG's unordered digits, Hou et al.
KDD 2025). A fitted tokenizer saves to a folder (``tokenizer.json`` + one ``.npy`` per array, each with its
sha256) atomically, and loads back with the checksums verified.

Raw codes can collide (two items, one code tuple); ``resolve_collisions`` makes a table one-to-one:

- ``extra_level`` (TIGER §3.1): append a level numbering the items of each shared tuple 0, 1, 2, ... in item id
  order; its codebook size is the largest group.
- ``reassign_last`` (LC-Rec / TS-Rec style): keep the levels; in each group of items sharing a tuple the first
  item keeps it and the others move to the nearest unused last-level code under the same prefix (by the
  tokenizer's ``last_level_distances`` when it has them, else the smallest unused code).
- ``none``: keep the codes; collisions are an error.

``fit_sid_table`` runs the whole step (fit or load from a cache, encode, resolve, report). A cached tokenizer that
fails its checks (checksums, manifest, shapes) is fitted again and replaced, with a logged warning naming it; a
cache folder that is a file, not writable or full is one ``CacheError`` line naming it, raised before the fit.
"""
from __future__ import annotations

import abc
import hashlib
import importlib
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from grbench.datamodules.atomic import atomic_dir
from grbench.datamodules.paths import cache_write, ensure_cache_dir
from grbench.tokenizers.sid_table import SIDTable

log = logging.getLogger(__name__)

MANIFEST = "tokenizer.json"
FORMAT_VERSION = 1
# kind -> "module:Class", imported on demand (rq_vae pulls in torch and Lightning; the others need only faiss).
KINDS: dict[str, str] = {
    "rq_kmeans": "grbench.tokenizers.rq_kmeans:RQKMeans",
    "rq_vae": "grbench.tokenizers.rq_vae:RQVAE",
    "pq": "grbench.tokenizers.pq:PQ",
    "opq": "grbench.tokenizers.pq:OPQ",
}
COLLISION_RULES = ("extra_level", "reassign_last", "none")


def check_embeddings(embeddings: np.ndarray, dim: int | None = None) -> np.ndarray:
    """``embeddings`` as a C-contiguous float32 [N, D] array (N >= 1, finite, D == ``dim`` when given)."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [num_items, dim] array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"embeddings have dim {x.shape[1]}, the tokenizer was fitted on dim {dim}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def sq_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [N, K] between rows of ``x`` [N, d] and ``centroids`` [K, d]."""
    d = (x * x).sum(1, keepdims=True) - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)
    return np.maximum(d, 0.0)


class ItemTokenizer(abc.ABC):
    """Maps item embeddings [N, D] to codes [N, L]; ``codebook_sizes[l]`` codes at level ``l``."""

    kind: ClassVar[str]

    @property
    @abc.abstractmethod
    def codebook_sizes(self) -> tuple[int, ...]: ...

    @property
    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-serialisable): ``type(self)(**params)`` rebuilds an unfitted copy."""

    @abc.abstractmethod
    def fit(self, embeddings: np.ndarray, seed: int = 0) -> "ItemTokenizer":
        """Learn the codebooks from ``embeddings`` [N, D] float32; the same data and seed give the same codes."""

    @abc.abstractmethod
    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw codes [N, L] int64 (before collision handling) of ``embeddings`` [N, D]."""

    @abc.abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as named arrays (what ``save`` writes)."""

    @abc.abstractmethod
    def set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the fitted state from ``arrays()``'s output."""

    def last_level_distances(self, embeddings: np.ndarray) -> np.ndarray | None:
        """Distances [N, K_last] from each item's last-level residual to that level's centroids, or None when
        the tokenizer has no such notion (``reassign_last`` then picks the smallest unused code)."""
        return None

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write the fitted tokenizer to ``directory`` atomically: a temporary folder beside it is filled and
        renamed into place, so a failed save leaves nothing behind and never replaces an existing good copy."""
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            entries = {}
            for name, array in self.arrays().items():
                array = np.ascontiguousarray(array)
                file = f"{name}.npy"
                np.save(tmp / file, array, allow_pickle=False)
                entries[name] = {"file": file, "shape": list(array.shape), "dtype": str(array.dtype),
                                 "sha256": _sha256(tmp / file)}
            manifest = {"format_version": FORMAT_VERSION, "kind": self.kind, "params": self.params,
                        "codebook_sizes": list(self.codebook_sizes), "arrays": entries}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ItemTokenizer":
        """Load a tokenizer written by ``save``; every array file's sha256 is checked against the manifest."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise ValueError(f"{path}: tokenizer manifest not found")
        try:
            manifest = json.loads(path.read_text())
            kind, params, entries = manifest["kind"], manifest["params"], manifest["arrays"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid tokenizer manifest ({type(e).__name__}: {e})") from e
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}")
        if kind not in KINDS:
            raise ValueError(f"{path}: unknown tokenizer kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
        try:
            tokenizer = build_tokenizer(kind, **params)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad params for {kind!r}: {e}") from e
        if cls is not ItemTokenizer and not isinstance(tokenizer, cls):
            raise ValueError(f"{path}: holds a {kind!r} tokenizer, not a {cls.__name__}")
        arrays = {}
        for name, entry in entries.items():
            file = directory / entry["file"]
            if not file.is_file():
                raise ValueError(f"{file}: array file listed in {MANIFEST} is missing")
            if _sha256(file) != entry["sha256"]:
                raise ValueError(f"{file}: sha256 checksum mismatch (file changed or corrupt)")
            arrays[name] = np.load(file, allow_pickle=False)
            if list(arrays[name].shape) != entry["shape"]:
                raise ValueError(f"{file}: shape {arrays[name].shape} differs from {MANIFEST}'s {entry['shape']}")
        tokenizer.set_arrays(arrays)
        return tokenizer


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()



def build_tokenizer(kind: str, **params: Any) -> ItemTokenizer:
    """An unfitted tokenizer of ``kind`` (one of ``KINDS``) built with ``params``."""
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)(**params)


# ---------------------------------------------------------------------------------------------- collisions
def _groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each item: the id of its full-tuple group and its rank within it (0 for the first, by item id)."""
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return group, rank


def resolve_collisions(codes: np.ndarray, codebook_sizes: tuple[int, ...], rule: str,
                       last_level_distances: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """Make ``codes`` [N, L] one-to-one by ``rule`` (see the module docstring); returns the codes and sizes.

    ``last_level_distances`` [N, K_last] (optional) ranks the free last-level codes for ``reassign_last``.
    """
    codes = np.asarray(codes, dtype=np.int64)
    sizes = tuple(int(s) for s in codebook_sizes)
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"codes of shape {codes.shape} do not match {len(sizes)} codebook sizes")
    if rule not in COLLISION_RULES:
        raise ValueError(f"unknown collision rule {rule!r}; known rules: {', '.join(COLLISION_RULES)}")
    if len(codes) == 0:
        return (np.zeros((0, len(sizes) + 1), np.int64), sizes + (1,)) if rule == "extra_level" else (codes, sizes)
    group, rank = _groups(codes)
    if rule == "none":
        if rank.max() > 0:
            raise ValueError(f"collision rule 'none': {int((rank > 0).sum())} of {len(codes)} items share their "
                             "code tuple with an earlier item; use 'extra_level' or 'reassign_last'")
        return codes, sizes
    if rule == "extra_level":
        return np.concatenate([codes, rank[:, None]], axis=1), sizes + (int(rank.max()) + 1,)
    return _reassign_last(codes, sizes, rank, last_level_distances)


def _reassign_last(codes: np.ndarray, sizes: tuple[int, ...], rank: np.ndarray,
                   distances: np.ndarray | None) -> tuple[np.ndarray, tuple[int, ...]]:
    k = sizes[-1]
    if distances is not None and distances.shape != (len(codes), k):
        raise ValueError(f"last_level_distances has shape {distances.shape}, expected {(len(codes), k)}")
    _, prefix, prefix_counts = np.unique(codes[:, :-1], axis=0, return_inverse=True, return_counts=True)
    prefix = prefix.reshape(-1)
    if prefix_counts.max() > k:
        worst = codes[np.flatnonzero(prefix == prefix_counts.argmax())[0], :-1].tolist()
        raise ValueError(f"collision rule 'reassign_last': {int(prefix_counts.max())} items share the prefix "
                         f"{worst} but the last level has only {k} codes; use collision rule 'extra_level'")
    out = codes.copy()
    used: dict[int, set[int]] = {}
    for i in np.flatnonzero(rank == 0):
        used.setdefault(int(prefix[i]), set()).add(int(codes[i, -1]))
    for i in np.flatnonzero(rank > 0):  # item id order
        taken = used.setdefault(int(prefix[i]), set())
        free = np.array([c for c in range(k) if c not in taken])
        new = int(free[np.argmin(distances[i, free])] if distances is not None else free[0])
        out[i, -1] = new
        taken.add(new)
    return out, sizes


# ---------------------------------------------------------------------------------------------- report + fit
def tokenization_report(raw_codes: np.ndarray, table: SIDTable) -> dict[str, Any]:
    """Quality figures of a tokenization: usage and perplexity per level of the final ``table``, and the
    collisions of the ``raw_codes`` before resolution (rate = items sharing a tuple with an earlier item / N)."""
    raw = np.asarray(raw_codes)
    _, counts = np.unique(raw, axis=0, return_counts=True)
    return {
        "num_items": table.num_items,
        "levels": table.levels,
        "codebook_sizes": list(table.codebook_sizes),
        "codebook_usage": table.codebook_usage(),
        "perplexity": table.perplexity(),
        "collision_rate": float((len(raw) - len(counts)) / len(raw)),
        "max_group_size": int(counts.max()),
        "one_to_one": table.is_one_to_one(),
    }


def cache_key(embeddings: np.ndarray, kind: str, params: dict[str, Any], seed: int) -> str:
    """``<kind>-<hash>``: the hash covers the embedding bytes, shape and dtype, the kind, params and seed."""
    x = np.ascontiguousarray(embeddings)
    h = hashlib.sha256()
    h.update(x.tobytes())
    h.update(json.dumps({"shape": list(x.shape), "dtype": str(x.dtype), "kind": kind, "params": params,
                         "seed": seed}, sort_keys=True).encode())
    return f"{kind}-{h.hexdigest()[:20]}"


def fit_sid_table(embeddings: np.ndarray, kind: str, params: dict[str, Any] | None = None,
                  collision_rule: str = "extra_level", seed: int = 0,
                  cache_dir: str | Path | None = None) -> tuple[SIDTable, dict[str, Any]]:
    """Fit a ``kind`` tokenizer (or load it from ``cache_dir/<cache_key>``), encode ``embeddings``, resolve
    collisions by ``collision_rule``; returns the SID table and ``tokenization_report`` (plus the run's
    kind, params, rule, seed and whether the tokenizer came from the cache). A cached copy that fails its
    checks is fitted again and replaced, with a warning naming it; an unusable ``cache_dir`` raises CacheError."""
    x = check_embeddings(embeddings)
    if collision_rule not in COLLISION_RULES:
        raise ValueError(f"unknown collision rule {collision_rule!r}; known rules: {', '.join(COLLISION_RULES)}")
    tokenizer = build_tokenizer(kind, **(params or {}))
    params = tokenizer.params  # with the defaults filled in: {} and the explicit defaults share a cache entry
    target = ensure_cache_dir(cache_dir) / cache_key(x, kind, params, seed) if cache_dir is not None else None
    cached = False
    if target is not None and target.exists():
        try:
            tokenizer, cached = ItemTokenizer.load(target), True
        except (ValueError, OSError, KeyError, TypeError) as e:  # a damaged cache is fitted again, never trusted
            log.warning("tokenizer cache %s is corrupt (%s); fitting it again", target, e)
            tokenizer = build_tokenizer(kind, **params)
    if not cached:
        tokenizer.fit(x, seed=seed)
        if target is not None:
            with cache_write(target):
                tokenizer.save(target)
    raw = tokenizer.encode(x)
    distances = tokenizer.last_level_distances(x) if collision_rule == "reassign_last" else None
    codes, sizes = resolve_collisions(raw, tokenizer.codebook_sizes, collision_rule, distances)
    table = SIDTable(codes, sizes)
    report = tokenization_report(raw, table)
    report.update(kind=kind, params=params, collision_rule=collision_rule, seed=seed, cached=cached)
    return table, report
