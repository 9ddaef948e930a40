"""Readers: one module per file format, ``read(path, options) -> Iterable[Frame]``.

``read(..., data=...)`` takes the file's bytes when the caller has already read
them (ingest reads each file once, hashes those bytes and decodes them): DICOM,
NIfTI and raster readers decode from memory; videos and slides, read lazily and
never whole, read the path.

Readers know formats and nothing of dataset layouts. A reader either returns
display-ready frames or raises :class:`~curator.errors.ReadError` with a reason
code; it never lets a library exception escape for one bad file.

Small files give a list. Videos and whole-slide images give a :class:`FrameStream`
that decodes lazily (one frame or tile in memory at a time) and, once iterated,
says what it skipped (near-duplicate frames, background tiles) and which parts of
an otherwise readable file failed (a broken tile, the frames after a video's damage).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curator.errors import ReadError


@dataclass(frozen=True)
class Limits:
    """What one input may cost, checked against the sizes its header *declares*, before any allocation.

    The defaults keep the peak memory of one hostile file well under 1 GiB while
    passing every real radiograph, CT/MR volume and enhanced multi-frame object we
    shard; a card raises them for sources that need more (``[image]`` in the card).
    """

    max_pixels: int = 64_000_000  # one 2D frame (an 8k x 8k whole-slide thumbnail)
    # decoded bytes of one file as the reader holds them (NIfTI as float32 plus its reoriented copy,
    # DICOM every frame as stored plus the kept ones as float32): 2 GiB passes a 512x512x1000 CT
    max_decoded_bytes: int = 2 * 1024**3
    max_frames: int = 2048  # frames of a multi-frame DICOM or slices of a volume, per file


@dataclass
class ReadOptions:
    """What a card tells a reader about display (windows) and volume slicing."""

    ct_window: tuple[float, float] | None = None
    plane: str = "axial"
    slice_step: int = 1
    slice_range: tuple[float, float] = (0.0, 1.0)
    burned_in: str = "reject"  # DICOM BurnedInAnnotation YES: "reject" or "allow" (see readers.dicom)
    # time series (video, DICOM cine) and whole-slide images: see curator.registry.ImagePolicy
    video_fps: float = 1.0
    max_frames_per_file: int | None = 300
    near_duplicate_mad: float = 0.01
    max_video_seconds: float = 4 * 3600.0
    tile_size: int = 512
    slide_level: int | None = None
    slide_magnification: float | None = None
    background_fraction: float = 0.8
    max_slide_pixels: int = 200_000 * 200_000
    limits: Limits = field(default_factory=Limits)
    # DICOM headers the ingest plan already parsed (path -> readers.dicom.DicomHeader): the read
    # parses only their digest and the pixel data, never the header again
    known_headers: dict = field(default_factory=dict)


@dataclass
class Frame:
    """One 2D image from a file.

    ``pixels`` is either float32 in [0, 1] (windowed/normalised) or an exact
    uint8/uint16 array from a raster file; greyscale is HxW, colour HxWx3.
    ``meta`` holds only safe, non-identifying fields; ``identity`` holds the raw
    patient/study identifiers, which the adapter base hashes and then drops.
    """

    pixels: np.ndarray
    index: int | None = None
    plane: str | None = None
    meta: dict = field(default_factory=dict)
    transform: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)
    pixel_spacing: tuple[float, float] | None = None
    time_s: float | None = None  # a video or cine frame's presentation time
    tile: tuple[int, int, int] | None = None  # a slide tile's (pyramid level, x, y) in that level's pixels


@dataclass
class PartReject:
    """A part of a file that failed while the rest was read: a slide tile, a video's frames after damage."""

    reason: str
    message: str


class FrameStream:
    """Frames decoded on demand, with what was skipped and which parts failed, known once iterated.

    ``frames`` is a generator function taking the stream itself, so it can count into
    ``skipped`` (reason -> frames) and append to ``part_rejects`` as it goes.
    """

    def __init__(self, frames: Callable[[FrameStream], Iterator[Frame]]):
        self._frames = frames
        self.skipped: Counter = Counter()
        self.part_rejects: list[PartReject] = []

    def __iter__(self) -> Iterator[Frame]:
        return self._frames(self)


RASTER_EXT = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
NIFTI_EXT = (".nii", ".nii.gz")
DICOM_EXT = {".dcm", ".dicom", ".ima", ""}
VIDEO_EXT = {".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm"}
# Vendor whole-slide formats tifffile reads; a plain .tif/.tiff is a slide only if tiled and large (readers.slide)
SLIDE_EXT = {".svs", ".ndpi", ".scn", ".bif"}


def format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(NIFTI_EXT):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix in RASTER_EXT:
        return "raster"
    if suffix in VIDEO_EXT:
        return "video"
    if suffix in SLIDE_EXT:
        return "slide"
    if suffix in DICOM_EXT:
        return "dicom"
    return "unknown"


def read(
    path: Path, options: ReadOptions | None = None, fmt: str | None = None, data: bytes | None = None
) -> list[Frame] | FrameStream:
    options = options or ReadOptions()
    fmt = fmt or format_of(path)
    if fmt == "raster" and path.suffix.lower() in (".tif", ".tiff"):
        from curator.readers.slide import is_slide

        fmt = "slide" if is_slide(path) else fmt
    if fmt == "raster":
        from curator.readers.raster import read_raster

        return read_raster(path, data, options.limits)
    if fmt == "video":
        from curator.readers.video import read_video

        return read_video(path, options)
    if fmt == "slide":
        from curator.readers.slide import read_slide

        return read_slide(path, options)
    if fmt == "dicom":
        from curator.readers.dicom import read_dicom

        return read_dicom(path, options, data, options.known_headers.get(path))
    if fmt == "nifti":
        from curator.readers.nifti import read_nifti

        return read_nifti(path, options, data)
    raise ReadError("unsupported_format", f"no reader for '{path.name}'")


def slice_indices(n: int, options: ReadOptions) -> range:
    """Indices of the slices (or frames) a card keeps: a fractional range, then a step."""
    lo = int(round(options.slice_range[0] * n))
    hi = max(lo + 1, int(round(options.slice_range[1] * n)))
    return range(lo, min(hi, n), max(1, options.slice_step))


def window_to_unit(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Linear window (DICOM PS3.3 C.11.2.1.2 without the 0.5 offsets) to [0, 1]."""
    low = centre - width / 2.0
    return np.clip((values - low) / max(width, 1e-6), 0.0, 1.0).astype(np.float32)


def percentile_to_unit(values: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> tuple[np.ndarray, list[float]]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ReadError("empty_image", "no finite pixel values")
    a, b = (float(x) for x in np.percentile(finite, [lo, hi]))
    if b <= a:
        b = a + 1.0
    out = np.clip((np.nan_to_num(values, nan=a) - a) / (b - a), 0.0, 1.0).astype(np.float32)
    return out, [a, b]
