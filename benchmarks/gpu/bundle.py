"""The offline bundle for a GPU node without internet: ``grbench bundle`` (``make gpu-bundle``).

A cluster node with a stock CUDA PyTorch image (reference: one H200, Python 3.12, torch 2.11 with CUDA 13, lightning,
transformers, peft, torchmetrics, rich, pandas, pyarrow; no omegaconf, faiss or datasets; no network; at most 64 MiB
brought in, bundle and source tree together) gets one folder, at most ``MAX_BUNDLE_BYTES``:

- ``wheels/``: what such an image lacks to run the paper-track models, as pure-Python wheels: ``omegaconf`` (2.4
  vendors its antlr4 runtime; it needs PyYAML, which transformers brings) repacked from this environment, and the
  project itself (``grbench-<version>-py3-none-any.whl``, built without network). Installed with ``pip install
  --no-index --no-deps``, so the image's torch and lightning stay untouched.
- ``data/<folder>/``: the dataset's input files (LC-Rec JSON, about 3 MB for Beauty); the node prepares them the way
  this machine does, so the processed data has the same content hash.
- ``cache/sid_tables/``: the final semantic-ID table of every run with a learned tokenizer (``tokenizers/build.py``
  caches them whole), so the node needs neither the text encoder and its weights nor faiss.
- ``manifest.json``: every file with size and sha256, the commit it was built from, the runs, the dataset's content
  hash and this machine's package versions.

The runs are ``benchmarks/configs/paper_track.yaml``; ``benchmarks/gpu/paper_track.sh`` runs them on the node.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

MAX_BUNDLE_BYTES = 48 * 2**20
#: distributions a stock CUDA PyTorch image lacks that the paper-track path imports (the rest of pyproject's
#: dependencies are the image's own, or optional there: faiss, datasets, matplotlib, gguf)
EXTRA_WHEELS: tuple[str, ...] = ("omegaconf",)
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNS_FILE = Path(__file__).resolve().parents[1] / "configs" / "paper_track.yaml"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)      # fixed: the same files give the same wheel bytes


@dataclass
class Run:
    """One paper-track run: a model's recipe for the dataset, published as ``name``."""

    model: str
    name: str
    overrides: list[str] = field(default_factory=list)


