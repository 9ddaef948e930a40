"""DICOM through pydicom, in the standard's order.

decode -> modality LUT (rescale slope/intercept) -> VOI LUT or window -> MONOCHROME1
inversion -> float [0, 1]. Quantisation to the output depth happens in imaging.
Only a short allow-list of non-identifying attributes leaves this module in
``Frame.meta``; PatientID and StudyInstanceUID leave in ``Frame.identity`` to be
hashed by the adapter base.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from curator.errors import ReadError
from curator.readers import Frame, ReadOptions, percentile_to_unit, window_to_unit

# Attributes copied into the index: acquisition facts, nothing that identifies a person.
SAFE_ATTRIBUTES = (
    "Modality",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsStored",
    "SamplesPerPixel",
)


def _decoder_available(ts) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return get_decoder(ts).is_available
    except (NotImplementedError, ValueError, KeyError):
        return False


def read_dicom(path: Path, options: ReadOptions) -> list[Frame]:
    if not is_dicom(path):
        raise ReadError("not_dicom", "no DICM preamble")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError) as exc:
        raise ReadError("corrupt", f"cannot parse DICOM: {exc}") from None
    name = ds.get("PatientName")
    identity = {
        "patient": _plain(ds.get("PatientID")),
        "study": _plain(ds.get("StudyInstanceUID")),
        # used only to redact these strings from file paths, never stored
        "names": [str(x) for x in (getattr(name, "family_name", None), getattr(name, "given_name", None)) if x],
    }
    if "PixelData" not in ds:
        raise ReadError("no_pixels", f"no Pixel Data (SOP class {ds.get('SOPClassUID', 'unknown')})", identity)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and ts.is_compressed and not _decoder_available(ts):
        raise ReadError("undecodable_syntax", f"no decoder installed for {ts.name} ({ts})", identity)
    try:
        with _quiet_pydicom():
            arr = ds.pixel_array
    except (ValueError, EOFError) as exc:
        text = str(exc).lower()
        reason = "truncated" if any(w in text for w in ("less than expected", "length", "short")) else "corrupt"
        raise ReadError(reason, f"pixel data: {exc}", identity) from None
    except (RuntimeError, NotImplementedError) as exc:
        raise ReadError("undecodable_syntax", f"{getattr(ts, 'name', ts)}: {exc}", identity) from None

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = [arr] if nframes == 1 else list(arr)
    meta = {k: _plain(ds.get(k)) for k in SAFE_ATTRIBUTES if k in ds}
    meta["TransferSyntax"] = getattr(ts, "name", None)
    meta["format"] = "dicom"
    spacing = ds.get("PixelSpacing")
    spacing = (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None

    out = []
    for i, frame in enumerate(frames):
        pixels, transform = _display(frame, ds, photometric, spp, options, i if nframes > 1 else 0)
        out.append(
            Frame(
                pixels=pixels,
                index=i if nframes > 1 else None,
                meta=meta,
                transform=transform,
                identity=identity,
                pixel_spacing=spacing,
            )
        )
    return out


def _display(frame, ds, photometric, spp, options, index) -> tuple[np.ndarray, dict]:
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        scale = 65535.0 if rgb.max() > 255 else 255.0
        return (rgb.astype(np.float32) / scale), {"colour": "palette LUT applied"}
    if spp == 3:
        # pydicom converts YBR to RGB when decoding (as_rgb default)
        bits = int(ds.get("BitsStored", 8) or 8)
        return frame.astype(np.float32) / float(2**bits - 1), {"colour": f"{photometric} as RGB"}

    transform: dict = {}
    values = apply_modality_lut(frame, ds).astype(np.float32)
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        transform["modality_lut"] = "applied"
    modality = str(ds.get("Modality", ""))
    if modality == "CT" and options.ct_window:
        c, w = options.ct_window
        unit = window_to_unit(values, c, w)
        transform["window"] = {"centre": c, "width": w, "from": "card"}
    elif "VOILUTSequence" in ds:
        lut_out = apply_voi_lut(values, ds, index=0).astype(np.float32)
        unit = _minmax(lut_out)
        transform["window"] = {"from": "VOI LUT sequence"}
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        c = float(_first(ds.WindowCenter))
        w = float(_first(ds.WindowWidth))
        unit = window_to_unit(values, c, w)
        transform["window"] = {"centre": c, "width": w, "from": "header"}
    else:
        unit, (lo, hi) = percentile_to_unit(values)
        transform["window"] = {"low": lo, "high": hi, "from": "percentile 0.5-99.5"}
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
        transform["inverted"] = "MONOCHROME1"
    return unit, transform


@contextlib.contextmanager
def _quiet_pydicom():
    """pydicom logs a traceback for every plugin that fails; we turn the failure into a reject instead."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.zeros_like(a) if hi <= lo else ((a - lo) / (hi - lo)).astype(np.float32)


def _first(v):
    return v[0] if isinstance(v, pydicom.multival.MultiValue) else v


def _plain(v):
    if v is None:
        return None
    if isinstance(v, pydicom.multival.MultiValue):
        return [_plain(x) for x in v]
    if isinstance(v, (int, float, str)):
        return v
    return str(v)
