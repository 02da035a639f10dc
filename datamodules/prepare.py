"""``prepare_dataset(name)``: read → preprocess → check → cache, once; later calls load the cache.

The cache lives at ``<cache_dir>/datasets/<name>-<key>``, where ``key`` is a short hash of everything the
processed data depends on: the recipe (with overrides; ``max_history`` excluded, the split applies it), the
sha256 of every input file (an LC-Rec ``X.index.json`` too: the published tokenizer reads it, so it is copied
into the cache folder and named there by a relative file name), the source kind and the format/prepare
versions. The manifest names inputs relative to where they were found (``beauty/Beauty.inter.json`` under the
data dir, a dump's file name) together with their sha256, never by absolute path. A changed input or recipe
therefore gets a new folder, and an unchanged one is loaded without reading the inputs again (their sha256
is memoised by path, size and mtime in ``<cache_dir>/sha256-memo.json``). Saving is atomic
(``ProcessedDataset.save``): a failed run leaves any existing cache untouched and no temporary folder.

Source resolution for a name: ``overrides["source"]`` when given; else the local LC-Rec files under the data
dir when the spec has a folder there (a catalogue-only folder, without ``.inter.json``, is an error that says
how to build sequences from the dump instead); else the spec's Amazon dump, taken from ``raw_dir`` when given,
otherwise from ``<cache_dir>/raw/<kind>/``, downloaded there only when asked for (``download=True``, or
``GRBENCH_DOWNLOAD=1``). A data dir that does not exist is an error naming it (a mistyped ``GRBENCH_DATA_DIR``
must not turn into a multi-GB download), unless the dump source was asked for (``raw_dir`` or ``source``).
A cache folder that is a file, not writable or full is one ``CacheError`` line naming it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import statistics
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .amazon import find_dump_file, meta_filename, read_meta, read_reviews, review_filename
from .dataset import FORMAT_VERSION, MANIFEST, ProcessedDataset, sha256_file
from .download import dump_urls, fetch
from .errors import DataError
from .lcrec import lcrec_paths, read_lcrec
from .paths import cache_write, check_data_dir, default_cache_dir, default_data_dir, ensure_cache_dir
from .preprocess import preprocess
from .registry import DEFAULT_RECIPE, SOURCE_KINDS, DatasetSpec, PublishedCounts, get_spec

PREPARE_VERSION = 2          # bump when a reading / preprocessing rule changes the output (2: relative
                             # manifest paths, the LC-Rec index in the key and the cache folder)
NOT_IN_KEY = ("max_history",)  # recipe keys that do not change the processed data
SHAPING_KEYS = ("kcore", "start", "end", "dedup")
DOWNLOAD_ENV = "GRBENCH_DOWNLOAD"   # "1" / "true" / "yes": prepare may download Amazon dumps


@dataclass
class _Plan:
    kind: str
    files: list[tuple[str, Path, str]]   # (role, path, name recorded in the manifest: relative to its root)
    lcrec: tuple[Path, str] | None = None


def _console():
    from rich.console import Console

    return Console(stderr=True)


# ---------------------------------------------------------------------------------------------- inputs
def download_allowed(download: bool | None) -> bool:
    """``download`` when given, else whether $GRBENCH_DOWNLOAD is set to 1 / true / yes."""
    if download is not None:
        return bool(download)
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def _resolve(spec: DatasetSpec, source: str | None, data_dir: Path | None, raw_dir: Path | None,
             cache_dir: Path, progress: bool, download: bool = False) -> _Plan:
    if source is not None and source not in SOURCE_KINDS:
        raise ValueError(f"source must be one of {SOURCE_KINDS}, got {source!r}")
    if spec.source == "synthetic" or source == "synthetic":
        if spec.source != "synthetic" or source not in (None, "synthetic"):
            raise ValueError(f"dataset {spec.name!r}: source {source!r} does not apply")
        return _Plan("synthetic", [("generator", Path(__file__).with_name("synthetic.py"), "synthetic.py")])
    if data_dir is not None and spec.lcrec_folder and (source == "lcrec" or (source is None and raw_dir is None)):
        check_data_dir(data_dir)   # its LC-Rec folder decides the source: a missing data dir must not pick one
    folder = data_dir / spec.lcrec_folder if data_dir is not None and spec.lcrec_folder else None
    local = folder is not None and folder.is_dir()
    if source == "lcrec" or (source is None and (local or spec.source == "lcrec")):
        if spec.lcrec_folder is None or spec.lcrec_prefix is None:
            raise ValueError(f"dataset {spec.name!r} has no LC-Rec folder; use its dump source {spec.source!r}")
        if folder is None:
            raise DataError(spec.lcrec_folder, None, "data dir not found (set GRBENCH_DATA_DIR or data_dir=)")
        paths = lcrec_paths(folder, spec.lcrec_prefix)
        if not paths["inter"].is_file():
            hint = ""
            if paths["item"].is_file() and spec.source.startswith("amazon"):
                hint = (f"; this folder holds the item catalogue only. To build sequences from the "
                        f"{spec.source} dump use overrides={{'source': '{spec.source}'}} (raw_dir= with "
                        f"{review_filename(spec.source, spec.category or '')} and "
                        f"{meta_filename(spec.source, spec.category or '')} when offline)")
            raise DataError(paths["inter"], None, f"file not found: dataset {spec.name!r} has no interaction "
                                                  f"sequences here{hint}")
        files = [(role, paths[role], f"{spec.lcrec_folder}/{paths[role].name}") for role in ("inter", "item", "index")
                 if role != "index" or paths["index"].is_file()]
        return _Plan("lcrec", files, (folder, spec.lcrec_prefix))
    kind = source or spec.source
    if not spec.category:
        raise ValueError(f"dataset {spec.name!r} has no Amazon category")
    files = []
    for role, url in dump_urls(kind, spec.category).items():
        name = url.rsplit("/", 1)[1]
        if raw_dir is not None:
            path = find_dump_file(raw_dir, name)
            if path is None:
                raise DataError(Path(raw_dir) / name, None,
                                f"file not found in raw_dir (nor uncompressed); download it from {url}")
            found = fetch(url, path, progress=False, raw_dir=raw_dir)
        else:
            dest = cache_dir / "raw" / kind / name
            if not download and not dest.is_file():
                raise DataError(dest, None, f"file not found, and downloading is off: pass download=True (or set "
                                            f"{DOWNLOAD_ENV}=1) to fetch it from {url}, or put the dumps in a folder "
                                            f"and pass raw_dir=")
            with cache_write(dest.parent):
                found = fetch(url, dest, progress=progress)
        files.append((role, found, found.name))
    return _Plan(kind, files)


def _sha256_memo(cache_dir: Path, paths: list[Path]) -> dict[Path, str]:
    """sha256 of each file, memoised by (resolved path, size, mtime_ns) in ``cache_dir/sha256-memo.json``."""
    memo_path = cache_dir / "sha256-memo.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    out, changed = {}, False
    for p in paths:
        st = p.stat()
        k = str(p.resolve())
        rec = memo.get(k)
        if not (isinstance(rec, dict) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns):
            rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(p)}
            memo[k], changed = rec, True
        out[p] = rec["sha256"]
    if changed:
        with cache_write(memo_path):
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".sha256-memo.", dir=cache_dir)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(memo, f, indent=1, sort_keys=True)
                os.replace(tmp, memo_path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    return out


# ---------------------------------------------------------------------------------------------- helpers
def _merge_recipe(spec: DatasetSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    recipe = dict(spec.recipe)
    if spec.source != "synthetic":
        unknown = sorted(set(overrides) - set(DEFAULT_RECIPE))
        if unknown:
            raise ValueError(f"unknown override(s) {unknown} for {spec.name!r}; known: "
                             f"{sorted(DEFAULT_RECIPE)} and 'source'")
    recipe.update(overrides)
    return recipe


def cache_key(payload: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of a JSON-canonical payload."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def count_mismatch(counts: dict[str, int], published: PublishedCounts | None) -> list[str]:
    """Human-readable lines for each count that differs from the published one (empty when none do)."""
    if published is None:
        return []
    lines = []
    for field in ("users", "items", "interactions"):
        got, want = counts[field], getattr(published, field)
        if got != want:
            lines.append(f"{field}: {got:,} here vs {want:,} published ({published.source}); "
                         f"difference {got - want:+,}")
    return lines


@contextmanager
def _reading(path: Path, progress: bool) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar over a file's (compressed) bytes; yields the callback for ``iter_lines``."""
    if not progress:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]reading {task.description}"), BarColumn(), DownloadColumn(),
                  TimeElapsedColumn(), console=_console(), transient=True) as bar:
        task = bar.add_task(path.name, total=path.stat().st_size)
        yield lambda done: bar.update(task, completed=done)


