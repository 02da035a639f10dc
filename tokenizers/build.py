"""One entry point from a model's ``tokenizer`` config to the SID table it decodes into.

``kind`` selects the source of the semantic IDs:

- ``rq_vae`` / ``rq_kmeans`` / ``opq`` / ``pq``: item text -> embeddings (``text_encoder``, cached) -> a fitted item
  tokenizer (``item_tokenizer.fit_sid_table``, cached) -> collision rule -> one-to-one table;
- ``published``: a given LC-Rec ``X.index.json`` (``index_file``, default: the dataset's own index file), so that
  models can be compared on a fixed tokenization;
- ``random``: uniformly random distinct code tuples, the "random ID" ablation of TIGER (Rajput et al. 2023, §4.3).

``embeddings: <file.npy>`` (learned kinds) fits the tokenizer on given item embeddings ``[num_items, d]`` instead of
the text encoder's, e.g. SIGMA's grounded ones (its result names the file), so that another model (SIGMA's GR(SID)
baseline: LC-Rec) decodes into the same SIDs; the file's hash keys the table cache.

``collision: keep`` leaves shared SIDs as they are: for models that score items rather than decode SIDs into
them (RPG's long unordered IDs), two items with one SID are simply tied. Returns the table and a report (codebook
usage, per-level perplexity, collision rate) for the result record.

A learned table is also cached whole (``<cache_dir>/sid_tables/<dataset>-<key>.npz``: the final codes, codebook sizes
and report), keyed by the dataset's content hash, the tokenizer config (kind, params, collision rule, encoder
settings) and the seed. A hit needs neither the text encoder, nor the embeddings, nor faiss: the offline GPU bundle
(``benchmarks/gpu/bundle.py``) ships these files so that a node without them runs the paper-track models.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from grbench.tokenizers.sid_table import SIDTable

LEARNED = ("rq_vae", "rq_kmeans", "opq", "pq")
TABLE_CACHE_VERSION = 1    # bump when a tokenizer's defaults or a collision rule change what a config produces
log = logging.getLogger(__name__)


def table_cache_path(dataset: Any, cfg: dict[str, Any], cache_dir: Path | None, seed: int) -> Path | None:
    """Where the whole learned SID table of ``dataset`` under ``cfg`` and ``seed`` is cached (None without a cache
    dir, or for a dataset with no content hash to key it by)."""
    from grbench.tokenizers.text_encoder import CACHE_VERSION as ENCODER_CACHE_VERSION

    content = (getattr(dataset, "manifest", None) or {}).get("content_hash")
    if not content or not cache_dir:
        return None
    meta = {"version": TABLE_CACHE_VERSION, "encoder_cache_version": ENCODER_CACHE_VERSION, "content_hash": content,
            "kind": str(cfg.get("kind", "rq_vae")), "params": dict(cfg.get("params") or {}),
            "collision": str(cfg.get("collision", "extra_level")), "encoder": dict(cfg.get("encoder") or {}),
            "seed": int(seed)}
    if cfg.get("embeddings"):
        meta["embeddings"] = _file_sha256(Path(str(cfg["embeddings"])).expanduser())
    key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(getattr(dataset, "name", "dataset"))) or "dataset"
    return Path(cache_dir) / "sid_tables" / f"{slug}-{key}.npz"


def _file_sha256(path: Path) -> str:
    from grbench.datamodules.dataset import sha256_file

    if not path.is_file():
        raise FileNotFoundError(f"tokenizer.embeddings: {path} does not exist")
    return sha256_file(path)


def load_embeddings_file(path: str | Path, num_items: int) -> np.ndarray:
    """``tokenizer.embeddings``: a ``.npy`` array ``[num_items, d]`` of finite floats (no pickles)."""
    path = Path(path).expanduser()
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"tokenizer.embeddings: {path} is not a readable .npy array ({e})") from e
    if arr.ndim != 2 or len(arr) != num_items or not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
        raise ValueError(f"tokenizer.embeddings: {path} holds {arr.dtype} {arr.shape}; expected finite floats "
                         f"[{num_items}, d], one row per item")
    return arr.astype(np.float32)


def load_cached_table(path: Path, num_items: int) -> tuple[SIDTable, dict] | None:
    """The cached table and report, or None (with a warning) when the file is damaged or does not fit."""
    try:
        with np.load(path, allow_pickle=False) as z:
            codes, sizes, report = z["codes"], tuple(int(s) for s in z["sizes"]), json.loads(str(z["report"]))
        table = SIDTable(codes.astype(np.int64), sizes)
        if table.num_items != num_items:
            raise ValueError(f"{table.num_items} items, the dataset has {num_items}")
    except (OSError, ValueError, KeyError) as e:
        log.warning("SID table cache %s is unusable (%s); building the table again", path, e)
        return None
    return table, {**report, "table_cached": True}


def save_cached_table(path: Path, table: SIDTable, report: dict) -> None:
    """Write a table and its report to the SID-table cache (``.npz``, atomic; ``load_cached_table`` reads it)."""
    from grbench.datamodules.atomic import atomic_file
    from grbench.datamodules.paths import cache_write

    with cache_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            np.savez(f, codes=table.codes, sizes=np.asarray(table.codebook_sizes, dtype=np.int64),
                     report=np.asarray(json.dumps(report, sort_keys=True, default=str)))


def random_table(num_items: int, levels: int, codebook_size: int, seed: int) -> SIDTable:
    """Distinct uniformly random code tuples (needs ``codebook_size ** levels >= num_items``)."""
    space = codebook_size ** levels
    if space < num_items:
        raise ValueError(f"tokenizer: {levels} levels of {codebook_size} codes give {space} SIDs for {num_items} items")
    rng = np.random.default_rng(seed)
    if space <= 10 ** 8:
        flat = rng.choice(space, size=num_items, replace=False)
        codes = np.stack([(flat // codebook_size ** (levels - 1 - lvl)) % codebook_size for lvl in range(levels)], 1)
    else:  # e.g. RPG's 32 digits of 256 codes (256 ** 32 overflows int64): draw digit by digit, redraw duplicates
        codes = rng.integers(0, codebook_size, size=(num_items, levels))
        while True:
            _, first = np.unique(codes, axis=0, return_index=True)
            dup = np.setdiff1d(np.arange(num_items), first)
            if not len(dup):
                break
            codes[dup] = rng.integers(0, codebook_size, size=(len(dup), levels))
    return SIDTable(codes.astype(np.int64), (codebook_size,) * levels)


def fit_table(embeddings: np.ndarray, kind: str, params: dict[str, Any], collision: str, seed: int,
              tokenizer_cache: Path | None) -> tuple[SIDTable, dict]:
    """A learned tokenizer's table of ``embeddings``: ``collision: keep`` leaves shared SIDs (fitted here), any other
    rule goes through ``fit_sid_table`` (its tokenizer cached under ``tokenizer_cache``)."""
    from grbench.tokenizers.item_tokenizer import build_tokenizer, fit_sid_table, tokenization_report

    if collision != "keep":
        table, report = fit_sid_table(embeddings, kind, params, collision, seed, tokenizer_cache)
    else:
        tokenizer = build_tokenizer(kind, **params).fit(embeddings, seed=seed)
        codes = tokenizer.encode(embeddings)
        table = SIDTable(codes, tokenizer.codebook_sizes)
        report = tokenization_report(codes, table)
    check_not_collapsed(report, kind, params)
    return table, report


def check_not_collapsed(report: dict[str, Any], kind: str, params: dict[str, Any]) -> None:
    """A fitted tokenizer whose first level gives (nearly) every item the same code is a collapse, not a table: an
    error, never a silent run on it. Measured 2026-12-01: RQ-VAE 4 x 256 over SIGMA's grounded Beauty embeddings
    without ``reinit_dead_codes`` gave all 12,101 items the SID prefix (68, 72, 68)."""
    ppl, sizes = report.get("perplexity") or [], report.get("codebook_sizes") or []
    if report.get("num_items", 0) > 1 and ppl and sizes and sizes[0] > 1 and float(ppl[0]) < 2.0:
        hint = "set params.reinit_dead_codes: true (TIGER's recipe does)" if kind == "rq_vae" and \
            not params.get("reinit_dead_codes") else "check the embeddings and the tokenizer params"
        raise ValueError(f"tokenizer {kind} collapsed: its first level has perplexity {float(ppl[0]):.2f} over "
                         f"{report['num_items']:,} items ({sizes[0]} codes): nearly every item gets the same first "
                         f"code; {hint}")


def tokenizer_seed(cfg: dict[str, Any], seed: int) -> int:
    """The seed an item tokenizer is fitted with: the tokenizer config's ``seed`` when set, else the run's."""
    own = cfg.get("seed")
    return int(seed) if own is None else int(own)


def build_sid_table(dataset: Any, cfg: dict[str, Any], cache_dir: Path | None, seed: int) -> tuple[SIDTable, dict]:
    """The one-to-one SID table of ``dataset``'s items under the tokenizer config ``cfg`` (see module docstring).
    ``seed`` is the run's; ``cfg["seed"]``, when set, takes its place (``seeds=N`` holds each model's item index at
    the first seed's: ``benchmarks/config.py``, ``seed_runs``)."""
    from grbench.tokenizers.item_tokenizer import tokenization_report

    seed = tokenizer_seed(cfg, seed)

    kind = str(cfg.get("kind", "rq_vae"))
    params = dict(cfg.get("params") or {})
    collision = str(cfg.get("collision", "extra_level"))
    if kind == "published":
        from grbench.tokenizers.published import load_published_index

        path = cfg.get("index_file")
        if not path:   # the dataset's own index: a file name relative to its folder (the cache folder holds a copy)
            name = (dataset.manifest.get("lcrec") or {}).get("index")
            if not name:
                raise ValueError(f"tokenizer.kind=published: dataset {dataset.name!r} has no X.index.json; "
                                 "set tokenizer.index_file")
            path = dataset.resolve(name) if hasattr(dataset, "resolve") else Path(name)
        table = load_published_index(path, dataset.num_items)
        raw = table.codes
        if not table.is_one_to_one() and collision != "keep":   # keep: items that share a SID stay tied (RPG)
            from grbench.tokenizers.item_tokenizer import resolve_collisions

            codes, sizes = resolve_collisions(table.codes, table.codebook_sizes, collision)
            table = SIDTable(codes, sizes)
        report = tokenization_report(raw, table)
        report["source"] = str(path)
    elif kind == "random":
        table = random_table(dataset.num_items, int(params.get("levels", 3)), int(params.get("codebook_size", 256)),
                             seed)
        report = tokenization_report(table.codes, table)
    elif kind in LEARNED:
        from grbench.tokenizers.text_encoder import embed_items

        cached_path = table_cache_path(dataset, cfg, cache_dir, seed)
        hit = load_cached_table(cached_path, dataset.num_items) if cached_path is not None and cached_path.is_file() else None
        if hit is not None:
            return hit
        embeddings = (load_embeddings_file(cfg["embeddings"], dataset.num_items) if cfg.get("embeddings")
                      else embed_items(dataset, dict(cfg.get("encoder") or {}), Path(cache_dir or ".cache")))
        table, report = fit_table(embeddings, kind, params, collision, seed,
                                  Path(cache_dir) / "tokenizers" if cache_dir else None)
    else:
        raise ValueError(f"tokenizer.kind: unknown {kind!r} (known: {', '.join(LEARNED + ('published', 'random'))})")
    report = {"kind": kind, "collision_rule": collision, **report}
    if kind in LEARNED and cfg.get("embeddings"):
        report["embeddings_file"] = str(cfg["embeddings"])
    target = table_cache_path(dataset, cfg, cache_dir, seed) if kind in LEARNED else None
    if target is not None:
        save_cached_table(target, table, report)
    return table, report
