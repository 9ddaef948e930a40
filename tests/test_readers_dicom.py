"""The DICOM reader: the standard's pixel pipeline on files built in code, and every file pydicom ships."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_fixtures import CHARSET_FILES, PYDICOM_FILES, functional_group, make_dicom
from pydicom.sequence import Sequence

from curator.errors import ReadError
from curator.readers import ReadOptions, read
from curator.readers.dicom import voi_window
from curator.schema import REASONS

STORED = np.array([[0, 500, 1000, 1064, 1500, 2000]], dtype=np.uint16)


def _linear(x, c, w):
    """PS3.3 C.11.2.1.2.1 (LINEAR), output scaled to [0, 1]."""
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)


def test_rescale_then_header_window(tmp_path):
    path = make_dicom(
        tmp_path / "ct.dcm", STORED, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    [frame] = read(path, ReadOptions(), fmt="dicom")
    hu = STORED.astype(float) - 1024
    np.testing.assert_allclose(frame.pixels, _linear(hu, 40, 400), atol=1e-6)
    assert frame.transform["window"]["from"] == "header"
    assert frame.transform["modality_lut"] == {"slope": 1.0, "intercept": -1024.0}


def test_card_window_overrides_header_for_ct(tmp_path):
    path = make_dicom(
        tmp_path / "ct.dcm", STORED, RescaleIntercept=-1024, RescaleSlope=1, WindowCenter=0, WindowWidth=1
    )
    [frame] = read(path, ReadOptions(ct_window=(-600.0, 1500.0)), fmt="dicom")
    hu = STORED.astype(float) - 1024
    np.testing.assert_allclose(frame.pixels, np.clip((hu - (-600 - 750)) / 1500, 0, 1), atol=1e-6)
    assert frame.transform["window"]["from"] == "card"


def test_monochrome1_is_inverted_after_windowing(tmp_path):
    path = make_dicom(
        tmp_path / "cr.dcm", STORED, modality="CR", photometric="MONOCHROME1", WindowCenter=1000, WindowWidth=1001
    )
    [frame] = read(path, ReadOptions(), fmt="dicom")
    expected = 1.0 - _linear(STORED.astype(float), 1000, 1001)
    np.testing.assert_allclose(frame.pixels, expected, atol=1e-6)
    # stored 0 is the brightest pixel in MONOCHROME1, stored 2000 the darkest
    assert frame.pixels[0, 0] == 1.0 and frame.pixels[0, -1] == 0.0
    assert frame.transform["inverted"] == "MONOCHROME1"


def test_voi_lut_functions():
    x = np.array([-100.0, 40.0, 180.0])
    np.testing.assert_allclose(voi_window(x, 40, 200, "LINEAR_EXACT"), [0.0, 0.5, 1.0])
    sig = voi_window(x, 40, 200, "SIGMOID")
    assert sig[1] == pytest.approx(0.5) and 0 < sig[0] < 0.5 < sig[2] < 1


def test_voi_lut_sequence(tmp_path):
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.LUTDescriptor = [4, 1000, 8]
    lut.LUTData = np.array([0, 85, 170, 255], "<u2").tobytes()
    path = make_dicom(
        tmp_path / "lut.dcm",
        np.array([[999, 1000, 1001, 1002, 1003, 5000]], dtype=np.uint16),
        modality="MR",
        VOILUTSequence=Sequence([lut]),
    )
    [frame] = read(path, ReadOptions(), fmt="dicom")
    np.testing.assert_allclose(frame.pixels, [[0, 0, 85 / 255, 170 / 255, 1, 1]], atol=1e-6)


def test_enhanced_multiframe_per_frame_groups(tmp_path):
    """Frame 0 and frame 1 carry different rescale and window in their functional groups."""
    stored = np.array([[[100, 200, 300]], [[100, 200, 300]]], dtype=np.uint16)
    path = make_dicom(
        tmp_path / "enhanced.dcm",
        stored,
        PerFrameFunctionalGroupsSequence=Sequence(
            [functional_group(1.0, -200.0, 0.0, 201.0), functional_group(2.0, 0.0, 400.0, 401.0)]
        ),
    )
    frames = read(path, ReadOptions(), fmt="dicom")
    assert [f.index for f in frames] == [0, 1]
    np.testing.assert_allclose(frames[0].pixels, _linear(np.array([[-100.0, 0.0, 100.0]]), 0, 201), atol=1e-6)
    np.testing.assert_allclose(frames[1].pixels, _linear(np.array([[200.0, 400.0, 600.0]]), 400, 401), atol=1e-6)
    assert frames[1].transform["modality_lut"] == {"slope": 2.0, "intercept": 0.0}


def test_burned_in_annotation_policy(tmp_path):
    path = make_dicom(tmp_path / "us.dcm", STORED, modality="US", BurnedInAnnotation="YES")
    with pytest.raises(ReadError) as err:
        read(path, ReadOptions(), fmt="dicom")
    assert err.value.reason == "burned_in_annotation"
    assert len(read(path, ReadOptions(burned_in="allow"), fmt="dicom")) == 1


def test_pixel_spacing_and_identity_kept_apart(tmp_path):
    path = make_dicom(tmp_path / "dx.dcm", STORED, modality="DX", ImagerPixelSpacing=[0.2, 0.1])
    [frame] = read(path, ReadOptions(), fmt="dicom")
    assert frame.pixel_spacing == (0.2, 0.1)
    assert frame.identity["patient"] == "PAT-SECRET-0042"
    flat = repr(frame.meta) + repr(frame.transform)
    assert "PAT-SECRET" not in flat and "Doe" not in flat and "19450704" not in flat


def test_non_dicom_with_dcm_name_is_rejected(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"\x89PNG\r\n" + b"\x00" * 200)
    with pytest.raises(ReadError) as err:
        read(path, ReadOptions(), fmt="dicom")
    assert err.value.reason == "not_dicom"


def test_undecodable_syntax_names_it(tmp_path):
    """A syntax no installed plugin decodes (retired JPEG Extended, processes 3 and 5) is rejected naming it."""
    ds = pydicom.dcmread(PYDICOM_FILES / "JPGExtended.dcm")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.52"
    ds.save_as(tmp_path / "p35.dcm")
    with pytest.raises(ReadError) as err:
        read(tmp_path / "p35.dcm", ReadOptions(), fmt="dicom")
    assert err.value.reason == "undecodable_syntax"
    assert "JPEG Extended" in err.value.message and "1.2.840.10008.1.2.4.52" in err.value.message


@pytest.mark.parametrize(
    "name,shape",
    [
        ("examples_palette.dcm", (350, 800, 3)),
        ("examples_ybr_color.dcm", (240, 320, 3)),
        ("SC_rgb_jpeg_dcmtk.dcm", (100, 100, 3)),
        ("MR_small_jpeg_ls_lossless.dcm", (64, 64)),
        ("MR_small_RLE.dcm", (64, 64)),
        ("MR_small_jp2klossless.dcm", (64, 64)),
        ("image_dfl.dcm", (512, 512)),
    ],
)
def test_colour_and_compressed_syntaxes_decode(name, shape):
    frames = list(read(PYDICOM_FILES / name, ReadOptions(), fmt="dicom"))
    assert frames[0].pixels.shape == shape
    assert 0.0 <= float(frames[0].pixels.min()) and float(frames[0].pixels.max()) <= 1.0
    assert float(frames[0].pixels.std()) > 0.01


def test_lossless_syntaxes_agree_with_uncompressed():
    """The same MR image stored uncompressed, RLE, JPEG-LS and JPEG 2000 lossless gives identical pixels."""
    ref = read(PYDICOM_FILES / "MR_small.dcm", ReadOptions(), fmt="dicom")[0].pixels
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        np.testing.assert_array_equal(read(PYDICOM_FILES / name, ReadOptions(), fmt="dicom")[0].pixels, ref)


def _every_shipped_file():
    return sorted(p for folder in (PYDICOM_FILES, CHARSET_FILES) for p in folder.rglob("*") if p.is_file())


def test_every_pydicom_file_yields_images_or_a_reason():
    files = _every_shipped_file()
    assert len(files) > 80
    outcomes: dict[str, int] = {}
    for path in files:
        try:
            frames = list(read(path, ReadOptions(), fmt="dicom"))
        except ReadError as exc:
            assert exc.reason in REASONS, (path.name, exc.reason)
            outcomes[exc.reason] = outcomes.get(exc.reason, 0) + 1
            continue
        assert frames, path.name
        for f in frames:
            assert f.pixels.ndim in (2, 3) and f.pixels.dtype == np.float32, path.name
            assert np.isfinite(f.pixels).all() and f.pixels.min() >= 0 and f.pixels.max() <= 1, path.name
        outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert outcomes["ok"] >= 80
    # every JPEG-family file decodes now (imagecodecs behind pydicom's plugins): no "no decoder" left
    assert {"no_pixels", "not_dicom", "truncated", "corrupt"} <= set(outcomes)
    assert "undecodable_syntax" not in outcomes


def test_ybr_colour_matches_the_rgb_original():
    """The same picture stored RGB and YBR_FULL / YBR_FULL_422 (JPEG baseline) decodes to the same colours."""
    ref = read(PYDICOM_FILES / "SC_rgb_dcmtk_+eb+cr.dcm", ReadOptions(), fmt="dicom")[0].pixels
    assert tuple(ref[5, 5]) == (1.0, 0.0, 0.0)
    for name in ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_ybr_full_422_uncompressed.dcm"):
        pixels = read(PYDICOM_FILES / name, ReadOptions(), fmt="dicom")[0].pixels
        assert float(np.abs(pixels - ref).mean()) < 0.02, name


def test_pixel_padding_is_black_and_left_out_of_the_percentile_window(tmp_path):
    stored = np.array([[0, 0, 100, 200, 300, 400]], dtype=np.uint16)
    path = make_dicom(tmp_path / "pad.dcm", stored, modality="MR", photometric="MONOCHROME1", PixelPaddingValue=0)
    [frame] = read(path, ReadOptions(), fmt="dicom")
    assert frame.pixels[0, 0] == 0.0 and frame.pixels[0, 1] == 0.0  # black even though MONOCHROME1
    assert frame.transform["window"]["low"] >= 100  # the window ignored the padding
    assert frame.pixels[0, 2] == 1.0  # lowest real value: brightest in MONOCHROME1


def test_jpeg_lossless_decodes_exactly(tmp_path):
    """JPEG Lossless (process 14, and its selection value 1): made with GDCM's encoder, read through pydicom."""
    gdcm = pytest.importorskip("gdcm")
    ref = read(PYDICOM_FILES / "MR_small.dcm", ReadOptions(), fmt="dicom")[0].pixels
    for syntax in (gdcm.TransferSyntax.JPEGLosslessProcess14_1, gdcm.TransferSyntax.JPEGLosslessProcess14):
        reader = gdcm.ImageReader()
        reader.SetFileName(str(PYDICOM_FILES / "MR_small.dcm"))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        out = tmp_path / f"ll_{syntax}.dcm"
        writer.SetFileName(str(out))
        assert writer.Write()
        [frame] = read(out, ReadOptions(), fmt="dicom")
        assert frame.meta["TransferSyntax"].startswith("JPEG Lossless")
        np.testing.assert_array_equal(frame.pixels, ref)


def test_huge_header_geometry_rejected_before_decoding(tmp_path):
    path = make_dicom(tmp_path / "big.dcm", STORED)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 30000, 30000, 2000
    ds.save_as(path)
    with pytest.raises(ReadError) as err:
        read(path, ReadOptions(), fmt="dicom")
    assert err.value.reason == "decompression_bomb"