def _build(name: str, plan: _Plan, recipe: dict[str, Any], progress: bool) -> ProcessedDataset:
    if plan.kind == "synthetic":
        from .synthetic import generate_synthetic

        params = {k: v for k, v in recipe.items() if k not in NOT_IN_KEY}
        return generate_synthetic(**params)
    if plan.kind == "lcrec":
        assert plan.lcrec is not None
        if progress:
            with _console().status(f"reading LC-Rec files of {name} from {plan.lcrec[0]}"):
                return read_lcrec(*plan.lcrec, name=name)
        return read_lcrec(*plan.lcrec, name=name)
    files = {role: path for role, path, _ in plan.files}
    with _reading(files["reviews"], progress) as cb:
        interactions = read_reviews(files["reviews"], plan.kind, on_progress=cb)
    wanted = {r.item for r in interactions}
    with _reading(files["meta"], progress) as cb:
        meta = read_meta(files["meta"], plan.kind, keep=wanted, on_progress=cb)
    ds = preprocess(interactions, meta, name=name, kcore=int(recipe["kcore"]), start=recipe["start"],
                    end=recipe["end"], dedup=bool(recipe["dedup"]))
    if ds.num_users == 0:
        raise DataError(files["reviews"], None, f"no interactions left after preprocessing with {recipe}")
    return ds


