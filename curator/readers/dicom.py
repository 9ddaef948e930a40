"""DICOM through pydicom, in the standard's order (PS3.3 C.7.6.3, C.11.1, C.11.2).

Per frame: decode -> modality LUT (Modality LUT Sequence, else Rescale
Slope/Intercept) -> VOI (the card's CT window for CT, else the VOI LUT Sequence,
else Window Centre/Width with its VOI LUT Function, else the 0.5-99.5 percentile
range) -> MONOCHROME1 inversion *after* windowing -> float [0, 1]. Quantisation to
the output depth happens in :mod:`curator.imaging`.

Enhanced multi-frame objects (Enhanced CT/MR/XA, ...) keep rescale, window and
pixel spacing in the Per-Frame and Shared Functional Groups; pydicom's helpers
read only the top level, so :func:`frame_attributes` looks them up per frame
(per-frame group, then shared group, then top level).

Colour: RGB as stored; YBR_* converted to RGB by pydicom's decoders; PALETTE
COLOR through its LUTs, scaled by the LUT's own bit depth.

Burned-in annotation policy: a file whose BurnedInAnnotation is "YES" may show
patient names or dates in its pixels, which no header scrub removes, so it is
rejected ``burned_in_annotation`` unless the card sets ``image.burned_in = "allow"``
(for sources whose pixels were de-identified by their publisher).

Only a short allow-list of non-identifying attributes leaves this module in
``Frame.meta``; PatientID and StudyInstanceUID leave in ``Frame.identity`` to be
hashed by the adapter base, and the other PS3.15 Annex E identifiers (names,
dates, IDs, institutions, physicians) only to redact them from paths (:mod:`curator.phi`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.misc import is_dicom
from pydicom.pixels import apply_color_lut, apply_modality_lut

from curator.errors import ReadError
from curator.phi import dicom_identity
from curator.readers import (
    Frame,
    FrameStream,
    PartReject,
    ReadOptions,
    dicom_codecs,
    percentile_to_unit,
    slice_indices,
    window_to_unit,
)
from curator.readers.sampling import TimeSampler

# imagecodecs as the last-resort decoder of every JPEG-family syntax (12-bit JPEG Extended above all)
dicom_codecs.register()

# Attributes copied into the index: acquisition facts, nothing that identifies a person
# (none of them is in the PS3.15 Annex E basic profile).
SAFE_ATTRIBUTES = (
    "Modality",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsStored",
    "SamplesPerPixel",
    "NumberOfFrames",
)


# Everything of a header (before its Pixel Data) that the read uses: the pixel module, LUTs, windows,
# functional groups, spacing, cine timing. No identifier is among them (PS3.15 Annex E) but what
# an enhanced object's functional groups hold besides (frame acquisition times): the digest lives
# in memory only, as the learned identifiers a unit carries do, and never reaches a table.
# tests/test_readers_dicom_header.py checks that a read through the digest equals a read of the
# whole file for every file pydicom ships.
DISPLAY_ATTRIBUTES = (
    *SAFE_ATTRIBUTES,
    "SOPClassUID",
    "BitsAllocated",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "BurnedInAnnotation",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "ModalityLUTSequence",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PixelAspectRatio",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
    "FrameTimeVector",
    "FrameTime",
    "CineRate",
    *(f"{c}PaletteColorLookupTable{p}" for c in ("Red", "Green", "Blue", "Alpha") for p in ("Descriptor", "Data")),
    *(f"Segmented{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue")),
)

_DISPLAY_TAGS = frozenset(pydicom.datadict.tag_for_keyword(k) for k in DISPLAY_ATTRIBUTES)

# Functional group macros holding what a frame needs for display.
_GROUP_ATTRIBUTES = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
    "PixelMeasuresSequence": ("PixelSpacing",),
}

# Exceptions pydicom and its decoder plugins raise for damaged or unsupported pixel data.
_DECODE_ERRORS = (
    ValueError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    TypeError,
    IndexError,
    KeyError,
    OSError,
    AttributeError,
    struct.error,
)


def _decoder_available(ts) -> bool:
    try:
        from pydicom.pixels import get_decoder

        return get_decoder(ts).is_available
    except (NotImplementedError, ValueError, KeyError):
        return False


def read_dicom(
    path: Path, options: ReadOptions, data: bytes | None = None, header: DicomHeader | None = None
) -> list[Frame] | FrameStream:
    """A file's display-ready frames; ``header`` (:func:`scan_header`, with ``data``) spares the header parse."""
    # one quiet context for the whole read: entering one costs ~0.5 ms (warning filters, logger caches)
    with _quiet_pydicom():
        return _read_dicom(path, options, data, header)


