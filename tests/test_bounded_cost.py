"""Bounded cost per input: hostile files (made small on disk) are rejected from their declared sizes,
with a reason, and the peak memory of a whole ingest of each stays under 1 GiB."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import polars as pl
import pydicom
import pytest
from fake_trees import write_image
from pydicom.data import get_testdata_file

GIB = 1024**3

MEASURE = """
import json, resource, sys
from click.testing import CliRunner
from curator.cli import main
result = CliRunner().invoke(main, sys.argv[1:], catch_exceptions=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"exit": result.exit_code, "peak": peak, "output": result.output}))
"""


def _nifti_header(path: Path, shape: tuple[int, ...], dtype) -> None:
    """A header claiming ``shape`` and no voxel data at all (~350 bytes)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    path.write_bytes(hdr.binaryblock + b"\x00" * 4)


def _dicom(path: Path, rows: int, cols: int, frames: int, pixel_bytes: int) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(pixel_bytes)
    ds["PixelData"].VR = "OB"
    ds.save_as(path)


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR declares ``width`` x ``height``, with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _ingest(root: Path, out: Path, adapter: str, *params: str) -> dict:
    args = ["ingest", "--adapter", adapter, "--root", str(root), "--out", str(out), "--quiet", "--id", "hostile"]
    for p in params:
        args += ["--param", p]
    proc = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


HOSTILE = {
    # name: (file name, maker, adapter, params, reject reason)
    "nifti 4096^3 in 352 bytes": (
        "bomb.nii",
        lambda p: _nifti_header(p, (4096, 4096, 4096), np.int16),
        "decompression_bomb",
    ),
    "nifti 3000x3000x200": ("big.nii", lambda p: _nifti_header(p, (3000, 3000, 200), np.uint8), "decompression_bomb"),
    "dicom 100,000 tiny frames": ("frames.dcm", lambda p: _dicom(p, 8, 8, 100_000, 64 * 100_000), "too_many_frames"),
    "dicom 65535x65535": ("wide.dcm", lambda p: _dicom(p, 65535, 65535, 1, 64), "decompression_bomb"),
    "png 100000x100000": ("wide.png", lambda p: _png_header(p, 100_000, 100_000), "decompression_bomb"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_a_reject_at_bounded_memory(tmp_path, name):
    filename, make, reason = HOSTILE[name]
    root = tmp_path / "src" / "cls"
    root.mkdir(parents=True)
    make(root / filename)
    write_image(root / "fine.png", seed=1)  # the source goes on around it
    got = _ingest(tmp_path / "src", tmp_path / "out", "class_folders", 'levels=["label"]')
    assert got["exit"] == 0, got["output"]
    rejects = pl.read_parquet(str(tmp_path / "out" / "index" / "rejects" / "*.parquet"))
    assert rejects.select("original_uri", "reason").rows() == [(f"cls/{filename}", reason)]
    assert pl.read_parquet(str(tmp_path / "out" / "index" / "images" / "*.parquet")).height == 1
    print(f"{name}: peak {got['peak'] / 1024**2:.0f} MiB")
    assert got["peak"] < GIB, got["peak"]


@pytest.mark.slow
def test_a_50_mb_caption_is_a_reject_and_never_reaches_a_shard(tmp_path):
    root = tmp_path / "src"
    write_image(root / "a.png", seed=1)
    write_image(root / "b.png", seed=2)
    (root / "captions.jsonl").write_text(
        json.dumps({"image": "a.png", "caption": "x" * 50_000_000})
        + "\n"
        + json.dumps({"image": "b.png", "caption": "ok"})
    )
    got = _ingest(root, tmp_path / "out", "image_text")
    assert got["exit"] == 0, got["output"]
    rejects = pl.read_parquet(str(tmp_path / "out" / "index" / "rejects" / "*.parquet"))
    assert rejects["reason"].to_list() == ["text_too_long"]
    texts = pl.read_parquet(str(tmp_path / "out" / "index" / "annotations" / "*.parquet"))["text"].to_list()
    assert texts == ["ok"]
    print(f"50 MB caption: peak {got['peak'] / 1024**2:.0f} MiB")
    assert got["peak"] < GIB


def test_a_card_can_lower_the_limits(tmp_path):
    from curator.errors import ReadError
    from curator.readers import Limits, ReadOptions
    from curator.readers.dicom import read_dicom

    path = tmp_path / "x.dcm"
    _dicom(path, 8, 8, 10, 640)
    assert len(read_dicom(path, ReadOptions())) == 10
    with pytest.raises(ReadError, match="10 frames declared"):
        read_dicom(path, ReadOptions(limits=Limits(max_frames=5)))
