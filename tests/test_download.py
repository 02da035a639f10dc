"""Download path against a local HTTP server in a thread (no internet needed): full download, resume from a
partial ``.part`` with a Range request, a server that ignores Range, checksum mismatch, and raw_dir use."""
from __future__ import annotations

import hashlib
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from grbench.datamodules.download import ChecksumError, DownloadError, dump_urls, fetch

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at /files/<name>; honours ``Range: bytes=N-`` unless ``ignore_range``; logs requests."""

    def __init__(self) -> None:
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self.bytes_sent = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                if not self.path.startswith("/files/"):
                    self.send_error(404)
                    return
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and not outer.ignore_range:
                    start = int(m.group(1))
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.end_headers()
                        return
                    body = PAYLOAD[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    body = PAYLOAD
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                outer.bytes_sent += len(body)  # counted before writing: the client may finish first
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_full_download_verifies_and_renames(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "reviews_Beauty_5.json.gz"
    got = fetch(server.url + "reviews_Beauty_5.json.gz", dest, sha256=SHA, progress=True)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert not dest.with_name(dest.name + ".part").exists()
    assert server.requests == [("/files/reviews_Beauty_5.json.gz", None)]
    # a second call finds the file and sends no request
    assert fetch(server.url + "reviews_Beauty_5.json.gz", dest, sha256=SHA, progress=False) == dest
    assert len(server.requests) == 1


def test_resume_sends_range_and_fetches_only_the_rest(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "x.json.gz"
    n = 123_457
    dest.with_name("x.json.gz.part").write_bytes(PAYLOAD[:n])  # an interrupted earlier run
    fetch(server.url + "x.json.gz", dest, sha256=SHA, progress=False)
    assert server.requests == [("/files/x.json.gz", f"bytes={n}-")]
    assert server.bytes_sent == len(PAYLOAD) - n
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("x.json.gz.part").exists()


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.ignore_range = True
    dest = tmp_path / "x.json.gz"
    dest.with_name("x.json.gz.part").write_bytes(PAYLOAD[:1000])
    fetch(server.url + "x.json.gz", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD  # not 1000 bytes of prefix twice
    assert server.bytes_sent == len(PAYLOAD)


def test_complete_part_file_gets_416_and_is_used(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "x.json.gz"
    dest.with_name("x.json.gz.part").write_bytes(PAYLOAD)
    fetch(server.url + "x.json.gz", dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and server.bytes_sent == 0


def test_checksum_mismatch_after_resume_deletes_the_bytes(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "x.json.gz"
    part = dest.with_name("x.json.gz.part")
    part.write_bytes(b"\0" * 5000)  # a corrupt partial file: the resumed result cannot match
    with pytest.raises(ChecksumError) as ei:
        fetch(server.url + "x.json.gz", dest, sha256=SHA, progress=False)
    assert str(dest) in str(ei.value) and "sha256 mismatch" in str(ei.value) and SHA in str(ei.value)
    assert not part.exists() and not dest.exists()
    fetch(server.url + "x.json.gz", dest, sha256=SHA, progress=False)  # the next run starts over and succeeds
    assert dest.read_bytes() == PAYLOAD


def test_http_error_is_a_download_error_naming_the_url(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"/nothing/here\.gz: HTTP 404"):
        fetch(server.url.replace("/files/", "/nothing/") + "here.gz", tmp_path / "here.gz", progress=False)
    assert not (tmp_path / "here.gz").exists()


def test_raw_dir_file_is_used_without_downloading(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "meta_Beauty.json.gz").write_bytes(PAYLOAD)
    url = "http://127.0.0.1:9/unreachable/meta_Beauty.json.gz"  # port 9 (discard): any request would fail
    got = fetch(url, tmp_path / "cache" / "meta_Beauty.json.gz", sha256=SHA, raw_dir=raw)
    assert got == raw / "meta_Beauty.json.gz" and not (tmp_path / "cache").exists()
    with pytest.raises(ChecksumError) as ei:
        fetch(url, tmp_path / "cache" / "meta_Beauty.json.gz", sha256="0" * 64, raw_dir=raw)
    assert str(raw / "meta_Beauty.json.gz") in str(ei.value)
    # an uncompressed copy in raw_dir is accepted too (its checksum is not the .gz one, so it is not checked)
    (raw / "meta_Beauty.json.gz").unlink()
    (raw / "meta_Beauty.json").write_bytes(b"{}\n")
    assert fetch(url, tmp_path / "c" / "meta_Beauty.json.gz", sha256=SHA, raw_dir=raw) == raw / "meta_Beauty.json"


def test_unreachable_host_says_to_use_raw_dir(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="raw_dir"):
        fetch("http://127.0.0.1:9/x/meta_Beauty.json.gz", tmp_path / "m.gz", progress=False, timeout=5)


def test_dump_urls_for_each_format() -> None:
    assert dump_urls("amazon2014", "Beauty") == {
        "reviews": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Beauty_5.json.gz",
        "meta": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_Beauty.json.gz"}
    assert dump_urls("amazon2018", "Musical_Instruments") == {
        "reviews": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFilesSmall/"
                   "Musical_Instruments_5.json.gz",
        "meta": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/metaFiles2/"
                "meta_Musical_Instruments.json.gz"}
    assert dump_urls("amazon2023", "All_Beauty") == {
        "reviews": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/review_categories/"
                   "All_Beauty.jsonl.gz",
        "meta": "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/meta_categories/"
                "meta_All_Beauty.jsonl.gz"}
    with pytest.raises(ValueError, match="amazon2014"):
        dump_urls("amazon2099", "Beauty")
