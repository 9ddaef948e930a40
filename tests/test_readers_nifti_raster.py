"""NIfTI and raster readers plus the output image policy, on nibabel's shipped files and generated ones."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from curator.errors import ReadError
from curator.imaging import normalise
from curator.readers import Frame, ReadOptions, read
from curator.registry import ImagePolicy
from curator.schema import REASONS

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def _nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0), affine=None, **header) -> Path:
    affine = np.diag([*zooms, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


# -- NIfTI ---------------------------------------------------------------------------
def test_every_nibabel_file_yields_slices_or_a_reason():
    files = sorted(p for p in NIBABEL_DATA.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    assert len(files) >= 5
    ok = 0
    for path in files:
        try:
            frames = read(path, ReadOptions(), fmt="nifti")
        except ReadError as exc:
            assert exc.reason in REASONS, path.name
            continue
        ok += 1
        assert frames and all(f.plane == "axial" and f.pixels.dtype == np.float32 for f in frames)
        assert all(0 <= f.pixels.min() and f.pixels.max() <= 1 for f in frames)
    assert ok >= 5


def test_radiological_display_and_canonical_orientation(tmp_path):
    data = np.zeros((8, 6, 4), np.float32)
    data[7, 0, 2] = 100  # patient's far left (x high in RAS), posterior (y low)
    data[0, 5, 2] = 50  # patient's far right, anterior
    ras = _nifti(tmp_path / "ras.nii.gz", data)
    frames = read(ras, ReadOptions(), fmt="nifti")
    sl = frames[2].pixels
    assert sl.shape == (6, 8)  # rows = anterior->posterior, columns = viewer left->right
    assert np.unravel_index(np.argmax(sl), sl.shape) == (5, 7)  # left shows on viewer's right, posterior at bottom
    # the same anatomy stored LPS (x and y flipped) reads back identically
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:3, 3] = [7, 5, 0]
    lps = _nifti(tmp_path / "lps.nii.gz", data[::-1, ::-1, :].copy(), affine=lps_affine)
    np.testing.assert_array_equal(read(lps, ReadOptions(), fmt="nifti")[2].pixels, sl)


def test_coronal_and_sagittal_display(tmp_path):
    data = np.zeros((8, 6, 4), np.float32)
    data[0, 3, 3] = 100  # patient's right, superior
    data[4, 5, 0] = 50  # anterior, inferior
    path = _nifti(tmp_path / "v.nii.gz", data)
    coronal = read(path, ReadOptions(plane="coronal"), fmt="nifti")[3].pixels
    assert coronal.shape == (4, 8) and np.unravel_index(np.argmax(coronal), coronal.shape) == (0, 0)  # top, viewer left
    sagittal = read(path, ReadOptions(plane="sagittal"), fmt="nifti")[4].pixels
    assert sagittal.shape == (4, 6) and np.unravel_index(np.argmax(sagittal), sagittal.shape) == (3, 0)  # anterior left


def test_anisotropic_voxels_keep_physical_aspect(tmp_path):
    rng = np.random.default_rng(0)
    path = _nifti(tmp_path / "aniso.nii", rng.random((20, 16, 5)).astype(np.float32), zooms=(1.0, 1.0, 4.0))
    frames = read(path, ReadOptions(plane="coronal"), fmt="nifti")
    assert len(frames) == 16 and frames[0].pixels.shape == (5, 20)
    enc = normalise(frames[0], ImagePolicy(max_side=None))
    assert (enc.width, enc.height) == (20, 20)  # 5 slices x 4 mm = 20 mm tall, 20 x 1 mm wide
    assert json.loads(json.dumps(enc.transform))["aspect"]["pixel_spacing_mm"] == [4.0, 1.0]


def test_scl_slope_and_ct_window_and_4d_rule(tmp_path):
    data = np.zeros((4, 4, 2, 3), np.int16)
    data[..., 0] = 10  # t=0: stored 10 -> 2*10 - 1000 = -980 HU
    data[0, 0, :, 0] = 520  # -> 40 HU, the window centre
    data[..., 1:] = 30000  # later timepoints must not be used
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.0, -1000.0)
    path = tmp_path / "ct4d.nii.gz"
    nib.save(img, str(path))
    frames = read(path, ReadOptions(ct_window=(40.0, 400.0)), fmt="nifti")
    assert len(frames) == 2
    values = sorted(set(np.round(frames[0].pixels.ravel(), 4)))
    assert values == [0.0, 0.5]


def test_truncated_nifti_gz_is_a_reject(tmp_path):
    full = _nifti(tmp_path / "full.nii.gz", np.random.default_rng(1).random((32, 32, 16)).astype(np.float32))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    nib.load(str(cut))  # the header alone loads fine: that is the trap
    with pytest.raises(ReadError) as err:
        read(cut, ReadOptions(), fmt="nifti")
    assert err.value.reason == "truncated"


def test_nifti_free_text_never_leaves_the_reader(tmp_path):
    path = _nifti(
        tmp_path / "t.nii", np.arange(64, dtype=np.float32).reshape(4, 4, 4), descrip=b"Smith John 1961-02-03"
    )
    for f in read(path, ReadOptions(), fmt="nifti"):
        assert "Smith" not in repr((f.meta, f.transform, f.identity))


# -- raster --------------------------------------------------------------------------
def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("bits", [8, 16])
def test_png_values_are_exact(tmp_path, bits):
    rng = np.random.default_rng(bits)
    arr = rng.integers(0, 2**bits, (17, 23), dtype=np.uint16 if bits == 16 else np.uint8)
    path = _save(Image.fromarray(arr), tmp_path / "x.png")
    [frame] = read(path)
    np.testing.assert_array_equal(frame.pixels, arr)
    enc = normalise(frame, ImagePolicy(bit_depth=bits, max_side=None))
    back = np.asarray(Image.open(io.BytesIO(enc.data)))
    np.testing.assert_array_equal(back.astype(arr.dtype), arr)
    assert enc.bit_depth == bits and "resize" not in enc.transform


def test_alpha_composited_on_black(tmp_path):
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 0] = 200
    la[:2, :, 1] = 255  # top half opaque, bottom half transparent
    [frame] = read(_save(Image.fromarray(la, "LA"), tmp_path / "la.png"))
    assert frame.pixels.shape == (4, 4) and frame.pixels[0, 0] == 200 and frame.pixels[3, 0] == 0
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 100
    rgba[:, :2, 3] = 255
    [frame] = read(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    assert (
        frame.pixels.shape == (4, 4, 3) and tuple(frame.pixels[0, 0]) == (0, 100, 0) and frame.pixels[0, 3].max() == 0
    )


def test_exif_orientation_applied(tmp_path):
    img = Image.new("L", (30, 10), 0)
    img.paste(255, (0, 0, 5, 10))  # bright strip on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(img, tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    [frame] = read(path)
    assert frame.pixels.shape == (30, 10)
    assert frame.pixels[:5].mean() > 200 and frame.pixels[-5:].mean() < 50  # the strip is now on top


def test_tiff_16_bit(tmp_path):
    arr = np.arange(0, 60000, 1000, dtype=np.uint16).reshape(6, 10)
    [frame] = read(_save(Image.fromarray(arr), tmp_path / "x.tif"))
    np.testing.assert_array_equal(frame.pixels, arr)


def test_truncated_jpeg_is_a_reject(tmp_path):
    rng = np.random.default_rng(3)
    full = _save(Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)), tmp_path / "f.jpg", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:-600])
    Image.open(cut).verify()  # passes: verify() does not decode
    with pytest.raises(ReadError) as err:
        read(cut)
    assert err.value.reason == "truncated"


def test_decompression_bomb_rejected_before_decoding(tmp_path):
    """A tiny PNG whose header claims 100000 x 100000 pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(ReadError) as err:
        read(path)
    assert err.value.reason == "decompression_bomb"


def test_garbage_with_image_name_is_corrupt(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(gzip.compress(b"not an image"))
    with pytest.raises(ReadError) as err:
        read(path)
    assert err.value.reason == "corrupt"


# -- output policy -------------------------------------------------------------------
def test_policy_resize_and_jpeg_recorded():
    frame = Frame(pixels=np.linspace(0, 1, 300 * 200, dtype=np.float32).reshape(300, 200))
    enc = normalise(frame, ImagePolicy(format="jpeg", jpeg_quality=80, max_side=150))
    assert (enc.width, enc.height) == (100, 150)
    assert enc.transform["resize"] == {"from": [200, 300], "to": [100, 150], "filter": "lanczos"}
    assert enc.transform["encode"] == {"format": "jpeg", "bit_depth": 8, "quality": 80}
    assert Image.open(io.BytesIO(enc.data)).format == "JPEG"