def load_runs(dataset: str, path: Path = RUNS_FILE) -> list[Run]:
    """The runs of ``dataset`` in ``paper_track.yaml``; errors name the file and the entry."""
    from omegaconf import OmegaConf

    from grbench.benchmarks.config import model_names

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(data, dict) or dataset not in data:
        raise ValueError(f"{path}: no runs for dataset {dataset!r} (it has: {', '.join(sorted(data or {}))})")
    runs = []
    for i, entry in enumerate(data[dataset] or []):
        where = f"{path}: {dataset}[{i}]"
        if not isinstance(entry, dict) or not {"model", "name"} <= set(entry):
            raise ValueError(f"{where}: each run is {{model, name, overrides}}, got {entry!r}")
        if entry["model"] not in model_names():
            raise ValueError(f"{where}: unknown model {entry['model']!r} (known: {', '.join(model_names())})")
        overrides = [str(o) for o in entry.get("overrides") or []]
        if any("=" not in o for o in overrides):
            raise ValueError(f"{where}: overrides are key=value strings, got {overrides}")
        runs.append(Run(str(entry["model"]), str(entry["name"]), overrides))
    if not runs:
        raise ValueError(f"{path}: dataset {dataset!r} lists no runs")
    if len({r.name for r in runs}) != len(runs):
        raise ValueError(f"{path}: dataset {dataset!r} has two runs with one name")
    return runs


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack_wheel(dist_name: str, out_dir: Path) -> Path:
    """A wheel of the installed pure-Python distribution ``dist_name`` (its RECORD's files, no bytecode), so the
    bundle holds exactly the version tested here, built without network. Raises for a distribution with compiled
    files."""
    dist = metadata.distribution(dist_name)
    files = [f for f in (dist.files or []) if "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo")]
    if not files:
        raise ValueError(f"{dist_name}: the installed distribution lists no files (no RECORD)")
    compiled = [str(f) for f in files if f.suffix in (".so", ".pyd", ".dylib")]
    if compiled:
        raise ValueError(f"{dist_name}: not pure Python ({compiled[0]}): it cannot be repacked into a py3-none-any wheel")
    info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    name = dist.metadata["Name"].replace("-", "_").lower()
    version = dist.version
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{version}-py3-none-any.whl"
    rows = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        def add(arcname: str, data: bytes) -> None:
            zi = zipfile.ZipInfo(arcname, _ZIP_TIME)
            zi.external_attr = 0o644 << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
            rows.append((arcname, _record_hash(data), str(len(data))))

        for f in sorted(files, key=lambda p: p.as_posix()):
            arc = f.as_posix()
            if arc in skip or arc.startswith(".."):      # files outside site-packages (scripts) are not needed
                continue
            add(arc, Path(dist.locate_file(f)).read_bytes())
        wheel_meta = f"{info}/WHEEL"
        if wheel_meta not in {r[0] for r in rows}:
            add(wheel_meta, b"Wheel-Version: 1.0\nGenerator: grbench-bundle\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        record = io.StringIO()
        writer = csv.writer(record, lineterminator="\n")
        writer.writerows(rows + [(f"{info}/RECORD", "", "")])
        zi = zipfile.ZipInfo(f"{info}/RECORD", _ZIP_TIME)
        zi.external_attr = 0o644 << 16
        z.writestr(zi, record.getvalue())
    return target


def build_project_wheel(out_dir: Path) -> Path:
    """``grbench-<version>-py3-none-any.whl`` of this source tree, built with the local setuptools (no index)."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("grbench-*.whl"))

    def scratch() -> None:       # setuptools copies into build/lib and never removes a file deleted since
        for stale in [REPO_ROOT / "build" / "lib", *(REPO_ROOT / "build").glob("bdist.*")]:
            shutil.rmtree(stale, ignore_errors=True)

    scratch()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--wheel-dir", str(out_dir), str(REPO_ROOT)], capture_output=True, text=True,
                          cwd=REPO_ROOT)
    scratch()
    if proc.returncode != 0:
        raise OSError(f"building the grbench wheel failed: {' '.join((proc.stderr or proc.stdout).split())[-600:]}")
    made = sorted(set(out_dir.glob("grbench-*.whl")) - before) or sorted(out_dir.glob("grbench-*.whl"))
    if not made:
        raise OSError(f"pip wheel wrote no grbench wheel into {out_dir}")
    return made[-1]


def _dataset_files(data: Any, data_dir: Path) -> list[tuple[Path, str]]:
    """``(source path, path inside data/)`` of the dataset's LC-Rec input files (none for generated data): the
    manifest names them relative to the data dir."""
    if data.manifest.get("source") != "lcrec":
        return []
    out = []
    for entry in data.manifest.get("input_files", []):
        rel = str(entry["path"])
        src = Path(data_dir) / rel
        if not src.is_file():
            raise FileNotFoundError(f"dataset {data.name!r}: input file {src} not found (set GRBENCH_DATA_DIR or "
                                    "--data-dir to the folder it was prepared from)")
        out.append((src, rel))
    return out


def build_bundle(out: Path, dataset: str, data_dir: Path | None = None, cache_dir: Path | None = None,
                 runs: list[Run] | None = None, replace: bool = False) -> dict[str, Any]:
    """Write the bundle for ``dataset`` into ``out`` (see module docstring); returns its manifest. SID tables are
    built (or taken) from ``cache_dir`` (default: the user's cache) and only the tables are copied."""
    from grbench.benchmarks.config import load_config
    from grbench.benchmarks.provenance import git_info, package_versions
    from grbench.benchmarks.run import build_datamodule
    from grbench.datamodules.dataset import sha256_file
    from grbench.datamodules.paths import default_cache_dir, default_data_dir
    from grbench.tokenizers.build import LEARNED, build_sid_table, table_cache_path

    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        if not replace:
            raise FileExistsError(f"{out} exists and is not empty: choose another --out, or --replace to rebuild it")
        shutil.rmtree(out)
    runs = runs or load_runs(dataset)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        wheels = [repack_wheel(d, staging / "wheels") for d in EXTRA_WHEELS] + [build_project_wheel(staging / "wheels")]
        tables, content_hash, copied = {}, None, []
        for run in runs:
            cfg = load_config(dataset, run.model, [f"paths.cache_dir={cache}", *run.overrides,
                                                   *([f"paths.data_dir={data_dir}"] if data_dir else [])])
            dm = build_datamodule(cfg)
            dm.prepare_data()
            dm.setup()
            content_hash = dm.data.manifest.get("content_hash")
            if not copied:
                for src, rel in _dataset_files(dm.data, Path(data_dir) if data_dir else Path(default_data_dir())):
                    dest = staging / "data" / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                    copied.append(rel)
            tok = (cfg.model.params.get("tokenizer") or {}) if "params" in cfg.model else {}
            if tok and str(tok.get("kind")) in LEARNED:
                from omegaconf import OmegaConf

                tok_cfg = OmegaConf.to_container(tok, resolve=True)
                build_sid_table(dm.data, tok_cfg, cache, int(cfg.seed))
                src = table_cache_path(dm.data, tok_cfg, cache, int(cfg.seed))
                dest = staging / "cache" / "sid_tables" / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                tables[run.name] = f"cache/sid_tables/{src.name}"
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        total = sum(p.stat().st_size for p in files)
        if total > MAX_BUNDLE_BYTES:
            raise ValueError(f"bundle for {dataset!r} is {total / 2**20:.1f} MiB, over the {MAX_BUNDLE_BYTES / 2**20:.0f} "
                             "MiB limit: " + ", ".join(f"{p.relative_to(staging)} {p.stat().st_size / 2**20:.1f} MiB"
                                                        for p in sorted(files, key=lambda p: -p.stat().st_size)[:3]))
        manifest = {
            "dataset": dataset, "content_hash": content_hash, "bytes": total,
            "runs": [{"model": r.model, "name": r.name, "overrides": r.overrides, "sid_table": tables.get(r.name)}
                     for r in runs],
            "wheels": [w.name for w in wheels], "data": copied,
            "files": [{"path": p.relative_to(staging).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
                      for p in files],
            "git": git_info(REPO_ROOT), "built_with": {"python": sys.version.split()[0], **package_versions()},
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
