"""The imagecodecs decoder plugin, checked against every JPEG-family file pydicom ships."""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import numpy as np
import pydicom
import pytest
from dicom_fixtures import CHARSET_FILES, PYDICOM_FILES

from curator.errors import ReadError
from curator.readers import ReadOptions, read
from curator.readers.dicom_codecs import _CODEC, LABEL, register

register()  # what importing curator.readers.dicom does; these tests call pydicom directly too


def _dataset(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _jpeg_family_files():
    out = []
    for path in sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file()):
        try:
            ds = _dataset(path)
            ts = ds.file_meta.TransferSyntaxUID
        except Exception:  # noqa: BLE001 - not DICOM, or no file meta: not this test's business
            continue
        if ts in _CODEC and "PixelData" in ds:
            out.append(path)
    return out


JPEG_FAMILY = _jpeg_family_files()


def test_twelve_bit_jpeg_extended_decodes_to_pydicoms_reference_values():
    """pydicom's own reference values (tests/pixels/pixels_reference.py, JPGE_16_12_1_0_1F_M2 and JPGE_BAD)."""
    for name in ("JPGExtended.dcm", "JPEG-lossy.dcm"):
        ds = _dataset(PYDICOM_FILES / name)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51" and ds.BitsStored == 12
        ds.pixel_array_options(decoding_plugin=LABEL)
        arr = ds.pixel_array
        assert arr.dtype == np.uint16 and arr.shape == (1024, 256)
        assert arr[420, 140] == 244 and arr[230, 120] == 95
        [frame] = read(PYDICOM_FILES / name, ReadOptions(), fmt="dicom")
        assert frame.meta["BitsStored"] == 12 and float(frame.pixels.std()) > 0.01


@pytest.mark.parametrize("path", JPEG_FAMILY, ids=[p.name for p in JPEG_FAMILY])
def test_imagecodecs_agrees_with_pydicoms_plugins(path):
    """JPEG baseline, 12-bit extended, lossless SV1, JPEG-LS (lossless and near-lossless), JPEG 2000 and
    its lossless variant: the imagecodecs plugin alone gives the same samples as the default chain."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    ours = _dataset(path)
    ours.pixel_array_options(decoding_plugin=LABEL)
    if path.name == "JPEG2000-embedded-sequence-delimiter.dcm":
        # a damaged codestream: every decoder refuses it, and the reader says so as "corrupt", not "no decoder"
        with pytest.raises(RuntimeError):
            _ = ours.pixel_array
        with pytest.raises(ReadError) as err:
            read(path, ReadOptions(), fmt="dicom")
        assert err.value.reason == "corrupt"
        return
    got = ours.pixel_array
    ref = _dataset(path).pixel_array
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_covers_every_jpeg_family_syntax_pydicom_ships():
    syntaxes = {str(_dataset(p).file_meta.TransferSyntaxUID) for p in JPEG_FAMILY}
    assert {
        "1.2.840.10008.1.2.4.50",  # baseline
        "1.2.840.10008.1.2.4.51",  # extended (12-bit)
        "1.2.840.10008.1.2.4.70",  # lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
    } <= syntaxes


def test_every_pydicom_file_ends_indexed_or_with_a_true_reason():
    """The census the README reports: all of pydicom's data folder, reason by reason."""
    files = sorted(p for folder in (PYDICOM_FILES, CHARSET_FILES) for p in folder.rglob("*") if p.is_file())
    outcomes: Counter = Counter()
    named: dict[str, str] = {}
    for path in files:
        try:
            frames = list(read(path, ReadOptions(burned_in="allow"), fmt="dicom"))
            assert frames, path.name
            outcomes["indexed"] += 1
        except ReadError as exc:
            outcomes[exc.reason] += 1
            named[path.name] = exc.reason
    # the README's figures (pydicom is pinned); before the plugin: 100 indexed, 3 undecodable_syntax, 3 corrupt
    assert dict(outcomes) == {"indexed": 102, "no_pixels": 73, "not_dicom": 14, "corrupt": 4, "truncated": 1}
    assert named["JPEG2000-embedded-sequence-delimiter.dcm"] == "corrupt"  # damaged codestream
    assert named["MR_truncated.dcm"] == "truncated"
    assert named["nested_priv_SQ.dcm"] == "corrupt"  # pixel data without Bits Allocated
    assert named["rtplan.dcm"] == "no_pixels" and named["README.txt"] == "not_dicom"
    assert {"JPGExtended.dcm", "JPEG-lossy.dcm"}.isdisjoint(named)
