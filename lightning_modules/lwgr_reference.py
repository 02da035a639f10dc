"""The reference model theta_ref of LWGR (arXiv 2605.18771, §4.3.2): a trained TIGER result of this suite.

``model.params.reference.result`` names it: a result name (``<results_dir>/<dataset>/<name>.json``) or a path to a
result JSON. Its checkpoint is found in the run folder that wrote that result (``<runs_dir>/<dataset>/<result
name>/<stamp>/result.json`` with the same ``created`` time), or given as ``reference.checkpoint``. Every mismatch is
an error that names the file and the field: no result, not a TIGER result, another dataset, other data (content
hash), no checkpoint. The SID table is checked later against the checkpoint's own (``LWGR.prepare``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Reference:
    """A TIGER result and its best checkpoint."""

    result_path: Path
    record: dict[str, Any]
    checkpoint: Path

    @property
    def params(self) -> dict[str, Any]:
        """The reference run's resolved ``model.params`` (shape, tokenizer, user tokens)."""
        return dict((self.record.get("config") or {}).get("model", {}).get("params") or {})

    @property
    def seed(self) -> int:
        return int((self.record.get("config") or {}).get("seed", self.record.get("seed", 0)))

    def summary(self) -> dict[str, Any]:
        """What the LWGR result records about its reference."""
        metrics = self.record.get("metrics") or {}
        return {"result": str(self.result_path), "created": self.record.get("created"),
                "checkpoint": str(self.checkpoint), "git": (self.record.get("git") or {}).get("commit"),
                "track": self.record.get("track"),
                "ndcg@10": metrics.get("ndcg@10"), "hr@10": metrics.get("hr@10")}


def result_file(name: str, results_dir: str | Path, dataset: str) -> Path:
    """A result by name (``<results_dir>/<dataset>/<name>.json``) or by path (a name ending in .json or with a /)."""
    if name.endswith(".json") or "/" in name:
        return Path(name).expanduser()
    return Path(results_dir).expanduser() / dataset / f"{name}.json"


def find_run_checkpoint(record: dict[str, Any], runs_dir: Path, dataset: str) -> Path | None:
    """The best checkpoint of the run folder that wrote ``record`` (its ``result.json`` has the same ``created``)."""
    name = (record.get("config") or {}).get("result_name") or record.get("model")
    best = (record.get("best_val") or {}).get("checkpoint")
    folder = runs_dir / dataset / str(name)
    if not best or not folder.is_dir():
        return None
    for run in sorted(folder.iterdir(), reverse=True):
        result = run / "result.json"
        try:
            created = json.loads(result.read_text(encoding="utf-8")).get("created")
        except (OSError, ValueError):
            continue
        if created == record.get("created") and (run / "checkpoints" / best).is_file():
            return run / "checkpoints" / best
    return None


def load_reference(cfg: dict[str, Any], dataset: str, content_hash: str | None, runs_dir: Path,
                   model: str = "tiger") -> Reference:
    """Resolve ``model.params.reference`` (``result``, ``results_dir``, ``checkpoint``) for ``dataset``."""
    field = "model.params.reference"
    name = cfg.get("result")
    if not name:
        raise ValueError(f"{field}.result: name the {model} result LWGR starts from (e.g. {model})")
    path = result_file(str(name), cfg.get("results_dir") or "leaderboards/results", dataset)
    if not path.is_file():
        raise FileNotFoundError(f"{field}.result: {path} does not exist; train the reference first: "
                                f"grbench bench --dataset {dataset} --model {model}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not a result JSON ({e})") from e
    if record.get("model") != model:
        raise ValueError(f"{path}: field 'model' is {record.get('model')!r}; LWGR's reference must be a {model} "
                         "result")
    if record.get("dataset") != dataset:
        raise ValueError(f"{path}: field 'dataset' is {record.get('dataset')!r}, this run's dataset is {dataset!r}")
    theirs = (record.get("dataset_manifest") or {}).get("content_hash")
    if content_hash and theirs and theirs != content_hash:
        raise ValueError(f"{path}: field 'dataset_manifest.content_hash' is {theirs[:12]}..., this run's data has "
                         f"{content_hash[:12]}...: the reference was trained on other data")
    if cfg.get("checkpoint"):
        ckpt = Path(str(cfg["checkpoint"])).expanduser()
        if not ckpt.is_file():
            raise FileNotFoundError(f"{field}.checkpoint: {ckpt} does not exist")
    else:
        found = find_run_checkpoint(record, runs_dir, dataset)
        if found is None:
            raise FileNotFoundError(
                f"{field}.result: the run that wrote {path} (created {record.get('created')}) has no checkpoint "
                f"under {runs_dir / dataset} (a fresh clone or another machine): train the reference here "
                f"(grbench bench --dataset {dataset} --model {model} --no-write) and name its result.json, or set "
                f"{field}.checkpoint")
        ckpt = found
    return Reference(path, record, ckpt)
