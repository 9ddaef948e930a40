"""NIfTI-1/2 volumes through nibabel, sliced to 2D in canonical (RAS+) orientation.

Display convention for every plane: anterior/superior at the top of the image and
the patient's right on the viewer's left (radiological). 4D volumes: the first
volume (t=0) is used, a stated rule so a build never silently mixes timepoints.
Free-text header fields (descrip, aux_file, intent_name, db_name) are never read.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from curator.errors import ReadError
from curator.readers import Frame, Limits, ReadOptions, slice_indices, window_to_unit

PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}


_HEADER_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    OSError,
    ValueError,
    EOFError,
    zlib.error,
    struct.error,
)


def _open(path: Path, data: bytes | None = None):
    """The image, its voxels still unread: from ``data`` (the file's bytes, read once by ingest) or the path."""
    if data is not None:
        img = _from_bytes(data)
        if img is not None:
            return img
    try:
        return nib.load(str(path))
    except _HEADER_ERRORS as exc:
        raise ReadError("corrupt", f"cannot parse NIfTI header: {exc}") from None


def _from_bytes(data: bytes):
    """A NIfTI-1/2 image over the bytes in memory (gzip or not); None for anything else, which ``nib.load`` judges.

    The voxels stay behind nibabel's array proxy, so the declared size is checked before
    they are decompressed, as when nibabel opens the file itself.
    """
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if data[:2] == b"\x1f\x8b" else io.BytesIO(data)
    try:
        head = stream.read(4)
        stream.seek(0)
        sizes = {struct.unpack("<i", head)[0], struct.unpack(">i", head)[0]} if len(head) == 4 else set()
        klass = nib.Nifti1Image if 348 in sizes else nib.Nifti2Image if 540 in sizes else None
        return klass.from_stream(stream) if klass is not None else None
    except _HEADER_ERRORS:
        return None  # nib.load on the path gives the canonical error


def volume_shape(path: Path) -> tuple[int, ...]:
    """The stored shape, from the header only (no voxel data read)."""
    return tuple(int(n) for n in _open(path).shape)


def check_declared(img, limits: Limits) -> None:
    """Shape x float32 from the header against the limits, before the data is read (a 1.4 KB file may claim 4096^3)."""
    shape = tuple(int(n) for n in img.shape)
    volume = shape[:3] if len(shape) > 3 else shape  # 4D: only the first volume is read
    voxels = int(np.prod(volume, dtype=np.int64)) if volume else 0
    slices = max(volume) if len(volume) == 3 else 1
    plane = int(np.prod(sorted(volume)[-2:], dtype=np.int64)) if len(volume) >= 2 else voxels
    if plane > limits.max_pixels:
        raise ReadError("decompression_bomb", f"slices of shape {shape} exceed {limits.max_pixels} pixels")
    # the float32 volume, and its canonical (reoriented) copy while nibabel makes it
    declared = voxels * 4 * 2
    if declared > limits.max_decoded_bytes:
        raise ReadError(
            "decompression_bomb",
            f"shape {shape} decodes to {declared / 1024**2:.0f} MiB (the card allows "
            f"{limits.max_decoded_bytes / 1024**2:.0f} MiB)",
        )
    if slices > limits.max_frames:
        raise ReadError(
            "too_many_frames", f"shape {shape} declares {slices} slices (the card allows {limits.max_frames})"
        )


def load_volume(
    path: Path, limits: Limits | None = None, data: bytes | None = None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Canonical float32 volume (scl_slope/inter applied by nibabel) and voxel sizes.

    2D images become one-slice volumes; 4D volumes keep their first volume (t=0 or
    the first channel), a stated rule so a build never silently mixes timepoints;
    more dimensions are rejected. Nothing from the free-text header fields is read.
    ``data``: the file's bytes, when the caller read them already (the file is not read again).
    """
    img = _open(path, data)
    if len(img.shape) < 2 or len(img.shape) > 4:
        raise ReadError("unsupported_format", f"volume has shape {img.shape}, need 2 to 4 dimensions")
    check_declared(img, limits or Limits())
    try:
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise ReadError("unsupported_format", f"{type(img).__name__} is not NIfTI")
        if len(img.shape) == 2:
            img = img.__class__(np.asanyarray(img.dataobj)[..., None], img.affine, img.header)
        img = nib.as_closest_canonical(img)
        # A truncated .nii.gz loads its header happily; only reading the data fails.
        data = np.asanyarray(img.dataobj, dtype=np.float32) if img.ndim == 3 else _first_volume(img)
    except (EOFError, zlib.error, OSError, ValueError, struct.error) as exc:
        raise ReadError("truncated", f"volume data unreadable: {exc}") from None
    zooms = tuple(float(z) if z > 0 else 1.0 for z in img.header.get_zooms()[:3])
    return data, zooms


def _first_volume(img) -> np.ndarray:
    return np.asanyarray(img.dataobj[..., 0], dtype=np.float32)


def _volume_range(volume: np.ndarray) -> tuple[float, float]:
    """0.5-99.5 percentiles over the whole volume, so every slice of it shares one intensity scale.

    Large volumes are subsampled on a fixed grid (deterministic) to keep this cheap.
    """
    step = max(1, round((volume.size / 8_000_000) ** (1 / 3)))
    sample = volume[::step, ::step, ::step]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        raise ReadError("empty_image", "volume has no finite values")
    lo, hi = (float(x) for x in np.percentile(finite, [0.5, 99.5]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def take_slice(volume: np.ndarray, plane: str, k: int) -> np.ndarray:
    """2D slice in display orientation (rows top->bottom, columns viewer left->right)."""
    axis = PLANES[plane]
    sl = np.take(volume, k, axis=axis)
    # remaining axes: sagittal (y, z), coronal (x, z), axial (x, y); put the vertical axis on rows,
    # anterior (axial) or superior (coronal, sagittal) at the top.
    img = sl.T[::-1, :]
    # RAS x grows towards the patient's left, so column 0 is already the patient's right:
    # radiological convention with no flip. Sagittal: anterior on the viewer's left.
    if plane == "sagittal":
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def slice_spacing(zooms: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """(row spacing, column spacing) in mm for a slice of this plane."""
    x, y, z = zooms
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[plane]


def read_nifti(path: Path, options: ReadOptions, data: bytes | None = None) -> list[Frame]:
    if options.plane not in PLANES:
        raise ReadError("bad_row", f"unknown plane '{options.plane}'")
    volume, zooms = load_volume(path, options.limits, data)
    axis = PLANES[options.plane]
    frames = []
    spacing = slice_spacing(zooms, options.plane)
    window = None if options.ct_window else _volume_range(volume)
    for k in slice_indices(volume.shape[axis], options):
        sl = take_slice(volume, options.plane, k)
        if options.ct_window:
            c, w = options.ct_window
            unit = window_to_unit(sl, c, w)
            transform = {"window": {"centre": c, "width": w, "from": "card"}}
        else:
            lo, hi = window
            unit = np.clip((np.nan_to_num(sl, nan=lo) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
            transform = {"window": {"low": lo, "high": hi, "from": "volume percentile 0.5-99.5"}}
        transform.update({"orientation": "RAS canonical, radiological display", "voxel_mm": list(zooms)})
        frames.append(
            Frame(
                pixels=unit,
                index=k,
                plane=options.plane,
                meta={"format": "nifti"},
                transform=transform,
                pixel_spacing=spacing,
            )
        )
    return frames
