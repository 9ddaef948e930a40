"""Each DICOM header is parsed once: the plan's header pass, whose digest the unit's read reuses.

A read through the digest must give exactly what a read of the whole file gives, for
every file pydicom ships (palette, YBR, enhanced multi-frame, LUTs, big endian,
compressed syntaxes, DICOMDIR, damaged files) and for built ones (functional groups,
a cine loop); and it must not parse the header again.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest
from dicom_fixtures import PYDICOM_FILES, functional_group, make_dicom
from pydicom.sequence import Sequence

from curator.errors import ReadError
from curator.readers import FrameStream, ReadOptions, read
from curator.readers.dicom import scan_header

SHIPPED = sorted(p for p in PYDICOM_FILES.iterdir() if p.is_file())


def _outcome(path, options, data):
    """Every frame's pixels and facts, or the reject; lazily read cine loops iterated."""
    try:
        frames = read(path, options, fmt="dicom", data=data)
        frames = list(frames) if isinstance(frames, FrameStream) else frames
    except ReadError as exc:
        return ("reject", exc.reason, exc.message)
    return [
        (f.pixels.dtype.str, f.pixels.shape, f.pixels.tobytes(), f.index, f.meta, f.transform, f.pixel_spacing)
        + (f.time_s, f.identity.get("patient"), f.identity.get("study"))
        for f in frames
    ]


def _both(path, options=None):
    options = options or ReadOptions(ct_window=(40.0, 400.0))
    data = path.read_bytes()
    header = scan_header(path).for_read()
    known = dataclasses.replace(options, known_headers={path: header})
    return header, _outcome(path, options, data), _outcome(path, known, data)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_read_through_the_digest_equals_a_whole_file_read(path):
    header, whole, digest = _both(path)
    assert digest == whole


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_most_shipped_files_are_read_through_their_digest():
    """The equality above is not the fallback comparing with itself: the digest is used."""
    used = [p for p in SHIPPED if (h := scan_header(p)).digest is not None and h.dataset(p.read_bytes()) is not None]
    with_pixels = []
    for p in SHIPPED:
        try:
            ds = pydicom.dcmread(p, force=True)
        except Exception:  # noqa: BLE001 - a damaged file: not counted
            continue
        if ds.preamble is not None and "PixelData" in ds:
            with_pixels.append(p)
    assert len(used) >= 0.9 * len(with_pixels) > 30


def test_functional_groups_and_cine_through_the_digest(tmp_path):
    volume = make_dicom(
        tmp_path / "enhanced.dcm",
        np.arange(2 * 16 * 16, dtype=np.int16).reshape(2, 16, 16),
        PerFrameFunctionalGroupsSequence=Sequence(
            [functional_group(1.0, -200.0, 0.0, 201.0), functional_group(2.0, 0.0, 400.0, 401.0)]
        ),
    )
    frames = np.zeros((30, 16, 16), np.uint16)
    for i in range(30):
        frames[i, i % 16, :] = 1000
    cine = make_dicom(tmp_path / "cine.dcm", frames, modality="US", FrameTime=100.0)
    for path in (volume, cine):
        header, whole, digest = _both(path, ReadOptions())
        assert header.dataset(path.read_bytes()) is not None
        assert digest == whole and len(whole) >= 2


def test_the_digest_holds_no_identifier(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", np.ones((8, 8), np.int16), WindowCenter=40, WindowWidth=400)
    header = scan_header(path)
    assert header.identity["patient"] == "PAT-SECRET-0042"
    for secret in (b"PAT-SECRET-0042", b"Doe^Jane", b"Secret General", b"19450704", b"20190321"):
        assert secret not in header.digest
    # what a unit receives keeps only the keyed fields, not the other identifiers
    assert set(header.for_read().identity) <= {"patient", "study"}


def test_a_file_changed_since_the_plan_is_parsed_whole(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", np.full((8, 8), 100, np.int16), WindowCenter=40, WindowWidth=400)
    header = scan_header(path).for_read()
    make_dicom(path, np.full((8, 8), 100, np.int16), WindowCenter=100, WindowWidth=50)  # new header, same name
    data = path.read_bytes()
    assert header.dataset(data) is None
    frames = read(path, ReadOptions(known_headers={path: header}), fmt="dicom", data=data)
    assert frames[0].transform["window"]["centre"] == 100.0


def test_series_and_slice_position_come_from_the_same_parse(tmp_path):
    path = make_dicom(
        tmp_path / "a.dcm",
        np.ones((8, 8), np.int16),
        SeriesInstanceUID="1.2.3.4",
        ImagePositionPatient=[0.0, 0.0, 12.5],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
    )
    header = scan_header(path)
    assert (header.series_uid, header.slice_position) == ("1.2.3.4", 12.5)
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("not a DICOM file")
    assert scan_header(not_dicom).digest is None and scan_header(not_dicom).identity == {}
