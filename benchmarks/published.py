"""The published figures shown beside paper-track rows: ``configs/published.yaml``, loaded and checked.

Each entry is a model x dataset figure on this suite's protocol, with its source, its protocol differences and an
optional ``gap_note`` (see the file's header for what is left out and why). No torch, no lightning.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PUBLISHED_FILE = Path(__file__).resolve().parent / "configs" / "published.yaml"


def _fraction(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and 0 <= float(value) <= 1)


def load_published(path: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """``{dataset: {model: {"source", "metrics", "protocol", "gap_note"?}}}`` from the published-figures YAML.

    A malformed file raises ``ValueError`` naming the file and the dataset/model/field."""
    import yaml

    path = Path(path) if path is not None else PUBLISHED_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must map dataset names to models")
    for dataset, models in data.items():
        if not isinstance(models, dict):
            raise ValueError(f"{path}: {dataset}: must map model names to published entries")
        for model, entry in models.items():
            where = f"{path}: {dataset}.{model}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: must be a mapping with source, metrics and protocol")
            for field in ("source", "metrics", "protocol"):
                if field not in entry:
                    raise ValueError(f"{where}: missing field {field!r}")
            unknown = set(entry) - {"source", "metrics", "protocol", "gap_note"}
            if unknown:
                raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r} (fields: source, metrics, protocol, "
                                 "gap_note)")
            metrics = entry["metrics"]
            if not isinstance(metrics, dict) or not metrics:
                raise ValueError(f"{where}.metrics: must map metric names (hr@10, ndcg@10, ...) to numbers")
            for key, value in metrics.items():
                if not _fraction(value):
                    raise ValueError(f"{where}.metrics.{key}: {value!r} is not a fraction between 0 and 1")
    return data
