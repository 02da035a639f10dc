"""SIGMA's pretrained item embeddings (Yu et al., SIGIR 2026, §2.1-2.2), built before training and cached.

- ``id_embeddings``: the frozen item-ID view, the item table of a SASRec of this suite. Either a given checkpoint
  (``checkpoint``: a SASRec ``.ckpt`` of a run folder, as named by its result's ``best_val.checkpoint``), or a
  SASRec trained here through the suite's own runner (``run_benchmark`` on ``configs/models/sasrec.yaml`` plus
  ``sasrec_overrides``), whose run folder and figures the SIGMA result names. Training data only: SASRec trains on
  ``seq[:-2]`` and selects its checkpoint on the validation targets, as every model of the suite.
- ``grounded_embeddings``: the text view after multi-view semantic grounding (§2.1, Eq. 1-3): the item text encoder
  (all-MiniLM-L6-v2 by default) fine-tuned on collaborative and semantic relevance pairs (``grounding.py``) with the
  distillation from the ID view, then every item embedded. ``grounding.enabled: false`` is the paper's "no semantic
  grounding" ablation: the encoder's embeddings as they are.
- ``item_table``: the SIDs, an RQ tokenizer fitted on the grounded embeddings. Items may share a full SID (the ID
  slot tells them apart, as in the paper); the table is cached whole.

Cache files live in ``<cache_dir>/sigma/``, keyed by the dataset's content hash, the settings and the seed, each with
a JSON sidecar of what made it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:20]


def _cached(path: Path, rows: int) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The array and its sidecar, or None (with a warning when a file is there but unusable)."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if arr.ndim != 2 or len(arr) != rows or not np.isfinite(arr).all():
            raise ValueError(f"shape {arr.shape}, expected {rows} finite rows")
    except (OSError, ValueError) as e:
        log.warning("SIGMA cache %s is unusable (%s); building it again", path, e)
        return None
    return arr, {**info, "cached": True}


def _save(path: Path, arr: np.ndarray, info: dict[str, Any]) -> None:
    from grbench.datamodules.atomic import atomic_file
    from grbench.datamodules.paths import cache_write

    with cache_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as f:
            np.save(f, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
        with atomic_file(path.with_suffix(".json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")


def id_embeddings(dataset: str, data: Any, cfg: dict[str, Any], cache_dir: Path, seed: int,
                  paths: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``([N, d] item-ID embeddings, provenance)``: from ``cfg["checkpoint"]`` or a SASRec trained here."""
    from grbench.tokenizers.grounding import sasrec_item_table

    if cfg.get("checkpoint"):
        ckpt = Path(str(cfg["checkpoint"])).expanduser()
        if not ckpt.is_file():
            raise FileNotFoundError(f"SIGMA item_embeddings.id.checkpoint: {ckpt} does not exist")
        table = sasrec_item_table(ckpt)
        if len(table) != data.num_items:
            raise ValueError(f"SIGMA item_embeddings.id.checkpoint: {ckpt} has {len(table)} items, the dataset "
                             f"{data.num_items}")
        return table, {"source": "checkpoint", "checkpoint": str(ckpt)}
    overrides = [str(o) for o in cfg.get("sasrec_overrides") or []]
    content = (data.manifest or {}).get("content_hash")
    path = cache_dir / "sigma" / f"{data.name}-sasrec-{_key(content, overrides, seed)}.npy"
    hit = _cached(path, data.num_items) if content else None
    if hit is not None:
        return hit
    from grbench.benchmarks.config import load_config
    from grbench.benchmarks.run import run_benchmark

    extra = [f"paths.{k}={v}" for k, v in (paths or {}).items() if v is not None and k in ("cache_dir", "data_dir")]
    log.info("SIGMA: training the SASRec whose item table is the ID view (%s)", overrides or "its recipe")
    rec = run_benchmark(load_config(dataset, "sasrec", [f"seed={seed}", "trainer.progress=false", *extra, *overrides]),
                        write=False)
    run_dir = Path(rec["_run_path"]).parent
    table = sasrec_item_table(run_dir / "checkpoints" / str(rec["best_val"]["checkpoint"]))
    info = {"source": "sasrec trained for SIGMA", "run": str(run_dir / "result.json"), "overrides": overrides,
            "epochs": rec["epochs_trained"], "best_val": rec["best_val"],
            "test_ndcg@10": rec["metrics"].get("ndcg@10"), "test_hr@10": rec["metrics"].get("hr@10")}
    if content:
        _save(path, table, info)
    return table, {**info, "cached": False}