def _read_dicom(
    path: Path, options: ReadOptions, data: bytes | None, header: DicomHeader | None
) -> list[Frame] | FrameStream:
    known = header.dataset(data) if header is not None and data is not None else None
    if known is not None:
        ds, identity = known, header.identity
    else:
        ds, identity = _parse(path, data, header)
    return _frames(ds, identity, options)


def _parse(path: Path, data: bytes | None, header: DicomHeader | None = None) -> tuple[Dataset, dict]:
    """The whole file through pydicom (no header from the plan, or one that no longer matches the file)."""
    # force=True would turn any file into a garbage dataset: check the preamble first.
    if not (is_dicom(path) if data is None else data[128:132] == b"DICM"):
        # the plan's header pass already read what such a file names; else read it now
        source = path if data is None else io.BytesIO(data)
        identity = header.identity if header is not None else header_identity(source)
        raise ReadError("not_dicom", "no DICM preamble", identity)
    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(path if data is None else io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError, struct.error) as exc:
        raise ReadError("corrupt", f"cannot parse DICOM: {exc}") from None
    return ds, _identity(ds)


def _frames(ds: Dataset, identity: dict, options: ReadOptions) -> list[Frame] | FrameStream:
    """From a parsed dataset to frames: the checks, then the volume path or the cine path."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown"))
        raise ReadError("no_pixels", f"no Pixel Data (SOP class {sop})", identity)
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and options.burned_in != "allow":
        raise ReadError("burned_in_annotation", "BurnedInAnnotation is YES and the card does not allow it", identity)
    nframes = int(ds.get("NumberOfFrames", 1) or 1) if str(ds.get("NumberOfFrames", "1")).strip().isdigit() else 1
    times = cine_times(ds, nframes) if nframes > 1 else None
    with _quiet_pydicom():
        _check_size(ds, identity, options, cine=times is not None)
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    ts_name = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
    if ts is not None and ts.is_compressed and not _decoder_available(ts):
        raise ReadError("undecodable_syntax", f"no decoder installed for {ts_name}", identity)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    meta = {k: _plain(ds.get(k)) for k in SAFE_ATTRIBUTES if k in ds}
    meta["TransferSyntax"] = getattr(ts, "name", None)
    meta["format"] = "dicom"
    if times is not None:
        # A cine loop (ultrasound, angiography) is a video: the time-series policy, not the slice policy.
        return _cine(ds, times, photometric, spp, meta, identity, options)
    try:
        with _quiet_pydicom():
            arr = ds.pixel_array
    except _DECODE_ERRORS as exc:
        raise _decode_error(exc, ts, identity) from None

    frames = list(arr) if nframes > 1 else [arr]
    # Multi-frame volumes (enhanced CT/MR) keep the card's frame step and range, the same
    # rule as NIfTI slicing.
    keep = set(slice_indices(nframes, options)) if nframes > 1 else {0}

    look = _Look(ds, photometric, spp, meta, identity, options)
    return [look.frame(frame, i, i if nframes > 1 else None) for i, frame in enumerate(frames) if i in keep]


@dataclass(frozen=True)
class _Look:
    """What every frame of one file shares on its way to display; ``frame`` is the one per-frame step."""

    ds: Dataset
    photometric: str
    spp: int
    meta: dict
    identity: dict
    options: ReadOptions

    def frame(self, pixels: np.ndarray, i: int, index: int | None, **extra) -> Frame:
        """Frame ``i``'s LUTs and window (its functional groups first), as a Frame named ``index``."""
        attrs = frame_attributes(self.ds, i)
        try:
            unit, transform = _display(pixels, self.ds, attrs, self.photometric, self.spp, self.options)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise ReadError("corrupt", f"frame {i}: cannot apply LUTs: {exc}", self.identity) from None
        return Frame(
            pixels=unit,
            index=index,
            meta=self.meta,
            transform=transform,
            identity=self.identity,
            pixel_spacing=_spacing(self.ds, attrs),
            **extra,
        )


