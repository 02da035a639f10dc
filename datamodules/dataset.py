"""The canonical processed form of a dataset, and its on-disk cache.

A processed dataset is what every model sees: items with contiguous ids ``0..N-1`` (with their source id, e.g.
the ASIN, and text fields where the source has them) and one chronological item sequence per user. It is
stored as two Parquet files plus ``manifest.json`` (counts, preprocessing parameters, sha256 of the inputs and
a content hash that results cite), and any attached input the models read later (an LC-Rec ``X.index.json``),
copied in so that the cache folder is self-contained: paths inside the manifest are file names relative to the
folder, with their sha256 (``manifest["attachments"]``), never absolute paths into someone's data folder.
Saving is atomic: the files are written to a temporary folder beside the target, which is renamed into place
only when complete, so a failed run never leaves a half-written cache or replaces a good one.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_dir
from .errors import DataError

TEXT_FIELDS = ("title", "description", "brand", "categories")
MANIFEST = "manifest.json"
ITEMS_FILE = "items.parquet"
SEQUENCES_FILE = "sequences.parquet"
FORMAT_VERSION = 1


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ProcessedDataset:
    """Items and chronological user sequences after preprocessing.

    ``items`` maps column name to a list of length ``num_items``: always ``source_id`` (str), and any of
    ``TEXT_FIELDS`` (str, "" when missing) the source provides. ``sequences[u]`` is user ``u``'s item ids in
    chronological order; ``user_ids[u]`` the source user id; ``timestamps[u]`` (optional) the matching times.
    ``directory`` is the folder the dataset was saved to or read from: relative file names in the manifest (e.g.
    ``manifest["lcrec"]["index"]``) resolve against it (``resolve``).
    """

    name: str
    items: dict[str, list[str]]
    sequences: list[np.ndarray]
    user_ids: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    timestamps: list[np.ndarray] | None = None
    directory: Path | None = field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ basic facts
    @property
    def num_items(self) -> int:
        return len(self.items["source_id"])

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def text_fields(self) -> list[str]:
        """Text fields with at least one non-empty value."""
        return [f for f in TEXT_FIELDS if f in self.items and any(self.items[f])]

    def counts(self) -> dict[str, int]:
        return {"users": self.num_users, "items": self.num_items, "interactions": self.num_interactions}

    def validate(self, min_length: int = 3) -> None:
        """Check ids and lengths; raise DataError naming the user at fault."""
        n = self.num_items
        for col, values in self.items.items():
            if len(values) != n:
                raise DataError(None, f"items column {col!r}", f"has {len(values)} rows, expected {n}")
        if len(self.user_ids) != len(self.sequences):
            raise DataError(None, "user_ids", f"{len(self.user_ids)} ids for {len(self.sequences)} sequences")
        for u, seq in enumerate(self.sequences):
            if len(seq) < min_length:
                raise DataError(None, f"user {self.user_ids[u]!r}",
                                f"sequence has {len(seq)} items; leave-one-out needs at least {min_length}")
            if len(seq) and (int(seq.min()) < 0 or int(seq.max()) >= n):
                raise DataError(None, f"user {self.user_ids[u]!r}", f"item id out of range [0, {n})")

    def content_hash(self) -> str:
        """sha256 over the canonical content (item source ids and every sequence), independent of file layout."""
        h = hashlib.sha256()
        h.update(f"items:{self.num_items}\n".encode())
        for sid in self.items["source_id"]:
            h.update(sid.encode())
            h.update(b"\x00")
        h.update(f"users:{self.num_users}\n".encode())
        for uid, seq in zip(self.user_ids, self.sequences):
            h.update(uid.encode())
            h.update(b"\x00")
            h.update(np.asarray(seq, dtype="<i8").tobytes())
            h.update(b"\x01")
        return h.hexdigest()

    def resolve(self, name: str | Path) -> Path:
        """A file named in the manifest: relative names resolve against ``directory`` (absolute ones as they are)."""
        path = Path(name)
        if path.is_absolute() or self.directory is None:
            return path
        return self.directory / path

    # ------------------------------------------------------------------ cache I/O
    def save(self, directory: str | Path, attachments: dict[str, Path] | None = None) -> Path:
        """Write the dataset to ``directory`` atomically (temp folder + rename); return the folder.

        ``attachments`` maps a file name to a source file copied in beside the Parquet files; the manifest
        records each name with its sha256 (checked by ``load``)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        manifest = dict(self.manifest)
        manifest.update(name=self.name, counts=self.counts(), content_hash=self.content_hash(),
                        format_version=FORMAT_VERSION)
        for name in attachments or {}:
            if Path(name).name != name or name in (MANIFEST, ITEMS_FILE, SEQUENCES_FILE):
                raise ValueError(f"attachment name {name!r}: expected a plain file name other than the dataset's own")
        with atomic_dir(directory) as tmp:
            files = {}
            for name, src in (attachments or {}).items():
                shutil.copyfile(src, tmp / name)
                files[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            if files:
                manifest["attachments"] = files
            pq.write_table(pa.table({k: pa.array(v, type=pa.string()) for k, v in self.items.items()}),
                           tmp / ITEMS_FILE)
            cols: dict[str, pa.Array] = {
                "user_id": pa.array(self.user_ids, type=pa.string()),
                "items": pa.array([np.asarray(s, dtype=np.int64) for s in self.sequences],
                                  type=pa.list_(pa.int64())),
            }
            if self.timestamps is not None:
                cols["timestamps"] = pa.array([np.asarray(t, dtype=np.int64) for t in self.timestamps],
                                              type=pa.list_(pa.int64()))
            pq.write_table(pa.table(cols), tmp / SEQUENCES_FILE)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        self.manifest = manifest
        self.directory = directory
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "ProcessedDataset":
        """Load a cached dataset; the manifest's content hash is checked against the files."""
        directory = Path(directory)
        mpath = directory / MANIFEST
        if not mpath.exists():
            raise DataError(directory, None, f"not a processed dataset (no {MANIFEST})")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise DataError(mpath, e.lineno, f"invalid JSON: {e.msg}") from e
        items_t = pq.read_table(directory / ITEMS_FILE)
        seq_t = pq.read_table(directory / SEQUENCES_FILE)
        items = {name: [v if v is not None else "" for v in items_t.column(name).to_pylist()]
                 for name in items_t.column_names}
        seqs = [np.asarray(s, dtype=np.int64) for s in seq_t.column("items").to_pylist()]
        ts = None
        if "timestamps" in seq_t.column_names:
            ts = [np.asarray(t, dtype=np.int64) for t in seq_t.column("timestamps").to_pylist()]
        ds = cls(name=manifest.get("name", directory.name), items=items, sequences=seqs,
                 user_ids=seq_t.column("user_id").to_pylist(), manifest=manifest, timestamps=ts, directory=directory)
        if manifest.get("content_hash") != ds.content_hash():
            raise DataError(mpath, "content_hash", "does not match the cached files (corrupt cache: delete the folder)")
        for name, entry in (manifest.get("attachments") or {}).items():
            file = directory / name
            if not file.is_file():
                raise DataError(mpath, f"attachments.{name}", f"attached file {file} is missing")
            if sha256_file(file) != entry.get("sha256"):
                raise DataError(file, None, f"sha256 differs from {MANIFEST}'s (corrupt cache: delete the folder)")
        return ds


def from_sequences(name: str, sequences: Sequence[Sequence[int]], num_items: int | None = None,
                   items: dict[str, list[str]] | None = None, user_ids: Sequence[str] | None = None,
                   manifest: dict[str, Any] | None = None) -> ProcessedDataset:
    """Build a ProcessedDataset from in-memory id sequences (tests, synthetic data)."""
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    if items is None:
        n = num_items if num_items is not None else (max(int(s.max()) for s in seqs if len(s)) + 1)
        items = {"source_id": [str(i) for i in range(n)]}
    uids = list(user_ids) if user_ids is not None else [str(u) for u in range(len(seqs))]
    return ProcessedDataset(name=name, items=items, sequences=seqs, user_ids=uids, manifest=dict(manifest or {}))
