"""Where the Amazon dumps live on the web, and a resumable, checksummed download.

``dump_urls(kind, category)`` gives the review and metadata URLs of a category. ``fetch`` downloads one file:
bytes go to ``<dest>.part`` (an interrupted download resumes from there with an HTTP ``Range`` request), the
sha256 is checked when known, and only then is the file renamed to ``dest``. With ``raw_dir`` (a folder of
dumps fetched by hand, e.g. on a cluster without internet) a file found there is used in place and nothing
is downloaded. ``CHECKSUMS`` holds the sha256 of dumps that have been verified; the manifest of every
prepared dataset records the sha256 of the files actually used either way.
"""
from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from .amazon import meta_filename, review_filename
from .dataset import sha256_file
from .errors import DataError

BASE_URLS: dict[str, dict[str, str]] = {
    "amazon2014": {
        "reviews": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/",
        "meta": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/",
    },
    "amazon2018": {
        "reviews": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFilesSmall/",
        "meta": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/metaFiles2/",
    },
    "amazon2023": {
        "reviews": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/review_categories/",
        "meta": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/meta_categories/",
    },
}

# file name -> sha256 of dumps checked by hand (none are reachable from the machine this was written on, so
# none is recorded yet; an entry here makes every later fetch verify it).
CHECKSUMS: dict[str, str] = {}


class DownloadError(RuntimeError):
    """A download that could not complete (network, HTTP status); the message names the URL."""


class ChecksumError(DataError):
    """A file whose sha256 differs from the recorded one."""


def dump_urls(kind: str, category: str) -> dict[str, str]:
    """``{"reviews": url, "meta": url}`` of an Amazon category (``kind``: amazon2014/2018/2023)."""
    if kind not in BASE_URLS:
        raise ValueError(f"no download URLs for {kind!r}; expected one of {', '.join(BASE_URLS)}")
    base = BASE_URLS[kind]
    return {"reviews": base["reviews"] + review_filename(kind, category),
            "meta": base["meta"] + meta_filename(kind, category)}


def url_filename(url: str) -> str:
    """The last path component of a URL (the file name the dump is stored under)."""
    name = Path(urlparse(url).path).name
    if not name:
        raise ValueError(f"URL {url!r} has no file name")
    return name


def verify_sha256(path: Path, sha256: str | None) -> None:
    """Raise ChecksumError when ``sha256`` is given and differs from the file's."""
    if sha256 is None:
        return
    got = sha256_file(path)
    if got.lower() != sha256.lower():
        raise ChecksumError(path, None, f"sha256 mismatch: expected {sha256}, got {got}")


def _content_total(resp: object, offset: int) -> int | None:
    """Full size of the remote file from a 200 (Content-Length) or 206 (Content-Range) response."""
    headers = resp.headers  # type: ignore[attr-defined]
    m = re.match(r"bytes\s+\d+-\d+/(\d+)", headers.get("Content-Range") or "")
    if m:
        return int(m.group(1))
    length = headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _progress_bar(enabled: bool):  # -> rich Progress or None
    if not enabled:
        return None
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), transient=False)


def fetch(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True, *,
          raw_dir: str | Path | None = None, chunk_size: int = 1 << 20, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify ``sha256`` when known, return the path.

    ``sha256=None`` looks the file name up in ``CHECKSUMS``. If ``raw_dir`` holds the file (same name, or
    uncompressed without ``.gz``) that file is verified and returned, and nothing is downloaded; so is an
    existing ``dest``. A checksum mismatch deletes the downloaded bytes and raises ChecksumError.
    """
    dest = Path(dest)
    name = url_filename(url)
    sha256 = sha256 or CHECKSUMS.get(name)
    if raw_dir is not None:
        for cand in (Path(raw_dir) / name, Path(raw_dir) / name.removesuffix(".gz")):
            if cand.is_file():
                verify_sha256(cand, sha256 if cand.name == name else None)
                return cand
    if dest.is_file():
        verify_sha256(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0

    request = urllib.request.Request(url, headers={"User-Agent": "grbench"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the .part is (claimed) complete
            resp = None
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {getattr(e, 'reason', e)} (no network? put the file in raw_dir)") from e

    if resp is not None:
        with resp:
            if offset and resp.status != 206:  # the server ignored the Range header: start over
                offset = 0
            total = _content_total(resp, offset)
            bar = _progress_bar(progress)
            try:
                task = None
                if bar is not None:
                    bar.start()
                    task = bar.add_task(name, total=total, completed=offset)
                with open(part, "ab" if offset else "wb") as f:
                    while block := resp.read(chunk_size):
                        f.write(block)
                        if bar is not None:
                            bar.advance(task, len(block))
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f"{url}: interrupted after {part.stat().st_size} bytes ({e}); "
                                    "run again to resume") from e
            finally:
                if bar is not None:
                    bar.stop()
            if total is not None and part.stat().st_size != total:
                raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
    try:
        verify_sha256(part, sha256)
    except ChecksumError as e:
        part.unlink(missing_ok=True)
        raise ChecksumError(dest, None, e.message + " (the download was deleted)") from e
    os.replace(part, dest)
    return dest