def _decode_error(exc: Exception, ts, identity: dict) -> ReadError:
    """The true reason a decode failed: truncated data, a syntax nobody here decodes, or damage."""
    text = str(exc).lower()
    ts_name = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
    if any(w in text for w in ("less than expected", "shorter than", "insufficient", "end of file", "truncat")):
        return ReadError("truncated", f"pixel data: {exc}", identity)
    # Every installed plugin was tried (imagecodecs last): only a refusal of the syntax itself
    # means "no decoder"; a decoder that tried and failed means the data are damaged.
    if ts is not None and ts.is_compressed and ("not support" in text or "unsupported" in text):
        return ReadError("undecodable_syntax", f"{ts_name}: {exc}", identity)
    where = ts_name if ts is not None and ts.is_compressed else "pixel data"
    return ReadError("corrupt", f"{where}: {exc}", identity)


def cine_times(ds: Dataset, nframes: int) -> list[float] | None:
    """Each frame's time in seconds for a cine loop (Frame Time Vector, Frame Time, Cine Rate), else None."""
    try:
        if "FrameTimeVector" in ds and len(ds.FrameTimeVector) == nframes:
            steps = [float(x) / 1000.0 for x in ds.FrameTimeVector]
            return list(np.cumsum([0.0, *steps[1:]]))
        frame_ms = float(ds.get("FrameTime") or 0) or (1000.0 / float(ds.get("CineRate") or 0 or "inf"))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not frame_ms or not np.isfinite(frame_ms) or frame_ms <= 0:
        return None
    return [i * frame_ms / 1000.0 for i in range(nframes)]


def _cine(ds, times, photometric, spp, meta, identity, options) -> FrameStream:
    """Decode only the frames the time sampler picks, one at a time."""
    from pydicom.pixels import get_decoder

    period = times[1] - times[0] if len(times) > 1 else 0.0
    sampler = TimeSampler(options, times[-1] + period, frame_period=period)
    picked = [i for i, t in enumerate(times) if sampler.due(t)]
    ts = ds.file_meta.get("TransferSyntaxUID")
    look = _Look(ds, photometric, spp, meta, identity, options)

    def frames(stream: FrameStream):
        cine = {"fps": options.video_fps, "every_s": round(sampler.interval, 4)}
        done = 0
        try:
            with _quiet_pydicom():
                for i, (frame, _) in zip(picked, get_decoder(ts).iter_array(ds, indices=picked), strict=False):
                    done += 1
                    if sampler.full:
                        stream.skipped["frame_limit"] += len(picked) - done + 1
                        break
                    out = look.frame(frame, i, i, time_s=round(float(times[i]), 3))
                    if sampler.repeats(out.pixels):
                        stream.skipped["near_duplicate"] += 1
                        continue
                    out.transform = {**out.transform, "cine": cine}
                    yield out
        except _DECODE_ERRORS as exc:
            if not sampler.kept:
                raise _decode_error(exc, ts, identity) from None
            stream.part_rejects.append(
                PartReject("frames_lost", f"cine frames from {picked[done - 1]} on not decoded: {exc}")
            )

    return FrameStream(frames)