# ---------------------------------------------------------------------------------------------- public
def prepare_dataset(name: str, *, cache_dir: str | Path | None = None, data_dir: str | Path | None = None,
                    raw_dir: str | Path | None = None, overrides: dict[str, Any] | None = None,
                    force: bool = False, progress: bool = True, download: bool | None = None) -> ProcessedDataset:
    """The processed dataset ``name`` from the cache, or built, checked and cached (see module docstring).

    ``overrides``: recipe keys (kcore, start, end, dedup, max_history; generator parameters for synthetic)
    and ``source`` (one of lcrec / amazon2014 / amazon2018 / amazon2023) to force a source. LC-Rec files are
    already preprocessed, so changing kcore / start / end / dedup there is an error. ``force`` rebuilds even
    when a cache exists (replacing it atomically). ``download``: whether a missing Amazon dump may be fetched
    from the web (None: $GRBENCH_DOWNLOAD); off, a missing dump is an error that says how to get it.

    Errors: DataError (bad or missing input, naming the file; a data dir that does not exist), CacheError (an
    OSError: a cache dir that is a file, not writable or full, naming it; nothing partial is left behind).
    """
    spec = get_spec(name)
    overrides = dict(overrides or {})
    source = overrides.pop("source", None)
    recipe = _merge_recipe(spec, overrides)
    cache_dir = ensure_cache_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    raw = Path(raw_dir) if raw_dir is not None else None

    plan = _resolve(spec, source, data_dir, raw, cache_dir, progress, download_allowed(download))
    if plan.kind == "lcrec":
        changed = [k for k in SHAPING_KEYS if k in overrides and overrides[k] != spec.recipe.get(k)]
        if changed:
            raise ValueError(f"{name}: overrides {changed} do not apply to LC-Rec files (already preprocessed); "
                             f"force the dump with overrides={{'source': '{spec.source}', ...}}")
    shas = _sha256_memo(cache_dir, [p for _, p, _ in plan.files])
    inputs = [{"role": role, "path": rel, "bytes": p.stat().st_size, "sha256": shas[p]} for role, p, rel in plan.files]
    key = cache_key({"name": name, "source": plan.kind, "category": spec.category,
                     "recipe": {k: v for k, v in recipe.items() if k not in NOT_IN_KEY},
                     "inputs": [(f["role"], f["sha256"]) for f in inputs],
                     "format_version": FORMAT_VERSION, "prepare_version": PREPARE_VERSION})
    target = cache_dir / "datasets" / f"{name}-{key}"

    if not force and (target / MANIFEST).is_file():
        try:
            return ProcessedDataset.load(target)
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            _console().print(f"[yellow]warning[/]: cache {target} unreadable ({e}); rebuilding")

    ds = _build(name, plan, recipe, progress)
    ds.name = name
    ds.validate()
    attachments = {}
    if plan.lcrec is not None:   # paths relative to the data dir; the index travels with the cache folder
        index = next((p for role, p, _ in plan.files if role == "index"), None)
        lcrec = {"folder": spec.lcrec_folder, "prefix": plan.lcrec[1]}
        if index is not None:
            lcrec.update(index=index.name, index_sha256=shas[index])
            attachments[index.name] = index
        ds.manifest["lcrec"] = lcrec
    mismatch = count_mismatch(ds.counts(), spec.published)
    manifest = dict(ds.manifest)
    manifest.update(
        source=plan.kind, category=spec.category, input_files=inputs, params=recipe, cache_key=key,
        published_counts=spec.published.as_dict() if spec.published else None, count_mismatch=mismatch,
        citation=spec.citation, notes=spec.notes, prepare_version=PREPARE_VERSION,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    ds.manifest = manifest
    if mismatch:
        _console().print(f"[yellow]warning[/]: {name} ({plan.kind}) differs from the published counts:\n  "
                         + "\n  ".join(mismatch))
    with cache_write(target):
        ds.save(target, attachments)
    return ds


def describe(ds: ProcessedDataset) -> dict[str, Any]:
    """Summary for the CLI: counts, sequence-length statistics, sparsity, text fields, provenance."""
    lengths = [len(s) for s in ds.sequences]
    cells = ds.num_users * ds.num_items
    return {
        "name": ds.name,
        "source": ds.manifest.get("source"),
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": ds.num_interactions,
        "avg_length": round(statistics.fmean(lengths), 4) if lengths else 0.0,
        "median_length": float(statistics.median(lengths)) if lengths else 0.0,
        "min_length": min(lengths, default=0),
        "max_length": max(lengths, default=0),
        "sparsity": round(1.0 - ds.num_interactions / cells, 6) if cells else 1.0,
        "text_fields": ds.text_fields,
        "has_timestamps": ds.timestamps is not None,
        "count_mismatch": list(ds.manifest.get("count_mismatch", [])),
        "content_hash": ds.manifest.get("content_hash") or ds.content_hash(),
    }