def grounded_embeddings(data: Any, cfg: dict[str, Any], encoder_cfg: dict[str, Any], ids: np.ndarray | None,
                        cache_dir: Path, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``([N, d] text embeddings, report)`` after grounding (``cfg``: ``enabled``, ``steps``, ``batch_size``, ``lr``,
    ``tau``, ``kd_weight``, ``max_pairs_per_item``, ``semantic``: whether semantic pairs join the collaborative
    ones); ``ids`` is the distillation teacher (None: no L_KD)."""
    from grbench.tokenizers.text_encoder import DEFAULT_FIELDS, TextEncoder, embed_items, item_texts

    enc = dict(encoder_cfg or {})
    if not cfg.get("enabled", True):
        return embed_items(data, enc, cache_dir), {"grounding": False}
    from grbench.tokenizers.grounding import collaborative_pairs, ground_encoder, semantic_pairs

    texts = item_texts(data, tuple(enc.get("fields", DEFAULT_FIELDS)))
    cap = int(cfg.get("max_pairs_per_item", 20))
    collab = collaborative_pairs(data.sequences, max_per_item=cap)
    parts, views = [collab], {"collaborative": int(len(collab))}
    if cfg.get("semantic", True):
        sem, view = semantic_pairs(data.items, data.num_items, max_per_item=cap)
        parts.append(sem)
        views[f"semantic ({view})"] = int(len(sem))
    pairs = np.unique(np.concatenate(parts), axis=0)
    settings = {k: cfg.get(k) for k in ("steps", "batch_size", "lr", "tau", "kd_weight")}
    content = (data.manifest or {}).get("content_hash")
    id_hash = hashlib.sha256(np.ascontiguousarray(ids, dtype=np.float32).tobytes()).hexdigest()[:16] \
        if ids is not None else None
    path = cache_dir / "sigma" / f"{data.name}-grounded-{_key(content, settings, enc, id_hash, cap, views, seed)}.npy"
    hit = _cached(path, data.num_items) if content else None
    if hit is not None:
        return hit
    kwargs = {k: enc[k] for k in ("name_or_path", "batch_size", "max_length", "device", "pooling", "normalize")
              if k in enc}
    encoder = TextEncoder(**kwargs)
    kw = {k: v for k, v in settings.items() if v is not None}
    history = ground_encoder(encoder, texts, pairs, ids if kw.get("kd_weight", 1.0) else None, seed=seed,
                             progress=bool(enc.get("progress", True)), **{**kw, "tau_id": kw.get("tau", 0.05)})
    emb = encoder.encode(texts, progress=bool(enc.get("progress", True)))
    first, last = history[: max(1, len(history) // 10)], history[-max(1, len(history) // 10):]
    info = {"grounding": True, "pairs": views, "distinct_pairs": int(len(pairs)), "steps": len(history),
            "settings": settings, "encoder": encoder.name_or_path,
            "loss_first": float(np.mean([h["loss"] for h in first])),
            "loss_last": float(np.mean([h["loss"] for h in last])),
            "kd_last": float(np.mean([h["kd"] for h in last]))}
    if content:
        info["file"] = str(path)     # tokenizer.embeddings=<file>: another model's SIDs from these (GR(SID))
        _save(path, emb, info)
    return emb, {**info, "cached": False}


def item_table(data: Any, embeddings: np.ndarray, cfg: dict[str, Any], cache_dir: Path, seed: int) -> tuple[Any, dict]:
    """The SID table of the grounded ``embeddings`` under the ``tokenizer`` config (``kind``, ``params``); shared
    full SIDs are kept (``collision: keep``; ``reassign_last`` also works)."""
    from grbench.tokenizers.build import fit_table, load_cached_table, save_cached_table, tokenizer_seed

    seed = tokenizer_seed(cfg, seed)
    kind, params = str(cfg.get("kind", "rq_kmeans")), dict(cfg.get("params") or {})
    collision = str(cfg.get("collision", "keep"))
    emb_hash = hashlib.sha256(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes()).hexdigest()[:20]
    path = cache_dir / "sigma" / f"{data.name}-sids-{_key(emb_hash, kind, params, collision, seed)}.npz"
    if path.is_file():
        hit = load_cached_table(path, data.num_items)
        if hit is not None:
            return hit
    table, report = fit_table(embeddings, kind, params, collision, seed, cache_dir / "tokenizers")
    report = {"kind": kind, "collision_rule": collision, "embeddings": "grounded", **report}
    save_cached_table(path, table, report)
    return table, report