def _check_size(ds: Dataset, identity: dict, options: ReadOptions, cine: bool = False) -> None:
    """Refuse what the header declares would cost too much, before decoding a byte.

    Rows x Columns against ``max_pixels``; NumberOfFrames against ``max_frames``
    (100,000 tiny frames are 100,000 images); and the decoded bytes (every frame as
    stored, since pydicom decodes them at once, plus the kept frames as float32)
    against ``max_decoded_bytes``. A cine loop is decoded frame by frame, only the
    frames its time sampler keeps (at most ``max_frames_per_file``): its frame count is
    not capped, and only the kept frames count toward the bytes.
    """
    limits = options.limits
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        stored = max(1, (int(ds.get("BitsAllocated", 16) or 16) + 7) // 8)
    except (TypeError, ValueError) as exc:
        raise ReadError("corrupt", f"image geometry unreadable: {exc}", identity) from None
    if rows * cols > limits.max_pixels:
        raise ReadError(
            "decompression_bomb", f"{cols}x{rows} frames exceed the card's {limits.max_pixels} pixels", identity
        )
    if frames > limits.max_frames and not cine:
        raise ReadError("too_many_frames", f"{frames} frames declared (the card allows {limits.max_frames})", identity)
    if cine:
        kept = min(frames, options.max_frames_per_file or frames)
        declared = rows * cols * samples * kept * (stored + 4)
    else:
        kept = len(slice_indices(frames, options)) if frames > 1 else 1
        declared = rows * cols * samples * (frames * stored + kept * 4)
    if declared > limits.max_decoded_bytes:
        raise ReadError(
            "decompression_bomb",
            f"{frames} frame(s) of {cols}x{rows}x{samples} decode to {declared / 1024**2:.0f} MiB "
            f"(the card allows {limits.max_decoded_bytes / 1024**2:.0f} MiB)",
            identity,
        )


def frame_attributes(ds: Dataset, index: int) -> dict:
    """Rescale, window and spacing for one frame: per-frame group, then shared group, then top level."""
    found: dict = {}
    for groups_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(groups_name)
        if not groups:
            continue
        group = groups[index] if groups_name.startswith("PerFrame") and index < len(groups) else groups[0]
        for macro, names in _GROUP_ATTRIBUTES.items():
            seq = group.get(macro)
            if not seq:
                continue
            for name in names:
                if name not in found and name in seq[0]:
                    found[name] = seq[0][name].value
    for names in _GROUP_ATTRIBUTES.values():
        for name in names:
            if name not in found and name in ds:
                found[name] = ds[name].value
    return found


def _display(frame, ds, attrs, photometric, spp, options) -> tuple[np.ndarray, dict]:
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        desc = ds.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 16]
        top = float(2 ** int(desc[2]) - 1) if int(desc[2]) in (8, 16) else float(rgb.max() or 1)
        return np.clip(rgb.astype(np.float32) / top, 0, 1), {"colour": "palette LUT applied"}
    if spp == 3:
        # pydicom's decoders return YBR_* as RGB (as_rgb defaults to True)
        bits = int(ds.get("BitsStored", 8) or 8)
        return frame.astype(np.float32) / float(2**bits - 1), {"colour": f"{photometric} as RGB"}

    transform: dict = {}
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(frame, ds).astype(np.float32)
        transform["modality_lut"] = "Modality LUT Sequence"
    else:
        slope = float(attrs.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(attrs.get("RescaleIntercept", 0.0) or 0.0)
        values = frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if (slope, intercept) != (1.0, 0.0):
            transform["modality_lut"] = {"slope": slope, "intercept": intercept}

    modality = str(ds.get("Modality", ""))
    if modality == "CT" and options.ct_window:
        c, w = options.ct_window
        unit = window_to_unit(values, c, w)
        transform["window"] = {"centre": c, "width": w, "from": "card"}
    elif "VOILUTSequence" in ds:
        unit = _voi_lut(values, ds.VOILUTSequence[0])
        transform["window"] = {"from": "VOI LUT Sequence"}
    elif attrs.get("WindowCenter") is not None and attrs.get("WindowWidth") is not None:
        c, w = float(_first(attrs["WindowCenter"])), float(_first(attrs["WindowWidth"]))
        function = str(attrs.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        unit = voi_window(values, c, w, function)
        transform["window"] = {"centre": c, "width": w, "function": function, "from": "header"}
    else:
        pad = _padding(frame, ds)
        unit, (lo, hi) = percentile_to_unit(np.where(pad, np.nan, values) if pad is not None else values)
        transform["window"] = {"low": lo, "high": hi, "from": "percentile 0.5-99.5"}
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
        transform["inverted"] = "MONOCHROME1"
    pad = _padding(frame, ds)
    if pad is not None and pad.any():
        # Pixel Padding (outside the scanned field) shows as black, whatever the photometric.
        unit = np.where(pad, 0.0, unit)
        transform["padding"] = "Pixel Padding Value shown black"
    return unit.astype(np.float32), transform


def _padding(frame: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Stored values marked as padding (PS3.3 C.7.5.1.1.2), or None when the object declares none."""
    value = ds.get("PixelPaddingValue")
    if value is None or not isinstance(value, int | np.integer):
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if isinstance(limit, int | np.integer):
        lo, hi = sorted((int(value), int(limit)))
        return (frame >= lo) & (frame <= hi)
    return frame == int(value)


def voi_window(values: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window to [0, 1] with the VOI LUT Function of PS3.3 C.11.2.1.2-3 (output range scaled to 1)."""
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (values - centre) / max(width, 1e-6)))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return window_to_unit(values, centre, width)
    # LINEAR: the standard's 0.5 offsets; width must be >= 1
    width = max(width, 1.0)
    if width == 1.0:
        return (values >= centre - 0.5).astype(np.float32)
    return np.clip((values - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0).astype(np.float32)


def _voi_lut(values: np.ndarray, item: Dataset) -> np.ndarray:
    """Apply a VOI LUT: first entry maps the first value; out-of-range inputs clamp to the ends."""
    n, first, bits = (int(x) for x in item.LUTDescriptor)
    n = n or 65536
    raw = item.LUTData
    lut = np.asarray(raw if not isinstance(raw, bytes) else np.frombuffer(raw, "<u2"), dtype=np.float32)[:n]
    idx = np.clip(np.rint(values).astype(np.int64) - first, 0, len(lut) - 1)
    top = float(2 ** min(bits, 16) - 1) if bits else float(lut.max() or 1)
    return np.clip(lut[idx] / top, 0.0, 1.0).astype(np.float32)


def _spacing(ds: Dataset, attrs: dict) -> tuple[float, float] | None:
    """(row, column) spacing for aspect correction: PixelSpacing, Imager Pixel Spacing, or Pixel Aspect Ratio."""
    for value in (attrs.get("PixelSpacing"), ds.get("ImagerPixelSpacing"), ds.get("PixelAspectRatio")):
        if value is not None and len(value) == 2:
            try:
                row, col = float(value[0]), float(value[1])
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0:
                return row, col
    return None


def _identity(ds: Dataset) -> dict:
    """Which header attributes are identifiers is decided in one place: :func:`curator.phi.dicom_identity`."""
    return dicom_identity(ds)


@dataclass(frozen=True)
class DicomHeader:
    """What one parse of a file's header gives the ingest plan, and the read that follows.

    The plan's header pass (:func:`scan_header`, on the executor) learns the file's
    identifiers (``identity``, for redaction), its series and slice position; for a
    file with pixel data it also keeps a *digest*: the display attributes
    (:data:`DISPLAY_ATTRIBUTES`, no identifiers) as stored in the file, a few hundred
    bytes, the offset of the Pixel Data element, and a hash of every byte before it.
    The unit's read then parses only the digest and the elements from that offset on
    (:meth:`dataset`), never the header again, and a file changed since the plan (its
    prefix hash differs) is parsed whole instead.
    """

    identity: dict
    series_uid: str | None = None
    slice_position: float | None = None  # mm along the slice normal (ImagePositionPatient)
    digest: bytes | None = None  # None: no pixel data, or nothing a read could reuse
    transfer_syntax: str | None = None
    pixel_offset: int = 0
    prefix_sha256: str = ""

    def for_read(self) -> DicomHeader:
        """What a unit's read needs: the digest and the keyed fields, none of the other identifiers."""
        keep = {k: self.identity[k] for k in ("patient", "study") if k in self.identity}
        return DicomHeader(keep, None, None, self.digest, self.transfer_syntax, self.pixel_offset, self.prefix_sha256)

    def dataset(self, data: bytes) -> Dataset | None:
        """The file's dataset from the digest and ``data[pixel_offset:]``; None when the file is not the one scanned."""
        if self.digest is None or hashlib.sha256(data[: self.pixel_offset]).hexdigest() != self.prefix_sha256:
            return None
        try:
            ts = pydicom.uid.UID(self.transfer_syntax)
            ds = read_dataset(io.BytesIO(self.digest), ts.is_implicit_VR, ts.is_little_endian)
            fp = io.BytesIO(data)
            fp.seek(self.pixel_offset)
            tail = read_dataset(fp, ts.is_implicit_VR, ts.is_little_endian)
        except Exception:  # noqa: BLE001 - anything odd: the whole-file parse decides, with its own message
            return None
        for tag in tail.keys():
            ds[tag] = tail.get_item(tag)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
        ds.set_original_encoding(ts.is_implicit_VR, ts.is_little_endian)
        return ds


def scan_header(path: Path) -> DicomHeader:
    """One parse of a file's header (no pixels): identifiers, series, slice position and the read's digest."""
    try:
        with open(path, "rb") as fp, _quiet_pydicom():
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            offset = fp.tell()
            identity = _trusted_identity(ds)
            if ds.preamble is None:
                return DicomHeader(identity)  # not a DICOM file the read accepts: nothing more to keep
            series, position = _series(ds)
            fp.seek(0)
            prefix = fp.read(offset + 4)  # the header's bytes, and the tag that stopped the parse
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        digest = _digest(ds, prefix[:offset], ts) if _is_pixel_tag(prefix[offset:], ts) else None
        if digest is None:
            return DicomHeader(identity, series, position)
        sha = hashlib.sha256(prefix[:offset]).hexdigest()
        return DicomHeader(identity, series, position, digest, str(ts), offset, sha)
    except Exception:  # noqa: BLE001 - any unreadable file simply teaches us nothing
        return DicomHeader({})


def _is_pixel_tag(raw: bytes, ts) -> bool:
    if ts is None or len(raw) != 4 or not ts.is_transfer_syntax or ts.is_deflated:
        return False  # a deflated dataset's bytes are not its elements: such files are parsed whole
    group, element = struct.unpack("<HH" if ts.is_little_endian else ">HH", raw)
    return group == 0x7FE0 and element in (0x0008, 0x0009, 0x0010)


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _digest(ds: Dataset, prefix: bytes, ts) -> bytes | None:
    """The display attributes' own bytes, cut from the header as stored (a few hundred for a CT slice).

    A top-level element runs from its tag to the next one's (so sequences of undefined
    length need no walking); its value's position is known from the parse, and the
    tag is found 8 or 12 bytes before it. Parsed with the file's own encoding. None
    when anything does not line up: the read then parses the whole file.
    """
    tags = sorted(ds.keys())
    fmt = "<HH" if ts.is_little_endian else ">HH"
    starts = []
    for tag in tags:
        elem = ds.get_item(tag)
        tell = elem.value_tell if isinstance(elem, pydicom.dataelem.RawDataElement) else elem.file_tell
        if tell is None:
            return None
        mark = struct.pack(fmt, tag >> 16, tag & 0xFFFF)
        if not ts.is_implicit_VR and prefix[tell - 12 : tell - 8] == mark and prefix[tell - 8 : tell - 6] in _LONG_VRS:
            starts.append(tell - 12)
        elif prefix[tell - 8 : tell - 4] == mark:
            starts.append(tell - 8)
        else:
            return None
    starts.append(len(prefix))
    if starts != sorted(starts):
        return None
    return b"".join(prefix[starts[i] : starts[i + 1]] for i, tag in enumerate(tags) if tag in _DISPLAY_TAGS)


def _series(ds: Dataset) -> tuple[str | None, float | None]:
    """SeriesInstanceUID and the slice's position along its normal in mm (None where the header lacks them)."""
    try:
        uid = str(ds.get("SeriesInstanceUID") or "") or None
    except Exception:  # noqa: BLE001 - a malformed UID only means no series
        return None, None
    try:
        position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if position is None or len(position) != 3:
            return uid, None
        if orientation is not None and len(orientation) == 6:
            normal = np.cross(np.array(orientation[:3], float), np.array(orientation[3:], float))
            return uid, round(float(np.dot(normal, np.array(position, float))), 4)
        return uid, round(float(position[2]), 4)
    except Exception:  # noqa: BLE001 - an unreadable position only means none
        return uid, None


def _trusted_identity(ds: Dataset) -> dict:
    if ds.preamble is None and not (ds.get("PatientID") or ds.get("PatientName")):
        return {}  # a forced read of a non-DICOM file: nothing trustworthy to learn
    return _identity(ds)


def header_identity(source) -> dict:
    """Identifiers from a file's header only (a path or a file object), for redaction; {} when nothing can be read.

    Ingest's plan calls this for every DICOM file before any is read, so it must learn
    what a full read would: everything ``_identity`` finds in a file with the DICM
    preamble. A preamble-less file is read anyway (force), because it still carries
    the patient ID its folder may be named after, but a forced read of a file that is
    not DICOM at all is garbage, so there only a PatientID or PatientName counts.
    The whole header is read (no pixels): any PN, DA, TM or DT element anywhere, and
    sequences such as a DICOMDIR's records, may name what a folder is called.
    """
    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(source, stop_before_pixels=True, force=True)
        return _trusted_identity(ds)
    except Exception:  # noqa: BLE001 - any unreadable file simply teaches us nothing
        return {}


@contextlib.contextmanager
def _quiet_pydicom():
    """pydicom logs a traceback for every plugin that fails; we turn the failure into a reject instead.

    Re-entrant: an inner use inside an outer one costs nothing.
    """
    global _quiet_depth
    if _quiet_depth:
        yield
        return
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _quiet_depth -= 1
        logger.setLevel(level)


_quiet_depth = 0


def _first(v):
    return v[0] if isinstance(v, pydicom.multival.MultiValue | list | tuple) else v


def _plain(v):
    if v is None:
        return None
    if isinstance(v, pydicom.multival.MultiValue):
        return [_plain(x) for x in v]
    if isinstance(v, int | float | str):
        return v
    return str(v)
